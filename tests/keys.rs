//! Keys from a real identity provider (npm oidc-provider, `tests/support/idp.mjs`): OpenID Connect
//! discovery and JWKS endpoints, rotation without restarts, the provider down at start-up and later, the
//! rate limit on unknown-`kid` refreshes, the optional issuer/audience/clock-skew checks, and vmgateway's
//! documented command lines. Every test runs its own IdP, VictoriaMetrics and tenantgate on 127.0.0.1 and
//! uses short refresh intervals, so the whole file takes seconds, not minutes.

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::idp::*;
use common::*;

/// `GET /api/v1/labels` through the gateway with `token`: status, `Retry-After`, body.
fn labels(gate: &Gate, token: &str) -> (u16, Option<String>, String) {
    let r = http_client()
        .get(format!("{}/api/v1/labels", gate.url))
        .bearer_auth(token)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry_after, body_text(r))
}

fn assert_labels(gate: &Gate, token: &str, want: u16) -> String {
    let (status, _, body) = labels(gate, token);
    assert_eq!(
        status,
        want,
        "body: {body}\ngateway log:\n{}",
        gate.proc.log_text()
    );
    body
}

/// A token signed by `signer` whose header names `kid`.
fn token_with_kid(signer: &Signer, kid: &str) -> String {
    signer.sign_raw(
        &format!(r#"{{"alg":"{}","typ":"JWT","kid":"{kid}"}}"#, signer.alg()),
        &format!(r#"{{"exp":{},"vm_access":{{}}}}"#, now() + 600),
    )
}

/// The `kid` in a JWT's header.
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

fn source_metric(family: &str, source: &str) -> String {
    format!("{family}{{source=\"{source}\"}}")
}

fn health(gate: &Gate) -> (u16, String) {
    let r = http_client()
        .get(format!("{}/health", gate.url))
        .send()
        .unwrap();
    (r.status().as_u16(), body_text(r))
}

fn backend_args(vm: &Victoria) -> Vec<String> {
    with(vec!["-enable.auth".into()], &read_write(&vm.url))
}

/// A backend nobody listens on: for tests whose requests must never get past authentication.
fn no_backend_args() -> Vec<String> {
    vec!["-enable.auth".into(), "-read.url=http://127.0.0.1:1".into()]
}

fn with(mut args: Vec<String>, more: &[String]) -> Vec<String> {
    args.extend_from_slice(more);
    args
}

#[test]
fn idp_tokens_are_accepted_via_discovery_and_via_jwks_url() {
    let dir = tempdir();
    let idp = Idp::start(dir.path(), "keys.json");
    let vm = Victoria::start();
    let pem_signer = Signer::ec();
    let pem = pem_signer.write_public_pem(dir.path(), "extra.pem");
    // The issuer URL alone: tenantgate appends /.well-known/openid-configuration itself.
    let by_discovery = Gate::start(&with(
        backend_args(&vm),
        &[format!("-auth.oidcDiscoveryEndpoints={}", idp.issuer)],
    ));
    // A JWKS URL combined with a PEM key file.
    let by_jwks = Gate::start(&with(
        backend_args(&vm),
        &[
            format!("-auth.jwksEndpoints={}", idp.jwks_url()),
            format!("-auth.publicKeyFiles={}", pem.display()),
        ],
    ));
    let rs = idp.client_credentials_token("vmagent", "s3cret");
    let es = idp.client_credentials_token("es-agent", "s3cret");
    for gate in [&by_discovery, &by_jwks] {
        let body = assert_labels(gate, &rs, 200);
        assert!(body.contains(r#""status":"success""#), "{body}");
        assert_labels(gate, &es, 200);
    }
    assert_labels(&by_jwks, &pem_signer.token("{}"), 200);
    assert_labels(&by_discovery, &pem_signer.token("{}"), 401);

    let log = by_discovery.proc.log_text();
    assert!(
        log.contains("using 2 keys for JWT token signature verification"),
        "{log}"
    );
    assert!(log.contains(&idp.issuer), "{log}");
    let log = by_jwks.proc.log_text();
    assert!(
        log.contains("using 3 keys for JWT token signature verification"),
        "{log}"
    );

    let source = idp.issuer.as_str();
    let metric = |f| by_discovery.metric(&source_metric(f, source));
    assert_eq!(metric("tenantgate_keys_loaded"), 2.0);
    assert_eq!(metric("tenantgate_key_refreshes_total"), 1.0);
    assert_eq!(metric("tenantgate_key_refresh_failures_total"), 0.0);
    let last = metric("tenantgate_key_last_success_timestamp_seconds");
    assert!((last - now() as f64).abs() < 60.0, "{last}");
    let jwks = idp.jwks_url();
    assert_eq!(
        by_jwks.metric(&source_metric("tenantgate_keys_loaded", &jwks)),
        2.0
    );
    assert_eq!(
        by_jwks.metric(&source_metric(
            "tenantgate_keys_loaded",
            &pem.display().to_string()
        )),
        1.0
    );
}

#[test]
fn token_signed_by_a_key_the_idp_never_published_gets_401() {
    let dir = tempdir();
    let idp = Idp::start(dir.path(), "keys.json");
    let gate = Gate::start(&with(
        no_backend_args(),
        &[format!(
            "-auth.oidcDiscoveryEndpoints={}",
            idp.discovery_url()
        )],
    ));
    let real_kid = kid_of(&idp.client_credentials_token("vmagent", "s3cret"));
    let forger = Signer::rsa();
    let started = Instant::now();
    let (status, _, body) = labels(&gate, &token_with_kid(&forger, "never-published"));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unknown kid"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after one refresh round, not a timeout"
    );
    // The IdP's own kid on a forged signature, and no kid at all: checked against the IdP's keys, refused.
    let (status, _, body) = labels(&gate, &token_with_kid(&forger, &real_kid));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("signature is invalid"), "{body}");
    let (status, _, body) = labels(&gate, &forger.token("{}"));
    assert_eq!(status, 401, "{body}");
}

#[test]
fn rotated_keys_are_followed_without_restarting_the_gateway() {
    let dir = tempdir();
    let mut old_idp = Idp::start(dir.path(), "keys-old.json");
    let vm = Victoria::start();
    // A PEM key beside the IdP: kid-less keys are tried for every token, and must not hide the unknown
    // kid that makes the gateway look again (with a long refresh interval, nothing else would).
    let pem = Signer::rsa().write_public_pem(dir.path(), "local.pem");
    let gate = Gate::start(&with(
        backend_args(&vm),
        &[
            format!("-auth.publicKeyFiles={}", pem.display()),
            format!("-auth.oidcDiscoveryEndpoints={}", old_idp.discovery_url()),
            "-auth.keysRefreshInterval=1h".into(),
            "-auth.minRefreshInterval=1s".into(),
        ],
    ));
    let gate_started = Instant::now();
    let old = old_idp.client_credentials_token("vmagent", "s3cret");
    assert_labels(&gate, &old, 200);

    // The provider restarts on the same address with brand-new keys.
    old_idp.stop();
    let new_idp = Idp::start_with(dir.path(), old_idp.port, "", "keys-new.json");
    let new = new_idp.client_credentials_token("vmagent", "s3cret");
    let new_es = new_idp.client_credentials_token("es-agent", "s3cret");
    assert_ne!(kid_of(&old), kid_of(&new));
    // The rate limit must allow a fetch by now (the IdP restart alone takes longer, but be sure).
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(gate_started.elapsed()));

    // The very first request with the new key is accepted: it waits for the refresh it triggers.
    assert_labels(&gate, &new, 200);
    assert_labels(&gate, &new_es, 200);
    // The withdrawn key's token (cached as verified a moment ago) no longer works.
    let body = assert_labels(&gate, &old, 401);
    assert!(body.contains("unknown kid"), "{body}");

    let source = source_metric("tenantgate_key_refreshes_total", &old_idp.discovery_url());
    let refreshes = gate.metric(&source);
    let fetches = old_idp.jwks_fetches() + new_idp.jwks_fetches();
    assert_eq!(old_idp.jwks_fetches(), 1);
    assert!(new_idp.jwks_fetches() >= 1);
    assert_eq!(refreshes, fetches as f64);
    let log = gate.proc.log_text();
    assert_eq!(
        log.matches("using 3 keys for JWT token signature verification")
            .count(),
        2,
        "one line at start-up, one after the rotation:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn idp_down_at_start_means_503_until_it_comes_up() {
    let dir = tempdir();
    let vm = Victoria::start();
    let port = free_port();
    let started = Instant::now();
    let gate = Gate::start_expecting(
        &with(
            backend_args(&vm),
            &[
                format!("-auth.oidcDiscoveryEndpoints=http://127.0.0.1:{port}/.well-known/openid-configuration"),
                // Also caps the retry backoff, so the test does not wait for 0.5 s doubling.
                "-auth.keysRefreshInterval=1s".into(),
            ],
        ),
        503,
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "listening must not wait for the IdP: took {:?}",
        started.elapsed()
    );
    let (status, body) = health(&gate);
    assert_eq!(status, 503);
    assert!(body.contains("no token verification keys"), "{body}");

    // Any token, even a valid-looking one, is answered 503 + Retry-After: senders keep their samples.
    let someone = Signer::rsa();
    let (status, retry_after, body) = labels(&gate, &token_with_kid(&someone, "k"));
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(body.contains(r#""errorType":"unavailable""#), "{body}");
    let source = format!("http://127.0.0.1:{port}/.well-known/openid-configuration");
    eventually(Duration::from_secs(10), "a counted failure", || {
        gate.metric(&source_metric(
            "tenantgate_key_refresh_failures_total",
            &source,
        )) >= 1.0
    });
    assert_eq!(
        gate.metric(&source_metric("tenantgate_keys_loaded", &source)),
        0.0
    );
    assert_eq!(
        gate.metric(&source_metric(
            "tenantgate_key_last_success_timestamp_seconds",
            &source
        )),
        0.0
    );

    let idp = Idp::start_with(dir.path(), port, "", "keys.json");
    wait_http(
        &format!("{}/health", gate.url),
        200,
        &gate.proc,
        Duration::from_secs(10),
    );
    assert_labels(
        &gate,
        &idp.client_credentials_token("vmagent", "s3cret"),
        200,
    );
    let log = gate.proc.log_text();
    assert!(
        log.contains("using 2 keys for JWT token signature verification"),
        "{log}"
    );
}

#[test]
fn idp_down_later_keeps_the_last_keys_working() {
    let dir = tempdir();
    let mut idp = Idp::start(dir.path(), "keys.json");
    let vm = Victoria::start();
    let gate = Gate::start(&with(
        backend_args(&vm),
        &[
            format!("-auth.jwksEndpoints={}", idp.jwks_url()),
            "-auth.keysRefreshInterval=1s".into(),
            // No verified-token cache: every request below is verified with the keys in force.
            "-auth.tokenCacheSize=0".into(),
        ],
    ));
    let seen = idp.client_credentials_token("vmagent", "s3cret");
    let unseen = idp.client_credentials_token("es-agent", "s3cret");
    assert_labels(&gate, &seen, 200);
    let source = idp.jwks_url();
    // Routine refreshes that bring the same keys replace nothing (the token cache survives them).
    eventually(Duration::from_secs(10), "three refreshes", || {
        gate.metric(&source_metric("tenantgate_key_refreshes_total", &source)) >= 3.0
    });
    let log = gate.proc.log_text();
    assert_eq!(log.matches("using 2 keys for JWT").count(), 1, "{log}");

    idp.stop();
    eventually(Duration::from_secs(15), "two failed refreshes", || {
        gate.metric(&source_metric(
            "tenantgate_key_refresh_failures_total",
            &source,
        )) >= 2.0
    });
    assert_labels(&gate, &seen, 200);
    assert_labels(&gate, &unseen, 200);
    assert_eq!(health(&gate).0, 200);
    assert_eq!(
        gate.metric(&source_metric("tenantgate_keys_loaded", &source)),
        2.0
    );
    let log = gate.proc.log_text();
    assert!(log.contains("keeping the 2 keys fetched before"), "{log}");
}

#[test]
fn a_flood_of_random_kids_causes_a_bounded_number_of_fetches() {
    const MIN_INTERVAL: f64 = 1.0;
    let dir = tempdir();
    let idp = Idp::start(dir.path(), "keys.json");
    let gate = Gate::start(&with(
        no_backend_args(),
        &[
            format!("-auth.jwksEndpoints={}", idp.jwks_url()),
            "-auth.keysRefreshInterval=1h".into(),
            format!("-auth.minRefreshInterval={MIN_INTERVAL}s"),
        ],
    ));
    // Past the rate limit of the start-up fetch, so the flood can cause (a bounded number of) fetches.
    std::thread::sleep(Duration::from_secs_f64(MIN_INTERVAL + 0.1));
    let forger = Signer::ec();
    let flood_started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let (gate, forger) = (&gate, &forger);
            scope.spawn(move || {
                let client = http_client();
                for i in 0..50 {
                    let token = token_with_kid(forger, &format!("random-{thread}-{i}-{}", now()));
                    let r = client
                        .get(format!("{}/api/v1/labels", gate.url))
                        .bearer_auth(token)
                        .send()
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 401);
                }
            });
        }
    });
    let flood = flood_started.elapsed().as_secs_f64();
    let refreshes = gate.metric(&source_metric(
        "tenantgate_key_refreshes_total",
        &idp.jwks_url(),
    )) as usize;
    let fetches = idp.jwks_fetches();
    assert_eq!(
        refreshes, fetches,
        "the gateway's count and the IdP's agree"
    );
    let during_flood = fetches - 1; // one at start-up
    let bound = 1 + (flood / MIN_INTERVAL).floor() as usize;
    assert!(
        (1..=bound).contains(&during_flood),
        "200 unknown kids in {flood:.2}s caused {during_flood} fetches; want 1..={bound}"
    );
}

#[test]
fn issuer_audience_and_clock_skew_are_checked_on_idp_tokens() {
    let dir = tempdir();
    let idp = Idp::start(dir.path(), "keys.json");
    let vm = Victoria::start();
    let discovery = format!("-auth.oidcDiscoveryEndpoints={}", idp.discovery_url());
    let short = idp.client_credentials_token("short", "s3cret");
    let fresh = idp.client_credentials_token("vmagent", "s3cret");
    let strict_and_lenient = Gate::start(&with(
        backend_args(&vm),
        &[
            discovery.clone(),
            format!("-auth.issuers=http://elsewhere,{}", idp.issuer),
            "-auth.audiences=urn:tenantgate".into(),
            "-auth.clockSkew=1m".into(),
        ],
    ));
    let wrong_issuer = Gate::start(&with(
        backend_args(&vm),
        &[discovery.clone(), "-auth.issuers=http://elsewhere".into()],
    ));
    let wrong_audience = Gate::start(&with(
        backend_args(&vm),
        &[discovery, "-auth.audiences=urn:someone-else".into()],
    ));
    // `short` lives one second.
    std::thread::sleep(Duration::from_millis(2100));

    assert_labels(&strict_and_lenient, &fresh, 200);
    assert_labels(&strict_and_lenient, &short, 200);
    let body = assert_labels(&wrong_issuer, &fresh, 401);
    assert!(body.contains("issuer"), "{body}");
    let body = assert_labels(&wrong_audience, &fresh, 401);
    assert!(body.contains("audience"), "{body}");
    let body = assert_labels(&wrong_audience, &short, 401);
    assert!(body.contains("expired"), "{body}");
}

#[test]
fn documented_vmgateway_command_lines_start_and_serve() {
    const CLUSTER_LINE: &str = "-licenseFile=/opt/vm-license.key -license.forceOffline=true -enable.auth=true -clusterMode=true
-write.url=http://vminsert:8480 -read.url=http://vmselect:8481 -httpListenAddr=0.0.0.0:8431
-auth.oidcDiscoveryEndpoints=http://keycloak:8080/realms/master/.well-known/openid-configuration";
    const SINGLE_LINE: &str = "-licenseFile=/opt/vm-license.key -enable.auth=true -write.url=http://vmsingle:8429 -read.url=http://vmsingle:8429
-httpListenAddr=0.0.0.0:8431 -auth.oidcDiscoveryEndpoints=http://keycloak:8080/realms/master/.well-known/openid-configuration";

    let dir = tempdir();
    // Keycloak's URL layout: the issuer is http://host/realms/master.
    let idp = Idp::start_with(dir.path(), 0, "/realms/master", "keys.json");
    let vm = Victoria::start();
    let cluster = Cluster::start(&["0:0"]);
    let token = idp.client_credentials_token("vmagent", "s3cret");
    for line in [CLUSTER_LINE, SINGLE_LINE] {
        let port = free_port();
        let line = line
            .replace(
                "http://keycloak:8080",
                &format!("http://127.0.0.1:{}", idp.port),
            )
            .replace("http://vminsert:8480", &cluster.insert_url)
            .replace("http://vmselect:8481", &cluster.select_url)
            .replace("http://vmsingle:8429", &vm.url)
            .replace("0.0.0.0:8431", &format!("127.0.0.1:{port}"));
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        let gate = Gate::start_at(port, &args, 200);
        let body = assert_labels(&gate, &token, 200);
        assert!(body.contains(r#""status":"success""#), "{body}");
        let log = gate.proc.log_text();
        assert!(
            log.contains("using 2 keys for JWT token signature verification"),
            "{log}"
        );
    }
}

#[test]
fn keys_over_https_are_trusted_through_the_ca_file_flag() {
    let dir = tempdir();
    let idp = Idp::start(dir.path(), "keys.json");
    let vm = Victoria::start();
    test_ca(dir.path());
    // nginx terminates TLS in front of the IdP's JWKS.
    let tls_port = free_port();
    let d = dir.path().display().to_string();
    // Declared before the gateways, so dropped after them; stopped with SIGTERM even on a panic.
    let _nginx = nginx(
        dir.path(),
        &format!(
            "server {{\n listen 127.0.0.1:{tls_port} ssl;\n ssl_certificate {d}/server.pem;\n ssl_certificate_key {d}/server.key;\n location / {{ proxy_pass http://127.0.0.1:{}; }}\n}}\n",
            idp.port
        ),
    );
    let jwks = format!("https://127.0.0.1:{tls_port}/jwks");
    eventually(Duration::from_secs(10), "nginx listening", || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
    });

    let trusted = Gate::start(&with(
        backend_args(&vm),
        &[
            format!("-auth.jwksEndpoints={jwks}"),
            format!("-auth.tlsCAFile={d}/ca.pem"),
        ],
    ));
    assert_labels(
        &trusted,
        &idp.client_credentials_token("vmagent", "s3cret"),
        200,
    );

    // Without the CA file the certificate is not trusted (only the public roots are): no keys, 503.
    let untrusted = Gate::start_expecting(
        &with(backend_args(&vm), &[format!("-auth.jwksEndpoints={jwks}")]),
        503,
    );
    let log = untrusted.proc.log_text();
    assert!(log.contains("certificate"), "{log}");
    assert!(
        untrusted.metric(&source_metric(
            "tenantgate_key_refresh_failures_total",
            &jwks
        )) >= 1.0
    );
}
