//! Serve the `[dns]` section of a config file, for `bench/dns`: the same server the daemon
//! runs, without probes, decisions or the API, so the benchmark measures only DNS.
//!
//! Usage: `dns_bench_server CONFIG [UDP_WORKERS]`. Prints `ready <addr>` once listening and
//! serves until SIGTERM or SIGINT.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: dns_bench_server CONFIG [UDP_WORKERS]");
        return ExitCode::from(2);
    };
    let (cfg, _) = match understudy::config::load(std::path::Path::new(&path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Some(mut dns) = cfg.dns.clone() else {
        eprintln!("{path} has no [dns] section");
        return ExitCode::from(2);
    };
    if let Some(n) = args.next().and_then(|n| n.parse().ok()) {
        dns.udp_workers = n;
    }
    // TCP is served by tokio; one thread is plenty for a UDP benchmark.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        let token = tokio_util::sync::CancellationToken::new();
        let server = match understudy::dns::Dns::start(dns, &cfg.services, token.clone()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        };
        println!("ready {}", server.local_addrs()[0]);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        server.stop();
        ExitCode::SUCCESS
    })
}
