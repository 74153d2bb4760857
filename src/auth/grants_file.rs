//! Loading `-auth.grantsFile` and keeping it current: read at start-up (a file that does not parse stops
//! start-up with exit code 2, naming the line), then re-read on SIGHUP and whenever it changes on disk
//! (checked every second). A file that no longer parses keeps the grants in force, is logged and counted
//! (`tenantgate_reloads_total{what="grants",result="failure"}`). New grants drop the verified-token cache,
//! whose entries were resolved from the old ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::grants::Grants;
use super::Authenticator;
use crate::reload::{self, Part};

/// Reads and parses the grants file.
pub fn load(path: &Path) -> Result<Grants, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("-auth.grantsFile {}: {e}", path.display()))?;
    Grants::parse(&text).map_err(|e| format!("-auth.grantsFile {}: {e}", path.display()))
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Re-reads `path` on every `reload` and when it changes, for as long as the process runs.
pub async fn watch(auth: Arc<Authenticator>, path: PathBuf, mut reload: watch::Receiver<u64>) {
    reload::STATUS.uses(Part::Grants);
    let mut seen = stamp(&path);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            changed = reload.changed() => {
                if changed.is_err() {
                    reload = watch::Sender::new(0).subscribe();
                }
                true
            }
        };
        let now = stamp(&path);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        match load(&path) {
            Ok(grants) => {
                tracing::info!("loaded {} grants from {}", grants.len(), path.display());
                auth.replace_grants(grants);
                reload::STATUS.succeeded(Part::Grants);
            }
            Err(e) => reload::STATUS.failed(Part::Grants, &e),
        }
    }
}
