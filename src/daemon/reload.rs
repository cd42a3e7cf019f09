//! The runtime's part of a reload: swap in a validated config. Each service's machine applies
//! the new config as a pure diff (`crate::service`, targets matched by name); this starts and
//! stops the probes the diff names, rebuilds the actuator list from the registry and re-issues
//! decisions whose actuators or active address changed.

use std::collections::HashMap;

use super::Refusal;
use super::core::{Core, now};
use super::services::ServiceRt;
use crate::config::{Config, ServiceConfig};
use crate::events::Event;
use crate::service::Service;

impl Core {
    /// Swap in a validated config. Unchanged checks keep their health and their probe task;
    /// services whose targets are unchanged keep their engine (and epoch, and hold timers).
    /// A service that cannot be started leaves the old config running.
    pub(super) fn reload(&mut self, config: Config) -> Result<(), Refusal> {
        if config.daemon != self.config.daemon {
            tracing::warn!("[daemon] settings changed; they take effect at the next restart");
        }
        if config.drill.schedules != self.config.drill.schedules || config.heartbeat != self.config.heartbeat {
            tracing::warn!("[[drill.schedule]] or [heartbeat] changed; they take effect at the next restart");
        }
        for later in self.registry.reload(&config, &self.current()) {
            tracing::warn!("{later}");
        }
        let mut old: HashMap<String, ServiceRt> = std::mem::take(&mut self.services).into_iter().map(|s| (s.name.to_string(), s)).collect();
        let mut services = Vec::new();
        let mut reconcile = Vec::new();
        for cfg in config.services.iter().cloned() {
            let svc = match old.remove(&cfg.name) {
                Some(prev) => {
                    let (svc, needs_reconcile) = self.carry_over(prev, cfg);
                    if needs_reconcile {
                        reconcile.push(services.len());
                    }
                    svc
                }
                None => {
                    let machine = Service::new(cfg, None, Default::default(), &Default::default(), now().mono);
                    match ServiceRt::start(machine, &mut self.probe_ctx, &self.tracker, &self.reports_tx, &self.registry, self.shared.cluster.as_ref().map(|c| &c.leading)) {
                        Ok(s) => s,
                        Err(e) => {
                            // Put back what we took, so the old config keeps running.
                            tracing::error!("reload failed: {e}");
                            services.extend(old.into_values());
                            self.services = services;
                            self.index_probes();
                            return Err(Refusal::Conflict(format!("reload failed: {e}")));
                        }
                    }
                }
            };
            services.push(svc);
        }
        drop(old); // removed services: their probes stop, their runners end
        self.services = services;
        self.index_probes();
        self.shared.notify.reload(config.notify.clone());
        self.config = config;
        let names = self.services.iter().map(|s| s.name.to_string()).collect();
        self.record(Event::ConfigReloaded { services: names });
        self.set_stall_threshold();
        for s in &self.services {
            self.shared.metrics.publish_service(&s.machine.status());
        }
        for si in reconcile {
            let fx = self.services[si].machine.reconcile(now(), self.coordinator.as_mut());
            self.effects(si, fx);
        }
        self.tick_all();
        Ok(())
    }

    /// Move a running service to its new config. Returns whether actuators must re-apply.
    fn carry_over(&mut self, mut svc: ServiceRt, cfg: ServiceConfig) -> (ServiceRt, bool) {
        let actuators = super::services::actuators(&self.registry, &cfg, self.leading());
        let same_actuators = svc.machine.config().hooks == cfg.hooks && svc.actuators.iter().map(|a| a.name()).eq(actuators.iter().map(|a| a.name()));
        let plan = svc.machine.reload(cfg, now().mono);
        for name in &plan.stop {
            svc.probes.remove(name);
        }
        for name in &plan.start {
            if let Err(e) = svc.start_probes(std::slice::from_ref(name), &mut self.probe_ctx) {
                tracing::error!("cannot start the probe for {}/{name}: {e}", svc.name);
            }
        }
        svc.actuators = actuators.into();
        (svc, !same_actuators || plan.reconcile)
    }
}
