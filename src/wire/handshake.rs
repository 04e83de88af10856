//! The handshake payload: the first frame each way on a peer connection.

use super::WireError;
use super::codec::{Decoder, Encoder};
use crate::raft::NodeId;

/// The largest handshake payload [`Handshake::encode`] can produce: three
/// u64 and two strings of at most `u16::MAX` bytes.
pub const HANDSHAKE_PAYLOAD_BYTES_MAX: usize = 8 + 8 + 2 * (2 + u16::MAX as usize) + 8;

/// Who is on the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// The sender's cluster (0: the sender does not know it yet).
    pub cluster_id: u64,
    pub node_id: NodeId,
    /// Where the sender listens for peers (`host:port`).
    pub peer_addr: String,
    /// Where the sender serves clients (`host:port`), so that followers can
    /// redirect to a leader they only know by id.
    pub http_addr: String,
    /// The random number the sender's data directory drew when it was
    /// bootstrapped (0: not known, a data directory made before it was
    /// recorded). A peer whose
    /// log records another one for this node id refuses the connection:
    /// the sender lost its data.
    pub incarnation: u64,
}

impl Handshake {
    /// `cluster_id u64 | node_id u64 | peer_addr | http_addr |
    /// incarnation u64`, each address a u16 length + UTF-8. (Builds before
    /// protocol version 2 sent no incarnation; they are refused by the
    /// version check before any handshake, so no shorter form is read.)
    pub fn encode(&self) -> Vec<u8> {
        let mut enc = Encoder::with_capacity(28 + self.peer_addr.len() + self.http_addr.len());
        enc.u64(self.cluster_id);
        enc.u64(self.node_id);
        enc.string(&self.peer_addr);
        enc.string(&self.http_addr);
        enc.u64(self.incarnation);
        enc.finish()
    }

    /// Parses [`Handshake::encode`]'s output.
    ///
    /// # Errors
    /// [`WireError::Malformed`] on truncation, bad UTF-8 or trailing bytes.
    pub fn decode(payload: &[u8]) -> Result<Handshake, WireError> {
        let mut dec = Decoder::new(payload);
        let handshake = Handshake {
            cluster_id: dec.u64("handshake cluster id")?,
            node_id: dec.u64("handshake node id")?,
            peer_addr: dec.string("handshake peer address")?,
            http_addr: dec.string("handshake http address")?,
            incarnation: dec.u64("handshake incarnation")?,
        };
        dec.finish()?;
        Ok(handshake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_every_truncation() {
        for handshake in [
            Handshake {
                cluster_id: 0x1234_5678_9abc_def0,
                node_id: 3,
                peer_addr: "127.0.0.1:9003".into(),
                http_addr: "127.0.0.1:8003".into(),
                incarnation: 0x0bad_cafe,
            },
            Handshake {
                cluster_id: 0,
                node_id: 1,
                peer_addr: String::new(),
                http_addr: String::new(),
                incarnation: 0,
            },
        ] {
            let bytes = handshake.encode();
            assert_eq!(Handshake::decode(&bytes).unwrap(), handshake);
            // Every truncation is refused, the old form without the
            // incarnation included.
            for cut in 0..bytes.len() {
                assert!(Handshake::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(Handshake::decode(&long).is_err());
        }
    }
}

/// Why a peer refused a connection, sent as a `Refusal` frame instead of
/// its handshake so that the other side can act on it, not just retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefusalReason,
    /// Says what to do, for the refused node's log.
    pub message: String,
}

/// What a [`Refusal`] means for the refused node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// The node was removed from the cluster: it should stop for good.
    Removed,
    /// The node's data directory is not the one the cluster knows under
    /// its id (it was wiped, or bootstrapped again): it must not take
    /// part until it is removed and joins as a new member.
    DataLost,
}

impl Refusal {
    /// `reason u8 | message` (u16 length + UTF-8).
    pub fn encode(&self) -> Vec<u8> {
        let mut enc = Encoder::with_capacity(3 + self.message.len());
        enc.u8(match self.reason {
            RefusalReason::Removed => 1,
            RefusalReason::DataLost => 2,
        });
        enc.string(&self.message);
        enc.finish()
    }

    /// Parses [`Refusal::encode`]'s output.
    ///
    /// # Errors
    /// [`WireError::Malformed`] on an unknown reason, truncation, bad
    /// UTF-8 or trailing bytes.
    pub fn decode(payload: &[u8]) -> Result<Refusal, WireError> {
        let mut dec = Decoder::new(payload);
        let reason = match dec.u8("refusal reason")? {
            1 => RefusalReason::Removed,
            2 => RefusalReason::DataLost,
            _ => return Err(WireError::Malformed("refusal reason")),
        };
        let message = dec.string("refusal message")?;
        dec.finish()?;
        Ok(Refusal { reason, message })
    }
}

#[cfg(test)]
mod refusal_tests {
    use super::*;

    #[test]
    fn refusals_round_trip_and_reject_garbage() {
        for reason in [RefusalReason::Removed, RefusalReason::DataLost] {
            let refusal = Refusal {
                reason,
                message: "node 3 was removed".into(),
            };
            let bytes = refusal.encode();
            assert_eq!(Refusal::decode(&bytes).unwrap(), refusal);
            for cut in 0..bytes.len() {
                assert!(Refusal::decode(&bytes[..cut]).is_err());
            }
        }
        assert!(Refusal::decode(&[9, 0, 0]).is_err());
    }
}
