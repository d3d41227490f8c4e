//! cloud-init user-data for Shoal's guest Kubernetes nodes, rendered as pure data.
//!
//! Given a [`NodeBootstrap`] (the node's role, its cluster's endpoint and networks, the
//! PKI files and the join secrets), this crate renders a `#cloud-config` document:
//!
//! - [`render_kubeadm`] for Shoal's Kubernetes node image ([`NODE_IMAGE`]):
//!   `write_files` for the PKI, a `kubeadm.k8s.io/v1beta4` configuration naming the
//!   image's preloaded containers and its CRI socket, probe patches that survive a slow
//!   (emulated) CPU and, on the first control-plane node, the pod network (flannel's
//!   manifest, or Calico's operator and `Installation`, see [`PodNetwork`]);
//!   `kubeadm init` or `kubeadm join` in `runcmd`, OIDC flags on the API server, and
//!   `phone_home`;
//! - [`render_host_join`] for a bare-metal machine of the host cluster: its name,
//!   the kubeconfig and settings its `shoal agent` starts with, and its production
//!   NIC ([`HostJoin`]);
//! - [`render_test_image`] for Shoal's test image, which honours only `hostname`,
//!   `write_files` and `phone_home`: the same PKI plus a [`NodeFile`] at
//!   [`NODE_FILE_PATH`] telling the image its role.
//!
//! Every input is validated first; a [`BootstrapError`] names the field and what to
//! change. The YAML is built from serde structs, so values are quoted as needed, never
//! pasted into text; the output is deterministic and compared with golden files in
//! `testdata/`, and the tests check every variant with `cloud-init schema`.
//!
//! What this crate must not do:
//! - no I/O: no files, no network, no clock, no randomness. Generating tokens and keys,
//!   issuing certificates and serving the user-data belong to the caller;
//! - no dependency on other Shoal crates: callers translate their resources into the
//!   plain [`NodeBootstrap`] struct;
//! - never echo secrets (the token, the certificate key, private keys) in errors or
//!   `Debug` output.

mod calico;
mod cloudconfig;
mod error;
mod flannel;
mod host;
mod input;
mod kubeadm;
mod nodeimage;
mod testimage;
mod validate;
mod yaml11;

pub use calico::{
    operator_manifest_url, CALICO_INSTALLATION_PATH, CALICO_INSTALL_PATH, CALICO_VERSION,
};
pub use error::BootstrapError;
pub use host::{
    render_host_join, HostJoin, HostNetwork, HostRole, AGENT_ENV_PATH, AGENT_KUBECONFIG_PATH,
};
pub use input::{BootstrapFile, NodeBootstrap, Oidc, PodNetwork, Role};
pub use kubeadm::{
    render_kubeadm, render_kubeadm_group, FLANNEL_MANIFEST_PATH, KUBEADM_PATCHES_DIR,
};
pub use nodeimage::{NodeImage, NODE_IMAGE};
pub use testimage::{render_test_image, NodeFile};

/// Where [`render_kubeadm`] writes the kubeadm configuration (mode 0600: it holds the
/// bootstrap token and the certificate key).
pub const KUBEADM_CONFIG_PATH: &str = "/etc/kubernetes/kubeadm.yaml";

/// Where [`render_kubeadm`] writes the OIDC issuer's CA on control-plane nodes.
pub const OIDC_CA_PATH: &str = "/etc/kubernetes/pki/oidc-ca.crt";

/// Where [`render_test_image`] writes the [`NodeFile`].
pub const NODE_FILE_PATH: &str = "/etc/shoal/node.yaml";
