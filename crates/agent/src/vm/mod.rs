//! Guest VMs: the QEMU argv as data ([`argv`]), the KVM probe ([`kvm`]), the QMP client
//! ([`qmp`]) and the lifecycle runtime ([`runtime`]).

pub mod argv;
pub mod disk;
pub mod kvm;
pub mod migrate;
mod proc;
pub mod qmp;
pub mod runtime;
pub mod spec;

pub use spec::{Accel, Boot, CpuPriority, SpecError, StatePaths, Tap, VmSpec};

/// The QEMU binary used when none is configured.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";
