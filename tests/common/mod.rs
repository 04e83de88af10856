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

/// A loopback port for a test server, kept for this process's lifetime.
///
/// Ports come from below the kernel's ephemeral range (read from
/// `/proc/sys/net/ipv4/ip_local_port_range`), so no client connection's
/// local port and no other program's port 0 can take one while a node is
/// down between restarts. Test binaries running at once share the range
/// through lock files (`<tmp>/ticketd-test-ports/<port>`, created with
/// `create_new` and holding the owner's PID); a lock whose owner is no
/// longer alive is taken over.
pub fn free_port() -> u16 {
    static NEXT: std::sync::Mutex<Option<u32>> = std::sync::Mutex::new(None);
    let (low, high) = test_port_range();
    let span = u32::from(high - low);
    let dir = std::env::temp_dir().join("ticketd-test-ports");
    std::fs::create_dir_all(&dir).expect("create the port lock dir");
    let me = std::process::id();
    let mut next = NEXT.lock().unwrap();
    // Each process starts at its own place in the range, then walks it.
    let offset = next.get_or_insert_with(|| me.wrapping_mul(2_654_435_761) % span);
    for _ in 0..span {
        let port = low + (*offset % span) as u16;
        *offset = (*offset + 1) % span;
        if claim_port(&dir, port, me) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free test port in {low}..{high}");
}

/// Ports for test servers: below the ephemeral range, or above it when
/// there is no room below.
fn test_port_range() -> (u16, u16) {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .unwrap_or((32_768, 60_999));
    if ephemeral.0 >= 12_000 {
        (10_000, ephemeral.0)
    } else {
        (ephemeral.1.saturating_add(1).max(1_024), u16::MAX)
    }
}

/// Takes the lock file of `port` for process `me`: true if it is now ours
/// (new, or taken over from a process that is gone).
fn claim_port(dir: &Path, port: u16, me: u32) -> bool {
    let path = dir.join(port.to_string());
    match std::fs::File::create_new(&path) {
        Ok(mut file) => file.write_all(me.to_string().as_bytes()).is_ok(),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if !is_stale(&path, me) {
                return false;
            }
            // Takeovers are serialized, and a lock file is replaced by a
            // rename, never removed: two processes cannot both take it.
            with_takeover_lock(dir, || {
                if !is_stale(&path, me) {
                    return false;
                }
                let temp = dir.join(format!(".{port}.{me}"));
                std::fs::write(&temp, me.to_string()).is_ok()
                    && std::fs::rename(&temp, &path).is_ok()
            })
        }
        Err(_) => false,
    }
}

/// Whether the lock at `path` belongs to a process that is gone (not to
/// `me`, and not one just being written by its creator).
fn is_stale(path: &Path, me: u32) -> bool {
    let owner = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    match owner {
        Some(pid) => pid != me && !Path::new(&format!("/proc/{pid}")).exists(),
        None => std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(2)),
    }
}

/// Runs `f` holding `<dir>/.takeover` (a lock file; one left by a process
/// that died holding it is broken after 5 s).
fn with_takeover_lock(dir: &Path, f: impl FnOnce() -> bool) -> bool {
    let lock = dir.join(".takeover");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::fs::File::create_new(&lock).is_ok() {
            let taken = f();
            let _ = std::fs::remove_file(&lock);
            return taken;
        }
        let old = std::fs::metadata(&lock)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(5));
        if old {
            let _ = std::fs::remove_file(&lock);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
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
