//! Attacks on the border between tenants, each checked on what VictoriaMetrics actually returned or
//! stored: forged and odd tokens, tokens in the wrong place, duplicate headers, oversized and non-UTF-8
//! headers, smuggled arguments in every spelling, and `match[]` in body and URL at once.

mod common;

use std::collections::BTreeSet;

use aws_lc_rs::hmac;
use common::*;

struct Scene {
    vm: Victoria,
    gate: Gate,
    signer: Signer,
}

fn scene() -> Scene {
    let vm = Victoria::start();
    let signer = Signer::rsa();
    let gate = Gate::start_secured(&signer, &read_write(&vm.url));
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", vm.url))
        .body(import_lines(&[
            (r#"h_metric{team="dev"}"#, 1.0),
            (r#"h_metric{team="admin"}"#, 2.0),
        ]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    vm.wait_series("h_metric", 2);
    Scene { vm, gate, signer }
}

fn teams_seen(text: &str) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    v["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| r["metric"]["team"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn odd_and_forged_tokens_are_refused() {
    let s = scene();
    let t = now();
    let h = r#"{"alg":"RS256","typ":"JWT"}"#;
    let admin_access = r#""vm_access":{}"#;
    let rsa_public_pem = s.signer.public_pem();
    let hs_with_public_key = {
        let input = format!(
            "{}.{}",
            b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64url(format!(r#"{{"exp":{},{admin_access}}}"#, t + 600).as_bytes())
        );
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, rsa_public_pem.as_bytes()),
            input.as_bytes(),
        );
        format!("{input}.{}", b64url(tag.as_ref()))
    };
    let other = Signer::rsa();
    let tokens: Vec<(&str, String)> = vec![
        ("hmac with the rsa public key", hs_with_public_key),
        ("kid of another key", other.sign_raw(r#"{"alg":"RS256","kid":"idp-key-1"}"#, &format!(r#"{{"exp":{},{admin_access}}}"#, t + 600))),
        ("expired by one second", s.signer.sign_raw(h, &format!(r#"{{"exp":{},{admin_access}}}"#, t - 1))),
        ("nbf in the future", s.signer.sign_raw(h, &format!(r#"{{"exp":{},"nbf":{},{admin_access}}}"#, t + 600, t + 120))),
        ("exp as string", s.signer.sign_raw(h, &format!(r#"{{"exp":"{}",{admin_access}}}"#, t + 600))),
        ("duplicated vm_access", s.signer.sign_raw(h, &format!(r#"{{"exp":{},"vm_access":{{"extra_labels":{{"team":"dev"}}}},{admin_access}}}"#, t + 600))),
        ("duplicated label", s.signer.sign_raw(h, &format!(r#"{{"exp":{},"vm_access":{{"extra_labels":{{"team":"dev","team":"admin"}}}}}}"#, t + 600))),
        ("huge", format!("{}.{}.{}", b64url(h.as_bytes()), "A".repeat(20_000), "B")),
        ("broken base64", format!("{}.!!!.{}", b64url(h.as_bytes()), "sig")),
        ("mode out of range", s.signer.sign_raw(h, &format!(r#"{{"exp":{},"vm_access":{{"mode":7}}}}"#, t + 600))),
    ];
    for (name, token) in &tokens {
        let r = http_client()
            .get(format!("{}/api/v1/query?query=h_metric", s.gate.url))
            .bearer_auth(token)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let text = body_text(r);
        assert_eq!(status, 401, "{name}: {text}");
        assert!(teams_seen(&text).is_empty(), "{name}: data leaked");
    }
    // A float exp is a valid NumericDate.
    let float = s.signer.sign_raw(
        h,
        &format!(
            r#"{{"exp":{}.5,"vm_access":{{"extra_labels":{{"team":"dev"}}}}}}"#,
            t + 600
        ),
    );
    let r = http_client()
        .get(format!("{}/api/v1/query?query=h_metric", s.gate.url))
        .bearer_auth(&float)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(teams_seen(&body_text(r)), ["dev".to_string()].into());
}

#[test]
fn tokens_in_the_wrong_place_and_duplicate_headers_are_refused() {
    let s = scene();
    let admin = s.signer.token("{}");
    let dev = s.signer.token(r#"{"extra_labels":{"team":"dev"}}"#);
    let client = http_client();
    // Query string and cookie are not token carriers.
    for r in [
        client
            .get(format!(
                "{}/api/v1/query?query=h_metric&access_token={admin}",
                s.gate.url
            ))
            .send()
            .unwrap(),
        client
            .get(format!("{}/api/v1/query?query=h_metric", s.gate.url))
            .header("cookie", format!("token={admin}"))
            .send()
            .unwrap(),
    ] {
        assert_eq!(r.status(), 401);
    }
    // Two Authorization headers: which one would a backend believe? Neither.
    let request = format!(
        "GET /api/v1/query?query=h_metric HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {dev}\r\nAuthorization: Bearer {admin}\r\nConnection: close\r\n\r\n"
    );
    let (status, text) = raw_request(&s.gate.url, request.as_bytes());
    assert_eq!(status, 401, "{text}");
    // Invalid UTF-8 in headers and in the query.
    let mut request = format!("GET /api/v1/query?query=h_metric HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {dev}\r\nX-Odd: ").into_bytes();
    request.extend_from_slice(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']);
    let (status, text) = raw_request(&s.gate.url, &request);
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        teams_seen(text.split("\r\n\r\n").nth(1).unwrap_or("")),
        ["dev".to_string()].into()
    );
    let mut request = b"GET /api/v1/query?query=h_metric&extra_label=team%3D".to_vec();
    request.extend_from_slice(&[0xff]);
    request.extend_from_slice(
        format!(" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {dev}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let (status, text) = raw_request(&s.gate.url, &request);
    assert!(status == 400 || status == 200, "{text}");
    if status == 200 {
        assert_eq!(
            teams_seen(text.split("\r\n\r\n").nth(1).unwrap_or("")),
            ["dev".to_string()].into()
        );
    }
    // Oversized headers are refused by the HTTP layer, not buffered without bound.
    let request = format!(
        "GET /api/v1/query?query=h_metric HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {dev}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(200_000)
    );
    let (status, _) = raw_request(&s.gate.url, request.as_bytes());
    assert!(
        status == 431 || status == 400 || status == 0,
        "status {status}"
    );
    // Still serving.
    let r = client
        .get(format!("{}/api/v1/query?query=h_metric", s.gate.url))
        .bearer_auth(&dev)
        .send()
        .unwrap();
    assert_eq!(teams_seen(&body_text(r)), ["dev".to_string()].into());
}

#[test]
fn smuggled_arguments_in_every_spelling_and_place() {
    let s = scene();
    let dev = s.signer.token(r#"{"extra_labels":{"team":"dev"}}"#);
    let widen = "%7Bteam%3D%22admin%22%7D";
    let names = [
        "extra_filters[]",
        "extra_filters%5B%5D",
        "extra_filters%5b%5d",
        "extra_filters",
        "extra%5Ffilters%5B%5D",
        "%65xtra_filters[]",
        "EXTRA_FILTERS[]",
        "Extra_Filters%5B%5D",
        "extra%255Ffilters%255B%255D",
        "extra_filters[]+",
        "+extra_filters[]",
    ];
    let client = http_client();
    for name in names {
        for (how, url, body) in [
            (
                "url",
                format!("{}/api/v1/query?query=h_metric&{name}={widen}", s.gate.url),
                None,
            ),
            (
                "url with ;",
                format!("{}/api/v1/query?query=h_metric;{name}={widen}", s.gate.url),
                None,
            ),
            (
                "repeated",
                format!(
                    "{}/api/v1/query?query=h_metric&{name}={widen}&{name}={widen}",
                    s.gate.url
                ),
                None,
            ),
            (
                "body",
                format!("{}/api/v1/query", s.gate.url),
                Some(format!("query=h_metric&{name}={widen}")),
            ),
            (
                "url and body",
                format!("{}/api/v1/query?{name}={widen}", s.gate.url),
                Some(format!("query=h_metric&{name}={widen}")),
            ),
        ] {
            let r = match body {
                None => client.get(&url).bearer_auth(&dev).send().unwrap(),
                Some(b) => client
                    .post(&url)
                    .bearer_auth(&dev)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(b)
                    .send()
                    .unwrap(),
            };
            let status = r.status().as_u16();
            let text = body_text(r);
            if status == 200 {
                let teams = teams_seen(&text);
                assert!(
                    teams.is_subset(&["dev".to_string()].into()),
                    "{name} in {how}: saw {teams:?}"
                );
            } else {
                // Dropping a `;`-joined pair can take the query with it: an error, never data.
                assert!((400..500).contains(&status), "{name} in {how}: {text}");
                assert!(teams_seen(&text).is_empty());
            }
        }
    }
    // A body on a GET is read and stripped too.
    let r = client
        .get(format!("{}/api/v1/query?query=h_metric", s.gate.url))
        .bearer_auth(&dev)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("extra_filters%5B%5D={widen}"))
        .send()
        .unwrap();
    assert_eq!(teams_seen(&body_text(r)), ["dev".to_string()].into());
    // match[] in body and URL together still only sees the token's team.
    let r = client
        .post(format!(
            "{}/api/v1/series?match[]=h_metric&start=0",
            s.gate.url
        ))
        .bearer_auth(&dev)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("match%5B%5D=%7Bteam%3D%22admin%22%7D")
        .send()
        .unwrap();
    let v: serde_json::Value = r.json().unwrap();
    let teams: BTreeSet<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["team"].as_str().unwrap())
        .collect();
    assert_eq!(teams, ["dev"].into());
    assert_eq!(s.vm.series("h_metric").len(), 2);
}
