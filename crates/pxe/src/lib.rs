//! Shoal's network boot services, run by `shoal pxe` on a provisioning network:
//!
//! - [`dhcp`]: proxy DHCP. It answers PXE clients with a boot file and nothing
//!   else, so the network's own DHCP server keeps handing out addresses.
//! - [`tftp`] and [`tftpd`]: a read-only TFTP server for iPXE's `undionly.kpxe` and
//!   `ipxe.efi` (Debian's `ipxe` package), which PXE firmware chain-loads.
//! - [`ra`]: optionally, router advertisements saying there is no IPv6 router, so
//!   that iPXE does not wait for one.
//! - [`http`]: iPXE's boot script, the kernel and initrd, each machine's NoCloud
//!   seed and phone home, and the [`journal`] of what each machine did, by MAC.
//!
//! [`server`] binds them all to one interface and runs them; [`inventory`] turns
//! the journal into BareMetalMachines in Shoal's API (with roles from [`profile`]s)
//! and, given the agents' kubeconfig, renders each one's [`seeds`] for joining,
//! and [`provision`] powers
//! registered machines on through their BMC ([`redfish`]) and times out those that
//! do not phone home.

pub mod dhcp;
pub mod http;
pub mod inventory;
pub mod journal;
pub mod mac;
pub mod profile;
pub mod provision;
pub mod ra;
pub mod redfish;
pub mod seeds;
pub mod server;
pub mod tftp;
pub mod tftpd;

pub use mac::Mac;
pub use server::{bind, PxeConfig, PxeError};
