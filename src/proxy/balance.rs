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
//! - **Discovery** (`-discoverBackendIPs`): every interval each URL's host is resolved again ([`dns`]
//!   for SRV records and `-dns.server`, the system's resolver otherwise) and each address becomes a
//!   backend. The set is swapped whole: a request keeps the set it started with, so a backend whose
//!   address went away finishes its requests and gets no new ones; backends still present keep their
//!   state and connections. A failed or empty lookup keeps the last good set.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use http::Response;

use super::{BackendBody, ClientIp, Failure, OwnHeaders, Prepared, RequestBody, Tap, Upstream};
use crate::dns;
use crate::error::{ErrorKind, GatewayError};
use crate::flags::values::backend_url_path;
use crate::flags::{Balance, Policy, UpstreamTls};
use crate::metrics::{escape_label_value, UpstreamError};

/// The most backends a direction may have: a request's tried set is one 64-bit word.
pub const MAX_BACKENDS: usize = 64;

/// The backends of one direction.
pub struct Backends {
    /// `read` or `write`: the `direction` label and log wording.
    direction: &'static str,
    /// The backends now; swapped whole by discovery.
    set: ArcSwap<Vec<Arc<Backend>>>,
    /// The URLs as given (what discovery resolves), and what new backends are built with.
    given: Vec<String>,
    /// The path every URL of the direction has (flags check), without a trailing slash.
    base_path: String,
    tls: UpstreamTls,
    idle_timeout: Duration,
    balance: Balance,
    /// The backends given, when there is no discovery (then `set` never changes).
    fixed: Vec<Arc<Backend>>,
    /// Where `least_loaded` starts looking, advanced by every choice: ties go round-robin.
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
    /// Discovery no longer lists it: its probe stops.
    removed: AtomicBool,
    requests: AtomicU64,
    errors: AtomicU64,
}

impl Backend {
    /// A backend named by its URL's `host:port`.
    fn new(upstream: Upstream) -> Arc<Backend> {
        let name = upstream.host().to_str().unwrap_or("?").to_string();
        Backend::named(upstream, name)
    }

    /// A backend with another name: the address a discovered one is dialled at.
    fn named(upstream: Upstream, name: String) -> Arc<Backend> {
        Arc::new(Backend {
            name,
            upstream,
            in_flight: AtomicU32::new(0),
            down_since: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }
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
    /// The backends at `urls` (in the order given), of `direction`, probed at `probe_path`.
    pub fn new(
        direction: &'static str,
        urls: &[String],
        tls: &UpstreamTls,
        timeouts: (Duration, Duration),
        balance: Balance,
        probe_path: &'static str,
    ) -> Result<Backends, String> {
        let (timeout, idle_timeout) = timeouts;
        // An `srv+` name cannot be dialled: its backends exist only once discovery found them.
        let dialable = |url: &&String| balance.discovery.is_none() || !is_srv(url);
        let set = urls
            .iter()
            .filter(dialable)
            .map(|url| {
                Upstream::new(url, tls, timeout, idle_timeout)
                    .map(Backend::new)
                    .map_err(|e| format!("-{direction}.url: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Backends {
            direction,
            fixed: set.clone(),
            next: AtomicUsize::new(0),
            set: ArcSwap::from_pointee(set),
            base_path: urls
                .first()
                .map_or("", |url| backend_url_path(url))
                .to_string(),
            given: urls.to_vec(),
            tls: tls.clone(),
            idle_timeout,
            balance,
            probe_path,
            timeout,
            retries: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// The path every backend of this direction serves the API under (the same for all: flags check).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// Whether a request could go to another backend after a failure.
    pub fn has_spares(&self) -> bool {
        self.balance.discovery.is_some() || self.fixed.len() > 1
    }

    /// The backends now, in order.
    pub fn names(&self) -> Vec<String> {
        self.set.load().iter().map(|b| b.name.clone()).collect()
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
        // The set this request started with: a backend discovery removes meanwhile still answers it.
        // Without discovery the set never changes and is read without touching a shared count.
        let discovered;
        let set: &[Arc<Backend>] = match &self.balance.discovery {
            None => &self.fixed,
            Some(_) => {
                discovered = self.set.load_full();
                &discovered
            }
        };
        let Some(first) = self.choose(set, 0) else {
            return Err((
                Some(UpstreamError::Connect),
                GatewayError::new(ErrorKind::BadGateway, "no backend is known yet"),
            ));
        };
        // The head is encoded once, for the first backend; a retry only puts another `Host` in.
        let request = Prepared::new(
            parts,
            &target,
            &body,
            client,
            own,
            set[first].upstream.host(),
        )
        .map_err(|e| (None, e))?;
        if let RequestBody::Full(bytes) = &body {
            tap.observe(bytes);
        }
        // One clock read for the whole request: the first attempt has all of the time.
        let started = Instant::now();
        let mut tried = 0u64;
        let mut last: Option<Forwarded> = None;
        let mut next = Some(first);
        while let Some(i) = next.take().or_else(|| self.choose(set, tried)) {
            tried |= 1 << i;
            let backend = &set[i];
            let left = match last {
                None => self.timeout,
                Some(_) => self.timeout.saturating_sub(started.elapsed()),
            };
            if left.is_zero() {
                break;
            }
            if last.is_some() {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            backend.requests.fetch_add(1, Ordering::Relaxed);
            let sent = {
                backend.in_flight.fetch_add(1, Ordering::Relaxed);
                let _in_flight = InFlight(&backend.in_flight);
                let attempt = (started, left);
                backend
                    .upstream
                    .send(&request, &mut body, tap, attempt)
                    .await
            };
            let can_go_again = RequestBody::repeatable;
            match sent {
                Ok((response, took)) => {
                    let status = response.status().as_u16();
                    if !self.balance.retry_statuses.contains(&status) {
                        return Ok((response, took));
                    }
                    self.failed(set, backend, &format!("it answered {status}"));
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
                    // A retry left with a sliver of the time says little of its backend when
                    // that runs out: counted as an error, but the backend stays up.
                    let fair = kind != UpstreamError::Timeout || left >= self.timeout / 2;
                    if fair {
                        self.failed(set, backend, &error.message);
                    } else {
                        backend.errors.fetch_add(1, Ordering::Relaxed);
                    }
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

    /// The backend for the next attempt of a request that has tried `tried` (bit i: backend i). A
    /// retry goes only to a backend that is up: one already known down would make the client wait for
    /// a second failure (a blackholed backend: the whole connect timeout) for little chance.
    fn choose(&self, set: &[Arc<Backend>], tried: u64) -> Option<usize> {
        let n = set.len();
        let untried = |i: usize| tried & (1 << i) == 0;
        if n == 1 {
            return untried(0).then_some(0);
        }
        let start = match self.balance.policy {
            // One counter per pool, so its requests alternate exactly (a counter per thread, tried,
            // spread a pool's few writes unevenly among the others' reads).
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
            let backend = &set[i];
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
        let fallback = oldest_down.filter(|_| tried == 0);
        best.map(|(i, _)| i).or(fallback.map(|(i, _)| i))
    }

    /// Marks `backend` down (if it was up), says so once, and starts its probe.
    fn failed(&self, set: &[Arc<Backend>], backend: &Arc<Backend>, why: &str) {
        backend.errors.fetch_add(1, Ordering::Relaxed);
        if set.len() == 1 {
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
        let set = self.set.load();
        let up = set
            .iter()
            .filter(|b| b.down_since.load(Ordering::Relaxed) == 0)
            .count();
        (up, set.len())
    }

    /// Appends the per-backend series (bounded: backends come from flags and DNS, at most
    /// [`MAX_BACKENDS`] per direction, never from clients).
    pub fn render(&self, out: &mut String) {
        let d = self.direction;
        for b in self.set.load().iter() {
            let labels = format!(
                "direction=\"{d}\",backend=\"{}\"",
                escape_label_value(&b.name)
            );
            let up = u64::from(b.down_since.load(Ordering::Relaxed) == 0);
            for (name, value) in [
                ("up", up),
                ("requests_total", b.requests.load(Ordering::Relaxed)),
                ("errors_total", b.errors.load(Ordering::Relaxed)),
                (
                    "requests_inflight",
                    u64::from(b.in_flight.load(Ordering::Relaxed)),
                ),
            ] {
                let _ = writeln!(out, "tenantgate_backend_{name}{{{labels}}} {value}");
            }
        }
        let _ = writeln!(
            out,
            "tenantgate_backend_retries_total{{direction=\"{d}\"}} {}",
            self.retries.load(Ordering::Relaxed)
        );
    }
}

/// One address discovery found: what is dialled, and the name the backend is asked for (`Host`, and
/// the name its TLS certificate must carry).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    /// `http` or `https`, from the URL it was found for.
    scheme: &'static str,
    addr: std::net::SocketAddr,
    host: String,
}

impl Backends {
    /// Resolves the backends' names again and swaps in the new set when it changed. Runs every
    /// `-discoverBackendIPsInterval` ([`Backends::keep_discovering`]); once before serving.
    pub async fn discover(&self) {
        let Some(discovery) = &self.balance.discovery else {
            return;
        };
        let found = match self.resolve(discovery).await {
            Ok(found) if found.is_empty() => {
                tracing::warn!(
                    "{} backends: discovery found no address; keeping the last good set",
                    self.direction
                );
                return;
            }
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(
                    "{} backends: discovery failed ({e}); keeping the last good set",
                    self.direction
                );
                return;
            }
        };
        let old = self.set.load_full();
        let names: Vec<String> = found.iter().map(|f| f.addr.to_string()).collect();
        if old.iter().map(|b| &b.name).eq(names.iter()) {
            return;
        }
        let mut set = Vec::with_capacity(found.len());
        for (f, name) in found.iter().zip(&names) {
            if let Some(kept) = old.iter().find(|b| b.name == *name) {
                set.push(kept.clone());
                continue;
            }
            match self.discovered(f) {
                Ok(upstream) => set.push(Backend::named(upstream, name.clone())),
                Err(e) => tracing::warn!("{} backend {name}: {e}", self.direction),
            }
        }
        if set.is_empty() {
            return;
        }
        for gone in old.iter().filter(|b| !names.contains(&b.name)) {
            gone.removed.store(true, Ordering::Relaxed);
        }
        let added: Vec<&str> = names
            .iter()
            .filter(|n| !old.iter().any(|b| b.name == **n))
            .map(String::as_str)
            .collect();
        let removed: Vec<&str> = old
            .iter()
            .filter(|b| !names.contains(&b.name))
            .map(|b| b.name.as_str())
            .collect();
        tracing::info!(
            "{} backends now {} (added {}; removed {}: they finish their requests and get no new ones)",
            self.direction,
            names.join(", "),
            if added.is_empty() { "none".to_string() } else { added.join(", ") },
            if removed.is_empty() { "none".to_string() } else { removed.join(", ") },
        );
        self.set.store(Arc::new(set));
    }

    /// Discovers again every `-discoverBackendIPsInterval`, for the gateway's life.
    pub async fn keep_discovering(self: Arc<Self>) {
        let Some(interval) = self.balance.discovery.as_ref().map(|d| d.interval) else {
            return;
        };
        loop {
            tokio::time::sleep(interval).await;
            self.discover().await;
        }
    }

    /// Every address of every URL, in the order given, sorted within a URL, without repeats, at most
    /// [`MAX_BACKENDS`].
    async fn resolve(&self, discovery: &crate::flags::Discovery) -> Result<Vec<Found>, String> {
        let timeout = discovery
            .interval
            .clamp(Duration::from_millis(500), Duration::from_secs(5));
        // `-dns.server` (a name is resolved once a round); `None`: the system's resolver.
        let server = match &discovery.server {
            Some(server) => Some(dns::server(Some(server)).await?),
            None => None,
        };
        let mut found: Vec<Found> = Vec::new();
        for url in &self.given {
            let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
            let authority = uri.authority().ok_or("missing host")?;
            let scheme = if uri.scheme_str() == Some("https") {
                "https"
            } else {
                "http"
            };
            let default_port = if scheme == "https" { 443 } else { 80 };
            let port = authority.port_u16().unwrap_or(default_port);
            let host = authority.host();
            let mut here = Vec::new();
            if let Some(service) = host.strip_prefix("srv+") {
                // Without -dns.server, SRV questions go to resolv.conf's server.
                let srv_server = match server {
                    Some(server) => server,
                    None => dns::server(None).await?,
                };
                let records =
                    dns::lookup(srv_server, service, dns::RecordType::Srv, timeout).await?;
                for (target, port) in srv_targets(records) {
                    for ip in addresses(server, &target, timeout).await? {
                        here.push(Found {
                            scheme,
                            addr: std::net::SocketAddr::new(ip, port),
                            host: format!("{target}:{port}"),
                        });
                    }
                }
            } else {
                for ip in addresses(server, host, timeout).await? {
                    here.push(Found {
                        scheme,
                        addr: std::net::SocketAddr::new(ip, port),
                        host: authority.as_str().to_string(),
                    });
                }
            }
            here.sort_by_key(|f| f.addr);
            for f in here {
                if !found.iter().any(|seen| seen.addr == f.addr) {
                    found.push(f);
                }
            }
        }
        if found.len() > MAX_BACKENDS {
            tracing::warn!(
                "{} backends: discovery found {} addresses; using the first {MAX_BACKENDS}",
                self.direction,
                found.len()
            );
            found.truncate(MAX_BACKENDS);
        }
        Ok(found)
    }

    /// A backend at a discovered address, asked for (and verified as) the name it was found under.
    fn discovered(&self, found: &Found) -> Result<Upstream, String> {
        let url = format!("{}://{}{}", found.scheme, found.addr, self.base_path());
        let mut tls = self.tls.clone();
        let name = found
            .host
            .rsplit_once(':')
            .map_or(found.host.as_str(), |(h, _)| h);
        if tls.server_name.is_none() {
            tls.server_name = Some(
                name.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            );
        }
        let mut upstream = Upstream::new(&url, &tls, self.timeout, self.idle_timeout)?;
        upstream.host = HeaderValue::from_str(&found.host).map_err(|e| e.to_string())?;
        Ok(upstream)
    }
}

/// The targets and ports of SRV records worth dialling: a target of "." (or none) says the service
/// is decidedly not there (RFC 2782), and port 0 is no port.
fn srv_targets(records: Vec<dns::Record>) -> impl Iterator<Item = (String, u16)> {
    records.into_iter().filter_map(|record| match record {
        dns::Record::Srv { target, port } if port != 0 && !target.is_empty() && target != "." => {
            Some((target, port))
        }
        _ => None,
    })
}

/// Whether `url`'s host asks for SRV records (`srv+name`).
fn is_srv(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(_, rest)| rest.starts_with("srv+"))
}

/// The addresses of `name`: an IP literal as is; from `-dns.server` when set (A and AAAA); else the
/// system's resolver (`/etc/hosts`, then DNS).
async fn addresses(
    server: Option<std::net::SocketAddr>,
    name: &str,
    timeout: Duration,
) -> Result<Vec<std::net::IpAddr>, String> {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse() {
        return Ok(vec![ip]);
    }
    let mut ips = Vec::new();
    match server {
        Some(server) => {
            for kind in [dns::RecordType::A, dns::RecordType::Aaaa] {
                match dns::lookup(server, name, kind, timeout).await {
                    Ok(records) => ips.extend(records.into_iter().filter_map(|r| match r {
                        dns::Record::Addr(ip) => Some(ip),
                        dns::Record::Srv { .. } => None,
                    })),
                    // A name with only IPv4 addresses may answer AAAA with an error.
                    Err(e) if kind == dns::RecordType::A => return Err(e),
                    Err(_) => {}
                }
            }
        }
        None => {
            let resolved = tokio::time::timeout(timeout, tokio::net::lookup_host((bare, 0)))
                .await
                .map_err(|_| format!("resolving {name} took longer than {timeout:?}"))?
                .map_err(|e| format!("cannot resolve {name}: {e}"))?;
            ips.extend(resolved.map(|a| a.ip()));
        }
    }
    Ok(ips)
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
    let request = Prepared::probe(path, backend.upstream.host());
    let limit = every.max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        if backend.removed.load(Ordering::Relaxed) {
            return;
        }
        let mut body = RequestBody::Empty;
        let attempt = (Instant::now(), limit);
        let answered = backend
            .upstream
            .send(&request, &mut body, &mut Tap::default(), attempt)
            .await;
        match answered {
            Ok((response, _)) if response.status().as_u16() < 500 => {
                // The answer's body is not read: a backend that stalls it must not hold the probe
                // (dropped unread, the connection is closed rather than pooled).
                drop(response);
                // `probing` first: a failure right after `down_since` clears must start a new probe.
                backend.probing.store(false, Ordering::Release);
                backend.down_since.store(0, Ordering::Relaxed);
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
