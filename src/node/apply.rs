//! Step 3 of a `Ready`: apply committed entries to the state machine, in
//! log order, keep the leader's session deadlines and parked waiters in
//! step with what was applied, and answer the proposals that are done.

use std::time::Instant;

use log::error;

use super::driver::{Driver, Pending, Purpose};
use super::waiters::{Waiter, resource_of};
use super::{NodeError, Reply};
use crate::raft::{Entry, EntryKind, Membership};
use crate::ticket::{Command, Outcome};

impl Driver {
    pub(super) fn apply_entries(&mut self, committed: Vec<Entry>) {
        for entry in committed {
            if entry.index <= self.applied_through {
                continue;
            }
            self.applied_through = entry.index;
            self.applied_bytes += entry.data.len() as u64;
            let outcome = match entry.kind {
                EntryKind::Normal => self.apply_command(&entry),
                EntryKind::Config => {
                    match Membership::decode(&entry.data) {
                        Ok(membership) => self.applied_membership(membership),
                        Err(e) => error!(
                            "committed configuration {} does not decode: {e}",
                            entry.index
                        ),
                    }
                    None
                }
                EntryKind::Noop => None,
            };
            self.check_recorded(entry.index);
            let Some(pending) = self.pending.remove(&entry.index) else {
                continue;
            };
            match outcome {
                Some(outcome) if pending.term == entry.term => self.deliver(pending, outcome),
                _ => self.fail(
                    pending.purpose,
                    NodeError::Unavailable("leadership changed before commit; retry".into()),
                ),
            }
        }
    }

    fn apply_command(&mut self, entry: &Entry) -> Option<Outcome> {
        let command = match Command::decode(&entry.data) {
            Ok(command) => command,
            Err(e) => {
                // Every node skips it alike, so they stay identical.
                error!("committed entry {} does not decode: {e}", entry.index);
                return None;
            }
        };
        let outcome = self.state.apply(&command);
        if self.leader_ready {
            self.track_sessions(&command, &outcome);
        }
        self.mark_waiters(&command, &outcome);
        Some(outcome)
    }

    /// Keeps the leader's deadlines in step with the sessions.
    fn track_sessions(&mut self, command: &Command, outcome: &Outcome) {
        let now = self.now_ms();
        match (command, outcome) {
            (Command::OpenSession { ttl_ms, .. }, Outcome::SessionOpened { id }) => {
                self.deadlines.refresh(*id, now + ttl_ms);
            }
            (Command::IssueTicket { session, .. }, Outcome::Done) => {
                // Issuing a ticket refreshes the issuer (turbosquid).
                if let Some(ttl) = self.state.session_ttl_ms(*session)
                    && self.deadlines.deadline_ms(*session).is_some()
                {
                    self.deadlines.refresh(*session, now + ttl);
                }
            }
            (Command::CloseSession { id }, _) => self.deadlines.remove(*id),
            (Command::ExpireSessions { ids }, _) => {
                for id in ids {
                    self.deadlines.remove(*id);
                }
            }
            _ => {}
        }
    }

    fn mark_waiters(&mut self, command: &Command, outcome: &Outcome) {
        if self.waiters.is_empty() {
            return;
        }
        match command {
            Command::Unlock { resource, .. }
            | Command::Release { resource, .. }
            | Command::IssueTicket { resource, .. } => self.waiters.mark(resource),
            Command::Claim { resource, .. } => {
                if matches!(outcome, Outcome::Claim { claimed: true, .. }) {
                    // Another free ticket may be left for the next waiter.
                    self.waiters.mark(resource);
                }
            }
            Command::CloseSession { .. } | Command::ExpireSessions { .. } => {
                self.waiters.mark_all()
            }
            _ => {}
        }
    }

    fn deliver(&mut self, pending: Pending, outcome: Outcome) {
        match pending.purpose {
            Purpose::Client { reply, wait } => self.answer_client(reply, wait, outcome),
            Purpose::IdRefill { generation } => match outcome {
                Outcome::Ids { first, last } => self.shared.ids.add_range(generation, first, last),
                _ => self.shared.ids.refill_failed(generation),
            },
            Purpose::Expiry { .. } => {}
        }
    }

    /// A lock or claim that was not granted and may wait is parked.
    fn answer_client(
        &mut self,
        reply: Reply<Outcome>,
        wait: Option<(Command, Instant)>,
        outcome: Outcome,
    ) {
        let refused = matches!(
            outcome,
            Outcome::Lock { granted: false, .. } | Outcome::Claim { claimed: false, .. }
        );
        if let Some((command, deadline)) = wait
            && refused
            && self.leader_ready
            && Instant::now() < deadline
            && resource_of(&command).is_some()
        {
            self.waiters.park(Waiter {
                command,
                reply,
                deadline,
            });
            return;
        }
        let _ = reply.send(Ok(outcome));
    }

    /// Proposes again the parked requests whose resource came free, and
    /// answers the ones whose wait ran out.
    pub(super) fn run_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        self.waiters.expire(Instant::now());
        if !self.leader_ready {
            return;
        }
        for waiter in self.waiters.take_ready(&self.state) {
            let wait = Some((waiter.command.clone(), waiter.deadline));
            self.propose(
                waiter.command,
                Purpose::Client {
                    reply: waiter.reply,
                    wait,
                },
            );
        }
    }
}
