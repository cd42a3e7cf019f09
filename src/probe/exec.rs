//! Exec probe: run a command; exit status 0 is a pass.
//!
//! The command runs through the shared runner (`crate::process::run_clean`): a clean
//! environment (the daemon's secrets never reach it) with the target added
//! (`UNDERSTUDY_TARGET_NAME`, `UNDERSTUDY_TARGET_ADDRESS` = the check address,
//! `UNDERSTUDY_CHECK_PORT` = the target's check port or empty), stdin from `/dev/null`, stdout
//! and stderr drained concurrently and capped, completion at the command's exit (a background
//! child holding the pipes does not count).
//!
//! The scheduler enforces the check's timeout by dropping the check; the runner then kills the
//! command's whole process group, so `sh -c 'sleep 100'` leaves no orphan `sleep` behind. It
//! must not run a shell itself (argv is executed as given; config turns a string into
//! `/bin/sh -c`), block the runtime, or panic.

use std::time::Duration;

use super::{CheckFuture, Probe, Verdict};
use crate::config::{ExecCheck, TargetConfig};
use crate::process::{self, CommandOutcome, Exit};

/// Output kept per stream (its first and last halves).
pub const MAX_OUTPUT: usize = 4 * 1024;
/// The runner's own deadline; the scheduler's (the check's `timeout`) always comes first.
const RUNNER_DEADLINE: Duration = Duration::from_secs(24 * 3600);
/// Longest reason line we report.
const MAX_LINE: usize = 200;

/// Runs one command for one target.
#[derive(Debug, Clone)]
pub struct ExecProbe {
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

impl ExecProbe {
    pub fn new(check: &ExecCheck, target: &TargetConfig) -> Self {
        let port = target.check_port.map(|p| p.to_string()).unwrap_or_default();
        ExecProbe {
            argv: check.command.clone(),
            env: vec![
                ("UNDERSTUDY_TARGET_NAME".into(), target.name.clone()),
                ("UNDERSTUDY_TARGET_ADDRESS".into(), target.check_ip().to_string()),
                ("UNDERSTUDY_CHECK_PORT".into(), port),
            ],
        }
    }

    async fn run(&self) -> Verdict {
        verdict_for(&process::run_clean(&self.argv, &self.env, RUNNER_DEADLINE, MAX_OUTPUT).await)
    }
}

impl Probe for ExecProbe {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(self.run())
    }

    fn describe(&self) -> String {
        format!("exec: {}", self.argv.join(" "))
    }
}

fn verdict_for(out: &CommandOutcome) -> Verdict {
    let (stdout, stderr) = (out.stdout.bytes(), out.stderr.bytes());
    let line = first_line(&stdout).or_else(|| first_line(&stderr));
    let with_line = |head: String| match &line {
        Some(l) => format!("{head}: {l}"),
        None => head,
    };
    match &out.exit {
        // A pass reports stdout only; stderr chatter on success is not the point.
        Exit::Code(0) => Verdict::pass(match first_line(&stdout) {
            Some(l) => format!("exit 0: {l}"),
            None => "exit 0".to_string(),
        }),
        Exit::Code(code) => Verdict::fail(with_line(format!("exit status {code}"))),
        Exit::Signal(sig) => Verdict::fail(format!("killed by signal {sig}")),
        Exit::TimedOut(_) | Exit::Error(_) => Verdict::fail(with_line(out.status.clone())),
    }
}

/// The first non-blank line, trimmed and shortened.
fn first_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    if line.chars().count() <= MAX_LINE {
        return Some(line.to_string());
    }
    let mut short: String = line.chars().take(MAX_LINE).collect();
    short.push('…');
    Some(short)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(exit: Exit, out: &[u8], err: &[u8]) -> CommandOutcome {
        let (mut o, mut e) = (process::Captured::new(MAX_OUTPUT), process::Captured::new(MAX_OUTPUT));
        o.push(out);
        e.push(err);
        CommandOutcome {
            ok: exit == Exit::Code(0),
            exit,
            status: "status".into(),
            output: String::new(),
            stdout: o,
            stderr: e,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn reasons() {
        let v = |exit, out: &[u8], err: &[u8]| verdict_for(&outcome(exit, out, err));
        assert_eq!(v(Exit::Code(0), b"healthy\nmore\n", b""), Verdict::pass("exit 0: healthy"));
        assert_eq!(v(Exit::Code(0), b"", b"noise"), Verdict::pass("exit 0"));
        assert_eq!(v(Exit::Code(3), b"\n  broken  \n", b""), Verdict::fail("exit status 3: broken"));
        assert_eq!(v(Exit::Code(1), b"", b"oops\n"), Verdict::fail("exit status 1: oops"));
        assert_eq!(v(Exit::Code(2), b"", b""), Verdict::fail("exit status 2"));
        assert_eq!(v(Exit::Signal(9), b"", b""), Verdict::fail("killed by signal 9"));
    }

    #[tokio::test]
    async fn a_chatty_check_or_one_that_leaves_a_child_behind_passes() {
        let target = TargetConfig { name: "t".into(), address: [127, 0, 0, 1].into(), check_address: None, check_port: Some(81) };
        let sh = |s: &str| ExecCheck { command: vec!["/bin/sh".into(), "-c".into(), s.into()] };
        let chatty = ExecProbe::new(&sh("seq 1 40000"), &target);
        assert_eq!(chatty.run().await, Verdict::pass("exit 0: 1"));
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; echo started $UNDERSTUDY_TARGET_NAME $UNDERSTUDY_CHECK_PORT", pidfile.display());
        let detach = ExecProbe::new(&sh(&script), &target);
        let started = std::time::Instant::now();
        let verdict = detach.run().await;
        if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) on the background child our command started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        assert_eq!(verdict, Verdict::pass("exit 0: started t 81"));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[test]
    fn long_and_binary_lines_are_shortened_safely() {
        let long = "é".repeat(500);
        let line = first_line(long.as_bytes()).expect("a line");
        assert_eq!(line.chars().count(), MAX_LINE + 1);
        assert!(first_line(&[0xff, 0xfe, b'\n']).is_some());
        assert_eq!(first_line(b"  \n\n"), None);
    }
}
