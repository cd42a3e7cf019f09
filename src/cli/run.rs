//! `understudy run`'s composition: the daemon's runtime, then the API in front of it, then the
//! jobs that use the API (scheduled drills, the heartbeat). The daemon knows nothing of the
//! API; this is the one place that puts them together (tests start a daemon the same way).

use std::net::SocketAddr;

use tokio::sync::broadcast;

use crate::api::ApiState;
use crate::config::Config;
use crate::daemon::{Handle, Shared};
use crate::events::Record;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    #[error(transparent)]
    Api(#[from] crate::api::StartError),
}

/// A running daemon with its API.
pub struct Running {
    /// Where the API listens (the real port when the config said 0).
    pub api_addr: SocketAddr,
    pub api: ApiState,
    pub shared: Shared,
    daemon: Handle,
}

/// Start the daemon and its API. Returns once the API is bound and the core is running.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let schedules = config.drill.schedules.clone();
    let heartbeat = config.heartbeat.clone();
    let daemon_cfg = config.daemon.clone();
    let canary_cfg = config.clone();
    let prepared = crate::daemon::prepare(config).await?;
    let shared = prepared.shared().clone();
    let (tracker, cancel) = prepared.tasks();
    let api = match crate::api::start(&shared, &daemon_cfg, tracker, cancel).await {
        Ok(api) => api,
        Err(e) => {
            prepared.abandon().await;
            return Err(e.into());
        }
    };
    let health = {
        let shared = shared.clone();
        std::sync::Arc::new(move || shared.self_health())
    };
    crate::drill::schedule::spawn(tracker, cancel, &schedules, heartbeat.as_ref(), &api.endpoint(), health);
    // The canaries subscribe to decisions before the core makes its first one.
    crate::canary::spawn(tracker, cancel, &canary_cfg, prepared.recorder(), &shared.events, shared.metrics.clone(), &shared.canary);
    let active: crate::probe::compare::ActiveOf = {
        let shared = shared.clone();
        std::sync::Arc::new(move |service: String| {
            let shared = shared.clone();
            Box::pin(async move {
                let v = shared.services().await.ok()?.into_iter().find(|v| v.status.name == service)?;
                if v.status.all_down { None } else { v.status.active }
            })
        })
    };
    crate::probe::compare::spawn(tracker, cancel, &canary_cfg.services, active, prepared.recorder());
    drop(canary_cfg);
    let daemon = prepared.run();
    Ok(Running { api_addr: api.hosts.addr, api, shared, daemon })
}

impl Running {
    /// Live events (only those appended after subscribing).
    pub fn subscribe(&self) -> broadcast::Receiver<Record> {
        self.daemon.subscribe()
    }

    /// Stop and wait until everything has finished.
    pub async fn shutdown(self) {
        self.daemon.shutdown().await
    }
}
