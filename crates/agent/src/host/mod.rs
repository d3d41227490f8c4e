//! `shoal agent`: registers this machine as a Host, heartbeats through a Lease, and
//! realizes the Machines assigned to it (`spec.hostName`) as QEMU VMs on their
//! clusters' networks, reporting Provisioning, Running and Ready.
//!
//! - [`desired`]: a Machine's VM and port as pure data, or why it cannot run here.
//! - [`register`]: the Host object, its capacity and the heartbeat Lease.
//! - [`network`]: a cluster's DHCP and metadata services on this host.
//! - [`reconcile`]: the level-triggered loop that owns every VM and network.

pub mod desired;
pub mod forward;
pub mod metrics;
pub mod network;
pub mod reconcile;
pub mod register;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

pub use reconcile::run;

/// The finalizer the agent puts on the Machines it runs.
pub const FINALIZER: &str = "shoal.io/host-agent";

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
    /// The interface VMs may reach the outside through (NAT), if any.
    pub egress: Option<String>,
    /// How often everything is re-checked even without events.
    pub resync: Duration,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where the gateway reaches this host's VMs (the forward endpoint), if anywhere.
    pub forward_listen: Option<std::net::SocketAddr>,
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
