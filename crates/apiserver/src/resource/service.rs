use std::num::NonZeroUsize;
use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};
use shoal_api::registry::kinds;
use shoal_api::KindInfo;
use shoal_store::{RangeRequest, Store, StoreError};

use crate::error::ApiError;
use crate::resource::cache::PrefixCache;
use crate::resource::codec::{object_key, prefix, Codec};
use crate::resource::meta::{
    finalizers, generated_name, meta_mut, meta_str, now_rfc3339, parse_resource_version,
    require_object, REQUESTED_BY,
};
use crate::resource::view;
use crate::selector::{labels_of, FieldSelector, LabelSelector};

/// The main object or its `/status` subresource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// The object: spec and metadata change, status is kept.
    Main,
    /// `/status`: only status changes.
    Status,
    /// A Cluster's `/endpoints`: the gateway's backends, read-only.
    Endpoints,
}

/// A patch format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 7386 JSON merge patch.
    Merge,
    /// RFC 6902 JSON patch.
    Json,
    /// Strategic merge patch, served as a merge patch for built-in kinds.
    Strategic,
}

/// Filters and paging for a list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Page size.
    pub limit: Option<NonZeroUsize>,
    /// The continue token of the previous page.
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Clone, Debug)]
pub struct ListPage {
    /// The objects.
    pub items: Vec<Value>,
    /// The revision the list reflects.
    pub resource_version: i64,
    /// The token for the next page, when there is one.
    pub continue_token: Option<String>,
}

/// Resource operations over a store.
#[derive(Clone)]
pub struct Resources {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) codec: Codec,
    caches: Vec<PrefixCache>,
    pub(crate) hubs: crate::resource::hub::Hubs,
}

const CAS_RETRIES: usize = 16;

fn resource_name(kind: &KindInfo) -> String {
    if kind.group.is_empty() {
        kind.plural.to_owned()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    }
}

fn not_found(kind: &KindInfo, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: resource_name(kind),
        name: name.to_owned(),
    }
}

fn conflict(kind: &KindInfo, name: &str) -> ApiError {
    ApiError::Conflict {
        resource: resource_name(kind),
        name: name.to_owned(),
    }
}

/// Maps a failed compare-and-swap: `Ok(())` means retry with a fresh read (the
/// caller did not pin a resourceVersion), anything else is the answer.
fn cas_failure(
    e: StoreError,
    kind: &KindInfo,
    name: &str,
    may_retry: bool,
) -> Result<(), ApiError> {
    match e {
        StoreError::Conflict { .. } if may_retry => Ok(()),
        StoreError::Conflict { .. } => Err(conflict(kind, name)),
        StoreError::NotFound { .. } => Err(not_found(kind, name)),
        other => Err(other.into()),
    }
}

/// The answer to a write: the stored object at its new revision, in the kind's view.
fn answer(kind: &KindInfo, mut obj: Value, revision: i64) -> Value {
    crate::resource::meta::set_resource_version(&mut obj, revision);
    view::from_storage(kind, obj)
}

fn encode_continue(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({ "k": key }).to_string())
}

fn decode_continue(token: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "continue token {token:?} is not valid: pass the metadata.continue value of the previous page unchanged"
        ))
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    v.get("k")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(bad)
}

impl Resources {
    /// Resource operations over `store`, sealing sensitive kinds with `codec`.
    pub fn new(store: Arc<dyn Store>, codec: Codec) -> Self {
        Self {
            store,
            codec,
            caches: Vec::new(),
            hubs: Default::default(),
        }
    }

    /// Adds read caches for namespaces and system Secrets (tokens), which every
    /// request reads. Needs a Tokio runtime: each cache follows a store watch.
    pub fn with_read_caches(mut self) -> Self {
        let system_secrets = format!(
            "/registry/secrets/{}/",
            shoal_api::wellknown::SYSTEM_NAMESPACE
        );
        self.caches = ["/registry/namespaces/", system_secrets.as_str()]
            .iter()
            .map(|p| PrefixCache::spawn(self.store.clone(), p))
            .collect();
        self
    }

    fn cache_for(&self, key: &str) -> Option<&PrefixCache> {
        self.caches.iter().find(|c| c.covers(key))
    }

    fn touched(&self, key: &str) {
        if let Some(c) = self.cache_for(key) {
            c.invalidate();
        }
    }

    async fn put_new(
        &self,
        key: &str,
        value: bytes::Bytes,
    ) -> Result<shoal_store::KeyValue, StoreError> {
        let result = self.store.create(key, value).await;
        self.touched(key);
        result
    }

    async fn cas_update(
        &self,
        key: &str,
        value: bytes::Bytes,
        expected: i64,
    ) -> Result<shoal_store::KeyValue, StoreError> {
        let result = self.store.update(key, value, expected).await;
        self.touched(key);
        result
    }

    async fn cas_delete(
        &self,
        key: &str,
        expected: Option<i64>,
    ) -> Result<(shoal_store::KeyValue, i64), StoreError> {
        let result = self.store.delete(key, expected).await;
        self.touched(key);
        result
    }

    /// Reads and decodes one stored object, through a read cache where one covers it.
    async fn read_stored(&self, kind: &KindInfo, key: &str) -> Result<Option<Value>, ApiError> {
        let cache = self.cache_for(key);
        if let Some(hit) = cache.and_then(|c| c.get(key)) {
            return Ok(Some(hit));
        }
        let generation = cache.map(PrefixCache::generation);
        let Some(kv) = self.store.get(key).await? else {
            return Ok(None);
        };
        let obj = self.codec.decode(kind, &kv)?;
        if let (Some(c), Some(g)) = (cache, generation) {
            c.fill(key, &obj, g);
        }
        Ok(Some(obj))
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

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

    /// Lists objects, filtered and paged.
    pub async fn list(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListPage, ApiError> {
        let mut start_after = match &opts.continue_token {
            Some(t) => Some(decode_continue(t)?),
            None => None,
        };
        let want = opts.limit.map(NonZeroUsize::get);
        let mut items = Vec::new();
        let mut revision = None;
        loop {
            let page = self
                .store
                .range(RangeRequest {
                    prefix: prefix(kind, ns),
                    start_after: start_after.clone(),
                    limit: opts.limit,
                })
                .await?;
            revision.get_or_insert(page.revision);
            let mut last_key = None;
            for kv in &page.items {
                last_key = Some(kv.key.clone());
                let obj = view::from_storage(kind, self.codec.decode(kind, kv)?);
                if opts.labels.matches(&labels_of(&obj)) && opts.fields.matches(&obj) {
                    items.push(obj);
                    if want.is_some_and(|w| items.len() >= w) {
                        break;
                    }
                }
            }
            let full = want.is_some_and(|w| items.len() >= w);
            let consumed_all = last_key.as_ref() == page.items.last().map(|kv| &kv.key);
            if full {
                let more = page.more || !consumed_all;
                let token = if more {
                    last_key.map(|k| encode_continue(&k))
                } else {
                    None
                };
                return Ok(ListPage {
                    items,
                    resource_version: revision.unwrap_or(page.revision),
                    continue_token: token,
                });
            }
            if !page.more || last_key.is_none() {
                return Ok(ListPage {
                    items,
                    resource_version: revision.unwrap_or(page.revision),
                    continue_token: None,
                });
            }
            start_after = last_key;
        }
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
        self.require_namespace(kind, ns).await?;
        self.check_references(kind, &obj).await?;
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
        if patch_kind == PatchKind::Strategic && !kind.behavior.strategic_merge {
            return Err(ApiError::UnsupportedMediaType(format!(
                "strategic merge patch is not supported for {}: use --type merge or --type json",
                resource_name(kind)
            )));
        }
        let expected = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(parse_resource_version)
            .transpose()?;
        let apply = move |current: &Value| -> Result<Value, ApiError> {
            let mut doc = view::from_storage(kind, current.clone());
            match patch_kind {
                PatchKind::Merge | PatchKind::Strategic => json_patch::merge(&mut doc, &patch),
                PatchKind::Json => {
                    let ops: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
                        ApiError::BadRequest(format!("the JSON patch is not valid: {e}; send an array of RFC 6902 operations"))
                    })?;
                    json_patch::patch(&mut doc, &ops).map_err(|e| ApiError::Invalid {
                        kind: kind.kind.to_owned(),
                        name: name.to_owned(),
                        causes: vec![shoal_api::validate::FieldCause::invalid(
                            "",
                            format!("the JSON patch cannot be applied: {e}"),
                        )],
                    })?;
                }
            }
            Ok(view::to_storage(kind, doc))
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
        let kv = self
            .store
            .get(key)
            .await?
            .ok_or_else(|| not_found(kind, name))?;
        if expected.is_some_and(|e| e != kv.mod_revision) {
            return Err(conflict(kind, name));
        }
        let obj = self.codec.decode(kind, &kv)?;
        Ok((kv, obj))
    }

    /// The shared update path: read, merge by the subresource's rules, validate,
    /// compare-and-swap, and retry when someone else wrote in between and the
    /// caller did not pin a resourceVersion.
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
        for _ in 0..CAS_RETRIES {
            let (kv, mut current) = self.read_for_write(kind, &key, name, expected).await?;
            meta_mut(&mut current)?.remove("resourceVersion");
            let incoming = change(&current)?;
            let next = merge_for_update(kind, &current, incoming, sub)?;
            Self::validate(kind, &view::from_storage(kind, next.clone()))?;
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
        for _ in 0..CAS_RETRIES {
            let (kv, mut current) = self
                .read_for_write(kind, &key, name, precondition_rv)
                .await?;
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

/// Builds the next stored object from the current one and the client's, by the
/// subresource's rules. Server-owned metadata always comes from `current`.
fn merge_for_update(
    kind: &KindInfo,
    current: &Value,
    incoming: Value,
    sub: Subresource,
) -> Result<Value, ApiError> {
    require_object(&incoming, "")?;
    require_object(current, "")?;
    let mut next = match sub {
        Subresource::Endpoints => {
            return Err(ApiError::MethodNotAllowed(
                "endpoints is read-only: GET it".into(),
            ))
        }
        Subresource::Status => {
            let mut next = current.clone();
            copy_field(&mut next, "status", incoming.get("status"));
            next
        }
        Subresource::Main => {
            let mut next = incoming;
            if kind.has_status {
                copy_field(&mut next, "status", current.get("status"));
            }
            next
        }
    };
    let found = crate::error::json_type(&next);
    let Some(map) = next.as_object_mut() else {
        return Err(ApiError::NotAnObject {
            field: String::new(),
            found,
        });
    };
    map.insert(
        "apiVersion".into(),
        current.get("apiVersion").cloned().unwrap_or(Value::Null),
    );
    map.insert(
        "kind".into(),
        current.get("kind").cloned().unwrap_or(Value::Null),
    );
    let cur_meta = current
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let meta = meta_mut(&mut next)?;
    meta.remove("resourceVersion");
    meta.remove("managedFields");
    for owned in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match cur_meta.get(owned) {
            Some(v) => meta.insert(owned.into(), v.clone()),
            None => meta.remove(owned),
        };
    }
    if kind.has_spec && sub == Subresource::Main && next.get("spec") != current.get("spec") {
        let generation = cur_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta_mut(&mut next)?.insert("generation".into(), Value::from(generation));
    }
    if kind.behavior.requested_by {
        keep_requester(&mut next, &cur_meta)?;
    }
    Ok(next)
}

/// Sets `obj[field]` to `value`, or removes it when `value` is `None`; `obj` is an object.
fn copy_field(obj: &mut Value, field: &str, value: Option<&Value>) {
    if let Some(map) = obj.as_object_mut() {
        match value {
            Some(v) => map.insert(field.to_owned(), v.clone()),
            None => map.remove(field),
        };
    }
}

/// Keeps a KeyPair's `shoal.io/requested-by` annotation as it is stored: no
/// update or patch may add, change or remove it.
fn keep_requester(next: &mut Value, cur_meta: &Value) -> Result<(), ApiError> {
    let stored = cur_meta
        .get("annotations")
        .and_then(|a| a.get(REQUESTED_BY))
        .cloned();
    let meta = meta_mut(next)?;
    let notes = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if notes.is_null() {
        *notes = Value::Object(Default::default());
    }
    let found = crate::error::json_type(notes);
    let Some(notes) = notes.as_object_mut() else {
        return Err(ApiError::NotAnObject {
            field: "metadata.annotations".into(),
            found,
        });
    };
    match stored {
        Some(user) => notes.insert(REQUESTED_BY.to_owned(), user),
        None => notes.remove(REQUESTED_BY),
    };
    if notes.is_empty() {
        meta.remove("annotations");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use shoal_api::KINDS;

    const KEYS: &[&str] = &[
        "apiVersion",
        "kind",
        "metadata",
        "spec",
        "status",
        "name",
        "namespace",
        "uid",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "resourceVersion",
        "annotations",
        "labels",
        REQUESTED_BY,
        "release",
        "",
    ];

    /// An arbitrary JSON value, biased towards Kubernetes-shaped keys.
    fn arbitrary(rng: &mut StdRng, depth: u32) -> Value {
        let pick = if depth == 0 {
            rng.gen_range(0..4)
        } else {
            rng.gen_range(0..7)
        };
        match pick {
            0 => Value::Null,
            1 => Value::Bool(rng.gen()),
            2 => json!(rng.gen::<i64>()),
            3 => Value::String(KEYS[rng.gen_range(0..KEYS.len())].to_owned()),
            4 => Value::Array(
                (0..rng.gen_range(0..4))
                    .map(|_| arbitrary(rng, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.gen_range(0..6))
                    .map(|_| {
                        (
                            KEYS[rng.gen_range(0..KEYS.len())].to_owned(),
                            arbitrary(rng, depth - 1),
                        )
                    })
                    .collect(),
            ),
        }
    }

    fn stored(kind: &KindInfo) -> Value {
        let ns = kind.namespaced.then_some("org-a");
        json!({
            "apiVersion": kind.api_version(), "kind": kind.kind,
            "metadata": {"name": "x", "namespace": ns, "uid": "u-1",
                         "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 3,
                         "annotations": {REQUESTED_BY: "alice", "note": "n"}},
            "spec": {"release": "r"},
            "status": {"phase": "Ready"},
        })
    }

    const OWNED: &[&str] = &[
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ];

    /// merge_for_update never panics; it yields an object whose identity and
    /// server-owned metadata are the stored ones, or refuses a non-object with 422.
    /// Replay a failure with SHOAL_FUZZ_SEED; SHOAL_FUZZ_CASES sets the count.
    #[test]
    fn merge_for_update_keeps_server_owned_fields() {
        let seed = std::env::var("SHOAL_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::thread_rng().gen::<u64>());
        let cases: usize = std::env::var("SHOAL_FUZZ_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3000);
        eprintln!("merge_for_update fuzz: SHOAL_FUZZ_SEED={seed} SHOAL_FUZZ_CASES={cases}");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut refused = 0;
        for case in 0..cases {
            let kind = &KINDS[rng.gen_range(0..KINDS.len())];
            let current = stored(kind);
            let incoming = if rng.gen_bool(0.5) {
                let mut obj = stored(kind);
                let key = KEYS[rng.gen_range(0..KEYS.len())];
                let v = arbitrary(&mut rng, 3);
                if rng.gen_bool(0.5) {
                    obj["metadata"][key] = v;
                } else {
                    obj[key] = v;
                }
                obj
            } else {
                arbitrary(&mut rng, 4)
            };
            let sub = if rng.gen_bool(0.5) {
                Subresource::Main
            } else {
                Subresource::Status
            };
            let ctx = format!(
                "case {case} (seed {seed}): {} {sub:?} {incoming}",
                kind.kind
            );
            match merge_for_update(kind, &current, incoming.clone(), sub) {
                Ok(next) => {
                    assert!(next.is_object(), "{ctx}: {next}");
                    assert_eq!(next["apiVersion"], current["apiVersion"], "{ctx}");
                    assert_eq!(next["kind"], current["kind"], "{ctx}");
                    for f in OWNED {
                        assert_eq!(
                            next["metadata"].get(*f),
                            current["metadata"].get(*f),
                            "{ctx}: metadata.{f}"
                        );
                    }
                    let gen = next["metadata"]["generation"].as_i64();
                    assert!(matches!(gen, Some(3 | 4)), "{ctx}: generation {gen:?}");
                    if kind.behavior.requested_by {
                        assert_eq!(
                            next["metadata"]["annotations"][REQUESTED_BY], "alice",
                            "{ctx}"
                        );
                    }
                    match sub {
                        Subresource::Status => {
                            let mut rest = next.clone();
                            let mut before = current.clone();
                            for v in [&mut rest, &mut before] {
                                copy_field(v, "status", None);
                            }
                            assert_eq!(rest, before, "{ctx}: /status changed more than status");
                        }
                        _ if kind.has_status => {
                            assert_eq!(next.get("status"), current.get("status"), "{ctx}");
                        }
                        _ => {}
                    }
                }
                Err(e) => {
                    refused += 1;
                    let (code, _) = e.code_and_reason();
                    assert!((400..500).contains(&code), "{ctx}: {code} {e}");
                    if !incoming.is_object() {
                        assert_eq!(code, 422, "{ctx}: {e}");
                    }
                }
            }
        }
        assert!(
            refused > 0 && refused < cases,
            "{refused} of {cases} refused"
        );
    }

    #[test]
    fn requested_by_cannot_be_added_changed_or_removed() -> Result<(), ApiError> {
        let kp = kinds::KEY_PAIR.info();
        let current = stored(kp);
        for annotations in [
            json!({REQUESTED_BY: "mallory"}),
            json!({}),
            Value::Null,
            json!({REQUESTED_BY: null}),
        ] {
            let mut incoming = current.clone();
            incoming["metadata"]["annotations"] = annotations.clone();
            let next = merge_for_update(kp, &current, incoming, Subresource::Main)?;
            assert_eq!(
                next["metadata"]["annotations"][REQUESTED_BY], "alice",
                "{annotations}"
            );
        }
        // A KeyPair stored without one (made before the server stamped it) gets none.
        let mut bare = current.clone();
        copy_field(&mut bare["metadata"], "annotations", None);
        let mut incoming = bare.clone();
        incoming["metadata"]["annotations"] = json!({REQUESTED_BY: "mallory"});
        let next = merge_for_update(kp, &bare, incoming, Subresource::Main)?;
        assert_eq!(next["metadata"].get("annotations"), None, "{next}");
        Ok(())
    }

    #[test]
    fn non_objects_are_refused_with_422() {
        let cluster = kinds::CLUSTER.info();
        let current = stored(cluster);
        for body in [
            json!([1, 2]),
            json!(1),
            json!("x"),
            Value::Null,
            json!(true),
        ] {
            for sub in [Subresource::Main, Subresource::Status] {
                let err = merge_for_update(cluster, &current, body.clone(), sub)
                    .expect_err("a non-object is refused");
                assert_eq!(err.code_and_reason(), (422, "Invalid"), "{body}: {err}");
            }
        }
        let mut bad_meta = current.clone();
        bad_meta["metadata"] = json!([1]);
        let err = merge_for_update(cluster, &current, bad_meta, Subresource::Main)
            .expect_err("metadata must be an object");
        assert_eq!(err.code_and_reason(), (422, "Invalid"));
        assert!(err.to_string().contains("metadata"), "{err}");
    }
}
