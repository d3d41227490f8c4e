//! The inputs of a node's bootstrap: plain structs the caller fills in.
//!
//! Nothing here is trusted: both renderers run [`NodeBootstrap::validate`] first.
//! `Debug` never prints the bootstrap token's secret half, the certificate key or the
//! content of a private key.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::BootstrapError;

/// What a node does in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The first control-plane node: `kubeadm init`.
    ControlPlaneInit,
    /// A further control-plane node: `kubeadm join` with `controlPlane`.
    ControlPlaneJoin,
    /// A worker: `kubeadm join`.
    Worker,
}

impl Role {
    /// Whether the node runs the control plane.
    pub fn is_control_plane(self) -> bool {
        match self {
            Role::ControlPlaneInit | Role::ControlPlaneJoin => true,
            Role::Worker => false,
        }
    }

    /// The role as written in `/etc/shoal/node.yaml` and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlaneInit => "control-plane-init",
            Role::ControlPlaneJoin => "control-plane-join",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file written on the node before anything else runs, typically PKI under
/// `/etc/kubernetes/pki/`.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapFile {
    /// Absolute path in the guest.
    pub path: String,
    /// The file's text (PEM).
    pub content: String,
    /// Permission bits; `None` means 0600 for a private key (see
    /// [`BootstrapFile::is_private_key`]) and 0644 otherwise.
    pub permissions: Option<u32>,
}

impl BootstrapFile {
    /// A file with the default permissions.
    pub fn new(path: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            content: content.into(),
            permissions: None,
        }
    }

    /// The same file with explicit permission bits.
    pub fn with_permissions(self, mode: u32) -> Self {
        Self {
            permissions: Some(mode),
            ..self
        }
    }

    /// Whether the file holds a private key: a PEM `... PRIVATE KEY` block or a
    /// `.key` path. Private keys are never readable by group or others.
    pub fn is_private_key(&self) -> bool {
        self.content.contains("PRIVATE KEY-----") || self.path.ends_with(".key")
    }

    /// The permission bits the file is written with.
    pub fn mode(&self) -> u32 {
        match self.permissions {
            Some(mode) => mode,
            None if self.is_private_key() => 0o600,
            None => 0o644,
        }
    }
}

impl fmt::Debug for BootstrapFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let content = if self.is_private_key() {
            format!("<private key, {} bytes>", self.content.len())
        } else {
            format!("<{} bytes>", self.content.len())
        };
        f.debug_struct("BootstrapFile")
            .field("path", &self.path)
            .field("content", &content)
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// OpenID Connect login to the guest cluster's API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oidc {
    /// The issuer, an `https://` URL (`--oidc-issuer-url`).
    pub issuer_url: String,
    /// The client ID tokens must be issued for (`--oidc-client-id`).
    pub client_id: String,
    /// The claim holding the user name (`--oidc-username-claim`; the API server's
    /// default is `sub`).
    pub username_claim: Option<String>,
    /// The claim holding the groups (`--oidc-groups-claim`; none by default).
    pub groups_claim: Option<String>,
    /// Prepended to user names (`--oidc-username-prefix`; `-` for none).
    pub username_prefix: Option<String>,
    /// Prepended to group names (`--oidc-groups-prefix`).
    pub groups_prefix: Option<String>,
    /// The PEM CA bundle of the issuer's serving certificate, written to
    /// [`OIDC_CA_PATH`](crate::OIDC_CA_PATH) on control-plane nodes
    /// (`--oidc-ca-file`).
    pub ca_pem: Option<String>,
}

/// The pod network a cluster's nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodNetwork {
    /// flannel (VXLAN) from the node image's preloaded container: needs no registry.
    #[default]
    Flannel,
    /// Calico (VXLAN, no BGP) through the Tigera operator, whose containers the nodes
    /// pull from Calico's registries: for nodes with a way out, such as a cloud's
    /// behind NAT gateways.
    Calico,
}

/// Everything needed to bootstrap one guest Kubernetes node.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeBootstrap {
    /// The cluster's name, a DNS label (`demo`).
    pub cluster: String,
    /// The owning organisation, a DNS label (`acme`).
    pub org: String,
    /// The gateway's base domain (`shoal.local`): the API server's name is
    /// `api.<cluster>.<org>.<base_domain>`.
    pub base_domain: String,
    /// The node's host name and Kubernetes node name: the Machine's name, a DNS label.
    pub hostname: String,
    /// What the node does.
    pub role: Role,
    /// The Kubernetes release, `1.31.2` (a leading `v` is accepted); 1.31 or newer.
    pub kubernetes_version: String,
    /// Where nodes reach the API server, `host:port` (`api.demo.acme.shoal.local:443`).
    pub control_plane_endpoint: String,
    /// The address the endpoint's host name stands for on the node, written to
    /// `/etc/hosts` before kubeadm runs (`10.10.0.10`): the guest network has no DNS
    /// server that knows the cluster's API name. `None` when the name resolves by DNS
    /// or the endpoint is an address.
    pub endpoint_address: Option<String>,
    /// The node's own IP address; a control-plane node's API server advertises it.
    pub advertise_address: String,
    /// The pod network (`10.244.0.0/16`; two comma-separated CIDRs for dual-stack).
    pub pod_cidr: String,
    /// What runs the pod network.
    pub pod_network: PodNetwork,
    /// The service network (`10.96.0.0/12`; two comma-separated CIDRs for dual-stack).
    pub service_cidr: String,
    /// The cluster's DNS domain (`cluster.local`).
    pub dns_domain: String,
    /// Files written before kubeadm runs (the PKI).
    pub files: Vec<BootstrapFile>,
    /// The kubeadm bootstrap token, `abcdef.0123456789abcdef`.
    pub bootstrap_token: String,
    /// The cluster CA's public-key pin, `sha256:<64 hex>`.
    pub ca_cert_hash: String,
    /// The key that encrypts the control plane's certificates in the cluster
    /// (`kubeadm init --upload-certs`), 64 hex digits. Required on control-plane joins
    /// and refused on workers. On init, pass the same key the joins will get: without
    /// one kubeadm makes a random key, and no later control-plane join can decrypt the
    /// certificates.
    pub certificate_key: Option<String>,
    /// OpenID Connect login, set on the API server.
    pub oidc: Option<Oidc>,
    /// The URL cloud-init posts to when done (`$INSTANCE_ID` is substituted).
    pub phone_home_url: Option<String>,
}

impl NodeBootstrap {
    /// Checks every field; the renderers call this first.
    pub fn validate(&self) -> Result<(), BootstrapError> {
        crate::validate::node(self)
    }
}

impl fmt::Debug for NodeBootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token's first half is its public ID; the second half is the secret.
        let token = match self.bootstrap_token.split_once('.') {
            Some((id, _)) => format!("{id}.<redacted>"),
            None => "<redacted>".to_string(),
        };
        f.debug_struct("NodeBootstrap")
            .field("cluster", &self.cluster)
            .field("org", &self.org)
            .field("base_domain", &self.base_domain)
            .field("hostname", &self.hostname)
            .field("role", &self.role)
            .field("kubernetes_version", &self.kubernetes_version)
            .field("control_plane_endpoint", &self.control_plane_endpoint)
            .field("endpoint_address", &self.endpoint_address)
            .field("advertise_address", &self.advertise_address)
            .field("pod_cidr", &self.pod_cidr)
            .field("pod_network", &self.pod_network)
            .field("service_cidr", &self.service_cidr)
            .field("dns_domain", &self.dns_domain)
            .field("files", &self.files)
            .field("bootstrap_token", &token)
            .field("ca_cert_hash", &self.ca_cert_hash)
            .field(
                "certificate_key",
                &self.certificate_key.as_ref().map(|_| "<redacted>"),
            )
            .field("oidc", &self.oidc)
            .field("phone_home_url", &self.phone_home_url)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_default_to_0600_and_certificates_to_0644() {
        let key = BootstrapFile::new("/etc/kubernetes/pki/sa.key", "x");
        let pem_key = BootstrapFile::new(
            "/etc/kubernetes/pki/other",
            "-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n",
        );
        let cert = BootstrapFile::new("/etc/kubernetes/pki/ca.crt", "x");
        assert_eq!(key.mode(), 0o600);
        assert_eq!(pem_key.mode(), 0o600);
        assert_eq!(cert.mode(), 0o644);
        assert_eq!(cert.with_permissions(0o640).mode(), 0o640);
    }

    #[test]
    fn debug_hides_secrets() {
        let file = BootstrapFile::new(
            "/k",
            "-----BEGIN PRIVATE KEY-----\nSECRETKEY\n-----END PRIVATE KEY-----\n",
        );
        let text = format!("{file:?}");
        assert!(!text.contains("SECRETKEY"), "{text}");
        assert!(text.contains("private key"), "{text}");
    }
}
