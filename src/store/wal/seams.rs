//! Tests' handles on the WAL's I/O: faults to inject and syncs to count.
//! Thread-local, so tests running side by side never see each other's;
//! compiled only for tests (the callers' hooks are `cfg(test)` too).

use std::cell::Cell;

thread_local! {
    static FAIL_WRITE: Cell<Option<usize>> = const { Cell::new(None) };
    static SYNCS: Cell<u64> = const { Cell::new(0) };
    static FAIL_SCAN_SYNC: Cell<bool> = const { Cell::new(false) };
}

/// The next segment write on this thread writes only its first `written`
/// bytes and fails with ENOSPC.
pub fn fail_next_write(written: usize) {
    FAIL_WRITE.with(|fail| fail.set(Some(written)));
}

/// Segment writes: the failure asked for, once.
pub(super) fn take_write_failure() -> Option<usize> {
    FAIL_WRITE.with(Cell::take)
}

/// Segment syncs (`fdatasync` of frames) done on this thread so far.
pub fn syncs() -> u64 {
    SYNCS.with(Cell::get)
}

pub(super) fn count_sync() {
    SYNCS.with(|syncs| syncs.set(syncs.get() + 1));
}

/// The next sync of a segment by the recovery scan on this thread fails
/// (EIO).
pub fn fail_next_scan_sync() {
    FAIL_SCAN_SYNC.with(|fail| fail.set(true));
}

/// The recovery scan's syncs: the failure asked for, once.
pub(super) fn take_scan_sync_failure() -> bool {
    FAIL_SCAN_SYNC.with(|fail| fail.replace(false))
}
