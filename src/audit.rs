//! The audit log (`-auditLog`): one JSON line per request saying who did what and how it went — time,
//! client address (the PROXY protocol's when a load balancer sends it), the token's `sub` and `client_id`,
//! tenant, labels granted, route, method, path with its query (cut at `-loggerMaxArgLen`), status,
//! duration, bytes in and out. Never the token or any other secret: only claims that name an identity,
//! and a path whose query tenantgate forwards anyway.
//!
//! The line is written when the answer's body has been sent (so bytes out and the duration are true), by a
//! writer thread fed through a bounded channel: a request never waits for the disk. If the disk cannot
//! keep up and the channel is full, the line is dropped and counted (`tenantgate_audit_lines_dropped_total`)
//! rather than slowing every tenant down. A file is appended to and reopened on SIGHUP, for logrotate.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use serde::Serialize;
use tokio::sync::watch;

use crate::flags::AuditTarget;
use crate::reload::{self, Part};

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 65_536;

enum Message {
    Line(String),
    Reopen,
}

/// The audit log's sending side, shared by every request.
pub struct AuditLog {
    tx: SyncSender<Message>,
    max_arg_len: usize,
    written: AtomicU64,
    dropped: AtomicU64,
}

/// What one request did, filled in as it is served.
#[derive(Serialize, Default)]
pub struct Record {
    /// When the request arrived (RFC 3339, UTC, milliseconds).
    pub ts: String,
    /// The client's address.
    pub client: String,
    /// The token's `sub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The token's `client_id` (or `azp`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// How the token was accepted: `jwt`, `introspection` or `id_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<&'static str>,
    /// `account:project` the request went to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Labels the grant forces.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<(String, String)>,
    /// Filters the grant adds to reads.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// `read`, `write`, `internal` or `refused`.
    pub route: &'static str,
    /// The HTTP method.
    pub method: String,
    /// Path and query as sent, cut at `-loggerMaxArgLen`.
    pub path: String,
    /// The answer's status.
    pub status: u16,
    /// From arrival to the answer's last byte.
    pub duration_seconds: f64,
    /// Request body bytes (as declared, or as streamed).
    pub bytes_in: u64,
    /// Answer body bytes sent.
    pub bytes_out: u64,
    /// Why tenantgate refused the request, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl AuditLog {
    /// Opens the target and starts the writer thread.
    pub fn start(
        target: &AuditTarget,
        max_arg_len: usize,
        reload: watch::Receiver<u64>,
    ) -> Result<Arc<AuditLog>, String> {
        let out = Output::open(target)?;
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || writer(rx, out))
            .map_err(|e| format!("cannot start the audit log writer: {e}"))?;
        if matches!(target, AuditTarget::File(_)) {
            reload::STATUS.uses(Part::AuditLog);
            let tx = tx.clone();
            let mut reload = reload;
            tokio::spawn(async move {
                while reload.changed().await.is_ok() {
                    let _ = tx.try_send(Message::Reopen);
                }
            });
        }
        Ok(Arc::new(AuditLog {
            tx,
            max_arg_len,
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }))
    }

    /// A record for a request arriving now.
    pub fn begin(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        client: std::net::SocketAddr,
    ) -> Record {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Record {
            ts: jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string(),
            client: client.to_string(),
            method: method.to_string(),
            path: crate::logging::truncate_arg(path, self.max_arg_len).into_owned(),
            ..Record::default()
        }
    }

    fn write(&self, record: &Record) {
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        line.push('\n');
        match self.tx.try_send(Message::Line(line)) {
            Ok(()) => {
                self.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Metric families for `/metrics`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP tenantgate_audit_lines_total Audit log lines queued for writing.\n# TYPE tenantgate_audit_lines_total counter\ntenantgate_audit_lines_total {}\n# HELP tenantgate_audit_lines_dropped_total Audit log lines dropped because the writer could not keep up.\n# TYPE tenantgate_audit_lines_dropped_total counter\ntenantgate_audit_lines_dropped_total {}",
            self.written.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed)
        );
    }
}

/// Where lines go.
enum Output {
    Stdout,
    Stderr,
    File(PathBuf, BufWriter<File>),
}

impl Output {
    fn open(target: &AuditTarget) -> Result<Output, String> {
        Ok(match target {
            AuditTarget::Stdout => Output::Stdout,
            AuditTarget::Stderr => Output::Stderr,
            AuditTarget::File(path) => Output::File(path.clone(), BufWriter::new(append(path)?)),
        })
    }

    fn write(&mut self, line: &[u8]) {
        let _ = match self {
            Output::Stdout => std::io::stdout().lock().write_all(line),
            Output::Stderr => std::io::stderr().lock().write_all(line),
            Output::File(_, file) => file.write_all(line),
        };
    }

    fn flush(&mut self) {
        if let Output::File(_, file) = self {
            let _ = file.flush();
        }
    }
}

fn append(path: &PathBuf) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("-auditLog {}: {e}", path.display()))
}

/// The writer thread: writes lines as they come, flushing whenever the queue is empty.
fn writer(rx: Receiver<Message>, mut out: Output) {
    while let Ok(message) = rx.recv() {
        let mut next = Some(message);
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => out.write(line.as_bytes()),
                Message::Reopen => {
                    out.flush();
                    if let Output::File(path, file) = &mut out {
                        match append(path) {
                            Ok(f) => {
                                *file = BufWriter::new(f);
                                reload::STATUS.succeeded(Part::AuditLog);
                            }
                            Err(e) => reload::STATUS.failed(Part::AuditLog, &e),
                        }
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        out.flush();
    }
}

/// An answer body that counts what it sends and writes the request's audit line when it is done (sent
/// whole, or dropped because the client went away).
pub struct AuditedBody<B> {
    inner: B,
    record: Option<Record>,
    started: Instant,
    log: Arc<AuditLog>,
}

impl<B> AuditedBody<B> {
    /// Wraps `inner`; `record` is complete but for bytes out and the duration.
    pub fn new(inner: B, record: Record, started: Instant, log: Arc<AuditLog>) -> Self {
        AuditedBody {
            inner,
            record: Some(record),
            started,
            log,
        }
    }
}

impl<B> Drop for AuditedBody<B> {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.duration_seconds = self.started.elapsed().as_secs_f64();
            self.log.write(&record);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for AuditedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let (Some(data), Some(record)) = (frame.data_ref(), self.record.as_mut()) {
                record.bytes_out += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Seconds since the epoch of `t`, for records built from other clocks.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn a_line_per_request_with_bytes_out_and_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (_tx, rx) = watch::channel(0);
        let log = AuditLog::start(&AuditTarget::File(path.clone()), 20, rx).unwrap();
        let uri: http::Uri = "/api/v1/query?query=up&something=much-longer-than-twenty"
            .parse()
            .unwrap();
        let mut record = log.begin(&http::Method::GET, &uri, "192.0.2.1:5000".parse().unwrap());
        record.sub = Some("alice".into());
        record.status = 200;
        record.route = "read";
        let body = AuditedBody::new(
            Full::new(Bytes::from_static(b"hello")),
            record,
            Instant::now(),
            log.clone(),
        );
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            if !text.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["sub"], "alice");
        assert_eq!(v["bytes_out"], 5);
        assert_eq!(v["client"], "192.0.2.1:5000");
        assert_eq!(v["path"], "/api/v1/q..an-twenty");
        assert!(v.get("client_id").is_none());
    }
}
