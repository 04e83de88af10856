//! Durable storage of one node: the Raft log, hard state and snapshot, the
//! node's identity, and the application record, in one LMDB environment per
//! data directory. This is the only module that talks to LMDB; it knows the
//! Raft value types but no Raft logic, and never touches the network.
//!
//! Every write is one LMDB write transaction with LMDB's default durable
//! commit (fsync), so a crash leaves either all of a `persist` or none of
//! it. Everything read back is checked (checksums, contiguity, the Raft
//! invariants that tie the records together); anything off is
//! [`StoreError::Corrupt`], naming the record.
//!
//! Layout (named databases):
//! - `meta`: `version`, `identity`, `hard_state`, `snapshot_meta`,
//!   `snapshot_data`, and `removed` once the node was removed from its
//!   cluster;
//! - `log`: index (u64 big-endian) → term, kind, data;
//! - `state`: `app` → the application's `high` and `applied`.

pub mod codec;
mod error;
mod files;
pub mod wal;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use lmdb::{Cursor, Database, DatabaseFlags, Environment, RwTransaction, Transaction, WriteFlags};

use crate::raft::{Entry, HardState, LogIndex, Snapshot, SnapshotMeta, Term};
use codec::*;
pub use error::StoreError;

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
/// lmdb-sys's `MDB_LAST` cursor operation (not re-exported by lmdb-rkv).
const MDB_LAST: u32 = 6;

/// LMDB's files in a data directory: what [`Store::wipe`] removes.
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
/// transaction as the log, to cross-check it after a restart.
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

/// Space accounting, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub map_size_bytes: u64,
    /// Pages holding live data (excludes LMDB's free list).
    pub used_bytes: u64,
    pub available_bytes: u64,
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

/// One node's open data directory.
pub struct Store {
    // Declared before `_lock` so the environment closes before the lock
    // is released.
    env: Environment,
    meta: Database,
    log: Database,
    state: Database,
    /// The directory, for the file system's free space.
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) the environment in `dir` with a map of
    /// `map_size_mb` MiB.
    ///
    /// # Errors
    /// `Io` if the directory cannot be created, `Locked` if it is in use,
    /// `Corrupt` if it holds something that is not a ticketd store (which
    /// is left untouched), `Invalid` for a map size out of range.
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
        Ok(Store {
            meta: meta?,
            log: log?,
            state: state?,
            env,
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Empties the data directory `dir` (LMDB's two files; the lock file
    /// stays, and so does anything that is not ours), under its lock, and
    /// says what it held. A directory that does not exist is left alone.
    ///
    /// # Errors
    /// `Locked` while a node runs on it, `Corrupt` if it holds something
    /// that is not a ticketd store (left untouched), `Io` if a file
    /// cannot be removed.
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
        let Store { env, _lock, .. } = store;
        // Closed before its files go; the lock is held until they are.
        drop(env);
        for name in LMDB_FILES {
            let path = dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(StoreError::Io(format!(
                        "removing {}: {error}",
                        path.display()
                    )));
                }
            }
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
        let lock = dir.join(LOCK_FILE);
        match fs::remove_file(&lock) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(StoreError::Io(format!(
                    "removing {}: {error}",
                    lock.display()
                )));
            }
        }
        // Fails (and is left) when the operator keeps other files there.
        let _ = fs::remove_dir(dir);
        Ok(held)
    }

    /// Reads and checks everything; `None` for a store never bootstrapped.
    ///
    /// # Errors
    /// `UnknownVersion`, or `Corrupt` naming the first inconsistent record.
    pub fn load(&self) -> Result<Option<Loaded>, StoreError> {
        let txn = self.env.begin_ro_txn()?;
        let Some(version) = get_record(&txn, self.meta, KEY_VERSION, "format version")? else {
            return match self.is_empty(&txn)? {
                true => Ok(None),
                false => Err(StoreError::Corrupt("format version missing".into())),
            };
        };
        let version = decode_u64s::<1>(version)
            .ok_or_else(|| StoreError::Corrupt("format version: malformed".into()))?[0];
        if version != FORMAT_VERSION {
            return Err(StoreError::UnknownVersion(version));
        }
        let identity = self.read_identity(&txn)?;
        let hard_state = self.read_hard_state(&txn)?;
        let snapshot = self.read_snapshot(&txn)?;
        let app = self.read_app(&txn)?;
        let entries = self.read_log(&txn, &snapshot.meta)?;
        let last = entries.last().map_or(
            Position {
                index: snapshot.meta.index,
                term: snapshot.meta.term,
            },
            |entry| Position {
                index: entry.index,
                term: entry.term,
            },
        );
        check_hard_state(&hard_state, last).map_err(StoreError::Corrupt)?;
        check_app(&app, last).map_err(StoreError::Corrupt)?;
        let removed = get_record(&txn, self.meta, KEY_REMOVED, "removed mark")?.is_some();
        Ok(Some(Loaded {
            identity,
            hard_state,
            snapshot,
            entries,
            app,
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
        let mut txn = self.env.begin_rw_txn()?;
        put_record(
            &mut txn,
            self.meta,
            KEY_REMOVED,
            &[&[1]],
            WriteFlags::empty(),
        )?;
        txn.commit().map_err(|e| self.commit_error(e))?;
        Ok(())
    }

    /// Rewrites the identity record (a directory from before incarnations
    /// gets one on its first start).
    ///
    /// # Errors
    /// `Invalid` for a different cluster or node id than stored; `MapFull`
    /// or `Lmdb` if the record cannot be written.
    pub fn set_identity(&mut self, identity: Identity) -> Result<(), StoreError> {
        let mut txn = self.env.begin_rw_txn()?;
        let stored = self.read_identity(&txn)?;
        if (stored.cluster_id, stored.node_id) != (identity.cluster_id, identity.node_id) {
            return Err(StoreError::Invalid(
                "the cluster and node id of a data directory never change".into(),
            ));
        }
        let body: [u8; 24] =
            encode_u64s([identity.cluster_id, identity.node_id, identity.incarnation]);
        put_record(
            &mut txn,
            self.meta,
            KEY_IDENTITY,
            &[&body],
            WriteFlags::empty(),
        )?;
        txn.commit().map_err(|e| self.commit_error(e))?;
        Ok(())
    }

    /// Makes an empty store a bootstrapped one: format version, identity,
    /// `snapshot` (the initial state: index 0), an empty hard state and
    /// application record, in one transaction.
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
        let mut txn = self.env.begin_rw_txn()?;
        if !self.is_empty(&txn)? {
            return Err(StoreError::Invalid("store already bootstrapped".into()));
        }
        let flags = WriteFlags::empty();
        let version: [u8; 8] = encode_u64s([FORMAT_VERSION]);
        put_record(&mut txn, self.meta, KEY_VERSION, &[&version], flags)?;
        let identity: [u8; 24] =
            encode_u64s([identity.cluster_id, identity.node_id, identity.incarnation]);
        put_record(&mut txn, self.meta, KEY_IDENTITY, &[&identity], flags)?;
        self.put_hard_state(&mut txn, &HardState::default())?;
        self.put_snapshot(&mut txn, snapshot)?;
        self.put_app(&mut txn, &AppRecord::default())?;
        txn.commit().map_err(|e| self.commit_error(e))?;
        Ok(())
    }

    /// Writes one batch in one transaction (one fsync): the snapshot (which
    /// empties the log), then the entries (replacing any stored suffix that
    /// starts at `entries[0].index`), then the hard state and application
    /// record. The result is checked the way `load` checks it before it is
    /// committed.
    ///
    /// # Errors
    /// `MapFull` (nothing written), `Invalid` for a batch that would leave
    /// a gap, an older snapshot, a commit past the last entry, a term below
    /// the log's, or an unbootstrapped store.
    pub fn persist(&mut self, write: &Write) -> Result<(), StoreError> {
        self.persist_all(std::slice::from_ref(write))
    }

    /// Writes several batches, in order, in one transaction (one fsync):
    /// what `persist` does for each, all or nothing.
    ///
    /// # Errors
    /// As [`Store::persist`], for the first batch that fails.
    pub fn persist_all(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let mut txn = self.env.begin_rw_txn()?;
        for write in writes {
            self.persist_in(&mut txn, write)?;
        }
        txn.commit().map_err(|e| self.commit_error(e))?;
        Ok(())
    }

    fn persist_in(&self, txn: &mut RwTransaction, write: &Write) -> Result<(), StoreError> {
        check_batch(write.entries).map_err(StoreError::Invalid)?;
        let mut snapshot_at = self.snapshot_position(txn)?;
        if let Some(snapshot) = write.snapshot {
            if snapshot.meta.index < snapshot_at.index {
                return Err(StoreError::Invalid(format!(
                    "snapshot at {} is older than the stored one at {}",
                    snapshot.meta.index, snapshot_at.index
                )));
            }
            self.put_snapshot(txn, snapshot)?;
            txn.clear_db(self.log)?;
            snapshot_at = Position {
                index: snapshot.meta.index,
                term: snapshot.meta.term,
            };
        }
        let last = match (write.entries.first(), write.entries.last()) {
            (Some(first), Some(last)) => {
                self.check_attach(txn, snapshot_at, first)?;
                self.delete_from(txn, first.index)?;
                for entry in write.entries {
                    put_entry(txn, self.log, entry, WriteFlags::APPEND)?;
                }
                Position {
                    index: last.index,
                    term: last.term,
                }
            }
            _ => self.last_position(txn, snapshot_at)?,
        };
        let hard_state = match write.hard_state {
            Some(hard_state) => *hard_state,
            None => self.read_hard_state(txn)?,
        };
        check_hard_state(&hard_state, last).map_err(StoreError::Invalid)?;
        if let Some(hard_state) = write.hard_state {
            self.put_hard_state(txn, hard_state)?;
        }
        if let Some(app) = &write.app {
            check_app(app, last).map_err(StoreError::Invalid)?;
            self.put_app(txn, app)?;
        }
        Ok(())
    }

    /// Stores `snapshot` and drops the log up to its index, in one
    /// transaction. The snapshot must be of an entry in the log.
    ///
    /// # Errors
    /// `Invalid` if the index is not in the log (already compacted or not
    /// there yet) or the term does not match the entry there; `MapFull`.
    pub fn compact(&mut self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let mut txn = self.env.begin_rw_txn()?;
        let snapshot_at = self.snapshot_position(&txn)?;
        let index = snapshot.meta.index;
        if index <= snapshot_at.index {
            return Err(StoreError::Invalid(format!(
                "compaction to {index}: already compacted to {}",
                snapshot_at.index
            )));
        }
        let term = self
            .entry_term(&txn, index)?
            .ok_or_else(|| StoreError::Invalid(format!("compaction to {index}: not in the log")))?;
        if term != snapshot.meta.term {
            return Err(StoreError::Invalid(format!(
                "compaction to {index}: snapshot term {} but the entry has term {term}",
                snapshot.meta.term
            )));
        }
        self.put_snapshot(&mut txn, snapshot)?;
        self.delete_through(&mut txn, index)?;
        txn.commit().map_err(|e| self.commit_error(e))?;
        Ok(())
    }

    /// Space used and left in the map.
    ///
    /// # Errors
    /// `Lmdb` if the environment cannot be queried.
    pub fn usage(&self) -> Result<Usage, StoreError> {
        let info = self.env.info()?;
        let page_size = self.env.stat()?.page_size() as u64;
        let free_pages = self.env.freelist()? as u64;
        let txn = self.env.begin_ro_txn()?;
        let log_entries = txn.stat(self.log)?.entries() as u64;
        let map_size_bytes = info.map_size() as u64;
        let pages_touched = info.last_pgno() as u64 + 1;
        let used_bytes = pages_touched.saturating_sub(free_pages) * page_size;
        Ok(Usage {
            map_size_bytes,
            used_bytes,
            available_bytes: map_size_bytes.saturating_sub(used_bytes),
            log_entries,
            fs_free_bytes: files::free_bytes(&self.dir),
        })
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

    /// Keeps `bytes` of disk allocated past the end of `data.mdb`
    /// (`fallocate` with `KEEP_SIZE`), so that once the file system is
    /// full the writes that free space (closing a session, releasing,
    /// unlocking) still find blocks for the pages they touch. Best
    /// effort: a file system without `fallocate`, or one already full,
    /// just has no reserve.
    pub fn keep_disk_reserve(&self, bytes: u64) {
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
    }

    fn is_empty<T: Transaction>(&self, txn: &T) -> Result<bool, StoreError> {
        for db in [self.meta, self.log, self.state] {
            if txn.stat(db)?.entries() != 0 {
                return Ok(false);
            }
        }
        Ok(true)
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

    fn read_app<T: Transaction>(&self, txn: &T) -> Result<AppRecord, StoreError> {
        let body = required_record(txn, self.state, KEY_APP, "application record")?;
        let [high, applied] = decode_u64s(body)
            .ok_or_else(|| StoreError::Corrupt("application record: malformed".into()))?;
        Ok(AppRecord { high, applied })
    }

    /// The whole log, checked to start right after the snapshot, to be
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

    /// Where the snapshot stands; also proves the store is bootstrapped.
    fn snapshot_position<T: Transaction>(&self, txn: &T) -> Result<Position, StoreError> {
        if get_record(txn, self.meta, KEY_VERSION, "format version")?.is_none() {
            return Err(StoreError::Invalid("store is not bootstrapped".into()));
        }
        let meta = self.read_snapshot_meta(txn)?;
        Ok(Position {
            index: meta.index,
            term: meta.term,
        })
    }

    /// The term of the log entry at `index`, if stored.
    fn entry_term<T: Transaction>(
        &self,
        txn: &T,
        index: LogIndex,
    ) -> Result<Option<Term>, StoreError> {
        match txn.get(self.log, &log_key(index)) {
            Ok(value) => entry_term(index, value).map(Some),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn last_position<T: Transaction>(
        &self,
        txn: &T,
        snapshot_at: Position,
    ) -> Result<Position, StoreError> {
        let cursor = txn.open_ro_cursor(self.log)?;
        match cursor.get(None, None, MDB_LAST) {
            Ok((Some(key), value)) => {
                let index = parse_log_key(key)?;
                Ok(Position {
                    index,
                    term: entry_term(index, value)?,
                })
            }
            Ok((None, _)) => Err(StoreError::Corrupt("log: last entry without a key".into())),
            Err(lmdb::Error::NotFound) => Ok(snapshot_at),
            Err(error) => Err(error.into()),
        }
    }

    /// Checks that `first` continues what stays of the log: right after
    /// the snapshot or an existing entry, with a term not below it.
    fn check_attach<T: Transaction>(
        &self,
        txn: &T,
        snapshot_at: Position,
        first: &Entry,
    ) -> Result<(), StoreError> {
        if first.index <= snapshot_at.index {
            return Err(StoreError::Invalid(format!(
                "entry {} is at or below the snapshot index {}",
                first.index, snapshot_at.index
            )));
        }
        let previous = first.index - 1;
        let previous_term = if previous == snapshot_at.index {
            snapshot_at.term
        } else {
            self.entry_term(txn, previous)?.ok_or_else(|| {
                StoreError::Invalid(format!(
                    "entry {} would leave a gap: {previous} is not stored",
                    first.index
                ))
            })?
        };
        if first.term < previous_term {
            return Err(StoreError::Invalid(format!(
                "entry {} has term {}, below the term {previous_term} of entry {previous}",
                first.index, first.term
            )));
        }
        Ok(())
    }

    /// Deletes every log entry with index >= `index`.
    fn delete_from(&self, txn: &mut RwTransaction<'_>, index: LogIndex) -> Result<(), StoreError> {
        let mut cursor = txn.open_rw_cursor(self.log)?;
        // After a `del` the cursor already sits on the next entry, and
        // LMDB's MDB_NEXT returns that entry rather than skipping it.
        for item in cursor.iter_from(log_key(index)) {
            item?;
            cursor.del(WriteFlags::empty())?;
        }
        Ok(())
    }

    /// Deletes every log entry with index <= `index`.
    fn delete_through(
        &self,
        txn: &mut RwTransaction<'_>,
        index: LogIndex,
    ) -> Result<(), StoreError> {
        let mut cursor = txn.open_rw_cursor(self.log)?;
        for item in cursor.iter_start() {
            let (key, _) = item?;
            if parse_log_key(key)? > index {
                break;
            }
            cursor.del(WriteFlags::empty())?;
        }
        Ok(())
    }

    fn put_hard_state(
        &self,
        txn: &mut RwTransaction<'_>,
        hard_state: &HardState,
    ) -> Result<(), StoreError> {
        let body = encode_hard_state(hard_state);
        put_record(
            txn,
            self.meta,
            KEY_HARD_STATE,
            &[&body],
            WriteFlags::empty(),
        )?;
        Ok(())
    }

    fn put_snapshot(
        &self,
        txn: &mut RwTransaction<'_>,
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

    fn put_app(&self, txn: &mut RwTransaction<'_>, app: &AppRecord) -> Result<(), StoreError> {
        let body: [u8; 16] = encode_u64s([app.high, app.applied]);
        put_record(txn, self.state, KEY_APP, &[&body], WriteFlags::empty())?;
        Ok(())
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
mod tests {
    use super::*;
    use crate::raft::{EntryKind, Member, Membership};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> TestDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("ticketd-store-{}-{name}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            TestDir(path)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn identity() -> Identity {
        Identity {
            cluster_id: 0xC1,
            node_id: 1,
            incarnation: 0x1d,
        }
    }

    fn initial_snapshot() -> Snapshot {
        let mut membership = Membership::default();
        membership.members.insert(
            1,
            Member {
                voter: true,
                peer_addr: "127.0.0.1:9001".into(),
                http_addr: "127.0.0.1:8001".into(),
                incarnation: 0x1d,
            },
        );
        Snapshot {
            meta: SnapshotMeta {
                index: 0,
                term: 0,
                membership,
            },
            data: Vec::new(),
        }
    }

    fn entries(first: u64, last: u64, term: u64) -> Vec<Entry> {
        (first..=last)
            .map(|index| Entry {
                term,
                index,
                kind: EntryKind::Normal,
                data: format!("entry {index} of term {term}").into_bytes(),
            })
            .collect()
    }

    fn hard_state(term: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote: 1,
            commit,
        }
    }

    fn bootstrapped(dir: &TestDir) -> Store {
        let mut store = Store::open(&dir.0, 16).unwrap();
        store.bootstrap(identity(), &initial_snapshot()).unwrap();
        store
    }

    fn append(store: &mut Store, batch: &[Entry], hard_state: HardState) -> Result<(), StoreError> {
        store.persist(&Write {
            entries: batch,
            hard_state: Some(&hard_state),
            ..Write::default()
        })
    }

    fn indexes_and_terms(loaded: &Loaded) -> Vec<(u64, u64)> {
        loaded.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    fn raw_put(store: &Store, db: Database, key: &[u8], value: &[u8]) {
        let mut txn = store.env.begin_rw_txn().unwrap();
        txn.put(db, &key, &value, WriteFlags::empty()).unwrap();
        txn.commit().unwrap();
    }

    fn raw_get(store: &Store, db: Database, key: &[u8]) -> Vec<u8> {
        let txn = store.env.begin_ro_txn().unwrap();
        txn.get(db, &key).unwrap().to_vec()
    }

    #[test]
    fn a_fresh_directory_is_created_and_loads_as_none() {
        let dir = TestDir::new("fresh");
        let nested = dir.0.join("a/b");
        let store = Store::open(&nested, 1).unwrap();
        assert_eq!(store.load().unwrap(), None);
        assert!(nested.join("data.mdb").exists());
    }

    #[test]
    fn bootstrap_persist_load_round_trip() {
        let dir = TestDir::new("round-trip");
        let mut store = bootstrapped(&dir);
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.identity, identity());
        assert_eq!(loaded.snapshot, initial_snapshot());
        assert_eq!(loaded.hard_state, HardState::default());
        assert_eq!(loaded.app, AppRecord::default());
        assert!(loaded.entries.is_empty());

        let mut batch = entries(1, 5, 1);
        batch[1].kind = EntryKind::Config;
        batch[2].kind = EntryKind::Noop;
        batch[2].data.clear();
        let app = AppRecord {
            high: 10_000,
            applied: 3,
        };
        store
            .persist(&Write {
                snapshot: None,
                entries: &batch,
                hard_state: Some(&hard_state(1, 4)),
                app: Some(app),
            })
            .unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.entries, batch);
        assert_eq!(loaded.hard_state, hard_state(1, 4));
        assert_eq!(loaded.app, app);

        // A batch with only a hard state keeps the log.
        store
            .persist(&Write {
                hard_state: Some(&hard_state(2, 5)),
                ..Write::default()
            })
            .unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.entries, batch);
        assert_eq!(loaded.hard_state, hard_state(2, 5));
    }

    #[test]
    fn bootstrap_refuses_a_bootstrapped_store_and_bad_input() {
        let dir = TestDir::new("bootstrap-twice");
        let mut store = bootstrapped(&dir);
        let again = store.bootstrap(identity(), &initial_snapshot());
        assert!(matches!(again, Err(StoreError::Invalid(_))), "{again:?}");

        let other = TestDir::new("bootstrap-bad");
        let mut store = Store::open(&other.0, 1).unwrap();
        let zero = Identity {
            cluster_id: 1,
            node_id: 0,
            incarnation: 1,
        };
        assert!(matches!(
            store.bootstrap(zero, &initial_snapshot()),
            Err(StoreError::Invalid(_))
        ));
        let mut late = initial_snapshot();
        late.meta.index = 5;
        assert!(matches!(
            store.bootstrap(identity(), &late),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(store.load().unwrap(), None);
    }

    #[test]
    fn truncation_overwrites_a_suffix() {
        let dir = TestDir::new("truncate");
        let mut store = bootstrapped(&dir);
        append(&mut store, &entries(1, 5, 1), hard_state(1, 2)).unwrap();
        append(&mut store, &entries(3, 4, 2), hard_state(2, 2)).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(
            indexes_and_terms(&loaded),
            vec![(1, 1), (2, 1), (3, 2), (4, 2)]
        );
        assert_eq!(loaded.entries[2].data, b"entry 3 of term 2");
        // Appending right after the end works too.
        append(&mut store, &entries(5, 6, 2), hard_state(2, 6)).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.entries.len(), 6);
        assert_eq!(loaded.entries.last().unwrap().index, 6);
    }

    #[test]
    fn a_snapshot_replaces_the_old_one_and_clears_the_log() {
        let dir = TestDir::new("snapshot");
        let mut store = bootstrapped(&dir);
        append(&mut store, &entries(1, 5, 1), hard_state(1, 5)).unwrap();
        let mut snapshot = initial_snapshot();
        snapshot.meta.index = 20;
        snapshot.meta.term = 3;
        snapshot.data = vec![7; 100_000];
        let after = entries(21, 22, 3);
        store
            .persist(&Write {
                snapshot: Some(&snapshot),
                entries: &after,
                hard_state: Some(&hard_state(3, 20)),
                app: Some(AppRecord {
                    high: 99,
                    applied: 20,
                }),
            })
            .unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.snapshot, snapshot);
        assert_eq!(loaded.entries, after);
        assert_eq!(loaded.app.applied, 20);

        // An older snapshot is refused and changes nothing.
        let mut older = snapshot.clone();
        older.meta.index = 10;
        let refused = store.persist(&Write {
            snapshot: Some(&older),
            ..Write::default()
        });
        assert!(
            matches!(refused, Err(StoreError::Invalid(_))),
            "{refused:?}"
        );
        assert_eq!(store.load().unwrap().unwrap(), loaded);
    }

    #[test]
    fn compact_drops_the_prefix() {
        let dir = TestDir::new("compact");
        let mut store = bootstrapped(&dir);
        let mut batch = entries(1, 4, 1);
        batch.extend(entries(5, 10, 2));
        append(&mut store, &batch, hard_state(2, 8)).unwrap();
        let mut snapshot = initial_snapshot();
        snapshot.meta.index = 6;
        snapshot.meta.term = 2;
        snapshot.data = b"state at 6".to_vec();
        store.compact(&snapshot).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.snapshot, snapshot);
        assert_eq!(loaded.entries, batch[6..].to_vec());
        assert_eq!(store.usage().unwrap().log_entries, 4);

        for (index, term) in [(6, 2), (3, 1), (11, 2), (8, 1)] {
            snapshot.meta.index = index;
            snapshot.meta.term = term;
            let refused = store.compact(&snapshot);
            assert!(
                matches!(refused, Err(StoreError::Invalid(_))),
                "{index}: {refused:?}"
            );
        }
        // Compacting everything leaves an empty log that continues after it.
        snapshot.meta.index = 10;
        snapshot.meta.term = 2;
        store.compact(&snapshot).unwrap();
        assert!(store.load().unwrap().unwrap().entries.is_empty());
        append(&mut store, &entries(11, 11, 2), hard_state(2, 10)).unwrap();
        assert_eq!(store.load().unwrap().unwrap().entries.len(), 1);
    }

    #[test]
    fn persist_refuses_inconsistent_batches_and_writes_nothing() {
        let dir = TestDir::new("invalid");
        let fresh = TestDir::new("invalid-fresh");
        let mut empty = Store::open(&fresh.0, 1).unwrap();
        assert!(matches!(
            append(&mut empty, &entries(1, 1, 1), hard_state(1, 0)),
            Err(StoreError::Invalid(_))
        ));

        let mut store = bootstrapped(&dir);
        append(&mut store, &entries(1, 3, 2), hard_state(2, 1)).unwrap();
        let before = store.load().unwrap().unwrap();
        let mut gapped = entries(4, 6, 2);
        gapped.remove(1);
        let mut falling = entries(4, 5, 2);
        falling[1].term = 1;
        let cases: Vec<(Vec<Entry>, HardState)> = vec![
            (gapped, hard_state(2, 1)),
            (falling, hard_state(2, 1)),
            (entries(0, 1, 2), hard_state(2, 1)),
            (entries(5, 6, 2), hard_state(2, 1)),
            (entries(4, 4, 1), hard_state(2, 1)),
            (entries(4, 4, 3), hard_state(2, 1)),
            (entries(4, 4, 2), hard_state(2, 5)),
            (Vec::new(), hard_state(2, 4)),
            (Vec::new(), hard_state(1, 1)),
        ];
        for (batch, hard_state) in cases {
            let refused = append(&mut store, &batch, hard_state);
            assert!(
                matches!(refused, Err(StoreError::Invalid(_))),
                "{batch:?} {refused:?}"
            );
        }
        let refused = store.persist(&Write {
            app: Some(AppRecord {
                high: 1,
                applied: 4,
            }),
            ..Write::default()
        });
        assert!(
            matches!(refused, Err(StoreError::Invalid(_))),
            "{refused:?}"
        );
        assert_eq!(store.load().unwrap().unwrap(), before);
    }

    #[test]
    fn a_corrupted_log_value_is_detected_at_load() {
        let dir = TestDir::new("corrupt-log");
        let mut store = bootstrapped(&dir);
        append(&mut store, &entries(1, 5, 1), hard_state(1, 5)).unwrap();
        let mut value = raw_get(&store, store.log, &log_key(3));
        value[10] ^= 0x20;
        raw_put(&store, store.log, &log_key(3), &value);
        match store.load() {
            Err(StoreError::Corrupt(what)) => assert!(what.contains("log entry 3"), "{what}"),
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn a_hole_or_a_stray_entry_in_the_log_is_detected() {
        let dir = TestDir::new("corrupt-hole");
        let mut store = bootstrapped(&dir);
        append(&mut store, &entries(1, 5, 1), hard_state(1, 1)).unwrap();
        let moved = raw_get(&store, store.log, &log_key(3));
        let mut txn = store.env.begin_rw_txn().unwrap();
        txn.del(store.log, &log_key(3), None).unwrap();
        txn.commit().unwrap();
        let error = store.load().unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt(w) if w.contains("log entry 4")),
            "{error}"
        );
        // A valid value under the wrong key fails its checksum.
        raw_put(
            &store,
            store.log,
            &log_key(3),
            &raw_get(&store, store.log, &log_key(2)),
        );
        assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));
        raw_put(&store, store.log, &log_key(3), &moved);
        assert!(store.load().is_ok());
        raw_put(&store, store.log, b"short", b"x");
        assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn an_identity_without_incarnation_still_loads_and_can_gain_one() {
        let dir = TestDir::new("old-identity");
        let mut store = bootstrapped(&dir);
        // The record as builds before incarnations wrote it: two u64s.
        let old: [u8; 16] = encode_u64s([0xC1, 1]);
        let mut txn = store.env.begin_rw_txn().unwrap();
        put_record(
            &mut txn,
            store.meta,
            KEY_IDENTITY,
            &[&old],
            WriteFlags::empty(),
        )
        .unwrap();
        txn.commit().unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.identity.incarnation, 0);
        assert_eq!(loaded.identity.node_id, 1);
        store.set_identity(identity()).unwrap();
        assert_eq!(store.load().unwrap().unwrap().identity, identity());
        let mut other = identity();
        other.node_id = 2;
        assert!(store.set_identity(other).is_err());
    }

    #[test]
    fn a_removed_mark_survives_a_reopen() {
        let dir = TestDir::new("removed");
        let mut store = bootstrapped(&dir);
        assert!(!store.load().unwrap().unwrap().removed);
        store.mark_removed().unwrap();
        drop(store);
        let store = Store::open(&dir.0, 1).unwrap();
        assert!(store.load().unwrap().unwrap().removed);
    }

    #[test]
    fn meta_records_are_checked() {
        let dir = TestDir::new("corrupt-meta");
        let store = bootstrapped(&dir);
        let mut value = raw_get(&store, store.meta, KEY_HARD_STATE);
        value[0] ^= 1;
        raw_put(&store, store.meta, KEY_HARD_STATE, &value);
        let error = store.load().unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt(w) if w.contains("hard state")),
            "{error}"
        );

        let mut txn = store.env.begin_rw_txn().unwrap();
        txn.del(store.meta, &KEY_IDENTITY, None).unwrap();
        txn.commit().unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));

        // Data without a version record is not a fresh store.
        let mut txn = store.env.begin_rw_txn().unwrap();
        txn.del(store.meta, &KEY_VERSION, None).unwrap();
        txn.commit().unwrap();
        let error = store.load().unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt(w) if w.contains("version")),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_version_is_detected() {
        let dir = TestDir::new("version");
        let store = bootstrapped(&dir);
        let mut txn = store.env.begin_rw_txn().unwrap();
        put_record(
            &mut txn,
            store.meta,
            KEY_VERSION,
            &[&99u64.to_be_bytes()],
            WriteFlags::empty(),
        )
        .unwrap();
        txn.commit().unwrap();
        assert_eq!(store.load(), Err(StoreError::UnknownVersion(99)));
        raw_put(&store, store.meta, KEY_VERSION, b"garbage");
        assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn reopening_after_drop_keeps_everything() {
        let dir = TestDir::new("reopen");
        let mut store = bootstrapped(&dir);
        append(&mut store, &entries(1, 50, 1), hard_state(1, 40)).unwrap();
        let mut snapshot = initial_snapshot();
        snapshot.meta.index = 30;
        snapshot.meta.term = 1;
        snapshot.data = b"thirty".to_vec();
        store.compact(&snapshot).unwrap();
        store
            .persist(&Write {
                app: Some(AppRecord {
                    high: 5,
                    applied: 40,
                }),
                ..Write::default()
            })
            .unwrap();
        let before = store.load().unwrap().unwrap();
        drop(store);
        let store = Store::open(&dir.0, 16).unwrap();
        assert_eq!(store.load().unwrap().unwrap(), before);
        assert_eq!(before.entries.first().unwrap().index, 31);
    }

    #[test]
    fn a_wipe_empties_a_stopped_store_and_is_refused_while_it_is_open() {
        let dir = TestDir::new("wipe");
        assert_eq!(Store::wipe(&dir.0, 1).unwrap(), Wiped::Empty);
        let mut store = Store::open(&dir.0, 1).unwrap();
        let identity = Identity {
            cluster_id: 9,
            node_id: 2,
            incarnation: 5,
        };
        store.bootstrap(identity, &Snapshot::default()).unwrap();
        assert!(matches!(Store::wipe(&dir.0, 1), Err(StoreError::Locked(_))));
        drop(store);
        assert_eq!(Store::wipe(&dir.0, 1).unwrap(), Wiped::Identity(identity));
        let store = Store::open(&dir.0, 1).unwrap();
        assert!(store.load().unwrap().is_none());
        drop(store);
        assert_eq!(Store::drop_dir(&dir.0, 1).unwrap(), Wiped::Empty);
        assert!(!dir.0.exists());
        fs::create_dir_all(&dir.0).unwrap();
        fs::write(dir.0.join("data.mdb"), b"not lmdb").unwrap();
        assert!(matches!(
            Store::wipe(&dir.0, 1),
            Err(StoreError::Corrupt(_))
        ));
        assert!(dir.0.join("data.mdb").exists());
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = TestDir::new("locked");
        let _store = Store::open(&dir.0, 1).unwrap();
        let second = Store::open(&dir.0, 1);
        assert!(
            matches!(second, Err(StoreError::Locked(_))),
            "{:?}",
            second.err()
        );
    }

    #[test]
    fn bad_map_sizes_and_a_file_as_directory_are_refused() {
        let dir = TestDir::new("bad-open");
        assert!(matches!(
            Store::open(&dir.0, 0),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            Store::open(&dir.0, MAP_SIZE_MB_MAX + 1),
            Err(StoreError::Invalid(_))
        ));
        fs::create_dir_all(&dir.0).unwrap();
        let file = dir.0.join("plain-file");
        fs::write(&file, b"not a directory").unwrap();
        assert!(matches!(Store::open(&file, 1), Err(StoreError::Io(_))));
    }

    #[test]
    fn garbage_in_data_mdb_is_an_error_and_left_untouched() {
        for (name, garbage) in [("short", vec![0xAB; 100]), ("long", vec![0x5A; 64 * 1024])] {
            let dir = TestDir::new(name);
            fs::create_dir_all(&dir.0).unwrap();
            let path = dir.0.join("data.mdb");
            fs::write(&path, &garbage).unwrap();
            let opened = Store::open(&dir.0, 1);
            assert!(
                matches!(opened, Err(StoreError::Corrupt(_) | StoreError::Lmdb(_))),
                "{name}: {:?}",
                opened.err()
            );
            assert_eq!(fs::read(&path).unwrap(), garbage);
        }
    }

    #[test]
    fn a_foreign_lmdb_environment_is_refused_and_left_untouched() {
        let dir = TestDir::new("foreign");
        fs::create_dir_all(&dir.0).unwrap();
        {
            let env = Environment::new().set_max_dbs(2).open(&dir.0).unwrap();
            let db = env
                .create_db(Some("users"), DatabaseFlags::empty())
                .unwrap();
            let mut txn = env.begin_rw_txn().unwrap();
            txn.put(db, b"alice", b"1", WriteFlags::empty()).unwrap();
            txn.commit().unwrap();
        }
        let before = fs::read(dir.0.join("data.mdb")).unwrap();
        let opened = Store::open(&dir.0, 1);
        assert!(
            matches!(&opened, Err(StoreError::Corrupt(w)) if w.contains("users")),
            "{:?}",
            opened.err()
        );
        assert_eq!(fs::read(dir.0.join("data.mdb")).unwrap(), before);
    }

    #[test]
    fn a_store_that_lost_a_database_is_refused() {
        let dir = TestDir::new("lost-db");
        fs::create_dir_all(&dir.0).unwrap();
        {
            let env = Environment::new().set_max_dbs(2).open(&dir.0).unwrap();
            let meta = env.create_db(Some("meta"), DatabaseFlags::empty()).unwrap();
            let mut txn = env.begin_rw_txn().unwrap();
            txn.put(meta, b"version", b"whatever", WriteFlags::empty())
                .unwrap();
            txn.commit().unwrap();
        }
        let opened = Store::open(&dir.0, 1);
        assert!(
            matches!(&opened, Err(StoreError::Corrupt(w)) if w.contains("missing")),
            "{:?}",
            opened.err()
        );

        // An empty `meta` alone is a first open that stopped half-way.
        let half = TestDir::new("half-created");
        fs::create_dir_all(&half.0).unwrap();
        {
            let env = Environment::new().set_max_dbs(2).open(&half.0).unwrap();
            env.create_db(Some("meta"), DatabaseFlags::empty()).unwrap();
        }
        let store = Store::open(&half.0, 1).unwrap();
        assert_eq!(store.load().unwrap(), None);
    }

    #[test]
    fn a_full_map_rolls_back_and_the_store_stays_usable() {
        let dir = TestDir::new("map-full");
        let mut store = Store::open(&dir.0, 1).unwrap();
        store.bootstrap(identity(), &initial_snapshot()).unwrap();
        let mut next = 1;
        let mut acknowledged = 0;
        let full = loop {
            let mut batch = entries(next, next + 99, 1);
            for entry in &mut batch {
                entry.data = vec![0x42; 200];
            }
            match append(&mut store, &batch, hard_state(1, next - 1)) {
                Ok(()) => {
                    acknowledged = next + 99;
                    next += 100;
                }
                Err(error) => break error,
            }
            assert!(next < 100_000, "a 1 MB map never filled up");
        };
        assert_eq!(full, StoreError::MapFull);
        assert!(acknowledged > 0);
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.entries.len() as u64, acknowledged);
        assert_eq!(loaded.entries.last().unwrap().index, acknowledged);
        assert!(loaded.entries.iter().all(|e| e.data == vec![0x42; 200]));
        let usage = store.usage().unwrap();
        assert!(usage.used_bytes > usage.map_size_bytes / 2, "{usage:?}");

        // Compaction frees room, and writing goes on where it stopped.
        let mut snapshot = initial_snapshot();
        snapshot.meta.index = acknowledged - 10;
        snapshot.meta.term = 1;
        store.compact(&snapshot).unwrap();
        append(
            &mut store,
            &entries(acknowledged + 1, acknowledged + 100, 1),
            hard_state(1, acknowledged),
        )
        .unwrap();
        append(
            &mut store,
            &entries(acknowledged + 101, acknowledged + 200, 1),
            hard_state(1, acknowledged),
        )
        .unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.entries.len(), 210);
        assert_eq!(loaded.entries.last().unwrap().index, acknowledged + 200);
    }

    #[test]
    fn usage_reports_the_map() {
        let dir = TestDir::new("usage");
        let mut store = bootstrapped(&dir);
        let empty = store.usage().unwrap();
        assert_eq!(empty.map_size_bytes, 16 << 20);
        assert_eq!(
            empty.used_bytes + empty.available_bytes,
            empty.map_size_bytes
        );
        let mut batch = entries(1, 1000, 1);
        for entry in &mut batch {
            entry.data = vec![1; 500];
        }
        append(&mut store, &batch, hard_state(1, 0)).unwrap();
        let used = store.usage().unwrap();
        assert_eq!(used.log_entries, 1000);
        assert!(
            used.used_bytes >= empty.used_bytes + 500 * 1000,
            "{empty:?} {used:?}"
        );
    }

    /// Exercises the hot path at a realistic size; prints, asserts no time.
    #[test]
    fn many_small_entries_per_persist() {
        let dir = TestDir::new("bulk");
        let mut store = bootstrapped(&dir);
        let started = std::time::Instant::now();
        let batches = 20;
        let per_batch = 2_000;
        for batch_number in 0..batches {
            let first = batch_number * per_batch + 1;
            let batch = entries(first, first + per_batch - 1, 1);
            append(&mut store, &batch, hard_state(1, first - 1)).unwrap();
        }
        let written = started.elapsed();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.entries.len() as u64, batches * per_batch);
        eprintln!(
            "store bulk: {} entries in {batches} persists: {written:?}; load {:?}",
            batches * per_batch,
            started.elapsed() - written
        );
    }
}
