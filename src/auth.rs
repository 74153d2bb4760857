//! From a request's headers to a verified [`Grant`]: find the token, verify it (or find it in the
//! verified-token cache), and pre-encode what it grants.
//!
//! The [`Authenticator`] owns the key set in force (an immutable [`KeySet`] swapped atomically by whoever
//! loads keys: start-up for PEM files, [`fetch`] for identity providers) and the cache. A cache hit costs
//! one hash lookup and two comparisons, no crypto: entries carry the key-set generation they were verified
//! under and their token's `exp`, so a key change or an expiry makes them worthless at once.
//!
//! When keys come from identity providers, a token naming a `kid` no key carries may mean the provider
//! rotated its keys. [`Authenticator::authenticate_or_refresh`] then asks the refresher for a refresh
//! ([`RefreshSignal`]) and waits, bounded, for the next refresh round before deciding, so the first
//! tokens signed with a new key are accepted rather than refused with a 401 that some senders (Prometheus)
//! answer by dropping samples. The refresher, not the request, decides whether a fetch is allowed.
//!
//! A bearer token that is not a JWT is opaque: with `-auth.introspection*` it is introspected
//! ([`introspect`]) and its answer cached by a hash of the token (never the token), one call serving
//! every concurrent request with that token; with `-auth.idTokenHeader` and no introspection, the ID
//! token in that header (a JWT, verified like any other) gives the grant instead. [`AuthPath`] says
//! which of the three accepted a request.

pub mod claims;
pub mod fetch;
pub mod grants;
pub mod grants_file;
pub mod introspect;
pub mod jwt;
pub mod keys;

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::HeaderMap;
use tokio::sync::Notify;

use crate::error::{AuthReason, ErrorKind, GatewayError};
use crate::ingest::relabel::{Enforced, RelabelError};
use crate::promql::{EnforceError, Enforcement};
use crate::rewrite::GrantArgs;
use claims::Access;
use grants::Grants;
use jwt::{VerifyError, VerifyOptions};
use keys::KeySet;

/// How a request's token was accepted, for metrics and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPath {
    /// A JWT in the bearer header, verified with a key.
    Jwt = 0,
    /// An opaque bearer token the identity provider's introspection said is active.
    Introspection = 1,
    /// An opaque bearer token beside an ID token (`-auth.idTokenHeader`) verified with a key.
    IdToken = 2,
}

impl AuthPath {
    /// Every path, in metric order.
    pub const ALL: [AuthPath; 3] = [AuthPath::Jwt, AuthPath::Introspection, AuthPath::IdToken];

    /// The metric label and audit-log value.
    pub fn label(self) -> &'static str {
        match self {
            AuthPath::Jwt => "jwt",
            AuthPath::Introspection => "introspection",
            AuthPath::IdToken => "id_token",
        }
    }
}

/// A verified token: what it grants, pre-encoded for the upstream request.
#[derive(Debug)]
pub struct Grant {
    /// The claim.
    pub access: Access,
    /// How the token was accepted.
    pub via: AuthPath,
    /// Upstream arguments and tenant path, encoded once.
    pub args: GrantArgs,
    /// `sub` and `client_id` of the token, for the audit log.
    pub identity: Identity,
    /// Expiry (seconds since the epoch).
    exp: f64,
    /// Not-before, if any.
    nbf: Option<f64>,
    /// Key-set generation this was verified under.
    generation: u64,
    /// The PromQL form of the restriction, built the first time a Prometheus-family backend needs it.
    promql: OnceLock<Result<Enforcement, EnforceError>>,
    /// The labels in remote-write form, built the first time a Prometheus-family receiver needs them.
    remote_write: OnceLock<Result<Enforced, RelabelError>>,
}

/// Who a token names, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// `sub`.
    pub subject: Option<Box<str>>,
    /// `client_id` or `azp`.
    pub client_id: Option<Box<str>>,
}

impl Grant {
    /// A grant for `access` that never expires: used when `-enable.auth` is off.
    pub fn open(access: Access) -> Grant {
        Grant {
            args: GrantArgs::new(&access),
            identity: Identity::default(),
            access,
            via: AuthPath::Jwt,
            exp: f64::INFINITY,
            nbf: None,
            generation: 0,
            promql: OnceLock::new(),
            remote_write: OnceLock::new(),
        }
    }

    /// What every PromQL selector gets under this grant (Prometheus-family read backends); built once
    /// per verified token. An error is a grant PromQL cannot express (several filters, a bad filter).
    pub fn promql(&self) -> Result<&Enforcement, &EnforceError> {
        self.promql
            .get_or_init(|| Enforcement::new(&self.access.extra_labels, &self.access.extra_filters))
            .as_ref()
    }

    /// The labels every remote-written series gets (Prometheus-family receivers); built once per
    /// verified token.
    pub fn remote_write_labels(&self) -> Result<&Enforced, &RelabelError> {
        self.remote_write
            .get_or_init(|| Enforced::new(&self.access.extra_labels))
            .as_ref()
    }
}

/// Where the token is and how it is checked.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Header holding the token (lower-case).
    pub header: http::HeaderName,
    /// Accept a token without the `Bearer ` prefix.
    pub allow_without_prefix: bool,
    /// Checks beyond the signature.
    pub verify: VerifyOptions,
    /// Verified-token cache capacity; 0 disables the cache.
    pub cache_size: usize,
    /// Log the reason of every refused token (never the token).
    pub log_invalid: bool,
    /// Keys (also) come from identity providers, refreshed by [`fetch`]: a token with an unknown `kid`
    /// waits for a refresh round before it is refused.
    pub remote_keys: bool,
    /// `-auth.grantsFile`: grants for tokens without `vm_access`, chosen by their claims; swapped on
    /// reload.
    pub grants: Option<Arc<ArcSwap<Grants>>>,
    /// `-auth.grantsOverride`: the grants file decides even for tokens that carry `vm_access`.
    pub grants_override: bool,
    /// `-auth.introspection*`: opaque tokens are introspected, and answers used for the TTL at most.
    pub introspection: Option<(Arc<introspect::Introspector>, Duration)>,
    /// `-auth.idTokenHeader`: the ID token beside an opaque access token.
    pub id_token_header: Option<http::HeaderName>,
}

/// A cached introspection answer (keyed by the token's SHA-256).
#[derive(Clone)]
enum Opaque {
    /// Active: its grant, until `until` (seconds since the epoch), under key-set `generation`.
    Active { grant: Arc<Grant>, until: f64 },
    /// Refused (inactive, or its claims failed a check) until `until`.
    Refused { error: VerifyError, until: f64 },
    /// The provider could not answer; for a second, so requests that waited for that call do not each
    /// wait for one more (a hanging provider would otherwise hold them in turn).
    Unavailable { until: f64 },
}

/// How long a request whose token names an unknown `kid` waits for the refresh round it asked for. A
/// refresh against a healthy identity provider takes milliseconds; a dead one must not hold requests long.
pub const UNKNOWN_KID_WAIT: Duration = Duration::from_secs(3);

/// The handshake between requests that met an unknown `kid` and the key refresher. Lock-free: a request
/// leaves a `Notify` permit and reads a counter; rounds are numbered so a request only wakes for a round
/// that began after its token failed.
#[derive(Default)]
pub struct RefreshSignal {
    /// Woken when a token names an unknown `kid`: the refresher fetches the sources its rate limit allows.
    pub unknown_kid: Notify,
    /// Rounds begun by the refresher.
    started: AtomicU64,
    /// The last round finished.
    finished: AtomicU64,
    /// Woken (all waiters) when a round finishes.
    round_finished: Notify,
    /// Every remote source has answered at least once. Until then an unknown `kid` may belong to a source
    /// that has not answered, so the token gets 503 (retry) instead of 401.
    complete: AtomicBool,
}

impl RefreshSignal {
    /// Called by the refresher before it fetches anything; returns the round's number.
    pub fn begin_round(&self) -> u64 {
        self.started.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Called by the refresher when `round` is finished and its keys (if any changed) are in force.
    pub fn end_round(&self, round: u64) {
        self.finished.fetch_max(round, Ordering::AcqRel);
        self.round_finished.notify_waiters();
    }

    /// Called by the refresher once every remote source has answered at least once.
    pub fn set_complete(&self) {
        self.complete.store(true, Ordering::Release);
    }

    /// Whether every key source has answered at least once.
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// Asks for a refresh and waits until a round that began after this call finished, or `limit`.
    async fn request_and_wait(&self, limit: Duration) {
        let want = self.started.load(Ordering::Acquire) + 1;
        self.unknown_kid.notify_one();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before the counter is read, so a round ending in between still wakes us.
            let mut finished = pin!(self.round_finished.notified());
            finished.as_mut().enable();
            if self.finished.load(Ordering::Acquire) >= want {
                return;
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return;
            }
        }
    }
}

/// Verifies tokens against the keys in force, with a cache of verified tokens.
pub struct Authenticator {
    settings: AuthSettings,
    keys: ArcSwap<KeySet>,
    /// False while only remote key sources are configured and none has answered yet: requests then get
    /// 503 (retry) rather than 401 (drop), so senders keep their samples.
    ready: AtomicBool,
    cache: Option<quick_cache::sync::Cache<Box<str>, Arc<Grant>>>,
    /// Introspection answers by SHA-256 of the token; `Some` with `-auth.introspection*`.
    opaque: Option<quick_cache::sync::Cache<[u8; 32], Opaque>>,
    /// Requests accepted, by [`AuthPath`].
    pub accepted: [AtomicU64; 3],
    /// Opaque tokens answered from the cache.
    pub opaque_hits: AtomicU64,
    /// Unknown-`kid` refresh requests to the key fetcher, and its answers.
    pub refresh: RefreshSignal,
    generation: AtomicU64,
    /// Cache hits and misses, exported by metrics.
    pub cache_hits: AtomicU64,
    /// See `cache_hits`.
    pub cache_misses: AtomicU64,
}

impl Authenticator {
    /// An authenticator with `keys`; `ready` says whether requests can be served before any refresh.
    pub fn new(settings: AuthSettings, keys: KeySet, ready: bool) -> Authenticator {
        let cache =
            (settings.cache_size > 0).then(|| quick_cache::sync::Cache::new(settings.cache_size));
        // Bounded like the token cache, but never off: it is also what makes concurrent requests with
        // one new token share one introspection call.
        let opaque = settings
            .introspection
            .as_ref()
            .map(|_| quick_cache::sync::Cache::new(settings.cache_size.max(1024)));
        let generation = keys.generation;
        let refresh = RefreshSignal::default();
        if !settings.remote_keys {
            refresh.set_complete();
        }
        Authenticator {
            settings,
            keys: ArcSwap::from_pointee(keys),
            ready: AtomicBool::new(ready),
            cache,
            opaque,
            accepted: Default::default(),
            opaque_hits: AtomicU64::new(0),
            refresh,
            generation: AtomicU64::new(generation),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
        }
    }

    /// Appends the series of how tokens were accepted and of introspection.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        for path in AuthPath::ALL {
            let _ = writeln!(
                out,
                "tenantgate_authenticated_requests_total{{via=\"{}\"}} {}",
                path.label(),
                self.accepted[path as usize].load(Ordering::Relaxed)
            );
        }
        if let Some((introspector, _)) = &self.settings.introspection {
            introspector.render(out);
            let _ = writeln!(
                out,
                "tenantgate_introspection_cache_hits_total {}",
                self.opaque_hits.load(Ordering::Relaxed)
            );
        }
    }

    /// The key set in force.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Whether tokens can be verified (some key source has answered, or only local keys exist).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether signatures are checked at all (false only without any key source).
    pub fn checks_signatures(&self) -> bool {
        self.settings.verify.check_signature
    }

    /// Installs a new key list; bumps the generation (so cached grants are re-verified) and drops the
    /// cache to free its memory.
    pub fn replace_keys(&self, keys: Vec<keys::VerifyKey>) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.keys.store(Arc::new(KeySet::new(keys, generation)));
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        self.ready.store(true, Ordering::Release);
    }

    /// Verifies the request's token and returns what it grants. A token naming an unknown `kid` is refused
    /// at once (a key refresh is requested in the background); see [`Self::authenticate_or_refresh`].
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Grant>, GatewayError> {
        let token = self.token(headers)?;
        self.check_ready()?;
        self.verify(token).map_err(|e| {
            if e.unknown_kid.is_some() {
                self.refresh.unknown_kid.notify_one();
            }
            self.refusal(e)
        })
    }

    /// As [`Self::authenticate`], but a token naming an unknown `kid` waits (at most [`UNKNOWN_KID_WAIT`])
    /// for a key refresh when keys come from identity providers, and is checked again: the first tokens
    /// signed with a freshly rotated key are accepted.
    pub async fn authenticate_or_refresh(
        &self,
        headers: &HeaderMap,
    ) -> Result<Arc<Grant>, GatewayError> {
        let token = self.token(headers)?;
        // Telling JWTs from opaque tokens matters only when opaque tokens are accepted.
        let opaque_accepted =
            self.settings.introspection.is_some() || self.settings.id_token_header.is_some();
        if opaque_accepted && !jwt::looks_like_jwt(token) {
            if let Some((introspector, ttl)) = &self.settings.introspection {
                return self.introspected(introspector, *ttl, token).await;
            }
            if let Some(header) = &self.settings.id_token_header {
                return self.by_id_token(headers, header);
            }
        } else if self.settings.introspection.is_some() && !self.checks_signatures() {
            // Introspection configured without a key source: a JWT could be forged at will.
            return Err(GatewayError::unauthorized(
                AuthReason::BadSignature,
                "JWTs need a key source (-auth.oidcDiscoveryEndpoints, -auth.jwksEndpoints or -auth.publicKeyFiles) on a gateway that introspects opaque tokens",
            ));
        }
        let grant = self.jwt(token).await?;
        self.accepted[AuthPath::Jwt as usize].fetch_add(1, Ordering::Relaxed);
        Ok(grant)
    }

    /// A JWT bearer token, waiting for a key refresh when it names an unknown `kid`.
    async fn jwt(&self, token: &str) -> Result<Arc<Grant>, GatewayError> {
        self.check_ready()?;
        match self.verify(token) {
            Err(e) if e.unknown_kid.is_some() && self.settings.remote_keys => {}
            result => return result.map_err(|e| self.refusal(e)),
        }
        self.refresh.request_and_wait(UNKNOWN_KID_WAIT).await;
        match self.verify(token) {
            Err(e) if e.unknown_kid.is_some() && !self.refresh.is_complete() => {
                Err(GatewayError::new(
                    ErrorKind::Unavailable,
                    "token names an unknown key and some identity provider has not answered yet; retry later",
                ))
            }
            result => result.map_err(|e| self.refusal(e)),
        }
    }

    /// An opaque token: the cached answer, or one introspection shared by every request with it.
    async fn introspected(
        &self,
        introspector: &introspect::Introspector,
        ttl: Duration,
        token: &str,
    ) -> Result<Arc<Grant>, GatewayError> {
        if token.len() > jwt::MAX_TOKEN_LEN {
            return Err(GatewayError::unauthorized(
                AuthReason::Malformed,
                "token is too large",
            ));
        }
        let Some(cache) = &self.opaque else {
            return Err(GatewayError::new(
                ErrorKind::Internal,
                "introspection cache missing",
            ));
        };
        let key: [u8; 32] = {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            let mut key = [0u8; 32];
            key.copy_from_slice(digest.as_ref());
            key
        };
        let now = now_seconds();
        let generation = self.keys.load().generation;
        let judged = |entry: &Opaque| match entry {
            Opaque::Active { grant, until } if now < *until && grant.generation == generation => {
                Some(Ok(grant.clone()))
            }
            Opaque::Refused { error, until } if now < *until => Some(Err(Some(error.clone()))),
            Opaque::Unavailable { until, .. } if now < *until => Some(Err(None)),
            _ => None,
        };
        // A stale entry is dropped first, so the next step waits for (or makes) a fresh call.
        if let Some(entry) = cache.get(&key) {
            if let Some(result) = judged(&entry) {
                self.opaque_hits.fetch_add(1, Ordering::Relaxed);
                return self.opaque_result(result);
            }
            cache.remove(&key);
        }
        let guard = match cache.get_value_or_guard_async(&key).await {
            Ok(entry) => match judged(&entry) {
                Some(result) => {
                    self.opaque_hits.fetch_add(1, Ordering::Relaxed);
                    return self.opaque_result(result);
                }
                None => None,
            },
            Err(guard) => Some(guard),
        };
        let (entry, result) = match introspector.introspect(token, now, ttl).await {
            introspect::Introspected::Active(payload) => {
                match jwt::check_claims(payload, &self.settings.verify, now).and_then(|verified| {
                    self.grant_of(verified, generation, AuthPath::Introspection)
                }) {
                    Ok(grant) => {
                        let until = grant.exp.min(now + ttl.as_secs_f64());
                        let entry = Opaque::Active {
                            grant: grant.clone(),
                            until,
                        };
                        (entry, Ok(grant))
                    }
                    Err(error) => {
                        let until = now + refused_ttl(ttl);
                        let entry = Opaque::Refused {
                            error: error.clone(),
                            until,
                        };
                        (entry, Err(Some(error)))
                    }
                }
            }
            introspect::Introspected::Inactive => {
                let error = VerifyError {
                    reason: AuthReason::Inactive,
                    message: "the identity provider says this token is not active (expired, revoked or unknown)".into(),
                    unknown_kid: None,
                };
                let until = now + refused_ttl(ttl);
                (
                    Opaque::Refused {
                        error: error.clone(),
                        until,
                    },
                    Err(Some(error)),
                )
            }
            // Why is logged by the introspector (once in 10 s).
            introspect::Introspected::Unavailable(_) => {
                (Opaque::Unavailable { until: now + 1.0 }, Err(None))
            }
        };
        match guard {
            Some(guard) => {
                let _ = guard.insert(entry);
            }
            None => cache.insert(key, entry),
        }
        self.opaque_result(result)
    }

    /// A grant, a refusal (`Some`), or the provider's silence (`None`: 503, the sender retries).
    fn opaque_result(
        &self,
        result: Result<Arc<Grant>, Option<VerifyError>>,
    ) -> Result<Arc<Grant>, GatewayError> {
        let grant = result.map_err(|e| match e {
            Some(e) => self.refusal(e),
            None => GatewayError::new(
                ErrorKind::Unavailable,
                "cannot check this opaque token now: the identity provider's introspection does not answer; retry later",
            ),
        })?;
        self.accepted[AuthPath::Introspection as usize].fetch_add(1, Ordering::Relaxed);
        Ok(grant)
    }

    /// The grant of the ID token in `header` (`-auth.idTokenHeader`), for an opaque bearer token
    /// without introspection: a JWT verified like any other, cached apart from bearer tokens.
    fn by_id_token(
        &self,
        headers: &HeaderMap,
        header: &http::HeaderName,
    ) -> Result<Arc<Grant>, GatewayError> {
        let mut values = headers.get_all(header).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(GatewayError::unauthorized(
                AuthReason::Missing,
                format!("the bearer token is not a JWT and there is no single {header} header with an ID token"),
            ));
        };
        let id_token = value
            .to_str()
            .map(str::trim)
            .map(|v| match v.get(..7) {
                Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim_start(),
                _ => v,
            })
            .map_err(|_| {
                GatewayError::unauthorized(AuthReason::Malformed, "ID token is not visible ASCII")
            })?;
        self.check_ready()?;
        let grant = self
            .verify_as(id_token, AuthPath::IdToken)
            .map_err(|e| self.refusal(e))?;
        self.accepted[AuthPath::IdToken as usize].fetch_add(1, Ordering::Relaxed);
        Ok(grant)
    }

    fn check_ready(&self) -> Result<(), GatewayError> {
        if self.is_ready() {
            return Ok(());
        }
        Err(GatewayError::new(
            ErrorKind::Unavailable,
            "no token verification keys loaded yet (identity provider unreachable); retry later",
        ))
    }

    /// The cache, then the signature and claims, of a bearer JWT.
    fn verify(&self, token: &str) -> Result<Arc<Grant>, VerifyError> {
        self.verify_as(token, AuthPath::Jwt)
    }

    /// [`Self::verify`] for a JWT found by `via`; ID tokens are cached under their own keys, so a
    /// grant is only ever found again by the path that made it.
    fn verify_as(&self, token: &str, via: AuthPath) -> Result<Arc<Grant>, VerifyError> {
        let now = now_seconds();
        let keys = self.keys.load();
        let id_key;
        let key = match via {
            AuthPath::IdToken => {
                id_key = format!("id_token\0{token}");
                id_key.as_str()
            }
            _ => token,
        };
        if let Some(cache) = &self.cache {
            if let Some(grant) = cache.get(key) {
                if grant.generation == keys.generation && self.is_current(&grant, now) {
                    self.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(grant);
                }
                cache.remove(key);
            }
            self.cache_misses.fetch_add(1, Ordering::Relaxed);
        }
        let verified = jwt::verify(token, &keys, &self.settings.verify, now)?;
        let grant = self.grant_of(verified, keys.generation, via)?;
        if let Some(cache) = &self.cache {
            cache.insert(Box::from(key), grant.clone());
        }
        Ok(grant)
    }

    /// The grant of verified claims (a JWT's, or an introspection answer's).
    fn grant_of(
        &self,
        verified: jwt::Verified,
        generation: u64,
        via: AuthPath,
    ) -> Result<Arc<Grant>, VerifyError> {
        let access = self.access_of(&verified)?;
        Ok(Arc::new(Grant {
            args: GrantArgs::new(&access),
            identity: Identity {
                subject: verified.subject.map(Into::into),
                client_id: verified.client_id.map(Into::into),
            },
            access,
            via,
            exp: verified.exp,
            nbf: verified.nbf,
            generation,
            promql: OnceLock::new(),
            remote_write: OnceLock::new(),
        }))
    }

    /// What a verified token grants: its `vm_access`, or the grants file's answer for its claims (first,
    /// with `-auth.grantsOverride`). A token no grant matches is refused with the reason, never given a
    /// default.
    fn access_of(&self, verified: &jwt::Verified) -> Result<Access, VerifyError> {
        let grants = match (&self.settings.grants, &verified.access) {
            (None, Some(access)) => return Ok(access.clone()),
            (Some(_), Some(access)) if !self.settings.grants_override => return Ok(access.clone()),
            (Some(grants), _) => grants,
            (None, None) => {
                return Err(VerifyError {
                    reason: AuthReason::MissingClaim,
                    message: "token has no vm_access claim".into(),
                    unknown_kid: None,
                })
            }
        };
        let payload: serde_json::Value = verified
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_slice(p).ok())
            .unwrap_or(serde_json::Value::Null);
        grants.load().resolve(&payload).map_err(|why| VerifyError {
            reason: AuthReason::NoGrant,
            message: if verified.access.is_none() {
                format!("token has no vm_access claim and no grant of -auth.grantsFile matches it: {why}")
            } else {
                format!("no grant of -auth.grantsFile matches this token (-auth.grantsOverride): {why}")
            },
            unknown_kid: None,
        })
    }

    /// Puts new grants in force: cached grants were resolved from the old ones, so they go.
    pub fn replace_grants(&self, grants: Grants) {
        if let Some(slot) = &self.settings.grants {
            slot.store(Arc::new(grants));
            // Same keys under a new generation: every cached grant is worthless at once.
            let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            // rcu, not load then store: keys replaced meanwhile (a SIGHUP reloads both) must stay.
            self.keys
                .rcu(|keys| KeySet::new(keys.keys().to_vec(), generation));
            if let Some(cache) = &self.cache {
                cache.clear();
            }
            if let Some(cache) = &self.opaque {
                cache.clear();
            }
        }
    }

    fn is_current(&self, grant: &Grant, now: f64) -> bool {
        let skew = self.settings.verify.clock_skew;
        now < grant.exp + skew && grant.nbf.is_none_or(|nbf| now + skew >= nbf)
    }

    fn refusal(&self, e: VerifyError) -> GatewayError {
        if self.settings.log_invalid {
            tracing::info!(reason = e.reason.label(), "refused token: {}", e.message);
        }
        // A valid token the grants give nothing is forbidden, not unauthenticated: asking again with the
        // same identity cannot help.
        if e.reason == AuthReason::NoGrant {
            return GatewayError::new(ErrorKind::NoGrant, e.message);
        }
        GatewayError::unauthorized(e.reason, e.message)
    }

    /// The token from the configured header: exactly one header, `Bearer ` prefix (any case) unless
    /// prefix-less tokens are allowed, visible ASCII only.
    fn token<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str, GatewayError> {
        let mut values = headers.get_all(&self.settings.header).iter();
        let Some(value) = values.next() else {
            return Err(GatewayError::unauthorized(
                AuthReason::Missing,
                format!("missing token in the {} header", self.settings.header),
            ));
        };
        if values.next().is_some() {
            return Err(GatewayError::unauthorized(
                AuthReason::Malformed,
                format!("more than one {} header", self.settings.header),
            ));
        }
        let value = value.to_str().map_err(|_| {
            GatewayError::unauthorized(AuthReason::Malformed, "token header is not visible ASCII")
        })?;
        let value = value.trim();
        let token = match value.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => value[7..].trim_start(),
            _ if self.settings.allow_without_prefix => value,
            _ => {
                return Err(GatewayError::unauthorized(
                    AuthReason::Malformed,
                    "token must be sent as Bearer <token>",
                ))
            }
        };
        if token.is_empty() {
            return Err(GatewayError::unauthorized(
                AuthReason::Missing,
                "empty bearer token",
            ));
        }
        Ok(token)
    }
}

/// How long a refusal of an opaque token is remembered: a tenth of the TTL, at most 10 s (a flood of
/// one made-up token costs one call per that, and a token activated meanwhile is not held back long).
fn refused_ttl(ttl: Duration) -> f64 {
    (ttl.as_secs_f64() / 10.0).min(10.0)
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::tests::{b64, rs256};
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
    use http::HeaderValue;

    fn setup(cache_size: usize) -> (RsaKeyPair, Authenticator) {
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let spki: PublicKeyX509Der = pair.public_key().as_der().unwrap();
        let pem = keys::tests::pem_block("PUBLIC KEY", spki.as_ref());
        let keys = KeySet::new(keys::keys_from_pem(pem.as_bytes(), "t").unwrap(), 1);
        let settings = AuthSettings {
            header: http::header::AUTHORIZATION,
            allow_without_prefix: false,
            verify: VerifyOptions {
                check_signature: true,
                ..Default::default()
            },
            cache_size,
            log_invalid: false,
            remote_keys: false,
            grants: None,
            grants_override: false,
            introspection: None,
            id_token_header: None,
        };
        (pair, Authenticator::new(settings, keys, true))
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    fn token(pair: &RsaKeyPair, exp_in: f64) -> String {
        let exp = now_seconds() + exp_in;
        rs256(
            pair,
            r#"{"alg":"RS256"}"#,
            &format!(r#"{{"exp":{exp},"vm_access":{{"extra_labels":{{"team":"dev"}}}}}}"#),
        )
    }

    #[test]
    fn cache_hits_after_first_verification_and_dies_on_key_change() {
        let (pair, auth) = setup(100);
        let t = token(&pair, 60.0);
        let g = auth.authenticate(&headers(&format!("Bearer {t}"))).unwrap();
        assert_eq!(g.args.write, "extra_label=team%3Ddev");
        auth.authenticate(&headers(&format!("bearer {t}"))).unwrap();
        assert_eq!(auth.cache_hits.load(Ordering::Relaxed), 1);
        assert_eq!(auth.cache_misses.load(Ordering::Relaxed), 1);
        // New keys without this key: the cached grant must not be used.
        auth.replace_keys(Vec::new());
        assert!(auth.authenticate(&headers(&format!("Bearer {t}"))).is_err());
    }

    #[test]
    fn cached_entries_die_at_exp() {
        let (pair, auth) = setup(100);
        let t = token(&pair, 1.5);
        auth.authenticate(&headers(&format!("Bearer {t}"))).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1600));
        let e = auth
            .authenticate(&headers(&format!("Bearer {t}")))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unauthorized(AuthReason::Expired));
    }

    #[test]
    fn header_shapes() {
        let (pair, auth) = setup(0);
        let t = token(&pair, 60.0);
        assert!(auth
            .authenticate(&headers(&format!("BEARER   {t}")))
            .is_ok());
        let missing = auth.authenticate(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.kind, ErrorKind::Unauthorized(AuthReason::Missing));
        let no_prefix = auth.authenticate(&headers(&t)).unwrap_err();
        assert_eq!(
            no_prefix.kind,
            ErrorKind::Unauthorized(AuthReason::Malformed)
        );
        let mut two = headers(&format!("Bearer {t}"));
        two.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        assert!(auth.authenticate(&two).is_err());
        let garbage = auth
            .authenticate(&headers(&format!("Bearer {}.x.y", b64(b"{"))))
            .unwrap_err();
        assert!(!garbage.message.contains("x.y"));
    }

    /// An authenticator fed by a stand-in refresher: remote keys on, none loaded but one PEM-less key
    /// set, and a task that answers each unknown-`kid` request with one round.
    fn remote_setup(complete: bool) -> (RsaKeyPair, Arc<Authenticator>) {
        let (pair, local) = setup(100);
        let mut settings = local.settings.clone();
        settings.remote_keys = true;
        let auth = Arc::new(Authenticator::new(settings, KeySet::default(), true));
        if complete {
            auth.refresh.set_complete();
        }
        (pair, auth)
    }

    fn kid_token(pair: &RsaKeyPair, kid: &str) -> String {
        let exp = now_seconds() + 60.0;
        rs256(
            pair,
            &format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#),
            &format!(r#"{{"exp":{exp},"vm_access":{{}}}}"#),
        )
    }

    #[tokio::test]
    async fn unknown_kid_waits_for_the_refresh_round_it_asked_for() {
        let (pair, auth) = remote_setup(true);
        let jwk = keys::tests::rsa_jwk(&pair, "new", Some("RS256"));
        let refresher = {
            let auth = auth.clone();
            tokio::spawn(async move {
                auth.refresh.unknown_kid.notified().await;
                let round = auth.refresh.begin_round();
                let doc = format!(r#"{{"keys":[{jwk}]}}"#);
                auth.replace_keys(keys::keys_from_jwks(doc.as_bytes(), "idp").unwrap().keys);
                auth.refresh.end_round(round);
            })
        };
        let t = kid_token(&pair, "new");
        let started = std::time::Instant::now();
        auth.authenticate_or_refresh(&headers(&format!("Bearer {t}")))
            .await
            .unwrap();
        assert!(started.elapsed() < UNKNOWN_KID_WAIT);
        refresher.await.unwrap();
    }

    #[tokio::test]
    async fn unknown_kid_after_an_empty_round_is_401_or_503_while_sources_are_missing() {
        for complete in [true, false] {
            let (pair, auth) = remote_setup(complete);
            let refresher = {
                let auth = auth.clone();
                tokio::spawn(async move {
                    auth.refresh.unknown_kid.notified().await;
                    let round = auth.refresh.begin_round();
                    auth.refresh.end_round(round);
                })
            };
            let t = kid_token(&pair, "garbage");
            let started = std::time::Instant::now();
            let e = auth
                .authenticate_or_refresh(&headers(&format!("Bearer {t}")))
                .await
                .unwrap_err();
            assert!(
                started.elapsed() < UNKNOWN_KID_WAIT,
                "answered by the round"
            );
            let want = if complete {
                ErrorKind::Unauthorized(AuthReason::UnknownKey)
            } else {
                ErrorKind::Unavailable
            };
            assert_eq!(e.kind, want);
            refresher.await.unwrap();
        }
    }

    #[tokio::test]
    async fn pem_keys_verify_tokens_whatever_kid_they_name() {
        // PEM keys carry no kid, so they are candidates for every token: no unknown-kid wait.
        let (pair, auth) = setup(0);
        let t = kid_token(&pair, "anything");
        auth.authenticate_or_refresh(&headers(&format!("Bearer {t}")))
            .await
            .unwrap();
        let other = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let e = auth
            .authenticate_or_refresh(&headers(&format!("Bearer {}", kid_token(&other, "x"))))
            .await
            .unwrap_err();
        // Its kid is carried by no key, which is what the refusal says; with only local keys nothing
        // could be fetched, so it is answered at once.
        assert_eq!(e.kind, ErrorKind::Unauthorized(AuthReason::UnknownKey));
        let e = auth
            .authenticate_or_refresh(&headers(&format!("Bearer {}", token(&other, 60.0))))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unauthorized(AuthReason::BadSignature));
    }

    #[test]
    fn not_ready_means_503() {
        let (pair, _) = setup(0);
        let (_, ready) = setup(0);
        let auth = Authenticator::new(ready.settings.clone(), KeySet::default(), false);
        let e = auth
            .authenticate(&headers(&format!("Bearer {}", token(&pair, 60.0))))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
    }
}
