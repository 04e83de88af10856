//! Membership from the command line, as an operator runs it: `start` a
//! one-node cluster, `drop` a data directory, `join` nodes to grow it
//! (through the leader and through a follower) while a client takes IDs,
//! and `leave` to shrink it again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Cluster;
use common::ops::{json_str, run_ticketd, take_ids_anywhere};

/// Elections take 0.8–1.6 s; allow many on a loaded two-core machine.
const LEADER_WAIT: Duration = Duration::from_secs(20);
const EXIT_WAIT: Duration = Duration::from_secs(20);

/// `n` nodes with no peer list; each is started with a subcommand.
fn nodes(name: &str, n: usize) -> Cluster {
    let mut cluster = Cluster::new(name, n);
    for node in &mut cluster.nodes {
        node.peers = String::new();
    }
    cluster
}

/// Starts node `index` with `command` (e.g. `["start"]`); a later plain
/// restart runs without it.
fn start_with(cluster: &mut Cluster, index: usize, command: &[&str]) {
    let node = &mut cluster.nodes[index];
    node.extra_args = command.iter().map(|s| s.to_string()).collect();
    node.start();
    node.extra_args.clear();
}

/// The cluster id (hex) in node `index`'s status.
fn cluster_id(cluster: &Cluster, index: usize) -> Option<String> {
    json_str(&cluster.nodes[index].status()?, "Cluster")
}

#[test]
fn start_makes_a_new_cluster_each_time_and_a_plain_restart_keeps_it() {
    let mut cluster = nodes("start", 1);
    start_with(&mut cluster, 0, &["start"]);
    let http = vec![cluster.nodes[0].http()];
    let first = take_ids_anywhere(&http, 1, LEADER_WAIT)
        .unwrap_or_else(|| panic!("start serves no IDs\n{}", cluster.logs()));
    let id_of_start = cluster_id(&cluster, 0);
    assert_eq!(
        cluster.nodes[0].terminate(EXIT_WAIT).unwrap().code(),
        Some(0)
    );

    // A plain restart keeps the cluster and its IDs.
    cluster.nodes[0].start();
    let again = take_ids_anywhere(&http, 1, LEADER_WAIT).expect("IDs after a restart");
    assert!(again[0] > first[0]);
    assert_eq!(cluster_id(&cluster, 0), id_of_start);
    assert_eq!(
        cluster.nodes[0].terminate(EXIT_WAIT).unwrap().code(),
        Some(0)
    );

    // `start` again: another cluster, after saying what it wipes.
    start_with(&mut cluster, 0, &["start"]);
    take_ids_anywhere(&http, 1, LEADER_WAIT).expect("IDs after a second start");
    let id_of_restart = cluster_id(&cluster, 0);
    assert!(id_of_restart.is_some());
    assert_ne!(
        id_of_restart, id_of_start,
        "start must draw a new cluster id"
    );
    let log = cluster.nodes[0].log();
    assert!(log.contains("wiped the data of node 1 of cluster"), "{log}");
    assert!(log.contains(&cluster.nodes[0].data_dir.display().to_string()));
}

#[test]
fn drop_refuses_a_running_node_and_empties_a_stopped_one() {
    let mut cluster = nodes("drop", 1);
    start_with(&mut cluster, 0, &["start"]);
    take_ids_anywhere(&[cluster.nodes[0].http()], 1, LEADER_WAIT).expect("IDs");
    let dir = cluster.nodes[0].data_dir.display().to_string();
    let (status, stderr) = run_ticketd(&["drop", "--path", &dir], EXIT_WAIT).expect("drop exits");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by a running node"), "{stderr}");
    assert!(cluster.nodes[0].is_healthy());

    assert_eq!(
        cluster.nodes[0].terminate(EXIT_WAIT).unwrap().code(),
        Some(0)
    );
    let (status, stderr) = run_ticketd(&["drop", "--path", &dir], EXIT_WAIT).expect("drop exits");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!cluster.nodes[0].data_dir.exists(), "{stderr}");
    // Dropping nothing is fine too.
    let (status, _) = run_ticketd(&["drop", "--path", &dir], EXIT_WAIT).expect("drop exits");
    assert_eq!(status.code(), Some(0));
}
