//! A leader's proposals that a later leader overwrites are never answered
//! with what the later leader's entries at their indexes did: the client
//! learns the leadership changed (503), not someone else's outcome.
//! (`src/node/apply.rs`, `pending.term == entry.term`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_support;
mod common;

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use api_support::{Api, start_cluster};
use common::{Cluster, Response, request, wait_for};

/// SIGCONTs the node on drop, so that a failing test leaves no stopped
/// process behind (the cluster's drop kills it).
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        signal("-STOP", pid);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(which: &str, pid: u32) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {which} {pid}");
}

fn leader_of(cluster: &Cluster, among: &[usize]) -> Option<usize> {
    among
        .iter()
        .copied()
        .find(|&i| cluster.nodes[i].is_leader())
}

/// The old leader proposes lock requests it can never commit (both
/// followers are dead), is frozen, and the followers come back and elect
/// a leader whose own entries (its no-op, an ID refill) take the same
/// indexes. Thawed, the old leader applies those entries where its
/// proposals were: each of its clients must get 503, none an answer.
#[test]
fn proposals_overwritten_by_a_new_leader_answer_503() {
    let mut cluster = start_cluster("overwritten", 3);
    let old = (0..3)
        .find(|&i| cluster.nodes[i].is_leader())
        .expect("a leader");
    let addr = cluster.nodes[old].http();
    let session = Api::new(&addr).open_session("old-leader", 60_000);
    let followers: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for &f in &followers {
        cluster.nodes[f].kill();
    }
    let (sender, answers) = mpsc::channel::<(usize, Option<Response>)>();
    const REQUESTS: usize = 6;
    for n in 0..REQUESTS {
        let addr = addr.clone();
        let path = format!("/api/v1/locks/r{n}?sessid={session}");
        let sender = sender.clone();
        std::thread::spawn(move || {
            let _ = sender.send((n, request("POST", &addr, &path, b"")));
        });
    }
    drop(sender);
    // Proposed, never to commit; then frozen with them pending.
    std::thread::sleep(Duration::from_millis(200));
    let frozen_at = Instant::now();
    let frozen = Stopped::new(cluster.nodes[old].pid().expect("old leader runs"));
    for &f in &followers {
        cluster.nodes[f].start();
    }
    let new = wait_for(Duration::from_secs(20), || leader_of(&cluster, &followers))
        .unwrap_or_else(|| panic!("no new leader\n{}", cluster.logs()));
    // Its ID refill follows its no-op into the log.
    let refilled = wait_for(Duration::from_secs(10), || {
        common::post(&cluster.nodes[new].http(), "/").filter(|r| r.status == 200)
    });
    assert!(refilled.is_some(), "the new leader serves IDs");
    let thawed_after = frozen_at.elapsed();
    drop(frozen);
    let mut answered = 0;
    while let Ok((n, answer)) = answers.recv_timeout(Duration::from_secs(60)) {
        answered += 1;
        if let Some(answer) = answer {
            assert_eq!(
                answer.status,
                503,
                "lock r{n} from the old leader (thawed after {thawed_after:?}): {}\n{}",
                answer.body,
                cluster.logs()
            );
        }
    }
    assert_eq!(answered, REQUESTS);
    // None of them holds: the resources are free for another session.
    let api = Api::new(&cluster.nodes[new].http());
    let other = api.open_session("new-leader", 60_000);
    for n in 0..REQUESTS {
        let grant = api_support::lock_grant(&api.lock(&other, &format!("r{n}")));
        assert!(grant.granted, "r{n} is held by a lock never committed");
    }
}
