//! The load generator: C keep-alive HTTP/1.1 connections, one blocking
//! thread each, for D seconds (or N operations in all), running one
//! request mix against one address, and printing one grep-able line:
//!
//! ```text
//! RESULT scenario=ids conns=32 secs=5.00 unit=req ops=... ops_per_sec=...
//!        reqs=... reqs_per_sec=... p50_ms=... p99_ms=... max_ms=... errors=0
//! ```
//!
//! `ops` is counted in the scenario's unit: requests for `ids` and
//! `session-open`, IDs for `ids-count=N`, lock+unlock pairs for
//! `lock-unlock`. Latency is per HTTP request. A non-2xx answer, a
//! malformed one, a lock answered `false`, or a broken connection is an
//! error; redirects are not followed (point it at the leader).
//!
//! It owns only the client side of a benchmark: it links nothing of
//! ticketd, so it measures the server from the outside.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest status or header line we read.
const LINE_MAX: u64 = 8 * 1024;
/// The most headers one response may carry.
const HEADERS_MAX: usize = 100;
/// The largest body we read (`?count=100000` is about 1.2 MB).
const BODY_MAX: usize = 16 << 20;
/// More connections than this is a typo, not a benchmark.
const CONNS_MAX: usize = 4096;
/// How long a connection waits for an answer before it counts an error.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed connect, so a dead server is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    Ids,
    IdsCount(u64),
    LockUnlock,
    SessionOpen,
}

impl Scenario {
    fn parse(raw: &str) -> Result<Scenario, String> {
        match raw {
            "ids" => Ok(Scenario::Ids),
            "lock-unlock" => Ok(Scenario::LockUnlock),
            "session-open" => Ok(Scenario::SessionOpen),
            _ => match raw.strip_prefix("ids-count=").map(str::parse::<u64>) {
                Some(Ok(n)) if (1..=100_000).contains(&n) => Ok(Scenario::IdsCount(n)),
                _ => Err(format!(
                    "unknown scenario {raw:?}: use ids, ids-count=N (1..100000), lock-unlock or session-open"
                )),
            },
        }
    }

    fn name(self) -> String {
        match self {
            Scenario::Ids => "ids".into(),
            Scenario::IdsCount(n) => format!("ids-count={n}"),
            Scenario::LockUnlock => "lock-unlock".into(),
            Scenario::SessionOpen => "session-open".into(),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Scenario::Ids | Scenario::SessionOpen => "req",
            Scenario::IdsCount(_) => "id",
            Scenario::LockUnlock => "pair",
        }
    }
}

#[derive(Clone, Debug)]
struct Options {
    addr: SocketAddr,
    scenario: Scenario,
    conns: usize,
    secs: f64,
    /// Stop after this many operations in all instead of after `secs`.
    ops_total: Option<u64>,
    /// Seconds run before measuring starts (time mode only).
    warmup: f64,
    /// Printed in the RESULT line, to tell runs apart (e.g. `3node`).
    label: String,
}

enum Parsed {
    Run(Options),
    FreePorts(usize),
    Help,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(Parsed::Run(options)) => {
            let report = run(&options);
            println!("{}", report.line(&options));
            if let Some(sample) = &report.first_error {
                eprintln!("load: first error: {sample}");
            }
            ExitCode::SUCCESS
        }
        Ok(Parsed::FreePorts(n)) => match free_ports(n) {
            Ok(ports) => {
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                println!("{}", ports.join(" "));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("load: cannot find free ports: {e}");
                ExitCode::from(1)
            }
        },
        Ok(Parsed::Help) => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("load: {why}");
            eprint!("{}", usage());
            ExitCode::from(2)
        }
    }
}

fn usage() -> String {
    "Usage: load --addr HOST:PORT --scenario S [--conns C] [--secs D | --ops N] [--warmup W] [--label L]\n\
     \x20      load --free-ports N\n\
     Scenarios: ids, ids-count=N, lock-unlock, session-open\n"
        .to_string()
}

fn parse(args: &[String]) -> Result<Parsed, String> {
    let mut spec = getopts::Options::new();
    spec.optopt("", "addr", "server address", "HOST:PORT");
    spec.optopt("", "scenario", "request mix", "S");
    spec.optopt("", "conns", "connections (default 32)", "C");
    spec.optopt("", "secs", "measured seconds (default 5)", "D");
    spec.optopt("", "ops", "stop after N operations in all", "N");
    spec.optopt("", "warmup", "unmeasured seconds first (default 0)", "W");
    spec.optopt("", "label", "a tag for the RESULT line", "L");
    spec.optopt("", "free-ports", "print N free loopback ports", "N");
    spec.optflag("h", "help", "print this help");
    let m = spec.parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        return Ok(Parsed::Help);
    }
    if let Some(extra) = m.free.first() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    if let Some(raw) = m.opt_str("free-ports") {
        return number(&raw, "--free-ports", 1, 64).map(|n| Parsed::FreePorts(n as usize));
    }
    let raw_addr = m.opt_str("addr").ok_or("--addr is required")?;
    let addr = raw_addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("--addr {raw_addr:?} is not an address"))?;
    let scenario = Scenario::parse(&m.opt_str("scenario").ok_or("--scenario is required")?)?;
    let conns = match m.opt_str("conns") {
        Some(raw) => number(&raw, "--conns", 1, CONNS_MAX as u64)? as usize,
        None => 32,
    };
    let secs = seconds(m.opt_str("secs"), "--secs", 5.0)?;
    let warmup = seconds(m.opt_str("warmup"), "--warmup", 0.0)?;
    let ops_total = match m.opt_str("ops") {
        Some(raw) => Some(number(&raw, "--ops", 1, u64::MAX / 2)?),
        None => None,
    };
    let label = m.opt_str("label").unwrap_or_default();
    Ok(Parsed::Run(Options {
        addr,
        scenario,
        conns,
        secs,
        ops_total,
        warmup,
        label,
    }))
}

fn number(raw: &str, flag: &str, min: u64, max: u64) -> Result<u64, String> {
    match raw.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{flag} must be {min} to {max}, not {raw:?}")),
    }
}

fn seconds(raw: Option<String>, flag: &str, default: f64) -> Result<f64, String> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.parse::<f64>() {
        Ok(s) if (0.0..=86_400.0).contains(&s) => Ok(s),
        _ => Err(format!("{flag} must be 0 to 86400 seconds, not {raw:?}")),
    }
}

/// Ports the kernel hands out now; all bound at once so they differ.
fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<_>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

// ---------------------------------------------------------------------
// Latency histogram

/// Sub-buckets per power of two: 32 gives about 3% resolution.
const SUB_BITS: u32 = 5;
const SUB_COUNT: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) << SUB_BITS;

/// A log-linear histogram of microseconds: fixed size, whatever the run
/// length.
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max_us: 0,
        }
    }

    fn bucket(us: u64) -> usize {
        if us < SUB_COUNT {
            return us as usize;
        }
        let exponent = 63 - us.leading_zeros();
        let shift = exponent - SUB_BITS;
        let sub = (us >> shift) & (SUB_COUNT - 1);
        (((shift + 1) as u64) << SUB_BITS | sub) as usize
    }

    /// The middle of a bucket's range.
    fn value(bucket: usize) -> u64 {
        let bucket = bucket as u64;
        if bucket < SUB_COUNT {
            return bucket;
        }
        let group = bucket >> SUB_BITS;
        let sub = bucket & (SUB_COUNT - 1);
        let low = (SUB_COUNT + sub) << (group - 1);
        low + ((1u64 << (group - 1)) >> 1)
    }

    fn record(&mut self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.counts[Histogram::bucket(us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The value at quantile `q` (0..=1), in microseconds.
    fn quantile_us(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Histogram::value(bucket).min(self.max_us);
            }
        }
        self.max_us
    }
}

// ---------------------------------------------------------------------
// A keep-alive HTTP/1.1 client

struct Response {
    status: u16,
    body: Vec<u8>,
}

/// One keep-alive connection; it reconnects when the server closes.
struct Client {
    addr: SocketAddr,
    stream: Option<(BufReader<TcpStream>, TcpStream)>,
    request: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            stream: None,
            request: Vec::with_capacity(256),
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let writer = stream.try_clone()?;
        self.stream = Some((BufReader::with_capacity(64 * 1024, stream), writer));
        Ok(())
    }

    /// Sends one request with an empty body and reads the answer. Any
    /// I/O or framing error drops the connection (the next call
    /// reconnects).
    fn call(&mut self, method: &str, path: &str) -> io::Result<Response> {
        if self.stream.is_none() {
            self.connect()?;
        }
        let result = self.exchange(method, path);
        match &result {
            Ok((_, keep_alive)) if *keep_alive => {}
            _ => self.stream = None,
        }
        result.map(|(response, _)| response)
    }

    fn exchange(&mut self, method: &str, path: &str) -> io::Result<(Response, bool)> {
        self.request.clear();
        write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
            self.addr
        )?;
        let (reader, writer) = self.stream.as_mut().ok_or_else(|| bad("not connected"))?;
        writer.write_all(&self.request)?;
        read_response(reader)
    }
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<()> {
    line.clear();
    reader.take(LINE_MAX).read_until(b'\n', line)?;
    if line.last() != Some(&b'\n') {
        return Err(bad("line too long or connection closed"));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(())
}

/// What the headers say about the body and the connection.
struct Framing {
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

/// Reads one response; the bool says whether the connection stays open.
fn read_response(reader: &mut impl BufRead) -> io::Result<(Response, bool)> {
    let mut line = Vec::with_capacity(128);
    read_line(reader, &mut line)?;
    let status = parse_status(&line)?;
    let framing = read_headers(reader, &mut line)?;
    let mut body = Vec::new();
    let no_body = status < 200 || status == 204 || status == 304;
    if no_body {
    } else if framing.chunked {
        read_chunked(reader, &mut body, &mut line)?;
    } else if let Some(length) = framing.content_length {
        if length > BODY_MAX {
            return Err(bad("body too large"));
        }
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.take(BODY_MAX as u64).read_to_end(&mut body)?;
        return Ok((Response { status, body }, false));
    }
    Ok((Response { status, body }, !framing.close))
}

fn parse_status(line: &[u8]) -> io::Result<u16> {
    let text = std::str::from_utf8(line).map_err(|_| bad("status line is not UTF-8"))?;
    let mut parts = text.split(' ');
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(status))) if version.starts_with("HTTP/1.") => Ok(status),
        _ => Err(bad("malformed status line")),
    }
}

fn read_headers(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Framing> {
    let mut framing = Framing {
        content_length: None,
        chunked: false,
        close: false,
    };
    for _ in 0..HEADERS_MAX {
        read_line(reader, line)?;
        if line.is_empty() {
            return Ok(framing);
        }
        let text = String::from_utf8_lossy(line);
        let Some((name, value)) = text.split_once(':') else {
            return Err(bad("malformed header"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value.parse().map_err(|_| bad("bad Content-Length"))?;
            framing.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            framing.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            framing.close = value.eq_ignore_ascii_case("close");
        }
    }
    Err(bad("too many headers"))
}

fn read_chunked(
    reader: &mut impl BufRead,
    body: &mut Vec<u8>,
    line: &mut Vec<u8>,
) -> io::Result<()> {
    loop {
        read_line(reader, line)?;
        let text = String::from_utf8_lossy(line);
        let size_text = text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the blank line.
            for _ in 0..HEADERS_MAX {
                read_line(reader, line)?;
                if line.is_empty() {
                    return Ok(());
                }
            }
            return Err(bad("too many trailers"));
        }
        if body.len() + size > BODY_MAX {
            return Err(bad("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        read_line(reader, line)?;
        if !line.is_empty() {
            return Err(bad("chunk not followed by CRLF"));
        }
    }
}

// ---------------------------------------------------------------------
// Running a scenario

/// What every connection thread shares.
struct Shared {
    options: Options,
    /// Operations started, in `--ops` mode.
    started_ops: AtomicU64,
    measure_from: Instant,
    deadline: Instant,
}

/// One connection thread's result.
struct Tally {
    ops: u64,
    requests: u64,
    errors: u64,
    histogram: Histogram,
    first_error: Option<String>,
    finished: Instant,
}

/// The whole run's result.
struct Report {
    ops: u64,
    requests: u64,
    errors: u64,
    histogram: Histogram,
    elapsed: Duration,
    first_error: Option<String>,
}

impl Report {
    fn line(&self, options: &Options) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let ms = |us: u64| us as f64 / 1000.0;
        let label = if options.label.is_empty() {
            String::new()
        } else {
            format!(" label={}", options.label)
        };
        format!(
            "RESULT scenario={}{label} conns={} secs={:.2} unit={} ops={} ops_per_sec={:.0} reqs={} reqs_per_sec={:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} errors={}",
            options.scenario.name(),
            options.conns,
            secs,
            options.scenario.unit(),
            self.ops,
            self.ops as f64 / secs,
            self.requests,
            self.requests as f64 / secs,
            ms(self.histogram.quantile_us(0.50)),
            ms(self.histogram.quantile_us(0.99)),
            ms(self.histogram.max_us),
            self.errors,
        )
    }
}

fn run(options: &Options) -> Report {
    let start = Instant::now();
    let (measure_from, deadline) = match options.ops_total {
        // Bounded by count: measure everything; the deadline is a backstop.
        Some(_) => (start, start + Duration::from_secs(86_400)),
        None => {
            let measure_from = start + Duration::from_secs_f64(options.warmup);
            (
                measure_from,
                measure_from + Duration::from_secs_f64(options.secs),
            )
        }
    };
    let shared = Arc::new(Shared {
        options: options.clone(),
        started_ops: AtomicU64::new(0),
        measure_from,
        deadline,
    });
    let mut threads = Vec::with_capacity(options.conns);
    for index in 0..options.conns {
        let shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{index}"))
            .spawn(move || drive(index, &shared));
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => eprintln!("load: cannot start connection {index}: {e}"),
        }
    }
    let mut report = Report {
        ops: 0,
        requests: 0,
        errors: 0,
        histogram: Histogram::new(),
        elapsed: Duration::ZERO,
        first_error: None,
    };
    let mut finished = measure_from;
    for thread in threads {
        let Ok(tally) = thread.join() else {
            report.errors += 1;
            continue;
        };
        report.ops += tally.ops;
        report.requests += tally.requests;
        report.errors += tally.errors;
        report.histogram.merge(&tally.histogram);
        report.first_error = report.first_error.take().or(tally.first_error);
        finished = finished.max(tally.finished);
    }
    report.elapsed = finished.saturating_duration_since(measure_from);
    report
}

/// One connection's loop: set up (a session for `lock-unlock`), then
/// operations until the deadline or the shared operation budget.
fn drive(index: usize, shared: &Shared) -> Tally {
    let mut worker = Worker {
        client: Client::new(shared.options.addr),
        tally: Tally {
            ops: 0,
            requests: 0,
            errors: 0,
            histogram: Histogram::new(),
            first_error: None,
            finished: Instant::now(),
        },
        measuring: false,
    };
    let session = match shared.options.scenario {
        Scenario::LockUnlock => worker.open_session(index, shared),
        _ => None,
    };
    let mut sequence: u64 = 0;
    while Instant::now() < shared.deadline {
        if let Some(total) = shared.options.ops_total
            && shared.started_ops.fetch_add(1, Ordering::Relaxed) >= total
        {
            break;
        }
        worker.measuring = Instant::now() >= shared.measure_from;
        let done = match shared.options.scenario {
            Scenario::Ids => worker.ids(1),
            Scenario::IdsCount(n) => worker.ids(n),
            Scenario::SessionOpen => worker.session_open().map(|_| 1),
            Scenario::LockUnlock => match &session {
                Some(session) => worker.lock_unlock(index, sequence, session),
                None => Err("no session".to_string()),
            },
        };
        sequence += 1;
        match done {
            Ok(units) if worker.measuring => worker.tally.ops += units,
            Ok(_) => {}
            Err(why) => worker.error(why),
        }
    }
    worker.tally.finished = Instant::now();
    worker.tally
}

struct Worker {
    client: Client,
    tally: Tally,
    /// Inside the measured window: count and time what happens.
    measuring: bool,
}

impl Worker {
    fn error(&mut self, why: String) {
        if self.measuring {
            self.tally.errors += 1;
            if self.tally.first_error.is_none() {
                self.tally.first_error = Some(why);
            }
        }
    }

    /// One timed request; `Err` says what was wrong (I/O or non-2xx).
    fn request(&mut self, method: &str, path: &str) -> Result<Response, String> {
        let started = Instant::now();
        let result = self.client.call(method, path);
        if self.measuring {
            self.tally.requests += 1;
            self.tally.histogram.record(started.elapsed());
        }
        match result {
            Ok(response) if (200..300).contains(&response.status) => Ok(response),
            Ok(response) => Err(format!(
                "{method} {path}: {} {}",
                response.status,
                first_line(&response.body)
            )),
            Err(e) => {
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    std::thread::sleep(RECONNECT_PAUSE);
                }
                Err(format!("{method} {path}: {e}"))
            }
        }
    }

    /// `POST /` or `POST /?count=n`; checks the number of IDs returned.
    fn ids(&mut self, n: u64) -> Result<u64, String> {
        let path = if n == 1 {
            "/".to_string()
        } else {
            format!("/?count={n}")
        };
        let response = self.request("POST", &path)?;
        let lines = response.body.iter().filter(|b| **b == b'\n').count() as u64;
        if lines != n {
            return Err(format!("POST {path}: {lines} IDs instead of {n}"));
        }
        Ok(n)
    }

    /// Opens a session; the body is its ID as a JSON string.
    fn session_open(&mut self) -> Result<String, String> {
        let path = "/api/v1/sessions?name=bench&ttl=60000";
        let response = self.request("POST", path)?;
        let text = String::from_utf8_lossy(&response.body);
        let id = text.trim().trim_matches('"');
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "POST {path}: not a session ID: {}",
                first_line(&response.body)
            ));
        }
        Ok(id.to_string())
    }

    /// The lock scenario's session, retried until the deadline: without
    /// it the connection can do nothing.
    fn open_session(&mut self, index: usize, shared: &Shared) -> Option<String> {
        while Instant::now() < shared.deadline {
            match self.session_open() {
                Ok(id) => return Some(id),
                Err(why) => {
                    eprintln!("load: connection {index} cannot open its session: {why}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        None
    }

    /// Lock a fresh resource, then unlock it: one pair.
    fn lock_unlock(&mut self, index: usize, sequence: u64, session: &str) -> Result<u64, String> {
        let path = format!("/api/v1/locks/r{index}-{sequence}?sessid={session}");
        let response = self.request("POST", &path)?;
        if response.body.trim_ascii() != b"true" {
            return Err(format!(
                "POST {path}: not granted: {}",
                first_line(&response.body)
            ));
        }
        self.request("DELETE", &path)?;
        Ok(1)
    }
}

fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_round_trip_within_resolution() {
        for us in [
            0u64, 1, 31, 32, 33, 63, 64, 100, 999, 1_000, 12_345, 5_000_000,
        ] {
            let value = Histogram::value(Histogram::bucket(us));
            let error = value.abs_diff(us) as f64;
            assert!(error <= (us as f64) * 0.04 + 1.0, "{us} -> {value}");
        }
        assert!(Histogram::bucket(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_come_from_the_recorded_values() {
        let mut h = Histogram::new();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_us(0.5) as f64;
        let p99 = h.quantile_us(0.99) as f64;
        assert!((p50 - 50_000.0).abs() < 2_000.0, "{p50}");
        assert!((p99 - 99_000.0).abs() < 4_000.0, "{p99}");
        assert_eq!(h.max_us, 100_000);
        assert_eq!(Histogram::new().quantile_us(0.99), 0);
    }

    #[test]
    fn scenarios_parse() {
        assert_eq!(Scenario::parse("ids"), Ok(Scenario::Ids));
        assert_eq!(
            Scenario::parse("ids-count=1000"),
            Ok(Scenario::IdsCount(1000))
        );
        assert_eq!(Scenario::parse("lock-unlock"), Ok(Scenario::LockUnlock));
        assert_eq!(Scenario::parse("session-open"), Ok(Scenario::SessionOpen));
        assert!(Scenario::parse("ids-count=0").is_err());
        assert!(Scenario::parse("nope").is_err());
    }

    #[test]
    fn responses_are_framed_by_length_and_by_chunks() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n1\n\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n";
        let mut reader = BufReader::new(&wire[..]);
        let (first, keep) = read_response(&mut reader).unwrap();
        assert_eq!(
            (first.status, &first.body[..], keep),
            (200, &b"1\n\n"[..], true)
        );
        let (second, keep) = read_response(&mut reader).unwrap();
        assert_eq!(
            (second.status, &second.body[..], keep),
            (404, &b"abc"[..], false)
        );
    }

    #[test]
    fn malformed_responses_are_errors() {
        for wire in [
            &b"garbage\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
        ] {
            assert!(read_response(&mut BufReader::new(wire)).is_err());
        }
    }
}
