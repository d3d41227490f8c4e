//! The labels, finalizers and names the controllers put on what they create.

/// Label on Machines, NodePools and Secrets: the cluster they belong to.
pub const CLUSTER: &str = "shoal.io/cluster";
/// Label on Machines: `control-plane` or `worker`.
pub const ROLE: &str = "shoal.io/role";
/// Label on worker Machines: their NodePool.
pub const NODE_POOL: &str = "shoal.io/nodepool";
/// Label on system Secrets and IPAM claims: the namespace of the cluster they serve.
pub const CLUSTER_NAMESPACE: &str = "shoal.io/cluster-namespace";
/// Label on IPAM claims: the UID of the cluster holding them.
pub const IPAM_OWNER: &str = "shoal.io/ipam-owner";

/// The cluster controller's finalizer: children are removed before the Cluster goes.
pub const CLUSTER_FINALIZER: &str = "shoal.io/cluster";
/// The host agent's finalizer on Machines (set and removed by the agent; the host
/// lifecycle controller removes it only when the host is lost).
pub const AGENT_FINALIZER: &str = "shoal.io/host-agent";

/// The namespace of the system's own objects: PKI Secrets, IPAM claims, Leases.
pub const SYSTEM_NAMESPACE: &str = "shoal-system";

/// The Secret holding a cluster's PKI, in [`SYSTEM_NAMESPACE`].
pub fn pki_secret_name(namespace: &str, cluster: &str) -> String {
    format!("{namespace}.{cluster}.pki")
}

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
