//! The backup file: what `GET /api/v1/backup` streams and `ticketd
//! restore` reads. A small header, the state in the snapshot format
//! (`ticket::snapshot`), and a CRC32 over everything before it.
//!
//! Owns: the file format and its checks. May not touch: I/O beyond
//! reading one file, the store, or the node (the node hands over a copy
//! of its applied state; `node::restore` turns a checked backup into a
//! data directory).
//!
//! Layout, big-endian:
//! `magic [8] "TKDBACK\0" | version u32 | cluster_id u64 | applied_index u64 |
//! term u64 | ids_high u64 | taken_unix_ms u64 | snapshot_len u64 |
//! snapshot [snapshot_len] | crc32 u32`.
//!
//! `ids_high` is the high-water mark of the ID counter in the backed-up
//! state: the largest ID (or session id, or fencing token) the cluster
//! had reserved at `applied_index`. A restore never serves an ID at or
//! below it — nor below the `--next-id` the operator gives, which covers
//! what the old cluster reserved after the backup was taken.

use std::fmt;
use std::path::Path;

use crate::bytes::{DecodeError, Reader, Writer};
use crate::crc32;
use crate::ticket::State;

const MAGIC: [u8; 8] = *b"TKDBACK\0";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes before the snapshot.
const HEADER_BYTES: usize = 8 + 4 + 8 * 6;
const TRAILER_BYTES: usize = 4;

/// A decoded, checked backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    /// The cluster the backup was taken from.
    pub cluster_id: u64,
    /// The last log index applied to the state, and the leader's term.
    pub applied_index: u64,
    pub term: u64,
    /// The ID counter's high-water mark in the state.
    pub ids_high: u64,
    /// When the leader answered (wall clock, for the operator only).
    pub taken_unix_ms: u64,
    /// The state in the snapshot format.
    pub snapshot: Vec<u8>,
}

/// Why a backup file was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupError {
    /// The file could not be read.
    Io(String),
    /// Not a ticketd backup (too short for a header, or a wrong magic).
    NotABackup,
    /// A format version this build does not read.
    UnknownVersion(u32),
    /// The length in the header disagrees with the file: cut short, or
    /// with bytes appended.
    Length { expected: u64, found: u64 },
    /// The checksum does not match: the file was altered.
    BadChecksum { stored: u32, computed: u32 },
    /// The checksum matches but the state inside does not decode, or
    /// disagrees with the header.
    BadState(String),
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::Io(why) => write!(f, "{why}"),
            BackupError::NotABackup => write!(f, "not a ticketd backup (bad magic number)"),
            BackupError::UnknownVersion(v) => write!(
                f,
                "backup format version {v} is not one this build reads (version {VERSION})"
            ),
            BackupError::Length { expected, found } => write!(
                f,
                "the backup is truncated or has bytes appended: its header says {expected} bytes, the file holds {found}"
            ),
            BackupError::BadChecksum { stored, computed } => write!(
                f,
                "the backup is corrupt: checksum {stored:#010x} stored, {computed:#010x} computed"
            ),
            BackupError::BadState(why) => write!(f, "the backup's state is corrupt: {why}"),
        }
    }
}

impl std::error::Error for BackupError {}

impl Backup {
    /// The backup of `state`, as the file's bytes.
    pub fn encode(
        state: &State,
        cluster_id: u64,
        applied_index: u64,
        term: u64,
        taken_unix_ms: u64,
    ) -> Vec<u8> {
        let snapshot = state.encode_snapshot();
        let mut w = Writer::with_capacity(HEADER_BYTES + snapshot.len() + TRAILER_BYTES);
        w.bytes.extend_from_slice(&MAGIC);
        w.u32(VERSION);
        w.u64(cluster_id);
        w.u64(applied_index);
        w.u64(term);
        w.u64(state.high());
        w.u64(taken_unix_ms);
        w.u64(snapshot.len() as u64);
        w.bytes.extend_from_slice(&snapshot);
        let crc = crc32::checksum(&w.bytes);
        w.u32(crc);
        w.bytes
    }

    /// Decodes and checks a backup: magic, version, length, checksum,
    /// and the state inside (which must decode and carry the header's
    /// high-water mark). Returns the backup and its decoded state.
    ///
    /// # Errors
    /// [`BackupError`] saying what is wrong with the bytes.
    pub fn decode(bytes: &[u8]) -> Result<(Backup, State), BackupError> {
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(BackupError::NotABackup);
        }
        let mut r = Reader::new(&bytes[MAGIC.len()..]);
        let truncated = |_: DecodeError| BackupError::Length {
            expected: (HEADER_BYTES + TRAILER_BYTES) as u64,
            found: bytes.len() as u64,
        };
        let version = r.u32().map_err(truncated)?;
        if version != VERSION {
            return Err(BackupError::UnknownVersion(version));
        }
        let mut fields = [0u64; 6];
        for field in &mut fields {
            *field = r.u64().map_err(truncated)?;
        }
        let [
            cluster_id,
            applied_index,
            term,
            ids_high,
            taken_unix_ms,
            snapshot_len,
        ] = fields;
        let expected = snapshot_len.checked_add((HEADER_BYTES + TRAILER_BYTES) as u64);
        if expected != Some(bytes.len() as u64) {
            return Err(BackupError::Length {
                expected: expected.unwrap_or(u64::MAX),
                found: bytes.len() as u64,
            });
        }
        let body_len = bytes.len() - TRAILER_BYTES;
        let mut trailer = Reader::new(&bytes[body_len..]);
        let stored = trailer.u32().map_err(truncated)?;
        let computed = crc32::checksum(&bytes[..body_len]);
        if stored != computed {
            return Err(BackupError::BadChecksum { stored, computed });
        }
        let snapshot = bytes[HEADER_BYTES..body_len].to_vec();
        let state =
            State::decode_snapshot(&snapshot).map_err(|e| BackupError::BadState(e.to_string()))?;
        if state.high() != ids_high {
            return Err(BackupError::BadState(format!(
                "the header's ID high-water mark {ids_high} is not the state's {}",
                state.high()
            )));
        }
        let backup = Backup {
            cluster_id,
            applied_index,
            term,
            ids_high,
            taken_unix_ms,
            snapshot,
        };
        Ok((backup, state))
    }

    /// Reads and checks the backup file at `path`.
    ///
    /// # Errors
    /// [`BackupError::Io`] naming the file, or what [`Backup::decode`]
    /// finds wrong.
    pub fn read_file(path: &Path) -> Result<(Backup, State), BackupError> {
        let bytes = std::fs::read(path)
            .map_err(|e| BackupError::Io(format!("cannot read {}: {e}", path.display())))?;
        Backup::decode(&bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ticket::Command;

    fn a_state() -> State {
        let mut state = State::new();
        let _ = state.apply(&Command::ReserveIds { count: 10_000 });
        state
    }

    fn a_backup() -> Vec<u8> {
        Backup::encode(&a_state(), 0xc0ffee, 42, 3, 1_700_000_000_000)
    }

    #[test]
    fn round_trips_header_and_state() {
        let (backup, state) = Backup::decode(&a_backup()).unwrap();
        assert_eq!(state, a_state());
        assert_eq!(backup.cluster_id, 0xc0ffee);
        assert_eq!(backup.applied_index, 42);
        assert_eq!(backup.term, 3);
        assert_eq!(backup.ids_high, 10_000);
        assert_eq!(backup.taken_unix_ms, 1_700_000_000_000);
        assert_eq!(backup.snapshot, a_state().encode_snapshot());
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let bytes = a_backup();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                assert!(Backup::decode(&bad).is_err(), "byte {i} bit {bit:#x}");
            }
        }
    }

    #[test]
    fn truncated_or_extended_files_are_refused() {
        let bytes = a_backup();
        for len in 0..bytes.len() {
            assert!(Backup::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Backup::decode(&longer),
            Err(BackupError::Length { .. })
        ));
        assert_eq!(
            Backup::decode(b"hello, world"),
            Err(BackupError::NotABackup)
        );
    }

    #[test]
    fn a_future_version_is_named() {
        let mut bytes = a_backup();
        bytes[11] = 2;
        assert_eq!(Backup::decode(&bytes), Err(BackupError::UnknownVersion(2)));
    }

    #[test]
    fn a_header_that_lies_about_the_counter_is_refused() {
        let state = a_state();
        let mut bytes = Backup::encode(&state, 1, 1, 1, 0);
        // ids_high sits after magic, version, cluster, index and term.
        let at = 8 + 4 + 8 * 3;
        bytes[at..at + 8].copy_from_slice(&5u64.to_be_bytes());
        let body = bytes.len() - 4;
        let crc = crc32::checksum(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            Backup::decode(&bytes),
            Err(BackupError::BadState(_))
        ));
    }
}
