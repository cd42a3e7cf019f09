//! Differential conformance: the same zone served by Knot DNS (`knotd`) and by understudy, the
//! same queries sent to both, and the responses compared on the rcode, every header flag, the
//! answer, authority and additional sections as sets with their TTLs, and the OPT record
//! (present or not, UDP payload size, version, DO). What is normalised, and why, is listed at
//! `Summary`: nothing else is.
//!
//! Every accepted difference is listed in the case table with the reason and what understudy
//! answers instead; a documented difference that disappears fails the test too, so this list
//! stays true.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use super::support::*;

const KNOTD: &str = "/usr/sbin/knotd";

/// knotd, killed by PID when dropped.
struct Knot {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_knot(ip: &str) -> Knot {
    require(KNOTD, "knot");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(ip);
    let d = dir.path().display();
    std::fs::write(dir.path().join("example.test.zone"), knot_zone()).unwrap();
    let conf = format!(
        "server:\n    listen: {ip}@{port}\n    rundir: {d}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
         database:\n    storage: {d}\n\
         log:\n  - target: stderr\n    any: warning\n\
         zone:\n  - domain: example.test\n    file: {d}/example.test.zone\n    journal-content: none\n    zonefile-sync: -1\n"
    );
    let conf_path = dir.path().join("knot.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(KNOTD).arg("-c").arg(&conf_path).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("start knotd");
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let knot = Knot { child, addr, _dir: dir };
    // Wait until it answers for the zone.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let q = query_bytes("example.test", RecordType::SOA, None, 0, DNSClass::IN);
        if let Some(r) = udp_raw(addr, &q, Duration::from_millis(200)).await
            && Message::from_vec(&r).is_ok_and(|m| !m.answers.is_empty())
        {
            return knot;
        }
        assert!(Instant::now() < deadline, "knotd did not answer on {addr} within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn query_bytes(name: &str, t: RecordType, edns: Option<(u16, u8)>, opcode: u8, class: DNSClass) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0x5150;
    m.metadata.op_code = OpCode::from_u8(opcode);
    m.metadata.recursion_desired = true;
    let mut q = Query::query(Name::from_ascii(name).unwrap(), t);
    q.set_query_class(class);
    m.add_query(q);
    if let Some((payload, version)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        e.set_version(version);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// What is compared of a reply. Normalised, and only this: the section order (each section is
/// compared as a set, since RFC 1035 gives RRsets no order), the case of owner names and
/// RDATA names (lowercased; both servers may echo the question's case into compressed names),
/// the SOA serial (the two servers number their zones independently), and for a transfer over
/// TCP the split into messages (the answer records of every message form one set). Everything
/// else is compared as sent: the header flags, every TTL, the additional section (glue), and
/// the OPT record's presence, version, DO bit and UDP payload size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Summary {
    rcode: String,
    /// QR, opcode, AA, TC, RD, RA, AD, CD.
    flags: String,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
    /// `udp <payload> version <v> do <bit>`, or `None` without an OPT record.
    opt: Option<String>,
}

/// `norm` plus the TTL.
fn with_ttl(r: &hickory_proto::rr::Record) -> String {
    format!("{} ttl {}", norm(r), r.ttl)
}

fn sorted(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(with_ttl).collect();
    v.sort();
    v
}

fn summarize(reply: &[Vec<u8>]) -> Option<Summary> {
    let first = reply.first()?;
    let m = match Message::from_vec(first) {
        Ok(m) => m,
        Err(e) => {
            return Some(Summary {
                rcode: format!("unparseable: {e}"),
                flags: String::new(),
                answer: vec![],
                authority: vec![],
                additional: vec![],
                opt: None,
            });
        }
    };
    let mut answer: Vec<String> = reply.iter().filter_map(|b| Message::from_vec(b).ok()).flat_map(|m| m.answers.iter().map(with_ttl).collect::<Vec<_>>()).collect();
    answer.sort();
    answer.dedup();
    let h = &m.metadata;
    let mut flags = format!("{:?} {:?}", h.message_type, h.op_code).to_ascii_lowercase();
    for (on, name) in [
        (h.authoritative, "aa"),
        (h.truncation, "tc"),
        (h.recursion_desired, "rd"),
        (h.recursion_available, "ra"),
        (h.authentic_data, "ad"),
        (h.checking_disabled, "cd"),
    ] {
        if on {
            flags.push(' ');
            flags.push_str(name);
        }
    }
    Some(Summary {
        rcode: format!("{:?}", h.response_code),
        flags,
        answer,
        authority: sorted(&m.authorities),
        additional: sorted(&m.additionals),
        opt: m.edns.as_ref().map(|e| format!("udp {} version {} do {}", e.max_payload(), e.version(), e.flags().dnssec_ok)),
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Udp,
    Tcp,
}

enum Req {
    Q { name: &'static str, t: u16, edns: Option<(u16, u8)>, opcode: u8, class: u16 },
    Raw(Vec<u8>),
}

/// What we accept when the servers differ: why, and a check of understudy's answer.
struct Differs {
    why: &'static str,
    ours: fn(&Option<Summary>) -> bool,
}

struct Case {
    label: &'static str,
    via: Via,
    req: Req,
    differs: Option<Differs>,
}

fn q(name: &'static str, t: u16) -> Req {
    Req::Q { name, t, edns: None, opcode: 0, class: 1 }
}
fn qe(name: &'static str, t: u16, payload: u16, version: u8) -> Req {
    Req::Q { name, t, edns: Some((payload, version)), opcode: 0, class: 1 }
}
fn same(label: &'static str, via: Via, req: Req) -> Case {
    Case { label, via, req, differs: None }
}

fn rcode_is(s: &Option<Summary>, rc: &str) -> bool {
    s.as_ref().is_some_and(|s| s.rcode == rc && s.answer.is_empty())
}

fn cases() -> Vec<Case> {
    use Via::*;
    const A: u16 = 1;
    const NS: u16 = 2;
    const CNAME: u16 = 5;
    const SOA: u16 = 6;
    const MX: u16 = 15;
    const TXT: u16 = 16;
    const AAAA: u16 = 28;
    const SRV: u16 = 33;
    const OPT: u16 = 41;
    const IXFR: u16 = 251;
    const AXFR: u16 = 252;
    const ANY: u16 = 255;
    const CAA: u16 = 257;
    let mut v = vec![
        same("existing name", Udp, q("www.example.test", A)),
        same("existing name over TCP", Tcp, q("www.example.test", A)),
        same("missing type: NODATA", Udp, q("www.example.test", AAAA)),
        same("missing type MX", Udp, q("www.example.test", MX)),
        same("wrong case", Udp, q("WwW.eXaMpLe.TeSt", A)),
        same("wrong case, missing name", Udp, q("NoPe.Example.TEST", A)),
        same("missing name: NXDOMAIN", Udp, q("nope.example.test", A)),
        same("missing name below a missing name", Udp, q("x.y.nope.example.test", TXT)),
        same("empty non-terminal: NODATA", Udp, q("b.c.example.test", A)),
        same("empty non-terminal, upper", Udp, q("c.example.test", TXT)),
        same("below an existing leaf: NXDOMAIN", Udp, q("deeper.www.example.test", A)),
        same("apex SOA", Udp, q("example.test", SOA)),
        same("apex NS", Udp, q("example.test", NS)),
        same("apex A: NODATA", Udp, q("example.test", A)),
        same("apex TXT", Udp, q("example.test", TXT)),
        same("apex CAA", Udp, q("example.test", CAA)),
        same("glue name", Udp, q("ns1.example.test", A)),
        same("MX with additional", Udp, q("mail.example.test", MX)),
        same("SRV", Udp, q("_sip._tcp.example.test", SRV)),
        same("SRV parent ENT", Udp, q("_tcp.example.test", SRV)),
        same("AAAA failover record", Udp, q("v6.example.test", AAAA)),
        same("A at an IPv6 failover record: NODATA", Udp, q("v6.example.test", A)),
        same("static AAAA", Udp, q("host6.example.test", AAAA)),
        same("CNAME", Udp, q("alias.example.test", A)),
        same("CNAME, asking for the CNAME", Udp, q("alias.example.test", CNAME)),
        same("CNAME to a missing type", Udp, q("alias.example.test", MX)),
        same("CNAME chain", Udp, q("chain1.example.test", A)),
        same("CNAME chain, wrong case", Udp, q("CHAIN1.example.test", AAAA)),
        same("CNAME to a missing name", Udp, q("dangling.example.test", A)),
        same("CNAME out of zone", Udp, q("outside.example.test", A)),
        same("CNAME loop", Udp, q("loop1.example.test", A)),
        same("out of zone", Udp, q("www.example.org", A)),
        same("out of zone, parent of our zone", Udp, q("test", SOA)),
        same("out of zone, root", Udp, q(".", NS)),
        same("ANY at a failover record", Udp, q("www.example.test", ANY)),
        same("ANY at the apex", Udp, q("example.test", ANY)),
        same("ANY at the apex over TCP", Tcp, q("example.test", ANY)),
        same("ANY at a CNAME", Udp, q("alias.example.test", ANY)),
        same("ANY at a missing name", Udp, q("nope.example.test", ANY)),
        same("qtype OPT", Udp, q("www.example.test", OPT)),
        same("large RRset, no EDNS: TC", Udp, q("big.example.test", TXT)),
        same("large RRset, EDNS 512: TC", Udp, qe("big.example.test", TXT, 512, 0)),
        same("large RRset, EDNS 1232: TC", Udp, qe("big.example.test", TXT, 1232, 0)),
        same("large RRset, EDNS 4096", Udp, qe("big.example.test", TXT, 4096, 0)),
        same("large RRset over TCP", Tcp, q("big.example.test", TXT)),
        same("EDNS 1232", Udp, qe("www.example.test", A, 1232, 0)),
        same("EDNS payload below 512", Udp, qe("www.example.test", A, 100, 0)),
        same("EDNS version 1: BADVERS", Udp, qe("www.example.test", A, 1232, 1)),
        same("EDNS version 1 out of zone", Udp, qe("www.example.org", A, 1232, 1)),
        same("AXFR over UDP: NOTIMP", Udp, q("example.test", AXFR)),
        Case {
            label: "AXFR from a client not allowed",
            via: Tcp,
            req: q("example.test", AXFR),
            differs: Some(Differs {
                why: "Knot answers NOTAUTH when its ACL denies a transfer; understudy answers REFUSED, as BIND does and as \
                      RFC 5936 section 2.2.1 suggests for policy refusals",
                ours: |s| rcode_is(s, "Refused"),
            }),
        },
        Case {
            label: "IXFR from a client not allowed",
            via: Tcp,
            req: q("example.test", IXFR),
            differs: Some(Differs { why: "as for AXFR: REFUSED instead of Knot's NOTAUTH", ours: |s| rcode_is(s, "Refused") }),
        },
        Case {
            label: "NOTIFY",
            via: Udp,
            req: Req::Q { name: "example.test", t: SOA, edns: None, opcode: 4, class: 1 },
            differs: Some(Differs {
                why: "understudy is never a secondary and implements only QUERY, so every other opcode gets NOTIMP \
                      (RFC 1035 4.1.1); Knot answers NOTIFY for a zone it is primary for with NOTAUTH",
                ours: |s| rcode_is(s, "NotImp"),
            }),
        },
        Case {
            label: "UPDATE",
            via: Udp,
            req: Req::Q { name: "example.test", t: SOA, edns: None, opcode: 5, class: 1 },
            differs: Some(Differs {
                why: "NOTIMP: dynamic updates are not supported (failover records change only through decisions); \
                      Knot without an update ACL answers NOTAUTH",
                ours: |s| rcode_is(s, "NotImp"),
            }),
        },
        same("opcode STATUS", Udp, Req::Q { name: "example.test", t: SOA, edns: None, opcode: 2, class: 1 }),
        same("opcode STATUS with CD and EDNS", Udp, Req::Raw(status_with_cd())),
        Case {
            label: "CH class version.bind",
            via: Udp,
            req: Req::Q { name: "version.bind", t: TXT, edns: None, opcode: 0, class: 3 },
            differs: Some(Differs {
                why: "understudy does not reveal its version (class CH is REFUSED); Knot answers version.bind by default",
                ours: |s| rcode_is(s, "Refused"),
            }),
        },
        same("class CH in our zone", Udp, Req::Q { name: "www.example.test", t: A, edns: None, opcode: 0, class: 3 }),
        same("class ANY in our zone", Udp, Req::Q { name: "www.example.test", t: A, edns: None, opcode: 0, class: 255 }),
        same("NXDOMAIN over TCP", Tcp, q("nope.example.test", A)),
        same("NODATA over TCP", Tcp, q("www.example.test", AAAA)),
        same("out of zone over TCP", Tcp, q("www.example.org", A)),
        same("CNAME chain over TCP", Tcp, q("chain1.example.test", A)),
        same("EDNS over TCP", Tcp, qe("big.example.test", TXT, 512, 0)),
        same("EDNS version 1 over TCP", Tcp, qe("www.example.test", A, 1232, 1)),
        same("NXDOMAIN with EDNS", Udp, qe("nope.example.test", A, 1232, 0)),
        same("MX with EDNS 512", Udp, qe("mail.example.test", MX, 512, 0)),
        same("apex NS with EDNS", Udp, qe("example.test", NS, 4096, 0)),
        same("SOA of a name below the apex: NODATA", Udp, q("www.example.test", SOA)),
        same("NS below the apex: NODATA", Udp, q("mail.example.test", NS)),
        same("CNAME of a non-CNAME name: NODATA", Udp, q("www.example.test", CNAME)),
        same("SRV wrong case", Udp, q("_SIP._TCP.EXAMPLE.TEST", SRV)),
    ];
    // Malformed and odd packets.
    let good = query_bytes("www.example.test", RecordType::A, None, 0, DNSClass::IN);
    let mut truncated_question = good.clone();
    truncated_question.truncate(20);
    let mut two_questions = good.clone();
    two_questions[5] = 2;
    two_questions.extend_from_slice(&good[12..]);
    let mut no_question = good[..12].to_vec();
    no_question[5] = 0;
    let mut response = good.clone();
    response[2] |= 0x80;
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[1, 2, 3]);
    let mut bad_label = good.clone();
    bad_label[12] = 0x41; // label type 01: reserved
    let mut pointer_loop = good[..12].to_vec();
    pointer_loop.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    let mut two_opts = query_bytes("www.example.test", RecordType::A, Some((1232, 0)), 0, DNSClass::IN);
    two_opts[11] = 2;
    two_opts.extend_from_slice(&[0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]);
    // Knot drops a query whose question section cannot be parsed; understudy answers FORMERR
    // (a bare header, no larger than what it received, so it amplifies nothing), as RFC 1035
    // 4.1.1 describes and issue 3 asks.
    const FORMERR_NOT_SILENCE: &str = "Knot drops queries whose question cannot be parsed; understudy answers FORMERR \
                                       (a 12-byte header: no amplification), per RFC 1035 4.1.1";
    let formerr = |label, req| Case {
        label,
        via: Udp,
        req: Req::Raw(req),
        differs: Some(Differs { why: FORMERR_NOT_SILENCE, ours: |s| rcode_is(s, "FormErr") }),
    };
    // EDNS with the DO bit and an unknown option (code 65001): ignored by both.
    let mut edns_opt = query_bytes("www.example.test", RecordType::A, None, 0, DNSClass::IN);
    edns_opt[11] = 1;
    edns_opt.extend_from_slice(&[0, 0, 41, 4, 0xD0, 0, 0, 0x80, 0, 0, 8, 0xFD, 0xE9, 0, 4, 1, 2, 3, 4]);
    let mut edns_bad_opt = edns_opt.clone();
    let n = edns_bad_opt.len();
    edns_bad_opt[n - 5] = 9; // option length runs past the RDATA
    v.extend([same("EDNS DO bit and an unknown option", Udp, Req::Raw(edns_opt)), same("EDNS option overrunning its RDATA", Udp, Req::Raw(edns_bad_opt))]);
    v.extend([
        same("header only, 5 bytes", Udp, Req::Raw(good[..5].to_vec())),
        formerr("truncated question", truncated_question),
        formerr("qdcount 2", two_questions),
        same("qdcount 0", Udp, Req::Raw(no_question)),
        same("a response (QR=1): no answer", Udp, Req::Raw(response)),
        same("trailing garbage", Udp, Req::Raw(trailing)),
        formerr("reserved label type", bad_label),
        formerr("compression pointer in the question", pointer_loop),
        same("two OPT records", Udp, Req::Raw(two_opts)),
    ]);
    v
}

fn bytes_of(req: &Req) -> Vec<u8> {
    match req {
        Req::Q { name, t, edns, opcode, class } => query_bytes(name, RecordType::from(*t), *edns, *opcode, DNSClass::from(*class)),
        Req::Raw(b) => b.clone(),
    }
}

async fn ask(server: SocketAddr, via: Via, req: &[u8]) -> Vec<Vec<u8>> {
    match via {
        Via::Udp => udp_raw(server, req, Duration::from_millis(700)).await.into_iter().collect(),
        Via::Tcp => tcp_raw(server, None::<IpAddr>, req, Duration::from_millis(1500)).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_as_knot() {
    let knot = start_knot("127.0.0.31").await;
    let ours = start("127.0.0.32", "");
    let us = ours.local_addrs()[0];
    let mut failures = Vec::new();
    let mut accepted = Vec::new();
    // How many identical answers had each part to compare, so a summary that lost a section
    // (or a zone without glue) cannot make the comparison pass on empty sets.
    let (mut with_additional, mut with_opt, mut with_tc, mut with_aa) = (0, 0, 0, 0);
    for case in cases() {
        let req = bytes_of(&case.req);
        let k = summarize(&ask(knot.addr, case.via, &req).await);
        let u = summarize(&ask(us, case.via, &req).await);
        match &case.differs {
            None if k == u => {
                if let Some(s) = &u {
                    with_additional += usize::from(!s.additional.is_empty());
                    with_opt += usize::from(s.opt.is_some());
                    with_tc += usize::from(s.flags.contains(" tc"));
                    with_aa += usize::from(s.flags.contains(" aa"));
                }
            }
            None => failures.push(format!("{} ({:?}):\n  knot: {k:?}\n  ours: {u:?}", case.label, case.via)),
            Some(d) => {
                if k == u {
                    failures.push(format!("{}: documented difference is gone (both {k:?}); update the case", case.label));
                } else if !(d.ours)(&u) {
                    failures.push(format!("{}: understudy's answer is not the documented one: {u:?} (knot {k:?})", case.label));
                } else {
                    accepted.push(format!("{}: {}", case.label, d.why));
                }
            }
        }
    }
    ours.stop();
    drop(knot);
    for a in &accepted {
        eprintln!("accepted difference: {a}");
    }
    assert!(failures.is_empty(), "{} of {} cases differ from Knot:\n{}", failures.len(), cases().len(), failures.join("\n"));
    eprintln!("identical answers with: an additional section {with_additional}, OPT {with_opt}, TC {with_tc}, AA {with_aa}");
    assert!(with_additional >= 2 && with_opt >= 8 && with_tc >= 3 && with_aa >= 20, "too little compared: additional {with_additional}, OPT {with_opt}, TC {with_tc}, AA {with_aa}");
}

/// Opcode STATUS with the CD bit set and an OPT record (what EDNS compliance testers send).
fn status_with_cd() -> Vec<u8> {
    let mut b = query_bytes("example.test", RecordType::SOA, Some((1232, 0)), 2, DNSClass::IN);
    b[3] |= 0x10;
    b
}

/// A NOTIMP answer does not echo CD (nothing was checked): Knot clears it, and so do we.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notimp_clears_cd_like_knot() {
    let knot = start_knot("127.0.0.33").await;
    let ours = start("127.0.0.34", "");
    let req = status_with_cd();
    let k = udp_raw(knot.addr, &req, Duration::from_millis(700)).await.expect("knot answers opcode STATUS");
    let u = udp_raw(ours.local_addrs()[0], &req, Duration::from_millis(700)).await.expect("understudy answers opcode STATUS");
    ours.stop();
    assert_eq!((k[3] & 0x0F, u[3] & 0x0F), (4, 4), "both answer NOTIMP");
    assert_eq!(k[3] & 0x10, 0, "knot clears CD");
    assert_eq!(u[3] & 0x10, 0, "understudy echoed CD in a NOTIMP answer");
}
