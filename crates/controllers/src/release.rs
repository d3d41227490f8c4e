//! Releases: the two seeded at first start, and the check every cluster's release
//! gets (unknown and deprecated releases are named, with what to use instead).

use std::sync::Arc;

use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use shoal_api::resources::common::Condition;
use shoal_api::{BootstrapFormat, Release, ReleaseImage, ReleaseSpec, ReleaseState};
use shoal_kube::conditions::condition;

use crate::context::ControllerConfig;
use crate::error::{failed, is_conflict, Error};

/// The seeded release of the test image.
pub const TEST_RELEASE: &str = "test";

/// The releases created at first start: `test` (the test image, when its files are
/// known) and `kubeadm-<version>` (Shoal's Kubernetes node image: kernel, initrd and
/// root disk from the configured image directory).
pub fn seeds(config: &ControllerConfig) -> Vec<Release> {
    let mut out = Vec::new();
    if let Some(dir) = &config.test_image_dir {
        out.push(Release::new(
            TEST_RELEASE,
            ReleaseSpec {
                kubernetes_version: config.test_release_version.clone(),
                image: ReleaseImage {
                    kernel: Some(dir.join("vmlinuz").display().to_string()),
                    initrd: Some(dir.join("initrd.img").display().to_string()),
                    ..Default::default()
                },
                state: ReleaseState::Active,
                bootstrap: BootstrapFormat::TestImage,
                ..Default::default()
            },
        ));
    }
    let image = &shoal_bootstrap::NODE_IMAGE;
    let dir = &config.kubernetes_image_dir;
    let file = |name: &str| Some(dir.join(name).display().to_string());
    out.push(Release::new(
        &format!("kubeadm-{}", image.kubernetes_version.replace('.', "-")),
        ReleaseSpec {
            kubernetes_version: image.kubernetes_version.to_owned(),
            image: ReleaseImage {
                kernel: file(image.kernel_file),
                initrd: file(image.initrd_file),
                disk: file(image.disk_file),
                cmdline: Some(image.kernel_cmdline.to_owned()),
                // Shoal builds no AMI; an AWS Release names its own.
                amis: Default::default(),
            },
            state: ReleaseState::Active,
            bootstrap: BootstrapFormat::Kubeadm,
            ..Default::default()
        },
    ));
    out
}

/// Creates the seeded releases that do not exist; existing ones are left alone,
/// so an administrator's changes survive restarts.
pub async fn seed(client: &Client, config: &ControllerConfig) -> Result<(), Error> {
    let api: Api<Release> = Api::all(client.clone());
    for r in seeds(config) {
        match api.create(&PostParams::default(), &r).await {
            Ok(_) => tracing::info!(release = %r.name_any(), "seeded release"),
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(failed(format!("seed release {}", r.name_any()))(e)),
        }
    }
    Ok(())
}

/// The active releases, newest Kubernetes first, as a readable list.
fn suggestions(releases: &[Arc<Release>]) -> String {
    let owned: Vec<Release> = releases.iter().map(|r| (**r).clone()).collect();
    let active = shoal_api::resources::release::active_newest_first(&owned);
    if active.is_empty() {
        "no release is active; ask an administrator to create one".into()
    } else {
        let names: Vec<String> = active.iter().map(|r| r.name_any()).collect();
        format!("use one of the active releases: {}", names.join(", "))
    }
}

/// The `Release` condition of a cluster on release `name`, and the release if it
/// can be used. A deprecated release keeps running the clusters already on it
/// (`existing`; the condition warns) but does not start new ones; an unknown one
/// stops provisioning.
pub fn check(
    name: &str,
    releases: &[Arc<Release>],
    existing: bool,
) -> (Condition, Option<Arc<Release>>) {
    match releases.iter().find(|r| r.name_any() == name) {
        None => (
            condition(
                "Release",
                false,
                "ReleaseNotFound",
                format!("release {name:?} does not exist; {}", suggestions(releases)),
            ),
            None,
        ),
        Some(r) if r.spec.state == ReleaseState::Deprecated => (
            condition(
                "Release",
                existing,
                "ReleaseDeprecated",
                if existing {
                    format!(
                        "release {name:?} is deprecated; upgrade with `shoal cluster upgrade --release R`, {}",
                        suggestions(releases)
                    )
                } else {
                    format!(
                        "release {name:?} is deprecated and new clusters cannot use it; {}",
                        suggestions(releases)
                    )
                },
            ),
            existing.then(|| r.clone()),
        ),
        Some(r) => (
            condition(
                "Release",
                true,
                "ReleaseActive",
                format!("release {name:?} is active"),
            ),
            Some(r.clone()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(name: &str, version: &str, state: ReleaseState) -> Arc<Release> {
        Arc::new(Release::new(
            name,
            ReleaseSpec {
                kubernetes_version: version.into(),
                state,
                ..Default::default()
            },
        ))
    }

    #[test]
    fn unknown_and_deprecated_say_what_to_use() {
        let all = vec![
            rel("old", "1.29.0", ReleaseState::Deprecated),
            rel("a", "1.30.1", ReleaseState::Active),
            rel("b", "1.31.2", ReleaseState::Active),
        ];
        let (c, r) = check("nope", &all, false);
        assert!(r.is_none());
        assert_eq!(c.reason, "ReleaseNotFound");
        assert_eq!(
            c.message,
            "release \"nope\" does not exist; use one of the active releases: b, a"
        );
        let (c, r) = check("old", &all, true);
        assert!(r.is_some());
        assert_eq!(c.reason, "ReleaseDeprecated");
        assert!(
            c.message.contains("use one of the active releases: b, a"),
            "{}",
            c.message
        );
        let (c, r) = check("old", &all, false);
        assert!(
            r.is_none(),
            "a new cluster may not start on a deprecated release"
        );
        assert_eq!(c.status, "False");
        assert_eq!(check("b", &all, false).0.status, "True");
    }

    #[test]
    fn seeds_name_their_images() {
        let cfg = ControllerConfig {
            test_image_dir: Some("/opt/shoal/images".into()),
            ..ControllerConfig::default()
        };
        let s = seeds(&cfg);
        assert_eq!(s[0].name_any(), "test");
        assert_eq!(
            s[0].spec.image.kernel.as_deref(),
            Some("/opt/shoal/images/vmlinuz")
        );
        assert_eq!(s[0].spec.kubernetes_version, "1.31.2");
        assert_eq!(s[1].name_any(), "kubeadm-1-35-4");
        assert_eq!(s[1].spec.kubernetes_version, "1.35.4");
        assert_eq!(s[1].spec.bootstrap, BootstrapFormat::Kubeadm);
        let img = &s[1].spec.image;
        assert_eq!(
            img.disk.as_deref(),
            Some("/var/lib/shoal/images/kubernetes/disk.qcow2")
        );
        assert_eq!(
            img.kernel.as_deref(),
            Some("/var/lib/shoal/images/kubernetes/vmlinuz")
        );
        assert_eq!(
            img.initrd.as_deref(),
            Some("/var/lib/shoal/images/kubernetes/initrd.img")
        );
        assert!(img
            .cmdline
            .as_deref()
            .is_some_and(|c| c.contains("root=LABEL=shoal-root")));
    }

    #[tokio::test]
    async fn seeding_creates_missing_releases_and_keeps_an_administrators_edit() {
        let (client, api) = crate::fake_api::FakeApi::client();
        let config = ControllerConfig::default();
        let kubeadm = seeds(&config)
            .into_iter()
            .next()
            .expect("the kubeadm release is always seeded");
        let mut edited = kubeadm.clone();
        edited.spec.state = ReleaseState::Deprecated;
        let at = format!("/apis/shoal.io/v1alpha1/releases/{}", kubeadm.name_any());
        api.put(&at, &edited);

        seed(&client, &config)
            .await
            .expect("an existing release is no error");

        assert_eq!(api.get(&at).expect("kept")["spec"]["state"], "deprecated");

        let (client, api) = crate::fake_api::FakeApi::client();
        seed(&client, &config).await.expect("seeds");
        assert_eq!(api.get(&at).expect("created")["spec"]["state"], "active");
    }
}
