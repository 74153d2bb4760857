//! tenantgate in cluster mode in front of the cluster stand-in (real nginx mapping `/insert/<tenant>` and
//! `/select/<tenant>` to one real VictoriaMetrics per tenant): writes land in the token's tenant, reads see
//! only that tenant, tenant headers from clients are ignored.

mod common;

use common::*;

#[test]
fn writes_land_in_the_token_tenant_and_reads_see_only_it() {
    let cluster = Cluster::start(&["0:0", "0:1"]);
    let signer = Signer::ec();
    let dir = tempdir();
    let key = signer.write_public_pem(dir.path(), "idp.pem");
    let gate = Gate::start(&[
        "-enable.auth=true".into(),
        "-clusterMode=true".into(),
        format!("-write.url={}", cluster.insert_url),
        format!("-read.url={}", cluster.select_url),
        format!("-auth.publicKeyFiles={}", key.display()),
    ]);
    let t00 = signer.token(r#"{"tenant_id":{"account_id":0,"project_id":0}}"#);
    let t01 = signer
        .token(r#"{"tenant_id":{"account_id":0,"project_id":1},"extra_labels":{"team":"dev"}}"#);
    let client = http_client();

    // Each token writes one series; the client also tries to pick the other tenant with headers.
    for (token, series, header_tenant) in [
        (&t00, r#"cl_metric{who="a"}"#, "1"),
        (&t01, r#"cl_metric{who="b",team="admin"}"#, "0"),
    ] {
        let r = client
            .post(format!("{}/api/v1/import/prometheus", gate.url))
            .bearer_auth(token)
            .header("AccountID", "0")
            .header("ProjectID", header_tenant)
            .header("X-Scope-OrgID", format!("0:{header_tenant}"))
            .body(import_lines(&[(series, 1.0)]))
            .send()
            .unwrap();
        assert_eq!(r.status(), 204, "{}", body_text(r));
    }
    let in00 = cluster.tenants["0:0"].wait_series("cl_metric", 1);
    let in01 = cluster.tenants["0:1"].wait_series("cl_metric", 1);
    assert_eq!(in00[0]["who"], "a");
    assert_eq!(in01[0]["who"], "b");
    assert_eq!(
        in01[0]["team"], "dev",
        "the token's extra_label overrides the sender's"
    );

    // Reads through the gateway see only the token's tenant.
    for (token, want) in [(&t00, "a"), (&t01, "b")] {
        let v: serde_json::Value = client
            .get(format!("{}/api/v1/query?query=cl_metric", gate.url))
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let result = v["data"]["result"].as_array().unwrap();
        assert_eq!(result.len(), 1, "{v}");
        assert_eq!(result[0]["metric"]["who"], want);
    }
    // The /prometheus prefix and series API map into the tenant too.
    let v: serde_json::Value = client
        .get(format!(
            "{}/prometheus/api/v1/series?match[]=cl_metric&start=0",
            gate.url
        ))
        .bearer_auth(&t01)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["who"], "b");

    // A tenant with no data sees none, even of a tenant that has some.
    let t02 = signer.token(r#"{"tenant_id":{"account_id":0,"project_id":2}}"#);
    let v: serde_json::Value = client
        .get(format!("{}/api/v1/query?query=cl_metric", gate.url))
        .bearer_auth(&t02)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["data"]["result"], serde_json::json!([]), "{v}");

    // Naming a tenant in the path is refused.
    let r = client
        .get(format!(
            "{}/select/0:0/prometheus/api/v1/query?query=cl_metric",
            gate.url
        ))
        .bearer_auth(&t01)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .post(format!(
            "{}/insert/0:0/prometheus/api/v1/import/prometheus",
            gate.url
        ))
        .bearer_auth(&t01)
        .body(import_lines(&[(r#"cl_metric{who="escape"}"#, 1.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    cluster.tenants["0:0"].flush();
    assert_eq!(cluster.tenants["0:0"].series("cl_metric").len(), 1);
    cluster.unknown.flush();
    assert!(
        cluster.unknown.series(r#"{__name__=~".+"}"#).is_empty(),
        "nothing went to another tenant"
    );
}

/// The stand-in answers as the real cluster does where a gateway depends on it (REFERENCE §6), so a
/// gateway that sent reads to vminsert or writes to vmselect would fail the tests above.
#[test]
fn the_stand_in_answers_as_vminsert_and_vmselect_do() {
    let cluster = Cluster::start(&["0:0"]);
    let client = http_client();
    let get = |url: String| {
        let r = client.get(&url).send().unwrap();
        (r.status().as_u16(), body_text(r))
    };
    let (ins, sel) = (&cluster.insert_url, &cluster.select_url);
    // A read on the insert side, a write on the select side: refused.
    let (st, text) = get(format!("{ins}/insert/0:0/prometheus/api/v1/query?query=1"));
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("unsupported path"), "{text}");
    let r = client
        .post(format!(
            "{sel}/select/0:0/prometheus/api/v1/import/prometheus"
        ))
        .body(import_lines(&[("standin_write", 1.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    // Unknown tenants: empty reads and accepted writes, into the unknown-tenants store.
    let (st, text) = get(format!("{sel}/select/7:7/prometheus/api/v1/query?query=1"));
    assert_eq!(st, 200, "{text}");
    let r = client
        .post(format!(
            "{ins}/insert/7:7/prometheus/api/v1/import/prometheus"
        ))
        .body(import_lines(&[("standin_unknown", 1.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    cluster.unknown.wait_series("standin_unknown", 1);
    // Bad tenants, tenant-less and admin paths.
    for path in [
        "/select/1:2:3/prometheus/api/v1/query?query=1",
        "/select/-1:0/prometheus/api/v1/labels",
        "/select/multitenant/prometheus/api/v1/labels",
        "/select/prometheus/api/v1/labels",
        "/admin/tenants",
    ] {
        let (st, text) = get(format!("{sel}{path}"));
        assert_eq!(st, 400, "{path}: {text}");
    }
    let (st, text) = get(format!(
        "{sel}/select/0:0/prometheus/api/v1/status/buildinfo"
    ));
    assert_eq!((st, text.contains("2.24.0")), (200, true), "{text}");
    // Reads and writes of a known tenant reach its store.
    let r = client
        .post(format!(
            "{ins}/insert/0:0/prometheus/api/v1/import/prometheus"
        ))
        .body(import_lines(&[("standin_known", 1.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    cluster.tenants["0:0"].wait_series("standin_known", 1);
    let (st, text) = get(format!(
        "{sel}/select/0:0/prometheus/api/v1/series?match[]=standin_known"
    ));
    assert_eq!(st, 200);
    assert!(text.contains("standin_known"), "{text}");
}
