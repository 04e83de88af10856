//! Starting a node: open the data directory, bootstrap it from the peer
//! list when it is empty (or check it belongs to that cluster), restore
//! the Raft core and the state machine, start the transport, and spawn
//! the node thread.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use log::{info, warn};

use super::driver::Driver;
use super::members::MemberState;
use super::status::{Shared, Status};
use super::writer::Writer;
use super::{Bootstrap, Input, NodeConfig, NodeHandle, oneshot};
use crate::raft::{self, Member, Membership, Persisted, Raft, Snapshot, SnapshotMeta};
use crate::store::{Identity, Loaded, Store, Wiped};
use crate::ticket::State;
use crate::transport::{Transport, TransportConfig};
use crate::wire::{JoinAnswer, MemberRequest};

/// Inputs waiting for the node thread, at most.
const INBOX_CAPACITY: usize = 65_536;
/// How long a joiner's request waits for the node's answer at most; the
/// node itself gives up a little earlier ([`super::members`]).
const JOIN_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A peer's message as the node thread takes it, or None to refuse it
/// (its connection is closed). A snapshot's state is decoded and checked
/// here, on the reader thread, before the core may install it: bad bytes
/// from a peer never reach the core, and are decoded only once.
fn admit_message(message: raft::Message) -> Option<Input> {
    let raft::MessageBody::Snapshot { snapshot, .. } = &message.body else {
        return Some(Input::Peer(message));
    };
    let decoded = if snapshot.data.is_empty() {
        Ok(State::new())
    } else {
        State::decode_snapshot(&snapshot.data)
    };
    match decoded {
        Ok(state) => Some(Input::PeerSnapshot {
            message,
            state: Box::new(state),
        }),
        Err(e) => {
            warn!(
                "refusing a snapshot at {} from node {}: its state does not decode: {e}",
                snapshot.meta.index, message.from
            );
            None
        }
    }
}

/// Why a node refused to start (the process exits 1).
#[derive(Debug)]
pub struct BootError(pub String);

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BootError {}

/// The initial members of a statically configured cluster: the peer
/// list sorted, numbered from 1, so every node derives the same ids.
pub fn initial_membership(peers: &[String]) -> Membership {
    let mut sorted: Vec<&String> = peers.iter().collect();
    sorted.sort();
    sorted.dedup();
    let members = sorted
        .into_iter()
        .enumerate()
        .map(|(i, addr)| {
            let member = Member {
                voter: true,
                peer_addr: addr.clone(),
                http_addr: String::new(),
                incarnation: 0,
            };
            (i as u64 + 1, member)
        })
        .collect();
    Membership {
        members,
        ..Membership::default()
    }
}

/// A random non-zero number: a data directory's incarnation, a new
/// cluster's id.
///
/// # Errors
/// `BootError` when the system's random source cannot be read.
pub fn draw_random() -> Result<u64, BootError> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| BootError(format!("cannot read /dev/urandom: {e}")))?;
    Ok(u64::from_be_bytes(bytes).max(1))
}

/// The cluster id of a static peer list: FNV-1a over the sorted list, so
/// that nodes started from the same list agree without talking.
pub fn cluster_id_of(membership: &Membership) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for member in membership.members.values() {
        for byte in member.peer_addr.bytes().chain(std::iter::once(b',')) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash.max(1)
}

/// Opens (or bootstraps) the data directory and builds the node: its
/// transport and writer thread run, the node thread's driver does not
/// yet (tests drive it by hand).
///
/// # Errors
/// As [`start`].
pub(super) fn assemble(
    config: NodeConfig,
) -> Result<(NodeHandle, Driver, Receiver<Input>), BootError> {
    let mut store = Store::open(&config.data_dir, config.db_size_mb).map_err(|e| {
        BootError(format!(
            "cannot open data directory {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let loaded = match store.load().map_err(|e| BootError(format!("{e}")))? {
        Some(loaded) => check_loaded(&config, loaded)?,
        None => bootstrap(&config, &mut store)?,
    };
    let mut identity = loaded.identity;
    if identity.incarnation == 0 {
        // A directory from before incarnations: it gets one now, and
        // publishes it like a new one.
        identity.incarnation = draw_random()?;
        store
            .set_identity(identity)
            .map_err(|e| BootError(format!("cannot record the incarnation: {e}")))?;
    }
    let applied_membership = loaded.snapshot.meta.membership.clone();
    let state = if loaded.snapshot.data.is_empty() {
        State::new()
    } else {
        State::decode_snapshot(&loaded.snapshot.data)
            .map_err(|e| BootError(format!("corrupt snapshot in data directory: {e}")))?
    };
    let raft_config = raft_config(identity.node_id, config.tick);
    let persisted = Persisted {
        hard_state: loaded.hard_state,
        snapshot: loaded.snapshot,
        entries: loaded.entries,
    };
    let raft = Raft::new(raft_config, persisted).map_err(|e| BootError(format!("{e}")))?;
    let shared = Shared::new(Status::new(identity.node_id, identity.cluster_id));
    let (inbox, receiver) = sync_channel::<Input>(INBOX_CAPACITY);
    let peer_inbox = inbox.clone();
    let deliver = Arc::new(move |message| {
        let Some(input) = admit_message(message) else {
            return false;
        };
        // Blocking: a slow node thread slows the peers' readers, which
        // is TCP backpressure rather than dropped messages.
        peer_inbox.send(input).is_ok()
    });
    let transport = Transport::start(
        TransportConfig {
            listen_addr: config.peer_listen.clone(),
            cluster_id: identity.cluster_id,
            node_id: identity.node_id,
            peer_addr: config.peer_addr.clone(),
            http_addr: config.http_addr.clone(),
            incarnation: identity.incarnation,
            peer_secret: config.peer_secret.clone(),
            snapshot_bytes_max: config
                .db_size_mb
                .saturating_mul(1 << 20)
                .min(crate::wire::SNAPSHOT_BYTES_MAX),
        },
        deliver,
    )
    .map_err(|e| {
        BootError(format!(
            "cannot listen for peers on {}: {e}",
            config.peer_listen
        ))
    })?;
    info!(
        "node {} of cluster {:016x} starting: peers on {}, data in {}",
        identity.node_id,
        identity.cluster_id,
        config.peer_addr,
        config.data_dir.display()
    );
    let admit_inbox = inbox.clone();
    transport.set_admit(Arc::new(move |request| admit(&admit_inbox, request)));
    let writer = Writer::start(store, inbox.clone())
        .map_err(|e| BootError(format!("cannot start the writer thread: {e}")))?;
    let handle = NodeHandle {
        inbox,
        shared: Arc::clone(&shared),
    };
    let mut driver = Driver::new(config, raft, writer, state, transport, shared, loaded.app);
    driver.members = MemberState::new(applied_membership, identity.incarnation);
    driver.members.cluster_id = identity.cluster_id;
    Ok((handle, driver, receiver))
}

/// Opens (or bootstraps) the data directory and starts the node thread.
///
/// # Errors
/// `BootError` when the directory belongs to another cluster, is
/// corrupt or of an unknown version, or a port cannot be bound.
pub fn start(config: NodeConfig) -> Result<(NodeHandle, JoinHandle<()>), BootError> {
    let (handle, driver, receiver) = assemble(config)?;
    let thread = std::thread::Builder::new()
        .name("node".into())
        .spawn(move || driver.run(receiver))
        .map_err(|e| BootError(format!("cannot start the node thread: {e}")))?;
    Ok((handle, thread))
}

/// Hands a joiner's request to the node thread and waits for its answer
/// (on a transport reader thread).
fn admit(inbox: &SyncSender<Input>, request: MemberRequest) -> JoinAnswer {
    let (reply, answer) = oneshot::channel();
    if inbox.try_send(Input::Join { request, reply }).is_err() {
        return JoinAnswer::Refused {
            retry: true,
            message: "the node is overloaded or stopping".into(),
        };
    }
    answer
        .recv_timeout(JOIN_ANSWER_WAIT)
        .unwrap_or_else(|| JoinAnswer::Refused {
            retry: true,
            message: "the membership change did not commit in time".into(),
        })
}

/// The Raft settings: 10 ms ticks, elections after 0.8–1.6 s of
/// silence, heartbeats every 100 ms (8 per minimum election timeout, so
/// a lost heartbeat or two never triggers an election), and a lease
/// 100 ms shorter than the minimum election timeout.
fn raft_config(id: u64, tick: std::time::Duration) -> raft::Config {
    let per_second = (1000 / tick.as_millis().max(1)) as u64;
    raft::Config {
        id,
        election_ticks_min: per_second * 8 / 10,
        election_ticks_max: per_second * 16 / 10,
        heartbeat_ticks: (per_second / 10).max(1),
        lease_margin_ticks: (per_second / 10).max(1),
        max_append_entries: 4096,
        max_append_bytes: 4 << 20,
        max_inflight: 64,
        seed: id
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// The identity and first membership of an empty data directory.
pub(super) fn first_identity(config: &NodeConfig) -> Result<(Identity, Membership), BootError> {
    let (cluster_id, node_id, mut membership) = match config.bootstrap {
        Bootstrap::Joined {
            cluster_id,
            node_id,
            incarnation,
        } => {
            let identity = Identity {
                cluster_id,
                node_id,
                incarnation,
            };
            return Ok((identity, Membership::default()));
        }
        Bootstrap::NewCluster { node_id } => {
            let mut membership = Membership::default();
            let me = Member {
                voter: true,
                peer_addr: config.peer_addr.clone(),
                http_addr: String::new(),
                incarnation: 0,
            };
            membership.members.insert(node_id, me);
            membership.max_id = node_id;
            (draw_random()?, node_id, membership)
        }
        Bootstrap::Peers => {
            let peers = if config.peers.is_empty() {
                vec![config.peer_addr.clone()]
            } else {
                config.peers.clone()
            };
            let membership = initial_membership(&peers);
            let node_id = membership
                .members
                .iter()
                .find(|(_, m)| m.peer_addr == config.peer_addr)
                .map(|(id, _)| *id)
                .ok_or_else(|| {
                    BootError(format!("{} is not in the peer list", config.peer_addr))
                })?;
            (cluster_id_of(&membership), node_id, membership)
        }
    };
    let incarnation = draw_random()?;
    if let Some(me) = membership.members.get_mut(&node_id) {
        me.http_addr = config.http_addr.clone();
        me.incarnation = incarnation;
    }
    let identity = Identity {
        cluster_id,
        node_id,
        incarnation,
    };
    Ok((identity, membership))
}

fn bootstrap(config: &NodeConfig, store: &mut Store) -> Result<Loaded, BootError> {
    let (identity, membership) = first_identity(config)?;
    let cluster_id = identity.cluster_id;
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: 0,
            term: 0,
            membership,
        },
        data: Vec::new(),
    };
    store
        .bootstrap(identity, &snapshot)
        .map_err(|e| BootError(format!("cannot initialise the data directory: {e}")))?;
    info!("bootstrapped a new data directory for cluster {cluster_id:016x}");
    store
        .load()
        .map_err(|e| BootError(format!("{e}")))?
        .ok_or_else(|| BootError("bootstrap wrote nothing".into()))
}

/// Empties the data directory for `start` or `join` (or `drop`), saying
/// first what it holds: one line with the cluster id, node id and
/// directory.
///
/// # Errors
/// `BootError` while a node runs on the directory, for a directory that
/// is not a ticketd store, or when a file cannot be removed.
pub fn wipe(
    data_dir: &std::path::Path,
    db_size_mb: u64,
    remove_dir: bool,
) -> Result<(), BootError> {
    let shown = data_dir.display();
    let wiped = if remove_dir {
        Store::drop_dir(data_dir, db_size_mb)
    } else {
        Store::wipe(data_dir, db_size_mb)
    };
    match wiped {
        Ok(Wiped::Empty) => {}
        Ok(Wiped::Identity(identity)) => info!(
            "wiped the data of node {} of cluster {:016x} in {shown}",
            identity.node_id, identity.cluster_id
        ),
        Ok(Wiped::Unreadable(why)) => info!("wiped unreadable data ({why}) in {shown}"),
        Err(crate::store::StoreError::Locked(_)) => {
            return Err(BootError(format!(
                "data directory {shown} is in use by a running node; stop it first (or `ticketd leave` it)"
            )));
        }
        Err(e) => return Err(BootError(format!("cannot wipe {shown}: {e}"))),
    }
    Ok(())
}

/// What a data directory holds, for `ticketd leave`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirState {
    /// A node runs on it (it holds the lock).
    Running,
    /// Nobody runs on it: whether it holds a node, and whether that node
    /// was removed from its cluster.
    Stopped { empty: bool, removed: bool },
}

/// Looks at a data directory without changing it.
///
/// # Errors
/// `BootError` for a directory that cannot be opened or read.
pub fn dir_state(data_dir: &std::path::Path, db_size_mb: u64) -> Result<DirState, BootError> {
    if !data_dir.exists() {
        return Ok(DirState::Stopped {
            empty: true,
            removed: false,
        });
    }
    let store = match Store::open(data_dir, db_size_mb) {
        Ok(store) => store,
        Err(crate::store::StoreError::Locked(_)) => return Ok(DirState::Running),
        Err(e) => {
            return Err(BootError(format!(
                "cannot open {}: {e}",
                data_dir.display()
            )));
        }
    };
    let loaded = store.load().map_err(|e| BootError(e.to_string()))?;
    Ok(DirState::Stopped {
        empty: loaded.is_none(),
        removed: loaded.is_some_and(|l| l.removed),
    })
}

/// A restarted node keeps its own membership; a peer list that describes
/// a different cluster means the wrong data directory.
fn check_loaded(config: &NodeConfig, loaded: Loaded) -> Result<Loaded, BootError> {
    if loaded.removed {
        return Err(BootError(format!(
            "node {} was removed from its cluster; data directory {} may not rejoin it as it is: \
             `ticketd start` to wipe it and start a new cluster, or `ticketd join PEER` to wipe \
             it and join a cluster as a new member",
            loaded.identity.node_id,
            config.data_dir.display()
        )));
    }
    if !config.peers.is_empty() {
        let expected = cluster_id_of(&initial_membership(&config.peers));
        if expected != loaded.identity.cluster_id {
            return Err(BootError(format!(
                "data directory {} belongs to cluster {:016x}, not to the cluster of the given peer list ({expected:016x}); use another --path or remove it",
                config.data_dir.display(),
                loaded.identity.cluster_id
            )));
        }
    }
    let members: BTreeMap<_, _> = loaded.snapshot.meta.membership.members.clone();
    if let Some(me) = members.get(&loaded.identity.node_id)
        && me.peer_addr != config.peer_addr
    {
        warn!(
            "this node was {} and now runs on {}",
            me.peer_addr, config.peer_addr
        );
    }
    Ok(loaded)
}
