//! Flags about the backends requests are forwarded to: their URLs, what they speak (VictoriaMetrics, or
//! only the Prometheus API), whether they are a VictoriaMetrics cluster (tenant in the path) or take the
//! tenant from a header, TLS towards them, and the backend connection pool's timeouts.

use std::path::PathBuf;
use std::time::Duration;

use super::values::{
    parse_backend_url, parse_bool, parse_duration, parse_existing_file, parse_string,
};
use super::{flag, FlagError, FlagSpec, Given, Kind};

pub(super) const FLAGS: &[FlagSpec] = &[
    flag("clusterMode", Kind::Bool, "false", "Whether the backends are VictoriaMetrics cluster components (vminsert for -write.url, vmselect for -read.url); the tenant from the token then goes into the request path"),
    flag("read.url", Kind::String, "", "URL of the backend for queries: VictoriaMetrics single-node (e.g. http://victoria-metrics:8428) or vmselect with -clusterMode (e.g. http://vmselect:8481)"),
    flag("write.url", Kind::String, "", "URL of the backend for ingestion: VictoriaMetrics single-node (e.g. http://victoria-metrics:8428) or vminsert with -clusterMode (e.g. http://vminsert:8480)"),
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

/// Where requests go.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// `-clusterMode`: the tenant goes into the path (`/select/<t>/...`, `/insert/<t>/...`).
    pub cluster_mode: bool,
    /// `-read.url`, without a trailing slash.
    pub read_url: Option<String>,
    /// `-write.url`, without a trailing slash.
    pub write_url: Option<String>,
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
        read_url: given.get_opt("read.url", parse_backend_url)?,
        write_url: given.get_opt("write.url", parse_backend_url)?,
        read_type: given.get("read.backendType", BackendType::parse)?,
        write_type: given.get("write.backendType", BackendType::parse)?,
        tenant_header: tenant_header(given)?,
        read_tls: upstream_tls(given, "read")?,
        write_tls: upstream_tls(given, "write")?,
        timeout: given.get("upstream.timeout", parse_duration)?,
        idle_conn_timeout: given.get("upstream.idleConnTimeout", parse_duration)?,
    };
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
