//! The built-in TCP proxy (`[[proxy]]`): forwards every connection to the active target.
//!
//! The kind ([`ProxyKind`]) owns the listeners for the daemon's life; each service's
//! [`ProxyActuator`] only swaps the service's [`Route`] (epoch, active target, the ordered
//! target list) with one store on a `watch` channel. New connections read the route once, so a
//! switch moves them at once; open connections hear the swap and, when their target is no
//! longer the active one, are cut (`on_switch = "close"`) or left to finish for up to
//! `drain_timeout` (`"drain"`).
//!
//! **Redispatch.** The decision only names the active target, so each connection tries, in
//! order: the active target, then the service's other targets in priority order, those the
//! checks say are up before those that are down, and any target that failed a connection in
//! the last [`PASSIVE_HOLD`] after the rest. A target that refuses the connection, does not
//! accept it within `connect_timeout`, or closes or resets it before sending a single byte back
//! is a passive failure: the connection is retried on the next target at once, replaying what
//! the client sent so far (up to [`REPLAY_CAP`]; past that, or once the client has closed its
//! side, a close without answer is passed on rather than retried). So a crashed primary costs
//! no failed request, and each client waits at most one refused connect. The passive failure
//! moves traffic for this proxy only; it is not yet health input for the decision engine.
//!
//! **Data path.** After the first answer byte, both directions are copied with `splice(2)`
//! through a pipe (no copy into user space) where the kernel allows, else through a buffer.
//! Optionally each target connection starts with a PROXY protocol v2 header.
//!
//! This module decides nothing (the route comes from the decision) and writes no events; it
//! counts connections, bytes, retries and errors in [`super::METRICS`].

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::{OnSwitch, ProxyConfig};
use crate::actuator::registry::{Kind, StartCtx, StartError};
use crate::actuator::{ActFuture, Actuator, Current, Desired, Outcome};
use crate::config::{Config, ServiceConfig};
use crate::health::Health;
use crate::metrics::ServiceLabels;

/// How long a target that failed a connection (refused, timed out, reset before answering) is
/// tried after the others.
pub const PASSIVE_HOLD: Duration = Duration::from_secs(2);

/// What the client sent before the first answer byte that is kept to replay on the next target.
pub const REPLAY_CAP: usize = 64 * 1024;

const BUF: usize = 64 * 1024;

/// One target as the proxy sees it.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    /// The checks say it is down (from `Kind::health`).
    down: AtomicBool,
    /// Milliseconds since the proxy started until which it is tried last (a passive failure).
    held_until_ms: AtomicU64,
}

/// What a service's proxy forwards to: swapped whole by each decision.
#[derive(Debug)]
pub struct Route {
    pub epoch: u64,
    /// Index into `upstreams`; `None`: forward nothing (the decision was to serve nothing).
    pub active: Option<usize>,
    /// The service's targets in priority order.
    pub upstreams: Arc<[Arc<Upstream>]>,
}

impl Route {
    pub fn active_name(&self) -> Option<&str> {
        self.active.map(|i| self.upstreams[i].name.as_str())
    }
}

/// The order a new connection tries targets in: the active one, then the others (up before
/// down, in priority order), targets held after a passive failure last of all.
pub fn order(route: &Route, now_ms: u64) -> Vec<Arc<Upstream>> {
    let Some(active) = route.active else { return Vec::new() };
    let mut rest: Vec<(u8, usize)> = Vec::new();
    for (i, u) in route.upstreams.iter().enumerate() {
        let held = u.held_until_ms.load(Ordering::Relaxed) > now_ms;
        let down = u.down.load(Ordering::Relaxed);
        let rank = if i == active { 0 } else { 1 } + if down { 1 } else { 0 } + if held { 4 } else { 0 };
        rest.push((rank, i));
    }
    rest.sort();
    rest.into_iter().map(|(_, i)| route.upstreams[i].clone()).collect()
}

/// The PROXY protocol v2 header for a connection from `src` to `dst` (a TCP `PROXY` command;
/// IPv4 when both ends are IPv4, else both as IPv6).
pub fn proxy_v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11); // TCP over IPv4
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
            h.extend_from_slice(&s.port().to_be_bytes());
            h.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
                SocketAddr::V6(a) => *a.ip(),
            };
            h.push(0x21); // TCP over IPv6
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(src).octets());
            h.extend_from_slice(&v6(dst).octets());
            h.extend_from_slice(&src.port().to_be_bytes());
            h.extend_from_slice(&dst.port().to_be_bytes());
        }
    }
    h
}

/// Counters of one service's proxy, resolved once.
struct Stats {
    connections: Counter,
    open: Gauge,
    to_target: Counter,
    to_client: Counter,
    retries: Counter,
    err_connect: Counter,
    err_reset: Counter,
    err_no_target: Counter,
    err_exhausted: Counter,
    err_cut: Counter,
    err_io: Counter,
}

impl Stats {
    fn new(service: &str) -> Stats {
        let m = &*super::METRICS;
        let s = ServiceLabels { service: service.into() };
        let dir = |d: &str| m.bytes.get_or_create(&super::DirectionLabels { service: service.into(), direction: d.into() }).clone();
        Stats {
            connections: m.connections.get_or_create(&s).clone(),
            open: m.open.get_or_create(&s).clone(),
            to_target: dir("to_target"),
            to_client: dir("to_client"),
            retries: m.retries.get_or_create(&s).clone(),
            err_connect: m.error(service, "connect"),
            err_reset: m.error(service, "reset"),
            err_no_target: m.error(service, "no_target"),
            err_exhausted: m.error(service, "exhausted"),
            err_cut: m.error(service, "cut"),
            err_io: m.error(service, "io"),
        }
    }
}

/// Settings that a reload may change for connections accepted afterwards.
#[derive(Debug, Clone)]
struct Settings {
    on_switch: OnSwitch,
    drain_timeout: Duration,
    connect_timeout: Duration,
    proxy_protocol: bool,
}

/// One service's proxy: its route, settings and listeners.
pub struct Proxy {
    service: String,
    cfg: Mutex<ProxyConfig>,
    settings: Mutex<Settings>,
    route: watch::Sender<Arc<Route>>,
    stats: Stats,
    started: Instant,
    /// The addresses actually bound (a configured port 0 gets one).
    pub bound: Vec<SocketAddr>,
    listening: Arc<AtomicU64>,
}

fn upstreams(cfg: &ProxyConfig, service: &ServiceConfig, old: Option<&Route>) -> Arc<[Arc<Upstream>]> {
    service
        .targets
        .iter()
        .map(|t| {
            let addr = SocketAddr::new(t.address, cfg.port);
            let prev = old.and_then(|r| r.upstreams.iter().find(|u| u.name == t.name && u.addr == addr));
            Arc::new(Upstream {
                name: t.name.clone(),
                addr,
                down: AtomicBool::new(prev.is_some_and(|u| u.down.load(Ordering::Relaxed))),
                held_until_ms: AtomicU64::new(prev.map(|u| u.held_until_ms.load(Ordering::Relaxed)).unwrap_or(0)),
            })
        })
        .collect()
}

fn settings(cfg: &ProxyConfig) -> Settings {
    Settings { on_switch: cfg.on_switch, drain_timeout: cfg.drain_timeout, connect_timeout: cfg.connect_timeout, proxy_protocol: cfg.proxy_protocol }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

impl Proxy {
    /// Bind every listen address and start accepting. The first route is `current` (the
    /// restored decision) or, for a service never decided, its primary.
    /// The listeners and every connection live on `rt` (the kind's own runtime).
    pub fn start(cfg: &ProxyConfig, service: &ServiceConfig, current: Option<&Current>, cancel: &CancellationToken, rt: &tokio::runtime::Handle) -> Result<Arc<Proxy>, StartError> {
        let _in = rt.enter();
        let ups = upstreams(cfg, service, None);
        let (epoch, active) = match current {
            Some(c) => (c.epoch, c.active.and_then(|a| ups.iter().position(|u| u.addr.ip() == a))),
            None => (0, (!ups.is_empty()).then_some(0)),
        };
        let (route, _) = watch::channel(Arc::new(Route { epoch, active, upstreams: ups }));
        let mut listeners = Vec::new();
        for a in &cfg.listen {
            listeners.push(bind(*a).map_err(|e| format!("proxy for service \"{}\": cannot listen on {a}: {e}", service.name))?);
        }
        let bound = listeners.iter().map(|l| l.local_addr()).collect::<io::Result<Vec<_>>>()?;
        let proxy = Arc::new(Proxy {
            service: service.name.clone(),
            cfg: Mutex::new(cfg.clone()),
            settings: Mutex::new(settings(cfg)),
            route,
            stats: Stats::new(&service.name),
            started: Instant::now(),
            bound,
            listening: Arc::new(AtomicU64::new(0)),
        });
        let limit = Arc::new(Semaphore::new(cfg.max_connections as usize));
        let tracker = TaskTracker::new();
        for l in listeners {
            let (p, limit, cancel, tracker) = (proxy.clone(), limit.clone(), cancel.clone(), tracker.clone());
            proxy.listening.fetch_add(1, Ordering::Relaxed);
            rt.spawn(async move {
                p.accept_loop(l, limit, &cancel, &tracker).await;
                p.listening.fetch_sub(1, Ordering::Relaxed);
            });
        }
        Ok(proxy)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The route new connections use now.
    pub fn route(&self) -> Arc<Route> {
        self.route.borrow().clone()
    }

    async fn accept_loop(self: &Arc<Self>, listener: TcpListener, limit: Arc<Semaphore>, cancel: &CancellationToken, tracker: &TaskTracker) {
        loop {
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = cancel.cancelled() => return,
            };
            let (client, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off a little instead of spinning.
                        tracing::warn!(service = %self.service, "proxy accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                _ = cancel.cancelled() => return,
            };
            let p = self.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move {
                p.stats.connections.inc();
                p.stats.open.inc();
                tokio::select! {
                    _ = p.serve(client, peer) => {}
                    _ = cancel.cancelled() => {}
                }
                p.stats.open.dec();
                drop(permit);
            });
        }
    }

    /// One client connection, start to end.
    async fn serve(&self, client: TcpStream, peer: SocketAddr) {
        let _ = client.set_nodelay(true);
        let local = client.local_addr().unwrap_or(peer);
        let mut routes = self.route.subscribe();
        let route = routes.borrow_and_update().clone();
        let settings = self.settings.lock().expect("settings lock").clone();
        let order = order(&route, self.now_ms());
        if order.is_empty() {
            self.stats.err_no_target.inc();
            return;
        }
        let Some((upstream, target)) = self.connect(&client, peer, local, &order, &settings).await else { return };
        self.forward(&client, &upstream, &target.name, &mut routes, &settings).await;
    }

    fn hold(&self, u: &Upstream) {
        u.held_until_ms.store(self.now_ms() + PASSIVE_HOLD.as_millis() as u64, Ordering::Relaxed);
    }

    /// Phase one: find a target that answers. Tries `order` in turn, replaying what the client
    /// sent so far; returns once a target has sent its first byte (already passed on to the
    /// client), or `None` when the connection is over.
    async fn connect(&self, client: &TcpStream, peer: SocketAddr, local: SocketAddr, order: &[Arc<Upstream>], s: &Settings) -> Option<(TcpStream, Arc<Upstream>)> {
        let mut replay: Vec<u8> = Vec::new();
        let mut replayable = true;
        let mut client_done = false;
        let mut cbuf = vec![0u8; 16 * 1024];
        let mut ubuf = vec![0u8; 16 * 1024];
        for (i, u) in order.iter().enumerate() {
            if i > 0 {
                if !replayable {
                    break;
                }
                self.stats.retries.inc();
            }
            let mut up = match tokio::time::timeout(s.connect_timeout, TcpStream::connect(u.addr)).await {
                Ok(Ok(up)) => up,
                Ok(Err(e)) => {
                    tracing::debug!(service = %self.service, target = %u.name, "proxy: connect to {} failed: {e}", u.addr);
                    self.stats.err_connect.inc();
                    self.hold(u);
                    continue;
                }
                Err(_) => {
                    tracing::debug!(service = %self.service, target = %u.name, "proxy: connect to {} timed out", u.addr);
                    self.stats.err_connect.inc();
                    self.hold(u);
                    continue;
                }
            };
            let _ = up.set_nodelay(true);
            let mut head = if s.proxy_protocol { proxy_v2_header(peer, local) } else { Vec::new() };
            head.extend_from_slice(&replay);
            if (!head.is_empty() && up.write_all(&head).await.is_err()) || (client_done && up.shutdown().await.is_err()) {
                self.stats.err_reset.inc();
                self.hold(u);
                continue;
            }
            // Until the target's first byte: pass the client's bytes on (keeping a copy).
            let failed = loop {
                tokio::select! {
                    r = client.readable(), if !client_done => {
                        if r.is_err() { return None; }
                        match client.try_read(&mut cbuf) {
                            Ok(0) => {
                                client_done = true;
                                if up.shutdown().await.is_err() { break true; }
                            }
                            Ok(n) => {
                                if replay.len() + n > REPLAY_CAP { replayable = false; replay.clear(); } else if replayable { replay.extend_from_slice(&cbuf[..n]); }
                                self.stats.to_target.inc_by(n as u64);
                                if up.write_all(&cbuf[..n]).await.is_err() { break true; }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(_) => return None,
                        }
                    }
                    r = up.read(&mut ubuf) => match r {
                        Ok(0) if client_done => {
                            // The client said all it had to say and the target closed without a word:
                            // that is an answer for some protocols, so pass it on.
                            let _ = client.shutdown_write();
                            return None;
                        }
                        Ok(0) | Err(_) => break true,
                        Ok(n) => {
                            self.stats.to_client.inc_by(n as u64);
                            if write_all(client, &ubuf[..n]).await.is_err() {
                                self.stats.err_io.inc();
                                return None;
                            }
                            break false;
                        }
                    },
                }
            };
            if failed {
                tracing::debug!(service = %self.service, target = %u.name, "proxy: {} closed or reset the connection before answering", u.addr);
                self.stats.err_reset.inc();
                self.hold(u);
                continue;
            }
            return Some((up, u.clone()));
        }
        self.stats.err_exhausted.inc();
        None
    }

    /// Phase two: copy both ways until both sides are done, or until a switch cuts it.
    async fn forward(&self, client: &TcpStream, up: &TcpStream, target: &str, routes: &mut watch::Receiver<Arc<Route>>, s: &Settings) {
        let copy = async {
            let (a, b) = tokio::join!(pump(client, up, &self.stats.to_target), pump(up, client, &self.stats.to_client));
            if a.is_err() || b.is_err() {
                self.stats.err_io.inc();
            }
        };
        let cut = async {
            loop {
                // Wait until this connection's target is no longer the active one.
                loop {
                    if routes.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    if routes.borrow_and_update().active_name() != Some(target) {
                        break;
                    }
                }
                if s.on_switch == OnSwitch::Close {
                    return;
                }
                let deadline = tokio::time::sleep(s.drain_timeout);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => return,
                        r = routes.changed() => {
                            if r.is_err() { std::future::pending::<()>().await; }
                        }
                    }
                    if routes.borrow_and_update().active_name() == Some(target) {
                        break; // active again: no longer draining
                    }
                }
            }
        };
        tokio::select! {
            _ = copy => {}
            _ = cut => {
                self.stats.err_cut.inc();
            }
        }
    }
}

/// Shut down the write side of a stream we only hold by reference.
trait ShutdownWrite {
    fn shutdown_write(self) -> io::Result<()>;
}

impl ShutdownWrite for &TcpStream {
    fn shutdown_write(self) -> io::Result<()> {
        socket2::SockRef::from(self).shutdown(std::net::Shutdown::Write)
    }
}

async fn write_all(to: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        to.writable().await?;
        match to.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copy `from` to `to` until `from` ends, then shut down `to`'s write side. Zero-copy through
/// a pipe with `splice(2)`; through a buffer when the kernel refuses that.
async fn pump(from: &TcpStream, to: &TcpStream, bytes: &Counter) -> io::Result<()> {
    let r = match Pipe::new() {
        Ok(pipe) => match splice_copy(&pipe, from, to, bytes).await {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => buffer_copy(from, to, bytes).await,
            r => r,
        },
        Err(_) => buffer_copy(from, to, bytes).await,
    };
    let _ = to.shutdown_write();
    r
}

async fn buffer_copy(from: &TcpStream, to: &TcpStream, bytes: &Counter) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        from.readable().await?;
        let n = match from.try_read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        write_all(to, &buf[..n]).await?;
        bytes.inc_by(n as u64);
    }
}

/// A non-blocking pipe for `splice(2)`, closed on drop.
struct Pipe {
    r: std::os::fd::OwnedFd,
    w: std::os::fd::OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        use std::os::fd::FromRawFd;
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`, which we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        Ok(unsafe { Pipe { r: std::os::fd::OwnedFd::from_raw_fd(fds[0]), w: std::os::fd::OwnedFd::from_raw_fd(fds[1]) } })
    }
}

fn splice(from: i32, to: i32, len: usize) -> io::Result<usize> {
    // SAFETY: plain descriptors we own for the duration of the call; null offsets (streams).
    let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

async fn splice_copy(pipe: &Pipe, from: &TcpStream, to: &TcpStream, bytes: &Counter) -> io::Result<()> {
    let (pr, pw) = (pipe.r.as_raw_fd(), pipe.w.as_raw_fd());
    let (src, dst) = (from.as_raw_fd(), to.as_raw_fd());
    loop {
        // The pipe is empty here, so EAGAIN can only mean the socket has nothing to read.
        let mut n = from.async_io(Interest::READABLE, || splice(src, pw, BUF)).await?;
        if n == 0 {
            return Ok(());
        }
        bytes.inc_by(n as u64);
        while n > 0 {
            n -= to.async_io(Interest::WRITABLE, || splice(pr, dst, n)).await?;
        }
    }
}

/// One service's actuator: swaps its proxy's route.
pub struct ProxyActuator {
    proxy: Arc<Proxy>,
}

impl Actuator for ProxyActuator {
    fn name(&self) -> &str {
        "proxy"
    }

    fn on_every_node(&self) -> bool {
        true
    }

    fn apply<'a>(&'a self, desired: &'a Desired) -> ActFuture<'a> {
        Box::pin(async move {
            let p = &self.proxy;
            let old = p.route();
            if desired.epoch < old.epoch {
                return Outcome::ok(format!("already forwarding for epoch {} (newer than {})", old.epoch, desired.epoch));
            }
            let active = match &desired.active {
                None => None,
                Some(t) => match old.upstreams.iter().position(|u| u.name == t.name) {
                    Some(i) => Some(i),
                    None => return Outcome::fatal(format!("target \"{}\" is not among the proxy's targets", t.name)),
                },
            };
            let listen: Vec<String> = p.bound.iter().map(|a| a.to_string()).collect();
            let what = match active {
                Some(i) => format!("{} ({})", old.upstreams[i].name, old.upstreams[i].addr),
                None => "nothing (connections are closed)".into(),
            };
            if old.active == active {
                p.route.send_replace(Arc::new(Route { epoch: desired.epoch, active, upstreams: old.upstreams.clone() }));
                return Outcome::ok(format!("already forwarding {} to {what}", listen.join(", ")));
            }
            let swapped = Instant::now();
            p.route.send_replace(Arc::new(Route { epoch: desired.epoch, active, upstreams: old.upstreams.clone() }));
            let s = p.settings.lock().expect("settings lock").clone();
            let then = match s.on_switch {
                OnSwitch::Close => "open connections to other targets are cut".to_string(),
                OnSwitch::Drain => format!("open connections to other targets drain (at most {})", humantime::format_duration(s.drain_timeout)),
            };
            Outcome::ok(format!(
                "forwarding {} to {what} from epoch {}, {} us after the decision; {then}",
                listen.join(", "),
                desired.epoch,
                swapped.saturating_duration_since(desired.decided_at).as_micros()
            ))
        })
    }

    fn verify<'a>(&'a self, desired: &'a Desired) -> Option<ActFuture<'a>> {
        Some(Box::pin(async move {
            let p = &self.proxy;
            let r = p.route();
            let want = desired.active.as_ref().map(|t| t.name.as_str());
            if r.active_name() != want && r.epoch <= desired.epoch {
                return Outcome::failed(format!("the proxy forwards to {:?}, not {want:?}", r.active_name()));
            }
            let listening = p.listening.load(Ordering::Relaxed);
            if listening as usize != p.bound.len() {
                return Outcome::failed(format!("only {listening} of {} proxy listeners are accepting", p.bound.len()));
            }
            // From the outside: each listener takes a connection.
            for a in &p.bound {
                let mut to = *a;
                if to.ip().is_unspecified() {
                    to.set_ip(if to.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
                }
                if let Err(e) = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(to)).await.map_err(|_| io::Error::from(io::ErrorKind::TimedOut)).and_then(|r| r) {
                    return Outcome::failed(format!("the proxy listener {a} does not accept connections: {e}"));
                }
            }
            Outcome::ok(format!("forwarding to {}", want.unwrap_or("nothing")))
        }))
    }
}

/// The built-in proxy as an actuator kind: one [`Proxy`] per `[[proxy]]`, started with the
/// daemon, listening until it stops. Listeners and connections run on the kind's own runtime
/// (one worker per core the process may use, at most 4), so nothing the rest of the daemon does
/// on its runtime (a worker blocked waiting for the disk) stalls forwarded traffic.
pub struct ProxyKind {
    proxies: HashMap<String, Arc<Proxy>>,
    cancel: CancellationToken,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl Drop for ProxyKind {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(rt) = self.runtime.get_mut().ok().and_then(Option::take) {
            rt.shutdown_background();
        }
    }
}

/// [`crate::actuator::registry::KINDS`]' entry for `[[proxy]]`.
pub fn start_kind(ctx: &StartCtx) -> Result<Box<dyn Kind>, StartError> {
    let cancel = ctx.cancel.child_token();
    let workers = std::thread::available_parallelism().map(|n| n.get().min(4)).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).thread_name("understudy-proxy").enable_all().build()?;
    let mut kind = ProxyKind { proxies: HashMap::new(), cancel: cancel.clone(), runtime: Mutex::new(None) };
    for p in &ctx.config.lb.proxy {
        let Some(svc) = ctx.config.services.iter().find(|s| s.name == p.service) else {
            rt.shutdown_background();
            return Err(format!("[[proxy]] names unknown service \"{}\"", p.service).into());
        };
        match Proxy::start(p, svc, ctx.current.get(&p.service), &cancel, rt.handle()) {
            Ok(proxy) => {
                tracing::info!(service = %p.service, "proxy listening on {:?}", proxy.bound);
                kind.proxies.insert(p.service.clone(), proxy);
            }
            Err(e) => {
                cancel.cancel();
                rt.shutdown_background();
                return Err(e);
            }
        }
    }
    kind.runtime = Mutex::new(Some(rt));
    Ok(Box::new(kind))
}

impl ProxyKind {
    /// The proxy of `service`, for status and tests.
    pub fn proxy(&self, service: &str) -> Option<&Arc<Proxy>> {
        self.proxies.get(service)
    }
}

impl Kind for ProxyKind {
    fn name(&self) -> &'static str {
        "proxy"
    }

    fn actuators(&self, service: &ServiceConfig) -> Vec<Arc<dyn Actuator>> {
        self.proxies.get(&service.name).map(|p| Arc::new(ProxyActuator { proxy: p.clone() }) as Arc<dyn Actuator>).into_iter().collect()
    }

    fn reload(&self, config: &Config, _current: &HashMap<String, Current>) -> Vec<String> {
        let mut later = Vec::new();
        for (name, p) in &self.proxies {
            let (Some(new), Some(svc)) = (config.lb.proxy.iter().find(|c| &c.service == name), config.services.iter().find(|s| &s.name == name)) else {
                later.push(format!("[[proxy]] for service \"{name}\" (removed)"));
                continue;
            };
            let mut cfg = p.cfg.lock().expect("config lock");
            if new.listen != cfg.listen || new.max_connections != cfg.max_connections {
                later.push(format!("[[proxy]] listen / max_connections of service \"{name}\""));
            }
            *p.settings.lock().expect("settings lock") = settings(new);
            // New target list (addresses, port, order): the active target is kept by name.
            let old = p.route();
            let ups = upstreams(new, svc, Some(&old));
            let active = old.active_name().and_then(|n| ups.iter().position(|u| u.name == n));
            p.route.send_replace(Arc::new(Route { epoch: old.epoch, active, upstreams: ups }));
            *cfg = new.clone();
        }
        for c in &config.lb.proxy {
            if !self.proxies.contains_key(&c.service) {
                later.push(format!("[[proxy]] for service \"{}\" (added)", c.service));
            }
        }
        later
    }

    fn health(&self, service: &str, target: &str, health: Health) {
        if let Some(p) = self.proxies.get(service) {
            for u in p.route().upstreams.iter().filter(|u| u.name == target) {
                u.down.store(health == Health::Down, Ordering::Relaxed);
            }
        }
    }

    fn shutdown(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.cancel.cancel();
            if let Some(rt) = self.runtime.lock().ok().and_then(|mut r| r.take()) {
                rt.shutdown_background();
            }
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(active: Option<usize>, n: usize) -> Route {
        let upstreams = (0..n)
            .map(|i| Arc::new(Upstream { name: format!("t{i}"), addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)), down: AtomicBool::new(false), held_until_ms: AtomicU64::new(0) }))
            .collect();
        Route { epoch: 1, active, upstreams }
    }

    fn names(v: &[Arc<Upstream>]) -> Vec<&str> {
        v.iter().map(|u| u.name.as_str()).collect()
    }

    #[test]
    fn redispatch_order_is_active_then_up_then_down_then_held() {
        let r = route(Some(1), 4);
        assert_eq!(names(&order(&r, 0)), ["t1", "t0", "t2", "t3"]);
        r.upstreams[0].down.store(true, Ordering::Relaxed);
        assert_eq!(names(&order(&r, 0)), ["t1", "t2", "t3", "t0"]);
        r.upstreams[1].held_until_ms.store(500, Ordering::Relaxed);
        assert_eq!(names(&order(&r, 499)), ["t2", "t3", "t0", "t1"], "a target that just failed is tried last");
        assert_eq!(names(&order(&r, 500)), ["t1", "t2", "t3", "t0"], "after the hold it is first again");
        assert!(order(&route(None, 3), 0).is_empty(), "serving nothing");
    }

    /// A target that accepts, reads what comes, and closes without answering: with a reset
    /// (`linger 0`) or a plain close.
    async fn silent_target(reset: bool) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await;
                if reset {
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                }
                drop(s);
            }
        });
        addr
    }

    /// A target that answers `name:` and what it read.
    async fn echo_target(name: &'static str) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = s.write_all(format!("{name}:").as_bytes()).await;
                let _ = s.write_all(&buf[..n]).await;
            }
        });
        addr
    }

    async fn proxy_to(targets: Vec<(&str, SocketAddr)>, service: &str) -> (Arc<Proxy>, CancellationToken) {
        let text = format!(
            "[[service]]\nname = \"{service}\"\n[service.check]\nkind = \"tcp\"\nport = 1\n[[service.target]]\nname = \"a\"\naddress = \"127.0.0.1\"\n\
             [[proxy]]\nservice = \"{service}\"\nlisten = [\"127.0.0.1:0\"]\nconnect_timeout = \"500ms\"\n"
        );
        let (cfg, _) = crate::config::from_str(&text, std::path::Path::new("t.toml")).unwrap();
        let cancel = CancellationToken::new();
        let p = Proxy::start(&cfg.lb.proxy[0], &cfg.services[0], None, &cancel, &tokio::runtime::Handle::current()).unwrap();
        let upstreams: Arc<[Arc<Upstream>]> = targets
            .into_iter()
            .map(|(n, addr)| Arc::new(Upstream { name: n.into(), addr, down: AtomicBool::new(false), held_until_ms: AtomicU64::new(0) }))
            .collect();
        p.route.send_replace(Arc::new(Route { epoch: 1, active: Some(0), upstreams }));
        (p, cancel)
    }

    async fn ask(p: &Proxy, what: &[u8]) -> Vec<u8> {
        let mut c = TcpStream::connect(p.bound[0]).await.unwrap();
        c.write_all(what).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await.expect("answered in time").unwrap();
        out
    }

    #[tokio::test]
    async fn a_refused_reset_or_silently_closed_connection_is_replayed_on_the_next_target() {
        let refused = closed();
        let (p, cancel) = proxy_to(vec![("refuses", refused.1), ("resets", silent_target(true).await), ("closes", silent_target(false).await), ("answers", echo_target("b").await)], "redispatch").await;
        assert_eq!(ask(&p, b"hello").await, b"b:hello", "the client's bytes were replayed to the target that answered");
        let retries = p.stats.retries.get();
        assert_eq!(retries, 3, "refused, reset and closed: three retries");
        // The three failed targets are held: the next connection goes straight to the one that answers.
        assert_eq!(ask(&p, b"again").await, b"b:again");
        assert_eq!(p.stats.retries.get(), retries);
        cancel.cancel();
    }

    #[tokio::test]
    async fn when_every_target_fails_the_client_is_closed_and_it_is_counted() {
        let refused = closed();
        let (p, cancel) = proxy_to(vec![("refuses", refused.1), ("resets", silent_target(true).await)], "exhausted").await;
        assert_eq!(ask(&p, b"hello").await, b"");
        assert_eq!(p.stats.err_exhausted.get(), 1);
        cancel.cancel();
    }

    /// A port nobody listens on (bound, not listening) for as long as the socket lives.
    fn closed() -> (socket2::Socket, SocketAddr) {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        let a = s.local_addr().unwrap().as_socket().unwrap();
        (s, a)
    }

    #[test]
    fn proxy_v2_header_bytes() {
        let h = proxy_v2_header("192.0.2.1:56324".parse().unwrap(), "198.51.100.2:443".parse().unwrap());
        let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb]);
        assert_eq!(h, want);
        let h = proxy_v2_header("[2001:db8::1]:1".parse().unwrap(), "192.0.2.9:2".parse().unwrap());
        assert_eq!((h[13], u16::from_be_bytes([h[14], h[15]]), h.len()), (0x21, 36, 16 + 36));
        assert_eq!(&h[32..48], &"::ffff:192.0.2.9".parse::<std::net::Ipv6Addr>().unwrap().octets(), "the IPv4 end mapped into IPv6");
    }
}
