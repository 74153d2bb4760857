//! Start-up, the accept loops and shutdown: the tokio runtime (`-http.workers` threads), one listening
//! socket per `-httpListenAddr` (each with its own PROXY protocol, TLS and client-certificate settings),
//! every connection's lifetime rules ([`watchdog`]), SIGHUP reloads, and the graceful drain.
//!
//! Shutdown (SIGTERM or SIGINT): `/health` turns 503, `-http.shutdownDelay` passes, the listeners close
//! and in-flight requests finish within `-http.maxGracefulShutdownDuration`.

mod linger;
pub mod proxy_protocol;
mod tls;
pub mod watchdog;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::auth::fetch;
use crate::flags::{BackendType, Config, Listener};
use crate::proxy::ClientIp;
use crate::reload::Reload;
use crate::server::{AfterAnswer, Gateway};
use tls::TlsFiles;
use watchdog::{Activity, Limits, Verdict, WatchedIo};

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
    if config.server.workers > 0 {
        runtime.worker_threads(config.server.workers);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .map_err(|e| start_error(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve(config))
}

/// One bound listener and what its connections need.
struct Bound {
    socket: TcpListener,
    settings: Listener,
    tls: Option<Arc<TlsFiles>>,
}

async fn serve(config: Config) -> Result<(), StartError> {
    let reload = Arc::new(Reload::default());
    let (auth, key_status, fetcher) = fetch::start(&config, &reload).await.map_err(config_error)?;
    let hostname = crate::server::hostname();
    let (ratelimit, ratelimit_tasks) =
        match crate::ratelimit::setup::start(&config, &hostname, &reload)
            .await
            .map_err(config_error)?
        {
            Some((limiter, tasks)) => (Some(limiter), tasks),
            None => (None, Vec::new()),
        };
    let gateway = Arc::new(
        Gateway::new(config.clone(), auth, key_status, ratelimit, &reload).map_err(config_error)?,
    );
    for task in ratelimit_tasks {
        gateway.keep(task);
    }
    gateway.start_discovery().await;
    let render = {
        let gateway = gateway.clone();
        Arc::new(move || gateway.metrics_text())
    };
    for task in crate::push::start(&config.metrics, render, &gateway.push).map_err(config_error)? {
        gateway.keep(task);
    }
    let mut bound = Vec::with_capacity(config.server.listeners.len());
    for settings in &config.server.listeners {
        let tls = match &settings.tls {
            Some(t) => {
                let files =
                    TlsFiles::load(t, &config.server.tls_cipher_suites).map_err(config_error)?;
                tokio::spawn(files.clone().watch(reload.subscribe()));
                Some(files)
            }
            None => None,
        };
        let socket = bind(settings.addr).map_err(|e| {
            start_error(format!(
                "cannot listen on {} (-httpListenAddr): {e}",
                settings.addr
            ))
        })?;
        let local = socket
            .local_addr()
            .map_err(|e| start_error(e.to_string()))?;
        tracing::info!(
            "tenantgate {} listening on {}://{local}{}{} ({} mode, auth {})",
            env!("CARGO_PKG_VERSION"),
            if tls.is_some() { "https" } else { "http" },
            config.server.path_prefix,
            if settings.proxy_protocol {
                " expecting the PROXY protocol"
            } else {
                ""
            },
            if config.backend.cluster_mode {
                "cluster"
            } else {
                "single-node"
            },
            if config.auth.enabled { "on" } else { "OFF" },
        );
        bound.push(Bound {
            socket,
            settings: settings.clone(),
            tls,
        });
    }
    let backend = &config.backend;
    if backend.read_type == BackendType::Prometheus || backend.write_type == BackendType::Prometheus
    {
        tracing::info!(
            "read backend speaks {}, write backend speaks {}{}",
            backend.read_type.name(),
            backend.write_type.name(),
            match &backend.tenant_header {
                Some(h) => format!("; the tenant goes in the {} header", h.name),
                None => String::new(),
            },
        );
    }
    let reloader = tokio::spawn(reload.clone().on_sighup());

    let drain = Arc::new(Drain::default());
    let mut accepting = Vec::new();
    for listener in bound {
        accepting.push(tokio::spawn(accept_loop(
            listener,
            gateway.clone(),
            drain.clone(),
        )));
    }
    shutdown_signal().await;

    gateway.shutting_down.store(true, Ordering::Release);
    if !config.server.shutdown_delay.is_zero() {
        tracing::info!(
            "waiting {:?} (-http.shutdownDelay) so load balancers see /health fail",
            config.server.shutdown_delay
        );
        tokio::time::sleep(config.server.shutdown_delay).await;
    }
    for task in &accepting {
        task.abort();
    }
    for task in accepting {
        let _ = task.await;
    }
    tracing::info!(
        "shutting down: finishing in-flight requests for at most {:?}",
        config.server.max_graceful_shutdown
    );
    if tokio::time::timeout(config.server.max_graceful_shutdown, drain.close_all())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy after -http.maxGracefulShutdownDuration; closing them");
    }
    gateway.stop_background().await;
    reloader.abort();
    if let Some(fetcher) = fetcher {
        fetcher.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// A listening socket with a backlog as large as the system allows; an IPv6 wildcard takes IPv4 too.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Graceful shutdown of client connections: a signal every connection watches, and a count of the
/// connections still open.
struct Drain {
    closing: watch::Sender<bool>,
    open: std::sync::atomic::AtomicUsize,
    all_closed: Notify,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            closing: watch::Sender::new(false),
            open: std::sync::atomic::AtomicUsize::new(0),
            all_closed: Notify::new(),
        }
    }
}

/// Held by each open connection.
struct Open(Arc<Drain>);

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

impl Drain {
    fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(self.clone())
    }

    /// Asks every connection to close once its requests are answered, and waits until all have.
    async fn close_all(&self) {
        self.closing.send_replace(true);
        loop {
            let notified = self.all_closed.notified();
            let mut notified = pin!(notified);
            notified.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

async fn accept_loop(listener: Bound, gateway: Arc<Gateway>, drain: Arc<Drain>) {
    let listener = Arc::new(listener);
    loop {
        let (stream, peer) = match listener.socket.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let listener = listener.clone();
        let open = drain.open();
        tokio::spawn(async move {
            if let Err(why) = connection(stream, peer, &listener, gateway, &open.0).await {
                tracing::debug!(%peer, "connection dropped: {why}");
            }
            drop(open);
        });
    }
}

/// Serves one client connection: the PROXY header, the TLS handshake, then HTTP under the watchdog.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    listener: &Bound,
    gateway: Arc<Gateway>,
    drain: &Drain,
) -> Result<(), String> {
    let server = &gateway.config.server;
    let handshake_limit = if server.header_read_timeout.is_zero() {
        Duration::from_secs(10)
    } else {
        server.header_read_timeout
    };
    let client = if listener.settings.proxy_protocol {
        proxy_protocol::read_header(&mut stream, peer, handshake_limit)
            .await
            .map_err(|e| {
                gateway.metrics.proxy_protocol_refusal();
                format!("PROXY protocol: {e}")
            })?
    } else {
        peer
    };
    let activity = Activity::new();
    let limits = Limits {
        idle: server.idle_conn_timeout,
        header: server.header_read_timeout,
        lifetime: jittered(server.conn_timeout),
    };
    match &listener.tls {
        None => {
            let io = WatchedIo::new(stream, activity.clone());
            serve_http1(io, client, gateway, activity, limits, drain).await;
        }
        Some(files) => {
            let tls = tokio::time::timeout(handshake_limit, files.acceptor().accept(stream))
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| {
                    gateway.metrics.tls_handshake_failure();
                    format!("TLS handshake: {e}")
                })?;
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = WatchedIo::new(tls, activity.clone());
            if h2 {
                // HTTP/2 has its own keep-alive and framing; the head timer does not apply to it.
                let limits = Limits {
                    header: Duration::ZERO,
                    ..limits
                };
                serve_auto(io, client, gateway, activity, limits, drain).await;
            } else {
                serve_http1(io, client, gateway, activity, limits, drain).await;
            }
        }
    }
    Ok(())
}

/// `-http.connTimeout` ±10 %, so clients of a restarted fleet do not all reconnect at once.
fn jittered(timeout: Duration) -> Duration {
    if timeout.is_zero() {
        return timeout;
    }
    timeout.mul_f64(0.9 + 0.2 * rand::random::<f64>())
}

/// The service of one connection: marks requests for the watchdog and hands them to the gateway.
macro_rules! service {
    ($gateway:expr, $client:expr, $activity:expr) => {{
        let gateway = $gateway.clone();
        let client = ClientIp::new($client);
        let activity = $activity.clone();
        service_fn(move |request| {
            let gateway = gateway.clone();
            let client = client.clone();
            let activity = activity.clone();
            async move {
                activity.request_started();
                let http1 = request.version() < http::Version::HTTP_2;
                let (mut response, after) = gateway.handle(request, &client).await;
                if after == AfterAnswer::CloseLingering {
                    activity.close_lingering();
                }
                if http1 && activity.retiring() {
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                activity.request_answered();
                Ok::<_, Infallible>(response)
            }
        })
    }};
}

async fn serve_http1<I>(
    io: I,
    client: SocketAddr,
    gateway: Arc<Gateway>,
    activity: Arc<Activity>,
    limits: Limits,
    drain: &Drain,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(!gateway.config.server.disable_keep_alive)
        .max_buf_size(64 * 1024);
    let service = service!(gateway, client, activity);
    let conn = http1.serve_connection(TokioIo::new(io), service);
    supervise(conn, &activity, limits, &gateway, drain, false).await;
}

async fn serve_auto<I>(
    io: I,
    client: SocketAddr,
    gateway: Arc<Gateway>,
    activity: Arc<Activity>,
    limits: Limits,
    drain: &Drain,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(!gateway.config.server.disable_keep_alive)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let service = service!(gateway, client, activity);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    supervise(conn, &activity, limits, &gateway, drain, true).await;
}

/// Drives a connection to its end while the watchdog looks at its stamps every tick; a verdict other
/// than `Keep`, or shutdown, asks hyper to close gracefully (a response in progress finishes first),
/// except an HTTP/1.1 connection's lifetime, which its next answer ends ([`Activity::retire`]).
async fn supervise<C>(
    conn: C,
    activity: &Activity,
    limits: Limits,
    gateway: &Gateway,
    drain: &Drain,
    http2: bool,
) where
    C: GracefulConnection,
{
    let mut conn = pin!(conn);
    let tick = limits.tick();
    let mut timer = pin!(tokio::time::sleep(tick));
    let mut closing_rx = drain.closing.subscribe();
    let mut shutdown = pin!(async move {
        let _ = closing_rx.wait_for(|closing| *closing).await;
    });
    let mut closing = false;
    std::future::poll_fn(|cx| {
        if conn.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if !closing && shutdown.as_mut().poll(cx).is_ready() {
            conn.as_mut().graceful_shutdown();
            closing = true;
        }
        while timer.as_mut().poll(cx).is_ready() {
            timer.as_mut().reset(tokio::time::Instant::now() + tick);
            if closing {
                continue;
            }
            match activity.verdict(&limits) {
                Verdict::Keep => {}
                Verdict::SlowHeader => {
                    // Nothing is being answered: drop the connection rather than wait for the head.
                    gateway.metrics.client_close(Verdict::SlowHeader);
                    return Poll::Ready(());
                }
                Verdict::Lifetime if !http2 => {
                    // Said in the next answer (`Activity::retire`); an idle connection is left to
                    // the idle timeout.
                    if activity.retire() {
                        gateway.metrics.client_close(Verdict::Lifetime);
                    }
                }
                verdict => {
                    gateway.metrics.client_close(verdict);
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
        Poll::Pending
    })
    .await;
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
