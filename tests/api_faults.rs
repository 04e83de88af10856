//! Bad input to `/api/v1` (SPEC "Errors", "Bad input and faults"):
//! unknown session/resource/ticket 404, missing `sessid` or `name` 422,
//! body over 1 KiB 413, lock calls on ticket resources and the reverse
//! 409, unknown paths 404, wrong methods 405, bad numbers 400 — each with
//! a one-line body — and the node keeps serving afterwards. Checked on a
//! one-node cluster and through a follower of a three-node cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_support;
mod common;

use api_support::{
    Api, LogsOnPanic, assert_error, assert_ok, base64, claim_grant, dump_has_no_session_named,
    follower_index, keep_alive_exchange, lock_grant, start_cluster,
};

#[test]
fn bad_input_on_one_node() {
    let cluster = start_cluster("api-faults-one", 1);
    let _logs = LogsOnPanic::new(&cluster);
    check_bad_input(&Api::new(&cluster.nodes[0].http()));
}

#[test]
fn bad_input_through_a_follower() {
    let cluster = start_cluster("api-faults-follower", 3);
    let _logs = LogsOnPanic::new(&cluster);
    let follower = &cluster.nodes[follower_index(&cluster)];
    check_bad_input(&Api::new(&follower.http()));
}

fn check_bad_input(api: &Api) {
    let live = api.open_session("live", 60_000);
    assert_ok(&api.issue(&live, "tickets-r", "t", b"data"), "issue");
    assert!(lock_grant(&api.lock(&live, "lock-r")).granted);

    unknown_things(api, &live);
    missing_parameters(api, &live);
    bodies_over_one_kib(api, &live);
    resource_kind_conflicts(api, &live);
    unknown_paths_and_methods(api, &live);
    bad_numbers(api, &live);
    unread_bodies_are_not_requests(api, &live);

    // Nothing above changed what exists.
    let resources = api.dump_resources(None);
    assert_eq!(resources.keys(), ["lock-r", "tickets-r"], "{resources:?}");
    let ticket = resources.get("tickets-r").get("Tickets").get("t");
    assert_eq!(ticket.get("Data").str(), base64(b"data"));
    assert!(ticket.get("Claimant").is_null());
    assert!(lock_grant(&api.lock(&live, "lock-r")).granted, "still held");
    assert!(claim_grant(&api.claim(&live, "tickets-r")).0.granted);
    assert_eq!(api.dump_sessions().len(), 1);
    assert_ok(&api.close(&live), "close");
}

/// Unknown session, resource or ticket: 404.
fn unknown_things(api: &Api, live: &str) {
    let ghost = "999999999";
    let cases: Vec<(&str, String)> = vec![
        ("GET", format!("/sessions/{ghost}")),
        ("PUT", format!("/sessions/{ghost}")),
        ("DELETE", format!("/sessions/{ghost}")),
        // An id that cannot even parse cannot exist either.
        ("GET", "/sessions/not-a-number".into()),
        ("PUT", "/sessions/-1".into()),
        ("DELETE", "/sessions/18446744073709551616".into()),
        // Only the id as issued names the session: no sign, no zeros.
        ("GET", format!("/sessions/0{live}")),
        ("GET", format!("/sessions/%2B{live}")),
        ("PUT", format!("/sessions/00{live}")),
        ("POST", format!("/locks/lock-r?sessid=0{live}")),
        ("POST", format!("/claims/tickets-r?sessid=%2B{live}")),
        ("GET", format!("/claims/tickets-r?sessid=0{live}&name=t")),
        ("POST", format!("/tickets/tickets-r?sessid={ghost}&name=t")),
        (
            "DELETE",
            format!("/tickets/tickets-r?sessid={ghost}&name=t"),
        ),
        ("POST", format!("/claims/tickets-r?sessid={ghost}")),
        ("DELETE", format!("/claims/tickets-r?sessid={ghost}&name=t")),
        ("GET", format!("/claims/tickets-r?sessid={ghost}&name=t")),
        ("POST", format!("/locks/lock-r?sessid={ghost}")),
        ("DELETE", format!("/locks/lock-r?sessid={ghost}")),
        ("POST", "/claims/tickets-r?sessid=xyz".into()),
        // Unknown resources.
        ("DELETE", format!("/tickets/nowhere?sessid={live}&name=t")),
        ("DELETE", format!("/claims/nowhere?sessid={live}&name=t")),
        ("GET", format!("/claims/nowhere?sessid={live}&name=t")),
        ("DELETE", format!("/locks/nowhere?sessid={live}")),
        ("GET", "/dump/resources/nowhere".into()),
        // A name with a newline still gets a one-line answer.
        ("GET", "/dump/resources/two%0Alines".into()),
        (
            "DELETE",
            format!("/tickets/two%0Alines?sessid={live}&name=x%0Ay"),
        ),
        // Unknown ticket on a known resource.
        (
            "DELETE",
            format!("/tickets/tickets-r?sessid={live}&name=nope"),
        ),
    ];
    for (method, path) in &cases {
        let response = api.call(method, path, b"");
        assert_error(&response, 404, &format!("{method} {path}"));
    }
    // As in turbosquid: has-claim of an unknown ticket is false, and
    // releasing a ticket one does not hold is a no-op.
    assert!(!api.has(live, "tickets-r", "nope"));
    assert_ok(&api.release(live, "tickets-r", "nope"), "release unknown");
}

/// Missing (or empty) `sessid` or `name`: 422.
fn missing_parameters(api: &Api, live: &str) {
    let cases: Vec<(&str, String)> = vec![
        ("POST", "/sessions?ttl=1000".into()),
        ("POST", "/sessions?name=&ttl=1000".into()),
        ("POST", "/tickets/tickets-r?name=t".into()),
        ("POST", "/tickets/tickets-r?name=t&sessid=".into()),
        ("POST", format!("/tickets/tickets-r?sessid={live}")),
        ("POST", format!("/tickets/tickets-r?sessid={live}&name=")),
        ("DELETE", "/tickets/tickets-r?name=t".into()),
        ("DELETE", format!("/tickets/tickets-r?sessid={live}")),
        ("POST", "/claims/tickets-r".into()),
        ("POST", "/claims/tickets-r?sessid=".into()),
        ("DELETE", "/claims/tickets-r?name=t".into()),
        ("DELETE", format!("/claims/tickets-r?sessid={live}")),
        ("GET", "/claims/tickets-r?name=t".into()),
        ("GET", format!("/claims/tickets-r?sessid={live}")),
        ("POST", "/locks/lock-r".into()),
        ("DELETE", "/locks/lock-r?sessid=".into()),
    ];
    for (method, path) in &cases {
        let response = api.call(method, path, b"");
        assert_error(&response, 422, &format!("{method} {path}"));
    }
}

/// Ticket data over 1 KiB: 413; exactly 1 KiB is fine.
fn bodies_over_one_kib(api: &Api, live: &str) {
    for size in [1025, 4096, 256 * 1024] {
        let body = vec![b'x'; size];
        let response = api.issue(live, "big", "t", &body);
        assert_error(&response, 413, &format!("{size}-byte body"));
    }
    assert_error(
        &api.call("GET", "/dump/resources/big", b""),
        404,
        "a refused issue creates nothing",
    );
    assert_ok(&api.issue(live, "big", "t", &[b'y'; 1024]), "1 KiB body");
    assert_ok(&api.revoke(live, "big", "t"), "revoke");
}

/// A lock call on a ticket resource, or a ticket call on a lock: 409.
fn resource_kind_conflicts(api: &Api, live: &str) {
    let other = api.open_session("other", 60_000);
    let cases: Vec<(&str, String)> = vec![
        ("POST", format!("/locks/tickets-r?sessid={live}")),
        ("DELETE", format!("/locks/tickets-r?sessid={live}")),
        ("POST", format!("/tickets/lock-r?sessid={live}&name=t")),
        (
            "DELETE",
            format!("/tickets/lock-r?sessid={live}&name=lock-r"),
        ),
        ("POST", format!("/claims/lock-r?sessid={other}")),
        (
            "DELETE",
            format!("/claims/lock-r?sessid={live}&name=lock-r"),
        ),
        ("GET", format!("/claims/lock-r?sessid={live}&name=lock-r")),
        // The lock exists but belongs to another session.
        ("DELETE", format!("/locks/lock-r?sessid={other}")),
    ];
    for (method, path) in &cases {
        let response = api.call(method, path, b"");
        assert_error(&response, 409, &format!("{method} {path}"));
    }
    assert_ok(&api.close(&other), "close");
}

/// Unknown paths: 404; known paths with the wrong method: 405.
fn unknown_paths_and_methods(api: &Api, live: &str) {
    for (method, path) in [
        ("GET", "/api/v1/nope"),
        ("GET", "/api/v1"),
        ("POST", "/api/v1/sessions/1/extra"),
        ("GET", "/api/v1/tickets"),
        ("POST", "/api/v1/locks"),
        ("GET", "/api/v1/dump"),
        ("GET", "/api/v1/dump/other"),
        ("GET", "/api/v2/sessions"),
        ("GET", "/nope"),
    ] {
        let response = common::request_following(method, &api.addr, path, b"")
            .unwrap_or_else(|| panic!("no answer to {method} {path}"));
        assert_error(&response, 404, &format!("{method} {path}"));
    }
    for (method, path) in [
        ("GET", "/sessions".to_string()),
        ("DELETE", "/sessions".to_string()),
        ("POST", format!("/sessions/{live}")),
        ("PATCH", format!("/sessions/{live}")),
        ("GET", format!("/tickets/tickets-r?sessid={live}&name=t")),
        ("PUT", format!("/tickets/tickets-r?sessid={live}&name=t")),
        ("PUT", format!("/claims/tickets-r?sessid={live}")),
        ("GET", format!("/locks/lock-r?sessid={live}")),
        ("PUT", format!("/locks/lock-r?sessid={live}")),
        ("POST", "/dump/sessions".to_string()),
        ("DELETE", "/dump/resources".to_string()),
        ("PUT", "/dump/resources/lock-r".to_string()),
    ] {
        let response = api.call(method, &path, b"");
        assert_error(&response, 405, &format!("{method} {path}"));
        assert!(
            response.header("allow").is_some(),
            "{method} {path}: a 405 says what is allowed"
        );
    }
}

/// A refused body is never read as the next request on a reused
/// connection: neither after a 413 nor after a redirect, which answer
/// without reading it.
fn unread_bodies_are_not_requests(api: &Api, live: &str) {
    let smuggled = b"POST /api/v1/sessions?name=smuggled&ttl=60000 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let mut body = vec![b'x'; 1100];
    body.extend_from_slice(smuggled);
    let mut too_big = format!(
        "POST /api/v1/tickets/smuggle?name=t&sessid={live} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    too_big.extend_from_slice(&body);
    let mut small = format!(
        "POST /api/v1/tickets/smuggle?name=t&sessid={live} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    )
    .into_bytes();
    small.extend_from_slice(smuggled);
    let next = b"GET /api/v1/dump/sessions HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let answers = keep_alive_exchange(&api.addr, &[too_big, next.clone(), small, next])
        .expect("answers on one connection");
    assert!(
        answers[0].status == 413 || answers[0].status == 307,
        "{:?}",
        answers[0]
    );
    assert!(
        answers[1].status == 200 || answers[1].status == 307,
        "{:?}",
        answers[1]
    );
    assert!(
        answers[2].status == 200 || answers[2].status == 307,
        "{:?}",
        answers[2]
    );
    assert!(!answers[3].body.contains("smuggled"), "{:?}", answers[3]);
    assert!(
        dump_has_no_session_named(api, "smuggled"),
        "a body was taken for a request"
    );
    if answers[2].status == 200 {
        assert_ok(&api.revoke(live, "smuggle", "t"), "revoke");
    }
}

/// Numbers that do not parse or are out of range: 400.
fn bad_numbers(api: &Api, live: &str) {
    let cases: Vec<(&str, String)> = vec![
        ("POST", "/sessions?name=n&ttl=abc".into()),
        ("POST", "/sessions?name=n&ttl=0".into()),
        ("POST", "/sessions?name=n&ttl=-5".into()),
        ("POST", format!("/locks/lock-r?sessid={live}&wait=abc")),
        ("POST", format!("/locks/lock-r?sessid={live}&wait=30001")),
        ("POST", format!("/claims/tickets-r?sessid={live}&wait=-1")),
    ];
    for (method, path) in &cases {
        let response = api.call(method, path, b"");
        assert_error(&response, 400, &format!("{method} {path}"));
    }
}
