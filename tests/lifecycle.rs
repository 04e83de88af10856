//! Process lifecycle of the release binary: SIGTERM exits 0 promptly on
//! leaders, followers and a node without a quorum; a data directory of
//! another cluster is refused with exit 1; a bad flag exits 2; a leader
//! hands leadership over before it stops.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_support;
mod common;

use std::time::{Duration, Instant};

use common::ops::{run_ticketd, take_ids_anywhere};
use common::{Cluster, free_port, wait_for};

const LEADER_WAIT: Duration = Duration::from_secs(20);
/// "Within a few seconds", with room for a loaded machine.
const EXIT_WAIT: Duration = Duration::from_secs(10);

fn terminate_expecting_success(cluster: &mut Cluster, node: usize, what: &str) {
    let started = Instant::now();
    let status = cluster.nodes[node].terminate(EXIT_WAIT);
    let Some(status) = status else {
        panic!(
            "the {what} did not exit within {EXIT_WAIT:?} of SIGTERM\n{}",
            cluster.logs()
        );
    };
    assert_eq!(
        status.code(),
        Some(0),
        "the {what} exited with {status}\n{}",
        cluster.logs()
    );
    assert!(started.elapsed() < EXIT_WAIT);
}

#[test]
fn sigterm_makes_every_node_exit_0() {
    let mut cluster = Cluster::start("sigterm", 3);
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let before = take_ids_anywhere(&[cluster.nodes[leader].http()], 1, LEADER_WAIT).expect("IDs");
    terminate_expecting_success(&mut cluster, leader, "leader");

    // The two left take over (the leader handed over before it left).
    let left: Vec<String> = cluster
        .running()
        .into_iter()
        .map(|i| cluster.nodes[i].http())
        .collect();
    let after = take_ids_anywhere(&left, 1, LEADER_WAIT);
    let Some(after) = after else {
        panic!("no IDs after the leader left\n{}", cluster.logs());
    };
    assert!(after[0] > before[0]);

    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let follower = cluster
        .running()
        .into_iter()
        .find(|i| *i != leader)
        .expect("a follower");
    terminate_expecting_success(&mut cluster, follower, "follower");
    // The last node has no quorum (and soon no leader): it still exits.
    terminate_expecting_success(&mut cluster, leader, "node without a quorum");
}

#[test]
fn a_data_directory_of_another_cluster_is_refused() {
    let mut cluster = Cluster::new("foreign-dir", 3);
    // Only node 0 runs: it bootstraps its directory for peer list A
    // without ever electing a leader.
    cluster.nodes[0].start();
    let up = wait_for(LEADER_WAIT, || cluster.nodes[0].is_healthy().then_some(()));
    assert!(up.is_some(), "node did not start\n{}", cluster.logs());
    assert_eq!(
        cluster.nodes[0].terminate(EXIT_WAIT).and_then(|s| s.code()),
        Some(0)
    );

    let list_a = cluster.nodes[0].peers.clone();
    let list_b = format!(
        "{},127.0.0.1:{},127.0.0.1:{}",
        cluster.nodes[0].peer(),
        free_port(),
        free_port()
    );
    cluster.nodes[0].peers = list_b;
    cluster.nodes[0].start();
    let status = cluster.nodes[0].wait_exit(EXIT_WAIT);
    let Some(status) = status else {
        panic!(
            "a node with a foreign data directory kept running\n{}",
            cluster.logs()
        );
    };
    assert_eq!(status.code(), Some(1), "{}", cluster.logs());
    let log = cluster.nodes[0].log();
    let reason = log.lines().last().unwrap_or_default();
    assert!(
        reason.contains("data directory") && reason.contains("cluster"),
        "unclear refusal: {reason:?}\n{log}"
    );

    // The right list (or none: membership comes from the directory)
    // still starts it.
    for peers in [list_a, String::new()] {
        cluster.nodes[0].peers = peers.clone();
        cluster.nodes[0].start();
        let up = wait_for(LEADER_WAIT, || cluster.nodes[0].is_healthy().then_some(()));
        assert!(up.is_some(), "refused with {peers:?}\n{}", cluster.logs());
        cluster.nodes[0].kill();
    }
}

#[test]
fn a_bad_flag_or_value_exits_2_with_a_reason_and_a_pointer_to_help() {
    let dir = common::TempDir::new("bad-flags");
    let path = dir.path().display().to_string();
    let cases: [&[&str]; 4] = [
        &["--bogus"],
        &["--peer_port", "notaport", "--path", &path],
        &["--http_port", "70000", "--path", &path],
        &["--db_size", "-3", "--path", &path],
    ];
    for args in cases {
        let run = run_ticketd(args, EXIT_WAIT);
        let Some((status, stderr)) = run else {
            panic!("{args:?} kept running");
        };
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{args:?}: a reason and a pointer: {stderr}");
        assert!(
            lines[0].starts_with("ticketd: ") && lines[0].len() > "ticketd: ".len(),
            "{args:?}: no one-line reason first: {stderr}"
        );
        assert!(lines[1].contains("--help"), "{args:?}: {stderr}");
    }
    for flag in ["--help", "-h"] {
        let help = run_ticketd(&[flag], EXIT_WAIT).expect("--help exits");
        assert_eq!(help.0.code(), Some(0), "{flag}");
    }
}

#[test]
fn sigterm_on_the_leader_hands_leadership_over_first() {
    let mut cluster = Cluster::start("sigterm-handover", 3);
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let term = cluster.nodes[leader].status_u64("Term").expect("term");
    terminate_expecting_success(&mut cluster, leader, "leader");
    // The old leader named a successor before it stopped, and that node
    // leads the very next term: a handover, not an election after the
    // silence (which would be anybody's, and no faster than a timeout).
    let log = cluster.nodes[leader].log();
    let target: u64 = log
        .lines()
        .find_map(|l| l.split("handing leadership to node ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("the leader handed leadership to nobody\n{}", cluster.logs()));
    let successor = wait_for(LEADER_WAIT, || {
        cluster
            .running()
            .into_iter()
            .find(|i| cluster.nodes[*i].is_leader())
    });
    let Some(successor) = successor else {
        panic!("no leader after the old one exited\n{}", cluster.logs());
    };
    let status = cluster.nodes[successor].status().unwrap_or_default();
    assert_eq!(
        common::ops::json_u64(&status, "Id"),
        Some(target),
        "{status}\n{}",
        cluster.logs()
    );
    assert_eq!(
        common::ops::json_u64(&status, "Term"),
        Some(term + 1),
        "{status}\n{}",
        cluster.logs()
    );
}

/// Under systemd (`Type=notify`): `READY=1` once the node serves HTTP,
/// a `STATUS=` line naming its role, `STOPPING=1` on SIGTERM — received
/// here on a datagram socket of the test's own, as systemd would.
#[test]
fn systemd_hears_ready_status_and_stopping() {
    use std::os::unix::net::UnixDatagram;

    let mut cluster = Cluster::new("notify", 1);
    let socket_path = cluster.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    cluster.nodes[0].env = vec![("NOTIFY_SOCKET".into(), socket_path.display().to_string())];
    cluster.nodes[0].start();
    let mut heard = Vec::new();
    let receive_until = |heard: &mut Vec<String>, what: &str| {
        let deadline = Instant::now() + LEADER_WAIT;
        while Instant::now() < deadline {
            let mut buffer = [0u8; 512];
            if let Ok(n) = socket.recv(&mut buffer) {
                heard.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
                if heard.iter().any(|m| m.lines().any(|l| l == what)) {
                    return true;
                }
            }
        }
        false
    };
    assert!(
        receive_until(&mut heard, "READY=1"),
        "no READY=1: {heard:?}\n{}",
        cluster.logs()
    );
    // Ready means serving: HTTP answers at once.
    let addr = cluster.nodes[0].http();
    assert_eq!(common::get(&addr, "/healthz").map(|r| r.status), Some(200));
    assert!(
        receive_until(&mut heard, "STATUS=leader of term 1"),
        "no status line for the leader: {heard:?}"
    );
    terminate_expecting_success(&mut cluster, 0, "notified node");
    assert!(
        receive_until(&mut heard, "STOPPING=1"),
        "no STOPPING=1: {heard:?}"
    );
}

/// A start that fails (here: the HTTP port is taken) exits 1 and leaves
/// no new data directory behind.
#[test]
fn a_failed_start_leaves_no_data_dir() {
    let dir = common::TempDir::new("failed-start");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = taken.local_addr().unwrap().port().to_string();
    let peer_port = free_port().to_string();
    let data = dir.path().join("new").join("data");
    let data_arg = data.display().to_string();
    let args = [
        "--http_port",
        http_port.as_str(),
        "--peer_port",
        peer_port.as_str(),
        "--path",
        data_arg.as_str(),
    ];
    let (status, stderr) = run_ticketd(&args, EXIT_WAIT).expect("a failed start exits");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
    assert!(
        !dir.path().join("new").exists(),
        "the failed start left a data dir"
    );
}

/// SIGTERM while requests are in flight: three lock requests parked on
/// the leader with `?wait=` (seen in its `Waiters` count) are each
/// answered in full before the process exits 0; none is cut off.
#[test]
fn sigterm_finishes_requests_in_flight() {
    let mut cluster = Cluster::start("sigterm-in-flight", 1);
    let addr = cluster.nodes[0].http();
    let api = api_support::Api::new(&addr);
    let holder = api.open_session("holder", 60_000);
    assert!(api_support::lock_grant(&api.lock(&holder, "busy")).granted);
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let (api, addr) = (api.clone(), addr.clone());
            std::thread::spawn(move || {
                let me = api.open_session(&format!("waiter-{i}"), 60_000);
                let path = format!("/api/v1/locks/busy?sessid={me}&wait=1500");
                common::request("POST", &addr, &path, b"")
            })
        })
        .collect();
    let parked = wait_for(LEADER_WAIT, || {
        let status = cluster.nodes[0].status()?;
        (common::ops::json_u64(&status, "Waiters")? == 3).then_some(())
    });
    assert!(
        parked.is_some(),
        "the waiters never parked\n{}",
        cluster.logs()
    );
    terminate_expecting_success(&mut cluster, 0, "node with requests in flight");
    for (i, waiter) in waiters.into_iter().enumerate() {
        let answer = waiter.join().expect("waiter thread");
        let Some(answer) = answer else {
            panic!("waiter {i} was cut off by the shutdown\n{}", cluster.logs());
        };
        // Its wait ran out during the grace period (not granted), or the
        // stopping node told it to retry elsewhere.
        match answer.status {
            200 => assert!(
                !api_support::lock_grant(&answer).granted,
                "waiter {i}: {answer:?}"
            ),
            503 => assert!(answer.header("retry-after").is_some(), "{answer:?}"),
            _ => panic!("waiter {i}: {answer:?}"),
        }
    }
}
