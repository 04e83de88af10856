//! Paper cases from etcd-io/raft's `raft_test.go` and `raft_paper_test.go`
//! that the review found missing, restated for ticketd's core (learners
//! first, configurations in force when appended, pre-vote, check-quorum
//! and the lease), driven by hand on the simulated cluster so every
//! safety check still runs after each event. Owns only these scenarios.

use ticketd::raft::{
    ConfChange, Entry, Membership, Message, MessageBody, NodeId, ProposeError, Role, Term,
};

use crate::classic::{disk, entry, everything, hard, leads, quiet_net, run_until};
use crate::cluster::{Cluster, sim_config};
use crate::disk::Disk;

/// Runs `ticks` ticks; false as soon as `holds` does not.
fn holds_for(cluster: &mut Cluster, ticks: u64, holds: impl Fn(&Cluster) -> bool) -> bool {
    for _ in 0..ticks {
        if !holds(cluster) {
            return false;
        }
        cluster.now += 1;
        cluster.tick_all().unwrap();
        cluster.settle(everything).unwrap();
    }
    holds(cluster)
}

/// A cluster of `n` fresh voters that elected node 1 and settled.
fn cluster_led_by_1(seed: u64, n: u64) -> Cluster {
    let mut cluster = Cluster::new(seed, sim_config(), quiet_net(), n).unwrap();
    let only_1 = |m: &mut Message| !matches!(m.body, MessageBody::Vote { .. }) || m.from == 1;
    assert!(
        run_until(&mut cluster, 300, only_1, leads(1)),
        "node 1 not elected"
    );
    run_until(&mut cluster, 5, everything, |_| false);
    assert!(cluster.raft(1).lease_valid());
    cluster
}

fn propose_change(cluster: &mut Cluster, leader: NodeId, change: ConfChange) -> (Term, u64) {
    cluster
        .with_node(leader, |r| r.propose_conf_change(change))
        .unwrap()
        .unwrap()
        .unwrap()
}

fn transfer(cluster: &mut Cluster, leader: NodeId, to: NodeId) {
    cluster
        .with_node(leader, |r| r.transfer_leader(to))
        .unwrap()
        .unwrap()
        .unwrap();
}

fn refused_proposal(cluster: &mut Cluster, id: NodeId) -> Option<ProposeError> {
    cluster
        .with_node(id, |r| r.propose(b"x".to_vec()).err())
        .unwrap()
        .flatten()
}

/// etcd `TestCommitAfterRemoveNode`: entries waiting for a member that is
/// removed commit once the removal is in force, without it. Here a
/// configuration is in force once appended, so the removal itself commits
/// with the leader alone, and so does what was waiting before it.
#[test]
fn commit_after_remove_node() {
    let mut cluster = cluster_led_by_1(21, 2);
    cluster.net.partition(&[1], &[2]);
    let (_, waiting, _) = cluster.propose(1).unwrap().unwrap();
    run_until(&mut cluster, 3, everything, |_| false);
    assert!(
        cluster.check.committed_at(waiting).is_none(),
        "committed without node 2"
    );
    let (_, removal) = propose_change(&mut cluster, 1, ConfChange::Remove { id: 2 });
    let committed = |c: &Cluster| c.raft(1).commit_index() >= removal;
    assert!(run_until(&mut cluster, 5, everything, committed));
    assert!(cluster.check.committed_at(waiting).is_some());
    assert_eq!(cluster.raft(1).role(), Role::Leader);
    cluster.stop(2);
    let (_, after, _) = cluster.propose(1).unwrap().unwrap();
    let committed = |c: &Cluster| c.raft(1).commit_index() >= after;
    assert!(run_until(&mut cluster, 5, everything, committed));
}

/// etcd `TestAddNodeCheckQuorum`: adding a member must not make the
/// leader step down before that member had an election timeout to answer,
/// and a member that never answers does make it step down after one. A
/// learner never counts towards the quorum, so a leader that adds one that
/// is not even running keeps leading; once promoted and then silent, the
/// new voter costs the two-node leader its quorum.
#[test]
fn add_node_check_quorum() {
    let mut cluster = cluster_led_by_1(22, 1);
    let add = ConfChange::AddLearner {
        id: 2,
        peer_addr: "sim-2:9001".into(),
        http_addr: "sim-2:8001".into(),
    };
    propose_change(&mut cluster, 1, add);
    let config = sim_config();
    assert!(
        holds_for(&mut cluster, 5 * config.election_ticks_max, leads(1)),
        "a silent learner cost the leader its quorum"
    );
    assert!(cluster.propose(1).unwrap().is_some());
    cluster
        .add_node(2, Disk::bootstrap(Membership::default()))
        .unwrap();
    let promoted = |c: &Cluster| {
        let raft = c.raft(1);
        raft.membership().is_voter(2) && raft.commit_index() == raft.last_index()
    };
    assert!(run_until(&mut cluster, 200, everything, promoted));
    assert!(cluster.raft(1).lease_valid());
    cluster.crash(2);
    assert!(
        holds_for(&mut cluster, config.election_ticks_min / 2, leads(1)),
        "stepped down before an election timeout"
    );
    let stepped_down = |c: &Cluster| c.raft(1).role() != Role::Leader;
    assert!(run_until(
        &mut cluster,
        2 * config.election_ticks_max,
        everything,
        stepped_down
    ));
}

/// etcd `TestLeaderTransferTimeout`: a transfer to a node that never
/// catches up is abandoned after an election timeout; the leader then
/// takes proposals again, and holds a lease again once a quorum heard
/// appends that no longer announce the transfer.
#[test]
fn leader_transfer_timeout() {
    let mut cluster = cluster_led_by_1(23, 3);
    let term = cluster.raft(1).term();
    cluster.net.partition(&[3], &[1, 2]);
    transfer(&mut cluster, 1, 3);
    assert_eq!(
        refused_proposal(&mut cluster, 1),
        Some(ProposeError::Transferring)
    );
    assert!(!cluster.raft(1).lease_valid());
    let config = sim_config();
    let taking = |c: &Cluster| c.raft(1).lease_valid();
    assert!(
        run_until(&mut cluster, config.election_ticks_max, everything, taking),
        "the lease never came back"
    );
    assert_eq!(cluster.raft(1).role(), Role::Leader);
    assert_eq!(cluster.raft(1).term(), term);
    assert!(cluster.propose(1).unwrap().is_some());
    cluster.net.heal();
    assert!(holds_for(
        &mut cluster,
        3 * config.election_ticks_max,
        leads(1)
    ));
}

/// etcd `TestLeaderTransferReceiveHigherTermVote`: a transfer under way
/// ends when the leader learns of a higher term. Here the leader refuses
/// the higher term's vote (it is the leader: stickiness), and steps down
/// when the node that won that term without it speaks; it never sends the
/// abandoned transfer's TimeoutNow.
#[test]
fn leader_transfer_receive_higher_term_vote() {
    let mut cluster = cluster_led_by_1(24, 3);
    let term = cluster.raft(1).term();
    // Node 3 cannot hear node 1, nor node 2 hear node 1: node 2 campaigns
    // and wins with node 3's vote, while node 1 still hears node 2.
    cluster.net.partition(&[1], &[3]);
    cluster.net.block_one_way(1, 2);
    transfer(&mut cluster, 1, 3);
    let mut timeout_now_sent = false;
    let mut watch = |m: &mut Message| {
        timeout_now_sent |= matches!(m.body, MessageBody::TimeoutNow);
        true
    };
    let follows_2 = |c: &Cluster| c.raft(1).role() == Role::Follower && c.raft(1).leader() == 2;
    assert!(run_until(&mut cluster, 200, &mut watch, follows_2));
    assert!(!timeout_now_sent);
    assert_eq!(cluster.raft(1).term(), term + 1);
    assert_eq!(
        refused_proposal(&mut cluster, 1),
        Some(ProposeError::NotLeader { leader: 2 })
    );
    cluster.net.heal();
    assert!(holds_for(&mut cluster, 50, leads(2)));
}

/// etcd `TestLeaderTransferSecondTransferToAnotherNode`: a second transfer
/// to another node replaces the first, and that node takes over.
#[test]
fn leader_transfer_second_transfer_to_another_node() {
    let mut cluster = cluster_led_by_1(25, 3);
    let term = cluster.raft(1).term();
    cluster.net.partition(&[3], &[1, 2]);
    transfer(&mut cluster, 1, 3);
    run_until(&mut cluster, 2, everything, |_| false);
    transfer(&mut cluster, 1, 2);
    assert!(run_until(
        &mut cluster,
        sim_config().election_ticks_min,
        everything,
        leads(2)
    ));
    assert_eq!(cluster.raft(2).term(), term + 1);
    cluster.net.heal();
    assert!(holds_for(&mut cluster, 50, leads(2)));
}

/// etcd `TestRejectStaleTermMessage`: a message of an older term changes
/// nothing (a deposed leader's append is only answered, so it learns).
#[test]
fn reject_stale_term_message() {
    let voters = [1, 2, 3];
    let disks = vec![
        (1, disk(&voters, hard(5, 0, 0), &[1, 5])),
        (2, disk(&voters, hard(5, 0, 0), &[1, 5])),
        (3, disk(&voters, hard(5, 0, 0), &[1, 5])),
    ];
    let mut cluster = Cluster::with_disks(26, sim_config(), quiet_net(), disks).unwrap();
    let before = cluster.node(1).disk.entries.clone();
    let stale = [
        MessageBody::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![entry(2, 3), entry(3, 3)],
            commit: 3,
            lease_tick: 0,
            transfer_to: 0,
        },
        MessageBody::Vote {
            pre: false,
            force: true,
            last_index: 9,
            last_term: 4,
        },
        MessageBody::TimeoutNow,
    ];
    for body in stale {
        let message = Message {
            from: 2,
            to: 1,
            term: 4,
            body,
        };
        cluster.deliver(message).unwrap();
        let raft = cluster.raft(1);
        assert_eq!(
            (raft.term(), raft.role(), raft.commit_index()),
            (5, Role::Follower, 0)
        );
        assert_eq!(cluster.node(1).disk.hard_state(), hard(5, 0, 0));
        assert_eq!(cluster.node(1).disk.entries.clone(), before);
        for answer in cluster.net.take_all() {
            assert_eq!(answer.term, 5, "{answer:?}");
            assert!(
                matches!(
                    answer.body,
                    MessageBody::AppendResponse { success: false, .. }
                ),
                "{answer:?}"
            );
        }
    }
}

/// etcd `TestCandidateFallback`: a candidate that hears the leader of its
/// term, or of a later one, becomes its follower.
#[test]
fn candidate_fallback() {
    for (seed, term_ahead) in [(27, 0), (28, 1)] {
        let voters = [1, 2, 3];
        let disks = vec![
            (1, disk(&voters, hard(1, 0, 1), &[1])),
            (2, disk(&voters, hard(1, 0, 1), &[1])),
            (3, disk(&voters, hard(1, 0, 1), &[1])),
        ];
        let mut cluster = Cluster::with_disks(seed, sim_config(), quiet_net(), disks).unwrap();
        // Node 1's pre-votes pass, its real vote requests are lost and
        // nobody else campaigns: it stays a candidate of term 2.
        let only_1_pre = |m: &mut Message| match m.body {
            MessageBody::Vote { pre, .. } => pre && m.from == 1,
            _ => true,
        };
        let candidate = |c: &Cluster| c.raft(1).role() == Role::Candidate;
        assert!(run_until(&mut cluster, 200, only_1_pre, candidate));
        let term = cluster.raft(1).term();
        cluster.net.take_all();
        let append = Message {
            from: 2,
            to: 1,
            term: term + term_ahead,
            body: MessageBody::Append {
                prev_index: 1,
                prev_term: 1,
                entries: Vec::new(),
                commit: 1,
                lease_tick: 0,
                transfer_to: 0,
            },
        };
        cluster.deliver(append).unwrap();
        let raft = cluster.raft(1);
        assert_eq!(raft.role(), Role::Follower, "ahead {term_ahead}");
        assert_eq!(raft.term(), term + term_ahead);
        assert_eq!(raft.leader(), 2);
    }
}

/// Raft paper §5.2, "each server will vote for at most one candidate in a
/// given term": the vote is on disk before it is answered, so a restart
/// between the two changes nothing.
#[test]
fn one_vote_per_term_across_a_restart() {
    let voters = [1, 2, 3];
    let disks = vec![
        (1, disk(&voters, hard(3, 0, 1), &[1])),
        (2, disk(&voters, hard(3, 0, 1), &[1])),
        (3, disk(&voters, hard(3, 0, 1), &[1])),
    ];
    let mut cluster = Cluster::with_disks(29, sim_config(), quiet_net(), disks).unwrap();
    let vote = |from: NodeId| Message {
        from,
        to: 1,
        term: 4,
        body: MessageBody::Vote {
            pre: false,
            force: false,
            last_index: 1,
            last_term: 1,
        },
    };
    let answers = |cluster: &mut Cluster| -> Vec<(NodeId, bool)> {
        cluster
            .net
            .take_all()
            .into_iter()
            .filter_map(|m| match m.body {
                MessageBody::VoteResponse {
                    pre: false,
                    granted,
                } if m.from == 1 => Some((m.to, granted)),
                _ => None,
            })
            .collect()
    };
    // Past the start-up lease (a restarted node refuses every vote for
    // an election timeout), with whatever node 1 says meanwhile lost.
    let outlive_the_lease = |cluster: &mut Cluster| {
        for _ in 0..sim_config().election_ticks_min {
            cluster.tick_node(1).unwrap();
            cluster.net.take_all();
        }
    };
    outlive_the_lease(&mut cluster);
    cluster.deliver(vote(2)).unwrap();
    assert_eq!(answers(&mut cluster), [(2, true)]);
    assert_eq!(cluster.node(1).disk.hard_state().vote, 2);
    cluster.crash(1);
    cluster.restart(1).unwrap();
    outlive_the_lease(&mut cluster);
    assert_eq!(cluster.raft(1).term(), 4);
    cluster.deliver(vote(3)).unwrap();
    assert_eq!(answers(&mut cluster), [(3, false)]);
    cluster.deliver(vote(2)).unwrap();
    assert_eq!(answers(&mut cluster), [(2, true)]);
    assert_eq!(cluster.node(1).disk.hard_state(), hard(4, 2, 1));
}

/// Raft paper Figure 2, AppendEntries rule 5: a follower sets its commit
/// index to min(leaderCommit, index of last new entry), never past what
/// this append proved matches the leader (etcd `TestHandleMsgApp`).
#[test]
fn follower_commit_is_min_of_leader_commit_and_last_new_entry() {
    let voters = [1, 2, 3];
    let disks = vec![
        (1, disk(&voters, hard(2, 0, 0), &[1, 1, 2, 2])),
        (2, disk(&voters, hard(2, 0, 0), &[1, 1, 1])),
        (3, disk(&voters, hard(2, 0, 0), &[1, 1, 2, 2])),
    ];
    let mut cluster = Cluster::with_disks(30, sim_config(), quiet_net(), disks).unwrap();
    let append = |prev_index: u64, prev_term: Term, entries: Vec<Entry>, commit: u64| Message {
        from: 1,
        to: 2,
        term: 2,
        body: MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
            lease_tick: 0,
            transfer_to: 0,
        },
    };
    // Node 2's entry 3 (term 1) is not the leader's: entry 2 is the last
    // this append proves, though the leader has committed 4.
    cluster.deliver(append(1, 1, vec![entry(2, 1)], 4)).unwrap();
    assert_eq!(cluster.raft(2).commit_index(), 2);
    // A heartbeat proves nothing past its prev_index.
    cluster.deliver(append(2, 1, Vec::new(), 4)).unwrap();
    assert_eq!(cluster.raft(2).commit_index(), 2);
    // The leader's commit bounds it when the log reaches further.
    cluster
        .deliver(append(2, 1, vec![entry(3, 2), entry(4, 2)], 3))
        .unwrap();
    assert_eq!(cluster.raft(2).commit_index(), 3);
    assert_eq!(cluster.raft(2).last_index(), 4);
    cluster.deliver(append(4, 2, Vec::new(), 4)).unwrap();
    assert_eq!(cluster.raft(2).commit_index(), 4);
}
