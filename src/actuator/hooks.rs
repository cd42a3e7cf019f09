//! Hooks: commands run on transitions, like keepalived's notify scripts.
//!
//! Each configured hook is its own [`Actuator`] (named `hook:<name>`), so each one's result
//! becomes its own event, and each runs in its own task: a slow hook delays neither the DNS
//! change nor the other hooks. Hooks run through the shared process runner
//! (`crate::process::run_clean`): output is drained and capped (first and last 2 KiB per
//! stream), the run is over when the command exits (background children it starts are left
//! running and do not make it time out), and on timeout its whole process group is killed.
//!
//! A hook sees a clean environment: `PATH`, `HOME`, `LANG`, `LC_*`, `TZ`, `TMPDIR`, `USER`,
//! `LOGNAME` from the daemon, none of the daemon's other variables (so no secret given through
//! a `*_env` key), and what happened:
//!
//! | variable | value |
//! | --- | --- |
//! | `UNDERSTUDY_SERVICE` | service name |
//! | `UNDERSTUDY_EPOCH` | decision epoch (only grows) |
//! | `UNDERSTUDY_REASON` | `initial`, `failover`, `failback`, `switchover`, `drain`, `all_down`, `recovered`, `reconcile` |
//! | `UNDERSTUDY_OLD_TARGET`, `UNDERSTUDY_OLD_ADDRESS` | what was active (empty if nothing) |
//! | `UNDERSTUDY_NEW_TARGET`, `UNDERSTUDY_NEW_ADDRESS` | what is active now (empty when failing closed) |
//! | `UNDERSTUDY_ALL_DOWN` | `1` when no target is eligible, else `0` |
//!
//! Hooks must be idempotent: after a restart the current state is handed to them again with
//! reason `reconcile`. A hook that exits non-zero or times out is reported as failed; with
//! `retry = true` it is run again with backoff until it succeeds or a newer decision
//! supersedes it.

use std::time::Duration;

use super::{ActFuture, Actuator, Desired, Outcome};
use crate::config::HookConfig;

/// Output kept from a hook, for the event.
const OUTPUT_CAP: usize = 4096;

pub struct Hook {
    name: String,
    command: Vec<String>,
    timeout: Duration,
    on: Vec<String>,
    retry: bool,
}

impl Hook {
    pub fn new(cfg: &HookConfig) -> Self {
        Hook { name: format!("hook:{}", cfg.name), command: cfg.command.clone(), timeout: cfg.timeout, on: cfg.on.clone(), retry: cfg.retry }
    }

    /// Whether this hook runs for `desired` (its `on` filter).
    pub fn wants(&self, desired: &Desired) -> bool {
        self.on.is_empty() || self.on.iter().any(|o| o == desired.reason.as_str())
    }
}

/// The environment a hook sees for `d`.
pub fn environment(d: &Desired) -> Vec<(String, String)> {
    let name = |t: &Option<super::TargetRef>| t.as_ref().map(|t| t.name.clone()).unwrap_or_default();
    let addr = |t: &Option<super::TargetRef>| t.as_ref().map(|t| t.address.to_string()).unwrap_or_default();
    vec![
        ("UNDERSTUDY_SERVICE".into(), d.service.to_string()),
        ("UNDERSTUDY_EPOCH".into(), d.epoch.to_string()),
        ("UNDERSTUDY_REASON".into(), d.reason.as_str().into()),
        ("UNDERSTUDY_OLD_TARGET".into(), name(&d.previous)),
        ("UNDERSTUDY_OLD_ADDRESS".into(), addr(&d.previous)),
        ("UNDERSTUDY_NEW_TARGET".into(), name(&d.active)),
        ("UNDERSTUDY_NEW_ADDRESS".into(), addr(&d.active)),
        ("UNDERSTUDY_ALL_DOWN".into(), if d.all_down { "1" } else { "0" }.into()),
    ]
}

impl Actuator for Hook {
    fn name(&self) -> &str {
        &self.name
    }

    fn apply<'a>(&'a self, desired: &'a Desired) -> ActFuture<'a> {
        Box::pin(async move {
            let out = crate::process::run_clean(&self.command, &environment(desired), self.timeout, OUTPUT_CAP).await;
            if out.ok { Outcome::ok(out.summary()) } else { Outcome::failed(out.summary()) }
        })
    }

    fn wants(&self, desired: &Desired) -> bool {
        Hook::wants(self, desired)
    }

    fn retries(&self) -> bool {
        self.retry
    }
}
