//! Rate limiting with real parts only: three tenantgate replicas sharing one limits file, real
//! VictoriaMetrics as backend and a second one as the datasource the replicas push their usage to and
//! read it back from.
//!
//! - a `queries` limit holds within 15 % in every sliding minute while a tenant sends 3x its limit over
//!   the replicas, and a tenant under its limit never sees a 429; with sharing off it is about 3x;
//! - with the datasource stopped the replicas fall back to their share within three refresh intervals
//!   and under-limit tenants are still served;
//! - a real vmagent over a `rows_inserted` limit gets 429s and afterwards every scraped sample is in
//!   VictoriaMetrics exactly once, none dropped; real Prometheus with `-ratelimit.writeStatusCode=503`
//!   fails no sample;
//! - cluster mode judged on VictoriaMetrics' own `vm_tenant_*` counters (imported into the datasource as
//!   real counters would be), vmgateway's documented file loaded verbatim, reload by SIGHUP, a broken
//!   reload keeping the limits, bad files refused with exit code 2.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A limit of `LIMIT` reads a minute for tenant 1:5 and for 2:0.
const LIMIT: usize = 240;
const LIMITS: &str = "limits:
  - type: queries
    value: 240
    resolution: minute
    account_id: 1
    project_id: 5
  - type: queries
    value: 240
    account_id: 2
";

const HEAVY: &str = r#"{"tenant_id":{"account_id":1,"project_id":5}}"#;
const LIGHT: &str = r#"{"tenant_id":{"account_id":2,"project_id":0}}"#;

/// Three replicas in front of `backend`, sharing usage through `datasource` (unless `share` is off).
fn replicas(
    signer: &Signer,
    backend: &Victoria,
    datasource: &Victoria,
    limits: &Path,
    share: bool,
) -> Vec<Gate> {
    (0..3)
        .map(|i| {
            Gate::start_secured(
                signer,
                &[
                    format!("-read.url={}", backend.url),
                    format!("-write.url={}", backend.url),
                    "-enable.rateLimit".into(),
                    format!("-ratelimit.config={}", limits.display()),
                    format!("-ratelimit.shareUsage={share}"),
                    format!("-ratelimit.instance=gw{i}"),
                    "-ratelimit.refreshInterval=1s".into(),
                    format!("-datasource.url={}", datasource.url),
                    format!(
                        "-pushmetrics.url={}/api/v1/import/prometheus",
                        datasource.url
                    ),
                    "-pushmetrics.interval=1s".into(),
                ],
            )
        })
        .collect()
}

/// Sends `per_second` reads for `seconds`, spread over `gates`, and returns when each admitted one
/// was admitted (seconds since start) and how many got 429.
fn load(gates: &[String], token: &str, per_second: f64, seconds: f64) -> (Vec<f64>, usize) {
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(0usize));
    let started = Instant::now();
    let threads: Vec<_> = gates
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let (url, token) = (format!("{url}/api/v1/query?query=1"), token.to_string());
            let (admitted, refused) = (admitted.clone(), refused.clone());
            let every = Duration::from_secs_f64(gates.len() as f64 / per_second);
            std::thread::spawn(move || {
                let client = http_client();
                // Replicas start their sends at different moments within a period.
                std::thread::sleep(every.mul_f64(i as f64 / 3.0));
                let mut next = Instant::now();
                while started.elapsed().as_secs_f64() < seconds {
                    let r = client.get(&url).bearer_auth(&token).send().unwrap();
                    match r.status().as_u16() {
                        200 => admitted
                            .lock()
                            .unwrap()
                            .push(started.elapsed().as_secs_f64()),
                        429 => {
                            assert!(r.headers().contains_key("retry-after"));
                            *refused.lock().unwrap() += 1;
                        }
                        other => panic!("status {other}: {}", body_text(r)),
                    }
                    next += every;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut times = admitted.lock().unwrap().clone();
    times.sort_by(f64::total_cmp);
    let refused = *refused.lock().unwrap();
    (times, refused)
}

/// The most and the fewest admitted in any minute-long window starting in `[from, to]` seconds.
fn window_extremes(times: &[f64], from: f64, to: f64) -> (usize, usize) {
    let mut max = 0;
    let mut min = usize::MAX;
    let mut start = from;
    while start <= to {
        let n = times
            .iter()
            .filter(|t| **t >= start && **t < start + 60.0)
            .count();
        max = max.max(n);
        min = min.min(n);
        start += 0.5;
    }
    (max, min)
}

/// Waits until every replica reads the others' usage.
fn all_global(gates: &[Gate]) {
    eventually(
        Duration::from_secs(30),
        "all replicas in global mode, seeing 3",
        || {
            gates.iter().all(|g| {
                g.metric(r#"tenantgate_ratelimit_mode{mode="global"}"#) == 1.0
                    && g.metric("tenantgate_ratelimit_replicas") == 3.0
            })
        },
    );
}

fn limits_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("limits.yml");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_shared_queries_limit_holds_over_three_replicas_and_spares_other_tenants() {
    let (backend, datasource) = (Victoria::start(), Victoria::start());
    let dir = tempdir();
    let limits = limits_file(dir.path(), LIMITS);
    let signer = Signer::rsa();
    let gates = replicas(&signer, &backend, &datasource, &limits, true);
    all_global(&gates);
    let urls: Vec<String> = gates.iter().map(|g| g.url.clone()).collect();
    let (heavy, light) = (signer.token(HEAVY), signer.token(LIGHT));
    let light_load = {
        let urls = urls.clone();
        std::thread::spawn(move || load(&urls, &light, LIMIT as f64 / 2.0 / 60.0, 80.0))
    };
    let (times, refused) = load(&urls, &heavy, 3.0 * LIMIT as f64 / 60.0, 80.0);
    let (max, min) = window_extremes(&times, 0.0, 20.0);
    assert!(refused > LIMIT, "3x the limit was sent, {refused} refused");
    assert!(
        max as f64 <= LIMIT as f64 * 1.15,
        "{max} admitted in a minute, limit {LIMIT}"
    );
    assert!(
        min as f64 >= LIMIT as f64 * 0.85,
        "only {min} admitted in a minute, limit {LIMIT}"
    );
    let (light_times, light_refused) = light_load.join().unwrap();
    assert_eq!(
        light_refused, 0,
        "a tenant under its limit is never refused"
    );
    assert!(light_times.len() > 100);
    for gate in &gates {
        assert_eq!(
            gate.metric(r#"tenantgate_ratelimit_mode{mode="global"}"#),
            1.0
        );
        assert_eq!(gate.metric("tenantgate_ratelimit_replicas"), 3.0);
        assert!(
            gate.metric(
                r#"tenantgate_ratelimit_rejections_total{type="queries",resolution="minute"}"#
            ) > 0.0
        );
        assert!(gate.metric(r#"tenantgate_ratelimit_refresh_duration_seconds_count"#) > 10.0);
        assert!(gate.metric(r#"vmgateway_ratelimit_refresh_duration_seconds_count"#) > 10.0);
    }
    eprintln!("shared: {} admitted, {refused} refused, busiest minute {max}, quietest {min} (limit {LIMIT})", times.len());
}

#[test]
fn without_sharing_three_replicas_let_about_three_times_through() {
    let (backend, datasource) = (Victoria::start(), Victoria::start());
    let dir = tempdir();
    let limits = limits_file(dir.path(), LIMITS);
    let signer = Signer::rsa();
    let gates = replicas(&signer, &backend, &datasource, &limits, false);
    let urls: Vec<String> = gates.iter().map(|g| g.url.clone()).collect();
    let (times, _) = load(&urls, &signer.token(HEAVY), 3.0 * LIMIT as f64 / 60.0, 62.0);
    let (max, _) = window_extremes(&times, 0.0, 2.0);
    assert!(
        max as f64 >= LIMIT as f64 * 2.6,
        "{max}: each replica enforces the whole limit alone"
    );
    assert_eq!(
        gates[0].metric(r#"tenantgate_ratelimit_mode{mode="alone"}"#),
        1.0
    );
    eprintln!("not shared: busiest minute {max} (limit {LIMIT})");
}

#[test]
fn with_the_datasource_down_each_replica_enforces_its_share() {
    let (backend, mut datasource) = (Victoria::start(), Victoria::start());
    let dir = tempdir();
    let limits = limits_file(dir.path(), LIMITS);
    let signer = Signer::rsa();
    let gates = replicas(&signer, &backend, &datasource, &limits, true);
    all_global(&gates);
    // The datasource goes away for the rest of the run (and comes back on the same port after).
    let stopped = Instant::now();
    let outage = std::thread::spawn(move || {
        datasource.restart(Duration::from_secs(75));
        datasource
    });
    eventually(
        Duration::from_secs(10),
        "all replicas in local mode",
        || {
            gates
                .iter()
                .all(|g| g.metric(r#"tenantgate_ratelimit_mode{mode="local"}"#) == 1.0)
        },
    );
    let took = stopped.elapsed();
    assert!(
        took <= Duration::from_millis(4500),
        "fell back after {took:?}"
    );
    let health = body_text(
        http_client()
            .get(format!("{}/health", gates[0].url))
            .send()
            .unwrap(),
    );
    assert!(
        health.contains("local fallback, each replica enforces 1/3"),
        "{health}"
    );
    let urls: Vec<String> = gates.iter().map(|g| g.url.clone()).collect();
    let light = {
        let urls = urls.clone();
        let token = signer.token(LIGHT);
        std::thread::spawn(move || load(&urls, &token, LIMIT as f64 / 2.0 / 60.0, 62.0))
    };
    let (times, refused) = load(&urls, &signer.token(HEAVY), 3.0 * LIMIT as f64 / 60.0, 62.0);
    let (max, _) = window_extremes(&times, 0.0, 2.0);
    assert!(refused > 0);
    assert!(
        max as f64 <= LIMIT as f64 * 1.15,
        "{max}: each replica takes a third of {LIMIT}"
    );
    let (_, light_refused) = light.join().unwrap();
    assert_eq!(
        light_refused, 0,
        "a tenant under its share is never refused"
    );
    let _datasource = outage.join().unwrap();
    eventually(Duration::from_secs(20), "global mode again", || {
        gates
            .iter()
            .all(|g| g.metric(r#"tenantgate_ratelimit_mode{mode="global"}"#) == 1.0)
    });
}

/// 100 series in the Prometheus text format, served by real nginx.
fn target(dir: &Path) -> (Proc, String) {
    let body: String = (0..100)
        .map(|i| format!("target_metric{{i=\"{i}\"}} {i}\n"))
        .collect();
    fs::write(dir.join("metrics"), body).unwrap();
    let port = free_port();
    let d = dir.display();
    let proc = nginx(
        dir,
        &format!("server {{\n listen 127.0.0.1:{port};\n location = /metrics {{ default_type text/plain; alias {d}/metrics; }}\n}}\n"),
    );
    wait_http(
        &format!("http://127.0.0.1:{port}/metrics"),
        200,
        &proc,
        Duration::from_secs(20),
    );
    (proc, format!("127.0.0.1:{port}"))
}

/// Real nginx spreading requests over `gates`, as a load balancer does.
fn balancer(dir: &Path, gates: &[Gate]) -> (Proc, String) {
    let port = free_port();
    let servers: String = gates
        .iter()
        .map(|g| format!("  server {};\n", g.url.trim_start_matches("http://")))
        .collect();
    let proc = nginx(
        dir,
        &format!("upstream gates {{\n{servers}}}\nserver {{\n listen 127.0.0.1:{port};\n client_max_body_size 0;\n location / {{ proxy_pass http://gates; proxy_http_version 1.1; }}\n}}\n"),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_http(
        &format!("{url}/health"),
        200,
        &proc,
        Duration::from_secs(20),
    );
    (proc, url)
}

#[test]
fn vmagent_over_a_rows_limit_gets_429s_and_loses_no_sample() {
    let (backend, datasource) = (Victoria::start(), Victoria::start());
    let dir = tempdir();
    let limits = limits_file(
        dir.path(),
        "limits:\n  - type: rows_inserted\n    value: 3000\n    account_id: 3\n",
    );
    let signer = Signer::rsa();
    let gates = replicas(&signer, &backend, &datasource, &limits, true);
    let lb_dir = tempdir();
    let (_lb, lb) = balancer(lb_dir.path(), &gates);
    let target_dir = tempdir();
    let (mut target_proc, target_addr) = target(target_dir.path());
    let token = signer
        .token(r#"{"tenant_id":{"account_id":3,"project_id":0},"extra_labels":{"team":"agents"}}"#);
    let agent = Vmagent::scraping(&[target_addr], &format!("{lb}/api/v1/write"), &token);
    // About 110 rows a second: over the limit of 3,000 a minute after about 27 s.
    std::thread::sleep(Duration::from_secs(40));
    assert_eq!(target_proc.stop(Duration::from_secs(10)), Some(0));
    let refusals: f64 = gates
        .iter()
        .map(|g| g.metric(r#"tenantgate_ratelimit_rejections_total{type="rows_inserted",resolution="minute"}"#))
        .sum();
    assert!(refusals > 0.0, "the limit was reached");
    let drained = Instant::now();
    while agent.metric_sum("vmagent_remotewrite_pending_data_bytes") > 0.0 {
        let vmagent: Vec<String> = metrics_text(&agent.url)
            .lines()
            .filter(|l| {
                l.contains("remotewrite_requests_total")
                    || l.contains("pending_data")
                    || l.contains("retries")
            })
            .map(String::from)
            .collect();
        let usage: Vec<String> = gates
            .iter()
            .flat_map(|g| {
                metrics_text(&g.url)
                    .lines()
                    .filter(|l| {
                        l.contains("tenant_inserted")
                            || l.contains("ratelimit_usage")
                            || l.contains("rejections_total{type=\"rows")
                    })
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            drained.elapsed() < Duration::from_secs(150),
            "vmagent's queue did not drain:\n{}\n{}",
            vmagent.join("\n"),
            usage.join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = metrics_text(&agent.url);
    assert!(
        text.lines()
            .any(|l| l.starts_with("vmagent_remotewrite_requests_total{")
                && l.contains("status_code=\"429\"")),
        "vmagent saw 429s:\n{}",
        text.lines()
            .filter(|l| l.contains("remotewrite_requests"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // ... and nothing but 2xx and 429: no 502 (a refusal that broke nginx's connection to the
    // gateway) and no connection error of vmagent's own (issue 18).
    let other: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("vmagent_remotewrite_requests_total{"))
        .filter(|l| !l.contains("status_code=\"2") && !l.contains("status_code=\"429\""))
        .collect();
    assert!(
        other.is_empty(),
        "statuses other than 2xx and 429: {other:?}"
    );
    assert_eq!(agent.metric_sum("vmagent_remotewrite_errors_total"), 0.0);
    assert_eq!(
        agent.metric_sum("vmagent_remotewrite_packets_dropped_total"),
        0.0
    );
    // Every scrape of the target is there, once, for every series.
    let up: Vec<i64> = backend
        .samples(r#"up{job="targets"}"#)
        .into_iter()
        .flat_map(|(_, ts)| ts)
        .collect();
    let scraped = backend.samples("target_metric");
    assert_eq!(scraped.len(), 100, "every series arrived");
    let up_values = body_text(
        http_client()
            .get(format!("{}/api/v1/export", backend.url))
            .query(&[("match[]", r#"up{job="targets"}"#)])
            .send()
            .unwrap(),
    );
    let v: serde_json::Value = serde_json::from_str(up_values.lines().next().unwrap()).unwrap();
    let successful: Vec<i64> = v["timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .zip(v["values"].as_array().unwrap())
        .filter(|(_, value)| value.as_f64() == Some(1.0))
        .map(|(t, _)| t.as_i64().unwrap())
        .collect();
    assert!(
        successful.len() >= 30,
        "{} successful scrapes",
        successful.len()
    );
    assert!(
        up.len() > successful.len(),
        "scrapes after the target stopped were written too"
    );
    for (metric, mut ts) in scraped {
        assert_eq!(metric["team"], "agents");
        ts.sort();
        let mut unique = ts.clone();
        unique.dedup();
        assert_eq!(unique.len(), ts.len(), "{metric}: a sample stored twice");
        // Every successful scrape is there (the scrape cut by stopping the target may add one more).
        let missing: Vec<&i64> = successful
            .iter()
            .filter(|t| ts.binary_search(t).is_err())
            .collect();
        assert!(missing.is_empty(), "{metric}: scrapes at {missing:?} lost");
    }
}

#[test]
fn prometheus_answered_503_on_writes_fails_no_sample() {
    let (backend, datasource) = (Victoria::start(), Victoria::start());
    let dir = tempdir();
    let limits = limits_file(
        dir.path(),
        "limits:\n  - type: rows_inserted\n    value: 1000\n    account_id: 4\n",
    );
    let signer = Signer::rsa();
    let gate = Gate::start_secured(
        &signer,
        &[
            format!("-write.url={}", backend.url),
            "-enable.rateLimit".into(),
            format!("-ratelimit.config={}", limits.display()),
            "-ratelimit.shareUsage=false".into(),
            "-ratelimit.writeStatusCode=503".into(),
            format!("-datasource.url={}", datasource.url),
        ],
    );
    let target_dir = tempdir();
    let (mut target_proc, target_addr) = target(target_dir.path());
    let token_file = dir.path().join("token");
    fs::write(
        &token_file,
        signer.token(r#"{"tenant_id":{"account_id":4,"project_id":0}}"#),
    )
    .unwrap();
    let port = Prometheus::reserve_port();
    let prometheus = Prometheus::start(
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: targets\n    static_configs: [{{targets: ['{target_addr}']}}]\nremote_write:\n  - url: {}/api/v1/write\n    authorization:\n      credentials_file: {}\n    queue_config: {{batch_send_deadline: 1s, max_backoff: 5s, min_shards: 1, max_shards: 1}}\n",
            gate.url,
            token_file.display()
        ),
        port,
    );
    std::thread::sleep(Duration::from_secs(25));
    assert_eq!(target_proc.stop(Duration::from_secs(10)), Some(0));
    let prom = |name: &str| -> f64 {
        let text = metrics_text(&prometheus.url);
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        gate.metric(r#"tenantgate_requests_total{route="write",code="503"}"#) > 0.0,
        "the limit answered 503: {}\n{}",
        metrics_text(&gate.url)
            .lines()
            .filter(|l| l.contains("ratelimit")
                || l.contains("route=\"write\"")
                || l.contains("tenant_"))
            .collect::<Vec<_>>()
            .join("\n"),
        gate.proc.log_text()
    );
    eventually(
        Duration::from_secs(120),
        "Prometheus to deliver its backlog",
        || prom("prometheus_remote_storage_samples_pending") == 0.0,
    );
    assert_eq!(
        prom("prometheus_remote_storage_samples_failed_total"),
        0.0,
        "{}\n{}",
        metrics_text(&gate.url)
            .lines()
            .filter(|l| l.starts_with("tenantgate_requests_total"))
            .collect::<Vec<_>>()
            .join("\n"),
        prometheus.proc.log_text()
    );
    assert!(prom("prometheus_remote_storage_samples_retried_total") > 0.0);
    // Every retry was for a 503 the gateway sent, none for a connection it broke (issue 18).
    let log = prometheus.proc.log_text();
    for broken in ["broken pipe", "connection reset", "EOF"] {
        assert!(!log.contains(broken), "Prometheus saw '{broken}':\n{log}");
    }
    let stored = backend.samples("target_metric");
    assert_eq!(stored.len(), 100);
}

/// Imports counter samples into `vm`: `(series, [(seconds ago, value)])`.
fn import_counters(vm: &Victoria, series: &[(&str, &[(u64, f64)])]) {
    let now_ms = now() * 1000;
    let body: String = series
        .iter()
        .flat_map(|(s, points)| {
            points
                .iter()
                .map(move |(ago, v)| format!("{s} {v} {}\n", now_ms - ago * 1000))
        })
        .collect();
    vm.import_text(body);
    vm.flush();
}

#[test]
fn cluster_mode_judges_on_victoriametrics_own_counters_and_reloads() {
    let cluster = Cluster::start(&["1:5", "1:6"]);
    let datasource = Victoria::start();
    // vmselect's and vminsert's per-tenant counters, as vmagent would have scraped them: 1:5 made 15
    // requests and wrote 800 rows in the last minute, 1:6 almost nothing.
    import_counters(
        &datasource,
        &[
            // Large starting values: VictoriaMetrics' increase() takes a small first value of a new
            // series as growth from 0.
            (
                r#"vm_tenant_select_requests_total{accountID="1",projectID="5",job="vmselect"}"#,
                &[(50, 10_000.0), (5, 10_015.0)],
            ),
            (
                r#"vm_tenant_select_requests_total{accountID="1",projectID="6",job="vmselect"}"#,
                &[(50, 10_000.0), (5, 10_001.0)],
            ),
            (
                r#"vm_tenant_inserted_rows_total{accountID="1",projectID="5",type="promremotewrite",job="vminsert"}"#,
                &[(50, 0.0), (5, 800.0)],
            ),
        ],
    );
    let dir = tempdir();
    // vmgateway's documented example, verbatim.
    let documented = "limits:
  - type: queries
    value: 1000
    resolution: minute
  - type: queries
    value: 10000
    resolution: hour
  - type: queries
    value: 10
    resolution: minute
    project_id: 5
    account_id: 1
";
    let limits = limits_file(
        dir.path(),
        &format!("{documented}  - type: rows_inserted\n    value: 500\n    account_id: 1\n"),
    );
    let signer = Signer::rsa();
    let gate = Gate::start_secured(
        &signer,
        &[
            "-clusterMode".into(),
            format!("-read.url={}", cluster.select_url),
            format!("-write.url={}", cluster.insert_url),
            "-enable.rateLimit".into(),
            format!("-ratelimit.config={}", limits.display()),
            "-ratelimit.refreshInterval=1s".into(),
            format!("-datasource.url={}", datasource.url),
        ],
    );
    let t15 = signer.token(r#"{"tenant_id":{"account_id":1,"project_id":5}}"#);
    let t16 = signer.token(r#"{"tenant_id":{"account_id":1,"project_id":6}}"#);
    let read = |token: &str| {
        let r = http_client()
            .get(format!("{}/api/v1/query?query=1", gate.url))
            .bearer_auth(token)
            .send()
            .unwrap();
        (r.status().as_u16(), body_text(r))
    };
    eventually(Duration::from_secs(20), "the usage read", || {
        read(&t15).0 == 429
    });
    let (_, text) = read(&t15);
    assert!(
        text.contains(r#"request was rate limited by: \"queries limit reached\""#),
        "{text}"
    );
    assert!(text.contains("tenant 1:5"), "{text}");
    assert_eq!(read(&t16).0, 200, "1:6 is under the default 1000");
    // Writes of 1:5 are over 500 rows a minute by vminsert's own count; nothing needs decoding.
    let write = |token: &str| {
        http_client()
            .post(format!("{}/api/v1/import/prometheus", gate.url))
            .bearer_auth(token)
            .body(import_lines(&[("cl_write", 1.0)]))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(write(&t15), 429);
    assert_eq!(
        write(&t16),
        204,
        "the account's limit is per tenant: 1:6 wrote nothing"
    );
    // What the stores hold: 1:6's row, and nothing of the refused 1:5 write.
    assert_eq!(cluster.tenants["1:6"].wait_series("cl_write", 1).len(), 1);
    let refused = &cluster.tenants["1:5"];
    refused.flush();
    assert!(
        refused.series("cl_write").is_empty(),
        "a refused write reached vminsert"
    );
    cluster.unknown.flush();
    assert!(cluster.unknown.series("cl_write").is_empty());
    // A reload raising 1:5's read limit, by SIGHUP.
    fs::write(&limits, documented.replace("value: 10\n", "value: 100\n")).unwrap();
    gate.proc.signal("HUP");
    eventually(Duration::from_secs(10), "the new limits", || {
        read(&t15).0 == 200
    });
    // A broken file keeps them.
    fs::write(&limits, "limits:\n  - type: querys\n    value: 1\n").unwrap();
    gate.proc.signal("HUP");
    eventually(Duration::from_secs(10), "the failed reload", || {
        gate.metric(r#"tenantgate_reloads_total{what="ratelimits",result="failure"}"#) >= 1.0
    });
    assert_eq!(read(&t15).0, 200);
    assert!(gate
        .proc
        .log_text()
        .contains("rate limits file line 2: unknown type \"querys\""));
}

#[test]
fn bad_limit_files_stop_start_up_with_exit_code_2_naming_the_line() {
    let dir = tempdir();
    for (text, says) in [
        (
            "limits:\n  - type: querys\n    value: 1\n",
            "line 2: unknown type \"querys\"",
        ),
        (
            "limits:\n  - type: queries\n    value: 1\n    resolution: day\n",
            "line 4: unknown resolution",
        ),
        ("limits:\n  - type: queries\n    value: many\n", "line 3"),
        (
            "limits:\n  - type: active_series\n    value: 10\n",
            "needs VictoriaMetrics cluster",
        ),
    ] {
        let path = limits_file(dir.path(), text);
        let out = Command::new(env!("CARGO_BIN_EXE_tenantgate"))
            .args([
                "-read.url=http://127.0.0.1:1",
                "-httpListenAddr=127.0.0.1:0",
                "-enable.rateLimit",
                "-datasource.url=http://127.0.0.1:1",
            ])
            .arg(format!("-ratelimit.config={}", path.display()))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{text}: {stderr}");
    }
}
