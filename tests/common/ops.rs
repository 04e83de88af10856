//! Additive helpers for the cluster and fault tests: reading numbers out
//! of `/api/v1/status`, waiting for a node's exit status, raw bytes on a
//! socket, and a few whole-cluster operations. Nothing here changes what
//! the rest of the harness does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{Cluster, Node, Response, post, request, request_following, wait_for};

/// The number after `"key":` in a flat JSON document such as
/// `/api/v1/status` (the first occurrence, so top-level keys that come
/// before any nested object).
pub fn json_u64(json: &str, key: &str) -> Option<u64> {
    let needle = format!("\"{key}\":");
    let start = json.find(&needle)? + needle.len();
    let digits: String = json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The string after `"key":` in a flat JSON document (no escapes).
pub fn json_str(json: &str, key: &str) -> Option<String> {
    let needle = format!("\"{key}\":\"");
    let start = json.find(&needle)? + needle.len();
    let end = json[start..].find('"')? + start;
    Some(json[start..end].to_string())
}

/// A xorshift generator: tests need varied bytes, not good randomness.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Connects, writes `bytes` (ignoring write errors: the peer may close
/// early), optionally half-closes, and reads whatever comes back until
/// EOF, an error or `read_timeout`. None if the connection is refused.
pub fn raw_exchange(
    addr: &str,
    bytes: &[u8],
    half_close: bool,
    read_timeout: Duration,
) -> Option<Vec<u8>> {
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(read_timeout)).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    let _ = stream.write_all(bytes);
    if half_close {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = Vec::new();
    let deadline = Instant::now() + read_timeout;
    let mut buffer = [0u8; 8192];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    Some(answer)
}

/// The status code of a raw HTTP answer, if it starts like one.
pub fn raw_status(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer.get(..12.min(answer.len()))?).ok()?;
    text.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

/// Runs the binary with `args` to completion (bounded by `timeout`);
/// returns its exit status and stderr. None if it did not exit in time.
pub fn run_ticketd(args: &[&str], timeout: Duration) -> Option<(ExitStatus, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ticketd"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ticketd");
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            return Some((status, stderr));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Node {
    /// A number from this node's `/api/v1/status`.
    pub fn status_u64(&self, key: &str) -> Option<u64> {
        json_u64(&self.status()?, key)
    }

    /// The exit status if the process has exited (it stays "running" for
    /// [`Node::is_running`] until killed or waited for).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to exit by itself; None if
    /// it is still running (it is left running) or was never started.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_for(timeout, || self.exited())?;
        self.child = None;
        Some(status)
    }

    /// Whether the process is alive and answers `/healthz`.
    pub fn is_healthy(&mut self) -> bool {
        self.exited().is_none()
            && super::get(&self.http(), "/healthz").is_some_and(|r| r.status == 200)
    }
}

impl Cluster {
    /// Waits until some running node says it is the leader in its
    /// status (without taking IDs); returns its index.
    pub fn wait_leader_status(&self, timeout: Duration) -> usize {
        let found = wait_for(timeout, || {
            self.nodes
                .iter()
                .position(|n| n.is_running() && n.is_leader())
        });
        match found {
            Some(i) => i,
            None => panic!("no leader within {timeout:?}; logs:\n{}", self.logs()),
        }
    }

    /// Indexes of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_running())
            .collect()
    }

    pub fn kill_all(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    pub fn start_all(&mut self) {
        for node in &mut self.nodes {
            if !node.is_running() {
                node.start();
            }
        }
    }
}

/// `POST /?count=N` through any running node of `cluster`, following
/// redirects; the IDs of a 200, or the last answer (None: no answer).
/// `POST /` on `addr`, following one 301 by hand (as `curl -X POST -L`
/// does): the answer, and whether a 301 came first. `None` when no
/// answer came (or the redirect named no host).
pub fn post_following_301(addr: &str) -> Option<(Response, bool)> {
    let response = post(addr, "/")?;
    if response.status != 301 {
        return Some((response, false));
    }
    let location = response.header("location").unwrap_or_default().to_string();
    let host = location
        .strip_prefix("http://")
        .and_then(|l| l.strip_suffix('/'))?;
    request("POST", host, "/", b"").map(|followed| (followed, true))
}

pub fn take_ids(addr: &str, count: u64) -> Result<Vec<u64>, Option<Response>> {
    let path = if count == 1 {
        "/".to_string()
    } else {
        format!("/?count={count}")
    };
    match request_following("POST", addr, &path, b"") {
        Some(response) if response.status == 200 => Ok(super::ids_of(&response)),
        other => Err(other),
    }
}

/// IDs from the first of `addrs` that serves them within `timeout`.
pub fn take_ids_anywhere(addrs: &[String], count: u64, timeout: Duration) -> Option<Vec<u64>> {
    wait_for(timeout, || {
        addrs.iter().find_map(|addr| take_ids(addr, count).ok())
    })
}

/// Whether `addr` answers `POST /` with 200 itself (not a redirect).
pub fn serves_ids(addr: &str) -> bool {
    post(addr, "/").is_some_and(|r| r.status == 200)
}

/// A number from the `/metrics` of the node at `addr`.
pub fn metric(addr: &str, name: &str) -> Option<u64> {
    let body = super::get(addr, "/metrics")
        .filter(|r| r.status == 200)?
        .body;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}
