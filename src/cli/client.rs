//! The CLI's side of the API: find the daemon, send the request, print the answer.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;

use super::{IncidentCmd, NotifyCmd, ReportFormat, Target, render};
use crate::api::wire;

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(t: &Target) -> Result<Client> {
        crate::probe::http::install_crypto_provider();
        let mut base = None;
        let mut token_file = t.token_file.clone();
        if let Some(path) = &t.config {
            let (cfg, _) = crate::config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            base = Some(format!("http://{}", cfg.daemon.api));
            token_file = token_file.or(cfg.daemon.api_token_file);
        }
        let base = t.api.clone().or(base).unwrap_or_else(|| format!("http://{}", crate::config::raw::default_api()));
        let base = if base.contains("://") { base } else { format!("http://{base}") };
        let token = match token_file {
            Some(f) => Some(std::fs::read_to_string(&f).with_context(|| format!("cannot read token file {}", f.display()))?.trim().to_string()),
            None => None,
        };
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().context("cannot build HTTP client")?;
        Ok(Client { base: base.trim_end_matches('/').to_string(), token, http })
    }

    async fn send<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.with_context(|| format!("cannot reach the understudy API at {} (is the daemon running?)", self.base))?;
        let status = resp.status();
        let body = resp.bytes().await.context("reading the API response")?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<wire::ErrorBody>(&body).map(|e| e.error).unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            if status == StatusCode::UNAUTHORIZED {
                bail!("{msg} (pass --token-file, or -c with the daemon's config)");
            }
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        serde_json::from_slice(&body).with_context(|| format!("unexpected API response from {}", self.base))
    }

    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn post<T: serde::de::DeserializeOwned>(&self, path: &str, body: Option<serde_json::Value>) -> Result<T> {
        let req = self.http.post(format!("{}{path}", self.base));
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        self.send(req).await
    }
}

pub async fn status(t: &Target, service: Option<&str>, json: bool) -> Result<()> {
    let c = Client::new(t)?;
    let services: Vec<wire::Service> = match service {
        Some(s) => vec![c.get(&format!("/api/v1/services/{s}")).await?],
        None => c.get("/api/v1/services").await?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&services)?);
    } else {
        print!("{}", render::services(&services));
    }
    Ok(())
}

pub async fn events(t: &Target, mut since: u64, follow: bool, json: bool) -> Result<()> {
    let c = Client::new(t)?;
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
    let c = Client::new(t)?;
    match action {
        None => {
            let list: Vec<wire::Incident> = c.get("/api/v1/incidents").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", render::incidents(&list));
            }
        }
        Some(IncidentCmd::Show { id, format }) => {
            let i: wire::Incident = c.get(&format!("/api/v1/incidents/{id}")).await?;
            match (json, format) {
                (true, _) | (_, ReportFormat::Json) => println!("{}", serde_json::to_string_pretty(&i)?),
                (_, ReportFormat::Markdown) => print!("{}", render::incident_markdown(&i)),
                (_, ReportFormat::Text) => print!("{}", render::incident(&i)),
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
    let c = Client::new(t)?;
    let s: wire::Service = c.post(&format!("/api/v1/services/{service}/switchover"), Some(serde_json::json!({ "target": target }))).await?;
    println!("{service}: pinned to {target}; active is now {} (epoch {})", s.active.as_deref().unwrap_or("(none)"), s.epoch);
    Ok(())
}

pub async fn clear(t: &Target, service: &str) -> Result<()> {
    let c = Client::new(t)?;
    let s: wire::Service = c.post(&format!("/api/v1/services/{service}/clear"), None).await?;
    println!("{service}: pin cleared; active is {} (epoch {})", s.active.as_deref().unwrap_or("(none)"), s.epoch);
    Ok(())
}

pub async fn drain(t: &Target, service: &str, target: &str, drain: bool) -> Result<()> {
    let c = Client::new(t)?;
    let verb = if drain { "drain" } else { "enable" };
    let s: wire::Service = c.post(&format!("/api/v1/services/{service}/targets/{target}/{verb}"), None).await?;
    let done = if drain { "drained" } else { "enabled" };
    println!("{service}/{target} {done}; active is {} (epoch {})", s.active.as_deref().unwrap_or("(none)"), s.epoch);
    Ok(())
}

pub async fn notify(t: &Target, action: NotifyCmd, json: bool) -> Result<()> {
    let c = Client::new(t)?;
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
