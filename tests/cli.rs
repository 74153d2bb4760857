//! The command line as operators use it: vmgateway's flags, exit code 2 on bad ones, licence flags
//! ignored with one log line, environment flags, the no-key compatibility warning, and graceful shutdown.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tenantgate"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn bad_flags_stop_start_up_with_exit_code_2_naming_the_flag() {
    let dir = tempdir();
    let private = dir.path().join("private.pem");
    std::fs::write(&private, "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBnqhT8ud2d2tYhXq4l0rXF9vCmzyA2rKzS2JmMi9Mju\n-----END PRIVATE KEY-----\n").unwrap();
    let private_flag = format!("-auth.publicKeyFiles={}", private.display());
    for (args, names) in [
        (vec!["-no.such.flag"], "-no.such.flag"),
        (vec!["-read.url=localhost:8428"], "-read.url"),
        (
            vec![
                "-read.url=http://127.0.0.1:1",
                "-auth.publicKeyFiles=/nonexistent/key.pem",
            ],
            "-auth.publicKeyFiles",
        ),
        (
            vec!["-read.url=http://127.0.0.1:1", "-httpListenAddr=nowhere"],
            "-httpListenAddr",
        ),
        (
            vec![
                "-read.url=http://127.0.0.1:1",
                "-http.maxGracefulShutdownDuration=soon",
            ],
            "-http.maxGracefulShutdownDuration",
        ),
        (
            vec![
                "-read.url=http://127.0.0.1:1",
                "-enable.auth",
                private_flag.as_str(),
            ],
            "PRIVATE key",
        ),
        (vec!["-enable.auth"], "-read.url"),
    ] {
        let (code, text) = run(&args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.contains(names), "{args:?} should name {names}: {text}");
    }
}

#[test]
fn version_and_help() {
    let (code, text) = run(&["-version"]);
    assert_eq!(code, 0);
    assert!(text.starts_with("tenantgate-"), "{text}");
    let (code, text) = run(&["-help"]);
    assert_eq!(code, 0);
    for flag in [
        "-auth.publicKeyFiles",
        "-clusterMode",
        "-httpListenAddr",
        "-maxRequestBodySize",
    ] {
        assert!(text.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn licence_flags_are_ignored_and_no_keys_warns_loudly() {
    let vm = Victoria::start();
    let gate = Gate::start(&[
        "-licenseFile=/opt/vm-license.key".into(),
        "-license.forceOffline=true".into(),
        "-enable.auth=true".into(),
        format!("-write.url={}", vm.url),
        format!("-read.url={}", vm.url),
    ]);
    let log = gate.proc.log_text();
    assert!(
        log.contains("ignoring -licenseFile, -license.forceOffline"),
        "{log}"
    );
    assert!(log.contains("signatures are NOT checked"), "{log}");
    let health = body_text(
        http_client()
            .get(format!("{}/health", gate.url))
            .send()
            .unwrap(),
    );
    assert!(health.contains("NOT checked"), "{health}");
    // Compatibility: an unsigned-but-well-formed token is accepted, alg none is not.
    let payload = format!(
        r#"{{"exp":{},"vm_access":{{"extra_labels":{{"team":"dev"}}}}}}"#,
        now() + 60
    );
    let unsigned = format!(
        "{}.{}.c2ln",
        b64url(br#"{"alg":"RS256"}"#),
        b64url(payload.as_bytes())
    );
    let r = http_client()
        .get(format!("{}/api/v1/query?query=1", gate.url))
        .bearer_auth(&unsigned)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none"}"#),
        b64url(payload.as_bytes())
    );
    let r = http_client()
        .get(format!("{}/api/v1/query?query=1", gate.url))
        .bearer_auth(&none)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn flags_can_come_from_the_environment() {
    let vm = Victoria::start();
    let dir = tempdir();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantgate"));
    cmd.arg("-envflag.enable")
        .arg("-envflag.prefix=TG_")
        .env("TG_httpListenAddr", format!("127.0.0.1:{port}"))
        .env("TG_read_url", &vm.url);
    let url = format!("http://127.0.0.1:{port}");
    let _proc = Proc::spawn_serving("tenantgate", cmd, dir.path().join("log"), &url);
    let r = http_client()
        .get(format!("{url}/api/v1/query?query=1"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn sigterm_lets_an_in_flight_upload_reach_the_backend() {
    let vm = Victoria::start();
    let mut gate = Gate::start(&[
        format!("-write.url={}", vm.url),
        format!("-read.url={}", vm.url),
        "-http.maxGracefulShutdownDuration=10s".into(),
    ]);
    let body = import_lines(&[(r#"inflight_metric{job="x"}"#, 42.0)]);
    let (first, rest) = body.as_bytes().split_at(10);
    let mut stream = TcpStream::connect(gate.url.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "POST /api/v1/import/prometheus HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(first).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    gate.proc.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    // Shutting down: health says so to load balancers... but the upload in flight goes on.
    stream.write_all(rest).unwrap();
    let mut answer = [0u8; 64];
    let n = stream.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    drop(stream);
    assert_eq!(
        gate.proc.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        gate.proc.log_text()
    );
    let stored = vm.wait_series("inflight_metric", 1);
    assert_eq!(stored[0]["job"], "x");
    // New connections are refused once it has stopped.
    assert!(TcpStream::connect(gate.url.trim_start_matches("http://")).is_err());
}

#[test]
fn serves_https_with_its_certificate_and_logs_json() {
    let vm = Victoria::start();
    let dir = tempdir();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantgate"));
    cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-tls")
        .arg(format!("-tlsCertFile={}", cert_path.display()))
        .arg(format!("-tlsKeyFile={}", key_path.display()))
        .arg(format!("-read.url={}", vm.url))
        .arg("-loggerFormat=json");
    let proc = Proc::spawn("tenantgate", cmd, dir.path().join("log"));
    let ca = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let r = loop {
        match client.get(format!("{url}/api/v1/query?query=1")).send() {
            Ok(r) => break r,
            Err(e) if std::time::Instant::now() > deadline => panic!("{e}: {}", proc.log_text()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(r.status(), 200);
    // Plain http on the TLS port gets nothing useful.
    assert!(http_client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .map(|r| r.status() != 200)
        .unwrap_or(true));
    let log = proc.log_text();
    let first = log
        .lines()
        .find(|l| l.contains("listening"))
        .unwrap_or_else(|| panic!("{log}"));
    let v: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert!(v["msg"].as_str().unwrap().contains("https://"), "{v}");
    assert_eq!(v["level"], "info");
    assert!(v["ts"].as_str().unwrap().ends_with('Z'), "{v}");
}

#[test]
fn a_custom_token_header_without_prefix() {
    let vm = Victoria::start();
    let signer = Signer::rsa();
    let gate = Gate::start_secured(
        &signer,
        &[
            format!("-read.url={}", vm.url),
            "-auth.httpHeader=X-Auth-Token".into(),
            "-auth.httpHeaderAllowWithoutPrefix".into(),
        ],
    );
    let token = signer.token("{}");
    let url = format!("{}/api/v1/query?query=1", gate.url);
    let r = http_client()
        .get(&url)
        .header("x-auth-token", &token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http_client()
        .get(&url)
        .header("x-auth-token", format!("Bearer {token}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // The standard header is not where this gateway looks.
    let r = http_client().get(&url).bearer_auth(&token).send().unwrap();
    assert_eq!(r.status(), 401);
}
