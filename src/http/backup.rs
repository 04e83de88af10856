//! `GET /api/v1/backup` (admin): a consistent copy of the state in the
//! backup format (`crate::backup`), for `ticketd restore`.
//!
//! Only the leader answers, under its lease, like every other read: a
//! follower's applied state may lag, and a backup taken from it could
//! miss a session or lock a client already saw acknowledged. A follower
//! redirects with 307 (the method is kept; `curl -L` follows it). The
//! node thread only clones the applied state; encoding and the checksum
//! happen here, on the request's own thread.

use tiny_http::Method;

use super::respond::{self, Answer};
use super::{Context, not_here, wrong_method};
use crate::backup::Backup;
use crate::node::{Input, PROPOSAL_TIMEOUT};

pub fn handle(method: &Method, url: &str, context: &Context) -> Answer {
    if *method != Method::Get {
        return wrong_method(method, "GET");
    }
    if let Some(answer) = not_here(context, 307, url) {
        return answer;
    }
    let view = match context.node.call(Input::Backup, PROPOSAL_TIMEOUT) {
        Ok(view) => view,
        Err(error) => return respond::node_error(&error, 307, url),
    };
    let taken_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let bytes = Backup::encode(
        &view.state,
        view.cluster_id,
        view.applied,
        view.term,
        taken_unix_ms,
    );
    let name = format!(
        "attachment; filename=\"ticketd-{:016x}-{}.backup\"",
        view.cluster_id, view.applied
    );
    let mut response = respond::bytes(200, "application/octet-stream", bytes);
    for (field, value) in [
        ("Content-Disposition", name),
        ("Ticketd-Backup-Index", view.applied.to_string()),
        ("Ticketd-Ids-High", view.state.high().to_string()),
    ] {
        if let Ok(header) = tiny_http::Header::from_bytes(field.as_bytes(), value.as_bytes()) {
            response = response.with_header(header);
        }
    }
    response
}
