//! Which requests tenantgate serves, and what each is: a read, a write, or one of its own endpoints.
//!
//! Pure: `(method, raw path)` in, a [`Route`] or a refusal out. It is an allow-list: a path that is not
//! named here is never forwarded. The path is matched as the client sent it, without decoding, and any
//! trick that a backend might decode into something else (dot segments, empty segments, encoded slashes,
//! backslashes, encoded dots, control bytes) is refused first, so what we classify is what the backend
//! will see.

use http::Method;

use crate::error::{ErrorKind, GatewayError};
use crate::ingest::rows::Format;

/// How an API path maps into a cluster's `/select/<tenant>` or `/insert/<tenant>` space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Prometheus-style API: cluster path is `/<select|insert>/<tenant>/prometheus<api path>`.
    Prometheus,
    /// Everything else keeps its own prefix: `/<select|insert>/<tenant><path>` (graphite, vmui, influx,
    /// opentelemetry, datadog, newrelic).
    Prefixed,
}

/// Reads that need special treatment because their content cannot be restricted by labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulesKind {
    /// `/api/v1/rules`.
    Rules,
    /// `/api/v1/alerts`.
    Alerts,
}

/// A request tenantgate accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/health`.
    Health,
    /// `/metrics`: tenantgate's own metrics.
    Metrics,
    /// `/flags`: the flags in force, secrets hidden.
    Flags,
    /// `/debug/pprof/...`: Go profiles in VictoriaMetrics; guarded by `-pprofAuthKey`, never served here.
    Pprof,
    /// The other probes every VictoriaMetrics component answers.
    Probe(Probe),
    /// A read or write of the metrics API, forwarded to a backend under the token's grant.
    Api(ApiCall),
}

/// An API request as the whole pipeline sees it: where its API part starts and what it is. Decided once
/// here from the raw path; later steps (auth's mode check, rate limits, body rules, rewriting, PromQL
/// enforcement, row counting) read it instead of looking at the path again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCall {
    /// Where the API part of the path starts and how it maps into a cluster's tenant space.
    pub api: Api,
    /// What the request is.
    pub endpoint: Endpoint,
}

/// What an API request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// A query, export or metadata request.
    Read(ReadEndpoint),
    /// Rules or alerts: a read whose answer covers every team of a tenant.
    Rules(RulesKind),
    /// An ingestion request, with the body format its path names.
    Write(Format),
}

impl ApiCall {
    /// Writes need the token's write bit, reads its read bit.
    pub fn is_write(&self) -> bool {
        matches!(self.endpoint, Endpoint::Write(_))
    }

    /// `Some` for rules and alerts.
    pub fn rules(&self) -> Option<RulesKind> {
        match self.endpoint {
            Endpoint::Rules(kind) => Some(kind),
            _ => None,
        }
    }
}

/// What a read is on a Prometheus-family backend (Prometheus, Thanos, Mimir: `-read.backendType`),
/// where tenantgate itself enforces the grant in PromQL (`crate::prom_api`). VictoriaMetrics backends
/// enforce `extra_label`/`extra_filters` on every one of them themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEndpoint {
    /// `query`, `query_range`, `query_exemplars`: every `query` is a PromQL expression.
    Expression,
    /// `series`, `labels`, `label/<name>/values`, `federate`: every `match[]` is a series selector;
    /// the grant's own selector is added when the client sent none.
    Selectors,
    /// `status/buildinfo`: nothing in it belongs to a tenant.
    Plain,
    /// `metadata`: help and type of every metric, which no selector restricts. Answered empty for a
    /// restricted grant (as VictoriaMetrics answers it), forwarded otherwise.
    Metadata,
    /// `status/tsdb`: the head block's cardinality, every team's series names included, which no
    /// selector restricts on Prometheus. Refused for a restricted grant, forwarded otherwise.
    TsdbStatus,
    /// An API only VictoriaMetrics has (`export`, `series/count`, Graphite, vmui).
    VictoriaMetricsOnly,
}

/// Probes with fixed answers, as in VictoriaMetrics' `lib/httpserver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/ping`: 204 (InfluxDB clients ask it).
    Ping,
    /// `/-/healthy`.
    Healthy,
    /// `/-/ready`.
    Ready,
    /// `/robots.txt`: nothing here is for crawlers.
    Robots,
    /// `/favicon.ico`: 204.
    Favicon,
}

/// Where the API part of the path starts, so rewriting needs no allocation to find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Api {
    /// How the path maps into the cluster's tenant space.
    pub family: Family,
    /// Byte offset in the raw path where the part kept in cluster mode begins (after a `/prometheus`
    /// prefix for the Prometheus family, 0 otherwise).
    pub start: usize,
}

impl Route {
    /// The metric label for the route's class: `read`, `write` or `internal`.
    pub fn class(&self) -> RouteClass {
        match self {
            Route::Health | Route::Metrics | Route::Flags | Route::Pprof | Route::Probe(_) => {
                RouteClass::Internal
            }
            Route::Api(call) if call.is_write() => RouteClass::Write,
            Route::Api(_) => RouteClass::Read,
        }
    }
}

/// Route classes, the `route` label of the request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Read = 0,
    Write = 1,
    Internal = 2,
    /// Refused before a route was known.
    Refused = 3,
}

impl RouteClass {
    /// All classes in metric order.
    pub const ALL: [RouteClass; 4] = [
        RouteClass::Read,
        RouteClass::Write,
        RouteClass::Internal,
        RouteClass::Refused,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            RouteClass::Read => "read",
            RouteClass::Write => "write",
            RouteClass::Internal => "internal",
            RouteClass::Refused => "refused",
        }
    }
}

/// Prometheus API reads (after the optional `/prometheus` prefix).
const READ_PATHS: &[(&str, ReadEndpoint)] = &[
    ("/api/v1/query", ReadEndpoint::Expression),
    ("/api/v1/query_range", ReadEndpoint::Expression),
    ("/api/v1/series", ReadEndpoint::Selectors),
    ("/api/v1/series/count", ReadEndpoint::VictoriaMetricsOnly),
    ("/api/v1/labels", ReadEndpoint::Selectors),
    ("/api/v1/export", ReadEndpoint::VictoriaMetricsOnly),
    ("/api/v1/export/native", ReadEndpoint::VictoriaMetricsOnly),
    ("/api/v1/export/csv", ReadEndpoint::VictoriaMetricsOnly),
    ("/federate", ReadEndpoint::Selectors),
    ("/api/v1/metadata", ReadEndpoint::Metadata),
    ("/api/v1/status/tsdb", ReadEndpoint::TsdbStatus),
    ("/api/v1/status/buildinfo", ReadEndpoint::Plain),
    ("/api/v1/query_exemplars", ReadEndpoint::Expression),
];

/// Prometheus-family writes (after the optional `/prometheus` prefix) and their body formats.
const WRITE_PATHS: &[(&str, Format)] = &[
    ("/api/v1/write", Format::RemoteWrite),
    // Mimir's and Cortex's remote-write path, which VictoriaMetrics serves too.
    ("/api/v1/push", Format::RemoteWrite),
    ("/api/v1/import", Format::JsonLines),
    ("/api/v1/import/native", Format::Native),
    ("/api/v1/import/csv", Format::Csv),
    ("/api/v1/import/prometheus", Format::PrometheusText),
];

/// Writes that keep their own prefix in cluster mode.
const PREFIXED_WRITE_PATHS: &[(&str, Format)] = &[
    ("/influx/write", Format::Influx),
    ("/influx/api/v2/write", Format::Influx),
    ("/opentelemetry/v1/metrics", Format::Other),
    ("/opentelemetry/api/v1/push", Format::Other),
    ("/datadog/api/v1/series", Format::Other),
    ("/datadog/api/v2/series", Format::Other),
];

/// Prefixes under which any (safe) path is a write, as VictoriaMetrics serves several there.
const PREFIXED_WRITE_TREES: &[&str] = &["/newrelic", "/datadog/"];

/// Prefixes under which any (safe) path is a read.
const PREFIXED_READ_TREES: &[&str] = &["/graphite/", "/vmui"];

/// Paths that name a tenant or administer the backend: refused with 403 so the client learns why.
const FORBIDDEN_PREFIXES: &[&str] = &[
    "/insert/",
    "/select/",
    "/delete/",
    "/admin/",
    "/api/v1/admin/",
    "/prometheus/api/v1/admin/",
    "/internal/",
    "/snapshot/",
    "/api/v1/status/active_queries",
    "/api/v1/status/top_queries",
    "/prometheus/api/v1/status/active_queries",
    "/prometheus/api/v1/status/top_queries",
];

/// Classifies a request. `path` is the raw path of the request target, without the query.
pub fn classify(method: &Method, path: &str) -> Result<Route, GatewayError> {
    check_path(path)?;
    match path {
        "/health" => return only_get(method, Route::Health),
        "/metrics" => return only_get(method, Route::Metrics),
        "/flags" => return only_get(method, Route::Flags),
        "/ping" => return only_get(method, Route::Probe(Probe::Ping)),
        "/-/healthy" => return only_get(method, Route::Probe(Probe::Healthy)),
        "/-/ready" => return only_get(method, Route::Probe(Probe::Ready)),
        "/robots.txt" => return only_get(method, Route::Probe(Probe::Robots)),
        "/favicon.ico" => return only_get(method, Route::Probe(Probe::Favicon)),
        _ => {}
    }
    if path == "/debug/pprof" || path.starts_with("/debug/pprof/") {
        return only_get(method, Route::Pprof);
    }
    for prefix in FORBIDDEN_PREFIXES {
        if path.starts_with(prefix) || path == prefix.trim_end_matches('/') {
            return Err(GatewayError::new(
                ErrorKind::Forbidden,
                "this path names a tenant or administers the backend; tenantgate takes the tenant from the token",
            ));
        }
    }
    let (api_path, start) = match path.strip_prefix("/prometheus") {
        Some(rest) if rest.starts_with('/') => (rest, "/prometheus".len()),
        _ => (path, 0),
    };
    let bare = api_path.strip_suffix('/').unwrap_or(api_path);
    let call = |family, start, endpoint| {
        Route::Api(ApiCall {
            api: Api { family, start },
            endpoint,
        })
    };
    let prometheus = |endpoint| call(Family::Prometheus, start, endpoint);
    if let Some((_, endpoint)) = READ_PATHS.iter().find(|(p, _)| *p == bare) {
        return read_method(method, prometheus(Endpoint::Read(*endpoint)));
    }
    if is_label_values(bare) {
        return read_method(method, prometheus(Endpoint::Read(ReadEndpoint::Selectors)));
    }
    match bare {
        "/api/v1/rules" => {
            return read_method(method, prometheus(Endpoint::Rules(RulesKind::Rules)))
        }
        "/api/v1/alerts" => {
            return read_method(method, prometheus(Endpoint::Rules(RulesKind::Alerts)))
        }
        _ => {}
    }
    if let Some((_, format)) = WRITE_PATHS.iter().find(|(p, _)| *p == bare) {
        // VictoriaMetrics matches write paths exactly (`app/vminsert/main.go`): with a trailing slash
        // it answers 404, so nothing there is a format whose rows count.
        let format = if bare.len() < api_path.len() {
            Format::Other
        } else {
            *format
        };
        return write_method(method, prometheus(Endpoint::Write(format)));
    }
    if start == 0 {
        let prefixed = |endpoint| call(Family::Prefixed, 0, endpoint);
        if let Some((_, format)) = PREFIXED_WRITE_PATHS.iter().find(|(p, _)| *p == bare) {
            return write_method(method, prefixed(Endpoint::Write(*format)));
        }
        if PREFIXED_WRITE_TREES.iter().any(|p| path.starts_with(p)) {
            return write_method(method, prefixed(Endpoint::Write(Format::Other)));
        }
        if PREFIXED_READ_TREES.iter().any(|p| path.starts_with(p)) {
            return read_method(
                method,
                prefixed(Endpoint::Read(ReadEndpoint::VictoriaMetricsOnly)),
            );
        }
    }
    Err(GatewayError::new(
        ErrorKind::NotFound,
        "unsupported path; tenantgate serves the Prometheus query and write APIs",
    ))
}

/// `/api/v1/label/<name>/values` with a plain or percent-encoded label name.
fn is_label_values(path: &str) -> bool {
    path.strip_prefix("/api/v1/label/")
        .and_then(|rest| rest.strip_suffix("/values"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// Refuses every path a backend could read differently from us.
fn check_path(path: &str) -> Result<(), GatewayError> {
    let bad = |why: &'static str| Err(GatewayError::new(ErrorKind::BadRequest, why));
    if !path.starts_with('/') {
        return bad("request path must start with /");
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' => {}
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return bad("request path has a broken percent-encoding");
                };
                let decoded = (h * 16 + l) as u8;
                // Encoded '/', '\', '.', '%' and control bytes are ways to make a backend see a path
                // we did not classify.
                if matches!(decoded, b'/' | b'\\' | b'.' | b'%')
                    || decoded < 0x20
                    || decoded == 0x7f
                {
                    return bad("request path has an encoded slash, dot, backslash, percent or control byte");
                }
                i += 2;
            }
            _ => return bad("request path has characters that are not allowed"),
        }
        i += 1;
    }
    // Empty and dot segments ("//", "/./", "/../"), except one trailing slash.
    let inner = path.strip_suffix('/').unwrap_or(path);
    for segment in inner.split('/').skip(1) {
        if segment.is_empty() || segment == "." || segment == ".." {
            return bad("request path has empty or dot segments");
        }
    }
    Ok(())
}

fn only_get(method: &Method, route: Route) -> Result<Route, GatewayError> {
    if method == Method::GET || method == Method::HEAD {
        Ok(route)
    } else {
        Err(method_not_allowed())
    }
}

fn read_method(method: &Method, route: Route) -> Result<Route, GatewayError> {
    if method == Method::GET || method == Method::POST || method == Method::HEAD {
        Ok(route)
    } else {
        Err(method_not_allowed())
    }
}

fn write_method(method: &Method, route: Route) -> Result<Route, GatewayError> {
    if method == Method::POST || method == Method::PUT {
        Ok(route)
    } else if method == Method::GET || method == Method::HEAD {
        // Some agents probe write endpoints; VictoriaMetrics answers those itself, but a GET carries
        // no data, so there is nothing to forward.
        Err(method_not_allowed())
    } else {
        Err(method_not_allowed())
    }
}

fn method_not_allowed() -> GatewayError {
    GatewayError::new(
        ErrorKind::MethodNotAllowed,
        "method not allowed on this path",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str) -> Result<Route, ErrorKind> {
        classify(&method, path).map_err(|e| e.kind)
    }

    fn endpoint(method: Method, path: &str) -> Option<(Api, Endpoint)> {
        match route(method, path) {
            Ok(Route::Api(call)) => Some((call.api, call.endpoint)),
            _ => None,
        }
    }

    #[test]
    fn reads_with_and_without_prefix() {
        for (p, kind) in READ_PATHS {
            let (api, e) = endpoint(Method::GET, p).unwrap();
            assert_eq!(
                (api.start, api.family, e),
                (0, Family::Prometheus, Endpoint::Read(*kind)),
                "{p}"
            );
            let prefixed = format!("/prometheus{p}");
            let (api, e) = endpoint(Method::POST, &prefixed).unwrap();
            assert_eq!((api.start, e), (11, Endpoint::Read(*kind)), "{prefixed}");
        }
        for (p, kind) in [
            ("/api/v1/label/__name__/values", ReadEndpoint::Selectors),
            ("/api/v1/query/", ReadEndpoint::Expression),
            ("/api/v1/label/job/values/", ReadEndpoint::Selectors),
            ("/vmui/", ReadEndpoint::VictoriaMetricsOnly),
            ("/vmui", ReadEndpoint::VictoriaMetricsOnly),
        ] {
            assert_eq!(
                endpoint(Method::GET, p).map(|(_, e)| e),
                Some(Endpoint::Read(kind)),
                "{p}"
            );
        }
        assert_eq!(
            endpoint(Method::GET, "/graphite/metrics/find"),
            Some((
                Api {
                    family: Family::Prefixed,
                    start: 0
                },
                Endpoint::Read(ReadEndpoint::VictoriaMetricsOnly)
            ))
        );
    }

    #[test]
    fn writes_and_their_formats() {
        for (p, format) in WRITE_PATHS {
            let (api, e) = endpoint(Method::POST, p).unwrap();
            assert_eq!(
                (api.family, e),
                (Family::Prometheus, Endpoint::Write(*format)),
                "{p}"
            );
            let (_, e) = endpoint(Method::PUT, &format!("/prometheus{p}")).unwrap();
            assert_eq!(e, Endpoint::Write(*format));
        }
        for (p, format) in PREFIXED_WRITE_PATHS {
            let (api, e) = endpoint(Method::POST, p).unwrap();
            assert_eq!(
                (api.family, e),
                (Family::Prefixed, Endpoint::Write(*format)),
                "{p}"
            );
        }
        assert_eq!(
            endpoint(Method::POST, "/influx/write").map(|(_, e)| e),
            Some(Endpoint::Write(Format::Influx))
        );
        assert_eq!(
            endpoint(Method::POST, "/newrelic/infra/v2/metrics/events/bulk").map(|(_, e)| e),
            Some(Endpoint::Write(Format::Other))
        );
        assert_eq!(
            endpoint(Method::POST, "/api/v1/write/").map(|(_, e)| e),
            Some(Endpoint::Write(Format::Other)),
            "VictoriaMetrics answers 404 there: no rows to count"
        );
        assert_eq!(
            route(Method::GET, "/api/v1/write"),
            Err(ErrorKind::MethodNotAllowed)
        );
    }

    #[test]
    fn rules_alerts_internal() {
        assert_eq!(
            endpoint(Method::GET, "/api/v1/rules").map(|(_, e)| e),
            Some(Endpoint::Rules(RulesKind::Rules))
        );
        assert_eq!(
            endpoint(Method::GET, "/prometheus/api/v1/alerts").map(|(_, e)| e),
            Some(Endpoint::Rules(RulesKind::Alerts))
        );
        assert_eq!(route(Method::GET, "/health"), Ok(Route::Health));
        assert_eq!(route(Method::GET, "/metrics"), Ok(Route::Metrics));
        assert_eq!(
            route(Method::POST, "/health"),
            Err(ErrorKind::MethodNotAllowed)
        );
    }

    #[test]
    fn tenant_admin_and_delete_paths_are_forbidden() {
        for p in [
            "/insert/0:0/prometheus/api/v1/write",
            "/select/1:0/prometheus/api/v1/query",
            "/delete/0:0/prometheus/api/v1/admin/tsdb/delete_series",
            "/api/v1/admin/tsdb/delete_series",
            "/prometheus/api/v1/admin/tsdb/snapshot",
            "/api/v1/status/active_queries",
            "/select",
        ] {
            assert_eq!(route(Method::GET, p), Err(ErrorKind::Forbidden), "{p}");
        }
    }

    #[test]
    fn path_tricks_are_refused() {
        for p in [
            "/prometheus/../select/0:0/api/v1/query",
            "/api/v1/../v1/query",
            "/api/v1/./query",
            "//api/v1/query",
            "/api//v1/query",
            "/api%2fv1/query",
            "/api%2Fv1%2Fquery",
            "/api/v1/%2e%2e/query",
            "/api/v1/query%00",
            "/api\\v1/query",
            "/api/v1/query%",
            "/api/v1/query%zz",
            "/api/v1/qu ery",
            "/api/v1/label/a%2F..%2F/values",
            "api/v1/query",
            "/api/v1/query\u{e9}",
        ] {
            assert_eq!(route(Method::GET, p), Err(ErrorKind::BadRequest), "{p}");
        }
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for p in [
            "/",
            "/api/v1/status/config",
            "/%61pi/v1/query",
            "/API/V1/QUERY",
            "/prometheus",
            "/prometheus/graphite/render",
            "/flagsx",
            "/debug/pprofx",
        ] {
            assert_eq!(route(Method::GET, p), Err(ErrorKind::NotFound), "{p}");
        }
    }

    #[test]
    fn victoriametrics_builtin_endpoints() {
        assert_eq!(route(Method::GET, "/flags"), Ok(Route::Flags));
        assert_eq!(route(Method::GET, "/debug/pprof/heap"), Ok(Route::Pprof));
        assert_eq!(route(Method::GET, "/debug/pprof"), Ok(Route::Pprof));
        assert_eq!(route(Method::GET, "/ping"), Ok(Route::Probe(Probe::Ping)));
        assert_eq!(
            route(Method::GET, "/-/healthy"),
            Ok(Route::Probe(Probe::Healthy))
        );
        assert_eq!(
            route(Method::POST, "/flags"),
            Err(ErrorKind::MethodNotAllowed)
        );
    }
}
