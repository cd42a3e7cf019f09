//! `[[nginx]]`: steer a running nginx by writing an `upstream` block and reloading it.
//!
//! `apply` renders the upstream for the decision (the active target first; with `backups = true`
//! the other targets follow in priority order marked `backup`, so nginx itself moves a request
//! on when the active one fails between checks; with `backups = false` the active target
//! alone; serving nothing renders every target `down`), writes it atomically (a temporary file
//! in the same directory, fsync, rename, fsync of the directory), runs the `test` command
//! (`nginx -t`) and then `reload`. When the test fails, the previous file is put back (or the
//! new one removed if there was none) and the outcome is fatal with nginx's message: a broken
//! nginx config is not ours to retry. The file is written, tested and reloaded on every apply,
//! even when it did not change, so a reload lost to a crash is made up for after a restart.
//!
//! `verify` reads the file back (someone else may have edited it) and, with `verify_url`,
//! requests that URL through nginx: the answer must not be a 5xx, and when nginx adds the
//! upstream it used (`add_header X-Upstream-Addr $upstream_addr always;`) it must be the
//! active target.
//!
//! This module decides nothing and writes no events; commands run through `process::run_clean`.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::config::NginxConfig;
use crate::actuator::registry::{Kind, StartCtx, StartError};
use crate::actuator::{ActFuture, Actuator, Current, Desired, Outcome};
use crate::config::{Config, ServiceConfig};

/// Output kept from `nginx -t` and the reload command.
const OUTPUT_CAP: usize = 4096;

/// The upstream block for `desired`. `targets` are the service's targets in priority order.
pub fn render(cfg: &NginxConfig, service: &ServiceConfig, desired: &Desired) -> String {
    let active = desired.active.as_ref().map(|t| t.name.as_str());
    let addr = |a| SocketAddr::new(a, cfg.port);
    let mut out = format!(
        "# Written by understudy for service \"{}\": epoch {}, active {}.\n# Do not edit: it is rewritten on every decision.\nupstream {} {{\n",
        service.name,
        desired.epoch,
        active.unwrap_or("none"),
        cfg.upstream
    );
    match active.and_then(|a| service.target(a)) {
        Some(a) => {
            out.push_str(&format!("    server {};\n", addr(a.address)));
            if cfg.backups {
                for t in service.targets.iter().filter(|t| t.name != a.name) {
                    out.push_str(&format!("    server {} backup;\n", addr(t.address)));
                }
            }
        }
        None => {
            for t in &service.targets {
                out.push_str(&format!("    server {} down;\n", addr(t.address)));
            }
        }
    }
    out.push_str("}\n");
    out
}

/// Write `text` to `path` so that readers see the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".understudy-").suffix(".tmp").tempfile_in(dir)?;
    tmp.write_all(text)?;
    tmp.as_file().sync_all()?;
    // Keep the permissions of the file we replace (nginx may run as another user).
    if let Ok(meta) = std::fs::metadata(path) {
        tmp.as_file().set_permissions(meta.permissions())?;
    } else {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

pub struct NginxActuator {
    name: String,
    cfg: NginxConfig,
    service: ServiceConfig,
}

impl NginxActuator {
    pub fn new(cfg: NginxConfig, service: ServiceConfig, name: String) -> NginxActuator {
        NginxActuator { name, cfg, service }
    }

    async fn run(&self, argv: &[String]) -> Result<(), String> {
        let out = crate::process::run_clean(argv, &[], self.cfg.timeout, OUTPUT_CAP).await;
        if out.ok {
            Ok(())
        } else {
            let text: Vec<&str> = out.output.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            Err(format!("`{}` {}: {}", argv.join(" "), out.status, text.join(" | ")))
        }
    }

    async fn apply_now(&self, desired: &Desired) -> Outcome {
        let file = &self.cfg.file;
        if let Some(a) = &desired.active
            && self.service.target(&a.name).is_none()
        {
            return Outcome::fatal(format!("target \"{}\" is not a target of service \"{}\"", a.name, self.service.name));
        }
        let text = render(&self.cfg, &self.service, desired);
        let old = match std::fs::read(file) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Outcome::failed(format!("cannot read {}: {e}", file.display())),
        };
        let changed = old.as_deref() != Some(text.as_bytes());
        if changed && let Err(e) = write_atomic(file, text.as_bytes()) {
            return Outcome::failed(format!("cannot write {}: {e}", file.display()));
        }
        if let Err(e) = self.run(&self.cfg.test).await {
            if !changed {
                return Outcome::fatal(format!("{e} (the upstream file was already up to date: the problem is elsewhere in nginx's config)"));
            }
            let restored = match &old {
                Some(b) => write_atomic(file, b).map(|_| "the previous file was put back".to_string()),
                None => std::fs::remove_file(file).map(|_| "the new file was removed".to_string()),
            };
            return match restored {
                Ok(how) => Outcome::fatal(format!("{e}; {how}")),
                Err(r) => Outcome::fatal(format!("{e}; and restoring {} failed: {r}", file.display())),
            };
        }
        if let Err(e) = self.run(&self.cfg.reload).await {
            return Outcome::failed(e);
        }
        let active = desired.active.as_ref().map(|t| t.name.as_str()).unwrap_or("nothing");
        let what = if changed { format!("wrote {}", file.display()) } else { format!("{} already up to date", file.display()) };
        Outcome::ok(format!("{what} (upstream {} -> {active}), tested and reloaded", self.cfg.upstream))
    }

    async fn check(&self, desired: &Desired) -> Outcome {
        let want = render(&self.cfg, &self.service, desired);
        match std::fs::read_to_string(&self.cfg.file) {
            Ok(t) if t == want => {}
            Ok(_) => return Outcome::failed(format!("{} does not hold the upstream for epoch {} (edited by someone else?)", self.cfg.file.display(), desired.epoch)),
            Err(e) => return Outcome::failed(format!("cannot read {}: {e}", self.cfg.file.display())),
        }
        let Some(url) = &self.cfg.verify_url else {
            return Outcome::ok(format!("{} holds the upstream for epoch {}", self.cfg.file.display(), desired.epoch));
        };
        crate::probe::http::install_crypto_provider();
        let client = match reqwest::Client::builder().no_proxy().timeout(self.cfg.timeout).build() {
            Ok(c) => c,
            Err(e) => return Outcome::failed(format!("cannot build an HTTP client: {e}")),
        };
        let r = match client.get(url).send().await {
            Ok(r) => r,
            Err(e) => return Outcome::failed(format!("GET {url} through nginx: {e}")),
        };
        let status = r.status();
        if status.is_server_error() {
            return Outcome::failed(format!("GET {url} through nginx answered {status}"));
        }
        let used = r.headers().get("x-upstream-addr").and_then(|v| v.to_str().ok()).map(str::to_string);
        let active = desired.active.as_ref().and_then(|a| self.service.target(&a.name)).map(|t| SocketAddr::new(t.address, self.cfg.port).to_string());
        match (used, active) {
            (Some(u), Some(a)) if u.split([',', ' ']).next() != Some(a.as_str()) => {
                Outcome::failed(format!("GET {url} through nginx was served by {u}, not the active target {a}"))
            }
            (Some(u), _) => Outcome::ok(format!("GET {url} through nginx: {status}, served by {u}")),
            (None, _) => Outcome::ok(format!("GET {url} through nginx: {status}")),
        }
    }
}

impl Actuator for NginxActuator {
    fn name(&self) -> &str {
        &self.name
    }

    fn apply<'a>(&'a self, desired: &'a Desired) -> ActFuture<'a> {
        Box::pin(self.apply_now(desired))
    }

    fn verify<'a>(&'a self, desired: &'a Desired) -> Option<ActFuture<'a>> {
        Some(Box::pin(self.check(desired)))
    }
}

/// Every `[[nginx]]` section; actuators are built from the config in force.
pub struct NginxKind {
    sections: Mutex<Arc<Vec<NginxConfig>>>,
}

/// [`crate::actuator::registry::KINDS`]' entry for `[[nginx]]`.
pub fn start_kind(ctx: &StartCtx) -> Result<Box<dyn Kind>, StartError> {
    Ok(Box::new(NginxKind { sections: Mutex::new(Arc::new(ctx.config.lb.nginx.clone())) }))
}

impl Kind for NginxKind {
    fn name(&self) -> &'static str {
        "nginx"
    }

    fn actuators(&self, service: &ServiceConfig) -> Vec<Arc<dyn Actuator>> {
        let sections = self.sections.lock().expect("nginx sections").clone();
        let mine: Vec<&NginxConfig> = sections.iter().filter(|c| c.service == service.name).collect();
        mine.iter()
            .map(|c| {
                let name = if mine.len() == 1 { "nginx".to_string() } else { format!("nginx:{}", c.file.display()) };
                Arc::new(NginxActuator::new((*c).clone(), service.clone(), name)) as Arc<dyn Actuator>
            })
            .collect()
    }

    fn reload(&self, config: &Config, _current: &HashMap<String, Current>) -> Vec<String> {
        *self.sections.lock().expect("nginx sections") = Arc::new(config.lb.nginx.clone());
        Vec::new()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(backups: bool) -> (NginxConfig, ServiceConfig) {
        let text = "[[service]]\nname = \"www\"\n[service.check]\nkind = \"tcp\"\nport = 80\n\
            [[service.target]]\nname = \"primary\"\naddress = \"127.0.0.2\"\n[[service.target]]\nname = \"backup\"\naddress = \"::1\"\n[[service.target]]\nname = \"third\"\naddress = \"127.0.0.4\"\n\
            [[nginx]]\nservice = \"www\"\nupstream = \"www_up\"\nfile = \"/etc/nginx/conf.d/u.conf\"\nport = 8080\n";
        let (mut c, _) = crate::config::from_str(text, Path::new("u.toml")).unwrap();
        c.lb.nginx[0].backups = backups;
        (c.lb.nginx[0].clone(), c.services[0].clone())
    }

    fn desired(active: Option<&str>) -> Desired {
        Desired {
            service: "www".into(),
            epoch: 7,
            active: active.map(|n| crate::actuator::TargetRef { name: n.into(), address: "127.0.0.2".parse().unwrap() }),
            previous: None,
            reason: crate::decision::Reason::Failover,
            all_down: false,
            decided_at: std::time::Instant::now(),
        }
    }

    #[test]
    fn the_upstream_lists_the_active_target_first_and_the_rest_as_backups() {
        let (cfg, svc) = setup(true);
        let text = render(&cfg, &svc, &desired(Some("backup")));
        assert!(text.ends_with("upstream www_up {\n    server [::1]:8080;\n    server 127.0.0.2:8080 backup;\n    server 127.0.0.4:8080 backup;\n}\n"), "{text}");
        assert!(text.starts_with("# Written by understudy for service \"www\": epoch 7, active backup."), "{text}");
        let (cfg, svc) = setup(false);
        assert!(render(&cfg, &svc, &desired(Some("third"))).ends_with("upstream www_up {\n    server 127.0.0.4:8080;\n}\n"));
        let none = render(&cfg, &svc, &desired(None));
        assert!(none.ends_with("    server 127.0.0.2:8080 down;\n    server [::1]:8080 down;\n    server 127.0.0.4:8080 down;\n}\n"), "{none}");
    }

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("u.conf");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
