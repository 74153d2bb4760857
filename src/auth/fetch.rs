//! Where verification keys come from: PEM keys and HMAC secrets from flags and files at start-up, and
//! JWKS and OpenID Connect discovery endpoints, kept in step with the identity provider by a refresher
//! task. This is the only code in tenantgate that talks to identity providers.
//!
//! [`start`] loads the local keys, builds the [`Authenticator`] and, when remote sources are configured,
//! spawns the refresher and waits at most [`FIRST_ATTEMPT_WAIT`] for its first round, so an identity
//! provider that is down never keeps the gateway from listening. The refresher's rules:
//! - Each remote source has its own schedule: after a success, the next fetch is due in
//!   `-auth.keysRefreshInterval` ±10 % (jitter, so a fleet of gateways does not fetch in step); after a
//!   failure, in 0.5 s doubling to 30 s, never later than the refresh interval.
//! - A token naming an unknown `kid` wakes the refresher, which fetches every source not tried within
//!   `-auth.minRefreshInterval`. That per-source rate limit is what keeps made-up `kid`s from turning
//!   the gateway into a load generator against the identity provider.
//! - A failed fetch (connection, status, timeout, a body over [`MAX_DOCUMENT_BYTES`], bad JSON, or a JWKS
//!   without any usable signing key) keeps the source's last good keys; it is logged and counted.
//! - The key set in force is replaced, which drops the verified-token cache, only when some source's
//!   published keys actually changed: a routine refresh costs no re-verification of every active token.
//! - Until every remote source has answered once, a token naming an unknown `kid` gets 503 (retry), not
//!   401; until any keys are loaded at all, every request gets 503 and `/health` says why.
//!
//! Every fetch is bounded ([`FETCH_TIMEOUT`] for the whole exchange, [`MAX_DOCUMENT_BYTES`] per body),
//! redirects are not followed, and nothing an identity provider sends can panic the refresher.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::jwt::VerifyOptions;
use super::keys::{keys_from_jwks, keys_from_pem, JwkSet, KeySet, VerifyKey};
use super::{AuthSettings, Authenticator};
use crate::flags::{AuthConfig, Config};
use crate::reload::{self, Part, Reload};

/// The largest discovery or JWKS document read. Real ones are a few KiB; a provider sending more is
/// broken or hostile, and must not make the gateway buffer without limit.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Time allowed for one HTTP exchange with an identity provider (connect, headers and body).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long start-up waits for the first round of fetches before listening anyway.
pub const FIRST_ATTEMPT_WAIT: Duration = Duration::from_secs(2);

/// The first retry delay after a failed fetch; it doubles per consecutive failure.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);

/// The longest retry delay after failed fetches.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Relative jitter applied to every scheduled fetch (±10 %).
pub const JITTER: f64 = 0.1;

/// No wait is scheduled further out than this, so huge intervals cannot overflow the clock.
const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The generation of the key set built at start-up; a higher one means the refresher published keys.
const INITIAL_GENERATION: u64 = 1;

const WELL_KNOWN: &str = "/.well-known/openid-configuration";

/// One key source's numbers for `/metrics`. Atomics, written by the refresher and read by `/metrics`
/// only: the request path never touches them.
pub struct SourceStatus {
    /// The source as configured: a file path, `-auth.publicKeys[i]` or an endpoint URL.
    name: String,
    /// Whether the source is fetched from an identity provider (and so has refresh numbers).
    remote: bool,
    loaded: AtomicU64,
    refreshes: AtomicU64,
    failures: AtomicU64,
    /// Unix seconds of the last successful fetch; 0 for never.
    last_success: AtomicU64,
}

impl SourceStatus {
    fn new(name: String, remote: bool, loaded: usize) -> SourceStatus {
        SourceStatus {
            name,
            remote,
            loaded: AtomicU64::new(loaded as u64),
            refreshes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_success: AtomicU64::new(0),
        }
    }
}

/// Per-source key metrics, rendered into `/metrics`.
#[derive(Default)]
pub struct KeyStatus {
    sources: Vec<SourceStatus>,
}

/// One metric family of [`KeyStatus`].
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    /// Whether local (PEM, HMAC) sources get a series too; they have no refreshes.
    local: bool,
    value: fn(&SourceStatus) -> u64,
}

const FAMILIES: [Family; 4] = [
    Family {
        name: "tenantgate_keys_loaded",
        kind: "gauge",
        help: "Verification keys in force per source (for identity providers: from the last good fetch).",
        local: true,
        value: |s| s.loaded.load(Ordering::Relaxed),
    },
    Family {
        name: "tenantgate_key_refreshes_total",
        kind: "counter",
        help: "Fetches of keys from an identity provider, successful or not.",
        local: false,
        value: |s| s.refreshes.load(Ordering::Relaxed),
    },
    Family {
        name: "tenantgate_key_refresh_failures_total",
        kind: "counter",
        help: "Failed fetches of keys from an identity provider; the last good keys stay in force.",
        local: false,
        value: |s| s.failures.load(Ordering::Relaxed),
    },
    Family {
        name: "tenantgate_key_last_success_timestamp_seconds",
        kind: "gauge",
        help: "Unix time of the last successful fetch of keys from an identity provider; 0 if none yet.",
        local: false,
        value: |s| s.last_success.load(Ordering::Relaxed),
    },
];

impl KeyStatus {
    /// Exposition text for the key sources.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for family in &FAMILIES {
            let mut sources = self
                .sources
                .iter()
                .filter(|s| family.local || s.remote)
                .peekable();
            if sources.peek().is_none() {
                continue;
            }
            let Family {
                name, kind, help, ..
            } = family;
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for source in sources {
                let _ = writeln!(
                    out,
                    "{name}{{source=\"{}\"}} {}",
                    crate::metrics::escape_label_value(&source.name),
                    (family.value)(source)
                );
            }
        }
        out
    }
}

/// What [`start`] hands the server.
pub type Started = (
    Option<Arc<Authenticator>>,
    Arc<KeyStatus>,
    Option<JoinHandle<()>>,
);

/// A remote key source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A JWKS document's URL (`-auth.jwksEndpoints`).
    Jwks(String),
    /// An OpenID Connect discovery document's URL, whose `jwks_uri` names the JWKS
    /// (`-auth.oidcDiscoveryEndpoints`, normalized by [`discovery_url`]).
    Discovery(String),
}

/// Keys read from flags and files, and what they were read from (to tell whether a reload changed them).
struct LocalKeys {
    keys: Vec<VerifyKey>,
    /// `(source, keys from it)`, in flag order.
    sources: Vec<(String, usize)>,
    /// Everything read, in order: equal bytes mean equal keys.
    material: Vec<u8>,
}

/// Reads `-auth.publicKeys`, `-auth.publicKeyFiles` and `-auth.hmacSecretFiles`; any unreadable or
/// unparsable one fails the whole load, so a reload never half-applies.
fn load_local(config: &AuthConfig) -> Result<LocalKeys, String> {
    let mut local = LocalKeys {
        keys: Vec::new(),
        sources: Vec::new(),
        material: Vec::new(),
    };
    for (i, pem) in config.public_keys.iter().enumerate() {
        let source = format!("-auth.publicKeys[{i}]");
        let loaded = keys_from_pem(pem.as_bytes(), &source).map_err(|e| e.to_string())?;
        local.material.extend_from_slice(pem.as_bytes());
        local.sources.push((source, loaded.len()));
        local.keys.extend(loaded);
    }
    for path in &config.public_key_files {
        let source = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| format!("-auth.publicKeyFiles {source}: {e}"))?;
        let loaded =
            keys_from_pem(&pem, &source).map_err(|e| format!("-auth.publicKeyFiles {e}"))?;
        local.material.extend_from_slice(&pem);
        local.sources.push((source, loaded.len()));
        local.keys.extend(loaded);
    }
    for path in &config.hmac_secret_files {
        let source = path.display().to_string();
        let secret =
            std::fs::read(path).map_err(|e| format!("-auth.hmacSecretFiles {source}: {e}"))?;
        let secret = trim_ascii_newline(&secret);
        local.keys.push(
            VerifyKey::hmac(secret, &source).map_err(|e| format!("-auth.hmacSecretFiles {e}"))?,
        );
        local.material.extend_from_slice(secret);
        local.sources.push((source, 1));
    }
    Ok(local)
}

/// The introspector of `-auth.introspection*`, with its cache TTL; its client secret file is re-read on
/// every `reload`.
fn introspector(
    config: &crate::flags::AuthConfig,
    reload: &Reload,
) -> Result<Option<(Arc<super::introspect::Introspector>, Duration)>, String> {
    let Some(i) = &config.introspection else {
        return Ok(None);
    };
    let secret = crate::secrets::SecretValue::load(
        &crate::flags::Secret::File(i.secret_file.clone()),
        "auth.introspectionClientSecretFile",
    )?;
    tokio::spawn(secret.clone().watch(reload.subscribe()));
    let tls = crate::flags::UpstreamTls {
        ca_file: config.tls_ca_file.clone(),
        ..Default::default()
    };
    let http = crate::outbound::HttpClient::new(&tls, 8, FETCH_TIMEOUT)
        .map_err(|e| format!("-auth.introspectionEndpoint: {e}"))?;
    let discovery = match &i.endpoint {
        Some(endpoint) => {
            tracing::info!("introspecting opaque tokens at {endpoint}");
            None
        }
        None => config
            .oidc_discovery_endpoints
            .first()
            .map(|u| discovery_url(u)),
    };
    let introspector = super::introspect::Introspector::new(
        i.endpoint.clone(),
        discovery,
        i.client_id.clone(),
        secret,
        http,
    );
    Ok(Some((Arc::new(introspector), i.cache_ttl)))
}

/// Loads local keys, builds the authenticator, and starts the refresher, which fetches remote sources
/// and re-reads local key files on every `reload` (SIGHUP).
pub async fn start(config: &Config, reload: &Reload) -> Result<Started, String> {
    let config = &config.auth;
    if !config.enabled {
        tracing::warn!(
            "-enable.auth is off: every request is forwarded to tenant 0:0 without any restriction"
        );
        return Ok((None, Arc::new(KeyStatus::default()), None));
    }
    let local = load_local(config)?;
    let mut status = KeyStatus::default();
    for (source, n) in &local.sources {
        status
            .sources
            .push(SourceStatus::new(source.clone(), false, *n));
    }
    if !config.public_key_files.is_empty() || !config.hmac_secret_files.is_empty() {
        reload::STATUS.uses(Part::Keys);
    }
    let check_signature = config.has_key_sources();
    if !check_signature {
        tracing::warn!("-enable.auth is on but no key source is configured: token signatures are NOT checked (vmgateway compatibility). Set -auth.oidcDiscoveryEndpoints, -auth.jwksEndpoints or -auth.publicKeyFiles.");
    }
    for key in &local.keys {
        log_key(key);
    }

    let remotes: Vec<(String, Endpoint)> = config
        .jwks_endpoints
        .iter()
        .map(|url| (url.clone(), Endpoint::Jwks(url.clone())))
        .chain(
            config
                .oidc_discovery_endpoints
                .iter()
                .map(|url| (url.clone(), Endpoint::Discovery(discovery_url(url)))),
        )
        .collect();
    let settings = AuthSettings {
        header: http::HeaderName::from_bytes(config.header.as_bytes())
            .map_err(|e| format!("-auth.httpHeader: {e}"))?,
        allow_without_prefix: config.allow_without_prefix,
        verify: VerifyOptions {
            check_signature,
            issuers: config.issuers.clone(),
            audiences: config.audiences.clone(),
            clock_skew: config.clock_skew.as_secs_f64(),
            grants: config.grants_file.is_some(),
        },
        cache_size: config.token_cache_size,
        log_invalid: config.log_invalid_tokens,
        remote_keys: !remotes.is_empty(),
        grants: match &config.grants_file {
            Some(path) => Some(Arc::new(arc_swap::ArcSwap::from_pointee(
                super::grants_file::load(path)?,
            ))),
            None => None,
        },
        grants_override: config.grants_override,
        introspection: introspector(config, reload)?,
        id_token_header: config
            .id_token_header
            .as_deref()
            .map(|h| http::HeaderName::from_bytes(h.as_bytes()))
            .transpose()
            .map_err(|e| format!("-auth.idTokenHeader: {e}"))?,
    };
    let client = http_client(config.tls_ca_file.as_deref())?;
    let now = Instant::now();
    let mut sources = Vec::with_capacity(remotes.len());
    for (name, endpoint) in remotes {
        match &endpoint {
            Endpoint::Discovery(url) if *url != name => tracing::info!(
                "-auth.oidcDiscoveryEndpoints {name} is not a discovery document URL; fetching {url}"
            ),
            _ => {}
        }
        sources.push(Remote {
            name: Arc::from(name.as_str()),
            endpoint,
            status: status.sources.len(),
            keys: Vec::new(),
            fingerprint: None,
            failures: 0,
            last_attempt: None,
            next_due: now,
        });
        status.sources.push(SourceStatus::new(name, true, 0));
    }
    let status = Arc::new(status);
    let ready = !local.keys.is_empty() || sources.is_empty();
    let authenticator = Arc::new(Authenticator::new(
        settings,
        KeySet::new(local.keys.clone(), INITIAL_GENERATION),
        ready,
    ));
    let has_remotes = !sources.is_empty();
    if !has_remotes {
        tracing::info!(
            "using {} keys for JWT token signature verification (sources: {})",
            local.keys.len(),
            source_summary(&local.keys)
        );
    }
    let refresher = Refresher {
        auth: authenticator.clone(),
        status: status.clone(),
        client,
        config: config.clone(),
        local,
        reload: reload.subscribe(),
        remotes: sources,
        interval: config.keys_refresh_interval,
        min_interval: config.min_refresh_interval,
        complete: !has_remotes,
    };
    if let Some(path) = &config.grants_file {
        tracing::info!(
            "grants for tokens without vm_access{} from {}",
            if config.grants_override {
                " (and, with -auth.grantsOverride, for every token)"
            } else {
                ""
            },
            path.display()
        );
        tokio::spawn(super::grants_file::watch(
            authenticator.clone(),
            path.clone(),
            reload.subscribe(),
        ));
    }
    let (first_round, first_done) = oneshot::channel();
    let handle = tokio::spawn(refresher.run(first_round));
    if !has_remotes {
        return Ok((Some(authenticator), status, Some(handle)));
    }
    let _ = tokio::time::timeout(FIRST_ATTEMPT_WAIT, first_done).await;
    if authenticator.keys().generation == INITIAL_GENERATION {
        let pending = status
            .sources
            .iter()
            .filter(|s| s.remote)
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if ready {
            let keys = authenticator.keys();
            tracing::info!(
                "using {} keys for JWT token signature verification (sources: {})",
                keys.len(),
                source_summary(keys.keys())
            );
            tracing::warn!("no keys from {pending} yet; retrying in the background. Tokens naming a key id no loaded key has get 503 until every source answered");
        } else {
            tracing::warn!("no keys for JWT token signature verification yet: none from {pending} within {FIRST_ATTEMPT_WAIT:?}; retrying in the background. Until keys arrive, /health and every request answer 503 so senders retry");
        }
    }
    Ok((Some(authenticator), status, Some(handle)))
}

fn log_key(key: &VerifyKey) {
    tracing::info!(
        source = %key.source,
        kid = key.kid.as_deref().unwrap_or("-"),
        "loaded {} key for {:?}",
        key.description,
        key.algs()
    );
}

/// `source=count` for each source, in the order the keys are listed, for the start-up line.
fn source_summary(keys: &[VerifyKey]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for key in keys {
        match counts.last_mut() {
            Some((source, n)) if *source == &*key.source => *n += 1,
            _ => counts.push((&key.source, 1)),
        }
    }
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(source, n)| format!("{source}={n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Secret files usually end with a newline that is not part of the secret.
fn trim_ascii_newline(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &bytes[..end]
}

/// The discovery document's URL for `-auth.oidcDiscoveryEndpoints` `given`: a URL that already names a
/// `.well-known` document is used as it is (vmgateway's documented form, and RFC 8414's
/// `oauth-authorization-server`); an issuer URL gets `/.well-known/openid-configuration` appended to its
/// path, keeping any query (Azure AD B2C puts its policy there). A fragment is never sent.
pub fn discovery_url(given: &str) -> String {
    let without_fragment = given.split('#').next().unwrap_or(given);
    let (base, query) = match without_fragment.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (without_fragment, None),
    };
    if base.contains("/.well-known/") {
        return without_fragment.to_string();
    }
    let mut url = format!("{}{WELL_KNOWN}", base.trim_end_matches('/'));
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// The `jwks_uri` of a discovery document fetched from `discovery_url`: an absolute http(s) URL, and not
/// plain http when the document came over https (that would let a network attacker supply the keys).
pub fn jwks_uri_from_discovery(document: &[u8], discovery_url: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Discovery {
        jwks_uri: Option<String>,
    }
    let discovery: Discovery = serde_json::from_slice(document)
        .map_err(|e| format!("not an OpenID Connect discovery document: {e}"))?;
    let jwks_uri = discovery
        .jwks_uri
        .ok_or("the discovery document has no jwks_uri")?;
    let uri: Uri = jwks_uri
        .parse()
        .map_err(|_| format!("jwks_uri {jwks_uri:?} is not a URL"))?;
    let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
    if !matches!(scheme.as_deref(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(format!(
            "jwks_uri {jwks_uri:?} is not an absolute http(s) URL"
        ));
    }
    let discovered_over_https = discovery_url
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    if discovered_over_https && scheme.as_deref() == Some("http") {
        return Err(format!(
            "jwks_uri {jwks_uri:?} is plain http although the discovery document came over https; refusing the downgrade"
        ));
    }
    Ok(jwks_uri)
}

/// A JWKS document's identity for change detection: its keys, each serialized canonically (object fields
/// sorted) and the list sorted, so reordering or reformatting by the provider is not a change.
pub fn jwks_fingerprint(document: &[u8]) -> Result<String, String> {
    let set: JwkSet =
        serde_json::from_slice(document).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys: Vec<String> = set
        .keys
        .iter()
        .map(|key| serde_json::to_string(key).unwrap_or_default())
        .collect();
    keys.sort_unstable();
    Ok(keys.join("\n"))
}

/// `interval` scaled by a factor in [1 - JITTER, 1 + JITTER], chosen by `unit` in [0, 1].
pub fn jittered(interval: Duration, unit: f64) -> Duration {
    let unit = if unit.is_nan() {
        0.5
    } else {
        unit.clamp(0.0, 1.0)
    };
    let factor = 1.0 - JITTER + 2.0 * JITTER * unit;
    Duration::try_from_secs_f64(interval.as_secs_f64() * factor)
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY)
}

/// The retry delay after `failures` consecutive failed fetches (at least 1): [`BACKOFF_FIRST`] doubling
/// up to [`BACKOFF_MAX`].
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

/// When a source is next due, `after` a fetch that ended with `failures` consecutive failures (0: it
/// succeeded). A failing source is retried sooner, but never later than the regular interval.
pub fn next_fetch_delay(failures: u32, interval: Duration, unit: f64) -> Duration {
    let base = if failures == 0 {
        interval
    } else {
        backoff(failures).min(interval)
    };
    jittered(base, unit)
}

/// The unknown-`kid` rate limit: a source may be fetched early only if it was not tried within `min`.
pub fn early_fetch_allowed(last_attempt: Option<Instant>, now: Instant, min: Duration) -> bool {
    last_attempt.is_none_or(|last| now.saturating_duration_since(last) >= min)
}

fn later(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay.min(MAX_DELAY)).unwrap_or(now)
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The client for identity providers: http and https (rustls, Mozilla's roots from webpki-roots plus
/// `-auth.tlsCAFile`), HTTP/1.1, no connection pool (fetches are minutes apart, and a pooled connection
/// to a restarted provider would only fail the next fetch).
fn http_client(ca_file: Option<&Path>) -> Result<HttpClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| format!("-auth.tlsCAFile {}: {e}", ca.display()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("-auth.tlsCAFile {}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("-auth.tlsCAFile {}: {e}", ca.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "-auth.tlsCAFile {}: no CERTIFICATE block found",
                ca.display()
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(FETCH_TIMEOUT));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector))
}

/// GETs `url` and returns its body: 200 only, at most [`MAX_DOCUMENT_BYTES`], all within `timeout`.
async fn get(client: &HttpClient, url: &str, timeout: Duration) -> Result<Bytes, String> {
    let uri: Uri = url.parse().map_err(|_| "not a valid URL".to_string())?;
    let request = Request::get(uri)
        .header(ACCEPT, "application/json")
        .header(
            USER_AGENT,
            concat!("tenantgate/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| error_chain(&e))?;
        if response.status() != StatusCode::OK {
            return Err(format!("answered HTTP {}", response.status()));
        }
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64) {
            return Err(format!("answer is larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("answer is larger than {MAX_DOCUMENT_BYTES} bytes")
                } else {
                    format!("reading the answer: {}", error_chain(&*e))
                }
            })?;
        Ok(body.to_bytes())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no complete answer within {timeout:?}"))?
}

/// An error with its causes: hyper's own message ("client error (Connect)") says little alone.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// What one fetch brought.
enum Fetched {
    /// The same JWKS as last time: nothing to parse or replace.
    Unchanged,
    /// New keys.
    Keys {
        keys: Vec<VerifyKey>,
        skipped: Vec<String>,
        fingerprint: String,
        jwks_uri: String,
    },
}

/// Fetches one source: the discovery document first, when it is one, then the JWKS it names.
async fn fetch(
    client: HttpClient,
    endpoint: Endpoint,
    source: Arc<str>,
    previous: Option<String>,
) -> Result<Fetched, String> {
    let jwks_uri = match &endpoint {
        Endpoint::Jwks(url) => url.clone(),
        Endpoint::Discovery(url) => {
            let document = get(&client, url, FETCH_TIMEOUT)
                .await
                .map_err(|e| format!("discovery document {url}: {e}"))?;
            jwks_uri_from_discovery(&document, url)
                .map_err(|e| format!("discovery document {url}: {e}"))?
        }
    };
    let document = get(&client, &jwks_uri, FETCH_TIMEOUT)
        .await
        .map_err(|e| format!("JWKS {jwks_uri}: {e}"))?;
    parse_jwks(&document, &source, &jwks_uri, previous.as_deref())
}

/// Parses a fetched JWKS unless it is the one already in force. A document without a single usable
/// signing key is a failure, not an empty key set: a provider's bad moment must not lock everyone out.
fn parse_jwks(
    document: &[u8],
    source: &str,
    jwks_uri: &str,
    previous: Option<&str>,
) -> Result<Fetched, String> {
    let fingerprint = jwks_fingerprint(document).map_err(|e| format!("JWKS {jwks_uri}: {e}"))?;
    if previous == Some(fingerprint.as_str()) {
        return Ok(Fetched::Unchanged);
    }
    let parsed = keys_from_jwks(document, source).map_err(|e| format!("JWKS {jwks_uri}: {e}"))?;
    if parsed.keys.is_empty() {
        let why = if parsed.skipped.is_empty() {
            "it lists no signing keys".to_string()
        } else {
            parsed.skipped.join("; ")
        };
        return Err(format!("JWKS {jwks_uri} has no usable signing key: {why}"));
    }
    Ok(Fetched::Keys {
        keys: parsed.keys,
        skipped: parsed.skipped,
        fingerprint,
        jwks_uri: jwks_uri.to_string(),
    })
}

/// Why the refresher woke up.
enum Wake {
    /// These remote sources are due (possibly none: an unknown-`kid` round the rate limit allowed nothing).
    Fetch(Vec<usize>),
    /// SIGHUP: re-read the local key files.
    Reload,
}

/// A remote source and what the refresher knows about it.
struct Remote {
    /// As configured; the metric label and the keys' `source`.
    name: Arc<str>,
    endpoint: Endpoint,
    /// Index into [`KeyStatus::sources`].
    status: usize,
    /// The last good keys.
    keys: Vec<VerifyKey>,
    /// The last good JWKS's fingerprint; `None` until the source first answered.
    fingerprint: Option<String>,
    /// Consecutive failed fetches.
    failures: u32,
    /// When the last fetch began, for the unknown-`kid` rate limit.
    last_attempt: Option<Instant>,
    /// When the next scheduled fetch is due.
    next_due: Instant,
}

/// The task that keeps remote keys current. Owns all refresh state, so it needs no locks.
struct Refresher {
    auth: Arc<Authenticator>,
    status: Arc<KeyStatus>,
    client: HttpClient,
    /// The flags, to re-read local key files on reload.
    config: AuthConfig,
    /// PEM and HMAC keys; part of every published set.
    local: LocalKeys,
    /// Bumped on SIGHUP: re-read local key files.
    reload: watch::Receiver<u64>,
    remotes: Vec<Remote>,
    interval: Duration,
    min_interval: Duration,
    /// Every remote source has answered at least once.
    complete: bool,
}

impl Refresher {
    async fn run(mut self, first_round: oneshot::Sender<()>) {
        let mut first_round = Some(first_round);
        loop {
            let due = match self.wait_for_due().await {
                Wake::Fetch(due) => due,
                Wake::Reload => {
                    self.reload_local();
                    continue;
                }
            };
            let round = self.auth.refresh.begin_round();
            self.refresh(&due).await;
            self.auth.refresh.end_round(round);
            if let Some(done) = first_round.take() {
                let _ = done.send(());
            }
        }
    }

    /// Sleeps until some source is due, or a token named an unknown `kid`. In the latter case the answer
    /// is the sources the rate limit allows, possibly none: an empty round still tells the waiting
    /// requests that nothing new is coming.
    async fn wait_for_due(&mut self) -> Wake {
        loop {
            let now = Instant::now();
            let due: Vec<usize> = (0..self.remotes.len())
                .filter(|&i| self.remotes[i].next_due <= now)
                .collect();
            if !due.is_empty() {
                return Wake::Fetch(due);
            }
            let wake = self
                .remotes
                .iter()
                .map(|r| r.next_due)
                .min()
                .unwrap_or_else(|| later(now, MAX_DELAY));
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                changed = self.reload.changed() => {
                    if changed.is_ok() {
                        return Wake::Reload;
                    }
                    // The reload sender is gone (tests, shutdown): no more reloads to wait for.
                    std::future::pending::<()>().await;
                }
                () = self.auth.refresh.unknown_kid.notified() => {
                    let now = Instant::now();
                    return Wake::Fetch((0..self.remotes.len())
                        .filter(|&i| {
                            early_fetch_allowed(self.remotes[i].last_attempt, now, self.min_interval)
                        })
                        .collect());
                }
            }
        }
    }

    /// Fetches the `due` sources concurrently, records the outcomes, and publishes a new key set if any
    /// source's keys changed.
    async fn refresh(&mut self, due: &[usize]) {
        let now = Instant::now();
        let mut fetches = JoinSet::new();
        for &i in due {
            let remote = &mut self.remotes[i];
            remote.last_attempt = Some(now);
            // Scheduled as if the fetch failed, so even a fetch task that dies unexpectedly cannot leave
            // the source due in the past (a busy loop); the real outcome reschedules it.
            remote.next_due = later(
                now,
                next_fetch_delay(remote.failures + 1, self.interval, rand::random()),
            );
            let fetch = fetch(
                self.client.clone(),
                remote.endpoint.clone(),
                remote.name.clone(),
                remote.fingerprint.clone(),
            );
            fetches.spawn(async move { (i, fetch.await) });
        }
        let mut changed = false;
        while let Some(joined) = fetches.join_next().await {
            match joined {
                Ok((i, outcome)) => changed |= self.record(i, outcome),
                Err(e) => tracing::error!("key fetch task failed: {e}"),
            }
        }
        if changed {
            self.publish();
        }
        if !self.complete && self.remotes.iter().all(|r| r.fingerprint.is_some()) {
            self.complete = true;
            self.auth.refresh.set_complete();
        }
    }

    /// Books one fetch's outcome; true when the source's keys changed.
    fn record(&mut self, i: usize, outcome: Result<Fetched, String>) -> bool {
        let remote = &mut self.remotes[i];
        let status = &self.status.sources[remote.status];
        status.refreshes.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let fetched = match outcome {
            Ok(fetched) => fetched,
            Err(e) => {
                remote.failures = remote.failures.saturating_add(1);
                status.failures.fetch_add(1, Ordering::Relaxed);
                let delay = next_fetch_delay(remote.failures, self.interval, rand::random());
                remote.next_due = later(now, delay);
                if remote.fingerprint.is_some() {
                    tracing::warn!(source = %remote.name, "key refresh failed ({} in a row), keeping the {} keys fetched before; next try in {delay:.1?}: {e}", remote.failures, remote.keys.len());
                } else {
                    tracing::warn!(source = %remote.name, "cannot fetch keys yet (attempt {} failed); next try in {delay:.1?}: {e}", remote.failures);
                }
                return false;
            }
        };
        if remote.failures > 0 {
            tracing::info!(source = %remote.name, "fetched keys again after {} failed attempts", remote.failures);
        }
        remote.failures = 0;
        remote.next_due = later(now, next_fetch_delay(0, self.interval, rand::random()));
        status.last_success.store(unix_seconds(), Ordering::Relaxed);
        let Fetched::Keys {
            keys,
            skipped,
            fingerprint,
            jwks_uri,
        } = fetched
        else {
            tracing::debug!(source = %remote.name, "keys unchanged");
            return false;
        };
        for why in &skipped {
            tracing::warn!(source = %remote.name, "skipped a key of {jwks_uri}: {why}");
        }
        for key in &keys {
            log_key(key);
        }
        status.loaded.store(keys.len() as u64, Ordering::Relaxed);
        remote.keys = keys;
        remote.fingerprint = Some(fingerprint);
        true
    }

    /// Re-reads local key files; new keys (and only new keys) replace the key set in force, which also
    /// empties the verified-token cache. A file that no longer parses keeps the keys in force.
    fn reload_local(&mut self) {
        if self.config.public_key_files.is_empty() && self.config.hmac_secret_files.is_empty() {
            return;
        }
        match load_local(&self.config) {
            Err(e) => reload::STATUS.failed(Part::Keys, &e),
            Ok(local) if local.material == self.local.material => {
                tracing::info!("key files unchanged");
                reload::STATUS.succeeded(Part::Keys);
            }
            Ok(local) => {
                for (i, (_, n)) in local.sources.iter().enumerate() {
                    if let Some(status) = self.status.sources.get(i) {
                        status.loaded.store(*n as u64, Ordering::Relaxed);
                    }
                }
                for key in &local.keys {
                    log_key(key);
                }
                self.local = local;
                self.publish();
                reload::STATUS.succeeded(Part::Keys);
            }
        }
    }

    /// Installs local keys plus every source's last good keys as the key set in force.
    fn publish(&self) {
        let mut keys = self.local.keys.clone();
        for remote in &self.remotes {
            keys.extend(remote.keys.iter().cloned());
        }
        tracing::info!(
            "using {} keys for JWT token signature verification (sources: {})",
            keys.len(),
            source_summary(&keys)
        );
        self.auth.replace_keys(keys);
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_urls_from_issuers() {
        let well_known = "http://keycloak:8080/realms/master/.well-known/openid-configuration";
        assert_eq!(discovery_url(well_known), well_known);
        assert_eq!(
            discovery_url("http://keycloak:8080/realms/master"),
            well_known
        );
        assert_eq!(
            discovery_url("http://keycloak:8080/realms/master/"),
            well_known
        );
        assert_eq!(
            discovery_url("https://accounts.google.com"),
            "https://accounts.google.com/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://idp.example/tenant/v2.0?p=B2C_1_signin#frag"),
            "https://idp.example/tenant/v2.0/.well-known/openid-configuration?p=B2C_1_signin"
        );
        let b2c = "https://t.b2clogin.com/t/v2.0/.well-known/openid-configuration?p=B2C_1_x";
        assert_eq!(discovery_url(b2c), b2c);
        let rfc8414 = "https://as.example/.well-known/oauth-authorization-server/tenant";
        assert_eq!(discovery_url(rfc8414), rfc8414);
    }

    #[test]
    fn discovery_documents() {
        let https = "https://idp.example/.well-known/openid-configuration";
        let doc = br#"{"issuer":"https://idp.example","jwks_uri":"https://keys.example/certs","other":[1,{"a":null}]}"#;
        assert_eq!(
            jwks_uri_from_discovery(doc, https).unwrap(),
            "https://keys.example/certs"
        );
        let http = "http://127.0.0.1:1/.well-known/openid-configuration";
        assert_eq!(
            jwks_uri_from_discovery(br#"{"jwks_uri":"http://127.0.0.1:1/jwks"}"#, http).unwrap(),
            "http://127.0.0.1:1/jwks"
        );
        for (doc, want) in [
            (&b"{}"[..], "no jwks_uri"),
            (b"not json", "not an OpenID Connect discovery document"),
            (b"[1,2]", "not an OpenID Connect discovery document"),
            (
                br#"{"jwks_uri":42}"#,
                "not an OpenID Connect discovery document",
            ),
            (br#"{"jwks_uri":"/jwks"}"#, "not an absolute"),
            (br#"{"jwks_uri":"ftp://idp/jwks"}"#, "not an absolute"),
            (br#"{"jwks_uri":"file:///etc/passwd"}"#, "not"),
            (br#"{"jwks_uri":"http://idp.example/jwks"}"#, "downgrade"),
        ] {
            let e = jwks_uri_from_discovery(doc, https).unwrap_err();
            assert!(e.contains(want), "{e} should say {want}");
        }
    }

    #[test]
    fn fingerprints_ignore_order_and_formatting() {
        let a = br#"{"keys":[{"kid":"a","kty":"EC"},{"kty":"RSA","kid":"b"}]}"#;
        let b = br#"{ "keys": [ {"kid": "b", "kty": "RSA"}, {"kty": "EC", "kid": "a"} ], "x": 1 }"#;
        let c = br#"{"keys":[{"kid":"a","kty":"EC"}]}"#;
        assert_eq!(jwks_fingerprint(a).unwrap(), jwks_fingerprint(b).unwrap());
        assert_ne!(jwks_fingerprint(a).unwrap(), jwks_fingerprint(c).unwrap());
        assert!(jwks_fingerprint(b"{}").is_err());
        assert!(jwks_fingerprint(b"\xff").is_err());
    }

    #[test]
    fn jwks_without_usable_keys_is_a_failure_and_same_document_is_unchanged() {
        let pair =
            aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let doc = format!(
            r#"{{"keys":[{}]}}"#,
            crate::auth::keys::tests::rsa_jwk(&pair, "k1", Some("RS256"))
        );
        let Ok(Fetched::Keys {
            keys, fingerprint, ..
        }) = parse_jwks(doc.as_bytes(), "s", "u", None)
        else {
            panic!("keys expected");
        };
        assert_eq!(keys.len(), 1);
        assert!(matches!(
            parse_jwks(doc.as_bytes(), "s", "u", Some(&fingerprint)),
            Ok(Fetched::Unchanged)
        ));
        let e = parse_jwks(br#"{"keys":[]}"#, "s", "u", None).err().unwrap();
        assert!(e.contains("no usable signing key"), "{e}");
        let e = parse_jwks(
            br#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#,
            "s",
            "u",
            None,
        )
        .err()
        .unwrap();
        assert!(e.contains("2048"), "{e}");
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let interval = Duration::from_secs(300);
        assert_eq!(jittered(interval, 0.0), Duration::from_secs(270));
        assert_eq!(jittered(interval, 1.0), Duration::from_secs(330));
        assert_eq!(jittered(interval, 0.5), interval);
        for unit in [-5.0, f64::NAN, 7.0] {
            let d = jittered(interval, unit);
            assert!(d >= Duration::from_secs(270) && d <= Duration::from_secs(330));
        }
        for _ in 0..1000 {
            let d = jittered(interval, rand::random());
            assert!(d >= Duration::from_secs(270) && d <= Duration::from_secs(330));
        }
        assert_eq!(jittered(Duration::MAX, 1.0), MAX_DELAY);
    }

    #[test]
    fn backoff_doubles_from_half_a_second_to_thirty() {
        let secs: Vec<f64> = (1..=9).map(|n| backoff(n).as_secs_f64()).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(backoff(0), BACKOFF_FIRST);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
        let interval = Duration::from_secs(300);
        assert_eq!(next_fetch_delay(1, interval, 0.5), BACKOFF_FIRST);
        assert_eq!(next_fetch_delay(0, interval, 0.5), interval);
        // A short refresh interval caps the backoff: retries are never rarer than refreshes.
        let short = Duration::from_secs(2);
        assert_eq!(next_fetch_delay(9, short, 0.5), short);
    }

    #[test]
    fn early_fetches_are_rate_limited_per_source() {
        let min = Duration::from_secs(10);
        let t0 = Instant::now();
        assert!(early_fetch_allowed(None, t0, min));
        assert!(!early_fetch_allowed(Some(t0), t0, min));
        assert!(!early_fetch_allowed(
            Some(t0),
            t0 + Duration::from_millis(9_999),
            min
        ));
        assert!(early_fetch_allowed(Some(t0), t0 + min, min));
        // A clock read before the last attempt (another thread's Instant) is not a panic.
        assert!(!early_fetch_allowed(Some(t0 + min), t0, min));
    }

    /// A one-connection-at-a-time HTTP server on 127.0.0.1 that answers every request with `answer`
    /// (raw bytes, then it keeps the connection open for `hold`).
    async fn canned_server(answer: Vec<u8>, hold: Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(&answer).await;
                    tokio::time::sleep(hold).await;
                });
            }
        });
        format!("http://{addr}/jwks")
    }

    #[tokio::test]
    async fn hostile_answers_are_bounded_errors() {
        let client = http_client(None).unwrap();
        let short = Duration::from_millis(300);
        let big = vec![b'x'; MAX_DOCUMENT_BYTES + 1];
        let mut declared = b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n".to_vec();
        declared.extend_from_slice(b"{}");
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for chunk in big.chunks(64 * 1024) {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let cases: [(Vec<u8>, &str); 5] = [
            (declared, "larger than"),
            (chunked, "larger than"),
            (
                b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n"
                    .to_vec(),
                "HTTP 302",
            ),
            // Headers, then silence: the whole exchange is bounded, not only the connect.
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{".to_vec(),
                "no complete answer",
            ),
            (b"garbage\r\n\r\n".to_vec(), "error"),
        ];
        for (answer, want) in cases {
            let url = canned_server(answer, Duration::from_secs(5)).await;
            let e = get(&client, &url, short).await.unwrap_err();
            assert!(e.contains(want), "{e} should say {want}");
        }
        let e = get(&client, "http://127.0.0.1:1/jwks", short)
            .await
            .unwrap_err();
        assert!(e.contains("onnect"), "{e}");
        let ok = canned_server(
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"keys\":[]}".to_vec(),
            Duration::ZERO,
        )
        .await;
        assert_eq!(
            &get(&client, &ok, short).await.unwrap()[..],
            b"{\"keys\":[]}"
        );
    }

    #[test]
    fn ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("tenantgate-ca-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate").unwrap();
        let e = http_client(Some(&dir)).err().unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert!(e.contains("-auth.tlsCAFile"), "{e}");
    }

    #[test]
    fn status_renders_per_source_families() {
        let status = KeyStatus {
            sources: vec![
                SourceStatus::new("/etc/key.pem".into(), false, 1),
                SourceStatus::new("http://idp/\"x\"\n".into(), true, 0),
            ],
        };
        status.sources[1].loaded.store(2, Ordering::Relaxed);
        status.sources[1].refreshes.store(3, Ordering::Relaxed);
        status.sources[1].failures.store(1, Ordering::Relaxed);
        status.sources[1]
            .last_success
            .store(1700000000, Ordering::Relaxed);
        let text = status.render();
        assert!(text.contains("tenantgate_keys_loaded{source=\"/etc/key.pem\"} 1\n"));
        assert!(text.contains("tenantgate_keys_loaded{source=\"http://idp/\\\"x\\\"\\n\"} 2\n"));
        assert!(
            text.contains("tenantgate_key_refreshes_total{source=\"http://idp/\\\"x\\\"\\n\"} 3\n")
        );
        assert!(text.contains(
            "tenantgate_key_refresh_failures_total{source=\"http://idp/\\\"x\\\"\\n\"} 1\n"
        ));
        assert!(text.contains(
            "tenantgate_key_last_success_timestamp_seconds{source=\"http://idp/\\\"x\\\"\\n\"} 1700000000\n"
        ));
        assert!(!text.contains("tenantgate_key_refreshes_total{source=\"/etc/key.pem\"}"));
        assert_eq!(text.matches("# TYPE").count(), 4);
        assert_eq!(KeyStatus::default().render(), "");
        let local_only = KeyStatus {
            sources: vec![SourceStatus::new("k".into(), false, 1)],
        };
        assert_eq!(local_only.render().matches("# TYPE").count(), 1);
    }
}
