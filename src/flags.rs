//! Command-line flags, parsed the way vmgateway (and every VictoriaMetrics component) parses them.
//!
//! tenantgate is a drop-in replacement for vmgateway, so the command lines users already run must
//! work unchanged: Go `flag` package syntax (`-name=value`, `-name value`, `--name=value`, bare
//! boolean flags), comma-separated or repeated array flags, Go durations, VictoriaMetrics size
//! suffixes, `-envflag.enable` to read flags from the environment, and VictoriaMetrics-style help
//! text. vmgateway's licence flags are accepted and ignored. One table (`FLAGS`) drives parsing,
//! defaults and help, so they cannot drift apart. Values are validated here, with errors naming the
//! flag, so the rest of the program receives a typed [`Config`]. The module does no I/O apart from
//! checking that named files exist (`std::fs::metadata`); the environment is read only through the
//! closure passed to [`parse`], which keeps it testable.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// What the command line asks for.
// Built once at start-up, so the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Parsed {
    /// Serve with this configuration.
    Run(Config),
    /// `-h`, `-help` or `--help`: print this text (VictoriaMetrics exits 0 after it).
    Help(String),
    /// `-version`: print the version and exit.
    Version,
}

/// A command-line or environment flag could not be used. The message always names the flag (or
/// the offending argument); callers print it and exit with code 2, as Go programs do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError(pub String);

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FlagError {}

/// Log output format (`-loggerFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Default,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Minimum level of logs to emit (`-loggerLevel`), with VictoriaMetrics' level names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `INFO`: everything.
    Info,
    /// `WARN`: warnings and errors.
    Warn,
    /// `ERROR`: errors only.
    Error,
    /// `FATAL`: only messages logged right before exiting.
    Fatal,
    /// `PANIC`: only messages logged on a crash.
    Panic,
}

/// TLS settings for connecting to one backend (`-read.tls*` or `-write.tls*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// CA bundle to verify the backend's certificate with, instead of the default roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS; always given together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name to verify the backend's certificate against, when it differs from the URL's host.
    pub server_name: Option<String>,
    /// Skip certificate verification entirely (insecure; for test set-ups).
    pub insecure_skip_verify: bool,
}

/// The validated configuration tenantgate runs with.
#[derive(Clone)]
pub struct Config {
    /// Where to accept client connections (`-httpListenAddr`); an empty host means all interfaces.
    pub listen_addr: SocketAddr,
    /// Whether every request must carry a valid JWT naming its tenant (`-enable.auth`).
    pub enable_auth: bool,
    /// Whether the backends are vminsert/vmselect, so the tenant goes into the path (`-clusterMode`).
    pub cluster_mode: bool,
    /// Backend for queries (`-read.url`), without a trailing slash.
    pub read_url: Option<String>,
    /// Backend for ingestion (`-write.url`), without a trailing slash.
    pub write_url: Option<String>,
    /// Request header holding the token (`-auth.httpHeader`), lowercase as HTTP/2 and `http` use it.
    pub auth_header: String,
    /// Whether a token without the `Bearer ` prefix is accepted (`-auth.httpHeaderAllowWithoutPrefix`).
    pub auth_header_allow_without_prefix: bool,
    /// Inline PEM public keys to verify signatures with (`-auth.publicKeys`).
    pub public_keys: Vec<String>,
    /// PEM files with public keys to verify signatures with (`-auth.publicKeyFiles`); they existed at parse time.
    pub public_key_files: Vec<PathBuf>,
    /// JWKS URLs to fetch verification keys from (`-auth.jwksEndpoints`).
    pub jwks_endpoints: Vec<String>,
    /// OpenID Connect discovery URLs whose `jwks_uri` supplies keys (`-auth.oidcDiscoveryEndpoints`).
    pub oidc_discovery_endpoints: Vec<String>,
    /// How often fetched keys are refreshed, so IdP key rotation is picked up (`-auth.keysRefreshInterval`); never zero.
    pub keys_refresh_interval: Duration,
    /// Shortest time between two fetches from one key source when tokens name unknown `kid`s, so tokens with
    /// made-up `kid`s cannot make the gateway hammer the identity provider (`-auth.minRefreshInterval`); never zero.
    pub min_refresh_interval: Duration,
    /// CA bundle for fetching keys from the IdP over HTTPS (`-auth.tlsCAFile`).
    pub auth_tls_ca_file: Option<PathBuf>,
    /// Accepted `iss` values; empty means not checked, as in vmgateway (`-auth.issuers`).
    pub issuers: Vec<String>,
    /// Accepted `aud` values; empty means not checked, as in vmgateway (`-auth.audiences`).
    pub audiences: Vec<String>,
    /// Tolerated clock difference when checking `exp` and `nbf` (`-auth.clockSkew`).
    pub clock_skew: Duration,
    /// Files with shared secrets for HMAC-signed tokens (`-auth.hmacSecretFiles`); they existed at parse time.
    pub hmac_secret_files: Vec<PathBuf>,
    /// How many verified tokens to remember, so signatures are not re-checked per request; 0 disables it (`-auth.tokenCacheSize`).
    pub token_cache_size: usize,
    /// Whether to log why tokens are rejected (never the token itself) (`-logInvalidAuthTokens`).
    pub log_invalid_auth_tokens: bool,
    /// Log output format (`-loggerFormat`).
    pub logger_format: LogFormat,
    /// Minimum log level (`-loggerLevel`).
    pub logger_level: LogLevel,
    /// How long in-flight requests may take to finish on shutdown (`-http.maxGracefulShutdownDuration`).
    pub max_graceful_shutdown: Duration,
    /// How long `/health` reports shutting down before the listener closes, so load balancers move away (`-http.shutdownDelay`).
    pub shutdown_delay: Duration,
    /// How long an idle keep-alive backend connection is kept for reuse (`-http.idleConnTimeout`).
    pub idle_conn_timeout: Duration,
    /// Threads serving requests; 0 means one per CPU (`-http.workers`).
    pub workers: usize,
    /// How long a client may take to send request headers, against slow-loris clients (`-http.headerReadTimeout`).
    pub header_read_timeout: Duration,
    /// Largest request body accepted; larger ones get 413 (`-maxRequestBodySize`).
    pub max_request_body_size: u64,
    /// Largest urlencoded read body, which must be buffered to strip smuggled filters (`-maxFormBodySize`).
    pub max_form_body_size: u64,
    /// How long to wait for a backend's response headers before answering 504 (`-upstream.timeout`).
    pub upstream_timeout: Duration,
    /// Requests served at once before answering 429; 0 means unlimited (`-maxConcurrentRequests`).
    pub max_concurrent_requests: usize,
    /// Requests served at once per tenant, so one tenant cannot starve others; 0 means unlimited (`-maxConcurrentRequestsPerTenant`).
    pub max_concurrent_requests_per_tenant: usize,
    /// Whether clients connect over HTTPS (`-tls`); then both certificate files are set.
    pub tls: bool,
    /// Server certificate for `-tls` (`-tlsCertFile`).
    pub tls_cert_file: Option<PathBuf>,
    /// Server private key for `-tls` (`-tlsKeyFile`).
    pub tls_key_file: Option<PathBuf>,
    /// TLS settings for `read_url` (`-read.tls*`).
    pub read_tls: UpstreamTls,
    /// TLS settings for `write_url` (`-write.tls*`).
    pub write_tls: UpstreamTls,
    /// Key required as `authKey` to read `/metrics`; a secret, so `Debug` redacts it (`-metricsAuthKey`).
    pub metrics_auth_key: Option<String>,
    /// Accepted for vmgateway compatibility (it uses it for rate limiting); unused (`-datasource.url`).
    pub datasource_url: Option<String>,
    /// vmgateway's rate limiting switch; always false here, since `true` is refused rather than ignored (`-enable.rateLimit`).
    pub enable_rate_limit: bool,
    /// vmgateway's rate limit configuration file; accepted and unused (`-ratelimit.config`).
    pub ratelimit_config: Option<PathBuf>,
    /// Names (without the dash) of the vmgateway licence flags given, so `main` can say once that they are ignored.
    pub licence_flags_seen: Vec<String>,
}

impl Config {
    /// Whether any source of verification keys is configured. Without one, signatures are not
    /// checked (vmgateway's behaviour), which callers must warn about loudly.
    pub fn has_key_sources(&self) -> bool {
        !(self.public_keys.is_empty()
            && self.public_key_files.is_empty()
            && self.jwks_endpoints.is_empty()
            && self.oidc_discovery_endpoints.is_empty()
            && self.hmac_secret_files.is_empty())
    }
}

/// Written by hand so that logging the configuration never leaks `-metricsAuthKey`. The
/// destructuring makes adding a field without listing it here a compile error.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Config {
            listen_addr,
            enable_auth,
            cluster_mode,
            read_url,
            write_url,
            auth_header,
            auth_header_allow_without_prefix,
            public_keys,
            public_key_files,
            jwks_endpoints,
            oidc_discovery_endpoints,
            keys_refresh_interval,
            min_refresh_interval,
            auth_tls_ca_file,
            issuers,
            audiences,
            clock_skew,
            hmac_secret_files,
            token_cache_size,
            log_invalid_auth_tokens,
            logger_format,
            logger_level,
            max_graceful_shutdown,
            shutdown_delay,
            idle_conn_timeout,
            workers,
            header_read_timeout,
            max_request_body_size,
            max_form_body_size,
            upstream_timeout,
            max_concurrent_requests,
            max_concurrent_requests_per_tenant,
            tls,
            tls_cert_file,
            tls_key_file,
            read_tls,
            write_tls,
            metrics_auth_key,
            datasource_url,
            enable_rate_limit,
            ratelimit_config,
            licence_flags_seen,
        } = self;
        let redacted_key = metrics_auth_key.as_ref().map(|_| "<redacted>");
        f.debug_struct("Config")
            .field("listen_addr", listen_addr)
            .field("enable_auth", enable_auth)
            .field("cluster_mode", cluster_mode)
            .field("read_url", read_url)
            .field("write_url", write_url)
            .field("auth_header", auth_header)
            .field(
                "auth_header_allow_without_prefix",
                auth_header_allow_without_prefix,
            )
            .field("public_keys", public_keys)
            .field("public_key_files", public_key_files)
            .field("jwks_endpoints", jwks_endpoints)
            .field("oidc_discovery_endpoints", oidc_discovery_endpoints)
            .field("keys_refresh_interval", keys_refresh_interval)
            .field("min_refresh_interval", min_refresh_interval)
            .field("auth_tls_ca_file", auth_tls_ca_file)
            .field("issuers", issuers)
            .field("audiences", audiences)
            .field("clock_skew", clock_skew)
            .field("hmac_secret_files", hmac_secret_files)
            .field("token_cache_size", token_cache_size)
            .field("log_invalid_auth_tokens", log_invalid_auth_tokens)
            .field("logger_format", logger_format)
            .field("logger_level", logger_level)
            .field("max_graceful_shutdown", max_graceful_shutdown)
            .field("shutdown_delay", shutdown_delay)
            .field("idle_conn_timeout", idle_conn_timeout)
            .field("workers", workers)
            .field("header_read_timeout", header_read_timeout)
            .field("max_request_body_size", max_request_body_size)
            .field("max_form_body_size", max_form_body_size)
            .field("upstream_timeout", upstream_timeout)
            .field("max_concurrent_requests", max_concurrent_requests)
            .field(
                "max_concurrent_requests_per_tenant",
                max_concurrent_requests_per_tenant,
            )
            .field("tls", tls)
            .field("tls_cert_file", tls_cert_file)
            .field("tls_key_file", tls_key_file)
            .field("read_tls", read_tls)
            .field("write_tls", write_tls)
            .field("metrics_auth_key", &redacted_key)
            .field("datasource_url", datasource_url)
            .field("enable_rate_limit", enable_rate_limit)
            .field("ratelimit_config", ratelimit_config)
            .field("licence_flags_seen", licence_flags_seen)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// The flag table: the one source of truth for names, kinds, defaults and help.
// ---------------------------------------------------------------------------------------------

/// How a flag's value is written; decides syntax (bool flags take no separate argument), array
/// splitting, and the type shown in help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    String,
    Int,
    Duration,
    Size,
    Array,
}

impl Kind {
    /// The type word Go's `PrintDefaults` shows after the flag name (none for booleans).
    fn type_name(self) -> Option<&'static str> {
        match self {
            Kind::Bool => None,
            Kind::String => Some("string"),
            Kind::Int => Some("int"),
            Kind::Duration => Some("duration"),
            Kind::Size => Some("size"),
            Kind::Array => Some("array"),
        }
    }
}

/// One flag. `default` is written as a user would write the value and goes through the same
/// parser as user input; array flags always default to empty.
#[derive(Debug)]
struct FlagSpec {
    name: &'static str,
    kind: Kind,
    default: &'static str,
    help: &'static str,
}

const fn flag(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    help: &'static str,
) -> FlagSpec {
    FlagSpec {
        name,
        kind,
        default,
        help,
    }
}

const LICENCE_HELP: &str =
    "vmgateway licence flag, accepted for compatibility and ignored: tenantgate needs no licence";

/// Every flag tenantgate knows. Help text sorts them by name; the order here is by topic.
const FLAGS: &[FlagSpec] = &[
    // Listening and routing.
    flag("httpListenAddr", Kind::String, ":8431", "TCP address to listen for incoming HTTP requests. An empty host means all interfaces, e.g. :8431"),
    flag("enable.auth", Kind::Bool, "false", "Whether to require a JWT on every request and restrict the request to the tenant and labels in its vm_access claim"),
    flag("clusterMode", Kind::Bool, "false", "Whether the backends are VictoriaMetrics cluster components (vminsert for -write.url, vmselect for -read.url); the tenant from the token then goes into the request path"),
    flag("read.url", Kind::String, "", "URL of the backend for queries: VictoriaMetrics single-node (e.g. http://victoria-metrics:8428) or vmselect with -clusterMode (e.g. http://vmselect:8481)"),
    flag("write.url", Kind::String, "", "URL of the backend for ingestion: VictoriaMetrics single-node (e.g. http://victoria-metrics:8428) or vminsert with -clusterMode (e.g. http://vminsert:8480)"),
    flag("upstream.timeout", Kind::Duration, "1m0s", "How long to wait for a backend's response headers; slower backends get 504"),
    // Tokens.
    flag("auth.httpHeader", Kind::String, "Authorization", "HTTP header name to look for the JWT authorization token"),
    flag("auth.httpHeaderAllowWithoutPrefix", Kind::Bool, "false", "Whether to accept a token in -auth.httpHeader without the \"Bearer \" prefix"),
    flag("auth.publicKeys", Kind::Array, "", "Inline PEM public keys (RSA, ECDSA or Ed25519) for verifying JWT signatures"),
    flag("auth.publicKeyFiles", Kind::Array, "", "Paths to PEM files with public keys (RSA, ECDSA or Ed25519) for verifying JWT signatures. Each file must exist at start-up"),
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
    // Limits.
    flag("maxRequestBodySize", Kind::Size, "64MiB", "Maximum size of a request body; larger requests get 413"),
    flag("maxFormBodySize", Kind::Size, "1MiB", "Maximum size of an application/x-www-form-urlencoded read request body, which is buffered to remove client-supplied extra_label and extra_filters"),
    flag("maxConcurrentRequests", Kind::Int, "0", "Maximum number of requests served at once; further requests get 429. 0 means unlimited"),
    flag("maxConcurrentRequestsPerTenant", Kind::Int, "0", "Maximum number of requests served at once for one tenant; further requests get 429. 0 means unlimited"),
    // HTTP server.
    flag("http.maxGracefulShutdownDuration", Kind::Duration, "7s", "The maximum duration for a graceful shutdown of the HTTP server. A highly loaded server may require increased value for a graceful shutdown"),
    flag("http.workers", Kind::Int, "0", "Threads serving requests. 0 means one per CPU available to the process"),
    flag("http.shutdownDelay", Kind::Duration, "0s", "Delay before the HTTP server shutdown. During it, /health answers 503 so load balancers stop sending new requests"),
    flag("http.idleConnTimeout", Kind::Duration, "1m0s", "How long an idle keep-alive connection to a backend is kept for reuse"),
    flag("http.headerReadTimeout", Kind::Duration, "10s", "How long a client may take to send the request headers. It also bounds how long an idle keep-alive client connection stays open, as the next request's headers are awaited"),
    flag("tls", Kind::Bool, "false", "Whether to enable TLS (aka HTTPS) for incoming requests. -tlsCertFile and -tlsKeyFile must be set if -tls is set"),
    flag("tlsCertFile", Kind::String, "", "Path to file with TLS certificate if -tls is set"),
    flag("tlsKeyFile", Kind::String, "", "Path to file with TLS key if -tls is set"),
    flag("metricsAuthKey", Kind::String, "", "Auth key for the /metrics endpoint. It must be passed via the authKey query arg. Empty means /metrics is open"),
    // Backend TLS.
    flag("read.tlsCAFile", Kind::String, "", "Path to a CA bundle for verifying the TLS certificate of -read.url. By default, public certificate authorities are trusted"),
    flag("read.tlsCertFile", Kind::String, "", "Path to a client certificate for mutual TLS with -read.url; needs -read.tlsKeyFile"),
    flag("read.tlsKeyFile", Kind::String, "", "Path to the private key of -read.tlsCertFile"),
    flag("read.tlsServerName", Kind::String, "", "Name to verify the TLS certificate of -read.url against, instead of the URL's host"),
    flag("read.tlsInsecureSkipVerify", Kind::Bool, "false", "Whether to skip verifying the TLS certificate of -read.url. Insecure"),
    flag("write.tlsCAFile", Kind::String, "", "Path to a CA bundle for verifying the TLS certificate of -write.url. By default, public certificate authorities are trusted"),
    flag("write.tlsCertFile", Kind::String, "", "Path to a client certificate for mutual TLS with -write.url; needs -write.tlsKeyFile"),
    flag("write.tlsKeyFile", Kind::String, "", "Path to the private key of -write.tlsCertFile"),
    flag("write.tlsServerName", Kind::String, "", "Name to verify the TLS certificate of -write.url against, instead of the URL's host"),
    flag("write.tlsInsecureSkipVerify", Kind::Bool, "false", "Whether to skip verifying the TLS certificate of -write.url. Insecure"),
    // Logging.
    flag("loggerFormat", Kind::String, "default", "Format for logs. Possible values: default, json"),
    flag("loggerLevel", Kind::String, "INFO", "Minimum level of logs to emit. Possible values: INFO, WARN, ERROR, FATAL, PANIC"),
    // Flags about flags.
    flag("envflag.enable", Kind::Bool, "false", "Whether to also read flags from environment variables. A flag's variable is -envflag.prefix followed by the flag name with dots replaced by underscores, e.g. read_url. Command-line values take priority. This flag is read from the command line only"),
    flag("envflag.prefix", Kind::String, "", "Prefix for environment variable names if -envflag.enable is set. This flag is read from the command line only"),
    flag("version", Kind::Bool, "false", "Show tenantgate version"),
    // vmgateway features tenantgate accepts but does not implement.
    flag("datasource.url", Kind::String, "", "Accepted for compatibility with vmgateway, which uses it for rate limiting; unused"),
    flag("enable.rateLimit", Kind::Bool, "false", "vmgateway's rate limiting. Not supported by tenantgate yet: true is refused; use -maxConcurrentRequestsPerTenant"),
    flag("ratelimit.config", Kind::String, "", "Path to vmgateway's rate limit configuration. Accepted for compatibility; unused"),
    flag("license", Kind::String, "", LICENCE_HELP),
    flag("licenseFile", Kind::String, "", LICENCE_HELP),
    flag("license.forceOffline", Kind::Bool, "false", LICENCE_HELP),
    flag("licenseFile.reloadInterval", Kind::Duration, "", LICENCE_HELP),
];

/// vmgateway's licence flags, in the order `licence_flags_seen` reports them.
const LICENCE_FLAGS: &[&str] = &[
    "license",
    "licenseFile",
    "license.forceOffline",
    "licenseFile.reloadInterval",
];

/// Flags never read from the environment: they control the reading itself, and an unprefixed
/// `version` variable is common enough in containers to turn every start into a version print.
const COMMAND_LINE_ONLY: &[&str] = &["envflag.enable", "envflag.prefix", "version"];

fn lookup(name: &str) -> Option<&'static FlagSpec> {
    FLAGS.iter().find(|spec| spec.name == name)
}

/// The spec of a flag the code (not the user) names; missing means a bug, reported, not panicked.
fn known(name: &str) -> Result<&'static FlagSpec, FlagError> {
    lookup(name).ok_or_else(|| FlagError(format!("internal error: flag -{name} is not defined")))
}

// ---------------------------------------------------------------------------------------------
// Parsing.
// ---------------------------------------------------------------------------------------------

/// Parses the arguments (without `argv[0]`) into what to do. `env` looks up an environment
/// variable; it is consulted only when `-envflag.enable` is set on the command line.
///
/// # Errors
/// A [`FlagError`] naming the flag (or argument) for unknown flags, malformed syntax, invalid
/// values, missing files and inconsistent combinations. Callers print it and exit with code 2.
pub fn parse<I: IntoIterator<Item = String>>(
    args: I,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, FlagError> {
    let mut given = match scan_command_line(args)? {
        Scan::Help => return Ok(Parsed::Help(help_text())),
        Scan::Flags(given) => given,
    };
    if given.get("version", parse_bool)? {
        return Ok(Parsed::Version);
    }
    if given.get("envflag.enable", parse_bool)? {
        let prefix = given.get("envflag.prefix", parse_string)?;
        given.add_env(&prefix, env);
    }
    let config = build_config(&given)?;
    check_cross_flags(&config)?;
    Ok(Parsed::Run(config))
}

/// One value given for a flag, and where it came from (for error messages).
#[derive(Debug)]
struct Value {
    text: String,
    env_var: Option<String>,
}

/// All values given for each flag, in order (the last wins for non-array flags, as in Go).
#[derive(Debug, Default)]
struct Given {
    values: HashMap<&'static str, Vec<Value>>,
}

enum Scan {
    Help,
    Flags(Given),
}

/// Splits the command line into flag values with Go `flag` package syntax. Values are validated
/// later, so command-line and environment values get the same checks.
fn scan_command_line<I: IntoIterator<Item = String>>(args: I) -> Result<Scan, FlagError> {
    let mut given = Given::default();
    let mut args = args.into_iter();
    let mut previous_bare_bool: Option<&'static str> = None;
    while let Some(arg) = args.next() {
        if arg == "--" {
            return match args.next() {
                Some(extra) => Err(unexpected_argument(&extra, None)),
                None => Ok(Scan::Flags(given)),
            };
        }
        let Some((name, inline_value)) = split_flag(&arg)? else {
            return Err(unexpected_argument(&arg, previous_bare_bool));
        };
        if name == "h" || name == "help" {
            return Ok(Scan::Help);
        }
        let spec = lookup(name).ok_or_else(|| unknown_flag(name))?;
        previous_bare_bool = None;
        let text = match (inline_value, spec.kind) {
            (Some(value), _) => value.to_string(),
            (None, Kind::Bool) => {
                previous_bare_bool = Some(spec.name);
                "true".to_string()
            }
            (None, _) => args
                .next()
                .ok_or_else(|| FlagError(format!("flag needs an argument: -{}", spec.name)))?,
        };
        given.push(spec.name, text, None);
    }
    Ok(Scan::Flags(given))
}

/// `-name`, `--name`, `-name=value` → `Some((name, value))`; a non-flag argument → `None`.
fn split_flag(arg: &str) -> Result<Option<(&str, Option<&str>)>, FlagError> {
    let Some(body) = arg.strip_prefix('-') else {
        return Ok(None);
    };
    if body.is_empty() {
        return Ok(None); // "-" alone is an argument, as in Go.
    }
    let body = body.strip_prefix('-').unwrap_or(body);
    if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
        return Err(FlagError(format!("bad flag syntax: {arg}")));
    }
    Ok(Some(match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    }))
}

fn unexpected_argument(arg: &str, previous_bare_bool: Option<&str>) -> FlagError {
    match previous_bare_bool {
        Some(flag) if parse_bool(arg).is_ok() => FlagError(format!(
            "unexpected argument {arg:?}: boolean flags take no separate value; write -{flag}={arg}"
        )),
        _ => FlagError(format!(
            "unexpected argument {arg:?}: tenantgate takes only flags (see -help)"
        )),
    }
}

fn unknown_flag(name: &str) -> FlagError {
    match FLAGS
        .iter()
        .find(|spec| spec.name.eq_ignore_ascii_case(name))
    {
        Some(spec) => FlagError(format!(
            "unknown flag -{name}; did you mean -{}?",
            spec.name
        )),
        None => FlagError(format!("unknown flag -{name}")),
    }
}

impl Given {
    fn push(&mut self, name: &'static str, text: String, env_var: Option<String>) {
        self.values
            .entry(name)
            .or_default()
            .push(Value { text, env_var });
    }

    fn values(&self, name: &str) -> &[Value] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }

    /// Fills every flag not given on the command line from `<prefix><name with . as _>`.
    fn add_env(&mut self, prefix: &str, env: &dyn Fn(&str) -> Option<String>) {
        for spec in FLAGS {
            if COMMAND_LINE_ONLY.contains(&spec.name) || self.values.contains_key(spec.name) {
                continue;
            }
            let var = format!("{prefix}{}", spec.name.replace('.', "_"));
            if let Some(text) = env(&var) {
                self.push(spec.name, text, Some(var));
            }
        }
    }

    /// The flag's value (the last one given, else its default) parsed by `parse`.
    fn get<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, FlagError> {
        let spec = known(name)?;
        match self.values(name).last() {
            Some(value) => {
                parse(&value.text).map_err(|why| invalid(spec, &value.text, value, &why))
            }
            None => parse(spec.default).map_err(|why| {
                FlagError(format!(
                    "internal error: invalid default {:?} for flag -{}: {why}",
                    spec.default, spec.name
                ))
            }),
        }
    }

    /// Like [`Given::get`], with an empty value meaning "not set" (Go's zero value).
    fn get_opt<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, FlagError> {
        self.get(name, |text| {
            if text.is_empty() {
                Ok(None)
            } else {
                parse(text).map(Some)
            }
        })
    }

    /// Every comma-separated item of every value given, each parsed by `parse`; empty items are skipped.
    fn get_list<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, FlagError> {
        let spec = known(name)?;
        let mut items = Vec::new();
        for value in self.values(name) {
            for item in value.text.split(',').filter(|item| !item.is_empty()) {
                items.push(parse(item).map_err(|why| invalid(spec, item, value, &why))?);
            }
        }
        Ok(items)
    }

    fn is_given(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

fn invalid(spec: &FlagSpec, text: &str, value: &Value, why: &str) -> FlagError {
    let source = match &value.env_var {
        Some(var) => format!(" (from environment variable {var})"),
        None => String::new(),
    };
    FlagError(format!(
        "invalid value {text:?} for flag -{}{source}: {why}",
        spec.name
    ))
}

fn build_config(given: &Given) -> Result<Config, FlagError> {
    Ok(Config {
        listen_addr: given.get("httpListenAddr", parse_listen_addr)?,
        enable_auth: given.get("enable.auth", parse_bool)?,
        cluster_mode: given.get("clusterMode", parse_bool)?,
        read_url: given.get_opt("read.url", parse_backend_url)?,
        write_url: given.get_opt("write.url", parse_backend_url)?,
        auth_header: given.get("auth.httpHeader", parse_header_name)?,
        auth_header_allow_without_prefix: given
            .get("auth.httpHeaderAllowWithoutPrefix", parse_bool)?,
        public_keys: given.get_list("auth.publicKeys", parse_string)?,
        public_key_files: given.get_list("auth.publicKeyFiles", parse_existing_file)?,
        jwks_endpoints: given.get_list("auth.jwksEndpoints", parse_http_url)?,
        oidc_discovery_endpoints: given.get_list("auth.oidcDiscoveryEndpoints", parse_http_url)?,
        keys_refresh_interval: given.get("auth.keysRefreshInterval", parse_positive_duration)?,
        min_refresh_interval: given.get("auth.minRefreshInterval", parse_positive_duration)?,
        auth_tls_ca_file: given.get_opt("auth.tlsCAFile", parse_existing_file)?,
        issuers: given.get_list("auth.issuers", parse_string)?,
        audiences: given.get_list("auth.audiences", parse_string)?,
        clock_skew: given.get("auth.clockSkew", parse_duration)?,
        hmac_secret_files: given.get_list("auth.hmacSecretFiles", parse_existing_file)?,
        token_cache_size: given.get("auth.tokenCacheSize", parse_usize)?,
        log_invalid_auth_tokens: given.get("logInvalidAuthTokens", parse_bool)?,
        logger_format: given.get("loggerFormat", parse_log_format)?,
        logger_level: given.get("loggerLevel", parse_log_level)?,
        max_graceful_shutdown: given.get("http.maxGracefulShutdownDuration", parse_duration)?,
        shutdown_delay: given.get("http.shutdownDelay", parse_duration)?,
        workers: given.get("http.workers", parse_workers)?,
        idle_conn_timeout: given.get("http.idleConnTimeout", parse_duration)?,
        header_read_timeout: given.get("http.headerReadTimeout", parse_duration)?,
        max_request_body_size: given.get("maxRequestBodySize", parse_size)?,
        max_form_body_size: given.get("maxFormBodySize", parse_size)?,
        upstream_timeout: given.get("upstream.timeout", parse_duration)?,
        max_concurrent_requests: given.get("maxConcurrentRequests", parse_usize)?,
        max_concurrent_requests_per_tenant: given
            .get("maxConcurrentRequestsPerTenant", parse_usize)?,
        tls: given.get("tls", parse_bool)?,
        tls_cert_file: given.get_opt("tlsCertFile", parse_existing_file)?,
        tls_key_file: given.get_opt("tlsKeyFile", parse_existing_file)?,
        read_tls: upstream_tls(given, "read")?,
        write_tls: upstream_tls(given, "write")?,
        metrics_auth_key: given.get_opt("metricsAuthKey", parse_string)?,
        datasource_url: given.get_opt("datasource.url", parse_http_url)?,
        enable_rate_limit: given.get("enable.rateLimit", parse_bool)?,
        ratelimit_config: given.get_opt("ratelimit.config", |text| Ok(PathBuf::from(text)))?,
        licence_flags_seen: licence_flags_seen(given)?,
    })
}

/// `-read.tls*` or `-write.tls*`, by `side`.
fn upstream_tls(given: &Given, side: &str) -> Result<UpstreamTls, FlagError> {
    Ok(UpstreamTls {
        ca_file: given.get_opt(&format!("{side}.tlsCAFile"), parse_existing_file)?,
        cert_file: given.get_opt(&format!("{side}.tlsCertFile"), parse_existing_file)?,
        key_file: given.get_opt(&format!("{side}.tlsKeyFile"), parse_existing_file)?,
        server_name: given.get_opt(&format!("{side}.tlsServerName"), parse_string)?,
        insecure_skip_verify: given.get(&format!("{side}.tlsInsecureSkipVerify"), parse_bool)?,
    })
}

/// The licence flags given; their values are still checked (as vmgateway would) and then ignored.
fn licence_flags_seen(given: &Given) -> Result<Vec<String>, FlagError> {
    let mut seen = Vec::new();
    for &name in LICENCE_FLAGS.iter().filter(|name| given.is_given(name)) {
        match known(name)?.kind {
            Kind::Bool => given.get(name, parse_bool).map(drop)?,
            Kind::Duration => given.get(name, parse_duration).map(drop)?,
            _ => {}
        }
        seen.push(name.to_string());
    }
    Ok(seen)
}

fn check_cross_flags(config: &Config) -> Result<(), FlagError> {
    if config.tls {
        let missing: Vec<&str> = [
            ("-tlsCertFile", config.tls_cert_file.is_none()),
            ("-tlsKeyFile", config.tls_key_file.is_none()),
        ]
        .iter()
        .filter_map(|&(name, missing)| missing.then_some(name))
        .collect();
        if !missing.is_empty() {
            return Err(FlagError(format!(
                "-tls requires -tlsCertFile and -tlsKeyFile; missing {}",
                missing.join(" and ")
            )));
        }
    }
    for (side, tls) in [("read", &config.read_tls), ("write", &config.write_tls)] {
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(FlagError(format!(
                "-{side}.tlsCertFile and -{side}.tlsKeyFile must be given together"
            )));
        }
    }
    if config.enable_rate_limit {
        return Err(FlagError(
            "-enable.rateLimit is not supported by tenantgate yet; use -maxConcurrentRequestsPerTenant"
                .to_string(),
        ));
    }
    if config.read_url.is_none() && config.write_url.is_none() {
        return Err(FlagError(
            "tenantgate needs -read.url and/or -write.url".to_string(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Value parsers: text → typed value, or a reason (the caller adds the flag name and value).
// ---------------------------------------------------------------------------------------------

fn parse_string(text: &str) -> Result<String, String> {
    Ok(text.to_string())
}

/// Go's `strconv.ParseBool`.
fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err("expected true or false".to_string()),
    }
}

fn parse_usize(text: &str) -> Result<usize, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a non-negative integer".to_string());
    }
    text.parse().map_err(|_| "integer out of range".to_string())
}

/// A thread count: more than 1024 is a typo, and would fail at start-up anyway.
fn parse_workers(text: &str) -> Result<usize, String> {
    match parse_usize(text)? {
        n if n > 1024 => Err("at most 1024 threads".to_string()),
        n => Ok(n),
    }
}

/// Go's `time.ParseDuration` ("1h30m", "1.5s", "500ms", "0"), without negative values.
fn parse_duration(text: &str) -> Result<Duration, String> {
    const BAD: &str = "expected a duration such as 500ms, 7s, 5m or 1h30m";
    let (negative, mut rest) = match (text.strip_prefix('-'), text.strip_prefix('+')) {
        (Some(rest), _) => (true, rest),
        (_, Some(rest)) => (false, rest),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(BAD.to_string());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (nanos, after) = duration_component(rest).ok_or_else(|| BAD.to_string())?;
        total = total
            .checked_add(nanos)
            .ok_or_else(|| "duration out of range".to_string())?;
        rest = after;
    }
    if negative && total > 0 {
        return Err("duration must not be negative".to_string());
    }
    u64::try_from(total)
        .map(Duration::from_nanos)
        .map_err(|_| "duration out of range".to_string())
}

/// One `<number><unit>` component of a duration: its nanoseconds and the rest of the text.
fn duration_component(text: &str) -> Option<(u128, &str)> {
    let int_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (int_digits, rest) = text.split_at(int_end);
    let (frac_digits, rest) = match rest.strip_prefix('.') {
        Some(after_dot) => {
            let end = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            after_dot.split_at(end)
        }
        None => ("", rest),
    };
    if int_digits.is_empty() && frac_digits.is_empty() {
        return None;
    }
    let unit_end = rest
        .find(|c: char| c.is_ascii_digit() || c == '.')
        .unwrap_or(rest.len());
    let (unit, rest) = rest.split_at(unit_end);
    let unit_nanos: u128 = match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    let mut nanos = decimal(int_digits)?.checked_mul(unit_nanos)?;
    // Digits past the 19th cannot change whole nanoseconds of any unit here; Go truncates too.
    let frac_digits = frac_digits.get(..frac_digits.len().min(19))?;
    if !frac_digits.is_empty() {
        let scale = 10u128.checked_pow(u32::try_from(frac_digits.len()).ok()?)?;
        nanos = nanos.checked_add(decimal(frac_digits)?.checked_mul(unit_nanos)? / scale)?;
    }
    Some((nanos, rest))
}

/// ASCII digits (possibly none) as a number; `None` on overflow or a non-digit.
fn decimal(digits: &str) -> Option<u128> {
    digits.chars().try_fold(0u128, |acc, c| {
        acc.checked_mul(10)?
            .checked_add(u128::from(c.to_digit(10)?))
    })
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be greater than zero".to_string()),
        duration => Ok(duration),
    }
}

/// VictoriaMetrics `flagutil.Bytes`: a number of bytes with an optional suffix KB, MB, GB, TB
/// (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), in any letter case like
/// VictoriaMetrics; fractions like 1.5MB are allowed.
fn parse_size(text: &str) -> Result<u64, String> {
    const BAD: &str = "expected a size such as 1048576, 512KB, 64MiB or 1GB";
    const SUFFIXES: &[(&str, u64)] = &[
        ("KIB", 1 << 10),
        ("MIB", 1 << 20),
        ("GIB", 1 << 30),
        ("TIB", 1 << 40),
        ("KB", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("TB", 1_000_000_000_000),
    ];
    let upper = text.to_ascii_uppercase();
    let (number, multiplier) = SUFFIXES
        .iter()
        .find_map(|&(suffix, multiplier)| {
            upper
                .strip_suffix(suffix)
                .map(|number| (number, multiplier))
        })
        .unwrap_or((upper.as_str(), 1));
    if number.is_empty() || number.starts_with('-') {
        return Err(BAD.to_string());
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| "size out of range".to_string());
    }
    let value = number.parse::<f64>().map_err(|_| BAD.to_string())?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 {
        return Err(BAD.to_string());
    }
    if bytes >= u64::MAX as f64 {
        return Err("size out of range".to_string());
    }
    Ok(bytes as u64) // Truncates fractions of a byte, like VictoriaMetrics.
}

/// `host:port`, where host is an IP address (IPv6 in brackets), `localhost`, or empty for all
/// interfaces. Host names are refused: a listener should not depend on DNS at start-up.
fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port, e.g. :8431 or 127.0.0.1:8431".to_string())?;
    let port = parse_port(port)?;
    let ip: IpAddr = if host.is_empty() {
        Ipv4Addr::UNSPECIFIED.into()
    } else if host.eq_ignore_ascii_case("localhost") {
        Ipv4Addr::LOCALHOST.into()
    } else if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("invalid IPv6 address {inner:?}"))?
            .into()
    } else {
        host.parse::<Ipv4Addr>().map_err(|_| {
            format!("host {host:?} must be an IP address (IPv6 in brackets), localhost, or empty for all interfaces")
        })?
        .into()
    };
    Ok(SocketAddr::new(ip, port))
}

/// A TCP port: decimal digits only (no sign), at most 65535.
fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid port {text:?}"));
    }
    text.parse()
        .map_err(|_| format!("port {text} out of range"))
}

/// An absolute http(s) URL with a host; the scheme is stored lowercase.
fn parse_http_url(text: &str) -> Result<String, String> {
    const MISSING_SCHEME: &str = "missing scheme http:// or https://";
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| MISSING_SCHEME.to_string())?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("unsupported scheme {scheme:?}; {MISSING_SCHEME}"));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("URL must not contain spaces or control characters".to_string());
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| "unterminated [ in host".to_string())?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or("invalid host")?)),
            }
        }
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err("missing host".to_string());
    }
    if let Some(port) = port {
        parse_port(port)?;
    }
    Ok(format!("{scheme}://{rest}"))
}

/// A backend URL: a request path is appended to it, so no query or fragment, and no trailing slash.
fn parse_backend_url(text: &str) -> Result<String, String> {
    let url = parse_http_url(text)?;
    if url.contains(['?', '#']) {
        return Err("a backend URL must not have a query or fragment".to_string());
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// An HTTP header name (RFC 9110 token), stored lowercase.
fn parse_header_name(text: &str) -> Result<String, String> {
    let is_token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if text.is_empty() || !text.bytes().all(is_token_char) {
        return Err("not a valid HTTP header name".to_string());
    }
    Ok(text.to_ascii_lowercase())
}

/// A path that exists and is a regular file (following symlinks); its contents are not read here.
fn parse_existing_file(text: &str) -> Result<PathBuf, String> {
    match std::fs::metadata(text) {
        Ok(meta) if meta.is_file() => Ok(PathBuf::from(text)),
        Ok(_) => Err("not a regular file".to_string()),
        Err(err) => Err(format!("cannot access file: {err}")),
    }
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text.to_ascii_lowercase().as_str() {
        "default" => Ok(LogFormat::Default),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected default or json".to_string()),
    }
}

fn parse_log_level(text: &str) -> Result<LogLevel, String> {
    match text.to_ascii_uppercase().as_str() {
        "INFO" => Ok(LogLevel::Info),
        "WARN" => Ok(LogLevel::Warn),
        "ERROR" => Ok(LogLevel::Error),
        "FATAL" => Ok(LogLevel::Fatal),
        "PANIC" => Ok(LogLevel::Panic),
        _ => Err("expected INFO, WARN, ERROR, FATAL or PANIC".to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Help.
// ---------------------------------------------------------------------------------------------

/// Usage text in the format of Go's `flag.PrintDefaults`, as VictoriaMetrics components print it:
/// every flag, sorted by name, with its type and non-zero default.
pub fn help_text() -> String {
    let mut specs: Vec<&FlagSpec> = FLAGS.iter().collect();
    specs.sort_by_key(|spec| spec.name);
    let mut out = String::from("Usage of tenantgate:\n");
    for spec in specs {
        out.push_str("  -");
        out.push_str(spec.name);
        if let Some(type_name) = spec.kind.type_name() {
            out.push(' ');
            out.push_str(type_name);
        }
        out.push_str("\n    \t");
        out.push_str(&usage(spec).replace('\n', "\n    \t"));
        out.push('\n');
    }
    out
}

fn usage(spec: &FlagSpec) -> String {
    let mut usage = spec.help.to_string();
    match spec.kind {
        Kind::Array => usage.push_str(
            "\nSupports an array of values separated by comma or specified via multiple flags.",
        ),
        Kind::Size => usage.push_str(
            "\nSupports the following optional suffixes for size values: KB, MB, GB, TB, KiB, MiB, GiB, TiB",
        ),
        _ => {}
    }
    if !matches!(spec.default, "" | "false" | "0" | "0s") {
        // Go quotes string defaults only. Writing to a String cannot fail.
        let _ = if spec.kind == Kind::String {
            write!(usage, " (default {:?})", spec.default)
        } else {
            write!(usage, " (default {})", spec.default)
        };
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const CLUSTER_LINE: &str = "-licenseFile=/opt/vm-license.key -license.forceOffline=true -enable.auth=true -clusterMode=true
-write.url=http://vminsert:8480 -read.url=http://vmselect:8481 -httpListenAddr=0.0.0.0:8431
-auth.oidcDiscoveryEndpoints=http://keycloak:8080/realms/master/.well-known/openid-configuration";

    const SINGLE_LINE: &str = "-licenseFile=/opt/vm-license.key -enable.auth=true -write.url=http://vmsingle:8429 -read.url=http://vmsingle:8429
-httpListenAddr=0.0.0.0:8431 -auth.oidcDiscoveryEndpoints=http://keycloak:8080/realms/master/.well-known/openid-configuration";

    const OIDC: &str = "http://keycloak:8080/realms/master/.well-known/openid-configuration";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn try_parse(line: &str) -> Result<Parsed, FlagError> {
        parse(words(line), &no_env)
    }

    fn run(line: &str) -> Config {
        match try_parse(line) {
            Ok(Parsed::Run(config)) => config,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    fn err(line: &str) -> String {
        match try_parse(line) {
            Err(FlagError(message)) => message,
            other => panic!("{line:?} should fail, gave {other:?}"),
        }
    }

    /// A file that exists for the test's duration.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(tag: &str) -> TempFile {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("tenantgate-flags-{}-{n}-{tag}", std::process::id()));
            std::fs::write(&path, "test").unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn documented_cluster_command_line() {
        let c = run(CLUSTER_LINE);
        assert!(c.enable_auth);
        assert!(c.cluster_mode);
        assert_eq!(c.write_url.as_deref(), Some("http://vminsert:8480"));
        assert_eq!(c.read_url.as_deref(), Some("http://vmselect:8481"));
        assert_eq!(c.listen_addr, "0.0.0.0:8431".parse().unwrap());
        assert_eq!(c.oidc_discovery_endpoints, vec![OIDC.to_string()]);
        assert_eq!(
            c.licence_flags_seen,
            vec!["licenseFile", "license.forceOffline"]
        );
        assert!(c.has_key_sources());
    }

    #[test]
    fn documented_single_node_command_line() {
        let c = run(SINGLE_LINE);
        assert!(c.enable_auth);
        assert!(!c.cluster_mode);
        assert_eq!(c.write_url.as_deref(), Some("http://vmsingle:8429"));
        assert_eq!(c.read_url.as_deref(), Some("http://vmsingle:8429"));
        assert_eq!(c.listen_addr, "0.0.0.0:8431".parse().unwrap());
        assert_eq!(c.oidc_discovery_endpoints, vec![OIDC.to_string()]);
        assert_eq!(c.licence_flags_seen, vec!["licenseFile"]);
    }

    #[test]
    fn defaults() {
        let c = run("-read.url=http://vm:8428");
        assert_eq!(c.listen_addr, "0.0.0.0:8431".parse().unwrap());
        assert!(!c.enable_auth && !c.cluster_mode && !c.tls && !c.enable_rate_limit);
        assert_eq!(c.write_url, None);
        assert_eq!(c.auth_header, "authorization");
        assert!(!c.auth_header_allow_without_prefix);
        assert_eq!(c.keys_refresh_interval, Duration::from_secs(300));
        assert_eq!(c.min_refresh_interval, Duration::from_secs(10));
        assert_eq!(c.clock_skew, Duration::ZERO);
        assert_eq!(c.token_cache_size, 100_000);
        assert_eq!(c.logger_format, LogFormat::Default);
        assert_eq!(c.logger_level, LogLevel::Info);
        assert_eq!(c.max_graceful_shutdown, Duration::from_secs(7));
        assert_eq!(c.shutdown_delay, Duration::ZERO);
        assert_eq!(c.idle_conn_timeout, Duration::from_secs(60));
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.max_request_body_size, 64 << 20);
        assert_eq!(c.max_form_body_size, 1 << 20);
        assert_eq!(c.upstream_timeout, Duration::from_secs(60));
        assert_eq!(c.max_concurrent_requests, 0);
        assert_eq!(c.max_concurrent_requests_per_tenant, 0);
        assert_eq!(c.read_tls, UpstreamTls::default());
        assert_eq!(c.write_tls, UpstreamTls::default());
        assert_eq!(c.metrics_auth_key, None);
        assert!(c.licence_flags_seen.is_empty());
        assert!(!c.has_key_sources());
    }

    #[test]
    fn every_default_parses_as_its_kind() {
        for spec in FLAGS.iter().filter(|spec| !spec.default.is_empty()) {
            let ok = match spec.kind {
                Kind::Bool => parse_bool(spec.default).is_ok(),
                Kind::Int => parse_usize(spec.default).is_ok(),
                Kind::Duration => parse_duration(spec.default).is_ok(),
                Kind::Size => parse_size(spec.default).is_ok(),
                Kind::String => true,
                Kind::Array => false, // array defaults must be empty
            };
            assert!(ok, "bad default for -{}", spec.name);
        }
    }

    #[test]
    fn flag_names_are_unique_and_cover_licence_and_command_line_only_lists() {
        let mut names: Vec<_> = FLAGS.iter().map(|spec| spec.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FLAGS.len());
        for name in LICENCE_FLAGS.iter().chain(COMMAND_LINE_ONLY) {
            assert!(lookup(name).is_some(), "{name}");
        }
    }

    #[test]
    fn value_forms_separate_double_dash_and_last_wins() {
        let c = run("-read.url http://a:1 --write.url=http://b:2 --loggerLevel warn");
        assert_eq!(c.read_url.as_deref(), Some("http://a:1"));
        assert_eq!(c.write_url.as_deref(), Some("http://b:2"));
        assert_eq!(c.logger_level, LogLevel::Warn);
        let c = run("-read.url=http://a:1 -read.url=http://c:3");
        assert_eq!(c.read_url.as_deref(), Some("http://c:3"));
    }

    #[test]
    fn value_may_contain_equals_sign() {
        let c = run("-read.url=http://a:1 -metricsAuthKey=a=b");
        assert_eq!(c.metrics_auth_key.as_deref(), Some("a=b"));
    }

    #[test]
    fn booleans() {
        let c =
            run("-read.url=http://a -enable.auth --clusterMode -tls=false -logInvalidAuthTokens=1");
        assert!(c.enable_auth && c.cluster_mode && !c.tls && c.log_invalid_auth_tokens);
        let c = run("-read.url=http://a -enable.auth -enable.auth=false -clusterMode=T");
        assert!(!c.enable_auth && c.cluster_mode);
        let message = err("-read.url=http://a -enable.auth=yes");
        assert!(
            message.contains("-enable.auth") && message.contains("\"yes\""),
            "{message}"
        );
    }

    #[test]
    fn bool_flag_does_not_consume_next_argument() {
        // The bare bool is true, and the following flag is still parsed as a flag.
        let c = run("-enable.auth -read.url=http://a");
        assert!(c.enable_auth);
        let message = err("-read.url=http://a -enable.auth false");
        assert!(
            message.contains("unexpected argument \"false\""),
            "{message}"
        );
        assert!(message.contains("-enable.auth=false"), "{message}");
    }

    #[test]
    fn arrays_split_on_commas_and_accumulate_repeats() {
        let (a, b, c) = (
            TempFile::new("a.pem"),
            TempFile::new("b.pem"),
            TempFile::new("c.pem"),
        );
        let line = format!(
            "-read.url=http://a -auth.publicKeyFiles={},{} -auth.publicKeyFiles={} -auth.issuers=x,,y -auth.audiences z",
            a.path(),
            b.path(),
            c.path()
        );
        let config = run(&line);
        assert_eq!(
            config.public_key_files,
            vec![a.0.clone(), b.0.clone(), c.0.clone()]
        );
        assert_eq!(config.issuers, vec!["x", "y"]);
        assert_eq!(config.audiences, vec!["z"]);
        assert!(config.has_key_sources());
    }

    #[test]
    fn inline_pem_public_keys() {
        let pem1 = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE+/abc=\n-----END PUBLIC KEY-----\n";
        let pem2 = pem1.replace("abc", "xyz");
        let args = vec![
            "-read.url=http://a".to_string(),
            format!("-auth.publicKeys={pem1},{pem2}"),
            "-auth.publicKeys".to_string(),
            pem1.to_string(),
        ];
        let Ok(Parsed::Run(c)) = parse(args, &no_env) else {
            panic!("parse failed");
        };
        assert_eq!(
            c.public_keys,
            vec![pem1.to_string(), pem2, pem1.to_string()]
        );
        assert!(c.has_key_sources());
    }

    #[test]
    fn url_arrays_are_validated() {
        let c = run("-read.url=http://a -auth.jwksEndpoints=https://idp/jwks,http://idp2:80/keys");
        assert_eq!(
            c.jwks_endpoints,
            vec!["https://idp/jwks", "http://idp2:80/keys"]
        );
        let message = err("-read.url=http://a -auth.jwksEndpoints=https://idp/jwks,idp2/keys");
        assert_eq!(
            message,
            "invalid value \"idp2/keys\" for flag -auth.jwksEndpoints: missing scheme http:// or https://"
        );
    }

    fn env_from(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    #[test]
    fn env_flags_with_prefix_and_command_line_priority() {
        let env = env_from(&[
            ("TG_read_url", "http://from-env:8481"),
            ("TG_write_url", "http://from-env:8480"),
            ("TG_clusterMode", "true"),
            ("TG_auth_issuers", "a,b"),
            ("TG_auth_clockSkew", "30s"),
            ("TG_version", "true"),
            ("read_url", "http://unprefixed:1"),
        ]);
        let args = words("-envflag.enable -envflag.prefix=TG_ -write.url=http://cli:8480");
        let Ok(Parsed::Run(c)) = parse(args, &env) else {
            panic!("parse failed");
        };
        assert_eq!(c.read_url.as_deref(), Some("http://from-env:8481"));
        assert_eq!(c.write_url.as_deref(), Some("http://cli:8480"));
        assert!(c.cluster_mode);
        assert_eq!(c.issuers, vec!["a", "b"]);
        assert_eq!(c.clock_skew, Duration::from_secs(30));
    }

    #[test]
    fn env_is_ignored_without_envflag_enable() {
        let env = env_from(&[
            ("read_url", "http://from-env:8481"),
            ("clusterMode", "true"),
        ]);
        let Ok(Parsed::Run(c)) = parse(words("-write.url=http://w"), &env) else {
            panic!("parse failed");
        };
        assert_eq!(c.read_url, None);
        assert!(!c.cluster_mode);
        let Ok(Parsed::Run(c)) = parse(words("-write.url=http://w -envflag.enable"), &env) else {
            panic!("parse failed");
        };
        assert_eq!(c.read_url.as_deref(), Some("http://from-env:8481"));
        assert!(c.cluster_mode);
    }

    #[test]
    fn env_values_are_validated_and_errors_name_the_variable() {
        let env = env_from(&[("read_url", "vmselect:8481")]);
        let Err(FlagError(message)) = parse(words("-envflag.enable"), &env) else {
            panic!("should fail");
        };
        assert_eq!(
            message,
            "invalid value \"vmselect:8481\" for flag -read.url (from environment variable read_url): missing scheme http:// or https://"
        );
    }

    #[test]
    fn unknown_flag_is_named() {
        assert_eq!(err("-read.url=http://a -foo"), "unknown flag -foo");
        assert_eq!(err("--foo=bar"), "unknown flag -foo");
        assert_eq!(
            err("-read.URL=http://a"),
            "unknown flag -read.URL; did you mean -read.url?"
        );
    }

    #[test]
    fn bad_urls() {
        assert_eq!(
            err("-read.url=abc"),
            "invalid value \"abc\" for flag -read.url: missing scheme http:// or https://"
        );
        for (url, reason) in [
            ("ftp://x", "unsupported scheme"),
            ("http://", "missing host"),
            ("http:///path", "missing host"),
            ("http://:8080", "missing host"),
            ("http://user@", "missing host"),
            ("http://h:port", "invalid port"),
            ("http://h:99999", "out of range"),
            ("http://h:/", "invalid port"),
            ("http://[::1", "unterminated"),
            ("http://h/?a=b", "query"),
            ("http://h/x#f", "fragment"),
            ("http://h/a\tb", "spaces"),
        ] {
            let Err(FlagError(message)) = parse(vec![format!("-write.url={url}")], &no_env) else {
                panic!("{url:?} should be refused");
            };
            assert!(
                message.starts_with("invalid value ") && message.contains("for flag -write.url: "),
                "{message}"
            );
            assert!(message.contains(reason), "{url}: {message}");
        }
    }

    #[test]
    fn good_urls_are_normalised() {
        let c = run("-read.url=HTTPS://vm.example:443/base// -write.url=http://[::1]:8480/");
        assert_eq!(c.read_url.as_deref(), Some("https://vm.example:443/base"));
        assert_eq!(c.write_url.as_deref(), Some("http://[::1]:8480"));
        let c = run("-read.url=http://user:pass@vm:8428");
        assert_eq!(c.read_url.as_deref(), Some("http://user:pass@vm:8428"));
    }

    #[test]
    fn missing_files_are_refused_naming_flag_and_path() {
        for flag in [
            "auth.publicKeyFiles",
            "auth.hmacSecretFiles",
            "auth.tlsCAFile",
            "tlsCertFile",
            "tlsKeyFile",
            "read.tlsCAFile",
            "write.tlsKeyFile",
        ] {
            let message = err(&format!("-read.url=http://a -{flag}=/nonexistent/key.pem"));
            assert!(
                message.starts_with(&format!(
                    "invalid value \"/nonexistent/key.pem\" for flag -{flag}: cannot access file"
                )),
                "{message}"
            );
        }
        let dir = std::env::temp_dir();
        let message = err(&format!(
            "-read.url=http://a -auth.publicKeyFiles={}",
            dir.display()
        ));
        assert!(message.contains("not a regular file"), "{message}");
    }

    #[test]
    fn durations() {
        for (text, expected) in [
            ("7s", Duration::from_secs(7)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("+2s", Duration::from_secs(2)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("5m0s", Duration::from_secs(300)),
            ("1us", Duration::from_micros(1)),
            ("1µs", Duration::from_micros(1)),
            ("1μs", Duration::from_micros(1)),
            ("3ns", Duration::from_nanos(3)),
            ("1.0000000000000000000001h", Duration::from_secs(3600)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for text in [
            "",
            "abc",
            "5",
            "1x",
            "-1s",
            ".s",
            "s",
            "1s5",
            "1h 2m",
            "+",
            "-",
            "1..5s",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
        let c = run("-read.url=http://a -http.shutdownDelay=2s -auth.clockSkew 1m30s");
        assert_eq!(c.shutdown_delay, Duration::from_secs(2));
        assert_eq!(c.clock_skew, Duration::from_secs(90));
        assert_eq!(
            err("-read.url=http://a -upstream.timeout=10"),
            "invalid value \"10\" for flag -upstream.timeout: expected a duration such as 500ms, 7s, 5m or 1h30m"
        );
        let message = err("-read.url=http://a -auth.keysRefreshInterval=0s");
        assert!(
            message.contains("-auth.keysRefreshInterval") && message.contains("greater than zero"),
            "{message}"
        );
        let c = run("-read.url=http://a -auth.minRefreshInterval=1500ms");
        assert_eq!(c.min_refresh_interval, Duration::from_millis(1500));
        let message = err("-read.url=http://a -auth.minRefreshInterval=0s");
        assert!(
            message.contains("-auth.minRefreshInterval") && message.contains("greater than zero"),
            "{message}"
        );
    }

    #[test]
    fn sizes() {
        for (text, expected) in [
            ("0", 0),
            ("1048576", 1_048_576),
            ("512KB", 512_000),
            ("64MiB", 64 << 20),
            ("64mib", 64 << 20),
            ("2GB", 2_000_000_000),
            ("1GiB", 1 << 30),
            ("1TiB", 1 << 40),
            ("1.5MB", 1_500_000),
            ("1.5KiB", 1536),
        ] {
            assert_eq!(parse_size(text), Ok(expected), "{text}");
        }
        for text in [
            "",
            "MB",
            "abc",
            "-1",
            "-1MB",
            "1XB",
            "1 MB",
            "inf",
            "NaN",
            "1e30TB",
            "99999999999999999999",
        ] {
            assert!(parse_size(text).is_err(), "{text:?}");
        }
        let c = run("-read.url=http://a -maxRequestBodySize=32MB -maxFormBodySize 4KiB");
        assert_eq!(
            (c.max_request_body_size, c.max_form_body_size),
            (32_000_000, 4096)
        );
        let message = err("-read.url=http://a -maxRequestBodySize=lots");
        assert!(
            message.starts_with("invalid value \"lots\" for flag -maxRequestBodySize: "),
            "{message}"
        );
    }

    #[test]
    fn integers() {
        let c = run("-read.url=http://a -maxConcurrentRequests=100 -maxConcurrentRequestsPerTenant 10 -auth.tokenCacheSize=0");
        assert_eq!(c.max_concurrent_requests, 100);
        assert_eq!(c.max_concurrent_requests_per_tenant, 10);
        assert_eq!(c.token_cache_size, 0);
        let message = err("-read.url=http://a -maxConcurrentRequests=-1");
        assert!(
            message.contains("-maxConcurrentRequests") && message.contains("non-negative"),
            "{message}"
        );
        assert!(
            err("-read.url=http://a -auth.tokenCacheSize=99999999999999999999999")
                .contains("out of range")
        );
        assert_eq!(run("-read.url=http://a").workers, 0);
        assert_eq!(run("-read.url=http://a -http.workers=1").workers, 1);
        assert!(err("-read.url=http://a -http.workers=5000").contains("at most 1024"));
    }

    #[test]
    fn positional_arguments_are_refused() {
        assert!(err("-read.url=http://a extra").starts_with("unexpected argument \"extra\""));
        assert!(err("-read.url=http://a -- -tls").starts_with("unexpected argument \"-tls\""));
        assert!(err("-").starts_with("unexpected argument \"-\""));
        // `--` alone just ends the flags.
        assert!(run("-read.url=http://a --").read_url.is_some());
    }

    #[test]
    fn bad_flag_syntax_and_missing_argument() {
        assert_eq!(err("---read.url=x"), "bad flag syntax: ---read.url=x");
        assert_eq!(err("-=x"), "bad flag syntax: -=x");
        assert_eq!(err("-read.url"), "flag needs an argument: -read.url");
    }

    #[test]
    fn help_and_version() {
        for line in [
            "-help",
            "-h",
            "--help",
            "-read.url=http://a -help extra",
            "-h=false",
        ] {
            match try_parse(line) {
                Ok(Parsed::Help(text)) => assert_eq!(text, help_text()),
                other => panic!("{line}: {other:?}"),
            }
        }
        // An unknown flag before -help is still reported, as in Go.
        assert_eq!(err("-foo -help"), "unknown flag -foo");
        assert!(matches!(try_parse("-version"), Ok(Parsed::Version)));
        assert!(matches!(try_parse("--version=true"), Ok(Parsed::Version)));
        assert!(matches!(
            try_parse("-version=false -read.url=http://a"),
            Ok(Parsed::Run(_))
        ));
    }

    #[test]
    fn help_text_lists_every_flag_sorted_in_go_format() {
        let text = help_text();
        assert!(text.starts_with("Usage of tenantgate:\n  -"));
        let names: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("  -"))
            .map(|line| line.split(' ').next().unwrap_or(line))
            .collect();
        let mut expected: Vec<&str> = FLAGS.iter().map(|spec| spec.name).collect();
        expected.sort_unstable();
        assert_eq!(names, expected);
        assert!(text.contains("  -auth.httpHeader string\n    \tHTTP header name to look for the JWT authorization token (default \"Authorization\")\n"));
        assert!(text.contains("  -enable.auth\n    \t"));
        assert!(text.contains("  -http.maxGracefulShutdownDuration duration\n    \t"));
        assert!(text.contains("(default 7s)\n"));
        assert!(text.contains("(default \":8431\")\n"));
        assert!(text.contains("  -auth.publicKeyFiles array\n    \t"));
        assert!(text.contains("\n    \tSupports an array of values separated by comma or specified via multiple flags.\n"));
        assert!(text.contains("(default 64MiB)\n"));
        assert!(
            !text.contains("(default false)")
                && !text.contains("(default 0s)")
                && !text.contains("(default \"\")")
        );
    }

    #[test]
    fn listen_addresses() {
        for (text, expected) in [
            (":8431", "0.0.0.0:8431"),
            ("0.0.0.0:8431", "0.0.0.0:8431"),
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("[::1]:8431", "[::1]:8431"),
            ("[::]:80", "[::]:80"),
            ("localhost:9000", "127.0.0.1:9000"),
        ] {
            assert_eq!(
                parse_listen_addr(text),
                Ok(expected.parse().unwrap()),
                "{text}"
            );
        }
        for text in [
            "",
            "8431",
            ":",
            ":http",
            ":+80",
            ":65536",
            "example.com:80",
            "::1:8431",
            "[::1]",
            "[x]:80",
            "1.2.3:80",
        ] {
            assert!(parse_listen_addr(text).is_err(), "{text:?}");
        }
        let message = err("-read.url=http://a -httpListenAddr=gateway:8431");
        assert!(
            message.starts_with(
                "invalid value \"gateway:8431\" for flag -httpListenAddr: host \"gateway\""
            ),
            "{message}"
        );
    }

    #[test]
    fn auth_header() {
        let c = run(
            "-read.url=http://a -auth.httpHeader=X-Access-Token -auth.httpHeaderAllowWithoutPrefix",
        );
        assert_eq!(c.auth_header, "x-access-token");
        assert!(c.auth_header_allow_without_prefix);
        let message = err("-read.url=http://a -auth.httpHeader=Bad:Header");
        assert!(
            message.contains("-auth.httpHeader")
                && message.contains("not a valid HTTP header name"),
            "{message}"
        );
        assert!(err("-read.url=http://a -auth.httpHeader=").contains("-auth.httpHeader"));
    }

    #[test]
    fn logger_flags() {
        let c = run("-read.url=http://a -loggerFormat=json -loggerLevel=error");
        assert_eq!(
            (c.logger_format, c.logger_level),
            (LogFormat::Json, LogLevel::Error)
        );
        let c = run("-read.url=http://a -loggerLevel=PANIC -loggerFormat=default");
        assert_eq!(
            (c.logger_format, c.logger_level),
            (LogFormat::Default, LogLevel::Panic)
        );
        assert!(err("-read.url=http://a -loggerFormat=xml").contains("-loggerFormat"));
        assert!(err("-read.url=http://a -loggerLevel=DEBUG").contains("-loggerLevel"));
    }

    #[test]
    fn tls_requires_cert_and_key() {
        assert_eq!(
            err("-read.url=http://a -tls"),
            "-tls requires -tlsCertFile and -tlsKeyFile; missing -tlsCertFile and -tlsKeyFile"
        );
        let cert = TempFile::new("cert.pem");
        let key = TempFile::new("key.pem");
        assert_eq!(
            err(&format!(
                "-read.url=http://a -tls -tlsCertFile={}",
                cert.path()
            )),
            "-tls requires -tlsCertFile and -tlsKeyFile; missing -tlsKeyFile"
        );
        let c = run(&format!(
            "-read.url=http://a -tls -tlsCertFile={} -tlsKeyFile={}",
            cert.path(),
            key.path()
        ));
        assert!(c.tls);
        assert_eq!(c.tls_cert_file.as_deref(), Some(cert.0.as_path()));
        assert_eq!(c.tls_key_file.as_deref(), Some(key.0.as_path()));
    }

    #[test]
    fn upstream_tls() {
        let (ca, cert, key) = (
            TempFile::new("ca"),
            TempFile::new("cert"),
            TempFile::new("key"),
        );
        let c = run(&format!(
            "-read.url=https://a -read.tlsCAFile={} -read.tlsCertFile={} -read.tlsKeyFile={} -read.tlsServerName=vm -write.url=https://b -write.tlsInsecureSkipVerify",
            ca.path(),
            cert.path(),
            key.path()
        ));
        assert_eq!(c.read_tls.ca_file.as_deref(), Some(ca.0.as_path()));
        assert_eq!(c.read_tls.cert_file.as_deref(), Some(cert.0.as_path()));
        assert_eq!(c.read_tls.key_file.as_deref(), Some(key.0.as_path()));
        assert_eq!(c.read_tls.server_name.as_deref(), Some("vm"));
        assert!(!c.read_tls.insecure_skip_verify);
        assert!(c.write_tls.insecure_skip_verify);
        assert_eq!(
            err(&format!(
                "-write.url=https://b -write.tlsCertFile={}",
                cert.path()
            )),
            "-write.tlsCertFile and -write.tlsKeyFile must be given together"
        );
    }

    #[test]
    fn rate_limit_is_refused_and_backends_are_required() {
        assert_eq!(
            err("-read.url=http://a -enable.rateLimit"),
            "-enable.rateLimit is not supported by tenantgate yet; use -maxConcurrentRequestsPerTenant"
        );
        let c = run("-read.url=http://a -enable.rateLimit=false -ratelimit.config=/etc/rl.yml -datasource.url=http://vm:8428");
        assert_eq!(c.ratelimit_config, Some(PathBuf::from("/etc/rl.yml")));
        assert_eq!(c.datasource_url.as_deref(), Some("http://vm:8428"));
        assert_eq!(err(""), "tenantgate needs -read.url and/or -write.url");
        assert_eq!(
            err("-read.url="),
            "tenantgate needs -read.url and/or -write.url"
        );
    }

    #[test]
    fn licence_flags_are_accepted_but_values_checked() {
        let c = run(
            "-read.url=http://a -license=abc -licenseFile.reloadInterval=1h -license.forceOffline",
        );
        assert_eq!(
            c.licence_flags_seen,
            vec![
                "license",
                "license.forceOffline",
                "licenseFile.reloadInterval"
            ]
        );
        assert!(err("-read.url=http://a -licenseFile.reloadInterval=soon")
            .contains("-licenseFile.reloadInterval"));
    }

    #[test]
    fn debug_redacts_metrics_auth_key() {
        let c = run("-read.url=http://a -metricsAuthKey=s3cret");
        assert_eq!(c.metrics_auth_key.as_deref(), Some("s3cret"));
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("<redacted>"),
            "{debug}"
        );
    }

    #[test]
    fn flag_error_displays_its_message() {
        let error = FlagError("unknown flag -foo".to_string());
        assert_eq!(error.to_string(), "unknown flag -foo");
        let _: &dyn std::error::Error = &error;
    }

    #[test]
    fn odd_input_never_panics() {
        let odd = [
            "",
            "-",
            "--",
            "---",
            "-=",
            "--=",
            "-=-",
            "=",
            "-é",
            "-read.url=é",
            "-read.url=http://é",
            "-read.url=http://[",
            "-read.url=http://[]",
            "-read.url=http://@",
            "-httpListenAddr=[",
            "-httpListenAddr=]:1",
            "-httpListenAddr=[::1]:",
            "-auth.clockSkew=µ",
            "-auth.clockSkew=1µ",
            "-auth.clockSkew=.",
            "-auth.clockSkew=1.µs",
            "-maxRequestBodySize=KiB",
            "-maxRequestBodySize=é",
            "-maxRequestBodySize=1.e",
            "-loggerLevel=ı",
            "-auth.httpHeader=é",
            "-envflag.enable",
            "-auth.publicKeyFiles=,,,",
            "-auth.publicKeyFiles=\u{0}",
        ];
        let env = |_: &str| Some("é\u{0}".to_string());
        for a in odd {
            for b in odd {
                let _ = parse(vec![a.to_string(), b.to_string()], &no_env);
                let _ = parse(vec![a.to_string(), b.to_string()], &env);
            }
        }
    }
}
