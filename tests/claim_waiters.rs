//! Parked claims when more than one ticket comes free at once: a free
//! resource wakes only its first waiter, so the claim that waiter makes
//! must wake the next one while free tickets are left
//! (`src/node/apply.rs`, `mark_waiters`, the `Claim` arm).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_support;
mod common;

use std::sync::mpsc;
use std::time::Duration;

use api_support::{Api, Json, assert_ok, claim_grant, start_cluster};
use common::{Cluster, Response, wait_for};

fn wait_parked(cluster: &Cluster, n: u64) {
    let parked = wait_for(Duration::from_secs(20), || {
        cluster.nodes[0]
            .status()
            .and_then(|status| Json::parse(&status).ok())
            .filter(|status| status.get("Waiters").u64() == n)
    });
    assert!(
        parked.is_some(),
        "the leader never reported {n} parked waiter(s); logs:\n{}",
        cluster.logs()
    );
}

/// Two holders whose TTLs restart at the same instant (a restarted
/// leader restarts every TTL) expire in one `ExpireSessions`: two tickets
/// come free with one wake-up for the resource.
#[test]
fn two_tickets_freed_at_once_go_to_both_parked_claims() {
    const HOLDER_TTL_MS: u64 = 3_000;
    let mut cluster = start_cluster("claim-waiters", 1);
    let api = Api::new(&cluster.nodes[0].http());
    let issuer = api.open_session("issuer", 600_000);
    let mut holders = Vec::new();
    for name in ["t1", "t2"] {
        assert_ok(&api.issue(&issuer, "pool", name, b""), "issue");
        let holder = api.open_session(&format!("holder-{name}"), HOLDER_TTL_MS);
        assert!(claim_grant(&api.claim(&holder, "pool")).0.granted);
        holders.push(holder);
    }
    cluster.nodes[0].kill();
    cluster.nodes[0].start();
    cluster.wait_leader(Duration::from_secs(20));
    let (sender, answers) = mpsc::channel::<(String, Response)>();
    for (n, name) in ["w1", "w2"].into_iter().enumerate() {
        let waiter = api.open_session(name, 600_000);
        let (api, sender) = (api.clone(), sender.clone());
        std::thread::spawn(move || {
            let answer = api.claim_wait(&waiter, "pool", 30_000);
            let _ = sender.send((waiter, answer));
        });
        wait_parked(&cluster, n as u64 + 1);
    }
    let mut claimed = Vec::new();
    for _ in 0..2 {
        let (waiter, answer) = answers
            .recv_timeout(Duration::from_secs(60))
            .expect("the parked claim answered");
        let (grant, ticket) = claim_grant(&answer);
        assert!(
            grant.granted,
            "{waiter} was left without a ticket while one was free: {}\n{}",
            answer.body,
            cluster.logs()
        );
        assert_eq!(ticket.get("Claimant").get("Id").str(), waiter);
        claimed.push(ticket.get("Name").str().to_string());
    }
    claimed.sort();
    assert_eq!(claimed, ["t1", "t2"]);
    for holder in holders {
        assert_eq!(api.get_session(&holder).status, 404, "{holder} expired");
    }
}
