//! Flags of tenantgate's HTTP server: listeners (several, each with its own TLS, client certificates
//! and PROXY protocol, as VictoriaMetrics' per-listener arrays), Basic auth and the auth keys of
//! tenantgate's own endpoints, the path prefix, connection timeouts, and the headers every answer gets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::values::{
    parse_bool, parse_bool_item, parse_duration, parse_existing_file, parse_listen_addr,
    parse_secret, parse_string, parse_workers, per_listener, Secret,
};
use super::{flag, secret, FlagError, FlagSpec, Given, Kind};

pub(super) const FLAGS: &[FlagSpec] = &[
    flag("httpListenAddr", Kind::Array, ":8431", "TCP address to listen for incoming HTTP requests. An empty host means all interfaces, e.g. :8431. Several addresses make several listeners; -tls, -tlsCertFile, -tlsKeyFile, -tlsMinVersion, -mtls, -mtlsCAFile and -httpListenAddr.useProxyProtocol take one value per listener, in the same order (a single value applies to all)"),
    flag("httpListenAddr.useProxyProtocol", Kind::BoolArray, "", "Whether to expect the PROXY protocol (v1 or v2) header on connections to the corresponding -httpListenAddr, as sent by HAProxy, AWS NLB and others; the client address then comes from it (logs, audit log, X-Forwarded-For). Connections without the header are closed. See https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt"),
    flag("enableTCP6", Kind::Bool, "false", "Whether to listen on IPv6 too when -httpListenAddr has an empty host (e.g. :8431). Without it such listeners take IPv4 only, as in VictoriaMetrics; an IPv6 address such as [::1]:8431 is always accepted"),
    flag("tls", Kind::BoolArray, "", "Whether to enable TLS (aka HTTPS) for incoming requests on the corresponding -httpListenAddr. -tlsCertFile and -tlsKeyFile must be set if -tls is set"),
    flag("tlsCertFile", Kind::Array, "", "Path to file with TLS certificate for the corresponding -httpListenAddr if -tls is set. The file is re-read when it changes (checked every second) and on SIGHUP, so a renewed certificate needs no restart"),
    flag("tlsKeyFile", Kind::Array, "", "Path to file with TLS key for the corresponding -httpListenAddr if -tls is set. Re-read like -tlsCertFile"),
    flag("tlsMinVersion", Kind::Array, "", "Optional minimum TLS version to use for the corresponding -httpListenAddr if -tls is set. Supported values: TLS10, TLS11, TLS12, TLS13. tenantgate's TLS library offers TLS 1.2 and 1.3 only, so TLS10 and TLS11 mean TLS12"),
    flag("tlsCipherSuites", Kind::Array, "", "Optional list of TLS cipher suites for incoming requests over HTTPS if -tls is set, by their IANA names (e.g. TLS_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256). TLS 1.3 suites restrict TLS 1.3, the others TLS 1.2. Suites tenantgate does not implement (CBC, RC4, 3DES) are refused"),
    flag("mtls", Kind::BoolArray, "", "Whether to require valid client certificates for HTTPS requests to the corresponding -httpListenAddr. This flag works only if -tls flag is set"),
    flag("mtlsCAFile", Kind::Array, "", "Optional path to TLS Root CA for verifying client certificates at the corresponding -httpListenAddr when -mtls is enabled. By default the public certificate authorities are used"),
    flag("httpAuth.username", Kind::String, "", "Username for HTTP server's Basic Auth on every endpoint (proxied requests, /health, /metrics, /flags). The flag value can be read from the given file when using -httpAuth.username=file:///abs/path/to/file. With -enable.auth, the JWT must then come in another header: set -auth.httpHeader"),
    secret("httpAuth.password", Kind::String, "", "Password for HTTP server's Basic Auth. The authentication is disabled if -httpAuth.username is empty. The flag value can be read from the given file when using -httpAuth.password=file:///abs/path/to/file"),
    secret("metricsAuthKey", Kind::String, "", "Auth key for /metrics endpoint. It must be passed via authKey query arg. It overrides -httpAuth.*. The flag value can be read from the given file when using -metricsAuthKey=file:///abs/path/to/file"),
    secret("flagsAuthKey", Kind::String, "", "Auth key for /flags endpoint. It must be passed via authKey query arg. It overrides -httpAuth.*. The flag value can be read from the given file when using -flagsAuthKey=file:///abs/path/to/file"),
    secret("pprofAuthKey", Kind::String, "", "Auth key for /debug/pprof/* endpoints. It must be passed via authKey query arg. It overrides -httpAuth.*. tenantgate is not a Go program and has no profiles there: with a valid key they answer 404"),
    flag("http.pathPrefix", Kind::String, "", "An optional prefix to add to all the paths handled by http server, including /health, /metrics and /flags. For example, if -http.pathPrefix=/foo/bar is set, then all the http requests must be sent to /foo/bar/*; others get 404"),
    flag("http.connTimeout", Kind::Duration, "2m0s", "Incoming connections to -httpListenAddr are closed after the configured timeout (±10% jitter, after the request in progress). This may help evenly spreading load among a cluster of services behind TCP-level load balancer. Zero value disables closing of incoming connections"),
    flag("http.idleConnTimeout", Kind::Duration, "1m0s", "Timeout for incoming idle http connections"),
    flag("http.headerReadTimeout", Kind::Duration, "10s", "How long a client may take to send the request headers once it has started a request, against slow-loris clients"),
    flag("http.disableKeepAlive", Kind::Bool, "false", "Whether to disable HTTP keep-alive for incoming connections at -httpListenAddr"),
    flag("http.disableResponseCompression", Kind::Bool, "false", "Disable compression of HTTP responses to save CPU resources. tenantgate passes backends' answers through; with this flag it asks backends for uncompressed answers"),
    flag("http.disableCORS", Kind::Bool, "false", "Disable CORS for all origins (*): no Access-Control-Allow-Origin header is added to answers, and backends' CORS headers are removed"),
    flag("http.header.hsts", Kind::String, "", "Value for 'Strict-Transport-Security' header, recommended: 'max-age=31536000; includeSubDomains'"),
    flag("http.header.csp", Kind::String, "", "Value for 'Content-Security-Policy' header, recommended: \"default-src 'self'\""),
    flag("http.header.frameOptions", Kind::String, "", "Value for 'X-Frame-Options' header"),
    flag("http.header.disableServerHostname", Kind::Bool, "false", "Whether to disable the 'X-Server-Hostname' header in HTTP responses"),
    flag("http.maxGracefulShutdownDuration", Kind::Duration, "7s", "The maximum duration for a graceful shutdown of the HTTP server. A highly loaded server may require increased value for a graceful shutdown"),
    flag("http.shutdownDelay", Kind::Duration, "0s", "Delay before the HTTP server shutdown. During it, /health answers 503 so load balancers stop sending new requests"),
    flag("http.workers", Kind::Int, "0", "Threads serving requests. 0 means one per CPU available to the process"),
];

/// Everything about how tenantgate serves HTTP.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// One per `-httpListenAddr`.
    pub listeners: Vec<Listener>,
    /// `-tlsCipherSuites`: IANA names, already checked to be ones tenantgate implements. Empty: the
    /// TLS library's defaults.
    pub tls_cipher_suites: Vec<String>,
    /// `-httpAuth.*`: required on every endpoint when set.
    pub http_auth: Option<BasicAuth>,
    /// `-metricsAuthKey`: replaces `-httpAuth.*` for `/metrics`.
    pub metrics_auth_key: Option<Secret>,
    /// `-flagsAuthKey`: replaces `-httpAuth.*` for `/flags`.
    pub flags_auth_key: Option<Secret>,
    /// `-pprofAuthKey`: replaces `-httpAuth.*` for `/debug/pprof/`.
    pub pprof_auth_key: Option<Secret>,
    /// `-http.pathPrefix`, normalised to `""` or `/a/b` (leading slash, no trailing one).
    pub path_prefix: String,
    /// `-http.connTimeout`: connections are closed after about this long; zero means never.
    pub conn_timeout: Duration,
    /// `-http.idleConnTimeout`: an idle keep-alive client connection is closed after this.
    pub idle_conn_timeout: Duration,
    /// `-http.headerReadTimeout`: a started request's headers must arrive within this.
    pub header_read_timeout: Duration,
    /// `-http.disableKeepAlive`: one request per connection.
    pub disable_keep_alive: bool,
    /// `-http.disableResponseCompression`: ask backends for identity-encoded answers.
    pub disable_response_compression: bool,
    /// `-http.disableCORS`.
    pub disable_cors: bool,
    /// Headers added to every answer.
    pub headers: SecurityHeaders,
    /// `-http.maxGracefulShutdownDuration`.
    pub max_graceful_shutdown: Duration,
    /// `-http.shutdownDelay`.
    pub shutdown_delay: Duration,
    /// `-http.workers`: 0 means one per CPU.
    pub workers: usize,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Whether connections start with a PROXY protocol header naming the real client.
    pub proxy_protocol: bool,
    /// HTTPS settings, when `-tls` is set for this listener.
    pub tls: Option<ListenerTls>,
}

/// HTTPS on one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Certificate chain (PEM), re-read when it changes.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// Lowest TLS version offered.
    pub min_version: TlsVersion,
    /// `Some` with `-mtls`: client certificates are required, checked against this CA file (or the
    /// public authorities when `None` inside).
    pub client_ca: Option<Option<PathBuf>>,
}

/// A TLS protocol version (`-tlsMinVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2 (also what TLS10 and TLS11 become: the TLS library offers nothing older).
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// `-httpAuth.username` and `-httpAuth.password`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// The user name.
    pub username: Secret,
    /// The password (may be empty, as in VictoriaMetrics).
    pub password: Secret,
}

/// `-http.header.*`: headers every answer carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityHeaders {
    /// `Strict-Transport-Security`.
    pub hsts: Option<String>,
    /// `Content-Security-Policy`.
    pub csp: Option<String>,
    /// `X-Frame-Options`.
    pub frame_options: Option<String>,
    /// Whether to send `X-Server-Hostname` (VictoriaMetrics' default; off with
    /// `-http.header.disableServerHostname`).
    pub server_hostname: bool,
}

/// Cipher suites tenantgate's TLS library implements, by IANA name (what Go's `tls.CipherSuiteName`
/// prints and VictoriaMetrics accepts).
pub const CIPHER_SUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

pub(super) fn build(given: &Given) -> Result<ServerConfig, FlagError> {
    let tcp6 = given.get("enableTCP6", parse_bool)?;
    let addrs = given.get_list("httpListenAddr", |text| parse_listen_addr(text, tcp6))?;
    if addrs.is_empty() {
        return Err(FlagError(
            "-httpListenAddr must name at least one address".to_string(),
        ));
    }
    let proxy = given.get_positional("httpListenAddr.useProxyProtocol", parse_bool_item)?;
    let tls = given.get_positional("tls", parse_bool_item)?;
    let certs = given.get_positional("tlsCertFile", parse_optional_file)?;
    let keys = given.get_positional("tlsKeyFile", parse_optional_file)?;
    let min_versions = given.get_positional("tlsMinVersion", parse_tls_version)?;
    let mtls = given.get_positional("mtls", parse_bool_item)?;
    let cas = given.get_positional("mtlsCAFile", parse_optional_file)?;
    let several = addrs.len() > 1;
    let mut listeners = Vec::with_capacity(addrs.len());
    for (i, addr) in addrs.into_iter().enumerate() {
        let tls = if per_listener(&tls, i, false) {
            let which = if !several {
                String::new()
            } else {
                format!(" for -httpListenAddr={addr} (listener {})", i + 1)
            };
            let cert = per_listener(&certs, i, None);
            let key = per_listener(&keys, i, None);
            let (cert_file, key_file) = match (cert, key) {
                (Some(cert), Some(key)) => (cert, key),
                (cert, key) => {
                    let missing: Vec<&str> = [
                        ("-tlsCertFile", cert.is_none()),
                        ("-tlsKeyFile", key.is_none()),
                    ]
                    .iter()
                    .filter_map(|&(name, missing)| missing.then_some(name))
                    .collect();
                    return Err(FlagError(format!(
                        "-tls requires -tlsCertFile and -tlsKeyFile{which}; missing {}",
                        missing.join(" and ")
                    )));
                }
            };
            Some(ListenerTls {
                cert_file,
                key_file,
                min_version: per_listener(&min_versions, i, None).unwrap_or(TlsVersion::Tls12),
                client_ca: per_listener(&mtls, i, false).then(|| per_listener(&cas, i, None)),
            })
        } else {
            if per_listener(&mtls, i, false) {
                return Err(FlagError(format!(
                    "-mtls needs -tls for -httpListenAddr={addr}: client certificates are part of TLS"
                )));
            }
            None
        };
        listeners.push(Listener {
            addr,
            proxy_protocol: per_listener(&proxy, i, false),
            tls,
        });
    }
    let username = given.get_opt("httpAuth.username", parse_secret)?;
    let password = given.get_opt("httpAuth.password", parse_secret)?;
    let http_auth = match (username, password) {
        (Some(username), password) => Some(BasicAuth {
            username,
            password: password.unwrap_or(Secret::Inline(String::new())),
        }),
        // VictoriaMetrics: "the authentication is disabled if -httpAuth.username is empty".
        (None, _) => None,
    };
    Ok(ServerConfig {
        listeners,
        tls_cipher_suites: given.get_list("tlsCipherSuites", parse_cipher_suite)?,
        http_auth,
        metrics_auth_key: given.get_opt("metricsAuthKey", parse_secret)?,
        flags_auth_key: given.get_opt("flagsAuthKey", parse_secret)?,
        pprof_auth_key: given.get_opt("pprofAuthKey", parse_secret)?,
        path_prefix: given.get("http.pathPrefix", parse_path_prefix)?,
        conn_timeout: given.get("http.connTimeout", parse_duration)?,
        idle_conn_timeout: given.get("http.idleConnTimeout", parse_duration)?,
        header_read_timeout: given.get("http.headerReadTimeout", parse_duration)?,
        disable_keep_alive: given.get("http.disableKeepAlive", parse_bool)?,
        disable_response_compression: given.get("http.disableResponseCompression", parse_bool)?,
        disable_cors: given.get("http.disableCORS", parse_bool)?,
        headers: SecurityHeaders {
            hsts: given.get_opt("http.header.hsts", parse_header_value)?,
            csp: given.get_opt("http.header.csp", parse_header_value)?,
            frame_options: given.get_opt("http.header.frameOptions", parse_header_value)?,
            server_hostname: !given.get("http.header.disableServerHostname", parse_bool)?,
        },
        max_graceful_shutdown: given.get("http.maxGracefulShutdownDuration", parse_duration)?,
        shutdown_delay: given.get("http.shutdownDelay", parse_duration)?,
        workers: given.get("http.workers", parse_workers)?,
    })
}

/// A per-listener file: empty means "none for this listener".
fn parse_optional_file(text: &str) -> Result<Option<PathBuf>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    parse_existing_file(text).map(Some)
}

/// `TLS10` .. `TLS13` (any case); empty means the default, TLS 1.2.
fn parse_tls_version(text: &str) -> Result<Option<TlsVersion>, String> {
    match text.to_ascii_uppercase().as_str() {
        "" => Ok(None),
        "TLS10" | "TLS11" | "TLS12" => Ok(Some(TlsVersion::Tls12)),
        "TLS13" => Ok(Some(TlsVersion::Tls13)),
        _ => Err("expected TLS10, TLS11, TLS12 or TLS13".to_string()),
    }
}

fn parse_cipher_suite(text: &str) -> Result<String, String> {
    let name = text.trim();
    if CIPHER_SUITES.iter().any(|s| s.eq_ignore_ascii_case(name)) {
        return Ok(name.to_ascii_uppercase());
    }
    if name.starts_with("TLS_") {
        Err(format!(
            "{name} is not offered by tenantgate (only AEAD suites are: {})",
            CIPHER_SUITES.join(", ")
        ))
    } else {
        Err(format!(
            "unknown cipher suite; supported: {}",
            CIPHER_SUITES.join(", ")
        ))
    }
}

/// `""`, or a path that starts with `/` and does not end with one: `foo/` becomes `/foo`.
fn parse_path_prefix(text: &str) -> Result<String, String> {
    let trimmed = text.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if trimmed
        .bytes()
        .any(|b| b <= b' ' || b == b'?' || b == b'#' || b == b'%' || b >= 0x7f)
    {
        return Err("a path prefix may hold only visible ASCII without ?, # and %".to_string());
    }
    if trimmed.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("a path prefix may not contain . or .. segments".to_string());
    }
    Ok(if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    })
}

/// A header value tenantgate will send: visible ASCII and spaces only.
fn parse_header_value(text: &str) -> Result<String, String> {
    let value = parse_string(text)?;
    if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Err("header values may not contain control characters".to_string());
    }
    Ok(value)
}
