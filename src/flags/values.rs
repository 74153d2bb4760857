//! Value parsers shared by every area of flags: text in, a typed value or a reason out (the caller adds
//! the flag's name and the value to the message). Pure, except that file flags check the file exists.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A secret flag value (password, auth key, token, client secret): compared and used, never shown.
/// `Debug` prints `secret`, so a logged configuration leaks nothing. VictoriaMetrics lets such values
/// name a file (`file:///run/secrets/key`) instead of holding the secret; [`Secret::File`] is read when
/// needed ([`crate::secrets`]), so a rotated file is picked up on reload.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The secret itself, given on the command line or in the environment.
    Inline(String),
    /// `file://<path>`: the secret is the file's content, without a trailing newline.
    File(PathBuf),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("secret"),
            Secret::File(path) => write!(f, "secret from file {}", path.display()),
        }
    }
}

/// A secret value: `file://path` names a file that must exist, anything else is the secret itself.
pub(crate) fn parse_secret(text: &str) -> Result<Secret, String> {
    match text.strip_prefix("file://") {
        Some(path) => parse_existing_file(path).map(Secret::File),
        None => Ok(Secret::Inline(text.to_string())),
    }
}

/// Splits an array flag's value as VictoriaMetrics does: on commas, except inside single or double
/// quotes and `[]`, `{}`, `()` brackets, so `-pushmetrics.extraLabel='a="x,y"'` stays one item.
/// Quotes are kept: the item's own parser decides what they mean.
pub(crate) fn split_array(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if let Some(q) = quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                c if c == q => quote = None,
                _ => {}
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// The item of a per-listener array for listener `index`, as VictoriaMetrics' `GetOptionalArg`
/// picks it: the item at that position; a single item applies to every listener; otherwise the
/// default.
pub(crate) fn per_listener<T: Clone>(items: &[T], index: usize, default: T) -> T {
    match items.get(index) {
        Some(item) => item.clone(),
        None if items.len() == 1 => items[0].clone(),
        None => default,
    }
}

pub(crate) fn parse_string(text: &str) -> Result<String, String> {
    Ok(text.to_string())
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err("expected true or false".to_string()),
    }
}

/// An item of a boolean array: empty means false, as in VictoriaMetrics' `ArrayBool`.
pub(crate) fn parse_bool_item(text: &str) -> Result<bool, String> {
    if text.is_empty() {
        return Ok(false);
    }
    parse_bool(text)
}

pub(crate) fn parse_usize(text: &str) -> Result<usize, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a non-negative integer".to_string());
    }
    text.parse().map_err(|_| "integer out of range".to_string())
}

/// A signed integer, for flags where VictoriaMetrics allows negative values (`-datasource.roundDigits`).
pub(crate) fn parse_i64(text: &str) -> Result<i64, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected an integer".to_string());
    }
    text.parse().map_err(|_| "integer out of range".to_string())
}

/// A thread count: more than 1024 is a typo, and would fail at start-up anyway.
pub(crate) fn parse_workers(text: &str) -> Result<usize, String> {
    match parse_usize(text)? {
        n if n > 1024 => Err("at most 1024 threads".to_string()),
        n => Ok(n),
    }
}

/// A percentage from 1 to 100 (`-memory.allowedPercent`), fractions allowed as in VictoriaMetrics.
pub(crate) fn parse_percent(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err("expected a percentage greater than 0 and at most 100".to_string()),
    }
}

/// Go's `time.ParseDuration` ("1h30m", "1.5s", "500ms", "0"), without negative values.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
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
pub(crate) fn duration_component(text: &str) -> Option<(u128, &str)> {
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
pub(crate) fn decimal(digits: &str) -> Option<u128> {
    digits.chars().try_fold(0u128, |acc, c| {
        acc.checked_mul(10)?
            .checked_add(u128::from(c.to_digit(10)?))
    })
}

pub(crate) fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be greater than zero".to_string()),
        duration => Ok(duration),
    }
}

/// VictoriaMetrics `flagutil.Bytes`: a number of bytes with an optional suffix KB, MB, GB, TB
/// (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), in any letter case like
/// VictoriaMetrics; fractions like 1.5MB are allowed.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
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
/// interfaces: IPv4 ones, or IPv4 and IPv6 with `tcp6` (`-enableTCP6`), as VictoriaMetrics listens.
/// Host names are refused: a listener should not depend on DNS at start-up.
pub(crate) fn parse_listen_addr(text: &str, tcp6: bool) -> Result<SocketAddr, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port, e.g. :8431 or 127.0.0.1:8431".to_string())?;
    let port = parse_port(port)?;
    let ip: IpAddr = if host.is_empty() && tcp6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else if host.is_empty() {
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
pub(crate) fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid port {text:?}"));
    }
    text.parse()
        .map_err(|_| format!("port {text} out of range"))
}

/// An absolute http(s) URL with a host; the scheme is stored lowercase.
pub(crate) fn parse_http_url(text: &str) -> Result<String, String> {
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
pub(crate) fn parse_backend_url(text: &str) -> Result<String, String> {
    let url = parse_http_url(text)?;
    if url.contains(['?', '#']) {
        return Err("a backend URL must not have a query or fragment".to_string());
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The path of a backend URL as [`parse_backend_url`] keeps it (`/prometheus` of
/// `http://mimir:8080/prometheus`; empty for none): the API prefix every request to it is built on.
pub fn backend_url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.find('/').map_or("", |i| &rest[i..])
}

/// An HTTP header name (RFC 9110 token), stored lowercase.
pub(crate) fn parse_header_name(text: &str) -> Result<String, String> {
    let is_token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if text.is_empty() || !text.bytes().all(is_token_char) {
        return Err("not a valid HTTP header name".to_string());
    }
    Ok(text.to_ascii_lowercase())
}

/// A path that exists and is a regular file (following symlinks); its contents are not read here.
pub(crate) fn parse_existing_file(text: &str) -> Result<PathBuf, String> {
    match std::fs::metadata(text) {
        Ok(meta) if meta.is_file() => Ok(PathBuf::from(text)),
        Ok(_) => Err("not a regular file".to_string()),
        Err(err) => Err(format!("cannot access file: {err}")),
    }
}
