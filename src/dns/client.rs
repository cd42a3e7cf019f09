//! A minimal DNS client for checking our own answers from the outside (used by
//! `DnsActuator::verify`): one UDP query, the addresses in the answer.
//!
//! It speaks only what verification needs (a question, A/AAAA answers, the rcode) and is not a
//! resolver: no retries beyond the caller's, no caching. [`resolve`] asks a recursive server
//! (recursion desired), the way a drill's observing client looks a name up through a caching
//! resolver.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::name::Name;
use super::wire::rtype;

/// What our server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: u8,
    pub authoritative: bool,
    pub addresses: Vec<IpAddr>,
    /// TTL of the first address record.
    pub ttl: Option<u32>,
}

/// Build a query for `name`/`qtype` with `id`, RD clear.
pub fn build_query(id: u16, name: &Name, qtype: u16) -> Vec<u8> {
    build(id, name, qtype, false)
}

fn build(id: u16, name: &Name, qtype: u16, recursion_desired: bool) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + name.wire().len() + 4);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[if recursion_desired { 0x01 } else { 0 }, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(name.wire());
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *b.get(at)?;
        if len == 0 {
            return Some(at + 1);
        }
        if len & 0xC0 == 0xC0 {
            return Some(at + 2);
        }
        at += 1 + len as usize;
    }
}

/// Parse the addresses out of a response to a query with `id`.
pub fn parse_answer(id: u16, resp: &[u8]) -> Option<Answer> {
    if u16_at(resp, 0)? != id || resp.get(2)? & 0x80 == 0 {
        return None;
    }
    let rcode = resp.get(3)? & 0x0F;
    let authoritative = resp.get(2)? & 0x04 != 0;
    let qd = u16_at(resp, 4)?;
    let an = u16_at(resp, 6)?;
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(resp, at)? + 4;
    }
    let mut addresses = Vec::new();
    let mut ttl = None;
    for _ in 0..an {
        at = skip_name(resp, at)?;
        let t = u16_at(resp, at)?;
        let rr_ttl = u32::from_be_bytes(resp.get(at + 4..at + 8)?.try_into().ok()?);
        let len = u16_at(resp, at + 8)? as usize;
        let data = resp.get(at + 10..at + 10 + len)?;
        match (t, len) {
            (rtype::A, 4) => addresses.push(IpAddr::from(<[u8; 4]>::try_from(data).ok()?)),
            (rtype::AAAA, 16) => addresses.push(IpAddr::from(<[u8; 16]>::try_from(data).ok()?)),
            _ => {}
        }
        if matches!(t, rtype::A | rtype::AAAA) && ttl.is_none() {
            ttl = Some(rr_ttl);
        }
        at += 10 + len;
    }
    Some(Answer { rcode, authoritative, addresses, ttl })
}

/// Ask `server` over UDP, waiting at most `timeout`.
pub async fn query(server: SocketAddr, name: &Name, qtype: u16, timeout: Duration) -> io::Result<Answer> {
    ask(server, name, qtype, timeout, false).await
}

/// Look `host` up through the recursive server `server`: its first IPv4 address, else its first
/// IPv6 address.
pub async fn resolve(server: SocketAddr, host: &str, timeout: Duration) -> Result<IpAddr, String> {
    let name = Name::parse_absolute(host.trim_end_matches('.')).map_err(|e| format!("bad host name {host}: {e}"))?;
    for qtype in [rtype::A, rtype::AAAA] {
        let a = ask(server, &name, qtype, timeout, true).await.map_err(|e| format!("resolving {host} via {server}: {e}"))?;
        match a.rcode {
            0 => {
                if let Some(ip) = a.addresses.first() {
                    return Ok(*ip);
                }
            }
            3 => return Err(format!("{host}: NXDOMAIN from {server}")),
            r => return Err(format!("{host}: rcode {r} from {server}")),
        }
    }
    Err(format!("{host} has no address (asked {server})"))
}

async fn ask(server: SocketAddr, name: &Name, qtype: u16, timeout: Duration, recursion_desired: bool) -> io::Result<Answer> {
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0".parse().expect("literal") } else { "[::]:0".parse().expect("literal") };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    let id: u16 = rand::random();
    sock.send(&build(id, name, qtype, recursion_desired)).await?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer from {server} within {timeout:?}")))??;
        if let Some(a) = parse_answer(id, &buf[..n]) {
            return Ok(a);
        }
    }
}
