//! Rows of a CSV body (`/api/v1/import/csv?format=...`).
//!
//! The `format` argument names columns, e.g. `1:metric:ask,2:metric:bid,3:time:unix_s,4:label:ticker`
//! (`lib/protoparser/csvimport/column_descriptor.go:56-121`), and each line becomes one row per
//! `metric` column: VictoriaMetrics adds `len(rows)` to `vm_rows_inserted_total{type="csvimport"}`
//! (`app/vminsert/csvimport/request_handler.go:56` at master, `:63` at v1.79.5). A line that does
//! not parse (`lib/protoparser/csvimport/parser.go:111-196` at master, `:77-146` at v1.79.5) is
//! dropped and counted in `vm_rows_invalid_total{type="csvimport"}`: fewer columns than the highest
//! position in `format`, a metric value fastfloat rejects, a timestamp its format rejects, or a
//! broken quoted field (in any column, even one `format` does not name).
//!
//! Since v1.91 (LTS v1.87.6, `scanner.go` and `parser.go:138`) empty columns are skipped, so an
//! empty metric column is simply not a row; before, it failed the line. That release also made a
//! trailing comma add an empty last column and accepted `'` quotes. Header lines (detected since
//! then on the first line) are lines whose metric or time columns do not parse, so they are never
//! rows either way.
//!
//! Timestamps: `unix_s`, `unix_ms` and `unix_ns` are integers (seconds above `i64::MAX / 1000`
//! fail). `rfc3339` is checked for the strict `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` form, which Go
//! always accepts, and for not starting like a date, which it never does; anything in between, and
//! every `custom:` layout, is counted as valid and makes the count inexact, since only Go's
//! `time.Parse` knows.

use memchr::memchr;

use super::number::{float_ok, parse_int64};
use super::{lines, trim_cr, CountError, Counted, Dialect};

/// Largest column position (`maxColumnsPerRow`).
const MAX_COLUMNS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Time {
    UnixS,
    UnixMs,
    UnixNs,
    Rfc3339,
    Custom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Ignored,
    Time(Time),
    Label,
    Metric,
}

/// The parsed `format` argument: what each column position holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Columns {
    columns: Vec<Column>,
}

/// `strconv.Atoi`: an optional sign and decimal digits that fit 64 bits.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

impl Columns {
    pub(super) fn parse(format: &str) -> Result<Columns, CountError> {
        let bad = |why: String| Err(CountError::CsvFormat(why));
        let mut columns: Vec<Column> = Vec::new();
        let mut has_metric = false;
        let mut has_time = false;
        for (i, entry) in format.split(',').enumerate() {
            let entry_no = i + 1;
            let mut parts = entry.splitn(3, ':');
            let (Some(pos), Some(kind), Some(ext)) = (parts.next(), parts.next(), parts.next())
            else {
                return bad(format!(
                    "entry #{entry_no} must look like <column_pos>:<column_type>:<extension>"
                ));
            };
            let Some(pos) = go_atoi(pos) else {
                return bad(format!("entry #{entry_no} has an invalid column position"));
            };
            let pos = match usize::try_from(pos) {
                Ok(p) if (1..=MAX_COLUMNS).contains(&p) => p,
                _ => {
                    return bad(format!(
                        "entry #{entry_no} has a column position outside 1..={MAX_COLUMNS}"
                    ))
                }
            };
            let column = match kind {
                "time" => {
                    if has_time {
                        return bad(format!("entry #{entry_no} is a second time column"));
                    }
                    has_time = true;
                    Column::Time(match ext {
                        "unix_s" => Time::UnixS,
                        "unix_ms" => Time::UnixMs,
                        "unix_ns" => Time::UnixNs,
                        "rfc3339" => Time::Rfc3339,
                        e if e.starts_with("custom:") => Time::Custom,
                        _ => return bad(format!("entry #{entry_no} has an unknown time format")),
                    })
                }
                "label" | "metric" if ext.is_empty() => {
                    return bad(format!("entry #{entry_no} has an empty name"));
                }
                "label" => Column::Label,
                "metric" => {
                    has_metric = true;
                    Column::Metric
                }
                _ => return bad(format!("entry #{entry_no} has an unknown column type")),
            };
            if columns.len() < pos {
                columns.resize(pos, Column::Ignored);
            }
            match columns.get_mut(pos - 1) {
                Some(slot @ Column::Ignored) => *slot = column,
                _ => return bad(format!("entry #{entry_no} repeats column position {pos}")),
            }
        }
        if !has_metric {
            return bad("no metric column".to_string());
        }
        Ok(Columns { columns })
    }

    pub(super) fn count(&self, data: &[u8], dialect: &Dialect) -> Counted {
        let mut rows = 0u64;
        let mut exact = true;
        for line in lines(data) {
            let line = trim_cr(line);
            if line.is_empty() {
                continue;
            }
            let (n, sure) = self.line_rows(line, dialect);
            rows = rows.saturating_add(n);
            exact &= sure;
        }
        Counted { rows, exact }
    }

    /// Rows of one line, and whether that is certain.
    fn line_rows(&self, line: &[u8], dialect: &Dialect) -> (u64, bool) {
        let skip_empty = dialect.csv_skips_empty_columns;
        let mut scanner = Scanner {
            rest: line,
            last: false,
            modern: skip_empty,
        };
        let mut col = 0usize;
        let mut metrics = 0u64;
        let mut sure = true;
        let mut failed = false;
        loop {
            let value = match scanner.next_column() {
                Ok(Some(v)) => v,
                Ok(None) => break,
                Err(()) => {
                    failed = true;
                    break;
                }
            };
            let Some(column) = self.columns.get(col) else {
                // Columns past the format are still scanned (a broken quote there fails the line).
                continue;
            };
            col += 1;
            if skip_empty && (value.is_empty() || *column == Column::Ignored) {
                continue;
            }
            match column {
                Column::Ignored | Column::Label => {}
                Column::Time(t) => match timestamp_ok(*t, value) {
                    Judged::Valid => {}
                    Judged::Unsure => sure = false,
                    Judged::Invalid => {
                        failed = true;
                        break;
                    }
                },
                Column::Metric => {
                    metrics += 1;
                    if !float_ok(value, dialect.float_elided_parts) {
                        // VictoriaMetrics records the error and stops reading columns.
                        failed = true;
                        break;
                    }
                }
            }
        }
        if failed || col < self.columns.len() {
            // Certain even after an unsure timestamp: had Go refused it, the line would fail too.
            return (0, true);
        }
        (metrics, sure)
    }
}

/// `csvimport.scanner`: columns separated by commas, optionally quoted with `"` (and, in the newer
/// scanner, `'`), a doubled quote standing for one.
struct Scanner<'a> {
    rest: &'a [u8],
    last: bool,
    modern: bool,
}

impl<'a> Scanner<'a> {
    fn next_column(&mut self) -> Result<Option<&'a [u8]>, ()> {
        if self.modern {
            self.next_modern()
        } else {
            self.next_legacy()
        }
    }

    fn next_modern(&mut self) -> Result<Option<&'a [u8]>, ()> {
        if self.last {
            return Ok(None);
        }
        let s = self.rest;
        if let Some(&q @ (b'"' | b'\'')) = s.first() {
            let (field, tail) = quoted_modern(s, q)?;
            match tail.split_first() {
                None => {
                    self.last = true;
                    self.rest = tail;
                }
                Some((b',', after)) => self.rest = after,
                Some(_) => return Err(()),
            }
            return Ok(Some(field));
        }
        match memchr(b',', s) {
            Some(n) => {
                self.rest = s.get(n + 1..).unwrap_or_default();
                Ok(s.get(..n))
            }
            None => {
                self.rest = &[];
                self.last = true;
                Ok(Some(s))
            }
        }
    }

    fn next_legacy(&mut self) -> Result<Option<&'a [u8]>, ()> {
        let s = self.rest;
        if s.is_empty() {
            return Ok(None);
        }
        if s.first() == Some(&b'"') {
            let (field, tail) = quoted_legacy(s)?;
            self.rest = tail;
            return Ok(Some(field));
        }
        match memchr(b',', s) {
            Some(n) => {
                self.rest = s.get(n + 1..).unwrap_or_default();
                Ok(s.get(..n))
            }
            None => {
                self.rest = &[];
                Ok(Some(s))
            }
        }
    }
}

/// A quoted field and what follows it (master `readQuotedField`). The field is returned still
/// escaped: only its emptiness and, for values, its number syntax matter, and a doubled quote is
/// never part of a valid number.
fn quoted_modern(s: &[u8], q: u8) -> Result<(&[u8], &[u8]), ()> {
    let mut off = 1 + memchr(q, s.get(1..).unwrap_or_default()).ok_or(())? + 1;
    if s.get(off) != Some(&q) {
        return Ok((
            s.get(1..off - 1).unwrap_or_default(),
            s.get(off..).unwrap_or_default(),
        ));
    }
    loop {
        off += 1;
        off += memchr(q, s.get(off..).unwrap_or_default()).ok_or(())? + 1;
        if s.get(off) == Some(&q) {
            continue;
        }
        return Ok((
            s.get(1..off - 1).unwrap_or_default(),
            s.get(off..).unwrap_or_default(),
        ));
    }
}

/// v1.79.5's `readQuotedField`: the tail after the separating comma.
fn quoted_legacy(s: &[u8]) -> Result<(&[u8], &[u8]), ()> {
    let mut rest = s.get(1..).unwrap_or_default();
    loop {
        let n = memchr(b'"', rest).ok_or(())?;
        rest = rest.get(n + 1..).unwrap_or_default();
        match rest.split_first() {
            None => return Ok((s.get(1..s.len() - 1).unwrap_or_default(), &[])),
            Some((b'"', after)) => rest = after,
            Some((b',', after)) => {
                let end = s.len() - rest.len() - 1;
                return Ok((s.get(1..end).unwrap_or_default(), after));
            }
            Some(_) => return Err(()),
        }
    }
}

enum Judged {
    Valid,
    Invalid,
    Unsure,
}

fn timestamp_ok(t: Time, s: &[u8]) -> Judged {
    let yes = |ok: bool| if ok { Judged::Valid } else { Judged::Invalid };
    match t {
        Time::UnixS => yes(parse_int64(s).is_some_and(|n| n <= i64::MAX / 1000)),
        Time::UnixMs | Time::UnixNs => yes(parse_int64(s).is_some()),
        Time::Rfc3339 => rfc3339(s),
        Time::Custom => Judged::Unsure,
    }
}

fn digits<const N: usize>(s: &[u8], at: usize) -> Option<u32> {
    let d = s.get(at..at + N)?;
    d.iter().try_fold(0u32, |v, b| {
        b.is_ascii_digit().then(|| v * 10 + u32::from(b - b'0'))
    })
}

/// `time.Parse(time.RFC3339, s)`: Go's strict fast path and its general layout parser both take
/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` with calendar ranges checked; the general parser also
/// takes a one-digit hour and a comma before the fraction, and Go releases differ on time-zone
/// offset ranges, so those are left unsure. Everything not shaped like that fails in Go too.
fn rfc3339(s: &[u8]) -> Judged {
    let separators = [(4, b'-'), (7, b'-'), (10, b'T')];
    if separators.iter().any(|(i, c)| s.get(*i) != Some(c)) {
        return Judged::Invalid;
    }
    let (Some(year), Some(month), Some(day)) =
        (digits::<4>(s, 0), digits::<2>(s, 5), digits::<2>(s, 8))
    else {
        return Judged::Invalid;
    };
    let mut sure = true;
    let mut rest = s.get(11..).unwrap_or_default();
    let hour_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let hour = match hour_len {
        1 => {
            sure = false;
            digits::<1>(rest, 0)
        }
        2 => digits::<2>(rest, 0),
        _ => None,
    };
    rest = rest.get(hour_len..).unwrap_or_default();
    let (Some(hour), [b':', m1, m2, b':', s1, s2, tail @ ..]) = (hour, rest) else {
        return Judged::Invalid;
    };
    let (Some(minute), Some(second)) = (digits::<2>(&[*m1, *m2], 0), digits::<2>(&[*s1, *s2], 0))
    else {
        return Judged::Invalid;
    };
    let mut rest = tail;
    if let [sep @ (b'.' | b','), frac @ ..] = rest {
        let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return Judged::Invalid;
        }
        sure &= *sep == b'.';
        rest = frac.get(n..).unwrap_or_default();
    }
    match rest {
        b"Z" => {}
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            let (Some(tz_hour), Some(tz_minute)) =
                (digits::<2>(&[*h1, *h2], 0), digits::<2>(&[*m1, *m2], 0))
            else {
                return Judged::Invalid;
            };
            sure &= tz_hour <= 23 && tz_minute <= 59;
        }
        _ => return Judged::Invalid,
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Judged::Invalid,
    };
    if day == 0 || day > days || hour > 23 || minute > 59 || second > 59 {
        return Judged::Invalid;
    }
    if sure {
        Judged::Valid
    } else {
        Judged::Unsure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_with(format: &str, body: &str, dialect: &Dialect) -> Counted {
        Columns::parse(format)
            .unwrap()
            .count(body.as_bytes(), dialect)
    }

    fn both(format: &str, body: &str) -> (u64, u64) {
        (
            count_with(format, body, &Dialect::V1_79_5).rows,
            count_with(format, body, &Dialect::LATEST).rows,
        )
    }

    const FMT: &str = "1:metric:ask,2:metric:bid,3:time:unix_s,4:label:ticker";

    #[test]
    fn rows_per_metric_column() {
        let body = "1.5,1.6,1700000000,GOOG\n\n2,3,1700000001,AAPL\r\n";
        assert_eq!(both(FMT, body), (4, 4));
        // Extra columns are ignored.
        assert_eq!(both(FMT, "1,2,3,x,y,z"), (2, 2));
    }

    #[test]
    fn invalid_lines() {
        for line in [
            "1,2,3",                  // missing the label column
            "x,2,3,T",                // bad value
            "1,2,x,T",                // bad timestamp
            "1,2,1.5,T",              // unix_s is an integer
            "1,2,9223372036854776,T", // seconds overflow milliseconds
            "\"1,2,3,T",              // unterminated quote
            "1,2,3,T,\"x",            // unterminated quote past the format
            "\"1\"x,2,3,T",           // garbage after a quoted field
            "ask,bid,time,ticker",    // a header
        ] {
            assert_eq!(both(FMT, line), (0, 0), "{line:?}");
        }
    }

    #[test]
    fn quoted_fields() {
        assert_eq!(both(FMT, "\"1\",\"2\",\"3\",\"a,b\"\"c\""), (2, 2));
        assert_eq!(both(FMT, "1,2,3,\"T\""), (2, 2));
        // Single quotes arrived with the newer scanner.
        assert_eq!(both(FMT, "'1',2,3,T"), (0, 2));
    }

    #[test]
    fn empty_columns() {
        // Newer releases skip an empty metric column; older ones fail the line.
        assert_eq!(both(FMT, ",2,3,T"), (0, 1));
        assert_eq!(both(FMT, "1,2,,T"), (0, 2));
        // A trailing comma: an empty fourth column (newer) or too few columns (older).
        assert_eq!(both(FMT, "1,2,3,"), (0, 2));
        // An empty label is a label with an empty value in both.
        assert_eq!(both("1:metric:m,2:label:l", "1,"), (0, 1));
        assert_eq!(both("1:metric:m,3:label:l", "1,,x"), (1, 1));
    }

    #[test]
    fn rfc3339_timestamps() {
        let f = "1:time:rfc3339,2:metric:m";
        let exact = |body: &str, rows: u64| {
            let c = count_with(f, body, &Dialect::LATEST);
            assert_eq!(c, Counted { rows, exact: true }, "{body}");
        };
        exact("2024-02-29T23:59:59Z,1", 1);
        exact("2024-01-01T00:00:00.123456789+05:30,1", 1);
        exact("2023-02-29T00:00:00Z,1", 0);
        exact("2023-02-29,1", 0);
        exact("yesterday,1", 0);
        exact("2024-01-01 00:00:00Z,1", 0);
        exact("2024-01-01T00:00:60Z,1", 0);
        exact("2024-13-01T00:00:00Z,1", 0);
        let c = count_with(f, "2024-01-01T1:00:00Z,1", &Dialect::LATEST);
        assert_eq!(
            c,
            Counted {
                rows: 1,
                exact: false
            }
        );
        let c = count_with(f, "\"2024-01-01T10:00:00,5Z\",1", &Dialect::LATEST);
        assert_eq!(
            c,
            Counted {
                rows: 1,
                exact: false
            }
        );
        let c = count_with(
            "1:time:custom:2006-01-02,2:metric:m",
            "2024-01-01,1",
            &Dialect::LATEST,
        );
        assert_eq!(
            c,
            Counted {
                rows: 1,
                exact: false
            }
        );
    }

    #[test]
    fn format_argument() {
        assert!(Columns::parse("1:metric:m").is_ok());
        assert!(Columns::parse("+2:metric:m,1:label:x").is_ok());
        for bad in [
            "",
            "1:metric",
            "0:metric:m",
            "-1:metric:m",
            "65537:metric:m",
            "x:metric:m",
            "1:label:l",
            "1:metric:",
            "1:metric:m,1:metric:n",
            "1:metric:m,2:time:unix_s,3:time:unix_ms",
            "1:metric:m,2:time:iso",
            "1:value:m",
            "1:metric:m,",
        ] {
            assert!(Columns::parse(bad).is_err(), "{bad:?}");
        }
        // A time layout may hold colons.
        assert!(Columns::parse("1:metric:m,2:time:custom:15:04:05").is_ok());
    }
}
