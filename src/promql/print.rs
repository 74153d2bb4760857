//! Our PromQL printer over `promql-parser`'s tree: what we forward to the backend is what this writes.
//!
//! The parser's own `Display` cannot be trusted with that (0.11.1): it prints `@ -100` as `@ 0.000`,
//! sub-millisecond durations as `foo[]`, zero durations as `0s` (which no parser accepts), drops
//! `ignoring()` before `group_left` (leaving `a + group_left b`, a syntax error), writes control characters
//! raw inside strings, sorts matchers, and prints numbers like `1e300` as 301 digits. This printer writes
//! text that both Prometheus 2.x (no numeric durations) and 3.x parse back to the same tree, and refuses
//! (with [`EnforceError::Unsupported`]) anything it cannot print faithfully rather than print something else.
//!
//! Parentheses: the parser keeps `ParenExpr` nodes, so a parsed tree prints back with exactly the user's
//! parentheses. We still add them wherever precedence requires, so a tree that lacks them cannot print as
//! a different expression.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::token::{self, TokenId};
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinModifier, BinaryExpr, Call, Expr, LabelModifier, MatrixSelector,
    Offset, SubqueryExpr, VectorMatchCardinality, VectorMatchFillValues, VectorSelector,
};

use super::EnforceError;

/// `@` timestamps beyond this many seconds overflow Prometheus' int64 milliseconds (9.2e15 s). The parser
/// saturates larger values (at 1.8e16 s), so without this bound `@ 1e17` would silently become another time.
const MAX_AT_SECS: u64 = 9_000_000_000_000_000;

/// Prints `expr` as PromQL.
pub fn print(expr: &Expr) -> Result<String, EnforceError> {
    let mut out = String::with_capacity(128);
    write_expr(&mut out, expr)?;
    Ok(out)
}

/// Prints a lone selector (for `match[]`).
pub fn print_selector(vs: &VectorSelector) -> Result<String, EnforceError> {
    let mut out = String::with_capacity(64);
    write_selector(&mut out, vs)?;
    Ok(out)
}

fn unsupported(what: &str) -> EnforceError {
    EnforceError::Unsupported(what.to_string())
}

/// Binding strength of binary operators, as in Prometheus' grammar (higher binds tighter).
fn precedence(op: TokenId) -> u8 {
    match op {
        token::T_LOR => 1,
        token::T_LAND | token::T_LUNLESS => 2,
        token::T_EQLC
        | token::T_NEQ
        | token::T_LTE
        | token::T_LSS
        | token::T_GTE
        | token::T_GTR => 3,
        token::T_ADD | token::T_SUB => 4,
        token::T_MUL | token::T_DIV | token::T_MOD | token::T_ATAN2 => 5,
        token::T_POW => 6,
        _ => 0,
    }
}

/// Unary minus binds like `*` (`-a * b` is `(-a) * b`, `-a ^ b` is `-(a ^ b)`).
const UNARY_PRECEDENCE: u8 = 5;

fn write_expr(out: &mut String, expr: &Expr) -> Result<(), EnforceError> {
    match expr {
        Expr::Aggregate(agg) => write_aggregate(out, agg),
        Expr::Unary(unary) => {
            out.push('-');
            let operand = unary.expr.as_ref();
            let parens = match operand {
                // `-(1)` must not become the literal -1 (the parser folds `-1`); `-(-1)` not `--1`.
                Expr::NumberLiteral(_) => true,
                Expr::Binary(b) => precedence(b.op.id()) <= UNARY_PRECEDENCE,
                _ => false,
            };
            write_operand(out, operand, parens)
        }
        Expr::Binary(binary) => write_binary(out, binary),
        Expr::Paren(paren) => {
            out.push('(');
            write_expr(out, &paren.expr)?;
            out.push(')');
            Ok(())
        }
        Expr::Subquery(sub) => write_subquery(out, sub),
        Expr::NumberLiteral(n) => {
            write_number(out, n.val);
            Ok(())
        }
        Expr::StringLiteral(s) => {
            write_string(out, &s.val);
            Ok(())
        }
        Expr::VectorSelector(vs) => write_selector(out, vs),
        Expr::MatrixSelector(ms) => write_matrix(out, ms),
        Expr::Call(call) => write_call(out, call),
        Expr::Extension(_) => Err(unsupported("extension nodes")),
    }
}

fn write_operand(out: &mut String, expr: &Expr, parens: bool) -> Result<(), EnforceError> {
    if parens {
        out.push('(');
    }
    write_expr(out, expr)?;
    if parens {
        out.push(')');
    }
    Ok(())
}

fn write_binary(out: &mut String, b: &BinaryExpr) -> Result<(), EnforceError> {
    let op = b.op.id();
    let prec = precedence(op);
    if prec == 0 {
        return Err(unsupported("unknown binary operator"));
    }
    let right_assoc = op == token::T_POW;
    let lhs_parens = match b.lhs.as_ref() {
        Expr::Binary(l) => {
            let lp = precedence(l.op.id());
            lp < prec || (lp == prec && right_assoc)
        }
        // `-a ^ b` would read as `-(a ^ b)`.
        Expr::Unary(_) => prec > UNARY_PRECEDENCE,
        Expr::NumberLiteral(n) => prec > UNARY_PRECEDENCE && n.val.is_sign_negative(),
        _ => false,
    };
    let rhs_parens = match b.rhs.as_ref() {
        Expr::Binary(r) => {
            let rp = precedence(r.op.id());
            rp < prec || (rp == prec && !right_assoc)
        }
        _ => false,
    };
    write_operand(out, &b.lhs, lhs_parens)?;
    out.push(' ');
    out.push_str(&b.op.to_string());
    if let Some(modifier) = &b.modifier {
        write_bin_modifier(out, modifier);
    }
    out.push(' ');
    write_operand(out, &b.rhs, rhs_parens)
}

fn write_bin_modifier(out: &mut String, m: &BinModifier) {
    // Destructured so that a new field in a future parser version fails to compile here.
    let BinModifier {
        card,
        matching,
        return_bool,
        fill_values,
    } = m;
    if *return_bool {
        out.push_str(" bool");
    }
    match matching {
        Some(LabelModifier::Include(labels)) => {
            out.push_str(" on");
            write_label_list(out, &labels.labels);
        }
        Some(LabelModifier::Exclude(labels)) => {
            out.push_str(" ignoring");
            write_label_list(out, &labels.labels);
        }
        None => {}
    }
    match card {
        VectorMatchCardinality::ManyToOne(labels) => {
            out.push_str(" group_left");
            write_label_list(out, &labels.labels);
        }
        VectorMatchCardinality::OneToMany(labels) => {
            out.push_str(" group_right");
            write_label_list(out, &labels.labels);
        }
        VectorMatchCardinality::OneToOne | VectorMatchCardinality::ManyToMany => {}
    }
    let VectorMatchFillValues { lhs, rhs } = fill_values;
    match (lhs, rhs) {
        (Some(l), Some(r)) if l.to_bits() == r.to_bits() => {
            out.push_str(" fill (");
            write_number(out, *l);
            out.push(')');
        }
        _ => {
            if let Some(l) = lhs {
                out.push_str(" fill_left (");
                write_number(out, *l);
                out.push(')');
            }
            if let Some(r) = rhs {
                out.push_str(" fill_right (");
                write_number(out, *r);
                out.push(')');
            }
        }
    }
}

fn write_aggregate(out: &mut String, agg: &AggregateExpr) -> Result<(), EnforceError> {
    out.push_str(&agg.op.to_string());
    match &agg.modifier {
        Some(LabelModifier::Include(labels)) => {
            out.push_str(" by");
            write_label_list(out, &labels.labels);
        }
        Some(LabelModifier::Exclude(labels)) => {
            out.push_str(" without");
            write_label_list(out, &labels.labels);
        }
        None => {}
    }
    if agg.modifier.is_some() {
        out.push(' ');
    }
    out.push('(');
    if let Some(param) = &agg.param {
        write_expr(out, param)?;
        out.push_str(", ");
    }
    write_expr(out, &agg.expr)?;
    out.push(')');
    Ok(())
}

fn write_call(out: &mut String, call: &Call) -> Result<(), EnforceError> {
    out.push_str(call.func.name);
    out.push('(');
    for (i, arg) in call.args.args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_expr(out, arg)?;
    }
    out.push(')');
    Ok(())
}

fn write_subquery(out: &mut String, sub: &SubqueryExpr) -> Result<(), EnforceError> {
    // Postfix `[range:step]` binds tighter than any operator.
    let parens = match sub.expr.as_ref() {
        Expr::Binary(_) | Expr::Unary(_) => true,
        Expr::NumberLiteral(n) => n.val.is_sign_negative(),
        _ => false,
    };
    write_operand(out, &sub.expr, parens)?;
    out.push('[');
    write_duration(out, &sub.range)?;
    out.push(':');
    if let Some(step) = &sub.step {
        write_duration(out, step)?;
    }
    out.push(']');
    write_at_offset(out, sub.at.as_ref(), sub.offset.as_ref())
}

fn write_matrix(out: &mut String, ms: &MatrixSelector) -> Result<(), EnforceError> {
    write_selector_body(out, &ms.vs)?;
    out.push('[');
    write_duration(out, &ms.range)?;
    out.push(']');
    write_at_offset(out, ms.vs.at.as_ref(), ms.vs.offset.as_ref())
}

fn write_selector(out: &mut String, vs: &VectorSelector) -> Result<(), EnforceError> {
    write_selector_body(out, vs)?;
    write_at_offset(out, vs.at.as_ref(), vs.offset.as_ref())
}

/// `name{matchers}` without modifiers.
fn write_selector_body(out: &mut String, vs: &VectorSelector) -> Result<(), EnforceError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(unsupported("`or` between label matchers (not PromQL)"));
    }
    let matchers = &vs.matchers.matchers;
    let name = vs.name.as_deref();
    // A name the lexer would not read back as a metric name goes inside the braces instead.
    let name_outside = name.filter(|n| is_metric_name(n));
    if let Some(n) = name_outside {
        out.push_str(n);
    }
    let name_inside = if name_outside.is_none() { name } else { None };
    if matchers.is_empty() && name_inside.is_none() {
        if name_outside.is_none() {
            return Err(unsupported("empty selector"));
        }
        return Ok(());
    }
    out.push('{');
    let mut first = true;
    if let Some(n) = name_inside {
        out.push_str("__name__=");
        write_string(out, n);
        first = false;
    }
    for m in matchers {
        if !first {
            out.push(',');
        }
        first = false;
        write_matcher(out, m);
    }
    out.push('}');
    Ok(())
}

pub(crate) fn write_matcher(out: &mut String, m: &Matcher) {
    write_label_name(out, &m.name);
    out.push_str(match m.op {
        MatchOp::Equal => "=",
        MatchOp::NotEqual => "!=",
        MatchOp::Re(_) => "=~",
        MatchOp::NotRe(_) => "!~",
    });
    write_string(out, &m.value);
}

fn write_at_offset(
    out: &mut String,
    at: Option<&AtModifier>,
    offset: Option<&Offset>,
) -> Result<(), EnforceError> {
    if let Some(at) = at {
        out.push_str(" @ ");
        match at {
            AtModifier::Start => out.push_str("start()"),
            AtModifier::End => out.push_str("end()"),
            AtModifier::At(t) => write_timestamp(out, *t)?,
        }
    }
    if let Some(offset) = offset {
        out.push_str(" offset ");
        let d = match offset {
            Offset::Pos(d) => d,
            Offset::Neg(d) => {
                out.push('-');
                d
            }
        };
        write_duration(out, d)?;
    }
    Ok(())
}

/// Seconds with millisecond precision, which is all the parser keeps.
fn write_timestamp(out: &mut String, t: SystemTime) -> Result<(), EnforceError> {
    let (negative, d) = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (false, d),
        Err(before) => (true, before.duration()),
    };
    if d.as_secs() > MAX_AT_SECS {
        return Err(unsupported("@ timestamp out of range"));
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(unsupported("@ timestamp finer than a millisecond"));
    }
    if negative && !d.is_zero() {
        out.push('-');
    }
    let ms = d.subsec_millis();
    let _ = if ms == 0 {
        write!(out, "{}", d.as_secs())
    } else {
        write!(out, "{}.{:03}", d.as_secs(), ms)
    };
    Ok(())
}

/// Durations in units (`1h30m`, `1s500ms`): Prometheus 2.x does not read plain numbers there.
fn write_duration(out: &mut String, d: &Duration) -> Result<(), EnforceError> {
    if d.is_zero() {
        return Err(unsupported("zero duration"));
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(unsupported("duration finer than a millisecond"));
    }
    let mut ms = d.as_millis();
    const UNITS: [(&str, u128); 7] = [
        ("y", 365 * 24 * 3600 * 1000),
        ("w", 7 * 24 * 3600 * 1000),
        ("d", 24 * 3600 * 1000),
        ("h", 3600 * 1000),
        ("m", 60 * 1000),
        ("s", 1000),
        ("ms", 1),
    ];
    for (unit, size) in UNITS {
        let n = ms / size;
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
            ms -= n * size;
        }
    }
    Ok(())
}

/// Numbers as the shortest text that reads back to the same `f64`.
fn write_number(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Inf" } else { "-Inf" });
    } else if v == v.trunc() && v.abs() < 1e15 {
        // Whole numbers without a fraction (`5`, not `5.0`).
        let _ = write!(out, "{v}");
    } else {
        // `{:?}` is the shortest round-tripping form and uses an exponent for very large or small
        // magnitudes (`1e300`, `1e-7`), which both lexers read.
        let _ = write!(out, "{v:?}");
    }
}

/// A double-quoted string that both Go's and the parser's unquoting read back to `s`.
pub(crate) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    push_string_escaped(out, s);
    out.push('"');
}

/// The inside of a PromQL/MetricsQL double-quoted string, as Go's `strconv.Unquote` reads it: backslash
/// and quote escaped, newline (refused raw) and every other control character written as an escape, so
/// nothing can end the string or the line. Also used for claim values in grants' selectors.
pub fn push_string_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

fn write_label_list(out: &mut String, labels: &[String]) {
    out.push_str(" (");
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_label_name(out, l);
    }
    out.push(')');
}

/// Label names that are not identifiers are quoted (Prometheus 3 syntax; only 3.x reads them, and only a
/// query or grant that already used such a name produces one).
pub(crate) fn write_label_name(out: &mut String, name: &str) {
    if is_identifier(name) {
        out.push_str(name);
    } else {
        write_string(out, name);
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c == ':' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c == ':' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use promql_parser::parser::{self, NumberLiteral, ParenExpr, UnaryExpr};

    /// Parses, prints, and checks that the printed text parses to the same tree.
    fn round_trip(q: &str) -> String {
        let tree = parser::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        let printed = print(&tree).unwrap_or_else(|e| panic!("{q}: {e}"));
        let back = parser::parse(&printed).unwrap_or_else(|e| panic!("{q} -> {printed}: {e}"));
        assert_eq!(back, tree, "{q} -> {printed}");
        printed
    }

    #[test]
    fn prints_what_the_parser_reads() {
        let cases = [
            ("foo @ start()", "foo @ start()"),
            ("foo @ end()", "foo @ end()"),
            ("foo @ 1609746000", "foo @ 1609746000"),
            ("foo @ 1.2345", "foo @ 1.235"),
            ("foo @ -100", "foo @ -100"),
            ("foo @ -0.5", "foo @ -0.500"),
            ("foo offset 5m @ 100", "foo @ 100 offset 5m"),
            ("foo offset -5m", "foo offset -5m"),
            ("foo offset 1h30m", "foo offset 1h30m"),
            ("foo[90]", "foo[1m30s]"),
            ("foo[1.5]", "foo[1s500ms]"),
            ("foo[7d]", "foo[1w]"),
            ("foo[365d]", "foo[1y]"),
            ("foo[1y2w3d4h5m6s7ms]", "foo[1y2w3d4h5m6s7ms]"),
            ("foo[5m:]", "foo[5m:]"),
            (
                "rate(foo[5m])[30m:1m] @ end() offset 1m",
                "rate(foo[5m])[30m:1m] @ end() offset 1m",
            ),
            (
                "a + ignoring() group_left b",
                "a + ignoring () group_left () b",
            ),
            (
                "a * ignoring(x) group_right b",
                "a * ignoring (x) group_right () b",
            ),
            ("a + on() b", "a + on () b"),
            (
                "a > bool on(x) group_left(y) b",
                "a > bool on (x) group_left (y) b",
            ),
            ("a + fill(0) b", "a + fill (0) b"),
            (
                "a + fill_left(1) fill_right(-2) b",
                "a + fill_left (1) fill_right (-2) b",
            ),
            ("sum by () (foo)", "sum by () (foo)"),
            ("sum(foo) without (a,b)", "sum without (a, b) (foo)"),
            ("topk(5, foo)", "topk(5, foo)"),
            ("count_values(\"v\", foo)", "count_values(\"v\", foo)"),
            ("-2 ^ 2", "-2 ^ 2"),
            ("(-2) ^ 2", "(-2) ^ 2"),
            ("- -foo", "--foo"),
            ("-(-1)", "-(-1)"),
            ("2 ^ 3 ^ 2", "2 ^ 3 ^ 2"),
            ("(2 ^ 3) ^ 2", "(2 ^ 3) ^ 2"),
            ("a - (b - c)", "a - (b - c)"),
            ("a / b * c", "a / b * c"),
            ("1e300", "1e300"),
            ("1e-7", "1e-7"),
            ("0x1F", "31"),
            ("Inf", "Inf"),
            ("-Inf", "-Inf"),
            ("NaN", "NaN"),
            (r#"foo{a="x\"y\\z\n\t"}"#, r#"foo{a="x\"y\\z\n\t"}"#),
            (
                r#"foo{a="\a\b\f\v\x7f"}"#,
                r#"foo{a="\x07\x08\x0c\x0b\x7f"}"#,
            ),
            ("foo{a='it\\'s'}", r#"foo{a="it's"}"#),
            (r#"foo{a="\u00e9😀"}"#, r#"foo{a="é😀"}"#),
            ("{__name__=~\"foo.*\"}", "{__name__=~\"foo.*\"}"),
            ("{\"my.metric\"}", "{__name__=\"my.metric\"}"),
            (
                "{\"my.metric\", \"lab.el\"=\"v\"}",
                "{__name__=\"my.metric\",\"lab.el\"=\"v\"}",
            ),
            ("sum by (\"lab.el\") (foo)", "sum by (\"lab.el\") (foo)"),
            ("sum{job=\"a\"}", "sum{job=\"a\"}"),
            ("foo # comment", "foo"),
        ];
        for (q, want) in cases {
            assert_eq!(round_trip(q), want, "{q}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_print_faithfully() {
        for q in [
            "foo[0.0001]",
            "foo[0.0]",
            "foo[1.0005]",
            "foo offset 0",
            "foo[5m:0.0]",
            "foo{a=\"b\" or c=\"d\"}",
        ] {
            let tree = parser::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert!(
                matches!(print(&tree), Err(EnforceError::Unsupported(_))),
                "{q}"
            );
        }
    }

    #[test]
    fn adds_parentheses_a_tree_needs() {
        let num = |v: f64| Box::new(Expr::NumberLiteral(NumberLiteral::new(v)));
        let sel = |n: &str| Box::new(Expr::VectorSelector(VectorSelector::from(n)));
        let bin = |op: TokenId, lhs: Box<Expr>, rhs: Box<Expr>| {
            Box::new(Expr::Binary(BinaryExpr {
                op: token::TokenType::new(op),
                lhs,
                rhs,
                modifier: None,
            }))
        };
        let neg = |e: Box<Expr>| Box::new(Expr::Unary(UnaryExpr { expr: e }));
        let cases: Vec<(Box<Expr>, &str)> = vec![
            (
                bin(
                    token::T_SUB,
                    sel("a"),
                    bin(token::T_SUB, sel("b"), sel("c")),
                ),
                "a - (b - c)",
            ),
            (
                bin(
                    token::T_MUL,
                    bin(token::T_ADD, sel("a"), sel("b")),
                    sel("c"),
                ),
                "(a + b) * c",
            ),
            (
                bin(
                    token::T_POW,
                    bin(token::T_POW, sel("a"), sel("b")),
                    sel("c"),
                ),
                "(a ^ b) ^ c",
            ),
            (bin(token::T_POW, neg(sel("a")), sel("b")), "(-a) ^ b"),
            (bin(token::T_POW, num(-2.0), num(2.0)), "(-2) ^ 2"),
            (neg(bin(token::T_ADD, sel("a"), sel("b"))), "-(a + b)"),
            (neg(bin(token::T_MUL, sel("a"), sel("b"))), "-(a * b)"),
            (neg(bin(token::T_POW, sel("a"), sel("b"))), "-a ^ b"),
            (neg(num(1.0)), "-(1)"),
            (neg(num(-1.0)), "-(-1)"),
            (
                Box::new(Expr::Paren(ParenExpr {
                    expr: bin(token::T_LOR, sel("a"), sel("b")),
                })),
                "(a or b)",
            ),
        ];
        for (tree, want) in cases {
            let printed = print(&tree).unwrap();
            assert_eq!(printed, want);
            // What we print means the tree: the parser reads it back to the same shape, give or take
            // the parentheses we added.
            assert!(parser::parse(&printed).is_ok(), "{printed}");
        }
    }

    #[test]
    fn strings_survive_any_character() {
        let mut all = String::new();
        for c in (0u32..0x300).filter_map(char::from_u32) {
            all.push(c);
        }
        all.push_str("\u{2028}\u{feff}\u{10ffff}");
        let mut q = String::from("label_replace(foo, \"dst\", ");
        write_string(&mut q, &all);
        q.push_str(", \"src\", \"\")");
        let tree = parser::parse(&q).unwrap();
        match &tree {
            Expr::Call(c) => assert_eq!(*c.args.args[2], Expr::from(all.as_str())),
            other => panic!("{other:?}"),
        }
        round_trip(&q);
    }
}
