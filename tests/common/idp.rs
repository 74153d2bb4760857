//! The real OpenID Connect provider (`tests/support/idp.mjs`, npm oidc-provider 9) as a test fixture, and
//! the two ways its tokens are obtained in the scene: client credentials (vmagent, Prometheus) and a person's
//! authorization-code login (Grafana), done here step by step with reqwest the way a browser would.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{deps, http_client, repo_root, tempdir, Proc};

/// Keycloak serves a realm under `/realms/<name>`; the IdP mimics that so discovery URLs look the same.
pub const ISSUER_PATH: &str = "/realms/master";

/// A running `tests/support/idp.mjs`.
pub struct Idp {
    pub proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// `<base>/realms/master`.
    pub issuer: String,
    pub dir: tempfile::TempDir,
}

/// What a person's login yields (the tokens Grafana holds and forwards).
#[derive(Debug, Clone)]
pub struct UserTokens {
    pub access_token: String,
    pub id_token: String,
}

impl Idp {
    /// Starts the IdP with `clients` (JSON array) and `users` (JSON object), as `tests/support/README.md`
    /// describes, on a free port, with keys generated into its own keys file.
    pub fn start(clients: &serde_json::Value, users: &serde_json::Value) -> Idp {
        let dir = tempdir();
        let clients_file = dir.path().join("clients.json");
        let users_file = dir.path().join("users.json");
        fs::write(&clients_file, clients.to_string()).unwrap();
        fs::write(&users_file, users.to_string()).unwrap();
        let mut cmd = Command::new("node");
        cmd.arg(repo_root().join("tests/support/idp.mjs"))
            .env("IDP_PORT", "0")
            .env("IDP_ISSUER_PATH", ISSUER_PATH)
            .env("IDP_KEYS_FILE", dir.path().join("keys.json"))
            .env("IDP_CLIENTS_FILE", &clients_file)
            .env("IDP_USERS_FILE", &users_file)
            .env("TG_NODE_MODULES", deps().get("TG_NODE_MODULES"));
        let mut proc = Proc::spawn("idp", cmd, dir.path().join("idp.log"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let base = loop {
            let log = proc.log_text();
            if let Some(url) = log
                .lines()
                .find_map(|l| l.strip_prefix("idp listening on "))
            {
                break url.trim().to_string();
            }
            if proc.wait_exit(Duration::ZERO).is_some() || Instant::now() > deadline {
                panic!("the IdP did not start; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let issuer = format!("{base}{ISSUER_PATH}");
        Idp {
            proc,
            base,
            issuer,
            dir,
        }
    }

    /// What `-auth.oidcDiscoveryEndpoints` takes.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// Writes `secret` to a file (as vmagent's and Prometheus' `client_secret_file` want) and returns it.
    pub fn secret_file(&self, name: &str, secret: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, secret).unwrap();
        path
    }

    /// The IdP's public keys as one PEM file, exported from its private JWKS with node. Only for set-ups
    /// that must not depend on key fetching.
    pub fn public_keys_pem(&self) -> PathBuf {
        let out = self.dir.path().join("idp-public.pem");
        let script = "const c=require('crypto'),fs=require('fs');\
            const ks=JSON.parse(fs.readFileSync(process.argv[1],'utf8')).keys;\
            process.stdout.write(ks.map(k=>c.createPublicKey({key:k,format:'jwk'})\
            .export({type:'spki',format:'pem'})).join(''));";
        let o = Command::new("node")
            .arg("-e")
            .arg(script)
            .arg(self.dir.path().join("keys.json"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        fs::write(&out, &o.stdout).unwrap();
        out
    }

    /// An access token from the client credentials grant (what vmagent and Prometheus fetch).
    pub fn client_credentials(&self, client: &str, secret: &str) -> String {
        let r = http_client()
            .post(self.token_url())
            .basic_auth(client, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .unwrap();
        let status = r.status();
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(status, 200, "client credentials for {client}: {v}");
        v["access_token"].as_str().unwrap().to_string()
    }

    /// A person's login through the authorization-code flow, as Grafana runs it: `/auth` redirects to the
    /// login form, the form is posted, `/auth/<uid>` redirects to `redirect_uri` with a code, and the client
    /// exchanges the code at `/token`. Cookies are carried by hand (reqwest's jar is not enabled here).
    pub fn login(
        &self,
        client: &str,
        secret: &str,
        redirect_uri: &str,
        user: &str,
        password: &str,
    ) -> UserTokens {
        let http = http_client();
        let mut jar: BTreeMap<String, String> = BTreeMap::new();
        let mut next = reqwest::Url::parse_with_params(
            &format!("{}/auth", self.issuer),
            &[
                ("client_id", client),
                ("response_type", "code"),
                ("scope", "openid profile"),
                ("redirect_uri", redirect_uri),
                ("state", "e2e"),
            ],
        )
        .unwrap();
        let mut code = None;
        for _ in 0..8 {
            if next.as_str().starts_with(redirect_uri) {
                code = next
                    .query_pairs()
                    .find(|(k, _)| k == "code")
                    .map(|(_, v)| v.to_string());
                break;
            }
            let cookie = jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let login_form = next.path().contains("/interaction/");
            let request = if login_form {
                http.post(format!("{next}/login"))
                    .form(&[("login", user), ("password", password)])
            } else {
                http.get(next.clone())
            };
            let r = request.header("cookie", cookie).send().unwrap();
            for set in r.headers().get_all("set-cookie") {
                let set = set.to_str().unwrap();
                let (pair, attrs) = set.split_once(';').unwrap_or((set, ""));
                let (name, value) = pair.split_once('=').unwrap();
                let expired = attrs.contains("1970") || value.is_empty();
                if expired {
                    jar.remove(name.trim());
                } else {
                    jar.insert(name.trim().to_string(), value.to_string());
                }
            }
            let status = r.status().as_u16();
            let location = r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string());
            let Some(location) = location.filter(|_| matches!(status, 302 | 303)) else {
                panic!(
                    "login of {user}: {next} answered {status}: {}",
                    super::body_text(r)
                );
            };
            next = next.join(&location).unwrap();
        }
        let code =
            code.unwrap_or_else(|| panic!("login of {user}: no code reached {redirect_uri}"));
        let r = http
            .post(self.token_url())
            .basic_auth(client, Some(secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect_uri),
            ])
            .send()
            .unwrap();
        let status = r.status();
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(status, 200, "code exchange for {user}: {v}");
        UserTokens {
            access_token: v["access_token"].as_str().unwrap().to_string(),
            id_token: v["id_token"].as_str().unwrap().to_string(),
        }
    }
}

/// The payload of a JWT, decoded without verification (to show what a token grants).
pub fn jwt_payload(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
