//! Sessions, locks and tickets written by concurrent clients while nodes
//! are killed (`kill -9`) under them, and the checks of everything they
//! were acknowledged. Built on `tests/common/churn.rs` (whole answers
//! only, the real-time order check of minted numbers, varied pauses).
//!
//! Each client has a session of its own and, until stopped, repeatedly:
//! try-locks one of two shared locks and unlocks it again (an unlock is
//! retried until its answer says the lock is not ours, so a lost answer
//! never leaves it held unknowingly), takes a lock it never gives back,
//! issues a ticket, and now and then opens another session. Afterwards:
//! - session ids and fencing tokens are minted from one counter: none is
//!   acknowledged twice, and each is larger than every one acknowledged
//!   before its request started (leader changes included);
//! - no two sessions were ever acknowledged holding a shared lock at
//!   once (from the grant's answer to the start of its unlock);
//! - every acknowledged session is there, every lock kept is still held
//!   by its session with its token (a re-lock answers the same grant;
//!   another session is refused), and every acknowledged ticket is there
//!   with its data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Api, Json, base64, enc, lock_grant};
use crate::common::churn::{Batch, check_batches, pause_ms, whole_body};
use crate::common::{Cluster, Response, request_following, wait_for};

/// Shared locks the clients contend for.
pub const SHARED_LOCKS: usize = 2;
/// Sessions live this long (TTL ms): the test never waits for expiry.
const TTL_MS: u64 = 600_000;

/// One acknowledged grant of a shared lock.
#[derive(Debug, Clone)]
pub struct SharedGrant {
    pub lock: String,
    pub session: String,
    pub token: u64,
    pub started: Instant,
    pub finished: Instant,
    /// When the first unlock request was sent: the lock was surely held
    /// from `finished` until then. None: no unlock settled.
    pub unlock_sent: Option<Instant>,
}

/// What one client was acknowledged.
#[derive(Debug, Default, Clone)]
pub struct Acknowledged {
    /// Session ids (with when their open ran).
    pub sessions: Vec<(String, Instant, Instant)>,
    pub shared: Vec<SharedGrant>,
    /// Locks never released: (lock, session, token, started, finished).
    pub kept: Vec<(String, String, u64, Instant, Instant)>,
    /// Tickets issued: (resource, name, data, issuer).
    pub tickets: Vec<(String, String, String, String)>,
}

/// Concurrent clients writing until stopped.
pub struct Workload {
    stop: Arc<AtomicBool>,
    /// Acknowledged writes of all clients so far.
    pub progress: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Acknowledged>>,
}

/// `method /api/v1{path}` through `addr` (following redirects): the
/// status and body of an answer that arrived whole, else None.
fn call(addr: &str, method: &str, path: &str, body: &[u8]) -> Option<(u16, String, Response)> {
    let response = request_following(method, addr, &format!("/api/v1{path}"), body)?;
    let text = whole_body(&response)?.to_string();
    Some((response.status, text, response))
}

/// A lock answer: Some(Some(token)) granted, Some(None) refused, None no
/// whole 200 answer (the outcome is unknown).
fn lock_answer(answer: Option<(u16, String, Response)>) -> Option<Option<u64>> {
    let (status, body, response) = answer?;
    if status != 200 {
        return None;
    }
    match body.trim() {
        "true" => {
            let token = response.header("ticketd-fencing-token")?.parse().ok()?;
            Some(Some(token))
        }
        "false" => Some(None),
        other => panic!("a lock answer is true or false: {other:?}"),
    }
}

impl Workload {
    /// Starts `clients` clients, client `i` sending to `addrs` in turn
    /// from `addrs[i % len]`. `ticket_every`: issue a ticket every that
    /// many rounds (a small state compacts often).
    pub fn start(addrs: &[String], clients: usize, ticket_every: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|i| {
                let (stop, progress) = (Arc::clone(&stop), Arc::clone(&progress));
                let addrs = addrs.to_vec();
                thread::spawn(move || client(i, &addrs, &stop, &progress, ticket_every))
            })
            .collect();
        Workload {
            stop,
            progress,
            threads,
        }
    }

    pub fn acknowledged(&self) -> u64 {
        self.progress.load(Ordering::SeqCst)
    }

    /// Stops every client (each finishes, or gives up, its current
    /// step) and returns what they were acknowledged.
    pub fn stop(mut self) -> Vec<Acknowledged> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .drain(..)
            .map(|t| t.join().expect("a churn client panicked"))
            .collect()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn client(
    me: usize,
    addrs: &[String],
    stop: &AtomicBool,
    progress: &AtomicU64,
    ticket_every: u64,
) -> Acknowledged {
    let mut out = Acknowledged::default();
    let mut turn = me;
    let mut next_addr = || {
        turn += 1;
        addrs[turn % addrs.len()].clone()
    };
    let open = |addr: &str, name: &str, out: &mut Acknowledged| -> Option<String> {
        let started = Instant::now();
        let path = format!("/sessions?name={}&ttl={TTL_MS}", enc(name));
        let (status, body, _) = call(addr, "POST", &path, b"")?;
        if status != 200 {
            return None;
        }
        let id = Json::parse(&body).ok()?.str().to_string();
        out.sessions.push((id.clone(), started, Instant::now()));
        progress.fetch_add(1, Ordering::SeqCst);
        Some(id)
    };
    // A session of its own first (a lost answer only leaves a session
    // nobody uses).
    let session = loop {
        if stop.load(Ordering::SeqCst) {
            return out;
        }
        match open(&next_addr(), &format!("churn-{me}"), &mut out) {
            Some(id) => break id,
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    let sessid = enc(&session);
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let mut failed = false;

        // A shared lock, taken and given back.
        let lock = format!("churn-shared-{}", n as usize % SHARED_LOCKS);
        let path = format!("/locks/{lock}?sessid={sessid}");
        let started = Instant::now();
        match lock_answer(call(&next_addr(), "POST", &path, b"")) {
            Some(None) => {}
            Some(Some(token)) => {
                let finished = Instant::now();
                progress.fetch_add(1, Ordering::SeqCst);
                let unlock_sent = unlock_until_settled(&mut next_addr, &path);
                out.shared.push(SharedGrant {
                    lock: lock.clone(),
                    session: session.clone(),
                    token,
                    started,
                    finished,
                    unlock_sent,
                });
            }
            None => {
                // Perhaps granted: let go of it before anything else.
                failed = true;
                unlock_until_settled(&mut next_addr, &path);
            }
        }

        // A lock kept for good (an unknown outcome is simply not checked).
        if n.is_multiple_of(3) {
            let lock = format!("churn-kept-{me}-{n}");
            let started = Instant::now();
            let path = format!("/locks/{lock}?sessid={sessid}");
            match lock_answer(call(&next_addr(), "POST", &path, b"")) {
                Some(Some(token)) => {
                    progress.fetch_add(1, Ordering::SeqCst);
                    out.kept
                        .push((lock, session.clone(), token, started, Instant::now()));
                }
                Some(None) => panic!("client {me}: its own new lock {lock} was refused"),
                None => failed = true,
            }
        }

        // A ticket of its own.
        if n.is_multiple_of(ticket_every) {
            let resource = format!("churn-tickets-{me}");
            let name = format!("t{n}");
            let data = format!("client {me} ticket {n}");
            let path = format!("/tickets/{resource}?name={name}&sessid={sessid}");
            match call(&next_addr(), "POST", &path, data.as_bytes()) {
                Some((200, body, _)) => {
                    assert_eq!(body, "\"Ok\"\n", "client {me}: issue {name}");
                    progress.fetch_add(1, Ordering::SeqCst);
                    out.tickets.push((resource, name, data, session.clone()));
                }
                _ => failed = true,
            }
        }

        // Another session now and then.
        if n.is_multiple_of(5) && open(&next_addr(), &format!("extra-{me}-{n}"), &mut out).is_none()
        {
            failed = true;
        }
        if failed {
            thread::sleep(Duration::from_millis(20));
        }
    }
    out
}

/// Sends `DELETE path` until an answer says the lock is not (or no
/// longer) ours: 200 (unlocked), 404 (no such lock), 409 (another's).
/// Returns when the first request was sent, or None if none settled
/// within 60 s.
fn unlock_until_settled(next_addr: &mut impl FnMut() -> String, path: &str) -> Option<Instant> {
    let first = Instant::now();
    let deadline = first + Duration::from_secs(60);
    while Instant::now() < deadline {
        // Followers' 307s are followed; 503 and the like: retry.
        if let Some((200 | 404 | 409, _, _)) = call(&next_addr(), "DELETE", path, b"") {
            return Some(first);
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Everything the clients were acknowledged, checked while they ran:
/// minted numbers unique and in real-time order, shared locks never held
/// by two sessions at once. Returns how many numbers were checked.
pub fn check_history(all: &[Acknowledged]) -> Result<usize, String> {
    let mut minted: Vec<Batch> = Vec::new();
    for acked in all {
        for (id, started, finished) in &acked.sessions {
            let id = id
                .parse::<u64>()
                .map_err(|_| format!("session id {id:?} is not a number"))?;
            minted.push(Batch {
                started: *started,
                finished: *finished,
                ids: vec![id],
            });
        }
        for grant in &acked.shared {
            minted.push(Batch {
                started: grant.started,
                finished: grant.finished,
                ids: vec![grant.token],
            });
        }
        for (_, _, token, started, finished) in &acked.kept {
            minted.push(Batch {
                started: *started,
                finished: *finished,
                ids: vec![*token],
            });
        }
    }
    let checked = check_batches(&minted)?;
    let count = |f: fn(&Acknowledged) -> usize| all.iter().map(f).sum::<usize>();
    eprintln!(
        "churn: {} sessions, {} shared grants, {} kept locks, {} tickets acknowledged",
        count(|a| a.sessions.len()),
        count(|a| a.shared.len()),
        count(|a| a.kept.len()),
        count(|a| a.tickets.len()),
    );
    let shared: Vec<&SharedGrant> = all.iter().flat_map(|a| a.shared.iter()).collect();
    for a in &shared {
        for b in &shared {
            if a.lock != b.lock || a.session == b.session {
                continue;
            }
            // Surely held by a from its grant's answer until its unlock
            // was sent (for ever if none settled).
            let a_until = a.unlock_sent.unwrap_or_else(Instant::now);
            let b_until = b.unlock_sent.unwrap_or_else(Instant::now);
            if a.finished < b_until && b.finished < a_until {
                return Err(format!(
                    "{} held by two sessions at once: tokens {} and {}",
                    a.lock, a.token, b.token
                ));
            }
        }
    }
    Ok(checked)
}

/// After the churn, on a settled cluster, through `api`: every
/// acknowledged session, kept lock and ticket is there as acknowledged,
/// and a new grant's token is larger than every token and id before it.
/// `checker` is a session of the caller's own.
pub fn check_state(api: &Api, all: &[Acknowledged], checker: &str) {
    let mut highest = 0;
    for acked in all {
        for (id, _, _) in &acked.sessions {
            let answer = api.get_session(id);
            assert_eq!(
                answer.status, 200,
                "acknowledged session {id} is gone: {answer:?}"
            );
            highest = highest.max(id.parse().unwrap_or(0));
        }
        for (lock, session, token, _, _) in &acked.kept {
            let relock = lock_grant(&api.lock(session, lock));
            assert!(relock.granted, "kept lock {lock} no longer {session}'s");
            assert_eq!(
                relock.token,
                Some(*token),
                "kept lock {lock}: the grant's token changed"
            );
            let other = lock_grant(&api.lock(checker, lock));
            assert!(!other.granted, "kept lock {lock} is free");
            highest = highest.max(*token);
        }
        for grant in &acked.shared {
            highest = highest.max(grant.token);
        }
        let mut by_resource: Vec<&str> = acked.tickets.iter().map(|t| t.0.as_str()).collect();
        by_resource.dedup();
        for resource in by_resource {
            let dump = api.dump_resources(Some(resource));
            let tickets = dump.get(resource).get("Tickets");
            for (_, name, data, issuer) in acked.tickets.iter().filter(|t| t.0 == resource) {
                assert!(
                    tickets.has(name),
                    "acknowledged ticket {resource}/{name} is gone: {dump:?}"
                );
                let ticket = tickets.get(name);
                assert_eq!(
                    ticket.get("Data").str(),
                    base64(data.as_bytes()),
                    "acknowledged ticket {resource}/{name}: {ticket:?}"
                );
                assert_eq!(ticket.get("Issuer").get("Id").str(), issuer);
            }
        }
    }
    let after = lock_grant(&api.lock(checker, "churn-after"));
    assert!(after.granted);
    assert!(
        after.token > Some(highest),
        "a grant after the churn: {after:?}, after {highest} had been acknowledged"
    );
}

/// What a round of [`kill_during_writes`] kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// Whoever leads; it comes back once the next leader has served.
    Leader,
    /// Every node at once; all restart together.
    All,
}

/// `kill -9` in each of `plan`'s rounds while `workload` writes: each
/// round waits until the clients are acknowledged again, lets
/// `before_kill` wait for what the test needs in flight, pauses for a
/// varied moment (0 to 300 ms, from `seed`) and kills; after a leader's
/// kill the others must serve before it restarts. `after_restart` sees
/// the cluster once all its nodes run again.
pub fn kill_during_writes(
    cluster: &mut Cluster,
    workload: &Workload,
    plan: &[Kill],
    seed: u64,
    mut before_kill: impl FnMut(&Cluster, usize),
    mut after_restart: impl FnMut(&Cluster, usize),
) {
    const WAIT: Duration = Duration::from_secs(30);
    let mut seed = seed;
    let served = |cluster: &Cluster, round: usize, what: &str, more: u64| {
        let before = workload.acknowledged();
        let ok = wait_for(WAIT, || {
            (workload.acknowledged() >= before + more).then_some(())
        });
        assert!(
            ok.is_some(),
            "round {round}: no writes acknowledged {what}\n{}",
            cluster.logs()
        );
    };
    for (round, kill) in plan.iter().enumerate() {
        served(cluster, round, "before the kill", 10);
        before_kill(cluster, round);
        let leader = cluster.wait_leader_status(WAIT);
        thread::sleep(pause_ms(&mut seed, 0..300));
        match kill {
            Kill::Leader => {
                cluster.nodes[leader].kill();
                served(cluster, round, "by the next leader", 3);
                cluster.nodes[leader].start();
            }
            Kill::All => {
                cluster.kill_all();
                cluster.start_all();
            }
        }
        served(cluster, round, "after the restart", 3);
        after_restart(cluster, round);
    }
}
