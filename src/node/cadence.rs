//! A fixed-rate schedule for a periodic duty of the node thread: due
//! every `interval` counted from the start, as Go's `time.Ticker` is
//! (turbosquid runs its expiry pass on one). The node loop wakes on a
//! 10 ms tick and notices a due time a little late; measuring each
//! interval from that late moment made `--expire 500` a pass every 500 to
//! 510 ms, drifting against clients that refresh on a fixed period.
//!
//! Owns: when a duty is next due. May not touch: the duty itself.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct Cadence {
    interval: Duration,
    /// `None` once the next time is past what an `Instant` can hold.
    next: Option<Instant>,
}

impl Cadence {
    /// First due one `interval` after `start`.
    pub(super) fn new(start: Instant, interval: Duration) -> Cadence {
        Cadence {
            interval,
            next: start.checked_add(interval),
        }
    }

    /// Whether the duty is due at `now`. If so, the next time is one
    /// interval after this one was due; after a stall longer than an
    /// interval the missed times are dropped (one run, then one interval
    /// from `now`), never run back to back.
    pub(super) fn due(&mut self, now: Instant) -> bool {
        let Some(next) = self.next else {
            return false;
        };
        if now < next {
            return false;
        }
        self.next = match next.checked_add(self.interval) {
            Some(following) if following > now => Some(following),
            _ => now.checked_add(self.interval),
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn late_runs_do_not_push_later_ones_back() {
        let t0 = Instant::now();
        let mut cadence = Cadence::new(t0, 500 * MS);
        assert!(!cadence.due(t0));
        assert!(!cadence.due(t0 + 499 * MS));
        // Noticed 9 ms late, as the 10 ms loop tick does.
        assert!(cadence.due(t0 + 509 * MS));
        assert!(!cadence.due(t0 + 999 * MS));
        // Still due at 1000 ms from the start, not at 509 + 500.
        assert!(cadence.due(t0 + 1000 * MS));
        assert!(!cadence.due(t0 + 1001 * MS));
        assert!(cadence.due(t0 + 1500 * MS));
    }

    #[test]
    fn a_stall_drops_missed_runs_instead_of_bursting() {
        let t0 = Instant::now();
        let mut cadence = Cadence::new(t0, 500 * MS);
        assert!(cadence.due(t0 + 2200 * MS));
        assert!(!cadence.due(t0 + 2201 * MS));
        assert!(!cadence.due(t0 + 2699 * MS));
        assert!(cadence.due(t0 + 2700 * MS));
    }

    #[test]
    fn an_interval_past_the_clock_is_never_due() {
        let t0 = Instant::now();
        let mut cadence = Cadence::new(t0, Duration::MAX);
        assert!(!cadence.due(t0 + 3_600_000 * MS));
    }
}
