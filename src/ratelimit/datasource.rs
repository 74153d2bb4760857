//! The client of `-datasource.url`, as vmgateway's (vmalert's) datasource client behaves: instant queries
//! to `<url>/api/v1/query` (unless `-remoteRead.disablePathAppend`), with `step` from
//! `-datasource.queryStep`, `round_digits`, Basic, bearer or OAuth2 client-credentials auth,
//! `-datasource.headers`, and `-datasource.tls*`. Every query also carries `nocache=1`: without it
//! VictoriaMetrics answers instant queries from 30 s in the past, and the limits would lag by that.
//!
//! Files (`-datasource.bearerTokenFile`, password and secret files) are read before each refresh, so
//! rotated credentials are picked up. OAuth2 tokens are fetched once and reused until ten seconds
//! before they expire.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::Request;
use http_body_util::Full;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use tokio::sync::Mutex;

use crate::flags::{DatasourceAuth, DatasourceConfig, Secret};
use crate::outbound::{redacted, HttpClient};

/// The largest answer read: a usage query returns one series per tenant and replica.
const MAX_ANSWER: usize = 64 << 20;

/// One series of an instant query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// The datasource and how to reach it.
pub struct Datasource {
    client: HttpClient,
    query_url: String,
    /// For logs: the URL unless `-datasource.showURL` is off, then a placeholder.
    pub shown: String,
    auth: DatasourceAuth,
    headers: Vec<(HeaderName, HeaderValue)>,
    step: Option<Duration>,
    round_digits: i64,
    oauth_token: Mutex<Option<(String, Instant)>>,
}

impl Datasource {
    /// A client for `config` (whose `url` is set).
    pub fn new(config: &DatasourceConfig) -> Result<Datasource, String> {
        let url = config.url.clone().ok_or("-datasource.url is not set")?;
        let query_url = if config.disable_path_append {
            url.clone()
        } else {
            format!("{url}/api/v1/query")
        };
        let idle = if config.disable_keep_alive {
            0
        } else {
            config.max_idle_connections.max(1)
        };
        let client = HttpClient::new(&config.tls, idle, Duration::from_secs(5))
            .map_err(|e| format!("-datasource.tls*: {e}"))?;
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            headers.push((
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| format!("-datasource.headers: {e}"))?,
                HeaderValue::from_str(value).map_err(|e| format!("-datasource.headers: {e}"))?,
            ));
        }
        Ok(Datasource {
            client,
            query_url,
            shown: if config.show_url {
                redacted(&url)
            } else {
                "-datasource.url (hidden; -datasource.showURL shows it)".to_string()
            },
            auth: config.auth.clone(),
            headers,
            step: config.query_step,
            round_digits: config.round_digits,
            oauth_token: Mutex::new(None),
        })
    }

    /// Runs the instant query `promql` now, within `timeout`.
    pub async fn query(&self, promql: &str, timeout: Duration) -> Result<Vec<Sample>, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut url = format!(
            "{}?query={}&time={now:.3}&nocache=1",
            self.query_url,
            utf8_percent_encode(promql, NON_ALPHANUMERIC)
        );
        if let Some(step) = self.step {
            url.push_str(&format!("&step={}s", step.as_secs().max(1)));
        }
        if self.round_digits != 0 {
            url.push_str(&format!("&round_digits={}", self.round_digits));
        }
        let mut request = Request::get(&url)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("tenantgate/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if let Some(authorization) = self.authorization(timeout).await? {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let answer = self.client.send(request, timeout, MAX_ANSWER).await?;
        if !answer.status.is_success() {
            return Err(format!(
                "answered HTTP {}: {}",
                answer.status.as_u16(),
                String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
            ));
        }
        parse_vector(&answer.body)
    }

    /// The `Authorization` header value, if the datasource needs one.
    async fn authorization(&self, timeout: Duration) -> Result<Option<String>, String> {
        Ok(match &self.auth {
            DatasourceAuth::None => None,
            DatasourceAuth::Basic { username, password } => {
                let user = read_secret(username)?;
                let pass = password
                    .as_ref()
                    .map(read_secret)
                    .transpose()?
                    .unwrap_or_default();
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                Some(format!("Basic {token}"))
            }
            DatasourceAuth::Bearer(token) => Some(format!("Bearer {}", read_secret(token)?)),
            DatasourceAuth::OAuth2 { .. } => {
                Some(format!("Bearer {}", self.oauth2(timeout).await?))
            }
        })
    }

    /// An OAuth2 access token by client credentials, cached until shortly before it expires.
    async fn oauth2(&self, timeout: Duration) -> Result<String, String> {
        let DatasourceAuth::OAuth2 {
            client_id,
            client_secret,
            token_url,
            scopes,
            endpoint_params,
        } = &self.auth
        else {
            return Err("not OAuth2".into());
        };
        let mut cached = self.oauth_token.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let secret = read_secret(client_secret)?;
        let form = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let mut body = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            form(client_id),
            form(&secret)
        );
        if !scopes.is_empty() {
            body.push_str(&format!("&scope={}", form(&scopes.join(" "))));
        }
        for (k, v) in endpoint_params {
            body.push_str(&format!("&{}={}", form(k), form(v)));
        }
        let request = Request::post(token_url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let answer = self
            .client
            .send(request, timeout, 1 << 20)
            .await
            .map_err(|e| format!("OAuth2 token from {}: {e}", redacted(token_url)))?;
        if !answer.status.is_success() {
            return Err(format!(
                "OAuth2 token from {}: HTTP {}",
                redacted(token_url),
                answer.status.as_u16()
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("OAuth2 token answer is not JSON: {e}"))?;
        let token = v["access_token"]
            .as_str()
            .ok_or("OAuth2 token answer has no access_token")?
            .to_string();
        let lifetime = v["expires_in"].as_u64().unwrap_or(300);
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(10).max(1));
        *cached = Some((token.clone(), until));
        Ok(token)
    }
}

fn read_secret(secret: &Secret) -> Result<String, String> {
    match secret {
        Secret::Inline(s) => Ok(s.clone()),
        Secret::File(path) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
    }
}

/// The series of a Prometheus API instant-vector answer.
pub fn parse_vector(body: &[u8]) -> Result<Vec<Sample>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "query failed: {}",
            v["error"].as_str().unwrap_or("no error message")
        ));
    }
    let Some(result) = v["data"]["result"].as_array() else {
        return Err("answer has no data.result".to_string());
    };
    let mut samples = Vec::with_capacity(result.len());
    for series in result {
        let labels = series["metric"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let value = series["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or("a series has no value")?;
        if value.is_finite() {
            samples.push(Sample { labels, value });
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_vectors_parse_and_failures_say_why() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"accountID":"1","projectID":"5"},"value":[1700000000,"42"]},
            {"metric":{},"value":[1700000000,"NaN"]}]}}"#;
        let s = parse_vector(body).unwrap();
        assert_eq!(s.len(), 1, "NaN is no usage");
        assert_eq!(s[0].labels["accountID"], "1");
        assert_eq!(s[0].value, 42.0);
        let e = parse_vector(br#"{"status":"error","error":"bad query"}"#).unwrap_err();
        assert!(e.contains("bad query"));
        assert!(parse_vector(b"<html>").is_err());
    }
}
