//! Shoal's storage layer: a revisioned key-value model behind the [`Store`] trait.
//!
//! The store knows keys, bytes and revisions; it knows nothing about resources,
//! JSON or HTTP. Every successful write bumps one global revision counter, and
//! every key remembers the revision that created it and the revision that last
//! modified it, as etcd does. The API server builds `resourceVersion`,
//! optimistic concurrency and watches on top of that.
//!
//! Backends:
//! - [`redb::RedbStore`]: the embedded default, durable across `kill -9`.
//! - `etcd::EtcdStore` (feature `etcd`): an etcd v3 cluster shared by several
//!   Shoal servers, with its own endpoint health checks and failover.
//!
//! The [`conformance`] module (feature `conformance`) holds the checks that every
//! backend must pass, written once and generic over the trait.

use std::num::NonZeroUsize;

use bytes::Bytes;
use futures::stream::BoxStream;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod redb;

/// A store-wide, strictly increasing write counter. Zero means "before any write".
pub type Revision = i64;

/// One key with its value and revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The stored bytes.
    pub value: Bytes,
    /// The revision of the write that created this key.
    pub create_revision: Revision,
    /// The revision of the last write to this key.
    pub mod_revision: Revision,
}

/// A page request over all keys that start with `prefix`, in key order.
#[derive(Clone, Debug, Default)]
pub struct RangeRequest {
    /// Only keys starting with this prefix are returned.
    pub prefix: String,
    /// Return keys strictly after this one (the continue point of a previous page).
    pub start_after: Option<String>,
    /// At most this many items; `None` returns all.
    pub limit: Option<NonZeroUsize>,
}

/// One page of a range.
#[derive(Clone, Debug)]
pub struct RangeResponse {
    /// The items, in key order.
    pub items: Vec<KeyValue>,
    /// True when more keys match after the last item.
    pub more: bool,
    /// The store's revision when the page was read.
    pub revision: Revision,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change, delivered by [`Store::watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The revision of this change.
    pub revision: Revision,
    /// For a put, the new value. For a delete, the last value the key held
    /// (with its old `mod_revision`).
    pub kv: KeyValue,
    /// The value before this change, when there was one.
    pub prev: Option<KeyValue>,
}

/// A stream of changes in revision order, with no gaps and no duplicates.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A create found the key already present.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// An update or delete found no such key.
    #[error("key {key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A compare-and-swap found another revision than the one expected.
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The revision the key has.
        actual: Revision,
    },
    /// A watch asked for history that compaction has removed.
    #[error("revision {requested} has been compacted; the oldest available is {compacted}")]
    Compacted {
        /// The revision the watch asked to start after.
        requested: Revision,
        /// The compaction point: watches must start at or after it.
        compacted: Revision,
    },
    /// A watcher fell too far behind the live event feed and was dropped.
    #[error("watcher fell behind by more than the buffered events; restart the watch")]
    WatcherLagged,
    /// The backend failed (disk, database or network).
    #[error("storage backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend is closed or shutting down.
    #[error("store is closed")]
    Closed,
}

/// Revisioned key-value storage.
///
/// Every write is acknowledged only once it is durable. Revisions are global and
/// strictly increasing: each successful create, update or delete takes the next one.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Reads a page of keys under a prefix.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError>;

    /// Creates a key that must not exist yet.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StoreError>;

    /// Replaces a key's value if its `mod_revision` is still `expected`.
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<KeyValue, StoreError>;

    /// Deletes a key, if its `mod_revision` is `expected` when one is given.
    /// Returns the value it held and the revision of the delete.
    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError>;

    /// Streams every change under `prefix` with a revision greater than `after`:
    /// first the stored history, then live changes.
    ///
    /// Fails with [`StoreError::Compacted`] when `after` is older than the
    /// compaction point.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// Forgets the change history up to `revision`; current values are kept.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The latest revision.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// The oldest revision a watch may start after.
    async fn compacted_revision(&self) -> Result<Revision, StoreError>;
}
