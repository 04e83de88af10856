//! Membership from the command line, as an operator runs it: `start` a
//! one-node cluster, `drop` a data directory, `join` nodes to grow it
//! (through the leader and through a follower) while a client takes IDs,
//! and `leave` to shrink it again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::ops::{json_str, post_following_301, run_ticketd, take_ids_anywhere};
use common::{Cluster, free_port, get, wait_for};
use ticketd::wire::{
    Handshake, JoinAnswer, JoinRequest, read_join_answer, write_handshake, write_join_request,
};

/// Elections take 0.8–1.6 s; allow many on a loaded two-core machine.
const LEADER_WAIT: Duration = Duration::from_secs(20);
const EXIT_WAIT: Duration = Duration::from_secs(20);

/// `n` nodes with no peer list; each is started with a subcommand.
fn nodes(name: &str, n: usize) -> Cluster {
    let mut cluster = Cluster::new(name, n);
    for node in &mut cluster.nodes {
        node.peers = String::new();
    }
    cluster
}

/// Starts node `index` with `command` (e.g. `["start"]`); a later plain
/// restart runs without it.
fn start_with(cluster: &mut Cluster, index: usize, command: &[&str]) {
    let node = &mut cluster.nodes[index];
    node.extra_args = command.iter().map(|s| s.to_string()).collect();
    node.start();
    node.extra_args.clear();
}

/// The cluster id (hex) in node `index`'s status.
fn cluster_id(cluster: &Cluster, index: usize) -> Option<String> {
    json_str(&cluster.nodes[index].status()?, "Cluster")
}

#[test]
fn start_makes_a_new_cluster_each_time_and_a_plain_restart_keeps_it() {
    let mut cluster = nodes("start", 1);
    start_with(&mut cluster, 0, &["start"]);
    let http = vec![cluster.nodes[0].http()];
    let first = take_ids_anywhere(&http, 1, LEADER_WAIT)
        .unwrap_or_else(|| panic!("start serves no IDs\n{}", cluster.logs()));
    let id_of_start = cluster_id(&cluster, 0);
    assert_eq!(
        cluster.nodes[0].terminate(EXIT_WAIT).unwrap().code(),
        Some(0)
    );

    // A plain restart keeps the cluster and its IDs.
    cluster.nodes[0].start();
    let again = take_ids_anywhere(&http, 1, LEADER_WAIT).expect("IDs after a restart");
    assert!(again[0] > first[0]);
    assert_eq!(cluster_id(&cluster, 0), id_of_start);
    assert_eq!(
        cluster.nodes[0].terminate(EXIT_WAIT).unwrap().code(),
        Some(0)
    );

    // `start` again: another cluster, after saying what it wipes.
    start_with(&mut cluster, 0, &["start"]);
    take_ids_anywhere(&http, 1, LEADER_WAIT).expect("IDs after a second start");
    let id_of_restart = cluster_id(&cluster, 0);
    assert!(id_of_restart.is_some());
    assert_ne!(
        id_of_restart, id_of_start,
        "start must draw a new cluster id"
    );
    let log = cluster.nodes[0].log();
    assert!(log.contains("wiped the data of node 1 of cluster"), "{log}");
    assert!(log.contains(&cluster.nodes[0].data_dir.display().to_string()));
}

#[test]
fn drop_refuses_a_running_node_and_empties_a_stopped_one() {
    let mut cluster = nodes("drop", 1);
    start_with(&mut cluster, 0, &["start"]);
    take_ids_anywhere(&[cluster.nodes[0].http()], 1, LEADER_WAIT).expect("IDs");
    let dir = cluster.nodes[0].data_dir.display().to_string();
    let (status, stderr) = run_ticketd(&["drop", "--path", &dir], EXIT_WAIT).expect("drop exits");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by a running node"), "{stderr}");
    assert!(cluster.nodes[0].is_healthy());

    assert_eq!(
        cluster.nodes[0].terminate(EXIT_WAIT).unwrap().code(),
        Some(0)
    );
    let (status, stderr) = run_ticketd(&["drop", "--path", &dir], EXIT_WAIT).expect("drop exits");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!cluster.nodes[0].data_dir.exists(), "{stderr}");
    // Dropping nothing is fine too.
    let (status, _) = run_ticketd(&["drop", "--path", &dir], EXIT_WAIT).expect("drop exits");
    assert_eq!(status.code(), Some(0));
}

/// What a client saw: every ID in order, and every status.
#[derive(Default)]
struct Seen {
    ids: Vec<u64>,
    statuses: HashSet<u16>,
    /// 200 answers without an ID in their body.
    empty_200: usize,
}

/// A client that takes one ID after another from the nodes in `nodes`
/// (the list grows as nodes join), following a 301 by hand, until told
/// to stop.
fn spawn_client(
    nodes: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut next = 0;
        while !stop.load(Ordering::SeqCst) {
            let addr = {
                let nodes = nodes.lock().unwrap();
                nodes[next % nodes.len()].clone()
            };
            next += 1;
            let Some((response, redirected)) = post_following_301(&addr) else {
                continue;
            };
            if redirected {
                seen.lock().unwrap().statuses.insert(301);
            }
            let mut seen = seen.lock().unwrap();
            seen.statuses.insert(response.status);
            if response.status == 200 {
                let ids = common::ids_of(&response);
                seen.empty_200 += usize::from(ids.is_empty());
                seen.ids.extend(ids);
            } else {
                drop(seen);
                thread::sleep(Duration::from_millis(20));
            }
        }
    })
}

/// Waits until `seen` holds more than `count` IDs.
fn wait_more_ids(cluster: &Cluster, seen: &Mutex<Seen>, count: usize, what: &str) {
    let more = wait_for(LEADER_WAIT, || {
        (seen.lock().unwrap().ids.len() > count + 10).then_some(())
    });
    assert!(more.is_some(), "no IDs {what}\n{}", cluster.logs());
}

/// The members in `/api/v1/cluster` of the first running node that
/// answers: (id, voter).
fn members(cluster: &Cluster) -> Vec<(u64, bool)> {
    let body = cluster
        .running()
        .into_iter()
        .find_map(|i| get(&cluster.nodes[i].http(), "/api/v1/cluster").filter(|r| r.status == 200))
        .map(|r| r.body)
        .unwrap_or_default();
    body.split("{\"Id\":")
        .skip(1)
        .filter_map(|member| {
            let id = member.split(',').next()?.parse().ok()?;
            Some((id, member.contains("\"Voter\":true")))
        })
        .collect()
}

fn wait_members(cluster: &Cluster, expected: &[(u64, bool)]) {
    let found = wait_for(LEADER_WAIT, || (members(cluster) == expected).then_some(()));
    assert!(
        found.is_some(),
        "members are {:?}, not {expected:?}\n{}",
        members(cluster),
        cluster.logs()
    );
}

/// The `joined cluster … as node N` line a `join` printed.
fn joined_line(cluster: &Cluster, index: usize) -> String {
    let line = wait_for(LEADER_WAIT, || {
        cluster.nodes[index]
            .log()
            .lines()
            .find(|l| l.starts_with("joined cluster "))
            .map(str::to_string)
    });
    line.unwrap_or_else(|| panic!("node {index} never said it joined\n{}", cluster.logs()))
}

fn check_client(cluster: &Cluster, seen: &Mutex<Seen>) -> usize {
    let seen = seen.lock().unwrap();
    let unique: HashSet<u64> = seen.ids.iter().copied().collect();
    let duplicates = seen.ids.len() - unique.len();
    println!(
        "client took {} IDs, {duplicates} duplicates, statuses {:?}",
        seen.ids.len(),
        seen.statuses
    );
    assert_eq!(duplicates, 0, "duplicate IDs");
    assert_eq!(seen.empty_200, 0, "200 answers without an ID");
    assert!(
        seen.ids.windows(2).all(|w| w[1] > w[0]),
        "IDs not increasing for one client"
    );
    let allowed: HashSet<u16> = [200, 301, 503].into_iter().collect();
    assert!(
        seen.statuses.is_subset(&allowed),
        "client saw {:?}\n{}",
        seen.statuses,
        cluster.logs()
    );
    seen.ids.len()
}

#[test]
fn start_and_two_joins_grow_a_cluster_that_survives_its_first_node() {
    let mut cluster = nodes("grow", 3);
    start_with(&mut cluster, 0, &["start"]);
    cluster.wait_leader(LEADER_WAIT);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let addrs = Arc::new(Mutex::new(vec![cluster.nodes[0].http()]));
    let client = spawn_client(Arc::clone(&addrs), Arc::clone(&stop), Arc::clone(&seen));
    wait_more_ids(&cluster, &seen, 0, "from the started node");

    // Through the leader (the only member), then through a follower.
    let leader_peer = cluster.nodes[0].peer();
    start_with(&mut cluster, 1, &["join", &leader_peer]);
    let line = joined_line(&cluster, 1);
    let cluster_hex = cluster_id(&cluster, 0).expect("a cluster id");
    assert_eq!(line, format!("joined cluster {cluster_hex} as node 2"));
    wait_members(&cluster, &[(1, true), (2, true)]);
    addrs.lock().unwrap().push(cluster.nodes[1].http());

    let follower_peer = cluster.nodes[1].peer();
    start_with(&mut cluster, 2, &["join", &follower_peer, "--id", "7"]);
    assert_eq!(
        joined_line(&cluster, 2),
        format!("joined cluster {cluster_hex} as node 7")
    );
    wait_members(&cluster, &[(1, true), (2, true), (7, true)]);
    addrs.lock().unwrap().push(cluster.nodes[2].http());
    let count = seen.lock().unwrap().ids.len();
    wait_more_ids(&cluster, &seen, count, "after the joins");

    // The first node goes (kill -9): the two that joined serve on.
    cluster.nodes[0].kill();
    let count = seen.lock().unwrap().ids.len();
    wait_more_ids(&cluster, &seen, count, "after the first node was killed");

    // A plain restart of a joined node rejoins from its data dir.
    assert_eq!(
        cluster.nodes[1].terminate(EXIT_WAIT).unwrap().code(),
        Some(0)
    );
    cluster.nodes[1].start();
    cluster.nodes[0].start();
    let count = seen.lock().unwrap().ids.len();
    wait_more_ids(&cluster, &seen, count, "after the restarts");
    wait_members(&cluster, &[(1, true), (2, true), (7, true)]);

    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    check_client(&cluster, &seen);
}

#[test]
fn join_to_an_address_where_nobody_listens_exits_1_within_30_s() {
    let dir = common::TempDir::new("join-nowhere");
    let path = dir.path().join("node").display().to_string();
    let (peer_port, http_port) = (free_port().to_string(), free_port().to_string());
    let nowhere = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let args = [
        "join",
        &nowhere,
        "--peer_port",
        &peer_port,
        "--http_port",
        &http_port,
        "--path",
        &path,
    ];
    let (status, stderr) = run_ticketd(&args, Duration::from_secs(45)).expect("join gives up");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(40));
    assert!(
        stderr.contains(&format!("join {nowhere} failed")),
        "{stderr}"
    );
}

/// The joiner's side by hand: a handshake as node 0, a join request,
/// the answer.
fn ask_to_join(member: &str, request: &JoinRequest) -> JoinAnswer {
    let mut stream = TcpStream::connect(member).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let hello = Handshake {
        cluster_id: 0,
        node_id: 0,
        peer_addr: request.peer_addr.clone(),
        http_addr: request.http_addr.clone(),
        incarnation: request.incarnation,
    };
    write_handshake(&mut stream, &hello).unwrap();
    write_join_request(&mut stream, request).unwrap();
    read_join_answer(&mut stream).unwrap()
}

#[test]
fn a_retried_join_gets_the_same_id_and_used_ids_are_refused() {
    let mut cluster = nodes("join-retry", 1);
    start_with(&mut cluster, 0, &["start"]);
    cluster.wait_leader(LEADER_WAIT);
    let member = cluster.nodes[0].peer();
    // A joiner that never comes up: its answer is "lost", it asks again.
    let request = JoinRequest {
        peer_addr: format!("127.0.0.1:{}", free_port()),
        http_addr: format!("127.0.0.1:{}", free_port()),
        incarnation: 0xfeed,
        wanted_id: 0,
    };
    let first = ask_to_join(&member, &request);
    let JoinAnswer::Admitted { node_id, .. } = first else {
        panic!("{first:?}\n{}", cluster.logs());
    };
    assert_eq!(node_id, 2);
    assert_eq!(ask_to_join(&member, &request), first);
    wait_members(&cluster, &[(1, true), (2, false)]);

    let reused = JoinRequest {
        peer_addr: format!("127.0.0.1:{}", free_port()),
        wanted_id: 2,
        ..request.clone()
    };
    match ask_to_join(&member, &reused) {
        JoinAnswer::Refused { retry, message } => {
            assert!(!retry);
            assert!(message.contains("never reused"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let garbage = JoinRequest {
        peer_addr: "x".repeat(2000),
        ..request.clone()
    };
    match ask_to_join(&member, &garbage) {
        JoinAnswer::Refused { retry, message } => {
            assert!(!retry);
            assert!(message.contains("not host:port"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A voter's address is never handed to a new data directory.
    let voter = JoinRequest {
        peer_addr: member.clone(),
        ..request
    };
    match ask_to_join(&member, &voter) {
        JoinAnswer::Refused { retry, message } => {
            assert!(!retry);
            assert!(message.contains("remove it first"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

/// `ticketd leave` for node `index`, with its flags; its exit status and
/// stderr.
fn leave(cluster: &Cluster, index: usize) -> (Option<i32>, String) {
    let node = &cluster.nodes[index];
    let (peer_port, http_port) = (node.peer_port.to_string(), node.http_port.to_string());
    let path = node.data_dir.display().to_string();
    let args = [
        "leave",
        "--peer_port",
        &peer_port,
        "--http_port",
        &http_port,
        "--path",
        &path,
    ];
    let (status, stderr) = run_ticketd(&args, Duration::from_secs(90)).expect("leave exits");
    (status.code(), stderr)
}

/// `start` node 0, `join` the others to it one after the other, and
/// wait until all are voters.
fn grow(cluster: &mut Cluster, n: usize) {
    start_with(cluster, 0, &["start"]);
    cluster.wait_leader(LEADER_WAIT);
    let first = cluster.nodes[0].peer();
    let mut expected = vec![(1, true)];
    for index in 1..n {
        start_with(cluster, index, &["join", &first]);
        joined_line(cluster, index);
        expected.push((index as u64 + 1, true));
        wait_members(cluster, &expected);
    }
}

#[test]
fn leave_on_a_follower_and_on_the_leader_shrinks_3_to_1() {
    let mut cluster = nodes("shrink", 3);
    grow(&mut cluster, 3);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let all: Vec<String> = cluster.nodes.iter().map(|n| n.http()).collect();
    let addrs = Arc::new(Mutex::new(all));
    let client = spawn_client(Arc::clone(&addrs), Arc::clone(&stop), Arc::clone(&seen));
    wait_more_ids(&cluster, &seen, 0, "from three nodes");

    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let (code, stderr) = leave(&cluster, follower);
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs());
    let status = cluster.nodes[follower].wait_exit(EXIT_WAIT);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", cluster.logs());
    let left: Vec<u64> = (0..3)
        .filter(|i| *i != follower)
        .map(|i| i as u64 + 1)
        .collect();
    wait_members(&cluster, &[(left[0], true), (left[1], true)]);
    let count = seen.lock().unwrap().ids.len();
    wait_more_ids(&cluster, &seen, count, "after a follower left");

    let (code, stderr) = leave(&cluster, leader);
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs());
    let status = cluster.nodes[leader].wait_exit(EXIT_WAIT);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", cluster.logs());
    let last = (0..3).find(|i| *i != leader && *i != follower).unwrap();
    wait_members(&cluster, &[(last as u64 + 1, true)]);
    let count = seen.lock().unwrap().ids.len();
    wait_more_ids(&cluster, &seen, count, "after the leader left");
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    check_client(&cluster, &seen);

    // Both refuse a plain restart, and say what to do.
    cluster.nodes[leader].start();
    let status = cluster.nodes[leader].wait_exit(EXIT_WAIT).expect("refused");
    assert_eq!(status.code(), Some(1));
    assert!(cluster.nodes[leader].log().contains("ticketd join"));
}

#[test]
fn leave_on_a_stopped_node_starts_it_to_leave() {
    let mut cluster = nodes("leave-stopped", 2);
    grow(&mut cluster, 2);
    assert_eq!(
        cluster.nodes[1].terminate(EXIT_WAIT).unwrap().code(),
        Some(0)
    );
    let (code, stderr) = leave(&cluster, 1);
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs());
    wait_members(&cluster, &[(1, true)]);
    take_ids_anywhere(&[cluster.nodes[0].http()], 1, LEADER_WAIT).expect("IDs");
    // Leaving again is done already; the last voter cannot leave.
    let (code, _) = leave(&cluster, 1);
    assert_eq!(code, Some(0));
    let (code, stderr) = leave(&cluster, 0);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("only voter"), "{stderr}");
    assert!(cluster.nodes[0].is_healthy());
}

/// `DELETE /api/v1/cluster/members/{id}` on the leader (a loopback
/// client needs no token); the answer's status.
fn remove_member(cluster: &Cluster, id: u64) -> u16 {
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let path = format!("/api/v1/cluster/members/{id}");
    common::request("DELETE", &cluster.nodes[leader].http(), &path, b"").map_or(0, |r| r.status)
}

#[test]
fn grow_to_5_shrink_to_3_and_replace_a_dead_node_in_one_run() {
    // Nodes 0-4 are the originals, 5 the replacement.
    let mut cluster = nodes("grow5", 6);
    start_with(&mut cluster, 0, &["start"]);
    cluster.wait_leader(LEADER_WAIT);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let addrs = Arc::new(Mutex::new(vec![cluster.nodes[0].http()]));
    let client = spawn_client(Arc::clone(&addrs), Arc::clone(&stop), Arc::clone(&seen));
    wait_more_ids(&cluster, &seen, 0, "from the started node");

    // Grow 1 → 5, each joiner asking the member that joined last: from
    // the second join on, through a follower.
    let mut expected = vec![(1, true)];
    for index in 1..5 {
        let via = cluster.nodes[index - 1].peer();
        start_with(&mut cluster, index, &["join", &via]);
        joined_line(&cluster, index);
        expected.push((index as u64 + 1, true));
        wait_members(&cluster, &expected);
        addrs.lock().unwrap().push(cluster.nodes[index].http());
    }
    let count = seen.lock().unwrap().ids.len();
    wait_more_ids(&cluster, &seen, count, "from five nodes");

    // Shrink 5 → 3 with `leave`: a follower, then the leader.
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let follower = (0..5).find(|i| *i != leader).unwrap();
    for index in [follower, leader] {
        let (code, stderr) = leave(&cluster, index);
        assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs());
        let status = cluster.nodes[index].wait_exit(EXIT_WAIT);
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", cluster.logs());
        let gone = cluster.nodes[index].http();
        addrs.lock().unwrap().retain(|a| *a != gone);
        expected.retain(|(id, _)| *id != index as u64 + 1);
        wait_members(&cluster, &expected);
        let count = seen.lock().unwrap().ids.len();
        wait_more_ids(&cluster, &seen, count, "after a leave");
    }
    let left = [follower as u64 + 1, leader as u64 + 1];

    // kill -9 an original follower, remove it over HTTP, join a fresh
    // node in its place.
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let dead = cluster
        .running()
        .into_iter()
        .find(|i| *i < 5 && *i != leader)
        .unwrap();
    cluster.nodes[dead].kill();
    let dead_id = dead as u64 + 1;
    assert_eq!(remove_member(&cluster, dead_id), 200, "{}", cluster.logs());
    expected.retain(|(id, _)| *id != dead_id);
    wait_members(&cluster, &expected);
    let via = cluster.nodes[leader].peer();
    start_with(&mut cluster, 5, &["join", &via]);
    let line = joined_line(&cluster, 5);
    let new_id: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        new_id > 5 && !left.contains(&new_id) && new_id != dead_id,
        "the replacement got node id {new_id}, used before"
    );
    expected.push((new_id, true));
    wait_members(&cluster, &expected);
    addrs.lock().unwrap().push(cluster.nodes[5].http());
    let count = seen.lock().unwrap().ids.len();
    wait_more_ids(&cluster, &seen, count, "after the replacement joined");

    // Another original dies (the leader): the two left still serve.
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let another = if leader < 5 {
        leader
    } else {
        cluster.running().into_iter().find(|i| *i < 5).unwrap()
    };
    cluster.nodes[another].kill();
    let count = seen.lock().unwrap().ids.len();
    wait_more_ids(&cluster, &seen, count, "after another original was killed");

    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let taken = check_client(&cluster, &seen);
    println!("grow 1 -> 5, shrink 5 -> 3, replace: {taken} IDs taken, 0 duplicates");
}
