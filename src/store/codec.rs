//! The on-disk layout of every record the store writes: keys, fixed-width
//! big-endian bodies, and a CRC-32 trailer on every value. Pure encoding and
//! decoding plus the two LMDB calls that put and get one checked record; it
//! knows nothing about which records belong together (that is `mod.rs`).
//!
//! Bodies are read and written with the crate's byte cursor
//! ([`crate::bytes`]). A record's value is `body ‖ crc32(key ‖ body)`
//! (u32 big-endian). Folding
//! the key into the checksum catches a value that ends up under the wrong
//! key, not only flipped bits.

use lmdb::{Database, RwTransaction, Transaction, WriteFlags};

use super::StoreError;
use crate::bytes::{DecodeError, Reader, Writer};
use crate::crc32::{checksum, update};
use crate::raft::{Entry, EntryKind, HardState, Membership, SnapshotMeta};

/// The layout written by this build. Bump it on any change to this file's
/// formats (or the WAL's); `load` refuses versions it does not know.
/// Version 1 kept the log, hard state and application record in LMDB
/// (`Store::open` upgrades it); version 2 keeps them in the WAL.
pub const FORMAT_VERSION: u64 = 2;

pub const KEY_VERSION: &[u8] = b"version";
pub const KEY_IDENTITY: &[u8] = b"identity";
pub const KEY_HARD_STATE: &[u8] = b"hard_state";
pub const KEY_SNAPSHOT_META: &[u8] = b"snapshot_meta";
pub const KEY_SNAPSHOT_DATA: &[u8] = b"snapshot_data";
pub const KEY_APP: &[u8] = b"app";
pub const KEY_REMOVED: &[u8] = b"removed";

const CRC_LEN: usize = 4;

/// Log keys are big-endian so that LMDB's byte order is index order.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn parse_log_key(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("log key of {} bytes, not 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Writes `parts` concatenated, plus the checksum, straight into LMDB's
/// page (`reserve`), so a record costs no intermediate buffer.
pub fn put_record(
    txn: &mut RwTransaction<'_>,
    db: Database,
    key: &[u8],
    parts: &[&[u8]],
    flags: WriteFlags,
) -> Result<(), lmdb::Error> {
    let body_len: usize = parts.iter().map(|part| part.len()).sum();
    let buffer = txn.reserve(db, &key, body_len + CRC_LEN, flags)?;
    let mut crc = checksum(key);
    let mut at = 0;
    for part in parts {
        buffer[at..at + part.len()].copy_from_slice(part);
        crc = update(crc, part);
        at += part.len();
    }
    buffer[at..].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// The body of a record whose checksum matches, or `None`.
pub fn verify_record<'a>(key: &[u8], value: &'a [u8]) -> Option<&'a [u8]> {
    let split = value.len().checked_sub(CRC_LEN)?;
    let (body, trailer) = value.split_at(split);
    let stored = u32::from_be_bytes(trailer.try_into().ok()?);
    (update(checksum(key), body) == stored).then_some(body)
}

/// Reads one checked record; a missing key is `Ok(None)`.
pub fn get_record<'t, T: Transaction>(
    txn: &'t T,
    db: Database,
    key: &[u8],
    what: &str,
) -> Result<Option<&'t [u8]>, StoreError> {
    match txn.get(db, &key) {
        Ok(value) => verify_record(key, value)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("{what}: checksum mismatch"))),
        Err(lmdb::Error::NotFound) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Like [`get_record`], for records every bootstrapped store has.
pub fn required_record<'t, T: Transaction>(
    txn: &'t T,
    db: Database,
    key: &[u8],
    what: &str,
) -> Result<&'t [u8], StoreError> {
    get_record(txn, db, key, what)?.ok_or_else(|| StoreError::Corrupt(format!("{what} missing")))
}

/// Exactly `N` big-endian u64s, or `None`.
pub fn decode_u64s<const N: usize>(body: &[u8]) -> Option<[u64; N]> {
    let mut r = Reader::new(body);
    let mut out = [0u64; N];
    for slot in &mut out {
        *slot = r.u64().ok()?;
    }
    r.finish().ok()?;
    Some(out)
}

pub fn encode_u64s<const N: usize, const M: usize>(values: [u64; N]) -> [u8; M] {
    debug_assert_eq!(M, 8 * N);
    let mut out = [0u8; M];
    for (chunk, value) in out.chunks_exact_mut(8).zip(values) {
        chunk.copy_from_slice(&value.to_be_bytes());
    }
    out
}

pub fn encode_hard_state(hard_state: &HardState) -> [u8; 24] {
    encode_u64s([hard_state.term, hard_state.vote, hard_state.commit])
}

pub fn decode_hard_state(body: &[u8]) -> Option<HardState> {
    let [term, vote, commit] = decode_u64s(body)?;
    Some(HardState { term, vote, commit })
}

/// index u64, term u64, then `Membership::encode`.
pub fn encode_snapshot_meta(meta: &SnapshotMeta) -> Vec<u8> {
    let membership = meta.membership.encode();
    let mut w = Writer::with_capacity(16 + membership.len());
    w.u64(meta.index);
    w.u64(meta.term);
    w.raw(&membership);
    w.into_bytes()
}

pub fn decode_snapshot_meta(body: &[u8]) -> Option<SnapshotMeta> {
    let mut r = Reader::new(body);
    let index = r.u64().ok()?;
    let term = r.u64().ok()?;
    let membership = Membership::decode(r.raw(r.remaining()).ok()?).ok()?;
    Some(SnapshotMeta {
        index,
        term,
        membership,
    })
}

/// Appends one log entry (term u64, kind u8, data). `flags` is
/// `APPEND` when the caller knows the key is past every existing one,
/// which lets LMDB skip the tree search.
pub fn put_entry(
    txn: &mut RwTransaction<'_>,
    db: Database,
    entry: &Entry,
    flags: WriteFlags,
) -> Result<(), lmdb::Error> {
    let key = log_key(entry.index);
    let term = entry.term.to_be_bytes();
    let kind = [entry.kind.to_u8()];
    put_record(txn, db, &key, &[&term, &kind, &entry.data], flags)
}

/// The term of a checked log value, without copying its data.
pub fn entry_term(index: u64, value: &[u8]) -> Result<u64, StoreError> {
    let (term, _, _) = split_entry(index, value)?;
    Ok(term)
}

pub fn decode_entry(index: u64, value: &[u8]) -> Result<Entry, StoreError> {
    let (term, kind, data) = split_entry(index, value)?;
    Ok(Entry {
        term,
        index,
        kind,
        data: data.to_vec(),
    })
}

fn split_entry(index: u64, value: &[u8]) -> Result<(u64, EntryKind, &[u8]), StoreError> {
    let body = verify_record(&log_key(index), value)
        .ok_or_else(|| StoreError::Corrupt(format!("log entry {index}: checksum mismatch")))?;
    let malformed = |_| StoreError::Corrupt(format!("log entry {index}: malformed"));
    let mut r = Reader::new(body);
    let term = r.u64().map_err(malformed)?;
    let tag = r.u8().map_err(malformed)?;
    let kind = EntryKind::from_u8(tag)
        .ok_or(DecodeError::UnknownTag(tag))
        .map_err(malformed)?;
    let data = r.raw(r.remaining()).map_err(malformed)?;
    Ok((term, kind, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Member;

    fn record(key: &[u8], body: &[u8]) -> Vec<u8> {
        let mut value = body.to_vec();
        value.extend_from_slice(&update(checksum(key), body).to_be_bytes());
        value
    }

    #[test]
    fn records_verify_and_reject_any_flip_or_wrong_key() {
        let value = record(b"k", b"hello");
        assert_eq!(verify_record(b"k", &value), Some(&b"hello"[..]));
        assert_eq!(verify_record(b"other", &value), None);
        for at in 0..value.len() {
            let mut bad = value.clone();
            bad[at] ^= 0x01;
            assert_eq!(verify_record(b"k", &bad), None);
        }
        assert_eq!(verify_record(b"k", &value[..3]), None);
        assert_eq!(verify_record(b"k", &[]), None);
    }

    #[test]
    fn entries_round_trip_and_reject_bad_kind_or_short_values() {
        let key = log_key(7);
        let mut body = 3u64.to_be_bytes().to_vec();
        body.push(EntryKind::Config.to_u8());
        body.extend_from_slice(b"abc");
        let entry = decode_entry(7, &record(&key, &body)).unwrap();
        assert_eq!(entry.term, 3);
        assert_eq!(entry.kind, EntryKind::Config);
        assert_eq!(entry.data, b"abc");
        assert_eq!(entry_term(7, &record(&key, &body)).unwrap(), 3);
        // The same value under another index is caught by the checksum.
        assert!(decode_entry(8, &record(&key, &body)).is_err());
        body[8] = 99;
        assert!(decode_entry(7, &record(&key, &body)).is_err());
        assert!(decode_entry(7, &record(&key, &body[..5])).is_err());
    }

    #[test]
    fn fixed_records_round_trip() {
        let hard_state = HardState {
            term: 5,
            vote: 2,
            commit: 9,
        };
        assert_eq!(
            decode_hard_state(&encode_hard_state(&hard_state)),
            Some(hard_state)
        );
        assert_eq!(decode_hard_state(&[0; 23]), None);
        let mut meta = SnapshotMeta {
            index: 4,
            term: 2,
            membership: Membership::default(),
        };
        meta.membership.members.insert(
            1,
            Member {
                voter: true,
                peer_addr: "127.0.0.1:9001".into(),
                http_addr: String::new(),
                incarnation: 0,
            },
        );
        let body = encode_snapshot_meta(&meta);
        assert_eq!(decode_snapshot_meta(&body), Some(meta));
        assert_eq!(decode_snapshot_meta(&body[..10]), None);
        assert_eq!(parse_log_key(&log_key(42)).unwrap(), 42);
        assert!(parse_log_key(b"abc").is_err());
        assert!(log_key(1) < log_key(256));
    }
}
