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

use super::cowmap::CowMap;
use super::state::{Claim, Resource, Session, State, Ticket};
use super::{NAME_BYTES_MAX, SessionId, TICKET_DATA_BYTES_MAX};
use crate::bytes::{DecodeError, Reader, Writer};
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
        // A guess at the size (a session is its id, two short strings and
        // a TTL): growing a multi-megabyte buffer by doubling copies it.
        let mut w =
            Writer::with_capacity(64 + 48 * self.sessions.len() + 64 * self.resources.len());
        w.u32(MAGIC);
        w.u8(VERSION);
        w.u64(self.high);
        w.len(self.sessions.len());
        for (id, session) in self.sessions.iter() {
            w.u64(*id);
            w.str(&session.name);
            w.str(&session.src);
            w.u64(session.ttl_ms);
        }
        w.len(self.resources.len());
        for (name, resource) in self.resources.iter() {
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
        let mut state = State {
            high: r.u64()?,
            ..State::default()
        };
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
            return Err(DecodeError::Inconsistent(
                "session id outside the counter's range",
            ));
        }
        if state
            .sessions
            .last_key_value()
            .is_some_and(|(last, _)| *last >= id)
        {
            return Err(DecodeError::Inconsistent(
                "session ids not strictly ascending",
            ));
        }
        state.sessions.insert(id, Session::new(name, src, ttl_ms));
    }
    Ok(())
}

fn decode_resources(r: &mut Reader<'_>, state: &mut State) -> Result<(), DecodeError> {
    let count = r.count(RESOURCE_BYTES_MIN)?;
    for _ in 0..count {
        let name = r.string("resource name", NAME_BYTES_MAX)?;
        if state
            .resources
            .last_key_value()
            .is_some_and(|(last, _)| *last >= name)
        {
            return Err(DecodeError::Inconsistent(
                "resource names not strictly ascending",
            ));
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
        if tickets
            .last_key_value()
            .is_some_and(|(last, _): (&String, _)| *last >= name)
        {
            return Err(DecodeError::Inconsistent(
                "ticket names not strictly ascending",
            ));
        }
        let data = r.bytes("ticket data", TICKET_DATA_BYTES_MAX)?.to_vec();
        let issuer = r.u64()?;
        let claim = match r.u8()? {
            0 => None,
            1 => Some(decode_claim(r)?),
            other => return Err(DecodeError::UnknownTag(other)),
        };
        tickets.insert(
            name,
            Ticket {
                data,
                issuer,
                claim,
            },
        );
    }
    Ok(tickets)
}

fn decode_claim(r: &mut Reader<'_>) -> Result<Claim, DecodeError> {
    Ok(Claim {
        session: r.u64()?,
        token: r.u64()?,
    })
}

/// Checks every reference and rebuilds the sessions' back-references.
fn link(state: &mut State) -> Result<(), DecodeError> {
    let State {
        high,
        sessions,
        resources,
        ..
    } = state;
    for (resource, kind) in resources.iter() {
        match kind {
            Resource::Lock(claim) => {
                check_token(*claim, *high)?;
                session_mut(sessions, claim.session)?
                    .locks
                    .insert(resource.clone());
            }
            Resource::Tickets(tickets) => {
                for (name, ticket) in tickets {
                    let key = (resource.clone(), name.clone());
                    session_mut(sessions, ticket.issuer)?
                        .issued
                        .insert(key.clone());
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

fn session_mut(
    sessions: &mut CowMap<SessionId, Session>,
    id: SessionId,
) -> Result<&mut Session, DecodeError> {
    sessions.get_mut(&id).ok_or(DecodeError::Inconsistent(
        "reference to a session that does not exist",
    ))
}

fn check_token(claim: Claim, high: u64) -> Result<(), DecodeError> {
    if claim.token == 0 || claim.token > high {
        return Err(DecodeError::Inconsistent(
            "fencing token outside the counter's range",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::Command;
    use crate::ticket::testkit::{Prng, random_command};

    fn populated() -> State {
        let mut state = State::new();
        state.apply(&Command::ReserveIds { count: 1000 });
        for name in ["a", "b", "c"] {
            state.apply(&Command::OpenSession {
                name: name.into(),
                src: "127.0.0.1:9".into(),
                ttl_ms: 700,
            });
        }
        let issue = |session, name: &str| Command::IssueTicket {
            session,
            resource: "r".into(),
            name: name.into(),
            data: name.as_bytes().to_vec(),
        };
        state.apply(&issue(1001, "t1"));
        state.apply(&issue(1002, "t2"));
        state.apply(&Command::Claim {
            session: 1003,
            resource: "r".into(),
        });
        state.apply(&Command::Lock {
            session: 1002,
            resource: "l".into(),
        });
        state
    }

    /// Re-seals a hand-edited body with a valid checksum, so a test reaches
    /// the checks behind the checksum.
    fn seal(mut body: Vec<u8>) -> Vec<u8> {
        let crc = crc32::checksum(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        body
    }

    fn body_of(state: &State) -> Vec<u8> {
        let bytes = state.encode_snapshot();
        bytes[..bytes.len() - 4].to_vec()
    }

    #[test]
    fn empty_and_populated_states_round_trip() {
        for state in [State::new(), populated()] {
            let bytes = state.encode_snapshot();
            assert_eq!(State::decode_snapshot(&bytes), Ok(state.clone()));
            assert_eq!(
                State::decode_snapshot(&bytes).unwrap().encode_snapshot(),
                bytes,
                "one encoding per state"
            );
        }
    }

    #[test]
    fn random_histories_round_trip_and_behave_identically() {
        for seed in 100..110 {
            let mut prng = Prng::new(seed);
            let mut original = State::new();
            for _ in 0..2_000 {
                original.apply(&random_command(&mut prng, &original));
            }
            let mut copy = State::decode_snapshot(&original.encode_snapshot()).unwrap();
            assert_eq!(copy, original);
            for _ in 0..500 {
                let command = random_command(&mut prng, &original);
                assert_eq!(
                    copy.apply(&command),
                    original.apply(&command),
                    "seed {seed}: {command:?}"
                );
            }
            assert_eq!(copy.dump_sessions_json(), original.dump_sessions_json());
            assert_eq!(
                copy.dump_resources_json(None),
                original.dump_resources_json(None)
            );
            assert_eq!(copy.encode_snapshot(), original.encode_snapshot());
        }
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error() {
        let bytes = populated().encode_snapshot();
        for cut in 0..bytes.len() {
            assert!(
                State::decode_snapshot(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[at] ^= 1 << bit;
                assert!(
                    State::decode_snapshot(&flipped).is_err(),
                    "flip at {at}/{bit}"
                );
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(State::decode_snapshot(&longer).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut prng = Prng::new(7);
        for _ in 0..20_000 {
            let len = prng.below(64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| prng.next() as u8).collect();
            assert!(State::decode_snapshot(&bytes).is_err());
            // Behind a valid checksum and header, the structure checks run.
            let mut body = body_of(&State::new())[..5].to_vec();
            body.extend_from_slice(&bytes);
            let _ = State::decode_snapshot(&seal(body));
        }
    }

    #[test]
    fn header_errors_are_named() {
        let mut body = body_of(&State::new());
        body[0] ^= 0xff;
        assert!(matches!(
            State::decode_snapshot(&seal(body)),
            Err(DecodeError::BadMagic(_))
        ));
        let mut body = body_of(&State::new());
        body[4] = 9;
        assert_eq!(
            State::decode_snapshot(&seal(body)),
            Err(DecodeError::UnknownVersion(9))
        );
        let mut bytes = State::new().encode_snapshot();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            State::decode_snapshot(&bytes),
            Err(DecodeError::BadChecksum { .. })
        ));
    }

    /// Hand-built bodies: header, high, then sessions and resources.
    fn body(high: u64, sessions: &[(u64, &str)], resources: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(MAGIC);
        w.u8(VERSION);
        w.u64(high);
        w.len(sessions.len());
        for (id, name) in sessions {
            w.u64(*id);
            w.str(name);
            w.str("src");
            w.u64(1);
        }
        resources(&mut w);
        w.bytes
    }

    fn inconsistent(bytes: Vec<u8>) -> bool {
        matches!(
            State::decode_snapshot(&seal(bytes)),
            Err(DecodeError::Inconsistent(_))
        )
    }

    #[test]
    fn broken_invariants_are_rejected() {
        let none = |w: &mut Writer| w.len(0);
        assert!(State::decode_snapshot(&seal(body(5, &[(1, "a"), (2, "b")], none))).is_ok());
        assert!(
            inconsistent(body(5, &[(2, "a"), (1, "b")], none)),
            "unsorted sessions"
        );
        assert!(
            inconsistent(body(5, &[(1, "a"), (1, "b")], none)),
            "duplicate session"
        );
        assert!(inconsistent(body(5, &[(6, "a")], none)), "id above high");
        assert!(inconsistent(body(5, &[(0, "a")], none)), "id 0");
        let lock_by = |holder: u64, token: u64| {
            move |w: &mut Writer| {
                w.len(1);
                w.str("l");
                w.u8(KIND_LOCK);
                w.u64(holder);
                w.u64(token);
            }
        };
        assert!(State::decode_snapshot(&seal(body(5, &[(1, "a")], lock_by(1, 2)))).is_ok());
        assert!(
            inconsistent(body(5, &[(1, "a")], lock_by(2, 2))),
            "holder unknown"
        );
        assert!(
            inconsistent(body(5, &[(1, "a")], lock_by(1, 6))),
            "token above high"
        );
        let empty_tickets = |w: &mut Writer| {
            w.len(1);
            w.str("r");
            w.u8(KIND_TICKETS);
            w.len(0);
        };
        assert!(
            inconsistent(body(5, &[(1, "a")], empty_tickets)),
            "empty ticket resource"
        );
        let ticket_by = |issuer: u64, claimant: u64| {
            move |w: &mut Writer| {
                w.len(1);
                w.str("r");
                w.u8(KIND_TICKETS);
                w.len(1);
                w.str("t");
                w.bytes(b"d");
                w.u64(issuer);
                w.u8(1);
                w.u64(claimant);
                w.u64(3);
            }
        };
        let ok =
            State::decode_snapshot(&seal(body(5, &[(1, "a"), (2, "b")], ticket_by(1, 2)))).unwrap();
        assert_eq!(ok.has_claim(2, "r", "t"), Ok(true));
        assert!(
            inconsistent(body(5, &[(1, "a")], ticket_by(1, 2))),
            "claimant unknown"
        );
        assert!(
            inconsistent(body(5, &[(2, "b")], ticket_by(1, 2))),
            "issuer unknown"
        );
        let unknown_kind = |w: &mut Writer| {
            w.len(1);
            w.str("r");
            w.u8(7);
            w.u64(0);
        };
        assert_eq!(
            State::decode_snapshot(&seal(body(5, &[], unknown_kind))),
            Err(DecodeError::UnknownTag(7))
        );
    }

    #[test]
    fn oversized_fields_are_rejected() {
        let long = "x".repeat(NAME_BYTES_MAX + 1);
        let bytes = seal(body(5, &[(1, &long)], |w| w.len(0)));
        assert!(matches!(
            State::decode_snapshot(&bytes),
            Err(DecodeError::TooLong { .. })
        ));
    }
}
