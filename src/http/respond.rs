//! Building answers: plain text, JSON, redirects, and the one-line error
//! bodies every failure gets.

use std::io::Cursor;

use tiny_http::{Header, Response, StatusCode};

use crate::node::NodeError;

pub type Answer = Response<Cursor<Vec<u8>>>;

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn with_header(response: Answer, name: &str, value: &str) -> Answer {
    match header(name, value) {
        Some(h) => response.with_header(h),
        None => response,
    }
}

/// `body` with `status` and a content type.
pub fn answer(status: u16, content_type: &str, body: String) -> Answer {
    let response = Response::from_data(body.into_bytes()).with_status_code(StatusCode(status));
    with_header(response, "Content-Type", content_type)
}

/// Binary `body` with `status` and a content type.
pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Answer {
    let response = Response::from_data(body).with_status_code(StatusCode(status));
    with_header(response, "Content-Type", content_type)
}

pub fn text(status: u16, body: String) -> Answer {
    answer(status, "text/plain; charset=utf-8", body)
}

/// A JSON document, newline-terminated like Go's `json.Encoder`.
pub fn json(body: String) -> Answer {
    answer(200, "application/json", body + "\n")
}

/// An error: one line saying what was wrong.
pub fn error(status: u16, why: &str) -> Answer {
    let line = why.lines().next().unwrap_or("error");
    text(status, format!("{line}\n"))
}

/// 503 with `Retry-After`, the answer while no leader is known.
pub fn unavailable(why: &str) -> Answer {
    let response = error(503, why);
    with_header(response, "Retry-After", "1")
}

/// 503 while no leader is known (or this leader has no lease yet): the
/// reason phrase and the body both say `Leader unavailable`, as willemt's
/// ticketd did.
pub fn leader_unavailable() -> Answer {
    unavailable("Leader unavailable").with_reason_phrase("Leader unavailable")
}

/// A redirect to the same path on `host` (the leader's HTTP address).
pub fn redirect(status: u16, host: &str, path_and_query: &str) -> Answer {
    let location = format!("http://{host}{path_and_query}");
    let response = error(status, &format!("the leader is at {host}"));
    with_header(response, "Location", &location)
}

/// Adds `Ticketd-Fencing-Token` when there is one.
pub fn with_fencing_token(response: Answer, token: Option<u64>) -> Answer {
    match token {
        Some(token) => with_header(response, "Ticketd-Fencing-Token", &token.to_string()),
        None => response,
    }
}

/// Maps a node refusal to its answer; `redirect_status` is 301 for IDs
/// and 307 for `/api/v1` (which keeps the method and body).
pub fn node_error(error_value: &NodeError, redirect_status: u16, path_and_query: &str) -> Answer {
    match error_value {
        NodeError::NotLeader {
            leader_http: Some(host),
        } => redirect(redirect_status, host, path_and_query),
        NodeError::NotLeader { leader_http: None } | NodeError::NoLeader => leader_unavailable(),
        NodeError::Unavailable(why) => unavailable(why),
        NodeError::StorageFull => error(507, "Insufficient Storage: the data store is full"),
        NodeError::NotFound(why) => error(404, why),
    }
}
