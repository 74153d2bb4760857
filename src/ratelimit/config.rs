//! vmgateway's rate-limit file (`-ratelimit.config`), unchanged: a `limits:` list whose entries have a
//! `type` (`queries`, `rows_inserted`, `new_series`, `active_series`), a `value`, an optional
//! `resolution` (`minute`, the default when omitted, or `hour`) and optional `account_id` /
//! `project_id`.
//!
//! An entry without ids is the default for every tenant; one with `account_id` alone covers every project
//! of that account; one with both is that tenant's. For each type and resolution a tenant gets the most
//! specific entry that covers it. Two entries for the same type, resolution and scope, an unknown key or
//! type, a `project_id` without `account_id`, a value that is not a positive integer: the file is refused
//! whole, naming the line, so a typo never silently removes a limit.

use std::fmt;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::auth::claims::Tenant;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitType {
    /// Read API requests (queries, series, labels, exports, ...).
    Queries,
    /// Rows (samples) written.
    RowsInserted,
    /// Series created (enterprise vmstorage's per-tenant counter).
    NewSeries,
    /// Series active now (enterprise vmstorage's per-tenant gauge).
    ActiveSeries,
}

impl LimitType {
    /// Every type, in metric order.
    pub const ALL: [LimitType; 4] = [
        LimitType::Queries,
        LimitType::RowsInserted,
        LimitType::NewSeries,
        LimitType::ActiveSeries,
    ];

    /// The name in the file and in metric labels.
    pub fn name(self) -> &'static str {
        match self {
            LimitType::Queries => "queries",
            LimitType::RowsInserted => "rows_inserted",
            LimitType::NewSeries => "new_series",
            LimitType::ActiveSeries => "active_series",
        }
    }

    /// vmgateway's words in a refusal: `request was rate limited by: "<this>"`.
    pub fn reached(self) -> &'static str {
        match self {
            LimitType::Queries => "queries limit reached",
            LimitType::RowsInserted => "inserted rows limit reached",
            LimitType::NewSeries => "new series limit reached",
            LimitType::ActiveSeries => "active series limit reached",
        }
    }

    /// Whether it limits writes (all but `queries`, which limits reads).
    pub fn limits_writes(self) -> bool {
        self != LimitType::Queries
    }

    /// Position in [`LimitType::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The window a limit is measured over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resolution {
    /// The last 60 seconds.
    Minute,
    /// The last 3600 seconds.
    Hour,
}

impl Resolution {
    /// Both, in metric order.
    pub const ALL: [Resolution; 2] = [Resolution::Minute, Resolution::Hour];

    /// The name in the file and in metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
        }
    }

    /// The window's length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Resolution::Minute => 60,
            Resolution::Hour => 3600,
        }
    }

    /// The window in PromQL (`1m`, `1h`).
    pub fn promql(self) -> &'static str {
        match self {
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
        }
    }

    /// Position in [`Resolution::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One limit that applies to a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// What it counts.
    pub kind: LimitType,
    /// Over which window.
    pub resolution: Resolution,
    /// At most this much in the window.
    pub value: u64,
}

/// Which tenants an entry covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// Every tenant.
    Default,
    /// Every project of an account.
    Account(u32),
    /// One tenant.
    Tenant(u32, u32),
}

impl Scope {
    fn covers(self, tenant: Tenant) -> bool {
        match self {
            Scope::Default => true,
            Scope::Account(a) => a == tenant.account,
            Scope::Tenant(a, p) => a == tenant.account && p == tenant.project,
        }
    }

    fn specificity(self) -> u8 {
        match self {
            Scope::Default => 0,
            Scope::Account(_) => 1,
            Scope::Tenant(..) => 2,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    limit: Limit,
    scope: Scope,
}

/// A parsed limits file.
#[derive(Debug, Clone, Default)]
pub struct LimitsFile {
    entries: Vec<Entry>,
}

/// Why a limits file was refused, with the line (1-based; 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Line of the problem.
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "rate limits file: {}", self.message)
        } else {
            write!(f, "rate limits file line {}: {}", self.line, self.message)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    limits: Option<Vec<Spanned<RawEntry>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    value: Option<Spanned<serde_json::Number>>,
    resolution: Option<Spanned<String>>,
    account_id: Option<Spanned<serde_json::Number>>,
    project_id: Option<Spanned<serde_json::Number>>,
}

fn at(location: &Location, message: impl Into<String>) -> ConfigError {
    ConfigError {
        line: location.line(),
        message: message.into(),
    }
}

impl LimitsFile {
    /// Parses vmgateway's YAML.
    pub fn parse(yaml: &str) -> Result<LimitsFile, ConfigError> {
        let raw: RawFile = serde_saphyr::from_str(yaml).map_err(|e| {
            let line = e.location().map_or(0, |l| l.line());
            let message = e.without_snippet().to_string();
            let message = match message.rfind(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            ConfigError { line, message }
        })?;
        let Some(raw_entries) = raw.limits else {
            return Err(ConfigError {
                line: 0,
                message: "no `limits:` list".to_string(),
            });
        };
        let mut entries: Vec<(Entry, u64)> = Vec::with_capacity(raw_entries.len());
        for raw in raw_entries {
            let here = raw.referenced;
            let e = raw.value;
            let kind = e.kind.ok_or_else(|| {
                at(
                    &here,
                    "an entry needs a `type`: queries, rows_inserted, new_series or active_series",
                )
            })?;
            let kind_value = match kind.value.as_str() {
                "queries" => LimitType::Queries,
                "rows_inserted" => LimitType::RowsInserted,
                "new_series" => LimitType::NewSeries,
                "active_series" => LimitType::ActiveSeries,
                other => {
                    return Err(at(
                        &kind.referenced,
                        format!("unknown type {other:?}; expected queries, rows_inserted, new_series or active_series"),
                    ))
                }
            };
            let value = e.value.ok_or_else(|| {
                at(
                    &here,
                    "an entry needs a `value`: the most allowed in the window",
                )
            })?;
            let value_n = positive(&value, "value")?;
            let resolution = match &e.resolution {
                None => Resolution::Minute,
                Some(r) => match r.value.as_str() {
                    "minute" => Resolution::Minute,
                    "hour" => Resolution::Hour,
                    other => {
                        return Err(at(
                            &r.referenced,
                            format!("unknown resolution {other:?}; expected minute or hour"),
                        ))
                    }
                },
            };
            let id = |n: &Option<Spanned<serde_json::Number>>,
                      what: &str|
             -> Result<Option<u32>, ConfigError> {
                match n {
                    None => Ok(None),
                    Some(n) => n
                        .value
                        .as_u64()
                        .and_then(|v| u32::try_from(v).ok())
                        .map(Some)
                        .ok_or_else(|| {
                            at(
                                &n.referenced,
                                format!("{what} must be an integer from 0 to 4294967295"),
                            )
                        }),
                }
            };
            let scope = match (
                id(&e.account_id, "account_id")?,
                id(&e.project_id, "project_id")?,
            ) {
                (None, None) => Scope::Default,
                (Some(a), None) => Scope::Account(a),
                (Some(a), Some(p)) => Scope::Tenant(a, p),
                (None, Some(_)) => {
                    return Err(at(
                        &here,
                        "project_id needs account_id: a project belongs to an account",
                    ))
                }
            };
            let entry = Entry {
                limit: Limit {
                    kind: kind_value,
                    resolution,
                    value: value_n,
                },
                scope,
            };
            if let Some((_, line)) = entries.iter().find(|(other, _)| {
                other.scope == scope
                    && other.limit.kind == kind_value
                    && other.limit.resolution == resolution
            }) {
                return Err(at(
                    &here,
                    format!(
                        "a second {} limit per {} for the same tenants as the entry at line {line}",
                        kind_value.name(),
                        resolution.name()
                    ),
                ));
            }
            entries.push((entry, here.line()));
        }
        Ok(LimitsFile {
            entries: entries.into_iter().map(|(e, _)| e).collect(),
        })
    }

    /// The limits that apply to `tenant`: per type and resolution, the most specific entry.
    pub fn limits_for(&self, tenant: Tenant) -> Vec<Limit> {
        let mut chosen: Vec<(Limit, u8)> = Vec::new();
        for entry in self.entries.iter().filter(|e| e.scope.covers(tenant)) {
            let s = entry.scope.specificity();
            match chosen
                .iter_mut()
                .find(|(l, _)| l.kind == entry.limit.kind && l.resolution == entry.limit.resolution)
            {
                Some(slot) if slot.1 < s => *slot = (entry.limit, s),
                Some(_) => {}
                None => chosen.push((entry.limit, s)),
            }
        }
        let mut limits: Vec<Limit> = chosen.into_iter().map(|(l, _)| l).collect();
        limits.sort_by_key(|l| (l.kind, l.resolution));
        limits
    }

    /// Every (type, resolution) some entry names.
    pub fn kinds(&self) -> Vec<(LimitType, Resolution)> {
        let mut kinds: Vec<(LimitType, Resolution)> = self
            .entries
            .iter()
            .map(|e| (e.limit.kind, e.limit.resolution))
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// Whether any entry limits this type.
    pub fn has(&self, kind: LimitType) -> bool {
        self.entries.iter().any(|e| e.limit.kind == kind)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn positive(n: &Spanned<serde_json::Number>, what: &str) -> Result<u64, ConfigError> {
    match n.value.as_u64() {
        Some(v) if v > 0 => Ok(v),
        _ => Err(at(
            &n.referenced,
            format!("{what} must be a positive integer"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(account: u32, project: u32) -> Tenant {
        Tenant { account, project }
    }

    #[test]
    fn vmgateways_documented_files_load_verbatim() {
        let docs = "limits:
  - type: queries
    value: 1000
    resolution: minute
  - type: queries
    value: 10000
    resolution: hour
  - type: queries
    value: 10
    resolution: minute
    project_id: 5
    account_id: 1
";
        let f = LimitsFile::parse(docs).unwrap();
        assert_eq!(f.len(), 3);
        let special = f.limits_for(tenant(1, 5));
        assert_eq!(special[0].value, 10);
        assert_eq!(
            special[1],
            Limit {
                kind: LimitType::Queries,
                resolution: Resolution::Hour,
                value: 10000
            }
        );
        assert_eq!(f.limits_for(tenant(1, 6))[0].value, 1000);
        let quickstart = "limits:
  - type: queries
    value: 100
  - type: rows_inserted
    value: 100000
  - type: new_series
    value: 1000
  - type: active_series
    value: 100000
  - type: queries
    value: 1
    account_id: 15
";
        let f = LimitsFile::parse(quickstart).unwrap();
        let l = f.limits_for(tenant(15, 3));
        assert_eq!(l.len(), 4);
        assert_eq!(
            (l[0].kind, l[0].resolution, l[0].value),
            (LimitType::Queries, Resolution::Minute, 1)
        );
        assert_eq!(f.limits_for(tenant(16, 0))[0].value, 100);
        assert!(f.has(LimitType::ActiveSeries));
    }

    #[test]
    fn the_most_specific_entry_wins_whatever_the_order() {
        let f = LimitsFile::parse(
            "limits:
  - {type: queries, value: 5, account_id: 1, project_id: 2}
  - {type: queries, value: 50, account_id: 1}
  - {type: queries, value: 500}
",
        )
        .unwrap();
        assert_eq!(f.limits_for(tenant(1, 2))[0].value, 5);
        assert_eq!(f.limits_for(tenant(1, 3))[0].value, 50);
        assert_eq!(f.limits_for(tenant(2, 2))[0].value, 500);
        let none =
            LimitsFile::parse("limits:\n  - {type: queries, value: 5, account_id: 1}\n").unwrap();
        assert!(
            none.limits_for(tenant(2, 0)).is_empty(),
            "no default: other tenants are not limited"
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        for (yaml, line, words) in [
            (
                "limits:\n  - type: querys\n    value: 1\n",
                2,
                "unknown type \"querys\"",
            ),
            ("limits:\n  - type: queries\n    value: 0\n", 3, "positive"),
            ("limits:\n  - type: queries\n    value: -4\n", 3, "positive"),
            (
                "limits:\n  - type: queries\n    value: 1\n    resolution: day\n",
                4,
                "unknown resolution",
            ),
            (
                "limits:\n  - type: queries\n    value: 1\n    acount_id: 1\n",
                4,
                "acount_id",
            ),
            (
                "limits:\n  - type: queries\n    value: 1\n    project_id: 1\n",
                2,
                "needs account_id",
            ),
            ("limits:\n  - value: 1\n", 2, "needs a `type`"),
            (
                "limits:\n  - type: queries\n    value: 1\n  - type: queries\n    value: 2\n",
                4,
                "second queries limit",
            ),
            (
                "limits:\n  - type: queries\n    value: 1\n    account_id: 99999999999\n",
                4,
                "account_id",
            ),
            ("limits: [\n", 0, ""),
        ] {
            let e = LimitsFile::parse(yaml).unwrap_err();
            if line > 0 {
                assert_eq!(e.line, line, "{yaml}: {e}");
            }
            assert!(e.to_string().contains(words), "{yaml}: {e}");
        }
        assert!(LimitsFile::parse("other: 1\n").is_err());
        assert!(LimitsFile::parse("").is_err());
    }
}
