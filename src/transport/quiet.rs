//! Log lines about strangers, rate-limited: a connection that fails to
//! prove the peer secret (or speaks another protocol version, or is not
//! the protocol at all) is logged once per remote address and kind per
//! minute, never per attempt, so a scanner or a misconfigured node cannot
//! flood the log. The memory is bounded: past `ADDRESSES_MAX` recent
//! addresses, further ones are counted, not remembered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long one address stays quiet after it was logged.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Addresses remembered at most (older than `INTERVAL` are forgotten).
const ADDRESSES_MAX: usize = 4096;

#[derive(Default)]
pub struct QuietLog {
    last: Mutex<HashMap<(IpAddr, &'static str), Instant>>,
    suppressed: AtomicU64,
}

impl QuietLog {
    /// Whether a failure of `kind` from `ip` at `now` should be logged.
    pub fn allow(&self, ip: IpAddr, kind: &'static str, now: Instant) -> bool {
        let mut last = match self.last.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(at) = last.get(&(ip, kind))
            && now.saturating_duration_since(*at) < INTERVAL
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if last.len() >= ADDRESSES_MAX {
            last.retain(|_, at| now.saturating_duration_since(*at) < INTERVAL);
            if last.len() >= ADDRESSES_MAX {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        last.insert((ip, kind), now);
        true
    }

    /// Failures not logged so far.
    #[cfg(test)]
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn once_per_address_and_kind_per_minute() {
        let quiet = QuietLog::default();
        let t0 = Instant::now();
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        assert!(quiet.allow(a, "proof", t0));
        assert!(!quiet.allow(a, "proof", t0 + Duration::from_secs(1)));
        assert!(!quiet.allow(a, "proof", t0 + Duration::from_secs(59)));
        assert!(quiet.allow(a, "version", t0 + Duration::from_secs(1)));
        assert!(quiet.allow(b, "proof", t0 + Duration::from_secs(1)));
        assert!(quiet.allow(a, "proof", t0 + INTERVAL));
        assert_eq!(quiet.suppressed(), 2);
    }

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let quiet = QuietLog::default();
        let t0 = Instant::now();
        for i in 0..(ADDRESSES_MAX as u32 + 100) {
            quiet.allow(IpAddr::V4(Ipv4Addr::from(i)), "proof", t0);
        }
        assert!(quiet.last.lock().unwrap().len() <= ADDRESSES_MAX);
        assert_eq!(quiet.suppressed(), 100);
        // Once the old ones are a minute old, new addresses are logged.
        let later = t0 + INTERVAL;
        assert!(quiet.allow(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)), "proof", later));
    }
}
