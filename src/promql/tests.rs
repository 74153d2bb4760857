//! Unit tests of query enforcement: one per rule in the module documentation, and the PromQL syntax list
//! that tenantgate must carry through unchanged apart from our matchers.

use super::*;

/// An enforcement from literal labels and filters (also used by `rules_filter`'s tests).
pub(crate) fn grant(labels: &[(&str, &str)], filters: &[&str]) -> Enforcement {
    let labels: Vec<(String, String)> = labels
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
    Enforcement::new(&labels, &filters).unwrap()
}

fn dev() -> Enforcement {
    grant(&[("team", "dev")], &[])
}

/// Enforces, checks the invariant on the result and returns it.
fn enforced(q: &str, e: &Enforcement) -> String {
    let out = enforce_query(q, e).unwrap_or_else(|err| panic!("{q}: {err}"));
    check_enforced(&out, e).unwrap_or_else(|why| panic!("{q}: {why}"));
    assert_eq!(
        enforce_query(&out, e).as_ref(),
        Ok(&out),
        "not idempotent: {q}"
    );
    out
}

#[test]
fn every_selector_gets_the_labels() {
    let e = dev();
    let cases = [
        (
            r#"rate(http_requests_total{job="api"}[5m])"#,
            r#"rate(http_requests_total{job="api",team="dev"}[5m])"#,
        ),
        ("foo", r#"foo{team="dev"}"#),
        ("foo offset 5m", r#"foo{team="dev"} offset 5m"#),
        (
            "foo[5m] @ 100 offset -1m",
            r#"foo{team="dev"}[5m] @ 100 offset -1m"#,
        ),
        ("sum by (job) (foo)", r#"sum by (job) (foo{team="dev"})"#),
        (
            "topk(scalar(bar), foo)",
            r#"topk(scalar(bar{team="dev"}), foo{team="dev"})"#,
        ),
        (
            "quantile(0.9, foo) without (a)",
            r#"quantile without (a) (0.9, foo{team="dev"})"#,
        ),
        (
            r#"count_values("v", foo)"#,
            r#"count_values("v", foo{team="dev"})"#,
        ),
        (
            "a + on(x) group_left(y) b",
            r#"a{team="dev"} + on (x) group_left (y) b{team="dev"}"#,
        ),
        (
            "a or b unless c and d",
            r#"a{team="dev"} or b{team="dev"} unless c{team="dev"} and d{team="dev"}"#,
        ),
        ("a > bool 1", r#"a{team="dev"} > bool 1"#),
        ("-foo", r#"-foo{team="dev"}"#),
        ("(foo)", r#"(foo{team="dev"})"#),
        (
            "max_over_time(rate(foo[5m])[1h:1m] @ end())",
            r#"max_over_time(rate(foo{team="dev"}[5m])[1h:1m] @ end())"#,
        ),
        (
            "sum(rate(foo[5m]))[30m:]",
            r#"sum(rate(foo{team="dev"}[5m]))[30m:]"#,
        ),
        (
            r#"label_replace(foo, "dst", "$1", "src", "(.*)")"#,
            r#"label_replace(foo{team="dev"}, "dst", "$1", "src", "(.*)")"#,
        ),
        (
            r#"absent(nonexistent{job="x"})"#,
            r#"absent(nonexistent{job="x",team="dev"})"#,
        ),
        ("time() - 1", "time() - 1"),
        ("vector(1)", "vector(1)"),
        (
            r#"{__name__=~"foo.*"}"#,
            r#"{__name__=~"foo.*",team="dev"}"#,
        ),
        (r#"{__name__="foo"}"#, r#"{__name__="foo",team="dev"}"#),
    ];
    for (q, want) in cases {
        assert_eq!(enforced(q, &e), want, "{q}");
    }
}

#[test]
fn labels_and_filter_are_anded() {
    let e = grant(
        &[("team", "dev"), ("env", "prod")],
        &[r#"{job=~"api|web",zone!="test"}"#],
    );
    assert_eq!(
        enforced("foo", &e),
        r#"foo{team="dev",env="prod",job=~"api|web",zone!="test"}"#
    );
    let only_filter = grant(&[], &[r#"{env=~"prod|dev",team!="test"}"#]);
    assert_eq!(
        enforced("up", &only_filter),
        r#"up{env=~"prod|dev",team!="test"}"#
    );
}

#[test]
fn compatible_query_matchers_are_kept_and_equal_ones_not_doubled() {
    let e = dev();
    assert_eq!(enforced(r#"foo{team="dev"}"#, &e), r#"foo{team="dev"}"#);
    assert_eq!(
        enforced(r#"foo{team=~"d.*"}"#, &e),
        r#"foo{team=~"d.*",team="dev"}"#
    );
    assert_eq!(
        enforced(r#"foo{team=~"dev|ops"}"#, &e),
        r#"foo{team=~"dev|ops",team="dev"}"#
    );
    assert_eq!(
        enforced(r#"foo{team!="ops"}"#, &e),
        r#"foo{team!="ops",team="dev"}"#
    );
    assert_eq!(
        enforced(r#"foo{team!~"ops|qa"}"#, &e),
        r#"foo{team!~"ops|qa",team="dev"}"#
    );
    // The same filter matcher in the query is not doubled either.
    let f = grant(&[], &[r#"{env=~"prod|dev"}"#]);
    assert_eq!(
        enforced(r#"foo{env=~"prod|dev"}"#, &f),
        r#"foo{env=~"prod|dev"}"#
    );
    assert_eq!(
        enforced(r#"foo{env="prod"}"#, &f),
        r#"foo{env="prod",env=~"prod|dev"}"#
    );
}

#[test]
fn conflicting_query_matchers_are_refused() {
    let e = dev();
    for q in [
        r#"foo{team="ops"}"#,
        r#"foo{team!="dev"}"#,
        r#"foo{team=~"ops|qa"}"#,
        r#"foo{team=~"de"}"#,
        r#"foo{team!~"dev"}"#,
        r#"foo{team!~"d.*"}"#,
        r#"sum(rate(foo{team="ops"}[5m])) / sum(rate(foo[5m]))"#,
        r#"foo and on() absent(bar{team="ops"})"#,
    ] {
        assert_eq!(
            enforce_query(q, &e),
            Err(EnforceError::Conflict("team".into())),
            "{q}"
        );
    }
    // Against a filter, a query's `=` that the filter excludes is refused; other combinations are ANDed.
    let f = grant(&[], &[r#"{env=~"prod|dev",team!="test"}"#]);
    assert_eq!(
        enforce_query(r#"foo{env="staging"}"#, &f),
        Err(EnforceError::Conflict("env".into()))
    );
    assert_eq!(
        enforce_query(r#"foo{team="test"}"#, &f),
        Err(EnforceError::Conflict("team".into()))
    );
    assert_eq!(
        enforced(r#"foo{env=~"stag.*"}"#, &f),
        r#"foo{env=~"stag.*",env=~"prod|dev",team!="test"}"#
    );
}

#[test]
fn regexes_on_enforced_labels_use_prometheus_anchoring() {
    let e = dev();
    // Unanchored, `ev` would match "dev"; Prometheus anchors it, so it cannot.
    assert_eq!(
        enforce_query(r#"foo{team=~"ev"}"#, &e),
        Err(EnforceError::Conflict("team".into()))
    );
    assert!(enforce_query(r#"foo{team=~"(?i)DEV"}"#, &e).is_ok());
    // A regex that Rust cannot compile is refused, not guessed at: promql-parser accepts `d{x}` (Go reads
    // the braces literally) but we cannot tell what it would match.
    assert!(matches!(
        enforce_query(r#"foo{team=~"d{x}"}"#, &e),
        Err(EnforceError::Unsupported(_))
    ));
    // A regex on another label is none of our business: forwarded as written.
    assert_eq!(
        enforced(r#"foo{path=~"a{b}c"}"#, &e),
        r#"foo{path=~"a{b}c",team="dev"}"#
    );
}

#[test]
fn when_rust_and_go_may_disagree_the_query_is_forwarded_never_widened() {
    // Rust's \d matches "٣", Go's does not: we cannot call it a conflict, so we forward, and ours is ANDed.
    let e = grant(&[("team", "٣")], &[]);
    assert_eq!(
        enforced(r#"foo{team!~"\\d"}"#, &e),
        r#"foo{team!~"\\d",team="٣"}"#
    );
    // `[[a]]` means different things to the two engines.
    let e = grant(&[("team", "a")], &[]);
    assert_eq!(
        enforced(r#"foo{team=~"[[b]]"}"#, &e),
        r#"foo{team=~"[[b]]",team="a"}"#
    );
}

#[test]
fn metric_name_restrictions() {
    let e = grant(&[], &[r#"{__name__=~"app_.*"}"#]);
    // A name outside the braces next to a `__name__` matcher is an error to Prometheus: it moves inside.
    assert_eq!(
        enforced("app_requests", &e),
        r#"{__name__="app_requests",__name__=~"app_.*"}"#
    );
    assert_eq!(
        enforced(r#"rate(app_x{job="a"}[5m])"#, &e),
        r#"rate({__name__="app_x",job="a",__name__=~"app_.*"}[5m])"#
    );
    assert_eq!(
        enforce_query("other_metric", &e),
        Err(EnforceError::Conflict("__name__".into()))
    );
    // A filter with a metric name before the braces.
    let named = grant(&[], &[r#"up{job="api"}"#]);
    assert_eq!(enforced("up", &named), r#"{__name__="up",job="api"}"#);
    assert_eq!(
        enforce_query("down", &named),
        Err(EnforceError::Conflict("__name__".into()))
    );
}

#[test]
fn empty_matching_selectors_stay_valid() {
    // A grant whose matchers all match the empty string still leaves the query's own non-empty matcher.
    let e = grant(&[], &[r#"{team!="test"}"#]);
    assert_eq!(enforced("foo", &e), r#"foo{team!="test"}"#);
    assert_eq!(enforced(r#"{job="a"}"#, &e), r#"{job="a",team!="test"}"#);
    let empty_value = grant(&[("team", "")], &[]);
    assert_eq!(
        enforced(r#"{job="a"}"#, &empty_value),
        r#"{job="a",team=""}"#
    );
    // The query's own selectors must be valid to begin with, as Prometheus requires.
    for q in ["{}", r#"{job=~".*"}"#, r#"{job=""}"#] {
        assert!(
            matches!(enforce_query(q, &e), Err(EnforceError::Parse(_))),
            "{q}"
        );
    }
}

#[test]
fn default_selector_is_always_a_valid_selector() {
    let cases = [
        (grant(&[("team", "dev")], &[]), r#"{team="dev"}"#),
        (
            grant(&[("team", "dev")], &[r#"{env=~"prod|dev"}"#]),
            r#"{team="dev",env=~"prod|dev"}"#,
        ),
        (
            grant(&[], &[r#"{team!="test"}"#]),
            r#"{team!="test",__name__=~".+"}"#,
        ),
        (grant(&[("team", "")], &[]), r#"{team="",__name__=~".+"}"#),
        (grant(&[("a.b", "x\"y")], &[]), r#"{"a.b"="x\"y"}"#),
        (Enforcement::default(), r#"{__name__=~".+"}"#),
    ];
    for (e, want) in cases {
        let got = default_selector(&e);
        assert_eq!(got, want);
        check_enforced(&got, &e).unwrap();
    }
}

#[test]
fn enforced_values_are_escaped() {
    let e = grant(&[("team", "a\"} or up{x=\"\\\n")], &[]);
    let out = enforced("foo", &e);
    assert_eq!(out, r#"foo{team="a\"} or up{x=\"\\\n"}"#);
    // Non-identifier label names are quoted (Prometheus 3 syntax).
    let utf8 = grant(&[("service.name", "checkout")], &[]);
    assert_eq!(enforced("foo", &utf8), r#"foo{"service.name"="checkout"}"#);
}

#[test]
fn selectors_for_match_arguments() {
    let e = grant(&[("team", "dev")], &[r#"{env=~"prod|dev"}"#]);
    assert_eq!(
        enforce_selector("up", &e).unwrap(),
        r#"up{team="dev",env=~"prod|dev"}"#
    );
    assert_eq!(
        enforce_selector(r#"{job="a"}"#, &e).unwrap(),
        r#"{job="a",team="dev",env=~"prod|dev"}"#
    );
    assert_eq!(
        enforce_selector(r#"{__name__=~"a.*"}"#, &e).unwrap(),
        r#"{__name__=~"a.*",team="dev",env=~"prod|dev"}"#
    );
    assert_eq!(
        enforce_selector(r#"up{team="ops"}"#, &e),
        Err(EnforceError::Conflict("team".into()))
    );
    for s in [
        "rate(up[5m])",
        "up[5m]",
        "up offset 5m",
        "up @ 100",
        "up + 1",
        "sum(up)",
        "(up)",
    ] {
        assert_eq!(
            enforce_selector(s, &e),
            Err(EnforceError::NotSelector),
            "{s}"
        );
    }
    assert!(matches!(
        enforce_selector("", &e),
        Err(EnforceError::Parse(_))
    ));
    assert!(matches!(
        enforce_selector(r#"up{a="b" or c="d"}"#, &e),
        Err(EnforceError::Unsupported(_))
    ));
}

#[test]
fn grants_are_validated() {
    let l = |n: &str, v: &str| (n.to_string(), v.to_string());
    let f = |s: &str| s.to_string();
    assert_eq!(
        Enforcement::new(&[], &[f(r#"{a="1"}"#), f(r#"{b="2"}"#)]).unwrap_err(),
        EnforceError::SeveralFilters
    );
    // The same filter twice is one filter.
    assert!(Enforcement::new(&[], &[f(r#"{a="1"}"#), f(r#"{a="1"}"#)]).is_ok());
    assert!(matches!(
        Enforcement::new(&[l("", "x")], &[]),
        Err(EnforceError::BadGrant(_))
    ));
    assert!(matches!(
        Enforcement::new(&[l("team", "a"), l("team", "b")], &[]),
        Err(EnforceError::BadGrant(_))
    ));
    assert_eq!(
        Enforcement::new(&[l("team", "a"), l("team", "a")], &[])
            .unwrap()
            .constraints()
            .len(),
        1
    );
    for bad in [
        "up + 1",
        "rate(up[5m])",
        r#"{a="b"}[5m]"#,
        r#"{a="b"} offset 5m"#,
        r#"{a="b" or c="d"}"#,
        "{}",
        "",
        "   ",
        r#"{a=~"dev)|(.*"}"#,
        r#"{a=~"x{y}"}"#,
        r#""str"{a="b"}"#,
        "WITH (x = {a=\"b\"}) x",
    ] {
        assert!(
            matches!(
                Enforcement::new(&[], &[f(bad)]),
                Err(EnforceError::BadGrant(_))
            ),
            "{bad}"
        );
    }
    // A filter whose matchers all match the empty string is a fine filter.
    assert!(Enforcement::new(&[], &[f(r#"{team!="test"}"#)]).is_ok());
    assert!(Enforcement::new(&[], &[f(r#" up { job = "a" , } "#)]).is_ok());
}

#[test]
fn metricsql_is_refused_not_forwarded() {
    let e = dev();
    for q in [
        "WITH (x = foo) x",
        "foo default 0",
        "rate(foo[5m]) keep_metric_names",
        "rollup_rate(foo[5m])",
        "union(a, b)",
        "foo[5i]",
        "foo[5m] offset 2i",
        "rate(foo)",
        "foo[$__rate_interval]",
        "limit_offset(1, 2, foo)",
        "sum(foo) limit 10",
        r#"foo{a="b" or c="d"}"#,
        "foo[1h:5m:1m]",
    ] {
        let got = enforce_query(q, &e);
        assert!(
            matches!(
                got,
                Err(EnforceError::Parse(_) | EnforceError::Unsupported(_))
            ),
            "{q}: {got:?}"
        );
    }
}

#[test]
fn refused_constructs() {
    let e = dev();
    for q in [
        "info(foo)",
        r#"info(rate(http_requests_total[5m]), {k8s_cluster_name=~".+"})"#,
        r#"foo{a="\xff"}"#,
        "foo[0.0001]",
        "foo offset 0",
        "foo @ 1e17",
        "foo[1e400]",
        "foo offset Inf",
    ] {
        assert!(
            matches!(enforce_query(q, &e), Err(EnforceError::Unsupported(_))),
            "{q}: {:?}",
            enforce_query(q, &e)
        );
    }
    let long = format!("foo{}", " + foo".repeat(1000));
    assert_eq!(enforce_query(&long, &e), Err(EnforceError::TooComplex));
}

#[test]
fn relabelling_cannot_widen() {
    // Writing to the enforced label after selection only renames data that our matchers selected.
    let e = dev();
    assert_eq!(
        enforced(
            r#"label_replace(foo, "team", "ops", "", "") or on(team) bar"#,
            &e
        ),
        r#"label_replace(foo{team="dev"}, "team", "ops", "", "") or on (team) bar{team="dev"}"#
    );
    assert_eq!(
        enforced(r#"label_join(foo, "team", ",", "a", "b")"#, &e),
        r#"label_join(foo{team="dev"}, "team", ",", "a", "b")"#
    );
}

#[test]
fn raw_strings_with_backslashes() {
    let e = dev();
    assert_eq!(
        enforced(r"foo{path=~`/v\d+/.*`}", &e),
        r#"foo{path=~"/v\\d+/.*",team="dev"}"#
    );
}

/// The PromQL syntax the gateway must carry: each query, enforced, prints back to the expected text, and
/// that text parses to the tree we printed (checked inside `enforced`).
#[test]
fn current_promql_syntax_survives() {
    let e = dev();
    let d = r#"{team="dev"}"#;
    let cases: Vec<(&str, String)> = vec![
        ("foo @ start()", format!("foo{d} @ start()")),
        ("foo @ end()", format!("foo{d} @ end()")),
        ("foo @ 1609746000", format!("foo{d} @ 1609746000")),
        ("foo @ -100.5", format!("foo{d} @ -100.500")),
        ("foo offset -5m", format!("foo{d} offset -5m")),
        ("foo offset 1h30m", format!("foo{d} offset 1h30m")),
        ("foo[90]", format!("foo{d}[1m30s]")),
        ("foo[1.5]", format!("foo{d}[1s500ms]")),
        (
            "rate(foo[5m])[30m:1m] @ end() offset 1m",
            format!("rate(foo{d}[5m])[30m:1m] @ end() offset 1m"),
        ),
        (
            "a + ignoring(x) group_right b",
            format!("a{d} + ignoring (x) group_right () b{d}"),
        ),
        (
            "a + ignoring() group_left b",
            format!("a{d} + ignoring () group_left () b{d}"),
        ),
        ("a == bool on(x) b", format!("a{d} == bool on (x) b{d}")),
        ("sum by () (foo)", format!("sum by () (foo{d})")),
        (
            "sum(foo) without (a, b)",
            format!("sum without (a, b) (foo{d})"),
        ),
        ("topk(5, foo)", format!("topk(5, foo{d})")),
        (
            "bottomk by (a) (2, foo)",
            format!("bottomk by (a) (2, foo{d})"),
        ),
        ("limitk(2, foo)", format!("limitk(2, foo{d})")),
        ("limit_ratio(0.5, foo)", format!("limit_ratio(0.5, foo{d})")),
        (
            "count_values(\"val\", foo)",
            format!("count_values(\"val\", foo{d})"),
        ),
        ("group(foo)", format!("group(foo{d})")),
        (
            "stddev(foo) + stdvar(foo)",
            format!("stddev(foo{d}) + stdvar(foo{d})"),
        ),
        (
            "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
            format!("histogram_quantile(0.9, sum by (le) (rate(h_bucket{d}[5m])))"),
        ),
        (
            "histogram_count(rate(h[5m]))",
            format!("histogram_count(rate(h{d}[5m]))"),
        ),
        ("histogram_sum(h)", format!("histogram_sum(h{d})")),
        (
            "histogram_fraction(0, 0.2, rate(h[5m]))",
            format!("histogram_fraction(0, 0.2, rate(h{d}[5m]))"),
        ),
        ("histogram_avg(h)", format!("histogram_avg(h{d})")),
        ("histogram_stddev(h)", format!("histogram_stddev(h{d})")),
        ("histogram_stdvar(h)", format!("histogram_stdvar(h{d})")),
        (
            "double_exponential_smoothing(foo[5m], 0.5, 0.5)",
            format!("double_exponential_smoothing(foo{d}[5m], 0.5, 0.5)"),
        ),
        (
            "mad_over_time(foo[5m])",
            format!("mad_over_time(foo{d}[5m])"),
        ),
        (
            "sort_by_label(foo, \"a\")",
            format!("sort_by_label(foo{d}, \"a\")"),
        ),
        ("-2 ^ 2", "-2 ^ 2".into()),
        ("(-2) ^ 2", "(-2) ^ 2".into()),
        ("- -foo", format!("--foo{d}")),
        ("-foo ^ 2", format!("-foo{d} ^ 2")),
        ("2 ^ 3 ^ 2", "2 ^ 3 ^ 2".into()),
        ("a - (b - c)", format!("a{d} - (b{d} - c{d})")),
        ("1e300 * foo", format!("1e300 * foo{d}")),
        ("0x1F + Inf - NaN", "31 + Inf - NaN".into()),
        (
            r#"foo{a="x\"y\\z\n\t"}"#,
            r#"foo{a="x\"y\\z\n\t",team="dev"}"#.into(),
        ),
        ("foo{a='it\\'s'}", r#"foo{a="it's",team="dev"}"#.into()),
        (
            r#"foo{a="\u00e9\U0001F600\x41\101"}"#,
            r#"foo{a="é😀AA",team="dev"}"#.into(),
        ),
        (
            r#"foo{a=~"\\d+\\.\\w"}"#,
            r#"foo{a=~"\\d+\\.\\w",team="dev"}"#.into(),
        ),
        (
            r#"foo{a=~"^(?:a|b)$"}"#,
            r#"foo{a=~"^(?:a|b)$",team="dev"}"#.into(),
        ),
        (
            r#"{__name__=~"foo.*"}"#,
            r#"{__name__=~"foo.*",team="dev"}"#.into(),
        ),
        (
            r#"{"my.metric"}"#,
            r#"{__name__="my.metric",team="dev"}"#.into(),
        ),
        (
            r#"{"my.metric", "lab.el"="v"}"#,
            r#"{__name__="my.metric","lab.el"="v",team="dev"}"#.into(),
        ),
        (
            r#"sum by ("lab.el") (foo)"#,
            format!("sum by (\"lab.el\") (foo{d})"),
        ),
        ("foo # a comment", format!("foo{d}")),
        ("sum{job=\"a\"}", r#"sum{job="a",team="dev"}"#.into()),
        ("a + fill(0) b", format!("a{d} + fill (0) b{d}")),
    ];
    for (q, want) in cases {
        assert_eq!(enforced(q, &e), want, "{q}");
    }
}

#[test]
fn parse_errors_carry_the_parser_message() {
    match enforce_query("rate(foo)", &dev()) {
        Err(EnforceError::Parse(m)) => assert!(m.contains("expected type matrix"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_enforcement_still_checks_and_reprints() {
    let e = Enforcement::default();
    assert!(e.is_empty());
    assert_eq!(enforced("sum(rate(foo[5m]))", &e), "sum(rate(foo[5m]))");
    assert!(enforce_query("WITH (x = foo) x", &e).is_err());
}

#[test]
fn fuzz_body_accepts_anything() {
    for data in [
        &b""[..],
        b"\x00",
        b"\x00foo",
        b"\x03sum by (le) (rate(x_bucket[5m]))",
        b"\x04app_x + other",
        b"\x05foo{team=~\"a.*\"}",
        b"\x06{job=\"x\"}",
        b"\x07rate(foo[5m])",
        b"\x01\xff\xfe(",
    ] {
        fuzz_enforce(data);
    }
}

/// The deepest trees the prescan lets through fit in a tokio worker's 2 MiB stack (debug builds have the
/// biggest frames), parse in bounded time, and drop without overflowing.
#[test]
fn deepest_allowed_queries_fit_a_worker_stack() {
    let n = prescan::MAX_OPERATORS;
    let depth = prescan::MAX_NESTING;
    let queries = vec![
        format!("{}foo", "-".repeat(n)),
        format!("foo{}", " + foo".repeat(n)),
        format!("foo{}", " ^ foo".repeat(n)),
        format!(
            "{}foo{}",
            "last_over_time(".repeat(depth),
            "[5m:])".repeat(depth)
        ),
        format!("{}foo{}", "abs(".repeat(depth), ")".repeat(depth)),
        format!("{}foo{}", "sum(".repeat(depth), ")".repeat(depth)),
        format!("{}foo{}", "(".repeat(depth), ")".repeat(depth)),
        format!(
            "{}{}foo{}",
            "(".repeat(depth - 1),
            "-".repeat(n - 1),
            ")".repeat(depth - 1)
        ),
    ];
    let worker = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let e = dev();
            for q in queries {
                let started = std::time::Instant::now();
                let out = enforce_query(&q, &e);
                assert!(out.is_ok(), "{}: {out:?}", &q[..40.min(q.len())]);
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(2),
                    "{:?}",
                    started.elapsed()
                );
            }
        })
        .unwrap();
    worker.join().unwrap();
}

#[test]
fn a_parser_panic_becomes_a_parse_error() {
    // The prescan keeps this input away from the parser; called directly, the parser panics in
    // `Duration::from_secs_f64` (the panic message on stderr is expected).
    assert!(matches!(parse("foo[1e400]"), Err(EnforceError::Parse(_))));
}
