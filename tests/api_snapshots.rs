//! Sessions, tickets, claims, locks and their fencing tokens survive log
//! compaction: a follower that was down while the log was compacted gets
//! the state as a snapshot, leads afterwards and answers exactly as the
//! old leader did; and the whole cluster, `kill -9`ed, rebuilds the same
//! state from snapshot plus log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_support;
mod common;

use std::time::Duration;

use api_support::churn::{self, Kill};
use api_support::{
    Api, Json, LogsOnPanic, assert_ok, base64, claim_grant, follower_index, leader_index,
    lock_grant, wait_followers_know_leader,
};
use common::ops::metric;
use common::{Cluster, Node, request, request_following, wait_for};

/// This node's `/api/v1/status`, parsed.
fn status_of(node: &Node) -> Option<Json> {
    node.status().and_then(|s| Json::parse(&s).ok())
}

fn index_of(node: &Node, field: &str) -> u64 {
    status_of(node)
        .map(|s| s.get(field).u64())
        .unwrap_or_else(|| panic!("no status from {}", node.http()))
}

/// What the test wrote before compaction, to check after it.
struct Written {
    holder: String,
    claimant: String,
    lock_token: u64,
    token_max: u64,
}

fn check_state(api: &Api, written: &Written) {
    let holder = api.session(&written.holder);
    let issued = holder.get("Issuances").arr();
    let names: Vec<&str> = issued.iter().map(|t| t.get("Name").str()).collect();
    assert_eq!(names, ["snap-lock", "t"], "{holder:?}");
    let resources = api.dump_resources(None);
    assert_eq!(
        resources.keys(),
        ["snap-lock", "snap-tickets"],
        "{resources:?}"
    );
    let ticket = resources.get("snap-tickets").get("Tickets").get("t");
    assert_eq!(ticket.get("Data").str(), base64(b"\x00snapshot\xff"));
    assert_eq!(ticket.get("Claimant").get("Id").str(), written.claimant);
    assert!(api.has(&written.claimant, "snap-tickets", "t"));
    assert!(
        !lock_grant(&api.lock(&written.claimant, "snap-lock")).granted,
        "the lock is still held"
    );
    let relock = lock_grant(&api.lock(&written.holder, "snap-lock"));
    assert!(relock.granted);
    assert_eq!(relock.token, Some(written.lock_token), "the grant's token");
    assert_eq!(api.dump_sessions().len(), 2, "only the two live sessions");
}

fn restart_all(cluster: &mut Cluster) {
    for node in &mut cluster.nodes {
        node.kill();
    }
    for node in &mut cluster.nodes {
        node.start();
    }
    cluster.wait_leader(Duration::from_secs(20));
    wait_followers_know_leader(cluster, Duration::from_secs(20));
}

#[test]
fn state_survives_compaction_snapshot_install_and_restart() {
    let mut cluster = Cluster::new("api-snapshots", 3);
    for node in &mut cluster.nodes {
        node.extra_args = ["--expire", "100", "--snapshot", "100"]
            .map(String::from)
            .to_vec();
        node.env = vec![("TICKETD_COMPACT_ENTRIES".into(), "4".into())];
        node.start();
    }
    let _logs = LogsOnPanic::new(&cluster);
    cluster.wait_leader(Duration::from_secs(20));
    wait_followers_know_leader(&cluster, Duration::from_secs(20));
    let leader = leader_index(&cluster, Duration::from_secs(20));
    let api = Api::new(&cluster.nodes[leader].http());

    let holder = api.open_session("holder", 60_000);
    let claimant = api.open_session("claimant", 60_000);
    let lock = lock_grant(&api.lock(&holder, "snap-lock"));
    assert!(lock.granted);
    let data = b"\x00snapshot\xff";
    assert_ok(&api.issue(&holder, "snap-tickets", "t", data), "issue");
    let claim = claim_grant(&api.claim(&claimant, "snap-tickets")).0;
    assert!(claim.granted);

    // A follower misses everything from here on, and the log it would
    // need is compacted away.
    let lagging = follower_index(&cluster);
    cluster.nodes[lagging].kill();
    let missed_from = index_of(&cluster.nodes[leader], "CommitIndex");
    let mut token_max = claim.token.max(lock.token).unwrap_or(0);
    for i in 0..20 {
        let churn = api.open_session(&format!("churn-{i}"), 60_000);
        let grant = lock_grant(&api.lock(&churn, "churn-lock"));
        assert!(grant.granted);
        assert!(grant.token > Some(token_max), "tokens only grow");
        token_max = grant.token.unwrap_or(0);
        assert_ok(&api.close(&churn), "close");
    }
    let compacted = wait_for(Duration::from_secs(15), || {
        (index_of(&cluster.nodes[leader], "SnapshotIndex") > missed_from).then_some(())
    });
    assert!(compacted.is_some(), "the leader compacts its log");

    cluster.nodes[lagging].start();
    let caught_up = wait_for(Duration::from_secs(20), || {
        let commit = index_of(&cluster.nodes[leader], "CommitIndex");
        let status = status_of(&cluster.nodes[lagging])?;
        (status.get("AppliedIndex").u64() >= commit).then_some(status)
    })
    .expect("the restarted follower catches up");
    assert!(
        caught_up.get("FirstIndex").u64() > missed_from,
        "it caught up from a snapshot: {caught_up:?}"
    );

    // Hand it the leadership: it now answers from the installed snapshot.
    let lagging_id = caught_up.get("Id").u64();
    let transfer = request(
        "POST",
        &cluster.nodes[leader].http(),
        &format!("/api/v1/cluster/transfer?to={lagging_id}"),
        b"",
    )
    .expect("answer to transfer");
    assert_eq!(transfer.status, 200, "{}", transfer.body);
    let led = wait_for(Duration::from_secs(20), || {
        cluster.nodes[lagging].is_leader().then_some(())
    });
    assert!(led.is_some(), "the caught-up follower leads");
    wait_followers_know_leader(&cluster, Duration::from_secs(20));
    let written = Written {
        holder,
        claimant,
        lock_token: lock.token.unwrap_or(0),
        token_max,
    };
    let api = Api::new(&cluster.nodes[lagging].http());
    // Reads wait for the new leader's lease.
    wait_for(Duration::from_secs(10), || {
        (api.get_session(&written.holder).status == 200).then_some(())
    })
    .expect("the new leader serves");
    check_state(&api, &written);
    next_grant_is_larger(&api, &written, "after a snapshot install");

    // kill -9 of everything: snapshot plus log give the same state, and
    // every snapshot a node reported was on its disk (a compaction lets
    // the core drop its log only once the snapshot is stored).
    let reported: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|node| index_of(node, "SnapshotIndex"))
        .collect();
    restart_all(&mut cluster);
    for (n, node) in cluster.nodes.iter().enumerate() {
        let restarted = index_of(node, "SnapshotIndex");
        assert!(
            restarted >= reported[n],
            "node {n} reported a snapshot at {} before the kill, restarted from {restarted}",
            reported[n]
        );
    }
    let api = Api::new(&cluster.nodes[follower_index(&cluster)].http());
    check_state(&api, &written);
    next_grant_is_larger(&api, &written, "after a restart from a snapshot");
}

/// A new lock grant gets a token above every one handed out so far.
fn next_grant_is_larger(api: &Api, written: &Written, when: &str) {
    let grant = lock_grant(&api.lock(&written.claimant, "after-lock"));
    assert!(grant.granted, "{when}");
    assert!(
        grant.token > Some(written.token_max),
        "{when}: {grant:?} after {}",
        written.token_max
    );
    assert_eq!(api.unlock(&written.claimant, "after-lock").status, 200);
}

/// With a large state, the log is compacted only once it is as large as
/// the last snapshot: small writes after a big snapshot do not each
/// rewrite the whole state.
#[test]
fn a_large_state_is_compacted_in_proportion_to_the_log() {
    let mut cluster = Cluster::new("api-snapshot-size", 1);
    let node = &mut cluster.nodes[0];
    node.extra_args = ["--snapshot", "50"].map(String::from).to_vec();
    node.env = vec![("TICKETD_COMPACT_ENTRIES".into(), "4".into())];
    node.start();
    let _logs = LogsOnPanic::new(&cluster);
    cluster.wait_leader(Duration::from_secs(20));
    let node = &cluster.nodes[0];
    let api = Api::new(&node.http());
    // 40 sessions with 900-byte names: a snapshot of some 36 KB.
    let name = "n".repeat(900);
    let sessions: Vec<String> = (0..40).map(|_| api.open_session(&name, 60_000)).collect();
    // Compacted as the sessions came, each snapshot about twice the last.
    // Settled: the same snapshot for a whole second (a loaded machine
    // may still be encoding the one the last sessions asked for).
    let (mut last, mut same) = (0, 0);
    let snapshot = wait_for(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(200));
        let index = index_of(node, "SnapshotIndex");
        same = if index > 0 && index == last {
            same + 1
        } else {
            0
        };
        last = index;
        (same >= 5).then_some(index)
    })
    .expect("the sessions' log is compacted");
    // Where the last compaction fell depends on timing (a loaded machine
    // applies more sessions between two looks): open more until the next
    // one, so the log since the snapshot is about one session long.
    let mut extra = Vec::new();
    let snapshot = wait_for(Duration::from_secs(20), || {
        extra.push(api.open_session(&name, 60_000));
        std::thread::sleep(Duration::from_millis(100));
        let index = index_of(node, "SnapshotIndex");
        (index > snapshot).then_some(index)
    })
    .expect("more sessions are compacted too");
    let (mut last, mut same) = (snapshot, 0);
    let snapshot = wait_for(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(200));
        let index = index_of(node, "SnapshotIndex");
        same = if index == last { same + 1 } else { 0 };
        last = index;
        (same >= 5).then_some(index)
    })
    .expect("the compaction settles");
    // Lock entries are some 30 bytes: these 80 are a fraction of it, yet
    // 20 times the entry threshold. Were the log's size not weighed the
    // node would compact at its next look (every 50 ms); the pairs come
    // 50 ms apart, so it looks at least 40 times while they come, and
    // after each pair the snapshot must still be the same.
    for n in 0..40 {
        assert!(lock_grant(&api.lock(&sessions[0], &format!("l{n}"))).granted);
        assert_eq!(api.unlock(&sessions[0], &format!("l{n}")).status, 200);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            index_of(node, "SnapshotIndex"),
            snapshot,
            "compacted again after {} lock entries, a fraction of the snapshot's size in log",
            2 * (n + 1)
        );
    }
    // As many bytes of log as the snapshot holds, and up to 11/8 of it
    // (the node's stagger): compacted again. The live sessions (40, and
    // the extra ones) are the snapshot; each pair adds about one
    // session's worth of log.
    let live = sessions.len() + extra.len();
    let mut pairs = 0;
    let again = wait_for(Duration::from_secs(30), || {
        for _ in 0..10 {
            let session = api.open_session(&name, 60_000);
            assert_ok(&api.close(&session), "close");
        }
        pairs += 10;
        (index_of(node, "SnapshotIndex") > snapshot).then_some(pairs)
    });
    let Some(pairs) = again else {
        panic!("never compacted again as the log grew");
    };
    assert!(
        pairs >= live / 2,
        "compacted after {pairs} open/close pairs with {live} live sessions: too soon"
    );
    assert!(
        pairs <= 2 * live + 20,
        "compacted only after {pairs} open/close pairs with {live} live sessions"
    );
}

/// `kill -9` while four clients write through every node with the log
/// compacted every few entries (a snapshot considered every 100 ms): each
/// round first waits until the leader has compacted again since the last
/// round, so snapshots are being taken, sent and stored around every
/// kill. Twice the whole cluster is killed and every node must come back
/// from its snapshot (its snapshot index at least what it was before).
/// Afterwards every acknowledged answer is checked as in `api_locks`.
#[test]
fn acknowledged_state_survives_kill_9_during_writes_and_compactions() {
    const PLAN: &[Kill] = &[
        Kill::Leader,
        Kill::All,
        Kill::Leader,
        Kill::Leader,
        Kill::All,
    ];
    let mut cluster = Cluster::new("api-snapshots-churn", 3);
    for node in &mut cluster.nodes {
        node.extra_args = ["--expire", "100", "--snapshot", "100"]
            .map(String::from)
            .to_vec();
        node.env = vec![("TICKETD_COMPACT_ENTRIES".into(), "4".into())];
        node.start();
    }
    let _logs = LogsOnPanic::new(&cluster);
    cluster.wait_leader(Duration::from_secs(20));
    wait_followers_know_leader(&cluster, Duration::from_secs(20));
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.http()).collect();
    let workload = churn::Workload::start(&addrs, 4, 2);
    let seed = u64::from(std::process::id()) * 2_654_435_761;
    let snapshot_index = |node: &Node| status_of(node).map(|s| s.get("SnapshotIndex").u64());
    // The largest snapshot index seen on any node, and each node's just
    // before a whole-cluster kill.
    let mut compacted_to = 0;
    let before_all: std::cell::RefCell<Vec<u64>> = Default::default();
    let mut restarts_from_snapshot = 0;
    churn::kill_during_writes(
        &mut cluster,
        &workload,
        PLAN,
        seed,
        |cluster, round| {
            let leader = cluster.wait_leader_status(Duration::from_secs(30));
            let newer = wait_for(Duration::from_secs(30), || {
                snapshot_index(&cluster.nodes[leader]).filter(|i| *i > compacted_to)
            });
            let Some(newer) = newer else {
                panic!(
                    "round {round}: the leader never compacted past {compacted_to}\n{}",
                    cluster.logs()
                );
            };
            compacted_to = newer;
            if PLAN[round] == Kill::All {
                *before_all.borrow_mut() = cluster
                    .nodes
                    .iter()
                    .map(|n| snapshot_index(n).unwrap_or(0))
                    .collect();
            }
        },
        |cluster, round| {
            if PLAN[round] != Kill::All {
                return;
            }
            let before_all = before_all.borrow();
            for (i, node) in cluster.nodes.iter().enumerate() {
                let index = wait_for(Duration::from_secs(20), || snapshot_index(node));
                let index = index.unwrap_or_else(|| panic!("round {round}: no status from {i}"));
                assert!(
                    index > 0 && index >= before_all[i],
                    "round {round}: node {i} restarted with snapshot {index}, \
                     had {} before the kill\n{}",
                    before_all[i],
                    cluster.logs()
                );
            }
            restarts_from_snapshot += 1;
        },
    );
    let acknowledged = workload.stop();
    let minted = churn::check_history(&acknowledged)
        .unwrap_or_else(|e| panic!("{e} (seed {seed})\n{}", cluster.logs()));
    assert_eq!(restarts_from_snapshot, 2);

    wait_followers_know_leader(&cluster, Duration::from_secs(20));
    let api = Api::new(&cluster.nodes[follower_index(&cluster)].http());
    let checker = wait_for(Duration::from_secs(20), || {
        let path = "/api/v1/sessions?name=checker&ttl=600000";
        request_following("POST", &api.addr, path, b"")
            .filter(|r| r.status == 200)
            .and_then(|r| Json::parse(&r.body).ok())
            .map(|id| id.str().to_string())
    })
    .expect("a session after the churn");
    churn::check_state(&api, &acknowledged, &checker);
    let compactions: usize = cluster
        .nodes
        .iter()
        .map(|n| n.log().matches("compacted the log up to").count())
        .sum();
    eprintln!("{compactions} compactions logged");
    assert!(
        compactions >= PLAN.len(),
        "only {compactions} compactions logged ({minted} tokens and ids)"
    );
}

/// Compaction gives the disk back: the WAL segments below a snapshot are
/// deleted, so a node that wrote 1.6 MB of log in 256 KiB segments (a
/// 4 MiB map) keeps only the last few.
#[test]
fn compaction_deletes_the_wal_segments_below_the_snapshot() {
    let mut cluster = Cluster::new("wal-trim", 1);
    cluster.nodes[0].extra_args = ["--snapshot", "100", "--db_size", "4"]
        .map(String::from)
        .to_vec();
    cluster.nodes[0].env = vec![("TICKETD_COMPACT_ENTRIES".into(), "16".into())];
    cluster.nodes[0].start();
    let _logs = LogsOnPanic::new(&cluster);
    cluster.wait_leader(Duration::from_secs(20));
    let api = Api::new(&cluster.nodes[0].http());
    let holder = api.open_session("holder", 600_000);
    // Ticket data is at most 1,000 bytes a request.
    let data = vec![0x5a; 1000];
    for i in 0..1600 {
        assert_ok(
            &api.issue(&holder, "wal-trim", "t", &data),
            &format!("issue {i}"),
        );
    }
    let trimmed = wait_for(Duration::from_secs(20), || {
        let bytes = metric(&cluster.nodes[0].http(), "ticketd_storage_wal_bytes")?;
        (bytes <= 3 << 18).then_some(bytes)
    });
    assert!(
        trimmed.is_some(),
        "1.6 MB of log written, the WAL still holds {:?} bytes",
        metric(&cluster.nodes[0].http(), "ticketd_storage_wal_bytes")
    );
    assert!(index_of(&cluster.nodes[0], "SnapshotIndex") > 1000);
}
