//! Shoal's Kubernetes node image booted under raw QEMU with no Shoal at all: a lab
//! network namespace with a bridge, Debian's dnsmasq for DHCP, Python's `http.server`
//! for the NoCloud seeds (named in each VM's SMBIOS serial, as Shoal's agent does),
//! and one TCG VM per node on a tap of the bridge.
//!
//! The lab's bridge has no uplink: the guests can reach each other and `10.77.0.1`
//! (the namespace) and nothing else, so nothing they run can pull from a registry.
//!
//! Every process is stopped by the PID recorded at launch when the [`Lab`] is
//! dropped, and the namespace is deleted with everything in it.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::hosts::ip;

/// The lab namespace's address on its bridge: DHCP, the seeds' HTTP server and the
/// guests' default route and (unanswered) DNS server.
pub const LAB_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const SEED_PORT: u16 = 8000;

/// A built Kubernetes node image: what `images/build-kubernetes-image.sh` prints.
#[derive(Debug, Clone)]
pub struct NodeImage {
    /// The image's directory.
    pub dir: PathBuf,
    /// The root filesystem (qcow2, used as a backing file).
    pub disk: PathBuf,
    /// The kernel, booted directly.
    pub kernel: PathBuf,
    /// Its initramfs.
    pub initrd: PathBuf,
    /// The kernel command line the image needs.
    pub cmdline: String,
    /// The image's kubectl, for the machine that drives the cluster.
    pub kubectl: PathBuf,
    /// `v1.35.4`.
    pub kubernetes_version: String,
    /// Every container image preloaded on the node.
    pub images: Vec<String>,
    /// The preloaded busybox for workloads.
    pub busybox: String,
}

impl NodeImage {
    /// The image at `$SHOAL_K8S_IMAGE`, or the current build in Shoal's cache
    /// (`${SHOAL_CACHE_DIR:-~/.cache/shoal}/kubernetes/current`).
    pub fn find() -> Result<Self> {
        let dir = match std::env::var_os("SHOAL_K8S_IMAGE") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let cache = std::env::var_os("SHOAL_CACHE_DIR")
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/shoal"))
                    })
                    .context("neither SHOAL_CACHE_DIR nor HOME is set")?;
                cache.join("kubernetes/current")
            }
        };
        let manifest_path = dir.join("manifest.json");
        let text = fs::read_to_string(&manifest_path).with_context(|| {
            format!(
                "{} is missing: run scripts/setup.sh (it builds the Kubernetes node image \
                 with images/build-kubernetes-image.sh)",
                manifest_path.display()
            )
        })?;
        let m: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", manifest_path.display()))?;
        let field = |k: &str| -> Result<String> {
            m[k].as_str()
                .map(str::to_owned)
                .with_context(|| format!("{} has no string {k}", manifest_path.display()))
        };
        let image = Self {
            disk: dir.join(field("disk")?),
            kernel: dir.join(field("kernel")?),
            initrd: dir.join(field("initrd")?),
            kubectl: dir.join(field("kubectl")?),
            cmdline: field("cmdline")?,
            kubernetes_version: field("kubernetesVersion")?,
            busybox: field("busybox")?,
            images: m["images"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            dir,
        };
        for f in [&image.disk, &image.kernel, &image.initrd, &image.kubectl] {
            if !f.exists() {
                bail!(
                    "{} is missing: run images/build-kubernetes-image.sh --check, then \
                     scripts/setup.sh to rebuild",
                    f.display()
                );
            }
        }
        Ok(image)
    }
}

/// One VM of the lab.
pub struct LabVm {
    /// Its host name.
    pub name: String,
    /// Its address on the lab bridge (a DHCP reservation).
    pub ip: Ipv4Addr,
    /// Its serial console.
    pub console: PathBuf,
    /// When QEMU was launched.
    pub started: Instant,
    child: Child,
}

/// A lab namespace with its DHCP and seed servers, and the VMs booted in it.
pub struct Lab {
    /// The namespace's name.
    pub ns: String,
    dir: tempfile::TempDir,
    dnsmasq: Option<Child>,
    http: Option<Child>,
    /// The VMs, in boot order.
    pub vms: Vec<LabVm>,
}

fn lab_cmd(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

impl Lab {
    /// Creates namespace `ns` with bridge `br0` at [`LAB_GATEWAY`]/24, dnsmasq and
    /// the seed server.
    pub fn new(ns: &str) -> Result<Self> {
        if !rustix::process::geteuid().is_root() {
            bail!("the lab needs root (namespaces, taps): run the e2e tests as root (CI does)");
        }
        for tool in ["dnsmasq", "python3", "qemu-system-x86_64", "qemu-img"] {
            let found = Command::new("sh")
                .args([
                    "-c",
                    &format!("command -v {tool} || test -x /usr/sbin/{tool}"),
                ])
                .output()?
                .status
                .success();
            if !found {
                bail!("{tool} is missing: run scripts/setup.sh (it installs it)");
            }
        }
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
        ip(&["netns", "add", ns])?;
        let dir = tempfile::Builder::new()
            .prefix("shoal-kubelab-")
            .tempdir()?;
        let mut lab = Lab {
            ns: ns.to_owned(),
            dir,
            dnsmasq: None,
            http: None,
            vms: Vec::new(),
        };
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{LAB_GATEWAY}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", ns, "link", "set", "br0", "up"])?;
        fs::create_dir_all(lab.seeds())?;
        fs::write(lab.dhcp_hosts(), "")?;
        let log = fs::File::create(lab.dir.path().join("dnsmasq.log"))?;
        lab.dnsmasq = Some(
            lab_cmd(ns, "dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--port=0",
                    "--interface=br0",
                    "--bind-interfaces",
                    "--log-dhcp",
                    "--log-facility=-",
                    "--dhcp-range=10.77.0.100,10.77.0.200,12h",
                    "--dhcp-option=option:router,10.77.0.1",
                    "--dhcp-option=option:dns-server,10.77.0.1",
                ])
                .arg(format!(
                    "--dhcp-leasefile={}",
                    lab.dir.path().join("leases").display()
                ))
                .arg(format!("--dhcp-hostsfile={}", lab.dhcp_hosts().display()))
                .arg("--pid-file=")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting dnsmasq")?,
        );
        let log = fs::File::create(lab.dir.path().join("http.log"))?;
        lab.http = Some(
            lab_cmd(ns, "python3")
                .args(["-m", "http.server", "--bind", &LAB_GATEWAY.to_string()])
                .arg("--directory")
                .arg(lab.seeds())
                .arg(SEED_PORT.to_string())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting the seed server")?,
        );
        // dnsmasq is sent SIGHUP for each reservation: before it has installed its
        // handler, that signal would end it. Both servers must listen first.
        lab.wait_listening("udp", 67, "dnsmasq (DHCP)")?;
        lab.wait_listening("tcp", SEED_PORT, "the seed server")?;
        Ok(lab)
    }

    /// Waits (up to 20 s) until something in the namespace listens on `port`.
    fn wait_listening(&mut self, proto: &str, port: u16, what: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let flag = if proto == "udp" { "-Hlun" } else { "-Hltn" };
        loop {
            self.check_services()?;
            let out = lab_cmd(&self.ns, "ss")
                .args([flag, &format!("sport = :{port}")])
                .output()
                .context("running ss in the lab namespace")?;
            if out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{what} does not listen on {proto} port {port} after 20 s\n{}",
                    self.service_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fails when dnsmasq or the seed server has exited, with their logs.
    fn check_services(&mut self) -> Result<()> {
        let mut exited = None;
        for (what, child) in [
            ("dnsmasq", &mut self.dnsmasq),
            ("the seed server", &mut self.http),
        ] {
            if let Some(child) = child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    exited = Some(format!("{what} exited ({status})"));
                    break;
                }
            }
        }
        match exited {
            Some(what) => bail!("{what}\n{}", self.service_logs()),
            None => Ok(()),
        }
    }

    /// The last lines of dnsmasq's and the seed server's logs.
    pub fn service_logs(&self) -> String {
        ["dnsmasq.log", "http.log"]
            .iter()
            .map(|f| format!("--- {f} ---\n{}", tail(&self.dir.path().join(f), 30)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn seeds(&self) -> PathBuf {
        self.dir.path().join("seeds")
    }

    fn dhcp_hosts(&self) -> PathBuf {
        self.dir.path().join("dhcp-hosts")
    }

    /// Boots VM `name` at `ip` (10.77.0.2–99) from `image` with `user_data` as its
    /// cloud-init user-data.
    pub fn boot(
        &mut self,
        image: &NodeImage,
        name: &str,
        ip_addr: Ipv4Addr,
        vcpus: u32,
        memory_mib: u32,
        user_data: &str,
    ) -> Result<()> {
        let last = ip_addr.octets()[3];
        let mac = format!("52:54:00:77:00:{last:02x}");
        let seed = self.seeds().join(name);
        fs::create_dir_all(&seed)?;
        fs::write(
            seed.join("meta-data"),
            format!("instance-id: {name}\nlocal-hostname: {name}\n"),
        )?;
        fs::write(seed.join("user-data"), user_data)?;
        fs::write(seed.join("vendor-data"), "")?;
        // A reservation, then SIGHUP: dnsmasq re-reads its hosts file.
        let mut hosts = fs::read_to_string(self.dhcp_hosts())?;
        hosts.push_str(&format!("{mac},{ip_addr},{name}\n"));
        fs::write(self.dhcp_hosts(), hosts)?;
        if let Some(d) = &self.dnsmasq {
            crate::signal(d.id(), "HUP")?;
        }
        self.check_services()?;
        let overlay = self.dir.path().join(format!("{name}.qcow2"));
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&image.disk)
            .arg(&overlay)
            .output()?;
        if !out.status.success() {
            bail!("qemu-img create: {}", String::from_utf8_lossy(&out.stderr));
        }
        let tap = format!("tap{last}");
        ip(&["-n", &self.ns, "tuntap", "add", "dev", &tap, "mode", "tap"])?;
        ip(&["-n", &self.ns, "link", "set", &tap, "master", "br0"])?;
        ip(&["-n", &self.ns, "link", "set", &tap, "up"])?;
        let console = self.dir.path().join(format!("{name}.console"));
        // The seed's address in the SMBIOS serial, as Shoal's agent gives it.
        let smbios =
            crate::rawboot::smbios_serial(&format!("http://{LAB_GATEWAY}:{SEED_PORT}/{name}/"));
        let child = lab_cmd(&self.ns, "qemu-system-x86_64")
            .args(["-name", name, "-machine", "q35,accel=tcg", "-cpu", "max"])
            .args(["-smp", &vcpus.to_string(), "-m", &format!("{memory_mib}M")])
            .args(["-nodefaults", "-nographic", "-no-user-config"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .args(["-append", &image.cmdline])
            .args(["-smbios", &smbios])
            .arg("-drive")
            .arg(format!(
                "if=virtio,format=qcow2,cache=unsafe,file={}",
                overlay.display()
            ))
            .args([
                "-netdev",
                &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac={mac}"),
                "-device",
                "virtio-rng-pci",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting QEMU for {name}"))?;
        self.vms.push(LabVm {
            name: name.to_owned(),
            ip: ip_addr,
            console,
            started: Instant::now(),
            child,
        });
        Ok(())
    }

    /// The VM named `name`.
    pub fn vm(&self, name: &str) -> Result<&LabVm> {
        self.vms
            .iter()
            .find(|v| v.name == name)
            .with_context(|| format!("no VM {name} in the lab"))
    }

    /// Fails when a VM's QEMU, dnsmasq or the seed server has exited, or when a
    /// guest's cloud-init found no seed (it then never configures Kubernetes, so
    /// waiting longer cannot help).
    pub fn check_alive(&mut self) -> Result<()> {
        self.check_services()?;
        for vm in &mut self.vms {
            if let Some(status) = vm.child.try_wait()? {
                bail!(
                    "QEMU of {} exited ({status}); its console ends with:\n{}",
                    vm.name,
                    tail(&vm.console, 40)
                );
            }
        }
        for vm in &self.vms {
            let console = fs::read(&vm.console).unwrap_or_default();
            if String::from_utf8_lossy(&console).contains("Used fallback datasource") {
                bail!(
                    "{}'s cloud-init got no seed from DHCP and http://{LAB_GATEWAY}:{SEED_PORT}/{}/ \
                     (it fell back to no datasource); its console ends with:\n{}\n{}",
                    vm.name,
                    vm.name,
                    tail(&vm.console, 60),
                    self.service_logs()
                );
            }
        }
        Ok(())
    }

    /// The last `lines` lines of every VM's console, for a failure message.
    pub fn consoles(&self, lines: usize) -> String {
        self.vms
            .iter()
            .map(|vm| format!("--- {} console ---\n{}", vm.name, tail(&vm.console, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs `program` with `args` inside the lab namespace.
    pub fn run(&self, program: &Path, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(program)
            .args(args)
            .output()
            .with_context(|| format!("running {} in {}", program.display(), self.ns))
    }

    /// Writes `content` to `file` in the lab's directory and returns its path.
    pub fn write(&self, file: &str, content: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(file);
        fs::write(&path, content)?;
        Ok(path)
    }

    /// Polls `f` every `every` until it returns `Some`, failing after `timeout` with
    /// the consoles' last lines, or as soon as a VM's QEMU exits.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut f: impl FnMut(&Lab) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut last_err = String::new();
        loop {
            self.check_alive()?;
            match f(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last_err = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not after {timeout:?} (last error: {last_err})\n{}\n{}",
                    self.consoles(60),
                    self.service_logs()
                );
            }
            std::thread::sleep(every);
        }
    }
}

/// The last `lines` lines of `path`.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Lab {
    fn drop(&mut self) {
        for vm in &mut self.vms {
            stop(&mut vm.child);
        }
        for child in [self.dnsmasq.as_mut(), self.http.as_mut()]
            .into_iter()
            .flatten()
        {
            stop(child);
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        if std::env::var_os("SHOAL_KEEP_LAB").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept the lab's files in {}", self.dir.path().display());
        }
    }
}
