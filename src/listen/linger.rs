//! Lingering close (RFC 9112 §9.6): how a connection ends after an answer sent before its request
//! body was read ([`crate::client_body`] decides when).
//!
//! Closing a socket that still has unread bytes in it makes the kernel send a reset, and a reset that
//! reaches the client before it has read the answer throws the answer away: the client sees a broken
//! pipe instead of its 413 or 429. So such a connection is shut for writing (the client reads the
//! answer, then end-of-stream) and whatever the client still sends is read and dropped until it closes
//! its side, or for at most [`LINGER_TIME`], [`LINGER_IDLE`] without a byte, or [`LINGER_BYTES`],
//! whichever comes first. A sender that sends its whole body before reading (Python's `http.client`)
//! reads its answer as long as its rest fits in those budgets; curl stops sending as soon as it sees
//! the answer, so a refused 200 MiB upload costs a few socket buffers' worth of reading.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The longest a closing connection is read from.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// A client that sends nothing for this long has stopped sending (it is reading the answer, or gone).
pub const LINGER_IDLE: Duration = Duration::from_secs(1);

/// The most read from a closing connection: twice the default `-maxRequestBodySize`, so a client that
/// sent a body just over that limit whole before reading still reads its 413.
pub const LINGER_BYTES: u64 = 64 << 20;

/// Shuts `io` for writing and reads until the client closes or a budget runs out; returns the bytes
/// read. The socket closes when `io` drops at the end.
pub async fn linger<I>(mut io: I) -> u64
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + LINGER_TIME;
    // hyper has usually shut the write side already; a second shutdown is harmless.
    let _ = tokio::time::timeout_at(deadline, io.shutdown()).await;
    let mut buf = vec![0u8; 16 * 1024];
    let mut read = 0u64;
    while read < LINGER_BYTES {
        let idle_until = (Instant::now() + LINGER_IDLE).min(deadline);
        match tokio::time::timeout_at(idle_until, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => read += n as u64,
            _ => break,
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_until_the_client_closes_its_side() {
        let (mut client, server) = tokio::io::duplex(1024);
        let task = tokio::spawn(linger(server));
        client.write_all(&[b'x'; 3000]).await.unwrap();
        // Our side was shut: the client reads end-of-stream, not an error.
        let mut answer = Vec::new();
        client.shutdown().await.unwrap();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(task.await.unwrap(), 3000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_given_up_on_after_the_idle_time() {
        let (_client, server) = tokio::io::duplex(1024);
        let started = Instant::now();
        assert_eq!(linger(server).await, 0);
        assert!(started.elapsed() >= LINGER_IDLE && started.elapsed() < LINGER_TIME);
    }
}
