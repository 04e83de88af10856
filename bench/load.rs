//! The load generator: C keep-alive connections, one blocking thread
//! each, for D seconds (or N operations in all), running one request mix
//! against one service, and printing one grep-able line:
//!
//! ```text
//! RESULT scenario=ids conns=32 secs=5.00 unit=req ops=... ops_per_sec=...
//!        reqs=... reqs_per_sec=... mean_ms=... p50_ms=... p99_ms=... max_ms=...
//!        redirects=0 retries=0 lost_leader=0 errors=0
//! ```
//!
//! It speaks three protocols, so ticketd and its peers get the same
//! client: ticketd's HTTP API, etcd's v3 JSON gateway (HTTP too), and
//! Redis's RESP (by hand, over a `TcpStream`). `ops` is counted in the
//! scenario's unit: requests, IDs, lock+unlock pairs or sessions.
//! Latency is per logical request (redirects and retries included), every
//! one of them kept, so the percentiles are exact.
//!
//! It follows leader changes: a 301/307/308 with a `Location` is followed
//! (counted as a redirect), a 503 or a refused or reset connection is
//! retried on the next `--addr` with a bounded backoff (counted as a
//! retry); a request that finds no leader for `--leader-wait` seconds is
//! an error and counts as a lost leader. Any other non-2xx answer, a
//! malformed one, a lock answered `false` or a timeout is an error.
//! The process exits 1, naming the scenario, if there was any error, a
//! lost leader, or no operation at all.
//!
//! The line also carries `end_unix_ns`, when the last connection finished:
//! `--scenario ids --conns 1 --ops 1 --leader-wait 30` is the time to the
//! first ID after a leader is killed. `--scenario fsync-floor --dir DIR`
//! is not load: it measures 4 KiB appends with `fdatasync` to a
//! preallocated file in DIR, the least a durable write costs there.
//!
//! It owns only the client side of a benchmark: it links nothing of
//! ticketd, so it measures the server from the outside.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest status or header line we read.
const LINE_MAX: u64 = 8 * 1024;
/// The most headers one response may carry.
const HEADERS_MAX: usize = 100;
/// The largest body we read (`?count=100000` is about 1.2 MB).
const BODY_MAX: usize = 16 << 20;
/// More connections than this is a typo, not a benchmark.
const CONNS_MAX: usize = 4096;
/// Requests in flight on one connection at most (`--pipeline`).
const PIPELINE_MAX: usize = 1024;
/// How long a connection waits for an answer before it counts an error.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The first pause before a retry elsewhere; it doubles up to
/// `--retry-max-ms` (default 200 ms).
const BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Redirects in a row before a pause (two nodes naming each other
/// during an election).
const HOPS_BEFORE_PAUSE: u32 = 4;
/// The fsync-floor file: preallocated, then overwritten in a ring, so
/// an `fdatasync` writes data and no metadata.
const FLOOR_FILE_BYTES: u64 = 64 << 20;
const FLOOR_WRITE_BYTES: usize = 4096;
/// Session TTL for the lock and scale scenarios: they must outlive the run.
const SESSION_TTL_MS: u64 = 3_600_000;
/// etcd lease TTL (seconds) for lease and lock scenarios.
const ETCD_LEASE_TTL_S: u64 = 3600;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    /// ticketd `POST /`.
    Ids,
    /// ticketd `POST /?count=N`.
    IdsCount(u64),
    /// ticketd lock then unlock of a fresh resource, one session per
    /// connection (`--pipeline P`: P pairs written at once).
    LockUnlock,
    /// ticketd session open.
    SessionOpen,
    /// ticketd: open a session and lock a resource of its own, keeping
    /// both (the state of the scale scenario).
    SessionLock,
    /// etcd `PUT` of one key; the header's revision is the ID.
    EtcdPut,
    /// etcd lease grant.
    EtcdLease,
    /// etcd's lock recipe: txn put-if-absent (create_revision == 0) with
    /// the connection's lease, then delete.
    EtcdLock,
    /// Redis `INCR` (`--pipeline P`: P commands written at once).
    RedisIncr,
    /// Redis `INCRBY N`: N IDs a command.
    RedisIncrBy(u64),
    /// 4 KiB writes + `fdatasync` to a preallocated file in `--dir`.
    FsyncFloor,
}

impl Scenario {
    fn parse(raw: &str) -> Result<Scenario, String> {
        let fixed = match raw {
            "ids" => Some(Scenario::Ids),
            "lock-unlock" => Some(Scenario::LockUnlock),
            "session-open" => Some(Scenario::SessionOpen),
            "session-lock" => Some(Scenario::SessionLock),
            "etcd-put" => Some(Scenario::EtcdPut),
            "etcd-lease" => Some(Scenario::EtcdLease),
            "etcd-lock" => Some(Scenario::EtcdLock),
            "redis-incr" => Some(Scenario::RedisIncr),
            "fsync-floor" => Some(Scenario::FsyncFloor),
            _ => None,
        };
        if let Some(scenario) = fixed {
            return Ok(scenario);
        }
        let counted = |prefix: &str| match raw.strip_prefix(prefix).map(str::parse::<u64>) {
            Some(Ok(n)) if (1..=100_000).contains(&n) => Some(n),
            _ => None,
        };
        if let Some(n) = counted("ids-count=") {
            return Ok(Scenario::IdsCount(n));
        }
        if let Some(n) = counted("redis-incrby=") {
            return Ok(Scenario::RedisIncrBy(n));
        }
        Err(format!(
            "unknown scenario {raw:?}: use ids, ids-count=N (1..100000), lock-unlock, session-open, \
             session-lock, etcd-put, etcd-lease, etcd-lock, redis-incr, redis-incrby=N or \
             fsync-floor"
        ))
    }

    fn name(self) -> String {
        match self {
            Scenario::Ids => "ids".into(),
            Scenario::IdsCount(n) => format!("ids-count={n}"),
            Scenario::LockUnlock => "lock-unlock".into(),
            Scenario::SessionOpen => "session-open".into(),
            Scenario::SessionLock => "session-lock".into(),
            Scenario::EtcdPut => "etcd-put".into(),
            Scenario::EtcdLease => "etcd-lease".into(),
            Scenario::EtcdLock => "etcd-lock".into(),
            Scenario::RedisIncr => "redis-incr".into(),
            Scenario::RedisIncrBy(n) => format!("redis-incrby={n}"),
            Scenario::FsyncFloor => "fsync-floor".into(),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Scenario::Ids | Scenario::SessionOpen | Scenario::EtcdPut | Scenario::EtcdLease => {
                "req"
            }
            Scenario::IdsCount(_) | Scenario::RedisIncr | Scenario::RedisIncrBy(_) => "id",
            Scenario::LockUnlock | Scenario::EtcdLock => "pair",
            Scenario::SessionLock => "session",
            Scenario::FsyncFloor => "write",
        }
    }

    fn pipelines(self) -> bool {
        matches!(
            self,
            Scenario::LockUnlock | Scenario::RedisIncr | Scenario::RedisIncrBy(_)
        )
    }
}

#[derive(Clone, Debug)]
struct Options {
    /// Where to send requests; the first is tried first, the others on
    /// a 503 or a refused connection.
    addrs: Vec<SocketAddr>,
    scenario: Scenario,
    conns: usize,
    secs: f64,
    /// Stop after this many operations in all instead of after `secs`.
    ops_total: Option<u64>,
    /// Seconds run before measuring starts (time mode only).
    warmup: f64,
    /// Printed in the RESULT line, to tell runs apart (e.g. `3node`).
    label: String,
    /// Requests (pairs for `lock-unlock`) written at once on a connection.
    pipeline: usize,
    /// How long one request may look for a leader before it is an error.
    leader_wait: Duration,
    /// The longest pause between retries (failover timing wants it short).
    backoff_max: Duration,
    /// `fsync-floor`: the directory of the file.
    dir: Option<PathBuf>,
    /// Processes whose CPU time over the measured window is reported
    /// (`--cpu-of`), beside this one's own.
    cpu_of: Vec<u32>,
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
            let report = match options.scenario {
                Scenario::FsyncFloor => match fsync_floor(&options) {
                    Ok(report) => report,
                    Err(e) => {
                        eprintln!("load: fsync-floor: {e}");
                        return ExitCode::from(1);
                    }
                },
                _ => run(&options),
            };
            println!("{}", report.line(&options));
            if let Some(sample) = &report.first_error {
                eprintln!("load: {}: first error: {sample}", options.scenario.name());
            }
            match report.failure() {
                None => ExitCode::SUCCESS,
                Some(why) => {
                    eprintln!(
                        "load: FAILED scenario={}{}: {why}",
                        options.scenario.name(),
                        label_suffix(&options.label)
                    );
                    ExitCode::from(1)
                }
            }
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
    "Usage: load --addr HOST:PORT[,HOST:PORT...] --scenario S [--conns C] [--secs D | --ops N]\n\
     \x20           [--warmup W] [--label L] [--pipeline P] [--leader-wait SECS] [--retry-max-ms MS]\n\
     \x20      load --scenario fsync-floor --dir DIR [--secs D]\n\
     \x20      load --free-ports N\n\
     Scenarios: ids, ids-count=N, lock-unlock, session-open, session-lock (ticketd);\n\
     \x20          etcd-put, etcd-lease, etcd-lock (etcd v3 JSON gateway);\n\
     \x20          redis-incr, redis-incrby=N (Redis RESP); fsync-floor (a disk, not a server)\n"
        .to_string()
}

fn parse(args: &[String]) -> Result<Parsed, String> {
    let mut spec = getopts::Options::new();
    spec.optopt(
        "",
        "addr",
        "server address(es), comma-separated",
        "HOST:PORT",
    );
    spec.optopt("", "scenario", "request mix", "S");
    spec.optopt("", "conns", "connections (default 32)", "C");
    spec.optopt("", "secs", "measured seconds (default 5)", "D");
    spec.optopt("", "ops", "stop after N operations in all", "N");
    spec.optopt("", "warmup", "unmeasured seconds first (default 0)", "W");
    spec.optopt("", "label", "a tag for the RESULT line", "L");
    spec.optopt("", "pipeline", "requests written at once (default 1)", "P");
    spec.optopt(
        "",
        "leader-wait",
        "seconds a request may look for a leader (default 10)",
        "S",
    );
    spec.optopt(
        "",
        "retry-max-ms",
        "longest pause between retries (default 200)",
        "MS",
    );
    spec.optopt("", "dir", "fsync-floor: directory of the test file", "DIR");
    spec.optopt(
        "",
        "cpu-of",
        "also report these processes' CPU time over the measured window",
        "PID[,PID...]",
    );
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
    let scenario = Scenario::parse(&m.opt_str("scenario").ok_or("--scenario is required")?)?;
    let dir = m.opt_str("dir").map(PathBuf::from);
    let addrs = match (m.opt_str("addr"), scenario) {
        (None, Scenario::FsyncFloor) => Vec::new(),
        (None, _) => return Err("--addr is required".into()),
        (Some(raw), _) => raw
            .split(',')
            .map(|one| {
                one.to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| format!("--addr {one:?} is not an address"))
            })
            .collect::<Result<_, _>>()?,
    };
    if scenario == Scenario::FsyncFloor && dir.is_none() {
        return Err("fsync-floor needs --dir".into());
    }
    let conns = match m.opt_str("conns") {
        Some(raw) => number(&raw, "--conns", 1, CONNS_MAX as u64)? as usize,
        None => 32,
    };
    let pipeline = match m.opt_str("pipeline") {
        Some(raw) => number(&raw, "--pipeline", 1, PIPELINE_MAX as u64)? as usize,
        None => 1,
    };
    if pipeline > 1 && !scenario.pipelines() {
        return Err(format!("--pipeline does not apply to {}", scenario.name()));
    }
    let secs = seconds(m.opt_str("secs"), "--secs", 5.0)?;
    let warmup = seconds(m.opt_str("warmup"), "--warmup", 0.0)?;
    let leader_wait =
        Duration::from_secs_f64(seconds(m.opt_str("leader-wait"), "--leader-wait", 10.0)?);
    let backoff_max = match m.opt_str("retry-max-ms") {
        Some(raw) => Duration::from_millis(number(&raw, "--retry-max-ms", 1, 10_000)?),
        None => Duration::from_millis(200),
    };
    let ops_total = match m.opt_str("ops") {
        Some(raw) => Some(number(&raw, "--ops", 1, u64::MAX / 2)?),
        None => None,
    };
    let label = m.opt_str("label").unwrap_or_default();
    let cpu_of = match m.opt_str("cpu-of") {
        Some(raw) => raw
            .split(',')
            .map(|pid| match pid.parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("--cpu-of {pid:?} is not a process id")),
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    if !cpu_of.is_empty() && ops_total.is_some() {
        return Err("--cpu-of needs a timed run (--secs), not --ops".into());
    }
    Ok(Parsed::Run(Options {
        addrs,
        scenario,
        conns,
        secs,
        ops_total,
        warmup,
        label,
        pipeline,
        leader_wait,
        backoff_max,
        dir,
        cpu_of,
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

fn label_suffix(label: &str) -> String {
    if label.is_empty() {
        String::new()
    } else {
        format!(" label={label}")
    }
}

// ---------------------------------------------------------------------
// Exact latencies

/// Every latency of a run, in nanoseconds: percentiles are exact, not
/// bucketed or sampled (8 bytes a request: 10 M requests are 80 MB).
#[derive(Clone, Default)]
struct Latencies {
    nanos: Vec<u64>,
}

impl Latencies {
    fn record(&mut self, elapsed: Duration) {
        self.nanos
            .push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    fn merge(&mut self, other: Latencies) {
        self.nanos.extend(other.nanos);
    }

    /// Sorts once; the quantiles below need it.
    fn finish(&mut self) {
        self.nanos.sort_unstable();
    }

    /// The nearest-rank value at quantile `q` (0..=1), in nanoseconds:
    /// the smallest recorded latency with at least `q` of all at or
    /// below it. Call `finish` first.
    fn quantile(&self, q: f64) -> u64 {
        if self.nanos.is_empty() {
            return 0;
        }
        let n = self.nanos.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.nanos[rank - 1]
    }

    fn max(&self) -> u64 {
        self.nanos.last().copied().unwrap_or(0)
    }

    fn mean(&self) -> f64 {
        if self.nanos.is_empty() {
            return 0.0;
        }
        self.nanos.iter().map(|n| *n as f64).sum::<f64>() / self.nanos.len() as f64
    }
}

// ---------------------------------------------------------------------
// A keep-alive HTTP/1.1 client

struct Response {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

/// One request to write: method, path and body (JSON when not empty).
struct Call<'a> {
    method: &'a str,
    path: &'a str,
    body: &'a [u8],
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
            request: Vec::with_capacity(512),
        }
    }

    /// Points the connection elsewhere (a redirect, a retry).
    fn retarget(&mut self, addr: SocketAddr) {
        if addr != self.addr {
            self.addr = addr;
            self.stream = None;
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let stream = connect(self.addr)?;
        let writer = stream.try_clone()?;
        self.stream = Some((BufReader::with_capacity(64 * 1024, stream), writer));
        Ok(())
    }

    /// Sends one request and reads the answer.
    fn call(&mut self, call: &Call) -> io::Result<Response> {
        let mut answers = self.pipelined(std::slice::from_ref(call), None)?;
        answers.pop().ok_or_else(|| bad("no answer"))
    }

    /// Writes every request at once, then reads their answers in order;
    /// `arrived` (if given) gets each answer's arrival time. Any I/O or
    /// framing error drops the connection (the next call reconnects).
    fn pipelined(
        &mut self,
        calls: &[Call],
        mut arrived: Option<&mut Vec<Instant>>,
    ) -> io::Result<Vec<Response>> {
        if self.stream.is_none() {
            self.connect()?;
        }
        self.request.clear();
        for call in calls {
            write!(
                self.request,
                "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
                call.method,
                call.path,
                self.addr,
                call.body.len()
            )?;
            if !call.body.is_empty() {
                self.request
                    .extend_from_slice(b"Content-Type: application/json\r\n");
            }
            self.request.extend_from_slice(b"\r\n");
            self.request.extend_from_slice(call.body);
        }
        let result = (|| {
            let (reader, writer) = self.stream.as_mut().ok_or_else(|| bad("not connected"))?;
            writer.write_all(&self.request)?;
            let mut answers = Vec::with_capacity(calls.len());
            let mut keep_alive = true;
            for _ in calls {
                if !keep_alive {
                    return Err(bad("connection closed with requests pending"));
                }
                let (response, keep) = read_response(reader)?;
                if let Some(arrived) = arrived.as_deref_mut() {
                    arrived.push(Instant::now());
                }
                keep_alive = keep;
                answers.push(response);
            }
            Ok((answers, keep_alive))
        })();
        match result {
            Ok((answers, true)) => Ok(answers),
            Ok((answers, false)) => {
                self.stream = None;
                Ok(answers)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
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
    location: Option<String>,
}

/// Reads one response; the bool says whether the connection stays open.
fn read_response(reader: &mut impl BufRead) -> io::Result<(Response, bool)> {
    let mut line = Vec::with_capacity(128);
    read_line(reader, &mut line)?;
    let status = parse_status(&line)?;
    let framing = read_headers(reader, &mut line)?;
    let mut body = Vec::new();
    let no_body = status < 200 || status == 204 || status == 304;
    let location = framing.location;
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
        let response = Response {
            status,
            location,
            body,
        };
        return Ok((response, false));
    }
    let response = Response {
        status,
        location,
        body,
    };
    Ok((response, !framing.close))
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
        location: None,
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
        } else if name.eq_ignore_ascii_case("location") {
            framing.location = Some(value.to_string());
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

/// The address of an absolute `http://host:port/...` Location.
fn location_addr(location: &str) -> Option<SocketAddr> {
    let rest = location.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    authority.to_socket_addrs().ok()?.next()
}

// ---------------------------------------------------------------------
// etcd's v3 JSON gateway: requests and the fields we read back

/// Standard base64 (etcd's JSON carries keys and values so).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The string value of `"field":"..."` (proto3 JSON quotes 64-bit
/// integers), or of an unquoted `"field":value`.
fn json_field<'a>(body: &'a str, field: &str) -> Option<&'a str> {
    let key = format!("\"{field}\":");
    let at = body.find(&key)? + key.len();
    let rest = body[at..].trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.split('"').next();
    }
    let end = rest
        .find(|c: char| c == ',' || c == '}' || c.is_whitespace())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

fn json_u64(body: &[u8], field: &str) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    json_field(text, field)?.parse().ok()
}

// ---------------------------------------------------------------------
// Redis: RESP by hand

/// One reply, as far as `INCR`/`INCRBY`/`PING` need.
#[derive(Debug, PartialEq)]
enum Reply {
    Integer(i64),
    Simple(String),
    Error(String),
}

/// `*N\r\n$len\r\narg\r\n...`: a command as RESP.
fn resp_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn read_reply(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Reply> {
    read_line(reader, line)?;
    let (kind, rest) = line.split_first().ok_or_else(|| bad("empty RESP line"))?;
    let text = String::from_utf8_lossy(rest).into_owned();
    match kind {
        b':' => text
            .parse()
            .map(Reply::Integer)
            .map_err(|_| bad("bad RESP integer")),
        b'+' => Ok(Reply::Simple(text)),
        b'-' => Ok(Reply::Error(text)),
        _ => Err(bad("unexpected RESP reply type")),
    }
}

/// One keep-alive Redis connection.
struct Redis {
    addr: SocketAddr,
    stream: Option<(BufReader<TcpStream>, TcpStream)>,
    line: Vec<u8>,
}

impl Redis {
    fn new(addr: SocketAddr) -> Redis {
        Redis {
            addr,
            stream: None,
            line: Vec::with_capacity(64),
        }
    }

    /// Writes `commands` (RESP, `count` of them) at once and reads
    /// `count` replies.
    fn pipelined(&mut self, commands: &[u8], count: usize) -> io::Result<Vec<Reply>> {
        if self.stream.is_none() {
            let stream = connect(self.addr)?;
            let writer = stream.try_clone()?;
            self.stream = Some((BufReader::with_capacity(64 * 1024, stream), writer));
        }
        let (reader, writer) = self.stream.as_mut().ok_or_else(|| bad("not connected"))?;
        let result = writer.write_all(commands).and_then(|()| {
            (0..count)
                .map(|_| read_reply(reader, &mut self.line))
                .collect::<io::Result<Vec<Reply>>>()
        });
        if result.is_err() {
            self.stream = None;
        }
        result
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

/// What one connection thread (and then the whole run) counted.
#[derive(Default)]
struct Tally {
    ops: u64,
    requests: u64,
    errors: u64,
    /// Redirects followed (a follower naming the leader).
    redirects: u64,
    /// Retries elsewhere after a 503 or a refused connection.
    retries: u64,
    /// Requests that found no leader within `--leader-wait`.
    lost_leader: u64,
    /// Unlocks (deletes) answered "not found" after being sent again
    /// because the connection broke: the first send took effect.
    resent_gone: u64,
    latencies: Latencies,
    first_error: Option<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ops += other.ops;
        self.requests += other.requests;
        self.errors += other.errors;
        self.redirects += other.redirects;
        self.retries += other.retries;
        self.lost_leader += other.lost_leader;
        self.resent_gone += other.resent_gone;
        self.latencies.merge(other.latencies);
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// The whole run's result.
struct Report {
    tally: Tally,
    elapsed: Duration,
    /// When the last connection finished, in ns since the Unix epoch.
    end_unix_ns: u128,
    first_error: Option<String>,
    /// With `--cpu-of`: CPU milliseconds over the measured window, this
    /// process's own and then each listed one's (None: unreadable).
    cpu_ms: Option<CpuMs>,
}

/// CPU milliseconds over the measured window: this process's own, then
/// each `--cpu-of` process's by id (None: it could not be read).
type CpuMs = (Option<u64>, Vec<(u32, Option<u64>)>);

impl Report {
    fn line(&self, options: &Options) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let t = &self.tally;
        let ms = |ns: u64| ns as f64 / 1e6;
        format!(
            "RESULT scenario={}{} conns={} pipeline={} secs={secs:.2} unit={} ops={} ops_per_sec={:.0} \
             reqs={} reqs_per_sec={:.0} mean_ms={:.3} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} \
             max_ms={:.3} redirects={} retries={} lost_leader={} resent_gone={} errors={} end_unix_ns={}",
            options.scenario.name(),
            label_suffix(&options.label),
            options.conns,
            options.pipeline,
            options.scenario.unit(),
            t.ops,
            t.ops as f64 / secs,
            t.requests,
            t.requests as f64 / secs,
            t.latencies.mean() / 1e6,
            ms(t.latencies.quantile(0.50)),
            ms(t.latencies.quantile(0.99)),
            ms(t.latencies.quantile(0.999)),
            ms(t.latencies.max()),
            t.redirects,
            t.retries,
            t.lost_leader,
            t.resent_gone,
            t.errors,
            self.end_unix_ns,
        ) + &self.cpu_fields()
    }

    /// ` cpu_self_ms=N cpu_ms=PID:N/PID:N` (`?` for a process that could
    /// not be read), or nothing without `--cpu-of`.
    fn cpu_fields(&self) -> String {
        let Some((own, others)) = &self.cpu_ms else {
            return String::new();
        };
        let show = |ms: &Option<u64>| ms.map_or_else(|| "?".to_string(), |ms| ms.to_string());
        let others: Vec<String> = others
            .iter()
            .map(|(pid, ms)| format!("{pid}:{}", show(ms)))
            .collect();
        format!(" cpu_self_ms={} cpu_ms={}", show(own), others.join("/"))
    }

    /// Why this run must not count as a measurement, if it must not.
    fn failure(&self) -> Option<String> {
        let t = &self.tally;
        if t.lost_leader > 0 {
            Some(format!(
                "{} requests found no leader ({} errors in all)",
                t.lost_leader, t.errors
            ))
        } else if t.errors > 0 {
            Some(format!("{} errors", t.errors))
        } else if t.ops == 0 {
            Some("served nothing (0 operations)".to_string())
        } else {
            None
        }
    }
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
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
    let mut tally = Tally::default();
    for index in 0..options.conns {
        let shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{index}"))
            .spawn(move || drive(index, &shared));
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                tally.errors += 1;
                tally.first_error = Some(format!("cannot start connection {index}: {e}"));
            }
        }
    }
    let cpu_ms = (!options.cpu_of.is_empty()).then(|| cpu_over(options, measure_from, deadline));
    let mut finished = measure_from;
    for thread in threads {
        let Ok((one, done)) = thread.join() else {
            tally.errors += 1;
            continue;
        };
        tally.add(one);
        finished = finished.max(done);
    }
    tally.latencies.finish();
    let first_error = tally.first_error.take();
    Report {
        tally,
        elapsed: finished.saturating_duration_since(measure_from),
        end_unix_ns: unix_ns(),
        first_error,
        cpu_ms,
    }
}

/// CPU milliseconds of this process and of `--cpu-of`'s between `from`
/// and `until`, read from `/proc` at each end (the connection threads
/// run meanwhile; this one only sleeps).
fn cpu_over(options: &Options, from: Instant, until: Instant) -> CpuMs {
    let read_all = || {
        let own = cpu_ticks("self");
        let others: Vec<Option<u64>> = options
            .cpu_of
            .iter()
            .map(|pid| cpu_ticks(&pid.to_string()))
            .collect();
        (own, others)
    };
    std::thread::sleep(from.saturating_duration_since(Instant::now()));
    let before = read_all();
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    let after = read_all();
    let spent = |a: Option<u64>, b: Option<u64>| Some(b?.checked_sub(a?)? * TICK_MS);
    let others = options
        .cpu_of
        .iter()
        .zip(before.1.iter().zip(&after.1))
        .map(|(pid, (a, b))| (*pid, spent(*a, *b)))
        .collect();
    (spent(before.0, after.0), others)
}

/// Milliseconds per clock tick in `/proc/PID/stat` (`USER_HZ`, 100 on
/// every Linux architecture ticketd builds for).
const TICK_MS: u64 = 10;

/// utime + stime of a process, in clock ticks, from `/proc/PID/stat`
/// (fields 14 and 15, counted after the parenthesised command name,
/// which may hold spaces).
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    utime.checked_add(stime)
}

/// What a connection sets up once before its operations.
enum Setup {
    None,
    /// A ticketd session ID.
    Session(String),
    /// An etcd lease ID.
    Lease(u64),
}

/// One connection's loop: set up (a session or a lease for the lock
/// scenarios), then operations until the deadline or the shared budget.
fn drive(index: usize, shared: &Shared) -> (Tally, Instant) {
    let options = &shared.options;
    let mut worker = Worker::new(index, options);
    let setup = match options.scenario {
        Scenario::LockUnlock => worker.set_up(shared, Worker::session_open, Setup::Session),
        Scenario::EtcdLock => worker.set_up(shared, Worker::etcd_lease, Setup::Lease),
        _ => Some(Setup::None),
    };
    let mut sequence: u64 = 0;
    while Instant::now() < shared.deadline {
        if let Some(total) = options.ops_total
            && shared.started_ops.fetch_add(1, Ordering::Relaxed) >= total
        {
            break;
        }
        worker.measuring = Instant::now() >= shared.measure_from;
        let done = match (options.scenario, &setup) {
            (_, None) => Err("no session or lease".to_string()),
            (Scenario::Ids, _) => worker.ids(1),
            (Scenario::IdsCount(n), _) => worker.ids(n),
            (Scenario::SessionOpen, _) => worker.session_open().map(|_| 1),
            (Scenario::SessionLock, _) => worker.session_lock(index, sequence),
            (Scenario::LockUnlock, Some(Setup::Session(session))) if worker.pipeline > 1 => {
                worker.lock_unlock_pipelined(index, sequence, session)
            }
            (Scenario::LockUnlock, Some(Setup::Session(session))) => {
                worker.lock_unlock(index, sequence, session)
            }
            (Scenario::EtcdPut, _) => worker.etcd_put(),
            (Scenario::EtcdLease, _) => worker.etcd_lease().map(|_| 1),
            (Scenario::EtcdLock, Some(Setup::Lease(lease))) => {
                worker.etcd_lock(index, sequence, *lease)
            }
            (Scenario::RedisIncr, _) => worker.redis_incr(None),
            (Scenario::RedisIncrBy(n), _) => worker.redis_incr(Some(n)),
            (Scenario::LockUnlock | Scenario::EtcdLock | Scenario::FsyncFloor, _) => {
                Err("scenario without its setup".to_string())
            }
        };
        sequence += 1;
        match done {
            Ok(units) if worker.measuring => worker.tally.ops += units,
            Ok(_) => {}
            Err(why) => worker.error(why),
        }
    }
    (worker.tally, Instant::now())
}

struct Worker {
    addrs: Vec<SocketAddr>,
    /// The address a retry goes to next.
    next_addr: usize,
    client: Client,
    redis: Redis,
    tally: Tally,
    /// Inside the measured window: count and time what happens.
    measuring: bool,
    leader_wait: Duration,
    backoff_max: Duration,
    pipeline: usize,
    /// The last request was sent again after its connection broke
    /// (reset, closed) with it in flight: it may have taken effect twice.
    resent: bool,
}

/// What to do after one attempt of a request.
enum Attempt {
    Done(Response),
    Redirect(SocketAddr),
    /// Retry on another node; the bool says the request may have
    /// reached this one (a broken connection, not a refused one).
    Elsewhere(String, bool),
    Fail(String),
}

impl Worker {
    fn new(index: usize, options: &Options) -> Worker {
        Worker {
            addrs: options.addrs.clone(),
            next_addr: index % options.addrs.len().max(1),
            client: Client::new(options.addrs[0]),
            redis: Redis::new(options.addrs[0]),
            tally: Tally::default(),
            measuring: false,
            leader_wait: options.leader_wait,
            backoff_max: options.backoff_max,
            pipeline: options.pipeline,
            resent: false,
        }
    }

    fn error(&mut self, why: String) {
        if self.measuring {
            self.tally.errors += 1;
            if self.tally.first_error.is_none() {
                self.tally.first_error = Some(why);
            }
        }
    }

    /// The per-connection setup, retried until the deadline: without it
    /// the connection can do nothing.
    fn set_up<T>(
        &mut self,
        shared: &Shared,
        make: fn(&mut Worker) -> Result<T, String>,
        wrap: fn(T) -> Setup,
    ) -> Option<Setup> {
        while Instant::now() < shared.deadline {
            match make(self) {
                Ok(value) => return Some(wrap(value)),
                Err(why) => {
                    eprintln!("load: cannot set up a connection: {why}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        None
    }

    fn attempt(&mut self, call: &Call) -> Attempt {
        match self.client.call(call) {
            Ok(r) if matches!(r.status, 301 | 302 | 307 | 308) => {
                match r.location.as_deref().and_then(location_addr) {
                    Some(addr) => Attempt::Redirect(addr),
                    None => Attempt::Fail(format!("{} without a usable Location", r.status)),
                }
            }
            Ok(r) if r.status == 503 => {
                Attempt::Elsewhere(format!("503 {}", first_line(&r.body)), false)
            }
            Ok(r) => Attempt::Done(r),
            Err(e) if retry_elsewhere(&e) => {
                Attempt::Elsewhere(e.to_string(), e.kind() != io::ErrorKind::ConnectionRefused)
            }
            Err(e) => Attempt::Fail(e.to_string()),
        }
    }

    /// One timed request, following the leader: redirects at once, 503s
    /// and refused connections on the next address after a backoff, for
    /// up to `leader_wait`. `Err` says what was wrong.
    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Response, String> {
        let call = Call { method, path, body };
        let started = Instant::now();
        let mut backoff = BACKOFF_MIN;
        let mut hops = 0;
        self.resent = false;
        let result = loop {
            let why = match self.attempt(&call) {
                Attempt::Done(response) => break Ok(response),
                Attempt::Fail(why) => break Err(why),
                Attempt::Redirect(addr) => {
                    self.tally.redirects += u64::from(self.measuring);
                    self.client.retarget(addr);
                    hops += 1;
                    if hops < HOPS_BEFORE_PAUSE {
                        continue;
                    }
                    "redirected in a circle".to_string()
                }
                Attempt::Elsewhere(why, maybe_sent) => {
                    self.tally.retries += u64::from(self.measuring);
                    self.resent |= maybe_sent;
                    if !self.addrs.is_empty() {
                        self.next_addr = (self.next_addr + 1) % self.addrs.len();
                        self.client.retarget(self.addrs[self.next_addr]);
                    }
                    why
                }
            };
            if started.elapsed() + backoff > self.leader_wait {
                self.tally.lost_leader += u64::from(self.measuring);
                break Err(format!(
                    "no leader for {:.1} s: {why}",
                    self.leader_wait.as_secs_f64()
                ));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(self.backoff_max);
            hops = 0;
        };
        if self.measuring {
            self.tally.requests += 1;
            self.tally.latencies.record(started.elapsed());
        }
        match result {
            Ok(response) if (200..300).contains(&response.status) => Ok(response),
            Ok(response) => Err(format!(
                "{method} {path}: {} {}",
                response.status,
                first_line(&response.body)
            )),
            Err(why) => Err(format!("{method} {path}: {why}")),
        }
    }

    /// `POST /` or `POST /?count=n`; checks the number of IDs returned.
    fn ids(&mut self, n: u64) -> Result<u64, String> {
        let path = if n == 1 {
            "/".to_string()
        } else {
            format!("/?count={n}")
        };
        let response = self.request("POST", &path, b"")?;
        let lines = response.body.iter().filter(|b| **b == b'\n').count() as u64;
        if lines != n {
            return Err(format!("POST {path}: {lines} IDs instead of {n}"));
        }
        Ok(n)
    }

    /// Opens a session; the body is its ID as a JSON string.
    fn session_open(&mut self) -> Result<String, String> {
        let path = format!("/api/v1/sessions?name=bench&ttl={SESSION_TTL_MS}");
        let response = self.request("POST", &path, b"")?;
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

    fn lock(&mut self, path: &str) -> Result<(), String> {
        let response = self.request("POST", path, b"")?;
        if response.body.trim_ascii() != b"true" {
            return Err(format!(
                "POST {path}: not granted: {}",
                first_line(&response.body)
            ));
        }
        Ok(())
    }

    /// Lock a fresh resource, then unlock it: one pair.
    fn lock_unlock(&mut self, index: usize, sequence: u64, session: &str) -> Result<u64, String> {
        let path = format!("/api/v1/locks/r{index}-{sequence}?sessid={session}");
        self.lock(&path)?;
        match self.request("DELETE", &path, b"") {
            Ok(_) => Ok(1),
            // Unlocked by the first send, whose answer was lost.
            Err(why) if self.resent && why.contains(": 404 ") => {
                self.tally.resent_gone += u64::from(self.measuring);
                Ok(1)
            }
            Err(why) => Err(why),
        }
    }

    /// `pipeline` pairs written at once on this connection, answered in
    /// order; the latency of each request runs from the write. Pointed at
    /// the leader: a redirect here is an error.
    fn lock_unlock_pipelined(
        &mut self,
        index: usize,
        sequence: u64,
        session: &str,
    ) -> Result<u64, String> {
        let paths: Vec<String> = (0..self.pipeline)
            .map(|i| format!("/api/v1/locks/p{index}-{sequence}-{i}?sessid={session}"))
            .collect();
        let calls: Vec<Call> = paths
            .iter()
            .flat_map(|path| {
                [
                    Call {
                        method: "POST",
                        path,
                        body: b"",
                    },
                    Call {
                        method: "DELETE",
                        path,
                        body: b"",
                    },
                ]
            })
            .collect();
        let started = Instant::now();
        let mut arrived = Vec::with_capacity(calls.len());
        let answers = self.client.pipelined(&calls, Some(&mut arrived));
        if self.measuring {
            self.tally.requests += arrived.len() as u64;
            for at in &arrived {
                self.tally.latencies.record(at.duration_since(started));
            }
        }
        let answers = answers.map_err(|e| format!("pipelined lock+unlock: {e}"))?;
        for (call, answer) in calls.iter().zip(&answers) {
            let granted = call.method == "DELETE" || answer.body.trim_ascii() == b"true";
            if !(200..300).contains(&answer.status) || !granted {
                return Err(format!(
                    "{} {}: {} {}",
                    call.method,
                    call.path,
                    answer.status,
                    first_line(&answer.body)
                ));
            }
        }
        Ok(self.pipeline as u64)
    }

    /// A session that keeps a lock on a resource of its own: two
    /// requests, one unit (the scale scenario's state).
    fn session_lock(&mut self, index: usize, sequence: u64) -> Result<u64, String> {
        let session = self.session_open()?;
        self.lock(&format!(
            "/api/v1/locks/held{index}-{sequence}?sessid={session}"
        ))?;
        Ok(1)
    }

    /// etcd put of one key; the ID is the revision in the header.
    fn etcd_put(&mut self) -> Result<u64, String> {
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
            base64(b"id"),
            base64(b"x")
        );
        let response = self.request("POST", "/v3/kv/put", body.as_bytes())?;
        match json_u64(&response.body, "revision") {
            Some(revision) if revision > 0 => Ok(1),
            _ => Err(format!("put: no revision: {}", first_line(&response.body))),
        }
    }

    /// etcd lease grant; its ID.
    fn etcd_lease(&mut self) -> Result<u64, String> {
        let body = format!("{{\"TTL\":\"{ETCD_LEASE_TTL_S}\"}}");
        let response = self.request("POST", "/v3/lease/grant", body.as_bytes())?;
        match json_u64(&response.body, "ID") {
            Some(id) if id > 0 => Ok(id),
            _ => Err(format!(
                "lease grant: no ID: {}",
                first_line(&response.body)
            )),
        }
    }

    /// etcd's lock recipe on a fresh key: a txn that puts the key with
    /// the lease only if it does not exist (create_revision == 0), then a
    /// delete: one pair.
    fn etcd_lock(&mut self, index: usize, sequence: u64, lease: u64) -> Result<u64, String> {
        let key = base64(format!("lock/r{index}-{sequence}").as_bytes());
        let txn = format!(
            "{{\"compare\":[{{\"target\":\"CREATE\",\"result\":\"EQUAL\",\"key\":\"{key}\",\
             \"create_revision\":\"0\"}}],\"success\":[{{\"request_put\":{{\"key\":\"{key}\",\
             \"value\":\"{}\",\"lease\":\"{lease}\"}}}}],\"failure\":[]}}",
            base64(b"held")
        );
        let response = self.request("POST", "/v3/kv/txn", txn.as_bytes())?;
        let text = String::from_utf8_lossy(&response.body);
        // A txn sent again after a broken connection finds its own key.
        let granted = json_field(&text, "succeeded") == Some("true") || self.resent;
        if !granted {
            return Err(format!(
                "lock txn: not granted: {}",
                first_line(&response.body)
            ));
        }
        let delete = format!("{{\"key\":\"{key}\"}}");
        let response = self.request("POST", "/v3/kv/deleterange", delete.as_bytes())?;
        let deleted = json_u64(&response.body, "deleted") == Some(1);
        if !deleted && self.resent {
            self.tally.resent_gone += u64::from(self.measuring);
        } else if !deleted {
            return Err(format!(
                "unlock: not deleted: {}",
                first_line(&response.body)
            ));
        }
        Ok(1)
    }

    /// `pipeline` Redis `INCR id` (or `INCRBY id n`) at once; the
    /// replies must be positive and increasing.
    fn redis_incr(&mut self, by: Option<u64>) -> Result<u64, String> {
        let mut commands = Vec::with_capacity(64 * self.pipeline);
        let by_text = by.map(|n| n.to_string());
        for _ in 0..self.pipeline {
            match &by_text {
                None => resp_command(&mut commands, &[b"INCR", b"id"]),
                Some(n) => resp_command(&mut commands, &[b"INCRBY", b"id", n.as_bytes()]),
            }
        }
        let started = Instant::now();
        let replies = self.redis.pipelined(&commands, self.pipeline);
        if self.measuring {
            self.tally.requests += self.pipeline as u64;
            let elapsed = started.elapsed();
            for _ in 0..self.pipeline {
                self.tally.latencies.record(elapsed);
            }
        }
        let replies = replies.map_err(|e| format!("redis: {e}"))?;
        let mut last = 0;
        for reply in replies {
            match reply {
                Reply::Integer(n) if n > last => last = n,
                other => return Err(format!("redis: unexpected reply {other:?}")),
            }
        }
        Ok(by.unwrap_or(1) * self.pipeline as u64)
    }
}

/// A refused or reset connection: the node is gone (or restarting), so
/// another one may lead. A timeout is not retried: it is an error.
fn retry_elsewhere(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected
    ) || e.to_string().contains("connection closed")
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

// ---------------------------------------------------------------------
// The fsync floor

/// 4 KiB writes, each followed by `fdatasync`, in a ring over a file
/// written in full and synced first, so no write changes the file's size
/// or extents: the cheapest durable write the disk under `--dir` allows.
fn fsync_floor(options: &Options) -> io::Result<Report> {
    let dir = options
        .dir
        .as_ref()
        .ok_or_else(|| bad("fsync-floor needs --dir"))?;
    let path = dir.join("fsync-floor.dat");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let result = fsync_loop(&file, options);
    drop(file);
    let _ = std::fs::remove_file(&path);
    result
}

fn fsync_loop(file: &File, options: &Options) -> io::Result<Report> {
    let zeros = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written < FLOOR_FILE_BYTES {
        file.write_all_at(&zeros, written)?;
        written += zeros.len() as u64;
    }
    file.sync_all()?;
    let block = vec![0x5au8; FLOOR_WRITE_BYTES];
    let slots = FLOOR_FILE_BYTES / FLOOR_WRITE_BYTES as u64;
    let mut tally = Tally::default();
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(options.warmup);
    let deadline = measure_from + Duration::from_secs_f64(options.secs);
    let mut slot = 0u64;
    loop {
        let now = Instant::now();
        if now >= deadline || options.ops_total.is_some_and(|n| tally.ops >= n) {
            break;
        }
        file.write_all_at(&block, slot * FLOOR_WRITE_BYTES as u64)?;
        file.sync_data()?;
        if now >= measure_from {
            tally.ops += 1;
            tally.requests += 1;
            tally.latencies.record(now.elapsed());
        }
        slot = (slot + 1) % slots;
    }
    tally.latencies.finish();
    Ok(Report {
        tally,
        elapsed: Instant::now().saturating_duration_since(measure_from),
        end_unix_ns: unix_ns(),
        first_error: None,
        cpu_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_exact_nearest_rank() {
        let mut l = Latencies::default();
        for us in (1..=1000u64).rev() {
            l.record(Duration::from_micros(us));
        }
        l.finish();
        assert_eq!(l.quantile(0.5), 500_000);
        assert_eq!(l.quantile(0.99), 990_000);
        assert_eq!(l.quantile(0.999), 999_000);
        assert_eq!(l.quantile(1.0), 1_000_000);
        assert_eq!(l.max(), 1_000_000);
        assert!((l.mean() - 500_500.0).abs() < 1e-6);
        assert_eq!(Latencies::default().quantile(0.99), 0);
    }

    #[test]
    fn scenarios_parse() {
        assert_eq!(Scenario::parse("ids"), Ok(Scenario::Ids));
        assert_eq!(
            Scenario::parse("ids-count=1000"),
            Ok(Scenario::IdsCount(1000))
        );
        assert_eq!(Scenario::parse("lock-unlock"), Ok(Scenario::LockUnlock));
        assert_eq!(Scenario::parse("etcd-lock"), Ok(Scenario::EtcdLock));
        assert_eq!(
            Scenario::parse("redis-incrby=1000"),
            Ok(Scenario::RedisIncrBy(1000))
        );
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
    fn a_redirect_names_the_leader() {
        let wire = b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:8002/?count=3\r\nContent-Length: 0\r\n\r\n";
        let (response, _) = read_response(&mut BufReader::new(&wire[..])).unwrap();
        assert_eq!(response.status, 301);
        let addr = response.location.as_deref().and_then(location_addr);
        assert_eq!(addr, Some("127.0.0.1:8002".parse().unwrap()));
        assert_eq!(location_addr("/relative"), None);
    }

    /// A server on loopback that answers each connection's requests
    /// with `answer(n)` for the n-th request it sees, for `count` requests.
    fn fake_server(count: usize, answer: fn(usize) -> String) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut served = 0;
            while served < count {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                let mut line = Vec::new();
                // Request line and headers up to the blank line (no bodies).
                while served < count && read_line(&mut reader, &mut line).is_ok() {
                    if line.is_empty() {
                        let _ = writer.write_all(answer(served).as_bytes());
                        served += 1;
                    }
                }
            }
        });
        addr
    }

    fn options(addrs: Vec<SocketAddr>, leader_wait_ms: u64) -> Options {
        Options {
            addrs,
            scenario: Scenario::Ids,
            conns: 1,
            secs: 1.0,
            ops_total: None,
            warmup: 0.0,
            label: String::new(),
            pipeline: 1,
            leader_wait: Duration::from_millis(leader_wait_ms),
            backoff_max: Duration::from_millis(10),
            dir: None,
            cpu_of: Vec::new(),
        }
    }

    #[test]
    fn requests_follow_redirects_and_retry_503_elsewhere() {
        let leader = fake_server(1, |_| {
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n7\n".to_string()
        });
        let follower = fake_server(1, |_| {
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_string()
        });
        static LEADER: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();
        LEADER.set(leader).unwrap();
        let redirector = fake_server(1, |_| {
            format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: http://{}/\r\nContent-Length: 0\r\n\r\n",
                LEADER.get().unwrap()
            )
        });
        // The first address says 503: the next one redirects to the leader.
        let mut worker = Worker::new(0, &options(vec![follower, redirector], 5_000));
        worker.measuring = true;
        assert_eq!(worker.ids(1), Ok(1));
        assert_eq!(
            (
                worker.tally.retries,
                worker.tally.redirects,
                worker.tally.errors
            ),
            (1, 1, 0)
        );
        assert_eq!(worker.tally.latencies.nanos.len(), 1);
    }

    #[test]
    fn no_leader_within_the_wait_is_a_lost_leader() {
        let dead = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let mut worker = Worker::new(0, &options(vec![dead], 100));
        worker.measuring = true;
        let started = Instant::now();
        let answer = worker.ids(1);
        assert!(answer.is_err(), "{answer:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(worker.tally.lost_leader, 1);
        assert!(worker.tally.retries >= 2);
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

    #[test]
    fn etcd_json_fields_and_base64() {
        assert_eq!(base64(b"id"), "aWQ=");
        assert_eq!(base64(b"lock/r1-2"), "bG9jay9yMS0y");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b""), "");
        let put = br#"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"42","raft_term":"2"}}"#;
        assert_eq!(json_u64(put, "revision"), Some(42));
        let txn = br#"{"header":{"revision":"7"},"succeeded":true,"responses":[]}"#;
        assert_eq!(
            json_field(std::str::from_utf8(txn).unwrap(), "succeeded"),
            Some("true")
        );
        // proto3 JSON leaves `succeeded: false` out.
        assert_eq!(json_field(r#"{"header":{}}"#, "succeeded"), None);
    }

    #[test]
    fn resp_commands_and_replies() {
        let mut out = Vec::new();
        resp_command(&mut out, &[b"INCRBY", b"id", b"1000"]);
        assert_eq!(out, b"*3\r\n$6\r\nINCRBY\r\n$2\r\nid\r\n$4\r\n1000\r\n");
        let wire = b":17\r\n+PONG\r\n-ERR wrong\r\n$3\r\n";
        let mut reader = BufReader::new(&wire[..]);
        let mut line = Vec::new();
        assert_eq!(
            read_reply(&mut reader, &mut line).unwrap(),
            Reply::Integer(17)
        );
        assert_eq!(
            read_reply(&mut reader, &mut line).unwrap(),
            Reply::Simple("PONG".into())
        );
        assert_eq!(
            read_reply(&mut reader, &mut line).unwrap(),
            Reply::Error("ERR wrong".into())
        );
        assert!(read_reply(&mut reader, &mut line).is_err());
    }

    #[test]
    fn cpu_time_is_read_from_proc_and_printed_per_process() {
        assert!(cpu_ticks("self").is_some(), "this process's own stat");
        assert_eq!(cpu_ticks("0"), None, "no process 0 in /proc");
        let mut report = Report {
            tally: Tally::default(),
            elapsed: Duration::from_secs(1),
            end_unix_ns: 0,
            first_error: None,
            cpu_ms: None,
        };
        assert_eq!(report.cpu_fields(), "", "nothing without --cpu-of");
        report.cpu_ms = Some((Some(120), vec![(7, Some(3400)), (9, None)]));
        assert_eq!(report.cpu_fields(), " cpu_self_ms=120 cpu_ms=7:3400/9:?");
        let bad = parse(&[
            "--scenario".into(),
            "ids".into(),
            "--addr".into(),
            "127.0.0.1:1".into(),
            "--cpu-of".into(),
            "x".into(),
        ]);
        assert!(bad.is_err(), "--cpu-of takes process ids");
    }

    #[test]
    fn a_run_that_served_nothing_or_erred_fails() {
        let report = |f: fn(&mut Tally)| {
            let mut tally = Tally {
                ops: 10,
                ..Tally::default()
            };
            f(&mut tally);
            Report {
                tally,
                elapsed: Duration::from_secs(1),
                end_unix_ns: 0,
                first_error: None,
                cpu_ms: None,
            }
        };
        assert_eq!(report(|_| {}).failure(), None);
        assert!(report(|t| t.ops = 0).failure().is_some());
        assert!(report(|t| t.errors = 1).failure().is_some());
        assert!(report(|t| t.lost_leader = 1).failure().is_some());
        // Redirects and retries that succeeded are not failures.
        assert_eq!(
            report(|t| {
                t.redirects = 3;
                t.retries = 2;
            })
            .failure(),
            None
        );
    }
}
