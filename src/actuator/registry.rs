//! The actuator registry: every actuator kind, built from config by one factory.
//!
//! A *kind* is one way of moving traffic (the built-in DNS server, hooks; later provider DNS,
//! virtual IPs, load balancers, database promotion). Each kind has one entry in [`KINDS`]: a
//! name, whether the config asks for it, and how to start it. A started [`Kind`] owns whatever
//! lives as long as the daemon (the DNS server's sockets, a proxy's listeners, a connection to
//! an API), hands out each service's [`Actuator`]s (thin handles the runner drives), takes
//! reloads, hears about suspect targets, and is shut down once, after the last apply.
//!
//! Adding a kind touches its own file, its config section and one line in [`KINDS`]; the
//! daemon asks the [`Registry`], never a list of names. Kinds decide nothing and write no
//! events: their actuators return [`super::Outcome`]s and the runner turns them into events.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::hooks::Hook;
use super::{Actuator, Current};
use crate::config::{Config, ServiceConfig};
use crate::health::Health;

/// Why a kind could not start (a socket that would not bind, a key file that cannot be read).
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// What every kind gets when it starts.
pub struct StartCtx<'a> {
    pub config: &'a Config,
    /// The last recorded decision of each service (restored from the event log), so a kind
    /// that keeps state of its own starts from it rather than from each service's primary.
    pub current: &'a HashMap<String, Current>,
    pub data_dir: &'a Path,
    /// Cancelled when the daemon stops; long-lived tasks of a kind end with it.
    pub cancel: CancellationToken,
    /// Where a kind that changes state on its own (a VRRP speaker electing itself master)
    /// sends the events to record; the core appends them to the log like its own. `None`: not
    /// recorded (tests of the registry alone).
    pub events: Option<tokio::sync::mpsc::UnboundedSender<crate::events::Event>>,
}

/// A started actuator kind.
pub trait Kind: Send + Sync + 'static {
    /// The kind's name (`dns`, `hooks`...), as in [`KINDS`].
    fn name(&self) -> &'static str;

    /// This kind's actuators for `service` (none when the service does not use it). Called at
    /// start-up and after every reload; handing out the same names again keeps their workers.
    fn actuators(&self, service: &ServiceConfig) -> Vec<Arc<dyn Actuator>>;

    /// A new, validated config is in force: take what can change at run time. `current` is
    /// what every decided service serves now. Returns the settings that only take effect at
    /// the next restart, for the log.
    fn reload(&self, config: &Config, current: &HashMap<String, Current>) -> Vec<String> {
        let _ = (config, current);
        Vec::new()
    }

    /// A target address of `service` turned suspect (its first failed or troubled check) or
    /// clear again. Kinds that can shorten what clients cache (the DNS suspicion TTL) act on
    /// it; returns whether anything changed.
    fn suspect(&self, service: &str, address: IpAddr, suspect: bool) -> bool {
        let _ = (service, address, suspect);
        false
    }

    /// A target of `service` turned up or down (after `fall`/`rise`, as the engine sees it).
    /// Kinds that act on health themselves (a virtual IP that resigns when the local service is
    /// down) listen here; the decision itself still comes through the actuators.
    fn health(&self, service: &str, target: &str, health: Health) {
        let _ = (service, target, health);
    }

    /// The daemon is stopping and every runner has finished: release what the kind holds.
    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }

    /// For typed status (the API's view of the DNS server): see [`Registry::get`].
    fn as_any(&self) -> &dyn Any;
}

/// One line per kind: its name, whether a config asks for it, and how to start it.
pub struct Entry {
    pub name: &'static str,
    pub configured: fn(&Config) -> bool,
    pub start: fn(&StartCtx) -> Result<Box<dyn Kind>, StartError>,
}

/// Every actuator kind, in the order their actuators run for a service (each in its own task,
/// so the order only matters for status listings): the built-in DNS server, DNS providers
/// (`[[dns.provider]]`), the load-balancer kinds (`lb/`), hooks, PostgreSQL promotion, then
/// the VRRP speakers (which hand out no actuators: they elect by themselves).
pub const KINDS: &[Entry] = &[
    Entry { name: "dns", configured: |c| c.dns.is_some(), start: crate::dns::actuator::start_kind },
    Entry { name: "dns-provider", configured: |c| !c.dns_providers.is_empty(), start: crate::provider::start_kind },
    Entry { name: "proxy", configured: |c| !c.lb.proxy.is_empty(), start: crate::lb::proxy::start_kind },
    Entry { name: "haproxy", configured: |c| !c.lb.haproxy.is_empty(), start: crate::lb::haproxy::start_kind },
    Entry { name: "nginx", configured: |c| !c.lb.nginx.is_empty(), start: crate::lb::nginx::start_kind },
    Entry { name: "hooks", configured: |_| true, start: Hooks::start },
    Entry { name: "postgres", configured: crate::pg::actuator::PgKind::configured, start: crate::pg::actuator::PgKind::start },
    Entry { name: "vip", configured: |c| !c.vip.is_empty(), start: crate::vrrp::start_kind },
];

#[derive(Debug, thiserror::Error)]
#[error("cannot start the {kind} actuator: {source}")]
pub struct RegistryError {
    pub kind: &'static str,
    pub source: StartError,
}

/// The started kinds.
pub struct Registry {
    kinds: Vec<Box<dyn Kind>>,
}

impl Registry {
    /// Start every kind the config asks for. The first that fails stops the start-up.
    pub fn start(ctx: &StartCtx) -> Result<Registry, RegistryError> {
        Self::start_from(KINDS, ctx)
    }

    pub fn start_from(entries: &[Entry], ctx: &StartCtx) -> Result<Registry, RegistryError> {
        let mut kinds = Vec::new();
        for e in entries.iter().filter(|e| (e.configured)(ctx.config)) {
            kinds.push((e.start)(ctx).map_err(|source| RegistryError { kind: e.name, source })?);
        }
        Ok(Registry { kinds })
    }

    /// No kinds at all (tests of the core that need no actuators).
    pub fn empty() -> Registry {
        Registry { kinds: Vec::new() }
    }

    /// Every actuator of `service`, kind by kind.
    pub fn actuators(&self, service: &ServiceConfig) -> Vec<Arc<dyn Actuator>> {
        self.kinds.iter().flat_map(|k| k.actuators(service)).collect()
    }

    /// Hand a new config to every started kind. A kind the new config adds or removes takes
    /// effect at the next restart (starting one may need privileges or ports the running daemon
    /// no longer has). Returns what waits for the restart, one line each, for the log.
    pub fn reload(&self, config: &Config, current: &HashMap<String, Current>) -> Vec<String> {
        let mut later = Vec::new();
        for e in KINDS {
            let running = self.kinds.iter().any(|k| k.name() == e.name);
            if (e.configured)(config) != running {
                later.push(format!("[{}] was added or removed; that takes effect at the next restart", e.name));
            }
        }
        for k in &self.kinds {
            later.extend(k.reload(config, current).into_iter().map(|s| format!("{s} changed; it takes effect at the next restart")));
        }
        later
    }

    /// Tell every kind that a target turned suspect or clear; true if any acted on it.
    pub fn suspect(&self, service: &str, address: IpAddr, suspect: bool) -> bool {
        // Every kind hears it, whatever the others did.
        let mut acted = false;
        for k in &self.kinds {
            acted |= k.suspect(service, address, suspect);
        }
        acted
    }

    /// Tell every kind about a health flip.
    pub fn health(&self, service: &str, target: &str, health: Health) {
        for k in &self.kinds {
            k.health(service, target, health);
        }
    }

    /// The started kind of type `K`, for its typed status.
    pub fn get<K: Kind>(&self) -> Option<&K> {
        self.kinds.iter().find_map(|k| k.as_any().downcast_ref::<K>())
    }

    /// Shut every kind down, last started first.
    pub async fn shutdown(&self) {
        for k in self.kinds.iter().rev() {
            k.shutdown().await;
        }
    }
}

/// Hooks: one actuator per `[[service.hook]]`; they hold nothing between runs.
struct Hooks;

impl Hooks {
    fn start(_: &StartCtx) -> Result<Box<dyn Kind>, StartError> {
        Ok(Box::new(Hooks))
    }
}

impl Kind for Hooks {
    fn name(&self) -> &'static str {
        "hooks"
    }

    fn actuators(&self, service: &ServiceConfig) -> Vec<Arc<dyn Actuator>> {
        service.hooks.iter().map(|h| Arc::new(Hook::new(h)) as Arc<dyn Actuator>).collect()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::from_str(text, Path::new("test.toml")).expect("valid config").0
    }

    const TWO_HOOKS: &str = r#"
[[service]]
name = "www"
[service.check]
kind = "tcp"
port = 80
[[service.target]]
name = "a"
address = "127.0.0.2"
[[service.hook]]
name = "one"
command = ["true"]
[[service.hook]]
name = "two"
command = ["true"]
"#;

    #[test]
    fn a_service_gets_one_actuator_per_hook_and_no_dns_without_a_dns_section() {
        let cfg = config(TWO_HOOKS);
        let dir = tempfile::tempdir().unwrap();
        let ctx = StartCtx { config: &cfg, current: &HashMap::new(), data_dir: dir.path(), cancel: CancellationToken::new(), events: None };
        let reg = Registry::start(&ctx).unwrap();
        let names: Vec<String> = reg.actuators(&cfg.services[0]).iter().map(|a| a.name().to_string()).collect();
        assert_eq!(names, ["hook:one", "hook:two"]);
        assert!(reg.get::<Hooks>().is_some());
        assert!(reg.get::<crate::dns::actuator::DnsKind>().is_none());
    }

    #[test]
    fn a_kind_added_by_reload_is_reported_as_restart_only() {
        let cfg = config(TWO_HOOKS);
        let dir = tempfile::tempdir().unwrap();
        let ctx = StartCtx { config: &cfg, current: &HashMap::new(), data_dir: dir.path(), cancel: CancellationToken::new(), events: None };
        let reg = Registry::start(&ctx).unwrap();
        let with_dns = config(&format!(
            "{TWO_HOOKS}\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[[dns.zone]]\nname = \"example.test\"\nnameservers = {{ \"ns1.example.test\" = \"127.0.0.1\" }}\n[[dns.zone.record]]\nname = \"www\"\nservice = \"www\"\n"
        ));
        assert_eq!(reg.reload(&with_dns, &HashMap::new()), ["[dns] was added or removed; that takes effect at the next restart"]);
        assert!(reg.reload(&cfg, &HashMap::new()).is_empty());
    }

    #[test]
    fn a_kind_that_cannot_start_names_itself() {
        let cfg = config(TWO_HOOKS);
        let dir = tempfile::tempdir().unwrap();
        let ctx = StartCtx { config: &cfg, current: &HashMap::new(), data_dir: dir.path(), cancel: CancellationToken::new(), events: None };
        let broken = [Entry { name: "broken", configured: |_| true, start: |_| Err("port 53 is taken".into()) }];
        let err = Registry::start_from(&broken, &ctx).err().expect("refused");
        assert_eq!(err.to_string(), "cannot start the broken actuator: port 53 is taken");
    }
}
