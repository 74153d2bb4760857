//! Requests tenantgate itself sends, other than forwarded client requests and key fetches' rules: the
//! TLS settings for every server it connects to, and a small HTTP client for the few requests it makes on
//! its own behalf (pushing metrics, reading rate-limit usage, fetching keys and rate-limit files). Every
//! exchange has a deadline and a bounded answer, so a slow or hostile server can only make that one
//! background task wait, never a client request.

use std::fmt::Write as _;
use std::fs;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::flags::UpstreamTls;

/// An HTTP/1.1 client over http or https.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// A complete answer.
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, at most the limit asked for.
    pub body: Bytes,
}

impl HttpClient {
    /// A client with `tls` for https URLs; `idle` keep-alive connections per host are kept (0: none,
    /// for requests minutes apart, where a pooled connection would mostly meet a closed socket).
    pub fn new(
        tls: &UpstreamTls,
        idle: usize,
        connect_timeout: Duration,
    ) -> Result<HttpClient, String> {
        let tls = client_tls_config(tls)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(HttpClient {
            inner: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(idle)
                .build(connector),
        })
    }

    /// Sends `request` and reads the whole answer, within `timeout` and at most `max_body` bytes.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Answer, String> {
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| error_chain(&e))?;
            let declared = response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max_body as u64) {
                return Err(format!("answer is larger than {max_body} bytes"));
            }
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_body).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("answer is larger than {max_body} bytes")
                } else {
                    format!("reading the answer: {}", error_chain(&*e))
                }
            })?;
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body: body.to_bytes(),
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no complete answer within {timeout:?}"))?
    }
}

/// An error with its causes: hyper's own message ("client error (Connect)") says little alone.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// A URL fit for logs and metric labels: any `user:password@` replaced by `user:xxxxx@`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:xxxxx@{host}{}", &rest[authority_end..])
        }
        None => url.to_string(),
    }
}

/// rustls settings for one server tenantgate connects to: system-independent web PKI roots plus an
/// optional CA file, an optional client certificate, or no verification at all when explicitly asked.
/// Errors name the file; callers add the flag.
pub fn client_tls_config(tls: &UpstreamTls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &tls.ca_file {
            let pem = fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
                added += 1;
            }
            if added == 0 {
                return Err(format!("{}: no CERTIFICATE block found", ca.display()));
            }
        }
        builder.with_root_certificates(roots)
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// `-*.tlsInsecureSkipVerify`: accepts any certificate (signatures are still checked for form).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redacted("http://u:p@vm:8428/api"),
            "http://u:xxxxx@vm:8428/api"
        );
        assert_eq!(redacted("https://vm/api?x=@"), "https://vm/api?x=@");
        assert_eq!(redacted("not a url"), "not a url");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "nothing here").unwrap();
        let tls = UpstreamTls {
            ca_file: Some(path),
            ..UpstreamTls::default()
        };
        assert!(client_tls_config(&tls)
            .err()
            .unwrap()
            .contains("no CERTIFICATE"));
    }
}
