//! Membership corner cases on three-node clusters of the release binary:
//! a removed node stops (exit 0) and refuses a plain restart, node ids
//! are never reused, removing the leader hands over first, a node whose
//! data dir was wiped is refused (exit 1), and every member's HTTP
//! address is published through the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::ops::{json_str, json_u64, post_following_301, take_ids_anywhere};
use common::{Cluster, Response, get, post, request_following, wait_for};
use ticketd::wire::{Handshake, write_handshake};

/// Elections take 0.8–1.6 s; on a loaded two-core machine with other
/// tests running, allow many of them.
const LEADER_WAIT: Duration = Duration::from_secs(20);
const EXIT_WAIT: Duration = Duration::from_secs(20);

fn addrs(cluster: &Cluster) -> Vec<String> {
    cluster.nodes.iter().map(|n| n.http()).collect()
}

/// Index of the node whose status says `Id` is `id`.
fn node_id(cluster: &Cluster, index: usize) -> u64 {
    wait_for(LEADER_WAIT, || cluster.nodes[index].status_u64("Id"))
        .unwrap_or_else(|| panic!("node {index} has no status\n{}", cluster.logs()))
}

/// A membership request through any running node, following redirects,
/// retried while the answer is retryable (503, or a change pending).
fn membership_request(cluster: &Cluster, method: &str, path: &str) -> Response {
    let answer = wait_for(LEADER_WAIT, || {
        cluster
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .find_map(|n| {
                let response = request_following(method, &n.http(), path, b"")?;
                let retry = response.status == 503
                    || (response.status == 409 && response.body.contains("in progress"));
                (!retry).then_some(response)
            })
    });
    answer.unwrap_or_else(|| panic!("{method} {path} never answered\n{}", cluster.logs()))
}

fn remove_member(cluster: &Cluster, id: u64) {
    let response = membership_request(cluster, "DELETE", &format!("/api/v1/cluster/members/{id}"));
    assert_eq!(response.status, 200, "{response:?}\n{}", cluster.logs());
}

/// Waits until every running node's `/api/v1/cluster` lists every member
/// of `expected` (peer address → HTTP address) with its HTTP address.
fn wait_published(cluster: &Cluster, expected: &[(String, String)]) {
    let published = wait_for(LEADER_WAIT, || {
        cluster
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .all(|n| {
                get(&n.http(), "/api/v1/cluster").is_some_and(|r| {
                    r.status == 200
                        && expected.iter().all(|(peer, http)| {
                            r.body
                                .contains(&format!("\"Peer\":\"{peer}\",\"Http\":\"{http}\""))
                        })
                })
            })
            .then_some(())
    });
    assert!(
        published.is_some(),
        "HTTP addresses never published everywhere\n{}",
        cluster.logs()
    );
}

fn all_members(cluster: &Cluster) -> Vec<(String, String)> {
    cluster.nodes.iter().map(|n| (n.peer(), n.http())).collect()
}

#[test]
fn a_removed_node_exits_0_and_refuses_a_plain_restart() {
    let mut cluster = Cluster::start("removed-exits", 3);
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let id = node_id(&cluster, follower);
    remove_member(&cluster, id);
    let status = cluster.nodes[follower]
        .wait_exit(EXIT_WAIT)
        .unwrap_or_else(|| panic!("the removed node keeps running\n{}", cluster.logs()));
    assert_eq!(status.code(), Some(0), "{}", cluster.nodes[follower].log());
    assert!(
        cluster.nodes[follower]
            .log()
            .contains("removed from the cluster"),
        "{}",
        cluster.nodes[follower].log()
    );

    // A plain restart refuses, and says what to do instead.
    cluster.nodes[follower].start();
    let status = cluster.nodes[follower]
        .wait_exit(EXIT_WAIT)
        .expect("a refused restart exits");
    assert_eq!(status.code(), Some(1));
    let log = cluster.nodes[follower].log();
    assert!(
        log.contains("ticketd start") && log.contains("ticketd join"),
        "{log}"
    );
    // The other two keep serving.
    assert!(take_ids_anywhere(&addrs(&cluster), 10, LEADER_WAIT).is_some());
}

#[test]
fn the_id_of_a_removed_highest_member_is_never_assigned_again() {
    let mut cluster = Cluster::start("ids-not-reused", 3);
    let ids: Vec<u64> = (0..3).map(|i| node_id(&cluster, i)).collect();
    let highest = *ids.iter().max().unwrap();
    let index = ids.iter().position(|id| *id == highest).unwrap();
    remove_member(&cluster, highest);
    let status = cluster.nodes[index].wait_exit(EXIT_WAIT);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", cluster.logs());

    // Asking for the old id explicitly is refused...
    let again = membership_request(
        &cluster,
        "POST",
        &format!("/api/v1/cluster/members?peer=127.0.0.1:1&http=127.0.0.1:2&id={highest}"),
    );
    assert_eq!(again.status, 409, "{again:?}");
    assert!(again.body.contains("never reused"), "{}", again.body);
    // ... and a new member gets an id above every id used before.
    let added = membership_request(
        &cluster,
        "POST",
        "/api/v1/cluster/members?peer=127.0.0.1:3&http=127.0.0.1:4",
    );
    assert_eq!(added.status, 200, "{added:?}");
    let new_id = json_u64(&added.body, "Id").expect("an id");
    assert!(new_id > highest, "new member got id {new_id}, ids {ids:?}");
    let listed = wait_for(LEADER_WAIT, || {
        let body = get(&cluster.nodes[(index + 1) % 3].http(), "/api/v1/cluster")?.body;
        body.contains(&format!("\"Id\":{new_id},")).then_some(())
    });
    assert!(listed.is_some(), "{}", cluster.logs());
}

/// A client that takes one ID after another until told to stop, from
/// whichever node it last heard of, following a 301 by hand; it records
/// every status it saw and every ID it got, in order.
fn spawn_client(
    nodes: Vec<String>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<(Vec<u64>, HashSet<u16>)>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut next = 0;
        while !stop.load(Ordering::SeqCst) {
            let addr = nodes[next % nodes.len()].clone();
            next += 1;
            let Some((response, redirected)) = post_following_301(&addr) else {
                continue;
            };
            if redirected {
                seen.lock().unwrap().1.insert(301);
            }
            let mut seen = seen.lock().unwrap();
            seen.1.insert(response.status);
            if response.status == 200 {
                seen.0.extend(common::ids_of(&response));
            } else {
                drop(seen);
                thread::sleep(Duration::from_millis(20));
            }
        }
    })
}

#[test]
fn removing_the_leader_hands_over_first_and_ids_keep_flowing() {
    let mut cluster = Cluster::start("remove-leader", 3);
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let leader_id = node_id(&cluster, leader);
    let others: Vec<String> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| cluster.nodes[i].http())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new((Vec::new(), HashSet::new())));
    let client = spawn_client(others.clone(), Arc::clone(&stop), Arc::clone(&seen));
    assert!(
        wait_for(LEADER_WAIT, || (!seen.lock().unwrap().0.is_empty())
            .then_some(()))
        .is_some(),
        "no IDs before the removal\n{}",
        cluster.logs()
    );

    // Asked of the leader itself.
    let response = wait_for(LEADER_WAIT, || {
        let r = request_following(
            "DELETE",
            &cluster.nodes[leader].http(),
            &format!("/api/v1/cluster/members/{leader_id}"),
            b"",
        )?;
        (r.status != 503).then_some(r)
    })
    .unwrap_or_else(|| panic!("the removal never answered\n{}", cluster.logs()));
    assert_eq!(response.status, 200, "{response:?}\n{}", cluster.logs());
    let status = cluster.nodes[leader].wait_exit(EXIT_WAIT);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", cluster.logs());
    let old_log = cluster.nodes[leader].log();
    assert!(old_log.contains("transfers leadership"), "{old_log}");

    let count_at_removal = seen.lock().unwrap().0.len();
    let more = wait_for(LEADER_WAIT, || {
        (seen.lock().unwrap().0.len() > count_at_removal + 10).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    assert!(
        more.is_some(),
        "no IDs after the removal\n{}",
        cluster.logs()
    );
    let (ids, statuses) = &*seen.lock().unwrap();
    assert!(
        ids.windows(2).all(|w| w[1] > w[0]),
        "IDs not unique and increasing"
    );
    let allowed: HashSet<u16> = [200, 301, 503].into_iter().collect();
    assert!(
        statuses.is_subset(&allowed),
        "clients saw {statuses:?}\n{}",
        cluster.logs()
    );
}

#[test]
fn a_node_restarted_on_a_wiped_data_dir_is_refused_and_exits_1() {
    let mut cluster = Cluster::start("wiped", 3);
    // Every member's incarnation is published with its HTTP address.
    wait_published(&cluster, &all_members(&cluster));
    let before = take_ids_anywhere(&addrs(&cluster), 100, LEADER_WAIT).expect("IDs");
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let wiped = (0..3).find(|i| *i != leader).unwrap();
    let id = node_id(&cluster, wiped);
    cluster.nodes[wiped].kill();
    std::fs::remove_dir_all(&cluster.nodes[wiped].data_dir).unwrap();
    cluster.nodes[wiped].start();
    let status = cluster.nodes[wiped]
        .wait_exit(EXIT_WAIT)
        .unwrap_or_else(|| panic!("the wiped node keeps running\n{}", cluster.logs()));
    assert_eq!(status.code(), Some(1), "{}", cluster.nodes[wiped].log());
    let log = cluster.nodes[wiped].log();
    for words in [
        format!("node {id}'s data is gone"),
        format!("DELETE /api/v1/cluster/members/{id}"),
        "`ticketd join` as a new member".to_string(),
    ] {
        assert!(log.contains(&words), "{words:?} not in:\n{log}");
    }
    let after = take_ids_anywhere(&addrs(&cluster), 100, LEADER_WAIT).expect("IDs after");
    let last_before = before.iter().max().unwrap();
    assert!(after.iter().all(|id| id > last_before), "{after:?}");
}

/// Connects to `peer_addr` as node `id` of `cluster_id`, announcing
/// `http_addr`, and keeps the connection open.
fn impersonate(peer_addr: &str, cluster_id: u64, id: u64, http_addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(peer_addr).unwrap();
    let handshake = Handshake {
        cluster_id,
        node_id: id,
        peer_addr: "127.0.0.1:1".into(),
        http_addr: http_addr.into(),
        // As an older build would: nothing to check it against.
        incarnation: 0,
    };
    write_handshake(&mut stream, &handshake).unwrap();
    stream
}

#[test]
fn every_member_publishes_its_http_address_and_followers_redirect_to_it() {
    let cluster = Cluster::start("published", 3);
    wait_published(&cluster, &all_members(&cluster));
    // A connection that announces another HTTP address for the leader
    // changes nothing: redirects use only what the log records.
    let leader = cluster.wait_leader_status(LEADER_WAIT);
    let leader_id = node_id(&cluster, leader);
    let status = cluster.nodes[leader].status().expect("a status");
    let cluster_id = u64::from_str_radix(&json_str(&status, "Cluster").unwrap(), 16).unwrap();
    let fakes: Vec<(usize, TcpStream)> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| {
            let fake = impersonate(
                &cluster.nodes[i].peer(),
                cluster_id,
                leader_id,
                "127.0.0.1:9",
            );
            (i, fake)
        })
        .collect();
    // Each node has taken the fake handshake in (accepted or refused, its
    // log names the connection's address) before redirects are judged.
    for (i, fake) in &fakes {
        let from = format!("from {}", fake.local_addr().unwrap());
        let seen = wait_for(LEADER_WAIT, || {
            cluster.nodes[*i].log().contains(&from).then_some(())
        });
        assert!(
            seen.is_some(),
            "node {i} never handled the fake handshake {from}\n{}",
            cluster.logs()
        );
    }
    let checked = wait_for(LEADER_WAIT, || {
        let leader = cluster.nodes.iter().position(|n| n.is_leader())?;
        let leader_http = cluster.nodes[leader].http();
        for (i, node) in cluster.nodes.iter().enumerate() {
            if i == leader {
                continue;
            }
            let status = node.status()?;
            if json_str(&status, "LeaderHttp")? != leader_http {
                return None;
            }
            let response = post(&node.http(), "/")?;
            let expected = format!("http://{leader_http}/");
            if response.status != 301 || response.header("location") != Some(expected.as_str()) {
                return None;
            }
        }
        Some(())
    });
    assert!(
        checked.is_some(),
        "followers never redirected to the published address\n{}",
        cluster.logs()
    );
}
