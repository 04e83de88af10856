//! A simulated cluster: the nodes, the network between them, the clock and
//! the checker, with the operations a scenario drives (tick, deliver,
//! propose, crash, restart, stop) each followed by the Ready loop of the
//! node it touched and the whole-cluster safety checks. Owns the nodes and
//! the committed membership the simulator acts on; decides nothing random
//! about faults (that is the scenario's job).

use std::collections::BTreeMap;

use ticketd::raft::{Config, Member, Membership, Message, NodeId, Raft, Role, Snapshot, Term};

use crate::checks::Checker;
use crate::disk::Disk;
use crate::ids::IdsMode;
use crate::network::{NetParams, Network};
use crate::node::{SimNode, Stall};
use crate::rng::{Rng, splitmix64};

/// Hand-driven scenarios deliver in rounds; a conversation this long
/// means the nodes are ping-ponging forever.
const SETTLE_ROUNDS_MAX: usize = 10_000;
/// Far beyond what a handful of nodes has in flight even under heavy
/// duplication: more means answers breed messages (a storm), which would
/// otherwise eat all memory before any other check fires.
const IN_FLIGHT_MAX: usize = 20_000;

/// The timing the simulator runs with unless a scenario changes it.
pub fn sim_config() -> Config {
    Config {
        id: 0,
        election_ticks_min: 10,
        election_ticks_max: 20,
        heartbeat_ticks: 2,
        lease_margin_ticks: 2,
        max_append_entries: 64,
        max_append_bytes: 1 << 20,
        max_inflight: 4,
        seed: 0,
    }
}

pub fn member(id: NodeId, voter: bool) -> Member {
    Member {
        voter,
        peer_addr: format!("sim-{id}:9001"),
        http_addr: format!("sim-{id}:8001"),
        incarnation: id,
    }
}

/// Voters `ids`.
pub fn membership_of(ids: &[NodeId]) -> Membership {
    let mut membership = Membership::default();
    for &id in ids {
        membership.members.insert(id, member(id, true));
    }
    membership
}

/// In which order a stalled node handles what piled up when it resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeOrder {
    /// The missed ticks first, then the held messages: the driver's
    /// order, which the `raft` docs ("Time") require.
    TicksFirst,
    /// The held messages on the pre-stall clock, then the ticks: the
    /// driver's order before the fix, kept to show the checker catches it.
    MessagesFirst,
}

/// A node clock that runs fast or slow: on every `period`-th tick it ticks
/// `ticks_on_beat` times (0 or 2) instead of once.
#[derive(Clone, Copy, Debug)]
pub struct Drift {
    pub period: u64,
    pub ticks_on_beat: u64,
}

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, SimNode>,
    pub net: Network,
    pub check: Checker,
    pub now: u64,
    pub rng: Rng,
    template: Config,
    /// Restart seeds come from here, so a restart never replays the
    /// previous incarnation's election timeouts.
    boot_rng: Rng,
    /// The last committed membership the simulator has acted on, and the
    /// index of its entry.
    pub committed_members: Membership,
    config_index: u64,
    next_payload: u64,
    /// Messages handed to a running node so far.
    pub delivered: u64,
    /// Decides, per tick, whether a node steps all its due messages
    /// before one `Ready` (as the driver drains its inbox) or one `Ready`
    /// after each; its own stream, so the other choices stay as they were.
    batch_rng: Rng,
    /// Clocks that do not run at the common rate.
    pub drift: BTreeMap<NodeId, Drift>,
    /// Nodes added from now on take the Ready shortcuts (`SimNode::early`).
    pub early: bool,
    /// Nodes added from now on write a leader's batches asynchronously
    /// (`SimNode::async_writes`).
    pub async_writes: bool,
    /// Per mille of steps in which a node's next queued write fails (the
    /// map is full).
    pub write_failures_per_mille: u64,
    /// Per mille of steps in which a node's next snapshot install is torn
    /// by a crash (`Disk::tear_install`).
    pub torn_installs_per_mille: u64,
    pub resume_order: ResumeOrder,
    /// Whether leaders serve IDs after every step (`ids::serve`).
    pub ids_mode: IdsMode,
    pub trace: bool,
}

impl Cluster {
    /// `voters` fresh nodes 1..=voters, all bootstrapped with the same
    /// membership.
    pub fn new(
        seed: u64,
        template: Config,
        params: NetParams,
        voters: u64,
    ) -> Result<Cluster, String> {
        let ids: Vec<NodeId> = (1..=voters).collect();
        let membership = membership_of(&ids);
        let disks = ids
            .iter()
            .map(|&id| (id, Disk::bootstrap(membership.clone())))
            .collect();
        Cluster::with_disks(seed, template, params, disks)
    }

    /// Nodes started from the given disks (hand-built logs); the committed
    /// membership is the first disk's snapshot membership.
    pub fn with_disks(
        seed: u64,
        template: Config,
        params: NetParams,
        disks: Vec<(NodeId, Disk)>,
    ) -> Result<Cluster, String> {
        let mut rng = Rng::new(seed);
        let committed_members = disks
            .first()
            .map(|(_, d)| d.snapshot.meta.membership.clone())
            .unwrap_or_default();
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            net: Network::new(params, rng.fork()),
            check: Checker::default(),
            now: 0,
            boot_rng: rng.fork(),
            rng,
            template,
            committed_members,
            config_index: 0,
            next_payload: 0,
            delivered: 0,
            batch_rng: Rng::new(splitmix64(seed ^ 0xba7c4)),
            drift: BTreeMap::new(),
            early: false,
            async_writes: false,
            write_failures_per_mille: 0,
            torn_installs_per_mille: 0,
            resume_order: ResumeOrder::TicksFirst,
            ids_mode: IdsMode::Off,
            trace: std::env::var_os("SIM_TRACE").is_some(),
        };
        for (id, disk) in disks {
            cluster.add_node(id, disk)?;
        }
        Ok(cluster)
    }

    pub fn add_node(&mut self, id: NodeId, disk: Disk) -> Result<(), String> {
        let mut config = self.template.clone();
        config.id = id;
        config.seed = splitmix64(self.boot_rng.next_u64());
        let mut node = SimNode::start(config, disk)?;
        node.early = self.early;
        node.async_writes = self.async_writes;
        self.nodes.insert(id, node);
        self.log(|| format!("node {id} started"));
        self.after_event(Vec::new())
    }

    /// Changes one node's settings; takes effect at its next (re)start.
    pub fn configure(&mut self, id: NodeId, change: impl FnOnce(&mut Config)) {
        if let Some(node) = self.nodes.get_mut(&id) {
            change(&mut node.config);
        }
    }

    pub fn node(&self, id: NodeId) -> &SimNode {
        &self.nodes[&id]
    }

    /// The core of a running node (panics otherwise: for scenarios).
    pub fn raft(&self, id: NodeId) -> &Raft {
        match self.nodes.get(&id).and_then(|n| n.raft()) {
            Some(raft) => raft,
            None => panic!("node {id} is not running"),
        }
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.is_up())
    }

    pub fn up_ids(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.is_up())
            .map(|n| n.id)
            .collect()
    }

    /// The running leader of the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter_map(|n| n.raft())
            .filter(|r| r.role() == Role::Leader)
            .max_by_key(|r| r.term())
            .map(|r| r.id())
    }

    pub fn crash(&mut self, id: NodeId) {
        let survives = self.rng.chance(500);
        if let Some(node) = self.nodes.get_mut(&id)
            && node.is_up()
        {
            node.crash(survives);
            self.log(|| format!("node {id} crashed (unsynced write kept: {survives})"));
        }
    }

    /// The node dies in its next Ready, between the early work and the
    /// write (only meaningful with `early`).
    pub fn crash_in_ready(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.crash_in_ready = true;
            self.log(|| format!("node {id} will crash in its next Ready"));
        }
    }

    /// Every node, and those added later, take the Ready shortcuts.
    pub fn set_early(&mut self, early: bool) {
        self.early = early;
        for node in self.nodes.values_mut() {
            node.early = early;
        }
    }

    /// Every node, and those added later, write a leader's batches
    /// asynchronously.
    pub fn set_async_writes(&mut self, on: bool) {
        self.async_writes = on;
        for node in self.nodes.values_mut() {
            node.async_writes = on;
        }
    }

    /// Asynchronous writes finish: on each node, in random order, the
    /// oldest queued write completes with probability `per_mille`, and
    /// then maybe the next.
    pub fn complete_writes(&mut self, per_mille: u64) -> Result<(), String> {
        let mut ids: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.has_queued() && !n.is_stalled())
            .map(|(id, _)| *id)
            .collect();
        self.rng.shuffle(&mut ids);
        if self.write_failures_per_mille > 0 {
            for node in self.nodes.values_mut() {
                // The driver's look at the free space: full, or not.
                if node.storage_full && self.rng.chance(100) {
                    node.storage_full = false;
                } else if !node.storage_full && self.rng.chance(5) {
                    node.storage_full = true;
                }
            }
        }
        if self.torn_installs_per_mille > 0 {
            for node in self.nodes.values_mut() {
                node.tear_next_install = self.rng.chance(self.torn_installs_per_mille);
            }
        }
        for id in ids {
            if self.rng.chance(self.write_failures_per_mille)
                && let Some(node) = self.nodes.get_mut(&id)
            {
                node.fail_next_write = true;
            }
            while self.rng.chance(per_mille) {
                let now = self.now;
                let Some(node) = self.nodes.get_mut(&id) else {
                    break;
                };
                if !node
                    .complete_write(&mut self.net, &mut self.check, now)
                    .map_err(|e| format!("tick {now}: {e}"))?
                {
                    break;
                }
                self.log(|| format!("node {id} finished a write"));
                self.with_node(id, |_| ())?;
            }
        }
        Ok(())
    }

    pub fn restart(&mut self, id: NodeId) -> Result<(), String> {
        let seed = splitmix64(self.boot_rng.next_u64());
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if node.is_up() || node.stopped {
            return Ok(());
        }
        node.restart(seed)
            .map_err(|e| format!("tick {}: {e}", self.now))?;
        self.check.on_restart(id);
        self.log(|| format!("node {id} restarted"));
        self.after_event(Vec::new())
    }

    /// Removed from the cluster: stopped for good.
    pub fn stop(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.raft = None;
            node.stopped = true;
            self.log(|| format!("node {id} stopped (removed)"));
        }
    }

    /// Runs `action` on a running node's core, then its Ready loop and the
    /// checks. `None` when the node is not running.
    pub fn with_node<R>(
        &mut self,
        id: NodeId,
        action: impl FnOnce(&mut Raft) -> R,
    ) -> Result<Option<R>, String> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(None);
        };
        if node.is_stalled() {
            return Ok(None);
        }
        let Some(raft) = node.raft.as_mut() else {
            return Ok(None);
        };
        let result = action(raft);
        let configs = node
            .drain_ready(&mut self.net, &mut self.check, self.now)
            .map_err(|e| format!("tick {}: {e}", self.now))?;
        self.after_event(configs)?;
        Ok(Some(result))
    }

    /// One tick of a node's clock; a stalled node misses it (and catches
    /// up when it resumes).
    pub fn tick_node(&mut self, id: NodeId) -> Result<(), String> {
        if let Some(stall) = self.nodes.get_mut(&id).and_then(|n| n.stall.as_mut()) {
            stall.missed_ticks += 1;
            return Ok(());
        }
        let now = self.now;
        if let Some(tick) = self.with_node(id, |raft| {
            raft.tick();
            raft.now_tick()
        })? && let Some(node) = self.nodes.get_mut(&id)
        {
            node.tick_times.ran(tick, now);
        }
        Ok(())
    }

    /// The node's thread stalls for `ticks` (a long fsync): no ticks, no
    /// steps, messages held; then everything at once (`resume_due`).
    pub fn stall(&mut self, id: NodeId, ticks: u64) {
        let until = self.now + ticks;
        if let Some(node) = self.nodes.get_mut(&id)
            && node.is_up()
            && !node.is_stalled()
        {
            node.stall = Some(Stall {
                until,
                ..Stall::default()
            });
            self.log(|| format!("node {id} stalls until {until}"));
        }
    }

    /// Stalled nodes whose stall is over handle what piled up, in
    /// `resume_order`.
    pub fn resume_due(&mut self) -> Result<(), String> {
        let now = self.now;
        let due: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.stall.as_ref().is_some_and(|s| s.until <= now))
            .map(|n| n.id)
            .collect();
        for id in due {
            let Some(stall) = self.nodes.get_mut(&id).and_then(|n| n.stall.take()) else {
                continue;
            };
            self.log(|| {
                format!(
                    "node {id} resumes: {} ticks missed, {} messages held",
                    stall.missed_ticks,
                    stall.held.len()
                )
            });
            if self.resume_order == ResumeOrder::TicksFirst {
                for _ in 0..stall.missed_ticks {
                    self.tick_node(id)?;
                }
            }
            for message in stall.held {
                self.deliver(message)?;
            }
            if self.resume_order == ResumeOrder::MessagesFirst {
                for _ in 0..stall.missed_ticks {
                    self.tick_node(id)?;
                }
            }
        }
        Ok(())
    }

    /// Every running node ticks once, in random order: all clocks run at
    /// the same rate. Then stalls that are over end (their node caught up
    /// to this instant).
    pub fn tick_all(&mut self) -> Result<(), String> {
        let mut ids = self.up_ids();
        self.rng.shuffle(&mut ids);
        for id in ids {
            let ticks = match self.drift.get(&id) {
                Some(drift) if self.now.is_multiple_of(drift.period) => drift.ticks_on_beat,
                _ => 1,
            };
            for _ in 0..ticks {
                self.tick_node(id)?;
            }
        }
        self.resume_due()
    }

    pub fn deliver(&mut self, message: Message) -> Result<(), String> {
        self.deliver_batch(message.to, vec![message])
    }

    /// Steps `messages` (all to `to`, in order) before one `Ready`, as
    /// the driver steps what its inbox holds before it builds one.
    fn deliver_batch(&mut self, to: NodeId, messages: Vec<Message>) -> Result<(), String> {
        if self.trace && std::env::var_os("SIM_TRACE_MESSAGES").is_some() {
            for message in &messages {
                eprintln!("[{}] deliver {message:?}", self.now);
            }
        }
        if let Some(stall) = self.nodes.get_mut(&to).and_then(|n| n.stall.as_mut()) {
            stall.held.extend(messages);
            return Ok(());
        }
        self.delivered += messages.len() as u64;
        self.with_node(to, |raft| {
            for message in messages {
                raft.step(message);
            }
        })
        .map(|_| ())
    }

    /// What the network has due arrives: in send order with a `Ready`
    /// after each message, or, at half the ticks, each node's messages
    /// stepped together before one `Ready`.
    pub fn deliver_due(&mut self) -> Result<(), String> {
        let due = self.net.take_due(self.now);
        if due.len() < 2 || !self.batch_rng.chance(500) {
            for message in due {
                self.deliver(message)?;
            }
            return Ok(());
        }
        let mut by_node: BTreeMap<NodeId, Vec<Message>> = BTreeMap::new();
        for message in due {
            by_node.entry(message.to).or_default().push(message);
        }
        for (to, messages) in by_node {
            self.deliver_batch(to, messages)?;
        }
        Ok(())
    }

    /// One unit of simulated time: every clock ticks, then what the
    /// network has due arrives.
    pub fn step(&mut self) -> Result<(), String> {
        self.now += 1;
        self.tick_all()?;
        self.deliver_due()?;
        if self.async_writes {
            self.complete_writes(600)?;
        }
        crate::ids::serve(self)?;
        if self.net.in_flight() > IN_FLIGHT_MAX {
            return Err(format!(
                "tick {}: message storm: {} messages in flight",
                self.now,
                self.net.in_flight()
            ));
        }
        Ok(())
    }

    /// Hand mode: delivers everything in flight, in send order and with no
    /// delay, until the network is quiet; `allow` drops what it rejects
    /// and may rewrite what it lets through.
    pub fn settle(&mut self, mut allow: impl FnMut(&mut Message) -> bool) -> Result<(), String> {
        for _ in 0..SETTLE_ROUNDS_MAX {
            let messages = self.net.take_all();
            if messages.is_empty() {
                return Ok(());
            }
            for mut message in messages {
                if allow(&mut message) {
                    self.deliver(message)?;
                }
            }
        }
        Err("the network never went quiet".into())
    }

    /// Proposes a fresh, unique payload; `None` when refused or not running.
    pub fn propose(&mut self, id: NodeId) -> Result<Option<(Term, u64, u64)>, String> {
        self.next_payload += 1;
        let payload = self.next_payload;
        let result = self.with_node(id, |raft| raft.propose(payload.to_be_bytes().to_vec()))?;
        match result {
            Some(Ok((term, index))) => {
                self.log(|| format!("node {id} accepted proposal {payload} at ({index}, {term})"));
                Ok(Some((term, index, payload)))
            }
            _ => Ok(None),
        }
    }

    /// Compacts a running node's log up to `index` (driver side: the core
    /// first, then the disk). False when the core refused.
    pub fn compact(&mut self, id: NodeId, index: u64) -> Result<bool, String> {
        self.compact_at(id, index, false)
    }

    /// Queues a compaction up to `index` on the node's writer: the disk,
    /// then the core, take it when the writer gets to it.
    pub fn compact_later(&mut self, id: NodeId, index: u64) -> Result<bool, String> {
        self.compact_at(id, index, true)
    }

    fn compact_at(&mut self, id: NodeId, index: u64, later: bool) -> Result<bool, String> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(false);
        };
        if node.is_stalled() {
            return Ok(false);
        }
        let data = node.app.encode_up_to(index);
        let now = self.now;
        // The driver's compaction waits for the queued writes: the disk
        // must hold the entry it compacts to. After a failed write a
        // leader may have applied entries its disk lacks: no compaction.
        while node
            .complete_write(&mut self.net, &mut self.check, now)
            .map_err(|e| format!("tick {now}: {e}"))?
        {}
        let done = if node.raft().is_some_and(|raft| raft.stable_index() < index) {
            None
        } else if later {
            // As the driver does: the state goes to the writer, which
            // stores it while the node goes on; the core compacts after.
            let meta = match node.raft.as_ref() {
                Some(raft) if node.compaction.is_none() => raft.snapshot_meta(index).ok(),
                _ => None,
            };
            let behind = self.rng.below(3);
            meta.map(|meta| {
                node.compaction = Some(Snapshot { meta, data });
                node.compaction_behind = behind;
                "queued a compaction"
            })
        } else {
            let compacted = node
                .raft
                .as_mut()
                .is_some_and(|raft| raft.compact(index, data.clone()).is_ok());
            if compacted {
                node.disk
                    .compact(index, data)
                    .map_err(|e| format!("tick {now}: node {id}: {e}"))?;
            }
            compacted.then_some("compacted")
        };
        // Whatever happened, the queued writes completed above (one may
        // have failed and rewound the core): hand out what that left.
        let configs = node
            .drain_ready(&mut self.net, &mut self.check, now)
            .map_err(|e| format!("tick {now}: {e}"))?;
        if let Some(what) = done {
            self.log(|| format!("node {id} {what} up to {index}"));
        }
        self.after_event(configs)?;
        Ok(done.is_some())
    }

    /// After every event: act on newly committed memberships (stop removed
    /// nodes), then check the whole cluster.
    fn after_event(&mut self, configs: Vec<ticketd::raft::Entry>) -> Result<(), String> {
        for entry in configs {
            if entry.index <= self.config_index {
                continue;
            }
            let membership = Membership::decode(&entry.data)
                .map_err(|e| format!("tick {}: config entry {}: {e}", self.now, entry.index))?;
            let removed: Vec<NodeId> = self
                .committed_members
                .members
                .keys()
                .filter(|id| !membership.contains(**id))
                .copied()
                .collect();
            self.log(|| {
                format!(
                    "membership committed at {}: {:?}",
                    entry.index,
                    membership.members.keys()
                )
            });
            self.committed_members = membership;
            self.config_index = entry.index;
            for id in removed {
                self.stop(id);
            }
        }
        self.check
            .after_event(&self.nodes, self.now)
            .map_err(|e| format!("tick {}: {e}", self.now))
    }

    pub fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{}] {}", self.now, what());
        }
    }

    /// One line per node, for failure reports and traces.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for node in self.nodes.values() {
            let line = match node.raft() {
                Some(r) => format!(
                    "node {}: {:?} term {} leader {} commit {} applied {} log [{}, {}] lease until {:?} voters {:?} members {:?}{}\n",
                    node.id,
                    r.role(),
                    r.term(),
                    r.leader(),
                    r.commit_index(),
                    r.applied_index(),
                    r.first_index(),
                    r.last_index(),
                    node.lease_until(self.now),
                    r.membership().voters().collect::<Vec<_>>(),
                    r.membership().members.keys().collect::<Vec<_>>(),
                    if node.is_stalled() { " (stalled)" } else { "" }
                ),
                None if node.stopped => format!("node {}: stopped\n", node.id),
                None => format!("node {}: crashed\n", node.id),
            };
            out.push_str(&line);
        }
        out
    }
}
