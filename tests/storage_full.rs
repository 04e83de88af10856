//! A full LMDB map: writes answer 507, reads and the node go on, and
//! nothing acknowledged before is lost (SPEC, "Bad input and faults").

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_support;
mod common;

use std::time::Duration;

use api_support::{Api, Json, LogsOnPanic, lock_grant};
use common::Cluster;
use common::ops::metric;

/// Issues tickets of `data` on resource `big` until one is refused with
/// 507: the names acknowledged before, and the refusal.
fn fill_until_507(
    cluster: &Cluster,
    api: &Api,
    session: &str,
    data: &[u8],
    at_most: usize,
) -> (Vec<String>, common::Response) {
    let mut acknowledged = Vec::new();
    for i in 0..at_most {
        let name = format!("t{i}");
        let answer = api.issue(session, "big", &name, data);
        match answer.status {
            200 => acknowledged.push(name),
            507 => return (acknowledged, answer),
            other => panic!("ticket {i}: {other} {}\n{}", answer.body, cluster.logs()),
        }
    }
    panic!("storage never filled\n{}", cluster.logs());
}

/// Takes IDs in blocks until an answer is not 200 (the pool reserved
/// before the storage filled runs dry): that answer's status.
fn drain_ids(http: &str) -> u16 {
    for _ in 0..200 {
        let status = common::post(http, "/?count=1000").map_or(0, |r| r.status);
        if status != 200 {
            return status;
        }
    }
    200
}

#[test]
fn a_full_map_refuses_writes_with_507_and_loses_nothing() {
    let mut cluster = Cluster::new("storage-full", 1);
    cluster.nodes[0].extra_args = vec!["--db_size".into(), "1".into()];
    cluster.nodes[0].start();
    cluster.wait_leader(Duration::from_secs(10));
    let api = Api::new(&cluster.nodes[0].http());
    let session = api.open_session("filler", 600_000);
    let data = vec![b'x'; 1000];
    let (acknowledged, refused) = fill_until_507(&cluster, &api, &session, &data, 5_000);
    assert_eq!(refused.body.lines().count(), 1, "{:?}", refused.body);
    assert!(
        acknowledged.len() > 50,
        "only {} tickets fit",
        acknowledged.len()
    );

    // The node is alive and still answers reads.
    assert_eq!(
        common::get(&cluster.nodes[0].http(), "/healthz")
            .unwrap()
            .status,
        200
    );
    let dump = api.json("GET", "/dump/resources/big", b"");
    assert_eq!(
        dump.get("big").get("Tickets").len(),
        acknowledged.len(),
        "reads see every acknowledged ticket"
    );
    assert_eq!(api.issue(&session, "big", "one-more", &data).status, 507);
    // POST / answers 507 too once the IDs already reserved are gone.
    assert_eq!(
        drain_ids(&cluster.nodes[0].http()),
        507,
        "POST / on a full map"
    );

    // Restarted with room to spare, everything acknowledged is there.
    cluster.nodes[0].kill();
    cluster.nodes[0].extra_args = vec!["--db_size".into(), "64".into()];
    cluster.nodes[0].start();
    cluster.wait_leader(Duration::from_secs(10));
    let dump: Json = api.json("GET", "/dump/resources/big", b"");
    let tickets = dump.get("big").get("Tickets");
    for name in &acknowledged {
        assert!(tickets.has(name), "ticket {name} was lost");
    }
    assert_eq!(api.issue(&session, "big", "after", &data).status, 200);
}

/// A tmpfs of the test's own, mounted for the test and lazily unmounted
/// when it ends.
struct SmallFs {
    path: std::path::PathBuf,
}

impl SmallFs {
    /// `None` when this process may not mount (not root).
    fn mount(path: std::path::PathBuf, megabytes: u64) -> Option<SmallFs> {
        std::fs::create_dir_all(&path).ok()?;
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={megabytes}m,mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(SmallFs { path })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// A full file system behaves like a full map: writes answer 507, reads
/// go on, closing a session, releasing a claim and unlocking still work
/// (from the reserve), the node serves writes again once space is freed
/// (no restart), and nothing acknowledged is lost across kill -9.
#[test]
fn a_full_file_system_refuses_writes_frees_from_the_reserve_and_recovers() {
    let mut cluster = Cluster::new("disk-full", 1);
    let Some(fs) = SmallFs::mount(cluster.dir.path().join("small"), 24) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and can mount a tmpfs"
        );
        eprintln!("cannot mount a tmpfs (not root?): full file system not tested");
        return;
    };
    // The map is larger than the file system: the disk fills first.
    let filler = fs.path.join("filler");
    std::fs::write(&filler, vec![0u8; 12 << 20]).unwrap();
    cluster.nodes[0].data_dir = fs.path.join("data");
    cluster.nodes[0].extra_args = vec!["--db_size".into(), "256".into()];
    cluster.nodes[0].start();
    let _logs = LogsOnPanic::new(&cluster);
    cluster.wait_leader(Duration::from_secs(10));
    let api = Api::new(&cluster.nodes[0].http());
    let holder = api.open_session("holder", 600_000);
    assert!(lock_grant(&api.lock(&holder, "held-lock")).granted);
    // A claim held before the disk fills, released once it is full.
    let issuer = api.open_session("issuer", 600_000);
    assert_eq!(api.issue(&issuer, "pool", "p1", b"d").status, 200);
    let (grant, _) = api_support::claim_grant(&api.claim(&holder, "pool"));
    assert!(grant.granted, "claim before the disk fills");
    let closer = api.open_session("closer", 600_000);
    let session = api.open_session("filler", 600_000);
    let data = vec![b'x'; 1000];
    let (mut acknowledged, refused) = fill_until_507(&cluster, &api, &session, &data, 50_000);
    assert_eq!(refused.body.lines().count(), 1, "{:?}", refused.body);
    assert!(
        acknowledged.len() > 100,
        "only {} tickets fit",
        acknowledged.len()
    );
    assert_eq!(api.issue(&session, "big", "one-more", &data).status, 507);
    assert_eq!(
        common::get(&cluster.nodes[0].http(), "/healthz")
            .unwrap()
            .status,
        200,
        "the node lives"
    );
    let dump = api.json("GET", "/dump/resources/big", b"");
    assert_eq!(dump.get("big").get("Tickets").len(), acknowledged.len());

    // POST / answers 507 too once the IDs already reserved are gone.
    let http = cluster.nodes[0].http();
    assert_eq!(drain_ids(&http), 507, "POST / on a full disk");

    // Someone else takes the rest of the disk: only the blocks the node
    // already holds are left for it (LMDB's free pages, the WAL segment's
    // preallocated tail, the reserve past the end of its files).
    let rest = fs.path.join("rest");
    fill_file_system(&rest);

    // What frees space works from the reserve.
    assert_eq!(
        api.unlock(&holder, "held-lock").status,
        200,
        "unlock when full"
    );
    let released = api.release(&holder, "pool", "p1");
    assert_eq!(released.status, 200, "release when full: {}", released.body);
    assert!(!api.has(&holder, "pool", "p1"), "the claim is released");
    let closed = api.close(&closer);
    assert_eq!(closed.status, 200, "close when full: {}", closed.body);

    // Space freed: writes work again without a restart.
    std::fs::remove_file(&rest).unwrap();
    std::fs::remove_file(&filler).unwrap();
    let recovered = common::wait_for(Duration::from_secs(20), || {
        (api.issue(&session, "big", "after-free", &data).status == 200).then_some(())
    });
    assert!(
        recovered.is_some(),
        "writes never resumed\n{}",
        cluster.logs()
    );
    acknowledged.push("after-free".into());
    let ids = common::wait_for(Duration::from_secs(20), || {
        common::post(&http, "/").filter(|r| r.status == 200)
    });
    assert!(ids.is_some(), "POST / never resumed\n{}", cluster.logs());

    // Nothing acknowledged is lost across kill -9.
    cluster.nodes[0].kill();
    cluster.nodes[0].start();
    cluster.wait_leader(Duration::from_secs(10));
    let dump: Json = api.json("GET", "/dump/resources/big", b"");
    let tickets = dump.get("big").get("Tickets");
    for name in &acknowledged {
        assert!(tickets.has(name), "ticket {name} was lost");
    }
    let sessions = api.json("GET", "/dump/sessions", b"");
    assert!(!sessions.has(&closer), "the closed session came back");
    assert!(sessions.has(&holder), "a live session was lost");
    cluster.nodes[0].kill();
}

/// Writes `path` until the file system has no block left (bounded: at
/// most 64 MiB, more than the test's tmpfs holds).
fn fill_file_system(path: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    for _ in 0..(64 << 20) / block.len() {
        if file.write_all(&block).is_err() {
            return;
        }
    }
    panic!("{} never filled the file system", path.display());
}

/// Whether `node` says its storage is full, in its status and metrics.
fn says_full(node: &common::Node) -> bool {
    node.status()
        .is_some_and(|s| s.contains("\"StorageFull\":true"))
        && metric(&node.http(), "ticketd_storage_full") == Some(1)
}

/// A follower whose map fills before its leader's stops taking the log
/// but keeps running and says so (a 507 is its leader's to give, and a
/// follower's full map is no reason to stop); the other two go on
/// committing, and restarted with room it catches up and holds its share
/// of the quorum again, with everything acknowledged.
#[test]
fn a_follower_with_a_full_map_keeps_running_and_catches_up_after_a_restart() {
    let mut cluster = Cluster::new("follower-full", 3);
    cluster.nodes[2].extra_args = vec!["--db_size".into(), "1".into()];
    // Nodes 0 and 1 elect one of themselves before the small one starts.
    cluster.nodes[0].start();
    cluster.nodes[1].start();
    let _logs = LogsOnPanic::new(&cluster);
    let leader = cluster.wait_leader(Duration::from_secs(15));
    let other = 1 - leader;
    cluster.nodes[2].start();
    let api = Api::new(&cluster.nodes[leader].http());
    let session = api.open_session("filler", 600_000);
    let data = vec![b'x'; 1000];

    // Every write is acknowledged, before and after the small one fills.
    let mut acknowledged = Vec::new();
    let mut full_at = None;
    for i in 0..5_000 {
        let name = format!("t{i}");
        let answer = api.issue(&session, "big", &name, &data);
        assert_eq!(answer.status, 200, "ticket {i}: {}", answer.body);
        acknowledged.push(name);
        if full_at.is_none() && i % 25 == 0 && says_full(&cluster.nodes[2]) {
            full_at = Some(i);
        }
        if full_at.is_some_and(|at| i >= at + 200) {
            break;
        }
    }
    assert!(full_at.is_some(), "the small follower never filled");
    assert!(cluster.nodes[2].is_healthy(), "the full follower stopped");
    assert!(says_full(&cluster.nodes[2]));
    let commit = cluster.nodes[leader].status_u64("CommitIndex").unwrap();
    let behind = cluster.nodes[2].status_u64("LastIndex").unwrap();
    assert!(
        behind < commit,
        "a full follower took the log to {behind} of {commit}"
    );

    // Restarted with room, it catches up.
    cluster.nodes[2].kill();
    cluster.nodes[2].extra_args = vec!["--db_size".into(), "64".into()];
    cluster.nodes[2].start();
    let caught_up = common::wait_for(Duration::from_secs(30), || {
        (cluster.nodes[2].status_u64("AppliedIndex")? >= commit).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "the restarted follower never caught up"
    );
    assert!(!says_full(&cluster.nodes[2]));

    // It counts towards the quorum: with the other follower down, a write
    // still commits, and with the leader down too, it and the other one
    // elect a leader that has everything.
    cluster.nodes[other].kill();
    let last = api.issue(&session, "big", "with-the-small-one", &data);
    assert_eq!(last.status, 200, "{}", last.body);
    acknowledged.push("with-the-small-one".into());
    cluster.nodes[leader].kill();
    cluster.nodes[other].start();
    let new_leader = cluster.wait_leader(Duration::from_secs(15));
    let dump = Api::new(&cluster.nodes[new_leader].http()).json("GET", "/dump/resources/big", b"");
    let tickets = dump.get("big").get("Tickets");
    for name in &acknowledged {
        assert!(tickets.has(name), "ticket {name} was lost");
    }
}
