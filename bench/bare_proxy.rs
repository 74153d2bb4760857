//! A bare hyper reverse proxy, the `hyper-bare` row of `bench/run`: what tokio + hyper (server, and
//! hyper-util's pooled client) cost per request on this machine before tenantgate does anything. No
//! auth, no rewriting, no header hygiene, no timeouts; same allocator and runtime as tenantgate.
//!
//! ```text
//! cargo run --release --example bare_proxy -- 127.0.0.1:LISTEN 127.0.0.1:BACKEND
//! ```

use std::convert::Infallible;

use http::uri::{Authority, Scheme};
use http::Uri;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(backend)) = (args.next(), args.next()) else {
        panic!("usage: bare_proxy LISTEN_ADDR BACKEND_ADDR");
    };
    let backend: Authority = backend.parse().expect("backend host:port");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build(connector);
        let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (client, backend) = (client.clone(), backend.clone());
            let service = service_fn(move |mut request: Request<Incoming>| {
                let (client, backend) = (client.clone(), backend.clone());
                async move {
                    let mut parts = request.uri().clone().into_parts();
                    parts.scheme = Some(Scheme::HTTP);
                    parts.authority = Some(backend);
                    *request.uri_mut() = Uri::from_parts(parts).expect("uri");
                    let response = client.request(request).await;
                    Ok::<_, Infallible>(response.expect("backend answers"))
                }
            });
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
