//! What each fuzz target checks, shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`) and by the replay of
//! kept crashing inputs in the normal test suite (`tests/fuzz_regressions.rs`), so both check the same thing.

use tenantgate::auth::jwt::{verify, VerifyOptions};
use tenantgate::auth::keys::KeySet;
use tenantgate::rewrite::{strip_form_body, strip_restricted};

/// Any bytes as a token, a payload, a JWKS document and a PEM text: never panics.
pub fn token(data: &[u8]) {
    let _ = tenantgate::auth::claims::parse_claims(data);
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = verify(
            token,
            &KeySet::default(),
            &VerifyOptions::default(),
            1_700_000_000.0,
        );
        let checked = VerifyOptions {
            check_signature: true,
            issuers: vec!["i".into()],
            audiences: vec!["a".into()],
            clock_skew: 5.0,
            grants: true,
        };
        let _ = verify(token, &KeySet::default(), &checked, 1_700_000_000.0);
    }
    let _ = tenantgate::auth::keys::keys_from_jwks(data, "fuzz");
    let _ = tenantgate::auth::keys::keys_from_pem(data, "fuzz");
}

/// Argument names as Go's `url.ParseQuery` would decode them (also splitting on `;`, as older Go did).
fn decoded_names(query: &str) -> Vec<String> {
    query
        .split(['&', ';'])
        .map(|p| p.split_once('=').map_or(p, |(n, _)| n))
        .map(|n| {
            percent_encoding::percent_decode_str(&n.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

/// Any query string or form body: no restriction argument survives stripping.
pub fn rewrite(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut out = String::new();
        strip_restricted(text, &mut out);
        for name in decoded_names(&out) {
            assert!(
                !matches!(
                    name.as_str(),
                    "extra_label" | "extra_filters" | "extra_filters[]"
                ),
                "{name} survived in {out}"
            );
        }
    }
    if let Ok((body, _)) = strip_form_body(data) {
        for name in decoded_names(&body) {
            assert!(
                !matches!(
                    name.as_str(),
                    "extra_label" | "extra_filters" | "extra_filters[]"
                ),
                "{name} survived in {body}"
            );
        }
    }
}

/// Any path: accepted paths carry no dot segments, encoded slashes or tenant prefixes.
pub fn route(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    for method in [http::Method::GET, http::Method::POST, http::Method::DELETE] {
        if tenantgate::route::classify(&method, path).is_ok() {
            let lower = path.to_ascii_lowercase();
            assert!(
                !path.contains("/../") && !path.contains("/./") && !path.contains("//"),
                "{path}"
            );
            assert!(
                !lower.contains("%2f") && !lower.contains("%2e") && !lower.contains("%5c"),
                "{path}"
            );
            assert!(
                !path.starts_with("/select/")
                    && !path.starts_with("/insert/")
                    && !path.starts_with("/delete/"),
                "{path}"
            );
        }
    }
}

/// Any argument vector (NUL-separated) and environment (after a \x01): a Config or an error.
pub fn flags(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1}');
    let args: Vec<String> = parts
        .next()
        .unwrap_or("")
        .split('\0')
        .map(str::to_owned)
        .collect();
    let env_text = parts.next().unwrap_or("").to_owned();
    let env = move |name: &str| {
        env_text
            .split('\0')
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .map(str::to_owned)
    };
    let _ = tenantgate::flags::parse(args, &env);
}

/// Any bytes as a backend's answer: the head parser and the chunked decoder never panic, never claim
/// more bytes than they were given, and the decoder reads the same body however the bytes are split
/// across reads.
pub fn wire(data: &[u8]) {
    use tenantgate::proxy::wire::parse_head;
    for method in [http::Method::GET, http::Method::HEAD] {
        if let Ok(Some(head)) = parse_head(data, &method) {
            assert!(head.len <= data.len());
        }
    }
    let whole = chunked(data, data.len().max(1));
    let step = 1 + data.first().map_or(0, |b| usize::from(*b) % 7);
    assert_eq!(whole, chunked(data, step), "split every {step} bytes");
}

/// Feeds `data` to a chunked decoder `step` bytes at a time: the body, and what was left after the
/// last chunk (`None` if it never ended), or the error.
fn chunked(data: &[u8], step: usize) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
    use tenantgate::proxy::wire::{ChunkedDecoder, Decoded};
    let mut decoder = ChunkedDecoder::default();
    let mut buf = bytes::BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
            Decoded::Data(d) => {
                assert!(!d.is_empty());
                body.extend_from_slice(&d);
            }
            Decoded::End => {
                let mut rest = buf.to_vec();
                rest.extend_from_slice(&data[fed..]);
                return Ok((body, Some(rest)));
            }
            Decoded::NeedMore if fed == data.len() => return Ok((body, None)),
            Decoded::NeedMore => {
                let next = (fed + step).min(data.len());
                buf.extend_from_slice(&data[fed..next]);
                fed = next;
            }
        }
        assert!(body.len() <= data.len());
    }
}

/// Any bytes: the first picks a grant, the rest is a PromQL query (see `promql::fuzz_enforce`: every
/// selector of a rewrite carries the grant, rewriting is idempotent) and, read as the arguments of a
/// read, every `query` value a Go backend would read from what tenantgate forwards is one it rewrote.
pub fn promql(data: &[u8]) {
    use std::sync::Arc;
    use tenantgate::prom_api::{rewrite_args, Carrier};
    use tenantgate::promql::{check_enforced, enforce_query, Enforcement};

    tenantgate::promql::fuzz_enforce(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let e = Enforcement::new(&[("team".into(), "dev".into())], &[]).unwrap();
    let mut out = String::new();
    let mut enforce = |q: &str| enforce_query(q, &e).map(|s| Arc::from(s.as_str()));
    if rewrite_args(text, Carrier::Expression, &mut out, &mut enforce).is_err() {
        return;
    }
    for pair in out.split('&').filter(|p| !p.contains(';')) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        if decode(name) == "query" {
            let value = decode(value);
            if let Err(why) = check_enforced(&value, &e) {
                panic!("forwarded query {value:?} from {text:?}: {why}");
            }
        }
    }
}
