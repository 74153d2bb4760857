//! Secrets in force: `-httpAuth.*` and the auth keys of `/metrics`, `/flags` and `/debug/pprof`, given
//! inline or as `file://` (read at start-up and again on SIGHUP, so a rotated secret needs no restart; a
//! file that can no longer be read keeps the secret in force). Comparisons take the same time whatever
//! the guess, so an attacker cannot find a key byte by byte by timing answers.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::flags::Secret;
use crate::reload::{self, Part};

/// One secret and its current value.
pub struct SecretValue {
    source: Secret,
    value: ArcSwap<Vec<u8>>,
}

impl SecretValue {
    /// Reads `source`; an unreadable file is an error naming it (start-up stops).
    pub fn load(source: &Secret, flag: &str) -> Result<Arc<SecretValue>, String> {
        let value = read(source).map_err(|e| format!("-{flag}: {e}"))?;
        if matches!(source, Secret::File(_)) {
            reload::STATUS.uses(Part::Secrets);
        }
        Ok(Arc::new(SecretValue {
            source: source.clone(),
            value: ArcSwap::from_pointee(value),
        }))
    }

    /// The secret in force (for sending it, e.g. as a client secret).
    pub fn value(&self) -> Arc<Vec<u8>> {
        self.value.load_full()
    }

    /// Whether `given` equals the secret, in time independent of where they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        constant_time_eq(&self.value.load(), given)
    }

    /// Re-reads file secrets on every `reload`, until the process ends.
    pub async fn watch(self: Arc<Self>, mut reload: watch::Receiver<u64>) {
        if !matches!(self.source, Secret::File(_)) {
            return;
        }
        while reload.changed().await.is_ok() {
            match read(&self.source) {
                Ok(value) => {
                    self.value.store(Arc::new(value));
                    reload::STATUS.succeeded(Part::Secrets);
                }
                Err(e) => reload::STATUS.failed(Part::Secrets, &e),
            }
        }
    }
}

fn read(source: &Secret) -> Result<Vec<u8>, String> {
    match source {
        Secret::Inline(text) => Ok(text.as_bytes().to_vec()),
        Secret::File(path) => {
            let mut bytes =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            // Files written by editors and `echo` end with a newline that is not part of the secret.
            while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                bytes.pop();
            }
            Ok(bytes)
        }
    }
}

/// Equality whose time depends on the lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_secrets_lose_their_trailing_newline_and_compare_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "s3cret\n").unwrap();
        let s = SecretValue::load(&Secret::File(path), "metricsAuthKey").unwrap();
        assert!(s.matches(b"s3cret"));
        assert!(!s.matches(b"s3cre"));
        assert!(!s.matches(b"s3cret\n"));
        let inline = SecretValue::load(&Secret::Inline("a".into()), "x").unwrap();
        assert!(inline.matches(b"a") && !inline.matches(b""));
        assert!(
            SecretValue::load(&Secret::File(dir.path().join("none")), "flagsAuthKey")
                .err()
                .unwrap()
                .starts_with("-flagsAuthKey: cannot read")
        );
    }
}
