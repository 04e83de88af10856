//! The clock the leader's lease is measured on: `CLOCK_BOOTTIME`.
//!
//! `std::time::Instant` is `CLOCK_MONOTONIC` on Linux, which stops while
//! the host is suspended. A leader whose host sleeps through its lease
//! would wake up believing the lease still runs while the others, whose
//! clocks kept going, may have elected a new leader. `CLOCK_BOOTTIME`
//! counts the suspension too, so a lease measured on it has run out by
//! the time the leader wakes.
//!
//! Followers measure their side of the lease (how long they refuse
//! votes) in ticks of the monotonic clock: a suspended follower only
//! refuses longer, which is safe.

use std::ops::Add;
use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

/// A point on `CLOCK_BOOTTIME`: time since boot, suspensions included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootInstant(Duration);

impl BootInstant {
    pub fn now() -> BootInstant {
        let ts = clock_gettime(ClockId::Boottime);
        // The kernel never reports a negative time since boot; clamp
        // rather than trust that with arithmetic.
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0).min(999_999_999);
        BootInstant(Duration::new(secs, nanos))
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn saturating_duration_since(self, earlier: BootInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for BootInstant {
    type Output = BootInstant;

    fn add(self, rhs: Duration) -> BootInstant {
        BootInstant(self.0.saturating_add(rhs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_forward_with_real_time() {
        let a = BootInstant::now();
        std::thread::sleep(Duration::from_millis(20));
        let b = BootInstant::now();
        assert!(b > a);
        let waited = b.saturating_duration_since(a);
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        assert!(a + Duration::from_secs(1) > b);
    }
}
