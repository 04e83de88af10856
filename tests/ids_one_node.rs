//! One node: IDs are positive, unique and increasing, `?count` blocks,
//! and a `kill -9` restart never goes back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Cluster, churn, ids_of, post};

#[test]
fn ids_increase_across_kill_and_restart() {
    let mut cluster = Cluster::start("one-node", 1);
    let addr = cluster.nodes[0].http();
    let mut seen = Vec::new();
    for _ in 0..200 {
        let response = post(&addr, "/").expect("answer");
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        seen.extend(ids_of(&response));
    }
    let block = post(&addr, "/?count=1000").expect("answer");
    assert_eq!(block.status, 200);
    let block = ids_of(&block);
    assert_eq!(block.len(), 1000);
    assert!(
        block.windows(2).all(|w| w[1] == w[0] + 1),
        "a block is consecutive"
    );
    seen.extend(block);
    assert!(seen[0] > 0);
    assert!(seen.windows(2).all(|w| w[1] > w[0]), "strictly increasing");

    cluster.nodes[0].kill();
    cluster.nodes[0].start();
    cluster.wait_leader(Duration::from_secs(10));
    let after = ids_of(&post(&addr, "/").expect("answer after restart"));
    assert!(
        after[0] > *seen.last().unwrap(),
        "{after:?} after {:?}",
        seen.last()
    );
}

#[test]
fn bad_counts_paths_and_methods_are_refused() {
    let cluster = Cluster::start("one-node-errors", 1);
    let addr = cluster.nodes[0].http();
    for bad in ["/?count=0", "/?count=100001", "/?count=abc", "/?count=-3"] {
        let response = post(&addr, bad).expect("answer");
        assert_eq!(response.status, 400, "{bad}");
        assert_eq!(response.body.lines().count(), 1, "one-line reason");
    }
    assert_eq!(common::get(&addr, "/").unwrap().status, 405);
    assert_eq!(post(&addr, "/nope").unwrap().status, 404);
    assert_eq!(common::get(&addr, "/healthz").unwrap().status, 200);
    assert_eq!(common::get(&addr, "/readyz").unwrap().status, 200);
    let metrics = common::get(&addr, "/metrics").unwrap();
    assert!(metrics.body.contains("ticketd_term"));
}

/// `kill -9` at varied moments while a client takes IDs in counts that
/// drain a reserved range every few requests (ranges are 10,000 IDs at
/// least), so kills land during writes, right after answers and across
/// refills; every acknowledged ID is checked at the end.
#[test]
fn kill_9_during_writes_and_refills_never_repeats_an_id() {
    const ROUNDS: usize = 20;
    static COUNTS: &[u64] = &[1, 9, 2_500, 12_000, 40];
    let mut cluster = Cluster::start("one-node-churn", 1);
    let addr = cluster.nodes[0].http();
    let client = churn::Client::start(vec![addr], COUNTS);
    let mut seed = u64::from(std::process::id()) * 2_654_435_761;
    let first_seed = seed;
    for round in 0..ROUNDS {
        // Wait for fresh acknowledgements, then kill at a varied moment.
        let before = client.acknowledged();
        let served = common::wait_for(Duration::from_secs(20), || {
            (client.acknowledged() >= before + 3).then_some(())
        });
        assert!(
            served.is_some(),
            "round {round}: no IDs served after the restart\n{}",
            cluster.logs()
        );
        std::thread::sleep(churn::pause_ms(&mut seed, 0..400));
        cluster.nodes[0].kill();
        cluster.nodes[0].start();
    }
    let before = client.acknowledged();
    let served = common::wait_for(Duration::from_secs(20), || {
        (client.acknowledged() >= before + 3).then_some(())
    });
    let batches = client.stop();
    assert!(served.is_some(), "no IDs after the last restart");
    let distinct = churn::check_batches(&batches)
        .unwrap_or_else(|e| panic!("{e} (seed {first_seed})\n{}", cluster.logs()));
    // Many ranges were drained: the kills crossed refills.
    assert!(distinct > 10 * 10_000, "only {distinct} IDs");
}
