//! The replicated application state: sessions, resources, tickets, locks
//! and the ID counter, with the read-only queries the HTTP layer needs.
//!
//! Owns: the data model and its invariants. May not touch: I/O, clocks,
//! threads or randomness; every collection is sorted (`BTreeMap`,
//! `BTreeSet`, and `CowMap`, a `BTreeMap` in shareable chunks) so
//! iteration order, and therefore every answer, is the same on every node.
//!
//! Invariants (checked by `snapshot.rs` on decode, kept by `apply.rs`):
//! - every issuer, claimant and lock holder is an existing session;
//! - a session's `claims`, `issued` and `locks` are exactly the tickets it
//!   claims, the tickets it issued and the locks it holds;
//! - no ticket resource is empty (an empty one is removed at once);
//! - every session id and fencing token is at most `high`.

use super::SessionId;
use super::error::ApplyError;
use super::view::{SessionView, TicketView};
use std::collections::{BTreeMap, BTreeSet};

use super::cowmap::CowMap;

/// Identifies a ticket: (resource name, ticket name).
pub(super) type TicketKey = (String, String);

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Session {
    pub(super) name: String,
    /// The client's `ip:port`, as turbosquid records it.
    pub(super) src: String,
    pub(super) ttl_ms: u64,
    /// Back-references so closing a session costs what it holds, not the
    /// size of the whole state.
    pub(super) claims: BTreeSet<TicketKey>,
    pub(super) issued: BTreeSet<TicketKey>,
    pub(super) locks: BTreeSet<String>,
}

impl Session {
    pub(super) fn new(name: String, src: String, ttl_ms: u64) -> Session {
        Session {
            name,
            src,
            ttl_ms,
            claims: BTreeSet::new(),
            issued: BTreeSet::new(),
            locks: BTreeSet::new(),
        }
    }
}

/// A claim on a ticket: who holds it and the fencing token of this grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Claim {
    pub(super) session: SessionId,
    pub(super) token: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Ticket {
    pub(super) data: Vec<u8>,
    pub(super) issuer: SessionId,
    pub(super) claim: Option<Claim>,
}

/// A resource is one kind for its whole life (turbosquid's `IsLock`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Resource {
    Tickets(BTreeMap<String, Ticket>),
    /// A lock resource exists only while held, so it always has a holder.
    Lock(Claim),
}

/// The whole replicated state. `apply` (in `apply.rs`) is its only writer.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub(super) high: u64,
    /// Both copy-on-write, so that a clone for a snapshot is cheap.
    pub(super) sessions: CowMap<SessionId, Session>,
    pub(super) resources: CowMap<String, Resource>,
    /// Ticket resources whose last ticket went since the last expiry
    /// pass ([`State::sweep_emptied`]). turbosquid removes an emptied
    /// resource only at its next sweep, so until then it answers a
    /// has-ticket on it with `false` rather than 404; ticketd removes the
    /// resource at once and remembers its name for that one answer. Not
    /// part of snapshots: it only shapes a read, for half a second.
    pub(super) emptied: BTreeSet<String>,
}

/// Equal when the replicated state is: `emptied` only shapes one answer
/// for a moment and is not in snapshots.
impl PartialEq for State {
    fn eq(&self, other: &State) -> bool {
        self.high == other.high
            && self.sessions == other.sessions
            && self.resources == other.resources
    }
}

impl Eq for State {}

impl State {
    /// An empty state: no sessions, no resources, no ID handed out.
    pub fn new() -> State {
        State::default()
    }

    /// The largest ID the counter ever handed out (IDs, session ids and
    /// fencing tokens alike); 0 before the first.
    pub fn high(&self) -> u64 {
        self.high
    }

    /// Raises the ID counter to at least `high`, never lowering it: a
    /// state restored from a backup must not hand out an ID that the old
    /// cluster may have served after the backup was taken.
    pub fn raise_high(&mut self, high: u64) {
        self.high = self.high.max(high);
    }

    pub fn session_exists(&self, id: SessionId) -> bool {
        self.sessions.contains_key(&id)
    }

    pub fn session_ttl_ms(&self, id: SessionId) -> Option<u64> {
        self.sessions.get(&id).map(|s| s.ttl_ms)
    }

    /// Every session with its TTL, in id order: what a new leader needs
    /// to fill its deadline table.
    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, u64)> + '_ {
        self.sessions.iter().map(|(id, s)| (*id, s.ttl_ms))
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Locks currently held (each lock resource is held while it exists).
    pub fn lock_count(&self) -> usize {
        self.resources
            .values()
            .filter(|r| matches!(r, Resource::Lock(_)))
            .count()
    }

    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }

    /// Whether `session` holds the claim on ticket `name` of `resource`;
    /// `false` for an unknown ticket, as turbosquid answers.
    ///
    /// # Errors
    /// Unknown session or resource (404); a lock resource (409).
    pub fn has_claim(
        &self,
        session: SessionId,
        resource: &str,
        name: &str,
    ) -> Result<bool, ApplyError> {
        self.session(session)?;
        if !self.resources.contains_key(resource) && self.emptied.contains(resource) {
            return Ok(false);
        }
        let tickets = self.existing_tickets(resource)?;
        let holder = tickets.get(name).and_then(|t| t.claim).map(|c| c.session);
        Ok(holder == Some(session))
    }

    /// The leader's expiry pass (every `--expire` ms, on every node):
    /// emptied resources are now gone for has-ticket too.
    pub fn sweep_emptied(&mut self) {
        self.emptied.clear();
    }

    /// The holder of lock `resource` and the fencing token of its grant.
    pub fn lock_holder(&self, resource: &str) -> Option<(SessionId, u64)> {
        match self.resources.get(resource) {
            Some(Resource::Lock(claim)) => Some((claim.session, claim.token)),
            _ => None,
        }
    }

    /// Whether a claim on `resource` by a session holding nothing there
    /// would succeed now: lets a waiter (`?wait=`) know when to retry.
    pub fn has_free_ticket(&self, resource: &str) -> bool {
        match self.resources.get(resource) {
            Some(Resource::Tickets(tickets)) => tickets.values().any(|t| t.claim.is_none()),
            _ => false,
        }
    }

    pub(super) fn session(&self, id: SessionId) -> Result<&Session, ApplyError> {
        self.sessions.get(&id).ok_or(ApplyError::UnknownSession(id))
    }

    /// The tickets of an existing ticket resource.
    pub(super) fn existing_tickets(
        &self,
        resource: &str,
    ) -> Result<&BTreeMap<String, Ticket>, ApplyError> {
        match self.resources.get(resource) {
            None => Err(ApplyError::UnknownResource(resource.to_owned())),
            Some(Resource::Lock(_)) => Err(ApplyError::NotTicketResource(resource.to_owned())),
            Some(Resource::Tickets(tickets)) => Ok(tickets),
        }
    }

    pub(super) fn session_view(&self, id: SessionId) -> Option<SessionView> {
        self.sessions.get(&id).map(|s| SessionView {
            id,
            name: s.name.clone(),
            src: s.src.clone(),
            ttl_ms: s.ttl_ms,
        })
    }

    /// A ticket as turbosquid's clients see it; a lock is shown the way
    /// turbosquid stores it: one ticket named after the resource, issued
    /// by the holder, with empty data and no claimant.
    pub(super) fn ticket_view(&self, resource: &str, name: &str) -> Option<TicketView> {
        let (data, issuer, claimant) = match self.resources.get(resource)? {
            Resource::Tickets(tickets) => {
                let ticket = tickets.get(name)?;
                (
                    ticket.data.clone(),
                    ticket.issuer,
                    ticket.claim.map(|c| c.session),
                )
            }
            Resource::Lock(claim) if name == resource => (Vec::new(), claim.session, None),
            Resource::Lock(_) => return None,
        };
        Some(TicketView {
            name: name.to_owned(),
            resource: resource.to_owned(),
            data,
            issuer: self.session_view(issuer),
            claimant: claimant.and_then(|id| self.session_view(id)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Command;
    use super::*;

    fn open(state: &mut State, name: &str) -> SessionId {
        state.apply(&Command::OpenSession {
            name: name.into(),
            src: "src".into(),
            ttl_ms: 100,
        });
        state.high()
    }

    #[test]
    fn queries_on_an_empty_state() {
        let state = State::new();
        assert_eq!(state.high(), 0);
        assert!(!state.session_exists(1));
        assert_eq!(state.session_ttl_ms(1), None);
        assert_eq!(state.sessions().count(), 0);
        assert_eq!(
            (
                state.session_count(),
                state.lock_count(),
                state.resource_count()
            ),
            (0, 0, 0)
        );
        assert_eq!(state.lock_holder("l"), None);
        assert!(!state.has_free_ticket("r"));
    }

    #[test]
    fn has_claim_answers_and_errors() {
        let mut state = State::new();
        let issuer = open(&mut state, "issuer");
        let claimant = open(&mut state, "claimant");
        let issue = Command::IssueTicket {
            session: issuer,
            resource: "r".into(),
            name: "t".into(),
            data: vec![],
        };
        state.apply(&issue);
        assert!(state.has_free_ticket("r"));
        state.apply(&Command::Claim {
            session: claimant,
            resource: "r".into(),
        });
        assert!(!state.has_free_ticket("r"));
        assert_eq!(state.has_claim(claimant, "r", "t"), Ok(true));
        assert_eq!(state.has_claim(issuer, "r", "t"), Ok(false));
        assert_eq!(state.has_claim(claimant, "r", "nope"), Ok(false));
        assert_eq!(
            state.has_claim(99, "r", "t"),
            Err(ApplyError::UnknownSession(99))
        );
        assert_eq!(
            state.has_claim(claimant, "x", "t"),
            Err(ApplyError::UnknownResource("x".into()))
        );
        state.apply(&Command::Lock {
            session: issuer,
            resource: "l".into(),
        });
        assert_eq!(
            state.has_claim(claimant, "l", "l"),
            Err(ApplyError::NotTicketResource("l".into()))
        );
    }

    #[test]
    fn sessions_lists_ids_and_ttls() {
        let mut state = State::new();
        let a = open(&mut state, "a");
        let b = open(&mut state, "b");
        assert_eq!(
            state.sessions().collect::<Vec<_>>(),
            vec![(a, 100), (b, 100)]
        );
        assert_eq!(state.session_ttl_ms(a), Some(100));
        assert!(state.session_exists(b));
    }
}
