//! HTTP request targets and authorization (src/http/request.rs, auth.rs):
//! method, URL and Authorization header as a client sends them.
//! Properties: no panic; parsed segments are never empty; a parse of the
//! URL is deterministic; the open probes never need a token.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use ticketd::http::{Target, Tokens, percent_decode};
use ticketd::secret::Secret;
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
    // url, then an optional Authorization value after the first newline.
    let (url, authorization) = match text.split_once('\n') {
        Some((url, header)) => (url, Some(header)),
        None => (text, None),
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
});
