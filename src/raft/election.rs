//! Elections: the election timer, pre-vote, votes, and the role changes
//! (follower, pre-candidate, candidate, leader).

use log::{debug, info};

use super::core::Raft;
use super::progress::Progress;
use super::types::{EntryKind, LogIndex, MessageBody, NodeId, Role, TERM_MAX, Term};

impl Raft {
    /// Follower and candidate clock: campaign when the timer runs out.
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed < self.election_timeout {
            return;
        }
        if self.membership.is_voter(self.config.id) {
            self.campaign(true, false);
        } else {
            self.reset_election_timer();
        }
    }

    /// Starts a pre-vote (`pre`) or a real election. `force` is set by a
    /// leadership transfer, which may override the voters' lease.
    pub(crate) fn campaign(&mut self, pre: bool, force: bool) {
        if self.term >= TERM_MAX {
            // No later term to campaign in; never wrap to 0. Unreachable
            // but by 2^63 elections: no message may name a later term.
            log::error!("node {} is at the last term", self.config.id);
            self.reset_election_timer();
            return;
        }
        let term = if pre {
            self.role = Role::PreCandidate;
            self.term + 1
        } else {
            self.role = Role::Candidate;
            self.term += 1;
            self.term_leader = 0;
            self.vote = self.config.id;
            self.term
        };
        debug!(
            "node {} starts {} for term {term}",
            self.config.id,
            if pre { "pre-vote" } else { "election" }
        );
        self.leader = 0;
        self.reset_election_timer();
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        if self.votes_decided(pre) {
            return;
        }
        let last_index = self.log.last_index();
        let last_term = self.log.last_term();
        let voters: Vec<NodeId> = self
            .membership
            .voters()
            .filter(|id| *id != self.config.id)
            .collect();
        for voter in voters {
            self.messages.push(super::types::Message {
                from: self.config.id,
                to: voter,
                term,
                body: MessageBody::Vote {
                    pre,
                    force,
                    last_index,
                    last_term,
                },
            });
        }
    }

    /// Answers a vote request of the current term (or, for a pre-vote,
    /// of the term the candidate would move to).
    pub(crate) fn handle_vote(
        &mut self,
        from: NodeId,
        term: Term,
        pre: bool,
        last_index: LogIndex,
        last_term: Term,
    ) {
        let up_to_date = last_term > self.log.last_term()
            || (last_term == self.log.last_term() && last_index >= self.log.last_index());
        let up_to_date = up_to_date && self.log_vouches_for(last_index);
        let granted = if pre {
            // Called with term > ours (a later term) or == ours; a pre-vote
            // for the current term can never win.
            up_to_date && term > self.term
        } else {
            up_to_date && (self.vote == 0 || self.vote == from) && self.role != Role::Leader
        };
        if granted && !pre {
            self.vote = from;
            self.reset_election_timer();
        }
        // A granted pre-vote answers in the candidate's future term so the
        // candidate counts it; a refusal carries ours.
        let answer_term = if pre && granted { term } else { self.term };
        self.messages.push(super::types::Message {
            from: self.config.id,
            to: from,
            term: answer_term,
            body: MessageBody::VoteResponse { pre, granted },
        });
    }

    pub(crate) fn handle_vote_response(&mut self, from: NodeId, pre: bool, granted: bool) {
        let expected = if pre {
            Role::PreCandidate
        } else {
            Role::Candidate
        };
        if self.role != expected || !self.membership.is_voter(from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        self.votes_decided(pre);
    }

    /// Acts on the votes so far; true when the election is decided.
    fn votes_decided(&mut self, pre: bool) -> bool {
        let quorum = self.membership.quorum();
        let granted = self
            .votes
            .iter()
            .filter(|(id, yes)| **yes && self.membership.is_voter(**id))
            .count();
        let refused = self.votes.values().filter(|yes| !**yes).count();
        if granted >= quorum {
            if pre {
                self.campaign(false, false);
            } else {
                self.become_leader();
            }
            return true;
        }
        if refused >= quorum {
            self.become_follower(self.term, 0);
            return true;
        }
        false
    }

    /// Leadership transfer: the leader asks us to campaign now.
    pub(crate) fn handle_timeout_now(&mut self) {
        if self.role != Role::Leader && self.membership.is_voter(self.config.id) {
            info!("node {} campaigns on leadership transfer", self.config.id);
            self.campaign(false, true);
        }
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: NodeId) {
        if term > self.term {
            self.term = term;
            self.vote = 0;
            self.term_leader = 0;
        }
        if leader != 0 {
            self.term_leader = leader;
        }
        if self.role == Role::Leader {
            info!("node {} steps down in term {}", self.config.id, self.term);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.transfer_announced = 0;
        self.transfer_announced_tick = 0;
        self.progress.clear();
        self.votes.clear();
        self.transfer = None;
        self.lease_revoked = false;
        self.term_start_index = 0;
        self.reset_election_timer();
    }

    pub(crate) fn become_leader(&mut self) {
        info!("node {} is leader of term {}", self.config.id, self.term);
        self.role = Role::Leader;
        self.leader = self.config.id;
        self.term_leader = self.config.id;
        self.votes.clear();
        self.transfer = None;
        self.transfer_announced = 0;
        self.lease_floor = 0;
        self.lease_revoked = false;
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.leader_since = self.now;
        self.reset_progress();
        // Commits every earlier entry (§5.4.2) and starts the lease.
        self.term_start_index = self.append_entry(EntryKind::Noop, Vec::new());
        self.maybe_commit();
    }

    /// Fresh progress for every other member.
    pub(crate) fn reset_progress(&mut self) {
        let next = self.log.last_index() + 1;
        self.progress = self
            .membership
            .members
            .keys()
            .filter(|id| **id != self.config.id)
            .map(|id| (*id, Progress::new(next)))
            .collect();
    }
}
