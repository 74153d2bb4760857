//! The listening side as VictoriaMetrics components have it, on the real binary: several listeners
//! with their own TLS, `-tlsMinVersion`, client certificates (`-mtls`), certificates renewed on disk and
//! served without a restart, the PROXY protocol (v1 and v2) giving the client address to logs, the audit
//! log and `X-Forwarded-For` (checked in what real nginx received), idle, slow-header and lifetime limits
//! of client connections, `-http.disableKeepAlive` and `-enableTCP6`.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// One HTTP/1.1 exchange on an open connection: the answer's head and body (by Content-Length), or
/// `None` when the connection was closed instead.
fn exchange(stream: &mut TcpStream, request: &str) -> Option<(String, String)> {
    if stream.write_all(request.as_bytes()).is_err() {
        return None;
    }
    read_answer(stream)
}

fn read_answer(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((head, String::from_utf8_lossy(&body).to_string()))
}

fn connect(url: &str) -> TcpStream {
    let stream = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

const HEALTH: &str = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn a_tls13_only_listener_with_client_certificates_beside_a_plain_one() {
    let vm = Victoria::start();
    let dir = tempdir();
    test_ca(dir.path());
    let d = dir.path().display();
    let tls_port = free_port();
    // The harness adds the first (plain) listener; the second is HTTPS with TLS 1.3 and mTLS only.
    let gate = Gate::start(&[
        format!("-read.url={}", vm.url),
        format!("-httpListenAddr=127.0.0.1:{tls_port}"),
        "-tls=false,true".into(),
        format!("-tlsCertFile=,{d}/server.pem"),
        format!("-tlsKeyFile=,{d}/server.key"),
        "-tlsMinVersion=,TLS13".into(),
        "-mtls=false,true".into(),
        format!("-mtlsCAFile=,{d}/ca.pem"),
    ]);
    let https = format!("https://127.0.0.1:{tls_port}");
    let identity =
        reqwest::Identity::from_pem(&fs::read(dir.path().join("client.pem")).unwrap()).unwrap();
    let with_cert = https_client_builder(&dir.path().join("ca.pem"))
        .identity(identity.clone())
        .build()
        .unwrap();
    let r = with_cert
        .get(format!("{https}/api/v1/query?query=1"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Without a client certificate the handshake fails.
    let without = https_client_builder(&dir.path().join("ca.pem"))
        .build()
        .unwrap();
    assert!(without.get(format!("{https}/health")).send().is_err());
    // A TLS 1.2 client is refused, even with a certificate.
    let tls12 = https_client_builder(&dir.path().join("ca.pem"))
        .identity(identity)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert!(tls12.get(format!("{https}/health")).send().is_err());
    // The first listener is still plain HTTP.
    let r = http_client()
        .get(format!("{}/api/v1/query?query=1", gate.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(gate.metric("tenantgate_tls_handshake_failures_total") >= 2.0);
}

/// Replaces `live` with `source` in one rename, as certificate tools do.
fn replace(source: &Path, live: &Path) {
    let tmp = live.with_extension("tmp");
    fs::copy(source, &tmp).unwrap();
    fs::rename(&tmp, live).unwrap();
}

#[test]
fn a_renewed_certificate_is_served_without_restart_and_a_broken_one_keeps_the_old() {
    let vm = Victoria::start();
    let (one, two) = (tempdir(), tempdir());
    test_ca(one.path());
    test_ca(two.path());
    let live = tempdir();
    let (cert, key) = (live.path().join("tls.pem"), live.path().join("tls.key"));
    replace(&one.path().join("server.pem"), &cert);
    replace(&one.path().join("server.key"), &key);
    let tls_port = free_port();
    let gate = Gate::start(&[
        format!("-read.url={}", vm.url),
        format!("-httpListenAddr=127.0.0.1:{tls_port}"),
        "-tls=false,true".into(),
        format!("-tlsCertFile=,{}", cert.display()),
        format!("-tlsKeyFile=,{}", key.display()),
    ]);
    let https = format!("https://127.0.0.1:{tls_port}/health");
    let trusting = |ca: &Path| https_client_builder(&ca.join("ca.pem")).build().unwrap();
    let (old, new) = (trusting(one.path()), trusting(two.path()));
    assert_eq!(old.get(&https).send().unwrap().status(), 200);
    assert!(new.get(&https).send().is_err());
    // Renewal: key first, then certificate, as certbot's deploy hooks do.
    replace(&two.path().join("server.key"), &key);
    replace(&two.path().join("server.pem"), &cert);
    eventually(Duration::from_secs(10), "the renewed certificate", || {
        new.get(&https).send().is_ok()
    });
    assert!(
        old.get(&https).send().is_err(),
        "the old certificate is gone"
    );
    // A broken file keeps the certificate in force, and says so in the metrics.
    fs::write(&cert, "not a certificate").unwrap();
    eventually(
        Duration::from_secs(10),
        "the failed reload to be counted",
        || gate.metric(r#"tenantgate_reloads_total{what="tls",result="failure"}"#) >= 1.0,
    );
    assert_eq!(new.get(&https).send().unwrap().status(), 200);
    assert_eq!(
        gate.metric(r#"tenantgate_reload_last_success{what="tls"}"#),
        0.0
    );
}

/// nginx answering queries itself and logging the X-Forwarded-For it received.
fn recording_backend(dir: &Path) -> (Proc, String) {
    let port = free_port();
    let d = dir.display();
    let proc = nginx(
        dir,
        &format!(
            "log_format xff '$http_x_forwarded_for';\nserver {{\n listen 127.0.0.1:{port};\n access_log {d}/xff.log xff;\n location / {{ default_type application/json; return 200 '{{\"status\":\"success\",\"data\":{{\"resultType\":\"vector\",\"result\":[]}}}}'; }}\n}}\n"
        ),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{url}/"), 200, &proc, Duration::from_secs(20));
    (proc, url)
}

#[test]
fn the_proxy_protocol_names_the_client_in_the_audit_log_and_x_forwarded_for() {
    let dir = tempdir();
    let (_nginx, backend) = recording_backend(dir.path());
    let signer = Signer::rsa();
    let audit = dir.path().join("audit.log");
    // The harness's listener (for its health check) is plain; the second expects the PROXY protocol.
    let pp_port = free_port();
    let gate = Gate::start_secured(
        &signer,
        &[
            format!("-read.url={backend}"),
            format!("-httpListenAddr=127.0.0.1:{pp_port}"),
            "-httpListenAddr.useProxyProtocol=false,true".into(),
            format!("-auditLog={}", audit.display()),
        ],
    );
    let pp_url = format!("http://127.0.0.1:{pp_port}");
    let token = signer.sign_raw(
        r#"{"alg":"RS256","typ":"JWT"}"#,
        &format!(
            r#"{{"exp":{},"sub":"alice","client_id":"grafana","vm_access":{{"tenant_id":{{"account_id":3,"project_id":4}},"extra_labels":{{"team":"dev"}}}}}}"#,
            now() + 600
        ),
    );
    let request = format!(
        "GET /api/v1/query?query=up HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    // v1: text.
    let mut stream = connect(&pp_url);
    stream
        .write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 8431\r\n")
        .unwrap();
    let (head, _) = exchange(&mut stream, &request).expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // v2: binary, IPv6.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    let mut addrs = [0u8; 36];
    addrs[..16].copy_from_slice(
        &"2001:db8::9"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    addrs[32..34].copy_from_slice(&5555u16.to_be_bytes());
    v2.extend_from_slice(&addrs);
    let mut stream = connect(&pp_url);
    stream.write_all(&v2).unwrap();
    let (head, _) = exchange(&mut stream, &request).expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // No header: the connection is closed unanswered.
    let mut stream = connect(&pp_url);
    assert!(exchange(&mut stream, HEALTH).is_none());
    assert!(gate.metric("tenantgate_proxy_protocol_refusals_total") >= 1.0);

    let xff = dir.path().join("xff.log");
    // nginx logs "-" for requests without the header (the harness's readiness probe).
    let forwarded = || -> Vec<String> {
        fs::read_to_string(&xff)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l != "-")
            .map(String::from)
            .collect()
    };
    eventually(Duration::from_secs(10), "nginx's log", || {
        forwarded().len() >= 2
    });
    let lines = forwarded();
    assert_eq!(lines[..2], ["203.0.113.7", "2001:db8::9"], "{lines:?}");

    // Every request is audited, the harness's /health probes too; the queries are ours.
    let queries = || -> Vec<serde_json::Value> {
        fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["path"] != "/health")
            .collect()
    };
    eventually(Duration::from_secs(10), "the audit log", || {
        queries().len() >= 2
    });
    let text = fs::read_to_string(&audit).unwrap();
    assert!(!text.contains(&token), "the token is never logged");
    let lines = queries();
    let first = &lines[0];
    assert_eq!(first["client"], "203.0.113.7:40000");
    assert_eq!(first["sub"], "alice");
    assert_eq!(first["client_id"], "grafana");
    assert_eq!(first["tenant"], "3:4");
    assert_eq!(first["labels"], serde_json::json!([["team", "dev"]]));
    assert_eq!(first["route"], "read");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/api/v1/query?query=up");
    assert_eq!(first["status"], 200);
    assert!(first["bytes_out"].as_u64().unwrap() > 10, "{first}");
    assert!(first["duration_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(lines[1]["client"], "[2001:db8::9]:5555");
}

#[test]
fn idle_connections_live_for_the_idle_timeout_and_slow_heads_are_cut() {
    let vm = Victoria::start();
    let gate = Gate::start(&[
        format!("-read.url={}", vm.url),
        "-http.headerReadTimeout=1s".into(),
        "-http.idleConnTimeout=3s".into(),
    ]);
    let mut stream = connect(&gate.url);
    assert!(exchange(&mut stream, HEALTH).is_some());
    // Idle for twice the header timeout: still open, as the idle timeout is longer.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        exchange(&mut stream, HEALTH).is_some(),
        "closed before the idle timeout"
    );
    // Idle past the idle timeout: closed by the gateway.
    std::thread::sleep(Duration::from_millis(4500));
    let mut buf = [0u8; 1];
    assert_eq!(
        stream.read(&mut buf).unwrap_or(0),
        0,
        "still open after the idle timeout"
    );
    assert!(gate.metric(r#"tenantgate_client_connections_closed_total{reason="idle"}"#) >= 1.0);
    // A head that starts but does not finish is cut after the header timeout.
    let mut slow = connect(&gate.url);
    slow.write_all(b"GET /health HTTP/1.1\r\nHost:").unwrap();
    let started = Instant::now();
    assert_eq!(slow.read(&mut buf).unwrap_or(0), 0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        gate.metric(r#"tenantgate_client_connections_closed_total{reason="slow_header"}"#) >= 1.0
    );
}

#[test]
fn connections_are_closed_after_conn_timeout_between_answers_and_keep_alive_can_be_off() {
    let vm = Victoria::start();
    let gate = Gate::start(&[
        format!("-read.url={}", vm.url),
        "-http.connTimeout=2s".into(),
    ]);
    let mut stream = connect(&gate.url);
    let started = Instant::now();
    let mut answered = 0;
    let mut last_head = String::new();
    while let Some((head, _)) = exchange(&mut stream, HEALTH) {
        answered += 1;
        last_head = head;
        assert!(started.elapsed() < Duration::from_secs(6), "never closed");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The client was told before the close, so no request of its met a closing socket.
    assert!(
        last_head.to_ascii_lowercase().contains("connection: close"),
        "the last answer must say the connection ends: {last_head}"
    );
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_millis(1700),
        "closed early: {lived:?}"
    );
    assert!(answered >= 8, "{answered}");
    assert!(gate.metric(r#"tenantgate_client_connections_closed_total{reason="lifetime"}"#) >= 1.0);

    let gate = Gate::start(&[
        format!("-read.url={}", vm.url),
        "-http.disableKeepAlive".into(),
    ]);
    let mut stream = connect(&gate.url);
    let (head, _) = exchange(&mut stream, HEALTH).unwrap();
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(exchange(&mut stream, HEALTH).is_none());
}

#[test]
fn an_empty_host_listens_on_ipv6_only_with_enable_tcp6() {
    let vm = Victoria::start();
    for tcp6 in [false, true] {
        let port = free_port();
        let dir = tempdir();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tenantgate"));
        cmd.arg(format!("-httpListenAddr=:{port}"))
            .arg(format!("-read.url={}", vm.url))
            .arg(format!("-enableTCP6={tcp6}"));
        let _gate = Proc::spawn_serving(
            "tenantgate",
            cmd,
            dir.path().join("log"),
            &format!("http://127.0.0.1:{port}"),
        );
        let v6 = http_client()
            .get(format!("http://[::1]:{port}/health"))
            .send()
            .map(|r| r.status().as_u16());
        if tcp6 {
            assert_eq!(v6.unwrap(), 200);
        } else {
            assert!(v6.is_err(), "IPv6 answered without -enableTCP6");
        }
    }
}
