//! Smoke tests of the core through a tiny in-memory cluster (the full
//! randomized simulator lives in `tests/sim`).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::*;

mod core_rules;
mod membership;
mod replication;
mod votes;

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

    /// Like `drain`, but the messages for which `lost` holds are lost.
    fn drain_dropping(&mut self, mut lost: impl FnMut(&Message) -> bool) {
        for _ in 0..10_000 {
            for node in self.nodes.values_mut() {
                while node.has_ready() {
                    let ready = node.ready();
                    self.wire
                        .extend(ready.messages.into_iter().filter(|m| !lost(m)));
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

    /// One tick of every node, nothing delivered.
    /// `n` one-byte proposals (0, 1, ...) at `leader`.
    fn propose_many(&mut self, leader: NodeId, n: u8) {
        let node = self.nodes.get_mut(&leader).unwrap();
        for i in 0..n {
            node.propose(vec![i]).unwrap();
        }
    }

    /// `id` compacts its log up to what it has applied.
    fn compact_applied(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        let applied = node.applied_index();
        node.compact(applied, b"state".to_vec()).unwrap();
    }

    fn tick_all(&mut self) {
        for node in self.nodes.values_mut() {
            node.tick();
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
    cluster.propose_many(leader, 20);
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
    cluster.propose_many(leader, 10);
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

// ---- one frame from a stranger must change nothing ----

fn message(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

fn vote(pre: bool, force: bool, last_index: LogIndex, last_term: Term) -> MessageBody {
    MessageBody::Vote {
        pre,
        force,
        last_index,
        last_term,
    }
}

fn append(
    prev_index: LogIndex,
    prev_term: Term,
    entries: Vec<Entry>,
    commit: LogIndex,
) -> MessageBody {
    MessageBody::Append {
        prev_index,
        prev_term,
        entries,
        commit,
        lease_tick: 0,
        transfer_to: 0,
    }
}

fn noop(index: LogIndex, term: Term) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Noop,
        data: Vec::new(),
    }
}

fn fresh(id: NodeId, members: u64) -> Raft {
    let persisted = Persisted {
        snapshot: Snapshot {
            meta: SnapshotMeta {
                index: 0,
                term: 0,
                membership: membership(members),
            },
            data: Vec::new(),
        },
        ..Persisted::default()
    };
    Raft::new(config(id), persisted).unwrap()
}

/// Hands out and acknowledges everything waiting; returns the messages.
fn flush(node: &mut Raft) -> Vec<Message> {
    let mut out = Vec::new();
    while node.has_ready() {
        let ready = node.ready();
        out.extend(ready.messages);
        node.advance();
    }
    out
}

/// Node 2 of three, following leader 1 of term 2, with entries 1..=3
/// committed.
fn follower_of_1() -> Raft {
    let mut node = fresh(2, 3);
    let entries = (1..=3).map(|i| noop(i, 2)).collect();
    node.step(message(1, 2, 2, append(0, 0, entries, 3)));
    flush(&mut node);
    assert_eq!(node.leader(), 1);
    assert_eq!(node.commit_index(), 3);
    node
}

/// Ticks `node` until its lease on leader contact has run out (it may
/// start a pre-vote meanwhile, which changes no term; its requests are
/// dropped).
fn outlive_the_lease(node: &mut Raft) {
    for _ in 0..config(1).election_ticks_min {
        node.tick();
    }
    flush(node);
}

#[test]
fn a_term_over_the_cap_is_dropped() {
    let mut node = follower_of_1();
    for term in [u64::MAX, TERM_MAX + 1] {
        node.step(message(3, 2, term, vote(false, true, 100, 2)));
        node.step(message(1, 2, term, append(3, 2, vec![], 3)));
        assert_eq!(node.term(), 2);
        assert!(flush(&mut node).is_empty());
    }
    // The cap itself is a term like any other.
    outlive_the_lease(&mut node);
    let term_before = node.term();
    node.step(message(3, 2, TERM_MAX, vote(false, false, 100, 2)));
    assert!(node.term() > term_before);
    assert_eq!(node.term(), TERM_MAX);
}

#[test]
fn the_term_never_wraps() {
    let mut node = fresh(1, 3);
    outlive_the_lease(&mut node);
    node.step(message(2, 1, TERM_MAX, vote(false, false, 0, 0)));
    assert_eq!(node.term(), TERM_MAX);
    flush(&mut node);
    for _ in 0..200 {
        node.tick();
        for m in flush(&mut node) {
            assert!(m.term <= TERM_MAX, "{m:?}");
        }
        assert_eq!(node.term(), TERM_MAX);
    }
}

#[test]
fn a_persisted_term_over_the_cap_is_refused() {
    let mut persisted = Persisted::default();
    persisted.snapshot.meta.membership = membership(3);
    persisted.hard_state.term = TERM_MAX + 1;
    assert!(Raft::new(config(1), persisted.clone()).is_err());
    persisted.hard_state.term = TERM_MAX;
    assert!(Raft::new(config(1), persisted).is_ok());
}

#[test]
fn non_members_are_not_heard() {
    let mut node = follower_of_1();
    outlive_the_lease(&mut node);
    let snapshot = MessageBody::Snapshot {
        snapshot: Snapshot {
            meta: SnapshotMeta {
                index: 50,
                term: 3,
                membership: membership(9),
            },
            data: b"forged".to_vec(),
        },
        lease_tick: 0,
    };
    for body in [
        vote(false, false, 100, 2),
        vote(true, false, 100, 2),
        append(3, 2, vec![noop(4, 3)], 4),
        snapshot,
    ] {
        node.step(message(9, 2, 3, body));
        assert_eq!(node.term(), 2);
        assert_eq!(node.commit_index(), 3);
        assert_eq!(node.last_index(), 3);
        assert!(flush(&mut node).is_empty());
    }
}

#[test]
fn a_stale_follower_hears_a_new_member_leading_a_term_it_already_holds() {
    // Node 2 never saw node 4 added; node 4 leads term 3 by now.
    let mut node = follower_of_1();
    // From a non-member, a later term is not heard ...
    node.step(message(4, 2, 3, append(3, 2, vec![], 3)));
    assert_eq!(node.term(), 2);
    // ... but once a member told us of term 3, its leader is.
    node.step(message(
        1,
        2,
        3,
        MessageBody::VoteResponse {
            pre: true,
            granted: false,
        },
    ));
    assert_eq!((node.term(), node.leader()), (3, 0));
    node.step(message(4, 2, 3, append(3, 2, vec![noop(4, 3)], 4)));
    assert_eq!(node.leader(), 4);
    assert_eq!(node.commit_index(), 4);
    // Only as the one leader of that term: no second non-member.
    node.step(message(5, 2, 3, append(4, 3, vec![noop(5, 3)], 5)));
    assert_eq!(node.last_index(), 4);
}

#[test]
fn a_second_leader_of_a_known_term_is_ignored() {
    let mut node = follower_of_1();
    node.step(message(3, 2, 2, append(3, 2, vec![noop(4, 2)], 4)));
    assert_eq!(node.leader(), 1);
    assert_eq!(node.last_index(), 3);
    assert_eq!(node.commit_index(), 3);
    node.step(message(3, 2, 2, MessageBody::TimeoutNow));
    assert_eq!(node.role(), Role::Follower);
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: 50,
            term: 2,
            membership: membership(3),
        },
        data: b"forged".to_vec(),
    };
    node.step(message(
        3,
        2,
        2,
        MessageBody::Snapshot {
            snapshot,
            lease_tick: 0,
        },
    ));
    assert!(node.snapshot().data.is_empty());
    assert_eq!((node.leader(), node.last_index()), (1, 3));
    assert!(flush(&mut node).is_empty());
}

#[test]
fn a_snapshot_at_or_below_the_commit_index_replaces_nothing() {
    let mut node = follower_of_1();
    let mut you_alone = Membership::default();
    you_alone
        .members
        .insert(1, membership(1).members[&1].clone());
    you_alone
        .members
        .insert(2, membership(2).members[&2].clone());
    node.step(message(
        1,
        2,
        2,
        MessageBody::Snapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 3,
                    term: 1,
                    membership: you_alone,
                },
                data: b"forged".to_vec(),
            },
            lease_tick: 0,
        },
    ));
    let answers = flush(&mut node);
    assert!(node.snapshot().data.is_empty());
    assert_eq!(node.membership(), &membership(3));
    assert_eq!(node.last_index(), 3);
    assert!(matches!(
        answers.as_slice(),
        [Message {
            body: MessageBody::AppendResponse {
                success: true,
                index: 3,
                ..
            },
            ..
        }]
    ));
}

#[test]
fn a_snapshot_naming_us_the_only_voter_replaces_nothing() {
    let mut node = follower_of_1();
    let you_alone = |node: &mut Raft, term: Term| {
        let mut alone = Membership::default();
        alone.members.insert(2, membership(2).members[&2].clone());
        alone.members.insert(
            1,
            Member {
                voter: false,
                peer_addr: "p1".into(),
                http_addr: "h1".into(),
                incarnation: 1,
            },
        );
        node.step(message(
            1,
            2,
            term,
            MessageBody::Snapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: 50,
                        term,
                        membership: alone,
                    },
                    data: b"no ids yet".to_vec(),
                },
                lease_tick: 0,
            },
        ));
        flush(node);
    };
    you_alone(&mut node, 2);
    you_alone(&mut node, 3);
    assert!(node.snapshot().data.is_empty());
    assert_eq!(node.membership(), &membership(3));
    assert_eq!(node.last_index(), 3);
    assert_eq!(node.commit_index(), 3);
}

#[test]
fn entries_that_do_not_follow_one_by_one_are_dropped() {
    let mut node = follower_of_1();
    for entries in [
        vec![noop(5, 2)],
        vec![noop(4, 2), noop(6, 2)],
        vec![noop(4, 3)],
        vec![noop(u64::MAX, 2)],
    ] {
        node.step(message(1, 2, 2, append(3, 2, entries, 9)));
        assert_eq!(node.last_index(), 3);
        assert!(flush(&mut node).is_empty());
    }
    node.step(message(1, 2, 2, append(u64::MAX, 2, vec![noop(0, 2)], 9)));
    assert_eq!(node.last_index(), 3);
    // Nor may a snapshot put the log where index + 1 could wrap.
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: INDEX_MAX + 1,
            term: 2,
            membership: membership(3),
        },
        data: b"far".to_vec(),
    };
    node.step(message(
        1,
        2,
        2,
        MessageBody::Snapshot {
            snapshot,
            lease_tick: 0,
        },
    ));
    assert_eq!((node.last_index(), node.commit_index()), (3, 3));
}

#[test]
fn timeout_now_only_from_the_leader_of_our_term() {
    let mut node = follower_of_1();
    node.step(message(3, 2, 2, MessageBody::TimeoutNow));
    node.step(message(3, 2, 5, MessageBody::TimeoutNow));
    node.step(message(1, 2, 3, MessageBody::TimeoutNow));
    assert_eq!((node.role(), node.term()), (Role::Follower, 2));
    node.step(message(1, 2, 2, MessageBody::TimeoutNow));
    assert_eq!((node.role(), node.term()), (Role::Candidate, 3));
    // Nor from anybody in a term whose leader we do not know.
    let mut node = follower_of_1();
    let refusal = MessageBody::VoteResponse {
        pre: true,
        granted: false,
    };
    node.step(message(3, 2, 4, refusal));
    assert_eq!((node.term(), node.leader()), (4, 0));
    node.step(message(3, 2, 4, MessageBody::TimeoutNow));
    assert_eq!((node.role(), node.term()), (Role::Follower, 4));
}

#[test]
fn a_forced_vote_overrides_the_lease_only_when_the_leader_announced_it() {
    let mut node = follower_of_1();
    // Within the lease, no announcement: `force` counts for nothing.
    node.step(message(3, 2, 3, vote(false, true, 3, 2)));
    assert_eq!(node.term(), 2);
    assert!(flush(&mut node).is_empty());
    // Leader 1 announces a transfer to node 3.
    let mut announce = append(3, 2, vec![], 3);
    if let MessageBody::Append { transfer_to, .. } = &mut announce {
        *transfer_to = 3;
    }
    node.step(message(1, 2, 2, announce));
    flush(&mut node);
    // Not for another candidate, nor for a term other than the next.
    node.step(message(1, 2, 3, vote(false, true, 3, 2)));
    node.step(message(3, 2, 4, vote(false, true, 3, 2)));
    assert_eq!(node.term(), 2);
    // A withdrawal, then the announcement again but delivered late.
    let with_tick = |transfer: NodeId, tick: u64| {
        let mut body = append(3, 2, vec![], 3);
        if let MessageBody::Append {
            transfer_to,
            lease_tick,
            ..
        } = &mut body
        {
            (*transfer_to, *lease_tick) = (transfer, tick);
        }
        message(1, 2, 2, body)
    };
    node.step(with_tick(0, 5));
    node.step(with_tick(3, 4));
    flush(&mut node);
    node.step(message(3, 2, 3, vote(false, true, 3, 2)));
    assert_eq!(node.term(), 2);
    node.step(with_tick(3, 6));
    flush(&mut node);
    node.step(message(3, 2, 3, vote(false, true, 3, 2)));
    assert_eq!(node.term(), 3);
    let granted = flush(&mut node).into_iter().any(|m| {
        m.to == 3
            && matches!(
                m.body,
                MessageBody::VoteResponse {
                    pre: false,
                    granted: true
                }
            )
    });
    assert!(granted);
}

#[test]
fn a_leader_sends_timeout_now_once_a_quorum_heard_the_announcement() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let target = if leader == 1 { 2 } else { 1 };
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.transfer_leader(target).unwrap();
    let sent = flush(node);
    // The announcement goes to every follower, TimeoutNow not yet.
    assert!(sent.iter().all(|m| matches!(
        m.body,
        MessageBody::Append { transfer_to, .. } if transfer_to == target
    )));
    assert_eq!(sent.len(), 2);
    cluster.run(10);
    assert_eq!(cluster.leader(), Some(target));
}

#[test]
fn a_learner_hears_a_leader_it_does_not_know_yet() {
    // A learner never campaigns, so it could never learn the term of a
    // member added after its configuration from anybody else.
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
    let persisted = Persisted {
        snapshot: Snapshot {
            meta: SnapshotMeta {
                index: 0,
                term: 0,
                membership: members,
            },
            data: Vec::new(),
        },
        ..Persisted::default()
    };
    let mut node = Raft::new(config(4), persisted).unwrap();
    node.step(message(1, 4, 2, append(0, 0, vec![noop(1, 2)], 1)));
    flush(&mut node);
    node.step(message(5, 4, 3, append(1, 2, vec![noop(2, 3)], 2)));
    assert_eq!((node.term(), node.leader(), node.commit_index()), (3, 5, 2));
    // Its votes and answers still are not heard.
    node.step(message(6, 4, 4, vote(false, false, 9, 3)));
    assert_eq!(node.term(), 3);
}

#[test]
fn a_pre_candidate_still_knows_the_leader_of_its_term() {
    let mut node = follower_of_1();
    let pre_candidate = |node: &Raft| node.role() == Role::PreCandidate;
    for _ in 0..config(2).election_ticks_max {
        if pre_candidate(&node) {
            break;
        }
        node.tick();
        flush(&mut node);
    }
    assert!(pre_candidate(&node));
    assert_eq!(node.leader(), 0);
    node.step(message(3, 2, 2, append(3, 2, vec![noop(4, 2)], 4)));
    assert_eq!(node.last_index(), 3);
    assert!(pre_candidate(&node));
    // Its leader is still heard.
    node.step(message(1, 2, 2, append(3, 2, vec![noop(4, 2)], 4)));
    assert_eq!(
        (node.role(), node.leader(), node.last_index()),
        (Role::Follower, 1, 4)
    );
}

#[test]
fn an_answer_past_the_leaders_log_or_clock_is_dropped() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let follower = if leader == 1 { 2 } else { 1 };
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let (commit, matches) = (node.commit_index(), node.match_indexes());
    for (index, lease_tick) in [(u64::MAX, 0), (0, u64::MAX), (node.last_index() + 1, 0)] {
        let answer = MessageBody::AppendResponse {
            success: true,
            index,
            hint_index: 0,
            hint_term: 0,
            lease_tick,
        };
        node.step(message(follower, leader, node.term(), answer));
        assert_eq!(node.commit_index(), commit);
        assert_eq!(node.match_indexes(), matches);
    }
    // Cut off from both followers, the lease runs out as it should.
    let mut node = cluster.nodes.remove(&leader).unwrap();
    for _ in 0..config(1).election_ticks_min {
        node.tick();
        flush(&mut node);
    }
    assert!(!node.lease_valid());
}

#[test]
fn after_an_abandoned_transfer_the_lease_waits_for_fresh_acknowledgements() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let target = if leader == 1 { 2 } else { 1 };
    // The target never answers: the transfer is abandoned in the end.
    cluster.nodes.remove(&target);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.transfer_leader(target).unwrap();
    let mut abandoned = false;
    for _ in 0..3 * config(1).election_ticks_min {
        for node in cluster.nodes.values_mut() {
            node.tick();
        }
        let node = &cluster.nodes[&leader];
        if node.transfer.is_none() {
            // The follower's acknowledgements so far answer appends that
            // announced the transfer.
            assert_eq!(node.role(), Role::Leader);
            assert!(!node.lease_valid());
            abandoned = true;
            break;
        }
        cluster.drain();
    }
    assert!(abandoned);
    cluster.run(5);
    assert!(cluster.nodes[&leader].lease_valid());
}

#[test]
fn a_change_that_would_leave_no_reachable_quorum_is_refused() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let others: Vec<NodeId> = (1..=3).filter(|id| *id != leader).collect();
    let (dead, live) = (others[0], others[1]);
    cluster.nodes.remove(&dead);
    // Past the minimum election timeout: the leader has not heard `dead`.
    cluster.run(12);
    assert_eq!(cluster.leader(), Some(leader));
    let node = cluster.nodes.get_mut(&leader).unwrap();
    // {leader, dead} could commit nothing while `dead` is down.
    let refused = node.propose_conf_change(ConfChange::Remove { id: live });
    assert!(
        matches!(&refused, Err(ProposeError::BadConfChange(why)) if why.contains("reachable")),
        "{refused:?}"
    );
    assert!(node.membership().contains(live));
    // Removing the dead one leaves {leader, live}: both reachable.
    node.propose_conf_change(ConfChange::Remove { id: dead })
        .unwrap();
    cluster.run(3);
    assert!(!cluster.nodes[&leader].membership().contains(dead));
    assert!(cluster.nodes[&leader].commit_index() > 10);
}

/// A joining node that caught up through the log from index 1 never saw
/// the cluster's first membership (it is in the others' bootstrap
/// snapshot): it may not compact where it does not know the membership,
/// or its snapshot would have none, which every peer refuses (the
/// simulator found a learner stranded that way, seed 39873).
#[test]
fn a_joiner_does_not_compact_where_it_does_not_know_the_membership() {
    let mut node = Raft::new(config(4), Persisted::default()).unwrap();
    let entries: Vec<Entry> = (1..=3)
        .map(|index| Entry {
            term: 1,
            index,
            kind: EntryKind::Normal,
            data: vec![index as u8],
        })
        .collect();
    node.step(Message {
        from: 1,
        to: 4,
        term: 1,
        body: MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries,
            commit: 3,
            lease_tick: 1,
            transfer_to: 0,
        },
    });
    while node.has_ready() {
        node.ready();
        node.advance();
    }
    assert_eq!(node.applied_index(), 3);
    assert_eq!(node.snapshot_meta(2), Err(CompactError::MembershipUnknown));
}

#[test]
fn a_snapshot_older_than_the_commit_index_is_refused() {
    // Strictly below the commit index, whether its last entry matches our
    // log (term 2) or not (term 1): nothing is installed, nothing moves
    // back, and the answer reports the commit index, not the snapshot's.
    for index in [1, 2] {
        for term in [1, 2] {
            let mut node = follower_of_1();
            let snapshot = Snapshot {
                meta: SnapshotMeta {
                    index,
                    term,
                    membership: membership(5),
                },
                data: b"stale".to_vec(),
            };
            node.step(message(
                1,
                2,
                2,
                MessageBody::Snapshot {
                    snapshot,
                    lease_tick: 0,
                },
            ));
            let answers = flush(&mut node);
            let case = format!("snapshot at {index} of term {term}");
            assert!(node.snapshot().data.is_empty(), "{case}");
            assert_eq!(node.snapshot().meta.index, 0, "{case}");
            assert_eq!(node.membership(), &membership(3), "{case}");
            assert_eq!((node.last_index(), node.commit_index()), (3, 3), "{case}");
            assert!(
                matches!(
                    answers.as_slice(),
                    [Message {
                        to: 1,
                        body: MessageBody::AppendResponse {
                            success: true,
                            index: 3,
                            ..
                        },
                        ..
                    }]
                ),
                "{case}: {answers:?}"
            );
        }
    }
}

/// Ticks `leader` (only an append sent after the transfer began counts
/// as heard) and delivers everything between it and the others until it
/// sends a TimeoutNow, which is dropped; panics if it never does.
fn deliver_until_timeout_now(cluster: &mut Cluster, leader: NodeId) -> NodeId {
    for _ in 0..100 {
        let node = cluster.nodes.get_mut(&leader).unwrap();
        node.tick();
        let out = flush(node);
        if let Some(m) = out
            .iter()
            .find(|m| matches!(m.body, MessageBody::TimeoutNow))
        {
            return m.to;
        }
        for m in out {
            let node = cluster.nodes.get_mut(&m.to).unwrap();
            node.step(m);
            for answer in flush(node) {
                if answer.to == leader {
                    cluster.nodes.get_mut(&leader).unwrap().step(answer);
                }
            }
        }
    }
    panic!("the leader never sent TimeoutNow");
}

#[test]
fn a_leader_honours_a_forced_vote_only_from_its_target_after_timeout_now() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let mut others = (1..=3).filter(|id| *id != leader);
    let (target, bystander) = (others.next().unwrap(), others.next().unwrap());
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let (term, last) = (node.term(), node.last_index());
    node.transfer_leader(target).unwrap();
    // Announced, but no TimeoutNow yet: even the target's forced vote is
    // just a vote, which a leader refuses.
    node.step(message(
        target,
        leader,
        term + 1,
        vote(false, true, last, term),
    ));
    assert_eq!((node.role(), node.term()), (Role::Leader, term));
    assert_eq!(deliver_until_timeout_now(&mut cluster, leader), target);
    let node = cluster.nodes.get_mut(&leader).unwrap();
    // TimeoutNow went out to the target: a bystander's force is nothing,
    // nor is the target's for a term other than the next.
    node.step(message(
        bystander,
        leader,
        term + 1,
        vote(false, true, last, term),
    ));
    node.step(message(
        target,
        leader,
        term + 2,
        vote(false, true, last, term),
    ));
    assert_eq!((node.role(), node.term()), (Role::Leader, term));
    // The target's, for the next term, is granted.
    node.step(message(
        target,
        leader,
        term + 1,
        vote(false, true, last, term),
    ));
    assert_eq!((node.role(), node.term()), (Role::Follower, term + 1));
    let granted = flush(node).into_iter().any(|m| {
        m.to == target
            && matches!(
                m.body,
                MessageBody::VoteResponse {
                    pre: false,
                    granted: true
                }
            )
    });
    assert!(granted);
}

#[test]
fn timeout_now_from_a_follower_or_an_earlier_term_is_ignored() {
    // A follower of leader 1's term (node 3) cannot start our election,
    // nor can anybody from an earlier term, its leader included.
    let mut node = follower_of_1();
    for (from, term) in [(3, 2), (3, 1), (1, 1)] {
        node.step(message(from, 2, term, MessageBody::TimeoutNow));
        assert_eq!((node.role(), node.term()), (Role::Follower, 2));
        assert!(
            flush(&mut node)
                .iter()
                .all(|m| !matches!(m.body, MessageBody::Vote { .. })),
            "TimeoutNow from {from} in term {term}"
        );
    }
}

/// Ticks every node of `cluster`, recording the leader's ticks in `times`
/// at `at(tick)`, and delivers everything when `connected`.
fn tick_recording(
    cluster: &mut Cluster,
    leader: NodeId,
    times: &mut TickTimes<Duration>,
    at: Duration,
    connected: bool,
) {
    for node in cluster.nodes.values_mut() {
        node.tick();
    }
    let node = &cluster.nodes[&leader];
    times.ran(node.now_tick(), at);
    if connected {
        cluster.drain();
    } else {
        for node in cluster.nodes.values_mut() {
            flush(node);
        }
    }
}

const TICK: Duration = Duration::from_millis(10);

#[test]
fn the_real_time_lease_counts_from_when_its_tick_ran_and_never_outlives_the_cores() {
    // Two runs: ticks on time (tick n at n × 10 ms), and ticks that ran
    // late and were caught up at once after the followers went quiet: a
    // stall, the instant of every tick after it is the same.
    for stalled in [false, true] {
        let mut cluster = Cluster::new(3);
        cluster.run(50);
        let leader = cluster.leader().unwrap();
        let mut times = TickTimes::default();
        let at = |tick: u64| TICK * u32::try_from(tick).unwrap();
        for _ in 0..5 {
            let tick = cluster.nodes[&leader].now_tick() + 1;
            tick_recording(&mut cluster, leader, &mut times, at(tick), true);
        }
        let node = &cluster.nodes[&leader];
        let start = node.lease_start().unwrap();
        let now = at(node.now_tick());
        let lease = TICK * u32::try_from(node.lease_ticks()).unwrap();
        assert_eq!(
            times.lease_until(node, now, TICK),
            Some(at(start) + lease),
            "stalled: {stalled}"
        );
        // Cut off: the lease runs out in the core's ticks, and the real
        // time deadline must be gone by then however ticks were timed.
        let frozen = now;
        let mut ended = false;
        for _ in 0..2 * config(1).election_ticks_min {
            let tick = cluster.nodes[&leader].now_tick() + 1;
            let when = if stalled { frozen } else { at(tick) };
            tick_recording(&mut cluster, leader, &mut times, when, false);
            let node = &cluster.nodes[&leader];
            let until = times.lease_until(node, when, TICK);
            if node.lease_valid() {
                assert!(!ended, "stalled: {stalled}: a lease came back");
                assert_eq!(until, Some(at(start) + lease), "stalled: {stalled}");
            } else {
                ended = true;
                // Over in ticks: over by the clock too (on time, it ends
                // at the very instant that tick ran).
                assert!(
                    until.is_none_or(|t| t <= when),
                    "stalled: {stalled}: {until:?} outlives the core's lease at {when:?}"
                );
            }
        }
        assert!(ended, "stalled: {stalled}: the lease never ended");
    }
}

#[test]
fn the_real_time_lease_of_edge_cases() {
    // A follower has none.
    let node = follower_of_1();
    let mut times = TickTimes::default();
    times.ran(node.now_tick(), Duration::ZERO);
    assert_eq!(times.lease_until(&node, Duration::ZERO, TICK), None);
    // A one-voter leader acknowledges itself now: the lease counts from
    // the present instant, whatever was recorded.
    let mut cluster = Cluster::new(1);
    cluster.run(30);
    let node = &cluster.nodes[&1];
    assert_eq!(node.lease_start(), Some(node.now_tick()));
    let lease = TICK * u32::try_from(node.lease_ticks()).unwrap();
    let now = Duration::from_secs(7);
    let times = TickTimes::default();
    assert_eq!(times.lease_until(node, now, TICK), Some(now + lease));
    // A lease too long for a Duration is no lease, not a panic nor a
    // wrapped (short or long) length.
    assert_eq!(times.lease_until(node, now, Duration::MAX), None);
    // A leader whose lease starts at a tick not remembered has none.
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let node = &cluster.nodes[&leader];
    assert!(node.lease_start().unwrap() < node.now_tick());
    assert_eq!(times.lease_until(node, now, TICK), None);
    let mut later = TickTimes::default();
    later.ran(node.now_tick(), now);
    assert_eq!(later.lease_until(node, now, TICK), None);
}
