//! ticketd: a one-shot hand-over between two threads, replacing the
//! `std::sync::mpsc` channels that ordered each request's reader and
//! writer after the previous request's. A channel is several hundred bytes
//! of allocation per request (and its first send allocates a block of 31
//! slots, over 2 KiB for a reader, which sends glibc's malloc into
//! consolidating its fast bins); a baton is one small allocation.

use std::sync::{Arc, Condvar, Mutex};

enum State<T> {
    Empty,
    Full(T),
    /// The sender went away without sending.
    Closed,
}

struct Slot<T> {
    state: Mutex<(State<T>, bool)>,
    ready: Condvar,
}

pub struct BatonSender<T> {
    slot: Option<Arc<Slot<T>>>,
}

pub struct BatonReceiver<T> {
    slot: Arc<Slot<T>>,
}

pub fn baton<T>() -> (BatonSender<T>, BatonReceiver<T>) {
    let slot = Arc::new(Slot {
        // The flag: the receiver waits on the condvar. Most hand-overs
        // find nobody waiting, and a notify is a system call.
        state: Mutex::new((State::Empty, false)),
        ready: Condvar::new(),
    });
    (
        BatonSender {
            slot: Some(slot.clone()),
        },
        BatonReceiver { slot },
    )
}

impl<T> Slot<T> {
    fn put(&self, state: State<T>) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard.0 = state;
        let waiting = guard.1;
        drop(guard);
        if waiting {
            self.ready.notify_all();
        }
    }
}

impl<T> BatonSender<T> {
    /// Hands `value` over (dropped if nobody will ever take it). Only the
    /// first send counts.
    pub fn send(&mut self, value: T) {
        if let Some(slot) = self.slot.take() {
            slot.put(State::Full(value));
        }
    }
}

impl<T> Drop for BatonSender<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.put(State::Closed);
        }
    }
}

impl<T> BatonReceiver<T> {
    /// Waits for the value; `None` when the sender went away without one
    /// (or it was taken already).
    pub fn recv(&self) -> Option<T> {
        let mut guard = self.slot.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match std::mem::replace(&mut guard.0, State::Closed) {
                State::Full(value) => return Some(value),
                State::Closed => return None,
                State::Empty => {
                    guard.0 = State::Empty;
                    guard.1 = true;
                    guard = self
                        .slot
                        .ready
                        .wait(guard)
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::baton;

    #[test]
    fn hands_over_across_threads() {
        let (mut tx, rx) = baton();
        let t = std::thread::spawn(move || rx.recv());
        tx.send(7);
        tx.send(8);
        assert_eq!(t.join().unwrap(), Some(7));
    }

    #[test]
    fn a_dropped_sender_closes() {
        let (tx, rx) = baton::<u8>();
        drop(tx);
        assert_eq!(rx.recv(), None);
        assert_eq!(rx.recv(), None);
    }
}
