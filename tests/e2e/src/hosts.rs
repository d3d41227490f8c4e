//! Hosts as network namespaces: two namespaces joined by a veth pair on an underlay
//! subnet, each running its own `shoal agent`, and helpers to talk to guest VMs from
//! inside a host namespace. Nothing here touches the root namespace's networking.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::shoal_bin;

/// Runs `ip` with `args`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Two host namespaces joined by a veth pair: host `i` has underlay address
/// `10.250.0.<i+1>/24`. Dropping it deletes both namespaces.
pub struct Underlay {
    /// The namespaces' names.
    pub names: Vec<String>,
}

impl Underlay {
    /// Creates the namespaces `<prefix>1` and `<prefix>2`, with IPv4 forwarding on
    /// (so that isolation must come from Shoal's rules, not from a disabled router).
    pub fn pair(prefix: &str) -> Result<Self> {
        if !rustix::process::geteuid().is_root() {
            bail!("host namespaces need root: run the e2e tests as root (CI does)");
        }
        let names = vec![format!("{prefix}1"), format!("{prefix}2")];
        for n in &names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            ip(&["netns", "add", n])?;
        }
        let u = Underlay { names };
        let (a, b) = (&u.names[0], &u.names[1]);
        ip(&[
            "-n", a, "link", "add", "under0", "type", "veth", "peer", "name", "under0", "netns", b,
        ])?;
        for (i, n) in u.names.iter().enumerate() {
            ip(&[
                "-n",
                n,
                "addr",
                "add",
                &format!("{}/24", u.underlay(i)),
                "dev",
                "under0",
            ])?;
            ip(&["-n", n, "link", "set", "under0", "up"])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
            let out = Command::new("ip")
                .args(["netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
                .output()?;
            if !out.status.success() {
                bail!("sysctl in {n}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(u)
    }

    /// Host `i`'s underlay address.
    pub fn underlay(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, 0, u8::try_from(i + 1).unwrap_or(u8::MAX))
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// A namespace beyond the hosts that their VMs reach through the agents' egress
/// (`--egress-interface eg0`, masqueraded): host `i` has `eg0` with
/// `10.251.<i+1>.2/30`, linked to `10.251.<i+1>.1/30` here, and a route to
/// [`Egress::SERVICE`], an address on this namespace's loopback where test
/// services (an OIDC provider) listen. Dropping it deletes the namespace.
pub struct Egress {
    /// The namespace's name.
    pub name: String,
}

impl Egress {
    /// The address services listen on inside the namespace.
    pub const SERVICE: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 1);
    /// The egress interface on each host.
    pub const INTERFACE: &'static str = "eg0";

    /// Creates `<prefix>x` and links it to every host of `hosts`.
    pub fn new(hosts: &Underlay, prefix: &str) -> Result<Self> {
        let name = format!("{prefix}x");
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name])?;
        let e = Egress { name };
        ip(&["-n", &e.name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &e.name,
            "addr",
            "add",
            &format!("{}/32", Self::SERVICE),
            "dev",
            "lo",
        ])?;
        for (i, host) in hosts.names.iter().enumerate() {
            let net = i + 1;
            let peer = format!("h{net}");
            ip(&[
                "-n",
                host,
                "link",
                "add",
                Self::INTERFACE,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                &e.name,
            ])?;
            ip(&[
                "-n",
                host,
                "addr",
                "add",
                &format!("10.251.{net}.2/30"),
                "dev",
                Self::INTERFACE,
            ])?;
            ip(&["-n", host, "link", "set", Self::INTERFACE, "up"])?;
            ip(&[
                "-n",
                host,
                "route",
                "add",
                &format!("{}/32", Self::SERVICE),
                "via",
                &format!("10.251.{net}.1"),
            ])?;
            ip(&[
                "-n",
                &e.name,
                "addr",
                "add",
                &format!("10.251.{net}.1/30"),
                "dev",
                &peer,
            ])?;
            ip(&["-n", &e.name, "link", "set", &peer, "up"])?;
        }
        Ok(e)
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs `f` on a thread inside namespace `ns`; sockets it opens live there.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let path = PathBuf::from("/run/netns").join(ns);
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            let file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .with_context(|| format!("entering {}", path.display()))?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
    })
}

/// Sends one command to a test-image guest's control port (7070) from inside host
/// namespace `ns`, and returns its one-line reply.
pub fn guest(ns: &str, vm: Ipv4Addr, command: &str) -> Result<String> {
    guest_within(ns, vm, command, Duration::from_secs(15))
}

/// The `key=value` figure of a series answer (`pings`, `echoes`), e.g. `received`.
pub fn figure(answer: &str, key: &str) -> Result<u64> {
    answer
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key} in the guest's answer {answer:?}"))
}

/// [`guest`] for a command whose answer takes up to `wait` (e.g. `pings`).
pub fn guest_within(ns: &str, vm: Ipv4Addr, command: &str, wait: Duration) -> Result<String> {
    let command = command.to_string();
    in_netns(ns, move || -> Result<String> {
        let addr = SocketAddr::from((vm, 7070));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(wait))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line.trim().to_string())
    })?
}

/// Lists the links of namespace `ns` as `ip -j` reports them (JSON, not text).
pub fn links(ns: &str) -> Result<Vec<String>> {
    let out = ip(&["-n", ns, "-j", "link", "show"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// The nftables tables of namespace `ns`, as `family name` (from `nft -j`).
pub fn nft_tables(ns: &str) -> Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-j", "list", "tables"])
        .output()?;
    if !out.status.success() {
        bail!(
            "nft list tables in {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["nftables"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    let t = e.get("table")?;
                    Some(format!("{} {}", t["family"].as_str()?, t["name"].as_str()?))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// A running `shoal agent` in a host namespace.
pub struct AgentProc {
    child: Option<Child>,
    args: Vec<String>,
    /// Its log file.
    pub log: PathBuf,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// Its metrics port on 127.0.0.1.
    pub metrics_port: u16,
}

impl AgentProc {
    /// Starts `shoal agent --name <name>` confined to `netns`, against the server
    /// whose admin kubeconfig is `kubeconfig`; it offers 8 CPUs and 8Gi to guests
    /// and gives a stopping guest 1 s to power off.
    pub fn start(
        kubeconfig: &Path,
        name: &str,
        netns: &str,
        underlay: Ipv4Addr,
        dir: &Path,
    ) -> Result<Self> {
        Self::start_with_grace(kubeconfig, name, netns, underlay, dir, Some(1))
    }

    /// [`AgentProc::start`] with `--stop-grace` seconds, or the agent's default
    /// (10 s) for `None`.
    pub fn start_with_grace(
        kubeconfig: &Path,
        name: &str,
        netns: &str,
        underlay: Ipv4Addr,
        dir: &Path,
        stop_grace: Option<u64>,
    ) -> Result<Self> {
        Self::start_with_args(kubeconfig, name, netns, underlay, dir, stop_grace, &[])
    }

    /// [`AgentProc::start_with_grace`] with more `shoal agent` arguments.
    pub fn start_with_args(
        kubeconfig: &Path,
        name: &str,
        netns: &str,
        underlay: Ipv4Addr,
        dir: &Path,
        stop_grace: Option<u64>,
        extra: &[&str],
    ) -> Result<Self> {
        let state_dir = dir.join(format!("agent-{name}"));
        let metrics_port = crate::free_port()?;
        let mut args: Vec<String> = vec![
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "agent".into(),
            "--name".into(),
            name.into(),
            "--underlay-ip".into(),
            underlay.to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--netns".into(),
            netns.into(),
            "--cpus".into(),
            "8".into(),
            "--memory".into(),
            "8Gi".into(),
            "--kvm-probe-timeout-ms".into(),
            "1500".into(),
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics_port}"),
        ];
        if let Some(grace) = stop_grace {
            args.extend(["--stop-grace".into(), grace.to_string()]);
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut a = AgentProc {
            child: None,
            args,
            log: dir.join(format!("agent-{name}.log")),
            state_dir,
            metrics_port,
        };
        a.spawn()?;
        Ok(a)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(shoal_bin()?)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting shoal agent")?;
        self.child = Some(child);
        Ok(())
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILLs it by PID (its VMs are detached and keep running).
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Stops it with SIGTERM (a graceful stop) and waits for it to exit.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("not running")?;
        crate::signal(c.id(), "TERM")?;
        Ok(c.wait()?)
    }

    /// Its Prometheus metrics, as text.
    pub fn metrics(&self) -> Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut body = String::new();
        std::io::Read::read_to_string(&mut s, &mut body)?;
        Ok(body)
    }

    /// `GET path` on the agent's metrics listener at `endpoint` (`address:port`, as
    /// in `Host.status.metricsEndpoint`): the status code and the body.
    pub fn metrics_get(endpoint: &str, path: &str) -> Result<(u16, String)> {
        Self::metrics_get_within(endpoint, path, None)
    }

    /// [`AgentProc::metrics_get`] as Prometheus sends it with a scrape timeout of
    /// `scrape_timeout` seconds (`X-Prometheus-Scrape-Timeout-Seconds`).
    pub fn metrics_get_within(
        endpoint: &str,
        path: &str,
        scrape_timeout: Option<u64>,
    ) -> Result<(u16, String)> {
        let mut s =
            TcpStream::connect(endpoint).with_context(|| format!("connecting to {endpoint}"))?;
        s.set_read_timeout(Some(Duration::from_secs(15 + scrape_timeout.unwrap_or(0))))?;
        let header = scrape_timeout
            .map(|t| format!("X-Prometheus-Scrape-Timeout-Seconds: {t}\r\n"))
            .unwrap_or_default();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {endpoint}\r\n{header}\r\n").as_bytes())?;
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut s, &mut answer)?;
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .with_context(|| format!("GET {path}: no HTTP head in {answer:?}"))?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("GET {path}: no status in {head:?}"))?;
        Ok((code, body.to_string()))
    }

    /// Starts it again with the same flags.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.spawn()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The QEMU PIDs recorded in its state directory, by VM directory.
    pub fn qemu_pids(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        let Ok(nss) = std::fs::read_dir(self.state_dir.join("vms")) else {
            return out;
        };
        for ns in nss.flatten() {
            let Ok(vms) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for vm in vms.flatten() {
                if let Ok(pid) = std::fs::read_to_string(vm.path().join("qemu.pid")) {
                    if let Ok(pid) = pid.trim().parse() {
                        out.push((vm.file_name().to_string_lossy().into_owned(), pid));
                    }
                }
            }
        }
        out.sort();
        out
    }
}

impl AgentProc {
    /// SIGKILLs the QEMUs this agent's state directory names, after checking each
    /// PID still is one of them; returns how many it killed.
    pub fn kill_vms(&self) -> usize {
        let marker = self.state_dir.display().to_string();
        let mut killed = 0;
        for (_, pid) in self.qemu_pids() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&marker)
                && crate::signal(pid, "KILL").is_ok()
            {
                killed += 1;
            }
        }
        killed
    }

    /// SIGKILLs the QEMU of one VM (by Machine name), after checking the PID still
    /// is that VM's; true if it was killed.
    pub fn kill_vm(&self, machine: &str) -> bool {
        let marker = self.state_dir.display().to_string();
        self.qemu_pids()
            .into_iter()
            .filter(|(name, _)| name == machine)
            .any(|(_, pid)| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&cmdline).contains(&marker)
                    && crate::signal(pid, "KILL").is_ok()
            })
    }

    /// The QEMUs of this agent's state directory that are still alive.
    pub fn live_vms(&self) -> Vec<(String, u32)> {
        let marker = self.state_dir.display().to_string();
        self.qemu_pids()
            .into_iter()
            .filter(|(_, pid)| {
                alive(*pid)
                    && String::from_utf8_lossy(
                        &std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
                    )
                    .contains(&marker)
            })
            .collect()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = crate::signal(c.id(), "TERM");
            let _ = c.wait();
        }
        // A failed test must not leave VMs behind.
        self.kill_vms();
    }
}

/// Whether process `pid` is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].trim_start().chars().next())
                .is_some_and(|c| c != 'Z' && c != 'X')
        })
        .unwrap_or(false)
}

/// Starts agents `h1` and `h2`, one in each host namespace of `hosts`, and waits
/// until both Hosts report Ready, so that a test's clock or first kill does not
/// race their registration.
pub async fn start_agent_pair(
    kubeconfig: &Path,
    client: &kube::Client,
    hosts: &Underlay,
    dir: &Path,
) -> Result<[AgentProc; 2]> {
    start_agent_pair_with(kubeconfig, client, hosts, dir, &[]).await
}

/// [`start_agent_pair`] with more `shoal agent` arguments for both agents.
pub async fn start_agent_pair_with(
    kubeconfig: &Path,
    client: &kube::Client,
    hosts: &Underlay,
    dir: &Path,
    extra: &[&str],
) -> Result<[AgentProc; 2]> {
    let start = |i: usize, name: &str| {
        AgentProc::start_with_args(
            kubeconfig,
            name,
            &hosts.names[i],
            hosts.underlay(i),
            dir,
            Some(1),
            extra,
        )
    };
    let agents = [start(0, "h1")?, start(1, "h2")?];
    match wait_ready(client, &["h1", "h2"], Duration::from_secs(30)).await {
        Ok(()) => Ok(agents),
        Err(e) => bail!("{e}:\n{}\n{}", agents[0].log_text(), agents[1].log_text()),
    }
}

/// Waits until every Host in `names` reports Ready, or fails after `timeout`
/// naming those that are not.
pub async fn wait_ready(client: &kube::Client, names: &[&str], timeout: Duration) -> Result<()> {
    let api: kube::Api<shoal_api::Host> = kube::Api::all(client.clone());
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut not_ready = Vec::new();
        for name in names {
            let ready = api.get_opt(name).await?.is_some_and(|h| {
                h.status.is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            });
            if !ready {
                not_ready.push(*name);
            }
        }
        if not_ready.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("hosts not Ready after {timeout:?}: {not_ready:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `shoal server` arguments for its local agent `name`, emulated (TCG), in
/// network namespace `netns` (delete it with a [`NetnsGuard`]).
pub fn local_agent_args<'a>(netns: &'a str, name: &'a str) -> Vec<&'a str> {
    vec![
        "--local-agent=true",
        "--local-agent-netns",
        netns,
        "--local-agent-name",
        name,
        "--local-agent-accel",
        "tcg",
    ]
}

/// Deletes network namespace `.0` when dropped: for a namespace a test had a
/// server create (the local agent's `--local-agent-netns`).
pub struct NetnsGuard(pub String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .output();
    }
}
