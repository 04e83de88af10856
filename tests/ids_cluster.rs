//! IDs on three-node clusters of the release binary: redirects from
//! followers, failover after `kill -9` of the leader, a survivor without
//! a quorum, a whole-cluster crash, concurrent clients across a
//! failover, and a follower that catches up through a snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::ops::{json_str, take_ids, take_ids_anywhere};
use common::{Cluster, churn, post, request, request_following, wait_for};

/// Elections take 0.8–1.6 s; on a loaded two-core machine with other
/// tests running, allow many of them.
const LEADER_WAIT: Duration = Duration::from_secs(20);
/// A generous bound for the cluster to serve again after a failover:
/// a deadline for the wait, never a measured speed (bench/ measures
/// how fast a failover is).
const FAILOVER_WAIT: Duration = Duration::from_secs(20);

fn addrs(cluster: &Cluster) -> Vec<String> {
    cluster.nodes.iter().map(|n| n.http()).collect()
}

fn strictly_increasing(ids: &[u64]) -> bool {
    ids.windows(2).all(|w| w[1] > w[0])
}

#[test]
fn follower_redirects_to_the_leader_keeping_the_query() {
    let cluster = Cluster::start("redirect", 3);
    // Each node is checked while it is a follower; the one leading is
    // skipped, but at least two must have been checked.
    let mut checked_followers = 0;
    for follower in 0..3 {
        // Leadership may move on a loaded machine: accept the redirect
        // once it names the node that is the leader at that moment.
        let checked = wait_for(LEADER_WAIT, || {
            let leader = cluster.nodes.iter().position(|n| n.is_leader())?;
            if leader == follower {
                return Some(None);
            }
            let response = post(&cluster.nodes[follower].http(), "/?count=5")?;
            let expected = format!("http://{}/?count=5", cluster.nodes[leader].http());
            (response.status == 301 && response.header("location") == Some(expected.as_str()))
                .then_some(Some(response))
        });
        let Some(answer) = checked else {
            panic!(
                "node {follower} never redirected to the leader; logs:\n{}",
                cluster.logs()
            );
        };
        let Some(response) = answer else { continue };
        checked_followers += 1;
        assert_eq!(response.body.lines().count(), 1, "{}", response.body);
        let location = response.header("location").unwrap_or_default();
        assert!(location.ends_with("/?count=5"), "{location}");
        // Without a query too: a redirect to a node's `/`, or (should this
        // node have taken over meanwhile) the IDs themselves.
        let plain = post(&cluster.nodes[follower].http(), "/").expect("an answer");
        if plain.status == 301 {
            let location = plain.header("location").unwrap_or_default();
            let to_a_node = cluster
                .nodes
                .iter()
                .any(|n| location == format!("http://{}/", n.http()));
            assert!(to_a_node, "{location}");
        } else {
            assert_eq!(plain.status, 200, "{plain:?}");
            assert!(cluster.nodes[follower].is_leader(), "{plain:?}");
        }
        let followed = wait_for(LEADER_WAIT, || {
            take_ids(&cluster.nodes[follower].http(), 5).ok()
        });
        let Some(ids) = followed else {
            panic!("following the redirect failed\n{}", cluster.logs());
        };
        assert_eq!(ids.len(), 5);
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    }
    assert!(
        checked_followers >= 2,
        "only {checked_followers} follower(s) checked\n{}",
        cluster.logs()
    );
}

/// `--redirect 307`: a follower's `POST /` redirect keeps the method, so
/// clients that turn a POST into a GET on 301 (Go, Python, `curl -d`)
/// get their IDs.
#[test]
fn redirect_307_keeps_the_post() {
    let mut cluster = Cluster::new("redirect-307", 3);
    for node in &mut cluster.nodes {
        node.extra_args = vec!["--redirect".into(), "307".into()];
        node.start();
    }
    cluster.wait_leader(LEADER_WAIT);
    let redirected = wait_for(LEADER_WAIT, || {
        let leader = cluster.nodes.iter().position(|n| n.is_leader())?;
        let follower = (leader + 1) % 3;
        let response = post(&cluster.nodes[follower].http(), "/?count=2")?;
        let expected = format!("http://{}/?count=2", cluster.nodes[leader].http());
        (response.status == 307 && response.header("location") == Some(expected.as_str()))
            .then_some(follower)
    });
    let Some(follower) = redirected else {
        panic!(
            "no 307 from a follower
{}",
            cluster.logs()
        );
    };
    let followed = wait_for(LEADER_WAIT, || {
        take_ids(&cluster.nodes[follower].http(), 2).ok()
    });
    assert_eq!(followed.map(|ids| ids.len()), Some(2), "{}", cluster.logs());
}

#[test]
fn failover_after_kill_9_of_the_leader_keeps_ids_increasing() {
    static COUNTS: &[u64] = &[1, 7];
    let mut cluster = Cluster::start("failover", 3);
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let client = churn::Client::start(addrs(&cluster), COUNTS);
    let enough = wait_for(LEADER_WAIT, || (client.acknowledged() >= 20).then_some(()));
    assert!(
        enough.is_some(),
        "no IDs before the kill\n{}",
        cluster.logs()
    );

    let killed_at = Instant::now();
    cluster.nodes[leader].kill();
    // Outcome and order, not speed: requests started after the kill are
    // served again (by the new leader), and IDs never go back.
    let recovered = wait_for(FAILOVER_WAIT, || {
        let batches = client.batches.lock().unwrap();
        (batches.iter().filter(|b| b.started > killed_at).count() >= 10).then_some(())
    });
    let batches = client.stop();
    assert!(
        recovered.is_some(),
        "fewer than 10 requests started after the kill were served\n{}",
        cluster.logs()
    );
    let new_leader = cluster.wait_leader_status(LEADER_WAIT);
    assert_ne!(new_leader, leader, "the killed node does not lead");
    let ids: Vec<u64> = batches.iter().flat_map(|b| b.ids.clone()).collect();
    assert!(ids[0] > 0);
    // One sequential client: each of its batches started after the one
    // before finished, so its IDs must increase throughout.
    assert!(
        strictly_increasing(&ids),
        "a sequential client saw IDs go back: {ids:?}\n{}",
        cluster.logs()
    );
    churn::check_batches(&batches).unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
}

/// Two of three nodes down: the survivor refuses with 503 once its
/// view of the leader (or its own lease) lapses, and serves again when
/// a second node returns.
fn survivor_refuses_then_serves_again(name: &str, survivor_is_leader: bool) {
    let mut cluster = Cluster::start(name, 3);
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let survivor = if survivor_is_leader {
        leader
    } else {
        (leader + 1) % 3
    };
    let addr = cluster.nodes[survivor].http();
    let before = take_ids_anywhere(&addrs(&cluster), 3, LEADER_WAIT).expect("IDs before");
    // A session to read: a read is the leader's too (its lease), so a
    // follower sends it there and the survivor refuses it below.
    let session = wait_for(LEADER_WAIT, || {
        request_following("POST", &addr, "/api/v1/sessions?name=read&ttl=600000", b"")
            .filter(|r| r.status == 200)
            .map(|r| r.body.trim().trim_matches('"').to_string())
    })
    .expect("a session before the kills");
    let read = format!("/api/v1/sessions/{session}");
    let answer = common::get(&addr, &read).expect("an answer to the read");
    if survivor_is_leader {
        assert_eq!(answer.status, 200, "{answer:?}");
    } else {
        assert!(
            matches!(answer.status, 301 | 307) && answer.header("location").is_some(),
            "a follower redirects a read to the leader: {answer:?}"
        );
    }
    let others: Vec<usize> = (0..3).filter(|i| *i != survivor).collect();
    for &other in &others {
        cluster.nodes[other].kill();
    }

    // Refused once its lease or its view of the leader lapses: a
    // generous bound, as the order (served, then refused) is the point.
    // Polled closely, so that the read below comes right after.
    let deadline = Instant::now() + LEADER_WAIT;
    let refused = loop {
        let answer = post(&addr, "/?count=2").filter(|r| r.status == 503);
        if answer.is_some() || Instant::now() > deadline {
            break answer;
        }
        thread::sleep(Duration::from_millis(2));
    };
    let Some(refused) = refused else {
        panic!(
            "the survivor kept answering {:?}\n{}",
            post(&addr, "/"),
            cluster.logs()
        );
    };
    // Reads end with IDs, at once: both wait for the lease, which ends
    // a tenth of a second before a leader without a quorum steps down.
    let stale = common::get(&addr, &read).expect("an answer to the read");
    assert_eq!(stale.status, 503, "a read after the lease: {stale:?}");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    assert_eq!(refused.body.trim_end(), "Leader unavailable", "{refused:?}");
    assert_eq!(refused.reason, "Leader unavailable", "{refused:?}");
    // It stays unavailable: no quorum, no IDs, no redirect to the dead.
    for _ in 0..5 {
        let again = post(&addr, "/").expect("an answer");
        assert_eq!(again.status, 503, "{again:?}\n{}", cluster.logs());
        thread::sleep(Duration::from_millis(50));
    }
    let session = post(&addr, "/api/v1/sessions?name=x").expect("an answer");
    assert_eq!(session.status, 503, "{session:?}");
    assert_eq!(session.header("retry-after"), Some("1"), "{session:?}");
    assert_eq!(common::get(&addr, "/healthz").map(|r| r.status), Some(200));

    cluster.nodes[others[0]].start();
    let pair = vec![addr.clone(), cluster.nodes[others[0]].http()];
    let after = take_ids_anywhere(&pair, 3, LEADER_WAIT);
    let Some(after) = after else {
        panic!("no IDs after a node returned\n{}", cluster.logs());
    };
    assert!(
        after[0] > *before.last().unwrap(),
        "{after:?} after {before:?}"
    );
}

#[test]
fn a_leader_left_alone_refuses_with_503_then_serves_again() {
    survivor_refuses_then_serves_again("alone-leader", true);
}

#[test]
fn a_follower_left_alone_refuses_with_503_then_serves_again() {
    survivor_refuses_then_serves_again("alone-follower", false);
}

#[test]
fn the_whole_cluster_killed_and_restarted_loses_nothing() {
    let mut cluster = Cluster::start("restart-all", 3);
    let addrs = addrs(&cluster);
    let mut before: Vec<u64> = Vec::new();
    for round in 0..2 {
        for i in 0..20 {
            let count = if i % 5 == 0 { 2000 } else { 1 };
            let ids = take_ids_anywhere(&addrs, count, LEADER_WAIT);
            let Some(ids) = ids else {
                panic!("no IDs in round {round}\n{}", cluster.logs());
            };
            if let Some(last) = before.last() {
                assert!(ids[0] > *last, "round {round}: {} after {last}", ids[0]);
            }
            before.extend(ids);
        }
        // Right after an acknowledged answer: nothing may be lost.
        cluster.kill_all();
        cluster.start_all();
    }
    let after = take_ids_anywhere(&addrs, 1, LEADER_WAIT);
    let Some(after) = after else {
        panic!("no IDs after restarting everything\n{}", cluster.logs());
    };
    let max_before = before.iter().max().copied().unwrap_or(0);
    assert!(after[0] > max_before, "{} after {max_before}", after[0]);
}

#[test]
fn concurrent_clients_across_a_failover_never_get_a_duplicate() {
    const CLIENTS: usize = 8;
    let mut cluster = Cluster::start("concurrent", 3);
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let addrs = addrs(&cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let successes_after_kill = Arc::new(Mutex::new(vec![0usize; CLIENTS]));
    let successes = Arc::new(Mutex::new(vec![0usize; CLIENTS]));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let addrs = addrs.clone();
            let stop = Arc::clone(&stop);
            let killed_at = Arc::clone(&killed_at);
            let after = Arc::clone(&successes_after_kill);
            let all = Arc::clone(&successes);
            thread::spawn(move || {
                let mut mine: Vec<u64> = Vec::new();
                let mut turn = client;
                while !stop.load(Ordering::SeqCst) {
                    turn += 1;
                    let started = Instant::now();
                    let count = 1 + (turn % 4) as u64 * 3;
                    match take_ids(&addrs[turn % addrs.len()], count) {
                        Ok(ids) => {
                            if killed_at.lock().unwrap().is_some_and(|k| started > k) {
                                after.lock().unwrap()[client] += 1;
                            }
                            all.lock().unwrap()[client] += 1;
                            mine.extend(ids);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
                mine
            })
        })
        .collect();

    // Every client is served before the kill, so each crosses it.
    let everyone_started = wait_for(LEADER_WAIT, || {
        let all = successes.lock().unwrap();
        all.iter().all(|n| *n >= 5).then_some(())
    });
    assert!(
        everyone_started.is_some(),
        "not every client was served before the kill: {:?}\n{}",
        successes.lock().unwrap(),
        cluster.logs()
    );
    *killed_at.lock().unwrap() = Some(Instant::now());
    cluster.nodes[leader].kill();
    let everyone_served = wait_for(FAILOVER_WAIT, || {
        let after = successes_after_kill.lock().unwrap();
        after.iter().all(|n| *n >= 5).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let per_client: Vec<Vec<u64>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(
        everyone_served.is_some(),
        "not every client was served after the kill: {:?}\n{}",
        successes_after_kill.lock().unwrap(),
        cluster.logs()
    );
    let mut seen = HashSet::new();
    for (client, ids) in per_client.iter().enumerate() {
        assert!(
            strictly_increasing(ids),
            "client {client} saw IDs go back\n{}",
            cluster.logs()
        );
        for id in ids {
            assert!(
                seen.insert(*id),
                "ID {id} returned twice\n{}",
                cluster.logs()
            );
        }
    }
    assert!(seen.len() > 100, "only {} IDs", seen.len());
}

/// Creates `n` sessions with a long TTL through the cluster, from a few
/// threads; one log entry each.
fn create_sessions(addr: &str, n: usize) {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addr = addr.to_string();
            thread::spawn(move || {
                for i in (t..n).step_by(4) {
                    let path = format!("/api/v1/sessions?name=s{i}&ttl=600000");
                    let created = wait_for(Duration::from_secs(20), || {
                        common::request_following("POST", &addr, &path, b"")
                            .filter(|r| r.status == 200)
                    });
                    assert!(created.is_some(), "session {i} not created");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_follower_far_behind_catches_up_through_a_snapshot() {
    let mut cluster = Cluster::new("snapshot", 3);
    for node in &mut cluster.nodes {
        node.env
            .push(("TICKETD_COMPACT_ENTRIES".to_string(), "50".to_string()));
        node.extra_args
            .extend(["--snapshot".to_string(), "100".to_string()]);
    }
    cluster.start_all();
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let lagger = (leader + 1) % 3;
    let before = take_ids_anywhere(&addrs(&cluster), 10, LEADER_WAIT).expect("IDs before");
    let lag_last = cluster.nodes[lagger]
        .status_u64("LastIndex")
        .expect("lagger status");
    cluster.nodes[lagger].kill();

    let leader_addr = cluster.nodes[leader].http();
    create_sessions(&leader_addr, 300);
    // The leader compacted past everything the lagger has: only a
    // snapshot can bring it back.
    let compacted = wait_for(LEADER_WAIT, || {
        let first = cluster.nodes[leader].status_u64("FirstIndex")?;
        (first > lag_last + 100).then_some(first)
    });
    assert!(
        compacted.is_some(),
        "the leader never compacted its log\n{}",
        cluster.logs()
    );
    // The status page recounts sessions a few times a second.
    let counted = wait_for(LEADER_WAIT, || {
        let status = cluster.nodes[leader].status()?;
        let sessions = common::ops::json_u64(&status, "Sessions")?;
        let commit = common::ops::json_u64(&status, "CommitIndex")?;
        (sessions >= 300).then_some((commit, sessions))
    });
    let Some((commit, sessions)) = counted else {
        panic!(
            "the leader does not count 300 sessions: {:?}\n{}",
            cluster.nodes[leader].status(),
            cluster.logs()
        );
    };

    cluster.nodes[lagger].start();
    let caught_up = wait_for(LEADER_WAIT, || {
        let status = cluster.nodes[lagger].status()?;
        let applied = common::ops::json_u64(&status, "AppliedIndex")?;
        let snapshot = common::ops::json_u64(&status, "SnapshotIndex")?;
        let counted = common::ops::json_u64(&status, "Sessions")?;
        (applied >= commit && snapshot > lag_last && counted == sessions).then_some(status)
    });
    assert!(
        caught_up.is_some(),
        "the lagger did not catch up to {commit} with {sessions} sessions: {:?}\n{}",
        cluster.nodes[lagger].status(),
        cluster.logs()
    );

    // The caught-up node carries on: with the old leader gone it and the
    // third node elect a leader, and it serves larger IDs itself.
    cluster.nodes[leader].kill();
    let lagger_addr = cluster.nodes[lagger].http();
    let lagger_id = cluster.nodes[lagger].status_u64("Id").expect("lagger id");
    let other = 3 - leader - lagger;
    let serving = wait_for(LEADER_WAIT, || {
        if cluster.nodes[lagger].is_leader() {
            return post(&lagger_addr, "/?count=3").filter(|r| r.status == 200);
        }
        if cluster.nodes[other].is_leader() {
            // The other node won the election: hand leadership over.
            let path = format!("/api/v1/cluster/transfer?to={lagger_id}");
            let _ = common::request_following("POST", &lagger_addr, &path, b"");
        }
        None
    });
    let Some(response) = serving else {
        panic!(
            "the caught-up node never served IDs: {:?}\n{}",
            cluster.nodes[lagger].status(),
            cluster.logs()
        );
    };
    let after = common::ids_of(&response);
    assert!(
        after[0] > *before.last().unwrap(),
        "{after:?} after {before:?}"
    );
    let status = cluster.nodes[lagger].status().unwrap_or_default();
    assert_eq!(json_str(&status, "Role").as_deref(), Some("leader"));
    assert_eq!(
        common::ops::json_u64(&status, "Sessions"),
        Some(sessions),
        "{status}"
    );
    let ready = wait_for(Duration::from_secs(10), || {
        request("GET", &lagger_addr, "/readyz", b"").filter(|r| r.status == 200)
    });
    assert!(ready.is_some(), "not ready\n{}", cluster.logs());
}

/// `kill -9` of whoever leads, five times, while two sequential clients
/// take IDs through every node in counts that drain ranges every few
/// requests: kills land during writes and refills, the killed node comes
/// back while the next one leads. Every acknowledged ID is checked: none
/// twice, and each larger than every ID acknowledged before its request
/// started.
#[test]
fn kill_9_of_leaders_during_writes_and_refills_never_repeats_an_id() {
    const ROUNDS: usize = 5;
    static COUNTS: &[u64] = &[1, 7, 3_000, 9_000];
    let mut cluster = Cluster::start("churn", 3);
    let clients: Vec<churn::Client> = (0..2)
        .map(|_| churn::Client::start(addrs(&cluster), COUNTS))
        .collect();
    let acknowledged = |clients: &[churn::Client]| -> usize {
        clients.iter().map(churn::Client::acknowledged).sum()
    };
    let mut seed = u64::from(std::process::id()) * 2_654_435_761;
    let first_seed = seed;
    for round in 0..ROUNDS {
        let before = acknowledged(&clients);
        let served = wait_for(LEADER_WAIT, || {
            (acknowledged(&clients) >= before + 4).then_some(())
        });
        assert!(
            served.is_some(),
            "round {round}: no IDs served\n{}",
            cluster.logs()
        );
        let leader = cluster.wait_leader_status(LEADER_WAIT);
        thread::sleep(churn::pause_ms(&mut seed, 0..300));
        cluster.nodes[leader].kill();
        // The next leader serves before the killed node is back.
        let before = acknowledged(&clients);
        let served = wait_for(LEADER_WAIT, || {
            (acknowledged(&clients) > before).then_some(())
        });
        assert!(
            served.is_some(),
            "round {round}: no IDs after the kill\n{}",
            cluster.logs()
        );
        cluster.nodes[leader].start();
    }
    let batches: Vec<churn::Batch> = clients.into_iter().flat_map(churn::Client::stop).collect();
    let distinct = churn::check_batches(&batches)
        .unwrap_or_else(|e| panic!("{e} (seed {first_seed})\n{}", cluster.logs()));
    assert!(distinct > 5 * 10_000, "only {distinct} IDs");
}

/// Both followers die (`kill -9`) and, while the leader's lease still
/// runs, a request needs a fresh range: the leader may propose it but,
/// never hearing it committed, must not serve from it. The leader is then
/// killed and the followers come back without that entry on their disks;
/// they elect a leader that reserves from what was committed, so any ID
/// the cut-off leader had served from its uncommitted range would come
/// again. (SIGSTOP would not do: the frozen followers' sockets still take
/// the entry in, and the next leader commits it.)
#[test]
fn a_leader_cut_off_from_its_followers_serves_no_range_it_has_not_committed() {
    let mut cluster = Cluster::start("uncommitted", 3);
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let addr = cluster.nodes[leader].http();
    let mut acknowledged = Vec::new();
    let warm = wait_for(LEADER_WAIT, || {
        let response = post(&addr, "/?count=10")?;
        churn::acknowledged_ids(&response, 10)
    });
    acknowledged.extend(warm.expect("IDs before the freeze"));
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for &follower in &followers {
        cluster.nodes[follower].kill();
    }
    // More than the pool holds, within the lease: a refill is needed.
    for count in [100_000, 100_000, 1] {
        if let Some(ids) = post(&addr, &format!("/?count={count}"))
            .and_then(|r| churn::acknowledged_ids(&r, count))
        {
            acknowledged.extend(ids);
        }
    }
    cluster.nodes[leader].kill();
    for &follower in &followers {
        cluster.nodes[follower].start();
    }
    let after = take_ids_anywhere(
        &followers
            .iter()
            .map(|i| cluster.nodes[*i].http())
            .collect::<Vec<_>>(),
        100_000,
        LEADER_WAIT,
    )
    .unwrap_or_else(|| panic!("no IDs from the survivors\n{}", cluster.logs()));
    let highest = acknowledged.iter().copied().max().unwrap_or(0);
    assert!(
        after[0] > highest,
        "the new leader served {} after the cut-off leader had acknowledged {highest} \
         ({} IDs in all)\n{}",
        after[0],
        acknowledged.len(),
        cluster.logs()
    );
}

/// IDs served by `node` itself (not through a redirect) once it leads,
/// asking the leader to hand over to it meanwhile.
fn ids_from_when_it_leads(cluster: &Cluster, node: usize, count: u64) -> Vec<u64> {
    let addr = cluster.nodes[node].http();
    let id = cluster.nodes[node].status_u64("Id").expect("node id");
    let transfer = format!("/api/v1/cluster/transfer?to={id}");
    let served = wait_for(LEADER_WAIT, || {
        if let Some(response) = post(&addr, &format!("/?count={count}"))
            && response.status == 200
        {
            return Some(common::ids_of(&response));
        }
        if !cluster.nodes[node].is_leader()
            && let Some(leader) = cluster.nodes.iter().find(|n| n.is_leader())
        {
            let _ = post(&leader.http(), &transfer);
        }
        None
    });
    served.unwrap_or_else(|| panic!("node {node} never served IDs as leader\n{}", cluster.logs()))
}

/// Leadership handed away and back: a node that leads again serves only
/// ranges reserved in its new term, never what was left in its pool from
/// the old one (below what the leader in between served).
#[test]
fn leadership_handed_away_and_back_keeps_ids_increasing() {
    let cluster = Cluster::start("hand-back", 3);
    let first = cluster.wait_leader(LEADER_WAIT);
    let second = (first + 1) % 3;
    let mut ids = Vec::new();
    for round in 0..3 {
        // A few IDs each: the rest of each reserved range stays in the
        // pool of the node that hands over.
        for node in [first, second] {
            let served = ids_from_when_it_leads(&cluster, node, 3);
            assert!(
                ids.last().is_none_or(|last| served[0] > *last),
                "round {round}: node {node} served {served:?} after {ids:?}\n{}",
                cluster.logs()
            );
            ids.extend(served);
        }
    }
    assert!(strictly_increasing(&ids), "{ids:?}");
}
