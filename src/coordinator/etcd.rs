//! The etcd coordinator: several understudy nodes, one decision.
//!
//! Every node publishes its own health verdicts under its own lease
//! (`<prefix>/nodes/<node>/...`, see `quorum.rs` for the key layout), watches everyone's, and
//! hands the core the cluster verdict the quorum rule gives (`Input::Verdict`). One node leads:
//! it holds `<prefix>/leader` under its lease, created with a transaction that requires the key
//! to be absent. Only the leader commits, with a transaction that requires both its leader key
//! (same create revision) and the service's decision key (same mod revision as last seen), and
//! writes the decision with epoch + 1: the epoch is the cluster-wide fencing token, and a stale
//! leader's commit fails in etcd itself. Followers refuse proposals and learn every committed
//! decision from the watch (`Input::Committed`).
//!
//! The core calls [`Etcd`] synchronously: it answers from a cached view that one background
//! task keeps in step with etcd (a range read, then a watch from the next revision); everything
//! that needs the network happens in that task and comes back as an [`Input`], sent under the
//! cache's lock so inputs are in the order the cache changed.
//!
//! Static stability: a node that cannot renew its lease stops deciding *before* the lease can
//! expire (within `lease_ttl` minus a safety margin of the last renewal it sent), keeps the
//! decisions it last heard (it sends nothing that would undo them) and says why in its
//! [`Role`]. Losing one etcd member is not losing etcd: requests and the watch move to the next
//! endpoint and the session (lease, leadership) survives.
//!
//! This module decides nothing about targets (the quorum rule is `quorum.rs`, decisions are the
//! service machines') and never blocks the caller.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::EtcdConfig;
use super::gateway::{Compare, EtcdError, Gateway, Op, TxnResult, Watch, http_client};
use super::quorum::{Change, Committed, Key, Leader, Stored, View, health_text};
use super::{ClusterStatus, Commit, Coordinator, Input, Proposal, Role};
use crate::health::Health;

/// How soon a failed renewal is tried again (through the next endpoint).
const RETRY: Duration = Duration::from_millis(100);

/// What the synchronous side asks the background task to do.
#[derive(Debug)]
enum Cmd {
    Publish { service: String, target: String, health: Health },
    Commit { service: String, proposal: Proposal },
    Share { service: String, change: super::OverrideChange },
    Release,
}

/// The live session: this node's lease and what it holds.
#[derive(Debug, Clone)]
struct Session {
    lease: i64,
    /// When the last successful renewal was sent (etcd extended the lease at or after this).
    renewed_at: Instant,
    /// The create revision of the leader key when this node created it in this session.
    leader_revision: Option<i64>,
}

/// The cache both sides share.
struct Shared {
    node: String,
    lease_ttl: Duration,
    margin: Duration,
    quorum: super::quorum::Quorum,
    view: View,
    /// This node's own verdicts (republished under every new lease).
    local: BTreeMap<(String, String), Health>,
    delivered: BTreeMap<(String, String), Health>,
    delivered_epoch: BTreeMap<String, u64>,
    /// The revision of each service's overrides last handed to the core.
    delivered_overrides: BTreeMap<String, i64>,
    session: Option<Session>,
    /// Why the last session ended (or why none started yet).
    cut_off: String,
    role: Role,
    inputs: mpsc::UnboundedSender<Input>,
}

impl Shared {
    /// The time after which this node must not act on its lease.
    fn act_until(&self) -> Option<Instant> {
        self.session.as_ref().map(|s| s.renewed_at + self.lease_ttl - self.margin)
    }

    fn leading(&self, now: Instant) -> bool {
        let (Some(s), Some(l)) = (&self.session, &self.view.leader) else { return false };
        l.node == self.node && s.leader_revision == Some(l.revision) && self.act_until().is_some_and(|t| now < t)
    }

    fn role(&self, now: Instant) -> Role {
        let connected = self.session.is_some() && self.act_until().is_some_and(|t| now < t);
        if !connected {
            let why = if self.session.is_some() { format!("lease not renewed within {:?}", self.lease_ttl - self.margin) } else { self.cut_off.clone() };
            return Role { leader: None, leading: false, connected: false, why: Some(format!("cut off from etcd: {why}")) };
        }
        let leader = self.view.leader.as_ref().map(|l| l.node.clone());
        let leading = self.leading(now);
        let why = if leading {
            None
        } else {
            Some(match &leader {
                Some(l) if *l == self.node => "this node's leadership is from an earlier lease; waiting for it to lapse".to_string(),
                Some(l) => format!("{l} leads"),
                None => "no leader elected yet".to_string(),
            })
        };
        Role { leader, leading, connected, why }
    }

    /// Send every input the cache's change calls for: verdicts, commits, role.
    fn emit(&mut self) {
        let now = Instant::now();
        if self.session.is_some() {
            for (service, target, health) in self.view.changed_verdicts(self.quorum, &mut self.delivered) {
                let _ = self.inputs.send(Input::Verdict { service, target, health });
            }
            for (service, stored) in &self.view.decisions {
                let d = &stored.decision;
                if self.delivered_epoch.get(service).is_none_or(|e| d.epoch > *e) {
                    self.delivered_epoch.insert(service.clone(), d.epoch);
                    let _ = self.inputs.send(Input::Committed {
                        service: service.clone(),
                        epoch: d.epoch,
                        active: d.active.clone(),
                        all_down: d.all_down,
                        reason: d.reason,
                        by: d.by.clone(),
                        revision: u64::try_from(stored.mod_revision).unwrap_or(0),
                    });
                }
            }
            for (service, (change, revision)) in &self.view.overrides {
                if self.delivered_overrides.get(service).is_none_or(|r| revision > r) {
                    self.delivered_overrides.insert(service.clone(), *revision);
                    let _ = self.inputs.send(Input::Overrides { service: service.clone(), change: change.clone() });
                }
            }
        }
        let role = self.role(now);
        if role != self.role {
            self.role = role.clone();
            let _ = self.inputs.send(Input::Role(role));
        }
    }
}

/// The etcd coordinator (see the module doc). Dropping it stops its task at once without
/// releasing anything (as a crash would: the lease lapses); [`Coordinator::release`] first
/// hands leadership over.
pub struct Etcd {
    shared: Arc<Mutex<Shared>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    cancel: CancellationToken,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Etcd {
    /// Start the background task (needs a Tokio runtime). Returns at once; the node connects in
    /// the background and reports through `inputs` (first an [`Input::Role`]).
    pub fn start(cfg: EtcdConfig, inputs: mpsc::UnboundedSender<Input>) -> Result<Etcd, String> {
        if cfg.endpoints.is_empty() {
            return Err("no etcd endpoint".into());
        }
        if cfg.lease_ttl < Duration::from_secs(2) || cfg.lease_ttl.subsec_nanos() != 0 {
            return Err(format!("lease_ttl must be whole seconds, at least 2s (got {:?})", cfg.lease_ttl));
        }
        let http = http_client(cfg.ca_pem.as_deref(), cfg.identity_pem.as_deref(), cfg.request_timeout())?;
        let shared = Arc::new(Mutex::new(Shared {
            node: cfg.node.clone(),
            lease_ttl: cfg.lease_ttl,
            margin: cfg.safety_margin(),
            quorum: cfg.quorum,
            view: View::default(),
            local: BTreeMap::new(),
            delivered: BTreeMap::new(),
            delivered_epoch: BTreeMap::new(),
            delivered_overrides: BTreeMap::new(),
            session: None,
            cut_off: "not connected yet".into(),
            role: Role::default(),
            inputs,
        }));
        lock(&shared).emit();
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let task = Task { cfg, http, shared: shared.clone(), cmds: rx, cancel: cancel.clone(), unshared: BTreeMap::new() };
        tokio::spawn(task.run());
        tokio::spawn(watchdog(shared.clone(), cancel.clone()));
        Ok(Etcd { shared, cmds: tx, cancel })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Coordinator for Etcd {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn observe(&mut self, service: &str, target: &str, health: Health) -> Option<Health> {
        lock(&self.shared).local.insert((service.to_string(), target.to_string()), health);
        let _ = self.cmds.send(Cmd::Publish { service: service.to_string(), target: target.to_string(), health });
        None
    }

    fn propose(&mut self, service: &str, proposal: &Proposal) -> Commit {
        let s = lock(&self.shared);
        let role = s.role(Instant::now());
        if !role.leading {
            return Commit::Refused { why: role.why.unwrap_or_else(|| "this node does not lead".into()) };
        }
        drop(s);
        match self.cmds.send(Cmd::Commit { service: service.to_string(), proposal: proposal.clone() }) {
            Ok(()) => Commit::Later,
            Err(_) => Commit::Refused { why: "the etcd coordinator has stopped".into() },
        }
    }

    fn status(&self) -> Option<ClusterStatus> {
        let s = lock(&self.shared);
        let connected = s.session.is_some();
        Some(ClusterStatus {
            kind: "etcd",
            node: s.node.clone(),
            role: s.role(Instant::now()),
            views: if connected { s.view.node_views() } else { BTreeMap::new() },
            verdicts: if connected { s.view.verdicts(s.quorum) } else { BTreeMap::new() },
            epochs: s.view.decisions.iter().map(|(k, v)| (k.clone(), v.decision.epoch)).collect(),
        })
    }

    fn release(&mut self) {
        let _ = self.cmds.send(Cmd::Release);
    }

    fn may_operate(&self) -> Result<(), String> {
        let role = lock(&self.shared).role(Instant::now());
        if role.connected { Ok(()) } else { Err(format!("{}: an override would not reach the other nodes", role.why.unwrap_or_else(|| "cut off from etcd".into()))) }
    }

    fn share(&mut self, service: &str, change: super::OverrideChange) -> Result<(), String> {
        self.may_operate()?;
        self.cmds.send(Cmd::Share { service: service.to_string(), change }).map_err(|_| "the etcd coordinator has stopped".to_string())
    }
}

/// Commit `decision` for `service` if `leader_revision` still holds the leader key and the
/// decision key is still at `seen_mod_revision` (0: no decision yet). The fencing transaction
/// itself, public so a test can replay a stale leader's attempt.
pub async fn commit_txn(gw: &Gateway, prefix: &str, service: &str, leader_revision: i64, seen_mod_revision: i64, decision: &Committed) -> Result<TxnResult, EtcdError> {
    let leader_key = format!("{prefix}/{}", Key::Leader.render());
    let key = format!("{prefix}/{}", Key::Decision { service: service.to_string() }.render());
    let value = serde_json::to_vec(decision).expect("a decision serialises");
    gw.txn(
        &[Compare::CreateRevision { key: leader_key.clone(), revision: leader_revision }, Compare::ModRevision { key: key.clone(), revision: seen_mod_revision }],
        &[Op::Put { key: key.clone(), value, lease: None }],
        &[&key, &leader_key],
    )
    .await
}

/// How a session ended.
enum End {
    /// Stop: the coordinator was dropped or released.
    Stop,
    /// Lost etcd (or the lease): reconnect.
    Lost(String),
}

struct Task {
    cfg: EtcdConfig,
    http: reqwest::Client,
    shared: Arc<Mutex<Shared>>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    cancel: CancellationToken,
    /// Overrides whose write to etcd failed: written again at the next renewal (or session).
    unshared: BTreeMap<String, super::OverrideChange>,
}

impl Task {
    fn gateway(&self, endpoint: usize) -> Gateway {
        Gateway::new(self.http.clone(), self.cfg.endpoints[endpoint % self.cfg.endpoints.len()].clone(), self.cfg.request_timeout())
    }

    fn key(&self, k: &Key) -> String {
        format!("{}/{}", self.cfg.prefix, k.render())
    }

    async fn run(mut self) {
        let mut endpoint = 0usize;
        let mut old_lease: Option<i64> = None;
        loop {
            let cancel = self.cancel.clone();
            let end = tokio::select! {
                _ = cancel.cancelled() => End::Stop,
                end = self.session(&mut endpoint, &mut old_lease) => end,
            };
            let why = match end {
                End::Stop => return,
                End::Lost(why) => why,
            };
            tracing::warn!(node = %self.cfg.node, "cluster: {why}");
            {
                let mut s = lock(&self.shared);
                if let Some(sess) = s.session.take() {
                    old_lease = Some(sess.lease);
                }
                s.cut_off = why;
                s.emit();
            }
            endpoint += 1;
            // Wait a little before the next attempt, refusing what comes meanwhile.
            let pause = tokio::time::sleep(self.cfg.renew_every().min(Duration::from_millis(500)));
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = &mut pause => break,
                    cmd = self.cmds.recv() => match cmd {
                        None | Some(Cmd::Release) => return,
                        Some(Cmd::Publish { .. }) => {} // kept in `local`, published by the next session
                        Some(Cmd::Commit { service, proposal }) => self.refuse(&service, proposal.epoch, "cut off from etcd".into()),
                        Some(Cmd::Share { service, change }) => {
                            tracing::warn!(%service, "cluster: cut off from etcd; the override is shared when it is back");
                            self.unshared.insert(service, change);
                        }
                    },
                }
            }
        }
    }

    fn refuse(&self, service: &str, epoch: u64, why: String) {
        let s = lock(&self.shared);
        let _ = s.inputs.send(Input::Refused { service: service.to_string(), epoch, why });
    }

    /// One session: a lease, a fresh view, a watch; runs until etcd is lost or we stop.
    async fn session(&mut self, endpoint: &mut usize, old_lease: &mut Option<i64>) -> End {
        let mut gw = self.gateway(*endpoint);
        if let Some((user, pw)) = &self.cfg.auth
            && let Err(e) = gw.authenticate(user, pw.expose()).await
        {
            return End::Lost(format!("authentication failed: {e}"));
        }
        // The previous lease's keys (our verdicts, perhaps the leader key) go at once rather
        // than when it lapses; it may be gone already.
        if let Some(l) = old_lease.take() {
            let _ = gw.revoke(l).await;
        }
        let sent = Instant::now();
        let lease = match gw.grant(self.cfg.lease_ttl).await {
            Ok(l) => l,
            Err(e) => return End::Lost(e.to_string()),
        };
        let mut ops = vec![Op::Put { key: self.key(&Key::Alive { node: self.cfg.node.clone() }), value: self.cfg.node.clone().into_bytes(), lease: Some(lease) }];
        let local: Vec<_> = lock(&self.shared).local.iter().map(|(k, h)| (k.clone(), *h)).collect();
        for ((service, target), h) in local {
            ops.push(Op::Put { key: self.key(&Key::Health { node: self.cfg.node.clone(), service, target }), value: health_text(h).into(), lease: Some(lease) });
        }
        // etcd allows 128 operations per transaction by default.
        for chunk in ops.chunks(100) {
            if let Err(e) = gw.txn(&[], chunk, &[]).await {
                *old_lease = Some(lease);
                return End::Lost(e.to_string());
            }
        }
        let prefix = format!("{}/", self.cfg.prefix);
        let (revision, kvs) = match gw.range_prefix(&prefix).await {
            Ok(r) => r,
            Err(e) => {
                *old_lease = Some(lease);
                return End::Lost(e.to_string());
            }
        };
        let mut view = View::default();
        for kv in kvs {
            if let Some(rel) = kv.key.strip_prefix(&prefix) {
                view.apply(&Change::Put { key: rel.to_string(), value: kv.value, create_revision: kv.create_revision, mod_revision: kv.mod_revision });
            }
        }
        let mut watch = match gw.watch(&prefix, revision + 1).await {
            Ok(w) => Some((w, *endpoint)),
            Err(e) => {
                *old_lease = Some(lease);
                return End::Lost(e.to_string());
            }
        };
        let mut last_revision = revision;
        {
            let mut s = lock(&self.shared);
            report_unreadable(&mut view);
            s.view = view;
            s.session = Some(Session { lease, renewed_at: sent, leader_revision: None });
            s.emit();
        }
        tracing::info!(node = %self.cfg.node, endpoint = gw.endpoint(), lease, "cluster: connected");
        let mut unpublished: BTreeMap<(String, String), Health> = BTreeMap::new();
        self.campaign(&gw, lease).await;
        for (service, change) in std::mem::take(&mut self.unshared) {
            self.share(&mut gw, endpoint, service, change).await;
        }

        // The next renewal: every `renew_every` after a success; soon after a failure, through
        // the next endpoint (an etcd member that died or is electing a new raft leader).
        let mut next_renewal = sent + self.cfg.renew_every();
        let mut last_error = String::new();
        loop {
            let deadline = lock(&self.shared).act_until().expect("in a session");
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline.into()) => {
                    *old_lease = Some(lease);
                    let why = if last_error.is_empty() { "no answer".to_string() } else { last_error };
                    return End::Lost(format!("lease not renewed within {:?} ({why})", self.cfg.lease_ttl - self.cfg.safety_margin()));
                }
                _ = tokio::time::sleep_until(next_renewal.into()) => {
                    let sent = Instant::now();
                    next_renewal = sent + RETRY;
                    match gw.keepalive(lease).await {
                        Ok(ttl) if ttl > 0 => {
                            next_renewal = sent + self.cfg.renew_every();
                            let mut s = lock(&self.shared);
                            if let Some(sess) = s.session.as_mut() {
                                sess.renewed_at = sent;
                            }
                            s.emit();
                        }
                        Ok(_) => return End::Lost("the lease expired in etcd".into()),
                        Err(e) => {
                            last_error = e.to_string();
                            tracing::debug!("cluster: keepalive through {} failed: {e}", gw.endpoint());
                            let failed = *endpoint;
                            self.rotate(endpoint, &mut gw).await;
                            // A watch on the member that failed may be silent rather than closed.
                            if watch.as_ref().is_some_and(|(_, e)| *e == failed) {
                                watch = gw.watch(&prefix, last_revision + 1).await.ok().map(|w| (w, *endpoint));
                            }
                            continue;
                        }
                    }
                    // Verdicts and overrides that could not be written earlier, and a watch that broke.
                    for (service, change) in std::mem::take(&mut self.unshared) {
                        self.share(&mut gw, endpoint, service, change).await;
                    }
                    for ((service, target), h) in std::mem::take(&mut unpublished) {
                        self.publish(&mut gw, endpoint, lease, &service, &target, h, &mut unpublished).await;
                    }
                    if watch.is_none() {
                        match gw.watch(&prefix, last_revision + 1).await {
                            Ok(w) => watch = Some((w, *endpoint)),
                            Err(e) => last_error = e.to_string(),
                        }
                    }
                    if lock(&self.shared).view.leader.is_none() {
                        self.campaign(&gw, lease).await;
                    }
                }
                batch = next(&mut watch) => match batch {
                    Ok((rev, changes)) => {
                        last_revision = last_revision.max(rev);
                        let leaderless = {
                            let mut s = lock(&self.shared);
                            for c in &changes {
                                s.view.apply(c);
                            }
                            report_unreadable(&mut s.view);
                            s.emit();
                            s.view.leader.is_none()
                        };
                        if leaderless {
                            self.campaign(&gw, lease).await;
                        }
                    }
                    Err(EtcdError::Protocol { message, .. }) if message.starts_with("watch canceled") => {
                        *old_lease = Some(lease);
                        return End::Lost(format!("the watch fell behind etcd's compaction ({message}); reading everything again"));
                    }
                    Err(e) => {
                        tracing::debug!("cluster: watch lost: {e}");
                        last_error = e.to_string();
                        watch = None;
                        self.rotate(endpoint, &mut gw).await;
                        match gw.watch(&prefix, last_revision + 1).await {
                            Ok(w) => watch = Some((w, *endpoint)),
                            Err(e) => last_error = e.to_string(),
                        }
                    }
                },
                cmd = self.cmds.recv() => match cmd {
                    None => return End::Stop,
                    Some(Cmd::Release) => {
                        let _ = gw.revoke(lease).await;
                        let mut s = lock(&self.shared);
                        s.session = None;
                        s.cut_off = "released (shutting down)".into();
                        s.emit();
                        return End::Stop;
                    }
                    Some(Cmd::Publish { service, target, health }) => {
                        self.publish(&mut gw, endpoint, lease, &service, &target, health, &mut unpublished).await;
                    }
                    Some(Cmd::Commit { service, proposal }) => self.commit(&gw, &service, &proposal).await,
                    Some(Cmd::Share { service, change }) => self.share(&mut gw, endpoint, service, change).await,
                },
            }
        }
    }

    /// Move requests to the next endpoint (the session, lease and leadership stay).
    async fn rotate(&self, endpoint: &mut usize, gw: &mut Gateway) {
        *endpoint += 1;
        let mut next = self.gateway(*endpoint);
        if let Some((user, pw)) = &self.cfg.auth
            && let Err(e) = next.authenticate(user, pw.expose()).await
        {
            tracing::debug!("cluster: authentication at {} failed: {e}", next.endpoint());
        }
        *gw = next;
    }

    #[allow(clippy::too_many_arguments)]
    async fn publish(&self, gw: &mut Gateway, endpoint: &mut usize, lease: i64, service: &str, target: &str, h: Health, unpublished: &mut BTreeMap<(String, String), Health>) {
        let key = self.key(&Key::Health { node: self.cfg.node.clone(), service: service.to_string(), target: target.to_string() });
        if let Err(e) = gw.put(&key, health_text(h).as_bytes(), Some(lease)).await {
            tracing::debug!("cluster: publishing {service}/{target} failed: {e}");
            unpublished.insert((service.to_string(), target.to_string()), h);
            self.rotate(endpoint, gw).await;
        }
    }

    /// Write `service`'s overrides (no lease: they outlive every node); kept for the next try
    /// when etcd does not take them.
    async fn share(&mut self, gw: &mut Gateway, endpoint: &mut usize, service: String, change: super::OverrideChange) {
        let key = self.key(&Key::Overrides { service: service.clone() });
        let value = serde_json::to_vec(&change).expect("overrides serialise");
        if let Err(e) = gw.put(&key, &value, None).await {
            tracing::warn!(%service, "cluster: sharing an override failed (tried again at the next renewal): {e}");
            self.unshared.insert(service, change);
            self.rotate(endpoint, gw).await;
        }
    }

    /// Try to become the leader (when the key is free); learn who leads otherwise.
    async fn campaign(&self, gw: &Gateway, lease: i64) {
        let key = self.key(&Key::Leader);
        match gw.txn(&[Compare::CreateRevision { key: key.clone(), revision: 0 }], &[Op::Put { key: key.clone(), value: self.cfg.node.clone().into_bytes(), lease: Some(lease) }], &[&key]).await {
            Ok(r) => {
                let mut s = lock(&self.shared);
                if r.succeeded {
                    tracing::info!(node = %self.cfg.node, revision = r.revision, "cluster: this node leads");
                    if let Some(sess) = s.session.as_mut() {
                        sess.leader_revision = Some(r.revision);
                    }
                    s.view.leader = Some(Leader { node: self.cfg.node.clone(), revision: r.revision });
                } else if let Some(kv) = r.kvs.first()
                    && let Ok(node) = String::from_utf8(kv.value.clone())
                {
                    s.view.leader = Some(Leader { node, revision: kv.create_revision });
                }
                s.emit();
            }
            Err(e) => tracing::debug!("cluster: campaign failed: {e}"),
        }
    }

    async fn commit(&self, gw: &Gateway, service: &str, proposal: &Proposal) {
        let (leader_revision, seen, epoch) = {
            let s = lock(&self.shared);
            if !s.leading(Instant::now()) {
                let why = s.role(Instant::now()).why.unwrap_or_else(|| "this node does not lead".into());
                let _ = s.inputs.send(Input::Refused { service: service.to_string(), epoch: proposal.epoch, why });
                return;
            }
            let leader_revision = s.session.as_ref().and_then(|x| x.leader_revision).expect("leading");
            let seen = s.view.decisions.get(service);
            let epoch = proposal.epoch.max(seen.map_or(0, |d| d.decision.epoch) + 1);
            (leader_revision, seen.map_or(0, |d| d.mod_revision), epoch)
        };
        let decision = Committed { epoch, active: proposal.active.clone(), all_down: proposal.all_down, by: self.cfg.node.clone(), reason: Some(proposal.reason) };
        let result = commit_txn(gw, &self.cfg.prefix, service, leader_revision, seen, &decision).await;
        let mut s = lock(&self.shared);
        match result {
            Ok(r) if r.succeeded => {
                s.view.decisions.insert(service.to_string(), Stored { decision, mod_revision: r.revision });
                s.emit();
            }
            Ok(r) => {
                let decision_key = self.key(&Key::Decision { service: service.to_string() });
                let current = r.kvs.iter().find(|kv| kv.key == decision_key);
                let leader = r.kvs.iter().find(|kv| kv.key == self.key(&Key::Leader));
                let why = match (leader, current) {
                    (Some(l), _) if l.create_revision != leader_revision => {
                        format!("leadership lost: {} leads now", String::from_utf8_lossy(&l.value))
                    }
                    (None, _) => "leadership lost: the leader key is gone (lease lapsed)".to_string(),
                    (_, Some(d)) => {
                        let e = serde_json::from_slice::<Committed>(&d.value).map(|c| c.epoch).unwrap_or(0);
                        format!("another decision was committed meanwhile (epoch {e})")
                    }
                    (_, None) => "the decision was removed from etcd meanwhile".to_string(),
                };
                let _ = s.inputs.send(Input::Refused { service: service.to_string(), epoch, why });
            }
            Err(e) => {
                let _ = s.inputs.send(Input::Refused { service: service.to_string(), epoch, why: format!("commit not confirmed: {e}") });
            }
        }
    }
}

/// Tell the core the moment this node's right to act ends, even while the session task waits
/// on a slow request: `propose` already refuses from that instant on (it reads the clock), and
/// the [`Input::Role`] says so without waiting for the session to notice.
async fn watchdog(shared: Arc<Mutex<Shared>>, cancel: CancellationToken) {
    loop {
        let until = lock(&shared).act_until().filter(|t| *t > Instant::now());
        let wake = until.unwrap_or_else(|| Instant::now() + Duration::from_millis(100));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(wake.into()) => lock(&shared).emit(),
        }
    }
}

/// The next watch batch, or never when there is no watch (the tick reopens it).
async fn next(watch: &mut Option<(Watch, usize)>) -> Result<(i64, Vec<Change>), EtcdError> {
    match watch {
        Some((w, _)) => w.next().await,
        None => std::future::pending().await,
    }
}

fn report_unreadable(view: &mut View) {
    for key in view.unreadable.drain(..) {
        tracing::warn!("cluster: ignoring unreadable key {key}");
    }
}
