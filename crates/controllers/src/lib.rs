//! Shoal's controllers, which reach everything through the management API with a
//! kube-rs client, exactly as they would against a real Kubernetes host cluster.
//!
//! This crate must not use the API server's or the store's crates.
//!
//! Today it holds the leader election every controller runs behind
//! ([`leader`]); the controllers themselves come with the issues that need them.

pub mod leader;
