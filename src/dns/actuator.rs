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
use crate::actuator::{ActFuture, Actuator, Desired, Outcome};

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
            return Outcome { ok: false, detail: "dns server is not listening; cannot verify".into() };
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
                return Outcome { ok: false, detail: format!("{server} does not serve the new answer: {last}") };
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
        Outcome { ok: true, detail: format!("{server} answers {} with {what}{first}", seen.join(", ")) }
    }
}

impl Actuator for DnsActuator {
    fn name(&self) -> &str {
        "dns"
    }

    fn apply<'a>(&'a self, desired: &'a Desired) -> ActFuture<'a> {
        Box::pin(async move {
            let active = desired.active.as_ref().map(|t| t.address);
            match self.dns.apply(&self.service, desired.epoch, active) {
                Ok(a) if a.changed => Outcome {
                    ok: true,
                    detail: format!(
                        "serving {} (epoch {}, serial {:?}); table swapped in {}",
                        a.addresses.first().map(|a| a.to_string()).unwrap_or_else(|| "nothing (NODATA)".into()),
                        desired.epoch,
                        a.serials,
                        Self::fmt_us(a.swap_time)
                    ),
                },
                Ok(a) => Outcome {
                    ok: true,
                    detail: format!(
                        "already serving {} (epoch {})",
                        a.addresses.first().map(|a| a.to_string()).unwrap_or_else(|| "nothing (NODATA)".into()),
                        desired.epoch
                    ),
                },
                Err(e) => Outcome { ok: false, detail: e.to_string() },
            }
        })
    }

    fn verify<'a>(&'a self, desired: &'a Desired) -> Option<ActFuture<'a>> {
        Some(Box::pin(self.check(desired)))
    }
}
