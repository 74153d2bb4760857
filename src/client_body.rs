//! The client's request body as the pipeline carries it, and what becomes of the part nobody read.
//!
//! Many steps answer before a body is read to its end: a refusal (401, 403, 404, 413, 415, 429, ...)
//! before it, a size limit inside it, a backend that answered an upload early. On HTTP/1.1 the unread
//! rest is still on its way in the connection; a server that closes a socket with unread bytes in it
//! makes the kernel send a reset, and a client that sends its whole body before reading (Python's
//! `http.client`, most importers) gets a broken pipe instead of its answer and loses the connection
//! with whatever it was about to send next. So a [`ClientBody`] dropped before its end hands its rest
//! back to the request's [`Unread`] slot, and the server decides once, when the answer is known, what
//! the connection does with it ([`discard`]):
//! - a small rest (at most [`DRAIN_BYTES`], arriving within [`DRAIN_TIME`]) is read and thrown away
//!   before the answer, and the connection stays alive, as nginx does;
//! - anything larger, slower or unknown gets the answer with `Connection: close`; the connection then
//!   closes lingering (`crate::listen::linger`, RFC 9112 §9.6): our side is shut for writing and
//!   what the client still sends is read and dropped for a bounded time, so it reads the answer, not
//!   a reset.
//!
//! A client that sent `Expect: 100-continue` and whose body was never asked for gets the final answer
//! without `100 Continue` (hyper sends that only when a body is first read) and the connection closes:
//! draining it would ask for the body we are refusing. On HTTP/2 nothing is drained: the stream ends
//! with the answer and `RST_STREAM(NO_ERROR)` (the h2 crate sends that for a stream answered before
//! its request body ended) and the connection's other streams go on.
//!
//! Requests without a body (every GET) carry no slot: the common case costs nothing.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// At most this much of a body's rest is read to keep the connection alive. A refused 1 MiB batch
/// costs about a millisecond of reading on a LAN; larger ones close the connection instead, which
/// costs the client one new connection.
pub const DRAIN_BYTES: u64 = 1 << 20;

/// The rest must arrive within this long, or the connection closes instead (a slow or stalled
/// sender does not hold the answer back for longer).
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// A client's request body on its way through the pipeline.
pub struct ClientBody {
    inner: Option<Incoming>,
    /// The body returned its end (or was empty from the start): nothing is left to discard.
    ended: bool,
    /// Where an unfinished body goes when dropped; `None` for bodiless requests.
    back: Option<Arc<Unread>>,
}

/// The rest of a request's body that the pipeline did not read, once it is dropped.
#[derive(Default)]
pub struct Unread(Mutex<Option<Incoming>>);

impl Unread {
    /// The unread rest, if the body was dropped before its end.
    pub fn take(&self) -> Option<Incoming> {
        self.0.lock().ok().and_then(|mut rest| rest.take())
    }
}

impl ClientBody {
    /// Wraps a request's body; the slot is `None` when the body is known to be empty.
    pub fn new(body: Incoming) -> (ClientBody, Option<Arc<Unread>>) {
        if body.is_end_stream() {
            let empty = ClientBody {
                inner: Some(body),
                ended: true,
                back: None,
            };
            return (empty, None);
        }
        let back = Arc::new(Unread::default());
        let body = ClientBody {
            inner: Some(body),
            ended: false,
            back: Some(back.clone()),
        };
        (body, Some(back))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            // A broken body (the client went away, a framing error) has no rest worth reading.
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        if self.is_end_stream() {
            return;
        }
        if let (Some(back), Some(rest)) = (&self.back, self.inner.take()) {
            if let Ok(mut slot) = back.0.lock() {
                *slot = Some(rest);
            }
        }
    }
}

/// What reading the rest of a body came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discarded {
    /// Read to its end and thrown away: the connection stays usable.
    Drained {
        /// Bytes thrown away.
        bytes: u64,
    },
    /// Too large, too slow, or not to be asked for: the connection must close (lingering).
    MustClose {
        /// Bytes thrown away before giving up.
        bytes: u64,
    },
}

/// Reads and throws away the rest of an HTTP/1.1 body within [`DRAIN_BYTES`] and [`DRAIN_TIME`].
/// `expects_continue`: the client sent `Expect: 100-continue`, so reading would ask it for the body.
pub async fn discard(rest: Incoming, expects_continue: bool) -> Discarded {
    discard_within(rest, expects_continue, DRAIN_BYTES, DRAIN_TIME).await
}

async fn discard_within<B>(
    mut rest: B,
    expects_continue: bool,
    max: u64,
    time: Duration,
) -> Discarded
where
    B: Body + Unpin,
{
    if expects_continue || rest.size_hint().lower() > max {
        return Discarded::MustClose { bytes: 0 };
    }
    let mut bytes = 0u64;
    let drained = tokio::time::timeout(time, async {
        while let Some(frame) = rest.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                bytes += bytes::Buf::remaining(data) as u64;
                if bytes > max {
                    return false;
                }
            }
        }
        true
    })
    .await;
    match drained {
        Ok(true) => Discarded::Drained { bytes },
        _ => Discarded::MustClose { bytes },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    /// A body of unknown length (as a chunked one): `left` frames of `size` bytes, then its end, or
    /// no end at all when `stall`.
    struct Chunks {
        left: usize,
        size: usize,
        stall: bool,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if self.left == 0 {
                return if self.stall {
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                };
            }
            self.left -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; self.size])))))
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_small_rest_is_drained() {
        let body = Full::new(Bytes::from(vec![0u8; 1000]));
        let chunked = Chunks {
            left: 4,
            size: 1000,
            stall: false,
        };
        assert_eq!(
            discard_within(body, false, 4096, SECOND).await,
            Discarded::Drained { bytes: 1000 }
        );
        assert_eq!(
            discard_within(chunked, false, 4096, SECOND).await,
            Discarded::Drained { bytes: 4000 }
        );
    }

    #[tokio::test]
    async fn a_declared_rest_over_the_budget_is_not_read_at_all() {
        let body = Full::new(Bytes::from(vec![0u8; 5000]));
        assert_eq!(
            discard_within(body, false, 4096, SECOND).await,
            Discarded::MustClose { bytes: 0 }
        );
    }

    #[tokio::test]
    async fn an_undeclared_rest_is_read_only_up_to_the_budget() {
        let chunked = Chunks {
            left: 100,
            size: 1000,
            stall: false,
        };
        assert_eq!(
            discard_within(chunked, false, 4096, SECOND).await,
            Discarded::MustClose { bytes: 5000 }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_rest_is_given_up_after_the_time_budget() {
        let stalled = Chunks {
            left: 1,
            size: 10,
            stall: true,
        };
        assert_eq!(
            discard_within(stalled, false, 4096, SECOND).await,
            Discarded::MustClose { bytes: 10 }
        );
    }

    #[tokio::test]
    async fn a_body_the_client_waits_to_be_asked_for_is_never_asked_for() {
        let body = Full::new(Bytes::from_static(b"x"));
        assert_eq!(
            discard_within(body, true, 4096, SECOND).await,
            Discarded::MustClose { bytes: 0 }
        );
    }
}
