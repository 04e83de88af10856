//! Blocking TCP transport between the nodes of a cluster: one acceptor
//! thread, one reader thread per inbound connection and one writer thread
//! (with a bounded queue) per peer. It moves [`Message`]s; it owns the
//! sockets and these threads and nothing else. It has no Raft logic: it
//! never looks inside a message beyond `from`/`to`, never retries one
//! (Raft does), and may not touch the store or the core.
//!
//! Each connection is one-way for messages: our writer connects to the
//! peer's listener and only writes after the handshake; the peer's reader
//! only reads after replying with its own handshake. So every pair of
//! nodes uses two connections, one per direction.
//!
//! Cluster id 0 in [`TransportConfig`] means "not known yet" (a node that
//! is joining): such a node accepts any cluster id from its peers and skips
//! the check on the handshake replies it gets. It announces cluster id 0
//! itself, which peers with a known cluster id refuse, so a joining node
//! must learn the id (from the cluster it joins) before its own outbound
//! connections are accepted.

mod inbound;
mod join;
mod outbound;
mod quiet;
mod sockets;

pub use join::{Admission, Admit, request_admission, request_leave};

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use std::{fmt, io};

use log::{debug, error, info, warn};

use crate::raft::{Message, NodeId};
use crate::secret::Secret;
use crate::wire::{
    Handshake, NONCE_BYTES, Refusal, RefusalReason, Role, Session, WireError,
    authenticate_acceptor, authenticate_dialer,
};
use sockets::Sockets;

/// Messages waiting for one peer's writer; more are dropped.
const PEER_QUEUE_MESSAGES_MAX: usize = 4096;
/// Inbound connections served at once; more are refused. A cluster has a
/// handful of peers, each with one connection to us.
const INBOUND_CONNECTIONS_MAX: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds every write, and the wait for a handshake.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long [`Transport::shutdown`] waits for its threads.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// Longer addresses are refused at start; the handshake's u16 length
/// prefix could carry more, but no real `host:port` needs it.
const ADDRESS_BYTES_MAX: usize = 1024;

/// Where received messages go (the node thread's mailbox): called from the
/// reader threads, one message at a time per connection. It returns false
/// to refuse a message (one the node judged bad, e.g. a snapshot whose
/// state does not decode): that connection is then closed and logged.
pub type Deliver = Arc<dyn Fn(Message) -> bool + Send + Sync>;

/// Where and as whom a transport runs.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// `host:port` to bind for peers.
    pub listen_addr: String,
    /// 0: not known yet (see the module docs).
    pub cluster_id: u64,
    pub node_id: NodeId,
    /// The peer address we advertise in handshakes.
    pub peer_addr: String,
    /// The client address we advertise in handshakes.
    pub http_addr: String,
    /// Our data directory's incarnation, advertised in handshakes.
    pub incarnation: u64,
    /// `--peer_secret`: when set, every connection must prove it
    /// ([`crate::wire::authenticate_acceptor`]) and is sealed after.
    pub peer_secret: Option<Secret>,
    /// The largest snapshot a peer may send us: the map size (a bigger
    /// state could not be stored anyway), so one connection cannot make
    /// us buffer more.
    pub snapshot_bytes_max: u64,
}

/// What the cluster's committed configuration says about who may
/// connect, as the node last gave it ([`Transport::set_roster`]). The
/// transport only compares numbers; what they mean is the node's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roster {
    /// Ids up to this one were assigned; one of them that is not a member
    /// was removed (ids are never reused). 0: nothing known yet.
    pub max_id: NodeId,
    /// Every member, with the incarnation the log records for it (0: not
    /// recorded yet).
    pub incarnations: BTreeMap<NodeId, u64>,
}

/// What a peer announced about itself in an accepted handshake. The node
/// may propose it for the log; it is never used for redirects as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    pub peer_addr: String,
    pub http_addr: String,
    pub incarnation: u64,
}

/// Everything the transport's threads share.
struct Shared {
    config: TransportConfig,
    /// What we announce, built once.
    handshake: Handshake,
    /// Where received messages go (the node thread's mailbox).
    deliver: Deliver,
    /// What peers announced in accepted handshakes.
    announced: Mutex<BTreeMap<NodeId, Announced>>,
    /// Who may connect, from the committed configuration.
    roster: Mutex<Roster>,
    /// The latest refusal a peer sent us, until the node takes it.
    refusal: Mutex<Option<Refusal>>,
    /// Decides about joiners ([`Transport::set_admit`]); none: refused.
    admit: Mutex<Option<Admit>>,
    /// Inbound sockets, to cap them and to close them on shutdown.
    inbound: Arc<Sockets>,
    /// Every thread started, joined on shutdown; finished ones are reaped
    /// whenever one is added, so the list stays as long as the live set.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Messages dropped: unknown peer, full queue, no connection.
    dropped: AtomicU64,
    /// Outbound connections made (the first to each peer included).
    connects: AtomicU64,
    stopping: AtomicBool,
    /// Failed proofs and foreign protocols, logged once a minute per
    /// address.
    quiet: quiet::QuietLog,
}

impl Shared {
    fn learn_announced(&self, handshake: &Handshake) {
        let announced = Announced {
            peer_addr: handshake.peer_addr.clone(),
            http_addr: handshake.http_addr.clone(),
            incarnation: handshake.incarnation,
        };
        lock(&self.announced).insert(handshake.node_id, announced);
    }

    /// Why the node behind `theirs` may not talk to us, if it may not: it
    /// was removed, or its data directory is not the one the log knows
    /// under its id. `removed_too` is false for connections we dial (we
    /// dial a removed member only to tell it of its removal).
    fn verdict(&self, theirs: &Handshake, removed_too: bool) -> Option<Refusal> {
        let roster = lock(&self.roster);
        let id = theirs.node_id;
        match roster.incarnations.get(&id) {
            Some(&recorded)
                if recorded != 0 && theirs.incarnation != 0 && recorded != theirs.incarnation =>
            {
                Some(Refusal {
                    reason: RefusalReason::DataLost,
                    message: format!(
                        "node {id}'s data is gone (the cluster knows another data directory under this id): \
                         remove it (DELETE /api/v1/cluster/members/{id}) and `ticketd join` as a new member"
                    ),
                })
            }
            Some(_) => None,
            None if removed_too && id <= roster.max_id => Some(Refusal {
                reason: RefusalReason::Removed,
                message: format!("node {id} was removed from the cluster"),
            }),
            None => None,
        }
    }

    fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn add_thread(&self, handle: JoinHandle<()>) {
        let mut threads = lock(&self.threads);
        let (finished, running): (Vec<_>, Vec<_>) =
            threads.drain(..).partition(|h| h.is_finished());
        *threads = running;
        threads.push(handle);
        drop(threads);
        finished.into_iter().for_each(join_logged);
    }

    /// Checks a peer's handshake against our config; `expected` is the node
    /// we dialled, for outbound connections.
    fn check_handshake(
        &self,
        theirs: &Handshake,
        expected: Option<NodeId>,
    ) -> Result<(), ConnError> {
        let ours = &self.config;
        if theirs.node_id == 0 {
            return Err(ConnError::Refused("peer announces node id 0".into()));
        }
        if theirs.node_id == ours.node_id {
            return Err(ConnError::Refused(format!(
                "peer announces our own node id {}",
                ours.node_id
            )));
        }
        if ours.cluster_id != 0 && theirs.cluster_id != ours.cluster_id {
            return Err(ConnError::Refused(format!(
                "peer node {} is in cluster {:#x}, we are in cluster {:#x}",
                theirs.node_id, theirs.cluster_id, ours.cluster_id
            )));
        }
        match expected {
            Some(id) if id != theirs.node_id => Err(ConnError::Refused(format!(
                "expected node {id} at this address, found node {}",
                theirs.node_id
            ))),
            _ => Ok(()),
        }
    }
}

/// Why a connection ended or was refused.
#[derive(Debug)]
enum ConnError {
    Wire(WireError),
    /// The peer is not one we talk to (wrong cluster, wrong node, ...).
    Refused(String),
    /// The transport or this peer's writer is shutting down.
    Stopped,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Wire(err) => err.fmt(f),
            ConnError::Refused(why) => write!(f, "refused: {why}"),
            ConnError::Stopped => write!(f, "transport is stopping"),
        }
    }
}

impl From<WireError> for ConnError {
    fn from(err: WireError) -> ConnError {
        ConnError::Wire(err)
    }
}

impl From<io::Error> for ConnError {
    fn from(err: io::Error) -> ConnError {
        ConnError::Wire(WireError::from(err))
    }
}

/// Reads a socket with one deadline for the whole exchange rather than a
/// timeout per read, so a peer trickling a byte at a time cannot keep a
/// handshake (and a connection slot) going forever.
struct DeadlineReader<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl<'a> DeadlineReader<'a> {
    fn new(stream: &'a TcpStream, timeout: Duration) -> DeadlineReader<'a> {
        DeadlineReader {
            stream,
            deadline: Instant::now() + timeout,
        }
    }
}

impl io::Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer too slow to complete the handshake",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        (&mut &*self.stream).read(buf)
    }
}

/// The handshake's stream writes straight to the socket, so that the
/// proof exchange can run over it under the same deadline.
impl io::Write for DeadlineReader<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&mut &*self.stream).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&mut &*self.stream).flush()
    }
}

/// With a peer secret, runs the proof exchange on a fresh connection and
/// returns its session; without one, `None` (the connection is plain).
fn authenticate(
    secret: Option<&Secret>,
    io: &mut DeadlineReader<'_>,
    role: Role,
) -> Result<Option<Session>, ConnError> {
    let Some(secret) = secret else {
        return Ok(None);
    };
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::getrandom(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
    let session = match role {
        Role::Dialer => authenticate_dialer(io, secret, nonce)?,
        Role::Acceptor => authenticate_acceptor(io, secret, nonce)?,
    };
    Ok(Some(session))
}

/// One peer's writer, as seen from [`Transport::send`].
struct PeerWriter {
    addr: String,
    queue: SyncSender<Message>,
    /// The writer's socket, closed to stop it mid-write.
    sockets: Arc<Sockets>,
}

impl PeerWriter {
    /// Makes the writer thread exit soon; does not wait for it.
    fn stop(self) {
        drop(self.queue);
        self.sockets.close_all();
    }
}

/// The running transport. Dropping it stops the threads without waiting;
/// [`Transport::shutdown`] also waits for them.
pub struct Transport {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    peers: Mutex<BTreeMap<NodeId, PeerWriter>>,
    /// Every thread holds a clone and drops it on exit, so the receiver
    /// sees "disconnected" once all of them are gone. Taken on shutdown.
    exit_sender: Mutex<Option<Sender<()>>>,
    exit_receiver: Mutex<Receiver<()>>,
}

impl Transport {
    /// Binds the listener (error if the port is taken) and starts the
    /// acceptor thread. `deliver` is called from the reader threads, one
    /// message at a time per connection; while it blocks, that peer's
    /// messages wait in the socket buffers. A message it refuses closes
    /// its connection.
    ///
    /// # Errors
    /// An invalid config (node id 0, overlong addresses), a failed bind or
    /// a failed thread spawn.
    pub fn start(config: TransportConfig, deliver: Deliver) -> io::Result<Transport> {
        validate(&config)?;
        let listener = TcpListener::bind(&config.listen_addr)?;
        let local_addr = listener.local_addr()?;
        let handshake = Handshake {
            cluster_id: config.cluster_id,
            node_id: config.node_id,
            peer_addr: config.peer_addr.clone(),
            http_addr: config.http_addr.clone(),
            incarnation: config.incarnation,
        };
        let shared = Arc::new(Shared {
            config,
            handshake,
            deliver,
            announced: Mutex::new(BTreeMap::new()),
            roster: Mutex::new(Roster::default()),
            refusal: Mutex::new(None),
            admit: Mutex::new(None),
            inbound: Sockets::new(INBOUND_CONNECTIONS_MAX),
            threads: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            quiet: quiet::QuietLog::default(),
        });
        let (exit_sender, exit_receiver) = mpsc::channel();
        let acceptor = inbound::spawn_acceptor(Arc::clone(&shared), listener, exit_sender.clone())?;
        shared.add_thread(acceptor);
        info!(
            "node {} listening for peers on {local_addr}",
            shared.config.node_id
        );
        Ok(Transport {
            shared,
            local_addr,
            peers: Mutex::new(BTreeMap::new()),
            exit_sender: Mutex::new(Some(exit_sender)),
            exit_receiver: Mutex::new(exit_receiver),
        })
    }

    /// The address the listener is bound to (the real port when the
    /// config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The current peers (node id -> peer address), from the cluster
    /// membership; starts a writer for new ones, stops writers of removed
    /// ones or of changed addresses. Our own id is ignored.
    pub fn set_peers(&self, peers: &BTreeMap<NodeId, String>) {
        let Some(exit_sender) = lock(&self.exit_sender).clone() else {
            return;
        };
        let mut current = lock(&self.peers);
        let stale: Vec<NodeId> = current
            .iter()
            .filter(|(id, writer)| peers.get(id) != Some(&writer.addr))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(writer) = current.remove(&id) {
                info!("stopping the writer to peer {id} at {}", writer.addr);
                writer.stop();
            }
        }
        for (&id, addr) in peers {
            if id == 0 || id == self.shared.config.node_id || current.contains_key(&id) {
                continue;
            }
            match self.start_writer(id, addr, exit_sender.clone()) {
                Ok(writer) => {
                    current.insert(id, writer);
                }
                Err(err) => error!("cannot start the writer to peer {id} at {addr}: {err}"),
            }
        }
    }

    fn start_writer(
        &self,
        id: NodeId,
        addr: &str,
        exit_sender: Sender<()>,
    ) -> io::Result<PeerWriter> {
        let (queue, receiver) = mpsc::sync_channel(PEER_QUEUE_MESSAGES_MAX);
        let sockets = Sockets::new(1);
        let target = outbound::Target {
            id,
            addr: addr.to_string(),
        };
        let handle = outbound::spawn_writer(
            Arc::clone(&self.shared),
            target,
            receiver,
            Arc::clone(&sockets),
            exit_sender,
        )?;
        self.shared.add_thread(handle);
        debug!("started the writer to peer {id} at {addr}");
        Ok(PeerWriter {
            addr: addr.to_string(),
            queue,
            sockets,
        })
    }

    /// Never blocks: enqueues on the peer's bounded queue; a full queue or
    /// an unknown peer drops the message (Raft retries) and counts it.
    pub fn send(&self, message: Message) {
        let peers = lock(&self.peers);
        let Some(writer) = peers.get(&message.to) else {
            debug!("dropping a message to unknown peer {}", message.to);
            self.shared.count_dropped();
            return;
        };
        match writer.queue.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(message)) => {
                debug!("queue to peer {} is full, dropping a message", message.to);
                self.shared.count_dropped();
            }
            Err(TrySendError::Disconnected(message)) => {
                debug!("writer to peer {} is gone, dropping a message", message.to);
                self.shared.count_dropped();
            }
        }
    }

    /// The peers a writer runs for, by id, with the address it dials.
    #[cfg(test)]
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        lock(&self.peers)
            .iter()
            .map(|(id, writer)| (*id, writer.addr.clone()))
            .collect()
    }

    /// What a peer announced in its latest accepted handshake (inbound
    /// or outbound), if it connected. Not a redirect target: only what
    /// the log records is (see [`Announced`]).
    pub fn announced(&self, id: NodeId) -> Option<Announced> {
        lock(&self.shared.announced).get(&id).cloned()
    }

    /// Who may connect from now on (already open connections stay: the
    /// node drops what a removed member sends anyway).
    pub fn set_roster(&self, roster: Roster) {
        *lock(&self.shared.roster) = roster;
    }

    /// Who decides about nodes that ask to join (called on a reader
    /// thread; it may block, for a bounded time).
    pub fn set_admit(&self, admit: Admit) {
        *lock(&self.shared.admit) = Some(admit);
    }

    /// Peers that connected to us, by id, with the peer address they
    /// announced: whom a node that is not a member yet answers (it knows
    /// no members to dial until the leader's log reaches it).
    pub fn announced_peers(&self) -> BTreeMap<NodeId, String> {
        lock(&self.shared.announced)
            .iter()
            .filter(|(_, a)| !a.peer_addr.is_empty())
            .map(|(id, a)| (*id, a.peer_addr.clone()))
            .collect()
    }

    /// The latest refusal a peer answered our handshake with, once.
    pub fn take_refusal(&self) -> Option<Refusal> {
        lock(&self.shared.refusal).take()
    }

    /// How many messages were dropped so far (unknown peer, full queue,
    /// peer unreachable), for metrics.
    pub fn dropped_messages(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Outbound connections made so far (one per peer at start, one more
    /// per reconnect), for metrics.
    pub fn connects(&self) -> u64 {
        self.shared.connects.load(Ordering::Relaxed)
    }

    /// Inbound peer connections open now (at most a fixed cap), for
    /// status pages.
    pub fn inbound_connections(&self) -> usize {
        self.shared.inbound.len()
    }

    /// Stops all threads (closes sockets) and joins them, waiting at most
    /// a few seconds; threads still blocked after that are left behind
    /// with a warning.
    pub fn shutdown(self) {
        self.stop_all();
        lock(&self.exit_sender).take();
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        let all_exited = {
            let receiver = lock(&self.exit_receiver);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match receiver.recv_timeout(left) {
                    Ok(()) => {}
                    Err(RecvTimeoutError::Disconnected) => break true,
                    Err(RecvTimeoutError::Timeout) => break false,
                }
            }
        };
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        let (finished, running): (Vec<_>, Vec<_>) = threads
            .into_iter()
            .partition(|h| all_exited || h.is_finished());
        finished.into_iter().for_each(join_logged);
        if !running.is_empty() {
            warn!(
                "{} transport threads did not stop within {SHUTDOWN_TIMEOUT:?}; leaving them",
                running.len()
            );
        }
        info!("transport of node {} stopped", self.shared.config.node_id);
    }

    /// Tells every thread to stop and wakes the blocked ones; idempotent.
    fn stop_all(&self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let writers = std::mem::take(&mut *lock(&self.peers));
        for writer in writers.into_values() {
            writer.stop();
        }
        self.shared.inbound.close_all();
        wake_acceptor(self.local_addr);
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn validate(config: &TransportConfig) -> io::Result<()> {
    let invalid = |why: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, why.to_string()));
    if config.node_id == 0 {
        return invalid("node id 0 is reserved");
    }
    if config.peer_addr.len() > ADDRESS_BYTES_MAX || config.http_addr.len() > ADDRESS_BYTES_MAX {
        return invalid("advertised address too long");
    }
    Ok(())
}

/// The acceptor blocks in `accept`; a connection of our own gets it to
/// look at the stop flag.
fn wake_acceptor(local_addr: SocketAddr) {
    let mut target = local_addr;
    if target.ip().is_unspecified() {
        let loopback: std::net::IpAddr = match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        target.set_ip(loopback);
    }
    if let Err(err) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
        warn!("cannot wake the peer acceptor on {target}: {err}");
    }
}

fn join_logged(handle: JoinHandle<()>) {
    let name = handle.thread().name().unwrap_or("unnamed").to_string();
    if handle.join().is_err() {
        error!("transport thread {name} panicked");
    }
}

/// The transport's maps stay consistent across a panic (single inserts
/// and removals), so a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn shared(cluster_id: u64, node_id: NodeId) -> Shared {
        Shared {
            config: TransportConfig {
                listen_addr: "127.0.0.1:0".into(),
                cluster_id,
                node_id,
                peer_addr: String::new(),
                http_addr: String::new(),
                incarnation: 1,
                peer_secret: None,
                snapshot_bytes_max: crate::wire::SNAPSHOT_BYTES_MAX,
            },
            handshake: Handshake {
                cluster_id,
                node_id,
                peer_addr: String::new(),
                http_addr: String::new(),
                incarnation: 1,
            },
            deliver: Arc::new(|_| true),
            announced: Mutex::new(BTreeMap::new()),
            roster: Mutex::new(Roster::default()),
            refusal: Mutex::new(None),
            admit: Mutex::new(None),
            inbound: Sockets::new(1),
            threads: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            quiet: quiet::QuietLog::default(),
        }
    }

    fn hello(cluster_id: u64, node_id: NodeId) -> Handshake {
        Handshake {
            cluster_id,
            node_id,
            peer_addr: String::new(),
            http_addr: format!("h:{node_id}"),
            incarnation: 100 + node_id,
        }
    }

    #[test]
    fn handshakes_are_checked_against_our_config() {
        let us = shared(7, 1);
        assert!(us.check_handshake(&hello(7, 2), None).is_ok());
        assert!(us.check_handshake(&hello(7, 2), Some(2)).is_ok());
        assert!(us.check_handshake(&hello(7, 3), Some(2)).is_err());
        assert!(us.check_handshake(&hello(8, 2), None).is_err());
        assert!(us.check_handshake(&hello(0, 2), None).is_err());
        assert!(us.check_handshake(&hello(7, 0), None).is_err());
        assert!(us.check_handshake(&hello(7, 1), None).is_err());

        let joining = shared(0, 4);
        assert!(joining.check_handshake(&hello(7, 2), None).is_ok());
        assert!(joining.check_handshake(&hello(9, 2), Some(2)).is_ok());
        assert!(joining.check_handshake(&hello(9, 4), None).is_err());
    }

    #[test]
    fn announcements_are_recorded_as_sent() {
        let us = shared(7, 1);
        us.learn_announced(&hello(7, 2));
        let known = lock(&us.announced);
        assert_eq!(
            known.get(&2),
            Some(&Announced {
                peer_addr: String::new(),
                http_addr: "h:2".into(),
                incarnation: 102
            })
        );
        assert!(!known.contains_key(&3));
    }

    #[test]
    fn removed_nodes_and_lost_data_are_refused() {
        let us = shared(7, 1);
        // Nothing known yet: everyone may connect.
        assert_eq!(us.verdict(&hello(7, 3), true), None);
        let mut incarnations = BTreeMap::new();
        incarnations.insert(1, 101);
        incarnations.insert(2, 102);
        incarnations.insert(4, 0);
        *lock(&us.roster) = Roster {
            max_id: 5,
            incarnations,
        };
        assert_eq!(us.verdict(&hello(7, 2), true), None);
        // Not recorded yet, or an older peer that announces none: allowed.
        assert_eq!(us.verdict(&hello(7, 4), true), None);
        let mut old = hello(7, 2);
        old.incarnation = 0;
        assert_eq!(us.verdict(&old, true), None);
        let mut wiped = hello(7, 2);
        wiped.incarnation = 999;
        let refusal = us.verdict(&wiped, true).unwrap();
        assert_eq!(refusal.reason, RefusalReason::DataLost);
        assert!(refusal.message.contains("DELETE /api/v1/cluster/members/2"));
        assert_eq!(
            us.verdict(&wiped, false).unwrap().reason,
            RefusalReason::DataLost
        );
        // 3 and 5 were removed; 6 was never assigned (a joining node).
        assert_eq!(
            us.verdict(&hello(7, 3), true).unwrap().reason,
            RefusalReason::Removed
        );
        assert_eq!(us.verdict(&hello(7, 3), false), None);
        assert!(us.verdict(&hello(7, 5), true).is_some());
        assert_eq!(us.verdict(&hello(7, 6), true), None);
    }

    #[test]
    fn configs_are_validated() {
        let mut config = shared(7, 1).config;
        assert!(validate(&config).is_ok());
        config.http_addr = "x".repeat(ADDRESS_BYTES_MAX + 1);
        assert!(validate(&config).is_err());
        config.http_addr.clear();
        config.node_id = 0;
        assert!(validate(&config).is_err());
    }

    #[test]
    fn a_trickled_handshake_runs_into_the_deadline() {
        use std::io::Write;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let trickler = std::thread::spawn(move || {
            // A valid header, one byte at a time, slower than the deadline.
            let mut frame = Vec::new();
            crate::wire::write_handshake(&mut frame, &hello(7, 2)).unwrap();
            for byte in frame {
                if client.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let started = Instant::now();
        let mut reader = DeadlineReader::new(&server, Duration::from_millis(100));
        let result = crate::wire::read_handshake(&mut reader);
        assert!(matches!(result, Err(WireError::Io(_))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(server);
        trickler.join().unwrap();
    }

    #[test]
    fn the_transport_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Transport>();
    }
}
