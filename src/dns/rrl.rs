//! Response rate limiting (RRL) for UDP answers, in the manner of BIND's and Knot's.
//!
//! A spoofed-source flood turns an authoritative server into an amplifier aimed at the
//! spoofed address. RRL caps how many *identical* responses go to one client network: each
//! (client prefix, response class) pair has an account that earns `rate` credits a second (never
//! more than `rate` in hand) and pays one per response. While the account is negative the
//! response is not sent as is: every `slip`-th one goes out truncated (TC=1, no records), so a
//! real client behind the prefix retries over TCP and still gets its answer, and the others are
//! dropped. The account never sinks below `-rate x window`, so a client that stops flooding is
//! answered again at most `window` seconds later (BIND's semantics).
//!
//! - **Client prefix**: /24 for IPv4, /56 for IPv6.
//! - **Response class**: a positive answer or NODATA is keyed by its name and type; NXDOMAIN by
//!   the zone (so random names under one zone share an account); errors (REFUSED, FORMERR,
//!   NOTIMP, SERVFAIL...) by the prefix alone.
//! - **Table**: a fixed array of [`BUCKETS`] atomic words hashed (with a random per-process
//!   seed) by prefix and class; each word packs a 16-bit tag, the second of its last update and
//!   the balance, and is updated with one compare-and-swap. Two keys that land on one bucket
//!   take it over from each other (the tag differs), which can only let more through, never
//!   limit an innocent client harder than its own traffic does.
//! - **Slip** counts per worker thread (a plain counter the worker owns), not per account.
//!
//! This module allocates nothing and takes no lock per query: [`Rrl::verdict`] reads the reply
//! bytes the handler wrote, hashes, and does one atomic compare-and-swap loop. It sends
//! nothing and never changes an answer except through [`slip`]. TCP is never limited (a TCP
//! client has proved its address).

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::config::RrlConfig;

/// Accounts in the table (a power of two; 256 KiB).
pub const BUCKETS: usize = 1 << 15;

const BAL_BITS: u32 = 24;
const BAL_OFFSET: i64 = 1 << (BAL_BITS - 1);
const BAL_MASK: u64 = (1 << BAL_BITS) - 1;
const SEC_BITS: u32 = 24;
const SEC_MASK: u64 = (1 << SEC_BITS) - 1;
/// The largest `rate x window` the packing holds (the validator enforces it).
pub const MAX_DEBT: u64 = (1 << (BAL_BITS - 1)) - 1;

/// What to do with one UDP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send it truncated (see [`slip`]).
    Slip,
    Drop,
}

/// The shared limiter: one per server, read by every UDP worker.
pub struct Rrl {
    buckets: Box<[AtomicU64]>,
    rate: i64,
    floor: i64,
    slip: u32,
    loopback: bool,
    seed: u64,
    base: Instant,
    dropped: AtomicU64,
    slipped: AtomicU64,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RrlStats {
    /// Responses not sent.
    pub dropped: u64,
    /// Responses sent truncated instead.
    pub slipped: u64,
}

impl Rrl {
    pub fn new(cfg: &RrlConfig) -> Rrl {
        let rate = i64::from(cfg.rate.max(1));
        let window = cfg.window.as_secs().max(1) as i64;
        Rrl {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            rate,
            floor: -(rate * window).min(MAX_DEBT as i64),
            slip: cfg.slip,
            loopback: cfg.loopback,
            seed: std::collections::hash_map::RandomState::new().build_hasher().finish(),
            base: Instant::now(),
            dropped: AtomicU64::new(0),
            slipped: AtomicU64::new(0),
        }
    }

    /// Seconds since the limiter was made (the clock [`Rrl::verdict`] expects).
    pub fn now_secs(&self) -> u32 {
        self.base.elapsed().as_secs() as u32
    }

    pub fn stats(&self) -> RrlStats {
        RrlStats { dropped: self.dropped.load(Ordering::Relaxed), slipped: self.slipped.load(Ordering::Relaxed) }
    }

    /// Decide about `reply` (a complete response the handler wrote) to `client` at second
    /// `now`. `slip_count` is the calling worker's own counter of limited responses.
    pub fn verdict(&self, client: IpAddr, reply: &[u8], now: u32, slip_count: &mut u32) -> Verdict {
        if !self.loopback && client.is_loopback() {
            return Verdict::Send;
        }
        let h = self.key(client, reply);
        let bucket = &self.buckets[(h as usize) & (BUCKETS - 1)];
        let tag = (h >> 48) | 1;
        let now = u64::from(now) & SEC_MASK;
        let mut old = bucket.load(Ordering::Relaxed);
        let limited = loop {
            let (otag, osec, obal) = unpack(old);
            let bal = if otag != tag {
                self.rate
            } else {
                let elapsed = now.wrapping_sub(osec) & SEC_MASK;
                (obal + (elapsed as i64).saturating_mul(self.rate)).min(self.rate)
            };
            let bal = bal - 1;
            let new = pack(tag, now, bal.max(self.floor));
            match bucket.compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break bal < 0,
                Err(cur) => old = cur,
            }
        };
        if !limited {
            return Verdict::Send;
        }
        *slip_count = slip_count.wrapping_add(1);
        if self.slip != 0 && slip_count.is_multiple_of(self.slip) {
            self.slipped.fetch_add(1, Ordering::Relaxed);
            Verdict::Slip
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            Verdict::Drop
        }
    }

    /// Hash of (client prefix, response class) read from the reply bytes.
    fn key(&self, client: IpAddr, reply: &[u8]) -> u64 {
        let mut h = Fnv(self.seed ^ 0xcbf2_9ce4_8422_2325);
        match client {
            IpAddr::V4(a) => {
                h.byte(4);
                h.bytes(&a.octets()[..3]);
            }
            IpAddr::V6(a) => {
                h.byte(6);
                h.bytes(&a.octets()[..7]);
            }
        }
        let rc = reply.get(3).map_or(0, |b| b & 0x0F);
        let qdcount = u16::from_be_bytes([reply.get(4).copied().unwrap_or(0), reply.get(5).copied().unwrap_or(0)]);
        let qend = if qdcount == 1 { name_end(reply, 12) } else { None };
        match (rc, qend) {
            // NOERROR (an answer or NODATA): the name and type asked.
            (0, Some(end)) => {
                h.byte(b'A');
                for &b in &reply[12..end] {
                    h.byte(b.to_ascii_lowercase());
                }
                h.bytes(reply.get(end..end + 2).unwrap_or_default());
            }
            // NXDOMAIN: the zone, which the SOA in the authority section names with a
            // pointer into the question.
            (3, Some(end)) => {
                h.byte(b'N');
                let nscount = u16::from_be_bytes([reply[8], reply[9]]);
                let soa = reply.get(end + 4..end + 6).filter(|p| nscount == 1 && p[0] & 0xC0 == 0xC0);
                if let Some(p) = soa {
                    let at = (usize::from(p[0] & 0x3F) << 8) | usize::from(p[1]);
                    if at >= 12 && at < end {
                        for &b in &reply[at..end] {
                            h.byte(b.to_ascii_lowercase());
                        }
                    }
                }
            }
            _ => h.byte(b'E'),
        }
        h.finish()
    }
}

/// Turn a response into its truncated form: the header with TC=1 and no records, and the
/// question (a client that gets it retries over TCP).
pub fn slip(reply: &mut Vec<u8>) {
    if reply.len() < 12 {
        return;
    }
    let qdcount = u16::from_be_bytes([reply[4], reply[5]]);
    let end = if qdcount == 1 { name_end(reply, 12).map(|e| e + 4).filter(|&e| e <= reply.len()) } else { None };
    match end {
        Some(e) => reply.truncate(e),
        None => {
            reply.truncate(12);
            reply[4..6].copy_from_slice(&[0, 0]);
        }
    }
    reply[2] |= 0x02;
    reply[6..12].copy_from_slice(&[0; 6]);
}

/// The offset just past an uncompressed name starting at `at` (the question's name).
fn name_end(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *b.get(at)? as usize;
        if len & 0xC0 != 0 {
            return None;
        }
        at += 1 + len;
        if len == 0 {
            return (at <= b.len()).then_some(at);
        }
    }
}

fn pack(tag: u64, sec: u64, bal: i64) -> u64 {
    (tag << 48) | ((sec & SEC_MASK) << BAL_BITS) | ((bal + BAL_OFFSET) as u64 & BAL_MASK)
}

fn unpack(w: u64) -> (u64, u64, i64) {
    (w >> 48, (w >> BAL_BITS) & SEC_MASK, (w & BAL_MASK) as i64 - BAL_OFFSET)
}

/// FNV-1a, seeded: small, fast on short keys, no allocation.
struct Fnv(u64);

impl Fnv {
    #[inline]
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    #[inline]
    fn bytes(&mut self, bs: &[u8]) {
        for &b in bs {
            self.byte(b);
        }
    }
    fn finish(&self) -> u64 {
        // Mix the high bits down: the index uses the low bits, the tag the high ones.
        let x = self.0;
        x ^ (x >> 29) ^ (x >> 47)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rrl(rate: u32, slip: u32, window: u64) -> Rrl {
        Rrl::new(&RrlConfig { rate, slip, window: Duration::from_secs(window), loopback: true })
    }

    /// A NOERROR answer for `name` (dotted) type A, with one answer record's worth of bytes.
    fn answer(name: &str, rcode: u8) -> Vec<u8> {
        let mut r = vec![0x12, 0x34, 0x84, rcode, 0, 1, 0, 1, 0, 0, 0, 0];
        for l in name.split('.') {
            r.push(l.len() as u8);
            r.extend_from_slice(l.as_bytes());
        }
        r.extend_from_slice(&[0, 0, 1, 0, 1]);
        r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 198, 18, 0, 2]);
        r
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Verdicts for `n` responses to `client` at second `now`.
    fn run(r: &Rrl, client: &str, reply: &[u8], now: u32, n: usize, slip: &mut u32) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for _ in 0..n {
            match r.verdict(ip(client), reply, now, slip) {
                Verdict::Send => c.0 += 1,
                Verdict::Slip => c.1 += 1,
                Verdict::Drop => c.2 += 1,
            }
        }
        c
    }

    #[test]
    fn rate_per_second_then_slip_and_drop() {
        let r = rrl(5, 2, 3);
        let www = answer("www.example.test", 0);
        let mut s = 0;
        assert_eq!(run(&r, "192.0.2.1", &www, 100, 15, &mut s), (5, 5, 5));
        assert_eq!(r.stats(), RrlStats { dropped: 5, slipped: 5 });
        // The same /24 shares the account; another /24 has its own.
        assert_eq!(run(&r, "192.0.2.200", &www, 100, 2, &mut s).0, 0);
        assert_eq!(run(&r, "192.0.3.1", &www, 100, 5, &mut s), (5, 0, 0));
        // Another name from the flooded prefix is a different response: answered.
        assert_eq!(run(&r, "192.0.2.1", &answer("mail.example.test", 0), 100, 1, &mut s), (1, 0, 0));
    }

    #[test]
    fn a_flood_is_remembered_for_the_window_then_forgiven() {
        let r = rrl(10, 0, 3);
        let www = answer("www.example.test", 0);
        let mut s = 0;
        // 1000 responses in one second: the account sinks to its floor, -rate x window = -30.
        run(&r, "198.51.100.7", &www, 50, 1000, &mut s);
        // One second later 10 credits come in: still -20, so nothing goes out.
        assert_eq!(run(&r, "198.51.100.7", &www, 51, 1, &mut s), (0, 0, 1));
        // Quiet until the window has passed: answered again, `rate` a second.
        assert_eq!(run(&r, "198.51.100.7", &www, 55, 12, &mut s), (10, 0, 2));
    }

    #[test]
    fn nxdomain_is_keyed_by_zone_and_errors_by_prefix() {
        let r = rrl(3, 0, 1);
        let mut s = 0;
        // NXDOMAIN answers for different names in one zone: one account (the SOA owner
        // points at "example.test" inside the question).
        let nx = |label: &str| {
            let mut a = answer(&format!("{label}.example.test"), 3);
            a.truncate(a.len() - 16);
            a[6..10].copy_from_slice(&[0, 0, 0, 1]);
            a.extend_from_slice(&[0xC0, 12 + 1 + label.len() as u8]);
            a
        };
        let sent: usize = ["a", "bb", "ccc", "dddd", "eeeee"].iter().map(|l| run(&r, "203.0.113.9", &nx(l), 7, 1, &mut s).0).sum();
        assert_eq!(sent, 3);
        // Errors: one account per prefix, whatever the name.
        let refused = |n: &str| {
            let mut a = answer(n, 5);
            a[6..8].copy_from_slice(&[0, 0]);
            a
        };
        let sent: usize = ["x.org", "y.org", "z.org", "w.org"].iter().map(|n| run(&r, "203.0.113.9", &refused(n), 7, 1, &mut s).0).sum();
        assert_eq!(sent, 3);
    }

    #[test]
    fn ipv6_clients_share_a_slash_56() {
        let r = rrl(2, 0, 1);
        let www = answer("www.example.test", 0);
        let mut s = 0;
        assert_eq!(run(&r, "2001:db8:0:ff::1", &www, 0, 1, &mut s).0, 1);
        assert_eq!(run(&r, "2001:db8:0:1::9", &www, 0, 2, &mut s).0, 1);
        assert_eq!(run(&r, "2001:db8:0:100::1", &www, 0, 2, &mut s).0, 2);
    }

    #[test]
    fn loopback_is_exempt_unless_asked() {
        let www = answer("www.example.test", 0);
        let mut s = 0;
        let off = Rrl::new(&RrlConfig { rate: 1, slip: 0, window: Duration::from_secs(1), loopback: false });
        assert_eq!(run(&off, "127.0.0.5", &www, 0, 10, &mut s).0, 10);
        assert_eq!(run(&off, "192.0.2.1", &www, 0, 10, &mut s).0, 1);
        assert_eq!(run(&rrl(1, 0, 1), "127.0.0.5", &www, 0, 10, &mut s).0, 1);
    }

    #[test]
    fn slipped_reply_is_the_question_with_tc() {
        let mut a = answer("www.example.test", 0);
        let qlen = 12 + 18 + 4;
        slip(&mut a);
        assert_eq!(a.len(), qlen);
        assert_eq!(a[2] & 0x02, 0x02);
        assert_eq!(&a[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        let mut formerr = vec![1, 2, 0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        slip(&mut formerr);
        assert_eq!(formerr.len(), 12);
        let mut garbage = vec![1, 2, 0x80, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0x3F];
        slip(&mut garbage);
        assert_eq!(garbage.len(), 12);
    }

    #[test]
    fn packing_round_trips() {
        for (tag, sec, bal) in [(1, 0, 0), (0xFFFF, SEC_MASK, -(MAX_DEBT as i64)), (0x8001, 12345, 20), (3, 7, -1)] {
            assert_eq!(unpack(pack(tag, sec, bal)), (tag, sec, bal));
        }
    }
}
