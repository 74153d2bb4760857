//! tenantgate in single-node mode in front of a real VictoriaMetrics: what each token can read and write,
//! asserted on what VictoriaMetrics stored and answered.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::Value;

struct Scene {
    vm: Victoria,
    gate: Gate,
    signer: Signer,
}

fn scene() -> Scene {
    let vm = Victoria::start();
    let signer = Signer::rsa();
    let gate = Gate::start_secured(&signer, &read_write(&vm.url));
    // Everyone's data, written straight into VictoriaMetrics.
    let body = import_lines(&[
        (r#"sn_metric{team="dev",job="a"}"#, 1.0),
        (r#"sn_metric{team="dev",job="b"}"#, 2.0),
        (r#"sn_metric{team="admin",job="c",secret_label="x"}"#, 3.0),
        (r#"sn_metric{team="ops",job="a"}"#, 4.0),
    ]);
    vm.import_text(body);
    vm.wait_series("sn_metric", 4);
    Scene { vm, gate, signer }
}

fn get(s: &Scene, token: &str, path_and_query: &str) -> (u16, Value) {
    let r = http_client()
        .get(format!("{}{path_and_query}", s.gate.url))
        .bearer_auth(token)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let text = body_text(r);
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn post_form(s: &Scene, token: &str, path_and_query: &str, form: &str) -> (u16, Value) {
    let r = http_client()
        .post(format!("{}{path_and_query}", s.gate.url))
        .bearer_auth(token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let text = body_text(r);
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The `team` labels of every series in a query/series answer.
fn teams(v: &Value) -> BTreeSet<String> {
    let data = &v["data"];
    let items = data["result"]
        .as_array()
        .or(data.as_array())
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .map(|item| {
            let labels = if item.get("metric").is_some() {
                &item["metric"]
            } else {
                item
            };
            labels["team"].as_str().unwrap_or("<none>").to_string()
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_team_token_reads_only_its_team_on_every_read_api() {
    let s = scene();
    let dev = s.signer.token(r#"{"extra_labels":{"team":"dev"}}"#);
    let admin = s.signer.token(r#"{}"#);

    let (st, v) = get(&s, &dev, "/api/v1/query?query=sn_metric");
    assert_eq!(st, 200, "{v}");
    assert_eq!(teams(&v), set(&["dev"]));
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2);

    let (st, v) = get(&s, &admin, "/api/v1/query?query=sn_metric");
    assert_eq!(st, 200);
    assert_eq!(teams(&v), set(&["admin", "dev", "ops"]));

    let start = now() - 600;
    let (st, v) = get(
        &s,
        &dev,
        &format!(
            "/api/v1/query_range?query=sn_metric&start={start}&end={}&step=60",
            now()
        ),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(teams(&v), set(&["dev"]));

    let (st, v) = get(&s, &dev, "/api/v1/series?match[]=sn_metric&start=0");
    assert_eq!(st, 200);
    assert_eq!(teams(&v), set(&["dev"]));

    let (st, v) = get(&s, &dev, "/api/v1/label/team/values?start=0");
    assert_eq!(st, 200);
    assert_eq!(v["data"], serde_json::json!(["dev"]));

    let (st, v) = get(&s, &dev, "/api/v1/labels?start=0");
    assert_eq!(st, 200);
    let names: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(!names.contains(&"secret_label"), "{names:?}");
    let (_, v) = get(&s, &admin, "/api/v1/labels?start=0");
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "secret_label"));

    let r = http_client()
        .get(format!("{}/api/v1/export?match[]=sn_metric", s.gate.url))
        .bearer_auth(&dev)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let export = body_text(r);
    assert_eq!(export.lines().count(), 2, "{export}");
    assert!(
        export.lines().all(|l| l.contains(r#""team":"dev""#)),
        "{export}"
    );

    // gzip passes through untouched, and so do the backend's own errors.
    let r = http_client()
        .get(format!("{}/api/v1/export?match[]=sn_metric", s.gate.url))
        .bearer_auth(&dev)
        .header("accept-encoding", "gzip")
        .send()
        .unwrap();
    assert_eq!(
        r.headers().get("content-encoding").map(|v| v.as_bytes()),
        Some(&b"gzip"[..])
    );
    assert_eq!(&r.bytes().unwrap()[..2], &[0x1f, 0x8b]);
    let (st, v) = get(&s, &dev, "/api/v1/query?query=sum(");
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["status"], "error");
    assert!(
        v["error"].as_str().unwrap().contains("unexpected token"),
        "{v}"
    );

    // The same through the /prometheus prefix, and as a Grafana-style POST form.
    let (st, v) = get(&s, &dev, "/prometheus/api/v1/query?query=sn_metric");
    assert_eq!(st, 200);
    assert_eq!(teams(&v), set(&["dev"]));
    let (st, v) = post_form(&s, &dev, "/api/v1/query", "query=sn_metric&time=");
    assert_eq!(st, 200, "{v}");
    assert_eq!(teams(&v), set(&["dev"]));
}

#[test]
fn extra_filters_restrict_as_victoriametrics_documents() {
    let s = scene();
    let t = s.signer.token(r#"{"extra_filters":["{job=~\"a|c\"}"]}"#);
    let (st, v) = get(&s, &t, "/api/v1/query?query=sn_metric");
    assert_eq!(st, 200, "{v}");
    assert_eq!(teams(&v), set(&["admin", "dev", "ops"]));
    let jobs: BTreeSet<String> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metric"]["job"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(jobs, set(&["a", "c"]));
    // Labels and filters together: both apply.
    let t = s
        .signer
        .token(r#"{"extra_labels":{"team":"dev"},"extra_filters":["{job=\"a\"}"]}"#);
    let (_, v) = get(&s, &t, "/api/v1/query?query=sn_metric");
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 1);
}

#[test]
fn smuggled_restriction_arguments_do_not_widen_access() {
    let s = scene();
    let dev = s.signer.token(r#"{"extra_labels":{"team":"dev"}}"#);
    let widen = "%7B__name__%3D~%22.%2B%22%7D"; // {__name__=~".+"}
    for attack in [
        format!("/api/v1/query?query=sn_metric&extra_filters[]={widen}"),
        format!("/api/v1/query?query=sn_metric&extra_filters%5B%5D={widen}"),
        format!("/api/v1/query?query=sn_metric&extra_filters={widen}"),
        "/api/v1/query?query=sn_metric&extra_label=team%3Dadmin".to_string(),
        "/api/v1/query?query=sn_metric&extra%5Flabel=team%3Dadmin".to_string(),
        "/api/v1/query?query=sn_metric&EXTRA_LABEL=team%3Dadmin".to_string(),
        format!("/api/v1/query?query=sn_metric&extra%255Ffilters%5B%5D={widen}"),
    ] {
        let (st, v) = get(&s, &dev, &attack);
        assert_eq!(st, 200, "{attack}: {v}");
        assert_eq!(teams(&v), set(&["dev"]), "{attack}");
    }
    for body in [
        format!("query=sn_metric&extra_filters%5B%5D={widen}"),
        format!("query=sn_metric&extra_filters[]={widen}"),
        "query=sn_metric&extra_label=team%3Dadmin".to_string(),
    ] {
        let (st, v) = post_form(&s, &dev, "/api/v1/query", &body);
        assert_eq!(st, 200, "{body}: {v}");
        assert_eq!(teams(&v), set(&["dev"]), "{body}");
        // In the URL and the body at once.
        let (st, v) = post_form(
            &s,
            &dev,
            &format!("/api/v1/query?extra_filters[]={widen}"),
            &body,
        );
        assert_eq!(st, 200);
        assert_eq!(teams(&v), set(&["dev"]), "{body}");
    }
    // A multipart body could carry arguments VictoriaMetrics reads: refused, not forwarded unread.
    let r = http_client()
        .post(format!("{}/api/v1/query", s.gate.url))
        .bearer_auth(&dev)
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\nsn_metric\r\n--x--\r\n")
        .send()
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(s.gate.metric("tenantgate_stripped_arguments_total") >= 13.0);
}

#[test]
fn writes_carry_the_token_labels_and_modes_are_enforced() {
    let s = scene();
    let dev = s.signer.token(r#"{"extra_labels":{"team":"dev"}}"#);
    // The sender claims team=admin; the token's label wins.
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", s.gate.url))
        .bearer_auth(&dev)
        .header("content-type", "text/plain")
        .body(import_lines(&[(r#"w_metric{team="admin",job="x"}"#, 1.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204, "{}", body_text(r));
    let stored = s.vm.wait_series("w_metric", 1);
    assert_eq!(stored[0]["team"], "dev");

    // Read-only token: 403 and nothing stored.
    let ro = s
        .signer
        .token(r#"{"extra_labels":{"team":"dev"},"mode":1}"#);
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", s.gate.url))
        .bearer_auth(&ro)
        .header("content-type", "text/plain")
        .body(import_lines(&[(r#"ro_metric{job="x"}"#, 1.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let (st, _) = get(&s, &ro, "/api/v1/query?query=sn_metric");
    assert_eq!(st, 200);
    // Write-only token: cannot read.
    let wo = s.signer.token(r#"{"mode":2}"#);
    let (st, v) = get(&s, &wo, "/api/v1/query?query=sn_metric");
    assert_eq!(st, 403);
    assert_eq!(v["status"], "error");
    // A form-typed write body, as VictoriaMetrics' own `curl -d` examples send, is data: it is
    // forwarded, and an extra_label inside it changes nothing (VictoriaMetrics reads write arguments
    // from the URL only).
    let form_body = format!(
        "{}extra_label=team=admin\nextra_label=team%3Dadmin&x=1\n",
        import_lines(&[(r#"form_metric{job="x"}"#, 1.0)])
    );
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", s.gate.url))
        .bearer_auth(&dev)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204, "{}", body_text(r));
    let stored = s.vm.wait_series("form_metric", 1);
    assert_eq!(stored[0]["team"], "dev", "{stored:?}");
    assert!(
        s.vm.series(r#"{__name__=~"form_metric|extra_label.*",team="admin"}"#)
            .is_empty(),
        "a form body must not choose a label"
    );
    assert!(s.gate.metric("tenantgate_form_writes_total") >= 1.0);
    // Multipart write bodies are still refused: no sender makes them.
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", s.gate.url))
        .bearer_auth(&dev)
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x\r\nContent-Disposition: form-data; name=\"extra_label\"\r\n\r\nteam=admin\r\n--x--\r\n")
        .send()
        .unwrap();
    assert_eq!(r.status(), 415);
    // A later good write proves the refused ones were not just slow.
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", s.gate.url))
        .bearer_auth(&dev)
        .body(import_lines(&[(r#"w_marker{job="x"}"#, 1.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    s.vm.wait_series("w_marker", 1);
    assert!(s.vm.series("ro_metric").is_empty());
    assert_eq!(s.vm.series("w_metric").len(), 1);
}

/// vmalert's rules: one group per team, and a shared alerting rule firing for both teams.
const VMALERT_RULES: &str = r#"
groups:
  - name: dev-team
    interval: 1s
    rules:
      - record: dev:probe:sum
        expr: sum(probe{team="dev"})
        labels: {team: dev}
      - alert: DevDown
        expr: probe{team="dev"} == 0
        labels: {team: dev}
  - name: admin-team
    interval: 1s
    rules:
      - alert: AdminDown
        expr: probe{team="admin"} == 0
        labels: {team: admin}
      - record: admin:probe:sum
        expr: sum(probe{team="admin"})
        labels: {team: admin}
  - name: shared
    interval: 1s
    rules:
      - alert: ProbeDown
        expr: probe == 0
"#;

/// Rule names of a rules answer, and the `team` of every alert in it.
fn rules_seen(v: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let mut alert_teams = BTreeSet::new();
    for group in v["data"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            names.insert(rule["name"].as_str().unwrap().to_string());
            for alert in rule["alerts"].as_array().into_iter().flatten() {
                alert_teams.insert(
                    alert["labels"]["team"]
                        .as_str()
                        .unwrap_or("<none>")
                        .to_string(),
                );
            }
        }
    }
    (names, alert_teams)
}

#[test]
fn rules_and_alerts_from_vmalert_are_filtered_to_the_token_labels() {
    let dir = tempdir();
    let vmalert_port = free_port();
    let vm = Victoria::start_with(&[format!("-vmalert.proxyURL=http://127.0.0.1:{vmalert_port}")]);
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, VMALERT_RULES).unwrap();
    let (_vmalert, vmalert_url) = vmalert(&rules, &vm.url, vmalert_port, dir.path());
    let body = import_lines(&[
        (r#"probe{team="dev"}"#, 0.0),
        (r#"probe{team="admin"}"#, 0.0),
    ]);
    vm.import_text(body);
    // Both teams' alerts and the shared rule's two are firing in vmalert itself.
    eventually(Duration::from_secs(30), "vmalert fires four alerts", || {
        let v: Value = http_client()
            .get(format!("{vmalert_url}/api/v1/alerts"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["data"]["alerts"].as_array().map_or(0, Vec::len) == 4
    });
    let signer = Signer::rsa();
    let gate = Gate::start_secured(&signer, &read_write(&vm.url));
    let s = Scene { vm, gate, signer };

    let open = s.signer.token("{}");
    let (st, v) = get(&s, &open, "/api/v1/rules");
    assert_eq!(st, 200, "{v}");
    let every = set(&[
        "dev:probe:sum",
        "DevDown",
        "AdminDown",
        "admin:probe:sum",
        "ProbeDown",
    ]);
    assert_eq!(
        rules_seen(&v),
        (every, set(&["dev", "admin"])),
        "an unrestricted token sees everything"
    );

    for (team, own) in [
        ("dev", ["dev:probe:sum", "DevDown", "ProbeDown"]),
        ("admin", ["admin:probe:sum", "AdminDown", "ProbeDown"]),
    ] {
        let other = if team == "dev" { "admin" } else { "dev" };
        let token = s
            .signer
            .token(&format!(r#"{{"extra_labels":{{"team":"{team}"}}}}"#));
        let (st, v) = get(&s, &token, "/api/v1/rules");
        assert_eq!(st, 200, "{v}");
        assert_eq!(rules_seen(&v), (set(&own), set(&[team])), "{team}: {v}");
        assert!(
            !v.to_string().contains(other),
            "{team} sees a trace of {other}: {v}"
        );
        let (st, v) = get(&s, &token, "/api/v1/alerts");
        assert_eq!(st, 200, "{v}");
        let alerts = v["data"]["alerts"].as_array().unwrap();
        assert_eq!(
            alerts.len(),
            2,
            "{team}: its own alert and its share of the shared one: {v}"
        );
        assert!(alerts.iter().all(|a| a["labels"]["team"] == team), "{v}");
    }

    // Several extra_filters (VictoriaMetrics ORs them) are no single PromQL selector to filter by: empty.
    let ored = s
        .signer
        .token(r#"{"extra_filters":["{team=\"dev\"}","{team=\"ops\"}"]}"#);
    let (st, v) = get(&s, &ored, "/api/v1/rules");
    assert_eq!(
        (st, v),
        (
            200,
            serde_json::json!({"status":"success","data":{"groups":[]}})
        )
    );
    let (st, v) = get(&s, &ored, "/api/v1/alerts");
    assert_eq!(st, 200);
    assert_eq!(v["data"]["alerts"], serde_json::json!([]));
    // dev's and admin's answers were filtered; the unrestricted and the ORed tokens' were not.
    assert_eq!(
        s.gate
            .metric(r#"tenantgate_rules_filtered_total{kind="rules"}"#),
        2.0
    );
    assert_eq!(
        s.gate
            .metric(r#"tenantgate_rules_filtered_total{kind="alerts"}"#),
        2.0
    );
}

#[test]
fn own_endpoints_and_refused_paths() {
    let s = scene();
    let admin = s.signer.token(r#"{}"#);
    for (path, want) in [
        ("/api/v1/admin/tsdb/delete_series?match[]=sn_metric", 403),
        ("/select/0:0/prometheus/api/v1/query?query=sn_metric", 403),
        ("/insert/0:0/prometheus/api/v1/write", 403),
        ("/api/v1/status/active_queries", 403),
        ("/api/v1/status/config", 404),
    ] {
        let (st, v) = get(&s, &admin, path);
        assert_eq!(st, want, "{path}: {v}");
        assert_eq!(v["status"], "error", "{path}");
    }
    assert_eq!(s.vm.series("sn_metric").len(), 4, "nothing was deleted");
    // VictoriaMetrics' /flags: the flags given, secrets hidden.
    let flags = body_text(
        http_client()
            .get(format!("{}/flags", s.gate.url))
            .send()
            .unwrap(),
    );
    assert!(flags.contains("-enable.auth=\"true\"\n"), "{flags}");
    assert!(
        flags.contains("-auth.publicKeyFiles=\"secret\"\n"),
        "{flags}"
    );
    assert!(
        !flags.contains("-clusterMode"),
        "only flags given are listed: {flags}"
    );
    let r = http_client()
        .get(format!("{}/health", s.gate.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = body_text(
        http_client()
            .get(format!("{}/metrics", s.gate.url))
            .send()
            .unwrap(),
    );
    for name in [
        "tenantgate_requests_total{route=\"refused\",code=\"403\"}",
        "tenantgate_request_duration_seconds_bucket",
        "tenantgate_upstream_duration_seconds_bucket",
        "tenantgate_auth_rejections_total{reason=\"expired\"}",
        "tenantgate_upstream_errors_total{kind=\"connect\"}",
        "tenantgate_verification_keys 1",
        "tenantgate_token_cache_hits_total",
        "tenantgate_build_info{version=",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
}
