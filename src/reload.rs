//! Reloading without a restart: SIGHUP, and what each part re-reads when it comes.
//!
//! One [`Reload`] turns every SIGHUP into a new generation number that any part can wait for
//! ([`Reload::subscribe`]); each part re-reads its own files (verification keys, TLS certificates, the
//! grants file, rate limits, secrets given as files, the audit log file) and reports the outcome here.
//! A file that no longer parses never replaces what is in force: the part keeps its state, logs why,
//! and the failure is counted in `tenantgate_reloads_total{what,result="failure"}` with
//! `tenantgate_reload_last_success{what}` at 0 until a good reload, so operators can alert on it.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

/// A file's modification time and size: enough to notice that it changed without reading it.
pub fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Calls `reread` on every SIGHUP (`reload`) and whenever `stamps` (the [`file_stamp`]s of the files
/// `reread` reads) changes, checked every `every`; runs for as long as the process does.
pub async fn watch_files<S: PartialEq>(
    mut reload: watch::Receiver<u64>,
    every: Duration,
    stamps: impl Fn() -> S,
    mut reread: impl FnMut(),
) {
    let mut seen = stamps();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut signals = true;
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            changed = reload.changed(), if signals => {
                // Without a sender no SIGHUP can come any more; keep watching the files.
                signals = changed.is_ok();
                signals
            }
        };
        let now = stamps();
        if !forced && now == seen {
            continue;
        }
        seen = now;
        reread();
    }
}

/// What can be reloaded; the `what` label of the reload metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `-auth.publicKeyFiles`, `-auth.hmacSecretFiles`.
    Keys = 0,
    /// `-tlsCertFile`, `-tlsKeyFile`, `-mtlsCAFile`.
    Tls = 1,
    /// `-auth.grantsFile`.
    Grants = 2,
    /// `-ratelimit.config`.
    RateLimits = 3,
    /// Secrets given as `file://` (`-httpAuth.*`, the auth keys).
    Secrets = 4,
    /// The `-auditLog` file (reopened, for log rotation).
    AuditLog = 5,
}

impl Part {
    const ALL: [Part; 6] = [
        Part::Keys,
        Part::Tls,
        Part::Grants,
        Part::RateLimits,
        Part::Secrets,
        Part::AuditLog,
    ];

    fn label(self) -> &'static str {
        match self {
            Part::Keys => "keys",
            Part::Tls => "tls",
            Part::Grants => "grants",
            Part::RateLimits => "ratelimits",
            Part::Secrets => "secrets",
            Part::AuditLog => "audit_log",
        }
    }
}

/// Reload outcomes, per part: successes, failures, and whether the last attempt succeeded.
pub struct ReloadStatus {
    successes: [AtomicU64; 6],
    failures: [AtomicU64; 6],
    /// 1 until a reload of the part fails, then 0 until one succeeds.
    last_ok: [AtomicU64; 6],
    /// Parts this process actually reloads, so `/metrics` lists only those.
    used: [AtomicU64; 6],
}

/// The process' reload outcomes. A static: reloads are process-wide, like the signal that starts them.
pub static STATUS: ReloadStatus = ReloadStatus {
    successes: [const { AtomicU64::new(0) }; 6],
    failures: [const { AtomicU64::new(0) }; 6],
    last_ok: [const { AtomicU64::new(1) }; 6],
    used: [const { AtomicU64::new(0) }; 6],
};

impl ReloadStatus {
    /// Declares that this process reloads `part` (it then appears in `/metrics`).
    pub fn uses(&self, part: Part) {
        self.used[part as usize].store(1, Ordering::Relaxed);
    }

    /// Records a reload of `part` that put new state in force (or found nothing changed).
    pub fn succeeded(&self, part: Part) {
        self.uses(part);
        self.successes[part as usize].fetch_add(1, Ordering::Relaxed);
        self.last_ok[part as usize].store(1, Ordering::Relaxed);
    }

    /// Records a reload of `part` that kept the old state; `why` is logged.
    pub fn failed(&self, part: Part, why: &str) {
        self.uses(part);
        self.failures[part as usize].fetch_add(1, Ordering::Relaxed);
        self.last_ok[part as usize].store(0, Ordering::Relaxed);
        tracing::error!(
            what = part.label(),
            "reload failed, keeping what was in force: {why}"
        );
    }

    /// Exposition text.
    pub fn render(&self, out: &mut String) {
        let used: Vec<Part> = Part::ALL
            .into_iter()
            .filter(|p| self.used[*p as usize].load(Ordering::Relaxed) == 1)
            .collect();
        if used.is_empty() {
            return;
        }
        out.push_str("# HELP tenantgate_reloads_total Reloads of files (on SIGHUP, or when they changed), by outcome; a failure keeps what was in force.\n# TYPE tenantgate_reloads_total counter\n");
        for &part in &used {
            for (result, counters) in [("success", &self.successes), ("failure", &self.failures)] {
                let _ = writeln!(
                    out,
                    "tenantgate_reloads_total{{what=\"{}\",result=\"{result}\"}} {}",
                    part.label(),
                    counters[part as usize].load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP tenantgate_reload_last_success Whether the last reload of each part succeeded (1) or failed (0).\n# TYPE tenantgate_reload_last_success gauge\n");
        for &part in &used {
            let _ = writeln!(
                out,
                "tenantgate_reload_last_success{{what=\"{}\"}} {}",
                part.label(),
                self.last_ok[part as usize].load(Ordering::Relaxed)
            );
        }
    }
}

/// Turns SIGHUP into generations parts can wait for.
pub struct Reload {
    generation: watch::Sender<u64>,
}

impl Default for Reload {
    fn default() -> Self {
        Reload {
            generation: watch::Sender::new(0),
        }
    }
}

impl Reload {
    /// A receiver that sees every later generation; `changed().await` waits for the next SIGHUP.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Starts a reload, as SIGHUP does.
    pub fn trigger(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Triggers a reload on every SIGHUP, for as long as the process runs.
    pub async fn on_sighup(self: std::sync::Arc<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; files are re-read only when they change");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("received SIGHUP: reloading");
            self.trigger();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_see_each_trigger() {
        let reload = Reload::default();
        let mut rx = reload.subscribe();
        reload.trigger();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 1);
    }

    #[test]
    fn failures_are_counted_and_cleared_by_a_success() {
        let status = ReloadStatus {
            successes: [const { AtomicU64::new(0) }; 6],
            failures: [const { AtomicU64::new(0) }; 6],
            last_ok: [const { AtomicU64::new(1) }; 6],
            used: [const { AtomicU64::new(0) }; 6],
        };
        let mut out = String::new();
        status.render(&mut out);
        assert!(out.is_empty(), "nothing reloaded, nothing shown");
        status.failed(Part::Keys, "bad PEM");
        status.render(&mut out);
        assert!(out.contains("tenantgate_reloads_total{what=\"keys\",result=\"failure\"} 1"));
        assert!(out.contains("tenantgate_reload_last_success{what=\"keys\"} 0"));
        status.succeeded(Part::Keys);
        let mut out = String::new();
        status.render(&mut out);
        assert!(out.contains("tenantgate_reload_last_success{what=\"keys\"} 1"));
        assert!(!out.contains("what=\"tls\""));
    }
}
