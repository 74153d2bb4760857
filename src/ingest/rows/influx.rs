//! Rows of an Influx line-protocol body (`/influx/write`, `/influx/api/v2/write`).
//!
//! One row per field: VictoriaMetrics adds `len(r.Fields)` of every parsed line to
//! `vm_rows_inserted_total{type="influx"}` (`app/vminsert/influx/request_handler.go:76` at master,
//! `:79` at v1.79.5), whatever `-influxSkipMeasurement`, `-influxSkipSingleField` or the
//! measurement/field separator make of the metric names. String fields are rows too: a quoted value
//! is parsed best-effort as a number and becomes 0 when it is not one
//! (`lib/protoparser/influx/parser.go:355-398` at master); booleans are 1 and 0.
//!
//! A line that does not parse is dropped (`parser.go:224-245`, counted in
//! `vm_rows_invalid_total{type="influx"}`) when the body is streamed (`Stream-Mode: 1`, or always
//! before v1.105 and LTS v1.97.10, v1.102.5); in batch mode (the default since) one bad line fails
//! the whole request, so a 2xx
//! answer means every line parsed and counting valid lines gives the same number either way. Empty
//! lines and lines starting with `#` are skipped. A line parses (`Row.unmarshal`, `parser.go:
//! 110-171`) when it has an unescaped space after `measurement[,tags]`, every tag has an unescaped
//! `=`, every field has one with a non-empty key and a value (`i`/`u` suffixed values must be
//! integers), and what follows the fields, if anything, is an integer timestamp; before v1.131
//! (LTS v1.110.25, v1.122.10) whitespace after the fields without a timestamp failed the line.
//!
//! VictoriaMetrics honours backslash escapes only in blocks containing a backslash; a line without
//! one parses the same either way, so the escape-aware search is used for every line.

use memchr::memchr;

use super::number::{parse_int64, uint64_ok};
use super::{lines, trim_cr, Dialect};

pub(super) fn count(data: &[u8], dialect: &Dialect) -> u64 {
    let mut rows = 0u64;
    for line in lines(data) {
        let s = trim_cr(line);
        if s.is_empty() || s.first() == Some(&b'#') {
            continue;
        }
        rows = rows.saturating_add(line_fields(s, dialect).unwrap_or(0));
    }
    rows
}

fn tail(s: &[u8], from: usize) -> &[u8] {
    s.get(from..).unwrap_or_default()
}

fn head(s: &[u8], to: usize) -> &[u8] {
    s.get(..to).unwrap_or_default()
}

fn strip_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    s
}

/// The first `ch` not escaped by an odd run of backslashes.
fn next_unescaped(s: &[u8], ch: u8) -> Option<usize> {
    let mut from = 0;
    loop {
        let n = from + memchr(ch, tail(s, from))?;
        let backslashes = s
            .get(from..n)
            .unwrap_or_default()
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return Some(n);
        }
        from = n + 1;
    }
}

/// Whether `s` leaves a quoted string open.
fn in_quote(mut s: &[u8]) -> bool {
    let mut open = false;
    while let Some(n) = next_unescaped(s, b'"') {
        open = !open;
        s = tail(s, n + 1);
    }
    open
}

/// The first unescaped `ch` outside double quotes (when the fields have quotes at all).
fn next_unquoted(s: &[u8], ch: u8, quoted: bool) -> Option<usize> {
    if !quoted {
        return next_unescaped(s, ch);
    }
    let mut from = 0;
    loop {
        let rest = tail(s, from);
        let n = next_unescaped(rest, ch)?;
        if !in_quote(head(rest, n)) {
            return Some(from + n);
        }
        // Inside a quoted value: resume after the quote that closes it.
        let after = tail(rest, n + 1);
        let q = next_unescaped(after, b'"')?;
        from += n + 1 + q + 1;
    }
}

fn line_fields(s: &[u8], dialect: &Dialect) -> Option<u64> {
    let n = next_unescaped(s, b' ')?;
    let measurement_tags = head(s, n);
    let s = strip_spaces(tail(s, n + 1));
    if let Some(n) = next_unescaped(measurement_tags, b',') {
        tags_ok(tail(measurement_tags, n + 1))?;
    }
    let quoted = next_unescaped(s, b'"').is_some();
    let Some(n) = next_unquoted(s, b' ', quoted) else {
        return fields(s, quoted);
    };
    let count = fields(head(s, n), quoted)?;
    let ts = strip_spaces(tail(s, n + 1));
    if ts.is_empty() && dialect.influx_optional_timestamp {
        return Some(count);
    }
    parse_int64(ts).map(|_| count)
}

fn tags_ok(mut s: &[u8]) -> Option<()> {
    loop {
        let (tag, rest) = match next_unescaped(s, b',') {
            Some(n) => (head(s, n), Some(tail(s, n + 1))),
            None => (s, None),
        };
        next_unescaped(tag, b'=')?;
        match rest {
            Some(r) => s = r,
            None => return Some(()),
        }
    }
}

fn fields(mut s: &[u8], quoted: bool) -> Option<u64> {
    let mut n_fields = 0u64;
    loop {
        let (field, rest) = match next_unquoted(s, b',', quoted) {
            Some(n) => (head(s, n), Some(tail(s, n + 1))),
            None => (s, None),
        };
        let eq = next_unescaped(field, b'=')?;
        if eq == 0 || !value_ok(tail(field, eq + 1), quoted) {
            return None;
        }
        n_fields += 1;
        match rest {
            Some(r) => s = r,
            None => return Some(n_fields),
        }
    }
}

fn value_ok(v: &[u8], quoted: bool) -> bool {
    match v {
        [] => false,
        [b'"', ..] if quoted => v.len() >= 2 && v.last() == Some(&b'"'),
        [digits @ .., b'i'] => parse_int64(digits).is_some(),
        [digits @ .., b'u'] => uint64_ok(digits),
        // Booleans, and anything else, which is parsed best-effort (never fails).
        _ => true,
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
    fn one_row_per_field() {
        let body = "cpu,host=a usage=1,idle=2i,ok=t 1700000000000000000\n\
                    # comment\n\
                    \n\
                    mem free=3u\r\n\
                    disk,dev=sda used=0.5,label=\"a string\",flag=FALSE";
        assert_eq!(both(body), (7, 7));
    }

    #[test]
    fn string_fields_count() {
        assert_eq!(both("m s=\"hello world, again\",n=1"), (2, 2));
        assert_eq!(both("m s=\"has \\\" quote\",n=1 123"), (2, 2));
        assert_eq!(both("m s=\"\" 1"), (1, 1));
    }

    #[test]
    fn invalid_lines() {
        for line in [
            "m",             // no fields
            "m ",            // empty field
            "m f",           // field without '='
            "m =1",          // empty field key
            "m f=",          // empty value
            "m f=1 x",       // bad timestamp
            "m f=1 1.5",     // timestamps are integers
            "m f=1 1 2",     // two timestamps
            "m,t f=1",       // tag without '='
            "m f=1.5i",      // bad integer
            "m f=-1u",       // bad unsigned
            "m f=i",         // empty integer
            "m f=\"open",    // unterminated string
            "m f=1,g=\"a b", // unterminated string with a space
        ] {
            assert_eq!(both(line), (0, 0), "{line:?}");
        }
    }

    #[test]
    fn accepted_oddities() {
        for (line, rows) in [
            (" f=1", 1),                      // empty measurement
            ("m,t=,=v f=1", 1),               // empty tags are skipped
            ("m    f=1", 1),                  // several spaces
            ("m f=abc", 1),                   // best-effort number
            ("m\\ x,t\\,a=b\\ c f\\=g=1", 1), // escaped separators
            ("m f=9223372036854775807i", 1),
            ("m f=-9223372036854775808i 1", 1),
            ("m f=1,g=2,h=3 -5", 3),
        ] {
            assert_eq!(both(line), (rows, rows), "{line:?}");
        }
    }

    #[test]
    fn trailing_whitespace_without_timestamp() {
        assert_eq!(both("m f=1 "), (0, 1));
        assert_eq!(both("m f=1   \r"), (0, 1));
        assert_eq!(count(b"m f=1 ", &Dialect::for_version(1, 110, 25)), 1);
        assert_eq!(count(b"m f=1 ", &Dialect::for_version(1, 110, 24)), 0);
    }

    #[test]
    fn quotes_protect_separators() {
        assert_eq!(both("m a=\"x=1,y 2\",b=2 10"), (2, 2));
        // A quote that appears only in the timestamp part still makes the fields quote-aware.
        assert_eq!(both("m a=1 \"1\""), (0, 0));
    }
}
