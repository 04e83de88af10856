//! The randomized run of one seed: a fault phase (delays, reordering, loss,
//! duplication, symmetric and one-way partitions, crashes and restarts,
//! compaction, membership changes and leadership transfers, proposals to
//! whoever leads, clock drift below the lease margin, stalled node threads
//! that then handle their backlog at once) checked after every
//! event, then a liveness phase: all faults heal, a leader must be elected
//! within a fixed bound, and a fresh proposal must commit and every member
//! catch up within that bound plus the time the append limits need to ship
//! the backlog. Owns the fault schedule only.

use ticketd::raft::{ConfChange, Config, Membership, NodeId};

use crate::app::fnv64;
use crate::cluster::{Cluster, Drift, sim_config};
use crate::disk::Disk;
use crate::ids::IdsMode;
use crate::network::NetParams;
use crate::rng::Rng;

/// After the heal, the allowance for electing a leader and committing one
/// entry (10 maximal election timeouts), on top of shipping the backlog.
const SETTLE_TICKS: u64 = 200;
/// What `Raft`'s append limits count per entry beyond its data, plus the
/// simulator's 8-byte payloads.
const ENTRY_BYTES: usize = 32 + 8;
/// Nodes ever created by one run, removed ones included.
const NODES_MAX: usize = 9;
/// Running members at most (voters and learners).
const MEMBERS_MAX: usize = 7;

/// How one seed misbehaves, drawn up front.
#[derive(Clone, Debug)]
struct Plan {
    voters: u64,
    fault_ticks: u64,
    propose_per_mille: u64,
    crash_per_mille: u64,
    restart_per_mille: u64,
    partition_per_mille: u64,
    heal_per_mille: u64,
    conf_change_per_mille: u64,
    transfer_per_mille: u64,
    compact_per_mille: u64,
    stall_per_mille: u64,
    /// Stalls last up to this long: shorter and longer than an election
    /// timeout.
    stall_ticks_max: u64,
}

impl Plan {
    fn draw(rng: &mut Rng) -> Plan {
        // Some seeds are calm, some stormy; an all-storm run would rarely
        // commit anything worth checking.
        let storm = rng.range(1, 4);
        Plan {
            voters: if rng.chance(500) { 3 } else { 5 },
            fault_ticks: rng.range(800, 2500),
            propose_per_mille: rng.range(100, 600),
            crash_per_mille: rng.below(4 * storm),
            // Some seeds reboot nodes within a tick or two: a follower that
            // acknowledged a leader a moment ago must not vote right away.
            restart_per_mille: rng.pick(&[20, 100, 600]).unwrap_or(100),
            partition_per_mille: rng.below(4 * storm),
            heal_per_mille: rng.range(10, 60),
            conf_change_per_mille: rng.below(8),
            transfer_per_mille: rng.below(6),
            compact_per_mille: rng.below(40),
            stall_per_mille: rng.below(3 * storm),
            stall_ticks_max: rng.pick(&[5, 12, 40]).unwrap_or(12),
        }
    }
}

fn draw_net(rng: &mut Rng) -> NetParams {
    let long = rng.chance(300);
    NetParams {
        delay_ticks_max: rng.range(1, 4),
        loss_per_mille: if rng.chance(200) { 0 } else { rng.below(200) },
        duplicate_per_mille: rng.below(100),
        long_delay_per_mille: if long { rng.range(1, 10) } else { 0 },
        long_delay_ticks_max: 60,
    }
}

fn draw_config(rng: &mut Rng) -> ticketd::raft::Config {
    let mut config = sim_config();
    config.heartbeat_ticks = rng.range(1, 3);
    config.max_append_entries = rng.pick(&[1, 3, 64]).unwrap_or(64);
    config.max_append_bytes = rng.pick(&[16, 200, 1 << 20]).unwrap_or(1 << 20);
    config.max_inflight = rng.range(1, 8) as usize;
    config
}

/// Some clocks run up to `1 / period` fast or slow. The lease holds while
/// a follower's election timeout, on its clock, outlasts the leader's
/// lease on the leader's: `min / (1 + d) > (min - margin) / (1 - d)`, so
/// the drift stays below a third of `margin / min` on either side (about
/// 6% at 10 ticks and a margin of 2).
fn draw_drift(cluster: &mut Cluster, config: &Config, rng: &mut Rng) {
    let period_min = 3 * config.election_ticks_min / config.lease_margin_ticks.max(1) + 1;
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        let ticks_on_beat = rng.below(3);
        if ticks_on_beat != 1 {
            let period = rng.range(period_min, 2 * period_min);
            cluster.drift.insert(
                id,
                Drift {
                    period,
                    ticks_on_beat,
                },
            );
        }
    }
    cluster.log(|| format!("clock drift {:?}", cluster.drift));
}

/// What one seed did, for the summary line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    pub ticks: u64,
    pub committed: u64,
    pub leaders: u64,
    pub snapshots_installed: u64,
    pub torn_installs: u64,
    pub liveness_ticks: u64,
    pub catch_up_ticks: u64,
    pub ids_served: u64,
}

pub fn run_seed(seed: u64) -> Result<Outcome, String> {
    run_seed_with(seed, IdsMode::OnApply)
}

/// One random run whose leaders serve IDs in `ids` mode.
pub fn run_seed_with(seed: u64, ids: IdsMode) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed ^ 0x5EED_F00D);
    let plan = Plan::draw(&mut rng);
    let net = draw_net(&mut rng);
    let config = draw_config(&mut rng);
    let mut cluster = Cluster::new(seed, config.clone(), net, plan.voters)?;
    cluster.ids_mode = ids;
    if rng.chance(300) {
        draw_drift(&mut cluster, &config, &mut rng);
    }
    if rng.chance(500) {
        cluster.set_early(true);
    }
    if rng.chance(500) {
        cluster.set_async_writes(true);
        if rng.chance(500) {
            cluster.write_failures_per_mille = 1 + rng.below(20);
        }
    }
    if rng.chance(300) {
        cluster.torn_installs_per_mille = 100 + rng.below(800);
    }
    cluster.log(|| format!("plan {plan:?}\nnet {net:?}\nconfig {config:?}"));
    let result = run(&mut cluster, &plan, &mut rng, &config);
    if result.is_err() {
        cluster.log(|| cluster.describe());
    }
    result.map_err(|e| format!("{e}\n{}", cluster.describe()))
}

fn run(
    cluster: &mut Cluster,
    plan: &Plan,
    rng: &mut Rng,
    config: &Config,
) -> Result<Outcome, String> {
    for _ in 0..plan.fault_ticks {
        inject(cluster, plan, rng)?;
        cluster.step()?;
    }
    heal(cluster)?;
    let bound = liveness_bound(cluster, config);
    let liveness_ticks = commit_after_heal(cluster, bound)?;
    let catch_up_ticks = catch_up(cluster, bound)?;
    let stats = cluster.check.stats;
    Ok(Outcome {
        ticks: cluster.now,
        committed: cluster.check.committed_len(),
        leaders: stats.leaders,
        snapshots_installed: stats.snapshots_installed,
        torn_installs: stats.torn_installs,
        liveness_ticks,
        catch_up_ticks,
        ids_served: stats.ids_served,
    })
}

fn inject(cluster: &mut Cluster, plan: &Plan, rng: &mut Rng) -> Result<(), String> {
    if rng.chance(plan.propose_per_mille) {
        propose_to_a_leader(cluster, rng)?;
    }
    if rng.chance(plan.crash_per_mille)
        && let Some(id) = rng.pick(&cluster.up_ids())
    {
        if (cluster.early || cluster.async_writes) && rng.chance(500) {
            cluster.crash_in_ready(id);
        } else {
            cluster.crash(id);
        }
    }
    for id in crashed(cluster) {
        if rng.chance(plan.restart_per_mille) {
            cluster.restart(id)?;
        }
    }
    if rng.chance(plan.partition_per_mille) {
        partition(cluster, rng);
    }
    if !cluster.net.blocked.is_empty() && rng.chance(plan.heal_per_mille) {
        cluster.log(|| "partition healed".into());
        cluster.net.heal();
    }
    if rng.chance(plan.conf_change_per_mille) {
        change_membership(cluster, rng)?;
    }
    if rng.chance(plan.transfer_per_mille) {
        transfer(cluster, rng)?;
    }
    if rng.chance(plan.compact_per_mille) {
        compact(cluster, rng)?;
    }
    if rng.chance(plan.stall_per_mille) {
        // The leader is the interesting one to stall, or a follower it
        // counts on; either may be picked.
        let target = match cluster.leader() {
            Some(leader) if rng.chance(300) => Some(leader),
            _ => rng.pick(&cluster.up_ids()),
        };
        if let Some(id) = target {
            cluster.stall(id, rng.range(1, plan.stall_ticks_max + 1));
        }
    }
    Ok(())
}

fn crashed(cluster: &Cluster) -> Vec<NodeId> {
    cluster
        .nodes
        .values()
        .filter(|n| !n.is_up() && !n.stopped)
        .map(|n| n.id)
        .collect()
}

/// Any node that believes it leads, stale ones included.
fn propose_to_a_leader(cluster: &mut Cluster, rng: &mut Rng) -> Result<(), String> {
    let leaders: Vec<NodeId> = cluster
        .nodes
        .values()
        .filter(|n| {
            n.raft()
                .is_some_and(|r| r.role() == ticketd::raft::Role::Leader)
        })
        .map(|n| n.id)
        .collect();
    if let Some(id) = rng.pick(&leaders) {
        cluster.propose(id)?;
    }
    Ok(())
}

fn partition(cluster: &mut Cluster, rng: &mut Rng) {
    let mut ids: Vec<NodeId> = cluster
        .nodes
        .values()
        .filter(|n| !n.stopped)
        .map(|n| n.id)
        .collect();
    rng.shuffle(&mut ids);
    // The leader is the interesting one to cut off; put it first.
    if let Some(leader) = cluster.leader()
        && rng.chance(500)
        && let Some(at) = ids.iter().position(|&id| id == leader)
    {
        ids.swap(0, at);
    }
    match rng.below(5) {
        0 => {
            let (one, rest) = ids.split_at(1.min(ids.len()));
            cluster.net.partition(one, rest);
        }
        1 => {
            let cut = rng.range(1, (ids.len() as u64).max(2) - 1) as usize;
            let (a, b) = ids.split_at(cut.min(ids.len()));
            cluster.net.partition(a, b);
        }
        2 => {
            // The first node hears nobody, or nobody hears it.
            let inbound = rng.chance(500);
            for &other in &ids[1.min(ids.len())..] {
                let link = if inbound {
                    (other, ids[0])
                } else {
                    (ids[0], other)
                };
                cluster.net.block_one_way(link.0, link.1);
            }
        }
        _ => {
            for _ in 0..rng.range(1, 3) {
                if let (Some(from), Some(to)) = (rng.pick(&ids), rng.pick(&ids))
                    && from != to
                {
                    cluster.net.block_one_way(from, to);
                }
            }
        }
    }
    cluster.log(|| format!("partition: blocked {:?}", cluster.net.blocked));
}

fn change_membership(cluster: &mut Cluster, rng: &mut Rng) -> Result<(), String> {
    let Some(leader) = cluster.leader() else {
        return Ok(());
    };
    let membership = cluster.raft(leader).membership().clone();
    let voters: Vec<NodeId> = membership.voters().collect();
    let learners: Vec<NodeId> = membership
        .members
        .keys()
        .filter(|id| !membership.is_voter(**id))
        .copied()
        .collect();
    let change = match rng.below(3) {
        0 => match add_target(cluster, &membership)? {
            Some(id) => ConfChange::AddLearner {
                id,
                peer_addr: format!("sim-{id}:9001"),
                http_addr: format!("sim-{id}:8001"),
            },
            None => return Ok(()),
        },
        1 => {
            let mut removable = learners.clone();
            if voters.len() > 3 {
                removable.extend(&voters);
            }
            match rng.pick(&removable) {
                Some(id) => ConfChange::Remove { id },
                None => return Ok(()),
            }
        }
        _ => match rng.pick(&learners) {
            Some(id) => ConfChange::Promote { id },
            None => return Ok(()),
        },
    };
    let result = cluster.with_node(leader, |raft| raft.propose_conf_change(change.clone()))?;
    cluster.log(|| format!("node {leader} conf change {change:?}: {result:?}"));
    Ok(())
}

/// A node to add: a spare one that is in no membership yet (an earlier
/// add that never committed), else a brand new empty node.
fn add_target(cluster: &mut Cluster, membership: &Membership) -> Result<Option<NodeId>, String> {
    let live = cluster.nodes.values().filter(|n| !n.stopped).count();
    let spare = cluster.nodes.values().find(|n| {
        !n.stopped && !membership.contains(n.id) && !cluster.committed_members.contains(n.id)
    });
    if let Some(node) = spare {
        return Ok(Some(node.id));
    }
    if live >= MEMBERS_MAX || cluster.nodes.len() >= NODES_MAX {
        return Ok(None);
    }
    let id = cluster.nodes.keys().max().copied().unwrap_or(0) + 1;
    cluster.add_node(id, Disk::bootstrap(Membership::default()))?;
    Ok(Some(id))
}

fn transfer(cluster: &mut Cluster, rng: &mut Rng) -> Result<(), String> {
    let Some(leader) = cluster.leader() else {
        return Ok(());
    };
    let voters: Vec<NodeId> = cluster
        .raft(leader)
        .membership()
        .voters()
        .filter(|&v| v != leader)
        .collect();
    if let Some(to) = rng.pick(&voters) {
        let result = cluster.with_node(leader, |raft| raft.transfer_leader(to))?;
        cluster.log(|| format!("node {leader} transfer to {to}: {result:?}"));
    }
    Ok(())
}

fn compact(cluster: &mut Cluster, rng: &mut Rng) -> Result<(), String> {
    let Some(id) = rng.pick(&cluster.up_ids()) else {
        return Ok(());
    };
    let applied = cluster.raft(id).applied_index();
    let index = applied.saturating_sub(rng.below(8));
    if index > cluster.node(id).disk.snapshot.meta.index {
        if rng.chance(500) {
            cluster.compact_later(id, index)?;
        } else {
            cluster.compact(id, index)?;
        }
    }
    Ok(())
}

/// Every fault ends: partitions heal, the network turns reliable (still
/// delayed and reordered), every crashed member restarts.
fn heal(cluster: &mut Cluster) -> Result<(), String> {
    cluster.log(|| "=== heal ===".into());
    cluster.net.heal();
    cluster.net.params.loss_per_mille = 0;
    cluster.net.params.duplicate_per_mille = 0;
    cluster.net.params.long_delay_per_mille = 0;
    cluster.write_failures_per_mille = 0;
    cluster.torn_installs_per_mille = 0;
    for node in cluster.nodes.values_mut() {
        node.crash_in_ready = false;
        node.tear_next_install = false;
        node.fail_next_write = false;
        node.storage_full = false;
    }
    for id in crashed(cluster) {
        cluster.restart(id)?;
    }
    Ok(())
}

/// How long the healed cluster may take to commit, and then to bring every
/// member up to date: the fixed allowance, plus twice the time to ship
/// every entry some member lacks at the rate the append limits allow
/// (entries per message, messages per round trip).
///
/// Messages per round trip: at most two, whatever `max_inflight` allows.
/// This network delivers each tick's messages in random order, and a
/// follower takes an append only once it holds the one before, so of a
/// window of appends in flight it takes the in-order run 1, 2, …, k: on
/// average Σ 1/k! = e − 1 ≈ 1.7 of them, however wide the window. (A
/// bound that counted the whole window held by luck only: seeds with
/// one entry per message and a window of 8 came within 5 % of it.)
fn liveness_bound(cluster: &Cluster, config: &Config) -> u64 {
    let running = || cluster.nodes.values().filter_map(|n| n.raft());
    let last = running().map(|r| r.last_index()).max().unwrap_or(0);
    let lowest = running().map(|r| r.applied_index()).min().unwrap_or(0);
    let per_message = (config.max_append_bytes / ENTRY_BYTES).clamp(1, config.max_append_entries);
    let per_round = (per_message * config.max_inflight.min(2)) as u64;
    let round_trip = 2 * cluster.net.params.delay_ticks_max + config.heartbeat_ticks;
    SETTLE_TICKS + 2 * (last - lowest).div_ceil(per_round) * round_trip
}

/// Ticks until a proposal made after the heal is committed; proposes again
/// to each new leader (or term) until one is.
fn commit_after_heal(cluster: &mut Cluster, bound: u64) -> Result<u64, String> {
    let start = cluster.now;
    let mut proposals: Vec<(u64, u64, u64)> = Vec::new();
    let mut proposed_in: Option<(NodeId, u64)> = None;
    while cluster.now - start <= bound {
        let leader = cluster.leader();
        if leader.is_none() && cluster.now - start > SETTLE_TICKS && proposals.is_empty() {
            return Err(format!(
                "liveness: no leader within {SETTLE_TICKS} ticks after the heal"
            ));
        }
        if let Some(leader) = leader {
            let term = cluster.raft(leader).term();
            if proposed_in != Some((leader, term))
                && let Some(proposal) = cluster.propose(leader)?
            {
                proposals.push(proposal);
                proposed_in = Some((leader, term));
            }
        }
        cluster.step()?;
        let committed = proposals.iter().any(|&(term, index, payload)| {
            cluster
                .check
                .committed_at(index)
                .is_some_and(|a| a.term == term && a.hash == fnv64(&payload.to_be_bytes()))
        });
        if committed {
            return Ok(cluster.now - start);
        }
    }
    Err(format!(
        "liveness: no proposal committed within {bound} ticks after the heal \
         (proposals {proposals:?})"
    ))
}

/// Ticks until every member the leader knows has applied what is committed now.
fn catch_up(cluster: &mut Cluster, bound: u64) -> Result<u64, String> {
    let start = cluster.now;
    let target = cluster.check.committed_len();
    while cluster.now - start <= bound {
        if let Some(leader) = cluster.leader() {
            let members: Vec<NodeId> = cluster
                .raft(leader)
                .membership()
                .members
                .keys()
                .copied()
                .collect();
            let behind = members.iter().any(|&id| {
                cluster
                    .nodes
                    .get(&id)
                    .and_then(|n| n.raft())
                    .is_none_or(|r| r.applied_index() < target)
            });
            if !behind {
                return Ok(cluster.now - start);
            }
        }
        cluster.step()?;
    }
    Err(format!(
        "liveness: members did not all apply index {target} within {bound} ticks"
    ))
}
