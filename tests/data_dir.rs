//! The data directory on disk: private (0700, files 0600), and its new
//! names made durable — the directory and the one holding it are fsynced
//! after the store is created (checked with strace, which `.ci/run`'s
//! machine has; under CI a missing strace is a failure, not a skip).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TempDir, free_port, post, wait_for};

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
