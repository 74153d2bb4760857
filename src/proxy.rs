//! The only code that talks to backends: a pool of keep-alive HTTP/1 connections per backend, header
//! hygiene, and streaming in both directions.
//!
//! The pool is our own, on hyper's connection API, rather than hyper-util's generic client: a proxy
//! with one backend per pool needs no pool key to hash, and a connection goes back to the pool from
//! the answer's body when that body has been read to its end ([`BackendBody`]), where the generic
//! client spawns a task per request to find out. An unsent request on a pooled connection that turns
//! out closed is retried on another one, as hyper-util does.
//!
//! Bodies are never collected here: the client's body (behind a size limit) streams to the backend and
//! the backend's answer streams to the client, status, headers and bytes untouched except for
//! hop-by-hop headers (RFC 9110 §7.6.1). What the backend must not learn from a client (its token,
//! identity headers, headers that carry a tenant to some backends) is removed here, in one place.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fs;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tower_service::Service;

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
    /// Scheme and authority of the backend, what the connector dials.
    origin: Uri,
    /// Path of the backend URL, prepended to every upstream path (usually empty).
    pub base_path: String,
    host: HeaderValue,
    connector: HttpsConnector<HttpConnector>,
    pool: Arc<Pool>,
    timeout: Duration,
}

/// The HTTP/1 sender of one backend connection.
type Sender = http1::SendRequest<UpstreamBody>;

/// Idle keep-alive connections to one backend, newest last. One backend per pool, so no key to hash;
/// the mutex is held for one push or pop, never across an await.
struct Pool {
    idle: Mutex<VecDeque<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Pool {
    /// The most recently used live connection, dropping expired and closed ones on the way.
    fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(entry) = idle.pop_back() {
            if entry.sender.is_ready() && entry.since.elapsed() < self.idle_timeout {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Keeps a connection whose exchange is over for the next request.
    fn put(&self, sender: Sender) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while idle.front().is_some_and(|e| {
            now.duration_since(e.since) >= self.idle_timeout || e.sender.is_closed()
        }) {
            idle.pop_front();
        }
        if idle.len() < self.max_idle {
            idle.push_back(Idle { sender, since: now });
        }
    }
}

/// A connection lent to one exchange; back to the pool when the answer's body has been read to its end.
struct Lent {
    sender: Sender,
    pool: Arc<Pool>,
}

impl Lent {
    fn give_back(self) {
        if self.sender.is_ready() {
            self.pool.put(self.sender);
        } else if !self.sender.is_closed() {
            // The connection task has not yet seen the end of the exchange; it will in a moment.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let Lent { mut sender, pool } = self;
                runtime.spawn(async move {
                    if sender.ready().await.is_ok() {
                        pool.put(sender);
                    }
                });
            }
        }
    }
}

/// A backend's answer body, streamed to the client. It gives its connection back to the pool once the
/// body is complete; a body dropped early (client gone) closes the connection instead, as nothing
/// else could read the rest of the answer off it.
pub struct BackendBody {
    inner: Incoming,
    lent: Option<Lent>,
}

impl BackendBody {
    fn give_back_if_done(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(lent) = self.lent.take() {
                lent.give_back();
            }
        }
    }
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            if let Some(lent) = self.lent.take() {
                lent.give_back();
            }
        } else if let Poll::Ready(Some(Ok(_))) = frame {
            self.give_back_if_done();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for BackendBody {
    fn drop(&mut self) {
        self.give_back_if_done();
    }
}

/// Why an exchange with a backend failed.
enum SendError {
    /// No connection could be made.
    Connect,
    /// The connection failed while sending or before the answer's headers.
    Exchange(hyper::Error),
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
        let origin = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Upstream {
            origin,
            base_path,
            host,
            connector,
            pool: Arc::new(Pool {
                idle: Mutex::new(VecDeque::new()),
                max_idle: 1024,
                idle_timeout,
            }),
            timeout,
        })
    }

    /// Sends a request for `path_and_query` with the client's method and (cleaned) headers and `body`,
    /// and returns the backend's answer as soon as its headers arrive.
    pub async fn forward(
        &self,
        mut parts: http::request::Parts,
        path_and_query: String,
        body: UpstreamBody,
        client: &ClientIp,
        auth_header: &HeaderName,
    ) -> Result<(Response<BackendBody>, Duration), (Option<UpstreamError>, GatewayError)> {
        // Origin form, as HTTP/1 sends it; the String's buffer becomes the URI's without a copy.
        let target =
            PathAndQuery::from_maybe_shared(Bytes::from(path_and_query)).map_err(|_| {
                (
                    None,
                    GatewayError::new(ErrorKind::BadRequest, "request target cannot be forwarded"),
                )
            })?;
        clean_request_headers(&mut parts.headers, auth_header);
        parts.headers.insert(header::HOST, self.host.clone());
        append_forwarded_for(&mut parts.headers, client);
        let mut request = Request::from_parts(parts, body);
        *request.uri_mut() = Uri::from(target);
        *request.version_mut() = http::Version::HTTP_11;

        let started = Instant::now();
        match tokio::time::timeout(self.timeout, self.send(request)).await {
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
            Ok(Err(e)) => Err(classify_send_error(&e)),
            Ok(Ok((mut response, lent))) => {
                remove_hop_by_hop(response.headers_mut());
                let took = started.elapsed();
                Ok((
                    response.map(|inner| BackendBody {
                        inner,
                        lent: Some(lent),
                    }),
                    took,
                ))
            }
        }
    }

    /// One exchange on a pooled connection, or a new one. A pooled connection can turn out closed
    /// before the request left (the backend timed it out meanwhile): then the request, unsent, is
    /// tried again, as on a fresh connection nothing can have happened to it yet.
    async fn send(
        &self,
        mut request: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Lent), SendError> {
        loop {
            let (mut sender, reused) = match self.pool.take() {
                Some(sender) => (sender, true),
                // Boxed: connecting (TLS state included) takes 2.4 KiB of future, and every client
                // connection keeps its request future's space, though few requests ever connect.
                None => (Box::pin(self.connect()).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lent = Lent {
                        sender,
                        pool: self.pool.clone(),
                    };
                    return Ok((response, lent));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Exchange(e.into_error())),
                },
            }
        }
    }

    /// A new HTTP/1 connection, its connection task spawned.
    async fn connect(&self) -> Result<Sender, SendError> {
        let mut connector = self.connector.clone();
        let io = async {
            std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
            connector.call(self.origin.clone()).await
        }
        .await
        .map_err(|e| {
            tracing::debug!("cannot connect to the backend: {e}");
            SendError::Connect
        })?;
        let (sender, connection) = http1::handshake(io).await.map_err(|e| {
            tracing::debug!("HTTP/1 handshake with the backend failed: {e}");
            SendError::Connect
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("backend connection ended: {e}");
            }
        });
        Ok(sender)
    }
}

/// Maps a failed exchange to what the sender should do: 413 for our own body limit, 502 otherwise
/// (vmagent and Prometheus retry 5xx, so nothing is lost).
fn classify_send_error(e: &SendError) -> (Option<UpstreamError>, GatewayError) {
    let e = match e {
        SendError::Connect => {
            return (
                Some(UpstreamError::Connect),
                GatewayError::new(ErrorKind::BadGateway, "backend refused the connection"),
            )
        }
        SendError::Exchange(e) => e,
    };
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
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
    (
        Some(UpstreamError::Broken),
        GatewayError::new(
            ErrorKind::BadGateway,
            "the connection to the backend broke before it answered",
        ),
    )
}

/// Removes hop-by-hop headers, those named by `Connection`, and `Upgrade`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    remove_named_by_connection(headers);
    remove_where(headers, is_hop_by_hop);
}

/// Everything a client may not pass to a backend.
pub fn clean_request_headers(headers: &mut HeaderMap, auth_header: &HeaderName) {
    remove_named_by_connection(headers);
    remove_where(headers, |name| {
        is_hop_by_hop(name)
            || PRIVATE.contains(name)
            || name == auth_header
            // The body streams; hyper answers 100-continue itself when it is read.
            || name == header::EXPECT
            || name == header::HOST
    });
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::UPGRADE
}

/// Removes every header whose name satisfies `doomed`. A request carries a handful of headers and
/// usually one or two to remove, so scanning the few entries beats one hash lookup per name that
/// could be there (two dozen of them): no hashing, no allocation.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    while let Some(name) = headers.keys().find(|name| doomed(name)).cloned() {
        headers.remove(&name);
    }
}

/// Removes the headers that `Connection` names, while it is still there to name them. It usually
/// names only `keep-alive`, which goes with the hop-by-hop headers anyway: nothing to collect then.
fn remove_named_by_connection(headers: &mut HeaderMap) {
    if !headers.contains_key(header::CONNECTION) {
        return;
    }
    let named: Vec<HeaderName> = headers_named_by_connection(headers)
        // Parsing a name that is not one of `http`'s standard ones allocates: skip the usual one.
        .filter(|name| !name.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .filter(|name| {
            // Never let Connection remove what the backend needs to decode the body.
            !is_hop_by_hop(name)
                && name != header::CONTENT_LENGTH
                && name != header::CONTENT_TYPE
                && name != header::CONTENT_ENCODING
        })
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// The header names listed in `Connection` (as sent: any case, maybe not valid names).
fn headers_named_by_connection(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The client's address as an `X-Forwarded-For` element, formatted once per connection rather than
/// once per request.
#[derive(Debug, Clone)]
pub struct ClientIp(HeaderValue);

impl ClientIp {
    /// The IP of `peer` (its port is not forwarded).
    pub fn new(peer: SocketAddr) -> ClientIp {
        ClientIp(
            HeaderValue::from_str(&peer.ip().to_string()).expect("an IP is a valid header value"),
        )
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, client: &ClientIp) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.is_empty() => {
            let ip = client.0.to_str().expect("an IP is ASCII");
            match HeaderValue::from_str(&format!("{prior}, {ip}")) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
        _ => client.0.clone(),
    };
    headers.insert(xff, value);
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
    use http_body_util::{BodyExt, Empty};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A keep-alive backend answering `ok` to bodiless requests; with `close`, it closes each
    /// connection after one answer without saying so, as a backend whose idle timeout struck would.
    async fn backend(close: bool) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(answer).await.is_err() || close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, connections)
    }

    async fn get(upstream: &Upstream) -> Bytes {
        let (parts, ()) = Request::get("/").body(()).unwrap().into_parts();
        let body = Empty::new().map_err(|e| match e {}).boxed_unsync();
        let client = ClientIp::new("127.0.0.1:1".parse().unwrap());
        let (response, _) = upstream
            .forward(
                parts,
                "/api/v1/query?query=up".into(),
                body,
                &client,
                &header::AUTHORIZATION,
            )
            .await
            .map_err(|(_, e)| e.message)
            .unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap().to_bytes()
    }

    fn upstream(url: &str) -> Upstream {
        let timeout = Duration::from_secs(10);
        Upstream::new(
            url,
            &UpstreamTls::default(),
            timeout,
            Duration::from_secs(60),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn connections_are_reused_once_the_answer_is_read() {
        let (url, connections) = backend(false).await;
        let upstream = upstream(&url);
        for _ in 0..3 {
            assert_eq!(get(&upstream).await, "ok");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn connections_the_backend_closed_are_not_used_again() {
        let (url, connections) = backend(true).await;
        let upstream = upstream(&url);
        for _ in 0..3 {
            assert_eq!(get(&upstream).await, "ok");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }

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
    fn connection_names_headers_in_any_case_but_never_the_body_framing() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "Content-Length, X-Other ,keep-alive"),
            ("connection", "x-more"),
            ("content-length", "2"),
            ("x-other", "1"),
            ("x-more", "1"),
            ("x-kept", "1"),
            ("upgrade", "websocket"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        remove_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["content-length", "x-kept"]);
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &ClientIp::new("127.0.0.2:1".parse().unwrap()));
        append_forwarded_for(&mut h, &ClientIp::new("127.0.0.3:1".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "127.0.0.2, 127.0.0.3");
    }
}
