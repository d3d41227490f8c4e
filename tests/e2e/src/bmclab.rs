//! BMCs for the PXE lab: sushy-tools' Redfish emulator (PyPI) in front of a libvirt
//! daemon that runs the machines as QEMU domains on the lab's bridge.
//!
//! Both run in the lab network's namespace, so libvirt's taps join that
//! namespace's `br0` and nothing touches the root namespace; the emulator listens
//! on the bridge's address, [`BMC_ADDR`], where `shoal pxe` reaches it over the
//! provisioning network. The daemon is private to the lab: its sockets are in the
//! lab's directory (`qemu:///system?socket=…`). Its domains are destroyed and
//! undefined, and every process is stopped by the PID recorded at launch, when
//! the lab is dropped.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::kubelab::tail;
use crate::pxelab::{in_ns, stop};

/// The Redfish emulator's address: the lab bridge's.
pub const BMC_ADDR: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
/// Its port.
pub const BMC_PORT: u16 = 8000;
/// The emulator's account.
pub const BMC_USER: &str = "shoal-admin";
/// Its password.
pub const BMC_PASSWORD: &str = "bmc-s3cret";
/// The sushy-tools version `scripts/setup.sh` installs.
const SUSHY_VERSION: &str = "2.2.0";

/// The emulator and its libvirt daemon.
pub struct BmcLab {
    ns: String,
    dir: PathBuf,
    prefix: String,
    libvirtd: Option<Child>,
    sushy: Option<Child>,
    domains: Vec<String>,
}

/// sushy-tools' virtualenv (`scripts/setup.sh` makes it).
fn sushy_venv() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let venv = PathBuf::from(home).join(format!(".cache/shoal/sushy-tools-{SUSHY_VERSION}"));
    if !venv.join("bin/sushy-emulator").exists() {
        bail!(
            "{} is missing: run scripts/setup.sh (it installs sushy-tools and libvirt)",
            venv.display()
        );
    }
    Ok(venv)
}

impl BmcLab {
    /// Starts libvirt and the emulator in namespace `ns`, with their files under
    /// `lab_dir`; domains are named `<prefix>-<name>`.
    pub fn start(ns: &str, lab_dir: &Path, prefix: &str) -> Result<Self> {
        let venv = sushy_venv()?;
        for tool in ["/usr/sbin/libvirtd", "/usr/bin/virsh"] {
            if !Path::new(tool).exists() {
                bail!("{tool} is missing: run scripts/setup.sh (it installs libvirt)");
            }
        }
        let dir = lab_dir.join("bmc");
        fs::create_dir_all(dir.join("sock"))?;
        let mut lab = BmcLab {
            ns: ns.to_owned(),
            dir: dir.clone(),
            prefix: prefix.to_owned(),
            libvirtd: None,
            sushy: None,
            domains: Vec::new(),
        };
        // The daemon's QEMU settings, bind-mounted over /etc/libvirt/qemu.conf in a
        // mount namespace of its own (the machine's file is untouched): QEMU runs
        // as root, so libvirt's KVM check agrees with its probe of QEMU (otherwise
        // it probes QEMU again on every call where /dev/kvm exists but is not the
        // QEMU user's), and QEMU's output goes to files, with no virtlogd.
        let qemu_conf = dir.join("qemu.conf");
        fs::write(
            &qemu_conf,
            "user = \"+0\"\ngroup = \"+0\"\nstdio_handler = \"file\"\nsecurity_driver = \"none\"\n",
        )?;
        let conf = dir.join("libvirtd.conf");
        fs::write(
            &conf,
            format!(
                "unix_sock_dir = \"{}\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n",
                dir.join("sock").display()
            ),
        )?;
        let run = format!(
            "mount --bind {} /etc/libvirt/qemu.conf && exec /usr/sbin/libvirtd --config {} --pid-file {}",
            qemu_conf.display(),
            conf.display(),
            dir.join("libvirtd.pid").display()
        );
        lab.libvirtd = Some(
            in_ns(ns, "unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c", &run])
                .stdout(Stdio::null())
                .stderr(fs::File::create(dir.join("libvirtd.log"))?)
                .spawn()
                .context("starting libvirtd")?,
        );
        lab.wait("libvirtd", |lab| {
            Ok(lab.virsh(&["version"])?.status.success())
        })?;

        let hash = std::process::Command::new(venv.join("bin/python"))
            .args([
                "-c",
                "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(rounds=4)).decode())",
                BMC_PASSWORD,
            ])
            .output()?;
        if !hash.status.success() {
            bail!("bcrypt: {}", String::from_utf8_lossy(&hash.stderr));
        }
        fs::write(
            dir.join("htpasswd"),
            format!("{BMC_USER}:{}", String::from_utf8_lossy(&hash.stdout)),
        )?;
        let config = dir.join("sushy.conf");
        fs::write(
            &config,
            format!(
                "SUSHY_EMULATOR_LISTEN_IP = '{BMC_ADDR}'\n\
                 SUSHY_EMULATOR_LISTEN_PORT = {BMC_PORT}\n\
                 SUSHY_EMULATOR_LIBVIRT_URI = '{}'\n\
                 SUSHY_EMULATOR_AUTH_FILE = '{}'\n",
                lab.uri(),
                dir.join("htpasswd").display()
            ),
        )?;
        lab.sushy = Some(
            in_ns(ns, &venv.join("bin/sushy-emulator").display().to_string())
                .arg("--config")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(fs::File::create(dir.join("sushy.log"))?)
                .spawn()
                .context("starting sushy-emulator")?,
        );
        lab.wait("sushy-emulator", |lab| {
            let out = in_ns(&lab.ns, "curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "2",
                ])
                .arg(format!("http://{BMC_ADDR}:{BMC_PORT}/redfish/v1/"))
                .output()?;
            Ok(String::from_utf8_lossy(&out.stdout) != "000")
        })?;
        Ok(lab)
    }

    fn wait(&mut self, what: &str, ready: impl Fn(&Self) -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready(self)? {
                return Ok(());
            }
            let mut exited = None;
            for (name, child) in [
                ("libvirtd", &mut self.libvirtd),
                ("sushy-emulator", &mut self.sushy),
            ] {
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    exited = Some(format!("{name} exited ({status})"));
                }
            }
            if let Some(why) = exited {
                bail!("{why}\n{}", self.logs());
            }
            if Instant::now() > deadline {
                bail!("{what} is not up after 30 s\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The BMC's address, as `spec.bmc.address` names it.
    pub fn address(&self) -> String {
        format!("http://{BMC_ADDR}:{BMC_PORT}")
    }

    /// The lab daemon's libvirt URI.
    pub fn uri(&self) -> String {
        format!(
            "qemu:///system?socket={}",
            self.dir.join("sock/libvirt-sock").display()
        )
    }

    /// Runs virsh against the lab's daemon.
    pub fn virsh(&self, args: &[&str]) -> Result<Output> {
        Ok(std::process::Command::new("/usr/bin/virsh")
            .args(["-c", &self.uri()])
            .args(args)
            .output()?)
    }

    /// The domain name of machine `name`.
    pub fn domain(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Defines (powered off) machine `name` with a virtio NIC of `mac` on the
    /// bridge, whose iPXE ROM is QEMU's default, and its serial console in a file;
    /// returns the console's path.
    pub fn define(&mut self, name: &str, mac: &str) -> Result<PathBuf> {
        self.define_with(name, mac, None)
    }

    /// As [`BmcLab::define`], with a second virtio NIC of `production` on the
    /// production bridge `br1` (a joining lab's), when given. Machines get 768 MiB:
    /// room for the host agent's initrd layer, unpacked.
    pub fn define_with(
        &mut self,
        name: &str,
        mac: &str,
        production: Option<&str>,
    ) -> Result<PathBuf> {
        let domain = self.domain(name);
        let second = production.map_or(String::new(), |p| {
            format!(
                "<interface type='bridge'><mac address='{p}'/><source bridge='br1'/>\
                 <model type='virtio'/><rom enabled='no'/></interface>"
            )
        });
        let console = self.dir.join(format!("{name}.console"));
        // A domain left by a run that was killed.
        let _ = self.virsh(&["destroy", &domain]);
        let _ = self.virsh(&["undefine", &domain]);
        let xml = format!(
            "<domain type='qemu'><name>{domain}</name><memory unit='MiB'>768</memory><vcpu>1</vcpu>\
             <sysinfo type='smbios'><system><entry name='manufacturer'>Shoal lab</entry>\
             <entry name='serial'>SHOAL-BMC-{name}</entry></system></sysinfo>\
             <os><type arch='x86_64' machine='pc'>hvm</type><smbios mode='sysinfo'/></os>\
             <on_reboot>restart</on_reboot>\
             <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
             <serial type='file'><source path='{}'/><target port='0'/></serial>\
             <interface type='bridge'><mac address='{mac}'/><source bridge='br0'/><model type='virtio'/></interface>\
             {second}</devices></domain>",
            console.display()
        );
        let file = self.dir.join(format!("{name}.xml"));
        fs::write(&file, xml)?;
        let out = self.virsh(&["define", &file.display().to_string()])?;
        if !out.status.success() {
            bail!(
                "virsh define {domain}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.logs()
            );
        }
        self.domains.push(domain);
        Ok(console)
    }

    /// libvirt's state of machine `name`: `running`, `shut off`.
    pub fn state(&self, name: &str) -> Result<String> {
        let out = self.virsh(&["domstate", &self.domain(name)])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The last lines of libvirtd's and the emulator's logs.
    pub fn logs(&self) -> String {
        ["libvirtd.log", "sushy.log"]
            .iter()
            .map(|f| format!("--- {f} ---\n{}", tail(&self.dir.join(f), 30)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for BmcLab {
    fn drop(&mut self) {
        for d in self.domains.clone() {
            let _ = self.virsh(&["destroy", &d]);
            let _ = self.virsh(&["undefine", &d]);
        }
        for child in [&mut self.sushy, &mut self.libvirtd].into_iter().flatten() {
            stop(child);
        }
    }
}
