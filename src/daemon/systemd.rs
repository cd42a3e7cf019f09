//! systemd integration: `sd_notify` over `$NOTIFY_SOCKET` (a unix datagram socket), written
//! here in a few lines instead of a dependency.
//!
//! The daemon sends `READY=1` once its listeners are bound and the core runs (the unit is
//! `Type=notify`), `WATCHDOG=1` while the core loop's heartbeat is fresh (so a wedged core is
//! restarted by systemd after `WatchdogSec=`), and `STOPPING=1` on shutdown. Without
//! `$NOTIFY_SOCKET` (not under systemd, or in tests) every call is a no-op. A failed send is
//! logged once at debug level and never stops the daemon.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where to send notifications.
#[derive(Debug, Clone)]
pub struct Notify {
    socket: NotifySocket,
}

#[derive(Debug, Clone)]
enum NotifySocket {
    Path(PathBuf),
    /// Linux abstract namespace (`@name` in the variable).
    Abstract(Vec<u8>),
}

impl Notify {
    /// From `$NOTIFY_SOCKET`; `None` when it is unset or empty.
    pub fn from_env() -> Option<Notify> {
        let raw = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(raw.as_os_str());
        let socket = match bytes {
            [] => return None,
            [b'@', rest @ ..] => NotifySocket::Abstract(rest.to_vec()),
            _ => NotifySocket::Path(PathBuf::from(raw)),
        };
        Some(Notify { socket })
    }

    /// Send one message (`READY=1`, `WATCHDOG=1`, `STATUS=...`).
    pub fn send(&self, msg: &str) -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        match &self.socket {
            NotifySocket::Path(p) => sock.send_to(msg.as_bytes(), p)?,
            NotifySocket::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(msg.as_bytes(), &addr)?
            }
        };
        Ok(())
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, when it is set for this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        && pid != std::process::id()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_on_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notify {
            socket: NotifySocket::Path(path),
        };
        n.send("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
    }

    #[test]
    fn messages_arrive_on_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("understudy-test-{}", std::process::id());
        let server = UnixDatagram::bind_addr(
            &std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap(),
        )
        .unwrap();
        let n = Notify {
            socket: NotifySocket::Abstract(name.into_bytes()),
        };
        n.send("WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let n = Notify {
            socket: NotifySocket::Path("/nonexistent/understudy/notify.sock".into()),
        };
        assert!(n.send("READY=1").is_err());
    }
}
