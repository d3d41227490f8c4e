//! Tenancy: an Organization owns the namespace `org-<name>`, made with it.

use serde_json::{json, Value};
use shoal_api::registry::kinds;
use shoal_api::resources::organization::org_namespace;
use shoal_api::KindInfo;

use crate::error::ApiError;
use crate::resource::meta::meta_str;
use crate::resource::{Resources, Subresource};

impl Resources {
    /// Work that follows a create: an Organization gets its namespace, and its
    /// status names it. Returns the object as it now is.
    pub(crate) async fn after_create(
        &self,
        kind: &KindInfo,
        created: Value,
    ) -> Result<Value, ApiError> {
        if !kind.behavior.creates_namespace {
            return Ok(created);
        }
        let org = meta_str(&created, "name").unwrap_or_default().to_owned();
        let ns = org_namespace(&org);
        let namespace = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {(shoal_api::wellknown::label::ORG): org}},
        });
        match self.create(kinds::NAMESPACE.info(), None, namespace).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut status = created.clone();
        if let Some(map) = status.as_object_mut() {
            map.insert("status".into(), json!({ "namespace": ns }));
        }
        if let Some(meta) = status.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        self.update(kind, None, &org, status, Subresource::Status)
            .await
    }
}
