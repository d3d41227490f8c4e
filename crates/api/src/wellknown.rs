//! The names every Shoal component agrees on: the system namespace, and the
//! labels, annotations, finalizers and Secret types Shoal puts on objects. Each is
//! spelled here once; the server, the controllers, the agent and the CLI use these.

/// The namespace of Shoal's own objects: tokens, cluster PKI Secrets, IPAM claims,
/// host and leader Leases.
pub const SYSTEM_NAMESPACE: &str = "shoal-system";

/// Labels.
pub mod label {
    /// On Machines, NodePools and Secrets: the cluster they belong to.
    pub const CLUSTER: &str = "shoal.io/cluster";
    /// On Machines: `control-plane` or `worker`. On token Secrets: the role.
    pub const ROLE: &str = "shoal.io/role";
    /// On worker Machines: their NodePool.
    pub const NODE_POOL: &str = "shoal.io/nodepool";
    /// On system Secrets and IPAM claims: the namespace of the cluster they serve.
    pub const CLUSTER_NAMESPACE: &str = "shoal.io/cluster-namespace";
    /// On IPAM claims: the UID of the cluster holding them.
    pub const IPAM_OWNER: &str = "shoal.io/ipam-owner";
    /// On organization namespaces and token Secrets: the organization.
    pub const ORG: &str = "shoal.io/org";
    /// On token Secrets: `true`.
    pub const TOKEN: &str = "shoal.io/token";
}

/// Annotations.
pub mod annotation {
    /// On a KeyPair: the user who asked for it. The API server owns it.
    pub const REQUESTED_BY: &str = "shoal.io/requested-by";
    /// On token Secrets: when the token expires (RFC 3339).
    pub const TOKEN_EXPIRES: &str = "shoal.io/expires";
    /// On token Secrets: the user the token authenticates.
    pub const TOKEN_USER: &str = "shoal.io/user";
    /// On token Secrets: what the token is for, in the creator's words.
    pub const TOKEN_DESCRIPTION: &str = "shoal.io/description";
    /// On a Machine: when the controllers began draining its Kubernetes node
    /// (RFC 3339); the drain timeout counts from it.
    pub const DRAIN_STARTED: &str = "shoal.io/drain-started";
    /// On a BareMetalMachine: what its BMC should do next, `reprovision@<time>`
    /// (boot from PXE again) or `deprovision@<time>` (power off). Each new value is
    /// acted on once; `shoal baremetal reprovision|deprovision` write it.
    pub const BMC_REQUEST: &str = "shoal.io/bmc-request";
}

/// Finalizers.
pub mod finalizer {
    /// The AWS provider's, on Clusters with provider `aws`: every AWS resource
    /// tagged with the cluster is deleted before the Cluster goes.
    pub const AWS: &str = "shoal.io/aws";
    /// The cluster controller's, on Clusters: children are removed before the
    /// Cluster goes.
    pub const CLUSTER: &str = "shoal.io/cluster";
    /// The host agent's, on the Machines it runs (the host lifecycle controller
    /// removes it only when the host is lost).
    pub const HOST_AGENT: &str = "shoal.io/host-agent";
}

/// Secret types.
pub mod secret_type {
    /// A Machine's cloud-init user-data.
    pub const BOOTSTRAP: &str = "shoal.io/bootstrap";
    /// A cluster's PKI, in [`SYSTEM_NAMESPACE`](super::SYSTEM_NAMESPACE).
    pub const CLUSTER_PKI: &str = "shoal.io/cluster-pki";
    /// An API token, in [`SYSTEM_NAMESPACE`](super::SYSTEM_NAMESPACE).
    pub const TOKEN: &str = "shoal.io/token";
}

/// Machine conditions and reasons that more than one component reads.
pub mod condition {
    /// The Machine's Node in a Kubernetes guest, as the controllers read it.
    pub const NODE_READY: &str = "NodeReady";
    /// `NodeReady`'s reason while the guest has no Node of the Machine's name: the
    /// agent then reports the VM's console in `status.console`.
    pub const NODE_NOT_REGISTERED: &str = "NodeNotRegistered";
}

/// The Secret holding a cluster's PKI, in [`SYSTEM_NAMESPACE`].
pub fn pki_secret_name(namespace: &str, cluster: &str) -> String {
    format!("{namespace}.{cluster}.pki")
}

/// Keys of a cluster's PKI Secret besides the PKI files.
pub mod pki_key {
    /// The kubeadm bootstrap token.
    pub const BOOTSTRAP_TOKEN: &str = "bootstrap-token";
    /// kubeadm's certificate key, for control-plane joins.
    pub const CERTIFICATE_KEY: &str = "certificate-key";
}
