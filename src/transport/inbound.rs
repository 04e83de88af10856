//! The receiving side: the acceptor thread and one reader thread per
//! inbound connection, which checks the peer's handshake, answers with
//! ours and hands every message addressed to us to `deliver`. A message
//! whose sender is not the handshake's node, or that `deliver` refuses,
//! closes the connection (logged).

use std::io;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::sockets::Registration;
use super::{ConnError, DeadlineReader, IO_TIMEOUT, Shared, authenticate};
use crate::raft::Message;
use crate::wire::{
    Handshake, MessageAssembler, Role, SealedReader, SealedWriter, WireError, read_frame,
    read_handshake, write_handshake, write_refusal,
};

/// Reads are buffered: many small frames arrive back to back.
const READ_BUFFER_BYTES: usize = 64 << 10;
/// After a failed `accept` (e.g. out of file descriptors), so that the
/// acceptor does not spin on a persistent error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

pub(super) fn spawn_acceptor(
    shared: Arc<Shared>,
    listener: TcpListener,
    exit_sender: Sender<()>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("peer-acceptor".into())
        .spawn(move || accept_loop(&shared, &listener, &exit_sender))
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, exit_sender: &Sender<()>) {
    loop {
        let accepted = listener.accept();
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, remote)) => start_reader(shared, stream, remote, exit_sender),
            Err(err) => {
                warn!("accepting a peer connection failed: {err}");
                thread::sleep(ACCEPT_ERROR_PAUSE);
            }
        }
    }
}

fn start_reader(
    shared: &Arc<Shared>,
    stream: TcpStream,
    remote: SocketAddr,
    exit_sender: &Sender<()>,
) {
    let registration = match shared.inbound.register(&stream) {
        Ok(registration) => registration,
        Err(err) => {
            warn!("refusing peer connection from {remote}: {err}");
            return;
        }
    };
    let thread_shared = Arc::clone(shared);
    let exit_sender = exit_sender.clone();
    let spawned = thread::Builder::new()
        .name(format!("peer-in-{remote}"))
        .spawn(move || {
            let _exit_sender = exit_sender;
            run_reader(&thread_shared, &stream, remote, &registration);
        });
    match spawned {
        Ok(handle) => shared.add_thread(handle),
        Err(err) => warn!("cannot start a reader for {remote}: {err}"),
    }
}

fn run_reader(
    shared: &Shared,
    stream: &TcpStream,
    remote: SocketAddr,
    registration: &Registration,
) {
    match serve(shared, stream, remote, registration) {
        Err(_) if shared.stopping.load(Ordering::SeqCst) => {
            debug!("peer connection from {remote} closed on shutdown");
        }
        Err(ConnError::Wire(WireError::Closed)) => {
            info!("peer connection from {remote} closed by the peer");
        }
        Err(err) => match stranger_kind(&err) {
            Some(kind) if shared.quiet.allow(remote.ip(), kind, Instant::now()) => warn!(
                "closing peer connection from {remote}: {err} (logged once a minute per address)"
            ),
            Some(_) => debug!("closing peer connection from {remote}: {err}"),
            None => warn!("closing peer connection from {remote}: {err}"),
        },
        Ok(()) => {}
    }
}

/// The failures a stranger (or a node of another secret or build) causes
/// before it is known: rate-limited in the log, by kind.
fn stranger_kind(err: &ConnError) -> Option<&'static str> {
    match err {
        ConnError::Wire(WireError::BadProof(_)) => Some("proof"),
        ConnError::Wire(WireError::UnsupportedVersion(_)) => Some("version"),
        ConnError::Wire(WireError::BadMagic(_) | WireError::UnknownFrameKind(_)) => {
            Some("protocol")
        }
        _ => None,
    }
}

/// Handshake, then messages until the connection ends.
fn serve(
    shared: &Shared,
    stream: &TcpStream,
    remote: SocketAddr,
    registration: &Registration,
) -> Result<(), ConnError> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    // One deadline for the proof exchange and the handshake: a peer that
    // has not proven the secret holds a slot for IO_TIMEOUT at most.
    let mut handshake_io = DeadlineReader::new(stream, IO_TIMEOUT);
    let session = authenticate(
        shared.config.peer_secret.as_ref(),
        &mut handshake_io,
        Role::Acceptor,
    )
    .map_err(|err| match err {
        // A dialer that hangs up on our proof does not know the secret.
        ConnError::Wire(WireError::Closed | WireError::Truncated) => ConnError::Wire(
            WireError::BadProof("the peer closed the connection before proving the secret"),
        ),
        other => other,
    })?;
    let mut writer = SealedWriter::new(stream, session.clone());
    // Unbuffered (or one record), so that nothing after the handshake
    // frame is read here.
    let mut reader = SealedReader::new(handshake_io, session);
    let peer = read_handshake(&mut reader)?;
    if peer.node_id == 0 {
        return super::join::serve_joiner(shared, &mut reader, &mut writer, &peer);
    }
    shared.check_handshake(&peer, None)?;
    if let Some(refusal) = shared.verdict(&peer, true) {
        // Tell it why, so that it can stop rather than retry forever.
        write_refusal(&mut writer, &refusal)?;
        writer.flush()?;
        return Err(ConnError::Refused(refusal.message));
    }
    shared.learn_announced(&peer);
    let replaced = registration.claim_node(peer.node_id);
    if replaced > 0 {
        info!(
            "node {} reconnected from {remote}; closed its older connection",
            peer.node_id
        );
    }
    write_handshake(&mut writer, &shared.handshake)?;
    writer.flush()?;
    // Peers that have nothing to send stay quiet for as long as they like.
    stream.set_read_timeout(None)?;
    info!("peer node {} connected from {remote}", peer.node_id);
    let mut reader = reader.with_inner(BufReader::with_capacity(READ_BUFFER_BYTES, stream));
    receive(shared, &mut reader, &peer, remote)
}

fn receive(
    shared: &Shared,
    reader: &mut impl Read,
    peer: &Handshake,
    remote: SocketAddr,
) -> Result<(), ConnError> {
    let mut assembler = MessageAssembler::with_snapshot_cap(shared.config.snapshot_bytes_max);
    loop {
        let frame = read_frame(reader)?;
        let Some(message) = assembler.push(&frame)? else {
            continue;
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return Err(ConnError::Stopped);
        }
        check_sender(peer, &message)?;
        if message.to != shared.config.node_id {
            debug!(
                "dropping a message to {} on the connection of node {} from {remote}",
                message.to, peer.node_id
            );
            continue;
        }
        if !(shared.deliver)(message) {
            return Err(ConnError::Refused(format!(
                "node {} sent a message the node refused",
                peer.node_id
            )));
        }
    }
}

/// A connection speaks for the node of its handshake only: a message
/// claiming another sender is a forgery, and ends the connection.
fn check_sender(peer: &Handshake, message: &Message) -> Result<(), ConnError> {
    if message.from == peer.node_id {
        return Ok(());
    }
    Err(ConnError::Refused(format!(
        "a message from node {} on the connection of node {}",
        message.from, peer.node_id
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::MessageBody;

    #[test]
    fn only_messages_from_the_handshake_node_pass() {
        let peer = Handshake {
            cluster_id: 7,
            node_id: 3,
            peer_addr: String::new(),
            http_addr: String::new(),
            incarnation: 0,
        };
        let message = |from, to| Message {
            from,
            to,
            term: 1,
            body: MessageBody::TimeoutNow,
        };
        assert!(check_sender(&peer, &message(3, 2)).is_ok());
        assert!(check_sender(&peer, &message(3, 4)).is_ok());
        assert!(matches!(
            check_sender(&peer, &message(1, 2)),
            Err(ConnError::Refused(_))
        ));
    }
}
