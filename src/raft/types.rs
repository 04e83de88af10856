//! The values the Raft core exchanges with its driver: entries, hard state,
//! snapshots, membership, messages and errors. Plain data, no behaviour
//! beyond small helpers; the wire codecs live in `crate::wire`.

use crate::bytes::{DecodeError, Reader, Writer};
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
    /// handshake, and the leader publishes it: `ConfChange::SetAttributes`).
    pub http_addr: String,
    /// The random number this member's data directory drew when it was
    /// bootstrapped (0: not published yet). A node that comes back with
    /// another one lost its data and is refused by its peers.
    pub incarnation: u64,
}

/// A whole cluster configuration. Stored in full in every `Config` entry
/// so that a configuration never depends on the entries before it.
/// Two memberships are equal when their members and [`Membership::max_id`]
/// are.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    pub members: BTreeMap<NodeId, Member>,
    /// The highest node id ever assigned in this cluster: new members get
    /// ids above it, so an id is never reused, even after its member was
    /// removed. Read it through [`Membership::max_id`], which also counts
    /// the members (a membership built by hand may leave this 0).
    pub max_id: NodeId,
}

impl PartialEq for Membership {
    fn eq(&self, other: &Membership) -> bool {
        self.members == other.members && self.max_id() == other.max_id()
    }
}

impl Eq for Membership {}

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

    /// The highest node id ever assigned: at least every member's id.
    pub fn max_id(&self) -> NodeId {
        let largest = self.members.keys().next_back().copied().unwrap_or(0);
        self.max_id.max(largest)
    }

    /// Whether `id` belonged to this cluster once and was removed: ids
    /// are never reused, so such a node can never come back.
    pub fn was_removed(&self, id: NodeId) -> bool {
        id != 0 && id <= self.max_id() && !self.contains(id)
    }

    /// Binary form, big-endian: count u32, then per member id u64,
    /// voter u8, and the two addresses as u16 length + UTF-8 bytes; then
    /// the extension: `max_id` u64 and each member's incarnation u64, in
    /// id order. The first format had no extension; [`Membership::decode`]
    /// still reads it (`max_id` is then the largest member id, every
    /// incarnation 0), so data directories and logs written before stay
    /// readable.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Writer::new();
        out.len(self.members.len());
        for (id, member) in &self.members {
            out.u64(*id);
            out.bool(member.voter);
            out.str16(&member.peer_addr);
            out.str16(&member.http_addr);
        }
        out.u64(self.max_id());
        for member in self.members.values() {
            out.u64(member.incarnation);
        }
        out.into_bytes()
    }

    /// Parses [`Membership::encode`]'s output.
    ///
    /// # Errors
    /// `DecodeMembershipError` on truncated or malformed input.
    pub fn decode(bytes: &[u8]) -> Result<Membership, DecodeMembershipError> {
        let mut cursor = Reader::new(bytes);
        // Each member takes at least 13 bytes: id, voter, two lengths.
        let count = cursor.count(13)?;
        let mut members = BTreeMap::new();
        for _ in 0..count {
            let id = cursor.u64()?;
            let voter = cursor.bool()?;
            let peer_addr = cursor.str16()?;
            let http_addr = cursor.str16()?;
            if id == 0 || members.contains_key(&id) {
                return Err(DecodeMembershipError);
            }
            members.insert(
                id,
                Member {
                    voter,
                    peer_addr,
                    http_addr,
                    incarnation: 0,
                },
            );
        }
        let largest = members.keys().next_back().copied().unwrap_or(0);
        if cursor.is_empty() {
            // The first format: no extension.
            return Ok(Membership {
                members,
                max_id: largest,
            });
        }
        let max_id = cursor.u64()?;
        if max_id < largest {
            return Err(DecodeMembershipError);
        }
        for member in members.values_mut() {
            member.incarnation = cursor.u64()?;
        }
        cursor.finish()?;
        Ok(Membership { members, max_id })
    }
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

impl From<DecodeError> for DecodeMembershipError {
    fn from(_: DecodeError) -> DecodeMembershipError {
        DecodeMembershipError
    }
}

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
    /// Record what a member announces about itself: where it serves
    /// clients and its data directory's incarnation. Proposed by the
    /// leader when a member's authenticated connection announces values
    /// that differ from the log's (etcd publishes client URLs the same
    /// way); redirects use only what is recorded here.
    SetAttributes {
        id: NodeId,
        http_addr: String,
        incarnation: u64,
    },
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
    /// This node does not know the membership at that index: it joined
    /// with an empty configuration and caught up through the log, whose
    /// first configuration entry comes later (the cluster's first
    /// membership is in its bootstrap snapshot, not in the log).
    MembershipUnknown,
}

impl fmt::Display for CompactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompactError::AlreadyCompacted => write!(f, "index already compacted"),
            CompactError::NotApplied => write!(f, "index not applied yet"),
            CompactError::Mismatch => write!(f, "the snapshot does not match the log"),
            CompactError::MembershipUnknown => {
                write!(f, "the membership at that index is not known here yet")
            }
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
                incarnation: 0xfeed,
            },
        );
        m.members.insert(
            7,
            Member {
                voter: false,
                peer_addr: "h:1".into(),
                http_addr: String::new(),
                incarnation: 0,
            },
        );
        m.max_id = 9;
        let bytes = m.encode();
        assert_eq!(Membership::decode(&bytes), Ok(m.clone()));
        // Cutting the extension short is an error; cutting it off whole is
        // the first format, which still parses.
        let first_format_len = bytes.len() - 8 - 2 * 8;
        for cut in 0..bytes.len() {
            if cut != first_format_len {
                assert!(Membership::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
        assert!(Membership::decode(&[0xff; 64]).is_err());
        // A max id below a member's is malformed.
        let mut low = bytes.clone();
        low[first_format_len..first_format_len + 8].copy_from_slice(&3u64.to_be_bytes());
        assert!(Membership::decode(&low).is_err());
        assert_eq!(m.max_id(), 9);
        assert!(m.was_removed(3));
        assert!(!m.was_removed(7));
        assert!(!m.was_removed(10));
    }

    /// The encoding written before `max_id` and incarnations existed, as
    /// found in older data directories and logs.
    #[test]
    fn the_first_membership_format_still_decodes() {
        let mut old = Vec::new();
        old.extend_from_slice(&2u32.to_be_bytes());
        for (id, peer) in [(1u64, "a:1"), (4, "b:2")] {
            old.extend_from_slice(&id.to_be_bytes());
            old.push(1);
            old.extend_from_slice(&(peer.len() as u16).to_be_bytes());
            old.extend_from_slice(peer.as_bytes());
            old.extend_from_slice(&0u16.to_be_bytes());
        }
        let m = Membership::decode(&old).unwrap();
        assert_eq!(m.members.keys().copied().collect::<Vec<_>>(), [1, 4]);
        assert_eq!(m.max_id(), 4);
        assert!(m.members.values().all(|member| member.incarnation == 0));
        assert!(m.was_removed(2));
        // Written again, it gains the extension and reads back the same.
        assert_eq!(Membership::decode(&m.encode()), Ok(m));
    }
}
