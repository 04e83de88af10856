//! The client side of the membership verbs: `join` asks a member, over
//! the peer protocol, to admit this node; `leave` asks the node running
//! on a data directory, over its own HTTP port, to leave. It talks to
//! the network and looks at the data directory's lock; it never touches
//! a node's state.

use std::time::{Duration, Instant};

use log::info;

use crate::cli::Options;
use crate::http::Tokens;
use crate::node::{self, Bootstrap, DirState};
use crate::secret::Secret;
use crate::transport::request_admission;
use crate::wire::JoinRequest;

/// How long `leave` waits for the node's removal to be committed.
pub const LEAVE_WAIT: Duration = Duration::from_secs(60);

/// `leave` on a running node: asks it, over its own HTTP address, to
/// leave, then waits until it has stopped and marked its data dir.
///
/// # Errors
/// Why the node did not leave: it refused, could not be asked, or did
/// not stop (removed) within [`LEAVE_WAIT`].
pub fn leave_running(options: &Options, tokens: &Tokens) -> Result<(), String> {
    let addr = match options.http_listen.rsplit_once(':') {
        Some(("0.0.0.0" | "", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => options.http_listen.clone(),
    };
    let token = tokens
        .admin
        .as_ref()
        .map(|t| String::from_utf8_lossy(t.current()).into_owned());
    let (status, body) = http_post(&addr, "/api/v1/cluster/leave", token.as_deref())
        .map_err(|e| format!("cannot ask the node at {addr} to leave: {e}"))?;
    if status != 200 {
        return Err(format!(
            "the node at {addr} refused to leave ({status}): {}",
            body.trim()
        ));
    }
    info!("the node at {addr} leaves its cluster; waiting for it to stop");
    let deadline = Instant::now() + LEAVE_WAIT;
    while Instant::now() < deadline {
        match node::dir_state(&options.data_dir, options.db_size_mb) {
            Ok(DirState::Running) => std::thread::sleep(Duration::from_millis(100)),
            Ok(DirState::Stopped { removed: true, .. }) => return Ok(()),
            Ok(DirState::Stopped { .. }) => {
                return Err("the node stopped before its removal was committed".into());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "the node at {addr} is still running after {LEAVE_WAIT:?}: its cluster did not commit its removal (its log says why; e.g. too few reachable voters would remain)"
    ))
}

/// A bare HTTP/1.1 POST with an empty body: the status and the body.
fn http_post(addr: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let socket: std::net::SocketAddr = addr.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
    })?;
    let mut stream = std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(64 << 10).read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer")
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// The SPEC asks at least 32 bytes of the peer secret (e.g. `head -c 32
/// /dev/urandom | base64`).
const PEER_SECRET_BYTES_MIN: usize = 32;

/// The `--peer_secret` file's values, if one is given.
///
/// # Errors
/// Why the file cannot be used (missing, too short, too open...).
pub fn peer_secret(options: &Options) -> Result<Option<Secret>, String> {
    let Some(path) = &options.peer_secret else {
        return Ok(None);
    };
    Secret::from_file(path, PEER_SECRET_BYTES_MIN)
        .map(Some)
        .map_err(|why| format!("--peer_secret {why}"))
}

/// How long `join` keeps asking before it gives up.
const JOIN_WAIT: Duration = Duration::from_secs(30);

/// Asks the member at `peer` to admit this node (its data dir already
/// wiped); the identity to bootstrap with.
///
/// # Errors
/// Why the join failed: refused, or nobody admitted us within 30 s.
pub fn join(options: &Options, http_addr: &str, peer: &str) -> Result<Bootstrap, String> {
    let incarnation = node::draw_random().map_err(|e| e.to_string())?;
    let request = JoinRequest {
        peer_addr: options.peer_addr.clone(),
        http_addr: http_addr.to_string(),
        incarnation,
        wanted_id: options.node_id.unwrap_or(0),
    };
    info!("asking {peer} to admit this node ({})", request.peer_addr);
    let deadline = Instant::now() + JOIN_WAIT;
    let secret = peer_secret(options)?;
    let admission = request_admission(peer, &request, deadline, secret.as_ref())
        .map_err(|why| format!("join {peer} failed: {why}"))?;
    Ok(Bootstrap::Joined {
        cluster_id: admission.cluster_id,
        node_id: admission.node_id,
        incarnation,
    })
}
