//! The whole state as one versioned, checksummed binary value: what a Raft
//! snapshot carries and what the store may keep.
//!
//! Owns: the snapshot format. May not touch: I/O (the caller stores or
//! sends the bytes) and apply semantics.
//!
//! Layout, big-endian: `magic u32 | version u8 | high u64 |
//! sessions: count u32, (id u64, name, src, ttl_ms u64)* |
//! resources: count u32, (name, kind u8, body)* | crc32 u32` where a string
//! is `len u32 | UTF-8`, a ticket resource body is `count u32, (name,
//! data, issuer u64, claimed u8, [claimant u64, token u64])*` and a lock
//! body is `holder u64, token u64`. Keys are written in ascending order
//! and must be read back strictly ascending, so each state has exactly one
//! encoding. The sessions' back-references (claims, issued, locks) are
//! not stored: they are rebuilt, so they cannot disagree with the tickets.

use super::codec::{DecodeError, Reader, Writer};
use super::state::{Claim, Resource, Session, State, Ticket};
use super::{NAME_BYTES_MAX, SessionId, TICKET_DATA_BYTES_MAX};
use crate::crc32;
use byteorder::{BigEndian, ByteOrder};
use std::collections::BTreeMap;

const MAGIC: u32 = 0x544b_5353; // "TKSS"
const VERSION: u8 = 1;
const KIND_TICKETS: u8 = 0;
const KIND_LOCK: u8 = 1;

/// Smallest encodings, so a count can be checked against the input.
const SESSION_BYTES_MIN: usize = 8 + 4 + 4 + 8;
const RESOURCE_BYTES_MIN: usize = 4 + 1 + 4;
const TICKET_BYTES_MIN: usize = 4 + 4 + 8 + 1;

impl State {
    /// The whole state, in the snapshot format above.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(MAGIC);
        w.u8(VERSION);
        w.u64(self.high);
        w.len(self.sessions.len());
        for (id, session) in &self.sessions {
            w.u64(*id);
            w.str(&session.name);
            w.str(&session.src);
            w.u64(session.ttl_ms);
        }
        w.len(self.resources.len());
        for (name, resource) in &self.resources {
            w.str(name);
            encode_resource(&mut w, resource);
        }
        let crc = crc32::checksum(&w.bytes);
        w.u32(crc);
        w.bytes
    }

    /// Decodes and checks a snapshot from untrusted bytes.
    ///
    /// # Errors
    /// [`DecodeError`] on a bad magic number, version or checksum,
    /// truncation, trailing bytes, over-long fields, keys out of order, or
    /// references to sessions that do not exist.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<State, DecodeError> {
        let Some(body_len) = bytes.len().checked_sub(4) else {
            return Err(DecodeError::Truncated);
        };
        let (body, stored) = bytes.split_at(body_len);
        let stored = BigEndian::read_u32(stored);
        let computed = crc32::checksum(body);
        if stored != computed {
            return Err(DecodeError::BadChecksum { stored, computed });
        }
        let mut r = Reader::new(body);
        let magic = r.u32()?;
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let mut state = State { high: r.u64()?, ..State::default() };
        decode_sessions(&mut r, &mut state)?;
        decode_resources(&mut r, &mut state)?;
        r.finish()?;
        link(&mut state)?;
        Ok(state)
    }
}

fn encode_resource(w: &mut Writer, resource: &Resource) {
    match resource {
        Resource::Tickets(tickets) => {
            w.u8(KIND_TICKETS);
            w.len(tickets.len());
            for (name, ticket) in tickets {
                w.str(name);
                w.bytes(&ticket.data);
                w.u64(ticket.issuer);
                match ticket.claim {
                    None => w.u8(0),
                    Some(claim) => {
                        w.u8(1);
                        encode_claim(w, claim);
                    }
                }
            }
        }
        Resource::Lock(claim) => {
            w.u8(KIND_LOCK);
            encode_claim(w, *claim);
        }
    }
}

fn encode_claim(w: &mut Writer, claim: Claim) {
    w.u64(claim.session);
    w.u64(claim.token);
}

fn decode_sessions(r: &mut Reader<'_>, state: &mut State) -> Result<(), DecodeError> {
    let count = r.count(SESSION_BYTES_MIN)?;
    for _ in 0..count {
        let id = r.u64()?;
        let name = r.string("session name", NAME_BYTES_MAX)?;
        let src = r.string("session source", NAME_BYTES_MAX)?;
        let ttl_ms = r.u64()?;
        if id == 0 || id > state.high {
            return Err(DecodeError::Inconsistent("session id outside the counter's range"));
        }
        if state.sessions.last_key_value().is_some_and(|(last, _)| *last >= id) {
            return Err(DecodeError::Inconsistent("session ids not strictly ascending"));
        }
        state.sessions.insert(id, Session::new(name, src, ttl_ms));
    }
    Ok(())
}

fn decode_resources(r: &mut Reader<'_>, state: &mut State) -> Result<(), DecodeError> {
    let count = r.count(RESOURCE_BYTES_MIN)?;
    for _ in 0..count {
        let name = r.string("resource name", NAME_BYTES_MAX)?;
        if state.resources.last_key_value().is_some_and(|(last, _)| *last >= name) {
            return Err(DecodeError::Inconsistent("resource names not strictly ascending"));
        }
        let resource = match r.u8()? {
            KIND_TICKETS => Resource::Tickets(decode_tickets(r)?),
            KIND_LOCK => Resource::Lock(decode_claim(r)?),
            other => return Err(DecodeError::UnknownTag(other)),
        };
        state.resources.insert(name, resource);
    }
    Ok(())
}

fn decode_tickets(r: &mut Reader<'_>) -> Result<BTreeMap<String, Ticket>, DecodeError> {
    let count = r.count(TICKET_BYTES_MIN)?;
    if count == 0 {
        return Err(DecodeError::Inconsistent("ticket resource without tickets"));
    }
    let mut tickets = BTreeMap::new();
    for _ in 0..count {
        let name = r.string("ticket name", NAME_BYTES_MAX)?;
        if tickets.last_key_value().is_some_and(|(last, _): (&String, _)| *last >= name) {
            return Err(DecodeError::Inconsistent("ticket names not strictly ascending"));
        }
        let data = r.bytes("ticket data", TICKET_DATA_BYTES_MAX)?.to_vec();
        let issuer = r.u64()?;
        let claim = match r.u8()? {
            0 => None,
            1 => Some(decode_claim(r)?),
            other => return Err(DecodeError::UnknownTag(other)),
        };
        tickets.insert(name, Ticket { data, issuer, claim });
    }
    Ok(tickets)
}

fn decode_claim(r: &mut Reader<'_>) -> Result<Claim, DecodeError> {
    Ok(Claim { session: r.u64()?, token: r.u64()? })
}

/// Checks every reference and rebuilds the sessions' back-references.
fn link(state: &mut State) -> Result<(), DecodeError> {
    let State { high, sessions, resources } = state;
    for (resource, kind) in resources.iter() {
        match kind {
            Resource::Lock(claim) => {
                check_token(*claim, *high)?;
                session_mut(sessions, claim.session)?.locks.insert(resource.clone());
            }
            Resource::Tickets(tickets) => {
                for (name, ticket) in tickets {
                    let key = (resource.clone(), name.clone());
                    session_mut(sessions, ticket.issuer)?.issued.insert(key.clone());
                    if let Some(claim) = ticket.claim {
                        check_token(claim, *high)?;
                        session_mut(sessions, claim.session)?.claims.insert(key);
                    }
                }
            }
        }
    }
    Ok(())
}

fn session_mut(sessions: &mut BTreeMap<SessionId, Session>, id: SessionId) -> Result<&mut Session, DecodeError> {
    sessions.get_mut(&id).ok_or(DecodeError::Inconsistent("reference to a session that does not exist"))
}

fn check_token(claim: Claim, high: u64) -> Result<(), DecodeError> {
    if claim.token == 0 || claim.token > high {
        return Err(DecodeError::Inconsistent("fencing token outside the counter's range"));
    }
    Ok(())
}
