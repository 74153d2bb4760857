//! Properties of the grants file against an independent oracle: for random grant files and random
//! (often hostile) token payloads, resolution never panics, applies exactly the first grant whose
//! claims all match, and every filter it produces still tokenizes as a selector whose matchers are
//! the file's, with each inserted claim value reading back as itself.

use std::collections::BTreeMap;

use proptest::prelude::*;
use regex::Regex;
use serde_json::{json, Map, Value};
use tenantgate::auth::grants::{Grants, NoGrant};

const PATHS: &[&str] = &[
    "groups",
    "roles",
    "email",
    "realm_access.roles",
    "hd",
    "n",
    "b",
];
const TEMPLATE_PATHS: &[&str] = &[
    "email",
    "email",
    "hd",
    "hd",
    "n",
    "b",
    "groups",
    "realm_access.roles",
    "nope",
];
const PATTERNS: &[&str] = &[
    ".*",
    ".*",
    ".+",
    "dev",
    "admin",
    "team-.*",
    ".*",
    ".+",
    "a|b",
    "[a-z]+",
    "true",
    "false",
    "[0-9]+",
    "-?[0-9.e+]+",
    "(?i)DEV",
    "\"",
    "\\\\",
    "\\{\\{.*",
    ".*\".*",
    ".*\\n.*",
];
const OPS: &[&str] = &["=", "!=", "=~", "!~"];

/// Claim text: ordinary values that patterns match, or short strings of hostile characters.
fn claim_text() -> impl Strategy<Value = String> {
    let hostile = prop::collection::vec(
        prop::sample::select(vec![
            'a', 'b', 'd', 'e', 'v', 'D', '-', '"', '\\', '{', '}', '.', '*', '|', '=', '~', ',',
            '\n', '\r', '\0', '\u{7f}', ' ', 'é', '𝄞', '(', ')', '[', ']', '^', '$', '?', '+', '#',
            '\'', '`', '%', '&',
        ]),
        0..8,
    )
    .prop_map(String::from_iter);
    prop_oneof![
        2 => prop::sample::select(vec!["dev", "admin", "team-dev", "a", "b", "DEV", ""])
            .prop_map(String::from),
        3 => hostile,
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => claim_text().prop_map(Value::from),
        1 => any::<i32>().prop_map(Value::from),
        1 => (-1e6f64..1e6).prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
    ]
}

fn claim_value() -> impl Strategy<Value = Value> {
    let leaf = scalar();
    leaf.prop_recursive(3, 16, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(prop::sample::select(vec!["roles", "x"]), inner, 0..3)
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
        ]
    })
}

/// A payload shaped like real tokens (each claim usually present, with its usual type), sometimes
/// with an arbitrary value in place of one.
fn payload() -> impl Strategy<Value = Value> {
    let list = || {
        prop_oneof![
            4 => prop::collection::vec(scalar(), 0..5).prop_map(Value::from),
            1 => claim_value(),
        ]
    };
    let text = || prop_oneof![6 => claim_text().prop_map(Value::from), 1 => claim_value()];
    let present = |s: BoxedStrategy<Value>| prop::option::weighted(0.85, s);
    (
        present(list().boxed()),
        present(list().boxed()),
        present(text().boxed()),
        present(list().prop_map(|roles| json!({ "roles": roles })).boxed()),
        present(text().boxed()),
        present(
            prop_oneof![
                any::<i16>().prop_map(Value::from),
                (-10.0f64..10.0).prop_map(Value::from)
            ]
            .boxed(),
        ),
        present(prop_oneof![4 => any::<bool>().prop_map(Value::from), 1 => claim_value()].boxed()),
    )
        .prop_map(|(groups, roles, email, realm, hd, n, b)| {
            let mut m = Map::new();
            for (k, v) in [
                ("groups", groups),
                ("roles", roles),
                ("email", email),
                ("realm_access", realm),
                ("hd", hd),
                ("n", n),
                ("b", b),
            ] {
                if let Some(v) = v {
                    m.insert(k.to_string(), v);
                }
            }
            Value::Object(m)
        })
}

/// `prefix{{path}}suffix`, or only a literal when `path` is `None`.
#[derive(Debug, Clone)]
struct ValueSpec {
    prefix: String,
    path: Option<&'static str>,
    suffix: String,
}

fn value_spec() -> impl Strategy<Value = ValueSpec> {
    (
        "[a-z0-9_]{0,2}",
        prop::option::weighted(0.8, prop::sample::select(TEMPLATE_PATHS)),
        "[a-z0-9_]{0,2}",
    )
        .prop_map(|(prefix, path, suffix)| ValueSpec {
            prefix,
            path,
            suffix,
        })
}

impl ValueSpec {
    fn text(&self) -> String {
        match self.path {
            Some(p) => format!("{}{{{{{p}}}}}{}", self.prefix, self.suffix),
            None => format!("{}{}", self.prefix, self.suffix),
        }
    }
}

#[derive(Debug, Clone)]
struct GrantSpec {
    claims: BTreeMap<&'static str, &'static str>,
    tenant: (u32, u32),
    mode: u64,
    labels: BTreeMap<&'static str, ValueSpec>,
    filters: Vec<Vec<(&'static str, &'static str, ValueSpec)>>,
}

fn grant_spec() -> impl Strategy<Value = GrantSpec> {
    (
        prop::collection::btree_map(
            prop::sample::select(PATHS),
            prop_oneof![
                3 => prop::sample::select(vec![".*", ".+", "[^x]*"]),
                2 => prop::sample::select(PATTERNS),
            ],
            1..=2,
        ),
        (0u32..3, 0u32..3),
        0u64..4,
        prop::collection::btree_map(
            prop::sample::select(vec!["owner", "team", "who"]),
            value_spec(),
            0..3,
        ),
        prop::collection::vec(
            prop::collection::vec(
                (
                    prop::sample::select(vec!["a", "env", "owner"]),
                    prop::sample::select(OPS),
                    value_spec(),
                ),
                1..3,
            ),
            0..3,
        ),
    )
        .prop_map(|(claims, tenant, mode, labels, filters)| GrantSpec {
            claims,
            tenant,
            mode,
            labels,
            filters,
        })
}

fn filter_text(matchers: &[(&str, &str, ValueSpec)]) -> String {
    let inner: Vec<String> = matchers
        .iter()
        .map(|(name, op, v)| format!("{name}{op}\"{}\"", v.text()))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

/// YAML text for the specs. Every scalar is written as a JSON string, which YAML reads as itself.
fn yaml(specs: &[GrantSpec]) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let mut out = String::from("grants:\n");
    for g in specs {
        out.push_str("  - claims:\n");
        for (path, pattern) in &g.claims {
            out.push_str(&format!("      {}: {}\n", q(path), q(pattern)));
        }
        out.push_str("    vm_access:\n");
        out.push_str(&format!(
            "      tenant_id: {{account_id: {}, project_id: {}}}\n      mode: {}\n",
            g.tenant.0, g.tenant.1, g.mode
        ));
        if !g.labels.is_empty() {
            out.push_str("      extra_labels:\n");
            for (name, v) in &g.labels {
                out.push_str(&format!("        {name}: {}\n", q(&v.text())));
            }
        }
        if !g.filters.is_empty() {
            out.push_str("      extra_filters:\n");
            for f in &g.filters {
                out.push_str(&format!("        - {}\n", q(&filter_text(f))));
            }
        }
    }
    out
}

// ----- the oracle: a second, plain implementation of the documented rules -----

fn lookup<'a>(payload: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(payload, |v, k| v.as_object()?.get(k))
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn condition_holds(payload: &Value, path: &str, pattern: &str) -> bool {
    let re = Regex::new(&format!("^(?:{pattern})$")).unwrap();
    match lookup(payload, path) {
        Some(Value::Array(items)) => items.iter().filter_map(text_of).any(|t| re.is_match(&t)),
        Some(v) => text_of(v).is_some_and(|t| re.is_match(&t)),
        None => false,
    }
}

/// The claim a template inserts, or `None` when the grant must refuse.
fn template_claim(payload: &Value, path: &str) -> Option<String> {
    match lookup(payload, path)? {
        Value::Array(_) => None,
        v => text_of(v).filter(|t| !t.is_empty() && t.len() <= 1024),
    }
}

fn quote_meta(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = r"\.+*?()|[]{}^$-".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// A small selector tokenizer: `{name op "value", ...}` with the escapes a Go string allows.
fn tokenize(filter: &str) -> Option<Vec<(String, String, String)>> {
    let mut chars = filter
        .strip_prefix('{')?
        .strip_suffix('}')?
        .chars()
        .peekable();
    let mut out = Vec::new();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        let mut op = String::new();
        while let Some(&c) = chars.peek() {
            if "=!~".contains(c) {
                op.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = Vec::<u8>::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\n' => return None,
                '\\' => match chars.next()? {
                    '\\' => value.push(b'\\'),
                    '"' => value.push(b'"'),
                    'n' => value.push(b'\n'),
                    'r' => value.push(b'\r'),
                    't' => value.push(b'\t'),
                    'x' => {
                        let h: String = [chars.next()?, chars.next()?].iter().collect();
                        value.push(u8::from_str_radix(&h, 16).ok()?);
                    }
                    _ => return None,
                },
                c => value.extend_from_slice(c.to_string().as_bytes()),
            }
        }
        out.push((name, op, String::from_utf8(value).ok()?));
        match chars.next() {
            None => return Some(out),
            Some(',') => continue,
            Some(_) => return None,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn resolution_follows_the_rules(specs in prop::collection::vec(grant_spec(), 1..4), payload in payload()) {
        let file = yaml(&specs);
        let grants = Grants::parse(&file).map_err(|e| TestCaseError::fail(format!("{e}\n{file}")))?;
        let explained = grants.explain(&payload);
        prop_assert_eq!(grants.resolve(&payload), explained.outcome.clone().map(|(_, a)| a));

        let first = specs
            .iter()
            .position(|g| g.claims.iter().all(|(p, re)| condition_holds(&payload, p, re)));
        let Some(index) = first else {
            prop_assert_eq!(explained.outcome, Err(NoGrant::NoMatch));
            prop_assert_eq!(explained.steps.len(), specs.len());
            prop_assert!(explained.steps.iter().all(|s| s.unmatched.is_some()));
            return Ok(());
        };
        // Exactly the grants before it were tried and failed.
        prop_assert_eq!(explained.steps.len(), index + 1);
        prop_assert!(explained.steps[..index].iter().all(|s| s.unmatched.is_some()));
        prop_assert!(explained.steps[index].unmatched.is_none());

        let spec = &specs[index];
        let paths = spec
            .labels
            .values()
            .chain(spec.filters.iter().flatten().map(|(_, _, v)| v))
            .filter_map(|v| v.path);
        let fillable = paths.clone().all(|p| template_claim(&payload, p).is_some());
        let access = match explained.outcome {
            Ok((_, access)) => access,
            Err(NoGrant::Template { claim, .. }) => {
                prop_assert!(!fillable, "refused although fillable");
                prop_assert!(template_claim(&payload, &claim).is_none());
                return Ok(());
            }
            Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
        };
        prop_assert!(fillable, "accepted although a template cannot be filled");
        prop_assert_eq!((access.tenant.account, access.tenant.project), spec.tenant);

        let fill = |v: &ValueSpec, regex: bool| -> String {
            let inserted = v.path.map(|p| {
                let claim = template_claim(&payload, p).unwrap();
                if regex { format!("(?:{})", quote_meta(&claim)) } else { claim }
            });
            format!("{}{}{}", v.prefix, inserted.unwrap_or_default(), v.suffix)
        };
        let expected_labels: Vec<(String, String)> = spec
            .labels
            .iter()
            .map(|(n, v)| (n.to_string(), fill(v, false)))
            .collect();
        prop_assert_eq!(&access.extra_labels, &expected_labels);

        prop_assert_eq!(access.extra_filters.len(), spec.filters.len());
        for (produced, matchers) in access.extra_filters.iter().zip(&spec.filters) {
            let tokens = tokenize(produced)
                .ok_or_else(|| TestCaseError::fail(format!("does not tokenize: {produced:?}")))?;
            prop_assert_eq!(tokens.len(), matchers.len(), "{}", produced);
            for ((name, op, value), (want_name, want_op, spec_value)) in tokens.iter().zip(matchers) {
                let regex = want_op.contains('~');
                prop_assert_eq!(name, want_name);
                prop_assert_eq!(op, want_op);
                prop_assert_eq!(value, &fill(spec_value, regex));
                if regex {
                    // The regex matches the literal text and nothing longer.
                    let literal = format!(
                        "{}{}{}",
                        spec_value.prefix,
                        spec_value.path.and_then(|p| template_claim(&payload, p)).unwrap_or_default(),
                        spec_value.suffix
                    );
                    let re = Regex::new(&format!("^(?:{value})$")).unwrap();
                    prop_assert!(re.is_match(&literal), "{} vs {:?}", value, literal);
                    let (longer, earlier) = (format!("{literal}x"), format!("x{literal}"));
                    prop_assert!(!re.is_match(&longer));
                    prop_assert!(!re.is_match(&earlier));
                }
            }
        }
    }

    #[test]
    fn inserted_values_read_back_as_themselves(
        matchers in prop::collection::vec(
            (
                prop::sample::select(vec!["a", "env", "owner"]),
                prop::sample::select(OPS),
                "[a-z0-9_]{0,2}",
                "[a-z0-9_]{0,2}",
            ),
            1..4,
        ),
        claim in claim_text().prop_filter("templates refuse empty values", |c| !c.is_empty()),
    ) {
        let specs: Vec<(&str, &str, ValueSpec)> = matchers
            .iter()
            .map(|(n, op, prefix, suffix)| {
                (*n, *op, ValueSpec { prefix: prefix.clone(), path: Some("v"), suffix: suffix.clone() })
            })
            .collect();
        let filter = filter_text(&specs);
        let file = format!(
            "grants:\n  - claims: {{sub: x}}\n    vm_access: {{extra_labels: {{l: '{{{{v}}}}'}}, extra_filters: [{}]}}\n",
            serde_json::to_string(&filter).unwrap()
        );
        let grants = Grants::parse(&file).map_err(|e| TestCaseError::fail(format!("{e}\n{file}")))?;
        let access = grants.resolve(&json!({"sub": "x", "v": claim})).unwrap();
        prop_assert_eq!(&access.extra_labels, &vec![("l".to_string(), claim.clone())]);
        let tokens = tokenize(&access.extra_filters[0])
            .ok_or_else(|| TestCaseError::fail(format!("does not tokenize: {:?}", access.extra_filters[0])))?;
        prop_assert_eq!(tokens.len(), specs.len());
        for ((name, op, value), (want_name, want_op, spec)) in tokens.iter().zip(&specs) {
            prop_assert_eq!(name, want_name);
            prop_assert_eq!(op, want_op);
            let literal = format!("{}{}{}", spec.prefix, claim, spec.suffix);
            if want_op.contains('~') {
                prop_assert_eq!(value, &format!("{}(?:{}){}", spec.prefix, quote_meta(&claim), spec.suffix));
                let re = Regex::new(&format!("^(?:{value})$")).unwrap();
                prop_assert!(re.is_match(&literal));
                let mut shorter = literal.clone();
                shorter.pop();
                let longer = format!("{literal}x");
                prop_assert!(!re.is_match(&longer));
                prop_assert!(!re.is_match(&shorter));
                prop_assert!(!re.is_match(""));
                prop_assert!(literal == "dev" || !re.is_match("dev"));
            } else {
                prop_assert_eq!(value, &literal);
            }
        }
    }

    #[test]
    fn arbitrary_payloads_never_panic(
        specs in prop::collection::vec(grant_spec(), 1..4),
        payload in claim_value(),
    ) {
        let grants = Grants::parse(&yaml(&specs)).unwrap();
        let _ = grants.resolve(&payload);
        let _ = grants.resolve(&json!({ "groups": payload.clone(), "email": payload }));
        let _ = grants.resolve(&Value::Object(Map::new()));
    }

    #[test]
    fn arbitrary_text_never_panics_the_parser(
        text in prop_oneof![
            "\\PC{0,200}",
            // Dense in what the selector and path scanners look at, next to multi-byte characters.
            prop::collection::vec(
                prop::sample::select(vec![
                    "\"", "{{", "}}", "{", "}", "\\", "\\x", "\\u", "0", "7", "=", "=~", "!~", "'", "`", "#",
                    "é", "𝄞", "\n", "[", "]", "(", "(?", "a", ".", "https://",
                ]),
                0..40,
            )
            .prop_map(|parts| parts.concat()),
        ],
    ) {
        let _ = Grants::parse(&text);
        let _ = Grants::parse(&format!("grants:\n  - claims: {{a: b}}\n    vm_access: {{extra_filters: [{}]}}\n", serde_json::to_string(&text).unwrap()));
        let _ = Grants::parse(&format!("grants:\n  - claims: {{{}: b}}\n    vm_access: {{}}\n", serde_json::to_string(&text).unwrap()));
        let quoted = serde_json::to_string(&text).unwrap();
        let labelled = format!("grants:\n  - claims: {{a: b}}\n    vm_access: {{extra_labels: {{l: {quoted}}}}}\n");
        if let Ok(g) = Grants::parse(&labelled) {
            let _ = g.resolve(&json!({"a": "b", "x": text, "e": "e"}));
        }
        let filtered = format!("grants:\n  - claims: {{a: b}}\n    vm_access: {{extra_filters: [{quoted}]}}\n");
        if let Ok(g) = Grants::parse(&filtered) {
            let _ = g.resolve(&json!({"a": "b", "x": text, "e": "e"}));
        }
    }
}
