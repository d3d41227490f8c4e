//! What a VM is: the validated input from which its argv and its state files follow.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The accelerator QEMU runs the guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software emulator: slow, but works everywhere.
    Tcg,
}

impl Accel {
    /// The name QEMU uses for this accelerator.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// How the guest boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Boot {
    /// No boot device: the guest sits in firmware (tests, and the KVM probe).
    None,
    /// Direct kernel boot.
    Kernel {
        /// The kernel image.
        kernel: PathBuf,
        /// The initrd, if any.
        initrd: Option<PathBuf>,
        /// The kernel command line.
        cmdline: String,
        /// The VM's copy-on-write overlay, when the kernel mounts its root from the
        /// release's disk (a kernel, initrd and disk released together).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        overlay_path: Option<PathBuf>,
    },
    /// Boot from the VM's copy-on-write qcow2 overlay on the release's image.
    Disk {
        /// The overlay disk.
        overlay_path: PathBuf,
    },
}

impl Boot {
    /// The VM's copy-on-write overlay disk, if it boots with one.
    pub fn overlay(&self) -> Option<&Path> {
        match self {
            Boot::None => None,
            Boot::Kernel { overlay_path, .. } => overlay_path.as_deref(),
            Boot::Disk { overlay_path } => Some(overlay_path),
        }
    }
}

/// The VM's NIC: a tap device (created by the network side) and the guest's MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tap {
    /// The tap interface name (at most 15 bytes).
    pub ifname: String,
    /// The guest NIC's MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

/// How a VM's threads share a contended host CPU with other VMs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuPriority {
    /// The host's default share: control-plane machines, whose etcd and API server
    /// fail requests and lose leases when starved.
    #[default]
    Normal,
    /// A smaller share (nice [`CpuPriority::BACKGROUND_NICE`]) that yields to normal
    /// VMs when the host's CPUs are overcommitted and costs nothing when they idle:
    /// worker machines.
    Background,
}

impl CpuPriority {
    /// The nice value of background VMs: about a third of a normal VM's CPU weight.
    pub const BACKGROUND_NICE: i32 = 5;

    /// The nice value of the VM's threads.
    pub fn nice(self) -> i32 {
        match self {
            CpuPriority::Normal => 0,
            CpuPriority::Background => Self::BACKGROUND_NICE,
        }
    }
}

/// Everything needed to run one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// The VM's name (the Machine's name): letters, digits, `.`, `_` and `-`.
    pub name: String,
    /// Virtual CPUs.
    pub vcpus: NonZeroU32,
    /// Guest memory in MiB.
    pub memory_mib: NonZeroU32,
    /// The accelerator (see [`crate::vm::kvm::probe_kvm`]).
    pub accel: Accel,
    /// How the guest boots.
    pub boot: Boot,
    /// The SMBIOS type 1 serial, e.g. `ds=nocloud-net;s=http://10.0.0.1/m1/` for cloud-init.
    pub serial: String,
    /// The NIC, if the VM has one.
    pub tap: Option<Tap>,
    /// The directory holding the VM's pidfile, QMP socket, console log and spec.
    pub state_dir: PathBuf,
    /// Its share of a contended host CPU (absent in specs saved before it existed).
    #[serde(default)]
    pub cpu_priority: CpuPriority,
    /// Start paused, waiting for a live migration to bring the guest's state
    /// (QEMU's `-incoming defer`) instead of booting it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incoming: bool,
}

/// A [`VmSpec`] that cannot be run, naming the field and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid VM spec: {field}: {reason}")]
pub struct SpecError {
    /// The offending field.
    pub field: &'static str,
    /// Why it is invalid.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError {
        field,
        reason: reason.into(),
    }
}

impl VmSpec {
    /// Checks the fields QEMU would otherwise reject late, or misparse.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.is_empty() || self.name.len() > 63 {
            return Err(invalid("name", "must be 1 to 63 characters"));
        }
        if !self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(invalid(
                "name",
                "may hold only ASCII letters, digits, '.', '_' and '-'",
            ));
        }
        if !self.state_dir.is_absolute() {
            return Err(invalid("state_dir", "must be an absolute path"));
        }
        if self.serial.contains('\n') {
            return Err(invalid("serial", "must be one line"));
        }
        if let Some(tap) = &self.tap {
            if tap.ifname.is_empty() || tap.ifname.len() > 15 {
                return Err(invalid("tap.ifname", "must be 1 to 15 bytes"));
            }
            if tap.ifname.contains([',', '/', ' ']) {
                return Err(invalid("tap.ifname", "may not hold ',', '/' or spaces"));
            }
            let octets: Vec<&str> = tap.mac.split(':').collect();
            if octets.len() != 6
                || !octets
                    .iter()
                    .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err(invalid("tap.mac", "must look like 52:54:00:12:34:56"));
            }
        }
        Ok(())
    }

    /// The paths of this VM's state files.
    pub fn paths(&self) -> StatePaths {
        StatePaths::new(&self.state_dir)
    }
}

/// The files a VM keeps in its state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    /// The state directory itself.
    pub dir: PathBuf,
    /// QEMU's pidfile.
    pub pidfile: PathBuf,
    /// The QMP unix socket.
    pub qmp: PathBuf,
    /// The serial console log.
    pub console: PathBuf,
    /// The spec the VM was launched with, as JSON (read back on adopt).
    pub spec: PathBuf,
}

impl StatePaths {
    /// The state files under `dir`.
    pub fn new(dir: &Path) -> Self {
        StatePaths {
            dir: dir.to_path_buf(),
            pidfile: dir.join("qemu.pid"),
            qmp: dir.join("qmp.sock"),
            console: dir.join("console.log"),
            spec: dir.join("spec.json"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            name: "m1".into(),
            vcpus: NonZeroU32::MIN,
            cpu_priority: CpuPriority::Normal,
            incoming: false,
            memory_mib: NonZeroU32::new(128).expect("nonzero"),
            accel: Accel::Tcg,
            boot: Boot::None,
            serial: "ds=nocloud".into(),
            tap: Some(Tap {
                ifname: "tap-m1".into(),
                mac: "52:54:00:12:34:56".into(),
            }),
            state_dir: "/var/lib/shoal/vms/m1".into(),
        }
    }

    #[test]
    fn validates_fields() {
        assert_eq!(spec().validate(), Ok(()));
        let mut s = spec();
        s.name = "a,b".into();
        assert_eq!(s.validate().map_err(|e| e.field), Err("name"));
        let mut s = spec();
        s.state_dir = "rel".into();
        assert_eq!(s.validate().map_err(|e| e.field), Err("state_dir"));
        let mut s = spec();
        s.tap = Some(Tap {
            ifname: "a-very-long-interface".into(),
            mac: "52:54:00:12:34:56".into(),
        });
        assert_eq!(s.validate().map_err(|e| e.field), Err("tap.ifname"));
        let mut s = spec();
        s.tap = Some(Tap {
            ifname: "t".into(),
            mac: "52:54:00:12:34".into(),
        });
        assert_eq!(s.validate().map_err(|e| e.field), Err("tap.mac"));
    }
}
