//! Why a command was refused, and the HTTP status each reason maps to.
//!
//! Owns: `ApplyError`. May not touch: state. A refused command changes
//! nothing: `apply` checks everything before its first write.

use super::SessionId;
use std::fmt;

/// A command that `apply` refused; the state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// No session with this id (never opened, closed, or expired).
    UnknownSession(SessionId),
    /// No resource of this name.
    UnknownResource(String),
    /// The resource exists but has no ticket of this name.
    UnknownTicket { resource: String, name: String },
    /// A ticket call on a lock resource.
    NotTicketResource(String),
    /// A lock call on a ticket resource.
    NotLockResource(String),
    /// Unlock by a session that does not hold the lock.
    LockHeldByOther(String),
    /// Ticket data over [`super::TICKET_DATA_BYTES_MAX`].
    DataTooLarge(usize),
    /// A name (session, source, resource or ticket) over
    /// [`super::NAME_BYTES_MAX`].
    NameTooLong(usize),
    /// `ReserveIds` with a count of 0.
    ZeroCount,
    /// The ID counter would pass `u64::MAX`.
    CounterExhausted,
}

impl ApplyError {
    /// The HTTP status for this error (SPEC "Errors").
    pub fn status(&self) -> u16 {
        match self {
            ApplyError::UnknownSession(_)
            | ApplyError::UnknownResource(_)
            | ApplyError::UnknownTicket { .. } => 404,
            ApplyError::NotTicketResource(_)
            | ApplyError::NotLockResource(_)
            | ApplyError::LockHeldByOther(_) => 409,
            ApplyError::DataTooLarge(_) => 413,
            ApplyError::NameTooLong(_) | ApplyError::ZeroCount => 400,
            ApplyError::CounterExhausted => 507,
        }
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names come from URLs: `{:?}` keeps a newline in one from
        // breaking the one-line error body.
        match self {
            ApplyError::UnknownSession(id) => write!(f, "session not found: {id}"),
            ApplyError::UnknownResource(r) => write!(f, "resource not found: {r:?}"),
            ApplyError::UnknownTicket { resource, name } => {
                write!(f, "ticket {name:?} not found on resource {resource:?}")
            }
            ApplyError::NotTicketResource(r) => {
                write!(f, "resource {r:?} is a lock, not a ticket resource")
            }
            ApplyError::NotLockResource(r) => {
                write!(f, "resource {r:?} is a ticket resource, not a lock")
            }
            ApplyError::LockHeldByOther(r) => write!(f, "lock {r:?} is held by another session"),
            ApplyError::DataTooLarge(len) => {
                write!(
                    f,
                    "ticket data is {len} bytes, over the {} byte limit",
                    super::TICKET_DATA_BYTES_MAX
                )
            }
            ApplyError::NameTooLong(len) => {
                write!(
                    f,
                    "name is {len} bytes, over the {} byte limit",
                    super::NAME_BYTES_MAX
                )
            }
            ApplyError::ZeroCount => write!(f, "count must be at least 1"),
            ApplyError::CounterExhausted => write!(f, "the ID counter is exhausted"),
        }
    }
}

impl std::error::Error for ApplyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_spec() {
        assert_eq!(ApplyError::UnknownSession(1).status(), 404);
        assert_eq!(ApplyError::UnknownResource("r".into()).status(), 404);
        let ticket = ApplyError::UnknownTicket {
            resource: "r".into(),
            name: "t".into(),
        };
        assert_eq!(ticket.status(), 404);
        assert_eq!(ApplyError::NotTicketResource("r".into()).status(), 409);
        assert_eq!(ApplyError::NotLockResource("r".into()).status(), 409);
        assert_eq!(ApplyError::LockHeldByOther("r".into()).status(), 409);
        assert_eq!(ApplyError::DataTooLarge(2000).status(), 413);
        assert_eq!(ApplyError::NameTooLong(9000).status(), 400);
        assert_eq!(ApplyError::ZeroCount.status(), 400);
        assert_eq!(ApplyError::CounterExhausted.status(), 507);
    }

    #[test]
    fn messages_are_one_line() {
        let error = ApplyError::UnknownResource("a\nb".into());
        assert_eq!(error.to_string(), "resource not found: \"a\\nb\"");
        assert!(!error.to_string().contains('\n'));
        assert_eq!(
            ApplyError::UnknownSession(12).to_string(),
            "session not found: 12"
        );
    }
}
