//! The node thread's loop: wait for input or the next tick, drain every
//! input already waiting (group commit: one fsync for the whole batch),
//! tick the core, then handle `Ready`s until there are none.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::cadence::Cadence;
use super::compaction::Compaction;
use super::members::MemberState;
use super::status::{Counters, Shared};
use super::waiters::Waiters;
use super::writer::{Batch, Done, Job, Outcome as WriteOutcome, Work, Writer};
use super::{Input, NodeConfig, NodeError, PROPOSAL_TIMEOUT, Reply};
use crate::clock::BootInstant;
use crate::raft::{LogIndex, ProposeError, Raft, Ready, Role, Snapshot, Term, TickTimes};
use crate::store::{AppRecord, StoreError, Write};
use crate::ticket::{Command, Deadlines, Outcome, State};
use crate::transport::Transport;

/// Inputs handled per loop iteration at most, so ticks are never starved.
const DRAIN_MAX: usize = 16_384;
/// Missed ticks caught up at once, at most (10 s of 10 ms ticks).
const TICKS_CATCH_UP_MAX: u32 = 1000;
/// Below this much free map space, client writes answer 507.
const STORAGE_RESERVE_BYTES: u64 = 8 << 20;
/// Disk kept allocated past the end of the data file, and the free file
/// system space below which client writes answer 507: what is left
/// serves the writes that free space (close, release, unlock).
const DISK_RESERVE_BYTES: u64 = 4 << 20;
/// Bytes of log written between two looks at the free space, at most.
const USAGE_CHECK_BYTES: u64 = 32 << 10;

/// What an entry in flight was proposed for.
pub(super) enum Purpose {
    Client {
        reply: Reply<Outcome>,
        /// For a lock or claim with `?wait=`: the command and until when.
        wait: Option<(Command, Instant)>,
    },
    IdRefill {
        generation: u64,
    },
    /// Sessions whose deadline passed.
    Expiry {
        ids: Vec<u64>,
        term: Term,
    },
}

pub(super) struct Pending {
    pub term: Term,
    pub since: Instant,
    pub purpose: Purpose,
}

pub(super) struct Driver {
    pub config: NodeConfig,
    pub raft: Raft,
    pub writer: Writer,
    pub state: State,
    pub transport: Transport,
    pub shared: Arc<Shared>,
    /// Proposals waiting for their entry to apply, by log index.
    pub pending: BTreeMap<LogIndex, Pending>,
    /// Leader only: session deadlines, in ms since `started`.
    pub deadlines: Deadlines,
    pub waiters: Waiters,
    pub started: Instant,
    /// When each recent tick ran, to measure the lease in real time.
    tick_times: TickTimes<BootInstant>,
    next_tick: Instant,
    /// The (role, term) the ID pool and deadlines were set up for.
    pub(super) leadership: (Role, Term),
    /// This leader has applied its term's first entry and set up.
    pub leader_ready: bool,
    pub(super) id_generation: u64,
    /// The app record found on disk, checked once replay reaches it.
    recorded: Option<AppRecord>,
    pub storage_full: bool,
    /// Free map space at the last look, and a tenth of the map.
    room_left: u64,
    room_floor: u64,
    /// The map's size and the bytes in use, at the last look.
    storage_bytes: (u64, u64, u64),
    /// When the expiry pass is next due (every `--expire`, fixed rate).
    pub(super) expiry_cadence: Cadence,
    /// When to compact the log, and the compaction under way.
    pub compaction: Compaction,
    /// Bytes of log entries applied since the last snapshot.
    pub applied_bytes: u64,
    last_usage_check: Instant,
    bytes_since_usage_check: u64,
    /// When a shutdown was asked for; a leader first hands over.
    shutdown_at: Option<Instant>,
    /// The membership the transport and the status were last given.
    published_membership: crate::raft::Membership,
    last_counted: Instant,
    /// The last entry applied to `state` (a `Ready` handed out again
    /// after a failed write must not apply anything twice).
    pub applied_through: LogIndex,
    /// The committed configuration, and what follows from it.
    pub members: MemberState,
    /// The decoded state of the last snapshot the core took from a peer,
    /// with its index and term, for the `Ready` that installs it.
    installed_state: Option<(LogIndex, Term, Box<State>)>,
}

impl Driver {
    pub fn new(
        config: NodeConfig,
        raft: Raft,
        writer: Writer,
        state: State,
        transport: Transport,
        shared: Arc<Shared>,
        recorded: AppRecord,
    ) -> Driver {
        let now = Instant::now();
        let expiry_cadence = Cadence::new(now, config.expire_interval);
        Driver {
            // The snapshot's membership is committed; the log replayed on
            // top of it brings it up to date. The incarnation is boot's.
            members: MemberState::new(raft.snapshot().meta.membership.clone(), 0),
            next_tick: now + config.tick,
            config,
            raft,
            writer,
            state,
            transport,
            shared,
            pending: BTreeMap::new(),
            deadlines: Deadlines::new(),
            waiters: Waiters::default(),
            started: now,
            tick_times: TickTimes::default(),
            leadership: (Role::Follower, 0),
            leader_ready: false,
            id_generation: 0,
            recorded: Some(recorded),
            storage_full: false,
            room_left: 0,
            room_floor: u64::MAX,
            storage_bytes: (0, 0, 0),
            expiry_cadence,
            compaction: Compaction::new(now),
            applied_bytes: 0,
            last_usage_check: now,
            bytes_since_usage_check: 0,
            shutdown_at: None,
            published_membership: crate::raft::Membership::default(),
            last_counted: now,
            applied_through: 0,
            installed_state: None,
        }
    }

    /// Runs until shutdown; the process exits on a storage failure.
    pub fn run(mut self, inbox: Receiver<Input>) {
        self.begin();
        while !self.shutdown_done() {
            let wait = self.next_tick.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(wait) {
                Ok(input) => self.handle_input(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            for _ in 0..DRAIN_MAX {
                match inbox.try_recv() {
                    Ok(input) => self.handle_input(input),
                    Err(_) => break,
                }
            }
            while let Some(done) = self.writer.try_done() {
                self.written(done);
            }
            self.run_ticks();
            self.periodic();
            self.handle_ready();
            self.publish();
        }
        info!("node thread stops");
        self.finish_writes();
        self.writer.stop();
        self.fail_all_pending();
        self.transport.shutdown();
    }

    /// What the node does once before its first input: replay the log
    /// up to the snapshot's state.
    fn begin(&mut self) {
        self.applied_through = self.raft.snapshot().meta.index;
        self.check_recorded(self.applied_through);
        self.publish();
        self.handle_ready();
    }

    fn handle_input(&mut self, input: Input) {
        match input {
            Input::Peer(message) => {
                Counters::add(&self.shared.counters.messages_received, 1);
                // The core's clock must not lag the message (see the
                // `raft` docs, "Time"): after a stall, stepping a leader's
                // queued message on the pre-stall clock would record the
                // contact too early and end our vote refusal while that
                // leader's lease still runs.
                self.run_ticks();
                self.raft.step(message);
            }
            Input::PeerSnapshot { message, state } => {
                Counters::add(&self.shared.counters.messages_received, 1);
                self.step_snapshot(message, state);
            }
            Input::Propose {
                command,
                wait,
                reply,
            } => self.propose_client(command, wait, reply),
            Input::Refresh { session, reply } => {
                let _ = reply.send(self.refresh(session));
            }
            Input::View(reply) => super::view::answer(self.check_serving(), &self.state, reply),
            Input::Backup(reply) => {
                let position = (
                    self.members.cluster_id,
                    self.applied_through,
                    self.raft.term(),
                );
                super::view::answer_backup(self.check_serving(), &self.state, position, reply);
            }
            Input::ChangeMembers { change, reply } => self.change_members(change, reply),
            Input::Transfer { to, reply } => {
                let _ = reply.send(
                    self.raft
                        .transfer_leader(to)
                        .map_err(|e| self.propose_error(e)),
                );
            }
            Input::Join { request, reply } => self.join(request, reply),
            Input::Leave { reply } => {
                let _ = reply.send(self.leave());
            }
            Input::WakeIds | Input::Written => {}
            Input::Shutdown => self.begin_shutdown(),
        }
    }

    /// A leader hands leadership to its most up-to-date follower before
    /// it stops, so clients see no election timeout.
    fn begin_shutdown(&mut self) {
        if self.shutdown_at.is_some() {
            return;
        }
        self.shutdown_at = Some(Instant::now());
        if self.raft.role() != Role::Leader {
            return;
        }
        let me = self.raft.id();
        let membership = self.raft.membership().clone();
        let best = self
            .raft
            .match_indexes()
            .into_iter()
            .filter(|(id, _)| *id != me && membership.is_voter(*id))
            .max_by_key(|(_, matched)| *matched);
        if let Some((to, _)) = best {
            info!("handing leadership to node {to} before stopping");
            let _ = self.raft.transfer_leader(to);
        }
    }

    /// Stops without handing over (a removed or refused node).
    pub(super) fn stop_now(&mut self) {
        self.shutdown_at.get_or_insert_with(Instant::now);
    }

    /// Stop once asked and no longer leading (or after 3 s of trying).
    fn shutdown_done(&self) -> bool {
        self.shutdown_at.is_some_and(|at| {
            self.raft.role() != Role::Leader
                || self.raft.membership().voters().count() <= 1
                || at.elapsed() > Duration::from_secs(3)
        })
    }

    /// Whether this node may answer from its state now.
    pub fn check_serving(&self) -> Result<(), NodeError> {
        if self.members.stopping {
            return Err(NodeError::Unavailable(
                "this node is no longer a member of the cluster".into(),
            ));
        }
        if self.raft.role() != Role::Leader {
            return Err(self.not_leader());
        }
        if !self.leader_ready || self.lease_until().is_none_or(|t| BootInstant::now() >= t) {
            return Err(NodeError::NoLeader);
        }
        Ok(())
    }

    pub fn not_leader(&self) -> NodeError {
        match self.raft.leader() {
            0 => NodeError::NoLeader,
            id if id == self.raft.id() => NodeError::NoLeader,
            id => NodeError::NotLeader {
                leader_http: self.http_addr_of(id),
            },
        }
    }

    pub fn http_addr_of(&self, id: u64) -> Option<String> {
        self.raft
            .membership()
            .members
            .get(&id)
            .map(|m| m.http_addr.clone())
            .filter(|addr| !addr.is_empty())
    }

    pub fn propose_error(&self, error: ProposeError) -> NodeError {
        match error {
            ProposeError::NotLeader { .. } => self.not_leader(),
            ProposeError::Transferring => {
                NodeError::Unavailable("leadership transfer in progress; retry".into())
            }
            other => NodeError::Unavailable(other.to_string()),
        }
    }

    fn propose_client(&mut self, command: Command, wait: Option<Duration>, reply: Reply<Outcome>) {
        if let Err(e) = self.check_serving() {
            let _ = reply.send(Err(e));
            return;
        }
        // Writes that free space go ahead from the reserve (map and disk):
        // a full node must still let clients let go of what they hold.
        let frees = matches!(
            command,
            Command::CloseSession { .. } | Command::Release { .. } | Command::Unlock { .. }
        );
        if self.storage_full && !frees {
            let _ = reply.send(Err(NodeError::StorageFull));
            return;
        }
        let wait = wait.map(|w| (command.clone(), Instant::now() + w));
        self.propose(command, Purpose::Client { reply, wait });
    }

    /// Proposes `command`; a refusal is answered at once. Returns whether
    /// the core took it.
    pub fn propose(&mut self, command: Command, purpose: Purpose) -> bool {
        Counters::add(&self.shared.counters.proposals, 1);
        match self.raft.propose(command.encode()) {
            Ok((term, index)) => {
                let pending = Pending {
                    term,
                    since: Instant::now(),
                    purpose,
                };
                self.pending.insert(index, pending);
                true
            }
            Err(e) => {
                let error = self.propose_error(e);
                self.fail(purpose, error);
                false
            }
        }
    }

    pub fn fail(&mut self, purpose: Purpose, error: NodeError) {
        match purpose {
            Purpose::Client { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Purpose::IdRefill { generation } => self.shared.ids.refill_failed(generation),
            Purpose::Expiry { ids, term } => {
                // Refused (a transfer under way) or lost: the ids left the
                // deadline table when popped, so put them back as due, or
                // they would never expire under this leader and hold their
                // locks for good. A new leader rebuilds the table anyway.
                if self.leader_ready && term == self.raft.term() {
                    let now = self.now_ms();
                    for id in ids {
                        if self.state.session_exists(id) {
                            self.deadlines.refresh(id, now);
                        }
                    }
                }
            }
        }
    }

    fn refresh(&mut self, session: u64) -> Result<(), NodeError> {
        self.check_serving()?;
        let Some(ttl) = self.state.session_ttl_ms(session) else {
            return Err(NodeError::NotFound(format!("session {session} not found")));
        };
        if self.deadlines.deadline_ms(session).is_none() {
            // Its expiry is already proposed.
            return Err(NodeError::NotFound(format!("session {session} not found")));
        }
        let now = self.now_ms();
        self.deadlines.refresh(session, now + ttl);
        Ok(())
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn change_members(&mut self, change: crate::raft::ConfChange, reply: Reply<u64>) {
        let change = self.assign_id(change);
        let id = change.id();
        match self.raft.propose_conf_change(change) {
            Ok(_) => {
                let _ = reply.send(Ok(id));
            }
            Err(e) => {
                let _ = reply.send(Err(self.propose_error(e)));
            }
        }
    }

    /// Calls `tick` once per tick interval that has passed, recording
    /// when each ran.
    ///
    /// Called before every peer message is stepped, and once per loop:
    /// the core's clock never lags real time by more than a tick when it
    /// sees a message. A stall (a long fsync, a full mailbox) is caught
    /// up all at once, at most `TICKS_CATCH_UP_MAX` ticks: a clock that
    /// loses ticks only runs slow, which makes a follower refuse votes
    /// for longer, never shorter.
    fn run_ticks(&mut self) {
        let now = Instant::now();
        if self.next_tick > now {
            return;
        }
        let at = BootInstant::now();
        let mut ran = 0;
        while self.next_tick <= now && ran < TICKS_CATCH_UP_MAX {
            self.raft.tick();
            self.tick_times.ran(self.raft.now_tick(), at);
            self.next_tick += self.config.tick;
            ran += 1;
        }
        if self.next_tick <= now {
            self.next_tick = now + self.config.tick;
        }
    }

    /// The lease in real time (on `CLOCK_BOOTTIME`, which a suspended
    /// host does not stop): it counts from when the tick it started at
    /// ran here, which is never later than when the followers heard.
    pub fn lease_until(&self) -> Option<BootInstant> {
        self.tick_times
            .lease_until(&self.raft, BootInstant::now(), self.config.tick)
    }

    fn periodic(&mut self) {
        self.track_leadership();
        self.periodic_members();
        self.expire_pending();
        let now = Instant::now();
        self.expiry_pass(now);
        self.compaction_due(now);
        // Check often enough that writes stop before the map is full: by
        // time, and after every few dozen KiB written.
        if (now.duration_since(self.last_usage_check) >= Duration::from_millis(200)
            || self.bytes_since_usage_check >= USAGE_CHECK_BYTES)
            && self.check_usage()
        {
            self.last_usage_check = now;
            self.bytes_since_usage_check = 0;
        }
        self.refill_ids();
        self.run_waiters();
    }

    fn expire_pending(&mut self) {
        let now = Instant::now();
        let stale: Vec<LogIndex> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) > PROPOSAL_TIMEOUT)
            .map(|(index, _)| *index)
            .collect();
        for index in stale {
            if let Some(pending) = self.pending.remove(&index) {
                self.fail(
                    pending.purpose,
                    NodeError::Unavailable("not committed in time; retry".into()),
                );
            }
        }
    }

    /// False when the store was busy (a write is syncing): the next
    /// round looks again rather than wait for it.
    fn check_usage(&mut self) -> bool {
        let usage = self.writer.try_store().map(|mut store| {
            store.keep_disk_reserve(DISK_RESERVE_BYTES);
            store.usage()
        });
        let Some(usage) = usage else {
            return false;
        };
        if let Ok(usage) = usage {
            self.storage_bytes = (usage.map_size_bytes, usage.used_bytes, usage.wal_bytes);
            self.room_left = usage.available_bytes;
            self.room_floor = usage.map_size_bytes / 10;
            let map_full =
                usage.available_bytes < STORAGE_RESERVE_BYTES.min(usage.map_size_bytes / 10);
            let disk_full = usage
                .fs_free_bytes
                .is_some_and(|free| free < DISK_RESERVE_BYTES);
            let full = map_full || disk_full;
            if full != self.storage_full {
                warn!(
                    "storage {}: {} of {} map bytes used, {} file system bytes free",
                    if full { "full" } else { "available again" },
                    usage.used_bytes,
                    usage.map_size_bytes,
                    usage
                        .fs_free_bytes
                        .map_or_else(|| "?".to_string(), |f| f.to_string())
                );
            }
            self.storage_full = full;
        }
        true
    }

    /// Handles `Ready`s until the core has nothing more.
    fn handle_ready(&mut self) {
        for _ in 0..64 {
            if !self.raft.has_ready() {
                return;
            }
            let mut ready = self.raft.ready();
            if self.raft.lease_start().is_none() {
                // A TimeoutNow may be among the messages: the pool must
                // stop serving before another node can be elected.
                self.shared.ids.set_lease(None);
            }
            if ready.must_sync && ready.may_write_async() && self.room_to_write_async() {
                self.queue_write(ready);
                continue;
            }
            if ready.must_sync {
                // Written in place, after everything queued before it.
                let epoch = self.writer.epoch;
                self.finish_writes();
                if self.writer.epoch != epoch {
                    // A queued write failed and the core rewound: this
                    // Ready assumed it would land. Drop it (its messages
                    // are lost, which Raft tolerates); the core hands the
                    // work out again.
                    return;
                }
            }
            // The disk is the slow part: replicate and answer what is
            // already durable while this batch is written (see `Ready`).
            let early = ready.take_early_messages();
            self.send_messages(early);
            let mut committed = std::mem::take(&mut ready.committed);
            let later = committed.split_off(ready.committed_durable().min(committed.len()));
            self.apply_entries(committed);
            if !self.persist(&ready) {
                return;
            }
            let messages = std::mem::take(&mut ready.messages);
            self.send_messages(messages);
            self.apply_entries(later);
            self.raft.advance();
        }
    }

    /// A durable leader's batch: replicate, write on the writer thread,
    /// then apply, and hold the other messages until it is on disk.
    ///
    /// The write is queued before the entries that committed are applied:
    /// applying answers their clients, and each answer wakes a thread
    /// that may take this one's CPU, so queued after them the fdatasync
    /// started only once every client of the last commit was woken. The
    /// app record written with the batch is then the state before this
    /// `Ready`'s entries, an earlier consistent pair.
    fn queue_write(&mut self, mut ready: Ready) {
        let early = ready.take_early_messages();
        self.send_messages(early);
        let committed = std::mem::take(&mut ready.committed);
        let job = Job {
            epoch: self.writer.epoch,
            work: Work::Write(Batch {
                entries: std::mem::take(&mut ready.entries),
                hard_state: ready.hard_state,
                app: AppRecord {
                    high: self.state.high(),
                    applied: self.applied_through,
                },
                messages: std::mem::take(&mut ready.messages),
            }),
        };
        if !self.raft.advance_async() {
            error!("the core refused an asynchronous write it offered");
            std::process::exit(1);
        }
        if !self.writer.queue(job) {
            self.storage_failure("write", StoreError::Io("the writer thread is gone".into()));
        }
        self.apply_entries(committed);
    }

    /// Waits until every queued write is done.
    pub(super) fn finish_writes(&mut self) {
        while self.writer.queued() > 0 {
            match self.writer.wait_done() {
                Some(done) => self.written(done),
                None => self.storage_failure(
                    "write",
                    StoreError::Io("the writer thread stopped with writes queued".into()),
                ),
            }
        }
    }

    /// Writes go to the writer thread only with room to spare: a failed
    /// one (map full) leaves a leader that applied entries its own disk
    /// lacks, unable to compact until they are written again.
    fn room_to_write_async(&self) -> bool {
        let left = self.room_left.saturating_sub(self.bytes_since_usage_check);
        !self.storage_full && left >= 2 * STORAGE_RESERVE_BYTES.min(self.room_floor)
    }

    /// A queued write is done: count it, send what waited for it, and let
    /// the core count this node's copy.
    fn written(&mut self, done: Done) {
        let Done { job, outcome } = done;
        let batch = match job.work {
            Work::Write(batch) => batch,
            Work::Compact { snapshot, .. } => return self.compacted(snapshot, outcome),
            Work::Abandoned => return self.compaction_abandoned(),
        };
        match outcome {
            WriteOutcome::Written {
                micros,
                synced,
                split,
            } => {
                let counters = &self.shared.counters;
                if synced {
                    let entries = batch.entries.len();
                    counters.persisted(micros, split.lock_wait, split.sync, entries);
                }
                Counters::add(&counters.entries_persisted, batch.entries.len() as u64);
                let bytes: usize = batch.entries.iter().map(|e| e.data.len() + 32).sum();
                self.bytes_since_usage_check += bytes as u64;
                self.send_messages(batch.messages);
                if let Some(last) = batch.entries.last() {
                    self.raft.persisted(last.index, last.term);
                }
            }
            WriteOutcome::Failed(e) if e.is_full() => {
                if job.epoch == self.writer.epoch {
                    error!("{e}; writes are refused until space is freed");
                    self.storage_full = true;
                    self.raft.write_failed();
                    self.writer.epoch += 1;
                }
            }
            WriteOutcome::Failed(e) => self.storage_failure("write", e),
            WriteOutcome::Dropped => {}
        }
    }

    fn send_messages(&mut self, messages: Vec<crate::raft::Message>) {
        Counters::add(&self.shared.counters.messages_sent, messages.len() as u64);
        for message in messages {
            self.transport.send(message);
        }
    }

    /// A peer's snapshot, whose state the transport's reader already
    /// decoded: keep that state if the core installs the snapshot.
    fn step_snapshot(&mut self, message: crate::raft::Message, state: Box<State>) {
        let crate::raft::MessageBody::Snapshot { snapshot, .. } = &message.body else {
            return self.raft.step(message);
        };
        let meta = (snapshot.meta.index, snapshot.meta.term);
        self.raft.step(message);
        let now = &self.raft.snapshot().meta;
        if (now.index, now.term) == meta {
            self.installed_state = Some((meta.0, meta.1, state));
        }
    }

    /// The state machine a `Ready`'s snapshot replaces ours with.
    fn install_state(&mut self, snapshot: &Snapshot) {
        let meta = (snapshot.meta.index, snapshot.meta.term);
        match self.installed_state.take() {
            Some((index, term, state)) if (index, term) == meta => {
                self.state = *state;
            }
            // Handed out again after a failed write: already installed.
            _ if self.applied_through == meta.0 => {}
            _ => match State::decode_snapshot(&snapshot.data) {
                Ok(state) => self.state = state,
                Err(e) => {
                    // Unreachable from peer input: every peer snapshot was
                    // decoded before the core saw it (`Input::PeerSnapshot`).
                    error!("the core installed a snapshot that does not decode: {e}");
                    std::process::exit(1);
                }
            },
        }
        self.applied_through = meta.0;
        // Proposals the snapshot passed over are never applied here, so
        // nothing else would answer them before the proposal timeout:
        // whether they committed is unknown to this node, as after any
        // lost leadership.
        let passed: Vec<LogIndex> = self.pending.range(..=meta.0).map(|(i, _)| *i).collect();
        for index in passed {
            if let Some(pending) = self.pending.remove(&index) {
                self.fail(
                    pending.purpose,
                    NodeError::Unavailable("leadership changed before commit; retry".into()),
                );
            }
        }
    }

    /// Step 1 of a `Ready`: one WAL batch, one fdatasync. False when
    /// it could not be written (the map is full): nothing else of this
    /// `Ready` may happen; the core hands it out again.
    fn persist(&mut self, ready: &Ready) -> bool {
        if let Some(snapshot) = &ready.snapshot {
            self.install_state(snapshot);
            self.applied_membership(snapshot.meta.membership.clone());
        }
        if !ready.must_sync {
            return true;
        }
        let write = Write {
            snapshot: ready.snapshot.as_ref(),
            entries: &ready.entries,
            hard_state: ready.hard_state.as_ref(),
            app: Some(AppRecord {
                high: self.state.high(),
                applied: self.applied_through,
            }),
        };
        let started = Instant::now();
        let mut store = self.writer.store();
        let lock_wait = started.elapsed().as_micros() as u64;
        let result = store.persist(&write);
        let sync = store.last_sync().as_micros() as u64;
        drop(store);
        match result {
            Ok(()) => {
                let counters = &self.shared.counters;
                let micros = started.elapsed().as_micros() as u64;
                let entries = ready.entries.len();
                counters.persisted(micros, lock_wait, sync, entries);
                Counters::add(&counters.entries_persisted, ready.entries.len() as u64);
                let bytes: usize = ready.entries.iter().map(|e| e.data.len() + 32).sum();
                self.bytes_since_usage_check += bytes as u64;
                true
            }
            Err(e) if e.is_full() => {
                if !self.storage_full {
                    error!("{e}; writes are refused until space is freed");
                }
                self.storage_full = true;
                false
            }
            Err(e) => {
                self.storage_failure("write", e);
                false
            }
        }
    }

    /// The disk failed under us: continuing could lose acknowledged data.
    pub(super) fn storage_failure(&self, what: &str, e: StoreError) {
        error!("storage {what} failed, stopping: {e}");
        std::process::exit(1);
    }

    fn fail_all_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for (_, p) in pending {
            self.fail(
                p.purpose,
                NodeError::Unavailable("node is shutting down".into()),
            );
        }
        self.waiters.fail_all();
    }

    pub fn peer_addresses(&self) -> BTreeMap<u64, String> {
        self.raft
            .membership()
            .members
            .iter()
            .map(|(id, m)| (*id, m.peer_addr.clone()))
            .collect()
    }

    /// Publishes the status for HTTP handlers and the lease for the pool,
    /// and gives the transport a changed membership (it is in force as
    /// soon as it is appended).
    fn publish(&mut self) {
        // Comparing the membership is cheap; copying it is not, so the
        // transport and the member list are rebuilt only when it changed
        // (or, for addresses learnt from handshakes, a few times a second).
        let membership_changed = *self.raft.membership() != self.published_membership;
        let old = if membership_changed {
            std::mem::replace(
                &mut self.published_membership,
                self.raft.membership().clone(),
            )
        } else {
            crate::raft::Membership::default()
        };
        self.update_transport(membership_changed, &old);
        let lease = self.lease_until().filter(|_| self.leader_ready);
        self.shared.ids.set_lease(lease);
        let removed = self.members.stopping;
        // A node that is no longer a member sends nobody anywhere.
        let leader = if removed { 0 } else { self.raft.leader() };
        // Counting locks walks every resource: a few times a second is
        // plenty for a status page.
        let recount = self.last_counted.elapsed() >= Duration::from_millis(250);
        let members = (membership_changed || recount).then(|| self.members_with_http());
        let leader_http = if leader == 0 || leader == self.raft.id() {
            None
        } else {
            self.http_addr_of(leader)
        };
        let storage_full = self.storage_full;
        let counts = if recount {
            self.last_counted = Instant::now();
            Some((
                self.state.session_count() as u64,
                self.state.lock_count() as u64,
            ))
        } else {
            None
        };
        let snapshot_index = self.raft.snapshot().meta.index;
        let last_index = self.raft.last_index();
        let follower_lag = if self.raft.role() == Role::Leader {
            self.raft
                .match_indexes()
                .into_iter()
                .map(|(id, matched)| (id, last_index.saturating_sub(matched)))
                .collect()
        } else {
            Vec::new()
        };
        let counters = &self.shared.counters;
        counters.peer_connects.store(
            self.transport.connects(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let (storage_map_bytes, storage_used_bytes, storage_wal_bytes) = self.storage_bytes;
        let ids_reserved_max = self.state.high();
        let waiters = u64::try_from(self.waiters.len()).unwrap_or(u64::MAX);
        self.shared.update(|status| {
            status.ids_reserved_max = ids_reserved_max;
            if leader != 0 && leader != status.leader {
                Counters::add(&counters.leader_changes, 1);
            }
            status.storage_map_bytes = storage_map_bytes;
            status.storage_used_bytes = storage_used_bytes;
            status.storage_wal_bytes = storage_wal_bytes;
            status.follower_lag = follower_lag;
            status.role = self.raft.role();
            status.term = self.raft.term();
            status.leader = leader;
            status.leader_http = leader_http;
            status.commit = self.raft.commit_index();
            status.applied = self.raft.applied_index();
            status.first_index = self.raft.first_index();
            status.last_index = self.raft.last_index();
            status.snapshot_index = snapshot_index;
            if let Some(members) = members {
                status.members = members;
            }
            status.lease_until = lease;
            if let Some((sessions, locks)) = counts {
                status.sessions = sessions;
                status.locks = locks;
            }
            status.waiters = waiters;
            status.storage_full = storage_full;
            status.removed = removed;
        });
    }

    /// The members as the log records them (HTTP addresses only as
    /// published, never as a connection announced them).
    fn members_with_http(&self) -> Vec<(u64, crate::raft::Member)> {
        self.raft
            .membership()
            .members
            .iter()
            .map(|(id, m)| (*id, m.clone()))
            .collect()
    }

    /// Checks the replayed state against the record written with it,
    /// once replay reaches the recorded index.
    pub fn check_recorded(&mut self, index: LogIndex) {
        match self.recorded {
            Some(recorded) if recorded.applied == index => {
                self.recorded = None;
                if recorded.high != self.state.high() {
                    error!(
                        "data directory is inconsistent: at index {index} the ID counter replays to {} but {} was recorded",
                        self.state.high(),
                        recorded.high
                    );
                    std::process::exit(1);
                }
            }
            Some(recorded) if recorded.applied < index => self.recorded = None,
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
