//! The peer protocol's view of the crate's byte cursor ([`crate::bytes`]):
//! the same bounds-checked reads and appends, with every decoding error
//! named by the field it happened in, as a [`WireError::Malformed`].
//! Every length read is checked against the bytes that remain before
//! anything is allocated from it.

use crate::bytes::{Reader, Writer};

use super::WireError;

/// Reads big-endian fields off the front of a payload.
pub(crate) struct Decoder<'a> {
    inner: Reader<'a>,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(payload: &'a [u8]) -> Decoder<'a> {
        Decoder {
            inner: Reader::new(payload),
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.inner.remaining()
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        self.inner.u8().map_err(|_| WireError::Malformed(what))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.inner.u32().map_err(|_| WireError::Malformed(what))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.inner.u64().map_err(|_| WireError::Malformed(what))
    }

    /// A strict boolean: any byte but 0 or 1 is malformed, so that one
    /// message has exactly one encoding.
    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        self.inner.bool().map_err(|_| WireError::Malformed(what))
    }

    /// u32 length + that many bytes.
    pub(crate) fn blob(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        self.inner.blob().map_err(|_| WireError::Malformed(what))
    }

    /// u16 length + UTF-8.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<String, WireError> {
        self.inner.str16().map_err(|_| WireError::Malformed(what))
    }

    /// Trailing bytes would mean the sender and we disagree on the format.
    pub(crate) fn finish(self) -> Result<(), WireError> {
        self.inner
            .finish()
            .map_err(|_| WireError::Malformed("trailing bytes after the last field"))
    }
}

/// Appends big-endian fields to a payload under construction.
pub(crate) struct Encoder {
    inner: Writer,
}

impl Encoder {
    pub(crate) fn with_capacity(capacity: usize) -> Encoder {
        Encoder {
            inner: Writer::with_capacity(capacity),
        }
    }

    pub(crate) fn u8(&mut self, value: u8) {
        self.inner.u8(value);
    }

    pub(crate) fn u32(&mut self, value: u32) {
        self.inner.u32(value);
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.inner.u64(value);
    }

    pub(crate) fn bool(&mut self, value: bool) {
        self.inner.bool(value);
    }

    /// u32 length + bytes.
    ///
    /// # Errors
    /// `FrameTooLarge` if the blob cannot be a field of one frame.
    pub(crate) fn blob(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        if u32::try_from(bytes.len()).is_err() {
            return Err(WireError::FrameTooLarge {
                length: bytes.len() as u64,
                max: u64::from(u32::MAX),
            });
        }
        self.inner.bytes(bytes);
        Ok(())
    }

    /// u16 length + UTF-8, cut at a character boundary if longer than the
    /// field can say (callers keep their strings, addresses, far below).
    pub(crate) fn string(&mut self, text: &str) {
        self.inner.str16(text);
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.inner.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut enc = Encoder::with_capacity(0);
        enc.u8(7);
        enc.u32(0xdead_beef);
        enc.u64(u64::MAX - 1);
        enc.bool(true);
        enc.blob(b"blob").unwrap();
        enc.string("héllo");
        let bytes = enc.finish();
        let mut dec = Decoder::new(&bytes);
        assert_eq!(dec.u8("a").unwrap(), 7);
        assert_eq!(dec.u32("b").unwrap(), 0xdead_beef);
        assert_eq!(dec.u64("c").unwrap(), u64::MAX - 1);
        assert!(dec.bool("d").unwrap());
        assert_eq!(dec.blob("e").unwrap(), b"blob");
        assert_eq!(dec.string("f").unwrap(), "héllo");
        dec.finish().unwrap();
    }

    #[test]
    fn long_strings_are_cut_at_a_char_boundary() {
        let text = "é".repeat(40_000);
        let mut enc = Encoder::with_capacity(0);
        enc.string(&text);
        let bytes = enc.finish();
        let decoded = Decoder::new(&bytes).string("s").unwrap();
        assert!(decoded.len() <= usize::from(u16::MAX));
        assert!(text.starts_with(&decoded));
    }

    #[test]
    fn bad_fields_are_errors() {
        assert!(Decoder::new(&[2]).bool("b").is_err());
        assert!(Decoder::new(&[0, 0, 0, 9, 1]).blob("b").is_err());
        assert!(Decoder::new(&[0, 2, 0xff, 0xfe]).string("s").is_err());
        assert!(Decoder::new(&[1]).finish().is_err());
        assert!(Decoder::new(&[1, 2, 3]).u64("u").is_err());
    }
}
