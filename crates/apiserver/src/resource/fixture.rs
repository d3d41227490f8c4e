//! Test fixtures: `Resources` over a real embedded (redb) store in a temporary
//! directory, with the namespace `org-a` and the Release `test-1`.

use std::sync::Arc;

use serde_json::{json, Value};
use shoal_api::registry::{find_by_plural, kinds};
use shoal_api::KindInfo;
use shoal_store::redb::RedbStore;

use crate::crypto::Sealer;
use crate::resource::codec::Codec;
use crate::resource::Resources;

/// The namespace every fixture object lives in.
pub const NS: &str = "org-a";

/// A store in a temporary directory, removed when the `TempDir` drops.
pub struct Fixture {
    /// Keeps the directory alive.
    _dir: tempfile::TempDir,
    /// The resources under test.
    pub res: Resources,
}

/// Opens a fresh store with `org-a` and the Release `test-1`.
pub async fn fixture() -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(RedbStore::open(dir.path().join("store.redb"))?);
    let res = Resources::new(store, Codec::new(Sealer::new(&Sealer::generate_key())?));
    seed(&res).await?;
    Ok(Fixture { _dir: dir, res })
}

/// Creates the namespace `org-a` and the Release `test-1`.
pub async fn seed(res: &Resources) -> anyhow::Result<()> {
    res.create(
        kinds::NAMESPACE.info(),
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .await?;
    res.create(
        kinds::RELEASE.info(),
        None,
        json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Release", "metadata": {"name": "test-1"},
               "spec": {"kubernetesVersion": "1.31.2",
                        "image": {"kernel": "/boot/vmlinuz", "initrd": "/boot/initrd.img"}}}),
    )
    .await?;
    Ok(())
}

/// The Lease kind: namespaced, with no spec rules beyond its type.
pub fn lease_kind() -> &'static KindInfo {
    find_by_plural("coordination.k8s.io", "v1", "leases").expect("Leases are served")
}

/// A Lease named `name` with `labels`.
pub fn lease(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "labels": labels},
        "spec": {"holderIdentity": "a"},
    })
}

/// A valid Cluster named `name`.
pub fn cluster(name: &str) -> Value {
    json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
    })
}

/// The object's resourceVersion.
pub fn rv(obj: &Value) -> String {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}
