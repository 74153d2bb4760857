//! Opaque access tokens: RFC 7662 token introspection. A bearer token that is not a JWT is sent to the
//! identity provider's introspection endpoint, which says whether it is active and what it carries; the
//! answer's claims then go through exactly the checks and grants a JWT payload does
//! (`jwt::check_claims`).
//!
//! The endpoint is `-auth.introspectionEndpoint`, or the `introspection_endpoint` of the first
//! `-auth.oidcDiscoveryEndpoints` document (looked up when first needed, again after a failure at most
//! every [`DISCOVERY_RETRY`]). tenantgate authenticates as a confidential client with
//! `client_secret_basic` (`-auth.introspectionClientID`, `-auth.introspectionClientSecretFile`, re-read on
//! SIGHUP). Calls are bounded: at most [`MAX_CALLS`] at once, and a request waits at most
//! [`CALL_WAIT`] for a turn, so a flood of made-up tokens costs the provider little; answers are cached by
//! the caller (`auth.rs`), keyed by a hash of the token, and one call serves every concurrent request
//! with the same token.
//!
//! Failures are never the client's fault: the provider down, slow, answering 5xx, bad JSON, or refusing
//! tenantgate's own credentials all make [`Introspected::Unavailable`], which the caller answers 503 with
//! `Retry-After` (senders retry; nothing is lost), never 401.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use bytes::Bytes;
use http::{header, Request};
use http_body_util::Full;

use crate::metrics::Histogram;
use crate::outbound::HttpClient;
use crate::secrets::SecretValue;

/// Introspections in flight at once.
pub const MAX_CALLS: usize = 16;

/// How long a request waits for a turn before it is told to retry (503).
pub const CALL_WAIT: Duration = Duration::from_secs(2);

/// The longest an introspection call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a discovery failure keeps the endpoint unknown before the next try.
pub const DISCOVERY_RETRY: Duration = Duration::from_secs(10);

/// The largest introspection answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// What the identity provider said of a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Introspected {
    /// Active: its claims as a JSON object (with `exp` set to `now + ttl` when the answer had none).
    Active(Vec<u8>),
    /// Not active (expired, revoked, made up): 401.
    Inactive,
    /// No answer to trust (provider down, slow, 5xx, bad JSON, our credentials refused): 503.
    Unavailable(String),
}

/// Calls the introspection endpoint.
pub struct Introspector {
    /// The endpoint; `None` until discovery found it.
    endpoint: ArcSwapOption<String>,
    /// The discovery document that names it, when the flag does not.
    discovery: Option<String>,
    /// When discovery last failed (ms since `epoch`, plus one), to pace retries.
    discovery_failed: AtomicU64,
    epoch: Instant,
    client_id: String,
    secret: Arc<SecretValue>,
    http: HttpClient,
    turns: tokio::sync::Semaphore,
    /// Calls by result: active, inactive, error.
    pub calls: [AtomicU64; 3],
    /// Call latency.
    pub duration: Histogram,
    /// When an error was last logged (seconds since `epoch`), so a down provider logs once in 10 s.
    last_logged: AtomicU64,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never; the endpoint and client are what an operator needs to see.
        f.debug_struct("Introspector")
            .field("endpoint", &self.endpoint.load_full())
            .field("discovery", &self.discovery)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Introspector {
    /// An introspector for `endpoint` (or the one `discovery` names) as client `client_id`.
    pub fn new(
        endpoint: Option<String>,
        discovery: Option<String>,
        client_id: String,
        secret: Arc<SecretValue>,
        http: HttpClient,
    ) -> Introspector {
        Introspector {
            endpoint: ArcSwapOption::from(endpoint.map(Arc::new)),
            discovery,
            discovery_failed: AtomicU64::new(0),
            epoch: Instant::now(),
            client_id,
            secret,
            http,
            turns: tokio::sync::Semaphore::new(MAX_CALLS),
            calls: Default::default(),
            duration: Histogram::default(),
            last_logged: AtomicU64::new(0),
        }
    }

    /// Asks whether `token` is active; `now` is seconds since the epoch and `ttl` what an answer
    /// without `exp` is trusted for.
    pub async fn introspect(&self, token: &str, now: f64, ttl: Duration) -> Introspected {
        let outcome = match tokio::time::timeout(CALL_WAIT, self.turns.acquire()).await {
            Ok(Ok(_turn)) => {
                let started = Instant::now();
                let outcome = self.call(token, now, ttl).await;
                self.duration.observe(started.elapsed());
                outcome
            }
            _ => Introspected::Unavailable(format!(
                "{MAX_CALLS} token introspections are already waiting for the identity provider"
            )),
        };
        let i = match &outcome {
            Introspected::Active(_) => 0,
            Introspected::Inactive => 1,
            Introspected::Unavailable(why) => {
                self.log_failure(why);
                2
            }
        };
        self.calls[i].fetch_add(1, Ordering::Relaxed);
        outcome
    }

    async fn call(&self, token: &str, now: f64, ttl: Duration) -> Introspected {
        let endpoint = match self.endpoint().await {
            Ok(endpoint) => endpoint,
            Err(why) => return Introspected::Unavailable(why),
        };
        let body = form_encode(&[("token", token), ("token_type_hint", "access_token")]);
        let secret = self.secret.value();
        let credentials = format!(
            "{}:{}",
            form_encode_value(&self.client_id),
            form_encode_value(&String::from_utf8_lossy(&secret))
        );
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        let request = Request::post(endpoint.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, basic)
            .body(Full::new(Bytes::from(body)));
        let request = match request {
            Ok(request) => request,
            Err(e) => return Introspected::Unavailable(format!("bad introspection request: {e}")),
        };
        match self.http.send(request, CALL_TIMEOUT, MAX_ANSWER).await {
            Ok(answer) if answer.status.is_success() => read_answer(&answer.body, now, ttl),
            Ok(answer) => Introspected::Unavailable(format!(
                "the introspection endpoint answered {}{}",
                answer.status,
                if answer.status == http::StatusCode::UNAUTHORIZED {
                    " (check -auth.introspectionClientID and -auth.introspectionClientSecretFile)"
                } else {
                    ""
                }
            )),
            Err(e) => Introspected::Unavailable(format!("introspection endpoint: {e}")),
        }
    }

    /// The endpoint: the flag's, or the discovery document's (looked up now if not yet known).
    async fn endpoint(&self) -> Result<Arc<String>, String> {
        if let Some(endpoint) = self.endpoint.load_full() {
            return Ok(endpoint);
        }
        let Some(discovery) = &self.discovery else {
            return Err("no introspection endpoint configured".to_string());
        };
        let failed = self.discovery_failed.load(Ordering::Relaxed);
        let now_ms = self.epoch.elapsed().as_millis() as u64 + 1;
        if failed != 0 && now_ms < failed + DISCOVERY_RETRY.as_millis() as u64 {
            return Err("the discovery document could not be read; retrying shortly".to_string());
        }
        let request = Request::get(discovery.as_str())
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let found = match self.http.send(request, CALL_TIMEOUT, MAX_ANSWER).await {
            Ok(answer) if answer.status.is_success() => {
                introspection_endpoint_from_discovery(&answer.body, discovery)
            }
            Ok(answer) => Err(format!("{discovery} answered {}", answer.status)),
            Err(e) => Err(format!("{discovery}: {e}")),
        };
        match found {
            Ok(endpoint) => {
                tracing::info!("introspecting opaque tokens at {endpoint} (from {discovery})");
                let endpoint = Arc::new(endpoint);
                self.endpoint.store(Some(endpoint.clone()));
                Ok(endpoint)
            }
            Err(why) => {
                self.discovery_failed.store(now_ms, Ordering::Relaxed);
                Err(why)
            }
        }
    }

    fn log_failure(&self, why: &str) {
        let now = self.epoch.elapsed().as_secs() + 1;
        let last = self.last_logged.load(Ordering::Relaxed);
        if (last == 0 || now >= last + 10)
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                "token introspection failed ({why}); cached tokens keep working, new opaque tokens get 503 until it answers"
            );
        }
    }

    /// Appends the introspection series.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        for (i, result) in ["active", "inactive", "error"].iter().enumerate() {
            let _ = writeln!(
                out,
                "tenantgate_introspection_requests_total{{result=\"{result}\"}} {}",
                self.calls[i].load(Ordering::Relaxed)
            );
        }
        self.duration
            .render(out, "tenantgate_introspection_duration_seconds", "");
    }
}

/// Pure. The introspection answer: `{"active": true, ...claims}` becomes the claims (with `exp` set to
/// `now + ttl` when missing, so such an answer is trusted for `ttl` only); `active` anything but `true`
/// is inactive; anything that is not a JSON object is no answer to trust.
pub fn read_answer(body: &[u8], now: f64, ttl: Duration) -> Introspected {
    let Ok(serde_json::Value::Object(mut claims)) = serde_json::from_slice(body) else {
        return Introspected::Unavailable("the introspection answer is not a JSON object".into());
    };
    if claims.remove("active") != Some(serde_json::Value::Bool(true)) {
        return Introspected::Inactive;
    }
    if !claims.contains_key("exp") {
        claims.insert(
            "exp".into(),
            serde_json::json!((now + ttl.as_secs_f64()).floor()),
        );
    }
    match serde_json::to_vec(&claims) {
        Ok(payload) => Introspected::Active(payload),
        Err(e) => Introspected::Unavailable(e.to_string()),
    }
}

/// The `introspection_endpoint` of a discovery document: an absolute http(s) URL, not plain http when the
/// document came over https (tokens must not travel in clear because a document said so).
pub fn introspection_endpoint_from_discovery(
    document: &[u8],
    discovery_url: &str,
) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_slice(document)
        .map_err(|e| format!("not an OpenID Connect discovery document: {e}"))?;
    let endpoint = value
        .get("introspection_endpoint")
        .and_then(|v| v.as_str())
        .ok_or(
            "the discovery document has no introspection_endpoint; set -auth.introspectionEndpoint",
        )?;
    let lower = endpoint.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err(format!(
            "introspection_endpoint {endpoint:?} is not an absolute http(s) URL"
        ));
    }
    if discovery_url.to_ascii_lowercase().starts_with("https://") && lower.starts_with("http://") {
        return Err(format!(
            "introspection_endpoint {endpoint:?} is plain http although the discovery document came over https; refusing to send tokens in clear"
        ));
    }
    Ok(endpoint.to_string())
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode_value(k), form_encode_value(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// One form value: everything but unreserved characters percent-encoded (RFC 6749 §2.3.1 asks the
/// client id and secret encoded this way before Basic auth, too).
fn form_encode_value(text: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, KEEP).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let ttl = Duration::from_secs(60);
        assert_eq!(
            read_answer(br#"{"active":false}"#, 100.0, ttl),
            Introspected::Inactive
        );
        assert_eq!(
            read_answer(br#"{"active":"true","exp":5}"#, 100.0, ttl),
            Introspected::Inactive,
            "only the boolean true is active"
        );
        assert_eq!(
            read_answer(br#"{"exp":5}"#, 100.0, ttl),
            Introspected::Inactive
        );
        assert!(matches!(
            read_answer(b"[]", 100.0, ttl),
            Introspected::Unavailable(_)
        ));
        assert!(matches!(
            read_answer(b"<html>", 100.0, ttl),
            Introspected::Unavailable(_)
        ));
        let Introspected::Active(payload) =
            read_answer(br#"{"active":true,"client_id":"a","exp":500}"#, 100.0, ttl)
        else {
            panic!("active")
        };
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["exp"], 500);
        assert!(v.get("active").is_none());
        let Introspected::Active(payload) =
            read_answer(br#"{"active":true,"client_id":"a"}"#, 100.5, ttl)
        else {
            panic!("active")
        };
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["exp"], 160.0, "without exp: trusted for the TTL only");
    }

    #[test]
    fn endpoints_from_discovery() {
        let doc = br#"{"introspection_endpoint":"https://idp/token/introspection"}"#;
        assert_eq!(
            introspection_endpoint_from_discovery(
                doc,
                "https://idp/.well-known/openid-configuration"
            )
            .unwrap(),
            "https://idp/token/introspection"
        );
        let clear = br#"{"introspection_endpoint":"http://idp/introspect"}"#;
        assert!(introspection_endpoint_from_discovery(clear, "https://idp/x").is_err());
        assert!(introspection_endpoint_from_discovery(clear, "http://idp/x").is_ok());
        assert!(introspection_endpoint_from_discovery(b"{}", "http://idp/x").is_err());
        assert!(introspection_endpoint_from_discovery(
            br#"{"introspection_endpoint":"file:///etc/passwd"}"#,
            "http://idp/x"
        )
        .is_err());
    }

    #[test]
    fn credentials_are_form_encoded() {
        assert_eq!(form_encode_value("a b+c:d/é"), "a%20b%2Bc%3Ad%2F%C3%A9");
        assert_eq!(
            form_encode(&[("token", "x=y&z"), ("token_type_hint", "access_token")]),
            "token=x%3Dy%26z&token_type_hint=access_token"
        );
    }
}
