//! Flags about tokens: whether they are required, where they are, which keys verify them (PEM, JWKS,
//! OpenID Connect discovery, HMAC), the optional issuer/audience checks, the verified-token cache, and
//! the grants file that maps ordinary claims to grants.

use std::path::PathBuf;
use std::time::Duration;

use super::values::{
    parse_bool, parse_duration, parse_existing_file, parse_header_name, parse_http_url,
    parse_positive_duration, parse_string, parse_usize,
};
use super::values::{parse_secret, Secret};
use super::{flag, secret, FlagError, FlagSpec, Given, Kind};

pub(super) const FLAGS: &[FlagSpec] = &[
    flag("enable.auth", Kind::Bool, "false", "Whether to require a JWT on every request and restrict the request to the tenant and labels in its vm_access claim"),
    flag("auth.httpHeader", Kind::String, "Authorization", "HTTP header name to look for the JWT authorization token"),
    flag("auth.httpHeaderAllowWithoutPrefix", Kind::Bool, "false", "Whether to accept a token in -auth.httpHeader without the \"Bearer \" prefix"),
    flag("auth.publicKeys", Kind::Array, "", "Inline PEM public keys (RSA, ECDSA or Ed25519) for verifying JWT signatures"),
    flag("auth.publicKeyFiles", Kind::Array, "", "Paths to PEM files with public keys (RSA, ECDSA or Ed25519) for verifying JWT signatures. Each file must exist at start-up; the files are re-read on SIGHUP (a file that no longer parses keeps the keys in force)"),
    flag("auth.jwksEndpoints", Kind::Array, "", "JWKS URLs to fetch JWT verification keys from, e.g. https://idp.example.com/.well-known/jwks.json"),
    flag("auth.oidcDiscoveryEndpoints", Kind::Array, "", "OpenID Connect discovery URLs (the full .well-known/openid-configuration URL); verification keys are fetched from the jwks_uri they name"),
    flag("auth.keysRefreshInterval", Kind::Duration, "5m0s", "How often keys from -auth.jwksEndpoints and -auth.oidcDiscoveryEndpoints are refreshed, to follow key rotation. Must be positive"),
    flag("auth.minRefreshInterval", Kind::Duration, "10s", "Shortest time between two fetches from one of -auth.jwksEndpoints or -auth.oidcDiscoveryEndpoints when tokens name an unknown key id (kid), which may mean the identity provider rotated its keys. Bounds the load that tokens with made-up key ids can put on the identity provider. Must be positive"),
    flag("auth.tlsCAFile", Kind::String, "", "Path to a CA bundle for verifying the TLS certificates of -auth.jwksEndpoints and -auth.oidcDiscoveryEndpoints. By default, public certificate authorities are trusted"),
    flag("auth.issuers", Kind::Array, "", "Accepted values of the JWT iss claim. Empty means the issuer is not checked"),
    flag("auth.audiences", Kind::Array, "", "Accepted values of the JWT aud claim; a token must name at least one. Empty means the audience is not checked"),
    flag("auth.clockSkew", Kind::Duration, "0s", "Tolerated clock difference with the token issuer when checking the exp and nbf claims"),
    flag("auth.hmacSecretFiles", Kind::Array, "", "Paths to files with shared secrets for verifying HMAC-signed (HS256, HS384, HS512) tokens. Each file must exist at start-up"),
    flag("auth.tokenCacheSize", Kind::Int, "100000", "How many verified tokens to cache, so each token's signature is checked once. 0 disables the cache"),
    flag("logInvalidAuthTokens", Kind::Bool, "false", "Whether to log why a request's token was rejected. The token itself is never logged"),
    flag("auth.grantsFile", Kind::String, "", "Path to a YAML file mapping ordinary claims (groups, roles, realm_access.roles, email, hd, ...) to grants in vm_access's layout, for identity providers that cannot issue vm_access (see docs/grants.md). A token with vm_access keeps it unless -auth.grantsOverride; a token no grant matches gets 403. Re-read on SIGHUP and when it changes; a file that no longer parses keeps the grants in force"),
    flag("auth.grantsOverride", Kind::Bool, "false", "Whether -auth.grantsFile decides for every token, even one that carries vm_access"),
    flag("auth.introspectionEndpoint", Kind::String, "", "RFC 7662 token introspection URL of the identity provider: a bearer token that is not a JWT (an opaque token: Ory Hydra, Authentik, Google, Keycloak lightweight tokens, ...) is sent there, and the claims of an active answer go through the same checks and grants file as a JWT's. Empty with -auth.introspectionClientID set: the introspection_endpoint of the first -auth.oidcDiscoveryEndpoints document. Setting up introspection ends the unverified-JWT compatibility mode: a JWT is then accepted only when a configured or discovered key verifies it"),
    flag("auth.introspectionClientID", Kind::String, "", "Client id tenantgate authenticates with at the introspection endpoint (client_secret_basic)"),
    flag("auth.introspectionClientSecretFile", Kind::String, "", "File holding the client secret for -auth.introspectionClientID; re-read on SIGHUP. The secret is never logged or shown in /flags"),
    flag("auth.introspectionCacheTTL", Kind::Duration, "1m0s", "How long an introspection answer is used: active answers at most this long and never past the token's exp (an answer without exp is trusted for this long only); inactive answers for a tenth of it (at most 10s). A token revoked at the identity provider stops working within this time"),
    flag("auth.idTokenHeader", Kind::String, "", "Header carrying an OpenID Connect ID token (a JWT), e.g. X-ID-Token as Grafana sends it with \"Forward OAuth identity\": when the bearer token is opaque and no introspection is configured, the ID token, verified with the usual keys, -auth.issuers and -auth.audiences (set it to Grafana's client id), gives the grant. A JWT bearer token is never replaced by it"),
    flag("checkGrants", Kind::String, "", "Check mode: load this grants file, verify -checkToken with the configured keys, print which grant the token gets and what a query and a write would be forwarded as, and exit (0: a grant applies, 1: none or the token is invalid, 2: bad flags or file). The server is not started"),
    secret("checkToken", Kind::String, "", "The token (JWT, with or without Bearer) for -checkGrants; file:// reads it from a file"),
];

/// How tokens are found and verified.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `-enable.auth`: every request must carry a valid token naming its tenant.
    pub enabled: bool,
    /// `-auth.httpHeader`, lowercase as HTTP/2 and `http` use it.
    pub header: String,
    /// `-auth.httpHeaderAllowWithoutPrefix`.
    pub allow_without_prefix: bool,
    /// `-auth.publicKeys`: inline PEM keys.
    pub public_keys: Vec<String>,
    /// `-auth.publicKeyFiles`; they existed at parse time.
    pub public_key_files: Vec<PathBuf>,
    /// `-auth.jwksEndpoints`.
    pub jwks_endpoints: Vec<String>,
    /// `-auth.oidcDiscoveryEndpoints`.
    pub oidc_discovery_endpoints: Vec<String>,
    /// `-auth.keysRefreshInterval`; never zero.
    pub keys_refresh_interval: Duration,
    /// `-auth.minRefreshInterval`; never zero.
    pub min_refresh_interval: Duration,
    /// `-auth.tlsCAFile`.
    pub tls_ca_file: Option<PathBuf>,
    /// `-auth.issuers`; empty means not checked.
    pub issuers: Vec<String>,
    /// `-auth.audiences`; empty means not checked.
    pub audiences: Vec<String>,
    /// `-auth.clockSkew`.
    pub clock_skew: Duration,
    /// `-auth.hmacSecretFiles`; they existed at parse time.
    pub hmac_secret_files: Vec<PathBuf>,
    /// `-auth.tokenCacheSize`; 0 disables the cache.
    pub token_cache_size: usize,
    /// `-logInvalidAuthTokens`.
    pub log_invalid_tokens: bool,
    /// `-auth.grantsFile`; it existed at parse time.
    pub grants_file: Option<PathBuf>,
    /// `-auth.grantsOverride`.
    pub grants_override: bool,
    /// `-checkGrants` and `-checkToken`: check mode instead of serving.
    pub check: Option<(PathBuf, Secret)>,
    /// `-auth.introspection*`: opaque tokens are introspected; `None` when off.
    pub introspection: Option<IntrospectionConfig>,
    /// `-auth.idTokenHeader`, lower-case; `None` when off.
    pub id_token_header: Option<String>,
}

/// RFC 7662 token introspection.
#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    /// `-auth.introspectionEndpoint`; `None`: from the first discovery document.
    pub endpoint: Option<String>,
    /// `-auth.introspectionClientID`.
    pub client_id: String,
    /// `-auth.introspectionClientSecretFile`.
    pub secret_file: PathBuf,
    /// `-auth.introspectionCacheTTL`.
    pub cache_ttl: Duration,
}

impl AuthConfig {
    /// Whether any source of verification keys is configured.
    pub fn has_key_sources(&self) -> bool {
        !(self.public_keys.is_empty()
            && self.public_key_files.is_empty()
            && self.jwks_endpoints.is_empty()
            && self.oidc_discovery_endpoints.is_empty()
            && self.hmac_secret_files.is_empty())
    }
}

pub(super) fn build(given: &Given) -> Result<AuthConfig, FlagError> {
    let config = AuthConfig {
        enabled: given.get("enable.auth", parse_bool)?,
        header: given.get("auth.httpHeader", parse_header_name)?,
        allow_without_prefix: given.get("auth.httpHeaderAllowWithoutPrefix", parse_bool)?,
        public_keys: given.get_list("auth.publicKeys", parse_string)?,
        public_key_files: given.get_list("auth.publicKeyFiles", parse_existing_file)?,
        jwks_endpoints: given.get_list("auth.jwksEndpoints", parse_http_url)?,
        oidc_discovery_endpoints: given.get_list("auth.oidcDiscoveryEndpoints", parse_http_url)?,
        keys_refresh_interval: given.get("auth.keysRefreshInterval", parse_positive_duration)?,
        min_refresh_interval: given.get("auth.minRefreshInterval", parse_positive_duration)?,
        tls_ca_file: given.get_opt("auth.tlsCAFile", parse_existing_file)?,
        issuers: given.get_list("auth.issuers", parse_string)?,
        audiences: given.get_list("auth.audiences", parse_string)?,
        clock_skew: given.get("auth.clockSkew", parse_duration)?,
        hmac_secret_files: given.get_list("auth.hmacSecretFiles", parse_existing_file)?,
        token_cache_size: given.get("auth.tokenCacheSize", parse_usize)?,
        log_invalid_tokens: given.get("logInvalidAuthTokens", parse_bool)?,
        grants_file: given.get_opt("auth.grantsFile", parse_existing_file)?,
        grants_override: given.get("auth.grantsOverride", parse_bool)?,
        check: match (
            given.get_opt("checkGrants", parse_existing_file)?,
            given.get_opt("checkToken", parse_secret)?,
        ) {
            (Some(file), Some(token)) => Some((file, token)),
            (None, None) => None,
            _ => {
                return Err(FlagError(
                    "-checkGrants and -checkToken go together: the grants file and the token to check against it"
                        .to_string(),
                ))
            }
        },
        introspection: introspection(given)?,
        id_token_header: given.get_opt("auth.idTokenHeader", parse_header_name)?,
    };
    // Check mode (-checkGrants) turns auth on by itself.
    if (config.introspection.is_some() || config.id_token_header.is_some())
        && !config.enabled
        && config.check.is_none()
    {
        return Err(FlagError(
            "-auth.introspection* and -auth.idTokenHeader need -enable.auth".to_string(),
        ));
    }
    if let Some(i) = &config.introspection {
        if i.endpoint.is_none() && config.oidc_discovery_endpoints.is_empty() {
            return Err(FlagError("-auth.introspectionClientID needs -auth.introspectionEndpoint, or -auth.oidcDiscoveryEndpoints whose document names an introspection_endpoint".to_string()));
        }
    }
    if config.id_token_header.is_some() && !config.has_key_sources() {
        return Err(FlagError("-auth.idTokenHeader needs a key source (-auth.oidcDiscoveryEndpoints, -auth.jwksEndpoints or -auth.publicKeyFiles): an ID token is worth only its signature".to_string()));
    }
    if config
        .id_token_header
        .as_deref()
        .is_some_and(|h| h == config.header)
    {
        return Err(FlagError(
            "-auth.idTokenHeader must differ from -auth.httpHeader".to_string(),
        ));
    }
    Ok(config)
}

fn introspection(given: &Given) -> Result<Option<IntrospectionConfig>, FlagError> {
    let endpoint = given.get_opt("auth.introspectionEndpoint", parse_http_url)?;
    let client_id = given.get_opt("auth.introspectionClientID", parse_string)?;
    let secret_file = given.get_opt("auth.introspectionClientSecretFile", parse_existing_file)?;
    let cache_ttl = given.get("auth.introspectionCacheTTL", parse_positive_duration)?;
    match (endpoint, client_id, secret_file) {
        (None, None, None) => Ok(None),
        (endpoint, Some(client_id), Some(secret_file)) => Ok(Some(IntrospectionConfig {
            endpoint,
            client_id,
            secret_file,
            cache_ttl,
        })),
        _ => Err(FlagError(
            "token introspection needs -auth.introspectionClientID and -auth.introspectionClientSecretFile (and -auth.introspectionEndpoint, or a discovery document naming one)"
                .to_string(),
        )),
    }
}
