//! VRRPv3 advertisements (RFC 5798 section 5) on the wire: build one, and check one received.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! |                       IPvX Address(es)                        |
//! ```
//!
//! The checksum covers the VRRP message and a pseudo-header (RFC 5798 5.2.8): for IPv6 the
//! RFC 2460 8.1 one (source, destination, upper-layer length, next header 112); for IPv4 the
//! same fields in IPv4 form (source, destination, zero, protocol 112, length), which is what
//! RFC 5798 asks of VRRPv3 over IPv4 and what keepalived and Wireshark compute.
//!
//! [`parse`] checks everything RFC 5798 7.1 asks of a receiver that does not need the
//! instance's state: TTL / hop limit 255, version 3, type 1, length, address count, checksum,
//! a non-zero advertisement interval. It never panics on any input (a property test feeds it
//! arbitrary bytes). This module does no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP.
pub const PROTO: u8 = 112;
/// The only TTL / hop limit a VRRP packet may be sent or accepted with.
pub const TTL: u8 = 255;
pub const VERSION: u8 = 3;
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Version/type, VRID, priority, count, interval, checksum.
pub const HEADER_LEN: usize = 8;
/// The interval field is 12 bits of centiseconds.
pub const MAX_INTERVAL_CS: u16 = 0x0fff;

/// One advertisement, as sent or as received after the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub vrid: u8,
    pub priority: u8,
    /// Advertisement interval in centiseconds (1..=4095).
    pub interval_cs: u16,
    /// The virtual addresses; all of the family the packet travels in.
    pub addresses: Vec<IpAddr>,
}

/// Why a received packet was dropped. Each has its own counter in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("packet shorter than its headers")]
    Short,
    #[error("TTL / hop limit is not 255 (sent from off-link)")]
    Ttl,
    #[error("not VRRP version 3")]
    Version,
    #[error("not an advertisement")]
    Type,
    #[error("address count does not match the packet length")]
    Length,
    #[error("bad checksum")]
    Checksum,
    #[error("advertisement interval of zero")]
    Interval,
    #[error("not an IPv4 packet carrying VRRP")]
    NotVrrp,
}

impl Malformed {
    /// Label for the metric of dropped packets.
    pub fn label(self) -> &'static str {
        match self {
            Malformed::Short => "short",
            Malformed::Ttl => "ttl",
            Malformed::Version => "version",
            Malformed::Type => "type",
            Malformed::Length => "length",
            Malformed::Checksum => "checksum",
            Malformed::Interval => "interval",
            Malformed::NotVrrp => "not_vrrp",
        }
    }
}

fn addr_len(v6: bool) -> usize {
    if v6 { 16 } else { 4 }
}

/// One's complement sum folded to 16 bits, starting from `sum`.
fn ones_sum(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// The sum of the pseudo-header for a VRRP message of `len` bytes from `src` to `dst`.
fn pseudo_sum(src: IpAddr, dst: IpAddr, len: usize) -> u32 {
    let mut sum = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = ones_sum(sum, &s.octets());
            sum = ones_sum(sum, &d.octets());
            sum = ones_sum(sum, &[0, PROTO]);
            sum = ones_sum(sum, &(len as u16).to_be_bytes());
        }
        _ => {
            sum = ones_sum(sum, &v6(src).octets());
            sum = ones_sum(sum, &v6(dst).octets());
            sum = ones_sum(sum, &(len as u32).to_be_bytes());
            sum = ones_sum(sum, &[0, 0, 0, PROTO]);
        }
    }
    sum
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// The checksum of `msg` (with its checksum field zero or not: it is computed as if zero).
pub fn checksum(src: IpAddr, dst: IpAddr, msg: &[u8]) -> u16 {
    let mut sum = pseudo_sum(src, dst, msg.len());
    if msg.len() >= HEADER_LEN {
        sum = ones_sum(sum, &msg[..6]);
        sum = ones_sum(sum, &msg[HEADER_LEN..]);
    } else {
        sum = ones_sum(sum, msg);
    }
    !(sum as u16)
}

impl Advert {
    /// The VRRP message (no IP header) from `src` to `dst`, checksum filled in. Addresses of
    /// the other family than `src` are left out (an instance has one family; config checks it).
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let is_v6 = src.is_ipv6();
        let addrs: Vec<&IpAddr> = self.addresses.iter().filter(|a| a.is_ipv6() == is_v6).take(255).collect();
        let mut b = Vec::with_capacity(HEADER_LEN + addrs.len() * addr_len(is_v6));
        let interval = self.interval_cs.min(MAX_INTERVAL_CS);
        b.push((VERSION << 4) | TYPE_ADVERTISEMENT);
        b.push(self.vrid);
        b.push(self.priority);
        b.push(addrs.len() as u8);
        b.extend_from_slice(&interval.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        for a in addrs {
            match a {
                IpAddr::V4(a) => b.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => b.extend_from_slice(&a.octets()),
            }
        }
        let c = checksum(src, dst, &b);
        b[6..8].copy_from_slice(&c.to_be_bytes());
        b
    }
}

/// Check and decode a VRRP message (no IP header) received from `src` for `dst` with IP TTL /
/// hop limit `ttl`.
pub fn parse(msg: &[u8], src: IpAddr, dst: IpAddr, ttl: u8) -> Result<Advert, Malformed> {
    if ttl != TTL {
        return Err(Malformed::Ttl);
    }
    if msg.len() < HEADER_LEN {
        return Err(Malformed::Short);
    }
    if msg[0] >> 4 != VERSION {
        return Err(Malformed::Version);
    }
    if msg[0] & 0x0f != TYPE_ADVERTISEMENT {
        return Err(Malformed::Type);
    }
    let is_v6 = src.is_ipv6();
    let count = usize::from(msg[3]);
    if msg.len() != HEADER_LEN + count * addr_len(is_v6) {
        return Err(Malformed::Length);
    }
    let got = u16::from_be_bytes([msg[6], msg[7]]);
    if checksum(src, dst, msg) != got {
        return Err(Malformed::Checksum);
    }
    let interval_cs = u16::from_be_bytes([msg[4], msg[5]]) & MAX_INTERVAL_CS;
    if interval_cs == 0 {
        return Err(Malformed::Interval);
    }
    let addresses = msg[HEADER_LEN..]
        .chunks_exact(addr_len(is_v6))
        .map(|c| match <[u8; 16]>::try_from(c) {
            Ok(a) => IpAddr::V6(Ipv6Addr::from(a)),
            Err(_) => IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])),
        })
        .collect();
    Ok(Advert { vrid: msg[1], priority: msg[2], interval_cs, addresses })
}

/// What an IPv4 raw socket hands us: the IP header, then the VRRP message. Returns
/// (source, destination, TTL, the VRRP message).
pub fn split_ipv4(pkt: &[u8]) -> Result<(Ipv4Addr, Ipv4Addr, u8, &[u8]), Malformed> {
    if pkt.len() < 20 {
        return Err(Malformed::Short);
    }
    if pkt[0] >> 4 != 4 || pkt[9] != PROTO {
        return Err(Malformed::NotVrrp);
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if ihl < 20 || pkt.len() < ihl || total < ihl {
        return Err(Malformed::Short);
    }
    // The kernel may hand over the datagram with the IP length as sent; trailing link-layer
    // padding is not part of the message.
    let end = total.min(pkt.len());
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    Ok((src, dst, pkt[8], &pkt[ihl..end]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_encoded_advert_parses_back_in_both_families() {
        let a = Advert { vrid: 51, priority: 150, interval_cs: 100, addresses: vec![v4("198.18.0.100"), v4("198.18.0.101")] };
        let (s, d) = (v4("198.18.0.11"), v4("224.0.0.18"));
        let b = a.encode(s, d);
        assert_eq!(b.len(), 16);
        assert_eq!(&b[..6], &[0x31, 51, 150, 2, 0, 100]);
        assert_eq!(parse(&b, s, d, 255), Ok(a));

        let a6 = Advert { vrid: 7, priority: 100, interval_cs: 10, addresses: vec![v4("2001:db8::100")] };
        let (s, d) = (v4("fe80::1"), v4("ff02::12"));
        let b = a6.encode(s, d);
        assert_eq!(b.len(), 24);
        assert_eq!(parse(&b, s, d, 255), Ok(a6));
    }

    /// VRID 51, priority 100, 1 s, 198.18.0.100, from 198.18.0.12 to 224.0.0.18, summed by
    /// hand with the IPv4 pseudo-header (the integration tests check the same rule against
    /// tshark and a real keepalived).
    #[test]
    fn the_ipv4_checksum_includes_the_pseudo_header() {
        let a = Advert { vrid: 51, priority: 100, interval_cs: 100, addresses: vec![v4("198.18.0.100")] };
        let b = a.encode(v4("198.18.0.12"), v4("224.0.0.18"));
        // Header 0x3133 + 0x6401 + 0x0064 + 0xc612 + 0x0064, pseudo-header
        // 0xc612 + 0x000c + 0xe000 + 0x0012 + 0x0070 + 0x000c.
        let words: [u32; 11] = [0x3133, 0x6401, 0x0064, 0xc612, 0x0064, 0xc612, 0x000c, 0xe000, 0x0012, 0x0070, 0x000c];
        let mut s: u32 = words.iter().sum();
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        assert_eq!(u16::from_be_bytes([b[6], b[7]]), !(s as u16));
        // Without the pseudo-header the checksum differs, so the test can tell the two apart.
        assert_ne!(u16::from_be_bytes([b[6], b[7]]), checksum(v4("0.0.0.0"), v4("0.0.0.0"), &b));
    }

    #[test]
    fn each_kind_of_malformed_packet_is_named() {
        let a = Advert { vrid: 1, priority: 100, interval_cs: 100, addresses: vec![v4("198.18.0.100")] };
        let (s, d) = (v4("198.18.0.11"), v4("224.0.0.18"));
        let good = a.encode(s, d);
        assert_eq!(parse(&good, s, d, 64), Err(Malformed::Ttl));
        assert_eq!(parse(&good[..7], s, d, 255), Err(Malformed::Short));
        assert_eq!(parse(&good[..11], s, d, 255), Err(Malformed::Length));
        let mut b = good.clone();
        b[0] = 0x21;
        assert_eq!(parse(&b, s, d, 255), Err(Malformed::Version));
        b[0] = 0x32;
        assert_eq!(parse(&b, s, d, 255), Err(Malformed::Type));
        let mut b = good.clone();
        b[2] = 101;
        assert_eq!(parse(&b, s, d, 255), Err(Malformed::Checksum));
        assert_eq!(parse(&good, s, v4("198.18.0.12"), 255), Err(Malformed::Checksum), "unicast peer: the destination is in the sum");
        let z = Advert { interval_cs: 0, ..a }.encode(s, d);
        assert_eq!(parse(&z, s, d, 255), Err(Malformed::Interval));
    }

    #[test]
    fn an_ipv4_header_is_split_off() {
        let a = Advert { vrid: 1, priority: 100, interval_cs: 100, addresses: vec![v4("198.18.0.100")] };
        let msg = a.encode(v4("198.18.0.11"), v4("224.0.0.18"));
        let mut pkt = vec![0x45, 0xc0, 0, 32, 0, 0, 0, 0, 255, 112, 0, 0, 198, 18, 0, 11, 224, 0, 0, 18];
        pkt.extend_from_slice(&msg);
        pkt.extend_from_slice(&[0; 6]); // link padding
        let (s, d, ttl, m) = split_ipv4(&pkt).unwrap();
        assert_eq!((s.to_string(), d.to_string(), ttl, m), ("198.18.0.11".into(), "224.0.0.18".into(), 255, &msg[..]));
        pkt[9] = 6;
        assert_eq!(split_ipv4(&pkt), Err(Malformed::NotVrrp));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), ttl in any::<u8>(), six in any::<bool>()) {
            let (s, d) = if six { (v4("fe80::1"), v4("ff02::12")) } else { (v4("198.18.0.11"), v4("224.0.0.18")) };
            let _ = parse(&bytes, s, d, ttl);
            let _ = split_ipv4(&bytes);
        }

        #[test]
        fn any_advert_round_trips_and_any_flipped_bit_is_caught(vrid in 1u8.., prio in any::<u8>(), cs in 1u16..4096, n in 0usize..20, bit in 0usize..64) {
            let addresses: Vec<IpAddr> = (0..n).map(|i| IpAddr::V4(Ipv4Addr::new(198, 18, 1, i as u8))).collect();
            let a = Advert { vrid, priority: prio, interval_cs: cs, addresses };
            let (s, d) = (v4("198.18.0.11"), v4("224.0.0.18"));
            let mut b = a.encode(s, d);
            prop_assert_eq!(parse(&b, s, d, 255), Ok(a));
            // A single flipped bit in the fixed header is never accepted as the same packet.
            let byte = (bit / 8) % HEADER_LEN;
            b[byte] ^= 1 << (bit % 8);
            prop_assert!(parse(&b, s, d, 255).is_err());
        }
    }
}
