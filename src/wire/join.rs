//! The join and leave exchanges: a node that is not a member yet
//! (`ticketd join`) opens a peer connection, sends a handshake with
//! cluster id 0 and node id 0, then one `JoinRequest`; the member answers
//! one `JoinAnswer` and closes. A member that leaves (`ticketd leave`)
//! does the same with a `LeaveRequest` to its leader. Nothing else
//! travels on such a connection.

use super::WireError;
use super::codec::{Decoder, Encoder};
use crate::raft::NodeId;

/// The largest join payload: two strings of at most `u16::MAX` bytes and
/// a few numbers.
pub const JOIN_PAYLOAD_BYTES_MAX: usize = 2 * (2 + u16::MAX as usize) + 3 * 8 + 1;

/// "Admit me": what the joining node says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    /// Where the joiner listens for peers.
    pub peer_addr: String,
    /// Where it serves clients.
    pub http_addr: String,
    /// Its new data directory's incarnation: a retry of the same request
    /// carries the same one, so that it gets the same id back.
    pub incarnation: u64,
    /// `--id N`, or 0 for "any id never used".
    pub wanted_id: NodeId,
}

/// "Remove me": a member asks its leader to remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaveRequest {
    pub node_id: NodeId,
    /// The member's data directory's incarnation, which the log records:
    /// a node may only ask for its own removal.
    pub incarnation: u64,
}

impl LeaveRequest {
    /// `node_id u64 | incarnation u64`.
    pub fn encode(&self) -> Vec<u8> {
        let mut enc = Encoder::with_capacity(16);
        enc.u64(self.node_id);
        enc.u64(self.incarnation);
        enc.finish()
    }

    /// Parses [`LeaveRequest::encode`]'s output.
    ///
    /// # Errors
    /// [`WireError::Malformed`] on truncation or trailing bytes.
    pub fn decode(payload: &[u8]) -> Result<LeaveRequest, WireError> {
        let mut dec = Decoder::new(payload);
        let request = LeaveRequest {
            node_id: dec.u64("leave node id")?,
            incarnation: dec.u64("leave incarnation")?,
        };
        dec.finish()?;
        Ok(request)
    }
}

/// What a node that is not (or no longer wants to be) a member asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberRequest {
    Join(JoinRequest),
    Leave(LeaveRequest),
}

/// The member's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinAnswer {
    /// The leader committed the joiner as a learner with this id.
    Admitted { cluster_id: u64, node_id: NodeId },
    /// Not the leader: ask the member at this peer address.
    AskLeader { peer_addr: String },
    /// Not admitted (or not removed); `retry` when it may work a little
    /// later (a change in progress, no leader yet), else it never will as
    /// asked.
    Refused { retry: bool, message: String },
    /// A leave request: the removal is proposed (or done); the node learns
    /// that it is committed through the log, as any removed member.
    Leaving,
}

impl JoinRequest {
    /// `peer_addr | http_addr | incarnation u64 | wanted_id u64`.
    pub fn encode(&self) -> Vec<u8> {
        let mut enc = Encoder::with_capacity(20 + self.peer_addr.len() + self.http_addr.len());
        enc.string(&self.peer_addr);
        enc.string(&self.http_addr);
        enc.u64(self.incarnation);
        enc.u64(self.wanted_id);
        enc.finish()
    }

    /// Parses [`JoinRequest::encode`]'s output.
    ///
    /// # Errors
    /// [`WireError::Malformed`] on truncation, bad UTF-8 or trailing bytes.
    pub fn decode(payload: &[u8]) -> Result<JoinRequest, WireError> {
        let mut dec = Decoder::new(payload);
        let request = JoinRequest {
            peer_addr: dec.string("join peer address")?,
            http_addr: dec.string("join http address")?,
            incarnation: dec.u64("join incarnation")?,
            wanted_id: dec.u64("join wanted id")?,
        };
        dec.finish()?;
        Ok(request)
    }
}

impl JoinAnswer {
    /// `kind u8 | fields`: 1 admitted (`cluster_id u64 | node_id u64`),
    /// 2 ask the leader (`peer_addr`), 3 refused (`retry bool | message`),
    /// 4 leaving.
    pub fn encode(&self) -> Vec<u8> {
        let mut enc = Encoder::with_capacity(32);
        match self {
            JoinAnswer::Admitted {
                cluster_id,
                node_id,
            } => {
                enc.u8(1);
                enc.u64(*cluster_id);
                enc.u64(*node_id);
            }
            JoinAnswer::AskLeader { peer_addr } => {
                enc.u8(2);
                enc.string(peer_addr);
            }
            JoinAnswer::Refused { retry, message } => {
                enc.u8(3);
                enc.bool(*retry);
                enc.string(message);
            }
            JoinAnswer::Leaving => enc.u8(4),
        }
        enc.finish()
    }

    /// Parses [`JoinAnswer::encode`]'s output.
    ///
    /// # Errors
    /// [`WireError::Malformed`] on an unknown kind, a zero id, truncation,
    /// bad UTF-8 or trailing bytes.
    pub fn decode(payload: &[u8]) -> Result<JoinAnswer, WireError> {
        let mut dec = Decoder::new(payload);
        let answer = match dec.u8("join answer kind")? {
            1 => {
                let cluster_id = dec.u64("join cluster id")?;
                let node_id = dec.u64("join node id")?;
                if cluster_id == 0 || node_id == 0 {
                    return Err(WireError::Malformed("join answer with a zero id"));
                }
                JoinAnswer::Admitted {
                    cluster_id,
                    node_id,
                }
            }
            2 => JoinAnswer::AskLeader {
                peer_addr: dec.string("join leader address")?,
            },
            3 => JoinAnswer::Refused {
                retry: dec.bool("join retry")?,
                message: dec.string("join refusal")?,
            },
            4 => JoinAnswer::Leaving,
            _ => return Err(WireError::Malformed("join answer kind")),
        };
        dec.finish()?;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip_and_reject_every_truncation() {
        let request = JoinRequest {
            peer_addr: "127.0.0.1:9004".into(),
            http_addr: "127.0.0.1:8004".into(),
            incarnation: 0xfeed,
            wanted_id: 7,
        };
        let bytes = request.encode();
        assert!(bytes.len() <= JOIN_PAYLOAD_BYTES_MAX);
        assert_eq!(JoinRequest::decode(&bytes).unwrap(), request);
        for cut in 0..bytes.len() {
            assert!(JoinRequest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for answer in [
            JoinAnswer::Admitted {
                cluster_id: 9,
                node_id: 4,
            },
            JoinAnswer::AskLeader {
                peer_addr: "h:1".into(),
            },
            JoinAnswer::Refused {
                retry: true,
                message: "another membership change is in progress".into(),
            },
            JoinAnswer::Leaving,
        ] {
            let bytes = answer.encode();
            assert_eq!(JoinAnswer::decode(&bytes).unwrap(), answer);
            for cut in 0..bytes.len() {
                assert!(JoinAnswer::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(JoinAnswer::decode(&long).is_err());
        }
        assert!(JoinAnswer::decode(&[9]).is_err());
        let leave = LeaveRequest {
            node_id: 3,
            incarnation: 0xbeef,
        };
        let bytes = leave.encode();
        assert_eq!(LeaveRequest::decode(&bytes).unwrap(), leave);
        for cut in 0..bytes.len() {
            assert!(LeaveRequest::decode(&bytes[..cut]).is_err());
        }
        let zero = JoinAnswer::Admitted {
            cluster_id: 0,
            node_id: 4,
        };
        assert!(JoinAnswer::decode(&zero.encode()).is_err());
    }
}
