//! Who gets a vote, and what a candidate counts (Raft paper §5.2, §5.4.1;
//! pre-vote, thesis §9.6). Written against the mutants cargo-mutants
//! found surviving in `election.rs`: each case names the rule it pins.

use super::*;

/// The answer `node` sends `to`, as (term, granted), after a flush.
fn answer_to(node: &mut Raft, to: NodeId) -> Option<(Term, bool)> {
    flush(node).into_iter().find_map(|m| match m.body {
        MessageBody::VoteResponse { granted, .. } if m.to == to => Some((m.term, granted)),
        _ => None,
    })
}

/// Node 2 (log 1..=3 of term 2) past its lease, so it hears candidates.
fn voter() -> Raft {
    let mut node = follower_of_1();
    outlive_the_lease(&mut node);
    node
}

#[test]
fn a_vote_goes_only_to_a_log_at_least_as_up_to_date() {
    // (last_index, last_term) of the candidate against ours (3, 2).
    let cases = [
        ((1, 3), true),   // a later last term wins, however short
        ((10, 1), false), // an earlier last term loses, however long
        ((2, 2), false),  // the same last term, shorter
        ((3, 2), true),   // the same log
        ((4, 2), true),   // the same last term, longer
    ];
    for pre in [true, false] {
        for ((last_index, last_term), want) in cases {
            let mut node = voter();
            node.step(message(3, 2, 3, vote(pre, false, last_index, last_term)));
            let got = answer_to(&mut node, 3).map(|(_, granted)| granted);
            assert_eq!(
                got,
                Some(want),
                "pre {pre}, candidate log ({last_index}, {last_term})"
            );
        }
    }
}

#[test]
fn a_pre_vote_is_granted_only_for_a_later_term_and_changes_nothing() {
    // For our own term: it could never win.
    let mut node = voter();
    node.step(message(3, 2, 2, vote(true, false, 3, 2)));
    assert_eq!(answer_to(&mut node, 3), Some((2, false)));
    // For the next term: granted, answered in that term, yet our term and
    // vote stay as they were (a pre-vote is only a question).
    node.step(message(3, 2, 3, vote(true, false, 3, 2)));
    assert_eq!(answer_to(&mut node, 3), Some((3, true)));
    assert_eq!((node.term(), node.vote), (2, 0));
    // Refused for a stale log: answered in our term, so the candidate
    // learns it is behind nothing.
    node.step(message(3, 2, 3, vote(true, false, 2, 2)));
    assert_eq!(answer_to(&mut node, 3), Some((2, false)));
    assert_eq!((node.term(), node.vote), (2, 0));
}

#[test]
fn one_vote_per_term_repeated_to_the_same_candidate() {
    // A refused vote records nothing ...
    let mut node = voter();
    node.step(message(3, 2, 3, vote(false, false, 2, 2)));
    assert_eq!(answer_to(&mut node, 3), Some((3, false)));
    assert_eq!((node.term(), node.vote), (3, 0));
    // ... so an up-to-date candidate of that term still gets it.
    node.step(message(1, 2, 3, vote(false, false, 3, 2)));
    assert_eq!(answer_to(&mut node, 1), Some((3, true)));
    assert_eq!(node.vote, 1);
    // Asked again (the answer was lost), the same candidate gets it again;
    // another, as up to date, does not.
    node.step(message(1, 2, 3, vote(false, false, 3, 2)));
    assert_eq!(answer_to(&mut node, 1), Some((3, true)));
    node.step(message(3, 2, 3, vote(false, false, 3, 2)));
    assert_eq!(answer_to(&mut node, 3), Some((3, false)));
    assert_eq!(node.vote, 1);
}

#[test]
fn only_a_candidate_counts_vote_answers() {
    // A follower handed grants for "its" election stays a follower.
    let mut node = follower_of_1();
    let grant = MessageBody::VoteResponse {
        pre: false,
        granted: true,
    };
    node.step(message(3, 2, 2, grant.clone()));
    node.step(message(1, 2, 2, grant));
    assert_eq!((node.role(), node.term()), (Role::Follower, 2));
}

#[test]
fn refusals_are_not_grants_and_a_refusing_quorum_ends_the_election() {
    // Leader 1 hands over to node 2, which campaigns in term 3 with its
    // own vote.
    let mut node = follower_of_1();
    node.step(message(1, 2, 2, MessageBody::TimeoutNow));
    flush(&mut node);
    assert_eq!(
        (node.role(), node.term(), node.vote),
        (Role::Candidate, 3, 2)
    );
    let refusal = MessageBody::VoteResponse {
        pre: false,
        granted: false,
    };
    // One refusal: its own vote and a refusal are no majority of 3.
    node.step(message(3, 2, 3, refusal.clone()));
    assert_eq!(node.role(), Role::Candidate);
    // Two: a majority refused, the election is lost.
    node.step(message(1, 2, 3, refusal));
    assert_eq!((node.role(), node.term()), (Role::Follower, 3));
    // It voted for itself in term 3 and may vote for nobody else in it.
    assert_eq!(node.vote, 2);
    node.step(message(3, 2, 3, vote(false, false, 3, 2)));
    assert_eq!(answer_to(&mut node, 3), Some((3, false)));
    assert_eq!(node.vote, 2);
}

#[test]
fn a_learner_does_not_campaign_on_timeout_now() {
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
    assert_eq!(node.leader(), 1);
    node.step(message(1, 4, 2, MessageBody::TimeoutNow));
    assert_eq!((node.role(), node.term()), (Role::Follower, 2));
    assert!(
        flush(&mut node)
            .iter()
            .all(|m| !matches!(m.body, MessageBody::Vote { .. }))
    );
}

/// A core that started from an empty disk (maybe a wiped one) and has no
/// entry, after `ticks` ticks: its answer to a candidate with entries and
/// to one without.
fn fresh_voter_answers(ticks: u64) -> (Option<bool>, Option<bool>) {
    let ask = |last_index| {
        let mut node = fresh(2, 3);
        for _ in 0..ticks {
            node.tick();
            flush(&mut node);
        }
        node.step(message(
            3,
            2,
            1,
            vote(false, false, last_index, 1.min(last_index)),
        ));
        answer_to(&mut node, 3).map(|(_, granted)| granted)
    };
    (ask(5), ask(0))
}

#[test]
fn a_fresh_empty_log_vouches_only_for_an_empty_one_for_ten_maximal_timeouts() {
    let refusing = FRESH_REFUSAL_TIMEOUTS * config(2).election_ticks_max;
    assert_eq!(fresh_voter_answers(refusing - 1), (Some(false), Some(true)));
    assert_eq!(fresh_voter_answers(refusing), (Some(true), Some(true)));
}
