//! Field-level helpers shared by the payload codecs: a bounds-checked
//! reader over a payload and an appender for building one. Every length
//! read here is checked against the bytes that remain before anything is
//! allocated from it.

use byteorder::{BigEndian, ByteOrder};

use super::WireError;

/// Reads big-endian fields off the front of a payload.
pub(crate) struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(payload: &'a [u8]) -> Decoder<'a> {
        Decoder { rest: payload }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.bytes(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(BigEndian::read_u16(self.bytes(2, what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(BigEndian::read_u32(self.bytes(4, what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(BigEndian::read_u64(self.bytes(8, what)?))
    }

    /// A strict boolean: any byte but 0 or 1 is malformed, so that one
    /// message has exactly one encoding.
    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Malformed(what)),
        }
    }

    /// u32 length + that many bytes.
    pub(crate) fn blob(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let len = self.u32(what)? as usize;
        self.bytes(len, what)
    }

    /// u16 length + UTF-8.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<String, WireError> {
        let len = usize::from(self.u16(what)?);
        let bytes = self.bytes(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Malformed(what))
    }

    /// Trailing bytes would mean the sender and we disagree on the format.
    pub(crate) fn finish(self) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError::Malformed("trailing bytes after the last field"))
        }
    }
}

/// Appends big-endian fields to a payload under construction.
pub(crate) struct Encoder {
    out: Vec<u8>,
}

impl Encoder {
    pub(crate) fn with_capacity(capacity: usize) -> Encoder {
        Encoder {
            out: Vec::with_capacity(capacity),
        }
    }

    pub(crate) fn u8(&mut self, value: u8) {
        self.out.push(value);
    }

    pub(crate) fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn bool(&mut self, value: bool) {
        self.out.push(u8::from(value));
    }

    /// u32 length + bytes.
    ///
    /// # Errors
    /// `FrameTooLarge` if the blob cannot be a field of one frame.
    pub(crate) fn blob(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let len = u32::try_from(bytes.len()).map_err(|_| WireError::FrameTooLarge {
            length: bytes.len() as u64,
            max: u64::from(u32::MAX),
        })?;
        self.u32(len);
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    /// u16 length + UTF-8. Text longer than the field can say is cut at a
    /// character boundary rather than sent as invalid UTF-8; callers keep
    /// their strings (addresses) far below that.
    pub(crate) fn string(&mut self, text: &str) {
        let mut len = text.len().min(usize::from(u16::MAX));
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        self.out.extend_from_slice(&(len as u16).to_be_bytes());
        self.out.extend_from_slice(&text.as_bytes()[..len]);
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
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
