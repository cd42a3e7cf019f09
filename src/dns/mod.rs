//! The authoritative DNS server: understudy answers for the domain with the active target.
//!
//! # Layout
//! - `config.rs`: the `[dns]` section (raw structs and validation).
//! - `name.rs`, `wire.rs`: names in lowercase wire format, typed RDATA, a compressing writer.
//! - `table.rs`: the answer table, every answer precomputed as wire bytes, compiled from the
//!   zones plus what each failover record serves now.
//! - `handler.rs`: request bytes -> response bytes from a table. Pure, panic-free.
//! - `server.rs`: UDP workers (blocking threads, `recvmmsg`/`sendmmsg`) and TCP (tokio).
//! - `client.rs`: one UDP query, for verifying our own answers.
//! - `actuator.rs`: [`DnsActuator`], the `Actuator` that moves a service's failover records.
//! - `status.rs`: what each failover record serves now and since when.
//!
//! # How a failover reaches clients
//! [`Dns::apply`] updates the served state, bumps the SOA serial of every zone with a record
//! for that service, compiles a new [`table::Table`] and swaps it in with one atomic pointer
//! store (`ArcSwap`). The UDP workers load the pointer once per batch, so the next datagram
//! after the swap is answered with the new address; nothing polls. The handler notes how long
//! after the swap the first failover answer went out, and the actuator reports it.
//!
//! # What is served before the first decision
//! Each failover record starts with the service's first target (the primary), as
//! `all_down = "primary"` would: answering something beats SERVFAIL while checks warm up, and
//! the daemon's first decision replaces it within seconds. With no active target (fail
//! closed), a failover record answers NODATA.
//!
//! # Suspicion TTL
//! [`Dns::set_suspect`] marks a target address of a service as showing signs of trouble (the
//! core calls it when `HealthState::suspect` flips). While a failover record *serves* a suspect
//! address, it is answered with its `suspect_ttl` instead of its TTL, so resolvers that cache it
//! come back within `suspect_ttl` of the switch instead of the full TTL. The TTL goes back when
//! the target is clear again, or at once when the record switches to a target that is not
//! suspect (in the same table as the new address: no window with the old address and the long
//! TTL). Nothing is recompiled unless the TTL answered actually changes, and the hysteresis is in
//! `health/`, so a healthy service costs nothing and one lost packet does not flap the TTL. The
//! suspicion TTL is a property of this server's answers, not of the zone's data: the serial does
//! not change and zone transfers carry the configured TTLs (secondaries answer with the normal
//! TTL; an RFC 1996 NOTIFY for a TTL that changes back within seconds would only add load).
//! DNS providers (RFC 2136 and others), when they exist, take the same signal.
//!
//! # Serials
//! A zone's serial starts at the current Unix time and, on every change of its data, becomes
//! `max(serial + 1, now)` in serial-number arithmetic (RFC 1982), so it increases on every
//! change even when changes come faster than once a second. Started by the daemon
//! ([`Dns::start_with`]), the server keeps a reservation above every serial it serves in
//! `data_dir/dns-serial` and starts from `max(reserved + 1, now)`, so serials never go
//! backwards across restarts (`serial.rs`; written off the failover path).
//!
//! # Reload
//! [`Dns::reload`] (SIGHUP) swaps in new zone data the same way: failover records keep what they
//! serve, zones whose data changed get a new serial. Listen addresses and socket settings take
//! effect at the next restart.
//!
//! This module does not decide which target is active (that is `decision/`); it serves what it
//! is told, refusing commands older than the newest epoch it has applied.

pub mod actuator;
pub mod client;
pub mod config;
pub mod handler;
pub mod name;
pub mod notify;
pub mod rrl;
pub mod serial;
pub mod server;
pub mod status;
pub mod table;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

pub use actuator::DnsActuator;
pub use config::DnsConfig;
pub use status::RecordStatus;

use crate::config::ServiceConfig;
use config::RecordKind;
use table::Table;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(transparent)]
    Bind(#[from] server::BindError),
    #[error("the DNS server must be started inside a tokio runtime (for TCP)")]
    NoRuntime,
    #[error("cannot start DNS worker threads: {0}")]
    Threads(std::io::Error),
    #[error("service \"{0}\" has no failover records in [dns]")]
    UnknownService(String),
    #[error("stale command for service \"{service}\": epoch {epoch} is older than the applied epoch {applied}")]
    Stale { service: String, epoch: u64, applied: u64 },
}

impl DnsError {
    /// True when the command was refused rather than failed (a newer decision already won).
    pub fn is_refusal(&self) -> bool {
        matches!(self, DnsError::Stale { .. })
    }
}

/// What one service's failover records serve now.
#[derive(Debug, Clone)]
struct Served {
    addrs: Vec<IpAddr>,
    epoch: Option<u64>,
    /// Wall time of the last change, microseconds since the Unix epoch.
    since_us: u64,
}

struct State {
    /// The zones being served (replaced by [`Dns::reload`]); sockets use the start-up config.
    cfg: Arc<DnsConfig>,
    served: HashMap<String, Served>,
    /// SOA serial per zone, in `cfg.zones` order.
    serials: Vec<u32>,
    /// The highest serial served since start (RFC 1982 order).
    high: u32,
    /// The serial reservation in the data directory, when there is one.
    reservation: Option<serial::Reservation>,
    /// Target addresses showing signs of trouble, per service (see "Suspicion TTL").
    suspect: HashMap<String, HashSet<IpAddr>>,
}

impl State {
    /// Services whose failover records serve a suspect address now.
    fn suspect_services(&self) -> HashSet<String> {
        self.served
            .iter()
            .filter(|(svc, s)| self.suspect.get(*svc).is_some_and(|bad| s.addrs.iter().any(|a| bad.contains(a))))
            .map(|(svc, _)| svc.clone())
            .collect()
    }

    /// Compile the table for the current state.
    fn compile(&self) -> Table {
        let addrs: HashMap<String, Vec<IpAddr>> = self.served.iter().map(|(k, v)| (k.clone(), v.addrs.clone())).collect();
        table::compile_with(&self.cfg, &addrs, &self.serials, &self.suspect_services())
    }

    /// Note a serial about to be served.
    fn issue(&mut self, s: u32) {
        if serial::serial_gt(s, self.high) {
            self.high = s;
        }
        if let Some(r) = &mut self.reservation {
            r.note(s);
        }
    }
}

struct Inner {
    /// Listen addresses and socket settings as started.
    listen: DnsConfig,
    table: Arc<ArcSwap<Table>>,
    /// The UDP response rate limiter, when on.
    rrl: Option<Arc<rrl::Rrl>>,
    state: Mutex<State>,
    local: Mutex<Vec<SocketAddr>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    cancel: CancellationToken,
}

/// A handle on the DNS server (cheap to clone).
#[derive(Clone)]
pub struct Dns {
    inner: Arc<Inner>,
}

/// The result of [`Dns::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// False when the records already served these addresses (nothing was swapped).
    pub changed: bool,
    pub addresses: Vec<IpAddr>,
    /// Serials of the zones that changed.
    pub serials: Vec<u32>,
    /// Time from the call to the new table being live.
    pub swap_time: Duration,
}

pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn unix_secs() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(1)
}

/// The next serial after `old`: `now` if that is newer (RFC 1982), else `old + 1`.
pub fn next_serial(old: u32, now: u32) -> u32 {
    let ahead = now.wrapping_sub(old);
    if ahead != 0 && ahead < (1 << 31) { now } else { old.wrapping_add(1) }
}

/// What a service's failover records serve before this DNS server has applied a decision of its
/// own: the decision restored from the event log at start-up, or the current decision when a
/// reload adds a record. A service without one serves its first target (the primary).
pub use crate::actuator::Current;

impl Dns {
    /// Build the server state without sockets: each failover record serves its service's
    /// first target. `services` must contain every service named in `cfg`.
    /// Serials start from the clock and are not remembered across restarts.
    pub fn new(cfg: DnsConfig, services: &[ServiceConfig]) -> Dns {
        Dns::new_with(cfg, services, &HashMap::new(), None)
    }

    /// As [`Dns::new`], but each service in `current` serves what it says (the decisions
    /// restored from the event log), and with a `data_dir` serials are remembered there (see
    /// `serial.rs`): they start from `max(stored + 1, now)` and never go backwards across
    /// restarts.
    pub fn new_with(cfg: DnsConfig, services: &[ServiceConfig], current: &HashMap<String, Current>, data_dir: Option<&std::path::Path>) -> Dns {
        let served = served_for(&cfg, services, HashMap::new(), current);
        let first = serial::start_serial(data_dir.and_then(serial::load), unix_secs());
        let reservation = data_dir.and_then(|d| match serial::Reservation::start(d.to_path_buf(), first) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "dns: cannot start the serial writer; serials are not remembered across restarts");
                None
            }
        });
        let serials = vec![first; cfg.zones.len()];
        let addrs: HashMap<String, Vec<IpAddr>> = served.iter().map(|(k, v)| (k.clone(), v.addrs.clone())).collect();
        let table = table::compile(&cfg, &addrs, &serials);
        Dns {
            inner: Arc::new(Inner {
                listen: cfg.clone(),
                table: Arc::new(ArcSwap::from_pointee(table)),
                rrl: cfg.rrl.as_ref().map(|r| Arc::new(rrl::Rrl::new(r))),
                state: Mutex::new(State { cfg: Arc::new(cfg), served, serials, high: first, reservation, suspect: HashMap::new() }),
                local: Mutex::new(Vec::new()),
                stop: Arc::new(AtomicBool::new(false)),
                threads: Mutex::new(Vec::new()),
                cancel: CancellationToken::new(),
            }),
        }
    }

    /// Build and start serving on the configured addresses. Bind errors are returned (the
    /// daemon treats them as fatal). Stops when `shutdown` fires or [`Dns::stop`] is called.
    /// Must be called inside a tokio runtime.
    pub fn start(cfg: DnsConfig, services: &[ServiceConfig], shutdown: CancellationToken) -> Result<Dns, DnsError> {
        Dns::start_with(cfg, services, &HashMap::new(), None, shutdown)
    }

    /// As [`Dns::start`], built with [`Dns::new_with`]: the table holds the decisions restored
    /// from the event log before the first socket is bound (a restarted daemon never answers
    /// with a target it had already failed away from), and serials are remembered in the
    /// daemon's `data_dir`.
    pub fn start_with(
        cfg: DnsConfig,
        services: &[ServiceConfig],
        current: &HashMap<String, Current>,
        data_dir: Option<&std::path::Path>,
        shutdown: CancellationToken,
    ) -> Result<Dns, DnsError> {
        let dns = Dns::new_with(cfg, services, current, data_dir);
        dns.serve(shutdown)?;
        Ok(dns)
    }

    fn serve(&self, shutdown: CancellationToken) -> Result<(), DnsError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| DnsError::NoRuntime)?;
        let cfg = &self.inner.listen;
        let bound = server::bind(&cfg.listen, cfg.udp_workers)?;
        *self.inner.local.lock().unwrap_or_else(|e| e.into_inner()) = bound.local.clone();
        let mut threads = Vec::new();
        for (_, socks) in bound.udp {
            threads.extend(server::spawn_udp(socks, self.inner.table.clone(), self.inner.rrl.clone(), self.inner.stop.clone()).map_err(DnsError::Threads)?);
        }
        self.inner.threads.lock().unwrap_or_else(|e| e.into_inner()).extend(threads);
        let opts = server::TcpOptions {
            idle_timeout: cfg.tcp_idle_timeout,
            write_timeout: cfg.tcp_write_timeout,
            max_connections: cfg.tcp_max_connections,
            max_per_client: cfg.tcp_max_connections_per_client,
        };
        for l in bound.tcp {
            rt.spawn(server::serve_tcp(l, self.inner.table.clone(), opts, self.inner.cancel.clone()));
        }
        // Either token stops everything.
        let me = self.clone();
        rt.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = me.inner.cancel.cancelled() => {}
            }
            me.signal_stop();
        });
        tracing::info!(addresses = ?bound.local, zones = cfg.zones.len(), "dns: serving");
        Ok(())
    }

    fn signal_stop(&self) {
        self.inner.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.inner.cancel.cancel();
    }

    /// Stop serving and wait for the UDP workers (at most about 200 ms).
    pub fn stop(&self) {
        self.signal_stop();
        let threads: Vec<_> = std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// The bound addresses (port 0 resolved), one per listen address.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.local.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The zones served now.
    pub fn config(&self) -> Arc<DnsConfig> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner()).cfg.clone()
    }

    /// Serve new zone data (SIGHUP). Failover records keep what they serve for services that
    /// still have them; new ones start with their primary. Zones whose data changed get a new
    /// serial. Returns the settings that only take effect at the next restart.
    pub fn reload(&self, cfg: DnsConfig, services: &[ServiceConfig]) -> Vec<String> {
        self.reload_from(cfg, services, &HashMap::new())
    }

    /// Like [`Dns::reload`], but a record added for a service in `current` serves that
    /// service's current decision at once instead of its primary.
    pub fn reload_from(&self, cfg: DnsConfig, services: &[ServiceConfig], current: &HashMap<String, Current>) -> Vec<String> {
        let mut later = Vec::new();
        let old_listen = &self.inner.listen;
        if cfg.listen != old_listen.listen {
            later.push(format!("dns.listen ({:?})", cfg.listen));
        }
        if cfg.udp_workers != old_listen.udp_workers
            || cfg.tcp_idle_timeout != old_listen.tcp_idle_timeout
            || cfg.tcp_max_connections != old_listen.tcp_max_connections
            || cfg.tcp_max_connections_per_client != old_listen.tcp_max_connections_per_client
            || cfg.tcp_write_timeout != old_listen.tcp_write_timeout
            || cfg.rrl != old_listen.rrl
        {
            later.push("dns.udp_workers / tcp_* / rrl".into());
        }
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = unix_secs();
        let serials: Vec<u32> = cfg
            .zones
            .iter()
            .map(|z| match st.cfg.zones.iter().position(|o| o.apex == z.apex) {
                Some(i) if st.cfg.zones[i] == *z => st.serials[i],
                Some(i) => next_serial(st.serials[i], now),
                // A zone new to this run may have been served before it: start above every
                // serial served so far.
                None => next_serial(st.high, now),
            })
            .collect();
        for &s in &serials {
            st.issue(s);
        }
        st.served = served_for(&cfg, services, std::mem::take(&mut st.served), current);
        // Suspicion is kept for the targets services still have (the core reports new ones).
        let targets: HashMap<&str, Vec<IpAddr>> = services.iter().map(|s| (s.name.as_str(), s.targets.iter().map(|t| t.address).collect())).collect();
        st.suspect.retain(|svc, set| {
            set.retain(|a| targets.get(svc.as_str()).is_some_and(|t| t.contains(a)));
            !set.is_empty()
        });
        // Services whose records changed only in data keep their epoch, addresses and suspicion.
        st.serials = serials;
        st.cfg = Arc::new(cfg);
        let table = st.compile();
        self.inner.table.store(Arc::new(table));
        later
    }

    /// What the UDP response rate limiter has done since start (`None` when it is off).
    pub fn rrl_stats(&self) -> Option<rrl::RrlStats> {
        self.inner.rrl.as_ref().map(|r| r.stats())
    }

    /// The table being served now.
    pub fn table(&self) -> Arc<Table> {
        self.inner.table.load_full()
    }

    /// Services that have failover records.
    pub fn services(&self) -> Vec<String> {
        let st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = st.served.keys().cloned().collect();
        v.sort();
        v
    }

    /// Serve `active` (or nothing) for `service`'s failover records, as of `epoch`.
    /// Idempotent; refuses an epoch older than one already applied.
    pub fn apply(&self, service: &str, epoch: u64, active: Option<IpAddr>) -> Result<Applied, DnsError> {
        let started = Instant::now();
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let cur = st.served.get_mut(service).ok_or_else(|| DnsError::UnknownService(service.to_string()))?;
        if let Some(applied) = cur.epoch
            && epoch < applied
        {
            return Err(DnsError::Stale { service: service.to_string(), epoch, applied });
        }
        let addrs: Vec<IpAddr> = active.into_iter().collect();
        cur.epoch = Some(epoch);
        if cur.addrs == addrs {
            return Ok(Applied { changed: false, addresses: addrs, serials: Vec::new(), swap_time: started.elapsed() });
        }
        cur.addrs = addrs.clone();
        cur.since_us = now_us();
        let now = unix_secs();
        let mut serials = Vec::new();
        let mut notify = Vec::new();
        let cfg = st.cfg.clone();
        for (i, z) in cfg.zones.iter().enumerate() {
            let uses = z.records.iter().any(|r| matches!(&r.kind, RecordKind::Failover { service: s, .. } if s == service));
            if uses {
                st.serials[i] = next_serial(st.serials[i], now);
                let s = st.serials[i];
                st.issue(s);
                serials.push(s);
                if !z.notify.is_empty() {
                    notify.push((i, s));
                }
            }
        }
        let mut table = st.compile();
        table.epoch = Some(epoch);
        self.inner.table.store(Arc::new(table));
        drop(st);
        // Secondaries hear of the new serial only after the table that serves it is in place.
        for (i, serial) in notify {
            let z = &cfg.zones[i];
            let key = z.transfer_key.as_ref().and_then(|k| cfg.keys.iter().find(|x| &x.name == k));
            notify::send(&z.apex, serial, &z.notify, key);
        }
        Ok(Applied { changed: true, addresses: addrs, serials, swap_time: started.elapsed() })
    }

    /// Mark `addr`, a target of `service`, as suspect or clear (see "Suspicion TTL" in the module
    /// doc). Returns `Some(suspect)` when this changed the TTL the service's failover records are
    /// answered with (a new table was swapped in), `None` when nothing answered changed: the
    /// address is not the one served, the state is unchanged, or the service has no records.
    pub fn set_suspect(&self, service: &str, addr: IpAddr, suspect: bool) -> Option<bool> {
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if !st.served.contains_key(service) {
            return None;
        }
        let before = st.suspect_services().contains(service);
        let set = st.suspect.entry(service.to_string()).or_default();
        let changed = if suspect { set.insert(addr) } else { set.remove(&addr) };
        if !changed || st.suspect_services().contains(service) == before {
            return None;
        }
        let shortens = st.cfg.zones.iter().flat_map(|z| &z.records).any(|r| matches!(&r.kind, RecordKind::Failover { service: s, suspect_ttl: Some(_) } if s == service));
        if !shortens {
            return None;
        }
        let table = st.compile();
        self.inner.table.store(Arc::new(table));
        Some(!before)
    }

    /// Whether `service`'s failover records serve a suspect address now.
    pub fn is_suspect(&self, service: &str) -> bool {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner()).suspect_services().contains(service)
    }

    /// What every failover record serves now (see [`status::RecordStatus`]).
    pub fn status(&self) -> Vec<RecordStatus> {
        status::collect(self)
    }

    /// An actuator for `service`, or `None` when no failover record names it.
    pub fn actuator(&self, service: &str) -> Option<DnsActuator> {
        let st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        st.served.contains_key(service).then(|| DnsActuator::new(self.clone(), service))
    }

    /// An address to query ourselves on: the first listen address, with a wildcard IP
    /// replaced by loopback.
    pub fn self_query_addr(&self) -> Option<SocketAddr> {
        let local = self.local_addrs();
        let mut a = *local.first()?;
        if a.ip().is_unspecified() {
            a.set_ip(if a.is_ipv4() { IpAddr::from([127, 0, 0, 1]) } else { IpAddr::from(std::net::Ipv6Addr::LOCALHOST) });
        }
        Some(a)
    }
}

/// What each service with failover records in `cfg` serves: carried over from `old` where the
/// service had records before, else its decision in `current`, else its first target (the
/// primary).
fn served_for(cfg: &DnsConfig, services: &[ServiceConfig], mut old: HashMap<String, Served>, current: &HashMap<String, Current>) -> HashMap<String, Served> {
    let mut served = HashMap::new();
    let since_us = now_us();
    for z in &cfg.zones {
        for r in &z.records {
            if let RecordKind::Failover { service, .. } = &r.kind {
                if served.contains_key(service) {
                    continue;
                }
                let s = old.remove(service).unwrap_or_else(|| {
                    if let Some(c) = current.get(service) {
                        return Served { addrs: c.active.into_iter().collect(), epoch: Some(c.epoch), since_us };
                    }
                    let addrs = services.iter().find(|s| &s.name == service).and_then(|s| s.targets.first()).map(|t| vec![t.address]).unwrap_or_default();
                    Served { addrs, epoch: None, since_us }
                });
                served.insert(service.clone(), s);
            }
        }
    }
    served
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_ttl(dns: &Dns) -> u32 {
        let st = dns.inner.state.lock().unwrap();
        let suspect = st.suspect_services().contains("www");
        st.cfg.zones[0].records[0].ttl_now(suspect)
    }

    #[test]
    fn the_suspicion_ttl_follows_the_served_address_and_swaps_only_on_change() {
        let cfg = table::tests::sample();
        let (quick, _) = crate::config::from_str(include_str!("../../examples/quickstart.toml"), std::path::Path::new("q.toml")).unwrap();
        let dns = Dns::new(cfg, &quick.services);
        let (primary, backup): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let t0 = dns.table();
        assert_eq!(dns.set_suspect("www", backup, true), None, "the backup is not served: nothing changes");
        assert!(Arc::ptr_eq(&t0, &dns.table()), "no swap");
        assert_eq!(a_ttl(&dns), 5);
        assert_eq!(dns.set_suspect("www", primary, true), Some(true));
        assert_eq!(a_ttl(&dns), 1);
        let serial = dns.table().zones[0].serial;
        assert_eq!(serial, t0.zones[0].serial, "a TTL-only change keeps the serial");
        let t1 = dns.table();
        assert_eq!(dns.set_suspect("www", primary, true), None, "already suspect: no swap");
        assert!(Arc::ptr_eq(&t1, &dns.table()));
        // The switch to the backup (suspect as well) keeps the short TTL; once it is clear, the
        // normal TTL returns. A switch to a clear target brings the normal TTL in the same table.
        dns.apply("www", 1, Some(backup)).unwrap();
        assert_eq!(a_ttl(&dns), 1);
        assert_eq!(dns.set_suspect("www", backup, false), Some(false));
        assert_eq!(a_ttl(&dns), 5);
        dns.apply("www", 2, Some(primary)).unwrap();
        assert_eq!(a_ttl(&dns), 1, "the primary is still suspect");
        dns.apply("www", 3, Some(backup)).unwrap();
        assert_eq!(a_ttl(&dns), 5);
        assert_eq!(dns.set_suspect("nope", primary, true), None);
        assert!(!dns.is_suspect("www"));
    }

    #[test]
    fn serials_always_increase() {
        assert_eq!(next_serial(100, 200), 200);
        assert_eq!(next_serial(200, 200), 201);
        assert_eq!(next_serial(205, 200), 206);
        assert_eq!(next_serial(u32::MAX, 5), 5);
        assert_eq!(next_serial(u32::MAX, u32::MAX), 0);
    }
}
