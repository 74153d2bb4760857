//! vmgateway's `-datasource.*` flags: the VictoriaMetrics (or Prometheus-compatible) server rate limiting
//! reads every replica's usage from, and how to reach it (auth, TLS, headers), with the meanings vmalert's
//! datasource client gives them.

use std::path::PathBuf;
use std::time::Duration;

use super::values::{
    parse_bool, parse_duration, parse_existing_file, parse_http_url, parse_i64, parse_secret,
    parse_string, parse_usize, Secret,
};
use super::{flag, secret, FlagError, FlagSpec, Given, Kind};
use crate::flags::UpstreamTls;

pub(super) const FLAGS: &[FlagSpec] = &[
    flag("datasource.url", Kind::String, "", "Datasource address supporting the Prometheus HTTP API (VictoriaMetrics single-node or vmselect's /select/<tenant>/prometheus) from which rate limiting reads usage. Replicas push their usage there with -pushmetrics.url"),
    flag("datasource.basicAuth.username", Kind::String, "", "Optional basic auth username for -datasource.url"),
    flag("datasource.basicAuth.usernameFile", Kind::String, "", "Optional path to basic auth username to use for -datasource.url"),
    secret("datasource.basicAuth.password", Kind::String, "", "Optional basic auth password for -datasource.url"),
    flag("datasource.basicAuth.passwordFile", Kind::String, "", "Optional path to basic auth password to use for -datasource.url"),
    secret("datasource.bearerToken", Kind::String, "", "Optional bearer auth token to use for -datasource.url"),
    flag("datasource.bearerTokenFile", Kind::String, "", "Optional path to bearer token file to use for -datasource.url. The file is re-read before every refresh"),
    flag("datasource.oauth2.clientID", Kind::String, "", "Optional OAuth2 clientID to use for -datasource.url"),
    secret("datasource.oauth2.clientSecret", Kind::String, "", "Optional OAuth2 clientSecret to use for -datasource.url"),
    flag("datasource.oauth2.clientSecretFile", Kind::String, "", "Optional OAuth2 clientSecretFile to use for -datasource.url"),
    flag("datasource.oauth2.tokenUrl", Kind::String, "", "Optional OAuth2 tokenURL to use for -datasource.url"),
    flag("datasource.oauth2.scopes", Kind::String, "", "Optional OAuth2 scopes to use for -datasource.url. Scopes must be delimited by ';'"),
    flag("datasource.oauth2.endpointParams", Kind::String, "", "Optional OAuth2 endpoint parameters to use for -datasource.url, as a JSON object, e.g. {\"audience\":\"vm\"}"),
    secret("datasource.headers", Kind::String, "", "Optional HTTP extraHeaders to send with each request to the corresponding -datasource.url. For example, -datasource.headers='My-Auth:foobar' would send 'My-Auth: foobar' HTTP header with every request. Multiple headers must be delimited by '^^': -datasource.headers='header1:value1^^header2:value2'"),
    flag("datasource.tlsCAFile", Kind::String, "", "Optional path to TLS CA file to use for verifying connections to -datasource.url. By default, system CA is used"),
    flag("datasource.tlsCertFile", Kind::String, "", "Optional path to client-side TLS certificate file to use when connecting to -datasource.url"),
    flag("datasource.tlsKeyFile", Kind::String, "", "Optional path to client-side TLS certificate key to use when connecting to -datasource.url"),
    flag("datasource.tlsServerName", Kind::String, "", "Optional TLS server name to use for connections to -datasource.url. By default, the server name from -datasource.url is used"),
    flag("datasource.tlsInsecureSkipVerify", Kind::Bool, "false", "Whether to skip tls verification when connecting to -datasource.url"),
    flag("datasource.maxIdleConnections", Kind::Int, "100", "Defines the number of idle (keep-alive connections) to each configured datasource"),
    flag("datasource.disableKeepAlive", Kind::Bool, "false", "Whether to disable long-lived connections to the datasource"),
    flag("datasource.queryStep", Kind::Duration, "5m0s", "How far back a usage query may look for the latest sample of each replica's counters; sent as the step argument, which VictoriaMetrics uses as the lookback of instant queries"),
    flag("datasource.disableStepParam", Kind::Bool, "false", "Whether to disable adding 'step' param to the issued instant queries"),
    flag("datasource.appendTypePrefix", Kind::Bool, "false", "Whether to add type prefix (/prometheus) to -datasource.url"),
    flag("datasource.roundDigits", Kind::Int, "0", "Adds round_digits GET param to datasource requests. In VictoriaMetrics this rounds the values to the given number of digits after the decimal point. tenantgate reads counters, so it is sent as given"),
    flag("datasource.showURL", Kind::Bool, "false", "Whether to show -datasource.url in the exported metrics and logs. It is hidden by default, since it can contain sensitive info such as auth key"),
    flag("remoteRead.disablePathAppend", Kind::Bool, "false", "Whether to disable automatic appending of '/api/v1/query' path to the configured -datasource.url"),
];

/// How to reach the usage datasource.
#[derive(Debug, Clone)]
pub struct DatasourceConfig {
    /// `-datasource.url` (possibly with `/prometheus` appended by `-datasource.appendTypePrefix`).
    pub url: Option<String>,
    /// How requests to it authenticate.
    pub auth: DatasourceAuth,
    /// `-datasource.headers`, as `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// `-datasource.tls*`.
    pub tls: UpstreamTls,
    /// `-datasource.maxIdleConnections`.
    pub max_idle_connections: usize,
    /// `-datasource.disableKeepAlive`.
    pub disable_keep_alive: bool,
    /// `-datasource.queryStep`, sent as `step` unless `-datasource.disableStepParam`.
    pub query_step: Option<Duration>,
    /// `-datasource.roundDigits`, sent as `round_digits` when non-zero.
    pub round_digits: i64,
    /// `-datasource.showURL`.
    pub show_url: bool,
    /// `-remoteRead.disablePathAppend`: `url` already ends with the query path.
    pub disable_path_append: bool,
}

/// One way of authenticating to the datasource; vmalert refuses several at once, and so do we.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasourceAuth {
    /// No credentials.
    None,
    /// `-datasource.basicAuth.*`.
    Basic {
        /// The user (inline or from its file).
        username: Secret,
        /// The password (inline, from its file, or empty).
        password: Option<Secret>,
    },
    /// `-datasource.bearerToken(File)`.
    Bearer(Secret),
    /// `-datasource.oauth2.*`: client credentials.
    OAuth2 {
        /// `-datasource.oauth2.clientID`.
        client_id: String,
        /// `-datasource.oauth2.clientSecret(File)`.
        client_secret: Secret,
        /// `-datasource.oauth2.tokenUrl`.
        token_url: String,
        /// `-datasource.oauth2.scopes`, split on `;`.
        scopes: Vec<String>,
        /// `-datasource.oauth2.endpointParams`.
        endpoint_params: Vec<(String, String)>,
    },
}

pub(super) fn build(given: &Given) -> Result<DatasourceConfig, FlagError> {
    // vmgateway only builds its datasource client for rate limiting: without it, incomplete
    // datasource credentials are accepted (and unused) rather than stopping start-up.
    let used = given.get("enable.rateLimit", parse_bool)?;
    let auth = match auth(given) {
        Ok(auth) => auth,
        Err(e) if used => return Err(e),
        Err(_) => DatasourceAuth::None,
    };
    let append_prefix = given.get("datasource.appendTypePrefix", parse_bool)?;
    let url = given.get_opt("datasource.url", parse_http_url)?.map(|url| {
        let url = url.trim_end_matches('/').to_string();
        if append_prefix {
            format!("{url}/prometheus")
        } else {
            url
        }
    });
    Ok(DatasourceConfig {
        url,
        auth,
        headers: given
            .get_opt("datasource.headers", parse_headers)?
            .unwrap_or_default(),
        tls: UpstreamTls {
            ca_file: given.get_opt("datasource.tlsCAFile", parse_existing_file)?,
            cert_file: given.get_opt("datasource.tlsCertFile", parse_existing_file)?,
            key_file: given.get_opt("datasource.tlsKeyFile", parse_existing_file)?,
            server_name: given.get_opt("datasource.tlsServerName", parse_string)?,
            insecure_skip_verify: given.get("datasource.tlsInsecureSkipVerify", parse_bool)?,
        },
        max_idle_connections: given.get("datasource.maxIdleConnections", parse_usize)?,
        disable_keep_alive: given.get("datasource.disableKeepAlive", parse_bool)?,
        query_step: if given.get("datasource.disableStepParam", parse_bool)? {
            None
        } else {
            Some(given.get("datasource.queryStep", parse_duration)?)
        },
        round_digits: given.get("datasource.roundDigits", parse_i64)?,
        show_url: given.get("datasource.showURL", parse_bool)?,
        disable_path_append: given.get("remoteRead.disablePathAppend", parse_bool)?,
    })
}

/// A secret given inline by `inline` or as a file by `file`, not both.
fn secret_or_file(given: &Given, inline: &str, file: &str) -> Result<Option<Secret>, FlagError> {
    let value = given.get_opt(inline, parse_secret)?;
    let path: Option<PathBuf> = given.get_opt(file, parse_existing_file)?;
    match (value, path) {
        (Some(_), Some(_)) => Err(FlagError(format!(
            "-{inline} and -{file} are mutually exclusive"
        ))),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(p)) => Ok(Some(Secret::File(p))),
        (None, None) => Ok(None),
    }
}

fn auth(given: &Given) -> Result<DatasourceAuth, FlagError> {
    let username = secret_or_file(
        given,
        "datasource.basicAuth.username",
        "datasource.basicAuth.usernameFile",
    )?;
    let password = secret_or_file(
        given,
        "datasource.basicAuth.password",
        "datasource.basicAuth.passwordFile",
    )?;
    let bearer = secret_or_file(
        given,
        "datasource.bearerToken",
        "datasource.bearerTokenFile",
    )?;
    let client_id = given.get_opt("datasource.oauth2.clientID", parse_string)?;
    let mut methods = Vec::new();
    if username.is_some() || password.is_some() {
        methods.push("-datasource.basicAuth.*");
    }
    if bearer.is_some() {
        methods.push("-datasource.bearerToken");
    }
    if client_id.is_some() {
        methods.push("-datasource.oauth2.*");
    }
    if methods.len() > 1 {
        return Err(FlagError(format!(
            "only one way to authenticate to -datasource.url may be set, got {}",
            methods.join(" and ")
        )));
    }
    if let Some(username) = username {
        return Ok(DatasourceAuth::Basic { username, password });
    }
    if password.is_some() {
        return Err(FlagError(
            "-datasource.basicAuth.password needs -datasource.basicAuth.username".to_string(),
        ));
    }
    if let Some(token) = bearer {
        return Ok(DatasourceAuth::Bearer(token));
    }
    let Some(client_id) = client_id else {
        return Ok(DatasourceAuth::None);
    };
    let client_secret = secret_or_file(given, "datasource.oauth2.clientSecret", "datasource.oauth2.clientSecretFile")?
        .ok_or_else(|| FlagError("-datasource.oauth2.clientID needs -datasource.oauth2.clientSecret or -datasource.oauth2.clientSecretFile".to_string()))?;
    let token_url = given
        .get_opt("datasource.oauth2.tokenUrl", parse_http_url)?
        .ok_or_else(|| {
            FlagError("-datasource.oauth2.clientID needs -datasource.oauth2.tokenUrl".to_string())
        })?;
    let scopes = given
        .get("datasource.oauth2.scopes", parse_string)?
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    Ok(DatasourceAuth::OAuth2 {
        client_id,
        client_secret,
        token_url,
        scopes,
        endpoint_params: given
            .get_opt("datasource.oauth2.endpointParams", parse_endpoint_params)?
            .unwrap_or_default(),
    })
}

/// `name:value^^name:value`, each a valid header.
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    for item in text.split("^^").filter(|item| !item.trim().is_empty()) {
        let (name, value) = item
            .split_once(':')
            .ok_or_else(|| "expected name:value, headers separated by ^^".to_string())?;
        let name = super::values::parse_header_name(name.trim())?;
        let value = value.trim();
        if value.bytes().any(|b| b < b' ' && b != b'\t') {
            return Err("header values may not contain control characters".to_string());
        }
        headers.push((name, value.to_string()));
    }
    Ok(headers)
}

/// A JSON object of string (or scalar) values.
fn parse_endpoint_params(text: &str) -> Result<Vec<(String, String)>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("expected a JSON object: {e}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| "expected a JSON object".to_string())?;
    object
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
            serde_json::Value::Number(n) => Ok((k.clone(), n.to_string())),
            serde_json::Value::Bool(b) => Ok((k.clone(), b.to_string())),
            _ => Err(format!("parameter {k:?} must be a string")),
        })
        .collect()
}
