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
    cluster.propose_many(leader, 10);
    cluster.run(3);
    cluster.compact_applied(leader);
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
    // Given up on after `max` ticks, it is probed again (which finds its
    // match compacted: the snapshot again) at once or at the next
    // heartbeat.
    for pair in sent_at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (max..=max + config(1).heartbeat_ticks).contains(&gap),
            "snapshots sent at {sent_at:?}"
        );
    }
}

/// Ticks and drains `cluster` until `leader` sends a heartbeat: the tick
/// after that one sends none (heartbeats go every 2 ticks).
fn just_after_a_heartbeat(cluster: &mut Cluster, leader: NodeId) {
    for _ in 0..10 {
        cluster.tick_all();
        let mut sent = 0;
        cluster.drain_dropping(|m| {
            sent += u64::from(m.from == leader);
            false
        });
        if sent > 0 {
            return;
        }
    }
    panic!("no heartbeat in 10 ticks");
}

/// Drains `cluster`, counting what `leader` sends each node: (appends
/// with entries, appends without).
fn drain_counting(cluster: &mut Cluster, leader: NodeId) -> BTreeMap<NodeId, (u64, u64)> {
    let mut sent: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
    cluster.drain_dropping(|m| {
        if let (true, MessageBody::Append { entries, .. }) = (m.from == leader, &m.body) {
            let count = sent.entry(m.to).or_default();
            if entries.is_empty() {
                count.1 += 1;
            } else {
                count.0 += 1;
            }
        }
        false
    });
    sent
}

fn follower_commits(cluster: &Cluster, leader: NodeId) -> Vec<LogIndex> {
    cluster
        .nodes
        .values()
        .filter(|n| n.id() != leader)
        .map(|n| n.commit_index())
        .collect()
}

#[test]
fn a_commit_rides_on_the_next_append_and_costs_no_message_of_its_own() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    just_after_a_heartbeat(&mut cluster, leader);
    let propose = |cluster: &mut Cluster| {
        let node = cluster.nodes.get_mut(&leader).unwrap();
        node.propose(b"x".to_vec()).unwrap().1
    };
    let first = propose(&mut cluster);
    // No tick: one append per follower, and no message for the commit.
    let sent = drain_counting(&mut cluster, leader);
    assert_eq!(sent.values().copied().collect::<Vec<_>>(), vec![(1, 0); 2]);
    assert_eq!(cluster.nodes[&leader].commit_index(), first);
    assert!(
        follower_commits(&cluster, leader)
            .iter()
            .all(|&c| c < first)
    );
    // The next batch's append carries it.
    let second = propose(&mut cluster);
    let sent = drain_counting(&mut cluster, leader);
    assert_eq!(sent.values().copied().collect::<Vec<_>>(), vec![(1, 0); 2]);
    assert_eq!(follower_commits(&cluster, leader), vec![first; 2]);
    // Nothing follows: the next tick (no heartbeat's) tells them.
    cluster.tick_all();
    let sent = drain_counting(&mut cluster, leader);
    assert_eq!(sent.values().copied().collect::<Vec<_>>(), vec![(0, 1); 2]);
    assert_eq!(follower_commits(&cluster, leader), vec![second; 2]);
}

#[test]
fn a_follower_that_acknowledges_after_the_commit_hears_of_it_at_the_next_tick() {
    // Node `slow`'s answers are held back while `fast`'s commit the
    // entry: a message that tells it of the commit must come after its
    // acknowledgement, or it commits only what it was known to hold.
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let (slow, fast) = match leader {
        1 => (3, 2),
        2 => (3, 1),
        _ => (2, 1),
    };
    just_after_a_heartbeat(&mut cluster, leader);
    let (_, index) = cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .propose(b"x".to_vec())
        .unwrap();
    let mut held = Vec::new();
    let mut hold_slow = |cluster: &mut Cluster| {
        let mut to_slow = 0;
        cluster.drain_dropping(|m| {
            to_slow += u64::from(m.from == leader && m.to == slow);
            let lost = m.from == slow && m.to == leader;
            if lost {
                held.push(m.clone());
            }
            lost
        });
        to_slow
    };
    assert_eq!(hold_slow(&mut cluster), 1, "the entry's append");
    assert_eq!(cluster.nodes[&leader].commit_index(), index);
    // A tick without a heartbeat tells the fast follower, and nothing
    // goes to the slow one: it would commit no more than before.
    cluster.tick_all();
    assert_eq!(hold_slow(&mut cluster), 0);
    assert_eq!(cluster.nodes[&fast].commit_index(), index);
    assert_eq!(cluster.nodes[&slow].commit_index(), index - 1);
    // A heartbeat tick, still unanswered.
    cluster.tick_all();
    assert_eq!(hold_slow(&mut cluster), 1);
    assert_eq!(cluster.nodes[&slow].commit_index(), index - 1);
    // The answers arrive; the next tick (no heartbeat's) tells it.
    for message in std::mem::take(&mut held) {
        cluster.nodes.get_mut(&leader).unwrap().step(message);
    }
    cluster.drain();
    assert_eq!(cluster.nodes[&slow].commit_index(), index - 1);
    cluster.tick_all();
    cluster.drain();
    assert_eq!(cluster.nodes[&slow].commit_index(), index);
}

/// The hint in `node`'s refusal of an append after (`prev_index`,
/// `prev_term`) from node 1 in `term`.
fn refusal_hint(node: &mut Raft, term: Term, prev_index: LogIndex, prev_term: Term) -> (u64, u64) {
    node.step(message(
        1,
        2,
        term,
        append(prev_index, prev_term, vec![], 3),
    ));
    let answers = flush(node);
    match answers.as_slice() {
        [
            Message {
                to: 1,
                body:
                    MessageBody::AppendResponse {
                        success: false,
                        index,
                        hint_index,
                        hint_term,
                        ..
                    },
                ..
            },
        ] => {
            assert_eq!(*index, prev_index);
            (*hint_index, *hint_term)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_refusal_hints_at_the_first_index_of_the_conflicting_term_above_the_commit() {
    // Raft §5.3, the optimization at the end: log 1..=6 all of term 2,
    // committed up to 3.
    let mut node = follower_of_1();
    node.step(message(
        1,
        2,
        2,
        append(3, 2, (4..=6).map(|i| noop(i, 2)).collect(), 3),
    ));
    flush(&mut node);
    assert_eq!((node.last_index(), node.commit_index()), (6, 3));
    // Past our log: where it ends.
    assert_eq!(refusal_hint(&mut node, 2, 9, 2), (7, 0));
    // Term 2 reaches down to the commit index: the first index above it.
    assert_eq!(refusal_hint(&mut node, 3, 6, 3), (4, 2));

    // Log 1..=4 of term 2 (committed to 3), 5..=6 of term 3.
    let mut node = follower_of_1();
    node.step(message(1, 2, 2, append(3, 2, vec![noop(4, 2)], 3)));
    node.step(message(
        3,
        2,
        3,
        append(4, 2, vec![noop(5, 3), noop(6, 3)], 3),
    ));
    flush(&mut node);
    assert_eq!((node.last_index(), node.commit_index()), (6, 3));
    assert_eq!(refusal_hint(&mut node, 4, 6, 4), (5, 3));
    assert_eq!(refusal_hint(&mut node, 4, 5, 4), (5, 3));
    assert_eq!(refusal_hint(&mut node, 4, 4, 3), (4, 2));
}

#[test]
fn a_batch_is_pipelined_in_messages_of_max_append_entries() {
    let cfg = config(1);
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let follower = follower_of(leader);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let first = node.last_index() + 1;
    for i in 0..10u8 {
        node.propose(vec![i]).unwrap();
    }
    // In one Ready (one group commit), not spread over several.
    let ready = node.ready();
    node.advance();
    let sizes: Vec<(LogIndex, usize)> = ready
        .messages
        .into_iter()
        .filter(|m| m.to == follower)
        .filter_map(|m| match m.body {
            MessageBody::Append {
                prev_index,
                entries,
                ..
            } => Some((prev_index, entries.len())),
            _ => None,
        })
        .collect();
    // 10 entries, 4 per message, up to 4 messages in flight: all of them
    // go out at once.
    assert_eq!(cfg.max_append_entries, 4);
    assert_eq!(sizes, vec![(first - 1, 4), (first + 3, 4), (first + 7, 2)],);
}

/// Node 2 following leader 1 of term 2: entries 1..=6 of term 2,
/// committed up to 3, with the configuration `at4` (if any) at index 4.
fn follower_with_uncommitted_suffix(at4: Option<Membership>) -> Raft {
    let mut node = follower_of_1();
    let fourth = match at4 {
        Some(membership) => Entry {
            term: 2,
            index: 4,
            kind: EntryKind::Config,
            data: membership.encode(),
        },
        None => noop(4, 2),
    };
    let entries = vec![fourth, noop(5, 2), noop(6, 2)];
    node.step(message(1, 2, 2, append(3, 2, entries, 3)));
    flush(&mut node);
    assert_eq!((node.last_index(), node.commit_index()), (6, 3));
    node
}

#[test]
fn a_conflicting_uncommitted_suffix_is_replaced_by_the_new_leaders() {
    let mut node = follower_with_uncommitted_suffix(None);
    // Leader 3 of term 3 has entry 5 of its own term after 4.
    node.step(message(3, 2, 3, append(4, 2, vec![noop(5, 3)], 3)));
    let answers = flush(&mut node);
    assert_eq!(node.last_index(), 5);
    assert_eq!(node.log.term_at(4), Some(2));
    assert_eq!(node.log.term_at(5), Some(3));
    assert!(matches!(
        answers.as_slice(),
        [Message {
            body: MessageBody::AppendResponse {
                success: true,
                index: 5,
                ..
            },
            ..
        }]
    ));
}

#[test]
fn a_late_append_of_entries_we_hold_truncates_nothing() {
    // Acknowledged entries 5 and 6 must survive a reordered, older append
    // that carries only entry 4 (Raft §5.3: delete only on a conflict).
    let mut node = follower_with_uncommitted_suffix(None);
    node.step(message(1, 2, 2, append(3, 2, vec![noop(4, 2)], 3)));
    flush(&mut node);
    assert_eq!(node.last_index(), 6);
    assert_eq!(node.log.term_at(6), Some(2));
    // Entries at or below the commit index, sent again, change nothing
    // either.
    node.step(message(
        1,
        2,
        2,
        append(1, 2, vec![noop(2, 2), noop(3, 2)], 3),
    ));
    flush(&mut node);
    assert_eq!((node.last_index(), node.commit_index()), (6, 3));
}

#[test]
fn a_configuration_overwritten_by_a_new_leader_is_no_longer_in_force() {
    let mut with_4 = membership(3);
    with_4.members.insert(
        4,
        Member {
            voter: false,
            peer_addr: "p4".into(),
            http_addr: "h4".into(),
            incarnation: 0,
        },
    );
    let mut node = follower_with_uncommitted_suffix(Some(with_4));
    assert!(node.membership().contains(4));
    node.step(message(3, 2, 3, append(3, 2, vec![noop(4, 3)], 3)));
    flush(&mut node);
    assert_eq!(node.last_index(), 4);
    assert_eq!(node.membership(), &membership(3));
}

#[test]
fn a_lost_append_is_sent_again_when_an_answer_acknowledges_nothing_new() {
    // Two nodes, so the entry commits only once the follower has it.
    let mut cluster = Cluster::new(2);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let follower = follower_of(leader);
    let (_, index) = cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .propose(b"x".to_vec())
        .unwrap();
    cluster.drain_dropping(|m| {
        m.to == follower
            && matches!(&m.body, MessageBody::Append { entries, .. } if !entries.is_empty())
    });
    assert_eq!(cluster.nodes[&follower].last_index(), index - 1);
    // The next heartbeat's answer acknowledges nothing new: the leader
    // sends the entry again.
    cluster.run(2 * config(1).heartbeat_ticks);
    assert_eq!(cluster.nodes[&leader].commit_index(), index);
    assert_eq!(cluster.nodes[&follower].commit_index(), index);
}

#[test]
fn an_idle_leader_sends_one_heartbeat_per_follower_per_interval() {
    let cfg = config(1);
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let ticks = 10 * cfg.heartbeat_ticks;
    let mut sent: BTreeMap<NodeId, u64> = BTreeMap::new();
    for _ in 0..ticks {
        cluster.tick_all();
        cluster.drain_dropping(|m| {
            if m.from == leader {
                *sent.entry(m.to).or_default() += 1;
            }
            false
        });
    }
    let per_follower = ticks / cfg.heartbeat_ticks;
    assert_eq!(
        sent.values().copied().collect::<Vec<_>>(),
        vec![per_follower; 2]
    );
    assert_eq!(cluster.leader(), Some(leader));
}

#[test]
fn an_older_acknowledgement_does_not_end_a_snapshot_in_flight() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let lagging = follower_of(leader);
    let away = cluster.nodes.remove(&lagging).unwrap();
    let matched = cluster.nodes[&leader].progress[&lagging].match_index;
    cluster.propose_many(leader, 10);
    cluster.run(3);
    cluster.compact_applied(leader);
    // The next heartbeat finds its match compacted away: a snapshot.
    let mut snapshots = 0;
    for _ in 0..config(1).heartbeat_ticks {
        cluster.tick_all();
        cluster.drain_dropping(|m| {
            snapshots += usize::from(matches!(m.body, MessageBody::Snapshot { .. }));
            false
        });
    }
    assert_eq!(snapshots, 1);
    // A late answer to an append it got before it went away raises its
    // match, but not to the snapshot: no second snapshot goes out.
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let late = MessageBody::AppendResponse {
        success: true,
        index: matched + 1,
        hint_index: 0,
        hint_term: 0,
        lease_tick: node.now_tick(),
    };
    node.step(message(lagging, leader, node.term(), late));
    assert!(
        flush(node)
            .iter()
            .all(|m| !matches!(m.body, MessageBody::Snapshot { .. }))
    );
    drop(away);
}

#[test]
fn a_probe_answered_without_news_is_unpaused_for_the_next_entries() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let follower = follower_of(leader);
    // A late refusal puts the (caught-up) follower back into probing.
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let matched = node.progress[&follower].match_index;
    let refusal = MessageBody::AppendResponse {
        success: false,
        index: matched,
        hint_index: matched + 1,
        hint_term: 0,
        lease_tick: node.now_tick(),
    };
    node.step(message(follower, leader, node.term(), refusal));
    // The next heartbeat probes it; its answer acknowledges nothing new.
    cluster.run(config(1).heartbeat_ticks);
    // So the next entry goes to it at once, not at the next heartbeat.
    let (_, index) = cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .propose(b"x".to_vec())
        .unwrap();
    cluster.drain();
    assert_eq!(cluster.nodes[&follower].last_index(), index);
}

/// Node 1 of three with a log of entries 1.. of these terms (the last
/// term is its hard state's), made leader by node 2's votes: its no-op
/// follows them.
fn leader_with_log(terms: &[Term]) -> Raft {
    let term = *terms.last().unwrap();
    let persisted = Persisted {
        hard_state: HardState {
            term,
            vote: 0,
            commit: 0,
        },
        snapshot: Snapshot {
            meta: SnapshotMeta {
                index: 0,
                term: 0,
                membership: membership(3),
            },
            data: Vec::new(),
        },
        entries: terms
            .iter()
            .zip(1..)
            .map(|(term, index)| noop(index, *term))
            .collect(),
    };
    let mut node = Raft::new(config(1), persisted).unwrap();
    for _ in 0..config(1).election_ticks_max {
        node.tick();
        flush(&mut node);
        if node.role() == Role::PreCandidate {
            break;
        }
    }
    let grant = |pre| MessageBody::VoteResponse { pre, granted: true };
    node.step(message(2, 1, term + 1, grant(true)));
    node.step(message(2, 1, term + 1, grant(false)));
    assert_eq!(node.role(), Role::Leader);
    flush(&mut node);
    node
}

/// Where `leader` probes node 3 after it refused an append at `index`
/// with this hint: the first prev_index sent to it.
fn probe_after_refusal(leader: &mut Raft, index: LogIndex, hint: (LogIndex, Term)) -> LogIndex {
    let refusal = MessageBody::AppendResponse {
        success: false,
        index,
        hint_index: hint.0,
        hint_term: hint.1,
        lease_tick: leader.now_tick(),
    };
    leader.step(message(3, 1, leader.term(), refusal));
    let mut out = flush(leader);
    for _ in 0..config(1).heartbeat_ticks {
        if out.iter().any(|m| m.to == 3) {
            break;
        }
        leader.tick();
        out = flush(leader);
    }
    out.into_iter()
        .find_map(|m| match m.body {
            MessageBody::Append { prev_index, .. } if m.to == 3 => Some(prev_index),
            _ => None,
        })
        .expect("a probe to node 3")
}

#[test]
fn a_refusal_hint_of_a_term_moves_next_past_the_leaders_last_entry_of_it() {
    // Terms 1 1 2 2 3 3, then the leader's no-op of term 4 at 7.
    let log = [1, 1, 2, 2, 3, 3];
    // The leader has term 2 up to 4: probe after 4.
    assert_eq!(
        probe_after_refusal(&mut leader_with_log(&log), 7, (3, 2)),
        4
    );
    assert_eq!(
        probe_after_refusal(&mut leader_with_log(&log), 7, (1, 1)),
        2
    );
    // Looked for only at or below the refused index.
    assert_eq!(
        probe_after_refusal(&mut leader_with_log(&log), 5, (5, 3)),
        4
    );
    // No term 2½ here: the follower's own first index of it.
    let mut skipped = leader_with_log(&[1, 1, 3, 3]);
    assert_eq!(probe_after_refusal(&mut skipped, 5, (3, 2)), 2);
    // A hint without a term is the follower's log end.
    assert_eq!(
        probe_after_refusal(&mut leader_with_log(&log), 7, (4, 0)),
        3
    );
}

#[test]
fn a_refusal_never_moves_next_to_or_below_the_match_index() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let follower = follower_of(leader);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let matched = node.progress[&follower].match_index;
    assert!(matched >= 2);
    let refusal = MessageBody::AppendResponse {
        success: false,
        index: matched,
        hint_index: 1,
        hint_term: 0,
        lease_tick: node.now_tick(),
    };
    node.step(message(follower, leader, node.term(), refusal));
    let mut probe = None;
    for _ in 0..=config(1).heartbeat_ticks {
        probe = flush(node).into_iter().find_map(|m| match m.body {
            MessageBody::Append { prev_index, .. } if m.to == follower => Some(prev_index),
            _ => None,
        });
        if probe.is_some() {
            break;
        }
        node.tick();
    }
    assert_eq!(probe, Some(matched));
}

#[test]
fn a_stale_refusal_changes_nothing() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let follower = follower_of(leader);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let matched = node.progress[&follower].match_index;
    let refusal = MessageBody::AppendResponse {
        success: false,
        index: matched - 1,
        hint_index: 1,
        hint_term: 0,
        lease_tick: node.now_tick(),
    };
    node.step(message(follower, leader, node.term(), refusal));
    assert!(flush(node).is_empty());
    // Still pipelining to it: a batch goes out in several messages.
    for i in 0..10u8 {
        node.propose(vec![i]).unwrap();
    }
    let appends = flush(node)
        .into_iter()
        .filter(|m| m.to == follower && matches!(m.body, MessageBody::Append { .. }))
        .count();
    assert_eq!(appends, 3);
}

#[test]
fn a_full_window_of_lost_appends_is_recovered_and_so_is_a_later_loss() {
    let mut cluster = Cluster::new(2);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let follower = follower_of(leader);
    let lose_entries = |m: &Message| {
        m.to == follower
            && matches!(&m.body, MessageBody::Append { entries, .. } if !entries.is_empty())
    };
    for round in 0..2 {
        let node = cluster.nodes.get_mut(&leader).unwrap();
        let mut index = 0;
        // 16 entries: 4 messages of 4, the whole window, all lost.
        for i in 0..16u8 {
            index = node.propose(vec![i]).unwrap().1;
        }
        cluster.drain_dropping(lose_entries);
        assert!(cluster.nodes[&follower].last_index() < index);
        cluster.run(4 * config(1).heartbeat_ticks);
        assert_eq!(
            cluster.nodes[&follower].commit_index(),
            index,
            "round {round}"
        );
        cluster.run(10);
    }
}

fn with_learner_4() -> Membership {
    let mut members = membership(3);
    members.members.insert(
        4,
        Member {
            voter: false,
            peer_addr: "p4".into(),
            http_addr: "h4".into(),
            incarnation: 0,
        },
    );
    members
}

#[test]
fn a_restarted_node_takes_its_membership_from_the_last_configuration_in_its_log() {
    let config_entry = |index, members: &Membership| Entry {
        term: 1,
        index,
        kind: EntryKind::Config,
        data: members.encode(),
    };
    let persisted = Persisted {
        hard_state: HardState {
            term: 1,
            vote: 0,
            commit: 2,
        },
        snapshot: Snapshot {
            meta: SnapshotMeta {
                index: 0,
                term: 0,
                membership: membership(3),
            },
            data: Vec::new(),
        },
        entries: vec![
            noop(1, 1),
            config_entry(2, &with_learner_4()),
            noop(3, 1),
            Entry {
                term: 1,
                index: 4,
                kind: EntryKind::Normal,
                data: membership(5).encode(),
            },
        ],
    };
    let node = Raft::new(config(2), persisted).unwrap();
    assert_eq!(node.membership(), &with_learner_4());
    assert_eq!(node.membership_index, 2);
}

#[test]
fn a_snapshot_records_the_membership_in_force_at_its_index() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let (_, added) = node
        .propose_conf_change(ConfChange::AddLearner {
            id: 4,
            peer_addr: "p4".into(),
            http_addr: "h4".into(),
        })
        .unwrap();
    node.propose(b"after".to_vec()).unwrap();
    cluster.run(3);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    assert_eq!(
        node.snapshot_meta(added - 1).unwrap().membership,
        membership(3)
    );
    let applied = node.applied_index();
    assert!(applied > added);
    node.compact(applied, b"state".to_vec()).unwrap();
    let recorded = &node.snapshot().meta.membership;
    assert!(
        recorded.contains(4) && !recorded.is_voter(4),
        "{recorded:?}"
    );
}

#[test]
fn proposals_and_answers_stepped_before_a_ready_share_one_append_per_follower() {
    // The driver steps everything queued before it builds a `Ready`: a
    // proposal, an answer, another proposal, another answer. The
    // answers must not each send what was proposed so far.
    let (mut cluster, leader, followers) = leader_of_three();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let (term, first) = node.propose(b"a".to_vec()).unwrap();
    let ready = node.ready();
    node.advance();
    assert_eq!(ready.messages.len(), 2, "one append per follower");
    for &from in &followers {
        node.propose(b"b".to_vec()).unwrap();
        let now = node.now_tick();
        node.step(message(from, leader, term, acknowledgement(first, now)));
    }
    assert_eq!(node.commit_index(), first);
    let ready = node.ready();
    node.advance();
    let mut appends: BTreeMap<NodeId, Vec<LogIndex>> = BTreeMap::new();
    for m in &ready.messages {
        if let MessageBody::Append { entries, .. } = &m.body {
            let indexes = entries.iter().map(|e| e.index).collect();
            assert!(
                appends.insert(m.to, indexes).is_none(),
                "a second append to {}",
                m.to
            );
        }
    }
    let both = vec![first + 1, first + 2];
    assert_eq!(
        appends,
        followers.iter().map(|&f| (f, both.clone())).collect()
    );
}

/// A three-node cluster with a leader: (the cluster, the leader, its
/// followers).
fn leader_of_three() -> (Cluster, NodeId, Vec<NodeId>) {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let followers = (1..=3).filter(|&id| id != leader).collect();
    (cluster, leader, followers)
}

/// A follower's acknowledgement of the leader's log up to `index`.
fn acknowledgement(index: LogIndex, lease_tick: u64) -> MessageBody {
    MessageBody::AppendResponse {
        success: true,
        index,
        hint_index: 0,
        hint_term: 0,
        lease_tick,
    }
}

#[test]
fn an_answer_that_opens_a_full_window_sends_the_rest_with_the_next_ready() {
    // 20 entries, a window of 4 messages of 4: 4 wait. The second
    // follower's answer commits nothing new (the first's did), so only
    // the open window says there is work for a `Ready`.
    let (mut cluster, leader, followers) = leader_of_three();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let term = node.term();
    let first = node.last_index() + 1;
    for i in 0..20u8 {
        node.propose(vec![i]).unwrap();
    }
    let ready = node.ready();
    node.advance();
    assert_eq!(ready.messages.len(), 8, "a full window per follower");
    assert!(!node.has_ready());
    for &from in &followers {
        let now = node.now_tick();
        node.step(message(from, leader, term, acknowledgement(first + 3, now)));
        assert!(node.has_ready(), "after {from}'s answer");
        let ready = node.ready();
        node.advance();
        let rest: Vec<LogIndex> = ready
            .messages
            .iter()
            .filter(|m| m.to == from)
            .flat_map(|m| match &m.body {
                MessageBody::Append { entries, .. } => entries.iter().map(|e| e.index).collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(rest, (first + 16..first + 20).collect::<Vec<_>>());
    }
}

#[test]
fn a_commit_an_append_already_carried_gets_no_heartbeat_at_the_tick() {
    // x is committed, the followers not told; y's append carries x's
    // commit. A tick before y is answered has nothing to tell anyone.
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    just_after_a_heartbeat(&mut cluster, leader);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let (_, x) = node.propose(b"x".to_vec()).unwrap();
    drain_counting(&mut cluster, leader);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    assert_eq!(node.commit_index(), x);
    node.propose(b"y".to_vec()).unwrap();
    let ready = node.ready();
    node.advance();
    assert!(ready.messages.iter().all(|m| matches!(
        &m.body,
        MessageBody::Append { entries, commit, .. } if entries.len() == 1 && *commit == x
    )));
    node.tick();
    assert!(
        flush(node).is_empty(),
        "no heartbeat for a commit already sent"
    );
}
