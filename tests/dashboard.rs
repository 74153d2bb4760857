//! The operators' Grafana dashboard (`deploy/grafana/dashboards/tenantgate.json`) and alerting rules
//! (`deploy/vmalert/tenantgate-rules.yml`) work on real data: tenantgate runs with every feature a panel
//! shows (keys from a file and from a real identity provider's JWKS, rate limits shared through a real
//! VictoriaMetrics, metric pushes, the audit log, concurrency limits, TLS and PROXY-protocol listeners),
//! gets traffic that makes every series move (good and refused reads and writes, a backend outage, a
//! broken and a fixed reload, ...), and a real vmagent scrapes its `/metrics` every second into a real
//! VictoriaMetrics 1.79.5. Then every panel's expression, with Grafana's variables filled in, parses there
//! and returns at least one series; every metric an expression or a rule names exists; the template
//! variables find the gateway; `vmalert -dryRun` accepts the rules; and a real vmalert evaluating them
//! against that store reports no error for any rule, raises the 5xx-ratio alert after the outage, the
//! reload alert while the broken file is in place (and drops it once fixed), the instance-down alert when
//! the gateway stops, and nothing else.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::idp::Idp;
use common::*;
use serde::Deserialize;

const DASHBOARD: &str = "deploy/grafana/dashboards/tenantgate.json";
const RULES: &str = "deploy/vmalert/tenantgate-rules.yml";
/// The scrape job, as in `deploy/vmagent/scrape.yml` and the rules.
const JOB: &str = "tenantgate";

/// A queries limit tenant 1:5 goes over at once, one account 2 stays under, and a rows limit for
/// everyone so that writes are counted per tenant.
const LIMITS: &str = "limits:
  - type: queries
    value: 5
    resolution: minute
    account_id: 1
    project_id: 5
  - type: queries
    value: 1000
    account_id: 2
  - type: rows_inserted
    value: 1000000
";

#[derive(Deserialize)]
struct RulesFile {
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: HashMap<String, String>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// One query of a panel: its title and expression as written in the dashboard.
struct PanelQuery {
    title: String,
    expr: String,
}

/// Every target of every panel, rows' nested panels included.
fn panel_queries(dashboard: &serde_json::Value) -> Vec<PanelQuery> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<PanelQuery>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_else(|| {
                    panic!("panel {title:?} has a target without expr: {target}")
                });
                out.push(PanelQuery {
                    title: title.clone(),
                    expr: expr.to_string(),
                });
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Fills in Grafana's variables as Grafana would for one selected job and instance and a 1m range step.
fn substitute(expr: &str, instance: &str) -> String {
    let filled = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("${job}", JOB)
        .replace("$job", JOB)
        .replace("${instance}", instance)
        .replace("$instance", instance);
    assert!(
        !filled.contains('$'),
        "unknown Grafana variable left in {expr}"
    );
    filled
}

/// The metric names an expression selects: identifiers outside label matchers, ranges and strings that
/// are not keywords, functions or aggregations, with the label lists of `by (...)` and friends skipped.
fn metric_names(expr: &str) -> Vec<String> {
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const OPERATORS: [&str; 5] = ["and", "or", "unless", "offset", "bool"];
    let chars: Vec<char> = expr.chars().collect();
    let skip_to = |mut i: usize, close: char| {
        let mut in_string = false;
        while i < chars.len() {
            match chars[i] {
                '\\' if in_string => i += 1,
                '"' => in_string = !in_string,
                c if c == close && !in_string => return i + 1,
                _ => {}
            }
            i += 1;
        }
        i
    };
    let next_char = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        (i, chars.get(i).copied())
    };
    let word_at = |i: usize| -> String {
        chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_' || **c == ':')
            .collect()
    };
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i = skip_to(i + 1, '"');
        } else if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers and durations (`0.99`, `1e6`, `offset 1h`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let word = word_at(i);
            i += word.len();
            let (after, next) = next_char(i);
            if LABEL_LISTS.contains(&word.as_str()) {
                if next == Some('(') {
                    i = skip_to(after + 1, ')');
                }
            } else if OPERATORS.contains(&word.as_str()) || next == Some('(') {
                // An operator, or a function call.
            } else if next.is_some_and(|n| n.is_ascii_alphabetic())
                && ["by", "without"].contains(&word_at(after).as_str())
            {
                // An aggregation: `sum by (...) (...)`.
            } else {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names.sort();
    names.dedup();
    names
}

/// An instant query at now, uncached.
fn query(store: &Victoria, expr: &str) -> serde_json::Value {
    http_client()
        .get(format!("{}/api/v1/query", store.url))
        .query(&[("query", expr), ("nocache", "1")])
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// Polls `expr` until it answers at least one series (bounded by `deadline`); panics at once if it
/// does not parse, with `what` in every message.
fn assert_has_series(store: &Victoria, expr: &str, what: &str, deadline: Instant) {
    loop {
        let answer = query(store, expr);
        assert_eq!(
            answer["status"], "success",
            "{what}: VictoriaMetrics 1.79.5 refuses {expr}: {answer}"
        );
        if answer["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {expr} returns no series: {answer}"
        );
        store.flush();
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// vmagent scraping `target` (host:port) every second as job `tenantgate`, writing to `store`.
fn vmagent(target: &str, store: &Victoria, dir: &Path) -> Proc {
    let port = free_port();
    let config = dir.join("scrape.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(deps().get("TG_VMAGENT"));
    cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-promscrape.config={}", config.display()))
        .arg(format!("-remoteWrite.url={}/api/v1/write", store.url))
        .arg(format!(
            "-remoteWrite.tmpDataPath={}",
            dir.join("vmagent-queue").display()
        ))
        .arg("-remoteWrite.flushInterval=200ms")
        .arg("-loggerLevel=WARN");
    Proc::spawn_serving(
        "vmagent",
        cmd,
        dir.join("vmagent.log"),
        &format!("http://127.0.0.1:{port}"),
    )
}

/// Names and states of the alerts vmalert holds (pending or firing).
fn active_alerts(vmalert_url: &str) -> Vec<(String, String)> {
    let answer: serde_json::Value = http_client()
        .get(format!("{vmalert_url}/api/v1/alerts"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    answer["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or_default().to_string(),
                a["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn alert_active(vmalert_url: &str, name: &str) -> bool {
    active_alerts(vmalert_url).iter().any(|(n, _)| n == name)
}

/// An unrestricted token that expired ten minutes ago.
fn expired_token(signer: &Signer) -> String {
    signer.sign_raw(
        &format!(r#"{{"alg":"{}","typ":"JWT"}}"#, signer.alg()),
        &format!(r#"{{"exp":{},"vm_access":{{}}}}"#, now() - 600),
    )
}

fn status_of(r: reqwest::blocking::Response) -> u16 {
    r.status().as_u16()
}

/// The tokens of the scene's requests.
struct Tokens {
    /// Tenant 0:0, unrestricted.
    good: String,
    /// Restricted to `team="dev"`.
    restricted: String,
    /// Tenant 1:5, over its queries limit at once.
    heavy: String,
    /// Tenant 2:0, under its queries limit.
    light: String,
    /// Malformed, expired, signed by a stranger.
    refused: Vec<String>,
}

/// One round of requests producing every status and counter the panels show: good reads (the same
/// token again and again: token-cache hits) and writes, an extra_label of a restricted token (stripped),
/// refused tokens, reads over a rate limit and under one, and last an unknown path, so a scrape that
/// shows the 404 has seen the whole round.
fn requests_round(gate: &Gate, t: &Tokens) {
    let client = http_client();
    let read = |token: &str, args: &[(&str, &str)]| {
        let r = client
            .get(format!("{}/api/v1/query", gate.url))
            .query(args)
            .bearer_auth(token)
            .send()
            .unwrap();
        status_of(r)
    };
    for _ in 0..5 {
        assert_eq!(read(&t.good, &[("query", "up")]), 200);
    }
    for i in 0..3 {
        let r = client
            .post(format!("{}/api/v1/import/prometheus", gate.url))
            .bearer_auth(&t.good)
            .body(format!("dashboard_test_rows{{i=\"{i}\"}} {i}\n"))
            .send()
            .unwrap();
        assert_eq!(status_of(r), 204);
    }
    let stripped = [("query", "up"), ("extra_label", "team=ops")];
    assert_eq!(read(&t.restricted, &stripped), 200);
    let r = client
        .get(format!("{}/api/v1/query?query=up", gate.url))
        .send()
        .unwrap();
    assert_eq!(status_of(r), 401);
    for token in &t.refused {
        assert_eq!(read(token, &[("query", "up")]), 401);
    }
    let heavy: Vec<u16> = (0..8).map(|_| read(&t.heavy, &[("query", "1")])).collect();
    assert!(heavy.contains(&429), "{heavy:?}");
    for _ in 0..3 {
        assert_eq!(read(&t.light, &[("query", "1")]), 200);
    }
    let r = client
        .get(format!("{}/no/such/path", gate.url))
        .bearer_auth(&t.good)
        .send()
        .unwrap();
    assert_eq!(status_of(r), 404);
}

/// The rules file's shape (one group, every rule with `for`, a severity and useful annotations) and
/// vmalert's own check of it (expressions and templates).
fn check_rules_file(rules: &RulesFile, path: &Path) {
    assert_eq!(rules.groups.len(), 1);
    assert_eq!(rules.groups[0].name, "tenantgate");
    for rule in &rules.groups[0].rules {
        let name = &rule.alert;
        assert!(rule.for_.is_some(), "{name} has no for:");
        let severity = rule.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description"] {
            assert!(
                rule.annotations.get(key).is_some_and(|t| t.len() > 20),
                "{name} lacks a useful {key}"
            );
        }
    }
    let dry = Command::new(deps().get("TG_VMALERT"))
        .arg("-dryRun")
        .arg(format!("-rule={}", path.display()))
        .output()
        .unwrap();
    assert!(
        dry.status.success(),
        "vmalert -dryRun refuses the rules:\n{}",
        String::from_utf8_lossy(&dry.stderr)
    );
}

/// The dashboard's shape: a data-source variable of type prometheus that every panel uses (so it
/// imports anywhere), unique panel ids, panels within Grafana's 24 columns.
fn check_dashboard_shape(dashboard: &serde_json::Value) {
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(variables.iter().any(|v| v["name"] == "datasource"
        && v["type"] == "datasource"
        && v["query"] == "prometheus"));
    let mut ids = Vec::new();
    let mut todo = vec![dashboard["panels"].as_array().unwrap().clone()];
    while let Some(panels) = todo.pop() {
        for p in panels {
            ids.push(p["id"].as_u64().unwrap());
            let g = &p["gridPos"];
            assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24);
            if p["type"] != "row" {
                assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            }
            if let Some(inner) = p["panels"].as_array() {
                todo.push(inner.clone());
            }
        }
    }
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "panel ids are unique");
}

/// A write of `token`'s tenant holds its one concurrent slot (headers sent, body not yet), so a second
/// request of that tenant is refused by -maxConcurrentRequestsPerTenant; then the write completes.
fn concurrency_refusal(gate: &Gate, token: &str) {
    let body = "dashboard_test_held 1\n";
    let mut held = TcpStream::connect(gate.url.trim_start_matches("http://")).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    held.write_all(
        format!(
            "POST /api/v1/import/prometheus HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    eventually(Duration::from_secs(10), "the held write in flight", || {
        gate.metric("tenantgate_requests_inflight") >= 1.0
    });
    let r = http_client()
        .get(format!("{}/api/v1/query?query=up", gate.url))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(status_of(r), 429);
    held.write_all(body.as_bytes()).unwrap();
    let mut answer = [0u8; 12];
    held.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 204");
}

/// Connections the gateway closes: plain text on the HTTPS listener, no PROXY header on the PROXY
/// listener, and request headers that never end.
fn closed_connections(gate: &Gate, tls_port: u16, pp_port: u16) {
    let health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    raw_request(&format!("http://127.0.0.1:{tls_port}"), health);
    raw_request(&format!("http://127.0.0.1:{pp_port}"), health);
    let mut slow = TcpStream::connect(gate.url.trim_start_matches("http://")).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    // Returns when -http.headerReadTimeout closes the connection.
    let _ = slow.read(&mut [0u8; 256]);
}

/// Stops `backend` for a moment while reads go on: they get 5xx answers (upstream connect errors)
/// until it is back. Returns how many.
fn backend_outage(gate: &Gate, backend: &mut Victoria, token: &str) -> usize {
    let prober = {
        let url = format!("{}/api/v1/query?query=1", gate.url);
        let token = token.to_string();
        std::thread::spawn(move || {
            let client = http_client();
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut failed = 0;
            loop {
                match client.get(&url).bearer_auth(&token).send() {
                    Ok(r) if r.status().is_server_error() => failed += 1,
                    Ok(r) if r.status() == 200 && failed > 0 => return failed,
                    _ => {}
                }
                assert!(Instant::now() < deadline, "{failed} 5xx, backend not back");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    backend.restart(Duration::from_millis(1500));
    prober.join().unwrap()
}

/// Every panel query, with the variables Grafana would fill in, answers at least one series in
/// `store`. Returns the metric names the queries use.
fn check_panels(store: &Victoria, dashboard: &serde_json::Value, instance: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let panels = panel_queries(dashboard);
    assert!(panels.len() >= 40, "{} panel queries", panels.len());
    let mut names = Vec::new();
    for PanelQuery { title, expr } in &panels {
        let filled = substitute(expr, instance);
        assert_has_series(store, &filled, &format!("panel {title:?}"), deadline);
        names.extend(metric_names(&filled));
    }
    names.sort();
    names.dedup();
    names
}

/// The template variables (`label_values(<selector>, <label>)`) offer this gateway's job and instance.
fn check_variables(store: &Victoria, dashboard: &serde_json::Value, instance: &str) {
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    for (label, want) in [("job", JOB), ("instance", instance)] {
        let variable = variables.iter().find(|v| v["name"] == label).unwrap();
        let definition = variable["query"].as_str().unwrap();
        let selector = definition
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(&format!(", {label})")))
            .unwrap_or_else(|| panic!("variable {label}: {definition}"));
        let values: serde_json::Value = http_client()
            .get(format!("{}/api/v1/label/{label}/values", store.url))
            .query(&[("match[]", substitute(selector, instance))])
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(
            values["data"].as_array().unwrap().iter().any(|v| v == want),
            "variable {label} ({definition}) does not offer {want}: {values}"
        );
    }
}

/// Every rule's expression parses and evaluates in VictoriaMetrics 1.79.5 (most answer nothing on a
/// healthy gateway, which is the point). Returns `(rule, metric)` for every metric a rule names.
fn check_rule_expressions(store: &Victoria, rules: &RulesFile) -> Vec<(String, String)> {
    let mut used = Vec::new();
    for rule in &rules.groups[0].rules {
        let answer = query(store, &rule.expr);
        assert_eq!(
            answer["status"], "success",
            "rule {}: VictoriaMetrics refuses {}: {answer}",
            rule.alert, rule.expr
        );
        let names = metric_names(&rule.expr);
        assert!(!names.is_empty(), "rule {} names no metric", rule.alert);
        used.extend(names.into_iter().map(|n| (rule.alert.clone(), n)));
    }
    used
}

/// Waits until vmalert has evaluated all `n` alerting rules, then asserts none reported an error.
fn check_vmalert_evaluations(vmalert_url: &str, n: usize) {
    let alerting = |answer: &serde_json::Value| -> Vec<serde_json::Value> {
        answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .filter(|r| r["type"] == "alerting")
            .cloned()
            .collect()
    };
    let mut last = serde_json::Value::Null;
    eventually(
        Duration::from_secs(10),
        "every rule evaluated by vmalert",
        || {
            last = http_client()
                .get(format!("{vmalert_url}/api/v1/rules"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            let seen = alerting(&last);
            // An unevaluated rule has Go's zero time.
            seen.len() == n
                && seen.iter().all(|r| {
                    r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001"))
                })
        },
    );
    for rule in alerting(&last) {
        assert!(
            rule["health"] == "ok" && rule["lastError"].as_str().unwrap_or_default().is_empty(),
            "vmalert: rule {} fails: {rule}",
            rule["name"]
        );
    }
}

#[test]
fn every_dashboard_panel_and_alerting_rule_works_on_real_data() {
    let root = repo_root();
    let dashboard: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(root.join(DASHBOARD)).unwrap())
            .expect("the dashboard is valid JSON");
    let rules: RulesFile = serde_saphyr::from_str(&fs::read_to_string(root.join(RULES)).unwrap())
        .expect("the rules are valid YAML");
    check_rules_file(&rules, &root.join(RULES));
    check_dashboard_shape(&dashboard);

    // The scene: the backend; the store, which is the rate-limit datasource, the push target and where
    // vmagent writes the scrapes; the identity provider whose JWKS gives the key-refresh series.
    let mut backend = Victoria::start();
    let store = Victoria::start();
    let dir = tempdir();
    let idp = Idp::start(dir.path(), "keys.json");
    test_ca(dir.path());
    let limits = dir.path().join("limits.yml");
    fs::write(&limits, LIMITS).unwrap();
    let audit = dir.path().join("audit.log");
    let (pp_port, tls_port) = (free_port(), free_port());
    let signer = Signer::rsa();
    let mut gate = Gate::start_secured(
        &signer,
        &[
            format!("-read.url={}", backend.url),
            format!("-write.url={}", backend.url),
            format!("-auth.jwksEndpoints={}", idp.jwks_url()),
            "-auth.keysRefreshInterval=1s".into(),
            "-enable.rateLimit".into(),
            format!("-ratelimit.config={}", limits.display()),
            "-ratelimit.instance=gw0".into(),
            "-ratelimit.refreshInterval=1s".into(),
            format!("-datasource.url={}", store.url),
            format!("-pushmetrics.url={}/api/v1/import/prometheus", store.url),
            "-pushmetrics.interval=1s".into(),
            format!("-auditLog={}", audit.display()),
            "-maxConcurrentRequests=64".into(),
            "-maxConcurrentRequestsPerTenant=1".into(),
            "-http.headerReadTimeout=1s".into(),
            // Besides the harness's plain listener: one expecting the PROXY protocol, one HTTPS.
            format!("-httpListenAddr=127.0.0.1:{pp_port}"),
            format!("-httpListenAddr=127.0.0.1:{tls_port}"),
            "-httpListenAddr.useProxyProtocol=false,true,false".into(),
            "-tls=false,false,true".into(),
            format!("-tlsCertFile=,,{}", dir.path().join("server.pem").display()),
            format!("-tlsKeyFile=,,{}", dir.path().join("server.key").display()),
        ],
    );
    let instance = gate.url.trim_start_matches("http://").to_string();
    let _vmagent = vmagent(&instance, &store, dir.path());
    let (_vmalert, vmalert_url) = vmalert(&root.join(RULES), &store.url, free_port(), dir.path());
    store.wait_some_series(&format!("up{{job=\"{JOB}\"}}"));
    eventually(
        Duration::from_secs(20),
        "rate limits judged globally (usage read back from the store)",
        || gate.metric(r#"tenantgate_ratelimit_mode{mode="global"}"#) == 1.0,
    );

    // Two rounds of requests with a scrape between them: a series tenantgate creates on its first
    // request (a status code, a tenant) then has a rate, not just a value.
    let tokens = Tokens {
        good: signer.token(r#"{"tenant_id":{"account_id":0,"project_id":0}}"#),
        restricted: signer.token(r#"{"extra_labels":{"team":"dev"}}"#),
        heavy: signer.token(r#"{"tenant_id":{"account_id":1,"project_id":5}}"#),
        light: signer.token(r#"{"tenant_id":{"account_id":2,"project_id":0}}"#),
        refused: vec![
            "not-a-jwt".to_string(),
            expired_token(&signer),
            Signer::rsa().token("{}"),
        ],
    };
    requests_round(&gate, &tokens);
    store.wait_some_series(&format!(
        "tenantgate_requests_total{{job=\"{JOB}\",code=\"404\"}}"
    ));
    requests_round(&gate, &tokens);
    concurrency_refusal(
        &gate,
        &signer.token(r#"{"tenant_id":{"account_id":3,"project_id":0}}"#),
    );
    closed_connections(&gate, tls_port, pp_port);
    for (series, what) in [
        ("tenantgate_stripped_arguments_total", "a stripped argument"),
        (
            "tenantgate_concurrency_rejections_total",
            "a concurrency refusal",
        ),
        (
            "tenantgate_tls_handshake_failures_total",
            "a failed TLS handshake",
        ),
        (
            "tenantgate_proxy_protocol_refusals_total",
            "a PROXY protocol refusal",
        ),
        (
            r#"tenantgate_client_connections_closed_total{reason="slow_header"}"#,
            "a slow-header close",
        ),
    ] {
        eventually(Duration::from_secs(10), what, || gate.metric(series) >= 1.0);
    }

    // So many 5xx during the outage that the 5xx-ratio alert comes up.
    assert!(backend_outage(&gate, &mut backend, &tokens.good) > 0);
    assert!(gate.metric(r#"tenantgate_upstream_errors_total{kind="connect"}"#) > 0.0);
    eventually(
        Duration::from_secs(20),
        "vmalert raising TenantgateHigh5xxRatio after the outage",
        || alert_active(&vmalert_url, "TenantgateHigh5xxRatio"),
    );

    // Reloads: a good one, then a broken limits file (kept out, counted, alerted on), then fixed and
    // the alert gone.
    gate.proc.signal("HUP");
    eventually(Duration::from_secs(10), "a successful reload", || {
        gate.metric(r#"tenantgate_reloads_total{what="ratelimits",result="success"}"#) >= 1.0
    });
    fs::write(&limits, "limits:\n  - type: nonsense\n").unwrap();
    gate.proc.signal("HUP");
    eventually(Duration::from_secs(10), "a failed reload", || {
        gate.metric(r#"tenantgate_reloads_total{what="ratelimits",result="failure"}"#) >= 1.0
    });
    eventually(
        Duration::from_secs(20),
        "vmalert raising TenantgateConfigReloadFailed",
        || alert_active(&vmalert_url, "TenantgateConfigReloadFailed"),
    );
    fs::write(&limits, LIMITS).unwrap();
    gate.proc.signal("HUP");
    eventually(Duration::from_secs(10), "the fixed reload", || {
        gate.metric(r#"tenantgate_reload_last_success{what="ratelimits"}"#) == 1.0
    });
    eventually(
        Duration::from_secs(20),
        "TenantgateConfigReloadFailed resolved after the fixed reload",
        || !alert_active(&vmalert_url, "TenantgateConfigReloadFailed"),
    );
    assert!(fs::read_to_string(&audit).unwrap().lines().count() > 10);

    // The dashboard and the rules against what the store now holds.
    let dashboard_metrics = check_panels(&store, &dashboard, &instance);
    check_variables(&store, &dashboard, &instance);
    let rule_metrics = check_rule_expressions(&store, &rules);
    let dashboard_metrics = dashboard_metrics
        .into_iter()
        .map(|n| ("the dashboard".to_string(), n));
    // A metric misspelt in a branch that answers anyway (`... or vector(0)`, a rule that is
    // meant to answer nothing) would go unnoticed without this.
    for (user, name) in rule_metrics.into_iter().chain(dashboard_metrics) {
        assert!(
            !store.series(&format!("{name}{{job=\"{JOB}\"}}")).is_empty(),
            "{user} uses {name}, which the scraped gateway does not expose"
        );
    }
    check_vmalert_evaluations(&vmalert_url, rules.groups[0].rules.len());
    // Nothing else is raised: the outage's 5xx ratio stays in the 5-minute window.
    let stray: Vec<(String, String)> = active_alerts(&vmalert_url)
        .into_iter()
        .filter(|(name, _)| name != "TenantgateHigh5xxRatio")
        .collect();
    assert!(
        stray.is_empty(),
        "alerts active on a healthy gateway: {stray:?}"
    );

    // The gateway stops: the instance-down alert comes up.
    assert_eq!(gate.proc.stop(Duration::from_secs(10)), Some(0));
    eventually(
        Duration::from_secs(20),
        "vmalert raising TenantgateDown",
        || alert_active(&vmalert_url, "TenantgateDown"),
    );
}
