//! Reading the WAL back: scan every segment in order, replay the batches
//! into the log they describe, and say what a crash left at the tail.
//! Read-only; [`super::Wal::open`] does the repairs it reports.
//!
//! Rules:
//! - segments are taken from the longest run of consecutive sequence
//!   numbers ending at the newest: older ones before a gap are what an
//!   interrupted deletion left (deletions go oldest first, but a crash may
//!   persist the unlinks in any order), and wholly below the snapshot;
//! - every segment starts with a valid header naming its own sequence
//!   number. Only the newest may lack one: it was being created (its
//!   header is synced before any batch goes in) and holds nothing;
//! - in the newest segment the first torn, damaged or zero frame ends the
//!   log: nothing after it was ever synced (each batch is one frame, and
//!   a batch is acknowledged only after its sync, so a torn batch was
//!   never acknowledged). Its bytes up to the last non-zero one are
//!   reported, to be zeroed. Frames are written one at a time, each
//!   synced before the next, so only the last can be torn: a damaged
//!   frame followed by more written bytes is damage to synced data;
//! - in any older segment the frames run, intact, up to a seal: anything
//!   else is damage to synced data, and the log refuses to open.

use std::fs;
use std::path::{Path, PathBuf};

use super::record::{self, Found, Header, Op};
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
        let offset = index.checked_sub(self.base_index + 1)?;
        self.entries
            .get(usize::try_from(offset).ok()?)
            .map(|e| e.term)
    }

    fn apply(&mut self, op: Op, seq: u64) -> Result<(), String> {
        match op {
            Op::Truncate { from, prev_term } => {
                let (last, _) = self.last();
                if from == 0 || from > last + 1 {
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
    // header is synced before any batch goes in): it holds nothing.
    if listed.len() > 1
        && let Some((_, path)) = listed.last()
    {
        let bytes = fs::read(path).map_err(|e| io_error(path, e))?;
        let valid = matches!(
            record::decode_frame(&bytes),
            Found::Frame { kind: record::HEADER, body, .. } if record::decode_header(body).is_ok()
        );
        if !valid && let Some((_, path)) = listed.pop() {
            out.stale.push(path);
        }
    }
    let count = listed.len();
    let mut first = true;
    for (n, (seq, path)) in listed.into_iter().enumerate() {
        let newest = n + 1 == count;
        let bytes = fs::read(&path).map_err(|e| io_error(&path, e))?;
        let header = match record::decode_frame(&bytes) {
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
        let (header, mut at) = header?;
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
            path: path.clone(),
            end: 0,
            sealed: false,
            torn: None,
        };
        loop {
            let rest = bytes.get(at..).unwrap_or(&[]);
            match record::decode_frame(rest) {
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
                Found::End if newest => {
                    // A frame whose first bytes never landed may have
                    // left later ones: zeroed, so no append lands short
                    // of them.
                    if let Some(last) = rest.iter().rposition(|&b| b != 0) {
                        let why = "bytes after the last frame".to_string();
                        scanned.torn = Some((at as u64, (at + last + 1) as u64, why));
                    }
                    break;
                }
                Found::End => break,
                Found::Bad(why) if newest => {
                    // Each frame is synced before the next is written, so
                    // only the last one can be torn: frames after a bad
                    // one mean it was synced, and is damaged.
                    if let Some(after) = frame_extent(rest).and_then(|len| rest.get(len..))
                        && after.iter().any(|&b| b != 0)
                    {
                        return Err(corrupt(
                            &path,
                            format!(
                                "damaged frame at byte {at} ({why}) with more written after it"
                            ),
                        ));
                    }
                    let until = rest.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                    scanned.torn = Some((at as u64, (at + until) as u64, why));
                    break;
                }
                Found::Bad(why) => {
                    return Err(corrupt(
                        &path,
                        format!("damaged frame at byte {at} ({why}) with newer segments after it"),
                    ));
                }
            }
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

/// The length a frame's header claims, if it fits in `rest`.
fn frame_extent(rest: &[u8]) -> Option<usize> {
    let head = rest.get(..record::FRAME_HEADER_LEN)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let extent = record::FRAME_HEADER_LEN.checked_add(len)?;
    (extent <= rest.len()).then_some(extent)
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
