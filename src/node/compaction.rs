//! Log compaction, the node thread's side: when the log since the last
//! snapshot has grown large enough, take the state at the applied index
//! (a copy-on-write clone), have it encoded and stored off the node and
//! writer threads ([`super::writer::Writer::compact`]: the snapshot goes
//! to LMDB in a transaction of its own, never in the way of a WAL
//! append), and once it is on disk let the core drop its log up to it
//! (the writer has deleted the WAL segments below it by then).
//!
//! Owns when to compact and the one compaction in flight; the store owns
//! the order of its steps on disk (`Store::check_compaction`,
//! `SnapshotStore::put`, `Store::compacted`).

use std::time::Instant;

use log::{error, info, warn};

use super::driver::Driver;
use super::writer::Outcome as WriteOutcome;
use crate::raft::{CompactError, Snapshot};
use crate::store::StoreError;

pub(super) struct Compaction {
    last: Instant,
    /// A compaction is under way (encoding, storing or queued on the
    /// writer), with `applied_bytes` as it was at the snapshot's index.
    in_flight: Option<u64>,
}

impl Compaction {
    pub fn new(now: Instant) -> Compaction {
        Compaction {
            last: now,
            in_flight: None,
        }
    }
}

impl Driver {
    /// Called every loop: compacts at most once per `snapshot_interval`.
    pub(super) fn compaction_due(&mut self, now: Instant) {
        if now.duration_since(self.compaction.last) >= self.config.snapshot_interval {
            self.compaction.last = now;
            self.maybe_compact();
        }
    }

    fn maybe_compact(&mut self) {
        if self.compaction.in_flight.is_some() {
            return;
        }
        let applied = self.raft.applied_index();
        // Both thresholds are staggered by node id (up to 3/8 more), so
        // that the members, which apply the same entries, do not all
        // compact, and stall, at the same moment.
        let id = self.raft.id();
        let stagger = |n: u64| n + n * (id % 4) / 8;
        if applied < self.raft.snapshot().meta.index + stagger(self.config.compact_entries) {
            return;
        }
        // Nor before the log since the last snapshot is as large as that
        // snapshot: with a large state (100,000 sessions make 4 MB) a
        // fixed entry count would rewrite the whole state for every
        // megabyte or so of log, stalling the disk every second or two.
        // This keeps the cost of compaction in proportion to the log.
        if self.applied_bytes < stagger(self.raft.snapshot().data.len() as u64) {
            return;
        }
        if self.applied_through != applied {
            // The state holds entries applied early from a `Ready` whose
            // write failed: it is not the state at `applied`.
            return;
        }
        // The disk must hold the entry compacted to.
        self.finish_writes();
        if applied > self.raft.stable_index() {
            // A leader's write failed (map full) after the followers had
            // committed and this node applied its entries: the state is
            // ahead of this node's own log until they are written again.
            return;
        }
        let meta = match self.raft.snapshot_meta(applied) {
            Ok(meta) => meta,
            Err(e) => {
                warn!("compaction at {applied} refused: {e}");
                return;
            }
        };
        // Encoded and stored on a thread of its own, then finished on the
        // writer thread: with 100,000 sessions each step takes tens of
        // milliseconds, which a leader's replication, commits and WAL
        // appends need not wait for. The state clone shares its chunks
        // (copy on write), so it costs next to nothing here. The core
        // compacts once the snapshot is on disk (`compacted`).
        if !self
            .writer
            .compact(self.writer.epoch, meta, self.state.clone())
        {
            return;
        }
        self.compaction.in_flight = Some(self.applied_bytes);
    }

    /// A compaction is done: on disk, the core may let go of the log up
    /// to it too.
    pub(super) fn compacted(&mut self, snapshot: Snapshot, outcome: WriteOutcome) {
        let through_snapshot = self.compaction.in_flight.take().unwrap_or(0);
        let index = snapshot.meta.index;
        match outcome {
            WriteOutcome::Written { micros, .. } => {
                self.applied_bytes = self.applied_bytes.saturating_sub(through_snapshot);
                match self.raft.compact_to(snapshot) {
                    Ok(()) => info!("compacted the log up to {index} ({} ms)", micros / 1000),
                    // A newer snapshot came from the leader meanwhile.
                    Err(CompactError::AlreadyCompacted) => {}
                    // The disk has a snapshot the core refuses: the two no
                    // longer describe one log.
                    Err(e) => self.storage_failure(
                        "compaction",
                        StoreError::Invalid(format!(
                            "the core refused the snapshot at {index}: {e}"
                        )),
                    ),
                }
            }
            WriteOutcome::Failed(e) if e.is_full() => {
                // The disk keeps the longer log and the older snapshot,
                // which is as good; the next round tries again.
                warn!("no room to store a snapshot at {index}: {e}");
                self.storage_full = true;
            }
            // The store refused it (`Store::check_compaction`: a
            // snapshot from the leader got there first, or the log no
            // longer holds the entry): nothing of it was stored, or what
            // was is a snapshot of entries on disk. The log stays as it
            // is and the next round tries again; no reason to stop.
            WriteOutcome::Failed(StoreError::Invalid(why)) => {
                warn!("compaction at {index} refused by the store: {why}");
            }
            WriteOutcome::Failed(e) => self.storage_failure("compaction", e),
            WriteOutcome::Dropped => {}
        }
    }

    /// The snapshot's encoding panicked: nothing was stored.
    pub(super) fn compaction_abandoned(&mut self) {
        error!("encoding a snapshot failed; the log stays uncompacted for now");
        self.compaction.in_flight = None;
    }
}
