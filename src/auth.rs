//! From a request's headers to a verified [`Grant`]: find the token, verify it (or find it in the
//! verified-token cache), and pre-encode what it grants.
//!
//! The [`Authenticator`] owns the key set in force (an immutable [`KeySet`] swapped atomically by whoever
//! loads keys: start-up for PEM files, [`fetch`] for identity providers) and the cache. A cache hit costs
//! one hash lookup and two comparisons, no crypto: entries carry the key-set generation they were verified
//! under and their token's `exp`, so a key change or an expiry makes them worthless at once.

pub mod claims;
pub mod fetch;
pub mod jwt;
pub mod keys;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::HeaderMap;
use tokio::sync::Notify;

use crate::error::{AuthReason, ErrorKind, GatewayError};
use crate::rewrite::GrantArgs;
use claims::Access;
use jwt::{VerifyError, VerifyOptions};
use keys::KeySet;

/// A verified token: what it grants, pre-encoded for the upstream request.
#[derive(Debug)]
pub struct Grant {
    /// The claim.
    pub access: Access,
    /// Upstream arguments and tenant path, encoded once.
    pub args: GrantArgs,
    /// Expiry (seconds since the epoch).
    exp: f64,
    /// Not-before, if any.
    nbf: Option<f64>,
    /// Key-set generation this was verified under.
    generation: u64,
}

impl Grant {
    /// A grant for `access` that never expires: used when `-enable.auth` is off.
    pub fn open(access: Access) -> Grant {
        Grant {
            args: GrantArgs::new(&access),
            access,
            exp: f64::INFINITY,
            nbf: None,
            generation: 0,
        }
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
}

/// Verifies tokens against the keys in force, with a cache of verified tokens.
pub struct Authenticator {
    settings: AuthSettings,
    keys: ArcSwap<KeySet>,
    /// False while only remote key sources are configured and none has answered yet: requests then get
    /// 503 (retry) rather than 401 (drop), so senders keep their samples.
    ready: AtomicBool,
    cache: Option<quick_cache::sync::Cache<Box<str>, Arc<Grant>>>,
    /// Woken when a token names an unknown `kid`: the key fetcher may refresh early.
    pub unknown_kid: Notify,
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
        let generation = keys.generation;
        Authenticator {
            settings,
            keys: ArcSwap::from_pointee(keys),
            ready: AtomicBool::new(ready),
            cache,
            unknown_kid: Notify::new(),
            generation: AtomicU64::new(generation),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
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

    /// Verifies the request's token and returns what it grants.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Grant>, GatewayError> {
        let token = self.token(headers)?;
        if !self.is_ready() {
            return Err(GatewayError::new(
                ErrorKind::Unavailable,
                "no token verification keys loaded yet (identity provider unreachable); retry later",
            ));
        }
        let now = now_seconds();
        let keys = self.keys.load();
        if let Some(cache) = &self.cache {
            if let Some(grant) = cache.get(token) {
                if grant.generation == keys.generation && self.is_current(&grant, now) {
                    self.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(grant);
                }
                cache.remove(token);
            }
            self.cache_misses.fetch_add(1, Ordering::Relaxed);
        }
        match jwt::verify(token, &keys, &self.settings.verify, now) {
            Ok(verified) => {
                let grant = Arc::new(Grant {
                    args: GrantArgs::new(&verified.access),
                    access: verified.access,
                    exp: verified.exp,
                    nbf: verified.nbf,
                    generation: keys.generation,
                });
                if let Some(cache) = &self.cache {
                    cache.insert(Box::from(token), grant.clone());
                }
                Ok(grant)
            }
            Err(e) => {
                if e.unknown_kid.is_some() {
                    self.unknown_kid.notify_one();
                }
                Err(self.refusal(e))
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
