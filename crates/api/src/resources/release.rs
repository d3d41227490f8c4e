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
    /// On AWS: the image's AMI ID in each region (`eu-west-1: ami-0123…`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub amis: std::collections::BTreeMap<String, String>,
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
        if img.disk.is_none() && img.kernel.is_none() && img.amis.is_empty() {
            errs.push(crate::validate::FieldCause::required(
                "spec.image",
                "set image.disk, or image.kernel (with image.initrd), or image.amis for AWS",
            ));
        }
        for (region, ami) in &img.amis {
            if !ami.starts_with("ami-") {
                errs.check(
                    &format!("spec.image.amis.{region}"),
                    Err(format!(
                        "{ami:?} is not an AMI ID: use the image's ami-… ID in {region}"
                    )),
                );
            }
        }
    }
}

impl ReleaseSpec {
    /// The Kubernetes version as numbers for ordering: `1.31.2` → `[1, 31, 2]`
    /// (a leading `v` and a suffix such as `-rc.1` on a part are ignored).
    pub fn version_key(&self) -> Vec<u64> {
        let v = self.kubernetes_version.trim_start_matches('v');
        let core = v.split(['-', '+']).next().unwrap_or_default();
        core.split('.')
            .map(|p| {
                let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap_or(0)
            })
            .collect()
    }
}

/// The active releases, newest Kubernetes version first (deprecated ones
/// skipped); releases of one version are ordered by name.
pub fn active_newest_first(releases: &[Release]) -> Vec<&Release> {
    let mut active: Vec<&Release> = releases
        .iter()
        .filter(|r| r.spec.state == ReleaseState::Active)
        .collect();
    active.sort_by(|a, b| {
        b.spec
            .version_key()
            .cmp(&a.spec.version_key())
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    active
}

#[cfg(test)]
mod ordering_tests {
    use super::*;

    fn release(name: &str, version: &str, state: ReleaseState) -> Release {
        let mut r: Release = serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Release",
            "metadata": {"name": name},
            "spec": {"kubernetesVersion": version, "image": {"kernel": "/k"}}
        }))
        .expect("a valid Release");
        r.spec.state = state;
        r
    }

    #[test]
    fn versions_order_numerically_not_as_text() {
        let key = |v: &str| release("r", v, ReleaseState::Active).spec.version_key();
        assert!(key("1.31.10") > key("1.31.9"));
        assert!(key("v1.32.0") > key("1.31.99"));
        assert_eq!(key("1.31.0-rc.1"), vec![1, 31, 0]);
    }

    #[test]
    fn the_newest_active_release_comes_first_and_deprecated_ones_are_skipped() {
        let rs = vec![
            release("old", "1.30.5", ReleaseState::Active),
            release("newest-but-deprecated", "1.33.0", ReleaseState::Deprecated),
            release("b-new", "1.31.10", ReleaseState::Active),
            release("a-new", "1.31.10", ReleaseState::Active),
            release("mid", "1.31.9", ReleaseState::Active),
        ];
        let names: Vec<&str> = active_newest_first(&rs)
            .iter()
            .filter_map(|r| r.metadata.name.as_deref())
            .collect();
        assert_eq!(names, ["a-new", "b-new", "mid", "old"]);
        let none: Vec<Release> = vec![release("d", "1.33.0", ReleaseState::Deprecated)];
        assert!(active_newest_first(&none).is_empty());
    }
}
