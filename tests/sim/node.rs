//! One simulated node: the real `Raft` core (absent while crashed), its
//! simulated disk and application, and the Ready loop that drives them in
//! exactly the order the core's contract demands. Owns one node's state;
//! the network and the cross-node checks are handed in.

use std::collections::VecDeque;

use ticketd::raft::{
    CompactError, Config, Entry, EntryKind, Message, NodeId, Raft, Ready, Snapshot, Term, TickTimes,
};

use crate::app::App;
use crate::checks::Checker;
use crate::disk::Disk;
use crate::ids::{IdPool, IdsMode};
use crate::network::Network;

/// A Ready loop that never runs dry is a core bug, not a long batch.
const READY_ROUNDS_MAX: usize = 10_000;

pub struct SimNode {
    pub id: NodeId,
    pub config: Config,
    /// `None` while crashed or stopped.
    pub raft: Option<Raft>,
    pub disk: Disk,
    /// In memory only: rebuilt from the disk's snapshot on restart.
    pub app: App,
    /// Removed from the cluster for good.
    pub stopped: bool,
    /// Takes the Ready shortcuts: a durable leader's appends go out, and
    /// entries already on disk are applied, before the write.
    pub early: bool,
    /// Dies in its next Ready, after the early work and before the write.
    pub crash_in_ready: bool,
    /// Dies in the middle of writing its next Ready's snapshot, if it has
    /// one (`Disk::tear_install`).
    pub tear_next_install: bool,
    /// Writes a durable leader's batches asynchronously
    /// (`Raft::advance_async`): they complete later, in order, when the
    /// cluster says so, and a crash loses those not complete.
    pub async_writes: bool,
    /// Asynchronous writes not on disk yet, oldest first, each with the
    /// messages that wait for it.
    pub pending: VecDeque<(Ready, Vec<Message>)>,
    /// The next queued write fails (the map is full): it and every write
    /// queued after it are dropped (a compaction is not) and the core
    /// rewinds, as the driver's writer does.
    pub fail_next_write: bool,
    /// A compaction queued on the writer, as the driver queues it: the
    /// disk stores it, and then the core takes it (`Raft::compact_to`),
    /// when it completes.
    pub compaction: Option<Snapshot>,
    /// Writes queued after the compaction that reach the disk before it
    /// (the driver queues it once encoded, behind whatever came meanwhile).
    pub compaction_behind: u64,
    /// The driver's `storage_full`: set by a failed write (or a look at
    /// the free space); writes are then made in place.
    pub storage_full: bool,
    /// Failed writes so far.
    pub failures: u64,
    /// When each recent tick of this core ran, in simulated time: the
    /// driver's measure of the lease (`TickTimes`), shared with it.
    pub tick_times: TickTimes<u64>,
    /// The node thread is stalled (a long fsync): it neither ticks nor
    /// steps, and what arrives waits in its mailbox.
    pub stall: Option<Stall>,
    /// The leader's ID pool and how it takes ranges.
    pub ids: IdPool,
    pub ids_mode: IdsMode,
}

/// A stall in progress.
#[derive(Debug, Default)]
pub struct Stall {
    pub until: u64,
    /// Ticks the clock would have run meanwhile.
    pub missed_ticks: u64,
    /// Messages that arrived meanwhile, in arrival order.
    pub held: Vec<Message>,
}

impl SimNode {
    pub fn start(config: Config, disk: Disk) -> Result<SimNode, String> {
        let mut node = SimNode {
            id: config.id,
            config,
            raft: None,
            disk,
            app: App::default(),
            stopped: false,
            early: false,
            crash_in_ready: false,
            tear_next_install: false,
            async_writes: false,
            pending: VecDeque::new(),
            fail_next_write: false,
            compaction: None,
            compaction_behind: 0,
            storage_full: false,
            failures: 0,
            tick_times: TickTimes::default(),
            stall: None,
            ids: IdPool::default(),
            ids_mode: IdsMode::Off,
        };
        node.boot()?;
        Ok(node)
    }

    fn boot(&mut self) -> Result<(), String> {
        let raft = Raft::new(self.config.clone(), self.disk.persisted())
            .map_err(|e| format!("node {}: Raft::new refused its own disk: {e}", self.id))?;
        self.app = App::decode(&self.disk.snapshot.data)?;
        self.raft = Some(raft);
        self.tick_times = TickTimes::default();
        Ok(())
    }

    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    pub fn is_stalled(&self) -> bool {
        self.stall.is_some()
    }

    /// Until when this node may serve under its lease, in simulated time,
    /// as the driver computes it (`Driver::lease_until`): from when the
    /// tick its lease counts from ran here. `None` without a lease, and
    /// once the core counts it over (`TickTimes::lease_until`).
    pub fn lease_until(&self, now: u64) -> Option<u64> {
        let raft = self.raft()?;
        if !raft.lease_valid() {
            return None;
        }
        let began = self.tick_times.lease_began(raft, now)?;
        Some(began + raft.lease_ticks())
    }

    /// Drops everything not on disk.
    pub fn crash(&mut self, unsynced_survives: bool) {
        self.raft = None;
        self.app = App::default();
        self.pending.clear();
        self.compaction = None;
        self.stall = None;
        self.ids.reset(None);
        self.disk.crash(unsynced_survives);
    }

    pub fn restart(&mut self, seed: u64) -> Result<(), String> {
        self.config.seed = seed;
        self.boot()
    }

    pub fn raft(&self) -> Option<&Raft> {
        self.raft.as_ref()
    }

    /// Handles Ready batches until the core has none. Returns the Config
    /// entries applied, for the cluster to act on membership changes.
    pub fn drain_ready(
        &mut self,
        net: &mut Network,
        check: &mut Checker,
        now: u64,
    ) -> Result<Vec<Entry>, String> {
        let mut configs = Vec::new();
        for _ in 0..READY_ROUNDS_MAX {
            let Some(raft) = self.raft.as_mut() else {
                return Ok(configs);
            };
            if !raft.has_ready() {
                return Ok(configs);
            }
            let mut ready = raft.ready();
            let term = raft.term();
            // The driver's conditions: a batch with entries, and room.
            if self.async_writes && ready.may_write_async() && ready.must_sync && !self.storage_full
            {
                self.send(net, now, ready.take_early_messages())?;
                let committed = std::mem::take(&mut ready.committed);
                self.apply(check, term, &committed, &mut configs)?;
                let messages = std::mem::take(&mut ready.messages);
                let Some(raft) = self.raft.as_mut() else {
                    return Ok(configs);
                };
                if !raft.advance_async() {
                    return Err(self.fail("advance_async refused a Ready that may_write_async"));
                }
                self.pending.push_back((ready, messages));
                if std::mem::take(&mut self.crash_in_ready) {
                    self.crash(false);
                    return Ok(configs);
                }
                continue;
            }
            // A batch written in place waits for every queued write; if
            // one failed, the core rewound and this Ready is stale: the
            // driver drops it and the core hands the work out again.
            if ready.must_sync {
                let failures = self.failures;
                while self.complete_write(net, check, now)? {}
                if self.failures != failures {
                    continue;
                }
            }
            let mut done = 0;
            if self.early {
                self.send(net, now, ready.take_early_messages())?;
                done = ready.committed_durable();
                self.apply(check, term, &ready.committed[..done], &mut configs)?;
            }
            if std::mem::take(&mut self.crash_in_ready) {
                self.crash(false);
                return Ok(configs);
            }
            // The driver writes nothing for a commit-only batch; this disk
            // models it as a write a crash may lose, which must not get
            // ahead of the queued writes.
            if ready.must_sync
                && ready.snapshot.is_some()
                && std::mem::take(&mut self.tear_next_install)
            {
                self.disk.tear_install(&ready).map_err(|e| self.fail(&e))?;
                check.on_torn_install();
                self.crash(false);
                return Ok(configs);
            }
            if ready.must_sync || !self.has_queued() {
                let written = self.disk.persist(&ready).map_err(|e| self.fail(&e))?;
                check.on_written(self.id, &written)?;
            }
            if let Some(snapshot) = &ready.snapshot {
                self.app = App::decode(&snapshot.data).map_err(|e| self.fail(&e))?;
                check.on_snapshot(self.id, term, &snapshot.meta, &self.app)?;
            }
            self.send(net, now, ready.messages)?;
            self.apply(check, term, &ready.committed[done..], &mut configs)?;
            if let Some(raft) = self.raft.as_mut() {
                raft.advance();
            }
        }
        Err(self.fail("has_ready() never turns false"))
    }

    /// The entry at `index` as it will be once the queued writes are on
    /// disk.
    pub fn log_entry(&self, index: u64) -> Option<&Entry> {
        for (ready, _) in self.pending.iter().rev() {
            if let Some(first) = ready.entries.first()
                && index >= first.index
                && let Some(entry) = ready.entries.get((index - first.index) as usize)
            {
                return Some(entry);
            }
        }
        self.disk.entry(index)
    }

    /// Puts the oldest asynchronous write on disk, sends what waited for
    /// it and tells the core. False when none was queued.
    pub fn complete_write(
        &mut self,
        net: &mut Network,
        check: &mut Checker,
        now: u64,
    ) -> Result<bool, String> {
        if self.compaction.is_some() && (self.pending.is_empty() || self.compaction_behind == 0) {
            if let Some(snapshot) = self.compaction.take() {
                self.finish_compaction(snapshot)?;
            }
            return Ok(true);
        }
        if self.compaction.is_some() {
            self.compaction_behind -= 1;
        }
        if self.pending.is_empty() {
            return Ok(false);
        }
        if std::mem::take(&mut self.fail_next_write) {
            // The driver's writer drops every job of the failed one's
            // epoch queued after it, but not a compaction: its snapshot
            // (of entries on disk before) is stored already, off the
            // writer, and completes next.
            self.pending.clear();
            self.compaction_behind = 0;
            self.storage_full = true;
            self.failures += 1;
            if let Some(raft) = self.raft.as_mut() {
                raft.write_failed();
            }
            return Ok(true);
        }
        let Some((ready, messages)) = self.pending.pop_front() else {
            return Ok(false);
        };
        let written = self.disk.persist(&ready).map_err(|e| self.fail(&e))?;
        check.on_written(self.id, &written)?;
        self.send(net, now, messages)?;
        if let (Some(raft), Some(last)) = (self.raft.as_mut(), ready.entries.last()) {
            raft.persisted(last.index, last.term);
        }
        Ok(true)
    }

    /// Writes or a compaction wait on the writer.
    pub fn has_queued(&self) -> bool {
        !self.pending.is_empty() || self.compaction.is_some()
    }

    /// The queued compaction reaches the disk, then the core, which may
    /// have installed a newer snapshot from the leader meanwhile.
    fn finish_compaction(&mut self, snapshot: Snapshot) -> Result<(), String> {
        let index = snapshot.meta.index;
        let app = App::decode(&snapshot.data).map_err(|e| self.fail(&e))?;
        let last = app.applied.last().map_or((0, 0), |a| (a.index, a.term));
        if last != (index, snapshot.meta.term) {
            return Err(self.fail(&format!(
                "a compaction's meta says ({index}, {}) but its data ends at {last:?}",
                snapshot.meta.term
            )));
        }
        self.disk
            .compact(index, snapshot.data.clone())
            .map_err(|e| self.fail(&e))?;
        if self.disk.snapshot.meta != snapshot.meta {
            return Err(self.fail(&format!(
                "a compaction at {index} was queued as {:?} but the disk has {:?}",
                snapshot.meta, self.disk.snapshot.meta
            )));
        }
        let Some(raft) = self.raft.as_mut() else {
            return Ok(());
        };
        match raft.compact_to(snapshot) {
            Ok(()) | Err(CompactError::AlreadyCompacted) => Ok(()),
            Err(e) => Err(self.fail(&format!("compact_to({index}): {e}"))),
        }
    }

    fn send(&self, net: &mut Network, now: u64, messages: Vec<Message>) -> Result<(), String> {
        for message in messages {
            if message.from != self.id {
                return Err(self.fail(&format!("sends a message from {}", message.from)));
            }
            net.send(now, message);
        }
        Ok(())
    }

    fn apply(
        &mut self,
        check: &mut Checker,
        term: Term,
        entries: &[Entry],
        configs: &mut Vec<Entry>,
    ) -> Result<(), String> {
        for entry in entries {
            let applied = self.app.apply(entry).map_err(|e| self.fail(&e))?;
            check.on_applied(self.id, term, applied)?;
            if let Some(range) = self.app.last_range {
                self.ids
                    .on_applied(self.ids_mode, entry.index, entry.term, range);
            }
            if entry.kind == EntryKind::Config {
                configs.push(entry.clone());
            }
        }
        Ok(())
    }

    fn fail(&self, what: &str) -> String {
        format!("node {}: {what}", self.id)
    }
}
