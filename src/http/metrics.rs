//! `GET /metrics`: the Prometheus text format (0.0.4), every family with
//! its `# HELP` and `# TYPE` (checked by `promtool check metrics` in the
//! tests). What each metric means, and what to alert on, is in the
//! README's "Operating" section.

use std::fmt::Write as _;

use tiny_http::Method;

use super::respond::{self, Answer};
use super::{Context, wrong_method};
use crate::metrics::{header, render_process};
use crate::node::Counters;
use crate::raft::Role;

pub fn handle(method: &Method, context: &Context) -> Answer {
    if *method != Method::Get {
        return wrong_method(method, "GET");
    }
    respond::answer(200, "text/plain; version=0.0.4", render(context))
}

fn render(context: &Context) -> String {
    let shared = &context.node.shared;
    let status = shared.status();
    let c = &shared.counters;
    let mut out = String::new();
    let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    };
    let counter = |out: &mut String, name: &str, help: &str, value: u64| {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    };

    header(
        &mut out,
        "ticketd_build_info",
        "gauge",
        "Always 1; the version of this binary as a label.",
    );
    let _ = writeln!(
        out,
        "ticketd_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    header(
        &mut out,
        "ticketd_role",
        "gauge",
        "1 for this node's Raft role, 0 for the others.",
    );
    for role in [
        Role::Follower,
        Role::PreCandidate,
        Role::Candidate,
        Role::Leader,
    ] {
        let _ = writeln!(
            out,
            "ticketd_role{{role=\"{}\"}} {}",
            role.as_str(),
            u8::from(status.role == role)
        );
    }
    gauge(&mut out, "ticketd_term", "Current Raft term.", status.term);
    gauge(
        &mut out,
        "ticketd_leader_id",
        "Node ID of the leader this node knows of (0: none).",
        status.leader,
    );
    counter(
        &mut out,
        "ticketd_leader_changes_total",
        "Times this node saw a new leader.",
        Counters::get(&c.leader_changes),
    );
    gauge(
        &mut out,
        "ticketd_commit_index",
        "Raft commit index.",
        status.commit,
    );
    gauge(
        &mut out,
        "ticketd_applied_index",
        "Last applied index.",
        status.applied,
    );
    gauge(
        &mut out,
        "ticketd_snapshot_index",
        "Index of the last snapshot (the log is compacted up to it).",
        status.snapshot_index,
    );
    header(
        &mut out,
        "ticketd_follower_lag_entries",
        "gauge",
        "Leader only: log entries each follower lacks.",
    );
    for (id, lag) in &status.follower_lag {
        let _ = writeln!(
            out,
            "ticketd_follower_lag_entries{{follower=\"{id}\"}} {lag}"
        );
    }
    gauge(
        &mut out,
        "ticketd_sessions",
        "Live sessions.",
        status.sessions,
    );
    gauge(&mut out, "ticketd_locks", "Held locks.", status.locks);
    gauge(
        &mut out,
        "ticketd_lock_waiters",
        "Leader only: lock and claim requests parked with ?wait=.",
        status.waiters,
    );
    counter(
        &mut out,
        "ticketd_ids_served_total",
        "IDs handed out by this node.",
        shared.ids.served_total(),
    );
    gauge(
        &mut out,
        "ticketd_ids_reserved_max",
        "Largest ID the cluster ever reserved, as this node applied it (no ID above it was served; restore --next-id takes more than the cluster's largest value).",
        status.ids_reserved_max,
    );
    gauge(
        &mut out,
        "ticketd_storage_map_bytes",
        "Size of the LMDB map (--db_size), which bounds LMDB and the WAL together.",
        status.storage_map_bytes,
    );
    gauge(
        &mut out,
        "ticketd_storage_used_bytes",
        "Bytes of the store holding live data: LMDB's pages and the WAL's segments.",
        status.storage_used_bytes,
    );
    gauge(
        &mut out,
        "ticketd_storage_wal_bytes",
        "Bytes written in the WAL's live segments (part of ticketd_storage_used_bytes).",
        status.storage_wal_bytes,
    );
    gauge(
        &mut out,
        "ticketd_storage_free_bytes",
        "Bytes of the map (--db_size) still free for LMDB and the WAL.",
        status
            .storage_map_bytes
            .saturating_sub(status.storage_used_bytes),
    );
    gauge(
        &mut out,
        "ticketd_storage_full",
        "1 while writes answer 507 (the map is nearly full).",
        u64::from(status.storage_full),
    );
    counter(
        &mut out,
        "ticketd_fsyncs_total",
        "Durable log writes.",
        Counters::get(&c.fsyncs),
    );
    header(
        &mut out,
        "ticketd_fsync_seconds_total",
        "counter",
        "Time spent in durable log writes.",
    );
    let _ = writeln!(
        out,
        "ticketd_fsync_seconds_total {}",
        Counters::get(&c.fsync_micros_total) as f64 / 1e6
    );
    header(
        &mut out,
        "ticketd_persist_seconds",
        "histogram",
        "Duration of one durable log write (its fsync included).",
    );
    c.persist_seconds
        .snapshot()
        .render(&mut out, "ticketd_persist_seconds", "");
    header(
        &mut out,
        "ticketd_persist_lock_wait_seconds",
        "histogram",
        "Of each durable log write, the wait for the store (used by another thread).",
    );
    c.persist_lock_wait_seconds.snapshot().render(
        &mut out,
        "ticketd_persist_lock_wait_seconds",
        "",
    );
    header(
        &mut out,
        "ticketd_persist_sync_seconds",
        "histogram",
        "Of each durable log write, the fdatasync of the write-ahead log alone.",
    );
    c.persist_sync_seconds
        .snapshot()
        .render(&mut out, "ticketd_persist_sync_seconds", "");
    header(
        &mut out,
        "ticketd_entries_per_persist",
        "histogram",
        "Log entries per durable write (group commit).",
    );
    c.entries_per_persist
        .snapshot()
        .render(&mut out, "ticketd_entries_per_persist", "");
    counter(
        &mut out,
        "ticketd_entries_persisted_total",
        "Log entries written.",
        Counters::get(&c.entries_persisted),
    );
    counter(
        &mut out,
        "ticketd_proposals_total",
        "Commands proposed.",
        Counters::get(&c.proposals),
    );
    counter(
        &mut out,
        "ticketd_peer_messages_sent_total",
        "Raft messages sent.",
        Counters::get(&c.messages_sent),
    );
    counter(
        &mut out,
        "ticketd_peer_messages_received_total",
        "Raft messages received.",
        Counters::get(&c.messages_received),
    );
    counter(
        &mut out,
        "ticketd_peer_connects_total",
        "Outbound peer connections made: one per peer at start, one per reconnect.",
        Counters::get(&c.peer_connects),
    );
    header(
        &mut out,
        "ticketd_http_requests_total",
        "counter",
        "HTTP requests by route and status.",
    );
    for ((route, code), count) in context.counts.snapshot() {
        let _ = writeln!(
            out,
            "ticketd_http_requests_total{{route=\"{route}\",status=\"{code}\"}} {count}"
        );
    }
    header(
        &mut out,
        "ticketd_http_request_seconds",
        "histogram",
        "Time to answer an HTTP request, by route.",
    );
    for (route, buckets) in context.counts.latency() {
        buckets.render(
            &mut out,
            "ticketd_http_request_seconds",
            &format!("route=\"{route}\","),
        );
    }
    render_process(&mut out, shared.started_unix);
    out
}
