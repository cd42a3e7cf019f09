//! Checker errors: telling the monitor's own failures apart from the target's.
//!
//! A check that cannot even be attempted because of the monitor (out of file descriptors, out
//! of socket buffers or memory, no local address or port to send from, no route out of the
//! monitor) says nothing about the target. Counting it as a failure would let a sick monitor
//! fail over a healthy primary (every target fails at once on EMFILE); counting it as a pass
//! would hide a dead one. So it is neither: health ignores it, the core counts it
//! (`understudy_checker_errors_total`), records a rate-limited `checker_error` event and raises
//! a notice.
//!
//! # Which errors are the monitor's
//! - `EMFILE`, `ENFILE` (file descriptors), `ENOBUFS`, `ENOMEM` (kernel buffers, memory): always
//!   the monitor's; nothing on the wire has happened yet.
//! - `EADDRNOTAVAIL` on connect: no local address or ephemeral port to connect from (port
//!   exhaustion, a source address that went away): the monitor's.
//! - `ENETUNREACH`, `EHOSTUNREACH`: **either**. They come from the monitor's own routing table
//!   (no route at all, an `unreachable` route) *or* from the network: a router's ICMP
//!   unreachable, or a neighbour (ARP/NDP) that never answers, which is exactly what a dead
//!   target on the same LAN looks like. We ask the kernel for a route to the target without
//!   sending anything (connecting a UDP socket is a pure route lookup): when the monitor has no
//!   route, it is a checker error ("no route from this monitor"); when it has one, the
//!   unreachable came from the path to the target, and the check failed. If the lookup itself
//!   cannot be made, the check counts as failed, as before this module existed.
//!
//! Everything else (refused, reset, timed out, TLS, HTTP status) is the target's.
//!
//! It must not retry, sleep or send anything; classification is pure apart from the route
//! lookup, which is a local system call.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// Why a failed connection is the monitor's fault, or `None` when it is the target's.
pub fn monitor_fault(e: &io::Error, dest: SocketAddr) -> Option<String> {
    classify(e, dest, has_route)
}

/// [`monitor_fault`] with the route lookup as a parameter (`Some(has_route)`, or `None` when it
/// cannot be made), so the rule can be tested for any routing table.
pub(crate) fn classify(e: &io::Error, dest: SocketAddr, route: impl FnOnce(SocketAddr) -> Option<bool>) -> Option<String> {
    let errno = e.raw_os_error()?;
    let what = match errno {
        libc::EMFILE => "the monitor is out of file descriptors (EMFILE)",
        libc::ENFILE => "the system is out of file descriptors (ENFILE)",
        libc::ENOBUFS => "the monitor is out of socket buffer space (ENOBUFS)",
        libc::ENOMEM => "the monitor is out of memory (ENOMEM)",
        libc::EADDRNOTAVAIL => "the monitor has no local address or port to connect from (EADDRNOTAVAIL)",
        libc::ENETUNREACH | libc::EHOSTUNREACH => {
            return match route(dest) {
                Some(false) => Some(format!(
                    "checker error: no route from this monitor to {} ({})",
                    dest.ip(),
                    if errno == libc::ENETUNREACH { "ENETUNREACH" } else { "EHOSTUNREACH" }
                )),
                Some(true) | None => None,
            };
        }
        _ => return None,
    };
    Some(format!("checker error: {what}"))
}

/// Whether the monitor's routing table has a usable route to `dest` (no packet is sent).
/// `None` when the lookup cannot be made (no socket: then the caller cannot tell).
pub(crate) fn has_route(dest: SocketAddr) -> Option<bool> {
    let local: SocketAddr = match dest.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local).ok()?;
    let port = if dest.port() == 0 { 9 } else { dest.port() };
    match sock.connect(SocketAddr::new(dest.ip(), port)) {
        Ok(()) => Some(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENETUNREACH | libc::EHOSTUNREACH)) => Some(false),
        // EACCES (a `prohibit` route, a broadcast address) and the like: not a missing route.
        Err(_) => Some(true),
    }
}

/// How often a target's checker errors become an event.
pub const REPORT_EVERY_US: u64 = 60_000_000;

/// Rate limit for checker-error events of one target: the first one at once, then at most one
/// per [`REPORT_EVERY_US`], each carrying how many were not reported in between.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Throttle {
    last_us: Option<u64>,
    suppressed: u64,
    /// A checker error has been reported and no normal result has come since.
    active: bool,
}

impl Throttle {
    /// A checker error at `now_us`: `Some(suppressed since the last report)` when it should be
    /// reported, `None` when it is only counted.
    pub fn admit(&mut self, now_us: u64) -> Option<u64> {
        match self.last_us {
            Some(last) if now_us.saturating_sub(last) < REPORT_EVERY_US => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            _ => {
                self.last_us = Some(now_us);
                self.active = true;
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// A normal result (pass or fail) came in: `Some(errors not reported yet)` when checker
    /// errors had been reported, so their end should be too; `None` otherwise.
    pub fn recovered(&mut self) -> Option<u64> {
        if !std::mem::take(&mut self.active) {
            return None;
        }
        self.last_us = None;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    const DEST: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11)), 80);

    #[test]
    fn resource_exhaustion_on_the_monitor_is_a_checker_error() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM, libc::EADDRNOTAVAIL] {
            let why = classify(&err(errno), DEST, |_| panic!("no route lookup needed")).unwrap_or_default();
            assert!(why.starts_with("checker error: "), "errno {errno}: {why:?}");
        }
    }

    #[test]
    fn what_the_target_or_its_network_says_is_a_failure() {
        for errno in [libc::ECONNREFUSED, libc::ECONNRESET, libc::ETIMEDOUT, libc::ECONNABORTED, libc::EPIPE] {
            assert_eq!(classify(&err(errno), DEST, |_| Some(false)), None, "errno {errno}");
        }
        // Not an OS error at all (a TLS failure wrapped in io::Error, say).
        assert_eq!(classify(&io::Error::other("tls"), DEST, |_| Some(false)), None);
    }

    #[test]
    fn unreachable_is_the_monitors_only_when_the_monitor_has_no_route() {
        for errno in [libc::ENETUNREACH, libc::EHOSTUNREACH] {
            // An ICMP unreachable from a router, or a neighbour that does not answer: the path
            // to the target is broken, which is what checks are for.
            assert_eq!(classify(&err(errno), DEST, |_| Some(true)), None);
            // The monitor's own table has nothing for it.
            let why = classify(&err(errno), DEST, |d| {
                assert_eq!(d, DEST);
                Some(false)
            });
            assert!(why.as_deref().unwrap_or_default().starts_with("checker error: no route from this monitor to 198.18.0.11"), "{why:?}");
            // Cannot tell: it stays a failure, as it always was.
            assert_eq!(classify(&err(errno), DEST, |_| None), None);
        }
    }

    #[test]
    fn checker_errors_are_reported_once_a_minute_with_the_count_in_between() {
        let mut t = Throttle::default();
        assert_eq!(t.admit(1_000), Some(0), "the first at once");
        for i in 1..=9u64 {
            assert_eq!(t.admit(1_000 + i * 1_000_000), None, "within the minute");
        }
        assert_eq!(t.admit(1_000 + REPORT_EVERY_US), Some(9), "a minute later, with the nine in between");
        assert_eq!(t.admit(2_000 + REPORT_EVERY_US), None);
        assert_eq!(t.admit(u64::MAX), Some(1));
        assert_eq!(t.recovered(), Some(0), "the end is reported once");
        assert_eq!(t.recovered(), None);
        assert_eq!(t.admit(u64::MAX), Some(0), "a new episode is reported at once");
        assert_eq!(t.admit(u64::MAX), None);
        assert_eq!(t.recovered(), Some(1), "with the one that was only counted");
    }

    #[test]
    fn the_route_lookup_sees_loopback() {
        assert_eq!(has_route("127.0.0.9:80".parse().unwrap()), Some(true));
        assert_eq!(has_route("127.0.0.9:0".parse().unwrap()), Some(true));
    }
}
