//! The `Resources` handle: the store, the codec, the read caches and the
//! compare-and-swap helpers the CRUD and list modules share.

use std::sync::Arc;

use serde_json::Value;
use shoal_api::KindInfo;
use shoal_store::{Revision, Store, StoreError};

use crate::error::ApiError;
use crate::resource::cache::PrefixCache;
use crate::resource::codec::Codec;
use crate::resource::recent::RecentObjects;
use crate::resource::view;

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

/// Resource operations over a store.
#[derive(Clone)]
pub struct Resources {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) codec: Codec,
    caches: Vec<PrefixCache>,
    pub(crate) hubs: crate::resource::hub::Hubs,
    /// The last known stored form of objects, which writes start from.
    pub(crate) recent: RecentObjects,
}

/// How often a write retries a compare-and-swap that lost to another writer.
pub(super) const CAS_RETRIES: usize = 16;

/// The resource name in messages: the plural, with its group.
pub(super) fn resource_name(kind: &KindInfo) -> String {
    if kind.group.is_empty() {
        kind.plural.to_owned()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    }
}

/// 404 for one object.
pub(super) fn not_found(kind: &KindInfo, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: resource_name(kind),
        name: name.to_owned(),
    }
}

/// 409 for one object.
pub(super) fn conflict(kind: &KindInfo, name: &str) -> ApiError {
    ApiError::Conflict {
        resource: resource_name(kind),
        name: name.to_owned(),
    }
}

/// Maps a failed compare-and-swap: `Ok(())` means retry with a fresh read (the
/// caller did not pin a resourceVersion), anything else is the answer.
pub(super) fn cas_failure(
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
pub(super) fn answer(kind: &KindInfo, mut obj: Value, revision: i64) -> Value {
    crate::resource::meta::set_resource_version(&mut obj, revision);
    view::from_storage(kind, obj)
}

impl Resources {
    /// Resource operations over `store`, sealing sensitive kinds with `codec`.
    pub fn new(store: Arc<dyn Store>, codec: Codec) -> Self {
        let recent = RecentObjects::default();
        Self {
            store,
            codec,
            caches: Vec::new(),
            hubs: crate::resource::hub::Hubs::feeding(recent.clone()),
            recent,
        }
    }

    /// Sets the budget of the cache of recently written and watched objects,
    /// which lets a write skip its read; 0 turns it off.
    pub fn with_recent_objects(mut self, budget: usize) -> Self {
        self.recent = RecentObjects::with_budget(budget);
        self.hubs = crate::resource::hub::Hubs::feeding(self.recent.clone());
        self
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

    pub(super) async fn put_new(
        &self,
        key: &str,
        value: bytes::Bytes,
    ) -> Result<shoal_store::KeyValue, StoreError> {
        let result = self.store.create(key, value).await;
        self.touched(key);
        if let Ok(kv) = &result {
            self.recent.saw(kv);
        }
        result
    }

    pub(super) async fn cas_update(
        &self,
        key: &str,
        value: bytes::Bytes,
        expected: i64,
    ) -> Result<shoal_store::KeyValue, StoreError> {
        let result = self.store.update(key, value, expected).await;
        self.touched(key);
        match &result {
            Ok(kv) => self.recent.saw(kv),
            Err(StoreError::NotFound { .. }) => self.recent.deleted(key, Revision::MAX),
            Err(_) => {}
        }
        result
    }

    pub(super) async fn cas_delete(
        &self,
        key: &str,
        expected: Option<i64>,
    ) -> Result<(shoal_store::KeyValue, i64), StoreError> {
        let result = self.store.delete(key, expected).await;
        self.touched(key);
        match &result {
            Ok((_, revision)) => self.recent.deleted(key, *revision),
            Err(StoreError::NotFound { .. }) => self.recent.deleted(key, Revision::MAX),
            Err(_) => {}
        }
        result
    }

    /// Reads and decodes one stored object, through a read cache where one covers it.
    pub(super) async fn read_stored(
        &self,
        kind: &KindInfo,
        key: &str,
    ) -> Result<Option<Value>, ApiError> {
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
}
