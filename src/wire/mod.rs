//! The peer protocol's bytes: frames (`magic | version | kind | length |
//! crc32 | payload`, big-endian) and the codecs of what they carry — the
//! handshake, Raft messages and snapshot chunks.
//!
//! Everything here works over `Read`/`Write` or byte slices and is pure:
//! no sockets, no threads, no clock, no logging. Bad input of any kind is
//! an `Err(WireError)`, never a panic, and no length read from the wire
//! makes us allocate more than the frame cap ([`FRAME_PAYLOAD_BYTES_MAX`])
//! or, while reassembling a snapshot, more than the data actually received
//! (at most [`SNAPSHOT_BYTES_MAX`]). This module may not touch
//! `crate::raft`'s behaviour, only its value types.
//!
//! A connection carries, each way: one `Handshake` frame, then `Message`
//! frames and runs of `SnapshotChunk` frames (one run per snapshot
//! message, never interleaved with anything else). [`write_message`] and
//! [`MessageAssembler`] are the two ends of that stream.

mod auth;
mod codec;
mod error;
mod frame;
mod handshake;
mod join;
mod message;
mod snapshot;

use std::io::{Read, Write};

use crate::raft::{Message, MessageBody};

pub use auth::{
    NONCE_BYTES, Role, SealedReader, SealedWriter, Session, TAG_BYTES, authenticate_acceptor,
    authenticate_dialer,
};
pub use error::WireError;
pub use frame::{
    FRAME_PAYLOAD_BYTES_MAX, Frame, FrameKind, HEADER_BYTES, MAGIC, VERSION, read_frame,
    read_frame_capped, write_frame,
};
pub use handshake::{HANDSHAKE_PAYLOAD_BYTES_MAX, Handshake, Refusal, RefusalReason};
pub use join::{JOIN_PAYLOAD_BYTES_MAX, JoinAnswer, JoinRequest, LeaveRequest, MemberRequest};
pub use message::{decode_message, encode_message};
pub use snapshot::{
    SNAPSHOT_BYTES_MAX, SNAPSHOT_CHUNK_BYTES_MAX, SnapshotReassembler, write_snapshot,
};

/// Reads the frame that must come first on a connection, with the
/// handshake's own size cap.
///
/// # Errors
/// The frame errors of [`read_frame`], `UnexpectedFrame` for another kind
/// of frame, `Malformed` for a payload that does not parse.
pub fn read_handshake<R: Read>(r: &mut R) -> Result<Handshake, WireError> {
    let frame = read_frame_capped(r, HANDSHAKE_PAYLOAD_BYTES_MAX)?;
    if frame.kind != FrameKind::Handshake {
        return Err(WireError::UnexpectedFrame("first frame is not a handshake"));
    }
    Handshake::decode(&frame.payload)
}

/// Reads the peer's answer to our handshake: its own handshake, or a
/// refusal saying why not.
///
/// # Errors
/// As [`read_handshake`]; `Refused` for a `Refusal` frame.
pub fn read_handshake_reply<R: Read>(r: &mut R) -> Result<Handshake, WireError> {
    let frame = read_frame_capped(r, HANDSHAKE_PAYLOAD_BYTES_MAX)?;
    match frame.kind {
        FrameKind::Handshake => Handshake::decode(&frame.payload),
        FrameKind::Refusal => Err(WireError::Refused(Refusal::decode(&frame.payload)?)),
        _ => Err(WireError::UnexpectedFrame("first frame is not a handshake")),
    }
}

/// Writes a `Refusal` frame. Does not flush.
///
/// # Errors
/// `Io` if the stream fails.
pub fn write_refusal<W: Write>(w: &mut W, refusal: &Refusal) -> Result<(), WireError> {
    write_frame(w, FrameKind::Refusal, &refusal.encode())
}

/// Reads the frame that follows a handshake with node id 0: a join or
/// a leave request.
///
/// # Errors
/// The frame errors of [`read_frame`], `UnexpectedFrame` for another kind
/// of frame, `Malformed` for a payload that does not parse.
pub fn read_member_request<R: Read>(r: &mut R) -> Result<MemberRequest, WireError> {
    let frame = read_frame_capped(r, JOIN_PAYLOAD_BYTES_MAX)?;
    match frame.kind {
        FrameKind::JoinRequest => JoinRequest::decode(&frame.payload).map(MemberRequest::Join),
        FrameKind::LeaveRequest => LeaveRequest::decode(&frame.payload).map(MemberRequest::Leave),
        _ => Err(WireError::UnexpectedFrame(
            "a joiner's second frame is not a join or leave request",
        )),
    }
}

/// Writes a `LeaveRequest` frame. Does not flush.
///
/// # Errors
/// `Io` if the stream fails.
pub fn write_leave_request<W: Write>(w: &mut W, request: &LeaveRequest) -> Result<(), WireError> {
    write_frame(w, FrameKind::LeaveRequest, &request.encode())
}

/// Reads the member's answer to a join request.
///
/// # Errors
/// As [`read_member_request`]; `Refused` for a `Refusal` frame.
pub fn read_join_answer<R: Read>(r: &mut R) -> Result<JoinAnswer, WireError> {
    let frame = read_frame_capped(r, JOIN_PAYLOAD_BYTES_MAX)?;
    match frame.kind {
        FrameKind::JoinAnswer => JoinAnswer::decode(&frame.payload),
        FrameKind::Refusal => Err(WireError::Refused(Refusal::decode(&frame.payload)?)),
        _ => Err(WireError::UnexpectedFrame(
            "the answer to a join request is not a join answer",
        )),
    }
}

/// Writes a `JoinRequest` frame. Does not flush.
///
/// # Errors
/// `Io` if the stream fails.
pub fn write_join_request<W: Write>(w: &mut W, request: &JoinRequest) -> Result<(), WireError> {
    write_frame(w, FrameKind::JoinRequest, &request.encode())
}

/// Writes a `JoinAnswer` frame. Does not flush.
///
/// # Errors
/// `Io` if the stream fails.
pub fn write_join_answer<W: Write>(w: &mut W, answer: &JoinAnswer) -> Result<(), WireError> {
    write_frame(w, FrameKind::JoinAnswer, &answer.encode())
}

/// Writes a `Handshake` frame. Does not flush.
///
/// # Errors
/// `Io` if the stream fails.
pub fn write_handshake<W: Write>(w: &mut W, handshake: &Handshake) -> Result<(), WireError> {
    write_frame(w, FrameKind::Handshake, &handshake.encode())
}

/// Writes one message: a `Message` frame, or a run of `SnapshotChunk`
/// frames for a snapshot. Does not flush.
///
/// # Errors
/// `FrameTooLarge` for a message over the caps (nothing is written then),
/// `Io` if the stream fails (possibly after part of a snapshot was
/// written: the connection must then be dropped).
pub fn write_message<W: Write>(w: &mut W, message: &Message) -> Result<(), WireError> {
    match &message.body {
        MessageBody::Snapshot {
            snapshot,
            lease_tick,
        } => write_snapshot(w, message, snapshot, *lease_tick),
        _ => write_frame(w, FrameKind::Message, &encode_message(message)?),
    }
}

/// Turns the frames that follow the handshake on one connection back into
/// messages. One per connection.
#[derive(Default)]
pub struct MessageAssembler {
    snapshot: SnapshotReassembler,
}

impl MessageAssembler {
    /// An assembler that refuses snapshots over `max_bytes` (at most
    /// [`SNAPSHOT_BYTES_MAX`]).
    pub fn with_snapshot_cap(max_bytes: u64) -> MessageAssembler {
        MessageAssembler {
            snapshot: SnapshotReassembler::with_cap(max_bytes),
        }
    }

    /// Takes the next frame; returns a message when one is complete (a
    /// `Message` frame, or the last chunk of a snapshot).
    ///
    /// # Errors
    /// `UnexpectedFrame` for a second handshake or a message frame in the
    /// middle of a snapshot; the codecs' errors otherwise. The connection
    /// should be closed after any error.
    pub fn push(&mut self, frame: &Frame) -> Result<Option<Message>, WireError> {
        match frame.kind {
            FrameKind::Handshake => Err(WireError::UnexpectedFrame(
                "handshake after the connection was set up",
            )),
            FrameKind::Message if self.snapshot.in_progress() => Err(WireError::UnexpectedFrame(
                "message frame inside a snapshot transfer",
            )),
            FrameKind::Message => decode_message(&frame.payload).map(Some),
            FrameKind::SnapshotChunk => self.snapshot.push(&frame.payload),
            FrameKind::Refusal => Err(WireError::UnexpectedFrame(
                "refusal after the connection was set up",
            )),
            FrameKind::JoinRequest | FrameKind::JoinAnswer | FrameKind::LeaveRequest => Err(
                WireError::UnexpectedFrame("join frame on a member's connection"),
            ),
            FrameKind::Auth | FrameKind::Sealed => Err(WireError::UnexpectedFrame(
                "peer-secret frame inside the sealed stream",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::message::tests::{every_body, message};
    use super::*;
    use crate::raft::{Snapshot, SnapshotMeta};

    fn big_snapshot(len: usize) -> Message {
        message(MessageBody::Snapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta::default(),
                data: (0..len).map(|i| (i % 253) as u8).collect(),
            },
            lease_tick: 3,
        })
    }

    /// A stream as a writer thread produces it: handshake, then messages.
    fn stream_of(messages: &[Message]) -> Vec<u8> {
        let mut out = Vec::new();
        let handshake = Handshake {
            cluster_id: 7,
            node_id: 1,
            peer_addr: "a:1".into(),
            http_addr: "a:2".into(),
            incarnation: 5,
        };
        write_handshake(&mut out, &handshake).unwrap();
        for message in messages {
            write_message(&mut out, message).unwrap();
        }
        out
    }

    fn read_stream(bytes: &[u8]) -> Result<Vec<Message>, WireError> {
        let mut reader = bytes;
        read_handshake(&mut reader)?;
        let mut assembler = MessageAssembler::default();
        let mut messages = Vec::new();
        loop {
            match read_frame(&mut reader) {
                Ok(frame) => messages.extend(assembler.push(&frame)?),
                Err(WireError::Closed) => return Ok(messages),
                Err(err) => return Err(err),
            }
        }
    }

    fn sample_messages() -> Vec<Message> {
        let mut messages: Vec<Message> = every_body().into_iter().map(message).collect();
        messages.insert(3, big_snapshot(2 * SNAPSHOT_CHUNK_BYTES_MAX + 17));
        messages
    }

    #[test]
    fn a_stream_of_every_message_reads_back() {
        let messages = sample_messages();
        let bytes = stream_of(&messages);
        assert_eq!(read_stream(&bytes).unwrap(), messages);
    }

    #[test]
    fn misplaced_frames_are_rejected() {
        let mut assembler = MessageAssembler::default();
        let handshake = Frame {
            kind: FrameKind::Handshake,
            payload: Vec::new(),
        };
        assert!(matches!(
            assembler.push(&handshake),
            Err(WireError::UnexpectedFrame(_))
        ));

        let mut bytes = Vec::new();
        write_message(&mut bytes, &big_snapshot(SNAPSHOT_CHUNK_BYTES_MAX + 1)).unwrap();
        let first_chunk = read_frame(&mut &bytes[..]).unwrap();
        assert_eq!(assembler.push(&first_chunk).unwrap(), None);
        let timeout_now = Frame {
            kind: FrameKind::Message,
            payload: encode_message(&message(MessageBody::TimeoutNow)).unwrap(),
        };
        assert!(matches!(
            assembler.push(&timeout_now),
            Err(WireError::UnexpectedFrame(_))
        ));
    }

    #[test]
    fn every_truncation_of_a_stream_is_an_error() {
        let messages = vec![
            message(MessageBody::TimeoutNow),
            big_snapshot(1000),
            message(MessageBody::VoteResponse {
                pre: true,
                granted: false,
            }),
        ];
        let bytes = stream_of(&messages);
        for cut in 0..bytes.len() {
            // A cut between two frames is a clean end: fewer messages.
            if let Ok(read) = read_stream(&bytes[..cut]) {
                assert!(read.len() < messages.len(), "cut at {cut}");
            }
        }
    }

    /// xorshift64: reproducible randomness without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// Flips, inserts, deletes or overwrites a few bytes, or cuts the end.
    fn mutate(rng: &mut XorShift, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(out.len() + 1);
            match rng.below(5) {
                0 if at < out.len() => out[at] ^= 1 << rng.below(8),
                1 => out.insert(at, rng.next() as u8),
                2 if at < out.len() => {
                    out.remove(at);
                }
                3 if at + 8 <= out.len() => {
                    let value = [0u64, 1, u64::from(u32::MAX), u64::MAX][rng.below(4)];
                    out[at..at + 8].copy_from_slice(&value.to_be_bytes());
                }
                _ => out.truncate(at),
            }
        }
        out
    }

    /// Feeds `bytes` to every decoder; none may panic.
    fn decode_everything(bytes: &[u8], assembler: &mut MessageAssembler) {
        let _ = decode_message(bytes);
        let _ = Handshake::decode(bytes);
        let _ = SnapshotReassembler::default().push(bytes);
        let _ = read_stream(bytes);
        let mut reader = bytes;
        while let Ok(frame) = read_frame(&mut reader) {
            let _ = assembler.push(&frame);
        }
    }

    fn fuzz(seed: u64, rounds: usize) {
        println!("reproduce with seed={seed}");
        let mut rng = XorShift(seed);
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        for message in every_body().into_iter().map(message) {
            payloads.push(encode_message(&message).unwrap());
        }
        let mut chunk_stream = Vec::new();
        write_message(&mut chunk_stream, &big_snapshot(300)).unwrap();
        payloads.push(read_frame(&mut &chunk_stream[..]).unwrap().payload);
        let stream = stream_of(&every_body().into_iter().map(message).collect::<Vec<_>>());
        let mut assembler = MessageAssembler::default();
        for _ in 0..rounds {
            let len = rng.below(200);
            let random = rng.bytes(len);
            decode_everything(&random, &mut assembler);
            let payload = &payloads[rng.below(payloads.len())];
            let mutated = mutate(&mut rng, payload);
            decode_everything(&mutated, &mut assembler);
            // Re-framed with a valid checksum, so the payload decoders run.
            let kind = [FrameKind::Message, FrameKind::SnapshotChunk][rng.below(2)];
            let mut framed = Vec::new();
            write_frame(&mut framed, kind, &mutated).unwrap();
            decode_everything(&framed, &mut assembler);
            decode_everything(&mutate(&mut rng, &stream), &mut assembler);
        }
    }

    #[test]
    fn fuzzed_input_never_panics() {
        for seed in [1, 0x9e37_79b9_7f4a_7c15, 0xdead_beef_cafe_f00d] {
            fuzz(seed, 3000);
        }
    }
}
