//! The command line: `understudy run` starts the daemon; every other command except
//! `check-config`, `demo`, `completions` and `man` talks to a running daemon through its API.
//!
//! Every read command takes `--output text|json` (`--json` is short for `--output json`); text
//! is coloured only when standard output is a terminal and `NO_COLOR` is unset or empty
//! ([`render::Paint`]). `completions` and `man` generate from this very definition (clap_complete,
//! clap_mangen), so they never drift from the real flags.
//!
//! # Exit codes
//! - 0: success.
//! - 1: the command failed (daemon unreachable, request refused, daemon failed to start).
//! - 2: bad usage or an invalid config file (`check-config`, `run`).
//! - 101: a panic in any thread or task ([`install_panic_hook`]): the process ends instead of
//!   running on half-alive, so a supervisor (systemd `Restart=always`) starts a fresh one.

mod commands;
mod demo;
mod drill;
mod render;
pub mod run;
mod shell;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config;

#[derive(Debug, Parser)]
#[command(name = "understudy", version, about = "Automatic failover for web services", max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

/// Where to find a running daemon.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// API base URL of the daemon, e.g. http://127.0.0.1:9190.
    #[arg(long, env = "UNDERSTUDY_API", global = true)]
    pub api: Option<String>,
    /// Read the API address, token and TLS certificate from this config file (default:
    /// ./understudy.toml, then /etc/understudy/understudy.toml, when they exist).
    #[arg(short = 'c', long = "config", env = "UNDERSTUDY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// File holding the bearer token for mutating requests (default: the config's
    /// api_token_file, else data_dir/api-token, which the daemon creates). The token itself may
    /// be given in $UNDERSTUDY_TOKEN.
    #[arg(long, env = "UNDERSTUDY_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

impl Target {
    pub fn endpoint(&self) -> crate::api::client::Endpoint {
        crate::api::client::Endpoint {
            api: self.api.clone(),
            config: self.config.clone(),
            token_file: self.token_file.clone(),
            // From the environment only: a token on the command line shows in `ps`.
            token: std::env::var("UNDERSTUDY_TOKEN").ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
            ca_file: None,
        }
    }
}

/// How a read command prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and lines for people (coloured on a terminal unless NO_COLOR is set).
    Text,
    /// The API's JSON, for scripts and jq.
    Json,
}

/// `--output FORMAT` and its short form `--json`, shared by every read command.
#[derive(Debug, Args, Clone, Copy)]
pub struct Output {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Same as --output json.
    #[arg(long)]
    pub json: bool,
}

impl Output {
    pub fn json(&self) -> bool {
        self.json || self.format == OutputFormat::Json
    }
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the daemon in the foreground.
    Run {
        /// Config file.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Log as JSON lines instead of human-readable text.
        #[arg(long)]
        log_json: bool,
    },
    /// Run the application health agent: serve GET /health composed of local checks
    /// (postgres, redis, disk, exec, http), 200 when all pass, 503 naming the failed parts.
    Agent {
        /// The agent's config file (not the daemon's).
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Validate the file and exit (0: valid, 2: errors with file, line and key).
        #[arg(long)]
        check_config: bool,
    },
    /// Validate a config file without running anything.
    CheckConfig {
        file: PathBuf,
        #[command(flatten)]
        out: Output,
    },
    /// Show services, their targets and what is active.
    Status {
        /// Only this service.
        service: Option<String>,
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        target: Target,
    },
    /// Show recorded events.
    Events {
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Keep printing new events as they happen.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        target: Target,
    },
    /// List incidents, show one, or close one.
    Incidents {
        #[command(subcommand)]
        action: Option<IncidentCmd>,
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        target: Target,
    },
    /// Move traffic to TARGET and pin it there until `clear`.
    Switchover {
        service: String,
        target_name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a switchover pin: normal priority order (and failback rules) apply again.
    Clear {
        service: String,
        #[command(flatten)]
        target: Target,
    },
    /// Take a target out of rotation (it stays checked).
    Drain {
        service: String,
        target_name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Put a drained target back into rotation.
    Enable {
        service: String,
        target_name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Notification channels: delivery status, or a test message through one of them.
    Notify {
        #[command(subcommand)]
        action: NotifyCmd,
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        target: Target,
    },
    /// Rehearse a failure of SERVICE's primary and measure detection, switch and client RTO.
    Drill(DrillArgs),
    /// PostgreSQL services (`kind = "postgres"`).
    Pg {
        #[command(subcommand)]
        action: PgCmd,
    },
    /// List past drills.
    Drills {
        /// Show one drill's full report.
        id: Option<u64>,
        #[command(flatten)]
        out: Output,
        /// With an id: print the report as Markdown.
        #[arg(long)]
        markdown: bool,
        #[command(flatten)]
        target: Target,
    },
    /// A self-contained demonstration: two local web servers, a failover and a failback.
    Demo {
        /// Check interval used by the demo.
        #[arg(long, default_value = "200ms")]
        interval: String,
        /// How long the recovered primary must stay healthy before traffic returns.
        #[arg(long, default_value = "3s")]
        hold: String,
    },
    /// Print a shell completion script (e.g. `understudy completions bash >
    /// /etc/bash_completion.d/understudy`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command into a directory.
    Man {
        /// Write understudy.1 and understudy-COMMAND.1 pages here instead of printing.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    pub service: String,
    /// How to break the primary: force-down (safe: its checks count as failing), exec (your
    /// command, with --cmd), or block (nftables drop of its check port; needs root here).
    #[arg(long, default_value = "force-down", value_parser = ["force-down", "exec", "block"])]
    pub fault: String,
    /// With --fault exec: the command that causes the failure.
    #[arg(long)]
    pub cmd: Option<String>,
    /// With --fault exec: the command that undoes it.
    #[arg(long)]
    pub restore_cmd: Option<String>,
    /// URL the observing client requests (default: the service's DNS name, check port and path).
    #[arg(long)]
    pub url: Option<String>,
    /// DNS server the client resolves through (e.g. a caching resolver, 127.0.0.1:53);
    /// default: the system resolver.
    #[arg(long)]
    pub resolver: Option<std::net::SocketAddr>,
    /// Do not run an observing client; measure from the daemon's events only.
    #[arg(long)]
    pub no_client: bool,
    /// Accept any TLS certificate in the observing client.
    #[arg(long)]
    pub insecure: bool,
    /// Budget for the whole drill; the fault is undone when it runs out.
    #[arg(long, default_value = "10m")]
    pub timeout: String,
    /// If this command dies (killed, SSH session closed), the daemon undoes the fault this long
    /// after its last lease renewal (renewed every third of it).
    #[arg(long, default_value = "15s")]
    pub lease: String,
    /// Print the plan and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub out: Output,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Subcommand)]
pub enum IncidentCmd {
    /// Show one incident: a post-incident report with its timeline, measured times and the
    /// check results around the fault.
    Show {
        id: u64,
        /// text (for the terminal), markdown (a report to paste and complete), json.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// Close an open incident by hand.
    Close { id: u64 },
}

#[cfg(test)]
mod panic_tests {
    /// The child half of [`a_panic_in_a_task_ends_the_process`]: runs only when that test
    /// re-executes this test binary with `UNDERSTUDY_PANIC_CHILD` set.
    #[test]
    fn panic_hook_child() {
        if std::env::var_os("UNDERSTUDY_PANIC_CHILD").is_none() {
            return;
        }
        super::install_panic_hook();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            // tokio would catch this and keep running; the hook must not let it.
            let _ = tokio::spawn(async { panic!("core loop invariant broken") }).await;
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        });
        println!("STILL ALIVE");
    }

    #[test]
    fn a_panic_in_a_task_ends_the_process() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "cli::panic_tests::panic_hook_child", "--nocapture", "--test-threads=1"])
            .env("UNDERSTUDY_PANIC_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(super::PANIC_EXIT), "stdout: {stdout}\nstderr: {stderr}");
        assert!(!stdout.contains("STILL ALIVE"), "{stdout}");
        assert!(stderr.contains("core loop invariant broken"), "the panic message is printed: {stderr}");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum PgCmd {
    /// Bring an old primary (TARGET) back as a standby of the current primary: pg_rewind, then
    /// start it following the primary. Run it on TARGET's host as the data directory's owner.
    Rejoin {
        service: String,
        target_name: String,
        /// Config file.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// TARGET's data directory.
        #[arg(long, short = 'D')]
        pgdata: PathBuf,
        /// Where pg_ctl and pg_rewind are (default: PATH, then /usr/lib/postgresql/<newest>/bin).
        #[arg(long)]
        bindir: Option<PathBuf>,
        /// The login pg_rewind uses on the primary (default: the check's user).
        #[arg(long)]
        rewind_user: Option<String>,
        /// Leave the server stopped after the rewind.
        #[arg(long)]
        no_start: bool,
        /// How long to wait for it to stream from the primary.
        #[arg(long, default_value = "60s")]
        wait: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCmd {
    /// Per channel: pending, delivered, failed attempts, last error.
    Status,
    /// Send a test message through CHANNEL now and print the receiver's answer (exit 1 when
    /// the receiver did not accept it).
    Test { channel: String },
}

/// Run a parsed command line. Logging is already set up by `main` for `run`.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Cmd::Run { config, log_json } => return run_daemon(config, log_json).await,
        Cmd::CheckConfig { file, out } => return check_config(&file, out.json()),
        Cmd::Agent { config, check_config } => return crate::agent::main(&config, check_config).await,
        Cmd::Completions { shell } => return shell::completions(shell),
        Cmd::Man { dir } => return shell::man(dir.as_deref()),
        Cmd::Demo { interval, hold } => demo::run(&interval, &hold).await,
        Cmd::Drill(args) => return drill::run(args).await,
        Cmd::Pg { action } => pg(action).await,
        Cmd::Drills { id, out, markdown, target } => drill::list(&target, id, out.json(), markdown).await,
        Cmd::Status { service, out, target } => commands::status(&target, service.as_deref(), out.json()).await,
        Cmd::Events { since, follow, out, target } => commands::events(&target, since, follow, out.json()).await,
        Cmd::Incidents { action, out, target } => commands::incidents(&target, action, out.json()).await,
        Cmd::Notify { action, out, target } => commands::notify(&target, action, out.json()).await,
        Cmd::Switchover { service, target_name, target } => commands::switchover(&target, &service, &target_name).await,
        Cmd::Clear { service, target } => commands::clear(&target, &service).await,
        Cmd::Drain { service, target_name, target } => commands::drain(&target, &service, &target_name, true).await,
        Cmd::Enable { service, target_name, target } => commands::drain(&target, &service, &target_name, false).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn pg(action: PgCmd) -> anyhow::Result<()> {
    match action {
        PgCmd::Rejoin { service, target_name, config, pgdata, bindir, rewind_user, no_start, wait } => {
            let wait = config::parse_duration(&wait).map_err(|e| anyhow::anyhow!("--wait: {e}"))?;
            let (cfg, _) = config::load_guarded(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let opts = crate::pg::rejoin::Options { pgdata, bindir, rewind_user, no_start, wait };
            for line in crate::pg::rejoin::rejoin(&cfg, &service, &target_name, &opts).await.map_err(|e| anyhow::anyhow!(e))? {
                println!("{line}");
            }
            Ok(())
        }
    }
}

fn check_config(file: &std::path::Path, json: bool) -> ExitCode {
    match config::load_guarded(file) {
        Ok((cfg, warnings)) => {
            let targets: usize = cfg.services.iter().map(|s| s.targets.len()).sum();
            let rto = cfg.dns.as_ref().map(|d| crate::dns::config::client_rto_lines(d, &cfg.services)).unwrap_or_default();
            if json {
                let v = serde_json::json!({
                    "file": file.display().to_string(),
                    "ok": true,
                    "services": cfg.services.len(),
                    "targets": targets,
                    "dns": cfg.dns.as_ref().map(|d| serde_json::json!({
                        "zones": d.zones.len(),
                        "records": d.zones.iter().map(|z| z.records.len()).sum::<usize>(),
                        "client_rto": rto,
                    })),
                    "warnings": warnings.iter().map(|w| serde_json::json!({ "key": w.key, "message": w.message })).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return ExitCode::SUCCESS;
            }
            for w in &warnings {
                eprintln!("warning: {}: {}", w.key, w.message);
            }
            let dns = match &cfg.dns {
                Some(d) => {
                    let records: usize = d.zones.iter().map(|z| z.records.len()).sum();
                    format!(", dns: {} zones, {records} records", d.zones.len())
                }
                None => String::new(),
            };
            println!("{}: OK ({} services, {} targets{dns})", file.display(), cfg.services.len(), targets);
            for line in rto {
                println!("  dns {line}");
            }
            for line in crate::provider::config::client_rto_lines(&cfg.dns_providers, &cfg.services) {
                println!("  dns {line}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            if json {
                let v = serde_json::json!({
                    "file": file.display().to_string(),
                    "ok": false,
                    "errors": errors.0.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return ExitCode::from(2);
            }
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            ExitCode::from(2)
        }
    }
}

/// Exit status after a panic (the one Rust uses when `main` panics).
pub const PANIC_EXIT: i32 = 101;

/// Make a panic anywhere end the process with [`PANIC_EXIT`]. tokio catches a panic inside a
/// task and keeps the runtime going: the core loop or the DNS table's owner could die while the
/// API and the DNS workers keep serving stale answers. The default message (with location and
/// backtrace hint) is printed first, then the panic is logged, then the process exits at once
/// (`_exit`: no destructors or atexit handlers that could hang on a lock the panicking thread
/// holds).
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        tracing::error!("panic: {}; exiting with status {PANIC_EXIT} so the supervisor restarts the daemon", panic_summary(info));
        // SAFETY: _exit(2) ends the process immediately; nothing is shared with Rust afterwards.
        unsafe { libc::_exit(PANIC_EXIT) }
    }));
}

/// `message at file:line`, for the log line.
pub fn panic_summary(info: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let msg = payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str)).unwrap_or("(no message)");
    match info.location() {
        Some(l) => format!("{msg} at {}:{}", l.file(), l.line()),
        None => msg.to_string(),
    }
}

pub fn init_tracing(json: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("UNDERSTUDY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: journald, files and pipes get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

async fn run_daemon(path: PathBuf, log_json: bool) -> ExitCode {
    let (cfg, warnings) = match config::load_guarded(&path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    init_tracing(log_json || cfg.daemon.log_format == config::LogFormat::Json);
    for w in &warnings {
        tracing::warn!("{}: {}", w.key, w.message);
    }
    let handle = match run::start(cfg).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(api = %handle.api_addr, "understudy is running");
    signals(&handle, &path).await;
    handle.shutdown().await;
    ExitCode::SUCCESS
}

/// Wait for SIGTERM/SIGINT (returns) while handling SIGHUP (reload). A second SIGTERM/SIGINT
/// during shutdown exits at once.
async fn signals(handle: &run::Running, path: &std::path::Path) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(handle, path).await,
        }
    }
    tracing::info!("shutting down (send the signal again to exit at once)");
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(1);
    });
}

async fn reload(handle: &run::Running, path: &std::path::Path) {
    tracing::info!("SIGHUP: reloading {}", path.display());
    let outcome = match config::load_guarded(path) {
        Ok((cfg, warnings)) => {
            for w in &warnings {
                tracing::warn!("{}: {}", w.key, w.message);
            }
            handle.shared.reload(cfg).await.map_err(|e| e.to_string())
        }
        Err(errors) => Err(errors.to_string()),
    };
    if let Err(errors) = outcome {
        tracing::error!("reload refused, the running config stays in force:\n{errors}");
        handle.shared.reject_config(errors).await;
    }
}
