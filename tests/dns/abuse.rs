//! The DNS server under abuse, with real clients: an abusive TCP client that opens hundreds of
//! connections, pipelines queries and never reads, while `dig +tcp` from another address must
//! still get its answer; a UDP flood from one address that the response rate limiter slows
//! (truncated answers and drops, counted) while another network is answered in full.
//!
//! Every load loop here is bounded in count and time; all traffic stays on 127.0.0.0/8.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use understudy::dns::Dns;
use understudy::dns::config::RrlConfig;

use super::common::wait_for;
use super::support::*;

const DIG: &str = "/usr/bin/dig";

/// Framed TCP queries for the 2.4 KB TXT record, back to back: `n` of them.
fn pipelined_big_queries(n: usize) -> Vec<u8> {
    let q = understudy::dns::client::build_query(7, &understudy::dns::name::Name::parse_absolute("big.example.test").unwrap(), 16);
    let mut b = Vec::with_capacity(n * (q.len() + 2));
    for _ in 0..n {
        b.extend_from_slice(&(q.len() as u16).to_be_bytes());
        b.extend_from_slice(&q);
    }
    b
}

/// One abusive connection from `source`: connect, write the pipelined queries, never read.
/// `None` when the server refused or closed it at once.
async fn abusive_connection(server: SocketAddr, source: IpAddr, queries: &[u8]) -> Option<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.bind(SocketAddr::new(source, 0)).ok()?;
    let mut s = tokio::time::timeout(Duration::from_secs(2), sock.connect(server)).await.ok()?.ok()?;
    // The send buffer takes the whole burst; a server that is not reading would block us,
    // so bound it.
    tokio::time::timeout(Duration::from_secs(2), s.write_all(queries)).await.ok()?.ok()?;
    Some(s)
}

/// The abuser: `per_source` connections from each of `sources`, kept open, never read. Waits
/// until the server has answered (or closed) every one of them, so its slots are really taken.
async fn abuse(server: SocketAddr, sources: &[IpAddr], per_source: usize) -> Vec<tokio::net::TcpStream> {
    let queries = pipelined_big_queries(300);
    let mut conns = Vec::new();
    for _ in 0..per_source {
        for &src in sources {
            if let Some(c) = abusive_connection(server, src, &queries).await {
                conns.push(c);
            }
        }
    }
    // The server has taken each connection in hand when a reply is waiting in it (peek reads
    // nothing) or it was closed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 1];
    for c in &conns {
        loop {
            match tokio::time::timeout(Duration::from_millis(100), c.peek(&mut buf)).await {
                Ok(_) => break,
                Err(_) => assert!(Instant::now() < deadline, "the server never answered an abusive connection"),
            }
        }
    }
    conns
}

/// `dig +tcp` from `source`: the answer's address, or dig's complaint.
async fn dig_tcp(server: SocketAddr, source: &str, timeout_s: u32) -> Result<String, String> {
    let args: Vec<String> = vec![
        format!("@{}", server.ip()),
        "-p".into(),
        server.port().to_string(),
        "-b".into(),
        source.into(),
        "+tcp".into(),
        "+norec".into(),
        format!("+time={timeout_s}"),
        "+tries=1".into(),
        "www.example.test".into(),
        "A".into(),
    ];
    let out = run(DIG, &args).await;
    if out.contains("status: NOERROR") && out.contains("127.0.0.2") { Ok(out) } else { Err(out) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_cannot_keep_tcp_from_others() {
    require(DIG, "bind9-dnsutils");
    // The default limits: 512 connections in all.
    let dns = start("127.0.0.50", "");
    let server = dns.local_addrs()[0];
    assert_eq!(dns.config().tcp_max_connections, 512);
    // 520 connections from 8 addresses (65 each), pipelining 300 queries for a 2.4 KB answer
    // and never reading: more than every slot, and more replies than the socket buffers hold.
    let sources: Vec<IpAddr> = (51..=58).map(|i| IpAddr::from([127, 0, 0, i])).collect();
    let mut conns = abuse(server, &sources, 65).await;
    assert!(conns.len() >= 400, "the abuser could open only {} connections", conns.len());

    // While the abuser holds on (and keeps reconnecting), dig +tcp from elsewhere is answered.
    let queries = pipelined_big_queries(300);
    for round in 0..5 {
        for &src in &sources {
            if let Some(c) = abusive_connection(server, src, &queries).await {
                conns.push(c);
            }
        }
        if let Err(out) = dig_tcp(server, "127.0.0.60", 3).await {
            panic!("dig +tcp failed in round {round} while {} abusive connections were open:\n{out}", conns.len());
        }
    }
    drop(conns);
    dns.stop();
}

/// The test server with rate limiting set as a config would (`rrl = { ... }`, so loopback
/// clients are limited too).
fn start_with_rrl(ip: &str, rate: u32, slip: u32, window_s: u64) -> Dns {
    let cfg = config(&format!("{ip}:0"), "");
    let mut d = dns_config(&cfg);
    d.rrl = Some(RrlConfig { rate, slip, window: Duration::from_secs(window_s), loopback: true });
    Dns::start(d, &services(&cfg), tokio_util::sync::CancellationToken::new()).expect("start dns server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_flood_is_rate_limited_while_another_network_is_answered() {
    require(DIG, "bind9-dnsutils");
    let dns = start_with_rrl("127.0.0.70", 10, 2, 5);
    let server = dns.local_addrs()[0];
    let q = understudy::dns::client::build_query(9, &understudy::dns::name::Name::parse_absolute("www.example.test").unwrap(), 1);

    // The flood: 400 identical queries from 127.0.0.71, in bursts of 40; a reader counts the
    // replies, and each burst waits until every query in it is accounted for (answered,
    // truncated, or counted as dropped by the server), so no socket buffer overflows.
    let flood = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.71:0").await.unwrap());
    // Full answers, truncated ones, and anything else (a truncated answer with records).
    let counts = std::sync::Arc::new([(); 3].map(|_| std::sync::atomic::AtomicUsize::new(0)));
    let reader = {
        let (flood, counts) = (flood.clone(), counts.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_secs(3), flood.recv_from(&mut buf)).await {
                let records = u16::from_be_bytes([buf[6], buf[7]]);
                let kind = match (buf[2] & 0x02 != 0, records) {
                    (true, 0) => 1,
                    (false, 1) if n > 12 => 0,
                    _ => 2,
                };
                counts[kind].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let accounted = || {
        let c = counts.iter().map(|c| c.load(std::sync::atomic::Ordering::Relaxed)).sum::<usize>();
        c + dns.rrl_stats().unwrap().dropped as usize
    };
    for burst in 1..=10 {
        for _ in 0..40 {
            flood.send_to(&q, server).await.unwrap();
        }
        wait_for(Duration::from_secs(5), &format!("burst {burst} accounted for"), || async { (accounted() >= burst * 40).then_some(()) }).await;
    }
    reader.abort();
    let [full, truncated, odd] = [0, 1, 2].map(|i| counts[i].load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(odd, 0, "replies that are neither a full answer nor a bare truncated one");
    let stats = dns.rrl_stats().expect("rate limiting is on");
    eprintln!("flood of 400: {full} answered, {truncated} truncated (slip), {} dropped, {} slipped (server counts)", stats.dropped, stats.slipped);
    // 10 a second; the flood may straddle a second boundary.
    assert!((10..=20).contains(&full), "{full} full answers to a flood limited to 10/s");
    assert!(truncated > 0, "no truncated answers: slip is not working");
    assert!(stats.dropped > 0, "no dropped responses counted");
    assert_eq!(full + truncated + stats.dropped as usize, 400, "every query is answered, slipped or counted as dropped");
    assert_eq!(truncated, stats.slipped as usize);

    // Another network (127.0.1.0/24) is answered at once, over UDP.
    let out = run(DIG, &[format!("@{}", server.ip()), "-p".into(), server.port().to_string(), "-b".into(), "127.0.1.80".into(), "+notcp".into(), "+ignore".into(), "+time=1".into(), "+tries=1".into(), "www.example.test".into(), "A".into()]).await;
    assert!(out.contains("status: NOERROR") && out.contains("127.0.0.2") && !out.contains(" tc"), "{out}");

    // A real client inside the flooded /24 still gets its answer: a truncated reply sends dig
    // to TCP, which is never limited (a dropped one makes it try again).
    let out = run(DIG, &[format!("@{}", server.ip()), "-p".into(), server.port().to_string(), "-b".into(), "127.0.0.72".into(), "+time=1".into(), "+tries=6".into(), "www.example.test".into(), "A".into()]).await;
    assert!(out.contains("status: NOERROR") && out.contains("127.0.0.2"), "{out}");
    dns.stop();
}
