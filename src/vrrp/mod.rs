//! Virtual IPs with VRRPv3 (RFC 5798): the `vip` actuator kind, one speaker task per `[[vip]]`.
//!
//! # Layout
//! - `packet.rs`: advertisements on the wire (encode, parse with every receive check, checksum
//!   with the pseudo-header). Pure.
//! - `machine.rs`: the RFC 5798 state machine (Initialize / Backup / Master, plus Fault while a
//!   tracked service is down). Pure: time is a parameter.
//! - `net.rs`: the raw socket (protocol 112, TTL 255), addresses through rtnetlink with a
//!   lifetime, gratuitous ARP / unsolicited NA. I/O only, no decisions.
//! - `accept.rs`: `accept_mode = false`, an nftables table of the instance's own that drops
//!   traffic to the virtual addresses on the link while the speaker runs.
//! - `config.rs`: the `[[vip]]` sections.
//! - this file: [`VipKind`], the actuator kind: it starts one task per instance that feeds the
//!   machine packets, timer ticks and tracked health, and carries out its actions.
//!
//! # How it fits the decision / epoch model
//! VRRP elects by itself, between the nodes that speak it: there is no central decision to
//! apply, so the kind hands out no per-service [`Actuator`](crate::actuator::Actuator)s and
//! does not take epochs. Its inputs from the core are health flips ([`Kind::health`]) of the
//! services named in `track`: while any target of a tracked service is down this node is in
//! Fault (it resigns with priority 0 if it was master, so the backup takes over in its short
//! skew time instead of 3 advertisement intervals). Its outputs are state transitions, which
//! it reports as [`Event::VipState`] through the sender in [`StartCtx::events`] (the core
//! records them in the durable log like any other event) and in metrics; the election itself
//! is the protocol's, and the fencing token between nodes is VRRP's priority order.
//!
//! # A speaker that dies without resigning
//! The addresses are added with a finite valid and preferred lifetime (`lifetime`, default
//! 2 x 4 x `advert_interval`, at least 10 s) that the running master refreshes every third of
//! it. If understudy is killed (kill -9, OOM), its adverts stop, the backup takes over after
//! Master_Down_Interval, and the kernel removes the VIP from the dead node by itself when the
//! lifetime runs out: never two nodes holding the VIP for longer than `lifetime`. At start-up
//! the speaker removes its addresses left by an earlier run before it competes.
//!
//! # Shutdown
//! On daemon stop (cancellation) or [`Kind::shutdown`], a master sends priority 0, keeps
//! answering on the VIP until it hears the new master (at most 200 ms), then removes its
//! addresses: the backup takes over in its skew time and clients, moved by its ARP, see no gap.

pub mod accept;
pub mod config;
pub mod machine;
pub mod net;
pub mod packet;

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::actuator::Actuator;
use crate::actuator::registry::{Kind, StartCtx, StartError};
use crate::config::ServiceConfig;
use crate::events::Event;
use crate::health::Health;
use config::VipConfig;
use machine::{Action, Machine, Params, State};

/// How long a master that stops cleanly keeps the VIP after resigning, waiting to hear the new
/// master (which takes over after its skew: at most 40 ms).
const HANDOVER_WAIT: Duration = Duration::from_millis(200);
/// How long after hearing the new master the old one still answers.
const HANDOVER_SETTLE: Duration = Duration::from_millis(20);

/// Spacing of the gratuitous ARPs of one burst.
const GARP_SPACING: Duration = Duration::from_millis(100);

/// What status shows for one instance (and what the metrics count).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VipStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub state: State,
    /// The master this node hears (itself when master).
    pub master: Option<IpAddr>,
    pub addresses: Vec<String>,
    /// Wall microseconds of the last transition.
    pub since_us: u64,
    pub transitions: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Packets for another VRID on the same link (ignored, RFC 5798 7.1).
    pub other_vrid: u64,
    /// Dropped packets by reason (`ttl`, `checksum`, `short`, `version`...).
    pub dropped: BTreeMap<String, u64>,
    pub last_error: Option<String>,
}

enum Cmd {
    Track(bool),
    Shutdown,
}

struct Instance {
    cfg: VipConfig,
    tx: mpsc::UnboundedSender<Cmd>,
    status: Arc<Mutex<VipStatus>>,
    /// Tracked targets (service, target) that are down now.
    down: Mutex<HashSet<(String, String)>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The `vip` kind: every `[[vip]]` of this node.
pub struct VipKind {
    instances: Vec<Instance>,
}

/// [`crate::actuator::registry::KINDS`]' entry for `[[vip]]`.
pub fn start_kind(ctx: &StartCtx) -> Result<Box<dyn Kind>, StartError> {
    let mut instances = Vec::new();
    let node = crate::notify::hostname();
    for cfg in &ctx.config.vip {
        let link = net::Link::lookup(&cfg.interface, cfg.is_v6()).map_err(|e| format!("vip {}: interface {}: {e}", cfg.name, cfg.interface))?;
        let sock = net::VrrpSocket::open(&link, &cfg.unicast_peers).map_err(|e| format!("vip {}: VRRP socket on {}: {e} (needs CAP_NET_RAW)", cfg.name, cfg.interface))?;
        let announcer = net::Announcer::open(&link, cfg.is_v6()).map_err(|e| format!("vip {}: ARP / neighbour socket on {}: {e} (needs CAP_NET_RAW)", cfg.name, cfg.interface))?;
        // Addresses an earlier run left behind (it was killed) go before this one competes.
        for a in &cfg.addresses {
            net::del_address(link.index, *a).map_err(|e| format!("vip {}: removing a leftover {a} from {}: {e} (needs CAP_NET_ADMIN)", cfg.name, cfg.interface))?;
        }
        // accept_mode = false (and not the owner): the table that drops traffic to the VIP on
        // this link lives as long as the speaker. Otherwise a table an earlier run left goes.
        let no_accept = if !cfg.accept_mode && cfg.priority != 255 {
            Some(accept::NoAccept::install(link.index, cfg.vrid, &cfg.addresses).map_err(|e| format!("vip {}: accept_mode = false: {e} (needs CAP_NET_ADMIN)", cfg.name))?)
        } else {
            match accept::NoAccept::remove_leftover(link.index, cfg.vrid, cfg.is_v6()) {
                Ok(()) => {}
                // Without nft there is no table of ours to remove.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(vip = %cfg.name, "removing an accept_mode = false table an earlier run may have left: {e}"),
            }
            None
        };
        let status = Arc::new(Mutex::new(VipStatus {
            name: cfg.name.clone(),
            interface: cfg.interface.clone(),
            vrid: cfg.vrid,
            priority: cfg.priority,
            state: State::Initialize,
            master: None,
            addresses: cfg.addresses.iter().map(|a| a.to_string()).collect(),
            since_us: crate::probe::now_us(),
            transitions: 0,
            adverts_sent: 0,
            adverts_received: 0,
            other_vrid: 0,
            dropped: BTreeMap::new(),
            last_error: None,
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        let speaker = Speaker {
            cfg: cfg.clone(),
            machine: Machine::new(
                Params { priority: cfg.priority, interval: cfg.advert_interval, preempt: cfg.preempt, preempt_delay: cfg.preempt_delay, local: link.local },
                Instant::now(),
            ),
            link,
            sock,
            announcer,
            status: status.clone(),
            events: ctx.events.clone(),
            node: node.clone(),
            no_accept,
            refreshed: None,
            garp_left: 0,
            garp_next: None,
            garp_refresh_next: None,
        };
        let task = tokio::spawn(speaker.run(rx, ctx.cancel.clone()));
        instances.push(Instance { cfg: cfg.clone(), tx, status, down: Mutex::new(HashSet::new()), task: Mutex::new(Some(task)) });
    }
    Ok(Box::new(VipKind { instances }))
}

impl VipKind {
    /// Every instance's status, in config order.
    pub fn status(&self) -> Vec<VipStatus> {
        self.instances.iter().map(|i| i.status.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect()
    }
}

impl Kind for VipKind {
    fn name(&self) -> &'static str {
        "vip"
    }

    fn actuators(&self, _service: &ServiceConfig) -> Vec<Arc<dyn Actuator>> {
        Vec::new()
    }

    fn reload(&self, config: &crate::config::Config, _current: &std::collections::HashMap<String, crate::actuator::Current>) -> Vec<String> {
        let old: Vec<&VipConfig> = self.instances.iter().map(|i| &i.cfg).collect();
        let new: Vec<&VipConfig> = config.vip.iter().collect();
        if old != new { vec!["[[vip]]".to_string()] } else { Vec::new() }
    }

    fn health(&self, service: &str, target: &str, health: Health) {
        for inst in &self.instances {
            if !inst.cfg.track.iter().any(|t| t == service) {
                continue;
            }
            let mut down = inst.down.lock().unwrap_or_else(|e| e.into_inner());
            let was_down = !down.is_empty();
            let key = (service.to_string(), target.to_string());
            if health == Health::Down {
                down.insert(key);
            } else {
                down.remove(&key);
            }
            let is_down = !down.is_empty();
            if was_down != is_down {
                let _ = inst.tx.send(Cmd::Track(is_down));
            }
        }
    }

    fn shutdown(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            for inst in &self.instances {
                let _ = inst.tx.send(Cmd::Shutdown);
                let task = inst.task.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(t) = task {
                    let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
                }
            }
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// One instance's task.
struct Speaker {
    cfg: VipConfig,
    machine: Machine,
    link: net::Link,
    sock: net::VrrpSocket,
    announcer: net::Announcer,
    status: Arc<Mutex<VipStatus>>,
    events: Option<mpsc::UnboundedSender<Event>>,
    /// This host's name, for the events (and so the notifications).
    node: String,
    /// The filter of `accept_mode = false`, removed when the speaker stops.
    no_accept: Option<accept::NoAccept>,
    /// When the addresses' lifetime was last refreshed (while master).
    refreshed: Option<Instant>,
    garp_left: u32,
    garp_next: Option<Instant>,
    garp_refresh_next: Option<Instant>,
}

fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(3600)
}

impl Speaker {
    fn status(&self) -> std::sync::MutexGuard<'_, VipStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>, cancel: CancellationToken) {
        let a = self.machine.startup(Instant::now());
        self.exec(a);
        loop {
            let deadline = self.machine.next_deadline().map(tokio::time::Instant::from_std).unwrap_or_else(far);
            let upkeep = self.upkeep_deadline().map(tokio::time::Instant::from_std).unwrap_or_else(far);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Track(down)) => {
                        let a = self.machine.track(Instant::now(), down);
                        self.exec(a);
                    }
                    Some(Cmd::Shutdown) | None => break,
                },
                r = self.sock.recv() => match r {
                    Ok(pkt) => self.received(pkt),
                    Err(e) => {
                        tracing::warn!(vip = %self.cfg.name, "receiving VRRP: {e}");
                        self.status().last_error = Some(format!("receive: {e}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let a = self.machine.on_timer(Instant::now());
                    self.exec(a);
                }
                _ = tokio::time::sleep_until(upkeep) => self.upkeep(Instant::now()),
            }
        }
        let a = self.machine.shutdown(Instant::now());
        if !a.contains(&Action::Release) {
            self.exec(a);
            self.remove_filter();
            return;
        }
        // A clean stop of the master: priority 0 now, but keep answering on the VIP until the
        // new master is heard (it announces itself and its ARP moves the clients), so clients
        // see no gap; at most HANDOVER_WAIT when nobody takes over.
        self.exec(a.iter().filter(|x| **x != Action::Release).cloned().collect());
        let until = tokio::time::Instant::now() + HANDOVER_WAIT;
        loop {
            tokio::select! {
                r = self.sock.recv() => match r {
                    Ok(pkt) if pkt.bad_ip.is_none() && pkt.src != self.link.local => {
                        if let Ok(adv) = packet::parse(&pkt.msg, pkt.src, pkt.dst, pkt.ttl)
                            && adv.vrid == self.cfg.vrid
                            && adv.priority > 0
                        {
                            // It adverts before it adds the VIP and sends its ARP: give those
                            // a moment to reach the clients.
                            tokio::time::sleep(HANDOVER_SETTLE).await;
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                },
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        self.exec(vec![Action::Release]);
        self.remove_filter();
    }

    fn remove_filter(&mut self) {
        if let Some(f) = self.no_accept.take()
            && let Err(e) = f.remove()
        {
            tracing::error!(vip = %self.cfg.name, "removing the accept_mode = false table: {e}");
        }
    }

    fn received(&mut self, pkt: net::Received) {
        let parsed = match pkt.bad_ip {
            Some(e) => Err(e),
            None => packet::parse(&pkt.msg, pkt.src, pkt.dst, pkt.ttl),
        };
        match parsed {
            Err(e) => {
                tracing::debug!(vip = %self.cfg.name, from = %pkt.src, "dropped a VRRP packet: {e}");
                *self.status().dropped.entry(e.label().to_string()).or_default() += 1;
                crate::metrics::VIP.dropped.get_or_create(&crate::metrics::VipReasonLabels { vip: self.cfg.name.clone(), reason: e.label().into() }).inc();
            }
            Ok(adv) if adv.vrid != self.cfg.vrid => self.status().other_vrid += 1,
            Ok(adv) => {
                self.status().adverts_received += 1;
                crate::metrics::VIP.adverts.get_or_create(&crate::metrics::VipDirLabels { vip: self.cfg.name.clone(), direction: "received".into() }).inc();
                let interval = Duration::from_millis(u64::from(adv.interval_cs) * 10);
                let a = self.machine.on_advert(Instant::now(), pkt.src, adv.priority, interval);
                self.exec(a);
            }
        }
    }

    fn upkeep_deadline(&self) -> Option<Instant> {
        if self.machine.state() != State::Master {
            return None;
        }
        [self.garp_next, self.refreshed.map(|r| r + self.cfg.lifetime / 3), self.garp_refresh_next].into_iter().flatten().min()
    }

    /// The rest of a gratuitous ARP burst, address lifetime refresh, periodic re-announcement.
    fn upkeep(&mut self, now: Instant) {
        if self.machine.state() != State::Master {
            return;
        }
        if self.garp_next.is_some_and(|t| t <= now) {
            self.announce_once();
            self.garp_left = self.garp_left.saturating_sub(1);
            self.garp_next = (self.garp_left > 0).then(|| now + GARP_SPACING);
        }
        if self.refreshed.is_some_and(|r| r + self.cfg.lifetime / 3 <= now) {
            self.add_addresses(now);
        }
        if self.garp_refresh_next.is_some_and(|t| t <= now) {
            self.announce_once();
            self.garp_refresh_next = self.cfg.garp_refresh.map(|d| now + d);
        }
    }

    fn add_addresses(&mut self, now: Instant) {
        for a in &self.cfg.addresses {
            if let Err(e) = net::add_address(self.link.index, *a, self.cfg.lifetime) {
                tracing::error!(vip = %self.cfg.name, "adding {a} to {}: {e}", self.cfg.interface);
                self.status().last_error = Some(format!("adding {a}: {e}"));
            }
        }
        self.refreshed = Some(now);
    }

    fn announce_once(&mut self) {
        if let Err(e) = self.announcer.announce(&self.cfg.addresses) {
            tracing::warn!(vip = %self.cfg.name, "announcing on {}: {e}", self.cfg.interface);
            self.status().last_error = Some(format!("announce: {e}"));
        }
    }

    /// Start a burst of `garp_count` announcements: one now, the rest spaced out.
    fn announce(&mut self, now: Instant) {
        if self.cfg.garp_count == 0 {
            return;
        }
        self.announce_once();
        self.garp_left = self.cfg.garp_count - 1;
        self.garp_next = (self.garp_left > 0).then(|| now + GARP_SPACING);
    }

    fn send(&mut self, priority: u8) {
        let adv = packet::Advert {
            vrid: self.cfg.vrid,
            priority,
            interval_cs: (self.cfg.advert_interval.as_millis() / 10) as u16,
            addresses: self.cfg.addresses.iter().map(|a| a.ip).collect(),
        };
        for dst in self.sock.destinations().to_vec() {
            let msg = adv.encode(self.link.local, dst);
            match self.sock.send_to(&msg, dst) {
                Ok(()) => {
                    self.status().adverts_sent += 1;
                    crate::metrics::VIP.adverts.get_or_create(&crate::metrics::VipDirLabels { vip: self.cfg.name.clone(), direction: "sent".into() }).inc();
                }
                Err(e) => {
                    tracing::warn!(vip = %self.cfg.name, "sending an advertisement to {dst}: {e}");
                    self.status().last_error = Some(format!("send to {dst}: {e}"));
                }
            }
        }
    }

    fn exec(&mut self, actions: Vec<Action>) {
        let now = Instant::now();
        for a in actions {
            match a {
                Action::Send { priority } => self.send(priority),
                Action::Take => {
                    self.add_addresses(now);
                    self.announce(now);
                    self.garp_refresh_next = self.cfg.garp_refresh.map(|d| now + d);
                }
                Action::Announce => self.announce(now),
                Action::Release => {
                    for a in &self.cfg.addresses {
                        if let Err(e) = net::del_address(self.link.index, *a) {
                            tracing::error!(vip = %self.cfg.name, "removing {a} from {}: {e}", self.cfg.interface);
                            self.status().last_error = Some(format!("removing {a}: {e}"));
                        }
                    }
                    self.refreshed = None;
                    self.garp_next = None;
                    self.garp_left = 0;
                    self.garp_refresh_next = None;
                }
                Action::Transition { from, to, why } => self.transition(from, to, why),
            }
        }
    }

    fn transition(&mut self, from: State, to: State, why: String) {
        let master = self.machine.master();
        tracing::info!(vip = %self.cfg.name, vrid = self.cfg.vrid, from = from.as_str(), to = to.as_str(), master = ?master, "VRRP {}: {why}", to.as_str());
        {
            let mut s = self.status();
            s.state = to;
            s.master = master;
            s.since_us = crate::probe::now_us();
            s.transitions += 1;
        }
        let m = &crate::metrics::VIP;
        for st in [State::Initialize, State::Backup, State::Master, State::Fault] {
            m.state.get_or_create(&crate::metrics::VipStateLabels { vip: self.cfg.name.clone(), state: st.as_str().into() }).set(i64::from(st == to));
        }
        m.transitions.get_or_create(&crate::metrics::VipStateLabels { vip: self.cfg.name.clone(), state: to.as_str().into() }).inc();
        if let Some(tx) = &self.events {
            let _ = tx.send(Event::VipState {
                vip: self.cfg.name.clone(),
                interface: self.cfg.interface.clone(),
                vrid: self.cfg.vrid,
                from: from.as_str().into(),
                to: to.as_str().into(),
                why,
                master,
                node: self.node.clone(),
                local: Some(self.link.local),
            });
        }
    }
}
