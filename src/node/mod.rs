//! The node: the one thread that owns the Raft core and the replicated
//! state machine, and runs each `Ready` in order (persist → send → apply
//! → answer). Everything reaches it through one bounded inbox; it shares
//! only [`Shared`] (status, ID pool, counters) with the HTTP handlers.
//!
//! It may not parse HTTP or touch sockets itself: the disk is behind
//! `crate::store`, peers behind `crate::transport`.

mod apply;
mod boot;
mod cadence;
mod compaction;
mod driver;
mod leader;
mod members;
mod oneshot;
mod restore;
mod status;
mod view;
mod waiters;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

pub use boot::{BootError, DirState, dir_state, draw_random, start, wipe};
pub use restore::{Restored, restore};
pub use status::{Counters, Shared, Status};
pub use view::BackupView;

use crate::raft::{ConfChange, Message, NodeId};
use crate::ticket::{Command, Outcome, SessionId, State};
use crate::wire::{JoinAnswer, MemberRequest};

/// How long a proposal may wait for its entry to apply before the
/// client is told to retry.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's settings (validated by the CLI).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub db_size_mb: u64,
    /// Peer addresses of the initial members (empty: just this node).
    pub peers: Vec<String>,
    /// How an empty data directory is bootstrapped.
    pub bootstrap: Bootstrap,
    /// Our advertised peer address (`host:port`) and the address to bind.
    pub peer_addr: String,
    pub peer_listen: String,
    /// Our advertised HTTP address.
    pub http_addr: String,
    pub expire_interval: Duration,
    pub snapshot_interval: Duration,
    /// Log entries beyond the snapshot before the log is compacted.
    pub compact_entries: u64,
    pub tick: Duration,
    /// `--peer_secret`; none: peer connections are not authenticated.
    pub peer_secret: Option<crate::secret::Secret>,
}

/// How [`start`] bootstraps an empty data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// From `NodeConfig::peers` (or as a one-node cluster), with the
    /// cluster id derived from the list: plain `ticketd [PEERS]`.
    Peers,
    /// A new one-node cluster with a random cluster id (`ticketd start`).
    NewCluster { node_id: NodeId },
    /// A member admitted by a cluster (`ticketd join`): the identity it
    /// was given, and an empty membership until the leader's log or
    /// snapshot arrives.
    Joined {
        cluster_id: u64,
        node_id: NodeId,
        incarnation: u64,
    },
}

/// Why the node could not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeError {
    /// Another node leads; its HTTP address if known.
    NotLeader { leader_http: Option<String> },
    /// No leader is known (or our lease is not established yet).
    NoLeader,
    /// The request could not be completed now; retry.
    Unavailable(String),
    /// The store is full (the map, `--db_size`, or the file system).
    StorageFull,
    /// The session (or other named thing) does not exist.
    NotFound(String),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::NotLeader {
                leader_http: Some(addr),
            } => write!(f, "not the leader; the leader is at {addr}"),
            NodeError::NotLeader { leader_http: None } | NodeError::NoLeader => {
                write!(f, "Leader unavailable")
            }
            NodeError::Unavailable(why) => write!(f, "{why}"),
            NodeError::StorageFull => write!(f, "storage full"),
            NodeError::NotFound(what) => write!(f, "{what}"),
        }
    }
}

/// Where an answer goes.
pub type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// What the node thread is asked to do.
pub enum Input {
    /// A message from a peer (never a snapshot: see `PeerSnapshot`).
    Peer(Message),
    /// A snapshot message from a peer, with its state already decoded and
    /// checked (a snapshot whose state does not decode is refused before
    /// it gets here).
    PeerSnapshot { message: Message, state: Box<State> },
    /// A state machine command to replicate; `wait` parks a lock or claim
    /// that is not granted until it is, or until the wait passes.
    Propose {
        command: Command,
        wait: Option<Duration>,
        reply: Reply<Outcome>,
    },
    /// Refresh a session's TTL (leader-only, no log entry).
    Refresh {
        session: SessionId,
        reply: Reply<()>,
    },
    /// A lease read: a copy of the applied state, rendered by the caller
    /// off the node thread (see `view`).
    View(Reply<State>),
    /// A lease read for a backup: the applied state's copy and its log
    /// position.
    Backup(Reply<BackupView>),
    /// A membership change.
    ChangeMembers {
        change: ConfChange,
        reply: Reply<NodeId>,
    },
    /// Hand leadership to a member.
    Transfer { to: NodeId, reply: Reply<()> },
    /// A node asks to join (over the peer protocol); answered once its
    /// `AddLearner` is committed, or with why not. Or a member asks to be
    /// removed.
    Join {
        request: MemberRequest,
        reply: oneshot::Sender<JoinAnswer>,
    },
    /// This node should leave its cluster (`ticketd leave`): it asks its
    /// leader to remove it (a leader hands over first) and stops once
    /// the removal is committed.
    Leave { reply: Reply<()> },
    /// The ID pool ran low: reserve another range.
    WakeIds,
    /// The writer thread finished a write.
    Written,
    /// Stop the node thread.
    Shutdown,
}

/// The handle the rest of the process holds.
#[derive(Clone)]
pub struct NodeHandle {
    inbox: SyncSender<Input>,
    pub shared: Arc<Shared>,
}

impl NodeHandle {
    /// Hands `input` to the node thread without blocking.
    ///
    /// # Errors
    /// `Unavailable` when the inbox is full or the node has stopped.
    pub fn send(&self, input: Input) -> Result<(), NodeError> {
        match self.inbox.try_send(input) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(NodeError::Unavailable("node is overloaded".into())),
            Err(TrySendError::Disconnected(_)) => {
                Err(NodeError::Unavailable("node is shutting down".into()))
            }
        }
    }

    /// Sends a request carrying a reply channel and waits for the answer.
    ///
    /// # Errors
    /// What the node answered, or `Unavailable` on a timeout.
    pub fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Input,
        timeout: Duration,
    ) -> Result<T, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply))?;
        answer
            .recv_timeout(timeout)
            .unwrap_or_else(|| Err(NodeError::Unavailable("request timed out; retry".into())))
    }

    /// Asks the node thread to stop.
    pub fn shutdown(&self) {
        let _ = self.inbox.try_send(Input::Shutdown);
    }
}
