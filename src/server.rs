//! The gateway's request pipeline, `/health` and `/metrics` ([`crate::listen`] accepts the
//! connections and shuts down).
//!
//! A request's way is one direction: [`route::classify`] says what it is, [`Authenticator`] says what
//! the token grants, [`rewrite`] builds the upstream target, [`proxy::Upstream`] streams it to the
//! backend and the answer back, and [`Metrics`] counts it. Every refusal is a [`GatewayError`], answered
//! in one place.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Incoming};

use crate::auth::claims::{Access, Mode};
use crate::auth::{fetch, Authenticator, Grant};
use crate::error::{ErrorKind, GatewayError};
use crate::flags::Config;
use crate::limit::Limits;
use crate::metrics::{Gauges, Metrics};
use crate::proxy::{BackendBody, ClientIp, RequestBody, Upstream};
use crate::rewrite::{self, Topology};
use crate::route::{self, Route, RouteClass, RulesKind};

/// What every response body is: a backend's stream or tenantgate's own bytes.
pub type ResponseBody = Either<BackendBody, Full<Bytes>>;

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub config: Config,
    topology: Topology,
    auth_header: http::HeaderName,
    /// Verifies tokens; `None` when `-enable.auth` is off.
    pub auth: Option<Arc<Authenticator>>,
    /// Used for every request when `-enable.auth` is off: tenant 0:0, no restrictions.
    open_grant: Arc<Grant>,
    read: Option<Upstream>,
    write: Option<Upstream>,
    /// Request, auth and upstream counters.
    pub metrics: Metrics,
    /// Per-source key metrics, rendered into `/metrics`.
    pub key_status: Arc<fetch::KeyStatus>,
    limits: Limits,
    /// Set when shutdown begins: `/health` answers 503 so load balancers stop sending.
    pub shutting_down: AtomicBool,
}

impl Gateway {
    /// Builds the gateway from flags; fails on unusable backend settings or keys.
    pub fn new(
        config: Config,
        auth: Option<Arc<Authenticator>>,
        key_status: Arc<fetch::KeyStatus>,
    ) -> Result<Gateway, String> {
        let upstream = |url: &Option<String>, tls| {
            url.as_deref()
                .map(|u| Upstream::new(u, tls, config.upstream_timeout, config.idle_conn_timeout))
                .transpose()
        };
        let read =
            upstream(&config.read_url, &config.read_tls).map_err(|e| format!("-read.url: {e}"))?;
        let write = upstream(&config.write_url, &config.write_tls)
            .map_err(|e| format!("-write.url: {e}"))?;
        let auth_header = http::HeaderName::from_bytes(config.auth_header.as_bytes())
            .map_err(|e| format!("-auth.httpHeader: {e}"))?;
        Ok(Gateway {
            topology: if config.cluster_mode {
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
            metrics: Metrics::default(),
            key_status,
            limits: Limits::new(
                config.max_concurrent_requests,
                config.max_concurrent_requests_per_tenant,
            ),
            shutting_down: AtomicBool::new(false),
            config,
        })
    }

    /// Serves one request, recording its metrics.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: &ClientIp,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let _inflight = self.metrics.inflight();
        let (class, result) = self.serve(request, client).await;
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                if let ErrorKind::Unauthorized(reason) = e.kind {
                    self.metrics.auth_rejection(reason);
                }
                if e.kind.status().is_server_error() {
                    tracing::warn!(
                        status = e.kind.status().as_u16(),
                        route = class.label(),
                        "{}",
                        e.message
                    );
                } else {
                    tracing::debug!(
                        status = e.kind.status().as_u16(),
                        route = class.label(),
                        "{}",
                        e.message
                    );
                }
                e.to_response().map(Either::Right)
            }
        };
        self.metrics
            .request(class, response.status().as_u16(), started.elapsed());
        response
    }

    async fn serve(
        &self,
        request: Request<Incoming>,
        client: &ClientIp,
    ) -> (RouteClass, Result<Response<ResponseBody>, GatewayError>) {
        let route = match route::classify(request.method(), request.uri().path()) {
            Ok(route) => route,
            Err(e) => return (RouteClass::Refused, Err(e)),
        };
        let class = route.class();
        let result = match route {
            Route::Health => Ok(self.health()),
            Route::Metrics => self.metrics_page(&request),
            Route::Read(api) => self.authenticated(request, client, api, None, false).await,
            Route::Rules(kind, api) => {
                self.authenticated(request, client, api, Some(kind), false)
                    .await
            }
            Route::Write(api) => self.authenticated(request, client, api, None, true).await,
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
    async fn authenticated(
        &self,
        request: Request<Incoming>,
        client: &ClientIp,
        api: route::Api,
        rules: Option<RulesKind>,
        write: bool,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let grant = self.grant(&request).await?;
        check_mode(grant.access.mode, write)?;
        if let Some(kind) = rules {
            // A single-node backend's rules and alerts cover every team; they cannot be filtered by
            // labels, so a restricted token sees an empty list rather than other teams' rules.
            if self.topology == Topology::Single && grant.access.is_label_restricted() {
                let body = match kind {
                    RulesKind::Rules => r#"{"status":"success","data":{"groups":[]}}"#,
                    RulesKind::Alerts => r#"{"status":"success","data":{"alerts":[]}}"#,
                };
                return Ok(json_response(StatusCode::OK, body));
            }
        }
        self.proxy(request, client, api, grant, write).await
    }

    async fn proxy(
        &self,
        request: Request<Incoming>,
        client: &ClientIp,
        api: route::Api,
        grant: Arc<Grant>,
        write: bool,
    ) -> Result<Response<ResponseBody>, GatewayError> {
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
        let (parts, body) = request.into_parts();
        let body = if write {
            self.write_body(&parts.headers, body)?
        } else {
            self.read_body(&parts.headers, body).await?
        };
        let (target, dropped) = rewrite::upstream_target(
            self.topology,
            write,
            &upstream.base_path,
            api,
            parts.uri.path(),
            parts.uri.query(),
            &grant.args,
        );
        self.metrics.stripped(dropped);
        if dropped > 0 {
            tracing::info!(dropped, tenant = %grant.access.tenant, "removed client-supplied extra_label/extra_filters arguments");
        }
        match upstream
            .forward(parts, target, body, client, &self.auth_header)
            .await
        {
            Ok((response, took)) => {
                self.metrics.upstream(write, took);
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

    /// A write body streams through, behind the size limit. Form bodies are refused: a server that
    /// parses them could read `extra_label` from them.
    fn write_body(
        &self,
        headers: &http::HeaderMap,
        body: Incoming,
    ) -> Result<RequestBody, GatewayError> {
        if let Some(media) = media_type(headers)? {
            if media.eq_ignore_ascii_case(FORM) || media.eq_ignore_ascii_case("multipart/form-data")
            {
                return Err(GatewayError::new(
                    ErrorKind::UnsupportedMediaType,
                    "form bodies are not accepted on write paths; send the data with its own content type (e.g. curl --data-binary -H 'Content-Type: text/plain')",
                ));
            }
        }
        self.check_declared_length(&body)?;
        Ok(RequestBody::Stream(Limited::new(
            body,
            self.config.max_request_body_size as usize,
        )))
    }

    /// A read body is either empty (streamed as is) or an urlencoded form, which is read whole (behind
    /// `-maxFormBodySize`) and stripped. Anything else could hide arguments from us: 415.
    async fn read_body(
        &self,
        headers: &http::HeaderMap,
        body: Incoming,
    ) -> Result<RequestBody, GatewayError> {
        let form = media_type(headers)?.is_some_and(|media| media.eq_ignore_ascii_case(FORM));
        if body.is_end_stream() && !form {
            return Ok(RequestBody::Empty);
        }
        if !form {
            return Err(GatewayError::new(
                ErrorKind::UnsupportedMediaType,
                "read requests may only carry application/x-www-form-urlencoded bodies",
            ));
        }
        let limit = self.config.max_form_body_size as usize;
        if body.size_hint().lower() > limit as u64 {
            return Err(form_too_large());
        }
        let bytes = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    form_too_large()
                } else {
                    GatewayError::new(ErrorKind::BadRequest, "could not read the request body")
                }
            })?
            .to_bytes();
        let (stripped, dropped) = rewrite::strip_form_body(&bytes).map_err(|_| {
            GatewayError::new(ErrorKind::BadRequest, "form body is not valid UTF-8")
        })?;
        self.metrics.stripped(dropped);
        Ok(RequestBody::Full(Bytes::from(stripped)))
    }

    fn check_declared_length(&self, body: &Incoming) -> Result<(), GatewayError> {
        if body.size_hint().lower() > self.config.max_request_body_size {
            return Err(GatewayError::new(
                ErrorKind::PayloadTooLarge,
                "request body is larger than -maxRequestBodySize",
            ));
        }
        Ok(())
    }

    fn health(&self) -> Response<ResponseBody> {
        if self.shutting_down.load(Ordering::Acquire) {
            return text_response(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
        }
        match &self.auth {
            Some(auth) if !auth.is_ready() => text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no token verification keys loaded yet: identity provider unreachable\n".into(),
            ),
            Some(auth) if !auth.checks_signatures() => text_response(
                StatusCode::OK,
                "OK\nWARNING: no key source configured; token signatures are NOT checked\n".into(),
            ),
            _ => text_response(StatusCode::OK, "OK".into()),
        }
    }

    fn metrics_page(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        if let Some(key) = &self.config.metrics_auth_key {
            let given = request
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|p| p.strip_prefix("authKey="));
            if given != Some(key.as_str()) {
                return Err(GatewayError::new(
                    ErrorKind::Unauthorized(crate::error::AuthReason::Missing),
                    "the authKey query arg must match -metricsAuthKey",
                ));
            }
        }
        let (keys, hits, misses) = match &self.auth {
            Some(auth) => (
                auth.keys().len(),
                auth.cache_hits.load(Ordering::Relaxed),
                auth.cache_misses.load(Ordering::Relaxed),
            ),
            None => (0, 0, 0),
        };
        let text = self.metrics.render(&Gauges {
            verification_keys: keys,
            cache_hits: hits,
            cache_misses: misses,
            key_sources: self.key_status.render(),
        });
        let mut response = text_response(StatusCode::OK, text);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        Ok(response)
    }
}

fn form_too_large() -> GatewayError {
    GatewayError::new(
        ErrorKind::PayloadTooLarge,
        "form body is larger than -maxFormBodySize",
    )
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

/// The form media type: the one read body tenantgate reads, and refuses on writes.
const FORM: &str = "application/x-www-form-urlencoded";

/// The media type of the body, without parameters, as sent: compare it ignoring ASCII case. Several
/// Content-Type headers are refused: servers disagree on which one counts.
fn media_type(headers: &http::HeaderMap) -> Result<Option<&str>, GatewayError> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(GatewayError::new(
            ErrorKind::BadRequest,
            "more than one Content-Type header",
        ));
    }
    let text = value
        .to_str()
        .map_err(|_| GatewayError::new(ErrorKind::BadRequest, "Content-Type is not ASCII"))?;
    Ok(Some(text.split(';').next().unwrap_or("").trim()))
}

fn text_response(status: StatusCode, text: String) -> Response<ResponseBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(text))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json_response(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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

    #[test]
    fn media_types() {
        let mut h = http::HeaderMap::new();
        assert_eq!(media_type(&h).unwrap(), None);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
        );
        let media = media_type(&h).unwrap().unwrap();
        assert_eq!(media, "Application/X-WWW-Form-Urlencoded");
        assert!(media.eq_ignore_ascii_case(FORM));
        h.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(media_type(&h).is_err());
    }
}
