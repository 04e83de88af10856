//! Locks and claims beyond turbosquid's tests: `?wait=`, fencing tokens
//! that strictly increase across hand-overs and leader changes, and
//! sessions and locks that survive `kill -9` of the leader and of the
//! whole cluster. All on three-node clusters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_support;
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use api_support::churn::{self, Kill};
use api_support::{
    Api, Grant, Heartbeat, LogsOnPanic, assert_ok, claim_grant, follower_index, leader_index,
    lock_grant, start_cluster, wait_followers_know_leader,
};
use common::{Cluster, Response, request_following, wait_for};

const TTL_LONG_MS: u64 = 60_000;

/// Runs `call` on another thread; its answer and how long it took come
/// back on the channel.
fn in_background(
    call: impl FnOnce() -> Response + Send + 'static,
) -> mpsc::Receiver<(Response, Duration)> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        let response = call();
        let _ = sender.send((response, started.elapsed()));
    });
    receiver
}

fn receive(receiver: &mpsc::Receiver<(Response, Duration)>) -> (Response, Duration) {
    receiver
        .recv_timeout(Duration::from_secs(40))
        .expect("the waiting request answered")
}

/// Waits until the leader reports exactly `n` parked lock and claim
/// requests (`Waiters` in its status): the signal that a `?wait=`
/// request has reached the leader and sleeps there, so that what
/// follows exercises the wake-up and not a request arriving late.
fn wait_parked(cluster: &Cluster, n: u64) {
    let parked = wait_for(Duration::from_secs(20), || {
        cluster
            .nodes
            .iter()
            .filter(|node| node.is_running())
            .filter_map(|node| node.status())
            .filter_map(|status| api_support::Json::parse(&status).ok())
            .find(|status| status.get("Role").str() == "leader")
            .filter(|status| status.get("Waiters").u64() == n)
    });
    assert!(
        parked.is_some(),
        "the leader never reported {n} parked waiter(s); logs:\n{}",
        cluster.logs()
    );
}

/// Asserts that a background request has not been answered yet.
fn still_waiting(receiver: &mpsc::Receiver<(Response, Duration)>, what: &str) {
    match receiver.try_recv() {
        Err(mpsc::TryRecvError::Empty) => {}
        Ok((response, took)) => panic!("{what}: answered after {took:?}: {response:?}"),
        Err(e) => panic!("{what}: {e}"),
    }
}

#[test]
fn waits_for_locks_and_claims_through_a_follower() {
    let cluster = start_cluster("api-locks-wait", 3);
    let _logs = LogsOnPanic::new(&cluster);
    let api = Api::new(&cluster.nodes[follower_index(&cluster)].http());
    let a = api.open_session("a", TTL_LONG_MS);
    let b = api.open_session("b", TTL_LONG_MS);
    let c = api.open_session("c", TTL_LONG_MS);

    // B waits for A's lock; once it is parked on the leader A unlocks,
    // and B gets it at once.
    let first = lock_grant(&api.lock(&a, "w"));
    assert!(first.granted);
    wait_parked(&cluster, 0);
    let waiting = {
        let (api, b) = (api.clone(), b.clone());
        in_background(move || api.lock_wait(&b, "w", 20_000))
    };
    wait_parked(&cluster, 1);
    still_waiting(&waiting, "a lock held by another waits");
    assert_eq!(api.unlock(&a, "w").status, 200);
    let (response, took) = receive(&waiting);
    let second = lock_grant(&response);
    assert!(second.granted, "the waiter gets the lock once it is free");
    assert!(
        took < Duration::from_secs(10),
        "granted after {took:?}, not when the unlock came"
    );
    assert!(second.token > first.token, "{first:?} then {second:?}");

    // A wait that runs out answers false, after the wait and not before.
    let started = Instant::now();
    let refused = lock_grant(&api.lock_wait(&c, "w", 700));
    let took = started.elapsed();
    assert!(!refused.granted);
    assert!(took >= Duration::from_millis(700), "gave up after {took:?}");
    assert!(took < Duration::from_secs(10), "gave up after {took:?}");

    // A holder that closes its session hands the lock to the waiter.
    wait_parked(&cluster, 0);
    let waiting = {
        let (api, c) = (api.clone(), c.clone());
        in_background(move || api.lock_wait(&c, "w", 20_000))
    };
    wait_parked(&cluster, 1);
    still_waiting(&waiting, "a lock held by another waits");
    assert_ok(&api.close(&b), "close the holder");
    let third = lock_grant(&receive(&waiting).0);
    assert!(third.granted);
    assert!(third.token > second.token, "{second:?} then {third:?}");

    // Claims wait too: C waits for the only ticket, held by A.
    assert_ok(&api.issue(&a, "wc", "only", b"x"), "issue");
    let held = claim_grant(&api.claim(&a, "wc")).0;
    assert!(held.granted);
    wait_parked(&cluster, 0);
    let waiting = {
        let (api, c) = (api.clone(), c.clone());
        in_background(move || api.claim_wait(&c, "wc", 20_000))
    };
    wait_parked(&cluster, 1);
    still_waiting(&waiting, "a claim on a taken ticket waits");
    assert_ok(&api.release(&a, "wc", "only"), "release");
    let (response, took) = receive(&waiting);
    let (claimed, ticket) = claim_grant(&response);
    assert!(claimed.granted, "the waiter claims the released ticket");
    assert!(took < Duration::from_secs(10), "claimed after {took:?}");
    assert_eq!(ticket.get("Claimant").get("Id").str(), c);
    assert!(claimed.token > held.token, "{held:?} then {claimed:?}");
    let started = Instant::now();
    let (refused, _) = claim_grant(&api.claim_wait(&a, "wc", 500));
    assert!(!refused.granted);
    assert!(started.elapsed() >= Duration::from_millis(500));

    // A claim on a resource that does not exist yet waits for its first
    // ticket to be issued.
    wait_parked(&cluster, 0);
    let waiting = {
        let (api, a) = (api.clone(), a.clone());
        in_background(move || api.claim_wait(&a, "not-yet", 20_000))
    };
    wait_parked(&cluster, 1);
    still_waiting(&waiting, "a claim on a missing resource waits");
    assert_ok(&api.issue(&c, "not-yet", "fresh", b"new"), "issue");
    let (claimed, ticket) = claim_grant(&receive(&waiting).0);
    assert!(claimed.granted, "the waiter claims the new ticket");
    assert_eq!(ticket.get("Name").str(), "fresh");
    assert_eq!(ticket.get("Claimant").get("Id").str(), a);
}

#[test]
fn waiters_take_turns_with_increasing_tokens() {
    let cluster = start_cluster("api-locks-turns", 3);
    let _logs = LogsOnPanic::new(&cluster);
    let held = Arc::new(AtomicBool::new(false));
    let grants = Arc::new(Mutex::new(Vec::new()));
    // Every node gets clients: followers redirect them to the leader.
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let api = Api::new(&cluster.nodes[i % cluster.nodes.len()].http());
            let (held, grants) = (Arc::clone(&held), Arc::clone(&grants));
            std::thread::spawn(move || {
                let me = api.open_session(&format!("turn-{i}"), TTL_LONG_MS);
                let grant = lock_grant(&api.lock_wait(&me, "mutex", 30_000));
                assert!(grant.granted, "client {i} never got the lock");
                assert!(!held.swap(true, Ordering::SeqCst), "two holders at once");
                grants.lock().unwrap().push(grant.token.unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
                held.store(false, Ordering::SeqCst);
                assert_eq!(api.unlock(&me, "mutex").status, 200);
                assert_ok(&api.close(&me), "close");
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a client failed");
    }
    let grants = grants.lock().unwrap();
    assert_eq!(grants.len(), 6);
    assert!(
        grants.windows(2).all(|w| w[0] < w[1]),
        "tokens increase in grant order: {grants:?}"
    );
}

/// Answers through any running node, retrying while the cluster elects.
fn through_any(
    cluster: &Cluster,
    method: &str,
    path: &str,
    ok: impl Fn(&Response) -> bool,
) -> Response {
    let full = format!("/api/v1{path}");
    wait_for(Duration::from_secs(20), || {
        cluster
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .find_map(|n| request_following(method, &n.http(), &full, b"").filter(|r| ok(r)))
    })
    .unwrap_or_else(|| {
        panic!(
            "no good answer to {method} {full}; logs:\n{}",
            cluster.logs()
        )
    })
}

#[test]
fn a_lock_survives_kill_9_of_the_whole_cluster() {
    let mut cluster = start_cluster("api-locks-restart", 3);
    let _logs = LogsOnPanic::new(&cluster);
    let api = Api::new(&cluster.nodes[leader_index(&cluster, Duration::from_secs(20))].http());
    let holder = api.open_session("holder", TTL_LONG_MS);
    let other = api.open_session("other", TTL_LONG_MS);
    let granted = lock_grant(&api.lock(&holder, "durable"));
    assert!(granted.granted);
    assert!(!lock_grant(&api.lock(&other, "durable")).granted);
    assert_ok(&api.issue(&other, "durable-tickets", "t", b"kept"), "issue");
    assert!(
        claim_grant(&api.claim(&holder, "durable-tickets"))
            .0
            .granted
    );

    for node in &mut cluster.nodes {
        node.kill();
    }
    for node in &mut cluster.nodes {
        node.start();
    }
    cluster.wait_leader(Duration::from_secs(20));
    wait_followers_know_leader(&cluster, Duration::from_secs(20));
    let api = Api::new(&cluster.nodes[follower_index(&cluster)].http());

    let session = api.session(&holder);
    let issued = session.get("Issuances").arr();
    assert_eq!(issued.len(), 1, "{session:?}");
    assert_eq!(issued[0].get("ResourceName").str(), "durable");
    assert_eq!(
        session.get("Tickets").arr()[0].get("Data").str(),
        "a2VwdA=="
    );
    let lock = api.dump_resources(Some("durable"));
    let ticket = lock.get("durable").get("Tickets").get("durable");
    assert_eq!(ticket.get("Issuer").get("Id").str(), holder);
    assert!(api.has(&holder, "durable-tickets", "t"));

    assert!(
        !lock_grant(&api.lock(&other, "durable")).granted,
        "the lock is still held"
    );
    let relock = lock_grant(&api.lock(&holder, "durable"));
    assert_eq!(relock, granted, "the holder keeps its grant and token");
    assert_eq!(api.unlock(&holder, "durable").status, 200);
    let next = lock_grant(&api.lock(&other, "durable"));
    assert!(next.granted);
    assert!(next.token > granted.token, "{granted:?} then {next:?}");
}

#[test]
fn a_refreshed_session_survives_a_leader_kill_and_its_lock_moves_on_expiry() {
    let mut cluster = start_cluster("api-locks-failover", 3);
    let _logs = LogsOnPanic::new(&cluster);
    let old_leader = leader_index(&cluster, Duration::from_secs(20));
    let api = Api::new(&cluster.nodes[old_leader].http());
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.http()).collect();

    let refreshed = api.open_session("refreshed", 3_000);
    let mut heartbeat = Heartbeat::start(addrs, &refreshed, Duration::from_millis(500));
    let other = api.open_session("other", TTL_LONG_MS);
    // The control: never refreshed, with a TTL a little longer than the
    // refreshed session's. A new leader restarts every TTL when it takes
    // office, so once the control has expired there, the refreshed
    // session would have expired before it but for its heartbeats.
    let control = api.open_session("control", 3_500);
    let first = lock_grant(&api.lock(&refreshed, "failover"));
    assert!(first.granted);
    let session_path = format!("/sessions/{refreshed}");

    cluster.nodes[old_leader].kill();
    let new_leader = leader_index(&cluster, Duration::from_secs(20));
    assert_ne!(new_leader, old_leader);
    through_any(&cluster, "GET", &session_path, |r| r.status == 200);
    let control_path = format!("/sessions/{control}");
    let seen = through_any(&cluster, "GET", &control_path, |r| r.status != 503);
    assert_eq!(
        seen.status, 200,
        "the failover expired the control early: {seen:?}"
    );
    through_any(&cluster, "GET", &control_path, |r| r.status == 404);
    let session = through_any(&cluster, "GET", &session_path, |r| r.status != 503);
    assert_eq!(
        session.status, 200,
        "the refreshed session was lost: {}",
        session.body
    );
    assert_eq!(
        heartbeat.lost.load(Ordering::SeqCst),
        0,
        "longest gap between refreshes: {} ms",
        heartbeat.gap_ms_max.load(Ordering::SeqCst)
    );
    let api = Api::new(&cluster.nodes[new_leader].http());
    assert!(
        !lock_grant(&api.lock(&other, "failover")).granted,
        "the lock is still held"
    );
    let relock = lock_grant(&api.lock(&refreshed, "failover"));
    assert_eq!(relock, first, "the grant survives the leader change");

    // Without heartbeats the session expires and the waiter takes over,
    // with a larger token than any grant of the old leader.
    heartbeat.stop();
    let started = Instant::now();
    let next: Grant = lock_grant(&api.lock_wait(&other, "failover", 20_000));
    assert!(next.granted, "the expired session's lock is handed over");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "handed over after {:?}",
        started.elapsed()
    );
    assert!(next.token > first.token, "{first:?} then {next:?}");
    assert_eq!(api.get_session(&refreshed).status, 404);
    let holder = api.dump_resources(Some("failover"));
    let ticket = holder.get("failover").get("Tickets").get("failover");
    assert_eq!(ticket.get("Issuer").get("Id").str(), other);
}

#[test]
fn a_session_expires_even_when_its_deadline_passes_during_a_leadership_transfer() {
    let mut cluster = start_cluster("api-locks-transfer", 3);
    let _logs = LogsOnPanic::new(&cluster);
    let leader = leader_index(&cluster, Duration::from_secs(20));
    let api = Api::new(&cluster.nodes[leader].http());
    // A transfer to a member that is down never completes: for an
    // election timeout the leader refuses proposals, then carries on.
    let down = follower_index(&cluster);
    let status = cluster.nodes[down].status().expect("status");
    let down_id = api_support::Json::parse(&status)
        .expect("JSON")
        .get("Id")
        .u64();
    cluster.nodes[down].kill();

    let other = api.open_session("other", TTL_LONG_MS);
    let doomed = api.open_session("doomed", 2_000);
    let first = lock_grant(&api.lock(&doomed, "transfer-lock"));
    assert!(first.granted);
    let transfer = format!("/api/v1/cluster/transfer?to={down_id}");
    // Every answer says the leader took the transfer (a transfer already
    // under way to the same member is "Ok" too), or is a retryable 503:
    // anything else and the deadline never passed during a transfer.
    let until = Instant::now() + Duration::from_millis(3_500);
    let mut accepted = 0;
    while Instant::now() < until {
        let answer = common::request("POST", &api.addr, &transfer, b"")
            .expect("the leader answers the transfer");
        match answer.status {
            200 => {
                assert_eq!(answer.body.trim(), "\"Ok\"", "{answer:?}");
                accepted += 1;
            }
            503 => {}
            _ => panic!("the transfer to {down_id} was refused: {answer:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(accepted > 0, "no transfer was ever accepted");

    let started = Instant::now();
    let next = lock_grant(&through_any(
        &cluster,
        "POST",
        &format!("/locks/transfer-lock?sessid={other}&wait=15000"),
        |r| r.status == 200,
    ));
    assert!(
        next.granted,
        "the session whose deadline passed during the transfer never expired \
         (still there: {})",
        api.get_session(&doomed).status == 200
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(next.token > first.token);
    assert_eq!(api.get_session(&doomed).status, 404);
}

/// `kill -9` while four clients lock, unlock, keep locks, issue tickets
/// and open sessions through every node: four times the leader, twice
/// the whole cluster, each at a varied moment with requests in flight.
/// Every acknowledged answer is checked afterwards (see
/// `api_support::churn`): fencing tokens and session ids never repeat
/// and grow in real time, no shared lock was held by two sessions at
/// once, and every acknowledged session, kept lock (same token) and
/// ticket is there.
#[test]
fn acknowledged_locks_tokens_sessions_and_tickets_survive_kill_9_during_writes() {
    use Kill::{All, Leader};
    const PLAN: &[Kill] = &[
        Leader, Leader, All, Leader, Leader, All, Leader, Leader, All,
    ];
    let mut cluster = start_cluster("api-locks-churn", 3);
    let _logs = LogsOnPanic::new(&cluster);
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.http()).collect();
    let workload = churn::Workload::start(&addrs, 6, 1);
    let seed = u64::from(std::process::id()) * 2_654_435_761;
    churn::kill_during_writes(&mut cluster, &workload, PLAN, seed, |_, _| {}, |_, _| {});
    let acknowledged = workload.stop();
    let minted = churn::check_history(&acknowledged)
        .unwrap_or_else(|e| panic!("{e} (seed {seed})\n{}", cluster.logs()));

    wait_followers_know_leader(&cluster, Duration::from_secs(20));
    let api = Api::new(&cluster.nodes[follower_index(&cluster)].http());
    let checker = wait_for(Duration::from_secs(20), || {
        let path = format!("/api/v1/sessions?name=checker&ttl={TTL_LONG_MS}");
        request_following("POST", &api.addr, &path, b"")
            .filter(|r| r.status == 200)
            .and_then(|r| api_support::Json::parse(&r.body).ok())
            .map(|id| id.str().to_string())
    })
    .expect("a session after the churn");
    churn::check_state(&api, &acknowledged, &checker);
    let count = |f: fn(&churn::Acknowledged) -> usize| acknowledged.iter().map(f).sum::<usize>();
    let (shared, kept, tickets) = (
        count(|a| a.shared.len()),
        count(|a| a.kept.len()),
        count(|a| a.tickets.len()),
    );
    assert!(
        shared >= 20 && kept >= 5 && tickets >= 20,
        "too little acknowledged to judge: {shared} shared grants, {kept} kept locks, \
         {tickets} tickets ({minted} tokens and ids)"
    );
}

/// Every node answers its status (none has stopped).
fn assert_all_answer(cluster: &Cluster, round: usize) {
    for (n, node) in cluster.nodes.iter().enumerate() {
        let alive = wait_for(Duration::from_secs(5), || node.status());
        assert!(
            alive.is_some(),
            "round {round}: node {n} stopped\n{}",
            cluster.logs()
        );
    }
}

/// Leadership handed from node to node while six clients write through
/// every node: a leader steps down with batches still on its writer
/// thread, and its next writes as a follower land after them, in order.
/// Every node keeps running, and every acknowledged answer checks out
/// (as for the kill test above).
#[test]
fn acknowledged_writes_survive_leadership_handed_around_during_writes() {
    let cluster = start_cluster("api-locks-hand-around", 3);
    let _logs = LogsOnPanic::new(&cluster);
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.http()).collect();
    let workload = churn::Workload::start(&addrs, 6, 1);
    for round in 0..8 {
        let before = workload.acknowledged();
        let more = wait_for(Duration::from_secs(30), || {
            (workload.acknowledged() >= before + 20).then_some(())
        });
        assert!(
            more.is_some(),
            "round {round}: no writes acknowledged\n{}",
            cluster.logs()
        );
        let leader = leader_index(&cluster, Duration::from_secs(30));
        let next = (leader + 1 + round % 2) % 3;
        let next_id = cluster.nodes[next]
            .status_u64("Id")
            .expect("the next leader's id");
        let path = format!("/api/v1/cluster/transfer?to={next_id}");
        let _ = request_following("POST", &addrs[leader], &path, b"");
        assert_all_answer(&cluster, round);
    }
    let acknowledged = workload.stop();
    assert_all_answer(&cluster, 8);
    churn::check_history(&acknowledged).unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let api = Api::new(&cluster.nodes[follower_index(&cluster)].http());
    let checker = api.open_session("checker", TTL_LONG_MS);
    churn::check_state(&api, &acknowledged, &checker);
}

/// The churn checks themselves can fail: a token acknowledged twice, a
/// token smaller than one acknowledged before its request started, and a
/// shared lock acknowledged to two sessions at once are each refused.
#[test]
fn the_churn_checks_refuse_repeated_tokens_and_two_holders() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let grant = |session: &str, token: u64, from: u64, until: u64| churn::SharedGrant {
        lock: "l".into(),
        session: session.into(),
        token,
        started: at(from),
        finished: at(from + 1),
        unlock_sent: Some(at(until)),
    };
    let history = |grants: Vec<churn::SharedGrant>| {
        vec![churn::Acknowledged {
            shared: grants,
            ..Default::default()
        }]
    };
    // Held in turn, tokens growing: fine.
    let fine = history(vec![grant("a", 5, 0, 10), grant("b", 7, 20, 30)]);
    assert_eq!(churn::check_history(&fine), Ok(2));
    let twice = history(vec![grant("a", 5, 0, 10), grant("b", 5, 20, 30)]);
    assert!(churn::check_history(&twice).is_err(), "a repeated token");
    let back = history(vec![grant("a", 7, 0, 10), grant("b", 5, 20, 30)]);
    assert!(churn::check_history(&back).is_err(), "a token going back");
    let both = history(vec![grant("a", 5, 0, 30), grant("b", 7, 10, 40)]);
    assert!(churn::check_history(&both).is_err(), "two holders at once");
}
