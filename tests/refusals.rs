//! Refused writes leave the client's connection healthy (issue 18): every refusal tenantgate decides
//! before reading a body (401, 403, 404, 405, 413, 415, 429) reaches a client that sends whole bodies
//! before reading (Python's `http.client` on one keep-alive connection), accepted writes sent between
//! the refusals on the same connection are all stored in a real VictoriaMetrics, and the connection
//! survives or, for bodies too large to read away, closes cleanly (the answer, then end-of-stream, never
//! a reset). curl uploads of 2 MiB and 200 MiB over the limit get their 413; the same over TLS, and over
//! HTTP/2 a refused stream ends without disturbing the connection's other streams.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const MAX_BODY: usize = 64 * 1024;
/// `-maxFormBodySize` of every scene: query forms over it are refused.
const MAX_FORM: usize = 16 * 1024;

struct Scene {
    vm: Victoria,
    gate: Gate,
    /// Tenant 0:0, may write.
    writer: String,
    /// Tenant 0:0, read-only.
    reader: String,
    /// Tenant 9:0, over its rows limit after its first write.
    limited: String,
    _dir: tempfile::TempDir,
}

fn scene(extra: &[String]) -> Scene {
    let vm = Victoria::start();
    let dir = tempdir();
    let limits = dir.path().join("limits.yml");
    fs::write(
        &limits,
        "limits:\n  - type: rows_inserted\n    value: 1\n    account_id: 9\n",
    )
    .unwrap();
    let signer = Signer::rsa();
    let mut args = read_write(&vm.url);
    args.extend([
        format!("-maxRequestBodySize={MAX_BODY}"),
        format!("-maxFormBodySize={MAX_FORM}"),
        "-enable.rateLimit".into(),
        format!("-ratelimit.config={}", limits.display()),
        "-ratelimit.shareUsage=false".into(),
        format!("-datasource.url={}", vm.url),
    ]);
    args.extend_from_slice(extra);
    let gate = Gate::start_secured(&signer, &args);
    let scene = Scene {
        writer: signer.token(r#"{"tenant_id":{"account_id":0,"project_id":0}}"#),
        reader: signer.token(r#"{"tenant_id":{"account_id":0,"project_id":0},"mode":1}"#),
        limited: signer.token(r#"{"tenant_id":{"account_id":9,"project_id":0}}"#),
        vm,
        gate,
        _dir: dir,
    };
    // Use up tenant 9's limit, and wait until the gateway has counted it.
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", scene.gate.url))
        .bearer_auth(&scene.limited)
        .body(import_lines(&[("limit_used", 1.0), ("limit_used2", 1.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    eventually(Duration::from_secs(10), "tenant 9 over its limit", || {
        http_client()
            .post(format!("{}/api/v1/import/prometheus", scene.gate.url))
            .bearer_auth(&scene.limited)
            .body("x 1\n")
            .send()
            .unwrap()
            .status()
            == 429
    });
    scene
}

/// Runs `plan` through `tests/support/keepalive.py` (Python's http.client on one keep-alive connection)
/// against `host:port`; returns one answer per request and the connections it opened.
fn python_client(host_port: &str, plan: &[Value], ca: Option<&Path>) -> (Vec<Value>, u64) {
    let (host, port) = host_port.rsplit_once(':').unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("tests/support/keepalive.py"))
        .args([host, port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(ca) = ca {
        cmd.env("TG_TLS_CA", ca);
    }
    let mut child = cmd
        .spawn()
        .expect("python3 (CPython 3.11 on every machine of this kind) is needed for this test");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(plan).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "keepalive.py failed");
    let mut lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let connections = lines.pop().unwrap()["connections"].as_u64().unwrap();
    (lines, connections)
}

fn bearer(token: &str) -> Value {
    json!({ "Authorization": format!("Bearer {token}") })
}

/// A refused write of `size` bytes: what it is, its request, and the status it must get.
fn refusals(s: &Scene, size: usize) -> Vec<(&'static str, Value, u16)> {
    let write = |headers: Value, path: &str, chunked: bool| json!({"method": "POST", "path": path, "headers": headers, "body": "x", "repeat": size, "chunked": chunked});
    let w = "/api/v1/import/prometheus";
    let mut multipart = bearer(&s.writer);
    multipart["Content-Type"] = json!("multipart/form-data; boundary=x");
    let mut all = vec![
        ("no token", write(json!({}), w, false), 401),
        ("no token, chunked", write(json!({}), w, true), 401),
        ("bad token", write(bearer("not.a.token"), w, false), 401),
        ("read-only token", write(bearer(&s.reader), w, false), 403),
        (
            "unknown path",
            write(bearer(&s.writer), "/api/v1/nowhere", false),
            404,
        ),
        (
            "tenant path",
            write(
                bearer(&s.writer),
                "/insert/0:0/prometheus/api/v1/write",
                false,
            ),
            403,
        ),
        ("multipart", write(multipart, w, false), 415),
        (
            "over the rows limit",
            write(bearer(&s.limited), w, false),
            429,
        ),
        (
            "over the rows limit, chunked",
            write(bearer(&s.limited), w, true),
            429,
        ),
    ];
    let mut delete = write(bearer(&s.writer), w, false);
    delete["method"] = json!("DELETE");
    all.push(("wrong method", delete, 405));
    if size > MAX_FORM {
        let mut form = bearer(&s.reader);
        form["Content-Type"] = json!("application/x-www-form-urlencoded");
        for (what, chunked) in [
            ("form over -maxFormBodySize", false),
            ("form over -maxFormBodySize, chunked", true),
        ] {
            let read = write(form.clone(), "/api/v1/query_range", chunked);
            all.push((what, read, 413));
        }
    }
    if size > MAX_BODY {
        all.push((
            "over -maxRequestBodySize",
            write(bearer(&s.writer), w, false),
            413,
        ));
        all.push((
            "over -maxRequestBodySize, chunked",
            write(bearer(&s.writer), w, true),
            413,
        ));
    }
    all
}

/// Refusals of each kind and size alternating with accepted writes on one connection; returns the
/// connections the client opened and how many writes were accepted (series `kept_<tag>{i=...}`).
fn alternate(s: &Scene, addr: &str, sizes: &[usize], tag: &str, ca: Option<&Path>) -> (u64, usize) {
    let mut plan = Vec::new();
    let mut expected = Vec::new();
    let mut accepted = 0;
    for &size in sizes {
        for (what, request, status) in refusals(s, size) {
            plan.push(request);
            expected.push((format!("{what}, {size} bytes"), status));
            let body = import_lines(&[(&format!("kept_{tag}{{i=\"{accepted}\"}}"), 1.0)]);
            plan.push(
                json!({"method": "POST", "path": "/api/v1/import/prometheus",
                "headers": bearer(&s.writer), "body": body}),
            );
            expected.push((format!("accepted write after '{what}, {size} bytes'"), 204));
            accepted += 1;
        }
    }
    let (answers, connections) = python_client(addr, &plan, ca);
    assert_eq!(answers.len(), expected.len());
    let failed: Vec<String> = answers
        .iter()
        .zip(&expected)
        .filter(|(answer, (_, status))| answer["status"].as_u64() != Some(u64::from(*status)))
        .map(|(answer, (what, status))| format!("{what}: want {status}, got {answer}"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests did not get their answer:\n{}",
        failed.len(),
        answers.len(),
        failed.join("\n")
    );
    (connections, accepted)
}

#[test]
fn refusals_before_the_body_keep_a_keep_alive_connection_usable() {
    let s = scene(&[]);
    let addr = s.gate.url.trim_start_matches("http://");
    // Small and medium bodies (and 80 KiB over the 64 KiB limit) are read away: one connection does all.
    let (connections, accepted) = alternate(&s, addr, &[300, 60_000, 80 * 1024], "small", None);
    assert_eq!(
        connections, 1,
        "bodies up to the drain budget must not cost the connection"
    );
    s.vm.wait_series("kept_small", accepted);
    assert!(
        s.gate
            .metric(r#"tenantgate_request_bodies_discarded_total{protocol="http1"}"#)
            >= 30.0
    );
    assert_eq!(
        s.gate
            .metric("tenantgate_connections_closed_after_refusal_total"),
        0.0
    );

    // Bodies over the drain budget (1 MiB): the answer says Connection: close and the client, which
    // sends all 3 MiB before reading, still reads it; the next request goes on a new connection.
    let before = s
        .gate
        .metric("tenantgate_connections_closed_after_refusal_total");
    let (connections, accepted) = alternate(&s, addr, &[3 << 20], "large", None);
    // Every one of the twelve refusals closed its connection.
    assert!(connections >= 10, "{connections} connections");
    s.vm.wait_series("kept_large", accepted);
    assert!(
        s.gate
            .metric("tenantgate_connections_closed_after_refusal_total")
            - before
            >= 10.0
    );
}

/// curl's exit code, status and time for an upload of `size` bytes (a sparse file) to `url`.
fn curl_upload(
    dir: &Path,
    url: &str,
    token: &str,
    size: u64,
    extra: &[&str],
) -> (i32, String, Duration) {
    let file = dir.join(format!("upload-{size}"));
    if !file.exists() {
        fs::File::create(&file).unwrap().set_len(size).unwrap();
    }
    let started = Instant::now();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "60",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(extra)
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(url)
        .output()
        .expect("curl (on every machine of this kind) is needed for this test");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        started.elapsed(),
    )
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    // Clock ticks are 100 per second on Linux.
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn curl_uploads_over_the_limit_get_413_not_a_reset() {
    let s = scene(&[]);
    let dir = tempdir();
    let url = format!("{}/api/v1/import/prometheus", s.gate.url);
    let rss_before = peak_rss_kib(s.gate.proc.pid());
    for size in [2u64 << 20, 200 << 20] {
        // As curl sends it (Expect: 100-continue for large bodies: the body is never asked for), and
        // without Expect (curl streams, sees the early answer and stops sending).
        for extra in [&[][..], &["-H", "Expect:"][..]] {
            let cpu = cpu_time(s.gate.proc.pid());
            let (code, out, took) = curl_upload(dir.path(), &url, &s.writer, size, extra);
            assert_eq!((code, out.as_str()), (0, "413"), "{size} bytes {extra:?}");
            let cpu = cpu_time(s.gate.proc.pid()) - cpu;
            eprintln!("refused upload of {size} bytes {extra:?}: curl took {took:?}, tenantgate used {cpu:?} of CPU");
        }
    }
    let rss_after = peak_rss_kib(s.gate.proc.pid());
    eprintln!("tenantgate peak RSS {rss_before} KiB -> {rss_after} KiB");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "refused uploads must not be buffered: peak RSS {rss_before} -> {rss_after} KiB"
    );
    // The gateway still serves.
    let r = http_client()
        .post(&url)
        .bearer_auth(&s.writer)
        .body(import_lines(&[("after_uploads", 1.0)]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[test]
fn over_tls_refusals_keep_http1_connections_and_end_only_their_http2_stream() {
    let dir = tempdir();
    test_ca(dir.path());
    let d = dir.path().display();
    let tls_port = free_port();
    let s = scene(&[
        format!("-httpListenAddr=127.0.0.1:{tls_port}"),
        "-tls=false,true".into(),
        format!("-tlsCertFile=,{d}/server.pem"),
        format!("-tlsKeyFile=,{d}/server.key"),
    ]);
    let ca = dir.path().join("ca.pem");
    let addr = format!("127.0.0.1:{tls_port}");
    let (connections, accepted) = alternate(&s, &addr, &[300, 80 * 1024], "tls", Some(&ca));
    assert_eq!(connections, 1);
    s.vm.wait_series("kept_tls", accepted);
    let (connections, accepted) = alternate(&s, &addr, &[3 << 20], "tls_large", Some(&ca));
    assert!(connections >= 10, "{connections} connections");
    s.vm.wait_series("kept_tls_large", accepted);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(h2::refused_streams_leave_the_others(&s, &addr, &ca));
    s.vm.wait_series("kept_h2_first", 1);
    s.vm.wait_series("kept_h2_after", 1);
    assert!(
        s.gate
            .metric(r#"tenantgate_request_bodies_discarded_total{protocol="http2"}"#)
            >= 2.0
    );
}

/// An HTTP/2 client (hyper's, over rustls with ALPN h2) on one connection.
mod h2 {
    use std::path::Path;
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls_pki_types::pem::PemObject;

    use super::Scene;

    pub async fn refused_streams_leave_the_others(s: &Scene, addr: &str, ca: &Path) {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        let driver = tokio::spawn(connection);
        let request = |token: &str, body: Bytes| {
            hyper::Request::post("https://127.0.0.1/api/v1/import/prometheus")
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(body))
                .unwrap()
        };
        let send = |req: hyper::Request<Full<Bytes>>| {
            let mut sender = sender.clone();
            async move {
                let response = sender.send_request(req).await.unwrap();
                let status = response.status().as_u16();
                let _ = response.into_body().collect().await;
                status
            }
        };
        let big = Bytes::from(vec![b'x'; 3 << 20]);
        // Two refused 3 MiB uploads and an accepted write in flight together on one connection.
        let (over_limit, no_grant, accepted) = tokio::join!(
            send(request(&s.writer, big.clone())),
            send(request(&s.reader, big.clone())),
            send(request(
                &s.writer,
                Bytes::from(common_lines("kept_h2_first"))
            )),
        );
        assert_eq!((over_limit, no_grant, accepted), (413, 403, 204));
        // The connection goes on.
        let after = send(request(
            &s.writer,
            Bytes::from(common_lines("kept_h2_after")),
        ))
        .await;
        assert_eq!(after, 204);
        assert!(
            !driver.is_finished(),
            "the HTTP/2 connection must stay open"
        );
        driver.abort();
    }

    fn common_lines(name: &str) -> String {
        super::import_lines(&[(name, 1.0)])
    }
}
