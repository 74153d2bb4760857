//! Per-tenant rate limits (`-enable.rateLimit`): vmgateway's limits file and flags, on open-source
//! VictoriaMetrics, single-node or cluster, global across stateless replicas, judged before a body is
//! read so no batch is refused for being larger than what is left.
//!
//! A tenant is a token's `account_id:project_id` in both modes. Each replica knows its own traffic
//! exactly ([`window`]: sliding minute and hour per tenant) and publishes it as counters on `/metrics`
//! (pushed with `-pushmetrics.url`); every `-ratelimit.refreshInterval` it reads every replica's usage
//! back from `-datasource.url` ([`usage`]). A request is judged against
//! `what the other replicas used (as last read) + what this replica used (exactly)`, so only the other
//! replicas' share lags. In cluster mode, where the datasource holds vminsert's and vmselect's own
//! per-tenant counters (`vm_tenant_inserted_rows_total`, `vm_tenant_select_requests_total`), those are
//! used instead, as vmgateway does, and nothing is decoded; enterprise `vm_tenant_active_timeseries`
//! and `vm_tenant_timeseries_created_total` measure the series limits.
//!
//! When the datasource fails (down, 5xx, answers older than three refresh intervals, or none yet), each
//! replica enforces its share of each limit (the limit divided by the replicas last seen) on its own
//! traffic: only tenants over that share are refused, nobody else waits or is blocked. A request never
//! waits on the datasource: decisions read a snapshot swapped atomically.
//!
//! On the request path: one cache lookup per request (no allocation for a tenant seen before, none at
//! all for tenants without limits), one atomic load of the snapshot, and a short mutex over the tenant's
//! window. Rows are counted after the backend accepted the body, off the request path.

mod config;
mod datasource;
pub mod setup;
mod usage;
mod window;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::auth::claims::Tenant;
use crate::error::{ErrorKind, GatewayError};
use crate::flags::{Config, WriteLimitStatus};
use crate::ingest::rows::Dialect;
use crate::metrics::Histogram;
pub use config::{ConfigError, Limit, LimitType, LimitsFile, Resolution};
pub use usage::{Mode, Snapshot, Source};
use window::Window;

/// How many tenants' state is kept; an idle tenant evicted beyond this starts from zero again.
const TENANTS: usize = 100_000;

/// The most of a write body copied for row counting (vminsert's `-maxInsertRequestSize` default);
/// larger bodies are forwarded and estimated from the tenant's rows per byte, or, before any body of
/// that format was counted, counted as the whole limit (`RateLimiter::rows_estimated`).
pub const MAX_COUNTED_BODY: usize = 32 << 20;

/// One tenant's usage on this replica.
pub struct TenantState {
    tenant: Tenant,
    /// The limits file generation `limits` was resolved from.
    limits: ArcSwap<(u64, Vec<Limit>)>,
    reads: Mutex<Window>,
    rows: Mutex<Window>,
    /// Admitted reads and accepted rows since start: the counters other replicas read.
    reads_total: AtomicU64,
    rows_total: AtomicU64,
    /// Requests refused, by limit type.
    refused: [AtomicU64; 4],
    /// Rows per body byte, learnt from exactly counted bodies, per write format.
    estimates: Mutex<[Estimate; FORMATS]>,
}

/// Write formats ([`crate::ingest::rows::Format`]) a ratio is kept for.
const FORMATS: usize = 7;

/// Below this share of its rows limit a tenant's bodies are mostly estimated (see [`RowsPlan`]).
const EXACT_ABOVE: f64 = 0.5;

/// How often, at least, a body of each tenant and format is counted exactly to keep the ratio true.
const EXACT_EVERY_SECS: u64 = 1;

/// What a body of one format holds per byte, as last measured.
#[derive(Debug, Clone, Copy, Default)]
struct Estimate {
    /// Rows per byte of body (as sent: compressed when it is); `None` before the first exact count.
    rows_per_byte: Option<f64>,
    /// When (limiter seconds) a body was last counted exactly.
    counted_at: u64,
}

/// How the rows of an accepted write are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsPlan {
    /// Decode the body and count its rows (it is copied on its way to the backend).
    Exact,
    /// Body bytes times the tenant's rows-per-byte for the format: cheap, for tenants far from their
    /// limit, whose ratio was measured less than a second ago.
    Estimate,
}

/// A request that passed its limits, to be told what it used.
pub struct Admission {
    state: Arc<TenantState>,
    /// Whether the write's rows must be found once the backend accepted it (a rows limit measured by
    /// tenantgate applies).
    pub count_rows: bool,
    /// Whether the tenant is within half of a rows limit: then every body is counted exactly.
    near_limit: bool,
}

impl Admission {
    /// How the rows of this write (of `format`) will be found: exactly near the limit, and once a
    /// second per tenant and format to keep the estimate true; estimated from the body's size otherwise.
    /// Decoding every body costs 100-200 ns a sample, more than forwarding it, so bodies that cannot
    /// change a decision are not decoded.
    pub fn rows_plan(
        &self,
        limiter: &RateLimiter,
        format: crate::ingest::rows::Format,
    ) -> RowsPlan {
        if self.near_limit {
            return RowsPlan::Exact;
        }
        let estimates = lock(&self.state.estimates);
        let e = estimates[format as usize % FORMATS];
        match e.rows_per_byte {
            Some(_) if limiter.now().saturating_sub(e.counted_at) < EXACT_EVERY_SECS => {
                RowsPlan::Estimate
            }
            _ => RowsPlan::Exact,
        }
    }
}

/// Settings fixed at start-up.
struct Settings {
    write_status: WriteLimitStatus,
    share: bool,
    /// This replica's name in the usage it publishes.
    instance: String,
    refresh: Duration,
    cluster: bool,
}

/// The rate limiter of one gateway.
pub struct RateLimiter {
    file: ArcSwap<LimitsFile>,
    generation: AtomicU64,
    tenants: quick_cache::sync::Cache<Tenant, Arc<TenantState>>,
    /// The last usage read from the datasource.
    pub(crate) snapshot: ArcSwap<Snapshot>,
    settings: Settings,
    /// Which VictoriaMetrics counts rows (decides row-counting details; see `ingest::rows`).
    pub dialect: Dialect,
    started: Instant,
    refused: [[AtomicU64; 2]; 4],
    pub(crate) refresh_duration: Histogram,
    pub(crate) refresh_errors: AtomicU64,
    pub(crate) last_refresh: AtomicU64,
    pub(crate) unmeasured: AtomicU64,
}

impl RateLimiter {
    /// A limiter with the parsed `file`, from the flags.
    pub fn new(config: &Config, file: LimitsFile, instance: String) -> RateLimiter {
        let rate = &config.limits.rate;
        let dialect = Dialect::LATEST;
        RateLimiter {
            file: ArcSwap::from_pointee(file),
            generation: AtomicU64::new(1),
            tenants: quick_cache::sync::Cache::new(TENANTS),
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            settings: Settings {
                write_status: rate.write_status,
                share: rate.share_usage,
                instance,
                refresh: rate.refresh_interval,
                cluster: config.backend.cluster_mode,
            },
            dialect,
            started: Instant::now(),
            refused: Default::default(),
            refresh_duration: Histogram::default(),
            refresh_errors: AtomicU64::new(0),
            last_refresh: AtomicU64::new(0),
            unmeasured: AtomicU64::new(0),
        }
    }

    /// The limits file in force.
    pub fn file(&self) -> Arc<LimitsFile> {
        self.file.load_full()
    }

    /// Puts a new limits file in force (the tenants' limits are resolved again on their next request).
    pub fn replace_file(&self, file: LimitsFile) {
        self.file.store(Arc::new(file));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// This replica's name in published usage.
    pub fn instance(&self) -> &str {
        &self.settings.instance
    }

    /// Whether this is a VictoriaMetrics cluster (whose own per-tenant counters may be used).
    pub fn cluster(&self) -> bool {
        self.settings.cluster
    }

    /// Whether replicas share usage through the datasource.
    pub fn shares(&self) -> bool {
        self.settings.share
    }

    /// `-ratelimit.refreshInterval`.
    pub fn refresh_interval(&self) -> Duration {
        self.settings.refresh
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The state of `tenant`, created on first sight, with its limits current.
    fn state(&self, tenant: Tenant) -> Arc<TenantState> {
        let generation = self.generation.load(Ordering::Acquire);
        // One state per tenant even when its first requests race (each would count into its own).
        let created = self.tenants.get_or_insert_with(&tenant, || {
            Ok::<_, std::convert::Infallible>(Arc::new(TenantState {
                tenant,
                limits: ArcSwap::from_pointee((0, Vec::new())),
                reads: Mutex::new(Window::default()),
                rows: Mutex::new(Window::default()),
                reads_total: AtomicU64::new(0),
                rows_total: AtomicU64::new(0),
                refused: Default::default(),
                estimates: Mutex::new([Estimate::default(); FORMATS]),
            }))
        });
        let Ok(state) = created;
        if state.limits.load().0 != generation {
            state
                .limits
                .store(Arc::new((generation, self.file.load().limits_for(tenant))));
        }
        state
    }

    /// Judges a request of `tenant` before its body is read: `Ok(None)` when no limit applies, an
    /// [`Admission`] to report usage to, or the refusal (429, or 503 for writes with
    /// `-ratelimit.writeStatusCode=503`) with `Retry-After`.
    pub fn admit(&self, tenant: Tenant, write: bool) -> Result<Option<Admission>, GatewayError> {
        let state = self.state(tenant);
        let limits = state.limits.load();
        if !limits.1.iter().any(|l| l.kind.limits_writes() == write) {
            return Ok(None);
        }
        let snapshot = self.snapshot.load();
        let mode = self.mode(&snapshot);
        let now = self.now();
        let mut count_rows = false;
        let mut near_limit = false;
        for limit in limits.1.iter().filter(|l| l.kind.limits_writes() == write) {
            if limit.kind == LimitType::RowsInserted
                && snapshot.source(LimitType::RowsInserted) == Source::Tenantgate
            {
                count_rows = true;
                let (usage, budget) = self.usage_and_budget(&state, limit, &snapshot, mode, now);
                near_limit |= usage as f64 >= budget as f64 * EXACT_ABOVE;
            }
            if let Some(refusal) = self.judge(&state, limit, &snapshot, mode, now) {
                state.refused[limit.kind.index()].fetch_add(1, Ordering::Relaxed);
                self.refused[limit.kind.index()][limit.resolution.index()]
                    .fetch_add(1, Ordering::Relaxed);
                return Err(refusal);
            }
        }
        if !write {
            lock(&state.reads).add(now, 1);
            state.reads_total.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(Admission {
            state,
            count_rows,
            near_limit,
        }))
    }

    /// A rows or queries limit's usage and budget, as [`Self::judge`] sees them.
    fn usage_and_budget(
        &self,
        state: &TenantState,
        limit: &Limit,
        snapshot: &Snapshot,
        mode: Mode,
        now: u64,
    ) -> (u64, u64) {
        let window = if limit.kind == LimitType::Queries {
            &state.reads
        } else {
            &state.rows
        };
        let mine = {
            let mut w = lock(window);
            if limit.resolution == Resolution::Hour {
                w.hour(now)
            } else {
                w.minute(now)
            }
        };
        match mode {
            Mode::Alone => (mine, limit.value),
            Mode::Local => (mine, limit.value.div_ceil(snapshot.replicas.max(1) as u64)),
            Mode::Global => (
                mine.saturating_add(snapshot.usage(state.tenant, limit.kind, limit.resolution)),
                limit.value,
            ),
        }
    }

    /// The refusal for `limit`, if the tenant is over it.
    fn judge(
        &self,
        state: &TenantState,
        limit: &Limit,
        snapshot: &Snapshot,
        mode: Mode,
        now: u64,
    ) -> Option<GatewayError> {
        let hour = limit.resolution == Resolution::Hour;
        let local = |w: &Mutex<Window>| {
            let mut w = lock(w);
            if hour {
                w.hour(now)
            } else {
                w.minute(now)
            }
        };
        let (usage, budget, local_only) = match limit.kind {
            LimitType::Queries | LimitType::RowsInserted => {
                let window = if limit.kind == LimitType::Queries {
                    &state.reads
                } else {
                    &state.rows
                };
                let mine = local(window);
                match mode {
                    Mode::Alone => (mine, limit.value, true),
                    Mode::Local => (
                        mine,
                        limit.value.div_ceil(snapshot.replicas.max(1) as u64),
                        true,
                    ),
                    Mode::Global => match snapshot.source(limit.kind) {
                        Source::Tenantgate => (
                            mine.saturating_add(snapshot.usage(
                                state.tenant,
                                limit.kind,
                                limit.resolution,
                            )),
                            limit.value,
                            false,
                        ),
                        Source::VictoriaMetrics => {
                            // The backend's counter includes this replica, as of the last refresh: add
                            // what this replica admitted since (reads only; rows are not counted here).
                            let since = if limit.kind == LimitType::Queries {
                                state
                                    .reads_total
                                    .load(Ordering::Relaxed)
                                    .saturating_sub(snapshot.reads_at_refresh(state.tenant))
                            } else {
                                0
                            };
                            (
                                snapshot
                                    .usage(state.tenant, limit.kind, limit.resolution)
                                    .saturating_add(since),
                                limit.value,
                                false,
                            )
                        }
                    },
                }
            }
            // Series are measured by the backend only; without a reading there is nothing to judge.
            LimitType::NewSeries | LimitType::ActiveSeries => {
                if !snapshot.measured(limit.kind) {
                    return None;
                }
                (
                    snapshot.usage(state.tenant, limit.kind, limit.resolution),
                    limit.value,
                    false,
                )
            }
        };
        // A read needs room for itself; a write is judged before its rows are known, so it is let
        // in while any room is left (a batch is never refused for being larger than what is left).
        if usage < budget {
            return None;
        }
        let window = limit.resolution.seconds();
        let excess = usage.saturating_add(1) - budget.min(usage.saturating_add(1));
        let wait = if local_only {
            let w = if limit.kind == LimitType::Queries {
                &state.reads
            } else {
                &state.rows
            };
            lock(w).seconds_until_freed(now, hour, excess.max(1))
        } else {
            (window as f64 * excess.max(1) as f64 / usage.max(1) as f64).ceil() as u64
        };
        let jitter = rand::random::<u64>() % self.settings.refresh.as_secs().max(1);
        let retry = (wait + jitter).clamp(1, 60) as u32;
        let what = match limit.kind {
            LimitType::Queries => "queries",
            LimitType::RowsInserted => "rows",
            LimitType::NewSeries => "new series",
            LimitType::ActiveSeries => "active series",
        };
        let share = if mode == Mode::Local {
            format!(
                " (this replica's share while the usage datasource is unavailable: 1/{} of {})",
                snapshot.replicas.max(1),
                limit.value
            )
        } else {
            String::new()
        };
        let message = format!(
            "request was rate limited by: \"{}\" (tenant {}: {usage} of {budget} {what} in the last {}{share}; retry in {retry}s)",
            limit.kind.reached(),
            state.tenant,
            limit.resolution.name(),
        );
        let kind = if limit.kind.limits_writes()
            && self.settings.write_status == WriteLimitStatus::Unavailable
        {
            ErrorKind::Unavailable
        } else {
            ErrorKind::TooManyRequests
        };
        Some(GatewayError::new(kind, message).with_retry_after(retry))
    }

    /// Reports the rows of an admitted write that the backend accepted.
    pub fn rows_accepted(&self, admission: &Admission, rows: u64) {
        if rows == 0 {
            return;
        }
        lock(&admission.state.rows).add(self.now(), rows);
        admission
            .state
            .rows_total
            .fetch_add(rows, Ordering::Relaxed);
    }

    /// Reports an exactly counted write of `bytes` (as sent) holding `rows`, which also updates the
    /// tenant's rows-per-byte for `format`.
    pub fn rows_counted(
        &self,
        admission: &Admission,
        format: crate::ingest::rows::Format,
        bytes: u64,
        rows: u64,
    ) {
        if bytes > 0 {
            let mut estimates = lock(&admission.state.estimates);
            let e = &mut estimates[format as usize % FORMATS];
            let ratio = rows as f64 / bytes as f64;
            // A moving average: one odd body does not swing the estimate.
            e.rows_per_byte = Some(match e.rows_per_byte {
                Some(old) => old * 0.7 + ratio * 0.3,
                None => ratio,
            });
            e.counted_at = self.now();
        }
        self.rows_accepted(admission, rows);
    }

    /// Reports a write of `bytes` whose rows are estimated from the tenant's ratio for `format`.
    pub fn rows_estimated(
        &self,
        admission: &Admission,
        format: crate::ingest::rows::Format,
        bytes: u64,
    ) {
        let ratio = lock(&admission.state.estimates)[format as usize % FORMATS].rows_per_byte;
        let rows = match ratio {
            Some(ratio) => (bytes as f64 * ratio).round() as u64,
            // Never measured: every body of this format so far was too large to copy and count.
            // It is counted as the whole limit, so bodies too large to count cannot slip past it.
            None => admission
                .state
                .limits
                .load()
                .1
                .iter()
                .filter(|l| l.kind == LimitType::RowsInserted)
                .map(|l| l.value)
                .min()
                .unwrap_or(0),
        };
        self.rows_accepted(admission, rows);
    }

    /// The mode the snapshot puts decisions in.
    pub fn mode(&self, snapshot: &Snapshot) -> Mode {
        if !self.settings.share {
            return Mode::Alone;
        }
        match snapshot.taken {
            Some(taken) if taken.elapsed() <= self.settings.refresh * 3 => Mode::Global,
            _ => Mode::Local,
        }
    }

    /// Every tenant with limits seen so far, for the refresher.
    pub(crate) fn tenants(&self) -> Vec<Arc<TenantState>> {
        self.tenants.iter().map(|(_, s)| s).collect()
    }

    /// A line for `/health`.
    pub fn health(&self) -> String {
        let snapshot = self.snapshot.load();
        match self.mode(&snapshot) {
            Mode::Alone => {
                "rate limiting: this replica alone (-ratelimit.shareUsage=false)".to_string()
            }
            Mode::Global => format!(
                "rate limiting: global, usage of {} replicas read {:.1}s ago",
                snapshot.replicas,
                snapshot.taken.map_or(0.0, |t| t.elapsed().as_secs_f64())
            ),
            Mode::Local => format!(
                "rate limiting: local fallback, each replica enforces 1/{} of every limit: {}",
                snapshot.replicas.max(1),
                snapshot
                    .last_error
                    .as_deref()
                    .unwrap_or("no usage read from -datasource.url yet")
            ),
        }
    }

    /// Metrics: the usage counters other replicas read, and the limiter's own numbers.
    pub fn render(&self, out: &mut String) {
        let me = crate::metrics::escape_label_value(&self.settings.instance);
        let tenants = self.tenants();
        let _ = writeln!(
            out,
            "# HELP tenantgate_ratelimit_up This replica takes part in rate limiting (other replicas count replicas by it).\n# TYPE tenantgate_ratelimit_up gauge\ntenantgate_ratelimit_up{{tenantgate_instance=\"{me}\"}} 1"
        );
        type Total = fn(&TenantState) -> u64;
        let families: [(&str, &str, Total); 2] = [
            ("tenantgate_tenant_requests_total", "Reads admitted per tenant by this replica (tenants with a queries limit).", |s| s.reads_total.load(Ordering::Relaxed)),
            ("tenantgate_tenant_inserted_rows_total", "Rows accepted by the backend per tenant through this replica (tenants with a rows_inserted limit).", |s| s.rows_total.load(Ordering::Relaxed)),
        ];
        for (name, help, total) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for s in &tenants {
                let n = total(s);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "{name}{{accountID=\"{}\",projectID=\"{}\",tenantgate_instance=\"{me}\"}} {n}",
                        s.tenant.account, s.tenant.project
                    );
                }
            }
        }
        out.push_str("# HELP tenantgate_ratelimit_rejections_total Requests refused by a rate limit, by limit type and resolution.\n# TYPE tenantgate_ratelimit_rejections_total counter\n");
        for kind in LimitType::ALL {
            for res in Resolution::ALL {
                let _ = writeln!(
                    out,
                    "tenantgate_ratelimit_rejections_total{{type=\"{}\",resolution=\"{}\"}} {}",
                    kind.name(),
                    res.name(),
                    self.refused[kind.index()][res.index()].load(Ordering::Relaxed)
                );
            }
        }
        // Per tenant, only the limited ones, at most a thousand: bounded cardinality.
        let mut limited: Vec<&Arc<TenantState>> = tenants
            .iter()
            .filter(|s| s.refused.iter().any(|r| r.load(Ordering::Relaxed) > 0))
            .collect();
        limited.sort_by_key(|s| {
            std::cmp::Reverse(
                s.refused
                    .iter()
                    .map(|r| r.load(Ordering::Relaxed))
                    .sum::<u64>(),
            )
        });
        limited.truncate(1000);
        out.push_str("# HELP tenantgate_ratelimit_tenant_rejections_total Requests refused per tenant (the 1,000 most refused tenants), by limit type.\n# TYPE tenantgate_ratelimit_tenant_rejections_total counter\n");
        for s in &limited {
            for kind in LimitType::ALL {
                let n = s.refused[kind.index()].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "tenantgate_ratelimit_tenant_rejections_total{{accountID=\"{}\",projectID=\"{}\",type=\"{}\"}} {n}",
                        s.tenant.account, s.tenant.project, kind.name()
                    );
                }
            }
        }
        self.render_usage(out, &limited);
        let snapshot = self.snapshot.load();
        let mode = self.mode(&snapshot);
        out.push_str("# HELP tenantgate_ratelimit_mode How limits are judged: global (usage shared through the datasource), local (datasource unavailable: each replica its share), alone (-ratelimit.shareUsage=false).\n# TYPE tenantgate_ratelimit_mode gauge\n");
        for (m, name) in [
            (Mode::Global, "global"),
            (Mode::Local, "local"),
            (Mode::Alone, "alone"),
        ] {
            let _ = writeln!(
                out,
                "tenantgate_ratelimit_mode{{mode=\"{name}\"}} {}",
                u8::from(mode == m)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tenantgate_ratelimit_replicas Replicas seen in the last usage read.\n# TYPE tenantgate_ratelimit_replicas gauge\ntenantgate_ratelimit_replicas {}",
            snapshot.replicas
        );
        let _ = writeln!(
            out,
            "# HELP tenantgate_ratelimit_refresh_errors_total Usage reads from -datasource.url that failed.\n# TYPE tenantgate_ratelimit_refresh_errors_total counter\ntenantgate_ratelimit_refresh_errors_total {}",
            self.refresh_errors.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tenantgate_ratelimit_last_refresh_success_timestamp_seconds Unix time of the last good usage read.\n# TYPE tenantgate_ratelimit_last_refresh_success_timestamp_seconds gauge\ntenantgate_ratelimit_last_refresh_success_timestamp_seconds {}",
            self.last_refresh.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tenantgate_ratelimit_unmeasured_limits Limit types configured whose usage the datasource does not hold (not enforced).\n# TYPE tenantgate_ratelimit_unmeasured_limits gauge\ntenantgate_ratelimit_unmeasured_limits {}",
            self.unmeasured.load(Ordering::Relaxed)
        );
        for name in [
            "tenantgate_ratelimit_refresh_duration_seconds",
            "vmgateway_ratelimit_refresh_duration_seconds",
        ] {
            let _ = writeln!(out, "# HELP {name} Time to read every replica's usage from -datasource.url.\n# TYPE {name} histogram");
            self.refresh_duration.render(out, name, "");
        }
    }

    /// Usage and limit of the tenants that were refused, per limit, as this replica sees them now.
    fn render_usage(&self, out: &mut String, limited: &[&Arc<TenantState>]) {
        let snapshot = self.snapshot.load();
        let mode = self.mode(&snapshot);
        let now = self.now();
        out.push_str("# HELP tenantgate_ratelimit_usage Usage of refused tenants as judged now, per limit.\n# TYPE tenantgate_ratelimit_usage gauge\n# HELP tenantgate_ratelimit_limit Limits of refused tenants.\n# TYPE tenantgate_ratelimit_limit gauge\n");
        for s in limited {
            for limit in s.limits.load().1.iter() {
                let mine = match limit.kind {
                    LimitType::Queries => &s.reads,
                    LimitType::RowsInserted => &s.rows,
                    _ => {
                        let u = snapshot.usage(s.tenant, limit.kind, limit.resolution);
                        write_usage(out, s.tenant, limit, u);
                        continue;
                    }
                };
                let local = {
                    let mut w = lock(mine);
                    if limit.resolution == Resolution::Hour {
                        w.hour(now)
                    } else {
                        w.minute(now)
                    }
                };
                let usage = match mode {
                    Mode::Global => {
                        local.saturating_add(snapshot.usage(s.tenant, limit.kind, limit.resolution))
                    }
                    _ => local,
                };
                write_usage(out, s.tenant, limit, usage);
            }
        }
    }
}

fn write_usage(out: &mut String, tenant: Tenant, limit: &Limit, usage: u64) {
    let labels = format!(
        "accountID=\"{}\",projectID=\"{}\",type=\"{}\",resolution=\"{}\"",
        tenant.account,
        tenant.project,
        limit.kind.name(),
        limit.resolution.name()
    );
    let _ = writeln!(
        out,
        "tenantgate_ratelimit_usage{{{labels}}} {usage}\ntenantgate_ratelimit_limit{{{labels}}} {}",
        limit.value
    );
}

/// A poisoned window lock still holds a usable count.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl TenantState {
    /// The tenant.
    pub fn tenant(&self) -> Tenant {
        self.tenant
    }

    /// Reads admitted since start.
    pub fn reads_total(&self) -> u64 {
        self.reads_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
