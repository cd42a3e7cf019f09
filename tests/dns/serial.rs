//! The real `understudy` binary with `[dns]`, restarted: the SOA serial it serves after a
//! restart is above every serial it served before, even when a burst of changes had run the
//! serial ahead of the clock (the serial reservation in the data directory, `src/dns/serial.rs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::common::*;
use super::support::require;

const DIG: &str = "/usr/bin/dig";

/// The test zone plus a TXT record whose change (a new `rev`) changes the zone's data.
fn dns_block(listen: &str, rev: u32) -> String {
    super::common::dns_block(listen) + &format!("\n[[dns.zone.record]]\nname = \"rev\"\ntype = \"TXT\"\nvalue = \"revision {rev}\"\n")
}

/// The zone's SOA serial as dig sees it.
async fn serial(server: &str, port: u16) -> Option<u32> {
    let out = tokio::process::Command::new(DIG)
        .args([&format!("@{server}"), "-p", &port.to_string(), "+norec", "+time=1", "+tries=1", "+short", "example.test", "SOA"])
        .output()
        .await
        .ok()?;
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(2)?.parse().ok()
}

fn unix_now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soa_serial_never_goes_backwards_across_a_restart() {
    require(DIG, "bind9-dnsutils");
    let dir = tempfile::tempdir().unwrap();
    let ip = "127.0.0.26";
    let port = super::support::free_port(ip);
    // Nothing listens on the checked port: the targets are down, which changes nothing here.
    let check_port = free_port("127.0.0.2");
    let api = api_addr();
    let config = |rev| two_target_config(&dir.path().join("data"), api, check_port, 500, "3s", &dns_block(&format!("{ip}:{port}"), rev));
    let mut d = Daemon::start(dir.path(), &config(0), api).await;
    let mut last = wait_for(Duration::from_secs(5), "an SOA answer", || serial(ip, port)).await;

    // A burst of zone changes (SIGHUP with new data), each waited for: the serial runs ahead
    // of the clock, one step per change.
    for rev in 1..=25 {
        std::fs::write(&d.config, config(rev)).unwrap();
        d.signal(libc::SIGHUP);
        let prev = last;
        last = wait_for(Duration::from_secs(5), &format!("the serial to change after reload {rev}"), || async {
            serial(ip, port).await.filter(|&s| s != prev)
        })
        .await;
        assert!(last.wrapping_sub(prev) < 1 << 31, "serial went from {prev} to {last}");
    }
    let ahead = last as i64 - unix_now() as i64;
    assert!(ahead >= 5, "the burst should have run the serial ahead of the clock (serial {last}, {ahead} s ahead)");

    // A crash, then a restart at once.
    d.kill9();
    d.restart().await;
    let after = wait_for(Duration::from_secs(5), "an SOA answer after the restart", || serial(ip, port)).await;
    eprintln!("serial before the restart {last} ({ahead} s ahead of the clock), after {after}");
    let d_ = after.wrapping_sub(last);
    assert!(d_ != 0 && d_ < 1 << 31, "serial went backwards across the restart: {last} -> {after}");
}
