//! Tests of rules and alerts filtering, on answers captured from a real Prometheus 2.42 (`testdata/`,
//! rules in the comment below) and on hand-made edge cases.
//!
//! The captured rules: group `dev-group` (recording `dev:up:sum` and alerting `DevAlert`, both labelled
//! `team: dev`), group `shared` (alerting `SharedAlert` (pending) and `SharedFiring` without labels, each
//! with one `team="dev"` and one `team="ops"` alert; recording `job:thing:sum` without labels), group
//! `ops-group` (alerting `OpsAlert` labelled `team: ops`).

use serde_json::Value;

use super::*;
use crate::promql::tests::grant;

const RULES: &str = include_str!("testdata/rules.json");
const ALERTS: &str = include_str!("testdata/alerts.json");

fn filtered(body: &str, kind: Kind, e: &Enforcement) -> Value {
    let out = filter_rules(body.as_bytes(), kind, e).unwrap();
    serde_json::from_slice(&out).unwrap()
}

/// A rule as `(name, state, [its alerts' team labels])`.
type RuleSummary = (String, String, Vec<String>);

/// Each group as `(name, rules)`.
fn summary(v: &Value) -> Vec<(String, Vec<RuleSummary>)> {
    v["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let rules = g["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let teams = r["alerts"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|x| x["labels"]["team"].as_str().unwrap_or("").to_string())
                                .collect()
                        })
                        .unwrap_or_default();
                    (
                        r["name"].as_str().unwrap().to_string(),
                        r["state"].as_str().unwrap_or("").to_string(),
                        teams,
                    )
                })
                .collect();
            (g["name"].as_str().unwrap().to_string(), rules)
        })
        .collect()
}

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn rules_for_team_dev() {
    let v = filtered(RULES, Kind::Rules, &grant(&[("team", "dev")], &[]));
    assert_eq!(
        summary(&v),
        vec![
            (
                s("dev-group"),
                vec![
                    (s("dev:up:sum"), s(""), vec![]),
                    (s("DevAlert"), s("firing"), vec![s("dev")])
                ]
            ),
            (
                s("shared"),
                vec![
                    (s("SharedAlert"), s("pending"), vec![s("dev")]),
                    (s("SharedFiring"), s("firing"), vec![s("dev")]),
                ]
            ),
        ]
    );
}

#[test]
fn rules_for_team_ops() {
    let v = filtered(RULES, Kind::Rules, &grant(&[("team", "ops")], &[]));
    let names: Vec<_> = summary(&v).into_iter().map(|(g, r)| (g, r.len())).collect();
    assert_eq!(names, vec![(s("ops-group"), 1), (s("shared"), 2)]);
}

#[test]
fn untouched_parts_keep_their_bytes_and_order() {
    let e = grant(&[("team", "dev")], &[]);
    let out = String::from_utf8(filter_rules(RULES.as_bytes(), Kind::Rules, &e).unwrap()).unwrap();
    // The owned group is copied through byte for byte.
    let dev_group_start = RULES.find(r#"{"name":"dev-group""#).unwrap();
    let dev_group_end = RULES.find(r#",{"name":"ops-group""#).unwrap();
    assert!(out.contains(&RULES[dev_group_start..dev_group_end]));
    assert!(out.starts_with(r#"{"status":"success","data":{"groups":[{"name":"dev-group""#));
    // Shared rules keep their field order, with only alerts and state changed.
    let shared: Value = serde_json::from_str(&out).unwrap();
    let rule = &shared["data"]["groups"][1]["rules"][0];
    let original: Value = serde_json::from_str(RULES).unwrap();
    let original_rule = &original["data"]["groups"][2]["rules"][0];
    for key in [
        "name",
        "query",
        "duration",
        "labels",
        "annotations",
        "health",
        "type",
        "lastEvaluation",
    ] {
        assert_eq!(rule[key], original_rule[key], "{key}");
    }
    let rule_text = &out[out
        .find(r#"{"state":"pending","name":"SharedAlert""#)
        .unwrap()..];
    assert!(rule_text.starts_with(r#"{"state":"pending","name":"SharedAlert","query":"#));
}

#[test]
fn unfiltered_when_unrestricted() {
    let out = filter_rules(RULES.as_bytes(), Kind::Rules, &Enforcement::default()).unwrap();
    let a: Value = serde_json::from_slice(&out).unwrap();
    let b: Value = serde_json::from_str(RULES).unwrap();
    assert_eq!(a, b);
}

#[test]
fn alerts_for_team_dev() {
    let v = filtered(ALERTS, Kind::Alerts, &grant(&[("team", "dev")], &[]));
    let names: Vec<&str> = v["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["alertname"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["DevAlert", "SharedAlert", "SharedFiring"]);
    for a in v["data"]["alerts"].as_array().unwrap() {
        assert_eq!(a["labels"]["team"], "dev");
    }
}

#[test]
fn alerts_with_a_filter() {
    // `{severity="page"}`: only DevAlert has it; a missing label is the empty string, as in PromQL.
    let v = filtered(ALERTS, Kind::Alerts, &grant(&[], &[r#"{severity="page"}"#]));
    assert_eq!(v["data"]["alerts"].as_array().unwrap().len(), 1);
    let v = filtered(ALERTS, Kind::Alerts, &grant(&[], &[r#"{team!="ops"}"#]));
    assert_eq!(v["data"]["alerts"].as_array().unwrap().len(), 3);
    let v = filtered(
        ALERTS,
        Kind::Alerts,
        &grant(&[], &[r#"{alertname=~"Shared.*",team=~"d.*"}"#]),
    );
    assert_eq!(v["data"]["alerts"].as_array().unwrap().len(), 2);
    // Alerts are the series ALERTS{...}: a metric-name filter that excludes ALERTS hides them all.
    let v = filtered(
        ALERTS,
        Kind::Alerts,
        &grant(&[], &[r#"{__name__=~"app_.*"}"#]),
    );
    assert_eq!(v["data"]["alerts"].as_array().unwrap().len(), 0);
    let v = filtered(
        ALERTS,
        Kind::Alerts,
        &grant(&[], &[r#"{__name__="ALERTS",alertstate="firing"}"#]),
    );
    assert_eq!(v["data"]["alerts"].as_array().unwrap().len(), 4);
}

#[test]
fn rules_with_a_filter_need_rule_labels_to_pin_it() {
    // `team!="ops"` matches rules without a team label, but their series could still be ops': a recording
    // rule must pin the label to be shown.
    let v = filtered(RULES, Kind::Rules, &grant(&[], &[r#"{team!="ops"}"#]));
    let rules: Vec<String> = summary(&v)
        .into_iter()
        .flat_map(|(_, r)| r.into_iter().map(|x| x.0))
        .collect();
    assert_eq!(
        rules,
        ["dev:up:sum", "DevAlert", "SharedAlert", "SharedFiring"]
    );
    // Recording rules are the series named after them.
    let v = filtered(
        RULES,
        Kind::Rules,
        &grant(&[("team", "dev")], &[r#"{__name__=~"dev:.*"}"#]),
    );
    let rules: Vec<String> = summary(&v)
        .into_iter()
        .flat_map(|(_, r)| r.into_iter().map(|x| x.0))
        .collect();
    assert_eq!(rules, ["dev:up:sum"]);
}

const SHARED_WITH_ERROR: &str = r#"{"status":"success","data":{"groups":[{"name":"g","rules":[
 {"state":"firing","name":"A","query":"x","labels":{},"alerts":[
   {"labels":{"alertname":"A","team":"ops"},"state":"firing"},
   {"labels":{"alertname":"A","team":"dev"},"state":"pending"}],
  "health":"err","lastError":"found duplicate series for the match group {team=\"ops\"}","type":"alerting"},
 {"state":"firing","name":"B","query":"x","labels":{"team":"dev"},"alerts":[],
  "health":"err","lastError":"own error","type":"alerting"},
 {"name":"R","query":"x","labels":{"team":"dev"},"lastError":"kept","type":"recording"},
 {"name":"U","type":"something-new","labels":{"team":"dev"}}
]}]},"warnings":["w"]}"#;

#[test]
fn shared_rules_lose_last_error_and_get_their_state_from_visible_alerts() {
    let out = filter_rules(
        SHARED_WITH_ERROR.as_bytes(),
        Kind::Rules,
        &grant(&[("team", "dev")], &[]),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let rules = v["data"]["groups"][0]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 3, "{v}");
    assert_eq!(rules[0]["name"], "A");
    assert_eq!(rules[0]["state"], "pending");
    assert_eq!(rules[0]["alerts"].as_array().unwrap().len(), 1);
    assert!(rules[0].get("lastError").is_none());
    assert_eq!(rules[0]["health"], "err");
    // An owned rule keeps everything, even with no alerts.
    assert_eq!(rules[1]["name"], "B");
    assert_eq!(rules[1]["lastError"], "own error");
    assert_eq!(rules[2]["lastError"], "kept");
    assert_eq!(v["warnings"][0], "w");
    assert!(!String::from_utf8(out).unwrap().contains("ops"));
}

#[test]
fn error_answers_pass_without_data() {
    let body = r#"{"status":"error","errorType":"internal","error":"boom","data":{"groups":[{"name":"secret"}]}}"#;
    let out = filter_rules(
        body.as_bytes(),
        Kind::Rules,
        &grant(&[("team", "dev")], &[]),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"status":"error","errorType":"internal","error":"boom"}"#
    );
}

#[test]
fn odd_shapes() {
    let e = grant(&[("team", "dev")], &[]);
    let ok = |body: &str, kind: Kind| {
        String::from_utf8(filter_rules(body.as_bytes(), kind, &e).unwrap()).unwrap()
    };
    assert_eq!(
        ok(
            r#"{"status":"success","data":{"groups":null}}"#,
            Kind::Rules
        ),
        r#"{"status":"success","data":{"groups":[]}}"#
    );
    assert_eq!(
        ok(r#"{"status":"success","data":{}}"#, Kind::Rules),
        r#"{"status":"success","data":{"groups":[]}}"#
    );
    assert_eq!(
        ok(r#"{"status":"success","data":{"alerts":[]}}"#, Kind::Alerts),
        r#"{"status":"success","data":{"alerts":[]}}"#
    );
    assert_eq!(
        ok(
            r#" {"status":"success","data":{"alerts":[{"labels":null}]}} "#,
            Kind::Alerts
        ),
        r#"{"status":"success","data":{"alerts":[]}}"#
    );
    let both = [
        "",
        "[]",
        "{",
        "\u{0}",
        r#"{"status":"success"}"#,
        r#"{"status":"success","data":[]}"#,
        r#"{"status":"success","status":"success","data":{}}"#,
        r#"{"status":7,"data":{}}"#,
        r#"{"status":"success","data":{"alerts":[]}} trailing"#,
    ];
    let rules_only = [
        r#"{"status":"success","data":{"groups":{}}}"#,
        r#"{"status":"success","data":{"groups":[{"rules":[{"type":"alerting","labels":{"team":1}}]}]}}"#,
        r#"{"status":"success","data":{"groups":[{"rules":[{"type":7}]}]}}"#,
        r#"{"status":"success","data":{"groups":[{"rules":[{"type":"alerting","alerts":[{"labels":{"a":"1","a":"2"}}]}]}]}}"#,
    ];
    let alerts_only = [
        r#"{"status":"success","data":{"alerts":[{"labels":{"team":"ops","team":"dev"}}]}}"#,
        r#"{"status":"success","data":{"alerts":[{"labels":{"team":"dev"},"state":1}]}}"#,
        r#"{"status":"success","data":{"alerts":{}}}"#,
    ];
    for bad in both {
        assert!(
            filter_rules(bad.as_bytes(), Kind::Rules, &e).is_err(),
            "{bad}"
        );
        assert!(
            filter_rules(bad.as_bytes(), Kind::Alerts, &e).is_err(),
            "{bad}"
        );
    }
    for bad in rules_only {
        assert!(
            filter_rules(bad.as_bytes(), Kind::Rules, &e).is_err(),
            "{bad}"
        );
        assert!(
            filter_rules(bad.as_bytes(), Kind::Alerts, &e).is_ok(),
            "{bad}"
        );
    }
    for bad in alerts_only {
        assert!(
            filter_rules(bad.as_bytes(), Kind::Alerts, &e).is_err(),
            "{bad}"
        );
        assert!(
            filter_rules(bad.as_bytes(), Kind::Rules, &e).is_ok(),
            "{bad}"
        );
    }
    assert!(filter_rules(b"\xff", Kind::Rules, &e).is_err());
}

#[test]
fn non_ascii_values_against_regex_filters_are_hidden_when_unsure() {
    // Rust's \w matches "é", Go's does not: when the engines may disagree, the alert is not shown.
    let body = r#"{"status":"success","data":{"alerts":[{"labels":{"team":"é"}},{"labels":{"team":"e"}}]}}"#;
    let v = filtered(body, Kind::Alerts, &grant(&[], &[r#"{team=~"\\w"}"#]));
    assert_eq!(v["data"]["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"]["alerts"][0]["labels"]["team"], "e");
}
