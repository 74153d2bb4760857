//! What can be checked of `deploy/` without a container engine: every file parses, the command lines in
//! the compose file and the systemd unit parse with tenantgate's own flag parser (and vmagent's command line
//! passes vmagent's own `-dryRun`), the files agree with each other (realm name, clients, secrets, service
//! names, ports), the Keycloak realm grants what the demo's IdP grants (read back with tenantgate's claim
//! parser), and the Dockerfile builds with the README's build command as a non-root image. Building and
//! running the images needs Docker, which this machine does not have.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{deps, repo_root, tempdir};
use serde_json::{json, Value};
use tenantgate::auth::claims::{parse_claims, Access};
use tenantgate::flags::{self, Config, Parsed};

fn deploy(path: &str) -> PathBuf {
    repo_root().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_saphyr::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// A plain INI reader, as strict as Grafana's: `[section]`, `key = value`, `;` or `#` comments. Anything
/// else, or a key given twice in a section, fails.
fn ini(path: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for (n, line) in read(path).lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            assert!(
                !section.is_empty(),
                "{}:{}: empty section",
                path.display(),
                n + 1
            );
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}:{}: not key = value: {line}", path.display(), n + 1));
        assert!(
            !section.is_empty(),
            "{}:{}: key outside a section",
            path.display(),
            n + 1
        );
        let old = out
            .entry(section.clone())
            .or_default()
            .insert(key.trim().to_string(), value.trim().to_string());
        assert!(
            old.is_none(),
            "{}:{}: {} given twice",
            path.display(),
            n + 1,
            key.trim()
        );
    }
    out
}

/// tenantgate's own parser on a command line (no environment), which must ask to run.
fn tenantgate_config(args: &[String]) -> Config {
    match flags::parse(args.iter().cloned(), &|_| None) {
        Ok(Parsed::Run(config)) => config,
        other => panic!("{args:?} does not parse as a tenantgate command line: {other:?}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_string()
        })
        .collect()
}

fn realm() -> Value {
    json_file(&deploy("keycloak/monitoring-realm.json"))
}

/// `http://keycloak:8080/realms/<realm>`, as the containers reach Keycloak.
fn realm_url() -> String {
    format!(
        "http://keycloak:8080/realms/{}",
        realm()["realm"].as_str().unwrap()
    )
}

fn client(realm: &Value, id: &str) -> Value {
    realm["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clientId"] == id)
        .unwrap_or_else(|| panic!("the realm has no client {id}"))
        .clone()
}

fn compose() -> Value {
    yaml(&deploy("docker-compose.yml"))
}

fn service_command(compose: &Value, service: &str) -> Vec<String> {
    strings(&compose["services"][service]["command"])
}

/// A `vm_access` claim as Keycloak puts it into an access token, read by tenantgate.
fn access_of(vm_access: Value) -> Access {
    let payload = json!({ "exp": 4_000_000_000u64, "vm_access": vm_access });
    parse_claims(payload.to_string().as_bytes())
        .unwrap()
        .access
        .expect("vm_access")
}

#[test]
fn every_yaml_json_and_ini_file_under_deploy_parses() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo_root().join("deploy"), &mut files);
    let mut checked = Vec::new();
    for path in &files {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yml" | "yaml") => {
                assert!(yaml(path).is_object(), "{}", path.display());
            }
            Some("json") => {
                assert!(json_file(path).is_object(), "{}", path.display());
            }
            Some("ini") => {
                assert!(!ini(path).is_empty(), "{}", path.display());
            }
            _ => continue,
        }
        checked.push(
            path.strip_prefix(repo_root())
                .unwrap()
                .display()
                .to_string(),
        );
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "deploy/docker-compose.yml",
            "deploy/grafana/dashboards/tenantgate.json",
            "deploy/grafana/grafana.ini",
            "deploy/grafana/provisioning/dashboards/tenantgate.yml",
            "deploy/grafana/provisioning/datasources/tenantgate.yml",
            "deploy/keycloak/monitoring-realm.json",
            "deploy/vmagent/scrape.yml",
            "deploy/vmalert/tenantgate-rules.yml",
        ]
    );
}

#[test]
fn grafana_loads_the_dashboard_from_where_compose_mounts_it() {
    let compose = compose();
    let volumes = strings(&compose["services"]["grafana"]["volumes"]);
    let provider = yaml(&deploy("grafana/provisioning/dashboards/tenantgate.yml"));
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    for mount in [
        "./grafana/provisioning/dashboards:/etc/grafana/provisioning/dashboards:ro".to_string(),
        format!("./grafana/dashboards:{path}:ro"),
    ] {
        assert!(volumes.contains(&mount), "{mount} not in {volumes:?}");
    }
    let dashboard = json_file(&deploy("grafana/dashboards/tenantgate.json"));
    assert_eq!(dashboard["uid"], "tenantgate");
}

#[test]
fn compose_runs_vmgateways_command_lines_with_tenantgate_and_they_parse() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    let discovery = format!("{}/.well-known/openid-configuration", realm_url());
    // Every backend URL must name a service of the file and the port it listens on.
    let listens = |url: &str| {
        let host_port = url.trim_start_matches("http://");
        let (host, port) = host_port.split_once(':').unwrap();
        let command = service_command(&compose, host);
        assert!(
            command.contains(&format!("-httpListenAddr=:{port}")),
            "{url}: service {host} listens elsewhere: {command:?}"
        );
    };
    for (service, cluster) in [("tenantgate-cluster", true), ("tenantgate-single", false)] {
        assert_eq!(services[service]["image"], "tenantgate:latest", "{service}");
        let config = tenantgate_config(&service_command(&compose, service));
        assert!(config.auth.enabled, "{service}");
        assert_eq!(config.backend.cluster_mode, cluster, "{service}");
        assert_eq!(
            config.auth.oidc_discovery_endpoints,
            vec![discovery.clone()]
        );
        assert_eq!(config.server.listeners[0].addr.port(), 8431);
        assert!(
            config.server.listeners[0].addr.ip().is_unspecified(),
            "{service} must listen beyond the container"
        );
        let (read, write) = (config.backend.read_urls, config.backend.write_urls);
        for url in read.iter().chain(&write) {
            listens(url);
        }
        if cluster {
            // Two replicas of each, balanced by tenantgate.
            assert_eq!(
                (read, write),
                (
                    vec![
                        "http://vmselect-1:8481".to_string(),
                        "http://vmselect-2:8481".into()
                    ],
                    vec![
                        "http://vminsert-1:8480".to_string(),
                        "http://vminsert-2:8480".into()
                    ]
                )
            );
            assert_eq!(config.backend.balance.retry_statuses, [502, 503]);
        } else {
            assert_eq!(read, write);
        }
    }
    let build = &services["tenantgate-cluster"]["build"];
    assert_eq!(build["context"], "..");
    assert_eq!(build["dockerfile"], "deploy/Dockerfile");
    assert!(deploy("Dockerfile").is_file());
    // The realm file is what Keycloak imports.
    let volumes = strings(&services["keycloak"]["volumes"]);
    assert!(volumes
        .iter()
        .any(|v| v.starts_with("./keycloak/monitoring-realm.json:/opt/keycloak/data/import/")));
    assert!(strings(&services["keycloak"]["command"]).contains(&"--import-realm".to_string()));
}

#[test]
fn compose_vmagent_command_passes_vmagents_own_dry_run() {
    let compose = compose();
    let vmagent = &compose["services"]["vmagent"];
    // Container paths of the mounted files, mapped back to the repository.
    let mounts: Vec<(String, String)> = strings(&vmagent["volumes"])
        .iter()
        .filter_map(|v| {
            let mut parts = v.split(':');
            let (src, dst) = (parts.next()?, parts.next()?);
            src.starts_with("./")
                .then(|| (dst.to_string(), deploy(&src[2..]).display().to_string()))
        })
        .collect();
    let queue = tempdir();
    let mut args: Vec<String> = service_command(&compose, "vmagent")
        .into_iter()
        .map(|mut arg| {
            for (dst, src) in &mounts {
                arg = arg.replace(dst.as_str(), src);
            }
            if arg.starts_with("-remoteWrite.tmpDataPath=") {
                arg = format!("-remoteWrite.tmpDataPath={}", queue.path().display());
            }
            arg
        })
        .collect();
    let urls: Vec<&String> = args
        .iter()
        .filter(|a| a.starts_with("-remoteWrite.url="))
        .collect();
    assert_eq!(
        urls,
        [
            "-remoteWrite.url=http://tenantgate-single:8431/api/v1/write",
            "-remoteWrite.url=http://tenantgate-cluster:8431/api/v1/write"
        ]
    );
    // Each OAuth2 array has one entry per URL, with the realm's client, secret and token endpoint.
    let token_url = format!("{}/protocol/openid-connect/token", realm_url());
    let value = |flag: &str| -> Vec<String> {
        let prefix = format!("-remoteWrite.oauth2.{flag}=");
        let given: Vec<&String> = args.iter().filter(|a| a.starts_with(&prefix)).collect();
        assert_eq!(given.len(), 1, "{flag}");
        given[0][prefix.len()..]
            .split(',')
            .map(String::from)
            .collect()
    };
    assert_eq!(value("clientID"), ["vmagent", "vmagent"]);
    assert_eq!(value("tokenUrl"), [token_url.clone(), token_url]);
    let secret_files = value("clientSecretFile");
    assert_eq!(secret_files.len(), 2);
    let vmagent_client = client(&realm(), "vmagent");
    for file in secret_files {
        assert_eq!(read(Path::new(&file)).trim(), vmagent_client["secret"]);
    }
    args.insert(0, "-dryRun".into());
    let out = Command::new(deps().get("TG_VMAGENT"))
        .args(&args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("all the configs are ok"),
        "vmagent -dryRun {args:?}:\n{text}"
    );
}

#[test]
fn vmagent_labels_victoria_metrics_dev_and_the_gateways_admin() {
    let scrape = yaml(&deploy("vmagent/scrape.yml"));
    let mut teams = BTreeMap::new();
    for job in scrape["scrape_configs"].as_array().unwrap() {
        let relabel = &job["metric_relabel_configs"][0];
        assert_eq!(relabel["target_label"], "team");
        for target in strings(&job["static_configs"][0]["targets"]) {
            teams.insert(target, relabel["replacement"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        teams,
        BTreeMap::from([
            ("vmsingle:8428".to_string(), "dev".to_string()),
            ("tenantgate-single:8431".to_string(), "admin".to_string()),
            ("tenantgate-cluster:8431".to_string(), "admin".to_string()),
        ])
    );
}

#[test]
fn grafana_data_sources_forward_oauth_identity_by_post_to_both_gateways() {
    let ds = yaml(&deploy("grafana/provisioning/datasources/tenantgate.yml"));
    assert_eq!(ds["apiVersion"], 1);
    let mut urls = Vec::new();
    for source in ds["datasources"].as_array().unwrap() {
        assert_eq!(source["type"], "prometheus", "{source}");
        assert_eq!(source["access"], "proxy", "{source}");
        assert_eq!(source["jsonData"]["oauthPassThru"], true, "{source}");
        assert_eq!(source["jsonData"]["httpMethod"], "POST", "{source}");
        urls.push(source["url"].as_str().unwrap().to_string());
    }
    assert_eq!(
        urls,
        [
            "http://tenantgate-cluster:8431",
            "http://tenantgate-single:8431"
        ]
    );
    let compose = compose();
    let volumes = strings(&compose["services"]["grafana"]["volumes"]);
    assert!(volumes.contains(
        &"./grafana/provisioning/datasources:/etc/grafana/provisioning/datasources:ro".to_string()
    ));
    assert!(volumes.contains(&"./grafana/grafana.ini:/etc/grafana/grafana.ini:ro".to_string()));
}

#[test]
fn grafana_signs_in_with_the_realms_grafana_client() {
    let ini = ini(&deploy("grafana/grafana.ini"));
    let oauth = &ini["auth.generic_oauth"];
    let realm = realm();
    let grafana = client(&realm, "grafana");
    assert_eq!(oauth["enabled"], "true");
    assert_eq!(oauth["client_id"], "grafana");
    assert_eq!(oauth["client_secret"], grafana["secret"]);
    let oidc = format!(
        "/realms/{}/protocol/openid-connect/",
        realm["realm"].as_str().unwrap()
    );
    assert_eq!(
        oauth["auth_url"],
        format!("http://localhost:8080{oidc}auth"),
        "the browser reaches Keycloak on the published port"
    );
    assert_eq!(
        oauth["token_url"],
        format!("http://keycloak:8080{oidc}token")
    );
    assert_eq!(
        oauth["api_url"],
        format!("http://keycloak:8080{oidc}userinfo")
    );
    // The realm's client asks for PKCE, so Grafana must use it; refresh keeps forwarded tokens valid.
    assert_eq!(grafana["attributes"]["pkce.code.challenge.method"], "S256");
    assert_eq!(oauth["use_pkce"], "true");
    assert_eq!(oauth["use_refresh_token"], "true");
    let redirect = format!("{}/login/generic_oauth", ini["server"]["root_url"]);
    assert_eq!(strings(&grafana["redirectUris"]), [redirect]);
    // One issuer whichever way a token was fetched.
    let env = &compose()["services"]["keycloak"]["environment"];
    assert_eq!(env["KC_HOSTNAME"], "http://localhost:8080");
}

#[test]
fn keycloak_realm_grants_what_the_demo_grants() {
    let realm = realm();
    // People: vm_access as a user attribute, put into access tokens as JSON by the grafana client's mapper.
    let grafana = client(&realm, "grafana");
    let mapper = &grafana["protocolMappers"][0];
    assert_eq!(mapper["protocolMapper"], "oidc-usermodel-attribute-mapper");
    let config = &mapper["config"];
    assert_eq!(config["user.attribute"], "vm_access");
    assert_eq!(config["claim.name"], "vm_access");
    assert_eq!(config["jsonType.label"], "JSON");
    assert_eq!(config["access.token.claim"], "true");
    assert_eq!(grafana["standardFlowEnabled"], true);
    let user = |name: &str| -> Access {
        let u = realm["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == name)
            .unwrap_or_else(|| panic!("no user {name}"));
        assert_eq!(u["credentials"][0]["value"], format!("{name}-password"));
        let attr = strings(&u["attributes"]["vm_access"]);
        assert_eq!(attr.len(), 1);
        access_of(serde_json::from_str(&attr[0]).unwrap())
    };
    let dev = user("dev");
    assert_eq!(dev.tenant.to_string(), "0:1");
    assert_eq!(dev.extra_labels, [("team".to_string(), "dev".to_string())]);
    assert!(dev.mode.read && dev.mode.write);
    let admin = user("admin");
    assert_eq!(admin.tenant.to_string(), "0:0");
    assert_eq!(
        admin.extra_labels,
        [("team".to_string(), "admin".to_string())]
    );
    // Only administrators may see or change a person's grant; people cannot widen their own.
    let profile_components =
        &realm["components"]["org.keycloak.userprofile.UserProfileProvider"][0];
    let profile: Value = serde_json::from_str(
        profile_components["config"]["kc.user.profile.config"][0]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let attribute = profile["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "vm_access")
        .expect("vm_access in the user profile");
    assert_eq!(attribute["permissions"]["edit"], json!(["admin"]));
    // vmagent: client credentials (a service account) with a fixed grant for tenant 0:0.
    let vmagent = client(&realm, "vmagent");
    assert_eq!(vmagent["serviceAccountsEnabled"], true);
    assert_eq!(vmagent["standardFlowEnabled"], false);
    let mapper = &vmagent["protocolMappers"][0];
    assert_eq!(mapper["protocolMapper"], "oidc-hardcoded-claim-mapper");
    assert_eq!(mapper["config"]["jsonType.label"], "JSON");
    assert_eq!(mapper["config"]["access.token.claim"], "true");
    let agent =
        access_of(serde_json::from_str(mapper["config"]["claim.value"].as_str().unwrap()).unwrap());
    assert_eq!(agent.tenant.to_string(), "0:0");
    assert!(agent.extra_labels.is_empty());
}

#[test]
fn dockerfile_builds_with_the_readme_build_command_into_a_small_non_root_image() {
    let readme = read(&repo_root().join("README.md"));
    let build = readme
        .lines()
        .find(|l| l.starts_with("cargo build"))
        .expect("the README's build command");
    let dockerfile = read(&deploy("Dockerfile"));
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let stages: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "multi-stage: {stages:?}");
    assert!(stages[0].starts_with("FROM rust:") && stages[0].ends_with(" AS build"));
    assert!(
        stages[1].contains("distroless") || stages[1].contains("slim"),
        "{}",
        stages[1]
    );
    let runs: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("RUN "))
        .collect();
    assert_eq!(
        runs,
        [build],
        "the builder runs exactly the README's build step"
    );
    let final_stage = &lines[lines.iter().position(|l| l == stages[1]).unwrap()..];
    assert!(final_stage
        .iter()
        .any(|l| l.starts_with("COPY --from=build ") && l.contains("target/release/tenantgate")));
    let user = final_stage
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the final stage");
    assert!(
        !matches!(user.split(':').next(), Some("root" | "0")),
        "runs as {user}"
    );
    assert!(final_stage.contains(&r#"ENTRYPOINT ["/usr/local/bin/tenantgate"]"#));
    // The build context leaves out what is big and local.
    let ignore = read(&repo_root().join(".dockerignore"));
    for entry in ["target", ".deps", ".git"] {
        assert!(ignore.lines().any(|l| l.trim() == entry), "{entry}");
    }
}

#[test]
fn systemd_unit_starts_a_parsable_command_line_with_hardening() {
    let unit = read(&deploy("tenantgate.service"));
    // Continuation lines joined, comments dropped, then section -> key -> values.
    let joined = unit.replace("\\\n", " ");
    let mut section = String::new();
    let mut keys: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("{line}"));
        keys.entry((section.clone(), k.to_string()))
            .or_default()
            .push(v.to_string());
    }
    let get = |s: &str, k: &str| -> Vec<String> {
        keys.get(&(s.to_string(), k.to_string()))
            .cloned()
            .unwrap_or_default()
    };
    let exec = get("Service", "ExecStart");
    assert_eq!(exec.len(), 1);
    let argv: Vec<String> = exec[0].split_whitespace().map(String::from).collect();
    assert_eq!(argv[0], "/usr/local/bin/tenantgate");
    let config = tenantgate_config(&argv[1..]);
    assert!(config.auth.enabled);
    assert!(!config.auth.oidc_discovery_endpoints.is_empty());
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(get("Service", key), [want], "{key}");
    }
    assert!(get("Service", "SystemCallFilter").contains(&"@system-service".to_string()));
    assert_eq!(get("Install", "WantedBy"), ["multi-user.target"]);
    // Stopping leaves room for the graceful drain.
    let stop: u64 = get("Service", "TimeoutStopSec")[0]
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(
        stop > config.server.max_graceful_shutdown.as_secs()
            + config.server.shutdown_delay.as_secs()
    );
}
