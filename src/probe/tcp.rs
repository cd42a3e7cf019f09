//! TCP probe: a check passes when a TCP connection to the target can be opened.
//!
//! The connection is closed normally (FIN, no `SO_LINGER` tricks) as soon as it is established;
//! nothing is sent or read. It must not retry, keep connections around or decide health: a
//! refused or unreachable target is one failed check, reported with the operating system's words;
//! a failure on the monitor's side (out of descriptors, no route from the monitor) is a checker
//! error instead (`checker.rs`).
//! The timeout is the scheduler's job.

use std::io;
use std::net::SocketAddr;

use super::{CheckFuture, Probe, Verdict};

/// Connects to one address.
#[derive(Debug, Clone)]
pub struct TcpProbe {
    addr: SocketAddr,
}

impl TcpProbe {
    pub fn new(addr: SocketAddr) -> Self {
        TcpProbe { addr }
    }
}

impl Probe for TcpProbe {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            match tokio::net::TcpStream::connect(self.addr).await {
                // Dropping the stream closes it.
                Ok(_stream) => Verdict::pass("connected"),
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
}
