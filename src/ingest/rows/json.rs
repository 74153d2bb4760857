//! Rows of a JSON-lines body (`/api/v1/import`, what `/api/v1/export` produces).
//!
//! Each line is one object `{"metric":{...},"values":[...],"timestamps":[...]}` and VictoriaMetrics
//! adds `len(values)` of every line it parsed to `vm_rows_inserted_total{type="vmimport"}`
//! (`app/vminsert/vmimport/request_handler.go:51` at master, `:54` at v1.79.5). A line that does not
//! parse is dropped and counted in `vm_rows_invalid_total{type="vmimport"}`
//! (`lib/protoparser/vmimport/parser.go:229-248` at master). A line parses
//! (`parser.go:54-110`) when it is one JSON value that `github.com/valyala/fastjson` accepts, that
//! value is an object whose `metric` is an object with at least one tag, `values` is a non-empty
//! array of numbers (or, since v1.82, `null` and the strings `"NaN"`, `"Inf"`, ...), and
//! `timestamps` is an array of integers of the same length.
//!
//! fastjson is lenient in ways that matter here, and this scanner follows it: string contents are
//! not validated (bad escapes, control bytes and invalid UTF-8 pass), numbers are any run of
//! `0-9 . e E + -` (judged later by fastfloat), `NaN`/`Inf` are numbers, nesting is limited to 300
//! levels, and object keys are compared escaped first and unescaped only when that finds nothing
//! (`Object.Get`). Tag values of any type are accepted (a bug in `unmarshalTags` ignores their
//! type). Nothing is allocated: the line is walked once to validate it and find the three keys, and
//! the two arrays are walked again to judge their elements.

use memchr::memchr;

use super::number::{float_ok, parse_int64};
use super::{lines, trim_cr, Dialect};

/// fastjson's `MaxDepth`.
const MAX_DEPTH: u32 = 300;

pub(super) fn count(data: &[u8], dialect: &Dialect) -> u64 {
    lines(data)
        .map(|line| line_rows(trim_cr(line), dialect).unwrap_or(0))
        .fold(0u64, u64::saturating_add)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
    String,
    Number,
    True,
    False,
    Null,
}

/// A parsed value: its kind and where it is. For strings the span is the raw content between the
/// quotes; for everything else the whole token.
#[derive(Debug, Clone, Copy)]
struct Val {
    kind: Kind,
    start: usize,
    end: usize,
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(s: &'a [u8]) -> Parser<'a> {
        Parser { s, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn rest(&self) -> &'a [u8] {
        self.s.get(self.pos..).unwrap_or_default()
    }

    fn span(&self, v: &Val) -> &'a [u8] {
        self.s.get(v.start..v.end).unwrap_or_default()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek() == Some(b)).then(|| self.pos += 1)
    }

    fn value(&mut self, depth: u32) -> Option<Val> {
        let first = self.peek()?;
        let depth = depth + 1;
        if depth > MAX_DEPTH {
            return None;
        }
        let start = self.pos;
        let kind = match first {
            b'{' => {
                self.pos += 1;
                self.object_body(depth, |_, _| {})?;
                Kind::Object
            }
            b'[' => {
                self.pos += 1;
                self.array_body(depth, |_| Some(()))?;
                Kind::Array
            }
            b'"' => {
                let (start, end) = self.string()?;
                return Some(Val {
                    kind: Kind::String,
                    start,
                    end,
                });
            }
            b't' => self.literal(b"true", Kind::True)?,
            b'f' => self.literal(b"false", Kind::False)?,
            b'n' if self.rest().starts_with(b"null") => self.literal(b"null", Kind::Null)?,
            b'n' => {
                let word = self.rest().get(..3)?;
                if !word.eq_ignore_ascii_case(b"nan") {
                    return None;
                }
                self.pos += 3;
                Kind::Number
            }
            _ => {
                self.number()?;
                Kind::Number
            }
        };
        Some(Val {
            kind,
            start,
            end: self.pos,
        })
    }

    fn literal(&mut self, word: &[u8], kind: Kind) -> Option<Kind> {
        self.rest().starts_with(word).then(|| {
            self.pos += word.len();
            kind
        })
    }

    /// `parseRawNumber`: a run of number bytes, or `inf`/`nan` (any case) after at most a sign.
    fn number(&mut self) -> Option<()> {
        let rest = self.rest();
        let run = rest
            .iter()
            .take_while(|b| matches!(b, b'0'..=b'9' | b'.' | b'-' | b'e' | b'E' | b'+'))
            .count();
        if run == rest.len() {
            self.pos += run;
            return Some(());
        }
        let signed = run == 1 && matches!(rest.first(), Some(b'-' | b'+'));
        if run == 0 || signed {
            let word = rest.get(run..run + 3)?;
            if word.eq_ignore_ascii_case(b"inf") || word.eq_ignore_ascii_case(b"nan") {
                self.pos += run + 3;
                return Some(());
            }
            return None;
        }
        self.pos += run;
        Some(())
    }

    /// A string starting at the current `"`: the span of its raw content. It ends at the first quote
    /// preceded by an even number of backslashes; nothing inside is checked.
    fn string(&mut self) -> Option<(usize, usize)> {
        self.eat(b'"')?;
        let start = self.pos;
        let mut from = start;
        loop {
            let n = from + memchr(b'"', self.s.get(from..)?)?;
            let backslashes = self
                .s
                .get(start..n)?
                .iter()
                .rev()
                .take_while(|b| **b == b'\\')
                .count();
            if backslashes % 2 == 0 {
                self.pos = n + 1;
                return Some((start, n));
            }
            from = n + 1;
        }
    }

    /// The members after `{`, calling `member` with each key's raw span and value.
    fn object_body(&mut self, depth: u32, mut member: impl FnMut(&'a [u8], Val)) -> Option<()> {
        self.skip_ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return None;
            }
            let (ks, ke) = self.string()?;
            self.skip_ws();
            self.eat(b':')?;
            self.skip_ws();
            let v = self.value(depth)?;
            member(self.s.get(ks..ke)?, v);
            self.skip_ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The elements after `[`, calling `element` with each; it may reject one.
    fn array_body(&mut self, depth: u32, mut element: impl FnMut(Val) -> Option<()>) -> Option<()> {
        self.skip_ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.skip_ws();
            let v = self.value(depth)?;
            element(v)?;
            self.skip_ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// A small output buffer for unescaping keys and special values, which only ever need comparing
/// with short ASCII words: anything longer cannot match, so it just records the overflow.
struct Small {
    buf: [u8; 16],
    len: usize,
    overflow: bool,
}

impl Small {
    fn new() -> Small {
        Small {
            buf: [0; 16],
            len: 0,
            overflow: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match self.buf.get_mut(self.len) {
                Some(slot) => {
                    *slot = b;
                    self.len += 1;
                }
                None => self.overflow = true,
            }
        }
    }

    fn get(&self) -> Option<&[u8]> {
        if self.overflow {
            return None;
        }
        self.buf.get(..self.len)
    }
}

fn hex4(s: &[u8]) -> Option<u32> {
    let d = s.get(..4)?;
    let mut v = 0u32;
    for &b in d {
        v = v * 16 + char::from(b).to_digit(16)?;
    }
    Some(v)
}

fn push_char(out: &mut Small, c: u32) {
    let c = char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER);
    let mut b = [0u8; 4];
    out.push(c.encode_utf8(&mut b).as_bytes());
}

/// fastjson's `unescapeStringBestEffort`: known escapes are decoded, anything it cannot decode is
/// kept as written, and a lone backslash at the very end is dropped.
fn unescape(raw: &[u8]) -> Small {
    let mut out = Small::new();
    let Some(n) = memchr(b'\\', raw) else {
        out.push(raw);
        return out;
    };
    out.push(raw.get(..n).unwrap_or_default());
    let mut s = raw.get(n + 1..).unwrap_or_default();
    while let Some((&ch, rest)) = s.split_first() {
        if out.overflow {
            // Too long to equal any word it is compared with; the rest does not matter.
            break;
        }
        s = rest;
        match ch {
            b'"' | b'\\' | b'/' => out.push(&[ch]),
            b'b' => out.push(b"\x08"),
            b'f' => out.push(b"\x0c"),
            b'n' => out.push(b"\n"),
            b'r' => out.push(b"\r"),
            b't' => out.push(b"\t"),
            b'u' => match hex4(s) {
                None => out.push(b"\\u"),
                Some(x) => {
                    let xs = s.get(..4).unwrap_or_default();
                    s = s.get(4..).unwrap_or_default();
                    if !(0xD800..0xE000).contains(&x) {
                        push_char(&mut out, x);
                    } else {
                        let low = match s {
                            [b'\\', b'u', tail @ ..] => hex4(tail),
                            _ => None,
                        };
                        match low {
                            None => {
                                out.push(b"\\u");
                                out.push(xs);
                            }
                            Some(y) => {
                                let pair =
                                    (0xD800..0xDC00).contains(&x) && (0xDC00..0xE000).contains(&y);
                                let c = if pair {
                                    0x10000 + ((x - 0xD800) << 10) + (y - 0xDC00)
                                } else {
                                    0xFFFD
                                };
                                push_char(&mut out, c);
                                s = s.get(6..).unwrap_or_default();
                            }
                        }
                    }
                }
            },
            _ => out.push(&[b'\\', ch]),
        }
        match memchr(b'\\', s) {
            None => {
                out.push(s);
                break;
            }
            Some(n) => {
                out.push(s.get(..n).unwrap_or_default());
                s = s.get(n + 1..).unwrap_or_default();
            }
        }
    }
    out
}

/// The three keys of a line, each as `(first member with this raw key, first with this unescaped
/// key)`.
#[derive(Default)]
struct Keys {
    found: [(Option<Val>, Option<Val>); 3],
}

const KEYS: [&[u8]; 3] = [b"metric", b"values", b"timestamps"];

impl Keys {
    fn member(&mut self, raw: &[u8], v: Val) {
        let unescaped = unescape(raw);
        for (i, key) in KEYS.iter().enumerate() {
            let Some((first_raw, first_unescaped)) = self.found.get_mut(i) else {
                continue;
            };
            if first_raw.is_none() && raw == *key {
                *first_raw = Some(v);
            }
            if first_unescaped.is_none() && unescaped.get() == Some(*key) {
                *first_unescaped = Some(v);
            }
        }
    }
}

fn line_rows(line: &[u8], dialect: &Dialect) -> Option<u64> {
    if line.is_empty() {
        return None;
    }
    let mut p = Parser::new(line);
    p.skip_ws();
    if p.peek() != Some(b'{') {
        // Valid JSON or not, it has no `metric` object.
        return None;
    }
    p.pos += 1;
    let mut keys = Keys::default();
    p.object_body(1, |raw, v| keys.member(raw, v))?;
    p.skip_ws();
    if p.pos != line.len() {
        return None;
    }
    // `Object.Get`: the raw keys are searched while no lookup has missed; the first miss unescapes
    // them all for good.
    let mut unescaped = false;
    let mut get = |i: usize| -> Option<Val> {
        let (raw, unesc) = keys.found.get(i).copied()?;
        if !unescaped {
            if let Some(v) = raw {
                return Some(v);
            }
            unescaped = true;
        }
        unesc
    };
    let metric = get(0).filter(|v| v.kind == Kind::Object)?;
    if tag_count(p.span(&metric), dialect)? == 0 {
        return None;
    }
    let values = get(1).filter(|v| v.kind == Kind::Array)?;
    let n_values = elements(p.span(&values), |s, v| value_ok(s, v, dialect))?;
    if n_values == 0 {
        return None;
    }
    let timestamps = get(2).filter(|v| v.kind == Kind::Array)?;
    let n_timestamps = elements(p.span(&timestamps), |s, v| {
        v.kind == Kind::Number && parse_int64(s).is_some()
    })?;
    (n_timestamps == n_values).then_some(n_values)
}

/// Tags of the `metric` object (already validated): all its members, or those with a non-empty
/// name when the release skips empty names. An empty unescaped name can only come from an empty
/// raw one, so the raw key decides.
fn tag_count(object: &[u8], dialect: &Dialect) -> Option<u64> {
    let mut p = Parser::new(object);
    p.eat(b'{')?;
    let mut n = 0u64;
    p.object_body(0, |raw, _| {
        if !raw.is_empty() || !dialect.json_skips_empty_tag_names {
            n += 1;
        }
    })?;
    Some(n)
}

/// Walks an (already validated) array, returning its length if `ok` accepts every element.
fn elements(array: &[u8], mut ok: impl FnMut(&[u8], &Val) -> bool) -> Option<u64> {
    let mut p = Parser::new(array);
    p.eat(b'[')?;
    let mut n = 0u64;
    let span = |v: &Val| array.get(v.start..v.end).unwrap_or_default();
    p.array_body(0, |v| {
        n += 1;
        ok(span(&v), &v).then_some(())
    })?;
    Some(n)
}

/// A `values` element: a number fastfloat reads, or (since v1.82) `null` or a special string.
fn value_ok(span: &[u8], v: &Val, dialect: &Dialect) -> bool {
    match v.kind {
        Kind::Number => float_ok(span, dialect.float_elided_parts),
        Kind::Null => dialect.json_special_values,
        Kind::String if dialect.json_special_values => {
            let unescaped = unescape(span);
            let Some(s) = unescaped.get() else {
                return false;
            };
            let s = s.strip_prefix(b"-").unwrap_or(s);
            matches!(
                s,
                b"infinity" | b"Infinity" | b"Inf" | b"inf" | b"null" | b"Null" | b"nan" | b"NaN"
            )
        }
        _ => false,
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

    const LINE: &str =
        r#"{"metric":{"__name__":"m","job":"x"},"values":[1,2.5,-3e2],"timestamps":[1,2,3]}"#;

    #[test]
    fn counts_values() {
        assert_eq!(both(LINE), (3, 3));
        let body = format!("{LINE}\n\n{LINE}\r\n  {LINE}  \n{LINE}");
        assert_eq!(both(&body), (12, 12));
    }

    #[test]
    fn invalid_lines() {
        for line in [
            "not json",
            "   ",
            "[]",
            r#"{"metric":{"a":"b"},"values":[1],"timestamps":[1]} x"#,
            r#"{"metric":{"a":"b"},"values":[1],"timestamps":[1,2]}"#,
            r#"{"metric":{"a":"b"},"values":[],"timestamps":[]}"#,
            r#"{"metric":{},"values":[1],"timestamps":[1]}"#,
            r#"{"metric":"m","values":[1],"timestamps":[1]}"#,
            r#"{"metric":{"a":"b"},"values":[1]}"#,
            r#"{"metric":{"a":"b"},"timestamps":[1]}"#,
            r#"{"metric":{"a":"b"},"values":[1],"timestamps":[1.5]}"#,
            r#"{"metric":{"a":"b"},"values":[1],"timestamps":["1"]}"#,
            r#"{"metric":{"a":"b"},"values":[true],"timestamps":[1]}"#,
            r#"{"metric":{"a":"b"},"values":[1,],"timestamps":[1]}"#,
            r#"{"metric":{"a":"b"},"values":[1-],"timestamps":[1]}"#,
            r#"{"metric":{"a":"b"},"values":[Infinity],"timestamps":[1]}"#,
            r#"{"metric":{"a":"b"},"values":[1],"timestamps":[1],}"#,
            r#"{"metric":{"a":"b"},"values":[1],"timestamps":[99999999999999999999]}"#,
            r#"{"metric":{"a":"b"} "values":[1],"timestamps":[1]}"#,
        ] {
            assert_eq!(both(line), (0, 0), "{line}");
        }
    }

    #[test]
    fn fastjson_leniency() {
        for line in [
            // Values and tags of any type, bad escapes and control bytes in strings.
            r#"{"metric":{"a":1,"b":null,"c":{"x":[1]}},"values":[1],"timestamps":[1]}"#,
            "{\"metric\":{\"a\":\"\\q\x01\"},\"values\":[1],\"timestamps\":[1]}",
            // Unknown members anywhere, duplicates: the first wins.
            r#"{"x":[{"y":nan}],"metric":{"a":"b"},"values":[1],"timestamps":[1],"values":[true]}"#,
            // NaN and Inf tokens are numbers.
            r#"{"metric":{"a":"b"},"values":[NaN,-Inf,+inf,nAn],"timestamps":[1,2,3,4]}"#,
            // An escaped key matches once no raw key does.
            r#"{"m\u0065tric":{"a":"b"},"values":[1],"timestamps":[1]}"#,
            "\t{ \"metric\" : { \"a\" : \"b\" } , \"values\" : [ 1 ] , \"timestamps\" : [ -1 ] }\r",
        ] {
            let rows = count(line.as_bytes(), &Dialect::LATEST);
            assert!(rows >= 1, "{line}");
        }
    }

    #[test]
    fn raw_keys_are_preferred_until_a_lookup_misses() {
        // "metric" is found raw, so "values" is looked up raw too: the second (raw) one wins.
        let line = r#"{"metric":{"a":"b"},"v\u0061lues":[1,2],"values":[1],"timestamps":[1]}"#;
        assert_eq!(both(line), (1, 1));
        // "metric" is only found unescaped, after which keys compare unescaped: the first
        // "values" spelling wins and has two elements, which the timestamps do not match.
        let line = r#"{"m\u0065tric":{"a":"b"},"v\u0061lues":[1,2],"values":[1],"timestamps":[1]}"#;
        assert_eq!(both(line), (0, 0));
    }

    #[test]
    fn release_differences() {
        let special = r#"{"metric":{"a":"b"},"values":[null,"NaN","-Inf","infinity","\u004eaN"],"timestamps":[1,2,3,4,5]}"#;
        assert_eq!(both(special), (0, 5));
        let bad_special = r#"{"metric":{"a":"b"},"values":["nope"],"timestamps":[1]}"#;
        assert_eq!(both(bad_special), (0, 0));
        let empty_name = r#"{"metric":{"":"x"},"values":[1],"timestamps":[1]}"#;
        assert_eq!(both(empty_name), (1, 0));
        assert_eq!(
            count(empty_name.as_bytes(), &Dialect::for_version(1, 149, 0)),
            1
        );
        let elided = r#"{"metric":{"a":"b"},"values":[.5],"timestamps":[1]}"#;
        assert_eq!(both(elided), (0, 1));
    }

    #[test]
    fn depth_limit() {
        let nested = |n: usize| {
            format!(
                r#"{{"metric":{{"a":"b"}},"x":{}{},"values":[1],"timestamps":[1]}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        // The line object is depth 1, the member value 2, so 299 brackets reach 300.
        assert_eq!(count(nested(299).as_bytes(), &Dialect::LATEST), 1);
        assert_eq!(count(nested(300).as_bytes(), &Dialect::LATEST), 0);
        assert_eq!(count("[".repeat(100_000).as_bytes(), &Dialect::LATEST), 0);
    }

    #[test]
    fn unescaping() {
        assert_eq!(unescape(br"a\u0062c").get(), Some(&b"abc"[..]));
        assert_eq!(unescape(br"\ud83d\ude00").get(), Some("😀".as_bytes()));
        assert_eq!(unescape(br"\ud83dx").get(), Some(&br"\ud83dx"[..]));
        assert_eq!(
            unescape(br"\ud83d\u0041").get(),
            Some("\u{fffd}".as_bytes())
        );
        assert_eq!(unescape(br"\u12").get(), Some(&br"\u12"[..]));
        assert_eq!(unescape(br"\q\n").get(), Some(&b"\\q\n"[..]));
        assert_eq!(unescape(br"ab\").get(), Some(&b"ab"[..]));
        assert_eq!(unescape(&[b'x'; 17]).get(), None);
    }
}
