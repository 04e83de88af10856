//! turbosquid's `http/http_test.go` ported to ticketd's `/api/v1`:
//! session life cycle, heartbeat, expiry, tickets, locks and dumps, with
//! the exact JSON shapes its Go client decodes. Every scenario runs on a
//! one-node cluster and again through a follower of a three-node cluster,
//! which answers 307 to the leader (the client follows it, keeping the
//! method and body, as Go's `net/http` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_support;
mod common;

use std::time::{Duration, Instant};

use api_support::{
    Api, Heartbeat, Json, LogsOnPanic, assert_error, assert_ok, assert_resource_shape,
    assert_session_shape, assert_ticket_shape, base64, claim_grant, follower_index, json_of,
    lock_grant, nested_session_json, start_cluster,
};
use common::{request, wait_for};

/// A TTL no scenario outlives, so only the expiry scenarios depend on time.
const TTL_LONG_MS: u64 = 60_000;

/// All scenarios on one entry point. `dumps` counts everything in the
/// cluster, so it runs alone on the fresh cluster; the others use names
/// of their own and run side by side to keep the test short.
fn run_scenarios(api: &Api) {
    dumps(api);
    std::thread::scope(|scope| {
        scope.spawn(|| session_life_cycle(api));
        scope.spawn(|| heartbeat_keeps_a_session_alive(api));
        scope.spawn(|| a_late_heartbeat_finds_the_session_gone(api));
        scope.spawn(|| expiry_releases_everything(api));
        scope.spawn(|| issuing_refreshes_the_issuer(api));
        scope.spawn(|| tickets(api));
        scope.spawn(|| ticket_takeover_and_data(api));
        scope.spawn(|| locks(api));
    });
}

#[test]
fn scenarios_on_one_node() {
    let cluster = start_cluster("api-sessions-one", 1);
    let _logs = LogsOnPanic::new(&cluster);
    run_scenarios(&Api::new(&cluster.nodes[0].http()));
}

#[test]
fn scenarios_through_a_follower() {
    let cluster = start_cluster("api-sessions-follower", 3);
    let _logs = LogsOnPanic::new(&cluster);
    let follower = &cluster.nodes[follower_index(&cluster)];
    let leader = &cluster.nodes[api_support::leader_index(&cluster, Duration::from_secs(20))];

    // The follower itself answers 307 to the same path and query on the
    // leader, without touching the request.
    let path = "/api/v1/sessions?name=redirected&ttl=60000";
    let raw = request("POST", &follower.http(), path, b"").expect("answer");
    assert_eq!(raw.status, 307, "{}", raw.body);
    assert_eq!(
        raw.header("location"),
        Some(format!("http://{}{path}", leader.http()).as_str())
    );
    assert!(
        api_support::dump_has_no_session_named(&Api::new(&leader.http()), "redirected"),
        "a redirected request changed nothing"
    );
    run_scenarios(&Api::new(&follower.http()));
}

/// turbosquid `TestDump`: both dumps list exactly what exists.
fn dumps(api: &Api) {
    let session1 = api.open_session("session1", TTL_LONG_MS);
    let session2 = api.open_session("session2", TTL_LONG_MS);
    let sessions = api.dump_sessions();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    for id in [&session1, &session2] {
        let session = sessions.get(id);
        assert_session_shape(session);
        assert_eq!(session.get("Id").str(), id.as_str());
    }
    for (session, resource, name) in [
        (&session1, "test", "ticket-1"),
        (&session1, "test", "ticket-2"),
        (&session2, "test2", "ticket-1"),
        (&session2, "test2", "ticket-2"),
        (&session1, "test2", "ticket-s31"),
    ] {
        assert_ok(&api.issue(session, resource, name, b"FOO"), "issue");
    }
    let resources = api.dump_resources(None);
    assert_eq!(resources.keys(), ["test", "test2"]);
    for (name, count) in [("test", 2), ("test2", 3)] {
        let resource = resources.get(name);
        assert_resource_shape(resource);
        assert_eq!(resource.get("Name").str(), name);
        assert!(!resource.get("IsLock").bool());
        assert_eq!(resource.get("Tickets").len(), count, "{name}");
    }
    let one = api.dump_resources(Some("test2"));
    assert_eq!(one.keys(), ["test2"]);
    assert_eq!(one.get("test2"), resources.get("test2"));
    let ticket = one.get("test2").get("Tickets").get("ticket-s31");
    assert_eq!(ticket.get("Issuer").get("Id").str(), session1);
    assert_eq!(ticket.get("Data").str(), "Rk9P");

    let sessions = api.dump_sessions();
    assert_eq!(sessions.get(&session1).get("Issuances").len(), 3);
    assert_eq!(sessions.get(&session2).get("Issuances").len(), 2);

    // A lock is listed as a lock resource with one ticket, issued by the
    // holder (turbosquid's representation).
    assert!(lock_grant(&api.lock(&session2, "dump-lock")).granted);
    let lock = api.dump_resources(Some("dump-lock"));
    let lock = lock.get("dump-lock");
    assert_resource_shape(lock);
    assert!(lock.get("IsLock").bool());
    assert_eq!(lock.get("Tickets").keys(), ["dump-lock"]);
    let lock_ticket = lock.get("Tickets").get("dump-lock");
    assert_eq!(lock_ticket.get("Data").str(), "");
    assert_eq!(lock_ticket.get("Issuer").get("Id").str(), session2);
    assert!(lock_ticket.get("Claimant").is_null());
    assert_eq!(api.dump_resources(None).len(), 3);

    assert_error(
        &api.call("GET", "/dump/resources/no-such-resource", b""),
        404,
        "dump of an unknown resource",
    );

    // Closing both sessions drops everything they issued or held.
    assert_ok(&api.close(&session1), "close");
    assert_ok(&api.close(&session2), "close");
    assert_eq!(api.call("GET", "/dump/sessions", b"").body, "{}\n");
    assert_eq!(api.call("GET", "/dump/resources", b"").body, "{}\n");
}

/// turbosquid `TestSession`: open, refresh past the TTL, get, close, and
/// 404 for everything once closed.
fn session_life_cycle(api: &Api) {
    // turbosquid used ttl 100 and 90 ms sleeps; through Raft on a loaded
    // machine the margins must be wider.
    // Half the TTL of margin on each side of the refresh, measured from
    // when the calls returned rather than assumed.
    let ttl_ms = 6_000;
    let ttl = Duration::from_millis(ttl_ms);
    let id = api.open_session("test 1 2 3", ttl_ms);
    let opened = Instant::now();
    std::thread::sleep(ttl / 2);
    assert_eq!(api.refresh(&id).body, "\"Ok\"\n");
    // Past its first deadline, however late the refresh was: only the
    // refresh kept it.
    let past =
        (opened + ttl + Duration::from_millis(500)).saturating_duration_since(Instant::now());
    std::thread::sleep(past);
    let session = api.session(&id);
    assert_session_shape(&session);
    assert_eq!(session.get("Id").str(), id);
    assert_eq!(session.get("Name").str(), "test 1 2 3");
    assert_eq!(session.get("Ttl").u64(), ttl_ms);
    assert!(
        session.get("Src").str().starts_with("127.0.0.1:"),
        "Src is the client's ip:port: {session:?}"
    );
    assert_eq!(session.get("Tickets").len(), 0);
    assert_eq!(session.get("Issuances").len(), 0);

    assert_ok(&api.close(&id), "close");
    assert_error(&api.refresh(&id), 404, "refresh a closed session");
    assert_error(&api.get_session(&id), 404, "get a closed session");
    assert_error(&api.close(&id), 404, "close a closed session");
}

/// turbosquid `TestSessionHeartBeat`, first part: a session refreshed
/// every 250 ms outlives its 3000 ms TTL (turbosquid: 300 ms and 500 ms)
/// twice over; a refresh may be late by most of the TTL on a loaded
/// machine without losing it.
fn heartbeat_keeps_a_session_alive(api: &Api) {
    let id = api.open_session("test-1", 3_000);
    let mut heartbeat = Heartbeat::start(vec![api.addr.clone()], &id, Duration::from_millis(250));
    std::thread::sleep(Duration::from_millis(6_000));
    heartbeat.stop();
    let lost = heartbeat.lost.load(std::sync::atomic::Ordering::SeqCst);
    let ok = heartbeat.ok.load(std::sync::atomic::Ordering::SeqCst);
    let gap_ms = heartbeat
        .gap_ms_max
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        lost, 0,
        "a refreshed session was lost (longest gap {gap_ms} ms)"
    );
    assert!(ok >= 5, "only {ok} refreshes in 6 s");
    // No error on close proves the session was still valid.
    assert_ok(&api.close(&id), "close after heartbeats");
}

/// turbosquid `TestSessionHeartBeat`, second part: a heartbeat slower
/// than the TTL finds the session gone (404), and so do close and get.
fn a_late_heartbeat_finds_the_session_gone(api: &Api) {
    let id = api.open_session("test-2", 1_000);
    let heartbeat = Heartbeat::start(vec![api.addr.clone()], &id, Duration::from_millis(1_500));
    let lost = wait_for(Duration::from_secs(15), || {
        (heartbeat.lost.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    });
    drop(heartbeat);
    assert!(lost.is_some(), "the heartbeat never saw the session expire");
    assert_error(&api.close(&id), 404, "close an expired session");
    assert_error(&api.get_session(&id), 404, "get an expired session");
}

/// A session expires after its TTL, never before, and its expiry
/// releases its claims, drops the tickets it issued and frees its locks.
fn expiry_releases_everything(api: &Api) {
    let other = api.open_session("survivor", TTL_LONG_MS);
    assert_ok(&api.issue(&other, "exp-claims", "t", b"x"), "issue");
    // Long enough for the four calls below through a follower on a busy
    // machine (issuing refreshes it); the checks that follow count from
    // before it was opened.
    let ttl = Duration::from_millis(3_000);
    let sent = Instant::now();
    let doomed = api.open_session("doomed", ttl.as_millis() as u64);
    assert_ok(&api.issue(&doomed, "exp-issued", "t", b"y"), "issue");
    assert!(lock_grant(&api.lock(&doomed, "exp-lock")).granted);
    assert!(claim_grant(&api.claim(&doomed, "exp-claims")).0.granted);
    assert!(!lock_grant(&api.lock(&other, "exp-lock")).granted);

    let gone_after = wait_for(Duration::from_secs(15), || {
        (api.get_session(&doomed).status == 404).then(|| sent.elapsed())
    })
    .expect("a session without refreshes expires");
    assert!(
        gone_after >= ttl,
        "expired after {gone_after:?}, before its TTL"
    );
    assert!(
        gone_after < ttl + Duration::from_secs(5),
        "expired only after {gone_after:?} (checks every 100 ms)"
    );
    assert_error(&api.refresh(&doomed), 404, "refresh an expired session");
    assert_error(
        &api.call("GET", "/dump/resources/exp-issued", b""),
        404,
        "its tickets are dropped",
    );
    let (grant, ticket) = claim_grant(&api.claim(&other, "exp-claims"));
    assert!(grant.granted, "its claim was released");
    assert_eq!(ticket.get("Claimant").get("Id").str(), other);
    assert!(
        lock_grant(&api.lock(&other, "exp-lock")).granted,
        "its lock is free"
    );
    assert_ok(&api.close(&other), "close");
}

/// Issuing a ticket refreshes the issuer's session (turbosquid's
/// `IssueTicket` calls `sess.refresh()`), so a service that re-issues
/// its ticket needs no separate heartbeat.
fn issuing_refreshes_the_issuer(api: &Api) {
    let id = api.open_session("re-issuer", 1_500);
    let until = Instant::now() + Duration::from_millis(3_000);
    while Instant::now() < until {
        assert_ok(&api.issue(&id, "re-issued", "t", b"alive"), "re-issue");
        std::thread::sleep(Duration::from_millis(200));
    }
    let session = api.session(&id);
    assert_eq!(session.get("Issuances").len(), 1, "{session:?}");
    // Without re-issues it expires, and its ticket goes with it.
    wait_for(Duration::from_secs(15), || {
        (api.get_session(&id).status == 404).then_some(())
    })
    .expect("the issuer expires once it stops issuing");
    assert_error(
        &api.call("GET", "/dump/resources/re-issued", b""),
        404,
        "the expired issuer's ticket is gone",
    );
}

/// turbosquid `TestTickets`: issue, claim, has, release, re-claim by
/// another session, revoke.
fn tickets(api: &Api) {
    let issuer = api.open_session("issuer", TTL_LONG_MS);
    let claimant = api.open_session("claimant", TTL_LONG_MS);
    let claimant2 = api.open_session("claimant2", TTL_LONG_MS);
    assert_ok(&api.issue(&issuer, "test", "ticket 1", b"FOO"), "issue");

    let response = api.claim(&claimant, "test");
    let (grant, ticket) = claim_grant(&response);
    assert!(grant.granted);
    assert_ticket_shape(&ticket);
    assert_eq!(ticket.get("Name").str(), "ticket 1");
    assert_eq!(ticket.get("ResourceName").str(), "test");
    assert_eq!(ticket.get("Data").str(), base64(b"FOO"));
    assert_eq!(ticket.get("Claimant").get("Name").str(), "claimant");
    assert_eq!(ticket.get("Claimant").get("Id").str(), claimant);
    assert_eq!(ticket.get("Issuer").get("Name").str(), "issuer");
    assert_eq!(ticket.get("Issuer").get("Id").str(), issuer);
    // Byte for byte what Go's encoder would write.
    let expected = format!(
        r#"{{"Claimed":true,"Ticket":{{"Name":"ticket 1","ResourceName":"test","Data":"Rk9P","Issuer":{},"Claimant":{}}}}}"#,
        nested_session_json(&api.session(&issuer)),
        nested_session_json(&api.session(&claimant)),
    );
    assert_eq!(response.body, expected + "\n");

    assert!(api.has(&claimant, "test", "ticket 1"));
    assert!(!api.has(&claimant2, "test", "ticket 1"));
    // The sessions list the ticket: claimed by one, issued by the other.
    let held = api.session(&claimant);
    assert_session_shape(&held);
    assert_eq!(held.get("Tickets").arr()[0].get("Name").str(), "ticket 1");
    let issued = api.session(&issuer);
    assert_eq!(
        issued.get("Issuances").arr()[0].get("Name").str(),
        "ticket 1"
    );

    assert_ok(&api.release(&claimant, "test", "ticket 1"), "release");
    assert!(!api.has(&claimant, "test", "ticket 1"));
    assert_eq!(api.session(&claimant).get("Tickets").len(), 0);
    let (grant2, ticket2) = claim_grant(&api.claim(&claimant2, "test"));
    assert!(grant2.granted, "claimant2 picks up the released ticket");
    assert_eq!(ticket2.get("Claimant").get("Id").str(), claimant2);
    assert!(
        grant2.token > grant.token,
        "claim tokens increase: {grant:?} then {grant2:?}"
    );
    // Claiming again while holding it hands back the same ticket.
    let (again, ticket_again) = claim_grant(&api.claim(&claimant2, "test"));
    assert!(again.granted);
    assert_eq!(ticket_again.get("Name").str(), "ticket 1");
    // Nothing is free for the first claimant.
    let refused = api.claim(&claimant, "test");
    assert!(!claim_grant(&refused).0.granted);

    assert_ok(&api.revoke(&issuer, "test", "ticket 1"), "revoke");
    // turbosquid answers `false` here until its next sweep drops the
    // empty resource (its TestTickets checks it); so does ticketd.
    let right_after = api.has_claim(&claimant2, "test", "ticket 1");
    assert_eq!(right_after.status, 200, "{}", right_after.body);
    assert_eq!(right_after.body.trim(), "false");
    // After the next expiry pass the resource is gone for has-claim too.
    let swept = wait_for(Duration::from_secs(10), || {
        (api.has_claim(&claimant2, "test", "ticket 1").status == 404).then_some(())
    });
    assert!(
        swept.is_some(),
        "has-claim never answered 404 after the sweep"
    );
    // A claim on a missing resource is "all claimed", with a zero ticket.
    let response = api.claim(&claimant, "test");
    let (grant, ticket) = claim_grant(&response);
    assert!(!grant.granted);
    assert!(ticket.get("Data").is_null());
    assert_eq!(
        response.body,
        "{\"Claimed\":false,\"Ticket\":{\"Name\":\"\",\"ResourceName\":\"\",\"Data\":null,\"Issuer\":null,\"Claimant\":null}}\n"
    );

    // While the resource lives on, a revoked ticket is simply not held.
    assert_ok(&api.issue(&issuer, "test", "a", b"1"), "issue");
    assert_ok(&api.issue(&issuer, "test", "b", b"2"), "issue");
    let (_, first) = claim_grant(&api.claim(&claimant2, "test"));
    let first = first.get("Name").str().to_string();
    assert_ok(
        &api.revoke(&claimant, "test", &first),
        "any session may revoke",
    );
    assert!(!api.has(&claimant2, "test", &first));
    assert_eq!(api.session(&claimant2).get("Tickets").len(), 0);
    for id in [&issuer, &claimant, &claimant2] {
        assert_ok(&api.close(id), "close");
    }
}

/// Issuing an existing ticket name takes it over and keeps its claimant;
/// ticket data is bytes, up to 1 KiB, and comes back as base64.
fn ticket_takeover_and_data(api: &Api) {
    let first = api.open_session("first issuer", TTL_LONG_MS);
    let second = api.open_session("second issuer", TTL_LONG_MS);
    let claimant = api.open_session("holder", TTL_LONG_MS);
    assert_ok(&api.issue(&first, "takeover", "t", b"old"), "issue");
    assert!(claim_grant(&api.claim(&claimant, "takeover")).0.granted);
    let data: Vec<u8> = (0..1024).map(|i| (i * 7 % 256) as u8).collect();
    assert_ok(&api.issue(&second, "takeover", "t", &data), "take over");
    let resource = api.dump_resources(Some("takeover"));
    let ticket = resource.get("takeover").get("Tickets").get("t");
    assert_eq!(ticket.get("Issuer").get("Id").str(), second);
    assert_eq!(ticket.get("Claimant").get("Id").str(), claimant);
    assert_eq!(ticket.get("Data").str(), base64(&data));
    assert_eq!(api.session(&first).get("Issuances").len(), 0);
    assert_eq!(api.session(&second).get("Issuances").len(), 1);
    assert!(api.has(&claimant, "takeover", "t"));
    // An empty body is empty data, not null.
    assert_ok(&api.issue(&second, "takeover", "empty", b""), "issue");
    let resource = api.dump_resources(Some("takeover"));
    let empty = resource.get("takeover").get("Tickets").get("empty");
    assert_eq!(empty.get("Data"), &Json::Str(String::new()));
    // Closing the issuer drops its tickets and with them the claim.
    assert_ok(&api.close(&second), "close");
    assert_error(
        &api.call("GET", "/dump/resources/takeover", b""),
        404,
        "the resource went with its tickets",
    );
    assert_eq!(api.session(&claimant).get("Tickets").len(), 0);
    for id in [&first, &claimant] {
        assert_ok(&api.close(id), "close");
    }
}

/// turbosquid `TestLocks`, with fencing tokens.
fn locks(api: &Api) {
    let session1 = api.open_session("session1", TTL_LONG_MS);
    let session2 = api.open_session("session2", TTL_LONG_MS);
    let first = lock_grant(&api.lock(&session1, "foo.bar"));
    assert!(first.granted);
    let relock = lock_grant(&api.lock(&session1, "foo.bar"));
    assert_eq!(relock, first, "re-locking by the holder keeps its grant");
    let refused = lock_grant(&api.lock(&session2, "foo.bar"));
    assert!(!refused.granted);
    let holder = api.session(&session1);
    let issued = holder.get("Issuances").arr();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].get("ResourceName").str(), "foo.bar");

    // Only the holder may unlock (turbosquid says 404 here, ticketd 409).
    assert_error(&api.unlock(&session2, "foo.bar"), 409, "unlock by another");
    let unlocked = api.unlock(&session1, "foo.bar");
    assert_eq!(unlocked.status, 200);
    assert_eq!(json_of(&unlocked, "unlock"), Json::Str("ok".into()));

    let second = lock_grant(&api.lock(&session2, "foo.bar"));
    assert!(second.granted);
    assert!(second.token > first.token, "{first:?} then {second:?}");
    // Closing the holder frees the lock for the next grant.
    assert_ok(&api.close(&session2), "close");
    let third = lock_grant(&api.lock(&session1, "foo.bar"));
    assert!(third.granted);
    assert!(third.token > second.token, "{second:?} then {third:?}");
    assert_eq!(api.unlock(&session1, "foo.bar").status, 200);
    assert_error(&api.unlock(&session1, "foo.bar"), 404, "unlock a free lock");
    assert_ok(&api.close(&session1), "close");
}
