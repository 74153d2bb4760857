//! A pass over a query's raw text before the parser sees it: it bounds how much work the query can cause,
//! refuses the few spellings that `promql-parser` would read differently from Prometheus, and rewrites
//! raw (backtick) strings into double-quoted ones, which the parser cannot lex when they hold a backslash.
//!
//! Why this exists, finding by finding (promql-parser 0.11.1):
//! - Parsing is quadratic in the number of operators (`a + a + … + a` with 10,000 terms takes 0.8 s,
//!   `------foo` with 100,000 minus signs 35 s): the parser's type checks re-walk the tree below every node.
//!   Deep trees would also overflow the stack of our recursive walk and printer, and of `Drop`.
//!   We bound operators and nesting before parsing.
//! - A plain number used as a duration (`foo[1e400]`, `foo offset Inf`) makes the parser panic in
//!   `Duration::from_secs_f64`. We refuse such numbers here so the panic never happens (the caller still
//!   catches panics as a backstop).
//! - `"\xff"` and `"\377"` are the byte 0xFF for Prometheus (Go strings are bytes) but the character U+00FF for
//!   the parser. Forwarding the parser's reading would silently change the query, so we refuse byte escapes
//!   above 0x7F.
//! - The parser's lexer treats a backslash in a backtick string as an escape (Prometheus does not), so
//!   `` {path=~`/v\d+`} `` fails to lex. We hand it `{path=~"/v\\d+"}` instead, which means the same.
//!
//! This scanner only needs to agree with the lexer on where strings and comments are. If it ever disagreed,
//! the result would be a refused query or a differently spelled but equal string, never an unenforced
//! selector: enforcement works on the tree the parser builds from whatever text we hand it.

use std::borrow::Cow;

use super::EnforceError;

/// Operators (symbols, `and`/`or`/`unless`/`atan2`, `offset`, `@`, `[`) a query may hold. Dashboards use
/// tens; at this bound the parser's quadratic behaviour stays around a millisecond.
pub const MAX_OPERATORS: usize = 400;

/// How deeply parentheses may nest.
pub const MAX_NESTING: usize = 64;

/// Largest plain number accepted as a duration, in seconds: Prometheus' durations are int64 nanoseconds
/// (about 292 years, 9.2e9 s), so nothing above this is a valid Prometheus duration anyway.
const MAX_NUMBER_DURATION_SECS: f64 = 1e10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Region {
    Expression,
    Braces,
    Brackets,
}

/// Checks `query` and returns the text to parse (the query itself unless a raw string was rewritten).
pub fn prescan(query: &str) -> Result<Cow<'_, str>, EnforceError> {
    let bytes = query.as_bytes();
    let mut rewritten: Option<String> = None;
    let mut copied = 0;
    let mut operators = 0usize;
    let mut depth = 0usize;
    let mut region = Region::Expression;
    // Set after `offset` (and an optional sign): the next token is a duration.
    let mut duration_next = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                i = scan_quoted(bytes, i)?;
                duration_next = false;
                continue;
            }
            b'`' => {
                let end = memchr_from(bytes, i + 1, b'`');
                let content = &query[i + 1..end];
                // An unterminated raw string is left for the parser to refuse, not repaired.
                if end < bytes.len() && content.contains('\\') {
                    let out =
                        rewritten.get_or_insert_with(|| String::with_capacity(query.len() + 8));
                    out.push_str(&query[copied..i]);
                    push_double_quoted(out, content);
                    copied = end + 1;
                }
                i = end + 1;
                duration_next = false;
                continue;
            }
            _ => {}
        }
        match region {
            Region::Braces => {
                if c == b'}' {
                    region = Region::Expression;
                }
                i += 1;
            }
            Region::Brackets => {
                if c == b']' {
                    region = Region::Expression;
                    i += 1;
                } else if c.is_ascii_digit() || c == b'.' {
                    let end = scan_number(bytes, i);
                    check_duration_token(&query[i..end])?;
                    i = end;
                } else {
                    i += 1;
                }
            }
            Region::Expression => {
                if c.is_ascii_whitespace() {
                    i += 1;
                    continue;
                }
                if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
                    let end = scan_word(bytes, i);
                    let word = &query[i..end];
                    let after_offset = duration_next;
                    duration_next = false;
                    if after_offset
                        && (word.eq_ignore_ascii_case("inf") || word.eq_ignore_ascii_case("nan"))
                    {
                        return Err(EnforceError::Unsupported(format!("offset {word}")));
                    }
                    if ["and", "or", "unless", "atan2", "offset"]
                        .iter()
                        .any(|k| word.eq_ignore_ascii_case(k))
                    {
                        operators += 1;
                        duration_next = word.eq_ignore_ascii_case("offset");
                    }
                    i = end;
                } else if c.is_ascii_digit() || c == b'.' {
                    let end = scan_number(bytes, i);
                    if duration_next {
                        check_duration_token(&query[i..end])?;
                    }
                    duration_next = false;
                    i = end;
                } else {
                    match c {
                        b'{' => region = Region::Braces,
                        b'[' => {
                            region = Region::Brackets;
                            operators += 1;
                        }
                        b'(' => {
                            depth += 1;
                            if depth > MAX_NESTING {
                                return Err(EnforceError::TooComplex);
                            }
                        }
                        b')' => depth = depth.saturating_sub(1),
                        b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'=' | b'!' | b'<' | b'>'
                        | b'@' => {
                            operators += 1;
                        }
                        _ => {}
                    }
                    // A sign may sit between `offset` and its duration.
                    if c != b'+' && c != b'-' {
                        duration_next = false;
                    }
                    i += 1;
                }
                if operators > MAX_OPERATORS {
                    return Err(EnforceError::TooComplex);
                }
            }
        }
    }
    Ok(match rewritten {
        None => Cow::Borrowed(query),
        Some(mut out) => {
            out.push_str(&query[copied..]);
            Cow::Owned(out)
        }
    })
}

/// Skips a `"…"` or `'…'` string starting at `start` and returns the index after it (or the end of input;
/// the parser reports unterminated strings). Refuses byte escapes above 0x7F.
fn scan_quoted(bytes: &[u8], start: usize) -> Result<usize, EnforceError> {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                match bytes.get(i + 1) {
                    Some(b'x')
                        if bytes
                            .get(i + 2)
                            .is_some_and(|d| b"89abcdefABCDEF".contains(d)) =>
                    {
                        return Err(byte_escape());
                    }
                    Some(b'2'..=b'7') => return Err(byte_escape()),
                    _ => {}
                }
                i += 2;
            }
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Ok(bytes.len())
}

fn byte_escape() -> EnforceError {
    EnforceError::Unsupported(
        "byte escapes above \\x7f in strings (Prometheus reads them as bytes, not characters)"
            .into(),
    )
}

/// The end of an identifier (`rate`, `job:x`, `offset`).
fn scan_word(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < bytes.len()
        && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
    {
        i += 1;
    }
    i
}

/// The end of a number or duration (`1h30m`, `0x1F`, `1.5e-3`); a colon ends it (`[5m:1m]`).
fn scan_number(bytes: &[u8], start: usize) -> usize {
    let hex = bytes
        .get(start..start + 2)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"0x"));
    let mut i = start;
    while i < bytes.len() {
        let c = bytes[i];
        let sign_in_exponent =
            !hex && (c == b'+' || c == b'-') && i > start && matches!(bytes[i - 1], b'e' | b'E');
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || sign_in_exponent {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// Refuses plain numbers used as durations that the parser would panic on or that no Prometheus accepts.
fn check_duration_token(token: &str) -> Result<(), EnforceError> {
    let lower = token.to_ascii_lowercase();
    let is_hex = lower.starts_with("0x");
    let has_unit = lower.bytes().any(|b| b"smhdwy".contains(&b));
    if has_unit && !is_hex {
        // `5m`, `1h30m`: the parser reads these with checked integer arithmetic.
        return Ok(());
    }
    // Only the magnitude matters here; a leading-zero octal number reads smaller than its decimal digits.
    let secs = match lower.strip_prefix("0x") {
        // Not a number: the parser will say so.
        Some(hex) if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) => return Ok(()),
        // Only overflow is left as an error.
        Some(hex) => u64::from_str_radix(hex, 16).map_or(f64::INFINITY, |v| v as f64),
        None => match lower.parse::<f64>() {
            Ok(v) => v,
            // Not a number: the parser will say so.
            Err(_) => return Ok(()),
        },
    };
    if secs.is_finite() && (0.0..=MAX_NUMBER_DURATION_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(EnforceError::Unsupported(format!(
            "duration {token} is out of range"
        )))
    }
}

fn memchr_from(bytes: &[u8], from: usize, needle: u8) -> usize {
    bytes
        .get(from..)
        .and_then(|rest| rest.iter().position(|&b| b == needle))
        .map_or(bytes.len(), |p| from + p)
}

/// Writes `content` (the inside of a raw string) as a double-quoted PromQL string meaning the same.
fn push_double_quoted(out: &mut String, content: &str) {
    out.push('"');
    for c in content.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(q: &str) -> String {
        prescan(q).unwrap().into_owned()
    }

    #[test]
    fn plain_queries_pass_unchanged() {
        for q in [
            r#"rate(http_requests_total{job="api"}[5m])"#,
            r#"sum by (le) (rate(x_bucket{a=~"b|c"}[1h30m])) / on() group_left sum(y)"#,
            "foo offset -5m @ start()",
            "foo[5m:30s] offset 1h",
            "# just a comment\nfoo",
        ] {
            assert!(matches!(prescan(q), Ok(Cow::Borrowed(_))), "{q}");
        }
    }

    #[test]
    fn raw_strings_with_backslashes_become_double_quoted() {
        assert_eq!(ok(r"foo{path=~`/v\d+`}"), r#"foo{path=~"/v\\d+"}"#);
        assert_eq!(ok(r#"foo{a=`x"y\`}"#), r#"foo{a="x\"y\\"}"#);
        // Without a backslash the parser copes on its own, so the text is left alone.
        assert!(matches!(prescan("foo{a=`b`}"), Ok(Cow::Borrowed(_))));
        // A backtick inside a double-quoted string or a comment is not a raw string.
        assert!(matches!(
            prescan(r#"foo{a="`\\`"} # `\`"#),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn byte_escapes_above_ascii_are_refused() {
        for q in [
            r#"foo{a="\xff"}"#,
            r#"foo{a='\x80'}"#,
            r#"foo{a="\377"}"#,
            r#"foo{a="\200"}"#,
        ] {
            assert!(
                matches!(prescan(q), Err(EnforceError::Unsupported(_))),
                "{q}"
            );
        }
        for q in [
            r#"foo{a="\x7f\x41\101\u00ff"}"#,
            r#"foo{a="\\xff"}"#,
            r"foo{a=`\xff`}",
            "# \"\\xff\"\nfoo",
        ] {
            assert!(prescan(q).is_ok(), "{q}");
        }
    }

    #[test]
    fn numbers_the_parser_would_panic_on_are_refused() {
        for q in [
            "foo[1e400]",
            "foo[99999999999999999999]",
            "foo[5m:1e30]",
            "foo offset 1e400",
            "foo offset -1e400",
            "foo offset Inf",
            "foo offset - NaN",
            "foo offset 0x7FFFFFFFFFFFFFFF",
            "foo[0xFFFFFFFFFFFFFFFFFFFF]",
        ] {
            assert!(
                matches!(prescan(q), Err(EnforceError::Unsupported(_))),
                "{q}"
            );
        }
        for q in [
            "foo[90]",
            "foo[1.5]",
            "foo[0x10]",
            "foo offset 1e3",
            "foo[5m:1e-3]",
            "Inf + foo",
            "foo @ 1e400",
            "foo[1x]",
            "foo[0x]",
            "foo[017]",
        ] {
            assert!(prescan(q).is_ok(), "{q}");
        }
    }

    #[test]
    fn operators_and_nesting_are_bounded() {
        let long = format!("foo{}", " + foo".repeat(MAX_OPERATORS + 1));
        assert_eq!(prescan(&long), Err(EnforceError::TooComplex));
        let fine = format!("foo{}", " + foo".repeat(MAX_OPERATORS));
        assert!(prescan(&fine).is_ok());
        assert_eq!(
            prescan(&format!("{}foo", "-".repeat(MAX_OPERATORS + 1))),
            Err(EnforceError::TooComplex)
        );
        let deep = format!(
            "{}1{}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert_eq!(prescan(&deep), Err(EnforceError::TooComplex));
        let subqueries = format!("foo{}", "[5m:]".repeat(MAX_OPERATORS + 1));
        assert_eq!(prescan(&subqueries), Err(EnforceError::TooComplex));
        // Operators inside strings, braces and comments do not count.
        let quoted = format!(
            "foo{{a=\"{}\"}} # {}",
            "+".repeat(10_000),
            "+".repeat(10_000)
        );
        assert!(prescan(&quoted).is_ok());
    }

    #[test]
    fn unterminated_input_does_not_upset_the_scanner() {
        for q in [
            "\"",
            "'\\",
            "`",
            "foo{a=\"",
            "foo[",
            "foo offset",
            "#",
            "\\",
            "foo{a=`\\",
        ] {
            let _ = prescan(q);
        }
    }
}
