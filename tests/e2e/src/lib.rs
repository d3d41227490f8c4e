//! The harness for Shoal's end-to-end tests: it runs the real `shoal` binary on
//! loopback with a temporary data dir, and Debian's kubectl against it.
//!
//! Processes are stopped by the PID recorded when they were started.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub mod awslab;
pub mod bench;
pub mod bmclab;
pub mod connect_proxy;
pub mod etcd;
pub mod fixtures;
pub mod fleet;
pub mod guestctl;
pub mod hosts;
pub mod kubelab;
pub mod oidc;
pub mod prom;
pub mod pxelab;
pub mod rawboot;
pub mod vlanport;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `shoal` binary under test: `$SHOAL_BIN`, or else the workspace's debug build,
/// which the first call in each test process brings up to date (`cargo build
/// --workspace --bins --tests`, as `make test` builds it, a no-op when nothing
/// changed), so that `cargo test -p shoal-e2e` never tests a stale binary.
pub fn shoal_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SHOAL_BIN").map(PathBuf::from) {
        if !path.exists() {
            bail!("SHOAL_BIN={} does not exist", path.display());
        }
        return Ok(path);
    }
    static BUILT: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_shoal().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// `cargo build --workspace --bins --tests`, with the cargo that runs the tests:
/// the feature set of `cargo test --workspace`, so dependencies are not built twice.
fn build_shoal() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = workspace_root();
    let out = Command::new(&cargo)
        .args(["build", "--quiet", "--workspace", "--bins", "--tests"])
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} build --workspace", cargo.to_string_lossy()))?;
    if !out.status.success() {
        bail!(
            "cargo build --workspace --bins --tests failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| root.join(t))
        .unwrap_or_else(|| root.join("target"));
    let path = target.join("debug/shoal");
    if !path.exists() {
        bail!("cargo built shoal but {} is missing", path.display());
    }
    Ok(path)
}

/// Debian's kubectl 1.20, as `scripts/setup.sh` installs it.
pub fn kubectl_bin() -> Result<PathBuf> {
    let path = std::env::var_os("SHOAL_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/shoal/kubernetes-client/usr/bin/kubectl"));
    if !path.exists() {
        bail!(
            "{} is missing: run scripts/setup.sh (make test does)",
            path.display()
        );
    }
    Ok(path)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `n` distinct free ports on 127.0.0.1: every listener is held until all are
/// chosen (calls of [`free_port`] one after another can return the same port).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// A running `shoal server`.
pub struct ServerProc {
    child: Child,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl ServerProc {
    /// Starts a server on a fresh data dir.
    pub fn start() -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let data = tmp.path().join("data");
        let mut s = Self::start_at(&data, free_port()?, &[])?;
        s._tmp = Some(tmp);
        Ok(s)
    }

    /// Starts a server with extra flags on a fresh data dir.
    pub fn start_with(args: &[&str]) -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let data = tmp.path().join("data");
        let mut s = Self::start_at(&data, free_port()?, args)?;
        s._tmp = Some(tmp);
        Ok(s)
    }

    /// Starts a server with extra flags and environment variables on a fresh data
    /// dir; restarts keep both.
    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let data = tmp.path().join("data");
        let mut s = Self::start_env(&data, free_port()?, args, envs)?;
        s._tmp = Some(tmp);
        Ok(s)
    }

    /// Starts a server on a given data dir and port.
    pub fn start_at(data_dir: &Path, port: u16, args: &[&str]) -> Result<Self> {
        Self::start_env(data_dir, port, args, &[])
    }

    fn start_env(data_dir: &Path, port: u16, args: &[&str], envs: &[(&str, &str)]) -> Result<Self> {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(data_dir.with_extension("log"))
        };
        let log = open().or_else(|_| {
            std::fs::create_dir_all(data_dir.parent().unwrap_or(Path::new("/tmp")))?;
            open()
        })?;
        let child = Command::new(shoal_bin()?)
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            // Tests run their agents explicitly, in host namespaces of their own.
            .args(if args.iter().any(|a| a.starts_with("--local-agent")) {
                &[][..]
            } else {
                &["--local-agent=false"][..]
            })
            // Only tests about the gateway run one; they pass its flags.
            .args(if args.iter().any(|a| a.starts_with("--gateway")) {
                &[][..]
            } else {
                &["--gateway=false"][..]
            })
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting shoal server")?;
        let mut s = Self {
            child,
            data_dir: data_dir.to_owned(),
            port,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            _tmp: None,
        };
        s.wait_ready()?;
        let no_controllers = args.iter().enumerate().any(|(i, a)| {
            *a == "--controllers=false"
                || (*a == "--controllers" && args.get(i + 1) == Some(&"false"))
        });
        if !no_controllers {
            s.wait_seeded();
        }
        Ok(s)
    }

    /// Waits (up to 30 s) until the controllers have seeded the default Releases,
    /// which every Cluster create needs; a server whose controllers cannot seed
    /// (no leader yet) is left to the test, with a warning.
    fn wait_seeded(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let seeded = self
                .shoal(&["get", "releases", "-o", "json"])
                .ok()
                .filter(|out| out.status.success())
                .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
                .is_some_and(|list| {
                    list["items"]
                        .as_array()
                        .is_some_and(|items| !items.is_empty())
                });
            if seeded {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: the controllers seeded no Release within 30 s; Cluster creates will be refused until they do");
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.data_dir.with_extension("log"))
                    .unwrap_or_default();
                bail!("shoal server exited with {status}: {log}");
            }
            let up = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if up && self.kubeconfig().exists() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("shoal server did not become ready in 30 s")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// The server URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A kube-rs client with the admin credential.
    pub async fn client(&self) -> Result<Client> {
        client_for(&self.kubeconfig()).await
    }

    /// Runs kubectl with the admin kubeconfig and returns its output.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new(kubectl_bin()?)
            .env("KUBECONFIG", self.kubeconfig())
            .args(args)
            .output()?)
    }

    /// Runs kubectl and fails unless it succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the shoal CLI with the admin kubeconfig.
    pub fn shoal(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new(shoal_bin()?)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()?)
    }

    /// Runs `shoal <args>` against this server and returns its stdout and stderr,
    /// or an error with both when it fails.
    pub fn shoal_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.shoal(args)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!("shoal {}: {}\n{text}", args.join(" "), out.status);
        }
        Ok(text)
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(&mut self) -> Result<()> {
        signal(self.pid(), "TERM")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("shoal server ignored SIGTERM for 10 s")
    }

    /// The server's log so far (stderr of every run on this data dir, the last run
    /// last).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    /// Kills the process with SIGKILL.
    pub fn kill9(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Restarts on the same data dir and port (after a stop, or a `kill9`).
    pub fn restart(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.stop()?;
        }
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let fresh = Self::start_env(&self.data_dir, self.port, &args, &envs)?;
        let old = std::mem::replace(self, fresh);
        self._tmp = old.into_tmp();
        Ok(())
    }

    fn into_tmp(mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }
}

impl Drop for ServerProc {
    /// Kills the server, then the Prometheus and Alertmanager it started with
    /// `--monitoring` (by the PIDs it wrote), which a killed server cannot stop.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for name in ["prometheus", "alertmanager"] {
            let pid = std::fs::read_to_string(self.data_dir.join(format!("monitoring/{name}.pid")));
            let pid = pid.ok().and_then(|p| p.trim().parse::<u32>().ok());
            if let Some(pid) = pid.filter(|p| *p > 1) {
                if hosts::alive(pid) {
                    let _ = signal(pid, "KILL");
                }
            }
        }
    }
}

/// Sends a signal to a process by PID.
pub fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// Creates Release `name` unless it exists (a Cluster must name a Release that
/// exists): for tests of the API, where nothing boots. It is deprecated, so
/// controllers, where they run, start nothing from it, as they would not for a
/// Release that does not exist; and its kernel files need not exist.
pub async fn ensure_release(client: &Client, name: &str) -> Result<()> {
    let releases: kube::Api<shoal_api::Release> = kube::Api::all(client.clone());
    if releases.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let release: shoal_api::Release = serde_json::from_value(serde_json::json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Release", "metadata": {"name": name},
        "spec": {"kubernetesVersion": "1.31.2", "state": "deprecated",
                 "image": {"kernel": "/nonexistent/vmlinuz", "initrd": "/nonexistent/initrd.img"}}
    }))?;
    releases
        .create(&kube::api::PostParams::default(), &release)
        .await
        .with_context(|| format!("creating Release {name}"))?;
    Ok(())
}

/// A kube-rs client for a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// The admin bearer token in a kubeconfig.
pub fn token_of(kubeconfig: &Path) -> Result<String> {
    let v: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(kubeconfig)?)?;
    v.pointer("/users/0/user/token")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .context("no token in the kubeconfig")
}

/// Writes a kubeconfig like the admin one but with another token.
pub fn kubeconfig_with_token(admin: &Path, token: &str, out: &Path) -> Result<()> {
    let mut v: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(admin)?)?;
    v["users"][0]["user"]["token"] = serde_json::Value::String(token.to_owned());
    std::fs::write(out, serde_yaml::to_string(&v)?)?;
    Ok(())
}

/// Raw HTTP against the API with a bearer token: (status, parsed JSON body).
pub async fn raw(
    client: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(u16, serde_json::Value)> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .header("Accept", "application/json")
        .body(body)?;
    let resp = client.send(req.map(kube::client::Body::from)).await?;
    let status = resp.status().as_u16();
    let bytes = http_body_util_collect(resp.into_body()).await?;
    let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((status, v))
}

async fn http_body_util_collect(body: kube::client::Body) -> Result<bytes::Bytes> {
    use http_body_util::BodyExt;
    Ok(body
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the body: {e}"))?
        .to_bytes())
}
