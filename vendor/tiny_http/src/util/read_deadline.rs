//! ticketd: a deadline for reads on a connection, whatever the byte rate.
//!
//! A socket's read timeout restarts with every read, so a client that
//! sends one byte just before each timeout keeps its connection (and its
//! thread) for as long as it likes. While a deadline is set, each read
//! first checks it (past it, the read fails with `TimedOut`) and lowers
//! the socket's timeout to what is left of it; with no deadline, the
//! socket's timeout goes back to the idle timeout. The socket is only
//! touched when the timeout it has would fire more than [`SLACK`] after
//! the deadline, so a request head that arrives in one read costs no
//! system call at all.

use std::io::{Error as IoError, ErrorKind, Result as IoResult};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How late past its deadline a blocked read may give up.
const SLACK: Duration = Duration::from_millis(500);

struct State {
    /// Reads fail with `TimedOut` from then on; `None`: no deadline.
    deadline: Option<Instant>,
    /// The socket's read timeout as last set.
    timeout_set: Duration,
}

/// Shared by a connection's reader of request heads (which sets and
/// clears the deadline) and the socket's read half (which obeys it).
pub(crate) struct ReadDeadline {
    idle: Duration,
    state: Mutex<State>,
}

impl ReadDeadline {
    /// For a socket whose read timeout is `idle` now.
    pub(crate) fn new(idle: Duration) -> ReadDeadline {
        ReadDeadline {
            idle,
            state: Mutex::new(State {
                deadline: None,
                timeout_set: idle,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the deadline, or clears it with `None`.
    pub(crate) fn set(&self, deadline: Option<Instant>) {
        self.state().deadline = deadline;
    }

    /// Sets the deadline unless an earlier one is set already.
    pub(crate) fn set_if_unset(&self, deadline: Instant) {
        let mut state = self.state();
        if state.deadline.is_none() {
            state.deadline = Some(deadline);
        }
    }

    /// Before a read: `Err(TimedOut)` past the deadline, else the read
    /// timeout to give the socket first, if it must change.
    pub(crate) fn before_read(&self) -> IoResult<Option<Duration>> {
        let mut state = self.state();
        let wanted = match state.deadline {
            None if state.timeout_set == self.idle => return Ok(None),
            None => self.idle,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(IoError::new(
                        ErrorKind::TimedOut,
                        "the request head took too long",
                    ));
                }
                if state.timeout_set <= left + SLACK {
                    return Ok(None);
                }
                left.min(self.idle)
            }
        };
        state.timeout_set = wanted;
        Ok(Some(wanted))
    }
}

#[cfg(test)]
mod test {
    use super::ReadDeadline;
    use std::time::{Duration, Instant};

    #[test]
    fn the_socket_is_left_alone_without_a_deadline() {
        let deadline = ReadDeadline::new(Duration::from_secs(60));
        assert_eq!(deadline.before_read().unwrap(), None);
    }

    #[test]
    fn a_deadline_lowers_the_timeout_and_clearing_it_restores_it() {
        let deadline = ReadDeadline::new(Duration::from_secs(60));
        deadline.set(Some(Instant::now() + Duration::from_secs(10)));
        let lowered = deadline.before_read().unwrap().unwrap();
        assert!(lowered <= Duration::from_secs(10));
        // Close enough to the deadline: no second system call.
        assert_eq!(deadline.before_read().unwrap(), None);
        deadline.set(None);
        assert_eq!(
            deadline.before_read().unwrap(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(deadline.before_read().unwrap(), None);
    }

    #[test]
    fn reads_past_the_deadline_time_out() {
        let deadline = ReadDeadline::new(Duration::from_secs(60));
        deadline.set(Some(Instant::now()));
        let error = deadline.before_read().unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    }

    #[test]
    fn an_earlier_deadline_is_kept() {
        let deadline = ReadDeadline::new(Duration::from_secs(60));
        deadline.set(Some(Instant::now()));
        deadline.set_if_unset(Instant::now() + Duration::from_secs(10));
        assert!(deadline.before_read().is_err());
    }
}
