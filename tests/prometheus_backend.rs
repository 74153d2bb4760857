//! tenantgate in front of a real Prometheus (Debian's 2.42, `--web.enable-remote-write-receiver`), the
//! `-read.backendType=prometheus` / `-write.backendType=prometheus` set-up of Prometheus, Thanos, Mimir and
//! Cortex users. Every claim about data is checked against what Prometheus itself holds and answers:
//! - a `team="dev"` token's queries answer exactly what the hand-written dev-only query answers when
//!   asked of Prometheus directly, for instant and range queries with `or`, `unless`, subqueries, `@`,
//!   offsets, `on`, aggregations, `label_replace`, `absent` and histograms;
//! - `series`, `labels`, label values, `federate` and exemplars show only dev's series, and rules and
//!   alerts only dev's (shared rules with dev's alerts only);
//! - remote writes land with the token's labels whatever the sender put there, a real Prometheus sender
//!   included; bodies that do not decode reach nothing;
//! - `-backend.tenantHeader` carries the token's tenant to a server that records what it received
//!   (nginx), and client copies never pass.

mod common;

#[path = "support/rw_model.rs"]
mod rw_model;

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use common::*;
use rw_model::{Exemplar, Series, WriteRequest};
use serde_json::Value;

const DEV: &str = r#"{"tenant_id":{"account_id":0,"project_id":0},"extra_labels":{"team":"dev"}}"#;
const OPS: &str = r#"{"tenant_id":{"account_id":0,"project_id":0},"extra_labels":{"team":"ops"}}"#;

/// Recording and alerting rules Prometheus evaluates every second: some pinned to a team by their
/// labels, some shared.
const RULES: &str = r#"groups:
  - name: teams
    interval: 1s
    rules:
      - record: dev:req:sum
        expr: sum(req_total{team="dev"})
        labels: {team: dev}
      - record: ops:req:sum
        expr: sum(req_total{team="ops"})
        labels: {team: ops}
      - record: all:req:sum
        expr: sum(req_total)
      - alert: DevBusy
        expr: req_total{team="dev"} > 0
        labels: {team: dev}
      - alert: OpsBusy
        expr: req_total{team="ops"} > 0
        labels: {team: ops}
      - alert: AnyBusy
        expr: req_total > 0
"#;

/// A Prometheus that receives remote writes and evaluates [`RULES`].
fn backend() -> Prometheus {
    let port = Prometheus::reserve_port();
    let config = "global:\n  evaluation_interval: 1s\nrule_files: [rules.yml]\n";
    Prometheus::start_with(
        config,
        port,
        &[("rules.yml", RULES)],
        &[
            "--web.enable-remote-write-receiver",
            "--enable-feature=exemplar-storage",
        ],
    )
}

/// The gateway in front of `prom` for reads and writes, with `signer`'s key, plus `extra` flags.
fn gateway(signer: &Signer, prom: &Prometheus, extra: &[&str]) -> Gate {
    let mut args = vec![
        "-read.backendType=prometheus".to_string(),
        "-write.backendType=prometheus".to_string(),
        format!("-read.url={}", prom.url),
        format!("-write.url={}/api/v1/write", prom.url),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Gate::start_secured(signer, &args)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// A snappy-compressed remote-write body.
fn rw_body(series: Vec<Series>) -> Vec<u8> {
    let request = WriteRequest {
        series,
        ..Default::default()
    };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode())
        .unwrap()
}

fn series(pairs: &[(&str, &str)], samples: Vec<(f64, i64)>, exemplars: Vec<Exemplar>) -> Series {
    Series {
        labels: labels(pairs),
        samples,
        exemplars,
        histograms: vec![],
        unknown: vec![],
    }
}

/// POSTs a remote-write body to `url` (with `token` if given); returns the status and body.
fn remote_write(
    url: &str,
    token: Option<&str>,
    body: Vec<u8>,
    content_type: &str,
) -> (u16, String) {
    let mut request = http_client()
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", content_type)
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().unwrap();
    let status = r.status().as_u16();
    (status, body_text(r))
}

const RW: &str = "application/x-protobuf";

/// The scene's data, written straight into Prometheus: ten minutes of counters every 15 s for teams dev
/// and ops and for a series without a team, an ops-only metric and label, latency histograms, and
/// exemplars on dev's and ops' api counters. Returns the time of the last sample (seconds).
fn seed(prom: &Prometheus) -> i64 {
    let end = now() as i64 - 5;
    let start = end - 600;
    let points = |rate: f64| -> Vec<(f64, i64)> {
        (0..=40)
            .map(|i| (rate * 15.0 * i as f64, (start + 15 * i) * 1000))
            .collect()
    };
    let exemplar = |trace: &str| Exemplar {
        labels: labels(&[("trace_id", trace)]),
        value: 1.0,
        timestamp: (end - 30) * 1000,
    };
    let mut all = vec![
        series(
            &[
                ("__name__", "req_total"),
                ("team", "dev"),
                ("job", "api"),
                ("instance", "a"),
            ],
            points(1.0),
            vec![exemplar("dev-trace")],
        ),
        series(
            &[
                ("__name__", "req_total"),
                ("team", "dev"),
                ("job", "web"),
                ("instance", "b"),
            ],
            points(2.0),
            vec![],
        ),
        series(
            &[
                ("__name__", "req_total"),
                ("team", "ops"),
                ("job", "api"),
                ("instance", "c"),
                ("ops_only", "1"),
            ],
            points(4.0),
            vec![exemplar("ops-trace")],
        ),
        series(
            &[
                ("__name__", "req_total"),
                ("team", "ops"),
                ("job", "billing"),
                ("instance", "e"),
            ],
            points(5.0),
            vec![],
        ),
        series(
            &[("__name__", "req_total"), ("job", "api"), ("instance", "d")],
            points(8.0),
            vec![],
        ),
        series(
            &[
                ("__name__", "ops_secret_total"),
                ("team", "ops"),
                ("job", "billing"),
                ("instance", "e"),
            ],
            points(1.0),
            vec![],
        ),
    ];
    for (team, scale) in [("dev", 1.0), ("ops", 10.0)] {
        for (le, share) in [("0.1", 0.5), ("1", 0.9), ("+Inf", 1.0)] {
            all.push(series(
                &[("__name__", "lat_bucket"), ("team", team), ("le", le)],
                points(scale * share),
                vec![],
            ));
        }
    }
    let (status, text) = remote_write(
        &format!("{}/api/v1/write", prom.url),
        None,
        rw_body(all),
        RW,
    );
    assert_eq!(status, 204, "seeding Prometheus: {text}");
    end
}

/// A JSON API answer: `(status, whole body)`.
fn api(url: &str, path: &str, args: &[(&str, &str)], token: Option<&str>) -> (u16, Value) {
    let mut request = http_client().get(format!("{url}{path}")).query(args);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().unwrap();
    let status = r.status().as_u16();
    let text = body_text(r);
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// The `data` of a successful answer.
fn data(url: &str, path: &str, args: &[(&str, &str)], token: Option<&str>) -> Value {
    let (status, v) = api(url, path, args, token);
    assert_eq!(status, 200, "{path} {args:?}: {v}");
    assert_eq!(v["status"], "success", "{path} {args:?}: {v}");
    v["data"].clone()
}

/// A query result with its series in a stable order.
fn sorted(mut result: Value) -> Value {
    if let Some(items) = result["result"].as_array_mut() {
        items.sort_by_key(|i| i["metric"].to_string());
    }
    result
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The `team` of every series in a result or series list.
fn teams(v: &Value) -> BTreeSet<String> {
    let items: Vec<&Value> = match v.get("result") {
        Some(r) => r.as_array().unwrap().iter().map(|i| &i["metric"]).collect(),
        None => v.as_array().unwrap().iter().collect(),
    };
    items
        .iter()
        .map(|m| m["team"].as_str().unwrap_or("<none>").to_string())
        .collect()
}

struct Scene {
    prom: Prometheus,
    gate: Gate,
    signer: Signer,
    dev: String,
    /// Time of the last seeded sample (seconds).
    end: i64,
}

impl Scene {
    fn start() -> Scene {
        let prom = backend();
        let end = seed(&prom);
        let signer = Signer::rsa();
        let gate = gateway(&signer, &prom, &[]);
        let dev = signer.token(DEV);
        Scene {
            prom,
            gate,
            signer,
            dev,
            end,
        }
    }
}

#[test]
fn a_dev_tokens_queries_answer_what_the_hand_written_dev_queries_answer() {
    let s = Scene::start();
    let t = s.end.to_string();
    let at = (s.end - 300).to_string();
    // (what the client sends, what Prometheus is asked directly for the same answer)
    let pairs: Vec<(String, String)> = vec![
        ("req_total".into(), r#"req_total{team="dev"}"#.into()),
        (
            "sum by (job) (rate(req_total[5m]))".into(),
            r#"sum by (job) (rate(req_total{team="dev"}[5m]))"#.into(),
        ),
        (
            r#"req_total{job="api"} or req_total{job="web"}"#.into(),
            r#"req_total{job="api",team="dev"} or req_total{job="web",team="dev"}"#.into(),
        ),
        (
            r#"req_total unless req_total{job="web"}"#.into(),
            r#"req_total{team="dev"} unless req_total{job="web",team="dev"}"#.into(),
        ),
        (
            "max_over_time(rate(req_total[1m])[5m:1m])".into(),
            r#"max_over_time(rate(req_total{team="dev"}[1m])[5m:1m])"#.into(),
        ),
        (
            format!("req_total @ {at}"),
            format!(r#"req_total{{team="dev"}} @ {at}"#),
        ),
        (
            "req_total offset 2m".into(),
            r#"req_total{team="dev"} offset 2m"#.into(),
        ),
        (
            "rate(req_total[5m]) / on (job, instance) group_left req_total".into(),
            r#"rate(req_total{team="dev"}[5m]) / on (job, instance) group_left req_total{team="dev"}"#
                .into(),
        ),
        (
            "topk(1, sum by (team, job) (req_total))".into(),
            r#"topk(1, sum by (team, job) (req_total{team="dev"}))"#.into(),
        ),
        (
            r#"label_replace(req_total, "team", "ops", "", "")"#.into(),
            r#"label_replace(req_total{team="dev"}, "team", "ops", "", "")"#.into(),
        ),
        (
            "absent(ops_secret_total)".into(),
            r#"absent(ops_secret_total{team="dev"})"#.into(),
        ),
        (
            r#"absent(req_total{job="billing"})"#.into(),
            r#"absent(req_total{job="billing",team="dev"})"#.into(),
        ),
        (
            "histogram_quantile(0.9, sum by (le) (rate(lat_bucket[5m])))".into(),
            r#"histogram_quantile(0.9, sum by (le) (rate(lat_bucket{team="dev"}[5m])))"#.into(),
        ),
        (
            r#"count_values("team", req_total > 0)"#.into(),
            r#"count_values("team", req_total{team="dev"} > 0)"#.into(),
        ),
        (
            r#"sum(req_total{team=~"dev|ops"})"#.into(),
            r#"sum(req_total{team="dev"})"#.into(),
        ),
        ("count(req_total)".into(), r#"count(req_total{team="dev"})"#.into()),
        (r#"req_total{team=~"d.*"}"#.into(), r#"req_total{team="dev"}"#.into()),
        (
            "sum by (job) (rate(req_total[5m])) / on(job) group_left sum by (job) (rate(req_total[5m] offset 5m))".into(),
            r#"sum by (job) (rate(req_total{team="dev"}[5m])) / on(job) group_left sum by (job) (rate(req_total{team="dev"}[5m] offset 5m))"#.into(),
        ),
        (
            "topk(1, req_total) or vector(0)".into(),
            r#"topk(1, req_total{team="dev"}) or vector(0)"#.into(),
        ),
        (
            r#"count({__name__=~"req_total|lat_bucket"})"#.into(),
            r#"count({__name__=~"req_total|lat_bucket",team="dev"})"#.into(),
        ),
        (
            "max_over_time(sum(rate(req_total[1m]))[8m:1m] @ end())".into(),
            r#"max_over_time(sum(rate(req_total{team="dev"}[1m]))[8m:1m] @ end())"#.into(),
        ),
        (
            "topk(scalar(count(req_total)), req_total)".into(),
            r#"topk(scalar(count(req_total{team="dev"})), req_total{team="dev"})"#.into(),
        ),
        (
            r#"req_total unless on(instance) req_total{job="web"}"#.into(),
            r#"req_total{team="dev"} unless on(instance) req_total{job="web",team="dev"}"#.into(),
        ),
        (
            "-req_total ^ 2 > bool 0".into(),
            r#"-req_total{team="dev"} ^ 2 > bool 0"#.into(),
        ),
    ];
    let mut distinct_from_all = 0;
    for (query, direct) in &pairs {
        let through = data(
            &s.gate.url,
            "/api/v1/query",
            &[("query", query), ("time", &t)],
            Some(&s.dev),
        );
        let expected = data(
            &s.prom.url,
            "/api/v1/query",
            &[("query", direct), ("time", &t)],
            None,
        );
        assert_eq!(sorted(through.clone()), sorted(expected), "{query}");
        let everyone = data(
            &s.prom.url,
            "/api/v1/query",
            &[("query", query), ("time", &t)],
            None,
        );
        if sorted(everyone) != sorted(through) {
            distinct_from_all += 1;
        }
    }
    // The data makes the restriction visible: all but a few queries (`absent` of what nobody has,
    // `vector(0)`-like answers) answer differently for everyone.
    assert!(
        distinct_from_all + 3 >= pairs.len(),
        "{distinct_from_all} of {}",
        pairs.len()
    );

    // Range queries, as Grafana sends them (POST form) and as GET.
    let (start, step) = ((s.end - 600).to_string(), "15");
    for (query, direct) in [
        (
            "sum by (job) (rate(req_total[1m]))",
            r#"sum by (job) (rate(req_total{team="dev"}[1m]))"#,
        ),
        (
            "req_total or ops_secret_total",
            r#"req_total{team="dev"} or ops_secret_total{team="dev"}"#,
        ),
    ] {
        let args = [
            ("query", query),
            ("start", &start),
            ("end", &t),
            ("step", step),
        ];
        let expected = sorted(data(
            &s.prom.url,
            "/api/v1/query_range",
            &[
                ("query", direct),
                ("start", &start),
                ("end", &t),
                ("step", step),
            ],
            None,
        ));
        let get = sorted(data(
            &s.gate.url,
            "/api/v1/query_range",
            &args,
            Some(&s.dev),
        ));
        assert_eq!(get, expected, "{query}");
        let r = http_client()
            .post(format!("{}/api/v1/query_range", s.gate.url))
            .bearer_auth(&s.dev)
            .form(&args)
            .send()
            .unwrap();
        let post: Value = r.json().unwrap();
        assert_eq!(sorted(post["data"].clone()), expected, "{query} (POST)");
        assert!(
            !expected["result"].as_array().unwrap().is_empty(),
            "{query}"
        );
    }
}

#[test]
fn refusals_are_prometheus_shaped_and_say_why() {
    let s = Scene::start();
    let t = s.end.to_string();
    let refuse = |query: &str, token: &str, status: u16, needle: &str| {
        let (got, v) = api(
            &s.gate.url,
            "/api/v1/query",
            &[("query", query), ("time", &t)],
            Some(token),
        );
        assert_eq!(got, status, "{query}: {v}");
        assert_eq!(v["status"], "error", "{query}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(error.contains(needle), "{query}: {error}");
        if status == 400 {
            assert_eq!(v["errorType"], "bad_data", "{query}: {v}");
        }
    };
    // A matcher on the enforced label that cannot overlap: refused, never widened or emptied.
    refuse(r#"req_total{team="ops"}"#, &s.dev, 400, "team");
    refuse(
        r#"sum(rate(req_total{team!="dev"}[5m]))"#,
        &s.dev,
        400,
        "team",
    );
    // Not PromQL: the parser's message. MetricsQL is refused, not forwarded.
    refuse("sum(rate(req_total[5m])", &s.dev, 400, "cannot parse");
    refuse("WITH (x = req_total) x", &s.dev, 400, "cannot parse");
    refuse("rate(req_total[5i])", &s.dev, 400, "cannot parse");
    // Several extra_filters: VictoriaMetrics ORs them; PromQL cannot. 403 with the reason.
    let two = s.signer.token(
        r#"{"tenant_id":{"account_id":0,"project_id":0},"extra_filters":["{job=\"api\"}","{job=\"web\"}"]}"#,
    );
    refuse("req_total", &two, 403, "several extra_filters");
    // Endpoints no selector restricts on Prometheus, and VictoriaMetrics-only ones.
    let (status, v) = api(&s.gate.url, "/api/v1/status/tsdb", &[], Some(&s.dev));
    assert_eq!(status, 403, "{v}");
    let (status, v) = api(
        &s.gate.url,
        "/api/v1/export",
        &[("match[]", "req_total")],
        Some(&s.dev),
    );
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("VictoriaMetrics API"),
        "{v}"
    );
    // Metadata lists every team's metric names on Prometheus: empty for a restricted token, whole for
    // an unrestricted one.
    let meta = data(&s.gate.url, "/api/v1/metadata", &[], Some(&s.dev));
    assert_eq!(meta, serde_json::json!({}));
    let open = s
        .signer
        .token(r#"{"tenant_id":{"account_id":0,"project_id":0}}"#);
    let (status, _) = api(&s.gate.url, "/api/v1/metadata", &[], Some(&open));
    assert_eq!(status, 200);
    let metrics = metrics_text(&s.gate.url);
    for reason in ["conflict", "parse", "several_filters"] {
        let line = format!("tenantgate_promql_refused_total{{reason=\"{reason}\"}} ");
        let n: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("{line} missing"))
            .parse()
            .unwrap();
        assert!(n >= 1.0, "{line}{n}");
    }
}

#[test]
fn every_query_and_match_spelling_is_enforced_and_extra_filters_apply() {
    let s = Scene::start();
    let t = s.end.to_string();
    // `query` in the URL and in the body, twice, and spelled with an escape: Prometheus reads one of
    // them; every one is rewritten, so whichever it reads answers only dev's series.
    let url = format!(
        "{}/api/v1/query?qu%65ry=ops_secret_total&time={t}&query=sum(ops_secret_total)",
        s.gate.url
    );
    let r = http_client()
        .post(&url)
        .bearer_auth(&s.dev)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("query=ops_secret_total&extra_label=team%3Dops")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["data"]["result"], serde_json::json!([]), "{v}");

    // A filter token: `{team="ops",job!="billing"}` sees ops' api series only.
    let filtered = s.signer.token(
        r#"{"tenant_id":{"account_id":0,"project_id":0},"extra_filters":["{team=\"ops\",job!=\"billing\"}"]}"#,
    );
    let through = data(
        &s.gate.url,
        "/api/v1/query",
        &[("query", "sum by (job) (req_total)"), ("time", &t)],
        Some(&filtered),
    );
    let direct = data(
        &s.prom.url,
        "/api/v1/query",
        &[
            (
                "query",
                r#"sum by (job) (req_total{team="ops",job!="billing"})"#,
            ),
            ("time", &t),
        ],
        None,
    );
    assert_eq!(sorted(through.clone()), sorted(direct));
    assert_eq!(through["result"].as_array().unwrap().len(), 1, "{through}");
}

#[test]
fn series_labels_values_federate_and_exemplars_show_only_the_tokens_series() {
    let s = Scene::start();
    let (start, end) = ((s.end - 900).to_string(), (s.end + 60).to_string());
    let range = [("start", start.as_str()), ("end", end.as_str())];
    let dev_match = [("match[]", r#"{team="dev"}"#), range[0], range[1]];

    // Label names: without match[], the token's own selector is added.
    let through = strings(&data(&s.gate.url, "/api/v1/labels", &range, Some(&s.dev)));
    let direct = strings(&data(&s.prom.url, "/api/v1/labels", &dev_match, None));
    let everyone = strings(&data(&s.prom.url, "/api/v1/labels", &range, None));
    assert_eq!(through, direct);
    assert!(
        everyone.contains("ops_only") && !through.contains("ops_only"),
        "{through:?}"
    );
    // A GET whose form body names a match[]: Prometheus (Go's ParseForm) never reads a GET body, so
    // such a match[] must not stand in for the token's selector.
    let r = http_client()
        .get(format!("{}/api/v1/labels", s.gate.url))
        .query(&range)
        .bearer_auth(&s.dev)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"match[]={__name__=~".+"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(
        strings(&v["data"]),
        direct,
        "a GET body widened the answer: {v}"
    );

    // Label values, with and without match[].
    let jobs = strings(&data(
        &s.gate.url,
        "/api/v1/label/job/values",
        &range,
        Some(&s.dev),
    ));
    assert_eq!(jobs, BTreeSet::from(["api".to_string(), "web".to_string()]));
    let names = strings(&data(
        &s.gate.url,
        "/api/v1/label/__name__/values",
        &range,
        Some(&s.dev),
    ));
    assert!(
        names.contains("req_total") && !names.contains("ops_secret_total"),
        "{names:?}"
    );
    let api_jobs = strings(&data(
        &s.gate.url,
        "/api/v1/label/instance/values",
        &[("match[]", r#"req_total{job="api"}"#), range[0], range[1]],
        Some(&s.dev),
    ));
    assert_eq!(api_jobs, BTreeSet::from(["a".to_string()]));

    // Series, GET and POST.
    let all = [
        (
            "match[]",
            r#"{__name__=~"req_total|ops_secret_total|lat_bucket"}"#,
        ),
        range[0],
        range[1],
    ];
    let through = data(&s.gate.url, "/api/v1/series", &all, Some(&s.dev));
    let direct = data(
        &s.prom.url,
        "/api/v1/series",
        &[
            (
                "match[]",
                r#"{__name__=~"req_total|ops_secret_total|lat_bucket",team="dev"}"#,
            ),
            range[0],
            range[1],
        ],
        None,
    );
    assert_eq!(through, direct);
    assert_eq!(teams(&through), BTreeSet::from(["dev".to_string()]));
    let posted: Value = http_client()
        .post(format!("{}/api/v1/series", s.gate.url))
        .bearer_auth(&s.dev)
        .form(&all)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(posted["data"], direct);

    // Federation: with a selector and without one (Prometheus alone refuses that; the token's is used).
    for args in [vec![("match[]", r#"{job="api"}"#)], vec![]] {
        let r = http_client()
            .get(format!("{}/federate", s.gate.url))
            .query(&args)
            .bearer_auth(&s.dev)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = body_text(r);
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        assert!(!samples.is_empty(), "{args:?}: {text}");
        for line in samples {
            assert!(line.contains(r#"team="dev""#), "{args:?}: {line}");
        }
    }

    // Exemplars: dev's only, though ops' are stored too.
    let exemplars = |url: &str, query: &str, token: Option<&str>| {
        data(
            url,
            "/api/v1/query_exemplars",
            &[("query", query), range[0], range[1]],
            token,
        )
    };
    let everyone = exemplars(&s.prom.url, "req_total", None);
    assert_eq!(everyone.as_array().unwrap().len(), 2, "{everyone}");
    let through = exemplars(&s.gate.url, "req_total", Some(&s.dev));
    let list = through.as_array().unwrap();
    assert_eq!(list.len(), 1, "{through}");
    assert_eq!(list[0]["seriesLabels"]["team"], "dev");
    assert_eq!(list[0]["exemplars"][0]["labels"]["trace_id"], "dev-trace");
}

#[test]
fn rules_and_alerts_are_filtered_to_the_tokens_team() {
    let s = Scene::start();
    // Rules evaluate every second; wait until Prometheus itself lists every alert.
    eventually(Duration::from_secs(30), "alerts to fire", || {
        let alerts = data(&s.prom.url, "/api/v1/alerts", &[], None);
        let names: BTreeSet<String> = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["labels"]["alertname"].as_str().unwrap().to_string())
            .collect();
        names.len() == 3
    });
    let rules = data(
        &s.gate.url,
        "/api/v1/rules",
        &[("exclude_alerts", "true")],
        Some(&s.dev),
    );
    let group = &rules["groups"][0];
    let names: BTreeSet<String> = group["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["dev:req:sum", "DevBusy", "AnyBusy"].map(String::from)),
        "{rules}"
    );
    for rule in group["rules"].as_array().unwrap() {
        for alert in rule["alerts"].as_array().into_iter().flatten() {
            assert_eq!(alert["labels"]["team"], "dev", "{rule}");
        }
    }
    let alerts = data(&s.gate.url, "/api/v1/alerts", &[], Some(&s.dev));
    let list = alerts["alerts"].as_array().unwrap();
    let everyone = data(&s.prom.url, "/api/v1/alerts", &[], None);
    assert!(everyone["alerts"].as_array().unwrap().len() > list.len());
    // DevBusy and AnyBusy, for dev's two series each.
    assert_eq!(list.len(), 4, "{alerts}");
    for alert in list {
        assert_eq!(alert["labels"]["team"], "dev", "{alert}");
    }
    assert!(
        s.gate
            .metric("tenantgate_rules_filtered_total{kind=\"rules\"}")
            >= 1.0
    );
}

#[test]
fn remote_writes_land_with_the_tokens_labels_and_bad_bodies_reach_nothing() {
    let s = Scene::start();
    let write_url = format!("{}/api/v1/write", s.gate.url);
    let ts = (now() as i64 - 10) * 1000;
    // The sender says team=ops, or nothing: the dev token's label wins.
    let body = rw_body(vec![
        series(
            &[
                ("__name__", "written_total"),
                ("team", "ops"),
                ("job", "w1"),
            ],
            vec![(1.0, ts)],
            vec![Exemplar {
                labels: labels(&[("trace_id", "w1")]),
                value: 1.0,
                timestamp: ts,
            }],
        ),
        series(
            &[("__name__", "written_total"), ("job", "w2")],
            vec![(2.0, ts)],
            vec![],
        ),
    ]);
    let (status, text) = remote_write(&write_url, Some(&s.dev), body, RW);
    assert_eq!(status, 204, "{text}");
    let ops = s.signer.token(OPS);
    let body = rw_body(vec![series(
        &[
            ("__name__", "written_total"),
            ("team", "dev"),
            ("job", "w3"),
        ],
        vec![(3.0, ts)],
        vec![],
    )]);
    let (status, text) = remote_write(&format!("{}/api/v1/push", s.gate.url), Some(&ops), body, RW);
    assert_eq!(status, 204, "{text}");

    // Bodies that do not decode, remote write 2.0 and other formats: refused, and nothing written.
    let junk = snap::raw::Encoder::new()
        .compress_vec(b"\x0a\xff\xff\xff\xff\x0f")
        .unwrap();
    let (status, text) = remote_write(&write_url, Some(&s.dev), junk, RW);
    assert_eq!(status, 400, "{text}");
    let (status, _) = remote_write(&write_url, Some(&s.dev), b"not snappy".to_vec(), RW);
    assert_eq!(status, 400);
    let v2 = rw_body(vec![series(
        &[("__name__", "v2_total")],
        vec![(1.0, ts)],
        vec![],
    )]);
    let (status, text) = remote_write(
        &write_url,
        Some(&s.dev),
        v2,
        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
    );
    assert_eq!(status, 415, "{text}");
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", s.gate.url))
        .bearer_auth(&s.dev)
        .body("imported_total 1\n")
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    let t = (now() as i64).to_string();
    let held = data(
        &s.prom.url,
        "/api/v1/query",
        &[("query", "written_total"), ("time", &t)],
        None,
    );
    let got: BTreeSet<(String, String)> = held["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["job"].as_str().unwrap().to_string(),
                r["metric"]["team"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        BTreeSet::from(
            [("w1", "dev"), ("w2", "dev"), ("w3", "ops")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        )
    );
    let stray = data(
        &s.prom.url,
        "/api/v1/query",
        &[
            ("query", r#"{__name__=~"v2_total|imported_total"}"#),
            ("time", &t),
        ],
        None,
    );
    assert_eq!(stray["result"], serde_json::json!([]));
    let exemplars = data(
        &s.prom.url,
        "/api/v1/query_exemplars",
        &[
            ("query", "written_total"),
            ("start", &(now() - 120).to_string()),
            ("end", &t),
        ],
        None,
    );
    assert_eq!(exemplars[0]["seriesLabels"]["team"], "dev", "{exemplars}");
    assert_eq!(
        s.gate
            .metric("tenantgate_remote_write_relabel_total{outcome=\"rewritten\"}"),
        2.0
    );
    assert_eq!(
        s.gate
            .metric("tenantgate_remote_write_relabel_total{outcome=\"bad_body\"}"),
        2.0
    );
}

#[test]
fn a_real_prometheus_sender_writes_through_the_gateway_under_the_tokens_label() {
    let s = Scene::start();
    let token_file = s.gate.dir.path().join("sender.token");
    fs::write(&token_file, &s.dev).unwrap();
    let port = Prometheus::reserve_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sender\n    static_configs: [{{targets: ['127.0.0.1:{port}'], labels: {{team: ops}}}}]\nremote_write:\n  - url: {}/api/v1/write\n    authorization:\n      credentials_file: {}\n    queue_config: {{batch_send_deadline: 1s, max_backoff: 5s}}\n",
        s.gate.url,
        token_file.display()
    );
    let _sender = Prometheus::start(&config, port);
    let t = || now().to_string();
    eventually(
        Duration::from_secs(30),
        "the sender's series in the backend",
        || {
            let v = data(
                &s.prom.url,
                "/api/v1/query",
                &[("query", r#"up{job="sender"}"#), ("time", &t())],
                None,
            );
            !v["result"].as_array().unwrap().is_empty()
        },
    );
    let by_team = data(
        &s.prom.url,
        "/api/v1/query",
        &[
            ("query", r#"count by (team) ({job="sender"})"#),
            ("time", &t()),
        ],
        None,
    );
    assert_eq!(
        teams(&by_team),
        BTreeSet::from(["dev".to_string()]),
        "{by_team}"
    );
}

#[test]
fn tenant_headers_carry_the_tokens_tenant_and_client_copies_never_pass() {
    let dir = tempdir();
    let port = free_port();
    let log = dir.path().join("headers.log");
    let servers = format!(
        "log_format headers '$request_method $uri scope=\"$http_x_scope_orgid\" thanos=\"$http_thanos_tenant\"';\n\
         server {{\n  listen 127.0.0.1:{port};\n  access_log {} headers;\n\
           location = /api/v1/push {{ return 204; }}\n\
           location / {{ default_type application/json; return 200 '{{\"status\":\"success\",\"data\":{{\"resultType\":\"vector\",\"result\":[]}}}}'; }}\n}}\n",
        log.display()
    );
    let _nginx = nginx(dir.path(), &servers);
    let backend = format!("http://127.0.0.1:{port}");
    wait_http(
        &format!("{backend}/ready"),
        200,
        &_nginx,
        Duration::from_secs(10),
    );
    let signer = Signer::rsa();
    let args = |format: &str, header: &str| {
        vec![
            "-read.backendType=prometheus".to_string(),
            "-write.backendType=prometheus".to_string(),
            format!("-read.url={backend}/prometheus"),
            format!("-write.url={backend}/api/v1/push"),
            format!("-backend.tenantHeader={header}"),
            format!("-backend.tenantHeaderFormat={format}"),
        ]
    };
    let mimir = Gate::start_secured(&signer, &args("account", "X-Scope-OrgID"));
    let thanos = Gate::start_secured(&signer, &args("account:project", "THANOS-TENANT"));
    let tenant = |account: u32, project: u32| {
        signer.token(&format!(
            r#"{{"tenant_id":{{"account_id":{account},"project_id":{project}}},"extra_labels":{{"team":"dev"}}}}"#
        ))
    };
    let send = |gate: &Gate, token: &str, write: bool| -> u16 {
        let request = if write {
            http_client()
                .post(format!("{}/api/v1/write", gate.url))
                .header("Content-Encoding", "snappy")
                .header("Content-Type", RW)
                .body(rw_body(vec![series(
                    &[("__name__", "x")],
                    vec![(1.0, 1_000)],
                    vec![],
                )]))
        } else {
            http_client()
                .get(format!("{}/api/v1/query", gate.url))
                .query(&[("query", "up")])
        };
        request
            .bearer_auth(token)
            .header("X-Scope-OrgID", "7")
            .header("x-scope-orgid", "9|anyone")
            .header("THANOS-TENANT", "7")
            .header("Thanos-Tenant", "9")
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(send(&mimir, &tenant(42, 0), false), 200);
    assert_eq!(send(&mimir, &tenant(42, 0), true), 204);
    // `account` cannot spell 42:3 without mixing it with 42:0: refused before anything is sent.
    assert_eq!(send(&mimir, &tenant(42, 3), false), 403);
    assert_eq!(send(&thanos, &tenant(42, 3), false), 200);
    assert_eq!(send(&thanos, &tenant(42, 3), true), 204);
    drop(mimir);
    drop(thanos);
    let lines: Vec<String> = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("/ready"))
        .map(String::from)
        .collect();
    assert_eq!(
        lines,
        [
            r#"GET /prometheus/api/v1/query scope="42" thanos="-""#,
            r#"POST /api/v1/push scope="42" thanos="-""#,
            r#"GET /prometheus/api/v1/query scope="-" thanos="42:3""#,
            r#"POST /api/v1/push scope="-" thanos="42:3""#,
        ]
    );
}
