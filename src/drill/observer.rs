//! The observing client of a drill: a user's view of the service.
//!
//! Every `every` (50 ms by default) it resolves the service's public name the way a user would
//! (the system resolver, or a named DNS server such as a caching resolver) and requests the URL,
//! recording when, which address answered, and whether it succeeded. Requests run as their own
//! tasks so a hanging request never delays the next one. From the samples the drill computes the
//! client-observed RTO: last success on the old target to first success on the new one.
//!
//! It only observes: it never changes anything, and it stops when its token is cancelled.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::now_us;

/// How the observer turns the name into an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolver {
    /// getaddrinfo, like a browser on the same host.
    System,
    /// Ask this DNS server (a caching resolver, or understudy itself) with recursion desired.
    Server(SocketAddr),
}

/// What to observe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveSpec {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub resolver: Resolver,
    pub every: Duration,
    pub timeout: Duration,
    pub tls_verify: bool,
}

impl ObserveSpec {
    pub fn url(&self) -> String {
        format!("{}://{}:{}{}", self.scheme, self.host, self.port, self.path)
    }
}

/// One request as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// When the request started (wall microseconds).
    pub at_us: u64,
    /// The address the name resolved to (None when resolution failed).
    pub addr: Option<IpAddr>,
    pub ok: bool,
    pub detail: String,
}

/// A running observer.
pub struct Observer {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Upper bound on samples kept (at 50 ms that is over two hours).
const MAX_SAMPLES: usize = 200_000;

impl Observer {
    pub fn start(spec: ObserveSpec) -> Observer {
        crate::crypto::install_provider();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(spec, samples.clone(), stop.clone()));
        Observer { samples, stop, task }
    }

    /// A copy of the samples so far, in start order.
    pub fn samples(&self) -> Vec<Sample> {
        let mut s = self.samples.lock().expect("observer lock").clone();
        s.sort_by_key(|s| s.at_us);
        s
    }

    pub async fn stop(self) -> Vec<Sample> {
        self.stop.cancel();
        let Observer { samples, task, .. } = self;
        let _ = task.await;
        let mut s = samples.lock().expect("observer lock").clone();
        s.sort_by_key(|s| s.at_us);
        s
    }
}

async fn run(spec: ObserveSpec, samples: Arc<Mutex<Vec<Sample>>>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(spec.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let inflight = tokio_util::task::TaskTracker::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let spec = spec.clone();
        let samples = samples.clone();
        inflight.spawn(async move {
            let s = once(&spec).await;
            let mut v = samples.lock().expect("observer lock");
            if v.len() < MAX_SAMPLES {
                v.push(s);
            }
        });
    }
    inflight.close();
    let _ = tokio::time::timeout(spec.timeout, inflight.wait()).await;
}

/// Resolve the name once.
pub async fn resolve(spec: &ObserveSpec) -> Result<IpAddr, String> {
    if let Ok(ip) = spec.host.parse::<IpAddr>() {
        return Ok(ip);
    }
    match &spec.resolver {
        Resolver::System => {
            let mut addrs = tokio::time::timeout(spec.timeout, tokio::net::lookup_host((spec.host.as_str(), spec.port)))
                .await
                .map_err(|_| format!("resolving {} timed out", spec.host))?
                .map_err(|e| format!("cannot resolve {}: {e}", spec.host))?;
            addrs.next().map(|a| a.ip()).ok_or_else(|| format!("{} has no address", spec.host))
        }
        Resolver::Server(server) => crate::dns::client::resolve(*server, &spec.host, spec.timeout).await,
    }
}

/// Resolve once and request the URL at the address obtained (the canary uses it too).
pub async fn once(spec: &ObserveSpec) -> Sample {
    let at_us = now_us();
    let ip = match resolve(spec).await {
        Ok(ip) => ip,
        Err(detail) => return Sample { at_us, addr: None, ok: false, detail },
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(spec.timeout)
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(!spec.tls_verify)
        .resolve(&spec.host, SocketAddr::new(ip, spec.port))
        .build();
    let client = match client {
        Ok(c) => c,
        Err(e) => return Sample { at_us, addr: Some(ip), ok: false, detail: format!("cannot build client: {e}") },
    };
    match client.get(spec.url()).send().await {
        Ok(r) if r.status().is_success() => Sample { at_us, addr: Some(ip), ok: true, detail: format!("HTTP {}", r.status().as_u16()) },
        Ok(r) => Sample { at_us, addr: Some(ip), ok: false, detail: format!("HTTP {}", r.status().as_u16()) },
        Err(e) => {
            let detail = if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                "connection failed".to_string()
            } else {
                e.to_string()
            };
            Sample { at_us, addr: Some(ip), ok: false, detail }
        }
    }
}

/// Client-observed switch between two addresses, from samples.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Switch {
    /// Last success on `from` before the first success on `to` (after `after_us`).
    pub last_old_us: Option<u64>,
    pub first_new_us: u64,
    /// Failed requests in between.
    pub failures: usize,
}

impl Switch {
    /// Last success on the old target to first success on the new one.
    pub fn rto_us(&self) -> Option<u64> {
        self.last_old_us.map(|l| self.first_new_us.saturating_sub(l))
    }
}

/// Find the first success on `to` started after `after_us`, and the last success on `from`
/// before it.
pub fn switch(samples: &[Sample], from: IpAddr, to: IpAddr, after_us: u64) -> Option<Switch> {
    let first = samples.iter().find(|s| s.at_us >= after_us && s.ok && s.addr == Some(to))?;
    let last_old = samples.iter().filter(|s| s.at_us < first.at_us && s.ok && s.addr == Some(from)).map(|s| s.at_us).max();
    let failures = samples.iter().filter(|s| s.at_us < first.at_us && last_old.is_none_or(|l| s.at_us > l) && !s.ok).count();
    Some(Switch { last_old_us: last_old, first_new_us: first.at_us, failures })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at_us: u64, addr: &str, ok: bool) -> Sample {
        Sample { at_us, addr: Some(addr.parse().unwrap()), ok, detail: String::new() }
    }

    #[test]
    fn rto_is_last_old_success_to_first_new_success() {
        let samples = vec![
            s(0, "198.18.0.11", true),
            s(50, "198.18.0.11", true),
            s(100, "198.18.0.11", false),
            s(150, "198.18.0.11", false),
            s(200, "198.18.0.12", true),
            s(250, "198.18.0.12", true),
        ];
        let sw = switch(&samples, "198.18.0.11".parse().unwrap(), "198.18.0.12".parse().unwrap(), 60).unwrap();
        assert_eq!(sw, Switch { last_old_us: Some(50), first_new_us: 200, failures: 2 });
        assert_eq!(sw.rto_us(), Some(150));
        assert!(switch(&samples, "198.18.0.12".parse().unwrap(), "198.18.0.11".parse().unwrap(), 300).is_none());
    }
}
