//! Owned copies of sessions and tickets, detached from the state, in the
//! shape turbosquid's Go client decodes (rendered by `json.rs`).
//!
//! Owns: the view types. May not touch: the state; views are built by
//! `state.rs` so that an `Outcome` can outlive the entry that made it.

use super::SessionId;

/// A session without its ticket lists, as nested in a ticket
/// (`Issuer`/`Claimant`, whose `Tickets` and `Issuances` are always empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub id: SessionId,
    pub name: String,
    pub src: String,
    pub ttl_ms: u64,
}

/// One ticket with its issuer and claimant sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketView {
    pub name: String,
    pub resource: String,
    pub data: Vec<u8>,
    /// `None` only if the issuer is gone, which the state never allows;
    /// kept optional because the Go shape allows `null`.
    pub issuer: Option<SessionView>,
    pub claimant: Option<SessionView>,
}
