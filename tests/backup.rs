//! Backup and restore on the release binary: `GET /api/v1/backup` on a
//! cluster that keeps serving, `ticketd restore FILE --next-id N` from
//! it, and the restored cluster's first ID above every ID served before —
//! also IDs served after the backup was taken, which only `--next-id`
//! (taken from `ticketd_ids_reserved_max`) covers. Sessions, tickets and
//! locks survive, also on members that join the restored cluster later.
//! A corrupt or truncated file is refused and leaves no data dir; the
//! call needs the admin token when one is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::ops::{json_str, metric, raw_exchange, run_ticketd, take_ids_anywhere};
use common::{Cluster, Node, TempDir, get, post, request_with_headers, wait_for};

const LEADER_WAIT: Duration = Duration::from_secs(20);
const EXIT_WAIT: Duration = Duration::from_secs(20);
const ADMIN: &str = "admin-0123456789abcdef";

/// `GET /api/v1/backup` with raw bytes kept: (status, body).
fn fetch_backup(addr: &str, token: Option<&str>) -> Option<(u16, Vec<u8>, String)> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head =
        format!("GET /api/v1/backup HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    let raw = raw_exchange(addr, head.as_bytes(), false, Duration::from_secs(20))?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.get(9..12)?.parse().ok()?;
    Some((status, raw[split + 4..].to_vec(), head))
}

fn body_of(addr: &str, method: &str, path: &str) -> (u16, String) {
    let r = common::request(method, addr, path, b"").expect("an answer");
    (r.status, r.body.trim().to_string())
}

/// A node with no peer list, started with `command` once.
fn start_with(node: &mut Node, command: &[String]) {
    node.extra_args = command.to_vec();
    node.start();
    node.extra_args.clear();
}

#[test]
fn a_restore_keeps_state_and_never_repeats_an_id() {
    let mut old = Cluster::new("backup-old", 1);
    old.nodes[0].start();
    old.wait_leader(LEADER_WAIT);
    let addr = old.nodes[0].http();
    let mut served: Vec<u64> =
        take_ids_anywhere(std::slice::from_ref(&addr), 500, LEADER_WAIT).unwrap();
    let (_, holder) = body_of(&addr, "POST", "/api/v1/sessions?name=holder&ttl=60000");
    let holder = holder.trim_matches('"').to_string();
    let (_, issuer) = body_of(&addr, "POST", "/api/v1/sessions?name=issuer&ttl=60000");
    let issuer = issuer.trim_matches('"').to_string();
    assert_eq!(
        body_of(
            &addr,
            "POST",
            &format!("/api/v1/locks/door?sessid={holder}")
        ),
        (200, "true".into())
    );
    let issue = format!("/api/v1/tickets/pool?sessid={issuer}&name=t1");
    assert_eq!(
        common::request("POST", &addr, &issue, b"payload")
            .unwrap()
            .status,
        200
    );
    let (status, claim) = body_of(
        &addr,
        "POST",
        &format!("/api/v1/claims/pool?sessid={holder}"),
    );
    assert_eq!(status, 200);
    assert!(claim.contains("\"Claimed\":true"), "{claim}");

    let (status, backup, head) = fetch_backup(&addr, None).expect("a backup");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("application/octet-stream"), "{head}");
    let dir = TempDir::new("backup-files");
    let file = dir.path().join("cluster.backup");
    std::fs::write(&file, &backup).unwrap();

    // The old cluster serves on after the backup: more ranges reserved.
    served.extend(take_ids_anywhere(std::slice::from_ref(&addr), 100_000, LEADER_WAIT).unwrap());
    served.extend(take_ids_anywhere(std::slice::from_ref(&addr), 100_000, LEADER_WAIT).unwrap());
    let reserved = metric(&addr, "ticketd_ids_reserved_max").expect("the metric");
    let max_served = *served.iter().max().unwrap();
    assert!(reserved >= max_served, "{reserved} < {max_served}");
    old.nodes[0].kill();

    // A new cluster from the backup, with --next-id from the metric.
    let mut new = Cluster::new("backup-new", 3);
    for node in &mut new.nodes {
        node.peers = String::new();
    }
    let next_id = (reserved + 1).to_string();
    let restore: Vec<String> = [
        "restore",
        &file.display().to_string(),
        "--next-id",
        &next_id,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    start_with(&mut new.nodes[0], &restore);
    let restored = new.nodes[0].http();
    let first = take_ids_anywhere(std::slice::from_ref(&restored), 1, LEADER_WAIT)
        .unwrap_or_else(|| panic!("the restored node serves no IDs\n{}", new.logs()));
    assert!(
        first[0] > max_served,
        "restored node served {} but {max_served} was served before",
        first[0]
    );
    assert!(
        new.nodes[0]
            .log()
            .contains(&format!("IDs start at {next_id}")),
        "{}",
        new.logs()
    );
    let cluster_id = json_str(&new.nodes[0].status().unwrap(), "Cluster").unwrap();

    // Two members join it: they get the restored state by snapshot.
    for index in 1..3 {
        let join = vec!["join".to_string(), new.nodes[0].peer()];
        start_with(&mut new.nodes[index], &join);
        let joined = wait_for(LEADER_WAIT, || {
            new.nodes[index]
                .log()
                .contains(&format!("joined cluster {cluster_id}"))
                .then_some(())
        });
        assert!(joined.is_some(), "{}", new.logs());
    }
    let voters = wait_for(LEADER_WAIT, || {
        let body = get(&restored, "/api/v1/cluster")?.body;
        (body.matches("\"Voter\":true").count() == 3).then_some(())
    });
    assert!(voters.is_some(), "{}", new.logs());
    // The restored node goes: the joiners serve the state on their own.
    new.nodes[0].kill();
    let others = vec![new.nodes[1].http(), new.nodes[2].http()];
    let after = take_ids_anywhere(&others, 1, LEADER_WAIT)
        .unwrap_or_else(|| panic!("no IDs without the restored node\n{}", new.logs()));
    assert!(after[0] > first[0]);
    let leader = new.wait_leader_status(LEADER_WAIT);
    let at = new.nodes[leader].http();
    let session = body_of(&at, "GET", &format!("/api/v1/sessions/{holder}"));
    assert_eq!(session.0, 200, "{}", session.1);
    assert!(session.1.contains("\"Name\":\"holder\""), "{}", session.1);
    // The lock is still the holder's; the claim too.
    let (_, other) = body_of(&at, "POST", "/api/v1/sessions?name=other&ttl=60000");
    let other = other.trim_matches('"').to_string();
    assert_eq!(
        body_of(&at, "POST", &format!("/api/v1/locks/door?sessid={other}")),
        (200, "false".into())
    );
    assert_eq!(
        body_of(&at, "POST", &format!("/api/v1/locks/door?sessid={holder}")),
        (200, "true".into())
    );
    assert_eq!(
        body_of(
            &at,
            "GET",
            &format!("/api/v1/claims/pool?sessid={holder}&name=t1")
        ),
        (200, "true".into())
    );
    // A follower sends a backup request to the leader.
    let follower = if leader == 1 { 2 } else { 1 };
    let (status, _, head) = fetch_backup(&new.nodes[follower].http(), None).unwrap();
    assert_eq!(status, 307, "{head}");
    assert!(
        head.contains(&format!("http://{at}/api/v1/backup")),
        "{head}"
    );
}

#[test]
fn a_corrupt_or_truncated_backup_is_refused_and_leaves_no_data_dir() {
    let cluster = Cluster::start("backup-bad", 1);
    let addr = cluster.nodes[0].http();
    assert_eq!(post(&addr, "/api/v1/sessions?name=s").unwrap().status, 200);
    let (status, backup, _) = fetch_backup(&addr, None).unwrap();
    assert_eq!(status, 200);
    let dir = TempDir::new("backup-bad-files");
    let mut flipped = backup.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    let cases = [
        ("flipped", flipped, "corrupt"),
        (
            "truncated",
            backup[..backup.len() - 7].to_vec(),
            "truncated",
        ),
        ("empty", Vec::new(), "not a ticketd backup"),
        ("text", b"hello, world\n".to_vec(), "not a ticketd backup"),
    ];
    for (name, bytes, expected) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let data = dir.path().join(format!("data-{name}"));
        let (port, http) = (common::free_port(), common::free_port());
        let args = [
            "restore",
            &file.display().to_string(),
            "--next-id",
            "1000000",
            "--peer_port",
            &port.to_string(),
            "--http_port",
            &http.to_string(),
            "--path",
            &data.display().to_string(),
        ];
        let (status, stderr) = run_ticketd(&args, EXIT_WAIT).expect("restore exits");
        assert_eq!(status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(!data.exists(), "{name}: a refused restore left {data:?}");
    }
}

#[test]
fn a_restore_refuses_a_data_dir_that_holds_a_node() {
    let mut cluster = Cluster::start("backup-occupied", 1);
    let addr = cluster.nodes[0].http();
    let (_, backup, _) = fetch_backup(&addr, None).unwrap();
    let dir = TempDir::new("backup-occupied-files");
    let file = dir.path().join("b");
    std::fs::write(&file, backup).unwrap();
    assert_eq!(
        cluster.nodes[0].terminate(EXIT_WAIT).unwrap().code(),
        Some(0)
    );
    let data = cluster.nodes[0].data_dir.display().to_string();
    let args = [
        "restore",
        &file.display().to_string(),
        "--next-id",
        "5",
        "--path",
        &data,
    ];
    let (status, stderr) = run_ticketd(&args, EXIT_WAIT).expect("restore exits");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("restore only into an empty one"),
        "{stderr}"
    );
    // The node's data is untouched: it restarts and serves.
    cluster.nodes[0].start();
    cluster.wait_leader(LEADER_WAIT);
}

#[test]
fn a_backup_needs_the_admin_token_when_one_is_set() {
    let mut cluster = Cluster::new("backup-auth", 1);
    let token = cluster.dir.path().join("admin");
    std::fs::write(&token, format!("{ADMIN}\n")).unwrap();
    cluster.nodes[0].extra_args = vec!["--admin_token".into(), token.display().to_string()];
    cluster.nodes[0].start();
    cluster.wait_leader(LEADER_WAIT);
    let addr = cluster.nodes[0].http();
    assert_eq!(fetch_backup(&addr, None).unwrap().0, 401);
    assert_eq!(
        fetch_backup(&addr, Some("wrong-0123456789abcdef"))
            .unwrap()
            .0,
        401
    );
    let (status, bytes, _) = fetch_backup(&addr, Some(ADMIN)).unwrap();
    assert_eq!(status, 200);
    assert!(bytes.starts_with(b"TKDBACK\0"));
    let wrong_method = request_with_headers(
        "POST",
        &addr,
        "/api/v1/backup",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
        b"",
    )
    .unwrap();
    assert_eq!(wrong_method.status, 405);
}
