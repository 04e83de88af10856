//! The one error type of the store. Every LMDB and WAL error is mapped here
//! so that callers never see `lmdb::Error` or `io::Error` and can tell
//! "disk full" (answer 507 and keep going) from "corrupt" (refuse to
//! start) from a caller bug.

use std::fmt;

use super::codec::FORMAT_VERSION;

/// Why a store operation failed. A failed write leaves the store exactly as
/// it was before the call (its transaction is aborted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The map is full (LMDB's, or the WAL and LMDB together past
    /// `--db_size`); the write was rolled back. Reads and smaller writes
    /// (or writes after a compaction) still work.
    MapFull,
    /// The file system is full (`ENOSPC`, `EDQUOT` from a write); the
    /// write did not happen, as for `MapFull`. Not an fsync failure: LMDB
    /// writes the data pages, syncs them, and only then the meta page, so
    /// a failed commit leaves the previous one in force; the WAL writes a
    /// batch only into space allocated (and synced) before, so a failed
    /// allocation leaves nothing of the batch.
    NoSpace,
    /// What is on disk is inconsistent or unreadable; the string names the
    /// record and what is wrong with it.
    Corrupt(String),
    /// The data directory was written by a format this build does not know.
    UnknownVersion(u64),
    /// The caller asked for a write that would make the store inconsistent
    /// (a gap in the log, a commit beyond the last entry, ...). Nothing was
    /// written.
    Invalid(String),
    /// Another process (or another `Store` in this one) has the directory open.
    Locked(String),
    /// The data directory or its lock file could not be created or opened.
    Io(String),
    /// Any other LMDB failure.
    Lmdb(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::MapFull => write!(f, "LMDB map is full (raise --db_size)"),
            StoreError::NoSpace => write!(f, "no space left on the file system"),
            StoreError::Corrupt(what) => write!(f, "corrupt data store: {what}"),
            StoreError::UnknownVersion(version) => write!(
                f,
                "data store has format version {version}, this build reads version {FORMAT_VERSION}"
            ),
            StoreError::Invalid(what) => write!(f, "refused store write: {what}"),
            StoreError::Locked(dir) => {
                write!(f, "data directory {dir} is in use by another process")
            }
            StoreError::Io(what) => write!(f, "data store I/O error: {what}"),
            StoreError::Lmdb(what) => write!(f, "LMDB error: {what}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Linux's errno values for "no space" and "quota exceeded".
const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

impl StoreError {
    /// The write did not fit (map or file system) and was rolled back:
    /// the node answers 507 for writes and goes on.
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::MapFull | StoreError::NoSpace)
    }
}

impl From<lmdb::Error> for StoreError {
    fn from(error: lmdb::Error) -> StoreError {
        match error {
            lmdb::Error::MapFull => StoreError::MapFull,
            lmdb::Error::Other(ENOSPC | EDQUOT) => StoreError::NoSpace,
            lmdb::Error::Corrupted | lmdb::Error::PageNotFound | lmdb::Error::Invalid => {
                StoreError::Corrupt(error.to_string())
            }
            other => StoreError::Lmdb(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lmdb_errors_map_to_the_right_variant() {
        assert_eq!(StoreError::from(lmdb::Error::MapFull), StoreError::MapFull);
        assert_eq!(
            StoreError::from(lmdb::Error::Other(28)),
            StoreError::NoSpace
        );
        assert!(StoreError::NoSpace.is_full() && StoreError::MapFull.is_full());
        assert!(!StoreError::from(lmdb::Error::Other(5)).is_full());
        assert!(matches!(
            StoreError::from(lmdb::Error::Corrupted),
            StoreError::Corrupt(_)
        ));
        assert!(matches!(
            StoreError::from(lmdb::Error::ReadersFull),
            StoreError::Lmdb(_)
        ));
    }

    #[test]
    fn messages_are_one_line() {
        let all = [
            StoreError::MapFull,
            StoreError::Corrupt("log entry 3: checksum mismatch".into()),
            StoreError::UnknownVersion(9),
            StoreError::Invalid("gap".into()),
            StoreError::Locked("/d".into()),
            StoreError::Io("x".into()),
            StoreError::Lmdb("y".into()),
        ];
        for error in all {
            let text = error.to_string();
            assert!(!text.is_empty());
            assert!(!text.contains('\n'), "{text}");
        }
        assert!(StoreError::UnknownVersion(9).to_string().contains('9'));
    }
}
