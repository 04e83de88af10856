//! Crash tests of the WAL on its own: what a power cut can leave in the
//! files (a torn or garbage tail, half-done deletions) opens to the
//! synced prefix; damage to synced data is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::PathBuf;

use super::*;
use crate::raft::{Entry, EntryKind, HardState};
use crate::store::AppRecord;
use crate::store::testkit::TestDir;

fn start() -> Header {
    Header {
        seq: 1,
        base_index: 0,
        base_term: 0,
        hard_state: HardState::default(),
        app: AppRecord::default(),
    }
}

fn entries(first: u64, last: u64, term: u64) -> Vec<Entry> {
    (first..=last)
        .map(|index| Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![index as u8; 100],
        })
        .collect()
}

/// Appends entries `first..=last` as one batch, with a commit at `last`.
fn append(wal: &mut Wal, first: u64, last: u64, term: u64) -> u64 {
    let batch = entries(first, last, term);
    let hs = HardState {
        term,
        vote: 1,
        commit: last,
    };
    let mut frame = record::encode_batch(&[OpRef::Entries(&batch), OpRef::HardState(hs)]);
    let state = Header {
        base_index: first - 1,
        base_term: term,
        hard_state: hs,
        ..start()
    };
    wal.append(&mut frame, &state).unwrap()
}

fn last_index(replayed: &Replayed) -> u64 {
    replayed.last().0
}

fn segment_paths(dir: &std::path::Path) -> Vec<PathBuf> {
    recover::list(dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

#[test]
fn appends_survive_a_reopen_and_go_on_where_they_stopped() {
    let dir = TestDir::new("reopen");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    append(&mut wal, 1, 10, 1);
    append(&mut wal, 11, 20, 1);
    drop(wal);
    let (mut wal, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(last_index(&replayed), 20);
    assert_eq!(replayed.entries, entries(1, 20, 1));
    assert_eq!(replayed.hard_state.commit, 20);
    append(&mut wal, 21, 30, 2);
    drop(wal);
    let (_, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(last_index(&replayed), 30);
    assert_eq!(replayed.hard_state.term, 2);
}

#[test]
fn a_torn_last_frame_at_every_byte_opens_to_the_synced_prefix() {
    let dir = TestDir::new("torn");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    append(&mut wal, 1, 5, 1);
    let before = wal.active.end;
    append(&mut wal, 6, 8, 1);
    let after = wal.active.end;
    drop(wal);
    let path = segment_paths(&dir.0).pop().unwrap();
    let intact = fs::read(&path).unwrap();
    // The frame's own bytes end before its padding (zeros in any case).
    let b = before as usize;
    let body = u32::from_be_bytes([intact[b], intact[b + 1], intact[b + 2], intact[b + 3]]);
    let written = before + (record::FRAME_HEADER_LEN as u64) + u64::from(body);
    assert!(written <= after && after - written < record::ALIGN as u64);
    for cut in before..written {
        // The last frame reached the disk up to `cut`; the rest of the
        // segment is the preallocated zeros.
        let mut torn = intact.clone();
        for byte in &mut torn[cut as usize..after as usize] {
            *byte = 0;
        }
        fs::write(&path, &torn).unwrap();
        let (mut wal, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
        assert_eq!(last_index(&replayed), 5, "cut at {cut}");
        assert_eq!(replayed.hard_state.commit, 5);
        // The tail is zero again, and appending goes on cleanly.
        append(&mut wal, 6, 6, 1);
        drop(wal);
        let (_, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
        assert_eq!(last_index(&replayed), 6, "cut at {cut}");
    }
    // Torn the other way: the frame's last bytes landed, its first not.
    let mut torn = intact.clone();
    for byte in &mut torn[before as usize..before as usize + 20] {
        *byte = 0;
    }
    fs::write(&path, &torn).unwrap();
    let (_, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(last_index(&replayed), 5);
}

#[test]
fn garbage_after_the_last_frame_is_zeroed_and_never_read_again() {
    let dir = TestDir::new("garbage");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    append(&mut wal, 1, 5, 1);
    let end = wal.active.end as usize;
    drop(wal);
    let path = segment_paths(&dir.0).pop().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    // Unsynced pages of a later write: a plausible frame header and noise.
    for (i, byte) in bytes[end..end + 3000].iter_mut().enumerate() {
        *byte = (i * 7 + 3) as u8;
    }
    fs::write(&path, &bytes).unwrap();
    let (mut wal, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(last_index(&replayed), 5);
    assert!(fs::read(&path).unwrap()[end..].iter().all(|&b| b == 0));
    append(&mut wal, 6, 7, 1);
    drop(wal);
    let (_, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(last_index(&replayed), 7);
}

#[test]
fn segments_roll_over_and_a_damaged_older_one_is_refused() {
    let dir = TestDir::new("roll");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    let mut next = 1;
    while wal.segment_count() < 4 {
        append(&mut wal, next, next + 49, 1);
        next += 50;
    }
    drop(wal);
    let (_, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(last_index(&replayed), next - 1);
    assert_eq!(replayed.entries, entries(1, next - 1, 1));
    // A flipped bit in the second segment's synced frames.
    let paths = segment_paths(&dir.0);
    let mut bytes = fs::read(&paths[1]).unwrap();
    bytes[200] ^= 0x10;
    fs::write(&paths[1], &bytes).unwrap();
    match Wal::open(&dir.0, SEGMENT_MIN) {
        Err(StoreError::Corrupt(what)) => {
            assert!(what.contains("damaged frame"), "{what}");
            assert!(what.contains(&segment::file_name(2)), "{what}");
        }
        other => panic!("expected corruption, got {:?}", other.map(|o| o.is_some())),
    }
    // Zeros in the middle of an older segment (a lost seal) are refused too.
    bytes[200] ^= 0x10;
    let end = bytes.len() / 2;
    for byte in &mut bytes[end..] {
        *byte = 0;
    }
    fs::write(&paths[1], &bytes).unwrap();
    assert!(matches!(
        Wal::open(&dir.0, SEGMENT_MIN),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn an_interrupted_deletion_leaves_a_usable_log() {
    let dir = TestDir::new("deletion");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    let mut next = 1;
    while wal.segment_count() < 5 {
        append(&mut wal, next, next + 49, 1);
        next += 50;
    }
    drop(wal);
    let paths = segment_paths(&dir.0);
    // Deleted oldest first, stopped after one: 2..=5 remain.
    fs::remove_file(&paths[0]).unwrap();
    let (_, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(last_index(&replayed), next - 1);
    assert!(replayed.base_index > 0);
    assert_eq!(replayed.entries.last(), entries(1, next - 1, 1).last());
    // The unlinks reached the disk out of order: 2 and 4 remain of 1..=4.
    fs::remove_file(&paths[2]).unwrap();
    let (mut wal, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(last_index(&replayed), next - 1);
    assert!(!paths[1].exists(), "the segment before the gap is deleted");
    assert_eq!(wal.segment_count(), 2);
    let first = replayed.base_index + 1;
    assert_eq!(replayed.entries, entries(first, next - 1, 1));
    // Deleting below the active segment leaves it alone.
    assert_eq!(wal.remove_below(u64::MAX).unwrap(), 1);
    assert_eq!(wal.segment_count(), 1);
}

#[test]
fn a_segment_without_its_header_is_dropped_only_when_newest() {
    let dir = TestDir::new("headerless");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    let mut next = 1;
    while wal.segment_count() < 2 {
        append(&mut wal, next, next + 49, 1);
        next += 50;
    }
    drop(wal);
    let paths = segment_paths(&dir.0);
    // The crash hit while segment 3 was being created: zeros only.
    let third = dir.0.join(segment::file_name(3));
    fs::write(&third, vec![0u8; 4096]).unwrap();
    let (mut wal, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(last_index(&replayed), next - 1);
    assert!(!third.exists());
    append(&mut wal, next, next, 1);
    drop(wal);
    // The first segment losing its header is damage, not a crash.
    let mut bytes = fs::read(&paths[0]).unwrap();
    bytes[3] ^= 1;
    fs::write(&paths[0], &bytes).unwrap();
    assert!(matches!(
        Wal::open(&dir.0, SEGMENT_MIN),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn truncations_and_resets_replay() {
    let dir = TestDir::new("truncate");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    append(&mut wal, 1, 10, 1);
    let conflicting = entries(6, 8, 2);
    let mut frame = record::encode_batch(&[
        OpRef::Truncate {
            from: 6,
            prev_term: 1,
        },
        OpRef::Entries(&conflicting),
    ]);
    wal.append(&mut frame, &start()).unwrap();
    drop(wal);
    let (mut wal, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(last_index(&replayed), 8);
    assert_eq!(replayed.entries[5..], conflicting[..]);
    let mut frame = record::encode_batch(&[OpRef::Reset { index: 40, term: 3 }]);
    wal.append(&mut frame, &start()).unwrap();
    drop(wal);
    let (_, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert!(replayed.entries.is_empty());
    assert_eq!(replayed.last(), (40, 3));
    assert_eq!(replayed.reset, Some((40, 3)));
    // A truncation naming the wrong term before it is refused.
    let dir = TestDir::new("bad-truncate");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    append(&mut wal, 1, 10, 1);
    let mut frame = record::encode_batch(&[OpRef::Truncate {
        from: 6,
        prev_term: 9,
    }]);
    wal.append(&mut frame, &start()).unwrap();
    drop(wal);
    assert!(matches!(
        Wal::open(&dir.0, SEGMENT_MIN),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn a_damaged_frame_before_others_in_the_newest_segment_is_refused() {
    let dir = TestDir::new("mid-crc");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    append(&mut wal, 1, 3, 1);
    let second = wal.active.end as usize;
    append(&mut wal, 4, 6, 1);
    append(&mut wal, 7, 9, 1);
    drop(wal);
    let path = segment_paths(&dir.0).pop().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[second + 40] ^= 0x04;
    fs::write(&path, &bytes).unwrap();
    match Wal::open(&dir.0, SEGMENT_MIN) {
        Err(StoreError::Corrupt(what)) => assert!(what.contains("more written after"), "{what}"),
        other => panic!("expected corruption, got {:?}", other.map(|o| o.is_some())),
    }
    // The same damage to the last frame is a torn tail: the prefix opens.
    bytes[second + 40] ^= 0x04;
    let end = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[end - 3] ^= 0x04;
    fs::write(&path, &bytes).unwrap();
    let (_, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(last_index(&replayed), 6);
}

#[test]
fn space_is_allocated_ahead_while_appends_go_on() {
    let dir = TestDir::new("extend");
    let capacity = 8 << 20;
    let mut wal = Wal::create(&dir.0, start(), capacity).unwrap();
    let mut next = 1;
    // About 3.5 MiB in ~4 KiB batches: three chunks past the first.
    while wal.bytes() < (7 << 19) {
        append(&mut wal, next, next + 39, 1);
        next += 40;
    }
    assert_eq!(wal.segment_count(), 1);
    assert!(wal.active.allocated > wal.active.end);
    drop(wal);
    let path = segment_paths(&dir.0).pop().unwrap();
    let len = fs::metadata(&path).unwrap().len();
    assert!(len >= 7 << 19 && len <= capacity, "{len}");
    assert_eq!(len % CHUNK, 0, "whole chunks: {len}");
    let (_, replayed) = Wal::open(&dir.0, capacity).unwrap().unwrap();
    assert_eq!(replayed.entries, entries(1, next - 1, 1));
}

/// Entries 1..=10 of term 1, then one batch of `ops`, replayed by a
/// reopen.
fn replay_after_ten(name: &str, ops: &[OpRef<'_>]) -> Result<Replayed, StoreError> {
    let dir = TestDir::new(name);
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    append(&mut wal, 1, 10, 1);
    let mut frame = record::encode_batch(ops);
    wal.append(&mut frame, &start()).unwrap();
    drop(wal);
    Wal::open(&dir.0, SEGMENT_MIN).map(|opened| opened.unwrap().1)
}

#[test]
fn a_truncation_replays_only_from_an_index_the_log_can_cut_at() {
    // Right after the last entry: nothing to cut, and no damage.
    let replayed = replay_after_ten(
        "truncate-end",
        &[OpRef::Truncate {
            from: 11,
            prev_term: 1,
        }],
    )
    .unwrap();
    assert_eq!(replayed.entries, entries(1, 10, 1));
    // Past it, or at index 0 (there is no entry before it): damage.
    for (from, prev_term) in [(12, 1), (0, 0), (0, 1)] {
        let replayed = replay_after_ten("truncate-bad", &[OpRef::Truncate { from, prev_term }]);
        assert!(
            matches!(replayed, Err(StoreError::Corrupt(_))),
            "truncation at {from}: {replayed:?}"
        );
    }
}

#[test]
fn a_truncation_below_the_first_segment_starts_the_log_over_before_it() {
    // The segments before the first one left were deleted (below a
    // snapshot at 20); a leader's log then cut it back to 15.
    let dir = TestDir::new("truncate-below");
    let from_twenty = Header {
        base_index: 20,
        base_term: 1,
        ..start()
    };
    let mut wal = Wal::create(&dir.0, from_twenty, SEGMENT_MIN).unwrap();
    append(&mut wal, 21, 25, 1);
    let conflicting = entries(15, 17, 2);
    let mut frame = record::encode_batch(&[
        OpRef::Truncate {
            from: 15,
            prev_term: 1,
        },
        OpRef::Entries(&conflicting),
    ]);
    wal.append(&mut frame, &from_twenty).unwrap();
    drop(wal);
    let (_, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!((replayed.base_index, replayed.base_term), (14, 1));
    assert_eq!(replayed.entries, conflicting);
    assert_eq!(replayed.last(), (17, 2));
}

#[test]
fn a_truncation_above_the_base_keeps_the_entries_before_it() {
    let dir = TestDir::new("truncate-above");
    let from_twenty = Header {
        base_index: 20,
        base_term: 1,
        ..start()
    };
    let mut wal = Wal::create(&dir.0, from_twenty, SEGMENT_MIN).unwrap();
    append(&mut wal, 21, 25, 1);
    append(&mut wal, 26, 30, 2);
    let conflicting = entries(26, 27, 3);
    let mut frame = record::encode_batch(&[
        OpRef::Truncate {
            from: 26,
            prev_term: 1,
        },
        OpRef::Entries(&conflicting),
    ]);
    wal.append(&mut frame, &from_twenty).unwrap();
    drop(wal);
    let (_, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!((replayed.base_index, replayed.base_term), (20, 1));
    let mut expected = entries(21, 25, 1);
    expected.extend(conflicting);
    assert_eq!(replayed.entries, expected);
    // The term named before the cut is that of the entry before it (25,
    // term 1), not of the first entry cut (26, term 2).
    let dir = TestDir::new("truncate-above-term");
    let mut wal = Wal::create(&dir.0, from_twenty, SEGMENT_MIN).unwrap();
    append(&mut wal, 21, 25, 1);
    append(&mut wal, 26, 30, 2);
    let mut frame = record::encode_batch(&[OpRef::Truncate {
        from: 26,
        prev_term: 2,
    }]);
    wal.append(&mut frame, &from_twenty).unwrap();
    drop(wal);
    assert!(matches!(
        Wal::open(&dir.0, SEGMENT_MIN),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn entries_replay_only_in_order_and_with_terms_that_never_go_down() {
    for (name, bad) in [
        ("gap", entries(12, 12, 1)),
        ("again", entries(10, 10, 1)),
        ("term-down", entries(11, 11, 0)),
    ] {
        let replayed = replay_after_ten(name, &[OpRef::Entries(&bad)]);
        assert!(
            matches!(replayed, Err(StoreError::Corrupt(_))),
            "{name}: {replayed:?}"
        );
    }
    let same_term = replay_after_ten("same-term", &[OpRef::Entries(&entries(11, 12, 1))]).unwrap();
    assert_eq!(same_term.entries, entries(1, 12, 1));
    let higher = replay_after_ten("higher", &[OpRef::Entries(&entries(11, 12, 5))]).unwrap();
    assert_eq!(higher.last(), (12, 5));
}

#[test]
fn a_wal_directory_that_cannot_be_read_is_an_error_not_an_empty_log() {
    // Only a missing directory means "no WAL"; taken for one, anything
    // else would have the store start a new log over the old.
    let dir = TestDir::new("not-a-dir");
    fs::write(&dir.0, b"a file where the WAL directory should be").unwrap();
    let listed = recover::list(&dir.0);
    let opened = Wal::open(&dir.0, SEGMENT_MIN).map(|o| o.is_some());
    fs::remove_file(&dir.0).unwrap();
    assert!(matches!(listed, Err(StoreError::Io(_))), "{listed:?}");
    assert!(matches!(opened, Err(StoreError::Io(_))), "{opened:?}");
    assert!(matches!(Wal::open(&dir.0, SEGMENT_MIN), Ok(None)));
}

#[test]
fn a_clean_reopen_finds_nothing_to_repair_and_counts_the_same_bytes() {
    let dir = TestDir::new("clean-reopen");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    let mut next = 1;
    while wal.segment_count() < 3 {
        append(&mut wal, next, next + 49, 1);
        next += 50;
    }
    let bytes = wal.bytes();
    drop(wal);
    let scan = scan(&dir.0).unwrap().unwrap();
    assert!(scan.stale.is_empty());
    for segment in &scan.segments {
        assert!(
            segment.torn.is_none(),
            "{}: {:?}",
            segment.seq,
            segment.torn
        );
    }
    assert!(scan.segments[..2].iter().all(|s| s.sealed));
    let (wal, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(last_index(&replayed), next - 1);
    // What the map-full check counts is what was written, before and
    // after a restart.
    assert_eq!(wal.bytes(), bytes);
    assert_eq!(wal.segment_count(), 3);
}

#[test]
fn a_lone_segment_with_a_damaged_header_is_refused_and_kept() {
    // Only a newest segment with older ones before it can be one being
    // created; the only segment carries the hard state and the app
    // record in its header, and is never deleted for a bad one.
    let dir = TestDir::new("lone-header");
    let wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    drop(wal);
    let path = segment_paths(&dir.0).pop().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[20] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        Wal::open(&dir.0, SEGMENT_MIN),
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_torn_tail_is_reported_and_zeroed_exactly_up_to_its_last_written_byte() {
    let dir = TestDir::new("tail-range");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    append(&mut wal, 1, 5, 1);
    let end = wal.active.end;
    drop(wal);
    let path = segment_paths(&dir.0).pop().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let len = bytes.len();
    // A torn frame's bytes up to 3000 past the end, the last one non-zero.
    for (i, byte) in bytes[end as usize..end as usize + 3000]
        .iter_mut()
        .enumerate()
    {
        *byte = (i % 251) as u8 | 1;
    }
    fs::write(&path, &bytes).unwrap();
    let scan = scan(&dir.0).unwrap().unwrap();
    let torn = scan.segments.last().unwrap().torn.clone().unwrap();
    assert_eq!((torn.0, torn.1), (end, end + 3000), "{}", torn.2);
    let (_, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(last_index(&replayed), 5);
    let after = fs::read(&path).unwrap();
    assert_eq!(after.len(), len, "zeroing never grows the segment");
    assert!(after[end as usize..].iter().all(|&b| b == 0));
    assert_eq!(after[..end as usize], bytes[..end as usize]);
}

#[test]
fn a_reservation_grows_the_segment_by_whole_chunks_to_what_it_needs() {
    let dir = TestDir::new("reserve");
    fs::create_dir_all(&dir.0).unwrap();
    let mut active = segment::Segment::create(&dir.0, 1, 7, 4096, 64 << 10).unwrap();
    assert_eq!(active.allocated, 4096);
    active.reserve(10_000, 4096).unwrap();
    assert_eq!(active.allocated, 12_288);
    assert_eq!(fs::metadata(&active.path).unwrap().len(), 12_288);
    // Within what is allocated: nothing changes.
    active.reserve(12_288, 4096).unwrap();
    assert_eq!(active.allocated, 12_288);
    // Never past the capacity, unless one frame needs it.
    active.reserve(100 << 10, 4096).unwrap();
    assert_eq!(active.allocated, 100 << 10);
}

/// The allocation thread's work is taken exactly once and never left
/// running: a thread left behind, unjoined, could write its zeros over
/// frames appended after the space was allocated again by hand.
#[test]
fn a_background_allocation_is_waited_for_taken_and_never_started_twice() {
    const MIB: u64 = 1 << 20;
    let dir = TestDir::new("background");
    fs::create_dir_all(&dir.0).unwrap();
    let mut active = segment::Segment::create(&dir.0, 1, 7, 4096, 64 * MIB).unwrap();

    // A reservation past what is allocated, within what the thread
    // allocates, waits for the thread and takes its space: it allocates
    // nothing itself (that would be 8 KiB, a whole chunk past its need).
    active.extend_in_background(8 * MIB);
    assert_eq!(active.extending_to(), Some(8 * MIB));
    active.reserve(8192, 4096).unwrap();
    assert_eq!(active.extending_to(), None);
    assert_eq!(active.allocated, 8 * MIB);
    assert_eq!(fs::metadata(&active.path).unwrap().len(), 8 * MIB);

    // A thread that is done is taken by the next reservation that needs
    // its space, without allocating anything on the caller's thread.
    active.extend_in_background(9 * MIB);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !active.background_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(active.background_finished());
    active.reserve(8 * MIB + 4096, 4096).unwrap();
    assert_eq!(active.extending_to(), None);
    assert_eq!(active.allocated, 9 * MIB);

    // While one runs, asking for more starts no second thread over the
    // same range: the first is the one waited for. (Should the first
    // finish between the two calls, the second may start, but only
    // from where the first ended.)
    for round in 0..5u64 {
        let first = (12 + 8 * round) * MIB;
        active.extend_in_background(first);
        active.extend_in_background(first + 4 * MIB);
        if active.extending_to() != Some(first) {
            assert!(
                active.allocated >= first,
                "round {round}: two threads at once"
            );
        }
        active.reserve(first + 4 * MIB - active.end, 4096).unwrap();
        assert_eq!(active.extending_to(), None);
        assert_eq!(active.allocated, first + 4 * MIB);
    }

    // Dropped while a thread allocates: the drop waits for it, so the
    // file is used again (a reopen, a wipe) only once it is done.
    active.extend_in_background(64 * MIB);
    let path = active.path.clone();
    drop(active);
    assert_eq!(fs::metadata(&path).unwrap().len(), 64 * MIB);
}

/// A batch of entry `index` whose placed frame is exactly `len` bytes
/// (a multiple of 16).
fn frame_of_len(len: usize, index: u64) -> Frame {
    for data in 0..len {
        let batch = [Entry {
            term: 1,
            index,
            kind: EntryKind::Normal,
            data: vec![7; data],
        }];
        let frame = record::encode_batch(&[OpRef::Entries(&batch)]);
        if frame.len() == len {
            return frame;
        }
    }
    panic!("no batch frame of {len} bytes");
}

#[test]
fn segments_get_a_sixteenth_of_the_map_within_their_bounds() {
    assert_eq!(segment_capacity(0), SEGMENT_MIN);
    assert_eq!(segment_capacity(16 * SEGMENT_MIN - 16), SEGMENT_MIN);
    assert_eq!(
        segment_capacity(16 * SEGMENT_MIN + 16 * 48),
        SEGMENT_MIN + 48
    );
    assert_eq!(segment_capacity(1 << 30), SEGMENT_MAX);
    assert_eq!(segment_capacity(u64::MAX), SEGMENT_MAX);
}

#[test]
fn a_full_file_system_or_quota_is_no_space_and_anything_else_an_io_error() {
    let path = std::path::Path::new("/x");
    for errno in [28, 122] {
        let e = io::Error::from_raw_os_error(errno);
        assert!(matches!(io_error("writing", path, &e), StoreError::NoSpace));
    }
    let e = io::Error::from_raw_os_error(5);
    match io_error("writing", path, &e) {
        StoreError::Io(what) => assert!(what.starts_with("writing /x: "), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_new_wal_starts_at_segment_one_whatever_the_header_says() {
    let dir = TestDir::new("create-seq");
    let header = Header { seq: 7, ..start() };
    let mut wal = Wal::create(&dir.0, header, SEGMENT_MIN).unwrap();
    assert_eq!(wal.active_seq(), 1);
    assert_eq!(append(&mut wal, 1, 3, 1), 1);
    drop(wal);
    let listed = recover::list(&dir.0).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, 1);
    let (wal, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!((wal.active_seq(), last_index(&replayed)), (1, 3));
}

#[test]
fn a_frame_of_exactly_the_largest_body_is_taken_and_one_byte_more_refused() {
    let dir = TestDir::new("frame-max");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    let frame = record::encode_batch(&[OpRef::Entries(&entries(1, 2, 1))]);
    wal.set_frame_max(frame.body_len());
    assert!(wal.check_frame(&frame).is_ok());
    wal.set_frame_max(frame.body_len() - 1);
    assert!(matches!(
        wal.check_frame(&frame),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn remove_below_removes_exactly_the_older_segments_and_tolerates_one_already_gone() {
    let dir = TestDir::new("remove-below");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    let mut next = 1;
    while wal.segment_count() < 5 {
        append(&mut wal, next, next + 99, 1);
        next += 100;
    }
    let paths = segment_paths(&dir.0);
    assert_eq!(paths.len(), 5);
    // Segment 1 went already (a crash during an earlier deletion).
    fs::remove_file(&paths[0]).unwrap();
    assert_eq!(wal.remove_below(3).unwrap(), 2);
    assert_eq!(wal.segment_count(), 3);
    assert_eq!(segment_paths(&dir.0), paths[2..].to_vec());
    assert_eq!(wal.remove_below(3).unwrap(), 0);
    // A segment that cannot be removed is an error, and stays counted.
    fs::remove_file(&paths[2]).unwrap();
    fs::create_dir(&paths[2]).unwrap();
    fs::write(paths[2].join("x"), b"x").unwrap();
    assert!(matches!(wal.remove_below(4), Err(StoreError::Io(_))));
    assert_eq!(wal.segment_count(), 3);
}

#[test]
fn a_first_frame_larger_than_a_segment_goes_into_the_fresh_one() {
    let dir = TestDir::new("big-first");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    let big = SEGMENT_MIN as usize + 4096;
    let mut frame = frame_of_len(record::aligned(big), 1);
    assert_eq!(wal.append(&mut frame, &start()).unwrap(), 1);
    assert_eq!(wal.segment_count(), 1);
    // The next one no longer fits: a new segment.
    append(&mut wal, 2, 3, 1);
    assert_eq!(wal.segment_count(), 2);
}

#[test]
fn a_frame_that_leaves_exactly_room_for_the_seal_fits_and_one_more_block_rolls() {
    for over in [0, 16] {
        let dir = TestDir::new("exact-fit");
        let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
        append(&mut wal, 1, 3, 1);
        let left = SEGMENT_MIN - wal.active.end - record::SEAL_LEN as u64;
        let mut frame = frame_of_len(left as usize + over, 4);
        let seq = wal.append(&mut frame, &start()).unwrap();
        assert_eq!(
            (seq, wal.segment_count()),
            (1 + over as u64 / 16, 1 + over / 16)
        );
        if over == 0 {
            assert_eq!(wal.active.end, SEGMENT_MIN - record::SEAL_LEN as u64);
            // The seal takes the last bytes; the next batch rolls.
            append(&mut wal, 5, 6, 1);
            assert_eq!(wal.segment_count(), 2);
            drop(wal);
            let first = &segment_paths(&dir.0)[0];
            assert_eq!(fs::metadata(first).unwrap().len(), SEGMENT_MIN);
            let (_, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
            assert_eq!(last_index(&replayed), 6);
        }
    }
}

#[test]
fn an_append_reports_how_long_its_sync_took() {
    let dir = TestDir::new("last-sync");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    assert_eq!(wal.last_sync(), Duration::ZERO);
    append(&mut wal, 1, 3, 1);
    assert!(wal.last_sync() > Duration::ZERO);
}

/// Waits (bounded) for the file at `path` to reach `len` bytes.
fn wait_for_length(path: &std::path::Path, len: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = fs::metadata(path).unwrap().len();
        if now >= len || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_reserve_is_topped_up_to_whole_chunks_only_when_short() {
    let dir = TestDir::new("reserve");
    let mut wal = Wal::create(&dir.0, start(), 8 * CHUNK).unwrap();
    append(&mut wal, 1, 3, 1);
    let path = segment_paths(&dir.0)[0].clone();
    assert_eq!(wal.active.allocated, CHUNK);
    // Enough already: nothing starts.
    wal.keep_reserve(CHUNK / 2);
    assert_eq!(wal.active.extending_to(), None);
    // Short: topped up to the whole chunk past what is wanted.
    wal.keep_reserve(2 * CHUNK);
    assert_eq!(wal.active.extending_to(), Some(3 * CHUNK));
    assert_eq!(wait_for_length(&path, 3 * CHUNK), 3 * CHUNK);
}

#[test]
fn the_next_chunk_is_allocated_ahead_once_less_than_half_a_chunk_is_left() {
    let dir = TestDir::new("ahead");
    let mut wal = Wal::create(&dir.0, start(), 8 * CHUNK).unwrap();
    let mut next = 1;
    while wal.active.end < CHUNK / 2 - 8192 {
        append(&mut wal, next, next + 9, 1);
        next += 10;
        assert_eq!(
            wal.active.extending_to(),
            None,
            "at byte {}",
            wal.active.end
        );
    }
    while wal.active.allocated - wal.active.end >= CHUNK / 2 {
        append(&mut wal, next, next + 9, 1);
        next += 10;
    }
    assert_eq!(wal.active.extending_to(), Some(2 * CHUNK));
    let path = segment_paths(&dir.0)[0].clone();
    assert_eq!(wait_for_length(&path, 2 * CHUNK), 2 * CHUNK);
}

#[test]
fn a_write_cut_short_by_a_full_disk_is_zeroed_and_the_next_frame_goes_in_its_place() {
    let dir = TestDir::new("short-write");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    append(&mut wal, 1, 3, 1);
    let start_at = wal.active.end;
    let path = segment_paths(&dir.0)[0].clone();
    let length = fs::metadata(&path).unwrap().len();
    let batch = entries(4, 13, 1);
    let mut frame = record::encode_batch(&[OpRef::Entries(&batch)]);
    let len = frame.len() as u64;
    seams::fail_next_write(len as usize / 2);
    let state = Header {
        base_index: 3,
        ..start()
    };
    assert!(matches!(
        wal.append(&mut frame, &state),
        Err(StoreError::NoSpace)
    ));
    assert_eq!(wal.active.end, start_at);
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, length, "the file grew");
    let cut = &bytes[start_at as usize..(start_at + len) as usize];
    assert!(cut.iter().all(|&b| b == 0), "a remnant of the cut write");
    // The next (shorter) batch goes where the cut one started.
    append(&mut wal, 4, 5, 1);
    drop(wal);
    let (_, replayed) = Wal::open(&dir.0, SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(replayed.entries, entries(1, 5, 1));
}

/// Durable when `append` returns: each append is one segment sync
/// after its write, and a roll syncs the seal and the new header too.
#[test]
fn every_append_is_synced_before_it_returns() {
    let dir = TestDir::new("syncs");
    let mut wal = Wal::create(&dir.0, start(), SEGMENT_MIN).unwrap();
    let mut next = 1;
    let mut before = seams::syncs();
    while wal.segment_count() == 1 {
        let rolls = wal.segment_count();
        append(&mut wal, next, next + 9, 1);
        next += 10;
        let after = seams::syncs();
        let expected = if wal.segment_count() > rolls { 3 } else { 1 };
        assert_eq!(after - before, expected, "syncs for the append at {next}");
        before = after;
    }
}
