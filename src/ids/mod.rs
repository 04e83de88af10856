//! Serving IDs from memory: the leader's pool of reserved ranges.
//!
//! The node thread reserves ranges through Raft (`ReserveIds` entries)
//! and hands them to the pool once applied; HTTP handlers take IDs from
//! the pool under its mutex, without waiting for the disk, as long as
//! the leader's lease — published here by the node thread — holds. When
//! the pool runs low the node thread reserves the next range ahead of
//! time (two ranges, the "double buffer" of Meituan's Leaf), so in the
//! steady state no request waits for a write. On any change of term or
//! role the pool is emptied: its unused IDs become a gap.
//!
//! This module owns no thread and does no I/O; it never talks to Raft.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::clock::BootInstant;

/// The smallest and largest ranges reserved in one entry.
pub const RANGE_MIN: u64 = 10_000;
pub const RANGE_MAX: u64 = 100_000_000;

/// Why no IDs were handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeError {
    /// This node is not a leader with a valid lease.
    NotServing,
    /// No range arrived in time.
    TimedOut,
}

/// A range reservation the node thread should propose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    pub count: u64,
    /// Identifies the leadership the reservation belongs to.
    pub generation: u64,
}

#[derive(Debug)]
struct Inner {
    /// Bumped on every reset; a range reserved under an older generation
    /// is never served.
    generation: u64,
    /// IDs may be served until then (the leader's lease).
    serving_until: Option<BootInstant>,
    /// Reserved, unserved ranges `(next, last)`, inclusive, ascending.
    ranges: VecDeque<(u64, u64)>,
    /// The largest count a waiting request needs in one piece.
    demand: u64,
    refill_in_flight: bool,
    range_size: u64,
    /// When the last refill was asked for, to size the next one.
    last_refill: Option<Instant>,
    served_total: u64,
}

/// The shared pool. Cheap to lock; never held across I/O.
#[derive(Debug)]
pub struct IdPool {
    inner: Mutex<Inner>,
    refilled: Condvar,
}

impl Default for IdPool {
    fn default() -> Self {
        IdPool::new()
    }
}

impl IdPool {
    pub fn new() -> IdPool {
        IdPool {
            inner: Mutex::new(Inner {
                generation: 0,
                serving_until: None,
                ranges: VecDeque::new(),
                demand: 0,
                refill_in_flight: false,
                range_size: RANGE_MIN,
                last_refill: None,
                served_total: 0,
            }),
            refilled: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned pool only means a handler panicked mid-take; the data
        // is still consistent (every update is a single assignment).
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Takes `count` consecutive IDs, waiting up to `timeout` for a range
    /// to arrive; `wake` nudges the node thread to reserve one.
    ///
    /// # Errors
    /// `NotServing` when the lease does not hold, `TimedOut` when no range
    /// came in time.
    pub fn take(
        &self,
        count: u64,
        timeout: Duration,
        wake: &dyn Fn(),
    ) -> Result<(u64, u64), TakeError> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        loop {
            let now = Instant::now();
            if inner
                .serving_until
                .is_none_or(|until| BootInstant::now() >= until)
            {
                return Err(TakeError::NotServing);
            }
            if let Some(range) = take_from(&mut inner.ranges, count) {
                inner.served_total += count;
                return Ok(range);
            }
            inner.demand = inner.demand.max(count);
            wake();
            if now >= deadline {
                return Err(TakeError::TimedOut);
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            inner = self
                .refilled
                .wait_timeout(inner, wait)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poison| poison.into_inner().0);
        }
    }

    /// Publishes the lease: IDs may be served until `until` (None: not).
    pub fn set_lease(&self, until: Option<BootInstant>) {
        self.lock().serving_until = until;
    }

    /// Forgets every range (a change of term or role); returns the new
    /// generation.
    pub fn reset(&self) -> u64 {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.ranges.clear();
        inner.serving_until = None;
        inner.refill_in_flight = false;
        inner.demand = 0;
        inner.generation
    }

    /// What to reserve next, if anything; marks a refill as in flight.
    pub fn refill_needed(&self) -> Option<Refill> {
        let mut inner = self.lock();
        if inner.refill_in_flight {
            return None;
        }
        let available: u64 = inner
            .ranges
            .iter()
            .map(|(next, last)| last - next + 1)
            .sum();
        let largest = inner
            .ranges
            .iter()
            .map(|(next, last)| last - next + 1)
            .max()
            .unwrap_or(0);
        let low = available < inner.range_size / 2 + 1;
        let short = inner.demand > largest;
        if !low && !short {
            return None;
        }
        // Size ranges to the load: a range used up within 100 ms means
        // the next one should be larger, one lasting over 2 s smaller.
        let now = Instant::now();
        if let Some(last) = inner.last_refill {
            let lasted = now.duration_since(last);
            if lasted < Duration::from_millis(100) {
                inner.range_size = (inner.range_size * 2).min(RANGE_MAX);
            } else if lasted > Duration::from_secs(2) {
                inner.range_size = (inner.range_size / 2).max(RANGE_MIN);
            }
        }
        inner.last_refill = Some(now);
        inner.refill_in_flight = true;
        Some(Refill {
            count: inner.range_size.max(inner.demand),
            generation: inner.generation,
        })
    }

    /// A reservation of `generation` was applied: `(first, last)` are ours.
    pub fn add_range(&self, generation: u64, first: u64, last: u64) {
        let mut inner = self.lock();
        if generation != inner.generation {
            return;
        }
        inner.refill_in_flight = false;
        if first <= last {
            inner.ranges.push_back((first, last));
            if last - first + 1 >= inner.demand {
                inner.demand = 0;
            }
        }
        drop(inner);
        self.refilled.notify_all();
    }

    /// A reservation failed (refused or lost): allow another.
    pub fn refill_failed(&self, generation: u64) {
        let mut inner = self.lock();
        if generation == inner.generation {
            inner.refill_in_flight = false;
        }
    }

    /// IDs handed out since start, for metrics.
    pub fn served_total(&self) -> u64 {
        self.lock().served_total
    }
}

/// Takes `count` consecutive IDs from the front; a range too short for
/// the request is skipped (its rest becomes a gap) only when a later one
/// can serve it, so single IDs never skip.
fn take_from(ranges: &mut VecDeque<(u64, u64)>, count: u64) -> Option<(u64, u64)> {
    let position = ranges
        .iter()
        .position(|(next, last)| last - next + 1 >= count)?;
    ranges.drain(..position);
    let (next, last) = ranges.front_mut()?;
    let first = *next;
    let end = first + count - 1;
    if end == *last {
        ranges.pop_front();
    } else {
        *next = end + 1;
    }
    Some((first, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(pool: &IdPool) {
        pool.set_lease(Some(BootInstant::now() + Duration::from_secs(60)));
    }

    #[test]
    fn serves_increasing_ids_from_reserved_ranges() {
        let pool = IdPool::new();
        let generation = pool.reset();
        serving(&pool);
        let refill = pool.refill_needed().unwrap();
        assert_eq!(refill.generation, generation);
        assert!(pool.refill_needed().is_none(), "one refill in flight");
        pool.add_range(generation, 1, 10);
        assert_eq!(pool.take(1, Duration::ZERO, &|| {}), Ok((1, 1)));
        assert_eq!(pool.take(3, Duration::ZERO, &|| {}), Ok((2, 4)));
        pool.add_range(generation, 21, 30);
        assert_eq!(
            pool.take(8, Duration::ZERO, &|| {}),
            Ok((21, 28)),
            "skips a short range"
        );
        assert_eq!(pool.take(2, Duration::ZERO, &|| {}), Ok((29, 30)));
        assert_eq!(
            pool.take(1, Duration::ZERO, &|| {}),
            Err(TakeError::TimedOut)
        );
    }

    #[test]
    fn nothing_is_served_without_a_lease_or_after_a_reset() {
        let pool = IdPool::new();
        let old = pool.reset();
        pool.add_range(old, 1, 10);
        assert_eq!(
            pool.take(1, Duration::ZERO, &|| {}),
            Err(TakeError::NotServing)
        );
        serving(&pool);
        let new = pool.reset();
        serving(&pool);
        pool.add_range(old, 11, 20);
        assert_eq!(
            pool.take(1, Duration::ZERO, &|| {}),
            Err(TakeError::TimedOut)
        );
        pool.add_range(new, 21, 30);
        assert_eq!(pool.take(1, Duration::ZERO, &|| {}), Ok((21, 21)));
    }

    #[test]
    fn a_waiting_request_is_woken_by_a_refill() {
        let pool = std::sync::Arc::new(IdPool::new());
        let generation = pool.reset();
        serving(&pool);
        let filler = std::sync::Arc::clone(&pool);
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            filler.add_range(generation, 100, 199);
        });
        let got = pool.take(50, Duration::from_secs(5), &|| {});
        assert_eq!(got, Ok((100, 149)));
        handle.join().unwrap();
    }

    /// A pool serving under a lease whose refill of `generation` came back
    /// as `(first, last)`.
    fn pool_with(first: u64, last: u64) -> (IdPool, u64) {
        let pool = IdPool::new();
        let generation = pool.reset();
        serving(&pool);
        pool.refill_needed().expect("an empty pool needs a refill");
        pool.add_range(generation, first, last);
        (pool, generation)
    }

    #[test]
    fn a_refill_is_asked_for_below_half_a_range_and_not_before() {
        // Range size RANGE_MIN: low means fewer than RANGE_MIN / 2 + 1.
        let (pool, _) = pool_with(1, RANGE_MIN);
        let half = RANGE_MIN / 2;
        assert_eq!(
            pool.take(half - 1, Duration::ZERO, &|| {}),
            Ok((1, half - 1))
        );
        // RANGE_MIN / 2 + 1 left: enough.
        assert_eq!(pool.refill_needed(), None);
        assert_eq!(pool.take(1, Duration::ZERO, &|| {}), Ok((half, half)));
        // RANGE_MIN / 2 left: low.
        let refill = pool.refill_needed().expect("low");
        assert!(refill.count >= RANGE_MIN, "{refill:?}");
        assert_eq!(pool.refill_needed(), None, "one refill in flight");
    }

    #[test]
    fn a_request_larger_than_any_range_asks_for_a_range_its_size() {
        let (pool, generation) = pool_with(1, 100);
        // Plenty for small requests is still short for one of 30,000.
        pool.lock().ranges.push_back((1_000, 1_000 + RANGE_MIN));
        assert_eq!(
            pool.take(30_000, Duration::ZERO, &|| {}),
            Err(TakeError::TimedOut)
        );
        let refill = pool.refill_needed().expect("short for the demand");
        assert_eq!(refill.count, 30_000);
        // A range too small for the demand leaves it standing ...
        pool.add_range(generation, 50_000, 50_009);
        assert_eq!(pool.lock().demand, 30_000);
        assert!(pool.refill_needed().is_some(), "still short");
        // ... one that covers it clears it.
        pool.add_range(generation, 100_000, 129_999);
        assert_eq!(pool.lock().demand, 0);
        assert_eq!(
            pool.take(30_000, Duration::ZERO, &|| {}),
            Ok((100_000, 129_999))
        );
    }

    #[test]
    fn a_request_one_longer_than_the_only_range_is_short_though_not_low() {
        // 6,000 left (not low) in one range starting at 1: a request for
        // 6,001 fits nowhere, so a refill is due at once.
        let (pool, _) = pool_with(1, 6_000);
        assert_eq!(
            pool.take(6_001, Duration::ZERO, &|| {}),
            Err(TakeError::TimedOut)
        );
        assert!(pool.refill_needed().is_some(), "short by one");
    }

    #[test]
    fn ranges_grow_when_used_up_fast_and_shrink_when_they_last() {
        let pool = IdPool::new();
        let generation = pool.reset();
        serving(&pool);
        let size = |pool: &IdPool, ago: Duration| {
            pool.lock().last_refill = Some(Instant::now() - ago);
            let refill = pool.refill_needed().expect("an empty pool is low");
            pool.refill_failed(generation);
            refill.count
        };
        assert_eq!(size(&pool, Duration::from_millis(500)), RANGE_MIN);
        assert_eq!(size(&pool, Duration::from_millis(10)), 2 * RANGE_MIN);
        assert_eq!(size(&pool, Duration::from_millis(10)), 4 * RANGE_MIN);
        assert_eq!(size(&pool, Duration::from_millis(500)), 4 * RANGE_MIN);
        assert_eq!(size(&pool, Duration::from_secs(3)), 2 * RANGE_MIN);
        assert_eq!(size(&pool, Duration::from_secs(3)), RANGE_MIN);
        assert_eq!(size(&pool, Duration::from_secs(3)), RANGE_MIN, "floor");
        pool.lock().range_size = RANGE_MAX;
        assert_eq!(size(&pool, Duration::from_millis(10)), RANGE_MAX, "cap");
    }

    #[test]
    fn a_failed_refill_allows_another_only_in_its_generation() {
        let pool = IdPool::new();
        let old = pool.reset();
        serving(&pool);
        assert!(pool.refill_needed().is_some());
        let new = pool.reset();
        serving(&pool);
        assert!(pool.refill_needed().is_some(), "a reset forgets the refill");
        pool.refill_failed(old);
        assert!(pool.refill_needed().is_none(), "the new one is in flight");
        pool.refill_failed(new);
        assert!(pool.refill_needed().is_some());
        // A range of an old generation does not end the refill in flight.
        pool.add_range(old, 1, 10);
        assert!(pool.refill_needed().is_none());
        assert!(pool.lock().ranges.is_empty());
    }

    #[test]
    fn a_reset_forgets_demand_and_served_ids_are_counted() {
        let (pool, _) = pool_with(1, 10);
        assert_eq!(pool.served_total(), 0);
        assert_eq!(pool.take(3, Duration::ZERO, &|| {}), Ok((1, 3)));
        assert_eq!(pool.take(7, Duration::ZERO, &|| {}), Ok((4, 10)));
        assert_eq!(pool.served_total(), 10);
        let woken = std::cell::Cell::new(0);
        assert_eq!(
            pool.take(50, Duration::ZERO, &|| woken.set(woken.get() + 1)),
            Err(TakeError::TimedOut)
        );
        assert_eq!(woken.get(), 1, "a request left waiting wakes the node");
        assert_eq!(pool.served_total(), 10, "nothing served");
        assert_eq!(pool.lock().demand, 50);
        pool.reset();
        assert_eq!(pool.lock().demand, 0);
        assert!(!pool.lock().refill_in_flight);
        assert_eq!(pool.served_total(), 10, "a reset keeps the count");
    }

    #[test]
    fn a_wait_runs_out_after_its_timeout_not_before() {
        let (pool, _) = pool_with(1, 1);
        assert_eq!(pool.take(1, Duration::ZERO, &|| {}), Ok((1, 1)));
        let started = Instant::now();
        let timeout = Duration::from_millis(120);
        assert_eq!(pool.take(1, timeout, &|| {}), Err(TakeError::TimedOut));
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        // A lease that ran out refuses at once, ranges or not.
        pool.lock().ranges.push_back((5, 9));
        pool.set_lease(Some(BootInstant::now()));
        assert_eq!(
            pool.take(1, Duration::from_secs(5), &|| {}),
            Err(TakeError::NotServing)
        );
    }

    #[test]
    fn taking_skips_a_short_range_only_for_a_later_one_that_fits() {
        let mut ranges: VecDeque<(u64, u64)> = [(1, 3), (10, 19), (30, 30)].into();
        // Fits the first: taken from it, the rest kept.
        assert_eq!(take_from(&mut ranges, 2), Some((1, 2)));
        assert_eq!(ranges, VecDeque::from([(3, 3), (10, 19), (30, 30)]));
        // Too long for what is left of the first: skips it (a gap).
        assert_eq!(take_from(&mut ranges, 4), Some((10, 13)));
        assert_eq!(ranges, VecDeque::from([(14, 19), (30, 30)]));
        // An exact fit uses the range up.
        assert_eq!(take_from(&mut ranges, 6), Some((14, 19)));
        assert_eq!(ranges, VecDeque::from([(30, 30)]));
        // Longer than any: nothing taken, nothing skipped.
        assert_eq!(take_from(&mut ranges, 2), None);
        assert_eq!(ranges, VecDeque::from([(30, 30)]));
        assert_eq!(take_from(&mut ranges, 1), Some((30, 30)));
        assert!(ranges.is_empty());
        assert_eq!(take_from(&mut ranges, 1), None);
    }
}
