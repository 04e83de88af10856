//! What a leader is asked to do by its application: proposals, one-server
//! membership changes (learners first, promoted once caught up), and
//! leadership transfer.

use log::info;

use super::core::Raft;
use super::progress::Progress;
use super::types::{
    ConfChange, EntryKind, LogIndex, Member, Membership, MessageBody, NodeId, ProposeError, Role,
    Term,
};

impl Raft {
    /// Appends an application command to the log. It is committed when a
    /// `Ready` hands out an entry with this index *and* term.
    ///
    /// # Errors
    /// `ProposeError` when this node is not the leader or is handing over.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(Term, LogIndex), ProposeError> {
        self.check_can_propose()?;
        let index = self.append_entry(EntryKind::Normal, data);
        Ok((self.term, index))
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::Transferring);
        }
        Ok(())
    }

    /// Proposes a change of one member. The new configuration is in force
    /// from the moment it is appended (Raft thesis §4.1); one change at a
    /// time, and only once the leader has committed an entry of its term
    /// (the fix to single-server changes from the raft-dev list, 2015).
    ///
    /// # Errors
    /// `ProposeError` when not leader, a change is pending, or the change
    /// makes no sense for the current membership.
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<(Term, LogIndex), ProposeError> {
        self.check_can_propose()?;
        if self.membership_index > self.log.commit || self.log.commit < self.term_start_index {
            return Err(ProposeError::ConfChangePending);
        }
        let next = changed_membership(&self.membership, &change)?;
        let index = self.append_entry(EntryKind::Config, next.encode());
        info!("node {} proposes {change:?} at {index}", self.config.id);
        self.adopt_membership(index, &next.encode());
        Ok((self.term, index))
    }

    /// Puts a configuration in force as it enters the log.
    pub(crate) fn adopt_membership(&mut self, index: LogIndex, data: &[u8]) {
        let Ok(membership) = Membership::decode(data) else {
            log::error!("node {}: undecodable membership at {index}", self.config.id);
            return;
        };
        self.membership = membership;
        self.membership_index = index;
        if self.role != Role::Leader {
            return;
        }
        let next = self.log.last_index() + 1;
        let members: Vec<NodeId> = self.membership.members.keys().copied().collect();
        self.progress.retain(|id, _| members.contains(id));
        for id in members {
            if id != self.config.id {
                self.progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next));
            }
        }
    }

    /// Hands leadership to `to`, once it holds the whole log (Raft thesis
    /// §3.10). Proposals are refused meanwhile; the transfer is abandoned
    /// after an election timeout.
    ///
    /// # Errors
    /// `ProposeError` when not leader or `to` is not a voter.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.config.id {
            return Ok(());
        }
        if !self.membership.is_voter(to) {
            return Err(ProposeError::BadConfChange(format!(
                "node {to} is not a voting member"
            )));
        }
        if self.transfer.is_some_and(|(target, _)| target == to) {
            return Ok(());
        }
        info!("node {} transfers leadership to {to}", self.config.id);
        self.transfer = Some((to, self.now));
        // Announce it at once: every append from here on names `to`.
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            self.send_append(peer, true);
        }
        self.maybe_finish_transfer();
        Ok(())
    }

    /// Sends TimeoutNow once the transfer target holds our whole log and
    /// a quorum of voters (us and the target among them) has answered an
    /// append that announced the transfer: their forced votes then make
    /// the target's election one that can win.
    pub(crate) fn maybe_finish_transfer(&mut self) {
        let Some((target, started)) = self.transfer else {
            return;
        };
        if self.lease_revoked {
            return;
        }
        let caught_up = self
            .progress
            .get(&target)
            .is_some_and(|p| p.match_index == self.log.last_index());
        // An answer echoing a tick after `started` answers an append sent
        // after the announcement began (appends sent at `started` itself
        // may predate it).
        let announced = |id: NodeId| {
            id == self.config.id
                || self
                    .progress
                    .get(&id)
                    .is_some_and(|p| p.lease_ack > started)
        };
        let heard = self.membership.voters().filter(|id| announced(*id)).count();
        if caught_up && announced(target) && heard >= self.membership.quorum() {
            // From here on another node may win an election before our
            // lease would run out: the lease is gone for this term.
            self.lease_revoked = true;
            self.send(target, MessageBody::TimeoutNow);
        }
    }

    /// Promotes one learner that has caught up with the commit index.
    pub(crate) fn maybe_promote_learner(&mut self) {
        if self.transfer.is_some()
            || self.membership_index > self.log.commit
            || self.log.commit < self.term_start_index
        {
            return;
        }
        let commit = self.log.commit;
        let ready = self.membership.members.iter().find(|(id, member)| {
            !member.voter
                && self
                    .progress
                    .get(id)
                    .is_some_and(|p| p.match_index >= commit)
        });
        if let Some((id, _)) = ready {
            let id = *id;
            // Cannot fail: we checked every precondition above.
            let _ = self.propose_conf_change(ConfChange::Promote { id });
        }
    }
}

/// The membership after `change`, or why the change is refused.
fn changed_membership(
    current: &Membership,
    change: &ConfChange,
) -> Result<Membership, ProposeError> {
    let bad = |why: String| Err(ProposeError::BadConfChange(why));
    let mut next = current.clone();
    match change {
        ConfChange::AddLearner {
            id,
            peer_addr,
            http_addr,
        } => {
            if *id == 0 {
                return bad("node id 0 is reserved".into());
            }
            if current.contains(*id) {
                return bad(format!("node {id} is already a member"));
            }
            next.members.insert(
                *id,
                Member {
                    voter: false,
                    peer_addr: peer_addr.clone(),
                    http_addr: http_addr.clone(),
                },
            );
        }
        ConfChange::Promote { id } => match next.members.get_mut(id) {
            Some(member) if !member.voter => member.voter = true,
            Some(_) => return bad(format!("node {id} is already a voter")),
            None => return bad(format!("node {id} is not a member")),
        },
        ConfChange::Remove { id } => {
            if !current.contains(*id) {
                return bad(format!("node {id} is not a member"));
            }
            if current.is_voter(*id) && current.voters().count() == 1 {
                return bad("cannot remove the last voter".into());
            }
            next.members.remove(id);
        }
    }
    Ok(next)
}
