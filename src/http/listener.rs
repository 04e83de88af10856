//! The HTTP listening socket, made here rather than by tiny_http so that
//! `TCP_NODELAY` is set on it: Linux copies it to every accepted socket,
//! and tiny_http never sets it, which costs a delayed ACK (~40 ms) per
//! response over about 1 KB on a keep-alive connection (DESIGN.md).

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `addr` with `SO_REUSEADDR` (a restarted node gets its port back
/// at once) and `TCP_NODELAY`.
///
/// # Errors
/// Resolution or bind errors.
pub fn bind(addr: &str) -> io::Result<TcpListener> {
    let address: SocketAddr = addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing")
    })?;
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
