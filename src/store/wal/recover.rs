//! Reading the WAL back: scan every segment in order, replay the batches
//! into the log they describe, and say what a crash left at the tail.
//! It changes no byte (it only fdatasyncs each segment before reading
//! it, see [`read_synced`]); [`super::Wal::open`] does the repairs it
//! reports.
//!
//! Rules:
//! - segments are taken from the longest run of consecutive sequence
//!   numbers ending at the newest: older ones before a gap are what an
//!   interrupted deletion left (deletions go oldest first, but a crash may
//!   persist the unlinks in any order), and wholly below the snapshot;
//! - every segment starts with a valid header naming its own sequence
//!   number. Only the newest may lack one, if every byte after the
//!   header's own is zero: it was being created (its header is synced
//!   before any batch goes in) and holds nothing. A newest segment with
//!   a bad header and anything written after it is damage to synced data;
//! - in the newest segment, frames are written one at a time, each
//!   synced before the next, so only the last can be torn, and it was
//!   never acknowledged (a batch is one frame, acknowledged after its
//!   sync). Where the frames stop, at a zero, torn or damaged frame, the
//!   rest of the segment is searched, at every aligned offset up to its
//!   last non-zero byte, for a frame header whose checksum matches that
//!   place (its body may be torn): if there is one, a write began after
//!   the frame that stopped the log, so that frame was synced and is
//!   damaged, and the log refuses to open; if there is none, the stop is
//!   a torn last frame, whatever subset of its sectors or pages reached
//!   the disk (no part of it can pass for a frame header: the checksum
//!   binds the segment's salt and the offset), and its bytes up to the
//!   last non-zero one are reported, to be zeroed. Damage to the very
//!   last synced frame, with no header of a later write on the disk,
//!   cannot be told from a torn write, and is taken for one;
//! - in any older segment the frames run, intact, up to a seal: anything
//!   else is damage to synced data, and the log refuses to open.

use std::fs;
use std::path::{Path, PathBuf};

use super::record::{self, Found, Header, Op, Place};
use super::segment;
use crate::raft::{Entry, HardState, LogIndex, Term};
use crate::store::{AppRecord, StoreError};

/// The log a WAL describes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The position before the first entry (the first segment's base, or
    /// the last reset or truncation below it).
    pub base_index: LogIndex,
    pub base_term: Term,
    /// From `base_index + 1` on, contiguous.
    pub entries: Vec<Entry>,
    /// The segment each entry was last written in.
    pub segments: Vec<u64>,
    pub hard_state: HardState,
    pub app: AppRecord,
    /// The snapshot position of the last reset, if any.
    pub reset: Option<(LogIndex, Term)>,
}

impl Replayed {
    pub fn last(&self) -> (LogIndex, Term) {
        match self.entries.last() {
            Some(entry) => (entry.index, entry.term),
            None => (self.base_index, self.base_term),
        }
    }

    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.base_index {
            return Some(self.base_term);
        }
        let offset = index.checked_sub(self.base_index.checked_add(1)?)?;
        self.entries
            .get(usize::try_from(offset).ok()?)
            .map(|e| e.term)
    }

    fn apply(&mut self, op: Op, seq: u64) -> Result<(), String> {
        match op {
            Op::Truncate { from, prev_term } => {
                let (last, _) = self.last();
                if from == 0 || last.checked_add(1).is_some_and(|next| from > next) {
                    return Err(format!("truncation at {from} past the last index {last}"));
                }
                if from <= self.base_index {
                    // The segments holding what came before were deleted
                    // (it is below the snapshot): start over from here.
                    self.entries.clear();
                    self.segments.clear();
                    self.base_index = from - 1;
                    self.base_term = prev_term;
                } else {
                    if self.term_at(from - 1) != Some(prev_term) {
                        return Err(format!(
                            "truncation at {from} names term {prev_term} before it, the log has {:?}",
                            self.term_at(from - 1)
                        ));
                    }
                    let keep = (from - self.base_index - 1) as usize;
                    self.entries.truncate(keep);
                    self.segments.truncate(keep);
                }
            }
            Op::Entries(entries) => {
                for entry in entries {
                    let (last, last_term) = self.last();
                    if Some(entry.index) != last.checked_add(1) {
                        return Err(format!(
                            "entry {} does not follow the last index {last}",
                            entry.index
                        ));
                    }
                    if entry.term < last_term {
                        return Err(format!(
                            "entry {} has term {} below the previous term {last_term}",
                            entry.index, entry.term
                        ));
                    }
                    self.entries.push(entry);
                    self.segments.push(seq);
                }
            }
            Op::HardState(hard_state) => self.hard_state = hard_state,
            Op::App(app) => self.app = app,
            Op::Reset { index, term } => {
                self.entries.clear();
                self.segments.clear();
                self.base_index = index;
                self.base_term = term;
                self.reset = Some((index, term));
            }
        }
        Ok(())
    }
}

/// One segment as the scan found it.
#[derive(Clone, Debug)]
pub struct Scanned {
    pub seq: u64,
    pub path: PathBuf,
    /// In its frames' checksums.
    pub salt: u64,
    /// Where the next frame goes.
    pub end: u64,
    pub sealed: bool,
    /// A torn tail to zero: `[from, until)`.
    pub torn: Option<(u64, u64, String)>,
}

/// What [`scan`] found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Usable segments, oldest first (the last one is appended to).
    pub segments: Vec<Scanned>,
    /// Files to delete: segments before a gap, and a newest segment that
    /// never got its header.
    pub stale: Vec<PathBuf>,
    pub replayed: Replayed,
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("WAL segment {}: {what}", path.display()))
}

fn io_error(path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Io(format!("reading {}: {error}", path.display()))
}

/// A segment's bytes as the disk holds them. An `fdatasync` first: a
/// write of an earlier run whose writeback fails now is refused, not
/// trusted from the page cache. Then the file's cached pages are dropped
/// (`posix_fadvise` DONTNEED, best effort: it drops only clean pages, and
/// a file system may ignore it), so that pages an earlier failed
/// writeback left in the cache, marked clean but never written, are read
/// again from the disk.
///
/// # Errors
/// `Io` if the sync or the read fails.
fn read_synced(path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut file = fs::File::open(path).map_err(|e| io_error(path, e))?;
    #[cfg(test)]
    let failed = super::seams::take_scan_sync_failure();
    #[cfg(not(test))]
    let failed = false;
    let synced = if failed {
        Err(std::io::Error::from_raw_os_error(5))
    } else {
        file.sync_data()
    };
    synced.map_err(|e| {
        StoreError::Io(format!(
            "syncing {} before reading it: {e} (data cached for it may never have reached the disk; check the disk)",
            path.display()
        ))
    })?;
    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| io_error(path, e))?;
    Ok(bytes)
}

/// The segments in `dir`, by sequence number.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(io_error(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name();
        if let Some(seq) = name.to_str().and_then(segment::parse_name) {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads the WAL in `dir`; `Ok(None)` when it has no segment.
pub fn scan(dir: &Path) -> Result<Option<Scan>, StoreError> {
    let mut listed = list(dir)?;
    if listed.is_empty() {
        return Ok(None);
    }
    let mut out = Scan::default();
    // The run of consecutive numbers that ends at the newest.
    let mut start = listed.len() - 1;
    while start > 0 && listed[start - 1].0.checked_add(1) == Some(listed[start].0) {
        start -= 1;
    }
    out.stale
        .extend(listed.drain(..start).map(|(_, path)| path));
    // A newest segment without a valid header was being created (its
    // header is synced before any batch goes in): it holds nothing but
    // what the header write left in the header's own bytes. Anything
    // written after them means the header was synced and is damaged.
    if listed.len() > 1
        && let Some((seq, path)) = listed.last()
    {
        let bytes = read_synced(path)?;
        let valid = matches!(
            record::decode_frame(&bytes, record::header_place(*seq)),
            Found::Frame { kind: record::HEADER, body, .. } if record::decode_header(body).is_ok()
        );
        if !valid {
            let after = bytes.get(record::HEADER_FRAME_LEN..).unwrap_or(&[]);
            if let Some(at) = after.iter().position(|&b| b != 0) {
                return Err(corrupt(
                    path,
                    format!(
                        "damaged header, with data written after it (byte {})",
                        record::HEADER_FRAME_LEN + at
                    ),
                ));
            }
            if let Some((_, path)) = listed.pop() {
                out.stale.push(path);
            }
        }
    }
    let count = listed.len();
    let mut first = true;
    for (n, (seq, path)) in listed.into_iter().enumerate() {
        let newest = n + 1 == count;
        let bytes = read_synced(&path)?;
        let header = match record::decode_frame(&bytes, record::header_place(seq)) {
            Found::Frame {
                kind: record::HEADER,
                body,
                len,
            } => record::decode_header(body)
                .map_err(|e| corrupt(&path, format!("header: {e}")))
                .map(|h| (h, len)),
            Found::Frame { kind, .. } => {
                Err(corrupt(&path, format!("starts with frame kind {kind}")))
            }
            Found::End => Err(corrupt(&path, "no header")),
            Found::Bad(why) => Err(corrupt(&path, format!("header: {why}"))),
        };
        let ((header, salt), mut at) = header?;
        if header.seq != seq {
            return Err(corrupt(
                &path,
                format!("header names segment {} (a renamed file?)", header.seq),
            ));
        }
        start_segment(&mut out.replayed, &header, first).map_err(|e| corrupt(&path, e))?;
        first = false;
        let mut scanned = Scanned {
            seq,
            salt,
            path: path.clone(),
            end: 0,
            sealed: false,
            torn: None,
        };
        loop {
            let rest = bytes.get(at..).unwrap_or(&[]);
            let place = Place {
                salt,
                seq,
                offset: at as u64,
            };
            let why = match record::decode_frame(rest, place) {
                Found::Frame {
                    kind: record::BATCH,
                    body,
                    len,
                } => {
                    let ops = record::decode_batch(body)
                        .map_err(|e| corrupt(&path, format!("batch at byte {at}: {e}")))?;
                    for op in ops {
                        out.replayed
                            .apply(op, seq)
                            .map_err(|e| corrupt(&path, format!("batch at byte {at}: {e}")))?;
                    }
                    at += len;
                    continue;
                }
                Found::Frame {
                    kind: record::SEAL,
                    len,
                    ..
                } => {
                    at += len;
                    scanned.sealed = true;
                    break;
                }
                Found::Frame { kind, .. } => {
                    return Err(corrupt(&path, format!("frame kind {kind} at byte {at}")));
                }
                Found::End if !newest => break,
                Found::Bad(why) if !newest => {
                    return Err(corrupt(
                        &path,
                        format!("damaged frame at byte {at} ({why}) with newer segments after it"),
                    ));
                }
                Found::End => None,
                Found::Bad(why) => Some(why),
            };
            // The newest segment's frames stop here: a torn last frame,
            // unless a synced frame follows.
            let Some(last) = rest.iter().rposition(|&b| b != 0) else {
                break;
            };
            let until = at + last + 1;
            let what = why.as_deref().unwrap_or("a zero frame header");
            if let Some(next) = frame_after(&bytes, at, until, salt, seq) {
                return Err(corrupt(
                    &path,
                    format!(
                        "damaged frame at byte {at} ({what}) with more written after it: a frame header at byte {next}"
                    ),
                ));
            }
            let why = why.unwrap_or_else(|| "bytes after the last frame".into());
            scanned.torn = Some((at as u64, until as u64, why));
            break;
        }
        if !newest && !scanned.sealed {
            return Err(corrupt(
                &path,
                format!("ends at byte {at} without a seal, with newer segments after it"),
            ));
        }
        scanned.end = at as u64;
        out.segments.push(scanned);
    }
    Ok(Some(out))
}

/// The first aligned offset in `(at, until)` where a frame header of
/// segment `seq` sits, valid at that place: a write that began after the
/// frame that stopped the log was synced. Its body need not be whole
/// (it may be the torn last write): frames are written one at a time,
/// each after the previous one's sync, so the header alone proves the
/// earlier frame was acknowledged. The header's checksum binds the
/// segment's salt and the offset, so neither a remnant nor a client's
/// data passes for one.
fn frame_after(bytes: &[u8], at: usize, until: usize, salt: u64, seq: u64) -> Option<usize> {
    let mut next = record::aligned(at.checked_add(1)?);
    while next < until {
        let rest = bytes.get(next..)?;
        let place = Place {
            salt,
            seq,
            offset: next as u64,
        };
        let zero = rest
            .get(..record::FRAME_HEADER_LEN)
            .is_some_and(|head| head.iter().all(|&b| b == 0));
        if !zero && record::frame_header(rest, place).is_ok() {
            return Some(next);
        }
        next = next.checked_add(record::ALIGN)?;
    }
    None
}

/// A segment's header: the start of the log for the first, a check that
/// it continues the replayed log for every later one.
fn start_segment(replayed: &mut Replayed, header: &Header, first: bool) -> Result<(), String> {
    if first {
        replayed.base_index = header.base_index;
        replayed.base_term = header.base_term;
    } else if replayed.last() != (header.base_index, header.base_term) {
        return Err(format!(
            "header continues from ({}, {}) but the log before ends at {:?}",
            header.base_index,
            header.base_term,
            replayed.last()
        ));
    }
    replayed.hard_state = header.hard_state;
    replayed.app = header.app;
    Ok(())
}
