//! Which number spellings VictoriaMetrics' parsers accept, so a line we count is a line it kept.
//!
//! Every text format decides "valid row or dropped line" partly on whether a value parses, and
//! VictoriaMetrics uses `github.com/valyala/fastjson/fastfloat` for that, which falls back to Go's
//! `strconv` for long inputs. These predicates answer only "accepted or not" (the values themselves
//! never matter for counting), following that code path by path: fastfloat v1.6.3 (up to
//! v1.85/v1.79.6) rejects `.5` and `5.`, v1.6.4 accepts them ([`crate::ingest::rows::Dialect`]'s
//! `float_elided_parts`).

#[inline]
fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

/// `fastfloat.Parse(s)` succeeds.
pub fn float_ok(s: &[u8], elided_parts: bool) -> bool {
    let len = s.len();
    let Some(&first) = s.first() else {
        return false;
    };
    let mut i = 0usize;
    if first == b'-' {
        i = 1;
        if i >= len {
            return false;
        }
    }
    let at = |k: usize| s.get(k).copied().unwrap_or(0);
    if elided_parts && at(i) == b'.' && !is_digit(at(i + 1)) {
        return false;
    }
    let j = i;
    while i < len && is_digit(at(i)) {
        i += 1;
        if i > 18 {
            // The integer part may not fit uint64: fastfloat hands the whole string to strconv.
            return go_parse_float_ok(s);
        }
    }
    if i <= j && (!elided_parts || at(i) != b'.') {
        // No digits: only inf, infinity and nan (any case, one optional '+') are left.
        let mut rest = s.get(i..).unwrap_or_default();
        if let Some(r) = rest.strip_prefix(b"+") {
            rest = r;
        }
        return rest.eq_ignore_ascii_case(b"inf")
            || rest.eq_ignore_ascii_case(b"infinity")
            || rest.eq_ignore_ascii_case(b"nan");
    }
    if i >= len {
        return true;
    }
    if at(i) == b'.' {
        i += 1;
        if i >= len {
            return elided_parts;
        }
        while i < len && is_digit(at(i)) {
            i += 1;
            if i - j >= 17 {
                // Mantissa too long for the fast path.
                return go_parse_float_ok(s);
            }
        }
        if i >= len {
            return true;
        }
    }
    if at(i) == b'e' || at(i) == b'E' {
        i += 1;
        if i >= len {
            return false;
        }
        if at(i) == b'+' || at(i) == b'-' {
            i += 1;
            if i >= len {
                return false;
            }
        }
        let mut exp = 0u32;
        let k = i;
        while i < len && is_digit(at(i)) {
            exp = exp * 10 + u32::from(at(i) - b'0');
            i += 1;
            if exp > 300 {
                return go_parse_float_ok(s);
            }
        }
        return i > k && i >= len;
    }
    false
}

/// `strconv.ParseFloat(s, 64)` succeeds or overflows to ±Inf (which fastfloat accepts), for the
/// strings fastfloat falls back with: they start with `-` or a digit, so Go's `inf`/`nan`/hex forms
/// cannot occur and only the decimal syntax is left (underscores need a base prefix, so none).
fn go_parse_float_ok(s: &[u8]) -> bool {
    let s = s.strip_prefix(b"-").unwrap_or(s);
    let mut i = 0;
    let at = |k: usize| s.get(k).copied().unwrap_or(0);
    let mut digits = 0;
    while is_digit(at(i)) {
        i += 1;
        digits += 1;
    }
    if at(i) == b'.' {
        i += 1;
        while is_digit(at(i)) {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return false;
    }
    if at(i) == b'e' || at(i) == b'E' {
        i += 1;
        if at(i) == b'+' || at(i) == b'-' {
            i += 1;
        }
        let k = i;
        while is_digit(at(i)) {
            i += 1;
        }
        if i == k {
            return false;
        }
    }
    i == s.len()
}

/// `fastfloat.ParseInt64(s)`, returning the value.
pub fn parse_int64(s: &[u8]) -> Option<i64> {
    let (minus, digits) = match s.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    // fastfloat's own loop and its strconv fallback (taken from the 19th byte on) accept the same
    // strings: an optional '-', at least one digit, nothing else, and a value that fits int64.
    if digits.is_empty() || !digits.iter().all(|b| is_digit(*b)) {
        return None;
    }
    let mut v: i128 = 0;
    for &b in digits {
        v = v * 10 + i128::from(b - b'0');
        if v > 1 << 63 {
            return None;
        }
    }
    let v = if minus { -v } else { v };
    i64::try_from(v).ok()
}

/// `fastfloat.ParseUint64(s)` succeeds.
pub fn uint64_ok(s: &[u8]) -> bool {
    if s.is_empty() || !s.iter().all(|b| is_digit(*b)) {
        return false;
    }
    let mut v: u128 = 0;
    for &b in s {
        v = v * 10 + u128::from(b - b'0');
        if v > u128::from(u64::MAX) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_both_versions_accept() {
        for s in [
            "0",
            "1",
            "-1",
            "1.5",
            "-0.25",
            "1e3",
            "1E-3",
            "1.5e+10",
            "12345678901234567890",
            "1234567890123456789.5",
            "1.2345678901234567890123",
            "1e400",
            "-1e999",
            "Inf",
            "-inf",
            "+Inf",
            "infinity",
            "-Infinity",
            "NaN",
            "nan",
            "-nan",
            "+NaN",
            "-+inf",
            "5.e3",
            "00012",
            "1e0000000000000000000000000001",
        ] {
            assert!(float_ok(s.as_bytes(), false), "{s} (old)");
            assert!(float_ok(s.as_bytes(), true), "{s} (new)");
        }
    }

    #[test]
    fn floats_both_versions_refuse() {
        for s in [
            "",
            "-",
            "+",
            "+5",
            "--5",
            ".",
            "-.",
            "e5",
            "1e",
            "1e+",
            "1x",
            "0x10",
            "1_000",
            "inf5",
            "1.5.5",
            " 1",
            "1 ",
            "12345678901234567890x",
            "1e301x",
            "1.5e",
            "∞",
            "nul",
        ] {
            assert!(!float_ok(s.as_bytes(), false), "{s} (old)");
            assert!(!float_ok(s.as_bytes(), true), "{s} (new)");
        }
    }

    #[test]
    fn elided_integer_or_fraction_part_is_version_dependent() {
        for s in [".5", "-.5", "5.", "-5.", ".5e3"] {
            assert!(!float_ok(s.as_bytes(), false), "{s} (old)");
            assert!(float_ok(s.as_bytes(), true), "{s} (new)");
        }
        // strconv's fallback accepted these even before fastfloat did.
        assert!(float_ok(b"1234567890123456789.", false));
        assert!(!float_ok(b".e5", true));
    }

    #[test]
    fn integers() {
        assert_eq!(parse_int64(b"0"), Some(0));
        assert_eq!(parse_int64(b"-12"), Some(-12));
        assert_eq!(parse_int64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int64(b"9223372036854775808"), None);
        assert_eq!(parse_int64(b"000000000000000000000001"), Some(1));
        for s in [
            "",
            "-",
            "+1",
            "1.0",
            "1e3",
            " 1",
            "1x",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_int64(s.as_bytes()), None, "{s}");
        }
        assert!(uint64_ok(b"18446744073709551615"));
        assert!(!uint64_ok(b"18446744073709551616"));
        assert!(!uint64_ok(b"-1"));
        assert!(!uint64_ok(b""));
    }
}
