//! The only code that talks to backends: a pool of keep-alive HTTP/1.1 connections per backend,
//! header hygiene, and streaming in both directions.
//!
//! The client side of the exchange is our own ([`wire`] for the bytes, [`conn`] for sockets, the
//! pool and the answer body) rather than hyper's client: a proxy with one backend per pool needs no
//! pool key, no connection task and no channel between tasks. The request, the answer head and the
//! answer body are all read and written by the client's own task, which is where most of a
//! request's cost went before (ARCHITECTURE.md, "Backend connections").
//!
//! Bodies are never collected here: the client's body (behind a size limit) streams to the backend and
//! the backend's answer streams to the client, status, headers and bytes untouched except for
//! hop-by-hop headers (RFC 9110 §7.6.1). What the backend must not learn from a client (its token,
//! identity headers, headers that carry a tenant to some backends) is removed here, in one place.

mod balance;
mod conn;
pub mod wire;

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::client_body::ClientBody;
use crate::error::{ErrorKind, GatewayError};
use crate::flags::UpstreamTls;
use crate::metrics::UpstreamError;
pub use balance::{Backends, Forwarded, MAX_BACKENDS};
pub use conn::BackendBody;
use conn::{Conn, Io, Pool};
use wire::{is_hop_by_hop, BodyLength, Head, WireError};

/// Errors a body may produce on its way to the backend (a client that went away, a size limit).
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A request body on its way to a backend.
pub enum RequestBody {
    /// No body.
    Empty,
    /// A body held whole (a rewritten form): it leaves with the head in one write, and can be sent
    /// again when a pooled connection turns out to have been closed.
    Full(Bytes),
    /// The client's body, streamed behind the size limit.
    Stream(Limited<ClientBody>),
}

impl RequestBody {
    /// Whether the body can be sent again (held whole).
    pub fn repeatable(&self) -> bool {
        !matches!(self, RequestBody::Stream(_))
    }
}

/// Bodies up to this size leave in the same write as the head.
const COALESCE: usize = 16 * 1024;

/// Client headers the backend must never see: identities, and tenant selectors some backends honour.
const PRIVATE: [HeaderName; 8] = [
    header::AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("x-id-token"),
    HeaderName::from_static("accountid"),
    HeaderName::from_static("projectid"),
    // Mimir, Cortex, Loki and Thanos Receive's tenant headers.
    HeaderName::from_static("x-scope-orgid"),
    HeaderName::from_static("thanos-tenant"),
    HeaderName::from_static("tenantid"),
];

/// The headers the gateway itself sends a backend, and so removes from what the client sent.
pub struct OwnHeaders<'a> {
    /// The header the client's token came in (`-auth.httpHeader`): removed.
    pub auth: &'a HeaderName,
    /// `-backend.tenantHeader` and the token's tenant: client copies removed, ours set.
    pub tenant: Option<(&'a HeaderName, HeaderValue)>,
}

/// One backend (`-read.url` or `-write.url`) and the connection pool to it.
pub struct Upstream {
    /// Host and port dialled (a name is resolved on every new connection).
    dial: (String, u16),
    /// `Some` for https backends: the TLS settings and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Path of the backend URL, prepended to every upstream path (usually empty).
    pub base_path: String,
    host: HeaderValue,
    pool: Arc<Pool>,
    timeout: Duration,
}

/// Why an exchange with a backend failed.
enum SendError {
    /// No connection could be made.
    Connect,
    /// The connection broke before the answer's head was read.
    Io(io::Error),
    /// The backend's answer is not HTTP/1.1 we can pass on.
    Wire(WireError),
    /// The client's body failed: over the size limit, or the client went away.
    Body(BoxError),
}

/// One failed attempt, and whether the request may go again on a fresh connection.
struct Failed {
    error: SendError,
    /// Nothing of the request body was consumed and nothing of an answer arrived.
    repeatable: bool,
}

/// A request ready for the backends of its direction: the client's headers cleaned, ours added, the
/// head encoded once with the first backend's `Host` (and a small body held whole after it). A retry on
/// another backend only puts that backend's `Host` in (`host`).
pub(crate) struct Prepared {
    method: Method,
    /// Request line, headers (with `Host`), framing, and a coalesced body.
    head: Vec<u8>,
    /// Where the `Host` value is in `head`.
    host: std::ops::Range<usize>,
    length: BodyLength,
    /// A small body held whole is already at the end of `head`.
    coalesced: bool,
}

impl Prepared {
    /// Cleans `parts` for a backend (see [`clean_request_headers`]), adds `X-Forwarded-For` and the
    /// tenant header, and encodes the head for `target` (origin form), `body` and `host`.
    pub(crate) fn new(
        mut parts: http::request::Parts,
        target: &str,
        body: &RequestBody,
        client: &ClientIp,
        own: OwnHeaders<'_>,
        host: &HeaderValue,
    ) -> Result<Prepared, GatewayError> {
        if !wire::valid_target(target) {
            return Err(GatewayError::new(
                ErrorKind::BadRequest,
                "request target cannot be forwarded",
            ));
        }
        clean_request_headers(&mut parts.headers, own.auth);
        if let Some((name, value)) = own.tenant {
            // `insert` replaces every client copy.
            parts.headers.insert(name, value);
        }
        append_forwarded_for(&mut parts.headers, client);
        let length = body_length(&parts.method, body);
        let mut prepared = Prepared::encode(&parts.method, target, &parts.headers, length, host);
        if let RequestBody::Full(bytes) = body {
            if bytes.len() <= COALESCE {
                prepared.head.extend_from_slice(bytes);
                prepared.coalesced = true;
            }
        }
        Ok(prepared)
    }

    /// A bare `GET path` for health probes of the backend at `host`.
    pub(crate) fn probe(path: &str, host: &HeaderValue) -> Prepared {
        Prepared::encode(
            &Method::GET,
            path,
            &HeaderMap::new(),
            BodyLength::None,
            host,
        )
    }

    fn encode(
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        length: BodyLength,
        host: &HeaderValue,
    ) -> Prepared {
        let mut head = Vec::with_capacity(512);
        let at = wire::encode_head_for(
            &mut head,
            method,
            target,
            Some(host.as_bytes()),
            headers,
            length,
        );
        Prepared {
            method: method.clone(),
            head,
            host: at,
            length,
            coalesced: false,
        }
    }

    /// The head for the backend at `host`: as encoded, or with `host` put in.
    fn head_for(&self, host: &HeaderValue) -> std::borrow::Cow<'_, [u8]> {
        if &self.head[self.host.clone()] == host.as_bytes() {
            return std::borrow::Cow::Borrowed(&self.head);
        }
        let mut head = Vec::with_capacity(self.head.len() + host.len());
        head.extend_from_slice(&self.head[..self.host.start]);
        head.extend_from_slice(host.as_bytes());
        head.extend_from_slice(&self.head[self.host.end..]);
        std::borrow::Cow::Owned(head)
    }
}

/// Why one backend did not answer a request.
pub(crate) struct Failure {
    /// What went wrong with the backend; `None` when the client's body failed (over the limit, or the
    /// client went away), which is no fault of the backend.
    pub kind: Option<UpstreamError>,
    /// What the client is told if no other backend answers.
    pub error: GatewayError,
    /// The body can be sent again (held whole, or a stream nothing was read from).
    pub body_intact: bool,
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
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{url}: the scheme must be http or https")),
        };
        let authority = uri.authority().ok_or("missing host")?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        // `[::1]` in a URL, `::1` to dial and in a certificate.
        let name = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let mut config = crate::outbound::client_tls_config(tls)?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let server_name = tls.server_name.clone().unwrap_or_else(|| name.to_string());
            let server_name = ServerName::try_from(server_name).map_err(|e| e.to_string())?;
            Some((TlsConnector::from(Arc::new(config)), server_name))
        } else {
            None
        };
        Ok(Upstream {
            dial: (name.to_string(), port),
            tls,
            base_path: uri.path().trim_end_matches('/').to_string(),
            host,
            pool: Arc::new(Pool::new(1024, idle_timeout)),
            timeout,
        })
    }

    /// The `Host` this backend is asked with (the URL's authority).
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// Sends a prepared request with `body` (used up only when it streams) and returns the backend's
    /// answer as soon as its head arrives, within `timeout`, with the time since the request was
    /// `started` (its first attempt).
    pub(crate) async fn send(
        &self,
        request: &Prepared,
        body: &mut RequestBody,
        tap: &mut Tap,
        (started, timeout): (Instant, Duration),
    ) -> Result<(Response<BackendBody>, Duration), Failure> {
        let head = request.head_for(&self.host);
        let mut coalesced = RequestBody::Empty;
        let body = if request.coalesced {
            &mut coalesced
        } else {
            body
        };
        let streams = matches!(body, RequestBody::Stream(_));
        match tokio::time::timeout(
            timeout,
            self.exchange(&request.method, &head, body, request.length, tap),
        )
        .await
        {
            // The client sent its body too slowly: no fault of the backend. Senders retry a 504.
            Err(_) if tap.awaiting_client => Err(Failure {
                kind: None,
                error: GatewayError::new(
                    ErrorKind::GatewayTimeout,
                    format!(
                        "the request body did not arrive within {timeout:?} (-upstream.timeout)"
                    ),
                ),
                body_intact: false,
            }),
            Err(_) => Err(Failure {
                kind: Some(UpstreamError::Timeout),
                error: GatewayError::new(
                    ErrorKind::GatewayTimeout,
                    format!("backend did not answer within {timeout:?} (-upstream.timeout)"),
                ),
                body_intact: !streams,
            }),
            Ok(Err(e)) => {
                // A streamed body is untouched only when no connection could be made.
                let body_intact = !streams || matches!(e, SendError::Connect);
                let (kind, error) = classify_send_error(e);
                Err(Failure {
                    kind,
                    error,
                    body_intact,
                })
            }
            Ok(Ok(response)) => Ok((response, started.elapsed())),
        }
    }

    /// One exchange on a pooled connection, or a new one. A pooled connection can turn out closed
    /// before anything was answered (the backend timed it out meanwhile): then the request goes again
    /// on a fresh connection, as long as none of its body has been used up.
    async fn exchange(
        &self,
        method: &Method,
        head: &[u8],
        body: &mut RequestBody,
        length: BodyLength,
        tap: &mut Tap,
    ) -> Result<Response<BackendBody>, SendError> {
        loop {
            let mut conn = match self.pool.take() {
                Some(conn) => conn,
                // Boxed: connecting (TLS state included) takes kilobytes of future, and every client
                // connection keeps its request future's space, though few requests ever connect.
                None => Box::pin(self.connect()).await?,
            };
            match attempt(&mut conn, method, head, body, length, tap).await {
                Ok((answer, reusable)) => {
                    let headers = answer.headers;
                    let keep_alive = answer.keep_alive && reusable;
                    let body =
                        BackendBody::new(conn, answer.framing, keep_alive, self.pool.clone());
                    let mut response = Response::new(body);
                    *response.status_mut() = answer.status;
                    *response.headers_mut() = headers;
                    return Ok(response);
                }
                Err(failed) if failed.repeatable && conn.uses > 0 => {
                    tracing::debug!(
                        "pooled backend connection was closed; sending again on a new one"
                    );
                }
                Err(failed) => return Err(failed.error),
            }
        }
    }

    /// A new connection: TCP (no delay, keep-alive probes) and TLS for https backends.
    async fn connect(&self) -> Result<Conn, SendError> {
        let connect_timeout = self.timeout.min(Duration::from_secs(10));
        let tcp = match tokio::time::timeout(
            connect_timeout,
            TcpStream::connect((self.dial.0.as_str(), self.dial.1)),
        )
        .await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                tracing::debug!("cannot connect to the backend: {e}");
                return Err(SendError::Connect);
            }
            Err(_) => {
                tracing::debug!("connecting to the backend took longer than {connect_timeout:?}");
                return Err(SendError::Connect);
            }
        };
        let _ = tcp.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
        let io = match &self.tls {
            None => Io::Plain(tcp),
            Some((connector, name)) => match connector.connect(name.clone(), tcp).await {
                Ok(tls) => Io::Tls(Box::new(tls)),
                Err(e) => {
                    tracing::warn!("TLS handshake with the backend failed: {e}");
                    return Err(SendError::Connect);
                }
            },
        };
        Ok(Conn::new(io))
    }
}

/// The framing the backend gets: none for a bodiless GET, the length when it is known, chunked for
/// a client stream of unknown length.
fn body_length(method: &Method, body: &RequestBody) -> BodyLength {
    let empty = match body {
        RequestBody::Empty => true,
        RequestBody::Full(bytes) => return BodyLength::Known(bytes.len() as u64),
        RequestBody::Stream(stream) => {
            if stream.is_end_stream() {
                true
            } else if let Some(n) = stream.size_hint().exact() {
                return BodyLength::Known(n);
            } else {
                return BodyLength::Chunked;
            }
        }
    };
    debug_assert!(empty);
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        BodyLength::Known(0)
    } else {
        BodyLength::None
    }
}

/// Writes the request and reads the answer head on `conn`. Returns the head and whether the
/// connection may be reused (the request went out whole).
async fn attempt(
    conn: &mut Conn,
    method: &Method,
    head: &[u8],
    body: &mut RequestBody,
    length: BodyLength,
    tap: &mut Tap,
) -> Result<(Head, bool), Failed> {
    if let Err((error, consumed)) = send_request(conn, head, body, length, tap).await {
        // The client's body failed: nothing the backend did; the exchange is over.
        if let SendError::Body(_) = error {
            return Err(Failed {
                error,
                repeatable: false,
            });
        }
        // The backend stopped taking the request. It may have answered already (a backend refusing
        // an upload answers before reading it all): that answer is worth more than a 502.
        return match read_head(conn, method).await {
            Ok(answer) => Ok((answer, false)),
            Err(_) => Err(Failed {
                error,
                repeatable: !consumed,
            }),
        };
    }
    match read_head(conn, method).await {
        Ok(answer) => Ok((answer, true)),
        Err(error) => {
            // A connection closed with no byte of answer: the backend dropped an idle connection
            // just as it was taken. Bodies held whole can go again; a streamed one is used up.
            let repeatable =
                conn.buf.is_empty() && matches!(error, SendError::Io(_)) && body.repeatable();
            Err(Failed { error, repeatable })
        }
    }
}

/// Writes the head and the body. On failure, says whether any of a streamed body was consumed.
async fn send_request(
    conn: &mut Conn,
    head: &[u8],
    body: &mut RequestBody,
    length: BodyLength,
    tap: &mut Tap,
) -> Result<(), (SendError, bool)> {
    let io_error = |consumed| move |e| (SendError::Io(e), consumed);
    match body {
        RequestBody::Empty => conn.io.write_all(head).await.map_err(io_error(false))?,
        RequestBody::Full(bytes) => {
            conn.io.write_all(head).await.map_err(io_error(false))?;
            conn.io.write_all(bytes).await.map_err(io_error(false))?;
        }
        RequestBody::Stream(stream) => {
            conn.io.write_all(head).await.map_err(io_error(false))?;
            let chunked = length == BodyLength::Chunked;
            let mut framing = Vec::new();
            loop {
                tap.awaiting_client = true;
                let frame = stream.frame().await;
                tap.awaiting_client = false;
                let Some(frame) = frame else {
                    break;
                };
                let frame = frame.map_err(|e| (SendError::Body(e), true))?;
                let Ok(mut data) = frame.into_data() else {
                    continue; // trailers: not forwarded
                };
                if data.is_empty() {
                    continue;
                }
                tap.observe(&data);
                if chunked {
                    framing.clear();
                    wire::chunk_size_line(data.len(), &mut framing);
                    conn.io.write_all(&framing).await.map_err(io_error(true))?;
                }
                while data.has_remaining() {
                    let n = conn.io.write(data.chunk()).await.map_err(io_error(true))?;
                    if n == 0 {
                        return Err(io_error(true)(io::ErrorKind::WriteZero.into()));
                    }
                    data.advance(n);
                }
                if chunked {
                    conn.io.write_all(b"\r\n").await.map_err(io_error(true))?;
                }
            }
            if chunked {
                conn.io
                    .write_all(b"0\r\n\r\n")
                    .await
                    .map_err(io_error(true))?;
            }
        }
    }
    conn.io.flush().await.map_err(io_error(true))
}

/// Reads until the answer head is complete, skipping interim (1xx) answers.
async fn read_head(conn: &mut Conn, method: &Method) -> Result<Head, SendError> {
    loop {
        // Nothing to parse before the first read.
        let parsed = match conn.buf.is_empty() {
            true => None,
            false => wire::parse_head(&conn.buf, method).map_err(SendError::Wire)?,
        };
        if let Some(answer) = parsed {
            conn.buf.advance(answer.len);
            if answer.status == http::StatusCode::SWITCHING_PROTOCOLS {
                return Err(SendError::Wire(WireError::Head(
                    "unasked-for protocol switch",
                )));
            }
            if answer.status.is_informational() {
                continue;
            }
            return Ok(answer);
        }
        let n = conn.read_more().await.map_err(SendError::Io)?;
        if n == 0 {
            return Err(SendError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the backend closed the connection without answering",
            )));
        }
    }
}

/// Maps a failed exchange to what the sender should do: 413 for our own body limit, 502 otherwise
/// (vmagent and Prometheus retry 5xx, so nothing is lost).
fn classify_send_error(e: SendError) -> (Option<UpstreamError>, GatewayError) {
    match e {
        SendError::Connect => (
            Some(UpstreamError::Connect),
            GatewayError::new(ErrorKind::BadGateway, "backend refused the connection"),
        ),
        SendError::Body(e) if e.is::<http_body_util::LengthLimitError>() => (
            None,
            GatewayError::new(
                ErrorKind::PayloadTooLarge,
                "request body is larger than -maxRequestBodySize",
            ),
        ),
        SendError::Body(_) => (
            None,
            GatewayError::new(
                ErrorKind::BadRequest,
                "the request body could not be read from the client",
            ),
        ),
        SendError::Wire(e) => (
            Some(UpstreamError::Broken),
            GatewayError::new(ErrorKind::BadGateway, e.to_string()),
        ),
        SendError::Io(e) => {
            tracing::debug!("backend exchange failed: {e}");
            (
                Some(UpstreamError::Broken),
                GatewayError::new(
                    ErrorKind::BadGateway,
                    "the connection to the backend broke before it answered",
                ),
            )
        }
    }
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

/// The client: its address (from the socket, or the PROXY protocol header) and that address's IP as an
/// `X-Forwarded-For` element, formatted once per connection rather than once per request.
#[derive(Debug, Clone)]
pub struct ClientIp {
    header: HeaderValue,
    /// The client's address, for logs and the audit log.
    pub addr: SocketAddr,
}

impl ClientIp {
    /// The client at `peer` (its port is not forwarded).
    pub fn new(peer: SocketAddr) -> ClientIp {
        // An IP address is always a valid header value; the fallback is never used.
        let header = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientIp { header, addr: peer }
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, client: &ClientIp) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.is_empty() => {
            let ip = client.header.to_str().unwrap_or("unknown");
            match HeaderValue::from_str(&format!("{prior}, {ip}")) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
        _ => client.header.clone(),
    };
    headers.insert(xff, value);
}

/// What a request body's bytes are also given to on their way to the backend: a count (audit log) and,
/// when asked for, a bounded copy (rows are counted from it once the backend accepted them).
#[derive(Debug, Default)]
pub struct Tap {
    /// Body bytes sent so far.
    pub bytes: u64,
    /// The copy, when one was asked for with [`Tap::copying`].
    pub copy: Option<Vec<u8>>,
    /// The most the copy may hold.
    limit: usize,
    /// The body was larger than the limit: the copy is incomplete and must not be used.
    pub overflowed: bool,
    /// The next frame of a streamed body is being awaited from the client: a timeout now is the
    /// client's slowness, not the backend's.
    awaiting_client: bool,
}

impl Tap {
    /// A tap that also keeps a copy of up to `limit` bytes.
    pub fn copying(limit: usize) -> Tap {
        Tap {
            copy: Some(Vec::new()),
            limit,
            ..Tap::default()
        }
    }

    fn observe(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        if let Some(copy) = &mut self.copy {
            if copy.len() + data.len() > self.limit {
                self.overflowed = true;
                self.copy = None;
            } else {
                copy.extend_from_slice(data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
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

    async fn get(upstream: &Backends) -> Bytes {
        let (parts, ()) = Request::get("/").body(()).unwrap().into_parts();
        let body = RequestBody::Empty;
        let client = ClientIp::new("127.0.0.1:1".parse().unwrap());
        let (response, _) = upstream
            .forward(
                parts,
                "/api/v1/query?query=up".into(),
                body,
                &mut Tap::default(),
                &client,
                OwnHeaders {
                    auth: &header::AUTHORIZATION,
                    tenant: None,
                },
            )
            .await
            .map_err(|(_, e)| e.message)
            .unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap().to_bytes()
    }

    fn upstream(url: &str) -> Backends {
        let balance = crate::flags::Balance {
            policy: crate::flags::Policy::LeastLoaded,
            fail_timeout: Duration::from_secs(3),
            retry_statuses: Vec::new(),
            max_body_to_retry: 0,
            retry_buffer: 0,
            discovery: None,
        };
        let timeouts = (Duration::from_secs(10), Duration::from_secs(60));
        let urls = [url.to_string()];
        Backends::new(
            "read",
            &urls,
            &UpstreamTls::default(),
            timeouts,
            balance,
            "/health",
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
        clean_request_headers(&mut h, &header::AUTHORIZATION);
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
