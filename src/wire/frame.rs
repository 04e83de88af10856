//! The frame layer: `magic u32 | version u8 | kind u8 | length u32 |
//! crc32 u32 | payload`, big-endian. Knows nothing of what payloads mean.

use std::io::{Read, Write};

use byteorder::{BigEndian, ByteOrder};

use super::WireError;
use crate::crc32;

/// "TKTD": the first four bytes of every frame.
pub const MAGIC: u32 = 0x544B_5444;
/// The protocol version this build speaks.
/// Version 2: Append's `transfer_to`, the handshake's incarnation and the
/// peer-secret exchange (`Auth` and `Sealed` frames).
pub const VERSION: u8 = 2;
/// Bytes before the payload.
pub const HEADER_BYTES: usize = 14;
/// The largest payload accepted or sent. Bounds what a peer can make us
/// allocate for one frame; snapshots travel in chunks far below it.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 16 << 20;

/// Reading a payload grows the buffer as bytes arrive, starting here, so a
/// header announcing 16 MiB followed by silence costs little memory.
const PAYLOAD_CAPACITY_INITIAL: usize = 64 << 10;

/// What a frame's payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// The first frame each way on a connection ([`super::Handshake`]).
    Handshake,
    /// One Raft message, any body but a snapshot.
    Message,
    /// One piece of a snapshot message.
    SnapshotChunk,
    /// Instead of a handshake reply: why the connection is refused
    /// ([`super::Refusal`]). The last frame on that connection.
    Refusal,
    /// After a handshake with node id 0: a node asks to be admitted
    /// ([`super::JoinRequest`]).
    JoinRequest,
    /// The answer to a `JoinRequest` or `LeaveRequest`
    /// ([`super::JoinAnswer`]), the last frame on that connection.
    JoinAnswer,
    /// After a handshake with node id 0: a member asks its leader to
    /// remove it ([`super::LeaveRequest`]).
    LeaveRequest,
    /// With a peer secret, before the handshake: nonces and proofs
    /// ([`super::auth`]).
    Auth,
    /// With a peer secret, after the proofs: a MACed record carrying
    /// ordinary frames ([`super::SealedWriter`]).
    Sealed,
}

impl FrameKind {
    /// The kind's byte on the wire.
    pub fn to_u8(self) -> u8 {
        match self {
            FrameKind::Handshake => 1,
            FrameKind::Message => 2,
            FrameKind::SnapshotChunk => 3,
            FrameKind::Refusal => 4,
            FrameKind::JoinRequest => 5,
            FrameKind::JoinAnswer => 6,
            FrameKind::LeaveRequest => 7,
            FrameKind::Auth => 8,
            FrameKind::Sealed => 9,
        }
    }

    /// Parses the byte written by [`FrameKind::to_u8`].
    pub fn from_u8(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Handshake),
            2 => Some(FrameKind::Message),
            3 => Some(FrameKind::SnapshotChunk),
            4 => Some(FrameKind::Refusal),
            5 => Some(FrameKind::JoinRequest),
            6 => Some(FrameKind::JoinAnswer),
            7 => Some(FrameKind::LeaveRequest),
            8 => Some(FrameKind::Auth),
            9 => Some(FrameKind::Sealed),
            _ => None,
        }
    }
}

/// One checked frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Vec<u8>,
}

/// Reads one frame and checks its header and checksum.
///
/// # Errors
/// [`WireError::Closed`] if the stream ends before the first byte,
/// [`WireError::Truncated`] if it ends later, `Io` on stream errors, and
/// the header/checksum variants for a frame that is not valid.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Frame, WireError> {
    read_frame_capped(r, FRAME_PAYLOAD_BYTES_MAX)
}

/// [`read_frame`] with a lower payload cap (never above
/// [`FRAME_PAYLOAD_BYTES_MAX`]), for frames known to be small, such as a
/// handshake from a peer that has not identified itself yet.
///
/// # Errors
/// As [`read_frame`]; `FrameTooLarge` above `payload_bytes_max`.
pub fn read_frame_capped<R: Read>(r: &mut R, payload_bytes_max: usize) -> Result<Frame, WireError> {
    let payload_bytes_max = payload_bytes_max.min(FRAME_PAYLOAD_BYTES_MAX);
    let mut header = [0u8; HEADER_BYTES];
    read_header(r, &mut header)?;
    let magic = BigEndian::read_u32(&header[0..4]);
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if header[4] != VERSION {
        return Err(WireError::UnsupportedVersion(header[4]));
    }
    let kind = FrameKind::from_u8(header[5]).ok_or(WireError::UnknownFrameKind(header[5]))?;
    let length = BigEndian::read_u32(&header[6..10]) as usize;
    if length > payload_bytes_max {
        return Err(WireError::FrameTooLarge {
            length: length as u64,
            max: payload_bytes_max as u64,
        });
    }
    let expected = BigEndian::read_u32(&header[10..14]);
    let mut payload = Vec::with_capacity(length.min(PAYLOAD_CAPACITY_INITIAL));
    r.take(length as u64).read_to_end(&mut payload)?;
    if payload.len() < length {
        return Err(WireError::Truncated);
    }
    let actual = crc32::checksum(&payload);
    if actual != expected {
        return Err(WireError::BadChecksum { expected, actual });
    }
    Ok(Frame { kind, payload })
}

/// Fills `header`, telling a clean end of stream from a cut frame.
fn read_header<R: Read>(r: &mut R, header: &mut [u8; HEADER_BYTES]) -> Result<(), WireError> {
    let mut filled = 0;
    while filled < HEADER_BYTES {
        match r.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Err(WireError::Closed),
            Ok(0) => return Err(WireError::Truncated),
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// Writes one frame. Does not flush: callers batch frames in a
/// `BufWriter` and flush when they run out of work.
///
/// # Errors
/// [`WireError::FrameTooLarge`] for a payload over the cap (nothing is
/// written then), `Io` if the stream fails.
pub fn write_frame<W: Write>(w: &mut W, kind: FrameKind, payload: &[u8]) -> Result<(), WireError> {
    if payload.len() > FRAME_PAYLOAD_BYTES_MAX {
        return Err(too_large(payload.len()));
    }
    let mut header = [0u8; HEADER_BYTES];
    BigEndian::write_u32(&mut header[0..4], MAGIC);
    header[4] = VERSION;
    header[5] = kind.to_u8();
    BigEndian::write_u32(&mut header[6..10], payload.len() as u32);
    BigEndian::write_u32(&mut header[10..14], crc32::checksum(payload));
    w.write_all(&header)?;
    w.write_all(payload)?;
    Ok(())
}

fn too_large(length: usize) -> WireError {
    WireError::FrameTooLarge {
        length: length as u64,
        max: FRAME_PAYLOAD_BYTES_MAX as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, kind, payload).unwrap();
        out
    }

    #[test]
    fn frames_round_trip() {
        for kind in [
            FrameKind::Handshake,
            FrameKind::Message,
            FrameKind::SnapshotChunk,
        ] {
            for payload in [&b""[..], b"x", b"hello frames"] {
                let bytes = framed(kind, payload);
                assert_eq!(bytes.len(), HEADER_BYTES + payload.len());
                let frame = read_frame(&mut &bytes[..]).unwrap();
                assert_eq!(frame.kind, kind);
                assert_eq!(frame.payload, payload);
            }
        }
    }

    #[test]
    fn consecutive_frames_then_clean_end() {
        let mut bytes = framed(FrameKind::Message, b"one");
        bytes.extend(framed(FrameKind::Handshake, b"two"));
        let mut reader = &bytes[..];
        assert_eq!(read_frame(&mut reader).unwrap().payload, b"one");
        assert_eq!(read_frame(&mut reader).unwrap().payload, b"two");
        assert!(matches!(read_frame(&mut reader), Err(WireError::Closed)));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = framed(FrameKind::Message, b"some payload bytes");
        assert!(matches!(
            read_frame(&mut &bytes[..0]),
            Err(WireError::Closed)
        ));
        for cut in 1..bytes.len() {
            assert!(
                matches!(read_frame(&mut &bytes[..cut]), Err(WireError::Truncated)),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = framed(FrameKind::Message, b"payload under checksum");
        for at in 0..bytes.len() {
            if at == 5 {
                // The kind byte is outside the checksum (the header layout
                // is fixed); a flip to another valid kind is caught by the
                // payload decoders instead.
                continue;
            }
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[at] ^= 1 << bit;
                assert!(read_frame(&mut &bad[..]).is_err(), "byte {at} bit {bit}");
            }
        }
    }

    #[test]
    fn flipped_payload_fails_the_checksum() {
        let mut bytes = framed(FrameKind::Message, b"payload");
        bytes[HEADER_BYTES + 2] ^= 0x40;
        assert!(matches!(
            read_frame(&mut &bytes[..]),
            Err(WireError::BadChecksum { .. })
        ));
    }

    #[test]
    fn header_errors_name_the_field() {
        let good = framed(FrameKind::Message, b"p");
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(
            read_frame(&mut &bad[..]),
            Err(WireError::BadMagic(_))
        ));
        let mut bad = good.clone();
        bad[4] = 1;
        assert!(matches!(
            read_frame(&mut &bad[..]),
            Err(WireError::UnsupportedVersion(1))
        ));
        let mut bad = good.clone();
        bad[5] = 99;
        assert!(matches!(
            read_frame(&mut &bad[..]),
            Err(WireError::UnknownFrameKind(99))
        ));
        let mut bad = good;
        BigEndian::write_u32(&mut bad[6..10], u32::MAX);
        let err = read_frame(&mut &bad[..]).unwrap_err();
        assert!(matches!(err, WireError::FrameTooLarge { .. }));
        assert!(err.to_string().contains("exceeds"));
    }

    #[test]
    fn a_lower_cap_applies_before_the_payload_is_read() {
        let bytes = framed(FrameKind::Handshake, &[7; 100]);
        assert!(read_frame_capped(&mut &bytes[..], 100).is_ok());
        assert!(matches!(
            read_frame_capped(&mut &bytes[..], 99),
            Err(WireError::FrameTooLarge {
                length: 100,
                max: 99
            })
        ));
    }

    #[test]
    fn oversized_payloads_are_not_written() {
        let payload = vec![0u8; FRAME_PAYLOAD_BYTES_MAX + 1];
        let mut out = Vec::new();
        assert!(matches!(
            write_frame(&mut out, FrameKind::Message, &payload),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn a_large_announced_length_with_no_data_is_truncated() {
        let mut bytes = framed(FrameKind::Message, b"");
        BigEndian::write_u32(&mut bytes[6..10], FRAME_PAYLOAD_BYTES_MAX as u32);
        assert!(matches!(
            read_frame(&mut &bytes[..]),
            Err(WireError::Truncated)
        ));
    }
}
