//! What the node thread publishes for the HTTP handlers: its Raft view
//! (role, term, leader and where to redirect), the lease, and counters
//! for `/metrics`. Written only by the node thread, read by anyone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::clock::BootInstant;
use crate::ids::IdPool;
use crate::metrics::{COUNT_BUCKETS, Histogram, SECONDS_BUCKETS};
use crate::raft::{LogIndex, Member, NodeId, Role, Term};

/// The node's Raft view as of its last loop iteration.
#[derive(Clone, Debug)]
pub struct Status {
    pub id: NodeId,
    pub cluster_id: u64,
    pub role: Role,
    pub term: Term,
    /// 0: no leader known.
    pub leader: NodeId,
    /// Where clients are sent when we are not the leader.
    pub leader_http: Option<String>,
    /// This node was removed (or refused for lost data) and is stopping.
    pub removed: bool,
    pub commit: LogIndex,
    pub applied: LogIndex,
    pub first_index: LogIndex,
    pub last_index: LogIndex,
    pub snapshot_index: LogIndex,
    pub members: Vec<(NodeId, Member)>,
    /// The leader may answer reads until then.
    pub lease_until: Option<BootInstant>,
    /// The largest ID the applied state's counter ever reserved (IDs,
    /// session ids, fencing tokens): no ID above it was ever served, so
    /// a restore from a backup passes more than the cluster's largest
    /// value of it as `--next-id`.
    pub ids_reserved_max: u64,
    /// Sessions and locks in the applied state.
    pub sessions: u64,
    pub locks: u64,
    /// Leader only: lock and claim requests parked with `?wait=`.
    pub waiters: u64,
    /// The store is (nearly) full: writes answer 507.
    pub storage_full: bool,
    /// The map's size (`--db_size`), the bytes of it in use (LMDB and
    /// WAL), and the WAL's share, at the last look.
    pub storage_map_bytes: u64,
    pub storage_used_bytes: u64,
    pub storage_wal_bytes: u64,
    /// Leader only: how many entries each follower lacks.
    pub follower_lag: Vec<(NodeId, u64)>,
}

impl Status {
    pub fn new(id: NodeId, cluster_id: u64) -> Status {
        Status {
            id,
            cluster_id,
            role: Role::Follower,
            term: 0,
            leader: 0,
            leader_http: None,
            removed: false,
            commit: 0,
            applied: 0,
            first_index: 0,
            last_index: 0,
            snapshot_index: 0,
            members: Vec::new(),
            lease_until: None,
            ids_reserved_max: 0,
            sessions: 0,
            locks: 0,
            waiters: 0,
            storage_full: false,
            storage_map_bytes: 0,
            storage_used_bytes: 0,
            storage_wal_bytes: 0,
            follower_lag: Vec::new(),
        }
    }

    /// Whether this node is a leader whose lease holds now.
    pub fn serving(&self) -> bool {
        self.role == Role::Leader
            && self
                .lease_until
                .is_some_and(|until| BootInstant::now() < until)
    }
}

/// Counters (every one only grows) and histograms.
#[derive(Debug)]
pub struct Counters {
    pub fsyncs: AtomicU64,
    pub fsync_micros_total: AtomicU64,
    pub entries_persisted: AtomicU64,
    pub proposals: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
    /// Times this node saw a new leader (itself included).
    pub leader_changes: AtomicU64,
    /// Outbound peer connections made (copied from the transport).
    pub peer_connects: AtomicU64,
    /// Seconds per durable write of the log (one fsync).
    pub persist_seconds: Histogram,
    /// Of each durable write: the wait for the store's mutex (another
    /// thread using the store), and the WAL's fdatasync alone.
    pub persist_lock_wait_seconds: Histogram,
    pub persist_sync_seconds: Histogram,
    /// Log entries per durable write.
    pub entries_per_persist: Histogram,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            fsyncs: AtomicU64::new(0),
            fsync_micros_total: AtomicU64::new(0),
            entries_persisted: AtomicU64::new(0),
            proposals: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            peer_connects: AtomicU64::new(0),
            persist_seconds: Histogram::new(SECONDS_BUCKETS),
            persist_lock_wait_seconds: Histogram::new(SECONDS_BUCKETS),
            persist_sync_seconds: Histogram::new(SECONDS_BUCKETS),
            entries_per_persist: Histogram::new(COUNT_BUCKETS),
        }
    }
}

impl Counters {
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// One durable write of `entries` log entries (one fdatasync), in
    /// microseconds: all of it, the wait for the store, the sync.
    pub fn persisted(&self, micros: u64, lock_wait: u64, sync: u64, entries: usize) {
        Counters::add(&self.fsyncs, 1);
        Counters::add(&self.fsync_micros_total, micros);
        self.persist_seconds.observe(micros as f64 / 1e6);
        self.persist_lock_wait_seconds
            .observe(lock_wait as f64 / 1e6);
        self.persist_sync_seconds.observe(sync as f64 / 1e6);
        self.entries_per_persist.observe(entries as f64);
    }
}

/// Everything the node shares with the HTTP side.
#[derive(Debug)]
pub struct Shared {
    status: Mutex<Status>,
    /// `status.role == Leader`, readable without the lock: every request
    /// checks it first.
    leading: AtomicBool,
    pub ids: IdPool,
    pub counters: Counters,
    pub started: Instant,
    pub started_unix: u64,
    /// Why the node stopped when it must exit with an error (its data is
    /// not the one the cluster knows).
    fatal: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(status: Status) -> Arc<Shared> {
        let started_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Arc::new(Shared {
            leading: AtomicBool::new(status.role == Role::Leader),
            status: Mutex::new(status),
            ids: IdPool::new(),
            counters: Counters::default(),
            started: Instant::now(),
            started_unix,
            fatal: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Status> {
        self.status
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A copy of the current status.
    pub fn status(&self) -> Status {
        self.lock().clone()
    }

    /// Only the role and where the leader's clients go: what every
    /// request checks first, without copying the member list.
    pub fn role_and_leader_http(&self) -> (Role, Option<String>) {
        let status = self.lock();
        (status.role, status.leader_http.clone())
    }

    /// Whether this node leads, as last published (no lock taken).
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// Replaces the status (node thread only).
    pub fn publish(&self, status: Status) {
        let mut current = self.lock();
        *current = status;
        self.leading
            .store(current.role == Role::Leader, Ordering::Release);
    }

    /// Records why the node stops with an error (node thread only).
    pub fn set_fatal(&self, why: String) {
        *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// Why the node stopped with an error, if it did.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Updates the status in place (node thread only).
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        let mut current = self.lock();
        change(&mut current);
        self.leading
            .store(current.role == Role::Leader, Ordering::Release);
    }
}
