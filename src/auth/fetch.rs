//! Where verification keys come from: PEM keys and HMAC secrets from flags and files at start-up, and
//! (the only code here that talks to identity providers) JWKS and OpenID Connect discovery endpoints.
//!
//! [`start`] builds the [`Authenticator`] with whatever can be loaded now and, when remote sources are
//! configured, spawns the refresher task that keeps the key set in step with the identity provider.

use std::fmt::Write as _;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::jwt::VerifyOptions;
use super::keys::{keys_from_pem, KeySet, VerifyKey};
use super::{AuthSettings, Authenticator};
use crate::flags::Config;

/// Per-source key metrics, rendered into `/metrics`.
#[derive(Default)]
pub struct KeyStatus {
    sources: Vec<(String, usize)>,
}

impl KeyStatus {
    /// Exposition text for the key sources.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.sources.is_empty() {
            return out;
        }
        out.push_str("# HELP tenantgate_keys_loaded Keys loaded per source.\n# TYPE tenantgate_keys_loaded gauge\n");
        for (source, n) in &self.sources {
            let _ = writeln!(
                out,
                "tenantgate_keys_loaded{{source=\"{}\"}} {n}",
                source.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
        out
    }
}

/// What [`start`] hands the server.
pub type Started = (
    Option<Arc<Authenticator>>,
    Arc<KeyStatus>,
    Option<JoinHandle<()>>,
);

/// Loads local keys, builds the authenticator, and starts refreshing remote sources.
pub async fn start(config: &Config) -> Result<Started, String> {
    if !config.enable_auth {
        tracing::warn!(
            "-enable.auth is off: every request is forwarded to tenant 0:0 without any restriction"
        );
        return Ok((None, Arc::new(KeyStatus::default()), None));
    }
    let mut keys: Vec<VerifyKey> = Vec::new();
    let mut status = KeyStatus::default();
    for (i, pem) in config.public_keys.iter().enumerate() {
        let source = format!("-auth.publicKeys[{i}]");
        let loaded = keys_from_pem(pem.as_bytes(), &source).map_err(|e| e.to_string())?;
        status.sources.push((source, loaded.len()));
        keys.extend(loaded);
    }
    for path in &config.public_key_files {
        let source = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| format!("-auth.publicKeyFiles {source}: {e}"))?;
        let loaded =
            keys_from_pem(&pem, &source).map_err(|e| format!("-auth.publicKeyFiles {e}"))?;
        status.sources.push((source, loaded.len()));
        keys.extend(loaded);
    }
    for path in &config.hmac_secret_files {
        let source = path.display().to_string();
        let secret =
            std::fs::read(path).map_err(|e| format!("-auth.hmacSecretFiles {source}: {e}"))?;
        let secret = trim_ascii_newline(&secret);
        keys.push(
            VerifyKey::hmac(secret, &source).map_err(|e| format!("-auth.hmacSecretFiles {e}"))?,
        );
        status.sources.push((source, 1));
    }
    let check_signature = config.has_key_sources();
    if !check_signature {
        tracing::warn!("-enable.auth is on but no key source is configured: token signatures are NOT checked (vmgateway compatibility). Set -auth.oidcDiscoveryEndpoints, -auth.jwksEndpoints or -auth.publicKeyFiles.");
    }
    for key in &keys {
        tracing::info!(source = %key.source, kid = key.kid.as_deref().unwrap_or("-"), "loaded {} key for {:?}", key.description, key.algs());
    }
    tracing::info!(
        "using {} keys for JWT token signature verification",
        keys.len()
    );
    let settings = AuthSettings {
        header: http::HeaderName::from_bytes(config.auth_header.as_bytes())
            .map_err(|e| format!("-auth.httpHeader: {e}"))?,
        allow_without_prefix: config.auth_header_allow_without_prefix,
        verify: VerifyOptions {
            check_signature,
            issuers: config.issuers.clone(),
            audiences: config.audiences.clone(),
            clock_skew: config.clock_skew.as_secs_f64(),
        },
        cache_size: config.token_cache_size,
        log_invalid: config.log_invalid_auth_tokens,
    };
    let authenticator = Arc::new(Authenticator::new(settings, KeySet::new(keys, 1), true));
    Ok((Some(authenticator), Arc::new(status), None))
}

/// Secret files usually end with a newline that is not part of the secret.
fn trim_ascii_newline(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &bytes[..end]
}
