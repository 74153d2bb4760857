//! The OpenID Connect provider of the key tests (`tests/support/idp.mjs`) and the small helpers they need:
//! starting tenantgate with a command line of its own, waiting for and counting log lines, and stopping
//! nginx so that its workers do not outlive a test. Kept apart from `mod.rs` so it merges cleanly.

use super::*;

impl Gate {
    /// Starts tenantgate with exactly `args` (which must listen on `127.0.0.1:port`), for command lines
    /// that carry their own `-httpListenAddr`, and waits for `/health` to answer `health`.
    pub fn start_at(port: u16, args: &[String], health: u16) -> Gate {
        let dir = tempdir();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantgate"));
        cmd.args(args);
        let proc = Proc::spawn("tenantgate", cmd, dir.path().join("tenantgate.log"));
        let url = format!("http://127.0.0.1:{port}");
        wait_http(
            &format!("{url}/health"),
            health,
            &proc,
            Duration::from_secs(20),
        );
        Gate {
            proc,
            url,
            dir,
            args: args.to_vec(),
        }
    }
}

impl Proc {
    /// Waits (bounded) until the process log contains `needle`; panics with the log otherwise, or at once
    /// when the process exits first.
    pub fn wait_for_log(&mut self, needle: &str, limit: Duration) -> String {
        self.try_wait_for_log(needle, limit)
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// [`Proc::wait_for_log`] that says why instead of panicking.
    pub fn try_wait_for_log(&mut self, needle: &str, limit: Duration) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.log_text();
            if text.contains(needle) {
                return Ok(text);
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{} exited ({status}) before logging {needle:?}; log:\n{text}",
                        self.name
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not log {needle:?} within {limit:?}; log:\n{text}",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many log lines contain `needle`.
    pub fn count_log_lines(&self, needle: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// The clients every test IdP knows: `vmagent` gets RS256 tokens, `es-agent` ES256 tokens, and `short`
/// RS256 tokens that expire after one second. All get an unrestricted `vm_access` for tenant 0:0.
pub const IDP_CLIENTS: &str = r#"[
  {"client_id": "vmagent", "client_secret": "s3cret", "vm_access": {"tenant_id": {"account_id": 0}}},
  {"client_id": "es-agent", "client_secret": "s3cret", "token_alg": "ES256", "vm_access": {}},
  {"client_id": "short", "client_secret": "s3cret", "token_ttl": 1, "vm_access": {}}
]"#;

/// A real OpenID Connect provider (`tests/support/idp.mjs`, npm oidc-provider) on 127.0.0.1, logging
/// every request it serves (`IDP_LOG_REQUESTS=1`) so tests can count key fetches.
pub struct Idp {
    pub proc: Proc,
    pub port: u16,
    /// The issuer, e.g. `http://127.0.0.1:PORT/realms/master`; endpoints hang below it.
    pub issuer: String,
}

/// A copy of `cmd` (program, arguments, environment), for a second start.
fn cmd_for_attempt(cmd: &mut Command) -> Command {
    let mut again = Command::new(cmd.get_program());
    again.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            again.env(k, v);
        }
    }
    again
}

impl Idp {
    /// Starts the IdP on a free port with the private JWKS `dir/keys_file` (generated when missing) and
    /// [`IDP_CLIENTS`].
    pub fn start(dir: &Path, keys_file: &str) -> Idp {
        Idp::start_with(dir, 0, "", keys_file)
    }

    /// Starts the IdP on `port` (0: a free one) with issuer path `issuer_path` (e.g. `/realms/master`, to
    /// look like Keycloak) and the private JWKS `dir/keys_file`. Restart it on the same port with another
    /// keys file to rotate keys.
    pub fn start_with(dir: &Path, port: u16, issuer_path: &str, keys_file: &str) -> Idp {
        let clients = dir.join("idp-clients.json");
        if !clients.exists() {
            fs::write(&clients, IDP_CLIENTS).unwrap();
        }
        // People for the authorization-code flow, when the test wrote some (see `login.rs`).
        let users = dir.join("idp-users.json");
        let mut cmd = Command::new("node");
        cmd.arg(repo_root().join("tests/support/idp.mjs"))
            .env("TG_NODE_MODULES", deps().get("TG_NODE_MODULES"))
            .env("IDP_PORT", port.to_string())
            .env("IDP_ISSUER_PATH", issuer_path)
            .env("IDP_KEYS_FILE", dir.join(keys_file))
            .env("IDP_CLIENTS_FILE", &clients)
            .env("IDP_LOG_REQUESTS", "1");
        if users.exists() {
            cmd.env("IDP_USERS_FILE", &users);
        }
        // In two full runs of the suite (out of many) one IdP of tests/keys.rs printed nothing after
        // loading oidc-provider for 30 s, and the same test passed on its own at once: a stalled Node
        // start, not a fault of the gateway. The log of a slow start is kept and a second one tried.
        let mut started = None;
        for attempt in 1..=2 {
            let log = dir.join(format!("idp-{keys_file}-{}.log", now_nanos()));
            let mut proc = Proc::spawn("idp", cmd_for_attempt(&mut cmd), log);
            match proc.try_wait_for_log(
                "idp listening on http://127.0.0.1:",
                Duration::from_secs(30),
            ) {
                Ok(text) => {
                    started = Some((proc, text));
                    break;
                }
                Err(why) if attempt == 1 => eprintln!("IdP start stalled, trying again: {why}"),
                Err(why) => panic!("{why}"),
            }
        }
        let (proc, text) = started.expect("the IdP started");
        let port = text
            .split("idp listening on http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in the IdP's ready line:\n{text}"));
        Idp {
            proc,
            port,
            issuer: format!("http://127.0.0.1:{port}{issuer_path}"),
        }
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// An access token (JWT) for `client` by the client credentials grant, as vmagent gets it.
    pub fn client_credentials_token(&self, client: &str, secret: &str) -> String {
        let r = http_client()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some(secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let text = body_text(r);
        assert_eq!(status, 200, "token endpoint answered {status}: {text}");
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {text}"))
            .to_string()
    }

    /// How many times the JWKS was fetched from this IdP process.
    pub fn jwks_fetches(&self) -> usize {
        self.proc
            .log_text()
            .lines()
            .filter(|l| l.starts_with("idp request GET ") && l.ends_with("/jwks"))
            .count()
    }

    /// Stops the IdP (SIGTERM; it exits at once).
    pub fn stop(&mut self) {
        assert_eq!(
            self.proc.stop(Duration::from_secs(10)),
            Some(0),
            "{}",
            self.proc.log_text()
        );
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
