//! The gateway's backend side against real servers: an https backend (nginx terminating TLS in front
//! of VictoriaMetrics) trusted through the CA flags, big chunked answers, chunked uploads, a backend
//! that closes idle keep-alive connections and limits requests per connection, and a backend that
//! refuses an upload before reading it all.

mod common;

use std::time::Duration;

use common::*;

const DEV: &str = r#"{"tenant_id":{"account_id":0,"project_id":0},"extra_labels":{"team":"dev"}}"#;

/// `n` distinct series in the Prometheus text format, without team labels.
fn many_series(prefix: &str, n: usize) -> String {
    let ts = (now() - 60) * 1000;
    (0..n)
        .map(|i| format!("{prefix}{{i=\"{i}\"}} {i} {ts}\n"))
        .collect()
}

/// Exports `metric` through the gateway and returns the lines, after checking every one is dev's.
fn export_through(gate: &Gate, token: &str, metric: &str) -> Vec<String> {
    let r = http_client()
        .get(format!("{}/api/v1/export", gate.url))
        .query(&[("match[]", metric)])
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    for line in &lines {
        assert!(line.contains(r#""team":"dev""#), "{line}");
    }
    lines
}

/// nginx in front of `vm` on a free port, with `directives` in its server block; with `tls` it
/// terminates TLS with a certificate from a fresh test CA (`dir/ca.pem`). Returns nginx and its URL.
fn nginx_in_front(
    vm: &Victoria,
    dir: &std::path::Path,
    tls: bool,
    directives: &str,
) -> (Proc, String) {
    let port = free_port();
    let d = dir.display().to_string();
    let listen = if tls {
        test_ca(dir);
        format!(
            "{port} ssl;\n ssl_certificate {d}/server.pem;\n ssl_certificate_key {d}/server.key"
        )
    } else {
        port.to_string()
    };
    let proc = nginx(
        dir,
        &format!(
            "server {{\n listen 127.0.0.1:{listen};\n {directives}\n location / {{ proxy_pass http://127.0.0.1:{}; proxy_http_version 1.1; proxy_request_buffering off; }}\n}}\n",
            vm.port
        ),
    );
    eventually(Duration::from_secs(10), "nginx listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let scheme = if tls { "https" } else { "http" };
    (proc, format!("{scheme}://127.0.0.1:{port}"))
}

/// Imports `body` (Prometheus text) through the gateway with `token`; VictoriaMetrics must answer 204.
fn import(gate: &Gate, token: &str, body: impl Into<reqwest::blocking::Body>) {
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", gate.url))
        .bearer_auth(token)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204, "{}", body_text(r));
}

#[test]
fn https_backends_are_verified_and_stream_both_ways() {
    let vm = Victoria::start();
    let dir = tempdir();
    let (_nginx, backend) = nginx_in_front(&vm, dir.path(), true, "client_max_body_size 0;");
    let d = dir.path().display().to_string();
    let signer = Signer::rsa();
    let token = signer.token(DEV);
    let gate = Gate::start_secured(
        &signer,
        &[
            format!("-read.url={backend}"),
            format!("-write.url={backend}"),
            format!("-read.tlsCAFile={d}/ca.pem"),
            format!("-write.tlsCAFile={d}/ca.pem"),
        ],
    );

    // 3,000 series up (about 100 KB, sent with a length), and back as VictoriaMetrics' chunked export.
    import(&gate, &token, many_series("tls_metric", 3000));
    // A chunked upload of unknown length goes out chunked.
    let stream = std::io::Cursor::new(many_series("tls_chunked", 500).into_bytes());
    import(&gate, &token, reqwest::blocking::Body::new(stream));
    vm.flush();
    assert_eq!(
        vm.wait_series(r#"tls_metric{team="dev"}"#, 3000).len(),
        3000
    );
    assert_eq!(vm.wait_series(r#"tls_chunked{team="dev"}"#, 500).len(), 500);
    assert_eq!(export_through(&gate, &token, "tls_metric").len(), 3000);
    assert_eq!(
        gate.metric("tenantgate_upstream_errors_total{kind=\"broken\"}"),
        0.0
    );

    // The same backend without the CA flag: its certificate is not trusted, so nothing is sent.
    let untrusted = Gate::start_secured(&signer, &[format!("-read.url={backend}")]);
    let r = http_client()
        .get(format!("{}/api/v1/query?query=tls_metric", untrusted.url))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(untrusted.proc.log_text().contains("certificate"));
}

#[test]
fn connections_the_backend_closes_or_limits_are_never_an_error() {
    let vm = Victoria::start();
    let dir = tempdir();
    // nginx closes a keep-alive connection after 300 ms idle, and after every third request.
    let (_nginx, backend) = nginx_in_front(
        &vm,
        dir.path(),
        false,
        "keepalive_timeout 300ms;\n keepalive_requests 3;",
    );
    let signer = Signer::rsa();
    let token = signer.token(DEV);
    let gate = Gate::start_secured(&signer, &read_write(&backend));
    import(&gate, &token, many_series("ka_metric", 2000));
    vm.flush();
    vm.wait_series(r#"ka_metric{team="dev"}"#, 2000);
    for round in 0..12 {
        // Reads, and a form read (a body we hold whole, sent again if the connection was dead).
        let r = http_client()
            .get(format!("{}/api/v1/query", gate.url))
            .query(&[("query", "count(ka_metric)")])
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        assert!(r.text().unwrap().contains("\"2000\""));
        let r = http_client()
            .post(format!("{}/api/v1/query", gate.url))
            .form(&[("query", "count(ka_metric)")])
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        assert_eq!(export_through(&gate, &token, "ka_metric").len(), 2000);
        if round % 3 == 2 {
            // Long enough for nginx to have closed every idle connection.
            std::thread::sleep(Duration::from_millis(450));
        }
    }
    assert_eq!(
        gate.metric("tenantgate_upstream_errors_total{kind=\"broken\"}"),
        0.0
    );
    assert_eq!(
        gate.metric(r#"tenantgate_requests_total{route="read",code="200"}"#),
        36.0
    );
}

#[test]
fn an_upload_the_backend_refuses_early_gets_the_backends_answer() {
    let vm = Victoria::start();
    let signer = Signer::rsa();
    let gate = Gate::start_secured(&signer, &[format!("-write.url={}", vm.url)]);
    // One 40 MB line: VictoriaMetrics answers 400 before reading it all and resets the connection.
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", gate.url))
        .bearer_auth(signer.token(DEV))
        .body(vec![b'x'; 40_000_000])
        .send()
        .unwrap();
    assert_eq!(r.status(), 400, "the backend's own answer, not a 502");
    assert!(body_text(r).contains("cannot read"));
}
