//! HTTPS for client connections: one rustls server configuration per `-tls` listener, with
//! `-tlsMinVersion`, `-tlsCipherSuites` and `-mtls` client certificates, rebuilt whenever the certificate,
//! key or client CA file changes (checked every second, and on SIGHUP) so renewed certificates are served
//! without a restart, as VictoriaMetrics does.
//!
//! The configuration in force sits behind an `ArcSwap`: a handshake takes the current one with one atomic
//! load. A rebuild that fails (a half-written file, a key that does not match) keeps the configuration in
//! force, is logged and counted (`tenantgate_reloads_total{what="tls"}`), and is tried again at the next
//! change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::flags::{ListenerTls, TlsVersion};
use crate::reload::{self, Part};

/// How often the files are checked for changes.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The TLS configuration of one listener, current as of the last good read of its files.
pub struct TlsFiles {
    settings: ListenerTls,
    cipher_suites: Vec<String>,
    config: ArcSwap<ServerConfig>,
}

impl TlsFiles {
    /// Reads the files and builds the configuration; an error names the file and stops start-up.
    pub fn load(settings: &ListenerTls, cipher_suites: &[String]) -> Result<Arc<TlsFiles>, String> {
        let config = build(settings, cipher_suites)?;
        reload::STATUS.uses(Part::Tls);
        Ok(Arc::new(TlsFiles {
            settings: settings.clone(),
            cipher_suites: cipher_suites.to_vec(),
            config: ArcSwap::from_pointee(config),
        }))
    }

    /// An acceptor for the configuration in force.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load_full())
    }

    /// Rebuilds the configuration whenever a file changes or `reload` fires, until the process ends.
    pub async fn watch(self: Arc<Self>, reload: watch::Receiver<u64>) {
        let stamps = || {
            let s = &self.settings;
            let ca = s.client_ca.as_ref().and_then(|ca| ca.as_deref());
            [Some(s.cert_file.as_path()), Some(s.key_file.as_path()), ca]
                .map(|f| f.and_then(reload::file_stamp))
        };
        reload::watch_files(reload, CHECK_EVERY, stamps, || {
            match build(&self.settings, &self.cipher_suites) {
                Ok(config) => {
                    self.config.store(Arc::new(config));
                    tracing::info!(
                        cert = %self.settings.cert_file.display(),
                        "loaded the TLS certificate"
                    );
                    reload::STATUS.succeeded(Part::Tls);
                }
                Err(e) => reload::STATUS.failed(Part::Tls, &e),
            }
        })
        .await;
    }
}

fn build(settings: &ListenerTls, cipher_suites: &[String]) -> Result<ServerConfig, String> {
    let certs = read_certs(&settings.cert_file, "-tlsCertFile")?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file)
        .map_err(|e| format!("-tlsKeyFile {}: {e}", settings.key_file.display()))?;
    let provider = Arc::new(provider(cipher_suites)?);
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::Tls12 => rustls::ALL_VERSIONS,
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("-tlsMinVersion/-tlsCipherSuites: {e}"))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = match ca {
                Some(path) => {
                    let mut roots = RootCertStore::empty();
                    for cert in read_certs(path, "-mtlsCAFile")? {
                        roots
                            .add(cert)
                            .map_err(|e| format!("-mtlsCAFile {}: {e}", path.display()))?;
                    }
                    roots
                }
                None => RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
            };
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("-mtlsCAFile: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("-tlsCertFile/-tlsKeyFile: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &PathBuf, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// aws-lc-rs with only the `-tlsCipherSuites` given (all of its suites when none are).
fn provider(names: &[String]) -> Result<CryptoProvider, String> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if names.is_empty() {
        return Ok(provider);
    }
    provider.cipher_suites.retain(|suite| {
        names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&iana_name(suite)))
    });
    if provider.cipher_suites.is_empty() {
        return Err("-tlsCipherSuites: none of the suites is available".to_string());
    }
    Ok(provider)
}

/// The IANA name of a suite (rustls calls the TLS 1.3 ones `TLS13_...`).
fn iana_name(suite: &rustls::SupportedCipherSuite) -> String {
    let name = format!("{:?}", suite.suite());
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_suite_names_are_rustls_names() {
        let all = rustls::crypto::aws_lc_rs::default_provider();
        let names: Vec<String> = all.cipher_suites.iter().map(iana_name).collect();
        for name in crate::flags::CIPHER_SUITES {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
        let p = provider(&["TLS_AES_128_GCM_SHA256".to_string()]).unwrap();
        assert_eq!(p.cipher_suites.len(), 1);
    }
}
