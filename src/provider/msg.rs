//! The DNS messages the RFC 2136 provider sends and reads: UPDATE requests, the answers to
//! them, and the SOA/NS/A/AAAA queries that find and check the zone's authoritative servers.
//!
//! Reading follows compression pointers (answers from BIND and Knot use them), with a bound on
//! how many it follows, and never panics on a short or hostile message: every accessor returns
//! `None`. The transport is one UDP exchange, repeated over TCP when the answer is truncated.
//! Nothing here knows about providers, services or epochs.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dns::name::{MAX_NAME, Name};
use crate::dns::wire::{CLASS_IN, rtype};

/// The UPDATE opcode (RFC 2136 1).
pub const OPCODE_UPDATE: u8 = 5;
/// The CLASS ANY and NONE of RFC 2136 2.5.
pub const CLASS_ANY: u16 = 255;

pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at.checked_add(1)?)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// The position after the (possibly compressed) name at `at`.
pub fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *b.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => {
                b.get(at + 1)?;
                return Some(at + 2);
            }
            l if l & 0xC0 != 0 => return None,
            l => at += 1 + l as usize,
        }
    }
}

/// Read the name at `at`, following compression pointers; returns it (lowercase) and the
/// position after it in the message.
pub fn read_name(b: &[u8], at: usize) -> Option<(Name, usize)> {
    let mut wire = Vec::with_capacity(32);
    let mut pos = at;
    let mut after = None;
    let mut jumps = 0;
    loop {
        let len = *b.get(pos)?;
        if len & 0xC0 == 0xC0 {
            let target = (u16_at(b, pos)? & 0x3FFF) as usize;
            after.get_or_insert(pos + 2);
            jumps += 1;
            if jumps > 64 || target >= b.len() {
                return None;
            }
            pos = target;
            continue;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        wire.push(len);
        if len == 0 {
            break;
        }
        wire.extend_from_slice(b.get(pos + 1..pos + 1 + len as usize)?);
        if wire.len() > MAX_NAME {
            return None;
        }
        pos += 1 + len as usize;
    }
    Some((Name::from_wire(&wire)?, after.unwrap_or(pos + 1)))
}

/// The position after the resource record at `at`.
pub fn skip_record(b: &[u8], at: usize) -> Option<usize> {
    let at = skip_name(b, at)?;
    let len = u16_at(b, at + 8)? as usize;
    let end = at + 10 + len;
    (end <= b.len()).then_some(end)
}

/// One resource record of a parsed message; `rdata` indexes the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    pub name: Name,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub rdata: Range<usize>,
}

/// A parsed answer: header fields and the records of each section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub id: u16,
    pub response: bool,
    pub opcode: u8,
    pub truncated: bool,
    pub authoritative: bool,
    pub rcode: u8,
    pub answers: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub additional: Vec<Rr>,
}

pub fn parse(b: &[u8]) -> Option<Parsed> {
    let id = u16_at(b, 0)?;
    let (f1, f2) = (*b.get(2)?, *b.get(3)?);
    let counts = [u16_at(b, 4)?, u16_at(b, 6)?, u16_at(b, 8)?, u16_at(b, 10)?];
    let mut at = 12;
    for _ in 0..counts[0] {
        at = skip_name(b, at)? + 4;
    }
    let mut sections: [Vec<Rr>; 3] = Default::default();
    for (i, section) in sections.iter_mut().enumerate() {
        for _ in 0..counts[i + 1] {
            let (name, p) = read_name(b, at)?;
            let rtype = u16_at(b, p)?;
            let class = u16_at(b, p + 2)?;
            let ttl = u32_at(b, p + 4)?;
            let len = u16_at(b, p + 8)? as usize;
            let rdata = p + 10..p + 10 + len;
            if rdata.end > b.len() {
                return None;
            }
            at = rdata.end;
            section.push(Rr { name, rtype, class, ttl, rdata });
        }
    }
    let [answers, authority, additional] = sections;
    Some(Parsed {
        id,
        response: f1 & 0x80 != 0,
        opcode: (f1 >> 3) & 0x0F,
        truncated: f1 & 0x02 != 0,
        authoritative: f1 & 0x04 != 0,
        rcode: f2 & 0x0F,
        answers,
        authority,
        additional,
    })
}

/// The address in an A or AAAA record.
pub fn address(b: &[u8], rr: &Rr) -> Option<IpAddr> {
    let data = b.get(rr.rdata.clone())?;
    match (rr.rtype, data.len()) {
        (rtype::A, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(data).ok()?)),
        (rtype::AAAA, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(data).ok()?)),
        _ => None,
    }
}

/// The first name in a record's RDATA (the target of NS, the MNAME of SOA).
pub fn rdata_name(b: &[u8], rr: &Rr) -> Option<Name> {
    read_name(b, rr.rdata.start).map(|(n, _)| n).filter(|_| rr.rdata.start < rr.rdata.end)
}

/// A query for `name`/`qtype` with `id`, recursion not desired.
pub fn query(id: u16, name: &Name, qtype: u16) -> Vec<u8> {
    crate::dns::client::build_query(id, name, qtype)
}

/// One change of an UPDATE's update section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Delete every record of `rtype` at `name` (RFC 2136 2.5.2).
    DeleteRrset { name: Name, rtype: u16 },
    /// Add an address record (A for IPv4, AAAA for IPv6).
    Add { name: Name, ttl: u32, address: IpAddr },
}

/// An UPDATE of `zone` with `changes`, applied atomically by the server (RFC 2136 3.4), no
/// prerequisites.
pub fn update(id: u16, zone: &Name, changes: &[Change]) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + changes.len() * 40);
    m.extend_from_slice(&id.to_be_bytes());
    m.push(OPCODE_UPDATE << 3);
    m.push(0);
    m.extend_from_slice(&1u16.to_be_bytes()); // ZOCOUNT
    m.extend_from_slice(&0u16.to_be_bytes()); // PRCOUNT
    m.extend_from_slice(&(changes.len() as u16).to_be_bytes()); // UPCOUNT
    m.extend_from_slice(&0u16.to_be_bytes()); // ADCOUNT
    m.extend_from_slice(zone.wire());
    m.extend_from_slice(&rtype::SOA.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    for c in changes {
        match c {
            Change::DeleteRrset { name, rtype } => {
                m.extend_from_slice(name.wire());
                m.extend_from_slice(&rtype.to_be_bytes());
                m.extend_from_slice(&CLASS_ANY.to_be_bytes());
                m.extend_from_slice(&0u32.to_be_bytes());
                m.extend_from_slice(&0u16.to_be_bytes());
            }
            Change::Add { name, ttl, address } => {
                m.extend_from_slice(name.wire());
                let (t, data): (u16, Vec<u8>) = match address {
                    IpAddr::V4(a) => (rtype::A, a.octets().to_vec()),
                    IpAddr::V6(a) => (rtype::AAAA, a.octets().to_vec()),
                };
                m.extend_from_slice(&t.to_be_bytes());
                m.extend_from_slice(&CLASS_IN.to_be_bytes());
                m.extend_from_slice(&ttl.to_be_bytes());
                m.extend_from_slice(&(data.len() as u16).to_be_bytes());
                m.extend_from_slice(&data);
            }
        }
    }
    m
}

/// Send `msg` to `server` over UDP and return the answer with the same ID; when it comes back
/// truncated, ask again over TCP. Waits at most `timeout` for each.
pub async fn exchange(server: SocketAddr, msg: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let id = u16_at(msg, 0).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "message too short"))?;
    let bind: SocketAddr = if server.is_ipv4() { (std::net::Ipv4Addr::UNSPECIFIED, 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    sock.send(msg).await?;
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + timeout;
    let no_answer = || io::Error::new(io::ErrorKind::TimedOut, format!("no answer from {server} within {}", humantime::format_duration(timeout)));
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await.map_err(|_| no_answer())??;
        if u16_at(&buf[..n], 0) != Some(id) || buf.get(2).is_none_or(|f| f & 0x80 == 0) {
            continue;
        }
        if buf[2] & 0x02 == 0 {
            buf.truncate(n);
            return Ok(buf);
        }
        break;
    }
    tokio::time::timeout(timeout, exchange_tcp(server, msg)).await.map_err(|_| no_answer())?
}

async fn exchange_tcp(server: SocketAddr, msg: &[u8]) -> io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(server).await?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    s.write_all(&out).await?;
    let len = s.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Ask `server` for `name`/`qtype` (not signed) and parse the answer.
pub async fn ask(server: SocketAddr, name: &Name, qtype: u16, timeout: Duration) -> Result<(Vec<u8>, Parsed), String> {
    let id: u16 = rand::random();
    let bytes = exchange(server, &query(id, name, qtype), timeout).await.map_err(|e| format!("{server}: {e}"))?;
    let parsed = parse(&bytes).ok_or_else(|| format!("{server} sent a malformed answer"))?;
    Ok((bytes, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::parse_absolute(s).unwrap()
    }

    #[test]
    fn update_messages_parse_with_hickory() {
        use hickory_proto::op::{Message, OpCode};
        let changes = [
            Change::DeleteRrset { name: n("www.example.test"), rtype: rtype::A },
            Change::DeleteRrset { name: n("www.example.test"), rtype: rtype::AAAA },
            Change::Add { name: n("www.example.test"), ttl: 30, address: "2001:db8::3".parse().unwrap() },
        ];
        let m = Message::from_vec(&update(7, &n("example.test"), &changes)).expect("hickory parses our UPDATE");
        assert_eq!(m.metadata.op_code, OpCode::Update);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.authorities.len(), 3, "the update section is the third section");
        assert_eq!(m.authorities[2].ttl, 30);
    }

    #[test]
    fn names_are_read_through_pointers_and_loops_are_refused() {
        // "example.test" at 12, then "www" + pointer to 12.
        let mut b = vec![0u8; 12];
        b.extend_from_slice(n("example.test").wire());
        b.extend_from_slice(&[3, b'w', b'w', b'w', 0xC0, 12]);
        let (name, after) = read_name(&b, 26).unwrap();
        assert_eq!((name.to_string().as_str(), after), ("www.example.test.", 32));
        let looped = [0u8, 0, 0, 0, 0xC0, 4];
        assert!(read_name(&looped, 4).is_none());
        assert!(parse(&[1, 2, 3]).is_none());
    }
}
