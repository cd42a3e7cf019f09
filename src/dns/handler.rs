//! The request handler: request bytes in, response bytes out. Pure and panic-free.
//!
//! [`handle`] parses just enough of a request to answer it (header, question, the OPT record
//! in the additional section), looks the name up in a [`Table`] and writes the response into
//! a caller-supplied buffer: header, the question copied byte for byte as sent (so the letter
//! case is echoed), the precomputed body, and an OPT record for EDNS clients. It never
//! allocates on the hot path when `out` has capacity, does no I/O and keeps no state between
//! requests. Every index into the request is bounds-checked (`get`), so arbitrary bytes give
//! a FORMERR or no answer, never a panic (a proptest and a cargo-fuzz target check this).
//!
//! What it answers (RFC 1034/1035/2181/2308/6891/7766/8482):
//! - responses (QR=1) and messages shorter than a header: no answer at all;
//! - malformed messages: FORMERR; opcodes other than QUERY: NOTIMP; EDNS version > 0: BADVERS;
//! - classes other than IN (and ANY, answered as IN) and names outside our zones: REFUSED
//!   (AA clear);
//! - existing names: AA, the RRset or NODATA (SOA in authority), CNAME chains in the zone;
//!   names that do not exist: NXDOMAIN with the SOA (TTL = min(SOA TTL, minimum));
//! - ANY: one RRset (RFC 8482); AXFR/IXFR: refused unless the client is allowed, AXFR over
//!   UDP is NOTIMP, IXFR over UDP gets the SOA (RFC 1995 section 2), transfers over TCP are
//!   returned as [`Reply::Transfer`];
//! - over UDP, a response larger than the client's limit (512 without EDNS, else its payload
//!   size capped by `max_udp_payload`) drops the additional section, then sets TC=1 and sends
//!   the question alone;
//! - TSIG (RFC 8945): a request signed with a key of `[[dns.key]]` is answered as usual and the
//!   answer signed (every message of a transfer); an unknown key gets NOTAUTH with a TSIG
//!   error record BADKEY, a wrong MAC BADSIG, a time outside the fudge BADTIME, all unsigned.
//!   A zone with `transfer_key` transfers only to requests signed with it. Signed requests are
//!   the one place the handler reads the clock (the TSIG time check) and allocates beyond the
//!   reply buffer.

use std::net::IpAddr;

use super::name::{MAX_NAME, Name};
use crate::provider::tsig::{self, Key};
use super::table::{Answer, Table, ZoneTable};
use super::wire::{CLASS_IN, Writer, rcode, rtype};

/// QCLASS ANY.
const CLASS_ANY: u16 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to send back.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Nothing (not a query, or too short to carry an ID).
    Drop,
    /// One message, written to `out`.
    Message,
    /// A zone transfer: these messages, in order (TCP only).
    Transfer(Vec<Vec<u8>>),
}

/// BADVERS (RFC 6891): extended rcode 16 = OPT high bits 1, header rcode 0.
const BADVERS_HIGH: u8 = 1;

const FLAG_QR: u8 = 0x80;
const FLAG_AA: u8 = 0x04;
const FLAG_TC: u8 = 0x02;
const FLAG_RD: u8 = 0x01;
const FLAG_CD: u8 = 0x10;

/// What the parser found.
struct Request<'a> {
    id: [u8; 2],
    opcode: u8,
    rd: bool,
    cd: bool,
    /// The question as sent (name + type + class), if there was exactly one and it parsed.
    question: Option<&'a [u8]>,
    qname_lower: [u8; MAX_NAME],
    qname_len: usize,
    qtype: u16,
    qclass: u16,
    qdcount: u16,
    edns: Option<Edns>,
    tsig: bool,
}

#[derive(Clone, Copy)]
struct Edns {
    payload: u16,
    version: u8,
    dnssec_ok: bool,
}

enum ParseError {
    /// Not worth answering.
    Drop,
    /// FORMERR; the header fields we could read.
    FormErr { id: [u8; 2], opcode: u8, rd: bool, cd: bool },
}

#[inline]
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Skip a possibly compressed name; returns the offset after it.
fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    let mut total = 0usize;
    loop {
        let len = *b.get(at)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => {
                total += 1 + len as usize;
                if total > MAX_NAME {
                    return None;
                }
                at += 1 + len as usize;
            }
            0xC0 => {
                b.get(at + 1)?;
                return Some(at + 2);
            }
            _ => return None,
        }
    }
}

fn parse(req: &[u8]) -> Result<Request<'_>, ParseError> {
    if req.len() < 12 {
        return Err(ParseError::Drop);
    }
    let id = [req[0], req[1]];
    let f1 = req[2];
    let f2 = req[3];
    if f1 & FLAG_QR != 0 {
        return Err(ParseError::Drop);
    }
    let opcode = (f1 >> 3) & 0x0F;
    let rd = f1 & FLAG_RD != 0;
    let cd = f2 & FLAG_CD != 0;
    let formerr = ParseError::FormErr { id, opcode, rd, cd };
    let qdcount = u16_at(req, 4).ok_or(ParseError::Drop)?;
    let ancount = u16_at(req, 6).ok_or(ParseError::Drop)?;
    let nscount = u16_at(req, 8).ok_or(ParseError::Drop)?;
    let arcount = u16_at(req, 10).ok_or(ParseError::Drop)?;

    let mut r = Request {
        id,
        opcode,
        rd,
        cd,
        question: None,
        qname_lower: [0; MAX_NAME],
        qname_len: 0,
        qtype: 0,
        qclass: 0,
        qdcount,
        edns: None,
        tsig: false,
    };
    let mut at = 12;
    for i in 0..qdcount {
        let start = at;
        if i == 0 {
            // The first question: no compression (nothing precedes it to point at).
            let mut n = 0usize;
            loop {
                let len = *req.get(at).ok_or(ParseError::FormErr { id, opcode, rd, cd })? as usize;
                if len & 0xC0 != 0 || n + 1 + len > MAX_NAME {
                    return Err(formerr);
                }
                let label = req.get(at..at + 1 + len).ok_or(ParseError::FormErr { id, opcode, rd, cd })?;
                for (dst, src) in r.qname_lower[n..n + 1 + len].iter_mut().zip(label) {
                    *dst = src.to_ascii_lowercase();
                }
                n += 1 + len;
                at += 1 + len;
                if len == 0 {
                    break;
                }
            }
            r.qname_len = n;
        } else {
            at = skip_name(req, at).ok_or(ParseError::FormErr { id, opcode, rd, cd })?;
        }
        let (Some(qtype), Some(qclass)) = (u16_at(req, at), u16_at(req, at + 2)) else {
            return Err(formerr);
        };
        at += 4;
        if i == 0 {
            r.qtype = qtype;
            r.qclass = qclass;
            r.question = req.get(start..at);
        }
    }
    // Answer and authority: skipped (a query has none, but tolerate them).
    for _ in 0..(ancount as u32 + nscount as u32) {
        at = skip_rr(req, at).ok_or(ParseError::FormErr { id, opcode, rd, cd })?.0;
    }
    for i in 0..arcount {
        let owner_at = at;
        let (next, rrtype) = skip_rr(req, at).ok_or(ParseError::FormErr { id, opcode, rd, cd })?;
        if r.tsig {
            // TSIG must be the last record (RFC 8945 5.1).
            return Err(formerr);
        }
        match rrtype {
            rtype::OPT => {
                if r.edns.is_some() || req.get(owner_at) != Some(&0) {
                    // Two OPTs, or an OPT not owned by the root (RFC 6891 6.1.1).
                    return Err(formerr);
                }
                let payload = u16_at(req, owner_at + 3).ok_or(ParseError::FormErr { id, opcode, rd, cd })?;
                let version = *req.get(owner_at + 6).ok_or(ParseError::FormErr { id, opcode, rd, cd })?;
                let flags = u16_at(req, owner_at + 7).ok_or(ParseError::FormErr { id, opcode, rd, cd })?;
                // Options must exactly fill the RDATA.
                let mut o = owner_at + 11;
                while o < next {
                    let len = u16_at(req, o + 2).ok_or(ParseError::FormErr { id, opcode, rd, cd })? as usize;
                    o += 4 + len;
                }
                if o != next {
                    return Err(formerr);
                }
                r.edns = Some(Edns { payload, version, dnssec_ok: flags & 0x8000 != 0 });
            }
            rtype::TSIG if i + 1 == arcount => r.tsig = true,
            rtype::TSIG => return Err(formerr),
            _ => {}
        }
        at = next;
    }
    if at != req.len() {
        // Trailing bytes after the last record.
        return Err(formerr);
    }
    Ok(r)
}

/// Skip one resource record; returns the offset after it and its type.
fn skip_rr(b: &[u8], at: usize) -> Option<(usize, u16)> {
    let at = skip_name(b, at)?;
    let t = u16_at(b, at)?;
    let rdlen = u16_at(b, at + 8)? as usize;
    let end = at + 10 + rdlen;
    if end > b.len() {
        return None;
    }
    Some((end, t))
}

/// Answer one request. `client` is used only for the transfer allow list.
pub fn handle(table: &Table, req: &[u8], transport: Transport, client: IpAddr, out: &mut Vec<u8>) -> Reply {
    out.clear();
    let r = match parse(req) {
        Ok(r) => r,
        Err(ParseError::Drop) => return Reply::Drop,
        Err(ParseError::FormErr { id, opcode, rd, cd }) => {
            header(out, id, opcode, rd, cd, 0, rcode::FORMERR, [0, 0, 0, 0]);
            return Reply::Message;
        }
    };
    let limit = match transport {
        Transport::Tcp => u16::MAX as usize,
        Transport::Udp => match r.edns {
            Some(e) => (e.payload.max(512)).min(table.max_udp_payload.max(512)) as usize,
            None => 512,
        },
    };
    let q = r.question.unwrap_or_default();
    let qd = u16::from(r.question.is_some());

    if let Some(e) = r.edns
        && e.version != 0
    {
        header(out, r.id, r.opcode, r.rd, r.cd, 0, rcode::NOERROR, [qd, 0, 0, 1]);
        out.extend_from_slice(q);
        opt(out, table, e, BADVERS_HIGH);
        return Reply::Message;
    }
    let simple = |out: &mut Vec<u8>, flags: u8, rc: u8| {
        let ar = u16::from(r.edns.is_some());
        header(out, r.id, r.opcode, r.rd, r.cd, flags, rc, [qd, 0, 0, ar]);
        out.extend_from_slice(q);
        if let Some(e) = r.edns {
            opt(out, table, e, 0);
        }
        Reply::Message
    };
    if r.opcode != 0 {
        // An opcode we do not implement: nothing was checked, so CD (RFC 4035 3.2.2, "checking
        // disabled") means nothing here and is cleared, as Knot does.
        let ar = u16::from(r.edns.is_some());
        header(out, r.id, r.opcode, r.rd, false, 0, rcode::NOTIMP, [qd, 0, 0, ar]);
        out.extend_from_slice(q);
        if let Some(e) = r.edns {
            opt(out, table, e, 0);
        }
        return Reply::Message;
    }
    if r.qdcount != 1 {
        return simple(out, 0, rcode::FORMERR);
    }
    let mut signer: Option<(&Key, Vec<u8>)> = None;
    if r.tsig {
        let now = unix_now();
        let Some(found) = tsig::find(req) else { return simple(out, 0, rcode::FORMERR) };
        let Some(key) = table.keys.iter().find(|k| k.name == found.key_name && k.algorithm.name() == found.algorithm) else {
            // RFC 8945 5.2.1: unknown key or algorithm: NOTAUTH, TSIG error BADKEY, unsigned.
            simple(out, 0, rcode::NOTAUTH);
            *out = tsig::error_record(out, &found.key_name, &found.algorithm, now, tsig::error::BADKEY);
            return Reply::Message;
        };
        match tsig::verify(req, key, now, None) {
            tsig::Checked::Valid { mac } => signer = Some((key, mac)),
            other => {
                let err = if matches!(other, tsig::Checked::BadTime(_)) { tsig::error::BADTIME } else { tsig::error::BADSIG };
                simple(out, 0, rcode::NOTAUTH);
                *out = tsig::error_record(out, &found.key_name, &found.algorithm, now, err);
                return Reply::Message;
            }
        }
    }
    let reply = answer(table, &r, q, qd, transport, client, out, limit, signer.as_ref().map(|(k, _)| &k.name));
    let Some((key, request_mac)) = signer else { return reply };
    let now = unix_now();
    match reply {
        Reply::Drop => Reply::Drop,
        Reply::Message => {
            *out = tsig::sign(out, key, now, Some(&request_mac)).0;
            Reply::Message
        }
        Reply::Transfer(msgs) => {
            let mut signed = Vec::with_capacity(msgs.len());
            let mut prior: Option<Vec<u8>> = None;
            for m in msgs {
                let (s, mac) = match &prior {
                    None => tsig::sign(&m, key, now, Some(&request_mac)),
                    Some(p) => tsig::sign_next(&m, key, now, p),
                };
                prior = Some(mac);
                signed.push(s);
            }
            Reply::Transfer(signed)
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The answer to a parsed, authenticated (or unsigned) query; `signed_with` names the TSIG key
/// the request was signed with.
#[allow(clippy::too_many_arguments)]
fn answer(table: &Table, r: &Request<'_>, q: &[u8], qd: u16, transport: Transport, client: IpAddr, out: &mut Vec<u8>, limit: usize, signed_with: Option<&Name>) -> Reply {
    let simple = |out: &mut Vec<u8>, flags: u8, rc: u8| {
        let ar = u16::from(r.edns.is_some());
        header(out, r.id, r.opcode, r.rd, r.cd, flags, rc, [qd, 0, 0, ar]);
        out.extend_from_slice(q);
        if let Some(e) = r.edns {
            opt(out, table, e, 0);
        }
        Reply::Message
    };
    // QCLASS ANY (255) matches our IN data (RFC 1035 3.2.5), as Knot and BIND answer it.
    if r.qclass != CLASS_IN && r.qclass != CLASS_ANY {
        return simple(out, 0, rcode::REFUSED);
    }
    let qname = &r.qname_lower[..r.qname_len];
    let Some(zone) = table.zone_for(qname) else {
        return simple(out, 0, rcode::REFUSED);
    };

    if r.qtype == rtype::AXFR || r.qtype == rtype::IXFR {
        if r.qtype == rtype::AXFR && transport == Transport::Udp {
            return simple(out, 0, rcode::NOTIMP);
        }
        if qname != zone.apex.wire() {
            return simple(out, 0, rcode::NOTAUTH);
        }
        // With a transfer key, the key is what admits a secondary (and `allow_transfer`, when
        // given, narrows the addresses); without one, the address list alone.
        let key_ok = zone.transfer_key.as_ref().is_none_or(|k| signed_with == Some(k));
        let addr_ok = zone.allow_transfer.iter().any(|n| n.contains(client)) || (zone.transfer_key.is_some() && zone.allow_transfer.is_empty());
        if !(key_ok && addr_ok) {
            return simple(out, 0, rcode::REFUSED);
        }
        if transport == Transport::Udp {
            // IXFR over UDP: the current SOA tells the client to come back over TCP.
            let node = zone.nodes.get(qname);
            if let Some(a) = node.map(|n| n.answer(rtype::SOA)) {
                write_answer(out, table, r, q, a, limit);
                return Reply::Message;
            }
            return simple(out, 0, rcode::SERVFAIL);
        }
        return Reply::Transfer(transfer(zone, r, q));
    }

    match zone.nodes.get(qname) {
        Some(node) => {
            if node.failover {
                table.note_failover_answer();
            }
            write_answer(out, table, r, q, node.answer(r.qtype), limit);
        }
        None => {
            // NXDOMAIN: SOA owner = pointer to the apex inside the question name.
            let apex_at = 12 + r.qname_len - zone.apex.wire().len();
            let ar = u16::from(r.edns.is_some());
            let need = 12 + q.len() + 2 + zone.soa_tail.len() + 11 * ar as usize;
            if need > limit {
                header(out, r.id, 0, r.rd, r.cd, FLAG_AA | FLAG_TC, rcode::NXDOMAIN, [1, 0, 0, ar]);
                out.extend_from_slice(q);
            } else {
                header(out, r.id, 0, r.rd, r.cd, FLAG_AA, rcode::NXDOMAIN, [1, 0, 1, ar]);
                out.extend_from_slice(q);
                out.extend_from_slice(&(0xC000u16 | apex_at as u16).to_be_bytes());
                out.extend_from_slice(&zone.soa_tail);
            }
            if let Some(e) = r.edns {
                opt(out, table, e, 0);
            }
        }
    }
    Reply::Message
}

fn write_answer(out: &mut Vec<u8>, table: &Table, r: &Request<'_>, q: &[u8], a: &Answer, limit: usize) {
    let opt_len = if r.edns.is_some() { 11 } else { 0 };
    let ar_opt = u16::from(r.edns.is_some());
    let fixed = 12 + q.len() + opt_len;
    if fixed + a.body.len() <= limit {
        header(out, r.id, 0, r.rd, r.cd, FLAG_AA, a.rcode, [1, a.an, a.ns, a.ar + ar_opt]);
        out.extend_from_slice(q);
        out.extend_from_slice(&a.body);
    } else if fixed + a.core_len <= limit {
        // The additional section is optional (RFC 2181 9): drop it, no TC.
        header(out, r.id, 0, r.rd, r.cd, FLAG_AA, a.rcode, [1, a.an, a.ns, ar_opt]);
        out.extend_from_slice(q);
        out.extend_from_slice(&a.body[..a.core_len]);
    } else {
        header(out, r.id, 0, r.rd, r.cd, FLAG_AA | FLAG_TC, a.rcode, [1, 0, 0, ar_opt]);
        out.extend_from_slice(q);
    }
    if let Some(e) = r.edns {
        opt(out, table, e, 0);
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn header(out: &mut Vec<u8>, id: [u8; 2], opcode: u8, rd: bool, cd: bool, flags: u8, rc: u8, counts: [u16; 4]) {
    let f1 = FLAG_QR | (opcode & 0x0F) << 3 | flags | if rd { FLAG_RD } else { 0 };
    let f2 = (if cd { FLAG_CD } else { 0 }) | (rc & 0x0F);
    out.extend_from_slice(&[id[0], id[1], f1, f2]);
    for c in counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
}

/// Our OPT record: root owner, our payload size, extended rcode bits, version 0, DO echoed.
#[inline]
fn opt(out: &mut Vec<u8>, table: &Table, e: Edns, ext_rcode: u8) {
    let [p0, p1] = table.max_udp_payload.to_be_bytes();
    let do_bit = if e.dnssec_ok { 0x80 } else { 0 };
    out.extend_from_slice(&[0, 0, 41, p0, p1, ext_rcode, 0, do_bit, 0, 0, 0]);
}

/// Messages of at most this many bytes in a transfer (well under the 64 KiB TCP limit).
const TRANSFER_CHUNK: usize = 16 * 1024;

/// AXFR (also the answer to IXFR, RFC 1995 section 4): SOA, every record, SOA.
fn transfer(zone: &ZoneTable, r: &Request<'_>, q: &[u8]) -> Vec<Vec<u8>> {
    let soa = &zone.records[0];
    let all = zone.records.iter().chain(std::iter::once(soa));
    let mut msgs = Vec::new();
    let mut w: Option<(Writer, u16)> = None;
    for (name, ttl, rdata) in all {
        let (cur, count) = w.get_or_insert_with(|| {
            let mut wr = Writer::new();
            let first = msgs.is_empty();
            header(&mut wr.buf, r.id, 0, false, false, FLAG_AA, rcode::NOERROR, [u16::from(first), 0, 0, 0]);
            if first {
                wr.buf.extend_from_slice(q);
                wr.assume_name_at(12, &zone.apex);
            }
            (wr, 0)
        });
        cur.record(name, *ttl, rdata);
        *count += 1;
        if cur.buf.len() >= TRANSFER_CHUNK {
            let (wr, n) = w.take().unwrap_or_else(|| (Writer::new(), 0));
            msgs.push(finish_transfer_msg(wr, n));
        }
    }
    if let Some((wr, n)) = w.take() {
        msgs.push(finish_transfer_msg(wr, n));
    }
    msgs
}

fn finish_transfer_msg(mut w: Writer, count: u16) -> Vec<u8> {
    if let Some(b) = w.buf.get_mut(6..8) {
        b.copy_from_slice(&count.to_be_bytes());
    }
    w.buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::config::IpNet;
    use crate::dns::table::compile;
    use std::collections::HashMap;

    fn table() -> Table {
        let mut cfg = crate::dns::table::tests::sample();
        cfg.zones[0].allow_transfer = vec![IpNet::parse("127.0.0.5").unwrap()];
        let served = HashMap::from([("www".to_string(), vec!["127.0.0.2".parse().unwrap()])]);
        compile(&cfg, &served, &[42])
    }

    fn query(name: &str, qtype: u16, edns: Option<(u16, u8)>) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())];
        for l in name.split('.').filter(|l| !l.is_empty()) {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        if let Some((size, version)) = edns {
            q.extend_from_slice(&[0, 0, 41]);
            q.extend_from_slice(&size.to_be_bytes());
            q.extend_from_slice(&[0, version, 0, 0, 0, 0]);
        }
        q
    }

    fn run(req: &[u8], t: Transport) -> Vec<u8> {
        let mut out = Vec::new();
        let reply = handle(&table(), req, t, "127.0.0.1".parse().unwrap(), &mut out);
        assert_eq!(reply, Reply::Message);
        out
    }

    #[test]
    fn positive_answer_echoes_question_case_and_sets_aa() {
        let out = run(&query("WwW.Example.TEST", rtype::A, None), Transport::Udp);
        assert_eq!(&out[..2], &[0x12, 0x34]);
        assert_eq!(out[2] & (FLAG_QR | FLAG_AA | FLAG_RD), FLAG_QR | FLAG_AA | FLAG_RD);
        assert_eq!(out[3] & 0x8F, 0, "RA clear, NOERROR");
        assert_eq!(&out[6..8], &[0, 1]);
        assert_eq!(&out[13..16], b"WwW");
        assert_eq!(&out[out.len() - 4..], &[127, 0, 0, 2]);
    }

    #[test]
    fn negative_answers() {
        let nx = run(&query("nope.example.test", rtype::A, None), Transport::Udp);
        assert_eq!(nx[3] & 0x0F, rcode::NXDOMAIN);
        assert_eq!(&nx[8..10], &[0, 1]);
        let refused = run(&query("www.example.org", rtype::A, None), Transport::Udp);
        assert_eq!(refused[3] & 0x0F, rcode::REFUSED);
        assert_eq!(refused[2] & FLAG_AA, 0);
        let badvers = run(&query("www.example.test", rtype::A, Some((1232, 1))), Transport::Udp);
        assert_eq!(badvers[3] & 0x0F, 0);
        assert_eq!(badvers[badvers.len() - 6], BADVERS_HIGH);
    }

    #[test]
    fn transfers_are_refused_unless_allowed() {
        let mut out = Vec::new();
        let t = table();
        let axfr = query("example.test", rtype::AXFR, None);
        let r = handle(&t, &axfr, Transport::Tcp, "127.0.0.1".parse().unwrap(), &mut out);
        assert_eq!((r, out[3] & 0x0F), (Reply::Message, rcode::REFUSED));
        match handle(&t, &axfr, Transport::Tcp, "127.0.0.5".parse().unwrap(), &mut out) {
            Reply::Transfer(msgs) => assert_eq!(msgs.len(), 1),
            other => panic!("expected a transfer, got {other:?}"),
        }
        let r = handle(&t, &axfr, Transport::Udp, "127.0.0.5".parse().unwrap(), &mut out);
        assert_eq!((r, out[3] & 0x0F), (Reply::Message, rcode::NOTIMP));
    }

    /// RFC 8945: a known key's request is answered signed (a transfer: every message, bound to
    /// the request's MAC and then to the previous one); an unknown key gets NOTAUTH with BADKEY,
    /// a wrong secret BADSIG; a zone with a transfer key refuses unsigned transfers.
    #[test]
    fn tsig_signed_requests_badkey_and_transfer_keys() {
        use crate::provider::tsig::{self, Algorithm, Checked, Key};
        let key = Key { name: crate::dns::name::Name::parse_absolute("xfr").unwrap(), algorithm: Algorithm::HmacSha256, secret: b"0123456789abcdef".to_vec() };
        let mut cfg = crate::dns::table::tests::sample();
        cfg.keys = vec![key.clone()];
        cfg.zones[0].transfer_key = Some(key.name.clone());
        let served = HashMap::from([("www".to_string(), vec!["127.0.0.2".parse().unwrap()])]);
        let t = compile(&cfg, &served, &[42]);
        let now = unix_now();
        let client: IpAddr = "192.0.2.9".parse().unwrap();
        let mut out = Vec::new();

        let (signed, mac) = tsig::sign(&query("example.test", rtype::AXFR, None), &key, now, None);
        let Reply::Transfer(msgs) = handle(&t, &signed, Transport::Tcp, client, &mut out) else { panic!("a signed transfer is allowed from any address") };
        assert!(matches!(tsig::verify(&msgs[0], &key, now, Some(&mac)), Checked::Valid { .. }));

        let (signed, mac) = tsig::sign(&query("www.example.test", rtype::A, None), &key, now, None);
        assert_eq!(handle(&t, &signed, Transport::Udp, client, &mut out), Reply::Message);
        assert!(matches!(tsig::verify(&out, &key, now, Some(&mac)), Checked::Valid { .. }));
        assert_eq!(out[3] & 0x0F, rcode::NOERROR);

        let stranger = Key { name: crate::dns::name::Name::parse_absolute("stranger").unwrap(), ..key.clone() };
        let (signed, _) = tsig::sign(&query("www.example.test", rtype::A, None), &stranger, now, None);
        handle(&t, &signed, Transport::Udp, client, &mut out);
        assert_eq!(out[3] & 0x0F, rcode::NOTAUTH);
        assert_eq!(tsig::find(&out).map(|f| (f.error, f.mac.len())), Some((tsig::error::BADKEY, 0)));

        let wrong = Key { secret: b"another secret..".to_vec(), ..key.clone() };
        let (signed, _) = tsig::sign(&query("www.example.test", rtype::A, None), &wrong, now, None);
        handle(&t, &signed, Transport::Udp, client, &mut out);
        assert_eq!(tsig::find(&out).map(|f| f.error), Some(tsig::error::BADSIG));

        let r = handle(&t, &query("example.test", rtype::AXFR, None), Transport::Tcp, client, &mut out);
        assert_eq!((r, out[3] & 0x0F), (Reply::Message, rcode::REFUSED), "unsigned transfers are refused");
    }

    #[test]
    fn malformed_and_responses() {
        let mut out = Vec::new();
        let t = table();
        let c = "127.0.0.1".parse().unwrap();
        assert_eq!(handle(&t, &[1, 2, 3], Transport::Udp, c, &mut out), Reply::Drop);
        let mut resp = query("www.example.test", rtype::A, None);
        resp[2] |= 0x80;
        assert_eq!(handle(&t, &resp, Transport::Udp, c, &mut out), Reply::Drop);
        let mut trunc = query("www.example.test", rtype::A, None);
        trunc.truncate(20);
        assert_eq!(handle(&t, &trunc, Transport::Udp, c, &mut out), Reply::Message);
        assert_eq!(out[3] & 0x0F, rcode::FORMERR);
        let mut notify = query("example.test", rtype::SOA, None);
        notify[2] = 4 << 3;
        handle(&t, &notify, Transport::Udp, c, &mut out);
        assert_eq!(out[3] & 0x0F, rcode::NOTIMP);
    }

    #[test]
    fn notimp_clears_the_cd_bit() {
        let mut out = Vec::new();
        let t = table();
        let c = "127.0.0.1".parse().unwrap();
        let mut q = query("example.test", rtype::SOA, Some((1232, 0)));
        q[2] = 5 << 3; // opcode 5 (UPDATE)
        q[3] |= FLAG_CD;
        assert_eq!(handle(&t, &q, Transport::Udp, c, &mut out), Reply::Message);
        assert_eq!(out[3] & 0x0F, rcode::NOTIMP);
        assert_eq!(out[3] & FLAG_CD, 0, "CD echoed in a NOTIMP answer");
        // A normal query still echoes CD (RFC 4035 3.1.6).
        let mut q = query("www.example.test", rtype::A, None);
        q[3] |= FLAG_CD;
        handle(&t, &q, Transport::Udp, c, &mut out);
        assert_eq!(out[3] & FLAG_CD, FLAG_CD);
    }
}
