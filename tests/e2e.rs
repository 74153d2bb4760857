//! The scene of `scripts/demo`, end to end, with real parts only: a real OpenID Connect provider (standing in
//! for Keycloak, under `/realms/master`), VictoriaMetrics single-node, the cluster stand-in (nginx in front of
//! one single-node per tenant), vmagent and Prometheus remote-writing with OAuth2 client credentials, two
//! people logged in through the authorization-code flow, and tenantgate in cluster and single-node mode,
//! plus a third gateway in front of a real Prometheus (`-read.backendType=prometheus`), where tenantgate
//! enforces the labels itself.
//!
//! Every assertion about data is made on what VictoriaMetrics stored or answered.
//!
//! Who is who (the same as in `scripts/demo` and `deploy/keycloak/monitoring-realm.json`):
//! - `dev`: tenant 0:1, `extra_labels: {team: dev}`. Tenant 0:1 holds nothing in the cluster.
//! - `admin`: tenant 0:0, `extra_labels: {team: admin}`.
//! - client `vmagent`: tenant 0:0, no labels. It scrapes VictoriaMetrics (labelled `team=dev`) and the
//!   gateways (labelled `team=admin`) and writes through all three.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::idp::Idp;
use common::*;
use serde_json::{json, Value};

const GRAFANA_REDIRECT: &str = "http://127.0.0.1:3000/login/generic_oauth";
/// Every series. Scrape-generated ones (`up`, `scrape_*`) carry no `team` (metric_relabel_configs do not
/// touch them), so the scene selects by name, not with `up`.
const ALL: &str = r#"{__name__=~".+"}"#;

fn clients() -> Value {
    json!([
        { "client_id": "grafana", "client_secret": "grafana-secret",
          "grant_types": ["authorization_code", "refresh_token"], "redirect_uris": [GRAFANA_REDIRECT] },
        { "client_id": "vmagent", "client_secret": "vmagent-secret",
          "grant_types": ["client_credentials"],
          "vm_access": { "tenant_id": { "account_id": 0, "project_id": 0 } } },
        { "client_id": "prometheus", "client_secret": "prometheus-secret",
          "grant_types": ["client_credentials"],
          "vm_access": { "tenant_id": { "account_id": 0, "project_id": 0 },
                         "extra_labels": { "writer": "prometheus" } } }
    ])
}

fn users() -> Value {
    json!({
        "dev": { "password": "dev-password", "vm_access":
            { "tenant_id": { "account_id": 0, "project_id": 1 }, "extra_labels": { "team": "dev" } } },
        "admin": { "password": "admin-password", "vm_access":
            { "tenant_id": { "account_id": 0, "project_id": 0 }, "extra_labels": { "team": "admin" } } }
    })
}

/// Where the gateways get their verification keys: the IdP's OpenID Connect discovery document.
fn key_source(idp: &Idp) -> Vec<String> {
    vec![format!(
        "-auth.oidcDiscoveryEndpoints={}",
        idp.discovery_url()
    )]
}

/// The two gateways of the guide: cluster mode in front of the stand-in's vminsert/vmselect ports, and
/// single-node mode in front of one VictoriaMetrics.
fn gateways(idp: &Idp, vm: &Victoria, cluster: &Cluster) -> (Gate, Gate) {
    let mut single = vec![
        "-enable.auth=true".to_string(),
        format!("-write.url={}", vm.url),
        format!("-read.url={}", vm.url),
    ];
    single.extend(key_source(idp));
    let mut clustered = vec![
        "-enable.auth=true".to_string(),
        "-clusterMode=true".to_string(),
        format!("-write.url={}", cluster.insert_url),
        format!("-read.url={}", cluster.select_url),
        // A real IdP's tokens pass the optional issuer and audience checks too.
        format!("-auth.issuers={}", idp.issuer),
        "-auth.audiences=urn:tenantgate".to_string(),
    ];
    clustered.extend(key_source(idp));
    (Gate::start(&single), Gate::start(&clustered))
}

/// The gateway in front of a Prometheus-family backend: the same keys, PromQL enforcement by tenantgate.
fn prometheus_gateway(idp: &Idp, prom: &Prometheus) -> Gate {
    let mut args = vec![
        "-enable.auth=true".to_string(),
        "-read.backendType=prometheus".to_string(),
        "-write.backendType=prometheus".to_string(),
        format!("-read.url={}", prom.url),
        format!("-write.url={}/api/v1/write", prom.url),
    ];
    args.extend(key_source(idp));
    Gate::start(&args)
}

fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// Everything the demo runs, with data flowing: vmagent has written through both gateways and both people
/// are logged in.
struct Scene {
    idp: Idp,
    vm: Victoria,
    cluster: Cluster,
    single: Gate,
    clustered: Gate,
    /// A real Prometheus (remote-write receiver) and the gateway in front of it.
    prom: Prometheus,
    promgate: Gate,
    vmagent: Vmagent,
    dev: UserTokens,
    admin: UserTokens,
    /// The IdP's keys, clients, people and the agents' secrets; removed last.
    _dir: tempfile::TempDir,
}

impl Scene {
    fn start() -> Scene {
        let dir = tempdir();
        let idp = Idp::start_scene(dir.path(), &clients(), &users());
        let vm = Victoria::start();
        let cluster = Cluster::start(&["0:0", "0:1"]);
        let (single, clustered) = gateways(&idp, &vm, &cluster);
        let prom = Prometheus::start_with(
            "global: {}\n",
            Prometheus::reserve_port(),
            &[],
            &["--web.enable-remote-write-receiver"],
        );
        let promgate = prometheus_gateway(&idp, &prom);
        let scrape = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n\
             - job_name: victoria-metrics\n  static_configs: [{{targets: ['{}']}}]\n  \
               metric_relabel_configs: [{{target_label: team, replacement: dev}}]\n\
             - job_name: tenantgate\n  static_configs: [{{targets: ['{}', '{}', '{}']}}]\n  \
               metric_relabel_configs: [{{target_label: team, replacement: admin}}]\n",
            host_port(&vm.url),
            host_port(&single.url),
            host_port(&clustered.url),
            host_port(&promgate.url),
        );
        let secret = secret_file(dir.path(), "vmagent.secret", "vmagent-secret");
        let write = |gate: &Gate| RemoteWrite {
            url: format!("{}/api/v1/write", gate.url),
            client_id: "vmagent".into(),
            client_secret_file: secret.clone(),
            token_url: idp.token_url(),
        };
        let vmagent = Vmagent::with_oauth2(
            &scrape,
            &[write(&single), write(&clustered), write(&promgate)],
        );
        let dev = idp.login(
            "grafana",
            "grafana-secret",
            GRAFANA_REDIRECT,
            "dev",
            "dev-password",
        );
        let admin = idp.login(
            "grafana",
            "grafana-secret",
            GRAFANA_REDIRECT,
            "admin",
            "admin-password",
        );
        // Both teams' jobs have arrived in both stores, from both gateways, and are searchable: series
        // show up in the index a moment before their samples answer queries, and a range query at a 1 s
        // step sees a sample only once it is about a second old, so that is what is waited for.
        let want =
            r#"count by (team, job, instance) ({job=~"victoria-metrics|tenantgate",team!=""})"#;
        let stores = [
            (vm.url.as_str(), Some(&vm)),
            (
                cluster.tenants["0:0"].url.as_str(),
                Some(&cluster.tenants["0:0"]),
            ),
            (prom.url.as_str(), None),
        ];
        for (store_url, victoria) in stores {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(victoria) = victoria {
                    victoria.flush();
                }
                let now = common::now();
                let v: Value = http_client()
                    .get(format!("{store_url}/api/v1/query_range"))
                    .query(&[
                        ("query", want),
                        ("start", &(now - 60).to_string()),
                        ("end", &now.to_string()),
                        ("step", "1"),
                    ])
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                let instances: BTreeSet<String> = v["data"]["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| format!("{}/{}", r["metric"]["team"], r["metric"]["instance"]))
                    .collect();
                let expect: BTreeSet<String> = [
                    format!("\"dev\"/\"{}\"", host_port(&vm.url)),
                    format!("\"admin\"/\"{}\"", host_port(&single.url)),
                    format!("\"admin\"/\"{}\"", host_port(&clustered.url)),
                    format!("\"admin\"/\"{}\"", host_port(&promgate.url)),
                ]
                .into();
                if instances == expect {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{store_url} never held all scraped jobs: {v}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Scene {
            idp,
            vm,
            cluster,
            single,
            clustered,
            prom,
            promgate,
            vmagent,
            dev,
            admin,
            _dir: dir,
        }
    }
}

/// A client of one gateway holding one person's tokens, sending what Grafana's Prometheus data source sends
/// with "Forward OAuth identity": the access token as a bearer token and the ID token in `X-ID-Token`.
struct Grafana<'a> {
    gate: &'a Gate,
    tokens: &'a UserTokens,
}

impl Grafana<'_> {
    fn send(&self, request: reqwest::blocking::RequestBuilder, what: &str) -> Value {
        let r = request
            .bearer_auth(&self.tokens.access_token)
            .header("X-ID-Token", &self.tokens.id_token)
            .header("User-Agent", "Grafana/10.4.0")
            .header("X-Grafana-Org-Id", "1")
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let text = body_text(r);
        assert_eq!(status, 200, "{what} via {}: {text}", self.gate.url);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["status"], "success", "{what} via {}: {v}", self.gate.url);
        v["data"].clone()
    }

    fn get(&self, path: &str, args: &[(&str, &str)]) -> Value {
        let request = http_client()
            .get(format!("{}{path}", self.gate.url))
            .query(args);
        self.send(request, &format!("GET {path} {args:?}"))
    }

    /// Grafana's default: the arguments as an `application/x-www-form-urlencoded` body.
    fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let request = http_client()
            .post(format!("{}{path}", self.gate.url))
            .form(form);
        self.send(request, &format!("POST {path} {form:?}"))
    }
}

/// `(team, job)` of every series in a query answer (vector or matrix) or a series list.
fn team_jobs(data: &Value) -> BTreeSet<(String, String)> {
    let items = match data.get("result") {
        Some(r) => r.as_array().unwrap().iter().map(|i| &i["metric"]).collect(),
        None => data.as_array().unwrap().iter().collect::<Vec<_>>(),
    };
    items
        .into_iter()
        .map(|m| {
            (
                m["team"].as_str().unwrap_or("<none>").to_string(),
                m["job"].as_str().unwrap_or("<none>").to_string(),
            )
        })
        .collect()
}

fn strings(data: &Value) -> BTreeSet<String> {
    data.as_array()
        .unwrap_or_else(|| panic!("not a list: {data}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// What one person should see through one gateway: `Some((team, job))` or nothing at all.
type Expect = Option<(&'static str, &'static str)>;

fn expected(want: Expect) -> BTreeSet<(String, String)> {
    want.map(|(t, j)| (t.to_string(), j.to_string()))
        .into_iter()
        .collect()
}

#[test]
fn vmagent_writes_arrive_through_both_gateways_and_each_person_sees_only_their_tenant_and_team() {
    let s = Scene::start();

    // The tokens are the IdP's real ones: RFC 9068 access tokens carrying each grant.
    let dev_claims = jwt_payload(&s.dev.access_token);
    assert_eq!(dev_claims["iss"], s.idp.issuer);
    assert_eq!(
        dev_claims["vm_access"]["tenant_id"]["project_id"], 1,
        "{dev_claims}"
    );
    assert_eq!(jwt_payload(&s.admin.access_token)["sub"], "admin");

    // What vmagent wrote through the single-node gateway is in the single-node VictoriaMetrics, and what it
    // wrote through the cluster gateway is in tenant 0:0 (its token's tenant), and nowhere else.
    for (store, name) in [
        (&s.vm, "single-node"),
        (&s.cluster.tenants["0:0"], "cluster 0:0"),
    ] {
        store.flush();
        let teams: BTreeSet<(String, String)> = team_jobs(
            &serde_json::to_value(
                store.series(r#"{__name__=~"vm_app_version|tenantgate_requests_total"}"#),
            )
            .unwrap(),
        );
        assert_eq!(
            teams,
            expected(Some(("admin", "tenantgate")))
                .union(&expected(Some(("dev", "victoria-metrics"))))
                .cloned()
                .collect(),
            "{name} holds both teams' series"
        );
    }
    s.cluster.tenants["0:1"].flush();
    assert!(
        s.cluster.tenants["0:1"].series(ALL).is_empty(),
        "nothing was written into tenant 0:1"
    );
    for gate in [&s.single, &s.clustered] {
        assert!(
            gate.metric(r#"tenantgate_requests_total{route="write",code="204"}"#) > 0.0,
            "vmagent's writes went through {}",
            gate.url
        );
    }

    // Both gateways verify with the IdP's two keys, found through its discovery document.
    for gate in [&s.single, &s.clustered] {
        let loaded = format!(
            r#"tenantgate_keys_loaded{{source="{}"}}"#,
            s.idp.discovery_url()
        );
        assert_eq!(gate.metric(&loaded), 2.0, "{}", gate.proc.log_text());
    }

    // Each person through each gateway (the demo's table).
    let q = format!("count by (team, job) ({ALL})");
    let cases: [(&str, &UserTokens, &Gate, Expect); 6] = [
        ("dev", &s.dev, &s.clustered, None),
        ("dev", &s.dev, &s.single, Some(("dev", "victoria-metrics"))),
        (
            "admin",
            &s.admin,
            &s.clustered,
            Some(("admin", "tenantgate")),
        ),
        ("admin", &s.admin, &s.single, Some(("admin", "tenantgate"))),
        // Prometheus holds every team's series; tenantgate's PromQL rewrite keeps each person to theirs.
        (
            "dev",
            &s.dev,
            &s.promgate,
            Some(("dev", "victoria-metrics")),
        ),
        (
            "admin",
            &s.admin,
            &s.promgate,
            Some(("admin", "tenantgate")),
        ),
    ];
    for (who, tokens, gate, want) in cases {
        let g = Grafana { gate, tokens };
        let data = g.get("/api/v1/query", &[("query", &q)]);
        assert_eq!(
            team_jobs(&data),
            expected(want),
            "{who} via {}: {data}",
            gate.url
        );
        if let Some(counts) = data["result"].as_array() {
            for c in counts {
                let n: u64 = c["value"][1].as_str().unwrap().parse().unwrap();
                assert!(n > 10, "{who} sees a whole job's series, not a sample: {c}");
            }
        }
    }

    // vmagent's token may write but the gateways still take the tenant from it: reading with it through
    // the cluster gateway sees tenant 0:0 unrestricted, i.e. both teams.
    let agent = s.idp.client_credentials_token("vmagent", "vmagent-secret");
    let r: Value = http_client()
        .get(format!("{}/api/v1/query", s.clustered.url))
        .query(&[("query", q.as_str())])
        .bearer_auth(&agent)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let seen: BTreeSet<String> = team_jobs(&r["data"]).into_iter().map(|(t, _)| t).collect();
    assert!(
        seen.contains("admin") && seen.contains("dev"),
        "an unrestricted token of tenant 0:0 sees both teams: {r}"
    );
    drop(s.vmagent);
}

#[test]
fn grafana_data_source_requests_succeed_restricted_for_both_people_through_every_gateway() {
    let s = Scene::start();
    // Prometheus itself holds both teams' series: what the third gateway restricts is really there.
    let held: Value = http_client()
        .get(format!("{}/api/v1/query", s.prom.url))
        .query(&[("query", format!("count by (team, job) ({ALL})"))])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let held = team_jobs(&held["data"]);
    assert!(
        held.contains(&("dev".into(), "victoria-metrics".into()))
            && held.contains(&("admin".into(), "tenantgate".into())),
        "{held:?}"
    );
    let now = common::now();
    let (start, end, time) = ((now - 300).to_string(), now.to_string(), now.to_string());
    let q = format!("count by (team, job) ({ALL})");
    let cases: [(&str, &UserTokens, &Gate, Expect); 4] = [
        ("dev", &s.dev, &s.clustered, None),
        ("dev", &s.dev, &s.single, Some(("dev", "victoria-metrics"))),
        (
            "admin",
            &s.admin,
            &s.clustered,
            Some(("admin", "tenantgate")),
        ),
        ("admin", &s.admin, &s.single, Some(("admin", "tenantgate"))),
    ];
    for (who, tokens, gate, want) in cases {
        let g = Grafana { gate, tokens };
        let ctx = format!("{who} via {}", gate.url);
        let want_set = expected(want);

        // "Save & test": an instant query of 1+1 at time 4 as a POST form, then buildinfo.
        let data = g.post("/api/v1/query", &[("query", "1+1"), ("time", "4")]);
        assert_eq!(data["result"][0]["value"][1], "2", "{ctx}: {data}");
        g.get("/api/v1/status/buildinfo", &[]);

        // Label names (POST form, then GET as Grafana retries), restricted to the person's team.
        for names in [
            g.post("/api/v1/labels", &[("start", &start), ("end", &end)]),
            g.get("/api/v1/labels", &[("start", &start), ("end", &end)]),
        ] {
            let names = strings(&names);
            match want {
                // VictoriaMetrics names `__name__` even for an empty tenant once a filter is applied.
                None => assert!(names.iter().all(|n| n == "__name__"), "{ctx}: {names:?}"),
                Some(_) => {
                    assert!(names.contains("team") && names.contains("job"), "{ctx}");
                    // `route` and `code` label only tenantgate's own metrics (team admin).
                    let admin_only = names.contains("route");
                    assert_eq!(
                        admin_only,
                        want_set.iter().any(|(t, _)| t == "admin"),
                        "{ctx}: {names:?}"
                    );
                }
            }
        }

        // Label values, always GET: team and job, and the metric names of the person's series only.
        let teams = strings(&g.get(
            "/api/v1/label/team/values",
            &[("start", &start), ("end", &end)],
        ));
        let jobs = strings(&g.get(
            "/api/v1/label/job/values",
            &[("start", &start), ("end", &end)],
        ));
        assert_eq!(
            teams,
            want_set.iter().map(|(t, _)| t.clone()).collect(),
            "{ctx}"
        );
        assert_eq!(
            jobs,
            want_set.iter().map(|(_, j)| j.clone()).collect(),
            "{ctx}"
        );
        let names = strings(&g.get(
            "/api/v1/label/__name__/values",
            &[("start", &start), ("end", &end)],
        ));
        let (has_vm, has_gate) = (
            names.iter().any(|n| n.starts_with("vm_")),
            names.iter().any(|n| n.starts_with("tenantgate_")),
        );
        match want {
            None => assert!(names.is_empty(), "{ctx}: {names:?}"),
            Some(("dev", _)) => assert!(has_vm && !has_gate, "{ctx}: {names:?}"),
            Some(_) => assert!(has_gate && !has_vm, "{ctx}: {names:?}"),
        }
        // With a match[] selector, as the query editor's label browser sends it.
        let jobs = strings(&g.get(
            "/api/v1/label/job/values",
            &[("match[]", ALL), ("start", &start), ("end", &end)],
        ));
        assert_eq!(jobs.len(), want_set.len(), "{ctx}: {jobs:?}");

        // Series (POST form and GET): only the person's team.
        let series_args = [
            (
                "match[]",
                r#"{__name__=~"vm_app_version|tenantgate_requests_total|go_goroutines"}"#,
            ),
            ("start", start.as_str()),
            ("end", end.as_str()),
        ];
        for series in [
            g.post("/api/v1/series", &series_args),
            g.get("/api/v1/series", &series_args),
        ] {
            assert_eq!(team_jobs(&series), want_set, "{ctx}: {series}");
        }

        // Metadata (GET): answered.
        g.get("/api/v1/metadata", &[]);

        // Instant and range queries, as POST forms and as GET.
        let instant = [("query", q.as_str()), ("time", time.as_str())];
        let range = [
            ("query", q.as_str()),
            ("start", start.as_str()),
            ("end", end.as_str()),
            ("step", "1"),
        ];
        for data in [
            g.post("/api/v1/query", &instant),
            g.get("/api/v1/query", &instant),
            g.post("/api/v1/query_range", &range),
            g.get("/api/v1/query_range", &range),
        ] {
            assert_eq!(team_jobs(&data), want_set, "{ctx}: {data}");
        }
        // The same through the /prometheus prefix, which some data sources are configured with.
        let data = g.post("/prometheus/api/v1/query", &instant);
        assert_eq!(team_jobs(&data), want_set, "{ctx}: {data}");

        // A query that tries to name the other team still only sees the person's own.
        let other = r#"count by (team, job) ({__name__=~".+",team=~"dev|admin"})"#;
        let data = g.post("/api/v1/query", &[("query", other), ("time", &time)]);
        assert_eq!(team_jobs(&data), want_set, "{ctx}: {data}");

        // Grafana's alerting asks for rules and alerts: answered, and never another team's.
        let rules = g.get("/api/v1/rules", &[]);
        assert_eq!(rules["groups"], json!([]), "{ctx}: {rules}");
        let alerts = g.get("/api/v1/alerts", &[]);
        assert_eq!(alerts["alerts"], json!([]), "{ctx}: {alerts}");
    }
    drop(s.vmagent);
}

#[test]
fn prometheus_remote_writes_through_both_gateways_with_its_oauth2_block() {
    let dir = tempdir();
    let idp = Idp::start_scene(dir.path(), &clients(), &users());
    let vm = Victoria::start();
    let cluster = Cluster::start(&["0:0", "0:1"]);
    let (single, clustered) = gateways(&idp, &vm, &cluster);
    let secret = secret_file(dir.path(), "prometheus.secret", "prometheus-secret");
    let port = Prometheus::reserve_port();
    let remote_write = |gate: &Gate| {
        format!(
            "  - url: {}/api/v1/write\n    oauth2:\n      client_id: prometheus\n      \
             client_secret_file: {}\n      token_url: {}\n    \
             queue_config: {{batch_send_deadline: 1s}}\n",
            gate.url,
            secret.display(),
            idp.token_url()
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    \
         static_configs: [{{targets: ['127.0.0.1:{port}']}}]\nremote_write:\n{}{}",
        remote_write(&single),
        remote_write(&clustered)
    );
    let prometheus = Prometheus::start(&config, port);

    // Prometheus' own series arrive in the single-node store and in tenant 0:0, each with the label its
    // token forces on writes.
    let selector = r#"prometheus_build_info{job="prometheus"}"#;
    for store in [&vm, &cluster.tenants["0:0"]] {
        let series = store.wait_some_series(selector);
        assert_eq!(series.len(), 1, "{series:?}");
        assert_eq!(series[0]["writer"], "prometheus", "{series:?}");
    }
    cluster.tenants["0:1"].flush();
    assert!(cluster.tenants["0:1"].series(ALL).is_empty());

    // And they can be read back through each gateway with the client's own token, whose `writer` label
    // restricts its reads to exactly these series.
    let token = idp.client_credentials_token("prometheus", "prometheus-secret");
    for gate in [&single, &clustered] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v: Value = http_client()
                .get(format!("{}/api/v1/query", gate.url))
                .query(&[("query", selector)])
                .bearer_auth(&token)
                .send()
                .unwrap()
                .json()
                .unwrap();
            let result = v["data"]["result"].as_array().unwrap();
            if result.len() == 1 {
                assert_eq!(result[0]["metric"]["writer"], "prometheus");
                break;
            }
            assert!(Instant::now() < deadline, "{}: {v}", gate.url);
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(gate.metric(r#"tenantgate_requests_total{route="write",code="204"}"#) > 0.0);
    }
    drop(prometheus);
}
