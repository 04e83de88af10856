//! Proposals, one change at a time, departing members and transfers
//! (`membership.rs`), pinned where cargo-mutants found no test noticing
//! a change.

use super::*;

fn learner(id: NodeId) -> ConfChange {
    ConfChange::AddLearner {
        id,
        peer_addr: format!("p{id}"),
        http_addr: format!("h{id}"),
    }
}

#[test]
fn a_change_names_its_member() {
    for change in [
        learner(7),
        ConfChange::Promote { id: 7 },
        ConfChange::Remove { id: 7 },
        ConfChange::SetAttributes {
            id: 7,
            http_addr: "h7".into(),
            incarnation: 1,
        },
    ] {
        assert_eq!(change.id(), 7, "{change:?}");
    }
}

#[test]
fn only_a_leader_not_handing_over_takes_proposals() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let follower = follower_of(leader);
    let node = cluster.nodes.get_mut(&follower).unwrap();
    let last = node.last_index();
    assert_eq!(
        node.propose(b"x".to_vec()),
        Err(ProposeError::NotLeader { leader })
    );
    assert_eq!(
        node.propose_conf_change(learner(4)),
        Err(ProposeError::NotLeader { leader })
    );
    assert_eq!(node.last_index(), last);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.transfer_leader(follower).unwrap();
    let last = node.last_index();
    assert_eq!(node.propose(b"x".to_vec()), Err(ProposeError::Transferring));
    assert_eq!(
        node.propose_conf_change(learner(4)),
        Err(ProposeError::Transferring)
    );
    assert_eq!(node.last_index(), last);
}

#[test]
fn one_configuration_change_at_a_time() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let (_, index) = node.propose_conf_change(learner(4)).unwrap();
    assert_eq!(
        node.propose_conf_change(learner(5)),
        Err(ProposeError::ConfChangePending)
    );
    assert_eq!(node.last_index(), index);
    cluster.run(3);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    assert!(node.commit_index() >= index);
    node.propose_conf_change(learner(5)).unwrap();
}

#[test]
fn a_voter_silent_for_the_minimum_election_timeout_counts_as_unreachable() {
    // As in a_change_that_would_leave_no_reachable_quorum_is_refused, but
    // at the boundary: heard `silent` ticks ago, `dead` still counts as
    // reachable (so removing `live` is allowed) only while `silent` is
    // under the minimum election timeout.
    let min = config(1).election_ticks_min;
    for (silent, allowed) in [(min - 1, true), (min, false)] {
        let (mut cluster, leader) = cluster_with_ten_entries();
        let others: Vec<NodeId> = (1..=3).filter(|id| *id != leader).collect();
        let (dead, live) = (others[0], others[1]);
        cluster.nodes.remove(&dead);
        for _ in 0..silent {
            let node = &cluster.nodes[&leader];
            if node.now - node.progress[&dead].lease_ack >= silent {
                break;
            }
            cluster.run(1);
        }
        let node = cluster.nodes.get_mut(&leader).unwrap();
        assert_eq!(node.now - node.progress[&dead].lease_ack, silent);
        let answer = node.propose_conf_change(ConfChange::Remove { id: live });
        assert_eq!(answer.is_ok(), allowed, "silent {silent}: {answer:?}");
    }
}

#[test]
fn a_new_member_is_probed_from_the_end_of_the_leaders_log() {
    // Raft §5.3: nextIndex starts just after the leader's last entry,
    // here the configuration entry that added the member.
    let (mut cluster, leader) = cluster_with_ten_entries();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let (term, index) = node.propose_conf_change(learner(4)).unwrap();
    // The first message to it (a probe, which goes out on a heartbeat).
    let mut to_4: Vec<Message> = Vec::new();
    for _ in 0..=config(1).heartbeat_ticks {
        to_4.extend(flush(node).into_iter().filter(|m| m.to == 4));
        if !to_4.is_empty() {
            break;
        }
        node.tick();
    }
    assert!(
        matches!(
            to_4.as_slice(),
            [Message {
                body: MessageBody::Append { prev_index, prev_term, entries, .. },
                ..
            }] if *prev_index == index && *prev_term == term && entries.is_empty()
        ),
        "{to_4:?}"
    );
}

#[test]
fn only_a_removed_member_is_departing() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.propose_conf_change(learner(4)).unwrap();
    assert!(node.departing().is_empty());
    cluster.run(3);
    let removed = follower_of(leader);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.propose_conf_change(ConfChange::Remove { id: removed })
        .unwrap();
    assert_eq!(node.departing(), vec![removed]);
}

#[test]
fn a_silent_removed_member_is_given_up_after_four_maximal_election_timeouts() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let removed = follower_of(leader);
    cluster.nodes.remove(&removed);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.propose_conf_change(ConfChange::Remove { id: removed })
        .unwrap();
    // The commit index moves on past the removal.
    node.propose(b"after".to_vec()).unwrap();
    let committed_tick = (0..10)
        .find_map(|_| {
            cluster.run(1);
            cluster.nodes[&leader].progress[&removed].removal_committed_tick
        })
        .expect("the leader sees its removal committed");
    let give_up = committed_tick + 4 * config(1).election_ticks_max;
    while cluster.nodes[&leader].now < give_up {
        assert_eq!(cluster.nodes[&leader].departing(), vec![removed]);
        cluster.run(1);
    }
    assert_eq!(cluster.nodes[&leader].role(), Role::Leader);
    assert!(cluster.nodes[&leader].departing().is_empty());
}

#[test]
fn a_removed_member_is_forgotten_once_it_answered_an_append_sent_after_the_commit() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let removed = follower_of(leader);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let (_, index) = node
        .propose_conf_change(ConfChange::Remove { id: removed })
        .unwrap();
    cluster.drain();
    assert!(cluster.nodes[&leader].commit_index() >= index);
    assert!(cluster.nodes[&leader].progress[&removed].match_index >= index);
    // Its answers are lost until the leader has seen the commit, and then
    // all but those to the appends sent in that very tick (which may
    // predate the commit, as far as the rule knows).
    let answers_from_removed = |m: &Message| m.from == removed;
    let committed_tick = (0..10)
        .find_map(|_| {
            cluster.tick_all();
            let seen = cluster.nodes[&leader].progress[&removed].removal_committed_tick;
            if seen.is_none() {
                cluster.drain_dropping(answers_from_removed);
            }
            seen
        })
        .expect("the leader sees the removal committed");
    let not_that_tick = |m: &Message| {
        m.from == removed
            && !matches!(m.body, MessageBody::AppendResponse { lease_tick, .. } if lease_tick == committed_tick)
    };
    cluster.drain_dropping(not_that_tick);
    for _ in 0..10 {
        cluster.tick_all();
        cluster.drain_dropping(not_that_tick);
        assert_eq!(cluster.nodes[&leader].departing(), vec![removed]);
    }
    // Heard again: forgotten within a couple of heartbeats.
    cluster.run(6);
    assert!(cluster.nodes[&leader].departing().is_empty());
}

#[test]
fn a_late_append_from_a_removed_leader_is_dropped_once_the_removal_is_committed() {
    // Leader 1 of term 2 removed itself (after handing over, the new
    // leader removes it; here the removal arrives from 1 itself, which a
    // leader may still send before it steps down).
    let mut node = fresh(2, 3);
    let mut without_1 = membership(3);
    without_1.members.remove(&1);
    let removal = Entry {
        term: 2,
        index: 2,
        kind: EntryKind::Config,
        data: without_1.encode(),
    };
    node.step(message(1, 2, 2, append(0, 0, vec![noop(1, 2), removal], 1)));
    flush(&mut node);
    assert!(!node.membership().contains(1));
    // Uncommitted, 1 is still heard (it may yet lead, were the removal
    // overwritten) ...
    node.step(message(1, 2, 2, append(2, 2, vec![], 1)));
    assert_eq!(flush(&mut node).len(), 1);
    // ... committed, nothing it sends matters any more.
    node.step(message(1, 2, 2, append(2, 2, vec![], 2)));
    flush(&mut node);
    assert_eq!(node.commit_index(), 2);
    node.step(message(1, 2, 2, append(2, 2, vec![], 2)));
    assert!(flush(&mut node).is_empty());
}

#[test]
fn a_second_transfer_to_another_target_replaces_the_first() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let mut others = (1..=3).filter(|id| *id != leader);
    let (first, second) = (others.next().unwrap(), others.next().unwrap());
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.transfer_leader(first).unwrap();
    flush(node);
    node.transfer_leader(second).unwrap();
    assert_eq!(node.transfer.map(|(to, _)| to), Some(second));
    let sent = flush(node);
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|m| matches!(
        m.body,
        MessageBody::Append { transfer_to, .. } if transfer_to == second
    )));
    cluster.run(10);
    assert_eq!(cluster.leader(), Some(second));
}

#[test]
fn answers_to_appends_sent_in_the_tick_a_transfer_began_do_not_count_as_heard() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let target = follower_of(leader);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.transfer_leader(target).unwrap();
    // Deliver the announcement (stamped with the tick the transfer began)
    // and its answers, without a tick.
    let sent = flush(node);
    let mut answers = Vec::new();
    for m in sent {
        let follower = cluster.nodes.get_mut(&m.to).unwrap();
        follower.step(m);
        answers.extend(flush(follower));
    }
    let node = cluster.nodes.get_mut(&leader).unwrap();
    for m in answers {
        node.step(m);
    }
    assert!(
        flush(node)
            .iter()
            .all(|m| !matches!(m.body, MessageBody::TimeoutNow))
    );
    assert!(!node.lease_revoked);
    // The next round of appends is heard: TimeoutNow goes out.
    cluster.run(5);
    assert_eq!(cluster.leader(), Some(target));
}

#[test]
fn a_learner_of_the_first_configuration_is_promoted_by_the_first_leader() {
    // Voters 1..=3 and learner 4 from the start: once the leader's no-op
    // is committed (the commit index then is the term's first entry, and
    // past the configuration, which is the snapshot's) and the learner
    // holds it, the learner is promoted.
    let mut members = membership(3);
    members.members.insert(
        4,
        Member {
            voter: false,
            peer_addr: "p4".into(),
            http_addr: "h4".into(),
            incarnation: 4,
        },
    );
    let mut nodes = BTreeMap::new();
    for id in 1..=4 {
        let persisted = Persisted {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 0,
                    term: 0,
                    membership: members.clone(),
                },
                data: Vec::new(),
            },
            ..Persisted::default()
        };
        nodes.insert(id, Raft::new(config(id), persisted).unwrap());
    }
    let mut cluster = Cluster {
        nodes,
        applied: BTreeMap::new(),
        wire: VecDeque::new(),
    };
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    assert_ne!(leader, 4);
    for node in cluster.nodes.values() {
        assert!(node.membership().is_voter(4), "node {}", node.id());
    }
}

#[test]
fn a_learner_is_promoted_only_once_it_holds_the_commit_index() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    // Node 4 is added but never runs: it never catches up.
    node.propose_conf_change(learner(4)).unwrap();
    cluster.run(40);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    assert!(node.membership().contains(4));
    assert!(!node.membership().is_voter(4));
    // Nor is a voter promoted again.
    let voter = follower_of(leader);
    assert!(matches!(
        node.propose_conf_change(ConfChange::Promote { id: voter }),
        Err(ProposeError::BadConfChange(_))
    ));
}
