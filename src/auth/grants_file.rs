//! Loading `-auth.grantsFile` and keeping it current: read at start-up (a file that does not parse stops
//! start-up with exit code 2, naming the line), then re-read on SIGHUP and whenever it changes on disk
//! (checked every second). A file that no longer parses keeps the grants in force, is logged and counted
//! (`tenantgate_reloads_total{what="grants",result="failure"}`). New grants drop the verified-token cache,
//! whose entries were resolved from the old ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::grants::Grants;
use super::Authenticator;
use crate::reload::{self, Part};

/// Reads and parses the grants file.
pub fn load(path: &Path) -> Result<Grants, String> {
    parse(path, &read(path)?)
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("-auth.grantsFile {}: {e}", path.display()))
}

fn parse(path: &Path, text: &str) -> Result<Grants, String> {
    Grants::parse(text).map_err(|e| format!("-auth.grantsFile {}: {e}", path.display()))
}

/// Re-reads `path` on every `reload` and when it changes, for as long as the process runs. A file read
/// again unchanged (a SIGHUP meant for another part) keeps the verified-token cache.
pub async fn watch(auth: Arc<Authenticator>, path: PathBuf, reload: watch::Receiver<u64>) {
    reload::STATUS.uses(Part::Grants);
    let stamps = || reload::file_stamp(&path);
    let mut in_force: Option<String> = None;
    reload::watch_files(reload, Duration::from_secs(1), stamps, || {
        let parsed = read(&path).and_then(|text| {
            if in_force.as_deref() == Some(text.as_str()) {
                return Ok(None);
            }
            Ok(Some((parse(&path, &text)?, text)))
        });
        match parsed {
            Ok(None) => reload::STATUS.succeeded(Part::Grants),
            Ok(Some((grants, text))) => {
                tracing::info!("loaded {} grants from {}", grants.len(), path.display());
                auth.replace_grants(grants);
                in_force = Some(text);
                reload::STATUS.succeeded(Part::Grants);
            }
            Err(e) => reload::STATUS.failed(Part::Grants, &e),
        }
    })
    .await;
}
