//! A bare tiny_http server: the ceiling ticketd's HTTP path is measured
//! against. It answers `POST /` with one number and `POST /?count=N` with
//! N numbers, one per line, from an atomic counter — the same bytes
//! ticketd sends, without Raft, LMDB or the ID pool's lease. The listener
//! is made with socket2 and `TCP_NODELAY`, like ticketd's
//! (src/http/listener.rs), so the comparison is not skewed by Nagle.
//!
//! It owns nothing of ticketd and links none of it: a benchmark baseline
//! must not share the code it is the baseline for.
//!
//! Like ticketd, it answers each request on the thread that read it from
//! its connection (tiny_http's handler mode); `--workers N` instead hands
//! requests to N worker threads (tiny_http's usual `recv()` loop), to
//! measure what that hand-off costs.
//!
//! `--handoff` gives the shape of a ticketd write without Raft or a disk:
//! the connection's thread hands each request to one "committer" thread
//! and waits for its go-ahead, and the committer answers everything
//! queued at each wake-up, as ticketd's node thread answers a committed
//! batch. It is the ceiling for writes on the machine it runs on.
//! `--wait-us N` has the committer pause N µs before each batch's
//! answers, a stand-in for the one fsync a commit needs at the least.
//!
//! Usage: `bare_server [--addr HOST:PORT] [--workers N | --handoff [--wait-us N]]`. It prints
//! `LISTENING <addr>` once bound and serves until killed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

/// ticketd's `COUNT_MAX`: the same cap on one answer's size.
const COUNT_MAX: u64 = 100_000;
/// Far more threads than this is a typo, not a benchmark.
const WORKERS_MAX: usize = 4096;
/// Turns queued for the committer at most (ticketd's inbox is bounded too).
const QUEUE_MAX: usize = 65_536;
/// A pause per batch longer than this (a second) is a typo.
const WAIT_US_MAX: u64 = 1_000_000;

struct Options {
    addr: String,
    mode: Mode,
}

/// Where a request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// On the connection's thread, as ticketd answers IDs.
    Direct,
    /// By one of N worker threads.
    Workers(usize),
    /// On the connection's thread, after a go-ahead from one committer
    /// that pauses this long per batch.
    Handoff(Duration),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            eprintln!("bare_server: {why}");
            eprint!("{}", usage());
            return ExitCode::from(2);
        }
    };
    match serve(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("bare_server: {why}");
            ExitCode::from(1)
        }
    }
}

fn usage() -> String {
    "Usage: bare_server [--addr HOST:PORT] [--workers N | --handoff [--wait-us N]]\n".to_string()
}

fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut spec = getopts::Options::new();
    spec.optopt(
        "",
        "addr",
        "listen address (default 127.0.0.1:0)",
        "HOST:PORT",
    );
    spec.optopt(
        "",
        "workers",
        "hand requests to N worker threads (default: none, answer on the connection's thread)",
        "N",
    );
    spec.optflag(
        "",
        "handoff",
        "wait for a go-ahead from one committer thread before answering (a write's shape)",
    );
    spec.optopt(
        "",
        "wait-us",
        "with --handoff: the committer pauses N microseconds per batch (default 0)",
        "N",
    );
    spec.optflag("h", "help", "print this help");
    let matches = spec.parse(args).map_err(|e| e.to_string())?;
    if matches.opt_present("help") {
        return Ok(None);
    }
    if let Some(extra) = matches.free.first() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    let addr = matches
        .opt_str("addr")
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let wait = match matches.opt_str("wait-us") {
        None => None,
        Some(raw) => match raw.parse::<u64>() {
            Ok(n) if n <= WAIT_US_MAX => Some(Duration::from_micros(n)),
            _ => return Err(format!("--wait-us must be 0 to {WAIT_US_MAX}, not {raw:?}")),
        },
    };
    let mode = match (matches.opt_str("workers"), matches.opt_present("handoff")) {
        (None, false) if wait.is_some() => return Err("--wait-us needs --handoff".into()),
        (None, false) => Mode::Direct,
        (None, true) => Mode::Handoff(wait.unwrap_or(Duration::ZERO)),
        (Some(_), true) => return Err("--workers and --handoff exclude each other".into()),
        (Some(_), false) if wait.is_some() => return Err("--wait-us needs --handoff".into()),
        (Some(raw), false) => match raw.parse::<usize>() {
            Ok(n) if (1..=WORKERS_MAX).contains(&n) => Mode::Workers(n),
            _ => return Err(format!("--workers must be 1 to {WORKERS_MAX}, not {raw:?}")),
        },
    };
    Ok(Some(Options { addr, mode }))
}

fn serve(options: &Options) -> Result<(), String> {
    let listener = ticketd::http::bind_listener(&options.addr)
        .map_err(|e| format!("cannot bind {}: {e}", options.addr))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?;
    let counter = Arc::new(AtomicU64::new(1));
    let worker_count = match options.mode {
        Mode::Workers(n) => n,
        Mode::Direct | Mode::Handoff(_) => {
            let handler_counter = Arc::clone(&counter);
            let handler: tiny_http::Handler = if let Mode::Handoff(pause) = options.mode {
                let committer = Committer::start(pause)?;
                Arc::new(move |request| {
                    committer.wait_turn();
                    respond(request, &handler_counter);
                })
            } else {
                Arc::new(move |request| respond(request, &handler_counter))
            };
            serve_on_connections(listener, local, handler)?;
            return Ok(());
        }
    };
    let server = Server::from_listener(listener, None).map_err(|e| format!("tiny_http: {e}"))?;
    let server = Arc::new(server);
    println!("LISTENING {local}");
    let _ = std::io::stdout().flush();
    let mut workers = Vec::with_capacity(worker_count);
    for n in 0..worker_count {
        let server = Arc::clone(&server);
        let counter = Arc::clone(&counter);
        let worker = std::thread::Builder::new()
            .name(format!("bare-{n}"))
            .spawn(move || work(&server, &counter))
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        workers.push(worker);
    }
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}

/// Serves in tiny_http's handler mode until the process is killed.
fn serve_on_connections(
    listener: std::net::TcpListener,
    local: std::net::SocketAddr,
    handler: tiny_http::Handler,
) -> Result<(), String> {
    let _server = Server::from_listener_with_handler(listener, handler)
        .map_err(|e| format!("tiny_http: {e}"))?;
    println!("LISTENING {local}");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

/// A go-ahead for one waiting request.
type Turn = Arc<(Mutex<bool>, Condvar)>;

/// One thread that answers, at each wake-up, every turn queued since
/// the last: the hand-offs of a ticketd write (connection thread → node
/// thread → connection thread) without the Raft work in between.
struct Committer {
    queue: SyncSender<Turn>,
}

impl Committer {
    fn start(pause: Duration) -> Result<Committer, String> {
        let (queue, turns) = sync_channel::<Turn>(QUEUE_MAX);
        std::thread::Builder::new()
            .name("committer".into())
            .spawn(move || {
                while let Ok(first) = turns.recv() {
                    if !pause.is_zero() {
                        std::thread::sleep(pause);
                    }
                    let mut batch = vec![first];
                    batch.extend(turns.try_iter());
                    for turn in batch {
                        *turn.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
                        turn.1.notify_one();
                    }
                }
            })
            .map_err(|e| format!("cannot start the committer: {e}"))?;
        Ok(Committer { queue })
    }

    /// Queues a turn and waits until the committer has answered it.
    fn wait_turn(&self) {
        let turn: Turn = Arc::new((Mutex::new(false), Condvar::new()));
        if self.queue.send(Arc::clone(&turn)).is_err() {
            return;
        }
        let mut done = turn.0.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = turn.1.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn work(server: &Server, counter: &AtomicU64) {
    while let Ok(request) = server.recv() {
        respond(request, counter);
    }
}

fn respond(request: Request, counter: &AtomicU64) {
    let (status, body) = answer(request.method(), request.url(), counter);
    let response = Response::from_data(body.into_bytes()).with_status_code(StatusCode(status));
    // ticketd sends this header too: keep the bytes on the wire equal.
    let response = match Header::from_bytes("Content-Type", "text/plain; charset=utf-8") {
        Ok(header) => response.with_header(header),
        Err(()) => response,
    };
    // A client that went away is its own problem, not the server's.
    let _ = request.respond(response);
}

/// The status and body for a request: IDs on `POST /`, errors otherwise.
fn answer(method: &Method, url: &str, counter: &AtomicU64) -> (u16, String) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    if path != "/" {
        return (404, "no such path\n".to_string());
    }
    if *method != Method::Post {
        return (405, "use POST\n".to_string());
    }
    match parse_count(query) {
        Ok(count) => {
            let first = counter.fetch_add(count, Ordering::Relaxed);
            (200, ticketd::http::render_ids(first, first + count - 1))
        }
        Err(why) => (400, why),
    }
}

fn parse_count(query: &str) -> Result<u64, String> {
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("count="));
    let Some(raw) = raw else {
        return Ok(1);
    };
    match raw.parse::<u64>() {
        Ok(n) if (1..=COUNT_MAX).contains(&n) => Ok(n),
        _ => Err(format!("count must be 1 to {COUNT_MAX}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(args: &[&str]) -> Result<Mode, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        parse(&args).map(|options| options.map_or(Mode::Direct, |o| o.mode))
    }

    #[test]
    fn modes_are_parsed() {
        assert_eq!(mode_of(&[]), Ok(Mode::Direct));
        assert_eq!(mode_of(&["--handoff"]), Ok(Mode::Handoff(Duration::ZERO)));
        assert_eq!(
            mode_of(&["--handoff", "--wait-us", "600"]),
            Ok(Mode::Handoff(Duration::from_micros(600)))
        );
        assert!(mode_of(&["--wait-us", "600"]).is_err());
        assert!(mode_of(&["--workers", "2", "--wait-us", "600"]).is_err());
        assert!(mode_of(&["--handoff", "--wait-us", "2000000"]).is_err());
        assert_eq!(mode_of(&["--workers", "8"]), Ok(Mode::Workers(8)));
        assert!(mode_of(&["--workers", "8", "--handoff"]).is_err());
        assert!(mode_of(&["--workers", "0"]).is_err());
    }

    #[test]
    fn counts_are_parsed_and_bounded() {
        assert_eq!(parse_count(""), Ok(1));
        assert_eq!(parse_count("count=1000"), Ok(1000));
        assert_eq!(parse_count("x=1&count=7"), Ok(7));
        assert!(parse_count("count=0").is_err());
        assert!(parse_count("count=100001").is_err());
        assert!(parse_count("count=abc").is_err());
    }

    #[test]
    fn answers_ids_and_errors() {
        let counter = AtomicU64::new(5);
        assert_eq!(answer(&Method::Post, "/", &counter), (200, "5\n".into()));
        assert_eq!(
            answer(&Method::Post, "/?count=3", &counter),
            (200, "6\n7\n8\n".into())
        );
        assert_eq!(answer(&Method::Get, "/", &counter).0, 405);
        assert_eq!(answer(&Method::Post, "/x", &counter).0, 404);
        assert_eq!(answer(&Method::Post, "/?count=0", &counter).0, 400);
    }
}
