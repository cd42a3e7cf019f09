//! `DnsActuator`: moves a service's failover records to the active target.
//!
//! `apply` swaps the answer table in-process (see `Dns::apply`): the next query is answered
//! with the new address, with no reload and no polling. `verify` asks our own server over UDP,
//! like any resolver would, and checks that every failover record of the service answers the
//! new address (or NODATA when failing closed). The outcome says how long the swap took and how
//! soon after it the first failover answer went out.
//!
//! It decides nothing and writes no events; the runner turns its outcomes into events.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::config::RecordKind;
use super::name::Name;
use super::wire::{rcode, rtype};
use super::{Dns, client};
use crate::actuator::registry::{Kind, StartCtx, StartError};
use crate::actuator::{ActFuture, Actuator, Current, Desired, Outcome};
use crate::config::{Config, ServiceConfig};

/// How long `verify` waits for each answer, and how often it asks.
const VERIFY_TIMEOUT: Duration = Duration::from_millis(500);
const VERIFY_TRIES: u32 = 3;

pub struct DnsActuator {
    dns: Dns,
    service: Arc<str>,
}

impl DnsActuator {
    pub fn new(dns: Dns, service: &str) -> DnsActuator {
        DnsActuator { dns, service: service.into() }
    }

    fn names(&self) -> Vec<Name> {
        let mut v = Vec::new();
        for z in &self.dns.config().zones {
            for r in &z.records {
                if matches!(&r.kind, RecordKind::Failover { service, .. } if **service == *self.service) {
                    v.push(r.name.clone());
                }
            }
        }
        v
    }

    fn fmt_us(d: Duration) -> String {
        format!("{} us", d.as_micros())
    }

    async fn check(&self, desired: &Desired) -> Outcome {
        let Some(server) = self.dns.self_query_addr() else {
            return Outcome::failed("dns server is not listening; cannot verify");
        };
        let want: Option<IpAddr> = desired.active.as_ref().map(|t| t.address);
        let qtype = match want {
            Some(IpAddr::V6(_)) => rtype::AAAA,
            _ => rtype::A,
        };
        let mut seen = Vec::new();
        for name in self.names() {
            let mut last = String::new();
            let mut ok = false;
            for _ in 0..VERIFY_TRIES {
                match client::query(server, &name, qtype, VERIFY_TIMEOUT).await {
                    Ok(a) if a.rcode == rcode::NOERROR && want.is_some_and(|w| a.addresses.contains(&w)) => {
                        ok = true;
                        break;
                    }
                    Ok(a) if a.rcode == rcode::NOERROR && want.is_none() && a.addresses.is_empty() => {
                        ok = true;
                        break;
                    }
                    Ok(a) => last = format!("{name} answered rcode {} with {:?}", a.rcode, a.addresses),
                    Err(e) => last = format!("{name}: {e}"),
                }
            }
            if !ok {
                return Outcome::failed(format!("{server} does not serve the new answer: {last}"));
            }
            seen.push(name.to_string());
        }
        // Only meaningful when this decision swapped the table in.
        let table = self.dns.table();
        let first = match table.first_failover_answer() {
            Some(d) if table.epoch == Some(desired.epoch) => {
                let since_decision = table.created.saturating_duration_since(desired.decided_at) + d;
                format!("; first answer with it {} after the decision ({} after the swap)", Self::fmt_us(since_decision), Self::fmt_us(d))
            }
            _ => String::new(),
        };
        let what = want.map(|w| w.to_string()).unwrap_or_else(|| "NODATA".into());
        Outcome::ok(format!("{server} answers {} with {what}{first}", seen.join(", ")))
    }
}

impl Actuator for DnsActuator {
    fn name(&self) -> &str {
        "dns"
    }

    fn on_every_node(&self) -> bool {
        true
    }

    fn apply<'a>(&'a self, desired: &'a Desired) -> ActFuture<'a> {
        Box::pin(async move {
            let active = desired.active.as_ref().map(|t| t.address);
            match self.dns.apply(&self.service, desired.epoch, active) {
                Ok(a) if a.changed => Outcome::ok(format!(
                        "serving {} (epoch {}, serial {:?}); table swapped in {}",
                        a.addresses.first().map(|a| a.to_string()).unwrap_or_else(|| "nothing (NODATA)".into()),
                        desired.epoch,
                        a.serials,
                        Self::fmt_us(a.swap_time)
                )),
                Ok(a) => Outcome::ok(format!(
                        "already serving {} (epoch {})",
                        a.addresses.first().map(|a| a.to_string()).unwrap_or_else(|| "nothing (NODATA)".into()),
                        desired.epoch
                )),
                Err(e) => Outcome::failed(e.to_string()),
            }
        })
    }

    fn verify<'a>(&'a self, desired: &'a Desired) -> Option<ActFuture<'a>> {
        Some(Box::pin(self.check(desired)))
    }
}

/// The built-in DNS server as an actuator kind: started (sockets bound, each failover record
/// serving the restored decision) before anything else runs, reloaded in place, told about
/// suspect targets (the suspicion TTL), and handing each service with a failover record one
/// [`DnsActuator`].
pub struct DnsKind {
    pub dns: Dns,
}

/// [`crate::actuator::registry::KINDS`]' entry for `[dns]`.
pub fn start_kind(ctx: &StartCtx) -> Result<Box<dyn Kind>, StartError> {
    let cfg = ctx.config.dns.clone().ok_or("no [dns] section")?;
    let dns = Dns::start_with(cfg, &ctx.config.services, ctx.current, Some(ctx.data_dir), ctx.cancel.clone())?;
    Ok(Box::new(DnsKind { dns }))
}

impl Kind for DnsKind {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn actuators(&self, service: &ServiceConfig) -> Vec<Arc<dyn Actuator>> {
        self.dns.actuator(&service.name).map(|a| Arc::new(a) as Arc<dyn Actuator>).into_iter().collect()
    }

    fn reload(&self, config: &Config, current: &std::collections::HashMap<String, Current>) -> Vec<String> {
        match &config.dns {
            Some(new) if *new != *self.dns.config() => {
                // A record added for a running service serves its current decision at once.
                self.dns.reload_from(new.clone(), &config.services, current)
            }
            _ => Vec::new(),
        }
    }

    fn suspect(&self, service: &str, address: IpAddr, suspect: bool) -> bool {
        self.dns.set_suspect(service, address, suspect) == Some(true)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
