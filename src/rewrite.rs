//! The upstream request target: backend path (with the tenant in cluster mode) and query string, with
//! every client-supplied restriction argument removed and the token's own added.
//!
//! Pure and allocation-light. VictoriaMetrics ORs several `extra_filters[]` together, so a single smuggled
//! filter would widen access to everything: stripping must catch every spelling a server might decode
//! to `extra_label` / `extra_filters` / `extra_filters[]`. We strip generously: a name is dropped when, after
//! up to three rounds of form-decoding, trimming and lower-casing, it starts with `extra_label` or
//! `extra_filters`. A `&`-separated pair that hides such a name behind a `;` is dropped whole. Arguments
//! the token grants are pre-encoded once per verified token ([`GrantArgs`]), so a request only appends.

use std::borrow::Cow;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::auth::claims::Access;
use crate::route::{Api, Family};

/// Characters left as they are in form values: what `application/x-www-form-urlencoded` keeps.
pub(crate) const FORM_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'*');

/// The arguments a token adds, encoded once when the token is verified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrantArgs {
    /// `extra_label=...&extra_filters%5B%5D=...` for reads; empty when unrestricted.
    pub read: String,
    /// `extra_label=...` for writes; empty when no labels.
    pub write: String,
    /// `account:project`, for cluster paths.
    pub tenant: String,
}

impl GrantArgs {
    /// Encodes what `access` adds to upstream requests.
    pub fn new(access: &Access) -> GrantArgs {
        let mut labels = String::new();
        for (name, value) in &access.extra_labels {
            if !labels.is_empty() {
                labels.push('&');
            }
            labels.push_str("extra_label=");
            labels.extend(utf8_percent_encode(name, FORM_VALUE));
            labels.push_str("%3D");
            labels.extend(utf8_percent_encode(value, FORM_VALUE));
        }
        let mut read = labels.clone();
        for filter in &access.extra_filters {
            if !read.is_empty() {
                read.push('&');
            }
            read.push_str("extra_filters%5B%5D=");
            read.extend(utf8_percent_encode(filter, FORM_VALUE));
        }
        GrantArgs {
            read,
            write: labels,
            tenant: access.tenant.to_string(),
        }
    }
}

/// Whether a raw (still encoded) argument name must never come from a client.
pub fn is_restricted_name(raw_name: &str) -> bool {
    let mut name: Cow<str> = Cow::Borrowed(raw_name);
    for _ in 0..4 {
        if starts_restricted(&name) {
            return true;
        }
        let decoded = form_decode(&name);
        if decoded == name {
            return false;
        }
        name = Cow::Owned(decoded.into_owned());
    }
    // Still changing after four rounds: nobody legitimate encodes a name that deeply.
    true
}

/// Whether `name`, trimmed, starts with `extra_label` or `extra_filters` in any ASCII case. Runs for
/// every argument of every request, so it compares in place rather than lower-casing a copy.
fn starts_restricted(name: &str) -> bool {
    let name = name.trim().as_bytes();
    [b"extra_label".as_slice(), b"extra_filters".as_slice()]
        .iter()
        .any(|prefix| {
            name.get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        })
}

/// One round of form decoding: `+` is a space, `%XX` a byte; invalid UTF-8 is replaced, not trusted.
fn form_decode(s: &str) -> Cow<'_, str> {
    // A byte scan: names are short, and a `[char]` pattern costs more than the whole loop.
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let spaced = s.replace('+', " ");
    Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
}

/// Appends to `out` the pairs of a query string or urlencoded body that a client may send, dropping
/// restricted ones. Returns how many pairs were dropped (a metric and log hint of an attempt).
pub fn strip_restricted(input: &str, out: &mut String) -> usize {
    let mut dropped = 0;
    let mut start = 0;
    let ends = memchr::memchr_iter(b'&', input.as_bytes()).chain(std::iter::once(input.len()));
    for end in ends {
        let pair = &input[start..end];
        start = end + 1;
        if pair.is_empty() {
            continue;
        }
        if pair_is_restricted(pair) {
            dropped += 1;
            continue;
        }
        if !out.is_empty() && !out.ends_with('?') {
            out.push('&');
        }
        out.push_str(pair);
    }
    dropped
}

/// Whether any name in `pair` is restricted: the name before `=`, and the name of every `;`-separated
/// piece, as some servers split arguments on `;` too. Values (the queries, the long part) are only
/// searched for the next `;`, with SIMD `memchr`.
fn pair_is_restricted(pair: &str) -> bool {
    let bytes = pair.as_bytes();
    let mut piece_start = 0;
    loop {
        let Some(len) = memchr::memchr2(b'=', b';', &bytes[piece_start..]) else {
            return is_restricted_name(&pair[piece_start..]);
        };
        let name_end = piece_start + len;
        if is_restricted_name(&pair[piece_start..name_end]) {
            return true;
        }
        piece_start = if bytes[name_end] == b';' {
            name_end + 1
        } else {
            match memchr::memchr(b';', &bytes[name_end + 1..]) {
                Some(value_len) => name_end + 1 + value_len + 1,
                None => return false,
            }
        };
    }
}

/// Whether a read should be routed to the single-node backend as-is or into a cluster tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `-clusterMode=false`: the path is kept.
    Single,
    /// `-clusterMode=true`: `/select/<tenant>` or `/insert/<tenant>` is prepended.
    Cluster,
}

/// Builds the upstream path and query: `base_path` (from `-read.url`/`-write.url`), the tenant prefix in
/// cluster mode, the client's path, the client's query without restricted arguments, then the grant's
/// arguments (read or write ones). Returns the target and how many client arguments were dropped.
pub fn upstream_target(
    topology: Topology,
    write: bool,
    base_path: &str,
    api: Api,
    path: &str,
    query: Option<&str>,
    grant: &GrantArgs,
) -> (String, usize) {
    let grant_args = if write { &grant.write } else { &grant.read };
    let tenant = &grant.tenant;
    let mut target = String::with_capacity(
        base_path.len() + path.len() + query.map_or(0, str::len) + grant_args.len() + 32,
    );
    target.push_str(base_path);
    match topology {
        Topology::Single => target.push_str(path),
        Topology::Cluster => {
            target.push_str(if write { "/insert/" } else { "/select/" });
            target.push_str(tenant);
            if api.family == Family::Prometheus {
                target.push_str("/prometheus");
            }
            target.push_str(&path[api.start..]);
        }
    }
    target.push('?');
    let dropped = query.map_or(0, |q| strip_restricted(q, &mut target));
    if !grant_args.is_empty() {
        if !target.ends_with('?') {
            target.push('&');
        }
        target.push_str(grant_args);
    }
    if target.ends_with('?') {
        target.pop();
    }
    (target, dropped)
}

/// Strips restricted arguments from an urlencoded body. Returns the new body and how many were dropped.
pub fn strip_form_body(body: &[u8]) -> Result<(String, usize), std::str::Utf8Error> {
    // Form bodies are ASCII by definition (everything else is percent-encoded); VictoriaMetrics (Go)
    // would accept raw UTF-8 too, so accept it, but refuse what is not text at all.
    let text = std::str::from_utf8(body)?;
    let mut out = String::with_capacity(text.len());
    let dropped = strip_restricted(text.trim_end_matches(['\r', '\n']), &mut out);
    Ok((out, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::{Mode, Tenant};

    fn dev() -> Access {
        Access {
            tenant: Tenant {
                account: 0,
                project: 1,
            },
            extra_labels: vec![("team".into(), "dev".into())],
            extra_filters: vec![r#"{env=~"prod|dev"}"#.into()],
            mode: Mode {
                read: true,
                write: true,
            },
        }
    }

    #[test]
    fn grant_args_are_form_encoded() {
        let g = GrantArgs::new(&dev());
        assert_eq!(g.write, "extra_label=team%3Ddev");
        assert_eq!(
            g.read,
            "extra_label=team%3Ddev&extra_filters%5B%5D=%7Benv%3D%7E%22prod%7Cdev%22%7D"
        );
        assert_eq!(g.tenant, "0:1");
    }

    #[test]
    fn restricted_names_in_every_spelling() {
        for name in [
            "extra_label",
            "extra_filters",
            "extra_filters[]",
            "extra_filters%5B%5D",
            "extra%5Flabel",
            "%65xtra_label",
            "EXTRA_LABEL",
            "Extra_Filters[]",
            "extra_label+",
            "+extra_label",
            "extra%255Flabel",
            "extra%25255Ffilters",
            "%2565%2578tra_label",
            " extra_label",
            "extra_labels",
        ] {
            assert!(is_restricted_name(name), "{name}");
        }
        for name in [
            "query",
            "match[]",
            "match%5B%5D",
            "extra",
            "start",
            "label_extra",
        ] {
            assert!(!is_restricted_name(name), "{name}");
        }
    }

    proptest::proptest! {
        /// The one-pass scan means what splitting on `;` and then `=` meant.
        #[test]
        fn pair_scan_matches_split_semantics(
            pair in "((extra_label|Extra%5Ffilters|%2565xtra_label|query|up|x| |\\+)[=;]?){0,6}"
        ) {
            let split = pair.split(';').any(|piece| {
                is_restricted_name(piece.split_once('=').map_or(piece, |(n, _)| n))
            });
            proptest::prop_assert_eq!(pair_is_restricted(&pair), split);
        }
    }

    #[test]
    fn strip_keeps_order_and_drops_smuggled() {
        let mut out = String::new();
        let dropped = strip_restricted(
            "query=up&extra_label=team%3Dadmin&extra_filters%5B%5D=%7B%7D&start=1&&x;extra_label=a&time=2",
            &mut out,
        );
        assert_eq!(out, "query=up&start=1&time=2");
        assert_eq!(dropped, 3);
    }

    fn plain(tenant: &str, read: &str, write: &str) -> GrantArgs {
        GrantArgs {
            read: read.into(),
            write: write.into(),
            tenant: tenant.into(),
        }
    }

    const PROM: Api = Api {
        family: Family::Prometheus,
        start: 0,
    };

    #[test]
    fn single_node_target() {
        let g = GrantArgs::new(&dev());
        let q = Some("query=up&extra_filters[]={}");
        let (t, dropped) =
            upstream_target(Topology::Single, false, "", PROM, "/api/v1/query", q, &g);
        assert_eq!(t, format!("/api/v1/query?query=up&{}", g.read));
        assert_eq!(dropped, 1);
        let (t, _) = upstream_target(
            Topology::Single,
            true,
            "/base",
            PROM,
            "/api/v1/write",
            None,
            &g,
        );
        assert_eq!(t, "/base/api/v1/write?extra_label=team%3Ddev");
        let open = plain("0:0", "", "");
        let (t, _) = upstream_target(
            Topology::Single,
            false,
            "",
            PROM,
            "/api/v1/query",
            Some(""),
            &open,
        );
        assert_eq!(t, "/api/v1/query");
    }

    #[test]
    fn cluster_targets() {
        let prefixed_prom = Api {
            family: Family::Prometheus,
            start: 11,
        };
        let g = plain("0:1", "", "");
        let path = "/prometheus/api/v1/query";
        let (t, _) = upstream_target(
            Topology::Cluster,
            false,
            "",
            prefixed_prom,
            path,
            Some("query=up"),
            &g,
        );
        assert_eq!(t, "/select/0:1/prometheus/api/v1/query?query=up");
        let g = plain("3:4", "", "");
        let (t, _) = upstream_target(Topology::Cluster, true, "", PROM, "/api/v1/write", None, &g);
        assert_eq!(t, "/insert/3:4/prometheus/api/v1/write");
        let prefixed = Api {
            family: Family::Prefixed,
            start: 0,
        };
        let g = plain("0:0", "", "extra_label=a%3Db");
        let (t, _) = upstream_target(
            Topology::Cluster,
            true,
            "",
            prefixed,
            "/influx/write",
            Some("db=x"),
            &g,
        );
        assert_eq!(t, "/insert/0:0/influx/write?db=x&extra_label=a%3Db");
        let (t, _) = upstream_target(Topology::Cluster, false, "", prefixed, "/vmui/", None, &g);
        assert_eq!(t, "/select/0:0/vmui/");
    }

    #[test]
    fn form_bodies() {
        let (body, dropped) =
            strip_form_body(b"query=up&extra_filters%5B%5D=%7B__name__%21%3D%22%22%7D&time=4\r\n")
                .unwrap();
        assert_eq!(body, "query=up&time=4");
        assert_eq!(dropped, 1);
        assert!(strip_form_body(&[0xff, 0xfe]).is_err());
    }
}
