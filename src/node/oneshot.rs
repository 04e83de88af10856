//! A one-shot answer from the node thread to a waiting HTTP thread: one
//! small allocation (an `Arc` around a mutex and a condvar) per request,
//! where a `std::sync::mpsc` channel costs several hundred bytes and, on
//! its first send, a block of 31 slots.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

enum State<T> {
    Empty,
    Full(T),
    /// The sender went away without sending.
    Closed,
}

struct Slot<T> {
    /// The value, and whether the receiver is waiting on the condvar: a
    /// notify is a system call, needed only then.
    state: Mutex<(State<T>, bool)>,
    ready: Condvar,
}

/// The sending half; sending consumes it.
pub struct Sender<T> {
    slot: Arc<Slot<T>>,
}

/// The waiting half.
pub struct Receiver<T> {
    slot: Arc<Slot<T>>,
}

pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new((State::Empty, false)),
        ready: Condvar::new(),
    });
    (
        Sender {
            slot: Arc::clone(&slot),
        },
        Receiver { slot },
    )
}

impl<T> Slot<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, (State<T>, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T> Sender<T> {
    /// Hands `value` to the receiver.
    ///
    /// # Errors
    /// The value back if nobody waits for it any more.
    pub fn send(self, value: T) -> Result<(), T> {
        if Arc::strong_count(&self.slot) < 2 {
            return Err(value);
        }
        let mut state = self.slot.lock();
        state.0 = State::Full(value);
        let waiting = state.1;
        drop(state);
        if waiting {
            self.slot.ready.notify_one();
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.slot.lock();
        if matches!(state.0, State::Empty) {
            state.0 = State::Closed;
            let waiting = state.1;
            drop(state);
            if waiting {
                self.slot.ready.notify_one();
            }
        }
    }
}

impl<T> Receiver<T> {
    /// Waits up to `timeout`; `None` when nothing came in time or the
    /// sender was dropped without sending.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.slot.lock();
        loop {
            match std::mem::replace(&mut state.0, State::Closed) {
                State::Full(value) => return Some(value),
                State::Closed => return None,
                State::Empty => state.0 = State::Empty,
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state.1 = true;
            state = self
                .slot
                .ready
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_cross_threads() {
        let (tx, rx) = channel();
        std::thread::spawn(move || tx.send(5).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Some(5));
    }

    #[test]
    fn a_dropped_sender_ends_the_wait_at_once() {
        let (tx, rx) = channel::<u8>();
        let started = Instant::now();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(tx);
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), None);
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn a_wait_times_out_and_a_late_send_is_refused() {
        let (tx, rx) = channel::<u8>();
        assert_eq!(rx.recv_timeout(Duration::from_millis(10)), None);
        drop(rx);
        assert_eq!(tx.send(1), Err(1));
    }
}
