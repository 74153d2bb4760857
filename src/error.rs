//! One error type for every answer tenantgate gives instead of the backend's.
//!
//! A [`GatewayError`] carries its [`ErrorKind`], and the kind alone decides the HTTP status, the
//! Prometheus-API `errorType`, the extra headers (`WWW-Authenticate`, `Retry-After`) and the metric label.
//! Keeping that mapping in one place is what makes every refusal look the same to Grafana, vmagent and
//! Prometheus: a JSON body in the Prometheus API's shape with a message a person can act on. Messages are
//! written by tenantgate itself and never contain the client's token.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Why a token was refused; also the `reason` label of `tenantgate_auth_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthReason {
    /// No token in the configured header.
    Missing,
    /// Not three base64url parts, bad JSON, wrong `typ`, unsupported `crit`, a token too large.
    Malformed,
    /// `alg` is `none`, unknown, or not allowed for any key that could verify it.
    Algorithm,
    /// No loaded key has the token's `kid`.
    UnknownKey,
    /// A key was found but the signature does not verify.
    BadSignature,
    /// `exp` is missing or in the past.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// No `vm_access` claim.
    MissingClaim,
    /// `vm_access` is present but not valid (bad types, unknown mode, mixed layouts).
    BadClaim,
    /// `iss` is not one of `-auth.issuers`.
    Issuer,
    /// `aud` names none of `-auth.audiences`.
    Audience,
    /// No `vm_access` (or `-auth.grantsOverride`) and no grant of `-auth.grantsFile` matches (403).
    NoGrant,
    /// An opaque token the identity provider's introspection says is not active (expired, revoked,
    /// made up).
    Inactive,
}

impl AuthReason {
    /// Every reason, in the order metrics export them.
    pub const ALL: [AuthReason; 13] = [
        AuthReason::Missing,
        AuthReason::Malformed,
        AuthReason::Algorithm,
        AuthReason::UnknownKey,
        AuthReason::BadSignature,
        AuthReason::Expired,
        AuthReason::NotYetValid,
        AuthReason::MissingClaim,
        AuthReason::BadClaim,
        AuthReason::Issuer,
        AuthReason::Audience,
        AuthReason::NoGrant,
        AuthReason::Inactive,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            AuthReason::Missing => "missing",
            AuthReason::Malformed => "malformed",
            AuthReason::Algorithm => "algorithm",
            AuthReason::UnknownKey => "unknown_key",
            AuthReason::BadSignature => "bad_signature",
            AuthReason::Expired => "expired",
            AuthReason::NotYetValid => "not_yet_valid",
            AuthReason::MissingClaim => "missing_claim",
            AuthReason::BadClaim => "bad_claim",
            AuthReason::Issuer => "issuer",
            AuthReason::Audience => "audience",
            AuthReason::NoGrant => "no_grant",
            AuthReason::Inactive => "inactive",
        }
    }

    /// Position in [`AuthReason::ALL`], used to index metric arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What went wrong, from the point of view of the one who must fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The token is missing or invalid: 401.
    Unauthorized(AuthReason),
    /// `-httpAuth.*` credentials missing or wrong: 401 with a Basic challenge.
    BasicAuth,
    /// The `authKey` of `/metrics`, `/flags` or `/debug/pprof` missing or wrong: 401.
    AuthKey,
    /// The token is valid but does not allow this operation or path: 403.
    Forbidden,
    /// The token is valid, but the grants file gives it nothing: 403, counted as a token refusal.
    NoGrant,
    /// tenantgate does not serve this path: 404.
    NotFound,
    /// The method is not allowed on this path: 405.
    MethodNotAllowed,
    /// The request is malformed in a way the client must fix: 400.
    BadRequest,
    /// The body is larger than the configured limit: 413.
    PayloadTooLarge,
    /// A body tenantgate cannot inspect where it must: 415.
    UnsupportedMediaType,
    /// A concurrency limit is reached: 429, retry later.
    TooManyRequests,
    /// No verification keys could be loaded yet, or the gateway is shutting down: 503, retry later.
    Unavailable,
    /// The backend refused or reset the connection: 502.
    BadGateway,
    /// The backend did not answer in time: 504.
    GatewayTimeout,
    /// A bug or an impossible state in tenantgate: 500.
    Internal,
}

impl ErrorKind {
    /// The HTTP status of the answer.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::Unauthorized(_) | ErrorKind::BasicAuth | ErrorKind::AuthKey => {
                StatusCode::UNAUTHORIZED
            }
            ErrorKind::Forbidden | ErrorKind::NoGrant => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorKind::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The Prometheus API `errorType`, so Grafana shows a sensible category.
    pub fn error_type(self) -> &'static str {
        match self {
            ErrorKind::Unauthorized(_) | ErrorKind::BasicAuth | ErrorKind::AuthKey => {
                "unauthorized"
            }
            ErrorKind::Forbidden | ErrorKind::NoGrant => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "bad_data",
            ErrorKind::BadRequest => "bad_data",
            ErrorKind::PayloadTooLarge => "bad_data",
            ErrorKind::UnsupportedMediaType => "bad_data",
            ErrorKind::TooManyRequests => "unavailable",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::BadGateway => "unavailable",
            ErrorKind::GatewayTimeout => "timeout",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An answer tenantgate gives instead of forwarding, with a message for the person reading it.
#[derive(Debug, Clone)]
pub struct GatewayError {
    /// Decides status, headers and metric label.
    pub kind: ErrorKind,
    /// Human-readable; never contains the token.
    pub message: Cow<'static, str>,
    /// Seconds for `Retry-After` on retryable answers; 1 when not set.
    pub retry_after: Option<u32>,
}

impl GatewayError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        GatewayError {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, telling senders to retry after `seconds`.
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// A 401 for `reason`.
    pub fn unauthorized(reason: AuthReason, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unauthorized(reason), message)
    }

    /// The JSON answer in the Prometheus API's error shape.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({
            "status": "error",
            "errorType": self.kind.error_type(),
            "error": self.message,
        });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = self.kind.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match self.kind {
            ErrorKind::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            ErrorKind::BasicAuth => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"VictoriaMetrics\""),
                );
            }
            // Senders such as vmagent and Prometheus back off and retry on these.
            ErrorKind::TooManyRequests | ErrorKind::Unavailable => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(self.retry_after.unwrap_or(1)),
                );
            }
            _ => {}
        }
        response
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_answer_has_prometheus_shape_and_challenge() {
        let e = GatewayError::unauthorized(AuthReason::Expired, "token expired 42s ago");
        let r = e.to_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
    }

    #[test]
    fn retryable_answers_carry_retry_after() {
        for kind in [ErrorKind::TooManyRequests, ErrorKind::Unavailable] {
            let r = GatewayError::new(kind, "later").to_response();
            assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        }
    }

    #[test]
    fn reason_indexes_match_all() {
        for (i, r) in AuthReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
