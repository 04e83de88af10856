//! Membership corner cases, driven by hand on the simulated cluster (every
//! safety check runs after each event): a node whose data directory was
//! wiped comes back with an empty log under its old id. Owns only these
//! scenarios.

use ticketd::raft::{FRESH_REFUSAL_TIMEOUTS, Message, MessageBody, NodeId, Role};

use crate::cluster::{Cluster, membership_of, sim_config};
use crate::disk::Disk;
use crate::network::NetParams;

fn quiet_net() -> NetParams {
    NetParams {
        delay_ticks_max: 1,
        ..NetParams::default()
    }
}

/// One tick for every running node, then everything in flight that
/// `allow` lets through is delivered.
fn tick_and_settle(
    cluster: &mut Cluster,
    allow: &mut impl FnMut(&mut Message) -> bool,
) -> Result<(), String> {
    cluster.now += 1;
    cluster.tick_all()?;
    cluster.settle(allow)
}

/// A, B and C; A leads, C has only A's first entry, and five more are
/// committed on A and B alone.
fn cluster_with_a_lagging_node(seed: u64) -> Cluster {
    let (a, c) = (1, 3);
    let mut cluster = Cluster::new(seed, sim_config(), quiet_net(), 3).unwrap();
    // Only A campaigns, so A wins.
    let mut only_a_campaigns =
        |m: &mut Message| !matches!(m.body, MessageBody::Vote { .. }) || m.from == a;
    for _ in 0..200 {
        if cluster.is_up(a) && cluster.raft(a).role() == Role::Leader {
            break;
        }
        tick_and_settle(&mut cluster, &mut only_a_campaigns).unwrap();
    }
    assert_eq!(
        cluster.raft(a).role(),
        Role::Leader,
        "{}",
        cluster.describe()
    );
    cluster.settle(|_| true).unwrap();
    let first = cluster.raft(c).last_index();
    assert!(first >= 1, "C has A's first entry");
    let mut cut_off_c = |m: &mut Message| m.to != c && m.from != c;
    for _ in 0..5 {
        assert!(cluster.propose(a).unwrap().is_some());
    }
    cluster.settle(&mut cut_off_c).unwrap();
    for _ in 0..4 {
        tick_and_settle(&mut cluster, &mut cut_off_c).unwrap();
    }
    assert!(cluster.raft(a).commit_index() >= first + 5);
    assert!(cluster.raft(2).commit_index() >= first + 5);
    assert_eq!(cluster.raft(c).last_index(), first);
    cluster
}

/// B's disk is replaced by a freshly bootstrapped one, as `ticketd PEERS`
/// on an empty data directory does.
fn wipe(cluster: &mut Cluster, id: NodeId) {
    cluster.crash(id);
    let membership = cluster.node(id).disk.snapshot.meta.membership.clone();
    if let Some(node) = cluster.nodes.get_mut(&id) {
        node.disk = Disk::bootstrap(membership_of(&membership.voters().collect::<Vec<_>>()));
    }
    cluster.check.on_wipe(id);
    cluster.restart(id).unwrap();
}

#[test]
fn a_wiped_node_does_not_help_a_lagging_node_win() {
    for seed in 0..8 {
        let (a, b, c) = (1, 2, 3);
        let mut cluster = cluster_with_a_lagging_node(seed);
        cluster.crash(a);
        wipe(&mut cluster, b);
        assert_eq!(cluster.raft(b).last_index(), 0);
        let mut everything = |_: &mut Message| true;
        // B refuses for FRESH_REFUSAL_TIMEOUTS maximal election timeouts:
        // long enough for its peers to tell it that its data is gone (the
        // incarnation check, which stops the node; tests/membership.rs),
        // which this simulator does not model.
        let refusal = FRESH_REFUSAL_TIMEOUTS * sim_config().election_ticks_max;
        for _ in 0..refusal / 2 {
            if let Err(e) = tick_and_settle(&mut cluster, &mut everything) {
                panic!("seed {seed}: {e}\n{}", cluster.describe());
            }
            assert_ne!(
                cluster.raft(c).role(),
                Role::Leader,
                "seed {seed}: C won with the wiped node's vote, without the committed entries\n{}",
                cluster.describe()
            );
        }
        // A comes back: with A and B, or A and C, the cluster elects a
        // leader holding everything committed, and B catches up.
        cluster.restart(a).unwrap();
        for _ in 0..refusal / 2 - 10 {
            if cluster.leader().is_some() && cluster.raft(b).last_index() > 0 {
                break;
            }
            tick_and_settle(&mut cluster, &mut everything).unwrap();
        }
        assert!(
            cluster.leader().is_some(),
            "seed {seed}\n{}",
            cluster.describe()
        );
    }
}

#[test]
fn a_brand_new_cluster_still_elects_a_leader() {
    // Every log is empty, so empty logs vouch for each other.
    for seed in 0..8 {
        let mut cluster = Cluster::new(seed, sim_config(), quiet_net(), 3).unwrap();
        let mut everything = |_: &mut Message| true;
        for _ in 0..300 {
            if cluster.leader().is_some() {
                break;
            }
            tick_and_settle(&mut cluster, &mut everything).unwrap();
        }
        assert!(
            cluster.leader().is_some(),
            "seed {seed}\n{}",
            cluster.describe()
        );
    }
}
