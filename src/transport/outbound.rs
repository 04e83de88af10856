//! The sending side: one writer thread per peer that dials it, exchanges
//! handshakes and writes the messages of its queue, reconnecting with
//! exponential backoff whenever anything fails.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::sockets::{RegisterError, Registration, Sockets};
use super::{
    CONNECT_TIMEOUT, ConnError, DeadlineReader, IO_TIMEOUT, RECONNECT_BACKOFF_MAX,
    RECONNECT_BACKOFF_MIN, Shared, authenticate, lock,
};
use crate::raft::{Message, NodeId};
use crate::wire::{
    Role, SealedReader, SealedWriter, WireError, read_handshake_reply, write_handshake,
    write_message,
};

/// The peer a writer talks to.
pub(super) struct Target {
    pub(super) id: NodeId,
    pub(super) addr: String,
}

pub(super) fn spawn_writer(
    shared: Arc<Shared>,
    target: Target,
    queue: Receiver<Message>,
    sockets: Arc<Sockets>,
    exit_sender: Sender<()>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("peer-out-{}", target.id))
        .spawn(move || {
            let _exit_sender = exit_sender;
            run_writer(&shared, &target, &queue, &sockets);
        })
}

/// Connect, pump, back off; until the queue's sender is dropped.
fn run_writer(shared: &Shared, target: &Target, queue: &Receiver<Message>, sockets: &Arc<Sockets>) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut failures: u64 = 0;
    loop {
        match connect(shared, target, sockets) {
            Ok((stream, writer, _registration)) => {
                info!("connected to peer {} at {}", target.id, target.addr);
                shared.connects.fetch_add(1, Ordering::Relaxed);
                backoff = RECONNECT_BACKOFF_MIN;
                failures = 0;
                let _ = &stream;
                match pump(writer, queue, shared) {
                    Ok(()) => return,
                    Err(err) => warn!(
                        "connection to peer {} at {} failed: {err}",
                        target.id, target.addr
                    ),
                }
            }
            Err(err) => {
                log_connect_failure(target, &err, failures);
                failures += 1;
            }
        }
        if !wait(queue, backoff, shared) {
            return;
        }
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// A peer that is down fails every couple of seconds; say so once at
/// warn, then at debug until it comes back.
fn log_connect_failure(target: &Target, error: &ConnError, failures: u64) {
    let (id, addr) = (target.id, &target.addr);
    match error {
        ConnError::Stopped => debug!("writer to peer {id} stopping"),
        _ if failures == 0 => warn!("cannot connect to peer {id} at {addr}: {error}"),
        _ => debug!(
            "cannot connect to peer {id} at {addr} (attempt {}): {error}",
            failures + 1
        ),
    }
}

/// Dials the peer and exchanges handshakes.
fn connect(
    shared: &Shared,
    target: &Target,
    sockets: &Arc<Sockets>,
) -> Result<(TcpStream, SealedWriter<TcpStream>, Registration), ConnError> {
    let stream = dial(&target.addr)?;
    let registration = sockets.register(&stream).map_err(|err| match err {
        RegisterError::Io(err) => ConnError::from(err),
        RegisterError::Closed | RegisterError::Full(_) => ConnError::Stopped,
    })?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut handshake_io = DeadlineReader::new(&stream, IO_TIMEOUT);
    let session = authenticate(
        shared.config.peer_secret.as_ref(),
        &mut handshake_io,
        Role::Dialer,
    )?;
    let mut writer = SealedWriter::new(stream.try_clone()?, session.clone());
    write_handshake(&mut writer, &shared.handshake)?;
    writer.flush()?;
    let peer = match read_handshake_reply(&mut SealedReader::new(handshake_io, session)) {
        Ok(peer) => peer,
        Err(WireError::Refused(refusal)) => {
            let error = ConnError::Refused(format!("peer refused us: {}", refusal.message));
            *lock(&shared.refusal) = Some(refusal);
            return Err(error);
        }
        Err(e) => return Err(e.into()),
    };
    shared.check_handshake(&peer, Some(target.id))?;
    if let Some(refusal) = shared.verdict(&peer, false) {
        return Err(ConnError::Refused(refusal.message));
    }
    shared.learn_announced(&peer);
    Ok((stream, writer, registration))
}

/// Tries every address `addr` resolves to, each with a timeout.
pub(super) fn dial(addr: &str) -> io::Result<TcpStream> {
    let mut last_error = None;
    for socket_addr in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&socket_addr, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolves to no address"),
        )
    }))
}

/// Writes queued messages until the queue is closed (`Ok`) or the
/// connection fails. Flushes only when the queue is momentarily empty, so
/// a burst goes out in few system calls.
/// The writer buffers (one record at most) and never flushes on drop,
/// which could block a dead connection for another write timeout; what is
/// buffered is lost either way (Raft retries).
fn pump(
    mut writer: SealedWriter<TcpStream>,
    queue: &Receiver<Message>,
    shared: &Shared,
) -> Result<(), WireError> {
    pump_into(&mut writer, queue, shared)
}

fn pump_into(
    writer: &mut impl Write,
    queue: &Receiver<Message>,
    shared: &Shared,
) -> Result<(), WireError> {
    loop {
        let message = match queue.try_recv() {
            Ok(message) => message,
            Err(TryRecvError::Empty) => {
                writer.flush()?;
                match queue.recv() {
                    Ok(message) => message,
                    Err(_) => return Ok(()),
                }
            }
            Err(TryRecvError::Disconnected) => return Ok(()),
        };
        match write_message(writer, &message) {
            Ok(()) => {}
            // Nothing was written: the connection is still in sync.
            Err(WireError::FrameTooLarge { length, max }) => {
                warn!(
                    "dropping a message to peer {} of {length} bytes (cap {max})",
                    message.to
                );
                shared.count_dropped();
            }
            Err(err) => return Err(err),
        }
    }
}

/// Sleeps for `backoff` while discarding what is queued (stale by the
/// time we reconnect; Raft resends). Returns false once the queue is
/// closed, i.e. the writer should stop.
fn wait(queue: &Receiver<Message>, backoff: Duration, shared: &Shared) -> bool {
    let deadline = Instant::now() + backoff;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match queue.recv_timeout(left) {
            Ok(_) => shared.count_dropped(),
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::MessageBody;
    use crate::transport::tests::shared;
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;

    fn timeout_now() -> Message {
        Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::TimeoutNow,
        }
    }

    #[test]
    fn backoff_discards_queued_messages_and_ends_on_close() {
        let us = shared(7, 1);
        let (sender, receiver) = mpsc::sync_channel(8);
        sender.send(timeout_now()).unwrap();
        sender.send(timeout_now()).unwrap();
        let started = Instant::now();
        assert!(wait(&receiver, Duration::from_millis(30), &us));
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(us.dropped.load(Ordering::Relaxed), 2);
        drop(sender);
        assert!(!wait(&receiver, Duration::from_secs(10), &us));
    }

    #[test]
    fn dialling_nowhere_fails() {
        assert!(dial("not an address").is_err());
        assert!(dial("127.0.0.1:0").is_err());
    }
}
