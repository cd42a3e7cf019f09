//! CLI commands that talk to a running daemon: send the request, print the answer.

use std::time::Duration;

use anyhow::{Result, bail};

use super::{IncidentCmd, NotifyCmd, ReportFormat, Target, render};
use crate::api::client::Client;
use crate::api::wire;

pub async fn status(t: &Target, service: Option<&str>, json: bool) -> Result<()> {
    let c = Client::new(&t.endpoint())?;
    let services: Vec<wire::Service> = match service {
        Some(s) => vec![c.get(&format!("/api/v1/services/{s}")).await?],
        None => c.get("/api/v1/services").await?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&services)?);
    } else {
        // A daemon older than cluster mode has no /api/v1/cluster: say nothing about it.
        if let Ok(cluster) = c.get::<serde_json::Value>("/api/v1/cluster").await {
            print!("{}", render::cluster(&cluster));
        }
        print!("{}", render::services(&services, render::Paint::stdout()));
    }
    Ok(())
}

pub async fn events(t: &Target, mut since: u64, follow: bool, json: bool) -> Result<()> {
    let c = Client::new(&t.endpoint())?;
    loop {
        let page: wire::Events = c.get(&format!("/api/v1/events?since={since}&limit=1000")).await?;
        for e in &page.events {
            if json {
                println!("{}", serde_json::to_string(e)?);
            } else {
                println!("{}", render::event(e));
            }
        }
        let more = page.events.len() == 1000;
        since = page.next.max(since);
        if !follow && !more {
            return Ok(());
        }
        if !more {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

pub async fn incidents(t: &Target, action: Option<IncidentCmd>, json: bool) -> Result<()> {
    let c = Client::new(&t.endpoint())?;
    match action {
        None => {
            let list: Vec<wire::Incident> = c.get("/api/v1/incidents").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", render::incidents(&list, render::Paint::stdout()));
            }
        }
        Some(IncidentCmd::Show { id, format }) => {
            let i: wire::Incident = c.get(&format!("/api/v1/incidents/{id}")).await?;
            match (json, format) {
                (true, _) | (_, ReportFormat::Json) => println!("{}", serde_json::to_string_pretty(&i)?),
                (_, ReportFormat::Markdown) => print!("{}", render::incident_markdown(&i)),
                (_, ReportFormat::Text) => print!("{}", render::incident(&i, render::Paint::stdout())),
            }
        }
        Some(IncidentCmd::Close { id }) => {
            let i: wire::Incident = c.post(&format!("/api/v1/incidents/{id}/close"), None).await?;
            println!("incident #{} closed", i.id);
        }
    }
    Ok(())
}

pub async fn switchover(t: &Target, service: &str, target: &str) -> Result<()> {
    let c = Client::new(&t.endpoint())?;
    let s: wire::Service = c.post(&format!("/api/v1/services/{service}/switchover"), Some(serde_json::json!({ "target": target }))).await?;
    println!("{service}: pinned to {target}; active is now {} (epoch {})", s.active.as_deref().unwrap_or("(none)"), s.epoch);
    Ok(())
}

pub async fn clear(t: &Target, service: &str) -> Result<()> {
    let c = Client::new(&t.endpoint())?;
    let s: wire::Service = c.post(&format!("/api/v1/services/{service}/clear"), None).await?;
    println!("{service}: pin cleared; active is {} (epoch {})", s.active.as_deref().unwrap_or("(none)"), s.epoch);
    Ok(())
}

pub async fn drain(t: &Target, service: &str, target: &str, drain: bool) -> Result<()> {
    let c = Client::new(&t.endpoint())?;
    let verb = if drain { "drain" } else { "enable" };
    let s: wire::Service = c.post(&format!("/api/v1/services/{service}/targets/{target}/{verb}"), None).await?;
    let done = if drain { "drained" } else { "enabled" };
    println!("{service}/{target} {done}; active is {} (epoch {})", s.active.as_deref().unwrap_or("(none)"), s.epoch);
    Ok(())
}

pub async fn notify(t: &Target, action: NotifyCmd, json: bool) -> Result<()> {
    let c = Client::new(&t.endpoint())?;
    match action {
        NotifyCmd::Status => {
            let s: wire::NotifyStatus = c.get("/api/v1/notify").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", render::notify_status(&s));
            }
        }
        NotifyCmd::Test { channel } => {
            let r: wire::NotifyTestResult = c.post(&format!("/api/v1/notify/{channel}/test"), None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if r.ok {
                println!("{channel}: delivered; the receiver answered: {}", r.answer);
            }
            if !r.ok {
                bail!("{channel}: not delivered: {}", r.answer);
            }
        }
    }
    Ok(())
}
