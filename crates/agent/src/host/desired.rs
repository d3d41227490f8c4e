//! What a Machine asks of this host, as pure data: the VM to run and its port on the
//! cluster network, or the reason it cannot run here.

use std::net::Ipv4Addr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use shoal_api::{Cluster, Machine, MachineRole, Release};

use crate::net::plan::{tap_name, ClusterNet, MacAddr, Port};
use crate::vm::{Accel, Boot, CpuPriority, Tap, VmSpec};

/// The kernel command line when the release names none.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// Why a Machine cannot run on this host: a condition reason and a message a person
/// can act on. `retry` is true when the cause may go away by itself (e.g. the
/// cluster's network is not allocated yet), so the Machine stays Provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The condition reason, e.g. `InsufficientResources`.
    pub reason: &'static str,
    /// What is wrong and what to do.
    pub message: String,
    /// Whether to wait rather than fail.
    pub retry: bool,
}

fn fail(reason: &'static str, message: String) -> Refusal {
    Refusal {
        reason,
        message,
        retry: false,
    }
}

/// What this host has for guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Logical CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
}

/// A Machine's VM and network port, ready to realize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVm {
    /// `<namespace>/<cluster>`.
    pub cluster_key: String,
    /// The cluster's network.
    pub net: ClusterNet,
    /// The VM's port on it.
    pub port: Port,
    /// The VM.
    pub spec: VmSpec,
    /// For disk boots: the release's base image the overlay is made on.
    pub base_disk: Option<PathBuf>,
    /// The Machine's disk size in bytes (the overlay's virtual size).
    pub disk_bytes: u64,
}

/// Inputs besides the Machine that decide its VM.
pub struct Context<'a> {
    /// This host's name.
    pub host: &'a str,
    /// What the host has.
    pub capacity: Capacity,
    /// The accelerator the KVM probe chose.
    pub accel: Accel,
    /// Where VM state directories go.
    pub vms_dir: &'a Path,
}

/// Decides the VM of `machine`, given its cluster and release (if they exist).
pub fn desired_vm(
    ctx: &Context<'_>,
    machine: &Machine,
    cluster: Option<&Cluster>,
    release: Option<&Release>,
) -> Result<DesiredVm, Refusal> {
    let name = machine.metadata.name.clone().unwrap_or_default();
    let ns = machine.metadata.namespace.clone().unwrap_or_default();
    let spec = &machine.spec;

    let millis = spec.size.cpu.as_millis();
    let vcpus = u32::try_from(millis.div_ceil(1000)).unwrap_or(u32::MAX);
    let memory_mib = spec.size.memory.as_bytes() / (1 << 20);
    if vcpus > ctx.capacity.cpus || memory_mib > ctx.capacity.memory_mib {
        return Err(fail(
            "InsufficientResources",
            format!(
                "machine needs {vcpus} vCPU / {memory_mib}Mi but host {} has only {} CPU / {}Mi in all: \
                 choose a smaller size or another host",
                ctx.host, ctx.capacity.cpus, ctx.capacity.memory_mib
            ),
        ));
    }
    let (Some(vcpus), Some(memory)) = (
        NonZeroU32::new(vcpus),
        NonZeroU32::new(u32::try_from(memory_mib).unwrap_or(u32::MAX)),
    ) else {
        return Err(fail(
            "InvalidSize",
            "spec.size: cpu and memory must be positive".into(),
        ));
    };

    let Some(release) = release else {
        return Err(fail(
            "ReleaseNotFound",
            format!(
                "release {:?} does not exist: create it or pick one from 'shoal get releases'",
                spec.release
            ),
        ));
    };
    let Some(cluster) = cluster else {
        return Err(Refusal {
            reason: "ClusterNotFound",
            message: format!("cluster {ns}/{} does not exist (yet)", spec.cluster),
            retry: true,
        });
    };
    let status = cluster.status.as_ref();
    let (Some(vni), Some(cidr)) = (
        status.and_then(|s| s.vni),
        status.and_then(|s| s.node_cidr.clone()),
    ) else {
        return Err(Refusal {
            reason: "NetworkNotAllocated",
            message: format!(
                "cluster {ns}/{} has no VNI and node CIDR in its status yet",
                spec.cluster
            ),
            retry: true,
        });
    };
    let cluster_key = format!("{ns}/{}", spec.cluster);
    let net = ClusterNet::new(&cluster_key, vni, &cidr)
        .map_err(|e| fail("InvalidNetwork", format!("cluster {cluster_key}: {e}")))?;

    let (Some(mac), Some(ip)) = (spec.mac.as_deref(), spec.ip.as_deref()) else {
        return Err(fail(
            "InvalidSpec",
            "spec.mac and spec.ip must both be set before a host can run the machine".into(),
        ));
    };
    let mac: MacAddr = mac
        .parse()
        .map_err(|e: crate::net::PlanError| fail("InvalidSpec", e.to_string()))?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| {
        fail(
            "InvalidSpec",
            format!("spec.ip: {ip:?} is not an IPv4 address"),
        )
    })?;
    net.check_vm_ip(ip)
        .map_err(|e| fail("InvalidSpec", e.to_string()))?;

    let image = &release.spec.image;
    let missing = |what: &str, path: &str| {
        fail(
            "ImageNotFound",
            format!(
                "release {}: {what} {path} does not exist on host {}: install the image there \
                 (Shoal's own images: scripts/setup.sh builds them, or \
                 images/build-kubernetes-image.sh and images/build-test-image.sh) or fix the \
                 release",
                spec.release, ctx.host
            ),
        )
    };
    let base_disk = match &image.disk {
        Some(disk) if !Path::new(disk).is_file() => return Err(missing("disk", disk)),
        Some(disk) => Some(PathBuf::from(disk)),
        None => None,
    };
    let overlay_path = base_disk
        .as_ref()
        .map(|_| vm_dir(ctx.vms_dir, &ns, &name).join("disk.qcow2"));
    let boot = match (&image.kernel, overlay_path) {
        // A kernel (and initrd), with the release's disk as its root when there is one.
        (Some(kernel), overlay_path) => {
            if !Path::new(kernel).is_file() {
                return Err(missing("kernel", kernel));
            }
            if let Some(initrd) = &image.initrd {
                if !Path::new(initrd).is_file() {
                    return Err(missing("initrd", initrd));
                }
            }
            Boot::Kernel {
                kernel: kernel.into(),
                initrd: image.initrd.as_ref().map(PathBuf::from),
                cmdline: image
                    .cmdline
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CMDLINE.to_string()),
                overlay_path,
            }
        }
        (None, Some(overlay_path)) => Boot::Disk { overlay_path },
        (None, None) => {
            return Err(fail(
                "ImageNotFound",
                format!("release {} names neither a kernel nor a disk", spec.release),
            ))
        }
    };

    let tap = tap_name(&ns, &name);
    let vm = VmSpec {
        name: name.clone(),
        vcpus,
        memory_mib: memory,
        accel: ctx.accel,
        boot,
        // `nocloud-net`: cloud-init (22.4, Debian bookworm) fetches an http seed only
        // in its network stage, and that stage ignores a `ds=nocloud` (local) seed.
        serial: format!("ds=nocloud-net;s={}", net.seed_url(&name)),
        tap: Some(Tap {
            ifname: tap.clone(),
            mac: mac.to_string(),
        }),
        state_dir: vm_dir(ctx.vms_dir, &ns, &name),
        // On an overcommitted host the control plane keeps its CPU: a starved etcd
        // fails requests and the guest's controllers lose their leases.
        cpu_priority: match spec.role {
            MachineRole::ControlPlane => CpuPriority::Normal,
            MachineRole::Worker => CpuPriority::Background,
        },
        incoming: false,
    };
    vm.validate()
        .map_err(|e| fail("InvalidSpec", format!("machine {ns}/{name}: {e}")))?;
    Ok(DesiredVm {
        cluster_key,
        net,
        port: Port {
            machine: name,
            tap,
            mac,
            ip,
        },
        spec: vm,
        base_disk,
        disk_bytes: spec.size.disk.as_bytes(),
    })
}

/// The state directory of a Machine's VM.
pub fn vm_dir(vms_dir: &Path, namespace: &str, name: &str) -> PathBuf {
    vms_dir.join(namespace).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{ClusterStatus, MachineSpec, ReleaseImage, ReleaseSpec};

    fn machine(cpu: &str, memory: &str) -> Machine {
        let spec: MachineSpec = serde_json::from_value(serde_json::json!({
            "cluster": "a", "role": "worker", "release": "test",
            "size": {"cpu": cpu, "memory": memory, "disk": "1Gi"},
            "hostName": "h1", "mac": "52:54:00:00:00:0b", "ip": "10.9.0.11"
        }))
        .expect("valid spec");
        let mut m = Machine::new("m1", spec);
        m.metadata.namespace = Some("org-x".into());
        m
    }

    fn cluster() -> Cluster {
        let mut c: Cluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "a", "namespace": "org-x"},
            "spec": {"release": "test", "provider": {"type": "kvm"},
                     "controlPlane": {"replicas": 1, "cpu": "1", "memory": "512Mi", "disk": "1Gi"},
                     "network": {"podCidr": "10.244.0.0/16", "serviceCidr": "10.96.0.0/12"}}
        }))
        .expect("valid cluster");
        c.status = Some(ClusterStatus {
            vni: Some(9),
            node_cidr: Some("10.9.0.0/24".into()),
            ..Default::default()
        });
        c
    }

    fn release(kernel: &Path) -> Release {
        Release::new(
            "test",
            ReleaseSpec {
                kubernetes_version: "1.31.0".into(),
                image: ReleaseImage {
                    kernel: Some(kernel.display().to_string()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
    }

    fn ctx(dir: &Path) -> Context<'_> {
        Context {
            host: "h1",
            capacity: Capacity {
                cpus: 4,
                memory_mib: 4096,
            },
            accel: Accel::Tcg,
            vms_dir: dir,
        }
    }

    #[test]
    fn derives_the_vm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, b"k").expect("write");
        let d = desired_vm(
            &ctx(dir.path()),
            &machine("2", "512Mi"),
            Some(&cluster()),
            Some(&release(&kernel)),
        )
        .expect("runs");
        assert_eq!(d.spec.vcpus.get(), 2);
        assert_eq!(d.spec.memory_mib.get(), 512);
        assert_eq!(d.spec.serial, "ds=nocloud-net;s=http://10.9.0.1/m1/");
        // A worker yields the CPU to control planes; a control plane keeps its share.
        assert_eq!(d.spec.cpu_priority, CpuPriority::Background);
        let mut cp = machine("2", "512Mi");
        cp.spec.role = MachineRole::ControlPlane;
        let d_cp = desired_vm(
            &ctx(dir.path()),
            &cp,
            Some(&cluster()),
            Some(&release(&kernel)),
        )
        .expect("runs");
        assert_eq!(d_cp.spec.cpu_priority, CpuPriority::Normal);
        assert_eq!(d.cluster_key, "org-x/a");
        assert_eq!(d.spec.state_dir, dir.path().join("org-x/m1"));
    }

    #[test]
    fn refuses_with_reasons() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, b"k").expect("write");
        let c = ctx(dir.path());
        let big = desired_vm(
            &c,
            &machine("64", "512Mi"),
            Some(&cluster()),
            Some(&release(&kernel)),
        )
        .expect_err("too big");
        assert_eq!(big.reason, "InsufficientResources");
        assert!(big.message.contains("64 vCPU"), "{}", big.message);
        let gone = desired_vm(
            &c,
            &machine("1", "512Mi"),
            Some(&cluster()),
            Some(&release(Path::new("/nonexistent/vmlinuz"))),
        )
        .expect_err("no image");
        assert_eq!(gone.reason, "ImageNotFound");
        assert!(gone.message.contains("/nonexistent/vmlinuz"));
        let mut unallocated = cluster();
        unallocated.status = None;
        let wait = desired_vm(
            &c,
            &machine("1", "512Mi"),
            Some(&unallocated),
            Some(&release(&kernel)),
        )
        .expect_err("no network");
        assert!(wait.retry);
    }

    #[test]
    fn a_kernel_with_a_disk_boots_the_kernel_on_an_overlay_of_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kernel = dir.path().join("vmlinuz");
        let initrd = dir.path().join("initrd.img");
        let disk = dir.path().join("disk.qcow2");
        for f in [&kernel, &initrd, &disk] {
            std::fs::write(f, b"x").expect("write");
        }
        let mut r = release(&kernel);
        r.spec.image.initrd = Some(initrd.display().to_string());
        r.spec.image.disk = Some(disk.display().to_string());
        r.spec.image.cmdline = Some("root=LABEL=shoal-root rw console=ttyS0".into());
        let d = desired_vm(
            &ctx(dir.path()),
            &machine("1", "512Mi"),
            Some(&cluster()),
            Some(&r),
        )
        .expect("runs");
        assert_eq!(d.base_disk.as_deref(), Some(disk.as_path()));
        let overlay = dir.path().join("org-x/m1/disk.qcow2");
        assert_eq!(
            d.spec.boot,
            Boot::Kernel {
                kernel: kernel.clone(),
                initrd: Some(initrd.clone()),
                cmdline: "root=LABEL=shoal-root rw console=ttyS0".into(),
                overlay_path: Some(overlay.clone()),
            }
        );
        assert_eq!(d.spec.boot.overlay(), Some(overlay.as_path()));

        // The disk missing: the condition names it and how to build Shoal's images.
        std::fs::remove_file(&disk).expect("remove");
        let gone = desired_vm(
            &ctx(dir.path()),
            &machine("1", "512Mi"),
            Some(&cluster()),
            Some(&r),
        )
        .expect_err("no disk");
        assert_eq!(gone.reason, "ImageNotFound");
        assert!(
            gone.message.contains(&disk.display().to_string()),
            "{}",
            gone.message
        );
        assert!(
            gone.message.contains("scripts/setup.sh"),
            "{}",
            gone.message
        );
    }
}
