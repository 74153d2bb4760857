//! The remote-write sink of the load benchmark (run by `bench/run`):
//!
//! ```text
//! cargo run --release --example sink -- 127.0.0.1:PORT
//! ```
//!
//! Reads every request body to its end, then answers `204 No Content`, on one thread. nginx's `return 204`
//! cannot stand in here: it answers before the body has arrived, and wrk, whose request is then still
//! being written, stalls the connection. Reading the whole body first is also what a real
//! VictoriaMetrics does with a remote-write request.
//!
//! `POST /introspect` is answered as an identity provider's RFC 7662 introspection endpoint would for an
//! active opaque token (the `tg-opaque` row: its one introspection, then the cache).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

async fn sink(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let introspect = request.uri().path() == "/introspect";
    let mut body = request.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    if introspect {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 3600;
        let answer = format!(
            r#"{{"active":true,"client_id":"bench","exp":{exp},"vm_access":{{"tenant_id":{{"account_id":0}},"extra_labels":{{"team":"dev"}}}}}}"#
        );
        let mut response = Response::new(Full::new(Bytes::from(answer)));
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

fn main() {
    let addr = std::env::args().nth(1).expect("usage: sink 127.0.0.1:PORT");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(sink))
                    .await;
            });
        }
    });
}
