//! PromQL label enforcement for Prometheus-compatible backends (Prometheus, Thanos, Mimir, Cortex), which
//! do not understand VictoriaMetrics' `extra_label` / `extra_filters[]` arguments: we rewrite the query so
//! that every series selector in it carries the grant's matchers, and forward only text we printed.
//!
//! Pure: no I/O, no clock, no global state of ours, so the security argument can be read and tested here
//! alone. (promql-parser keeps a process-wide registry of extra functions, `register_extra_functions`;
//! tenantgate must never fill it, or the parser would accept functions Prometheus does not have.)
//!
//! How a query is handled ([`enforce_query`]):
//! 1. [`prescan`] bounds the work a query can cause and refuses the spellings that `promql-parser` (0.11.1)
//!    reads differently from Prometheus (see that module).
//! 2. `promql-parser` builds the tree. It has no error recovery, so a query either parses whole or is
//!    refused; MetricsQL (`WITH`, `default`, `keep_metric_names`, `rollup_*`, `[5i]`) does not parse. The
//!    parser panics on a few inputs; [`prescan`] avoids the known ones and a panic is caught as a backstop.
//! 3. Every vector and matrix selector, wherever it sits (function arguments, aggregation parameters,
//!    binary operands, subqueries), gets the grant's labels as `=` matchers and the filter's matchers.
//!    A matcher the query already has on an enforced label is kept when it can match the grant's value
//!    and refused with [`EnforceError::Conflict`] when it cannot; an exact duplicate of ours is dropped.
//!    Our matchers are always added and nothing else the query says is removed or replaced (only
//!    re-spelled: durations in units, strings re-escaped, comments gone, a metric name moved inside the
//!    braces when a `__name__` matcher of ours joins it), so the rewritten query selects a subset of what
//!    the grant allows. Regexes decide only whether to refuse early, never whether to add our matchers
//!    (module `goregex`), so Go/Rust regex differences cannot widen anything.
//! 4. Our printer (module `print`) writes the tree back out; it refuses what it cannot print faithfully.
//!    The parser's own `Display` has bugs that change queries; see that module.
//!
//! Refused outright: `or` between label matchers (a MetricsQL and promql-parser extension, not PromQL: it
//! would need our matchers in every branch), and `info()` (Prometheus 3, experimental), which reads
//! `target_info` series that no selector in the query names, so no matcher of ours would apply to them.
//!
//! Relabelling after selection cannot widen access: `label_replace(x, "team", "ops", "", "")`,
//! `label_join` and `count_values("team", x)` only rename data already selected with our matchers, and
//! every selector on the other side of a join or set operation carries our matchers too. The result may
//! *say* `team="ops"`, but every sample in it came from the grant's series.

mod check;
mod goregex;
pub mod prescan;
mod print;

use std::panic::{catch_unwind, AssertUnwindSafe};

use promql_parser::label::{MatchOp, Matcher, Matchers};
use promql_parser::parser::{self, Expr, VectorSelector};

pub use check::{check_enforced, fuzz_enforce};
use goregex::GoRegex;
pub use print::push_string_escaped;

/// Why a query, selector or grant was refused. The comments say which status the caller answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnforceError {
    /// Not PromQL as the parser reads it: 400.
    #[error("cannot parse query: {0}")]
    Parse(String),
    /// The query restricts an enforced label (or a filtered one) to values the grant excludes: 400.
    #[error("query conflicts with the label {0:?} enforced by the token")]
    Conflict(String),
    /// The grant has more than one filter. VictoriaMetrics ORs them, which PromQL cannot express without
    /// changing what aggregations mean: 403.
    #[error("the token has several extra_filters; VictoriaMetrics ORs them, which PromQL cannot express without changing what aggregations mean, so a Prometheus-family backend accepts tokens with at most one")]
    SeveralFilters,
    /// The grant itself is unusable (a filter that is not a bare selector, an empty label name, one label
    /// with two values): 403.
    #[error("the token's restriction cannot be enforced: {0}")]
    BadGrant(String),
    /// Parses, but we will not rewrite it (the message says why): 400.
    #[error("unsupported in queries through this gateway: {0}")]
    Unsupported(String),
    /// More operators or deeper nesting than [`prescan::MAX_OPERATORS`] / [`prescan::MAX_NESTING`]: 400.
    #[error("query too complex")]
    TooComplex,
    /// A `match[]` value that is not a plain series selector: 400.
    #[error("not a series selector")]
    NotSelector,
}

/// One matcher every selector gets.
#[derive(Debug, Clone)]
pub(crate) struct Constraint {
    pub(crate) matcher: Matcher,
    /// For `=~` and `!~`.
    regex: Option<GoRegex>,
}

impl Constraint {
    fn equal(name: &str, value: &str) -> Constraint {
        Constraint {
            matcher: Matcher::new(MatchOp::Equal, name, value),
            regex: None,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.matcher.name
    }

    /// Whether Prometheus would find that this matcher accepts `value`, when we can be sure.
    pub(crate) fn verdict(&self, value: &str) -> Option<bool> {
        let m = &self.matcher;
        match (&m.op, &self.regex) {
            (MatchOp::Equal, _) => Some(m.value == value),
            (MatchOp::NotEqual, _) => Some(m.value != value),
            (MatchOp::Re(_), Some(re)) => re.verdict(value),
            (MatchOp::NotRe(_), Some(re)) => re.verdict(value).map(|b| !b),
            _ => None,
        }
    }

    /// Whether `m` is this very matcher (then the query's copy is dropped and ours added).
    fn same_as(&self, m: &Matcher) -> bool {
        let ours = &self.matcher;
        ours.name == m.name && ours.value == m.value && op_kind(&ours.op) == op_kind(&m.op)
    }

    /// Refuses a query matcher on the same label that cannot agree with this one.
    fn check(&self, m: &Matcher) -> Result<(), EnforceError> {
        let conflict = || EnforceError::Conflict(self.name().to_string());
        let ours = &self.matcher;
        let compatible = match (&ours.op, &m.op) {
            (MatchOp::Equal, MatchOp::Equal) => m.value == ours.value,
            (MatchOp::Equal, MatchOp::NotEqual) => m.value != ours.value,
            (MatchOp::Equal, MatchOp::Re(_) | MatchOp::NotRe(_)) => {
                let re = GoRegex::new(&m.value).map_err(|e| {
                    EnforceError::Unsupported(format!(
                        "{e}, on the enforced label {:?}",
                        self.name()
                    ))
                })?;
                match (&m.op, re.verdict(&ours.value)) {
                    (MatchOp::Re(_), Some(false)) | (MatchOp::NotRe(_), Some(true)) => false,
                    // Matches, or we cannot be sure: forward, ours is added either way.
                    _ => true,
                }
            }
            // Against a filter's `!=`, `=~`, `!~`, only a query's `=` is decided; anything else is ANDed.
            (_, MatchOp::Equal) => self.verdict(&m.value) != Some(false),
            _ => true,
        };
        if compatible {
            Ok(())
        } else {
            Err(conflict())
        }
    }
}

fn op_kind(op: &MatchOp) -> u8 {
    match op {
        MatchOp::Equal => 0,
        MatchOp::NotEqual => 1,
        MatchOp::Re(_) => 2,
        MatchOp::NotRe(_) => 3,
    }
}

/// What a grant restricts reads to: its labels (each matched with `=`) and at most one filter selector,
/// parsed once per verified token.
#[derive(Debug, Clone, Default)]
pub struct Enforcement {
    /// Labels first, then the filter's matchers: what every selector gets, in this order.
    constraints: Vec<Constraint>,
}

impl Enforcement {
    /// Builds the enforcement for a grant. `filters` are VictoriaMetrics `extra_filters` selectors such as
    /// `{env=~"prod|dev",team!="test"}`; a metric name before the braces counts as a `__name__` matcher.
    pub fn new(
        labels: &[(String, String)],
        filters: &[String],
    ) -> Result<Enforcement, EnforceError> {
        let mut constraints: Vec<Constraint> = Vec::new();
        for (name, value) in labels {
            if name.is_empty() {
                return Err(EnforceError::BadGrant("empty label name".into()));
            }
            match constraints.iter().find(|c| c.name() == name) {
                Some(c) if c.matcher.value == *value => continue,
                Some(_) => {
                    return Err(EnforceError::BadGrant(format!(
                        "label {name:?} given two values"
                    )))
                }
                None => constraints.push(Constraint::equal(name, value)),
            }
        }
        let mut distinct: Vec<&String> = filters.iter().collect();
        distinct.sort();
        distinct.dedup();
        match distinct.as_slice() {
            [] => {}
            [filter] => {
                for c in parse_filter(filter)? {
                    if !constraints.iter().any(|have| have.same_as(&c.matcher)) {
                        constraints.push(c);
                    }
                }
            }
            _ => return Err(EnforceError::SeveralFilters),
        }
        Ok(Enforcement { constraints })
    }

    /// Whether the grant restricts nothing.
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
    }

    pub(crate) fn constraints(&self) -> &[Constraint] {
        &self.constraints
    }

    /// Adds our matchers to one selector, refusing query matchers that conflict with them.
    fn enforce_selector(&self, vs: &mut VectorSelector) -> Result<(), EnforceError> {
        if !vs.matchers.or_matchers.is_empty() {
            return Err(EnforceError::Unsupported(
                "`or` between label matchers (not PromQL)".into(),
            ));
        }
        if self.constraints.is_empty() {
            return Ok(());
        }
        for c in &self.constraints {
            if c.name() == "__name__" {
                if let Some(name) = &vs.name {
                    c.check(&Matcher::new(MatchOp::Equal, "__name__", name))?;
                }
            }
            for m in vs.matchers.matchers.iter().filter(|m| m.name == c.name()) {
                c.check(m)?;
            }
        }
        let mut matchers = std::mem::take(&mut vs.matchers.matchers);
        if self.constraints.iter().any(|c| c.name() == "__name__") {
            // Prometheus refuses any `__name__` matcher next to a name outside the braces
            // (`foo{__name__=~"f.*"}`), so the name moves inside as the query's own matcher.
            if let Some(name) = vs.name.take() {
                matchers.insert(0, Matcher::new(MatchOp::Equal, "__name__", &name));
            }
        }
        matchers.retain(|m| !self.constraints.iter().any(|c| c.same_as(m)));
        matchers.extend(self.constraints.iter().map(|c| c.matcher.clone()));
        vs.matchers = Matchers::new(matchers);
        Ok(())
    }

    fn enforce_expr(&self, expr: &mut Expr) -> Result<(), EnforceError> {
        match expr {
            Expr::Aggregate(agg) => {
                if let Some(param) = agg.param.as_deref_mut() {
                    self.enforce_expr(param)?;
                }
                self.enforce_expr(&mut agg.expr)
            }
            Expr::Unary(unary) => self.enforce_expr(&mut unary.expr),
            Expr::Binary(binary) => {
                self.enforce_expr(&mut binary.lhs)?;
                self.enforce_expr(&mut binary.rhs)
            }
            Expr::Paren(paren) => self.enforce_expr(&mut paren.expr),
            Expr::Subquery(sub) => self.enforce_expr(&mut sub.expr),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
            Expr::VectorSelector(vs) => self.enforce_selector(vs),
            Expr::MatrixSelector(ms) => self.enforce_selector(&mut ms.vs),
            Expr::Call(call) => {
                if call.func.name == "info" {
                    return Err(EnforceError::Unsupported(
                        "info() reads target_info series that the query does not select".into(),
                    ));
                }
                for arg in call.args.args.iter_mut() {
                    self.enforce_expr(arg)?;
                }
                Ok(())
            }
            Expr::Extension(_) => Err(EnforceError::Unsupported("extension nodes".into())),
        }
    }
}

/// Parses a grant's filter into matchers. It must be a bare selector: braces of matchers, optionally after
/// a metric name; no functions, operators, ranges, `offset`, `@` or `or`.
fn parse_filter(filter: &str) -> Result<Vec<Constraint>, EnforceError> {
    let bad = |why: &str| EnforceError::BadGrant(format!("filter {filter:?} {why}"));
    // The parser refuses a lone selector whose matchers all match the empty string (`{team!="test"}`), a
    // perfectly good filter. So we parse it with a probe matcher first in the braces, then take it out.
    const PROBE: &str = "__tenantgate_probe__";
    let trimmed = filter.trim_start();
    let name_len = trimmed
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(trimmed.len());
    let after_name = trimmed[name_len..].trim_start();
    let Some(inside) = after_name.strip_prefix('{') else {
        return Err(bad("is not a series selector"));
    };
    let probed = format!("{} {{{PROBE}=\"x\",{inside}", &trimmed[..name_len]);
    let text = prescan::prescan(&probed).map_err(|e| bad(&e.to_string()))?;
    let vs = match parse(&text) {
        Ok(Expr::VectorSelector(vs)) => vs,
        Ok(_) => return Err(bad("is not a bare series selector")),
        Err(e) => return Err(bad(&e.to_string())),
    };
    if vs.offset.is_some() || vs.at.is_some() {
        return Err(bad("has modifiers"));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(bad("uses `or`"));
    }
    let mut matchers = vs.matchers.matchers;
    match matchers.first() {
        Some(m) if m.name == PROBE => {
            matchers.remove(0);
        }
        _ => return Err(bad("is not a series selector")),
    }
    let mut constraints = Vec::with_capacity(matchers.len() + 1);
    if let Some(name) = vs.name {
        constraints.push(Constraint::equal("__name__", &name));
    }
    for m in matchers {
        let regex = match m.op {
            MatchOp::Re(_) | MatchOp::NotRe(_) => {
                Some(GoRegex::new(&m.value).map_err(|e| bad(&e))?)
            }
            _ => None,
        };
        let matcher = match (&m.op, &regex) {
            // Hold the regex exactly as the parser would build it from our printed text.
            (MatchOp::Re(_), Some(re)) => {
                Matcher::new(MatchOp::Re(re.regex().clone()), &m.name, &m.value)
            }
            (MatchOp::NotRe(_), Some(re)) => {
                Matcher::new(MatchOp::NotRe(re.regex().clone()), &m.name, &m.value)
            }
            _ => m,
        };
        constraints.push(Constraint { matcher, regex });
    }
    if constraints.is_empty() {
        return Err(bad("has no matchers"));
    }
    Ok(constraints)
}

/// The parser, with a panic turned into an error (see [`prescan`] for the known ones).
pub(crate) fn parse(text: &str) -> Result<Expr, EnforceError> {
    match catch_unwind(AssertUnwindSafe(|| parser::parse(text))) {
        Ok(Ok(expr)) => Ok(expr),
        Ok(Err(message)) => Err(EnforceError::Parse(message)),
        Err(_) => Err(EnforceError::Parse(
            "the parser failed on this input".into(),
        )),
    }
}

/// Rewrites a `query` / `query_range` expression (and the `query` of `query_exemplars`, which is an
/// expression too) so every selector in it carries the grant's matchers. With an empty enforcement the
/// query is still parsed, checked and re-printed.
pub fn enforce_query(query: &str, e: &Enforcement) -> Result<String, EnforceError> {
    let text = prescan::prescan(query)?;
    let mut expr = parse(&text)?;
    e.enforce_expr(&mut expr)?;
    print::print(&expr)
}

/// Rewrites one `match[]` value (series, label names, label values, federate) the same way. It must be a
/// series selector: no range, function, operator, `offset` or `@`.
pub fn enforce_selector(selector: &str, e: &Enforcement) -> Result<String, EnforceError> {
    let text = prescan::prescan(selector)?;
    let mut vs = match parse(&text)? {
        Expr::VectorSelector(vs) if vs.offset.is_none() && vs.at.is_none() => vs,
        _ => return Err(EnforceError::NotSelector),
    };
    e.enforce_selector(&mut vs)?;
    print::print_selector(&vs)
}

/// The `match[]` to add when a client sent none, e.g. `{team="dev"}`. Prometheus refuses a selector whose
/// matchers all match the empty string (`{team!="test"}`), so then `__name__=~".+"`, which every series
/// matches, is added. An empty enforcement gives `{__name__=~".+"}`: every series.
pub fn default_selector(e: &Enforcement) -> String {
    let mut out = String::from("{");
    for (i, c) in e.constraints.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        print::write_matcher(&mut out, &c.matcher);
    }
    let all_match_empty = e.constraints.iter().all(|c| c.verdict("") != Some(false));
    if all_match_empty {
        if !e.constraints.is_empty() {
            out.push(',');
        }
        out.push_str("__name__=~\".+\"");
    }
    out.push('}');
    out
}

#[cfg(test)]
pub(crate) mod tests;
