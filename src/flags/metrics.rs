//! Flags about tenantgate's own metrics: pushing them to VictoriaMetrics (`-pushmetrics.*`, as every
//! VictoriaMetrics component does; rate limiting shares usage between replicas this way) and whether
//! `/metrics` carries `# HELP` and `# TYPE` lines.

use std::time::Duration;

use super::values::{parse_bool, parse_header_name, parse_http_url, parse_positive_duration};
use super::{flag, secret, FlagError, FlagSpec, Given, Kind};
use crate::flags::limits::parse_label_pair;

pub(super) const FLAGS: &[FlagSpec] = &[
    secret("pushmetrics.url", Kind::Array, "", "Optional URL to push metrics exposed at /metrics page. See https://docs.victoriametrics.com/victoriametrics/single-server-victoriametrics/#push-metrics . By default, metrics exposed at /metrics page aren't pushed to any remote storage"),
    flag("pushmetrics.interval", Kind::Duration, "10s", "Interval for pushing metrics to every -pushmetrics.url"),
    flag("pushmetrics.extraLabel", Kind::Array, "", "Optional labels to add to metrics pushed to every -pushmetrics.url . For example, -pushmetrics.extraLabel='instance=\"foo\"' adds instance=\"foo\" label to all the metrics pushed to every -pushmetrics.url"),
    secret("pushmetrics.header", Kind::Array, "", "Optional HTTP request header to send to every -pushmetrics.url . For example, -pushmetrics.header='Authorization: Basic foobar' adds 'Authorization: Basic foobar' header to every request to every -pushmetrics.url"),
    flag("pushmetrics.disableCompression", Kind::Bool, "false", "Whether to disable request body compression when pushing metrics to every -pushmetrics.url"),
    flag("metrics.exposeMetadata", Kind::Bool, "false", "Whether to expose TYPE and HELP metadata at the /metrics page, which is exposed at -httpListenAddr . The metadata may be needed when the /metrics page is consumed by systems, which require this information. For example, Managed Prometheus in Google Cloud - https://cloud.google.com/stackdriver/docs/managed-prometheus/troubleshooting#missing-metric-type"),
];

/// tenantgate's own metrics.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// `-pushmetrics.url`.
    pub push_urls: Vec<String>,
    /// `-pushmetrics.interval`.
    pub push_interval: Duration,
    /// `-pushmetrics.extraLabel`, as `(name, value)`.
    pub push_extra_labels: Vec<(String, String)>,
    /// `-pushmetrics.header`, as `(lowercase name, value)`.
    pub push_headers: Vec<(String, String)>,
    /// `-pushmetrics.disableCompression`: send plain text instead of gzip.
    pub push_disable_compression: bool,
    /// `-metrics.exposeMetadata`.
    pub expose_metadata: bool,
}

pub(super) fn build(given: &Given) -> Result<MetricsConfig, FlagError> {
    Ok(MetricsConfig {
        push_urls: given.get_list("pushmetrics.url", parse_http_url)?,
        push_interval: given.get("pushmetrics.interval", parse_positive_duration)?,
        push_extra_labels: given.get_list("pushmetrics.extraLabel", parse_label_pair)?,
        push_headers: given.get_list("pushmetrics.header", parse_push_header)?,
        push_disable_compression: given.get("pushmetrics.disableCompression", parse_bool)?,
        expose_metadata: given.get("metrics.exposeMetadata", parse_bool)?,
    })
}

/// `Name: value`.
fn parse_push_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| "expected 'Name: value'".to_string())?;
    let name = parse_header_name(name.trim())?;
    let value = value.trim();
    if value.bytes().any(|b| b < b' ' && b != b'\t') {
        return Err("header values may not contain control characters".to_string());
    }
    Ok((name, value.to_string()))
}
