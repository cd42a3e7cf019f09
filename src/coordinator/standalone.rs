//! The single-node coordinator (the default): this node's verdicts are the verdicts, and a
//! proposal is committed at once. Epochs only grow per service: a proposal below the last
//! epoch committed for the service (a machine rebuilt without its history) is lifted above it,
//! so a fencing token is never given out twice. The durable event log carries the epochs across
//! restarts (the machine starts from the last recorded one).

use std::collections::HashMap;

use super::{Commit, Coordinator, Proposal};
use crate::health::Health;

#[derive(Debug, Default)]
pub struct Standalone {
    /// The last epoch committed per service.
    last: HashMap<String, u64>,
}

impl Standalone {
    /// Start from the last recorded epoch of each service.
    pub fn new(last: impl IntoIterator<Item = (String, u64)>) -> Standalone {
        Standalone { last: last.into_iter().collect() }
    }
}

impl Coordinator for Standalone {
    fn kind(&self) -> &'static str {
        "standalone"
    }

    fn observe(&mut self, _service: &str, _target: &str, health: Health) -> Option<Health> {
        Some(health)
    }

    fn propose(&mut self, service: &str, proposal: &Proposal) -> Commit {
        let last = self.last.entry(service.to_string()).or_insert(0);
        let epoch = proposal.epoch.max(*last + 1);
        *last = epoch;
        Commit::Now { epoch }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(epoch: u64) -> Proposal {
        Proposal { epoch, active: Some("a".into()), all_down: false, reason: crate::decision::Reason::Failover }
    }

    #[test]
    fn commits_at_once_with_the_proposed_epoch_and_passes_verdicts_through() {
        let mut c = Standalone::new([("www".to_string(), 4)]);
        assert_eq!(c.propose("www", &proposal(5)), Commit::Now { epoch: 5 });
        assert_eq!(c.observe("www", "a", Health::Down), Some(Health::Down));
    }

    #[test]
    fn an_epoch_is_never_given_out_twice_for_a_service() {
        let mut c = Standalone::new([("www".to_string(), 9)]);
        assert_eq!(c.propose("www", &proposal(3)), Commit::Now { epoch: 10 });
        assert_eq!(c.propose("www", &proposal(10)), Commit::Now { epoch: 11 });
        // Services count separately.
        assert_eq!(c.propose("db", &proposal(1)), Commit::Now { epoch: 1 });
    }
}
