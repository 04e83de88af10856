//! Crash and damage tests of the WAL inside a whole store (review of the
//! `wal` branch): a segment roll during a snapshot install, torn frames
//! across sector and page boundaries, bit flips in synced frames and in
//! the newest segment's header, frames too large to read back, and the
//! checks the WAL makes of what it reads at open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::PathBuf;

use crate::raft::{Entry, HardState, Snapshot};
use crate::store::testkit::{
    TestDir, append, bootstrapped, entries, hard_state, identity, initial_snapshot,
};
use crate::store::wal::{self, OpRef, Wal, record};
use crate::store::{Store, StoreError, WAL_DIR, Write};

fn snapshot_at(index: u64, term: u64) -> Snapshot {
    let mut snapshot = initial_snapshot();
    snapshot.meta.index = index;
    snapshot.meta.term = term;
    snapshot.data = format!("state at {index}").into_bytes();
    snapshot
}

fn segments(dir: &TestDir) -> Vec<PathBuf> {
    wal::list_segments(&dir.0.join(WAL_DIR))
        .unwrap()
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

/// 1000 entries of term 1 over several 64 KiB segments (a 1 MiB map).
fn many_segments(dir: &TestDir) -> Store {
    let mut store = Store::open(&dir.0, 1).unwrap();
    store.bootstrap(identity(), &initial_snapshot()).unwrap();
    for first in (1..=1000).step_by(50) {
        let mut batch = entries(first, first + 49, 1);
        for entry in &mut batch {
            entry.data = vec![entry.index as u8; 200];
        }
        append(&mut store, &batch, hard_state(1, first - 1)).unwrap();
    }
    assert!(segments(dir).len() >= 4, "{:?}", segments(dir));
    store
}

/// Where the next frame of the newest segment goes, as a scan sees it.
fn scan_end(dir: &TestDir) -> usize {
    let scan = wal::scan(&dir.0.join(WAL_DIR)).unwrap().unwrap();
    scan.segments.last().unwrap().end as usize
}

/// A leader's snapshot whose batch does not fit the active segment: the
/// roll writes the new segment's header from the in-memory view (base =
/// the snapshot), while the older segment still ends at the old log.
/// A crash before the unlink of the older segment reaches the disk.
#[test]
fn review_roll_during_snapshot_install_then_crash_before_unlink() {
    let dir = TestDir::new("review-roll-install");
    let mut store = many_segments(&dir);
    let before = segments(&dir);
    // A second name for the active segment: it sees the seal the roll
    // writes, and survives the unlink (an unlink that never reached disk).
    let active = before.last().unwrap().clone();
    let keep = dir.0.join("keep-active");
    fs::hard_link(&active, &keep).unwrap();
    let snapshot = snapshot_at(5000, 2);
    let mut after = entries(5001, 5001, 2);
    after[0].data = vec![7u8; 70 << 10]; // bigger than a 64 KiB segment: rolls
    store
        .persist(&Write {
            snapshot: Some(&snapshot),
            entries: &after,
            hard_state: Some(&HardState {
                term: 2,
                vote: 2,
                commit: 5000,
            }),
            app: None,
        })
        .unwrap();
    let now = segments(&dir);
    drop(store);
    // Power cut: the unlink of the newest old segment did not reach disk.
    assert!(!now.contains(&active));
    fs::rename(&keep, &active).unwrap();
    let store = Store::open(&dir.0, 1).unwrap();
    let loaded = store
        .load()
        .expect("an ordinary crash must leave a store that opens")
        .unwrap();
    assert_eq!(loaded.snapshot.meta.index, 5000);
    assert_eq!(loaded.entries, after);
}

/// Frame F (never synced) has its header in the last 16 bytes of a page
/// and its body in the next; the page after the boundary reached the
/// disk, the one before did not. F was never acknowledged: the store must
/// open to the frames before it. (The reviewer's case had F's header
/// straddle the boundary, which aligned frames no longer allow.)
#[test]
fn review_torn_frame_whose_header_straddles_a_page() {
    let dir = TestDir::new("review-straddle");
    let mut store = bootstrapped(&dir);
    append(&mut store, &entries(1, 5, 1), hard_state(1, 3)).unwrap();
    let path = segments(&dir).pop().unwrap();
    let end = scan_end(&dir);
    // Filler batch so that the next frame starts at 4096 - 16.
    let target = 4096 - record::FRAME_HEADER_LEN;
    let hs = hard_state(1, 5);
    let mut filler = entries(6, 6, 1);
    filler[0].data.clear();
    let base = record::encode_batch(&[OpRef::Entries(&filler), OpRef::HardState(hs)]).body_len();
    filler[0].data = vec![0x5a; target - end - record::FRAME_HEADER_LEN - base];
    append(&mut store, &filler, hs).unwrap();
    assert_eq!(scan_end(&dir), target);
    let acknowledged = store.load().unwrap().unwrap();
    let mut f = entries(7, 7, 1);
    f[0].data = vec![0xa5; 1000];
    append(&mut store, &f, hard_state(1, 6)).unwrap();
    drop(store);
    let mut torn = fs::read(&path).unwrap();
    for b in &mut torn[target..4096] {
        *b = 0; // the page before the boundary was not written back
    }
    fs::write(&path, &torn).unwrap();
    let store = Store::open(&dir.0, 16).unwrap();
    assert_eq!(store.load().unwrap().unwrap(), acknowledged);
}

/// A bit flip in the length of a synced frame in the newest segment,
/// with more synced frames after it: should be refused as corruption,
/// not silently cut.
#[test]
fn review_flip_in_length_of_a_synced_frame() {
    let dir = TestDir::new("review-flip");
    let mut store = bootstrapped(&dir);
    append(&mut store, &entries(1, 5, 1), hard_state(1, 3)).unwrap();
    let at = scan_end(&dir);
    append(&mut store, &entries(6, 9, 1), hard_state(1, 8)).unwrap();
    append(&mut store, &entries(10, 20, 1), hard_state(1, 19)).unwrap();
    drop(store);
    let path = segments(&dir).pop().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[at] ^= 0x80; // length's top bit
    fs::write(&path, &bytes).unwrap();
    let store = Store::open(&dir.0, 16).unwrap();
    let loaded = store.load();
    assert!(
        matches!(loaded, Err(StoreError::Corrupt(_))),
        "synced entries 6..=20 were dropped silently: {:?}",
        loaded.map(|l| l.map(|l| l.entries.len()))
    );
    // And the open repaired nothing: the damaged file is as it was.
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

/// One flipped bit in the header of the newest segment, which holds
/// acknowledged batches: taken for a segment "being created" and deleted.
#[test]
fn review_flip_in_header_of_newest_segment_with_batches() {
    let dir = TestDir::new("review-header-flip");
    let store = many_segments(&dir);
    drop(store);
    let newest = segments(&dir).pop().unwrap();
    let mut bytes = fs::read(&newest).unwrap();
    bytes[20] ^= 0x01; // inside the header body
    fs::write(&newest, &bytes).unwrap();
    let store = Store::open(&dir.0, 1).unwrap();
    let loaded = store.load();
    assert!(
        matches!(loaded, Err(StoreError::Corrupt(_))),
        "acknowledged entries silently dropped: {:?}",
        loaded.map(|l| l.map(|l| l.entries.len()))
    );
    assert!(newest.exists(), "the damaged segment was deleted");
}

/// The install's WAL write fails (`NoSpace`) after its snapshot is in
/// LMDB; the next batch carries the pending reset and rolls: its header
/// still continues the old log, which the segment before ends with.
#[test]
fn a_pending_reset_that_rolls_then_a_crash_before_the_unlink_opens() {
    let dir = TestDir::new("pending-reset-roll");
    let mut store = many_segments(&dir);
    let active = segments(&dir).pop().unwrap();
    let keep = dir.0.join("keep-active");
    fs::hard_link(&active, &keep).unwrap();
    let snapshot = snapshot_at(5000, 2);
    let leader = HardState {
        term: 2,
        vote: 2,
        commit: 5000,
    };
    store.fail_wal_after_snapshot = true;
    let failed = store.persist(&Write {
        snapshot: Some(&snapshot),
        hard_state: Some(&leader),
        ..Write::default()
    });
    assert!(matches!(failed, Err(StoreError::NoSpace)), "{failed:?}");
    let mut after = entries(5001, 5001, 2);
    after[0].data = vec![7u8; 70 << 10];
    append(&mut store, &after, leader).unwrap();
    assert!(!segments(&dir).contains(&active));
    drop(store);
    fs::rename(&keep, &active).unwrap();
    let store = Store::open(&dir.0, 1).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.snapshot, snapshot);
    assert_eq!(loaded.entries, after);
    assert_eq!(loaded.hard_state, leader);
}

/// At open the WAL lacks the stored snapshot's entry and must be reset,
/// but its newest segment is sealed (a crash during a roll, before the
/// next segment's name was durable): the reset rolls, and a crash before
/// the unlink of the sealed segment leaves both.
#[test]
fn a_reset_at_open_that_rolls_then_a_crash_before_the_unlink_opens() {
    let dir = TestDir::new("open-reset-roll");
    let mut store = many_segments(&dir);
    // The leader of term 2 is heard of first (its term is durable before
    // its snapshot is stored).
    store
        .persist(&Write {
            hard_state: Some(&hard_state(2, 1000)),
            ..Write::default()
        })
        .unwrap();
    let sealed = segments(&dir).pop().unwrap();
    let mut big = entries(1001, 1001, 1);
    big[0].data = vec![9u8; 70 << 10];
    append(&mut store, &big, hard_state(2, 1000)).unwrap();
    let rolled = segments(&dir).pop().unwrap();
    assert_ne!(rolled, sealed);
    // A leader's snapshot stored, then the power cut: the new segment's
    // name never reached the disk.
    let snapshot = snapshot_at(5000, 2);
    store.snapshot_store().put(&snapshot).unwrap();
    drop(store);
    fs::remove_file(&rolled).unwrap();
    let keep = dir.0.join("keep-sealed");
    fs::hard_link(&sealed, &keep).unwrap();
    let store = Store::open(&dir.0, 1).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.snapshot, snapshot);
    assert!(loaded.entries.is_empty());
    assert!(
        !sealed.exists(),
        "the reset rolled and dropped the sealed one"
    );
    drop(store);
    // The unlink of the sealed segment did not reach the disk.
    fs::rename(&keep, &sealed).unwrap();
    let mut store = Store::open(&dir.0, 1).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.snapshot, snapshot);
    assert!(loaded.entries.is_empty());
    append(&mut store, &entries(5001, 5002, 2), hard_state(2, 5001)).unwrap();
    assert_eq!(store.load().unwrap().unwrap().entries.len(), 2);
}

// ---- torn last frames and damaged synced frames, on the WAL alone ----

fn start() -> wal::Header {
    wal::Header {
        seq: 1,
        base_index: 0,
        base_term: 1,
        hard_state: HardState::default(),
        app: crate::store::AppRecord::default(),
    }
}

/// Appends entries `first..=last` (each with `size` bytes of data) as
/// one batch; returns where its frame starts and where its bytes end
/// (padding excluded).
fn wal_append(wal: &mut Wal, first: u64, last: u64, size: usize) -> (usize, usize) {
    let mut batch = entries(first, last, 1);
    for entry in &mut batch {
        entry.data = vec![(entry.index as u8) | 0x80; size];
    }
    let mut frame = record::encode_batch(&[
        OpRef::Entries(&batch),
        OpRef::HardState(hard_state(1, last)),
    ]);
    let state = wal::Header {
        base_index: first - 1,
        ..start()
    };
    let at = wal.active.end as usize;
    let body = frame.body_len();
    wal.append(&mut frame, &state).unwrap();
    (at, at + record::FRAME_HEADER_LEN + body)
}

fn newest(dir: &TestDir) -> PathBuf {
    let found = wal::list_segments(&dir.0).unwrap();
    found.last().unwrap().1.clone()
}

/// The unsynced last frame `[from, until)` reached the disk in each
/// subset of its blocks of `block` bytes (the first block the one
/// holding `from`), the others not: opened, the log ends at `synced`, or
/// at `whole` when every block landed.
fn torn_opens_to_prefix(
    dir: &TestDir,
    intact: &[u8],
    span: (usize, usize),
    block: usize,
    (synced, whole): (u64, u64),
) {
    let (from, until) = span;
    let path = newest(dir);
    let first = from / block;
    let blocks = (until - 1) / block - first + 1;
    assert!((3..=10).contains(&blocks), "{blocks} blocks");
    for landed in 0u32..(1 << blocks) {
        let mut torn = intact.to_vec();
        for n in 0..blocks {
            if landed & (1 << n) == 0 {
                let lo = ((first + n) * block).max(from);
                let hi = ((first + n + 1) * block).min(until);
                torn[lo..hi].fill(0);
            }
        }
        fs::write(&path, &torn).unwrap();
        let opened = Wal::open(&dir.0, wal::SEGMENT_MIN);
        let (wal, replayed) = match opened {
            Ok(Some(found)) => found,
            Ok(None) => panic!("no WAL"),
            Err(e) => panic!("blocks landed {landed:#b} of {blocks}: {e}"),
        };
        let all = landed == (1 << blocks) - 1;
        let expected = if all { whole } else { synced };
        assert_eq!(replayed.last().0, expected, "blocks landed {landed:#b}");
        assert_eq!(
            wal.active.end as usize,
            if all { record::aligned(until) } else { from }
        );
        drop(wal);
        if !all {
            // Zeroed from the torn frame on.
            assert!(fs::read(&path).unwrap()[from..].iter().all(|&b| b == 0));
        }
    }
}

#[test]
fn a_torn_last_frame_opens_to_the_synced_prefix_whatever_sectors_landed() {
    let dir = TestDir::new("torn-sectors");
    let mut wal = Wal::create(&dir.0, start(), wal::SEGMENT_MIN).unwrap();
    wal_append(&mut wal, 1, 5, 90);
    // The last frame starts inside a sector and spans seven.
    let span = wal_append(&mut wal, 6, 8, 1000);
    assert_ne!(span.0 % 512, 0);
    drop(wal);
    let intact = fs::read(newest(&dir)).unwrap();
    torn_opens_to_prefix(&dir, &intact, span, 512, (5, 8));
}

#[test]
fn a_torn_last_frame_opens_to_the_synced_prefix_whatever_pages_landed() {
    let dir = TestDir::new("torn-pages");
    let mut wal = Wal::create(&dir.0, start(), wal::SEGMENT_MIN).unwrap();
    wal_append(&mut wal, 1, 5, 700);
    // The last frame's header sits in the last 16 bytes of a page.
    let at = wal.active.end as usize;
    let gap = 4096 - record::FRAME_HEADER_LEN - at;
    let mut filler = entries(6, 6, 1);
    filler[0].data.clear();
    let empty = record::encode_batch(&[OpRef::Entries(&filler)]).body_len();
    filler[0].data = vec![0x11; gap - record::FRAME_HEADER_LEN - empty];
    let mut frame = record::encode_batch(&[OpRef::Entries(&filler)]);
    let state = wal::Header {
        base_index: 5,
        ..start()
    };
    wal.append(&mut frame, &state).unwrap();
    assert_eq!(wal.active.end as usize, 4096 - record::FRAME_HEADER_LEN);
    let span = wal_append(&mut wal, 7, 8, 6000);
    drop(wal);
    assert_eq!(span.0, 4096 - record::FRAME_HEADER_LEN);
    let intact = fs::read(newest(&dir)).unwrap();
    torn_opens_to_prefix(&dir, &intact, span, 4096, (6, 8));
}

/// A torn last frame whose landed part holds a frame encoded for this
/// very segment and offset, but without the segment's salt (what a
/// client could put in an entry's data): still a torn tail. With the
/// salt, the same bytes are a frame, and the log refuses to open (so
/// the search does look at them).
#[test]
fn frames_inside_a_torn_frame_pass_only_with_the_segments_salt() {
    let dir = TestDir::new("torn-crafted");
    let mut wal = Wal::create(&dir.0, start(), wal::SEGMENT_MIN).unwrap();
    wal_append(&mut wal, 1, 5, 90);
    let salt = wal.active.salt;
    let seq = wal.active.seq;
    let (from, until) = wal_append(&mut wal, 6, 8, 1000);
    drop(wal);
    let path = newest(&dir);
    let intact = fs::read(&path).unwrap();
    let inside = record::aligned(from + 1200);
    let batch = record::encode_batch(&[OpRef::HardState(hard_state(1, 0))]);
    let body_len = batch.body_len();
    let mut forged = batch.clone();
    let frame_bytes = forged
        .place(record::Place {
            salt,
            seq,
            offset: inside as u64,
        })
        .to_vec();
    let body = frame_bytes[record::FRAME_HEADER_LEN..][..body_len].to_vec();
    for (salt, refused) in [(salt ^ 1, false), (0, false), (salt, true)] {
        let bytes = record::encode_frame(
            record::BATCH,
            &body,
            record::Place {
                salt,
                seq,
                offset: inside as u64,
            },
        );
        let mut torn = intact.clone();
        torn[from..from + 512].fill(0); // the frame's first sector lost
        torn[inside..inside + bytes.len()].copy_from_slice(&bytes);
        assert!(inside + bytes.len() < until);
        fs::write(&path, &torn).unwrap();
        match Wal::open(&dir.0, wal::SEGMENT_MIN) {
            Ok(Some((_, replayed))) => {
                assert!(!refused, "a frame with the segment's salt was ignored");
                assert_eq!(replayed.last().0, 5);
            }
            Err(StoreError::Corrupt(what)) => {
                assert!(refused, "a forged frame was taken for a synced one: {what}");
                assert!(what.contains("more written after"), "{what}");
            }
            other => panic!("{:?}", other.map(|o| o.is_some())),
        }
    }
}

/// Damage to a synced frame with more synced frames after it, in its
/// length, its body or a lost (zero) sector holding its header: refused,
/// and nothing is repaired.
#[test]
fn damage_to_a_synced_frame_before_others_is_refused_not_cut() {
    let dir = TestDir::new("synced-damage");
    let mut wal = Wal::create(&dir.0, start(), wal::SEGMENT_MIN).unwrap();
    wal_append(&mut wal, 1, 3, 100);
    let (from, until) = wal_append(&mut wal, 4, 6, 300);
    wal_append(&mut wal, 7, 9, 100);
    drop(wal);
    let path = newest(&dir);
    let intact = fs::read(&path).unwrap();
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let damages: Vec<(&str, Damage)> = vec![
        (
            "length top bit",
            Box::new(move |b: &mut Vec<u8>| b[from] ^= 0x80),
        ),
        (
            "length low bit",
            Box::new(move |b: &mut Vec<u8>| b[from + 3] ^= 0x01),
        ),
        ("kind", Box::new(move |b: &mut Vec<u8>| b[from + 4] ^= 0x02)),
        (
            "body",
            Box::new(move |b: &mut Vec<u8>| b[until - 20] ^= 0x10),
        ),
        (
            "header zeroed",
            Box::new(move |b: &mut Vec<u8>| b[from..from + 16].fill(0)),
        ),
        (
            "sector zeroed",
            Box::new(move |b: &mut Vec<u8>| {
                let s = from / 512 * 512 + 512;
                b[s..s + 512].fill(0);
            }),
        ),
    ];
    for (what, damage) in &damages {
        let mut bytes = intact.clone();
        damage(&mut bytes);
        fs::write(&path, &bytes).unwrap();
        match Wal::open(&dir.0, wal::SEGMENT_MIN) {
            Err(StoreError::Corrupt(why)) => assert!(why.contains("more written after"), "{why}"),
            other => panic!(
                "{what}: expected corruption, got {:?}",
                other.map(|o| o.is_some())
            ),
        }
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "{what}: the open changed the file"
        );
    }
}

/// A power cut tears the last write, and the sector it shares with the
/// synced frame before it comes back damaged (a disk that does not write
/// sectors atomically): the torn frame's header reached the disk, so the
/// damaged frame was synced and acknowledged. Refused, not dropped with
/// the torn one; nothing is repaired. The same torn write with the
/// frame before it intact opens to that frame.
#[test]
fn a_torn_write_after_a_damaged_synced_frame_is_refused_not_cut() {
    let dir = TestDir::new("torn-after-damage");
    let mut wal = Wal::create(&dir.0, start(), wal::SEGMENT_MIN).unwrap();
    wal_append(&mut wal, 1, 3, 100);
    let (_, synced_until) = wal_append(&mut wal, 4, 6, 300);
    let (from, until) = wal_append(&mut wal, 7, 9, 1000);
    drop(wal);
    let path = newest(&dir);
    let intact = fs::read(&path).unwrap();
    // The torn frame: only the block holding its header landed.
    let mut torn = intact.clone();
    let landed = (from / 512 + 1) * 512;
    assert!(landed < until && from + record::FRAME_HEADER_LEN <= landed);
    torn[landed..until].fill(0);
    fs::write(&path, &torn).unwrap();
    let (_, replayed) = Wal::open(&dir.0, wal::SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(replayed.last().0, 6, "the synced prefix opens");
    // The same torn write, and the synced frame's last bytes damaged.
    torn[synced_until - 3] ^= 0x20;
    fs::write(&path, &torn).unwrap();
    match Wal::open(&dir.0, wal::SEGMENT_MIN) {
        Err(StoreError::Corrupt(why)) => {
            assert!(why.contains("more written after"), "{why}");
            assert!(
                why.contains(&format!("a frame header at byte {from}")),
                "{why}"
            );
        }
        other => panic!(
            "a damaged acknowledged frame was taken for a torn one: {:?}",
            other.map(|o| o.map(|(_, r)| r.last()))
        ),
    }
    assert_eq!(fs::read(&path).unwrap(), torn, "the open changed the file");
}

/// The newest segment's header write was torn by the crash that hit its
/// creation: every byte after the header's own is zero, so it held
/// nothing and goes. One non-zero byte after the header region, and the
/// same file is refused.
#[test]
fn a_newest_segment_with_a_torn_header_goes_only_if_nothing_follows() {
    let dir = TestDir::new("torn-header");
    let mut wal = Wal::create(&dir.0, start(), wal::SEGMENT_MIN).unwrap();
    let mut next = 1;
    while wal.segment_count() < 2 {
        wal_append(&mut wal, next, next + 9, 300);
        next += 10;
    }
    let last = next - 1;
    // The header of segment 2 is intact; make a segment 3 being created.
    drop(wal);
    let third = dir.0.join("0000000000000003.wal");
    let header = record::encode_header(
        &wal::Header {
            seq: 3,
            base_index: last,
            ..start()
        },
        7,
    );
    let mut bytes = vec![0u8; 8192];
    bytes[..40].copy_from_slice(&header[..40]); // torn inside its header
    fs::write(&third, &bytes).unwrap();
    let mut with_data = bytes.clone();
    with_data[record::HEADER_FRAME_LEN + 100] = 1;
    fs::write(&third, &with_data).unwrap();
    match Wal::open(&dir.0, wal::SEGMENT_MIN) {
        Err(StoreError::Corrupt(what)) => assert!(what.contains("damaged header"), "{what}"),
        other => panic!("expected corruption, got {:?}", other.map(|o| o.is_some())),
    }
    assert!(third.exists());
    fs::write(&third, &bytes).unwrap();
    let (_, replayed) = Wal::open(&dir.0, wal::SEGMENT_MIN).unwrap().unwrap();
    assert_eq!(replayed.last().0, last);
    assert!(!third.exists());
}

// ---- frames too large to read back ----

fn write_version_1(dir: &TestDir, log: &[Entry], hard_state: HardState, map_mb: usize) {
    use crate::store::codec::*;
    use crate::store::{DATABASES, FORMAT_VERSION_LMDB_LOG, MAX_DBS};
    use lmdb::{DatabaseFlags, Environment, Transaction, WriteFlags};
    fs::create_dir_all(&dir.0).unwrap();
    let env = Environment::new()
        .set_max_dbs(MAX_DBS)
        .set_map_size(map_mb << 20)
        .open(&dir.0)
        .unwrap();
    let [meta, log_db, state] =
        DATABASES.map(|name| env.create_db(Some(name), DatabaseFlags::empty()).unwrap());
    let mut txn = env.begin_rw_txn().unwrap();
    let flags = WriteFlags::empty();
    let version: [u8; 8] = encode_u64s([FORMAT_VERSION_LMDB_LOG]);
    put_record(&mut txn, meta, KEY_VERSION, &[&version], flags).unwrap();
    let id = identity();
    let body: [u8; 24] = encode_u64s([id.cluster_id, id.node_id, id.incarnation]);
    put_record(&mut txn, meta, KEY_IDENTITY, &[&body], flags).unwrap();
    let hs = encode_hard_state(&hard_state);
    put_record(&mut txn, meta, KEY_HARD_STATE, &[&hs], flags).unwrap();
    let snapshot = snapshot_at(10, 1);
    let snapshot_meta = encode_snapshot_meta(&snapshot.meta);
    put_record(&mut txn, meta, KEY_SNAPSHOT_META, &[&snapshot_meta], flags).unwrap();
    put_record(&mut txn, meta, KEY_SNAPSHOT_DATA, &[&snapshot.data], flags).unwrap();
    let app: [u8; 16] = encode_u64s([0, 10]);
    put_record(&mut txn, state, KEY_APP, &[&app], flags).unwrap();
    for entry in log {
        put_entry(&mut txn, log_db, entry, WriteFlags::APPEND).unwrap();
    }
    txn.commit().unwrap();
}

/// The body lengths of every frame in the WAL of `dir`, oldest first.
fn frame_sizes(dir: &TestDir) -> Vec<usize> {
    let scan = wal::scan(&dir.0.join(WAL_DIR)).unwrap().unwrap();
    let mut sizes = Vec::new();
    for segment in &scan.segments {
        let bytes = fs::read(&segment.path).unwrap();
        let mut at = record::HEADER_FRAME_LEN;
        while (at as u64) < segment.end {
            let place = record::Place {
                salt: segment.salt,
                seq: segment.seq,
                offset: at as u64,
            };
            let record::Found::Frame { body, len, .. } = record::decode_frame(&bytes[at..], place)
            else {
                panic!("no frame at {at}");
            };
            sizes.push(body.len());
            at += len;
        }
    }
    sizes
}

/// A version 1 log of 40 MiB is upgraded into frames of at most 16 MiB
/// (one frame of it all was readable only below FRAME_MAX), which read
/// back as the log.
#[test]
fn a_large_version_1_log_is_upgraded_in_frames_of_at_most_16_mib() {
    let dir = TestDir::new("upgrade-large");
    let mut log = entries(11, 50, 1);
    for entry in &mut log {
        entry.data = vec![entry.index as u8; 1 << 20];
    }
    write_version_1(&dir, &log, hard_state(1, 45), 128);
    let store = Store::open(&dir.0, 128).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.entries, log);
    assert_eq!(loaded.hard_state, hard_state(1, 45));
    let sizes = frame_sizes(&dir);
    assert!(sizes.len() >= 3, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 16 << 20), "{sizes:?}");
    drop(store);
    // And it reopens (each frame's segment header continues the last).
    let store = Store::open(&dir.0, 128).unwrap();
    assert_eq!(store.load().unwrap().unwrap().entries.len(), 40);
}

/// A batch whose frame is over the cap is refused before anything is
/// written, a snapshot in it included; the store goes on.
#[test]
fn a_batch_over_the_frame_cap_is_refused_and_writes_nothing() {
    let dir = TestDir::new("frame-cap");
    let mut store = bootstrapped(&dir);
    append(&mut store, &entries(1, 5, 1), hard_state(1, 3)).unwrap();
    let before = store.load().unwrap().unwrap();
    let files = || {
        segments(&dir)
            .iter()
            .map(|p| fs::read(p).unwrap())
            .collect::<Vec<_>>()
    };
    let wal_before = files();
    store.live.as_mut().unwrap().wal.set_frame_max(4096);
    let mut big = entries(6, 6, 1);
    big[0].data = vec![1; 5000];
    let refused = append(&mut store, &big, hard_state(1, 5));
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    let snapshot = snapshot_at(20, 2);
    let mut after = entries(21, 21, 2);
    after[0].data = vec![2; 5000];
    let refused = store.persist(&Write {
        snapshot: Some(&snapshot),
        entries: &after,
        hard_state: Some(&hard_state(2, 20)),
        app: None,
    });
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    assert_eq!(store.load().unwrap().unwrap(), before);
    assert_eq!(files(), wal_before);
    // The WAL refuses such a frame too, whoever calls it.
    let live = store.live.as_mut().unwrap();
    let mut frame = record::encode_batch(&[OpRef::Entries(&big)]);
    let header = live.header();
    assert!(matches!(
        live.wal.append(&mut frame, &header),
        Err(StoreError::Invalid(_))
    ));
    append(&mut store, &entries(6, 7, 1), hard_state(1, 6)).unwrap();
    assert_eq!(store.load().unwrap().unwrap().entries.len(), 7);
}

/// A segment whose fdatasync fails at open is not trusted: the store
/// says why (Io, naming the file), repairs nothing, and opens once the
/// disk syncs again.
#[test]
fn a_segment_that_cannot_be_synced_at_open_is_refused() {
    let dir = TestDir::new("sync-at-open");
    let mut store = bootstrapped(&dir);
    append(&mut store, &entries(1, 5, 1), hard_state(1, 3)).unwrap();
    let before = store.load().unwrap().unwrap();
    drop(store);
    super::seams::fail_next_scan_sync();
    let store = Store::open(&dir.0, 16).unwrap();
    match store.load() {
        Err(StoreError::Io(what)) => {
            assert!(what.contains("syncing") && what.contains(".wal"), "{what}");
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    drop(store);
    let store = Store::open(&dir.0, 16).unwrap();
    assert_eq!(store.load().unwrap().unwrap(), before);
}

/// The WAL's directory is private (0700), as the data directory is,
/// whatever the umask.
#[test]
fn the_wal_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new("wal-mode");
    let _store = bootstrapped(&dir);
    let mode = fs::metadata(dir.0.join(WAL_DIR))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}
