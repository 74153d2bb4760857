//! Micro-benchmarks of what every request does: signature verification per algorithm (the cache-miss
//! cost), a verified-token cache hit, claim parsing, route classification, and the query-string and
//! form-body rewrites. `cargo bench --bench hot_path` (add `-- --quick` for a short run). The load
//! benchmark of the whole gateway is `bench/run`.

#[path = "../bench/signing.rs"]
mod signing;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use signing::{now, payload, SigningKey};
use tenantgate::auth::claims::parse_claims;
use tenantgate::auth::jwt::{self, VerifyOptions};
use tenantgate::auth::keys::{keys_from_pem, Alg, KeySet};
use tenantgate::auth::{AuthSettings, Authenticator};
use tenantgate::rewrite::{self, GrantArgs, Topology};
use tenantgate::route::{self, Route};

fn verify_options() -> VerifyOptions {
    VerifyOptions {
        check_signature: true,
        ..Default::default()
    }
}

fn key_set(key: &SigningKey) -> KeySet {
    KeySet::new(
        keys_from_pem(key.public_pem().as_bytes(), "bench").unwrap(),
        1,
    )
}

/// The cache-miss cost: `jwt::verify` (split, decode, signature, claims, checks) and the signature alone.
fn signatures(c: &mut Criterion) {
    let exp = now() + 3600;
    let mut group = c.benchmark_group("verify");
    for alg in ["RS256", "ES256", "EdDSA"] {
        let key = SigningKey::generate(alg);
        let keys = key_set(&key);
        let token = key.sign(&payload(exp, None));
        let options = verify_options();
        let t = now() as f64;
        assert!(jwt::verify(&token, &keys, &options, t).is_ok());
        group.bench_function(format!("jwt/{alg}"), |b| {
            b.iter(|| jwt::verify(black_box(&token), &keys, &options, t).unwrap())
        });
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let sig = base64_decode(sig);
        let alg = Alg::from_name(alg).unwrap();
        let key = &keys.keys()[0];
        assert!(key.verify(alg, signed.as_bytes(), &sig));
        group.bench_function(format!("signature/{}", alg.name()), |b| {
            b.iter(|| key.verify(alg, black_box(signed.as_bytes()), black_box(&sig)))
        });
    }
    group.finish();
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

/// A request whose token is already verified: header lookup, cache lookup, generation and time checks.
fn cache_hit(c: &mut Criterion) {
    let key = SigningKey::generate("RS256");
    let settings = AuthSettings {
        header: http::header::AUTHORIZATION,
        allow_without_prefix: false,
        verify: verify_options(),
        cache_size: 100_000,
        log_invalid: false,
        remote_keys: false,
        grants: None,
        grants_override: false,
        introspection: None,
        id_token_header: None,
    };
    let auth = Authenticator::new(settings, key_set(&key), true);
    let mut headers = HeaderMap::new();
    let token = key.sign(&payload(now() + 3600, None));
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    auth.authenticate(&headers).unwrap();
    c.bench_function("auth/cache_hit_rs256", |b| {
        b.iter(|| auth.authenticate(black_box(&headers)).unwrap())
    });
}

fn claims(c: &mut Criterion) {
    let plain = payload(now() + 3600, None);
    // What Keycloak issues: many standard claims around vm_access, which must be skipped.
    let keycloak = format!(
        r#"{{"exp":{},"iat":1700000000,"jti":"6b1c2c9e-1f3a-4a55-9a0e-3b7c1d2e4f50","iss":"https://idp.example/realms/master","aud":["account","vm"],"sub":"0f6c9b1e-2a4d-4e8f-b3c5-7d9e1f2a3b4c","typ":"Bearer","azp":"grafana","session_state":"a1b2c3","acr":"1","realm_access":{{"roles":["offline_access","uma_authorization"]}},"resource_access":{{"account":{{"roles":["manage-account","view-profile"]}}}},"scope":"openid email profile","email_verified":true,"preferred_username":"dev-user","vm_access":{{"tenant_id":{{"account_id":1,"project_id":5}},"extra_labels":{{"team":"dev","project":"mobile"}},"extra_filters":["{{env=~\"prod|dev\"}}"],"mode":1}}}}"#,
        now() + 3600
    );
    let string_claim = format!(
        r#"{{"exp":{},"vm_access":"{{\"extra_labels\":{{\"team\":\"dev\"}}}}"}}"#,
        now() + 3600
    );
    let mut group = c.benchmark_group("claims");
    for (name, p) in [
        ("minimal", &plain),
        ("keycloak", &keycloak),
        ("string_vm_access", &string_claim),
    ] {
        assert!(
            parse_claims(p.as_bytes()).unwrap().access.is_some(),
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| parse_claims(black_box(p.as_bytes())).unwrap())
        });
    }
    group.finish();
}

fn routes(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for (name, method, path) in [
        ("query", Method::GET, "/api/v1/query"),
        (
            "prometheus_query_range",
            Method::POST,
            "/prometheus/api/v1/query_range",
        ),
        ("label_values", Method::GET, "/api/v1/label/job/values"),
        ("write", Method::POST, "/api/v1/write"),
        ("influx_write", Method::POST, "/influx/write"),
    ] {
        assert!(!matches!(
            route::classify(&method, path),
            Err(_) | Ok(Route::Health)
        ));
        group.bench_function(name, |b| {
            b.iter(|| route::classify(black_box(&method), black_box(path)).unwrap())
        });
    }
    group.finish();
}

fn rewrites(c: &mut Criterion) {
    let key = SigningKey::generate("EdDSA");
    let token = key.sign(&payload(now() + 3600, None));
    let verified = jwt::verify(&token, &key_set(&key), &verify_options(), now() as f64).unwrap();
    let grant = GrantArgs::new(&verified.access.expect("a vm_access claim"));
    let Ok(Route::Api(route::ApiCall { api, .. })) = route::classify(&Method::GET, "/api/v1/query")
    else {
        panic!("query is a read")
    };
    let query =
        "query=sum%28rate%28http_requests_total%7Bjob%3D%22api%22%7D%5B5m%5D%29%29&time=1700000000";
    let smuggled = "query=up&extra_label=team%3Dadmin&extra_filters%5B%5D=%7B%7D&time=1700000000";
    let mut group = c.benchmark_group("rewrite");
    for (name, q) in [("query", query), ("query_smuggled", smuggled)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                rewrite::upstream_target(
                    Topology::Single,
                    false,
                    "",
                    api,
                    black_box("/api/v1/query"),
                    Some(black_box(q)),
                    &grant,
                )
            })
        });
    }
    let form = b"query=sum%28rate%28http_requests_total%7Bjob%3D%22api%22%7D%5B5m%5D%29%29&start=1699996400&end=1700000000&step=15";
    group.bench_function("form_body", |b| {
        b.iter(|| rewrite::strip_form_body(black_box(form)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, signatures, cache_hit, claims, routes, rewrites);
criterion_main!(benches);
