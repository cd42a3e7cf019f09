//! DNS wire format for what we serve: record types, typed RDATA, and a message writer with
//! name compression.
//!
//! The writer is used when answers are *precomputed* (`table.rs`), not per query, so it favours
//! being obviously correct over being fast. It compresses owner names and the names inside the
//! RDATA of the RFC 1035 types (NS, CNAME, SOA, MX); names in SRV are never compressed
//! (RFC 2782). It does not parse anything: reading requests is `handler.rs`'s job.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::name::Name;

/// Record types we serve or recognise.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const HINFO: u16 = 13;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const TSIG: u16 = 250;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
    pub const CAA: u16 = 257;
}

/// The IN class.
pub const CLASS_IN: u16 = 1;

/// Response codes we send (the low four bits; BADVERS is extended, see `handler.rs`).
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
    pub const NOTAUTH: u8 = 9;
}

/// The data of one resource record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ns(Name),
    Cname(Name),
    Soa { mname: Name, rname: Name, serial: u32, refresh: u32, retry: u32, expire: u32, minimum: u32 },
    Mx { preference: u16, exchange: Name },
    /// One or more character-strings (each at most 255 bytes).
    Txt(Vec<Vec<u8>>),
    Srv { priority: u16, weight: u16, port: u16, target: Name },
    Caa { flags: u8, tag: Vec<u8>, value: Vec<u8> },
    Hinfo { cpu: Vec<u8>, os: Vec<u8> },
}

impl Rdata {
    pub fn rtype(&self) -> u16 {
        match self {
            Rdata::A(_) => rtype::A,
            Rdata::Aaaa(_) => rtype::AAAA,
            Rdata::Ns(_) => rtype::NS,
            Rdata::Cname(_) => rtype::CNAME,
            Rdata::Soa { .. } => rtype::SOA,
            Rdata::Mx { .. } => rtype::MX,
            Rdata::Txt(_) => rtype::TXT,
            Rdata::Srv { .. } => rtype::SRV,
            Rdata::Caa { .. } => rtype::CAA,
            Rdata::Hinfo { .. } => rtype::HINFO,
        }
    }

    /// The in-zone name whose addresses belong in the additional section (RFC 1035 3.3.x,
    /// RFC 2782), if any.
    pub fn additional_target(&self) -> Option<&Name> {
        match self {
            Rdata::Ns(n) => Some(n),
            Rdata::Mx { exchange, .. } => Some(exchange),
            Rdata::Srv { target, .. } => Some(target),
            _ => None,
        }
    }
}

/// A message being built, remembering where names were written so later names can point at
/// them.
pub struct Writer {
    pub buf: Vec<u8>,
    /// (offset in the message, lowercase wire suffix written there).
    names: Vec<(u16, Vec<u8>)>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer { buf: Vec::with_capacity(512), names: Vec::new() }
    }

    /// Declare that `name` (lowercase wire) sits at `offset` in the message although this
    /// writer did not write it (the question, which is copied from the request at run time).
    pub fn assume_name_at(&mut self, offset: usize, name: &Name) {
        self.record_suffixes(offset, name.wire());
    }

    fn record_suffixes(&mut self, offset: usize, wire: &[u8]) {
        let mut i = 0;
        while i < wire.len() && wire[i] != 0 {
            if offset + i < 0x4000 {
                self.names.push(((offset + i) as u16, wire[i..].to_vec()));
            }
            i += 1 + wire[i] as usize;
        }
    }

    /// Write a name, compressing it against names already in the message when `compress`.
    pub fn name(&mut self, name: &Name, compress: bool) {
        let wire = name.wire();
        let start = self.buf.len();
        let mut i = 0;
        while compress && wire[i] != 0 {
            if let Some(&(ptr, _)) = self.names.iter().find(|(_, s)| s.as_slice() == &wire[i..]) {
                self.buf.extend_from_slice(&wire[..i]);
                self.buf.extend_from_slice(&(0xC000 | ptr).to_be_bytes());
                // The labels written literally start suffixes later names may point at.
                let mut j = 0;
                while j < i {
                    if start + j < 0x4000 {
                        self.names.push(((start + j) as u16, wire[j..].to_vec()));
                    }
                    j += 1 + wire[j] as usize;
                }
                return;
            }
            i += 1 + wire[i] as usize;
        }
        self.buf.extend_from_slice(wire);
        self.record_suffixes(start, wire);
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn char_string(&mut self, s: &[u8]) {
        let s = &s[..s.len().min(255)];
        self.buf.push(s.len() as u8);
        self.buf.extend_from_slice(s);
    }

    /// Write one resource record.
    pub fn record(&mut self, owner: &Name, ttl: u32, rdata: &Rdata) {
        self.name(owner, true);
        self.u16(rdata.rtype());
        self.u16(CLASS_IN);
        self.u32(ttl);
        let len_at = self.buf.len();
        self.u16(0);
        match rdata {
            Rdata::A(ip) => self.buf.extend_from_slice(&ip.octets()),
            Rdata::Aaaa(ip) => self.buf.extend_from_slice(&ip.octets()),
            Rdata::Ns(n) | Rdata::Cname(n) => self.name(n, true),
            Rdata::Soa { mname, rname, serial, refresh, retry, expire, minimum } => {
                self.name(mname, true);
                self.name(rname, true);
                for v in [*serial, *refresh, *retry, *expire, *minimum] {
                    self.u32(v);
                }
            }
            Rdata::Mx { preference, exchange } => {
                self.u16(*preference);
                self.name(exchange, true);
            }
            Rdata::Txt(strings) => {
                if strings.is_empty() {
                    self.char_string(b"");
                }
                for s in strings {
                    self.char_string(s);
                }
            }
            Rdata::Srv { priority, weight, port, target } => {
                self.u16(*priority);
                self.u16(*weight);
                self.u16(*port);
                self.name(target, false);
            }
            Rdata::Caa { flags, tag, value } => {
                self.u8(*flags);
                self.char_string(tag);
                self.buf.extend_from_slice(value);
            }
            Rdata::Hinfo { cpu, os } => {
                self.char_string(cpu);
                self.char_string(os);
            }
        }
        let rdlen = (self.buf.len() - len_at - 2) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    }
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::parse_absolute(s).unwrap()
    }

    #[test]
    fn compresses_against_the_question_and_earlier_names() {
        let mut w = Writer::new();
        w.buf.resize(12, 0);
        let q = n("www.example.test");
        w.buf.extend_from_slice(q.wire());
        w.assume_name_at(12, &q);
        w.record(&q, 5, &Rdata::Cname(n("mail.example.test")));
        // Owner is a pointer to 12; the CNAME target is "mail" + pointer to "example.test" (16).
        let body = &w.buf[12 + q.wire().len()..];
        assert_eq!(&body[..2], &[0xC0, 12]);
        assert_eq!(&body[10..12], &[0, 7]);
        assert_eq!(&body[12..19], &[4, b'm', b'a', b'i', b'l', 0xC0, 16]);
        // A later name can point at "mail.example.test" as written inside the RDATA.
        let at = 12 + q.wire().len() + 12;
        w.name(&n("mail.example.test"), true);
        assert_eq!(&w.buf[w.buf.len() - 2..], &[0xC0, at as u8]);
        w.name(&n("x.mail.example.test"), true);
        assert_eq!(&w.buf[w.buf.len() - 4..], &[1, b'x', 0xC0, at as u8]);
    }

    #[test]
    fn srv_targets_are_not_compressed() {
        let mut w = Writer::new();
        let owner = n("_sip._tcp.example.test");
        w.record(&owner, 60, &Rdata::Srv { priority: 1, weight: 2, port: 3, target: n("example.test") });
        assert!(w.buf.ends_with(n("example.test").wire()));
    }
}
