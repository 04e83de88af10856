//! A stranger on the peer port of a running three-node cluster of the
//! release binary: it knows only the peer addresses (and so the cluster
//! ID, a hash of them) and sends one-frame attacks — a vote from the last
//! term there is, a snapshot saying "the cluster is you alone, no ID
//! handed out yet", a snapshot whose state does not decode, and messages
//! whose sender is not the node its handshake named. Afterwards every
//! node still runs, no term reached 2^63, the membership is unchanged and
//! the IDs handed out before and after are unique and increasing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use common::ops::{json_u64, take_ids_anywhere};
use common::{Cluster, wait_for};
use ticketd::raft::{
    Member, Membership, Message, MessageBody, NodeId, Snapshot, SnapshotMeta, TERM_MAX,
};
use ticketd::ticket::State;
use ticketd::wire::{
    FrameKind, Handshake, encode_message, read_frame, write_frame, write_handshake, write_message,
};

const LEADER_WAIT: Duration = Duration::from_secs(20);
/// How long a bad connection is given to be closed by the node.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// Not a member of the cluster.
const STRANGER: NodeId = 99;

fn addrs(cluster: &Cluster) -> Vec<String> {
    cluster.nodes.iter().map(|n| n.http()).collect()
}

/// What anyone who knows the peer list can work out: the node IDs (the
/// sorted list, numbered from 1) and the cluster ID (FNV-1a over it).
fn public_ids(cluster: &Cluster) -> (BTreeMap<String, NodeId>, u64) {
    let mut peers: Vec<String> = cluster.nodes.iter().map(|n| n.peer()).collect();
    peers.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for peer in &peers {
        for byte in peer.bytes().chain(std::iter::once(b',')) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let ids = peers
        .into_iter()
        .enumerate()
        .map(|(i, peer)| (peer, i as NodeId + 1))
        .collect();
    (ids, hash.max(1))
}

/// A connection to `peer` that has passed the handshake as `as_node`.
/// Claiming a member's id closes that member's own connection, and the
/// member's reconnect may in turn close ours before the reply is out: a
/// few attempts, then a failure.
fn connect(peer: &str, cluster_id: u64, as_node: NodeId) -> TcpStream {
    let mut last_error = String::new();
    for _ in 0..10 {
        let mut stream = TcpStream::connect(peer).unwrap();
        stream.set_read_timeout(Some(CLOSE_WAIT)).unwrap();
        let hello = Handshake {
            cluster_id,
            node_id: as_node,
            peer_addr: String::new(),
            http_addr: String::new(),
            // 0: the older build's form, which skips the lost-data check.
            incarnation: 0,
        };
        write_handshake(&mut stream, &hello).unwrap();
        match read_frame(&mut stream) {
            Ok(reply) => {
                assert_eq!(reply.kind, FrameKind::Handshake, "no handshake from {peer}");
                return stream;
            }
            Err(e) => last_error = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no handshake reply from {peer} to node {as_node}: {last_error}");
}

/// Whether the node closed the connection (EOF or reset) within
/// `CLOSE_WAIT`; anything it sends before is ignored.
fn closed_by_node(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Writes `message` raw: term and sender as given, snapshots in chunks.
fn send(stream: &mut TcpStream, message: &Message) {
    match &message.body {
        MessageBody::Snapshot { .. } => write_message(stream, message).unwrap(),
        _ => write_frame(
            stream,
            FrameKind::Message,
            &encode_message(message).unwrap(),
        )
        .unwrap(),
    }
}

fn vote(from: NodeId, to: NodeId, term: u64) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::Vote {
            pre: false,
            force: true,
            last_index: u64::MAX / 2,
            last_term: term,
        },
    }
}

fn snapshot(from: NodeId, to: NodeId, term: u64, peer: &str, data: Vec<u8>) -> Message {
    let mut you_alone = Membership::default();
    you_alone.members.insert(
        to,
        Member {
            voter: true,
            peer_addr: peer.to_string(),
            http_addr: String::new(),
            incarnation: 0,
        },
    );
    Message {
        from,
        to,
        term,
        body: MessageBody::Snapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 1 << 40,
                    term,
                    membership: you_alone,
                },
                data,
            },
            lease_tick: 0,
        },
    }
}

/// Every node runs, has a term below 2^63 and the three original voters.
fn check_cluster(cluster: &mut Cluster, peers: &BTreeMap<String, NodeId>) {
    for (i, node) in cluster.nodes.iter_mut().enumerate() {
        assert!(node.exited().is_none(), "node {i} exited:\n{}", node.log());
    }
    for (i, node) in cluster.nodes.iter().enumerate() {
        let status = wait_for(LEADER_WAIT, || node.status())
            .unwrap_or_else(|| panic!("node {i} does not answer:\n{}", node.log()));
        let term = json_u64(&status, "Term").unwrap();
        assert!(term <= TERM_MAX, "node {i} at term {term}");
        for (peer, id) in peers {
            let listed = format!("{{\"Id\":{id},\"Peer\":\"{peer}\",");
            assert!(status.contains(&listed), "node {i}: {status}");
        }
        assert_eq!(status.matches("\"Voter\":true").count(), 3, "{status}");
        assert!(!status.contains("\"Voter\":false"), "{status}");
    }
}

fn take_ids(cluster: &Cluster, into: &mut Vec<u64>) {
    let ids = take_ids_anywhere(&addrs(cluster), 5, LEADER_WAIT)
        .unwrap_or_else(|| panic!("no IDs served:\n{}", cluster.logs()));
    into.extend(ids);
}

#[test]
fn one_frame_from_a_stranger_changes_nothing() {
    let mut cluster = Cluster::start("peer-attacks", 3);
    let (peers, cluster_id) = public_ids(&cluster);
    let status_cluster = wait_for(LEADER_WAIT, || cluster.nodes[0].status()).unwrap();
    assert!(status_cluster.contains(&format!("\"Cluster\":\"{cluster_id:016x}\"")));
    let mut ids = Vec::new();
    take_ids(&cluster, &mut ids);

    let targets: Vec<(String, NodeId)> = peers.iter().map(|(p, id)| (p.clone(), *id)).collect();
    for (peer, id) in &targets {
        let member = if *id == 1 { 2 } else { 1 };
        // (a) A vote from term 2^64 - 1: not even a frame that decodes, as
        // a member or as a stranger; a stranger's vote at the cap itself
        // decodes and is dropped by the core.
        for as_node in [member, STRANGER] {
            let mut stream = connect(peer, cluster_id, as_node);
            send(&mut stream, &vote(as_node, *id, u64::MAX));
            assert!(closed_by_node(&mut stream), "vote at 2^64-1 to {peer}");
        }
        let mut stream = connect(peer, cluster_id, STRANGER);
        send(&mut stream, &vote(STRANGER, *id, TERM_MAX));
        // (b) "The cluster is you alone, no ID handed out yet", from a
        // stranger and in a member's name, in a later term.
        let empty = State::new().encode_snapshot();
        send(
            &mut stream,
            &snapshot(STRANGER, *id, 1000, peer, empty.clone()),
        );
        drop(stream);
        let mut stream = connect(peer, cluster_id, member);
        send(&mut stream, &snapshot(member, *id, 1000, peer, empty));
        drop(stream);
        // (c) A snapshot whose state does not decode: refused before the
        // core sees it, and its connection closed.
        for as_node in [member, STRANGER] {
            let mut stream = connect(peer, cluster_id, as_node);
            let garbage = vec![0x5a; 1000];
            send(&mut stream, &snapshot(as_node, *id, 1000, peer, garbage));
            assert!(closed_by_node(&mut stream), "bad snapshot to {peer}");
        }
        // (d) A sender other than the handshake's node closes the
        // connection, whatever the message.
        for (as_node, claims) in [(STRANGER, member), (member, STRANGER), (member, 3 - member)] {
            if claims == *id || claims == 0 {
                continue;
            }
            let mut stream = connect(peer, cluster_id, as_node);
            send(&mut stream, &vote(claims, *id, 1));
            assert!(closed_by_node(&mut stream), "forged sender to {peer}");
        }
    }

    check_cluster(&mut cluster, &peers);
    take_ids(&cluster, &mut ids);
    // A node that took the forged snapshot would serve 1..5 again.
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "IDs {ids:?}");
    // And it lasts: a few election timeouts later, still the same.
    std::thread::sleep(Duration::from_secs(3));
    check_cluster(&mut cluster, &peers);
    take_ids(&cluster, &mut ids);
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "IDs {ids:?}");
}
