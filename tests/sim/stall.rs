//! Stalled nodes: a node thread blocked (a long fsync, a compaction being
//! stored) neither ticks nor steps while its mailbox fills, then handles
//! everything at once, as the driver does. The lease must hold in real
//! time throughout. Owns only these scenarios; the random runs stall
//! nodes too (`chaos.rs`).

use crate::classic::{everything, leads, quiet_net, run_until, set_timeout, votes_only_from};
use crate::cluster::{Cluster, ResumeOrder, sim_config};

/// A follower stalls for a little less than the election timeout while
/// its leader's heartbeats queue up; node 3 is cut off from the leader as
/// the stall begins and campaigns exactly one election timeout later. The
/// follower resumes and acknowledges the queued heartbeats (renewing the
/// leader's lease from a tick just before it resumed), and the leader is
/// cut off at that moment, before a fresh heartbeat reaches it. If the follower stepped the queued heartbeats on its
/// pre-stall clock, it would record the contact at the stall's start and
/// grant node 3 its vote while the old leader's lease still runs.
fn stalled_follower(order: ResumeOrder) -> Result<Cluster, String> {
    let config = sim_config();
    let mut cluster = Cluster::new(21, config.clone(), quiet_net(), 3)?;
    cluster.resume_order = order;
    let min = config.election_ticks_min;
    set_timeout(&mut cluster, 3, (min, min + 1));
    if !run_until(&mut cluster, 200, votes_only_from(1), leads(1)) {
        return Err("node 1 was never elected".into());
    }
    run_until(&mut cluster, 10, everything, |_| false);
    let now = cluster.now;
    if cluster.node(1).lease_until(now).is_none_or(|u| u <= now) {
        return Err("a healthy leader holds no lease".into());
    }
    let stall = min - 2;
    cluster.stall(2, stall);
    cluster.net.partition(&[1], &[3]);
    for _ in 0..stall {
        cluster.now += 1;
        cluster.tick_all()?;
        if !cluster.node(2).is_stalled() {
            // Node 2 has just resumed and answered what queued up; the
            // leader is cut off from it from now on (its answers still
            // get through, this once).
            cluster.net.block_one_way(1, 2);
        }
        cluster.settle(everything)?;
    }
    if cluster.node(2).is_stalled() {
        return Err("node 2 never resumed".into());
    }
    // The leader's lease is fresh, on node 2's acknowledgements.
    cluster.net.partition(&[1], &[2]);
    for _ in 0..4 * min {
        cluster.now += 1;
        cluster.tick_all()?;
        cluster.settle(everything)?;
        if cluster.leader() == Some(3) {
            break;
        }
    }
    Ok(cluster)
}

#[test]
fn stalled_follower_resumes_on_a_caught_up_clock_and_keeps_the_lease() {
    let cluster = match stalled_follower(ResumeOrder::TicksFirst) {
        Ok(cluster) => cluster,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        cluster.leader(),
        Some(3),
        "nodes 2 and 3 elect node 3 once the lease is over:\n{}",
        cluster.describe()
    );
}

/// The same scenario in the order the driver had before: the checker must
/// catch two leaders serving at once, or the test above proves nothing.
#[test]
fn stalled_follower_stepping_on_its_pre_stall_clock_breaks_the_lease() {
    match stalled_follower(ResumeOrder::MessagesFirst) {
        Err(e) => {
            eprintln!("caught as expected: {e}");
            assert!(e.contains("lease:"), "another failure: {e}");
        }
        Ok(cluster) => panic!(
            "no lease overlap detected; leader {:?}\n{}",
            cluster.leader(),
            cluster.describe()
        ),
    }
}
