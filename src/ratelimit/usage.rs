//! Every replica's usage, read back from `-datasource.url` every `-ratelimit.refreshInterval`, and the
//! snapshot decisions are made from.
//!
//! For each limit type and resolution in the file one instant query runs, e.g.
//! `sum(increase(tenantgate_tenant_requests_total{<extraLabels>}[1m])) by (accountID,projectID,tenantgate_instance)`;
//! this replica's own series are left out (it knows its own traffic exactly) and the others are summed
//! per tenant. In cluster mode, when the datasource holds vmselect's and vminsert's per-tenant counters
//! (checked every minute), `queries` and `rows_inserted` are read from them instead; `new_series` and
//! `active_series` always are (enterprise vmstorage's series: nothing else measures them). Hour windows
//! are read every fifth round: they move slowly, and an hour of samples costs the datasource more.
//!
//! A round that fails keeps the last snapshot; after three refresh intervals without a good round the
//! limiter falls back to each replica's share ([`Mode::Local`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{LimitType, Resolution};
use super::datasource::{Datasource, Sample};
use super::RateLimiter;
use crate::auth::claims::Tenant;

/// How decisions are made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Usage of every replica, read recently enough.
    Global,
    /// No recent usage: each replica enforces its share alone.
    Local,
    /// `-ratelimit.shareUsage=false`: this replica alone enforces whole limits.
    Alone,
}

/// Whose counters measure a limit type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// tenantgate's own (`tenantgate_tenant_*_total`), pushed by every replica.
    #[default]
    Tenantgate,
    /// VictoriaMetrics cluster's own per-tenant series (`vm_tenant_*`).
    VictoriaMetrics,
}

/// What the datasource said, as of one round.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When the round's answers were read; `None` before the first good round.
    pub taken: Option<Instant>,
    /// Replicas seen (at least this one once the first round succeeded).
    pub replicas: usize,
    /// Per tenant, per type and resolution: the other replicas' usage (tenantgate's counters) or
    /// everyone's (VictoriaMetrics' counters and the series types).
    usage: HashMap<Tenant, [[u64; 2]; 4]>,
    /// Whose counters measure each type.
    sources: [Source; 4],
    /// Whether the datasource holds the series measuring each type.
    measured: [bool; 4],
    /// Reads this replica had admitted per tenant when the round was read (for VictoriaMetrics'
    /// counters, which include them as of then).
    reads_at: HashMap<Tenant, u64>,
    /// Why the last round failed, for `/health`.
    pub last_error: Option<String>,
}

impl Snapshot {
    /// Usage of `tenant` for one limit, as read.
    pub fn usage(&self, tenant: Tenant, kind: LimitType, resolution: Resolution) -> u64 {
        self.usage
            .get(&tenant)
            .map_or(0, |u| u[kind.index()][resolution.index()])
    }

    /// Whose counters measure `kind`.
    pub fn source(&self, kind: LimitType) -> Source {
        self.sources[kind.index()]
    }

    /// Whether `kind` is measured by the datasource.
    pub fn measured(&self, kind: LimitType) -> bool {
        self.measured[kind.index()]
    }

    /// Reads admitted for `tenant` as of the round.
    pub fn reads_at_refresh(&self, tenant: Tenant) -> u64 {
        self.reads_at.get(&tenant).copied().unwrap_or(0)
    }
}

#[cfg(test)]
impl Snapshot {
    /// A snapshot taken now with `replicas` and the given others' usage.
    pub fn taken_now(replicas: usize, usage: &[(Tenant, LimitType, Resolution, u64)]) -> Snapshot {
        let mut snapshot = Snapshot {
            taken: Some(Instant::now()),
            replicas,
            measured: [true; 4],
            ..Snapshot::default()
        };
        for (tenant, kind, res, n) in usage {
            snapshot.usage.entry(*tenant).or_default()[kind.index()][res.index()] = *n;
        }
        snapshot
    }
}

/// The series VictoriaMetrics' cluster counts each type with.
fn vm_series(kind: LimitType) -> &'static str {
    match kind {
        LimitType::Queries => "vm_tenant_select_requests_total",
        LimitType::RowsInserted => "vm_tenant_inserted_rows_total",
        LimitType::NewSeries => "vm_tenant_timeseries_created_total",
        LimitType::ActiveSeries => "vm_tenant_active_timeseries",
    }
}

/// A selector of `metric` with the `-ratelimit.extraLabels`.
fn selector(metric: &str, extra: &[(String, String)]) -> String {
    let mut s = format!("{metric}{{");
    for (i, (name, value)) in extra.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{name}=\"");
        crate::promql::push_string_escaped(&mut s, value);
        s.push('"');
    }
    s.push('}');
    s
}

/// The query for one limit type and resolution from `source`.
pub fn usage_query(
    kind: LimitType,
    resolution: Resolution,
    source: Source,
    extra: &[(String, String)],
) -> String {
    let w = resolution.promql();
    match (kind, source) {
        (LimitType::Queries, Source::Tenantgate) => format!(
            "sum(increase({}[{w}])) by (accountID,projectID,tenantgate_instance)",
            selector("tenantgate_tenant_requests_total", extra)
        ),
        (LimitType::RowsInserted, Source::Tenantgate) => format!(
            "sum(increase({}[{w}])) by (accountID,projectID,tenantgate_instance)",
            selector("tenantgate_tenant_inserted_rows_total", extra)
        ),
        (LimitType::ActiveSeries, _) => format!(
            "sum({}) by (accountID,projectID)",
            selector(vm_series(kind), extra)
        ),
        (kind, _) => format!(
            "sum(increase({}[{w}])) by (accountID,projectID)",
            selector(vm_series(kind), extra)
        ),
    }
}

/// Replicas seen in the last minute.
fn replicas_query(extra: &[(String, String)]) -> String {
    format!(
        "max(max_over_time({}[1m])) by (tenantgate_instance)",
        selector("tenantgate_ratelimit_up", extra)
    )
}

fn tenant_of(sample: &Sample) -> Option<Tenant> {
    Some(Tenant {
        account: sample.labels.get("accountID")?.parse().ok()?,
        project: sample.labels.get("projectID")?.parse().ok()?,
    })
}

/// The refresher: owns the datasource client and the round schedule.
pub struct Refresher {
    limiter: Arc<RateLimiter>,
    datasource: Datasource,
    extra: Vec<(String, String)>,
    round: u64,
    sources: [Source; 4],
    measured: [bool; 4],
    /// When series presence was last checked.
    checked: Option<Instant>,
    /// The last error logged, so a long outage is logged once, not every round.
    logged: Option<String>,
}

impl Refresher {
    /// A refresher for `limiter`.
    pub fn new(
        limiter: Arc<RateLimiter>,
        datasource: Datasource,
        extra: Vec<(String, String)>,
    ) -> Refresher {
        Refresher {
            limiter,
            datasource,
            extra,
            round: 0,
            sources: [Source::Tenantgate; 4],
            measured: [true, true, false, false],
            checked: None,
            logged: None,
        }
    }

    /// Checks which series the datasource holds: in cluster mode, VictoriaMetrics' own counters are used
    /// where present; the series types need them. Returns the series the file needs and the datasource
    /// lacks, or an error when the datasource did not answer.
    pub async fn check_series(&mut self, timeout: Duration) -> Result<Vec<&'static str>, String> {
        let file = self.limiter.file();
        let mut lacking = Vec::new();
        for kind in LimitType::ALL {
            let needs_vm = matches!(kind, LimitType::NewSeries | LimitType::ActiveSeries);
            if !(needs_vm || self.limiter.cluster()) {
                continue;
            }
            let query = format!("count({})", selector(vm_series(kind), &self.extra));
            let present = !self.datasource.query(&query, timeout).await?.is_empty();
            if needs_vm {
                self.measured[kind.index()] = present;
                self.sources[kind.index()] = Source::VictoriaMetrics;
                if !present && file.has(kind) {
                    lacking.push(vm_series(kind));
                }
            } else {
                self.sources[kind.index()] = if present {
                    Source::VictoriaMetrics
                } else {
                    Source::Tenantgate
                };
            }
        }
        self.limiter
            .unmeasured
            .store(lacking.len() as u64, Ordering::Relaxed);
        self.checked = Some(Instant::now());
        Ok(lacking)
    }

    /// Runs rounds forever.
    pub async fn run(mut self) {
        let interval = self.limiter.refresh_interval();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = Instant::now();
            let timeout = (interval * 2).clamp(Duration::from_secs(1), Duration::from_secs(10));
            if self
                .checked
                .is_none_or(|c| c.elapsed() > Duration::from_secs(60))
            {
                match self.check_series(timeout).await {
                    Ok(lacking) if !lacking.is_empty() => tracing::warn!(
                        "rate limits on {} are not enforced: {} holds no {}",
                        lacking.join(", "),
                        self.datasource.shown,
                        lacking.join(", ")
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        self.failed(format!("cannot read {}: {e}", self.datasource.shown));
                        continue;
                    }
                }
            }
            match self.round(timeout).await {
                Ok(snapshot) => {
                    self.limiter.snapshot.store(Arc::new(snapshot));
                    self.limiter.refresh_duration.observe(started.elapsed());
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    self.limiter.last_refresh.store(now, Ordering::Relaxed);
                    if self.logged.take().is_some() {
                        tracing::info!(
                            "reading rate-limit usage from {} again",
                            self.datasource.shown
                        );
                    }
                }
                Err(e) => {
                    self.limiter.refresh_duration.observe(started.elapsed());
                    self.failed(format!(
                        "cannot read usage from {}: {e}",
                        self.datasource.shown
                    ));
                }
            }
            self.round += 1;
        }
    }

    fn failed(&mut self, why: String) {
        self.limiter.refresh_errors.fetch_add(1, Ordering::Relaxed);
        let old = self.limiter.snapshot.load_full();
        let mut kept = (*old).clone();
        kept.last_error = Some(why.clone());
        self.limiter.snapshot.store(Arc::new(kept));
        if self.logged.as_deref() != Some(why.as_str()) {
            tracing::warn!("{why}; limits keep the last usage read, and after 3 refresh intervals each replica enforces its share");
            self.logged = Some(why);
        }
    }

    /// One round: every query the file needs.
    async fn round(&mut self, timeout: Duration) -> Result<Snapshot, String> {
        let file = self.limiter.file();
        let previous = self.limiter.snapshot.load_full();
        let hours_due = self.round.is_multiple_of(5);
        let me = self.limiter.instance().to_string();
        let reads_at: HashMap<Tenant, u64> = self
            .limiter
            .tenants()
            .iter()
            .map(|s| (s.tenant(), s.reads_total()))
            .collect();
        let mut usage: HashMap<Tenant, [[u64; 2]; 4]> = HashMap::new();
        // Hour windows not due keep their last reading.
        if !hours_due {
            for (tenant, u) in &previous.usage {
                let entry = usage.entry(*tenant).or_default();
                for kind in LimitType::ALL {
                    entry[kind.index()][Resolution::Hour.index()] =
                        u[kind.index()][Resolution::Hour.index()];
                }
            }
        }
        let mut ours = false;
        for (kind, resolution) in file.kinds() {
            if resolution == Resolution::Hour && !hours_due {
                continue;
            }
            let source = self.sources[kind.index()];
            if !self.measured[kind.index()] {
                continue;
            }
            ours |= source == Source::Tenantgate;
            let query = usage_query(kind, resolution, source, &self.extra);
            for sample in self.datasource.query(&query, timeout).await? {
                let Some(tenant) = tenant_of(&sample) else {
                    continue;
                };
                if source == Source::Tenantgate
                    && sample.labels.get("tenantgate_instance").map(String::as_str)
                        == Some(me.as_str())
                {
                    continue;
                }
                let slot = &mut usage.entry(tenant).or_default()[kind.index()][resolution.index()];
                // `as` saturates (+Inf becomes u64::MAX); the sum must not wrap round to little.
                *slot = slot.saturating_add(sample.value.max(0.0).round() as u64);
            }
        }
        let replicas = if ours || self.limiter.shares() {
            let seen = self
                .datasource
                .query(&replicas_query(&self.extra), timeout)
                .await?;
            seen.iter()
                .filter(|s| {
                    s.labels.get("tenantgate_instance").map(String::as_str) != Some(me.as_str())
                })
                .count()
                + 1
        } else {
            1
        };
        Ok(Snapshot {
            taken: Some(Instant::now()),
            replicas,
            usage,
            sources: self.sources,
            measured: self.measured,
            reads_at,
            last_error: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_name_the_counters_and_the_extra_labels() {
        let extra = vec![("cluster".to_string(), "prod\"x".to_string())];
        assert_eq!(
            usage_query(LimitType::Queries, Resolution::Minute, Source::Tenantgate, &extra),
            "sum(increase(tenantgate_tenant_requests_total{cluster=\"prod\\\"x\"}[1m])) by (accountID,projectID,tenantgate_instance)"
        );
        assert_eq!(
            usage_query(
                LimitType::RowsInserted,
                Resolution::Hour,
                Source::VictoriaMetrics,
                &[]
            ),
            "sum(increase(vm_tenant_inserted_rows_total{}[1h])) by (accountID,projectID)"
        );
        assert_eq!(
            usage_query(
                LimitType::ActiveSeries,
                Resolution::Minute,
                Source::VictoriaMetrics,
                &[]
            ),
            "sum(vm_tenant_active_timeseries{}) by (accountID,projectID)"
        );
        assert_eq!(
            replicas_query(&[]),
            "max(max_over_time(tenantgate_ratelimit_up{}[1m])) by (tenantgate_instance)"
        );
    }
}
