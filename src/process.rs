//! The one process runner: hooks, exec checks and drill commands all run commands through it.
//!
//! - The child gets its own process group, stdin from `/dev/null`, and piped stdout/stderr.
//! - Both pipes are drained concurrently with waiting for the exit, so a chatty command
//!   (`seq 1 40000`) never blocks on a full pipe. Each stream keeps its first and last
//!   `cap / 2` bytes; the middle is read and thrown away and replaced by a marker line.
//! - Completion is the exit of the command itself. A background child that inherited the pipes
//!   (`sleep 30 & echo started`) does not hold us up: after the exit we read what is already in
//!   the pipes, stopping once a stream is quiet for [`IDLE_AFTER_EXIT`] (and after
//!   [`DRAIN_AFTER_EXIT`] at most). Such background children are left running on purpose
//!   (keepalived notify scripts start daemons that way).
//! - On timeout, or if the caller's future is dropped before the command was reaped, the whole
//!   process group is killed with SIGKILL, so `sh -c 'sleep 100'` leaves no orphan behind.
//! - [`run_clean`] starts from an empty environment plus a few basics ([`BASIC_ENV`]) and the
//!   variables the caller adds (`UNDERSTUDY_*`): the daemon's own environment, and so every
//!   secret given to it through a `*_env` key, never reaches a hook or an exec check.
//!
//! It never panics on a missing program or odd output: everything becomes a [`CommandOutcome`].
//! It does not build shell command lines (argv runs as given; config turns a string into
//! `/bin/sh -c`), and it never signals a process group after its leader was reaped (that id may
//! belong to someone else by then).

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;

/// How long we keep reading output after the command exited.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(100);
/// After the exit, a stream with nothing to read for this long is done (what the command wrote
/// before exiting is already in the pipe, so it comes at once).
pub const IDLE_AFTER_EXIT: Duration = Duration::from_millis(10);

/// Variables passed through from the daemon's environment by [`run_clean`] (plus every
/// `LC_*`). `PATH` falls back to [`DEFAULT_PATH`] when the daemon has none.
pub const BASIC_ENV: &[&str] = &["PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME"];
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut(Duration),
    /// It could not be started or waited for (missing program, empty argv...).
    Error(String),
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub ok: bool,
    pub exit: Exit,
    /// `exit 0`, `exit status 3`, `killed by signal 9`, `timed out after 10s`, `cannot run ...`.
    pub status: String,
    /// stdout then stderr (each capped, see [`Captured`]), lossily decoded.
    pub output: String,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
}

impl CommandOutcome {
    /// `status: first line of output`, for events and check reasons.
    pub fn summary(&self) -> String {
        let first = self.output.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
        if first.is_empty() { self.status.clone() } else { format!("{}: {first}", self.status) }
    }
}

/// One output stream, capped: the first and the last `cap / 2` bytes, and how much was read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Captured {
    head: Vec<u8>,
    tail: Vec<u8>,
    head_cap: usize,
    tail_cap: usize,
    /// Bytes read in all.
    pub total: u64,
}

impl Captured {
    pub fn new(cap: usize) -> Captured {
        Captured { head_cap: cap / 2, tail_cap: cap - cap / 2, ..Default::default() }
    }

    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.head_cap.saturating_sub(self.head.len());
        let n = room.min(bytes.len());
        self.head.extend_from_slice(&bytes[..n]);
        bytes = &bytes[n..];
        if bytes.is_empty() {
            return;
        }
        self.tail.extend_from_slice(bytes);
        // Trim in batches so a long stream costs amortised O(1) per byte.
        if self.tail.len() > 2 * self.tail_cap.max(1024) {
            let cut = self.tail.len() - self.tail_cap;
            self.tail.drain(..cut);
        }
    }

    fn tail(&self) -> &[u8] {
        &self.tail[self.tail.len().saturating_sub(self.tail_cap)..]
    }

    /// Bytes read and not kept.
    pub fn omitted(&self) -> u64 {
        self.total - (self.head.len() + self.tail().len()) as u64
    }

    /// The kept bytes, with a marker line where the middle was dropped.
    pub fn bytes(&self) -> Vec<u8> {
        let mut v = self.head.clone();
        if self.omitted() > 0 {
            v.extend_from_slice(format!("\n[... {} bytes omitted ...]\n", self.omitted()).as_bytes());
        }
        v.extend_from_slice(self.tail());
        v
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

/// Run `argv` with the daemon's environment plus `env` (operator tools such as drill restore
/// commands, which may need `SSH_AUTH_SOCK` and the like). Killed after `timeout`; each output
/// stream keeps at most `cap` bytes.
pub async fn run(argv: &[String], env: &[(String, String)], timeout: Duration, cap: usize) -> CommandOutcome {
    execute(argv, env, timeout, cap, false).await
}

/// Like [`run`], but with a clean environment: [`BASIC_ENV`], `LC_*` and `env` only.
pub async fn run_clean(argv: &[String], env: &[(String, String)], timeout: Duration, cap: usize) -> CommandOutcome {
    execute(argv, env, timeout, cap, true).await
}

/// The environment [`run_clean`] passes on from `vars` (the daemon's environment).
pub fn basic_env(vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut kept: Vec<_> = vars.filter(|(k, _)| k.to_str().is_some_and(|k| BASIC_ENV.contains(&k) || k.starts_with("LC_"))).collect();
    if !kept.iter().any(|(k, _)| k == "PATH") {
        kept.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    kept
}

/// Kills the child's process group when dropped before the child was reaped.
struct Group {
    child: Child,
    pgid: Option<libc::pid_t>,
    reaped: bool,
}

impl Group {
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await;
        if status.is_ok() {
            self.reaped = true;
        }
        status
    }

    fn kill(&self) {
        if self.reaped {
            return;
        }
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) has no memory-safety preconditions. The leader is not reaped, so
            // its pid (= the group id) still names our group; ESRCH is fine to ignore.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // `kill_on_drop` then kills the leader itself (already dead) and tokio reaps it.
        self.kill();
    }
}

/// Read `stream` to EOF into `keep`; once `exited` turns true, stop at the first quiet spell of
/// [`IDLE_AFTER_EXIT`] instead. (`read` is cancel-safe: nothing read is lost to the `select!`.)
async fn drain<R: AsyncRead + Unpin>(stream: Option<R>, keep: &mut Captured, exited: &tokio::sync::watch::Receiver<bool>) {
    let Some(mut stream) = stream else { return };
    let mut exited = exited.clone();
    let mut buf = vec![0u8; 8192];
    loop {
        let read = if *exited.borrow_and_update() {
            match tokio::time::timeout(IDLE_AFTER_EXIT, stream.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                r = stream.read(&mut buf) => r,
                // The sender lives until the reads are over, so this only fires on a change.
                _ = exited.changed() => continue,
            }
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => keep.push(&buf[..n]),
        }
    }
}

async fn execute(argv: &[String], env: &[(String, String)], timeout: Duration, cap: usize, clean: bool) -> CommandOutcome {
    let start = Instant::now();
    let ended = |exit: Exit, stdout: Captured, stderr: Captured| {
        let status = match &exit {
            Exit::Code(0) => "exit 0".to_string(),
            Exit::Code(c) => format!("exit status {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
            Exit::TimedOut(t) => format!("timed out after {}", humantime::format_duration(*t)),
            Exit::Error(e) => e.clone(),
        };
        let mut output = stdout.bytes();
        output.extend_from_slice(&stderr.bytes());
        CommandOutcome {
            ok: exit == Exit::Code(0),
            exit,
            status,
            output: String::from_utf8_lossy(&output).into_owned(),
            stdout,
            stderr,
            duration: start.elapsed(),
        }
    };
    let Some((prog, args)) = argv.split_first() else {
        return ended(Exit::Error("cannot run an empty command".into()), Captured::new(cap), Captured::new(cap));
    };
    let mut cmd = tokio::process::Command::new(prog);
    if clean {
        cmd.env_clear().envs(basic_env(std::env::vars_os()));
    }
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ended(Exit::Error(format!("cannot run {prog}: {e}")), Captured::new(cap), Captured::new(cap)),
    };
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let pgid = child.id().and_then(|id| libc::pid_t::try_from(id).ok()).filter(|&p| p > 0);
    let mut group = Group { child, pgid, reaped: false };
    let (mut out, mut err) = (Captured::new(cap), Captured::new(cap));
    let (exited_tx, exited) = tokio::sync::watch::channel(false);
    let status = {
        let reads = async { tokio::join!(drain(stdout, &mut out, &exited), drain(stderr, &mut err, &exited)) };
        tokio::pin!(reads);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut reads_done = false;
        let status = loop {
            tokio::select! {
                s = group.wait() => break Some(s),
                _ = &mut reads, if !reads_done => reads_done = true,
                _ = &mut deadline => break None,
            }
        };
        if status.is_none() {
            group.kill();
        }
        if !reads_done {
            // What is already in the pipes; a background child holding them open is not waited for.
            exited_tx.send_replace(true);
            let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut reads).await;
        }
        status
    };
    let exit = match status {
        None => {
            // Reap the killed leader so it does not linger as a zombie.
            let _ = tokio::time::timeout(Duration::from_secs(1), group.wait()).await;
            Exit::TimedOut(timeout)
        }
        Some(Err(e)) => Exit::Error(format!("cannot wait for {prog}: {e}")),
        Some(Ok(s)) => match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Error(format!("{prog} ended without status")),
        },
    };
    ended(exit, out, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(s: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), s.into()]
    }

    const FIVE: Duration = Duration::from_secs(5);

    /// Stop a background child a test command left behind (its PID as text).
    fn kill_pid(pid: &str) {
        let pid: i32 = pid.trim().parse().expect("the command printed its child's pid");
        // SAFETY: kill(2) on a PID our command just started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }

    #[tokio::test]
    async fn exit_codes_and_output() {
        let ok = run(&sh("echo hello; echo oops >&2"), &[], FIVE, 4096).await;
        assert!(ok.ok);
        assert_eq!(ok.summary(), "exit 0: hello");
        assert_eq!((ok.stdout.text().as_str(), ok.stderr.text().as_str()), ("hello\n", "oops\n"));
        let bad = run(&sh("exit 3"), &[], FIVE, 4096).await;
        assert_eq!((bad.ok, bad.status.as_str(), &bad.exit), (false, "exit status 3", &Exit::Code(3)));
        let env = run(&sh("echo $FOO"), &[("FOO".into(), "bar".into())], FIVE, 4096).await;
        assert_eq!(env.output.trim(), "bar");
        let missing = run(&["/nonexistent/x".to_string()], &[], FIVE, 4096).await;
        assert!(missing.status.starts_with("cannot run /nonexistent/x"));
        let empty = run(&[], &[], FIVE, 4096).await;
        assert_eq!(empty.status, "cannot run an empty command");
        let killed = run(&sh("kill -9 $$"), &[], FIVE, 4096).await;
        assert_eq!(killed.exit, Exit::Signal(9));
    }

    /// Reproduction from issue 8: a hook printing 200 KB with a 3 s timeout was recorded as
    /// timed out (the output was read only up to the cap, then the pipe filled up).
    #[tokio::test]
    async fn a_chatty_command_finishes_and_keeps_its_first_and_last_lines() {
        let out = run(&sh("seq 1 40000"), &[], Duration::from_secs(3), 4096).await;
        assert!(out.ok, "{}", out.status);
        eprintln!("seq 1 40000 (228894 bytes) done in {:?}", out.duration);
        assert!(out.duration < Duration::from_secs(2), "{:?}", out.duration);
        let text = out.stdout.text();
        assert!(text.starts_with("1\n2\n3\n"), "{text}");
        assert!(text.ends_with("39999\n40000\n"), "{text}");
        assert_eq!(out.stdout.total, 228_894, "every byte was read");
        assert!(text.contains("bytes omitted ...]"), "{text}");
        assert!(text.len() < 4096 + 64, "{}", text.len());
        // Both streams at once: stderr flooding while stdout is quiet must not block either.
        let both = run(&sh("seq 1 40000 >&2; seq 1 40000"), &[], Duration::from_secs(3), 4096).await;
        assert!(both.ok, "{}", both.status);
        assert!(both.stderr.text().ends_with("40000\n"));
    }

    /// Reproduction from issue 8: a command that leaves a background child holding its output
    /// pipe open was recorded as timed out; it is complete when the command exits.
    #[tokio::test]
    async fn a_background_child_holding_the_pipe_does_not_make_it_time_out() {
        let out = run(&sh("sleep 30 & echo started; echo $! >&2"), &[], Duration::from_secs(3), 4096).await;
        kill_pid(&out.stderr.text());
        assert!(out.ok, "{}", out.status);
        eprintln!("sleep 30 & echo started: done in {:?}", out.duration);
        assert_eq!(out.summary(), "exit 0: started");
        assert!(out.duration < Duration::from_secs(1), "{:?}", out.duration);
        // Output written just before the exit is kept, however much there is.
        let late = run(&sh("sleep 30 & seq 1 20000; echo $! >&2"), &[], Duration::from_secs(3), 1 << 20).await;
        kill_pid(&late.stderr.text());
        assert!(late.ok, "{}", late.status);
        assert!(late.stdout.text().ends_with("19999\n20000\n") && late.stdout.omitted() == 0, "{}", late.stdout.total);
        eprintln!("sleep 30 & seq 1 20000: done in {:?}", late.duration);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group_and_keeps_the_output_so_far() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; echo waiting; wait", pidfile.display());
        let out = run(&sh(&script), &[], Duration::from_millis(300), 4096).await;
        assert!(!out.ok);
        assert_eq!(out.exit, Exit::TimedOut(Duration::from_millis(300)));
        assert_eq!(out.summary(), "timed out after 300ms: waiting");
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let deadline = Instant::now() + FIVE;
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

    #[tokio::test]
    async fn a_clean_environment_has_the_basics_and_what_we_add_only() {
        let add = [("UNDERSTUDY_SERVICE".to_string(), "www".to_string())];
        let clean = run_clean(&sh("env"), &add, FIVE, 1 << 16).await;
        assert!(clean.ok, "{}", clean.status);
        assert!(clean.output.lines().any(|l| l == "UNDERSTUDY_SERVICE=www"));
        assert!(clean.output.lines().any(|l| l.starts_with("PATH=")), "{}", clean.output);
        // Only what we allow, plus what sh itself sets.
        for line in clean.output.lines() {
            let n = line.split('=').next().unwrap_or_default();
            let allowed = BASIC_ENV.contains(&n) || n.starts_with("LC_") || ["UNDERSTUDY_SERVICE", "PWD", "SHLVL", "_"].contains(&n);
            assert!(allowed, "{n} reached the command:\n{}", clean.output);
        }
        // `run` is for operator tools and keeps the environment (cargo sets CARGO for tests).
        let inherited = run(&sh("env"), &[], FIVE, 1 << 16).await;
        let parent: Vec<String> = std::env::vars().map(|(k, _)| k).filter(|k| !BASIC_ENV.contains(&k.as_str())).collect();
        assert!(!parent.is_empty());
        assert!(inherited.output.lines().any(|l| l.starts_with(&format!("{}=", parent[0]))), "{}", inherited.output);
    }

    #[test]
    fn basic_env_falls_back_to_a_default_path() {
        let env = basic_env([("SECRET".into(), "x".into()), ("LC_TIME".into(), "C".into()), ("HOME".into(), "/root".into())].into_iter());
        let names: Vec<_> = env.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(names, ["LC_TIME", "HOME", "PATH"]);
    }

    #[test]
    fn captured_keeps_head_and_tail() {
        let mut c = Captured::new(8);
        c.push(b"abc");
        assert_eq!((c.text().as_str(), c.omitted()), ("abc", 0));
        c.push(b"defgh");
        assert_eq!(c.text(), "abcdefgh");
        for chunk in (0..5000u32).map(|i| format!("{:04}", i % 10000)) {
            c.push(chunk.as_bytes());
        }
        assert_eq!(c.total, 8 + 20_000);
        assert_eq!(c.text(), "abcd\n[... 20000 bytes omitted ...]\n4999");
        let mut zero = Captured::new(0);
        zero.push(b"xyz");
        assert_eq!(zero.text(), "\n[... 3 bytes omitted ...]\n");
    }
}
