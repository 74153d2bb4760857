//! Prometheus' `/api/v1/rules` and `/api/v1/alerts` answers, filtered to what a grant may see. The backend
//! (Prometheus, Thanos, Mimir, Cortex) answers for everyone; these endpoints take no selector we could
//! enforce, so the answer itself is cut down before it reaches the client.
//!
//! The principle: show a rule or an alert only if the series it stands for would be visible to a query
//! under the same grant.
//! - An alert stands for the series `ALERTS{alertname=…, alertstate=…, <its labels>}`: it is shown when
//!   those labels carry the grant's labels and match its filter (a missing label is the empty string, as
//!   in PromQL). This is also how prom-label-proxy filters alerts.
//! - A recording rule stands for series `<name>{<query result labels>, <rule labels>}`, rule labels
//!   winning. Only the rule labels are known, so the rule is shown only when they alone pin every label the
//!   grant constrains (present and matching); then every series it writes belongs to the grant. Rule
//!   labels may be templates (`team: "{{ $labels.team }}"`); those pin nothing.
//!   A recording rule without the label is hidden: its series may belong to anyone, and its `lastError`
//!   can quote other teams' series.
//! - An alerting rule whose labels pin the grant (its alerts then all carry them, since rule labels
//!   override) is shown whole. An alerting rule without the label (a shared `up == 0` rule, say) is shown
//!   only if some of its alerts are visible, with just those alerts, its `state` recomputed from them, and
//!   its `lastError` removed, because error messages can quote series of other teams. Its definition
//!   (name, query text, annotation templates) stays visible: that is configuration, not series data, and
//!   prom-label-proxy's `-rules-with-active-alerts` shows the same. A shared rule with no visible alert is
//!   hidden.
//! - Rules of an unknown type are hidden; groups left without rules are dropped.
//!
//! Everything else is kept as the backend sent it, byte for byte inside the values we do not touch, in the
//! original key order (we do not use serde_json's `preserve_order`: it would change key order for every
//! `serde_json::Map` in tenantgate). Duplicate keys are refused: a consumer might read the other copy.
//! A non-`success` answer is passed on without its `data`. Note that with `exclude_alerts=true` the
//! backend sends no alerts, so shared alerting rules cannot be shown: strip that argument upstream.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::promql::Enforcement;

/// Which endpoint answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/api/v1/rules`: `data.groups[].rules[]`.
    Rules,
    /// `/api/v1/alerts`: `data.alerts[]`.
    Alerts,
}

/// Why an answer could not be filtered (the caller answers 502: we never pass on what we could not read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Not JSON, JSON with a value of the wrong type where we need to look, or an object we read with
    /// the same key twice.
    #[error("backend answer is not the JSON we expect: {0}")]
    Malformed(String),
}

/// Filters a rules or alerts answer to what `e` may see.
pub fn filter_rules(body: &[u8], kind: Kind, e: &Enforcement) -> Result<Vec<u8>, FilterError> {
    let text = std::str::from_utf8(body).map_err(|_| malformed("not UTF-8"))?;
    let top = Object::parse(text)?;
    let mut out = String::with_capacity(body.len());
    if top.string("status")? != Some("success") {
        top.write_with(&mut out, |key| (key == "data").then_some(Edit::Drop));
        return Ok(out.into_bytes());
    }
    let data = Object::parse(top.get("data").ok_or_else(|| malformed("no data"))?.get())?;
    let new_data = match kind {
        Kind::Rules => {
            let groups = array(data.get("groups"))?;
            let mut kept = Vec::new();
            for group in groups {
                if let Some(g) = filter_group(group, e)? {
                    kept.push(g);
                }
            }
            data.replaced("groups", &join_array(&kept))
        }
        Kind::Alerts => {
            let alerts = array(data.get("alerts"))?;
            let mut kept = Vec::new();
            for alert in alerts {
                if alert_visible(alert, e)?.0 {
                    kept.push(alert.get().to_owned());
                }
            }
            data.replaced("alerts", &join_array(&kept))
        }
    };
    top.write_with(&mut out, |key| {
        (key == "data").then(|| Edit::Replace(new_data.clone()))
    });
    Ok(out.into_bytes())
}

fn filter_group(raw: &RawValue, e: &Enforcement) -> Result<Option<String>, FilterError> {
    let group = Object::parse(raw.get())?;
    let mut kept = Vec::new();
    for rule in array(group.get("rules"))? {
        if let Some(r) = filter_rule(rule, e)? {
            kept.push(r);
        }
    }
    if kept.is_empty() {
        return Ok(None);
    }
    Ok(Some(group.replaced("rules", &join_array(&kept))))
}

fn filter_rule(raw: &RawValue, e: &Enforcement) -> Result<Option<String>, FilterError> {
    let rule = Object::parse(raw.get())?;
    let labels = Labels::parse(rule.get("labels"))?;
    match rule.string("type")? {
        Some("recording") => {
            let name = rule.string("name")?.unwrap_or_default();
            Ok(pins_grant(e, |l| {
                if l == "__name__" {
                    Some(name)
                } else {
                    labels.get(l)
                }
            })
            .then(|| raw.get().to_owned()))
        }
        Some("alerting") => {
            let name = rule.string("name")?.unwrap_or_default();
            let owned = pins_grant(e, |l| match l {
                "__name__" => Some("ALERTS"),
                "alertname" => Some(name),
                _ => labels.get(l),
            });
            let alerts = array(rule.get("alerts"))?;
            let mut kept = Vec::new();
            let (mut firing, mut pending) = (false, false);
            for alert in &alerts {
                let (visible, state) = alert_visible(alert, e)?;
                if visible {
                    kept.push(alert.get().to_owned());
                    firing |= state.as_deref() == Some("firing");
                    pending |= state.as_deref() == Some("pending");
                }
            }
            if owned && kept.len() == alerts.len() {
                return Ok(Some(raw.get().to_owned()));
            }
            if !owned && kept.is_empty() {
                return Ok(None);
            }
            let state = if firing {
                "firing"
            } else if pending {
                "pending"
            } else {
                "inactive"
            };
            let alerts_json = join_array(&kept);
            let state_json = serde_json::to_string(state).unwrap_or_default();
            let mut out = String::new();
            rule.write_with(&mut out, |key| match key {
                "alerts" => Some(Edit::Replace(alerts_json.clone())),
                "state" => Some(Edit::Replace(state_json.clone())),
                "lastError" if !owned => Some(Edit::Drop),
                _ => None,
            });
            Ok(Some(out))
        }
        _ => Ok(None),
    }
}

/// Whether an alert is visible, and its state.
fn alert_visible(raw: &RawValue, e: &Enforcement) -> Result<(bool, Option<String>), FilterError> {
    let alert = Object::parse(raw.get())?;
    let labels = Labels::parse(alert.get("labels"))?;
    let state = alert.string("state")?;
    let visible = e.constraints().iter().all(|c| {
        let value = match c.name() {
            "__name__" => "ALERTS",
            "alertstate" => state.unwrap_or_default(),
            name => labels.get(name).unwrap_or_default(),
        };
        c.verdict(value) == Some(true)
    });
    Ok((visible, state.map(str::to_owned)))
}

/// Whether known labels alone decide that every series carrying them is the grant's: each constrained
/// label present and matching.
fn pins_grant<'a>(e: &Enforcement, get: impl Fn(&str) -> Option<&'a str>) -> bool {
    e.constraints()
        .iter()
        .all(|c| get(c.name()).is_some_and(|v| c.verdict(v) == Some(true)))
}

fn malformed(why: &str) -> FilterError {
    FilterError::Malformed(why.to_string())
}

/// `null` or absent counts as empty.
fn array(raw: Option<&RawValue>) -> Result<Vec<&RawValue>, FilterError> {
    match raw {
        None => Ok(Vec::new()),
        Some(r) if r.get().trim() == "null" => Ok(Vec::new()),
        Some(r) => serde_json::from_str(r.get()).map_err(|e| malformed(&e.to_string())),
    }
}

fn join_array(items: &[String]) -> String {
    let mut out = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push(']');
    out
}

/// A label set; `null` or absent is empty.
struct Labels(Vec<(String, String)>);

impl Labels {
    fn parse(raw: Option<&RawValue>) -> Result<Labels, FilterError> {
        let Some(raw) = raw.filter(|r| r.get().trim() != "null") else {
            return Ok(Labels(Vec::new()));
        };
        let object = Object::parse(raw.get())?;
        let mut pairs = Vec::with_capacity(object.fields.len());
        for (name, value) in &object.fields {
            let value: String = serde_json::from_str(value.get())
                .map_err(|_| malformed("label value is not a string"))?;
            pairs.push((name.clone(), value));
        }
        Ok(Labels(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How to change one field when writing an object back out.
enum Edit {
    Drop,
    Replace(String),
}

/// A JSON object as its fields in order, values kept as raw text.
struct Object<'a> {
    fields: Vec<(String, &'a RawValue)>,
}

impl<'a> Object<'a> {
    fn parse(text: &'a str) -> Result<Object<'a>, FilterError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let object = Object::deserialize(&mut de).map_err(|e| malformed(&e.to_string()))?;
        de.end().map_err(|e| malformed(&e.to_string()))?;
        Ok(object)
    }

    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// A string field; absent or `null` is `None`, another type is an error.
    fn string(&self, key: &str) -> Result<Option<&'a str>, FilterError> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) if raw.get().trim() == "null" => Ok(None),
            Some(raw) => {
                let s: &'a str = serde_json::from_str(raw.get())
                    .map_err(|_| malformed(&format!("{key} is not a plain string")))?;
                Ok(Some(s))
            }
        }
    }

    fn replaced(&self, key: &str, value: &str) -> String {
        let mut out = String::new();
        let had = self.get(key).is_some();
        self.write_with(&mut out, |k| {
            (k == key).then(|| Edit::Replace(value.to_string()))
        });
        if !had {
            // Absent (or a value we read as empty): keep the shape clients expect.
            out.pop();
            if !self.fields.is_empty() {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(key).unwrap_or_default());
            out.push(':');
            out.push_str(value);
            out.push('}');
        }
        out
    }

    fn write_with(&self, out: &mut String, edit: impl Fn(&str) -> Option<Edit>) {
        out.push('{');
        let mut first = true;
        for (key, value) in &self.fields {
            let replacement = match edit(key) {
                Some(Edit::Drop) => continue,
                Some(Edit::Replace(v)) => Some(v),
                None => None,
            };
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&serde_json::to_string(key).unwrap_or_default());
            out.push(':');
            match &replacement {
                Some(v) => out.push_str(v),
                None => out.push_str(value.get()),
            }
        }
        out.push('}');
    }
}

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Object<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
                let mut fields: Vec<(String, &'de RawValue)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((key, value));
                }
                let mut keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort_unstable();
                if let Some(pair) = keys.windows(2).find(|pair| pair[0] == pair[1]) {
                    return Err(serde::de::Error::custom(format_args!(
                        "duplicate key {:?}",
                        pair[0]
                    )));
                }
                Ok(Object { fields })
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests;
