//! Grants from ordinary claims (`-auth.grantsFile`), with real parts: people log in to the real OpenID
//! Connect provider, whose tokens carry `groups`, Keycloak-style `realm_access.roles` and `email` but no
//! `vm_access`, and each sees exactly the series of their grant in real VictoriaMetrics; a token no grant
//! matches gets 403 and nothing reaches VictoriaMetrics; a token with `vm_access` keeps it. Hostile claim
//! values (quotes, braces, regex metacharacters, newlines, long strings, 10,000-element arrays) neither
//! widen access nor slow the gateway. The file is re-read on SIGHUP and when it changes, and a broken file
//! keeps the grants in force. `-checkGrants` explains a token without starting the server.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::idp::Idp;
use common::*;
use serde_json::{json, Value};

const REDIRECT: &str = "http://127.0.0.1:3000/login/generic_oauth";

const GRANTS: &str = r#"grants:
  - claims:
      groups: "team-dev"
    vm_access:
      extra_labels: {team: dev}
      mode: 1
  - claims:
      realm_access.roles: "metrics-admin"
    vm_access:
      tenant_id: {account_id: 0, project_id: 0}
  - claims:
      email: '.+@example\.com'
    vm_access:
      extra_filters: ['{owner="{{email}}"}']
"#;

fn users() -> Value {
    json!({
        "dana": { "password": "pw", "extra_claims": { "groups": ["staff", "team-dev"] } },
        "adam": { "password": "pw", "extra_claims": { "realm_access": { "roles": ["offline_access", "metrics-admin"] } } },
        "olga": { "password": "pw", "extra_claims": { "email": "olga@example.com" } },
        "nemo": { "password": "pw", "extra_claims": { "groups": ["staff"], "email": "nemo@elsewhere.org" } },
        "vera": { "password": "pw", "vm_access": { "extra_labels": { "team": "ops" } },
                  "extra_claims": { "groups": ["team-dev"] } }
    })
}

/// The series every test reads: one per team and owner.
fn seed(vm: &Victoria) {
    let body = import_lines(&[
        (r#"gm{team="dev",owner="x"}"#, 1.0),
        (r#"gm{team="ops",owner="olga@example.com"}"#, 2.0),
        (r#"gm{team="admin",owner="y"}"#, 3.0),
        (r#"gm{team="dev",owner="olga@example.com"}"#, 4.0),
    ]);
    vm.import_text(body);
    vm.wait_series("gm", 4);
}

/// `(team, owner)` of every `gm` series a token sees through the gateway.
fn seen(gate: &Gate, token: &str) -> (u16, BTreeSet<(String, String)>) {
    let r = http_client()
        .get(format!("{}/api/v1/query?query=gm", gate.url))
        .bearer_auth(token)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = serde_json::from_str(&body_text(r)).unwrap_or(Value::Null);
    let set = v["data"]["result"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["metric"]["team"].as_str().unwrap_or("").to_string(),
                        s["metric"]["owner"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (status, set)
}

fn pair(team: &str, owner: &str) -> (String, String) {
    (team.to_string(), owner.to_string())
}

fn grants_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("grants.yml");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn people_get_the_grant_their_claims_match_and_nothing_else() {
    let vm = Victoria::start();
    seed(&vm);
    let dir = tempdir();
    let clients = json!([{ "client_id": "grafana", "client_secret": "s", "grant_types": ["authorization_code"], "redirect_uris": [REDIRECT] }]);
    let idp = Idp::start_scene(dir.path(), &clients, &users());
    let grants = grants_file(dir.path(), GRANTS);
    let gate = Gate::start(&[
        "-enable.auth".into(),
        format!("-auth.oidcDiscoveryEndpoints={}", idp.discovery_url()),
        format!("-auth.grantsFile={}", grants.display()),
        format!("-read.url={}", vm.url),
        format!("-write.url={}", vm.url),
    ]);
    let token = |user: &str| idp.login("grafana", "s", REDIRECT, user, "pw").access_token;
    let (dana, adam, olga, nemo, vera) = (
        token("dana"),
        token("adam"),
        token("olga"),
        token("nemo"),
        token("vera"),
    );
    assert!(
        jwt_payload(&dana).get("vm_access").is_none(),
        "the IdP issues no vm_access"
    );
    // groups: team-dev, read only.
    assert_eq!(
        seen(&gate, &dana),
        (
            200,
            [pair("dev", "x"), pair("dev", "olga@example.com")].into()
        )
    );
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", gate.url))
        .bearer_auth(&dana)
        .body(import_lines(&[("dana_write", 1.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "the grant is read only");
    // realm_access.roles: the whole tenant.
    assert_eq!(seen(&gate, &adam).1.len(), 4);
    // email: a filter on the owner label, filled from the claim.
    assert_eq!(
        seen(&gate, &olga),
        (
            200,
            [
                pair("ops", "olga@example.com"),
                pair("dev", "olga@example.com")
            ]
            .into()
        )
    );
    // No grant matches: 403 naming why, and nothing reaches VictoriaMetrics.
    let r = http_client()
        .get(format!("{}/api/v1/query?query=gm", gate.url))
        .bearer_auth(&nemo)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let text = body_text(r);
    assert!(
        text.contains("no vm_access claim and no grant of -auth.grantsFile matches"),
        "{text}"
    );
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", gate.url))
        .bearer_auth(&nemo)
        .body(import_lines(&[("nemo_write", 1.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    vm.flush();
    assert!(vm.series("nemo_write").is_empty() && vm.series("dana_write").is_empty());
    assert!(gate.metric(r#"tenantgate_auth_rejections_total{reason="no_grant"}"#) >= 2.0);
    // A token with vm_access keeps it, whatever its groups say.
    assert_eq!(
        seen(&gate, &vera),
        (200, [pair("ops", "olga@example.com")].into())
    );
}

#[test]
fn the_file_is_re_read_on_sighup_and_on_change_and_a_broken_one_keeps_the_grants() {
    let vm = Victoria::start();
    seed(&vm);
    let signer = Signer::rsa();
    let dir = tempdir();
    let grants = grants_file(
        dir.path(),
        "grants:\n  - claims: {groups: team-dev}\n    vm_access: {extra_labels: {team: dev}}\n",
    );
    let gate = Gate::start_secured(
        &signer,
        &[
            format!("-read.url={}", vm.url),
            format!("-auth.grantsFile={}", grants.display()),
        ],
    );
    let token = signer.sign_raw(
        r#"{"alg":"RS256","typ":"JWT"}"#,
        &format!(
            r#"{{"exp":{},"sub":"p","groups":["team-dev"]}}"#,
            now() + 600
        ),
    );
    assert_eq!(
        seen(&gate, &token).1,
        [pair("dev", "x"), pair("dev", "olga@example.com")].into()
    );
    // Changed on disk: picked up without a signal, and the cached grant goes with the old file.
    fs::write(
        &grants,
        "grants:\n  - claims: {groups: team-dev}\n    vm_access: {extra_labels: {team: admin}}\n",
    )
    .unwrap();
    eventually(Duration::from_secs(10), "the changed file", || {
        seen(&gate, &token).1 == [pair("admin", "y")].into()
    });
    // Broken: the grants in force stay, the failure is counted and logged with its line.
    fs::write(&grants, "grants:\n  - claim: {groups: team-dev}\n").unwrap();
    gate.proc.signal("HUP");
    eventually(Duration::from_secs(10), "the failed reload", || {
        gate.metric(r#"tenantgate_reloads_total{what="grants",result="failure"}"#) >= 1.0
    });
    assert_eq!(seen(&gate, &token).1, [pair("admin", "y")].into());
    assert!(
        gate.proc.log_text().contains("grants file line 2"),
        "{}",
        gate.proc.log_text()
    );
    // Fixed again and signalled.
    fs::write(
        &grants,
        "grants:\n  - claims: {groups: nobody}\n    vm_access: {}\n",
    )
    .unwrap();
    gate.proc.signal("HUP");
    eventually(Duration::from_secs(10), "the new file", || {
        seen(&gate, &token).0 == 403
    });
}

#[test]
fn hostile_claim_values_neither_widen_access_nor_slow_the_gateway() {
    let vm = Victoria::start();
    seed(&vm);
    let signer = Signer::rsa();
    let dir = tempdir();
    let grants = grants_file(
        dir.path(),
        r#"grants:
  - claims: {email: '.+'}
    vm_access:
      extra_labels: {owner: "{{email}}"}
      extra_filters: ['{owner="{{email}}"}', '{owner=~"{{email}}"}']
"#,
    );
    let gate = Gate::start_secured(
        &signer,
        &[
            format!("-read.url={}", vm.url),
            format!("-auth.grantsFile={}", grants.display()),
        ],
    );
    let hostile = [
        r#"x",owner=~".*"#.to_string(),
        r#"x"} or {__name__=~".+"#.to_string(),
        ".*".to_string(),
        "x\\\"|.*".to_string(),
        "a\nb".to_string(),
        "{}[](),;|&^$*+?".to_string(),
        // Tokens are at most 16 KiB (larger ones are refused before any claim is read): a value as long
        // as fits, and a long array beside it. The grants module's own tests take 10,000 elements.
        "x".repeat(6_000),
    ];
    for email in &hostile {
        let payload = json!({ "exp": now() + 600, "email": email, "groups": vec!["g"; 1_000] });
        let token = signer.sign_raw(r#"{"alg":"RS256","typ":"JWT"}"#, &payload.to_string());
        let started = Instant::now();
        let (status, set) = seen(&gate, &token);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?} for a hostile claim",
            started.elapsed()
        );
        assert!(
            set.is_empty(),
            "{email:?}: a hostile value saw {set:?} (status {status})"
        );
        assert!(status == 200 || status == 403, "{status}");
    }
    // The same grant with an honest value sees exactly its owner's series.
    let token = signer.sign_raw(
        r#"{"alg":"RS256","typ":"JWT"}"#,
        &json!({ "exp": now() + 600, "email": "olga@example.com" }).to_string(),
    );
    assert_eq!(
        seen(&gate, &token).1,
        [
            pair("ops", "olga@example.com"),
            pair("dev", "olga@example.com")
        ]
        .into()
    );
}

#[test]
fn check_grants_explains_a_token_without_starting_the_server() {
    let signer = Signer::rsa();
    let dir = tempdir();
    let key = signer.write_public_pem(dir.path(), "idp.pem");
    let grants = grants_file(dir.path(), GRANTS);
    let check_with = |token: &str, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tenantgate"))
            .arg(format!("-auth.publicKeyFiles={}", key.display()))
            .arg(format!("-checkGrants={}", grants.display()))
            .arg(format!("-checkToken={token}"))
            .args([
                "-clusterMode",
                "-read.url=http://vmselect:8481",
                "-write.url=http://vminsert:8480",
            ])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let check = |token: &str| check_with(token, &[]);
    let dev = signer.sign_raw(
        r#"{"alg":"RS256","typ":"JWT"}"#,
        &json!({ "exp": now() + 600, "sub": "dana", "groups": ["team-dev"] }).to_string(),
    );
    let (code, out) = check(&dev);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("grant at line 2: applies"), "{out}");
    assert!(
        out.contains("grant: tenant 0:0, extra_labels {team=\"dev\"}"),
        "{out}"
    );
    assert!(out.contains("a query: GET http://vmselect:8481/select/0:0/prometheus/api/v1/query?query=up&extra_label=team%3Ddev"), "{out}");
    assert!(!out.contains(&dev), "the token is never printed");
    // A gateway reading tokens from another header checks them just the same.
    let (code, out) = check_with(&dev, &["-auth.httpHeader=X-Token"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("grant at line 2: applies"), "{out}");
    let nobody = signer.sign_raw(
        r#"{"alg":"RS256","typ":"JWT"}"#,
        &json!({ "exp": now() + 600, "sub": "nemo", "groups": ["staff"] }).to_string(),
    );
    let (code, out) = check(&nobody);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("claim groups did not match") && out.contains("refused (403)"),
        "{out}"
    );
    let forged = Signer::rsa().sign_raw(
        r#"{"alg":"RS256","typ":"JWT"}"#,
        &json!({ "exp": now() + 600, "groups": ["team-dev"] }).to_string(),
    );
    let (code, out) = check(&forged);
    assert_eq!(code, Some(1));
    assert!(out.contains("refused (401)"), "{out}");
    assert!(
        out.contains("NOT verified"),
        "claims of a forged token are shown as unverified: {out}"
    );
    fs::write(
        &grants,
        "grants:\n  - claims: {groups: '('}\n    vm_access: {}\n",
    )
    .unwrap();
    let (code, out) = check(&dev);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("line 2"), "{out}");
}
