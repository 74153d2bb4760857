//! The gateway's request pipeline ([`crate::listen`] accepts the connections and shuts down).
//!
//! A request's way is one direction: `-http.pathPrefix` is checked and removed, `OPTIONS` pre-flights are
//! answered, [`route::classify`] says what the request is, its guard (`-httpAuth.*` or an auth key) is
//! checked, [`Authenticator`] says what the token grants, [`rewrite`] builds the upstream target,
//! [`proxy::Upstream`] streams it to the backend and the answer back, and [`Metrics`] counts it. Every
//! refusal is a [`GatewayError`], answered in one place; every answer gets the same headers
//! ([`answers::Decoration`]) and, with `-auditLog`, one audit line when its body has been sent.

mod answers;
mod bodies;
mod forward;
mod own;
mod prometheus;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::task::JoinHandle;

use crate::audit::{AuditLog, AuditedBody, Record};
use crate::auth::claims::{Access, Mode};
use crate::auth::{fetch, Authenticator, Grant};
use crate::client_body::{self, ClientBody, Discarded, Unread};
use crate::error::{ErrorKind, GatewayError};
use crate::flags::{BackendType, Config, TenantFormat};
use crate::limit::Limits;
use crate::metrics::{Gauges, Metrics};
use crate::proxy::{BackendBody, Backends, ClientIp};
use crate::push::PushStatus;
use crate::ratelimit::RateLimiter;
use crate::reload::Reload;
use crate::rewrite::Topology;
use crate::route::{self, Probe, Route, RouteClass};
use crate::secrets::SecretValue;
pub use answers::hostname;
use answers::{text_response, Decoration};
use own::{Guard, Guards};
use prometheus::PrometheusBackends;

/// What a response body is inside the pipeline: a backend's stream or tenantgate's own bytes.
pub type ResponseBody = Either<BackendBody, Full<Bytes>>;

/// What the server sends: the body as is, or counted for the audit log.
pub type AnswerBody = Either<ResponseBody, AuditedBody<ResponseBody>>;

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    /// The flags in force.
    pub config: Config,
    topology: Topology,
    auth_header: http::HeaderName,
    /// Verifies tokens; `None` when `-enable.auth` is off.
    pub auth: Option<Arc<Authenticator>>,
    /// Used for every request when `-enable.auth` is off: tenant 0:0, no restrictions.
    open_grant: Arc<Grant>,
    /// The `-read.url` backends.
    read: Option<Arc<Backends>>,
    /// The `-write.url` backends.
    write: Option<Arc<Backends>>,
    /// Memory left for write bodies held whole so they can go to another backend, in KiB
    /// (`-maxRetryBufferSize`).
    retry_buffer: tokio::sync::Semaphore,
    /// `-read.backendType`, `-write.backendType`.
    read_type: BackendType,
    write_type: BackendType,
    /// PromQL rewrites, rules filtering and remote-write relabelling for Prometheus-family backends.
    prometheus: PrometheusBackends,
    /// `-backend.tenantHeader` and its format.
    tenant_header: Option<(http::HeaderName, TenantFormat)>,
    /// Request, auth and upstream counters.
    pub metrics: Metrics,
    /// Per-source key metrics, rendered into `/metrics`.
    pub key_status: Arc<fetch::KeyStatus>,
    limits: Limits,
    /// `-enable.rateLimit`.
    pub ratelimit: Option<Arc<RateLimiter>>,
    guards: Guards,
    decoration: Decoration,
    audit: Option<Arc<AuditLog>>,
    /// Counters of `-pushmetrics.url` pushes.
    pub push: Arc<PushStatus>,
    /// Tasks that live as long as the gateway (secret and TLS reloads, pushes).
    background: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Set when shutdown begins: `/health` answers 503 so load balancers stop sending.
    pub shutting_down: AtomicBool,
}

/// How a client connection goes on after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAnswer {
    /// Ready for the next request.
    KeepAlive,
    /// Unread request bytes are still arriving: the answer said `Connection: close`, and the socket
    /// closes lingering (`listen::linger`).
    CloseLingering,
}

/// What serving a request learnt, for metrics and the audit log.
#[derive(Default)]
struct Served {
    grant: Option<Arc<Grant>>,
    bytes_in: u64,
}

impl Gateway {
    /// Builds the gateway from flags; fails on unusable backend settings, keys or files. Must run inside
    /// the runtime: it starts the tasks that re-read secret files on `reload`.
    pub fn new(
        config: Config,
        auth: Option<Arc<Authenticator>>,
        key_status: Arc<fetch::KeyStatus>,
        ratelimit: Option<Arc<RateLimiter>>,
        reload: &Reload,
    ) -> Result<Gateway, String> {
        let backend = &config.backend;
        let pool = |direction: &'static str, urls: &[String], tls, kind| {
            if urls.is_empty() {
                return Ok(None);
            }
            // Prometheus, Thanos and Mimir answer /-/ready; VictoriaMetrics components /health.
            let probe = match kind {
                BackendType::VictoriaMetrics => "/health",
                BackendType::Prometheus => "/-/ready",
            };
            let pool = Backends::new(
                direction,
                urls,
                tls,
                (backend.timeout, backend.idle_conn_timeout),
                backend.balance.clone(),
                probe,
            )?;
            if urls.len() > 1 || backend.balance.discovery.is_some() {
                tracing::info!(
                    "{direction} backends ({:?}, -failTimeout={:?}, probed at {probe}{}): {}",
                    backend.balance.policy,
                    backend.balance.fail_timeout,
                    match &backend.balance.discovery {
                        Some(d) => format!(", discovered every {:?}", d.interval),
                        None => String::new(),
                    },
                    pool.names().join(", ")
                );
            }
            Ok::<_, String>(Some(Arc::new(pool)))
        };
        let read = pool(
            "read",
            &backend.read_urls,
            &backend.read_tls,
            backend.read_type,
        )?;
        let write = pool(
            "write",
            &backend.write_urls,
            &backend.write_tls,
            backend.write_type,
        )?;
        let auth_header = http::HeaderName::from_bytes(config.auth.header.as_bytes())
            .map_err(|e| format!("-auth.httpHeader: {e}"))?;
        let tenant_header = match &backend.tenant_header {
            Some(h) => Some((
                http::HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|e| format!("-backend.tenantHeader: {e}"))?,
                h.format,
            )),
            None => None,
        };
        let mut background = Vec::new();
        let mut secret = |value: &Option<crate::flags::Secret>,
                          flag: &str|
         -> Result<Option<Arc<SecretValue>>, String> {
            let Some(value) = value else { return Ok(None) };
            let loaded = SecretValue::load(value, flag)?;
            background.push(tokio::spawn(loaded.clone().watch(reload.subscribe())));
            Ok(Some(loaded))
        };
        let server = &config.server;
        let basic = match &server.http_auth {
            Some(b) => Some((
                secret(&Some(b.username.clone()), "httpAuth.username")?
                    .ok_or("httpAuth.username")?,
                secret(&Some(b.password.clone()), "httpAuth.password")?
                    .ok_or("httpAuth.password")?,
            )),
            None => None,
        };
        let guards = Guards {
            basic,
            metrics: secret(&server.metrics_auth_key, "metricsAuthKey")?,
            flags: secret(&server.flags_auth_key, "flagsAuthKey")?,
            pprof: secret(&server.pprof_auth_key, "pprofAuthKey")?,
        };
        let audit = match &config.log.audit {
            Some(target) => Some(AuditLog::start(
                target,
                config.log.max_arg_len,
                reload.subscribe(),
            )?),
            None => None,
        };
        Ok(Gateway {
            topology: if backend.cluster_mode {
                Topology::Cluster
            } else {
                Topology::Single
            },
            auth_header,
            auth,
            open_grant: Arc::new(Grant::open(Access {
                tenant: Default::default(),
                extra_labels: Vec::new(),
                extra_filters: Vec::new(),
                mode: Mode {
                    read: true,
                    write: true,
                },
            })),
            read,
            write,
            retry_buffer: tokio::sync::Semaphore::new(
                (backend.balance.retry_buffer / 1024)
                    .min(tokio::sync::Semaphore::MAX_PERMITS as u64) as usize,
            ),
            read_type: backend.read_type,
            write_type: backend.write_type,
            prometheus: PrometheusBackends::default(),
            tenant_header,
            metrics: Metrics::default(),
            key_status,
            limits: Limits::new(
                config.limits.max_concurrent_requests,
                config.limits.max_concurrent_requests_per_tenant,
            ),
            ratelimit,
            guards,
            decoration: Decoration::new(&config.server, &hostname())?,
            audit,
            push: Arc::new(PushStatus::new(&config.metrics)),
            background: std::sync::Mutex::new(background),
            shutting_down: AtomicBool::new(false),
            config,
        })
    }

    /// Resolves the backends' names once (`-discoverBackendIPs`) and keeps doing so every interval.
    pub async fn start_discovery(&self) {
        for pool in [&self.read, &self.write].into_iter().flatten() {
            if self.config.backend.balance.discovery.is_some() {
                pool.discover().await;
                self.keep(tokio::spawn(pool.clone().keep_discovering()));
            }
        }
    }

    /// Keeps `task` running for the gateway's life; it is stopped by [`Gateway::stop_background`].
    pub fn keep(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.background.lock() {
            tasks.push(task);
        }
    }

    /// Stops the background tasks (on shutdown).
    pub async fn stop_background(&self) {
        let tasks: Vec<JoinHandle<()>> = match self.background.lock() {
            Ok(mut tasks) => tasks.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Serves one request, recording its metrics and audit line, and says how the connection goes on
    /// after the answer.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: &ClientIp,
    ) -> (Response<AnswerBody>, AfterAnswer) {
        let started = Instant::now();
        let _inflight = self.metrics.inflight();
        let (parts, body) = request.into_parts();
        let (body, unread) = ClientBody::new(body);
        let request = Request::from_parts(parts, body);
        let version = request.version();
        let expects_continue = request.headers().contains_key(header::EXPECT);
        let record = self
            .audit
            .as_ref()
            .map(|log| log.begin(request.method(), request.uri(), client.addr));
        let declared_in = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut served = Served::default();
        let (class, result) = self.serve(request, client, &mut served).await;
        let (mut response, own, error) = match result {
            Ok(response) => (response, false, None),
            Err(e) => {
                match e.kind {
                    ErrorKind::Unauthorized(reason) => self.metrics.auth_rejection(reason),
                    ErrorKind::NoGrant => self
                        .metrics
                        .auth_rejection(crate::error::AuthReason::NoGrant),
                    _ => {}
                }
                let status = e.kind.status().as_u16();
                if e.kind.status().is_server_error() {
                    tracing::warn!(status, route = class.label(), "{}", e.message);
                } else {
                    tracing::debug!(status, route = class.label(), "{}", e.message);
                }
                let message = e.message.to_string();
                (e.to_response().map(Either::Right), true, Some(message))
            }
        };
        self.metrics
            .request(class, response.status().as_u16(), started.elapsed());
        self.decoration.apply(response.headers_mut(), own);
        let after = match unread.as_deref().and_then(Unread::take) {
            Some(rest) => {
                self.settle_unread(rest, version, expects_continue, &mut response)
                    .await
            }
            None => AfterAnswer::KeepAlive,
        };
        match (&self.audit, record) {
            (Some(log), Some(mut record)) => {
                fill_record(&mut record, &served, class, response.status(), error);
                record.bytes_in = served.bytes_in.max(declared_in.unwrap_or(0));
                let log = log.clone();
                let response = response
                    .map(|body| Either::Right(AuditedBody::new(body, record, started, log)));
                (response, after)
            }
            _ => (response.map(Either::Left), after),
        }
    }

    /// The connection after an answer given before the request body's end ([`client_body`]): on
    /// HTTP/1.1 a small rest is read and dropped and the connection stays; anything else closes it
    /// lingering, said in the answer. On HTTP/2 the stream just ends (`RST_STREAM(NO_ERROR)`).
    async fn settle_unread(
        &self,
        rest: Incoming,
        version: http::Version,
        expects_continue: bool,
        response: &mut Response<ResponseBody>,
    ) -> AfterAnswer {
        if version >= http::Version::HTTP_2 {
            drop(rest);
            self.metrics.body_discarded(true, 0);
            return AfterAnswer::KeepAlive;
        }
        match client_body::discard(rest, expects_continue).await {
            Discarded::Drained { bytes } => {
                self.metrics.body_discarded(false, bytes);
                AfterAnswer::KeepAlive
            }
            Discarded::MustClose { bytes } => {
                self.metrics.closed_lingering(bytes);
                tracing::debug!(
                    status = response.status().as_u16(),
                    "answered before the request body's end; closing the connection lingering"
                );
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                AfterAnswer::CloseLingering
            }
        }
    }

    async fn serve(
        &self,
        request: Request<ClientBody>,
        client: &ClientIp,
        served: &mut Served,
    ) -> (RouteClass, Result<Response<ResponseBody>, GatewayError>) {
        let prefix = &self.config.server.path_prefix;
        let path = request.uri().path();
        let unprefixed = if prefix.is_empty() {
            path
        } else {
            match path.strip_prefix(prefix.as_str()) {
                Some(rest) if rest.starts_with('/') => rest,
                Some("") => {
                    return (
                        RouteClass::Internal,
                        Ok(answers::redirect(&format!("{prefix}/"))),
                    )
                }
                _ => {
                    return (
                        RouteClass::Refused,
                        Err(GatewayError::new(
                            ErrorKind::BadRequest,
                            format!(
                            "missing -http.pathPrefix={prefix:?} in the requested path {path:?}"
                        ),
                        )),
                    )
                }
            }
        };
        if request.method() == Method::OPTIONS {
            return (RouteClass::Internal, Ok(self.decoration.preflight()));
        }
        let route = match route::classify(request.method(), unprefixed) {
            Ok(route) => route,
            Err(e) => return (RouteClass::Refused, Err(e)),
        };
        let class = route.class();
        let guard = match route {
            Route::Health | Route::Probe(_) => Guard::Open,
            Route::Metrics => Guard::Key("metricsAuthKey"),
            Route::Flags => Guard::Key("flagsAuthKey"),
            Route::Pprof => Guard::Key("pprofAuthKey"),
            Route::Api(_) => Guard::Basic,
        };
        if let Err(e) = self.guards.check(guard, request.headers(), request.uri()) {
            return (class, Err(e));
        }
        let prefix_len = path.len() - unprefixed.len();
        let result = match route {
            Route::Health => Ok(self.health()),
            Route::Probe(probe) => Ok(probe_answer(probe)),
            Route::Metrics => Ok(self.metrics_page()),
            Route::Flags => Ok(text_response(StatusCode::OK, self.config.flags_page())),
            Route::Pprof => Err(GatewayError::new(
                ErrorKind::NotFound,
                "tenantgate is not a Go program: there are no pprof profiles",
            )),
            Route::Api(call) => self.api(request, client, call, prefix_len, served).await,
        };
        (class, result)
    }

    fn health(&self) -> Response<ResponseBody> {
        if self.shutting_down.load(Ordering::Acquire) {
            return text_response(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
        }
        let (status, mut text) = match &self.auth {
            Some(auth) if !auth.is_ready() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no token verification keys loaded yet: identity provider unreachable\n"
                    .to_string(),
            ),
            Some(auth) if !auth.checks_signatures() => (
                StatusCode::OK,
                "OK\nWARNING: no key source configured; token signatures are NOT checked\n"
                    .to_string(),
            ),
            _ => (StatusCode::OK, "OK".to_string()),
        };
        for (direction, pool) in [("read", &self.read), ("write", &self.write)] {
            let Some(pool) = pool else { continue };
            let (up, all) = pool.up();
            // One backend is the plain set-up; none means discovery has found nothing yet.
            if all != 1 {
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&format!("{direction} backends: {up} of {all} up\n"));
            }
        }
        if let Some(limiter) = &self.ratelimit {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&limiter.health());
            text.push('\n');
        }
        text_response(status, text)
    }

    /// The metrics text, as `/metrics` serves it and pushes send it.
    pub fn metrics_text(&self) -> String {
        let (keys, hits, misses) = match &self.auth {
            Some(auth) => (
                auth.keys().len(),
                auth.cache_hits.load(Ordering::Relaxed),
                auth.cache_misses.load(Ordering::Relaxed),
            ),
            None => (0, 0, 0),
        };
        let mut extra = String::new();
        if let Some(auth) = &self.auth {
            auth.render(&mut extra);
        }
        if let Some(audit) = &self.audit {
            audit.render(&mut extra);
        }
        self.push.render(&mut extra);
        self.prometheus.render(
            &mut extra,
            self.read_type == BackendType::Prometheus || self.write_type == BackendType::Prometheus,
        );
        if let Some(limiter) = &self.ratelimit {
            limiter.render(&mut extra);
        }
        for pool in [&self.read, &self.write].into_iter().flatten() {
            pool.render(&mut extra);
        }
        self.metrics.render(
            &Gauges {
                verification_keys: keys,
                cache_hits: hits,
                cache_misses: misses,
                key_sources: self.key_status.render(),
                extra,
            },
            self.config.metrics.expose_metadata,
        )
    }

    fn metrics_page(&self) -> Response<ResponseBody> {
        let mut response = text_response(StatusCode::OK, self.metrics_text());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }
}

/// The fixed answers of VictoriaMetrics' probes.
fn probe_answer(probe: Probe) -> Response<ResponseBody> {
    match probe {
        Probe::Ping | Probe::Favicon => text_response(StatusCode::NO_CONTENT, ""),
        Probe::Healthy => text_response(StatusCode::OK, "VictoriaMetrics is Healthy.\n"),
        Probe::Ready => text_response(StatusCode::OK, "VictoriaMetrics is Ready.\n"),
        Probe::Robots => text_response(StatusCode::OK, "User-agent: *\nDisallow: /\n"),
    }
}

fn fill_record(
    record: &mut Record,
    served: &Served,
    class: RouteClass,
    status: StatusCode,
    error: Option<String>,
) {
    record.route = class.label();
    record.status = status.as_u16();
    record.error = error;
    if let Some(grant) = &served.grant {
        record.sub = grant.identity.subject.as_deref().map(String::from);
        record.client_id = grant.identity.client_id.as_deref().map(String::from);
        record.auth = Some(grant.via.label());
        record.tenant = Some(grant.args.tenant.clone());
        record.labels = grant.access.extra_labels.clone();
        record.filters = grant.access.extra_filters.clone();
    }
}
