//! The JSON shape of event records and incidents, shared by the API (`GET /api/v1/incidents`,
//! `/events`) and notifications (webhook bodies and templates carry the same incident), so a
//! receiver sees one shape wherever it reads it. Rendering only: nothing here decides.

use serde::{Deserialize, Serialize};

use super::{Event, Record, format_time_us};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: u64,
    pub time: String,
    pub time_us: u64,
    pub summary: String,
    pub event: Event,
}

impl From<&Record> for EventRecord {
    fn from(r: &Record) -> Self {
        EventRecord { seq: r.seq, time: format_time_us(r.time_us), time_us: r.time_us, summary: r.event.summary(), event: r.event.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    pub service: String,
    pub open: bool,
    pub opened: String,
    pub closed: Option<String>,
    pub closed_by: Option<String>,
    pub failed: Option<String>,
    pub to: Option<String>,
    pub epoch: u64,
    /// Marked down minus first failed check.
    pub detection_ms: Option<f64>,
    /// Verified (or applied) minus marked down.
    pub switch_ms: Option<f64>,
    /// Verified (or applied) minus first failed check.
    pub rto_ms: Option<f64>,
    pub actuator_failures: u32,
    pub recovered: Option<String>,
    pub failed_back: Option<String>,
    pub timeline: Vec<TimelineEntry>,
    /// Check results around the fault (see `events::incident::CheckWindow`).
    #[serde(default)]
    pub checks: Vec<CheckWindow>,
    /// The worst client RTO the client canaries saw (first failed request -> first good answer
    /// from the new target); null without a canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_rto_ms: Option<f64>,
    /// What each canary saw through each resolver.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client: Vec<ClientFigures>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckWindow {
    pub target: String,
    /// `down` or `up`: the flip these results caused.
    pub flip: String,
    pub at: String,
    pub results: Vec<CheckResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub at: String,
    pub ok: bool,
    pub latency_ms: f64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub time: String,
    pub time_us: u64,
    pub what: String,
}

impl From<&crate::events::incident::Incident> for Incident {
    fn from(i: &crate::events::incident::Incident) -> Self {
        let ms = |us: Option<u64>| us.map(|u| u as f64 / 1000.0);
        let mut timeline: Vec<TimelineEntry> =
            i.timeline.iter().map(|e| TimelineEntry { time: format_time_us(e.time_us), time_us: e.time_us, what: e.what.clone() }).collect();
        timeline.sort_by_key(|e| e.time_us);
        Incident {
            id: i.id,
            service: i.service.clone(),
            open: i.open,
            opened: format_time_us(i.opened_us),
            closed: i.closed_us.map(format_time_us),
            closed_by: i.closed_by.clone(),
            failed: i.failed.clone(),
            to: i.to.clone(),
            epoch: i.epoch,
            detection_ms: ms(i.detection_us()),
            switch_ms: ms(i.switch_us()),
            rto_ms: ms(i.rto_us()),
            actuator_failures: i.actuator_failures,
            recovered: i.recovered_us.map(format_time_us),
            failed_back: i.failed_back_us.map(format_time_us),
            timeline,
            checks: i
                .checks
                .iter()
                .map(|w| CheckWindow {
                    target: w.target.clone(),
                    flip: w.flip.clone(),
                    at: format_time_us(w.at_us),
                    results: w
                        .samples
                        .iter()
                        .map(|c| CheckResult { at: format_time_us(c.at_us), ok: c.ok, latency_ms: c.latency_us as f64 / 1000.0, reason: c.reason.to_string() })
                        .collect(),
                })
                .collect(),
            client_rto_ms: ms(i.client_rto_us()),
            client: i
                .client
                .iter()
                .map(|c| ClientFigures {
                    canary: c.canary.clone(),
                    resolver: c.resolver.clone(),
                    last_old_ok: c.last_old_ok_us.map(format_time_us),
                    first_failed: c.first_failed_us.map(format_time_us),
                    first_new_ok: format_time_us(c.first_new_ok_us),
                    failed_requests: c.failed,
                    client_rto_ms: ms(c.rto_us),
                })
                .collect(),
        }
    }
}

/// One canary's figures for an incident, through one resolver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientFigures {
    pub canary: String,
    pub resolver: String,
    pub last_old_ok: Option<String>,
    pub first_failed: Option<String>,
    pub first_new_ok: String,
    pub failed_requests: u32,
    pub client_rto_ms: Option<f64>,
}
