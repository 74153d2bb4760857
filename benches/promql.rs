//! Cost of query enforcement per call (prescan + parse + enforce + print), next to the parser alone, for a
//! short query and a long Grafana-style one (after Grafana substituted its variables), and of filtering a
//! rules answer, and the stages of relabelling a remote write for a Prometheus-family receiver (snappy
//! decode, label enforcement, snappy encode) on `bench/run`'s 10,000-series body. Run with
//! `cargo bench --bench promql`.

#[path = "../bench/write_body.rs"]
mod write_body;

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tenantgate::ingest::{
    decode,
    relabel::{enforce_labels_decoded, Enforced},
};
use tenantgate::promql::{enforce_query, enforce_selector, Enforcement};
use tenantgate::rules_filter::{filter_rules, Kind};

pub const SHORT: &str = r#"rate(http_requests_total{job="api"}[5m])"#;

/// A Grafana latency panel: `$__rate_interval`, `$cluster` and `$route` already substituted.
pub const LONG: &str = concat!(
    r#"sum by (le) (rate(http_request_duration_seconds_bucket{job="api-gateway",namespace="production","#,
    r#"cluster=~"eu-west-1|eu-central-1",route!~"/health|/metrics",status_code=~"2..|3.."}[2m0s])) "#,
    r#"/ on() group_left() sum(rate(http_request_duration_seconds_count{job="api-gateway","#,
    r#"namespace="production",cluster=~"eu-west-1|eu-central-1"}[2m0s]))"#
);

fn benches(c: &mut Criterion) {
    let labels = vec![("team".to_string(), "dev".to_string())];
    let team = Enforcement::new(&labels, &[]).unwrap();
    let with_filter = Enforcement::new(
        &labels,
        &[r#"{env=~"prod|staging",tier!="test"}"#.to_string()],
    )
    .unwrap();
    for (name, q) in [("short", SHORT), ("long", LONG)] {
        c.bench_function(&format!("parse only/{name}"), |b| {
            b.iter(|| promql_parser::parser::parse(black_box(q)))
        });
        c.bench_function(&format!("enforce_query/{name}"), |b| {
            b.iter(|| enforce_query(black_box(q), &team))
        });
        c.bench_function(&format!("enforce_query+filter/{name}"), |b| {
            b.iter(|| enforce_query(black_box(q), &with_filter))
        });
    }
    c.bench_function("enforce_selector", |b| {
        b.iter(|| enforce_selector(black_box(r#"{job="api"}"#), &team))
    });
    let rules = include_bytes!("../src/rules_filter/testdata/rules.json");
    c.bench_function("filter_rules/prometheus-2.42-sample", |b| {
        b.iter(|| filter_rules(black_box(rules), Kind::Rules, &team))
    });
    remote_write(c, &labels);
}

/// One 10,000-series body through each stage of `PrometheusBackends::remote_write`.
fn remote_write(c: &mut Criterion, labels: &[(String, String)]) {
    let body = write_body::remote_write_body(10_000, 1_700_000_000_000);
    let enforced = Enforced::new(labels).unwrap();
    let mut decoded = Vec::new();
    decode::snappy_block(&body, 64 << 20, &mut decoded).unwrap();
    let mut out = Vec::new();
    enforce_labels_decoded(&decoded, &enforced, &mut out).unwrap();
    let mut group = c.benchmark_group("remote_write_10k");
    group.sample_size(20);
    group.bench_function("snappy_decode", |b| {
        b.iter(|| decode::snappy_block(black_box(&body), 64 << 20, &mut decoded))
    });
    group.bench_function("enforce_labels", |b| {
        b.iter(|| {
            out.clear();
            enforce_labels_decoded(black_box(&decoded), &enforced, &mut out)
        })
    });
    group.bench_function("snappy_encode", |b| {
        b.iter(|| snap::raw::Encoder::new().compress_vec(black_box(&out)))
    });
    group.finish();
}

criterion_group!(promql_benches, benches);
criterion_main!(promql_benches);
