//! Fuzz the DNS request handler: any bytes, over UDP and TCP, from an allowed and a refused
//! transfer client. It must never panic, every reply must parse with hickory-proto (an
//! independent DNS implementation) and answer the request's ID, and UDP replies must fit the
//! largest payload we advertise. Zone transfer messages must parse too.
#![no_main]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use understudy::dns::handler::{Reply, Transport, handle};
use understudy::dns::table::{Table, compile};

const CONFIG: &str = r#"
[[service]]
name = "www"
[service.check]
kind = "tcp"
port = 80
[[service.target]]
name = "primary"
address = "192.0.2.2"
[[service.target]]
name = "backup"
address = "2001:db8::3"

[dns]
listen = ["127.0.0.1:0"]

[[dns.zone]]
name = "example.test"
nameservers = { "ns1.example.test" = "192.0.2.53" }
allow_transfer = ["127.0.0.1"]

[[dns.zone.record]]
name = "www"
service = "www"

[[dns.zone.record]]
name = "alias"
type = "CNAME"
value = "www"

[[dns.zone.record]]
name = "@"
type = "MX"
value = "10 www"

[[dns.zone.record]]
name = "big"
type = "TXT"
values = ["0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789", "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij", "ABCDEFGHIJABCDEFGHIJABCDEFGHIJABCDEFGHIJABCDEFGHIJABCDEFGHIJABCDEFGHIJABCDEFGHIJABCDEFGHIJABCDEFGHIJ", "9876543210987654321098765432109876543210987654321098765432109876543210987654321098765432109876543210", "zyxwvutsrqzyxwvutsrqzyxwvutsrqzyxwvutsrqzyxwvutsrqzyxwvutsrqzyxwvutsrqzyxwvutsrqzyxwvutsrqzyxwvutsrq", "ZYXWVUTSRQZYXWVUTSRQZYXWVUTSRQZYXWVUTSRQZYXWVUTSRQZYXWVUTSRQZYXWVUTSRQZYXWVUTSRQZYXWVUTSRQZYXWVUTSRQ"]
"#;

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let (cfg, _) = understudy::config::from_str(CONFIG, std::path::Path::new("fuzz.toml")).expect("fuzz config");
        let dns = cfg.dns.expect("[dns]");
        let served = HashMap::from([("www".to_string(), vec!["192.0.2.2".parse().unwrap()])]);
        compile(&dns, &served, &[1])
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        for client in ["127.0.0.1", "192.0.2.99"] {
            let client: IpAddr = client.parse().unwrap();
            match handle(table(), data, transport, client, &mut out) {
                Reply::Drop => {}
                Reply::Message => {
                    assert!(out.len() >= 12 && out[..2] == data[..2], "reply must answer the request's ID");
                    if let Err(e) = Message::from_vec(&out) {
                        panic!("reply does not parse with hickory-proto: {e}; reply {out:?}");
                    }
                    if transport == Transport::Udp {
                        assert!(out.len() <= 1232, "UDP reply of {} bytes", out.len());
                    }
                }
                Reply::Transfer(msgs) => {
                    assert_eq!(transport, Transport::Tcp);
                    assert!(msgs.iter().all(|m| m.len() >= 12 && m.len() <= 65535));
                    for m in &msgs {
                        if let Err(e) = Message::from_vec(m) {
                            panic!("transfer message does not parse with hickory-proto: {e}");
                        }
                    }
                }
            }
        }
    }
});
