//! Property tests of the request handler: whatever bytes arrive, it never panics, and every
//! reply it produces parses with hickory-proto and answers the request's ID.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use hickory_proto::op::Message;
use proptest::prelude::*;
use understudy::dns::handler::{Reply, Transport, handle};
use understudy::dns::table::{Table, compile};

use super::support::*;

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let cfg = config("127.0.0.1:0", "\"127.0.0.0/8\"");
        let served = HashMap::from([
            ("www".to_string(), vec!["127.0.0.2".parse().unwrap()]),
            ("v6".to_string(), vec!["2001:db8::2".parse().unwrap()]),
        ]);
        compile(&dns_config(&cfg), &served, &[1])
    })
}

/// Valid queries to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let names = ["www.example.test", "WWW.example.test", "nx.example.test", "example.test", "alias.example.test", "big.example.test", "www.example.org"];
    let types = [1u16, 28, 16, 255, 252, 251, 5, 6, 2, 41];
    let mut v = Vec::new();
    for (i, n) in names.iter().enumerate() {
        for (j, t) in types.iter().enumerate() {
            let mut q = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, ((i + j) % 2) as u8];
            for l in n.split('.') {
                q.push(l.len() as u8);
                q.extend_from_slice(l.as_bytes());
            }
            q.push(0);
            q.extend_from_slice(&t.to_be_bytes());
            q.extend_from_slice(&[0, 1]);
            if (i + j) % 2 == 1 {
                q.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, (j % 3 == 0) as u8, 0x80, 0, 0, 0]);
            }
            v.push(q);
        }
    }
    v
}

/// Check the reply to `req`; `Ok(true)` when there was one (a message or a transfer), `Ok(false)`
/// when the handler dropped the request.
fn check(req: &[u8], transport: Transport, client: IpAddr) -> Result<bool, TestCaseError> {
    let mut out = Vec::new();
    match handle(table(), req, transport, client, &mut out) {
        Reply::Drop => return Ok(false),
        Reply::Message => {
            let msg = Message::from_vec(&out).map_err(|e| TestCaseError::fail(format!("reply does not parse: {e}; req {req:?} reply {out:?}")))?;
            prop_assert_eq!(&out[..2], &req[..2]);
            prop_assert!(msg.metadata.message_type == hickory_proto::op::MessageType::Response);
            if transport == Transport::Udp {
                prop_assert!(out.len() <= 1232, "UDP reply of {} bytes", out.len());
            }
        }
        Reply::Transfer(msgs) => {
            prop_assert!(transport == Transport::Tcp);
            for m in msgs {
                Message::from_vec(&m).map_err(|e| TestCaseError::fail(format!("transfer message does not parse: {e}")))?;
            }
        }
    }
    Ok(true)
}

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![Just(Transport::Udp), Just(Transport::Tcp)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(req in proptest::collection::vec(any::<u8>(), 0..600), t in transport()) {
        check(&req, t, "127.0.0.1".parse().unwrap())?;
    }

    #[test]
    fn mutated_queries_never_panic_and_replies_parse(
        seed in 0usize..70,
        flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<u16>()),
        extra in proptest::collection::vec(any::<u8>(), 0..4),
        t in transport(),
    ) {
        let seeds = seeds();
        let mut req = seeds[seed % seeds.len()].clone();
        for (at, b) in flips {
            let i = at as usize % req.len();
            req[i] = b;
        }
        if let Some(c) = cut {
            req.truncate(c as usize % (req.len() + 1));
        }
        req.extend_from_slice(&extra);
        check(&req, t, "127.0.0.1".parse().unwrap())?;
    }
}

/// Every seed is a well-formed query, so each one is answered (never dropped) on both
/// transports, and every answer parses: counted, so a handler that dropped everything fails.
#[test]
fn every_seed_gets_a_parseable_answer() {
    let seeds = seeds();
    let mut unanswered = Vec::new();
    let mut answered = 0;
    for (i, q) in seeds.iter().enumerate() {
        for t in [Transport::Udp, Transport::Tcp] {
            if check(q, t, "127.0.0.9".parse().unwrap()).unwrap() {
                answered += 1;
            } else {
                unanswered.push((i, t));
            }
        }
    }
    assert!(unanswered.is_empty(), "seeds dropped without an answer (seed index, transport): {unanswered:?}");
    assert_eq!(answered, 2 * seeds.len());
}
