//! The one error type of the wire layer: what was wrong with the bytes (or
//! the stream) that a peer sent us.

use std::fmt;
use std::io;

/// Why a frame or payload could not be read or written. Every decoding
/// failure is one of these, never a panic; the transport closes the
/// connection on any of them.
#[derive(Debug)]
pub enum WireError {
    /// The underlying stream failed (includes read/write timeouts).
    Io(io::Error),
    /// The stream ended cleanly between two frames.
    Closed,
    /// The stream ended in the middle of a frame.
    Truncated,
    /// The frame does not start with [`crate::wire::MAGIC`].
    BadMagic(u32),
    /// A protocol version this build does not speak.
    UnsupportedVersion(u8),
    /// A frame kind byte this build does not know.
    UnknownFrameKind(u8),
    /// A frame (or a payload about to be framed) over the size cap.
    FrameTooLarge { length: u64, max: u64 },
    /// The payload does not match the header's CRC-32.
    BadChecksum { expected: u32, actual: u32 },
    /// The payload of a frame does not parse; says which field.
    Malformed(&'static str),
    /// A frame of a kind that is not allowed at this point of the stream.
    UnexpectedFrame(&'static str),
    /// Snapshot chunks that do not add up to one snapshot.
    BadSnapshotChunk(&'static str),
    /// The peer refused the connection and said why.
    Refused(super::Refusal),
    /// The peer did not prove the peer secret (or proved none).
    BadProof(&'static str),
    /// A sealed frame whose MAC does not match: forged, altered, replayed
    /// or out of order.
    BadMac,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Io(err) => write!(f, "i/o error: {err}"),
            WireError::Closed => write!(f, "connection closed"),
            WireError::Truncated => write!(f, "stream ended in the middle of a frame"),
            WireError::BadMagic(magic) => write!(f, "bad frame magic {magic:#010x}"),
            WireError::UnsupportedVersion(version) => write!(
                f,
                "peer speaks protocol version {version}, this build speaks version {}",
                super::VERSION
            ),
            WireError::UnknownFrameKind(kind) => write!(f, "unknown frame kind {kind}"),
            WireError::FrameTooLarge { length, max } => {
                write!(f, "frame of {length} bytes exceeds the cap of {max} bytes")
            }
            WireError::BadChecksum { expected, actual } => write!(
                f,
                "frame checksum mismatch: header says {expected:#010x}, payload has {actual:#010x}"
            ),
            WireError::Malformed(what) => write!(f, "malformed payload: {what}"),
            WireError::UnexpectedFrame(what) => write!(f, "unexpected frame: {what}"),
            WireError::BadSnapshotChunk(what) => write!(f, "bad snapshot chunk: {what}"),
            WireError::Refused(refusal) => write!(f, "refused by the peer: {}", refusal.message),
            WireError::BadProof(what) => write!(f, "peer secret not proven: {what}"),
            WireError::BadMac => write!(
                f,
                "frame MAC mismatch (forged, altered, replayed or reordered frame)"
            ),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for WireError {
    fn from(err: io::Error) -> WireError {
        let kind = err.kind();
        if kind == io::ErrorKind::UnexpectedEof {
            return WireError::Truncated;
        }
        // The sealed reader and writer are `io::Read`/`io::Write`, so a
        // wire error inside them travels as an `io::Error`: it comes back
        // as itself, not as "i/o error: i/o error: ...".
        if err.get_ref().is_some_and(|inner| inner.is::<WireError>()) {
            return match err.into_inner().map(|inner| inner.downcast::<WireError>()) {
                Some(Ok(wire)) => *wire,
                Some(Err(other)) => WireError::Io(io::Error::new(kind, other)),
                None => WireError::Io(io::Error::from(kind)),
            };
        }
        WireError::Io(err)
    }
}

impl From<WireError> for io::Error {
    /// The stream error itself for [`WireError::Io`]; any other wire
    /// error wrapped, so that [`WireError::from`] can take it back out.
    fn from(err: WireError) -> io::Error {
        match err {
            WireError::Io(err) => err,
            other => io::Error::other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wire_error_through_io_keeps_one_prefix() {
        let broken = io::Error::new(io::ErrorKind::BrokenPipe, "Broken pipe");
        let through: io::Error = WireError::Io(broken).into();
        assert_eq!(through.kind(), io::ErrorKind::BrokenPipe);
        let back = WireError::from(through);
        assert_eq!(back.to_string(), "i/o error: Broken pipe");

        let mac: io::Error = WireError::BadMac.into();
        assert!(matches!(WireError::from(mac), WireError::BadMac));
        // Wrapped twice by hand, as `io::Error::other` would.
        let twice = io::Error::other(WireError::Io(io::Error::other("x")));
        assert_eq!(WireError::from(twice).to_string(), "i/o error: x");
    }
}
