//! The replicated commands and their binary form in the Raft log.
//!
//! Owns: `Command` and its codec. May not touch: state (that is
//! `state.rs`/`apply.rs`) or anything outside this module.
//!
//! Layout, big-endian: `version u8 (=1) | tag u8 | fields`; strings and
//! byte strings are `len u32 | bytes`, id lists `count u32 | u64...`.
//! Decoding checks structure only (lengths against the input, UTF-8, no
//! trailing bytes); limits on names and data are checked by `apply`, so a
//! committed entry with an over-long field is answered with an error on
//! every node alike instead of being undecodable.

use super::SessionId;
use crate::bytes::{DecodeError, Reader, Writer};

const VERSION: u8 = 1;

const TAG_RESERVE_IDS: u8 = 1;
const TAG_OPEN_SESSION: u8 = 2;
const TAG_CLOSE_SESSION: u8 = 3;
const TAG_EXPIRE_SESSIONS: u8 = 4;
const TAG_ISSUE_TICKET: u8 = 5;
const TAG_REVOKE_TICKET: u8 = 6;
const TAG_CLAIM: u8 = 7;
const TAG_RELEASE: u8 = 8;
const TAG_LOCK: u8 = 9;
const TAG_UNLOCK: u8 = 10;

/// One change to the replicated state: the payload of a Raft log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Reserves the IDs `(high, high + count]`.
    ReserveIds { count: u64 },
    /// Opens a session; its id is the next value of the ID counter.
    OpenSession {
        name: String,
        src: String,
        ttl_ms: u64,
    },
    /// Closes a session, releasing everything it holds.
    CloseSession { id: SessionId },
    /// Closes each listed session that still exists (the leader's expiry).
    ExpireSessions { ids: Vec<SessionId> },
    /// Issues ticket `name` on `resource`, or takes it over.
    IssueTicket {
        session: SessionId,
        resource: String,
        name: String,
        data: Vec<u8>,
    },
    /// Removes ticket `name` from `resource`.
    RevokeTicket {
        session: SessionId,
        resource: String,
        name: String,
    },
    /// Claims a free ticket of `resource`.
    Claim {
        session: SessionId,
        resource: String,
    },
    /// Gives back the claim on ticket `name`.
    Release {
        session: SessionId,
        resource: String,
        name: String,
    },
    /// Try-lock of `resource`.
    Lock {
        session: SessionId,
        resource: String,
    },
    /// Unlocks `resource`.
    Unlock {
        session: SessionId,
        resource: String,
    },
}

impl Command {
    /// The bytes stored in the log for this command.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION);
        match self {
            Command::ReserveIds { count } => {
                w.u8(TAG_RESERVE_IDS);
                w.u64(*count);
            }
            Command::OpenSession { name, src, ttl_ms } => {
                w.u8(TAG_OPEN_SESSION);
                w.str(name);
                w.str(src);
                w.u64(*ttl_ms);
            }
            Command::CloseSession { id } => {
                w.u8(TAG_CLOSE_SESSION);
                w.u64(*id);
            }
            Command::ExpireSessions { ids } => {
                w.u8(TAG_EXPIRE_SESSIONS);
                w.len(ids.len());
                ids.iter().for_each(|id| w.u64(*id));
            }
            Command::IssueTicket {
                session,
                resource,
                name,
                data,
            } => {
                w.u8(TAG_ISSUE_TICKET);
                w.u64(*session);
                w.str(resource);
                w.str(name);
                w.bytes(data);
            }
            Command::RevokeTicket {
                session,
                resource,
                name,
            } => encode_named(&mut w, TAG_REVOKE_TICKET, *session, resource, name),
            Command::Claim { session, resource } => {
                encode_on(&mut w, TAG_CLAIM, *session, resource)
            }
            Command::Release {
                session,
                resource,
                name,
            } => encode_named(&mut w, TAG_RELEASE, *session, resource, name),
            Command::Lock { session, resource } => encode_on(&mut w, TAG_LOCK, *session, resource),
            Command::Unlock { session, resource } => {
                encode_on(&mut w, TAG_UNLOCK, *session, resource)
            }
        }
        w.bytes
    }

    /// Decodes a command from untrusted bytes.
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are truncated, carry an unknown
    /// version or tag, hold a string that is not UTF-8, or have trailing
    /// bytes.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let command = decode_body(&mut r)?;
        r.finish()?;
        Ok(command)
    }
}

fn encode_on(w: &mut Writer, tag: u8, session: SessionId, resource: &str) {
    w.u8(tag);
    w.u64(session);
    w.str(resource);
}

fn encode_named(w: &mut Writer, tag: u8, session: SessionId, resource: &str, name: &str) {
    encode_on(w, tag, session, resource);
    w.str(name);
}

/// Structural cap on one string or byte field: anything longer than a
/// log entry could sensibly carry is garbage, whatever `apply` allows.
const FIELD_BYTES_MAX: usize = 1 << 20;

fn decode_body(r: &mut Reader<'_>) -> Result<Command, DecodeError> {
    let tag = r.u8()?;
    let command = match tag {
        TAG_RESERVE_IDS => Command::ReserveIds { count: r.u64()? },
        TAG_OPEN_SESSION => Command::OpenSession {
            name: r.string("session name", FIELD_BYTES_MAX)?,
            src: r.string("session source", FIELD_BYTES_MAX)?,
            ttl_ms: r.u64()?,
        },
        TAG_CLOSE_SESSION => Command::CloseSession { id: r.u64()? },
        TAG_EXPIRE_SESSIONS => {
            let count = r.count(8)?;
            let ids = (0..count).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
            Command::ExpireSessions { ids }
        }
        TAG_ISSUE_TICKET => Command::IssueTicket {
            session: r.u64()?,
            resource: r.string("resource name", FIELD_BYTES_MAX)?,
            name: r.string("ticket name", FIELD_BYTES_MAX)?,
            data: r.bytes("ticket data", FIELD_BYTES_MAX)?.to_vec(),
        },
        TAG_REVOKE_TICKET => {
            let (session, resource, name) = decode_named(r)?;
            Command::RevokeTicket {
                session,
                resource,
                name,
            }
        }
        TAG_CLAIM => {
            let (session, resource) = decode_on(r)?;
            Command::Claim { session, resource }
        }
        TAG_RELEASE => {
            let (session, resource, name) = decode_named(r)?;
            Command::Release {
                session,
                resource,
                name,
            }
        }
        TAG_LOCK => {
            let (session, resource) = decode_on(r)?;
            Command::Lock { session, resource }
        }
        TAG_UNLOCK => {
            let (session, resource) = decode_on(r)?;
            Command::Unlock { session, resource }
        }
        other => return Err(DecodeError::UnknownTag(other)),
    };
    Ok(command)
}

fn decode_on(r: &mut Reader<'_>) -> Result<(SessionId, String), DecodeError> {
    Ok((r.u64()?, r.string("resource name", FIELD_BYTES_MAX)?))
}

fn decode_named(r: &mut Reader<'_>) -> Result<(SessionId, String, String), DecodeError> {
    let (session, resource) = decode_on(r)?;
    Ok((session, resource, r.string("ticket name", FIELD_BYTES_MAX)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::State;
    use crate::ticket::testkit::{Prng, random_command};

    fn every_kind() -> Vec<Command> {
        vec![
            Command::ReserveIds { count: 10_000 },
            Command::OpenSession {
                name: "wörker".into(),
                src: "127.0.0.1:5".into(),
                ttl_ms: 5000,
            },
            Command::CloseSession { id: 7 },
            Command::ExpireSessions { ids: vec![] },
            Command::ExpireSessions {
                ids: vec![1, u64::MAX],
            },
            Command::IssueTicket {
                session: 1,
                resource: "r".into(),
                name: "t".into(),
                data: vec![0, 255],
            },
            Command::RevokeTicket {
                session: 1,
                resource: "r".into(),
                name: "t".into(),
            },
            Command::Claim {
                session: 2,
                resource: "r".into(),
            },
            Command::Release {
                session: 2,
                resource: "r".into(),
                name: "t".into(),
            },
            Command::Lock {
                session: 3,
                resource: "l".into(),
            },
            Command::Unlock {
                session: 3,
                resource: "".into(),
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for command in every_kind() {
            assert_eq!(Command::decode(&command.encode()), Ok(command));
        }
    }

    #[test]
    fn layout_is_versioned_big_endian() {
        let bytes = Command::CloseSession { id: 0x0102 }.encode();
        assert_eq!(bytes, vec![1, TAG_CLOSE_SESSION, 0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn rejects_version_tag_and_trailing_bytes() {
        assert_eq!(Command::decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(
            Command::decode(&[2, 1]),
            Err(DecodeError::UnknownVersion(2))
        );
        assert_eq!(Command::decode(&[1, 0]), Err(DecodeError::UnknownTag(0)));
        assert_eq!(Command::decode(&[1, 99]), Err(DecodeError::UnknownTag(99)));
        let mut bytes = Command::Claim {
            session: 1,
            resource: "r".into(),
        }
        .encode();
        bytes.push(0);
        assert_eq!(Command::decode(&bytes), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for command in every_kind() {
            let bytes = command.encode();
            for cut in 0..bytes.len() {
                assert!(
                    Command::decode(&bytes[..cut]).is_err(),
                    "{command:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn huge_counts_fail_without_allocating() {
        let bytes = [
            1,
            TAG_EXPIRE_SESSIONS,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
        ];
        assert_eq!(Command::decode(&bytes), Err(DecodeError::Truncated));
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        let mut prng = Prng::new(0x5eed);
        for _ in 0..20_000 {
            let len = prng.below(40) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| prng.next() as u8).collect();
            let _ = Command::decode(&bytes);
        }
        for _ in 0..5_000 {
            let mut bytes = random_command(&mut prng, &State::new()).encode();
            let at = prng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 << prng.below(8);
            if let Ok(command) = Command::decode(&bytes) {
                assert_eq!(Command::decode(&command.encode()), Ok(command));
            }
        }
    }

    #[test]
    fn random_commands_round_trip() {
        let mut prng = Prng::new(42);
        for _ in 0..2_000 {
            let command = random_command(&mut prng, &State::new());
            assert_eq!(Command::decode(&command.encode()), Ok(command));
        }
    }
}
