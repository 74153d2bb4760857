//! `-pushmetrics.url`: tenantgate's `/metrics`, pushed every `-pushmetrics.interval` to each URL as
//! VictoriaMetrics components push theirs — Prometheus text with `-pushmetrics.extraLabel` added to every
//! series, gzip unless `-pushmetrics.disableCompression`, `-pushmetrics.header` on every request — for
//! example to VictoriaMetrics' `/api/v1/import/prometheus`. Rate limiting shares each replica's usage
//! this way, so the pushes are also counted (`metrics_push_total`, `metrics_push_errors_total`, by URL
//! with any password hidden) for alerts to watch.
//!
//! One task per URL; a push that fails is logged and counted, and the next one comes at the next tick.
//! tenantgate sends `POST` (VictoriaMetrics' pushes use `GET` with a body, which some proxies drop);
//! VictoriaMetrics' import endpoints take either. `user:password@` in a URL becomes Basic auth.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Uri};
use http_body_util::Full;
use tokio::task::JoinHandle;

use crate::flags::{MetricsConfig, UpstreamTls};
use crate::metrics::escape_label_value;
use crate::outbound::{redacted, HttpClient};

/// Counters of one URL's pushes.
pub struct PushTarget {
    url: String,
    shown: String,
    pushes: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
}

/// Counters of every URL's pushes, for `/metrics`.
#[derive(Default)]
pub struct PushStatus {
    targets: Vec<PushTarget>,
}

impl PushStatus {
    /// Counters for the URLs of `-pushmetrics.url`.
    pub fn new(config: &MetricsConfig) -> PushStatus {
        PushStatus {
            targets: config
                .push_urls
                .iter()
                .map(|url| PushTarget {
                    url: url.clone(),
                    shown: redacted(url),
                    pushes: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    bytes: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    /// Exposition text (VictoriaMetrics' names for the same counters).
    pub fn render(&self, out: &mut String) {
        if self.targets.is_empty() {
            return;
        }
        type Family = (&'static str, &'static str, fn(&PushTarget) -> u64);
        let families: [Family; 3] = [
            (
                "metrics_push_total",
                "Pushes of /metrics to -pushmetrics.url.",
                |t| t.pushes.load(Ordering::Relaxed),
            ),
            (
                "metrics_push_errors_total",
                "Pushes that failed (connection errors and non-2xx answers).",
                |t| t.errors.load(Ordering::Relaxed),
            ),
            (
                "metrics_push_bytes_pushed_total",
                "Bytes pushed, as sent (compressed unless -pushmetrics.disableCompression).",
                |t| t.bytes.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for target in &self.targets {
                let _ = writeln!(
                    out,
                    "{name}{{url=\"{}\"}} {}",
                    escape_label_value(&target.shown),
                    value(target)
                );
            }
        }
    }
}

/// Starts one pushing task per URL, each sending what `render` returns (the gateway's `/metrics`
/// text: passed in, so pushing depends on nothing of the server's).
pub fn start(
    config: &MetricsConfig,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    status: &Arc<PushStatus>,
) -> Result<Vec<JoinHandle<()>>, String> {
    if config.push_urls.is_empty() {
        return Ok(Vec::new());
    }
    let client = HttpClient::new(&UpstreamTls::default(), 1, Duration::from_secs(10))
        .map_err(|e| format!("-pushmetrics.url: {e}"))?;
    let labels = label_text(&config.push_extra_labels);
    let mut tasks = Vec::new();
    for i in 0..status.targets.len() {
        let request = PushRequest::new(&status.targets[i].url, config)?;
        let render = render.clone();
        let status = status.clone();
        let client = client.clone();
        let labels = labels.clone();
        let interval = config.push_interval;
        let compress = !config.push_disable_compression;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // The first push comes one interval after start, as in VictoriaMetrics.
            loop {
                tick.tick().await;
                let target = &status.targets[i];
                let body = body(&render(), &labels, compress);
                target.pushes.fetch_add(1, Ordering::Relaxed);
                target.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                if let Err(e) = request.send(&client, body, compress, interval).await {
                    target.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %target.shown, "cannot push metrics: {e}");
                }
            }
        }));
    }
    Ok(tasks)
}

/// A URL's request, prepared once.
struct PushRequest {
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl PushRequest {
    fn new(url: &str, config: &MetricsConfig) -> Result<PushRequest, String> {
        let shown = redacted(url);
        let (scheme, rest) = url.split_once("://").ok_or("missing scheme")?;
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (userinfo, host) = match rest[..authority_end].rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, &rest[..authority_end]),
        };
        let uri: Uri = format!("{scheme}://{host}{}", &rest[authority_end..])
            .parse()
            .map_err(|e| format!("-pushmetrics.url {shown}: {e}"))?;
        let mut headers = Vec::new();
        for (name, value) in &config.push_headers {
            headers.push((
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| format!("-pushmetrics.header: {e}"))?,
                HeaderValue::from_str(value).map_err(|e| format!("-pushmetrics.header: {e}"))?,
            ));
        }
        if let Some(userinfo) = userinfo {
            if !headers.iter().any(|(n, _)| n == header::AUTHORIZATION) {
                let decoded = percent_encoding::percent_decode_str(userinfo).decode_utf8_lossy();
                let token = base64::engine::general_purpose::STANDARD.encode(decoded.as_bytes());
                headers.push((
                    header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("Basic {token}")).map_err(|e| e.to_string())?,
                ));
            }
        }
        Ok(PushRequest { uri, headers })
    }

    async fn send(
        &self,
        client: &HttpClient,
        body: Vec<u8>,
        compressed: bool,
        interval: Duration,
    ) -> Result<(), String> {
        let mut request = Request::post(self.uri.clone())
            .header(header::CONTENT_TYPE, "text/plain")
            .header(
                header::USER_AGENT,
                concat!("tenantgate/", env!("CARGO_PKG_VERSION")),
            );
        if compressed {
            request = request.header(header::CONTENT_ENCODING, "gzip");
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let answer = client
            .send(request, interval + Duration::from_secs(1), 64 * 1024)
            .await?;
        if !answer.status.is_success() {
            return Err(format!(
                "unexpected status code {}; expecting 2xx; response body: {:?}",
                answer.status.as_u16(),
                String::from_utf8_lossy(&answer.body[..answer.body.len().min(512)])
            ));
        }
        Ok(())
    }
}

/// `a="x",b="y"` for `-pushmetrics.extraLabel`.
fn label_text(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(n, v)| format!("{n}=\"{}\"", escape_label_value(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The text with `labels` added to every series (right after `{`, as VictoriaMetrics does), gzipped
/// when `compress`.
fn body(text: &str, labels: &str, compress: bool) -> Vec<u8> {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if labels.is_empty() || line.starts_with('#') {
            out.push_str(line);
        } else if let Some(brace) = line.find('{').filter(|b| !line[..*b].contains(' ')) {
            out.push_str(&line[..=brace]);
            out.push_str(labels);
            if !line[brace + 1..].starts_with('}') {
                out.push(',');
            }
            out.push_str(&line[brace + 1..]);
        } else if let Some(space) = line.find(' ') {
            let _ = write!(out, "{}{{{labels}}}{}", &line[..space], &line[space..]);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !compress {
        return out.into_bytes();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(out.as_bytes());
    gz.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_labels_go_first_inside_the_braces() {
        let text = "# HELP a x\na 1\nb{c=\"d\"} 2\ne{} 3\n\n";
        let out = String::from_utf8(body(text, "instance=\"gw1\"", false)).unwrap();
        assert_eq!(
            out,
            "# HELP a x\na{instance=\"gw1\"} 1\nb{instance=\"gw1\",c=\"d\"} 2\ne{instance=\"gw1\"} 3\n"
        );
        assert_eq!(label_text(&[("a".into(), "x\"y".into())]), "a=\"x\\\"y\"");
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let packed = body("a 1\n", "", true);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a 1\n");
    }
}
