//! A rolling restart of a three-node cluster on the release binary, as
//! an operator does it: SIGTERM one node, start it again, wait until it
//! is back (ready, caught up), then the next — the leader among them.
//! A client takes IDs the whole time through any node, as the README
//! advises: follow redirects, on a 503 honour `Retry-After` or try
//! another node, on a refused connection try another node. It sees
//! nothing but 200, 301, 307 and 503, no duplicate, and its IDs only
//! increase.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::ops::json_u64;
use common::{Cluster, get, request, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// What the client saw.
#[derive(Default)]
struct Seen {
    ids: Vec<u64>,
    /// Answers by status; 0 counts refused or broken connections.
    statuses: BTreeMap<u16, u64>,
}

/// One `POST /` as a careful client makes it: from `addr`, following
/// redirects; Some(IDs) on a 200, None after anything else (recorded).
fn take_one(addr: &str, seen: &Mutex<Seen>) -> Option<u64> {
    let mut at = addr.to_string();
    for _ in 0..3 {
        let Some(response) = request("POST", &at, "/", b"") else {
            *seen.lock().unwrap().statuses.entry(0).or_default() += 1;
            return None;
        };
        *seen
            .lock()
            .unwrap()
            .statuses
            .entry(response.status)
            .or_default() += 1;
        match response.status {
            200 => return response.body.trim().parse().ok(),
            301 | 307 => {
                let location = response.header("location")?.strip_prefix("http://")?;
                at = location.split('/').next()?.to_string();
            }
            503 => {
                // Honour Retry-After, bounded: another node may serve
                // sooner, so the caller moves on to the next one.
                let after: u64 = response
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                thread::sleep(Duration::from_millis(100 * after.min(5)));
                return None;
            }
            _ => return None,
        }
    }
    None
}

fn spawn_client(
    addrs: Vec<String>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut next = 0;
        while !stop.load(Ordering::SeqCst) {
            // Every node in turn, the one being restarted too.
            let addr = &addrs[next % addrs.len()];
            next += 1;
            if let Some(id) = take_one(addr, &seen) {
                seen.lock().unwrap().ids.push(id);
            }
        }
    })
}

fn id_count(seen: &Mutex<Seen>) -> usize {
    seen.lock().unwrap().ids.len()
}

/// Waits until node `index` is ready and has applied what the cluster
/// had committed when it came back.
fn wait_rejoined(cluster: &Cluster, index: usize) {
    let node = &cluster.nodes[index];
    let ready = wait_for(WAIT, || {
        get(&node.http(), "/readyz")
            .is_some_and(|r| r.status == 200)
            .then_some(())
    });
    assert!(
        ready.is_some(),
        "node {index} not ready\n{}",
        cluster.logs()
    );
    let leader = cluster.wait_leader_status(WAIT);
    let commit = cluster.nodes[leader].status_u64("CommitIndex").unwrap();
    let caught_up = wait_for(WAIT, || {
        let applied = json_u64(&node.status()?, "AppliedIndex")?;
        (applied >= commit).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "node {index} did not catch up\n{}",
        cluster.logs()
    );
}

/// SIGTERM node `index` (it must exit 0), start it again, and wait
/// until it is back; `more` checks that the client got IDs meanwhile.
fn restart(cluster: &mut Cluster, index: usize, more: &dyn Fn(&Cluster, &str)) {
    let status = cluster.nodes[index].terminate(WAIT);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "node {index} did not stop cleanly\n{}",
        cluster.logs()
    );
    more(cluster, &format!("while node {index} is down"));
    cluster.nodes[index].start();
    wait_rejoined(cluster, index);
    more(cluster, &format!("after node {index} came back"));
}

#[test]
fn a_rolling_restart_costs_clients_only_retryable_answers() {
    let mut cluster = Cluster::start("rolling", 3);
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.http()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let client = spawn_client(addrs, Arc::clone(&stop), Arc::clone(&seen));
    let more = |cluster: &Cluster, what: &str| {
        let count = id_count(&seen);
        let got = wait_for(WAIT, || (id_count(&seen) > count + 20).then_some(()));
        assert!(got.is_some(), "no IDs {what}\n{}", cluster.logs());
    };
    more(&cluster, "before the restarts");
    let started = Instant::now();
    // Two rounds; in each the leader goes last, so that one restart is
    // a handover under load after the others have come back.
    for _round in 0..2 {
        let leader = cluster.wait_leader_status(WAIT);
        let order: Vec<usize> = (0..3).filter(|i| *i != leader).chain([leader]).collect();
        for index in order {
            restart(&mut cluster, index, &more);
        }
    }
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();

    let seen = seen.lock().unwrap();
    let unique: HashSet<u64> = seen.ids.iter().copied().collect();
    let duplicates = seen.ids.len() - unique.len();
    println!(
        "rolling restart of 3 nodes in {:?}: {} IDs, {duplicates} duplicates, answers {:?}",
        started.elapsed(),
        seen.ids.len(),
        seen.statuses
    );
    assert_eq!(duplicates, 0);
    assert!(
        seen.ids.windows(2).all(|w| w[1] > w[0]),
        "the client's IDs did not only increase"
    );
    let allowed = [0, 200, 301, 307, 503];
    assert!(
        seen.statuses.keys().all(|s| allowed.contains(s)),
        "the client saw {:?}\n{}",
        seen.statuses,
        cluster.logs()
    );
}
