//! vmgateway command lines start unchanged, and tenantgate behaves like a VictoriaMetrics component:
//! every flag of vmgateway's `-help` (tests/support/vmgateway-flags.txt) starts the real binary; `/flags`
//! hides secrets; `-httpAuth.*` and the auth keys guard what VictoriaMetrics guards; `-http.pathPrefix`;
//! the headers every answer carries; `process_*` metrics and vmgateway's metric names; `-pushmetrics`
//! into real VictoriaMetrics; SIGHUP re-reading key files; the logger flags.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// A file of the right kind for a `/path/to/file` flag.
fn file_for(flag: &str, dir: &Path, signer: &Signer) -> String {
    let name = flag.trim_start_matches('-');
    let path = if name.ends_with("CAFile") {
        dir.join("ca.pem")
    } else if name.ends_with("CertFile") {
        dir.join("server.pem")
    } else if name.ends_with("KeyFile") {
        dir.join("server.key")
    } else if name == "auth.publicKeyFiles" {
        signer.write_public_pem(dir, "idp.pem")
    } else {
        let path = dir.join("plain.txt");
        fs::write(&path, "secret\n").unwrap();
        path
    };
    path.display().to_string()
}

/// The flags a flag needs beside it, as in vmgateway (a client certificate needs its key).
fn partners(name: &str, dir: &Path) -> Vec<String> {
    let d = dir.display();
    match name {
        "read.tlsCertFile" => vec![format!("-read.tlsKeyFile={d}/server.key")],
        "read.tlsKeyFile" => vec![format!("-read.tlsCertFile={d}/server.pem")],
        "write.tlsCertFile" => vec![format!("-write.tlsKeyFile={d}/server.key")],
        "write.tlsKeyFile" => vec![format!("-write.tlsCertFile={d}/server.pem")],
        "datasource.tlsCertFile" => vec![format!("-datasource.tlsKeyFile={d}/server.key")],
        "datasource.tlsKeyFile" => vec![format!("-datasource.tlsCertFile={d}/server.pem")],
        _ => Vec::new(),
    }
}

#[test]
fn every_flag_of_vmgateways_help_starts_tenantgate() {
    let vm = Victoria::start();
    let dir = tempdir();
    test_ca(dir.path());
    let signer = Signer::rsa();
    let list = fs::read_to_string(repo_root().join("tests/support/vmgateway-flags.txt")).unwrap();
    let flags: Vec<&str> = list.lines().filter(|l| l.starts_with('-')).collect();
    assert!(flags.len() > 100, "{}", flags.len());
    // Start them a few at a time: each is a real process that must come up and answer /health.
    for batch in flags.chunks(8) {
        let mut running = Vec::new();
        for line in batch {
            let (name, value) = line.trim_start_matches('-').split_once('=').unwrap();
            let port = free_port();
            let value = match (name, value) {
                (_, "/path/to/file") => file_for(name, dir.path(), &signer),
                ("httpListenAddr", _) => format!("127.0.0.1:{port}"),
                ("auth.publicKeys", _) => signer.public_pem(),
                _ => value.to_string(),
            };
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantgate"));
            if name != "httpListenAddr" {
                cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"));
            }
            cmd.args(read_write(&vm.url))
                .args(partners(name, dir.path()))
                .arg(format!("-{name}={value}"));
            let log = dir.path().join(format!("{name}.log"));
            let proc = Proc::spawn("tenantgate", cmd, log);
            running.push((line.to_string(), name.to_string(), port, proc));
        }
        for (line, name, port, proc) in &running {
            let base = match name.as_str() {
                "http.pathPrefix" => format!("http://127.0.0.1:{port}/gw"),
                _ => format!("http://127.0.0.1:{port}"),
            };
            let want = 200;
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let status = http_client()
                    .get(format!("{base}/health"))
                    .send()
                    .map(|r| r.status().as_u16());
                if status.as_ref().is_ok_and(|s| *s == want) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{line} did not start ({status:?}): {}",
                    proc.log_text()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn flags_are_listed_with_secrets_hidden_behind_their_key() {
    let vm = Victoria::start();
    let gate = Gate::start(&[
        format!("-read.url={}", vm.url),
        "-flagsAuthKey=fkey".into(),
        "-httpAuth.username=ops".into(),
        "-httpAuth.password=hunter2".into(),
        "-datasource.bearerToken=t0ken".into(),
        "-pushmetrics.url=http://u:p@127.0.0.1:1/api/v1/import/prometheus".into(),
        "-loggerLevel=WARN".into(),
    ]);
    let r = http_client()
        .get(format!("{}/flags", gate.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"],
        "Expected to receive non-empty authKey when -flagsAuthKey is set"
    );
    let r = http_client()
        .get(format!("{}/flags?authKey=wrong", gate.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let page = body_text(
        http_client()
            .get(format!("{}/flags?authKey=fkey", gate.url))
            .send()
            .unwrap(),
    );
    for hidden in ["fkey", "hunter2", "t0ken", "u:p@"] {
        assert!(!page.contains(hidden), "{hidden} shown in\n{page}");
    }
    for line in [
        "-httpAuth.password=\"secret\"",
        "-flagsAuthKey=\"secret\"",
        "-datasource.bearerToken=\"secret\"",
        "-pushmetrics.url=\"secret\"",
        "-httpAuth.username=\"ops\"",
        "-loggerLevel=\"WARN\"",
    ] {
        assert!(page.lines().any(|l| l == line), "{line} missing in\n{page}");
    }
    let mut sorted: Vec<&str> = page.lines().collect();
    sorted.sort();
    assert_eq!(sorted, page.lines().collect::<Vec<_>>(), "sorted by name");
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn basic_auth_guards_every_path_but_the_probes_and_auth_keys_override_it() {
    let vm = Victoria::start();
    let signer = Signer::rsa();
    let secrets = tempdir();
    let password = secrets.path().join("password");
    fs::write(&password, "hunter2\n").unwrap();
    // With Basic auth in Authorization, the JWT moves to another header: vmgateway's reason for
    // -auth.httpHeader.
    let gate = Gate::start_secured(
        &signer,
        &[
            format!("-read.url={}", vm.url),
            "-auth.httpHeader=X-Token".into(),
            "-httpAuth.username=ops".into(),
            format!("-httpAuth.password=file://{}", password.display()),
            "-metricsAuthKey=mkey".into(),
        ],
    );
    let token = signer.token("{}");
    let query = format!("{}/api/v1/query?query=1", gate.url);
    let r = http_client()
        .get(&query)
        .header("x-token", format!("Bearer {token}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"VictoriaMetrics\""
    );
    let r = http_client()
        .get(&query)
        .header("authorization", basic("ops", "wrong"))
        .header("x-token", format!("Bearer {token}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http_client()
        .get(&query)
        .header("authorization", basic("ops", "hunter2"))
        .header("x-token", format!("Bearer {token}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", body_text(r));
    // Basic auth passes, the token is still required.
    let r = http_client()
        .get(&query)
        .header("authorization", basic("ops", "hunter2"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    // Probes are open; /metrics takes its key instead of Basic auth; /flags (no key) takes Basic auth.
    for path in ["/health", "/-/healthy", "/-/ready", "/robots.txt"] {
        let r = http_client()
            .get(format!("{}{path}", gate.url))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = http_client()
        .get(format!("{}/ping", gate.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http_client()
        .get(format!("{}/metrics", gate.url))
        .header("authorization", basic("ops", "hunter2"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "the key, not Basic auth, guards /metrics");
    let r = http_client()
        .get(format!("{}/metrics?authKey=mkey", gate.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http_client()
        .get(format!("{}/flags", gate.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http_client()
        .get(format!("{}/flags", gate.url))
        .header("authorization", basic("ops", "hunter2"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn everything_is_served_under_the_path_prefix_with_victoriametrics_headers() {
    let vm = Victoria::start();
    vm_import(&vm, &import_lines(&[(r#"prefixed{job="x"}"#, 1.0)]));
    let dir = tempdir();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantgate"));
    cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-read.url={}", vm.url))
        .arg("-http.pathPrefix=gw/")
        .arg("-http.header.hsts=max-age=31536000; includeSubDomains")
        .arg("-http.header.csp=default-src 'self'")
        .arg("-http.header.frameOptions=DENY");
    let url = format!("http://127.0.0.1:{port}");
    let _gate = Proc::spawn_serving(
        "tenantgate",
        cmd,
        dir.path().join("log"),
        &format!("{url}/gw"),
    );
    let r = http_client().get(format!("{url}/health")).send().unwrap();
    assert_eq!(r.status(), 400);
    assert!(body_text(r).contains("missing -http.pathPrefix"));
    let r = http_client().get(format!("{url}/gw")).send().unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/gw/");
    let r = http_client()
        .get(format!("{url}/gw/api/v1/query?query=prefixed"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(
        h["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(h["content-security-policy"], "default-src 'self'");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(!h["x-server-hostname"].is_empty());
    assert_eq!(
        h["access-control-allow-origin"], "*",
        "VictoriaMetrics' own CORS header"
    );
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 1, "{v}");
    for path in ["/gw/metrics", "/gw/flags"] {
        let r = http_client().get(format!("{url}{path}")).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // A browser's CORS pre-flight is answered before any authentication.
    let r = http_client()
        .request(reqwest::Method::OPTIONS, format!("{url}/gw/api/v1/query"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-methods"], "*");
}

fn vm_import(vm: &Victoria, body: &str) {
    let r = http_client()
        .post(format!("{}/api/v1/import/prometheus", vm.url))
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    vm.flush();
}

#[test]
fn cors_and_the_hostname_header_can_be_turned_off() {
    let vm = Victoria::start();
    let gate = Gate::start(&[
        format!("-read.url={}", vm.url),
        "-http.disableCORS".into(),
        "-http.header.disableServerHostname".into(),
    ]);
    let r = http_client()
        .get(format!("{}/api/v1/query?query=1", gate.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    assert!(!r.headers().contains_key("x-server-hostname"));
    let r = http_client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/query", gate.url),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}

#[test]
fn process_metrics_and_vmgateways_names_are_on_metrics_and_pushed_into_victoriametrics() {
    let backend = Victoria::start();
    let store = Victoria::start();
    let signer = Signer::rsa();
    let gate = Gate::start_secured(
        &signer,
        &[
            format!("-read.url={}", backend.url),
            format!("-pushmetrics.url={}/api/v1/import/prometheus", store.url),
            "-pushmetrics.interval=1s".into(),
            "-pushmetrics.extraLabel=instance=\"gw-a\"".into(),
            "-pushmetrics.extraLabel=job=tenantgate".into(),
            "-pushmetrics.header=X-Pushed-By: test".into(),
        ],
    );
    // A refused token, so the auth counters move.
    let r = http_client()
        .get(format!("{}/api/v1/query?query=1", gate.url))
        .bearer_auth("garbage")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let text = metrics_text(&gate.url);
    assert!(
        !text.contains("# TYPE"),
        "no metadata without -metrics.exposeMetadata"
    );
    for name in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name}"
        );
    }
    assert!(gate.metric("vmgateway_auth_rejects_total") >= 1.0);
    // Pushed every second with the extra labels: the series arrive in real VictoriaMetrics.
    let series = store
        .wait_some_series(r#"process_resident_memory_bytes{instance="gw-a",job="tenantgate"}"#);
    assert_eq!(series.len(), 1, "{series:?}");
    store.wait_some_series(r#"vmgateway_auth_rejects_total{instance="gw-a"}"#);
    let pushes = text_metric(&metrics_text(&gate.url), "metrics_push_total");
    assert!(pushes >= 1.0, "{pushes}");
    assert_eq!(
        text_metric(&metrics_text(&gate.url), "metrics_push_errors_total"),
        0.0
    );
}

/// The sum of a family's series in exposition text.
fn text_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn sighup_re_reads_key_files_and_a_broken_file_keeps_the_keys() {
    let vm = Victoria::start();
    let (old, new) = (Signer::rsa(), Signer::ec());
    let gate = Gate::start_secured(&old, &[format!("-read.url={}", vm.url)]);
    let key_file = gate.dir.path().join("idp.pem");
    let query = |signer: &Signer| {
        http_client()
            .get(format!("{}/api/v1/query?query=1", gate.url))
            .bearer_auth(signer.token("{}"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let old_token = old.token("{}");
    let with = |token: &str| {
        http_client()
            .get(format!("{}/api/v1/query?query=1", gate.url))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(with(&old_token), 200, "cached from now on");
    assert_eq!(query(&new), 401);
    // The identity provider's new key replaces the old one in the file; SIGHUP.
    new.write_public_pem(gate.dir.path(), "idp.pem");
    gate.proc.signal("HUP");
    eventually(Duration::from_secs(10), "the new key", || {
        query(&new) == 200
    });
    assert_eq!(with(&old_token), 401, "the cached grant died with its key");
    assert!(gate.metric(r#"tenantgate_reloads_total{what="keys",result="success"}"#) >= 1.0);
    // A file that no longer parses keeps the keys in force.
    fs::write(
        &key_file,
        "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    gate.proc.signal("HUP");
    eventually(Duration::from_secs(10), "the failed reload", || {
        gate.metric(r#"tenantgate_reloads_total{what="keys",result="failure"}"#) >= 1.0
    });
    assert_eq!(query(&new), 200);
    assert!(gate
        .proc
        .log_text()
        .contains("reload failed, keeping what was in force"));
}

#[test]
fn logger_flags_shape_the_lines_as_victoriametrics_does() {
    let vm = Victoria::start();
    let dir = tempdir();
    let port = free_port();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantgate"));
    cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-read.url={}", vm.url))
        .arg("-loggerOutput=stdout")
        .arg("-loggerFormat=json")
        .arg("-loggerJSONFields=ts:timestamp,msg:message")
        .arg("-loggerTimezone=Etc/GMT-3")
        .arg("-licenseFile=/opt/vm-license.key")
        .arg("-memory.allowedPercent=60")
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .stdin(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}/health");
    let started = std::time::Instant::now();
    while http_client().get(&url).send().is_err() {
        assert!(started.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let stdout = fs::read_to_string(&out).unwrap();
    assert!(
        fs::read_to_string(&err).unwrap().is_empty(),
        "logs go to stdout"
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["timestamp"].as_str().unwrap().ends_with("+0300")));
    assert!(lines
        .iter()
        .all(|l| l.get("ts").is_none() && l["caller"].is_string()));
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("ignoring -licenseFile")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("ignoring -memory.allowedPercent")),
        "{messages:?}"
    );
    // Timestamps can be left out: a line starts with its level.
    let gate = Gate::start(&[
        format!("-read.url={}", vm.url),
        "-loggerDisableTimestamps".into(),
    ]);
    let log = gate.proc.log_text();
    let first = log.lines().next().unwrap_or("");
    assert!(
        first.starts_with("warn\ttenantgate/") || first.starts_with("info\ttenantgate/"),
        "{first}"
    );
}

#[test]
fn automatic_certificates_are_refused_rather_than_pretended() {
    let output = Command::new(env!("CARGO_BIN_EXE_tenantgate"))
        .args([
            "-read.url=http://127.0.0.1:1",
            "-tlsAutocertHosts=gw.example.com",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("-tlsAutocertHosts is not supported") && text.contains("ACME"),
        "{text}"
    );
}
