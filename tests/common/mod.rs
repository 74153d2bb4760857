//! Shared harness for the black-box tests: real processes (tenantgate, VictoriaMetrics, nginx, the OIDC
//! provider) on 127.0.0.1, each owned by a [`Proc`] that kills and reaps it when dropped, even when a test
//! panics. Dependencies come from `scripts/deps`, which the harness runs itself (about 10 ms when
//! everything is installed), so `cargo test` works on a fresh machine and never skips for lack of them.
#![allow(dead_code)]

pub mod agents;
pub mod login;

// Not every test binary uses every part of the harness.
#[allow(unused_imports)]
pub use agents::{vmalert, Prometheus, RemoteWrite};
#[allow(unused_imports)]
pub use login::{jwt_payload, secret_file, UserTokens};

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

pub mod idp;

/// Paths of the external programs, from `.deps/env.sh`.
pub struct Deps {
    pub vars: HashMap<String, String>,
}

impl Deps {
    pub fn get(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from .deps/env.sh; scripts/deps is broken"))
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Installs (once per test binary) and returns the external programs.
pub fn deps() -> &'static Deps {
    static DEPS: OnceLock<Deps> = OnceLock::new();
    DEPS.get_or_init(|| {
        let root = repo_root();
        let status = Command::new("bash")
            .arg(root.join("scripts/deps"))
            .current_dir(&root)
            .status()
            .expect("cannot run scripts/deps");
        assert!(
            status.success(),
            "scripts/deps failed: the tests need its programs"
        );
        let env = fs::read_to_string(root.join(".deps/env.sh")).expect(".deps/env.sh");
        let vars = env
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.starts_with("TG_"))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        Deps { vars }
    })
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh temporary directory, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tenantgate-test-")
        .tempdir()
        .unwrap()
}

/// A child process that is stopped (SIGTERM, then SIGKILL after 5 s) and reaped when dropped.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal by PID (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// SIGTERM, then waits up to `limit` for the exit; returns the exit code.
    pub fn stop(&mut self, limit: Duration) -> Option<i32> {
        self.signal("TERM");
        self.wait_exit(limit)
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    /// SIGTERM first, so nginx tells its workers to go (a SIGKILLed master orphans them), then SIGKILL
    /// after a bounded wait; always reaped.
    fn drop(&mut self) {
        if self.child.is_some() && self.stop(Duration::from_secs(5)).is_none() {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The Prometheus text exposition at `base_url/metrics`.
pub fn metrics_text(base_url: &str) -> String {
    http_client()
        .get(format!("{base_url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

impl Proc {
    /// Spawns a server and waits (bounded) until `base_url/health` answers 200.
    pub fn spawn_serving(name: &str, cmd: Command, log: PathBuf, base_url: &str) -> Proc {
        let proc = Proc::spawn(name, cmd, log);
        wait_http(
            &format!("{base_url}/health"),
            200,
            &proc,
            Duration::from_secs(20),
        );
        proc
    }
}

/// Polls `url` until it answers `want` (bounded), or panics with the process log.
pub fn wait_http(url: &str, want: u16, proc: &Proc, limit: Duration) {
    let client = http_client();
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(r) = client.get(url).send() {
            if r.status().as_u16() == want {
                return;
            }
        }
        if Instant::now() > deadline {
            panic!(
                "{} did not answer {want} at {url} within {limit:?}; log:\n{}",
                proc.name,
                proc.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A real VictoriaMetrics single-node on a free port.
pub struct Victoria {
    pub proc: Proc,
    pub port: u16,
    pub url: String,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Victoria {
    pub fn start() -> Victoria {
        Victoria::start_with(&[])
    }

    /// VictoriaMetrics with more flags (e.g. `-vmalert.proxyURL`), kept across [`Victoria::restart`].
    pub fn start_with(args: &[String]) -> Victoria {
        let dir = tempdir();
        let port = free_port();
        let proc = Victoria::spawn(dir.path(), port, args);
        Victoria {
            proc,
            port,
            url: format!("http://127.0.0.1:{port}"),
            args: args.to_vec(),
            _dir: dir,
        }
    }

    /// Stops VictoriaMetrics gracefully, stays down for `outage`, and starts it again on the same port
    /// and data.
    pub fn restart(&mut self, outage: Duration) {
        assert_eq!(
            self.proc.stop(Duration::from_secs(30)),
            Some(0),
            "{}",
            self.proc.log_text()
        );
        std::thread::sleep(outage);
        self.proc = Victoria::spawn(self._dir.path(), self.port, &self.args);
    }

    fn spawn(dir: &Path, port: u16, args: &[String]) -> Proc {
        let mut cmd = Command::new(deps().get("TG_VICTORIA_METRICS"));
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.join("data").display()))
            .arg("-retentionPeriod=100y")
            .arg("-search.latencyOffset=0s")
            .arg("-search.disableCache")
            .arg("-loggerLevel=WARN")
            .args(args);
        let log = dir.join(format!("vm-{}.log", now_nanos()));
        let proc = Proc::spawn("victoria-metrics", cmd, log);
        let url = format!("http://127.0.0.1:{port}/health");
        wait_http(&url, 200, &proc, Duration::from_secs(30));
        proc
    }

    /// Stores Prometheus text (e.g. from [`import_lines`]) straight into VictoriaMetrics, past any gateway.
    pub fn import_text(&self, body: String) {
        let r = http_client()
            .post(format!("{}/api/v1/import/prometheus", self.url))
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 204, "VictoriaMetrics refused the import");
    }

    /// Series (as label maps) matching `selector`, read straight from VictoriaMetrics.
    pub fn series(&self, selector: &str) -> Vec<HashMap<String, String>> {
        let r: serde_json::Value = http_client()
            .get(format!("{}/api/v1/series", self.url))
            .query(&[("match[]", selector), ("start", "0")])
            .send()
            .unwrap()
            .json()
            .unwrap();
        serde_json::from_value(r["data"].clone()).unwrap()
    }

    /// Every series of `selector` (its labels) with the timestamps (ms) of all its samples, exported
    /// straight from VictoriaMetrics after a flush.
    pub fn samples(&self, selector: &str) -> Vec<(serde_json::Value, Vec<i64>)> {
        self.flush();
        let text = body_text(
            http_client()
                .get(format!("{}/api/v1/export", self.url))
                .query(&[("match[]", selector)])
                .send()
                .unwrap(),
        );
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let ts = v["timestamps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_i64().unwrap())
                    .collect();
                (v["metric"].clone(), ts)
            })
            .collect()
    }

    /// Makes everything written so far searchable (VictoriaMetrics buffers new rows for seconds).
    pub fn flush(&self) {
        let r = http_client()
            .get(format!("{}/internal/force_flush", self.url))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// Polls until `selector` matches at least one series (bounded), returning them: for data that
    /// scrapers keep adding to.
    pub fn wait_some_series(&self, selector: &str) -> Vec<HashMap<String, String>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.flush();
            let s = self.series(selector);
            if !s.is_empty() {
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "VictoriaMetrics at {} has no series for {selector}",
                    self.url
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls until `selector` matches `n` series (bounded), returning them.
    pub fn wait_series(&self, selector: &str, n: usize) -> Vec<HashMap<String, String>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.flush();
            let s = self.series(selector);
            if s.len() == n {
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "VictoriaMetrics has {} series for {selector}, want {n}: {s:?}",
                    s.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The cluster stand-in: real nginx mapping `/insert/<tenant>/...` and `/select/<tenant>/...` to one real
/// single-node per tenant and answering as the real cluster does where it matters to a gateway
/// (`tests/support/cluster-standin.conf`, REFERENCE §6). Tenants not listed share `unknown`.
pub struct Cluster {
    pub nginx: Proc,
    pub insert_url: String,
    pub select_url: String,
    pub tenants: HashMap<String, Victoria>,
    /// Where every tenant not named at start goes: empty unless a gateway wrote to a wrong tenant.
    pub unknown: Victoria,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(tenants: &[&str]) -> Cluster {
        let dir = tempdir();
        let vms: HashMap<String, Victoria> = tenants
            .iter()
            .map(|t| (t.to_string(), Victoria::start()))
            .collect();
        let unknown = Victoria::start();
        let (insert, select) = (free_port(), free_port());
        let map: String = vms
            .iter()
            .map(|(tenant, vm)| format!("    \"{tenant}\" {};\n", vm.port))
            .collect();
        let conf = fs::read_to_string(repo_root().join("tests/support/cluster-standin.conf"))
            .unwrap()
            .replace("__INSERT_PORT__", &insert.to_string())
            .replace("__SELECT_PORT__", &select.to_string())
            .replace("__UNKNOWN_PORT__", &unknown.port.to_string())
            .replace("__TENANTS__", &map);
        let nginx = nginx(dir.path(), &conf);
        let insert_url = format!("http://127.0.0.1:{insert}");
        let select_url = format!("http://127.0.0.1:{select}");
        let probe = format!("{select_url}/select/0:0/prometheus/api/v1/status/buildinfo");
        wait_http(&probe, 200, &nginx, Duration::from_secs(20));
        Cluster {
            nginx,
            insert_url,
            select_url,
            tenants: vms,
            unknown,
            _dir: dir,
        }
    }
}

/// `-read.url` and `-write.url` both pointing at `url`: the usual gateway in front of one backend.
pub fn read_write(url: &str) -> Vec<String> {
    vec![format!("-read.url={url}"), format!("-write.url={url}")]
}

/// Polls `check` every 50 ms until it holds, or panics after `limit` with `what`.
pub fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts nginx (Debian's, from `.deps`) with the test preamble and `servers` (`server { ... }` blocks)
/// in `dir`, which holds its config, pid, temp files and log. Stopped by SIGTERM when dropped.
pub fn nginx(dir: &Path, servers: &str) -> Proc {
    let d = dir.display().to_string();
    let mut conf = fs::read_to_string(repo_root().join("tests/support/nginx-preamble.conf"))
        .unwrap()
        .replace("__DIR__", &d);
    conf.push_str(servers);
    conf.push_str("}\n");
    let conf_path = dir.join("nginx.conf");
    fs::write(&conf_path, conf).unwrap();
    let mut cmd = Command::new(deps().get("TG_NGINX"));
    cmd.arg("-p")
        .arg(format!("{d}/"))
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg("stderr");
    Proc::spawn("nginx", cmd, dir.join("nginx.log"))
}

/// A test CA (`ca.pem`), a certificate it signed for 127.0.0.1 (`server.pem`, `server.key`) and a
/// client certificate it signed (`client.pem` holding certificate and key, for mutual TLS) in `dir`,
/// made with rcgen so no test needs the openssl command.
pub fn test_ca(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tenantgate test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    fs::write(dir.join("server.pem"), server.pem()).unwrap();
    fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tenantgate test client");
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &ca).unwrap();
    fs::write(
        dir.join("client.pem"),
        format!("{}{}", client.pem(), client_key.serialize_pem()),
    )
    .unwrap();
}

/// A client that trusts only the CA in `ca_pem` (a file from [`test_ca`]). It keeps no idle
/// connections, so every request makes a new TLS handshake.
pub fn https_client_builder(ca_pem: &Path) -> reqwest::blocking::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(&fs::read(ca_pem).unwrap()).unwrap();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
}

/// A running tenantgate binary.
pub struct Gate {
    pub proc: Proc,
    pub url: String,
    pub dir: tempfile::TempDir,
    /// The flags it runs with (besides `-httpListenAddr`), for [`Gate::respawn`].
    pub args: Vec<String>,
}

impl Gate {
    /// Starts tenantgate with `args` plus a free `-httpListenAddr`, and waits for `/health` to answer
    /// `health` (200 normally, 503 while keys are not loaded).
    pub fn start_expecting(args: &[String], health: u16) -> Gate {
        let dir = tempdir();
        let port = free_port();
        let proc = Gate::spawn(dir.path(), port, args, health);
        Gate {
            proc,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            args: args.to_vec(),
        }
    }

    /// tenantgate with `-enable.auth` and `signer`'s public key (written into the gate's own directory),
    /// plus `args`: the set-up most tests share.
    pub fn start_secured(signer: &Signer, args: &[String]) -> Gate {
        let dir = tempdir();
        let key = signer.write_public_pem(dir.path(), "idp.pem");
        let mut all = vec![
            "-enable.auth".to_string(),
            format!("-auth.publicKeyFiles={}", key.display()),
        ];
        all.extend_from_slice(args);
        let port = free_port();
        let proc = Gate::spawn(dir.path(), port, &all, 200);
        Gate {
            proc,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            args: all,
        }
    }

    /// Starts the binary again on the same port with the same flags (the previous process must have
    /// exited).
    pub fn respawn(&mut self) {
        let port = self.url.rsplit(':').next().unwrap().parse().unwrap();
        self.proc = Gate::spawn(self.dir.path(), port, &self.args, 200);
    }

    fn spawn(dir: &Path, port: u16, args: &[String], health: u16) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantgate"));
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .args(args);
        let log = dir.join(format!("tenantgate-{}.log", now_nanos()));
        let proc = Proc::spawn("tenantgate", cmd, log);
        let url = format!("http://127.0.0.1:{port}/health");
        wait_http(&url, health, &proc, Duration::from_secs(20));
        proc
    }

    pub fn start(args: &[String]) -> Gate {
        Gate::start_expecting(args, 200)
    }

    /// One value of tenantgate's own `/metrics`, by exact series name (with labels), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        let text = metrics_text(&self.url);
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    }
}

pub fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

pub fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A signing key generated at test time, standing in for an identity provider's.
pub enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl Signer {
    pub fn rsa() -> Signer {
        Signer::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap())
    }

    pub fn ec() -> Signer {
        Signer::Ec(EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
        }
    }

    /// The public key as a PEM `PUBLIC KEY` block.
    pub fn public_pem(&self) -> String {
        let der: PublicKeyX509Der = match self {
            Signer::Rsa(k) => k.public_key().as_der().unwrap(),
            Signer::Ec(k) => k.public_key().as_der().unwrap(),
        };
        pem_block("PUBLIC KEY", der.as_ref())
    }

    /// Writes the public key to `dir/name` and returns the path.
    pub fn write_public_pem(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, self.public_pem()).unwrap();
        path
    }

    pub fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = format!(
            "{}.{}",
            b64url(header.as_bytes()),
            b64url(payload.as_bytes())
        );
        let sig = match self {
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
            Signer::Ec(k) => k
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", b64url(&sig))
    }

    /// A token with `vm_access` (JSON text) valid for ten minutes.
    pub fn token(&self, vm_access: &str) -> String {
        let payload = format!(r#"{{"exp":{},"vm_access":{vm_access}}}"#, now() + 600);
        self.sign_raw(
            &format!(r#"{{"alg":"{}","typ":"JWT"}}"#, self.alg()),
            &payload,
        )
    }
}

/// Prometheus text exposition lines with a timestamp a minute in the past (VictoriaMetrics hides
/// samples newer than its latency offset), one per `(series, value)`.
pub fn import_lines(series: &[(&str, f64)]) -> String {
    let ts = (now() - 60) * 1000;
    series
        .iter()
        .map(|(s, v)| format!("{s} {v} {ts}\n"))
        .collect()
}

/// Reads a whole response body as text (for error messages).
pub fn body_text(mut r: reqwest::blocking::Response) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// Sends raw bytes as one HTTP/1.1 exchange (the client closes after) and returns the status code and
/// the whole answer. For requests no well-behaved client library would send.
pub fn raw_request(base_url: &str, request: &[u8]) -> (u16, String) {
    use std::io::Write;
    let addr = base_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A real vmagent scraping itself every second and remote-writing to `remote_write_url` with `token`.
pub struct Vmagent {
    pub proc: Proc,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Vmagent {
    pub fn start(remote_write_url: &str, token: &str) -> Vmagent {
        Vmagent::scraping(&[], remote_write_url, token)
    }

    /// vmagent scraping `targets` (host:port, job `targets`), or itself (job `self`) when there are
    /// none, every second, remote-writing to `remote_write_url` with `token`.
    pub fn scraping(targets: &[String], remote_write_url: &str, token: &str) -> Vmagent {
        let dir = tempdir();
        let port = free_port();
        let config = dir.path().join("scrape.yml");
        let scrape = if targets.is_empty() {
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            )
        } else {
            let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: targets\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            )
        };
        fs::write(&config, scrape).unwrap();
        let token_file = dir.path().join("token");
        fs::write(&token_file, token).unwrap();
        let mut cmd = Command::new(deps().get("TG_VMAGENT"));
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-promscrape.config={}", config.display()))
            .arg(format!("-remoteWrite.url={remote_write_url}"))
            .arg(format!(
                "-remoteWrite.bearerTokenFile={}",
                token_file.display()
            ))
            .arg(format!(
                "-remoteWrite.tmpDataPath={}",
                dir.path().join("queue").display()
            ))
            .arg("-remoteWrite.flushInterval=200ms")
            .arg("-loggerLevel=WARN");
        let url = format!("http://127.0.0.1:{port}");
        let proc = Proc::spawn_serving("vmagent", cmd, dir.path().join("vmagent.log"), &url);
        Vmagent {
            proc,
            url,
            _dir: dir,
        }
    }

    /// Sum of a counter over all its series in vmagent's own metrics.
    pub fn metric_sum(&self, name: &str) -> f64 {
        let text = metrics_text(&self.url);
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}
