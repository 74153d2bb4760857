//! Flags that bound what clients may send: body sizes, requests at once (globally and per tenant),
//! and vmgateway's per-tenant rate limits (`-enable.rateLimit`, `-ratelimit.*`).

use std::path::PathBuf;
use std::time::Duration;

use super::values::{parse_bool, parse_duration, parse_positive_duration, parse_size, parse_usize};
use super::{flag, FlagError, FlagSpec, Given, Kind};

pub(super) const FLAGS: &[FlagSpec] = &[
    flag("maxRequestBodySize", Kind::Size, "64MiB", "Maximum size of a request body; larger requests get 413"),
    flag("maxFormBodySize", Kind::Size, "1MiB", "Maximum size of an application/x-www-form-urlencoded read request body, which is buffered to remove client-supplied extra_label and extra_filters"),
    flag("maxConcurrentRequests", Kind::Int, "0", "Maximum number of requests served at once; further requests get 429. 0 means unlimited"),
    flag("maxConcurrentRequestsPerTenant", Kind::Int, "0", "Maximum number of requests served at once for one tenant; further requests get 429. 0 means unlimited"),
    flag("enable.rateLimit", Kind::Bool, "false", "Whether to enable per-tenant rate limits from -ratelimit.config. Usage is shared across replicas through -datasource.url (see docs/ratelimit.md)"),
    flag("ratelimit.config", Kind::String, "", "Path or http(s) URL of the rate limits file (vmgateway's YAML: limits with type queries, rows_inserted, new_series or active_series, value, resolution minute (the default) or hour, optional account_id and project_id)"),
    flag("ratelimit.configCheckInterval", Kind::Duration, "0s", "How often -ratelimit.config is re-read; 0 means only on SIGHUP. A file that no longer parses keeps the limits in force"),
    flag("ratelimit.refreshInterval", Kind::Duration, "5s", "How often every replica's usage is read back from -datasource.url"),
    flag("ratelimit.extraLabels", Kind::Array, "", "Extra label=value selectors added to every usage query sent to -datasource.url, e.g. cluster=prod to pick one cluster's series from a shared datasource"),
    flag("ratelimit.writeStatusCode", Kind::Int, "429", "Status answered to writes over a limit: 429 (vmgateway's; vmagent retries it, stock Prometheus drops the batch unless retry_on_http_429 is set) or 503 (every sender retries)"),
    flag("ratelimit.shareUsage", Kind::Bool, "true", "Whether replicas share usage through -datasource.url. false makes each replica enforce every limit alone on its own traffic, which is only right for a single replica"),
    flag("ratelimit.instance", Kind::String, "", "This replica's name in the usage it publishes (the instance label); it must differ between replicas. Default: the host name and the first listen port"),
];

/// How many requests and how much data clients may send.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// `-maxRequestBodySize`.
    pub max_request_body_size: u64,
    /// `-maxFormBodySize`.
    pub max_form_body_size: u64,
    /// `-maxConcurrentRequests`; 0 means unlimited.
    pub max_concurrent_requests: usize,
    /// `-maxConcurrentRequestsPerTenant`; 0 means unlimited.
    pub max_concurrent_requests_per_tenant: usize,
    /// vmgateway's rate limiting.
    pub rate: RateLimitConfig,
}

/// `-enable.rateLimit` and `-ratelimit.*`.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// `-enable.rateLimit`.
    pub enabled: bool,
    /// `-ratelimit.config`: a file or an http(s) URL.
    pub config: Option<LimitsSource>,
    /// `-ratelimit.configCheckInterval`; zero means only on SIGHUP.
    pub config_check_interval: Duration,
    /// `-ratelimit.refreshInterval`; never zero.
    pub refresh_interval: Duration,
    /// `-ratelimit.extraLabels`, as `(name, value)`.
    pub extra_labels: Vec<(String, String)>,
    /// `-ratelimit.writeStatusCode`.
    pub write_status: WriteLimitStatus,
    /// `-ratelimit.shareUsage`.
    pub share_usage: bool,
    /// `-ratelimit.instance`; empty means derived at start-up.
    pub instance: String,
}

/// Where the limits file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitsSource {
    /// A local file.
    File(PathBuf),
    /// Fetched over http(s).
    Url(String),
}

/// What a write over its limit is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteLimitStatus {
    /// 429 Too Many Requests, as vmgateway.
    TooManyRequests,
    /// 503 Service Unavailable, which stock Prometheus retries.
    Unavailable,
}

pub(super) fn build(given: &Given) -> Result<LimitsConfig, FlagError> {
    let enabled = given.get("enable.rateLimit", parse_bool)?;
    let config = given.get_opt("ratelimit.config", |text| {
        parse_limits_source(text, enabled)
    })?;
    Ok(LimitsConfig {
        max_request_body_size: given.get("maxRequestBodySize", parse_size)?,
        max_form_body_size: given.get("maxFormBodySize", parse_size)?,
        max_concurrent_requests: given.get("maxConcurrentRequests", parse_usize)?,
        max_concurrent_requests_per_tenant: given
            .get("maxConcurrentRequestsPerTenant", parse_usize)?,
        rate: RateLimitConfig {
            enabled,
            config,
            config_check_interval: given.get("ratelimit.configCheckInterval", parse_duration)?,
            refresh_interval: given.get("ratelimit.refreshInterval", parse_positive_duration)?,
            extra_labels: given.get_list("ratelimit.extraLabels", parse_label_pair)?,
            write_status: given.get("ratelimit.writeStatusCode", parse_write_status)?,
            share_usage: given.get("ratelimit.shareUsage", parse_bool)?,
            instance: given.get("ratelimit.instance", |t| Ok(t.to_string()))?,
        },
    })
}

/// A file (which must exist when rate limiting is on) or an http(s) URL.
fn parse_limits_source(text: &str, enabled: bool) -> Result<LimitsSource, String> {
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return super::values::parse_http_url(text).map(LimitsSource::Url);
    }
    if enabled {
        super::values::parse_existing_file(text).map(LimitsSource::File)
    } else {
        Ok(LimitsSource::File(PathBuf::from(text)))
    }
}

/// `name=value` with a valid label name; quotes around the value are removed (`a="b"`).
pub(crate) fn parse_label_pair(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| "expected label=value".to_string())?;
    let name = name.trim();
    if !crate::auth::claims::is_label_name(name) {
        return Err(format!("{name:?} is not a valid label name"));
    }
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    Ok((name.to_string(), value.to_string()))
}

fn parse_write_status(text: &str) -> Result<WriteLimitStatus, String> {
    match text {
        "429" => Ok(WriteLimitStatus::TooManyRequests),
        "503" => Ok(WriteLimitStatus::Unavailable),
        _ => Err("expected 429 or 503".to_string()),
    }
}
