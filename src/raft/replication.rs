//! Log replication: the leader's heartbeats, pipelined AppendEntries and
//! snapshots, the follower's log-matching check, the commit rule, and
//! the lease.

use log::{debug, warn};

use super::core::Raft;
use super::progress::ProgressState;
use super::types::{
    Entry, EntryKind, LogIndex, Membership, MessageBody, NodeId, Role, Snapshot, Term,
};

impl Raft {
    /// Leader clock: heartbeats, check-quorum, transfer and snapshot timeouts.
    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.send_heartbeats();
            self.maybe_promote_learner();
            self.forget_departed();
        }
        self.send_commit_news();
        if self.now - self.leader_since >= self.config.election_ticks_min
            && self.quorum_ack_tick() + self.config.election_ticks_min <= self.now
        {
            // Check-quorum: a majority has not answered for an election
            // timeout; another leader may exist by now.
            warn!("node {} lost contact with a quorum", self.config.id);
            self.become_follower(self.term, 0);
            return;
        }
        if let Some((_, started)) = self.transfer
            && self.now - started >= self.config.election_ticks_min
        {
            if self.lease_revoked {
                // TimeoutNow went out but nobody took over: let a normal
                // election sort it out rather than lead without a lease.
                self.become_follower(self.term, 0);
                return;
            }
            // Followers heard the announcement; the lease counts again
            // only from appends that withdraw it.
            self.transfer = None;
            self.lease_floor = self.now + 1;
        }
        let stuck = self.config.election_ticks_max;
        for progress in self.progress.values_mut() {
            if let ProgressState::Snapshot { .. } = progress.state {
                progress.snapshot_ticks += 1;
                if progress.snapshot_ticks >= stuck {
                    progress.become_probe();
                }
            }
        }
    }

    /// The leader clock value the quorum has acknowledged: every voter of
    /// a majority heard from us at or after it.
    pub(crate) fn quorum_ack_tick(&self) -> u64 {
        let mut acks: Vec<u64> = self
            .membership
            .voters()
            .map(|id| {
                if id == self.config.id {
                    self.now
                } else {
                    self.progress.get(&id).map_or(0, |p| p.lease_ack)
                }
            })
            .collect();
        if acks.is_empty() {
            return 0;
        }
        acks.sort_unstable_by(|a, b| b.cmp(a));
        acks[self.membership.quorum() - 1]
    }

    /// Whether this leader may serve reads and IDs on its own: see the
    /// module docs of [`crate::raft`] for why this is safe.
    pub fn lease_valid(&self) -> bool {
        self.lease_start()
            .is_some_and(|start| start + self.lease_ticks() > self.now)
    }

    /// The lease's length in ticks.
    pub fn lease_ticks(&self) -> u64 {
        self.config.election_ticks_min - self.config.lease_margin_ticks
    }

    /// The tick the lease counts from (see [`Raft::lease_valid`]), when
    /// this node is a leader that may hold one at all. A driver whose
    /// ticks lag real time measures the lease from when it ran that tick.
    pub fn lease_start(&self) -> Option<u64> {
        let eligible = self.role == Role::Leader
            && self.transfer.is_none()
            && !self.lease_revoked
            && self.membership.is_voter(self.config.id)
            && self.log.commit >= self.term_start_index;
        let start = self.quorum_ack_tick();
        (eligible && start >= self.lease_floor).then_some(start)
    }

    /// Ticks since this core started.
    pub fn now_tick(&self) -> u64 {
        self.now
    }

    pub(crate) fn has_appends_to_send(&self) -> bool {
        let last = self.log.last_index();
        self.progress.values().any(|p| {
            p.state == ProgressState::Replicate
                && p.next_index <= last
                && p.can_send(self.config.max_inflight)
        })
    }

    /// Sends whatever each follower can take now (called when a `Ready`
    /// is built, so that proposals made in one batch share messages).
    ///
    /// A commit index that moved rides on these appends; it gets no
    /// message of its own here. Under load the next batch follows within
    /// a fraction of a tick and carries it, so a message for it alone
    /// (and the follower's answer) would double the traffic per batch;
    /// when nothing follows, [`Raft::send_commit_news`] tells it at the
    /// next tick.
    pub(crate) fn send_appends(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            self.send_append(peer, false);
        }
    }

    /// At each tick: a heartbeat to every replicating follower that could
    /// commit more than any append has told it (up to what it is known to
    /// hold). A follower thus learns of a commit at most a tick after the
    /// leader, also one whose acknowledgement came after the commit, not
    /// a heartbeat interval after (its state machine, its compaction and
    /// `/readyz` follow its commit index).
    fn send_commit_news(&mut self) {
        let commit = self.log.commit;
        let behind: Vec<NodeId> = self
            .progress
            .iter()
            .filter(|(_, p)| {
                p.state == ProgressState::Replicate && p.commit_sent < commit.min(p.match_index)
            })
            .map(|(id, _)| *id)
            .collect();
        for peer in behind {
            self.send_heartbeat(peer);
        }
    }

    /// Sends AppendEntries (or a snapshot) to `peer` while it can take
    /// more; with `allow_empty`, at least one message even without new
    /// entries. Returns whether anything was sent.
    pub(crate) fn send_append(&mut self, peer: NodeId, allow_empty: bool) -> bool {
        let mut sent = false;
        loop {
            let Some(progress) = self.progress.get(&peer) else {
                return sent;
            };
            if !progress.can_send(self.config.max_inflight) {
                return sent;
            }
            let next = progress.next_index;
            let prev_index = next - 1;
            let Some(prev_term) = self.log.term_at(prev_index) else {
                self.send_snapshot(peer);
                return true;
            };
            let entries = self.log.slice(
                next,
                self.config.max_append_entries,
                self.config.max_append_bytes,
            );
            if entries.is_empty() && (sent || !allow_empty) {
                return sent;
            }
            let last_sent = entries.last().map_or(prev_index, |e| e.index);
            let commit = self.log.commit;
            if let Some(progress) = self.progress.get_mut(&peer) {
                progress.commit_sent = progress.commit_sent.max(commit.min(last_sent));
                match progress.state {
                    ProgressState::Replicate => {
                        progress.next_index = last_sent + 1;
                        progress.inflight.push_back(last_sent);
                    }
                    _ => {
                        progress.paused = true;
                        progress.probe_tick = self.now;
                    }
                }
            }
            let body = MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit: self.log.commit,
                lease_tick: self.now,
                transfer_to: self.transfer_target(),
            };
            self.send(peer, body);
            sent = true;
            if last_sent == prev_index {
                return sent;
            }
        }
    }

    fn send_snapshot(&mut self, peer: NodeId) {
        let snapshot = self.log.snapshot().clone();
        debug!(
            "node {} sends snapshot at {} to {peer}",
            self.config.id, snapshot.meta.index
        );
        if let Some(progress) = self.progress.get_mut(&peer) {
            progress.become_snapshot(snapshot.meta.index);
        }
        let lease_tick = self.now;
        self.send(
            peer,
            MessageBody::Snapshot {
                snapshot,
                lease_tick,
            },
        );
    }

    fn send_heartbeats(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            self.send_heartbeat(peer);
        }
    }

    /// A heartbeat checks the log only where the follower is known to
    /// match, so it never disturbs the pipeline; a follower whose match
    /// is unknown gets a probe instead.
    fn send_heartbeat(&mut self, peer: NodeId) {
        let Some(progress) = self.progress.get_mut(&peer) else {
            return;
        };
        let match_index = progress.match_index;
        match progress.state {
            ProgressState::Replicate => {}
            ProgressState::Probe => {
                progress.paused = false;
                self.send_append(peer, true);
                return;
            }
            ProgressState::Snapshot { .. } => {}
        }
        let Some(prev_term) = self.log.term_at(match_index) else {
            if progress.state == ProgressState::Replicate {
                // Its match point was compacted away. Sending nothing would
                // leave a follower that lost our appends deaf for good: it
                // never answers, so we never learn it is behind. Probe it,
                // which sends the snapshot (an in-flight snapshot has its
                // own retry timer).
                progress.become_probe();
                self.send_append(peer, true);
            }
            return;
        };
        progress.commit_sent = progress.commit_sent.max(self.log.commit.min(match_index));
        let body = MessageBody::Append {
            prev_index: match_index,
            prev_term,
            entries: Vec::new(),
            commit: self.log.commit,
            lease_tick: self.now,
            transfer_to: self.transfer_target(),
        };
        self.send(peer, body);
    }

    /// Follower side of AppendEntries (the term is already ours).
    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
        lease_tick: u64,
    ) {
        if prev_index < self.log.commit {
            // Our committed prefix already agrees with every leader's.
            let index = self.log.commit;
            self.respond_append(from, true, index, 0, 0, lease_tick);
            return;
        }
        if self.log.term_at(prev_index) != Some(prev_term) {
            let (hint_index, hint_term) = self.conflict_hint(prev_index);
            self.respond_append(from, false, prev_index, hint_index, hint_term, lease_tick);
            return;
        }
        let last_new = prev_index + entries.len() as u64;
        if !self.append_from_leader(entries) {
            return;
        }
        self.log.commit_to(commit.min(last_new));
        self.respond_append(from, true, last_new, 0, 0, lease_tick);
    }

    /// Where our log diverges around `prev_index`: the first index of the
    /// term we hold there, or our log's end (Raft paper §5.3, the
    /// optimization at the end).
    fn conflict_hint(&self, prev_index: LogIndex) -> (LogIndex, Term) {
        if prev_index > self.log.last_index() {
            return (self.log.last_index() + 1, 0);
        }
        let Some(term) = self.log.term_at(prev_index) else {
            return (self.log.commit + 1, 0);
        };
        let mut first = prev_index;
        while first > self.log.commit + 1 && self.log.term_at(first - 1) == Some(term) {
            first -= 1;
        }
        (first, term)
    }

    /// Appends what is new in `entries`, truncating a conflicting suffix.
    /// False (and nothing changed) if that would touch a committed entry,
    /// which a correct leader never asks for.
    fn append_from_leader(&mut self, entries: Vec<Entry>) -> bool {
        let mut iter = entries.into_iter();
        for entry in iter.by_ref() {
            match self.log.term_at(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    if entry.index <= self.log.commit {
                        warn!(
                            "node {}: leader conflicts with committed entry {}",
                            self.config.id, entry.index
                        );
                        return false;
                    }
                    self.log.truncate_from(entry.index);
                    if self.membership_index >= entry.index {
                        self.reload_membership();
                    }
                }
                None => {}
            }
            self.push_replicated(entry);
            break;
        }
        for entry in iter {
            self.push_replicated(entry);
        }
        true
    }

    fn push_replicated(&mut self, entry: Entry) {
        if entry.index != self.log.last_index() + 1 {
            return;
        }
        if entry.kind == EntryKind::Config {
            self.adopt_membership(entry.index, &entry.data);
        }
        self.log.push(entry);
    }

    fn respond_append(
        &mut self,
        to: NodeId,
        success: bool,
        index: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
        lease_tick: u64,
    ) {
        self.send(
            to,
            MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
                lease_tick,
            },
        );
    }

    /// Follower side of InstallSnapshot (the term is already ours).
    pub(crate) fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot, lease_tick: u64) {
        let index = snapshot.meta.index;
        if index <= self.log.commit {
            let commit = self.log.commit;
            self.respond_append(from, true, commit, 0, 0, lease_tick);
            return;
        }
        if self.log.term_at(index) == Some(snapshot.meta.term) {
            // We hold the snapshot's last entry: our log up to it is the
            // leader's, nothing to replace.
            self.log.commit_to(index);
        } else if self.is_sole_voter_of(&snapshot.meta.membership) {
            // Had we been the only voter at `index`, we would have written
            // every entry up to it ourselves (and hold it or a snapshot
            // past it): "the cluster is you alone" is no leader's word.
            warn!(
                "node {} drops a snapshot at {index} from {from} naming it the only voter",
                self.config.id
            );
            return;
        } else {
            debug!("node {} installs snapshot at {index}", self.config.id);
            self.membership = snapshot.meta.membership.clone();
            self.membership_index = index;
            self.log.install(snapshot);
        }
        self.respond_append(from, true, index, 0, 0, lease_tick);
    }

    /// The transfer target every AppendEntries announces (0: none).
    pub(crate) fn transfer_target(&self) -> NodeId {
        self.transfer.map_or(0, |(target, _)| target)
    }

    fn is_sole_voter_of(&self, membership: &Membership) -> bool {
        let mut voters = membership.voters();
        voters.next() == Some(self.config.id) && voters.next().is_none()
    }

    /// Leader side of an AppendEntries answer (the term is ours).
    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
        lease_tick: u64,
    ) {
        self.handle_append_answer(from, success, index, hint_index, hint_term, lease_tick);
        if self.role == Role::Leader {
            self.maybe_finish_transfer();
        }
    }

    fn handle_append_answer(
        &mut self,
        from: NodeId,
        success: bool,
        index: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
        lease_tick: u64,
    ) {
        if index > self.log.last_index() || lease_tick > self.now {
            // Within our term our log only grows and our clock only runs
            // forward: an answer past either answers nothing we sent (and
            // would stretch the lease or the commit index).
            warn!(
                "node {} drops an answer from {from} for index {index}, tick {lease_tick}",
                self.config.id
            );
            return;
        }
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.lease_ack = progress.lease_ack.max(lease_tick);
        if success {
            if progress.update_match(index) {
                match progress.state {
                    ProgressState::Probe => progress.become_replicate(),
                    ProgressState::Snapshot { index: sent } if progress.match_index >= sent => {
                        progress.become_replicate()
                    }
                    _ => {}
                }
                self.maybe_commit();
            } else if progress.state == ProgressState::Probe {
                if lease_tick >= progress.probe_tick {
                    progress.paused = false;
                }
            } else if progress.state == ProgressState::Replicate
                && progress.match_index < self.log.last_index()
                && self.now >= progress.recovery_tick + self.config.heartbeat_ticks
            {
                progress.recovery_tick = self.now;
                // Nothing new acknowledged while entries are outstanding:
                // some may have been lost. An append from `next` either
                // continues the pipeline or is refused, which restarts it
                // from the follower's hint (etcd does the same).
                if progress.inflight.len() >= self.config.max_inflight {
                    progress.inflight.pop_front();
                }
                self.send_append(from, true);
                return;
            }
        } else {
            if index < progress.match_index || index == 0 {
                return; // stale
            }
            let next = match hint_term {
                0 => hint_index,
                term => self
                    .last_index_of_term(term, index)
                    .map_or(hint_index, |i| i + 1),
            };
            let Some(progress) = self.progress.get_mut(&from) else {
                return;
            };
            progress.become_probe();
            progress.next_index = next.min(index).max(progress.match_index + 1);
        }
        // A replicating follower's next entries go out with the next
        // `Ready` (`send_appends`): the proposals and answers the driver
        // steps before it then share one message per follower, where
        // sending here would split a batch into one append per answer. A
        // probe is answered at once.
        if self
            .progress
            .get(&from)
            .is_some_and(|p| p.state != ProgressState::Replicate)
        {
            self.send_append(from, false);
        }
    }

    /// The last index at or below `upto` whose entry has `term`.
    fn last_index_of_term(&self, term: Term, upto: LogIndex) -> Option<LogIndex> {
        let mut index = upto.min(self.log.last_index());
        while index >= self.log.first_index() {
            match self.log.term_at(index) {
                Some(t) if t == term => return Some(index),
                Some(t) if t < term => return None,
                _ => index -= 1,
            }
        }
        None
    }

    /// Advances the commit index to what a majority of voters holds, for
    /// entries of the current term only (§5.4.2).
    pub(crate) fn maybe_commit(&mut self) {
        let mut matches: Vec<LogIndex> = self
            .membership
            .voters()
            .map(|id| {
                if id == self.config.id {
                    self.log.stable_index()
                } else {
                    self.progress.get(&id).map_or(0, |p| p.match_index)
                }
            })
            .collect();
        if matches.is_empty() {
            return;
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matches[self.membership.quorum() - 1];
        if self.log.term_at(candidate) != Some(self.term) || !self.log.commit_to(candidate) {
            return;
        }
        if self.membership_index <= self.log.commit && !self.membership.contains(self.config.id) {
            // Our own removal is committed: hand over by stepping down.
            self.become_follower(self.term, 0);
        }
    }

    /// Replaces `membership` with the latest configuration in the log.
    pub(crate) fn reload_membership(&mut self) {
        let mut index = self.log.last_index();
        while index >= self.log.first_index() {
            if let Some(entry) = self.log.entry(index)
                && entry.kind == EntryKind::Config
                && let Ok(membership) = Membership::decode(&entry.data)
            {
                self.membership = membership;
                self.membership_index = index;
                return;
            }
            index -= 1;
        }
        self.membership = self.log.snapshot().meta.membership.clone();
        self.membership_index = self.log.snapshot().meta.index;
    }

    /// The configuration in force at `index` (at or after the snapshot).
    pub(crate) fn membership_at(&self, index: LogIndex) -> Membership {
        let mut at = index.min(self.log.last_index());
        while at >= self.log.first_index() {
            if let Some(entry) = self.log.entry(at)
                && entry.kind == EntryKind::Config
                && let Ok(membership) = Membership::decode(&entry.data)
            {
                return membership;
            }
            at -= 1;
        }
        self.log.snapshot().meta.membership.clone()
    }
}
