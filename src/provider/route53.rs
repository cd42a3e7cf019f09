//! Amazon Route 53: `ChangeResourceRecordSets` with UPSERT, signed with SigV4, then `GetChange`
//! until the change is INSYNC (served by every Route 53 nameserver).
//!
//! One change batch per apply: UPSERT of the address type the target has, DELETE of the other
//! type when the name holds one (Route 53 deletes only with the exact current values, so they
//! are listed first), applied atomically by Route 53. `check` lists the name's record sets
//! (`ListResourceRecordSets`). The XML is read with a few exact-tag lookups on the documented
//! response shapes, not a general XML parser. Credentials never appear in messages.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::{AwsCredentials, ProviderConfig, ProviderKind};
use super::sigv4;
use super::{Backend, BoxFuture, ProviderError, Want, clip, http_error, send_http};

pub struct Route53 {
    endpoint: String,
    zone_id: String,
    region: String,
    credentials: AwsCredentials,
    propagation_timeout: Duration,
    client: reqwest::Client,
}

/// One record set as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSet {
    pub name: String,
    pub rtype: String,
    pub ttl: u32,
    pub values: Vec<String>,
}

/// The text of the first `<tag>...</tag>` in `xml`.
fn tag<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(&xml[start..end])
}

/// Every `<tag>...</tag>` block in `xml`.
fn blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(s) = rest.find(&open) {
        let after = &rest[s + open.len()..];
        let Some(e) = after.find(&close) else { break };
        out.push(&after[..e]);
        rest = &after[e + close.len()..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Route 53's `<Error><Code>..</Code><Message>..</Message></Error>`, or the body itself.
fn error_message(body: &str) -> String {
    match (tag(body, "Code"), tag(body, "Message")) {
        (Some(c), Some(m)) => format!("{c}: {}", unescape(m)),
        (Some(c), None) => c.to_string(),
        _ => clip(body, 300),
    }
}

/// Parse a `ListResourceRecordSetsResponse`.
pub fn parse_record_sets(xml: &str) -> Vec<RecordSet> {
    blocks(xml, "ResourceRecordSet")
        .into_iter()
        .map(|b| RecordSet {
            name: tag(b, "Name").map(unescape).unwrap_or_default(),
            rtype: tag(b, "Type").unwrap_or_default().to_string(),
            ttl: tag(b, "TTL").and_then(|t| t.trim().parse().ok()).unwrap_or(0),
            values: blocks(b, "Value").into_iter().map(|v| unescape(v.trim())).collect(),
        })
        .collect()
}

fn change_xml(action: &str, name: &str, rtype: &str, ttl: u32, values: &[String]) -> String {
    let records: String = values.iter().map(|v| format!("<ResourceRecord><Value>{}</Value></ResourceRecord>", escape(v))).collect();
    format!(
        "<Change><Action>{action}</Action><ResourceRecordSet><Name>{}</Name><Type>{rtype}</Type><TTL>{ttl}</TTL><ResourceRecords>{records}</ResourceRecords></ResourceRecordSet></Change>",
        escape(name)
    )
}

/// The change batch that makes `want` true, given what each name holds now; `None` when
/// nothing needs to change.
pub fn change_batch(want: &[Want], current: &[RecordSet]) -> Option<String> {
    let mut changes = String::new();
    for w in want {
        let name = w.name.to_string();
        let want_type = match w.address {
            Some(IpAddr::V4(_)) => Some("A"),
            Some(IpAddr::V6(_)) => Some("AAAA"),
            None => None,
        };
        if let (Some(t), Some(a)) = (want_type, w.address) {
            let holds = current.iter().any(|r| r.name.eq_ignore_ascii_case(&name) && r.rtype == t && r.ttl == w.ttl && r.values == [a.to_string()]);
            if !holds {
                changes.push_str(&change_xml("UPSERT", &name, t, w.ttl, &[a.to_string()]));
            }
        }
        for r in current.iter().filter(|r| r.name.eq_ignore_ascii_case(&name) && (r.rtype == "A" || r.rtype == "AAAA") && Some(r.rtype.as_str()) != want_type) {
            changes.push_str(&change_xml("DELETE", &r.name, &r.rtype, r.ttl, &r.values));
        }
    }
    (!changes.is_empty()).then(|| {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ChangeBatch><Comment>understudy failover</Comment><Changes>{changes}</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
        )
    })
}

impl Route53 {
    pub fn new(cfg: &ProviderConfig) -> Result<Route53, String> {
        let ProviderKind::Route53 { hosted_zone_id, credentials, region, endpoint, propagation_timeout } = &cfg.kind else {
            unreachable!("built for route53 providers only")
        };
        Ok(Route53 {
            endpoint: endpoint.clone(),
            zone_id: hosted_zone_id.clone(),
            region: region.clone(),
            credentials: credentials.clone(),
            propagation_timeout: *propagation_timeout,
            client: crate::notify::http_client(cfg.timeout)?,
        })
    }

    /// A signed request (signed again for each attempt: the signature carries the time).
    async fn call(&self, what: &str, method: reqwest::Method, url: &str, body: Option<String>) -> Result<String, ProviderError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| ProviderError::fatal(format!("{what}: bad URL: {e}")))?;
        let payload = body.clone().unwrap_or_default();
        let creds = sigv4::Credentials {
            access_key_id: &self.credentials.access_key_id,
            secret_access_key: self.credentials.secret_access_key.expose(),
            session_token: self.credentials.session_token.as_ref().map(|s| s.expose()),
        };
        let a = send_http(what, || {
            let unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let mut req = self.client.request(method.clone(), parsed.clone());
            for (k, v) in sigv4::sign(&creds, &self.region, "route53", unix, method.as_str(), &parsed, payload.as_bytes()) {
                req = req.header(k, v);
            }
            if body.is_some() {
                req = req.header(reqwest::header::CONTENT_TYPE, "application/xml").body(payload.clone());
            }
            req
        })
        .await?;
        if (200..300).contains(&a.status) { Ok(a.body) } else { Err(http_error(what, &a, &error_message(&a.body))) }
    }

    async fn list(&self, want: &[Want]) -> Result<Vec<RecordSet>, ProviderError> {
        let mut out = Vec::new();
        for w in want {
            let name = w.name.to_string();
            let mut url = reqwest::Url::parse(&format!("{}/2013-04-01/hostedzone/{}/rrset", self.endpoint, self.zone_id))
                .map_err(|e| ProviderError::fatal(format!("Route 53: bad URL: {e}")))?;
            url.query_pairs_mut().append_pair("name", &name).append_pair("maxitems", "10");
            let url = url.to_string();
            let xml = self.call("Route 53 ListResourceRecordSets", reqwest::Method::GET, &url, None).await?;
            out.extend(parse_record_sets(&xml).into_iter().filter(|r| r.name.eq_ignore_ascii_case(&name) && (r.rtype == "A" || r.rtype == "AAAA")));
        }
        Ok(out)
    }

    async fn change(&self, want: &[Want]) -> Result<String, ProviderError> {
        let current = self.list(want).await?;
        let Some(batch) = change_batch(want, &current) else { return Ok("Route 53 already holds it; no change sent".into()) };
        let url = format!("{}/2013-04-01/hostedzone/{}/rrset", self.endpoint, self.zone_id);
        let xml = self.call("Route 53 ChangeResourceRecordSets", reqwest::Method::POST, &url, Some(batch)).await?;
        let id = tag(&xml, "Id").map(|i| i.trim().trim_start_matches("/change/").to_string()).ok_or_else(|| ProviderError::retry(format!("Route 53 answered without a change id: {}", clip(&xml, 200))))?;
        let mut status = tag(&xml, "Status").unwrap_or("PENDING").to_string();
        let started = Instant::now();
        let mut wait = Duration::from_millis(250);
        while status != "INSYNC" {
            if started.elapsed() > self.propagation_timeout {
                return Err(ProviderError::retry(format!(
                    "Route 53 change {id} is still {status} after {}",
                    humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            let url = format!("{}/2013-04-01/change/{id}", self.endpoint);
            let xml = self.call("Route 53 GetChange", reqwest::Method::GET, &url, None).await?;
            status = tag(&xml, "Status").unwrap_or("PENDING").to_string();
        }
        Ok(format!("Route 53 change {id} INSYNC after {} ms", started.elapsed().as_millis()))
    }

    async fn read_back(&self, want: &[Want]) -> Result<String, ProviderError> {
        let current = self.list(want).await?;
        for w in want {
            let name = w.name.to_string();
            let got: Vec<String> = current.iter().filter(|r| r.name.eq_ignore_ascii_case(&name)).flat_map(|r| r.values.clone()).collect();
            let ok = match w.address {
                Some(a) => got.len() == 1 && got[0].parse::<IpAddr>().ok() == Some(a),
                None => got.is_empty(),
            };
            if !ok {
                let wanted = w.address.map(|a| a.to_string()).unwrap_or_else(|| "nothing".into());
                return Err(ProviderError::retry(format!("Route 53 holds {name} as {got:?}, not {wanted}")));
            }
        }
        let what = want.first().and_then(|w| w.address).map(|a| a.to_string()).unwrap_or_else(|| "nothing".into());
        Ok(format!("Route 53 holds {what}"))
    }
}

impl Backend for Route53 {
    fn set<'a>(&'a self, want: &'a [Want]) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(self.change(want))
    }

    fn check<'a>(&'a self, want: &'a [Want]) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(self.read_back(want))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::name::Name;

    const LIST: &str = r#"<?xml version="1.0"?>
<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ResourceRecordSets>
<ResourceRecordSet><Name>www.example.test.</Name><Type>AAAA</Type><TTL>30</TTL><ResourceRecords><ResourceRecord><Value>2001:db8::2</Value></ResourceRecord></ResourceRecords></ResourceRecordSet>
<ResourceRecordSet><Name>www.example.test.</Name><Type>TXT</Type><TTL>300</TTL><ResourceRecords><ResourceRecord><Value>"hi"</Value></ResourceRecord></ResourceRecords></ResourceRecordSet>
</ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>10</MaxItems></ListResourceRecordSetsResponse>"#;

    #[test]
    fn a_family_change_upserts_one_type_and_deletes_the_other_exactly() {
        let current = parse_record_sets(LIST);
        assert_eq!(current[0], RecordSet { name: "www.example.test.".into(), rtype: "AAAA".into(), ttl: 30, values: vec!["2001:db8::2".into()] });
        let w = Want { name: Name::parse_absolute("www.example.test").unwrap(), address: Some("198.18.0.3".parse().unwrap()), ttl: 30 };
        let batch = change_batch(std::slice::from_ref(&w), &current).unwrap();
        assert!(batch.contains("<Action>UPSERT</Action><ResourceRecordSet><Name>www.example.test.</Name><Type>A</Type><TTL>30</TTL><ResourceRecords><ResourceRecord><Value>198.18.0.3</Value>"), "{batch}");
        assert!(batch.contains("<Action>DELETE</Action><ResourceRecordSet><Name>www.example.test.</Name><Type>AAAA</Type><TTL>30</TTL><ResourceRecords><ResourceRecord><Value>2001:db8::2</Value>"), "{batch}");
        assert!(!batch.contains("TXT"));
        let holding = [RecordSet { name: "www.example.test.".into(), rtype: "A".into(), ttl: 30, values: vec!["198.18.0.3".into()] }];
        assert_eq!(change_batch(&[w], &holding), None, "already there: nothing to send");
        assert_eq!(error_message("<ErrorResponse><Error><Type>Sender</Type><Code>NoSuchHostedZone</Code><Message>No hosted zone &amp; such</Message></Error></ErrorResponse>"), "NoSuchHostedZone: No hosted zone & such");
    }
}
