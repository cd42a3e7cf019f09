//! The `[dns]` section: raw serde structs (as written) and their validation (as served).
//!
//! ```toml
//! [dns]
//! listen = ["127.0.0.1:5353"]          # UDP and TCP on each; a bare IP means port 53
//!
//! [[dns.zone]]
//! name = "example.test"
//! nameservers = { "ns1.example.test" = "127.0.0.1" }   # absolute names; glue for in-zone ones
//!
//! [[dns.zone.record]]                  # a failover record: the active target's address
//! name = "www"
//! service = "www"
//! ttl = 5
//!
//! [[dns.zone.record]]                  # a static record
//! name = "mail"
//! type = "MX"
//! value = "10 mx1"
//! ```
//!
//! Record names follow zone-file convention: `@` is the apex, a name ending in `.` is absolute,
//! anything else is relative to the zone. Nameserver keys are always absolute (the trailing dot
//! is optional there). TTLs are seconds (`ttl = 5`) or durations (`ttl = "5m"`).
//!
//! A failover record also takes `suspect_ttl` (default 1 s): the TTL answered while the target
//! it serves shows signs of trouble (a failed check, a slow or hedged pass) and until it has
//! passed `rise` clean checks again, so caches forget a failing target before the switch.
//! `suspect_ttl = false` or `"0s"` turns it off; a value not below `ttl` has no effect.
//!
//! This module only reads and checks configuration; it builds no answers (`zone.rs`) and opens
//! no sockets (`server.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::name::Name;
use super::wire::{Rdata, rtype};
use crate::config::locate::Seg;
use crate::config::validate::{Ctx, k, with};
use crate::config::{ServiceConfig, parse_duration};

// ---------------------------------------------------------------------------------------------
// Raw layer

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// Absent: port 53 on every address (see `default_listen`).
    pub listen: Option<Vec<String>>,
    /// UDP worker threads per listen address (each with its own `SO_REUSEPORT` socket).
    pub udp_workers: Option<u32>,
    /// How long an idle TCP connection is kept open (RFC 7766 6.2.3).
    pub tcp_idle_timeout: Option<String>,
    #[serde(default = "default_tcp_max_connections")]
    pub tcp_max_connections: u32,
    /// Open TCP connections from one client address (default: a quarter of the total).
    pub tcp_max_connections_per_client: Option<u32>,
    /// How long one TCP reply may take to be written before the connection is closed.
    pub tcp_write_timeout: Option<String>,
    /// UDP response rate limiting: `false`, `true`, or `{ rate, slip, window }`.
    pub rrl: Option<RawRrl>,
    /// The largest UDP response we send to EDNS clients (RFC 6891; 1232 avoids fragmentation).
    #[serde(default = "default_max_udp_payload")]
    pub max_udp_payload: u16,
    #[serde(default, rename = "zone")]
    pub zones: Vec<RawZone>,
    /// `[[dns.key]]`: TSIG keys for transfers and NOTIFY (the hidden-primary setup).
    #[serde(default, rename = "key")]
    pub keys: Vec<RawKey>,
    /// `[[dns.provider]]`: DNS servers and services understudy updates (`provider/config.rs`);
    /// they need no built-in server.
    #[serde(default, rename = "provider")]
    pub providers: Vec<crate::provider::config::RawProvider>,
}

/// A TSIG key secondaries use to transfer zones (`[[dns.key]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub name: String,
    pub algorithm: Option<String>,
    pub secret: Option<String>,
    pub secret_file: Option<String>,
    pub secret_env: Option<String>,
}

impl RawDns {
    /// Whether this `[dns]` asks for the built-in server: it has zones or listen addresses, or
    /// no providers (then the missing zone is reported).
    pub fn wants_server(&self) -> bool {
        !self.zones.is_empty() || self.listen.is_some() || self.providers.is_empty()
    }
}

/// `rrl = false`, `rrl = true` or `rrl = { rate = 20, slip = 2, window = "15s" }`.
#[derive(Debug)]
pub enum RawRrl {
    Enabled(bool),
    Settings(RawRrlSettings),
}

// By hand rather than `untagged`, so that a mistake inside the table is reported as such
// ("unknown field `rat`") instead of "did not match any variant".
impl<'de> Deserialize<'de> for RawRrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawRrl;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or a table such as { rate = 20, slip = 2, window = \"15s\" }")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<RawRrl, E> {
                Ok(RawRrl::Enabled(b))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawRrl, A::Error> {
                RawRrlSettings::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(RawRrl::Settings)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRrlSettings {
    /// Identical responses per second to one client prefix (/24, /56).
    pub rate: Option<u32>,
    /// Every `slip`-th limited response is sent truncated (TC=1); 0 drops them all.
    pub slip: Option<u32>,
    /// How long a flood is remembered (the account's floor is `-rate x window`).
    pub window: Option<String>,
}

fn default_listen() -> Vec<String> {
    vec!["0.0.0.0:53".into(), "[::]:53".into()]
}
fn default_tcp_max_connections() -> u32 {
    512
}
fn default_max_udp_payload() -> u16 {
    1232
}
/// RFC 7766 recommends "in the order of seconds"; Knot and BIND default to about 10 s.
pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(10);
/// A reply this slow to leave means the client is not reading.
pub const DEFAULT_TCP_WRITE: Duration = Duration::from_secs(2);
/// RRL defaults, as commonly configured for BIND and Knot (BIND's window default is 15 s).
pub const DEFAULT_RRL_RATE: u32 = 20;
pub const DEFAULT_RRL_SLIP: u32 = 2;
pub const DEFAULT_RRL_WINDOW: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZone {
    pub name: String,
    /// Default TTL of static records (failover records default to 5 s).
    pub ttl: Option<RawTtl>,
    #[serde(default)]
    pub nameservers: BTreeMap<String, RawAddrs>,
    #[serde(default)]
    pub soa: RawSoa,
    /// Client addresses or networks (`"10.0.0.0/8"`) allowed to transfer the zone (AXFR/IXFR).
    #[serde(default)]
    pub allow_transfer: Vec<String>,
    /// A `[[dns.key]]` name: transfers must be signed with it (TSIG), and NOTIFYs are.
    pub transfer_key: Option<String>,
    /// Secondaries (`"ADDR:PORT"`) sent a NOTIFY whenever the zone's serial changes.
    #[serde(default)]
    pub notify: Vec<String>,
    #[serde(default, rename = "record")]
    pub records: Vec<RawRecord>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSoa {
    pub mname: Option<String>,
    /// The responsible mailbox: `hostmaster.example.test.` or `hostmaster@example.test`.
    pub rname: Option<String>,
    pub ttl: Option<RawTtl>,
    pub refresh: Option<RawTtl>,
    pub retry: Option<RawTtl>,
    pub expire: Option<RawTtl>,
    /// Negative-caching TTL (RFC 2308): NXDOMAIN/NODATA answers carry min(SOA TTL, minimum).
    pub minimum: Option<RawTtl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecord {
    pub name: String,
    /// Makes this a failover record: the service's active target's address.
    pub service: Option<String>,
    #[serde(rename = "type")]
    pub rtype: Option<String>,
    pub value: Option<String>,
    pub values: Option<Vec<String>>,
    pub ttl: Option<RawTtl>,
    /// Failover records only: the TTL while the served target is suspect (`false` or `"0s"`: off).
    pub suspect_ttl: Option<RawSuspectTtl>,
}

/// `suspect_ttl`: seconds, a duration, or `false` (off) / `true` (the default, 1 s).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSuspectTtl {
    Switch(bool),
    Ttl(RawTtl),
}

/// Seconds (`300`) or a duration (`"5m"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawTtl {
    Secs(i64),
    Text(String),
}

/// One address or a list (empty for a nameserver outside the zone).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawAddrs {
    One(String),
    Many(Vec<String>),
}

// ---------------------------------------------------------------------------------------------
// Validated layer

#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    pub listen: Vec<SocketAddr>,
    pub udp_workers: usize,
    pub tcp_idle_timeout: Duration,
    pub tcp_max_connections: usize,
    pub tcp_max_connections_per_client: usize,
    pub tcp_write_timeout: Duration,
    pub max_udp_payload: u16,
    /// UDP response rate limiting; `None` when turned off.
    pub rrl: Option<RrlConfig>,
    pub zones: Vec<ZoneConfig>,
    /// TSIG keys (`[[dns.key]]`): requests signed with one are answered signed; others get BADKEY.
    pub keys: Vec<crate::provider::tsig::Key>,
}

/// Response rate limiting (see `rrl.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct RrlConfig {
    pub rate: u32,
    pub slip: u32,
    pub window: Duration,
    /// Whether loopback clients are limited too: only when `rrl` is set explicitly (by default a
    /// loopback client is the host itself and is never limited).
    pub loopback: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ZoneConfig {
    pub apex: Name,
    pub soa: SoaConfig,
    /// Apex NS records, in the order written (sorted by name), with glue for in-zone names.
    pub nameservers: Vec<(Name, Vec<IpAddr>)>,
    pub allow_transfer: Vec<IpNet>,
    /// Transfers must be signed with this key (a name in `DnsConfig::keys`).
    pub transfer_key: Option<Name>,
    /// Secondaries to NOTIFY when the serial changes.
    pub notify: Vec<SocketAddr>,
    pub records: Vec<RecordConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SoaConfig {
    pub mname: Name,
    pub rname: Name,
    pub ttl: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

impl SoaConfig {
    /// TTL of the SOA in negative answers (RFC 2308 section 5).
    pub fn negative_ttl(&self) -> u32 {
        self.ttl.min(self.minimum)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordConfig {
    pub name: Name,
    pub ttl: u32,
    pub kind: RecordKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecordKind {
    /// Fixed data of one type.
    Static(Vec<Rdata>),
    /// A for an IPv4 active target, AAAA for an IPv6 one. `suspect_ttl`: the TTL answered
    /// while the served target is suspect (`None`: off, or not shorter than the record's TTL).
    Failover { service: String, suspect_ttl: Option<u32> },
}

impl RecordConfig {
    /// The TTL answered now: the suspicion TTL while the served target is suspect.
    pub fn ttl_now(&self, suspect: bool) -> u32 {
        match &self.kind {
            RecordKind::Failover { suspect_ttl: Some(s), .. } if suspect => (*s).min(self.ttl),
            _ => self.ttl,
        }
    }
}

/// The worst-case client RTO of one failover record: from the target failing to every client
/// behind a TTL-respecting cache asking the new target, without counting the switch itself (the
/// built-in server swaps its table in microseconds; hooks and providers add their own time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRto {
    /// `detection_budget + ttl`: a cache that refreshed just before the decision keeps the old
    /// answer for a whole TTL.
    pub without: Duration,
    /// With the suspicion TTL (`None` when it is off): the larger of `detection_budget +
    /// suspect_ttl` (a cache refreshed just before the decision, during the suspicion) and
    /// `interval + timeout + ttl` (a cache refreshed just before the first failed check ended,
    /// which still got the full TTL).
    pub with_suspect: Option<Duration>,
}

impl ClientRto {
    pub fn of(rec: &RecordConfig, svc: &ServiceConfig) -> ClientRto {
        let secs = |s: u32| Duration::from_secs(s as u64);
        let detection = svc.detection_budget();
        let without = detection.saturating_add(secs(rec.ttl));
        let with_suspect = match &rec.kind {
            RecordKind::Failover { suspect_ttl: Some(s), .. } => {
                let first_failure = svc.check.interval.saturating_add(svc.check.timeout);
                Some(detection.saturating_add(secs(*s)).max(first_failure.saturating_add(secs(rec.ttl))).min(without))
            }
            _ => None,
        };
        ClientRto { without, with_suspect }
    }
}

/// One line per failover record for `check-config`: its worst-case client RTO with and without
/// the suspicion TTL.
pub fn client_rto_lines(dns: &DnsConfig, services: &[ServiceConfig]) -> Vec<String> {
    let fmt = |d: Duration| humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string();
    let mut out = Vec::new();
    for z in &dns.zones {
        for r in &z.records {
            let RecordKind::Failover { service, suspect_ttl } = &r.kind else { continue };
            let Some(svc) = services.iter().find(|s| &s.name == service) else { continue };
            let rto = ClientRto::of(r, svc);
            let with = match (rto.with_suspect, suspect_ttl) {
                (Some(w), Some(s)) => format!("{} with suspect_ttl {s}s", fmt(w)),
                _ => "suspect_ttl off".to_string(),
            };
            out.push(format!(
                "{} (service {service}): worst-case client RTO {} with TTL {}s alone, {with} (detection budget {}; add the switch time)",
                r.name,
                fmt(rto.without),
                r.ttl,
                fmt(svc.detection_budget())
            ));
        }
    }
    out
}

/// An address or network in an allow list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let bad = || format!("expected an IP address or network such as \"192.0.2.1\" or \"10.0.0.0/8\", got \"{s}\"");
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// Default TTL of failover records: short, so resolvers follow a failover quickly.
pub const DEFAULT_FAILOVER_TTL: u32 = 5;
/// Default TTL of failover records while the served target is suspect.
pub const DEFAULT_SUSPECT_TTL: u32 = 1;
const DEFAULT_ZONE_TTL: u32 = 3600;
const MAX_TTL: i64 = i32::MAX as i64; // RFC 2181 8

/// The static record types a zone may contain.
const STATIC_TYPES: &[&str] = &["A", "AAAA", "CNAME", "MX", "TXT", "SRV", "CAA"];

fn ttl_of(cx: &mut Ctx<'_>, path: &[Seg], t: &Option<RawTtl>, default: u32) -> u32 {
    let secs = match t {
        None => return default,
        Some(RawTtl::Secs(n)) => *n,
        Some(RawTtl::Text(s)) => match parse_duration(s) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => {
                cx.err(path, e);
                return default;
            }
        },
    };
    if !(0..=MAX_TTL).contains(&secs) {
        cx.err(path, format!("expected a TTL from 0 to {MAX_TTL} seconds, got {secs}"));
        return default;
    }
    secs as u32
}

/// Validate `[dns]`; `services` are the services that validated (for `service = ...`).
pub(crate) fn validate(cx: &mut Ctx<'_>, raw: RawDns, services: &[ServiceConfig], base: &std::path::Path) -> Option<DnsConfig> {
    let before = cx.errors_len();
    let p = vec![k("dns")];
    let mut keys: Vec<crate::provider::tsig::Key> = Vec::new();
    for (i, rk) in raw.keys.into_iter().enumerate() {
        let kp = with(&p, &[k("key"), Seg::Index(i)]);
        let name = Name::parse_absolute(rk.name.trim()).map_err(|e| cx.err(&with(&kp, &[k("name")]), e)).ok();
        let algorithm = match rk.algorithm.as_deref() {
            None => Some(crate::provider::tsig::Algorithm::HmacSha256),
            Some(a) => crate::provider::tsig::Algorithm::parse(a).or_else(|| {
                cx.err(&with(&kp, &[k("algorithm")]), format!("expected hmac-sha256, hmac-sha384 or hmac-sha512, got \"{a}\""));
                None
            }),
        };
        let src = crate::config::secret::SecretSource { key: "secret", inline: rk.secret, file: rk.secret_file, env: rk.secret_env };
        let secret = match crate::config::secret::read_secret(cx, &kp, base, src) {
            Some(s) => crate::provider::tsig::parse_secret(s.expose()).map_err(|e| cx.err(&with(&kp, &[k("secret")]), e)).ok(),
            None => {
                cx.err(&kp, "a key needs its secret: secret, secret_file or secret_env (base64, or a BIND key file)");
                None
            }
        };
        if let (Some(name), Some(algorithm), Some(secret)) = (name, algorithm, secret) {
            if keys.iter().any(|x| x.name == name) {
                cx.err(&with(&kp, &[k("name")]), format!("key {name} is configured twice"));
            }
            keys.push(crate::provider::tsig::Key { name, algorithm, secret });
        }
    }

    let mut listen = Vec::new();
    let raw_listen = raw.listen.unwrap_or_else(default_listen);
    if raw_listen.is_empty() {
        cx.err(&with(&p, &[k("listen")]), "expected at least one address such as \"0.0.0.0:53\"");
    }
    for (i, l) in raw_listen.iter().enumerate() {
        let parsed = l.parse::<SocketAddr>().or_else(|_| l.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
        match parsed {
            Ok(a) if listen.contains(&a) => cx.err(&with(&p, &[k("listen"), Seg::Index(i)]), format!("{a} is listed twice")),
            Ok(a) => listen.push(a),
            Err(_) => cx.err(
                &with(&p, &[k("listen"), Seg::Index(i)]),
                format!("expected an address and port such as \"0.0.0.0:53\" or \"[::1]:5353\", got \"{l}\""),
            ),
        }
    }
    let udp_workers = match raw.udp_workers {
        Some(n) if (1..=64).contains(&n) => n as usize,
        Some(n) => {
            cx.err(&with(&p, &[k("udp_workers")]), format!("expected 1 to 64 threads, got {n}"));
            1
        }
        None => std::thread::available_parallelism().map(|n| n.get().min(4)).unwrap_or(1),
    };
    let tcp_idle_timeout = match raw.tcp_idle_timeout.as_deref().map(parse_duration) {
        None => DEFAULT_TCP_IDLE,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            cx.err(&with(&p, &[k("tcp_idle_timeout")]), "expected a timeout above zero");
            DEFAULT_TCP_IDLE
        }
        Some(Err(e)) => {
            cx.err(&with(&p, &[k("tcp_idle_timeout")]), e);
            DEFAULT_TCP_IDLE
        }
    };
    if raw.tcp_max_connections == 0 {
        cx.err(&with(&p, &[k("tcp_max_connections")]), "expected at least 1");
    }
    let tcp_max_connections_per_client = match raw.tcp_max_connections_per_client {
        None => (raw.tcp_max_connections as usize / 4).max(1),
        Some(n) if n >= 1 && n <= raw.tcp_max_connections => n as usize,
        Some(n) => {
            cx.err(
                &with(&p, &[k("tcp_max_connections_per_client")]),
                format!("expected 1 to tcp_max_connections ({}), got {n}", raw.tcp_max_connections),
            );
            1
        }
    };
    let tcp_write_timeout = match raw.tcp_write_timeout.as_deref().map(parse_duration) {
        None => DEFAULT_TCP_WRITE,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            cx.err(&with(&p, &[k("tcp_write_timeout")]), "expected a timeout above zero");
            DEFAULT_TCP_WRITE
        }
        Some(Err(e)) => {
            cx.err(&with(&p, &[k("tcp_write_timeout")]), e);
            DEFAULT_TCP_WRITE
        }
    };
    let rrl = validate_rrl(cx, raw.rrl, &with(&p, &[k("rrl")]));
    if !(512..=4096).contains(&raw.max_udp_payload) {
        cx.err(&with(&p, &[k("max_udp_payload")]), format!("expected 512 to 4096 bytes, got {}", raw.max_udp_payload));
    }
    if raw.zones.is_empty() {
        cx.err(&p, "[dns] needs at least one [[dns.zone]]");
    }

    let by_name: HashMap<&str, &ServiceConfig> = services.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut zones: Vec<ZoneConfig> = Vec::new();
    for (i, rz) in raw.zones.into_iter().enumerate() {
        let zp = with(&p, &[k("zone"), Seg::Index(i)]);
        if let Some(z) = validate_zone(cx, rz, &zp, &by_name, &keys) {
            if let Some(other) = zones.iter().find(|o| z.apex.is_within(&o.apex) || o.apex.is_within(&z.apex)) {
                let msg = if other.apex == z.apex {
                    format!("zone {} is configured twice", z.apex)
                } else {
                    format!("zone {} overlaps zone {}; nested zones are not supported", z.apex, other.apex)
                };
                cx.err(&with(&zp, &[k("name")]), msg);
            }
            zones.push(z);
        }
    }
    if cx.errors_len() > before {
        return None;
    }
    Some(DnsConfig {
        listen,
        udp_workers,
        tcp_idle_timeout,
        tcp_max_connections: raw.tcp_max_connections as usize,
        tcp_max_connections_per_client,
        tcp_write_timeout,
        max_udp_payload: raw.max_udp_payload,
        rrl,
        zones,
        keys,
    })
}

/// Absent: on for every client but loopback ones; `true` or a table: on for every client;
/// `false`: off.
fn validate_rrl(cx: &mut Ctx<'_>, raw: Option<RawRrl>, p: &[Seg]) -> Option<RrlConfig> {
    let (s, loopback) = match raw {
        None => (RawRrlSettings::default(), false),
        Some(RawRrl::Enabled(false)) => return None,
        Some(RawRrl::Enabled(true)) => (RawRrlSettings::default(), true),
        Some(RawRrl::Settings(s)) => (s, true),
    };
    let rate = s.rate.unwrap_or(DEFAULT_RRL_RATE);
    if rate == 0 {
        cx.err(&with(p, &[k("rate")]), "expected at least 1 response per second (to turn rate limiting off, write `rrl = false`)");
    }
    let slip = s.slip.unwrap_or(DEFAULT_RRL_SLIP);
    if slip > 10 {
        cx.err(&with(p, &[k("slip")]), format!("expected 0 (drop every limited response) to 10, got {slip}"));
    }
    let window = match s.window.as_deref().map(parse_duration) {
        None => DEFAULT_RRL_WINDOW,
        Some(Ok(d)) if (1..=3600).contains(&d.as_secs()) && d.subsec_nanos() == 0 => d,
        Some(Ok(_)) => {
            cx.err(&with(p, &[k("window")]), "expected whole seconds from 1s to 3600s");
            DEFAULT_RRL_WINDOW
        }
        Some(Err(e)) => {
            cx.err(&with(p, &[k("window")]), e);
            DEFAULT_RRL_WINDOW
        }
    };
    if u64::from(rate) * window.as_secs() > super::rrl::MAX_DEBT {
        cx.err(&with(p, &[k("rate")]), format!("rate x window must be at most {}", super::rrl::MAX_DEBT));
    }
    Some(RrlConfig { rate, slip, window, loopback })
}

fn validate_zone(cx: &mut Ctx<'_>, rz: RawZone, zp: &[Seg], services: &HashMap<&str, &ServiceConfig>, keys: &[crate::provider::tsig::Key]) -> Option<ZoneConfig> {
    let before = cx.errors_len();
    let apex = match Name::parse_absolute(rz.name.trim()) {
        Ok(n) if !n.is_root() => n,
        Ok(_) => {
            cx.err(&with(zp, &[k("name")]), "serving the root zone is not supported");
            return None;
        }
        Err(e) => {
            cx.err(&with(zp, &[k("name")]), e);
            return None;
        }
    };
    let zone_ttl = ttl_of(cx, &with(zp, &[k("ttl")]), &rz.ttl, DEFAULT_ZONE_TTL);

    // Nameservers and their glue.
    let mut nameservers = Vec::new();
    if rz.nameservers.is_empty() {
        cx.err(zp, format!("zone {apex} needs nameservers, e.g. nameservers = {{ \"ns1.{}\" = \"192.0.2.1\" }}", display_rel(&apex)));
    }
    for (ns, addrs) in &rz.nameservers {
        let np = with(zp, &[k("nameservers"), k(ns)]);
        let name = match Name::parse_absolute(ns.trim()) {
            Ok(n) => n,
            Err(e) => {
                cx.err(&np, e);
                continue;
            }
        };
        let list = match addrs {
            RawAddrs::One(s) => vec![s.clone()],
            RawAddrs::Many(v) => v.clone(),
        };
        let mut ips = Vec::new();
        for a in &list {
            match a.trim().parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => cx.err(&np, format!("expected an IP address such as \"192.0.2.1\", got \"{a}\"")),
            }
        }
        if name.is_within(&apex) && ips.is_empty() {
            cx.err(&np, format!("{name} is inside the zone, so it needs an address (glue)"));
        }
        if !name.is_within(&apex) && !ips.is_empty() {
            cx.warn(&np, format!("{name} is outside zone {apex}: its address is not served from here (use [] to silence)"));
            ips.clear();
        }
        nameservers.push((name, ips));
    }

    // SOA.
    let sp = with(zp, &[k("soa")]);
    let mname = match &rz.soa.mname {
        Some(m) => Name::parse_in(m, &apex).map_err(|e| cx.err(&with(&sp, &[k("mname")]), e)).ok(),
        None => nameservers.first().map(|(n, _)| n.clone()),
    };
    let rname = match &rz.soa.rname {
        Some(r) => Name::parse_in(&r.replacen('@', ".", 1), &apex).map_err(|e| cx.err(&with(&sp, &[k("rname")]), e)).ok(),
        None => Name::parse_absolute("hostmaster").ok().and_then(|h| h.append(&apex)),
    };
    let soa = SoaConfig {
        mname: mname.unwrap_or_else(|| apex.clone()),
        rname: rname.unwrap_or_else(|| apex.clone()),
        ttl: ttl_of(cx, &with(&sp, &[k("ttl")]), &rz.soa.ttl, 3600),
        refresh: ttl_of(cx, &with(&sp, &[k("refresh")]), &rz.soa.refresh, 3600),
        retry: ttl_of(cx, &with(&sp, &[k("retry")]), &rz.soa.retry, 600),
        expire: ttl_of(cx, &with(&sp, &[k("expire")]), &rz.soa.expire, 604_800),
        minimum: ttl_of(cx, &with(&sp, &[k("minimum")]), &rz.soa.minimum, 60),
    };

    let mut allow_transfer = Vec::new();
    for (i, a) in rz.allow_transfer.iter().enumerate() {
        match IpNet::parse(a) {
            Ok(n) => allow_transfer.push(n),
            Err(e) => cx.err(&with(zp, &[k("allow_transfer"), Seg::Index(i)]), e),
        }
    }

    let transfer_key = match rz.transfer_key.as_deref().map(|n| Name::parse_absolute(n.trim())) {
        None => None,
        Some(Ok(n)) if keys.iter().any(|x| x.name == n) => Some(n),
        Some(Ok(n)) => {
            cx.err(&with(zp, &[k("transfer_key")]), format!("no [[dns.key]] named {n}"));
            None
        }
        Some(Err(e)) => {
            cx.err(&with(zp, &[k("transfer_key")]), e);
            None
        }
    };
    let mut notify = Vec::new();
    for (i, s) in rz.notify.iter().enumerate() {
        match crate::provider::config::parse_server(s) {
            Some(a) => notify.push(a),
            None => cx.err(&with(zp, &[k("notify"), Seg::Index(i)]), format!("expected a secondary's address such as \"192.0.2.54:53\", got \"{s}\"")),
        }
    }

    // Records.
    let mut records: Vec<RecordConfig> = Vec::new();
    // (name, type) -> index in records, for merging and conflict checks; type 0 = failover.
    let mut seen: HashMap<(Name, u16), usize> = HashMap::new();
    let glue: HashSet<&Name> = nameservers.iter().filter(|(_, ips)| !ips.is_empty()).map(|(n, _)| n).collect();
    for (i, rr) in rz.records.into_iter().enumerate() {
        let rp = with(zp, &[k("record"), Seg::Index(i)]);
        let name = match Name::parse_in(&rr.name, &apex) {
            Ok(n) => n,
            Err(e) => {
                cx.err(&with(&rp, &[k("name")]), e);
                continue;
            }
        };
        if !name.is_within(&apex) {
            cx.err(&with(&rp, &[k("name")]), format!("{name} is outside zone {apex}"));
            continue;
        }
        if !rr.name.trim().ends_with('.') && rr.name.trim() != "@" && Name::parse_absolute(&rr.name).is_ok_and(|n| n.is_within(&apex) && n != apex) {
            cx.warn(
                &with(&rp, &[k("name")]),
                format!("\"{}\" is relative, so it means {name}; end it with a dot if you meant the absolute name", rr.name),
            );
        }
        let (ttl, kind) = match (&rr.service, &rr.rtype) {
            (Some(_), Some(_)) => {
                cx.err(&with(&rp, &[k("type")]), "a failover record (`service`) takes its type from the target's address; remove `type`");
                continue;
            }
            (None, None) => {
                cx.err(&rp, "a record needs either `service` (failover) or `type` and `value` (static)");
                continue;
            }
            (Some(svc), None) => {
                if rr.value.is_some() || rr.values.is_some() {
                    cx.err(&with(&rp, &[k("value")]), "a failover record's value is the active target's address; remove `value`");
                    continue;
                }
                let ttl = ttl_of(cx, &with(&rp, &[k("ttl")]), &rr.ttl, DEFAULT_FAILOVER_TTL);
                match services.get(svc.as_str()) {
                    None => {
                        let known: Vec<&str> = services.keys().copied().collect();
                        cx.err(&with(&rp, &[k("service")]), format!("no service named \"{svc}\" (configured: {})", known.join(", ")));
                        continue;
                    }
                    Some(s) => {
                        if let Some(budget) = s.rto_budget {
                            let worst = s.detection_budget().saturating_add(Duration::from_secs(ttl as u64));
                            if worst > budget {
                                cx.warn(
                                    &with(&rp, &[k("ttl")]),
                                    format!(
                                        "TTL {ttl}s plus detection time {} makes {} before every resolver follows a failover, more than service \"{svc}\"'s rto_budget {}",
                                        humantime::format_duration(s.detection_budget()),
                                        humantime::format_duration(worst),
                                        humantime::format_duration(budget)
                                    ),
                                );
                            }
                        }
                    }
                }
                let sp = with(&rp, &[k("suspect_ttl")]);
                let suspect_ttl = match &rr.suspect_ttl {
                    None | Some(RawSuspectTtl::Switch(true)) => Some(DEFAULT_SUSPECT_TTL),
                    Some(RawSuspectTtl::Switch(false)) => None,
                    Some(RawSuspectTtl::Ttl(t)) => match ttl_of(cx, &sp, &Some(t.clone()), 0) {
                        0 => None,
                        s if s >= ttl => {
                            cx.warn(&sp, format!("suspect_ttl {s}s is not shorter than ttl {ttl}s, so it changes nothing"));
                            None
                        }
                        s => Some(s),
                    },
                };
                (ttl, RecordKind::Failover { service: svc.clone(), suspect_ttl: suspect_ttl.filter(|&s| s < ttl) })
            }
            (None, Some(t)) => {
                let t_up = t.trim().to_ascii_uppercase();
                if !STATIC_TYPES.contains(&t_up.as_str()) {
                    cx.err(&with(&rp, &[k("type")]), format!("expected one of {}, got \"{t}\"", STATIC_TYPES.join(", ")));
                    continue;
                }
                let values = match (&rr.value, &rr.values) {
                    (Some(v), None) => vec![v.clone()],
                    (None, Some(v)) if !v.is_empty() => v.clone(),
                    (None, _) => {
                        cx.err(&rp, format!("a {t_up} record needs `value` (or `values`, a list)"));
                        continue;
                    }
                    (Some(_), Some(_)) => {
                        cx.err(&with(&rp, &[k("values")]), "give `value` or `values`, not both");
                        continue;
                    }
                };
                let mut rdatas = Vec::new();
                for (j, v) in values.iter().enumerate() {
                    let vp = if rr.values.is_some() { with(&rp, &[k("values"), Seg::Index(j)]) } else { with(&rp, &[k("value")]) };
                    match parse_rdata(&t_up, v, &apex) {
                        Ok(r) => rdatas.push(r),
                        Err(e) => cx.err(&vp, e),
                    }
                }
                if t_up == "CNAME" && rdatas.len() > 1 {
                    cx.err(&rp, "a name can have only one CNAME");
                    continue;
                }
                let ttl = ttl_of(cx, &with(&rp, &[k("ttl")]), &rr.ttl, zone_ttl);
                if rr.suspect_ttl.is_some() {
                    cx.err(&with(&rp, &[k("suspect_ttl")]), "only a failover record (`service`) has a suspicion TTL; remove `suspect_ttl`");
                    continue;
                }
                (ttl, RecordKind::Static(rdatas))
            }
        };
        let code = match &kind {
            RecordKind::Failover { .. } => 0,
            RecordKind::Static(r) => r.first().map(Rdata::rtype).unwrap_or(0),
        };
        // Conflicts at the same name.
        let has = |t: u16| seen.contains_key(&(name.clone(), t));
        let any_at_name = seen.keys().any(|(n, _)| *n == name) || glue.contains(&name);
        let conflict = if code == rtype::CNAME && name == apex {
            Some("a CNAME cannot be at the zone apex (it has SOA and NS records)".to_string())
        } else if code == rtype::CNAME && any_at_name {
            Some(format!("{name} already has other data; a CNAME must be the only record at its name"))
        } else if code != rtype::CNAME && has(rtype::CNAME) {
            Some(format!("{name} has a CNAME; a CNAME must be the only record at its name"))
        } else if code == 0 && has(0) {
            Some(format!("{name} already has a failover record"))
        } else if code == 0 && (has(rtype::A) || has(rtype::AAAA) || glue.contains(&name)) {
            Some(format!("{name} already has static addresses; a failover record serves A/AAAA itself"))
        } else if (code == rtype::A || code == rtype::AAAA) && (has(0) || glue.contains(&name)) {
            Some(format!("{name} already has addresses (a failover record or nameserver glue)"))
        } else {
            None
        };
        if let Some(msg) = conflict {
            cx.err(&with(&rp, &[k("name")]), msg);
            continue;
        }
        match (seen.get(&(name.clone(), code)), kind) {
            (Some(&idx), RecordKind::Static(more)) => {
                if let RecordKind::Static(existing) = &mut records[idx].kind {
                    for r in more {
                        if !existing.contains(&r) {
                            existing.push(r);
                        }
                    }
                }
                if records[idx].ttl != ttl {
                    cx.warn(&with(&rp, &[k("ttl")]), format!("{name} {}: records of one type share one TTL; using {}", type_name(code), records[idx].ttl));
                }
            }
            (_, kind) => {
                seen.insert((name.clone(), code), records.len());
                records.push(RecordConfig { name, ttl, kind });
            }
        }
    }
    if cx.errors_len() > before {
        return None;
    }
    Some(ZoneConfig { apex, soa, nameservers, allow_transfer, transfer_key, notify, records })
}

fn display_rel(apex: &Name) -> String {
    let s = apex.to_string();
    s.trim_end_matches('.').to_string()
}

pub fn type_name(t: u16) -> String {
    match t {
        0 => "failover".into(),
        rtype::A => "A".into(),
        rtype::NS => "NS".into(),
        rtype::CNAME => "CNAME".into(),
        rtype::SOA => "SOA".into(),
        rtype::HINFO => "HINFO".into(),
        rtype::MX => "MX".into(),
        rtype::TXT => "TXT".into(),
        rtype::AAAA => "AAAA".into(),
        rtype::SRV => "SRV".into(),
        rtype::CAA => "CAA".into(),
        rtype::ANY => "ANY".into(),
        other => format!("TYPE{other}"),
    }
}

/// Split presentation-format text into fields, honouring double quotes.
fn fields(s: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<u8>> = None;
    let mut chars = s.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted => {
                quoted = false;
                out.push(cur.take().unwrap_or_default());
            }
            '"' if cur.is_none() => {
                quoted = true;
                cur = Some(Vec::new());
            }
            '\\' if quoted => match chars.next() {
                Some(e) => {
                    let mut b = [0u8; 4];
                    cur.get_or_insert_with(Vec::new).extend_from_slice(e.encode_utf8(&mut b).as_bytes());
                }
                None => return Err(format!("\"{s}\" ends with a lone backslash")),
            },
            c if c.is_whitespace() && !quoted => {
                if let Some(f) = cur.take() {
                    out.push(f);
                }
            }
            c => {
                let mut b = [0u8; 4];
                cur.get_or_insert_with(Vec::new).extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    if quoted {
        return Err(format!("\"{s}\" has an unterminated quote"));
    }
    if let Some(f) = cur {
        out.push(f);
    }
    Ok(out)
}

fn parse_rdata(t: &str, v: &str, apex: &Name) -> Result<Rdata, String> {
    let num = |f: &[u8], what: &str| -> Result<u16, String> {
        std::str::from_utf8(f).ok().and_then(|s| s.parse::<u16>().ok()).ok_or_else(|| format!("expected {what} (0-65535) in \"{v}\""))
    };
    let name = |f: &[u8]| -> Result<Name, String> { Name::parse_in(std::str::from_utf8(f).map_err(|_| format!("bad name in \"{v}\""))?, apex) };
    match t {
        "A" => v.trim().parse().map(Rdata::A).map_err(|_| format!("expected an IPv4 address such as \"192.0.2.1\", got \"{v}\"")),
        "AAAA" => v.trim().parse().map(Rdata::Aaaa).map_err(|_| format!("expected an IPv6 address such as \"2001:db8::1\", got \"{v}\"")),
        "CNAME" => Name::parse_in(v, apex).map(Rdata::Cname),
        "MX" => match fields(v)?.as_slice() {
            [p, n] => Ok(Rdata::Mx { preference: num(p, "a preference")?, exchange: name(n)? }),
            _ => Err(format!("expected \"PREFERENCE EXCHANGE\" such as \"10 mail\", got \"{v}\"")),
        },
        "SRV" => match fields(v)?.as_slice() {
            [p, w, port, n] => Ok(Rdata::Srv {
                priority: num(p, "a priority")?,
                weight: num(w, "a weight")?,
                port: num(port, "a port")?,
                target: name(n)?,
            }),
            _ => Err(format!("expected \"PRIORITY WEIGHT PORT TARGET\" such as \"10 5 443 www\", got \"{v}\"")),
        },
        "TXT" => {
            // The value is the text itself (no quoting needed); split into 255-byte strings.
            let bytes = v.as_bytes();
            Ok(Rdata::Txt(if bytes.is_empty() { vec![Vec::new()] } else { bytes.chunks(255).map(<[u8]>::to_vec).collect() }))
        }
        "CAA" => match fields(v)?.as_slice() {
            [f, tag, value] => {
                let flags = std::str::from_utf8(f).ok().and_then(|s| s.parse::<u8>().ok()).ok_or_else(|| format!("expected flags 0-255 in \"{v}\""))?;
                if tag.is_empty() || tag.len() > 15 || !tag.iter().all(u8::is_ascii_alphanumeric) {
                    return Err(format!("expected a CAA tag such as issue, issuewild or iodef in \"{v}\""));
                }
                Ok(Rdata::Caa { flags, tag: tag.to_ascii_lowercase(), value: value.clone() })
            }
            _ => Err(format!("expected \"FLAGS TAG VALUE\" such as '0 issue \"letsencrypt.org\"', got \"{v}\"")),
        },
        other => Err(format!("unsupported type {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apex() -> Name {
        Name::parse_absolute("example.test").unwrap()
    }

    #[test]
    fn rdata_presentation_formats() {
        assert_eq!(parse_rdata("MX", "10 mail", &apex()).unwrap(), Rdata::Mx { preference: 10, exchange: Name::parse_absolute("mail.example.test").unwrap() });
        assert!(matches!(parse_rdata("SRV", "1 2 443 www.other.test.", &apex()).unwrap(), Rdata::Srv { port: 443, .. }));
        assert_eq!(
            parse_rdata("CAA", "0 issue \"letsencrypt.org\"", &apex()).unwrap(),
            Rdata::Caa { flags: 0, tag: b"issue".to_vec(), value: b"letsencrypt.org".to_vec() }
        );
        assert!(matches!(parse_rdata("TXT", &"x".repeat(300), &apex()).unwrap(), Rdata::Txt(v) if v.len() == 2 && v[0].len() == 255));
        assert!(parse_rdata("A", "::1", &apex()).is_err());
        assert!(parse_rdata("MX", "mail", &apex()).is_err());
    }

    /// The quick-start config, exactly as users see it.
    const QUICK_START: &str = include_str!("../../examples/quickstart.toml");

    const DNS_BLOCK: &str = r#"
[dns]
listen = ["127.0.0.1:5353"]

[[dns.zone]]
name = "example.test"
nameservers = { "ns1.example.test" = "127.0.0.1" }

[[dns.zone.record]]
name = "www"
service = "www"
ttl = 5
"#;

    fn load(text: &str) -> Result<(crate::config::Config, Vec<crate::config::Warning>), crate::config::ConfigErrors> {
        crate::config::from_str(text, std::path::Path::new("understudy.toml"))
    }

    #[test]
    fn quick_start_dns_block_parses_as_written() {
        let (cfg, warnings) = load(&format!("{QUICK_START}{DNS_BLOCK}")).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let dns = cfg.dns.unwrap();
        assert_eq!(dns.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        let z = &dns.zones[0];
        assert_eq!(z.apex.to_string(), "example.test.");
        assert_eq!(z.soa.mname.to_string(), "ns1.example.test.");
        assert_eq!(z.soa.rname.to_string(), "hostmaster.example.test.");
        assert_eq!(z.soa.negative_ttl(), 60);
        assert_eq!(z.records[0].name.to_string(), "www.example.test.");
        assert_eq!(z.records[0].ttl, 5);
        assert_eq!(z.records[0].kind, RecordKind::Failover { service: "www".into(), suspect_ttl: Some(1) });
        assert_eq!((z.records[0].ttl_now(false), z.records[0].ttl_now(true)), (5, 1));
    }

    #[test]
    fn client_rto_with_and_without_the_suspicion_ttl() {
        // interval 1s, timeout 500ms, fall 3, fast_interval default: detection budget below.
        let (cfg, _) = load(&format!("{QUICK_START}{DNS_BLOCK}")).unwrap();
        let svc = &cfg.services[0];
        let d = svc.detection_budget();
        let dns = cfg.dns.as_ref().unwrap();
        let rto = ClientRto::of(&dns.zones[0].records[0], svc);
        assert_eq!(rto.without, d + Duration::from_secs(5));
        let first_failure = Duration::from_millis(1500) + Duration::from_secs(5);
        assert_eq!(rto.with_suspect, Some((d + Duration::from_secs(1)).max(first_failure)));
        assert!(rto.with_suspect.unwrap() <= rto.without);
        let lines = client_rto_lines(dns, &cfg.services);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("www.example.test. (service www): worst-case client RTO"), "{}", lines[0]);
        assert!(lines[0].contains("with suspect_ttl 1s"), "{}", lines[0]);
        let off = load(&format!("{QUICK_START}{}", DNS_BLOCK.replace("ttl = 5", "ttl = 5\nsuspect_ttl = false"))).unwrap().0;
        assert_eq!(ClientRto::of(&off.dns.as_ref().unwrap().zones[0].records[0], svc).with_suspect, None);
    }

    #[test]
    fn suspect_ttl_is_on_by_default_and_can_be_set_or_turned_off() {
        let suspect = |line: &str| -> Result<Option<u32>, String> {
            let text = format!("{QUICK_START}{}", DNS_BLOCK.replace("ttl = 5", &format!("ttl = 5\n{line}")));
            match load(&text) {
                Ok((cfg, _)) => match &cfg.dns.unwrap().zones[0].records[0].kind {
                    RecordKind::Failover { suspect_ttl, .. } => Ok(*suspect_ttl),
                    k => Err(format!("{k:?}")),
                },
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(suspect(""), Ok(Some(1)));
        assert_eq!(suspect("suspect_ttl = 2"), Ok(Some(2)));
        assert_eq!(suspect("suspect_ttl = \"2s\""), Ok(Some(2)));
        assert_eq!(suspect("suspect_ttl = \"0s\""), Ok(None));
        assert_eq!(suspect("suspect_ttl = false"), Ok(None));
        assert_eq!(suspect("suspect_ttl = true"), Ok(Some(1)));
        assert_eq!(suspect("suspect_ttl = 9"), Ok(None), "not shorter than the TTL: off, with a warning");
        assert!(suspect("suspect_ttl = \"soon\"").unwrap_err().contains("suspect_ttl"));
        let stat = format!("{QUICK_START}{DNS_BLOCK}\n[[dns.zone.record]]\nname = \"txt\"\ntype = \"TXT\"\nvalue = \"hi\"\nsuspect_ttl = 1\n");
        assert!(load(&stat).unwrap_err().to_string().contains("only a failover record"));
    }

    #[test]
    fn static_records_and_absolute_names() {
        let extra = r#"
[[dns.zone.record]]
name = "www2.example.test."
type = "CNAME"
value = "www"

[[dns.zone.record]]
name = "@"
type = "MX"
values = ["10 mx1", "20 mx2.other.test."]

[[dns.zone.record]]
name = "@"
type = "TXT"
value = "v=spf1 -all"

[[dns.zone.record]]
name = "_https._tcp"
type = "SRV"
value = "1 1 443 www"
ttl = "10m"

[[dns.zone.record]]
name = "@"
type = "CAA"
value = '0 issue "letsencrypt.org"'
"#;
        let (cfg, _) = load(&format!("{QUICK_START}{DNS_BLOCK}{extra}")).unwrap();
        let z = &cfg.dns.unwrap().zones[0];
        assert_eq!(z.records.len(), 6);
        assert_eq!(z.records[1].name.to_string(), "www2.example.test.");
        assert_eq!(z.records[4].ttl, 600);
        assert!(matches!(&z.records[2].kind, RecordKind::Static(v) if v.len() == 2));
    }

    #[test]
    fn errors_are_located_and_unknown_keys_rejected() {
        let typo = DNS_BLOCK.replace("ttl = 5", "tll = 5");
        let e = load(&format!("{QUICK_START}{typo}")).unwrap_err();
        assert!(e.to_string().contains("tll"), "{e}");

        let bad = DNS_BLOCK.replace("service = \"www\"", "service = \"nope\"");
        let e = load(&format!("{QUICK_START}{bad}")).unwrap_err();
        let err = &e.0[0];
        assert_eq!(err.key, "dns.zone[0].record[0].service");
        assert!(err.message.contains("no service named \"nope\""), "{err}");
        assert!(err.line.is_some());

        let clash = format!("{QUICK_START}{DNS_BLOCK}\n[[dns.zone.record]]\nname = \"www\"\ntype = \"CNAME\"\nvalue = \"x\"\n");
        let e = load(&clash).unwrap_err();
        assert!(e.to_string().contains("CNAME must be the only record"), "{e}");

        let bad_listen = DNS_BLOCK.replace("127.0.0.1:5353", "localhost:53");
        let e = load(&format!("{QUICK_START}{bad_listen}")).unwrap_err();
        assert_eq!(e.0[0].key, "dns.listen[0]");
    }

    #[test]
    fn rate_limiting_and_tcp_limits() {
        let dns = |extra: &str| load(&format!("{QUICK_START}{}", DNS_BLOCK.replace("[dns]\n", &format!("[dns]\n{extra}\n")))).map(|(c, _)| c.dns.unwrap());
        // Default: on, except for loopback clients.
        let d = dns("").unwrap();
        assert_eq!(d.rrl, Some(RrlConfig { rate: 20, slip: 2, window: Duration::from_secs(15), loopback: false }));
        assert_eq!((d.tcp_max_connections_per_client, d.tcp_write_timeout), (128, DEFAULT_TCP_WRITE));
        assert_eq!(dns("rrl = false").unwrap().rrl, None);
        assert!(dns("rrl = true").unwrap().rrl.unwrap().loopback);
        let d = dns("rrl = { rate = 5, slip = 0, window = \"30s\" }\ntcp_max_connections = 100\ntcp_max_connections_per_client = 3\ntcp_write_timeout = \"500ms\"").unwrap();
        assert_eq!(d.rrl, Some(RrlConfig { rate: 5, slip: 0, window: Duration::from_secs(30), loopback: true }));
        assert_eq!((d.tcp_max_connections_per_client, d.tcp_write_timeout), (3, Duration::from_millis(500)));
        let e = dns("rrl = { rate = 0 }").unwrap_err();
        assert_eq!(e.0[0].key, "dns.rrl.rate");
        let e = dns("rrl = { rate = 5, window = \"0s\" }").unwrap_err();
        assert_eq!(e.0[0].key, "dns.rrl.window");
        let e = dns("rrl = { rat = 5 }").unwrap_err();
        assert!(e.to_string().contains("unknown field `rat`"), "{e}");
        let e = dns("rrl = \"on\"").unwrap_err();
        assert!(e.to_string().contains("true, false or a table"), "{e}");
        let e = dns("tcp_max_connections_per_client = 600").unwrap_err();
        assert_eq!(e.0[0].key, "dns.tcp_max_connections_per_client");
    }

    #[test]
    fn warns_when_ttl_and_detection_exceed_the_rto_budget() {
        let q = QUICK_START.replace("all_down = \"primary\"", "all_down = \"primary\"\nrto_budget = \"6s\"");
        let (_, warnings) = load(&format!("{q}{DNS_BLOCK}")).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].key, "dns.zone[0].record[0].ttl");
        assert!(warnings[0].message.contains("rto_budget"));
    }

    #[test]
    fn networks() {
        let n = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(IpNet::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(IpNet::parse("10.0.0.0/33").is_err());
    }
}
