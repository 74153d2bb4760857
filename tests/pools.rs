//! Several backends per direction (issue 16): two nginx replicas in front of one real VictoriaMetrics stand
//! for two vminserts and two vmselects; a real vmagent writes through tenantgate and a reader queries at a
//! steady rate on a keep-alive connection. One replica is killed with SIGKILL mid-run: no read fails, no
//! sample is lost, and the replica takes traffic again once it is back. With `first_available` the spare
//! stays idle until it is needed. Backends that hang, answer 503 or break mid-answer are skipped, and the
//! client sees the right answer or a status senders retry, never a wait past `-upstream.timeout`. With
//! `-discoverBackendIPs`, a real DNS server (dnsmasq) whose records change while tenantgate runs decides
//! where traffic goes, by A and by SRV records.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// An nginx replica of `backend` listening on 127.0.0.1:`port`.
fn replica(dir: &Path, port: u16, backend: &str) -> Proc {
    replica_at(dir, "127.0.0.1", port, backend)
}

/// An nginx replica of `backend` listening on `ip`:`port` (any 127.x address is this machine's).
fn replica_at(dir: &Path, ip: &str, port: u16, backend: &str) -> Proc {
    let proc = nginx(
        dir,
        &format!(
            "server {{\n listen {ip}:{port};\n client_max_body_size 0;\n location / {{ proxy_pass {backend}; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n}}\n"
        ),
    );
    wait_http(
        &format!("http://{ip}:{port}/health"),
        200,
        &proc,
        Duration::from_secs(20),
    );
    proc
}

/// SIGKILL to a process and its children (nginx's worker): the children are found first and killed
/// after the master, which would otherwise start a new worker for a killed one.
fn kill_tree(proc: &Proc) {
    let pid = proc.pid();
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap_or(0) + 2..]
            .split(' ')
            .collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            children.push(entry.file_name().to_string_lossy().to_string());
        }
    }
    proc.signal("KILL");
    for child in children {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &child])
            .status();
    }
}

/// Reads `/api/v1/query` every 20 ms on one keep-alive client until stopped; records each outcome.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(bool, Duration)>>>,
}

impl Reader {
    fn start(url: &str, token: &str) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, url, token) = (stop.clone(), url.to_string(), token.to_string());
        let thread = std::thread::spawn(move || {
            let client = http_client();
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) && seen.len() < 5_000 {
                let started = Instant::now();
                let ok = client
                    .get(format!("{url}/api/v1/query?query=1"))
                    .bearer_auth(&token)
                    .send()
                    .map(|r| r.status() == 200)
                    .unwrap_or(false);
                seen.push((ok, started.elapsed()));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        Reader {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(bool, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn requests_to(gate: &Gate, direction: &str, port: u16) -> f64 {
    gate.metric(&format!(
        "tenantgate_backend_requests_total{{direction=\"{direction}\",backend=\"127.0.0.1:{port}\"}}"
    ))
}

fn up(gate: &Gate, direction: &str, port: u16) -> f64 {
    gate.metric(&format!(
        "tenantgate_backend_up{{direction=\"{direction}\",backend=\"127.0.0.1:{port}\"}}"
    ))
}

/// Every timestamp of vmagent's own `up` series in `vm`.
fn self_scrapes(vm: &Victoria) -> Vec<i64> {
    let mut ts: Vec<i64> = vm
        .samples(r#"up{job="self"}"#)
        .into_iter()
        .flat_map(|(_, timestamps)| timestamps)
        .collect();
    ts.sort();
    ts
}

struct Scene {
    vm: Victoria,
    gate: Gate,
    token: String,
    ports: [u16; 2],
    replicas: [Option<Proc>; 2],
    dirs: [tempfile::TempDir; 2],
}

fn scene(policy: &str) -> Scene {
    let vm = Victoria::start();
    let dirs = [tempdir(), tempdir()];
    let ports = [free_port(), free_port()];
    let replicas = [
        Some(replica(dirs[0].path(), ports[0], &vm.url)),
        Some(replica(dirs[1].path(), ports[1], &vm.url)),
    ];
    let urls = format!(
        "http://127.0.0.1:{},http://127.0.0.1:{}",
        ports[0], ports[1]
    );
    let signer = Signer::rsa();
    let gate = Gate::start_secured(
        &signer,
        &[
            format!("-read.url={urls}"),
            format!("-write.url={urls}"),
            format!("-loadBalancingPolicy={policy}"),
            "-failTimeout=1s".into(),
            "-retryStatusCodes=502,503".into(),
        ],
    );
    Scene {
        vm,
        gate,
        token: signer.token(r#"{"tenant_id":{"account_id":0,"project_id":0}}"#),
        ports,
        replicas,
        dirs,
    }
}

#[test]
fn a_killed_backend_costs_no_read_and_no_sample_and_takes_traffic_again_once_back() {
    let mut s = scene("least_loaded");
    let agent = Vmagent::start(&format!("{}/api/v1/write", s.gate.url), &s.token);
    let reader = Reader::start(&s.gate.url, &s.token);
    std::thread::sleep(Duration::from_secs(4));
    // Both replicas get a fair share of reads and writes.
    for direction in ["read", "write"] {
        let (a, b) = (
            requests_to(&s.gate, direction, s.ports[0]),
            requests_to(&s.gate, direction, s.ports[1]),
        );
        assert!(
            a > 0.0 && b > 0.0 && (a - b).abs() <= 0.3 * (a + b),
            "{direction}: {a} and {b} requests"
        );
    }
    let killed_at = Instant::now();
    kill_tree(s.replicas[0].as_ref().unwrap());
    s.replicas[0] = None;
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(up(&s.gate, "read", s.ports[0]), 0.0);
    let before = requests_to(&s.gate, "read", s.ports[0]);
    // Back on the same port: within -failTimeout and a probe it takes requests again.
    s.replicas[0] = Some(replica(s.dirs[0].path(), s.ports[0], &s.vm.url));
    let restarted = Instant::now();
    eventually(
        Duration::from_secs(5),
        "the restarted replica is up",
        || up(&s.gate, "read", s.ports[0]) == 1.0 && up(&s.gate, "write", s.ports[0]) == 1.0,
    );
    eprintln!("back after {:?}", restarted.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    assert!(requests_to(&s.gate, "read", s.ports[0]) > before + 5.0);
    let reads = reader.finish();
    let failed = reads.iter().filter(|(ok, _)| !ok).count();
    let mut latencies: Vec<Duration> = reads.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "{} reads, {failed} failed, p99 {p99:?}, max {:?}, kill {:?} ago",
        reads.len(),
        latencies.last().unwrap(),
        killed_at.elapsed()
    );
    assert_eq!(failed, 0, "reads failed while one backend was healthy");
    // The reads that met the killed replica first went to the other one: retried, not failed.
    assert!(
        s.gate
            .metric(r#"tenantgate_backend_retries_total{direction="read"}"#)
            > 0.0,
        "no read was retried after the kill"
    );

    // vmagent lost nothing: its queue drains, nothing dropped, no error of its own, and every scrape
    // from the first to the last is stored (a 1 s interval: no gap over 2 s).
    eventually(Duration::from_secs(30), "vmagent's queue drains", || {
        agent.metric_sum("vmagent_remotewrite_pending_data_bytes") == 0.0
    });
    assert_eq!(
        agent.metric_sum("vmagent_remotewrite_packets_dropped_total"),
        0.0
    );
    let text = metrics_text(&agent.url);
    let not_ok: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("vmagent_remotewrite_requests_total{"))
        .filter(|l| !l.contains("status_code=\"2"))
        .filter(|l| !l.ends_with(" 0"))
        .collect();
    assert!(not_ok.is_empty(), "vmagent saw failures: {not_ok:?}");
    std::thread::sleep(Duration::from_secs(2));
    let ts = self_scrapes(&s.vm);
    assert!(ts.len() >= 12, "{} scrapes stored", ts.len());
    let gaps: Vec<i64> = ts
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g > 2_000)
        .collect();
    assert!(gaps.is_empty(), "scrapes missing: gaps of {gaps:?} ms");
}

#[test]
fn first_available_keeps_the_spare_idle_until_it_is_needed() {
    let mut s = scene("first_available");
    let reader = Reader::start(&s.gate.url, &s.token);
    std::thread::sleep(Duration::from_secs(2));
    assert!(requests_to(&s.gate, "read", s.ports[0]) > 20.0);
    assert_eq!(
        requests_to(&s.gate, "read", s.ports[1]),
        0.0,
        "the spare was used"
    );
    kill_tree(s.replicas[0].as_ref().unwrap());
    s.replicas[0] = None;
    std::thread::sleep(Duration::from_secs(2));
    let reads = reader.finish();
    assert!(
        requests_to(&s.gate, "read", s.ports[1]) > 20.0,
        "the spare took over"
    );
    let failed = reads.iter().filter(|(ok, _)| !ok).count();
    assert_eq!(failed, 0, "of {} reads", reads.len());
}

/// A backend that accepts connections and never answers.
fn hanging() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let thread = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => held.lock().unwrap().push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (url, thread)
}

/// A backend that reads a request and breaks off in the middle of its answer's head.
fn breaking() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let thread = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .unwrap();
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf);
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (url, thread)
}

#[test]
fn hanging_503_and_breaking_backends_are_skipped_within_the_timeout() {
    let vm = Victoria::start();
    let dir = tempdir();
    let port_503 = free_port();
    // A vmselect whose vmstorage is down: /health 200, every query 503.
    let _failing = nginx(
        dir.path(),
        &format!(
            "server {{\n listen 127.0.0.1:{port_503};\n location = /health {{ return 200 'OK'; }}\n location / {{ return 503 'storage unavailable'; }}\n}}\n"
        ),
    );
    let (hang, _h) = hanging();
    let (broken, _b) = breaking();
    let signer = Signer::rsa();
    let token = signer.token(r#"{"tenant_id":{"account_id":0,"project_id":0}}"#);
    let urls = format!("{hang},http://127.0.0.1:{port_503},{broken},{}", vm.url);
    let gate = Gate::start_secured(
        &signer,
        &[
            format!("-read.url={urls}"),
            format!("-write.url={urls}"),
            "-loadBalancingPolicy=first_available".into(),
            "-retryStatusCodes=503".into(),
            "-upstream.timeout=2s".into(),
            "-failTimeout=10s".into(),
        ],
    );
    let client = http_client();
    let mut statuses = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        let read = client
            .get(format!("{}/api/v1/query?query=1", gate.url))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .status()
            .as_u16();
        let write = client
            .post(format!("{}/api/v1/import/prometheus", gate.url))
            .bearer_auth(&token)
            .body(import_lines(&[(&format!("pool_write{{i=\"{i}\"}}"), 1.0)]))
            .send()
            .unwrap()
            .status()
            .as_u16();
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(2 * 2500),
            "request {i} took {took:?}"
        );
        statuses.push((read, write));
    }
    // Only the first request of each direction can meet the hanging backend (then it is skipped): it
    // gets 504, which senders retry; everything else is answered by the healthy backend.
    for (i, (read, write)) in statuses.iter().enumerate() {
        assert!(*read == 200 || (i == 0 && *read == 504), "read {i}: {read}");
        assert!(
            *write == 204 || (i == 0 && *write == 504),
            "write {i}: {write}"
        );
    }
    let stored = if statuses[0].1 == 204 { 20 } else { 19 };
    vm.wait_series("pool_write", stored);
    for backend in [
        hang.trim_start_matches("http://").to_string(),
        format!("127.0.0.1:{port_503}"),
        broken.trim_start_matches("http://").to_string(),
    ] {
        assert_eq!(
            gate.metric(&format!(
                "tenantgate_backend_up{{direction=\"read\",backend=\"{backend}\"}}"
            )),
            0.0,
            "{backend} is skipped"
        );
    }
    let health = body_text(client.get(format!("{}/health", gate.url)).send().unwrap());
    assert!(health.contains("read backends: 1 of 4 up"), "{health}");
    // A write large enough to arrive in many frames is held whole (one buffer of its declared size)
    // and stored complete.
    let big: Vec<(String, f64)> = (0..5000)
        .map(|i| (format!("pool_big{{i=\"{i}\"}}"), 1.0))
        .collect();
    let big: Vec<(&str, f64)> = big.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    let body = import_lines(&big);
    assert!(body.len() > 100_000);
    let status = client
        .post(format!("{}/api/v1/import/prometheus", gate.url))
        .bearer_auth(&token)
        .body(body)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 204);
    vm.wait_series("pool_big", 5000);
    // A client that sends its (streamed, chunked) write too slowly runs out the time: it gets a 504
    // it can retry, and the backend it was streaming to stays up.
    let mut slow = TcpStream::connect(gate.url.trim_start_matches("http://")).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = format!(
        "POST /api/v1/import/prometheus HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    slow.write_all(head.as_bytes()).unwrap();
    let line = "pool_slow{i=\"1\"} 1\n";
    slow.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match slow.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    let health = body_text(client.get(format!("{}/health", gate.url)).send().unwrap());
    assert!(
        health.contains("write backends: 1 of 4 up"),
        "a slow client does not take its backend down: {health}"
    );
}

/// A real DNS server (dnsmasq from Debian) on 127.0.0.1:`port`: A records from `hosts` (re-read on
/// SIGHUP, TTL 0), SRV records from `srv` (`--srv-host` values).
fn dnsmasq(dir: &Path, port: u16, hosts: &Path, srv: &[&str]) -> Proc {
    let mut cmd = std::process::Command::new(deps().get("TG_DNSMASQ"));
    // Its libraries, when scripts/deps had to unpack them.
    if let Some(libs) = deps().vars.get("TG_LD_LIBRARY_PATH") {
        cmd.env("LD_LIBRARY_PATH", libs);
    }
    cmd.arg("--keep-in-foreground")
        .arg("--conf-file=/dev/null")
        .arg(format!("--port={port}"))
        .arg("--listen-address=127.0.0.1")
        .arg("--bind-interfaces")
        .arg("--no-resolv")
        .arg("--no-hosts")
        .arg(format!("--addn-hosts={}", hosts.display()))
        .arg("--pid-file=")
        .arg("--log-facility=-")
        .arg("--log-queries");
    // As root it would switch to a user that cannot read the test's directory.
    cmd.arg("--user=root");
    for record in srv {
        cmd.arg(format!("--srv-host={record}"));
    }
    let proc = Proc::spawn("dnsmasq", cmd, dir.join("dnsmasq.log"));
    eventually(Duration::from_secs(10), "dnsmasq answers", || {
        proc.log_text().contains("read ") && proc.log_text().contains("names")
    });
    proc
}

#[test]
fn discovered_backends_follow_the_dns_records() {
    let vm = Victoria::start();
    let port = free_port();
    let (dir_a, dir_b, dir_dns) = (tempdir(), tempdir(), tempdir());
    let _a = replica_at(dir_a.path(), "127.0.0.1", port, &vm.url);
    let _b = replica_at(dir_b.path(), "127.0.0.2", port, &vm.url);
    let hosts = dir_dns.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 vm.test\n").unwrap();
    let dns_port = free_port();
    let mut dns = dnsmasq(
        dir_dns.path(),
        dns_port,
        &hosts,
        &[&format!("_vm._tcp.test,vm.test,{port}")],
    );
    let signer = Signer::rsa();
    let token = signer.token(r#"{"tenant_id":{"account_id":0,"project_id":0}}"#);
    let discovery = [
        "-discoverBackendIPs".to_string(),
        "-discoverBackendIPsInterval=300ms".into(),
        format!("-dns.server=127.0.0.1:{dns_port}"),
        "-failTimeout=1s".into(),
    ];
    let mut by_name = discovery.to_vec();
    by_name.push(format!("-read.url=http://vm.test:{port}"));
    let gate = Gate::start_secured(&signer, &by_name);
    // SRV: the target's port, and the target's own name resolved through the same server.
    let mut by_srv = discovery.to_vec();
    by_srv.push("-read.url=http://srv+_vm._tcp.test".into());
    let srv_gate = Gate::start_secured(&signer, &by_srv);
    let a = format!("127.0.0.1:{port}");
    let b = format!("127.0.0.2:{port}");
    let requests = |gate: &Gate, backend: &str| {
        gate.metric(&format!(
            "tenantgate_backend_requests_total{{direction=\"read\",backend=\"{backend}\"}}"
        ))
    };
    let readers = [
        Reader::start(&gate.url, &token),
        Reader::start(&srv_gate.url, &token),
    ];
    std::thread::sleep(Duration::from_secs(1));
    for g in [&gate, &srv_gate] {
        assert!(
            requests(g, &a) > 10.0,
            "the one address gets the requests:\n{}\n{}",
            metrics_text(&g.url)
                .lines()
                .filter(|l| l.contains("backend"))
                .collect::<Vec<_>>()
                .join("\n"),
            g.proc.log_text()
        );
        assert_eq!(requests(g, &b), 0.0);
    }
    // A second address appears: it gets requests too.
    std::fs::write(&hosts, "127.0.0.1 vm.test\n127.0.0.2 vm.test\n").unwrap();
    dns.signal("HUP");
    eventually(
        Duration::from_secs(5),
        "the new address gets requests",
        || requests(&gate, &b) > 10.0 && requests(&srv_gate, &b) > 10.0,
    );
    // The first one goes away: after its requests in flight, it gets none.
    std::fs::write(&hosts, "127.0.0.2 vm.test\n").unwrap();
    dns.signal("HUP");
    eventually(
        Duration::from_secs(5),
        "the removed address is dropped",
        || !metrics_text(&gate.url).contains(&a) && !metrics_text(&srv_gate.url).contains(&a),
    );
    let (left_a, left_srv_a) = (requests(&gate, &a), requests(&srv_gate, &a));
    assert_eq!(
        (left_a, left_srv_a),
        (0.0, 0.0),
        "a removed backend's series are gone"
    );
    let before = requests(&gate, &b);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        requests(&gate, &b) > before + 10.0,
        "all requests go to the address left"
    );
    // The DNS server stops: lookups fail, the last good set stays.
    assert!(dns.stop(Duration::from_secs(5)).is_some());
    let before = requests(&gate, &b);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        requests(&gate, &b) > before + 10.0,
        "the last good set keeps serving"
    );
    assert!(gate.proc.log_text().contains("keeping the last good set"));
    for reader in readers {
        let reads = reader.finish();
        let failed = reads.iter().filter(|(ok, _)| !ok).count();
        assert_eq!(failed, 0, "of {} reads", reads.len());
    }
}
