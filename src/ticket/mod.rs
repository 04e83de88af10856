//! ticketd's replicated application: sessions, tickets, locks and the ID
//! counter, as a deterministic state machine, plus the JSON its HTTP API
//! answers with.
//!
//! Every change is a [`Command`] in the Raft log; when an entry commits,
//! every node calls [`State::apply`] in log order. `apply` is a pure
//! function of (state, command): no I/O, no clock, no threads, no
//! randomness, and only ordered collections, so all nodes agree. What it
//! returns ([`Outcome`]) is what the leader answers the client with.
//!
//! This module may not touch: the network, the disk, clocks or Raft. The
//! HTTP layer validates requests, encodes commands and renders outcomes;
//! the node thread applies entries; the store keeps
//! [`State::encode_snapshot`] bytes.
//!
//! # What we kept from turbosquid's Go ticketd (its `ticket/` and `http/`)
//!
//! Shapes (rendered by `json.rs`, byte for byte as Go's `encoding/json`):
//! - `Session {Name, Id, Src, Ttl, Tickets, Issuances}`: `Id` is a string
//!   (turbosquid used KSUIDs; ours is the counter value in decimal), `Src`
//!   the client's `ip:port`, `Ttl` in ms, `Tickets` the tickets it claims,
//!   `Issuances` the tickets it issued. Both lists are `[]`, never `null`.
//! - `Ticket {Name, ResourceName, Data, Issuer, Claimant}`: `Data` is
//!   base64; `Issuer`/`Claimant` are sessions with empty lists, or `null`.
//! - `Resource {Name, IsLock, Tickets: {name: Ticket}}`. turbosquid stores
//!   a held lock as a lock resource with one ticket named after the
//!   resource, issued by the holder, `Data` empty, no claimant, and lists
//!   it in the holder's `Issuances`; we render locks the same way.
//! - Claim answer `TicketResponse {Claimed, Ticket}`: `Ticket` is a value,
//!   so a failed claim carries a zero ticket (`"Data":null`), not `null`.
//!
//! Semantics:
//! - Issue creates the (ticket) resource if missing; issuing an existing
//!   name takes it over: new issuer and data, same claimant. Issue on a lock
//!   resource is refused (turbosquid `ErrResourceType`, our 409). Issuing
//!   refreshes the issuer's session: that is the leader's deadline table
//!   ([`Deadlines`]), not replicated state, so the HTTP layer does it.
//! - Any live session may revoke any ticket; revoking ends its claim.
//! - Claim on a missing resource answers `Claimed:false` (turbosquid treats
//!   it as "all claimed"); on a lock resource, 409. A session re-claiming
//!   a resource where it holds a ticket gets that ticket back (turbosquid
//!   accepts a ticket "free or claimed by this session", in random map
//!   order; we take held tickets first, then free ones, each by name).
//! - Release of a ticket the session does not hold, or that is gone, is a
//!   no-op "Ok"; has-claim of an unknown ticket is `false` (both as in
//!   turbosquid); an unknown resource is 404 for both.
//! - Lock is a try-lock that creates the lock resource; re-locking by the
//!   holder succeeds; unlock by another session is refused (turbosquid
//!   answers 404 there; we say 409, the lock exists but is not yours).
//! - Close and expiry release the session's claims, drop the tickets it
//!   issued (turbosquid orphans them and sweeps them on its next expiry
//!   tick; we remove them at once) and free its locks. A resource with no
//!   tickets left, and an unlocked lock, disappear at once.
//!
//! Beyond turbosquid: session ids and fencing tokens come from the ID
//! counter (`high += 1`), so none repeats in the cluster's life. Every
//! successful claim mints a new token; a lock mints one per new grant and
//! a re-lock by the holder returns the token of its grant. Order inside
//! `Tickets`/`Issuances` is by (resource, ticket name), not turbosquid's
//! insertion order (which its swap-removal scrambled anyway).

mod apply;
mod base64;
mod command;
mod cowmap;
mod deadlines;
mod error;
mod json;
mod snapshot;
mod state;
#[cfg(test)]
mod testkit;
mod view;

pub use crate::bytes::DecodeError;
pub use apply::Outcome;
pub use command::Command;
pub use deadlines::Deadlines;
pub use error::ApplyError;
pub use json::{claim_json, session_id_json, string_json, ticket_json};
pub use state::State;
pub use view::{SessionView, TicketView};

/// A session's id: a value of the ID counter, never 0, never reused.
pub type SessionId = u64;

/// Largest ticket data `apply` accepts (turbosquid's 1 KiB body limit).
pub const TICKET_DATA_BYTES_MAX: usize = 1024;

/// Largest session name, source, resource or ticket name `apply` accepts
/// when it creates one; names come from URLs, which the HTTP layer caps
/// lower still.
pub const NAME_BYTES_MAX: usize = 4096;
