//! Exec probe: run a command; exit status 0 is a pass.
//!
//! The command gets the target in its environment (`UNDERSTUDY_TARGET_NAME`,
//! `UNDERSTUDY_TARGET_ADDRESS` = the check address, `UNDERSTUDY_CHECK_PORT` = the target's
//! check port or empty), stdin from `/dev/null`, and its stdout and stderr are captured (at most
//! 4 KiB each is kept; the rest is read and thrown away so the child never blocks on a full pipe).
//!
//! The child runs in its own process group. When the check is dropped before the child was
//! reaped (the scheduler's timeout, shutdown), the whole group is killed with SIGKILL, so
//! `sh -c 'sleep 100'` leaves no orphan `sleep` behind. It must not run a shell itself (argv is
//! executed as given; config turns a string into `/bin/sh -c`), block the runtime, or panic.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use super::{CheckFuture, Probe, Verdict};
use crate::config::{ExecCheck, TargetConfig};

/// Output kept per stream.
pub const MAX_OUTPUT: usize = 4 * 1024;
/// How long we keep reading output after the child exited (a background grandchild may hold the
/// pipes open; we do not wait for it).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(100);
/// Longest reason line we report.
const MAX_LINE: usize = 200;

/// Runs one command for one target.
#[derive(Debug, Clone)]
pub struct ExecProbe {
    argv: Vec<String>,
    env: Vec<(&'static str, String)>,
}

impl ExecProbe {
    pub fn new(check: &ExecCheck, target: &TargetConfig) -> Self {
        let port = target.check_port.map(|p| p.to_string()).unwrap_or_default();
        ExecProbe {
            argv: check.command.clone(),
            env: vec![
                ("UNDERSTUDY_TARGET_NAME", target.name.clone()),
                ("UNDERSTUDY_TARGET_ADDRESS", target.check_ip().to_string()),
                ("UNDERSTUDY_CHECK_PORT", port),
            ],
        }
    }

    async fn run(&self) -> Verdict {
        let Some((program, args)) = self.argv.split_first() else {
            return Verdict::fail("cannot run an empty command");
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Verdict::fail(format!("cannot run {program}: {e}")),
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut guard = GroupGuard::new(child);

        let mut out = Vec::new();
        let mut err = Vec::new();
        let status = {
            let reads = async { tokio::join!(read_capped(stdout, &mut out), read_capped(stderr, &mut err)) };
            tokio::pin!(reads);
            let mut reads_done = false;
            let status = tokio::select! {
                status = guard.wait() => status,
                // Both streams at EOF before the exit: wait for the exit alone.
                _ = &mut reads => {
                    reads_done = true;
                    guard.wait().await
                }
            };
            if !reads_done {
                // Collect what is still in the pipes, without waiting for a background grandchild
                // that keeps them open.
                let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut reads).await;
            }
            status
        };
        match status {
            Ok(status) => verdict_for(status, &out, &err),
            Err(e) => Verdict::fail(format!("cannot wait for {program}: {e}")),
        }
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

/// Kills the child's whole process group when dropped before the child was reaped.
///
/// While the child is unreaped its pid (= the group id) cannot be reused, so signalling
/// `-pgid` reaches exactly the processes we started. After the child was reaped we leave the
/// group alone: that pid may belong to someone else by then.
struct GroupGuard {
    child: Child,
    pgid: Option<libc::pid_t>,
    reaped: bool,
}

impl GroupGuard {
    fn new(child: Child) -> Self {
        let pgid = child.id().and_then(|id| libc::pid_t::try_from(id).ok()).filter(|&p| p > 0);
        GroupGuard { child, pgid, reaped: false }
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await;
        if status.is_ok() {
            self.reaped = true;
        }
        status
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) has no memory-safety preconditions. A negative pid names the
            // process group; ESRCH (already gone) is fine to ignore.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        // `kill_on_drop` then kills the child itself (already dead) and tokio reaps it.
    }
}

/// Read a stream to EOF, keeping the first `MAX_OUTPUT` bytes. Read errors end the read.
async fn read_capped<R: AsyncRead + Unpin>(stream: Option<R>, keep: &mut Vec<u8>) {
    let Some(mut stream) = stream else { return };
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(keep.len());
                keep.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

fn verdict_for(status: ExitStatus, out: &[u8], err: &[u8]) -> Verdict {
    let line = first_line(out).or_else(|| first_line(err));
    let with_line = |head: String| match &line {
        Some(l) => format!("{head}: {l}"),
        None => head,
    };
    if let Some(code) = status.code() {
        if code == 0 {
            // A pass reports stdout only; stderr chatter on success is not the point.
            return Verdict::pass(match first_line(out) {
                Some(l) => format!("exit 0: {l}"),
                None => "exit 0".to_string(),
            });
        }
        return Verdict::fail(with_line(format!("exit status {code}")));
    }
    match status.signal() {
        Some(sig) => Verdict::fail(format!("killed by signal {sig}")),
        None => Verdict::fail(with_line(format!("exited: {status}"))),
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

    fn status(raw: i32) -> ExitStatus {
        ExitStatus::from_raw(raw)
    }

    #[test]
    fn reasons() {
        assert_eq!(verdict_for(status(0), b"healthy\nmore\n", b""), Verdict::pass("exit 0: healthy"));
        assert_eq!(verdict_for(status(0), b"", b"noise"), Verdict::pass("exit 0"));
        assert_eq!(verdict_for(status(3 << 8), b"\n  broken  \n", b""), Verdict::fail("exit status 3: broken"));
        assert_eq!(verdict_for(status(1 << 8), b"", b"oops\n"), Verdict::fail("exit status 1: oops"));
        assert_eq!(verdict_for(status(2 << 8), b"", b""), Verdict::fail("exit status 2"));
        assert_eq!(verdict_for(status(9), b"", b""), Verdict::fail("killed by signal 9"));
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
