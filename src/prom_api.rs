//! The Prometheus HTTP API as tenantgate serves it in front of Prometheus-family backends (Prometheus,
//! Thanos Query, Mimir, Cortex; `-read.backendType=prometheus`): which arguments of their read
//! endpoints ([`crate::route::ReadEndpoint`]) carry PromQL that must be rewritten.
//!
//! Pure. Those backends are Go programs that read arguments with `net/url.ParseQuery` (URL query, then
//! the urlencoded body, both in `r.Form`): pairs split on `&`, a pair holding a `;` skipped, names and
//! values unescaped once (`+` is a space, `%XX` a byte; a broken escape skips the pair). We read the
//! arguments the same way, so the `query` and `match[]` values we rewrite are exactly the ones the
//! backend will read, whatever their spelling (`qu%65ry=`) and however many there are: every one is
//! rewritten, so it does not matter which one the backend picks. Pairs Go would skip are not forwarded,
//! and client `extra_label` / `extra_filters` spellings are dropped as on VictoriaMetrics backends.

use percent_encoding::utf8_percent_encode;

use crate::promql::EnforceError;
use crate::rewrite::{is_restricted_name, FORM_VALUE};

/// Which arguments of a read are rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// `query`, as an expression.
    Expression,
    /// `match[]`, as a series selector.
    Selectors,
    /// Rules and alerts: nothing is rewritten, but `exclude_alerts` is dropped, since the answer is
    /// filtered by the alerts it lists (see [`crate::rules_filter`]).
    Rules,
    /// Nothing is rewritten.
    None,
}

impl Carrier {
    /// The (decoded) argument name that carries PromQL.
    fn name(self) -> Option<&'static str> {
        match self {
            Carrier::Expression => Some("query"),
            Carrier::Selectors => Some("match[]"),
            Carrier::Rules | Carrier::None => None,
        }
    }

    /// How the name is written in what we forward.
    fn encoded_name(self) -> &'static str {
        match self {
            Carrier::Selectors => "match%5B%5D",
            _ => "query",
        }
    }
}

/// What a rewrite of one argument string did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// PromQL values rewritten.
    pub enforced: usize,
    /// Client `extra_label` / `extra_filters` pairs dropped.
    pub restricted: usize,
    /// Pairs Go would skip (a `;`, a broken escape), not forwarded.
    pub malformed: usize,
}

/// Appends to `out` the pairs of `input` (a URL query or an urlencoded body) as the backend may read
/// them: every value of the carrier's argument replaced by `enforce(value)`, restricted and malformed
/// pairs dropped, everything else as sent. A refusal of `enforce` refuses the request.
pub fn rewrite_args(
    input: &str,
    carrier: Carrier,
    out: &mut String,
    enforce: &mut dyn FnMut(&str) -> Result<std::sync::Arc<str>, EnforceError>,
) -> Result<Rewrite, EnforceError> {
    let mut done = Rewrite::default();
    for pair in input.split('&') {
        if pair.is_empty() {
            continue;
        }
        if pair.contains(';') {
            done.malformed += 1;
            continue;
        }
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(name), Some(value)) = (go_unescape(raw_name), go_unescape(raw_value)) else {
            done.malformed += 1;
            continue;
        };
        if is_restricted_name(raw_name) {
            done.restricted += 1;
            continue;
        }
        if carrier == Carrier::Rules && name == b"exclude_alerts" {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        if carrier.name().is_some_and(|n| n.as_bytes() == name) {
            let text = String::from_utf8(value)
                .map_err(|_| EnforceError::Parse("the query is not valid UTF-8".into()))?;
            let enforced = enforce(&text)?;
            out.push_str(carrier.encoded_name());
            out.push('=');
            out.extend(utf8_percent_encode(&enforced, FORM_VALUE));
            done.enforced += 1;
        } else {
            out.push_str(pair);
        }
    }
    Ok(done)
}

/// Appends `match[]=<selector>` to an argument string.
pub fn push_selector(out: &mut String, selector: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str("match%5B%5D=");
    out.extend(utf8_percent_encode(selector, FORM_VALUE));
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte, a `%` without two hex digits an error.
fn go_unescape(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = |at: usize| bytes.get(at).and_then(|&h| (h as char).to_digit(16));
                let (high, low) = (hex(i + 1)?, hex(i + 2)?);
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn run(input: &str, carrier: Carrier) -> (String, Rewrite) {
        let mut out = String::new();
        let done = rewrite_args(input, carrier, &mut out, &mut |q| {
            Ok(Arc::from(format!("<{q}>").as_str()))
        })
        .unwrap();
        (out, done)
    }

    #[test]
    fn every_spelling_of_the_carrier_is_rewritten() {
        let (out, done) = run(
            "query=up&qu%65ry=a+b&step=15&query=x%3By&start=1",
            Carrier::Expression,
        );
        assert_eq!(
            out,
            "query=%3Cup%3E&query=%3Ca%20b%3E&step=15&query=%3Cx%3By%3E&start=1"
        );
        assert_eq!(done.enforced, 3);
        let (out, _) = run("match[]=up&match%5b%5D={a=\"b\"}", Carrier::Selectors);
        assert_eq!(
            out,
            "match%5B%5D=%3Cup%3E&match%5B%5D=%3C%7Ba%3D%22b%22%7D%3E"
        );
    }

    #[test]
    fn pairs_go_skips_are_not_forwarded() {
        let (out, done) = run("query=up;x&a=%zz&query=%4&b=1", Carrier::Expression);
        assert_eq!(out, "b=1");
        assert_eq!(done.malformed, 3);
        assert_eq!(done.enforced, 0);
    }

    #[test]
    fn restricted_arguments_are_dropped_and_others_kept() {
        let (out, done) = run(
            "extra_label=team%3Dops&query=up&extra_filters%5B%5D=x&dedup=true",
            Carrier::Expression,
        );
        assert_eq!(out, "query=%3Cup%3E&dedup=true");
        assert_eq!(done.restricted, 2);
        let (out, _) = run("exclude_alerts=true&type=alert", Carrier::Rules);
        assert_eq!(out, "type=alert");
    }

    #[test]
    fn a_refusal_refuses_and_invalid_utf8_is_a_parse_error() {
        let mut out = String::new();
        let e = rewrite_args("query=up", Carrier::Expression, &mut out, &mut |_| {
            Err(EnforceError::TooComplex)
        });
        assert_eq!(e, Err(EnforceError::TooComplex));
        let e = rewrite_args("query=%ff", Carrier::Expression, &mut out, &mut |q| {
            Ok(Arc::from(q))
        });
        assert!(matches!(e, Err(EnforceError::Parse(_))));
    }

    #[test]
    fn go_unescaping() {
        assert_eq!(go_unescape("a+b%2B%41").unwrap(), b"a b+A");
        assert_eq!(go_unescape("%"), None);
        assert_eq!(go_unescape("%4"), None);
        assert_eq!(go_unescape("%g0"), None);
        assert_eq!(go_unescape("é").unwrap(), "é".as_bytes());
    }
}
