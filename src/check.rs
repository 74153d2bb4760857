//! `tenantgate -checkGrants=FILE -checkToken=TOKEN`: what the gateway would do with one token, without
//! starting it — for operators debugging single sign-on.
//!
//! It loads the grants file (a problem is reported with its line and column, exit 2), verifies the token
//! with the keys the other flags configure (PEM files, JWKS, OpenID Connect discovery: fetched once), says
//! which grant applies and why the ones before it did not, and prints what a query and a write by this
//! token would be forwarded as. Exit 0 when a grant (or the token's own `vm_access`) applies, 1 when none
//! does or the token does not verify. The token itself is never printed.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderValue};

use crate::auth::claims::Access;
use crate::auth::fetch;
use crate::auth::grants::Grants;
use crate::flags::{Config, Secret};
use crate::reload::Reload;
use crate::rewrite::{self, GrantArgs, Topology};
use crate::route::{self, Route};

/// Runs the check and returns the report and the exit code.
pub fn run(mut config: Config) -> (String, u8) {
    let Some((file, token)) = config.auth.check.clone() else {
        return ("-checkGrants and -checkToken are needed\n".into(), 2);
    };
    let grants = match crate::auth::grants_file::load(&file) {
        Ok(g) => g,
        Err(e) => return (format!("{e}\n"), 2),
    };
    let token = match &token {
        Secret::Inline(t) => t.clone(),
        Secret::File(path) => match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return (format!("-checkToken {}: {e}\n", path.display()), 2),
        },
    };
    let token = token.trim();
    let token = token
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("bearer "))
        .map_or(token, |_| token[7..].trim());
    config.auth.enabled = true;
    // The check hands the token over itself, as `Authorization: Bearer`, whatever -auth.httpHeader says.
    config.auth.header = "authorization".to_string();
    config.auth.grants_file = Some(file.clone());
    config.auth.token_cache_size = 0;
    let mut out = String::new();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return (format!("cannot start: {e}\n"), 2),
    };
    let verdict = runtime.block_on(async {
        let reload = Reload::default();
        let (auth, _, fetcher) = fetch::start(&config, &reload).await?;
        let auth = auth.ok_or("-enable.auth is needed")?;
        let keys = auth.keys();
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token is not visible ASCII".to_string())?;
        headers.insert(http::header::AUTHORIZATION, value);
        let result = auth.authenticate_or_refresh(&headers).await;
        if let Some(f) = fetcher {
            f.abort();
        }
        Ok::<_, String>((result, keys.len(), auth.checks_signatures()))
    });
    let (result, keys, signatures) = match verdict {
        Ok(v) => v,
        Err(e) => return (format!("{e}\n"), 2),
    };
    let payload = payload_of(token);
    let _ = writeln!(
        out,
        "grants file: {} ({} grants)",
        file.display(),
        grants.len()
    );
    if signatures {
        let _ = writeln!(out, "keys: {keys} loaded from the configured sources");
    } else {
        let _ = writeln!(out, "keys: none configured: the signature is NOT checked");
    }
    if !crate::auth::jwt::looks_like_jwt(token) {
        let _ = writeln!(
            out,
            "token: opaque (not a JWT){}",
            if config.auth.introspection.is_some() {
                "; asked of the identity provider's introspection endpoint"
            } else {
                "; without -auth.introspection* it cannot be checked"
            }
        );
    }
    if let Some(p) = &payload {
        let has_vm_access = p.get("vm_access").is_some();
        let _ = writeln!(
            out,
            "token{}: sub={} iss={} vm_access {}",
            if result.is_ok() {
                ""
            } else {
                " (refused, see below: these claims are NOT verified)"
            },
            p.get("sub").and_then(|v| v.as_str()).unwrap_or("-"),
            p.get("iss").and_then(|v| v.as_str()).unwrap_or("-"),
            if has_vm_access { "present" } else { "absent" }
        );
        if !has_vm_access || config.auth.grants_override {
            explain(&mut out, &grants, p);
        } else {
            let _ = writeln!(
                out,
                "the token's own vm_access applies; the grants are not consulted (-auth.grantsOverride would)"
            );
        }
    }
    let grant = match result {
        Ok(grant) => grant,
        Err(e) => {
            let _ = writeln!(out, "refused ({}): {}", e.kind.status().as_u16(), e.message);
            return (out, 1);
        }
    };
    let _ = writeln!(out, "accepted via {}", grant.via.label());
    describe(&mut out, &grant.access);
    forwarded(&mut out, &config, &grant.args);
    (out, 0)
}

/// The token's payload, decoded without any check: what it claims, printed as unverified when the
/// token was refused.
fn payload_of(token: &str) -> Option<serde_json::Value> {
    let part = token.split('.').nth(1)?;
    let bytes = crate::auth::jwt::decode_part(part, "payload").ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn explain(out: &mut String, grants: &Grants, payload: &serde_json::Value) {
    let explanation = grants.explain(payload);
    for step in &explanation.steps {
        match &step.unmatched {
            Some(claim) => {
                let _ = writeln!(
                    out,
                    "grant at line {}: claim {claim} did not match",
                    step.line
                );
            }
            None => {
                let _ = writeln!(out, "grant at line {}: applies", step.line);
            }
        }
    }
    if let Err(why) = &explanation.outcome {
        let _ = writeln!(out, "no grant: {why}");
    }
}

fn describe(out: &mut String, access: &Access) {
    let labels: Vec<String> = access
        .extra_labels
        .iter()
        .map(|(n, v)| format!("{n}={v:?}"))
        .collect();
    let mode = match (access.mode.read, access.mode.write) {
        (true, true) => "read and write",
        (true, false) => "read only",
        (false, true) => "write only",
        (false, false) => "nothing",
    };
    let _ = writeln!(
        out,
        "grant: tenant {}, extra_labels {{{}}}, extra_filters {:?}, {mode}",
        access.tenant,
        labels.join(", "),
        access.extra_filters
    );
}

/// What `/api/v1/query?query=up` and `/api/v1/write` would become.
fn forwarded(out: &mut String, config: &Config, args: &GrantArgs) {
    let topology = if config.backend.cluster_mode {
        Topology::Cluster
    } else {
        Topology::Single
    };
    for (method, path, query, write, base) in [
        (
            "GET",
            "/api/v1/query",
            Some("query=up"),
            false,
            &config.backend.read_urls.first().cloned(),
        ),
        (
            "POST",
            "/api/v1/write",
            None,
            true,
            &config.backend.write_urls.first().cloned(),
        ),
    ] {
        let Ok(Route::Api(call)) =
            route::classify(&method.parse().unwrap_or(http::Method::GET), path)
        else {
            continue;
        };
        let (target, _) =
            rewrite::upstream_target(topology, write, "", call.api, path, query, args);
        let base = base
            .as_deref()
            .unwrap_or(if write { "<-write.url>" } else { "<-read.url>" });
        let _ = writeln!(
            out,
            "a {}: {method} {base}{target}",
            if write { "write" } else { "query" }
        );
    }
}
