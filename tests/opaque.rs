//! Opaque access tokens (issue 17) against the real OpenID Connect provider (npm oidc-provider) issuing
//! opaque tokens and answering RFC 7662 introspection, and a real VictoriaMetrics: opaque client-credentials
//! tokens read and write only their grant; a real vmagent with OAuth2 client credentials writes through;
//! revoked tokens stop within the cache TTL; made-up tokens and concurrent requests cost few calls; a
//! provider outage keeps cached tokens working and answers new ones 503; `aud` is checked; forged JWTs
//! are refused on an introspecting gateway; Grafana's ID token (`X-ID-Token`) beside an opaque access
//! token gives the person's grant, and never replaces a JWT.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::idp::Idp;
use common::*;
use serde_json::{json, Value};

const GRAFANA_REDIRECT: &str = "http://127.0.0.1:3000/login/generic_oauth";

fn clients() -> Value {
    let opaque = "opaque";
    json!([
        { "client_id": "gateway", "client_secret": "gateway-secret", "grant_types": ["client_credentials"] },
        { "client_id": "agent", "client_secret": "agent-secret", "grant_types": ["client_credentials"],
          "token_format": opaque,
          "vm_access": { "tenant_id": { "account_id": 0, "project_id": 0 }, "extra_labels": { "team": "agents" } } },
        { "client_id": "reader", "client_secret": "reader-secret", "grant_types": ["client_credentials"],
          "token_format": opaque,
          "vm_access": { "tenant_id": { "account_id": 0, "project_id": 0 }, "extra_labels": { "team": "dev" }, "mode": 1 } },
        { "client_id": "ops-bot", "client_secret": "ops-secret", "grant_types": ["client_credentials"],
          "token_format": opaque },
        { "client_id": "jwt-agent", "client_secret": "jwt-secret", "grant_types": ["client_credentials"],
          "vm_access": { "tenant_id": { "account_id": 0, "project_id": 0 }, "extra_labels": { "team": "agents" } } },
        { "client_id": "grafana", "client_secret": "grafana-secret", "token_format": opaque,
          "grant_types": ["authorization_code", "refresh_token"], "redirect_uris": [GRAFANA_REDIRECT] },
        { "client_id": "other-app", "client_secret": "other-secret", "token_format": opaque,
          "grant_types": ["authorization_code"], "redirect_uris": [GRAFANA_REDIRECT] }
    ])
}

fn users() -> Value {
    json!({ "dev": { "password": "dev-password" }, "ops": { "password": "ops-password" } })
}

/// Grants by ordinary claims: `client_id` of an introspected client-credentials token (no `sub`), and
/// `sub` of a person's ID token.
const GRANTS: &str = r#"grants:
  - claims: {client_id: ops-bot}
    vm_access: {extra_labels: {team: ops}}
  - claims: {sub: dev}
    vm_access: {extra_labels: {team: dev}}
"#;

struct Scene {
    idp: Idp,
    vm: Victoria,
    dir: tempfile::TempDir,
}

fn scene() -> Scene {
    let dir = tempdir();
    let idp = Idp::start_scene(dir.path(), &clients(), &users());
    fs::write(dir.path().join("grants.yml"), GRANTS).unwrap();
    fs::write(dir.path().join("gateway.secret"), "gateway-secret\n").unwrap();
    Scene {
        idp,
        vm: Victoria::start(),
        dir,
    }
}

impl Scene {
    /// A gateway introspecting opaque tokens (endpoint from the discovery document), with `extra` flags.
    fn introspecting(&self, extra: &[&str]) -> Gate {
        self.introspecting_to(read_write(&self.vm.url), extra)
    }

    /// The same in front of other backends (`-read.url`, `-write.url` and the like in `backend`).
    fn introspecting_to(&self, backend: Vec<String>, extra: &[&str]) -> Gate {
        let mut args = vec![
            "-enable.auth".to_string(),
            format!("-auth.oidcDiscoveryEndpoints={}", self.idp.discovery_url()),
            "-auth.introspectionClientID=gateway".into(),
            format!(
                "-auth.introspectionClientSecretFile={}",
                self.dir.path().join("gateway.secret").display()
            ),
            "-auth.introspectionCacheTTL=3s".into(),
            format!(
                "-auth.grantsFile={}",
                self.dir.path().join("grants.yml").display()
            ),
            format!(
                "-auditLog={}",
                self.dir
                    .path()
                    .join(format!("audit-{}.log", now_nanos()))
                    .display()
            ),
        ];
        args.extend(backend);
        args.extend(extra.iter().map(|s| s.to_string()));
        Gate::start(&args)
    }

    fn token(&self, client: &str, secret: &str) -> String {
        let token = self.idp.client_credentials_token(client, secret);
        assert_eq!(token.split('.').count(), 1, "{client} gets an opaque token");
        token
    }
}

/// Introspection calls the IdP served so far.
fn introspection_calls(idp: &Idp) -> usize {
    idp.proc
        .log_text()
        .lines()
        .filter(|l| l.starts_with("idp request POST ") && l.ends_with("/token/introspection"))
        .count()
}

fn query(gate: &Gate, token: &str, q: &str) -> (u16, Value) {
    let r = http_client()
        .get(format!("{}/api/v1/query", gate.url))
        .query(&[("query", q)])
        .bearer_auth(token)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&body_text(r)).unwrap_or(Value::Null),
    )
}

fn write(gate: &Gate, token: &str, lines: String) -> u16 {
    http_client()
        .post(format!("{}/api/v1/import/prometheus", gate.url))
        .bearer_auth(token)
        .body(lines)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn teams(v: &Value) -> Vec<String> {
    let mut t: Vec<String> = v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| s["metric"]["team"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    t.sort();
    t
}

#[test]
fn opaque_tokens_read_and_write_only_their_grant() {
    let s = scene();
    let gate = s.introspecting(&[]);
    s.vm.import_text(import_lines(&[
        (r#"opq_metric{team="dev"}"#, 1.0),
        (r#"opq_metric{team="ops"}"#, 2.0),
        (r#"opq_metric{team="admin"}"#, 3.0),
    ]));
    s.vm.wait_series("opq_metric", 3);
    // A writer's labels are forced whatever it sends.
    let agent = s.token("agent", "agent-secret");
    assert_eq!(
        write(
            &gate,
            &agent,
            import_lines(&[(r#"opq_written{team="admin"}"#, 1.0)])
        ),
        204
    );
    let stored = s.vm.wait_series("opq_written", 1);
    assert_eq!(stored[0]["team"], "agents");
    // A read-only reader sees its team only, and may not write.
    let reader = s.token("reader", "reader-secret");
    let (status, v) = query(&gate, &reader, "opq_metric");
    assert_eq!((status, teams(&v)), (200, vec!["dev".to_string()]));
    assert_eq!(write(&gate, &reader, import_lines(&[("x", 1.0)])), 403);
    // A token without vm_access gets its grant from the grants file by client_id (no sub).
    let ops = s.token("ops-bot", "ops-secret");
    let (status, v) = query(&gate, &ops, "opq_metric");
    assert_eq!((status, teams(&v)), (200, vec!["ops".to_string()]));
    // A JWT is verified as before, without any introspection call.
    let before = introspection_calls(&s.idp);
    let jwt = s.idp.client_credentials_token("jwt-agent", "jwt-secret");
    assert_eq!(jwt.split('.').count(), 3);
    assert_eq!(write(&gate, &jwt, import_lines(&[("opq_jwt", 1.0)])), 204);
    assert_eq!(
        introspection_calls(&s.idp),
        before,
        "a JWT was introspected"
    );
    // Operators see how each request was accepted.
    assert!(gate.metric(r#"tenantgate_authenticated_requests_total{via="introspection"}"#) >= 4.0);
    assert!(gate.metric(r#"tenantgate_authenticated_requests_total{via="jwt"}"#) >= 1.0);
    assert!(gate.metric(r#"tenantgate_introspection_requests_total{result="active"}"#) >= 3.0);
    let audit = fs::read_dir(s.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("audit-"))
        .map(|e| fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(
        audit.contains(r#""client_id":"ops-bot","auth":"introspection""#),
        "{audit}"
    );
    // -checkGrants explains an opaque token too: it introspects it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantgate"))
        .arg(format!(
            "-auth.oidcDiscoveryEndpoints={}",
            s.idp.discovery_url()
        ))
        .arg("-auth.introspectionClientID=gateway")
        .arg(format!(
            "-auth.introspectionClientSecretFile={}",
            s.dir.path().join("gateway.secret").display()
        ))
        .arg(format!(
            "-checkGrants={}",
            s.dir.path().join("grants.yml").display()
        ))
        .arg(format!("-checkToken={ops}"))
        .arg(format!("-read.url={}", s.vm.url))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains("accepted via introspection"), "{report}");
    assert!(report.contains("team"), "{report}");
    // Secrets stay secret.
    assert!(!metrics_text(&gate.url).contains("gateway-secret"));
    assert!(!gate.proc.log_text().contains(&agent));
    // In front of a cluster (the stand-in), the introspected tenant picks the path: the agent's write
    // lands in tenant 0:0 with its label forced, the reader reads there, nothing reaches another tenant.
    let cluster = Cluster::start(&["0:0", "0:1"]);
    let gate = s.introspecting_to(
        vec![
            "-clusterMode".into(),
            format!("-read.url={}", cluster.select_url),
            format!("-write.url={}", cluster.insert_url),
        ],
        &[],
    );
    let lines = import_lines(&[(r#"opq_cluster{team="admin"}"#, 1.0)]);
    assert_eq!(write(&gate, &agent, lines), 204);
    let stored = cluster.tenants["0:0"].wait_series("opq_cluster", 1);
    assert_eq!(stored[0]["team"], "agents");
    cluster.tenants["0:0"].import_text(import_lines(&[(r#"opq_cluster{team="dev"}"#, 2.0)]));
    cluster.tenants["0:0"].wait_series("opq_cluster", 2);
    let (status, v) = query(&gate, &reader, "opq_cluster");
    assert_eq!((status, teams(&v)), (200, vec!["dev".to_string()]), "{v}");
    for other in [&cluster.tenants["0:1"], &cluster.unknown] {
        other.flush();
        assert!(other.series("opq_cluster").is_empty());
    }
    assert_eq!(write(&gate, &reader, import_lines(&[("x", 1.0)])), 403);
}

#[test]
fn revocation_floods_concurrency_and_outages() {
    let mut s = scene();
    let gate = s.introspecting(&[]);
    // Revoked at the provider: refused within the cache TTL (3 s).
    let agent = s.token("agent", "agent-secret");
    assert_eq!(write(&gate, &agent, import_lines(&[("rev_a", 1.0)])), 204);
    let r = http_client()
        .post(format!("{}/token/revocation", s.idp.issuer))
        .basic_auth("agent", Some("agent-secret"))
        .form(&[("token", agent.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let revoked = Instant::now();
    eventually(
        Duration::from_secs(6),
        "the revoked token is refused",
        || write(&gate, &agent, import_lines(&[("rev_b", 1.0)])) == 401,
    );
    assert!(revoked.elapsed() < Duration::from_secs(5));
    // A made-up token sent many times costs a few calls.
    let before = introspection_calls(&s.idp);
    for _ in 0..60 {
        assert_eq!(query(&gate, "made-up-token-1234", "1").0, 401);
    }
    let flood = introspection_calls(&s.idp) - before;
    assert!(flood <= 3, "{flood} introspections for one made-up token");
    // Many concurrent requests with one new token make one or two calls.
    let fresh = s.token("agent", "agent-secret");
    let before = introspection_calls(&s.idp);
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (url, token) = (gate.url.clone(), fresh.clone());
            std::thread::spawn(move || {
                http_client()
                    .get(format!("{url}/api/v1/query?query=1"))
                    .bearer_auth(token)
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let calls = introspection_calls(&s.idp) - before;
    assert!(
        (1..=2).contains(&calls),
        "{calls} introspections for 16 concurrent requests"
    );
    // The provider goes down: the cached token still works, a new one gets 503 with Retry-After (senders
    // retry), never 401, and /health stays 200.
    let unused = s.token("agent", "agent-secret");
    assert_eq!(query(&gate, &fresh, "1").0, 200);
    s.idp.stop();
    assert_eq!(
        query(&gate, &fresh, "1").0,
        200,
        "a cached token keeps working"
    );
    let r = http_client()
        .get(format!("{}/api/v1/query?query=1", gate.url))
        .bearer_auth(&unused)
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let health = http_client()
        .get(format!("{}/health", gate.url))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(gate.metric(r#"tenantgate_introspection_requests_total{result="error"}"#) >= 1.0);
    assert!(gate.proc.log_text().contains("token introspection failed"));
}

#[test]
fn audiences_forged_jwts_and_grafana_id_tokens() {
    let s = scene();
    // An introspected token whose aud is not in -auth.audiences is refused.
    let strict = s.introspecting(&["-auth.audiences=urn:somebody-else"]);
    let agent = s.token("agent", "agent-secret");
    assert_eq!(query(&strict, &agent, "1").0, 401);
    // A forged JWT (signed by a key the provider never published) is refused on an introspecting
    // gateway, and never introspected.
    let gate = s.introspecting(&[]);
    let forged = Signer::rsa().token(r#"{"tenant_id":{"account_id":0,"project_id":0}}"#);
    let before = introspection_calls(&s.idp);
    assert_eq!(query(&gate, &forged, "1").0, 401);
    assert_eq!(introspection_calls(&s.idp), before);

    // Grafana with "Forward OAuth identity": an opaque access token and the person's ID token.
    let id_gate = Gate::start(&[
        "-enable.auth".to_string(),
        format!("-auth.oidcDiscoveryEndpoints={}", s.idp.discovery_url()),
        "-auth.idTokenHeader=X-ID-Token".into(),
        "-auth.audiences=grafana".into(),
        format!(
            "-auth.grantsFile={}",
            s.dir.path().join("grants.yml").display()
        ),
        format!("-read.url={}", s.vm.url),
    ]);
    s.vm.import_text(import_lines(&[
        (r#"id_metric{team="dev"}"#, 1.0),
        (r#"id_metric{team="ops"}"#, 2.0),
    ]));
    s.vm.wait_series("id_metric", 2);
    let dev = s.idp.login(
        "grafana",
        "grafana-secret",
        GRAFANA_REDIRECT,
        "dev",
        "dev-password",
    );
    assert_eq!(
        dev.access_token.split('.').count(),
        1,
        "an opaque access token"
    );
    let with_id = |access: &str, id: &str| {
        let r = http_client()
            .get(format!("{}/api/v1/query", id_gate.url))
            .query(&[("query", "id_metric")])
            .bearer_auth(access)
            .header("X-ID-Token", id)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str::<Value>(&body_text(r)).unwrap_or(Value::Null),
        )
    };
    let (status, v) = with_id(&dev.access_token, &dev.id_token);
    assert_eq!((status, teams(&v)), (200, vec!["dev".to_string()]));
    assert!(id_gate.metric(r#"tenantgate_authenticated_requests_total{via="id_token"}"#) >= 1.0);
    // The ID token alone is no bearer token here (its aud is Grafana's, a JWT bearer token is checked as one).
    let r = http_client()
        .get(format!("{}/api/v1/query?query=1", id_gate.url))
        .header("X-ID-Token", &dev.id_token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // An ID token for another application, or a forged one, is refused.
    let other = s.idp.login(
        "other-app",
        "other-secret",
        GRAFANA_REDIRECT,
        "dev",
        "dev-password",
    );
    assert_eq!(with_id(&dev.access_token, &other.id_token).0, 401);
    let forged_id = Signer::rsa().token(r#"{}"#);
    assert_eq!(with_id(&dev.access_token, &forged_id).0, 401);
    let mut parts: Vec<String> = dev.id_token.split('.').map(String::from).collect();
    parts[1] = b64url(br#"{"sub":"ops","aud":"grafana","exp":9999999999}"#);
    assert_eq!(with_id(&dev.access_token, &parts.join(".")).0, 401);
    // A JWT in Authorization is never replaced by the ID token: this one (aud urn:tenantgate) fails
    // -auth.audiences=grafana, whatever X-ID-Token says.
    let jwt = s.idp.client_credentials_token("jwt-agent", "jwt-secret");
    assert_eq!(with_id(&jwt, &dev.id_token).0, 401);
}

#[test]
fn vmagent_and_prometheus_with_opaque_client_credentials_write_through() {
    let s = scene();
    let gate = s.introspecting(&[]);
    let secret = secret_file(s.dir.path(), "agent.secret", "agent-secret");
    let target = s.vm.url.trim_start_matches("http://");
    let agent = Vmagent::with_oauth2(
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vm\n    static_configs: [{{targets: ['{target}']}}]\n"
        ),
        &[RemoteWrite {
            url: format!("{}/api/v1/write", gate.url),
            client_id: "agent".into(),
            client_secret_file: secret,
            token_url: s.idp.token_url(),
        }],
    );
    // What vmagent scrapes arrives with the grant's team.
    let stored = s.vm.wait_some_series(r#"up{job="vm",team="agents"}"#);
    assert!(!stored.is_empty());
    assert_eq!(
        agent.metric_sum("vmagent_remotewrite_packets_dropped_total"),
        0.0
    );
    // Prometheus, with the same client: its own series arrive with the grant's team.
    let port = Prometheus::reserve_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    \
         static_configs: [{{targets: ['127.0.0.1:{port}']}}]\nremote_write:\n  - url: {}/api/v1/write\n    \
         oauth2:\n      client_id: agent\n      client_secret_file: {}\n      token_url: {}\n    \
         queue_config: {{batch_send_deadline: 1s}}\n",
        gate.url,
        s.dir.path().join("agent.secret").display(),
        s.idp.token_url()
    );
    let prometheus = Prometheus::start(&config, port);
    let series =
        s.vm.wait_some_series(r#"prometheus_build_info{job="prometheus"}"#);
    assert_eq!(series[0]["team"], "agents", "{series:?}");
    let failed: f64 = metrics_text(&prometheus.url)
        .lines()
        .filter(|l| l.starts_with("prometheus_remote_storage_samples_failed_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failed, 0.0);
    assert!(gate.metric(r#"tenantgate_authenticated_requests_total{via="introspection"}"#) >= 2.0);
}
