//! Durable storage of one node: the Raft log, hard state and application
//! record in a write-ahead log ([`wal`], `<dir>/wal/`), and the node's
//! identity and the snapshot in LMDB (`<dir>/data.mdb`). This is the only
//! module that talks to LMDB or the WAL; it knows the Raft value types but
//! no Raft logic, and never touches the network.
//!
//! A persisted batch is one WAL frame and one `fdatasync`: the frame is
//! checksummed, so a crash leaves all of a batch or none of it. A
//! snapshot is an LMDB transaction of its own (a durable commit), and a
//! compaction then deletes the WAL segments wholly below it: the
//! snapshot's store needs no lock a WAL append takes
//! ([`SnapshotStore`]), so a multi-megabyte snapshot never holds up the
//! log. Everything read back is checked (checksums, contiguity, the Raft
//! invariants that tie the records together); anything off is
//! [`StoreError::Corrupt`], naming the record.
//!
//! LMDB layout (named databases):
//! - `meta`: `version` (2), `identity`, `snapshot_meta`, `snapshot_data`,
//!   and `removed` once the node was removed from its cluster;
//! - `log` and `state`: the log, hard state and application record of
//!   format version 1, which [`Store::open`] moves into a new WAL (both
//!   are empty from version 2 on).
//!
//! Crash rules, at open: WAL entries at or below the snapshot are
//! skipped; if the WAL's log does not hold the snapshot's own entry (a
//! crash after a leader's snapshot was stored and before the WAL said
//! so), the log after the snapshot is dropped and the WAL reset to it, as
//! Raft does; a WAL that starts after the snapshot (entries missing) is
//! corruption.

pub mod codec;
mod error;
mod files;
pub mod wal;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lmdb::{Cursor, Database, DatabaseFlags, Environment, Transaction, WriteFlags};
use log::warn;

use crate::raft::{Entry, HardState, LogIndex, Snapshot, SnapshotMeta, Term};
use codec::*;
pub use error::StoreError;
use wal::{Header, OpRef, Replayed, Wal};

/// Room for the databases that application tables will add later.
const MAX_DBS: u32 = 8;
/// The databases this build knows. Anything else in the environment means
/// the directory is not ours, and we must not write to it.
const DATABASES: [&str; 3] = ["meta", "log", "state"];
/// Largest map accepted (1 TiB), matching the `--db_size` limit.
pub const MAP_SIZE_MB_MAX: u64 = 1 << 20;
/// Held (flock) for the life of a `Store`: LMDB must not be opened twice
/// in one process, and two nodes on one directory would both own the log.
const LOCK_FILE: &str = "ticketd.lock";
/// The WAL's directory inside a data directory.
const WAL_DIR: &str = "wal";
/// The format that kept the log in LMDB, upgraded at open.
const FORMAT_VERSION_LMDB_LOG: u64 = 1;
/// The upgrade writes a version 1 log in WAL frames of about this at most
/// (more only for one entry larger than that).
const UPGRADE_FRAME: usize = 16 << 20;

/// LMDB's files in a data directory: what [`Store::wipe`] removes (with
/// the WAL).
const LMDB_FILES: [&str; 2] = ["data.mdb", "lock.mdb"];

/// What a data directory held before [`Store::wipe`] emptied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wiped {
    /// Nothing (or a store never bootstrapped).
    Empty,
    /// A node's data.
    Identity(Identity),
    /// A ticketd store that could not be read back: why.
    Unreadable(String),
}

/// Which cluster a data directory belongs to, and who we are in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: u64,
    pub node_id: u64,
    /// Drawn at random when the directory was bootstrapped, so the
    /// cluster can tell this directory from a new one under the same node
    /// id (0: a directory from before incarnations; the node draws one).
    /// Stored as a third u64 of the identity record, which older builds
    /// wrote with two: both are read.
    pub incarnation: u64,
}

/// What the driver records about the application state, in the same
/// batch as the log, to cross-check it after a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppRecord {
    /// The largest ID ever reserved.
    pub high: u64,
    /// The last log index applied to the application state.
    pub applied: u64,
}

/// Everything a bootstrapped store holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub identity: Identity,
    pub hard_state: HardState,
    pub snapshot: Snapshot,
    /// The log after `snapshot.meta.index`, contiguous.
    pub entries: Vec<Entry>,
    pub app: AppRecord,
    /// The node was removed from its cluster ([`Store::mark_removed`]).
    pub removed: bool,
}

/// One batch for [`Store::persist`], applied in field order.
#[derive(Clone, Copy, Debug, Default)]
pub struct Write<'a> {
    /// Replaces the snapshot and empties the log.
    pub snapshot: Option<&'a Snapshot>,
    /// Contiguous; replaces every stored entry from `entries[0].index` on.
    pub entries: &'a [Entry],
    pub hard_state: Option<&'a HardState>,
    pub app: Option<AppRecord>,
}

/// Space accounting, in bytes. The store (LMDB's pages and the WAL's
/// frames together) is held to the map size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub map_size_bytes: u64,
    /// LMDB pages holding live data (excludes LMDB's free list) plus the
    /// WAL's bytes.
    pub used_bytes: u64,
    pub available_bytes: u64,
    /// Bytes in the WAL's live segments.
    pub wal_bytes: u64,
    pub log_entries: u64,
    /// Free bytes on the file system (none if it cannot be asked).
    pub fs_free_bytes: Option<u64>,
}

/// An index and the term of the entry there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    index: LogIndex,
    term: Term,
}

/// The LMDB half of a store: identity and snapshot. Shared with the
/// thread that stores a compaction's snapshot ([`SnapshotStore`]); LMDB
/// serialises its write transactions itself.
struct Db {
    env: Environment,
    meta: Database,
    log: Database,
    state: Database,
    dir: PathBuf,
    /// LMDB's used bytes at the last look (after each commit of ours).
    used: AtomicU64,
}

/// Stores snapshots in LMDB without the [`Store`] itself, so that a
/// compaction's snapshot is written while the WAL goes on taking batches.
/// Call [`Store::check_compaction`] before and [`Store::compacted`] after.
#[derive(Clone)]
pub struct SnapshotStore(Arc<Db>);

impl SnapshotStore {
    /// Stores `snapshot` in one durable LMDB transaction.
    ///
    /// # Errors
    /// `MapFull` or `NoSpace` (nothing written), `Lmdb`.
    pub fn put(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.0.put_snapshot(snapshot)
    }
}

/// The WAL of a bootstrapped store and what it holds, in memory: the
/// log's positions (the entries themselves live in the core).
struct Live {
    wal: Wal,
    snapshot: Position,
    /// Terms of the entries after the snapshot, and the segment each was
    /// last written in.
    terms: VecDeque<Term>,
    segments: VecDeque<u64>,
    hard_state: HardState,
    app: AppRecord,
    /// The last log position as a replay of the WAL sees it: moved only
    /// by ops written to the WAL. It differs from `last()` while a
    /// leader's snapshot is stored in LMDB but its reset is not yet in
    /// the WAL (the reset is inside the batch being written, or pending).
    wal_last: Position,
    /// A snapshot from the leader is stored but the WAL does not say so
    /// yet (its write failed): the next batch starts with the reset.
    pending_reset: bool,
}

/// One node's open data directory.
pub struct Store {
    // Declared before `_lock` so that everything closes before the lock
    // is released.
    db: Arc<Db>,
    live: Option<Live>,
    /// Why the WAL could not be opened: `load` and every write say so.
    broken: Option<StoreError>,
    dir: PathBuf,
    map_bytes: u64,
    /// Tests: the WAL write after a snapshot's store fails (`NoSpace`).
    #[cfg(test)]
    fail_wal_after_snapshot: bool,
    _lock: File,
}

impl Live {
    fn last(&self) -> Position {
        match self.terms.back() {
            Some(&term) => Position {
                // Both from disk, checked contiguous: saturating is a guard.
                index: self.snapshot.index.saturating_add(self.terms.len() as u64),
                term,
            },
            None => self.snapshot,
        }
    }

    fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        let offset = index.checked_sub(self.snapshot.index.checked_add(1)?)?;
        self.terms.get(usize::try_from(offset).ok()?).copied()
    }

    /// The state a new segment's header records: the WAL's as a replay
    /// sees it before the batch being written (not the snapshot stored
    /// ahead of its reset: the segment before still ends at the old log,
    /// and the next must continue from there).
    fn header(&self) -> Header {
        Header {
            seq: 0,
            base_index: self.wal_last.index,
            base_term: self.wal_last.term,
            hard_state: self.hard_state,
            app: self.app,
        }
    }

    /// Appends `ops` as one synced batch and applies them here.
    fn write(&mut self, ops: &[OpRef<'_>]) -> Result<(), StoreError> {
        let mut frame = wal::record::encode_batch(ops);
        let seq = self.wal.append(&mut frame, &self.header())?;
        for op in ops {
            self.apply(op, seq);
        }
        Ok(())
    }

    /// What a written op changes (checked before it was written).
    fn apply(&mut self, op: &OpRef<'_>, seq: u64) {
        match *op {
            OpRef::Truncate { from, prev_term } => {
                let keep = from.saturating_sub(self.snapshot.index.saturating_add(1)) as usize;
                self.terms.truncate(keep);
                self.segments.truncate(keep);
                self.wal_last = Position {
                    index: from.saturating_sub(1),
                    term: prev_term,
                };
            }
            OpRef::Entries(entries) => {
                for entry in entries {
                    self.terms.push_back(entry.term);
                    self.segments.push_back(seq);
                }
                if let Some(entry) = entries.last() {
                    self.wal_last = Position {
                        index: entry.index,
                        term: entry.term,
                    };
                }
            }
            OpRef::HardState(hard_state) => self.hard_state = hard_state,
            OpRef::App(app) => self.app = app,
            OpRef::Reset { index, term } => {
                self.snapshot = Position { index, term };
                self.terms.clear();
                self.segments.clear();
                self.wal_last = self.snapshot;
                self.pending_reset = false;
            }
        }
    }

    /// Deletes the segments that hold nothing after the snapshot.
    fn remove_old(&mut self) -> Result<(), StoreError> {
        let keep_from = self
            .segments
            .front()
            .copied()
            .unwrap_or_else(|| self.wal.active_seq());
        self.wal.remove_below(keep_from).map(|_| ())
    }
}

/// A batch's effect on the log, worked out before anything is written:
/// the stored log up to `base_until` (exclusive), then `added` from
/// `added_first` on.
struct View<'a> {
    live: &'a Live,
    snapshot: Position,
    base_until: LogIndex,
    added_first: LogIndex,
    added: Vec<Term>,
    hard_state: HardState,
}

impl<'a> View<'a> {
    fn new(live: &'a Live) -> View<'a> {
        let next = live.last().index.saturating_add(1);
        View {
            live,
            snapshot: live.snapshot,
            base_until: next,
            added_first: next,
            added: Vec::new(),
            hard_state: live.hard_state,
        }
    }

    fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if index < self.snapshot.index {
            return None;
        }
        if index >= self.added_first {
            return self
                .added
                .get(usize::try_from(index - self.added_first).ok()?)
                .copied();
        }
        if index < self.base_until {
            return self.live.term_at(index);
        }
        None
    }

    fn last(&self) -> Position {
        match self.added.last() {
            Some(&term) => Position {
                index: self.added_first + self.added.len() as u64 - 1,
                term,
            },
            None => {
                let index = self.added_first - 1;
                Position {
                    index,
                    term: self.term_at(index).unwrap_or(self.snapshot.term),
                }
            }
        }
    }

    fn reset(&mut self, snapshot: Position) {
        self.snapshot = snapshot;
        self.base_until = 0;
        self.added_first = snapshot.index + 1;
        self.added.clear();
    }

    /// Checks that `first` continues what stays of the log: right after
    /// the snapshot or an existing entry, with a term not below it.
    fn check_attach(&self, first: &Entry) -> Result<Term, StoreError> {
        if first.index <= self.snapshot.index {
            return Err(StoreError::Invalid(format!(
                "entry {} is at or below the snapshot index {}",
                first.index, self.snapshot.index
            )));
        }
        let previous = first.index - 1;
        let previous_term = self.term_at(previous).ok_or_else(|| {
            StoreError::Invalid(format!(
                "entry {} would leave a gap: {previous} is not stored",
                first.index
            ))
        })?;
        if first.term < previous_term {
            return Err(StoreError::Invalid(format!(
                "entry {} has term {}, below the term {previous_term} of entry {previous}",
                first.index, first.term
            )));
        }
        Ok(previous_term)
    }

    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        if first.index >= self.added_first {
            self.added
                .truncate((first.index - self.added_first) as usize);
        } else {
            self.added.clear();
            self.added_first = first.index;
            self.base_until = self.base_until.min(first.index);
        }
        self.added.extend(entries.iter().map(|e| e.term));
    }
}

impl Store {
    /// Opens (creating if needed) the environment in `dir` with a map of
    /// `map_size_mb` MiB, and the WAL of a bootstrapped store; a store of
    /// format version 1 (the log in LMDB) is upgraded on the way.
    ///
    /// # Errors
    /// `Io` if the directory cannot be created, `Locked` if it is in use,
    /// `Corrupt` if it holds something that is not a ticketd store (which
    /// is left untouched), `Invalid` for a map size out of range. A WAL
    /// that cannot be read is not an error here (a wipe must still work):
    /// [`Store::load`] and every write report it.
    pub fn open(dir: &Path, map_size_mb: u64) -> Result<Store, StoreError> {
        if !(1..=MAP_SIZE_MB_MAX).contains(&map_size_mb) {
            return Err(StoreError::Invalid(format!(
                "map size {map_size_mb} MB outside 1..={MAP_SIZE_MB_MAX}"
            )));
        }
        let (lock, created) = lock_dir(dir)?;
        let map_size = usize::try_from(map_size_mb << 20)
            .map_err(|_| StoreError::Invalid(format!("map size {map_size_mb} MB too large")))?;
        let new_files = !dir.join("data.mdb").exists();
        let env = Environment::new()
            .set_max_dbs(MAX_DBS)
            .set_map_size(map_size)
            .open_with_permissions(dir, files::FILE_MODE)
            .map_err(|error| open_error(dir, error))?;
        // The new names (directories, data.mdb, lock.mdb) reach the disk
        // before anything is written that depends on them.
        let synced = files::sync_created(&created).and_then(|()| {
            if new_files {
                files::sync_dir(dir)
            } else {
                Ok(())
            }
        });
        synced.map_err(|error| StoreError::Io(format!("syncing {}: {error}", dir.display())))?;
        check_databases(&env, dir)?;
        if let Some(free) = files::free_bytes(dir)
            && free < map_size as u64
        {
            log::warn!(
                "{} has {} MiB free, less than the {map_size_mb} MiB map (--db_size): writes will fail with 507 before the map is full",
                dir.display(),
                free >> 20
            );
        }
        let [meta, log, state] =
            DATABASES.map(|name| env.create_db(Some(name), DatabaseFlags::empty()));
        let db = Db {
            meta: meta?,
            log: log?,
            state: state?,
            env,
            dir: dir.to_path_buf(),
            used: AtomicU64::new(0),
        };
        db.measure()?;
        let mut store = Store {
            db: Arc::new(db),
            live: None,
            broken: None,
            dir: dir.to_path_buf(),
            map_bytes: map_size as u64,
            #[cfg(test)]
            fail_wal_after_snapshot: false,
            _lock: lock,
        };
        if let Err(error) = store.open_wal() {
            store.broken = Some(error);
        }
        Ok(store)
    }

    fn wal_dir(&self) -> PathBuf {
        self.dir.join(WAL_DIR)
    }

    fn segment_capacity(&self) -> u64 {
        wal::segment_capacity(self.map_bytes)
    }

    /// Finds the WAL of a bootstrapped store (upgrading a version 1
    /// store first) and squares it with the snapshot.
    fn open_wal(&mut self) -> Result<(), StoreError> {
        let version = {
            let txn = self.db.env.begin_ro_txn()?;
            self.db.version(&txn)?
        };
        match version {
            None => return Ok(()),
            Some(FORMAT_VERSION_LMDB_LOG) => self.upgrade()?,
            Some(FORMAT_VERSION) => {}
            Some(other) => return Err(StoreError::UnknownVersion(other)),
        }
        let snapshot = {
            let txn = self.db.env.begin_ro_txn()?;
            self.db.read_snapshot_meta(&txn)?
        };
        let wal_dir = self.wal_dir();
        let Some((wal, replayed)) = Wal::open(&wal_dir, self.segment_capacity())? else {
            return Err(StoreError::Corrupt(format!(
                "{}: no WAL segments, but the store is bootstrapped",
                wal_dir.display()
            )));
        };
        let at = Position {
            index: snapshot.index,
            term: snapshot.term,
        };
        let reconciled = reconcile(&replayed, at)?;
        let mut live = Live {
            wal,
            snapshot: at,
            terms: reconciled.entries.iter().map(|e| e.term).collect(),
            segments: reconciled.segments.into(),
            hard_state: replayed.hard_state,
            app: replayed.app,
            // The WAL's own end, even where the snapshot is past it (the
            // reset below is written after it).
            wal_last: {
                let (index, term) = replayed.last();
                Position { index, term }
            },
            pending_reset: false,
        };
        if reconciled.reset {
            warn!(
                "the WAL did not hold the snapshot's entry {} (a crash while a snapshot from the leader was stored): its log after it is dropped",
                at.index
            );
            live.write(&[OpRef::Reset {
                index: at.index,
                term: at.term,
            }])?;
        }
        // A crash after a snapshot was stored, before the deletion.
        live.remove_old()?;
        self.live = Some(live);
        Ok(())
    }

    /// Moves a version 1 store's log, hard state and application record
    /// into a new WAL (synced), then empties them from LMDB and records
    /// version 2 in one transaction. A crash before that commit leaves
    /// version 1 and the upgrade starts over (the half-made WAL is
    /// replaced); after it, the WAL is the log.
    fn upgrade(&mut self) -> Result<(), StoreError> {
        let txn = self.db.env.begin_ro_txn()?;
        let hard_state = self.db.read_hard_state(&txn)?;
        let snapshot = self.db.read_snapshot_meta(&txn)?;
        let app = self.db.read_app(&txn)?;
        let entries = self.db.read_log(&txn, &snapshot)?;
        drop(txn);
        let last = entries.last().map_or(
            Position {
                index: snapshot.index,
                term: snapshot.term,
            },
            |e| Position {
                index: e.index,
                term: e.term,
            },
        );
        check_hard_state(&hard_state, last).map_err(StoreError::Corrupt)?;
        check_app(&app, last).map_err(StoreError::Corrupt)?;
        log::info!(
            "upgrading {} from format version 1: moving {} log entries into a WAL",
            self.dir.display(),
            entries.len()
        );
        let header = Header {
            seq: 1,
            base_index: snapshot.index,
            base_term: snapshot.term,
            hard_state,
            app,
        };
        let mut wal = Wal::create(&self.wal_dir(), header, self.segment_capacity())?;
        // In frames of at most UPGRADE_FRAME bytes (one frame can hold at
        // most wal::FRAME_MAX), each continuing from the one before.
        let mut state = header;
        let mut rest = &entries[..];
        while !rest.is_empty() {
            // The batch's op count, op tag and entry count come first.
            let mut bytes = 16usize;
            let mut count = 0;
            for entry in rest {
                // An entry's encoding: index, term, kind, data length, data.
                let size = entry.data.len().saturating_add(21);
                if count > 0 && bytes.saturating_add(size) > UPGRADE_FRAME {
                    break;
                }
                bytes = bytes.saturating_add(size);
                count += 1;
            }
            let (chunk, tail) = rest.split_at(count);
            let mut frame = wal::record::encode_batch(&[OpRef::Entries(chunk)]);
            wal.append(&mut frame, &state)?;
            if let Some(last) = chunk.last() {
                state.base_index = last.index;
                state.base_term = last.term;
            }
            rest = tail;
        }
        drop(wal);
        let mut txn = self.db.env.begin_rw_txn()?;
        txn.clear_db(self.db.log)?;
        for (db, key) in [(self.db.meta, KEY_HARD_STATE), (self.db.state, KEY_APP)] {
            match txn.del(db, &key, None) {
                Ok(()) | Err(lmdb::Error::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let version: [u8; 8] = encode_u64s([FORMAT_VERSION]);
        put_record(
            &mut txn,
            self.db.meta,
            KEY_VERSION,
            &[&version],
            WriteFlags::empty(),
        )?;
        txn.commit().map_err(|e| self.db.commit_error(e))?;
        self.db.measure()?;
        log::info!("upgraded {} to format version 2", self.dir.display());
        Ok(())
    }

    /// Empties the data directory `dir` (LMDB's two files and the WAL; the
    /// lock file stays, and so does anything that is not ours), under its
    /// lock, and says what it held. A directory that does not exist is
    /// left alone.
    ///
    /// # Errors
    /// `Locked` while a node runs on it, `Corrupt` if it holds something
    /// that is not a ticketd store (left untouched), `Io` if a file
    /// cannot be removed or the WAL directory holds a file that is not a
    /// segment (then nothing is removed: a wipe that stopped half-way
    /// would leave a store that no longer opens).
    pub fn wipe(dir: &Path, map_size_mb: u64) -> Result<Wiped, StoreError> {
        if !dir.exists() {
            return Ok(Wiped::Empty);
        }
        let store = Store::open(dir, map_size_mb)?;
        let held = match store.load() {
            Ok(None) => Wiped::Empty,
            Ok(Some(loaded)) => Wiped::Identity(loaded.identity),
            Err(why) => Wiped::Unreadable(why.to_string()),
        };
        let wal_dir = store.wal_dir();
        if let Some(name) = foreign_file(&wal_dir)? {
            return Err(StoreError::Io(format!(
                "{} holds {name}, which is not a WAL segment: move it away and retry \
                 (nothing was wiped)",
                wal_dir.display()
            )));
        }
        let Store {
            db, live, _lock, ..
        } = store;
        // Closed before their files go; the lock is held until they are.
        drop(live);
        drop(db);
        for (_, path) in wal::list_segments(&wal_dir)? {
            remove_if_there(&path)?;
        }
        match fs::remove_dir(&wal_dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(StoreError::Io(format!(
                    "removing {}: {error}",
                    wal_dir.display()
                )));
            }
        }
        for name in LMDB_FILES {
            remove_if_there(&dir.join(name))?;
        }
        sync_dir(dir)?;
        drop(_lock);
        Ok(held)
    }

    /// [`Store::wipe`], then removes the lock file and the directory if
    /// nothing else is left in it (`ticketd drop`).
    ///
    /// # Errors
    /// As [`Store::wipe`].
    pub fn drop_dir(dir: &Path, map_size_mb: u64) -> Result<Wiped, StoreError> {
        let held = Store::wipe(dir, map_size_mb)?;
        remove_if_there(&dir.join(LOCK_FILE))?;
        // Fails (and is left) when the operator keeps other files there.
        let _ = fs::remove_dir(dir);
        Ok(held)
    }

    /// Reads and checks everything (the WAL from its files, not from
    /// memory); `None` for a store never bootstrapped.
    ///
    /// # Errors
    /// `UnknownVersion`, or `Corrupt` naming the first inconsistent record.
    pub fn load(&self) -> Result<Option<Loaded>, StoreError> {
        if let Some(error) = &self.broken {
            return Err(error.clone());
        }
        let txn = self.db.env.begin_ro_txn()?;
        let Some(version) = self.db.version(&txn)? else {
            return match self.db.is_empty(&txn)? {
                true => Ok(None),
                false => Err(StoreError::Corrupt("format version missing".into())),
            };
        };
        if version != FORMAT_VERSION {
            return Err(StoreError::UnknownVersion(version));
        }
        let identity = self.db.read_identity(&txn)?;
        let snapshot = self.db.read_snapshot(&txn)?;
        let removed = get_record(&txn, self.db.meta, KEY_REMOVED, "removed mark")?.is_some();
        drop(txn);
        let wal_dir = self.wal_dir();
        let scan = wal::scan(&wal_dir)?.ok_or_else(|| {
            StoreError::Corrupt(format!("{}: no WAL segments", wal_dir.display()))
        })?;
        let at = Position {
            index: snapshot.meta.index,
            term: snapshot.meta.term,
        };
        let replayed = scan.replayed;
        let reconciled = reconcile(&replayed, at)?;
        let entries = if reconciled.reset {
            Vec::new()
        } else {
            reconciled.entries
        };
        let last = entries.last().map_or(at, |e| Position {
            index: e.index,
            term: e.term,
        });
        check_hard_state(&replayed.hard_state, last).map_err(StoreError::Corrupt)?;
        check_app(&replayed.app, last).map_err(StoreError::Corrupt)?;
        Ok(Some(Loaded {
            identity,
            hard_state: replayed.hard_state,
            snapshot,
            entries,
            app: replayed.app,
            removed,
        }))
    }

    /// Records, durably, that this node was removed from its cluster: a
    /// later start refuses the directory (the node would otherwise try to
    /// take part again with a stale view).
    ///
    /// # Errors
    /// `MapFull` or `Lmdb` if the record cannot be written.
    pub fn mark_removed(&mut self) -> Result<(), StoreError> {
        let mut txn = self.db.env.begin_rw_txn()?;
        put_record(
            &mut txn,
            self.db.meta,
            KEY_REMOVED,
            &[&[1]],
            WriteFlags::empty(),
        )?;
        txn.commit().map_err(|e| self.db.commit_error(e))?;
        Ok(())
    }

    /// Rewrites the identity record (a directory from before incarnations
    /// gets one on its first start).
    ///
    /// # Errors
    /// `Invalid` for a different cluster or node id than stored; `MapFull`
    /// or `Lmdb` if the record cannot be written.
    pub fn set_identity(&mut self, identity: Identity) -> Result<(), StoreError> {
        let mut txn = self.db.env.begin_rw_txn()?;
        let stored = self.db.read_identity(&txn)?;
        if (stored.cluster_id, stored.node_id) != (identity.cluster_id, identity.node_id) {
            return Err(StoreError::Invalid(
                "the cluster and node id of a data directory never change".into(),
            ));
        }
        let body: [u8; 24] =
            encode_u64s([identity.cluster_id, identity.node_id, identity.incarnation]);
        put_record(
            &mut txn,
            self.db.meta,
            KEY_IDENTITY,
            &[&body],
            WriteFlags::empty(),
        )?;
        txn.commit().map_err(|e| self.db.commit_error(e))?;
        Ok(())
    }

    /// Makes an empty store a bootstrapped one: a new WAL (empty hard
    /// state and application record), then format version, identity and
    /// `snapshot` (the initial state: index 0) in one LMDB transaction. A
    /// crash in between leaves an empty store, bootstrapped again later.
    ///
    /// # Errors
    /// `Invalid` if the store is not empty, `identity.node_id` is 0 or the
    /// snapshot index is not 0.
    pub fn bootstrap(&mut self, identity: Identity, snapshot: &Snapshot) -> Result<(), StoreError> {
        if identity.node_id == 0 {
            return Err(StoreError::Invalid("node id 0".into()));
        }
        if snapshot.meta.index != 0 {
            return Err(StoreError::Invalid(format!(
                "initial snapshot at index {}, not 0",
                snapshot.meta.index
            )));
        }
        {
            let txn = self.db.env.begin_ro_txn()?;
            if !self.db.is_empty(&txn)? {
                return Err(StoreError::Invalid("store already bootstrapped".into()));
            }
        }
        let header = Header {
            seq: 1,
            base_index: 0,
            base_term: snapshot.meta.term,
            hard_state: HardState::default(),
            app: AppRecord::default(),
        };
        let wal = Wal::create(&self.wal_dir(), header, self.segment_capacity())?;
        let mut txn = self.db.env.begin_rw_txn()?;
        let flags = WriteFlags::empty();
        let version: [u8; 8] = encode_u64s([FORMAT_VERSION]);
        put_record(&mut txn, self.db.meta, KEY_VERSION, &[&version], flags)?;
        let identity: [u8; 24] =
            encode_u64s([identity.cluster_id, identity.node_id, identity.incarnation]);
        put_record(&mut txn, self.db.meta, KEY_IDENTITY, &[&identity], flags)?;
        self.db.put_snapshot_in(&mut txn, snapshot)?;
        txn.commit().map_err(|e| self.db.commit_error(e))?;
        self.db.measure()?;
        self.broken = None;
        self.live = Some(Live {
            wal,
            snapshot: Position {
                index: 0,
                term: snapshot.meta.term,
            },
            terms: VecDeque::new(),
            segments: VecDeque::new(),
            hard_state: HardState::default(),
            app: AppRecord::default(),
            wal_last: Position {
                index: 0,
                term: snapshot.meta.term,
            },
            pending_reset: false,
        });
        Ok(())
    }

    fn live(&self) -> Result<&Live, StoreError> {
        if let Some(error) = &self.broken {
            return Err(error.clone());
        }
        self.live
            .as_ref()
            .ok_or_else(|| StoreError::Invalid("store is not bootstrapped".into()))
    }

    /// Writes one batch: one WAL frame, one fdatasync. A batch with a
    /// snapshot first writes a changed term and vote to the WAL, then
    /// stores the snapshot in LMDB (its own durable commit), then the
    /// rest. The result is checked the way `load` checks it before
    /// anything is written.
    ///
    /// # Errors
    /// `MapFull` or `NoSpace` (nothing written), `Invalid` for a batch that
    /// would leave a gap, an older snapshot, a commit past the last entry,
    /// a term below the log's, or an unbootstrapped store; `Io` when the
    /// WAL may hold the batch or not (the node must stop).
    pub fn persist(&mut self, write: &Write) -> Result<(), StoreError> {
        self.persist_all(std::slice::from_ref(write))
    }

    /// Writes several batches, in order, as one WAL frame (one fsync):
    /// what `persist` does for each, all or nothing. Only the first may
    /// carry a snapshot.
    ///
    /// # Errors
    /// As [`Store::persist`], for the first batch that fails.
    pub fn persist_all(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let live = self.live()?;
        let mut view = View::new(live);
        let mut ops: Vec<OpRef<'_>> = Vec::new();
        let pending_reset = live.pending_reset;
        if pending_reset {
            ops.push(OpRef::Reset {
                index: live.snapshot.index,
                term: live.snapshot.term,
            });
        }
        let mut install = None;
        let mut has_entries = false;
        for (n, write) in writes.iter().enumerate() {
            check_batch(write.entries).map_err(StoreError::Invalid)?;
            if let Some(snapshot) = write.snapshot {
                if n > 0 {
                    return Err(StoreError::Invalid(
                        "a snapshot in a batch other than the first".into(),
                    ));
                }
                if snapshot.meta.index < view.snapshot.index {
                    return Err(StoreError::Invalid(format!(
                        "snapshot at {} is older than the stored one at {}",
                        snapshot.meta.index, view.snapshot.index
                    )));
                }
                let at = Position {
                    index: snapshot.meta.index,
                    term: snapshot.meta.term,
                };
                view.reset(at);
                ops.push(OpRef::Reset {
                    index: at.index,
                    term: at.term,
                });
                install = Some(snapshot);
            }
            if let Some(first) = write.entries.first() {
                let prev_term = view.check_attach(first)?;
                if first.index <= view.last().index {
                    ops.push(OpRef::Truncate {
                        from: first.index,
                        prev_term,
                    });
                }
                view.append(write.entries);
                ops.push(OpRef::Entries(write.entries));
                has_entries = true;
            }
            let hard_state = write.hard_state.copied().unwrap_or(view.hard_state);
            check_hard_state(&hard_state, view.last()).map_err(StoreError::Invalid)?;
            if let Some(hard_state) = write.hard_state {
                view.hard_state = *hard_state;
                ops.push(OpRef::HardState(*hard_state));
            }
            if let Some(app) = write.app {
                check_app(&app, view.last()).map_err(StoreError::Invalid)?;
                ops.push(OpRef::App(app));
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        let mut frame = wal::record::encode_batch(&ops);
        // Before anything is written (a snapshot's store included).
        live.wal.check_frame(&frame)?;
        // The store is held to the map: LMDB's pages and the WAL's bytes.
        let used = self.db.used().saturating_add(live.wal.bytes());
        if has_entries && used.saturating_add(frame.len() as u64) > self.map_bytes {
            return Err(StoreError::MapFull);
        }
        let durable = live.hard_state;
        let Some(live) = self.live.as_mut() else {
            return Err(StoreError::Invalid("store is not bootstrapped".into()));
        };
        if let Some(snapshot) = install {
            // A term the snapshot speaks for is durable before the
            // snapshot: after a crash between the two, the stored hard
            // state is never behind the snapshot's term. The commit stays
            // where the old log has it.
            if let Some(hard_state) = writes[0].hard_state
                && (hard_state.term, hard_state.vote) != (durable.term, durable.vote)
            {
                live.write(&[OpRef::HardState(HardState {
                    commit: durable.commit,
                    ..*hard_state
                })])?;
            }
            self.db.put_snapshot(snapshot)?;
            // From here the disk says the log restarts at the snapshot
            // (`reconcile`), whatever becomes of the WAL write below.
            live.snapshot = Position {
                index: snapshot.meta.index,
                term: snapshot.meta.term,
            };
            live.terms.clear();
            live.segments.clear();
            live.pending_reset = true;
            #[cfg(test)]
            if std::mem::take(&mut self.fail_wal_after_snapshot) {
                return Err(StoreError::NoSpace);
            }
        }
        let seq = live.wal.append(&mut frame, &live.header())?;
        for op in &ops {
            live.apply(op, seq);
        }
        if install.is_some() || pending_reset {
            // The log starts over: the segments before hold nothing.
            live.remove_old()?;
        }
        Ok(())
    }

    /// Stores `snapshot` and drops the log up to its index: the three
    /// steps of [`Store::check_compaction`], [`SnapshotStore::put`] and
    /// [`Store::compacted`] in a row.
    ///
    /// # Errors
    /// `Invalid` if the index is not in the log (already compacted or not
    /// there yet) or the term does not match the entry there; `MapFull`.
    pub fn compact(&mut self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.check_compaction(&snapshot.meta)?;
        self.snapshot_store().put(snapshot)?;
        self.compacted(&snapshot.meta)
    }

    /// The handle that stores snapshots without this store's lock.
    pub fn snapshot_store(&self) -> SnapshotStore {
        SnapshotStore(Arc::clone(&self.db))
    }

    /// Whether a snapshot at `meta` may be stored as a compaction: its
    /// entry is in the log, with its term.
    ///
    /// # Errors
    /// `Invalid` naming why not.
    pub fn check_compaction(&self, meta: &SnapshotMeta) -> Result<(), StoreError> {
        let live = self.live()?;
        let index = meta.index;
        if index <= live.snapshot.index {
            return Err(StoreError::Invalid(format!(
                "compaction to {index}: already compacted to {}",
                live.snapshot.index
            )));
        }
        let term = live
            .term_at(index)
            .ok_or_else(|| StoreError::Invalid(format!("compaction to {index}: not in the log")))?;
        if term != meta.term {
            return Err(StoreError::Invalid(format!(
                "compaction to {index}: snapshot term {} but the entry has term {term}",
                meta.term
            )));
        }
        Ok(())
    }

    /// A compaction's snapshot is stored: the log up to it goes, and the
    /// WAL segments wholly below it are deleted. The caller stores no
    /// other snapshot between the check and this (a leader's snapshot
    /// must not be overwritten by an older compaction).
    ///
    /// # Errors
    /// `Invalid` if the log changed under the compaction; `Io` if a
    /// segment cannot be deleted.
    pub fn compacted(&mut self, meta: &SnapshotMeta) -> Result<(), StoreError> {
        self.check_compaction(meta)?;
        let Some(live) = self.live.as_mut() else {
            return Err(StoreError::Invalid("store is not bootstrapped".into()));
        };
        let drop = (meta.index - live.snapshot.index) as usize;
        live.terms.drain(..drop);
        live.segments.drain(..drop);
        live.snapshot = Position {
            index: meta.index,
            term: meta.term,
        };
        live.remove_old()
    }

    /// How long the last WAL append's `fdatasync` took (zero before any).
    pub fn last_sync(&self) -> std::time::Duration {
        self.live
            .as_ref()
            .map_or(std::time::Duration::ZERO, |l| l.wal.last_sync())
    }

    /// Space used and left, LMDB and WAL together.
    ///
    /// # Errors
    /// `Lmdb` if the environment cannot be queried.
    pub fn usage(&self) -> Result<Usage, StoreError> {
        let lmdb_used = self.db.measure()?;
        let (wal_bytes, log_entries) = self
            .live
            .as_ref()
            .map_or((0, 0), |l| (l.wal.bytes(), l.terms.len() as u64));
        let map_size_bytes = self.map_bytes;
        let used_bytes = lmdb_used.saturating_add(wal_bytes);
        Ok(Usage {
            map_size_bytes,
            used_bytes,
            available_bytes: map_size_bytes.saturating_sub(used_bytes),
            wal_bytes,
            log_entries,
            fs_free_bytes: files::free_bytes(&self.dir),
        })
    }

    /// Keeps `bytes` of disk allocated past the end of `data.mdb`
    /// (`fallocate` with `KEEP_SIZE`) and past the WAL's last frame
    /// (written zeros, see [`wal`]), so
    /// that once the file system is full the writes that free space
    /// (closing a session, releasing, unlocking) still find blocks for
    /// what they write. Best effort: a file system without `fallocate`,
    /// or one already full, just has no reserve.
    pub fn keep_disk_reserve(&mut self, bytes: u64) {
        // A quarter for the WAL, where the freeing writes go (they are
        // small); the rest for LMDB, where the compaction that frees WAL
        // segments stores its snapshot.
        let wal_bytes = bytes / 4;
        let bytes = bytes - wal_bytes;
        let path = self.dir.join("data.mdb");
        if let Ok(file) = fs::OpenOptions::new().write(true).open(&path)
            && let Ok(meta) = file.metadata()
        {
            let _ = rustix::fs::fallocate(
                &file,
                rustix::fs::FallocateFlags::KEEP_SIZE,
                meta.len(),
                bytes,
            );
        }
        if let Some(live) = self.live.as_mut() {
            live.wal.keep_reserve(wal_bytes);
        }
    }
}

/// What the WAL's log is, seen from the snapshot stored in LMDB.
struct Reconciled {
    /// The entries after the snapshot, and their segments.
    entries: Vec<Entry>,
    segments: Vec<u64>,
    /// The WAL does not hold the snapshot's entry: the log after the
    /// snapshot is dropped and the WAL must be reset to it.
    reset: bool,
}

/// Squares the WAL with the snapshot at `at` (see the module's crash
/// rules).
fn reconcile(replayed: &Replayed, at: Position) -> Result<Reconciled, StoreError> {
    if let Some((index, _)) = replayed.reset
        && index > at.index
    {
        return Err(StoreError::Corrupt(format!(
            "the WAL was reset to a snapshot at {index}, but LMDB holds the snapshot at {}",
            at.index
        )));
    }
    if replayed.base_index > at.index {
        return Err(StoreError::Corrupt(format!(
            "the WAL starts after index {} but the snapshot is at {}: entries {}..={} are missing",
            replayed.base_index,
            at.index,
            at.index.saturating_add(1),
            replayed.base_index
        )));
    }
    if replayed.term_at(at.index) != Some(at.term) {
        return Ok(Reconciled {
            entries: Vec::new(),
            segments: Vec::new(),
            reset: true,
        });
    }
    let skip = (at.index - replayed.base_index) as usize;
    Ok(Reconciled {
        entries: replayed.entries[skip.min(replayed.entries.len())..].to_vec(),
        segments: replayed.segments[skip.min(replayed.segments.len())..].to_vec(),
        reset: false,
    })
}

impl Db {
    fn version<T: Transaction>(&self, txn: &T) -> Result<Option<u64>, StoreError> {
        let Some(body) = get_record(txn, self.meta, KEY_VERSION, "format version")? else {
            return Ok(None);
        };
        let [version] = decode_u64s::<1>(body)
            .ok_or_else(|| StoreError::Corrupt("format version: malformed".into()))?;
        Ok(Some(version))
    }

    fn is_empty<T: Transaction>(&self, txn: &T) -> Result<bool, StoreError> {
        for db in [self.meta, self.log, self.state] {
            if txn.stat(db)?.entries() != 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// LMDB's used bytes now (pages touched minus the free list); also
    /// kept for [`Db::used`].
    fn measure(&self) -> Result<u64, StoreError> {
        let info = self.env.info()?;
        let page_size = self.env.stat()?.page_size() as u64;
        let free_pages = self.env.freelist()? as u64;
        let pages_touched = info.last_pgno() as u64 + 1;
        let used = pages_touched.saturating_sub(free_pages) * page_size;
        self.used.store(used, Ordering::Relaxed);
        Ok(used)
    }

    fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// What a failed commit means. LMDB reports a short write as `EIO`
    /// (it retries nothing): when the file system is as good as full, that
    /// is the disk filling up mid-write, a transaction rolled back like any
    /// other `ENOSPC`, not a failing disk.
    fn commit_error(&self, error: lmdb::Error) -> StoreError {
        const EIO: i32 = 5;
        let nearly_full = || files::free_bytes(&self.dir).is_some_and(|free| free < 1 << 20);
        match error {
            lmdb::Error::Other(EIO) if nearly_full() => StoreError::NoSpace,
            other => StoreError::from(other),
        }
    }

    fn put_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let mut txn = self.env.begin_rw_txn()?;
        self.put_snapshot_in(&mut txn, snapshot)?;
        txn.commit().map_err(|e| self.commit_error(e))?;
        self.measure()?;
        Ok(())
    }

    fn put_snapshot_in(
        &self,
        txn: &mut lmdb::RwTransaction<'_>,
        snapshot: &Snapshot,
    ) -> Result<(), StoreError> {
        let meta = encode_snapshot_meta(&snapshot.meta);
        put_record(
            txn,
            self.meta,
            KEY_SNAPSHOT_META,
            &[&meta],
            WriteFlags::empty(),
        )?;
        put_record(
            txn,
            self.meta,
            KEY_SNAPSHOT_DATA,
            &[&snapshot.data],
            WriteFlags::empty(),
        )?;
        Ok(())
    }

    fn read_identity<T: Transaction>(&self, txn: &T) -> Result<Identity, StoreError> {
        let body = required_record(txn, self.meta, KEY_IDENTITY, "identity")?;
        let [cluster_id, node_id, incarnation] = match decode_u64s::<3>(body) {
            Some(values) => values,
            None => {
                let [cluster_id, node_id] = decode_u64s(body)
                    .ok_or_else(|| StoreError::Corrupt("identity: malformed".into()))?;
                [cluster_id, node_id, 0]
            }
        };
        if node_id == 0 {
            return Err(StoreError::Corrupt("identity: node id 0".into()));
        }
        Ok(Identity {
            cluster_id,
            node_id,
            incarnation,
        })
    }

    /// Version 1 only (the upgrade reads it).
    fn read_hard_state<T: Transaction>(&self, txn: &T) -> Result<HardState, StoreError> {
        let body = required_record(txn, self.meta, KEY_HARD_STATE, "hard state")?;
        decode_hard_state(body).ok_or_else(|| StoreError::Corrupt("hard state: malformed".into()))
    }

    fn read_snapshot_meta<T: Transaction>(&self, txn: &T) -> Result<SnapshotMeta, StoreError> {
        let body = required_record(txn, self.meta, KEY_SNAPSHOT_META, "snapshot meta")?;
        decode_snapshot_meta(body)
            .ok_or_else(|| StoreError::Corrupt("snapshot meta: malformed".into()))
    }

    fn read_snapshot<T: Transaction>(&self, txn: &T) -> Result<Snapshot, StoreError> {
        let meta = self.read_snapshot_meta(txn)?;
        let data = required_record(txn, self.meta, KEY_SNAPSHOT_DATA, "snapshot data")?;
        Ok(Snapshot {
            meta,
            data: data.to_vec(),
        })
    }

    /// Version 1 only (the upgrade reads it).
    fn read_app<T: Transaction>(&self, txn: &T) -> Result<AppRecord, StoreError> {
        let body = required_record(txn, self.state, KEY_APP, "application record")?;
        let [high, applied] = decode_u64s(body)
            .ok_or_else(|| StoreError::Corrupt("application record: malformed".into()))?;
        Ok(AppRecord { high, applied })
    }

    /// A version 1 log, checked to start right after the snapshot, to be
    /// contiguous and to have terms that never decrease.
    fn read_log<T: Transaction>(
        &self,
        txn: &T,
        snapshot: &SnapshotMeta,
    ) -> Result<Vec<Entry>, StoreError> {
        let capacity = txn.stat(self.log)?.entries();
        let mut entries = Vec::with_capacity(capacity);
        let first = snapshot.index.checked_add(1).ok_or_else(|| {
            StoreError::Corrupt(format!("snapshot meta: index {}", snapshot.index))
        })?;
        let mut term_min = snapshot.term;
        let mut cursor = txn.open_ro_cursor(self.log)?;
        for (expected, item) in (first..).zip(cursor.iter_start()) {
            let (key, value) = item?;
            let index = parse_log_key(key)?;
            if index != expected {
                return Err(StoreError::Corrupt(format!(
                    "log entry {index} where {expected} was expected (snapshot at {})",
                    snapshot.index
                )));
            }
            let entry = decode_entry(index, value)?;
            if entry.term < term_min {
                return Err(StoreError::Corrupt(format!(
                    "log entry {index}: term {} below the previous term {term_min}",
                    entry.term
                )));
            }
            term_min = entry.term;
            entries.push(entry);
        }
        Ok(entries)
    }
}

/// The name of an entry in the WAL directory that is not a segment (a
/// file with a segment's name), if there is one.
fn foreign_file(wal_dir: &Path) -> Result<Option<String>, StoreError> {
    let entries = match fs::read_dir(wal_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(StoreError::Io(format!(
                "reading {}: {error}",
                wal_dir.display()
            )));
        }
    };
    let unreadable =
        |error: std::io::Error| StoreError::Io(format!("reading {}: {error}", wal_dir.display()));
    for entry in entries {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // A directory (or link) with a segment's name is not one either:
        // removing it would fail after the segments before it had gone.
        let is_file = entry.file_type().map_err(unreadable)?.is_file();
        if !is_file || wal::segment_name(&name).is_none() {
            return Ok(Some(name.into_owned()));
        }
    }
    Ok(None)
}

fn remove_if_there(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StoreError::Io(format!(
            "removing {}: {error}",
            path.display()
        ))),
    }
}
/// Entries of one batch: indexes from 1 up, consecutive, terms never
/// decreasing.
fn check_batch(entries: &[Entry]) -> Result<(), String> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    if first.index == 0 {
        return Err("entry with index 0".into());
    }
    for pair in entries.windows(2) {
        if pair[1].index.checked_sub(1) != Some(pair[0].index) {
            return Err(format!(
                "entries not contiguous: {} then {}",
                pair[0].index, pair[1].index
            ));
        }
        if pair[1].term < pair[0].term {
            return Err(format!(
                "entry {} has a lower term than the one before",
                pair[1].index
            ));
        }
    }
    Ok(())
}

/// A node never commits past its log, nor holds entries from a term later
/// than its own.
fn check_hard_state(hard_state: &HardState, last: Position) -> Result<(), String> {
    if hard_state.commit > last.index {
        return Err(format!(
            "hard state commit {} is past the last log index {}",
            hard_state.commit, last.index
        ));
    }
    if hard_state.term < last.term {
        return Err(format!(
            "hard state term {} is below the last log term {}",
            hard_state.term, last.term
        ));
    }
    Ok(())
}

fn check_app(app: &AppRecord, last: Position) -> Result<(), String> {
    if app.applied > last.index {
        return Err(format!(
            "application applied index {} is past the last log index {}",
            app.applied, last.index
        ));
    }
    Ok(())
}

/// Creates `dir` (0700) and takes its lock file (0600, never through a
/// symlink); also returns the directories it created.
fn lock_dir(dir: &Path) -> Result<(File, Vec<PathBuf>), StoreError> {
    let shown = dir.display();
    let created = files::create_private_dirs(dir)
        .map_err(|error| StoreError::Io(format!("creating {shown}: {error}")))?;
    let path: PathBuf = dir.join(LOCK_FILE);
    let file = files::open_private_no_follow(&path)
        .map_err(|error| StoreError::Io(format!("opening {}: {error}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok((file, created)),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked(shown.to_string())),
        Err(fs::TryLockError::Error(error)) => Err(StoreError::Io(format!(
            "locking {}: {error}",
            path.display()
        ))),
    }
}

/// Makes the removal of a directory's files durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|error| StoreError::Io(format!("syncing {}: {error}", dir.display())))
}

fn open_error(dir: &Path, error: lmdb::Error) -> StoreError {
    match error {
        lmdb::Error::Invalid => StoreError::Corrupt(format!(
            "{}: data.mdb is not an LMDB environment",
            dir.display()
        )),
        other => match StoreError::from(other) {
            StoreError::Lmdb(what) => {
                StoreError::Lmdb(format!("opening {}: {what}", dir.display()))
            }
            mapped => mapped,
        },
    }
}

/// Refuses an environment that holds databases we do not know (it is not
/// ours), or a bootstrapped one that lost one of ours.
fn check_databases(env: &Environment, dir: &Path) -> Result<(), StoreError> {
    let found = databases_in(env, dir)?;
    if found.contains(&"meta") && found.len() < DATABASES.len() {
        // Opened only now: the read transaction above has ended, and LMDB
        // allows one per thread.
        let meta = env.open_db(Some("meta"))?;
        let txn = env.begin_ro_txn()?;
        if txn.stat(meta)?.entries() != 0 {
            return Err(StoreError::Corrupt(format!(
                "{}: databases missing (found only {found:?})",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// The named databases of the environment, all of which must be ours.
fn databases_in(env: &Environment, dir: &Path) -> Result<Vec<&'static str>, StoreError> {
    let main = env.open_db(None)?;
    let txn = env.begin_ro_txn()?;
    let mut found = Vec::new();
    let mut cursor = txn.open_ro_cursor(main)?;
    for item in cursor.iter_start() {
        let (key, _) = item?;
        match DATABASES.iter().find(|name| name.as_bytes() == key) {
            Some(name) => found.push(*name),
            None => {
                let shown = String::from_utf8_lossy(&key[..key.len().min(64)]).into_owned();
                return Err(StoreError::Corrupt(format!(
                    "{}: unknown database {shown:?}, not a ticketd data directory",
                    dir.display()
                )));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
