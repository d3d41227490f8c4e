//! The Calico pod network, for nodes that can reach Calico's registries (a cloud's
//! nodes behind their NAT gateways): the first control-plane node installs the
//! Tigera operator from Calico's release manifest, pinned to [`CALICO_VERSION`], and
//! then the operator's `Installation` for the cluster's pod network, VXLAN between
//! nodes, no BGP. The `Installation` is rendered here from serde structs; the script
//! that applies both (`calico-install.sh`) retries until the API server and the
//! operator's API answer.
//!
//! The node image's container runtime looks for CNI plugins in `/usr/lib/cni`, and
//! the operator installs Calico's into `/opt/cni/bin`, a path it does not let one
//! change on Linux: every node links the second to the first before kubeadm runs.

use serde::Serialize;

use crate::cloudconfig::to_yaml;
use crate::BootstrapError;

/// The Calico release whose operator every Calico cluster gets.
pub const CALICO_VERSION: &str = "v3.30.3";

/// Where the first control-plane node finds the `Installation`.
pub const CALICO_INSTALLATION_PATH: &str = "/etc/kubernetes/addons/calico-installation.yaml";

/// The script that installs the operator and then the `Installation`.
pub const CALICO_INSTALL_PATH: &str = "/usr/local/sbin/shoal-calico";

/// Where the operator installs the CNI plugins, and where the node image's
/// container runtime looks for them.
pub(crate) const OPERATOR_CNI_DIR: &str = "/opt/cni/bin";
/// The parent of [`OPERATOR_CNI_DIR`].
pub(crate) const OPERATOR_CNI_PARENT: &str = "/opt/cni";
/// The node image's CNI plugin directory (containerd's `bin_dir`).
pub(crate) const IMAGE_CNI_DIR: &str = "/usr/lib/cni";

/// Pods get addresses from blocks of this prefix per node.
const BLOCK_SIZE: u8 = 26;

/// The Tigera operator's manifest of [`CALICO_VERSION`].
pub fn operator_manifest_url() -> String {
    format!(
        "https://raw.githubusercontent.com/projectcalico/calico/{CALICO_VERSION}/manifests/tigera-operator.yaml"
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Installation<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: InstallationSpec<'a>,
}

#[derive(Serialize)]
struct Metadata {
    name: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InstallationSpec<'a> {
    calico_network: CalicoNetwork<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CalicoNetwork<'a> {
    /// VXLAN needs no BGP between nodes.
    bgp: &'static str,
    ip_pools: Vec<IpPool<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IpPool<'a> {
    name: &'static str,
    cidr: &'a str,
    block_size: u8,
    /// VXLAN between every pair of nodes: a cloud's network drops packets for
    /// addresses it did not assign unless they are encapsulated.
    encapsulation: &'static str,
    nat_outgoing: &'static str,
    node_selector: &'static str,
}

/// The operator's `Installation` for pod network `pod_cidr` (one IPv4 CIDR).
pub(crate) fn installation(pod_cidr: &str) -> Result<String, BootstrapError> {
    to_yaml(
        "Calico's Installation",
        &Installation {
            api_version: "operator.tigera.io/v1",
            kind: "Installation",
            metadata: Metadata { name: "default" },
            spec: InstallationSpec {
                calico_network: CalicoNetwork {
                    bgp: "Disabled",
                    ip_pools: vec![IpPool {
                        name: "default-ipv4-ippool",
                        cidr: pod_cidr,
                        block_size: BLOCK_SIZE,
                        encapsulation: "VXLAN",
                        nat_outgoing: "Enabled",
                        node_selector: "all()",
                    }],
                },
            },
        },
    )
}

/// The install script, with the operator's manifest, the `Installation`'s path and
/// the administrator's kubeconfig filled in.
pub(crate) fn install_script(kubeconfig: &str) -> String {
    include_str!("calico-install.sh").replacen(
        "\nset -u\n",
        &format!(
            "\nset -u\nKUBECONFIG_FILE={kubeconfig}\nOPERATOR_MANIFEST={}\nINSTALLATION={CALICO_INSTALLATION_PATH}\n",
            operator_manifest_url()
        ),
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installation_carries_the_pod_network_over_vxlan() {
        let text = installation("10.244.0.0/16").expect("renders");
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
        assert_eq!(doc["apiVersion"], "operator.tigera.io/v1");
        assert_eq!(doc["kind"], "Installation");
        assert_eq!(doc["metadata"]["name"], "default");
        let net = &doc["spec"]["calicoNetwork"];
        assert_eq!(net["bgp"], "Disabled");
        let pool = &net["ipPools"][0];
        assert_eq!(pool["cidr"], "10.244.0.0/16");
        assert_eq!(pool["encapsulation"], "VXLAN");
        assert_eq!(pool["blockSize"], 26);
        assert_eq!(pool["natOutgoing"], "Enabled");
    }

    #[test]
    fn the_script_names_the_pinned_operator_and_the_installation() {
        let script = install_script("/etc/kubernetes/admin.conf");
        assert!(script.starts_with("#!/bin/sh\n"), "{script}");
        assert!(
            script.contains(&format!(
                "OPERATOR_MANIFEST=https://raw.githubusercontent.com/projectcalico/calico/{CALICO_VERSION}/manifests/tigera-operator.yaml\n"
            )),
            "{script}"
        );
        assert!(
            script.contains(&format!("INSTALLATION={CALICO_INSTALLATION_PATH}\n")),
            "{script}"
        );
        assert!(script.contains("KUBECONFIG_FILE=/etc/kubernetes/admin.conf\n"));
    }
}
