//! The peer-secret layer (`--peer_secret`): a mutual challenge-response
//! before the handshake, then MACed records carrying the ordinary frames.
//!
//! The exchange, each message an `Auth` frame:
//!
//! 1. dialer → acceptor: `nonce_d` (32 fresh random bytes);
//! 2. acceptor → dialer: `nonce_a | proof_a...`, one `proof_a =
//!    HMAC(value, "acceptor" | nonce_d | nonce_a)` per value of its
//!    secret file, the current one first;
//! 3. dialer → acceptor: `proof_d = HMAC(value, "dialer" | nonce_d |
//!    nonce_a)` under the first of its own values that one of the
//!    acceptor's proofs matched.
//!
//! The labels bind each proof to its direction, so a proof cannot be
//! reflected; the fresh nonces make an old one useless. Two nodes that
//! share any value connect, in both directions, so a rolling restart from
//! `A` to `B\nA` to `B` never leaves a pair of nodes unable to talk.
//! Both then derive the connection key `HMAC(shared value, "key" |
//! nonce_d | nonce_a)`. After that, everything either side writes travels
//! in `Sealed` frames: `data | tag`, the tag being HMAC-SHA256 under the
//! connection key over `direction | sequence u64 | data`, truncated to 16
//! bytes. The sequence counts records per direction, so a record cannot be
//! forged, altered, replayed, dropped or reordered without the next check
//! failing. The handshake (cluster id, node id, addresses) is the first
//! sealed record each way, so it is authenticated too.
//!
//! Pure: the caller draws the nonces; no clock, no sockets.

use std::io::{self, Read, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::WireError;
use super::frame::{FRAME_PAYLOAD_BYTES_MAX, FrameKind, read_frame_capped, write_frame};
use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of each side's nonce.
pub const NONCE_BYTES: usize = 32;
const PROOF_BYTES: usize = 32;
/// Bytes of a record's tag (truncated HMAC-SHA256).
pub const TAG_BYTES: usize = 16;
/// Data bytes per sealed record; a record stays below the frame cap.
const RECORD_DATA_BYTES_MAX: usize = 256 << 10;
const _: () = assert!(RECORD_DATA_BYTES_MAX + TAG_BYTES <= FRAME_PAYLOAD_BYTES_MAX);

const LABEL_ACCEPTOR: &[u8] = b"ticketd peer v2 acceptor proof";
const LABEL_DIALER: &[u8] = b"ticketd peer v2 dialer proof";
const LABEL_KEY: &[u8] = b"ticketd peer v2 connection key";

/// Which end of a connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Dialer,
    Acceptor,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Dialer => 1,
            Role::Acceptor => 2,
        }
    }

    fn other(self) -> Role {
        match self {
            Role::Dialer => Role::Acceptor,
            Role::Acceptor => Role::Dialer,
        }
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts every key length"),
    };
    for part in parts {
        mac.update(part);
    }
    mac
}

fn proof(secret: &[u8], label: &[u8], nonce_d: &[u8], nonce_a: &[u8]) -> [u8; PROOF_BYTES] {
    mac(secret, &[label, nonce_d, nonce_a])
        .finalize()
        .into_bytes()
        .into()
}

/// The first of `secret`'s values whose proof is `given`, compared in
/// constant time.
fn verify_proof<'s>(
    secret: &'s Secret,
    label: &[u8],
    nonce_d: &[u8],
    nonce_a: &[u8],
    given: &[u8],
) -> Option<&'s [u8]> {
    secret.values().find(|value| {
        mac(value, &[label, nonce_d, nonce_a])
            .verify_slice(given)
            .is_ok()
    })
}

fn connection_key(secret: &[u8], nonce_d: &[u8], nonce_a: &[u8]) -> [u8; 32] {
    proof(secret, LABEL_KEY, nonce_d, nonce_a)
}

/// Proof exchange frames are tiny.
const AUTH_PAYLOAD_BYTES_MAX: usize = NONCE_BYTES + 2 * PROOF_BYTES;

fn read_auth<R: Read>(r: &mut R, lengths: &[usize]) -> Result<Vec<u8>, WireError> {
    let frame = read_frame_capped(r, AUTH_PAYLOAD_BYTES_MAX)?;
    if frame.kind != FrameKind::Auth {
        return Err(WireError::BadProof(
            "the peer sent no proof of the peer secret",
        ));
    }
    if !lengths.contains(&frame.payload.len()) {
        return Err(WireError::BadProof("malformed proof"));
    }
    Ok(frame.payload)
}

/// The dialer's side of the exchange on a fresh connection.
///
/// # Errors
/// `BadProof` if the acceptor does not prove one of our values; the
/// frame and stream errors otherwise.
pub fn authenticate_dialer<S: Read + Write>(
    stream: &mut S,
    secret: &Secret,
    nonce_d: [u8; NONCE_BYTES],
) -> Result<Session, WireError> {
    write_frame(stream, FrameKind::Auth, &nonce_d)?;
    stream.flush()?;
    let answer = read_auth(
        stream,
        &[NONCE_BYTES + PROOF_BYTES, NONCE_BYTES + 2 * PROOF_BYTES],
    )?;
    let (nonce_a, proofs) = answer.split_at(NONCE_BYTES);
    let shared = secret.values().find(|value| {
        proofs.chunks(PROOF_BYTES).any(|given| {
            mac(value, &[LABEL_ACCEPTOR, &nonce_d, nonce_a])
                .verify_slice(given)
                .is_ok()
        })
    });
    let Some(shared) = shared else {
        return Err(WireError::BadProof(
            "the peer does not know the peer secret",
        ));
    };
    let ours = proof(shared, LABEL_DIALER, &nonce_d, nonce_a);
    write_frame(stream, FrameKind::Auth, &ours)?;
    stream.flush()?;
    Ok(Session::new(
        connection_key(shared, &nonce_d, nonce_a),
        Role::Dialer,
    ))
}

/// The acceptor's side of the exchange on a fresh connection.
///
/// # Errors
/// `BadProof` if the first frame is not the dialer's nonce or the dialer
/// does not prove one of our values; the frame and stream errors
/// otherwise.
pub fn authenticate_acceptor<S: Read + Write>(
    stream: &mut S,
    secret: &Secret,
    nonce_a: [u8; NONCE_BYTES],
) -> Result<Session, WireError> {
    let nonce_d = read_auth(stream, &[NONCE_BYTES])?;
    let mut answer = Vec::with_capacity(AUTH_PAYLOAD_BYTES_MAX);
    answer.extend_from_slice(&nonce_a);
    for value in secret.values() {
        answer.extend_from_slice(&proof(value, LABEL_ACCEPTOR, &nonce_d, &nonce_a));
    }
    write_frame(stream, FrameKind::Auth, &answer)?;
    stream.flush()?;
    let proof_d = read_auth(stream, &[PROOF_BYTES])?;
    let Some(theirs) = verify_proof(secret, LABEL_DIALER, &nonce_d, &nonce_a, &proof_d) else {
        return Err(WireError::BadProof(
            "the peer does not know the peer secret",
        ));
    };
    Ok(Session::new(
        connection_key(theirs, &nonce_d, &nonce_a),
        Role::Acceptor,
    ))
}

/// One authenticated connection's key and sequence numbers. A clone for
/// each direction: a reader counts what it receives, a writer what it
/// sends.
#[derive(Clone)]
pub struct Session {
    key: [u8; 32],
    role: Role,
    sent: u64,
    received: u64,
}

impl Session {
    fn new(key: [u8; 32], role: Role) -> Session {
        Session {
            key,
            role,
            sent: 0,
            received: 0,
        }
    }

    fn tag(&self, direction: Role, sequence: u64, data: &[u8]) -> HmacSha256 {
        mac(
            &self.key,
            &[&[direction.byte()], &sequence.to_be_bytes(), data],
        )
    }

    /// `data | tag` for the next record we send.
    fn seal(&mut self, data: &[u8]) -> Vec<u8> {
        let tag = self.tag(self.role, self.sent, data).finalize().into_bytes();
        self.sent = self.sent.wrapping_add(1);
        let mut record = Vec::with_capacity(data.len() + TAG_BYTES);
        record.extend_from_slice(data);
        record.extend_from_slice(&tag[..TAG_BYTES]);
        record
    }

    /// Checks the next record we receive; returns its data.
    fn open(&mut self, mut record: Vec<u8>) -> Result<Vec<u8>, WireError> {
        let Some(split) = record.len().checked_sub(TAG_BYTES) else {
            return Err(WireError::BadMac);
        };
        let tag = record.split_off(split);
        self.tag(self.role.other(), self.received, &record)
            .verify_truncated_left(&tag)
            .map_err(|_| WireError::BadMac)?;
        self.received = self.received.wrapping_add(1);
        Ok(record)
    }
}

/// Buffers what is written and sends it, on `flush` or when the buffer is
/// full, as one `Sealed` record (or as is, without a session). Never
/// writes on drop: what is left unflushed is lost, as with a dead
/// connection.
pub struct SealedWriter<W: Write> {
    inner: W,
    session: Option<Session>,
    buffer: Vec<u8>,
}

impl<W: Write> SealedWriter<W> {
    pub fn new(inner: W, session: Option<Session>) -> SealedWriter<W> {
        SealedWriter {
            inner,
            session,
            buffer: Vec::new(),
        }
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buffer);
        match &mut self.session {
            None => self.inner.write_all(&data),
            Some(session) => {
                let record = session.seal(&data);
                write_frame(&mut self.inner, FrameKind::Sealed, &record).map_err(io::Error::from)
            }
        }
    }
}

impl<W: Write> Write for SealedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = RECORD_DATA_BYTES_MAX - self.buffer.len();
        let taken = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..taken]);
        if self.buffer.len() >= RECORD_DATA_BYTES_MAX {
            self.send_buffer()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()?;
        self.inner.flush()
    }
}

/// Reads `Sealed` records and serves their data once checked (or reads
/// the stream as is, without a session). No byte of a record is seen
/// before its tag is verified.
pub struct SealedReader<R: Read> {
    inner: R,
    session: Option<Session>,
    data: Vec<u8>,
    at: usize,
    /// The first error, kept so that every later read fails the same way.
    failed: bool,
}

impl<R: Read> SealedReader<R> {
    pub fn new(inner: R, session: Option<Session>) -> SealedReader<R> {
        SealedReader {
            inner,
            session,
            data: Vec::new(),
            at: 0,
            failed: false,
        }
    }

    /// The same stream state over another reader of the same stream
    /// (e.g. without the handshake's deadline).
    pub fn with_inner<T: Read>(self, inner: T) -> SealedReader<T> {
        SealedReader {
            inner,
            session: self.session,
            data: self.data,
            at: self.at,
            failed: self.failed,
        }
    }
}

impl<R: Read> Read for SealedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(session) = &mut self.session else {
            return self.inner.read(buf);
        };
        if self.failed {
            return Err(io::Error::other(WireError::BadMac));
        }
        while self.at >= self.data.len() {
            let frame = match read_frame_capped(&mut self.inner, RECORD_DATA_BYTES_MAX + TAG_BYTES)
            {
                Ok(frame) => frame,
                Err(WireError::Closed) => return Ok(0),
                Err(WireError::Io(err)) => return Err(err),
                Err(err) => {
                    self.failed = true;
                    return Err(io::Error::other(err));
                }
            };
            if frame.kind != FrameKind::Sealed {
                self.failed = true;
                return Err(io::Error::other(WireError::BadMac));
            }
            match session.open(frame.payload) {
                Ok(data) => {
                    self.data = data;
                    self.at = 0;
                }
                Err(err) => {
                    self.failed = true;
                    return Err(io::Error::other(err));
                }
            }
        }
        let n = buf.len().min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::read_frame;
    use std::collections::VecDeque;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    fn secret(text: &str) -> Secret {
        Secret::parse(text, 16).unwrap()
    }

    /// Runs both sides of the exchange over in-memory pipes, acceptor on
    /// a thread.
    fn exchange(
        dialer: &Secret,
        acceptor: &Secret,
    ) -> (Result<Session, WireError>, Result<Session, WireError>) {
        let (d_end, a_end) = pipe_pair();
        let acceptor = acceptor.clone();
        let handle = std::thread::spawn(move || {
            let mut a_end = a_end;
            authenticate_acceptor(&mut a_end, &acceptor, [2; NONCE_BYTES])
        });
        let mut d_end = d_end;
        let d = authenticate_dialer(&mut d_end, dialer, [1; NONCE_BYTES]);
        drop(d_end);
        (d, handle.join().unwrap())
    }

    /// Two in-memory byte pipes, one per direction.
    struct End {
        tx: std::sync::mpsc::Sender<Vec<u8>>,
        rx: std::sync::mpsc::Receiver<Vec<u8>>,
        pending: VecDeque<u8>,
    }

    fn pipe_pair() -> (End, End) {
        let (tx1, rx1) = std::sync::mpsc::channel();
        let (tx2, rx2) = std::sync::mpsc::channel();
        (
            End {
                tx: tx1,
                rx: rx2,
                pending: VecDeque::new(),
            },
            End {
                tx: tx2,
                rx: rx1,
                pending: VecDeque::new(),
            },
        )
    }

    impl Write for End {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.tx.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Read for End {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            while self.pending.is_empty() {
                match self.rx.recv() {
                    Ok(bytes) => self.pending.extend(bytes),
                    Err(_) => return Ok(0),
                }
            }
            let n = buf.len().min(self.pending.len());
            for slot in &mut buf[..n] {
                *slot = self.pending.pop_front().unwrap_or(0);
            }
            Ok(n)
        }
    }

    /// Reads from a script, writes elsewhere.
    struct Duplex<'a>(&'a [u8], Vec<u8>);

    impl Read for Duplex<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl Write for Duplex<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.1.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn sessions() -> (Session, Session) {
        let (d, a) = exchange(&secret(A), &secret(A));
        (d.unwrap(), a.unwrap())
    }

    /// Seals each of `records` from the dialer, as the frames on the wire.
    fn sealed_records(session: Session, records: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut out = Vec::new();
        let mut writer = SealedWriter::new(&mut out, Some(session));
        for record in records {
            writer.write_all(record).unwrap();
            writer.flush().unwrap();
        }
        drop(writer);
        let mut reader = &out[..];
        while let Ok(frame) = read_frame(&mut reader) {
            let mut bytes = Vec::new();
            write_frame(&mut bytes, frame.kind, &frame.payload).unwrap();
            frames.push(bytes);
        }
        frames
    }

    fn read_all(session: Session, wire: &[u8]) -> Result<Vec<u8>, io::Error> {
        let mut reader = SealedReader::new(wire, Some(session));
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn same_secret_authenticates_and_records_round_trip() {
        let (d, a) = sessions();
        let frames = sealed_records(d, &[b"first frame", b"second", b"third"]);
        assert_eq!(frames.len(), 3);
        assert_eq!(
            read_all(a, &frames.concat()).unwrap(),
            b"first framesecondthird"
        );
    }

    #[test]
    fn wrong_secret_is_refused_both_ways() {
        let (d, a) = exchange(&secret(A), &secret(B));
        assert!(matches!(d, Err(WireError::BadProof(_))), "{:?}", d.err());
        // The dialer gave up before proving: the acceptor sees no proof.
        assert!(a.is_err());
    }

    #[test]
    fn rotation_accepts_either_value() {
        let old = secret(A);
        let both = secret(&format!("{B}\n{A}\n"));
        let new = secret(B);
        for (dialer, acceptor) in [(&old, &both), (&both, &old), (&both, &new), (&new, &both)] {
            let (d, a) = exchange(dialer, acceptor);
            let (d, a) = (d.unwrap(), a.unwrap());
            let frames = sealed_records(d, &[b"x"]);
            assert_eq!(read_all(a, &frames.concat()).unwrap(), b"x");
        }
        // No value in common: refused.
        let (d, _) = exchange(&old, &new);
        assert!(d.is_err());
        let (d, _) = exchange(&new, &old);
        assert!(d.is_err());
    }

    #[test]
    fn a_missing_proof_is_refused() {
        // A plain handshake frame instead of the nonce.
        let mut wire = Vec::new();
        write_frame(&mut wire, FrameKind::Handshake, b"hello").unwrap();
        let mut stream = Duplex(&wire[..], Vec::new());
        let result = authenticate_acceptor(&mut stream, &secret(A), [2; NONCE_BYTES]);
        assert!(matches!(result, Err(WireError::BadProof(_))));
    }

    #[test]
    fn a_reflected_proof_is_refused() {
        // An attacker dials, gets the acceptor's proof over its own nonce
        // and the acceptor's, and sends it back as its own.
        let secret = secret(A);
        let nonce_d = [9u8; NONCE_BYTES];
        let nonce_a = [2u8; NONCE_BYTES];
        let reflected = proof(secret.current(), LABEL_ACCEPTOR, &nonce_d, &nonce_a);
        let mut wire = Vec::new();
        write_frame(&mut wire, FrameKind::Auth, &nonce_d).unwrap();
        write_frame(&mut wire, FrameKind::Auth, &reflected).unwrap();
        let mut stream = Duplex(&wire[..], Vec::new());
        let result = authenticate_acceptor(&mut stream, &secret, nonce_a);
        assert!(matches!(result, Err(WireError::BadProof(_))));
        // The honest proof over the same nonces passes.
        let honest = proof(secret.current(), LABEL_DIALER, &nonce_d, &nonce_a);
        let mut wire = Vec::new();
        write_frame(&mut wire, FrameKind::Auth, &nonce_d).unwrap();
        write_frame(&mut wire, FrameKind::Auth, &honest).unwrap();
        let mut stream = Duplex(&wire[..], Vec::new());
        assert!(authenticate_acceptor(&mut stream, &secret, nonce_a).is_ok());
    }

    #[test]
    fn tampered_replayed_reordered_and_unsealed_frames_are_refused() {
        let records: [&[u8]; 3] = [b"one", b"two", b"three"];
        let (d, a) = sessions();
        let frames = sealed_records(d, &records);
        let _ = a;
        let check = |wire: Vec<u8>, what: &str| {
            let (d, a) = sessions();
            // Same nonces every run, so the same key: the frames fit.
            let _ = d;
            let result = read_all(a, &wire);
            assert!(result.is_err(), "{what} passed: {result:?}");
        };
        let mut tampered = frames.clone();
        // Flip a data byte and re-frame, so that the crc is valid and it is
        // the MAC that catches it.
        let mut payload = tampered[1][crate::wire::HEADER_BYTES..].to_vec();
        payload[0] ^= 1;
        let mut refreshed = Vec::new();
        write_frame(&mut refreshed, FrameKind::Sealed, &payload).unwrap();
        tampered[1] = refreshed;
        check(tampered.concat(), "a tampered frame");
        check(
            [frames[0].clone(), frames[0].clone()].concat(),
            "a replayed frame",
        );
        check(
            [frames[1].clone(), frames[0].clone()].concat(),
            "a reordered frame",
        );
        check(frames[1..].concat(), "a dropped frame");
        let mut plain = Vec::new();
        write_frame(&mut plain, FrameKind::Message, b"forged").unwrap();
        check(plain, "an unsealed frame");
        // A record sealed by the acceptor is not one from the dialer.
        let (_, a) = sessions();
        let mut out = Vec::new();
        let mut writer = SealedWriter::new(&mut out, Some(a));
        writer.write_all(b"one").unwrap();
        writer.flush().unwrap();
        drop(writer);
        check(out, "a reflected frame");
        // Untouched, they pass.
        let (_, a) = sessions();
        assert_eq!(read_all(a, &frames.concat()).unwrap(), b"onetwothree");
    }
}
