//! The security invariant of query rewriting as executable checks, shared by the fuzz target and the
//! property tests: whatever we forward parses, every selector in it carries the grant's matchers, it prints
//! back to itself, and enforcing it again changes nothing.

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};

use super::{default_selector, enforce_query, enforce_selector, print, Enforcement};

/// Checks text that [`enforce_query`] or [`enforce_selector`] produced for `e`.
pub fn check_enforced(rewritten: &str, e: &Enforcement) -> Result<(), String> {
    // What we forward must parse as it is, without our prescan's help.
    let expr = parser::parse(rewritten)
        .map_err(|err| format!("output does not parse: {err}: {rewritten}"))?;
    let mut selectors = Vec::new();
    collect_selectors(&expr, &mut selectors);
    for vs in selectors {
        carries(vs, e).map_err(|why| format!("{why}: {rewritten}"))?;
    }
    let again =
        print::print(&expr).map_err(|err| format!("output does not print: {err}: {rewritten}"))?;
    if again != rewritten {
        return Err(format!("print is not a fixpoint: {rewritten} -> {again}"));
    }
    Ok(())
}

/// Whether `vs` carries every matcher of `e` (the metric name outside the braces counts as `__name__=`).
pub(crate) fn carries(vs: &VectorSelector, e: &Enforcement) -> Result<(), String> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err("selector with `or` matchers".into());
    }
    for c in e.constraints() {
        let by_name = c.name() == "__name__"
            && matches!(c.matcher.op, MatchOp::Equal)
            && vs.name.as_deref() == Some(c.matcher.value.as_str());
        if !by_name && !vs.matchers.matchers.iter().any(|m| c.same_as(m)) {
            return Err(format!("selector lacks {:?}", c.matcher));
        }
    }
    Ok(())
}

/// Every selector in `expr`. Our own walk: `promql_parser::util::walk_expr` (0.11.1) skips aggregation
/// parameters, so `topk(scalar(x), y)` would hide `x` from it.
pub(crate) fn collect_selectors<'a>(expr: &'a Expr, out: &mut Vec<&'a VectorSelector>) {
    match expr {
        Expr::Aggregate(agg) => {
            if let Some(param) = &agg.param {
                collect_selectors(param, out);
            }
            collect_selectors(&agg.expr, out);
        }
        Expr::Unary(u) => collect_selectors(&u.expr, out),
        Expr::Binary(b) => {
            collect_selectors(&b.lhs, out);
            collect_selectors(&b.rhs, out);
        }
        Expr::Paren(p) => collect_selectors(&p.expr, out),
        Expr::Subquery(s) => collect_selectors(&s.expr, out),
        Expr::Call(c) => {
            for arg in &c.args.args {
                collect_selectors(arg, out);
            }
        }
        Expr::VectorSelector(vs) => out.push(vs),
        Expr::MatrixSelector(ms) => out.push(&ms.vs),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Grants the fuzz target chooses from with its first byte.
fn fuzz_grant(choice: u8) -> Enforcement {
    let l = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    };
    let (labels, filters): (Vec<(String, String)>, Vec<String>) = match choice % 8 {
        0 => (l(&[("team", "dev")]), vec![]),
        1 => (l(&[("team", "dev"), ("env", "prod")]), vec![]),
        2 => (vec![], vec![r#"{env=~"prod|dev",team!="test"}"#.into()]),
        3 => (l(&[("team", "dev")]), vec![r#"{env=~"prod|dev"}"#.into()]),
        4 => (vec![], vec![r#"{__name__=~"app_.*"}"#.into()]),
        5 => (l(&[("team", "a\"b\\c\n")]), vec![]),
        6 => (l(&[("team", ""), ("lab.el", "é")]), vec![]),
        _ => (vec![], vec![]),
    };
    // These grants are valid by construction.
    Enforcement::new(&labels, &filters).unwrap_or_default()
}

/// A fuzz target body: any bytes. The first byte picks a grant, the rest is the query. Panics when the
/// invariant breaks (that is what a fuzzer looks for); the functions it calls never panic.
pub fn fuzz_enforce(data: &[u8]) {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let e = fuzz_grant(choice);
    let query = String::from_utf8_lossy(rest);
    if let Ok(out) = enforce_query(&query, &e) {
        if let Err(why) = check_enforced(&out, &e) {
            panic!("enforce_query({query:?}): {why}");
        }
        assert_eq!(
            enforce_query(&out, &e).as_ref(),
            Ok(&out),
            "not idempotent: {query:?}"
        );
    }
    if let Ok(out) = enforce_selector(&query, &e) {
        if let Err(why) = check_enforced(&out, &e) {
            panic!("enforce_selector({query:?}): {why}");
        }
    }
    let default = default_selector(&e);
    if let Err(why) = check_enforced(&default, &e) {
        panic!("default_selector: {why}");
    }
}
