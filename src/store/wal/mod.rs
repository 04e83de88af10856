//! The write-ahead log: the Raft log, the hard state and the application
//! record, appended to segment files in `<data dir>/wal/`, one frame and
//! one `fdatasync` per persisted batch (see [`record`] for the frames,
//! [`segment`] for the files, [`recover`] for reading them back).
//!
//! Owns the segment files and nothing else: it knows no Raft rule beyond
//! what replaying a batch needs, and no LMDB. The store decides what a
//! batch holds and when segments below a snapshot may go.

pub mod record;
mod recover;
mod segment;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::warn;

pub use record::{FRAME_MAX, Frame, Header, OpRef};
pub use recover::{Replayed, Scan, list as list_segments, scan};
use segment::Segment;
pub use segment::parse_name as segment_name;

use super::StoreError;
use super::files;

/// A segment grows to this at most (a sixteenth of the map, so that
/// whole segments can be deleted well before the map is full).
pub const SEGMENT_MAX: u64 = 64 << 20;
pub const SEGMENT_MIN: u64 = 64 << 10;
/// Space is allocated ahead of the writes in chunks of this (or the
/// segment's whole capacity, if smaller).
pub const CHUNK: u64 = 1 << 20;

/// The segment capacity for a map of `map_bytes`.
pub fn segment_capacity(map_bytes: u64) -> u64 {
    (map_bytes / 16).clamp(SEGMENT_MIN, SEGMENT_MAX)
}

/// A live segment: what deletion and accounting need.
struct Old {
    seq: u64,
    path: PathBuf,
    bytes: u64,
}

pub struct Wal {
    dir: PathBuf,
    /// Segments before the active one, oldest first.
    old: Vec<Old>,
    active: Segment,
    capacity: u64,
    /// The largest frame body appended ([`FRAME_MAX`]; lower in tests).
    frame_max: usize,
    /// How long the last append's `fdatasync` took.
    last_sync: Duration,
}

/// Maps an I/O error of the WAL: a full file system is `NoSpace` (the
/// write did not happen); anything else is `Io`.
pub fn io_error(what: &str, path: &Path, error: &io::Error) -> StoreError {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    match error.raw_os_error() {
        Some(ENOSPC | EDQUOT) => StoreError::NoSpace,
        _ => StoreError::Io(format!("{what} {}: {error}", path.display())),
    }
}

impl Wal {
    /// Starts a new WAL in `dir` (created if needed) whose first segment
    /// begins at `header` (its `seq` is ignored: 1). Segments already
    /// there are deleted first: they are the remains of a bootstrap or an
    /// upgrade that did not finish (the caller knows the store holds no
    /// WAL yet).
    ///
    /// # Errors
    /// `Io` or `NoSpace`.
    pub fn create(dir: &Path, header: Header, capacity: u64) -> Result<Wal, StoreError> {
        // 0700, as the data directory (files.rs); the syncs below make the
        // names durable.
        files::create_private_dirs(dir).map_err(|e| io_error("creating", dir, &e))?;
        for (_, path) in recover::list(dir)? {
            fs::remove_file(&path).map_err(|e| io_error("removing", &path, &e))?;
        }
        let header = Header { seq: 1, ..header };
        let active = new_segment(dir, &header, capacity, 0)?;
        files::sync_dir(dir).map_err(|e| io_error("syncing", dir, &e))?;
        if let Some(parent) = dir.parent() {
            files::sync_dir(parent).map_err(|e| io_error("syncing", parent, &e))?;
        }
        Ok(Wal {
            dir: dir.to_path_buf(),
            old: Vec::new(),
            active,
            capacity,
            frame_max: FRAME_MAX,
            last_sync: Duration::ZERO,
        })
    }

    /// Opens the WAL in `dir` after a scan of it: deletes what the scan
    /// found stale, zeroes a torn tail, and appends after the last frame.
    /// `None` when there is no WAL.
    ///
    /// # Errors
    /// `Corrupt` for damage to synced data; `Io` if a repair fails.
    pub fn open(dir: &Path, capacity: u64) -> Result<Option<(Wal, Replayed)>, StoreError> {
        let Some(scan) = recover::scan(dir)? else {
            return Ok(None);
        };
        let Scan {
            mut segments,
            stale,
            replayed,
        } = scan;
        for path in &stale {
            warn!(
                "removing {}: left by an interrupted deletion or segment start",
                path.display()
            );
            fs::remove_file(path).map_err(|e| io_error("removing", path, &e))?;
        }
        if !stale.is_empty() {
            files::sync_dir(dir).map_err(|e| io_error("syncing", dir, &e))?;
        }
        let Some(last) = segments.pop() else {
            return Err(StoreError::Corrupt(format!(
                "WAL in {}: no usable segment",
                dir.display()
            )));
        };
        let mut active = Segment::open(&last.path, last.seq, last.salt, last.end, capacity)
            .map_err(|e| io_error("opening", &last.path, &e))?;
        active.sealed = last.sealed;
        if let Some((from, until, why)) = &last.torn {
            warn!(
                "WAL segment {}: {why} at byte {from}: a write torn by a crash, {} bytes zeroed",
                last.path.display(),
                until - from
            );
            active
                .zero(*from, *until)
                .map_err(|e| io_error("zeroing", &last.path, &e))?;
        }
        let old = segments
            .into_iter()
            .map(|s| Old {
                seq: s.seq,
                path: s.path,
                bytes: s.end,
            })
            .collect();
        let wal = Wal {
            dir: dir.to_path_buf(),
            old,
            active,
            capacity,
            frame_max: FRAME_MAX,
            last_sync: Duration::ZERO,
        };
        Ok(Some((wal, replayed)))
    }

    /// Appends one batch and syncs it: durable when this returns `Ok`.
    /// `state` is the log position, hard state and application record in
    /// force before the batch (a new segment's header, if the batch does
    /// not fit the active one). Returns the segment it went to.
    ///
    /// # Errors
    /// `Invalid` for a frame over [`FRAME_MAX`] (nothing written: it could
    /// never be read back), `NoSpace` (nothing of the batch is durable),
    /// `Io` (the log may or may not hold it: the node must stop).
    pub fn append(&mut self, frame: &mut Frame, state: &Header) -> Result<u64, StoreError> {
        self.check_frame(frame)?;
        let seal_len = record::SEAL_LEN as u64;
        let len = frame.len() as u64;
        let has_frames = self.active.end > header_len();
        if !self.active.fits(len + seal_len) && (has_frames || self.active.sealed) {
            self.roll(state, len + seal_len)?;
        }
        let path = self.active.path.clone();
        self.active
            .reserve(len + seal_len, self.chunk())
            .map_err(|e| io_error("allocating", &path, &e))?;
        let start = self.active.end;
        let bytes = frame.place(self.active.place());
        if let Err(e) = self.active.write(bytes) {
            // Nothing was acknowledged: the next frame goes where this one
            // started, and what it left is zeroed (best effort), so that
            // no remnant of it outlives a shorter frame written there.
            self.active.end = start;
            if let Err(zeroing) = self.active.zero(start, start + len) {
                // A remnant of it may outlive a shorter frame written
                // there: the node must stop (a restart zeroes the tail).
                return Err(StoreError::Io(format!(
                    "writing {}: {e}; zeroing what it left: {zeroing}",
                    path.display()
                )));
            }
            return Err(io_error("writing", &path, &e));
        }
        let syncing = Instant::now();
        self.active
            .sync()
            .map_err(|e| StoreError::Io(format!("syncing {}: {e}", path.display())))?;
        self.last_sync = syncing.elapsed();
        // The next chunk is made ready while appends go on.
        let chunk = self.chunk();
        if self.active.allocated.saturating_sub(self.active.end) < chunk / 2 {
            self.active
                .extend_in_background(self.active.allocated.saturating_add(chunk));
        }
        Ok(self.active.seq)
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self, state: &Header, need: u64) -> Result<(), StoreError> {
        let path = self.active.path.clone();
        if !self.active.sealed {
            let mut seal = record::encode_seal();
            self.active
                .reserve(seal.len() as u64, self.chunk())
                .map_err(|e| io_error("allocating", &path, &e))?;
            let bytes = seal.place(self.active.place());
            self.active
                .write(bytes)
                .and_then(|()| self.active.sync())
                .map_err(|e| StoreError::Io(format!("sealing {}: {e}", path.display())))?;
            self.active.sealed = true;
        }
        let seq = self.active.seq + 1;
        let header = Header { seq, ..*state };
        let next = new_segment(&self.dir, &header, self.capacity, need)?;
        files::sync_dir(&self.dir).map_err(|e| io_error("syncing", &self.dir, &e))?;
        let done = std::mem::replace(&mut self.active, next);
        self.old.push(Old {
            seq: done.seq,
            path: done.path.clone(),
            bytes: done.end,
        });
        Ok(())
    }

    /// Refuses a frame that could never be read back.
    ///
    /// # Errors
    /// `Invalid` for a body over [`FRAME_MAX`].
    pub fn check_frame(&self, frame: &Frame) -> Result<(), StoreError> {
        if frame.body_len() > self.frame_max {
            return Err(StoreError::Invalid(format!(
                "a WAL frame of {} bytes, over the {} a frame may hold",
                frame.body_len(),
                self.frame_max
            )));
        }
        Ok(())
    }

    /// Tests: a lower cap than [`FRAME_MAX`], so that its refusal can be
    /// seen without gigabytes of memory.
    #[cfg(test)]
    pub fn set_frame_max(&mut self, bytes: usize) {
        self.frame_max = bytes.min(FRAME_MAX);
    }

    fn chunk(&self) -> u64 {
        CHUNK.min(self.capacity)
    }

    /// The sequence number of the segment appended to now.
    pub fn active_seq(&self) -> u64 {
        self.active.seq
    }

    /// Deletes every segment numbered below `seq` (never the active one),
    /// oldest first, then syncs the directory.
    ///
    /// # Errors
    /// `Io` if a file cannot be removed (those before it are gone).
    pub fn remove_below(&mut self, seq: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        while let Some(old) = self.old.first() {
            if old.seq >= seq {
                break;
            }
            match fs::remove_file(&old.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("removing", &old.path, &e)),
            }
            self.old.remove(0);
            removed += 1;
        }
        if removed > 0 {
            files::sync_dir(&self.dir).map_err(|e| io_error("syncing", &self.dir, &e))?;
        }
        Ok(removed)
    }

    /// How long the last append's `fdatasync` took: the disk's share of
    /// a persist, against the encoding, the checks and any waiting.
    pub fn last_sync(&self) -> Duration {
        self.last_sync
    }

    /// Bytes written in the live segments.
    pub fn bytes(&self) -> u64 {
        self.old.iter().map(|o| o.bytes).sum::<u64>() + self.active.end
    }

    pub fn segment_count(&self) -> usize {
        self.old.len() + 1
    }

    /// Keeps up to `bytes` allocated past the end of the active segment
    /// (within its capacity), so that once the file system is full the
    /// writes that free space still have room. Best effort, and on a
    /// thread of its own: it never holds up the caller.
    ///
    /// It tops up only once less than `bytes` is left, and then to a
    /// whole chunk past that: every top-up is a thread, a write of zeros
    /// and an `fsync` that changes the file's length, and while the
    /// length changes an append's `fdatasync` must commit the file
    /// system's journal too. Topping up to exactly `bytes` ahead did all
    /// that at every look (every 32 KiB of log).
    pub fn keep_reserve(&mut self, bytes: u64) {
        let want = self.active.end.saturating_add(bytes);
        if self.active.allocated >= want {
            return;
        }
        let chunk = self.chunk().max(1);
        let target = want.div_ceil(chunk).saturating_mul(chunk);
        self.active.extend_in_background(target);
    }
}

/// Bytes of a segment header frame.
fn header_len() -> u64 {
    record::HEADER_FRAME_LEN as u64
}

/// A new segment with its header written and synced (the caller syncs
/// the directory).
fn new_segment(
    dir: &Path,
    header: &Header,
    capacity: u64,
    need: u64,
) -> Result<Segment, StoreError> {
    let path = dir.join(segment::file_name(header.seq));
    let mut salt = [0u8; 8];
    getrandom::getrandom(&mut salt)
        .map_err(|e| StoreError::Io(format!("drawing a salt for {}: {e}", path.display())))?;
    let salt = u64::from_be_bytes(salt);
    let frame = record::encode_header(header, salt);
    let first = CHUNK
        .min(capacity)
        .max(need.saturating_add(frame.len() as u64));
    let mut active = Segment::create(dir, header.seq, salt, first, capacity.max(first))
        .map_err(|e| io_error("creating", &path, &e))?;
    if let Err(e) = active.write(&frame).and_then(|()| active.sync()) {
        // No headerless file is left for the next roll to trip on (its
        // create_new would fail): the next attempt starts afresh.
        drop(active);
        let _ = fs::remove_file(&path);
        return Err(io_error("writing", &path, &e));
    }
    Ok(active)
}

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod seams;
#[cfg(test)]
mod tests;
