//! Command-line flags, parsed the way vmgateway (and every VictoriaMetrics component) parses them.
//!
//! tenantgate is a drop-in replacement for vmgateway, so the command lines users already run must
//! work unchanged: Go `flag` package syntax (`-name=value`, `-name value`, `--name=value`, bare
//! boolean flags), comma-separated or repeated array flags, Go durations, VictoriaMetrics size
//! suffixes, `-envflag.enable` to read flags from the environment, and VictoriaMetrics-style help
//! text. Every flag of vmgateway's `-help` is known here.
//!
//! This file is the machinery: scanning the command line, the environment, looking values up, help and
//! the `/flags` listing. The flags themselves live by area in the submodules, each with its table
//! ([`FlagSpec`]s: the one source of truth for names, kinds, defaults and help) and a `build` function
//! that turns the values given into that area's typed section of [`Config`], with errors naming the
//! flag. The module does no I/O apart from checking that named files exist (`std::fs::metadata`); the
//! environment is read only through the closure passed to [`parse`], which keeps it testable.

mod auth;
mod backend;
mod compat;
mod datasource;
mod limits;
mod logging;
mod metrics;
mod server;
pub mod values;

use std::collections::HashMap;
use std::fmt::{self, Write as _};

pub use auth::{AuthConfig, IntrospectionConfig};
pub use backend::{
    BackendConfig, BackendType, Balance, Discovery, Policy, TenantFormat, TenantHeader, UpstreamTls,
};
pub use compat::CompatConfig;
pub use datasource::{DatasourceAuth, DatasourceConfig};
pub use limits::{LimitsConfig, LimitsSource, RateLimitConfig, WriteLimitStatus};
pub use logging::{timezone, AuditTarget, LogConfig, LogFormat, LogLevel, LogOutput};
pub use metrics::MetricsConfig;
pub use server::{
    BasicAuth, Listener, ListenerTls, SecurityHeaders, ServerConfig, TlsVersion, CIPHER_SUITES,
};
pub use values::Secret;

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

/// The validated configuration tenantgate runs with, one section per area of flags. Secrets are
/// [`Secret`]s, whose `Debug` never shows them, so logging a `Config` leaks nothing.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listeners, TLS, HTTP server behaviour, the auth keys of tenantgate's own endpoints.
    pub server: ServerConfig,
    /// Tokens: where they are, how they are verified, where keys come from.
    pub auth: AuthConfig,
    /// The backends requests go to.
    pub backend: BackendConfig,
    /// Log lines and the audit log.
    pub log: LogConfig,
    /// Pushing tenantgate's own metrics, and how `/metrics` is written.
    pub metrics: MetricsConfig,
    /// Body sizes, concurrency and rate limits.
    pub limits: LimitsConfig,
    /// Where rate limiting reads usage from (vmgateway's `-datasource.*`).
    pub datasource: DatasourceConfig,
    /// vmgateway flags accepted with no effect here, so `main` can say so once.
    pub compat: CompatConfig,
    /// Every flag and its value in force, as `/flags` shows them (secrets already hidden).
    pub listing: Vec<(&'static str, String)>,
}

impl Config {
    /// Whether any source of verification keys is configured. Without one, signatures are not
    /// checked (vmgateway's behaviour), which callers must warn about loudly.
    pub fn has_key_sources(&self) -> bool {
        self.auth.has_key_sources()
    }

    /// The `/flags` page: one `-name="value"` line per flag, as VictoriaMetrics writes it.
    pub fn flags_page(&self) -> String {
        let mut out = String::new();
        for (name, value) in &self.listing {
            let _ = writeln!(out, "-{name}={}", go_quote(value));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The flag tables: each area has its own; together they are every flag tenantgate knows.
// ---------------------------------------------------------------------------------------------

/// How a flag's value is written; decides syntax (booleans take no separate argument), array
/// splitting, and the type shown in help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    String,
    Int,
    Duration,
    Size,
    Array,
    /// VictoriaMetrics' `ArrayBool` (`-tls`, `-mtls`, ...): one boolean per listener; a bare flag is
    /// `true`, like a boolean.
    BoolArray,
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
            Kind::Array | Kind::BoolArray => Some("array"),
        }
    }

    fn takes_no_argument(self) -> bool {
        matches!(self, Kind::Bool | Kind::BoolArray)
    }

    fn is_array(self) -> bool {
        matches!(self, Kind::Array | Kind::BoolArray)
    }
}

/// One flag. `default` is written as a user would write the value and goes through the same
/// parser as user input (for arrays: the value used when the flag is not given at all).
#[derive(Debug)]
pub(crate) struct FlagSpec {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) default: &'static str,
    pub(crate) help: &'static str,
    /// Shown as `secret` by `/flags` (passwords, keys, tokens, URLs that may carry credentials).
    pub(crate) secret: bool,
}

pub(crate) const fn flag(
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
        secret: false,
    }
}

/// A flag whose value `/flags` hides.
pub(crate) const fn secret(
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
        secret: true,
    }
}

/// Flags about the command line itself.
const CORE_FLAGS: &[FlagSpec] = &[
    flag("envflag.enable", Kind::Bool, "false", "Whether to also read flags from environment variables. A flag's variable is -envflag.prefix followed by the flag name with dots replaced by underscores, e.g. read_url. Command-line values take priority. This flag is read from the command line only"),
    flag("envflag.prefix", Kind::String, "", "Prefix for environment variable names if -envflag.enable is set. This flag is read from the command line only"),
    flag("version", Kind::Bool, "false", "Show tenantgate version"),
];

/// Every area's table.
const AREAS: &[&[FlagSpec]] = &[
    CORE_FLAGS,
    server::FLAGS,
    auth::FLAGS,
    backend::FLAGS,
    limits::FLAGS,
    datasource::FLAGS,
    logging::FLAGS,
    metrics::FLAGS,
    compat::FLAGS,
];

/// Flags never read from the environment: they control the reading itself, and an unprefixed
/// `version` variable is common enough in containers to turn every start into a version print.
const COMMAND_LINE_ONLY: &[&str] = &["envflag.enable", "envflag.prefix", "version"];

fn all_flags() -> impl Iterator<Item = &'static FlagSpec> {
    AREAS.iter().flat_map(|area| area.iter())
}

fn lookup(name: &str) -> Option<&'static FlagSpec> {
    all_flags().find(|spec| spec.name == name)
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
    if given.get("version", values::parse_bool)? {
        return Ok(Parsed::Version);
    }
    if given.get("envflag.enable", values::parse_bool)? {
        let prefix = given.get("envflag.prefix", values::parse_string)?;
        given.add_env(&prefix, env);
    }
    let config = Config {
        server: server::build(&given)?,
        auth: auth::build(&given)?,
        backend: backend::build(&given)?,
        log: logging::build(&given)?,
        metrics: metrics::build(&given)?,
        limits: limits::build(&given)?,
        datasource: datasource::build(&given)?,
        compat: compat::build(&given)?,
        listing: given.listing(),
    };
    check_across_areas(&config)?;
    Ok(Parsed::Run(config))
}

/// Checks that involve flags of more than one area.
fn check_across_areas(config: &Config) -> Result<(), FlagError> {
    if config.auth.grants_file.is_some() && !config.auth.enabled {
        return Err(FlagError(
            "-auth.grantsFile needs -enable.auth: grants are given to verified tokens".to_string(),
        ));
    }
    if config.auth.check.is_some() {
        return Ok(()); // check mode serves nothing: no backend is needed
    }
    if config.backend.read_urls.is_empty() && config.backend.write_urls.is_empty() {
        return Err(FlagError(
            "tenantgate needs -read.url and/or -write.url".to_string(),
        ));
    }
    if config.server.http_auth.is_some()
        && config.auth.enabled
        && config.auth.header == "authorization"
    {
        return Err(FlagError(
            "-httpAuth.username uses the Authorization header for Basic auth, so the JWT cannot be there too: set -auth.httpHeader to another header (e.g. -auth.httpHeader=X-Token)"
                .to_string(),
        ));
    }
    let rate = &config.limits.rate;
    if rate.enabled {
        if rate.share_usage && config.datasource.url.is_none() {
            return Err(FlagError(
                "-enable.rateLimit needs -datasource.url: the VictoriaMetrics that holds every replica's usage (or -ratelimit.shareUsage=false for a single replica)"
                    .to_string(),
            ));
        }
        if rate.config.is_none() {
            return Err(FlagError(
                "-enable.rateLimit needs -ratelimit.config".to_string(),
            ));
        }
    }
    Ok(())
}

/// One value given for a flag, and where it came from (for error messages).
#[derive(Debug)]
pub(crate) struct Value {
    text: String,
    env_var: Option<String>,
}

/// All values given for each flag, in order (the last wins for non-array flags, as in Go).
#[derive(Debug, Default)]
pub(crate) struct Given {
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
        let text = match inline_value {
            Some(value) => value.to_string(),
            None if spec.kind.takes_no_argument() => {
                previous_bare_bool = Some(spec.name);
                "true".to_string()
            }
            None => args
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
        Some(flag) if values::parse_bool(arg).is_ok() => FlagError(format!(
            "unexpected argument {arg:?}: boolean flags take no separate value; write -{flag}={arg}"
        )),
        _ => FlagError(format!(
            "unexpected argument {arg:?}: tenantgate takes only flags (see -help)"
        )),
    }
}

fn unknown_flag(name: &str) -> FlagError {
    match all_flags().find(|spec| spec.name.eq_ignore_ascii_case(name)) {
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
        for spec in all_flags() {
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
    pub(crate) fn get<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, FlagError> {
        let spec = known(name)?;
        match self.values(name).last() {
            Some(value) => {
                parse(&value.text).map_err(|why| invalid(spec, &value.text, value, &why))
            }
            None => parse(spec.default).map_err(|why| bad_default(spec, &why)),
        }
    }

    /// Like [`Given::get`], with an empty value meaning "not set" (Go's zero value).
    pub(crate) fn get_opt<T>(
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

    /// Every item of every value given (split as VictoriaMetrics splits arrays: on commas outside
    /// quotes and brackets), each parsed by `parse`; empty items are skipped. With no value given,
    /// the flag's default is split the same way.
    pub(crate) fn get_list<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, FlagError> {
        self.get_items(name, |item| parse(item), true)
    }

    /// Like [`Given::get_list`], but keeps empty items: for per-listener arrays (`-tls=true,,false`),
    /// where an item's position says which listener it is for.
    pub(crate) fn get_positional<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, FlagError> {
        self.get_items(name, parse, false)
    }

    fn get_items<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
        skip_empty: bool,
    ) -> Result<Vec<T>, FlagError> {
        let spec = known(name)?;
        let mut items = Vec::new();
        let given = self.values(name);
        if given.is_empty() {
            for item in values::split_array(spec.default) {
                if skip_empty && item.is_empty() {
                    continue;
                }
                items.push(parse(item).map_err(|why| bad_default(spec, &why))?);
            }
            return Ok(items);
        }
        for value in given {
            for item in values::split_array(&value.text) {
                if skip_empty && item.is_empty() {
                    continue;
                }
                items.push(parse(item).map_err(|why| invalid(spec, item, value, &why))?);
            }
        }
        Ok(items)
    }

    /// Whether the flag was given at all (on the command line or in the environment).
    pub(crate) fn is_given(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The flags given (on the command line or in the environment), sorted by name, arrays joined with
    /// commas, secrets shown as `secret`: what `/flags` prints, as VictoriaMetrics prints it.
    fn listing(&self) -> Vec<(&'static str, String)> {
        let mut specs: Vec<&FlagSpec> = all_flags().filter(|s| self.is_given(s.name)).collect();
        specs.sort_by_key(|spec| spec.name);
        specs
            .into_iter()
            .map(|spec| {
                let given = self.values(spec.name);
                let value = if spec.kind.is_array() {
                    given
                        .iter()
                        .map(|v| v.text.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                } else {
                    given.last().map_or("", |v| v.text.as_str()).to_string()
                };
                let value = if is_secret(spec) {
                    "secret".to_string()
                } else {
                    value
                };
                (spec.name, value)
            })
            .collect()
    }
}

/// Whether a flag's value is hidden: marked secret, or named like one (VictoriaMetrics' rule: the name
/// contains `pass`, `key`, `secret` or `token`, which also hides `-tlsKeyFile` paths and the like).
fn is_secret(spec: &FlagSpec) -> bool {
    let name = spec.name.to_ascii_lowercase();
    spec.secret
        || ["pass", "key", "secret", "token"]
            .iter()
            .any(|w| name.contains(w))
}

fn invalid(spec: &FlagSpec, text: &str, value: &Value, why: &str) -> FlagError {
    let source = match &value.env_var {
        Some(var) => format!(" (from environment variable {var})"),
        None => String::new(),
    };
    // Never repeat a secret's value in an error message: it ends up in logs. (Paths of key files are
    // not secrets; `/flags` hides them by VictoriaMetrics' name rule, errors name them.)
    let shown = if spec.secret {
        "secret".to_string()
    } else {
        format!("{text:?}")
    };
    FlagError(format!(
        "invalid value {shown} for flag -{}{source}: {why}",
        spec.name
    ))
}

fn bad_default(spec: &FlagSpec, why: &str) -> FlagError {
    FlagError(format!(
        "internal error: invalid default {:?} for flag -{}: {why}",
        spec.default, spec.name
    ))
}

/// A string quoted as Go's `%q` quotes it (what VictoriaMetrics' `/flags` uses).
fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Help.
// ---------------------------------------------------------------------------------------------

/// Usage text in the format of Go's `flag.PrintDefaults`, as VictoriaMetrics components print it:
/// every flag, sorted by name, with its type and non-zero default.
pub fn help_text() -> String {
    let mut specs: Vec<&FlagSpec> = all_flags().collect();
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
        Kind::Array | Kind::BoolArray => usage.push_str(
            "\nSupports an array of values separated by comma or specified via multiple flags.",
        ),
        Kind::Size => usage.push_str(
            "\nSupports the following optional suffixes for size values: KB, MB, GB, TB, KiB, MiB, GiB, TiB",
        ),
        _ => {}
    }
    if !matches!(spec.default, "" | "false" | "0" | "0s") {
        // Go quotes string defaults only. Writing to a String cannot fail.
        let _ = if matches!(spec.kind, Kind::String | Kind::Array) {
            write!(usage, " (default {:?})", spec.default)
        } else {
            write!(usage, " (default {})", spec.default)
        };
    }
    usage
}

#[cfg(test)]
pub(crate) mod tests;
