//! A provisioning network for `shoal pxe`, in two namespaces:
//!
//! - the network (`<prefix>n`): bridge `br0` at `10.78.0.1/24` and Debian's dnsmasq
//!   as its own DHCP server (addresses only, no boot options), as a site's network
//!   would have;
//! - the boot server (`<prefix>s`): a veth into the bridge at [`PXE_SERVER`],
//!   `shoal server` on its loopback (no controllers, agent or gateway) and
//!   `shoal pxe --inventory` on the veth, keeping the inventory in that server.
//!
//! A joining lab ([`PxeLab::joining`]) adds a production network, bridge `br1` at
//! `10.79.0.1/24` with the boot server's API on it at [`PRODUCTION_SERVER`], a
//! production VLAN ([`PRODUCTION_VLAN`]) on the provisioning bridge, whose frames
//! reach the boot server at [`VLAN_SERVER`] through an access port
//! ([`crate::vlanport`]) and are routed to the API's address, and serves the host agent's initrd layer (`images/build-host-layer.sh`) after the
//! image's, with `--join-kubeconfig`: machines then come up running `shoal agent`.
//!
//! Machines are TCG VMs on taps of the bridge whose virtio NIC carries the iPXE
//! option ROM of Debian's `ipxe-qemu`, booted with `-boot n`: the real PXE client
//! firmware asks the network. Every process is stopped by the PID recorded at
//! launch when the lab is dropped, and both namespaces are deleted.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::hosts::ip;
use crate::kubelab::tail;
use crate::rawboot::GuestImage;
use crate::shoal_bin;
use crate::vlanport::VlanPort;

/// The boot server's address.
pub const PXE_SERVER: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
/// The boot server's address on the production network (a joining lab's), where
/// the machines' agents reach the API.
pub const PRODUCTION_SERVER: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);
/// The production VLAN's id on the provisioning network (a joining lab's).
pub const PRODUCTION_VLAN: u16 = 80;
/// The boot server's address on that VLAN: the gateway of the machines on it.
pub const VLAN_SERVER: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 2);
/// Its HTTP port.
pub const PXE_HTTP_PORT: u16 = 8080;
/// `shoal pxe --profile`s: the first machine discovered is a control plane, the
/// rest workers.
pub const PROFILES: [&str; 2] = ["first=control-plane:1", "rest=worker"];
/// The iPXE option ROM QEMU loads for its virtio NIC (QEMU's default `romfile`).
pub const VIRTIO_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

/// One machine of the lab.
pub struct PxeVm {
    /// Its MAC.
    pub mac: String,
    /// Its serial console's file.
    pub console: PathBuf,
    /// When QEMU was launched.
    pub started: Instant,
    child: Child,
}

/// The lab.
pub struct PxeLab {
    /// The network's namespace.
    pub net: String,
    /// The boot server's namespace.
    pub srv: String,
    dir: tempfile::TempDir,
    dnsmasq: Option<Child>,
    server: Option<Child>,
    pxe: Option<Child>,
    /// The machines, in launch order.
    pub vms: Vec<PxeVm>,
    /// Whether machines boot the host agent's layer (and so need more memory).
    joining: bool,
    /// A joining lab's production VLAN port.
    vlan: Option<VlanPort>,
}

pub(crate) fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

pub(crate) fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

impl PxeLab {
    /// Creates both namespaces, starts dnsmasq and `shoal pxe` serving `image`,
    /// with its default provisioning timeout.
    pub fn new(prefix: &str, image: &GuestImage) -> Result<Self> {
        Self::with_timeout(prefix, image, 900)
    }

    /// As [`PxeLab::new`], with `provision_timeout` seconds to phone home. The
    /// seed directory ([`PxeLab::seed_dir`]) starts empty: every machine gets the
    /// default seed until a test writes one for its MAC.
    pub fn with_timeout(prefix: &str, image: &GuestImage, provision_timeout: u64) -> Result<Self> {
        Self::start(prefix, image, provision_timeout, None, true)
    }

    /// As [`PxeLab::with_timeout`], for machines that join the host cluster: the
    /// production network, the API listening on it, and `shoal pxe` serving the
    /// host agent's layer ([`host_layer`]) and rendering every BareMetalMachine's
    /// join seed with a kubeconfig for [`PRODUCTION_SERVER`].
    pub fn joining(prefix: &str, image: &GuestImage, provision_timeout: u64) -> Result<Self> {
        let layer = host_layer()?;
        Self::start(prefix, image, provision_timeout, Some(layer), true)
    }

    /// As [`PxeLab::joining`], with `shoal pxe` leaving IPv6 router solicitations
    /// unanswered (every lab answers them otherwise, as this network has no
    /// router): the benchmark's comparison.
    pub fn joining_without_router_answers(
        prefix: &str,
        image: &GuestImage,
        provision_timeout: u64,
    ) -> Result<Self> {
        let layer = host_layer()?;
        Self::start(prefix, image, provision_timeout, Some(layer), false)
    }

    fn start(
        prefix: &str,
        image: &GuestImage,
        provision_timeout: u64,
        layer: Option<PathBuf>,
        answer_router_solicitations: bool,
    ) -> Result<Self> {
        if !rustix::process::geteuid().is_root() {
            bail!("the PXE lab needs root (namespaces, taps): run the e2e tests as root (CI does)");
        }
        for f in [
            "/usr/lib/ipxe/undionly.kpxe",
            "/usr/lib/ipxe/ipxe.efi",
            VIRTIO_ROM,
        ] {
            if !Path::new(f).exists() {
                bail!("{f} is missing: run scripts/setup.sh (it installs ipxe and ipxe-qemu)");
            }
        }
        let net = format!("{prefix}n");
        let srv = format!("{prefix}s");
        for ns in [&net, &srv] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns])?;
        }
        let mut lab = PxeLab {
            net: net.clone(),
            srv: srv.clone(),
            dir: tempfile::Builder::new().prefix("shoal-pxelab-").tempdir()?,
            dnsmasq: None,
            server: None,
            pxe: None,
            vms: Vec::new(),
            joining: layer.is_some(),
            vlan: None,
        };
        ip(&["-n", &net, "link", "set", "lo", "up"])?;
        ip(&["-n", &srv, "link", "set", "lo", "up"])?;
        ip(&["-n", &net, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net, "addr", "add", "10.78.0.1/24", "dev", "br0"])?;
        ip(&["-n", &net, "link", "set", "br0", "up"])?;
        ip(&[
            "-n", &net, "link", "add", "pxeup", "type", "veth", "peer", "name", "pxe0", "netns",
            &srv,
        ])?;
        ip(&["-n", &net, "link", "set", "pxeup", "master", "br0", "up"])?;
        ip(&[
            "-n",
            &srv,
            "addr",
            "add",
            &format!("{PXE_SERVER}/24"),
            "dev",
            "pxe0",
        ])?;
        ip(&["-n", &srv, "link", "set", "pxe0", "up"])?;
        if layer.is_some() {
            ip(&["-n", &net, "link", "add", "br1", "type", "bridge"])?;
            ip(&["-n", &net, "addr", "add", "10.79.0.1/24", "dev", "br1"])?;
            ip(&["-n", &net, "link", "set", "br1", "up"])?;
            ip(&[
                "-n", &net, "link", "add", "produp", "type", "veth", "peer", "name", "prod0",
                "netns", &srv,
            ])?;
            ip(&["-n", &net, "link", "set", "produp", "master", "br1", "up"])?;
            let addr = format!("{PRODUCTION_SERVER}/24");
            ip(&["-n", &srv, "addr", "add", &addr, "dev", "prod0"])?;
            ip(&["-n", &srv, "link", "set", "prod0", "up"])?;
            // The production VLAN: tagged frames on br0 reach the boot server through
            // an access port on that VLAN (in user space: this kernel has no 8021q).
            lab.vlan = Some(VlanPort::start(
                &net,
                "br0",
                PRODUCTION_VLAN,
                &srv,
                &format!("vlan{PRODUCTION_VLAN}"),
                &format!("{VLAN_SERVER}/24"),
            )?);
        }

        let log = fs::File::create(lab.dir.path().join("dnsmasq.log"))?;
        lab.dnsmasq = Some(
            in_ns(&net, "dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--port=0",
                    "--interface=br0",
                    "--bind-interfaces",
                    "--log-dhcp",
                    "--log-facility=-",
                    "--dhcp-range=10.78.0.100,10.78.0.200,12h",
                    "--dhcp-option=option:router,10.78.0.1",
                    "--pid-file=",
                ])
                .arg(format!(
                    "--dhcp-leasefile={}",
                    lab.dir.path().join("leases").display()
                ))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting dnsmasq")?,
        );
        let log = fs::File::create(lab.dir.path().join("server.log"))?;
        lab.server = Some(
            in_ns(&srv, &shoal_bin()?.display().to_string())
                .arg("server")
                .arg("--data-dir")
                .arg(lab.data_dir())
                .args(match layer {
                    // The admin kubeconfig still names loopback.
                    Some(_) => vec![
                        "--listen".to_owned(),
                        "0.0.0.0:6443".to_owned(),
                        "--tls-san".to_owned(),
                        PRODUCTION_SERVER.to_string(),
                    ],
                    None => vec!["--listen".to_owned(), "127.0.0.1:6443".to_owned()],
                })
                .args([
                    "--local-agent=false",
                    "--gateway=false",
                    "--controllers=false",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting shoal server")?,
        );
        lab.wait_listening(&srv.clone(), "tcp", 6443, "shoal server")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !lab.kubeconfig().exists() {
            if Instant::now() > deadline {
                bail!(
                    "shoal server wrote no admin kubeconfig in 20 s\n{}",
                    lab.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Traversable by the users other tests' daemons run QEMU as (libvirt's).
        fs::set_permissions(
            lab.dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        fs::create_dir_all(lab.seed_dir())?;
        let mut join_args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(layer) = &layer {
            // The agents' kubeconfig: the admin's, at the API's production address.
            let admin = fs::read_to_string(lab.kubeconfig())?;
            let join = lab.dir.path().join("join.kubeconfig");
            fs::write(
                &join,
                admin.replace(
                    "https://127.0.0.1:6443",
                    &format!("https://{PRODUCTION_SERVER}:6443"),
                ),
            )?;
            join_args.extend(["--initrd".into(), layer.clone().into_os_string()]);
            join_args.extend(["--join-kubeconfig".into(), join.into_os_string()]);
        }
        if answer_router_solicitations {
            join_args.push("--answer-router-solicitations".into());
        }
        let log = fs::File::create(lab.dir.path().join("pxe.log"))?;
        lab.pxe = Some(
            in_ns(&srv, &shoal_bin()?.display().to_string())
                .arg("--kubeconfig")
                .arg(lab.kubeconfig())
                .args([
                    "pxe",
                    "--inventory",
                    "--interface",
                    "pxe0",
                    "--address",
                    &PXE_SERVER.to_string(),
                    "--http-port",
                    &PXE_HTTP_PORT.to_string(),
                    "--cmdline",
                    "console=ttyS0 quiet",
                    "--provision-timeout",
                    &provision_timeout.to_string(),
                    "--profile",
                    PROFILES[0],
                    "--profile",
                    PROFILES[1],
                ])
                .arg("--seed-dir")
                .arg(lab.seed_dir())
                .arg("--kernel")
                .arg(&image.kernel)
                .arg("--initrd")
                .arg(&image.initrd)
                .args(join_args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting shoal pxe")?,
        );
        lab.wait_listening(&net.clone(), "udp", 67, "dnsmasq")?;
        lab.wait_listening(&srv.clone(), "tcp", PXE_HTTP_PORT, "shoal pxe")?;
        Ok(lab)
    }

    fn wait_listening(&mut self, ns: &str, proto: &str, port: u16, what: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let flag = if proto == "udp" { "-Hlun" } else { "-Hltn" };
        loop {
            let mut exited = None;
            for (name, child) in [
                ("dnsmasq", &mut self.dnsmasq),
                ("shoal server", &mut self.server),
                ("shoal pxe", &mut self.pxe),
            ] {
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    exited = Some(format!("{name} exited ({status})"));
                }
            }
            if let Some(what) = exited {
                bail!("{what}\n{}", self.logs());
            }
            let out = in_ns(ns, "ss")
                .args([flag, &format!("sport = :{port}")])
                .output()?;
            if out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{what} does not listen on {proto} {port} after 20 s\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of dnsmasq's and `shoal pxe`'s logs.
    pub fn logs(&self) -> String {
        ["dnsmasq.log", "server.log", "pxe.log"]
            .iter()
            .map(|f| format!("--- {f} ---\n{}", tail(&self.dir.path().join(f), 40)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `shoal pxe --seed-dir`: `<mac, hyphenated>/{meta-data,user-data}` per machine.
    pub fn seed_dir(&self) -> PathBuf {
        self.dir.path().join("seeds")
    }

    /// The lab's directory (logs, seeds, consoles); removed with the lab.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's admin kubeconfig (its address is on the boot server's loopback).
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("admin.kubeconfig")
    }

    /// Runs the `shoal` CLI against the lab's server, in the boot server's namespace.
    pub fn shoal(&self, args: &[&str]) -> Result<Output> {
        Ok(in_ns(&self.srv, &shoal_bin()?.display().to_string())
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()?)
    }

    /// Runs Debian's kubectl against the lab's server, in the boot server's namespace.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        Ok(
            in_ns(&self.srv, &crate::kubectl_bin()?.display().to_string())
                .arg("--kubeconfig")
                .arg(self.kubeconfig())
                .args(args)
                .output()?,
        )
    }

    /// How many frames tagged with [`PRODUCTION_VLAN`] reached the boot server (a
    /// joining lab's; 0 otherwise).
    pub fn vlan_frames(&self) -> Result<u64> {
        self.vlan.as_ref().map_or(Ok(0), VlanPort::tagged_frames_in)
    }

    /// Host `name` from the lab's API, after checking that it is Ready; its
    /// underlay address.
    pub fn ready_host_underlay(&self, name: &str) -> Result<String> {
        let out = self.kubectl(&["get", "host", name, "-o", "json"])?;
        if !out.status.success() {
            bail!(
                "kubectl get host {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let host: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let ready = host["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .with_context(|| format!("Host {name} has no Ready condition: {host:#}"))?;
        if ready["status"] != "True" {
            bail!("Host {name} is not Ready: {host:#}");
        }
        host["status"]["underlayIp"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("Host {name} has no underlay address: {host:#}"))
    }

    /// dnsmasq's lease file: `<expiry> <mac> <ip> <name> <client id>` per lease.
    pub fn leases(&self) -> String {
        fs::read_to_string(self.dir.path().join("leases")).unwrap_or_default()
    }

    /// Launches a machine with `mac` on a new tap: network boot through the iPXE ROM
    /// (`kernel` is `None`), or, for the baseline, the same image booted from local
    /// files with `append` as its command line.
    pub fn launch(&mut self, mac: &str, direct: Option<(&GuestImage, &str)>) -> Result<()> {
        self.launch_with(mac, direct, None)
    }

    /// As [`PxeLab::launch`], with a second NIC of `production` (no boot ROM) on a
    /// joining lab's production bridge when given. In a joining lab, 768 MiB: room
    /// for the host agent's layer, unpacked.
    pub fn launch_with(
        &mut self,
        mac: &str,
        direct: Option<(&GuestImage, &str)>,
        production: Option<&str>,
    ) -> Result<()> {
        let tap = format!("tap{}", self.vms.len());
        ip(&["-n", &self.net, "tuntap", "add", &tap, "mode", "tap"])?;
        ip(&["-n", &self.net, "link", "set", &tap, "master", "br0", "up"])?;
        let console = self.dir.path().join(format!("{tap}.console"));
        let mut cmd = in_ns(&self.net, "qemu-system-x86_64");
        let memory = if production.is_some() || self.joining {
            "768"
        } else {
            "256"
        };
        cmd.args(["-accel", "tcg", "-m", memory, "-nographic", "-nodefaults"])
            .args([
                "-smbios",
                &format!("type=1,serial=SHOAL-LAB-{:02}", self.vms.len()),
            ])
            .args(["-no-reboot", "-serial"])
            .arg(format!("file:{}", console.display()))
            .args([
                "-netdev",
                &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
                "-device",
                &format!(
                    "virtio-net-pci,netdev=n0,mac={mac}{}",
                    if direct.is_none() { ",bootindex=1" } else { "" }
                ),
            ]);
        if let Some(p) = production {
            let prod_tap = format!("ptap{}", self.vms.len());
            ip(&["-n", &self.net, "tuntap", "add", &prod_tap, "mode", "tap"])?;
            ip(&[
                "-n", &self.net, "link", "set", &prod_tap, "master", "br1", "up",
            ])?;
            cmd.args([
                "-netdev",
                &format!("tap,id=n1,ifname={prod_tap},script=no,downscript=no"),
                "-device",
                &format!("virtio-net-pci,netdev=n1,mac={p},romfile="),
            ]);
        }
        match direct {
            None => {}
            Some((image, append)) => {
                cmd.arg("-kernel")
                    .arg(&image.kernel)
                    .arg("-initrd")
                    .arg(&image.initrd)
                    .args(["-append", append]);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting qemu-system-x86_64")?;
        self.vms.push(PxeVm {
            mac: mac.to_owned(),
            console,
            started: Instant::now(),
            child,
        });
        Ok(())
    }

    /// Waits until machine `i`'s console shows `marker`; the time since its launch
    /// and the console's line with it.
    pub fn wait_console(
        &mut self,
        i: usize,
        marker: &str,
        timeout: Duration,
    ) -> Result<(Duration, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let vm = &mut self.vms[i];
            let text = fs::read_to_string(&vm.console).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(marker)) {
                return Ok((vm.started.elapsed(), line.to_owned()));
            }
            let why = match vm.child.try_wait()? {
                Some(status) => Some(format!(
                    "machine {} (QEMU) exited ({status}) before {marker:?}",
                    vm.mac
                )),
                // SeaBIOS found nothing to boot: no point waiting.
                None if text.contains("No bootable device") => {
                    Some(format!("machine {} found nothing to boot", vm.mac))
                }
                None if Instant::now() > deadline => Some(format!(
                    "no {marker:?} on machine {}'s console in {timeout:?}",
                    vm.mac
                )),
                None => None,
            };
            if let Some(why) = why {
                let console = tail(&self.vms[i].console, 30);
                bail!("{why}\nconsole:\n{console}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops machine `i` (by the PID recorded at launch).
    pub fn stop_vm(&mut self, i: usize) {
        if let Some(vm) = self.vms.get_mut(i) {
            stop(&mut vm.child);
        }
    }

    /// Runs `program` with `args` in the network's namespace (where a site's own
    /// machines would be).
    pub fn run_on_network(&self, program: &str, args: &[&str]) -> Result<Output> {
        Ok(in_ns(&self.net, program).args(args).output()?)
    }

    /// The boot server's journal, `GET /machines`.
    pub fn journal(&self) -> Result<serde_json::Value> {
        let url = format!("http://{PXE_SERVER}:{PXE_HTTP_PORT}/machines");
        let out = self.run_on_network("curl", &["-sf", "--max-time", "10", &url])?;
        if !out.status.success() {
            bail!("GET {url}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

impl Drop for PxeLab {
    fn drop(&mut self) {
        for vm in &mut self.vms {
            stop(&mut vm.child);
        }
        for child in [&mut self.pxe, &mut self.server, &mut self.dnsmasq]
            .into_iter()
            .flatten()
        {
            stop(child);
        }
        self.vlan = None;
        for ns in [&self.net, &self.srv] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// The host agent's initrd layer for the `shoal` under test, built (or found up
/// to date) by `images/build-host-layer.sh` at `images/out/host-layer.img`.
pub fn host_layer() -> Result<PathBuf> {
    let root = crate::workspace_root();
    let out = root.join("images/out/host-layer.img");
    let built = Command::new(root.join("images/build-host-layer.sh"))
        .arg(shoal_bin()?)
        .arg(&out)
        .output()
        .context("running images/build-host-layer.sh")?;
    if !built.status.success() {
        bail!(
            "images/build-host-layer.sh failed: {}",
            String::from_utf8_lossy(&built.stderr)
        );
    }
    Ok(out)
}

/// Checks that a BareMetalMachine's `status.history` is in time order.
pub fn history_in_time_order(machine: &serde_json::Value) -> Result<()> {
    let history = machine["status"]["history"]
        .as_array()
        .context("status.history")?;
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> = history
        .iter()
        .map(|t| chrono::DateTime::parse_from_rfc3339(t["at"].as_str().unwrap_or_default()))
        .collect::<Result<_, _>>()?;
    if !times.windows(2).all(|w| w[0] <= w[1]) {
        bail!("the transitions' times go backwards: {history:#?}");
    }
    Ok(())
}
