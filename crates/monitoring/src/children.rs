//! Debian's Prometheus and Alertmanager as child processes of the all-in-one
//! server: their configuration is generated into the data directory, and they
//! stop when the server stops (each child is also killed on drop). Their PIDs are
//! written beside their configuration (`prometheus.pid`, `alertmanager.pid`) so
//! that they can be stopped after a server that was killed with SIGKILL; a
//! graceful stop removes them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::config::{alertmanager_yml, prometheus_yml, PrometheusInputs, ALERT_RULES};
use crate::proxy::FrontEnd;

/// Where the children listen and what they run.
#[derive(Clone, Debug)]
pub struct MonitoringConfig {
    /// The directory for their configuration and data.
    pub dir: PathBuf,
    /// Prometheus's listen address.
    pub prometheus_listen: SocketAddr,
    /// Alertmanager's listen address.
    pub alertmanager_listen: SocketAddr,
    /// The Prometheus binary (Debian: `prometheus`).
    pub prometheus_bin: PathBuf,
    /// The Alertmanager binary (Debian: `prometheus-alertmanager`).
    pub alertmanager_bin: PathBuf,
    /// The API server's URL; the children's front ends are served under it
    /// (see [`crate::proxy`]).
    pub server_url: String,
    /// The CA of the API server's certificate.
    pub ca_file: PathBuf,
    /// An administrator's token, written for Prometheus's discovery.
    pub token: String,
    /// Seconds between scrapes.
    pub scrape_interval_secs: u64,
}

/// Why monitoring could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitoringError {
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A binary could not be started.
    #[error("starting {bin}: {source} (install Debian's prometheus and prometheus-alertmanager: scripts/setup.sh does)")]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The running children; dropping this kills them.
#[derive(Debug)]
pub struct Monitoring {
    prometheus: Child,
    alertmanager: Child,
    dir: PathBuf,
    /// Prometheus's URL.
    pub prometheus_url: String,
    /// Alertmanager's URL.
    pub alertmanager_url: String,
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), MonitoringError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| MonitoringError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::write(path, text).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> Result<Child, MonitoringError> {
    let err = |source| MonitoringError::Spawn {
        bin: bin.to_owned(),
        source,
    };
    let out = std::fs::File::create(log).map_err(|source| MonitoringError::Write {
        path: log.to_owned(),
        source,
    })?;
    let errs = out.try_clone().map_err(err)?;
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(errs)
        .kill_on_drop(true)
        .spawn()
        .map_err(err)
}

impl Monitoring {
    /// Writes the configuration under `cfg.dir` and starts both children.
    pub fn start(cfg: &MonitoringConfig) -> Result<Self, MonitoringError> {
        let dir = &cfg.dir;
        for sub in ["prometheus-data", "alertmanager-data"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .map_err(|source| MonitoringError::Write { path, source })?;
        }
        let token_file = dir.join("token");
        write(&token_file, &cfg.token, 0o600)?;
        let rules = dir.join("alerts.yaml");
        write(&rules, ALERT_RULES, 0o644)?;
        let inputs = PrometheusInputs {
            server_url: cfg.server_url.clone(),
            ca_file: cfg.ca_file.clone(),
            token_file,
            rule_files: vec![rules],
            alertmanager: Some(cfg.alertmanager_listen.to_string()),
            scrape_interval_secs: cfg.scrape_interval_secs,
        };
        let prometheus_config = dir.join("prometheus.yml");
        write(&prometheus_config, &prometheus_yml(&inputs), 0o644)?;
        let alertmanager_config = dir.join("alertmanager.yml");
        write(&alertmanager_config, &alertmanager_yml(None), 0o644)?;
        let text = |p: &Path| p.display().to_string();
        let alertmanager = spawn(
            &cfg.alertmanager_bin,
            &[
                format!("--config.file={}", text(&alertmanager_config)),
                format!("--storage.path={}", text(&dir.join("alertmanager-data"))),
                format!("--web.listen-address={}", cfg.alertmanager_listen),
                format!(
                    "--web.external-url={}",
                    FrontEnd::Alertmanager.external_url(&cfg.server_url)
                ),
                "--web.route-prefix=/".into(),
                // A single Alertmanager: no gossip port.
                "--cluster.listen-address=".into(),
            ],
            &dir.join("alertmanager.log"),
        )?;
        let prometheus = spawn(
            &cfg.prometheus_bin,
            &[
                format!("--config.file={}", text(&prometheus_config)),
                format!("--storage.tsdb.path={}", text(&dir.join("prometheus-data"))),
                format!("--web.listen-address={}", cfg.prometheus_listen),
                // Links and alerts point at the server's /monitoring/prometheus/;
                // the child still serves at its root, where the proxy forwards.
                format!(
                    "--web.external-url={}",
                    FrontEnd::Prometheus.external_url(&cfg.server_url)
                ),
                "--web.route-prefix=/".into(),
                "--web.enable-lifecycle".into(),
            ],
            &dir.join("prometheus.log"),
        )?;
        // The PIDs, so that whoever cleans up after a killed server stops them.
        for (name, child) in [("prometheus", &prometheus), ("alertmanager", &alertmanager)] {
            if let Some(pid) = child.id() {
                write(&dir.join(format!("{name}.pid")), &pid.to_string(), 0o644)?;
            }
        }
        Ok(Self {
            prometheus,
            alertmanager,
            dir: dir.clone(),
            prometheus_url: format!("http://{}", cfg.prometheus_listen),
            alertmanager_url: format!("http://{}", cfg.alertmanager_listen),
        })
    }

    /// Stops both children: SIGTERM, then SIGKILL after `grace`; their PID files
    /// go with them.
    pub async fn stop(mut self, grace: Duration) {
        for (name, child) in [
            ("prometheus", &mut self.prometheus),
            ("alertmanager", &mut self.alertmanager),
        ] {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
            let _ = std::fs::remove_file(self.dir.join(format!("{name}.pid")));
        }
    }
}
