//! AWS Signature Version 4, for the Route 53 API (written with `hmac`/`sha2` instead of
//! pulling in the AWS SDK and its own HTTP and crypto stacks).
//!
//! [`sign`] returns the headers to add to a request: `x-amz-date`, `Authorization` and, for
//! temporary credentials, `x-amz-security-token`. It signs `host` and those headers only, which
//! is what the Route 53 API needs. Pure: the time is a parameter.

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// RFC 3986 encoding as SigV4 wants it: everything but unreserved characters.
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `(YYYYMMDD'T'HHMMSS'Z', YYYYMMDD)` for `unix` seconds.
pub fn amz_date(unix: u64) -> (String, String) {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Days to civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let date = format!("{y:04}{m:02}{d:02}");
    (format!("{date}T{:02}{:02}{:02}Z", secs / 3600, secs / 60 % 60, secs % 60), date)
}

/// The credentials a request is signed with.
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
}

/// The headers that sign `method url` with `payload` for `service` in `region` at `unix`.
pub fn sign(creds: &Credentials<'_>, region: &str, service: &str, unix: u64, method: &str, url: &reqwest::Url, payload: &[u8]) -> Vec<(&'static str, String)> {
    let (stamp, date) = amz_date(unix);
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let path = if url.path().is_empty() { "/" } else { url.path() };
    let mut query: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (uri_encode(&k), uri_encode(&v))).collect();
    query.sort();
    let query = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let mut headers = vec![("host", host), ("x-amz-date", stamp.clone())];
    if let Some(t) = creds.session_token {
        headers.push(("x-amz-security-token", t.to_string()));
    }
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{}\n", v.trim())).collect();
    let signed_headers = headers.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
    let canonical = format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{}", hex(&Sha256::digest(payload)));
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
    let k_date = hmac(format!("AWS4{}", creds.secret_access_key).as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex(&hmac(&k_signing, to_sign.as_bytes()));
    let mut out = vec![
        ("x-amz-date", stamp),
        ("authorization", format!("AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}", creds.access_key_id)),
    ];
    if let Some(t) = creds.session_token {
        out.push(("x-amz-security-token", t.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(amz_date(0), ("19700101T000000Z".into(), "19700101".into()));
        assert_eq!(amz_date(1_440_938_160), ("20150830T123600Z".into(), "20150830".into()));
        assert_eq!(amz_date(951_782_400), ("20000229T000000Z".into(), "20000229".into()));
    }

    /// AWS's published SigV4 test suite, case `get-vanilla` (and `get-vanilla-query-order-key`'s
    /// sorting rule): the example credentials, 2015-08-30T12:36:00Z, us-east-1, service "service".
    #[test]
    fn the_aws_test_suite_get_vanilla() {
        let creds = Credentials { access_key_id: "AKIDEXAMPLE", secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", session_token: None };
        let url = reqwest::Url::parse("https://example.amazonaws.com/").unwrap();
        let h = sign(&creds, "us-east-1", "service", 1_440_938_160, "GET", &url, b"");
        assert_eq!(h[0], ("x-amz-date", "20150830T123600Z".to_string()));
        assert_eq!(
            h[1].1,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }
}
