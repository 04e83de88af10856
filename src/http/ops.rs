//! Operating endpoints: health and readiness, Prometheus metrics, the
//! status page, and cluster membership and leadership transfer.

use std::fmt::Write as _;
use std::time::Duration;

use tiny_http::Method;

use super::request::Target;
use super::respond::{self, Answer};
use super::{Context, wrong_method};
use crate::node::{Counters, Input, NodeError, PROPOSAL_TIMEOUT, Status};
use crate::raft::ConfChange;
use crate::ticket::string_json;

pub fn healthz(method: &Method, context: &Context) -> Answer {
    if *method != Method::Get {
        return wrong_method(method, "GET");
    }
    if context.node.shared.status().removed {
        return respond::error(
            503,
            "this node is no longer a member of the cluster; stopping",
        );
    }
    respond::text(200, "ok\n".into())
}

pub fn readyz(method: &Method, context: &Context) -> Answer {
    if *method != Method::Get {
        return wrong_method(method, "GET");
    }
    let status = context.node.shared.status();
    if status.leader == 0 {
        return respond::error(503, "no leader known");
    }
    if status.applied < status.commit {
        return respond::error(
            503,
            &format!(
                "applied {} of {} committed entries",
                status.applied, status.commit
            ),
        );
    }
    respond::text(200, "ready\n".into())
}

pub fn status(method: &Method, context: &Context) -> Answer {
    if *method != Method::Get {
        return wrong_method(method, "GET");
    }
    let shared = &context.node.shared;
    let status = shared.status();
    let uptime = shared.started.elapsed();
    let counters = &shared.counters;
    let fsyncs = Counters::get(&counters.fsyncs);
    let entries = Counters::get(&counters.entries_persisted);
    let mut out = String::from("{");
    let _ = write!(
        out,
        "\"Version\":{},\"Started\":{},\"Uptime\":{},\"UptimeSeconds\":{},",
        string_json(env!("CARGO_PKG_VERSION")),
        string_json(&rfc3339(shared.started_unix)),
        string_json(&format!("{:.3}s", uptime.as_secs_f64())),
        uptime.as_secs()
    );
    let _ = write!(
        out,
        "\"Id\":{},\"Cluster\":{},\"Role\":{},\"Term\":{},\"Leader\":{},\"LeaderHttp\":{},",
        status.id,
        string_json(&format!("{:016x}", status.cluster_id)),
        string_json(status.role.as_str()),
        status.term,
        status.leader,
        string_json(status.leader_http.as_deref().unwrap_or(""))
    );
    let _ = write!(
        out,
        "\"CommitIndex\":{},\"AppliedIndex\":{},\"FirstIndex\":{},\"LastIndex\":{},\"SnapshotIndex\":{},",
        status.commit, status.applied, status.first_index, status.last_index, status.snapshot_index
    );
    let per_fsync = if fsyncs == 0 {
        0.0
    } else {
        entries as f64 / fsyncs as f64
    };
    let _ = write!(
        out,
        "\"Fsyncs\":{fsyncs},\"EntriesPerFsync\":{per_fsync:.2},\"Sessions\":{},\"Locks\":{},\"Waiters\":{},\"StorageFull\":{},\"Members\":{}}}",
        status.sessions,
        status.locks,
        status.waiters,
        status.storage_full,
        members_json(&status)
    );
    respond::json(out)
}

fn members_json(status: &Status) -> String {
    let mut out = String::from("[");
    for (n, (id, member)) in status.members.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"Id\":{id},\"Peer\":{},\"Http\":{},\"Voter\":{},\"Leader\":{}}}",
            string_json(&member.peer_addr),
            string_json(&member.http_addr),
            member.voter,
            *id == status.leader
        );
    }
    out.push(']');
    out
}

/// `GET /api/v1/cluster`, `POST|DELETE /api/v1/cluster/members[/{id}]`,
/// `POST /api/v1/cluster/transfer?to=`, `POST /api/v1/cluster/leave`.
pub fn cluster(
    method: &Method,
    rest: &[&str],
    target: &Target,
    url: &str,
    context: &Context,
) -> (&'static str, Answer) {
    let status = context.node.shared.status();
    match (rest, method) {
        ([], Method::Get) => ("cluster", respond::json(cluster_json(&status))),
        ([], _) => ("cluster", wrong_method(method, "GET")),
        (["members"], Method::Post) => ("members", add_member(target, url, &status, context)),
        (["members"], _) => ("members", wrong_method(method, "POST")),
        (["members", id], Method::Delete) => ("members", remove_member(id, url, context)),
        (["members", _], _) => ("members", wrong_method(method, "DELETE")),
        (["transfer"], Method::Post) => ("transfer", transfer(target, url, context)),
        (["leave"], Method::Post) => ("leave", leave(context)),
        (["leave"], _) => ("leave", wrong_method(method, "POST")),
        (["transfer"], _) => ("transfer", wrong_method(method, "POST")),
        _ => ("unknown", respond::error(404, "no such path")),
    }
}

fn cluster_json(status: &Status) -> String {
    format!(
        "{{\"Leader\":{},\"Term\":{},\"Members\":{}}}",
        status.leader,
        status.term,
        members_json(status)
    )
}

fn add_member(target: &Target, url: &str, status: &Status, context: &Context) -> Answer {
    let (Some(peer), Some(http)) = (target.param("peer"), target.param("http")) else {
        return respond::error(422, "missing peer or http (both host:port)");
    };
    if !is_host_port(peer) || !is_host_port(http) {
        return respond::error(400, "peer and http must be host:port");
    }
    if let Some((id, _)) = status.members.iter().find(|(_, m)| m.peer_addr == peer) {
        return respond::error(409, &format!("{peer} is already member {id}"));
    }
    // 0: the leader assigns the next id never used in this cluster.
    let id = match target.param("id").map(str::parse::<u64>) {
        None => 0,
        Some(Ok(id)) if id > 0 => id,
        Some(_) => return respond::error(400, "id must be a positive integer"),
    };
    let change = ConfChange::AddLearner {
        id,
        peer_addr: peer.to_string(),
        http_addr: http.to_string(),
    };
    membership_call(change, url, context)
}

fn remove_member(raw: &str, url: &str, context: &Context) -> Answer {
    let Ok(id) = raw.parse::<u64>() else {
        return respond::error(404, &format!("member {raw:?} not found"));
    };
    membership_call(ConfChange::Remove { id }, url, context)
}

fn membership_call(change: ConfChange, url: &str, context: &Context) -> Answer {
    // Removing the leader hands leadership over first: wait for that (a
    // few heartbeats), then the answer redirects to the new leader, which
    // does the removal.
    let deadline = std::time::Instant::now() + PROPOSAL_TIMEOUT;
    let result = loop {
        let change = change.clone();
        let result = context.node.call(
            |reply| Input::ChangeMembers { change, reply },
            PROPOSAL_TIMEOUT,
        );
        match result {
            Err(NodeError::Unavailable(why))
                if why.contains("leadership transfer") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other,
        }
    };
    match result {
        Ok(id) => respond::json(format!("{{\"Id\":{id}}}")),
        Err(NodeError::Unavailable(why)) if why.contains("membership change") => {
            respond::error(409, &why)
        }
        Err(error) => respond::node_error(&error, 307, url),
    }
}

/// `ticketd leave` on a running node: this node asks its leader to remove
/// it and stops once that is committed; the answer comes at once.
fn leave(context: &Context) -> Answer {
    let result = context
        .node
        .call(|reply| Input::Leave { reply }, Duration::from_secs(5));
    match result {
        Ok(()) => respond::json(string_json("Ok")),
        Err(NodeError::Unavailable(why)) => respond::error(409, &why),
        Err(error) => respond::node_error(&error, 307, "/api/v1/cluster/leave"),
    }
}

fn transfer(target: &Target, url: &str, context: &Context) -> Answer {
    let Some(to) = target.param("to").and_then(|raw| raw.parse::<u64>().ok()) else {
        return respond::error(422, "missing or bad to (a member id)");
    };
    let result = context.node.call(
        |reply| Input::Transfer { to, reply },
        Duration::from_secs(5),
    );
    match result {
        Ok(()) => respond::json(string_json("Ok")),
        Err(NodeError::Unavailable(why)) if why.contains("membership") => respond::error(409, &why),
        Err(error) => respond::node_error(&error, 307, url),
    }
}

fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (Howard
/// Hinnant's civil-from-days).
fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_306_332), "2026-11-22T00:12:12Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn host_ports() {
        assert!(is_host_port("127.0.0.1:9001"));
        assert!(!is_host_port("127.0.0.1"));
        assert!(!is_host_port(":9001"));
        assert!(!is_host_port("h:0"));
    }
}
