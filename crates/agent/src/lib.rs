//! Shoal's host agent library: it runs the guest VMs of the `Machine`s assigned to
//! this host as detached QEMU processes, and (later) their per-cluster networks.
//!
//! - [`vm`] renders QEMU's argv as pure data, probes KVM, speaks QMP and owns each
//!   VM's lifecycle state machine behind the [`vm::runtime::VmRuntime`] trait.
//!
//! What this crate must not do:
//! - talk to the store or the API server's internals: it sees the cluster only through
//!   the API (the `api` types and a kube client);
//! - touch the root network namespace: all networking lives in the namespace the agent
//!   is confined to;
//! - kill processes by name: a VM's QEMU is found and signalled only by the PID in its
//!   state directory, after checking that PID still belongs to that VM.
pub mod host;
pub mod net;
pub mod phase;
pub mod simulate;
pub mod vm;

pub use shoal_kube::chain;

/// Golden-file comparison for the pure renderers' tests.
#[cfg(test)]
pub(crate) mod golden {
    /// Compares `rendered` with `testdata/<name>`; `SHOAL_UPDATE_GOLDEN=1` rewrites it.
    pub fn check(name: &str, rendered: &str) {
        shoal_testutil::check_golden(env!("CARGO_MANIFEST_DIR"), name, rendered);
    }
}
