//! Shoal's API types: the `shoal.io/v1alpha1` resources, their validation and
//! schemas, and the registry of kinds the management API serves.
//!
//! This crate does no I/O. The API server, the controllers, the CLI and the UI
//! share it, and so would a real Kubernetes through `shoal crds`.

pub mod crd;
pub mod endpoints;
pub mod events;
pub mod forward;
pub mod registry;
pub mod resources;
pub mod validate;
pub mod wellknown;

pub use registry::{Behavior, KindInfo, GROUP, KINDS, VERSION};
pub use resources::*;
