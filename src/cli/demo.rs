//! `understudy demo`: a failover and a failback on this machine, with nothing installed.
//!
//! Starts two small web servers (primary on 127.0.0.2, backup on 127.0.0.3, same port), runs
//! the real daemon in-process against them with fast checks, stops the primary, shows the
//! failover as it happens, restarts the primary, shows the failback after the hold, and prints
//! the incident with its measured times. Everything lives in a temporary directory that is
//! removed at the end.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::render;
use crate::api::wire;
use crate::events::{Event, Record};

const PRIMARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const BACKUP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// A web server we can stop and start again on the same address.
struct WebServer {
    addr: SocketAddr,
    name: &'static str,
    stop: Option<CancellationToken>,
}

impl WebServer {
    async fn start(&mut self) -> Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr).await.with_context(|| format!("cannot listen on {}", self.addr))?;
        let stop = CancellationToken::new();
        let name = self.name;
        let app = axum::Router::new().route("/health", axum::routing::get(move || async move { format!("{name} ok\n") }));
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async move { token.cancelled().await }).await;
        });
        self.stop = Some(stop);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            s.cancel();
        }
    }
}

/// A port free on both demo addresses.
async fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let a = tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(PRIMARY), 0)).await.context("cannot bind on 127.0.0.2")?;
        let port = a.local_addr()?.port();
        if tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(BACKUP), port)).await.is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free on both 127.0.0.2 and 127.0.0.3")
}

fn config_text(port: u16, data_dir: &std::path::Path, interval: Duration, hold: &str) -> String {
    let timeout = interval * 3 / 4;
    format!(
        r#"[daemon]
data_dir = "{data}"
api = "127.0.0.1:0"

[[service]]
name = "www"
failback = "auto"
failback_hold = "{hold}"
all_down = "primary"

[service.check]
kind = "http"
port = {port}
path = "/health"
expect_status = [200]
interval = "{interval}"
timeout = "{timeout}"
fall = 3
rise = 2

[[service.target]]
name = "primary"
address = "127.0.0.2"

[[service.target]]
name = "backup"
address = "127.0.0.3"

[[service.hook]]
name = "announce"
command = "echo \"traffic for $UNDERSTUDY_SERVICE now goes to $UNDERSTUDY_NEW_TARGET ($UNDERSTUDY_NEW_ADDRESS), epoch $UNDERSTUDY_EPOCH\""
timeout = "5s"
"#,
        data = data_dir.display(),
        interval = humantime::format_duration(interval),
        timeout = humantime::format_duration(timeout),
    )
}

struct Clock(Instant);
impl Clock {
    fn say(&self, msg: impl std::fmt::Display) {
        println!("[{:>6.2}s] {msg}", self.0.elapsed().as_secs_f64());
    }
}

/// Wait for an event matching `pred`, printing every event that arrives meanwhile.
async fn until(rx: &mut broadcast::Receiver<Record>, clock: &Clock, within: Duration, what: &str, pred: impl Fn(&Event) -> bool) -> Result<Record> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(r)) => {
                clock.say(format!("  event #{}: {}", r.seq, r.event.summary()));
                if pred(&r.event) {
                    return Ok(r);
                }
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => bail!("event stream ended: {e}"),
            Err(_) => bail!("gave up waiting for {what} after {}", humantime::format_duration(within)),
        }
    }
}

pub async fn run(interval: &str, hold: &str) -> Result<()> {
    let interval = crate::config::parse_duration(interval).map_err(|e| anyhow::anyhow!("--interval: {e}"))?;
    let hold_d = crate::config::parse_duration(hold).map_err(|e| anyhow::anyhow!("--hold: {e}"))?;
    let dir = tempfile::Builder::new().prefix("understudy-demo-").tempdir().context("cannot create a temporary directory")?;
    let port = free_port().await?;
    let mut primary = WebServer { addr: SocketAddr::new(IpAddr::V4(PRIMARY), port), name: "primary", stop: None };
    let mut backup = WebServer { addr: SocketAddr::new(IpAddr::V4(BACKUP), port), name: "backup", stop: None };
    primary.start().await?;
    backup.start().await?;

    let path = dir.path().join("understudy.toml");
    std::fs::write(&path, config_text(port, &dir.path().join("data"), interval, hold))?;
    let (cfg, _) = crate::config::load(&path).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let detect = cfg.services[0].detection_budget();

    let clock = Clock(Instant::now());
    println!("understudy demo: primary web server on {}, backup on {}", primary.addr, backup.addr);
    println!("checks: HTTP GET /health every {}, 3 failures to fail over, failback after {hold} of health", humantime::format_duration(interval));
    println!("config written to {}\n", path.display());

    let handle = super::run::start(cfg).await.context("cannot start the daemon")?;
    let mut rx = handle.subscribe();
    clock.say(format!("daemon started, API on http://{}", handle.api_addr));
    let result = async {
        until(&mut rx, &clock, Duration::from_secs(10), "the first decision", |e| matches!(e, Event::Decision { .. })).await?;
        until(&mut rx, &clock, Duration::from_secs(10), "the hook to run", |e| matches!(e, Event::Actuated { .. })).await?;
        tokio::time::sleep(interval * 3).await;

        println!();
        clock.say(format!("*** stopping the primary web server ({}) ***", primary.addr));
        primary.stop();
        let budget = detect + Duration::from_secs(5);
        until(&mut rx, &clock, budget, "the failover", |e| matches!(e, Event::IncidentOpened { .. })).await?;
        until(&mut rx, &clock, Duration::from_secs(10), "the switch to be applied", |e| matches!(e, Event::Actuated { .. })).await?;
        let services = handle.shared.services().await?;
        clock.say(format!("traffic is on: {}", services[0].status.active.as_deref().unwrap_or("(none)")));

        tokio::time::sleep(interval * 3).await;
        println!();
        clock.say(format!("*** starting the primary web server again ({}) ***", primary.addr));
        primary.start().await?;
        let budget = hold_d + interval * 10 + Duration::from_secs(5);
        let closed = until(&mut rx, &clock, budget, "the failback", |e| matches!(e, Event::IncidentClosed { .. })).await?;
        let id = match closed.event {
            Event::IncidentClosed { id, .. } => id,
            _ => unreachable!("matched above"),
        };
        until(&mut rx, &clock, Duration::from_secs(10), "the failback to be applied", |e| matches!(e, Event::Actuated { .. })).await?;

        println!();
        let incidents = handle.shared.incidents().await?;
        let inc = incidents.iter().find(|i| i.id == id).context("incident vanished")?;
        print!("{}", render::incident(&wire::Incident::from(inc), render::Paint::stdout()));
        println!();
        let services: Vec<wire::Service> = handle.shared.services().await?.iter().map(crate::api::view::service).collect();
        print!("{}", render::services(&services, render::Paint::stdout()));
        Ok::<_, anyhow::Error>(())
    }
    .await;
    handle.shutdown().await;
    primary.stop();
    backup.stop();
    result?;
    println!("demo finished: try `understudy run -c <your config>`; see README.md");
    Ok(())
}
