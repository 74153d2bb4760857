//! Properties of query enforcement and rules filtering, black-box through the public API.
//!
//! The main one: for random valid PromQL (selectors with random matchers and awkward strings, nested
//! functions, aggregations with parameters, binary operators with every modifier, subqueries, `@`,
//! `offset`) and random grants, the rewritten query parses, every selector in it carries the grant's
//! matchers, it prints back to itself, enforcing it again changes nothing, and it is the input plus our
//! matchers and nothing else (compared as trees). The others: nothing panics on arbitrary input.

mod common;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, VectorSelector};
use proptest::prelude::*;
use proptest::strategy::Union;
use tenantgate::promql::prescan::prescan;
use tenantgate::promql::{
    check_enforced, default_selector, enforce_query, enforce_selector, fuzz_enforce, EnforceError,
    Enforcement,
};
use tenantgate::rules_filter::{filter_rules, Kind};

// ---------------------------------------------------------------------------------------------------
// Random PromQL text.

/// Label names, including keywords (legal as label names inside braces) and a non-identifier name.
fn label_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "job", "instance", "team", "env", "le", "zone", "on", "by", "bool", "offset", "and", "or",
        "sum", "start", "lab.el",
    ])
    .prop_map(str::to_string)
}

fn metric_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "up",
        "http_requests_total",
        "job:rate:sum5m",
        "app_x",
        "sum",
        "offset",
        "by",
        "start",
        "fill",
    ])
    .prop_map(str::to_string)
}

/// Label values with the characters that break naive printers.
fn value() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "a", "dev", "ops", "\"", "\\", "\n", "\t", "'", "`", "}", "{", ",", "é", "😀", " ",
            "=~", "or", "#", "\u{7}",
        ]),
        0..5,
    )
    .prop_map(|parts| parts.concat())
}

/// Regexes that both Go and Rust compile (the parser compiles every regex matcher).
fn regex() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        ".*",
        ".+",
        "a|b",
        "d.*",
        "[a-z]+",
        "(?i)DEV",
        r"\d+",
        "dev",
        "ops|qa",
        "",
        "x\\.y",
        "\"q\"",
        "é+",
        "[[:alpha:]]+",
    ])
    .prop_map(str::to_string)
}

/// A PromQL string literal for `s`, in one of the three quote styles where it can be written.
fn quote(s: &str, style: u8) -> String {
    match style % 3 {
        1 if !s.contains('\'') && !s.contains('\\') && !s.contains('\n') => format!("'{s}'"),
        2 if !s.contains('`') => format!("`{s}`"),
        _ => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
    }
}

fn matcher() -> impl Strategy<Value = String> {
    (label_name(), 0u8..4, value(), regex(), any::<u8>()).prop_map(|(name, op, v, re, style)| {
        let name = if name.contains('.') {
            format!("\"{name}\"")
        } else {
            name
        };
        match op {
            0 => format!("{name}={}", quote(&v, style)),
            1 => format!("{name}!={}", quote(&v, style)),
            2 => format!("{name}=~{}", quote(&re, style)),
            _ => format!("{name}!~{}", quote(&re, style)),
        }
    })
}

fn duration() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "5m", "1h30m", "30s", "1d", "2w", "1y", "500ms", "90", "1.5", "1h",
    ])
}

fn modifiers() -> impl Strategy<Value = String> {
    (0u8..4, duration(), 0u8..3, 0u8..2).prop_map(|(which, d, at, neg)| {
        let offset = format!(" offset {}{d}", if neg == 1 { "-" } else { "" });
        let at = [" @ start()", " @ end()", " @ 1609746000.5"][at as usize];
        match which {
            0 => String::new(),
            1 => offset,
            2 => at.to_string(),
            _ => format!("{at}{offset}"),
        }
    })
}

/// `name{matchers}`, `{matchers}` (with a non-empty one, as Prometheus requires) or `name`.
fn selector_body() -> impl Strategy<Value = String> {
    (
        prop::option::of(metric_name()),
        prop::collection::vec(matcher(), 0..4),
        value(),
        any::<u8>(),
    )
        .prop_map(|(name, matchers, v, style)| match name {
            Some(n) if matchers.is_empty() => n,
            Some(n) => format!("{n}{{{}}}", matchers.join(",")),
            None => {
                let anchor = format!("job={}", quote(&format!("j{v}"), style));
                let mut all = matchers;
                all.push(anchor);
                format!("{{{}}}", all.join(", "))
            }
        })
}

fn vector_leaf() -> impl Strategy<Value = String> {
    (selector_body(), modifiers()).prop_map(|(s, m)| format!("{s}{m}"))
}

fn range_fn(sel: String, d: &str, m: String, f: &str) -> String {
    format!("{f}({sel}[{d}]{m})")
}

fn instant_vector() -> impl Strategy<Value = String> {
    let leaf = Union::new(vec![
        vector_leaf().boxed(),
        (
            selector_body(),
            duration(),
            modifiers(),
            prop::sample::select(vec![
                "rate",
                "increase",
                "sum_over_time",
                "absent_over_time",
            ]),
        )
            .prop_map(|(s, d, m, f)| range_fn(s, d, m, f))
            .boxed(),
    ]);
    leaf.prop_recursive(4, 24, 3, |inner| {
        Union::new(vec![
            (
                prop::sample::select(vec![
                    "abs",
                    "ceil",
                    "histogram_sum",
                    "histogram_count",
                    "sort",
                    "timestamp",
                ]),
                inner.clone(),
            )
                .prop_map(|(f, v)| format!("{f}({v})"))
                .boxed(),
            (
                prop::sample::select(vec!["sum", "avg", "min", "max", "count", "group", "stddev"]),
                prop::option::of((any::<bool>(), prop::collection::vec(label_name(), 0..3))),
                inner.clone(),
            )
                .prop_map(|(op, grouping, v)| match grouping {
                    None => format!("{op}({v})"),
                    Some((by, labels)) => {
                        let labels: Vec<String> = labels
                            .iter()
                            .map(|l| {
                                if l.contains('.') {
                                    format!("\"{l}\"")
                                } else {
                                    l.clone()
                                }
                            })
                            .collect();
                        format!(
                            "{op} {} ({}) ({v})",
                            if by { "by" } else { "without" },
                            labels.join(", ")
                        )
                    }
                })
                .boxed(),
            (inner.clone(), inner.clone())
                .prop_map(|(k, v)| format!("topk(scalar({k}), {v})"))
                .boxed(),
            inner
                .clone()
                .prop_map(|v| format!("quantile(0.9, {v})"))
                .boxed(),
            inner
                .clone()
                .prop_map(|v| format!("count_values(\"value\", {v})"))
                .boxed(),
            inner
                .clone()
                .prop_map(|v| format!("histogram_quantile(0.99, {v})"))
                .boxed(),
            inner
                .clone()
                .prop_map(|v| format!("label_replace({v}, \"team\", \"$1\", \"job\", \"(.*)\")"))
                .boxed(),
            inner.clone().prop_map(|v| format!("absent({v})")).boxed(),
            inner
                .clone()
                .prop_map(|v| format!("clamp({v}, -1, 1e300)"))
                .boxed(),
            (inner.clone(), inner.clone(), 0u8..16)
                .prop_map(|(a, b, op)| binary(&a, &b, op))
                .boxed(),
            inner.clone().prop_map(|v| format!("-{v}")).boxed(),
            inner.clone().prop_map(|v| format!("({v})")).boxed(),
            inner.clone().prop_map(|v| format!("{v} * 2 ^ -1")).boxed(),
            (
                inner.clone(),
                duration(),
                prop::option::of(duration()),
                modifiers(),
                prop::sample::select(vec!["max_over_time", "avg_over_time", "quantile_over_time"]),
            )
                .prop_map(|(v, range, step, m, f)| {
                    let step = step.unwrap_or("");
                    if f == "quantile_over_time" {
                        format!("{f}(0.5, ({v})[{range}:{step}]{m})")
                    } else {
                        format!("{f}(({v})[{range}:{step}]{m})")
                    }
                })
                .boxed(),
        ])
    })
}

/// Two vectors joined by an operator, with modifiers only where PromQL allows them. Operands of operators
/// with vector matching are parenthesized: unparenthesized, `a >= 0.5` then `- on(job) b` would put the
/// scalar `0.5` under `on()`; plain operators are left bare so precedence gets exercised.
fn binary(a: &str, b: &str, op: u8) -> String {
    let (pa, pb) = (format!("({a})"), format!("({b})"));
    match op {
        0 => format!("{a} + {b}"),
        1 => format!("{pa} - on(job) {pb}"),
        2 => format!("{pa} * ignoring(instance) group_left(zone) {pb}"),
        // A bare `group_right` before `(` would read the parenthesis as its label list (Prometheus too).
        3 => format!("{pa} / on(job, le) group_right() {pb}"),
        4 => format!("{a} > bool {b}"),
        5 => format!("{pa} == bool on() {pb}"),
        6 => format!("{a} <= {b}"),
        7 => format!("{pa} and {pb}"),
        8 => format!("{pa} or on(job) {pb}"),
        9 => format!("{pa} unless ignoring(le) {pb}"),
        10 => format!("{a} % {b}"),
        11 => format!("{a} ^ {b}"),
        12 => format!("{a} atan2 {b}"),
        13 => format!("{pa} != bool ignoring() {pb}"),
        14 => format!("{a} >= 0.5"),
        _ => format!("1 - {a}"),
    }
}

// ---------------------------------------------------------------------------------------------------
// Random grants.

#[derive(Debug, Clone)]
struct Grant {
    labels: Vec<(String, String)>,
    filter: Option<String>,
}

fn grant() -> impl Strategy<Value = Grant> {
    let labels = prop::sample::subsequence(
        vec![
            ("team".to_string(), "dev".to_string()),
            ("env".to_string(), "prod".to_string()),
            ("lab.el".to_string(), "x\"y\\".to_string()),
            ("zone".to_string(), String::new()),
        ],
        0..3,
    );
    let filter = prop::option::of(prop::sample::select(vec![
        r#"{tier=~"web|api",stage!="test"}"#.to_string(),
        r#"{job=~".+"}"#.to_string(),
        r#"{team!="ops"}"#.to_string(),
        r#"{__name__=~"[a-z_:]+"}"#.to_string(),
        r#"{env=~"prod|dev"}"#.to_string(),
        r#"up{instance!~"bad.*"}"#.to_string(),
    ]));
    (labels, filter).prop_map(|(labels, filter)| Grant { labels, filter })
}

fn enforcement(g: &Grant) -> Enforcement {
    let filters: Vec<String> = g.filter.iter().cloned().collect();
    Enforcement::new(&g.labels, &filters).expect("generated grants are valid")
}

/// The grant's matchers as the parser builds them, for comparing trees.
fn grant_matchers(g: &Grant) -> Vec<Matcher> {
    let mut out: Vec<Matcher> = g
        .labels
        .iter()
        .map(|(n, v)| Matcher::new(MatchOp::Equal, n, v))
        .collect();
    if let Some(f) = &g.filter {
        // A probe matcher, so that filters whose matchers all match "" parse as a lone selector.
        match parser::parse(&f.replacen('{', "{probe=\"x\",", 1)) {
            Ok(Expr::VectorSelector(vs)) => {
                if let Some(name) = vs.name {
                    out.push(Matcher::new(MatchOp::Equal, "__name__", &name));
                }
                out.extend(vs.matchers.matchers.into_iter().skip(1));
            }
            other => panic!("{f}: {other:?}"),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Trees, normalized: the metric name as a `__name__` matcher, the grant's matchers removed, the rest sorted.

fn same(a: &Matcher, b: &Matcher) -> bool {
    a.name == b.name
        && a.value == b.value
        && std::mem::discriminant(&a.op) == std::mem::discriminant(&b.op)
}

fn normalize_selector(vs: &mut VectorSelector, ours: &[Matcher]) {
    if let Some(name) = vs.name.take() {
        vs.matchers
            .matchers
            .insert(0, Matcher::new(MatchOp::Equal, "__name__", &name));
    }
    vs.matchers
        .matchers
        .retain(|m| !ours.iter().any(|o| same(o, m)));
    vs.matchers.matchers.sort_by(|a, b| {
        (&a.name, a.op.to_string(), &a.value).cmp(&(&b.name, b.op.to_string(), &b.value))
    });
}

fn normalize(expr: &mut Expr, ours: &[Matcher]) {
    match expr {
        Expr::Aggregate(agg) => {
            if let Some(p) = agg.param.as_deref_mut() {
                normalize(p, ours);
            }
            normalize(&mut agg.expr, ours);
        }
        Expr::Unary(u) => normalize(&mut u.expr, ours),
        Expr::Binary(b) => {
            normalize(&mut b.lhs, ours);
            normalize(&mut b.rhs, ours);
        }
        Expr::Paren(p) => normalize(&mut p.expr, ours),
        Expr::Subquery(s) => normalize(&mut s.expr, ours),
        Expr::Call(c) => c.args.args.iter_mut().for_each(|a| normalize(a, ours)),
        Expr::VectorSelector(vs) => normalize_selector(vs, ours),
        Expr::MatrixSelector(ms) => normalize_selector(&mut ms.vs, ours),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Whether some selector of `expr` has a matcher (or name) on `label`: a conflict needs one.
fn mentions(expr: &Expr, label: &str) -> bool {
    let mut found = false;
    let mut check = |vs: &VectorSelector| {
        found |= vs.matchers.matchers.iter().any(|m| m.name == label)
            || (label == "__name__" && vs.name.is_some());
    };
    fn walk(expr: &Expr, f: &mut dyn FnMut(&VectorSelector)) {
        match expr {
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    walk(p, f);
                }
                walk(&a.expr, f);
            }
            Expr::Unary(u) => walk(&u.expr, f),
            Expr::Binary(b) => {
                walk(&b.lhs, f);
                walk(&b.rhs, f);
            }
            Expr::Paren(p) => walk(&p.expr, f),
            Expr::Subquery(s) => walk(&s.expr, f),
            Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, f)),
            Expr::VectorSelector(vs) => f(vs),
            Expr::MatrixSelector(ms) => f(&ms.vs),
            _ => {}
        }
    }
    walk(expr, &mut check);
    found
}

// ---------------------------------------------------------------------------------------------------

/// `PROPTEST_CASES` overrides the default count, for longer runs.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn rewritten_queries_carry_the_grant_and_nothing_else_changes(query in instant_vector(), g in grant()) {
        let e = enforcement(&g);
        // Backtick strings with backslashes need the prescan's rewrite, so compare against that reading.
        let input = prescan(&query).ok().and_then(|text| parser::parse(&text).ok());
        prop_assert!(input.is_some(), "generated query does not parse: {}", query);
        match enforce_query(&query, &e) {
            Ok(out) => {
                check_enforced(&out, &e).map_err(TestCaseError::fail)?;
                let again = enforce_query(&out, &e);
                prop_assert_eq!(again.as_ref(), Ok(&out), "not idempotent");
                let ours = grant_matchers(&g);
                let mut got = parser::parse(&out).map_err(TestCaseError::fail)?;
                normalize(&mut got, &ours);
                if let Some(mut want) = input {
                    normalize(&mut want, &ours);
                    prop_assert_eq!(got, want, "{} -> {}", query, out);
                }
            }
            Err(EnforceError::Conflict(label)) => {
                let constrained: Vec<String> = grant_matchers(&g).into_iter().map(|m| m.name).collect();
                prop_assert!(constrained.contains(&label), "conflict on unconstrained {}", label);
                let tree = input.ok_or_else(|| TestCaseError::fail("conflict on a query that did not parse"))?;
                prop_assert!(mentions(&tree, &label), "conflict on {} not in {}", label, query);
            }
            Err(other) => prop_assert!(false, "{} refused: {:?}", query, other),
        }
    }

    #[test]
    fn rewritten_selectors_carry_the_grant(sel in selector_body(), g in grant()) {
        let e = enforcement(&g);
        match enforce_selector(&sel, &e) {
            Ok(out) => check_enforced(&out, &e).map_err(TestCaseError::fail)?,
            Err(EnforceError::Conflict(_)) => {}
            Err(other) => prop_assert!(false, "{} refused: {:?}", sel, other),
        }
        check_enforced(&default_selector(&e), &e).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4096), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
        fuzz_enforce(&data);
    }

    #[test]
    fn token_soup_never_panics(choice in any::<u8>(), tokens in prop::collection::vec(prop::sample::select(vec![
        "foo", "{", "}", "(", ")", "[", "]", ":", ",", "=", "!=", "=~", "!~", "\"a\"", "'b'", "`c\\d`", "5m", "1e400",
        "0x10", "Inf", "NaN", "-", "+", "*", "/", "^", "%", "==", ">", "bool", "on", "ignoring", "group_left",
        "group_right", "by", "without", "sum", "topk", "rate", "offset", "@", "start", "end", "or", "and", "unless",
        " ", "\n", "#", "1", "0.5", "label_replace", "info", "__name__", "fill", "limitk", "\"\\xff\"",
    ]), 0..40)) {
        let mut data = vec![choice];
        data.extend(tokens.concat().into_bytes());
        fuzz_enforce(&data);
    }

    #[test]
    fn arbitrary_filters_never_panic(filter in "\\PC{0,40}", labels in prop::collection::vec(("\\PC{0,6}", "\\PC{0,6}"), 0..3)) {
        if let Ok(e) = Enforcement::new(&labels, &[filter]) {
            check_enforced(&default_selector(&e), &e).map_err(TestCaseError::fail)?;
            if let Ok(out) = enforce_query("up", &e) {
                check_enforced(&out, &e).map_err(TestCaseError::fail)?;
            }
        }
    }

    #[test]
    fn alerts_shown_are_visible_and_never_invented(
        alerts in prop::collection::vec(prop::collection::vec((prop::sample::select(vec!["team", "env", "x"]), prop::sample::select(vec!["dev", "ops", "", "é"])), 0..3), 0..6),
        g in grant(),
    ) {
        let e = enforcement(&g);
        let body = serde_json::json!({
            "status": "success",
            "data": { "alerts": alerts.iter().map(|labels| {
                let labels: serde_json::Map<String, serde_json::Value> =
                    labels.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
                serde_json::json!({ "labels": labels, "state": "firing" })
            }).collect::<Vec<_>>() }
        });
        let out = filter_rules(body.to_string().as_bytes(), Kind::Alerts, &e).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let out: serde_json::Value = serde_json::from_slice(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let shown = out["data"]["alerts"].as_array().cloned().unwrap_or_default();
        let given = body["data"]["alerts"].as_array().cloned().unwrap_or_default();
        for a in &shown {
            prop_assert!(given.contains(a));
            let labels = a["labels"].as_object().cloned().unwrap_or_default();
            for (name, value) in &g.labels {
                // A missing label is the empty string, as in PromQL.
                prop_assert_eq!(labels.get(name).and_then(|v| v.as_str()).unwrap_or(""), value.as_str());
            }
        }
        // And nothing visible is hidden: without a filter, exactly the alerts carrying the grant's labels.
        if g.filter.is_none() {
            let visible: Vec<serde_json::Value> = given
                .iter()
                .filter(|a| g.labels.iter().all(|(name, value)| {
                    a["labels"].get(name).and_then(|v| v.as_str()).unwrap_or("") == value
                }))
                .cloned()
                .collect();
            prop_assert_eq!(shown, visible);
        }
    }

    #[test]
    fn rules_filter_never_panics(body in "\\PC{0,300}", json_ish in prop::collection::vec(prop::sample::select(vec![
        "{", "}", "[", "]", ",", ":", "\"status\"", "\"success\"", "\"data\"", "\"groups\"", "\"rules\"", "\"alerts\"",
        "\"labels\"", "\"type\"", "\"alerting\"", "\"recording\"", "\"team\"", "\"dev\"", "null", "1", "\"state\"",
    ]), 0..60)) {
        let e = Enforcement::new(&[("team".into(), "dev".into())], &[]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for kind in [Kind::Rules, Kind::Alerts] {
            let _ = filter_rules(body.as_bytes(), kind, &e);
            let _ = filter_rules(json_ish.concat().as_bytes(), kind, &e);
        }
    }
}

/// Real Prometheus reads what we forward: random rewritten queries go into a rules file for
/// `promtool check rules` (Debian's Prometheus 2.42, installed by `scripts/deps`). Grants and
/// queries with non-identifier label names are left out: only Prometheus 3 reads quoted names, and
/// only a query or grant that already used one produces them.
#[test]
fn real_prometheus_parses_rewritten_queries() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let promtool = common::deps().get("TG_PROMTOOL");
    let mut runner = TestRunner::deterministic();
    let mut rules = String::from("groups:\n- name: rewritten\n  rules:\n");
    let mut count = 0;
    let wanted = cases(2000);
    while count < wanted {
        let q = instant_vector().new_tree(&mut runner).unwrap().current();
        let g = grant().new_tree(&mut runner).unwrap().current();
        if q.contains("lab.el") || g.labels.iter().any(|(n, _)| n.contains('.')) {
            continue;
        }
        if let Ok(out) = enforce_query(&q, &enforcement(&g)) {
            rules.push_str(&format!(
                "  - record: r{count}\n    expr: |-\n      {out}\n"
            ));
            count += 1;
        }
    }
    let dir = common::tempdir();
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, rules).unwrap();
    let output = std::process::Command::new(promtool)
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
