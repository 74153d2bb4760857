//! The real senders of the scene: vmagent and Prometheus, scraping and remote-writing with OAuth2 client
//! credentials, as users run them in front of vmgateway. ([`Vmagent`] itself, with a fixed bearer token,
//! lives in `mod.rs`.) And vmalert, whose rules and alerts VictoriaMetrics serves on its behalf.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{deps, free_port, tempdir, wait_http, Proc, Vmagent};

/// One remote-write destination with OAuth2 client credentials.
#[derive(Debug, Clone)]
pub struct RemoteWrite {
    /// Full URL, e.g. `http://127.0.0.1:8431/api/v1/write`.
    pub url: String,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    pub token_url: String,
}

impl Vmagent {
    /// Starts vmagent with `scrape_config` (YAML) and one `-remoteWrite.url` per entry of `writes`, each
    /// with OAuth2 client credentials. In vmagent 1.79 every `-remoteWrite.oauth2.*` flag is an array that
    /// pairs with `-remoteWrite.url` by position, so each destination gets its own client. Flushes every
    /// second.
    pub fn with_oauth2(scrape_config: &str, writes: &[RemoteWrite]) -> Vmagent {
        let dir = tempdir();
        let config = dir.path().join("scrape.yml");
        fs::write(&config, scrape_config).unwrap();
        let port = free_port();
        let mut cmd = Command::new(deps().get("TG_VMAGENT"));
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-promscrape.config={}", config.display()))
            .arg(format!(
                "-remoteWrite.tmpDataPath={}",
                dir.path().join("queue").display()
            ))
            .arg("-remoteWrite.flushInterval=1s")
            .arg("-loggerLevel=WARN");
        for w in writes {
            cmd.arg(format!("-remoteWrite.url={}", w.url))
                .arg(format!("-remoteWrite.oauth2.clientID={}", w.client_id))
                .arg(format!(
                    "-remoteWrite.oauth2.clientSecretFile={}",
                    w.client_secret_file.display()
                ))
                .arg(format!("-remoteWrite.oauth2.tokenUrl={}", w.token_url));
        }
        let url = format!("http://127.0.0.1:{port}");
        let proc = Proc::spawn_serving("vmagent", cmd, dir.path().join("vmagent.log"), &url);
        Vmagent {
            proc,
            url,
            _dir: dir,
        }
    }
}

/// A running Prometheus (Debian's 2.42).
pub struct Prometheus {
    pub proc: Proc,
    pub url: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Prometheus {
    /// A port for Prometheus to listen on, so its configuration can name it (to scrape itself).
    pub fn reserve_port() -> u16 {
        free_port()
    }

    /// Starts Prometheus with `config` (YAML) on `port`, waiting until it is ready.
    pub fn start(config: &str, port: u16) -> Prometheus {
        Prometheus::start_with(config, port, &[], &[])
    }

    /// [`Prometheus::start`] with `files` (name, contents) written beside the configuration (rule
    /// files, say) and `args` added to the command line.
    pub fn start_with(
        config: &str,
        port: u16,
        files: &[(&str, &str)],
        args: &[&str],
    ) -> Prometheus {
        let dir = tempdir();
        for (name, text) in files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        let path = dir.path().join("prometheus.yml");
        fs::write(&path, config).unwrap();
        let mut cmd = Command::new(deps().get("TG_PROMETHEUS"));
        cmd.arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .args(args);
        let proc = Proc::spawn("prometheus", cmd, dir.path().join("prometheus.log"));
        let url = format!("http://127.0.0.1:{port}");
        wait_http(
            &format!("{url}/-/ready"),
            200,
            &proc,
            Duration::from_secs(30),
        );
        Prometheus {
            proc,
            url,
            port,
            dir,
        }
    }
}

/// A real vmalert on `port` evaluating `rules` against `datasource` every second, writing what recording
/// rules produce back into it (vmalert refuses to start with recording rules and nowhere to write them). Its notifier is a port
/// nobody listens on: tests read alert states from vmalert's API (directly, or through VictoriaMetrics'
/// `-vmalert.proxyURL`); sending notifications is not under test.
pub fn vmalert(rules: &Path, datasource: &str, port: u16, dir: &Path) -> (Proc, String) {
    let mut cmd = Command::new(deps().get("TG_VMALERT"));
    cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-rule={}", rules.display()))
        .arg(format!("-datasource.url={datasource}"))
        .arg(format!("-remoteWrite.url={datasource}"))
        .arg(format!("-notifier.url=http://127.0.0.1:{}", free_port()))
        .arg("-evaluationInterval=1s")
        .arg("-loggerLevel=ERROR");
    let url = format!("http://127.0.0.1:{port}");
    let proc = Proc::spawn_serving("vmalert", cmd, dir.join("vmalert.log"), &url);
    (proc, url)
}
