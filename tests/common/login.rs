//! People in the scene: the authorization-code login a person goes through in Grafana, against the real
//! OpenID Connect provider of `idp.rs` (`tests/support/idp.mjs`), done step by step with reqwest the way a
//! browser would, and the tokens it yields.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::idp::Idp;
use super::{body_text, http_client};

/// Keycloak serves a realm under `/realms/<name>`; the scene's IdP mimics that, so its discovery URL looks
/// like the one in vmgateway's guide.
pub const REALM_PATH: &str = "/realms/master";

/// What a person's login yields (the tokens Grafana holds and forwards).
#[derive(Debug, Clone)]
pub struct UserTokens {
    pub access_token: String,
    pub id_token: String,
}

impl Idp {
    /// Starts the IdP under [`REALM_PATH`] on a free port with `clients` (JSON array) and `users` (JSON
    /// object) as `tests/support/README.md` describes them, its keys generated into `dir/keys.json`.
    pub fn start_scene(dir: &Path, clients: &serde_json::Value, users: &serde_json::Value) -> Idp {
        fs::write(dir.join("idp-clients.json"), clients.to_string()).unwrap();
        fs::write(dir.join("idp-users.json"), users.to_string()).unwrap();
        Idp::start_with(dir, 0, REALM_PATH, "keys.json")
    }

    /// What vmagent's `-remoteWrite.oauth2.tokenUrl` and Prometheus' `token_url` take.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
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
                    body_text(r)
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

/// Writes `secret` to `dir/name` (as vmagent's and Prometheus' `client_secret_file` want) and returns it.
pub fn secret_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, secret).unwrap();
    path
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
