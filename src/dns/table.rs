//! The answer table: every answer the server can give, precomputed as wire bytes.
//!
//! [`compile`] turns the zone configuration plus what each failover record serves now into a
//! [`Table`]. For every name in a zone it stores, per record type present, the complete
//! response body after the question (answer, authority and additional sections, compressed
//! against the question name at offset 12), plus one body for "any other type" (NODATA, or
//! the end of a CNAME chain) and one for ANY (RFC 8482: one RRset). Because a query that hits
//! a name carries exactly that name in its question (only the letter case may differ), the
//! compression pointers are valid for every such query; the request handler copies the body
//! and patches the header. Names that do not exist get NXDOMAIN, built from the zone's SOA
//! "tail" and a pointer to where the apex starts inside the question.
//!
//! A table is immutable. The server swaps a whole new table in on every change (see
//! `mod.rs`); compiling is O(zone size) and takes microseconds for the zones this daemon is
//! meant to serve. This module does no I/O and never looks at the clock, except that a table
//! notes when it was created so the handler can report how soon its first failover answer went
//! out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::config::{DnsConfig, IpNet, RecordKind, ZoneConfig};
use super::name::Name;
use super::wire::{Rdata, Writer, rcode, rtype};

/// The precomputed response to one (name, type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: u8,
    pub an: u16,
    pub ns: u16,
    pub ar: u16,
    /// Answer + authority + additional sections, as wire bytes.
    pub body: Box<[u8]>,
    /// Length of answer + authority (the part that must not be cut; additional may be dropped).
    pub core_len: usize,
}

#[derive(Debug, Clone)]
pub struct Node {
    /// Answers for the types present at this name (and, at a CNAME, for the types present at
    /// the end of the chain).
    pub types: Vec<(u16, Answer)>,
    /// Every other type.
    pub other: Answer,
    /// `ANY` (RFC 8482): one RRset.
    pub any: Answer,
    /// Serves a failover record (used to time the first answer after a change).
    pub failover: bool,
}

impl Node {
    pub fn answer(&self, qtype: u16) -> &Answer {
        if qtype == rtype::ANY {
            return &self.any;
        }
        for (t, a) in &self.types {
            if *t == qtype {
                return a;
            }
        }
        &self.other
    }
}

/// One zone, compiled.
#[derive(Debug)]
pub struct ZoneTable {
    pub apex: Name,
    pub nodes: HashMap<Box<[u8]>, Node>,
    /// The SOA record for negative answers without its owner name: type, class, TTL
    /// (min(SOA TTL, minimum)), RDATA with uncompressed names.
    pub soa_tail: Box<[u8]>,
    pub serial: u32,
    pub allow_transfer: Vec<IpNet>,
    /// Transfers must be signed with this key (see `DnsConfig::keys`).
    pub transfer_key: Option<Name>,
    /// Every record, SOA first, for zone transfers.
    pub records: Vec<(Name, u32, Rdata)>,
}

/// Everything the server answers from, swapped as a whole.
#[derive(Debug)]
pub struct Table {
    pub zones: Vec<ZoneTable>,
    pub max_udp_payload: u16,
    /// When this table was compiled.
    pub created: Instant,
    /// Nanoseconds from `created` to the first answer served from a failover record (0: none
    /// yet). Written once by whichever worker answers first.
    pub first_failover_answer_ns: AtomicU64,
    /// The decision epoch whose change produced this table (`None` for the start-up table).
    pub epoch: Option<u64>,
    /// TSIG keys signed requests are checked with (`[[dns.key]]`).
    pub keys: Vec<crate::provider::tsig::Key>,
}

impl Table {
    /// The zone `qname` (lowercase wire) belongs to.
    pub fn zone_for(&self, qname: &[u8]) -> Option<&ZoneTable> {
        self.zones.iter().find(|z| super::name::is_wire_suffix(qname, z.apex.wire()))
    }

    /// Note that a failover answer was served (cheap after the first call: one load).
    #[inline]
    pub fn note_failover_answer(&self) {
        if self.first_failover_answer_ns.load(Ordering::Relaxed) == 0 {
            let ns = self.created.elapsed().as_nanos().clamp(1, u64::MAX as u128) as u64;
            let _ = self.first_failover_answer_ns.compare_exchange(0, ns, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    pub fn first_failover_answer(&self) -> Option<std::time::Duration> {
        match self.first_failover_answer_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(std::time::Duration::from_nanos(ns)),
        }
    }
}

/// One RRset while compiling.
#[derive(Debug, Clone)]
struct RRset {
    ttl: u32,
    rdatas: Vec<Rdata>,
}

/// A zone's records by name and type, with empty non-terminals present as empty nodes.
type ZoneData = BTreeMap<Name, BTreeMap<u16, RRset>>;

/// Compile the table. `served` gives each service's current addresses (services missing from
/// it serve nothing); `serials[i]` is zone `i`'s SOA serial.
pub fn compile(cfg: &DnsConfig, served: &HashMap<String, Vec<IpAddr>>, serials: &[u32]) -> Table {
    compile_with(cfg, served, serials, &HashSet::new())
}

/// As [`compile`], with the failover records of the services in `suspect` answered with their
/// suspicion TTL (`suspect_ttl`). Zone transfers keep the configured TTLs: the suspicion TTL is a
/// property of this server's answers, not of the zone's data, so it needs no new serial.
pub fn compile_with(cfg: &DnsConfig, served: &HashMap<String, Vec<IpAddr>>, serials: &[u32], suspect: &HashSet<String>) -> Table {
    let zones = cfg
        .zones
        .iter()
        .enumerate()
        .map(|(i, z)| compile_zone(z, served, serials.get(i).copied().unwrap_or(1), suspect))
        .collect();
    Table { zones, max_udp_payload: cfg.max_udp_payload, created: Instant::now(), first_failover_answer_ns: AtomicU64::new(0), epoch: None, keys: cfg.keys.clone() }
}

fn zone_data(z: &ZoneConfig, served: &HashMap<String, Vec<IpAddr>>, serial: u32, suspect: &HashSet<String>) -> (ZoneData, Vec<Name>) {
    let mut data: ZoneData = BTreeMap::new();
    let mut failover_names = Vec::new();
    let add = |data: &mut ZoneData, name: &Name, ttl: u32, r: Rdata| {
        let set = data.entry(name.clone()).or_default().entry(r.rtype()).or_insert_with(|| RRset { ttl, rdatas: Vec::new() });
        if !set.rdatas.contains(&r) {
            set.rdatas.push(r);
        }
    };
    let soa = &z.soa;
    add(
        &mut data,
        &z.apex,
        soa.ttl,
        Rdata::Soa {
            mname: soa.mname.clone(),
            rname: soa.rname.clone(),
            serial,
            refresh: soa.refresh,
            retry: soa.retry,
            expire: soa.expire,
            minimum: soa.minimum,
        },
    );
    let ns_ttl = soa.ttl;
    for (ns, ips) in &z.nameservers {
        add(&mut data, &z.apex, ns_ttl, Rdata::Ns(ns.clone()));
        for ip in ips {
            let r = match ip {
                IpAddr::V4(v4) => Rdata::A(*v4),
                IpAddr::V6(v6) => Rdata::Aaaa(*v6),
            };
            add(&mut data, ns, ns_ttl, r);
        }
    }
    for rec in &z.records {
        match &rec.kind {
            RecordKind::Static(rdatas) => {
                for r in rdatas {
                    add(&mut data, &rec.name, rec.ttl, r.clone());
                }
            }
            RecordKind::Failover { service, .. } => {
                data.entry(rec.name.clone()).or_default();
                failover_names.push(rec.name.clone());
                for ip in served.get(service).map(Vec::as_slice).unwrap_or_default() {
                    let r = match ip {
                        IpAddr::V4(v4) => Rdata::A(*v4),
                        IpAddr::V6(v6) => Rdata::Aaaa(*v6),
                    };
                    add(&mut data, &rec.name, rec.ttl_now(suspect.contains(service)), r);
                }
            }
        }
    }
    // Empty non-terminals: every name between a record and the apex exists (RFC 8020).
    let names: Vec<Name> = data.keys().cloned().collect();
    for n in names {
        let mut cur = n.parent();
        while let Some(p) = cur {
            if !p.is_within(&z.apex) {
                break;
            }
            data.entry(p.clone()).or_default();
            cur = p.parent();
        }
    }
    (data, failover_names)
}

fn compile_zone(z: &ZoneConfig, served: &HashMap<String, Vec<IpAddr>>, serial: u32, suspect: &HashSet<String>) -> ZoneTable {
    let (data, failover_names) = zone_data(z, served, serial, suspect);
    let soa_rdata = data[&z.apex][&rtype::SOA].rdatas[0].clone();
    let neg_ttl = z.soa.negative_ttl();

    // SOA tail for NXDOMAIN: written after a 2-byte pointer, with names uncompressed.
    let soa_tail = {
        let mut w = Writer::new();
        w.u16(rtype::SOA);
        w.u16(super::wire::CLASS_IN);
        w.u32(neg_ttl);
        let len_at = w.buf.len();
        w.u16(0);
        if let Rdata::Soa { mname, rname, serial, refresh, retry, expire, minimum } = &soa_rdata {
            w.name(mname, false);
            w.name(rname, false);
            for v in [*serial, *refresh, *retry, *expire, *minimum] {
                w.u32(v);
            }
        }
        let rdlen = (w.buf.len() - len_at - 2) as u16;
        w.buf[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        w.buf.into_boxed_slice()
    };

    let cx = ZoneCx { apex: &z.apex, data: &data, soa: &soa_rdata, neg_ttl };
    let mut nodes = HashMap::with_capacity(data.len());
    for (name, sets) in &data {
        let node = cx.node(name, sets, failover_names.contains(name));
        nodes.insert(name.wire().to_vec().into_boxed_slice(), node);
    }

    let mut records = vec![(z.apex.clone(), z.soa.ttl, soa_rdata.clone())];
    // Transfers carry the configured TTLs (see `compile_with`).
    let shortened = z.records.iter().any(|r| matches!(&r.kind, RecordKind::Failover { service, suspect_ttl: Some(_) } if suspect.contains(service)));
    let unshortened;
    let configured = if shortened {
        unshortened = zone_data(z, served, serial, &HashSet::new()).0;
        &unshortened
    } else {
        &data
    };
    for (name, sets) in configured {
        for (t, set) in sets {
            if *t == rtype::SOA && name == &z.apex {
                continue;
            }
            for r in &set.rdatas {
                records.push((name.clone(), set.ttl, r.clone()));
            }
        }
    }
    ZoneTable { apex: z.apex.clone(), nodes, soa_tail, serial, allow_transfer: z.allow_transfer.clone(), transfer_key: z.transfer_key.clone(), records }
}

struct ZoneCx<'a> {
    apex: &'a Name,
    data: &'a ZoneData,
    soa: &'a Rdata,
    neg_ttl: u32,
}

/// Builds one answer body, counting records per section.
struct Builder {
    w: Writer,
    body_start: usize,
    an: u16,
    ns: u16,
    ar: u16,
    core_len: usize,
    rcode: u8,
    /// (name, type) already in the additional section.
    extra: BTreeSet<(Name, u16)>,
}

impl Builder {
    fn new(qname: &Name) -> Builder {
        let mut w = Writer::new();
        w.buf.resize(12, 0);
        w.buf.extend_from_slice(qname.wire());
        w.assume_name_at(12, qname);
        w.buf.extend_from_slice(&[0, 0, 0, 1]);
        let body_start = w.buf.len();
        Builder { w, body_start, an: 0, ns: 0, ar: 0, core_len: 0, rcode: rcode::NOERROR, extra: BTreeSet::new() }
    }

    fn answer_set(&mut self, owner: &Name, set: &RRset) {
        for r in &set.rdatas {
            self.w.record(owner, set.ttl, r);
            self.an += 1;
        }
    }

    fn authority(&mut self, owner: &Name, ttl: u32, r: &Rdata) {
        self.w.record(owner, ttl, r);
        self.ns += 1;
    }

    fn end_core(&mut self) {
        self.core_len = self.w.buf.len() - self.body_start;
    }

    fn finish(mut self) -> Answer {
        if self.ar == 0 {
            self.end_core();
        }
        Answer {
            rcode: self.rcode,
            an: self.an,
            ns: self.ns,
            ar: self.ar,
            body: self.w.buf[self.body_start..].to_vec().into_boxed_slice(),
            core_len: self.core_len,
        }
    }
}

impl ZoneCx<'_> {
    fn node(&self, name: &Name, sets: &BTreeMap<u16, RRset>, failover: bool) -> Node {
        if let Some(cname) = sets.get(&rtype::CNAME) {
            // Only the CNAME lives here; every other type follows the chain.
            let cname_only = {
                let mut b = Builder::new(name);
                b.answer_set(name, cname);
                b.finish()
            };
            let end_types: Vec<u16> = self.chain_end(name).map(|end| self.data[&end].keys().copied().collect()).unwrap_or_default();
            let mut types = vec![(rtype::CNAME, cname_only.clone())];
            for t in end_types {
                if t != rtype::CNAME {
                    types.push((t, self.chain_answer(name, t)));
                }
            }
            // A type no name in the chain has: use a type code that cannot be present.
            let other = self.chain_answer(name, 0);
            return Node { types, other, any: cname_only, failover };
        }
        let mut types = Vec::new();
        for (t, set) in sets {
            let mut b = Builder::new(name);
            b.answer_set(name, set);
            b.end_core();
            self.additional(&mut b, set);
            types.push((*t, b.finish()));
        }
        let other = self.nodata(name);
        let any = match sets.iter().next() {
            Some((t, _)) => types.iter().find(|(tt, _)| tt == t).map(|(_, a)| a.clone()).unwrap_or_else(|| other.clone()),
            None => other.clone(),
        };
        Node { types, other, any, failover }
    }

    fn nodata(&self, name: &Name) -> Answer {
        let mut b = Builder::new(name);
        b.authority(self.apex, self.neg_ttl, self.soa);
        b.finish()
    }

    /// The in-zone name a CNAME chain starting at `name` ends at, if it ends at an existing
    /// in-zone name that is not itself a CNAME.
    fn chain_end(&self, name: &Name) -> Option<Name> {
        let mut cur = name.clone();
        for _ in 0..MAX_CHAIN {
            let sets = self.data.get(&cur)?;
            match sets.get(&rtype::CNAME).and_then(|s| s.rdatas.first()) {
                Some(Rdata::Cname(target)) => {
                    if !target.is_within(self.apex) {
                        return None;
                    }
                    cur = target.clone();
                }
                _ => return Some(cur),
            }
        }
        None
    }

    /// Follow the chain from `name` for `qtype` (RFC 1034 4.3.2 step 3a), within this zone.
    fn chain_answer(&self, name: &Name, qtype: u16) -> Answer {
        let mut b = Builder::new(name);
        let mut cur = name.clone();
        let mut seen = BTreeSet::new();
        loop {
            if !seen.insert(cur.clone()) || seen.len() > MAX_CHAIN {
                // A loop or an overlong chain: answer with what we have (like Knot).
                b.end_core();
                return b.finish();
            }
            let Some(sets) = self.data.get(&cur) else {
                b.rcode = rcode::NXDOMAIN;
                b.authority(self.apex, self.neg_ttl, self.soa);
                return b.finish();
            };
            if let Some(cname) = sets.get(&rtype::CNAME) {
                b.answer_set(&cur, cname);
                match cname.rdatas.first() {
                    Some(Rdata::Cname(target)) if target.is_within(self.apex) => {
                        cur = target.clone();
                        continue;
                    }
                    _ => return b.finish(),
                }
            }
            match sets.get(&qtype) {
                Some(set) => {
                    b.answer_set(&cur, set);
                    b.end_core();
                    self.additional(&mut b, set);
                }
                None => b.authority(self.apex, self.neg_ttl, self.soa),
            }
            return b.finish();
        }
    }

    /// Addresses of in-zone NS/MX/SRV targets (RFC 1035 3.3, RFC 2782).
    fn additional(&self, b: &mut Builder, set: &RRset) {
        for r in &set.rdatas {
            let Some(target) = r.additional_target() else { continue };
            if !target.is_within(self.apex) {
                continue;
            }
            let Some(sets) = self.data.get(target) else { continue };
            for t in [rtype::A, rtype::AAAA] {
                if let Some(addrs) = sets.get(&t)
                    && b.extra.insert((target.clone(), t))
                {
                    for a in &addrs.rdatas {
                        b.w.record(target, addrs.ttl, a);
                        b.ar += 1;
                    }
                }
            }
        }
    }
}

/// Longest CNAME chain we follow inside a zone.
const MAX_CHAIN: usize = 8;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dns::config::{RecordConfig, SoaConfig};

    fn n(s: &str) -> Name {
        Name::parse_absolute(s).unwrap()
    }

    pub(crate) fn sample() -> DnsConfig {
        let apex = n("example.test");
        DnsConfig {
            listen: vec![],
            udp_workers: 1,
            tcp_idle_timeout: std::time::Duration::from_secs(10),
            tcp_max_connections: 10,
            tcp_max_connections_per_client: 5,
            tcp_write_timeout: std::time::Duration::from_secs(2),
            max_udp_payload: 1232,
            rrl: None,
            keys: vec![],
            zones: vec![ZoneConfig {
                apex: apex.clone(),
                soa: SoaConfig { mname: n("ns1.example.test"), rname: n("hostmaster.example.test"), ttl: 3600, refresh: 3600, retry: 600, expire: 604800, minimum: 60 },
                nameservers: vec![(n("ns1.example.test"), vec!["127.0.0.1".parse().unwrap()])],
                allow_transfer: vec![],
                transfer_key: None,
                notify: vec![],
                records: vec![
                    RecordConfig { name: n("www.example.test"), ttl: 5, kind: RecordKind::Failover { service: "www".into(), suspect_ttl: Some(1) } },
                    RecordConfig { name: n("alias.example.test"), ttl: 300, kind: RecordKind::Static(vec![Rdata::Cname(n("www.example.test"))]) },
                    RecordConfig { name: n("mail.example.test"), ttl: 300, kind: RecordKind::Static(vec![Rdata::Mx { preference: 10, exchange: n("www.example.test") }]) },
                    RecordConfig { name: n("a.b.c.example.test"), ttl: 300, kind: RecordKind::Static(vec![Rdata::Txt(vec![b"hi".to_vec()])]) },
                ],
            }],
        }
    }

    #[test]
    fn nodes_types_chains_and_empty_non_terminals() {
        let cfg = sample();
        let served = HashMap::from([("www".to_string(), vec!["127.0.0.2".parse().unwrap()])]);
        let t = compile(&cfg, &served, &[7]);
        let z = &t.zones[0];
        let www = &z.nodes[n("www.example.test").wire()];
        assert!(www.failover);
        assert_eq!(www.answer(rtype::A).an, 1);
        assert_eq!(www.answer(rtype::AAAA).an, 0);
        assert_eq!(www.answer(rtype::AAAA).ns, 1);
        let alias = &z.nodes[n("alias.example.test").wire()];
        assert_eq!(alias.answer(rtype::A).an, 2);
        assert_eq!(alias.answer(rtype::MX).an, 1);
        assert_eq!(alias.answer(rtype::MX).ns, 1);
        assert_eq!(alias.answer(rtype::CNAME).an, 1);
        let mail = z.nodes[n("mail.example.test").wire()].answer(rtype::MX);
        assert_eq!((mail.an, mail.ar), (1, 1));
        assert!(mail.core_len < mail.body.len());
        // b.c and c are empty non-terminals: NODATA, not NXDOMAIN.
        let ent = z.nodes[n("b.c.example.test").wire()].answer(rtype::A);
        assert_eq!((ent.rcode, ent.an, ent.ns), (rcode::NOERROR, 0, 1));
        assert!(!z.nodes.contains_key(n("nx.example.test").wire()));
        // ANY at the apex: one RRset, the lowest type (NS), with its glue.
        let any = z.nodes[n("example.test").wire()].answer(rtype::ANY);
        assert_eq!((any.an, any.ar), (1, 1));
        assert_eq!(z.records.first().map(|r| r.2.rtype()), Some(rtype::SOA));
    }

    /// The TTL of the A record(s) in an answer body (each record: name pointer, type, class, TTL).
    fn answer_ttls(a: &Answer) -> Vec<u32> {
        let (b, mut i, mut out) = (&a.body, 0usize, Vec::new());
        for _ in 0..a.an {
            // Owner name: labels up to a root label or a compression pointer.
            loop {
                match b[i] {
                    0 => break i += 1,
                    l if l >= 0xC0 => break i += 2,
                    l => i += 1 + l as usize,
                }
            }
            out.push(u32::from_be_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]));
            i += 10 + u16::from_be_bytes([b[i + 8], b[i + 9]]) as usize;
        }
        out
    }

    #[test]
    fn a_suspect_service_is_answered_with_its_suspicion_ttl_but_transferred_with_its_ttl() {
        let cfg = sample();
        let served = HashMap::from([("www".to_string(), vec!["127.0.0.2".parse().unwrap()])]);
        let normal = compile(&cfg, &served, &[7]);
        let suspect = compile_with(&cfg, &served, &[7], &HashSet::from(["www".to_string()]));
        let a = |t: &Table, name: &str, ty| t.zones[0].nodes[n(name).wire()].answer(ty).clone();
        assert_eq!(answer_ttls(&a(&normal, "www.example.test", rtype::A)), vec![5]);
        assert_eq!(answer_ttls(&a(&suspect, "www.example.test", rtype::A)), vec![1]);
        // Through a CNAME, the chain's A record carries the short TTL too; the CNAME keeps its own.
        assert_eq!(answer_ttls(&a(&suspect, "alias.example.test", rtype::A)), vec![300, 1]);
        assert_eq!(answer_ttls(&a(&suspect, "mail.example.test", rtype::MX)), vec![300]);
        // Same serial, same zone data for transfers.
        assert_eq!(suspect.zones[0].serial, normal.zones[0].serial);
        assert_eq!(suspect.zones[0].records, normal.zones[0].records);
        assert!(normal.zones[0].records.iter().any(|r| r.0 == n("www.example.test") && r.1 == 5));
        // Another service being suspect changes nothing here.
        let other = compile_with(&cfg, &served, &[7], &HashSet::from(["api".to_string()]));
        assert_eq!(answer_ttls(&a(&other, "www.example.test", rtype::A)), vec![5]);
    }

    #[test]
    fn failover_record_without_an_active_target_is_nodata() {
        let t = compile(&sample(), &HashMap::new(), &[1]);
        let www = &t.zones[0].nodes[n("www.example.test").wire()];
        assert_eq!((www.answer(rtype::A).an, www.answer(rtype::A).ns), (0, 1));
    }
}
