//! `State::apply`: the deterministic transition function of the log.
//!
//! Owns: what each `Command` does to the state and the `Outcome` it
//! returns. May not touch: clocks, I/O, randomness, or anything but the
//! state passed in. Each command checks everything first and writes last,
//! so a refused command (`Outcome::Failed`) leaves the state unchanged.

use super::command::Command;
use super::error::ApplyError;
use super::state::{Claim, Resource, Session, State, Ticket};
use super::view::TicketView;
use super::{NAME_BYTES_MAX, SessionId, TICKET_DATA_BYTES_MAX};
use std::collections::BTreeMap;

/// What applying one command produced; the leader turns it into the HTTP
/// answer, followers drop it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `ReserveIds`: the reserved range, inclusive.
    Ids {
        first: u64,
        last: u64,
    },
    SessionOpened {
        id: SessionId,
    },
    /// The command succeeded and has nothing to say (`"Ok"`).
    Done,
    /// `Claim`: the claimed ticket (as it is after the claim) and the
    /// fencing token of this grant, both present exactly when `claimed`.
    Claim {
        claimed: bool,
        ticket: Option<TicketView>,
        fencing_token: Option<u64>,
    },
    /// `Lock`: the token is present exactly when `granted`.
    Lock {
        granted: bool,
        fencing_token: Option<u64>,
    },
    Failed(ApplyError),
}

impl State {
    /// Applies one committed command. Pure: the same state and command
    /// give the same new state and outcome on every node.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        let result = match command {
            Command::ReserveIds { count } => self.reserve_ids(*count),
            Command::OpenSession { name, src, ttl_ms } => self.open_session(name, src, *ttl_ms),
            Command::CloseSession { id } => self.close_session(*id),
            Command::ExpireSessions { ids } => {
                ids.iter().for_each(|id| self.remove_session(*id));
                Ok(Outcome::Done)
            }
            Command::IssueTicket {
                session,
                resource,
                name,
                data,
            } => self.issue_ticket(*session, resource, name, data),
            Command::RevokeTicket {
                session,
                resource,
                name,
            } => self.revoke_ticket(*session, resource, name),
            Command::Claim { session, resource } => self.claim(*session, resource),
            Command::Release {
                session,
                resource,
                name,
            } => self.release(*session, resource, name),
            Command::Lock { session, resource } => self.lock(*session, resource),
            Command::Unlock { session, resource } => self.unlock(*session, resource),
        };
        result.unwrap_or_else(Outcome::Failed)
    }

    fn reserve_ids(&mut self, count: u64) -> Result<Outcome, ApplyError> {
        if count == 0 {
            return Err(ApplyError::ZeroCount);
        }
        let last = self
            .high
            .checked_add(count)
            .ok_or(ApplyError::CounterExhausted)?;
        let first = self.high + 1;
        self.high = last;
        Ok(Outcome::Ids { first, last })
    }

    /// The next value of the counter. Callers mint before any other write,
    /// so exhaustion leaves the state untouched.
    fn mint(&mut self) -> Result<u64, ApplyError> {
        self.high = self
            .high
            .checked_add(1)
            .ok_or(ApplyError::CounterExhausted)?;
        Ok(self.high)
    }

    fn open_session(&mut self, name: &str, src: &str, ttl_ms: u64) -> Result<Outcome, ApplyError> {
        check_names(&[name, src])?;
        let id = self.mint()?;
        self.sessions
            .insert(id, Session::new(name.to_owned(), src.to_owned(), ttl_ms));
        Ok(Outcome::SessionOpened { id })
    }

    fn close_session(&mut self, id: SessionId) -> Result<Outcome, ApplyError> {
        self.session(id)?;
        self.remove_session(id);
        Ok(Outcome::Done)
    }

    /// Removes a session with everything it holds: its claims go back to
    /// the pool, the tickets it issued are dropped (ending their claims),
    /// its locks are freed. Unknown ids are ignored (expiry may race a
    /// close in the log).
    fn remove_session(&mut self, id: SessionId) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        for (resource, name) in &session.claims {
            if let Some(Resource::Tickets(tickets)) = self.resources.get_mut(resource)
                && let Some(ticket) = tickets.get_mut(name)
                && ticket.claim.map(|c| c.session) == Some(id)
            {
                ticket.claim = None;
            }
        }
        for (resource, name) in &session.issued {
            self.drop_ticket(resource, name);
        }
        for resource in &session.locks {
            if matches!(self.resources.get(resource), Some(Resource::Lock(c)) if c.session == id) {
                self.resources.remove(resource);
            }
        }
    }

    /// Removes a ticket and every reference to it; a resource left without
    /// tickets disappears, as in turbosquid.
    fn drop_ticket(&mut self, resource: &str, name: &str) {
        let Some(Resource::Tickets(tickets)) = self.resources.get_mut(resource) else {
            return;
        };
        let Some(ticket) = tickets.remove(name) else {
            return;
        };
        if tickets.is_empty() {
            self.resources.remove(resource);
            self.emptied.insert(resource.to_owned());
        }
        let key = (resource.to_owned(), name.to_owned());
        if let Some(issuer) = self.sessions.get_mut(&ticket.issuer) {
            issuer.issued.remove(&key);
        }
        if let Some(claim) = ticket.claim
            && let Some(claimant) = self.sessions.get_mut(&claim.session)
        {
            claimant.claims.remove(&key);
        }
    }

    fn issue_ticket(
        &mut self,
        session: SessionId,
        resource: &str,
        name: &str,
        data: &[u8],
    ) -> Result<Outcome, ApplyError> {
        self.session(session)?;
        check_names(&[resource, name])?;
        if data.len() > TICKET_DATA_BYTES_MAX {
            return Err(ApplyError::DataTooLarge(data.len()));
        }
        if !self.resources.contains_key(resource) {
            self.emptied.remove(resource);
            self.resources
                .insert(resource.to_owned(), Resource::Tickets(BTreeMap::new()));
        }
        let Some(Resource::Tickets(tickets)) = self.resources.get_mut(resource) else {
            return Err(ApplyError::NotTicketResource(resource.to_owned()));
        };
        let key = (resource.to_owned(), name.to_owned());
        let fresh = Ticket {
            data: data.to_vec(),
            issuer: session,
            claim: None,
        };
        // Taking over an existing name keeps its claimant (and the claim's
        // token): the claim is on the name, whoever issues it now.
        let previous_issuer = match tickets.get_mut(name) {
            Some(ticket) => {
                let claim = ticket.claim;
                Some(std::mem::replace(ticket, Ticket { claim, ..fresh }).issuer)
            }
            None => {
                tickets.insert(name.to_owned(), fresh);
                None
            }
        };
        if let Some(previous) = previous_issuer
            && previous != session
            && let Some(old) = self.sessions.get_mut(&previous)
        {
            old.issued.remove(&key);
        }
        if let Some(issuer) = self.sessions.get_mut(&session) {
            issuer.issued.insert(key);
        }
        Ok(Outcome::Done)
    }

    /// Any live session may revoke any ticket, as in turbosquid.
    fn revoke_ticket(
        &mut self,
        session: SessionId,
        resource: &str,
        name: &str,
    ) -> Result<Outcome, ApplyError> {
        self.session(session)?;
        if !self.existing_tickets(resource)?.contains_key(name) {
            return Err(ApplyError::UnknownTicket {
                resource: resource.to_owned(),
                name: name.to_owned(),
            });
        }
        self.drop_ticket(resource, name);
        Ok(Outcome::Done)
    }

    fn claim(&mut self, session: SessionId, resource: &str) -> Result<Outcome, ApplyError> {
        self.session(session)?;
        let not_claimed = Outcome::Claim {
            claimed: false,
            ticket: None,
            fencing_token: None,
        };
        let tickets = match self.resources.get(resource) {
            // turbosquid treats a missing resource as "all claimed".
            None => return Ok(not_claimed),
            Some(Resource::Lock(_)) => {
                return Err(ApplyError::NotTicketResource(resource.to_owned()));
            }
            Some(Resource::Tickets(tickets)) => tickets,
        };
        let Some(name) = pick_ticket(tickets, session) else {
            return Ok(not_claimed);
        };
        let token = self.mint()?;
        if let Some(Resource::Tickets(tickets)) = self.resources.get_mut(resource)
            && let Some(ticket) = tickets.get_mut(&name)
        {
            ticket.claim = Some(Claim { session, token });
        }
        let ticket = self.ticket_view(resource, &name);
        if let Some(claimant) = self.sessions.get_mut(&session) {
            claimant.claims.insert((resource.to_owned(), name));
        }
        Ok(Outcome::Claim {
            claimed: true,
            ticket,
            fencing_token: Some(token),
        })
    }

    /// Releasing a ticket the session does not hold, or one that no longer
    /// exists, is a no-op answered "Ok", as in turbosquid: a release after
    /// the issuer revoked the ticket must not fail.
    fn release(
        &mut self,
        session: SessionId,
        resource: &str,
        name: &str,
    ) -> Result<Outcome, ApplyError> {
        self.session(session)?;
        self.existing_tickets(resource)?;
        if let Some(Resource::Tickets(tickets)) = self.resources.get_mut(resource)
            && let Some(ticket) = tickets.get_mut(name)
            && ticket.claim.map(|c| c.session) == Some(session)
        {
            ticket.claim = None;
            if let Some(claimant) = self.sessions.get_mut(&session) {
                claimant
                    .claims
                    .remove(&(resource.to_owned(), name.to_owned()));
            }
        }
        Ok(Outcome::Done)
    }

    fn lock(&mut self, session: SessionId, resource: &str) -> Result<Outcome, ApplyError> {
        self.session(session)?;
        match self.resources.get(resource) {
            Some(Resource::Tickets(_)) => Err(ApplyError::NotLockResource(resource.to_owned())),
            // A re-grant to the holder is the same grant: same token.
            Some(Resource::Lock(claim)) if claim.session == session => Ok(Outcome::Lock {
                granted: true,
                fencing_token: Some(claim.token),
            }),
            Some(Resource::Lock(_)) => Ok(Outcome::Lock {
                granted: false,
                fencing_token: None,
            }),
            None => {
                check_names(&[resource])?;
                let token = self.mint()?;
                self.emptied.remove(resource);
                self.resources.insert(
                    resource.to_owned(),
                    Resource::Lock(Claim { session, token }),
                );
                if let Some(holder) = self.sessions.get_mut(&session) {
                    holder.locks.insert(resource.to_owned());
                }
                Ok(Outcome::Lock {
                    granted: true,
                    fencing_token: Some(token),
                })
            }
        }
    }

    fn unlock(&mut self, session: SessionId, resource: &str) -> Result<Outcome, ApplyError> {
        self.session(session)?;
        match self.resources.get(resource) {
            None => return Err(ApplyError::UnknownResource(resource.to_owned())),
            Some(Resource::Tickets(_)) => {
                return Err(ApplyError::NotLockResource(resource.to_owned()));
            }
            Some(Resource::Lock(claim)) if claim.session != session => {
                return Err(ApplyError::LockHeldByOther(resource.to_owned()));
            }
            Some(Resource::Lock(_)) => {}
        }
        self.resources.remove(resource);
        if let Some(holder) = self.sessions.get_mut(&session) {
            holder.locks.remove(resource);
        }
        Ok(Outcome::Done)
    }
}

/// The ticket a claim gets: the first (by name) the session already holds,
/// so a retried claim is answered with the same ticket, else the first
/// free one. turbosquid takes the first of either kind in Go's random map
/// order; this is one of its possible answers, made deterministic.
fn pick_ticket(tickets: &BTreeMap<String, Ticket>, session: SessionId) -> Option<String> {
    let held = tickets
        .iter()
        .find(|(_, t)| t.claim.map(|c| c.session) == Some(session));
    let chosen = held.or_else(|| tickets.iter().find(|(_, t)| t.claim.is_none()));
    chosen.map(|(name, _)| name.clone())
}

fn check_names(names: &[&str]) -> Result<(), ApplyError> {
    match names.iter().find(|n| n.len() > NAME_BYTES_MAX) {
        Some(long) => Err(ApplyError::NameTooLong(long.len())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::testkit::{Prng, random_command};

    fn open(state: &mut State, name: &str) -> SessionId {
        let command = Command::OpenSession {
            name: name.into(),
            src: "10.0.0.1:4000".into(),
            ttl_ms: 5000,
        };
        match state.apply(&command) {
            Outcome::SessionOpened { id } => id,
            other => panic!("open failed: {other:?}"),
        }
    }

    fn issue(
        state: &mut State,
        session: SessionId,
        resource: &str,
        name: &str,
        data: &[u8],
    ) -> Outcome {
        let command = Command::IssueTicket {
            session,
            resource: resource.into(),
            name: name.into(),
            data: data.to_vec(),
        };
        state.apply(&command)
    }

    fn claim(state: &mut State, session: SessionId, resource: &str) -> Outcome {
        state.apply(&Command::Claim {
            session,
            resource: resource.into(),
        })
    }

    fn claimed(outcome: &Outcome) -> Option<(String, u64)> {
        match outcome {
            Outcome::Claim {
                claimed: true,
                ticket: Some(t),
                fencing_token: Some(token),
            } => Some((t.name.clone(), *token)),
            Outcome::Claim {
                claimed: false,
                ticket: None,
                fencing_token: None,
            } => None,
            other => panic!("not a claim outcome: {other:?}"),
        }
    }

    fn lock(state: &mut State, session: SessionId, resource: &str) -> Outcome {
        state.apply(&Command::Lock {
            session,
            resource: resource.into(),
        })
    }

    fn failed(error: ApplyError) -> Outcome {
        Outcome::Failed(error)
    }

    #[test]
    fn reserve_ids_hands_out_consecutive_ranges() {
        let mut state = State::new();
        assert_eq!(
            state.apply(&Command::ReserveIds { count: 10 }),
            Outcome::Ids { first: 1, last: 10 }
        );
        assert_eq!(
            state.apply(&Command::ReserveIds { count: 1 }),
            Outcome::Ids {
                first: 11,
                last: 11
            }
        );
        assert_eq!(state.high(), 11);
        assert_eq!(
            state.apply(&Command::ReserveIds { count: 0 }),
            failed(ApplyError::ZeroCount)
        );
        assert_eq!(state.high(), 11);
    }

    #[test]
    fn counter_exhaustion_changes_nothing() {
        let mut state = State::new();
        state.apply(&Command::ReserveIds {
            count: u64::MAX - 1,
        });
        let id = open(&mut state, "last");
        assert_eq!(id, u64::MAX);
        let before = state.clone();
        assert_eq!(
            state.apply(&Command::ReserveIds { count: 1 }),
            failed(ApplyError::CounterExhausted)
        );
        let open_again = Command::OpenSession {
            name: "n".into(),
            src: "s".into(),
            ttl_ms: 1,
        };
        assert_eq!(
            state.apply(&open_again),
            failed(ApplyError::CounterExhausted)
        );
        assert_eq!(
            lock(&mut state, id, "l"),
            failed(ApplyError::CounterExhausted)
        );
        assert_eq!(state, before);
    }

    #[test]
    fn session_ids_share_the_id_counter() {
        let mut state = State::new();
        state.apply(&Command::ReserveIds { count: 100 });
        assert_eq!(open(&mut state, "a"), 101);
        assert_eq!(
            state.apply(&Command::ReserveIds { count: 5 }),
            Outcome::Ids {
                first: 102,
                last: 106
            }
        );
        assert_eq!(open(&mut state, "b"), 107);
        assert_eq!(state.session_count(), 2);
    }

    #[test]
    fn names_and_data_are_bounded() {
        let mut state = State::new();
        let long = "x".repeat(NAME_BYTES_MAX + 1);
        let command = Command::OpenSession {
            name: long.clone(),
            src: "s".into(),
            ttl_ms: 1,
        };
        assert_eq!(
            state.apply(&command),
            failed(ApplyError::NameTooLong(NAME_BYTES_MAX + 1))
        );
        assert_eq!(state.high(), 0);
        let s = open(&mut state, "s");
        assert_eq!(
            issue(&mut state, s, &long, "t", b""),
            failed(ApplyError::NameTooLong(NAME_BYTES_MAX + 1))
        );
        assert_eq!(
            issue(&mut state, s, "r", &long, b""),
            failed(ApplyError::NameTooLong(NAME_BYTES_MAX + 1))
        );
        assert_eq!(
            lock(&mut state, s, &long),
            failed(ApplyError::NameTooLong(NAME_BYTES_MAX + 1))
        );
        let big = vec![0u8; TICKET_DATA_BYTES_MAX + 1];
        assert_eq!(
            issue(&mut state, s, "r", "t", &big),
            failed(ApplyError::DataTooLarge(TICKET_DATA_BYTES_MAX + 1))
        );
        assert_eq!(issue(&mut state, s, "r", "t", &big[1..]), Outcome::Done);
        assert_eq!(state.resource_count(), 1);
        // A name of exactly the limit is a name.
        let longest = "y".repeat(NAME_BYTES_MAX);
        let command = Command::OpenSession {
            name: longest.clone(),
            src: longest.clone(),
            ttl_ms: 1,
        };
        assert!(matches!(
            state.apply(&command),
            Outcome::SessionOpened { .. }
        ));
        assert_eq!(issue(&mut state, s, &longest, &longest, b""), Outcome::Done);
        let other = format!("z{}", &longest[1..]);
        assert!(matches!(
            lock(&mut state, s, &other),
            Outcome::Lock { granted: true, .. }
        ));
    }

    #[test]
    fn unknown_session_is_refused_everywhere() {
        let mut state = State::new();
        let s = open(&mut state, "s");
        issue(&mut state, s, "r", "t", b"");
        let ghost = 99;
        let commands = [
            Command::CloseSession { id: ghost },
            Command::IssueTicket {
                session: ghost,
                resource: "r".into(),
                name: "t".into(),
                data: vec![],
            },
            Command::RevokeTicket {
                session: ghost,
                resource: "r".into(),
                name: "t".into(),
            },
            Command::Claim {
                session: ghost,
                resource: "r".into(),
            },
            Command::Release {
                session: ghost,
                resource: "r".into(),
                name: "t".into(),
            },
            Command::Lock {
                session: ghost,
                resource: "l".into(),
            },
            Command::Unlock {
                session: ghost,
                resource: "l".into(),
            },
        ];
        let before = state.clone();
        for command in commands {
            assert_eq!(
                state.apply(&command),
                failed(ApplyError::UnknownSession(ghost)),
                "{command:?}"
            );
        }
        assert_eq!(state, before);
    }

    #[test]
    fn issue_creates_the_resource_and_claim_picks_by_name() {
        let mut state = State::new();
        let issuer = open(&mut state, "issuer");
        let c1 = open(&mut state, "c1");
        let c2 = open(&mut state, "c2");
        let c3 = open(&mut state, "c3");
        assert_eq!(
            issue(&mut state, issuer, "r", "foo", b"foo data"),
            Outcome::Done
        );
        assert_eq!(
            issue(&mut state, issuer, "r", "bar", b"bar data"),
            Outcome::Done
        );
        let first = claimed(&claim(&mut state, c1, "r")).unwrap();
        assert_eq!(first.0, "bar");
        let second = claimed(&claim(&mut state, c2, "r")).unwrap();
        assert_eq!(second.0, "foo");
        assert!(second.1 > first.1);
        assert_eq!(claimed(&claim(&mut state, c3, "r")), None);
        assert_eq!(state.has_claim(c1, "r", "bar"), Ok(true));
        assert_eq!(state.has_claim(c2, "r", "foo"), Ok(true));
    }

    #[test]
    fn claim_answer_carries_the_ticket_as_claimed() {
        let mut state = State::new();
        let issuer = open(&mut state, "issuer");
        let claimant = open(&mut state, "claimant");
        issue(&mut state, issuer, "test", "ticket 1", b"FOO");
        let Outcome::Claim {
            claimed: true,
            ticket: Some(ticket),
            fencing_token: Some(token),
        } = claim(&mut state, claimant, "test")
        else {
            panic!("claim failed");
        };
        assert_eq!(token, state.high());
        assert_eq!(
            (ticket.name.as_str(), ticket.resource.as_str()),
            ("ticket 1", "test")
        );
        assert_eq!(ticket.data, b"FOO");
        assert_eq!(
            ticket.issuer.map(|s| (s.id, s.name)),
            Some((issuer, "issuer".to_owned()))
        );
        assert_eq!(
            ticket.claimant.map(|s| (s.id, s.name)),
            Some((claimant, "claimant".to_owned()))
        );
    }

    #[test]
    fn reclaim_returns_the_held_ticket_with_a_fresh_token() {
        let mut state = State::new();
        let issuer = open(&mut state, "issuer");
        let c = open(&mut state, "c");
        issue(&mut state, issuer, "r", "b", b"");
        let (name, token) = claimed(&claim(&mut state, c, "r")).unwrap();
        issue(&mut state, issuer, "r", "a", b"");
        // "a" is free and sorts first, but c already holds "b".
        let (again, token_again) = claimed(&claim(&mut state, c, "r")).unwrap();
        assert_eq!(again, name);
        assert!(token_again > token);
        assert_eq!(state.has_claim(c, "r", "a"), Ok(false));
    }

    #[test]
    fn claim_on_missing_or_lock_resource() {
        let mut state = State::new();
        let s = open(&mut state, "s");
        let high = state.high();
        assert_eq!(claimed(&claim(&mut state, s, "nothing")), None);
        assert_eq!(state.high(), high);
        lock(&mut state, s, "l");
        assert_eq!(
            claim(&mut state, s, "l"),
            failed(ApplyError::NotTicketResource("l".into()))
        );
        assert_eq!(
            issue(&mut state, s, "l", "t", b""),
            failed(ApplyError::NotTicketResource("l".into()))
        );
    }

    #[test]
    fn takeover_keeps_the_claimant_and_moves_the_issuance() {
        let mut state = State::new();
        let old = open(&mut state, "old");
        let new = open(&mut state, "new");
        let c = open(&mut state, "c");
        issue(&mut state, old, "r", "t", b"v1");
        let (_, token) = claimed(&claim(&mut state, c, "r")).unwrap();
        assert_eq!(issue(&mut state, new, "r", "t", b"v2"), Outcome::Done);
        assert_eq!(state.has_claim(c, "r", "t"), Ok(true));
        let view = state.ticket_view("r", "t").unwrap();
        assert_eq!(
            (view.data.as_slice(), view.issuer.unwrap().id),
            (&b"v2"[..], new)
        );
        assert!(state.sessions[&old].issued.is_empty());
        assert_eq!(state.sessions[&new].issued.len(), 1);
        // Closing the old issuer no longer touches the ticket.
        state.apply(&Command::CloseSession { id: old });
        assert_eq!(state.has_claim(c, "r", "t"), Ok(true));
        // The claim and its token survived the takeover.
        let Some(Resource::Tickets(tickets)) = state.resources.get("r") else {
            panic!()
        };
        assert_eq!(tickets["t"].claim, Some(Claim { session: c, token }));
        // Re-issuing by the same issuer just replaces the data.
        issue(&mut state, new, "r", "t", b"v3");
        assert_eq!(state.ticket_view("r", "t").unwrap().data, b"v3");
        assert_eq!(state.has_claim(c, "r", "t"), Ok(true));
    }

    #[test]
    fn has_claim_on_a_just_emptied_resource_is_false_until_the_sweep() {
        let mut state = State::new();
        let issuer = open(&mut state, "issuer");
        let c = open(&mut state, "claimant");
        issue(&mut state, issuer, "r", "t", b"x");
        claim(&mut state, c, "r");
        state.apply(&Command::RevokeTicket {
            session: issuer,
            resource: "r".into(),
            name: "t".into(),
        });
        assert_eq!(state.has_claim(c, "r", "t"), Ok(false));
        assert!(
            state.has_claim(c, "never", "t").is_err(),
            "an unknown resource"
        );
        state.sweep_emptied();
        assert_eq!(
            state.has_claim(c, "r", "t"),
            Err(ApplyError::UnknownResource("r".into()))
        );
    }

    #[test]
    fn revoke_ends_the_claim_and_removes_an_empty_resource() {
        let mut state = State::new();
        let issuer = open(&mut state, "issuer");
        let other = open(&mut state, "other");
        let c = open(&mut state, "c");
        issue(&mut state, issuer, "r", "t", b"");
        issue(&mut state, issuer, "r", "u", b"");
        claim(&mut state, c, "r");
        let revoke = |session, name: &str| Command::RevokeTicket {
            session,
            resource: "r".into(),
            name: name.into(),
        };
        assert_eq!(state.apply(&revoke(issuer, "t")), Outcome::Done);
        assert_eq!(state.has_claim(c, "r", "t"), Ok(false));
        assert!(state.sessions[&c].claims.is_empty());
        let unknown = ApplyError::UnknownTicket {
            resource: "r".into(),
            name: "t".into(),
        };
        assert_eq!(state.apply(&revoke(issuer, "t")), failed(unknown));
        // Any session may revoke, as in turbosquid.
        assert_eq!(state.apply(&revoke(other, "u")), Outcome::Done);
        assert_eq!(state.resource_count(), 0);
        assert!(state.sessions[&issuer].issued.is_empty());
        assert_eq!(
            state.apply(&revoke(issuer, "u")),
            failed(ApplyError::UnknownResource("r".into()))
        );
        lock(&mut state, issuer, "l");
        let on_lock = Command::RevokeTicket {
            session: issuer,
            resource: "l".into(),
            name: "l".into(),
        };
        assert_eq!(
            state.apply(&on_lock),
            failed(ApplyError::NotTicketResource("l".into()))
        );
    }

    #[test]
    fn release_frees_only_what_the_session_holds() {
        let mut state = State::new();
        let issuer = open(&mut state, "issuer");
        let c1 = open(&mut state, "c1");
        let c2 = open(&mut state, "c2");
        issue(&mut state, issuer, "r", "t", b"");
        claim(&mut state, c1, "r");
        let release = |session, resource: &str, name: &str| Command::Release {
            session,
            resource: resource.into(),
            name: name.into(),
        };
        assert_eq!(state.apply(&release(c2, "r", "t")), Outcome::Done);
        assert_eq!(state.has_claim(c1, "r", "t"), Ok(true));
        assert_eq!(state.apply(&release(c1, "r", "nope")), Outcome::Done);
        assert_eq!(state.apply(&release(c1, "r", "t")), Outcome::Done);
        assert_eq!(state.has_claim(c1, "r", "t"), Ok(false));
        assert!(state.sessions[&c1].claims.is_empty());
        assert_eq!(
            claimed(&claim(&mut state, c2, "r")).map(|c| c.0),
            Some("t".to_owned())
        );
        assert_eq!(
            state.apply(&release(c1, "x", "t")),
            failed(ApplyError::UnknownResource("x".into()))
        );
        lock(&mut state, c1, "l");
        assert_eq!(
            state.apply(&release(c1, "l", "l")),
            failed(ApplyError::NotTicketResource("l".into()))
        );
    }

    #[test]
    fn lock_is_a_try_lock_with_regrant() {
        let mut state = State::new();
        let s1 = open(&mut state, "s1");
        let s2 = open(&mut state, "s2");
        let Outcome::Lock {
            granted: true,
            fencing_token: Some(token),
        } = lock(&mut state, s1, "/foo/bar")
        else {
            panic!("lock refused")
        };
        let high = state.high();
        assert_eq!(
            lock(&mut state, s1, "/foo/bar"),
            Outcome::Lock {
                granted: true,
                fencing_token: Some(token)
            }
        );
        assert_eq!(state.high(), high, "a re-grant mints nothing");
        assert_eq!(
            lock(&mut state, s2, "/foo/bar"),
            Outcome::Lock {
                granted: false,
                fencing_token: None
            }
        );
        assert_eq!(state.lock_count(), 1);
        assert_eq!(state.lock_holder("/foo/bar"), Some((s1, token)));
        let unlock = |session| Command::Unlock {
            session,
            resource: "/foo/bar".into(),
        };
        assert_eq!(
            state.apply(&unlock(s2)),
            failed(ApplyError::LockHeldByOther("/foo/bar".into()))
        );
        assert_eq!(state.apply(&unlock(s1)), Outcome::Done);
        assert_eq!(state.resource_count(), 0, "an unlocked lock disappears");
        assert!(state.sessions[&s1].locks.is_empty());
        let Outcome::Lock {
            granted: true,
            fencing_token: Some(next),
        } = lock(&mut state, s2, "/foo/bar")
        else {
            panic!("lock refused")
        };
        assert!(next > token);
        assert_eq!(
            state.apply(&unlock(s1)),
            failed(ApplyError::LockHeldByOther("/foo/bar".into()))
        );
    }

    #[test]
    fn lock_calls_on_the_wrong_kind_or_nothing() {
        let mut state = State::new();
        let s = open(&mut state, "s");
        issue(&mut state, s, "r", "t", b"");
        assert_eq!(
            lock(&mut state, s, "r"),
            failed(ApplyError::NotLockResource("r".into()))
        );
        let unlock = |resource: &str| Command::Unlock {
            session: s,
            resource: resource.into(),
        };
        assert_eq!(
            state.apply(&unlock("r")),
            failed(ApplyError::NotLockResource("r".into()))
        );
        assert_eq!(
            state.apply(&unlock("none")),
            failed(ApplyError::UnknownResource("none".into()))
        );
    }

    #[test]
    fn close_releases_claims_drops_issues_and_frees_locks() {
        let mut state = State::new();
        let a = open(&mut state, "a");
        let b = open(&mut state, "b");
        issue(&mut state, a, "mine", "t1", b"");
        issue(&mut state, a, "mine", "t2", b"");
        issue(&mut state, b, "theirs", "t", b"");
        issue(&mut state, a, "shared", "by-a", b"");
        issue(&mut state, b, "shared", "by-b", b"");
        claim(&mut state, b, "mine");
        claim(&mut state, a, "theirs");
        lock(&mut state, a, "lock");
        assert_eq!(state.apply(&Command::CloseSession { id: a }), Outcome::Done);
        assert!(!state.session_exists(a));
        assert_eq!(
            state.dump_resources_json(Some("mine")),
            None,
            "a's tickets are gone"
        );
        assert_eq!(state.lock_holder("lock"), None);
        assert_eq!(state.has_claim(b, "theirs", "t"), Ok(false));
        assert!(state.has_free_ticket("theirs"));
        assert_eq!(state.ticket_view("shared", "by-a"), None);
        assert!(state.ticket_view("shared", "by-b").is_some());
        assert!(
            state.sessions[&b].claims.is_empty(),
            "b's claim on a's ticket ended"
        );
        assert_eq!(
            state.apply(&Command::CloseSession { id: a }),
            failed(ApplyError::UnknownSession(a))
        );
        assert_eq!(state.apply(&Command::CloseSession { id: b }), Outcome::Done);
        state.sweep_emptied();
        assert_eq!(
            state,
            State {
                high: state.high,
                ..State::default()
            }
        );
    }

    #[test]
    fn expiry_closes_each_known_session_and_ignores_the_rest() {
        let mut state = State::new();
        let a = open(&mut state, "a");
        let b = open(&mut state, "b");
        let c = open(&mut state, "c");
        issue(&mut state, a, "r", "t", b"");
        claim(&mut state, c, "r");
        lock(&mut state, b, "l");
        let expire = Command::ExpireSessions {
            ids: vec![a, 999, b, a],
        };
        assert_eq!(state.apply(&expire), Outcome::Done);
        assert_eq!(state.sessions().collect::<Vec<_>>(), vec![(c, 5000)]);
        assert_eq!(state.resource_count(), 0);
        assert!(state.sessions[&c].claims.is_empty());
        assert_eq!(
            state.apply(&Command::ExpireSessions { ids: vec![] }),
            Outcome::Done
        );
    }

    #[test]
    fn session_holding_its_own_ticket_closes_cleanly() {
        let mut state = State::new();
        let s = open(&mut state, "s");
        issue(&mut state, s, "r", "t", b"");
        claim(&mut state, s, "r");
        state.apply(&Command::CloseSession { id: s });
        state.sweep_emptied();
        assert_eq!(
            state,
            State {
                high: state.high,
                ..State::default()
            }
        );
    }

    #[test]
    fn random_commands_keep_invariants_and_refusals_change_nothing() {
        let (mut claims, mut new_locks, mut regrants, mut refusals) = (0, 0, 0, 0);
        for seed in 0..20 {
            let mut prng = Prng::new(seed);
            let mut state = State::new();
            for _ in 0..500 {
                let command = random_command(&mut prng, &state);
                let before = state.clone();
                let outcome = state.apply(&command);
                assert!(state.high() >= before.high(), "counter went backwards");
                match outcome {
                    Outcome::Failed(_) => {
                        refusals += 1;
                        assert_eq!(state, before, "{command:?}");
                    }
                    // Every claim mints: its token is the new high.
                    Outcome::Claim {
                        fencing_token: Some(token),
                        ..
                    } => {
                        claims += 1;
                        assert_eq!((token, before.high() + 1), (state.high(), state.high()));
                    }
                    Outcome::Lock {
                        fencing_token: Some(token),
                        ..
                    } if token > before.high() => {
                        new_locks += 1;
                        assert_eq!(token, state.high());
                    }
                    Outcome::Lock {
                        fencing_token: Some(_),
                        ..
                    } => {
                        regrants += 1;
                        assert_eq!(state, before, "a re-grant changes nothing");
                    }
                    _ => {}
                }
                // Decoding re-checks every reference and rebuilds the
                // back-references: equality proves they were consistent.
                let decoded = State::decode_snapshot(&state.encode_snapshot());
                assert_eq!(decoded.as_ref(), Ok(&state), "seed {seed}");
            }
        }
        // The generator must reach every interesting path.
        assert!(
            claims > 100 && new_locks > 100 && regrants > 10 && refusals > 100,
            "{claims} {new_locks} {regrants} {refusals}"
        );
    }
}
