//! The simulated disk of one node: what survives a crash. It follows the
//! Ready contract exactly (snapshot, then entries truncating the log, then
//! hard state, as one atomic write) and models an unsynced write (a bare
//! commit-index change) that a crash may lose. A torn or unsynced WAL
//! batch is a write that never happened (the store drops it whole at
//! open); what the store can leave half-done is a snapshot from the
//! leader, which is three steps on disk (term and vote to the WAL, the
//! snapshot to LMDB, the reset of the log to the WAL): [`Disk::tear_install`]
//! leaves what a crash after the second leaves, as the store recovers
//! it. Owns only persisted bytes; checks only the contract's own rules
//! and reports breaks as errors.

use ticketd::raft::{
    Entry, EntryKind, HardState, LogIndex, Membership, Persisted, Ready, Snapshot, SnapshotMeta,
    Term,
};

#[derive(Clone, Debug)]
pub struct Disk {
    /// Durable hard state.
    hard_state: HardState,
    /// The last unsynced hard state: only in the page cache until the next
    /// synced write, so a crash may drop it.
    unsynced: Option<HardState>,
    pub snapshot: Snapshot,
    /// Contiguous, starting at `snapshot.meta.index + 1`.
    pub entries: Vec<Entry>,
}

impl Disk {
    /// An empty data directory bootstrapped with `membership` (empty for a
    /// node that is about to be added: it learns everything from the
    /// leader).
    pub fn bootstrap(membership: Membership) -> Disk {
        let meta = SnapshotMeta {
            index: 0,
            term: 0,
            membership,
        };
        Disk {
            hard_state: HardState::default(),
            unsynced: None,
            snapshot: Snapshot {
                meta,
                data: Vec::new(),
            },
            entries: Vec::new(),
        }
    }

    /// A disk holding exactly this state (hand-built scenarios).
    pub fn from_persisted(persisted: Persisted) -> Disk {
        Disk {
            hard_state: persisted.hard_state,
            unsynced: None,
            snapshot: persisted.snapshot,
            entries: persisted.entries,
        }
    }

    pub fn persisted(&self) -> Persisted {
        Persisted {
            hard_state: self.hard_state(),
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
        }
    }

    /// What a read sees now (including an unsynced write).
    pub fn hard_state(&self) -> HardState {
        self.unsynced.unwrap_or(self.hard_state)
    }

    pub fn last_index(&self) -> LogIndex {
        self.snapshot.meta.index + self.entries.len() as u64
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let first = self.snapshot.meta.index + 1;
        if index < first {
            return None;
        }
        self.entries.get((index - first) as usize)
    }

    /// The term at `index`, also at the snapshot's own index.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.meta.index {
            return Some(self.snapshot.meta.term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The power cut: an unsynced write survives or not, as the coin says.
    pub fn crash(&mut self, unsynced_survives: bool) {
        if let Some(hard_state) = self.unsynced.take()
            && unsynced_survives
        {
            self.hard_state = hard_state;
        }
    }

    /// Step 1 of the Ready contract. Returns the entries written, each with
    /// the term of the entry before it (for the log-matching check).
    pub fn persist(&mut self, ready: &Ready) -> Result<Vec<(Entry, Term)>, String> {
        if !ready.must_sync {
            return self.persist_unsynced(ready);
        }
        if let Some(hard_state) = self.unsynced.take() {
            // A synced write flushes everything written before it.
            self.hard_state = hard_state;
        }
        if let Some(snapshot) = &ready.snapshot {
            self.snapshot = snapshot.clone();
            self.entries.clear();
        }
        let written = self.append(&ready.entries)?;
        if let Some(hard_state) = ready.hard_state {
            // The store refuses this too (`check_hard_state`).
            if hard_state.commit > self.last_index() {
                return Err(format!(
                    "hard state commit {} past the last log index {}",
                    hard_state.commit,
                    self.last_index()
                ));
            }
            self.hard_state = hard_state;
        }
        Ok(written)
    }

    /// A crash in the middle of a Ready's snapshot install, as the store
    /// writes it: a changed term and vote reached the WAL (the commit
    /// where the old log had it), the snapshot reached LMDB, the reset of
    /// the log did not. At open the store keeps the old log after the
    /// snapshot only if it holds the snapshot's own entry (Raft's rule),
    /// and drops it otherwise. The Ready's entries and commit are lost.
    pub fn tear_install(&mut self, ready: &Ready) -> Result<(), String> {
        let Some(snapshot) = &ready.snapshot else {
            return Err("tear_install of a Ready without a snapshot".into());
        };
        if let Some(hard_state) = self.unsynced.take() {
            self.hard_state = hard_state;
        }
        if let Some(hard_state) = ready.hard_state
            && (hard_state.term, hard_state.vote) != (self.hard_state.term, self.hard_state.vote)
        {
            self.hard_state = HardState {
                commit: self.hard_state.commit,
                ..hard_state
            };
        }
        let meta = &snapshot.meta;
        let kept: Vec<Entry> = if self.term_at(meta.index) == Some(meta.term) {
            self.entries
                .iter()
                .filter(|e| e.index > meta.index)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        self.snapshot = snapshot.clone();
        self.entries = kept;
        let hard_state = self.hard_state;
        if hard_state.commit > self.last_index() || hard_state.term < self.last_term() {
            // The store would refuse to open this directory.
            return Err(format!(
                "a torn snapshot install at {} leaves {hard_state:?} over a log ending at {} (term {})",
                meta.index,
                self.last_index(),
                self.last_term()
            ));
        }
        Ok(())
    }

    fn last_term(&self) -> Term {
        self.entries
            .last()
            .map_or(self.snapshot.meta.term, |e| e.term)
    }

    fn persist_unsynced(&mut self, ready: &Ready) -> Result<Vec<(Entry, Term)>, String> {
        if ready.snapshot.is_some() || !ready.entries.is_empty() {
            return Err("ready with entries or a snapshot has must_sync == false".into());
        }
        if let Some(hard_state) = ready.hard_state {
            let before = self.hard_state();
            if hard_state.term != before.term || hard_state.vote != before.vote {
                return Err(format!(
                    "unsynced hard state changes term/vote: {before:?} -> {hard_state:?}"
                ));
            }
            self.unsynced = Some(hard_state);
        }
        Ok(Vec::new())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<Vec<(Entry, Term)>, String> {
        let Some(first) = entries.first() else {
            return Ok(Vec::new());
        };
        let snapshot_index = self.snapshot.meta.index;
        if first.index <= snapshot_index || first.index > self.last_index() + 1 {
            return Err(format!(
                "ready entries start at {} but the disk holds ({snapshot_index}, {}]",
                first.index,
                self.last_index()
            ));
        }
        self.entries
            .truncate((first.index - snapshot_index - 1) as usize);
        let mut written = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.index != self.last_index() + 1 {
                return Err(format!("ready entries not contiguous at {}", entry.index));
            }
            let prev_term = self.term_at(entry.index - 1).unwrap_or(0);
            written.push((entry.clone(), prev_term));
            self.entries.push(entry.clone());
        }
        Ok(written)
    }

    /// The driver's own log compaction after `Raft::compact` accepted it:
    /// the snapshot replaces the prefix up to `index`.
    pub fn compact(&mut self, index: LogIndex, data: Vec<u8>) -> Result<(), String> {
        // As the store: never at or below the snapshot on disk.
        if index <= self.snapshot.meta.index {
            return Err(format!(
                "compact at {index}: already compacted to {}",
                self.snapshot.meta.index
            ));
        }
        let Some(term) = self.term_at(index) else {
            return Err(format!("compact at {index}: not on disk"));
        };
        let membership = self.membership_at(index);
        let drop = (index - self.snapshot.meta.index) as usize;
        self.entries.drain(..drop);
        self.snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                membership,
            },
            data,
        };
        Ok(())
    }

    /// The membership in force at `index`: the last Config entry at or
    /// before it, else the snapshot's.
    fn membership_at(&self, index: LogIndex) -> Membership {
        let first = self.snapshot.meta.index + 1;
        let config = self
            .entries
            .iter()
            .take((index + 1).saturating_sub(first) as usize)
            .rev()
            .find(|e| e.kind == EntryKind::Config);
        match config.map(|e| Membership::decode(&e.data)) {
            Some(Ok(membership)) => membership,
            _ => self.snapshot.meta.membership.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: LogIndex, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![index as u8],
        }
    }

    fn ready(entries: Vec<Entry>, hard_state: Option<HardState>, must_sync: bool) -> Ready {
        Ready {
            hard_state,
            must_sync,
            snapshot: None,
            entries,
            messages: Vec::new(),
            committed: Vec::new(),
            leader_durable: false,
        }
    }

    #[test]
    fn entries_truncate_then_append_and_unsynced_commit_may_be_lost() {
        let mut disk = Disk::bootstrap(Membership::default());
        let hs = HardState {
            term: 1,
            vote: 1,
            commit: 0,
        };
        disk.persist(&ready(
            vec![entry(1, 1), entry(2, 1), entry(3, 1)],
            Some(hs),
            true,
        ))
        .unwrap();
        let written = disk.persist(&ready(vec![entry(2, 2)], None, true)).unwrap();
        assert_eq!(written, vec![(entry(2, 2), 1)]);
        assert_eq!(disk.last_index(), 2);
        let commit = HardState { commit: 2, ..hs };
        disk.persist(&ready(Vec::new(), Some(commit), false))
            .unwrap();
        assert_eq!(disk.hard_state(), commit);
        disk.crash(false);
        assert_eq!(disk.hard_state(), hs, "the unsynced commit is gone");
        let vote = HardState {
            term: 2,
            vote: 3,
            commit: 0,
        };
        assert!(disk.persist(&ready(Vec::new(), Some(vote), false)).is_err());
        assert!(
            disk.persist(&ready(vec![entry(5, 2)], None, true)).is_err(),
            "gap"
        );
    }

    #[test]
    fn compaction_keeps_the_suffix_and_the_membership_in_force() {
        let mut disk = Disk::bootstrap(Membership::default());
        let mut config = entry(2, 1);
        config.kind = EntryKind::Config;
        let mut membership = Membership::default();
        membership.members.insert(
            7,
            ticketd::raft::Member {
                voter: true,
                peer_addr: "a".into(),
                http_addr: String::new(),
                incarnation: 0,
            },
        );
        config.data = membership.encode();
        disk.persist(&ready(vec![entry(1, 1), config, entry(3, 1)], None, true))
            .unwrap();
        disk.compact(2, vec![9]).unwrap();
        assert_eq!(disk.snapshot.meta.index, 2);
        assert_eq!(disk.snapshot.meta.membership, membership);
        assert_eq!(disk.entries, vec![entry(3, 1)]);
        assert_eq!(disk.term_at(2), Some(1));
        assert!(disk.compact(1, Vec::new()).is_err());
    }
}
