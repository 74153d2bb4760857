//! The grants file (`-auth.grantsFile`): `vm_access` grants for tokens whose identity provider cannot
//! emit a `vm_access` claim, chosen by the claims it does emit (`groups`, `roles`, `realm_access.roles`,
//! `email`, `hd`, ...).
//!
//! A file is a list of grants; the first grant whose `claims` all match a verified token's payload gives
//! its `vm_access`, written in either of `vm_access`'s layouts and checked by `claims.rs`'s own rules, so
//! a grant means exactly what the same claim in a token would. The file is refused whole, naming line
//! and column, on anything doubtful: an unknown key at any level (a typo like `claim:` must not become a
//! grant for every token), a grant without claims (it would give access to every token the identity
//! provider issues), an invalid regex or `vm_access`, or a template anywhere but a label value.
//!
//! Matching. A claim pattern is a regex anchored at both ends (`^(?:re)$`; vmauth's `match_claims`
//! searches instead). Strings match as they are, numbers and booleans as their JSON text, an array if
//! any string, number or boolean element matches; objects, null and missing claims never match. A claim
//! path is split at dots to reach nested claims (`realm_access.roles`); `\.` is a dot inside a name
//! (`https://example\.com/groups`, `resource_access.my\.client.roles`) and `\\` a backslash, as in
//! vmauth, so a path names one place whatever keys a token holds. A segment of digits also indexes an
//! array. A path whose first segment looks like a URL cut at a dot (`https://example`) is refused:
//! it is always a forgotten `\.`, and would otherwise silently never match.
//!
//! Templates. `{{path}}` in an `extra_labels` value or an `extra_filters` selector inserts that claim's
//! value. Claim values are data, never syntax: a label value takes them as they are (the caller
//! URL-encodes it); in a selector a template may stand only inside a double-quoted matcher value, where
//! the value is escaped for a PromQL/MetricsQL string, and for `=~`/`!~` also regex-quoted and wrapped
//! in `(?:...)` so it matches itself literally. A template in a regex value must stand where a literal
//! could: not inside a character class, after a backslash or inside a group's flags (checked at load
//! time by compiling the regex with a group in its place). Tenants, mode and label names never come from
//! templates. At request time the grant that matched is final: if one of its templates names a claim
//! that is missing, not a string/number/boolean (an array has no single value), empty (`owner=""` would
//! match every series without the label) or longer than [`MAX_INSERTED_VALUE`] bytes, the token is
//! refused rather than passed on to a later, usually broader, grant.
//!
//! Cost. Everything is compiled once. All conditions on one claim are evaluated together, at most once
//! per resolution and only when a grant in order needs them: literal patterns (`team-dev`) by one hash
//! lookup per element, the rest through one `RegexSet`. A claim is examined for at most
//! [`MAX_ARRAY_ELEMENTS`] elements and [`MAX_CLAIM_TEXT`] bytes of text; when a condition cannot be
//! decided within that, the token is refused, never judged on a truncated claim.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;

use regex::{Regex, RegexSet};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use serde_saphyr::{Location, Spanned};

use super::claims::{self, Access, Mode, Tenant};
use crate::promql::push_string_escaped;

/// Array elements examined per claim before a condition still undecided refuses the token. Identity
/// providers cap theirs lower (Azure AD 200 groups, Okta 100), so only a pathological token gets here.
pub const MAX_ARRAY_ELEMENTS: usize = 1_000;

/// Bytes of claim text examined per claim (all elements together) before a condition still undecided
/// refuses the token. Bounds regex work per resolution by the size of the file, not of the token.
pub const MAX_CLAIM_TEXT: usize = 64 * 1024;

/// Longest claim value a template inserts. VictoriaMetrics drops written series whose label values
/// pass 4 KiB (older versions truncated them, which could make two long values equal); real
/// identifiers (emails, ids) are far shorter.
pub const MAX_INSERTED_VALUE: usize = 1_024;

/// Why a grants file was refused. `line` and `column` are 1-based; 0 when unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantsError {
    /// Line of the offending node.
    pub line: u64,
    /// Column of the offending node.
    pub column: u64,
    /// What is wrong, naming the key or value.
    pub message: String,
}

impl fmt::Display for GrantsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "grants file: {}", self.message)
        } else {
            write!(
                f,
                "grants file line {}, column {}: {}",
                self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for GrantsError {}

/// Why no access was resolved. Messages name grants by line and claims by path, never claim values,
/// so they are safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoGrant {
    /// No grant's claims all match.
    NoMatch,
    /// Deciding the grant at `line` would need more of claim `claim` than the caps allow.
    Undecidable {
        /// Line of the grant in the file.
        line: u64,
        /// The claim path as written in the file.
        claim: String,
    },
    /// The grant at `line` matched but its template `{{claim}}` cannot be filled.
    Template {
        /// Line of the grant in the file.
        line: u64,
        /// The template's claim path as written in the file.
        claim: String,
        /// What is wrong with the claim.
        problem: TemplateProblem,
    },
}

/// Why a template's claim cannot be inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateProblem {
    /// The token has no such claim.
    Missing,
    /// The claim is an array: which element would be meant is unknowable.
    Array,
    /// The claim is an object or null.
    NotScalar,
    /// The claim is an empty string, which as a label value would mean "label absent".
    Empty,
    /// The claim is longer than [`MAX_INSERTED_VALUE`] bytes.
    TooLong,
}

impl fmt::Display for NoGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoGrant::NoMatch => f.write_str("no grant matches the token's claims"),
            NoGrant::Undecidable { line, claim } => write!(
                f,
                "grant at line {line}: claim {claim} is larger than tenantgate examines \
                 ({MAX_ARRAY_ELEMENTS} elements, {MAX_CLAIM_TEXT} bytes), so the grant cannot be decided"
            ),
            NoGrant::Template {
                line,
                claim,
                problem,
            } => {
                let what = match problem {
                    TemplateProblem::Missing => "the token has no such claim",
                    TemplateProblem::Array => "the claim is an array",
                    TemplateProblem::NotScalar => "the claim is an object or null",
                    TemplateProblem::Empty => "the claim is empty",
                    TemplateProblem::TooLong => "the claim is too long",
                };
                write!(f, "grant at line {line}: template {{{{{claim}}}}}: {what}")
            }
        }
    }
}

impl std::error::Error for NoGrant {}

/// One grant's verdict in [`Grants::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Line of the grant in the file.
    pub line: u64,
    /// The first of its claims that did not match; `None` when all did.
    pub unmatched: Option<String>,
}

/// What [`Grants::explain`] found: each grant tried, in order, and the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The grants decided, in order; one that could not be decided is named by `outcome` instead.
    pub steps: Vec<Step>,
    /// The line of the grant that applied and its access, or why none did.
    pub outcome: Result<(u64, Access), NoGrant>,
}

/// A parsed, compiled grants file. Immutable; share it behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Grants {
    grants: Vec<Grant>,
    /// One per distinct claim path used in conditions; grants refer to them by index.
    matchers: Vec<PathMatcher>,
}

#[derive(Debug, Clone)]
struct Grant {
    line: u64,
    /// `(matcher, pattern)`: the condition holds when `pattern` of `matcher` matched.
    conditions: Vec<(usize, usize)>,
    access: AccessTemplate,
}

#[derive(Debug, Clone)]
struct AccessTemplate {
    tenant: Tenant,
    mode: Mode,
    /// Sorted by name, as `claims.rs` leaves them; names are fixed, so rendering keeps the order.
    extra_labels: Vec<(String, Template)>,
    extra_filters: Vec<Template>,
}

#[derive(Debug, Clone)]
struct PathMatcher {
    path: ClaimPath,
    /// How many distinct patterns conditions use on this path; hits are indexed by pattern.
    total: usize,
    /// Patterns without regex syntax (`team-dev`), which match by equality: one hash lookup per
    /// element however many teams a file lists.
    literals: HashMap<String, usize>,
    /// The other patterns, with the pattern index of each.
    regexes: Option<(Patterns, Vec<usize>)>,
}

#[derive(Debug, Clone)]
enum Patterns {
    /// A single pattern skips the set's per-call allocation.
    One(Regex),
    Set(RegexSet),
}

/// Which patterns of one claim path matched, and whether the whole claim was examined.
#[derive(Debug, Clone)]
struct PathHits {
    hits: Vec<bool>,
    complete: bool,
}

impl Grants {
    /// Parses and compiles a grants file, refusing it whole on the first problem.
    pub fn parse(yaml: &str) -> Result<Grants, GrantsError> {
        let raw: RawFile = serde_saphyr::from_str(yaml).map_err(yaml_error)?;
        let raw_grants = match raw.grants {
            Some(g) if !g.is_empty() => g,
            _ => {
                return Err(GrantsError {
                    line: 0,
                    column: 0,
                    message: "the file must hold a non-empty `grants:` list".into(),
                })
            }
        };
        let mut builder = Builder::default();
        let mut grants = Vec::with_capacity(raw_grants.len());
        for raw_grant in raw_grants {
            grants.push(builder.grant(raw_grant)?);
        }
        let matchers = builder.finish()?;
        Ok(Grants { grants, matchers })
    }

    /// How many grants the file holds.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// Always false for a parsed file (an empty one is refused); here for completeness.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The access the first matching grant gives a verified token's payload.
    pub fn resolve(&self, payload: &Value) -> Result<Access, NoGrant> {
        self.run(payload, None).map(|(_line, access)| access)
    }

    /// Like [`Grants::resolve`], also saying which grants were tried and why they did not apply: for
    /// checking a file against a sample token.
    pub fn explain(&self, payload: &Value) -> Explanation {
        let mut steps = Vec::new();
        let outcome = self.run(payload, Some(&mut steps));
        Explanation { steps, outcome }
    }

    fn run(
        &self,
        payload: &Value,
        mut steps: Option<&mut Vec<Step>>,
    ) -> Result<(u64, Access), NoGrant> {
        let mut memo: Vec<Option<PathHits>> = vec![None; self.matchers.len()];
        for grant in &self.grants {
            let mut unmatched = None;
            for &(m, p) in &grant.conditions {
                let matcher = &self.matchers[m];
                let hits = memo[m].get_or_insert_with(|| matcher.evaluate(payload));
                if hits.hits[p] {
                    continue;
                }
                if !hits.complete {
                    return Err(NoGrant::Undecidable {
                        line: grant.line,
                        claim: matcher.path.text.clone(),
                    });
                }
                unmatched = Some(m);
                break;
            }
            if let Some(steps) = steps.as_deref_mut() {
                steps.push(Step {
                    line: grant.line,
                    unmatched: unmatched.map(|m| self.matchers[m].path.text.clone()),
                });
            }
            if unmatched.is_none() {
                let access =
                    grant
                        .access
                        .render(payload)
                        .map_err(|(claim, problem)| NoGrant::Template {
                            line: grant.line,
                            claim,
                            problem,
                        })?;
                return Ok((grant.line, access));
            }
        }
        Err(NoGrant::NoMatch)
    }
}

impl PathMatcher {
    fn evaluate(&self, payload: &Value) -> PathHits {
        let total = self.total;
        let mut result = PathHits {
            hits: vec![false; total],
            complete: true,
        };
        let Some(value) = self.path.lookup(payload) else {
            return result;
        };
        let mut found = 0;
        let mut budget = MAX_CLAIM_TEXT;
        let items = match value {
            Value::Array(items) => items.as_slice(),
            other => std::slice::from_ref(other),
        };
        for (i, item) in items.iter().enumerate() {
            if found == total {
                break;
            }
            if i == MAX_ARRAY_ELEMENTS {
                result.complete = false;
                break;
            }
            let Some(text) = scalar_text(item) else {
                continue;
            };
            if text.len() > budget {
                result.complete = false;
                break;
            }
            budget -= text.len();
            // Indices come from the builder, which sizes `hits` to match; `get` keeps even a broken
            // invariant from panicking.
            let mut hit = |p: Option<&usize>| {
                if let Some(h) = p.and_then(|&p| result.hits.get_mut(p)) {
                    if !*h {
                        *h = true;
                        found += 1;
                    }
                }
            };
            hit(self.literals.get(text.as_ref()));
            match &self.regexes {
                Some((Patterns::One(re), ids)) if re.is_match(&text) => hit(ids.first()),
                Some((Patterns::Set(set), ids)) => {
                    for p in set.matches(&text).iter() {
                        hit(ids.get(p));
                    }
                }
                _ => {}
            }
        }
        result
    }
}

/// The text a scalar claim is matched and inserted as: strings as they are, numbers and booleans as
/// their JSON text.
fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(true) => Some(Cow::Borrowed("true")),
        Value::Bool(false) => Some(Cow::Borrowed("false")),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

impl AccessTemplate {
    fn render(&self, payload: &Value) -> Result<Access, (String, TemplateProblem)> {
        let mut extra_labels = Vec::with_capacity(self.extra_labels.len());
        for (name, value) in &self.extra_labels {
            extra_labels.push((name.clone(), value.render(payload)?));
        }
        let mut extra_filters = Vec::with_capacity(self.extra_filters.len());
        for filter in &self.extra_filters {
            extra_filters.push(filter.render(payload)?);
        }
        Ok(Access {
            tenant: self.tenant,
            extra_labels,
            extra_filters,
            mode: self.mode,
        })
    }
}

// ---------------------------------------------------------------------------------------------------
// Claim paths

#[derive(Debug, Clone, PartialEq, Eq)]
struct ClaimPath {
    /// As written in the file, for messages.
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    key: String,
    /// Set when the segment is all digits: then it also indexes an array.
    index: Option<usize>,
}

impl ClaimPath {
    fn parse(text: &str) -> Result<ClaimPath, String> {
        if text.contains(['{', '}']) {
            // No real claim name has braces; a brace here is a template or a stray `{` beside one.
            return Err(format!(
                "claim name {text:?} holds a brace: templates are not allowed in claim names, and claim names cannot hold braces"
            ));
        }
        let mut segments = Vec::new();
        let mut current = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('.' | '\\')) => current.push(e),
                    _ => {
                        return Err(format!(
                            "claim name {text:?}: a backslash must be followed by `.` (a dot inside a name) or `\\`"
                        ))
                    }
                },
                '.' => {
                    if current.is_empty() {
                        return Err(format!("claim name {text:?} has an empty part"));
                    }
                    segments.push(Segment::new(std::mem::take(&mut current)));
                }
                c => current.push(c),
            }
        }
        if current.is_empty() {
            return Err(format!("claim name {text:?} has an empty part"));
        }
        segments.push(Segment::new(current));
        if let Some(first) = segments.first() {
            if segments.len() > 1 && looks_like_cut_url(&first.key) {
                let escaped = text.replace('.', "\\.");
                return Err(format!(
                    "claim name {text:?} splits a URL at its dots; a dot inside a name is written `\\.`, as in {escaped:?}"
                ));
            }
        }
        Ok(ClaimPath {
            text: text.to_owned(),
            segments,
        })
    }

    fn lookup<'a>(&self, payload: &'a Value) -> Option<&'a Value> {
        let mut value = payload;
        for segment in &self.segments {
            value = match value {
                Value::Object(map) => map.get(&segment.key)?,
                Value::Array(items) => items.get(segment.index?)?,
                _ => return None,
            };
        }
        Some(value)
    }
}

impl Segment {
    fn new(key: String) -> Segment {
        let index = if !key.is_empty() && key.len() <= 9 && key.bytes().all(|b| b.is_ascii_digit())
        {
            key.parse().ok()
        } else {
            None
        };
        Segment { key, index }
    }
}

/// `https://example` from `https://example.com/groups` written without `\.`: a scheme and a host with
/// no dot and no path.
fn looks_like_cut_url(segment: &str) -> bool {
    let rest = segment
        .strip_prefix("https://")
        .or_else(|| segment.strip_prefix("http://"));
    matches!(rest, Some(host) if !host.contains('/') && !host.contains('.'))
}

// ---------------------------------------------------------------------------------------------------
// Templates

#[derive(Debug, Clone)]
struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Claim { path: ClaimPath, context: Context },
}

/// Where a template stands, which decides how its value is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// A label value: inserted as it is.
    Label,
    /// Inside a double-quoted `=` / `!=` value: string-escaped.
    Quoted,
    /// Inside a double-quoted `=~` / `!~` value: regex-quoted, grouped, then string-escaped.
    QuotedRegex,
}

const TEMPLATE_GROUP: &str = "__tenantgate_template_";

impl Template {
    /// A label value: `{{path}}` anywhere, inserted as it is.
    fn label(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unterminated template in label value {text:?}"))?;
            parts.push(Part::Claim {
                path: ClaimPath::parse(after[..end].trim())?,
                context: Context::Label,
            });
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// A series selector: templates only inside double-quoted matcher values.
    fn filter(text: &str) -> Result<Template, String> {
        let mut scan = FilterScan {
            text,
            bytes: text.as_bytes(),
            parts: Vec::new(),
            literal_from: 0,
        };
        scan.run()?;
        let FilterScan {
            mut parts,
            literal_from,
            ..
        } = scan;
        if literal_from < text.len() {
            parts.push(Part::Text(text[literal_from..].to_owned()));
        }
        Ok(Template { parts })
    }

    fn render(&self, payload: &Value) -> Result<String, (String, TemplateProblem)> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Claim { path, context } => {
                    let value =
                        template_value(path, payload).map_err(|p| (path.text.clone(), p))?;
                    match context {
                        Context::Label => out.push_str(&value),
                        Context::Quoted => push_string_escaped(&mut out, &value),
                        Context::QuotedRegex => {
                            out.push_str("(?:");
                            push_string_escaped(&mut out, &regex_quote(&value));
                            out.push(')');
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

fn template_value<'a>(
    path: &ClaimPath,
    payload: &'a Value,
) -> Result<Cow<'a, str>, TemplateProblem> {
    let value = match path.lookup(payload) {
        None => return Err(TemplateProblem::Missing),
        Some(Value::Array(_)) => return Err(TemplateProblem::Array),
        Some(v) => scalar_text(v).ok_or(TemplateProblem::NotScalar)?,
    };
    if value.is_empty() {
        return Err(TemplateProblem::Empty);
    }
    if value.len() > MAX_INSERTED_VALUE {
        return Err(TemplateProblem::TooLong);
    }
    Ok(value)
}

/// Go's `regexp.QuoteMeta` set plus `-`, so the text is literal in RE2 (VictoriaMetrics) and in Rust's
/// regex alike, also next to a character class range the file's author wrote.
fn regex_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if "\\.+*?()|[]{}^$-".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Walks a selector the way MetricsQL's lexer does: strings are `"..."` (escapes checked as Go's
/// `strconv.Unquote` would), `'...'` or `` `...` ``; templates are collected from double-quoted values.
struct FilterScan<'a> {
    text: &'a str,
    bytes: &'a [u8],
    parts: Vec<Part>,
    /// Start of the literal text not yet pushed into `parts`.
    literal_from: usize,
}

impl FilterScan<'_> {
    fn run(&mut self) -> Result<(), String> {
        let mut i = 0;
        // The last two non-blank bytes outside strings: the operator before a value.
        let mut last = [0u8; 2];
        let mut comment_at = None;
        while i < self.bytes.len() {
            match self.bytes[i] {
                b'"' => {
                    let context = match last {
                        [b'=' | b'!', b'~'] => Some(Context::QuotedRegex),
                        [_, b'='] => Some(Context::Quoted),
                        _ => None,
                    };
                    i = self.double_quoted(i, context)?;
                    last = [last[1], b'"'];
                }
                q @ (b'\'' | b'`') => {
                    i = self.other_quoted(i, q)?;
                    last = [last[1], q];
                }
                b'{' if self.bytes.get(i + 1) == Some(&b'{') => {
                    return Err(format!(
                        "character {}: a template in extra_filters must sit inside a double-quoted label value, as in {{owner=\"{{{{email}}}}\"}}",
                        self.position(i)
                    ));
                }
                b => {
                    if b == b'#' {
                        comment_at.get_or_insert(i);
                    }
                    if !b.is_ascii_whitespace() {
                        last = [last[1], b];
                    }
                    i += 1;
                }
            }
        }
        let templated = self.parts.iter().any(|p| matches!(p, Part::Claim { .. }));
        if let (Some(at), true) = (comment_at, templated) {
            // A comment hides quotes from MetricsQL's lexer; refusing it keeps its view of where
            // strings are and ours the same.
            return Err(format!(
                "character {}: a filter with templates cannot hold a `#` comment",
                self.position(at)
            ));
        }
        Ok(())
    }

    fn position(&self, byte: usize) -> usize {
        self.text[..byte].chars().count() + 1
    }

    /// Scans the `"` string at `start`; returns the index after its closing quote.
    fn double_quoted(&mut self, start: usize, context: Option<Context>) -> Result<usize, String> {
        let mut i = start + 1;
        // The string's value as VictoriaMetrics will read it, templates replaced by named groups, to
        // check that each template in a regex stands where a literal could.
        let mut decoded = String::new();
        let mut templates = 0usize;
        loop {
            let Some(&b) = self.bytes.get(i) else {
                return Err(format!(
                    "character {}: unterminated double-quoted string",
                    self.position(start)
                ));
            };
            match b {
                b'"' => {
                    i += 1;
                    break;
                }
                b'\n' => {
                    return Err(format!(
                        "character {}: a raw newline cannot be inside a double-quoted string; write \\n",
                        self.position(i)
                    ))
                }
                b'\\' => {
                    let (len, c) = go_escape(&self.bytes[i..]).ok_or_else(|| {
                        format!(
                            "character {}: invalid escape in a double-quoted string",
                            self.position(i)
                        )
                    })?;
                    decoded.push(c);
                    i += len;
                }
                b'{' if self.bytes.get(i + 1) == Some(&b'{') => {
                    let Some(context) = context else {
                        return Err(format!(
                            "character {}: a template may only be a label value, after =, !=, =~ or !~; never a label or metric name",
                            self.position(i)
                        ));
                    };
                    let inner_start = i + 2;
                    let inner_len = self.text[inner_start..].find("}}").ok_or_else(|| {
                        format!("character {}: unterminated template", self.position(i))
                    })?;
                    let path = ClaimPath::parse(self.text[inner_start..inner_start + inner_len].trim())?;
                    if self.literal_from < i {
                        self.parts
                            .push(Part::Text(self.text[self.literal_from..i].to_owned()));
                    }
                    self.parts.push(Part::Claim { path, context });
                    let _ = write!(decoded, "(?P<{TEMPLATE_GROUP}{templates}>x)");
                    templates += 1;
                    i = inner_start + inner_len + 2;
                    self.literal_from = i;
                }
                _ => {
                    let c = self.text[i..].chars().next().unwrap_or('\u{fffd}');
                    decoded.push(c);
                    i += c.len_utf8();
                }
            }
        }
        if templates > 0 && context == Some(Context::QuotedRegex) {
            check_regex_slots(&decoded, templates).map_err(|m| {
                format!("the regex value at character {}: {m}", self.position(start))
            })?;
        }
        Ok(i)
    }

    fn other_quoted(&self, start: usize, quote: u8) -> Result<usize, String> {
        let mut i = start + 1;
        while let Some(&b) = self.bytes.get(i) {
            if b == quote {
                return Ok(i + 1);
            }
            if b == b'{' && self.bytes.get(i + 1) == Some(&b'{') {
                return Err(format!(
                    "character {}: templates are only allowed inside double-quoted values",
                    self.position(i)
                ));
            }
            // MetricsQL's lexer skips an escaped quote in every kind of string, raw ones included.
            i += if b == b'\\' { 2 } else { 1 };
        }
        Err(format!(
            "character {}: unterminated string",
            self.position(start)
        ))
    }
}

/// Reads one Go string escape at the start of `s` (which begins with `\`): its length in bytes and the
/// character it stands for (a byte above 0x7f as U+FFFD: only its position matters here). `None` for
/// what `strconv.Unquote` refuses in a double-quoted string.
fn go_escape(s: &[u8]) -> Option<(usize, char)> {
    let hex = |digits: &[u8]| -> Option<u32> {
        let text = std::str::from_utf8(digits).ok()?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(text, 16).ok()
    };
    let byte_char = |v: u32| {
        char::from_u32(v)
            .filter(char::is_ascii)
            .unwrap_or('\u{fffd}')
    };
    match *s.get(1)? {
        b'a' => Some((2, '\u{7}')),
        b'b' => Some((2, '\u{8}')),
        b'f' => Some((2, '\u{c}')),
        b'n' => Some((2, '\n')),
        b'r' => Some((2, '\r')),
        b't' => Some((2, '\t')),
        b'v' => Some((2, '\u{b}')),
        b'\\' => Some((2, '\\')),
        b'"' => Some((2, '"')),
        b'x' => Some((4, byte_char(hex(s.get(2..4)?)?))),
        b'u' => Some((6, char::from_u32(hex(s.get(2..6)?)?)?)),
        b'U' => Some((10, char::from_u32(hex(s.get(2..10)?)?)?)),
        b'0'..=b'7' => {
            let digits = s.get(1..4)?;
            if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                return None;
            }
            let v = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
            (v <= 255).then(|| (4, byte_char(v)))
        }
        _ => None,
    }
}

/// Compiles the regex value with a named group where each template stands: the group survives only
/// where a literal could be (not in a class, after a backslash, in a group's flags or a repetition).
fn check_regex_slots(decoded: &str, templates: usize) -> Result<(), String> {
    // The regex crate's own message would show the stand-in group, not the file's text.
    let re = Regex::new(decoded).map_err(|_| {
        "does not compile with a literal where the template stands: a template must stand where a \
         literal could (not after a backslash, in a character class, a repetition or a group's flags), \
         and the rest must be valid RE2"
            .to_string()
    })?;
    for k in 0..templates {
        let name = format!("{TEMPLATE_GROUP}{k}");
        if !re.capture_names().flatten().any(|n| n == name) {
            return Err(
                "a template must not sit inside a character class, after a backslash or inside a group's flags"
                    .into(),
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Loading

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "grants file")]
struct RawFile {
    grants: Option<Vec<Spanned<RawGrant>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "grant")]
struct RawGrant {
    claims: Option<Spanned<Pairs>>,
    vm_access: Option<Spanned<RawAccess>>,
}

/// `vm_access` in either layout, strict about keys and types; `claims.rs` then applies its rules.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "vm_access")]
struct RawAccess {
    tenant_id: Option<Spanned<RawTenant>>,
    extra_labels: Option<Spanned<Pairs>>,
    extra_filters: Option<Vec<Spanned<String>>>,
    mode: Option<Spanned<Number>>,
    metrics_account_id: Option<Spanned<Number>>,
    metrics_project_id: Option<Spanned<Number>>,
    metrics_extra_labels: Option<Vec<Spanned<String>>>,
    metrics_extra_filters: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "tenant_id")]
struct RawTenant {
    account_id: Option<Spanned<Number>>,
    project_id: Option<Spanned<Number>>,
}

/// A mapping of strings kept in file order (duplicate keys are refused by serde-saphyr).
struct Pairs(Vec<(Spanned<String>, Spanned<String>)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of names to strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Spanned<String>>()?;
                    pairs.push((key, value));
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(PairsVisitor)
    }
}

/// A non-negative whole number, with a pointed message for a template where none may be.
struct Number(u64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NumberVisitor;
        impl Visitor<'_> for NumberVisitor {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative whole number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                u64::try_from(v)
                    .map(Number)
                    .map_err(|_| E::custom("must not be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                // YAML reads integers too large for 64 bits as floats, so say both.
                Err(E::custom(format!(
                    "must be a whole number that fits in 32 bits, not {v}"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Number, E> {
                if v.contains("{{") {
                    Err(E::custom(
                        "tenants and mode never come from templates: claims choose a grant, they do not fill in its tenant",
                    ))
                } else {
                    Err(E::custom("must be a number, not a string"))
                }
            }
        }
        d.deserialize_any(NumberVisitor)
    }
}

fn at(location: &Location, message: impl Into<String>) -> GrantsError {
    GrantsError {
        line: location.line(),
        column: location.column(),
        message: message.into(),
    }
}

fn yaml_error(e: serde_saphyr::Error) -> GrantsError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let mut message = e.without_snippet().to_string();
    if let Some(plain) = message.strip_suffix(&format!(" at line {line}, column {column}")) {
        message = plain.to_owned();
    }
    GrantsError {
        line,
        column,
        message,
    }
}

#[derive(Default)]
struct Builder {
    /// One per distinct claim path, in the order conditions first name them.
    paths: Vec<PathPatterns>,
}

struct PathPatterns {
    path: ClaimPath,
    /// The file's patterns, deduplicated, each with its anchored compiled form.
    patterns: Vec<(String, Regex)>,
    /// Where the first condition on the path stands, for a set that fails to build.
    first: Location,
}

impl Builder {
    fn grant(&mut self, raw: Spanned<RawGrant>) -> Result<Grant, GrantsError> {
        let here = raw.referenced;
        let grant = raw.value;
        let claims = match grant.claims {
            Some(c) if !c.value.0.is_empty() => c,
            Some(c) => return Err(at(&c.referenced, NO_CLAIMS)),
            None => return Err(at(&here, NO_CLAIMS)),
        };
        let mut conditions = Vec::with_capacity(claims.value.0.len());
        for (key, pattern) in claims.value.0 {
            let path = ClaimPath::parse(key.value.trim()).map_err(|m| at(&key.referenced, m))?;
            conditions.push(self.condition(path, &pattern)?);
        }
        let Some(vm_access) = grant.vm_access else {
            return Err(at(
                &here,
                "this grant has no `vm_access`: write what it grants, e.g. `vm_access: {tenant_id: {account_id: 0, project_id: 0}}`",
            ));
        };
        let access = access_template(vm_access)?;
        Ok(Grant {
            line: here.line(),
            conditions,
            access,
        })
    }

    fn condition(
        &mut self,
        path: ClaimPath,
        pattern: &Spanned<String>,
    ) -> Result<(usize, usize), GrantsError> {
        let text = &pattern.value;
        if text.contains("{{") {
            return Err(at(
                &pattern.referenced,
                "claim patterns are regular expressions, not templates",
            ));
        }
        // Compiled alone first: a pattern like `a)|(b` would otherwise escape the anchors below.
        Regex::new(text).map_err(|e| {
            at(
                &pattern.referenced,
                format!("invalid regular expression for claim {}: {e}", path.text),
            )
        })?;
        let compiled = Regex::new(&format!("^(?:{text})$")).map_err(|e| {
            at(
                &pattern.referenced,
                format!("invalid regular expression for claim {}: {e}", path.text),
            )
        })?;
        let index = match self
            .paths
            .iter()
            .position(|p| p.path.segments == path.segments)
        {
            Some(i) => i,
            None => {
                self.paths.push(PathPatterns {
                    path,
                    patterns: Vec::new(),
                    first: pattern.referenced,
                });
                self.paths.len() - 1
            }
        };
        let entry = &mut self.paths[index];
        // Grants often repeat a condition (`iss`); one pattern serves them all.
        if let Some(existing) = entry.patterns.iter().position(|(p, _)| p == text) {
            return Ok((index, existing));
        }
        entry.patterns.push((text.clone(), compiled));
        Ok((index, entry.patterns.len() - 1))
    }

    fn finish(self) -> Result<Vec<PathMatcher>, GrantsError> {
        self.paths
            .into_iter()
            .map(|p| {
                let total = p.patterns.len();
                let mut literals = HashMap::new();
                let mut others: Vec<(usize, String, Regex)> = Vec::new();
                for (i, (text, compiled)) in p.patterns.into_iter().enumerate() {
                    if is_literal(&text) {
                        literals.insert(text, i);
                    } else {
                        others.push((i, text, compiled));
                    }
                }
                let ids: Vec<usize> = others.iter().map(|(i, _, _)| *i).collect();
                let regexes = match others.len() {
                    0 => None,
                    1 => others.pop().map(|(_, _, re)| (Patterns::One(re), ids)),
                    _ => {
                        let anchored = others.iter().map(|(_, t, _)| format!("^(?:{t})$"));
                        let set = RegexSet::new(anchored).map_err(|e| {
                            at(
                                &p.first,
                                format!(
                                    "the patterns for claim {} do not compile together: {e}",
                                    p.path.text
                                ),
                            )
                        })?;
                        Some((Patterns::Set(set), ids))
                    }
                };
                Ok(PathMatcher {
                    path: p.path,
                    total,
                    literals,
                    regexes,
                })
            })
            .collect()
    }
}

/// Whether an anchored pattern can only match its own text: no character with a meaning in regex
/// syntax (`#` and spaces mean something only under `(?x)`, which needs a parenthesis).
fn is_literal(pattern: &str) -> bool {
    !pattern.contains(|c| "\\.+*?()|[]{}^$".contains(c))
}

const NO_CLAIMS: &str = "this grant has no `claims`: a grant for every token would give this access to every token the identity provider issues; name at least one claim (e.g. `iss` or `aud`)";

fn access_template(raw: Spanned<RawAccess>) -> Result<AccessTemplate, GrantsError> {
    let here = raw.referenced;
    let access = raw.value;
    let mut json = Map::new();
    let number = |n: &Spanned<Number>| Value::from(n.value.0);
    if let Some(t) = &access.tenant_id {
        let mut tenant = Map::new();
        if let Some(a) = &t.value.account_id {
            tenant.insert("account_id".into(), number(a));
        }
        if let Some(p) = &t.value.project_id {
            tenant.insert("project_id".into(), number(p));
        }
        json.insert("tenant_id".into(), Value::Object(tenant));
    }
    // Where each label's value and each filter stands, for template errors.
    let mut label_locations: Vec<(String, Location)> = Vec::new();
    if let Some(labels) = &access.extra_labels {
        let mut map = Map::new();
        for (name, value) in &labels.value.0 {
            if name.value.contains("{{") {
                return Err(at(&name.referenced, LABEL_NAME_TEMPLATE));
            }
            map.insert(name.value.clone(), Value::from(value.value.as_str()));
            label_locations.push((name.value.clone(), value.referenced));
        }
        json.insert("extra_labels".into(), Value::Object(map));
    }
    if let Some(entries) = &access.metrics_extra_labels {
        for entry in entries {
            let name = entry
                .value
                .split_once('=')
                .map_or(entry.value.as_str(), |(n, _)| n);
            if name.contains("{{") {
                return Err(at(&entry.referenced, LABEL_NAME_TEMPLATE));
            }
            label_locations.push((name.to_owned(), entry.referenced));
        }
        json.insert(
            "metrics_extra_labels".into(),
            Value::from_iter(entries.iter().map(|e| e.value.as_str())),
        );
    }
    let strings =
        |list: &Vec<Spanned<String>>| Value::from_iter(list.iter().map(|s| s.value.as_str()));
    if let Some(filters) = &access.extra_filters {
        json.insert("extra_filters".into(), strings(filters));
    }
    if let Some(filters) = &access.metrics_extra_filters {
        json.insert("metrics_extra_filters".into(), strings(filters));
    }
    if let Some(mode) = &access.mode {
        json.insert("mode".into(), number(mode));
    }
    if let Some(a) = &access.metrics_account_id {
        json.insert("metrics_account_id".into(), number(a));
    }
    if let Some(p) = &access.metrics_project_id {
        json.insert("metrics_project_id".into(), number(p));
    }
    let parsed = claims::parse_vm_access(&Value::Object(json)).map_err(|e| {
        let m = match e {
            claims::ClaimError::VmAccess(m) | claims::ClaimError::Payload(m) => m,
        };
        at(&here, format!("invalid vm_access: {m}"))
    })?;

    let mut extra_labels = Vec::with_capacity(parsed.extra_labels.len());
    for (name, value) in parsed.extra_labels {
        let location = label_locations
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(here, |(_, l)| *l);
        let template = Template::label(&value).map_err(|m| at(&location, m))?;
        extra_labels.push((name, template));
    }
    let filter_locations: Vec<Location> = access
        .extra_filters
        .iter()
        .chain(access.metrics_extra_filters.iter())
        .flatten()
        .map(|s| s.referenced)
        .collect();
    let mut extra_filters = Vec::with_capacity(parsed.extra_filters.len());
    for (i, filter) in parsed.extra_filters.iter().enumerate() {
        let location = filter_locations.get(i).copied().unwrap_or(here);
        let template = Template::filter(filter)
            .map_err(|m| at(&location, format!("extra_filters entry {filter:?}: {m}")))?;
        extra_filters.push(template);
    }
    Ok(AccessTemplate {
        tenant: parsed.tenant,
        mode: parsed.mode,
        extra_labels,
        extra_filters,
    })
}

const LABEL_NAME_TEMPLATE: &str =
    "label names never come from templates: a claim may fill a label's value, not choose the label";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE: &str = r#"
grants:
  - claims:
      groups: "team-dev"
      iss: "https://idp\\.example\\.com"
    vm_access:
      tenant_id: {account_id: 0, project_id: 1}
      extra_labels: {team: dev}
      mode: 1
  - claims: {realm_access.roles: "metrics-admin"}
    vm_access: {tenant_id: {account_id: 0, project_id: 0}}
  - claims: {email: ".+@example\\.com"}
    vm_access: {extra_labels: {owner: "{{email}}"}}
"#;

    fn grants(yaml: &str) -> Grants {
        match Grants::parse(yaml) {
            Ok(g) => g,
            Err(e) => panic!("refused: {e}\n{yaml}"),
        }
    }

    fn refused(yaml: &str) -> GrantsError {
        match Grants::parse(yaml) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => e,
        }
    }

    /// A one-grant file matching `{"sub": "u"}` that grants `vm_access` (flow style).
    fn one(vm_access: &str) -> String {
        format!("grants:\n  - claims: {{sub: u}}\n    vm_access: {vm_access}\n")
    }

    fn labels(a: &Access) -> Vec<(&str, &str)> {
        a.extra_labels
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn example_file_resolves() {
        let g = grants(EXAMPLE);
        assert_eq!(g.len(), 3);
        let a = g
            .resolve(&json!({"iss": "https://idp.example.com", "groups": ["x", "team-dev"]}))
            .unwrap();
        assert_eq!(
            a.tenant,
            Tenant {
                account: 0,
                project: 1
            }
        );
        assert_eq!(labels(&a), [("team", "dev")]);
        assert_eq!(
            a.mode,
            Mode {
                read: true,
                write: false
            }
        );
        let a = g
            .resolve(&json!({"realm_access": {"roles": ["offline_access", "metrics-admin"]}}))
            .unwrap();
        assert_eq!(a.tenant, Tenant::default());
        assert!(!a.is_label_restricted());
        let a = g.resolve(&json!({"email": "ann@example.com"})).unwrap();
        assert_eq!(labels(&a), [("owner", "ann@example.com")]);
        assert_eq!(
            g.resolve(&json!({"email": "ann@evil.com"})),
            Err(NoGrant::NoMatch)
        );
        assert_eq!(g.resolve(&json!({})), Err(NoGrant::NoMatch));
    }

    #[test]
    fn all_claims_of_a_grant_must_match() {
        let g = grants(EXAMPLE);
        // groups matches, iss does not: the first grant is skipped.
        let r = g.resolve(&json!({"iss": "https://other", "groups": "team-dev"}));
        assert_eq!(r, Err(NoGrant::NoMatch));
        // An unescaped `.` in the file's iss would match this; `\.` does not.
        let r = g.resolve(&json!({"iss": "https://idpXexample.com", "groups": "team-dev"}));
        assert_eq!(r, Err(NoGrant::NoMatch));
    }

    #[test]
    fn first_matching_grant_applies() {
        let g = grants(
            "grants:
  - claims: {groups: admin}
    vm_access: {tenant_id: {account_id: 1}}
  - claims: {groups: 'admin|dev'}
    vm_access: {tenant_id: {account_id: 2}}
",
        );
        let t = |v| g.resolve(&v).unwrap().tenant.account;
        assert_eq!(t(json!({"groups": ["dev", "admin"]})), 1);
        assert_eq!(t(json!({"groups": ["dev"]})), 2);
    }

    #[test]
    fn patterns_are_anchored() {
        let g = grants("grants:\n  - claims: {groups: dev}\n    vm_access: {}\n");
        for no in ["devops", "notdev", "dev\n", " dev", ""] {
            assert_eq!(
                g.resolve(&json!({ "groups": no })),
                Err(NoGrant::NoMatch),
                "{no:?}"
            );
        }
        assert!(g.resolve(&json!({"groups": "dev"})).is_ok());
        // A pattern that would break out of `^(?:...)$` is refused, not un-anchored.
        let e = refused("grants:\n  - claims: {groups: 'a)|(b'}\n    vm_access: {}\n");
        assert_eq!((e.line, e.column), (2, 22), "{e}");
        assert!(
            e.message
                .contains("invalid regular expression for claim groups"),
            "{e}"
        );
        // Multi-line mode inside the pattern does not reach the anchors.
        let g = grants("grants:\n  - claims: {groups: '(?m)dev'}\n    vm_access: {}\n");
        assert_eq!(
            g.resolve(&json!({"groups": "x\ndev"})),
            Err(NoGrant::NoMatch)
        );
    }

    #[test]
    fn claim_value_types() {
        let g = grants(
            "grants:
  - claims: {n: '4[0-9]'}
    vm_access: {tenant_id: {account_id: 1}}
  - claims: {b: 'true'}
    vm_access: {tenant_id: {account_id: 2}}
  - claims: {f: '1\\.5'}
    vm_access: {tenant_id: {account_id: 3}}
  - claims: {o: '.*'}
    vm_access: {tenant_id: {account_id: 4}}
",
        );
        let t = |v| g.resolve(&v).map(|a| a.tenant.account);
        assert_eq!(t(json!({"n": 42})), Ok(1));
        assert_eq!(t(json!({"n": [1, "x", 41]})), Ok(1));
        assert_eq!(t(json!({"n": -42})), Err(NoGrant::NoMatch));
        assert_eq!(t(json!({"b": true})), Ok(2));
        assert_eq!(t(json!({"b": "true"})), Ok(2));
        assert_eq!(t(json!({"b": [false, true]})), Ok(2));
        assert_eq!(t(json!({"f": 1.5})), Ok(3));
        // Objects, null and nested arrays never match, not even `.*`.
        for v in [
            json!({}),
            json!(null),
            json!([[1]]),
            json!([{}]),
            json!([null]),
        ] {
            assert_eq!(t(json!({ "o": v })), Err(NoGrant::NoMatch), "{v}");
        }
        // A missing claim never matches, not even `.*`.
        assert_eq!(t(json!({"x": 1})), Err(NoGrant::NoMatch));
        // An empty array has no element to match.
        assert_eq!(t(json!({"o": []})), Err(NoGrant::NoMatch));
    }

    #[test]
    fn claim_paths() {
        let g = grants(
            r#"grants:
  - claims: {a.b: y}
    vm_access: {tenant_id: {account_id: 1}}
  - claims: {a\.b: x}
    vm_access: {tenant_id: {account_id: 2}}
  - claims: {https://example\.com/groups: team}
    vm_access: {tenant_id: {account_id: 3}}
  - claims: {resource_access.my\.client.roles: reader}
    vm_access: {tenant_id: {account_id: 4}}
  - claims: {groups.1: second}
    vm_access: {tenant_id: {account_id: 5}}
  - claims: {'back\\slash': z}
    vm_access: {tenant_id: {account_id: 6}}
  - claims: {'urn:zitadel:iam:org:id': '1'}
    vm_access: {tenant_id: {account_id: 7}}
"#,
        );
        let t = |v| g.resolve(&v).map(|a| a.tenant.account);
        // The path decides which value is read, whatever other keys the token has.
        assert_eq!(t(json!({"a.b": "x", "a": {"b": "y"}})), Ok(1));
        assert_eq!(t(json!({"a.b": "x", "a": {"b": "no"}})), Ok(2));
        assert_eq!(t(json!({"a.b": "y"})), Err(NoGrant::NoMatch));
        assert_eq!(t(json!({"https://example.com/groups": ["team"]})), Ok(3));
        assert_eq!(
            t(json!({"resource_access": {"my.client": {"roles": ["reader"]}}})),
            Ok(4)
        );
        assert_eq!(t(json!({"groups": ["first", "second"]})), Ok(5));
        assert_eq!(t(json!({"groups": {"1": "second"}})), Ok(5));
        assert_eq!(t(json!({"back\\slash": "z"})), Ok(6));
        assert_eq!(t(json!({"urn:zitadel:iam:org:id": "1"})), Ok(7));
        assert_eq!(t(json!({"a": "not an object"})), Err(NoGrant::NoMatch));
    }

    #[test]
    fn bad_claim_paths_are_refused() {
        for (key, needle) in [
            ("https://example.com/groups", r#"\\.com/groups"#),
            ("a..b", "empty part"),
            (".a", "empty part"),
            ("'a.'", "empty part"),
            (r"'a\b'", "backslash"),
            (r"'a\'", "backslash"),
            ("'{{x}}'", "brace"),
            ("'a{b'", "brace"),
        ] {
            let e = refused(&format!(
                "grants:\n  - claims: {{{key}: x}}\n    vm_access: {{}}\n"
            ));
            assert_eq!(e.line, 2, "{key}: {e}");
            assert!(e.message.contains(needle), "{key}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_at_every_level() {
        let cases = [
            (
                "grant:\n  - claims: {a: b}\n    vm_access: {}\n",
                1,
                "grant",
            ),
            (
                "grants:\n  - claim: {a: b}\n    vm_access: {}\n",
                2,
                "claim",
            ),
            (
                "grants:\n  - claims: {a: b}\n    vm_acess: {}\n",
                3,
                "vm_acess",
            ),
            (
                "grants:\n  - claims: {a: b}\n    vm_access:\n      extra_label: {team: a}\n",
                4,
                "extra_label",
            ),
            (
                "grants:\n  - claims: {a: b}\n    vm_access:\n      tenant_id: {account: 1}\n",
                4,
                "account",
            ),
        ];
        for (yaml, line, key) in cases {
            let e = refused(yaml);
            assert_eq!(e.line, line, "{e}");
            assert!(e.message.contains(&format!("unknown field `{key}`")), "{e}");
            assert!(e
                .to_string()
                .starts_with(&format!("grants file line {line}, column ")));
        }
    }

    #[test]
    fn structural_problems_are_refused() {
        let no_claims = refused("grants:\n  - vm_access: {}\n");
        assert_eq!(no_claims.line, 2);
        assert!(no_claims.message.contains("no `claims`"));
        let empty_claims = refused("grants:\n  - claims: {}\n    vm_access: {}\n");
        assert_eq!(empty_claims.line, 2);
        assert!(empty_claims.message.contains("no `claims`"));
        let null_claims = refused("grants:\n  - claims:\n    vm_access: {}\n");
        assert!(null_claims.message.contains("no `claims`"));
        let no_access = refused("grants:\n  - claims: {a: b}\n");
        assert_eq!(no_access.line, 2);
        assert!(no_access.message.contains("no `vm_access`"));
        for empty in ["", "grants: []\n", "grants:\n", "# nothing\n"] {
            let e = Grants::parse(empty)
                .err()
                .unwrap_or_else(|| panic!("{empty:?}"));
            assert!(e.message.contains("grants") || e.line > 0, "{empty:?}: {e}");
        }
        let dup = refused("grants:\n  - claims: {a: b, a: c}\n    vm_access: {}\n");
        assert!(dup.message.contains("duplicate"), "{dup}");
        let list = refused("grants:\n  - claims: {a: [b, c]}\n    vm_access: {}\n");
        assert_eq!(list.line, 2);
        let string_access = refused("grants:\n  - claims: {a: b}\n    vm_access: '{}'\n");
        assert_eq!(string_access.line, 3);
        let not_yaml = refused("grants: [\n");
        assert_eq!(not_yaml.line, 1);
    }

    #[test]
    fn invalid_regex_names_line_and_column() {
        let e = refused(
            "grants:\n  - claims:\n      iss: x\n      groups: 'team-(dev'\n    vm_access: {}\n",
        );
        assert_eq!((e.line, e.column), (4, 15), "{e}");
        assert!(e.message.contains("claim groups"), "{e}");
    }

    #[test]
    fn vm_access_follows_claims_rules() {
        let cases = [
            (
                "{tenant_id: {account_id: 1}, metrics_project_id: 2}",
                "mixes",
            ),
            ("{mode: 4}", "mode"),
            ("{extra_labels: {bad-name: x}}", "label name"),
            ("{metrics_extra_labels: [novalue]}", "name=value"),
            ("{metrics_extra_labels: ['a=1', 'a=2']}", "duplicate"),
            ("{tenant_id: {account_id: 4294967296}}", "u32"),
            ("{extra_filters: ['  ']}", "empty"),
        ];
        for (access, needle) in cases {
            let e = refused(&one(access));
            assert_eq!((e.line, e.column), (3, 16), "{access}: {e}");
            assert!(e.message.contains(needle), "{access}: {e}");
        }
        for (access, needle) in [
            ("{mode: -1}", "negative"),
            ("{mode: 1.5}", "whole"),
            ("{mode: '1'}", "not a string"),
            ("{extra_filters: '{a=\"b\"}'}", ""),
        ] {
            let e = refused(&one(access));
            assert_eq!(e.line, 3, "{access}: {e}");
            assert!(e.message.contains(needle), "{access}: {e}");
        }
        // Both layouts work, YAML scalars are label values as written.
        let g = grants(&one(
            "{metrics_account_id: 2, metrics_project_id: 3, metrics_extra_labels: ['team=dev', 'v=1.10'], metrics_extra_filters: ['{a=\"b\"}']}",
        ));
        let a = g.resolve(&json!({"sub": "u"})).unwrap();
        assert_eq!(
            a.tenant,
            Tenant {
                account: 2,
                project: 3
            }
        );
        assert_eq!(labels(&a), [("team", "dev"), ("v", "1.10")]);
        assert_eq!(a.extra_filters, [r#"{a="b"}"#]);
        let g = grants(&one("{extra_labels: {env: NO, v: 1.10}}"));
        let a = g.resolve(&json!({"sub": "u"})).unwrap();
        assert_eq!(labels(&a), [("env", "NO"), ("v", "1.10")]);
    }

    #[test]
    fn parse_vm_access_matches_the_token_rules() {
        let object = json!({"tenant_id": {"account_id": 3}, "extra_labels": {"team": "dev"}});
        let text = Value::from(object.to_string());
        let a = claims::parse_vm_access(&object).unwrap();
        assert_eq!(claims::parse_vm_access(&text).unwrap(), a);
        let token = format!(r#"{{"exp":1,"vm_access":{object}}}"#);
        assert_eq!(
            claims::parse_claims(token.as_bytes()).unwrap().access,
            Some(a)
        );
        assert!(claims::parse_vm_access(&json!({"mode": 9})).is_err());
        assert!(claims::parse_vm_access(&json!([1])).is_err());
    }

    #[test]
    fn templates_in_wrong_places_are_refused() {
        let cases = [
            ("{tenant_id: {account_id: '{{n}}'}}", "tenants and mode"),
            ("{tenant_id: {project_id: '{{n}}'}}", "tenants and mode"),
            ("{metrics_account_id: '{{n}}'}", "tenants and mode"),
            ("{mode: '{{n}}'}", "tenants and mode"),
            ("{extra_labels: {'{{n}}': x}}", "label names"),
            ("{metrics_extra_labels: ['{{n}}=x']}", "label names"),
            ("{extra_labels: {a: '{{n'}}", "unterminated"),
            ("{extra_labels: {a: '{{}}'}}", "empty part"),
            ("{extra_labels: {a: '{{.email}}'}}", "empty part"),
            (
                "{extra_filters: ['{a={{n}}}']}",
                "double-quoted label value",
            ),
            ("{extra_filters: ['{{n}}']}", "double-quoted label value"),
            (
                "{extra_filters: ['{\"{{n}}\"=\"x\"}']}",
                "never a label or metric name",
            ),
            (
                "{extra_filters: ['{{{n}}=\"x\"}']}",
                "double-quoted label value",
            ),
            (
                "{extra_filters: ['up{\"{{n}}\"}']}",
                "never a label or metric name",
            ),
            (
                "{extra_filters: ['{a=''{{n}}''}']}",
                "only allowed inside double-quoted",
            ),
            (
                "{extra_filters: ['{a=`{{n}}`}']}",
                "only allowed inside double-quoted",
            ),
            ("{extra_filters: ['{a=\"{{n}}']}", "unterminated"),
            ("{extra_filters: ['{a=\"{{n\"}']}", "unterminated template"),
            (
                "{extra_filters: ['{a=~\"\\\\{{n}}\"}']}",
                "where a literal could",
            ),
            ("{extra_filters: ['{a=~\"[{{n}}]\"}']}", "character class"),
            ("{extra_filters: ['{a=~\"(?{{n}})\"}']}", "does not compile"),
            ("{extra_filters: ['{a=~\"x{{{n}}}\"}']}", ""),
            ("{extra_filters: ['{a=~\"\\\\Q{{n}}\"}']}", "compile"),
            ("{extra_filters: ['{a=\"\\q{{n}}\"}']}", "invalid escape"),
            ("{extra_filters: [\"{a=\\\"{{n}}\\\" # c\\n}\"]}", "comment"),
            (
                "{extra_filters: [\"{a=\\\"x\\ny{{n}}\\\"}\"]}",
                "raw newline",
            ),
        ];
        for (access, needle) in cases {
            let e = refused(&one(access));
            assert_eq!(e.line, 3, "{access}: {e}");
            assert!(e.message.contains(needle), "{access}: {e}");
        }
        let e = refused("grants:\n  - claims: {a: '{{b}}'}\n    vm_access: {}\n");
        assert!(e.message.contains("not templates"), "{e}");
    }

    #[test]
    fn templates_fill_labels_and_filters() {
        let g = grants(&one(
            r#"{extra_labels: {owner: 'user-{{ email }}', tid: '{{n}}'}, extra_filters: ['{owner="{{email}}",env!="x"}', '{team=~"{{team}}|shared"}', '{a!~"{{n}}"}', "up{b='lit'}"]}"#,
        ));
        let a = g
            .resolve(&json!({"sub": "u", "email": "a.b@c", "team": "dev.*", "n": 7}))
            .unwrap();
        assert_eq!(labels(&a), [("owner", "user-a.b@c"), ("tid", "7")]);
        assert_eq!(
            a.extra_filters,
            [
                r#"{owner="a.b@c",env!="x"}"#,
                r#"{team=~"(?:dev\\.\\*)|shared"}"#,
                r#"{a!~"(?:7)"}"#,
                "up{b='lit'}",
            ]
        );
    }

    #[test]
    fn template_in_a_regex_may_stand_where_a_literal_could() {
        let g = grants(&one(
            r#"{extra_filters: ['{a=~"(?i)pre-{{x}}(-[a-z]+)?"}', '{a=~"[a-z]{{x}}"}', '{a=~"\\.{{x}}"}', '{a=~"{{x}}{2}"}']}"#,
        ));
        let a = g.resolve(&json!({"sub": "u", "x": "a-b"})).unwrap();
        assert_eq!(
            a.extra_filters,
            [
                r#"{a=~"(?i)pre-(?:a\\-b)(-[a-z]+)?"}"#,
                r#"{a=~"[a-z](?:a\\-b)"}"#,
                r#"{a=~"\\.(?:a\\-b)"}"#,
                r#"{a=~"(?:a\\-b){2}"}"#,
            ]
        );
    }

    /// Reads a Go double-quoted string's content back, as VictoriaMetrics will.
    fn go_unquote(inner: &str) -> Option<String> {
        let b = inner.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'"' | b'\n' => return None,
                b'\\' => {
                    let (len, c) = go_escape(&b[i..])?;
                    if b[i + 1] == b'x' {
                        out.push(u8::from_str_radix(&inner[i + 2..i + 4], 16).ok()?);
                    } else {
                        let mut buf = [0; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                    i += len;
                }
                other => {
                    out.push(other);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).ok()
    }

    const HOSTILE: &[&str] = &[
        r#"dev",team=~".*"#,
        r#"dev"} or {team=~".*"#,
        r#"\"#,
        r#"\\"#,
        r#"a\"b"#,
        "{{email}}",
        "}}",
        "a\nb",
        "a\r\n",
        "nul\0byte",
        "\u{7f}\u{1b}[0m",
        ".*",
        "a|b",
        "(?i)x",
        "[a-z]",
        "^$",
        "x{1,3}",
        r"\d+",
        "é☃𝄞",
        "'single'",
        "`tick`",
        "# comment",
        "a=b&c=d%20",
    ];

    #[test]
    fn hostile_values_stay_values() {
        let g = grants(&one(
            r#"{extra_labels: {owner: '{{v}}'}, extra_filters: ['{owner="{{v}}"}', '{owner=~"{{v}}"}']}"#,
        ));
        for &v in HOSTILE {
            let a = g.resolve(&json!({"sub": "u", "v": v})).unwrap();
            assert_eq!(labels(&a), [("owner", v)], "{v:?}");
            // Equality matcher: exactly one string, whose value reads back as the claim.
            let inner = a.extra_filters[0]
                .strip_prefix("{owner=\"")
                .and_then(|f| f.strip_suffix("\"}"))
                .unwrap();
            assert_eq!(go_unquote(inner).as_deref(), Some(v), "{v:?}");
            // Regex matcher: reads back as a regex matching exactly the claim.
            let inner = a.extra_filters[1]
                .strip_prefix("{owner=~\"")
                .and_then(|f| f.strip_suffix("\"}"))
                .unwrap();
            let regex = go_unquote(inner).unwrap();
            let re = Regex::new(&format!("^(?:{regex})$")).unwrap();
            assert!(re.is_match(v), "{v:?} -> {regex}");
            for other in ["", "x", "dev", ".*", "a", "b"] {
                assert_eq!(
                    re.is_match(other),
                    other == v,
                    "{v:?} -> {regex} vs {other:?}"
                );
            }
            let longer = format!("{v}x");
            assert!(!re.is_match(&longer), "{v:?}");
        }
    }

    #[test]
    fn hostile_values_in_conditions_do_not_match_broadly() {
        let g = grants("grants:\n  - claims: {groups: 'team-dev'}\n    vm_access: {}\n");
        for &v in HOSTILE {
            assert_eq!(
                g.resolve(&json!({ "groups": [v] })),
                Err(NoGrant::NoMatch),
                "{v:?}"
            );
        }
        let long = "team-dev".repeat(100_000);
        assert!(g.resolve(&json!({ "groups": long })).is_err());
    }

    #[test]
    fn template_failures_refuse_and_do_not_fall_through() {
        let g = grants(
            "grants:
  - claims: {groups: dev}
    vm_access: {extra_labels: {owner: '{{email}}'}}
  - claims: {groups: dev}
    vm_access: {}
",
        );
        let problem = |v: Value| match g.resolve(&v) {
            Err(NoGrant::Template {
                line,
                claim,
                problem,
            }) => {
                assert_eq!((line, claim.as_str()), (2, "email"));
                problem
            }
            other => panic!("{v}: {other:?}"),
        };
        assert_eq!(problem(json!({"groups": "dev"})), TemplateProblem::Missing);
        assert_eq!(
            problem(json!({"groups": "dev", "email": ["a", "b"]})),
            TemplateProblem::Array
        );
        assert_eq!(
            problem(json!({"groups": "dev", "email": {}})),
            TemplateProblem::NotScalar
        );
        assert_eq!(
            problem(json!({"groups": "dev", "email": null})),
            TemplateProblem::NotScalar
        );
        assert_eq!(
            problem(json!({"groups": "dev", "email": ""})),
            TemplateProblem::Empty
        );
        let long = "a".repeat(MAX_INSERTED_VALUE + 1);
        assert_eq!(
            problem(json!({"groups": "dev", "email": long})),
            TemplateProblem::TooLong
        );
        let fits = "a".repeat(MAX_INSERTED_VALUE);
        let a = g.resolve(&json!({"groups": "dev", "email": fits})).unwrap();
        assert_eq!(a.extra_labels[0].1.len(), MAX_INSERTED_VALUE);
        let shown = NoGrant::Template {
            line: 2,
            claim: "email".into(),
            problem: TemplateProblem::Missing,
        }
        .to_string();
        assert_eq!(
            shown,
            "grant at line 2: template {{email}}: the token has no such claim"
        );
    }

    #[test]
    fn caps_refuse_rather_than_truncate() {
        let g = grants(
            "grants:
  - claims: {groups: target}
    vm_access: {tenant_id: {account_id: 1}}
  - claims: {sub: u}
    vm_access: {tenant_id: {account_id: 2}}
",
        );
        let many = |at: Option<usize>, len: usize| {
            let items: Vec<Value> = (0..len)
                .map(|i| {
                    Value::from(if Some(i) == at {
                        "target".to_string()
                    } else {
                        format!("g{i}")
                    })
                })
                .collect();
            json!({"groups": items, "sub": "u"})
        };
        let t = |v: Value| g.resolve(&v).map(|a| a.tenant.account);
        // Decided within the cap: fine, whatever the array's length.
        assert_eq!(t(many(Some(5), 10_000)), Ok(1));
        assert_eq!(t(many(None, MAX_ARRAY_ELEMENTS)), Ok(2));
        // Undecided within the cap: refused, not judged on the first 1,000 elements.
        let undecided = Err(NoGrant::Undecidable {
            line: 2,
            claim: "groups".into(),
        });
        assert_eq!(t(many(None, 10_000)), undecided);
        assert_eq!(t(many(Some(9_999), 10_000)), undecided);
        // Text budget: one huge string, or many long ones.
        assert_eq!(
            t(json!({"groups": "x".repeat(1 << 20), "sub": "u"})),
            undecided
        );
        let long: Vec<String> = (0..100)
            .map(|i| format!("{i}{}", "y".repeat(1000)))
            .collect();
        assert_eq!(t(json!({"groups": long, "sub": "u"})), undecided);
        // A claim that no grant consults is never examined.
        let g2 = grants("grants:\n  - claims: {sub: u}\n    vm_access: {}\n");
        assert!(g2.resolve(&many(None, 10_000)).is_ok());
    }

    #[test]
    fn deep_nesting_is_harmless() {
        let g = grants("grants:\n  - claims: {a.a.a.a: x}\n    vm_access: {}\n");
        let mut deep = json!("x");
        for _ in 0..1000 {
            deep = json!({ "a": deep });
        }
        assert_eq!(g.resolve(&deep), Err(NoGrant::NoMatch));
        let mut shallow = json!("x");
        for _ in 0..4 {
            shallow = json!({ "a": shallow });
        }
        assert!(g.resolve(&shallow).is_ok());
        // serde_json itself stops at 128 levels when the payload comes from bytes.
        let text = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(serde_json::from_str::<Value>(&text).is_err());
    }

    #[test]
    fn explain_lists_each_grant_tried() {
        let g = grants(EXAMPLE);
        let e = g.explain(&json!({"email": "ann@example.com", "groups": "team-dev"}));
        assert_eq!(
            e.steps,
            [
                Step {
                    line: 3,
                    unmatched: Some("iss".into())
                },
                Step {
                    line: 10,
                    unmatched: Some("realm_access.roles".into())
                },
                Step {
                    line: 12,
                    unmatched: None
                },
            ]
        );
        let (line, access) = e.outcome.unwrap();
        assert_eq!(line, 12);
        assert_eq!(labels(&access), [("owner", "ann@example.com")]);
    }

    #[test]
    fn conditions_on_one_claim_share_a_set() {
        let mut yaml = String::from("grants:\n");
        for i in 0..50 {
            yaml.push_str(&format!(
                "  - claims: {{groups: team-{i}, iss: idp}}\n    vm_access: {{tenant_id: {{account_id: {i}}}}}\n"
            ));
        }
        let g = grants(&yaml);
        assert_eq!(g.matchers.len(), 2);
        let t = |v| g.resolve(&v).map(|a| a.tenant.account);
        assert_eq!(
            t(json!({"iss": "idp", "groups": ["x", "team-42", "team-7"]})),
            Ok(7)
        );
        assert_eq!(
            t(json!({"iss": "other", "groups": ["team-42"]})),
            Err(NoGrant::NoMatch)
        );
    }

    #[test]
    fn yaml_anchors_and_aliases_work() {
        let g = grants(
            "grants:
  - claims: &c {iss: idp, groups: dev}
    vm_access: {tenant_id: {account_id: 1}}
  - claims: {iss: idp}
    vm_access: {tenant_id: {account_id: 2}}
",
        );
        assert_eq!(
            g.resolve(&json!({"iss": "idp", "groups": "dev"}))
                .unwrap()
                .tenant
                .account,
            1
        );
    }

    #[test]
    fn string_escaping_and_quoting_helpers() {
        let mut s = String::new();
        push_string_escaped(&mut s, "a\"b\\c\nd\te\r\0\u{7f}é");
        assert_eq!(s, r#"a\"b\\c\nd\te\r\x00\x7fé"#);
        assert_eq!(
            regex_quote(r"a.b*c\d-e[f]{g}(h)|^$?+"),
            r"a\.b\*c\\d\-e\[f\]\{g\}\(h\)\|\^\$\?\+"
        );
        assert_eq!(go_escape(br"\x4g"), None);
        assert_eq!(go_escape(br"\777"), None);
        assert_eq!(go_escape(br"\101"), Some((4, 'A')));
        assert_eq!(go_escape(br"\u00e9"), Some((6, 'é')));
        assert_eq!(go_escape(br"\ud800"), None);
        assert_eq!(go_escape(br"\'"), None);
        assert_eq!(go_escape(b"\\"), None);
    }
}
