//! The only code that talks to backends: a pooled keep-alive client per backend, header hygiene, and
//! streaming in both directions.
//!
//! Bodies are never collected here: the client's body (behind a size limit) streams to the backend and
//! the backend's answer streams to the client, status, headers and bytes untouched except for
//! hop-by-hop headers (RFC 9110 §7.6.1). What the backend must not learn from a client (its token,
//! identity headers, headers that carry a tenant to some backends) is removed here, in one place.

use std::error::Error as StdError;
use std::fs;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::{ErrorKind, GatewayError};
use crate::flags::UpstreamTls;
use crate::metrics::UpstreamError;

/// Errors a body may produce on its way to the backend (a client that went away, a size limit).
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A request body on its way to a backend: the client's stream or a rewritten form.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus `Proxy-*`.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Client headers the backend must never see: identities, and tenant selectors some backends honour.
const PRIVATE: [HeaderName; 7] = [
    header::AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("x-id-token"),
    HeaderName::from_static("accountid"),
    HeaderName::from_static("projectid"),
    HeaderName::from_static("x-scope-orgid"),
    HeaderName::from_static("tenantid"),
];

/// One backend (`-read.url` or `-write.url`) and the connection pool to it.
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// Path of the backend URL, prepended to every upstream path (usually empty).
    pub base_path: String,
    host: HeaderValue,
    client: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
    timeout: Duration,
}

impl Upstream {
    /// A backend at `url` (validated by flags: http or https with a host).
    pub fn new(
        url: &str,
        tls: &UpstreamTls,
        timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Upstream, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let scheme = uri.scheme().cloned().ok_or("missing scheme")?;
        let authority = uri.authority().cloned().ok_or("missing host")?;
        let base_path = uri.path().trim_end_matches('/').to_string();
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        http.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        let tls_config = client_tls(tls)?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http();
        let connector = match &tls.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone()).map_err(|e| e.to_string())?;
                builder
                    .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
                    .enable_http1()
                    .wrap_connector(http)
            }
            None => builder.enable_http1().wrap_connector(http),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle_timeout)
            .pool_max_idle_per_host(1024)
            .build(connector);
        Ok(Upstream {
            scheme,
            authority,
            base_path,
            host,
            client,
            timeout,
        })
    }

    /// Sends a request for `path_and_query` with the client's method and (cleaned) headers and `body`,
    /// and returns the backend's answer as soon as its headers arrive.
    pub async fn forward(
        &self,
        mut parts: http::request::Parts,
        path_and_query: &str,
        body: UpstreamBody,
        client: SocketAddr,
        auth_header: &HeaderName,
    ) -> Result<(Response<Incoming>, Duration), (Option<UpstreamError>, GatewayError)> {
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| {
                (
                    None,
                    GatewayError::new(ErrorKind::BadRequest, "request target cannot be forwarded"),
                )
            })?;
        clean_request_headers(&mut parts.headers, auth_header);
        parts.headers.insert(header::HOST, self.host.clone());
        append_forwarded_for(&mut parts.headers, client);
        let mut request = Request::from_parts(parts, body);
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_11;

        let started = Instant::now();
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Err((
                Some(UpstreamError::Timeout),
                GatewayError::new(
                    ErrorKind::GatewayTimeout,
                    format!(
                        "backend did not answer within {:?} (-upstream.timeout)",
                        self.timeout
                    ),
                ),
            )),
            Ok(Err(e)) => Err(classify_client_error(&e)),
            Ok(Ok(mut response)) => {
                remove_hop_by_hop(response.headers_mut());
                Ok((response, started.elapsed()))
            }
        }
    }
}

/// Maps a client error to what the sender should do: 413 for our own body limit, 502 otherwise
/// (vmagent and Prometheus retry 5xx, so nothing is lost).
fn classify_client_error(
    e: &hyper_util::client::legacy::Error,
) -> (Option<UpstreamError>, GatewayError) {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return (
                None,
                GatewayError::new(
                    ErrorKind::PayloadTooLarge,
                    "request body is larger than -maxRequestBodySize",
                ),
            );
        }
        source = s.source();
    }
    if e.is_connect() {
        (
            Some(UpstreamError::Connect),
            GatewayError::new(ErrorKind::BadGateway, "backend refused the connection"),
        )
    } else {
        (
            Some(UpstreamError::Broken),
            GatewayError::new(
                ErrorKind::BadGateway,
                "the connection to the backend broke before it answered",
            ),
        )
    }
}

/// Removes hop-by-hop headers, those named by `Connection`, and `Upgrade`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        // Never let Connection remove what the backend needs to decode the body.
        if name != header::CONTENT_LENGTH
            && name != header::CONTENT_TYPE
            && name != header::CONTENT_ENCODING
        {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Everything a client may not pass to a backend.
pub fn clean_request_headers(headers: &mut HeaderMap, auth_header: &HeaderName) {
    remove_hop_by_hop(headers);
    for name in PRIVATE {
        headers.remove(name);
    }
    headers.remove(auth_header);
    // The body streams; hyper answers 100-continue itself when it is read.
    headers.remove(header::EXPECT);
    headers.remove(header::HOST);
}

fn append_forwarded_for(headers: &mut HeaderMap, client: SocketAddr) {
    let ip = client.ip().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.is_empty() => format!("{prior}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", v);
    }
}

/// rustls settings for one backend: system-independent web PKI roots plus an optional CA file, an
/// optional client certificate, or no verification at all when explicitly asked.
fn client_tls(tls: &UpstreamTls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &tls.ca_file {
            let pem = fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// `-*.tlsInsecureSkipVerify`: accepts any certificate (signatures are still checked for form).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer secret"),
            ("x-auth", "secret"),
            ("cookie", "a=b"),
            ("x-id-token", "id"),
            ("accountid", "1"),
            ("projectid", "2"),
            ("x-scope-orgid", "3"),
            ("connection", "keep-alive, x-custom"),
            ("x-custom", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("content-encoding", "gzip"),
            ("content-type", "application/x-protobuf"),
            ("host", "client-chosen"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        clean_request_headers(&mut h, &HeaderName::from_static("x-auth"));
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["content-encoding", "content-type"]);
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "127.0.0.2:1".parse().unwrap());
        append_forwarded_for(&mut h, "127.0.0.3:1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "127.0.0.2, 127.0.0.3");
    }
}
