//! The node's side of membership: the committed configuration (what the
//! transport's roster and the removal check go by), the peers the
//! transport dials (members, and removed members the leader still tells
//! of their removal), the attributes each member publishes through the
//! log, and stopping once this node is removed or refused for lost data.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::driver::Driver;
use super::{NodeError, oneshot};
use crate::raft::{ConfChange, Membership, NodeId, ProposeError, Role};
use crate::transport::Roster;
use crate::transport::request_leave;
use crate::wire::{JoinAnswer, JoinRequest, LeaveRequest, MemberRequest, Refusal, RefusalReason};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How often a leader compares what members announce with the log.
const ATTRIBUTES_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// How long a joiner's request waits for its `AddLearner` to commit;
/// then the joiner is told to retry (and gets the same id).
const JOIN_COMMIT_WAIT: Duration = Duration::from_secs(8);

/// Longer addresses are refused from joiners (as the transport refuses
/// them for itself).
const ADDRESS_BYTES_MAX: usize = 1024;

/// A `host:port` of sane length with a non-zero port.
fn is_host_port(text: &str) -> bool {
    text.len() <= ADDRESS_BYTES_MAX
        && text.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        })
}

/// How often a leaving node asks its leader again (until its removal
/// reaches it through the log).
const LEAVE_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// A joiner's request, admitted, waiting for its entry to commit.
pub(super) struct PendingJoin {
    id: NodeId,
    peer_addr: String,
    since: Instant,
    reply: oneshot::Sender<JoinAnswer>,
}

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
    /// Our cluster's id, for the answers to joiners.
    pub cluster_id: u64,
    /// Joiners waiting for their `AddLearner` to commit.
    pending_joins: Vec<PendingJoin>,
    /// This node was asked to leave: it asks its leader for its removal
    /// until that is committed.
    leaving: bool,
    last_leave_attempt: Option<Instant>,
    /// A thread asking the leader is under way (at most one).
    leave_in_flight: Arc<AtomicBool>,
    /// The last reason the removal was refused, logged once per reason.
    leave_refusal: Arc<std::sync::Mutex<String>>,
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
            cluster_id: 0,
            pending_joins: Vec::new(),
            leaving: false,
            last_leave_attempt: None,
            leave_in_flight: Arc::new(AtomicBool::new(false)),
            leave_refusal: Arc::default(),
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
        self.answer_joins();
        self.keep_leaving();
        if self.members.last_attributes_check.elapsed() < ATTRIBUTES_CHECK_INTERVAL {
            return;
        }
        self.members.last_attributes_check = Instant::now();
        self.answer_while_joining();
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

    /// A node that is not in its own membership yet (it joined, and the
    /// leader's log has not reached it) knows no member to dial: it
    /// answers the peers that connected to it, as they announced
    /// themselves (their cluster id was checked).
    fn answer_while_joining(&mut self) {
        if self.members.stopping || self.raft.membership().contains(self.raft.id()) {
            return;
        }
        let mut peers = self.peer_addresses();
        for (id, addr) in self.transport.announced_peers() {
            peers.entry(id).or_insert(addr);
        }
        self.transport.set_peers(&peers);
    }

    /// A node asks to join: a leader proposes it as a learner (or finds
    /// it already added by an earlier try of the same request) and
    /// answers once that is committed; a follower names its leader.
    pub(super) fn join(&mut self, request: MemberRequest, reply: oneshot::Sender<JoinAnswer>) {
        let request = match request {
            MemberRequest::Join(request) => request,
            MemberRequest::Leave(request) => {
                let _ = reply.send(self.remove_on_request(request));
                return;
            }
        };
        match self.admit(&request) {
            Ok(id) => self.members.pending_joins.push(PendingJoin {
                id,
                peer_addr: request.peer_addr,
                since: Instant::now(),
                reply,
            }),
            Err(answer) => {
                let _ = reply.send(answer);
            }
        }
        self.answer_joins();
    }

    /// A member asks us, its leader, to remove it.
    fn remove_on_request(&mut self, request: LeaveRequest) -> JoinAnswer {
        let refuse = |retry, message: String| JoinAnswer::Refused { retry, message };
        if self.raft.role() != Role::Leader {
            let leader = self.raft.leader();
            return match self.raft.membership().members.get(&leader) {
                Some(member) if leader != self.raft.id() => JoinAnswer::AskLeader {
                    peer_addr: member.peer_addr.clone(),
                },
                _ => refuse(true, "no leader known".into()),
            };
        }
        let id = request.node_id;
        let Some(member) = self.raft.membership().members.get(&id) else {
            return JoinAnswer::Leaving;
        };
        // Only a node that holds the member's data directory may ask.
        if member.incarnation != 0 && member.incarnation != request.incarnation {
            return refuse(
                false,
                format!("node {id} is known under another data directory"),
            );
        }
        if id == self.raft.id() {
            return refuse(true, "the leader does not remove itself this way".into());
        }
        match self.raft.propose_conf_change(ConfChange::Remove { id }) {
            Ok(_) => JoinAnswer::Leaving,
            Err(e @ ProposeError::BadConfChange(_)) => refuse(false, e.to_string()),
            Err(e) => refuse(true, e.to_string()),
        }
    }

    /// `ticketd leave`: from now on this node asks for its removal.
    ///
    /// # Errors
    /// `Unavailable` when it is the cluster's only voter (nobody could
    /// remove it), or is stopping already.
    pub(super) fn leave(&mut self) -> Result<(), NodeError> {
        if self.members.stopping {
            return Err(NodeError::Unavailable(
                "this node is stopping already".into(),
            ));
        }
        let me = self.raft.id();
        let membership = self.raft.membership();
        if membership.is_voter(me) && membership.voters().count() == 1 {
            return Err(NodeError::Unavailable(
                "this node is its cluster's only voter and cannot leave it; `ticketd drop` its data dir instead".into(),
            ));
        }
        if !self.members.leaving {
            info!("node {me} leaves its cluster");
        }
        self.members.leaving = true;
        self.members.last_attributes_check = Instant::now();
        Ok(())
    }

    /// A leaving node asks for its removal: a leader proposes it (which
    /// hands leadership over first), a follower asks its leader over the
    /// peer protocol, on a thread of its own so the node thread never
    /// waits on a socket.
    fn keep_leaving(&mut self) {
        if !self.members.leaving || self.members.stopping {
            return;
        }
        if self
            .members
            .last_leave_attempt
            .is_some_and(|at| at.elapsed() < LEAVE_RETRY_INTERVAL)
        {
            return;
        }
        self.members.last_leave_attempt = Some(Instant::now());
        let me = self.raft.id();
        if self.raft.role() == Role::Leader {
            match self.raft.propose_conf_change(ConfChange::Remove { id: me }) {
                Ok(_) | Err(ProposeError::Transferring) => {}
                Err(e) => note_refusal(&self.members.leave_refusal, &e.to_string()),
            }
            return;
        }
        let leader = self.raft.leader();
        let Some(leader_addr) = self
            .raft
            .membership()
            .members
            .get(&leader)
            .filter(|_| leader != me)
            .map(|m| m.peer_addr.clone())
        else {
            return;
        };
        if self.members.leave_in_flight.swap(true, Ordering::SeqCst) {
            return;
        }
        let in_flight = Arc::clone(&self.members.leave_in_flight);
        let refusal = Arc::clone(&self.members.leave_refusal);
        let request = LeaveRequest {
            node_id: me,
            incarnation: self.members.incarnation,
        };
        let secret = self.config.peer_secret.clone();
        let spawned = std::thread::Builder::new()
            .name("leave".into())
            .spawn(move || {
                match request_leave(&leader_addr, request, secret.as_ref()) {
                    Ok(JoinAnswer::Refused { message, .. }) => note_refusal(&refusal, &message),
                    Ok(answer) => log::debug!("leader {leader_addr} answers our leave: {answer:?}"),
                    Err(why) => warn!("cannot ask the leader at {leader_addr} to remove us: {why}"),
                }
                in_flight.store(false, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            warn!("cannot start a thread to ask for our removal: {e}");
            self.members.leave_in_flight.store(false, Ordering::SeqCst);
        }
    }

    /// The id the joiner gets, or the answer that says why not.
    fn admit(&mut self, request: &JoinRequest) -> Result<NodeId, JoinAnswer> {
        let refuse = |retry, message: String| JoinAnswer::Refused { retry, message };
        if self.members.stopping {
            return Err(refuse(false, "this node is leaving its cluster".into()));
        }
        if self.raft.role() != Role::Leader {
            let leader = self.raft.leader();
            return Err(match self.raft.membership().members.get(&leader) {
                Some(member) if leader != self.raft.id() => JoinAnswer::AskLeader {
                    peer_addr: member.peer_addr.clone(),
                },
                _ => refuse(true, "no leader known".into()),
            });
        }
        for (what, addr) in [("peer", &request.peer_addr), ("HTTP", &request.http_addr)] {
            if !is_host_port(addr) {
                return Err(refuse(
                    false,
                    format!("the joiner's {what} address {addr:?} is not host:port"),
                ));
            }
        }
        let membership = self.raft.membership();
        let wanted = request.wanted_id;
        let same_address = membership
            .members
            .iter()
            .find(|(_, m)| m.peer_addr == request.peer_addr);
        if let Some((&id, member)) = same_address {
            // A learner at that address that has not announced another
            // data directory: this request's earlier try (its answer was
            // lost), or a member an operator added by address. A voter's
            // slot is never handed to a new data directory.
            let ours = !member.voter
                && (member.incarnation == 0 || member.incarnation == request.incarnation);
            return match ours {
                true if wanted == 0 || wanted == id => Ok(id),
                true => Err(refuse(
                    false,
                    format!(
                        "{} was admitted as node {id}, not {wanted}",
                        request.peer_addr
                    ),
                )),
                false => Err(refuse(
                    false,
                    format!(
                        "{} is the peer address of member {id}; remove it first (DELETE /api/v1/cluster/members/{id})",
                        request.peer_addr
                    ),
                )),
            };
        }
        let max_id = membership.max_id();
        let id = match wanted {
            0 => max_id
                .checked_add(1)
                .ok_or_else(|| refuse(false, "no node id left".into()))?,
            wanted if wanted <= max_id => {
                return Err(refuse(
                    false,
                    format!(
                        "node id {wanted} was used before in this cluster (ids up to {max_id} were); ids are never reused"
                    ),
                ));
            }
            wanted => wanted,
        };
        let change = ConfChange::AddLearner {
            id,
            peer_addr: request.peer_addr.clone(),
            http_addr: request.http_addr.clone(),
        };
        match self.raft.propose_conf_change(change) {
            Ok(_) => Ok(id),
            Err(
                e @ (ProposeError::ConfChangePending
                | ProposeError::Transferring
                | ProposeError::NotLeader { .. }),
            ) => Err(refuse(true, e.to_string())),
            Err(e) => Err(refuse(false, e.to_string())),
        }
    }

    /// Answers the joiners whose entry committed (or was lost, or is
    /// taking too long: they retry and get the same id).
    fn answer_joins(&mut self) {
        if self.members.pending_joins.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.members.pending_joins);
        for join in pending {
            let committed = self
                .members
                .applied
                .members
                .get(&join.id)
                .is_some_and(|m| m.peer_addr == join.peer_addr);
            let answer = if committed {
                info!("node {} ({}) joined as a learner", join.id, join.peer_addr);
                JoinAnswer::Admitted {
                    cluster_id: self.members.cluster_id,
                    node_id: join.id,
                }
            } else if !self.raft.membership().contains(join.id) {
                JoinAnswer::Refused {
                    retry: true,
                    message: "the change was lost in a leader change".into(),
                }
            } else if join.since.elapsed() > JOIN_COMMIT_WAIT {
                JoinAnswer::Refused {
                    retry: true,
                    message: "the change has not committed yet".into(),
                }
            } else {
                self.members.pending_joins.push(join);
                continue;
            };
            let _ = join.reply.send(answer);
        }
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

/// Logs why our removal was refused, once per distinct reason (the node
/// retries every half second).
fn note_refusal(last: &std::sync::Mutex<String>, why: &str) {
    let mut last = last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *last != why {
        warn!("cannot leave the cluster yet: {why}");
        *last = why.to_string();
    }
}
