//! What the pipeline does for Prometheus-family backends (`-read.backendType=prometheus`,
//! `-write.backendType=prometheus`), which know nothing of `extra_label` / `extra_filters`: tenantgate
//! enforces the grant itself.
//!
//! - Reads: every `query` and `match[]` the backend will read ([`prom_api`]) is rewritten by
//!   [`promql`] so each selector carries the grant's matchers; `match[]` is added where none was sent.
//!   Rewrites are kept in a bounded cache keyed by grant and text, so a dashboard refreshing the same
//!   queries parses and prints each once. Endpoints no selector restricts are answered empty
//!   (`metadata`) or refused (`status/tsdb`) for restricted grants; VictoriaMetrics-only APIs are refused.
//! - Rules and alerts: the answer is read whole and cut down to the grant ([`rules_filter`]).
//! - Remote write: the body is decoded, every series gets the grant's labels ([`relabel`]), and the new
//!   body is forwarded; its rows are counted exactly on the way, for rate limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};

use crate::auth::Grant;
use crate::error::{ErrorKind, GatewayError};
use crate::ingest::{decode, relabel, rows};
use crate::metrics::write_family;
use crate::prom_api::{self, Carrier};
use crate::promql::{self, EnforceError};
use crate::proxy::{BackendBody, RequestBody};
use crate::rewrite::strip_restricted;
use crate::route::{ReadEndpoint, RulesKind};
use crate::rules_filter::{self, Kind};

use super::answers::json_response;
use super::ResponseBody;

/// Bytes of query text (keys and rewrites) the cache holds at most.
const CACHE_BYTES: u64 = 32 << 20;

/// The largest rules or alerts answer tenantgate reads to filter; a larger one is a 502.
const MAX_RULES_ANSWER: usize = 64 << 20;

/// What a rewrite is cached under: the grant's restriction (its encoded read arguments, unique per
/// labels and filters), what the text is, and the text.
type Key = (Box<str>, u8, Box<str>);

/// A [`Key`] borrowed from the request, for lookups that allocate nothing; it hashes as the tuple.
struct KeyRef<'a>(&'a str, u8, &'a str);

impl std::hash::Hash for KeyRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.0, self.1, self.2).hash(state);
    }
}

impl quick_cache::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *key.0 == *self.0 && key.1 == self.1 && *key.2 == *self.2
    }
}

/// A cached rewrite or refusal.
type Rewritten = Result<Arc<str>, EnforceError>;

#[derive(Clone)]
struct TextWeight;

impl quick_cache::Weighter<Key, Rewritten> for TextWeight {
    fn weight(&self, key: &Key, value: &Rewritten) -> u64 {
        let value = value.as_ref().map_or(64, |v| v.len());
        (key.0.len() + key.2.len() + value + 64) as u64
    }
}

/// Why a query or grant was refused, as the `reason` label.
const REASONS: [&str; 7] = [
    "parse",
    "conflict",
    "unsupported",
    "too_complex",
    "not_selector",
    "several_filters",
    "bad_grant",
];

fn reason_index(e: &EnforceError) -> usize {
    match e {
        EnforceError::Parse(_) => 0,
        EnforceError::Conflict(_) => 1,
        EnforceError::Unsupported(_) => 2,
        EnforceError::TooComplex => 3,
        EnforceError::NotSelector => 4,
        EnforceError::SeveralFilters => 5,
        EnforceError::BadGrant(_) => 6,
    }
}

/// Outcomes of remote-write rewrites, as the `outcome` label.
const WRITE_OUTCOMES: [&str; 3] = ["rewritten", "bad_body", "unsupported"];

/// The Prometheus-family side of the gateway: the rewrite cache and its counters.
pub struct PrometheusBackends {
    cache: quick_cache::sync::Cache<Key, Rewritten, TextWeight>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    refused: [AtomicU64; REASONS.len()],
    rules_filtered: [AtomicU64; 2],
    rules_errors: AtomicU64,
    writes: [AtomicU64; WRITE_OUTCOMES.len()],
}

/// What to do with a read.
pub enum ReadPlan {
    /// Forward to this target with this body.
    Forward(String, RequestBody),
    /// Answer this without asking the backend.
    Answer(Response<ResponseBody>),
}

impl Default for PrometheusBackends {
    fn default() -> Self {
        PrometheusBackends {
            cache: quick_cache::sync::Cache::with_weighter(16_384, CACHE_BYTES, TextWeight),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            refused: Default::default(),
            rules_filtered: Default::default(),
            rules_errors: AtomicU64::new(0),
            writes: Default::default(),
        }
    }
}

impl PrometheusBackends {
    /// The grant's PromQL restriction, or the 403 of a grant PromQL cannot express.
    fn enforcement<'g>(&self, grant: &'g Grant) -> Result<&'g promql::Enforcement, GatewayError> {
        grant.promql().map_err(|e| self.refusal(e))
    }

    /// A refusal as the client hears it, counted.
    fn refusal(&self, e: &EnforceError) -> GatewayError {
        self.refused[reason_index(e)].fetch_add(1, Ordering::Relaxed);
        let kind = match e {
            EnforceError::SeveralFilters | EnforceError::BadGrant(_) => ErrorKind::Forbidden,
            _ => ErrorKind::BadRequest,
        };
        GatewayError::new(kind, e.to_string())
    }

    /// `text` rewritten for the grant (from the cache when it was seen before).
    fn enforce(&self, grant: &Grant, carrier: Carrier, text: &str) -> Rewritten {
        let e = grant.promql().map_err(Clone::clone)?;
        if let Some(hit) = self
            .cache
            .get(&KeyRef(&grant.args.read, carrier as u8, text))
        {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return hit;
        }
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
        let rewritten = match carrier {
            Carrier::Selectors => promql::enforce_selector(text, e),
            _ => promql::enforce_query(text, e),
        }
        .map(|s| Arc::from(s.as_str()));
        let key: Key = (
            Box::from(grant.args.read.as_str()),
            carrier as u8,
            Box::from(text),
        );
        self.cache.insert(key, rewritten.clone());
        rewritten
    }

    /// Plans a read: the upstream target (`base_path` + the API path + rewritten arguments) and body,
    /// or a local answer. `body` is a form body already read whole, or empty.
    pub fn read(
        &self,
        grant: &Grant,
        endpoint: ReadEndpoint,
        base_path: &str,
        api_path: &str,
        query: Option<&str>,
        body: RequestBody,
    ) -> Result<ReadPlan, GatewayError> {
        let restricted = grant.access.is_label_restricted();
        let carrier = match endpoint {
            ReadEndpoint::Expression => Carrier::Expression,
            ReadEndpoint::Selectors => Carrier::Selectors,
            ReadEndpoint::Plain => Carrier::None,
            ReadEndpoint::Metadata if restricted => {
                return Ok(ReadPlan::Answer(json_response(
                    StatusCode::OK,
                    r#"{"status":"success","data":{}}"#,
                )))
            }
            ReadEndpoint::Metadata => Carrier::None,
            ReadEndpoint::TsdbStatus if restricted => return Err(GatewayError::new(
                ErrorKind::Forbidden,
                "/api/v1/status/tsdb lists every team's series on Prometheus-family backends and cannot be restricted to this token's labels",
            )),
            ReadEndpoint::TsdbStatus => Carrier::None,
            ReadEndpoint::VictoriaMetricsOnly => {
                return Err(GatewayError::new(
                    ErrorKind::NotFound,
                    format!("{api_path} is a VictoriaMetrics API; the read backend speaks only the Prometheus API (-read.backendType=prometheus)"),
                ))
            }
        };
        self.plan(grant, carrier, base_path, api_path, query, body)
    }

    /// Plans a rules or alerts read: `exclude_alerts` dropped (the filter needs the alerts).
    pub fn rules(
        &self,
        grant: &Grant,
        base_path: &str,
        api_path: &str,
        query: Option<&str>,
        body: RequestBody,
    ) -> Result<ReadPlan, GatewayError> {
        self.enforcement(grant)?;
        self.plan(grant, Carrier::Rules, base_path, api_path, query, body)
    }

    fn plan(
        &self,
        grant: &Grant,
        carrier: Carrier,
        base_path: &str,
        api_path: &str,
        query: Option<&str>,
        body: RequestBody,
    ) -> Result<ReadPlan, GatewayError> {
        let mut enforce = |text: &str| self.enforce(grant, carrier, text);
        let mut target = String::with_capacity(base_path.len() + api_path.len() + 256);
        target.push_str(base_path);
        target.push_str(api_path);
        let mut args = String::new();
        let mut matches = 0;
        if let Some(q) = query {
            let done = prom_api::rewrite_args(q, carrier, &mut args, &mut enforce)
                .map_err(|e| self.refusal(&e))?;
            matches += done.enforced;
        }
        let body = match body {
            RequestBody::Full(bytes) => {
                let text = std::str::from_utf8(&bytes).map_err(|_| {
                    GatewayError::new(ErrorKind::BadRequest, "form body is not valid UTF-8")
                })?;
                let mut rewritten = String::with_capacity(text.len() + 64);
                let done = prom_api::rewrite_args(text, carrier, &mut rewritten, &mut enforce)
                    .map_err(|e| self.refusal(&e))?;
                matches += done.enforced;
                RequestBody::Full(Bytes::from(rewritten))
            }
            other => other,
        };
        if carrier == Carrier::Selectors && matches == 0 && grant.access.is_label_restricted() {
            prom_api::push_selector(
                &mut args,
                &promql::default_selector(self.enforcement(grant)?),
            );
        }
        if !args.is_empty() {
            target.push('?');
            target.push_str(&args);
        }
        Ok(ReadPlan::Forward(target, body))
    }

    /// Reads a rules or alerts answer whole and passes on only what the grant may see. The request
    /// went without `Accept-Encoding`, so the answer is plain JSON; anything else is a 502.
    pub async fn filter_rules_answer(
        &self,
        grant: &Grant,
        kind: RulesKind,
        response: Response<BackendBody>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let e = self.enforcement(grant)?;
        let (mut parts, body) = response.into_parts();
        let unreadable = |why: &str| {
            self.rules_errors.fetch_add(1, Ordering::Relaxed);
            GatewayError::new(
                ErrorKind::BadGateway,
                format!("the backend's rules or alerts answer cannot be filtered: {why}"),
            )
        };
        if parts.headers.contains_key(header::CONTENT_ENCODING) {
            return Err(unreadable("it is compressed"));
        }
        let bytes = Limited::new(body, MAX_RULES_ANSWER)
            .collect()
            .await
            .map_err(|e| unreadable(&e.to_string()))?
            .to_bytes();
        let (kind, index) = match kind {
            RulesKind::Rules => (Kind::Rules, 0),
            RulesKind::Alerts => (Kind::Alerts, 1),
        };
        let filtered =
            rules_filter::filter_rules(&bytes, kind, e).map_err(|e| unreadable(&e.to_string()))?;
        self.rules_filtered[index].fetch_add(1, Ordering::Relaxed);
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::TRANSFER_ENCODING);
        Ok(Response::from_parts(
            parts,
            Either::Right(Full::new(Bytes::from(filtered))),
        ))
    }

    /// Rewrites a remote-write body so every series carries the grant's labels. Returns the new body
    /// and, when `count_in` is given, its rows as VictoriaMetrics of that dialect would count them
    /// (what rate limits measure).
    pub fn remote_write(
        &self,
        grant: &Grant,
        headers: &HeaderMap,
        body: &[u8],
        max_decoded: usize,
        count_in: Option<&rows::Dialect>,
    ) -> Result<(Bytes, Option<u64>), GatewayError> {
        let outcome = |i: usize| self.writes[i].fetch_add(1, Ordering::Relaxed);
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("?"));
        if !relabel::is_remote_write_v1(content_type) {
            outcome(2);
            return Err(GatewayError::new(
                ErrorKind::UnsupportedMediaType,
                "only Prometheus remote write 1.0 (application/x-protobuf, prometheus.WriteRequest) is accepted by this receiver; remote write 2.0 cannot be relabelled yet",
            ));
        }
        let encoding = headers
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("?").trim());
        if !matches!(encoding, None | Some("") | Some("snappy")) {
            outcome(2);
            return Err(GatewayError::new(
                ErrorKind::UnsupportedMediaType,
                "remote-write bodies must be snappy-compressed (Content-Encoding: snappy)",
            ));
        }
        let labels = grant.remote_write_labels().map_err(|e| {
            GatewayError::new(
                ErrorKind::Forbidden,
                format!("the token's labels cannot be enforced: {e}"),
            )
        })?;
        let bad = |e: String| {
            outcome(1);
            GatewayError::new(ErrorKind::BadRequest, e)
        };
        let mut decoded = Vec::new();
        decode::snappy_block(body, max_decoded, &mut decoded)
            .map_err(|e| bad(format!("cannot decode remote-write body: {e}")))?;
        let mut out = Vec::new();
        relabel::enforce_labels_decoded(&decoded, labels, &mut out)
            .map_err(|e| bad(e.to_string()))?;
        let rows = count_in.map(|dialect| {
            rows::count_decoded_rows(dialect, rows::Format::RemoteWrite, None, &out)
                .map_or(0, |c| c.rows)
        });
        let compressed = snap::raw::Encoder::new()
            .compress_vec(&out)
            .map_err(|_| bad("rewritten body too large to encode".into()))?;
        outcome(0);
        Ok((Bytes::from(compressed), rows))
    }

    /// Prometheus text of the counters: the rules filter's always (it serves VictoriaMetrics backends
    /// too), the PromQL and remote-write ones when a side speaks the Prometheus API.
    pub fn render(&self, out: &mut String, prometheus_backend: bool) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let labelled =
            |names: &[&'static str], counters: &[AtomicU64]| -> Vec<(&'static str, u64)> {
                names
                    .iter()
                    .copied()
                    .zip(counters.iter().map(load))
                    .collect()
            };
        write_family(
            out,
            "tenantgate_rules_filtered_total",
            "counter",
            "Rules and alerts answers filtered to a token's labels.",
            "kind",
            &labelled(&["rules", "alerts"], &self.rules_filtered),
        );
        write_family(
            out,
            "tenantgate_rules_filter_errors_total",
            "counter",
            "Rules and alerts answers that could not be read to be filtered (answered 502).",
            "",
            &[("", load(&self.rules_errors))],
        );
        if !prometheus_backend {
            return;
        }
        write_family(out, "tenantgate_promql_rewrites_total", "counter",
            "PromQL queries and selectors rewritten for Prometheus-family backends, by whether the rewrite came from the cache.",
            "cache", &[("hit", load(&self.cache_hits)), ("miss", load(&self.cache_misses))]);
        write_family(out, "tenantgate_promql_refused_total", "counter",
            "Reads refused because their PromQL or the token's grant cannot be enforced, by reason.",
            "reason", &labelled(&REASONS, &self.refused));
        write_family(
            out,
            "tenantgate_promql_cache_bytes",
            "gauge",
            "Query text held by the PromQL rewrite cache.",
            "",
            &[("", self.cache.weight())],
        );
        write_family(
            out,
            "tenantgate_remote_write_relabel_total",
            "counter",
            "Remote-write bodies for Prometheus-family receivers, by outcome.",
            "outcome",
            &labelled(&WRITE_OUTCOMES, &self.writes),
        );
    }
}

/// The target of a remote write to a Prometheus-family receiver: its URL's path (`/api/v1/write` when
/// `-write.url` has none) and the client's arguments minus restricted ones.
pub fn remote_write_target(base_path: &str, query: Option<&str>) -> String {
    let mut target = String::from(if base_path.is_empty() {
        "/api/v1/write"
    } else {
        base_path
    });
    if let Some(q) = query {
        let mut args = String::new();
        strip_restricted(q, &mut args);
        if !args.is_empty() {
            target.push('?');
            target.push_str(&args);
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::{Access, Mode};

    fn grant(labels: &[(&str, &str)], filters: &[&str]) -> Grant {
        Grant::open(Access {
            tenant: Default::default(),
            extra_labels: labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            extra_filters: filters.iter().map(|f| f.to_string()).collect(),
            mode: Mode {
                read: true,
                write: true,
            },
        })
    }

    fn forward(plan: ReadPlan) -> (String, Option<Bytes>) {
        match plan {
            ReadPlan::Forward(target, RequestBody::Full(b)) => (target, Some(b)),
            ReadPlan::Forward(target, _) => (target, None),
            ReadPlan::Answer(_) => panic!("answered locally"),
        }
    }

    /// What the router makes of a read path.
    fn endpoint(path: &str) -> ReadEndpoint {
        use crate::route::{classify, ApiCall, Endpoint, Route};
        match classify(&http::Method::GET, path) {
            Ok(Route::Api(ApiCall {
                endpoint: Endpoint::Read(e),
                ..
            })) => e,
            other => panic!("{path} is no read: {other:?}"),
        }
    }

    #[test]
    fn queries_in_url_and_body_are_enforced_and_cached() {
        let p = PrometheusBackends::default();
        let g = grant(&[("team", "dev")], &[]);
        let body = RequestBody::Full(Bytes::from_static(b"query=sum(up)&step=15"));
        let (target, body) = forward(
            p.read(
                &g,
                endpoint("/api/v1/query_range"),
                "/prom",
                "/api/v1/query_range",
                Some("query=up"),
                body,
            )
            .unwrap(),
        );
        assert_eq!(
            target,
            "/prom/api/v1/query_range?query=up%7Bteam%3D%22dev%22%7D"
        );
        assert_eq!(
            body.unwrap(),
            "query=sum%28up%7Bteam%3D%22dev%22%7D%29&step=15"
        );
        let _ = p.read(
            &g,
            endpoint("/api/v1/query"),
            "",
            "/api/v1/query",
            Some("query=up"),
            RequestBody::Empty,
        );
        assert_eq!(p.cache_hits.load(Ordering::Relaxed), 1);
        assert_eq!(p.cache_misses.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn selectors_get_the_grant_when_none_is_sent() {
        let p = PrometheusBackends::default();
        let g = grant(&[("team", "dev")], &[]);
        let (target, _) = forward(
            p.read(
                &g,
                endpoint("/api/v1/labels"),
                "",
                "/api/v1/labels",
                Some("start=1"),
                RequestBody::Empty,
            )
            .unwrap(),
        );
        assert_eq!(
            target,
            "/api/v1/labels?start=1&match%5B%5D=%7Bteam%3D%22dev%22%7D"
        );
        let open = grant(&[], &[]);
        let (target, _) = forward(
            p.read(
                &open,
                endpoint("/api/v1/labels"),
                "",
                "/api/v1/labels",
                None,
                RequestBody::Empty,
            )
            .unwrap(),
        );
        assert_eq!(target, "/api/v1/labels");
    }

    #[test]
    fn refusals_have_the_right_status() {
        let p = PrometheusBackends::default();
        let g = grant(&[("team", "dev")], &[]);
        let status = |r: Result<ReadPlan, GatewayError>| match r {
            Err(e) => e.kind.status().as_u16(),
            Ok(_) => 200,
        };
        let read = |g: &Grant, path: &str, q: &str| {
            status(p.read(g, endpoint(path), "", path, Some(q), RequestBody::Empty))
        };
        assert_eq!(read(&g, "/api/v1/query", "query=up{team=\"ops\"}"), 400);
        assert_eq!(read(&g, "/api/v1/query", "query=WITH (x=1) x"), 400);
        assert_eq!(read(&g, "/api/v1/series", "match[]=rate(x[5m])"), 400);
        assert_eq!(read(&g, "/api/v1/status/tsdb", ""), 403);
        assert_eq!(read(&g, "/api/v1/export", ""), 404);
        assert_eq!(read(&g, "/api/v1/metadata", ""), 200);
        let two = grant(&[], &["{a=\"1\"}", "{b=\"2\"}"]);
        assert_eq!(read(&two, "/api/v1/query", "query=up"), 403);
        assert_eq!(read(&grant(&[], &[]), "/api/v1/status/tsdb", ""), 200);
    }

    #[test]
    fn remote_write_targets() {
        assert_eq!(remote_write_target("", None), "/api/v1/write");
        assert_eq!(
            remote_write_target("/api/v1/push", Some("extra_label=a%3Db&x=1")),
            "/api/v1/push?x=1"
        );
    }
}
