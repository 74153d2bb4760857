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
use crate::error::{ErrorKind, GatewayError};
use crate::flags::{BackendType, Config, TenantFormat};
use crate::limit::Limits;
use crate::metrics::{Gauges, Metrics};
use crate::proxy::{BackendBody, ClientIp, OwnHeaders, RequestBody, Tap, Upstream};
use crate::push::PushStatus;
use crate::ratelimit::{self, RateLimiter};
use crate::reload::Reload;
use crate::rewrite::{self, Topology};
use crate::route::{self, Probe, Route, RouteClass, RulesKind};
use crate::secrets::SecretValue;
pub use answers::hostname;
use answers::{json_response, text_response, Decoration};
use own::{Guard, Guards};
use prometheus::{PrometheusBackends, ReadPlan};

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
    read: Option<Upstream>,
    write: Option<Upstream>,
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
        let upstream = |url: &Option<String>, tls| {
            url.as_deref()
                .map(|u| Upstream::new(u, tls, backend.timeout, backend.idle_conn_timeout))
                .transpose()
        };
        let read = upstream(&backend.read_url, &backend.read_tls)
            .map_err(|e| format!("-read.url: {e}"))?;
        let write = upstream(&backend.write_url, &backend.write_tls)
            .map_err(|e| format!("-write.url: {e}"))?;
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

    /// Serves one request, recording its metrics and audit line.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: &ClientIp,
    ) -> Response<AnswerBody> {
        let started = Instant::now();
        let _inflight = self.metrics.inflight();
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
        match (&self.audit, record) {
            (Some(log), Some(mut record)) => {
                fill_record(&mut record, &served, class, response.status(), error);
                record.bytes_in = served.bytes_in.max(declared_in.unwrap_or(0));
                let log = log.clone();
                response.map(|body| Either::Right(AuditedBody::new(body, record, started, log)))
            }
            _ => response.map(Either::Left),
        }
    }

    async fn serve(
        &self,
        request: Request<Incoming>,
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
            Route::Read(_) | Route::Rules(..) | Route::Write(_) => Guard::Basic,
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
            Route::Read(api) => {
                self.authenticated(request, client, api, None, false, prefix_len, served)
                    .await
            }
            Route::Rules(kind, api) => {
                self.authenticated(request, client, api, Some(kind), false, prefix_len, served)
                    .await
            }
            Route::Write(api) => {
                self.authenticated(request, client, api, None, true, prefix_len, served)
                    .await
            }
        };
        (class, result)
    }

    async fn grant(&self, request: &Request<Incoming>) -> Result<Arc<Grant>, GatewayError> {
        match &self.auth {
            Some(auth) => auth.authenticate_or_refresh(request.headers()).await,
            None => Ok(self.open_grant.clone()),
        }
    }

    /// Verifies the token once, checks its mode, answers rules and alerts where they cannot be
    /// restricted, and forwards everything else.
    #[allow(clippy::too_many_arguments)]
    async fn authenticated(
        &self,
        request: Request<Incoming>,
        client: &ClientIp,
        api: route::Api,
        rules: Option<RulesKind>,
        write: bool,
        prefix_len: usize,
        served: &mut Served,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let grant = self.grant(&request).await?;
        served.grant = Some(grant.clone());
        check_mode(grant.access.mode, write)?;
        if let Some(kind) = rules {
            // Rules and alerts (vmalert's, proxied by VictoriaMetrics single-node and vmselect, or a
            // Prometheus-family backend's own) cover every team of the tenant and take no label
            // arguments. A restricted token gets the answer filtered to its labels (`rules_filter`,
            // in `proxy`), which needs its grant as one PromQL selector; when it is not one (several
            // extra_filters, which VictoriaMetrics ORs, or a MetricsQL-only filter) a VictoriaMetrics
            // token sees an empty list rather than other teams' rules, and a Prometheus-family read
            // is refused with the reason (`prometheus::PrometheusBackends::rules`).
            if self.read_type == BackendType::VictoriaMetrics
                && grant.access.is_label_restricted()
                && grant.promql().is_err()
            {
                let body = match kind {
                    RulesKind::Rules => r#"{"status":"success","data":{"groups":[]}}"#,
                    RulesKind::Alerts => r#"{"status":"success","data":{"alerts":[]}}"#,
                };
                return Ok(json_response(StatusCode::OK, body));
            }
        }
        self.proxy(
            request, client, api, grant, write, rules, prefix_len, served,
        )
        .await
    }

    /// The value of `-backend.tenantHeader` for this grant, when the flag is set.
    fn tenant_header(
        &self,
        grant: &Grant,
    ) -> Result<Option<(&http::HeaderName, HeaderValue)>, GatewayError> {
        let Some((name, format)) = &self.tenant_header else {
            return Ok(None);
        };
        let tenant = grant.access.tenant;
        let text = match format {
            TenantFormat::AccountProject => grant.args.tenant.clone(),
            TenantFormat::Account if tenant.project == 0 => tenant.account.to_string(),
            TenantFormat::Account => {
                return Err(GatewayError::new(
                    ErrorKind::Forbidden,
                    format!("the token's tenant {tenant} has a non-zero projectID, which -backend.tenantHeaderFormat=account cannot pass on without mixing it up with tenant {}:0", tenant.account),
                ))
            }
        };
        let value = HeaderValue::from_str(&text)
            .map_err(|_| GatewayError::new(ErrorKind::Internal, "tenant is not a header value"))?;
        Ok(Some((name, value)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn proxy(
        &self,
        request: Request<Incoming>,
        client: &ClientIp,
        api: route::Api,
        grant: Arc<Grant>,
        write: bool,
        rules: Option<RulesKind>,
        prefix_len: usize,
        served: &mut Served,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let tenant_header = self.tenant_header(&grant)?;
        let prometheus = if write {
            self.write_type
        } else {
            self.read_type
        } == BackendType::Prometheus;
        if prometheus && write {
            return self
                .remote_write(
                    request,
                    client,
                    api,
                    grant,
                    prefix_len,
                    served,
                    tenant_header,
                )
                .await;
        }
        let _permit = self
            .limits
            .acquire(&grant)
            .inspect_err(|_| self.metrics.concurrency_rejection())?;
        let upstream = if write { &self.write } else { &self.read }
            .as_ref()
            .ok_or_else(|| {
                GatewayError::new(
                    ErrorKind::NotFound,
                    if write {
                        "writes are not enabled on this gateway (no -write.url)"
                    } else {
                        "reads are not enabled on this gateway (no -read.url)"
                    },
                )
            })?;
        // Judged before the body is read: a batch is never refused for being larger than what is left.
        let admission = match &self.ratelimit {
            Some(limiter) => limiter.admit(grant.access.tenant, write)?,
            None => None,
        };
        let (mut parts, body) = request.into_parts();
        let limits = &self.config.limits;
        let body = if write {
            bodies::write_body(
                &parts.headers,
                body,
                limits.max_request_body_size,
                &self.metrics,
            )?
        } else {
            let form = bodies::read_body(
                &parts.headers,
                body,
                limits.max_form_body_size,
                &self.metrics,
            )
            .await?;
            // Go's `Request.ParseForm` reads the body of POST, PUT and PATCH only, so a GET or HEAD
            // body is nothing a backend reads. It must not be forwarded either: enforcement that
            // counted a `match[]` in it would let the backend answer without any.
            if parts.method == http::Method::POST {
                form
            } else {
                RequestBody::Empty
            }
        };
        let filter_rules = rules.is_some() && grant.access.is_label_restricted();
        if filter_rules {
            // The filter reads the answer: it must come uncompressed.
            parts.headers.remove(header::ACCEPT_ENCODING);
        }
        let path = &parts.uri.path()[prefix_len..];
        let (target, body) = if prometheus {
            // The backend's own API prefix (Mimir's `/prometheus`) comes from -read.url; a client's
            // VictoriaMetrics-style `/prometheus` prefix is dropped.
            let api_path = &path[api.start..];
            let planned = match rules {
                Some(_) => self.prometheus.rules(
                    &grant,
                    &upstream.base_path,
                    api_path,
                    parts.uri.query(),
                    body,
                ),
                None => self.prometheus.read(
                    &grant,
                    &upstream.base_path,
                    api_path,
                    parts.uri.query(),
                    body,
                ),
            }?;
            match planned {
                ReadPlan::Forward(target, body) => (target, body),
                ReadPlan::Answer(answer) => return Ok(answer),
            }
        } else {
            let (target, dropped) = rewrite::upstream_target(
                self.topology,
                write,
                &upstream.base_path,
                api,
                path,
                parts.uri.query(),
                &grant.args,
            );
            self.metrics.stripped(dropped);
            if dropped > 0 {
                tracing::info!(dropped, tenant = %grant.access.tenant, "removed client-supplied extra_label/extra_filters arguments");
            }
            (target, body)
        };
        if self.config.server.disable_response_compression {
            parts.headers.remove(header::ACCEPT_ENCODING);
        }
        let counting = admission.as_ref().filter(|a| a.count_rows).and_then(|a| {
            use crate::ingest::rows::{format_for_path, Format};
            let path = &parts.uri.path()[prefix_len..];
            let format = format_for_path(&path[api.start..]);
            // Formats without a row parser here add nothing to the count: no copy, no task.
            if format == Format::Other {
                return None;
            }
            Some(RowsToCount {
                format,
                plan: self
                    .ratelimit
                    .as_deref()
                    .map_or(ratelimit::RowsPlan::Exact, |l| a.rows_plan(l, format)),
                encoding: parts
                    .headers
                    .get(header::CONTENT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                csv_format: parts.uri.query().and_then(csv_format),
            })
        });
        let mut tap = match &counting {
            Some(rows) if rows.plan == ratelimit::RowsPlan::Exact => {
                Tap::copying(ratelimit::MAX_COUNTED_BODY)
            }
            _ => Tap::default(),
        };
        let own = OwnHeaders {
            auth: &self.auth_header,
            tenant: tenant_header,
        };
        let outcome = upstream
            .forward(parts, target, body, &mut tap, client, own)
            .await;
        served.bytes_in = tap.bytes;
        match outcome {
            Ok((response, took)) => {
                self.metrics.upstream(write, took);
                if let (Some(rows), Some(admission), Some(limiter)) =
                    (counting, admission, &self.ratelimit)
                {
                    if response.status().is_success() {
                        match tap.copy.take() {
                            Some(copy) => rows.count_later(limiter.clone(), admission, copy),
                            None => limiter.rows_estimated(&admission, rows.format, tap.bytes),
                        }
                    }
                }
                match rules {
                    Some(kind) if filter_rules => {
                        self.prometheus
                            .filter_rules_answer(&grant, kind, response)
                            .await
                    }
                    _ => Ok(response.map(Either::Left)),
                }
            }
            Err((kind, e)) => {
                if let Some(kind) = kind {
                    self.metrics.upstream_error(kind);
                }
                Err(e)
            }
        }
    }

    /// A remote write to a Prometheus-family receiver: the body read whole, every series given the
    /// token's labels, the new body forwarded to the receiver's URL, its rows reported to rate limits.
    #[allow(clippy::too_many_arguments)]
    async fn remote_write(
        &self,
        request: Request<Incoming>,
        client: &ClientIp,
        api: route::Api,
        grant: Arc<Grant>,
        prefix_len: usize,
        served: &mut Served,
        tenant_header: Option<(&http::HeaderName, HeaderValue)>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let path = &request.uri().path()[prefix_len..];
        let format = crate::ingest::rows::format_for_path(&path[api.start..]);
        if format != crate::ingest::rows::Format::RemoteWrite {
            return Err(GatewayError::new(
                ErrorKind::NotFound,
                format!("{path}: the write backend is a Prometheus remote-write receiver (-write.backendType=prometheus), which takes only remote write (/api/v1/write); send other formats to a VictoriaMetrics backend"),
            ));
        }
        let _permit = self
            .limits
            .acquire(&grant)
            .inspect_err(|_| self.metrics.concurrency_rejection())?;
        let upstream = self.write.as_ref().ok_or_else(|| {
            GatewayError::new(
                ErrorKind::NotFound,
                "writes are not enabled on this gateway (no -write.url)",
            )
        })?;
        let admission = match &self.ratelimit {
            Some(limiter) => limiter.admit(grant.access.tenant, true)?,
            None => None,
        };
        let (parts, body) = request.into_parts();
        let limits = &self.config.limits;
        let raw =
            bodies::whole_write_body(&parts.headers, body, limits.max_request_body_size).await?;
        served.bytes_in = raw.len() as u64;
        // Rows are counted (exactly: the body is decoded anyway) only where a rows limit needs them.
        let count_in = match (&admission, self.ratelimit.as_deref()) {
            (Some(a), Some(limiter)) if a.count_rows => Some(limiter.dialect),
            _ => None,
        };
        // Decoded bodies are bounded too: a small snappy block can claim gigabytes.
        let max_decoded = (limits.max_request_body_size.saturating_mul(8)).max(64 << 20) as usize;
        let (rewritten, rows) = self.prometheus.remote_write(
            &grant,
            &parts.headers,
            &raw,
            max_decoded,
            count_in.as_ref(),
        )?;
        let target = prometheus::remote_write_target(&upstream.base_path, parts.uri.query());
        let own = OwnHeaders {
            auth: &self.auth_header,
            tenant: tenant_header,
        };
        let mut tap = Tap::default();
        let outcome = upstream
            .forward(
                parts,
                target,
                RequestBody::Full(rewritten),
                &mut tap,
                client,
                own,
            )
            .await;
        match outcome {
            Ok((response, took)) => {
                self.metrics.upstream(true, took);
                if let (Some(admission), Some(limiter), Some(rows)) =
                    (admission, &self.ratelimit, rows)
                {
                    if response.status().is_success() {
                        limiter.rows_counted(
                            &admission,
                            crate::ingest::rows::Format::RemoteWrite,
                            raw.len() as u64,
                            rows,
                        );
                    }
                }
                Ok(response.map(Either::Left))
            }
            Err((kind, e)) => {
                if let Some(kind) = kind {
                    self.metrics.upstream_error(kind);
                }
                Err(e)
            }
        }
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

/// What a write's rows are counted from once the backend accepted it.
struct RowsToCount {
    format: crate::ingest::rows::Format,
    plan: ratelimit::RowsPlan,
    encoding: Option<String>,
    csv_format: Option<String>,
}

/// Bodies up to this size are counted on a runtime thread; larger ones on a blocking thread.
const COUNT_INLINE: usize = 1 << 20;

impl RowsToCount {
    /// Counts the rows of `body` off the request path and reports them to the limiter.
    fn count_later(
        self,
        limiter: Arc<RateLimiter>,
        admission: ratelimit::Admission,
        body: Vec<u8>,
    ) {
        let small = body.len() <= COUNT_INLINE;
        let size = body.len() as u64;
        let count = move || {
            use crate::ingest::rows;
            let dialect = limiter.dialect;
            let counted =
                rows::encoding_from_header(self.encoding.as_deref(), self.format, &dialect)
                    .map_err(|e| e.to_string())
                    .and_then(|encoding| {
                        rows::count_rows(
                            &dialect,
                            self.format,
                            encoding,
                            self.csv_format.as_deref(),
                            &body,
                            ratelimit::MAX_COUNTED_BODY * 8,
                        )
                        .map_err(|e| e.to_string())
                    });
            match counted {
                Ok(counted) => limiter.rows_counted(&admission, self.format, size, counted.rows),
                Err(e) => tracing::debug!("cannot count the rows of an accepted write: {e}"),
            }
        };
        if small {
            tokio::spawn(async move { count() });
        } else {
            tokio::task::spawn_blocking(count);
        }
    }
}

/// The `format` argument of a CSV import, form-decoded.
fn csv_format(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("format=")?;
        Some(
            percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned(),
        )
    })
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
        record.tenant = Some(grant.args.tenant.clone());
        record.labels = grant.access.extra_labels.clone();
        record.filters = grant.access.extra_filters.clone();
    }
}

fn check_mode(mode: Mode, write: bool) -> Result<(), GatewayError> {
    match (write, mode.read, mode.write) {
        (false, false, _) => Err(GatewayError::new(
            ErrorKind::Forbidden,
            "this token may not read (vm_access mode is write-only)",
        )),
        (true, _, false) => Err(GatewayError::new(
            ErrorKind::Forbidden,
            "this token may not write (vm_access mode is read-only)",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_checks() {
        let ro = Mode {
            read: true,
            write: false,
        };
        let wo = Mode {
            read: false,
            write: true,
        };
        assert!(check_mode(ro, false).is_ok());
        assert_eq!(check_mode(ro, true).unwrap_err().kind, ErrorKind::Forbidden);
        assert_eq!(
            check_mode(wo, false).unwrap_err().kind,
            ErrorKind::Forbidden
        );
        assert!(check_mode(wo, true).is_ok());
    }
}
