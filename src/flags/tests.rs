use super::values::*;
use super::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const CLUSTER_LINE: &str = "-licenseFile=/opt/vm-license.key -license.forceOffline=true -enable.auth=true -clusterMode=true
-write.url=http://vminsert:8480 -read.url=http://vmselect:8481 -httpListenAddr=0.0.0.0:8431
-auth.oidcDiscoveryEndpoints=http://keycloak:8080/realms/master/.well-known/openid-configuration";

const SINGLE_LINE: &str = "-licenseFile=/opt/vm-license.key -enable.auth=true -write.url=http://vmsingle:8429 -read.url=http://vmsingle:8429
-httpListenAddr=0.0.0.0:8431 -auth.oidcDiscoveryEndpoints=http://keycloak:8080/realms/master/.well-known/openid-configuration";

const OIDC: &str = "http://keycloak:8080/realms/master/.well-known/openid-configuration";

fn no_env(_: &str) -> Option<String> {
    None
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

fn try_parse(line: &str) -> Result<Parsed, FlagError> {
    parse(words(line), &no_env)
}

fn run(line: &str) -> Config {
    match try_parse(line) {
        Ok(Parsed::Run(config)) => config,
        other => panic!("{line:?} gave {other:?}"),
    }
}

fn err(line: &str) -> String {
    match try_parse(line) {
        Err(FlagError(message)) => message,
        other => panic!("{line:?} should fail, gave {other:?}"),
    }
}

/// A file that exists for the test's duration.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tenantgate-flags-{}-{n}-{tag}", std::process::id()));
        std::fs::write(&path, "test").unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn documented_cluster_command_line() {
    let c = run(CLUSTER_LINE);
    assert!(c.auth.enabled);
    assert!(c.backend.cluster_mode);
    assert_eq!(
        c.backend.write_urls.first().map(String::as_str),
        Some("http://vminsert:8480")
    );
    assert_eq!(
        c.backend.read_urls.first().map(String::as_str),
        Some("http://vmselect:8481")
    );
    assert_eq!(c.server.listeners[0].addr, "0.0.0.0:8431".parse().unwrap());
    assert_eq!(c.auth.oidc_discovery_endpoints, vec![OIDC.to_string()]);
    assert_eq!(
        c.compat.licence_flags_seen,
        vec!["licenseFile", "license.forceOffline"]
    );
    assert!(c.has_key_sources());
}

#[test]
fn documented_single_node_command_line() {
    let c = run(SINGLE_LINE);
    assert!(c.auth.enabled);
    assert!(!c.backend.cluster_mode);
    assert_eq!(
        c.backend.write_urls.first().map(String::as_str),
        Some("http://vmsingle:8429")
    );
    assert_eq!(
        c.backend.read_urls.first().map(String::as_str),
        Some("http://vmsingle:8429")
    );
    assert_eq!(c.server.listeners[0].addr, "0.0.0.0:8431".parse().unwrap());
    assert_eq!(c.auth.oidc_discovery_endpoints, vec![OIDC.to_string()]);
    assert_eq!(c.compat.licence_flags_seen, vec!["licenseFile"]);
}

#[test]
fn defaults() {
    let c = run("-read.url=http://vm:8428");
    assert_eq!(c.server.listeners[0].addr, "0.0.0.0:8431".parse().unwrap());
    assert!(
        !c.auth.enabled
            && !c.backend.cluster_mode
            && c.server.listeners[0].tls.is_none()
            && !c.limits.rate.enabled
    );
    assert!(c.backend.write_urls.is_empty());
    assert_eq!(c.auth.header, "authorization");
    assert!(!c.auth.allow_without_prefix);
    assert_eq!(c.auth.keys_refresh_interval, Duration::from_secs(300));
    assert_eq!(c.auth.min_refresh_interval, Duration::from_secs(10));
    assert_eq!(c.auth.clock_skew, Duration::ZERO);
    assert_eq!(c.auth.token_cache_size, 100_000);
    assert_eq!(c.log.format, LogFormat::Default);
    assert_eq!(c.log.level, LogLevel::Info);
    assert_eq!(c.server.max_graceful_shutdown, Duration::from_secs(7));
    assert_eq!(c.server.shutdown_delay, Duration::ZERO);
    assert_eq!(c.server.idle_conn_timeout, Duration::from_secs(60));
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.limits.max_request_body_size, 64 << 20);
    assert_eq!(c.limits.max_form_body_size, 1 << 20);
    assert_eq!(c.backend.timeout, Duration::from_secs(60));
    assert_eq!(c.limits.max_concurrent_requests, 0);
    assert_eq!(c.limits.max_concurrent_requests_per_tenant, 0);
    assert_eq!(c.backend.read_tls, UpstreamTls::default());
    assert_eq!(c.backend.write_tls, UpstreamTls::default());
    assert_eq!(c.server.metrics_auth_key, None);
    assert!(c.compat.licence_flags_seen.is_empty());
    assert!(!c.has_key_sources());
}

#[test]
fn every_default_parses_as_its_kind() {
    for spec in all_flags().filter(|spec| !spec.default.is_empty()) {
        let ok = match spec.kind {
            Kind::Bool => parse_bool(spec.default).is_ok(),
            Kind::Int => parse_usize(spec.default).is_ok(),
            Kind::Duration => parse_duration(spec.default).is_ok(),
            Kind::Size => parse_size(spec.default).is_ok(),
            Kind::String => true,
            Kind::Array | Kind::BoolArray => true,
        };
        assert!(ok, "bad default for -{}", spec.name);
    }
}

#[test]
fn flag_names_are_unique_and_cover_licence_and_command_line_only_lists() {
    let mut names: Vec<_> = all_flags().map(|spec| spec.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all_flags().count());
    for name in COMMAND_LINE_ONLY {
        assert!(lookup(name).is_some(), "{name}");
    }
}

#[test]
fn value_forms_separate_double_dash_and_last_wins() {
    let c = run("-read.url http://a:1 --write.url=http://b:2 --loggerLevel warn");
    assert_eq!(
        c.backend.read_urls.first().map(String::as_str),
        Some("http://a:1")
    );
    assert_eq!(
        c.backend.write_urls.first().map(String::as_str),
        Some("http://b:2")
    );
    assert_eq!(c.log.level, LogLevel::Warn);
    // -read.url is a list (several backends): repeats add, as for every array flag.
    let c = run("-read.url=http://a:1 -read.url=http://c:3");
    assert_eq!(c.backend.read_urls, ["http://a:1", "http://c:3"]);
}

#[test]
fn value_may_contain_equals_sign() {
    let c = run("-read.url=http://a:1 -metricsAuthKey=a=b");
    assert_eq!(
        c.server.metrics_auth_key,
        Some(Secret::Inline("a=b".into()))
    );
}

#[test]
fn booleans() {
    let c = run("-read.url=http://a -enable.auth --clusterMode -tls=false -logInvalidAuthTokens=1");
    assert!(
        c.auth.enabled
            && c.backend.cluster_mode
            && c.server.listeners[0].tls.is_none()
            && c.auth.log_invalid_tokens
    );
    let c = run("-read.url=http://a -enable.auth -enable.auth=false -clusterMode=T");
    assert!(!c.auth.enabled && c.backend.cluster_mode);
    let message = err("-read.url=http://a -enable.auth=yes");
    assert!(
        message.contains("-enable.auth") && message.contains("\"yes\""),
        "{message}"
    );
}

#[test]
fn bool_flag_does_not_consume_next_argument() {
    // The bare bool is true, and the following flag is still parsed as a flag.
    let c = run("-enable.auth -read.url=http://a");
    assert!(c.auth.enabled);
    let message = err("-read.url=http://a -enable.auth false");
    assert!(
        message.contains("unexpected argument \"false\""),
        "{message}"
    );
    assert!(message.contains("-enable.auth=false"), "{message}");
}

#[test]
fn arrays_split_on_commas_and_accumulate_repeats() {
    let (a, b, c) = (
        TempFile::new("a.pem"),
        TempFile::new("b.pem"),
        TempFile::new("c.pem"),
    );
    let line = format!(
        "-read.url=http://a -auth.publicKeyFiles={},{} -auth.publicKeyFiles={} -auth.issuers=x,,y -auth.audiences z",
        a.path(),
        b.path(),
        c.path()
    );
    let config = run(&line);
    assert_eq!(
        config.auth.public_key_files,
        vec![a.0.clone(), b.0.clone(), c.0.clone()]
    );
    assert_eq!(config.auth.issuers, vec!["x", "y"]);
    assert_eq!(config.auth.audiences, vec!["z"]);
    assert!(config.has_key_sources());
}

#[test]
fn inline_pem_public_keys() {
    let pem1 = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE+/abc=\n-----END PUBLIC KEY-----\n";
    let pem2 = pem1.replace("abc", "xyz");
    let args = vec![
        "-read.url=http://a".to_string(),
        format!("-auth.publicKeys={pem1},{pem2}"),
        "-auth.publicKeys".to_string(),
        pem1.to_string(),
    ];
    let Ok(Parsed::Run(c)) = parse(args, &no_env) else {
        panic!("parse failed");
    };
    assert_eq!(
        c.auth.public_keys,
        vec![pem1.to_string(), pem2, pem1.to_string()]
    );
    assert!(c.has_key_sources());
}

#[test]
fn url_arrays_are_validated() {
    let c = run("-read.url=http://a -auth.jwksEndpoints=https://idp/jwks,http://idp2:80/keys");
    assert_eq!(
        c.auth.jwks_endpoints,
        vec!["https://idp/jwks", "http://idp2:80/keys"]
    );
    let message = err("-read.url=http://a -auth.jwksEndpoints=https://idp/jwks,idp2/keys");
    assert_eq!(
        message,
        "invalid value \"idp2/keys\" for flag -auth.jwksEndpoints: missing scheme http:// or https://"
    );
}

fn env_from(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    }
}

#[test]
fn env_flags_with_prefix_and_command_line_priority() {
    let env = env_from(&[
        ("TG_read_url", "http://from-env:8481"),
        ("TG_write_url", "http://from-env:8480"),
        ("TG_clusterMode", "true"),
        ("TG_auth_issuers", "a,b"),
        ("TG_auth_clockSkew", "30s"),
        ("TG_version", "true"),
        ("read_url", "http://unprefixed:1"),
    ]);
    let args = words("-envflag.enable -envflag.prefix=TG_ -write.url=http://cli:8480");
    let Ok(Parsed::Run(c)) = parse(args, &env) else {
        panic!("parse failed");
    };
    assert_eq!(
        c.backend.read_urls.first().map(String::as_str),
        Some("http://from-env:8481")
    );
    assert_eq!(
        c.backend.write_urls.first().map(String::as_str),
        Some("http://cli:8480")
    );
    assert!(c.backend.cluster_mode);
    assert_eq!(c.auth.issuers, vec!["a", "b"]);
    assert_eq!(c.auth.clock_skew, Duration::from_secs(30));
}

#[test]
fn env_is_ignored_without_envflag_enable() {
    let env = env_from(&[
        ("read_url", "http://from-env:8481"),
        ("clusterMode", "true"),
    ]);
    let Ok(Parsed::Run(c)) = parse(words("-write.url=http://w"), &env) else {
        panic!("parse failed");
    };
    assert!(c.backend.read_urls.is_empty());
    assert!(!c.backend.cluster_mode);
    let Ok(Parsed::Run(c)) = parse(words("-write.url=http://w -envflag.enable"), &env) else {
        panic!("parse failed");
    };
    assert_eq!(
        c.backend.read_urls.first().map(String::as_str),
        Some("http://from-env:8481")
    );
    assert!(c.backend.cluster_mode);
}

#[test]
fn env_values_are_validated_and_errors_name_the_variable() {
    let env = env_from(&[("read_url", "vmselect:8481")]);
    let Err(FlagError(message)) = parse(words("-envflag.enable"), &env) else {
        panic!("should fail");
    };
    assert_eq!(
        message,
        "invalid value \"vmselect:8481\" for flag -read.url (from environment variable read_url): missing scheme http:// or https://"
    );
}

#[test]
fn unknown_flag_is_named() {
    assert_eq!(err("-read.url=http://a -foo"), "unknown flag -foo");
    assert_eq!(err("--foo=bar"), "unknown flag -foo");
    assert_eq!(
        err("-read.URL=http://a"),
        "unknown flag -read.URL; did you mean -read.url?"
    );
}

#[test]
fn bad_urls() {
    assert_eq!(
        err("-read.url=abc"),
        "invalid value \"abc\" for flag -read.url: missing scheme http:// or https://"
    );
    for (url, reason) in [
        ("ftp://x", "unsupported scheme"),
        ("http://", "missing host"),
        ("http:///path", "missing host"),
        ("http://:8080", "missing host"),
        ("http://user@", "missing host"),
        ("http://h:port", "invalid port"),
        ("http://h:99999", "out of range"),
        ("http://h:/", "invalid port"),
        ("http://[::1", "unterminated"),
        ("http://h/?a=b", "query"),
        ("http://h/x#f", "fragment"),
        ("http://h/a\tb", "spaces"),
    ] {
        let Err(FlagError(message)) = parse(vec![format!("-write.url={url}")], &no_env) else {
            panic!("{url:?} should be refused");
        };
        assert!(
            message.starts_with("invalid value ") && message.contains("for flag -write.url: "),
            "{message}"
        );
        assert!(message.contains(reason), "{url}: {message}");
    }
}

#[test]
fn good_urls_are_normalised() {
    let c = run("-read.url=HTTPS://vm.example:443/base// -write.url=http://[::1]:8480/");
    assert_eq!(
        c.backend.read_urls.first().map(String::as_str),
        Some("https://vm.example:443/base")
    );
    assert_eq!(
        c.backend.write_urls.first().map(String::as_str),
        Some("http://[::1]:8480")
    );
    let c = run("-read.url=http://user:pass@vm:8428");
    assert_eq!(
        c.backend.read_urls.first().map(String::as_str),
        Some("http://user:pass@vm:8428")
    );
}

#[test]
fn missing_files_are_refused_naming_flag_and_path() {
    for flag in [
        "auth.publicKeyFiles",
        "auth.hmacSecretFiles",
        "auth.tlsCAFile",
        "tlsCertFile",
        "tlsKeyFile",
        "read.tlsCAFile",
        "write.tlsKeyFile",
    ] {
        let message = err(&format!("-read.url=http://a -{flag}=/nonexistent/key.pem"));
        assert!(
            message.starts_with(&format!(
                "invalid value \"/nonexistent/key.pem\" for flag -{flag}: cannot access file"
            )),
            "{message}"
        );
    }
    let dir = std::env::temp_dir();
    let message = err(&format!(
        "-read.url=http://a -auth.publicKeyFiles={}",
        dir.display()
    ));
    assert!(message.contains("not a regular file"), "{message}");
}

#[test]
fn durations() {
    for (text, expected) in [
        ("7s", Duration::from_secs(7)),
        ("5m", Duration::from_secs(300)),
        ("1h30m", Duration::from_secs(5400)),
        ("500ms", Duration::from_millis(500)),
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("-0", Duration::ZERO),
        ("+2s", Duration::from_secs(2)),
        ("1.5s", Duration::from_millis(1500)),
        (".5s", Duration::from_millis(500)),
        ("1.s", Duration::from_secs(1)),
        ("5m0s", Duration::from_secs(300)),
        ("1us", Duration::from_micros(1)),
        ("1µs", Duration::from_micros(1)),
        ("1μs", Duration::from_micros(1)),
        ("3ns", Duration::from_nanos(3)),
        ("1.0000000000000000000001h", Duration::from_secs(3600)),
    ] {
        assert_eq!(parse_duration(text), Ok(expected), "{text}");
    }
    for text in [
        "",
        "abc",
        "5",
        "1x",
        "-1s",
        ".s",
        "s",
        "1s5",
        "1h 2m",
        "+",
        "-",
        "1..5s",
        "99999999999999999999999h",
    ] {
        assert!(parse_duration(text).is_err(), "{text:?}");
    }
    let c = run("-read.url=http://a -http.shutdownDelay=2s -auth.clockSkew 1m30s");
    assert_eq!(c.server.shutdown_delay, Duration::from_secs(2));
    assert_eq!(c.auth.clock_skew, Duration::from_secs(90));
    assert_eq!(
        err("-read.url=http://a -upstream.timeout=10"),
        "invalid value \"10\" for flag -upstream.timeout: expected a duration such as 500ms, 7s, 5m or 1h30m"
    );
    let message = err("-read.url=http://a -auth.keysRefreshInterval=0s");
    assert!(
        message.contains("-auth.keysRefreshInterval") && message.contains("greater than zero"),
        "{message}"
    );
    let c = run("-read.url=http://a -auth.minRefreshInterval=1500ms");
    assert_eq!(c.auth.min_refresh_interval, Duration::from_millis(1500));
    let message = err("-read.url=http://a -auth.minRefreshInterval=0s");
    assert!(
        message.contains("-auth.minRefreshInterval") && message.contains("greater than zero"),
        "{message}"
    );
}

#[test]
fn sizes() {
    for (text, expected) in [
        ("0", 0),
        ("1048576", 1_048_576),
        ("512KB", 512_000),
        ("64MiB", 64 << 20),
        ("64mib", 64 << 20),
        ("2GB", 2_000_000_000),
        ("1GiB", 1 << 30),
        ("1TiB", 1 << 40),
        ("1.5MB", 1_500_000),
        ("1.5KiB", 1536),
    ] {
        assert_eq!(parse_size(text), Ok(expected), "{text}");
    }
    for text in [
        "",
        "MB",
        "abc",
        "-1",
        "-1MB",
        "1XB",
        "1 MB",
        "inf",
        "NaN",
        "1e30TB",
        "99999999999999999999",
    ] {
        assert!(parse_size(text).is_err(), "{text:?}");
    }
    let c = run("-read.url=http://a -maxRequestBodySize=32MB -maxFormBodySize 4KiB");
    assert_eq!(
        (c.limits.max_request_body_size, c.limits.max_form_body_size),
        (32_000_000, 4096)
    );
    let message = err("-read.url=http://a -maxRequestBodySize=lots");
    assert!(
        message.starts_with("invalid value \"lots\" for flag -maxRequestBodySize: "),
        "{message}"
    );
}

#[test]
fn integers() {
    let c = run("-read.url=http://a -maxConcurrentRequests=100 -maxConcurrentRequestsPerTenant 10 -auth.tokenCacheSize=0");
    assert_eq!(c.limits.max_concurrent_requests, 100);
    assert_eq!(c.limits.max_concurrent_requests_per_tenant, 10);
    assert_eq!(c.auth.token_cache_size, 0);
    let message = err("-read.url=http://a -maxConcurrentRequests=-1");
    assert!(
        message.contains("-maxConcurrentRequests") && message.contains("non-negative"),
        "{message}"
    );
    assert!(
        err("-read.url=http://a -auth.tokenCacheSize=99999999999999999999999")
            .contains("out of range")
    );
    assert_eq!(run("-read.url=http://a").server.workers, 0);
    assert_eq!(run("-read.url=http://a -http.workers=1").server.workers, 1);
    assert!(err("-read.url=http://a -http.workers=5000").contains("at most 1024"));
}

#[test]
fn positional_arguments_are_refused() {
    assert!(err("-read.url=http://a extra").starts_with("unexpected argument \"extra\""));
    assert!(err("-read.url=http://a -- -tls").starts_with("unexpected argument \"-tls\""));
    assert!(err("-").starts_with("unexpected argument \"-\""));
    // `--` alone just ends the flags.
    assert!(!run("-read.url=http://a --").backend.read_urls.is_empty());
}

#[test]
fn bad_flag_syntax_and_missing_argument() {
    assert_eq!(err("---read.url=x"), "bad flag syntax: ---read.url=x");
    assert_eq!(err("-=x"), "bad flag syntax: -=x");
    assert_eq!(err("-read.url"), "flag needs an argument: -read.url");
}

#[test]
fn help_and_version() {
    for line in [
        "-help",
        "-h",
        "--help",
        "-read.url=http://a -help extra",
        "-h=false",
    ] {
        match try_parse(line) {
            Ok(Parsed::Help(text)) => assert_eq!(text, help_text()),
            other => panic!("{line}: {other:?}"),
        }
    }
    // An unknown flag before -help is still reported, as in Go.
    assert_eq!(err("-foo -help"), "unknown flag -foo");
    assert!(matches!(try_parse("-version"), Ok(Parsed::Version)));
    assert!(matches!(try_parse("--version=true"), Ok(Parsed::Version)));
    assert!(matches!(
        try_parse("-version=false -read.url=http://a"),
        Ok(Parsed::Run(_))
    ));
}

#[test]
fn help_text_lists_every_flag_sorted_in_go_format() {
    let text = help_text();
    assert!(text.starts_with("Usage of tenantgate:\n  -"));
    let names: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("  -"))
        .map(|line| line.split(' ').next().unwrap_or(line))
        .collect();
    let mut expected: Vec<&str> = all_flags().map(|spec| spec.name).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
    assert!(text.contains("  -auth.httpHeader string\n    \tHTTP header name to look for the JWT authorization token (default \"Authorization\")\n"));
    assert!(text.contains("  -enable.auth\n    \t"));
    assert!(text.contains("  -http.maxGracefulShutdownDuration duration\n    \t"));
    assert!(text.contains("(default 7s)\n"));
    assert!(text.contains("(default \":8431\")\n"));
    assert!(text.contains("  -auth.publicKeyFiles array\n    \t"));
    assert!(text.contains(
        "\n    \tSupports an array of values separated by comma or specified via multiple flags.\n"
    ));
    assert!(text.contains("(default 64MiB)\n"));
    assert!(
        !text.contains("(default false)")
            && !text.contains("(default 0s)")
            && !text.contains("(default \"\")")
    );
}

#[test]
fn listen_addresses() {
    for (text, expected) in [
        (":8431", "0.0.0.0:8431"),
        ("0.0.0.0:8431", "0.0.0.0:8431"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("[::1]:8431", "[::1]:8431"),
        ("[::]:80", "[::]:80"),
        ("localhost:9000", "127.0.0.1:9000"),
    ] {
        assert_eq!(
            parse_listen_addr(text, false),
            Ok(expected.parse().unwrap()),
            "{text}"
        );
    }
    for text in [
        "",
        "8431",
        ":",
        ":http",
        ":+80",
        ":65536",
        "example.com:80",
        "::1:8431",
        "[::1]",
        "[x]:80",
        "1.2.3:80",
    ] {
        assert!(parse_listen_addr(text, false).is_err(), "{text:?}");
    }
    let message = err("-read.url=http://a -httpListenAddr=gateway:8431");
    assert!(
        message.starts_with(
            "invalid value \"gateway:8431\" for flag -httpListenAddr: host \"gateway\""
        ),
        "{message}"
    );
}

#[test]
fn auth_header() {
    let c = run(
        "-read.url=http://a -auth.httpHeader=X-Access-Token -auth.httpHeaderAllowWithoutPrefix",
    );
    assert_eq!(c.auth.header, "x-access-token");
    assert!(c.auth.allow_without_prefix);
    let message = err("-read.url=http://a -auth.httpHeader=Bad:Header");
    assert!(
        message.contains("-auth.httpHeader") && message.contains("not a valid HTTP header name"),
        "{message}"
    );
    assert!(err("-read.url=http://a -auth.httpHeader=").contains("-auth.httpHeader"));
}

#[test]
fn logger_flags() {
    let c = run("-read.url=http://a -loggerFormat=json -loggerLevel=error");
    assert_eq!(
        (c.log.format, c.log.level),
        (LogFormat::Json, LogLevel::Error)
    );
    let c = run("-read.url=http://a -loggerLevel=PANIC -loggerFormat=default");
    assert_eq!(
        (c.log.format, c.log.level),
        (LogFormat::Default, LogLevel::Panic)
    );
    assert!(err("-read.url=http://a -loggerFormat=xml").contains("-loggerFormat"));
    assert!(err("-read.url=http://a -loggerLevel=DEBUG").contains("-loggerLevel"));
}

#[test]
fn tls_requires_cert_and_key() {
    assert_eq!(
        err("-read.url=http://a -tls"),
        "-tls requires -tlsCertFile and -tlsKeyFile; missing -tlsCertFile and -tlsKeyFile"
    );
    let cert = TempFile::new("cert.pem");
    let key = TempFile::new("key.pem");
    assert_eq!(
        err(&format!(
            "-read.url=http://a -tls -tlsCertFile={}",
            cert.path()
        )),
        "-tls requires -tlsCertFile and -tlsKeyFile; missing -tlsKeyFile"
    );
    let c = run(&format!(
        "-read.url=http://a -tls -tlsCertFile={} -tlsKeyFile={}",
        cert.path(),
        key.path()
    ));
    let tls = c.server.listeners[0].tls.clone().unwrap();
    assert_eq!(tls.cert_file, cert.0);
    assert_eq!(tls.key_file, key.0);
}

#[test]
fn upstream_tls() {
    let (ca, cert, key) = (
        TempFile::new("ca"),
        TempFile::new("cert"),
        TempFile::new("key"),
    );
    let c = run(&format!(
        "-read.url=https://a -read.tlsCAFile={} -read.tlsCertFile={} -read.tlsKeyFile={} -read.tlsServerName=vm -write.url=https://b -write.tlsInsecureSkipVerify",
        ca.path(),
        cert.path(),
        key.path()
    ));
    assert_eq!(c.backend.read_tls.ca_file.as_deref(), Some(ca.0.as_path()));
    assert_eq!(
        c.backend.read_tls.cert_file.as_deref(),
        Some(cert.0.as_path())
    );
    assert_eq!(
        c.backend.read_tls.key_file.as_deref(),
        Some(key.0.as_path())
    );
    assert_eq!(c.backend.read_tls.server_name.as_deref(), Some("vm"));
    assert!(!c.backend.read_tls.insecure_skip_verify);
    assert!(c.backend.write_tls.insecure_skip_verify);
    assert_eq!(
        err(&format!(
            "-write.url=https://b -write.tlsCertFile={}",
            cert.path()
        )),
        "-write.tlsCertFile and -write.tlsKeyFile must be given together"
    );
}

#[test]
fn rate_limit_needs_its_config_and_datasource_and_backends_are_required() {
    assert!(err("-read.url=http://a -enable.rateLimit").contains("-datasource.url"));
    let limits = TempFile::new("limits.yml");
    let message = err(&format!(
        "-read.url=http://a -enable.rateLimit -datasource.url=http://vm:8428 -ratelimit.config={}x",
        limits.path()
    ));
    assert!(
        message.contains("-ratelimit.config") && message.contains("cannot access file"),
        "{message}"
    );
    let c = run(&format!(
        "-read.url=http://a -enable.rateLimit -datasource.url=http://vm:8428 -ratelimit.config={}",
        limits.path()
    ));
    assert!(c.limits.rate.enabled && c.limits.rate.share_usage);
    assert_eq!(
        c.limits.rate.config,
        Some(LimitsSource::File(limits.0.clone()))
    );
    let c = run("-read.url=http://a -enable.rateLimit=false -ratelimit.config=/etc/rl.yml -datasource.url=http://vm:8428");
    assert_eq!(
        c.limits.rate.config,
        Some(LimitsSource::File(PathBuf::from("/etc/rl.yml")))
    );
    assert_eq!(c.datasource.url.as_deref(), Some("http://vm:8428"));
    let c = run("-read.url=http://a -ratelimit.config=https://cfg/limits.yml");
    assert_eq!(
        c.limits.rate.config,
        Some(LimitsSource::Url("https://cfg/limits.yml".into()))
    );
    assert_eq!(err(""), "tenantgate needs -read.url and/or -write.url");
    assert_eq!(
        err("-read.url="),
        "tenantgate needs -read.url and/or -write.url"
    );
}

#[test]
fn licence_flags_are_accepted_but_values_checked() {
    let c =
        run("-read.url=http://a -license=abc -licenseFile.reloadInterval=1h -license.forceOffline");
    assert_eq!(
        c.compat.licence_flags_seen,
        vec![
            "license",
            "license.forceOffline",
            "licenseFile.reloadInterval"
        ]
    );
    assert!(err("-read.url=http://a -licenseFile.reloadInterval=soon")
        .contains("-licenseFile.reloadInterval"));
}

#[test]
fn debug_redacts_metrics_auth_key() {
    let c = run("-read.url=http://a -metricsAuthKey=s3cret");
    assert_eq!(
        c.server.metrics_auth_key,
        Some(Secret::Inline("s3cret".into()))
    );
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("s3cret") && debug.contains("secret"),
        "{debug}"
    );
    assert!(c.flags_page().contains("-metricsAuthKey=\"secret\"\n"));
}

#[test]
fn flag_error_displays_its_message() {
    let error = FlagError("unknown flag -foo".to_string());
    assert_eq!(error.to_string(), "unknown flag -foo");
    let _: &dyn std::error::Error = &error;
}

#[test]
fn odd_input_never_panics() {
    let odd = [
        "",
        "-",
        "--",
        "---",
        "-=",
        "--=",
        "-=-",
        "=",
        "-é",
        "-read.url=é",
        "-read.url=http://é",
        "-read.url=http://[",
        "-read.url=http://[]",
        "-read.url=http://@",
        "-httpListenAddr=[",
        "-httpListenAddr=]:1",
        "-httpListenAddr=[::1]:",
        "-auth.clockSkew=µ",
        "-auth.clockSkew=1µ",
        "-auth.clockSkew=.",
        "-auth.clockSkew=1.µs",
        "-maxRequestBodySize=KiB",
        "-maxRequestBodySize=é",
        "-maxRequestBodySize=1.e",
        "-loggerLevel=ı",
        "-auth.httpHeader=é",
        "-envflag.enable",
        "-auth.publicKeyFiles=,,,",
        "-auth.publicKeyFiles=\u{0}",
    ];
    let env = |_: &str| Some("é\u{0}".to_string());
    for a in odd {
        for b in odd {
            let _ = parse(vec![a.to_string(), b.to_string()], &no_env);
            let _ = parse(vec![a.to_string(), b.to_string()], &env);
        }
    }
}

#[test]
fn backend_types_and_tenant_headers() {
    let c = run("-read.url=http://p:9090 -read.backendType=prometheus -write.url=http://m/api/v1/push -write.backendType=prometheus -backend.tenantHeader=X-Scope-OrgID -backend.tenantHeaderFormat=account");
    assert_eq!(c.backend.read_type, BackendType::Prometheus);
    assert_eq!(c.backend.write_type, BackendType::Prometheus);
    assert_eq!(
        c.backend.tenant_header,
        Some(TenantHeader {
            name: "x-scope-orgid".into(),
            format: TenantFormat::Account
        })
    );
    let d = run("-read.url=http://v:8428");
    assert_eq!(d.backend.read_type, BackendType::VictoriaMetrics);
    assert_eq!(d.backend.tenant_header, None);
    assert!(err("-read.backendType=thanos").contains("victoriametrics or prometheus"));
    assert!(err("-backend.tenantHeaderFormat=project").contains("account:project or account"));
    assert!(err("-clusterMode -read.backendType=prometheus").contains("-backend.tenantHeader"));
    assert!(err("-backend.tenantHeader=Authorization").contains("identities"));
    assert!(err("-backend.tenantHeader=bad\u{1}name").contains("not a valid HTTP header name"));
}

#[test]
fn backend_lists() {
    let c = run("-read.url=http://a:1,https://b:2 -read.url=http://c:3 -write.url=http://w:1");
    assert_eq!(
        c.backend.read_urls,
        ["http://a:1", "https://b:2", "http://c:3"]
    );
    assert_eq!(c.backend.write_urls, ["http://w:1"]);
    assert_eq!(c.backend.balance.policy, Policy::LeastLoaded);
    assert_eq!(c.backend.balance.fail_timeout, Duration::from_secs(3));
    assert!(c.backend.balance.retry_statuses.is_empty());
    assert_eq!(c.backend.balance.max_body_to_retry, 4 << 20);
    let c = run("-read.url=http://a -loadBalancingPolicy=first_available -retryStatusCodes=502,503 -failTimeout=500ms");
    assert_eq!(c.backend.balance.policy, Policy::FirstAvailable);
    assert_eq!(c.backend.balance.retry_statuses, [502, 503]);
    assert_eq!(c.backend.balance.fail_timeout, Duration::from_millis(500));
    for (args, named) in [
        ("-read.url=http://a:1,", "-read.url has an empty element"),
        (
            "-read.url=http://a:1,,http://b:2",
            "-read.url has an empty element",
        ),
        (
            "-write.url=http://a:1,b:2",
            "for flag -write.url: missing scheme",
        ),
        ("-write.url=http://a:1,http://", "missing host"),
        (
            "-read.url=http://a:1,http://a:1",
            "-read.url lists \"http://a:1\" twice",
        ),
        ("-read.url=http://a/x,http://b/y", "different paths"),
        (
            "-read.url=http://a -loadBalancingPolicy=random",
            "-loadBalancingPolicy",
        ),
        (
            "-read.url=http://a -failTimeout=0s",
            "-failTimeout must be positive",
        ),
        (
            "-read.url=http://a -retryStatusCodes=429",
            "429 is a tenant's limit",
        ),
        (
            "-read.url=http://a -retryStatusCodes=5xx",
            "-retryStatusCodes",
        ),
        (
            "-read.url=http://a -retryStatusCodes=700",
            "-retryStatusCodes",
        ),
    ] {
        let message = err(args);
        assert!(message.contains(named), "{args}: {message}");
    }
    let many: Vec<String> = (0..65).map(|i| format!("http://h{i}:1")).collect();
    assert!(err(&format!("-read.url={}", many.join(","))).contains("at most 64"));
}

#[test]
fn introspection_and_id_token_flags() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    let s = secret.display();
    let c = run(&format!("-enable.auth -read.url=http://a -auth.introspectionEndpoint=https://idp/introspect -auth.introspectionClientID=gw -auth.introspectionClientSecretFile={s}"));
    let i = c.auth.introspection.unwrap();
    assert_eq!(i.endpoint.as_deref(), Some("https://idp/introspect"));
    assert_eq!(i.cache_ttl, Duration::from_secs(60));
    // From the discovery document.
    let c = run(&format!("-enable.auth -read.url=http://a -auth.oidcDiscoveryEndpoints=https://idp/.well-known/openid-configuration -auth.introspectionClientID=gw -auth.introspectionClientSecretFile={s}"));
    assert_eq!(c.auth.introspection.unwrap().endpoint, None);
    let c = run("-enable.auth -read.url=http://a -auth.jwksEndpoints=https://idp/jwks -auth.idTokenHeader=X-ID-Token");
    assert_eq!(c.auth.id_token_header.as_deref(), Some("x-id-token"));
    for (args, named) in [
        (format!("-enable.auth -read.url=http://a -auth.introspectionClientID=gw -auth.introspectionClientSecretFile={s}"), "needs -auth.introspectionEndpoint"),
        ("-enable.auth -read.url=http://a -auth.introspectionEndpoint=https://idp/i -auth.introspectionClientID=gw".to_string(), "needs -auth.introspectionClientID and -auth.introspectionClientSecretFile"),
        (format!("-read.url=http://a -auth.introspectionEndpoint=https://idp/i -auth.introspectionClientID=gw -auth.introspectionClientSecretFile={s}"), "need -enable.auth"),
        ("-enable.auth -read.url=http://a -auth.idTokenHeader=X-ID-Token".to_string(), "needs a key source"),
        ("-enable.auth -read.url=http://a -auth.jwksEndpoints=https://idp/jwks -auth.idTokenHeader=Authorization".to_string(), "must differ"),
        (format!("-enable.auth -read.url=http://a -auth.introspectionEndpoint=https://idp/i -auth.introspectionClientID=gw -auth.introspectionClientSecretFile={s} -auth.introspectionCacheTTL=0s"), "-auth.introspectionCacheTTL"),
    ] {
        let message = err(&args);
        assert!(message.contains(named), "{args}: {message}");
    }
}
