//! QEMU's argv rendered as pure data from a [`VmSpec`], tested against golden files.

use std::path::Path;

use super::spec::{Boot, VmSpec};

/// The block node name of a VM's disk.
pub const DISK_NODE: &str = "disk0";

/// Escapes a value for QEMU's `key=value,...` option syntax (a comma is written `,,`).
pub fn escape_opt(value: &str) -> String {
    value.replace(',', ",,")
}

fn path_opt(path: &Path) -> String {
    escape_opt(&path.to_string_lossy())
}

/// Renders the arguments (without the binary) that launch `spec` as a detached QEMU.
///
/// The VM gets no devices but the ones listed here (`-nodefaults`): its console goes to
/// `<state_dir>/console.log`, QMP listens on `<state_dir>/qmp.sock`, and QEMU
/// daemonizes after writing `<state_dir>/qemu.pid`.
pub fn render(spec: &VmSpec) -> Vec<String> {
    let paths = spec.paths();
    let mut argv: Vec<String> = Vec::new();
    let mut push = |args: &[&str]| argv.extend(args.iter().map(|a| (*a).to_string()));
    push(&[
        "-name",
        &format!("guest={},process=shoal-{}", spec.name, spec.name),
    ]);
    push(&["-machine", &format!("q35,accel={}", spec.accel.as_str())]);
    push(&[
        "-cpu",
        match spec.accel {
            super::Accel::Kvm => "host",
            super::Accel::Tcg => "max",
        },
    ]);
    push(&["-smp", &spec.vcpus.to_string()]);
    push(&["-m", &format!("{}M", spec.memory_mib)]);
    push(&["-nodefaults", "-nographic", "-no-user-config"]);
    push(&[
        "-smbios",
        &format!("type=1,serial={}", escape_opt(&spec.serial)),
    ]);
    push(&[
        "-chardev",
        &format!("file,id=console,path={}", path_opt(&paths.console)),
        "-serial",
        "chardev:console",
    ]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=qmp,path={},server=on,wait=off",
            path_opt(&paths.qmp)
        ),
        "-mon",
        "chardev=qmp,mode=control",
    ]);
    if let Boot::Kernel {
        kernel,
        initrd,
        cmdline,
        ..
    } = &spec.boot
    {
        push(&["-kernel", &kernel.to_string_lossy()]);
        if let Some(initrd) = initrd {
            push(&["-initrd", &initrd.to_string_lossy()]);
        }
        push(&["-append", cmdline]);
    }
    if let Some(overlay) = spec.boot.overlay() {
        // A named block node, so that a live migration can mirror it
        // (`drive-mirror` on the source, an NBD export of it on the target).
        let blockdev = serde_json::json!({
            "driver": "qcow2",
            "node-name": DISK_NODE,
            "cache": {"direct": false},
            "file": {"driver": "file", "filename": overlay.to_string_lossy()},
        });
        push(&[
            "-blockdev",
            &blockdev.to_string(),
            "-device",
            // The guest sees a write-back cache and flushes it, as with the former
            // `-drive cache=writeback`; a -blockdev device would otherwise default
            // to write-through, an fsync per write (etcd in the guest slowed down).
            &format!("virtio-blk-pci,drive={DISK_NODE},write-cache=on"),
        ]);
    }
    // Entropy for the guest's TLS and key generation from its first second: under
    // emulation the kernel's own pool fills slowly.
    push(&["-device", "virtio-rng-pci"]);
    if let Some(tap) = &spec.tap {
        push(&[
            "-netdev",
            &format!(
                "tap,id=net0,ifname={},script=no,downscript=no",
                escape_opt(&tap.ifname)
            ),
            "-device",
            &format!("virtio-net-pci,netdev=net0,mac={}", tap.mac),
        ]);
    }
    if spec.incoming {
        push(&["-incoming", "defer"]);
    }
    push(&["-daemonize", "-pidfile", &paths.pidfile.to_string_lossy()]);
    argv
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::vm::spec::{Accel, CpuPriority, Tap};

    fn base() -> VmSpec {
        VmSpec {
            name: "m1".into(),
            vcpus: NonZeroU32::new(2).expect("nonzero"),
            memory_mib: NonZeroU32::new(2048).expect("nonzero"),
            accel: Accel::Kvm,
            boot: Boot::None,
            serial: "ds=nocloud;s=http://10.0.0.1/m1/".into(),
            tap: None,
            state_dir: "/var/lib/shoal/vms/m1".into(),
            cpu_priority: CpuPriority::Normal,
            incoming: false,
        }
    }

    /// Compares `argv` with `testdata/<name>.argv` (one argument per line);
    /// `SHOAL_UPDATE_GOLDEN=1` rewrites the file instead.
    fn golden(name: &str, argv: &[String]) {
        let rendered: String = argv.iter().map(|a| format!("{a}\n")).collect();
        crate::golden::check(&format!("{name}.argv"), &rendered);
    }

    #[test]
    fn kernel_boot_with_tap_on_kvm() {
        let spec = VmSpec {
            boot: Boot::Kernel {
                kernel: "/var/lib/shoal/releases/test/vmlinuz".into(),
                initrd: Some("/var/lib/shoal/releases/test/initrd.img".into()),
                cmdline: "console=ttyS0 quiet".into(),
                overlay_path: None,
            },
            tap: Some(Tap {
                ifname: "shoal-m1".into(),
                mac: "52:54:00:12:34:56".into(),
            }),
            ..base()
        };
        golden("kernel-tap-kvm", &render(&spec));
    }

    #[test]
    fn disk_boot_on_tcg() {
        let spec = VmSpec {
            accel: Accel::Tcg,
            vcpus: NonZeroU32::MIN,
            boot: Boot::Disk {
                overlay_path: "/var/lib/shoal/vms/m1/disk.qcow2".into(),
            },
            ..base()
        };
        golden("disk-tcg", &render(&spec));
    }

    #[test]
    fn kernel_with_disk_on_tcg() {
        let spec = VmSpec {
            accel: Accel::Tcg,
            boot: Boot::Kernel {
                kernel: "/var/cache/shoal/k8s/vmlinuz".into(),
                initrd: Some("/var/cache/shoal/k8s/initrd.img".into()),
                cmdline: "root=LABEL=shoal-root rw console=ttyS0".into(),
                overlay_path: Some("/var/lib/shoal/vms/m1/disk.qcow2".into()),
            },
            ..base()
        };
        golden("kernel-disk-tcg", &render(&spec));
    }

    #[test]
    fn commas_are_escaped() {
        let spec = VmSpec {
            serial: "ds=nocloud;s=http://10.0.0.1/a,b/".into(),
            state_dir: "/tmp/odd,dir".into(),
            cpu_priority: CpuPriority::Normal,
            ..base()
        };
        golden("escaped-commas", &render(&spec));
    }
}
