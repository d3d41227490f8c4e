//! The labels, finalizers and names the controllers put on what they create.

pub use shoal_api::wellknown::finalizer::{
    CLUSTER as CLUSTER_FINALIZER, HOST_AGENT as AGENT_FINALIZER,
};
pub use shoal_api::wellknown::label::{CLUSTER, CLUSTER_NAMESPACE, IPAM_OWNER, NODE_POOL, ROLE};
pub use shoal_api::wellknown::{pki_secret_name, SYSTEM_NAMESPACE};

/// The Secret holding a Machine's cloud-init user-data, in the Machine's namespace.
pub fn bootstrap_secret_name(machine: &str) -> String {
    format!("{machine}-bootstrap")
}

/// The name of a cluster's control-plane Machine in slot `index`.
pub fn control_plane_machine(cluster: &str, index: u32) -> String {
    format!("{cluster}-cp-{index}")
}

/// The name of a node pool's worker Machine in slot `index`.
pub fn worker_machine(pool: &str, index: u32) -> String {
    format!("{pool}-{index}")
}

/// The slot index of a Machine named `<prefix>-<index>`, if it has that form.
pub fn slot_of(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip() {
        assert_eq!(
            slot_of(&control_plane_machine("demo", 2), "demo-cp"),
            Some(2)
        );
        assert_eq!(
            slot_of(&worker_machine("demo-default", 7), "demo-default"),
            Some(7)
        );
        assert_eq!(slot_of("demo-default-x", "demo-default"), None);
        assert_eq!(slot_of("demo-defaultx-1", "demo-default"), None);
    }
}
