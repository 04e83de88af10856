//! `/metrics` on a three-node cluster: every family SPEC names is there,
//! on the leader and on a follower, and the text passes `promtool check
//! metrics` (Debian's `prometheus` package; `.ci/run` installs it, so on
//! CI a missing promtool is a failure, not a skip).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Cluster, get, post, request_following, wait_for};

/// The families an operator alerts on (SPEC "Cluster operations").
const FAMILIES: &[&str] = &[
    "ticketd_build_info",
    "ticketd_role",
    "ticketd_term",
    "ticketd_leader_changes_total",
    "ticketd_commit_index",
    "ticketd_applied_index",
    "ticketd_ids_served_total",
    "ticketd_ids_reserved_max",
    "ticketd_http_requests_total",
    "ticketd_http_request_seconds",
    "ticketd_persist_seconds",
    "ticketd_entries_per_persist",
    "ticketd_peer_messages_sent_total",
    "ticketd_peer_connects_total",
    "ticketd_follower_lag_entries",
    "ticketd_sessions",
    "ticketd_locks",
    "ticketd_storage_used_bytes",
    "ticketd_storage_wal_bytes",
    "ticketd_storage_free_bytes",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_cpu_seconds_total",
    "process_start_time_seconds",
];

fn promtool_check(text: &str) -> Option<Result<(), String>> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(text.as_bytes()).ok()?;
    let output = child.wait_with_output().ok()?;
    Some(if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    })
}

/// The value of an unlabelled sample.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_cover_the_spec_and_pass_promtool() {
    let cluster = Cluster::start("metrics", 3);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let follower = (leader + 1) % 3;
    let addr = cluster.nodes[leader].http();
    for _ in 0..20 {
        assert_eq!(post(&addr, "/").unwrap().status, 200);
    }
    let session = request_following("POST", &addr, "/api/v1/sessions?name=m", b"").unwrap();
    assert_eq!(session.status, 200, "{}", session.body);
    let id = session.body.trim().trim_matches('"').to_string();
    let lock = request_following("POST", &addr, &format!("/api/v1/locks/r?sessid={id}"), b"");
    assert_eq!(lock.unwrap().body.trim(), "true");

    // The leader's storage figures come from a look every 200 ms.
    let text = wait_for(Duration::from_secs(10), || {
        let text = get(&addr, "/metrics")?.body;
        (sample(&text, "ticketd_storage_used_bytes")? > 0.0).then_some(text)
    })
    .expect("storage figures on the leader");
    for family in FAMILIES {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    assert_eq!(sample(&text, "ticketd_sessions").map(|_| ()), Some(()));
    assert!(sample(&text, "ticketd_ids_served_total").unwrap() >= 20.0);
    // IDs, the session id and the fencing token all come from the
    // reserved counter.
    let reserved = sample(&text, "ticketd_ids_reserved_max").unwrap();
    assert!(reserved >= 22.0, "ticketd_ids_reserved_max {reserved}");
    assert!(sample(&text, "ticketd_leader_changes_total").unwrap() >= 1.0);
    assert!(sample(&text, "ticketd_peer_connects_total").unwrap() >= 2.0);
    assert!(text.contains("ticketd_role{role=\"leader\"} 1"));
    assert_eq!(
        text.matches("ticketd_follower_lag_entries{").count(),
        2,
        "one lag per follower on the leader"
    );
    assert!(text.contains("ticketd_http_request_seconds_count{route=\"ids\"} "));
    assert!(sample(&text, "ticketd_persist_seconds_count").unwrap() >= 1.0);

    let follower_text = get(&cluster.nodes[follower].http(), "/metrics")
        .unwrap()
        .body;
    assert!(follower_text.contains("ticketd_role{role=\"follower\"} 1"));

    for (who, text) in [("leader", &text), ("follower", &follower_text)] {
        match promtool_check(text) {
            Some(result) => {
                if let Err(why) = result {
                    panic!("promtool rejects the {who}'s metrics: {why}\n{text}");
                }
            }
            None if std::env::var_os("CI").is_some() => {
                panic!("promtool is not installed (.ci/run installs prometheus)")
            }
            None => eprintln!("promtool not installed: format not checked"),
        }
    }
}
