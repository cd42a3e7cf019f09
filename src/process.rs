//! Running a command with a deadline: hooks (and anything else that shells out) use this.
//!
//! The child gets its own process group, stdin from /dev/null and a captured, size-capped
//! stdout+stderr. On timeout, or if the caller's future is dropped, the whole group is killed
//! with SIGKILL, so `sh -c 'sleep 100'` leaves no orphan behind. Never panics on a missing
//! program or bad output; everything becomes a [`CommandOutcome`].

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub ok: bool,
    /// `exit 0`, `exit status 3`, `killed by signal 9`, `timed out after 10s`, `cannot run ...`.
    pub status: String,
    /// stdout then stderr, at most `cap` bytes, lossily decoded.
    pub output: String,
    pub duration: Duration,
}

impl CommandOutcome {
    /// `status: first line of output`, for events and check reasons.
    pub fn summary(&self) -> String {
        let first = self.output.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
        if first.is_empty() { self.status.clone() } else { format!("{}: {first}", self.status) }
    }
}

/// Kills the process group on drop unless disarmed (the child was reaped).
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Run `argv` with extra `env`, killing it after `timeout`.
pub async fn run(argv: &[String], env: &[(String, String)], timeout: Duration, cap: usize) -> CommandOutcome {
    let start = Instant::now();
    let fail = |status: String| CommandOutcome { ok: false, status, output: String::new(), duration: start.elapsed() };
    let Some((prog, args)) = argv.split_first() else {
        return fail("cannot run an empty command".into());
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot run {prog}: {e}")),
    };
    let mut guard = GroupGuard(child.id().map(|p| p as i32));
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let collect = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.take(cap as u64).read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.take(cap as u64).read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = child.wait().await;
        out.extend_from_slice(&err);
        out.truncate(cap);
        (status, out)
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok((Ok(status), out)) => {
            // The leader is reaped; the group may still hold children, which we leave alone
            // only if the command succeeded in detaching them on purpose. Kill stragglers.
            let ok = status.success();
            let status_text = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
                (Some(0), _) => "exit 0".to_string(),
                (Some(c), _) => format!("exit status {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                (None, None) => "ended without status".to_string(),
            };
            if ok {
                guard.0 = None;
            }
            CommandOutcome { ok, status: status_text, output: String::from_utf8_lossy(&out).into_owned(), duration: start.elapsed() }
        }
        Ok((Err(e), _)) => fail(format!("cannot wait for {prog}: {e}")),
        Err(_) => fail(format!("timed out after {}", humantime::format_duration(timeout))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(s: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), s.into()]
    }

    #[tokio::test]
    async fn exit_codes_and_output() {
        let ok = run(&sh("echo hello; echo oops >&2"), &[], Duration::from_secs(5), 4096).await;
        assert!(ok.ok);
        assert_eq!(ok.summary(), "exit 0: hello");
        assert!(ok.output.contains("oops"));
        let bad = run(&sh("exit 3"), &[], Duration::from_secs(5), 4096).await;
        assert_eq!((bad.ok, bad.status.as_str()), (false, "exit status 3"));
        let env = run(&sh("echo $FOO"), &[("FOO".into(), "bar".into())], Duration::from_secs(5), 4096).await;
        assert_eq!(env.output.trim(), "bar");
        let missing = run(&["/nonexistent/x".to_string()], &[], Duration::from_secs(5), 4096).await;
        assert!(missing.status.starts_with("cannot run /nonexistent/x"));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let out = run(&sh(&script), &[], Duration::from_millis(300), 4096).await;
        assert!(!out.ok);
        assert!(out.status.starts_with("timed out after"));
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        // The grandchild must be gone (a zombie reaped by init counts as gone once reaped).
        loop {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z")).unwrap_or(false);
            if !alive {
                break;
            }
            assert!(Instant::now() < deadline, "grandchild {pid} survived the timeout");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
