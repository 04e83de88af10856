//! The driver on its own: a real node (store, writer thread, transport)
//! whose node thread is this test, stepping the core by hand and
//! holding the writer thread where a test needs a write to stay queued.
//! The peers are addresses nobody listens on; what the node sends them
//! is lost, and the test plays their answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Driver, Purpose};
use crate::node::boot::assemble;
use crate::node::oneshot;
use crate::node::status::Counters;
use crate::node::{Bootstrap, NodeConfig, NodeError, PROPOSAL_TIMEOUT};
use crate::raft::{ConfChange, Entry, EntryKind, Message, MessageBody, Role, Term};
use crate::store::testkit::TestDir;
use crate::ticket::Command;

/// Node 1 of three; peers 2 and 3 are never there.
fn node_one_of_three(dir: &TestDir) -> Driver {
    let peers: Vec<String> = (1..=3).map(|port| format!("127.0.0.1:{port}")).collect();
    let config = NodeConfig {
        data_dir: dir.0.clone(),
        db_size_mb: 64,
        peers: peers.clone(),
        bootstrap: Bootstrap::Peers,
        peer_addr: peers[0].clone(),
        peer_listen: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:1".into(),
        expire_interval: Duration::from_millis(500),
        snapshot_interval: Duration::from_secs(1),
        compact_entries: 20_000,
        tick: Duration::from_millis(10),
        peer_secret: None,
    };
    let (_handle, mut driver, _inbox) = assemble(config).expect("assemble a node");
    driver.begin();
    // Room to write on the writer thread, as the first periodic pass finds.
    assert!(driver.check_usage(), "the store answers");
    driver
}

fn from(peer: u64, term: Term, body: MessageBody) -> Message {
    Message {
        from: peer,
        to: 1,
        term,
        body,
    }
}

fn from_two(term: Term, body: MessageBody) -> Message {
    from(2, term, body)
}

/// An AppendEntries from the leader of its term (no transfer announced).
fn append(prev: (u64, Term), entries: Vec<Entry>, commit: u64, lease_tick: u64) -> MessageBody {
    MessageBody::Append {
        prev_index: prev.0,
        prev_term: prev.1,
        entries,
        commit,
        lease_tick,
        transfer_to: 0,
    }
}

/// A follower's success answer up to `index`, heard now.
fn acknowledged(driver: &Driver, index: u64) -> MessageBody {
    MessageBody::AppendResponse {
        success: true,
        index,
        hint_index: 0,
        hint_term: 0,
        lease_tick: driver.raft.now_tick(),
    }
}

/// What the core would send now, taken by hand from a `Ready` that
/// writes nothing.
fn take_messages(driver: &mut Driver) -> Vec<Message> {
    let mut ready = driver.raft.ready();
    assert!(!ready.must_sync, "a Ready with nothing to write");
    let messages = std::mem::take(&mut ready.messages);
    driver.raft.advance();
    messages
}

/// Ticks until the node pre-campaigns, then grants its pre-vote and vote
/// as node 2: the node leads, its no-op not yet handed out.
fn elect(driver: &mut Driver) -> Term {
    for _ in 0..10_000 {
        if driver.raft.role() == Role::PreCandidate {
            break;
        }
        driver.raft.tick();
    }
    assert_eq!(
        driver.raft.role(),
        Role::PreCandidate,
        "no election timeout"
    );
    driver.handle_ready();
    let term = driver.raft.term() + 1;
    let grant = |pre| MessageBody::VoteResponse { pre, granted: true };
    driver.raft.step(from_two(term, grant(true)));
    assert_eq!(driver.raft.role(), Role::Candidate);
    driver.handle_ready();
    driver.raft.step(from_two(term, grant(false)));
    assert_eq!(driver.raft.role(), Role::Leader);
    term
}

/// Waits for every queued write, on the writer's own terms.
fn drain(driver: &mut Driver) {
    while let Some(done) = driver.writer.wait_done() {
        driver.written(done);
    }
}

fn stop(mut driver: Driver) {
    driver.writer.stop();
    driver.transport.shutdown();
}

fn log_on_disk(driver: &Driver) -> Vec<(u64, Term)> {
    let loaded = driver.writer.store().load();
    let loaded = loaded.expect("the data dir loads").expect("bootstrapped");
    loaded.entries.iter().map(|e| (e.index, e.term)).collect()
}

/// The write barrier of the raft docs ("Asynchronous leader writes"): a
/// leader's batch is still queued (its writer thread held) when a new
/// leader's append overwrites that entry. The follower's `Ready` is
/// written in place, and must land after the queued batch: the node
/// acknowledges the new leader's entry, so the old batch may not replace
/// it on disk afterwards (after a restart the node would lack an entry it
/// acknowledged, which can lose a committed one).
#[test]
fn a_write_in_place_lands_after_every_queued_leader_write() {
    let dir = TestDir::new("barrier");
    let mut driver = node_one_of_three(&dir);
    let term = elect(&mut driver);
    driver.writer.hold.set(true);
    driver.handle_ready();
    assert_eq!(driver.writer.queued(), 1, "the no-op's write is queued");
    assert_eq!(driver.raft.last_index(), 1);

    // Node 2 leads term + 1, with its own entry at index 1.
    let entry = Entry {
        term: term + 1,
        index: 1,
        kind: EntryKind::Noop,
        data: Vec::new(),
    };
    driver
        .raft
        .step(from_two(term + 1, append((0, 0), vec![entry], 0, 1)));
    assert_eq!(driver.raft.role(), Role::Follower);

    // The held write goes on only after a while: the node thread must
    // wait for it rather than write its own first.
    let hold = Arc::clone(&driver.writer.hold);
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        hold.set(false);
    });
    driver.handle_ready();
    drain(&mut driver);
    release.join().expect("the releasing thread");
    assert_eq!(
        log_on_disk(&driver),
        vec![(1, term + 1)],
        "the entry node 1 acknowledged is the one on its disk"
    );
    stop(driver);
}

/// SIGTERM on a leader (`begin_shutdown`): it hands leadership to its
/// most up-to-date voter (never a learner), and the node thread stops only once it no
/// longer leads, or after 3 s of trying.
#[test]
fn a_leader_asked_to_stop_hands_over_to_its_most_up_to_date_voter_first() {
    let dir = TestDir::new("handover");
    let mut driver = node_one_of_three(&dir);
    // Node 3 holds the no-op; node 2 has answered nothing.
    let term = elect_and_commit(&mut driver);
    // A learner, 4, holds more than either voter: it is no candidate.
    let learner = ConfChange::AddLearner {
        id: 4,
        peer_addr: "127.0.0.1:4".into(),
        http_addr: String::new(),
    };
    let (reply, answer) = oneshot::channel();
    driver.change_members(learner, reply);
    assert_eq!(answer.recv_timeout(Duration::ZERO), Some(Ok(4)));
    driver.handle_ready();
    drain(&mut driver);
    let answer = acknowledged(&driver, 2);
    driver.raft.step(from(4, term, answer));
    driver.handle_ready();
    assert_eq!(driver.raft.role(), Role::Leader);
    assert!(!driver.shutdown_done(), "nobody asked it to stop");

    driver.begin_shutdown();
    let announced: BTreeSet<u64> = take_messages(&mut driver)
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::Append { transfer_to, .. } => Some(transfer_to),
            _ => None,
        })
        .collect();
    assert_eq!(announced, BTreeSet::from([3]), "every append names node 3");
    assert!(
        !driver.shutdown_done(),
        "it still leads, and has tried < 3 s"
    );
    driver.shutdown_at = Some(Instant::now() - Duration::from_secs(4));
    assert!(driver.shutdown_done(), "after 3 s it stops anyway");
    driver.shutdown_at = Some(Instant::now());

    // Node 3 won the election the transfer started.
    let heartbeat = append((2, term), Vec::new(), 1, 1);
    driver.raft.step(from(3, term + 1, heartbeat));
    driver.handle_ready();
    assert_eq!(driver.raft.role(), Role::Follower);
    assert!(driver.shutdown_done(), "no longer leading: it stops");
    stop(driver);
}

/// Where a follower sends clients: the leader's HTTP address as the log
/// records it, none while the log records none, and "no leader" when it
/// knows none or leads itself.
#[test]
fn a_follower_redirects_to_the_http_address_its_log_records_for_the_leader() {
    let dir = TestDir::new("redirect");
    let mut driver = node_one_of_three(&dir);
    assert_eq!(driver.not_leader(), NodeError::NoLeader, "no leader known");

    // Node 2 leads term 1; the initial membership has no HTTP address
    // for it.
    driver
        .raft
        .step(from_two(1, append((0, 0), Vec::new(), 0, 1)));
    driver.handle_ready();
    assert_eq!(driver.raft.leader(), 2);
    assert_eq!(driver.http_addr_of(2), None);
    let unknown = NodeError::NotLeader { leader_http: None };
    assert_eq!(driver.not_leader(), unknown);
    driver.publish();
    let status = driver.shared.status();
    assert_eq!(
        (status.role, status.leader, status.leader_http),
        (Role::Follower, 2, None)
    );
    assert_eq!(status.members.len(), 3);
    assert!(status.follower_lag.is_empty(), "a follower has none");
    assert_eq!(Counters::get(&driver.shared.counters.leader_changes), 1);

    // It publishes its address through the log.
    let mut membership = driver.raft.membership().clone();
    if let Some(two) = membership.members.get_mut(&2) {
        two.http_addr = "127.0.0.1:8002".into();
    }
    let entry = Entry {
        term: 1,
        index: 1,
        kind: EntryKind::Config,
        data: membership.encode(),
    };
    driver
        .raft
        .step(from_two(1, append((0, 0), vec![entry], 1, 2)));
    driver.handle_ready();
    let known = Some("127.0.0.1:8002".to_string());
    assert_eq!(driver.http_addr_of(2), known);
    let redirect = NodeError::NotLeader {
        leader_http: known.clone(),
    };
    assert_eq!(driver.not_leader(), redirect);
    // The status HTTP handlers answer from shows the same, at once.
    driver.publish();
    let status = driver.shared.status();
    assert_eq!((status.leader, status.leader_http), (2, known));
    let two = status.members.iter().find(|(id, _)| *id == 2);
    assert_eq!(
        two.map(|(_, m)| m.http_addr.as_str()),
        Some("127.0.0.1:8002")
    );
    assert_eq!(Counters::get(&driver.shared.counters.leader_changes), 1);
    // Its own address it recorded itself, in its first membership.
    assert_eq!(driver.http_addr_of(1), Some("127.0.0.1:1".to_string()));
    stop(driver);

    let dir = TestDir::new("redirect-leader");
    let mut driver = node_one_of_three(&dir);
    elect_and_commit(&mut driver);
    assert_eq!(driver.not_leader(), NodeError::NoLeader, "it leads itself");
    driver.publish();
    let status = driver.shared.status();
    assert_eq!(
        (status.role, status.leader, status.leader_http),
        (Role::Leader, 1, None)
    );
    let lag: Vec<u64> = status.follower_lag.iter().map(|(id, _)| *id).collect();
    assert!(lag.contains(&2) && lag.contains(&3), "{lag:?}");
    stop(driver);
}

/// Elects node 1 and commits its no-op (node 3 answers): the leader may
/// change the membership from here on.
fn elect_and_commit(driver: &mut Driver) -> Term {
    let term = elect(driver);
    driver.handle_ready();
    drain(driver);
    let answer = acknowledged(driver, 1);
    driver.raft.step(from(3, term, answer));
    driver.handle_ready();
    assert_eq!(driver.raft.commit_index(), 1);
    term
}

/// The transport's peers, by id: whom the node dials.
fn dialled(driver: &Driver) -> Vec<(u64, String)> {
    driver.transport.peers().into_iter().collect()
}

/// `POST /api/v1/cluster/members` on the leader: the new member gets an
/// id never used in the cluster and its change goes into the log; a
/// second change while that one is pending is refused with a reason.
/// The node dials every other member of the membership in force, the
/// new one as soon as its change is appended.
#[test]
fn a_member_added_gets_a_new_id_and_one_change_is_pending_at_a_time() {
    let dir = TestDir::new("members");
    let mut driver = node_one_of_three(&dir);
    let peer = |port: u16| format!("127.0.0.1:{port}");
    assert_eq!(dialled(&driver), vec![(2, peer(2)), (3, peer(3))]);
    elect_and_commit(&mut driver);
    let add = |peer: &str| ConfChange::AddLearner {
        id: 0,
        peer_addr: peer.into(),
        http_addr: String::new(),
    };
    let (reply, answer) = oneshot::channel();
    driver.change_members(add("127.0.0.1:4"), reply);
    assert_eq!(answer.recv_timeout(Duration::ZERO), Some(Ok(4)));
    assert_eq!(driver.raft.last_index(), 2);
    assert_eq!(
        driver.raft.membership().members[&4].peer_addr,
        "127.0.0.1:4"
    );
    driver.publish();
    assert_eq!(
        dialled(&driver),
        vec![(2, peer(2)), (3, peer(3)), (4, peer(4))]
    );

    let (reply, answer) = oneshot::channel();
    driver.change_members(add("127.0.0.1:5"), reply);
    let refused = answer.recv_timeout(Duration::ZERO);
    assert!(matches!(refused, Some(Err(_))), "{refused:?}");
    assert_eq!(driver.raft.last_index(), 2, "nothing proposed");
    stop(driver);
}

/// The core's clock follows real time: every tick interval that passed
/// runs one tick, and after a stall at most `TICKS_CATCH_UP_MAX` run at
/// once (a clock that loses ticks only runs slow), then the next is due
/// a tick from now.
#[test]
fn ticks_follow_real_time_and_catch_up_a_stall_only_so_far() {
    let dir = TestDir::new("ticks");
    let mut driver = node_one_of_three(&dir);
    let tick = driver.config.tick;
    driver.next_tick = Instant::now() + Duration::from_secs(60);
    let before = driver.raft.now_tick();
    driver.run_ticks();
    assert_eq!(driver.raft.now_tick(), before, "no tick is due yet");

    // Five intervals ago, the next tick was due: five or six run now
    // (the sixth falls due while they run, on a slow machine even more).
    let started = Instant::now();
    driver.next_tick = started - 5 * tick;
    driver.run_ticks();
    let ran = driver.raft.now_tick() - before;
    let due = 5 + (started.elapsed().as_nanos() / tick.as_nanos()) as u64 + 1;
    assert!((5..=due).contains(&ran), "{ran} ticks for {due} due");
    assert!(driver.next_tick > started, "the next tick is in the future");
    assert!(driver.next_tick <= Instant::now() + tick);

    // A stall of 20 s: 2,000 ticks due, 1,000 run, and the clock goes on
    // from now.
    let before = driver.raft.now_tick();
    driver.next_tick = Instant::now() - Duration::from_secs(20);
    driver.run_ticks();
    let ran = driver.raft.now_tick() - before;
    assert_eq!(ran, u64::from(super::TICKS_CATCH_UP_MAX));
    let now = Instant::now();
    assert!(driver.next_tick > now - tick && driver.next_tick <= now + tick);
    stop(driver);
}

/// A proposal that has not committed within `PROPOSAL_TIMEOUT` is
/// answered 503 "retry" (its entry may still commit later: the client
/// cannot know, as after any lost leadership); a younger one waits on.
#[test]
fn a_proposal_not_committed_in_time_is_answered_503_and_a_younger_one_waits() {
    let dir = TestDir::new("expire-pending");
    let mut driver = node_one_of_three(&dir);
    elect_and_commit(&mut driver);
    let open = || Command::OpenSession {
        name: "s".into(),
        src: String::new(),
        ttl_ms: 5000,
    };
    let (old_reply, old) = oneshot::channel();
    let (young_reply, young) = oneshot::channel();
    let client = |reply| Purpose::Client { reply, wait: None };
    assert!(driver.propose(open(), client(old_reply)));
    assert!(driver.propose(open(), client(young_reply)));
    assert_eq!(driver.pending.len(), 2);
    let first = *driver.pending.keys().next().expect("a pending proposal");
    if let Some(pending) = driver.pending.get_mut(&first) {
        pending.since = Instant::now() - PROPOSAL_TIMEOUT - Duration::from_millis(1);
    }
    driver.expire_pending();
    let retry = NodeError::Unavailable("not committed in time; retry".into());
    assert_eq!(old.recv_timeout(Duration::ZERO), Some(Err(retry)));
    assert_eq!(young.recv_timeout(Duration::ZERO), None, "not answered yet");
    assert_eq!(driver.pending.len(), 1);
    stop(driver);
}

/// The status counts sessions and locks (a walk of every resource) at
/// most every 250 ms, not at every publish, which runs at every turn of
/// the node loop: a session just opened shows once a quarter of a
/// second has passed since the last count.
#[test]
fn the_status_recounts_sessions_a_few_times_a_second_not_at_every_turn() {
    let dir = TestDir::new("recount");
    let mut driver = node_one_of_three(&dir);
    let term = elect_and_commit(&mut driver);
    let open = Command::OpenSession {
        name: "s".into(),
        src: String::new(),
        ttl_ms: 5000,
    };
    let (reply, answer) = oneshot::channel();
    assert!(driver.propose(open, Purpose::Client { reply, wait: None }));
    driver.handle_ready();
    drain(&mut driver);
    let index = driver.raft.last_index();
    let ack = acknowledged(&driver, index);
    driver.raft.step(from(3, term, ack));
    driver.handle_ready();
    assert!(
        matches!(answer.recv_timeout(Duration::ZERO), Some(Ok(_))),
        "the session is open"
    );
    assert_eq!(driver.state.session_count(), 1);

    driver.last_counted = Instant::now();
    driver.publish();
    assert_eq!(driver.shared.status().sessions, 0, "counted just now");
    driver.last_counted = Instant::now() - Duration::from_millis(300);
    driver.publish();
    assert_eq!(driver.shared.status().sessions, 1);
    stop(driver);
}
