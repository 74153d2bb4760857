//! Backend connections: the socket (plain or TLS) with its read buffer, the pool of idle ones, and
//! [`BackendBody`], which streams an answer's body straight off the socket to the client.
//!
//! An exchange runs inside the client's own task: the request is written, the answer head read, and
//! the body read as the client's connection asks for it. Nothing else polls a backend connection, so
//! there is no connection task, channel or wake-up between tasks on the way. A connection goes back
//! to the pool when its answer's body has been read to its end, and is closed otherwise.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::wire::{ChunkedDecoder, Decoded, Framing};

/// How much room a read asks for: most answers fit in one read; big ones come in 64 KiB steps.
const READ_SIZE: usize = 4 * 1024;
const BIG_READ_SIZE: usize = 64 * 1024;

/// A backend socket.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One connection to a backend and the bytes read from it but not yet used.
pub struct Conn {
    pub io: Io,
    pub buf: BytesMut,
    /// Exchanges completed on this connection (0: fresh, nothing can have gone stale).
    pub uses: u32,
}

impl Conn {
    pub fn new(io: Io) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            uses: 0,
        }
    }

    /// Reads what the socket has into the buffer; `Ok(0)` at end of stream.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        self.reserve();
        self.io.read_buf(&mut self.buf).await
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.reserve();
        let read = std::pin::pin!(self.io.read_buf(&mut self.buf));
        std::future::Future::poll(read, cx)
    }

    fn reserve(&mut self) {
        if self.buf.capacity() - self.buf.len() < 1024 {
            let big = self.buf.capacity() >= READ_SIZE;
            self.buf
                .reserve(if big { BIG_READ_SIZE } else { READ_SIZE });
        }
    }

    /// False when the backend has closed (or reset) the idle connection, or sent bytes nobody asked
    /// for. Costs no system call unless the socket reported being readable.
    fn looks_alive(&self) -> bool {
        let tcp = match &self.io {
            Io::Plain(tcp) => tcp,
            Io::Tls(tls) => tls.get_ref().0,
        };
        let mut cx = Context::from_waker(Waker::noop());
        match tcp.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: end of stream, an error, or stray bytes; or readiness left over from the last
            // read of the answer. Only a would-block read says the socket is idle and open.
            Poll::Ready(Ok(())) => match &self.io {
                Io::Plain(tcp) => {
                    matches!(tcp.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                }
                Io::Tls(_) => false,
            },
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Idle keep-alive connections to one backend, newest last. One backend per pool, so no key to hash;
/// the mutex is held for one push or pop, never across an await.
pub struct Pool {
    idle: Mutex<VecDeque<(Conn, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// The most recently used live connection, dropping expired and closed ones on the way.
    pub fn take(&self) -> Option<Conn> {
        loop {
            let (conn, since) = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_back()?;
            if since.elapsed() < self.idle_timeout && conn.looks_alive() {
                return Some(conn);
            }
        }
    }

    /// Keeps a connection whose exchange is over for the next request.
    pub fn put(&self, mut conn: Conn) {
        // An idle connection holds no buffer: with a thousand of them that is what memory goes to.
        conn.buf = BytesMut::new();
        conn.uses = conn.uses.saturating_add(1);
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while idle
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= self.idle_timeout)
        {
            idle.pop_front();
        }
        if idle.len() < self.max_idle {
            idle.push_back((conn, now));
        }
    }
}

/// Where a body is in its framing.
enum Remaining {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A backend's answer body, streamed to the client straight from the socket. The connection goes
/// back to the pool as soon as the last byte is read; a body dropped early (client gone) closes the
/// connection instead, as nothing else could read the rest of the answer off it.
pub struct BackendBody {
    conn: Option<Conn>,
    remaining: Remaining,
    keep_alive: bool,
    pool: Arc<Pool>,
}

impl BackendBody {
    /// The body that follows a head with `framing`, whose first bytes may already be in `conn.buf`.
    pub fn new(conn: Conn, framing: Framing, keep_alive: bool, pool: Arc<Pool>) -> BackendBody {
        let remaining = match framing {
            Framing::Empty | Framing::Length(0) => Remaining::Done,
            Framing::Length(n) => Remaining::Length(n),
            Framing::Chunked => Remaining::Chunked(ChunkedDecoder::default()),
            Framing::UntilClose => Remaining::UntilClose,
        };
        let mut body = BackendBody {
            conn: Some(conn),
            remaining,
            keep_alive,
            pool,
        };
        if matches!(body.remaining, Remaining::Done) {
            body.finish();
        }
        body
    }

    /// The body has been read to its end: the connection goes back to the pool if it can carry
    /// another exchange (keep-alive, and no stray bytes after this answer).
    fn finish(&mut self) {
        self.remaining = Remaining::Done;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                self.pool.put(conn);
            }
        }
    }

    /// The next frame available without reading the socket, if any.
    fn take_buffered(&mut self) -> Result<Option<Bytes>, io::Error> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let data = match &mut self.remaining {
            Remaining::Done => None,
            Remaining::Length(left) => {
                if conn.buf.is_empty() {
                    return Ok(None);
                }
                let take = conn
                    .buf
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= take as u64;
                let data = conn.buf.split_to(take).freeze();
                if *left == 0 {
                    self.finish();
                }
                Some(data)
            }
            Remaining::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => Some(data),
                Ok(Decoded::NeedMore) => None,
                Ok(Decoded::End) => {
                    self.finish();
                    None
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            },
            Remaining::UntilClose => (!conn.buf.is_empty()).then(|| conn.buf.split().freeze()),
        };
        Ok(data)
    }
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            match this.take_buffered() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match std::task::ready!(conn.poll_read_more(cx)) {
                Ok(0) => {
                    this.conn = None;
                    return if matches!(this.remaining, Remaining::UntilClose) {
                        this.remaining = Remaining::Done;
                        Poll::Ready(None)
                    } else {
                        // A short body must never look like a whole one: the client sees an error.
                        Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the backend closed the connection in the middle of the answer",
                        ))))
                    };
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.remaining, Remaining::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Remaining::Done => SizeHint::with_exact(0),
            Remaining::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
