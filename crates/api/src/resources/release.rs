//! Release: a bundle of versions and the OS image that guest nodes boot.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::FieldErrors;

/// Whether new clusters may use a release.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseState {
    /// Usable by new and existing clusters.
    #[default]
    Active,
    /// Existing clusters keep it; new clusters must pick another.
    Deprecated,
}

/// The user-data format a release's image consumes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BootstrapFormat {
    /// A cloud image with cloud-init and kubeadm: the PKI, kubeadm init/join.
    #[default]
    Kubeadm,
    /// Shoal's test image: the PKI and the node's role for `shoal guest`; it does
    /// not run Kubernetes.
    TestImage,
}

/// The OS image of a release: a kernel and initrd, or a disk image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseImage {
    /// Path or URL of the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Path or URL of the initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// Path or URL of a bootable disk image (qcow2 or raw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// Extra kernel command line, for kernel boots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

/// What a Release holds.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "Release",
    shortname = "rel",
    category = "shoal",
    printcolumn = r#"{"name":"Kubernetes","type":"string","jsonPath":".spec.kubernetesVersion"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".spec.state"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseSpec {
    /// The Kubernetes version, e.g. `1.31.2`.
    pub kubernetes_version: String,
    /// The etcd version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_version: Option<String>,
    /// The CNI plugin and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_version: Option<String>,
    /// The OS image guest nodes boot.
    pub image: ReleaseImage,
    /// Active or deprecated.
    #[serde(default)]
    pub state: ReleaseState,
    /// What the image's first-boot agent reads: cloud-init with kubeadm, or the
    /// test image's `shoal guest`.
    #[serde(default)]
    pub bootstrap: BootstrapFormat,
}

impl ReleaseSpec {
    /// Checks the versions and that the image names something bootable.
    pub fn validate(&self, errs: &mut FieldErrors) {
        let v = self.kubernetes_version.trim_start_matches('v');
        let parts: Vec<&str> = v.split('.').collect();
        if parts.len() < 2 || parts.iter().any(|p| p.parse::<u32>().is_err()) {
            errs.check(
                "spec.kubernetesVersion",
                Err(format!(
                    "{:?} is not a version: use MAJOR.MINOR.PATCH, e.g. '1.31.2'",
                    self.kubernetes_version
                )),
            );
        }
        let img = &self.image;
        if img.disk.is_none() && img.kernel.is_none() {
            errs.push(crate::validate::FieldCause::required(
                "spec.image",
                "set either image.disk, or image.kernel (with image.initrd)",
            ));
        }
    }
}
