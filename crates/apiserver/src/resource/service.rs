use std::num::NonZeroUsize;
use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};
use shoal_api::{KindInfo, KINDS};
use shoal_store::{RangeRequest, Store, StoreError};

use crate::error::ApiError;
use crate::resource::cache::PrefixCache;
use crate::resource::codec::{object_key, prefix, Codec};
use crate::resource::meta::{
    finalizers, generated_name, meta_mut, meta_str, now_rfc3339, parse_resource_version,
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

fn namespace_kind() -> &'static KindInfo {
    KINDS
        .iter()
        .find(|k| k.group.is_empty() && k.kind == "Namespace")
        .expect("the registry serves core Namespaces")
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
        self.caches = ["/registry/namespaces/", "/registry/secrets/shoal-system/"]
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
            let nsk = namespace_kind();
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
        if !obj.is_object() {
            return Err(ApiError::BadRequest(
                "the body must be a JSON or YAML object".into(),
            ));
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

    /// Creates an object.
    pub async fn create(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        obj: Value,
    ) -> Result<Value, ApiError> {
        Self::check_identity(kind, ns, &obj)?;
        let mut obj = obj;
        let map = obj
            .as_object_mut()
            .ok_or_else(|| ApiError::BadRequest("the body must be an object".into()))?;
        map.insert("apiVersion".into(), Value::String(kind.api_version()));
        map.insert("kind".into(), Value::String(kind.kind.to_owned()));
        if kind.has_status && kind.kind != "Namespace" {
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
        if kind.kind == "Namespace" {
            obj["status"] = json!({ "phase": "Active" });
        }
        Self::validate(kind, &obj)?;
        self.require_namespace(kind, ns).await?;
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
        if patch_kind == PatchKind::Strategic
            && !kind.group.is_empty()
            && kind.group != "coordination.k8s.io"
            && kind.group != "events.k8s.io"
        {
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
    let mut next = match sub {
        Subresource::Endpoints => {
            return Err(ApiError::MethodNotAllowed(
                "endpoints is read-only: GET it".into(),
            ))
        }
        Subresource::Status => {
            let mut next = current.clone();
            match incoming.get("status") {
                Some(status) => next["status"] = status.clone(),
                None => {
                    if let Some(map) = next.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
            next
        }
        Subresource::Main => {
            let mut next = incoming;
            if kind.has_status {
                match current.get("status") {
                    Some(status) => next["status"] = status.clone(),
                    None => {
                        if let Some(map) = next.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            }
            next
        }
    };
    let map = next
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("the body must be an object".into()))?;
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
    Ok(next)
}
