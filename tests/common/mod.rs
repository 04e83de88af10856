//! Shared harness for black-box tests of the release binary: free
//! loopback ports, temporary data directories, a minimal HTTP client,
//! and clusters of `ticketd` processes stopped by PID.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod churn;
pub mod ops;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    // Ports are handed out by the kernel; two calls may race with other
    // tests, so every port is also unique within this process.
    static USED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        let mut used = USED.lock().unwrap();
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("ticketd-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The status line's reason phrase.
    pub reason: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// One HTTP/1.1 request with `Connection: close`; None on any I/O error
/// (refused, reset, timed out).
pub fn request(method: &str, addr: &str, path: &str, body: &[u8]) -> Option<Response> {
    request_with_headers(method, addr, path, &[], body)
}

/// [`request`] with extra header lines (`name`, `value`).
pub fn request_with_headers(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Response> {
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    parse_response(&raw)
}

/// One whole response (head and body, nothing after it).
pub fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next()?.splitn(3, ' ');
    let status = status_line.nth(1)?.parse().ok()?;
    let reason = status_line.next().unwrap_or("").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let headers: BTreeMap<String, String> = headers;
    let rest = &raw[split + 4..];
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        String::from_utf8_lossy(&dechunk(rest)?).into_owned()
    } else {
        String::from_utf8_lossy(rest).into_owned()
    };
    Some(Response {
        status,
        reason,
        headers,
        body,
    })
}

/// Decodes a chunked body (RFC 9112 §7.1); None when malformed.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

pub fn post(addr: &str, path: &str) -> Option<Response> {
    request("POST", addr, path, b"")
}

pub fn get(addr: &str, path: &str) -> Option<Response> {
    request("GET", addr, path, b"")
}

/// Follows 301/307 redirects (at most 5), like curl -L / Go's client.
pub fn request_following(method: &str, addr: &str, path: &str, body: &[u8]) -> Option<Response> {
    let mut addr = addr.to_string();
    let mut path = path.to_string();
    for _ in 0..5 {
        let response = request(method, &addr, &path, body)?;
        if response.status != 301 && response.status != 307 {
            return Some(response);
        }
        let location = response
            .header("location")?
            .strip_prefix("http://")?
            .to_string();
        let (host, rest) = location.split_once('/').unwrap_or((&location, ""));
        addr = host.to_string();
        path = format!("/{rest}");
    }
    None
}

/// Polls `check` every 50 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The IDs in a `POST /` answer.
pub fn ids_of(response: &Response) -> Vec<u64> {
    response
        .body
        .lines()
        .map(|l| l.parse().expect("an ID per line"))
        .collect()
}

/// One `ticketd` process and what it needs to restart.
pub struct Node {
    pub peer_port: u16,
    pub http_port: u16,
    pub data_dir: PathBuf,
    pub peers: String,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    pub fn http(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    pub fn peer(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node already running");
        let mut args = Vec::new();
        if !self.peers.is_empty() {
            args.push(self.peers.clone());
        }
        args.extend([
            "--peer_port".to_string(),
            self.peer_port.to_string(),
            "--http_port".to_string(),
            self.http_port.to_string(),
            "--path".to_string(),
            self.data_dir.display().to_string(),
            "--loglevel".to_string(),
            "3".to_string(),
        ]);
        args.extend(self.extra_args.iter().cloned());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open node log");
        let child = Command::new(env!("CARGO_BIN_EXE_ticketd"))
            .args(&args)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            // stdout too: `join` prints what it joined there.
            .stdout(log.try_clone().expect("clone node log"))
            .stderr(log)
            .spawn()
            .expect("spawn ticketd");
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node's stderr so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// This node's `/api/v1/status`, if it answers.
    pub fn status(&self) -> Option<String> {
        get(&self.http(), "/api/v1/status")
            .filter(|r| r.status == 200)
            .map(|r| r.body)
    }

    pub fn is_leader(&self) -> bool {
        self.status()
            .is_some_and(|s| s.contains("\"Role\":\"leader\""))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of `n` nodes with a static peer list, in its own temp dir.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub dir: TempDir,
}

impl Cluster {
    /// Creates (but does not start) `n` nodes.
    pub fn new(name: &str, n: usize) -> Cluster {
        let dir = TempDir::new(name);
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let peers = if n == 1 {
            String::new()
        } else {
            ports
                .iter()
                .map(|(peer, _)| format!("127.0.0.1:{peer}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, (peer_port, http_port))| Node {
                peer_port: *peer_port,
                http_port: *http_port,
                data_dir: dir.path().join(format!("node{i}")),
                peers: peers.clone(),
                extra_args: Vec::new(),
                env: Vec::new(),
                child: None,
                log: dir.path().join(format!("node{i}.log")),
            })
            .collect();
        Cluster { nodes, dir }
    }

    /// Creates and starts `n` nodes, and waits for a leader.
    pub fn start(name: &str, n: usize) -> Cluster {
        let mut cluster = Cluster::new(name, n);
        for node in &mut cluster.nodes {
            node.start();
        }
        cluster.wait_leader(Duration::from_secs(15));
        cluster
    }

    /// Waits until some running node serves IDs; returns its index.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        let found = wait_for(timeout, || {
            self.nodes.iter().position(|n| {
                n.is_running() && post(&n.http(), "/").is_some_and(|r| r.status == 200)
            })
        });
        match found {
            Some(i) => i,
            None => panic!("no leader within {timeout:?}; logs:\n{}", self.logs()),
        }
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- node {i} ---\n{}", tail(&n.log(), 40)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
