//! TCP probe: a check passes when a TCP connection to the target can be opened.
//!
//! Nothing is sent or read. By default (`close = "reset"`) the check does what HAProxy's TCP
//! check does: the socket has `TCP_QUICKACK` off, so when the target's SYN-ACK arrives the kernel
//! holds back the last ACK of the handshake (to piggyback it on data that never comes), and the
//! check, now connected, closes at once with a reset (`SO_LINGER` 0). The exchange is SYN,
//! SYN-ACK, RST: the target's kernel answered from its listening socket, which is what the check
//! asks, and drops the half-open connection on the RST, so the target's application never
//! accepts it, neither side keeps a TIME_WAIT socket (10,000 targets at 1 s would keep the
//! kernel's whole TIME_WAIT table full) and nobody processes a FIN exchange. (When the monitor
//! is too busy to close within the delayed-ACK time, 40 ms or more, the ACK goes out after all
//! and the target may accept a connection that is then reset.) `close = "fin"`
//! completes the handshake and closes normally, for a target that should see (or log) its
//! checks. It must not retry, keep connections around or decide health: a
//! refused or unreachable target is one failed check, reported with the operating system's words;
//! a failure on the monitor's side (out of descriptors, no route from the monitor) is a checker
//! error instead (`checker.rs`).
//! The timeout is the scheduler's job.

use std::io;
use std::net::SocketAddr;

use super::{CheckFuture, Probe, Verdict};
pub use crate::config::TcpClose;

/// Connects to one address.
#[derive(Debug, Clone)]
pub struct TcpProbe {
    addr: SocketAddr,
    close: TcpClose,
}

impl TcpProbe {
    /// A probe that closes with a reset (the default).
    pub fn new(addr: SocketAddr) -> Self {
        TcpProbe { addr, close: TcpClose::Reset }
    }

    /// A probe that closes the way `close` says.
    pub fn with_close(addr: SocketAddr, close: TcpClose) -> Self {
        TcpProbe { addr, close }
    }
}

impl TcpProbe {
    /// A connected stream; for `Reset` from a socket whose handshake ACK is held back.
    async fn connect(&self) -> io::Result<tokio::net::TcpStream> {
        let socket = if self.addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        if self.close == TcpClose::Reset {
            // Without it the check still passes and closes with a reset; only the ACK goes out.
            let _ = socket2::SockRef::from(&socket).set_tcp_quickack(false);
        }
        socket.connect(self.addr).await
    }
}

impl Probe for TcpProbe {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            match self.connect().await {
                Ok(stream) => {
                    // Dropping the stream closes it; with linger 0 the close is a reset. When the
                    // option cannot be set (it always can on a connected socket) the close is a
                    // FIN: the check has passed either way.
                    if self.close == TcpClose::Reset {
                        let _ = stream.set_zero_linger();
                    }
                    Verdict::pass("connected")
                }
                Err(e) => match super::checker::monitor_fault(&e, self.addr) {
                    Some(why) => Verdict::checker_error(why),
                    None => Verdict::fail(io_reason(&e)),
                },
            }
        })
    }

    fn hedge(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("tcp://{}", self.addr)
    }
}

/// A short reason for a failed connection: the common cases in lower case without the errno
/// (`connection refused`), anything else as the operating system says it.
pub(crate) fn io_reason(e: &io::Error) -> String {
    let short = match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::ConnectionReset => "connection reset",
        io::ErrorKind::ConnectionAborted => "connection aborted",
        io::ErrorKind::HostUnreachable => "host unreachable",
        io::ErrorKind::NetworkUnreachable => "network unreachable",
        io::ErrorKind::AddrNotAvailable => "address not available",
        io::ErrorKind::TimedOut => "connect timed out",
        _ => return e.to_string(),
    };
    short.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_errors_read_well() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(io_reason(&refused), "connection refused");
        let unreachable = io::Error::from_raw_os_error(libc::ENETUNREACH);
        assert_eq!(io_reason(&unreachable), "network unreachable");
        let other = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(io_reason(&other).contains("Too many open files"), "{}", io_reason(&other));
    }

    #[tokio::test]
    async fn connects_to_a_listener_and_fails_on_a_closed_port() {
        // Not 127.0.0.1: a connect from 127.0.0.1 to a free ephemeral port of 127.0.0.1 can pick
        // that same port as its source and "connect" to itself (TCP simultaneous open). For
        // 127.0.0.9 the kernel picks source 127.0.0.1, so a closed port is really refused.
        let listener = tokio::net::TcpListener::bind("127.0.0.9:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let probe = TcpProbe::new(addr);
        assert_eq!(probe.check().await, Verdict::pass("connected"));
        assert_eq!(probe.describe(), format!("tcp://{addr}"));
        // The closed port is bound without listening and stays bound for the whole test, so no
        // other process can take it (closing a listener and reusing its number would be a race
        // with everything else running on the machine).
        let closed = tokio::net::TcpSocket::new_v4().expect("socket");
        closed.bind("127.0.0.9:0".parse().expect("addr")).expect("bind");
        let closed_addr = closed.local_addr().expect("local addr");
        assert!(std::net::TcpListener::bind(closed_addr).is_err(), "nothing else can listen on the held port");
        let probe = TcpProbe::new(closed_addr);
        assert_eq!(probe.check().await, Verdict::fail("connection refused"));
        drop(listener);
        drop(closed);
    }

    /// What the target sees of a check: by default nothing its application can accept (SYN,
    /// SYN-ACK, RST: the handshake never completes); with `close = "fin"` a connection that it
    /// accepts and that ends in an orderly end of stream.
    #[tokio::test]
    async fn a_reset_check_never_reaches_the_targets_accept_queue_and_a_fin_check_does() {
        use std::task::Poll;
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.9:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        assert_eq!(TcpProbe::new(addr).close, TcpClose::Reset, "reset is the default");
        assert_eq!(TcpProbe::new(addr).check().await, Verdict::pass("connected"));
        assert_eq!(TcpProbe::with_close(addr, TcpClose::Fin).check().await, Verdict::pass("connected"));
        // On loopback each packet is handled within the system call that sends it, so both
        // checks are over for the target's kernel too: the queue holds the fin check alone.
        let (mut accepted, _) = tokio::time::timeout(std::time::Duration::from_secs(5), listener.accept()).await.expect("accepted in time").expect("accept");
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), accepted.read(&mut buf)).await.expect("the close arrives in time");
        assert!(matches!(read, Ok(0)), "the first connection in the queue is the fin check, closed normally: {read:?}");
        let more = std::future::poll_fn(|cx| Poll::Ready(listener.poll_accept(cx).map(|r| r.map(|(_, peer)| peer)))).await;
        assert!(more.is_pending(), "the reset check left nothing to accept: {more:?}");
    }
}
