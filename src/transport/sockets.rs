//! The open sockets of a group of transport threads, kept so that another
//! thread can close them: shutting a socket down is the only way to wake
//! a thread blocked reading or writing it. Also caps how many are open.

use std::collections::BTreeMap;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::{fmt, io};

use crate::raft::NodeId;

/// Why a socket was not registered; the caller drops the connection.
#[derive(Debug)]
pub(crate) enum RegisterError {
    /// [`Sockets::close_all`] was called: the group is shutting down.
    Closed,
    /// The group already has its maximum number of sockets.
    Full(usize),
    /// The socket could not be duplicated for the registry.
    Io(io::Error),
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::Closed => write!(f, "transport is stopping"),
            RegisterError::Full(limit) => write!(f, "{limit} connections already open"),
            RegisterError::Io(err) => write!(f, "cannot register socket: {err}"),
        }
    }
}

struct Entry {
    stream: TcpStream,
    /// The node the handshake named, once known (0 before).
    node: NodeId,
}

#[derive(Default)]
struct State {
    closed: bool,
    next_id: u64,
    open: BTreeMap<u64, Entry>,
}

/// A registry of sockets that can all be closed at once.
pub(crate) struct Sockets {
    limit: usize,
    state: Mutex<State>,
}

impl Sockets {
    pub(crate) fn new(limit: usize) -> Arc<Sockets> {
        Arc::new(Sockets {
            limit,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (single inserts and
        // removals), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `stream`; it is removed when the returned registration drops.
    ///
    /// # Errors
    /// When closed, full, or the socket cannot be duplicated.
    pub(crate) fn register(
        self: &Arc<Self>,
        stream: &TcpStream,
    ) -> Result<Registration, RegisterError> {
        let mut state = self.lock();
        if state.closed {
            return Err(RegisterError::Closed);
        }
        if state.open.len() >= self.limit {
            return Err(RegisterError::Full(self.limit));
        }
        let stream = stream.try_clone().map_err(RegisterError::Io)?;
        let id = state.next_id;
        state.next_id += 1;
        state.open.insert(id, Entry { stream, node: 0 });
        Ok(Registration {
            sockets: Arc::clone(self),
            id,
        })
    }

    /// Shuts every socket down (now and any registered later is refused).
    pub(crate) fn close_all(&self) {
        let mut state = self.lock();
        state.closed = true;
        for entry in state.open.values() {
            // Already-closed sockets report errors here; nothing to do.
            let _ = entry.stream.shutdown(Shutdown::Both);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().open.len()
    }
}

/// One registered socket.
pub(crate) struct Registration {
    sockets: Arc<Sockets>,
    id: u64,
}

impl Registration {
    /// Marks this socket as `node`'s and closes the older sockets of that
    /// node. A node keeps one connection to us, so an older one is stale (a
    /// restarted peer whose FIN never came) and would hold a slot forever.
    /// Returns how many were closed.
    pub(crate) fn claim_node(&self, node: NodeId) -> usize {
        let mut state = self.sockets.lock();
        let mut closed = 0;
        for (id, entry) in state.open.iter_mut() {
            if *id != self.id && entry.node == node {
                let _ = entry.stream.shutdown(Shutdown::Both);
                entry.node = 0;
                closed += 1;
            }
        }
        if let Some(entry) = state.open.get_mut(&self.id) {
            entry.node = node;
        }
        closed
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sockets.lock().open.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn caps_closes_and_claims() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sockets = Sockets::new(2);
        let (mut client_a, server_a) = pair(&listener);
        let (mut client_b, server_b) = pair(&listener);
        let (_client_c, server_c) = pair(&listener);
        let a = sockets.register(&server_a).unwrap();
        let b = sockets.register(&server_b).unwrap();
        assert!(matches!(
            sockets.register(&server_c),
            Err(RegisterError::Full(2))
        ));

        assert_eq!(a.claim_node(7), 0);
        assert_eq!(b.claim_node(7), 1);
        let mut buf = [0u8; 1];
        assert_eq!(client_a.read(&mut buf).unwrap(), 0, "a was closed");

        drop(a);
        assert_eq!(sockets.len(), 1);
        sockets.close_all();
        assert_eq!(client_b.read(&mut buf).unwrap(), 0, "b was closed");
        assert!(matches!(
            sockets.register(&server_c),
            Err(RegisterError::Closed)
        ));
        drop(b);
        assert_eq!(sockets.len(), 0);
    }
}
