//! How long a client connection may live: `-http.idleConnTimeout` (no request and no bytes for that
//! long), `-http.headerReadTimeout` (a request's head started but not finished: slow-loris clients), and
//! `-http.connTimeout` (close after about this long even when busy, so a TCP load balancer can spread
//! reconnecting clients).
//!
//! hyper's own header timer starts as soon as a keep-alive connection waits for its next request, which
//! would close idle connections after the header timeout instead of the idle one; so tenantgate keeps the
//! clocks itself. [`WatchedIo`] stamps every read and write into an [`Activity`] (a few relaxed atomics,
//! no lock), the service marks when a request is being answered, and the connection's task checks the
//! stamps on a coarse tick: a quarter of the shortest timeout, so a limit is enforced within 25 % of its
//! value without a timer reset per request. The idle verdict is a graceful close: hyper finishes a
//! response in progress and only then closes, so no answer is ever cut short. The lifetime verdict
//! closes nothing by itself on HTTP/1.1: the next answer says `Connection: close` (as VictoriaMetrics
//! does for `-http.connTimeout`), because closing a keep-alive connection between requests races with
//! the client's next request, which then meets a closed socket (Prometheus logged `EOF` for a remote
//! write every two minutes). On HTTP/2 it is a GOAWAY, which has no such race. A slow head is cut at
//! once: nothing is being answered then, and hyper would otherwise wait for the rest of the head.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The timeouts of one listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `-http.idleConnTimeout`; zero disables it.
    pub idle: Duration,
    /// `-http.headerReadTimeout`; zero disables it.
    pub header: Duration,
    /// `-http.connTimeout`, with this connection's jitter applied; zero disables it.
    pub lifetime: Duration,
}

impl Limits {
    /// How often the connection's stamps are looked at.
    pub fn tick(&self) -> Duration {
        [self.idle, self.header, self.lifetime]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
            .map_or(Duration::from_secs(3600), |d| d / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(15))
    }
}

/// What the stamps say about a connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Leave it.
    Keep,
    /// No request and no bytes for `-http.idleConnTimeout`.
    Idle,
    /// A request's head has been arriving for longer than `-http.headerReadTimeout`.
    SlowHeader,
    /// Older than `-http.connTimeout`.
    Lifetime,
}

/// Stamps of one connection, in milliseconds since it was accepted.
pub struct Activity {
    accepted: Instant,
    /// Last read or write of at least one byte.
    last_io: AtomicU64,
    /// Last write of at least one byte.
    last_write: AtomicU64,
    /// First byte of a request head read while no request was being answered, plus one; 0 for none.
    head_started: AtomicU64,
    /// Requests inside the service (between head parsed and answer head ready).
    busy: AtomicU32,
    /// An answer went out before its request body was read: close lingering ([`super::linger`]).
    linger: AtomicBool,
    /// `-http.connTimeout` passed: the next answer says `Connection: close`.
    retiring: AtomicBool,
}

impl Activity {
    /// Stamps for a connection accepted now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            accepted: Instant::now(),
            last_io: AtomicU64::new(0),
            last_write: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            busy: AtomicU32::new(0),
            linger: AtomicBool::new(false),
            retiring: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        self.accepted.elapsed().as_millis() as u64
    }

    fn read_some(&self) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if self.busy.load(Ordering::Relaxed) == 0 && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(now + 1, Ordering::Relaxed);
        }
    }

    fn wrote_some(&self) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        self.last_write.store(now, Ordering::Relaxed);
    }

    /// The service got a request: its head is complete.
    pub fn request_started(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    /// The service produced the answer's head (its body may still stream: writes keep it from idling).
    pub fn request_answered(&self) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The connection closes after this answer with unread request bytes in it: its socket is to be
    /// closed lingering, so the client reads the answer rather than a reset.
    pub fn close_lingering(&self) {
        self.linger.store(true, Ordering::Relaxed);
    }

    /// Asks that the connection end after its next answer, which says so (`Connection: close`): the
    /// client learns it before it could send another request, so no request meets a closing socket.
    /// Returns `false` when that was asked already.
    pub fn retire(&self) -> bool {
        !self.retiring.swap(true, Ordering::Relaxed)
    }

    /// The next answer must end the connection ([`Activity::retire`]).
    pub fn retiring(&self) -> bool {
        self.retiring.load(Ordering::Relaxed)
    }

    /// Judges the connection against `limits`.
    pub fn verdict(&self, limits: &Limits) -> Verdict {
        let now = self.now_ms();
        let over = |since: u64, limit: Duration| {
            !limit.is_zero() && now.saturating_sub(since) > limit.as_millis() as u64
        };
        // A connection already told to end (HTTP/1.1 lifetime) is still judged idle or slow below.
        if over(0, limits.lifetime) && !self.retiring() {
            return Verdict::Lifetime;
        }
        if self.busy.load(Ordering::Relaxed) > 0 {
            return Verdict::Keep;
        }
        match self.head_started.load(Ordering::Relaxed) {
            0 if over(self.last_io.load(Ordering::Relaxed), limits.idle) => Verdict::Idle,
            0 => Verdict::Keep,
            // A head that began while an answer was still being written (a pipelining client) waits
            // for that answer; only one that began after the last write is a slow head.
            started
                if over(started - 1, limits.header)
                    && self.last_write.load(Ordering::Relaxed) < started =>
            {
                Verdict::SlowHeader
            }
            started
                if over(
                    self.last_io.load(Ordering::Relaxed).max(started - 1),
                    limits.idle,
                ) =>
            {
                Verdict::Idle
            }
            _ => Verdict::Keep,
        }
    }
}

/// What a client stream must be to be watched, and handed to a lingering close when it drops.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientStream for T {}

/// A client stream whose reads and writes are stamped into its [`Activity`]. Dropped after an answer
/// that asked for it ([`Activity::close_lingering`]), the stream is not closed at once but handed to
/// [`super::linger`].
pub struct WatchedIo<T: ClientStream> {
    /// Always `Some` until dropped.
    inner: Option<T>,
    activity: Arc<Activity>,
}

impl<T: ClientStream> WatchedIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Arc<Activity>) -> WatchedIo<T> {
        WatchedIo {
            inner: Some(inner),
            activity,
        }
    }

    fn io(&mut self) -> io::Result<Pin<&mut T>> {
        match self.inner.as_mut() {
            Some(inner) => Ok(Pin::new(inner)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl<T: ClientStream> Drop for WatchedIo<T> {
    fn drop(&mut self) {
        if !self.activity.linger.load(Ordering::Relaxed) {
            return;
        }
        if let (Some(inner), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                let read = super::linger::linger(inner).await;
                tracing::debug!(read, "lingering close done");
            });
        }
    }
}

impl<T: ClientStream> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = match self.io() {
            Ok(io) => io.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        };
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        result
    }
}

impl<T: ClientStream> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = match self.io() {
            Ok(io) => io.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        };
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote_some();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = match self.io() {
            Ok(io) => io.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        };
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote_some();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => io.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => io.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            idle: Duration::from_millis(200),
            header: Duration::from_millis(100),
            lifetime: Duration::ZERO,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_close_after_the_idle_limit_not_the_header_one() {
        let a = Activity::new();
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(a.verdict(&limits()), Verdict::Keep, "idle 150 ms < 200 ms");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(a.verdict(&limits()), Verdict::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_head_must_finish_within_the_header_limit() {
        let a = Activity::new();
        a.read_some();
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(a.verdict(&limits()), Verdict::SlowHeader);
        a.request_started();
        assert_eq!(a.verdict(&limits()), Verdict::Keep, "being answered");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            a.verdict(&limits()),
            Verdict::Keep,
            "a slow backend is not an idle client"
        );
        a.request_answered();
        assert_eq!(a.verdict(&limits()), Verdict::Keep);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(a.verdict(&limits()), Verdict::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn lifetime_applies_even_while_busy() {
        let a = Activity::new();
        a.request_started();
        let l = Limits {
            lifetime: Duration::from_millis(500),
            ..limits()
        };
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(a.verdict(&l), Verdict::Lifetime);
        assert!(l.tick() <= Duration::from_millis(25) + Duration::from_millis(50));
    }
}
