//! User-data for Shoal's test image, whose agent (`shoal guest`) honours only
//! `hostname`, `fqdn`, `write_files` and `phone_home`: the PKI, plus
//! [`NODE_FILE_PATH`] telling the image its role, then `phone_home`. There is no
//! `runcmd`: the image does not run Kubernetes.

use serde::{Deserialize, Serialize};

use crate::cloudconfig::{to_yaml, CloudConfig, WriteFile};
use crate::input::{NodeBootstrap, Role};
use crate::validate::version_digits;
use crate::{BootstrapError, NODE_FILE_PATH};

/// The content of [`NODE_FILE_PATH`]: what the test image needs to know about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeFile {
    /// What the node does.
    pub role: Role,
    /// The cluster's name.
    pub cluster: String,
    /// The owning organisation.
    pub org: String,
    /// The node's name.
    pub hostname: String,
    /// Where nodes reach the API server, `host:port`.
    pub control_plane_endpoint: String,
    /// The node's own IP address.
    pub advertise_address: String,
    /// The Kubernetes release the node stands for, `MAJOR.MINOR.PATCH`.
    pub kubernetes_version: String,
}

impl NodeFile {
    /// The node file describing `n` (not validated).
    pub fn new(n: &NodeBootstrap) -> Self {
        Self {
            role: n.role,
            cluster: n.cluster.clone(),
            org: n.org.clone(),
            hostname: n.hostname.clone(),
            control_plane_endpoint: n.control_plane_endpoint.clone(),
            advertise_address: n.advertise_address.clone(),
            kubernetes_version: version_digits(&n.kubernetes_version).to_string(),
        }
    }
}

/// Renders `#cloud-config` user-data for the test image.
pub fn render_test_image(n: &NodeBootstrap) -> Result<String, BootstrapError> {
    n.validate()?;
    let mut doc = CloudConfig::base(n);
    let node = to_yaml("the test image's node file", &NodeFile::new(n))?;
    doc.write_files
        .push(WriteFile::new(NODE_FILE_PATH, node, 0o644));
    doc.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_file_round_trips_and_refuses_unknown_keys() {
        let file = NodeFile {
            role: Role::ControlPlaneJoin,
            cluster: "demo".into(),
            org: "acme".into(),
            hostname: "demo-cp-1".into(),
            control_plane_endpoint: "10.0.0.10:6443".into(),
            advertise_address: "10.0.0.11".into(),
            kubernetes_version: "1.31.2".into(),
        };
        let text = serde_yaml::to_string(&file).expect("serializes");
        assert!(text.contains("role: control-plane-join\n"), "{text}");
        let back: NodeFile = serde_yaml::from_str(&text).expect("parses");
        assert_eq!(back, file);
        let extra = format!("{text}surprise: 1\n");
        assert!(serde_yaml::from_str::<NodeFile>(&extra).is_err());
    }
}
