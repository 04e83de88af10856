//! The `Raft` struct: its fields, construction from persisted state, the
//! clock (`tick`), the message dispatch (`step`), and the `Ready` /
//! `advance` handshake with the driver. Elections, replication and
//! membership live in their own files as further `impl Raft` blocks.

use std::collections::BTreeMap;

use log::debug;

use super::log::RaftLog;
use super::progress::Progress;
use super::rng::Rng;
use super::types::{
    CompactError, ConfigError, Entry, EntryKind, HardState, INDEX_MAX, LogIndex, Membership,
    Message, MessageBody, NodeId, Role, Snapshot, SnapshotMeta, TERM_MAX, Term,
};
use super::{Config, Persisted, Ready};

/// The Raft core of one node. See the module docs of [`crate::raft`].
pub struct Raft {
    pub(crate) config: Config,
    pub(crate) term: Term,
    pub(crate) vote: NodeId,
    pub(crate) role: Role,
    pub(crate) leader: NodeId,
    /// The leader of `term` once known (us included), kept while `leader`
    /// is forgotten by a pre-vote: a term has one leader, and a message
    /// that names another is forged.
    pub(crate) term_leader: NodeId,
    pub(crate) log: RaftLog,
    /// The configuration in force: the latest one in the log.
    pub(crate) membership: Membership,
    /// Index of the entry that carried `membership` (or the snapshot's).
    pub(crate) membership_index: LogIndex,
    /// Leader only: every other member's progress.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Candidate and pre-candidate: the answers so far.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) rng: Rng,
    /// Ticks since this core was created: its whole notion of time.
    pub(crate) now: u64,
    pub(crate) election_elapsed: u64,
    pub(crate) election_timeout: u64,
    pub(crate) heartbeat_elapsed: u64,
    /// When this node last heard from a leader of its term. Set to the
    /// creation time, so that a restarted node does not hand out votes
    /// while a leader's lease may still count on it.
    pub(crate) leader_contact: u64,
    /// Leader only: when this node became leader.
    pub(crate) leader_since: u64,
    /// Leader only: the index of this term's first (no-op) entry.
    pub(crate) term_start_index: LogIndex,
    /// Leader only: a leadership transfer to this node began at this tick.
    pub(crate) transfer: Option<(NodeId, u64)>,
    /// Leader only: the lease counts only acknowledgements of appends sent
    /// at or after this tick (set when a transfer is abandoned: appends
    /// before it announced the transfer).
    pub(crate) lease_floor: u64,
    /// Follower only: the leader of this term announced a transfer to
    /// this node (0: none), so its forced vote may override the lease.
    pub(crate) transfer_announced: NodeId,
    /// Follower only: the leader clock of the append that set
    /// `transfer_announced`; an older append, delivered late, does not
    /// bring back an announcement a newer one withdrew.
    pub(crate) transfer_announced_tick: u64,
    /// Leader only: a TimeoutNow went out in this term, so another node
    /// may be elected before the lease runs out; no lease for this term.
    pub(crate) lease_revoked: bool,
    pub(crate) messages: Vec<Message>,
    /// The hard state as of the last `Ready` handed out.
    pub(crate) hard_state_sent: HardState,
    /// What the outstanding `Ready` covered, for `advance`.
    pub(crate) in_ready: Option<InReady>,
    /// This core started from an empty disk (default hard state, no
    /// snapshot, no entries): maybe a wiped data directory under a
    /// member's ID (see [`Raft::log_vouches_for`]).
    pub(crate) booted_empty: bool,
}

/// What the driver is handling, between `ready()` and `advance()`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InReady {
    last_entry: LogIndex,
    /// A durable leader's batch without a snapshot: may be written
    /// asynchronously (see [`Raft::advance_async`]).
    may_write_async: bool,
    last_committed: LogIndex,
    hard_state: HardState,
}

impl Raft {
    /// Creates a core from what the driver found on disk.
    ///
    /// # Errors
    /// `ConfigError` when the settings are unusable or the persisted
    /// state is inconsistent (entries not contiguous after the snapshot).
    pub fn new(config: Config, persisted: Persisted) -> Result<Raft, ConfigError> {
        config.validate()?;
        let booted_empty = persisted.hard_state == HardState::default()
            && persisted.snapshot.meta.index == 0
            && persisted.entries.is_empty();
        let Persisted {
            hard_state,
            snapshot,
            entries,
        } = persisted;
        if hard_state.term > TERM_MAX {
            return Err(ConfigError(format!(
                "persisted term {} is over the cap {TERM_MAX}",
                hard_state.term
            )));
        }
        let base = snapshot.meta.index;
        for (offset, entry) in entries.iter().enumerate() {
            if entry.index != base + 1 + offset as u64 {
                return Err(ConfigError(format!(
                    "log entry {} follows index {}",
                    entry.index,
                    base + offset as u64
                )));
            }
        }
        let log = RaftLog::restore(snapshot, entries, hard_state.commit);
        let mut raft = Raft {
            rng: Rng::new(config.seed),
            config,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: 0,
            term_leader: 0,
            log,
            membership: Membership::default(),
            membership_index: 0,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            now: 0,
            election_elapsed: 0,
            election_timeout: 0,
            heartbeat_elapsed: 0,
            leader_contact: 0,
            leader_since: 0,
            term_start_index: 0,
            transfer: None,
            lease_floor: 0,
            transfer_announced: 0,
            transfer_announced_tick: 0,
            lease_revoked: false,
            messages: Vec::new(),
            hard_state_sent: HardState::default(),
            in_ready: None,
            booted_empty,
        };
        raft.hard_state_sent = raft.hard_state();
        raft.reload_membership();
        raft.reset_election_timer();
        let voters: Vec<NodeId> = raft.membership.voters().collect();
        if voters == [raft.config.id] {
            // Nobody else can be counting on our vote: campaign at once.
            raft.election_elapsed = raft.election_timeout.saturating_sub(1);
            raft.leader_contact = 0;
        }
        Ok(raft)
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.now += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    /// Takes one message from a peer. Stale, duplicated and reordered
    /// messages are expected and handled. A message no correct peer sends
    /// (a term over [`TERM_MAX`], a sender outside the membership, a
    /// second leader of a known term, ...) is dropped: see the module
    /// docs, "What a message must be".
    pub fn step(&mut self, message: Message) {
        if message.to != self.config.id || message.from == self.config.id || message.from == 0 {
            return;
        }
        if self.is_removed_peer(message.from) {
            return;
        }
        if let Err(why) = check_message(&message) {
            debug!(
                "node {} drops a message from {}: {why}",
                self.config.id, message.from
            );
            return;
        }
        if !self.knows_sender(&message) {
            debug!(
                "node {} drops a message from non-member {}",
                self.config.id, message.from
            );
            return;
        }
        if message.term > self.term {
            if !self.step_higher_term(&message) {
                return;
            }
        } else if message.term < self.term {
            self.step_lower_term(&message);
            return;
        }
        self.step_current_term(message);
    }

    /// A message from a later term: false when it is to be ignored.
    fn step_higher_term(&mut self, message: &Message) -> bool {
        match message.body {
            MessageBody::Vote { pre, force, .. } => {
                let forced = force && self.transfer_announced_for(message.from, message.term);
                if !forced && self.in_leader_lease() {
                    // A live leader exists as far as we know; disrupting it
                    // would break its lease. (Raft thesis §4.2.3.)
                    return false;
                }
                if !pre {
                    self.become_follower(message.term, 0);
                }
                true
            }
            // A granted pre-vote carries the term the candidate will
            // campaign in; only a refusal means we are behind.
            MessageBody::VoteResponse {
                pre: true,
                granted: true,
            } => true,
            MessageBody::Append { .. } | MessageBody::Snapshot { .. } => {
                self.become_follower(message.term, message.from);
                true
            }
            // A transfer target has acknowledged its leader's whole log in
            // the leader's term before TimeoutNow is sent, so it knows that
            // term: one from a later term is not from our leader.
            MessageBody::TimeoutNow => false,
            _ => {
                self.become_follower(message.term, 0);
                true
            }
        }
    }

    /// A message from an earlier term: only answered where the answer
    /// tells the sender it is behind.
    fn step_lower_term(&mut self, message: &Message) {
        match message.body {
            MessageBody::Append { .. } | MessageBody::Snapshot { .. } => {
                // Lets a deposed leader that cannot hear elections step down.
                self.send(
                    message.from,
                    MessageBody::AppendResponse {
                        success: false,
                        index: 0,
                        hint_index: 0,
                        hint_term: 0,
                        lease_tick: 0,
                    },
                );
            }
            MessageBody::Vote { pre: true, .. } => {
                self.send(
                    message.from,
                    MessageBody::VoteResponse {
                        pre: true,
                        granted: false,
                    },
                );
            }
            _ => {}
        }
    }

    fn step_current_term(&mut self, message: Message) {
        let from = message.from;
        let term = message.term;
        let from_leader_only = matches!(
            message.body,
            MessageBody::Append { .. } | MessageBody::Snapshot { .. } | MessageBody::TimeoutNow
        );
        if from_leader_only && self.term_leader != 0 && self.term_leader != from {
            // One term has one leader, and we know it: this is forged.
            debug!(
                "node {} drops a leader's message from {from} in term {term}, whose leader is {}",
                self.config.id, self.term_leader
            );
            return;
        }
        match message.body {
            MessageBody::Vote {
                pre,
                last_index,
                last_term,
                ..
            } => self.handle_vote(from, term, pre, last_index, last_term),
            MessageBody::VoteResponse { pre, granted } => {
                self.handle_vote_response(from, pre, granted)
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                lease_tick,
                transfer_to,
            } => {
                self.follow(from);
                if lease_tick >= self.transfer_announced_tick {
                    self.transfer_announced = transfer_to;
                    self.transfer_announced_tick = lease_tick;
                }
                self.handle_append(from, prev_index, prev_term, entries, commit, lease_tick);
            }
            MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
                lease_tick,
            } => {
                if self.role == Role::Leader {
                    self.handle_append_response(
                        from, success, index, hint_index, hint_term, lease_tick,
                    );
                }
            }
            MessageBody::Snapshot {
                snapshot,
                lease_tick,
            } => {
                self.follow(from);
                self.handle_snapshot(from, snapshot, lease_tick);
            }
            MessageBody::TimeoutNow => {
                if self.term_leader == from {
                    self.handle_timeout_now();
                }
            }
        }
    }

    /// Whether `from` may speak to us: a member of the configuration in
    /// force (voter or learner, committed or not), or anybody while we
    /// have no configuration at all (a joining node before its first
    /// snapshot). See the module docs for the one exception.
    fn knows_sender(&self, message: &Message) -> bool {
        if self.membership.members.is_empty() || self.membership.contains(message.from) {
            return true;
        }
        // A leader hears a member it is removing, whose progress it keeps
        // until that node has heard of its removal.
        if self.role == Role::Leader && self.progress.contains_key(&message.from) {
            return true;
        }
        // A node whose configuration is stale may not know a member added
        // since, which may lead by now: it still hears a non-member's
        // AppendEntries and snapshots (never its votes or answers) ...
        let leads = matches!(
            message.body,
            MessageBody::Append { .. } | MessageBody::Snapshot { .. }
        );
        if !leads || self.role == Role::Leader {
            return false;
        }
        // ... if it is no voter of its own configuration (it never
        // campaigns, so it could never learn a new term from a member; its
        // term decides nothing) ...
        if !self.membership.is_voter(self.config.id) {
            return true;
        }
        // ... or as the one leader of a term it already holds (a voter
        // learns it from a member refusing its pre-vote): a non-member
        // never raises a voter's term.
        message.term == self.term && (self.term_leader == 0 || self.term_leader == message.from)
    }

    /// Whether a forced vote from `from` for `term` is a transfer our
    /// leader announced: the leader of the term before named `from`, or
    /// we are that leader and sent it TimeoutNow.
    fn transfer_announced_for(&self, from: NodeId, term: Term) -> bool {
        if term != self.term.saturating_add(1) {
            return false;
        }
        if self.role == Role::Leader {
            return self.lease_revoked && self.transfer.is_some_and(|(to, _)| to == from);
        }
        self.term_leader != 0 && self.transfer_announced == from
    }

    /// A leader of our term spoke: make sure we follow it.
    fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower || self.leader != leader {
            self.become_follower(self.term, leader);
        }
        self.election_elapsed = 0;
        self.leader_contact = self.now;
    }

    /// Whether `has_ready` would hand out anything.
    pub fn has_ready(&self) -> bool {
        !self.messages.is_empty()
            || self.log.snapshot_unstable
            || self.log.sent_index() < self.log.last_index()
            || self.log.applied < self.log.commit
            || self.hard_state() != self.hard_state_sent
            || (self.role == Role::Leader && self.has_appends_to_send())
    }

    /// Hands out the work waiting for the driver; see [`Ready`] for the
    /// order in which it must be done. Call [`Raft::advance`] after it,
    /// with no other call in between.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.send_appends();
        }
        let hard_state = self.hard_state();
        let snapshot = self
            .log
            .snapshot_unstable
            .then(|| self.log.snapshot().clone());
        let entries = self.log.unstable();
        let committed = self.log.range(self.log.applied, self.log.commit);
        let must_sync = snapshot.is_some()
            || !entries.is_empty()
            || hard_state.term != self.hard_state_sent.term
            || hard_state.vote != self.hard_state_sent.vote;
        let leader_durable = self.role == Role::Leader
            && hard_state.term == self.hard_state_sent.term
            && hard_state.vote == self.hard_state_sent.vote;
        self.in_ready = Some(InReady {
            last_entry: entries.last().map_or(0, |e| e.index),
            may_write_async: leader_durable && snapshot.is_none(),
            last_committed: committed.last().map_or(self.log.applied, |e| e.index),
            hard_state,
        });
        Ready {
            hard_state: (hard_state != self.hard_state_sent).then_some(hard_state),
            must_sync,
            snapshot,
            entries,
            messages: std::mem::take(&mut self.messages),
            leader_durable,
            committed,
        }
    }

    /// The driver has persisted, sent and applied the last `Ready`.
    pub fn advance(&mut self) {
        let Some(done) = self.in_ready.take() else {
            return;
        };
        self.log.snapshot_unstable = false;
        self.log.stable_to(done.last_entry);
        self.log.applied = self.log.applied.max(done.last_committed);
        self.hard_state_sent = done.hard_state;
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// Like [`Raft::advance`], for a `Ready` whose write is still in
    /// progress: only allowed when [`Ready::may_write_async`] (a durable
    /// leader's batch: its entries and commit index, no term, vote or
    /// snapshot). The driver has sent `take_early_messages`, applied all
    /// of `committed` (each of those is on a majority, though maybe not
    /// yet on this node's disk) and queued the write; it holds the other
    /// messages until the write is done, then calls
    /// [`Raft::persisted`]. Until then this node does not count itself
    /// towards a commit of those entries. Writes must complete in the
    /// order they were handed out.
    ///
    /// Returns false (and does nothing) if the `Ready` may not be written
    /// asynchronously; the driver must then finish it as usual and call
    /// `advance`.
    pub fn advance_async(&mut self) -> bool {
        match self.in_ready {
            Some(done) if done.may_write_async => {
                self.in_ready = None;
                self.log.sent_to(done.last_entry);
                self.log.applied = self.log.applied.max(done.last_committed);
                self.hard_state_sent = done.hard_state;
                true
            }
            _ => false,
        }
    }

    /// An asynchronous write (see [`Raft::advance_async`]) is on disk:
    /// the entries up to `index`, whose entry has `term`. Ignored if the
    /// log no longer has that entry (it was truncated since).
    pub fn persisted(&mut self, index: LogIndex, term: Term) {
        if index <= self.log.stable_index() || self.log.term_at(index) != Some(term) {
            return;
        }
        self.log.stable_to(index.min(self.log.sent_index()));
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// An asynchronous write failed (and the driver dropped every write
    /// queued after it): hand out again every entry not known to be on
    /// disk.
    pub fn write_failed(&mut self) {
        self.log.rewind_sent();
    }

    /// Compacts the log up to `index` (which must be applied), keeping
    /// `data` — the application state at `index` — as the snapshot sent
    /// to followers that are too far behind.
    ///
    /// # Errors
    /// `CompactError` when `index` is already compacted or not applied.
    pub fn compact(&mut self, index: LogIndex, data: Vec<u8>) -> Result<(), CompactError> {
        let meta = self.snapshot_meta(index)?;
        self.log.compact(Snapshot { meta, data });
        Ok(())
    }

    /// What a snapshot of the applied state at `index` records of the
    /// log: the term there and the membership then. For a driver that
    /// encodes its state elsewhere and comes back with
    /// [`Raft::compact_to`].
    ///
    /// # Errors
    /// `CompactError` when `index` is already compacted or not applied.
    pub fn snapshot_meta(&self, index: LogIndex) -> Result<SnapshotMeta, CompactError> {
        if index <= self.log.snapshot().meta.index {
            return Err(CompactError::AlreadyCompacted);
        }
        if index > self.log.applied {
            return Err(CompactError::NotApplied);
        }
        let term = self.log.term_at(index).ok_or(CompactError::NotApplied)?;
        let membership = self.membership_at(index);
        if membership.members.is_empty() {
            // A snapshot without a membership is refused by every peer (and
            // would strand a learner that needs it): compact later, past a
            // configuration entry.
            return Err(CompactError::MembershipUnknown);
        }
        Ok(SnapshotMeta {
            index,
            term,
            membership,
        })
    }

    /// Compacts the log up to a snapshot built from
    /// [`Raft::snapshot_meta`], which may have been asked for a while ago.
    ///
    /// # Errors
    /// `AlreadyCompacted` when a newer snapshot came meanwhile (from the
    /// leader, or another compaction); `Mismatch` when the log no longer
    /// says what the snapshot's meta does.
    pub fn compact_to(&mut self, snapshot: Snapshot) -> Result<(), CompactError> {
        if self.snapshot_meta(snapshot.meta.index)? != snapshot.meta {
            return Err(CompactError::Mismatch);
        }
        self.log.compact(snapshot);
        Ok(())
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        }
    }

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.messages.push(Message {
            from: self.config.id,
            to,
            term: self.term,
            body,
        });
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout = self.rng.range(
            self.config.election_ticks_min,
            self.config.election_ticks_max,
        );
    }

    /// Whether a leader was heard from within the minimum election
    /// timeout: then no vote is granted to anybody else.
    pub(crate) fn in_leader_lease(&self) -> bool {
        self.role == Role::Leader
            || self.now.saturating_sub(self.leader_contact) < self.config.election_ticks_min
    }

    pub(crate) fn append_entry(&mut self, kind: EntryKind, data: Vec<u8>) -> LogIndex {
        let index = self.log.last_index() + 1;
        self.log.push(Entry {
            term: self.term,
            index,
            kind,
            data,
        });
        index
    }

    // ---- queries ----

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader this node knows of in its term (0: none).
    pub fn leader(&self) -> NodeId {
        self.leader
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn commit_index(&self) -> LogIndex {
        self.log.commit
    }

    /// The last index known to be on this node's disk.
    pub fn stable_index(&self) -> LogIndex {
        self.log.stable_index()
    }

    /// The last index handed out for applying (and acknowledged by `advance`).
    pub fn applied_index(&self) -> LogIndex {
        self.log.applied
    }

    pub fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }

    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// The configuration in force (the latest in the log, even uncommitted).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The latest snapshot (what `compact` or a leader installed).
    pub fn snapshot(&self) -> &Snapshot {
        self.log.snapshot()
    }

    /// Leader only: the index of this term's first entry; reads and IDs
    /// are served only once it is applied.
    pub fn term_start_index(&self) -> LogIndex {
        self.term_start_index
    }

    /// Leader only: every other member's match index.
    pub fn match_indexes(&self) -> BTreeMap<NodeId, LogIndex> {
        self.progress
            .iter()
            .map(|(id, progress)| (*id, progress.match_index))
            .collect()
    }
}

/// What no correct peer sends, whatever its state: a term over
/// [`TERM_MAX`], an index over [`INDEX_MAX`], a log position from a later
/// term than the message's,
/// entries that do not follow `prev_index` one by one, a snapshot without
/// a membership.
fn check_message(message: &Message) -> Result<(), &'static str> {
    let term = message.term;
    if term > TERM_MAX {
        return Err("term over the cap");
    }
    match &message.body {
        MessageBody::Vote { last_term, .. } if *last_term > term => {
            Err("vote for a log from a later term")
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            ..
        } => check_entries(term, *prev_index, *prev_term, entries),
        MessageBody::Snapshot { snapshot, .. } => {
            let meta = &snapshot.meta;
            if meta.index > INDEX_MAX {
                return Err("snapshot index over the cap");
            }
            if meta.term > term {
                return Err("snapshot from a later term");
            }
            if meta.membership.members.is_empty() {
                return Err("snapshot without a membership");
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The entries of an AppendEntries of `term`: consecutive from
/// `prev_index + 1`, terms never decreasing and never above `term`.
fn check_entries(
    term: Term,
    prev_index: LogIndex,
    prev_term: Term,
    entries: &[Entry],
) -> Result<(), &'static str> {
    if prev_term > term {
        return Err("append after an entry from a later term");
    }
    if prev_index > INDEX_MAX || entries.len() as u64 > INDEX_MAX - prev_index {
        return Err("entry index over the cap");
    }
    let mut index = prev_index;
    let mut last_term = prev_term;
    for entry in entries {
        index += 1;
        if entry.index != index {
            return Err("entries not consecutive");
        }
        if entry.term < last_term || entry.term > term {
            return Err("entry term out of order");
        }
        last_term = entry.term;
    }
    Ok(())
}

impl Config {
    /// Checks the settings once, up front.
    ///
    /// # Errors
    /// `ConfigError` naming the first unusable setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |why: &str| Err(ConfigError(why.to_string()));
        if self.id == 0 {
            return fail("node id 0 is reserved");
        }
        if self.election_ticks_min < 2 || self.election_ticks_max <= self.election_ticks_min {
            return fail("election timeout range must be at least 2 ticks and not empty");
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_ticks_min {
            return fail("heartbeat interval must be shorter than the election timeout");
        }
        if self.lease_margin_ticks >= self.election_ticks_min {
            return fail("lease margin must be shorter than the election timeout");
        }
        if self.max_append_entries == 0 || self.max_append_bytes == 0 || self.max_inflight == 0 {
            return fail("append limits must be positive");
        }
        Ok(())
    }
}
