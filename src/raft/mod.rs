//! The Raft consensus core: a pure, deterministic state machine.
//! (Module docs are completed with the implementation.)

mod types;

pub use types::*;

/// Settings of one core, validated once by [`Config::validate`].
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (never 0).
    pub id: NodeId,
    /// Election timeouts are drawn uniformly from `[min, max)` ticks.
    pub election_ticks_min: u64,
    pub election_ticks_max: u64,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: u64,
    /// The lease is `election_ticks_min - lease_margin_ticks` long, to
    /// absorb clock drift between nodes.
    pub lease_margin_ticks: u64,
    /// Caps on one AppendEntries message.
    pub max_append_entries: usize,
    pub max_append_bytes: usize,
    /// Unacknowledged AppendEntries messages per follower.
    pub max_inflight: usize,
    /// Seed of the core's private PRNG (election timeouts).
    pub seed: u64,
}

/// What the driver found on disk (or the bootstrap state for an empty
/// data directory: default hard state, a snapshot at index 0 holding the
/// initial membership, no entries).
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    pub hard_state: HardState,
    pub snapshot: Snapshot,
    /// The entries after `snapshot.meta.index`, contiguous.
    pub entries: Vec<Entry>,
}

/// A batch of work for the driver. Handle it in this order:
/// 1. persist `snapshot` (replacing state and log), then truncate the log
///    at `entries[0].index` and append `entries`, then `hard_state` — all
///    in one durable write, fsynced when `must_sync`;
/// 2. send `messages`;
/// 3. apply `committed`, in order;
/// 4. call [`Raft::advance`].
#[derive(Debug, Default)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    pub must_sync: bool,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub committed: Vec<Entry>,
}

/// The Raft core of one node.
pub struct Raft {}

impl Raft {
    pub fn new(config: Config, persisted: Persisted) -> Result<Raft, ConfigError> {
        unimplemented!()
    }
    pub fn tick(&mut self) {
        unimplemented!()
    }
    pub fn step(&mut self, message: Message) {
        unimplemented!()
    }
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(Term, LogIndex), ProposeError> {
        unimplemented!()
    }
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<(Term, LogIndex), ProposeError> {
        unimplemented!()
    }
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        unimplemented!()
    }
    pub fn compact(&mut self, index: LogIndex, data: Vec<u8>) -> Result<(), CompactError> {
        unimplemented!()
    }
    pub fn has_ready(&self) -> bool {
        unimplemented!()
    }
    pub fn ready(&mut self) -> Ready {
        unimplemented!()
    }
    pub fn advance(&mut self) {
        unimplemented!()
    }
    pub fn lease_valid(&self) -> bool {
        unimplemented!()
    }
    pub fn id(&self) -> NodeId {
        unimplemented!()
    }
    pub fn role(&self) -> Role {
        unimplemented!()
    }
    pub fn leader(&self) -> NodeId {
        unimplemented!()
    }
    pub fn term(&self) -> Term {
        unimplemented!()
    }
    pub fn commit_index(&self) -> LogIndex {
        unimplemented!()
    }
    pub fn applied_index(&self) -> LogIndex {
        unimplemented!()
    }
    pub fn first_index(&self) -> LogIndex {
        unimplemented!()
    }
    pub fn last_index(&self) -> LogIndex {
        unimplemented!()
    }
    pub fn membership(&self) -> &Membership {
        unimplemented!()
    }
}
