//! An API request's way from the token to the backend: the grant and its mode, limits judged before
//! the body is read, the body's rules, the upstream target (the grant's arguments on VictoriaMetrics,
//! every PromQL rewritten on Prometheus-family backends), the exchange with [`Upstream`], and what is
//! learnt from the answer (rows for rate limits, rules filtered to the grant).
//!
//! Every step reads the [`ApiCall`] that [`crate::route`] made of the path once; none looks at the path
//! again except to cut out the part that is forwarded.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::Either;

use super::answers::json_response;
use super::prometheus::{self, ReadPlan};
use super::{bodies, Gateway, ResponseBody, Served};
use crate::auth::claims::Mode;
use crate::auth::Grant;
use crate::client_body::ClientBody;
use crate::error::{ErrorKind, GatewayError};
use crate::flags::{BackendType, TenantFormat};
use crate::ingest::rows::{self, Format};
use crate::proxy::{Backends, ClientIp, OwnHeaders, RequestBody, Tap};
use crate::ratelimit::{self, Admission, RateLimiter};
use crate::rewrite;
use crate::route::{ApiCall, Endpoint, RulesKind};

/// `-backend.tenantHeader` with this request's value.
type TenantHeader<'a> = Option<(&'a http::HeaderName, HeaderValue)>;

impl Gateway {
    /// Verifies the token once, checks its mode, answers rules and alerts where they cannot be
    /// restricted, and forwards everything else.
    pub(super) async fn api(
        &self,
        request: Request<ClientBody>,
        client: &ClientIp,
        call: ApiCall,
        prefix_len: usize,
        served: &mut Served,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let grant = match &self.auth {
            Some(auth) => auth.authenticate_or_refresh(request.headers()).await?,
            None => self.open_grant.clone(),
        };
        served.grant = Some(grant.clone());
        check_mode(grant.access.mode, call.is_write())?;
        if let Some(kind) = call.rules() {
            // Rules and alerts (vmalert's, proxied by VictoriaMetrics single-node and vmselect, or a
            // Prometheus-family backend's own) cover every team of the tenant and take no label
            // arguments. A restricted token gets the answer filtered to its labels (`rules_filter`),
            // which needs its grant as one PromQL selector; when it is not one (several
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
        let tenant_header = self.tenant_header(&grant)?;
        match call.endpoint {
            Endpoint::Write(format) if self.write_type == BackendType::Prometheus => {
                self.remote_write(request, client, format, grant, served, tenant_header)
                    .await
            }
            _ => {
                self.proxy(
                    request,
                    client,
                    call,
                    grant,
                    prefix_len,
                    served,
                    tenant_header,
                )
                .await
            }
        }
    }

    /// The value of `-backend.tenantHeader` for this grant, when the flag is set.
    fn tenant_header(&self, grant: &Grant) -> Result<TenantHeader<'_>, GatewayError> {
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

    /// The backend of a direction, or 404 when the gateway has none.
    fn upstream(&self, write: bool) -> Result<&Backends, GatewayError> {
        let (upstream, missing) = if write {
            (
                &self.write,
                "writes are not enabled on this gateway (no -write.url)",
            )
        } else {
            (
                &self.read,
                "reads are not enabled on this gateway (no -read.url)",
            )
        };
        upstream
            .as_deref()
            .ok_or_else(|| GatewayError::new(ErrorKind::NotFound, missing))
    }

    /// The concurrency permit and the rate-limit admission, both judged before the body is read: a
    /// batch is never refused for being larger than what is left.
    fn admit(
        &self,
        grant: &Grant,
        write: bool,
    ) -> Result<(crate::limit::Permit, Option<Admission>), GatewayError> {
        let permit = self
            .limits
            .acquire(grant)
            .inspect_err(|_| self.metrics.concurrency_rejection())?;
        let admission = match &self.ratelimit {
            Some(limiter) => limiter.admit(grant.access.tenant, write)?,
            None => None,
        };
        Ok((permit, admission))
    }

    /// Forwards a request to a VictoriaMetrics backend, or a read to a Prometheus-family one.
    #[allow(clippy::too_many_arguments)]
    async fn proxy(
        &self,
        request: Request<ClientBody>,
        client: &ClientIp,
        call: ApiCall,
        grant: Arc<Grant>,
        prefix_len: usize,
        served: &mut Served,
        tenant_header: TenantHeader<'_>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let write = call.is_write();
        let upstream = self.upstream(write)?;
        let (_permit, admission) = self.admit(&grant, write)?;
        let (mut parts, body) = request.into_parts();
        let body = self.request_body(&parts, body, write).await?;
        // A write held whole can go to another backend when its first one fails.
        let (body, _held) = self.hold_for_retry(upstream, body).await?;
        let filter_rules = call.rules().is_some() && grant.access.is_label_restricted();
        if filter_rules || self.config.server.disable_response_compression {
            // The rules filter reads the answer: it must come uncompressed.
            parts.headers.remove(header::ACCEPT_ENCODING);
        }
        let (target, body) = match self.plan(&parts, call, &grant, upstream, prefix_len, body)? {
            ReadPlan::Forward(target, body) => (target, body),
            ReadPlan::Answer(answer) => return Ok(answer),
        };
        let counting = admission
            .as_ref()
            .and_then(|a| RowsToCount::for_write(a, call, &parts, self.ratelimit.as_deref()));
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
        let response = self.answered(outcome, write)?;
        if let (Some(rows), Some(admission), Some(limiter)) = (counting, admission, &self.ratelimit)
        {
            if response.status().is_success() {
                match tap.copy.take() {
                    Some(copy) => rows.count_later(limiter.clone(), admission, copy),
                    None => limiter.rows_estimated(&admission, rows.format, tap.bytes),
                }
            }
        }
        match call.rules() {
            Some(kind) if filter_rules => {
                self.prometheus
                    .filter_rules_answer(&grant, kind, response)
                    .await
            }
            _ => Ok(response.map(Either::Left)),
        }
    }

    /// The body as it may travel: a write streams behind `-maxRequestBodySize`; a read body is an
    /// urlencoded form read whole and stripped, and dropped for GET and HEAD.
    async fn request_body(
        &self,
        parts: &Parts,
        body: ClientBody,
        write: bool,
    ) -> Result<RequestBody, GatewayError> {
        let limits = &self.config.limits;
        if write {
            return bodies::write_body(
                &parts.headers,
                body,
                limits.max_request_body_size,
                &self.metrics,
            );
        }
        let form = bodies::read_body(
            &parts.headers,
            body,
            limits.max_form_body_size,
            &self.metrics,
        )
        .await?;
        // Go's `Request.ParseForm` reads the body of POST, PUT and PATCH only, so a GET or HEAD body
        // is nothing a backend reads. It must not be forwarded either: enforcement that counted a
        // `match[]` in it would let the backend answer without any.
        Ok(if parts.method == http::Method::POST {
            form
        } else {
            RequestBody::Empty
        })
    }

    /// A streamed write body read whole, when another backend could take it after a failure and it
    /// fits `-maxRequestBodySizeToRetry` and what is left of `-maxRetryBufferSize` (the permit holds
    /// its share until the request is done).
    async fn hold_for_retry(
        &self,
        upstream: &Backends,
        body: RequestBody,
    ) -> Result<(RequestBody, Option<tokio::sync::SemaphorePermit<'_>>), GatewayError> {
        let RequestBody::Stream(stream) = &body else {
            return Ok((body, None));
        };
        let declared = hyper::body::Body::size_hint(stream).exact();
        let fits = declared.filter(|n| *n <= self.config.backend.balance.max_body_to_retry);
        let (Some(size), true) = (fits, upstream.has_spares()) else {
            return Ok((body, None));
        };
        let kib = u32::try_from(size.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let Ok(permit) = self.retry_buffer.try_acquire_many(kib) else {
            self.metrics.retry_buffer_full();
            return Ok((body, None));
        };
        let RequestBody::Stream(stream) = body else {
            return Ok((body, Some(permit)));
        };
        let held = bodies::read_held(stream, size).await?;
        Ok((RequestBody::Full(held), Some(permit)))
    }

    /// Where the request goes on its backend and with what body, or an answer given here: the grant's
    /// arguments added for VictoriaMetrics, every PromQL rewritten for a Prometheus-family read.
    fn plan(
        &self,
        parts: &Parts,
        call: ApiCall,
        grant: &Grant,
        upstream: &Backends,
        prefix_len: usize,
        body: RequestBody,
    ) -> Result<ReadPlan, GatewayError> {
        let path = &parts.uri.path()[prefix_len..];
        let query = parts.uri.query();
        // The backend's own API prefix (Mimir's `/prometheus`) comes from -read.url; a client's
        // VictoriaMetrics-style `/prometheus` prefix is dropped.
        let api_path = &path[call.api.start..];
        let base = upstream.base_path();
        let prometheus_reads = self.read_type == BackendType::Prometheus;
        match call.endpoint {
            Endpoint::Read(endpoint) if prometheus_reads => self
                .prometheus
                .read(grant, endpoint, base, api_path, query, body),
            Endpoint::Rules(_) if prometheus_reads => {
                self.prometheus.rules(grant, base, api_path, query, body)
            }
            _ => {
                let (target, dropped) = rewrite::upstream_target(
                    self.topology,
                    call.is_write(),
                    base,
                    call.api,
                    path,
                    query,
                    &grant.args,
                );
                self.metrics.stripped(dropped);
                if dropped > 0 {
                    tracing::info!(dropped, tenant = %grant.access.tenant, "removed client-supplied extra_label/extra_filters arguments");
                }
                Ok(ReadPlan::Forward(target, body))
            }
        }
    }

    /// The backend's answer, or the error the client gets, counted either way.
    fn answered(
        &self,
        outcome: crate::proxy::Forwarded,
        write: bool,
    ) -> Result<Response<crate::proxy::BackendBody>, GatewayError> {
        match outcome {
            Ok((response, took)) => {
                self.metrics.upstream(write, took);
                Ok(response)
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
    async fn remote_write(
        &self,
        request: Request<ClientBody>,
        client: &ClientIp,
        format: Format,
        grant: Arc<Grant>,
        served: &mut Served,
        tenant_header: TenantHeader<'_>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        if format != Format::RemoteWrite {
            return Err(GatewayError::new(
                ErrorKind::NotFound,
                format!("{}: the write backend is a Prometheus remote-write receiver (-write.backendType=prometheus), which takes only remote write (/api/v1/write); send other formats to a VictoriaMetrics backend", request.uri().path()),
            ));
        }
        let upstream = self.upstream(true)?;
        let (_permit, admission) = self.admit(&grant, true)?;
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
        let target = prometheus::remote_write_target(upstream.base_path(), parts.uri.query());
        let own = OwnHeaders {
            auth: &self.auth_header,
            tenant: tenant_header,
        };
        let body = RequestBody::Full(rewritten);
        let mut tap = Tap::default();
        let outcome = upstream
            .forward(parts, target, body, &mut tap, client, own)
            .await;
        let response = self.answered(outcome, true)?;
        if let (Some(admission), Some(limiter), Some(rows)) = (admission, &self.ratelimit, rows) {
            if response.status().is_success() {
                limiter.rows_counted(&admission, Format::RemoteWrite, raw.len() as u64, rows);
            }
        }
        Ok(response.map(Either::Left))
    }
}

/// What a write's rows are counted from once the backend accepted it.
struct RowsToCount {
    format: Format,
    plan: ratelimit::RowsPlan,
    encoding: Option<String>,
    csv_format: Option<String>,
}

/// Bodies up to this size are counted on a runtime thread; larger ones on a blocking thread.
const COUNT_INLINE: usize = 1 << 20;

impl RowsToCount {
    /// What to count for a write a rows limit needs counted. Formats without a row parser here add
    /// nothing to the count: no copy, no task.
    fn for_write(
        admission: &Admission,
        call: ApiCall,
        parts: &Parts,
        limiter: Option<&RateLimiter>,
    ) -> Option<RowsToCount> {
        let Endpoint::Write(format) = call.endpoint else {
            return None;
        };
        if !admission.count_rows || format == Format::Other {
            return None;
        }
        Some(RowsToCount {
            format,
            plan: limiter.map_or(ratelimit::RowsPlan::Exact, |l| {
                admission.rows_plan(l, format)
            }),
            encoding: parts
                .headers
                .get(header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            csv_format: parts.uri.query().and_then(csv_format),
        })
    }

    /// Counts the rows of `body` off the request path and reports them to the limiter.
    fn count_later(self, limiter: Arc<RateLimiter>, admission: Admission, body: Vec<u8>) {
        let small = body.len() <= COUNT_INLINE;
        let size = body.len() as u64;
        let count = move || {
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
