//! Flags about the backends requests are forwarded to: their URLs, what they speak (VictoriaMetrics, or
//! only the Prometheus API), whether they are a VictoriaMetrics cluster (tenant in the path) or take the
//! tenant from a header, TLS towards them, and the backend connection pool's timeouts.

use std::path::PathBuf;
use std::time::Duration;

use super::values::{
    parse_backend_url, parse_bool, parse_duration, parse_existing_file, parse_size, parse_string,
};
use super::{flag, FlagError, FlagSpec, Given, Kind};

pub(super) const FLAGS: &[FlagSpec] = &[
    flag("clusterMode", Kind::Bool, "false", "Whether the backends are VictoriaMetrics cluster components (vminsert for -write.url, vmselect for -read.url); the tenant from the token then goes into the request path"),
    flag("read.url", Kind::Array, "", "URL of the backend for queries: VictoriaMetrics single-node (e.g. http://victoria-metrics:8428) or vmselect with -clusterMode (e.g. http://vmselect:8481). Several URLs (comma-separated or the flag repeated, e.g. vmselect replicas) are balanced with -loadBalancingPolicy, and a failed one is skipped until its health probe succeeds; they must share one path"),
    flag("write.url", Kind::Array, "", "URL of the backend for ingestion: VictoriaMetrics single-node (e.g. http://victoria-metrics:8428) or vminsert with -clusterMode (e.g. http://vminsert:8480). Several URLs (comma-separated or the flag repeated, e.g. vminsert replicas) are balanced with -loadBalancingPolicy; a write that fails before any answer goes to another one when its body is buffered (-maxRequestBodySizeToRetry)"),
    flag("loadBalancingPolicy", Kind::String, "least_loaded", "How requests are spread over several -read.url or -write.url backends: least_loaded (the one with the fewest requests waiting for an answer; ties go round-robin) or first_available (the first healthy one in the order given; the others are spares). As vmauth's flag"),
    flag("failTimeout", Kind::Duration, "3s", "How long a failed backend is skipped before its health probe (/health, or /-/ready for -*.backendType=prometheus) is tried; it takes requests again only once a probe succeeds, and is probed again every -failTimeout until then"),
    flag("retryStatusCodes", Kind::Array, "", "Backend answer statuses that count as a failure of that backend: the request goes to another backend (when it can be sent again) and the backend is skipped for -failTimeout. E.g. 502,503 for vmselect, which answers 503 while its vmstorage is down. 429 is not allowed: it is a tenant's limit, not a failure"),
    flag("maxRequestBodySizeToRetry", Kind::Size, "4MiB", "Writes with a declared body size up to this are read whole before they are forwarded, so one that fails before any answer can go to another -write.url backend. Larger or chunked bodies stream, and a failure is answered with 502/503, which senders retry. Reads are always retried (their bodies are held whole anyway)"),
    flag("discoverBackendIPs", Kind::Bool, "false", "Whether to resolve the host of every -read.url and -write.url periodically and use each address as a backend (a Kubernetes headless service: one pod, one backend). A host written srv+name (e.g. http://srv+_vminsert._tcp.vminsert.service.consul) asks for SRV records: host and port from each. A backend whose address disappears gets no new requests; those in flight finish. A failed lookup keeps the last good set"),
    flag("discoverBackendIPsInterval", Kind::Duration, "10s", "How often -discoverBackendIPs resolves the backends' names again (answers are not cached beyond it: pods and Consul services answer with TTL 0)"),
    flag("dns.server", Kind::String, "", "host:port of the DNS server -discoverBackendIPs asks (e.g. Consul's 127.0.0.1:8600, or consul:8600: a name is resolved by the system every round). By default names are resolved by the system (/etc/hosts, then DNS) and SRV records asked of the first nameserver in /etc/resolv.conf"),
    flag("maxRetryBufferSize", Kind::Size, "256MiB", "The most memory all write bodies held for retries (-maxRequestBodySizeToRetry) take together; a write arriving when it is used up streams and cannot be retried on another backend"),
    flag("read.backendType", Kind::String, "victoriametrics", "What -read.url speaks: victoriametrics (it applies extra_label and extra_filters itself) or prometheus (Prometheus, Thanos Query, Mimir, Cortex: tenantgate rewrites every PromQL query, match[] selector and rules answer to the token's labels)"),
    flag("write.backendType", Kind::String, "victoriametrics", "What -write.url speaks: victoriametrics (every ingestion format; it applies extra_label itself) or prometheus (a remote-write receiver such as Prometheus, Thanos Receive, Mimir or Cortex; -write.url is then the receiver's full remote-write URL, and tenantgate sets the token's labels on every series)"),
    flag("backend.tenantHeader", Kind::String, "", "Header that carries the token's tenant to the backends, for backends that take the tenant from a header (X-Scope-OrgID for Mimir, Cortex and Loki; THANOS-TENANT for Thanos Receive). Copies sent by clients are always removed"),
    flag("backend.tenantHeaderFormat", Kind::String, "account:project", "How -backend.tenantHeader spells the tenant: account:project (e.g. 42:0) or account (e.g. 42; tokens for a tenant with a non-zero projectID are then refused, as the header could not tell their tenants apart). Mimir and Cortex do not accept ':' in tenant IDs, so use account with them"),
    flag("upstream.timeout", Kind::Duration, "1m0s", "How long to wait for a backend's response headers; slower backends get 504"),
    flag("upstream.idleConnTimeout", Kind::Duration, "1m0s", "How long an idle keep-alive connection to a backend is kept for reuse"),
    flag("read.tlsCAFile", Kind::String, "", "Path to a CA bundle for verifying the TLS certificate of -read.url. By default, public certificate authorities are trusted"),
    flag("read.tlsCertFile", Kind::String, "", "Path to a client certificate for mutual TLS with -read.url; needs -read.tlsKeyFile"),
    flag("read.tlsKeyFile", Kind::String, "", "Path to the private key of -read.tlsCertFile"),
    flag("read.tlsServerName", Kind::String, "", "Name to verify the TLS certificate of -read.url against, instead of the URL's host"),
    flag("read.tlsInsecureSkipVerify", Kind::Bool, "false", "Whether to skip verifying the TLS certificate of -read.url. Insecure"),
    flag("write.tlsCAFile", Kind::String, "", "Path to a CA bundle for verifying the TLS certificate of -write.url. By default, public certificate authorities are trusted"),
    flag("write.tlsCertFile", Kind::String, "", "Path to a client certificate for mutual TLS with -write.url; needs -write.tlsKeyFile"),
    flag("write.tlsKeyFile", Kind::String, "", "Path to the private key of -write.tlsCertFile"),
    flag("write.tlsServerName", Kind::String, "", "Name to verify the TLS certificate of -write.url against, instead of the URL's host"),
    flag("write.tlsInsecureSkipVerify", Kind::Bool, "false", "Whether to skip verifying the TLS certificate of -write.url. Insecure"),
];

/// TLS settings for connecting to one backend (`-read.tls*` or `-write.tls*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// CA bundle to verify the backend's certificate with, instead of the default roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS; always given together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name to verify the backend's certificate against, when it differs from the URL's host.
    pub server_name: Option<String>,
    /// Skip certificate verification entirely (insecure; for test set-ups).
    pub insecure_skip_verify: bool,
}

/// What a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendType {
    /// VictoriaMetrics (single-node, vmselect, vminsert, or vmauth in front of them): it applies
    /// `extra_label` and `extra_filters[]` itself.
    VictoriaMetrics,
    /// Only the Prometheus HTTP API and remote write (Prometheus, Thanos, Mimir, Cortex): tenantgate
    /// enforces the grant itself.
    Prometheus,
}

impl BackendType {
    fn parse(text: &str) -> Result<BackendType, String> {
        match text {
            "victoriametrics" => Ok(BackendType::VictoriaMetrics),
            "prometheus" => Ok(BackendType::Prometheus),
            _ => Err(format!(
                "{text:?} is not a backend type; use victoriametrics or prometheus"
            )),
        }
    }

    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            BackendType::VictoriaMetrics => "victoriametrics",
            BackendType::Prometheus => "prometheus",
        }
    }
}

/// How the tenant is spelled in `-backend.tenantHeader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantFormat {
    /// `42:7`.
    AccountProject,
    /// `42`; only tenants with projectID 0 can be spelled.
    Account,
}

/// `-backend.tenantHeader` and its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantHeader {
    /// The header name, lower-case (a valid HTTP field name).
    pub name: String,
    /// `-backend.tenantHeaderFormat`.
    pub format: TenantFormat,
}

/// Headers a tenant must never be put in: they frame the request, carry identities or are rewritten by
/// the proxy.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-type",
    "content-encoding",
    "expect",
    "x-forwarded-for",
];

/// `-loadBalancingPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The backend with the fewest requests waiting for their answer head; ties round-robin.
    LeastLoaded,
    /// The first healthy backend in the order given.
    FirstAvailable,
}

/// Balancing and failover over several backends of one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// `-loadBalancingPolicy`.
    pub policy: Policy,
    /// `-failTimeout`: how long a failed backend is skipped before it is probed.
    pub fail_timeout: Duration,
    /// `-retryStatusCodes`: answers that count as a failure of the backend (never 429).
    pub retry_statuses: Vec<u16>,
    /// `-maxRequestBodySizeToRetry`: writes declaring at most this are held whole, so they can go again.
    pub max_body_to_retry: u64,
    /// `-maxRetryBufferSize`: the most all bodies held for retries take together.
    pub retry_buffer: u64,
    /// `-discoverBackendIPs` with its interval and server; `None` when off.
    pub discovery: Option<Discovery>,
}

/// `-discoverBackendIPs`: backends from DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// `-discoverBackendIPsInterval`.
    pub interval: Duration,
    /// `-dns.server` (`host:port`, a name resolved by the system every round); `None`: the system's
    /// resolver (and resolv.conf's server for SRV).
    pub server: Option<String>,
}

/// Where requests go.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// `-clusterMode`: the tenant goes into the path (`/select/<t>/...`, `/insert/<t>/...`).
    pub cluster_mode: bool,
    /// `-read.url`: the read backends, without a trailing slash; empty when reads are off.
    pub read_urls: Vec<String>,
    /// `-write.url`: the write backends, without a trailing slash; empty when writes are off.
    pub write_urls: Vec<String>,
    /// How several backends of a direction share its requests and replace each other.
    pub balance: Balance,
    /// `-read.backendType`.
    pub read_type: BackendType,
    /// `-write.backendType`.
    pub write_type: BackendType,
    /// `-backend.tenantHeader` with `-backend.tenantHeaderFormat`.
    pub tenant_header: Option<TenantHeader>,
    /// `-read.tls*`.
    pub read_tls: UpstreamTls,
    /// `-write.tls*`.
    pub write_tls: UpstreamTls,
    /// `-upstream.timeout`: deadline for a backend's answer head.
    pub timeout: Duration,
    /// `-upstream.idleConnTimeout`: how long idle pooled backend connections are kept.
    pub idle_conn_timeout: Duration,
}

pub(super) fn build(given: &Given) -> Result<BackendConfig, FlagError> {
    let config = BackendConfig {
        cluster_mode: given.get("clusterMode", parse_bool)?,
        read_urls: backend_urls(given, "read.url")?,
        write_urls: backend_urls(given, "write.url")?,
        balance: balance(given)?,
        read_type: given.get("read.backendType", BackendType::parse)?,
        write_type: given.get("write.backendType", BackendType::parse)?,
        tenant_header: tenant_header(given)?,
        read_tls: upstream_tls(given, "read")?,
        write_tls: upstream_tls(given, "write")?,
        timeout: given.get("upstream.timeout", parse_duration)?,
        idle_conn_timeout: given.get("upstream.idleConnTimeout", parse_duration)?,
    };
    if config.balance.discovery.is_none() {
        if let Some(url) = config
            .read_urls
            .iter()
            .chain(&config.write_urls)
            .find(|url| url.contains("://srv+"))
        {
            return Err(FlagError(format!(
                "{url:?} asks for SRV records (srv+), which needs -discoverBackendIPs"
            )));
        }
    }
    if config.cluster_mode {
        for (side, kind) in [("read", config.read_type), ("write", config.write_type)] {
            if kind == BackendType::Prometheus {
                return Err(FlagError(format!(
                    "-clusterMode is for VictoriaMetrics cluster backends; it cannot be combined with -{side}.backendType=prometheus (use -backend.tenantHeader for backends that take the tenant from a header)"
                )));
            }
        }
    }
    for (side, tls) in [("read", &config.read_tls), ("write", &config.write_tls)] {
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(FlagError(format!(
                "-{side}.tlsCertFile and -{side}.tlsKeyFile must be given together"
            )));
        }
    }
    Ok(config)
}

/// A list of backend URLs: comma-separated or repeated; an empty element, a URL without scheme or host,
/// or URLs with different paths (the path is the API prefix every request is built on) are refused.
fn backend_urls(given: &Given, name: &str) -> Result<Vec<String>, FlagError> {
    let items: Vec<Option<String>> = given.get_positional(name, |item| match item {
        "" => Ok(None),
        url => parse_backend_url(url).map(Some),
    })?;
    if items.len() <= 1 && items.iter().all(Option::is_none) {
        return Ok(Vec::new()); // not set, or set to "" (Go's zero value)
    }
    let mut urls: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let Some(url) = item else {
            return Err(FlagError(format!(
                "-{name} has an empty element; give each backend URL once, separated by commas"
            )));
        };
        if urls.contains(&url) {
            return Err(FlagError(format!("-{name} lists {url:?} twice")));
        }
        urls.push(url);
    }
    // A request's tried backends are one 64-bit word (`proxy::MAX_BACKENDS`).
    if urls.len() > 64 {
        return Err(FlagError(format!(
            "-{name} lists {} URLs; at most 64 backends per direction are supported",
            urls.len()
        )));
    }
    let path = super::values::backend_url_path;
    if let Some(other) = urls.iter().find(|u| path(u) != path(&urls[0])) {
        return Err(FlagError(format!(
            "-{name}: {other:?} and {:?} have different paths; the backends of one direction must serve the same API path",
            urls[0]
        )));
    }
    Ok(urls)
}

fn balance(given: &Given) -> Result<Balance, FlagError> {
    let policy = given.get("loadBalancingPolicy", |text| match text {
        "least_loaded" | "" => Ok(Policy::LeastLoaded),
        "first_available" => Ok(Policy::FirstAvailable),
        _ => Err(format!(
            "{text:?} is not a policy; use least_loaded or first_available"
        )),
    })?;
    let fail_timeout = given.get("failTimeout", parse_duration)?;
    if fail_timeout.is_zero() {
        return Err(FlagError(
            "-failTimeout must be positive: it is how long a failed backend is skipped".to_string(),
        ));
    }
    let retry_statuses = given.get_list("retryStatusCodes", |item| {
        let code: u16 = item
            .trim()
            .parse()
            .map_err(|_| format!("{item:?} is not an HTTP status code"))?;
        match code {
            429 => Err("429 is a tenant's limit, not a backend failure: retrying it on another backend would only multiply the load it limits".to_string()),
            100..=599 => Ok(code),
            _ => Err(format!("{code} is not an HTTP status code")),
        }
    })?;
    let discovery = if given.get("discoverBackendIPs", parse_bool)? {
        let interval = given.get("discoverBackendIPsInterval", parse_duration)?;
        if interval.is_zero() {
            return Err(FlagError(
                "-discoverBackendIPsInterval must be positive".to_string(),
            ));
        }
        let server = given.get_opt("dns.server", |text| {
            let port = text.rsplit_once(':').and_then(|(host, port)| {
                (!host.is_empty() && !host.contains(',')).then(|| port.parse::<u16>().ok())?
            });
            match port {
                Some(p) if p > 0 => Ok(text.to_string()),
                _ => Err("expected host:port, e.g. 127.0.0.1:8600 or consul:8600".to_string()),
            }
        })?;
        Some(Discovery { interval, server })
    } else {
        None
    };
    Ok(Balance {
        discovery,
        policy,
        fail_timeout,
        retry_statuses,
        max_body_to_retry: given.get("maxRequestBodySizeToRetry", parse_size)?,
        retry_buffer: given.get("maxRetryBufferSize", parse_size)?,
    })
}

fn tenant_header(given: &Given) -> Result<Option<TenantHeader>, FlagError> {
    let name = given.get("backend.tenantHeader", parse_string)?;
    let format = given.get("backend.tenantHeaderFormat", |text| match text {
        "account:project" => Ok(TenantFormat::AccountProject),
        "account" => Ok(TenantFormat::Account),
        _ => Err(format!(
            "{text:?} is not a tenant format; use account:project or account"
        )),
    })?;
    let name = name.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Ok(None);
    }
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(FlagError(format!(
            "-backend.tenantHeader={name:?} is not a valid HTTP header name"
        )));
    }
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(FlagError(format!(
            "-backend.tenantHeader={name:?} names a header that frames the request or carries identities; choose the header the backend reads the tenant from, e.g. X-Scope-OrgID"
        )));
    }
    Ok(Some(TenantHeader { name, format }))
}

/// `-read.tls*` or `-write.tls*`, by `side`.
fn upstream_tls(given: &Given, side: &str) -> Result<UpstreamTls, FlagError> {
    Ok(UpstreamTls {
        ca_file: given.get_opt(&format!("{side}.tlsCAFile"), parse_existing_file)?,
        cert_file: given.get_opt(&format!("{side}.tlsCertFile"), parse_existing_file)?,
        key_file: given.get_opt(&format!("{side}.tlsKeyFile"), parse_existing_file)?,
        server_name: given.get_opt(&format!("{side}.tlsServerName"), parse_string)?,
        insecure_skip_verify: given.get(&format!("{side}.tlsInsecureSkipVerify"), parse_bool)?,
    })
}
