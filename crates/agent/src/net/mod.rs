//! Per-cluster guest networks on one host: a bridge and a VXLAN device per cluster,
//! one tap per VM, an anycast gateway with DHCP and NoCloud metadata, and nftables
//! isolation between clusters.
//!
//! - [`plan`]: the desired state as pure data (names, gateway, leases, peers).
//! - [`netns`]: runs socket and process creation inside the agent's network namespace.
//! - [`link`]: bridges, VXLANs, FDB peers and taps through rtnetlink ([`link::Links`]).
//! - [`nft`]: the nftables ruleset rendered as `nft -j` JSON and applied atomically.
//! - [`dhcp`]: a DHCP server per cluster bridge with static leases by MAC (dhcproto).
//! - [`metadata`]: the NoCloud HTTP service and the phone-home endpoint on the gateway.

pub mod dhcp;
pub mod link;
pub mod metadata;
pub mod netns;
pub mod nft;
pub mod plan;

pub use plan::{ClusterNet, HostPlan, MacAddr, PlanError, Port, Vni};
