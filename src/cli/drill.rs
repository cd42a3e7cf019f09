//! `understudy drill` and `understudy drills`: run a drill against a daemon and print its
//! progress and report; list past drills. Exit code 0 when the drill met every target, 1
//! otherwise (including when it could not run), 2 for bad arguments.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio_util::sync::CancellationToken;

use super::{DrillArgs, Target};
use crate::api::client::Client;
use crate::api::wire;
use crate::drill::observer::{ObserveSpec, Resolver};
use crate::drill::{Fault, Report, Summary, report, run as protocol};

fn fault(args: &DrillArgs) -> Result<Fault> {
    Ok(match args.fault.as_str() {
        "force-down" => Fault::ForceDown,
        "block" => Fault::Block,
        "exec" => Fault::Exec {
            cmd: args.cmd.clone().context("--fault exec needs --cmd '<command that breaks the primary>'")?,
            restore_cmd: args.restore_cmd.clone(),
        },
        other => bail!("unknown fault {other}"),
    })
}

/// The observing client: `--url`, or the service's DNS name with its check port and path.
fn observe(args: &DrillArgs, svc: &wire::Service) -> Result<Option<ObserveSpec>> {
    if args.no_client {
        return Ok(None);
    }
    let resolver = args.resolver.map(Resolver::Server).unwrap_or(Resolver::System);
    let base = |scheme: &str, host: String, port: u16, path: String| ObserveSpec {
        scheme: scheme.into(),
        host,
        port,
        path,
        resolver: resolver.clone(),
        every: Duration::from_millis(50),
        timeout: Duration::from_secs(1),
        tls_verify: !args.insecure,
    };
    if let Some(u) = &args.url {
        let url = reqwest::Url::parse(u).with_context(|| format!("--url {u}"))?;
        let host = url.host_str().context("--url needs a host")?.to_string();
        let port = url.port_or_known_default().context("--url needs a port")?;
        return Ok(Some(base(url.scheme(), host, port, url.path().to_string())));
    }
    let Some(record) = svc.dns.first() else { return Ok(None) };
    let scheme = if svc.check.kind == "https" { "https" } else { "http" };
    let (Some(port), Some(path)) = (svc.check.port, svc.check.path.clone()) else {
        return Ok(None); // tcp/exec checks: nothing to request; give --url
    };
    Ok(Some(base(scheme, record.name.trim_end_matches('.').to_string(), port, path)))
}

pub async fn run(args: DrillArgs) -> ExitCode {
    match drill(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn drill(args: DrillArgs) -> Result<bool> {
    let client = Client::new(&args.target.endpoint())?;
    let timeout = crate::config::parse_duration(&args.timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let lease = crate::config::parse_duration(&args.lease).map_err(|e| anyhow::anyhow!("--lease: {e}"))?;
    if lease < std::time::Duration::from_secs(1) || lease > crate::drill::LeaseRequest::MAX {
        anyhow::bail!("--lease: expected a duration from 1s to {}s", crate::drill::LeaseRequest::MAX.as_secs());
    }
    let svc: wire::Service = client.get(&format!("/api/v1/services/{}", args.service)).await?;
    let opts = protocol::Options {
        service: args.service.clone(),
        fault: fault(&args)?,
        observe: observe(&args, &svc)?,
        timeout,
        by: format!("cli ({})", std::env::var("USER").unwrap_or_else(|_| "unknown user".into())),
        lease,
    };
    if args.dry_run {
        for line in protocol::plan(&client, &opts).await? {
            println!("{line}");
        }
        println!("(dry run: nothing was changed)");
        return Ok(true);
    }
    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: undoing the fault, then reporting");
            on_ctrl_c.cancel();
        }
    });
    let started = std::time::Instant::now();
    let quiet = args.out.json();
    let progress = move |line: &str| {
        if !quiet {
            println!("[{:>7.2}s] {line}", started.elapsed().as_secs_f64());
        }
    };
    let report: Report = protocol::run(&client, &opts, &progress, cancel).await?;
    if args.out.json() {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!();
        print!("{}", report::text(&report));
        println!("report stored by the daemon: data_dir/drills/drill-{}.md (`understudy drills {}`)", report.id, report.id);
    }
    Ok(report.ok)
}

pub async fn list(t: &Target, id: Option<u64>, json: bool, markdown: bool) -> Result<()> {
    let client = Client::new(&t.endpoint())?;
    match id {
        None => {
            let list: Vec<Summary> = client.get("/api/v1/drills").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", report::list(&list));
            }
        }
        Some(id) => {
            let r: Report = client.get(&format!("/api/v1/drills/{id}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if markdown {
                print!("{}", report::markdown(&r));
            } else {
                print!("{}", report::text(&r));
            }
        }
    }
    Ok(())
}
