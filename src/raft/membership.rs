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

impl ConfChange {
    /// The member the change is about.
    pub fn id(&self) -> NodeId {
        match self {
            ConfChange::AddLearner { id, .. }
            | ConfChange::Promote { id }
            | ConfChange::Remove { id }
            | ConfChange::SetAttributes { id, .. } => *id,
        }
    }
}

/// How long (in maximal election timeouts) a core that started from an
/// empty disk refuses to vouch for a candidate with entries.
pub const FRESH_REFUSAL_TIMEOUTS: u64 = 10;

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
        self.check_reachable_quorum(&next)?;
        if change == (ConfChange::Remove { id: self.config.id }) {
            // Removing ourselves would leave the cluster without a leader
            // for an election timeout: hand over first, and let the new
            // leader remove us (the caller retries there).
            return Err(self.hand_over_before_removal());
        }
        let index = self.append_entry(EntryKind::Config, next.encode());
        info!("node {} proposes {change:?} at {index}", self.config.id);
        self.adopt_membership(index, &next.encode());
        Ok((self.term, index))
    }

    /// Refuses a change after which the voters this leader heard from
    /// within the minimum election timeout would be no quorum (etcd's
    /// strict reconfiguration check): removing a live voter from a
    /// three-node cluster with one node down would otherwise put a
    /// configuration in force that cannot commit anything, not even its
    /// own entry, until the dead node comes back. A change that leaves
    /// the voters as they are is always allowed.
    fn check_reachable_quorum(&self, next: &Membership) -> Result<(), ProposeError> {
        let before: Vec<NodeId> = self.membership.voters().collect();
        let after: Vec<NodeId> = next.voters().collect();
        if before == after {
            return Ok(());
        }
        let heard = |id: NodeId| {
            id == self.config.id
                || self.progress.get(&id).is_some_and(|p| {
                    self.now.saturating_sub(p.lease_ack) < self.config.election_ticks_min
                })
        };
        let reachable = after.iter().filter(|id| heard(**id)).count();
        if reachable < next.quorum() {
            return Err(ProposeError::BadConfChange(format!(
                "after this change only {reachable} of its {} voters are reachable, fewer than \
                 the {} it needs to commit anything; bring the unreachable members back, or \
                 remove them first",
                after.len(),
                next.quorum()
            )));
        }
        Ok(())
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
        for (id, progress) in self.progress.iter_mut() {
            if !members.contains(id) && progress.removed_at.is_none() {
                // Keep replicating to a member being removed until it has
                // its removal: otherwise it never learns it was removed.
                progress.removed_at = Some(index);
            }
        }
        for id in members {
            if id != self.config.id {
                self.progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next));
            }
        }
    }

    /// Drops the progress of removed members that have their removal
    /// entry and heard that it is committed (or that never answered for
    /// long after the commit: the transport tells such a node when it
    /// comes back).
    pub(crate) fn forget_departed(&mut self) {
        let commit = self.log.commit;
        let now = self.now;
        let give_up_ticks = 4 * self.config.election_ticks_max;
        self.progress.retain(|_, progress| {
            let Some(removed_at) = progress.removed_at else {
                return true;
            };
            if commit < removed_at {
                return true;
            }
            let committed_tick = *progress.removal_committed_tick.get_or_insert(now);
            // A message sent after the tick the commit was seen carries it.
            let told = progress.match_index >= removed_at && progress.lease_ack > committed_tick;
            !told && now < committed_tick + give_up_ticks
        });
    }

    /// Members being removed whose removal the leader still replicates.
    pub fn departing(&self) -> Vec<NodeId> {
        self.progress
            .iter()
            .filter(|(_, p)| p.removed_at.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether a committed configuration of ours removed `id`: ids are
    /// never reused, so nothing it says can matter any more, and its
    /// (pre-)votes must not disturb the cluster while it has not noticed.
    /// A leader still telling it of its removal hears its answers.
    pub(crate) fn is_removed_peer(&self, id: NodeId) -> bool {
        self.membership_index <= self.log.commit
            && self.membership.was_removed(id)
            && !self.progress.contains_key(&id)
    }

    /// Whether our log lets us vouch for a candidate whose log ends at
    /// `last_index`. A core that started from an empty disk and has no
    /// entry yet may be a wiped data directory: its owner may have voted
    /// for, or acknowledged, entries it no longer has. For its first
    /// [`FRESH_REFUSAL_TIMEOUTS`] maximal election timeouts it therefore
    /// backs only a candidate that has nothing either (a brand-new
    /// cluster, where every log is empty), so a wiped node cannot help a
    /// lagging candidate win while its peers tell it that its data is gone
    /// (the incarnation check, which stops it). After that it votes as
    /// usual: a node that simply never received an entry (cut off since
    /// the cluster's birth) must not block elections for good — the
    /// simulator found a five-node cluster leaderless for ever with two
    /// such nodes and a stale configuration on the most up-to-date one
    /// (seed 10573). A node whose disk kept a term lost nothing and votes
    /// as usual from the start.
    pub(crate) fn log_vouches_for(&self, last_index: LogIndex) -> bool {
        let suspect = self.booted_empty
            && self.log.last_index() == 0
            && self.now < FRESH_REFUSAL_TIMEOUTS * self.config.election_ticks_max;
        !suspect || last_index == 0
    }

    /// Starts a leadership transfer to the most up-to-date other voter,
    /// for a leader asked to remove itself; the error to answer with.
    fn hand_over_before_removal(&mut self) -> ProposeError {
        let me = self.config.id;
        let best = self
            .membership
            .voters()
            .filter(|id| *id != me)
            .max_by_key(|id| self.progress.get(id).map_or(0, |p| p.match_index));
        match best {
            Some(to) => match self.transfer_leader(to) {
                Ok(()) => ProposeError::Transferring,
                Err(e) => e,
            },
            // `changed_membership` refuses to remove the last voter.
            None => ProposeError::BadConfChange("cannot remove the last voter".into()),
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
    next.max_id = current.max_id();
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
            if *id <= current.max_id() {
                return bad(format!(
                    "node id {id} was used before in this cluster (ids up to {} were); ids are never reused",
                    current.max_id()
                ));
            }
            next.max_id = *id;
            next.members.insert(
                *id,
                Member {
                    voter: false,
                    peer_addr: peer_addr.clone(),
                    http_addr: http_addr.clone(),
                    incarnation: 0,
                },
            );
        }
        ConfChange::SetAttributes {
            id,
            http_addr,
            incarnation,
        } => match next.members.get_mut(id) {
            Some(member) => {
                if member.incarnation != 0 && *incarnation != member.incarnation {
                    // A member's data directory never changes under its
                    // id: a new one must join as a new member.
                    return bad(format!(
                        "node {id} already has incarnation {:#x}",
                        member.incarnation
                    ));
                }
                member.http_addr = http_addr.clone();
                member.incarnation = *incarnation;
            }
            None => return bad(format!("node {id} is not a member")),
        },
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
