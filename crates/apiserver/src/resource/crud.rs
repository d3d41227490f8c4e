//! Create, read, update, patch and delete of one object: admission checks,
//! optimistic concurrency with compare-and-swap retries, and finalizers.

use serde_json::{json, Value};
use shoal_api::registry::kinds;
use shoal_api::validate::FieldCause;
use shoal_api::KindInfo;
use shoal_store::StoreError;

use crate::error::ApiError;
use crate::resource::codec::object_key;
use crate::resource::merge::{self, PatchKind};
use crate::resource::meta::{
    finalizers, generated_name, meta_mut, meta_str, now_rfc3339, parse_resource_version,
    require_object,
};
use crate::resource::service::{
    answer, cas_failure, conflict, not_found, resource_name, CAS_RETRIES,
};
use crate::resource::view;
use crate::resource::{ListOptions, Resources, Subresource};

impl Resources {
    /// Reads one object.
    pub async fn get(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let obj = self
            .read_stored(kind, &object_key(kind, ns, name))
            .await?
            .ok_or_else(|| not_found(kind, name))?;
        Ok(view::from_storage(kind, obj))
    }

    async fn require_namespace(&self, kind: &KindInfo, ns: Option<&str>) -> Result<(), ApiError> {
        if let (true, Some(ns)) = (kind.namespaced, ns) {
            let nsk = kinds::NAMESPACE.info();
            if self
                .read_stored(nsk, &object_key(nsk, None, ns))
                .await?
                .is_none()
            {
                return Err(not_found(nsk, ns));
            }
        }
        Ok(())
    }

    fn validate(kind: &KindInfo, obj: &Value) -> Result<(), ApiError> {
        (kind.validate)(obj).map_err(|causes| ApiError::Invalid {
            kind: kind.kind.to_owned(),
            name: meta_str(obj, "name").unwrap_or_default().to_owned(),
            causes,
        })
    }

    /// Refuses a change to a field the kind keeps as created (422, naming the
    /// field, its value and what to do instead).
    fn check_immutable(kind: &KindInfo, current: &Value, next: &Value) -> Result<(), ApiError> {
        let causes: Vec<FieldCause> = kind
            .behavior
            .immutable_fields
            .iter()
            .filter(|(pointer, _)| current.pointer(pointer) != next.pointer(pointer))
            .map(|(pointer, instead)| {
                let field = pointer.trim_start_matches('/').replace('/', ".");
                let was = current
                    .pointer(pointer)
                    .map_or_else(|| "unset".to_owned(), Value::to_string);
                FieldCause::forbidden(field, format!("is immutable (it was {was}); {instead}"))
            })
            .collect();
        if causes.is_empty() {
            return Ok(());
        }
        Err(ApiError::Invalid {
            kind: kind.kind.to_owned(),
            name: meta_str(next, "name").unwrap_or_default().to_owned(),
            causes,
        })
    }

    /// Checks that apiVersion, kind and namespace agree with the request.
    fn check_identity(kind: &KindInfo, ns: Option<&str>, obj: &Value) -> Result<(), ApiError> {
        require_object(obj, "")?;
        if let Some(meta) = obj.get("metadata").filter(|m| !m.is_null()) {
            require_object(meta, "metadata")?;
        }
        let api_version = kind.api_version();
        match obj.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != api_version => {
                return Err(ApiError::BadRequest(format!(
                    "apiVersion {v:?} does not match the request path, which serves {api_version}: send it to the {v} endpoint or fix apiVersion"
                )))
            }
            _ => {}
        }
        match obj.get("kind").and_then(Value::as_str) {
            Some(k) if k != kind.kind => {
                return Err(ApiError::BadRequest(format!(
                    "kind {k:?} does not match the request path, which serves {}: send it to the {}s endpoint or fix kind",
                    kind.kind, k.to_lowercase()
                )))
            }
            _ => {}
        }
        if kind.namespaced {
            if let (Some(body_ns), Some(url_ns)) = (meta_str(obj, "namespace"), ns) {
                if !body_ns.is_empty() && body_ns != url_ns {
                    return Err(ApiError::BadRequest(format!(
                        "the namespace of the object ({body_ns:?}) does not match the namespace of the request ({url_ns:?}): remove metadata.namespace or send it to namespace {body_ns:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Refuses a new object that names another that must exist first: a Cluster's
    /// `spec.release`. The 422 lists the active Releases to choose from.
    async fn check_references(&self, kind: &KindInfo, obj: &Value) -> Result<(), ApiError> {
        if !kind.behavior.references_release {
            return Ok(());
        }
        let Some(release) = obj.pointer("/spec/release").and_then(Value::as_str) else {
            // Validation has already refused a Cluster without one.
            return Ok(());
        };
        let releases = kinds::RELEASE.info();
        if self
            .store
            .get(&object_key(releases, None, release))
            .await?
            .is_some()
        {
            return Ok(());
        }
        let known: Vec<shoal_api::Release> = self
            .list(releases, None, &ListOptions::default())
            .await?
            .items
            .into_iter()
            .filter_map(|r| serde_json::from_value(r).ok())
            .collect();
        let active: Vec<&str> = shoal_api::resources::release::active_newest_first(&known)
            .into_iter()
            .filter_map(|r| r.metadata.name.as_deref())
            .collect();
        let hint = if active.is_empty() {
            "no Release is active: ask an administrator to create one (the controllers seed `test` and `kubeadm-<version>` at first start)".to_owned()
        } else {
            format!("use one of the active Releases: {}", active.join(", "))
        };
        Err(ApiError::Invalid {
            kind: kind.kind.to_owned(),
            name: meta_str(obj, "name").unwrap_or_default().to_owned(),
            causes: vec![shoal_api::validate::FieldCause {
                reason: "FieldValueNotFound".into(),
                field: "spec.release".into(),
                message: format!("Release {release:?} does not exist; {hint}"),
            }],
        })
    }

    /// Refuses a new object that repeats another's value of the kind's unique field
    /// (a BareMetalMachine's MAC, compared case-insensitively). Two creates racing
    /// with the same value can both pass; the inventory names its machines after
    /// the MAC, so its own cannot.
    async fn check_unique(&self, kind: &KindInfo, obj: &Value) -> Result<(), ApiError> {
        let Some(pointer) = kind.behavior.unique_field else {
            return Ok(());
        };
        let Some(value) = obj.pointer(pointer).and_then(Value::as_str) else {
            return Ok(());
        };
        let name = meta_str(obj, "name").unwrap_or_default();
        let others = self.list(kind, None, &ListOptions::default()).await?.items;
        let taken = others.iter().find(|o| {
            meta_str(o, "name") != Some(name)
                && o.pointer(pointer)
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.eq_ignore_ascii_case(value))
        });
        let Some(other) = taken else {
            return Ok(());
        };
        let field = pointer.trim_start_matches('/').replace('/', ".");
        Err(ApiError::Invalid {
            kind: kind.kind.to_owned(),
            name: name.to_owned(),
            causes: vec![shoal_api::validate::FieldCause {
                reason: "FieldValueDuplicate".into(),
                field: field.clone(),
                message: format!(
                    "{value:?} is already the {field} of {} {:?}: use that object, or delete it first",
                    kind.kind,
                    meta_str(other, "name").unwrap_or_default()
                ),
            }],
        })
    }

    /// Creates an object.
    pub async fn create(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        obj: Value,
    ) -> Result<Value, ApiError> {
        Self::check_identity(kind, ns, &obj)?;
        let mut obj = obj;
        let Some(map) = obj.as_object_mut() else {
            return Err(ApiError::NotAnObject {
                field: String::new(),
                found: crate::error::json_type(&obj),
            });
        };
        map.insert("apiVersion".into(), Value::String(kind.api_version()));
        map.insert("kind".into(), Value::String(kind.kind.to_owned()));
        if kind.behavior.always_active {
            map.insert("status".into(), json!({ "phase": "Active" }));
        } else if kind.has_status {
            map.remove("status");
        }
        let meta = meta_mut(&mut obj)?;
        if meta
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            if let Some(prefix) = meta.get("generateName").and_then(Value::as_str) {
                let name = generated_name(prefix);
                meta.insert("name".into(), Value::String(name));
            }
        }
        for server_owned in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(server_owned);
        }
        meta.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
        if kind.has_spec {
            meta.insert("generation".into(), Value::from(1));
        }
        match ns {
            Some(ns) if kind.namespaced => {
                meta.insert("namespace".into(), Value::String(ns.to_owned()));
            }
            _ => {
                meta.remove("namespace");
            }
        }
        Self::validate(kind, &obj)?;
        if kind.behavior.folds_string_data {
            super::secretdata::fold_string_data(&mut obj);
        }
        self.require_namespace(kind, ns).await?;
        self.check_references(kind, &obj).await?;
        self.check_unique(kind, &obj).await?;
        let name = meta_str(&obj, "name").unwrap_or_default().to_owned();
        let stored = view::to_storage(kind, obj);
        let bytes = self.codec.encode(kind, &stored)?;
        let kv = match self.put_new(&object_key(kind, ns, &name), bytes).await {
            Ok(kv) => kv,
            Err(StoreError::AlreadyExists { .. }) => {
                return Err(ApiError::AlreadyExists {
                    resource: resource_name(kind),
                    name,
                })
            }
            Err(e) => return Err(e.into()),
        };
        Box::pin(self.after_create(kind, answer(kind, stored, kv.mod_revision))).await
    }

    /// Replaces an object, or its status.
    pub async fn update(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        sub: Subresource,
    ) -> Result<Value, ApiError> {
        Self::check_identity(kind, ns, &obj)?;
        if let Some(body_name) = meta_str(&obj, "name") {
            if body_name != name {
                return Err(ApiError::BadRequest(format!(
                    "the name of the object ({body_name:?}) does not match the name in the URL ({name:?})"
                )));
            }
        }
        let expected = match meta_str(&obj, "resourceVersion") {
            Some(rv) if !rv.is_empty() => Some(parse_resource_version(rv)?),
            _ => None,
        };
        let incoming = view::to_storage(kind, obj);
        self.read_modify_write(kind, ns, name, expected, |_| Ok(incoming.clone()), sub)
            .await
    }

    /// Applies a patch to an object, or to its status.
    pub async fn patch(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        patch_kind: PatchKind,
        patch: Value,
        sub: Subresource,
    ) -> Result<Value, ApiError> {
        merge::check_patch_kind(kind, patch_kind)?;
        let expected = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(parse_resource_version)
            .transpose()?;
        let apply = move |current: &Value| -> Result<Value, ApiError> {
            Ok(merge::apply_patch(kind, name, patch_kind, &patch, current)?)
        };
        self.read_modify_write(kind, ns, name, expected, apply, sub)
            .await
    }

    /// Reads an object about to be changed, refusing with 409 when it is no longer
    /// at the revision the caller pinned.
    async fn read_for_write(
        &self,
        kind: &KindInfo,
        key: &str,
        name: &str,
        expected: Option<i64>,
    ) -> Result<(shoal_store::KeyValue, Value), ApiError> {
        let Some(kv) = self.store.get(key).await? else {
            self.recent.deleted(key, shoal_store::Revision::MAX);
            return Err(not_found(kind, name));
        };
        self.recent.saw(&kv);
        if expected.is_some_and(|e| e != kv.mod_revision) {
            return Err(conflict(kind, name));
        }
        let obj = self.codec.decode(kind, &kv)?;
        Ok((kv, obj))
    }

    /// The object as this replica last saw it stored, to write against without a
    /// read; only when it is at the revision the caller pinned, if any.
    fn recent_for_write(
        &self,
        kind: &KindInfo,
        key: &str,
        expected: Option<i64>,
    ) -> Option<(shoal_store::KeyValue, Value)> {
        let kv = self.recent.get(key)?;
        if expected.is_some_and(|e| e != kv.mod_revision) {
            return None;
        }
        let obj = self.codec.decode(kind, &kv).ok()?;
        Some((kv, obj))
    }

    /// The object after `change`, merged by the subresource's rules and validated.
    fn changed(
        kind: &KindInfo,
        current: &Value,
        change: &impl Fn(&Value) -> Result<Value, ApiError>,
        sub: Subresource,
    ) -> Result<Value, ApiError> {
        let incoming = change(current)?;
        let mut next = merge::merge_for_update(kind, current, incoming, sub)?;
        Self::check_immutable(kind, current, &next)?;
        Self::validate(kind, &view::from_storage(kind, next.clone()))?;
        if kind.behavior.folds_string_data {
            super::secretdata::fold_string_data(&mut next);
        }
        Ok(next)
    }

    /// The shared update path: read, merge by the subresource's rules, validate,
    /// compare-and-swap, and retry when someone else wrote in between and the
    /// caller did not pin a resourceVersion.
    ///
    /// The first attempt starts from the object as this replica last saw it, with
    /// no read: the swap refuses it if that is out of date. Only answers that the
    /// swap does not check (nothing to change, or a refusal of the change) are
    /// decided again on a fresh read.
    async fn read_modify_write(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        expected: Option<i64>,
        change: impl Fn(&Value) -> Result<Value, ApiError>,
        sub: Subresource,
    ) -> Result<Value, ApiError> {
        let key = object_key(kind, ns, name);
        let mut recent = self.recent_for_write(kind, &key, expected);
        for _ in 0..CAS_RETRIES {
            let from_recent = recent.is_some();
            let (kv, mut current) = match recent.take() {
                Some(found) => found,
                None => self.read_for_write(kind, &key, name, expected).await?,
            };
            meta_mut(&mut current)?.remove("resourceVersion");
            let next = match Self::changed(kind, &current, &change, sub) {
                Ok(next) => next,
                Err(_) if from_recent => continue,
                Err(e) => return Err(e),
            };
            let deleting = next
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|v| !v.is_null());
            if deleting && finalizers(&next).is_empty() {
                match self.cas_delete(&key, Some(kv.mod_revision)).await {
                    Ok((_, rev)) => {
                        return Ok(answer(kind, next, rev));
                    }
                    Err(e) => {
                        cas_failure(e, kind, name, expected.is_none())?;
                        continue;
                    }
                }
            }
            if next == current {
                if from_recent {
                    continue;
                }
                return Ok(answer(kind, current, kv.mod_revision));
            }
            let bytes = self.codec.encode(kind, &next)?;
            match self.cas_update(&key, bytes, kv.mod_revision).await {
                Ok(kv) => {
                    return Ok(answer(kind, next, kv.mod_revision));
                }
                Err(e) => {
                    cas_failure(e, kind, name, expected.is_none())?;
                    continue;
                }
            }
        }
        Err(conflict(kind, name))
    }

    /// Deletes an object: at once without finalizers, otherwise by marking it
    /// with a deletionTimestamp until its finalizers are removed.
    pub async fn delete(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        precondition_rv: Option<i64>,
    ) -> Result<Value, ApiError> {
        let key = object_key(kind, ns, name);
        let mut recent = self.recent_for_write(kind, &key, precondition_rv);
        for _ in 0..CAS_RETRIES {
            let from_recent = recent.is_some();
            let (kv, mut current) = match recent.take() {
                Some(found) => found,
                None => {
                    self.read_for_write(kind, &key, name, precondition_rv)
                        .await?
                }
            };
            if finalizers(&current).is_empty() {
                match self.cas_delete(&key, Some(kv.mod_revision)).await {
                    Ok((_, rev)) => {
                        return Ok(answer(kind, current, rev));
                    }
                    Err(e) => {
                        cas_failure(e, kind, name, true)?;
                        continue;
                    }
                }
            }
            if current
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|v| !v.is_null())
            {
                if from_recent {
                    continue;
                }
                return Ok(view::from_storage(kind, current));
            }
            let meta = meta_mut(&mut current)?;
            meta.insert("deletionTimestamp".into(), Value::String(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), Value::from(0));
            let bytes = self.codec.encode(kind, &current)?;
            match self.cas_update(&key, bytes, kv.mod_revision).await {
                Ok(kv) => {
                    return Ok(answer(kind, current, kv.mod_revision));
                }
                Err(e) => {
                    cas_failure(e, kind, name, true)?;
                    continue;
                }
            }
        }
        Err(conflict(kind, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::fixture::{cluster, fixture, lease, lease_kind, rv, NS};
    use anyhow::Context as _;

    #[tokio::test]
    async fn create_then_get_returns_the_stored_object() -> anyhow::Result<()> {
        let f = fixture().await?;
        let cl = kinds::CLUSTER.info();
        let created = f.res.create(cl, Some(NS), cluster("demo")).await?;
        assert_eq!(created["metadata"]["namespace"], NS);
        assert_eq!(created["metadata"]["generation"], 1);
        assert!(created["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty()));
        let got = f.res.get(cl, Some(NS), "demo").await?;
        assert_eq!(got, created);

        let again = f.res.create(cl, Some(NS), cluster("demo")).await;
        assert!(
            matches!(again, Err(ApiError::AlreadyExists { .. })),
            "{again:?}"
        );
        let missing = f.res.get(cl, Some(NS), "nope").await;
        assert!(
            matches!(missing, Err(ApiError::NotFound { .. })),
            "{missing:?}"
        );
        let no_ns = f.res.create(cl, Some("org-b"), cluster("demo")).await;
        assert!(
            matches!(&no_ns, Err(ApiError::NotFound { resource, name }) if resource == "namespaces" && name == "org-b"),
            "{no_ns:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_second_bare_metal_machine_with_the_same_mac_is_refused() -> anyhow::Result<()> {
        let f = fixture().await?;
        let bmm = shoal_api::KINDS
            .iter()
            .find(|k| k.kind == "BareMetalMachine")
            .context("BareMetalMachine is registered")?;
        let machine = |name: &str, mac: &str| json!({"metadata": {"name": name}, "spec": {"mac": mac, "role": "worker"}});
        f.res
            .create(bmm, None, machine("rack1-a", "52:54:00:aa:bb:01"))
            .await?;
        let again = f
            .res
            .create(bmm, None, machine("rack1-b", "52:54:00:AA:BB:01"))
            .await;
        match again {
            Err(ApiError::Invalid { causes, .. }) => {
                assert_eq!(causes[0].reason, "FieldValueDuplicate");
                assert_eq!(causes[0].field, "spec.mac");
                assert!(causes[0].message.contains("rack1-a"), "{causes:?}");
            }
            other => anyhow::bail!("a repeated MAC was not refused: {other:?}"),
        }
        assert!(
            f.res.get(bmm, None, "rack1-b").await.is_err(),
            "nothing was stored"
        );
        f.res
            .create(bmm, None, machine("rack1-c", "52:54:00:aa:bb:02"))
            .await?;
        Ok(())
    }

    #[tokio::test]
    async fn create_refuses_an_unknown_release_with_422() -> anyhow::Result<()> {
        let f = fixture().await?;
        let mut body = cluster("demo");
        body["spec"]["release"] = json!("missing");
        let err = f
            .res
            .create(kinds::CLUSTER.info(), Some(NS), body)
            .await
            .expect_err("unknown release");
        assert_eq!(err.code_and_reason(), (422, "Invalid"));
        assert!(err.to_string().contains("spec.release"), "{err}");
        Ok(())
    }

    #[tokio::test]
    async fn update_with_a_stale_resource_version_conflicts() -> anyhow::Result<()> {
        let f = fixture().await?;
        let cl = kinds::CLUSTER.info();
        let created = f.res.create(cl, Some(NS), cluster("demo")).await?;

        let mut first = created.clone();
        first["spec"]["controlPlane"]["cpu"] = json!(4);
        let updated = f
            .res
            .update(cl, Some(NS), "demo", first, Subresource::Main)
            .await?;
        assert_eq!(updated["spec"]["controlPlane"]["cpu"], 4);
        assert_eq!(updated["metadata"]["generation"], 2);
        assert_ne!(rv(&updated), rv(&created));

        // The same base again: its resourceVersion is now stale.
        let mut stale = created.clone();
        stale["spec"]["controlPlane"]["cpu"] = json!(8);
        let err = f
            .res
            .update(cl, Some(NS), "demo", stale, Subresource::Main)
            .await
            .expect_err("stale resourceVersion");
        assert!(matches!(err, ApiError::Conflict { .. }), "{err:?}");
        assert_eq!(err.code_and_reason().0, 409);
        let now = f.res.get(cl, Some(NS), "demo").await?;
        assert_eq!(now["spec"]["controlPlane"]["cpu"], 4);

        // Without a resourceVersion the update applies to whatever is stored.
        let mut unpinned = now.clone();
        unpinned["metadata"]
            .as_object_mut()
            .map(|m| m.remove("resourceVersion"));
        unpinned["spec"]["controlPlane"]["cpu"] = json!(8);
        let done = f
            .res
            .update(cl, Some(NS), "demo", unpinned, Subresource::Main)
            .await?;
        assert_eq!(done["spec"]["controlPlane"]["cpu"], 8);
        Ok(())
    }

    #[tokio::test]
    async fn update_keeps_status_and_status_update_keeps_spec() -> anyhow::Result<()> {
        let f = fixture().await?;
        let cl = kinds::CLUSTER.info();
        f.res.create(cl, Some(NS), cluster("demo")).await?;
        let mut status = cluster("demo");
        status["status"] = json!({"phase": "Ready"});
        status["spec"]["controlPlane"]["cpu"] = json!(16);
        let after = f
            .res
            .update(cl, Some(NS), "demo", status, Subresource::Status)
            .await?;
        assert_eq!(after["status"]["phase"], "Ready");
        assert_eq!(after["spec"]["controlPlane"]["cpu"], 2);
        assert_eq!(after["metadata"]["generation"], 1);

        let mut main = after.clone();
        main["status"] = json!({"phase": "Failed"});
        let after = f
            .res
            .update(cl, Some(NS), "demo", main, Subresource::Main)
            .await?;
        assert_eq!(after["status"]["phase"], "Ready");
        Ok(())
    }

    #[tokio::test]
    async fn an_aws_clusters_region_and_vpc_network_keep_their_created_values() -> anyhow::Result<()>
    {
        let f = fixture().await?;
        let cl = kinds::CLUSTER.info();
        let mut body = cluster("web");
        body["spec"]["provider"] = json!({"type": "aws", "aws": {
            "region": "eu-west-1", "availabilityZones": ["eu-west-1a", "eu-west-1b"]
        }});
        f.res.create(cl, Some(NS), body).await?;
        for (patch, field, was) in [
            (
                json!({"spec": {"provider": {"aws": {"vpcCidr": "10.9.0.0/16"}}}}),
                "spec.provider.aws.vpcCidr",
                "it was unset",
            ),
            (
                json!({"spec": {"provider": {"aws": {"region": "us-east-1"}}}}),
                "spec.provider.aws.region",
                "it was \"eu-west-1\"",
            ),
        ] {
            let err = f
                .res
                .patch(
                    cl,
                    Some(NS),
                    "web",
                    PatchKind::Merge,
                    patch,
                    Subresource::Main,
                )
                .await
                .expect_err("an immutable field");
            let ApiError::Invalid { causes, .. } = &err else {
                panic!("{err:?}");
            };
            assert_eq!(causes.len(), 1, "{causes:?}");
            assert_eq!(causes[0].field, field);
            assert_eq!(causes[0].reason, "FieldValueForbidden");
            assert!(causes[0].message.contains(was), "{causes:?}");
            assert!(
                causes[0].message.contains("create a new cluster"),
                "{causes:?}"
            );
        }
        // Everything else still changes, and the stored object is untouched by the
        // refusals.
        let after = f
            .res
            .patch(
                cl,
                Some(NS),
                "web",
                PatchKind::Merge,
                json!({"spec": {"provider": {"aws": {"workerInstanceType": "m6i.xlarge"}}}}),
                Subresource::Main,
            )
            .await?;
        assert_eq!(after["spec"]["provider"]["aws"]["region"], "eu-west-1");
        assert!(after.pointer("/spec/provider/aws/vpcCidr").is_none());
        Ok(())
    }

    #[tokio::test]
    async fn update_refuses_a_name_that_is_not_the_url_name() -> anyhow::Result<()> {
        let f = fixture().await?;
        let cl = kinds::CLUSTER.info();
        f.res.create(cl, Some(NS), cluster("demo")).await?;
        let err = f
            .res
            .update(cl, Some(NS), "demo", cluster("other"), Subresource::Main)
            .await
            .expect_err("name mismatch");
        assert!(matches!(err, ApiError::BadRequest(_)), "{err:?}");
        Ok(())
    }

    #[tokio::test]
    async fn patch_of_each_kind_through_the_store() -> anyhow::Result<()> {
        let f = fixture().await?;
        let cl = kinds::CLUSTER.info();
        f.res.create(cl, Some(NS), cluster("demo")).await?;
        let merged = f
            .res
            .patch(
                cl,
                Some(NS),
                "demo",
                PatchKind::Merge,
                json!({"metadata": {"labels": {"env": "prod"}}}),
                Subresource::Main,
            )
            .await?;
        assert_eq!(merged["metadata"]["labels"]["env"], "prod");
        let patched = f
            .res
            .patch(
                cl,
                Some(NS),
                "demo",
                PatchKind::Json,
                json!([{"op": "replace", "path": "/spec/controlPlane/cpu", "value": 3}]),
                Subresource::Main,
            )
            .await?;
        assert_eq!(patched["spec"]["controlPlane"]["cpu"], 3);
        assert_eq!(patched["metadata"]["labels"]["env"], "prod");
        let strategic = f
            .res
            .patch(
                cl,
                Some(NS),
                "demo",
                PatchKind::Strategic,
                json!({}),
                Subresource::Main,
            )
            .await
            .expect_err("Shoal kinds take no strategic merge patch");
        assert_eq!(strategic.code_and_reason().0, 415);
        let stale = f
            .res
            .patch(
                cl,
                Some(NS),
                "demo",
                PatchKind::Merge,
                json!({"metadata": {"resourceVersion": rv(&merged)}}),
                Subresource::Main,
            )
            .await
            .expect_err("stale resourceVersion in the patch");
        assert!(matches!(stale, ApiError::Conflict { .. }), "{stale:?}");
        Ok(())
    }

    #[tokio::test]
    async fn delete_removes_at_once_without_finalizers() -> anyhow::Result<()> {
        let f = fixture().await?;
        let lk = lease_kind();
        let created = f.res.create(lk, Some(NS), lease("l", json!({}))).await?;
        let stale = f
            .res
            .delete(lk, Some(NS), "l", Some(rv(&created).parse::<i64>()? + 100))
            .await
            .expect_err("a precondition that does not hold");
        assert!(matches!(stale, ApiError::Conflict { .. }), "{stale:?}");
        f.res.delete(lk, Some(NS), "l", None).await?;
        let gone = f.res.get(lk, Some(NS), "l").await;
        assert!(matches!(gone, Err(ApiError::NotFound { .. })), "{gone:?}");
        let again = f.res.delete(lk, Some(NS), "l", None).await;
        assert!(matches!(again, Err(ApiError::NotFound { .. })), "{again:?}");
        Ok(())
    }

    #[tokio::test]
    async fn delete_with_finalizers_waits_for_them() -> anyhow::Result<()> {
        let f = fixture().await?;
        let lk = lease_kind();
        let mut body = lease("l", json!({}));
        body["metadata"]["finalizers"] = json!(["shoal.io/test"]);
        f.res.create(lk, Some(NS), body).await?;
        let marked = f.res.delete(lk, Some(NS), "l", None).await?;
        assert!(
            marked["metadata"]["deletionTimestamp"].is_string(),
            "{marked}"
        );
        let still = f.res.get(lk, Some(NS), "l").await?;
        assert_eq!(
            still["metadata"]["deletionTimestamp"],
            marked["metadata"]["deletionTimestamp"]
        );
        f.res
            .patch(
                lk,
                Some(NS),
                "l",
                PatchKind::Merge,
                json!({"metadata": {"finalizers": null}}),
                Subresource::Main,
            )
            .await?;
        let gone = f.res.get(lk, Some(NS), "l").await;
        assert!(matches!(gone, Err(ApiError::NotFound { .. })), "{gone:?}");
        Ok(())
    }
}
