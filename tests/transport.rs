//! The peer transport over real sockets on 127.0.0.1: two or more
//! transports in one process, plus raw sockets playing bad peers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use ticketd::raft::{
    Entry, EntryKind, Member, Membership, Message, MessageBody, NodeId, Snapshot, SnapshotMeta,
};
use ticketd::transport::{Announced, Transport, TransportConfig};
use ticketd::wire::{
    FrameKind, Handshake, encode_message, read_frame, write_frame, write_handshake,
};

const CLUSTER: u64 = 0x7e57;
const WAIT: Duration = Duration::from_secs(10);

fn http_addr(id: NodeId) -> String {
    format!("127.0.0.1:{}", 18000 + id)
}

fn start_on(id: NodeId, cluster_id: u64, listen_addr: &str) -> (Transport, Receiver<Message>) {
    let (sender, receiver) = mpsc::channel();
    let deliver = Arc::new(move |message: Message| {
        let _ = sender.send(message);
        true
    });
    let config = TransportConfig {
        listen_addr: listen_addr.to_string(),
        cluster_id,
        node_id: id,
        peer_addr: listen_addr.to_string(),
        http_addr: http_addr(id),
        incarnation: 1000 + id,
        peer_secret: None,
        snapshot_bytes_max: ticketd::wire::SNAPSHOT_BYTES_MAX,
    };
    (Transport::start(config, deliver).unwrap(), receiver)
}

fn start(id: NodeId) -> (Transport, Receiver<Message>) {
    start_on(id, CLUSTER, "127.0.0.1:0")
}

fn introduce(transport: &Transport, peers: &[(NodeId, &Transport)]) {
    let map: BTreeMap<NodeId, String> = peers
        .iter()
        .map(|(id, t)| (*id, t.local_addr().to_string()))
        .collect();
    transport.set_peers(&map);
}

fn vote(from: NodeId, to: NodeId, term: u64) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::Vote {
            pre: false,
            force: false,
            last_index: 3,
            last_term: 1,
        },
    }
}

/// Sends `message` every 50 ms (connections come up asynchronously, and
/// a message sent into a dying connection is lost) until it arrives.
fn send_until_received(from: &Transport, to: &Receiver<Message>, message: &Message) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        from.send(message.clone());
        if let Ok(got) = to.recv_timeout(Duration::from_millis(50))
            && &got == message
        {
            return;
        }
    }
    panic!("message never arrived: {message:?}");
}

fn expect(receiver: &Receiver<Message>, message: &Message) {
    let got = receiver.recv_timeout(WAIT).expect("message did not arrive");
    assert_eq!(&got, message);
}

/// Waits for the other end to close (EOF or reset); returns what it sent
/// before that.
fn expect_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return received,
            Err(err) => panic!("connection not closed: {err}"),
        }
    }
}

fn raw_handshake(addr: SocketAddr, cluster_id: u64, node_id: NodeId) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    let handshake = Handshake {
        cluster_id,
        node_id,
        peer_addr: "127.0.0.1:1".into(),
        http_addr: "127.0.0.1:2".into(),
        incarnation: 1000 + node_id,
    };
    write_handshake(&mut stream, &handshake).unwrap();
    stream
}

fn snapshot_message(from: NodeId, to: NodeId, len: usize) -> Message {
    let mut membership = Membership::default();
    for id in [from, to] {
        membership.members.insert(
            id,
            Member {
                voter: true,
                peer_addr: format!("127.0.0.1:{}", 19000 + id),
                http_addr: http_addr(id),
                incarnation: 1000 + id,
            },
        );
    }
    Message {
        from,
        to,
        term: 5,
        body: MessageBody::Snapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 1000,
                    term: 4,
                    membership,
                },
                data: (0..len).map(|i| (i * 31 % 256) as u8).collect(),
            },
            lease_tick: 77,
        },
    }
}

fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn timed_shutdown(transport: Transport) {
    let started = Instant::now();
    transport.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown took too long"
    );
}

#[test]
fn two_nodes_exchange_messages_snapshots_and_announcements() {
    let (a, a_inbox) = start(1);
    let (b, b_inbox) = start(2);
    introduce(&a, &[(2, &b), (1, &a)]);
    introduce(&b, &[(1, &a)]);

    send_until_received(&a, &b_inbox, &vote(1, 2, 3));
    send_until_received(&b, &a_inbox, &vote(2, 1, 3));

    let append = Message {
        from: 1,
        to: 2,
        term: 5,
        body: MessageBody::Append {
            prev_index: 1000,
            prev_term: 4,
            entries: vec![Entry {
                term: 5,
                index: 1001,
                kind: EntryKind::Normal,
                data: b"reserve".to_vec(),
            }],
            commit: 1000,
            lease_tick: 78,
            transfer_to: 0,
        },
    };
    let snapshot = snapshot_message(1, 2, 3 << 20);
    a.send(snapshot.clone());
    a.send(append.clone());
    a.send(snapshot_message(1, 2, 0));
    expect(&b_inbox, &snapshot);
    expect(&b_inbox, &append);
    expect(&b_inbox, &snapshot_message(1, 2, 0));

    // A heard what B announced in its reply, B what A announced in its
    // hello: the leader's node proposes that for the log (redirects use
    // only what the log records, never these).
    let announced = |id| Some((http_addr(id), 1000 + id));
    let heard = |t: &Transport, id| {
        t.announced(id)
            .map(|a: Announced| (a.http_addr, a.incarnation))
    };
    assert_eq!(heard(&a, 2), announced(2));
    assert_eq!(heard(&b, 1), announced(1));
    assert_eq!(a.announced(9), None);

    timed_shutdown(a);
    timed_shutdown(b);
}

#[test]
fn bad_peers_are_refused_while_a_good_peer_keeps_working() {
    let (a, _a_inbox) = start(1);
    let (b, b_inbox) = start(2);
    introduce(&a, &[(2, &b)]);
    send_until_received(&a, &b_inbox, &vote(1, 2, 1));

    // Garbage instead of a handshake.
    let mut garbage = TcpStream::connect(b.local_addr()).unwrap();
    garbage.write_all(&[0xab; 200]).unwrap();
    assert!(expect_closed(&mut garbage).is_empty());

    // A well-formed handshake from another cluster gets no reply.
    let mut stranger = raw_handshake(b.local_addr(), CLUSTER + 1, 3);
    assert!(expect_closed(&mut stranger).is_empty());

    // A node announcing id 0 is refused too.
    let mut nobody = raw_handshake(b.local_addr(), CLUSTER, 0);
    assert!(expect_closed(&mut nobody).is_empty());

    // A good handshake, then a corrupted frame.
    let mut corrupt = raw_handshake(b.local_addr(), CLUSTER, 3);
    let reply = read_frame(&mut corrupt).unwrap();
    assert_eq!(reply.kind, FrameKind::Handshake);
    let mut frame = Vec::new();
    let payload = encode_message(&vote(3, 2, 1)).unwrap();
    write_frame(&mut frame, FrameKind::Message, &payload).unwrap();
    let last = frame.len() - 1;
    frame[last] ^= 1;
    corrupt.write_all(&frame).unwrap();
    assert!(expect_closed(&mut corrupt).is_empty());

    send_until_received(&a, &b_inbox, &vote(1, 2, 2));
    wait_until("bad connections to be closed", || {
        b.inbound_connections() == 1
    });
    timed_shutdown(a);
    timed_shutdown(b);
}

#[test]
fn messages_are_delivered_only_from_the_handshake_node_to_us() {
    let (b, b_inbox) = start(2);
    let mut raw = raw_handshake(b.local_addr(), CLUSTER, 3);
    let reply = Handshake::decode(&read_frame(&mut raw).unwrap().payload).unwrap();
    assert_eq!(reply.node_id, 2);
    assert_eq!(reply.cluster_id, CLUSTER);
    assert_eq!(reply.http_addr, http_addr(2));

    for message in [vote(3, 4, 1), vote(3, 2, 9), vote(1, 2, 1), vote(3, 2, 10)] {
        let payload = encode_message(&message).unwrap();
        write_frame(&mut raw, FrameKind::Message, &payload).unwrap();
    }
    // The one to node 4 is dropped; the one claiming node 1 on node 3's
    // connection closes it, so nothing after it arrives either.
    expect(&b_inbox, &vote(3, 2, 9));
    assert!(b_inbox.recv_timeout(Duration::from_millis(200)).is_err());
    assert!(expect_closed(&mut raw).is_empty());
    let announced = b.announced(3).unwrap();
    assert_eq!(announced.http_addr, "127.0.0.1:2");
    assert_eq!(announced.incarnation, 1003);
    timed_shutdown(b);
}

#[test]
fn a_joining_node_with_cluster_id_zero_accepts_any_cluster() {
    let (joiner, joiner_inbox) = start_on(4, 0, "127.0.0.1:0");
    let mut raw = raw_handshake(joiner.local_addr(), CLUSTER, 1);
    let reply = Handshake::decode(&read_frame(&mut raw).unwrap().payload).unwrap();
    assert_eq!(reply.cluster_id, 0);
    let payload = encode_message(&vote(1, 4, 2)).unwrap();
    write_frame(&mut raw, FrameKind::Message, &payload).unwrap();
    expect(&joiner_inbox, &vote(1, 4, 2));

    // ... while a member with a known cluster id refuses the joiner.
    let (member, _inbox) = start(1);
    let mut hello = raw_handshake(member.local_addr(), 0, 4);
    assert!(expect_closed(&mut hello).is_empty());
    drop(raw);
    timed_shutdown(joiner);
    timed_shutdown(member);
}

#[test]
fn a_restarted_peer_is_reconnected_to() {
    let (a, _a_inbox) = start(1);
    let (b, b_inbox) = start(2);
    let b_addr = b.local_addr().to_string();
    introduce(&a, &[(2, &b)]);
    send_until_received(&a, &b_inbox, &vote(1, 2, 1));

    timed_shutdown(b);
    drop(b_inbox);
    let (b2, b2_inbox) = start_on(2, CLUSTER, &b_addr);
    send_until_received(&a, &b2_inbox, &vote(1, 2, 2));
    timed_shutdown(a);
    timed_shutdown(b2);
}

#[test]
fn a_taken_port_is_an_error() {
    let (a, _inbox) = start(1);
    let config = TransportConfig {
        listen_addr: a.local_addr().to_string(),
        cluster_id: CLUSTER,
        node_id: 2,
        peer_addr: String::new(),
        http_addr: String::new(),
        incarnation: 1,
        peer_secret: None,
        snapshot_bytes_max: ticketd::wire::SNAPSHOT_BYTES_MAX,
    };
    assert!(Transport::start(config, Arc::new(|_| true)).is_err());
    timed_shutdown(a);
}

#[test]
fn unknown_and_removed_peers_drop_messages() {
    let (a, _a_inbox) = start(1);
    let (b, b_inbox) = start(2);
    a.send(vote(1, 9, 1));
    assert_eq!(a.dropped_messages(), 1);

    introduce(&a, &[(2, &b)]);
    send_until_received(&a, &b_inbox, &vote(1, 2, 1));
    a.set_peers(&BTreeMap::new());
    let before = a.dropped_messages();
    a.send(vote(1, 2, 2));
    assert_eq!(a.dropped_messages(), before + 1);
    timed_shutdown(a);
    timed_shutdown(b);
}

#[test]
fn inbound_connections_are_capped() {
    let (b, b_inbox) = start(2);
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(b.local_addr()).unwrap());
    }
    wait_until("64 inbound connections", || b.inbound_connections() == 64);
    let mut extra = TcpStream::connect(b.local_addr()).unwrap();
    assert!(expect_closed(&mut extra).is_empty());

    drop(idle);
    wait_until("idle connections to close", || b.inbound_connections() == 0);
    let mut raw = raw_handshake(b.local_addr(), CLUSTER, 3);
    read_frame(&mut raw).unwrap();
    let payload = encode_message(&vote(3, 2, 1)).unwrap();
    write_frame(&mut raw, FrameKind::Message, &payload).unwrap();
    expect(&b_inbox, &vote(3, 2, 1));
    timed_shutdown(b);
}

#[test]
fn a_burst_arrives_complete_and_in_order() {
    let (a, _a_inbox) = start(1);
    let (b, b_inbox) = start(2);
    introduce(&a, &[(2, &b)]);
    send_until_received(&a, &b_inbox, &vote(1, 2, 0));
    for term in 1..=2000 {
        a.send(vote(1, 2, term));
    }
    for term in 1..=2000 {
        expect(&b_inbox, &vote(1, 2, term));
    }
    assert_eq!(a.dropped_messages(), 0);
    timed_shutdown(a);
    timed_shutdown(b);
}

#[test]
fn a_changed_peer_address_moves_the_writer() {
    let (a, _a_inbox) = start(1);
    let (b, b_inbox) = start(2);
    let (b2, b2_inbox) = start(2);
    introduce(&a, &[(2, &b)]);
    send_until_received(&a, &b_inbox, &vote(1, 2, 1));
    introduce(&a, &[(2, &b2)]);
    send_until_received(&a, &b2_inbox, &vote(1, 2, 2));
    timed_shutdown(a);
    timed_shutdown(b);
    timed_shutdown(b2);
}

#[test]
fn a_removed_or_wiped_node_is_told_why_it_is_refused() {
    use ticketd::transport::Roster;
    use ticketd::wire::RefusalReason;
    let (a, _a_inbox) = start(1);
    let (b, b_inbox) = start(2);
    // B's committed configuration: 1 was removed (ids up to 3 were used).
    b.set_roster(Roster {
        max_id: 3,
        incarnations: [(2, 1002), (3, 1003)].into_iter().collect(),
    });
    introduce(&a, &[(2, &b)]);
    let refusal = wait_for_refusal(&a, RefusalReason::Removed);
    assert!(
        refusal.message.contains("node 1 was removed"),
        "{refusal:?}"
    );
    assert!(b_inbox.recv_timeout(Duration::from_millis(100)).is_err());

    // B's log records another incarnation for node 1: its data is gone.
    b.set_roster(Roster {
        max_id: 3,
        incarnations: [(1, 77), (2, 1002)].into_iter().collect(),
    });
    let refusal = wait_for_refusal(&a, RefusalReason::DataLost);
    assert!(
        refusal.message.contains("DELETE /api/v1/cluster/members/1"),
        "{refusal:?}"
    );

    // The incarnation B's log records: welcome.
    b.set_roster(Roster {
        max_id: 3,
        incarnations: [(1, 1001), (2, 1002)].into_iter().collect(),
    });
    send_until_received(&a, &b_inbox, &vote(1, 2, 7));
    timed_shutdown(a);
    timed_shutdown(b);
}

fn wait_for_refusal(
    transport: &Transport,
    reason: ticketd::wire::RefusalReason,
) -> ticketd::wire::Refusal {
    let deadline = Instant::now() + WAIT;
    loop {
        // An attempt made before the roster changed may still report the
        // old reason.
        if let Some(refusal) = transport.take_refusal()
            && refusal.reason == reason
        {
            return refusal;
        }
        assert!(Instant::now() < deadline, "no refusal arrived");
        // Let the writer reconnect (its backoff starts at 50 ms).
        transport.send(vote(1, 2, 1));
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_message_the_node_refuses_closes_its_connection() {
    let (sender, inbox) = mpsc::channel();
    let deliver = Arc::new(move |message: Message| {
        let take = !matches!(message.body, MessageBody::Snapshot { .. });
        if take {
            let _ = sender.send(message);
        }
        take
    });
    let config = TransportConfig {
        listen_addr: "127.0.0.1:0".to_string(),
        cluster_id: CLUSTER,
        node_id: 2,
        peer_addr: "127.0.0.1:0".to_string(),
        http_addr: http_addr(2),
        incarnation: 1002,
        peer_secret: None,
        snapshot_bytes_max: ticketd::wire::SNAPSHOT_BYTES_MAX,
    };
    let b = Transport::start(config, deliver).unwrap();
    let mut raw = raw_handshake(b.local_addr(), CLUSTER, 1);
    read_frame(&mut raw).unwrap();
    let payload = encode_message(&vote(1, 2, 1)).unwrap();
    write_frame(&mut raw, FrameKind::Message, &payload).unwrap();
    ticketd::wire::write_message(&mut raw, &snapshot_message(1, 2, 10)).unwrap();
    // May already fail: the node closes the connection on the snapshot.
    let _ = write_frame(&mut raw, FrameKind::Message, &payload);
    expect(&inbox, &vote(1, 2, 1));
    assert!(expect_closed(&mut raw).is_empty());
    assert!(inbox.recv_timeout(Duration::from_millis(200)).is_err());
    timed_shutdown(b);
}
