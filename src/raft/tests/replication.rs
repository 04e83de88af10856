//! The leader's clock (check-quorum, the lease, abandoned transfers,
//! snapshot retries) and replication (`replication.rs`), pinned to the
//! tick where cargo-mutants found no test noticing a change.

use super::*;

#[test]
fn the_lease_ends_lease_ticks_after_the_quorums_last_answer_and_the_leadership_soon_after() {
    let cfg = config(1);
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let mut node = cluster.nodes.remove(&leader).unwrap();
    // Cut off from both followers from here on.
    assert_eq!(
        node.lease_ticks(),
        cfg.election_ticks_min - cfg.lease_margin_ticks
    );
    let acked = node.quorum_ack_tick();
    assert_eq!(node.lease_start(), Some(acked));
    assert!(acked + 2 >= node.now_tick(), "a quorum answered lately");
    let lease_end = acked + node.lease_ticks();
    let step_down = acked + cfg.election_ticks_min;
    while node.now_tick() < step_down + 2 {
        let now = node.now_tick();
        assert_eq!(node.lease_valid(), now < lease_end, "tick {now}");
        assert_eq!(node.role() == Role::Leader, now < step_down, "tick {now}");
        node.tick();
        flush(&mut node);
    }
}

#[test]
fn a_new_leader_has_an_election_timeout_to_hear_from_a_quorum() {
    // The followers' answers are all lost: the leader elected keeps
    // leading for exactly the minimum election timeout.
    let min = config(1).election_ticks_min;
    let answers = |m: &Message| matches!(m.body, MessageBody::AppendResponse { .. });
    let mut cluster = Cluster::new(3);
    let mut leader = None;
    for _ in 0..100 {
        cluster.tick_all();
        cluster.drain_dropping(answers);
        leader = cluster.leader();
        if leader.is_some() {
            break;
        }
    }
    let leader = leader.expect("a leader");
    let since = cluster.nodes[&leader].leader_since;
    loop {
        let node = &cluster.nodes[&leader];
        let now = node.now_tick();
        assert_eq!(node.role() == Role::Leader, now < since + min, "tick {now}");
        if now == since + min {
            break;
        }
        cluster.tick_all();
        cluster.drain_dropping(answers);
    }
}

#[test]
fn after_an_abandoned_transfer_answers_to_that_ticks_appends_do_not_renew_the_lease() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let target = follower_of(leader);
    let other = (1..=3).find(|id| *id != leader && *id != target).unwrap();
    cluster.nodes.remove(&target);
    // Begin right after a heartbeat, so the transfer ends (an election
    // timeout later) in a heartbeat tick too.
    for _ in 0..3 {
        if cluster.nodes[&leader].heartbeat_elapsed == 0 {
            break;
        }
        cluster.run(1);
    }
    assert_eq!(cluster.nodes[&leader].heartbeat_elapsed, 0);
    cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .transfer_leader(target)
        .unwrap();
    let mut abandoned = None;
    for _ in 0..2 * config(1).election_ticks_min {
        cluster.tick_all();
        if cluster.nodes[&leader].transfer.is_none() {
            abandoned = Some(cluster.nodes[&leader].now_tick());
            break;
        }
        cluster.drain();
    }
    let abandoned = abandoned.expect("the transfer is abandoned");
    // That tick's heartbeats (which still announced the transfer) are
    // answered: no lease from them.
    cluster.drain();
    let node = &cluster.nodes[&leader];
    assert_eq!(node.role(), Role::Leader);
    assert_eq!(node.progress[&other].lease_ack, abandoned);
    assert!(!node.lease_valid());
    // The next heartbeats no longer announce it: their answers count.
    cluster.run(config(1).heartbeat_ticks);
    assert!(cluster.nodes[&leader].lease_valid());
}

#[test]
fn an_unanswered_snapshot_is_sent_again_after_a_maximal_election_timeout() {
    let max = config(1).election_ticks_max;
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let lagging = follower_of(leader);
    // It goes away while the leader moves on and compacts past it.
    cluster.nodes.remove(&lagging);
    for i in 0..10u8 {
        cluster
            .nodes
            .get_mut(&leader)
            .unwrap()
            .propose(vec![i])
            .unwrap();
    }
    cluster.run(3);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let applied = node.applied_index();
    node.compact(applied, b"state".to_vec()).unwrap();
    let mut sent_at = Vec::new();
    for _ in 0..3 * max {
        cluster.tick_all();
        let now = cluster.nodes[&leader].now_tick();
        cluster.drain_dropping(|m| {
            if m.to == lagging && matches!(m.body, MessageBody::Snapshot { .. }) {
                sent_at.push(now);
            }
            false
        });
    }
    assert!(sent_at.len() >= 2, "{sent_at:?}");
    for pair in sent_at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (max..=max + config(1).heartbeat_ticks).contains(&gap),
            "snapshots sent at {sent_at:?}"
        );
    }
}

#[test]
fn a_follower_hears_of_a_commit_at_once_not_at_the_next_heartbeat() {
    // Two nodes: the follower's acknowledgement commits the entry, and the
    // leader's reaction to it carries the commit index back. (With more
    // followers, one whose acknowledgement comes after the commit hears of
    // it at the next heartbeat, which checks the log only where it is
    // known to match.)
    let mut cluster = Cluster::new(2);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let (_, index) = cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .propose(b"x".to_vec())
        .unwrap();
    // No tick, so no heartbeat.
    cluster.drain();
    for node in cluster.nodes.values() {
        assert_eq!(node.commit_index(), index, "node {}", node.id());
    }
}
