//! Starting rate limiting: loading the limits file (a path or an http(s) URL), checking at start-up that
//! the datasource holds what the file needs, naming this replica, and the background tasks: the usage
//! refresher and the reloader (SIGHUP and every `-ratelimit.configCheckInterval`; a file that no longer
//! parses keeps the limits in force, logged and counted).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::{LimitType, LimitsFile};
use super::datasource::Datasource;
use super::usage::Refresher;
use super::RateLimiter;
use crate::flags::{Config, LimitsSource, UpstreamTls};
use crate::outbound::{redacted, HttpClient};
use crate::reload::{self, Part};

/// What starting failed on: a configuration error (exit code 2) with what to fix.
pub type SetupError = String;

/// Reads and parses the limits file.
async fn load(source: &LimitsSource) -> Result<LimitsFile, String> {
    let text = match source {
        LimitsSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("-ratelimit.config {}: {e}", path.display()))?,
        LimitsSource::Url(url) => {
            let client = HttpClient::new(&UpstreamTls::default(), 0, Duration::from_secs(10))?;
            let request = Request::get(url)
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?;
            let answer = client
                .send(request, Duration::from_secs(10), 4 << 20)
                .await
                .map_err(|e| format!("-ratelimit.config {}: {e}", redacted(url)))?;
            if !answer.status.is_success() {
                return Err(format!(
                    "-ratelimit.config {}: answered HTTP {}",
                    redacted(url),
                    answer.status.as_u16()
                ));
            }
            String::from_utf8(answer.body.to_vec())
                .map_err(|_| format!("-ratelimit.config {}: not UTF-8", redacted(url)))?
        }
    };
    LimitsFile::parse(&text).map_err(|e| format!("-ratelimit.config: {e}"))
}

/// This replica's name: `-ratelimit.instance`, else the `instance` of `-pushmetrics.extraLabel`, else
/// the host name and the first listen port.
fn instance(config: &Config, hostname: &str) -> String {
    let rate = &config.limits.rate;
    if !rate.instance.is_empty() {
        return rate.instance.clone();
    }
    if let Some((_, v)) = config
        .metrics
        .push_extra_labels
        .iter()
        .find(|(n, _)| n == "instance")
    {
        return v.clone();
    }
    let port = config.server.listeners.first().map_or(0, |l| l.addr.port());
    format!("{hostname}:{port}")
}

/// Starts rate limiting when `-enable.rateLimit` is on: the limiter and its background tasks.
pub async fn start(
    config: &Config,
    hostname: &str,
    reload: &reload::Reload,
) -> Result<Option<(Arc<RateLimiter>, Vec<JoinHandle<()>>)>, SetupError> {
    let rate = &config.limits.rate;
    if !rate.enabled {
        return Ok(None);
    }
    let source = rate
        .config
        .clone()
        .ok_or("-enable.rateLimit needs -ratelimit.config")?;
    let file = load(&source).await?;
    if !config.backend.cluster_mode {
        for kind in [LimitType::NewSeries, LimitType::ActiveSeries] {
            if file.has(kind) {
                return Err(format!(
                    "-ratelimit.config has a {} limit, which needs VictoriaMetrics cluster's enterprise per-tenant series (vm_tenant_timeseries_created_total, vm_tenant_active_timeseries) in -datasource.url: single-node VictoriaMetrics keeps no per-tenant series counts. Remove it or use -clusterMode",
                    kind.name()
                ));
            }
        }
    }
    let instance = instance(config, hostname);
    let limiter = Arc::new(RateLimiter::new(config, file, instance));
    reload::STATUS.uses(Part::RateLimits);
    let mut tasks = Vec::new();
    if rate.share_usage {
        let datasource = Datasource::new(&config.datasource)?;
        let shown = datasource.shown.clone();
        let mut refresher = Refresher::new(limiter.clone(), datasource, rate.extra_labels.clone());
        match refresher.check_series(Duration::from_secs(3)).await {
            Ok(lacking) if !lacking.is_empty() => {
                return Err(format!(
                    "-ratelimit.config limits what {shown} does not measure: it holds no {} (enterprise vmstorage's per-tenant series, scraped into the datasource). Remove those limits or scrape vmstorage into -datasource.url",
                    lacking.join(", ")
                ))
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "cannot reach {shown} yet ({e}): until it answers, each replica enforces its share of every limit"
            ),
        }
        if config.metrics.push_urls.is_empty() {
            tracing::warn!(
                "rate limiting shares usage through {shown}, but -pushmetrics.url is not set: unless this replica's /metrics is scraped into it, other replicas do not see its usage. Set -pushmetrics.url=<datasource>/api/v1/import/prometheus"
            );
        } else if config.metrics.push_interval > rate.refresh_interval {
            tracing::warn!(
                "-pushmetrics.interval={:?} is longer than -ratelimit.refreshInterval={:?}: other replicas see this one's usage late; 1s suits rate limiting",
                config.metrics.push_interval,
                rate.refresh_interval
            );
        }
        tracing::info!(
            "rate limiting: {} limits, usage shared through {shown} as replica {:?}, refreshed every {:?}",
            limiter.file().len(),
            limiter.instance(),
            rate.refresh_interval
        );
        tasks.push(tokio::spawn(refresher.run()));
    } else {
        tracing::info!(
            "rate limiting: {} limits, enforced by this replica alone (-ratelimit.shareUsage=false)",
            limiter.file().len()
        );
    }
    tasks.push(tokio::spawn(reloader(
        limiter.clone(),
        source,
        rate.config_check_interval,
        reload.subscribe(),
    )));
    Ok(Some((limiter, tasks)))
}

/// Re-reads the limits file on SIGHUP and every `interval` (if not zero).
async fn reloader(
    limiter: Arc<RateLimiter>,
    source: LimitsSource,
    interval: Duration,
    mut reload: watch::Receiver<u64>,
) {
    let mut tick = (!interval.is_zero()).then(|| {
        let mut t = tokio::time::interval(interval);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    if let Some(t) = tick.as_mut() {
        t.tick().await;
    }
    loop {
        let by_signal = tokio::select! {
            changed = reload.changed() => {
                if changed.is_err() {
                    std::future::pending::<()>().await;
                }
                true
            }
            () = async {
                match tick.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => false,
        };
        match load(&source).await {
            Ok(file) => {
                let changed = format!("{file:?}") != format!("{:?}", limiter.file());
                if changed {
                    tracing::info!("rate limits reloaded: {} limits", file.len());
                    limiter.replace_file(file);
                } else if by_signal {
                    tracing::info!("rate limits unchanged");
                }
                reload::STATUS.succeeded(Part::RateLimits);
            }
            Err(e) => reload::STATUS.failed(Part::RateLimits, &e),
        }
    }
}
