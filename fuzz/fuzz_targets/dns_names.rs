//! Fuzz DNS names and the compressing writer (`dns/name.rs`, `dns/wire.rs`).
//!
//! Names come from dotted text (`Name::parse_absolute`, `Name::parse_in`, as the config writes
//! them) and from raw wire bytes (`Name::from_wire`); none of these may panic, and a parsed
//! name must be valid wire format that prints and parses back to itself. Then a message is
//! written with the writer, compressing names against each other, and parsed with
//! hickory-proto (an independent implementation): every owner name and every CNAME/NS/MX target
//! must decode to exactly the name that was written. Nothing here does I/O.
#![no_main]

use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use hickory_proto::serialize::binary::BinEncodable;
use libfuzzer_sys::arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use understudy::dns::name::Name;
use understudy::dns::wire::{Rdata, Writer};

#[derive(Debug)]
enum Src {
    Text(String),
    Relative(String, String),
    Wire(Vec<u8>),
}

impl<'a> Arbitrary<'a> for Src {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0..=2)? {
            0 => Src::Text(u.arbitrary()?),
            1 => Src::Relative(u.arbitrary()?, u.arbitrary()?),
            _ => Src::Wire(u.arbitrary()?),
        })
    }
}

fn build(src: &Src) -> Option<Name> {
    match src {
        Src::Text(s) => Name::parse_absolute(s).ok(),
        Src::Relative(s, origin) => Name::parse_in(s, &Name::parse_absolute(origin).ok()?).ok(),
        Src::Wire(w) => Name::from_wire(w),
    }
}

/// Lowercase uncompressed wire bytes of a hickory name.
fn wire_of(n: &hickory_proto::rr::Name) -> Vec<u8> {
    n.to_bytes().expect("a decoded name encodes").to_ascii_lowercase()
}

/// Whether every label holds only letters, digits, `-` and `_`.
fn config_alphabet(wire: &[u8]) -> bool {
    let mut i = 0;
    while i < wire.len() && wire[i] != 0 {
        let len = wire[i] as usize;
        let Some(label) = wire.get(i + 1..i + 1 + len) else { return false };
        if !label.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') {
            return false;
        }
        i += 1 + len;
    }
    true
}

fn check_name(n: &Name) {
    let w = n.wire();
    assert!(w.len() <= 255 && w.last() == Some(&0), "bad wire form {w:?}");
    assert_eq!(Name::from_wire(w).as_ref(), Some(n), "wire form does not read back");
    assert_eq!(w, w.to_ascii_lowercase().as_slice(), "names are lowercase");
    // Names from the config's alphabet print and parse back; other bytes may be escaped.
    if config_alphabet(w) {
        let shown = n.to_string();
        assert_eq!(Name::parse_absolute(&shown).as_ref(), Ok(n), "{shown} does not parse back");
    }
    let _ = n.parent();
    let _ = n.label_count();
    let _ = n.is_within(&Name::root());
}

fuzz_target!(|input: (Vec<Src>, Vec<(u8, u32, u16)>)| {
    let (srcs, recs) = input;
    let names: Vec<Name> = srcs.iter().filter_map(build).collect();
    for n in &names {
        check_name(n);
    }
    if names.is_empty() {
        return;
    }
    // A response with an answer section only, every record naming names from the list.
    let mut w = Writer::new();
    w.buf.extend_from_slice(&[0x12, 0x34, 0x84, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut written = Vec::new();
    for (i, (kind, ttl, pick)) in recs.iter().take(64).enumerate() {
        let owner = &names[i % names.len()];
        let target = &names[*pick as usize % names.len()];
        let rdata = match kind % 5 {
            0 => Rdata::Cname(target.clone()),
            1 => Rdata::Ns(target.clone()),
            2 => Rdata::Mx { preference: *pick, exchange: target.clone() },
            3 => Rdata::A(std::net::Ipv4Addr::from(*ttl)),
            _ => Rdata::Txt(vec![owner.wire().to_vec()]),
        };
        let before = w.buf.len();
        w.record(owner, *ttl & 0x7FFF_FFFF, &rdata);
        if w.buf.len() > 65535 {
            w.buf.truncate(before);
            break;
        }
        written.push((owner.clone(), rdata));
    }
    let count = written.len() as u16;
    w.buf[6..8].copy_from_slice(&count.to_be_bytes());
    let msg = match Message::from_vec(&w.buf) {
        Ok(m) => m,
        Err(e) => panic!("written message does not parse with hickory-proto: {e}; {:?}", w.buf),
    };
    assert_eq!(msg.answers.len(), written.len());
    for (rec, (owner, rdata)) in msg.answers.iter().zip(&written) {
        assert_eq!(wire_of(&rec.name), owner.wire(), "owner name");
        let target = match (&rec.data, rdata) {
            (RData::CNAME(c), Rdata::Cname(t)) => Some((&c.0, t)),
            (RData::NS(n), Rdata::Ns(t)) => Some((&n.0, t)),
            (RData::MX(m), Rdata::Mx { exchange, .. }) => Some((&m.exchange, exchange)),
            (RData::A(_), Rdata::A(_)) | (RData::TXT(_), Rdata::Txt(_)) => None,
            (got, want) => panic!("record type changed: wrote {want:?}, read {got:?}"),
        };
        if let Some((got, want)) = target {
            assert_eq!(wire_of(got), want.wire(), "rdata name");
        }
    }
});
