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
pub mod vm;
