//! The token payload: `exp`, `nbf`, `iss`, `aud` and the `vm_access` claim, in both layouts.
//!
//! Pure parsing with no clock and no I/O, so the security argument ("what does this token grant?") can be
//! read, unit-tested, property-tested and fuzzed here alone. `vm_access` may be a JSON object or a string
//! holding one (some identity providers only emit strings), in vmgateway's layout (`tenant_id`,
//! `extra_labels`, `extra_filters`, `mode`) or vmauth's (`metrics_account_id`, `metrics_project_id`,
//! `metrics_extra_labels`, `metrics_extra_filters`). Mixing the two layouts in one claim is refused: a
//! token whose meaning depends on which product reads it is a token nobody should trust. Duplicate keys
//! are refused too, so a payload means one thing.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A VictoriaMetrics tenant: `account_id:project_id`, each an unsigned 32-bit number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tenant {
    /// `AccountID` in cluster terms.
    pub account: u32,
    /// `ProjectID` in cluster terms.
    pub project: u32,
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.account, self.project)
    }
}

/// What a token may do: vmgateway's `mode` bitmask, 0 meaning both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Queries, exports, metadata.
    pub read: bool,
    /// Remote write and every import protocol.
    pub write: bool,
}

impl Mode {
    /// Decodes vmgateway's `mode`: 0 = read and write, 1 = read only, 2 = write only, 3 = both.
    pub fn from_bits(bits: u64) -> Option<Mode> {
        match bits {
            0 | 3 => Some(Mode {
                read: true,
                write: true,
            }),
            1 => Some(Mode {
                read: true,
                write: false,
            }),
            2 => Some(Mode {
                read: false,
                write: true,
            }),
            _ => None,
        }
    }
}

/// What a verified `vm_access` claim grants: the only input the rest of tenantgate trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The tenant every request goes to in cluster mode.
    pub tenant: Tenant,
    /// Labels forced onto every read (as filters) and every write (overriding the sender's).
    /// Sorted by name so equal claims give equal upstream requests.
    pub extra_labels: Vec<(String, String)>,
    /// Series selectors every read is restricted to.
    pub extra_filters: Vec<String>,
    /// Whether reads and writes are allowed.
    pub mode: Mode,
}

impl Access {
    /// Whether reads are restricted beyond the tenant (labels or filters).
    pub fn is_label_restricted(&self) -> bool {
        !self.extra_labels.is_empty() || !self.extra_filters.is_empty()
    }
}

/// The parts of a payload tenantgate acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// Expiry, seconds since the epoch. Required.
    pub exp: f64,
    /// Not-before, seconds since the epoch, when present.
    pub nbf: Option<f64>,
    /// Issuer, checked only when `-auth.issuers` is set.
    pub iss: Option<String>,
    /// Audiences, checked only when `-auth.audiences` is set.
    pub aud: Vec<String>,
    /// What the token grants; `None` when the claim is absent.
    pub access: Option<Access>,
    /// Who the token is about (`sub`), for the audit log; only when it is a string.
    pub subject: Option<String>,
    /// The client it was issued to (`client_id`, else `azp`), for the audit log; only a string.
    pub client_id: Option<String>,
}

/// Why a payload could not be read. The message is safe to show: it names fields, never values of the
/// token other than small numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    /// Not JSON, a wrong type in a standard claim, a duplicate key, or no `exp`.
    Payload(String),
    /// `vm_access` exists but is invalid.
    VmAccess(String),
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimError::Payload(m) => write!(f, "invalid token payload: {m}"),
            ClaimError::VmAccess(m) => write!(f, "invalid vm_access claim: {m}"),
        }
    }
}

#[derive(Deserialize)]
struct RawPayload {
    exp: Option<NumericDate>,
    nbf: Option<NumericDate>,
    iss: Option<String>,
    aud: Option<Audience>,
    vm_access: Option<RawVmAccessField>,
    // Identity claims are only logged: any JSON type is accepted, only strings are kept.
    sub: Option<serde_json::Value>,
    client_id: Option<serde_json::Value>,
    azp: Option<serde_json::Value>,
}

/// JWT NumericDate: a JSON number (integer or not), never a string.
struct NumericDate(f64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = f64::deserialize(d)?;
        if !n.is_finite() || n < 0.0 {
            return Err(de::Error::custom(
                "time claims must be non-negative numbers",
            ));
        }
        Ok(NumericDate(n))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawVmAccessField {
    Object(RawVmAccess),
    Text(String),
}

#[derive(Deserialize)]
struct RawVmAccess {
    tenant_id: Option<RawTenant>,
    extra_labels: Option<LabelMap>,
    extra_filters: Option<Vec<String>>,
    mode: Option<u64>,
    metrics_account_id: Option<u32>,
    metrics_project_id: Option<u32>,
    metrics_extra_labels: Option<Vec<String>>,
    metrics_extra_filters: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawTenant {
    account_id: Option<u32>,
    project_id: Option<u32>,
}

/// `extra_labels` as an ordered list, refusing duplicate names (serde's maps keep the last silently).
struct LabelMap(Vec<(String, String)>);

impl<'de> Deserialize<'de> for LabelMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct LabelVisitor;
        impl<'de> Visitor<'de> for LabelVisitor {
            type Value = LabelMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of label names to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LabelMap, A::Error> {
                let mut labels: Vec<(String, String)> = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    if labels.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom(format!(
                            "duplicate label {name:?} in extra_labels"
                        )));
                    }
                    labels.push((name, value));
                }
                Ok(LabelMap(labels))
            }
        }
        d.deserialize_map(LabelVisitor)
    }
}

/// Parses a token payload (the decoded middle part of a JWT).
pub fn parse_claims(payload: &[u8]) -> Result<Claims, ClaimError> {
    let raw: RawPayload =
        serde_json::from_slice(payload).map_err(|e| ClaimError::Payload(e.to_string()))?;
    let exp = raw
        .exp
        .ok_or_else(|| ClaimError::Payload("the exp claim is required".into()))?
        .0;
    let aud = match raw.aud {
        None => Vec::new(),
        Some(Audience::One(a)) => vec![a],
        Some(Audience::Many(a)) => a,
    };
    let access = match raw.vm_access {
        None => None,
        Some(field) => Some(access_from_field(field)?),
    };
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    Ok(Claims {
        exp,
        nbf: raw.nbf.map(|n| n.0),
        iss: raw.iss,
        aud,
        access,
        subject: text(raw.sub),
        client_id: text(raw.client_id).or_else(|| text(raw.azp)),
    })
}

/// Parses a `vm_access` value on its own, with exactly the rules of the claim in a token, so a grants
/// file's `vm_access` means what the same claim would.
pub fn parse_vm_access(value: &serde_json::Value) -> Result<Access, ClaimError> {
    // Not through the untagged enum, whose error would not say which field is wrong.
    let field = match value {
        serde_json::Value::String(text) => RawVmAccessField::Text(text.clone()),
        other => RawVmAccessField::Object(
            RawVmAccess::deserialize(other).map_err(|e| ClaimError::VmAccess(e.to_string()))?,
        ),
    };
    access_from_field(field)
}

fn access_from_field(field: RawVmAccessField) -> Result<Access, ClaimError> {
    match field {
        RawVmAccessField::Object(v) => access_from_raw(v),
        RawVmAccessField::Text(text) => {
            let v: RawVmAccess = serde_json::from_str(&text).map_err(|e| {
                ClaimError::VmAccess(format!("string form does not hold a JSON object: {e}"))
            })?;
            access_from_raw(v)
        }
    }
}

fn access_from_raw(raw: RawVmAccess) -> Result<Access, ClaimError> {
    let vmgateway_layout =
        raw.tenant_id.is_some() || raw.extra_labels.is_some() || raw.extra_filters.is_some();
    let vmauth_layout = raw.metrics_account_id.is_some()
        || raw.metrics_project_id.is_some()
        || raw.metrics_extra_labels.is_some()
        || raw.metrics_extra_filters.is_some();
    if vmgateway_layout && vmauth_layout {
        return Err(ClaimError::VmAccess(
            "mixes vmgateway fields (tenant_id, extra_labels, extra_filters) with vmauth fields (metrics_*)"
                .into(),
        ));
    }
    let mode = match raw.mode {
        None => Mode::from_bits(0),
        Some(bits) => Mode::from_bits(bits),
    }
    .ok_or_else(|| ClaimError::VmAccess("mode must be 0, 1, 2 or 3".into()))?;

    let (tenant, mut extra_labels, extra_filters) = if vmauth_layout {
        let labels = raw
            .metrics_extra_labels
            .unwrap_or_default()
            .into_iter()
            .map(|pair| match pair.split_once('=') {
                Some((n, v)) => Ok((n.to_owned(), v.to_owned())),
                None => Err(ClaimError::VmAccess(
                    "metrics_extra_labels entries must look like name=value".into(),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tenant = Tenant {
            account: raw.metrics_account_id.unwrap_or(0),
            project: raw.metrics_project_id.unwrap_or(0),
        };
        (
            tenant,
            labels,
            raw.metrics_extra_filters.unwrap_or_default(),
        )
    } else {
        let tenant = raw
            .tenant_id
            .map(|t| Tenant {
                account: t.account_id.unwrap_or(0),
                project: t.project_id.unwrap_or(0),
            })
            .unwrap_or_default();
        (
            tenant,
            raw.extra_labels.map(|l| l.0).unwrap_or_default(),
            raw.extra_filters.unwrap_or_default(),
        )
    };

    for (name, _) in &extra_labels {
        if !is_label_name(name) {
            return Err(ClaimError::VmAccess(format!(
                "label name {name:?} is not a valid Prometheus label name"
            )));
        }
    }
    extra_labels.sort();
    for pair in extra_labels.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(ClaimError::VmAccess(format!(
                "duplicate label {:?}",
                pair[0].0
            )));
        }
    }
    if extra_filters.iter().any(|f| f.trim().is_empty()) {
        return Err(ClaimError::VmAccess(
            "extra_filters must not contain empty selectors".into(),
        ));
    }
    Ok(Access {
        tenant,
        extra_labels,
        extra_filters,
        mode,
    })
}

/// Prometheus label names: `[a-zA-Z_][a-zA-Z0-9_]*`. Anything else could change the meaning of the
/// `extra_label=name=value` argument it is written into.
pub fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(payload: &str) -> Access {
        parse_claims(payload.as_bytes())
            .expect("claims parse")
            .access
            .expect("vm_access present")
    }

    #[test]
    fn vmgateway_layout_with_everything() {
        let a = access(
            r#"{"exp":1617304574,"vm_access":{"tenant_id":{"account_id":1,"project_id":5},
            "extra_labels":{"team":"dev","project":"mobile"},
            "extra_filters":["{env=~\"prod|dev\",team!=\"test\"}"],"mode":1}}"#,
        );
        assert_eq!(
            a.tenant,
            Tenant {
                account: 1,
                project: 5
            }
        );
        assert_eq!(
            a.extra_labels,
            vec![
                ("project".to_string(), "mobile".to_string()),
                ("team".to_string(), "dev".to_string())
            ]
        );
        assert_eq!(a.extra_filters, vec![r#"{env=~"prod|dev",team!="test"}"#]);
        assert_eq!(
            a.mode,
            Mode {
                read: true,
                write: false
            }
        );
    }

    #[test]
    fn defaults_are_tenant_zero_read_write_unrestricted() {
        let a = access(r#"{"exp":1,"vm_access":{}}"#);
        assert_eq!(a.tenant, Tenant::default());
        assert!(a.extra_labels.is_empty() && a.extra_filters.is_empty());
        assert_eq!(
            a.mode,
            Mode {
                read: true,
                write: true
            }
        );
        let a = access(r#"{"exp":1,"vm_access":{"tenant_id":{"project_id":7}}}"#);
        assert_eq!(
            a.tenant,
            Tenant {
                account: 0,
                project: 7
            }
        );
    }

    #[test]
    fn string_form_is_accepted() {
        let a = access(
            r#"{"exp":1,"vm_access":"{\"tenant_id\":{\"account_id\":3},\"extra_labels\":{\"team\":\"dev\"}}"}"#,
        );
        assert_eq!(a.tenant.account, 3);
        assert_eq!(a.extra_labels, vec![("team".into(), "dev".into())]);
    }

    #[test]
    fn vmauth_layout_is_accepted() {
        let a = access(
            r#"{"exp":1,"vm_access":{"metrics_account_id":2,"metrics_project_id":9,
            "metrics_extra_labels":["team=dev","env=a=b"],"metrics_extra_filters":["{x=\"y\"}"]}}"#,
        );
        assert_eq!(
            a.tenant,
            Tenant {
                account: 2,
                project: 9
            }
        );
        assert_eq!(
            a.extra_labels,
            vec![("env".into(), "a=b".into()), ("team".into(), "dev".into())]
        );
        assert_eq!(a.extra_filters, vec![r#"{x="y"}"#]);
    }

    #[test]
    fn mode_bits() {
        assert_eq!(
            Mode::from_bits(2),
            Some(Mode {
                read: false,
                write: true
            })
        );
        assert_eq!(Mode::from_bits(3), Mode::from_bits(0));
        assert_eq!(Mode::from_bits(4), None);
    }

    #[test]
    fn absent_vm_access_is_none() {
        let c = parse_claims(br#"{"exp":5,"sub":"x"}"#).unwrap();
        assert!(c.access.is_none());
        assert_eq!(c.exp, 5.0);
    }

    #[test]
    fn float_exp_is_accepted_and_aud_both_forms() {
        let c = parse_claims(br#"{"exp":5.5,"nbf":1,"aud":"a","iss":"i","vm_access":{}}"#).unwrap();
        assert_eq!(c.exp, 5.5);
        assert_eq!(c.nbf, Some(1.0));
        assert_eq!(c.aud, vec!["a"]);
        let c = parse_claims(br#"{"exp":5,"aud":["a","b"]}"#).unwrap();
        assert_eq!(c.aud, vec!["a", "b"]);
    }

    #[test]
    fn bad_payloads_are_refused() {
        let bad: &[&str] = &[
            r#"not json"#,
            r#"{"vm_access":{}}"#,                        // no exp
            r#"{"exp":"123","vm_access":{}}"#,            // exp as string
            r#"{"exp":-1,"vm_access":{}}"#,               // negative exp
            r#"{"exp":1,"exp":2,"vm_access":{}}"#,        // duplicate key
            r#"{"exp":1,"vm_access":{},"vm_access":{}}"#, // duplicate claim
            r#"{"exp":1,"vm_access":{"mode":4}}"#,        // unknown mode
            r#"{"exp":1,"vm_access":{"mode":"1"}}"#,      // mode as string
            r#"{"exp":1,"vm_access":{"tenant_id":{"account_id":-1}}}"#,
            r#"{"exp":1,"vm_access":{"tenant_id":{"account_id":4294967296}}}"#,
            r#"{"exp":1,"vm_access":{"tenant_id":{"account_id":1.5}}}"#,
            r#"{"exp":1,"vm_access":{"tenant_id":"0:1"}}"#,
            r#"{"exp":1,"vm_access":{"extra_labels":{"team":1}}}"#,
            r#"{"exp":1,"vm_access":{"extra_labels":{"team":"a","team":"b"}}}"#,
            r#"{"exp":1,"vm_access":{"extra_labels":{"bad-name":"a"}}}"#,
            r#"{"exp":1,"vm_access":{"extra_labels":{"a=b":"a"}}}"#,
            r#"{"exp":1,"vm_access":{"extra_filters":"{a=\"b\"}"}}"#,
            r#"{"exp":1,"vm_access":{"extra_filters":[""]}}"#,
            r#"{"exp":1,"vm_access":{"metrics_extra_labels":["novalue"]}}"#,
            r#"{"exp":1,"vm_access":{"metrics_extra_labels":["a=1","a=2"]}}"#,
            r#"{"exp":1,"vm_access":{"tenant_id":{},"metrics_account_id":1}}"#,
            r#"{"exp":1,"vm_access":"not json"}"#,
            r#"{"exp":1,"vm_access":"[1,2]"}"#,
            r#"{"exp":1,"vm_access":5}"#,
            r#"{"exp":1,"vm_access":[]}"#,
        ];
        for payload in bad {
            assert!(
                parse_claims(payload.as_bytes()).is_err(),
                "accepted: {payload}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let a = access(
            r#"{"exp":1,"realm_access":{"roles":[]},"vm_access":{"foo":1,"tenant_id":{"account_id":1,"x":2}}}"#,
        );
        assert_eq!(a.tenant.account, 1);
    }

    #[test]
    fn label_names() {
        assert!(is_label_name("team"));
        assert!(is_label_name("_x1"));
        assert!(is_label_name("__name__"));
        assert!(!is_label_name(""));
        assert!(!is_label_name("1a"));
        assert!(!is_label_name("a-b"));
        assert!(!is_label_name("a=b"));
        assert!(!is_label_name("ä"));
    }
}
