//! Every grants file in the documentation loads, and its examples mean what the text says.

use serde_json::json;
use tenantgate::auth::grants::Grants;

/// The grants guide.
const DOC: &str = include_str!("../docs/grants.md");

fn files() -> Vec<Grants> {
    let mut out = Vec::new();
    for block in DOC.split("```yaml\n").skip(1) {
        let yaml = block.split("```").next().unwrap_or_default();
        match Grants::parse(yaml) {
            Ok(g) => out.push(g),
            Err(e) => panic!("{e}\n{yaml}"),
        }
    }
    out
}

#[test]
fn documented_files_load_and_work() {
    let files = files();
    assert_eq!(files.len(), 5);
    let tenant = |g: &Grants, v| g.resolve(&v).map(|a| a.tenant.to_string());
    let kc = "https://sso.example.com/realms/acme";

    // The introduction's file.
    let intro = &files[0];
    let a = intro
        .resolve(&json!({"iss": kc, "email": "ann@example.com", "email_verified": true}))
        .unwrap();
    assert_eq!(a.extra_filters, [r#"{owner="ann@example.com"}"#]);
    assert!(intro
        .resolve(&json!({"iss": kc, "email": "ann@example.com", "email_verified": false}))
        .is_err());

    // Google: hd decides, not the email's domain.
    let google = &files[1];
    let base = json!({"iss": "https://accounts.google.com", "aud": "123456789012-abcdefg.apps.googleusercontent.com",
        "email_verified": true, "email": "carol@example.com"});
    let mut workspace = base.clone();
    workspace["hd"] = json!("example.com");
    assert_eq!(tenant(google, workspace.clone()).unwrap(), "0:1");
    workspace["email"] = json!("alice@example.com");
    assert_eq!(tenant(google, workspace).unwrap(), "0:0");
    assert!(
        google.resolve(&base).is_err(),
        "a personal account with an @example.com address"
    );

    // Azure: roles, group ids, then everyone in the directory by oid; another directory gets nothing.
    let azure = &files[2];
    let tid = "11111111-2222-3333-4444-555555555555";
    let iss = format!("https://login.microsoftonline.com/{tid}/v2.0");
    assert_eq!(
        tenant(
            azure,
            json!({"iss": iss, "tid": tid, "roles": ["Metrics.Admin"]})
        )
        .unwrap(),
        "0:0"
    );
    assert_eq!(
        tenant(
            azure,
            json!({"iss": iss, "tid": tid, "groups": ["6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e"]})
        )
        .unwrap(),
        "1:0"
    );
    let overage = json!({"iss": iss, "tid": tid, "oid": "u-1", "_claim_names": {"groups": "src1"}});
    let a = azure.resolve(&overage).unwrap();
    assert_eq!(a.extra_labels, [("owner".to_string(), "u-1".to_string())]);
    assert!(azure
        .resolve(&json!({"iss": iss, "tid": "other", "oid": "u"}))
        .is_err());

    // Okta and Keycloak.
    let okta = &files[3];
    let iss = "https://example.okta.com/oauth2/default";
    assert_eq!(
        tenant(
            okta,
            json!({"iss": iss, "aud": "api://default", "groups": ["Everyone", "metrics-team-dev"]})
        )
        .unwrap(),
        "1:0"
    );
    let keycloak = &files[4];
    assert_eq!(
        tenant(
            keycloak,
            json!({"iss": kc, "realm_access": {"roles": ["metrics-admin"]}})
        )
        .unwrap(),
        "0:0"
    );
    assert_eq!(
        tenant(
            keycloak,
            json!({"iss": kc, "resource_access": {"tenantgate": {"roles": ["writer"]}}})
        )
        .unwrap(),
        "0:1"
    );
    assert_eq!(
        tenant(keycloak, json!({"iss": kc, "groups": ["/teams/dev"]})).unwrap(),
        "0:1"
    );
    assert!(keycloak
        .resolve(&json!({"iss": kc, "groups": ["/teams/dev2"]}))
        .is_err());
}
