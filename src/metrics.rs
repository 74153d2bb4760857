//! tenantgate's own metrics, in the Prometheus text format at `/metrics`.
//!
//! Hand-rolled on fixed arrays of atomics rather than a metrics library: every label set is known at
//! compile time (route class x status, auth reason, upstream error kind), so recording a request is a few
//! relaxed atomic additions with no lock, no hashing and no allocation on the request path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub mod process;

use crate::error::AuthReason;
use crate::listen::watchdog::Verdict;
use crate::route::RouteClass;

/// Statuses counted individually; anything else lands in "other".
const STATUSES: [u16; 16] = [
    200, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 413, 415, 429, 500, 502,
];
const MORE_STATUSES: [u16; 2] = [503, 504];
const N_STATUS: usize = STATUSES.len() + MORE_STATUSES.len() + 1;

/// Histogram bucket upper bounds, in seconds: from a cache hit to a slow query.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// Kinds of upstream failure, the `kind` label of `tenantgate_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Connection refused or reset before an answer.
    Connect = 0,
    /// No answer within `-upstream.timeout`.
    Timeout = 1,
    /// The connection broke during the request or answer.
    Broken = 2,
}

impl UpstreamError {
    const ALL: [UpstreamError; 3] = [
        UpstreamError::Connect,
        UpstreamError::Timeout,
        UpstreamError::Broken,
    ];
    fn label(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Broken => "broken",
        }
    }
}

/// A latency histogram with fixed buckets ([`BUCKETS`]); recording is three relaxed atomic adds.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Appends the `_bucket`, `_sum` and `_count` series; `labels` is empty or ends with a comma.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let labels = match labels.trim_end_matches(',') {
            "" => String::new(),
            l => format!("{{{l}}}"),
        };
        let _ = writeln!(out, "{name}_sum{labels} {sum}");
        let _ = writeln!(out, "{name}_count{labels} {count}");
    }
}

/// All counters and histograms of one gateway.
#[derive(Default)]
pub struct Metrics {
    requests: [[AtomicU64; N_STATUS]; 4],
    request_duration: [Histogram; 4],
    upstream_duration: [Histogram; 2],
    auth_rejections: [AtomicU64; AuthReason::ALL.len()],
    upstream_errors: [AtomicU64; 3],
    stripped_args: AtomicU64,
    inflight: AtomicU64,
    concurrency_rejections: AtomicU64,
    /// Client connections closed by tenantgate: idle, slow header, lifetime.
    client_closes: [AtomicU64; 3],
    proxy_protocol_refusals: AtomicU64,
    tls_handshake_failures: AtomicU64,
    /// Form-typed bodies forwarded on write paths (VictoriaMetrics' `curl -d` examples).
    form_writes: AtomicU64,
    /// Answers given before their request body's end whose rest was thrown away, by protocol
    /// (HTTP/1.1: read and dropped, connection kept; HTTP/2: stream reset with NO_ERROR).
    bodies_discarded: [AtomicU64; 2],
    /// Bytes read and dropped from such bodies.
    body_bytes_discarded: AtomicU64,
    /// HTTP/1.1 connections closed lingering because a rest was too large, too slow or not asked for.
    closed_lingering: AtomicU64,
    /// Writes that could have been held for a retry but found `-maxRetryBufferSize` used up.
    retry_buffer_full: AtomicU64,
}

/// Gauges owned elsewhere, read when `/metrics` is rendered.
pub struct Gauges {
    /// Keys in the key set in force.
    pub verification_keys: usize,
    /// Verified-token cache hits.
    pub cache_hits: u64,
    /// Verified-token cache misses.
    pub cache_misses: u64,
    /// Extra text from the key fetcher (per-source metrics), already in exposition format.
    pub key_sources: String,
    /// More families owned by other parts (rate limits, pushes, the audit log), in exposition format.
    pub extra: String,
}

/// Writes one metric family: its `# HELP` and `# TYPE` lines, then one sample per `(label value, value)`
/// under the label `label` (or a single unlabelled sample when `label` is empty).
pub fn write_family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    samples: &[(&str, u64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (value, n) in samples {
        if label.is_empty() {
            let _ = writeln!(out, "{name} {n}");
        } else {
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
        }
    }
}

/// A label value escaped for the Prometheus text format (backslash, double quote, newline).
pub fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .chain(MORE_STATUSES.iter())
        .position(|s| *s == status)
        .unwrap_or(N_STATUS - 1)
}

fn status_label(i: usize) -> String {
    STATUSES
        .iter()
        .chain(MORE_STATUSES.iter())
        .nth(i)
        .map_or_else(|| "other".to_string(), |s| s.to_string())
}

impl Metrics {
    /// Records one finished request.
    pub fn request(&self, class: RouteClass, status: u16, took: Duration) {
        self.requests[class as usize][status_index(status)].fetch_add(1, Ordering::Relaxed);
        self.request_duration[class as usize].observe(took);
    }

    /// Records the time to the backend's response headers.
    pub fn upstream(&self, write: bool, took: Duration) {
        self.upstream_duration[usize::from(write)].observe(took);
    }

    /// Records a refused token.
    pub fn auth_rejection(&self, reason: AuthReason) {
        self.auth_rejections[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a failed upstream exchange.
    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records client-supplied restriction arguments that were removed.
    pub fn stripped(&self, n: usize) {
        if n > 0 {
            self.stripped_args.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Records a request refused by a concurrency limit.
    pub fn concurrency_rejection(&self) {
        self.concurrency_rejections.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a client connection closed by the watchdog.
    pub fn client_close(&self, why: Verdict) {
        let i = match why {
            Verdict::Keep => return,
            Verdict::Idle => 0,
            Verdict::SlowHeader => 1,
            Verdict::Lifetime => 2,
        };
        self.client_closes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a connection closed for a missing or bad PROXY protocol header.
    pub fn proxy_protocol_refusal(&self) {
        self.proxy_protocol_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a failed TLS handshake with a client (bad certificate, protocol, cipher).
    pub fn tls_handshake_failure(&self) {
        self.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a form-typed body forwarded on a write path.
    pub fn form_write(&self) {
        self.form_writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the rest of a request body thrown away after an early answer.
    pub fn body_discarded(&self, http2: bool, bytes: u64) {
        self.bodies_discarded[usize::from(http2)].fetch_add(1, Ordering::Relaxed);
        self.body_bytes_discarded
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records a connection closed lingering after an early answer (`bytes` read before giving up).
    pub fn closed_lingering(&self, bytes: u64) {
        self.closed_lingering.fetch_add(1, Ordering::Relaxed);
        self.body_bytes_discarded
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records a write streamed without a retry because `-maxRetryBufferSize` was used up.
    pub fn retry_buffer_full(&self) {
        self.retry_buffer_full.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request in flight until the guard drops.
    pub fn inflight(&self) -> InflightGuard<'_> {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(&self.inflight)
    }

    /// The exposition text; without `metadata` (`-metrics.exposeMetadata`, off by default as in
    /// VictoriaMetrics) the `# HELP` and `# TYPE` lines are left out.
    pub fn render(&self, gauges: &Gauges, metadata: bool) -> String {
        let text = self.render_all(gauges);
        if metadata {
            return text;
        }
        let mut out = String::with_capacity(text.len());
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    fn render_all(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(16384);
        out.push_str("# HELP tenantgate_requests_total Requests served, by route class and status.\n# TYPE tenantgate_requests_total counter\n");
        for class in RouteClass::ALL {
            for (i, counter) in self.requests[class as usize].iter().enumerate() {
                let n = counter.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "tenantgate_requests_total{{route=\"{}\",code=\"{}\"}} {n}",
                        class.label(),
                        status_label(i)
                    );
                }
            }
        }
        out.push_str("# HELP tenantgate_request_duration_seconds Time from request to response headers.\n# TYPE tenantgate_request_duration_seconds histogram\n");
        for class in RouteClass::ALL {
            let labels = format!("route=\"{}\",", class.label());
            self.request_duration[class as usize].render(
                &mut out,
                "tenantgate_request_duration_seconds",
                &labels,
            );
        }
        out.push_str("# HELP tenantgate_upstream_duration_seconds Time from forwarding to the backend's response headers.\n# TYPE tenantgate_upstream_duration_seconds histogram\n");
        for (i, name) in ["read", "write"].iter().enumerate() {
            self.upstream_duration[i].render(
                &mut out,
                "tenantgate_upstream_duration_seconds",
                &format!("route=\"{name}\","),
            );
        }
        out.push_str("# HELP tenantgate_auth_rejections_total Refused tokens, by reason.\n# TYPE tenantgate_auth_rejections_total counter\n");
        for reason in AuthReason::ALL {
            let _ = writeln!(
                out,
                "tenantgate_auth_rejections_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.auth_rejections[reason.index()].load(Ordering::Relaxed)
            );
        }
        // vmgateway's name for the same count, so alerts written for vmgateway keep working.
        let rejects: u64 = self
            .auth_rejections
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        let _ = writeln!(
            out,
            "# HELP vmgateway_auth_rejects_total Refused tokens (vmgateway's name; tenantgate_auth_rejections_total has the reasons).\n# TYPE vmgateway_auth_rejects_total counter\nvmgateway_auth_rejects_total {rejects}"
        );
        out.push_str("# HELP tenantgate_client_connections_closed_total Client connections tenantgate closed: idle (-http.idleConnTimeout), slow_header (-http.headerReadTimeout), lifetime (-http.connTimeout).\n# TYPE tenantgate_client_connections_closed_total counter\n");
        for (i, reason) in ["idle", "slow_header", "lifetime"].iter().enumerate() {
            let _ = writeln!(
                out,
                "tenantgate_client_connections_closed_total{{reason=\"{reason}\"}} {}",
                self.client_closes[i].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP tenantgate_upstream_errors_total Failed exchanges with backends.\n# TYPE tenantgate_upstream_errors_total counter\n");
        for kind in UpstreamError::ALL {
            let _ = writeln!(
                out,
                "tenantgate_upstream_errors_total{{kind=\"{}\"}} {}",
                kind.label(),
                self.upstream_errors[kind as usize].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP tenantgate_request_bodies_discarded_total Answers given before their request body's end (refusals, early backend answers) whose rest was thrown away: http1 read and dropped with the connection kept, http2 stream reset with NO_ERROR.\n# TYPE tenantgate_request_bodies_discarded_total counter\n");
        for (i, protocol) in ["http1", "http2"].iter().enumerate() {
            let _ = writeln!(
                out,
                "tenantgate_request_bodies_discarded_total{{protocol=\"{protocol}\"}} {}",
                self.bodies_discarded[i].load(Ordering::Relaxed)
            );
        }
        let counters: [(&str, &str, &str, u64); 12] = [
            (
                "tenantgate_retry_buffer_full_total",
                "counter",
                "Writes that streamed without the chance of a retry on another backend because -maxRetryBufferSize was used up.",
                self.retry_buffer_full.load(Ordering::Relaxed),
            ),
            (
                "tenantgate_request_body_bytes_discarded_total",
                "counter",
                "Bytes of request bodies read and thrown away after an early answer.",
                self.body_bytes_discarded.load(Ordering::Relaxed),
            ),
            (
                "tenantgate_connections_closed_after_refusal_total",
                "counter",
                "HTTP/1.1 connections answered with Connection: close and closed lingering because the unread rest of a request body was too large, too slow, or not to be asked for (Expect: 100-continue).",
                self.closed_lingering.load(Ordering::Relaxed),
            ),
            (
                "tenantgate_proxy_protocol_refusals_total",
                "counter",
                "Connections closed for a missing or invalid PROXY protocol header.",
                self.proxy_protocol_refusals.load(Ordering::Relaxed),
            ),
            (
                "tenantgate_tls_handshake_failures_total",
                "counter",
                "Failed TLS handshakes with clients.",
                self.tls_handshake_failures.load(Ordering::Relaxed),
            ),
            (
                "tenantgate_form_writes_total",
                "counter",
                "Form-typed bodies forwarded on write paths (VictoriaMetrics reads write arguments from the URL only).",
                self.form_writes.load(Ordering::Relaxed),
            ),
            (
                "tenantgate_stripped_arguments_total",
                "counter",
                "Client-supplied extra_label/extra_filters arguments removed.",
                self.stripped_args.load(Ordering::Relaxed),
            ),
            (
                "tenantgate_concurrency_rejections_total",
                "counter",
                "Requests refused by a concurrency limit.",
                self.concurrency_rejections.load(Ordering::Relaxed),
            ),
            (
                "tenantgate_requests_inflight",
                "gauge",
                "Requests being served.",
                self.inflight.load(Ordering::Relaxed),
            ),
            (
                "tenantgate_verification_keys",
                "gauge",
                "Keys in the key set in force.",
                gauges.verification_keys as u64,
            ),
            (
                "tenantgate_token_cache_hits_total",
                "counter",
                "Requests whose token was found verified in the cache.",
                gauges.cache_hits,
            ),
            (
                "tenantgate_token_cache_misses_total",
                "counter",
                "Requests whose token had to be verified.",
                gauges.cache_misses,
            ),
        ];
        for (name, kind, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tenantgate_build_info Build information.\n# TYPE tenantgate_build_info gauge\ntenantgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out.push_str(&gauges.key_sources);
        out.push_str(&gauges.extra);
        crate::reload::STATUS.render(&mut out);
        process::render(&mut out);
        out
    }
}

/// Decrements the in-flight gauge when dropped.
pub struct InflightGuard<'a>(&'a AtomicU64);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histograms() {
        let m = Metrics::default();
        m.request(RouteClass::Read, 200, Duration::from_millis(3));
        m.request(RouteClass::Read, 599, Duration::from_millis(3));
        m.auth_rejection(AuthReason::Expired);
        m.upstream_error(UpstreamError::Timeout);
        let text = m.render(
            &Gauges {
                verification_keys: 2,
                cache_hits: 5,
                cache_misses: 1,
                key_sources: String::new(),
                extra: String::new(),
            },
            true,
        );
        assert!(text.contains("tenantgate_requests_total{route=\"read\",code=\"200\"} 1"));
        assert!(text.contains("tenantgate_requests_total{route=\"read\",code=\"other\"} 1"));
        assert!(text.contains("tenantgate_auth_rejections_total{reason=\"expired\"} 1"));
        assert!(text.contains("tenantgate_upstream_errors_total{kind=\"timeout\"} 1"));
        assert!(text
            .contains("tenantgate_request_duration_seconds_bucket{route=\"read\",le=\"0.005\"} 2"));
        assert!(text.contains("tenantgate_request_duration_seconds_count{route=\"read\"} 2"));
        assert!(text.contains("tenantgate_verification_keys 2"));
        assert!(text.contains("tenantgate_token_cache_hits_total 5"));
    }
}
