//! Test helpers for the DNS server.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, Record};
use understudy::config::{Config, ServiceConfig};
use understudy::dns::Dns;
use understudy::dns::config::DnsConfig;

/// The quick-start services: `www` (primary 127.0.0.2, backup 127.0.0.3) and an IPv6 service.
pub const SERVICES: &str = r#"
[daemon]
data_dir = "./understudy-data"
api = "127.0.0.1:9190"

[[service]]
name = "www"
failback = "auto"
failback_hold = "10s"
all_down = "primary"

[service.check]
kind = "http"
port = 8080
path = "/health"
expect_status = [200]
interval = "1s"
timeout = "500ms"
fall = 3
rise = 2

[[service.target]]
name = "primary"
address = "127.0.0.2"

[[service.target]]
name = "backup"
address = "127.0.0.3"

[[service]]
name = "v6"
[service.check]
kind = "tcp"
port = 80
[[service.target]]
name = "primary"
address = "2001:db8::2"
[[service.target]]
name = "backup"
address = "2001:db8::3"
"#;

/// 12 TXT strings of 200 bytes: truncated at 512 and 1232 bytes, fits in 4096.
pub fn big_txt() -> Vec<String> {
    (0..12).map(|i| format!("{}{}", (b'a' + i as u8) as char, "x".repeat(199))).collect()
}

/// The test zone as understudy config (`LISTEN` is replaced).
pub fn dns_block(listen: &str, allow_transfer: &str) -> String {
    let big: Vec<String> = big_txt().iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        r#"
[dns]
listen = ["{listen}"]
udp_workers = 2

[[dns.zone]]
name = "example.test"
nameservers = {{ "ns1.example.test" = "127.0.0.1" }}
allow_transfer = [{allow_transfer}]

[[dns.zone.record]]
name = "www"
service = "www"
ttl = 5

[[dns.zone.record]]
name = "v6"
service = "v6"

[[dns.zone.record]]
name = "alias"
type = "CNAME"
value = "www"

[[dns.zone.record]]
name = "chain1"
type = "CNAME"
value = "chain2"

[[dns.zone.record]]
name = "chain2.example.test."
type = "CNAME"
value = "www.example.test."

[[dns.zone.record]]
name = "dangling"
type = "CNAME"
value = "nothere"

[[dns.zone.record]]
name = "outside"
type = "CNAME"
value = "www.example.org."

[[dns.zone.record]]
name = "loop1"
type = "CNAME"
value = "loop2"

[[dns.zone.record]]
name = "loop2"
type = "CNAME"
value = "loop1"

[[dns.zone.record]]
name = "mail"
type = "MX"
value = "10 www"

[[dns.zone.record]]
name = "@"
type = "TXT"
value = "v=spf1 -all"

[[dns.zone.record]]
name = "big"
type = "TXT"
values = [{big}]

[[dns.zone.record]]
name = "_sip._tcp"
type = "SRV"
value = "10 5 5060 www"

[[dns.zone.record]]
name = "@"
type = "CAA"
value = '0 issue "letsencrypt.org"'

[[dns.zone.record]]
name = "a.b.c"
type = "TXT"
value = "deep"

[[dns.zone.record]]
name = "host6"
type = "AAAA"
value = "2001:db8::6"
"#,
        big = big.join(", ")
    )
}

/// The same zone as a Knot zone file (failover records with the primary's address).
pub fn knot_zone() -> String {
    let mut z = String::from(
        "$ORIGIN example.test.\n$TTL 3600\n\
         @ 3600 IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 604800 60\n\
         @ IN NS ns1.example.test.\n\
         ns1 IN A 127.0.0.1\n\
         www 5 IN A 127.0.0.2\n\
         v6 5 IN AAAA 2001:db8::2\n\
         alias IN CNAME www\n\
         chain1 IN CNAME chain2\n\
         chain2 IN CNAME www\n\
         dangling IN CNAME nothere\n\
         outside IN CNAME www.example.org.\n\
         loop1 IN CNAME loop2\n\
         loop2 IN CNAME loop1\n\
         mail IN MX 10 www\n\
         @ IN TXT \"v=spf1 -all\"\n\
         _sip._tcp IN SRV 10 5 5060 www\n\
         @ IN CAA 0 issue \"letsencrypt.org\"\n\
         a.b.c IN TXT \"deep\"\n\
         host6 IN AAAA 2001:db8::6\n",
    );
    for t in big_txt() {
        z.push_str(&format!("big IN TXT \"{t}\"\n"));
    }
    z
}

pub fn config(listen: &str, allow_transfer: &str) -> Config {
    let text = format!("{SERVICES}{}", dns_block(listen, allow_transfer));
    understudy::config::from_str(&text, Path::new("test.toml")).unwrap_or_else(|e| panic!("test config: {e}")).0
}

pub fn dns_config(cfg: &Config) -> DnsConfig {
    cfg.dns.clone().expect("[dns] in test config")
}

pub fn services(cfg: &Config) -> Vec<ServiceConfig> {
    cfg.services.clone()
}

/// Start the server in-process on `ip`, a free port.
pub fn start(ip: &str, allow_transfer: &str) -> Dns {
    let cfg = config(&format!("{ip}:0"), allow_transfer);
    Dns::start(dns_config(&cfg), &services(&cfg), tokio_util::sync::CancellationToken::new()).expect("start dns server")
}

/// Fail with a clear message when a tool the tests need is missing.
pub fn require(bin: &str, package: &str) {
    if !Path::new(bin).exists() {
        panic!("{bin} is missing: install the Debian package `{package}` (scripts/install-test-deps.sh does)");
    }
}

/// A free UDP+TCP port on `ip` (for servers we cannot hand port 0).
pub fn free_port(ip: &str) -> u16 {
    for _ in 0..50 {
        let u = UdpSocket::bind((ip, 0)).expect("bind udp");
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

/// Run a command and return its stdout.
pub async fn run(bin: &str, args: &[String]) -> String {
    let out = tokio::process::Command::new(bin).args(args).output().await.unwrap_or_else(|e| panic!("{bin}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Send raw bytes over UDP; `None` when nothing came back within `wait`.
pub async fn udp_raw(server: SocketAddr, req: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = tokio::net::UdpSocket::bind((server.ip(), 0)).await.ok()?;
    sock.send_to(req, server).await.ok()?;
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// Send raw bytes over TCP (one framed message) from `source`; every reply message until the
/// transfer ends (a second SOA), the server closes, or `wait` passes.
pub async fn tcp_raw(server: SocketAddr, source: Option<IpAddr>, req: &[u8], wait: Duration) -> Vec<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = match (source, server) {
        (Some(ip), _) => {
            let s = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }.unwrap();
            s.bind(SocketAddr::new(ip, 0)).unwrap();
            s
        }
        (None, a) if a.is_ipv4() => tokio::net::TcpSocket::new_v4().unwrap(),
        _ => tokio::net::TcpSocket::new_v6().unwrap(),
    };
    let mut stream = sock.connect(server).await.expect("tcp connect");
    let mut framed = (req.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(req);
    stream.write_all(&framed).await.unwrap();
    let mut msgs = Vec::new();
    let mut soas = 0;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let len = match tokio::time::timeout_at(deadline, stream.read_u16()).await {
            Ok(Ok(l)) => l as usize,
            _ => break,
        };
        let mut m = vec![0u8; len];
        if tokio::time::timeout_at(deadline, stream.read_exact(&mut m)).await.is_err() {
            break;
        }
        let is_xfr = Message::from_vec(&m).is_ok_and(|msg| {
            soas += msg.answers.iter().filter(|r| matches!(r.data, RData::SOA(_))).count();
            msg.queries.first().is_some_and(|q| u16::from(q.query_type()) == 252 || u16::from(q.query_type()) == 251)
                || (msg.queries.is_empty() && !msg.answers.is_empty())
        });
        let rcode_ok = m.get(3).is_some_and(|b| b & 0x0F == 0);
        msgs.push(m);
        if !(is_xfr && rcode_ok) || soas >= 2 {
            break;
        }
    }
    msgs
}

/// A record without its TTL, lowercase, SOA serial zeroed: what conformance compares.
pub fn norm(r: &Record) -> String {
    let data = match &r.data {
        RData::SOA(soa) => format!(
            "{} {} SERIAL {} {} {} {}",
            soa.mname, soa.rname, soa.refresh, soa.retry, soa.expire, soa.minimum
        ),
        other => other.to_string(),
    };
    format!("{} {} {}", r.name, r.record_type(), data).to_ascii_lowercase()
}
