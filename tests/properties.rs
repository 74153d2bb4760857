//! Property tests on the pure core: for any client query or form body and any claim, what VictoriaMetrics
//! would read as restriction arguments is exactly what the claim grants, and the cluster path names exactly
//! the claim's tenant.

use proptest::prelude::*;
use tenantgate::auth::claims::{Access, Mode, Tenant};
use tenantgate::rewrite::{self, GrantArgs, Topology};
use tenantgate::route::{self, Route};

/// Decodes a query the way Go's `url.ParseQuery` (VictoriaMetrics) does, also accepting `;` as a
/// separator (older Go did), and returns the values of every restriction argument VictoriaMetrics reads.
fn restriction_args(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split(['&', ';'])
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            let name = decode(n);
            matches!(
                name.as_str(),
                "extra_label" | "extra_filters" | "extra_filters[]"
            )
            .then(|| (name.replace("[]", ""), decode(v)))
        })
        .collect()
}

fn granted(access: &Access) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = access
        .extra_labels
        .iter()
        .map(|(n, v)| ("extra_label".to_string(), format!("{n}={v}")))
        .collect();
    out.extend(
        access
            .extra_filters
            .iter()
            .map(|f| ("extra_filters".to_string(), f.clone())),
    );
    out
}

fn arg_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("query".to_string()),
        Just("match[]".to_string()),
        Just("extra_label".to_string()),
        Just("extra_filters".to_string()),
        Just("extra_filters[]".to_string()),
        Just("extra_filters%5B%5D".to_string()),
        Just("extra%5Flabel".to_string()),
        Just("%65xtra_filters".to_string()),
        Just("EXTRA_LABEL".to_string()),
        Just("extra%255Flabel".to_string()),
        "[a-z_%5B]{1,12}",
    ]
}

fn client_query() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            arg_name(),
            "[ -~]{0,12}",
            prop::sample::select(vec!["&", ";", "&&"]),
        ),
        0..8,
    )
    .prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(n, v, sep)| {
                let v: String =
                    percent_encoding::utf8_percent_encode(&v, percent_encoding::NON_ALPHANUMERIC)
                        .to_string();
                format!("{n}={v}{sep}")
            })
            .collect()
    })
}

fn access() -> impl Strategy<Value = Access> {
    (
        any::<u32>(),
        any::<u32>(),
        prop::collection::btree_map("[a-z_][a-z0-9_]{0,6}", "[ -~]{0,10}", 0..3),
        prop::collection::vec("\\{[a-z]{1,4}=\"[ -~]{0,6}\"\\}", 0..3),
    )
        .prop_map(|(account, project, labels, filters)| Access {
            tenant: Tenant { account, project },
            extra_labels: labels.into_iter().collect(),
            extra_filters: filters,
            mode: Mode {
                read: true,
                write: true,
            },
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn upstream_reads_carry_exactly_the_grant(query in client_query(), access in access(), cluster in any::<bool>()) {
        let path = "/prometheus/api/v1/query";
        let Ok(Route::Api(call)) = route::classify(&http::Method::GET, path) else { panic!("route") };
        let api = call.api;
        let grant = GrantArgs::new(&access);
        let topology = if cluster { Topology::Cluster } else { Topology::Single };
        let (target, _) = rewrite::upstream_target(topology, false, "", api, path, Some(&query), &grant);
        let (upstream_path, upstream_query) = target.split_once('?').unwrap_or((&target, ""));
        prop_assert_eq!(restriction_args(upstream_query), granted(&access));
        if cluster {
            let want = format!("/select/{}:{}/prometheus/api/v1/query", access.tenant.account, access.tenant.project);
            prop_assert_eq!(upstream_path, want);
        } else {
            prop_assert_eq!(upstream_path, path);
        }
    }

    #[test]
    fn upstream_writes_carry_exactly_the_grant_labels(query in client_query(), access in access()) {
        let path = "/api/v1/write";
        let Ok(Route::Api(call)) = route::classify(&http::Method::POST, path) else { panic!("route") };
        let api = call.api;
        let grant = GrantArgs::new(&access);
        let (target, _) = rewrite::upstream_target(Topology::Cluster, true, "", api, path, Some(&query), &grant);
        let (upstream_path, upstream_query) = target.split_once('?').unwrap_or((&target, ""));
        let want: Vec<_> = granted(&access).into_iter().filter(|(n, _)| n == "extra_label").collect();
        prop_assert_eq!(restriction_args(upstream_query), want);
        let want_path = format!("/insert/{}:{}/prometheus/api/v1/write", access.tenant.account, access.tenant.project);
        prop_assert_eq!(upstream_path, want_path);
    }

    #[test]
    fn form_bodies_keep_no_restriction_argument(body in client_query()) {
        let (stripped, _) = rewrite::strip_form_body(body.as_bytes()).unwrap();
        prop_assert!(restriction_args(&stripped).is_empty(), "{}", stripped);
    }

    #[test]
    fn routing_never_panics_and_refuses_tricks(path in "/[ -~]{0,40}") {
        if let Ok(route) = route::classify(&http::Method::GET, &path) {
            prop_assert!(!path.contains("/../") && !path.contains("//") && !path.to_ascii_lowercase().contains("%2f"));
            prop_assert!(!path.starts_with("/select/") && !path.starts_with("/insert/") && !path.starts_with("/delete/"));
            let _ = route;
        }
    }

    #[test]
    fn claims_parser_never_panics(payload in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = tenantgate::auth::claims::parse_claims(&payload);
    }
}
