//! Start-up, the accept loop and shutdown: the tokio runtime (`-http.workers` threads), the
//! listening socket, TLS handshakes, and the graceful drain.
//!
//! Shutdown (SIGTERM or SIGINT): `/health` turns 503, `-http.shutdownDelay` passes, the listener
//! closes and in-flight requests finish within `-http.maxGracefulShutdownDuration`.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::fetch;
use crate::flags::Config;
use crate::proxy::ClientIp;
use crate::server::Gateway;

/// Why the gateway could not start, and the exit code that says so (2: fix the flags or files).
#[derive(Debug)]
pub struct StartError {
    /// 2 for configuration problems (as Go's flag package), 1 for the rest.
    pub exit_code: u8,
    /// What to fix.
    pub message: String,
}

fn config_error(message: String) -> StartError {
    StartError {
        exit_code: 2,
        message,
    }
}

fn start_error(message: String) -> StartError {
    StartError {
        exit_code: 1,
        message,
    }
}

/// Runs the gateway until SIGTERM or SIGINT, then drains in-flight requests. Blocks the calling
/// thread.
pub fn run(config: Config) -> Result<(), StartError> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.workers > 0 {
        runtime.worker_threads(config.workers);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .map_err(|e| start_error(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> Result<(), StartError> {
    let (auth, key_status, fetcher) = fetch::start(&config).await.map_err(config_error)?;
    let gateway = Arc::new(Gateway::new(config.clone(), auth, key_status).map_err(config_error)?);
    let tls = if config.tls {
        Some(tls_acceptor(&config).map_err(config_error)?)
    } else {
        None
    };
    let listener = TcpListener::bind(config.listen_addr).await.map_err(|e| {
        start_error(format!(
            "cannot listen on {} (-httpListenAddr): {e}",
            config.listen_addr
        ))
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| start_error(e.to_string()))?;
    tracing::info!(
        "tenantgate {} listening on {}://{local} ({} mode, auth {})",
        env!("CARGO_PKG_VERSION"),
        if tls.is_some() { "https" } else { "http" },
        if config.cluster_mode {
            "cluster"
        } else {
            "single-node"
        },
        if config.enable_auth { "on" } else { "OFF" },
    );

    // Plain connections speak HTTP/1.1 only, as vmgateway's do: no protocol sniffing on every
    // connection. TLS connections negotiate HTTP/2 or HTTP/1.1 by ALPN.
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(64 * 1024);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let client = ClientIp::new(peer);
        let service = service_fn(move |request| {
            let gateway = gateway.clone();
            let client = client.clone();
            async move { Ok::<_, Infallible>(gateway.handle(request, &client).await) }
        });
        match &tls {
            None => {
                let conn = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let handshake_timeout = config.header_read_timeout;
                tokio::spawn(async move {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                });
            }
        }
    }

    gateway.shutting_down.store(true, Ordering::Release);
    if !config.shutdown_delay.is_zero() {
        tracing::info!(
            "waiting {:?} (-http.shutdownDelay) so load balancers see /health fail",
            config.shutdown_delay
        );
        tokio::time::sleep(config.shutdown_delay).await;
    }
    drop(listener);
    tracing::info!(
        "shutting down: finishing in-flight requests for at most {:?}",
        config.max_graceful_shutdown
    );
    if tokio::time::timeout(config.max_graceful_shutdown, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy after -http.maxGracefulShutdownDuration; closing them");
    }
    if let Some(fetcher) = fetcher {
        fetcher.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers we can only run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
}

fn tls_acceptor(config: &Config) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Err("-tls needs -tlsCertFile and -tlsKeyFile".into());
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("-tlsCertFile {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("-tlsKeyFile {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("-tlsCertFile/-tlsKeyFile: {e}"))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
