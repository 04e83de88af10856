//! The handshake payload: the first frame each way on a peer connection.

use super::WireError;
use super::codec::{Decoder, Encoder};
use crate::raft::NodeId;

/// The largest handshake payload [`Handshake::encode`] can produce: two
/// u64 and two strings of at most `u16::MAX` bytes.
pub const HANDSHAKE_PAYLOAD_BYTES_MAX: usize = 8 + 8 + 2 * (2 + u16::MAX as usize);

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
}

impl Handshake {
    /// `cluster_id u64 | node_id u64 | peer_addr | http_addr`, each address
    /// a u16 length + UTF-8.
    pub fn encode(&self) -> Vec<u8> {
        let mut enc = Encoder::with_capacity(20 + self.peer_addr.len() + self.http_addr.len());
        enc.u64(self.cluster_id);
        enc.u64(self.node_id);
        enc.string(&self.peer_addr);
        enc.string(&self.http_addr);
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
            },
            Handshake {
                cluster_id: 0,
                node_id: 1,
                peer_addr: String::new(),
                http_addr: String::new(),
            },
        ] {
            let bytes = handshake.encode();
            assert_eq!(Handshake::decode(&bytes).unwrap(), handshake);
            for cut in 0..bytes.len() {
                assert!(Handshake::decode(&bytes[..cut]).is_err());
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(Handshake::decode(&long).is_err());
        }
    }
}
