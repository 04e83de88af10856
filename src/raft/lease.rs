//! The lease in real time: when each recent tick ran by the driver's
//! clock, so a leader's lease (which the core counts in ticks) can be
//! measured on a clock that keeps running while the node thread stalls.
//!
//! Generic over the clock's instant type, so the core stays free of
//! clock reads: the driver records `CLOCK_BOOTTIME` instants, the
//! simulator its own time.

use std::collections::VecDeque;
use std::ops::Add;
use std::time::Duration;

use super::core::Raft;

/// How many recent ticks are remembered. A lease counts from a tick no
/// older than an election timeout; older starts are not leases.
const TICKS_KEPT: usize = 1024;

/// When each of the last 1024 ticks ran.
#[derive(Clone, Debug)]
pub struct TickTimes<T> {
    /// `(tick, when it ran)`, oldest first.
    ran: VecDeque<(u64, T)>,
}

impl<T: Copy> Default for TickTimes<T> {
    fn default() -> Self {
        TickTimes {
            ran: VecDeque::new(),
        }
    }
}

impl<T: Copy> TickTimes<T> {
    /// Records that the core's tick `tick` ([`Raft::now_tick`] right after
    /// [`Raft::tick`]) ran at `at`. Ticks run late (a driver catching up)
    /// are recorded when they ran, not when they were due: a message
    /// stamped with a tick always leaves after the instant recorded for it.
    pub fn ran(&mut self, tick: u64, at: T) {
        self.ran.push_back((tick, at));
        while self.ran.len() > TICKS_KEPT {
            self.ran.pop_front();
        }
    }

    /// When `raft`'s lease began by this clock: when the tick it counts
    /// from ([`Raft::lease_start`]) ran here. Every follower that vouched
    /// for the lease heard from this leader after that instant. `now` is
    /// the answer when the lease counts from the present tick (only a
    /// one-voter cluster acknowledges "now"). `None` when there is no
    /// lease, or its tick is older than what is remembered.
    pub fn lease_began(&self, raft: &Raft, now: T) -> Option<T> {
        self.when_ran(raft.lease_start()?, raft.now_tick(), now)
    }

    /// When `raft`'s lease ends by this clock, its ticks being `tick`
    /// apart: [`Raft::lease_ticks`] ticks after it began
    /// ([`TickTimes::lease_began`]). Never later than the core's own
    /// lease: `None` once the core counts it over (ticks that ran late and
    /// were caught up at once end it sooner than this clock would), and
    /// `None` rather than a panic or a wrapped length when the lease does
    /// not fit a `Duration`.
    pub fn lease_until(&self, raft: &Raft, now: T, tick: Duration) -> Option<T>
    where
        T: Add<Duration, Output = T>,
    {
        if !raft.lease_valid() {
            return None;
        }
        let began = self.lease_began(raft, now)?;
        let ticks = u32::try_from(raft.lease_ticks()).ok()?;
        Some(began + tick.checked_mul(ticks)?)
    }

    /// When tick `start` ran, the present tick being `now_tick` at `now`.
    fn when_ran(&self, start: u64, now_tick: u64, now: T) -> Option<T> {
        if start >= now_tick {
            return Some(now);
        }
        let oldest = self.ran.front()?.0;
        let offset = usize::try_from(start.checked_sub(oldest)?).ok()?;
        // Every tick is recorded, so ticks are consecutive here. Were one
        // missing, the last tick recorded at or before `start` ran no
        // later than `start` did: counting from it can only shorten the
        // lease, where a later tick's instant would lengthen it.
        match self.ran.get(offset) {
            Some(&(tick, at)) if tick == start => Some(at),
            _ => self
                .ran
                .iter()
                .rev()
                .find(|(tick, _)| *tick <= start)
                .map(|(_, at)| *at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_counts_from_when_its_tick_ran_not_from_when_it_was_due() {
        let mut times = TickTimes::default();
        // Ticks 1..=3 on time, then a stall: 4..=6 caught up at 60.
        for (tick, at) in [(1, 10), (2, 20), (3, 30), (4, 60), (5, 60), (6, 60)] {
            times.ran(tick, at);
        }
        assert_eq!(times.when_ran(2, 6, 61), Some(20));
        assert_eq!(times.when_ran(5, 6, 61), Some(60));
        // The present tick: only a one-voter cluster counts from it.
        assert_eq!(times.when_ran(6, 6, 61), Some(61));
        // Older than anything remembered, or before the first tick: no
        // lease rather than a later instant that would lengthen it.
        assert_eq!(times.when_ran(0, 6, 61), None);
        assert_eq!(TickTimes::<u64>::default().when_ran(0, 1, 5), None);
    }

    #[test]
    fn a_gap_in_the_record_never_lengthens_a_lease() {
        // The driver records every tick, but should one be missing the
        // answer must be an instant no later than the start tick ran:
        // the last recorded tick at or before it, never a later one,
        // which would make the lease last longer than the core's.
        let mut times = TickTimes::default();
        for (tick, at) in [(1, 10), (3, 30), (4, 40), (5, 50)] {
            times.ran(tick, at);
        }
        // Tick 3 sits at position 1, not at 3 - 1 = 2 (where tick 4 is).
        assert_eq!(times.when_ran(3, 6, 61), Some(30));
        // Tick 2 was never recorded: it ran at 10 or later, so 10.
        assert_eq!(times.when_ran(2, 6, 61), Some(10));
        assert_eq!(times.when_ran(1, 6, 61), Some(10));
    }

    #[test]
    fn only_the_last_ticks_are_kept() {
        let mut times = TickTimes::default();
        let last = TICKS_KEPT as u64 + 100;
        for tick in 1..=last {
            times.ran(tick, tick * 10);
        }
        assert_eq!(times.when_ran(100, last, 0), None);
        assert_eq!(times.when_ran(101, last, 0), Some(1010));
        assert_eq!(times.when_ran(last - 1, last, 0), Some((last - 1) * 10));
    }
}
