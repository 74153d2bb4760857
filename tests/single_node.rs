//! tenantgate in single-node mode in front of a real VictoriaMetrics: what each token can read and write,
//! asserted on what VictoriaMetrics stored and answered.

mod common;

use std::collections::BTreeSet;

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
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", vm.url))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
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

#[test]
fn rules_and_alerts_are_empty_for_label_restricted_tokens() {
    let s = scene();
    let dev = s.signer.token(r#"{"extra_labels":{"team":"dev"}}"#);
    let (st, v) = get(&s, &dev, "/api/v1/rules");
    assert_eq!(st, 200);
    assert_eq!(
        v,
        serde_json::json!({"status":"success","data":{"groups":[]}})
    );
    let (st, v) = get(&s, &dev, "/api/v1/alerts");
    assert_eq!(st, 200);
    assert_eq!(v["data"]["alerts"], serde_json::json!([]));
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
