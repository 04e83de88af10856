//! Smoke tests of the core through a tiny in-memory cluster (the full
//! randomized simulator lives in `tests/sim`).

use std::collections::{BTreeMap, VecDeque};

use super::*;

fn membership(n: u64) -> Membership {
    let mut m = Membership::default();
    for id in 1..=n {
        m.members.insert(
            id,
            Member {
                voter: true,
                peer_addr: format!("p{id}"),
                http_addr: format!("h{id}"),
                incarnation: id,
            },
        );
    }
    m
}

fn config(id: NodeId) -> Config {
    Config {
        id,
        election_ticks_min: 10,
        election_ticks_max: 20,
        heartbeat_ticks: 2,
        lease_margin_ticks: 2,
        max_append_entries: 4,
        max_append_bytes: 1 << 20,
        max_inflight: 4,
        seed: id * 7919,
    }
}

struct Cluster {
    nodes: BTreeMap<NodeId, Raft>,
    applied: BTreeMap<NodeId, Vec<Entry>>,
    wire: VecDeque<Message>,
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let persisted = Persisted {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: 0,
                        term: 0,
                        membership: membership(n),
                    },
                    data: Vec::new(),
                },
                ..Persisted::default()
            };
            nodes.insert(id, Raft::new(config(id), persisted).unwrap());
        }
        Cluster {
            nodes,
            applied: BTreeMap::new(),
            wire: VecDeque::new(),
        }
    }

    fn drain(&mut self) {
        for _ in 0..10_000 {
            for (id, node) in self.nodes.iter_mut() {
                while node.has_ready() {
                    let ready = node.ready();
                    self.wire.extend(ready.messages);
                    self.applied.entry(*id).or_default().extend(
                        ready
                            .committed
                            .into_iter()
                            .filter(|e| e.kind == EntryKind::Normal),
                    );
                    node.advance();
                }
            }
            let Some(message) = self.wire.pop_front() else {
                return;
            };
            if let Some(node) = self.nodes.get_mut(&message.to) {
                node.step(message);
            }
        }
        panic!("messages never settle");
    }

    fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            for node in self.nodes.values_mut() {
                node.tick();
            }
            self.drain();
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .find(|n| n.role() == Role::Leader)
            .map(|n| n.id())
    }
}

#[test]
fn one_node_elects_itself_and_commits() {
    let mut cluster = Cluster::new(1);
    cluster.run(30);
    assert_eq!(cluster.leader(), Some(1));
    let node = cluster.nodes.get_mut(&1).unwrap();
    assert!(node.lease_valid());
    node.propose(b"a".to_vec()).unwrap();
    cluster.drain();
    assert_eq!(cluster.applied[&1].len(), 1);
}

#[test]
fn three_nodes_replicate_and_survive_a_leader_loss() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().expect("a leader");
    for i in 0..20u8 {
        cluster
            .nodes
            .get_mut(&leader)
            .unwrap()
            .propose(vec![i])
            .unwrap();
    }
    cluster.run(5);
    for id in 1..=3 {
        assert_eq!(cluster.applied[&id].len(), 20, "node {id}");
    }
    assert!(cluster.nodes[&leader].lease_valid());
    cluster.nodes.remove(&leader);
    cluster.run(60);
    let next = cluster.leader().expect("a new leader");
    assert_ne!(next, leader);
    cluster
        .nodes
        .get_mut(&next)
        .unwrap()
        .propose(vec![99])
        .unwrap();
    cluster.run(5);
    for (id, applied) in &cluster.applied {
        if *id != leader {
            assert_eq!(applied.len(), 21, "node {id}");
        }
    }
}

#[test]
fn transfer_hands_over_and_revokes_the_lease() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let target = if leader == 1 { 2 } else { 1 };
    cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .transfer_leader(target)
        .unwrap();
    assert!(!cluster.nodes[&leader].lease_valid());
    cluster.run(5);
    assert_eq!(cluster.leader(), Some(target));
}

/// Three nodes whose leader has committed and applied ten proposals.
fn cluster_with_ten_entries() -> (Cluster, NodeId) {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    for i in 0..10u8 {
        cluster
            .nodes
            .get_mut(&leader)
            .unwrap()
            .propose(vec![i])
            .unwrap();
    }
    cluster.run(3);
    (cluster, leader)
}

#[test]
fn a_learner_catches_up_from_a_snapshot_and_is_promoted() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let applied = node.applied_index();
    node.compact(applied, b"state".to_vec()).unwrap();
    node.propose_conf_change(ConfChange::AddLearner {
        id: 4,
        peer_addr: "p4".into(),
        http_addr: "h4".into(),
    })
    .unwrap();
    cluster
        .nodes
        .insert(4, Raft::new(config(4), Persisted::default()).unwrap());
    cluster.run(20);
    let learner = &cluster.nodes[&4];
    assert_eq!(learner.snapshot().data, b"state".to_vec());
    assert!(cluster.nodes[&leader].membership().is_voter(4));
    assert_eq!(
        learner.commit_index(),
        cluster.nodes[&leader].commit_index()
    );
}

#[test]
fn a_follower_cut_off_while_the_log_was_compacted_comes_back_by_snapshot() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let lagging = if leader == 1 { 2 } else { 1 };
    let propose = |cluster: &mut Cluster, byte: u8| {
        let node = cluster.nodes.get_mut(&leader).unwrap();
        node.propose(vec![byte]).unwrap();
    };
    propose(&mut cluster, 0);
    cluster.run(3);
    // Cut off (messages to it are lost) while the leader moves on and
    // compacts away everything the follower has.
    let away = cluster.nodes.remove(&lagging).unwrap();
    for i in 1..10u8 {
        propose(&mut cluster, i);
    }
    cluster.run(3);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let applied = node.applied_index();
    node.compact(applied, b"state".to_vec()).unwrap();
    assert!(applied > away.commit_index() + 1);
    cluster.nodes.insert(lagging, away);
    cluster.run(60);
    assert_eq!(cluster.leader(), Some(leader));
    let back = &cluster.nodes[&lagging];
    assert_eq!(back.snapshot().data, b"state".to_vec());
    assert_eq!(back.commit_index(), cluster.nodes[&leader].commit_index());
}

#[test]
fn a_leader_writing_asynchronously_counts_itself_only_once_persisted() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let others: Vec<NodeId> = (1..=3).filter(|id| *id != leader).collect();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let (term, index) = node.propose(b"x".to_vec()).unwrap();
    let mut ready = node.ready();
    assert!(ready.may_write_async());
    let appends = ready.take_early_messages();
    assert_eq!(appends.len(), 2);
    assert!(node.advance_async());
    // The write is in progress: nothing more to hand out for it.
    assert!(node.ready().entries.is_empty());
    node.advance();
    // One follower acknowledges: with the leader's own write still in
    // progress that is one disk of three, no commit.
    let first = appends.iter().find(|m| m.to == others[0]).unwrap().clone();
    let follower = cluster.nodes.get_mut(&others[0]).unwrap();
    follower.step(first);
    let reply = follower.ready();
    follower.advance();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    for message in reply.messages {
        node.step(message);
    }
    assert_eq!(node.commit_index(), index - 1);
    // Its own write lands: two disks of three, committed.
    node.persisted(index, term);
    assert_eq!(node.commit_index(), index);
    // A persisted() for an entry the log no longer has is ignored.
    node.persisted(index + 5, term);
    assert_eq!(node.commit_index(), index);
}

#[test]
fn a_failed_asynchronous_write_is_handed_out_again() {
    let mut cluster = Cluster::new(1);
    cluster.run(30);
    let node = cluster.nodes.get_mut(&1).unwrap();
    let (_, index) = node.propose(b"x".to_vec()).unwrap();
    let ready = node.ready();
    assert_eq!(ready.entries.last().map(|e| e.index), Some(index));
    assert!(node.advance_async());
    assert!(!node.has_ready());
    node.write_failed();
    let again = node.ready();
    assert_eq!(again.entries.last().map(|e| e.index), Some(index));
    node.advance();
    assert_eq!(node.commit_index(), index);
}

#[test]
fn after_a_failed_write_a_leader_may_have_applied_past_its_disk() {
    // The driver must not compact to `applied` then (the disk lacks the
    // entry): it compares with `stable_index`.
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let on_disk = node.stable_index();
    let (_, index) = node.propose(b"x".to_vec()).unwrap();
    let mut ready = node.ready();
    let appends = ready.take_early_messages();
    assert!(node.advance_async());
    let mut replies = Vec::new();
    for message in appends {
        let follower = cluster.nodes.get_mut(&message.to).unwrap();
        follower.step(message);
        replies.extend(follower.ready().messages);
        follower.advance();
    }
    let node = cluster.nodes.get_mut(&leader).unwrap();
    for message in replies {
        node.step(message);
    }
    // Committed by the followers alone; the driver applies it.
    assert_eq!(node.commit_index(), index);
    let ready = node.ready();
    assert_eq!(ready.committed.last().map(|e| e.index), Some(index));
    assert!(node.advance_async());
    node.write_failed();
    assert_eq!(node.applied_index(), index);
    assert_eq!(node.stable_index(), on_disk);
    // The entry is handed out again for writing.
    let again = node.ready();
    assert_eq!(again.entries.first().map(|e| e.index), Some(on_disk + 1));
}

#[test]
fn a_snapshot_built_elsewhere_compacts_unless_a_newer_one_came_first() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let applied = node.applied_index();
    let early = node.snapshot_meta(applied - 2).unwrap();
    let late = node.snapshot_meta(applied).unwrap();
    assert_eq!(late.membership, node.membership().clone());
    assert_eq!(
        node.snapshot_meta(applied + 1),
        Err(CompactError::NotApplied)
    );
    // A meta that no longer says what the log does is refused.
    let mut wrong = late.clone();
    wrong.term += 1;
    let refused = node.compact_to(Snapshot {
        meta: wrong,
        data: b"x".to_vec(),
    });
    assert_eq!(refused, Err(CompactError::Mismatch));
    node.compact_to(Snapshot {
        meta: late,
        data: b"late".to_vec(),
    })
    .unwrap();
    assert_eq!(node.snapshot().meta.index, applied);
    // The earlier one, finished after, must not move the snapshot back.
    let stale = node.compact_to(Snapshot {
        meta: early,
        data: b"early".to_vec(),
    });
    assert_eq!(stale, Err(CompactError::AlreadyCompacted));
    assert_eq!(node.snapshot().data, b"late".to_vec());
}

/// A follower of `leader` (the smallest id that is not the leader).
fn follower_of(leader: NodeId) -> NodeId {
    if leader == 1 { 2 } else { 1 }
}

#[test]
fn node_ids_are_never_reused_after_a_removal() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    // Remove the highest member that is not the leader.
    let highest = (1..=3).rev().find(|id| *id != leader).unwrap();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.propose_conf_change(ConfChange::Remove { id: highest })
        .unwrap();
    cluster.run(3);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    assert!(!node.membership().contains(highest));
    assert_eq!(node.membership().max_id(), 3);
    // Its id may not come back, neither as the largest id + 1 of the
    // members left, nor asked for explicitly.
    for id in [highest, 1, 2, 3] {
        if node.membership().contains(id) {
            continue;
        }
        let refused = node.propose_conf_change(ConfChange::AddLearner {
            id,
            peer_addr: "new".into(),
            http_addr: "new".into(),
        });
        assert!(
            matches!(refused, Err(ProposeError::BadConfChange(_))),
            "id {id}: {refused:?}"
        );
    }
    node.propose_conf_change(ConfChange::AddLearner {
        id: 4,
        peer_addr: "p4".into(),
        http_addr: "h4".into(),
    })
    .unwrap();
    cluster.run(3);
    // The mark travels with the configuration to every member.
    for (id, node) in &cluster.nodes {
        if node.membership().contains(*id) {
            assert_eq!(node.membership().max_id(), 4, "node {id}");
        }
    }
}

#[test]
fn a_removed_follower_receives_its_removal_and_stops_campaigning() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let removed = (1..=3).find(|id| *id != leader).unwrap();
    let (_, index) = cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .propose_conf_change(ConfChange::Remove { id: removed })
        .unwrap();
    assert!(cluster.nodes[&leader].departing().contains(&removed));
    cluster.run(3);
    let node = &cluster.nodes[&removed];
    assert!(!node.membership().contains(removed));
    assert!(
        node.commit_index() >= index,
        "commit {}",
        node.commit_index()
    );
    // Once it has heard the removal is committed, the leader forgets it.
    cluster.run(10);
    assert!(cluster.nodes[&leader].departing().is_empty());
    // It no longer counts itself a voter, so it never campaigns.
    let term = cluster.nodes[&removed].term();
    for _ in 0..100 {
        cluster.nodes.get_mut(&removed).unwrap().tick();
    }
    let node = &cluster.nodes[&removed];
    assert_eq!(node.role(), Role::Follower);
    assert_eq!(node.term(), term);
}

#[test]
fn votes_from_a_removed_node_disturb_nobody() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let removed = (1..=3).find(|id| *id != leader).unwrap();
    let other = (1..=3).find(|id| *id != leader && *id != removed).unwrap();
    cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .propose_conf_change(ConfChange::Remove { id: removed })
        .unwrap();
    cluster.run(3);
    // Long after the leader was last heard, so no lease protects it.
    let node = cluster.nodes.get_mut(&other).unwrap();
    for _ in 0..30 {
        node.tick();
    }
    let term = node.term();
    let last_index = node.last_index() + 10;
    for pre in [true, false] {
        node.step(Message {
            from: removed,
            to: other,
            term: term + 5,
            body: MessageBody::Vote {
                pre,
                force: false,
                last_index,
                last_term: term + 4,
            },
        });
    }
    assert_eq!(node.term(), term);
    let ready = node.ready();
    assert!(
        !ready.messages.iter().any(|m| m.to == removed),
        "{:?}",
        ready.messages
    );
    node.advance();
}

#[test]
fn removing_the_leader_hands_leadership_over_first() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let refused = cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .propose_conf_change(ConfChange::Remove { id: leader });
    assert_eq!(refused, Err(ProposeError::Transferring));
    // The old leader never led without a majority while it handed over:
    // another voter leads within a few ticks, not an election timeout.
    cluster.run(3);
    let next = cluster.leader().expect("a new leader");
    assert_ne!(next, leader);
    assert_eq!(cluster.nodes[&leader].role(), Role::Follower);
    // The new leader removes the old one, which learns of it.
    let (_, index) = cluster
        .nodes
        .get_mut(&next)
        .unwrap()
        .propose_conf_change(ConfChange::Remove { id: leader })
        .unwrap();
    cluster.run(3);
    let old = &cluster.nodes[&leader];
    assert!(!old.membership().contains(leader));
    assert!(old.commit_index() >= index);
    assert_eq!(cluster.leader(), Some(next));
    let _ = follower_of(next);
}

#[test]
fn published_attributes_are_recorded_once_per_incarnation() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let target = follower_of(leader);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    // `membership(3)` records incarnation = id for everyone.
    let replaced = node.propose_conf_change(ConfChange::SetAttributes {
        id: target,
        http_addr: "moved:1".into(),
        incarnation: 77,
    });
    assert!(matches!(replaced, Err(ProposeError::BadConfChange(_))));
    node.propose_conf_change(ConfChange::SetAttributes {
        id: target,
        http_addr: "moved:1".into(),
        incarnation: target,
    })
    .unwrap();
    cluster.run(3);
    for node in cluster.nodes.values() {
        assert_eq!(node.membership().members[&target].http_addr, "moved:1");
    }
}
