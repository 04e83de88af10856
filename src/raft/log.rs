//! The in-memory Raft log: the latest snapshot followed by every entry
//! after it, with the indexes that say how far the entries are persisted,
//! committed and handed out for applying.
//!
//! The whole uncompacted log lives in memory; compaction on the driver's
//! snapshot cadence keeps it short, and it spares the core a storage
//! trait that could fail under it.

use super::types::{Entry, LogIndex, Snapshot, Term};

/// Invariants: `entries[i].index == snapshot.meta.index + 1 + i`;
/// `snapshot.meta.index <= applied <= commit`;
/// `stable <= sent <= last_index()`.
#[derive(Debug)]
pub struct RaftLog {
    snapshot: Snapshot,
    entries: Vec<Entry>,
    /// The last index known to be on disk.
    stable: LogIndex,
    /// The last index handed to the driver for writing (on disk, or in a
    /// write still in progress: see `Raft::advance_async`).
    sent: LogIndex,
    pub(crate) commit: LogIndex,
    /// The last index handed to the driver for applying.
    pub(crate) applied: LogIndex,
    /// `snapshot` was received from a leader and is not on disk yet.
    pub(crate) snapshot_unstable: bool,
}

impl RaftLog {
    /// A log restored from disk: everything given is stable.
    pub fn restore(snapshot: Snapshot, entries: Vec<Entry>, commit: LogIndex) -> RaftLog {
        let base = snapshot.meta.index;
        let last = base + entries.len() as u64;
        RaftLog {
            snapshot,
            entries,
            stable: last,
            sent: last,
            commit: commit.clamp(base, last),
            applied: base,
            snapshot_unstable: false,
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn first_index(&self) -> LogIndex {
        self.snapshot.meta.index + 1
    }

    pub fn last_index(&self) -> LogIndex {
        self.snapshot.meta.index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> Term {
        self.entries
            .last()
            .map_or(self.snapshot.meta.term, |entry| entry.term)
    }

    pub fn stable_index(&self) -> LogIndex {
        self.stable
    }

    pub fn sent_index(&self) -> LogIndex {
        self.sent
    }

    /// The term of the entry at `index`, if the log still knows it.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        let base = self.snapshot.meta.index;
        if index == base {
            return Some(self.snapshot.meta.term);
        }
        if index < base {
            return None;
        }
        self.entries
            .get((index - base - 1) as usize)
            .map(|entry| entry.term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let base = self.snapshot.meta.index;
        if index <= base {
            return None;
        }
        self.entries.get((index - base - 1) as usize)
    }

    /// Entries from `from` on, at most `count_max` of them and about
    /// `bytes_max` bytes (always at least one when any is there).
    pub fn slice(&self, from: LogIndex, count_max: usize, bytes_max: usize) -> Vec<Entry> {
        let base = self.snapshot.meta.index;
        if from <= base || from > self.last_index() {
            return Vec::new();
        }
        let start = (from - base - 1) as usize;
        let mut bytes = 0usize;
        let mut out = Vec::new();
        for entry in self.entries[start..].iter().take(count_max) {
            bytes += entry.data.len() + 32;
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Entries whose index is in `(after, upto]`.
    pub fn range(&self, after: LogIndex, upto: LogIndex) -> Vec<Entry> {
        let base = self.snapshot.meta.index;
        let lo = after.max(base);
        let hi = upto.min(self.last_index());
        if hi <= lo {
            return Vec::new();
        }
        self.entries[(lo - base) as usize..(hi - base) as usize].to_vec()
    }

    /// The entries not yet on disk.
    pub fn unstable(&self) -> Vec<Entry> {
        self.range(self.sent, self.last_index())
    }

    /// Appends one entry at `last_index() + 1`.
    pub fn push(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        self.entries.push(entry);
    }

    /// Drops every entry from `index` on. Never below the commit index.
    pub fn truncate_from(&mut self, index: LogIndex) {
        assert!(index > self.commit, "truncating committed entries");
        let base = self.snapshot.meta.index;
        let keep = (index - base - 1) as usize;
        self.entries.truncate(keep);
        self.stable = self.stable.min(index - 1);
        self.sent = self.sent.min(index - 1);
    }

    /// Marks entries up to `index` as on disk (if they still are the
    /// entries that were persisted: `index` is clamped to the log).
    pub fn stable_to(&mut self, index: LogIndex) {
        self.stable = self.stable.max(index.min(self.last_index()));
        self.sent = self.sent.max(self.stable);
    }

    /// Marks entries up to `index` as handed out for writing.
    pub fn sent_to(&mut self, index: LogIndex) {
        self.sent = self.sent.max(index.min(self.last_index()));
    }

    /// A write failed: hand out again everything not known to be on disk.
    pub fn rewind_sent(&mut self) {
        self.sent = self.stable;
    }

    pub fn commit_to(&mut self, index: LogIndex) -> bool {
        let index = index.min(self.last_index());
        if index > self.commit {
            self.commit = index;
            return true;
        }
        false
    }

    /// Replaces the whole log by a snapshot received from the leader.
    pub fn install(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        self.entries.clear();
        self.snapshot = snapshot;
        self.stable = index;
        self.sent = index;
        self.commit = index;
        self.applied = index;
        self.snapshot_unstable = true;
    }

    /// Drops the prefix up to `snapshot.meta.index`, which must be applied.
    pub fn compact(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        let base = self.snapshot.meta.index;
        debug_assert!(index > base && index <= self.applied);
        let drop = ((index - base) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.snapshot = snapshot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::{EntryKind, SnapshotMeta};

    fn entry(index: LogIndex, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![index as u8],
        }
    }

    fn snapshot(index: LogIndex, term: Term) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                membership: Default::default(),
            },
            data: Vec::new(),
        }
    }

    #[test]
    fn indexes_and_terms_follow_the_snapshot() {
        let log = RaftLog::restore(snapshot(5, 2), vec![entry(6, 2), entry(7, 3)], 9);
        assert_eq!(log.first_index(), 6);
        assert_eq!(log.last_index(), 7);
        assert_eq!(log.commit, 7, "commit clamps to the log");
        assert_eq!(log.term_at(5), Some(2));
        assert_eq!(log.term_at(4), None);
        assert_eq!(log.term_at(7), Some(3));
        assert_eq!(log.term_at(8), None);
        assert_eq!(log.range(5, 7).len(), 2);
        assert_eq!(log.slice(6, 1, 1000).len(), 1);
        assert!(log.unstable().is_empty());
    }

    #[test]
    fn truncation_makes_the_suffix_unstable() {
        let mut log = RaftLog::restore(snapshot(0, 0), vec![entry(1, 1), entry(2, 1)], 1);
        log.truncate_from(2);
        log.push(entry(2, 2));
        assert_eq!(log.stable_index(), 1);
        assert_eq!(log.unstable(), vec![entry(2, 2)]);
        log.stable_to(2);
        assert!(log.unstable().is_empty());
    }

    #[test]
    fn a_slice_stops_at_the_count_or_about_the_bytes_but_holds_one() {
        let big = |index| Entry {
            data: vec![0; 100],
            ..entry(index, 1)
        };
        let log = RaftLog::restore(snapshot(0, 0), (1..=5).map(big).collect(), 0);
        // 132 bytes an entry as counted (32 of overhead).
        assert_eq!(log.slice(1, 10, 132).len(), 1);
        assert_eq!(log.slice(1, 10, 264).len(), 2);
        assert_eq!(log.slice(1, 10, 263).len(), 1);
        assert_eq!(log.slice(1, 10, 1).len(), 1, "at least one");
        assert_eq!(log.slice(2, 3, 1 << 20).len(), 3);
        assert_eq!(log.slice(5, 10, 1 << 20).len(), 1);
        assert!(log.slice(6, 10, 1 << 20).is_empty());
        assert!(log.slice(0, 10, 1 << 20).is_empty());
        let first: Vec<LogIndex> = log.slice(2, 2, 1 << 20).iter().map(|e| e.index).collect();
        assert_eq!(first, vec![2, 3]);
    }

    #[test]
    fn ranges_and_the_unstable_tail_clamp_to_the_log() {
        let mut log = RaftLog::restore(snapshot(2, 1), (3..=6).map(|i| entry(i, 1)).collect(), 6);
        let indexes = |entries: Vec<Entry>| entries.iter().map(|e| e.index).collect::<Vec<_>>();
        assert_eq!(indexes(log.range(0, 9)), vec![3, 4, 5, 6]);
        assert_eq!(indexes(log.range(3, 5)), vec![4, 5]);
        assert!(log.range(5, 5).is_empty());
        assert!(log.range(6, 4).is_empty());
        log.push(entry(7, 2));
        log.push(entry(8, 2));
        assert_eq!(indexes(log.unstable()), vec![7, 8]);
        log.sent_to(7);
        assert_eq!(indexes(log.unstable()), vec![8]);
        assert_eq!((log.stable_index(), log.sent_index()), (6, 7));
        // A failed write hands out again what is not on disk.
        log.rewind_sent();
        assert_eq!(indexes(log.unstable()), vec![7, 8]);
        // Marked on disk beyond the log: clamped to it.
        log.stable_to(99);
        assert_eq!((log.stable_index(), log.sent_index()), (8, 8));
        log.sent_to(99);
        assert_eq!(log.sent_index(), 8);
        // Truncation pulls both marks back.
        log.truncate_from(8);
        assert_eq!(
            (log.last_index(), log.stable_index(), log.sent_index()),
            (7, 7, 7)
        );
        assert_eq!(log.last_term(), 2);
        assert_eq!(log.entry(7), Some(&entry(7, 2)));
        assert_eq!(log.entry(2), None);
    }

    #[test]
    fn the_commit_index_only_moves_forward_within_the_log() {
        let mut log = RaftLog::restore(snapshot(0, 0), (1..=3).map(|i| entry(i, 1)).collect(), 1);
        assert!(log.commit_to(2));
        assert_eq!(log.commit, 2);
        assert!(!log.commit_to(2));
        assert!(!log.commit_to(1));
        assert_eq!(log.commit, 2);
        assert!(log.commit_to(9));
        assert_eq!(log.commit, 3);
        assert_eq!(RaftLog::restore(snapshot(5, 1), Vec::new(), 2).commit, 5);
    }

    #[test]
    fn an_installed_snapshot_replaces_the_whole_log() {
        let mut log = RaftLog::restore(snapshot(0, 0), (1..=3).map(|i| entry(i, 1)).collect(), 1);
        log.install(snapshot(9, 2));
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_term()),
            (10, 9, 2)
        );
        assert_eq!((log.stable_index(), log.sent_index()), (9, 9));
        assert_eq!((log.commit, log.applied), (9, 9));
        assert!(log.snapshot_unstable);
        assert_eq!(log.term_at(9), Some(2));
        assert_eq!(log.term_at(3), None);
        assert!(log.unstable().is_empty());
    }

    #[test]
    fn compaction_up_to_the_last_entry_keeps_none_of_the_entries() {
        let mut log = RaftLog::restore(snapshot(0, 0), (1..=3).map(|i| entry(i, 1)).collect(), 3);
        log.applied = 3;
        log.compact(snapshot(3, 1));
        assert_eq!((log.first_index(), log.last_index()), (4, 3));
        assert_eq!(log.entry(3), None);
        assert_eq!(log.term_at(3), Some(1));
    }

    #[test]
    fn compaction_keeps_the_suffix() {
        let mut log = RaftLog::restore(snapshot(0, 0), (1..=5).map(|i| entry(i, 1)).collect(), 5);
        log.applied = 4;
        log.compact(snapshot(3, 1));
        assert_eq!(log.first_index(), 4);
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.entry(4), Some(&entry(4, 1)));
        assert_eq!(log.entry(3), None);
        // Again, from a snapshot that is not at 0: only the entries up to
        // the new index go.
        log.compact(snapshot(4, 1));
        assert_eq!((log.first_index(), log.last_index()), (5, 5));
        assert_eq!(log.entry(5), Some(&entry(5, 1)));
    }
}
