//! Failing neighbours and oversized input: a backend that refuses connections (502), one that never
//! answers (504 after -upstream.timeout), bodies over the limit (413), and a client that sends its headers
//! too slowly (the connection is closed after -http.headerReadTimeout).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn refused_and_hanging_backends_give_502_and_504() {
    // Nothing listens on this port.
    let dead = free_port();
    // This one accepts connections and never answers.
    let hanging = TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging_url = format!("http://{}", hanging.local_addr().unwrap());
    let gate = Gate::start(&[
        format!("-read.url=http://127.0.0.1:{dead}"),
        format!("-write.url={hanging_url}"),
        "-upstream.timeout=1s".into(),
    ]);
    let r = http_client()
        .get(format!("{}/api/v1/query?query=1", gate.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(body_text(r).contains("refused"));
    let started = Instant::now();
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", gate.url))
        .body("m 1\n")
        .send()
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        gate.metric("tenantgate_upstream_errors_total{kind=\"connect\"}"),
        1.0
    );
    assert_eq!(
        gate.metric("tenantgate_upstream_errors_total{kind=\"timeout\"}"),
        1.0
    );
    drop(hanging);
}

#[test]
fn bodies_over_the_limit_get_413_and_nothing_is_stored() {
    let vm = Victoria::start();
    let gate = Gate::start(&[
        format!("-read.url={}", vm.url),
        format!("-write.url={}", vm.url),
        "-maxRequestBodySize=1KiB".into(),
        "-maxFormBodySize=100".into(),
    ]);
    let big = import_lines(
        &(0..100)
            .map(|_| (r#"big_metric{job="x"}"#, 1.0))
            .collect::<Vec<_>>(),
    );
    assert!(big.len() > 1024);
    // Declared length over the limit.
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", gate.url))
        .body(big.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    // Chunked, so the limit is only found while streaming.
    let request = format!(
        "POST /api/v1/import/prometheus HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let (status, text) = raw_request(&gate.url, request.as_bytes());
    assert_eq!(status, 413, "{text}");
    // A form body over -maxFormBodySize.
    let r = http_client()
        .post(format!("{}/api/v1/query", gate.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("query={}", "1%2B".repeat(100)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    // Content-Length together with Transfer-Encoding: hyper lets chunked win, drops Content-Length and
    // closes the connection after the answer (RFC 9112 §6.3), so the bytes smuggled after the empty chunk
    // are never read as a request, let alone glued onto the first one upstream.
    let smuggled_line = import_lines(&[(r#"smuggled_metric{job="x"}"#, 1.0)]);
    let smuggle = format!(
        "POST /api/v1/import/prometheus HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled_line}",
        5 + smuggled_line.len()
    );
    let (status, text) = raw_request(&gate.url, smuggle.as_bytes());
    assert_eq!(status, 204, "{text}");
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "one answer only: {text}"
    );
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    // A small write still works; the big one never arrived.
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", gate.url))
        .body(import_lines(&[(r#"small_metric{job="x"}"#, 1.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    vm.wait_series("small_metric", 1);
    assert!(vm.series("big_metric").is_empty());
    assert!(vm.series("smuggled_metric").is_empty());
}

#[test]
fn slow_header_senders_are_cut_off() {
    let vm = Victoria::start();
    let gate = Gate::start(&[
        format!("-read.url={}", vm.url),
        "-http.headerReadTimeout=1s".into(),
    ]);
    let mut stream = TcpStream::connect(gate.url.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    for b in
        b"GET /api/v1/query?query=1 HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
    {
        if stream.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    if !closed {
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the slow client was not cut off"
    );
    // The gateway still serves others.
    let r = http_client()
        .get(format!("{}/api/v1/query?query=1", gate.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn concurrency_limits_answer_429_with_retry_after() {
    // A backend that never answers keeps the first request in flight.
    let hanging = TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging_url = format!("http://{}", hanging.local_addr().unwrap());
    let signer = Signer::rsa();
    let gate = Gate::start_secured(
        &signer,
        &[
            format!("-read.url={hanging_url}"),
            "-upstream.timeout=3s".into(),
            "-maxConcurrentRequestsPerTenant=1".into(),
            "-maxConcurrentRequests=2".into(),
        ],
    );
    let dev = signer.token(r#"{"extra_labels":{"team":"dev"}}"#);
    let ops = signer.token(r#"{"extra_labels":{"team":"ops"}}"#);
    let admin = signer.token(r#"{}"#);
    let url = format!("{}/api/v1/query?query=1", gate.url);
    let in_flight: Vec<_> = [dev.clone(), ops.clone()]
        .into_iter()
        .map(|token| {
            let url = url.clone();
            std::thread::spawn(move || {
                http_client()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // dev's one slot is taken: 429 for dev.
    let r = http_client().get(&url).bearer_auth(&dev).send().unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    // Two requests in flight fill the global limit: 429 for a third tenant too.
    let r = http_client().get(&url).bearer_auth(&admin).send().unwrap();
    assert_eq!(r.status(), 429);
    for t in in_flight {
        assert_eq!(t.join().unwrap(), 504);
    }
    assert_eq!(gate.metric("tenantgate_concurrency_rejections_total"), 2.0);
    drop(hanging);
}

#[test]
fn a_backend_closing_mid_answer_is_not_passed_off_as_complete() {
    // A backend that sends headers promising 1000 bytes, sends 7, and hangs up.
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_url = format!("http://{}", backend.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut conn, _) = backend.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"stat");
        }
    });
    let gate = Gate::start(&[format!("-read.url={backend_url}")]);
    for _ in 0..2 {
        // The head and the cut-off body arrive together, so whether the client sees the 200 before
        // the connection breaks depends on timing; what it must never see is a complete answer.
        let outcome = http_client()
            .get(format!("{}/api/v1/query?query=1", gate.url))
            .send()
            .and_then(|r| {
                assert_eq!(r.status(), 200, "a head that arrives is passed on as it is");
                r.bytes()
            });
        assert!(
            outcome.is_err(),
            "a truncated body must surface as an error, not a short success: {outcome:?}"
        );
    }
    server.join().unwrap();
    let r = http_client()
        .get(format!("{}/health", gate.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn a_client_going_away_mid_upload_leaves_the_gateway_healthy() {
    let vm = Victoria::start();
    let gate = Gate::start(&[
        format!("-write.url={}", vm.url),
        format!("-read.url={}", vm.url),
    ]);
    for _ in 0..5 {
        let mut stream = TcpStream::connect(gate.url.trim_start_matches("http://")).unwrap();
        stream
            .write_all(b"POST /api/v1/import/prometheus HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabandoned_metric 1\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(stream);
    }
    // In-flight requests drain to zero and the gateway serves on.
    let deadline = Instant::now() + Duration::from_secs(10);
    // The /metrics request that reads the gauge is itself in flight.
    while gate.metric("tenantgate_requests_inflight") > 1.0 {
        assert!(Instant::now() < deadline, "requests stuck in flight");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", gate.url))
        .body(import_lines(&[(r#"after_abandon{job="x"}"#, 1.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    vm.wait_series("after_abandon", 1);
    assert!(!gate.proc.log_text().contains("panicked"));
}
