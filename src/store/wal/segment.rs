//! One segment file of the WAL: `wal/<seq as 16 hex digits>.wal`, written
//! only at its end, its space allocated ahead of the writes.
//!
//! Space is allocated by writing zeros (std only: no `fallocate`, whose
//! unwritten extents would make the first write to each block a metadata
//! change again) and making the new length durable with one `fsync`
//! before any frame goes there. An append into allocated space then
//! changes no metadata, so `sync_data` (fdatasync) is one data flush. A
//! segment starts with one chunk and grows a chunk at a time up to its
//! capacity, so a small disk is not asked for a whole segment at once.
//! The next chunk is written on a thread of its own while appends go on
//! below it ([`Segment::extend_in_background`]); an append waits for it
//! only if it catches up with it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use super::super::files::FILE_MODE;
use super::record::Place;

/// A segment's file name: its sequence number, so that name order is log
/// order.
pub fn file_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

/// The sequence number in a segment's file name.
pub fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub struct Segment {
    pub seq: u64,
    /// In every frame's checksums (see [`super::record`]).
    pub salt: u64,
    pub path: PathBuf,
    file: File,
    /// Bytes written (frames): the next frame goes here.
    pub end: u64,
    /// Bytes allocated (the file's length, all written).
    pub allocated: u64,
    /// The most this segment grows to (more only for one frame larger
    /// than that).
    pub capacity: u64,
    /// A seal frame ends it: nothing more may be appended.
    pub sealed: bool,
    /// Space being allocated on another thread, up to this.
    extending: Option<(u64, JoinHandle<io::Result<()>>)>,
}

impl Segment {
    /// Creates the file for `seq` (it must not exist) with `chunk` bytes
    /// allocated and durable, name included.
    pub fn create(
        dir: &Path,
        seq: u64,
        salt: u64,
        chunk: u64,
        capacity: u64,
    ) -> io::Result<Segment> {
        let path = dir.join(file_name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)?;
        let mut segment = Segment {
            seq,
            salt,
            path,
            file,
            end: 0,
            allocated: 0,
            capacity: capacity.max(chunk),
            sealed: false,
            extending: None,
        };
        if let Err(error) = segment.allocate(chunk) {
            // Leaves nothing behind that a restart would have to explain.
            let _ = std::fs::remove_file(&segment.path);
            return Err(error);
        }
        Ok(segment)
    }

    /// An existing segment, to append to after its `end` (found by the
    /// recovery scan).
    pub fn open(path: &Path, seq: u64, salt: u64, end: u64, capacity: u64) -> io::Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let allocated = file.metadata()?.len();
        Ok(Segment {
            seq,
            salt,
            path: path.to_path_buf(),
            file,
            end,
            allocated,
            capacity: capacity.max(allocated),
            sealed: false,
            extending: None,
        })
    }

    /// Room for `len` more bytes within the capacity?
    pub fn fits(&self, len: u64) -> bool {
        !self.sealed && self.end.saturating_add(len) <= self.capacity
    }

    /// Makes sure `len` bytes past `end` are allocated, growing by whole
    /// chunks (but never past the capacity unless one frame needs it).
    pub fn reserve(&mut self, len: u64, chunk: u64) -> io::Result<()> {
        let need = self.end.saturating_add(len);
        self.settle(false);
        if need <= self.allocated {
            return Ok(());
        }
        self.settle(true);
        if need <= self.allocated {
            return Ok(());
        }
        let mut target = need
            .div_ceil(chunk.max(1))
            .saturating_mul(chunk.max(1))
            .min(self.capacity);
        target = target.max(need);
        self.allocate(target - self.allocated)
    }

    /// Appends `bytes` of zeros to the file and syncs data and length.
    fn allocate(&mut self, bytes: u64) -> io::Result<()> {
        let until = self.allocated.saturating_add(bytes);
        write_zeros(&self.file, self.allocated, until)?;
        self.file.sync_all()?;
        self.allocated = until;
        Ok(())
    }

    /// Starts allocating up to `target` (within the capacity) on a thread
    /// of its own, unless one runs already or nothing is missing. Appends
    /// go on below the allocated space meanwhile; the new space counts
    /// once the thread is done (see [`Segment::reserve`]). Best effort: a
    /// failure (a full disk) leaves it to the next append to try, and
    /// report.
    pub fn extend_in_background(&mut self, target: u64) {
        self.settle(false);
        let target = target.min(self.capacity);
        if self.extending.is_some() || target <= self.allocated {
            return;
        }
        let Ok(file) = self.file.try_clone() else {
            return;
        };
        let from = self.allocated;
        let spawned = std::thread::Builder::new()
            .name("wal-allocate".into())
            .spawn(move || {
                write_zeros(&file, from, target)?;
                file.sync_all()
            });
        if let Ok(thread) = spawned {
            self.extending = Some((target, thread));
        }
    }

    /// Tests: where a background allocation in progress will end.
    #[cfg(test)]
    pub fn extending_to(&self) -> Option<u64> {
        self.extending.as_ref().map(|(target, _)| *target)
    }

    /// Tests: a background allocation ran and is done (not yet taken).
    #[cfg(test)]
    pub fn background_finished(&self) -> bool {
        self.extending
            .as_ref()
            .is_some_and(|(_, thread)| thread.is_finished())
    }

    /// Takes the space of a finished background allocation (waiting for
    /// it if `wait`).
    fn settle(&mut self, wait: bool) {
        let finished = self
            .extending
            .as_ref()
            .is_some_and(|(_, thread)| thread.is_finished());
        if !(finished || wait) {
            return;
        }
        if let Some((target, thread)) = self.extending.take()
            && let Ok(Ok(())) = thread.join()
        {
            self.allocated = self.allocated.max(target);
        }
    }

    /// Where the next frame goes, for its checksums.
    pub fn place(&self) -> Place {
        Place {
            salt: self.salt,
            seq: self.seq,
            offset: self.end,
        }
    }

    /// Writes `frames` at `end`, without syncing; `end` moves past them
    /// only once written. The space must be reserved.
    pub fn write(&mut self, frames: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(written) = super::seams::take_write_failure() {
            // What a write cut short by a full disk leaves: a prefix.
            let cut = frames.get(..written).unwrap_or(frames);
            self.file.write_all_at(cut, self.end)?;
            return Err(io::Error::from_raw_os_error(28));
        }
        self.file.write_all_at(frames, self.end)?;
        self.end += frames.len() as u64;
        Ok(())
    }

    /// fdatasync: everything written is durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()?;
        #[cfg(test)]
        super::seams::count_sync();
        Ok(())
    }

    /// Overwrites `[from, until)` with zeros and syncs (a torn tail).
    pub fn zero(&self, from: u64, until: u64) -> io::Result<()> {
        write_zeros(&self.file, from, until)?;
        self.file.sync_data()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Its file is used again only after this (a reopen, a wipe).
        self.settle(true);
    }
}

fn write_zeros(file: &File, from: u64, until: u64) -> io::Result<()> {
    let zeros = vec![0u8; 64 << 10];
    let mut at = from;
    while at < until {
        let n = (until - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}
