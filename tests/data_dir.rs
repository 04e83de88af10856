//! The data directory on disk: private (0700, files 0600), and its new
//! names made durable — the directory and the one holding it are fsynced
//! after the store is created (checked with strace, which `.ci/run`'s
//! machine has; under CI a missing strace is a failure, not a skip) —
//! and refused when what it holds disagrees with itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Cluster, TempDir, free_port, post, wait_for};
use ticketd::store::{AppRecord, Store, Write};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_new_data_dir_is_private_and_its_names_are_fsynced() {
    if Command::new("strace").arg("-V").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "strace is not installed");
        eprintln!("strace not installed: directory fsyncs not checked");
        return;
    }
    let dir = TempDir::new("data-dir");
    let parent = dir.path().join("fresh");
    let data = parent.join("data");
    let trace = dir.path().join("strace.log");
    let (peer, http) = (free_port(), free_port());
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=openat,fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_ticketd"))
        .args([
            "--peer_port",
            &peer.to_string(),
            "--http_port",
            &http.to_string(),
        ])
        .arg("--path")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{http}");
    let served = wait_for(Duration::from_secs(30), || {
        post(&addr, "/").filter(|r| r.status == 200)
    });
    let log = std::fs::read_to_string(&trace).unwrap_or_default();
    // The traced ticketd is the first pid in the log; stop it by that pid.
    let pid = log.split_whitespace().next().unwrap_or("").to_string();
    if !pid.is_empty() {
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
    }
    let stopped = wait_for(Duration::from_secs(10), || strace.try_wait().ok().flatten());
    if stopped.is_none() {
        let _ = strace.kill();
        let _ = strace.wait();
    }
    assert!(served.is_some(), "the traced node never served");

    assert_eq!(mode(&parent), 0o700);
    assert_eq!(mode(&data), 0o700);
    for file in ["data.mdb", "lock.mdb", "ticketd.lock"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }

    let log = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    for synced in [&parent, &data, dir.path()] {
        let name = format!("\"{}\"", synced.display());
        assert!(
            fsynced_after_open(&lines, &name),
            "{name} never opened and fsynced:\n{log}"
        );
    }
}

/// Some `openat` of `name` returns an fd that the same thread fsyncs
/// before it opens anything else under that fd number.
fn fsynced_after_open(lines: &[&str], name: &str) -> bool {
    lines.iter().enumerate().any(|(i, line)| {
        if !(line.contains("openat(") && line.contains(name)) {
            return false;
        }
        let pid = line.split_whitespace().next().unwrap_or("");
        let Some(fd) = line.rsplit("= ").next().map(str::trim) else {
            return false;
        };
        if fd.starts_with('-') {
            return false;
        }
        for later in &lines[i + 1..] {
            if later.split_whitespace().next() != Some(pid) {
                continue;
            }
            if later.contains(&format!("fsync({fd})")) {
                return true;
            }
            if later.contains("openat(") && later.rsplit("= ").next().map(str::trim) == Some(fd) {
                return false;
            }
        }
        false
    })
}

/// Writes `app` as the newest application record of the (stopped) node's
/// store in `dir`, the way the node writes one with every batch.
fn record_app(dir: &std::path::Path, app: impl FnOnce(AppRecord) -> AppRecord) {
    let mut store = Store::open(dir, 1024).unwrap();
    let loaded = store.load().unwrap().expect("a bootstrapped store");
    let write = Write {
        app: Some(app(loaded.app)),
        ..Write::default()
    };
    store.persist(&write).unwrap();
}

/// The counter a node replays must be the one it recorded with the same
/// index: a data directory whose log and application record disagree
/// (a restored or mixed-up copy) could hand out IDs again, so the node
/// refuses to start on it and says why; an agreeing one starts.
#[test]
fn a_node_refuses_a_data_dir_whose_recorded_counter_disagrees_with_its_log() {
    let mut cluster = Cluster::new("recorded-counter", 1);
    let data = cluster.nodes[0].data_dir.clone();
    let addr = cluster.nodes[0].http();
    let serves = || post(&addr, "/?count=1000").is_some_and(|r| r.status == 200);

    // Enough IDs for several refills, so that the counter the newest
    // record holds is not the one at the log's start.
    cluster.nodes[0].start();
    for _ in 0..40 {
        assert!(wait_for(Duration::from_secs(10), || serves().then_some(())).is_some());
    }
    cluster.nodes[0].kill();

    // The same record written again: the node starts and serves.
    record_app(&data, |app| app);
    cluster.nodes[0].start();
    assert!(
        wait_for(Duration::from_secs(10), || serves().then_some(())).is_some(),
        "an agreeing data dir was refused"
    );
    cluster.nodes[0].kill();

    // A counter recorded above what the log replays to.
    record_app(&data, |app| AppRecord {
        high: app.high + 1_000_000,
        ..app
    });
    cluster.nodes[0].start();
    let Some(status) = cluster.nodes[0].wait_exit(Duration::from_secs(10)) else {
        let serving = serves();
        panic!("it kept running on it (serving IDs: {serving})");
    };
    let log = cluster.nodes[0].log();
    assert!(!status.success(), "it exited 0: {log}");
    assert!(
        log.contains("data directory is inconsistent"),
        "no reason given: {log}"
    );
}
