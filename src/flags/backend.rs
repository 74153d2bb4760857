//! Flags about the backends requests are forwarded to: their URLs, whether they are a VictoriaMetrics
//! cluster (tenant in the path), TLS towards them, and the backend connection pool's timeouts.

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

/// Where requests go.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// `-clusterMode`: the tenant goes into the path (`/select/<t>/...`, `/insert/<t>/...`).
    pub cluster_mode: bool,
    /// `-read.url`, without a trailing slash.
    pub read_url: Option<String>,
    /// `-write.url`, without a trailing slash.
    pub write_url: Option<String>,
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
        read_tls: upstream_tls(given, "read")?,
        write_tls: upstream_tls(given, "write")?,
        timeout: given.get("upstream.timeout", parse_duration)?,
        idle_conn_timeout: given.get("upstream.idleConnTimeout", parse_duration)?,
    };
    for (side, tls) in [("read", &config.read_tls), ("write", &config.write_tls)] {
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(FlagError(format!(
                "-{side}.tlsCertFile and -{side}.tlsKeyFile must be given together"
            )));
        }
    }
    Ok(config)
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
