//! DNS providers: update the DNS a team already runs instead of serving it ourselves.
//!
//! Each `[[dns.provider]]` names a place records live (a primary that takes RFC 2136 UPDATEs,
//! a PowerDNS API, a Route 53 hosted zone, a Cloudflare zone) and the failover records kept
//! there. One [`Backend`] per kind, one file each: `rfc2136.rs` (signed with `tsig.rs`,
//! messages in `msg.rs`), `powerdns.rs`, `route53.rs` (SigV4 in `sigv4.rs`), `cloudflare.rs`.
//! A backend knows how to write a service's records ([`Backend::set`]) and how to check
//! them from the outside ([`Backend::check`]); everything else is shared here:
//!
//! - [`ProviderKind`] is the actuator registry's kind (`dns-provider`, one line in
//!   `actuator::registry::KINDS`): it builds the backends at start-up and hands each service
//!   with records at a provider one [`ProviderActuator`] per provider.
//! - Changes to one provider are serialised (an apply and a suspicion-TTL change never
//!   interleave), and applying what was already applied and still checks out sends nothing.
//! - Failures come back as [`Outcome`]s with the provider's own message; a rejected key or
//!   token is fatal (retrying cannot help), anything else is retried by the runner with
//!   backoff. HTTP 429 answers are waited out (`Retry-After`, bounded) before trying again.
//!
//! Nothing here decides anything or writes events: the runner turns outcomes into events.

pub mod cloudflare;
pub mod config;
pub mod msg;
pub mod powerdns;
pub mod rfc2136;
pub mod route53;
pub mod sigv4;
pub mod tsig;

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use config::{ProviderConfig, ProviderKind as ProviderSettings, ProviderRecord};

use crate::actuator::registry::{Kind, StartCtx, StartError};
use crate::actuator::{ActFuture, Actuator, Current, Desired, Outcome};
use crate::config::{Config, ServiceConfig};
use crate::dns::name::Name;
use crate::dns::wire::rtype;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What one record should hold: an address (A for IPv4, AAAA for IPv6) with a TTL, or nothing
/// (failing closed: both address types removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub name: Name,
    pub address: Option<IpAddr>,
    pub ttl: u32,
}

/// A provider's refusal or a failed exchange, in the provider's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    pub message: String,
    /// False when trying again cannot help (a rejected key, an unknown zone).
    pub retryable: bool,
}

impl ProviderError {
    pub fn retry(message: impl Into<String>) -> ProviderError {
        ProviderError { message: message.into(), retryable: true }
    }
    pub fn fatal(message: impl Into<String>) -> ProviderError {
        ProviderError { message: message.into(), retryable: false }
    }
}

/// One way of writing records.
pub trait Backend: Send + Sync {
    /// Make every record of `want` hold exactly its address (or nothing), atomically where the
    /// provider allows it. Idempotent. Returns the provider's answer, for the event.
    fn set<'a>(&'a self, want: &'a [Want]) -> BoxFuture<'a, Result<String, ProviderError>>;

    /// Check from the outside that every record of `want` holds exactly its address: `Ok` with
    /// what was seen, `Err` with what differs.
    fn check<'a>(&'a self, want: &'a [Want]) -> BoxFuture<'a, Result<String, ProviderError>>;
}

/// What was last written for one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Applied {
    epoch: u64,
    address: Option<IpAddr>,
    suspect: bool,
}

/// One configured provider and its backend.
pub struct Provider {
    pub config: ProviderConfig,
    backend: Box<dyn Backend>,
    /// Held for every write, so writes to one provider never interleave.
    applied: tokio::sync::Mutex<HashMap<String, Applied>>,
    /// Target addresses currently suspect, per service.
    suspects: Mutex<HashSet<(String, IpAddr)>>,
}

impl Provider {
    pub fn new(config: ProviderConfig) -> Result<Provider, String> {
        let backend: Box<dyn Backend> = match &config.kind {
            ProviderSettings::Rfc2136 { .. } => Box::new(rfc2136::Rfc2136::new(&config)),
            ProviderSettings::PowerDns { .. } => Box::new(powerdns::PowerDns::new(&config)?),
            ProviderSettings::Route53 { .. } => Box::new(route53::Route53::new(&config)?),
            ProviderSettings::Cloudflare { .. } => Box::new(cloudflare::Cloudflare::new(&config)?),
        };
        Ok(Provider { config, backend, applied: tokio::sync::Mutex::new(HashMap::new()), suspects: Mutex::new(HashSet::new()) })
    }

    /// The actuator of `service` at this provider (the kind hands these out; benchmarks and
    /// tests drive one directly).
    pub fn actuator(self: &Arc<Self>, service: &str) -> ProviderActuator {
        ProviderActuator { provider: self.clone(), service: service.into(), name: format!("provider:{}", self.config.name) }
    }

    fn is_suspect(&self, service: &str, address: IpAddr) -> bool {
        self.suspects.lock().expect("suspects lock").contains(&(service.to_string(), address))
    }

    fn wants(&self, service: &str, address: Option<IpAddr>, suspect: bool) -> Vec<Want> {
        self.config
            .records
            .iter()
            .filter(|r| r.service == service)
            .map(|r| Want { name: r.name.clone(), address, ttl: if suspect { r.suspect_ttl.unwrap_or(r.ttl) } else { r.ttl } })
            .collect()
    }

    fn serves(&self, service: &str) -> bool {
        self.config.records.iter().any(|r| r.service == service)
    }

    fn describe(want: &[Want]) -> String {
        let names: Vec<String> = want.iter().map(|w| w.name.to_string()).collect();
        match want.first() {
            Some(Want { address: Some(a), ttl, .. }) => format!("{} -> {a} (TTL {ttl})", names.join(", ")),
            _ => format!("{} -> nothing (records removed)", names.join(", ")),
        }
    }

    async fn apply(&self, service: &str, desired: &Desired) -> Outcome {
        let mut applied = self.applied.lock().await;
        let address = desired.active.as_ref().map(|t| t.address);
        let suspect = address.is_some_and(|a| self.is_suspect(service, a));
        let want = self.wants(service, address, suspect);
        let now = Applied { epoch: desired.epoch, address, suspect };
        let label = format!("{} ({})", self.config.name, self.config.kind.name());
        // The same epoch again (a retry after a failed verification, a reconcile): write only
        // when the provider does not already hold it.
        if applied.get(service) == Some(&now)
            && let Ok(seen) = self.backend.check(&want).await
        {
            return Outcome::ok(format!("{label}: already serving {} (epoch {}); nothing sent; {seen}", Self::describe(&want), desired.epoch));
        }
        match self.backend.set(&want).await {
            Ok(answer) => {
                applied.insert(service.to_string(), now);
                let since = desired.decided_at.elapsed();
                Outcome::ok(format!(
                    "{label}: {} (epoch {}), {} after the decision; {answer}",
                    Self::describe(&want),
                    desired.epoch,
                    humantime::format_duration(Duration::from_micros(since.as_micros() as u64))
                ))
            }
            Err(e) => {
                applied.remove(service);
                let msg = format!("{label}: {}", e.message);
                if e.retryable { Outcome::failed(msg) } else { Outcome::fatal(msg) }
            }
        }
    }

    async fn verify(&self, service: &str, desired: &Desired) -> Outcome {
        let address = desired.active.as_ref().map(|t| t.address);
        let want = self.wants(service, address, false);
        let label = format!("{} ({})", self.config.name, self.config.kind.name());
        let result = if self.config.verify_servers.is_empty() {
            self.backend.check(&want).await
        } else {
            check_servers(&self.config.verify_servers, &want, self.config.timeout).await
        };
        match result {
            Ok(seen) => Outcome::ok(format!("{label}: {seen}")),
            Err(e) if e.retryable => Outcome::failed(format!("{label}: {}", e.message)),
            Err(e) => Outcome::fatal(format!("{label}: {}", e.message)),
        }
    }

    /// The suspicion TTL: rewrite `service`'s records with their `suspect_ttl` (or back to
    /// their TTL) when `address` is what they serve now. Returns the outcome when it wrote.
    async fn resuspect(&self, service: &str, address: IpAddr, suspect: bool) -> Option<Result<String, ProviderError>> {
        let mut applied = self.applied.lock().await;
        let cur = *applied.get(service)?;
        if cur.address != Some(address) || cur.suspect == suspect || self.is_suspect(service, address) != suspect {
            return None;
        }
        let want = self.wants(service, Some(address), suspect);
        let r = self.backend.set(&want).await;
        if r.is_ok() {
            applied.insert(service.to_string(), Applied { suspect, ..cur });
        }
        Some(r)
    }
}

/// The actuator of one service at one provider.
pub struct ProviderActuator {
    provider: Arc<Provider>,
    service: Arc<str>,
    name: String,
}

impl Actuator for ProviderActuator {
    fn name(&self) -> &str {
        &self.name
    }

    fn apply<'a>(&'a self, desired: &'a Desired) -> ActFuture<'a> {
        Box::pin(self.provider.apply(&self.service, desired))
    }

    fn verify<'a>(&'a self, desired: &'a Desired) -> Option<ActFuture<'a>> {
        Some(Box::pin(self.provider.verify(&self.service, desired)))
    }
}

/// Every configured provider, as one actuator kind.
pub struct ProviderKindHandle {
    providers: Vec<Arc<Provider>>,
    started: Vec<ProviderConfig>,
}

/// [`crate::actuator::registry::KINDS`]' entry for `[[dns.provider]]`.
pub fn start_kind(ctx: &StartCtx) -> Result<Box<dyn Kind>, StartError> {
    let mut providers = Vec::new();
    for c in &ctx.config.dns_providers {
        providers.push(Arc::new(Provider::new(c.clone()).map_err(|e| format!("provider {}: {e}", c.name))?));
    }
    Ok(Box::new(ProviderKindHandle { providers, started: ctx.config.dns_providers.clone() }))
}

impl ProviderKindHandle {
    /// The providers, for status and tests.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }
}

impl Kind for ProviderKindHandle {
    fn name(&self) -> &'static str {
        "dns-provider"
    }

    fn actuators(&self, service: &ServiceConfig) -> Vec<Arc<dyn Actuator>> {
        self.providers
            .iter()
            .filter(|p| p.serves(&service.name))
            .map(|p| Arc::new(p.actuator(&service.name)) as Arc<dyn Actuator>)
            .collect()
    }

    fn reload(&self, config: &Config, _current: &HashMap<String, Current>) -> Vec<String> {
        if config.dns_providers != self.started { vec!["[[dns.provider]]".to_string()] } else { Vec::new() }
    }

    fn suspect(&self, service: &str, address: IpAddr, suspect: bool) -> bool {
        let mut acted = false;
        for p in &self.providers {
            if !p.config.records.iter().any(|r| r.service == service && r.suspect_ttl.is_some()) {
                continue;
            }
            {
                let mut s = p.suspects.lock().expect("suspects lock");
                let key = (service.to_string(), address);
                if suspect { s.insert(key) } else { s.remove(&key) };
            }
            let Ok(rt) = tokio::runtime::Handle::try_current() else { continue };
            let (p, service) = (p.clone(), service.to_string());
            acted = true;
            rt.spawn(async move {
                match p.resuspect(&service, address, suspect).await {
                    Some(Ok(answer)) => tracing::info!(provider = %p.config.name, %service, %address, suspect, "suspicion TTL written: {answer}"),
                    Some(Err(e)) => tracing::warn!(provider = %p.config.name, %service, %address, suspect, "suspicion TTL not written: {}", e.message),
                    None => {}
                }
            });
        }
        acted
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Query every server in `servers` for every record of `want` (A and AAAA) and compare with
/// the wanted address. Used by every kind when `verify_servers` is set, and by RFC 2136 with
/// the zone's own servers.
pub async fn check_servers(servers: &[SocketAddr], want: &[Want], timeout: Duration) -> Result<String, ProviderError> {
    let mut seen = Vec::new();
    for server in servers {
        for w in want {
            let mut got = Vec::new();
            for t in [rtype::A, rtype::AAAA] {
                let (bytes, p) = msg::ask(*server, &w.name, t, timeout).await.map_err(ProviderError::retry)?;
                if p.rcode != 0 && p.rcode != 3 {
                    return Err(ProviderError::retry(format!("{server} answered {} {} with rcode {}", w.name, crate::dns::config::type_name(t), p.rcode)));
                }
                got.extend(p.answers.iter().filter(|rr| rr.name == w.name).filter_map(|rr| msg::address(&bytes, rr)));
            }
            let ok = match w.address {
                Some(a) => got == [a],
                None => got.is_empty(),
            };
            if !ok {
                let wanted = w.address.map(|a| a.to_string()).unwrap_or_else(|| "nothing".into());
                return Err(ProviderError::retry(format!("{server} serves {} as {got:?}, not {wanted}", w.name)));
            }
        }
        seen.push(server.to_string());
    }
    let what = want.first().and_then(|w| w.address).map(|a| a.to_string()).unwrap_or_else(|| "nothing".into());
    Ok(format!("{} serve{} {what}", seen.join(", "), if seen.len() == 1 { "s" } else { "" }))
}

/// How long at most we wait out one HTTP 429's `Retry-After`, and how many 429s in a row one
/// step waits out before handing the retry to the runner's backoff.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
const MAX_RATE_LIMITED: u32 = 3;

/// An HTTP answer: status and body.
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

/// Send a request built by `build` (called again for each attempt), waiting out 429 answers
/// (`Retry-After` in seconds, at most [`MAX_RETRY_AFTER`]). A network error is retryable.
pub async fn send_http(what: &str, build: impl Fn() -> reqwest::RequestBuilder) -> Result<HttpAnswer, ProviderError> {
    for attempt in 0.. {
        let resp = build().send().await.map_err(|e| ProviderError::retry(format!("{what}: {}", crate::notify::error_chain(&e.without_url()))))?;
        let status = resp.status().as_u16();
        let wait = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.text().await.unwrap_or_default();
        if status == 429 && attempt < MAX_RATE_LIMITED {
            let wait = wait.unwrap_or(Duration::from_secs(1)).min(MAX_RETRY_AFTER);
            tracing::info!("{what}: rate limited (HTTP 429), waiting {} as Retry-After asks", humantime::format_duration(wait));
            tokio::time::sleep(wait).await;
            continue;
        }
        return Ok(HttpAnswer { status, body });
    }
    unreachable!("the loop returns")
}

/// Classify a non-2xx answer: 401/403 mean the credentials were refused (fatal), 404 a zone
/// or record that does not exist (fatal), 408/429/5xx are worth retrying, other 4xx are fatal.
pub fn http_error(what: &str, a: &HttpAnswer, message: &str) -> ProviderError {
    let text = format!("{what}: HTTP {}: {message}", a.status);
    match a.status {
        401 | 403 => ProviderError::fatal(format!("{text} (credentials rejected)")),
        408 | 429 | 500..=599 => ProviderError::retry(text),
        _ => ProviderError::fatal(text),
    }
}

/// At most `n` characters of `s`, for messages that quote a provider's answer.
pub fn clip(s: &str, n: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= n { s.to_string() } else { format!("{}...", s.chars().take(n).collect::<String>()) }
}

/// A name without its trailing dot (`www.example.com`), as HTTP APIs write them.
pub fn dotless(name: &Name) -> String {
    name.to_string().trim_end_matches('.').to_string()
}
