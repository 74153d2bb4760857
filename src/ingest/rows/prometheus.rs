//! Rows of a Prometheus exposition text body (`/api/v1/import/prometheus`).
//!
//! VictoriaMetrics adds `len(rows)` to `vm_rows_inserted_total{type="prometheus"}`
//! (`app/vminsert/prometheusimport/request_handler.go:67` at master, `:68` at v1.79.5), where rows
//! are the lines `lib/protoparser/prometheus/parser.go` parsed. Empty lines and lines whose first
//! non-blank byte is `#` (comments, `# HELP`, `# TYPE`) are skipped; a line that does not parse is
//! dropped and counted in `vm_rows_invalid_total{type="prometheus"}` instead (`parser.go:252-282`
//! at master, `:206-236` at v1.79.5). Timestamps do not change the count, but an unparsable one
//! makes the line invalid. The rules below mirror `Row.unmarshal` (`parser.go:158-231`,
//! `:113-186`), including its quirks: the first `{` anywhere starts the labels, a `#` anywhere
//! after the metric ends the line, and values and timestamps go through fastfloat.
//!
//! VictoriaMetrics decides per block of lines whether to honour backslash escapes; a line without a
//! backslash parses the same either way, so deciding per line gives the same result.

use memchr::memchr;

use super::number::float_ok;
use super::{lines, trim_cr, Dialect};

pub(super) fn count(data: &[u8], dialect: &Dialect) -> u64 {
    let mut rows = 0u64;
    for line in lines(data) {
        let s = skip_ws(trim_cr(line));
        if s.is_empty() || s.first() == Some(&b'#') {
            continue;
        }
        rows += u64::from(row_ok(s, dialect));
    }
    rows
}

fn skip_ws(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

fn trim_trailing_ws(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The first space or tab.
fn next_ws(s: &[u8]) -> Option<usize> {
    memchr::memchr2(b' ', b'\t', s)
}

fn tail(s: &[u8], from: usize) -> &[u8] {
    s.get(from..).unwrap_or_default()
}

fn row_ok(s: &[u8], dialect: &Dialect) -> bool {
    let escapes = memchr(b'\\', s).is_some();
    let (metric_empty, rest) = match memchr(b'{', s) {
        Some(n) => {
            let metric = trim_trailing_ws(s.get(..n).unwrap_or_default());
            let parsed = if dialect.prometheus_quoted_names {
                tags_quoted(tail(s, n + 1), !metric.is_empty(), escapes)
            } else {
                tags_legacy(tail(s, n + 1), escapes).map(|rest| (rest, false))
            };
            let Some((mut rest, named_in_braces)) = parsed else {
                return false;
            };
            if let Some(r) = rest.strip_prefix(b" ") {
                rest = r;
            }
            (metric.is_empty() && !named_in_braces, rest)
        }
        None => {
            let Some(n) = next_ws(s) else {
                return false;
            };
            (n == 0, tail(s, n + 1))
        }
    };
    if metric_empty {
        return false;
    }
    let mut s = skip_ws(rest);
    if let Some(n) = memchr(b'#', s) {
        s = s.get(..n).unwrap_or_default();
    }
    if s.is_empty() {
        return false;
    }
    let elided = dialect.float_elided_parts;
    let Some(n) = next_ws(s) else {
        return float_ok(s, elided);
    };
    if !float_ok(s.get(..n).unwrap_or_default(), elided) {
        return false;
    }
    let ts = skip_ws(tail(s, n + 1));
    ts.is_empty() || float_ok(trim_trailing_ws(ts), elided)
}

/// The end of a quoted string starting at `s[0] == '"'`: the index of its closing quote. With
/// escapes, a quote preceded by an odd number of backslashes does not close it.
fn closing_quote(s: &[u8], escapes: bool) -> Option<usize> {
    let mut off = 1;
    loop {
        let n = off + memchr(b'"', tail(s, off))?;
        if !escapes {
            return Some(n);
        }
        let backslashes = s
            .get(off..n)
            .unwrap_or_default()
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return Some(n);
        }
        off = n + 1;
    }
}

/// Labels as v1.79.5 parses them (`parser.go:240-295` there): `name="value"` pairs. Returns what
/// follows the closing `}`.
fn tags_legacy(mut s: &[u8], escapes: bool) -> Option<&[u8]> {
    loop {
        s = skip_ws(s);
        if let Some(rest) = s.strip_prefix(b"}") {
            return Some(rest);
        }
        let n = memchr(b'=', s)?;
        s = skip_ws(tail(s, n + 1));
        if s.first() != Some(&b'"') {
            return None;
        }
        let end = closing_quote(s, escapes)?;
        s = skip_ws(tail(s, end + 1));
        if let Some(rest) = s.strip_prefix(b"}") {
            return Some(rest);
        }
        s = s.strip_prefix(b",")?;
    }
}

/// Labels as releases with Prometheus 3 quoting parse them (`parser.go:309-392` at master): also
/// `"name"="value"` and a quoted metric name `{"name", ...}`, which may not repeat one given before
/// the brace. Returns what follows the `}` and whether the braces named the metric.
fn tags_quoted(mut s: &[u8], mut named: bool, escapes: bool) -> Option<(&[u8], bool)> {
    let named_before = named;
    loop {
        s = skip_ws(s);
        let Some(n) = memchr(b'"', s) else {
            return s
                .strip_prefix(b"}")
                .map(|rest| (rest, named && !named_before));
        };
        let possible_key = trim_trailing_ws(s.get(..n).unwrap_or_default());
        if possible_key.is_empty() {
            // A quoted name; `s` starts with its quote.
            let end = closing_quote(s, escapes)?;
            s = skip_ws(tail(s, end + 1));
            match s.first() {
                Some(b',' | b'}') => {
                    if named {
                        return None;
                    }
                    named = true;
                    if s.len() > 1 && s.first() == Some(&b',') {
                        s = tail(s, 1);
                    }
                    continue;
                }
                Some(b'=') => s = skip_ws(tail(s, 1)),
                Some(_) => return None,
                // Nothing after the name: the value parse below fails.
                None => {}
            }
        } else if possible_key.last() == Some(&b'=') {
            s = skip_ws(tail(s, possible_key.len()));
        } else {
            return None;
        }
        if s.first() != Some(&b'"') {
            return None;
        }
        let end = closing_quote(s, escapes)?;
        s = skip_ws(tail(s, end + 1));
        if let Some(rest) = s.strip_prefix(b"}") {
            return Some((rest, named && !named_before));
        }
        s = s.strip_prefix(b",")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(body: &str) -> (u64, u64) {
        (
            count(body.as_bytes(), &Dialect::V1_79_5),
            count(body.as_bytes(), &Dialect::LATEST),
        )
    }

    #[test]
    fn counts_sample_lines() {
        let body = "# HELP m help text\n# TYPE m counter\nm 1\nm{a=\"b\"} 2 1700000000000\n\n  \t\n   # indented comment\nm{a=\"b\",c=\"d\"} 3\r\nlast 4";
        assert_eq!(both(body), (4, 4));
    }

    #[test]
    fn invalid_lines_are_not_rows() {
        for line in [
            "m",                   // no value
            "m ",                  // empty value
            "m x",                 // value does not parse
            "m 1 2 3",             // timestamp "2 3"
            "m 1 x",               // timestamp does not parse
            "{a=\"b\"} 1",         // no metric name
            "m{a=\"b\" 1",         // unterminated labels
            "m{a=b} 1",            // unquoted value
            "m{a=\"b} 1",          // unterminated value
            "m{a=\"b\"c=\"d\"} 1", // missing comma
            "m # 1",               // the comment eats the value
            "m\t+1",               // fastfloat does not take '+'
        ] {
            assert_eq!(both(line), (0, 0), "{line:?}");
        }
    }

    #[test]
    fn accepted_oddities() {
        for line in [
            "m 1 # trailing comment",
            "m  1   ",
            "m\t1\t2",
            "m{} 1",
            "m{a=\"b\",} 1",
            "m { a = \"b\" } 1",
            "m{a=\"\"} 1",
            "m{=\"x\"} 1",
            "m{a=\"x\\\"y\"} 1",
            "m{a=\"x\\\\\"} 1",
            "m NaN",
            "m -Inf",
            "m 1 -1",
            "m 1e3 1.5",
        ] {
            assert_eq!(both(line), (1, 1), "{line:?}");
        }
    }

    #[test]
    fn release_differences() {
        // Quoted names arrived with Prometheus 3 syntax.
        assert_eq!(both("{\"m\"} 1"), (0, 1));
        assert_eq!(both("{\"m\",\"a\"=\"b\"} 1"), (0, 1));
        // The old parser takes everything up to '=' as the name, quotes included.
        assert_eq!(both("m{\"a.b\"=\"c\"} 1"), (1, 1));
        assert_eq!(both("m{\"m2\"} 1"), (0, 0));
        // fastfloat 1.6.4 reads ".5" and "5.".
        assert_eq!(both("m .5"), (0, 1));
        assert_eq!(both("m 5."), (0, 1));
        // A quirk of the newer label parser: everything before the first quote is the key.
        assert_eq!(both("m{a=1,b=\"c\"} 1"), (0, 1));
    }

    #[test]
    fn escapes_only_when_there_is_a_backslash() {
        // The quote after the backslash is escaped, so the value goes on to the next quote.
        assert_eq!(both("m{a=\"x\\\",b=\"y\"} 1"), (0, 0));
        assert_eq!(both("m{a=\"x\\\\\",b=\"y\"} 1"), (1, 1));
    }
}
