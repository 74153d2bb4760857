//! HTTP/1.1 on the wire to a backend (RFC 9112): the request head we send, the answer head we read
//! and how the answer's body is delimited, and the chunked decoder. Pure functions over bytes, so
//! every rule here is unit-tested without a socket.
//!
//! Only the backend side lives here. Clients, who are hostile, still talk to hyper's server; a
//! backend is one we were configured to trust, but its bytes are parsed with the same care: every
//! length is bounded, every number checked, and anything ambiguous ends the connection rather than
//! guessing where the next answer starts.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// The longest answer head we read before giving up (status line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most headers an answer may carry.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line or trailer line (extensions included).
const MAX_LINE: usize = 4096;
/// The most trailer bytes read (and dropped) after the last chunk.
const MAX_TRAILERS: usize = 64 * 1024;

/// How the request body is framed on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body, and no framing header (GET and the like).
    None,
    /// `Content-Length`.
    Known(u64),
    /// `Transfer-Encoding: chunked`: a streamed body of unknown length.
    Chunked,
}

/// Writes the request line and headers of one exchange into `out`. The caller has removed
/// hop-by-hop headers; any `Content-Length` or `Transfer-Encoding` left is dropped here, so the only
/// framing the backend sees is the one that matches the body we send.
///
/// `target` must be an origin-form target without spaces or control bytes ([`valid_target`]).
pub fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    length: BodyLength,
) {
    encode_head_for(out, method, target, None, headers, length);
}

/// [`encode_head`] with `host` as the first header (the caller has removed any other `Host`); returns
/// where the host value is in `out`, so another can be put in its place.
pub fn encode_head_for(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    host: Option<&[u8]>,
    headers: &HeaderMap,
    length: BodyLength,
) -> std::ops::Range<usize> {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut at = out.len()..out.len();
    if let Some(host) = host {
        out.extend_from_slice(b"host: ");
        let start = out.len();
        out.extend_from_slice(host);
        at = start..out.len();
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        // `http` guarantees names are tokens and values hold no CR, LF or NUL.
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match length {
        BodyLength::None => {}
        BodyLength::Known(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa_u64(n, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        BodyLength::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    at
}

/// True when `target` can go on a request line as is: not empty, starts with `/`, and has no byte
/// that could end the line or the target (space, control bytes, DEL).
pub fn valid_target(target: &str) -> bool {
    target.starts_with('/') && target.bytes().all(|b| b > b' ' && b != 0x7f)
}

/// Writes `n` in decimal into `buf` and returns the digits.
fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Writes the size line of one chunk: hex length and CRLF.
pub fn chunk_size_line(len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
}

/// How an answer's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD, 1xx, 204, 304.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the backend closes the connection.
    UntilClose,
}

/// An answer's head, parsed.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    /// As sent, except that `Content-Length` is removed when `Transfer-Encoding` overrides it.
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another exchange once this body is read.
    pub keep_alive: bool,
    /// How many bytes of the buffer the head took.
    pub len: usize,
}

/// Why an answer cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the backend's answer head is not valid HTTP/1.1: {0}")]
    Head(&'static str),
    #[error("the backend's answer head is larger than 64 KiB")]
    HeadTooLarge,
    #[error("the backend's chunked body is malformed: {0}")]
    Chunk(&'static str),
}

/// Parses the answer head at the start of `buf`, if it is all there (`Ok(None)`: read more).
/// `method` is the request's: answers to HEAD have no body whatever they say.
pub fn parse_head(buf: &[u8], method: &Method) -> Result<Option<Head>, WireError> {
    // Uninitialised slots: filling 100 empty headers would cost more than parsing a small head.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut answer,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(WireError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::Head("too many headers")),
        Err(_) => return Err(WireError::Head("malformed status line or header")),
    };
    if len > MAX_HEAD {
        return Err(WireError::HeadTooLarge);
    }
    let code = answer.code.ok_or(WireError::Head("no status"))?;
    let status = StatusCode::from_u16(code).map_err(|_| WireError::Head("bad status code"))?;
    let version = match answer.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    // Hop-by-hop headers describe this connection, not the answer: read for framing, never kept.
    let mut headers = HeaderMap::with_capacity(answer.headers.len());
    let mut connection = Connection::default();
    let mut transfer_encoding: Option<Vec<u8>> = None;
    for h in answer.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| WireError::Head("header name"))?;
        let value =
            HeaderValue::from_bytes(h.value).map_err(|_| WireError::Head("header value"))?;
        if name == header::CONNECTION {
            connection.add(h.value);
        } else if name == header::TRANSFER_ENCODING {
            let codings = transfer_encoding.get_or_insert_with(Vec::new);
            codings.extend_from_slice(b",");
            codings.extend_from_slice(h.value);
        } else if !is_hop_by_hop(&name) {
            headers.append(name, value);
        }
    }
    for named in &connection.names {
        headers.remove(named);
    }

    let mut keep_alive = version == Version::HTTP_11 && !connection.close;
    let no_body = method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Empty
    } else if let Some(codings) = transfer_encoding {
        // Transfer-Encoding overrides Content-Length (§6.3 3); a message with both is suspect, so the
        // connection is not reused, and the length must not reach the client as if it were true.
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
        if last_coding_is_chunked(&codings) {
            Framing::Chunked
        } else {
            keep_alive = false;
            Framing::UntilClose
        }
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        Framing::Length(content_length(&headers)?)
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    Ok(Some(Head {
        status,
        headers,
        framing,
        keep_alive,
        len,
    }))
}

/// The one length every `Content-Length` field (and list element) agrees on (§8.6).
fn content_length(headers: &HeaderMap) -> Result<u64, WireError> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    // The usual case, one field of plain digits, without splitting and trimming.
    if let (Some(value), None) = (values.next(), values.next()) {
        let digits = value.as_bytes();
        if !digits.is_empty() && digits.len() <= 19 && digits.iter().all(u8::is_ascii_digit) {
            return Ok(digits
                .iter()
                .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')));
        }
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(WireError::Head("bad content-length"));
            }
            let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err(WireError::Head("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    length.ok_or(WireError::Head("bad content-length"))
}

fn last_coding_is_chunked(codings: &[u8]) -> bool {
    codings
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .rfind(|c| !c.is_empty())
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
}

/// What an answer's `Connection` headers say: `close`, and other headers that are hop-by-hop.
#[derive(Default)]
struct Connection {
    close: bool,
    names: Vec<HeaderName>,
}

impl Connection {
    fn add(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive") {
                // The usual value: nothing to remember.
            } else if let Ok(name) = HeaderName::from_bytes(token) {
                // Never let Connection remove what the client needs to decode the body.
                if name != header::CONTENT_LENGTH
                    && name != header::CONTENT_TYPE
                    && name != header::CONTENT_ENCODING
                {
                    self.names.push(name);
                }
            }
        }
    }
}

/// Headers that describe one connection (RFC 9110 §7.6.1), plus `Proxy-*` and `Upgrade`: never
/// forwarded, in either direction.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is one of [`HOP_BY_HOP`].
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// What the chunked decoder made of the bytes it had.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes, taken from the front of the buffer.
    Data(Bytes),
    /// The buffer ends inside a size line, a chunk's CRLF or the trailers: read more.
    NeedMore,
    /// The last chunk and the trailers have been read; the buffer holds only what follows.
    End,
}

/// Decodes a chunked body incrementally (RFC 9112 §7.1). Chunk extensions and trailers are read and
/// dropped.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl ChunkedDecoder {
    /// Takes what it can from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Chunk("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.trailer_bytes += line.len() + 2;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(WireError::Chunk("trailers too large"));
                    }
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// One CRLF-terminated line from the front of `buf`, without its CRLF; `None` when it is not all
/// there yet. A bare LF is refused: it is where parsers disagree.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
    let Some(lf) = memchr::memchr(b'\n', buf) else {
        return if buf.len() > MAX_LINE {
            Err(WireError::Chunk("line too long"))
        } else {
            Ok(None)
        };
    };
    if lf > MAX_LINE {
        return Err(WireError::Chunk("line too long"));
    }
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(WireError::Chunk("line not ended by CRLF"));
    }
    let line = buf.split_to(lf + 1).freeze();
    Ok(Some(line.slice(..lf - 1)))
}

/// The size on a chunk-size line: hex digits, then optional whitespace and `;extensions`.
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(WireError::Chunk("bad chunk size"));
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(WireError::Chunk("bad chunk size"));
    }
    Ok(line[..digits].iter().fold(0u64, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        n * 16 + u64::from(v)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, WireError> {
        parse_head(text.as_bytes(), &Method::GET)
    }

    #[test]
    fn request_heads_carry_only_our_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("vm:8428"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let mut out = Vec::new();
        encode_head(
            &mut out,
            &Method::POST,
            "/api/v1/write?x=1",
            &headers,
            BodyLength::Known(12),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /api/v1/write?x=1 HTTP/1.1\r\nhost: vm:8428\r\ncontent-type: text/plain\r\ncontent-length: 12\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_head(
            &mut out,
            &Method::GET,
            "/",
            &HeaderMap::new(),
            BodyLength::None,
        );
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
        let mut out = Vec::new();
        encode_head(
            &mut out,
            &Method::PUT,
            "/",
            &HeaderMap::new(),
            BodyLength::Chunked,
        );
        assert_eq!(out, b"PUT / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(itoa_u64(0, &mut [0; 20]), b"0");
        assert_eq!(itoa_u64(u64::MAX, &mut [0; 20]), b"18446744073709551615");
    }

    #[test]
    fn targets_with_line_breaking_bytes_are_refused() {
        assert!(valid_target(
            "/api/v1/query?query=up%7Bteam%3D%22dev%22%7D&x=%20"
        ));
        for bad in [
            "",
            "api",
            "/a b",
            "/a\r\nHost: x",
            "/a\tb",
            "/a\x7f",
            "/a\0",
        ] {
            assert!(!valid_target(bad), "{bad:?}");
        }
    }

    #[test]
    fn lengths_and_keep_alive() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (StatusCode::OK, Framing::Length(5), true)
        );
        assert_eq!(h.len, 38);
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        let h =
            head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.1 999x OK\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: X-Other , keep-alive, Content-Length\r\nconnection: x-more\r\n\
             Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nTrailer: x\r\nProxy-Connection: x\r\n\
             Content-Length: 2\r\nX-Other: 1\r\nX-More: 1\r\nX-Kept: 1\r\n\r\nok",
        )
        .unwrap()
        .unwrap();
        let mut left: Vec<_> = h.headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-length", "x-kept"]);
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(2), true));
    }

    #[test]
    fn bodiless_answers() {
        for text in [
            "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\n",
        ] {
            let h = head(text).unwrap().unwrap();
            assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true), "{text}");
        }
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
            &Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Empty);
    }

    #[test]
    fn transfer_encoding_wins_over_content_length_and_ends_reuse() {
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
    }

    #[test]
    fn heads_arrive_in_pieces_and_are_bounded() {
        let full = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        for cut in 0..full.len() {
            assert!(head(&full[..cut]).unwrap().is_none(), "{cut}");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
        assert_eq!(head(&huge).unwrap_err(), WireError::HeadTooLarge);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x{i}: 1\r\n")).collect();
        assert!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).is_err());
    }

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), WireError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::End => return Ok((out, buf.to_vec())),
                Decoded::NeedMore => {
                    if fed == input.len() {
                        return Err(WireError::Chunk("ran out of input"));
                    }
                    let next = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let input = b"5;ext=1\r\nhello\r\n1A \r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (body, rest) = decode_all(input, step).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert!(rest.len() <= 4);
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"x\r\n",
            b"-1\r\n",
            b"\r\n",
            b"1000000000000000\r\n",
            b"5 x\r\nhello\r\n",
        ] {
            assert!(
                decode_all(bad, 3).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_LINE + 10));
        assert!(decode_all(long.as_bytes(), 1024).is_err());
        let trailers = format!("0\r\n{}", "x: y\r\n".repeat(MAX_TRAILERS / 6 + 1));
        assert!(decode_all(trailers.as_bytes(), 4096).is_err());
        assert_eq!(chunk_size(b"fFfF").unwrap(), 0xffff);
        assert_eq!(
            chunk_size(b"fffffffffffffff").unwrap(),
            0xfff_ffff_ffff_ffff
        );
    }
}
