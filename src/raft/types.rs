//! The values the Raft core exchanges with its driver: entries, hard state,
//! snapshots, membership, messages and errors. Plain data, no behaviour
//! beyond small helpers; the wire codecs live in `crate::wire`.

use std::collections::BTreeMap;
use std::fmt;

/// A node's identity inside one cluster. Never 0 (0 means "none").
pub type NodeId = u64;
/// A Raft term. Never decreases on a node, and never exceeds [`TERM_MAX`].
pub type Term = u64;

/// The largest term a node takes or campaigns in. A message naming a
/// later term is dropped (and refused by the wire decoder), so no peer
/// can push a node to a term from which `term + 1` would wrap; 2^63
/// elections are more than any cluster will hold.
pub const TERM_MAX: Term = (1 << 63) - 1;

/// The largest log index a message may name, for the same reason: no
/// `index + 1` on a position a peer sent can wrap.
pub const INDEX_MAX: LogIndex = (1 << 63) - 1;
/// A position in the replicated log; the first entry has index 1.
pub type LogIndex = u64;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Application command, opaque to the core.
    Normal,
    /// A full membership (`Membership::encode`), in force from the moment
    /// it is appended.
    Config,
    /// The empty entry a new leader appends to commit its term.
    Noop,
}

impl EntryKind {
    /// The kind's byte on the wire and on disk.
    pub fn to_u8(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::Config => 1,
            EntryKind::Noop => 2,
        }
    }

    /// Parses the byte written by [`EntryKind::to_u8`].
    pub fn from_u8(byte: u8) -> Option<EntryKind> {
        match byte {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Config),
            2 => Some(EntryKind::Noop),
            _ => None,
        }
    }
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub kind: EntryKind,
    pub data: Vec<u8>,
}

/// The state Raft must find again after a crash (Figure 2 "persistent
/// state", plus the commit index, which may lag without harm).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    /// Who this node voted for in `term` (0: nobody).
    pub vote: NodeId,
    pub commit: LogIndex,
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Voters count towards quorums; learners only receive the log.
    pub voter: bool,
    /// Address peers connect to (`host:port`).
    pub peer_addr: String,
    /// Address clients are redirected to (`host:port`); empty when not
    /// known yet (a statically configured peer announces it in its
    /// handshake).
    pub http_addr: String,
}

/// A whole cluster configuration. Stored in full in every `Config` entry
/// so that a configuration never depends on the entries before it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub members: BTreeMap<NodeId, Member>,
}

impl Membership {
    /// The voting members, ascending.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.voter)
            .map(|(id, _)| *id)
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters().count() / 2 + 1
    }

    /// Whether `id` is a voter here.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|m| m.voter)
    }

    /// Whether `id` is a member (voter or learner) here.
    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    /// Binary form, big-endian: count u32, then per member id u64,
    /// voter u8, and the two addresses as u16 length + UTF-8 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.members.len() as u32).to_be_bytes());
        for (id, member) in &self.members {
            out.extend_from_slice(&id.to_be_bytes());
            out.push(u8::from(member.voter));
            for text in [&member.peer_addr, &member.http_addr] {
                let bytes = text.as_bytes();
                let len = bytes.len().min(u16::MAX as usize);
                out.extend_from_slice(&(len as u16).to_be_bytes());
                out.extend_from_slice(&bytes[..len]);
            }
        }
        out
    }

    /// Parses [`Membership::encode`]'s output.
    ///
    /// # Errors
    /// `DecodeMembershipError` on truncated or malformed input.
    pub fn decode(bytes: &[u8]) -> Result<Membership, DecodeMembershipError> {
        let mut cursor = bytes;
        let count = take_u32(&mut cursor)?;
        if count as usize > bytes.len() / 12 + 1 {
            return Err(DecodeMembershipError);
        }
        let mut members = BTreeMap::new();
        for _ in 0..count {
            let id = take_u64(&mut cursor)?;
            let voter = match take_bytes(&mut cursor, 1)?[0] {
                0 => false,
                1 => true,
                _ => return Err(DecodeMembershipError),
            };
            let peer_addr = take_string(&mut cursor)?;
            let http_addr = take_string(&mut cursor)?;
            if id == 0 || members.contains_key(&id) {
                return Err(DecodeMembershipError);
            }
            members.insert(
                id,
                Member {
                    voter,
                    peer_addr,
                    http_addr,
                },
            );
        }
        if !cursor.is_empty() {
            return Err(DecodeMembershipError);
        }
        Ok(Membership { members })
    }
}

fn take_bytes<'a>(cursor: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeMembershipError> {
    if cursor.len() < n {
        return Err(DecodeMembershipError);
    }
    let (head, tail) = cursor.split_at(n);
    *cursor = tail;
    Ok(head)
}

fn take_u32(cursor: &mut &[u8]) -> Result<u32, DecodeMembershipError> {
    let b = take_bytes(cursor, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn take_u64(cursor: &mut &[u8]) -> Result<u64, DecodeMembershipError> {
    let b = take_bytes(cursor, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_be_bytes(a))
}

fn take_string(cursor: &mut &[u8]) -> Result<String, DecodeMembershipError> {
    let b = take_bytes(cursor, 2)?;
    let len = u16::from_be_bytes([b[0], b[1]]) as usize;
    let text = take_bytes(cursor, len)?;
    String::from_utf8(text.to_vec()).map_err(|_| DecodeMembershipError)
}

/// A membership record that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeMembershipError;

impl fmt::Display for DecodeMembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed membership record")
    }
}

impl std::error::Error for DecodeMembershipError {}

/// Where a snapshot stands in the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last index the snapshot covers (0: the empty initial state).
    pub index: LogIndex,
    pub term: Term,
    /// The membership in force at `index`.
    pub membership: Membership,
}

/// The application state at `meta.index`, opaque to the core.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// A message between two nodes of one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    pub body: MessageBody,
}

/// The kinds of messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// RequestVote. `pre` asks only whether the vote would be granted,
    /// without anyone changing term. `force` is set by a leadership
    /// transfer and overrides the voters' leader stickiness.
    Vote {
        pre: bool,
        force: bool,
        last_index: LogIndex,
        last_term: Term,
    },
    /// The answer to `Vote`.
    VoteResponse { pre: bool, granted: bool },
    /// AppendEntries; with no entries, a heartbeat. `lease_tick` is the
    /// leader's clock when sent, echoed back to measure the lease.
    /// `transfer_to` announces a leadership transfer under way to that
    /// node (0: none): only then do followers honour its forced vote.
    Append {
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
        lease_tick: u64,
        transfer_to: NodeId,
    },
    /// The answer to `Append` or `Snapshot`. On success `index` is the
    /// follower's match; on failure it is the rejected `prev_index`, and
    /// `hint_index`/`hint_term` say where the follower's log diverges.
    AppendResponse {
        success: bool,
        index: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
        lease_tick: u64,
    },
    /// InstallSnapshot. The transport chunks it on the wire.
    Snapshot { snapshot: Snapshot, lease_tick: u64 },
    /// Leadership transfer: start an election now.
    TimeoutNow,
}

/// A change of membership, one server at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// Add a non-voting member; the leader promotes it once it has caught up.
    AddLearner {
        id: NodeId,
        peer_addr: String,
        http_addr: String,
    },
    /// Make a learner a voter.
    Promote { id: NodeId },
    /// Remove a member (voter or learner).
    Remove { id: NodeId },
}

/// This node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    /// Lower-case name, for status pages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// Why a proposal was refused. A refused proposal is never in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader takes proposals; `leader` is the known leader (0: none).
    NotLeader { leader: NodeId },
    /// A leadership transfer is under way.
    Transferring,
    /// A membership change is not yet committed (one at a time), or the
    /// leader has not committed an entry of its term yet.
    ConfChangePending,
    /// The membership change makes no sense (unknown member, already a
    /// member, removing the last voter, ...).
    BadConfChange(String),
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader { leader: 0 } => write!(f, "not leader, no leader known"),
            ProposeError::NotLeader { leader } => write!(f, "not leader, leader is node {leader}"),
            ProposeError::Transferring => write!(f, "leadership transfer in progress"),
            ProposeError::ConfChangePending => {
                write!(f, "another membership change is in progress")
            }
            ProposeError::BadConfChange(why) => write!(f, "bad membership change: {why}"),
        }
    }
}

impl std::error::Error for ProposeError {}

/// A [`crate::raft::Config`] or persisted state the core cannot run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid raft configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Why [`crate::raft::Raft::compact`] refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompactError {
    /// The index is at or below the current snapshot.
    AlreadyCompacted,
    /// The index has not been applied yet.
    NotApplied,
    /// The snapshot's term or membership is not the log's at its index.
    Mismatch,
}

impl fmt::Display for CompactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompactError::AlreadyCompacted => write!(f, "index already compacted"),
            CompactError::NotApplied => write!(f, "index not applied yet"),
            CompactError::Mismatch => write!(f, "the snapshot does not match the log"),
        }
    }
}

impl std::error::Error for CompactError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_round_trips_and_rejects_garbage() {
        let mut m = Membership::default();
        m.members.insert(
            1,
            Member {
                voter: true,
                peer_addr: "127.0.0.1:9001".into(),
                http_addr: "127.0.0.1:8001".into(),
            },
        );
        m.members.insert(
            7,
            Member {
                voter: false,
                peer_addr: "h:1".into(),
                http_addr: String::new(),
            },
        );
        let bytes = m.encode();
        assert_eq!(Membership::decode(&bytes), Ok(m));
        for cut in 0..bytes.len() {
            assert!(Membership::decode(&bytes[..cut]).is_err());
        }
        assert!(Membership::decode(&[0xff; 64]).is_err());
    }
}
