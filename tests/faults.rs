//! Bad input on both ports of a running three-node cluster: garbage,
//! wrong-magic and corrupt frames, foreign handshakes and HTTP on the
//! peer port; malformed, huge and truncated requests on the HTTP port.
//! No input may stop a node, and the cluster must keep electing and
//! serving afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use byteorder::{BigEndian, ByteOrder};
use common::ops::{XorShift, json_str, raw_exchange, raw_status, take_ids_anywhere};
use common::{Cluster, wait_for};
use ticketd::wire::{FrameKind, HEADER_BYTES, Handshake, MAGIC, VERSION, write_frame};

const LEADER_WAIT: Duration = Duration::from_secs(20);
/// How long a bad connection is given to be closed by the node: a bound
/// on a loaded machine, not a measure (a node that keeps a connection
/// open holds it for good, and reading stops at the close).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

fn addrs(cluster: &Cluster) -> Vec<String> {
    cluster.nodes.iter().map(|n| n.http()).collect()
}

/// A frame header with every field chosen by the caller.
fn header(magic: u32, version: u8, kind: u8, length: u32, crc: u32) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_BYTES];
    BigEndian::write_u32(&mut out[0..4], magic);
    out[4] = version;
    out[5] = kind;
    BigEndian::write_u32(&mut out[6..10], length);
    BigEndian::write_u32(&mut out[10..14], crc);
    out
}

fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(&mut out, kind, payload).expect("frame");
    out
}

fn handshake(cluster_id: u64, node_id: u64) -> Vec<u8> {
    let payload = Handshake {
        cluster_id,
        node_id,
        peer_addr: "127.0.0.1:1".to_string(),
        http_addr: "127.0.0.1:2".to_string(),
        // An older peer's handshake: no incarnation to check.
        incarnation: 0,
    }
    .encode();
    frame(FrameKind::Handshake, &payload)
}

/// Everything a confused or hostile client could send to a peer port.
fn peer_garbage(cluster_id: u64, rng: &mut XorShift) -> Vec<(&'static str, Vec<u8>)> {
    let payload = rng.bytes(64);
    let crc = ticketd::crc32::checksum(&payload);
    let with = |mut head: Vec<u8>, tail: &[u8]| {
        head.extend_from_slice(tail);
        head
    };
    let mut right_then_garbage = handshake(cluster_id, 99);
    right_then_garbage.extend(frame(FrameKind::Message, &rng.bytes(300)));
    let mut right_then_noise = handshake(cluster_id, 98);
    right_then_noise.extend(rng.bytes(4096));
    vec![
        ("random bytes", rng.bytes(64 << 10)),
        (
            "wrong magic",
            with(header(0xDEAD_BEEF, VERSION, 1, 64, crc), &payload),
        ),
        (
            "wrong version",
            with(header(MAGIC, VERSION + 7, 1, 64, crc), &payload),
        ),
        (
            "unknown kind",
            with(header(MAGIC, VERSION, 77, 64, crc), &payload),
        ),
        (
            "bad checksum",
            with(header(MAGIC, VERSION, 1, 64, crc ^ 1), &payload),
        ),
        ("oversized frame", header(MAGIC, VERSION, 2, u32::MAX, 0)),
        (
            "truncated frame",
            with(header(MAGIC, VERSION, 1, 1000, 0), &payload),
        ),
        ("garbage handshake", frame(FrameKind::Handshake, &payload)),
        ("foreign cluster", handshake(cluster_id ^ 0x5555, 2)),
        ("unknown node, garbage message", right_then_garbage),
        ("unknown node, noise", right_then_noise),
        (
            "an HTTP request",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        ("nothing", Vec::new()),
    ]
}

/// Every node is alive, answers HTTP, and never panicked.
fn assert_all_alive(cluster: &mut Cluster, after: &str) {
    for i in 0..cluster.nodes.len() {
        let exited = cluster.nodes[i].exited();
        assert!(
            exited.is_none(),
            "node {i} exited ({exited:?}) after {after}\n{}",
            cluster.logs()
        );
        let healthy = wait_for(Duration::from_secs(10), || {
            cluster.nodes[i].is_healthy().then_some(())
        });
        assert!(
            healthy.is_some(),
            "node {i} stopped answering after {after}\n{}",
            cluster.logs()
        );
        assert!(
            !cluster.nodes[i].log().contains("panicked"),
            "node {i} panicked after {after}\n{}",
            cluster.logs()
        );
    }
}

/// The cluster still serves, and still elects a new leader after
/// `kill -9` of the current one (so the peer links still work).
fn assert_cluster_still_works(cluster: &mut Cluster, before: u64) {
    let ids = take_ids_anywhere(&addrs(cluster), 1, LEADER_WAIT);
    let Some(ids) = ids else {
        panic!("no IDs after the garbage\n{}", cluster.logs());
    };
    assert!(ids[0] > before);
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    cluster.nodes[leader].kill();
    let ids_after = take_ids_anywhere(&addrs(cluster), 1, LEADER_WAIT);
    let Some(ids_after) = ids_after else {
        panic!("no new leader after the garbage\n{}", cluster.logs());
    };
    assert!(ids_after[0] > ids[0]);
}

#[test]
fn garbage_on_the_peer_port_does_not_stop_a_node() {
    let mut cluster = Cluster::start("peer-garbage", 3);
    let before = take_ids_anywhere(&addrs(&cluster), 1, LEADER_WAIT).expect("IDs")[0];
    let status = cluster.nodes[0].status().expect("status");
    let cluster_hex = json_str(&status, "Cluster").expect("cluster id");
    let cluster_id = u64::from_str_radix(&cluster_hex, 16).expect("hex cluster id");
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    // Every case on every node at once: each waits for its connection to
    // be closed by the node.
    let mut senders = Vec::new();
    for node in 0..3 {
        for (name, bytes) in peer_garbage(cluster_id, &mut rng) {
            let peer = cluster.nodes[node].peer();
            senders.push(thread::spawn(move || {
                let started = std::time::Instant::now();
                let answer = raw_exchange(&peer, &bytes, true, CLOSE_WAIT);
                assert!(answer.is_some(), "{name}: connection to {peer} refused");
                assert!(
                    started.elapsed() < CLOSE_WAIT,
                    "{name}: {peer} kept the connection open"
                );
            }));
        }
    }
    for sender in senders {
        sender.join().unwrap();
    }
    assert_all_alive(&mut cluster, "garbage on the peer ports");
    assert_cluster_still_works(&mut cluster, before);
}

/// Malformed HTTP: the node may answer 4xx or just close, but a head too
/// large must be answered for what it is (and the HTTP/2 preface 505).
fn http_garbage(rng: &mut XorShift) -> Vec<(&'static str, Vec<u8>, Option<u16>)> {
    let mut huge_header = b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge_header.extend(vec![b'a'; 1 << 20]);
    huge_header.extend(b"\r\n\r\n");
    let mut many_headers = b"POST / HTTP/1.1\r\n".to_vec();
    for i in 0..20_000 {
        many_headers.extend(format!("X-H{i}: v\r\n").as_bytes());
    }
    many_headers.extend(b"\r\n");
    let mut absurd_url = b"POST /".to_vec();
    absurd_url.extend(vec![b'a'; 1 << 20]);
    absurd_url.extend(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut absurd_count = b"POST /?count=".to_vec();
    absurd_count.extend(vec![b'9'; 100_000]);
    absurd_count.extend(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut absurd_api = b"GET /api/v1/".to_vec();
    for _ in 0..20_000 {
        absurd_api.extend(b"%ff/");
    }
    absurd_api.extend(b"?sessid=%zz&name=%&& HTTP/1.1\r\n\r\n");
    vec![
        ("random bytes", rng.bytes(64 << 10), None),
        ("huge header", huge_header, Some(431)),
        ("many headers", many_headers, Some(431)),
        ("absurd URL", absurd_url, Some(414)),
        ("absurd count", absurd_count, Some(414)),
        ("absurd API path", absurd_api, Some(414)),
        ("truncated head", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le".to_vec(), None),
        (
            "truncated body",
            b"POST /api/v1/sessions?name=x HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc".to_vec(),
            None,
        ),
        (
            "bad chunk",
            b"POST /api/v1/tickets/r?sessid=1&name=t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
                .to_vec(),
            None,
        ),
        (
            "huge content length",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
            None,
        ),
        (
            "negative content length",
            b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n".to_vec(),
            None,
        ),
        ("binary request line", b"P\xffST /\xfe\x00 HTTP/1.1\r\n\r\n".to_vec(), None),
        ("no version", b"GET /\r\n\r\n".to_vec(), None),
        ("unknown method", b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), None),
        // Upstream tiny_http 0.12 never answered this one and never freed
        // its thread (see vendor/tiny_http/README.md); now a 505.
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), Some(505)),
        ("bare newlines", b"POST /?count=3 HTTP/1.1\n\n".to_vec(), None),
        ("nothing", Vec::new(), None),
    ]
}

#[test]
fn malformed_http_does_not_stop_a_node() {
    let mut cluster = Cluster::start("http-garbage", 3);
    let before = take_ids_anywhere(&addrs(&cluster), 1, LEADER_WAIT).expect("IDs")[0];
    // Idle connections held open throughout must not starve the others.
    let idle: Vec<TcpStream> = (0..3)
        .flat_map(|i| {
            let addr = cluster.nodes[i].http();
            (0..20).filter_map(move |_| TcpStream::connect(&addr).ok())
        })
        .collect();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut senders = Vec::new();
    for node in 0..3 {
        for (name, bytes, expected) in http_garbage(&mut rng) {
            let addr = cluster.nodes[node].http();
            senders.push(thread::spawn(move || {
                let answer = raw_exchange(&addr, &bytes, true, CLOSE_WAIT);
                let answer = answer.unwrap_or_else(|| panic!("{name}: connection refused"));
                if let Some(expected) = expected {
                    assert_eq!(
                        raw_status(&answer),
                        Some(expected),
                        "{name}: {:?}",
                        String::from_utf8_lossy(&answer[..answer.len().min(200)])
                    );
                }
                // An answer, if any, refuses the request or (for what
                // happens to parse) is an ordinary one; never a 5xx of
                // a handler gone wrong.
                if let Some(status) = raw_status(&answer) {
                    assert!(
                        status < 500 || status == 503 || status == 505,
                        "{name}: {status}"
                    );
                }
            }));
        }
    }
    for sender in senders {
        sender.join().unwrap();
    }
    assert_all_alive(&mut cluster, "malformed HTTP");
    drop(idle);
    assert_cluster_still_works(&mut cluster, before);
}

/// A lone node started through `sh` with at most `fds` open files, so
/// that running out of descriptors takes a few hundred connections
/// rather than tens of thousands. Killed when dropped.
struct LimitedNode {
    child: std::process::Child,
    http: String,
    dir: common::TempDir,
}

impl LimitedNode {
    fn start(fds: u32) -> LimitedNode {
        let dir = common::TempDir::new("fd-limit");
        let http = format!("127.0.0.1:{}", common::free_port());
        let log = std::fs::File::create(dir.path().join("node.log")).expect("log file");
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {fds} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_ticketd"))
            .args(["--peer_port", &common::free_port().to_string()])
            .args(["-l", &http, "--loglevel", "2"])
            .arg("--path")
            .arg(dir.path().join("data"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sh");
        let node = LimitedNode { child, http, dir };
        let up = wait_for(LEADER_WAIT, || {
            common::ops::serves_ids(&node.http).then_some(())
        });
        assert!(
            up.is_some(),
            "the limited node never served\n{}",
            node.log()
        );
        node
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }
}

impl Drop for LimitedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens `n` connections to `addr`, each sending `bytes`; returns them.
fn hold_connections(addr: &str, n: usize, bytes: &[u8]) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            break;
        };
        let _ = std::io::Write::write_all(&mut stream, bytes);
        held.push(stream);
    }
    held
}

#[test]
fn http_service_survives_running_out_of_file_descriptors() {
    let node = LimitedNode::start(128);
    // Idle clients (slowloris) hold a thread and two descriptors each
    // until they leave or time out; more of them than descriptors made
    // upstream tiny_http 0.12 stop accepting for good.
    let held = hold_connections(&node.http, 200, b"POST / HTTP/1.1\r\n");
    // The descriptors did run out: the process holds (nearly) all 128.
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", node.child.id()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    };
    let exhausted = wait_for(Duration::from_secs(10), || (fds() >= 124).then_some(()));
    assert!(
        exhausted.is_some(),
        "{} connections held, but the node has only {} descriptors open\n{}",
        held.len(),
        fds(),
        node.log()
    );
    drop(held);
    let serving = wait_for(Duration::from_secs(10), || {
        common::ops::serves_ids(&node.http).then_some(())
    });
    assert!(
        serving.is_some(),
        "the node no longer serves HTTP once the clients left\n{}",
        node.log()
    );
}

#[test]
fn an_http2_preface_is_answered_and_its_connection_freed() {
    let node = LimitedNode::start(128);
    let answer = raw_exchange(
        &node.http,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        true,
        CLOSE_WAIT,
    );
    let answer = answer.expect("connection");
    assert_eq!(
        raw_status(&answer),
        Some(505),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // Each such client used to leave a thread and two descriptors behind
    // for good; enough of them end HTTP service (see above).
    for _ in 0..100 {
        let _ = raw_exchange(
            &node.http,
            b"PRI * HTTP/2.0\r\n\r\n",
            true,
            Duration::from_millis(10),
        );
    }
    let serving = wait_for(Duration::from_secs(10), || {
        common::ops::serves_ids(&node.http).then_some(())
    });
    assert!(serving.is_some(), "HTTP service lost\n{}", node.log());
}

#[test]
fn an_endless_header_line_is_cut_off() {
    let node = LimitedNode::start(1024);
    let mut stream = TcpStream::connect(&node.http).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let chunk = vec![b'a'; 1 << 20];
    let mut sent_mib = 0;
    let _ = std::io::Write::write_all(&mut stream, b"POST / HTTP/1.1\r\nX-Big: ");
    // Every MiB sent stays in the node's memory until the line ends:
    // enough such clients and the kernel kills the node.
    while sent_mib < 256 && std::io::Write::write_all(&mut stream, &chunk).is_ok() {
        sent_mib += 1;
    }
    assert!(
        sent_mib < 16,
        "the node took {sent_mib} MiB of one header line\n{}",
        node.log()
    );
    // Cut off, not just no longer read: answered 431 and closed (what it
    // sent before the close is still readable after a reset).
    stream.set_read_timeout(Some(CLOSE_WAIT)).expect("timeout");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = std::io::Read::read(&mut stream, &mut buffer) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
    }
    assert_eq!(
        raw_status(&answer),
        Some(431),
        "{:?}\n{}",
        String::from_utf8_lossy(&answer),
        node.log()
    );
}
