//! Several backends of one direction (`-read.url`, `-write.url` lists): which one a request goes to,
//! which ones are skipped, and where a failed request goes next.
//!
//! - **Choice** (`-loadBalancingPolicy`, vmauth's names): `least_loaded` takes the healthy backend with
//!   the fewest requests waiting for their answer head, ties in round-robin order from a shared counter
//!   (so an idle pool still spreads); `first_available` the first healthy one in the order given.
//!   Choosing reads a few atomics: no lock, no allocation, nothing held across an await.
//! - **Failure**: a backend that refuses or resets connections, fails TLS, does not answer its head
//!   within the time left, or answers a status of `-retryStatusCodes` is marked down and skipped. It
//!   comes back only when a probe of its `/health` (`/-/ready` for Prometheus-family backends), sent
//!   every `-failTimeout`, is answered (any status below 500): a dead backend costs a probe per
//!   interval, not a request. With every backend down, requests still go to the one whose failure is
//!   oldest: tenantgate never refuses from its own memory alone. One backend is always used.
//! - **Retry**: a request whose attempt failed before any byte of an answer was passed on goes to the
//!   next backend, each backend at most once per request, as long as its body can be sent again (held
//!   whole: reads, and writes up to `-maxRequestBodySizeToRetry`) and time is left of
//!   `-upstream.timeout`, which bounds the whole request. A 429 is never a failure: it is the tenant's
//!   limit. Without another backend to try, the client gets the last backend's answer, or a 502/503/504
//!   that senders retry.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Response;

use super::{BackendBody, ClientIp, Failure, OwnHeaders, Prepared, RequestBody, Tap, Upstream};
use crate::error::{ErrorKind, GatewayError};
use crate::flags::{Balance, Policy};
use crate::metrics::{escape_label_value, UpstreamError};

/// The most backends a direction may have: a request's tried set is one 64-bit word.
pub const MAX_BACKENDS: usize = 64;

/// The backends of one direction.
pub struct Backends {
    /// `read` or `write`: the `direction` label and log wording.
    direction: &'static str,
    set: Vec<Arc<Backend>>,
    balance: Balance,
    /// Where `least_loaded` starts looking, advanced by every choice.
    next: AtomicUsize,
    /// What a probe asks for.
    probe_path: &'static str,
    /// `-upstream.timeout`: bounds a whole request, retries included.
    timeout: Duration,
    /// Requests sent again to another backend.
    retries: AtomicU64,
    /// Where the failure clock starts.
    epoch: Instant,
}

/// One backend and what the pool knows of it.
pub struct Backend {
    /// The backend and its connection pool.
    pub upstream: Upstream,
    /// `host:port`, the `backend` label.
    name: String,
    /// Requests sent and not yet answered (to their head).
    in_flight: AtomicU32,
    /// Milliseconds since the pool's epoch when the backend went down, plus one; 0 while it is up.
    down_since: AtomicU64,
    /// A probe task is running.
    probing: AtomicBool,
    requests: AtomicU64,
    errors: AtomicU64,
}

/// Holds a backend's in-flight count up while its answer head is awaited.
struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the forwarding of a request came to.
pub type Forwarded =
    Result<(Response<BackendBody>, Duration), (Option<UpstreamError>, GatewayError)>;

impl Backends {
    /// The backends at `upstreams` (in the order given), of `direction`, probed at `probe_path`.
    pub fn new(
        direction: &'static str,
        upstreams: Vec<Upstream>,
        balance: Balance,
        probe_path: &'static str,
        timeout: Duration,
    ) -> Backends {
        let set = upstreams
            .into_iter()
            .map(|upstream| {
                Arc::new(Backend {
                    name: upstream.host().to_str().unwrap_or("?").to_string(),
                    upstream,
                    in_flight: AtomicU32::new(0),
                    down_since: AtomicU64::new(0),
                    probing: AtomicBool::new(false),
                    requests: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                })
            })
            .collect();
        Backends {
            direction,
            set,
            balance,
            next: AtomicUsize::new(0),
            probe_path,
            timeout,
            retries: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The path every backend of this direction serves the API under (the same for all: flags check).
    pub fn base_path(&self) -> &str {
        self.set
            .first()
            .map_or("", |backend| backend.upstream.base_path.as_str())
    }

    /// Whether a request could go to another backend after a failure.
    pub fn has_spares(&self) -> bool {
        self.set.len() > 1
    }

    /// The backends, in the order given.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.set.iter().map(|b| b.name.as_str())
    }

    /// Sends a request for `target` (origin form) with the client's method and (cleaned) headers to a
    /// backend, and to the next one when that fails and the body can go again; returns the answer
    /// as soon as its head arrives.
    pub async fn forward(
        &self,
        parts: http::request::Parts,
        target: String,
        mut body: RequestBody,
        tap: &mut Tap,
        client: &ClientIp,
        own: OwnHeaders<'_>,
    ) -> Forwarded {
        let only = (self.set.len() == 1).then(|| self.set[0].upstream.host());
        let request =
            Prepared::new(parts, &target, &body, client, own, only).map_err(|e| (None, e))?;
        if let RequestBody::Full(bytes) = &body {
            tap.observe(bytes);
        }
        let deadline = Instant::now() + self.timeout;
        let mut tried = 0u64;
        let mut last: Option<Forwarded> = None;
        while let Some(i) = self.choose(tried) {
            tried |= 1 << i;
            if last.is_some() {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            let backend = &self.set[i];
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            backend.requests.fetch_add(1, Ordering::Relaxed);
            let sent = {
                backend.in_flight.fetch_add(1, Ordering::Relaxed);
                let _in_flight = InFlight(&backend.in_flight);
                backend.upstream.send(&request, &mut body, tap, left).await
            };
            let can_go_again = |body: &RequestBody| !matches!(body, RequestBody::Stream(_));
            match sent {
                Ok((response, took)) => {
                    let status = response.status().as_u16();
                    if !self.balance.retry_statuses.contains(&status) {
                        return Ok((response, took));
                    }
                    self.failed(backend, &format!("it answered {status}"));
                    if !can_go_again(&body) {
                        return Ok((response, took));
                    }
                    last = Some(Ok((response, took)));
                }
                Err(Failure {
                    kind: Some(kind),
                    error,
                    body_intact,
                }) => {
                    self.failed(backend, &error.message);
                    if !body_intact {
                        return Err((Some(kind), unavailable(error)));
                    }
                    last = Some(Err((Some(kind), error)));
                }
                // The client's body failed: no fault of the backend, nothing to try again.
                Err(Failure {
                    kind: None, error, ..
                }) => return Err((None, error)),
            }
        }
        last.unwrap_or_else(|| {
            Err((
                Some(UpstreamError::Timeout),
                GatewayError::new(
                    ErrorKind::GatewayTimeout,
                    format!(
                        "no backend answered within {:?} (-upstream.timeout)",
                        self.timeout
                    ),
                ),
            ))
        })
    }

    /// The backend for the next attempt of a request that has tried `tried` (bit i: backend i).
    fn choose(&self, tried: u64) -> Option<usize> {
        let n = self.set.len();
        let untried = |i: usize| tried & (1 << i) == 0;
        if n == 1 {
            return untried(0).then_some(0);
        }
        let start = match self.balance.policy {
            Policy::LeastLoaded => self.next.fetch_add(1, Ordering::Relaxed) % n,
            Policy::FirstAvailable => 0,
        };
        // The healthy backend with the fewest in flight; else the down one whose failure is oldest.
        let mut best: Option<(usize, u32)> = None;
        let mut oldest_down: Option<(usize, u64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !untried(i) {
                continue;
            }
            let backend = &self.set[i];
            match backend.down_since.load(Ordering::Relaxed) {
                0 => {
                    let load = backend.in_flight.load(Ordering::Relaxed);
                    if best.is_none_or(|(_, least)| load < least) {
                        best = Some((i, load));
                    }
                    if load == 0 || self.balance.policy == Policy::FirstAvailable {
                        break;
                    }
                }
                since => {
                    if oldest_down.is_none_or(|(_, oldest)| since < oldest) {
                        oldest_down = Some((i, since));
                    }
                }
            }
        }
        best.map(|(i, _)| i).or(oldest_down.map(|(i, _)| i))
    }

    /// Marks `backend` down (if it was up), says so once, and starts its probe.
    fn failed(&self, backend: &Arc<Backend>, why: &str) {
        backend.errors.fetch_add(1, Ordering::Relaxed);
        if self.set.len() == 1 {
            return; // the only backend is always used: there is nothing to skip to
        }
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        if backend
            .down_since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                "{} backend {} is down: {why}; skipped until a probe of {} succeeds (every {:?}, -failTimeout)",
                self.direction,
                backend.name,
                self.probe_path,
                self.balance.fail_timeout
            );
        }
        if !backend.probing.swap(true, Ordering::AcqRel) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(probe(
                    backend.clone(),
                    self.direction,
                    self.probe_path,
                    self.balance.fail_timeout,
                ));
            }
        }
    }

    /// How many backends are up, and how many there are.
    pub fn up(&self) -> (usize, usize) {
        let up = self
            .set
            .iter()
            .filter(|b| b.down_since.load(Ordering::Relaxed) == 0)
            .count();
        (up, self.set.len())
    }

    /// Appends the per-backend series (bounded: backends come from flags only).
    pub fn render(&self, out: &mut String) {
        let d = self.direction;
        for b in &self.set {
            let labels = format!(
                "direction=\"{d}\",backend=\"{}\"",
                escape_label_value(&b.name)
            );
            let up = u8::from(b.down_since.load(Ordering::Relaxed) == 0);
            let _ = writeln!(out, "tenantgate_backend_up{{{labels}}} {up}");
            let _ = writeln!(
                out,
                "tenantgate_backend_requests_total{{{labels}}} {}",
                b.requests.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "tenantgate_backend_errors_total{{{labels}}} {}",
                b.errors.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "tenantgate_backend_requests_inflight{{{labels}}} {}",
                b.in_flight.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "tenantgate_backend_retries_total{{direction=\"{d}\"}} {}",
            self.retries.load(Ordering::Relaxed)
        );
    }
}

/// What a failed request whose body cannot go again is told: a status senders retry.
fn unavailable(error: GatewayError) -> GatewayError {
    match error.kind {
        ErrorKind::GatewayTimeout | ErrorKind::BadGateway => error,
        _ => GatewayError::new(ErrorKind::BadGateway, error.message),
    }
}

/// Probes a down backend every `every` until it answers, then puts it back.
async fn probe(
    backend: Arc<Backend>,
    direction: &'static str,
    path: &'static str,
    every: Duration,
) {
    let request = Prepared::probe(path);
    let limit = every.max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        let mut body = RequestBody::Empty;
        let answered = backend
            .upstream
            .send(&request, &mut body, &mut Tap::default(), limit)
            .await;
        match answered {
            Ok((response, _)) if response.status().as_u16() < 500 => {
                // Read the (small) answer so the connection goes back to the pool.
                let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                backend.down_since.store(0, Ordering::Relaxed);
                backend.probing.store(false, Ordering::Release);
                tracing::info!(
                    "{direction} backend {} is up again: {path} answered",
                    backend.name
                );
                return;
            }
            Ok((response, _)) => tracing::debug!(
                "{direction} backend {} still down: {path} answered {}",
                backend.name,
                response.status()
            ),
            Err(e) => tracing::debug!(
                "{direction} backend {} still down: {}",
                backend.name,
                e.error.message
            ),
        }
    }
}

#[cfg(test)]
mod tests;
