//! In a cluster, actuators that act outside this node (hooks, a DNS provider's records, a load
//! balancer, a database) run on the leader only: [`LeaderOnly`] wraps one and lets it act only
//! while this node leads.
//!
//! A follower still hands every committed decision to its runner (its DNS server and proxy
//! serve it), but a wrapped actuator does not want it, does not retry, and does not verify or
//! repair: a node that lost leadership stops "repairing" what the new leader changed. The new
//! leader re-issues each decision with a new epoch when it takes over (see
//! `Service::take_over`), so its own actuators apply it. Deciding who leads is the
//! coordinator's job; this only reads the flag the core keeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{ActFuture, Actuator, Desired, Outcome};

/// An outside actuator that acts only while `leading` is set.
pub struct LeaderOnly {
    inner: Arc<dyn Actuator>,
    leading: Arc<AtomicBool>,
}

impl LeaderOnly {
    pub fn wrap(inner: Arc<dyn Actuator>, leading: Arc<AtomicBool>) -> Arc<dyn Actuator> {
        Arc::new(LeaderOnly { inner, leading })
    }

    fn leads(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }
}

/// Wrap the outside actuators of `actuators` (cluster mode); those that run on every node are
/// kept as they are.
pub fn fence(actuators: Vec<Arc<dyn Actuator>>, leading: &Arc<AtomicBool>) -> Vec<Arc<dyn Actuator>> {
    actuators.into_iter().map(|a| if a.on_every_node() { a } else { LeaderOnly::wrap(a, leading.clone()) }).collect()
}

impl Actuator for LeaderOnly {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn apply<'a>(&'a self, desired: &'a Desired) -> ActFuture<'a> {
        if !self.leads() {
            return Box::pin(async { Outcome::fatal("not applied: this node does not lead the cluster") });
        }
        self.inner.apply(desired)
    }

    fn wants(&self, desired: &Desired) -> bool {
        self.leads() && self.inner.wants(desired)
    }

    fn retries(&self) -> bool {
        self.inner.retries()
    }

    fn verify<'a>(&'a self, desired: &'a Desired) -> Option<ActFuture<'a>> {
        if !self.leads() {
            return None;
        }
        self.inner.verify(desired)
    }

    fn on_every_node(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Reason;

    struct Count(std::sync::atomic::AtomicU32);

    impl Actuator for Count {
        fn name(&self) -> &str {
            "count"
        }
        fn apply<'a>(&'a self, _: &'a Desired) -> ActFuture<'a> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Outcome::ok("applied") })
        }
        fn verify<'a>(&'a self, _: &'a Desired) -> Option<ActFuture<'a>> {
            Some(Box::pin(async { Outcome::ok("verified") }))
        }
    }

    fn desired() -> Desired {
        Desired { service: "www".into(), epoch: 3, active: None, previous: None, reason: Reason::Failover, all_down: false, decided_at: std::time::Instant::now() }
    }

    #[tokio::test]
    async fn a_follower_neither_applies_nor_repairs_and_a_leader_does() {
        let inner = Arc::new(Count(Default::default()));
        let leading = Arc::new(AtomicBool::new(false));
        let a = LeaderOnly::wrap(inner.clone(), leading.clone());
        let d = desired();
        assert!(!a.wants(&d) && a.verify(&d).is_none(), "a follower skips the decision and does not verify (so never repairs)");
        let o = a.apply(&d).await;
        assert!(!o.ok && !o.retryable, "{o:?}");
        assert_eq!(inner.0.load(Ordering::SeqCst), 0);
        leading.store(true, Ordering::Release);
        assert!(a.wants(&d) && a.verify(&d).is_some());
        assert!(a.apply(&d).await.ok);
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
    }
}
