//! Adding and removing one finalizer, guarded by the object's resource version so
//! that a concurrent writer's finalizer is never lost.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::api::{is_conflict, is_not_found};

/// What a finalizer change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The object now has (or no longer has) the finalizer.
    Done,
    /// Nothing to do: it already had (or did not have) it.
    Unchanged,
    /// The object changed since it was read: read it again and retry.
    Conflict,
    /// The object is gone.
    Gone,
}

/// Whether `obj` carries `finalizer`.
pub fn has<K: Resource>(obj: &K, finalizer: &str) -> bool {
    obj.finalizers().iter().any(|f| f == finalizer)
}

/// Adds `finalizer` to `obj` as it was read.
pub async fn add<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<Change, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if has(obj, finalizer) {
        return Ok(Change::Unchanged);
    }
    let mut list = obj.finalizers().to_vec();
    list.push(finalizer.to_owned());
    write(api, obj, list).await
}

/// Removes `finalizer` from `obj` as it was read.
pub async fn remove<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<Change, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if !has(obj, finalizer) {
        return Ok(Change::Unchanged);
    }
    let list: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    write(api, obj, list).await
}

async fn write<K>(api: &Api<K>, obj: &K, list: Vec<String>) -> Result<Change, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {
        "finalizers": list,
        "resourceVersion": obj.resource_version(),
    }});
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(Change::Done),
        Err(e) if is_conflict(&e) => Ok(Change::Conflict),
        Err(e) if is_not_found(&e) => Ok(Change::Gone),
        Err(e) => Err(e),
    }
}
