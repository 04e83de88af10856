//! The store's tests: round trips, refusals, and the crash cases of the
//! WAL and LMDB together (a crash between any two steps of a snapshot's
//! store, an interrupted segment deletion, a torn tail), and the upgrade
//! of a version 1 directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::testkit::{
    SmallFs, TestDir, append, bootstrapped, entries, hard_state, identity, initial_snapshot,
};
use super::*;
use crate::raft::EntryKind;

fn indexes_and_terms(loaded: &Loaded) -> Vec<(u64, u64)> {
    loaded.entries.iter().map(|e| (e.index, e.term)).collect()
}

fn raw_put(store: &Store, db: Database, key: &[u8], value: &[u8]) {
    let mut txn = store.db.env.begin_rw_txn().unwrap();
    txn.put(db, &key, &value, WriteFlags::empty()).unwrap();
    txn.commit().unwrap();
}

fn raw_get(store: &Store, db: Database, key: &[u8]) -> Vec<u8> {
    let txn = store.db.env.begin_ro_txn().unwrap();
    txn.get(db, &key).unwrap().to_vec()
}

#[test]
fn a_fresh_directory_is_created_and_loads_as_none() {
    let dir = TestDir::new("fresh");
    let nested = dir.0.join("a/b");
    let store = Store::open(&nested, 1).unwrap();
    assert_eq!(store.load().unwrap(), None);
    assert!(nested.join("data.mdb").exists());
}

#[test]
fn bootstrap_persist_load_round_trip() {
    let dir = TestDir::new("round-trip");
    let mut store = bootstrapped(&dir);
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.identity, identity());
    assert_eq!(loaded.snapshot, initial_snapshot());
    assert_eq!(loaded.hard_state, HardState::default());
    assert_eq!(loaded.app, AppRecord::default());
    assert!(loaded.entries.is_empty());

    let mut batch = entries(1, 5, 1);
    batch[1].kind = EntryKind::Config;
    batch[2].kind = EntryKind::Noop;
    batch[2].data.clear();
    let app = AppRecord {
        high: 10_000,
        applied: 3,
    };
    store
        .persist(&Write {
            snapshot: None,
            entries: &batch,
            hard_state: Some(&hard_state(1, 4)),
            app: Some(app),
        })
        .unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.entries, batch);
    assert_eq!(loaded.hard_state, hard_state(1, 4));
    assert_eq!(loaded.app, app);

    // A batch with only a hard state keeps the log.
    store
        .persist(&Write {
            hard_state: Some(&hard_state(2, 5)),
            ..Write::default()
        })
        .unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.entries, batch);
    assert_eq!(loaded.hard_state, hard_state(2, 5));
}

#[test]
fn bootstrap_refuses_a_bootstrapped_store_and_bad_input() {
    let dir = TestDir::new("bootstrap-twice");
    let mut store = bootstrapped(&dir);
    let again = store.bootstrap(identity(), &initial_snapshot());
    assert!(matches!(again, Err(StoreError::Invalid(_))), "{again:?}");

    let other = TestDir::new("bootstrap-bad");
    let mut store = Store::open(&other.0, 1).unwrap();
    let zero = Identity {
        cluster_id: 1,
        node_id: 0,
        incarnation: 1,
    };
    assert!(matches!(
        store.bootstrap(zero, &initial_snapshot()),
        Err(StoreError::Invalid(_))
    ));
    let mut late = initial_snapshot();
    late.meta.index = 5;
    assert!(matches!(
        store.bootstrap(identity(), &late),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.load().unwrap(), None);
}

#[test]
fn truncation_overwrites_a_suffix() {
    let dir = TestDir::new("truncate");
    let mut store = bootstrapped(&dir);
    append(&mut store, &entries(1, 5, 1), hard_state(1, 2)).unwrap();
    append(&mut store, &entries(3, 4, 2), hard_state(2, 2)).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(
        indexes_and_terms(&loaded),
        vec![(1, 1), (2, 1), (3, 2), (4, 2)]
    );
    assert_eq!(loaded.entries[2].data, b"entry 3 of term 2");
    // Appending right after the end works too.
    append(&mut store, &entries(5, 6, 2), hard_state(2, 6)).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.entries.len(), 6);
    assert_eq!(loaded.entries.last().unwrap().index, 6);
}

#[test]
fn a_snapshot_replaces_the_old_one_and_clears_the_log() {
    let dir = TestDir::new("snapshot");
    let mut store = bootstrapped(&dir);
    append(&mut store, &entries(1, 5, 1), hard_state(1, 5)).unwrap();
    let mut snapshot = initial_snapshot();
    snapshot.meta.index = 20;
    snapshot.meta.term = 3;
    snapshot.data = vec![7; 100_000];
    let after = entries(21, 22, 3);
    store
        .persist(&Write {
            snapshot: Some(&snapshot),
            entries: &after,
            hard_state: Some(&hard_state(3, 20)),
            app: Some(AppRecord {
                high: 99,
                applied: 20,
            }),
        })
        .unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.snapshot, snapshot);
    assert_eq!(loaded.entries, after);
    assert_eq!(loaded.app.applied, 20);

    // An older snapshot is refused and changes nothing.
    let mut older = snapshot.clone();
    older.meta.index = 10;
    let refused = store.persist(&Write {
        snapshot: Some(&older),
        ..Write::default()
    });
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    assert_eq!(store.load().unwrap().unwrap(), loaded);
}

#[test]
fn compact_drops_the_prefix() {
    let dir = TestDir::new("compact");
    let mut store = bootstrapped(&dir);
    let mut batch = entries(1, 4, 1);
    batch.extend(entries(5, 10, 2));
    append(&mut store, &batch, hard_state(2, 8)).unwrap();
    let mut snapshot = initial_snapshot();
    snapshot.meta.index = 6;
    snapshot.meta.term = 2;
    snapshot.data = b"state at 6".to_vec();
    store.compact(&snapshot).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.snapshot, snapshot);
    assert_eq!(loaded.entries, batch[6..].to_vec());
    assert_eq!(store.usage().unwrap().log_entries, 4);

    for (index, term) in [(6, 2), (3, 1), (11, 2), (8, 1)] {
        snapshot.meta.index = index;
        snapshot.meta.term = term;
        let refused = store.compact(&snapshot);
        assert!(
            matches!(refused, Err(StoreError::Invalid(_))),
            "{index}: {refused:?}"
        );
    }
    // Compacting everything leaves an empty log that continues after it.
    snapshot.meta.index = 10;
    snapshot.meta.term = 2;
    store.compact(&snapshot).unwrap();
    assert!(store.load().unwrap().unwrap().entries.is_empty());
    append(&mut store, &entries(11, 11, 2), hard_state(2, 10)).unwrap();
    assert_eq!(store.load().unwrap().unwrap().entries.len(), 1);
}

#[test]
fn persist_refuses_inconsistent_batches_and_writes_nothing() {
    let dir = TestDir::new("invalid");
    let fresh = TestDir::new("invalid-fresh");
    let mut empty = Store::open(&fresh.0, 1).unwrap();
    assert!(matches!(
        append(&mut empty, &entries(1, 1, 1), hard_state(1, 0)),
        Err(StoreError::Invalid(_))
    ));

    let mut store = bootstrapped(&dir);
    append(&mut store, &entries(1, 3, 2), hard_state(2, 1)).unwrap();
    let before = store.load().unwrap().unwrap();
    let mut gapped = entries(4, 6, 2);
    gapped.remove(1);
    let mut falling = entries(4, 5, 2);
    falling[1].term = 1;
    let cases: Vec<(Vec<Entry>, HardState)> = vec![
        (gapped, hard_state(2, 1)),
        (falling, hard_state(2, 1)),
        (entries(0, 1, 2), hard_state(2, 1)),
        (entries(5, 6, 2), hard_state(2, 1)),
        (entries(4, 4, 1), hard_state(2, 1)),
        (entries(4, 4, 3), hard_state(2, 1)),
        (entries(4, 4, 2), hard_state(2, 5)),
        (Vec::new(), hard_state(2, 4)),
        (Vec::new(), hard_state(1, 1)),
    ];
    for (batch, hard_state) in cases {
        let refused = append(&mut store, &batch, hard_state);
        assert!(
            matches!(refused, Err(StoreError::Invalid(_))),
            "{batch:?} {refused:?}"
        );
    }
    let refused = store.persist(&Write {
        app: Some(AppRecord {
            high: 1,
            applied: 4,
        }),
        ..Write::default()
    });
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    assert_eq!(store.load().unwrap().unwrap(), before);
}

#[test]
fn an_identity_without_incarnation_still_loads_and_can_gain_one() {
    let dir = TestDir::new("old-identity");
    let mut store = bootstrapped(&dir);
    // The record as builds before incarnations wrote it: two u64s.
    let old: [u8; 16] = encode_u64s([0xC1, 1]);
    let mut txn = store.db.env.begin_rw_txn().unwrap();
    put_record(
        &mut txn,
        store.db.meta,
        KEY_IDENTITY,
        &[&old],
        WriteFlags::empty(),
    )
    .unwrap();
    txn.commit().unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.identity.incarnation, 0);
    assert_eq!(loaded.identity.node_id, 1);
    store.set_identity(identity()).unwrap();
    assert_eq!(store.load().unwrap().unwrap().identity, identity());
    let mut other = identity();
    other.node_id = 2;
    assert!(store.set_identity(other).is_err());
}

#[test]
fn a_removed_mark_survives_a_reopen() {
    let dir = TestDir::new("removed");
    let mut store = bootstrapped(&dir);
    assert!(!store.load().unwrap().unwrap().removed);
    store.mark_removed().unwrap();
    drop(store);
    let store = Store::open(&dir.0, 1).unwrap();
    assert!(store.load().unwrap().unwrap().removed);
}

#[test]
fn meta_records_are_checked() {
    let dir = TestDir::new("corrupt-meta");
    let store = bootstrapped(&dir);
    let mut value = raw_get(&store, store.db.meta, KEY_SNAPSHOT_META);
    value[0] ^= 1;
    raw_put(&store, store.db.meta, KEY_SNAPSHOT_META, &value);
    let error = store.load().unwrap_err();
    assert!(
        matches!(&error, StoreError::Corrupt(w) if w.contains("snapshot meta")),
        "{error}"
    );

    let mut txn = store.db.env.begin_rw_txn().unwrap();
    txn.del(store.db.meta, &KEY_IDENTITY, None).unwrap();
    txn.commit().unwrap();
    assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));

    // Data without a version record is not a fresh store.
    let mut txn = store.db.env.begin_rw_txn().unwrap();
    txn.del(store.db.meta, &KEY_VERSION, None).unwrap();
    txn.commit().unwrap();
    let error = store.load().unwrap_err();
    assert!(
        matches!(&error, StoreError::Corrupt(w) if w.contains("version")),
        "{error}"
    );
}

#[test]
fn an_unknown_version_is_detected() {
    let dir = TestDir::new("version");
    let store = bootstrapped(&dir);
    let mut txn = store.db.env.begin_rw_txn().unwrap();
    put_record(
        &mut txn,
        store.db.meta,
        KEY_VERSION,
        &[&99u64.to_be_bytes()],
        WriteFlags::empty(),
    )
    .unwrap();
    txn.commit().unwrap();
    assert_eq!(store.load(), Err(StoreError::UnknownVersion(99)));
    raw_put(&store, store.db.meta, KEY_VERSION, b"garbage");
    assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));
}

#[test]
fn reopening_after_drop_keeps_everything() {
    let dir = TestDir::new("reopen");
    let mut store = bootstrapped(&dir);
    append(&mut store, &entries(1, 50, 1), hard_state(1, 40)).unwrap();
    let mut snapshot = initial_snapshot();
    snapshot.meta.index = 30;
    snapshot.meta.term = 1;
    snapshot.data = b"thirty".to_vec();
    store.compact(&snapshot).unwrap();
    store
        .persist(&Write {
            app: Some(AppRecord {
                high: 5,
                applied: 40,
            }),
            ..Write::default()
        })
        .unwrap();
    let before = store.load().unwrap().unwrap();
    drop(store);
    let store = Store::open(&dir.0, 16).unwrap();
    assert_eq!(store.load().unwrap().unwrap(), before);
    assert_eq!(before.entries.first().unwrap().index, 31);
}

#[test]
fn a_wipe_empties_a_stopped_store_and_is_refused_while_it_is_open() {
    let dir = TestDir::new("wipe");
    assert_eq!(Store::wipe(&dir.0, 1).unwrap(), Wiped::Empty);
    let mut store = Store::open(&dir.0, 1).unwrap();
    let identity = Identity {
        cluster_id: 9,
        node_id: 2,
        incarnation: 5,
    };
    store.bootstrap(identity, &Snapshot::default()).unwrap();
    assert!(matches!(Store::wipe(&dir.0, 1), Err(StoreError::Locked(_))));
    drop(store);
    assert_eq!(Store::wipe(&dir.0, 1).unwrap(), Wiped::Identity(identity));
    let store = Store::open(&dir.0, 1).unwrap();
    assert!(store.load().unwrap().is_none());
    drop(store);
    assert_eq!(Store::drop_dir(&dir.0, 1).unwrap(), Wiped::Empty);
    assert!(!dir.0.exists());
    fs::create_dir_all(&dir.0).unwrap();
    fs::write(dir.0.join("data.mdb"), b"not lmdb").unwrap();
    assert!(matches!(
        Store::wipe(&dir.0, 1),
        Err(StoreError::Corrupt(_))
    ));
    assert!(dir.0.join("data.mdb").exists());
}

/// A file that is not ours in `wal/` stops a wipe with an error naming
/// the directory, and stays; once it is moved away, a wipe finishes.
#[test]
fn a_wipe_refuses_a_foreign_file_in_the_wal_directory_and_removes_nothing() {
    let dir = TestDir::new("wipe-foreign");
    drop(bootstrapped(&dir));
    let foreign = dir.0.join(WAL_DIR).join("notes.txt");
    fs::write(&foreign, b"the operator's").unwrap();
    match Store::wipe(&dir.0, 16) {
        Err(StoreError::Io(what)) => assert!(
            what.contains("notes.txt")
                && what.contains(WAL_DIR)
                && what.contains("nothing was wiped"),
            "{what}"
        ),
        other => panic!("expected a refusal naming the foreign file, got {other:?}"),
    }
    assert_eq!(fs::read(&foreign).unwrap(), b"the operator's");
    // Nothing was removed: the store still opens and loads as it was.
    assert!(Store::open(&dir.0, 16).unwrap().load().unwrap().is_some());
    fs::remove_file(&foreign).unwrap();
    assert!(matches!(Store::wipe(&dir.0, 16), Ok(Wiped::Identity(_))));
    assert!(!dir.0.join(WAL_DIR).exists());
    assert!(!dir.0.join("data.mdb").exists());
}

/// A directory with a segment's name is not a segment either: a wipe
/// refuses it before it removes anything (a segment removed before the
/// directory stopped it would leave a store that no longer opens).
#[test]
fn a_wipe_refuses_a_directory_named_like_a_segment_and_removes_nothing() {
    let dir = TestDir::new("wipe-dir-segment");
    drop(bootstrapped(&dir));
    let odd = dir.0.join(WAL_DIR).join("ffffffffffffffff.wal");
    fs::create_dir(&odd).unwrap();
    match Store::wipe(&dir.0, 16) {
        Err(StoreError::Io(what)) => assert!(
            what.contains("ffffffffffffffff.wal") && what.contains("nothing was wiped"),
            "{what}"
        ),
        other => panic!("expected a refusal naming the directory, got {other:?}"),
    }
    assert!(odd.is_dir());
    assert!(dir.0.join("data.mdb").exists());
    fs::remove_dir(&odd).unwrap();
    assert!(Store::open(&dir.0, 16).unwrap().load().unwrap().is_some());
    assert!(matches!(Store::wipe(&dir.0, 16), Ok(Wiped::Identity(_))));
}

/// The disk reserve: three quarters allocated past the end of
/// `data.mdb` (where the compaction that frees WAL segments writes), the
/// last quarter left to the WAL (topped up on a thread of its own).
#[test]
fn three_quarters_of_the_disk_reserve_are_allocated_past_the_end_of_lmdbs_file() {
    use std::os::unix::fs::MetadataExt;
    let dir = TestDir::new("reserve");
    let mut store = bootstrapped(&dir);
    let data = dir.0.join("data.mdb");
    let allocated = || fs::metadata(&data).unwrap().blocks() * 512;
    let (len, before) = (fs::metadata(&data).unwrap().len(), allocated());
    store.keep_disk_reserve(4 << 20);
    let grown = allocated() - before;
    assert_eq!(
        fs::metadata(&data).unwrap().len(),
        len,
        "the file's length stays"
    );
    assert!(
        ((3 << 20)..(3 << 20) + (64 << 10)).contains(&grown),
        "{grown} bytes allocated for a reserve of 4 MiB"
    );
}

/// The map holds LMDB's pages and the WAL's bytes together: beside a
/// 6 MiB snapshot in LMDB, an 11 MiB batch no longer fits a 16 MiB map,
/// though the WAL alone has room for it.
#[test]
fn the_map_counts_lmdbs_pages_beside_the_wals_bytes() {
    let dir = TestDir::new("map-lmdb");
    let mut store = bootstrapped(&dir);
    append(&mut store, &entries(1, 10, 1), hard_state(1, 10)).unwrap();
    let mut snapshot = snapshot_at(10, 1);
    snapshot.data = vec![9; 6 << 20];
    store.compact(&snapshot).unwrap();
    let usage = store.usage().unwrap();
    let lmdb = usage.used_bytes - usage.wal_bytes;
    assert!((6 << 20..8 << 20).contains(&lmdb), "{usage:?}");
    assert!(usage.wal_bytes < 1 << 20, "{usage:?}");
    let mut big = entries(11, 11, 1);
    big[0].data = vec![1; 11 << 20];
    assert_eq!(
        append(&mut store, &big, hard_state(1, 10)),
        Err(StoreError::MapFull)
    );
    big[0].data = vec![1; 7 << 20];
    append(&mut store, &big, hard_state(1, 10)).unwrap();
}

/// LMDB reports a write cut short as EIO: that is a full disk (the
/// transaction rolled back, 507) only when the file system is within
/// 1 MiB of full; otherwise the disk is failing and the error says so.
#[test]
fn an_eio_from_a_commit_is_a_full_disk_only_on_a_nearly_full_file_system() {
    const EIO: i32 = 5;
    let dir = TestDir::new("commit-eio");
    let store = bootstrapped(&dir);
    let roomy = store.db.commit_error(lmdb::Error::Other(EIO));
    assert!(matches!(roomy, StoreError::Lmdb(_)), "{roomy:?}");
    drop(store);

    let Some(small) = SmallFs::mount(dir.0.join("small"), 4) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and can mount a tmpfs"
        );
        eprintln!("cannot mount a tmpfs (not root?): a nearly full file system not tested");
        return;
    };
    let mut store = Store::open(&small.0.join("data"), 16).unwrap();
    store.bootstrap(identity(), &initial_snapshot()).unwrap();
    let free = files::free_bytes(&small.0).unwrap();
    fs::write(
        small.0.join("filler"),
        vec![0u8; (free - (512 << 10)) as usize],
    )
    .unwrap();
    let free = files::free_bytes(&small.0).unwrap();
    assert!(free < 1 << 20 && free > 0, "{free} bytes free");
    let full = store.db.commit_error(lmdb::Error::Other(EIO));
    assert_eq!(full, StoreError::NoSpace);
    // Only EIO: another error is what it is, full disk or not.
    let other = store.db.commit_error(lmdb::Error::Other(13));
    assert!(matches!(other, StoreError::Lmdb(_)), "{other:?}");
    drop(store);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = TestDir::new("locked");
    let _store = Store::open(&dir.0, 1).unwrap();
    let second = Store::open(&dir.0, 1);
    assert!(
        matches!(second, Err(StoreError::Locked(_))),
        "{:?}",
        second.err()
    );
}

#[test]
fn bad_map_sizes_and_a_file_as_directory_are_refused() {
    let dir = TestDir::new("bad-open");
    assert!(matches!(
        Store::open(&dir.0, 0),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        Store::open(&dir.0, MAP_SIZE_MB_MAX + 1),
        Err(StoreError::Invalid(_))
    ));
    fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("plain-file");
    fs::write(&file, b"not a directory").unwrap();
    assert!(matches!(Store::open(&file, 1), Err(StoreError::Io(_))));
}

#[test]
fn garbage_in_data_mdb_is_an_error_and_left_untouched() {
    for (name, garbage) in [("short", vec![0xAB; 100]), ("long", vec![0x5A; 64 * 1024])] {
        let dir = TestDir::new(name);
        fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("data.mdb");
        fs::write(&path, &garbage).unwrap();
        let opened = Store::open(&dir.0, 1);
        assert!(
            matches!(opened, Err(StoreError::Corrupt(_) | StoreError::Lmdb(_))),
            "{name}: {:?}",
            opened.err()
        );
        assert_eq!(fs::read(&path).unwrap(), garbage);
    }
}

#[test]
fn a_foreign_lmdb_environment_is_refused_and_left_untouched() {
    let dir = TestDir::new("foreign");
    fs::create_dir_all(&dir.0).unwrap();
    {
        let env = Environment::new().set_max_dbs(2).open(&dir.0).unwrap();
        let db = env
            .create_db(Some("users"), DatabaseFlags::empty())
            .unwrap();
        let mut txn = env.begin_rw_txn().unwrap();
        txn.put(db, b"alice", b"1", WriteFlags::empty()).unwrap();
        txn.commit().unwrap();
    }
    let before = fs::read(dir.0.join("data.mdb")).unwrap();
    let opened = Store::open(&dir.0, 1);
    assert!(
        matches!(&opened, Err(StoreError::Corrupt(w)) if w.contains("users")),
        "{:?}",
        opened.err()
    );
    assert_eq!(fs::read(dir.0.join("data.mdb")).unwrap(), before);
}

#[test]
fn a_store_that_lost_a_database_is_refused() {
    let dir = TestDir::new("lost-db");
    fs::create_dir_all(&dir.0).unwrap();
    {
        let env = Environment::new().set_max_dbs(2).open(&dir.0).unwrap();
        let meta = env.create_db(Some("meta"), DatabaseFlags::empty()).unwrap();
        let mut txn = env.begin_rw_txn().unwrap();
        txn.put(meta, b"version", b"whatever", WriteFlags::empty())
            .unwrap();
        txn.commit().unwrap();
    }
    let opened = Store::open(&dir.0, 1);
    assert!(
        matches!(&opened, Err(StoreError::Corrupt(w)) if w.contains("missing")),
        "{:?}",
        opened.err()
    );

    // An empty `meta` alone is a first open that stopped half-way.
    let half = TestDir::new("half-created");
    fs::create_dir_all(&half.0).unwrap();
    {
        let env = Environment::new().set_max_dbs(2).open(&half.0).unwrap();
        env.create_db(Some("meta"), DatabaseFlags::empty()).unwrap();
    }
    let store = Store::open(&half.0, 1).unwrap();
    assert_eq!(store.load().unwrap(), None);
}

#[test]
fn a_full_map_rolls_back_and_the_store_stays_usable() {
    let dir = TestDir::new("map-full");
    let mut store = Store::open(&dir.0, 1).unwrap();
    store.bootstrap(identity(), &initial_snapshot()).unwrap();
    let mut next = 1;
    let mut acknowledged = 0;
    let full = loop {
        let mut batch = entries(next, next + 99, 1);
        for entry in &mut batch {
            entry.data = vec![0x42; 200];
        }
        match append(&mut store, &batch, hard_state(1, next - 1)) {
            Ok(()) => {
                acknowledged = next + 99;
                next += 100;
            }
            Err(error) => break error,
        }
        assert!(next < 100_000, "a 1 MB map never filled up");
    };
    assert_eq!(full, StoreError::MapFull);
    assert!(acknowledged > 0);
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.entries.len() as u64, acknowledged);
    assert_eq!(loaded.entries.last().unwrap().index, acknowledged);
    assert!(loaded.entries.iter().all(|e| e.data == vec![0x42; 200]));
    let usage = store.usage().unwrap();
    assert!(usage.used_bytes > usage.map_size_bytes / 2, "{usage:?}");

    // Compaction frees room, and writing goes on where it stopped.
    let mut snapshot = initial_snapshot();
    snapshot.meta.index = acknowledged - 10;
    snapshot.meta.term = 1;
    store.compact(&snapshot).unwrap();
    append(
        &mut store,
        &entries(acknowledged + 1, acknowledged + 100, 1),
        hard_state(1, acknowledged),
    )
    .unwrap();
    append(
        &mut store,
        &entries(acknowledged + 101, acknowledged + 200, 1),
        hard_state(1, acknowledged),
    )
    .unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.entries.len(), 210);
    assert_eq!(loaded.entries.last().unwrap().index, acknowledged + 200);
}

#[test]
fn usage_reports_the_map() {
    let dir = TestDir::new("usage");
    let mut store = bootstrapped(&dir);
    let empty = store.usage().unwrap();
    assert_eq!(empty.map_size_bytes, 16 << 20);
    assert_eq!(
        empty.used_bytes + empty.available_bytes,
        empty.map_size_bytes
    );
    let mut batch = entries(1, 1000, 1);
    for entry in &mut batch {
        entry.data = vec![1; 500];
    }
    append(&mut store, &batch, hard_state(1, 0)).unwrap();
    let used = store.usage().unwrap();
    assert_eq!(used.log_entries, 1000);
    assert!(
        used.used_bytes >= empty.used_bytes + 500 * 1000,
        "{empty:?} {used:?}"
    );
}

/// Exercises the hot path at a realistic size; prints, asserts no time.
#[test]
fn many_small_entries_per_persist() {
    let dir = TestDir::new("bulk");
    let mut store = bootstrapped(&dir);
    let started = std::time::Instant::now();
    let batches = 20;
    let per_batch = 2_000;
    for batch_number in 0..batches {
        let first = batch_number * per_batch + 1;
        let batch = entries(first, first + per_batch - 1, 1);
        append(&mut store, &batch, hard_state(1, first - 1)).unwrap();
    }
    let written = started.elapsed();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.entries.len() as u64, batches * per_batch);
    eprintln!(
        "store bulk: {} entries in {batches} persists: {written:?}; load {:?}",
        batches * per_batch,
        started.elapsed() - written
    );
}

fn segments(dir: &TestDir) -> Vec<PathBuf> {
    wal::list_segments(&dir.0.join(WAL_DIR))
        .unwrap()
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

fn snapshot_at(index: u64, term: u64) -> Snapshot {
    let mut snapshot = initial_snapshot();
    snapshot.meta.index = index;
    snapshot.meta.term = term;
    snapshot.data = format!("state at {index}").into_bytes();
    snapshot
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

#[test]
fn a_crash_after_a_leaders_snapshot_is_stored_resets_the_log_to_it() {
    let dir = TestDir::new("crash-install");
    let mut store = bootstrapped(&dir);
    append(&mut store, &entries(1, 5, 1), hard_state(1, 3)).unwrap();
    // `persist` of a snapshot from the leader of term 3 up to its LMDB
    // commit: the new term first, then the snapshot; then the power cut.
    store
        .persist(&Write {
            hard_state: Some(&HardState {
                term: 3,
                vote: 2,
                commit: 3,
            }),
            ..Write::default()
        })
        .unwrap();
    let snapshot = snapshot_at(20, 3);
    store.snapshot_store().put(&snapshot).unwrap();
    drop(store);
    let mut store = Store::open(&dir.0, 16).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.snapshot, snapshot);
    assert!(loaded.entries.is_empty(), "the old log does not follow it");
    assert_eq!(loaded.hard_state.term, 3);
    // The WAL was reset to it: the log goes on after the snapshot.
    append(&mut store, &entries(21, 22, 3), hard_state(3, 21)).unwrap();
    drop(store);
    let store = Store::open(&dir.0, 16).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.entries, entries(21, 22, 3));
}

#[test]
fn a_failed_wal_write_after_a_snapshot_store_keeps_the_store_consistent() {
    let dir = TestDir::new("install-then-full");
    let mut store = bootstrapped(&dir);
    append(&mut store, &entries(1, 5, 1), hard_state(1, 3)).unwrap();
    // The leader is of term 2: the term reaches the WAL before the snapshot.
    let snapshot = snapshot_at(20, 2);
    // The snapshot is stored, then the WAL write fails: the next batch
    // still starts after the snapshot.
    store.fail_wal_after_snapshot = true;
    let after = entries(21, 21, 2);
    let refused = store.persist(&Write {
        snapshot: Some(&snapshot),
        entries: &after,
        hard_state: Some(&hard_state(2, 20)),
        app: None,
    });
    assert_eq!(refused, Err(StoreError::NoSpace));
    // Reloaded now, the disk says the log restarts at the snapshot.
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.snapshot, snapshot);
    assert!(loaded.entries.is_empty());
    append(&mut store, &after, hard_state(2, 20)).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.snapshot.meta.index, 20);
    assert_eq!(loaded.entries, after);
    drop(store);
    let store = Store::open(&dir.0, 16).unwrap();
    assert_eq!(store.load().unwrap().unwrap().entries, after);
}

#[test]
fn a_crash_between_the_wal_and_a_compactions_snapshot_loses_nothing() {
    let dir = TestDir::new("crash-compaction");
    let store = many_segments(&dir);
    let before = store.load().unwrap().unwrap();
    let snapshot = snapshot_at(900, 1);
    // Crash after the check, before the snapshot's store.
    store.check_compaction(&snapshot.meta).unwrap();
    drop(store);
    let store = Store::open(&dir.0, 1).unwrap();
    assert_eq!(store.load().unwrap().unwrap(), before);
    // Crash after the store, before the deletion: the segments go at
    // the next open, the log after the snapshot stays.
    let count = segments(&dir).len();
    store.snapshot_store().put(&snapshot).unwrap();
    drop(store);
    let store = Store::open(&dir.0, 1).unwrap();
    assert!(segments(&dir).len() < count);
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.snapshot, snapshot);
    assert_eq!(loaded.entries[..], before.entries[900..]);
    assert_eq!(loaded.hard_state, before.hard_state);
}

#[test]
fn a_crash_during_segment_deletion_leaves_a_usable_store() {
    let dir = TestDir::new("crash-deletion");
    let mut store = many_segments(&dir);
    let before = store.load().unwrap().unwrap();
    let saved: Vec<(PathBuf, Vec<u8>)> = segments(&dir)
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let snapshot = snapshot_at(900, 1);
    store.compact(&snapshot).unwrap();
    let kept = segments(&dir);
    assert!(kept.len() < saved.len());
    drop(store);
    let deleted: Vec<&(PathBuf, Vec<u8>)> =
        saved.iter().filter(|(p, _)| !kept.contains(p)).collect();
    // Only the oldest unlink reached the disk, or only the newest (a gap).
    for restore in [&deleted[1..], &deleted[..deleted.len() - 1]] {
        for (path, bytes) in restore {
            fs::write(path, bytes).unwrap();
        }
        let store = Store::open(&dir.0, 1).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.snapshot, snapshot);
        assert_eq!(loaded.entries[..], before.entries[900..]);
        assert_eq!(segments(&dir), kept, "the leftovers are deleted");
    }
}

#[test]
fn a_snapshot_older_than_the_wal_is_refused_clearly() {
    let dir = TestDir::new("old-snapshot");
    let mut store = many_segments(&dir);
    store.compact(&snapshot_at(900, 1)).unwrap();
    // Never done by the store: an older snapshot over the one the
    // segment deletion relied on.
    store.snapshot_store().put(&snapshot_at(10, 1)).unwrap();
    drop(store);
    let store = Store::open(&dir.0, 1).unwrap();
    match store.load() {
        Err(StoreError::Corrupt(what)) => assert!(what.contains("missing"), "{what}"),
        other => panic!("expected corruption, got {other:?}"),
    }
    drop(store);
    assert!(matches!(Store::wipe(&dir.0, 1), Ok(Wiped::Unreadable(_))));
}

#[test]
fn a_torn_last_batch_loads_as_the_acknowledged_prefix() {
    let dir = TestDir::new("torn-store");
    let mut store = bootstrapped(&dir);
    append(&mut store, &entries(1, 5, 1), hard_state(1, 3)).unwrap();
    let acknowledged = store.load().unwrap().unwrap();
    let path = segments(&dir).pop().unwrap();
    let start = fs::read(&path)
        .unwrap()
        .iter()
        .rposition(|&b| b != 0)
        .unwrap()
        + 1;
    append(&mut store, &entries(6, 9, 2), hard_state(2, 8)).unwrap();
    drop(store);
    let intact = fs::read(&path).unwrap();
    let end = intact.iter().rposition(|&b| b != 0).unwrap() + 1;
    for cut in (start..end).step_by(3) {
        let mut torn = intact.clone();
        for byte in &mut torn[cut..end] {
            *byte = 0;
        }
        fs::write(&path, &torn).unwrap();
        let store = Store::open(&dir.0, 16).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded, acknowledged, "cut at {cut}");
    }
}

/// The layout of format version 1 (the log, hard state and application
/// record in LMDB), as builds before the WAL wrote it.
fn write_version_1(dir: &TestDir, log: &[Entry], hard_state: HardState, app: AppRecord) {
    fs::create_dir_all(&dir.0).unwrap();
    let env = Environment::new()
        .set_max_dbs(MAX_DBS)
        .set_map_size(256 << 20)
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
    let app: [u8; 16] = encode_u64s([app.high, app.applied]);
    put_record(&mut txn, state, KEY_APP, &[&app], flags).unwrap();
    for entry in log {
        put_entry(&mut txn, log_db, entry, WriteFlags::APPEND).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn a_version_1_directory_is_upgraded_in_place() {
    let dir = TestDir::new("upgrade");
    let log = entries(11, 40, 2);
    let app = AppRecord {
        high: 777,
        applied: 30,
    };
    write_version_1(&dir, &log, hard_state(2, 35), app);
    // An upgrade that stopped half-way left a WAL behind: it is replaced.
    fs::create_dir_all(dir.0.join(WAL_DIR)).unwrap();
    fs::write(dir.0.join(WAL_DIR).join("0000000000000001.wal"), b"junk").unwrap();
    let mut store = Store::open(&dir.0, 16).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.identity, identity());
    assert_eq!(loaded.snapshot, snapshot_at(10, 1));
    assert_eq!(loaded.entries, log);
    assert_eq!(loaded.hard_state, hard_state(2, 35));
    assert_eq!(loaded.app, app);
    {
        let txn = store.db.env.begin_ro_txn().unwrap();
        assert_eq!(store.db.version(&txn).unwrap(), Some(FORMAT_VERSION));
        assert_eq!(txn.stat(store.db.log).unwrap().entries(), 0);
        assert_eq!(txn.stat(store.db.state).unwrap().entries(), 0);
        assert!(
            get_record(&txn, store.db.meta, KEY_HARD_STATE, "hs")
                .unwrap()
                .is_none()
        );
    }
    // It goes on like any store, and stays upgraded.
    append(&mut store, &entries(41, 42, 2), hard_state(2, 40)).unwrap();
    drop(store);
    let store = Store::open(&dir.0, 16).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.entries.len(), 32);
    assert_eq!(loaded.entries.last().unwrap().index, 42);
}

/// The upgrade packs the old log into as few frames as fit: 30 small
/// entries are one frame, the same bytes a WAL holds after one append of
/// them (a frame per entry would be an append and a sync per entry on a
/// large log).
#[test]
fn an_upgrade_writes_the_log_in_as_few_frames_as_fit() {
    let dir = TestDir::new("upgrade-frames");
    let log = entries(11, 40, 2);
    let app = AppRecord {
        high: 777,
        applied: 30,
    };
    write_version_1(&dir, &log, hard_state(2, 35), app);
    let store = Store::open(&dir.0, 16).unwrap();
    assert_eq!(store.load().unwrap().unwrap().entries, log);
    let upgraded = store.live.as_ref().unwrap().wal.bytes();

    let reference = TestDir::new("upgrade-frames-reference");
    let header = Header {
        seq: 1,
        base_index: 10,
        base_term: 1,
        hard_state: hard_state(2, 35),
        app,
    };
    let mut wal = Wal::create(&reference.0, header, store.segment_capacity()).unwrap();
    let mut frame = wal::record::encode_batch(&[OpRef::Entries(&log)]);
    wal.append(&mut frame, &header).unwrap();
    assert_eq!(upgraded, wal.bytes());
}

/// Upgrades a version 1 directory holding `log` and returns its WAL's
/// bytes, beside those of a WAL holding the same log in one append per
/// group of `frames`.
fn upgraded_and_reference_bytes(name: &str, log: &[Entry], frames: &[&[Entry]]) -> (u64, u64) {
    let dir = TestDir::new(name);
    let app = AppRecord::default();
    let last = log.last().unwrap();
    write_version_1(&dir, log, hard_state(last.term, 10), app);
    let store = Store::open(&dir.0, 256).unwrap();
    assert_eq!(store.load().unwrap().unwrap().entries, log);
    let upgraded = store.live.as_ref().unwrap().wal.bytes();

    let reference = TestDir::new(&format!("{name}-reference"));
    let header = Header {
        seq: 1,
        base_index: 10,
        base_term: 1,
        hard_state: hard_state(last.term, 10),
        app,
    };
    let mut wal = Wal::create(&reference.0, header, store.segment_capacity()).unwrap();
    for group in frames {
        let mut frame = wal::record::encode_batch(&[OpRef::Entries(group)]);
        wal.append(&mut frame, &header).unwrap();
    }
    (upgraded, wal.bytes())
}

/// An entry of `len` bytes in all (21 bytes of index, term, kind and
/// length, then its data), as the upgrade counts it.
fn entry_of_size(index: u64, len: usize) -> Entry {
    Entry {
        term: 2,
        index,
        kind: EntryKind::Normal,
        data: vec![7; len - 21],
    }
}

/// Frames of the upgrade hold up to UPGRADE_FRAME bytes, exactly that
/// included; an entry larger than that on its own still gets a frame.
#[test]
fn an_upgrade_frame_holds_exactly_up_to_its_limit_and_a_larger_entry_alone() {
    // 16 bytes of batch header and two entries: exactly the limit.
    let half = (UPGRADE_FRAME - 16) / 2;
    let log = [
        entry_of_size(11, half),
        entry_of_size(12, UPGRADE_FRAME - 16 - half),
    ];
    let (upgraded, reference) = upgraded_and_reference_bytes("upgrade-exact", &log, &[&log]);
    assert_eq!(upgraded, reference, "two entries filling one frame exactly");

    let log = [entry_of_size(11, UPGRADE_FRAME), entry_of_size(12, 100)];
    let (upgraded, reference) =
        upgraded_and_reference_bytes("upgrade-large", &log, &[&log[..1], &log[1..]]);
    assert_eq!(
        upgraded, reference,
        "an entry over the limit, then a small one"
    );
}

#[test]
fn a_damaged_version_1_log_is_refused_and_not_upgraded() {
    let dir = TestDir::new("upgrade-bad");
    let mut log = entries(11, 20, 2);
    log.remove(3);
    write_version_1(&dir, &log, hard_state(2, 12), AppRecord::default());
    let store = Store::open(&dir.0, 16).unwrap();
    match store.load() {
        Err(StoreError::Corrupt(what)) => assert!(what.contains("log entry 15"), "{what}"),
        other => panic!("expected corruption, got {other:?}"),
    }
    let txn = store.db.env.begin_ro_txn().unwrap();
    assert_eq!(store.db.version(&txn).unwrap(), Some(1));
}

/// Median, mean and 99th percentile of `samples`, in microseconds.
fn summary(samples: &mut [u128]) -> (u128, u128, u128) {
    samples.sort_unstable();
    let mean = samples.iter().sum::<u128>() / samples.len().max(1) as u128;
    let at = |per_cent: usize| samples[(samples.len() * per_cent / 100).min(samples.len() - 1)];
    (at(50), mean, at(99))
}

/// The persist time per batch against the fsync floor, in the same
/// directory, interleaved round by round so that a busy machine slows
/// all three alike: prints, asserts no time (`cargo test --release --lib
/// persist_time -- --ignored --nocapture`; `TICKETD_MEASURE_DIR` picks
/// the file system, the system temp dir by default).
#[test]
#[ignore]
fn persist_time_against_the_fsync_floor() {
    use std::os::unix::fs::FileExt;
    use std::time::Instant;
    const ROUNDS: usize = 3000;
    let base =
        std::env::var_os("TICKETD_MEASURE_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = TestDir(base.join(format!("ticketd-measure-{}", std::process::id())));
    fs::create_dir_all(&dir.0).unwrap();

    // The floor: 4 KiB appends with fdatasync to a preallocated file.
    let path = dir.0.join("floor");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.write_all_at(&vec![0u8; ROUNDS * 4096 + 4096], 0)
        .unwrap();
    file.sync_all().unwrap();
    let block = vec![0x5a_u8; 4096];

    // The store: batches of 20 entries of 180 bytes (about 4 KiB), each
    // with a hard state and an application record, as the writer sends.
    let store_dir = TestDir(dir.0.join("store"));
    let mut store = Store::open(&store_dir.0, 1024).unwrap();
    store.bootstrap(identity(), &initial_snapshot()).unwrap();

    // The path this replaced: one LMDB commit per batch (data, then the
    // meta page: two syncs).
    let lmdb_dir = dir.0.join("lmdb");
    fs::create_dir_all(&lmdb_dir).unwrap();
    let env = Environment::new()
        .set_map_size(1 << 30)
        .open(&lmdb_dir)
        .unwrap();
    let db = env.open_db(None).unwrap();

    let mut floor = Vec::with_capacity(ROUNDS);
    let mut persist = Vec::with_capacity(ROUNDS);
    let mut lmdb = Vec::with_capacity(ROUNDS);
    for n in 0..ROUNDS as u64 {
        let started = Instant::now();
        file.write_all_at(&block, n * 4096).unwrap();
        file.sync_data().unwrap();
        floor.push(started.elapsed().as_micros());

        let first = n * 20 + 1;
        let mut batch = entries(first, first + 19, 1);
        for entry in &mut batch {
            entry.data = vec![7; 180];
        }
        let hs = hard_state(1, first - 1);
        let started = Instant::now();
        store
            .persist(&Write {
                snapshot: None,
                entries: &batch,
                hard_state: Some(&hs),
                app: Some(AppRecord {
                    high: n,
                    applied: first - 1,
                }),
            })
            .unwrap();
        persist.push(started.elapsed().as_micros());

        let started = Instant::now();
        let mut txn = env.begin_rw_txn().unwrap();
        txn.put(db, &n.to_be_bytes(), &block, WriteFlags::APPEND)
            .unwrap();
        txn.commit().unwrap();
        lmdb.push(started.elapsed().as_micros());
    }
    let (floor_p50, floor_mean, floor_p99) = summary(&mut floor);
    eprintln!("in {}, {ROUNDS} rounds, interleaved:", dir.0.display());
    eprintln!(
        "  fsync floor (4 KiB + fdatasync): p50 {floor_p50} us, mean {floor_mean} us, p99 {floor_p99} us"
    );
    for (what, samples) in [
        ("WAL persist (20 entries, ~4 KiB)", &mut persist),
        ("LMDB commit (4 KiB value)       ", &mut lmdb),
    ] {
        let (p50, mean, p99) = summary(samples);
        eprintln!(
            "  {what}: p50 {p50} us, mean {mean} us, p99 {p99} us; p50 {:.2}x, mean {:.2}x the floor",
            p50 as f64 / floor_p50.max(1) as f64,
            mean as f64 / floor_mean.max(1) as f64
        );
    }
}

#[test]
fn a_snapshot_only_in_the_first_batch_of_a_group() {
    let dir = TestDir::new("snapshot-second");
    let mut store = bootstrapped(&dir);
    append(&mut store, &entries(1, 5, 1), hard_state(1, 5)).unwrap();
    let mut snapshot = initial_snapshot();
    snapshot.meta.index = 5;
    snapshot.meta.term = 1;
    let more = entries(6, 6, 1);
    let refused = store.persist_all(&[
        Write {
            entries: &more,
            ..Write::default()
        },
        Write {
            snapshot: Some(&snapshot),
            ..Write::default()
        },
    ]);
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    // Nothing of the group was written; first, it is a batch like any.
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.entries, entries(1, 5, 1));
    assert_eq!(loaded.snapshot.meta.index, 0);
    store
        .persist_all(&[
            Write {
                snapshot: Some(&snapshot),
                ..Write::default()
            },
            Write {
                entries: &more,
                ..Write::default()
            },
        ])
        .unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.snapshot.meta.index, 5);
    assert_eq!(loaded.entries, more);
}

#[test]
fn an_older_snapshot_is_refused_even_with_a_hard_state_that_fits_it() {
    let dir = TestDir::new("snapshot-older");
    let mut store = bootstrapped(&dir);
    let mut snapshot = initial_snapshot();
    snapshot.meta.index = 5;
    snapshot.meta.term = 2;
    let installed = |store: &mut Store, snapshot: &Snapshot, commit: u64| {
        store.persist(&Write {
            snapshot: Some(snapshot),
            hard_state: Some(&hard_state(2, commit)),
            ..Write::default()
        })
    };
    installed(&mut store, &snapshot, 5).unwrap();
    // The same snapshot again (a leader's retry) is no older.
    installed(&mut store, &snapshot, 5).unwrap();
    let mut older = snapshot.clone();
    older.meta.index = 3;
    let refused = installed(&mut store, &older, 3);
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.snapshot.meta.index, 5);
    assert_eq!(loaded.hard_state.commit, 5);
}

#[test]
fn a_compaction_after_a_leaders_snapshot_reopens() {
    // The WAL's last reset (the leader's snapshot at 20) is below the
    // snapshot LMDB holds after a compaction (25): the usual order.
    let dir = TestDir::new("reset-then-compact");
    let mut store = bootstrapped(&dir);
    let mut snapshot = initial_snapshot();
    snapshot.meta.index = 20;
    snapshot.meta.term = 3;
    let after = entries(21, 30, 3);
    store
        .persist(&Write {
            snapshot: Some(&snapshot),
            entries: &after,
            hard_state: Some(&hard_state(3, 30)),
            ..Write::default()
        })
        .unwrap();
    let mut compacted = snapshot.clone();
    compacted.meta.index = 25;
    store.compact(&compacted).unwrap();
    drop(store);
    let store = Store::open(&dir.0, 16).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.snapshot.meta.index, 25);
    assert_eq!(loaded.entries, entries(26, 30, 3));
}

#[test]
fn a_snapshot_that_cannot_be_stored_leaves_the_commit_where_the_log_has_it() {
    // The snapshot's term is made durable first; its store then fails
    // (larger than the map). The hard state on disk must not commit
    // past the old log, which is all there is.
    let dir = TestDir::new("snapshot-too-large");
    let mut store = bootstrapped(&dir);
    append(&mut store, &entries(1, 5, 1), hard_state(1, 5)).unwrap();
    let mut snapshot = initial_snapshot();
    snapshot.meta.index = 20;
    snapshot.meta.term = 2;
    snapshot.data = vec![7; 20 << 20];
    let refused = store.persist(&Write {
        snapshot: Some(&snapshot),
        hard_state: Some(&hard_state(2, 20)),
        ..Write::default()
    });
    assert!(refused.is_err(), "a 20 MiB snapshot in a 16 MiB map");
    let check = |store: &Store| {
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.snapshot.meta.index, 0);
        assert_eq!(loaded.entries, entries(1, 5, 1));
        assert_eq!(loaded.hard_state.term, 2);
        assert_eq!(loaded.hard_state.commit, 5);
    };
    check(&store);
    drop(store);
    check(&Store::open(&dir.0, 16).unwrap());
}

#[test]
fn a_batch_that_fills_the_map_exactly_is_taken() {
    // The store is held to the map: LMDB's used pages and the WAL's bytes
    // with the new frame may reach the map size, not pass it.
    let dir = TestDir::new("map-exact");
    let mut store = bootstrapped(&dir);
    let used = store.db.used() + store.live.as_ref().unwrap().wal.bytes();
    let room = usize::try_from(store.map_bytes - used).unwrap();
    let hs = hard_state(1, 1);
    let entry = |n: usize| Entry {
        term: 1,
        index: 1,
        kind: EntryKind::Normal,
        data: vec![5; n],
    };
    let frame_len = |n: usize| {
        wal::record::encode_batch(&[OpRef::Entries(&[entry(n)]), OpRef::HardState(hs)]).len()
    };
    let guess = room - frame_len(0);
    let n = (guess.saturating_sub(32)..guess + 32)
        .filter(|&n| frame_len(n) == room)
        .max()
        .expect("a data length whose frame fills the map");
    store
        .persist(&Write {
            entries: &[entry(n)],
            hard_state: Some(&hs),
            ..Write::default()
        })
        .unwrap();
    // Nothing more fits.
    assert_eq!(
        append(&mut store, &entries(2, 2, 1), hard_state(1, 2)),
        Err(StoreError::MapFull)
    );
}

#[test]
fn a_group_of_batches_attaches_each_to_the_one_before() {
    let dir = TestDir::new("group");
    let mut store = bootstrapped(&dir);
    let first = entries(1, 3, 1);
    let second = entries(4, 5, 2);
    // The third overwrites the second batch's last entry.
    let third = entries(5, 6, 3);
    store
        .persist_all(&[
            Write {
                entries: &first,
                hard_state: Some(&hard_state(3, 0)),
                ..Write::default()
            },
            Write {
                entries: &second,
                hard_state: Some(&hard_state(3, 0)),
                ..Write::default()
            },
            Write {
                entries: &third,
                hard_state: Some(&hard_state(3, 6)),
                ..Write::default()
            },
        ])
        .unwrap();
    let loaded = store.load().unwrap().unwrap();
    let mut expected = entries(1, 3, 1);
    expected.extend(entries(4, 4, 2));
    expected.extend(third);
    assert_eq!(loaded.entries, expected);
}

#[test]
fn a_group_whose_last_batch_cuts_the_log_short_is_checked_against_the_cut_log() {
    let dir = TestDir::new("group-cut");
    let mut store = bootstrapped(&dir);
    let (first, second, third) = (entries(1, 3, 1), entries(4, 5, 2), entries(4, 4, 3));
    let refused = store.persist_all(&[
        Write {
            entries: &first,
            hard_state: Some(&hard_state(3, 0)),
            ..Write::default()
        },
        Write {
            entries: &second,
            hard_state: Some(&hard_state(3, 0)),
            ..Write::default()
        },
        // The log now ends at 4: a commit at 5 is past it.
        Write {
            entries: &third,
            hard_state: Some(&hard_state(3, 5)),
            ..Write::default()
        },
    ]);
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    assert!(store.load().unwrap().unwrap().entries.is_empty());
}
