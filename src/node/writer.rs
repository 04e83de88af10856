//! The writer thread: puts a leader's batches on disk while the node
//! thread goes on stepping messages and answering what commits (see
//! "Asynchronous leader writes" in [`crate::raft`]), and finishes the
//! compactions whose snapshots a short-lived thread encoded and stored.
//!
//! It owns the store behind a mutex. Everything queued while a write runs
//! goes into the next WAL batch (one fdatasync), strictly in the order
//! queued. A compaction's snapshot is stored in LMDB by its own thread,
//! which holds the store's mutex only to check the compaction before and
//! never while LMDB writes, so WAL appends go on meanwhile; the writer
//! then drops the log below it (deleting WAL segments), in the
//! compaction's place in the queue. Each job comes back to the node thread as a [`Done`], and the
//! node thread is woken through its inbox. Anything else that writes to
//! the store (a follower's batch, a snapshot from the leader) first waits
//! until no job is queued (the driver's `finish_writes`) and then uses
//! [`Writer::store`] on the node thread, so the order on disk is always
//! the order handed out.
//!
//! After a failed write every job already queued with the same epoch is
//! dropped unwritten: they would follow a gap. The node thread rewinds
//! the core and starts a new epoch. A compaction is not dropped (its
//! snapshot, of entries on disk before, is stored when it is queued),
//! and a failed one drops nothing.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use super::Input;
use log::warn;

use crate::raft::{Entry, HardState, Message, Snapshot, SnapshotMeta};
use crate::store::{AppRecord, Store, StoreError, Write};
use crate::ticket::State;

#[cfg(test)]
pub(super) use hold::Hold;

/// One piece of work for the writer, tagged with the epoch it was
/// queued in.
pub(super) struct Job {
    pub epoch: u64,
    pub work: Work,
}

pub(super) enum Work {
    /// A leader's batch.
    Write(Batch),
    /// A compaction, encoded and stored already (see [`Writer::compact`]),
    /// with how long the store took or why it failed: drop the log up to
    /// it; the snapshot comes back for the core. Its failure leaves the
    /// longer log and the older snapshot on disk, which is as good, and
    /// drops nothing queued after it.
    Compact {
        snapshot: Snapshot,
        stored: Result<u64, StoreError>,
    },
    /// A compaction whose encoding panicked: nothing to store. It still
    /// comes back, so that the count of queued jobs stays right.
    Abandoned,
}

pub(super) struct Batch {
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub app: AppRecord,
    /// Sent by the node thread once the batch is on disk.
    pub messages: Vec<Message>,
}

impl Job {
    fn is_compaction(&self) -> bool {
        matches!(self.work, Work::Compact { .. } | Work::Abandoned)
    }
}

/// What became of a job.
pub(super) enum Outcome {
    /// On disk, after this many microseconds in the store; `synced` for
    /// the first job of a WAL batch (which counts its fdatasync), with
    /// how that time split.
    Written {
        micros: u64,
        synced: bool,
        split: PersistSplit,
    },
    Failed(StoreError),
    /// Not attempted: an earlier job of its epoch failed.
    Dropped,
}

/// Where a persist's time went, in microseconds: waiting for the store's
/// mutex, and the WAL's `fdatasync`; the rest is encoding, checks and the
/// write itself.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PersistSplit {
    pub lock_wait: u64,
    pub sync: u64,
}

pub(super) struct Done {
    pub job: Job,
    pub outcome: Outcome,
}

pub(super) struct Writer {
    store: Arc<Mutex<Store>>,
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
    /// Jobs queued whose `Done` the node thread has not taken yet.
    queued: usize,
    /// Jobs are tagged with this; a failure starts the next.
    pub epoch: u64,
    /// Test builds: holds the thread before each batch it takes.
    #[cfg(test)]
    pub hold: Arc<Hold>,
}

impl Writer {
    /// Starts the thread; `wake` is the node thread's inbox.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(store: Store, wake: SyncSender<Input>) -> std::io::Result<Writer> {
        let store = Arc::new(Mutex::new(store));
        let (jobs, job_rx) = channel::<Job>();
        let (done_tx, done) = channel::<Done>();
        let thread_store = Arc::clone(&store);
        #[cfg(test)]
        let hold = Arc::new(Hold::default());
        #[cfg(test)]
        let thread_hold = Arc::clone(&hold);
        let thread = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                write_jobs(
                    &thread_store,
                    &job_rx,
                    &done_tx,
                    &wake,
                    #[cfg(test)]
                    &thread_hold,
                );
            })?;
        Ok(Writer {
            store,
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            queued: 0,
            epoch: 0,
            #[cfg(test)]
            hold,
        })
    }

    /// The store, for the node thread's own use. Call [`Writer::finish`]
    /// first for anything that must follow the queued writes.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store if no write holds it now.
    pub fn try_store(&self) -> Option<MutexGuard<'_, Store>> {
        match self.store.try_lock() {
            Ok(store) => Some(store),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Jobs queued whose outcome the node thread has not seen.
    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn queue(&mut self, job: Job) -> bool {
        match &self.jobs {
            Some(jobs) if jobs.send(job).is_ok() => {
                self.queued += 1;
                true
            }
            _ => false,
        }
    }

    /// Encodes `state` (the state at `meta.index`, a copy-on-write clone)
    /// and stores it in LMDB on a thread of its own, which then queues
    /// the compaction: writes queued meanwhile wait for neither the
    /// encoding nor the store (with 100,000 sessions each takes tens of
    /// milliseconds). The caller stores no other snapshot until this one
    /// is done (it counts as queued). False when no thread could be
    /// started.
    pub fn compact(&mut self, epoch: u64, meta: SnapshotMeta, state: State) -> bool {
        let Some(jobs) = self.jobs.clone() else {
            return false;
        };
        let store = Arc::clone(&self.store);
        let encoder = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                // A job must come back whatever happens: the node thread
                // waits for every one it counted.
                let encoded =
                    std::panic::catch_unwind(AssertUnwindSafe(|| state.encode_snapshot()));
                let work = match encoded {
                    Ok(data) => {
                        let snapshot = Snapshot { meta, data };
                        let stored = store_snapshot(&store, &snapshot);
                        Work::Compact { snapshot, stored }
                    }
                    Err(_) => Work::Abandoned,
                };
                let _ = jobs.send(Job { epoch, work });
            });
        match encoder {
            Ok(_) => {
                self.queued += 1;
                true
            }
            Err(e) => {
                warn!("cannot start a thread to encode a snapshot: {e}");
                false
            }
        }
    }

    /// A finished job, if one is waiting.
    pub fn try_done(&mut self) -> Option<Done> {
        let done = self.done.try_recv().ok()?;
        self.queued -= 1;
        Some(done)
    }

    /// Waits for the next finished job; `None` when nothing is queued (or
    /// the thread is gone).
    pub fn wait_done(&mut self) -> Option<Done> {
        if self.queued == 0 {
            return None;
        }
        let done = self.done.recv().ok()?;
        self.queued -= 1;
        Some(done)
    }

    /// Stops the thread after the queued jobs.
    pub fn stop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Jobs written in one WAL batch at most.
const BATCH_MAX: usize = 1024;

fn write_jobs(
    store: &Mutex<Store>,
    jobs: &Receiver<Job>,
    done: &Sender<Done>,
    wake: &SyncSender<Input>,
    #[cfg(test)] hold: &Hold,
) {
    let mut failed_epoch = None;
    while let Ok(first) = jobs.recv() {
        #[cfg(test)]
        hold.pass();
        // Group commit: everything queued meanwhile goes in the same
        // WAL batch, behind one fdatasync, up to a compaction.
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX && !batch.last().is_some_and(Job::is_compaction) {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let compaction = match batch.last() {
            Some(job) if job.is_compaction() => batch.pop(),
            _ => None,
        };
        let (dropped, batch): (Vec<Job>, Vec<Job>) = batch
            .into_iter()
            .partition(|job| failed_epoch == Some(job.epoch));
        let mut finished: Vec<Done> = dropped
            .into_iter()
            .map(|job| Done {
                job,
                outcome: Outcome::Dropped,
            })
            .collect();
        if !batch.is_empty() {
            let started = Instant::now();
            let writes: Vec<Write> = batch
                .iter()
                .filter_map(|job| match &job.work {
                    Work::Write(batch) => Some(Write {
                        snapshot: None,
                        entries: &batch.entries,
                        hard_state: batch.hard_state.as_ref(),
                        app: Some(batch.app),
                    }),
                    Work::Compact { .. } | Work::Abandoned => None,
                })
                .collect();
            let mut locked = store.lock().unwrap_or_else(|p| p.into_inner());
            let lock_wait = started.elapsed().as_micros() as u64;
            let result = locked.persist_all(&writes);
            let sync = locked.last_sync().as_micros() as u64;
            drop(locked);
            drop(writes);
            let micros = started.elapsed().as_micros() as u64;
            let split = PersistSplit { lock_wait, sync };
            let mut error = match result {
                Ok(()) => None,
                Err(e) => {
                    failed_epoch = batch.first().map(|job| job.epoch);
                    Some(e)
                }
            };
            for (n, job) in batch.into_iter().enumerate() {
                let outcome = match error.take() {
                    Some(e) => Outcome::Failed(e),
                    None if failed_epoch == Some(job.epoch) => Outcome::Dropped,
                    None => Outcome::Written {
                        micros,
                        synced: n == 0,
                        split,
                    },
                };
                finished.push(Done { job, outcome });
            }
        }
        if let Some(job) = compaction {
            finished.push(compact(store, job));
        }
        for one in finished {
            if done.send(one).is_err() {
                return;
            }
        }
        // A full inbox means the node thread is busy and will look.
        let _ = wake.try_send(Input::Written);
    }
}

/// A compaction's snapshot into LMDB, holding the store's mutex only for
/// the check: microseconds, not the store's tens of milliseconds.
fn store_snapshot(store: &Mutex<Store>, snapshot: &Snapshot) -> Result<u64, StoreError> {
    let snapshots = {
        let store = store.lock().unwrap_or_else(|p| p.into_inner());
        store.check_compaction(&snapshot.meta)?;
        store.snapshot_store()
    };
    let started = Instant::now();
    snapshots.put(snapshot)?;
    Ok(started.elapsed().as_micros() as u64)
}

/// Finishes a stored compaction: the log up to it goes, with the WAL
/// segments below it. Not dropped after a failed write of its epoch: the
/// snapshot is on disk already (and of entries on disk before the
/// failure), and the store must know.
fn compact(store: &Mutex<Store>, job: Job) -> Done {
    let outcome = match &job.work {
        Work::Compact { snapshot, stored } => match stored {
            Ok(micros) => {
                let result = store
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .compacted(&snapshot.meta);
                match result {
                    Ok(()) => Outcome::Written {
                        micros: *micros,
                        synced: false,
                        split: PersistSplit::default(),
                    },
                    Err(e) => Outcome::Failed(e),
                }
            }
            Err(e) => Outcome::Failed(e.clone()),
        },
        Work::Write(_) | Work::Abandoned => Outcome::Dropped,
    };
    Done { job, outcome }
}

#[cfg(test)]
mod hold {
    use std::sync::{Condvar, Mutex};

    /// A gate before the writer thread's next batch, for tests that must
    /// see what the node thread does while a write is still queued.
    #[derive(Default)]
    pub struct Hold {
        held: Mutex<bool>,
        changed: Condvar,
    }

    impl Hold {
        pub fn set(&self, held: bool) {
            *self.held.lock().unwrap_or_else(|p| p.into_inner()) = held;
            self.changed.notify_all();
        }

        /// Waits while held.
        pub(super) fn pass(&self) {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            while *held {
                held = self.changed.wait(held).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The writer on its own, with a store of its own: the count of
    //! queued jobs, order, group commit and the epoch rule.

    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::mpsc::sync_channel;

    use super::*;
    use crate::store::testkit::{TestDir, bootstrapped, entries, hard_state};

    fn write(epoch: u64, first: u64, last: u64) -> Job {
        Job {
            epoch,
            work: Work::Write(Batch {
                entries: entries(first, last, 1),
                hard_state: Some(hard_state(1, 0)),
                app: AppRecord::default(),
                messages: Vec::new(),
            }),
        }
    }

    fn first_index(done: &Done) -> u64 {
        match &done.job.work {
            Work::Write(batch) => batch.entries[0].index,
            _ => panic!("not a write"),
        }
    }

    fn writer(name: &str) -> (TestDir, Writer, Receiver<Input>) {
        let dir = TestDir::new(name);
        let store = bootstrapped(&dir);
        let (wake, woken) = sync_channel(1024);
        let writer = Writer::start(store, wake).unwrap();
        (dir, writer, woken)
    }

    /// Every job queued counts until its outcome is taken; outcomes come
    /// back in the order queued; and with nothing queued there is
    /// nothing to wait for.
    #[test]
    fn queued_jobs_count_until_taken_and_come_back_in_order() {
        let (_dir, mut writer, _woken) = writer("writer-count");
        assert_eq!(writer.queued(), 0);
        assert!(writer.wait_done().is_none());
        for n in 0..3 {
            assert!(writer.queue(write(0, 1 + 10 * n, 10 + 10 * n)));
            assert_eq!(writer.queued() as u64, n + 1);
        }
        let mut firsts = Vec::new();
        for left in (0..3).rev() {
            let done = writer.wait_done().expect("a queued job's outcome");
            assert!(matches!(done.outcome, Outcome::Written { .. }));
            firsts.push(first_index(&done));
            assert_eq!(writer.queued(), left);
        }
        assert_eq!(firsts, [1, 11, 21]);
        assert!(writer.wait_done().is_none());
        assert!(writer.try_done().is_none());
        writer.queue(write(0, 31, 40));
        let done = loop {
            if let Some(done) = writer.try_done() {
                break done;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(first_index(&done), 31);
        assert_eq!(writer.queued(), 0);
        writer.stop();
        let loaded = writer.store().load().unwrap().unwrap();
        assert_eq!(loaded.entries.last().map(|e| e.index), Some(40));
    }

    /// Jobs queued while a write holds the store go in one WAL batch
    /// behind one fdatasync: only its first job counts the sync.
    #[test]
    fn jobs_queued_during_a_write_share_one_batch() {
        let (_dir, mut writer, _woken) = writer("writer-group");
        let store = Arc::clone(&writer.store);
        {
            let _held = store.lock().unwrap();
            // Queued while the store is held: the writer thread takes the
            // first and waits for the store; the rest queue behind it.
            for n in 0..5 {
                assert!(writer.queue(write(0, 1 + 10 * n, 10 + 10 * n)));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let mut synced = Vec::new();
        while let Some(done) = writer.wait_done() {
            match done.outcome {
                Outcome::Written { synced: s, .. } => synced.push(s),
                _ => panic!("a job failed"),
            }
        }
        assert_eq!(synced.len(), 5);
        assert!(synced[0]);
        assert!(
            synced.iter().filter(|s| !**s).count() >= 3,
            "at most two batches for five jobs: {synced:?}"
        );
    }

    /// A compaction is stored off the writer thread, counts as queued
    /// until its outcome is taken, and comes back written, with the
    /// store's log dropped up to it.
    #[test]
    fn a_compaction_comes_back_written_with_the_log_dropped_up_to_it() {
        let (_dir, mut writer, _woken) = writer("writer-compact");
        assert!(writer.queue(write(0, 1, 10)));
        assert!(matches!(
            writer.wait_done().unwrap().outcome,
            Outcome::Written { .. }
        ));
        let mut meta = crate::store::testkit::initial_snapshot().meta;
        meta.index = 8;
        meta.term = 1;
        assert!(writer.compact(0, meta.clone(), State::new()));
        assert_eq!(writer.queued(), 1);
        let done = writer.wait_done().expect("the compaction's outcome");
        match &done.job.work {
            Work::Compact { snapshot, stored } => {
                assert_eq!(snapshot.meta, meta);
                assert!(stored.is_ok(), "{stored:?}");
            }
            _ => panic!("not the compaction"),
        }
        assert!(matches!(done.outcome, Outcome::Written { .. }));
        assert_eq!(writer.queued(), 0);
        let usage = writer.store().usage().unwrap();
        assert_eq!(usage.log_entries, 2, "entries 9 and 10 are left");
        writer.stop();
        let loaded = writer.store().load().unwrap().unwrap();
        assert_eq!(loaded.snapshot.meta.index, 8);
    }

    /// A compaction ends the batch it is queued in: the writes before it
    /// go in one batch, it drops the log up to its snapshot, and the
    /// writes after it go in the next batch.
    #[test]
    fn a_compaction_ends_its_batch_and_writes_after_it_wait_for_it() {
        let (_dir, mut writer, _woken) = writer("writer-compact-order");
        assert!(writer.queue(write(0, 1, 10)));
        assert!(writer.wait_done().is_some());
        let mut snapshot = crate::store::testkit::initial_snapshot();
        snapshot.meta.index = 8;
        snapshot.meta.term = 1;
        let stored = store_snapshot(&writer.store, &snapshot);
        assert!(stored.is_ok(), "{stored:?}");
        let store = Arc::clone(&writer.store);
        {
            let _held = store.lock().unwrap();
            // The writer thread takes this one and waits for the store;
            // the compaction and the write after it queue behind.
            assert!(writer.queue(write(0, 11, 12)));
            std::thread::sleep(std::time::Duration::from_millis(50));
            let compaction = Job {
                epoch: 0,
                work: Work::Compact {
                    snapshot: snapshot.clone(),
                    stored,
                },
            };
            assert!(writer.queue(compaction));
            assert!(writer.queue(write(0, 13, 14)));
        }
        let mut outcomes = Vec::new();
        while let Some(done) = writer.wait_done() {
            let compaction = matches!(done.job.work, Work::Compact { .. });
            match done.outcome {
                Outcome::Written { synced, .. } => outcomes.push((compaction, synced)),
                _ => panic!("a job failed"),
            }
        }
        // The write after the compaction is a batch of its own (synced).
        assert_eq!(outcomes, [(false, true), (true, false), (false, true)]);
        let usage = writer.store().usage().unwrap();
        assert_eq!(usage.log_entries, 6, "entries 9 to 14 are left");
    }

    /// Stopping waits for what is queued: every job is on disk after.
    #[test]
    fn stop_writes_everything_queued_first() {
        let (_dir, mut writer, _woken) = writer("writer-stop");
        for n in 0..20 {
            assert!(writer.queue(write(0, 1 + 10 * n, 10 + 10 * n)));
        }
        writer.stop();
        let loaded = writer.store().load().unwrap().unwrap();
        assert_eq!(loaded.entries.last().map(|e| e.index), Some(200));
    }

    /// The store is there for the node thread's checks unless a write
    /// holds it.
    #[test]
    fn try_store_answers_only_while_no_write_holds_the_store() {
        let (_dir, writer, _woken) = writer("writer-try");
        assert!(writer.try_store().is_some());
        let store = Arc::clone(&writer.store);
        let held = store.lock().unwrap();
        assert!(writer.try_store().is_none());
        drop(held);
        assert!(writer.try_store().is_some());
    }

    /// After a failed write, the jobs already queued in its epoch are
    /// dropped unwritten (they would follow a gap); those of the next
    /// epoch are written.
    #[test]
    fn a_failed_write_drops_the_rest_of_its_epoch_only() {
        let (_dir, mut writer, _woken) = writer("writer-epoch");
        let store = Arc::clone(&writer.store);
        {
            let _held = store.lock().unwrap();
            // Entry 1 first: a gap (nothing stored yet) fails.
            assert!(writer.queue(write(0, 5, 6)));
            assert!(writer.queue(write(0, 7, 8)));
            assert!(writer.queue(write(0, 9, 10)));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let mut outcomes = Vec::new();
        while let Some(done) = writer.wait_done() {
            outcomes.push(done.outcome);
        }
        assert!(matches!(outcomes[0], Outcome::Failed(_)), "the gap fails");
        assert!(
            outcomes[1..].iter().all(|o| matches!(o, Outcome::Dropped)),
            "the rest of epoch 0 is dropped"
        );
        assert!(writer.queue(write(0, 1, 2)));
        let done = writer.wait_done().unwrap();
        assert!(
            matches!(done.outcome, Outcome::Dropped),
            "epoch 0 stays failed"
        );
        assert!(writer.queue(write(1, 1, 2)));
        let done = writer.wait_done().unwrap();
        assert!(
            matches!(done.outcome, Outcome::Written { .. }),
            "epoch 1 is written"
        );
        writer.stop();
        let loaded = writer.store().load().unwrap().unwrap();
        assert_eq!(loaded.entries.last().map(|e| e.index), Some(2));
    }
}
