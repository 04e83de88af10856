//! What was implemented but untested: `/readyz` answering 503, the shapes
//! of `/api/v1/status` and `/api/v1/cluster`, the default session TTL of
//! 5000 ms, and a new leader restarting every session's TTL with no
//! refreshes running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_support;
mod common;

use std::time::{Duration, Instant};

use api_support::{Api, Json, LogsOnPanic, leader_index, start_cluster};
use common::{Cluster, get, request_following, wait_for};

const LEADER_WAIT: Duration = Duration::from_secs(20);

fn readyz(node: &common::Node) -> Option<u16> {
    get(&node.http(), "/readyz").map(|r| r.status)
}

#[test]
fn readyz_answers_503_until_a_leader_is_known_and_after_the_quorum_is_gone() {
    let mut cluster = Cluster::new("readyz", 3);
    // Alone of three: it serves HTTP but knows no leader.
    cluster.nodes[0].start();
    let healthy = wait_for(LEADER_WAIT, || {
        get(&cluster.nodes[0].http(), "/healthz").filter(|r| r.status == 200)
    });
    assert!(healthy.is_some(), "never healthy\n{}", cluster.logs());
    let refused = get(&cluster.nodes[0].http(), "/readyz").expect("an answer");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body.contains("no leader"), "{refused:?}");
    // With its peers: every node becomes ready.
    for node in &mut cluster.nodes[1..] {
        node.start();
    }
    let ready = wait_for(LEADER_WAIT, || {
        cluster
            .nodes
            .iter()
            .all(|n| readyz(n) == Some(200))
            .then_some(())
    });
    assert!(ready.is_some(), "not all ready\n{}", cluster.logs());
    // Two of three gone: the survivor loses its leader (or its own
    // lease and leadership) and is no longer ready.
    let survivor = 0;
    for node in &mut cluster.nodes[1..] {
        node.kill();
    }
    let unready = wait_for(LEADER_WAIT, || {
        (readyz(&cluster.nodes[survivor]) == Some(503)).then_some(())
    });
    assert!(
        unready.is_some(),
        "the survivor stayed ready without a quorum: {:?}\n{}",
        cluster.nodes[survivor].status(),
        cluster.logs()
    );
}

fn status_of(node: &common::Node) -> Json {
    let body = node.status().expect("a status");
    Json::parse(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Members as `/api/v1/status` and `/api/v1/cluster` list them.
fn assert_members(members: &Json, cluster: &Cluster, leader_id: u64) {
    let members = members.arr();
    assert_eq!(members.len(), cluster.nodes.len(), "{members:?}");
    for member in members {
        assert_eq!(
            member.keys(),
            ["Id", "Peer", "Http", "Voter", "Leader"],
            "{member:?}"
        );
        let peer = member.get("Peer").str();
        let node = cluster
            .nodes
            .iter()
            .find(|n| n.peer() == peer)
            .unwrap_or_else(|| panic!("no node at {peer}"));
        assert_eq!(member.get("Http").str(), node.http(), "{member:?}");
        assert!(member.get("Voter").bool(), "{member:?}");
        assert_eq!(
            member.get("Leader").bool(),
            member.get("Id").u64() == leader_id,
            "{member:?}"
        );
    }
}

#[test]
fn status_and_cluster_have_their_documented_shapes() {
    let cluster = start_cluster("status-shape", 3);
    let _logs = LogsOnPanic::new(&cluster);
    let leader = leader_index(&cluster, LEADER_WAIT);
    // Each member publishes its HTTP address through the log after it
    // starts: wait until every node lists all of them.
    let published = wait_for(LEADER_WAIT, || {
        cluster
            .nodes
            .iter()
            .all(|n| {
                let status = status_of(n);
                status
                    .get("Members")
                    .arr()
                    .iter()
                    .all(|m| !m.get("Http").str().is_empty())
            })
            .then_some(())
    });
    assert!(published.is_some(), "HTTP addresses never all published");
    let leader_status = status_of(&cluster.nodes[leader]);
    let cluster_id = leader_status.get("Cluster").str().to_string();
    assert_eq!(cluster_id.len(), 16, "{leader_status:?}");
    assert!(cluster_id.chars().all(|c| c.is_ascii_hexdigit()));
    let mut ids = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let status = status_of(node);
        assert_eq!(
            status.keys(),
            [
                "Version",
                "Started",
                "Uptime",
                "UptimeSeconds",
                "Id",
                "Cluster",
                "Role",
                "Term",
                "Leader",
                "LeaderHttp",
                "CommitIndex",
                "AppliedIndex",
                "FirstIndex",
                "LastIndex",
                "SnapshotIndex",
                "Fsyncs",
                "EntriesPerFsync",
                "Sessions",
                "Locks",
                "Waiters",
                "StorageFull",
                "Members"
            ],
            "node {i}"
        );
        assert_eq!(status.get("Version").str(), env!("CARGO_PKG_VERSION"));
        let started = status.get("Started").str();
        assert!(
            started.len() == 20 && started.ends_with('Z') && started.as_bytes()[10] == b'T',
            "not RFC 3339: {started}"
        );
        assert!(status.get("Uptime").str().ends_with('s'), "{status:?}");
        assert_eq!(status.get("Cluster").str(), cluster_id, "one cluster");
        ids.push(status.get("Id").u64());
        if i == leader {
            assert_eq!(status.get("Role").str(), "leader");
            assert_eq!(status.get("Leader").u64(), status.get("Id").u64());
        } else {
            // Leadership may move meanwhile; a follower names a leader
            // and where to find it.
            if status.get("Role").str() == "follower" {
                let named = status.get("Leader").u64();
                assert_ne!(named, 0, "node {i}: {status:?}");
                assert!(!status.get("LeaderHttp").str().is_empty(), "{status:?}");
            }
        }
        let (commit, applied) = (
            status.get("CommitIndex").u64(),
            status.get("AppliedIndex").u64(),
        );
        let (first, last) = (
            status.get("FirstIndex").u64(),
            status.get("LastIndex").u64(),
        );
        assert!(applied <= commit && commit <= last, "{status:?}");
        assert!(first <= last + 1, "{status:?}");
        assert!(status.get("Term").u64() >= 1);
        assert!(!status.get("StorageFull").bool());
        assert_members(status.get("Members"), &cluster, status.get("Leader").u64());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct node ids: {ids:?}");

    for node in &cluster.nodes {
        let answer = get(&node.http(), "/api/v1/cluster").expect("an answer");
        assert_eq!(answer.status, 200, "{answer:?}");
        let view = Json::parse(&answer.body).expect("JSON");
        assert_eq!(view.keys(), ["Leader", "Term", "Members"], "{view:?}");
        let named = view.get("Leader").u64();
        assert!(ids.contains(&named), "{view:?}");
        assert!(view.get("Term").u64() >= 1);
        assert_members(view.get("Members"), &cluster, named);
    }
}

#[test]
fn a_session_without_a_ttl_gets_5000_ms_and_expires_unrefreshed() {
    let cluster = start_cluster("default-ttl", 1);
    let api = Api::new(&cluster.nodes[0].http());
    let answer = api.call("POST", "/sessions?name=plain", b"");
    assert_eq!(answer.status, 200, "{answer:?}");
    let id = Json::parse(&answer.body).expect("JSON").str().to_string();
    let session = api.session(&id);
    assert_eq!(session.get("Ttl").u64(), 5000, "{session:?}");
    let opened = Instant::now();
    let gone = wait_for(Duration::from_secs(30), || {
        (api.get_session(&id).status == 404).then(|| opened.elapsed())
    });
    let Some(after) = gone else {
        panic!("the unrefreshed session never expired\n{}", cluster.logs());
    };
    // Not before its TTL (a lower bound only: a loaded machine may be
    // late, never early).
    assert!(
        after >= Duration::from_millis(5000),
        "expired after {after:?}"
    );
}

#[test]
fn a_new_leader_restarts_every_ttl_with_no_refreshes_running() {
    const TTL: Duration = Duration::from_millis(8_000);
    let mut cluster = start_cluster("ttl-restart", 3);
    let _logs = LogsOnPanic::new(&cluster);
    let leader = leader_index(&cluster, LEADER_WAIT);
    let api = Api::new(&cluster.nodes[leader].http());
    let opened = Instant::now();
    let id = api.open_session("unrefreshed", TTL.as_millis() as u64);
    // Most of its TTL gone on the old leader, then the leader dies.
    std::thread::sleep(TTL * 3 / 4);
    let killed = Instant::now();
    cluster.nodes[leader].kill();
    // Until `killed + TTL` the session must be there whenever a leader
    // answers (the new one took office after the kill, so its deadline
    // is later still); the old deadline, `opened + TTL`, falls inside.
    let path = format!("/api/v1/sessions/{id}");
    let mut seen_past_old_deadline = false;
    while killed.elapsed() < TTL - Duration::from_millis(500) {
        let answer = cluster
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .find_map(|n| request_following("GET", &n.http(), &path, b""))
            .filter(|r| r.status != 503);
        if let Some(answer) = answer {
            assert_eq!(
                answer.status,
                200,
                "the session expired {:?} after the kill, within its TTL of the new leader: {answer:?}",
                killed.elapsed()
            );
            if opened.elapsed() > TTL + Duration::from_millis(500) {
                seen_past_old_deadline = true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen_past_old_deadline,
        "no leader answered between the old deadline and the new one"
    );
    // Still no refreshes: it does expire in the end.
    let api = Api::new(&cluster.nodes[leader_index(&cluster, LEADER_WAIT)].http());
    let gone = wait_for(Duration::from_secs(30), || {
        (api.get_session(&id).status == 404).then_some(())
    });
    assert!(gone.is_some(), "the session never expired");
}
