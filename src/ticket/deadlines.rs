//! The leader's session deadlines: when each session expires unless
//! refreshed. Not replicated (SPEC "Replication rules"): a new leader
//! rebuilds it from `State::sessions()` with `now + ttl`.
//!
//! Owns: deadline bookkeeping in milliseconds of the caller's monotonic
//! clock. May not touch: the clock itself, the state, or the log; the
//! caller proposes `ExpireSessions` with what `pop_due` returns.
//!
//! A refresh pushes a new heap entry instead of moving the old one; an
//! entry is live only while it matches the map, so stale ones are skipped
//! when popped. `pop_due` thus costs what is due plus the stale entries in
//! front of it, never the number of sessions; the heap is rebuilt from the
//! map when stale entries outnumber live ones, which bounds its size.

use super::SessionId;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Stale heap entries tolerated before a rebuild, on top of one per session.
const STALE_ENTRIES_SLACK: usize = 1024;

#[derive(Debug, Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(u64, SessionId)>>,
    current: HashMap<SessionId, u64>,
}

impl Deadlines {
    pub fn new() -> Deadlines {
        Deadlines::default()
    }

    /// Sets (or moves, either way) the deadline of session `id`.
    pub fn refresh(&mut self, id: SessionId, deadline_ms: u64) {
        if self.current.insert(id, deadline_ms) == Some(deadline_ms) {
            return;
        }
        self.heap.push(Reverse((deadline_ms, id)));
        if self.heap.len() > 2 * self.current.len() + STALE_ENTRIES_SLACK {
            self.rebuild();
        }
    }

    /// Forgets session `id` (closed or expired through the log).
    pub fn remove(&mut self, id: SessionId) {
        self.current.remove(&id);
    }

    /// Removes and returns up to `max` sessions whose deadline is at or
    /// before `now_ms`, earliest first (ties by id). They are forgotten: a
    /// caller that fails to expire them should `refresh` them to retry.
    pub fn pop_due(&mut self, now_ms: u64, max: usize) -> Vec<SessionId> {
        let mut due = Vec::new();
        while due.len() < max {
            let Some(&Reverse((deadline_ms, id))) = self.heap.peek() else {
                break;
            };
            if deadline_ms > now_ms {
                break;
            }
            self.heap.pop();
            if self.current.get(&id) == Some(&deadline_ms) {
                self.current.remove(&id);
                due.push(id);
            }
        }
        due
    }

    /// The deadline of session `id`, if it has one.
    pub fn deadline_ms(&self, id: SessionId) -> Option<u64> {
        self.current.get(&id).copied()
    }

    /// The earliest live deadline: lets a caller sleep until it.
    pub fn next_deadline_ms(&mut self) -> Option<u64> {
        while let Some(&Reverse((deadline_ms, id))) = self.heap.peek() {
            if self.current.get(&id) == Some(&deadline_ms) {
                return Some(deadline_ms);
            }
            self.heap.pop();
        }
        None
    }

    /// Forgets everything (on losing leadership).
    pub fn clear(&mut self) {
        self.heap.clear();
        self.current.clear();
    }

    /// Sessions with a deadline.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    fn rebuild(&mut self) {
        self.heap = self
            .current
            .iter()
            .map(|(id, deadline)| Reverse((*deadline, *id)))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_then_id() {
        let mut d = Deadlines::new();
        d.refresh(3, 300);
        d.refresh(1, 100);
        d.refresh(7, 100);
        d.refresh(2, 200);
        assert_eq!(d.len(), 4);
        assert_eq!(d.next_deadline_ms(), Some(100));
        assert_eq!(d.pop_due(99, 10), Vec::<SessionId>::new());
        assert_eq!(d.pop_due(200, 10), vec![1, 7, 2]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.pop_due(1000, 10), vec![3]);
        assert!(d.is_empty());
        assert_eq!(d.next_deadline_ms(), None);
    }

    #[test]
    fn respects_max_and_keeps_the_rest() {
        let mut d = Deadlines::new();
        for id in 1..=5 {
            d.refresh(id, id * 10);
        }
        assert_eq!(d.pop_due(100, 2), vec![1, 2]);
        assert_eq!(d.pop_due(100, 0), Vec::<SessionId>::new());
        assert_eq!(d.pop_due(100, 10), vec![3, 4, 5]);
    }

    #[test]
    fn refresh_moves_the_deadline_lazily() {
        let mut d = Deadlines::new();
        d.refresh(1, 100);
        d.refresh(2, 150);
        d.refresh(1, 500);
        // The stale (100, 1) entry is skipped, not returned.
        assert_eq!(d.pop_due(200, 10), vec![2]);
        assert_eq!(d.deadline_ms(1), Some(500));
        // Moving a deadline earlier works too.
        d.refresh(1, 50);
        assert_eq!(d.pop_due(60, 10), vec![1]);
        assert_eq!(d.pop_due(1000, 10), Vec::<SessionId>::new());
    }

    #[test]
    fn remove_and_clear_forget_sessions() {
        let mut d = Deadlines::new();
        d.refresh(1, 100);
        d.refresh(2, 100);
        d.remove(1);
        d.remove(42);
        assert_eq!(d.deadline_ms(1), None);
        assert_eq!(d.pop_due(100, 10), vec![2]);
        d.refresh(3, 100);
        d.clear();
        assert!(d.is_empty());
        assert_eq!(d.pop_due(u64::MAX, 10), Vec::<SessionId>::new());
    }

    #[test]
    fn a_removed_then_refreshed_session_pops_once() {
        let mut d = Deadlines::new();
        d.refresh(1, 100);
        d.remove(1);
        d.refresh(1, 100);
        assert_eq!(d.pop_due(100, 10), vec![1]);
        assert_eq!(d.pop_due(100, 10), Vec::<SessionId>::new());
    }

    #[test]
    fn stale_entries_stay_bounded() {
        let mut d = Deadlines::new();
        for round in 0..10_000u64 {
            d.refresh(round % 3, round);
        }
        assert!(d.heap.len() <= 2 * d.len() + STALE_ENTRIES_SLACK);
        // The last refreshes were rounds 9_997, 9_998, 9_999: ids 1, 2, 0.
        assert_eq!(d.pop_due(u64::MAX, 10), vec![1, 2, 0]);
    }
}
