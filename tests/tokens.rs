//! Every kind of bad token gets 401 with a challenge and reaches no backend; raw path tricks are refused.

mod common;

use common::*;

#[test]
fn bad_tokens_get_401_and_reach_no_backend() {
    let vm = Victoria::start();
    let signer = Signer::rsa();
    let stranger = Signer::rsa();
    let gate = Gate::start_secured(&signer, &read_write(&vm.url));
    let header = r#"{"alg":"RS256","typ":"JWT"}"#;
    let good_access = r#""vm_access":{"extra_labels":{"team":"dev"}}"#;
    let t = now();
    let valid_payload = format!(r#"{{"exp":{},{good_access}}}"#, t + 600);
    let forged = {
        let token = signer.sign_raw(header, &valid_payload);
        let parts: Vec<&str> = token.split('.').collect();
        let payload = b64url(format!(r#"{{"exp":{},"vm_access":{{}}}}"#, t + 600).as_bytes());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "missing"),
        ("garbage", Some("Bearer not-a-token".into()), "malformed"),
        (
            "not bearer",
            Some(format!("Basic {}", signer.sign_raw(header, &valid_payload))),
            "malformed",
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                signer.sign_raw(header, &format!(r#"{{"exp":{},{good_access}}}"#, t - 1))
            )),
            "expired",
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                signer.sign_raw(
                    header,
                    &format!(r#"{{"exp":{},"nbf":{},{good_access}}}"#, t + 600, t + 300)
                )
            )),
            "not_yet_valid",
        ),
        (
            "wrong key",
            Some(format!(
                "Bearer {}",
                stranger.sign_raw(header, &valid_payload)
            )),
            "bad_signature",
        ),
        (
            "forged payload",
            Some(format!("Bearer {forged}")),
            "bad_signature",
        ),
        (
            "alg none",
            Some(format!(
                "Bearer {}.{}.",
                b64url(br#"{"alg":"none","typ":"JWT"}"#),
                b64url(valid_payload.as_bytes())
            )),
            "algorithm",
        ),
        (
            "no vm_access",
            Some(format!(
                "Bearer {}",
                signer.sign_raw(header, &format!(r#"{{"exp":{}}}"#, t + 600))
            )),
            "missing_claim",
        ),
    ];
    let client = http_client();
    for (name, auth, reason) in &cases {
        let before = gate.metric(&format!(
            "tenantgate_auth_rejections_total{{reason=\"{reason}\"}}"
        ));
        let mut req = client
            .post(format!("{}/api/v1/import/prometheus", gate.url))
            .body(import_lines(&[(&format!(r#"leak{{case="{name}"}}"#), 1.0)]));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().unwrap();
        assert_eq!(r.status(), 401, "{name}");
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\"",
            "{name}"
        );
        let body = body_text(r);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["errorType"], "unauthorized");
        if let Some(a) = auth {
            let token = a.split(' ').nth(1).unwrap();
            assert!(!body.contains(token), "{name}: the answer echoes the token");
            assert!(
                !gate.proc.log_text().contains(token),
                "{name}: the log has the token"
            );
        }
        let after = gate.metric(&format!(
            "tenantgate_auth_rejections_total{{reason=\"{reason}\"}}"
        ));
        assert_eq!(after, before + 1.0, "{name}: reason {reason} not counted");
    }
    // The same tokens on reads.
    let r = client
        .get(format!("{}/api/v1/query?query=up", gate.url))
        .header("authorization", cases[3].1.as_ref().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(body_text(r).contains("token expired"));
    // A good write afterwards proves ordering: nothing refused reached VictoriaMetrics.
    let r = client
        .post(format!("{}/api/v1/import/prometheus", gate.url))
        .bearer_auth(signer.sign_raw(header, &valid_payload))
        .body(import_lines(&[(r#"leak{case="good"}"#, 1.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let stored = vm.wait_series("leak", 1);
    assert_eq!(stored[0]["case"], "good");
}

#[test]
fn raw_path_tricks_are_refused_before_any_backend() {
    let vm = Victoria::start();
    let gate = Gate::start(&read_write(&vm.url));
    for (target, want) in [
        ("/api/v1/../admin/tsdb/delete_series?match[]=x", 400),
        ("/api/v1/%2e%2e/admin/tsdb/delete_series?match[]=x", 400),
        (
            "/prometheus/../select/0:0/prometheus/api/v1/query?query=1",
            400,
        ),
        ("/api/v1%2fquery?query=1", 400),
        ("//api/v1/query?query=1", 400),
        ("/api/v1/./query?query=1", 400),
        ("/api/v1/query\\..?query=1", 400),
        (
            "/delete/0:0/prometheus/api/v1/admin/tsdb/delete_series",
            403,
        ),
        ("/select/0:1/prometheus/api/v1/query?query=1", 403),
        ("http://evil.example/api/v1/admin/tsdb/delete_series", 403),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (status, text) = raw_request(&gate.url, request.as_bytes());
        assert_eq!(status, want, "{target}: {text}");
        assert!(text.contains("\"status\":\"error\""), "{target}: {text}");
    }
    // The gateway is alive and VictoriaMetrics still answers through it.
    let r = http_client()
        .get(format!("{}/api/v1/query?query=1", gate.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}
