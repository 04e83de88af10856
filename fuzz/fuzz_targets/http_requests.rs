//! HTTP requests down to the command they propose (src/http/request.rs,
//! auth.rs, plan.rs): method, URL, Authorization header and body as a
//! client sends them.
//! Properties: no panic; parsed segments are never empty; a parse of the
//! URL is deterministic; the open probes never need a token; every
//! `/api/v1` request either is refused with a 4xx or proposes a command
//! that the log's codec decodes back to itself, with names that are never
//! empty.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use ticketd::http::{Plan, Target, Tokens, api_takes_body, percent_decode, plan_api};
use ticketd::secret::Secret;
use ticketd::ticket::Command;
use tiny_http::Method;

const METHODS: [Method; 5] = [
    Method::Get,
    Method::Post,
    Method::Put,
    Method::Delete,
    Method::Head,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // url, then an optional Authorization value after the first newline,
    // then the body after the second.
    let (url, rest) = match text.split_once('\n') {
        Some((url, rest)) => (url, Some(rest)),
        None => (text, None),
    };
    let (authorization, body) = match rest.map(|rest| rest.split_once('\n')) {
        Some(Some((header, body))) => (Some(header), body.as_bytes()),
        Some(None) => (rest, &b""[..]),
        None => (None, &b""[..]),
    };
    let _ = percent_decode(url, selector & 1 == 1);
    let _ = Target::path_and_query(url);
    let Ok(target) = Target::parse(url) else {
        return;
    };
    assert_eq!(Target::parse(url).as_ref(), Ok(&target));
    assert!(target.segments.iter().all(|s| !s.is_empty()));
    for name in ["wait", "ttl", "session", "count"] {
        let _ = target.param(name);
    }
    let Ok(secret) = Secret::parse("fuzz-client-token-0123456789", 16) else {
        return;
    };
    let tokens = Tokens {
        admin: None,
        client: Some(secret),
    };
    let method = &METHODS[usize::from(selector >> 1) % METHODS.len()];
    let remote: SocketAddr = ([10, 0, 0, 1], 4000).into();
    let verdict = tokens.check(method, &target, authorization, Some(&remote));
    if matches!(target.path().as_slice(), ["healthz"] | ["readyz"]) {
        assert!(verdict.is_ok(), "probes are open");
    }
    if let ["api", "v1", rest @ ..] = target.path().as_slice() {
        let body = if api_takes_body(method, rest) {
            body.to_vec()
        } else {
            Vec::new()
        };
        match plan_api(method, rest, &target, Some(remote), body) {
            Plan::Propose { command, .. } => {
                let decoded = Command::decode(&command.encode());
                assert_eq!(decoded.as_ref(), Ok(&command), "log codec round trip");
                assert!(names(&command).iter().all(|name| !name.is_empty()));
            }
            Plan::Refuse { status, .. } => assert!((400..500).contains(&status)),
            Plan::Refresh(_) | Plan::Read(_) | Plan::WrongMethod(_) => {}
        }
    }
});

/// The names a command creates or looks up.
fn names(command: &Command) -> Vec<&str> {
    match command {
        Command::OpenSession { name, .. } => vec![name],
        Command::IssueTicket { resource, name, .. }
        | Command::RevokeTicket { resource, name, .. }
        | Command::Release { resource, name, .. } => vec![resource, name],
        Command::Claim { resource, .. }
        | Command::Lock { resource, .. }
        | Command::Unlock { resource, .. } => vec![resource],
        Command::ReserveIds { .. }
        | Command::CloseSession { .. }
        | Command::ExpireSessions { .. } => Vec::new(),
    }
}
