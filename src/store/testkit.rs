//! Shared by the store's tests (`tests.rs`, `wal/tests.rs`,
//! `wal/crash_tests.rs`): a temp directory removed on drop, and a
//! bootstrapped one-node store with its entries and hard states.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Identity, Store, StoreError, Write};
use crate::raft::{Entry, EntryKind, HardState, Member, Membership, Snapshot, SnapshotMeta};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ticketd-store-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TestDir(path)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn identity() -> Identity {
    Identity {
        cluster_id: 0xC1,
        node_id: 1,
        incarnation: 0x1d,
    }
}

pub fn initial_snapshot() -> Snapshot {
    let mut membership = Membership::default();
    membership.members.insert(
        1,
        Member {
            voter: true,
            peer_addr: "127.0.0.1:9001".into(),
            http_addr: "127.0.0.1:8001".into(),
            incarnation: 0x1d,
        },
    );
    Snapshot {
        meta: SnapshotMeta {
            index: 0,
            term: 0,
            membership,
        },
        data: Vec::new(),
    }
}

pub fn entries(first: u64, last: u64, term: u64) -> Vec<Entry> {
    (first..=last)
        .map(|index| Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: format!("entry {index} of term {term}").into_bytes(),
        })
        .collect()
}

pub fn hard_state(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: 1,
        commit,
    }
}

pub fn bootstrapped(dir: &TestDir) -> Store {
    let mut store = Store::open(&dir.0, 16).unwrap();
    store.bootstrap(identity(), &initial_snapshot()).unwrap();
    store
}

pub fn append(store: &mut Store, batch: &[Entry], hard_state: HardState) -> Result<(), StoreError> {
    store.persist(&Write {
        entries: batch,
        hard_state: Some(&hard_state),
        ..Write::default()
    })
}

/// A tmpfs of the test's own (a small file system to fill), mounted on
/// `path` and lazily unmounted on drop. `None` when this process may not
/// mount (not root); CI runs as root.
pub struct SmallFs(pub PathBuf);

impl SmallFs {
    pub fn mount(path: PathBuf, megabytes: u64) -> Option<SmallFs> {
        fs::create_dir_all(&path).ok()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={megabytes}m,mode=0700"))
            .arg("tmpfs")
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(SmallFs(path))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
