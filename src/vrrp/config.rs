//! The `[[vip]]` sections: raw serde structs (as written) and their validation (as run).
//!
//! ```toml
//! [[vip]]
//! name = "web"
//! interface = "eth0"
//! vrid = 51
//! priority = 150                     # 1-254; 255 = address owner
//! advert_interval = "1s"             # centisecond resolution, 10ms-40.95s
//! addresses = ["198.18.0.100/24"]    # one address family per instance
//! preempt = true
//! preempt_delay = "0s"
//! accept_mode = true                 # false: a non-owner master drops traffic to the VIP (RFC 5798 6.4.3)
//! unicast_peers = []                 # empty = multicast 224.0.0.18 / ff02::12
//! track = ["local-web"]              # services on this node: any target down -> resign
//! garp_count = 5                     # gratuitous ARPs / unsolicited NAs on taking the VIP
//! garp_refresh = "0s"                # re-announce this often while master; 0s = never
//! lifetime = "10s"                   # the kernel drops the VIP this long after the speaker stops refreshing it
//! ```
//!
//! Validation is pure: it never looks at interfaces or opens sockets, so `check-config` works
//! without root on a machine that does not have `eth0` (the interface is looked up when the
//! daemon starts, and a missing one stops the start with its name).

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::locate::Seg;
use crate::config::validate::{Ctx, k, with};
use crate::config::{ServiceConfig, parse_duration};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVip {
    pub name: String,
    pub interface: String,
    pub vrid: i64,
    #[serde(default = "default_priority")]
    pub priority: i64,
    pub advert_interval: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default = "default_true")]
    pub preempt: bool,
    pub preempt_delay: Option<String>,
    #[serde(default = "default_true")]
    pub accept_mode: bool,
    #[serde(default)]
    pub unicast_peers: Vec<String>,
    #[serde(default)]
    pub track: Vec<String>,
    pub garp_count: Option<i64>,
    pub garp_refresh: Option<String>,
    pub lifetime: Option<String>,
}

fn default_priority() -> i64 {
    100
}
fn default_true() -> bool {
    true
}

/// One virtual address with its prefix length (`/32` or `/128` when not written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipAddr {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for VipAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// One validated VRRP instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipConfig {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub advert_interval: Duration,
    pub addresses: Vec<VipAddr>,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// RFC 5798 Accept_Mode: whether a master that is not the address owner accepts packets
    /// addressed to the virtual addresses (`false`: an nftables table of the speaker drops
    /// them, see `accept.rs`).
    pub accept_mode: bool,
    pub unicast_peers: Vec<IpAddr>,
    /// Service names; the node resigns while any target of any of them is down.
    pub track: Vec<String>,
    pub garp_count: u32,
    /// Re-announce the addresses this often while master (`None`: only on taking them).
    pub garp_refresh: Option<Duration>,
    /// Valid lifetime of the addresses in the kernel, refreshed by the running speaker.
    pub lifetime: Duration,
}

impl VipConfig {
    pub fn is_v6(&self) -> bool {
        self.addresses.first().is_some_and(|a| a.ip.is_ipv6())
    }

    /// Master_Down_Interval of a backup of this instance at this node's priority.
    pub fn master_down_interval(&self) -> Duration {
        self.advert_interval * 3 + self.advert_interval * (256 - u32::from(self.priority)) / 256
    }
}

pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
pub const MAX_INTERVAL: Duration = Duration::from_millis(40_950);
const MAX_ADDRESSES: usize = 64;
/// The kernel counts address lifetimes in whole seconds; below this the expiry is too coarse.
const MIN_LIFETIME: Duration = Duration::from_secs(3);

fn duration(cx: &mut Ctx<'_>, p: &[Seg], key: &str, raw: Option<&str>, default: Duration) -> Duration {
    match raw.map(parse_duration) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            cx.err(&with(p, &[k(key)]), e);
            default
        }
    }
}

fn parse_addr(s: &str) -> Option<VipAddr> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, pl)) => (ip.parse::<IpAddr>().ok()?, Some(pl.parse::<u8>().ok()?)),
        None => (s.parse::<IpAddr>().ok()?, None),
    };
    let max = if ip.is_ipv6() { 128 } else { 32 };
    let prefix = prefix.unwrap_or(max);
    (prefix >= 1 && prefix <= max).then_some(VipAddr { ip, prefix })
}

/// Validate every `[[vip]]`; `services` are the validated services (for `track`).
pub(crate) fn validate(cx: &mut Ctx<'_>, raw: Vec<RawVip>, services: &[ServiceConfig]) -> Vec<VipConfig> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let mut vrids = HashSet::new();
    for (i, r) in raw.into_iter().enumerate() {
        let p = vec![k("vip"), Seg::Index(i)];
        let before = cx.errors_len();
        let valid_name = !r.name.is_empty() && r.name.len() <= 63 && r.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            cx.err(&with(&p, &[k("name")]), format!("expected 1 to 63 letters, digits, '-', '_' or '.', got \"{}\"", r.name));
        } else if !names.insert(r.name.clone()) {
            cx.err(&with(&p, &[k("name")]), format!("duplicate vip name \"{}\"; names must be unique", r.name));
        }
        if r.interface.is_empty() || r.interface.len() > 15 || r.interface.contains(['/', ' ', '\t']) || r.interface == "." || r.interface == ".." {
            cx.err(&with(&p, &[k("interface")]), format!("expected an interface name such as \"eth0\" (1 to 15 characters, no '/' or spaces), got \"{}\"", r.interface));
        }
        if !(1..=255).contains(&r.vrid) {
            cx.err(&with(&p, &[k("vrid")]), format!("expected a virtual router id from 1 to 255, got {}", r.vrid));
        }
        if !(1..=255).contains(&r.priority) {
            cx.err(&with(&p, &[k("priority")]), format!("expected 1 to 254, or 255 for the address owner, got {} (0 is reserved for resigning)", r.priority));
        }
        let interval = duration(cx, &p, "advert_interval", r.advert_interval.as_deref(), Duration::from_secs(1));
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) || !interval.as_nanos().is_multiple_of(10_000_000) {
            cx.err(
                &with(&p, &[k("advert_interval")]),
                format!("expected a whole number of centiseconds from 10ms to 40.95s (VRRPv3 sends it in 12 bits of centiseconds), got {}", humantime::format_duration(interval)),
            );
        }
        let mut addresses: Vec<VipAddr> = Vec::new();
        if r.addresses.is_empty() {
            cx.err(&with(&p, &[k("addresses")]), "expected at least one virtual address such as \"198.18.0.100/24\"");
        }
        if r.addresses.len() > MAX_ADDRESSES {
            cx.err(&with(&p, &[k("addresses")]), format!("expected at most {MAX_ADDRESSES} addresses per instance, got {}", r.addresses.len()));
        }
        for (j, a) in r.addresses.iter().enumerate() {
            let ap = with(&p, &[k("addresses"), Seg::Index(j)]);
            match parse_addr(a) {
                None => cx.err(&ap, format!("expected an address with an optional prefix length such as \"198.18.0.100/24\" or \"2001:db8::100/64\", got \"{a}\"")),
                Some(v) if v.ip.is_unspecified() || v.ip.is_multicast() || v.ip.is_loopback() => {
                    cx.err(&ap, format!("{} cannot be a virtual address (unspecified, multicast or loopback)", v.ip))
                }
                Some(v) if addresses.iter().any(|x| x.ip == v.ip) => cx.err(&ap, format!("{} is listed twice", v.ip)),
                Some(v) if addresses.first().is_some_and(|f| f.ip.is_ipv6() != v.ip.is_ipv6()) => cx.err(
                    &ap,
                    "one instance carries one address family (RFC 5798): put IPv4 and IPv6 addresses in two [[vip]] sections with the same vrid",
                ),
                Some(v) => addresses.push(v),
            }
        }
        let is_v6 = addresses.first().is_some_and(|a| a.ip.is_ipv6());
        if let Ok(vrid) = u8::try_from(r.vrid)
            && !addresses.is_empty()
            && !vrids.insert((r.interface.clone(), vrid, is_v6))
        {
            cx.err(&with(&p, &[k("vrid")]), format!("vrid {vrid} is already used on {} for this address family", r.interface));
        }
        let preempt_delay = duration(cx, &p, "preempt_delay", r.preempt_delay.as_deref(), Duration::ZERO);
        if preempt_delay > Duration::from_secs(3600) {
            cx.err(&with(&p, &[k("preempt_delay")]), "expected at most 1h");
        }
        if !r.accept_mode && r.priority == 255 {
            cx.warn(&with(&p, &[k("accept_mode")]), "the address owner (priority 255) always accepts traffic for its addresses (RFC 5798 6.4.3): accept_mode = false has no effect");
        }
        let mut unicast_peers = Vec::new();
        for (j, s) in r.unicast_peers.iter().enumerate() {
            let ap = with(&p, &[k("unicast_peers"), Seg::Index(j)]);
            match s.parse::<IpAddr>() {
                Ok(ip) if !addresses.is_empty() && ip.is_ipv6() != is_v6 => cx.err(&ap, format!("{ip} is not of the instance's address family")),
                Ok(ip) if ip.is_unspecified() || ip.is_multicast() => cx.err(&ap, format!("expected a peer's unicast address, got {ip}")),
                Ok(ip) if unicast_peers.contains(&ip) => cx.err(&ap, format!("{ip} is listed twice")),
                Ok(ip) => unicast_peers.push(ip),
                Err(_) => cx.err(&ap, format!("expected an IP address, got \"{s}\"")),
            }
        }
        for (j, t) in r.track.iter().enumerate() {
            if !services.iter().any(|s| s.name == *t) {
                cx.err(&with(&p, &[k("track"), Seg::Index(j)]), format!("no [[service]] is named \"{t}\""));
            }
        }
        let garp_count = match r.garp_count {
            None => 5,
            Some(n) if (0..=100).contains(&n) => n as u32,
            Some(n) => {
                cx.err(&with(&p, &[k("garp_count")]), format!("expected 0 to 100, got {n}"));
                5
            }
        };
        let garp_refresh = Some(duration(cx, &p, "garp_refresh", r.garp_refresh.as_deref(), Duration::ZERO)).filter(|d| !d.is_zero());
        if garp_refresh.is_some_and(|d| d < Duration::from_millis(100)) {
            cx.err(&with(&p, &[k("garp_refresh")]), "expected 0s (off) or at least 100ms");
        }
        let mdi = interval * 3 + interval;
        let default_lifetime = (mdi * 2).max(Duration::from_secs(10));
        let lifetime = duration(cx, &p, "lifetime", r.lifetime.as_deref(), default_lifetime);
        if lifetime < MIN_LIFETIME || lifetime > Duration::from_secs(86_400) {
            cx.err(&with(&p, &[k("lifetime")]), format!("expected 3s to 1d (the kernel counts address lifetimes in whole seconds), got {}", humantime::format_duration(lifetime)));
        } else if lifetime < mdi {
            cx.warn(
                &with(&p, &[k("lifetime")]),
                format!("a lifetime below Master_Down_Interval ({}) lets the VIP lapse before a backup takes over if the speaker stalls", humantime::format_duration(mdi)),
            );
        }
        if cx.errors_len() == before {
            out.push(VipConfig {
                name: r.name,
                interface: r.interface,
                vrid: r.vrid as u8,
                priority: r.priority as u8,
                advert_interval: interval,
                addresses,
                preempt: r.preempt,
                preempt_delay,
                accept_mode: r.accept_mode,
                unicast_peers,
                track: r.track,
                garp_count,
                garp_refresh,
                lifetime,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const SERVICE: &str = "[[service]]\nname = \"local-web\"\n[service.check]\nkind = \"tcp\"\nport = 80\n[[service.target]]\nname = \"self\"\naddress = \"127.0.0.1\"\n\n";

    fn parse(vip: &str) -> Result<crate::config::Config, Vec<String>> {
        crate::config::from_str(&format!("{SERVICE}[[vip]]\n{vip}"), Path::new("v.toml")).map(|c| c.0).map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn the_issue_example_validates_with_its_defaults() {
        let c = parse(
            "name = \"web\"\ninterface = \"eth0\"\nvrid = 51\npriority = 150\nadvert_interval = \"1s\"\naddresses = [\"198.18.0.100/24\"]\n\
             preempt = true\npreempt_delay = \"0s\"\nunicast_peers = []\ntrack = [\"local-web\"]\n",
        )
        .unwrap();
        let v = &c.vip[0];
        assert_eq!((v.vrid, v.priority, v.advert_interval, v.addresses[0].to_string()), (51, 150, Duration::from_secs(1), "198.18.0.100/24".into()));
        assert_eq!((v.garp_count, v.garp_refresh, v.lifetime), (5, None, Duration::from_secs(10)));
        assert_eq!(v.master_down_interval(), Duration::from_nanos(3_414_062_500), "3 x 1 s + 106/256 s");
        assert!(v.accept_mode, "accept_mode defaults to true, as keepalived outside vrrp_strict: a VIP is there to be reached");
        let c = parse("name = \"web\"\ninterface = \"eth0\"\nvrid = 51\naddresses = [\"198.18.0.100/24\"]\naccept_mode = false\n").unwrap();
        assert!(!c.vip[0].accept_mode);
    }

    #[test]
    fn mistakes_are_named_by_line_and_key() {
        let e = parse(
            "name = \"web\"\ninterface = \"eth0/1\"\nvrid = 0\npriority = 0\nadvert_interval = \"15ms\"\naddresses = [\"198.18.0.100/24\", \"2001:db8::1\", \"nope\"]\n\
             unicast_peers = [\"fe80::1\"]\ntrack = [\"nginx\"]\naccept_mode = false\nlifetime = \"1s\"\n",
        )
        .unwrap_err();
        let want = [
            "v.toml:12:1: vip[0].interface: expected an interface name",
            "v.toml:13:1: vip[0].vrid: expected a virtual router id from 1 to 255, got 0",
            "vip[0].priority: expected 1 to 254, or 255 for the address owner, got 0",
            "vip[0].advert_interval: expected a whole number of centiseconds from 10ms to 40.95s",
            "vip[0].addresses[1]: one instance carries one address family",
            "vip[0].addresses[2]: expected an address with an optional prefix length",
            "vip[0].unicast_peers[0]: fe80::1 is not of the instance's address family",
            "vip[0].track[0]: no [[service]] is named \"nginx\"",
            "vip[0].lifetime: expected 3s to 1d",
        ];
        for w in want {
            assert!(e.iter().any(|e| e.contains(w)), "missing {w:?} in {e:#?}");
        }
        assert_eq!(e.len(), want.len(), "{e:#?}");
    }

    #[test]
    fn unknown_keys_and_duplicate_vrids_are_refused() {
        let e = parse("name = \"web\"\ninterface = \"eth0\"\nvrid = 51\naddresses = [\"198.18.0.100\"]\nprio = 1\n").unwrap_err();
        assert!(e[0].contains("unknown field `prio`"), "{e:?}");
        let e = parse("name = \"a\"\ninterface = \"eth0\"\nvrid = 51\naddresses = [\"198.18.0.100\"]\n[[vip]]\nname = \"b\"\ninterface = \"eth0\"\nvrid = 51\naddresses = [\"198.18.0.101\"]\n")
            .unwrap_err();
        assert!(e[0].contains("vip[1].vrid: vrid 51 is already used on eth0"), "{e:?}");
        // The same VRID for IPv6 on the same link is a separate instance (RFC 5798).
        let c = parse("name = \"a\"\ninterface = \"eth0\"\nvrid = 51\naddresses = [\"198.18.0.100\"]\n[[vip]]\nname = \"b\"\ninterface = \"eth0\"\nvrid = 51\naddresses = [\"2001:db8::1/64\"]\n")
            .unwrap();
        assert_eq!((c.vip[1].addresses[0].prefix, c.vip[1].is_v6()), (64, true));
    }

    use std::time::Duration;
}
