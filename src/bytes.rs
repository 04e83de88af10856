//! The one byte cursor: big-endian binary primitives shared by every codec
//! (commands, snapshots, store records, peer frames), and the error type
//! their decoders return.
//!
//! Owns: bounds-checked reading of untrusted bytes. May not touch: anything
//! that knows what the bytes mean (that is each codec's own module).
//! Every read checks the remaining length first, so a length field can
//! never make us allocate more than the input itself holds.

use byteorder::{BigEndian, ByteOrder};
use std::fmt;

/// Why a command or snapshot could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside a field.
    Truncated,
    /// Bytes were left over after a complete value.
    TrailingBytes(usize),
    /// The format version byte is not one this build understands.
    UnknownVersion(u8),
    /// A tag byte (command kind, resource kind, option flag) is unknown.
    UnknownTag(u8),
    /// A string field is not valid UTF-8.
    BadUtf8,
    /// A length is over the limit for its field.
    TooLong { field: &'static str, len: u64 },
    /// A snapshot does not start with the snapshot magic number.
    BadMagic(u32),
    /// A snapshot's checksum does not match its contents.
    BadChecksum { stored: u32, computed: u32 },
    /// The value decoded but breaks an invariant of the state.
    Inconsistent(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "input ends inside a field"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} trailing bytes after the value"),
            DecodeError::UnknownVersion(v) => write!(f, "unknown format version {v}"),
            DecodeError::UnknownTag(t) => write!(f, "unknown tag {t}"),
            DecodeError::BadUtf8 => write!(f, "string is not valid UTF-8"),
            DecodeError::TooLong { field, len } => write!(f, "{field} is too long ({len})"),
            DecodeError::BadMagic(m) => write!(f, "bad magic number {m:#010x}"),
            DecodeError::BadChecksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            DecodeError::Inconsistent(what) => write!(f, "inconsistent state: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Appends big-endian fields to a byte vector (writing to memory cannot fail).
#[derive(Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer { bytes: Vec::new() }
    }

    pub fn with_capacity(capacity: usize) -> Writer {
        Writer {
            bytes: Vec::with_capacity(capacity),
        }
    }

    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    pub fn u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub fn u32(&mut self, value: u32) {
        let mut buf = [0u8; 4];
        BigEndian::write_u32(&mut buf, value);
        self.bytes.extend_from_slice(&buf);
    }

    pub fn u64(&mut self, value: u64) {
        let mut buf = [0u8; 8];
        BigEndian::write_u64(&mut buf, value);
        self.bytes.extend_from_slice(&buf);
    }

    /// A count or length; every collection we encode is far below 2^32
    /// (bounded by the limits in `mod.rs` and by memory), so saturating is
    /// only a guard: a decoder would then reject the value, never misread it.
    pub fn len(&mut self, len: usize) {
        self.u32(u32::try_from(len).unwrap_or(u32::MAX));
    }

    pub fn bytes(&mut self, value: &[u8]) {
        self.len(value.len());
        self.bytes.extend_from_slice(value);
    }

    pub fn str(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }

    /// A strict boolean: 0 or 1.
    pub fn bool(&mut self, value: bool) {
        self.bytes.push(u8::from(value));
    }

    /// Bytes with no length before them (fixed-size fields, nonces).
    pub fn raw(&mut self, value: &[u8]) {
        self.bytes.extend_from_slice(value);
    }

    /// A short text: u16 length + UTF-8. Text longer than the field can
    /// say is cut at a character boundary rather than written as invalid
    /// UTF-8; callers keep such strings (addresses) far below that.
    pub fn str16(&mut self, text: &str) {
        let mut len = text.len().min(usize::from(u16::MAX));
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        self.u16(len as u16);
        self.bytes.extend_from_slice(&text.as_bytes()[..len]);
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads big-endian fields from untrusted bytes.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    /// How many bytes are left to read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next `n` bytes, with no length before them.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.take(n)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(BigEndian::read_u16(self.take(2)?))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(BigEndian::read_u32(self.take(4)?))
    }

    /// A strict boolean: any byte but 0 or 1 is an unknown tag, so that
    /// one value has exactly one encoding.
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::UnknownTag(other)),
        }
    }

    /// A u32 length and that many bytes, bounded only by the input.
    pub fn blob(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        self.take(len as usize)
    }

    /// A short text: u16 length + UTF-8 (see [`Writer::str16`]).
    pub fn str16(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u16()?);
        match std::str::from_utf8(self.take(len)?) {
            Ok(text) => Ok(text.to_owned()),
            Err(_) => Err(DecodeError::BadUtf8),
        }
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(BigEndian::read_u64(self.take(8)?))
    }

    /// A count of items each at least `min_item_bytes` long: rejected
    /// before anything is allocated if the input cannot hold that many.
    pub fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(min_item_bytes.max(1)) > self.rest.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(count)
    }

    pub fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        if len as usize > max {
            return Err(DecodeError::TooLong {
                field,
                len: u64::from(len),
            });
        }
        self.take(len as usize)
    }

    pub fn string(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let raw = self.bytes(field, max)?;
        match std::str::from_utf8(raw) {
            Ok(text) => Ok(text.to_owned()),
            Err(_) => Err(DecodeError::BadUtf8),
        }
    }

    /// Ends decoding: a value followed by anything is rejected, because
    /// extra bytes mean the writer and reader disagree on the format.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.rest.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_fields() {
        let mut w = Writer::new();
        w.u8(7);
        w.u32(0xdead_beef);
        w.u64(u64::MAX - 1);
        w.str("héllo");
        w.bytes(&[1, 2, 3]);
        let mut r = Reader::new(&w.bytes);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 0xdead_beef);
        assert_eq!(r.u64().unwrap(), u64::MAX - 1);
        assert_eq!(r.string("s", 100).unwrap(), "héllo");
        assert_eq!(r.bytes("b", 3).unwrap(), &[1, 2, 3]);
        r.finish().unwrap();
    }

    #[test]
    fn big_endian_on_the_wire() {
        let mut w = Writer::new();
        w.u32(0x0102_0304);
        assert_eq!(w.bytes, vec![1, 2, 3, 4]);
    }

    #[test]
    fn rejects_short_long_and_bad_input() {
        assert_eq!(Reader::new(&[1, 2, 3]).u32(), Err(DecodeError::Truncated));
        // A length claiming 4 GiB must fail without allocating it.
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0]);
        assert_eq!(r.bytes("b", usize::MAX), Err(DecodeError::Truncated));
        let mut r = Reader::new(&[0, 0, 0, 5, 1, 2, 3, 4, 5]);
        assert!(matches!(r.bytes("b", 4), Err(DecodeError::TooLong { .. })));
        let mut r = Reader::new(&[0, 0, 0, 1, 0xff]);
        assert_eq!(r.string("s", 10), Err(DecodeError::BadUtf8));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0, 0]);
        assert_eq!(r.count(8), Err(DecodeError::Truncated));
        let r = Reader::new(&[1]);
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn short_fields_round_trip_and_are_strict() {
        let mut w = Writer::new();
        w.u16(0xbeef);
        w.bool(true);
        w.raw(b"nonce");
        w.str16("héllo");
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u16().unwrap(), 0xbeef);
        assert!(r.bool().unwrap());
        assert_eq!(r.remaining(), 5 + 2 + "héllo".len());
        assert_eq!(r.raw(5).unwrap(), b"nonce");
        assert_eq!(r.str16().unwrap(), "héllo");
        assert!(r.is_empty());
        assert_eq!(Reader::new(&[2]).bool(), Err(DecodeError::UnknownTag(2)));
        assert_eq!(
            Reader::new(&[0, 2, 0xff, 0xfe]).str16(),
            Err(DecodeError::BadUtf8)
        );
        assert_eq!(
            Reader::new(&[0, 0, 0, 9, 1]).blob(),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn long_short_texts_are_cut_at_a_char_boundary() {
        let text = "é".repeat(40_000);
        let mut w = Writer::new();
        w.str16(&text);
        let bytes = w.into_bytes();
        let decoded = Reader::new(&bytes).str16().unwrap();
        assert!(decoded.len() <= usize::from(u16::MAX));
        assert!(text.starts_with(&decoded));
    }
}
