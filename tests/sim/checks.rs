//! The safety properties, checked after every simulated event: one leader
//! per term, log matching, leader completeness, state-machine safety (all
//! applied sequences agree), no committed entry lost or overwritten, at
//! most one valid lease and never beside a newer leader, and the per-node
//! invariants (terms never decrease, applied <= commit <= last index, the
//! disk mirrors the core), and for the IDs leaders serve: none served
//! twice, and each larger than every ID served before it in simulated
//! real time, across leader changes. Owns only what the checks remember;
//! never changes a node.

use std::collections::btree_map::Entry as MapEntry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use ticketd::raft::{Entry, LogIndex, NodeId, Raft, Role, SnapshotMeta, Term};

use crate::app::{App, Applied};
use crate::node::SimNode;

/// An entry known to be committed, and the lowest term in which any node
/// was seen holding it as committed (the commit happened in that term or
/// earlier).
#[derive(Clone, Copy, Debug)]
struct Known {
    applied: Applied,
    seen_in_term: Term,
}

#[derive(Default)]
pub struct Checker {
    /// `truth[i - 1]`: the committed entry at index `i`, once known.
    truth: Vec<Option<Known>>,
    leaders: BTreeMap<Term, NodeId>,
    /// Every `(index, term)` ever written anywhere, with its content hash,
    /// kind and the term of the entry before it: log matching, checked by
    /// induction one index at a time.
    pairs: HashMap<(LogIndex, Term), (u64, u8, Term), BuildHasherDefault<FxHasher>>,
    seen_commit: BTreeMap<NodeId, LogIndex>,
    max_term: BTreeMap<NodeId, Term>,
    /// Every ID served: by which node, in which term, when.
    served: HashMap<u64, (NodeId, Term, u64), BuildHasherDefault<FxHasher>>,
    /// The largest ID served so far, with who served it and when.
    served_max: Option<(u64, NodeId, Term, u64)>,
    pub stats: Stats,
}

/// The Fx hash (rustc's): the checker hashes a pair of integers per entry
/// written, where SipHash showed up as the simulator's hottest spot.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub leaders: u64,
    pub snapshots_installed: u64,
    /// Snapshot installs a crash tore half-way (`Disk::tear_install`).
    pub torn_installs: u64,
    pub lease_checks_with_holder: u64,
    pub ids_served: u64,
}

impl Checker {
    pub fn committed_len(&self) -> LogIndex {
        self.truth.len() as u64
    }

    /// The entry known committed at `index`, if any.
    pub fn committed_at(&self, index: LogIndex) -> Option<Applied> {
        let slot = usize::try_from(index.checked_sub(1)?).ok()?;
        self.truth.get(slot).copied().flatten().map(|k| k.applied)
    }

    pub fn on_restart(&mut self, id: NodeId) {
        // The restarted core re-reads its commit index from disk, which may
        // lag; commit tracking starts over for it.
        self.seen_commit.remove(&id);
    }

    /// The node's data directory was wiped and bootstrapped again: its
    /// term and commit index start over (what it once acknowledged is
    /// gone, which is what the scenario is about).
    pub fn on_wipe(&mut self, id: NodeId) {
        self.seen_commit.remove(&id);
        self.max_term.remove(&id);
    }

    fn record(&mut self, node: NodeId, term: Term, applied: Applied) -> Result<(), String> {
        let slot = (applied.index - 1) as usize;
        if self.truth.len() <= slot {
            self.truth.resize(slot + 1, None);
        }
        match &mut self.truth[slot] {
            Some(known) if known.applied != applied => Err(format!(
                "state machine safety: node {node} has {applied:?} committed, but {:?} was \
                 committed at that index before",
                known.applied
            )),
            Some(known) => {
                known.seen_in_term = known.seen_in_term.min(term);
                Ok(())
            }
            empty => {
                *empty = Some(Known {
                    applied,
                    seen_in_term: term,
                });
                Ok(())
            }
        }
    }

    pub fn on_applied(&mut self, node: NodeId, term: Term, applied: Applied) -> Result<(), String> {
        self.record(node, term, applied)
    }

    pub fn on_torn_install(&mut self) {
        self.stats.torn_installs += 1;
    }

    pub fn on_snapshot(
        &mut self,
        node: NodeId,
        term: Term,
        meta: &SnapshotMeta,
        app: &App,
    ) -> Result<(), String> {
        self.stats.snapshots_installed += 1;
        let last = app.applied.last().map_or((0, 0), |a| (a.index, a.term));
        if last != (meta.index, meta.term) {
            return Err(format!(
                "node {node}: snapshot meta ({}, {}) but its data ends at {last:?}",
                meta.index, meta.term
            ));
        }
        for applied in &app.applied {
            self.record(node, term, *applied)?;
        }
        Ok(())
    }

    /// Entries just written to `node`'s disk, each with its predecessor's
    /// term.
    pub fn on_written(&mut self, node: NodeId, written: &[(Entry, Term)]) -> Result<(), String> {
        let committed = self.seen_commit.get(&node).copied().unwrap_or(0);
        for (entry, prev_term) in written {
            if *prev_term > entry.term {
                return Err(format!(
                    "node {node}: log term goes down at {} ({prev_term} -> {})",
                    entry.index, entry.term
                ));
            }
            let applied = Applied::of(entry);
            let value = (applied.hash, applied.kind, *prev_term);
            let old = *self.pairs.entry((entry.index, entry.term)).or_insert(value);
            if old != value {
                return Err(format!(
                    "log matching: node {node} wrote ({}, {}) as (hash, kind, prev term) \
                     {value:?}, another log has {old:?}",
                    entry.index, entry.term
                ));
            }
            let known = self
                .truth
                .get((entry.index - 1) as usize)
                .copied()
                .flatten();
            if entry.index <= committed
                && let Some(known) = known
                && known.applied != applied
            {
                return Err(format!(
                    "node {node} overwrote its committed entry {:?} with {applied:?}",
                    known.applied
                ));
            }
        }
        Ok(())
    }

    /// Node `node`, leading `term`, served `id` at `now`.
    pub fn on_served(&mut self, node: NodeId, term: Term, id: u64, now: u64) -> Result<(), String> {
        self.stats.ids_served += 1;
        if let Some(&(first_node, first_term, when)) = self.served.get(&id) {
            return Err(format!(
                "ids: ID {id} served twice: by node {first_node} (term {first_term}) at {when} and \
                 by node {node} (term {term}) at {now}"
            ));
        }
        if let Some((max, max_node, max_term, when)) = self.served_max
            && id <= max
        {
            return Err(format!(
                "ids: node {node} (term {term}) served ID {id} at {now}, after node {max_node} \
                 (term {max_term}) served {max} at {when}"
            ));
        }
        self.served.insert(id, (node, term, now));
        self.served_max = Some((id, node, term, now));
        Ok(())
    }

    /// Everything checked on the whole cluster after each event.
    pub fn after_event(
        &mut self,
        nodes: &BTreeMap<NodeId, SimNode>,
        now: u64,
    ) -> Result<(), String> {
        for node in nodes.values() {
            if let Some(raft) = node.raft() {
                self.check_node(node, raft)?;
            }
        }
        self.check_lease(nodes, now)
    }

    fn check_node(&mut self, node: &SimNode, raft: &Raft) -> Result<(), String> {
        let id = node.id;
        let term = raft.term();
        let max_term = self.max_term.entry(id).or_insert(0);
        if term < *max_term {
            return Err(format!(
                "node {id}: term went back from {max_term} to {term}"
            ));
        }
        *max_term = term;
        let (applied, commit, last) =
            (raft.applied_index(), raft.commit_index(), raft.last_index());
        if applied > commit || commit > last {
            return Err(format!(
                "node {id}: applied {applied} <= commit {commit} <= last {last} broken"
            ));
        }
        // Queued asynchronous writes (a leader's own entries) will bring
        // the disk up to the core.
        let written = node
            .pending
            .iter()
            .rev()
            .find_map(|(ready, _)| ready.entries.last().map(|e| e.index))
            .unwrap_or_else(|| node.disk.last_index());
        if last != written || applied != node.app.last_index() {
            return Err(format!(
                "node {id}: core says last {last} applied {applied}, but disk (with queued \
                 writes) has {written} and the app {} after every Ready was handled",
                node.app.last_index()
            ));
        }
        self.track_commit(node, term, commit)?;
        if raft.role() == Role::Leader {
            self.check_leader(node, term)?;
        }
        Ok(())
    }

    fn track_commit(&mut self, node: &SimNode, term: Term, commit: LogIndex) -> Result<(), String> {
        let id = node.id;
        let seen = self.seen_commit.get(&id).copied();
        if let Some(seen) = seen
            && commit < seen
        {
            return Err(format!(
                "node {id}: commit index went back from {seen} to {commit}"
            ));
        }
        let from = seen.unwrap_or(0).max(node.disk.snapshot.meta.index) + 1;
        for index in from..=commit {
            let Some(entry) = node.log_entry(index) else {
                return Err(format!(
                    "node {id}: commit {commit} but entry {index} is not in its log"
                ));
            };
            self.record(id, term, Applied::of(entry))?;
        }
        self.seen_commit.insert(id, commit);
        Ok(())
    }

    fn check_leader(&mut self, node: &SimNode, term: Term) -> Result<(), String> {
        match self.leaders.entry(term) {
            MapEntry::Occupied(leader) if *leader.get() != node.id => Err(format!(
                "two leaders in term {term}: {} and {}",
                leader.get(),
                node.id
            )),
            MapEntry::Occupied(_) => Ok(()),
            MapEntry::Vacant(slot) => {
                slot.insert(node.id);
                self.stats.leaders += 1;
                self.check_completeness(node, term)
            }
        }
    }

    /// A new leader's log holds every entry committed in an earlier term.
    fn check_completeness(&self, node: &SimNode, term: Term) -> Result<(), String> {
        let first = node.disk.snapshot.meta.index + 1;
        for known in self.truth.iter().skip((first - 1) as usize).flatten() {
            if known.seen_in_term >= term {
                continue;
            }
            let have = node.log_entry(known.applied.index).map(Applied::of);
            if have != Some(known.applied) {
                return Err(format!(
                    "leader completeness: node {} leads term {term} without committed entry \
                     {:?} (has {have:?})",
                    node.id, known.applied
                ));
            }
        }
        Ok(())
    }

    /// At most one node holds a lease, it is a leader, and no node leads a
    /// newer term meanwhile. A lease is judged as the driver serves under
    /// it: in real (simulated) time, from when the tick it counts from
    /// ran on the leader (`SimNode::lease_until`), so a stalled node's
    /// frozen core clock cannot hide an overlap.
    fn check_lease(&mut self, nodes: &BTreeMap<NodeId, SimNode>, now: u64) -> Result<(), String> {
        let up = || nodes.values().filter_map(|n| n.raft());
        let mut holders = nodes.values().filter_map(|n| {
            let until = n.lease_until(now).filter(|&until| until > now)?;
            Some((n.raft()?, until))
        });
        let Some((holder, until)) = holders.next() else {
            return Ok(());
        };
        self.stats.lease_checks_with_holder += 1;
        if let Some((other, other_until)) = holders.next() {
            return Err(format!(
                "lease: nodes {} (term {}, until {until}) and {} (term {}, until {other_until}) \
                 both hold a valid lease at {now}",
                holder.id(),
                holder.term(),
                other.id(),
                other.term()
            ));
        }
        if holder.role() != Role::Leader {
            return Err(format!(
                "lease: node {} holds a lease as {:?}",
                holder.id(),
                holder.role()
            ));
        }
        let newer = up().find(|r| r.role() == Role::Leader && r.term() > holder.term());
        if let Some(newer) = newer {
            return Err(format!(
                "lease: node {} holds a lease in term {} (until {until}, now {now}) while node {} \
                 leads term {}",
                holder.id(),
                holder.term(),
                newer.id(),
                newer.term()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticketd::raft::EntryKind;

    fn entry(index: LogIndex, term: Term, byte: u8) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![byte],
        }
    }

    #[test]
    fn conflicting_commits_and_logs_are_caught() {
        let mut check = Checker::default();
        check
            .on_applied(1, 1, Applied::of(&entry(1, 1, 0)))
            .unwrap();
        check
            .on_applied(2, 1, Applied::of(&entry(1, 1, 0)))
            .unwrap();
        assert!(
            check
                .on_applied(3, 2, Applied::of(&entry(1, 2, 0)))
                .is_err()
        );

        check.on_written(1, &[(entry(2, 1, 5), 1)]).unwrap();
        check.on_written(2, &[(entry(2, 1, 5), 1)]).unwrap();
        let other_content = check.on_written(3, &[(entry(2, 1, 6), 1)]);
        assert!(other_content.unwrap_err().starts_with("log matching"));
        let other_prev = check.on_written(3, &[(entry(2, 1, 5), 0)]);
        assert!(other_prev.unwrap_err().starts_with("log matching"));
        assert!(
            check.on_written(3, &[(entry(3, 1, 5), 2)]).is_err(),
            "terms go down"
        );
    }
}
