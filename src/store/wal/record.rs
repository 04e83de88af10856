//! The WAL's byte format: frames and what they carry. Pure encoding and
//! decoding on the crate's byte cursor; no files, no Raft rules.
//!
//! A frame is `len u32 ‖ crc u32 ‖ kind u8 ‖ body[len]` (big-endian), the
//! CRC-32 taken over `len ‖ kind ‖ body`. Nine zero bytes (`len` 0, `crc`
//! 0, kind 0) are no frame: they are the preallocated space after the last
//! one. Kinds:
//! - [`HEADER`], first in every segment: its sequence number, the log
//!   position it continues from, and the hard state and application
//!   record in force when it was started, so the newest segment alone
//!   tells them even after every older one was deleted;
//! - [`BATCH`]: one persisted batch, all or nothing (a torn batch fails
//!   its CRC and is dropped whole): a list of [`Op`]s, applied in order;
//! - [`SEAL`]: the segment is complete, the log goes on in the next one.

use crate::bytes::{DecodeError, Reader, Writer};
use crate::crc32::{checksum, update};
use crate::raft::{Entry, EntryKind, HardState, LogIndex, Term};

use super::super::AppRecord;

pub const FRAME_HEADER_LEN: usize = 9;
pub const HEADER: u8 = 1;
pub const BATCH: u8 = 2;
pub const SEAL: u8 = 3;

/// "TWAL": the first bytes of every header body.
const MAGIC: u32 = 0x5457_414c;
/// The body layout of this build.
const VERSION: u8 = 1;
/// An entry's data is never larger than a frame, which is never larger
/// than this (a segment grows to hold one frame, never more).
pub const FRAME_MAX: usize = 1 << 30;

const OP_TRUNCATE: u8 = 1;
const OP_ENTRIES: u8 = 2;
const OP_HARD_STATE: u8 = 3;
const OP_APP: u8 = 4;
const OP_RESET: u8 = 5;

/// What a segment starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub seq: u64,
    /// The last log index before this segment's first entry, and its term.
    pub base_index: LogIndex,
    pub base_term: Term,
    pub hard_state: HardState,
    pub app: AppRecord,
}

/// One change to the log or the state beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Every entry from `from` on is gone (a conflicting suffix); the
    /// entry before it has `prev_term` (which lets a replay start here
    /// when the segments before were deleted).
    Truncate {
        from: LogIndex,
        prev_term: Term,
    },
    /// Contiguous entries, right after the last one.
    Entries(Vec<Entry>),
    HardState(HardState),
    App(AppRecord),
    /// The log now starts after a snapshot at `index` with `term`, stored
    /// in LMDB before this was written: everything before is gone.
    Reset {
        index: LogIndex,
        term: Term,
    },
}

/// What [`decode_frame`] found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// A whole frame whose CRC matches: its kind, body and total length.
    Frame {
        kind: u8,
        body: &'a [u8],
        len: usize,
    },
    /// Zeros (or nothing): the end of what was written.
    End,
    /// Anything else: a torn or damaged frame.
    Bad(String),
}

/// The frame for `body`.
pub fn encode_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(body);
    let crc = frame_crc(&out[..4], kind, body);
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    out
}

fn frame_crc(len: &[u8], kind: u8, body: &[u8]) -> u32 {
    update(update(checksum(len), &[kind]), body)
}

/// Reads the frame at the start of `bytes`.
pub fn decode_frame(bytes: &[u8]) -> Found<'_> {
    let Some(head) = bytes.get(..FRAME_HEADER_LEN) else {
        return if bytes.iter().all(|&b| b == 0) {
            Found::End
        } else {
            Found::Bad(format!("{} bytes, too short for a frame", bytes.len()))
        };
    };
    if head.iter().all(|&b| b == 0) {
        return Found::End;
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let stored = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let kind = head[8];
    if len > FRAME_MAX {
        return Found::Bad(format!("frame length {len}"));
    }
    let Some(body) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Found::Bad(format!("frame of {len} bytes cut short"));
    };
    if frame_crc(&head[..4], kind, body) != stored {
        return Found::Bad("checksum mismatch".into());
    }
    Found::Frame {
        kind,
        body,
        len: FRAME_HEADER_LEN + len,
    }
}

pub fn encode_header(header: &Header) -> Vec<u8> {
    let mut w = Writer::with_capacity(64);
    w.u32(MAGIC);
    w.u8(VERSION);
    w.u64(header.seq);
    w.u64(header.base_index);
    w.u64(header.base_term);
    hard_state(&mut w, &header.hard_state);
    app(&mut w, &header.app);
    encode_frame(HEADER, &w.bytes)
}

pub fn decode_header(body: &[u8]) -> Result<Header, DecodeError> {
    let mut r = Reader::new(body);
    let magic = r.u32()?;
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let header = Header {
        seq: r.u64()?,
        base_index: r.u64()?,
        base_term: r.u64()?,
        hard_state: read_hard_state(&mut r)?,
        app: read_app(&mut r)?,
    };
    r.finish()?;
    Ok(header)
}

pub fn encode_seal() -> Vec<u8> {
    encode_frame(SEAL, &[])
}

/// A batch's ops, borrowing the entries (they are only copied into the
/// frame).
#[derive(Clone, Copy, Debug)]
pub enum OpRef<'a> {
    Truncate { from: LogIndex, prev_term: Term },
    Entries(&'a [Entry]),
    HardState(HardState),
    App(AppRecord),
    Reset { index: LogIndex, term: Term },
}

pub fn encode_batch(ops: &[OpRef<'_>]) -> Vec<u8> {
    let size: usize = ops
        .iter()
        .map(|op| match op {
            OpRef::Entries(entries) => {
                16 + entries.iter().map(|e| 17 + e.data.len()).sum::<usize>()
            }
            _ => 32,
        })
        .sum();
    let mut w = Writer::with_capacity(size + 8);
    w.len(ops.len());
    for op in ops {
        match op {
            OpRef::Truncate { from, prev_term } => {
                w.u8(OP_TRUNCATE);
                w.u64(*from);
                w.u64(*prev_term);
            }
            OpRef::Entries(entries) => {
                w.u8(OP_ENTRIES);
                w.len(entries.len());
                for entry in *entries {
                    w.u64(entry.index);
                    w.u64(entry.term);
                    w.u8(entry.kind.to_u8());
                    w.bytes(&entry.data);
                }
            }
            OpRef::HardState(hs) => {
                w.u8(OP_HARD_STATE);
                hard_state(&mut w, hs);
            }
            OpRef::App(a) => {
                w.u8(OP_APP);
                app(&mut w, a);
            }
            OpRef::Reset { index, term } => {
                w.u8(OP_RESET);
                w.u64(*index);
                w.u64(*term);
            }
        }
    }
    encode_frame(BATCH, &w.bytes)
}

pub fn decode_batch(body: &[u8]) -> Result<Vec<Op>, DecodeError> {
    let mut r = Reader::new(body);
    let count = r.count(9)?;
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        let op = match r.u8()? {
            OP_TRUNCATE => Op::Truncate {
                from: r.u64()?,
                prev_term: r.u64()?,
            },
            OP_ENTRIES => {
                let n = r.count(21)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let index = r.u64()?;
                    let term = r.u64()?;
                    let kind = r.u8()?;
                    let kind = EntryKind::from_u8(kind).ok_or(DecodeError::UnknownTag(kind))?;
                    let data = r.bytes("entry data", FRAME_MAX)?.to_vec();
                    entries.push(Entry {
                        term,
                        index,
                        kind,
                        data,
                    });
                }
                Op::Entries(entries)
            }
            OP_HARD_STATE => Op::HardState(read_hard_state(&mut r)?),
            OP_APP => Op::App(read_app(&mut r)?),
            OP_RESET => Op::Reset {
                index: r.u64()?,
                term: r.u64()?,
            },
            other => return Err(DecodeError::UnknownTag(other)),
        };
        ops.push(op);
    }
    r.finish()?;
    Ok(ops)
}

fn hard_state(w: &mut Writer, hs: &HardState) {
    w.u64(hs.term);
    w.u64(hs.vote);
    w.u64(hs.commit);
}

fn read_hard_state(r: &mut Reader<'_>) -> Result<HardState, DecodeError> {
    Ok(HardState {
        term: r.u64()?,
        vote: r.u64()?,
        commit: r.u64()?,
    })
}

fn app(w: &mut Writer, app: &AppRecord) {
    w.u64(app.high);
    w.u64(app.applied);
}

fn read_app(r: &mut Reader<'_>) -> Result<AppRecord, DecodeError> {
    Ok(AppRecord {
        high: r.u64()?,
        applied: r.u64()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: data.to_vec(),
        }
    }

    #[test]
    fn frames_round_trip_and_any_flip_is_caught() {
        let frame = encode_frame(BATCH, b"hello");
        assert_eq!(
            decode_frame(&frame),
            Found::Frame {
                kind: BATCH,
                body: b"hello",
                len: frame.len()
            }
        );
        for at in 0..frame.len() {
            for bit in 0..8 {
                let mut bad = frame.clone();
                bad[at] ^= 1 << bit;
                assert!(
                    !matches!(decode_frame(&bad), Found::Frame { .. }),
                    "flip at {at} bit {bit} not caught"
                );
            }
        }
        // (Fewer than four bytes of the length, all zero, read as the end.)
        for cut in 4..frame.len() {
            assert!(matches!(decode_frame(&frame[..cut]), Found::Bad(_)));
        }
        assert_eq!(decode_frame(&[]), Found::End);
        assert_eq!(decode_frame(&[0; 100]), Found::End);
        assert!(matches!(decode_frame(&[0, 0, 0]), Found::End));
        assert!(matches!(decode_frame(&[0, 0, 1]), Found::Bad(_)));
    }

    #[test]
    fn headers_and_batches_round_trip() {
        let header = Header {
            seq: 7,
            base_index: 100,
            base_term: 3,
            hard_state: HardState {
                term: 4,
                vote: 2,
                commit: 99,
            },
            app: AppRecord {
                high: 5000,
                applied: 98,
            },
        };
        let frame = encode_header(&header);
        let Found::Frame { kind, body, .. } = decode_frame(&frame) else {
            panic!("header frame does not decode");
        };
        assert_eq!(kind, HEADER);
        assert_eq!(decode_header(body).unwrap(), header);
        assert!(decode_header(&body[..body.len() - 1]).is_err());

        let entries = vec![entry(5, 2, b"a"), entry(6, 2, b""), entry(7, 3, b"xyz")];
        let hs = HardState {
            term: 3,
            vote: 1,
            commit: 6,
        };
        let app = AppRecord {
            high: 10,
            applied: 6,
        };
        let frame = encode_batch(&[
            OpRef::Truncate {
                from: 5,
                prev_term: 1,
            },
            OpRef::Entries(&entries),
            OpRef::HardState(hs),
            OpRef::App(app),
            OpRef::Reset { index: 9, term: 4 },
        ]);
        let Found::Frame { kind, body, .. } = decode_frame(&frame) else {
            panic!("batch frame does not decode");
        };
        assert_eq!(kind, BATCH);
        assert_eq!(
            decode_batch(body).unwrap(),
            vec![
                Op::Truncate {
                    from: 5,
                    prev_term: 1
                },
                Op::Entries(entries),
                Op::HardState(hs),
                Op::App(app),
                Op::Reset { index: 9, term: 4 },
            ]
        );
        // A body that lies about its counts fails without allocating.
        assert!(decode_batch(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_batch(&[0, 0, 0, 1, 99]).is_err());
        let seal = encode_seal();
        let Found::Frame { body, .. } = decode_frame(&seal) else {
            panic!("seal does not decode");
        };
        assert!(body.is_empty());
    }
}
