//! What every answer carries, and tenantgate's own small answers.
//!
//! As every VictoriaMetrics component, each answer gets `X-Server-Hostname` (unless
//! `-http.header.disableServerHostname`) and the `-http.header.hsts`, `-http.header.csp` and
//! `-http.header.frameOptions` headers when set. CORS follows VictoriaMetrics: backends add
//! `Access-Control-Allow-Origin: *` to their query answers themselves and tenantgate passes it on; its own
//! error answers and `OPTIONS` pre-flights carry the same; `-http.disableCORS` removes every
//! `Access-Control-*` header, the backend's included.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::flags::ServerConfig;

use super::ResponseBody;

/// The headers added to (and removed from) every answer, prepared once.
pub struct Decoration {
    add: Vec<(HeaderName, HeaderValue)>,
    cors: bool,
}

const ALLOW_ORIGIN: HeaderName = header::ACCESS_CONTROL_ALLOW_ORIGIN;
const SERVER_HOSTNAME: HeaderName = HeaderName::from_static("x-server-hostname");

impl Decoration {
    /// From the server flags; `hostname` is this machine's name.
    pub fn new(config: &ServerConfig, hostname: &str) -> Result<Decoration, String> {
        let mut add = Vec::new();
        let mut push = |name: HeaderName, value: &str, flag: &str| -> Result<(), String> {
            let value = HeaderValue::from_str(value).map_err(|e| format!("{flag}: {e}"))?;
            add.push((name, value));
            Ok(())
        };
        if config.headers.server_hostname {
            push(SERVER_HOSTNAME, hostname, "host name")?;
        }
        if let Some(v) = &config.headers.hsts {
            push(header::STRICT_TRANSPORT_SECURITY, v, "-http.header.hsts")?;
        }
        if let Some(v) = &config.headers.csp {
            push(header::CONTENT_SECURITY_POLICY, v, "-http.header.csp")?;
        }
        if let Some(v) = &config.headers.frame_options {
            push(header::X_FRAME_OPTIONS, v, "-http.header.frameOptions")?;
        }
        Ok(Decoration {
            add,
            cors: !config.disable_cors,
        })
    }

    /// Adds the headers to an answer; `own` answers (not the backend's) get CORS here too. A backend's
    /// `X-Server-Hostname` is replaced by tenantgate's (or removed with
    /// `-http.header.disableServerHostname`): clients need not learn the backend's host names.
    pub fn apply(&self, headers: &mut HeaderMap, own: bool) {
        headers.remove(SERVER_HOSTNAME);
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        if !self.cors {
            strip_cors(headers);
        } else if own && !headers.contains_key(ALLOW_ORIGIN) {
            headers.insert(ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
    }

    /// The answer to an `OPTIONS` request (a browser's CORS pre-flight), as VictoriaMetrics gives it:
    /// 204, before any authentication, allowing every origin, method and header unless CORS is off.
    pub fn preflight(&self) -> Response<ResponseBody> {
        let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
        *response.status_mut() = StatusCode::NO_CONTENT;
        if self.cors {
            let h = response.headers_mut();
            let any = HeaderValue::from_static("*");
            h.insert(ALLOW_ORIGIN, any.clone());
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, any.clone());
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, any);
        }
        response
    }
}

/// Removes every `Access-Control-*` header.
fn strip_cors(headers: &mut HeaderMap) {
    while let Some(name) = headers
        .keys()
        .find(|n| n.as_str().starts_with("access-control-"))
        .cloned()
    {
        headers.remove(&name);
    }
}

/// This machine's name, for `X-Server-Hostname` (`unknown` when it cannot be read, as in VictoriaMetrics).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty() && HeaderValue::from_str(h).is_ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// A plain-text answer.
pub fn text_response(status: StatusCode, text: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(Either::Right(Full::new(text.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A JSON answer.
pub fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(Either::Right(Full::new(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A redirect to `location` (used for the bare `-http.pathPrefix`).
pub fn redirect(location: &str) -> Response<ResponseBody> {
    let mut response = text_response(StatusCode::FOUND, "");
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServerConfig {
        match crate::flags::parse(
            [
                "-read.url=http://a",
                "-http.header.hsts=max-age=1",
                "-http.header.frameOptions=DENY",
            ]
            .map(String::from),
            &|_| None,
        ) {
            Ok(crate::flags::Parsed::Run(c)) => c.server,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_answer_gets_hostname_and_security_headers() {
        let d = Decoration::new(&config(), "gw-1").unwrap();
        let mut h = HeaderMap::new();
        d.apply(&mut h, true);
        assert_eq!(h["x-server-hostname"], "gw-1");
        assert_eq!(h[header::STRICT_TRANSPORT_SECURITY], "max-age=1");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[ALLOW_ORIGIN], "*");
        assert!(!h.contains_key(header::CONTENT_SECURITY_POLICY));
    }

    #[test]
    fn disabled_cors_removes_the_backends_headers_too() {
        let mut c = config();
        c.disable_cors = true;
        c.headers.server_hostname = false;
        let d = Decoration::new(&c, "x").unwrap();
        let mut h = HeaderMap::new();
        h.insert(ALLOW_ORIGIN, HeaderValue::from_static("*"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("*"),
        );
        d.apply(&mut h, false);
        assert!(!h.contains_key(ALLOW_ORIGIN) && !h.contains_key("x-server-hostname"));
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_HEADERS));
        assert!(!d.preflight().headers().contains_key(ALLOW_ORIGIN));
    }
}
