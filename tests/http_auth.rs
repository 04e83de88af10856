//! Bearer tokens on the release binary: with `--client_token` every
//! request but the probes needs it, with `--admin_token` membership
//! changes need that one; a bad token file is a usage error (exit 2).
//! Names that do not decode to UTF-8 are refused with 400.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::ops::run_ticketd;
use common::{Cluster, TempDir, request_with_headers};

const ADMIN: &str = "admin-0123456789abcdef";
const CLIENT: &str = "client-0123456789abcdef";
const OLD_CLIENT: &str = "client-old-0123456789ab";

fn status(addr: &str, method: &str, path: &str, token: Option<&str>) -> u16 {
    let header = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = header
        .as_deref()
        .map(|h| vec![("Authorization", h)])
        .unwrap_or_default();
    request_with_headers(method, addr, path, &headers, b"")
        .map(|r| r.status)
        .unwrap_or(0)
}

#[test]
fn tokens_guard_client_and_admin_calls() {
    let mut cluster = Cluster::new("auth", 1);
    let dir = cluster.dir.path().to_path_buf();
    std::fs::write(dir.join("admin"), format!("{ADMIN}\n")).unwrap();
    // A rotation under way: the new value first, the old one accepted.
    std::fs::write(dir.join("client"), format!("{CLIENT}\n{OLD_CLIENT}\n")).unwrap();
    cluster.nodes[0].extra_args = vec![
        "--admin_token".into(),
        dir.join("admin").display().to_string(),
        "--client_token".into(),
        dir.join("client").display().to_string(),
    ];
    cluster.nodes[0].start();
    let addr = cluster.nodes[0].http();
    let served = common::wait_for(Duration::from_secs(20), || {
        (status(&addr, "POST", "/", Some(CLIENT)) == 200).then_some(())
    });
    assert!(served.is_some(), "{}", cluster.logs());

    assert_eq!(status(&addr, "POST", "/", None), 401);
    assert_eq!(
        status(&addr, "POST", "/", Some("wrong-0123456789abcdef")),
        401
    );
    assert_eq!(status(&addr, "POST", "/", Some(OLD_CLIENT)), 200);
    assert_eq!(status(&addr, "POST", "/", Some(ADMIN)), 200);
    assert_eq!(status(&addr, "GET", "/healthz", None), 200);
    assert_eq!(status(&addr, "GET", "/readyz", None), 200);
    assert_eq!(status(&addr, "GET", "/metrics", None), 401);
    assert_eq!(status(&addr, "GET", "/metrics", Some(CLIENT)), 200);
    assert_eq!(status(&addr, "GET", "/api/v1/status", None), 401);

    let add = "/api/v1/cluster/members?peer=127.0.0.1:1&http=127.0.0.1:2";
    assert_eq!(status(&addr, "POST", add, None), 401);
    assert_eq!(status(&addr, "POST", add, Some(CLIENT)), 401);
    assert_eq!(
        status(&addr, "GET", "/api/v1/dump/sessions", Some(CLIENT)),
        401
    );
    assert_eq!(
        status(&addr, "GET", "/api/v1/dump/sessions", Some(ADMIN)),
        200
    );
    let unauthorized = request_with_headers("POST", &addr, "/", &[], b"").unwrap();
    assert!(
        unauthorized
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer")),
        "{:?}",
        unauthorized.headers
    );
    assert_eq!(unauthorized.body.lines().count(), 1);
    // Nothing was added by the refused calls.
    let cluster_view = request_with_headers(
        "GET",
        &addr,
        "/api/v1/cluster",
        &[("Authorization", &format!("Bearer {CLIENT}"))],
        b"",
    )
    .unwrap();
    // The node's own addresses may start with the same digits: compare
    // whole JSON strings, and count the members.
    assert!(
        !cluster_view.body.contains("\"127.0.0.1:1\"")
            && cluster_view.body.matches("\"Id\":").count() == 1,
        "{}",
        cluster_view.body
    );
}

#[test]
fn a_bad_token_file_is_a_usage_error() {
    let dir = TempDir::new("auth-bad");
    let short = dir.path().join("short");
    std::fs::write(&short, "tooshort\n").unwrap();
    let path = dir.path().join("data").display().to_string();
    for (flag, file) in [
        ("--client_token", short.display().to_string()),
        (
            "--admin_token",
            dir.path().join("missing").display().to_string(),
        ),
    ] {
        let (status, stderr) =
            run_ticketd(&[flag, &file, "--path", &path], Duration::from_secs(10)).expect("exits");
        assert_eq!(status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.starts_with(&format!("ticketd: {flag} ")), "{stderr}");
        assert!(
            !dir.path().join("data").exists(),
            "a refused start made a data dir"
        );
    }
}

#[test]
fn names_that_do_not_decode_to_utf8_are_refused() {
    let cluster = Cluster::start("auth-utf8", 1);
    let addr = cluster.nodes[0].http();
    let session = common::post(&addr, "/api/v1/sessions?name=s").unwrap();
    assert_eq!(session.status, 200, "{}", session.body);
    let id = session.body.trim().trim_matches('"').to_string();
    for bad in ["a%FFb", "a%FEb", "a%C0b"] {
        let response = common::post(&addr, &format!("/api/v1/locks/{bad}?sessid={id}")).unwrap();
        assert_eq!(response.status, 400, "{bad}: {}", response.body);
        assert!(response.body.contains("UTF-8"), "{}", response.body);
    }
    let response = common::post(&addr, &format!("/api/v1/locks/%C3%A9?sessid={id}")).unwrap();
    assert_eq!(response.body.trim(), "true", "a UTF-8 name works");
}
