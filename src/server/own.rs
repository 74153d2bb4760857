//! tenantgate's own endpoints, as every VictoriaMetrics component has them, and who may see them.
//!
//! `/health`, `/ping`, `/-/healthy`, `/-/ready`, `/robots.txt` and `/favicon.ico` answer anyone (load
//! balancers and probes call them). `/metrics`, `/flags` and `/debug/pprof/` need their auth key
//! (`-metricsAuthKey`, `-flagsAuthKey`, `-pprofAuthKey`, passed as the `authKey` query argument) when one
//! is set, and otherwise `-httpAuth.*` like every other path. Refusals are 401 with VictoriaMetrics'
//! wording, so scripts that grep for it keep working.

use std::sync::Arc;

use base64::Engine;
use http::header;
use http::{HeaderMap, Uri};

use crate::error::{ErrorKind, GatewayError};
use crate::secrets::SecretValue;

/// The secrets that guard endpoints, resolved.
pub struct Guards {
    /// `-httpAuth.username` / `-httpAuth.password`.
    pub basic: Option<(Arc<SecretValue>, Arc<SecretValue>)>,
    /// `-metricsAuthKey`.
    pub metrics: Option<Arc<SecretValue>>,
    /// `-flagsAuthKey`.
    pub flags: Option<Arc<SecretValue>>,
    /// `-pprofAuthKey`.
    pub pprof: Option<Arc<SecretValue>>,
}

/// Which guard an endpoint has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Nothing: probes.
    Open,
    /// `-httpAuth.*`, when set.
    Basic,
    /// The named auth key when set, else `-httpAuth.*`.
    Key(&'static str),
}

impl Guards {
    /// Checks a request against `guard`.
    pub fn check(&self, guard: Guard, headers: &HeaderMap, uri: &Uri) -> Result<(), GatewayError> {
        match guard {
            Guard::Open => Ok(()),
            Guard::Basic => self.check_basic(headers),
            Guard::Key(flag) => {
                let key = match flag {
                    "metricsAuthKey" => &self.metrics,
                    "flagsAuthKey" => &self.flags,
                    _ => &self.pprof,
                };
                match key {
                    Some(key) => check_key(key, flag, uri),
                    None => self.check_basic(headers),
                }
            }
        }
    }

    fn check_basic(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        let Some((user, password)) = &self.basic else {
            return Ok(());
        };
        let refused = || {
            GatewayError::new(
            ErrorKind::BasicAuth,
            "this endpoint needs the user name and password of -httpAuth.username and -httpAuth.password (HTTP Basic auth)",
        )
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
            })
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .ok_or_else(refused)?;
        let split = given.iter().position(|b| *b == b':').ok_or_else(refused)?;
        // Both compared in full whatever the first says, so timing tells nothing.
        let user_ok = user.matches(&given[..split]);
        let password_ok = password.matches(&given[split + 1..]);
        if user_ok && password_ok {
            Ok(())
        } else {
            Err(refused())
        }
    }
}

/// `authKey=<key>` in the query, form-decoded.
fn check_key(key: &SecretValue, flag: &str, uri: &Uri) -> Result<(), GatewayError> {
    let given = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("authKey="))
        .map(|raw| {
            percent_encoding::percent_decode_str(&raw.replace('+', " ")).collect::<Vec<u8>>()
        });
    match given {
        None => Err(GatewayError::new(
            ErrorKind::AuthKey,
            format!("Expected to receive non-empty authKey when -{flag} is set"),
        )),
        Some(given) if given.is_empty() => Err(GatewayError::new(
            ErrorKind::AuthKey,
            format!("Expected to receive non-empty authKey when -{flag} is set"),
        )),
        Some(given) if key.matches(&given) => Ok(()),
        Some(_) => Err(GatewayError::new(
            ErrorKind::AuthKey,
            format!("The provided authKey doesn't match -{flag}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::Secret;

    fn guards() -> Guards {
        let s = |v: &str| SecretValue::load(&Secret::Inline(v.into()), "x").unwrap();
        Guards {
            basic: Some((s("u"), s("p"))),
            metrics: Some(s("mkey")),
            flags: None,
            pprof: None,
        }
    }

    fn basic(user_pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(user_pass);
        h.insert(header::AUTHORIZATION, format!("Basic {v}").parse().unwrap());
        h
    }

    #[test]
    fn keys_override_basic_auth_and_basic_auth_guards_the_rest() {
        let g = guards();
        let uri = |q: &str| q.parse::<Uri>().unwrap();
        let none = HeaderMap::new();
        assert!(g.check(Guard::Open, &none, &uri("/health")).is_ok());
        assert!(g
            .check(
                Guard::Key("metricsAuthKey"),
                &none,
                &uri("/metrics?authKey=mkey")
            )
            .is_ok());
        let e = g
            .check(
                Guard::Key("metricsAuthKey"),
                &basic("u:p"),
                &uri("/metrics"),
            )
            .unwrap_err();
        assert!(
            e.message
                .starts_with("Expected to receive non-empty authKey"),
            "{}",
            e.message
        );
        let e = g
            .check(
                Guard::Key("metricsAuthKey"),
                &none,
                &uri("/metrics?authKey=x"),
            )
            .unwrap_err();
        assert_eq!(
            e.message,
            "The provided authKey doesn't match -metricsAuthKey"
        );
        // No -flagsAuthKey: Basic auth guards /flags.
        assert!(g
            .check(Guard::Key("flagsAuthKey"), &none, &uri("/flags"))
            .is_err());
        assert!(g
            .check(Guard::Key("flagsAuthKey"), &basic("u:p"), &uri("/flags"))
            .is_ok());
        assert!(g
            .check(Guard::Basic, &basic("u:p"), &uri("/api/v1/query"))
            .is_ok());
        for bad in ["u:q", "v:p", "u", "u:p:x", ""] {
            assert!(
                g.check(Guard::Basic, &basic(bad), &uri("/")).is_err(),
                "{bad}"
            );
        }
    }
}
