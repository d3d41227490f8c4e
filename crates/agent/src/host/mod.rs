//! `shoal agent`: registers this machine as a Host, heartbeats through a Lease, and
//! realizes the Machines assigned to it (`spec.hostName`) as QEMU VMs on their
//! clusters' networks, reporting Provisioning, Running and Ready.
//!
//! - [`desired`]: a Machine's VM and port as pure data, or why it cannot run here.
//! - [`register`]: the Host object, its capacity and the heartbeat Lease.
//! - [`network`]: a cluster's DHCP and metadata services on this host.
//! - [`reconcile`]: the level-triggered loop that owns every VM and network, generic
//!   over its I/O (runtime, links, firewall, services, API) and unit-tested on fakes.
//! - [`api`]: the loop's API calls (phases, finalizer, bootstrap Secrets, Host status).
//! - [`state`]: the state directory and the owner record of each VM.
//! - [`run`]: the wiring, watches and event loop around it.

pub mod api;
pub mod console;
pub mod desired;
pub mod forward;
pub mod metrics;
pub mod network;
pub mod reconcile;
pub mod register;
pub mod run;
pub mod state;

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

pub use run::run;

/// The finalizer the agent puts on the Machines it runs.
pub const FINALIZER: &str = shoal_api::wellknown::finalizer::HOST_AGENT;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Host's name.
    pub name: String,
    /// The address other hosts reach this one on (VXLAN source).
    pub underlay: Ipv4Addr,
    /// Where VM state (pidfiles, QMP sockets, consoles, overlays) lives.
    pub state_dir: PathBuf,
    /// The network namespace confining the data plane; `None` uses the agent's own.
    pub netns: Option<String>,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The `qemu-img` binary, for disk overlays.
    pub qemu_img: PathBuf,
    /// The `nft` binary.
    pub nft: PathBuf,
    /// CPUs advertised to guests (default: detected).
    pub cpus: Option<u32>,
    /// Memory in MiB advertised to guests (default: detected).
    pub memory_mib: Option<u64>,
    /// vCPUs the scheduler may place per host CPU (allocatable = CPUs × ratio).
    pub cpu_allocation_ratio: u32,
    /// How long a guest gets to power down before QEMU is told to quit.
    pub stop_grace: Duration,
    /// How long the KVM probe may take before TCG is used.
    pub kvm_probe_timeout: Duration,
    /// The accelerator to use; `None` probes KVM and falls back to TCG.
    pub accel: Option<crate::vm::Accel>,
    /// The interface VMs may reach the outside through (NAT), if any.
    pub egress: Option<String>,
    /// How often everything is re-checked even without events.
    pub resync: Duration,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where the gateway reaches this host's VMs (the forward endpoint), if anywhere.
    pub forward_listen: Option<std::net::SocketAddr>,
    /// The most bytes per second a live migration from this host may send (disk
    /// and memory each); `None` lets QEMU send as fast as it can.
    pub migration_max_bandwidth: Option<u64>,
}

impl AgentConfig {
    /// The host `name`, reached by other hosts at `underlay`, keeping VM state
    /// under `state_dir`; everything else as `shoal agent`'s flags default it: no
    /// namespace, the binaries from `PATH`, detected capacity, 4 vCPUs per CPU, a
    /// 10 s stop grace, a 3 s KVM probe deciding the accelerator, no egress, a 5 s resync, no metrics
    /// listener, no forward endpoint and no live-migration bandwidth limit.
    pub fn new(name: impl Into<String>, underlay: Ipv4Addr, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            underlay,
            state_dir: state_dir.into(),
            netns: None,
            qemu: "qemu-system-x86_64".into(),
            qemu_img: "qemu-img".into(),
            nft: "nft".into(),
            cpus: None,
            memory_mib: None,
            cpu_allocation_ratio: 4,
            stop_grace: Duration::from_secs(10),
            kvm_probe_timeout: Duration::from_secs(3),
            accel: None,
            egress: None,
            resync: Duration::from_secs(5),
            metrics_listen: None,
            forward_listen: None,
            migration_max_bandwidth: None,
        }
    }
}

/// Why the agent failed, with what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// An API request failed.
    #[error("{what}")]
    Api {
        /// What the agent was doing.
        what: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The network namespace is unusable.
    #[error(transparent)]
    Netns(#[from] crate::net::netns::NetnsError),
    /// A netlink operation failed.
    #[error(transparent)]
    Link(#[from] crate::net::link::LinkError),
    /// Applying the nftables ruleset failed.
    #[error(transparent)]
    Firewall(#[from] crate::net::nft::NftError),
    /// The DHCP server could not start.
    #[error(transparent)]
    Dhcp(crate::net::dhcp::DhcpError),
    /// The metadata service could not start.
    #[error(transparent)]
    Metadata(crate::net::metadata::MetadataError),
    /// A VM operation failed.
    #[error(transparent)]
    Vm(#[from] crate::vm::runtime::VmError),
    /// A local file or socket operation failed.
    #[error("{what}")]
    Io {
        /// What the agent was doing.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `qemu-img` could not make a VM's overlay.
    #[error("qemu-img for {vm}: {message}")]
    Overlay {
        /// The VM.
        vm: String,
        /// What qemu-img said.
        message: String,
    },
}

impl AgentError {
    /// An API error with what the agent was doing.
    pub fn api(what: impl Into<String>, source: kube::Error) -> Self {
        AgentError::Api {
            what: what.into(),
            source,
        }
    }
}

pub use crate::chain;
