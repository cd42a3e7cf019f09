//! The runtime's part of drills: starting and finishing them (reports written durably to
//! `data_dir/drills`), their leases, and undoing the fault of a drill whose client went away.
//! The bookkeeping itself is pure and lives in `crate::drill::ledger`.

use super::Refusal;
use super::core::{Control, Core};
use crate::events::{Event, OverrideAction, format_time_us};
use crate::clock::now_us;

impl Core {
    pub(super) fn drill_start(&mut self, req: crate::drill::StartRequest) -> Result<crate::drill::StartResponse, Refusal> {
        if !self.services.iter().any(|s| *s.name == req.service) {
            return Err(Refusal::NoService(req.service));
        }
        if let Some(id) = self.drills.blocking(&req.service, now_us()) {
            return Err(Refusal::Conflict(format!("drill #{id} of {} is still running", req.service)));
        }
        let (service, fault) = (req.service.clone(), req.fault.clone());
        let r = self.record(Event::DrillStarted { service: req.service, fault: req.fault, target: req.target, by: req.by });
        self.drills.started(r.seq, &service, &fault, r.time_us);
        Ok(crate::drill::StartResponse { id: r.seq, targets: self.config.drill.targets, since: r.seq })
    }

    pub(super) fn drill_finish(&mut self, report: crate::drill::Report) -> Result<(), Refusal> {
        if self.drills.running(report.id).is_none() {
            return Err(Refusal::Conflict(format!("drill #{} is not running", report.id)));
        }
        let dir = self.config.daemon.data_dir.join("drills");
        let stem = dir.join(format!("drill-{}", report.id));
        let json = serde_json::to_string_pretty(&report).expect("reports serialize");
        let written = std::fs::create_dir_all(&dir)
            .and_then(|_| write_durably(&stem.with_extension("json"), json.as_bytes()))
            .and_then(|_| write_durably(&stem.with_extension("md"), crate::drill::report::markdown(&report).as_bytes()));
        if let Err(e) = written {
            tracing::error!("cannot store the report of drill #{} in {}: {e}", report.id, dir.display());
        }
        let summary = crate::drill::Summary::from(&report);
        self.record(Event::DrillFinished {
            id: report.id,
            service: report.service.clone(),
            ok: report.ok,
            detection_ms: report.detection_ms,
            switch_ms: report.switch_ms,
            rto_ms: report.rto_ms(),
            missed: report.missed.clone(),
            error: report.error.clone(),
        });
        self.drills.finished(summary);
        Ok(())
    }

    /// Register a drill's undo (recorded before the client installs its fault) and extend its
    /// lease.
    pub(super) fn drill_lease(&mut self, id: u64, undo: Option<crate::drill::Undo>, lasts: std::time::Duration) -> Result<crate::drill::LeaseResponse, Refusal> {
        let until = now_us().saturating_add(lasts.as_micros() as u64);
        let new_undo = self.drills.lease(id, undo.as_ref(), until).map_err(|e| Refusal::Conflict(e.to_string()))?;
        if new_undo && let (Some(undo), Some(d)) = (undo, self.drills.running(id)) {
            let service = d.service.clone();
            self.record(Event::DrillFault { id, service, undo });
        }
        let expires = self.drills.running(id).and_then(|d| d.lease_until_us).unwrap_or(until);
        Ok(crate::drill::LeaseResponse { id, expires: format_time_us(expires) })
    }

    /// Undo the faults of drills whose client stopped renewing its lease (killed, disconnected).
    /// A force-down is lifted here; a command runs in its own task and reports back with
    /// [`Control::DrillUndone`], so the core never waits on it.
    pub(super) fn expire_drill_leases(&mut self) {
        for (id, d) in self.drills.expired(now_us()) {
            tracing::warn!("drill #{id} of {}: its client stopped renewing its lease; undoing its fault", d.service);
            match d.undo.clone() {
                None => self.drill_undone(id, d, Ok("no fault was registered".into())),
                Some(crate::drill::Undo::Unforce { target }) => {
                    let result = self
                        .operate(&d.service, Some(&target), OverrideAction::Unforce, &format!("drill #{id} lease expiry"), None)
                        .map(|_| format!("lifted the force-down of {target}"))
                        .map_err(|e| e.to_string());
                    self.drill_undone(id, d, result);
                }
                Some(undo) => {
                    let cmd = undo.command().unwrap_or_default();
                    let control = self.shared.control.clone();
                    self.tracker.spawn(async move {
                        let argv = vec!["/bin/sh".to_string(), "-c".to_string(), cmd.clone()];
                        let out = crate::process::run(&argv, &[], std::time::Duration::from_secs(120), 4096).await;
                        let result = if out.ok { Ok(format!("ran `{cmd}`")) } else { Err(format!("`{cmd}` failed: {}", out.summary())) };
                        let _ = control.send(Control::DrillUndone { id, drill: d, result }).await;
                    });
                }
            }
        }
    }

    /// Record the end of a drill whose fault the daemon undid (its client went away).
    pub(super) fn drill_undone(&mut self, id: u64, d: crate::drill::ledger::Running, result: Result<String, String>) {
        let error = match result {
            Ok(what) => format!("the drill's client stopped renewing its lease (killed or disconnected); the daemon undid the fault: {what}"),
            Err(e) => format!("the drill's client stopped renewing its lease and UNDOING THE FAULT FAILED, undo it by hand: {e}"),
        };
        let service = d.service;
        let summary = crate::drill::Summary {
            id,
            service: service.clone(),
            fault: d.fault,
            started: format_time_us(d.started_us),
            ok: false,
            detection_ms: None,
            switch_ms: None,
            rto_ms: None,
            missed: Vec::new(),
            error: Some(error.clone()),
        };
        self.record(Event::DrillFinished { id, service, ok: false, detection_ms: None, switch_ms: None, rto_ms: None, missed: Vec::new(), error: Some(error) });
        self.drills.finished(summary);
    }
}

/// Write a file so that it is either absent or complete after a crash: temp file, fsync, rename.
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
