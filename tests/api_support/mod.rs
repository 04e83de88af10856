//! Helpers for black-box tests of the turbosquid-compatible `/api/v1`:
//! a small JSON reader (no serde in this project), base64, and a client
//! shaped like turbosquid's Go client (`http/client.go`) that follows 307
//! redirects as Go's `net/http` does. Built on `tests/common`.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

pub mod churn;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{Cluster, Response, parse_response, request, request_following, wait_for};

// ---------------------------------------------------------------- JSON

/// A parsed JSON value. Objects keep their members in document order,
/// so tests can check Go's field order too.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number as written.
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Parses one JSON document (surrounding whitespace allowed).
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut parser = Parser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = parser.value(0)?;
        parser.skip_space();
        if parser.at != parser.bytes.len() {
            return Err(format!("trailing bytes at {} in {text:?}", parser.at));
        }
        Ok(value)
    }

    /// Member `key` of an object; panics (with the document) otherwise.
    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(members) => members
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no member {key:?} in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        matches!(self, Json::Obj(members) if members.iter().any(|(k, _)| k == key))
    }

    pub fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }

    pub fn u64(&self) -> u64 {
        match self {
            Json::Num(n) => n.parse().unwrap_or_else(|_| panic!("not a u64: {n}")),
            _ => panic!("not a number: {self:?}"),
        }
    }

    pub fn bool(&self) -> bool {
        match self {
            Json::Bool(b) => *b,
            _ => panic!("not a bool: {self:?}"),
        }
    }

    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(items) => items,
            _ => panic!("not an array: {self:?}"),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// The member names of an object, in document order.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Json::Obj(members) => members.iter().map(|(k, _)| k.as_str()).collect(),
            _ => panic!("not an object: {self:?}"),
        }
    }

    /// The number of members of an object or items of an array.
    pub fn len(&self) -> usize {
        match self {
            Json::Obj(members) => members.len(),
            Json::Arr(items) => items.len(),
            _ => panic!("no length: {self:?}"),
        }
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.at < self.bytes.len() && b" \t\r\n".contains(&self.bytes[self.at]) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        self.skip_space();
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", byte as char, self.at))
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(format!("bad literal at {}", self.at))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > 64 {
            return Err("nested too deep".into());
        }
        self.skip_space();
        match self.peek() {
            Some(b'n') => self.literal("null", Json::Null),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'[') => self.array(depth),
            Some(b'{') => self.object(depth),
            Some(b'-' | b'0'..=b'9') => Ok(self.number()),
            _ => Err(format!("unexpected input at {}", self.at)),
        }
    }

    fn number(&mut self) -> Json {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_digit() || b"-+.eE".contains(&b))
        {
            self.at += 1;
        }
        Json::Num(String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned())
    }

    fn array(&mut self, depth: usize) -> Result<Json, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Json::Arr(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json::Arr(items));
                }
                _ => return Err(format!("bad array at {}", self.at)),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, String> {
        self.expect(b'{')?;
        let mut members: Vec<(String, Json)> = Vec::new();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Json::Obj(members));
        }
        loop {
            self.skip_space();
            let key = self.string()?;
            if members.iter().any(|(k, _)| *k == key) {
                return Err(format!("duplicate key {key:?}"));
            }
            self.expect(b':')?;
            members.push((key, self.value(depth + 1)?));
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json::Obj(members));
                }
                _ => return Err(format!("bad object at {}", self.at)),
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if self.peek() != Some(b'"') {
            return Err(format!("expected a string at {}", self.at));
        }
        self.at += 1;
        let mut out: Vec<u16> = Vec::new();
        let mut text = String::new();
        loop {
            let byte = self.peek().ok_or("unterminated string")?;
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let escape = self.peek().ok_or("unterminated escape")?;
                    self.at += 1;
                    let unit = match escape {
                        b'"' => u16::from(b'"'),
                        b'\\' => u16::from(b'\\'),
                        b'/' => u16::from(b'/'),
                        b'b' => 8,
                        b'f' => 12,
                        b'n' => 10,
                        b'r' => 13,
                        b't' => 9,
                        b'u' => {
                            let hex = self.bytes.get(self.at..self.at + 4).ok_or("short \\u")?;
                            self.at += 4;
                            u16::from_str_radix(
                                std::str::from_utf8(hex).map_err(|e| e.to_string())?,
                                16,
                            )
                            .map_err(|e| e.to_string())?
                        }
                        _ => return Err(format!("bad escape at {}", self.at)),
                    };
                    out.push(unit);
                }
                b if b < 0x20 => return Err(format!("raw control byte at {}", self.at)),
                _ => {
                    // Copy the whole UTF-8 sequence.
                    text.push_str(&String::from_utf16_lossy(&std::mem::take(&mut out)));
                    let start = self.at - 1;
                    let mut end = self.at;
                    while end < self.bytes.len() && (self.bytes[end] & 0xC0) == 0x80 {
                        end += 1;
                    }
                    text.push_str(&String::from_utf8_lossy(&self.bytes[start..end]));
                    self.at = end;
                }
            }
        }
        text.push_str(&String::from_utf16_lossy(&out));
        Ok(text)
    }
}

// ---------------------------------------------------------------- base64

/// Encodes padded standard base64, as Go encodes `[]byte`.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------- URLs

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn enc(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------- client

/// A turbosquid-style client of one node's `/api/v1`. Every call follows
/// 301/307 redirects (keeping method and body), so it may be pointed at
/// a follower.
#[derive(Clone, Debug)]
pub struct Api {
    pub addr: String,
}

/// A lock or claim answer: granted, and the fencing token if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub granted: bool,
    pub token: Option<u64>,
}

impl Api {
    pub fn new(addr: &str) -> Api {
        Api {
            addr: addr.to_string(),
        }
    }

    /// `method /api/v1{path}`, following redirects; panics when no
    /// answer comes (refused, reset, timed out).
    pub fn call(&self, method: &str, path: &str, body: &[u8]) -> Response {
        let full = format!("/api/v1{path}");
        request_following(method, &self.addr, &full, body)
            .unwrap_or_else(|| panic!("no answer to {method} {full} via {}", self.addr))
    }

    /// A call that must answer 200 with a JSON body.
    pub fn json(&self, method: &str, path: &str, body: &[u8]) -> Json {
        let response = self.call(method, path, body);
        json_of(&response, &format!("{method} {path}"))
    }

    /// A call that must answer 200 with the JSON string `expected`.
    pub fn expect_string(&self, method: &str, path: &str, expected: &str) {
        let response = self.call(method, path, b"");
        assert_eq!(response.status, 200, "{method} {path}: {}", response.body);
        assert_eq!(
            response.body,
            format!("\"{expected}\"\n"),
            "{method} {path}"
        );
    }

    /// Opens a session; returns its id (a JSON string in the answer).
    pub fn open_session(&self, name: &str, ttl_ms: u64) -> String {
        let path = format!("/sessions?name={}&ttl={ttl_ms}", enc(name));
        let id = self.json("POST", &path, b"");
        let id = id.str().to_string();
        assert!(!id.is_empty(), "an empty session id");
        id
    }

    pub fn refresh(&self, id: &str) -> Response {
        self.call("PUT", &format!("/sessions/{}", enc(id)), b"")
    }

    pub fn close(&self, id: &str) -> Response {
        self.call("DELETE", &format!("/sessions/{}", enc(id)), b"")
    }

    pub fn get_session(&self, id: &str) -> Response {
        self.call("GET", &format!("/sessions/{}", enc(id)), b"")
    }

    /// The session, which must exist.
    pub fn session(&self, id: &str) -> Json {
        self.json("GET", &format!("/sessions/{}", enc(id)), b"")
    }

    pub fn issue(&self, sessid: &str, resource: &str, name: &str, data: &[u8]) -> Response {
        let path = format!(
            "/tickets/{}?name={}&sessid={}",
            enc(resource),
            enc(name),
            enc(sessid)
        );
        self.call("POST", &path, data)
    }

    pub fn revoke(&self, sessid: &str, resource: &str, name: &str) -> Response {
        let path = format!(
            "/tickets/{}?name={}&sessid={}",
            enc(resource),
            enc(name),
            enc(sessid)
        );
        self.call("DELETE", &path, b"")
    }

    pub fn claim(&self, sessid: &str, resource: &str) -> Response {
        self.call(
            "POST",
            &format!("/claims/{}?sessid={}", enc(resource), enc(sessid)),
            b"",
        )
    }

    pub fn claim_wait(&self, sessid: &str, resource: &str, wait_ms: u64) -> Response {
        self.call(
            "POST",
            &format!(
                "/claims/{}?sessid={}&wait={wait_ms}",
                enc(resource),
                enc(sessid)
            ),
            b"",
        )
    }

    pub fn release(&self, sessid: &str, resource: &str, name: &str) -> Response {
        let path = format!(
            "/claims/{}?name={}&sessid={}",
            enc(resource),
            enc(name),
            enc(sessid)
        );
        self.call("DELETE", &path, b"")
    }

    pub fn has_claim(&self, sessid: &str, resource: &str, name: &str) -> Response {
        let path = format!(
            "/claims/{}?name={}&sessid={}",
            enc(resource),
            enc(name),
            enc(sessid)
        );
        self.call("GET", &path, b"")
    }

    /// HasTicket: must answer 200 with a JSON bool.
    pub fn has(&self, sessid: &str, resource: &str, name: &str) -> bool {
        let response = self.has_claim(sessid, resource, name);
        json_of(&response, "has claim").bool()
    }

    pub fn lock(&self, sessid: &str, resource: &str) -> Response {
        self.call(
            "POST",
            &format!("/locks/{}?sessid={}", enc(resource), enc(sessid)),
            b"",
        )
    }

    pub fn lock_wait(&self, sessid: &str, resource: &str, wait_ms: u64) -> Response {
        self.call(
            "POST",
            &format!(
                "/locks/{}?sessid={}&wait={wait_ms}",
                enc(resource),
                enc(sessid)
            ),
            b"",
        )
    }

    pub fn unlock(&self, sessid: &str, resource: &str) -> Response {
        self.call(
            "DELETE",
            &format!("/locks/{}?sessid={}", enc(resource), enc(sessid)),
            b"",
        )
    }

    pub fn dump_sessions(&self) -> Json {
        self.json("GET", "/dump/sessions", b"")
    }

    /// `/dump/resources` or `/dump/resources/{name}`.
    pub fn dump_resources(&self, name: Option<&str>) -> Json {
        match name {
            Some(name) => self.json("GET", &format!("/dump/resources/{}", enc(name)), b""),
            None => self.json("GET", "/dump/resources", b""),
        }
    }
}

/// The JSON body of a 200 answer, checking Go's framing
/// (`application/json`, one document and a newline).
pub fn json_of(response: &Response, what: &str) -> Json {
    assert_eq!(response.status, 200, "{what}: {}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    assert!(
        response.body.ends_with('\n') && response.body.matches('\n').count() == 1,
        "{what}: one JSON document and a newline: {:?}",
        response.body
    );
    Json::parse(&response.body).unwrap_or_else(|e| panic!("{what}: {e}: {}", response.body))
}

/// A lock answer: `true`/`false`, with the fencing token on a grant only.
pub fn lock_grant(response: &Response) -> Grant {
    let granted = json_of(response, "lock").bool();
    grant_with_token(response, granted)
}

/// A claim answer `{Claimed, Ticket}`, with the fencing token on a grant
/// only.
pub fn claim_grant(response: &Response) -> (Grant, Json) {
    let body = json_of(response, "claim");
    assert_eq!(body.keys(), ["Claimed", "Ticket"], "claim answer shape");
    let granted = body.get("Claimed").bool();
    let ticket = body.get("Ticket").clone();
    (grant_with_token(response, granted), ticket)
}

fn grant_with_token(response: &Response, granted: bool) -> Grant {
    let token = response.header("ticketd-fencing-token").map(|t| {
        t.parse::<u64>()
            .unwrap_or_else(|_| panic!("a fencing token is a u64: {t:?}"))
    });
    if granted {
        assert!(token.is_some(), "a grant carries a fencing token");
    } else {
        assert_eq!(token, None, "a refusal carries no fencing token");
    }
    Grant { granted, token }
}

/// An error answer: the status, and a body of exactly one non-empty line.
pub fn assert_error(response: &Response, status: u16, what: &str) {
    assert_eq!(
        response.status, status,
        "{what}: expected {status}, got {}: {:?}",
        response.status, response.body
    );
    let body = &response.body;
    assert!(
        body.ends_with('\n') && body.matches('\n').count() == 1 && body.trim().len() > 1,
        "{what}: the error body is one line: {body:?}"
    );
}

// ---------------------------------------------------------------- shapes

/// Go's field order of `ticket.Session`.
pub const SESSION_FIELDS: [&str; 6] = ["Name", "Id", "Src", "Ttl", "Tickets", "Issuances"];
/// Go's field order of `ticket.Ticket`.
pub const TICKET_FIELDS: [&str; 5] = ["Name", "ResourceName", "Data", "Issuer", "Claimant"];
/// Go's field order of `ticket.Resource`.
pub const RESOURCE_FIELDS: [&str; 3] = ["Name", "IsLock", "Tickets"];

/// Checks a full session's shape; nested tickets are checked too.
pub fn assert_session_shape(session: &Json) {
    assert_eq!(
        session.keys(),
        SESSION_FIELDS,
        "Session fields: {session:?}"
    );
    assert!(matches!(session.get("Id"), Json::Str(_)), "Id is a string");
    assert!(
        matches!(session.get("Src"), Json::Str(_)),
        "Src is a string"
    );
    session.get("Ttl").u64();
    for list in ["Tickets", "Issuances"] {
        for ticket in session.get(list).arr() {
            assert_ticket_shape(ticket);
        }
    }
}

/// A ticket's shape: nested sessions carry empty lists, or are null.
pub fn assert_ticket_shape(ticket: &Json) {
    assert_eq!(ticket.keys(), TICKET_FIELDS, "Ticket fields: {ticket:?}");
    assert!(matches!(ticket.get("Data"), Json::Str(_)), "Data is base64");
    for role in ["Issuer", "Claimant"] {
        let nested = ticket.get(role);
        if !nested.is_null() {
            assert_eq!(nested.keys(), SESSION_FIELDS, "{role} fields");
            assert_eq!(nested.get("Tickets").len(), 0, "nested {role} lists");
            assert_eq!(nested.get("Issuances").len(), 0, "nested {role} lists");
        }
    }
}

pub fn assert_resource_shape(resource: &Json) {
    assert_eq!(resource.keys(), RESOURCE_FIELDS, "Resource fields");
    resource.get("IsLock").bool();
    if let Json::Obj(tickets) = resource.get("Tickets") {
        for (name, ticket) in tickets {
            assert_ticket_shape(ticket);
            assert_eq!(ticket.get("Name").str(), name);
        }
    } else {
        panic!("Tickets is a map: {resource:?}");
    }
}

// ---------------------------------------------------------------- clusters

/// Starts `n` nodes that check session expiry every 100 ms, and waits
/// until a leader serves and every follower knows where it is.
pub fn start_cluster(name: &str, n: usize) -> Cluster {
    let mut cluster = Cluster::new(name, n);
    for node in &mut cluster.nodes {
        node.extra_args = vec!["--expire".into(), "100".into()];
        node.start();
    }
    cluster.wait_leader(Duration::from_secs(20));
    wait_followers_know_leader(&cluster, Duration::from_secs(20));
    cluster
}

/// The index of the node that leads now (by its own status).
pub fn leader_index(cluster: &Cluster, timeout: Duration) -> usize {
    wait_for(timeout, || {
        cluster
            .nodes
            .iter()
            .position(|n| n.is_running() && n.is_leader())
    })
    .unwrap_or_else(|| panic!("no leader; logs:\n{}", cluster.logs()))
}

/// Waits until every running follower redirects `/api/v1` to a leader.
pub fn wait_followers_know_leader(cluster: &Cluster, timeout: Duration) {
    let ok = wait_for(timeout, || {
        cluster
            .nodes
            .iter()
            .filter(|n| n.is_running() && !n.is_leader())
            .all(|n| {
                request("GET", &n.http(), "/api/v1/dump/sessions", b"")
                    .is_some_and(|r| r.status == 307 && r.header("location").is_some())
            })
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "followers do not know the leader; logs:\n{}",
        cluster.logs()
    );
}

/// A follower of a cluster that has a leader.
pub fn follower_index(cluster: &Cluster) -> usize {
    let leader = leader_index(cluster, Duration::from_secs(20));
    (leader + 1) % cluster.nodes.len()
}

// ---------------------------------------------------------------- heartbeat

/// Refreshes a session every `interval` from a thread, trying each of
/// `addrs` in turn until one answers (so it rides through a failover),
/// like turbosquid's `RunHeartbeat` with `ignoreNonHttpErrors`.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    /// Refreshes answered 200.
    pub ok: Arc<AtomicU64>,
    /// Refreshes answered 404: the session was gone.
    pub lost: Arc<AtomicU64>,
    /// The longest time between two successful refreshes, in ms.
    pub gap_ms_max: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    pub fn start(addrs: Vec<String>, id: &str, interval: Duration) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let gap_ms_max = Arc::new(AtomicU64::new(0));
        let (s, o, l, g) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&lost),
            Arc::clone(&gap_ms_max),
        );
        let path = format!("/api/v1/sessions/{}", enc(id));
        let thread = std::thread::spawn(move || {
            let mut last_ok = Instant::now();
            let mut next = 0;
            while !s.load(Ordering::SeqCst) {
                let started = Instant::now();
                for _ in 0..addrs.len() {
                    let addr = &addrs[next % addrs.len()];
                    match request_following("PUT", addr, &path, b"").map(|r| r.status) {
                        Some(200) => {
                            let gap = last_ok.elapsed().as_millis() as u64;
                            g.fetch_max(gap, Ordering::SeqCst);
                            last_ok = Instant::now();
                            o.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Some(404) => {
                            l.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        _ => next += 1,
                    }
                }
                let spent = started.elapsed();
                if spent < interval {
                    std::thread::sleep(interval - spent);
                }
            }
        });
        Heartbeat {
            stop,
            ok,
            lost,
            gap_ms_max,
            thread: Some(thread),
        }
    }

    /// Stops refreshing and waits for the thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Prints the tail of every node's log if the test panics while this
/// guard lives. It holds only paths, so the cluster stays mutable.
pub struct LogsOnPanic {
    logs: Vec<std::path::PathBuf>,
}

impl LogsOnPanic {
    pub fn new(cluster: &Cluster) -> LogsOnPanic {
        let logs = (0..cluster.nodes.len())
            .map(|i| cluster.dir.path().join(format!("node{i}.log")))
            .collect();
        LogsOnPanic { logs }
    }
}

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (i, path) in self.logs.iter().enumerate() {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!("--- node {i} ---\n{tail}");
        }
    }
}

/// Asserts `"Ok"` (turbosquid's success string for most changes).
pub fn assert_ok(response: &Response, what: &str) {
    assert_eq!(response.status, 200, "{what}: {}", response.body);
    assert_eq!(response.body, "\"Ok\"\n", "{what}");
}

/// `Session` as it appears nested in a ticket: its head, empty lists.
pub fn nested_session_json(session: &Json) -> String {
    format!(
        r#"{{"Name":{},"Id":"{}","Src":"{}","Ttl":{},"Tickets":[],"Issuances":[]}}"#,
        go_string(session.get("Name").str()),
        session.get("Id").str(),
        session.get("Src").str(),
        session.get("Ttl").u64()
    )
}

/// A JSON string literal for plain text (no characters Go escapes).
pub fn go_string(text: &str) -> String {
    assert!(
        !text.chars().any(|c| c < ' ' || "\"\\<>&".contains(c)),
        "go_string is for plain text only"
    );
    format!("\"{text}\"")
}

/// Whether no session in the dump is called `name`.
pub fn dump_has_no_session_named(api: &Api, name: &str) -> bool {
    match api.dump_sessions() {
        Json::Obj(sessions) => sessions.iter().all(|(_, s)| s.get("Name").str() != name),
        other => panic!("the session dump is a map: {other:?}"),
    }
}

/// Sends `requests` (raw HTTP/1.1, keep-alive) one after another on one
/// connection, as Go's client reuses connections, and reads one answer
/// to each (framed by `Content-Length`). None on any I/O error.
pub fn keep_alive_exchange(addr: &str, requests: &[Vec<u8>]) -> Option<Vec<Response>> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    let mut answers = Vec::new();
    let mut buffer: Vec<u8> = Vec::new();
    for raw in requests {
        stream.write_all(raw).ok()?;
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        answers.push(parse_response(&buffer[..head_end + length])?);
        buffer.drain(..head_end + length);
    }
    Some(answers)
}
