//! The node's side of membership: the committed configuration (what the
//! transport's roster and the removal check go by), the peers the
//! transport dials (members, and removed members the leader still tells
//! of their removal), the attributes each member publishes through the
//! log, and stopping once this node is removed or refused for lost data.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::driver::Driver;
use crate::raft::{ConfChange, Membership, NodeId, Role};
use crate::transport::Roster;
use crate::wire::{Refusal, RefusalReason};

/// How often a leader compares what members announce with the log.
const ATTRIBUTES_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// What the driver keeps about membership beyond the core's view.
pub(super) struct MemberState {
    /// The configuration of the last applied Config entry (or snapshot):
    /// committed, unlike the core's latest one.
    pub applied: Membership,
    /// Our data directory's incarnation, published through the log.
    pub incarnation: u64,
    /// Peer addresses of members that left the configuration, for as long
    /// as the leader still replicates their removal to them.
    departed_addrs: BTreeMap<NodeId, String>,
    /// The departing members the transport was last given.
    departing: Vec<NodeId>,
    /// `applied` changed since the transport's roster was set.
    roster_stale: bool,
    /// This node was removed (or refused): it serves nothing and stops.
    pub stopping: bool,
    last_attributes_check: Instant,
}

impl MemberState {
    pub fn new(applied: Membership, incarnation: u64) -> MemberState {
        MemberState {
            applied,
            incarnation,
            departed_addrs: BTreeMap::new(),
            departing: Vec::new(),
            roster_stale: true,
            stopping: false,
            last_attributes_check: Instant::now(),
        }
    }
}

impl Driver {
    /// A committed configuration was applied (a Config entry, or the
    /// membership of an installed snapshot).
    pub(super) fn applied_membership(&mut self, membership: Membership) {
        self.members.applied = membership;
        self.members.roster_stale = true;
        let me = self.raft.id();
        let applied = &self.members.applied;
        if !applied.contains(me) && applied.max_id() >= me && !self.members.stopping {
            info!("node {me} was removed from the cluster; it stops");
            self.stop_removed();
        }
    }

    /// Marks the data directory as removed and stops: HTTP answers 503
    /// meanwhile, and the process exits 0 once the node thread is done.
    ///
    /// Called while a `Ready` is handled: it touches only the store (its
    /// own record, beside whatever the writer thread is writing), never
    /// the core.
    fn stop_removed(&mut self) {
        self.members.stopping = true;
        if let Err(e) = self.writer.store().mark_removed() {
            error!("cannot mark the data directory as removed: {e}");
        }
        self.stop_now();
    }

    /// A peer refused our handshake.
    fn refused(&mut self, refusal: Refusal) {
        if self.members.stopping {
            return;
        }
        match refusal.reason {
            RefusalReason::Removed => {
                info!("a peer says: {}; this node stops", refusal.message);
                self.stop_removed();
            }
            RefusalReason::DataLost => {
                error!("{}", refusal.message);
                self.members.stopping = true;
                self.shared.set_fatal(refusal.message);
                self.stop_now();
            }
        }
    }

    /// Gives the transport the peers to dial (members, and departing
    /// members the leader still replicates to) and who may connect.
    pub(super) fn update_transport(&mut self, membership_changed: bool, old: &Membership) {
        if membership_changed {
            for (id, member) in &old.members {
                if !self.raft.membership().contains(*id) {
                    self.members
                        .departed_addrs
                        .insert(*id, member.peer_addr.clone());
                }
            }
        }
        let departing = self.raft.departing();
        if membership_changed || departing != self.members.departing {
            self.members
                .departed_addrs
                .retain(|id, _| departing.contains(id));
            let mut peers = self.peer_addresses();
            for id in &departing {
                if let Some(addr) = self.members.departed_addrs.get(id) {
                    peers.insert(*id, addr.clone());
                }
            }
            self.transport.set_peers(&peers);
            self.members.departing = departing;
        }
        if self.members.roster_stale {
            self.members.roster_stale = false;
            let applied = &self.members.applied;
            self.transport.set_roster(Roster {
                max_id: applied.max_id(),
                incarnations: applied
                    .members
                    .iter()
                    .map(|(id, m)| (*id, m.incarnation))
                    .collect(),
            });
        }
    }

    /// Periodic membership work: refusals from peers, and (leader) the
    /// attributes members announce that the log does not record yet.
    pub(super) fn periodic_members(&mut self) {
        if let Some(refusal) = self.transport.take_refusal() {
            self.refused(refusal);
        }
        if self.members.last_attributes_check.elapsed() < ATTRIBUTES_CHECK_INTERVAL {
            return;
        }
        self.members.last_attributes_check = Instant::now();
        if self.raft.role() != Role::Leader || !self.leader_ready || self.members.stopping {
            return;
        }
        if let Some(change) = self.attributes_to_publish() {
            // Refused while another change is pending: the next round
            // tries again.
            if let Err(e) = self.raft.propose_conf_change(change.clone()) {
                log::debug!("cannot publish {change:?} yet: {e}");
            }
        }
    }

    /// The first member whose announced HTTP address or incarnation the
    /// log does not record. Ours comes from our config; the others' from
    /// their authenticated connections. A recorded incarnation is never
    /// replaced (a new one means lost data: the transport refuses it).
    fn attributes_to_publish(&self) -> Option<ConfChange> {
        let me = self.raft.id();
        let membership = self.raft.membership();
        for (id, member) in &membership.members {
            let (http_addr, incarnation) = if *id == me {
                (self.config.http_addr.clone(), self.members.incarnation)
            } else {
                match self.transport.announced(*id) {
                    Some(announced) => (announced.http_addr, announced.incarnation),
                    None => continue,
                }
            };
            let incarnation = match (member.incarnation, incarnation) {
                (0, announced) => announced,
                (recorded, announced) if announced == 0 || announced == recorded => recorded,
                (recorded, announced) => {
                    warn!(
                        "node {id} announces incarnation {announced:#x}, the log has {recorded:#x}; not published"
                    );
                    continue;
                }
            };
            if http_addr.is_empty() && incarnation == member.incarnation {
                continue;
            }
            let http_addr = if http_addr.is_empty() {
                member.http_addr.clone()
            } else {
                http_addr
            };
            if http_addr != member.http_addr || incarnation != member.incarnation {
                return Some(ConfChange::SetAttributes {
                    id: *id,
                    http_addr,
                    incarnation,
                });
            }
        }
        None
    }

    /// A new member without an id gets the next one never used.
    pub(super) fn assign_id(&self, change: ConfChange) -> ConfChange {
        match change {
            ConfChange::AddLearner {
                id: 0,
                peer_addr,
                http_addr,
            } => ConfChange::AddLearner {
                id: self.raft.membership().max_id().saturating_add(1),
                peer_addr,
                http_addr,
            },
            other => other,
        }
    }
}
