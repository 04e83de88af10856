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
//! Usage: `bare_server [--addr HOST:PORT] [--workers N]`. It prints
//! `LISTENING <addr>` once bound and serves until killed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

/// ticketd's `COUNT_MAX`: the same cap on one answer's size.
const COUNT_MAX: u64 = 100_000;
/// Far more threads than this is a typo, not a benchmark.
const WORKERS_MAX: usize = 4096;

struct Options {
    addr: String,
    /// `None`: answer on the connection's thread, as ticketd does.
    workers: Option<usize>,
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
    "Usage: bare_server [--addr HOST:PORT] [--workers N]\n".to_string()
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
    let workers = match matches.opt_str("workers") {
        None => None,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=WORKERS_MAX).contains(&n) => Some(n),
            _ => return Err(format!("--workers must be 1 to {WORKERS_MAX}, not {raw:?}")),
        },
    };
    Ok(Some(Options { addr, workers }))
}

fn serve(options: &Options) -> Result<(), String> {
    let listener = ticketd::http::bind_listener(&options.addr)
        .map_err(|e| format!("cannot bind {}: {e}", options.addr))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?;
    let counter = Arc::new(AtomicU64::new(1));
    let Some(worker_count) = options.workers else {
        let handler_counter = Arc::clone(&counter);
        let handler: tiny_http::Handler =
            Arc::new(move |request| respond(request, &handler_counter));
        let _server = Server::from_listener_with_handler(listener, handler)
            .map_err(|e| format!("tiny_http: {e}"))?;
        println!("LISTENING {local}");
        let _ = std::io::stdout().flush();
        loop {
            std::thread::park();
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
