//! Drift checks (`[[service.compare]]`, `kind = "compare"`): keep the backups in step with the
//! active target. Each check reads one value from every target (an HTTP GET of a URL template,
//! or a command's output) and compares each other target's value with the active target's: the
//! application version, a config hash, a schema version. A target whose value differs has
//! *drifted*: a `drift` event (and its notification) says so, and says so again when it matches
//! once more; the API and `understudy status` show it; with `gate = true` it is not eligible
//! for failover while it drifts.
//!
//! ```toml
//! [[service.compare]]
//! name = "app-version"
//! kind = "compare"
//! url = "http://{address}:8080/version"        # or command = ["/usr/local/bin/schema-version", "{target}"]
//! interval = "10s"
//! timeout = "2s"
//! gate = true
//! ```
//!
//! How it fits: the runner ([`spawn`]) is outside the core like the client canary: it asks the
//! daemon which target is active, reads the values, sends `drift` events to the recorder and
//! posts what it found on a board keyed by service and target ([`drifted`], [`gate`]), as
//! `pg::board` does for PostgreSQL positions. The service machine reads [`gate`] for services
//! that have a gated compare check and counts a drifted target's checks as failing (as it does
//! for a drill's force-down), so eligibility needs no new engine input. The fold from values
//! to events ([`Tracker`]) is pure and unit-tested.
//!
//! It never decides and never changes a target: a value that cannot be read (the target is
//! down, the command fails) changes nothing, and nothing is compared while no target is active
//! or the active one's value cannot be read.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServiceConfig;
use crate::events::Event;

pub use super::config::{CompareConfig, Source};

/// Values longer than this are cut (events and the API show at most this much).
const SHOWN: usize = 120;
/// Bytes read from an endpoint or a command.
const READ_CAP: usize = 64 * 1024;

/// Which target of a service is active now (`None` before a decision or while all are down):
/// how the runner asks the daemon without depending on it (`cli::run` builds it).
pub type ActiveOf = Arc<dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>> + Send + Sync>;

/// What one drifted target differs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub check: String,
    /// The active target compared with, and the two values (shortened).
    pub primary: String,
    pub expected: String,
    pub found: String,
    pub gate: bool,
}

/// What is known about drift, by service and target, then check name.
type Board = HashMap<(String, String), BTreeMap<String, Drift>>;
static BOARD: LazyLock<Mutex<Board>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn post(service: &str, target: &str, check: &str, drift: Option<Drift>) {
    let mut b = BOARD.lock().unwrap_or_else(|e| e.into_inner());
    let entry = b.entry((service.to_string(), target.to_string())).or_default();
    match drift {
        Some(d) => {
            entry.insert(check.to_string(), d);
        }
        None => {
            entry.remove(check);
        }
    }
}

/// The checks `target` of `service` drifts in now (for the API and status).
pub fn drifted(service: &str, target: &str) -> Vec<Drift> {
    BOARD.lock().unwrap_or_else(|e| e.into_inner()).get(&(service.to_string(), target.to_string())).map(|m| m.values().cloned().collect()).unwrap_or_default()
}

/// Why `target` of `service` is not eligible because of a gated compare check, if it is not.
pub fn gate(service: &str, target: &str) -> Option<String> {
    let d = drifted(service, target);
    let why: Vec<String> = d.iter().filter(|d| d.gate).map(|d| format!("{} is {:?} where {} has {:?}", d.check, d.found, d.primary, d.expected)).collect();
    (!why.is_empty()).then(|| format!("drifted ({}; compare gate)", why.join(", ")))
}

/// Shorten a value for events and the API.
fn shown(v: &str) -> String {
    let v = v.trim();
    if v.chars().count() <= SHOWN { v.to_string() } else { format!("{}…", v.chars().take(SHOWN).collect::<String>()) }
}

/// The pure fold of one compare check over its rounds: which targets drift, and the events that
/// follow from a round. A target's state changes only on a value read from it and the active
/// target in the same round.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Targets found drifted, with what they differ in.
    drifted: BTreeMap<String, Drift>,
}

impl Tracker {
    /// One round: `active` is the active target's name and value; `values` every other
    /// target's value (`None`: not read). Returns the events, and each target's new drift state
    /// to post (`(target, None)` when it matches again, or it is the active one now).
    pub fn round(&mut self, service: &str, cfg: &CompareConfig, active: (&str, &str), values: &[(String, Option<String>)]) -> (Vec<Event>, Vec<(String, Option<Drift>)>) {
        let (primary, expected) = (active.0, active.1.trim());
        let (mut events, mut posts) = (Vec::new(), Vec::new());
        // The active target is the reference: it does not drift from itself.
        if let Some(d) = self.drifted.remove(primary) {
            posts.push((primary.to_string(), None));
            events.push(resolved(service, primary, cfg, &d, expected));
        }
        for (target, value) in values {
            let Some(value) = value.as_deref().map(str::trim) else { continue };
            if target == primary {
                continue;
            }
            let was = self.drifted.get(target).cloned();
            if value == expected {
                if let Some(d) = was {
                    self.drifted.remove(target);
                    posts.push((target.clone(), None));
                    events.push(resolved(service, target, cfg, &d, value));
                }
                continue;
            }
            let d = Drift { check: cfg.name.clone(), primary: primary.to_string(), expected: shown(expected), found: shown(value), gate: cfg.gate };
            if was.as_ref() != Some(&d) {
                self.drifted.insert(target.clone(), d.clone());
                posts.push((target.clone(), Some(d.clone())));
                events.push(Event::Drift {
                    service: service.to_string(),
                    target: target.clone(),
                    check: cfg.name.clone(),
                    primary: d.primary,
                    expected: d.expected,
                    found: d.found,
                    gate: cfg.gate,
                    resolved: false,
                });
            }
        }
        (events, posts)
    }
}

fn resolved(service: &str, target: &str, cfg: &CompareConfig, d: &Drift, now: &str) -> Event {
    Event::Drift {
        service: service.to_string(),
        target: target.to_string(),
        check: cfg.name.clone(),
        primary: d.primary.clone(),
        expected: d.expected.clone(),
        found: shown(now),
        gate: cfg.gate,
        resolved: true,
    }
}

/// Fill a template with a target's name and address.
fn fill(template: &str, target: &str, address: IpAddr) -> String {
    let host = match address {
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    };
    template.replace("{address}", &host).replace("{target}", target)
}

/// Read one target's value; `Err` says why it could not be read.
async fn read(source: &Source, client: &reqwest::Client, timeout: Duration, target: &str, address: IpAddr) -> Result<String, String> {
    match source {
        Source::Http(u) => {
            let url = fill(u, target, address);
            let fetch = async {
                let resp = client.get(&url).send().await.map_err(|e| format!("GET failed: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!("HTTP {}", resp.status().as_u16()));
                }
                let body = resp.bytes().await.map_err(|e| format!("reading the body: {e}"))?;
                Ok(String::from_utf8_lossy(&body[..body.len().min(READ_CAP)]).trim().to_string())
            };
            tokio::time::timeout(timeout, fetch).await.unwrap_or_else(|_| Err(format!("no answer within {} ms", timeout.as_millis())))
        }
        Source::Command(argv) => {
            let argv: Vec<String> = argv.iter().map(|a| a.replace("{target}", target).replace("{address}", &address.to_string())).collect();
            let env = [("UNDERSTUDY_COMPARE_TARGET".to_string(), target.to_string())];
            let out = crate::process::run_clean(&argv, &env, timeout, READ_CAP).await;
            if out.ok { Ok(out.stdout.text().trim().to_string()) } else { Err(out.summary()) }
        }
    }
}

/// Start a runner for every compare check of every service. `active` answers which target is
/// active; `events` receives the `drift` events to record.
pub fn spawn(tracker: &TaskTracker, cancel: &CancellationToken, services: &[ServiceConfig], active: ActiveOf, events: mpsc::UnboundedSender<Event>) {
    for svc in services {
        for c in &svc.compare {
            crate::probe::http::install_crypto_provider();
            let targets: Vec<(String, IpAddr)> = svc.targets.iter().map(|t| (t.name.clone(), t.address)).collect();
            tracker.spawn(run(svc.name.clone(), c.clone(), targets, active.clone(), events.clone(), cancel.clone()));
        }
    }
}

async fn run(service: String, cfg: CompareConfig, targets: Vec<(String, IpAddr)>, active_of: ActiveOf, events: mpsc::UnboundedSender<Event>, cancel: CancellationToken) {
    let client = match reqwest::Client::builder().no_proxy().timeout(cfg.timeout).build() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(service = %service, check = %cfg.name, "compare check not started: cannot build an HTTP client: {e}");
            return;
        }
    };
    let mut fold = Tracker::default();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(active) = active_of(service.clone()).await else { continue };
        let reads = targets.iter().map(|(name, addr)| {
            let (client, source) = (client.clone(), &cfg.source);
            async move { (name.clone(), read(source, &client, cfg.timeout, name, *addr).await) }
        });
        let values = tokio::select! {
            _ = cancel.cancelled() => return,
            v = futures_util::future::join_all(reads) => v,
        };
        let Some(reference) = values.iter().find(|(n, _)| *n == active).and_then(|(_, v)| v.as_ref().ok().cloned()) else {
            tracing::debug!(service = %service, check = %cfg.name, "compare: the active target's value could not be read; nothing compared");
            continue;
        };
        let values: Vec<(String, Option<String>)> = values.into_iter().map(|(n, v)| (n, v.ok())).collect();
        let (out, posts) = fold.round(&service, &cfg, (&active, &reference), &values);
        for (target, drift) in posts {
            post(&service, &target, &cfg.name, drift);
        }
        for e in out {
            if events.send(e).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(gate: bool) -> CompareConfig {
        CompareConfig { name: "version".into(), source: Source::Http("http://{address}/version".into()), interval: Duration::from_secs(1), timeout: Duration::from_millis(500), gate }
    }

    fn vals(v: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        v.iter().map(|(n, x)| (n.to_string(), x.map(str::to_string))).collect()
    }

    fn kinds(events: &[Event]) -> Vec<(String, bool)> {
        events
            .iter()
            .map(|e| match e {
                Event::Drift { target, resolved, .. } => (target.clone(), *resolved),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_backup_that_differs_drifts_once_and_resolves_when_it_matches() {
        let mut t = Tracker::default();
        let c = cfg(true);
        let (e, posts) = t.round("www", &c, ("primary", "1.4.2\n"), &vals(&[("primary", Some("1.4.2")), ("backup", Some("1.4.1\n"))]));
        assert_eq!(kinds(&e), vec![("backup".into(), false)]);
        let Event::Drift { expected, found, gate, .. } = &e[0] else { unreachable!() };
        assert_eq!((expected.as_str(), found.as_str(), *gate), ("1.4.2", "1.4.1", true));
        assert_eq!(posts.len(), 1);
        // The same again: nothing new. Unreadable: nothing changes.
        assert!(t.round("www", &c, ("primary", "1.4.2"), &vals(&[("backup", Some("1.4.1"))])).0.is_empty());
        assert!(t.round("www", &c, ("primary", "1.4.2"), &vals(&[("backup", None)])).0.is_empty());
        // A different wrong value is news.
        assert_eq!(kinds(&t.round("www", &c, ("primary", "1.4.2"), &vals(&[("backup", Some("1.3.9"))])).0), vec![("backup".into(), false)]);
        let (e, posts) = t.round("www", &c, ("primary", "1.4.2"), &vals(&[("backup", Some(" 1.4.2 "))]));
        assert_eq!(kinds(&e), vec![("backup".into(), true)]);
        assert_eq!(posts, vec![("backup".to_string(), None)]);
    }

    #[test]
    fn the_active_target_is_the_reference_and_never_drifts() {
        let mut t = Tracker::default();
        let c = cfg(false);
        t.round("www", &c, ("primary", "a"), &vals(&[("backup", Some("b"))]));
        // After a failover the backup is active: its drift is resolved, the old primary drifts.
        let (e, _) = t.round("www", &c, ("backup", "b"), &vals(&[("primary", Some("a")), ("backup", Some("b"))]));
        assert_eq!(kinds(&e), vec![("backup".into(), true), ("primary".into(), false)]);
    }

    #[test]
    fn templates_and_long_values() {
        assert_eq!(fill("http://{address}:8080/v?t={target}", "b", "127.0.0.3".parse().unwrap()), "http://127.0.0.3:8080/v?t=b");
        assert_eq!(fill("http://{address}/v", "b", "::1".parse().unwrap()), "http://[::1]/v");
        let long = "x".repeat(500);
        assert_eq!(shown(&long).chars().count(), SHOWN + 1);
    }

    const SVC: &str = "[[service]]\nname = \"www\"\n[service.check]\nkind = \"tcp\"\nport = 80\n[[service.target]]\nname = \"a\"\naddress = \"127.0.0.2\"\n";

    fn errors(compare: &str) -> Vec<String> {
        let text = format!("{SVC}[[service.compare]]\n{compare}");
        match crate::config::from_str(&text, std::path::Path::new("u.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn config_is_validated_with_located_errors() {
        let (c, _) = crate::config::from_str(&format!("{SVC}[[service.compare]]\nname = \"v\"\nkind = \"compare\"\nurl = \"http://{{address}}:8080/version\"\n"), std::path::Path::new("u.toml")).unwrap();
        assert_eq!(c.services[0].compare, vec![CompareConfig { name: "v".into(), source: Source::Http("http://{address}:8080/version".into()), interval: Duration::from_secs(10), timeout: Duration::from_secs(2), gate: false }]);
        let e = errors("name = \"v\"\nkind = \"compare\"\nurl = \"http://x/\"\ncommand = [\"/bin/true\"]\n");
        assert!(e.iter().any(|e| e.contains("either `url` or `command`")), "{e:?}");
        let e = errors("name = \"v\"\nkind = \"diff\"\ncommand = \"cat /etc/version\"\n");
        assert!(e.iter().any(|e| e.contains("kind") && e.contains("expected \"compare\"")), "{e:?}");
        let e = errors("name = \"v\"\nkind = \"compare\"\nurl = \"ftp://{address}/v\"\n");
        assert!(e.iter().any(|e| e.contains("http(s) URL template")), "{e:?}");
        let e = errors("name = \"v\"\nkind = \"compare\"\ncommand = []\ninterval = \"1s\"\ntimeout = \"1s\"\n");
        assert!(e.iter().any(|e| e.contains("command")) && e.iter().any(|e| e.contains("less than interval")), "{e:?}");
        let e = errors("name = \"v\"\nkind = \"compare\"\nurl = \"http://x/\"\nbogus = 1\n");
        assert!(e.iter().any(|e| e.contains("bogus")), "unknown keys are refused: {e:?}");
    }

    #[test]
    fn the_gate_reason_names_the_check_and_values() {
        post("gate-test-svc", "backup", "version", Some(Drift { check: "version".into(), primary: "primary".into(), expected: "2".into(), found: "1".into(), gate: true }));
        post("gate-test-svc", "backup", "schema", Some(Drift { check: "schema".into(), primary: "primary".into(), expected: "9".into(), found: "8".into(), gate: false }));
        assert_eq!(gate("gate-test-svc", "backup").as_deref(), Some("drifted (version is \"1\" where primary has \"2\"; compare gate)"));
        assert_eq!(drifted("gate-test-svc", "backup").len(), 2);
        post("gate-test-svc", "backup", "version", None);
        assert_eq!(gate("gate-test-svc", "backup"), None, "an ungated drift does not gate");
    }
}
