//! The leader's view of one follower: how much of the log it has, what is
//! in flight to it, and when it last acknowledged the leader (the lease).

use std::collections::VecDeque;

use super::types::LogIndex;

/// How the leader sends to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Where the logs diverge is unknown: one AppendEntries at a time.
    Probe,
    /// The logs match up to `match_index`: AppendEntries are pipelined.
    Replicate,
    /// A snapshot at this index is on its way.
    Snapshot { index: LogIndex },
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub match_index: LogIndex,
    pub next_index: LogIndex,
    pub state: ProgressState,
    /// In probe state: one message is out and unanswered.
    pub paused: bool,
    /// Last index of each unacknowledged AppendEntries, oldest first.
    pub inflight: VecDeque<LogIndex>,
    /// The latest leader clock value this follower echoed back: it had
    /// heard from the leader no earlier than that.
    pub lease_ack: u64,
    /// Ticks since the snapshot was sent (in snapshot state).
    pub snapshot_ticks: u64,
    /// When an append last went out to recover lost ones: at most one
    /// per heartbeat, or every stale answer would start another chain.
    pub recovery_tick: u64,
    /// When the outstanding probe went out: only an answer to it (or a
    /// later message) unpauses the probe, not a stale or duplicated one.
    pub probe_tick: u64,
    /// The follower is being removed by the configuration at this index;
    /// the leader still replicates to it so it learns of its removal.
    pub removed_at: Option<LogIndex>,
    /// When the leader first saw that removal committed.
    pub removal_committed_tick: Option<u64>,
    /// The highest commit index an AppendEntries told it that it could
    /// use: the message's commit index, capped at the last index the
    /// message vouched for (a follower commits no further than that).
    pub commit_sent: LogIndex,
}

impl Progress {
    pub fn new(next_index: LogIndex) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            paused: false,
            inflight: VecDeque::new(),
            lease_ack: 0,
            snapshot_ticks: 0,
            recovery_tick: 0,
            probe_tick: 0,
            removed_at: None,
            removal_committed_tick: None,
            commit_sent: 0,
        }
    }

    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.paused = false;
        self.inflight.clear();
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.paused = false;
        self.inflight.clear();
    }

    pub fn become_snapshot(&mut self, index: LogIndex) {
        self.state = ProgressState::Snapshot { index };
        self.paused = false;
        self.inflight.clear();
        self.snapshot_ticks = 0;
    }

    /// Records an acknowledged match; false when it is old news.
    pub fn update_match(&mut self, index: LogIndex) -> bool {
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        if index > self.match_index {
            self.match_index = index;
            self.next_index = self.next_index.max(index + 1);
            self.paused = false;
            return true;
        }
        false
    }

    /// Whether another AppendEntries may go out now.
    pub fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => !self.paused,
            ProgressState::Replicate => self.inflight.len() < max_inflight,
            ProgressState::Snapshot { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_free_the_pipeline() {
        let mut progress = Progress::new(1);
        progress.become_replicate();
        progress.inflight.extend([3, 6, 9]);
        assert!(!progress.can_send(3));
        assert!(progress.update_match(6));
        assert_eq!(progress.inflight, VecDeque::from([9]));
        assert!(progress.can_send(3));
        assert!(!progress.update_match(5));
        assert_eq!(progress.next_index, 7);
    }

    #[test]
    fn each_state_starts_from_the_match_index_with_nothing_in_flight() {
        let mut progress = Progress::new(10);
        assert_eq!((progress.match_index, progress.next_index), (0, 10));
        assert!(progress.can_send(1));
        progress.become_replicate();
        assert!(progress.update_match(4));
        assert_eq!((progress.match_index, progress.next_index), (4, 5));
        progress.next_index = 9;
        progress.inflight.extend([6, 8]);
        progress.paused = true;
        progress.become_probe();
        assert_eq!(
            (progress.state, progress.next_index),
            (ProgressState::Probe, 5)
        );
        assert!(!progress.paused && progress.inflight.is_empty());
        progress.paused = true;
        assert!(!progress.can_send(4), "a probe is out");
        progress.inflight.push_back(7);
        progress.become_replicate();
        assert_eq!(progress.next_index, 5);
        assert!(!progress.paused && progress.inflight.is_empty());
        progress.inflight.push_back(7);
        progress.snapshot_ticks = 3;
        progress.become_snapshot(20);
        assert_eq!(progress.state, ProgressState::Snapshot { index: 20 });
        assert!(progress.inflight.is_empty() && progress.snapshot_ticks == 0);
        assert!(!progress.can_send(4), "waiting for the snapshot");
    }

    #[test]
    fn a_new_match_unpauses_and_never_moves_next_back() {
        let mut progress = Progress::new(1);
        progress.paused = true;
        progress.next_index = 8;
        assert!(progress.update_match(3));
        assert_eq!((progress.match_index, progress.next_index), (3, 8));
        assert!(!progress.paused);
        assert!(progress.update_match(9));
        assert_eq!(progress.next_index, 10);
        progress.paused = true;
        assert!(!progress.update_match(9));
        assert!(progress.paused, "old news unpauses nothing");
        // The window: as many messages in flight as allowed, no more.
        progress.become_replicate();
        progress.inflight.extend([10, 11]);
        assert!(progress.can_send(3));
        assert!(!progress.can_send(2));
        assert!(!progress.update_match(9));
        assert_eq!(progress.inflight.len(), 2);
        assert!(progress.update_match(10));
        assert_eq!(progress.inflight, VecDeque::from([11]));
    }
}
