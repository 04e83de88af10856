//! Snapshot messages in chunks: a snapshot may be far larger than one
//! frame, so it travels as a run of `SnapshotChunk` frames, each repeating
//! the message header, that the receiver glues back into one [`Message`].
//!
//! Chunk payload: `from u64 | to u64 | term u64 | lease_tick u64 |
//! meta index u64 | meta term u64 | membership (u32 len + bytes) |
//! total u64 | offset u64 | data (u32 len + bytes) | done u8`.

use std::io::Write;

use super::WireError;
use super::codec::{Decoder, Encoder};
use super::frame::{FrameKind, write_frame};
use crate::raft::{
    LogIndex, Membership, Message, MessageBody, NodeId, Snapshot, SnapshotMeta, TERM_MAX, Term,
};

/// The most snapshot data one chunk carries.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1 << 20;
/// The largest snapshot sent or accepted. Bounds what one peer can make
/// the receiver buffer while reassembling.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;

/// What every chunk of one snapshot repeats; chunks that disagree on any
/// of it do not belong to the same snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ChunkHeader {
    from: NodeId,
    to: NodeId,
    term: Term,
    lease_tick: u64,
    index: LogIndex,
    meta_term: Term,
    /// Kept encoded: compared byte for byte between chunks, decoded once.
    membership: Vec<u8>,
    total: u64,
}

/// One decoded chunk.
struct Chunk<'a> {
    header: ChunkHeader,
    offset: u64,
    data: &'a [u8],
    done: bool,
}

/// Writes a snapshot message as `SnapshotChunk` frames (at least one, even
/// for empty data). Does not flush.
///
/// # Errors
/// [`WireError::FrameTooLarge`] for a snapshot over [`SNAPSHOT_BYTES_MAX`]
/// (nothing is written then), `Io` if the stream fails.
pub fn write_snapshot<W: Write>(
    w: &mut W,
    message: &Message,
    snapshot: &Snapshot,
    lease_tick: u64,
) -> Result<(), WireError> {
    let total = snapshot_total(snapshot.data.len())?;
    let header = ChunkHeader {
        from: message.from,
        to: message.to,
        term: message.term,
        lease_tick,
        index: snapshot.meta.index,
        meta_term: snapshot.meta.term,
        membership: snapshot.meta.membership.encode(),
        total,
    };
    let mut offset = 0usize;
    loop {
        let end = (offset + SNAPSHOT_CHUNK_BYTES_MAX).min(snapshot.data.len());
        let chunk = Chunk {
            header: header.clone(),
            offset: offset as u64,
            data: &snapshot.data[offset..end],
            done: end == snapshot.data.len(),
        };
        write_frame(w, FrameKind::SnapshotChunk, &encode_chunk(&chunk)?)?;
        if chunk.done {
            return Ok(());
        }
        offset = end;
    }
}

/// The total length field for `len` bytes of snapshot data.
fn snapshot_total(len: usize) -> Result<u64, WireError> {
    let total = len as u64;
    if total > SNAPSHOT_BYTES_MAX {
        return Err(WireError::FrameTooLarge {
            length: total,
            max: SNAPSHOT_BYTES_MAX,
        });
    }
    Ok(total)
}

fn encode_chunk(chunk: &Chunk<'_>) -> Result<Vec<u8>, WireError> {
    let header = &chunk.header;
    let mut enc = Encoder::with_capacity(80 + header.membership.len() + chunk.data.len());
    enc.u64(header.from);
    enc.u64(header.to);
    enc.u64(header.term);
    enc.u64(header.lease_tick);
    enc.u64(header.index);
    enc.u64(header.meta_term);
    enc.blob(&header.membership)?;
    enc.u64(header.total);
    enc.u64(chunk.offset);
    enc.blob(chunk.data)?;
    enc.bool(chunk.done);
    Ok(enc.finish())
}

fn decode_chunk(payload: &[u8]) -> Result<Chunk<'_>, WireError> {
    let mut dec = Decoder::new(payload);
    let header = ChunkHeader {
        from: dec.u64("chunk from")?,
        to: dec.u64("chunk to")?,
        term: dec.u64("chunk term")?,
        lease_tick: dec.u64("chunk lease tick")?,
        index: dec.u64("chunk snapshot index")?,
        meta_term: dec.u64("chunk snapshot term")?,
        membership: dec.blob("chunk membership")?.to_vec(),
        total: dec.u64("chunk total length")?,
    };
    let chunk = Chunk {
        header,
        offset: dec.u64("chunk offset")?,
        data: dec.blob("chunk data")?,
        done: dec.bool("chunk done flag")?,
    };
    dec.finish()?;
    Ok(chunk)
}

/// Checks what a chunk says about itself, before it is compared with the
/// chunks that came before it.
fn check_chunk(chunk: &Chunk<'_>, cap: u64) -> Result<(), WireError> {
    if chunk.header.term > TERM_MAX || chunk.header.meta_term > TERM_MAX {
        return Err(WireError::BadSnapshotChunk("term over the cap"));
    }
    let total = chunk.header.total;
    if total > cap.min(SNAPSHOT_BYTES_MAX) {
        return Err(WireError::BadSnapshotChunk(
            "total length over the snapshot cap",
        ));
    }
    if chunk.data.len() > SNAPSHOT_CHUNK_BYTES_MAX {
        return Err(WireError::BadSnapshotChunk("chunk over the chunk cap"));
    }
    let fits = chunk.offset <= total && chunk.data.len() as u64 <= total - chunk.offset;
    if !fits {
        return Err(WireError::BadSnapshotChunk(
            "chunk extends past the total length",
        ));
    }
    let reaches_end = chunk.offset + chunk.data.len() as u64 == total;
    if chunk.done != reaches_end {
        return Err(WireError::BadSnapshotChunk(
            "done flag disagrees with the total length",
        ));
    }
    if !chunk.done && chunk.data.is_empty() {
        // Progress on every chunk bounds how many frames a transfer takes.
        return Err(WireError::BadSnapshotChunk("empty chunk before the end"));
    }
    Ok(())
}

/// A snapshot transfer under way.
struct Pending {
    header: ChunkHeader,
    membership: Membership,
    data: Vec<u8>,
}

/// Glues the chunks of one connection back into snapshot messages. One
/// per connection: chunks of one snapshot arrive in order, back to back.
#[derive(Default)]
pub struct SnapshotReassembler {
    pending: Option<Pending>,
    /// The largest total accepted; 0 (the default) is
    /// [`SNAPSHOT_BYTES_MAX`].
    cap: u64,
}

impl SnapshotReassembler {
    /// A reassembler that refuses snapshots over `max_bytes`.
    pub fn with_cap(max_bytes: u64) -> SnapshotReassembler {
        SnapshotReassembler {
            pending: None,
            cap: max_bytes,
        }
    }

    fn cap(&self) -> u64 {
        if self.cap == 0 {
            SNAPSHOT_BYTES_MAX
        } else {
            self.cap
        }
    }

    /// Whether a transfer has started and not finished.
    pub fn in_progress(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes one chunk payload; returns the message once its last chunk
    /// arrived. After an error the partial snapshot is dropped.
    ///
    /// # Errors
    /// `Malformed` for a payload that does not parse, `BadSnapshotChunk`
    /// for chunks that do not add up (a gap, an overlap, a header that
    /// changed, a total over the cap).
    pub fn push(&mut self, payload: &[u8]) -> Result<Option<Message>, WireError> {
        let result = self.try_push(payload);
        if result.is_err() {
            self.pending = None;
        }
        result
    }

    fn try_push(&mut self, payload: &[u8]) -> Result<Option<Message>, WireError> {
        let chunk = decode_chunk(payload)?;
        check_chunk(&chunk, self.cap())?;
        let mut pending = match self.pending.take() {
            None => start(chunk.header.clone(), chunk.offset)?,
            Some(pending) => pending,
        };
        if pending.header != chunk.header {
            return Err(WireError::BadSnapshotChunk(
                "header differs from the first chunk's",
            ));
        }
        if pending.data.len() as u64 != chunk.offset {
            return Err(WireError::BadSnapshotChunk(
                "offset leaves a gap or an overlap",
            ));
        }
        pending.data.extend_from_slice(chunk.data);
        if chunk.done {
            return Ok(Some(finish(pending)));
        }
        self.pending = Some(pending);
        Ok(None)
    }
}

fn start(header: ChunkHeader, offset: u64) -> Result<Pending, WireError> {
    if offset != 0 {
        return Err(WireError::BadSnapshotChunk(
            "first chunk does not start at offset 0",
        ));
    }
    let membership = Membership::decode(&header.membership)
        .map_err(|_| WireError::Malformed("snapshot membership"))?;
    // Grows with the data received, never with the total a peer announces.
    let data = Vec::with_capacity((header.total as usize).min(SNAPSHOT_CHUNK_BYTES_MAX));
    Ok(Pending {
        header,
        membership,
        data,
    })
}

fn finish(pending: Pending) -> Message {
    let header = pending.header;
    Message {
        from: header.from,
        to: header.to,
        term: header.term,
        body: MessageBody::Snapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: header.index,
                    term: header.meta_term,
                    membership: pending.membership,
                },
                data: pending.data,
            },
            lease_tick: header.lease_tick,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::message::tests::{membership, message};
    use crate::wire::read_frame;

    fn snapshot_message(data: Vec<u8>) -> (Message, Snapshot) {
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index: 100,
                term: 5,
                membership: membership(),
            },
            data,
        };
        let message = message(MessageBody::Snapshot {
            snapshot: snapshot.clone(),
            lease_tick: 42,
        });
        (message, snapshot)
    }

    /// The chunk payloads `write_snapshot` produces for `data`.
    fn chunk_payloads(data: Vec<u8>) -> (Message, Vec<Vec<u8>>) {
        let (message, snapshot) = snapshot_message(data);
        let mut bytes = Vec::new();
        write_snapshot(&mut bytes, &message, &snapshot, 42).unwrap();
        let mut reader = &bytes[..];
        let mut payloads = Vec::new();
        while !reader.is_empty() {
            let frame = read_frame(&mut reader).unwrap();
            assert_eq!(frame.kind, FrameKind::SnapshotChunk);
            payloads.push(frame.payload);
        }
        (message, payloads)
    }

    fn reassemble(payloads: &[Vec<u8>]) -> Result<Option<Message>, WireError> {
        let mut reassembler = SnapshotReassembler::default();
        let mut last = Ok(None);
        for payload in payloads {
            last = reassembler.push(payload);
            if last.is_err() {
                break;
            }
        }
        last
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn a_snapshot_over_the_map_size_is_refused_at_its_first_chunk() {
        let (_, payloads) = chunk_payloads(pattern(1000));
        let mut capped = SnapshotReassembler::with_cap(999);
        assert!(matches!(
            capped.push(&payloads[0]),
            Err(WireError::BadSnapshotChunk(_))
        ));
        assert!(!capped.in_progress());
        let mut fits = SnapshotReassembler::with_cap(1000);
        assert!(matches!(fits.push(&payloads[0]), Ok(Some(_))));
    }

    #[test]
    fn snapshots_of_many_sizes_round_trip() {
        let sizes = [
            0,
            1,
            SNAPSHOT_CHUNK_BYTES_MAX - 1,
            SNAPSHOT_CHUNK_BYTES_MAX,
            SNAPSHOT_CHUNK_BYTES_MAX + 1,
            3 * SNAPSHOT_CHUNK_BYTES_MAX + 5,
        ];
        for size in sizes {
            let (message, payloads) = chunk_payloads(pattern(size));
            assert_eq!(
                payloads.len(),
                size.div_ceil(SNAPSHOT_CHUNK_BYTES_MAX).max(1)
            );
            let mut reassembler = SnapshotReassembler::default();
            for (i, payload) in payloads.iter().enumerate() {
                let out = reassembler.push(payload).unwrap();
                if i + 1 < payloads.len() {
                    assert!(out.is_none());
                    assert!(reassembler.in_progress());
                } else {
                    assert_eq!(out.as_ref(), Some(&message));
                    assert!(!reassembler.in_progress());
                }
            }
        }
    }

    #[test]
    fn inconsistent_transfers_are_rejected() {
        let (_, payloads) = chunk_payloads(pattern(2 * SNAPSHOT_CHUNK_BYTES_MAX + 10));
        assert_eq!(payloads.len(), 3);
        let gap = vec![payloads[0].clone(), payloads[2].clone()];
        assert!(matches!(
            reassemble(&gap),
            Err(WireError::BadSnapshotChunk(_))
        ));
        let repeat = vec![payloads[0].clone(), payloads[0].clone()];
        assert!(reassemble(&repeat).is_err());
        let late_start = vec![payloads[1].clone()];
        assert!(reassemble(&late_start).is_err());

        let (_, other) = chunk_payloads(pattern(2 * SNAPSHOT_CHUNK_BYTES_MAX + 11));
        let mixed = vec![payloads[0].clone(), other[1].clone()];
        assert!(matches!(
            reassemble(&mixed),
            Err(WireError::BadSnapshotChunk(_))
        ));
    }

    #[test]
    fn bad_self_descriptions_are_rejected() {
        let header = ChunkHeader {
            from: 1,
            to: 2,
            term: 3,
            lease_tick: 0,
            index: 9,
            meta_term: 3,
            membership: Membership::default().encode(),
            total: 4,
        };
        let cases: [(u64, u64, &[u8], bool); 5] = [
            (SNAPSHOT_BYTES_MAX + 1, 0, b"ab", false), // total over the cap
            (4, 3, b"ab", true),                       // past the end
            (4, 0, b"ab", true),                       // done too early
            (4, 0, b"abcd", false),                    // not done at the end
            (4, 0, b"", false),                        // no progress
        ];
        for (total, offset, data, done) in cases {
            let chunk = Chunk {
                header: ChunkHeader {
                    total,
                    ..header.clone()
                },
                offset,
                data,
                done,
            };
            let payload = encode_chunk(&chunk).unwrap();
            let mut reassembler = SnapshotReassembler::default();
            assert!(
                matches!(
                    reassembler.push(&payload),
                    Err(WireError::BadSnapshotChunk(_))
                ),
                "total {total} offset {offset} done {done}"
            );
            assert!(!reassembler.in_progress());
        }
    }

    #[test]
    fn truncated_chunks_are_errors() {
        let (_, payloads) = chunk_payloads(pattern(50));
        for cut in 0..payloads[0].len() {
            let mut reassembler = SnapshotReassembler::default();
            assert!(reassembler.push(&payloads[0][..cut]).is_err());
        }
    }

    #[test]
    fn oversized_snapshots_are_not_sent() {
        let max = SNAPSHOT_BYTES_MAX as usize;
        assert_eq!(snapshot_total(max).unwrap(), SNAPSHOT_BYTES_MAX);
        assert!(matches!(
            snapshot_total(max + 1),
            Err(WireError::FrameTooLarge { .. })
        ));
    }
}
