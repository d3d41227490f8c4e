//! Shoal's AWS provider: each guest cluster in a VPC of its own, reconciled through
//! the official AWS SDK.
//!
//! For a Cluster with provider `aws`, [`controller`] builds, level-triggered and
//! idempotently, layer by layer, after [`preflight`] checked the region, the zones
//! and the instance types:
//! - [`network`]: the VPC, a private and a public subnet per zone ([`layout`]), the
//!   internet gateway, a NAT gateway per zone, the route tables;
//! - [`security`]: the bastion, control-plane and worker security groups;
//! - [`iam`]: a role and instance profile per node role;
//! - [`instances`]: a bastion per zone, the control-plane nodes (1 or 3, spread
//!   over the zones) with kubeadm user-data from [`userdata`];
//! - [`balancers`]: the API's and the ingress's network load balancers;
//! - [`workers`]: one Auto Scaling Group per NodePool, whose nodes [`roll`] replaces
//!   one at a time when its launch template gets a new version;
//! - [`dns`]: the cluster's Route 53 records.
//!
//! Every resource carries the tags of [`names`]; the provider finds what exists by
//! them, and [`teardown`] deletes by them, then sweeps until nothing is left.
//! [`clients`] builds the SDK clients with the identity [`access`] picks (a
//! credentials Secret or the server's chain, an optional role to assume) and an
//! optional endpoint override for tests with moto.
//!
//! Like the controllers, this crate reaches the management API with a kube-rs
//! client only; it never uses the API server's or the store's crates.

pub mod access;
pub mod balancers;
pub mod clients;
pub mod controller;
pub mod dns;
pub mod error;
pub mod iam;
pub mod instances;
pub mod layout;
pub mod names;
pub mod network;
pub mod preflight;
pub mod roll;
pub mod security;
pub mod tagging;
pub mod teardown;
pub mod userdata;
pub mod workers;

pub use clients::AwsSettings;
pub use controller::run;
pub use error::Error;
