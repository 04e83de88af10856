//! What the leader does for itself, beside replicating: setting up when
//! it takes office (the ID pool, session deadlines restarted, waiters
//! failed), the expiry pass that proposes the removal of sessions whose
//! TTL ran out, and refilling the ID pool before it runs dry.
//!
//! Owns: the leader's duties on the node thread. May not touch: the
//! core's rules (a lease, a committed range), which it only asks about.
//! An ID range is served only once its `ReserveIds` has applied (see
//! `apply.rs`); here it is only proposed.

use std::time::Instant;

use log::info;

use super::driver::{Driver, Purpose};
use crate::raft::Role;
use crate::ticket::Command;

impl Driver {
    /// Sets up or tears down what a leader keeps for itself.
    pub(super) fn track_leadership(&mut self) {
        let current = (self.raft.role(), self.raft.term());
        if current != self.leadership {
            self.leadership = current;
            self.leader_ready = false;
            self.id_generation = self.shared.ids.reset();
            self.deadlines.clear();
            self.waiters.fail_all();
        }
        if self.raft.role() == Role::Leader
            && !self.leader_ready
            && self.raft.applied_index() >= self.raft.term_start_index()
        {
            self.leader_ready = true;
            // A failover never expires a session early: every TTL
            // restarts now (etcd's lease rule).
            let now = self.now_ms();
            let sessions: Vec<(u64, u64)> = self.state.sessions().collect();
            for (id, ttl) in sessions {
                self.deadlines.refresh(id, now + ttl);
            }
            info!(
                "node {} serves as leader of term {}",
                self.raft.id(),
                self.raft.term()
            );
        }
    }

    /// Every `--expire` interval, on every node: turbosquid's sweep of
    /// emptied resources, and on a serving leader, the sessions whose TTL
    /// ran out.
    pub(super) fn expiry_pass(&mut self, now: Instant) {
        if !self.expiry_cadence.due(now) {
            return;
        }
        // Emptied resources are gone for has-ticket too from now on
        // (every node applies, so every node sweeps).
        self.state.sweep_emptied();
        if self.leader_ready {
            self.expire_sessions();
        }
    }

    fn expire_sessions(&mut self) {
        let now = self.now_ms();
        let due: Vec<u64> = self
            .deadlines
            .pop_due(now, 10_000)
            .into_iter()
            .filter(|id| self.state.session_exists(*id))
            .collect();
        if due.is_empty() {
            return;
        }
        info!("expiring {} session(s)", due.len());
        let term = self.raft.term();
        let command = Command::ExpireSessions { ids: due.clone() };
        self.propose(command, Purpose::Expiry { ids: due, term });
    }

    pub(super) fn refill_ids(&mut self) {
        if !self.leader_ready || self.storage_full {
            return;
        }
        if self.lease_until().is_none() {
            return;
        }
        if let Some(refill) = self.shared.ids.refill_needed() {
            self.propose(
                Command::ReserveIds {
                    count: refill.count,
                },
                Purpose::IdRefill {
                    generation: refill.generation,
                },
            );
        }
    }
}
