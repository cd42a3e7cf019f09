//! The delivery state of notification channels, as `GET /api/v1/notify` shows it.

use serde::{Deserialize, Serialize};

/// `GET /api/v1/notify`: each notification channel's delivery state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyStatus {
    /// The last event sequence number turned into outbox entries.
    pub cursor: u64,
    pub channels: Vec<NotifyChannel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyChannel {
    pub name: String,
    /// `alertmanager`, `pagerduty`, `slack`, `webhook`, `email`; null when the channel is no
    /// longer configured but still has entries in the outbox.
    pub kind: Option<String>,
    pub configured: bool,
    /// Entries waiting in the outbox.
    pub pending: u64,
    pub oldest_pending: Option<String>,
    /// Totals over the life of the data directory.
    pub delivered: u64,
    pub superseded: u64,
    pub rejected: u64,
    /// Failed attempts since the daemon started (each is retried).
    pub failed_attempts: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_delivered: Option<String>,
    /// The receiver's last answer to a delivery.
    pub last_answer: Option<String>,
    /// When the next retry is due, while backing off.
    pub next_attempt: Option<String>,
}
