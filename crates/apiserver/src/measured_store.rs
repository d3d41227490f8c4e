//! A [`Store`] that times every operation and counts its failures, for
//! `shoal_store_operation_duration_seconds` and `shoal_store_errors_total`.
//!
//! Outcomes a caller expects (a missing key, a conflict, an existing key, a
//! compacted revision) are not failures of the store and are not counted.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use shoal_store::{
    KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError, WatchStream,
};

use crate::metrics::{OpLabel, StoreMetrics};

/// Wraps a store with metrics.
pub struct MeasuredStore {
    inner: Arc<dyn Store>,
    metrics: StoreMetrics,
}

impl MeasuredStore {
    /// Measures every operation on `inner` into `metrics`.
    pub fn new(inner: Arc<dyn Store>, metrics: StoreMetrics) -> Self {
        Self { inner, metrics }
    }

    async fn measure<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        let label = OpLabel { op: op.to_owned() };
        self.metrics
            .duration
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            if is_failure(e) {
                self.metrics.errors.get_or_create(&label).inc();
            }
        }
        result
    }
}

/// True for errors of the store itself, false for answers about the data.
fn is_failure(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Backend(_) | StoreError::Closed | StoreError::WatcherLagged
    )
}

#[async_trait::async_trait]
impl Store for MeasuredStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.measure("get", self.inner.get(key)).await
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.measure("range", self.inner.range(req)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StoreError> {
        self.measure("create", self.inner.create(key, value)).await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        self.measure("update", self.inner.update(key, value, expected))
            .await
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        self.measure("delete", self.inner.delete(key, expected))
            .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // Only opening the stream is timed; it then lives as long as its watcher.
        self.measure("watch", self.inner.watch(prefix, after)).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.measure("compact", self.inner.compact(revision)).await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.inner.compacted_revision().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn operations_are_timed_and_only_store_failures_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner: Arc<dyn Store> =
            Arc::new(shoal_store::redb::RedbStore::open(dir.path().join("s.redb")).expect("store"));
        let metrics = StoreMetrics::default();
        let store = MeasuredStore::new(inner, metrics.clone());
        store
            .create("/a", Bytes::from_static(b"1"))
            .await
            .expect("create");
        // A conflict is an answer, not a failure.
        assert!(store.create("/a", Bytes::from_static(b"2")).await.is_err());
        assert!(store.get("/a").await.expect("get").is_some());
        let create = OpLabel {
            op: "create".into(),
        };
        let text = metrics.encode_for_test();
        assert!(
            text.contains("shoal_store_operation_duration_seconds_count{op=\"create\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("shoal_store_operation_duration_seconds_count{op=\"get\"} 1"),
            "{text}"
        );
        assert_eq!(metrics.errors.get_or_create(&create).get(), 0);
    }

    #[test]
    fn backend_failures_count_and_answers_about_the_data_do_not() {
        assert!(is_failure(&StoreError::Backend("disk full".into())));
        assert!(is_failure(&StoreError::Closed));
        assert!(!is_failure(&StoreError::NotFound { key: "/a".into() }));
        assert!(!is_failure(&StoreError::Conflict {
            key: "/a".into(),
            expected: 1,
            actual: 2
        }));
    }
}
