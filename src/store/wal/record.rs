//! The WAL's byte format: frames and what they carry. Pure encoding and
//! decoding on the crate's byte cursor; no files, no Raft rules.
//!
//! Every frame starts at a multiple of [`ALIGN`] (16) bytes in its segment
//! and is followed by zeros up to the next one, so that its 16-byte header
//! never crosses a 512-byte sector or a page: a crash either wrote all of
//! a header or none of it. A frame is
//!
//! ```text
//! len u32 ‖ kind u8 ‖ 0 0 0 ‖ body_crc u32 ‖ head_crc u32 ‖ body[len] ‖ zeros to ALIGN
//! ```
//!
//! (big-endian), where `body_crc` is the CRC-32 of `place ‖ body` and
//! `head_crc` that of `place ‖` the header's first 12 bytes, and `place`
//! is `salt u64 ‖ segment seq u64 ‖ offset u64`: where the frame was
//! written. A frame's bytes are thus valid only at the offset of the
//! segment they were written to, and only with that segment's salt (a
//! random number in its header, never shown to anyone): neither a
//! remnant of an older write nor bytes a client put in an entry's data
//! can pass for a frame elsewhere. The header's own checksum lets the
//! recovery tell a torn or damaged length from a real one without
//! trusting it ([`super::recover`]). Sixteen zero bytes are no frame:
//! they are the preallocated space after the last one. Kinds:
//! - [`HEADER`], at offset 0 of every segment (its place has salt 0): its
//!   sequence number and salt, the log position it continues from, and
//!   the hard state and application record in force when it was started,
//!   so the newest segment alone tells them even after every older one was
//!   deleted;
//! - [`BATCH`]: one persisted batch, all or nothing (a torn batch fails
//!   its CRC and is dropped whole): a list of [`Op`]s, applied in order;
//! - [`SEAL`]: the segment is complete, the log goes on in the next one.

use crate::bytes::{DecodeError, Reader, Writer};
use crate::crc32::{checksum, update};
use crate::raft::{Entry, EntryKind, HardState, LogIndex, Term};

use super::super::AppRecord;

/// Frames start at multiples of this (a divisor of any sector size).
pub const ALIGN: usize = 16;
pub const FRAME_HEADER_LEN: usize = 16;
pub const HEADER: u8 = 1;
pub const BATCH: u8 = 2;
pub const SEAL: u8 = 3;

/// "TWAL": the first bytes of every header body.
const MAGIC: u32 = 0x5457_414c;
/// The frame and body layout of this build (1 was an unaligned format
/// without places in the checksums, never released).
const VERSION: u8 = 2;
/// A frame's body is never larger than this (a segment grows to hold one
/// frame, never more); [`super::Wal::append`] refuses larger ones.
pub const FRAME_MAX: usize = 1 << 30;
/// The body of a segment header: magic, version, seq, salt, base index
/// and term, hard state (3 × u64), application record (2 × u64).
const HEADER_BODY_LEN: usize = 4 + 1 + 8 * 4 + 8 * 3 + 8 * 2;
/// Bytes of a segment's header frame, padding included: what a segment
/// being created may hold, all else zero.
pub const HEADER_FRAME_LEN: usize = aligned(FRAME_HEADER_LEN + HEADER_BODY_LEN);
/// Bytes of a seal frame.
pub const SEAL_LEN: usize = FRAME_HEADER_LEN;

const OP_TRUNCATE: u8 = 1;
const OP_ENTRIES: u8 = 2;
const OP_HARD_STATE: u8 = 3;
const OP_APP: u8 = 4;
const OP_RESET: u8 = 5;

/// `n` rounded up to a multiple of [`ALIGN`] (callers keep `n` far below
/// `usize::MAX`: at most a header and [`FRAME_MAX`]).
pub const fn aligned(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

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

/// Where a frame is written: part of both its checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// The segment's salt (0 for its header frame, which carries it).
    pub salt: u64,
    pub seq: u64,
    pub offset: u64,
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
    /// A whole frame whose checksums match its place: its kind, body and
    /// length on disk (padding included).
    Frame {
        kind: u8,
        body: &'a [u8],
        len: usize,
    },
    /// A zero header (or nothing): the end of what was written, if
    /// nothing non-zero follows.
    End,
    /// Anything else: a torn or damaged frame.
    Bad(String),
}

/// A frame being built: room for its header, the body, zero padding to
/// [`ALIGN`]. Its checksums are filled in by [`Frame::place`] once the
/// segment and offset it goes to are known.
#[derive(Clone, Debug)]
pub struct Frame {
    bytes: Vec<u8>,
    kind: u8,
    body_len: usize,
}

impl Frame {
    /// A writer for the body of a frame (the header's room first).
    fn writer(body_capacity: usize) -> Writer {
        let mut w = Writer::with_capacity(body_capacity.saturating_add(FRAME_HEADER_LEN + ALIGN));
        w.bytes.extend_from_slice(&[0; FRAME_HEADER_LEN]);
        w
    }

    fn finish(kind: u8, w: Writer) -> Frame {
        let mut bytes = w.bytes;
        let body_len = bytes.len() - FRAME_HEADER_LEN;
        bytes.resize(aligned(bytes.len()), 0);
        Frame {
            bytes,
            kind,
            body_len,
        }
    }

    /// Bytes on disk, padding included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn body_len(&self) -> usize {
        self.body_len
    }

    /// The frame's bytes for `place` (its header filled in).
    pub fn place(&mut self, place: Place) -> &[u8] {
        let len = u32::try_from(self.body_len).unwrap_or(u32::MAX);
        let body = &self.bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + self.body_len];
        let body_crc = place_crc(place, body);
        let head = &mut self.bytes[..FRAME_HEADER_LEN];
        head[0..4].copy_from_slice(&len.to_be_bytes());
        head[4] = self.kind;
        head[5..8].copy_from_slice(&[0; 3]);
        head[8..12].copy_from_slice(&body_crc.to_be_bytes());
        let head_crc = place_crc(place, &head[..12]);
        head[12..16].copy_from_slice(&head_crc.to_be_bytes());
        &self.bytes
    }
}

fn place_crc(place: Place, bytes: &[u8]) -> u32 {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&place.salt.to_be_bytes());
    key[8..16].copy_from_slice(&place.seq.to_be_bytes());
    key[16..].copy_from_slice(&place.offset.to_be_bytes());
    update(checksum(&key), bytes)
}

/// The frame for `body`, placed (tests, and the header).
pub fn encode_frame(kind: u8, body: &[u8], place: Place) -> Vec<u8> {
    let mut w = Frame::writer(body.len());
    w.bytes.extend_from_slice(body);
    let mut frame = Frame::finish(kind, w);
    frame.place(place);
    frame.bytes
}

/// The kind and body length a frame header at the start of `bytes`
/// claims, if its own checksum matches `place` and the claim is
/// plausible (a known kind, a length within [`FRAME_MAX`]): cheap, the
/// body is not read.
pub fn frame_header(bytes: &[u8], place: Place) -> Result<(u8, usize), String> {
    let Some(head) = bytes.get(..FRAME_HEADER_LEN) else {
        return Err(format!("{} bytes, too short for a frame", bytes.len()));
    };
    let stored = u32::from_be_bytes([head[12], head[13], head[14], head[15]]);
    if place_crc(place, &head[..12]) != stored {
        return Err("frame header checksum mismatch".into());
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let kind = head[4];
    if !matches!(kind, HEADER | BATCH | SEAL) || head[5..8] != [0; 3] {
        return Err(format!("frame kind {kind}"));
    }
    if len > FRAME_MAX {
        return Err(format!("frame length {len}"));
    }
    Ok((kind, len))
}

/// Reads the frame at the start of `bytes`, written at `place`.
pub fn decode_frame(bytes: &[u8], place: Place) -> Found<'_> {
    let head = bytes.get(..FRAME_HEADER_LEN).unwrap_or(bytes);
    if head.iter().all(|&b| b == 0) {
        return Found::End;
    }
    let (kind, len) = match frame_header(bytes, place) {
        Ok(found) => found,
        Err(why) => return Found::Bad(why),
    };
    let Some(body) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Found::Bad(format!("frame of {len} bytes cut short"));
    };
    let stored = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if place_crc(place, body) != stored {
        return Found::Bad("frame body checksum mismatch".into());
    }
    Found::Frame {
        kind,
        body,
        len: aligned(FRAME_HEADER_LEN + len),
    }
}

/// A segment's header frame, placed at offset 0 of segment `header.seq`.
pub fn encode_header(header: &Header, salt: u64) -> Vec<u8> {
    let mut w = Frame::writer(HEADER_BODY_LEN);
    w.u32(MAGIC);
    w.u8(VERSION);
    w.u64(header.seq);
    w.u64(salt);
    w.u64(header.base_index);
    w.u64(header.base_term);
    hard_state(&mut w, &header.hard_state);
    app(&mut w, &header.app);
    let mut frame = Frame::finish(HEADER, w);
    frame.place(header_place(header.seq));
    frame.bytes
}

/// Where a segment's header frame is: offset 0, salt 0.
pub fn header_place(seq: u64) -> Place {
    Place {
        salt: 0,
        seq,
        offset: 0,
    }
}

/// A header body: the header and the segment's salt.
pub fn decode_header(body: &[u8]) -> Result<(Header, u64), DecodeError> {
    let mut r = Reader::new(body);
    let magic = r.u32()?;
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let seq = r.u64()?;
    let salt = r.u64()?;
    let header = Header {
        seq,
        base_index: r.u64()?,
        base_term: r.u64()?,
        hard_state: read_hard_state(&mut r)?,
        app: read_app(&mut r)?,
    };
    r.finish()?;
    Ok((header, salt))
}

pub fn encode_seal() -> Frame {
    Frame::finish(SEAL, Frame::writer(0))
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

pub fn encode_batch(ops: &[OpRef<'_>]) -> Frame {
    let size: usize = ops
        .iter()
        .map(|op| match op {
            OpRef::Entries(entries) => {
                16 + entries.iter().map(|e| 17 + e.data.len()).sum::<usize>()
            }
            _ => 32,
        })
        .sum();
    let mut w = Frame::writer(size.saturating_add(8));
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
    Frame::finish(BATCH, w)
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

    const HERE: Place = Place {
        salt: 0x5eed,
        seq: 3,
        offset: 4096,
    };

    #[test]
    fn frames_round_trip_and_any_flip_is_caught() {
        let frame = encode_frame(BATCH, b"hello", HERE);
        assert_eq!(frame.len() % ALIGN, 0);
        assert_eq!(frame.len(), aligned(FRAME_HEADER_LEN + 5));
        assert_eq!(
            decode_frame(&frame, HERE),
            Found::Frame {
                kind: BATCH,
                body: b"hello",
                len: frame.len()
            }
        );
        let body_end = FRAME_HEADER_LEN + 5;
        for at in 0..body_end {
            for bit in 0..8 {
                let mut bad = frame.clone();
                bad[at] ^= 1 << bit;
                assert!(
                    !matches!(decode_frame(&bad, HERE), Found::Frame { .. }),
                    "flip at {at} bit {bit} not caught"
                );
                if at < FRAME_HEADER_LEN {
                    assert!(frame_header(&bad, HERE).is_err(), "header flip at {at}");
                }
            }
        }
        // (Fewer than four bytes of the length, all zero, read as the end.)
        for cut in 4..body_end {
            assert!(matches!(decode_frame(&frame[..cut], HERE), Found::Bad(_)));
        }
        assert_eq!(decode_frame(&[], HERE), Found::End);
        assert_eq!(decode_frame(&[0; 100], HERE), Found::End);
        assert!(matches!(decode_frame(&[0, 0, 0], HERE), Found::End));
        assert!(matches!(decode_frame(&[0, 0, 1], HERE), Found::Bad(_)));
    }

    #[test]
    fn a_frame_is_valid_only_where_it_was_written() {
        let frame = encode_frame(BATCH, b"hello", HERE);
        for elsewhere in [
            Place { salt: 1, ..HERE },
            Place { seq: 4, ..HERE },
            Place {
                offset: HERE.offset + ALIGN as u64,
                ..HERE
            },
        ] {
            assert!(frame_header(&frame, elsewhere).is_err());
            assert!(matches!(decode_frame(&frame, elsewhere), Found::Bad(_)));
        }
        // A frame over the limit is never taken for one, checksums or not.
        let mut big = encode_frame(BATCH, b"", HERE);
        big[0..4].copy_from_slice(&(FRAME_MAX as u32 + 1).to_be_bytes());
        let crc = place_crc(HERE, &big[..12]);
        big[12..16].copy_from_slice(&crc.to_be_bytes());
        assert!(frame_header(&big, HERE).is_err());
    }

    /// A header claiming `kind`, `len` and `pad`, with checksums that
    /// match `HERE`: only the claims themselves can make it invalid.
    fn claimed_header(kind: u8, len: u32, pad: [u8; 3]) -> Vec<u8> {
        let mut head = encode_frame(BATCH, b"", HERE);
        head[0..4].copy_from_slice(&len.to_be_bytes());
        head[4] = kind;
        head[5..8].copy_from_slice(&pad);
        let crc = place_crc(HERE, &head[..12]);
        head[12..16].copy_from_slice(&crc.to_be_bytes());
        head
    }

    #[test]
    fn a_header_is_judged_by_its_kind_padding_and_length_too() {
        for kind in [HEADER, BATCH, SEAL] {
            assert_eq!(
                frame_header(&claimed_header(kind, 0, [0; 3]), HERE),
                Ok((kind, 0))
            );
        }
        // Checksums that match do not make an unknown kind or non-zero
        // padding a frame.
        for kind in [0, 4, 0xff] {
            assert!(frame_header(&claimed_header(kind, 0, [0; 3]), HERE).is_err());
        }
        assert!(frame_header(&claimed_header(BATCH, 0, [0, 1, 0]), HERE).is_err());
        // The largest frame a segment may hold is one.
        let largest = u32::try_from(FRAME_MAX).unwrap();
        assert_eq!(
            frame_header(&claimed_header(BATCH, largest, [0; 3]), HERE),
            Ok((BATCH, FRAME_MAX))
        );
    }

    #[test]
    fn the_header_body_is_as_long_as_its_layout_says() {
        // `HEADER_FRAME_LEN` (from `HEADER_BODY_LEN`) is where a segment
        // being created may hold bytes; the recovery trusts it.
        let header = Header {
            seq: 1,
            base_index: 0,
            base_term: 0,
            hard_state: HardState::default(),
            app: AppRecord::default(),
        };
        let frame = encode_header(&header, 1);
        let Found::Frame { body, .. } = decode_frame(&frame, header_place(1)) else {
            panic!("header frame does not decode");
        };
        assert_eq!(body.len(), HEADER_BODY_LEN);
        assert!(!encode_seal().is_empty());
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
        let frame = encode_header(&header, 0xfeed);
        assert_eq!(frame.len(), HEADER_FRAME_LEN);
        let Found::Frame { kind, body, len } = decode_frame(&frame, header_place(7)) else {
            panic!("header frame does not decode");
        };
        assert_eq!((kind, len), (HEADER, HEADER_FRAME_LEN));
        assert_eq!(decode_header(body).unwrap(), (header, 0xfeed));
        // Renamed to another segment's name: not its header.
        assert!(matches!(
            decode_frame(&frame, header_place(8)),
            Found::Bad(_)
        ));
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
        let mut frame = encode_batch(&[
            OpRef::Truncate {
                from: 5,
                prev_term: 1,
            },
            OpRef::Entries(&entries),
            OpRef::HardState(hs),
            OpRef::App(app),
            OpRef::Reset { index: 9, term: 4 },
        ]);
        let bytes = frame.place(HERE).to_vec();
        let Found::Frame { kind, body, .. } = decode_frame(&bytes, HERE) else {
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
        let mut seal = encode_seal();
        assert_eq!(seal.len(), SEAL_LEN);
        let bytes = seal.place(HERE).to_vec();
        let Found::Frame { kind, body, .. } = decode_frame(&bytes, HERE) else {
            panic!("seal does not decode");
        };
        assert_eq!(kind, SEAL);
        assert!(body.is_empty());
    }
}
