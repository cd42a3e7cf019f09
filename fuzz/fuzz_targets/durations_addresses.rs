//! Fuzz the small value parsers the config and the CLI share: durations (`"1m 30s"`, bounded
//! at one year: issue 19, finding 1) and address lists (`allow_transfer` networks such as
//! `"10.0.0.0/8"`). Parsing never panics; an accepted duration is at most `MAX_DURATION` and
//! sums of a few of them saturate instead of overflowing; an accepted network contains its own
//! address and the address of each listed network matches the membership arithmetic of an
//! independent check written here. The last bytes pick the addresses tested for membership.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use understudy::config::{MAX_DURATION, parse_duration};
use understudy::dns::config::IpNet;

#[derive(Debug, Arbitrary)]
struct Input {
    durations: Vec<String>,
    networks: Vec<String>,
    probes: Vec<[u8; 16]>,
}

/// Membership by comparing the first `prefix` bits one at a time.
fn contains_slow(net: &IpNet, ip: IpAddr) -> bool {
    let bytes = |ip: IpAddr| -> Vec<u8> {
        match ip {
            IpAddr::V4(v) => v.octets().to_vec(),
            IpAddr::V6(v) => v.octets().to_vec(),
        }
    };
    let ip = match (net.addr, ip) {
        (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        _ => ip,
    };
    let (a, b) = (bytes(net.addr), bytes(ip));
    if a.len() != b.len() {
        return false;
    }
    (0..usize::from(net.prefix)).all(|bit| (a[bit / 8] >> (7 - bit % 8)) & 1 == (b[bit / 8] >> (7 - bit % 8)) & 1)
}

fuzz_target!(|input: Input| {
    let mut total = std::time::Duration::ZERO;
    for s in input.durations.iter().take(16) {
        if let Ok(d) = parse_duration(s) {
            assert!(d <= MAX_DURATION, "{s:?} parsed to {d:?}");
            total = total.saturating_add(d).saturating_mul(1000);
        }
    }
    let _ = total;

    let nets: Vec<IpNet> = input.networks.iter().take(16).filter_map(|s| IpNet::parse(s).ok()).collect();
    for net in &nets {
        let max = if net.addr.is_ipv4() { 32 } else { 128 };
        assert!(net.prefix <= max, "{net:?}");
        assert!(net.contains(net.addr), "{net:?} must contain its own address");
        for p in input.probes.iter().take(8) {
            let v6 = IpAddr::from(*p);
            let v4 = IpAddr::from([p[0], p[1], p[2], p[3]]);
            for ip in [v4, v6] {
                assert_eq!(net.contains(ip), contains_slow(net, ip), "{net:?} contains {ip}?");
            }
        }
    }
});
