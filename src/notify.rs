//! systemd's service notification protocol (`sd_notify(3)`): one datagram
//! per state change to the socket named in `$NOTIFY_SOCKET` — a path, or
//! an abstract name written with a leading `@`. Without the variable (not
//! started by systemd with `Type=notify`) every call does nothing.
//! Best effort: a failed send is logged and otherwise ignored, as
//! libsystemd's does.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use log::debug;

/// Where systemd listens, if it does.
pub struct Notifier {
    target: Option<SocketAddr>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; an empty or unusable value disables it.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|raw| {
            let raw = raw.to_string_lossy().into_owned();
            let parsed = match raw.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
                None if raw.starts_with('/') => SocketAddr::from_pathname(&raw),
                None => return None,
            };
            parsed
                .map_err(|e| debug!("NOTIFY_SOCKET={raw:?} is unusable: {e}"))
                .ok()
        });
        Notifier { target }
    }

    /// Sends `state`: newline-separated `KEY=value` lines such as
    /// `READY=1` or `STATUS=leader of term 3`.
    pub fn send(&self, state: &str) {
        let Some(target) = &self.target else {
            return;
        };
        let sent = UnixDatagram::unbound()
            .and_then(|socket| socket.send_to_addr(state.as_bytes(), target));
        if let Err(e) = sent {
            debug!("cannot notify systemd ({state:?}): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("ticketd-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier {
            target: SocketAddr::from_pathname(&path).ok(),
        };
        notifier.send("READY=1\nSTATUS=up");
        let mut buffer = [0u8; 64];
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1\nSTATUS=up");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_a_socket_nothing_happens() {
        Notifier { target: None }.send("READY=1");
    }
}
