//! Construction, settings, the message filter and the Ready handshake
//! (`core.rs`), pinned where cargo-mutants found no test noticing a
//! change.

use super::*;

#[test]
fn unusable_settings_are_refused_and_the_smallest_usable_accepted() {
    let usable = Config {
        id: 1,
        election_ticks_min: 2,
        election_ticks_max: 3,
        heartbeat_ticks: 1,
        lease_margin_ticks: 1,
        max_append_entries: 1,
        max_append_bytes: 1,
        max_inflight: 1,
        seed: 0,
    };
    assert!(usable.validate().is_ok());
    assert!(config(1).validate().is_ok());
    // Each refused for its own reason, named in the error.
    type Spoil = fn(&mut Config);
    let refused: [(&str, &str, Spoil); 10] = [
        ("id 0", "id 0", |c| c.id = 0),
        ("min 1", "election timeout", |c| {
            c.election_ticks_min = 1;
            c.election_ticks_max = 3;
        }),
        ("max == min", "election timeout", |c| {
            c.election_ticks_max = 2
        }),
        ("max < min", "election timeout", |c| {
            c.election_ticks_max = 1
        }),
        ("heartbeat 0", "heartbeat", |c| c.heartbeat_ticks = 0),
        ("heartbeat == min", "heartbeat", |c| c.heartbeat_ticks = 2),
        ("margin == min", "margin", |c| c.lease_margin_ticks = 2),
        ("no entries", "append limits", |c| c.max_append_entries = 0),
        ("no bytes", "append limits", |c| c.max_append_bytes = 0),
        ("no inflight", "append limits", |c| c.max_inflight = 0),
    ];
    for (what, reason, spoil) in refused {
        let mut c = usable.clone();
        spoil(&mut c);
        match c.validate() {
            Err(ConfigError(why)) => assert!(why.contains(reason), "{what}: {why}"),
            Ok(()) => panic!("{what} accepted"),
        }
        let persisted = Persisted {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 0,
                    term: 0,
                    membership: membership(1),
                },
                data: Vec::new(),
            },
            ..Persisted::default()
        };
        assert!(Raft::new(c, persisted).is_err(), "{what}");
    }
}

#[test]
fn a_message_for_another_node_from_ourselves_or_from_node_0_is_dropped() {
    // Addressed to node 3, delivered to node 2: not for us.
    let mut node = follower_of_1();
    outlive_the_lease(&mut node);
    node.step(message(1, 3, 3, vote(false, false, 3, 2)));
    assert_eq!((node.term(), node.vote), (2, 0));
    assert!(flush(&mut node).is_empty());
    // "From" ourselves: a vote we never cast.
    let mut node = follower_of_1();
    node.step(message(1, 2, 2, MessageBody::TimeoutNow));
    flush(&mut node);
    assert_eq!(node.role(), Role::Candidate);
    let grant = MessageBody::VoteResponse {
        pre: false,
        granted: true,
    };
    node.step(message(2, 2, node.term(), grant));
    assert_eq!(node.role(), Role::Candidate);
    // From node 0, which no node is: not even a node that knows no
    // leader yet (and would hear a non-member's append) appends it.
    let mut node = fresh(2, 3);
    node.step(message(0, 2, 0, append(0, 0, vec![noop(1, 0)], 0)));
    assert_eq!(node.last_index(), 0);
    assert!(flush(&mut node).is_empty());
}

#[test]
fn an_earlier_terms_leader_or_pre_candidate_is_told_our_term() {
    let mut node = follower_of_1();
    // A deposed leader of term 1: refused in term 2, so it steps down.
    node.step(message(3, 2, 1, append(3, 1, vec![], 3)));
    let answers = flush(&mut node);
    assert!(
        matches!(
            answers.as_slice(),
            [Message {
                to: 3,
                term: 2,
                body: MessageBody::AppendResponse { success: false, .. },
                ..
            }]
        ),
        "{answers:?}"
    );
    // A pre-candidate of term 1 learns it is behind.
    node.step(message(3, 2, 1, vote(true, false, 3, 1)));
    let answers = flush(&mut node);
    assert!(
        matches!(
            answers.as_slice(),
            [Message {
                to: 3,
                term: 2,
                body: MessageBody::VoteResponse {
                    pre: true,
                    granted: false
                },
                ..
            }]
        ),
        "{answers:?}"
    );
    // Anything else from an earlier term goes unanswered.
    node.step(message(3, 2, 1, vote(false, false, 3, 1)));
    node.step(message(3, 2, 1, MessageBody::TimeoutNow));
    assert!(flush(&mut node).is_empty());
    assert_eq!((node.term(), node.leader()), (2, 1));
}

/// `follower_of_1` moved to term 3 by a member refusing its pre-vote: it
/// knows no leader of term 3.
fn voter_without_a_leader() -> Raft {
    let mut node = follower_of_1();
    let refusal = MessageBody::VoteResponse {
        pre: true,
        granted: false,
    };
    node.step(message(3, 2, 3, refusal));
    assert_eq!((node.term(), node.term_leader), (3, 0));
    flush(&mut node);
    node
}

#[test]
fn a_non_member_never_gets_a_vote_nor_raises_a_voters_term() {
    let mut node = voter_without_a_leader();
    outlive_the_lease(&mut node);
    // Its vote request in our term, no leader known: not heard.
    node.step(message(9, 2, 3, vote(false, false, 9, 3)));
    assert_eq!(node.vote, 0);
    assert!(flush(&mut node).is_empty());
    // Its append of a later term: not heard either.
    node.step(message(9, 2, 4, append(3, 2, vec![noop(4, 4)], 4)));
    assert_eq!((node.term(), node.last_index()), (3, 3));
    assert!(flush(&mut node).is_empty());
}

#[test]
fn a_leader_hears_no_stranger() {
    let mut cluster = Cluster::new(3);
    cluster.run(50);
    let leader = cluster.leader().unwrap();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let term = node.term();
    let last = node.last_index();
    node.step(message(
        9,
        leader,
        term + 1,
        append(last, term, vec![], last),
    ));
    assert_eq!((node.role(), node.term()), (Role::Leader, term));
}

#[test]
fn a_stale_voter_keeps_hearing_the_non_member_leading_its_term() {
    // As in a_stale_follower_hears_a_new_member_leading_a_term_it_already_holds:
    // once node 4 is the leader it knows in term 3, every append from it
    // is heard, not just the first.
    let mut node = voter_without_a_leader();
    node.step(message(4, 2, 3, append(3, 2, vec![noop(4, 3)], 4)));
    assert_eq!((node.leader(), node.commit_index()), (4, 4));
    node.step(message(4, 2, 3, append(4, 3, vec![noop(5, 3)], 5)));
    assert_eq!((node.last_index(), node.commit_index()), (5, 5));
}

#[test]
fn a_new_term_alone_is_work_for_the_driver() {
    let mut node = follower_of_1();
    let refusal = MessageBody::VoteResponse {
        pre: true,
        granted: false,
    };
    node.step(message(3, 2, 3, refusal));
    // Nothing to send, no entry, no commit: only the term to persist.
    assert!(node.has_ready());
    let ready = node.ready();
    assert!(ready.messages.is_empty() && ready.entries.is_empty());
    assert_eq!(ready.hard_state.map(|h| h.term), Some(3));
    assert!(ready.must_sync);
    node.advance();
    assert!(!node.has_ready());
}

#[test]
fn a_restarted_node_hands_out_its_committed_entries_to_apply() {
    let persisted = Persisted {
        hard_state: HardState {
            term: 2,
            vote: 1,
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
        entries: vec![noop(1, 2), noop(2, 2), noop(3, 2)],
    };
    let mut node = Raft::new(config(2), persisted).unwrap();
    assert!(node.has_ready());
    let ready = node.ready();
    assert_eq!(ready.hard_state, None);
    assert!(ready.entries.is_empty());
    let applied: Vec<LogIndex> = ready.committed.iter().map(|e| e.index).collect();
    assert_eq!(applied, vec![1, 2]);
    node.advance();
    assert_eq!(node.applied_index(), 2);
    assert!(!node.has_ready());
}

#[test]
fn a_lone_leaders_proposal_is_work_for_the_driver() {
    // No follower to send to: only the entry to persist.
    let mut cluster = Cluster::new(1);
    cluster.run(30);
    let node = cluster.nodes.get_mut(&1).unwrap();
    assert!(!node.has_ready());
    let (_, index) = node.propose(b"x".to_vec()).unwrap();
    assert!(node.has_ready());
    let ready = node.ready();
    assert_eq!(ready.entries.last().map(|e| e.index), Some(index));
    node.advance();
    assert_eq!(node.commit_index(), index);
}

#[test]
fn a_ready_says_what_must_be_synced_and_what_may_be_written_asynchronously() {
    // A follower's new entries: synced, never asynchronously.
    let mut node = follower_of_1();
    node.step(message(1, 2, 2, append(3, 2, vec![noop(4, 2)], 3)));
    let ready = node.ready();
    assert_eq!(ready.entries.len(), 1);
    assert!(ready.must_sync);
    assert!(!ready.leader_durable && !ready.may_write_async());
    assert!(!node.advance_async());
    node.advance();
    // Only the commit index moved: persisted, but need not be synced.
    node.step(message(1, 2, 2, append(4, 2, vec![], 4)));
    let ready = node.ready();
    assert!(ready.entries.is_empty() && ready.snapshot.is_none());
    assert_eq!(ready.hard_state.map(|h| h.commit), Some(4));
    assert!(!ready.must_sync);
    node.advance();
    // A vote in a term already persisted: synced.
    let mut node = voter_without_a_leader();
    node.step(message(3, 2, 3, vote(false, false, 3, 2)));
    let ready = node.ready();
    assert_eq!(ready.hard_state.map(|h| (h.term, h.vote)), Some((3, 3)));
    assert!(ready.must_sync);
    node.advance();
    // A snapshot alone: synced.
    let mut node = follower_of_1();
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: 9,
            term: 2,
            membership: membership(3),
        },
        data: b"state".to_vec(),
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
    let ready = node.ready();
    assert!(ready.snapshot.is_some() && ready.entries.is_empty());
    assert!(ready.must_sync && !ready.may_write_async());
    assert!(!node.advance_async());
    node.advance();
    // A lone node elects itself in one tick: its first Ready carries the
    // new term and vote, so it is no durable leader's yet.
    let mut node = fresh(1, 1);
    node.tick();
    assert_eq!(node.role(), Role::Leader);
    let ready = node.ready();
    assert!(ready.must_sync && !ready.leader_durable && !ready.may_write_async());
    assert!(!node.advance_async());
    node.advance();
    // From then on its batches may be written asynchronously.
    node.propose(b"x".to_vec()).unwrap();
    let ready = node.ready();
    assert!(ready.leader_durable && ready.may_write_async());
    assert!(node.advance_async());
}

#[test]
fn persisted_counts_only_for_the_entry_written() {
    let mut cluster = Cluster::new(1);
    cluster.run(30);
    let node = cluster.nodes.get_mut(&1).unwrap();
    let (term, index) = node.propose(b"x".to_vec()).unwrap();
    node.ready();
    assert!(node.advance_async());
    assert_eq!(node.commit_index(), index - 1);
    // Not the entry that was written (another term's at that index).
    node.persisted(index, term + 1);
    assert_eq!(
        (node.stable_index(), node.commit_index()),
        (index - 1, index - 1)
    );
    node.persisted(index, term);
    assert_eq!((node.stable_index(), node.commit_index()), (index, index));
}

#[test]
fn the_queries_say_what_the_core_holds() {
    let (mut cluster, leader) = cluster_with_ten_entries();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let last = node.last_index();
    let others: BTreeMap<NodeId, LogIndex> = (1..=3)
        .filter(|id| *id != leader)
        .map(|id| (id, last))
        .collect();
    assert_eq!(node.match_indexes(), others);
    // The term's first entry is its leader's no-op.
    let start = node.term_start_index();
    assert!(start > 0 && start <= last - 10);
    let first = node.log.entry(start).unwrap();
    assert_eq!((first.kind, first.term), (EntryKind::Noop, node.term()));
    assert_eq!(node.first_index(), 1);
    let applied = node.applied_index();
    node.compact(applied, b"state".to_vec()).unwrap();
    assert_eq!(node.first_index(), applied + 1);
}

#[test]
fn a_vote_for_a_log_of_a_later_term_than_its_own_is_dropped() {
    let mut node = follower_of_1();
    outlive_the_lease(&mut node);
    node.step(message(3, 2, 3, vote(false, false, 3, 5)));
    assert_eq!((node.term(), node.vote), (2, 0));
    assert!(flush(&mut node).is_empty());
}

#[test]
fn appends_at_the_index_cap_are_heard_past_it_dropped() {
    // Our log has nothing there, so what is heard is refused; what is
    // dropped goes unanswered.
    let answered = |prev_index: LogIndex, count: u64| {
        let mut node = follower_of_1();
        let entries = (1..=count).map(|k| noop(prev_index + k, 2)).collect();
        node.step(message(1, 2, 2, append(prev_index, 2, entries, 3)));
        !flush(&mut node).is_empty()
    };
    assert!(answered(INDEX_MAX, 0));
    assert!(answered(INDEX_MAX - 1, 1));
    assert!(!answered(INDEX_MAX - 1, 2));
    assert!(!answered(INDEX_MAX + 1, 0));
}

#[test]
fn a_snapshot_at_the_index_cap_is_heard_past_it_dropped() {
    let installed = |index: LogIndex| {
        let mut node = follower_of_1();
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
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
        node.last_index() == index
    };
    assert!(installed(INDEX_MAX));
    assert!(!installed(INDEX_MAX + 1));
}
