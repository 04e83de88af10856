//! A full LMDB map: writes answer 507, reads and the node go on, and
//! nothing acknowledged before is lost (SPEC, "Bad input and faults").

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_support;
mod common;

use std::time::Duration;

use api_support::{Api, Json};
use common::Cluster;

#[test]
fn a_full_map_refuses_writes_with_507_and_loses_nothing() {
    let mut cluster = Cluster::new("storage-full", 1);
    cluster.nodes[0].extra_args = vec!["--db_size".into(), "1".into()];
    cluster.nodes[0].start();
    cluster.wait_leader(Duration::from_secs(10));
    let api = Api::new(&cluster.nodes[0].http());
    let session = api.open_session("filler", 600_000);
    let data = vec![b'x'; 1000];
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..5_000 {
        let name = format!("t{i}");
        let answer = api.issue(&session, "big", &name, &data);
        match answer.status {
            200 => acknowledged.push(name),
            507 => {
                refused = Some(answer);
                break;
            }
            other => panic!("ticket {i}: {other} {}\n{}", answer.body, cluster.logs()),
        }
    }
    let refused = refused.unwrap_or_else(|| panic!("the map never filled\n{}", cluster.logs()));
    assert_eq!(refused.body.lines().count(), 1, "{:?}", refused.body);
    assert!(
        acknowledged.len() > 50,
        "only {} tickets fit",
        acknowledged.len()
    );

    // The node is alive and still answers reads.
    assert_eq!(
        common::get(&cluster.nodes[0].http(), "/healthz")
            .unwrap()
            .status,
        200
    );
    let dump = api.json("GET", "/dump/resources/big", b"");
    assert_eq!(
        dump.get("big").get("Tickets").len(),
        acknowledged.len(),
        "reads see every acknowledged ticket"
    );
    assert_eq!(api.issue(&session, "big", "one-more", &data).status, 507);

    // Restarted with room to spare, everything acknowledged is there.
    cluster.nodes[0].kill();
    cluster.nodes[0].extra_args = vec!["--db_size".into(), "64".into()];
    cluster.nodes[0].start();
    cluster.wait_leader(Duration::from_secs(10));
    let dump: Json = api.json("GET", "/dump/resources/big", b"");
    let tickets = dump.get("big").get("Tickets");
    for name in &acknowledged {
        assert!(tickets.has(name), "ticket {name} was lost");
    }
    assert_eq!(api.issue(&session, "big", "after", &data).status, 200);
}
