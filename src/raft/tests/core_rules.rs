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
    let refused: [(&str, fn(&mut Config)); 10] = [
        ("id 0", |c| c.id = 0),
        ("min 1", |c| {
            c.election_ticks_min = 1;
            c.heartbeat_ticks = 0;
        }),
        ("max == min", |c| c.election_ticks_max = 2),
        ("max < min", |c| c.election_ticks_max = 1),
        ("heartbeat 0", |c| c.heartbeat_ticks = 0),
        ("heartbeat == min", |c| c.heartbeat_ticks = 2),
        ("margin == min", |c| c.lease_margin_ticks = 2),
        ("no entries", |c| c.max_append_entries = 0),
        ("no bytes", |c| c.max_append_bytes = 0),
        ("no inflight", |c| c.max_inflight = 0),
    ];
    for (what, spoil) in refused {
        let mut c = usable.clone();
        spoil(&mut c);
        assert!(c.validate().is_err(), "{what}");
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
