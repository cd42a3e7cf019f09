//! TSIG (RFC 8945): signing DNS messages with a shared secret and checking signed answers.
//!
//! Written here rather than taken from hickory-proto: hickory's `TSigner` needs its DNSSEC
//! feature set (another crypto stack beside ring), and the same code signs the RFC 2136
//! UPDATEs we send and is meant to serve the built-in server's transfers, which write their
//! own wire format. HMAC-SHA256/384/512 only (what BIND, Knot and PowerDNS generate by
//! default; HMAC-MD5 and SHA-1 are deprecated by RFC 8945 6).
//!
//! [`sign`] appends a TSIG record to a finished message; [`verify`] finds the TSIG record of
//! an answer, checks its MAC against the request's, and returns the TSIG error field (so a
//! caller can say "key rejected" instead of a generic failure). Neither does I/O, reads the
//! clock (time is a parameter) nor panics on hostile input.

use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};

use crate::dns::name::Name;
use crate::dns::wire::rtype;

/// The CLASS of a TSIG record (ANY).
const CLASS_ANY: u16 = 255;
/// The fudge we send: how far apart our clock and the server's may be (RFC 8945 recommends 300 s).
pub const FUDGE: u16 = 300;

/// TSIG error codes (RFC 8945 3, the extended RCODE space).
pub mod error {
    pub const BADSIG: u16 = 16;
    pub const BADKEY: u16 = 17;
    pub const BADTIME: u16 = 18;
    pub const BADTRUNC: u16 = 22;

    /// A TSIG error for people.
    pub fn describe(code: u16) -> String {
        match code {
            BADSIG => "BADSIG (the secret does not match the server's)".into(),
            BADKEY => "BADKEY (the server does not know this key name and algorithm)".into(),
            BADTIME => "BADTIME (our clock and the server's are more than the fudge apart)".into(),
            BADTRUNC => "BADTRUNC".into(),
            other => format!("TSIG error {other}"),
        }
    }
}

/// The HMAC a key uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Algorithm {
    /// From the config's spelling (`hmac-sha256`), as BIND and Knot write it.
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s.trim().trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Some(Algorithm::HmacSha256),
            "hmac-sha384" => Some(Algorithm::HmacSha384),
            "hmac-sha512" => Some(Algorithm::HmacSha512),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha384 => "hmac-sha384",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }

    /// The algorithm's name as it appears in the TSIG record.
    pub fn name(self) -> Name {
        Name::parse_absolute(self.as_str()).expect("algorithm names are valid names")
    }

    fn mac(self, secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut m = <M as hmac::digest::KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Algorithm::HmacSha256 => run::<Hmac<Sha256>>(secret, parts),
            Algorithm::HmacSha384 => run::<Hmac<Sha384>>(secret, parts),
            Algorithm::HmacSha512 => run::<Hmac<Sha512>>(secret, parts),
        }
    }
}

/// A TSIG key: its name, algorithm and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    pub name: Name,
    pub algorithm: Algorithm,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} {}, ***)", self.name, self.algorithm.as_str())
    }
}

/// Read a TSIG secret: plain base64, or a BIND key file (`key "name" { algorithm ...; secret
/// "..."; };`) as `tsig-keygen` writes it, from which the `secret` is taken.
pub fn parse_secret(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let t = text.trim();
    let b64 = match t.find("secret") {
        Some(at) if t.contains('{') => {
            let rest = &t[at + "secret".len()..];
            let open = rest.find('"').ok_or("the key file has `secret` without a quoted value")?;
            let close = rest[open + 1..].find('"').ok_or("the key file's secret has no closing quote")?;
            rest[open + 1..open + 1 + close].to_string()
        }
        _ => t.to_string(),
    };
    let b64: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    let secret = base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()).map_err(|e| format!("the TSIG secret is not base64: {e}"))?;
    if secret.is_empty() {
        return Err("the TSIG secret is empty".into());
    }
    Ok(secret)
}

/// The TSIG variables of RFC 8945 4.3.3, after the key name and class/TTL.
fn variables(key: &Key, time: u64, fudge: u16, err: u16, other: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(key.name.wire());
    v.extend_from_slice(&CLASS_ANY.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(key.algorithm.name().wire());
    v.extend_from_slice(&time.to_be_bytes()[2..]);
    v.extend_from_slice(&fudge.to_be_bytes());
    v.extend_from_slice(&err.to_be_bytes());
    v.extend_from_slice(&(other.len() as u16).to_be_bytes());
    v.extend_from_slice(other);
    v
}

/// Sign `msg` (a complete message without TSIG) at `time` (seconds since the epoch). For a
/// response, `request_mac` is the MAC of the signed request it answers (RFC 8945 4.3.1); `err`
/// is the TSIG error to report (0 normally; BADSIG/BADKEY answers carry an empty MAC, see
/// [`error_record`]). Returns the signed message and its MAC.
pub fn sign(msg: &[u8], key: &Key, time: u64, request_mac: Option<&[u8]>) -> (Vec<u8>, Vec<u8>) {
    let vars = variables(key, time, FUDGE, 0, &[]);
    let mut parts: Vec<&[u8]> = Vec::with_capacity(4);
    let len;
    if let Some(rm) = request_mac {
        len = (rm.len() as u16).to_be_bytes();
        parts.push(&len);
        parts.push(rm);
    }
    parts.push(msg);
    parts.push(&vars);
    let mac = key.algorithm.mac(&key.secret, &parts);
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    (append(msg, key, time, &mac, id, 0), mac)
}

/// Sign a later message of a multi-message answer (a zone transfer over TCP, RFC 8945 5.3.1):
/// the digest covers the previous message's MAC, this message and the timers only.
pub fn sign_next(msg: &[u8], key: &Key, time: u64, prior_mac: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let len = (prior_mac.len() as u16).to_be_bytes();
    let mut timers = Vec::with_capacity(8);
    timers.extend_from_slice(&time.to_be_bytes()[2..]);
    timers.extend_from_slice(&FUDGE.to_be_bytes());
    let mac = key.algorithm.mac(&key.secret, &[&len, prior_mac, msg, &timers]);
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    (append(msg, key, time, &mac, id, 0), mac)
}

/// An unsigned answer carrying a TSIG error (BADKEY, BADSIG: RFC 8945 5.2): `msg` with a TSIG
/// record naming `key_name`/`algorithm`, an empty MAC and `err`.
pub fn error_record(msg: &[u8], key_name: &Name, algorithm: &Name, time: u64, err: u16) -> Vec<u8> {
    let mut out = msg.to_vec();
    bump_arcount(&mut out, 1);
    out.extend_from_slice(key_name.wire());
    out.extend_from_slice(&rtype::TSIG.to_be_bytes());
    out.extend_from_slice(&CLASS_ANY.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    let rdlen = algorithm.wire().len() + 6 + 2 + 2 + 2 + 2 + 2;
    out.extend_from_slice(&(rdlen as u16).to_be_bytes());
    out.extend_from_slice(algorithm.wire());
    out.extend_from_slice(&time.to_be_bytes()[2..]);
    out.extend_from_slice(&FUDGE.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&msg[0..2]);
    out.extend_from_slice(&err.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out
}

fn bump_arcount(msg: &mut [u8], by: u16) {
    let ar = u16::from_be_bytes([msg[10], msg[11]]).wrapping_add(by);
    msg[10..12].copy_from_slice(&ar.to_be_bytes());
}

fn append(msg: &[u8], key: &Key, time: u64, mac: &[u8], original_id: u16, err: u16) -> Vec<u8> {
    let alg = key.algorithm.name();
    let mut out = Vec::with_capacity(msg.len() + 64 + mac.len());
    out.extend_from_slice(msg);
    bump_arcount(&mut out, 1);
    out.extend_from_slice(key.name.wire());
    out.extend_from_slice(&rtype::TSIG.to_be_bytes());
    out.extend_from_slice(&CLASS_ANY.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    let rdlen = alg.wire().len() + 6 + 2 + 2 + mac.len() + 2 + 2 + 2;
    out.extend_from_slice(&(rdlen as u16).to_be_bytes());
    out.extend_from_slice(alg.wire());
    out.extend_from_slice(&time.to_be_bytes()[2..]);
    out.extend_from_slice(&FUDGE.to_be_bytes());
    out.extend_from_slice(&(mac.len() as u16).to_be_bytes());
    out.extend_from_slice(mac);
    out.extend_from_slice(&original_id.to_be_bytes());
    out.extend_from_slice(&err.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out
}

/// The TSIG record found at the end of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub key_name: Name,
    pub algorithm: Name,
    pub time: u64,
    pub fudge: u16,
    pub mac: Vec<u8>,
    pub original_id: u16,
    pub error: u16,
    pub other: Vec<u8>,
    /// Where the TSIG record starts in the message.
    pub start: usize,
}

/// The TSIG record of `msg`, if its last additional record is one. `None` for unsigned or
/// malformed messages.
pub fn find(msg: &[u8]) -> Option<Found> {
    let counts: Vec<u16> = (0..4).map(|i| u16::from_be_bytes([msg.get(4 + 2 * i).copied().unwrap_or(0), msg.get(5 + 2 * i).copied().unwrap_or(0)])).collect();
    if msg.len() < 12 || counts[3] == 0 {
        return None;
    }
    let mut at = 12;
    for _ in 0..counts[0] {
        at = super::msg::skip_name(msg, at)? + 4;
    }
    let total = counts[1] as usize + counts[2] as usize + counts[3] as usize;
    for _ in 0..total - 1 {
        at = super::msg::skip_record(msg, at)?;
    }
    let start = at;
    let (key_name, at) = super::msg::read_name(msg, at)?;
    let t = super::msg::u16_at(msg, at)?;
    if t != rtype::TSIG {
        return None;
    }
    let rdlen = super::msg::u16_at(msg, at + 8)? as usize;
    let rd = at + 10;
    let end = rd.checked_add(rdlen)?;
    if end != msg.len() {
        return None;
    }
    let (algorithm, mut p) = super::msg::read_name(msg, rd)?;
    let time_b = msg.get(p..p + 6)?;
    let time = time_b.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
    p += 6;
    let fudge = super::msg::u16_at(msg, p)?;
    let mac_len = super::msg::u16_at(msg, p + 2)? as usize;
    let mac = msg.get(p + 4..p + 4 + mac_len)?.to_vec();
    p += 4 + mac_len;
    let original_id = super::msg::u16_at(msg, p)?;
    let error = super::msg::u16_at(msg, p + 2)?;
    let other_len = super::msg::u16_at(msg, p + 4)? as usize;
    let other = msg.get(p + 6..p + 6 + other_len)?.to_vec();
    if p + 6 + other_len != end {
        return None;
    }
    Some(Found { key_name, algorithm, time, fudge, mac, original_id, error, other, start })
}

/// What checking a signed message found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The MAC is right and the time within the fudge; the MAC, for signing a reply.
    Valid { mac: Vec<u8> },
    /// The message carries no TSIG record.
    Unsigned,
    /// Signed with a key name or algorithm other than `key`'s.
    OtherKey(Found),
    /// The peer reports a TSIG error (its MAC is then empty).
    PeerError(u16),
    /// The MAC does not match.
    BadSig,
    /// The MAC matches but the time is outside the fudge.
    BadTime(Found),
}

/// Check the TSIG record of `msg` with `key` at `now` (seconds since the epoch). For a
/// response, `request_mac` is the MAC of our request.
pub fn verify(msg: &[u8], key: &Key, now: u64, request_mac: Option<&[u8]>) -> Checked {
    let Some(f) = find(msg) else { return Checked::Unsigned };
    if f.error != 0 {
        return Checked::PeerError(f.error);
    }
    if f.key_name != key.name || f.algorithm != key.algorithm.name() {
        return Checked::OtherKey(f);
    }
    let mut body = msg[..f.start].to_vec();
    body[0..2].copy_from_slice(&f.original_id.to_be_bytes());
    bump_arcount(&mut body, u16::MAX); // minus one
    let vars = variables(key, f.time, f.fudge, f.error, &f.other);
    let mut parts: Vec<&[u8]> = Vec::with_capacity(4);
    let len;
    if let Some(rm) = request_mac {
        len = (rm.len() as u16).to_be_bytes();
        parts.push(&len);
        parts.push(rm);
    }
    parts.push(&body);
    parts.push(&vars);
    let want = key.algorithm.mac(&key.secret, &parts);
    if !constant_time_eq(&want, &f.mac) {
        return Checked::BadSig;
    }
    if now.abs_diff(f.time) > f.fudge as u64 {
        return Checked::BadTime(f);
    }
    Checked::Valid { mac: f.mac }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key { name: Name::parse_absolute("understudy").unwrap(), algorithm: Algorithm::HmacSha256, secret: b"0123456789abcdef".to_vec() }
    }

    fn query() -> Vec<u8> {
        crate::dns::client::build_query(0x1234, &Name::parse_absolute("www.example.test").unwrap(), rtype::A)
    }

    #[test]
    fn a_signed_message_verifies_and_a_changed_one_does_not() {
        let (signed, mac) = sign(&query(), &key(), 1_700_000_000, None);
        assert_eq!(verify(&signed, &key(), 1_700_000_100, None), Checked::Valid { mac: mac.clone() });
        let mut flipped = signed.clone();
        flipped[14] ^= 1;
        assert_eq!(verify(&flipped, &key(), 1_700_000_100, None), Checked::BadSig);
        let other = Key { secret: b"another secret!!".to_vec(), ..key() };
        assert_eq!(verify(&signed, &other, 1_700_000_100, None), Checked::BadSig);
        assert!(matches!(verify(&signed, &key(), 1_700_001_000, None), Checked::BadTime(_)));
        assert_eq!(verify(&query(), &key(), 0, None), Checked::Unsigned);
    }

    #[test]
    fn a_response_is_bound_to_its_request_mac() {
        let (_, req_mac) = sign(&query(), &key(), 1_700_000_000, None);
        let mut resp = query();
        resp[2] |= 0x80;
        let (signed, _) = sign(&resp, &key(), 1_700_000_001, Some(&req_mac));
        assert!(matches!(verify(&signed, &key(), 1_700_000_001, Some(&req_mac)), Checked::Valid { .. }));
        assert_eq!(verify(&signed, &key(), 1_700_000_001, Some(&[0u8; 32])), Checked::BadSig);
    }

    /// Cross-check with an independent implementation: hickory-proto (without its DNSSEC
    /// features, so it keeps TSIG as an opaque record) reads our signed message, with the TSIG
    /// record last in the additional section.
    #[test]
    fn hickory_reads_our_signed_message() {
        use hickory_proto::op::Message;
        use hickory_proto::rr::RecordType;
        let (signed, mac) = sign(&query(), &key(), 1_700_000_000, None);
        let m = Message::from_vec(&signed).expect("hickory parses the signed message");
        let last = m.additionals.last().expect("a TSIG record");
        assert_eq!((last.record_type(), last.name.to_string().as_str()), (RecordType::TSIG, "understudy."));
        assert_eq!(m.queries.len(), 1);
        assert_eq!(find(&signed).unwrap().mac, mac);
    }

    #[test]
    fn error_records_and_secrets() {
        let alg = Algorithm::HmacSha256.name();
        let msg = error_record(&query(), &Name::parse_absolute("nobody").unwrap(), &alg, 5, error::BADKEY);
        let f = find(&msg).unwrap();
        assert_eq!((f.error, f.mac.len(), f.original_id), (error::BADKEY, 0, 0x1234));
        assert_eq!(verify(&msg, &key(), 5, None), Checked::PeerError(error::BADKEY));
        assert_eq!(parse_secret("c2VjcmV0").unwrap(), b"secret");
        let bind = "key \"understudy\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n";
        assert_eq!(parse_secret(bind).unwrap(), b"secret");
        assert!(parse_secret("not base64!").is_err());
        assert!(find(&[0u8; 3]).is_none());
    }
}
