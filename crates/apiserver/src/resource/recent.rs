//! The last known stored form of recently written or watched objects, so that a
//! patch or update can skip the read before its compare-and-swap.
//!
//! An entry is a key's stored bytes at one `mod_revision`. A write that starts
//! from an entry swaps against that revision, so an entry that is out of date
//! costs one refused write and never a wrong one: the store refuses the swap and
//! the writer reads the key as it is. What cannot be checked by a swap (a write
//! that turns out to change nothing, or a change the entry makes invalid) is
//! decided again on a fresh read by the caller.
//!
//! Entries come from this replica's own reads and writes and from the watch
//! hubs' events, which carry other replicas' writes. The cache holds at most a
//! byte budget of values and forgets the oldest entries first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use shoal_store::{EventKind, KeyValue, Revision, WatchEvent};

/// The default budget: the values' bytes the cache may hold.
pub const DEFAULT_BUDGET: usize = 64 << 20;

/// What an entry costs beyond its value: the key twice (map and queue) and the
/// bookkeeping around them.
const ENTRY_OVERHEAD: usize = 96;

struct Entry {
    value: Bytes,
    create_revision: Revision,
    mod_revision: Revision,
}

#[derive(Default)]
struct State {
    entries: HashMap<Arc<str>, Entry>,
    /// Keys in the order their entries were made; a key whose entry was replaced
    /// or removed since is skipped when it comes up for eviction.
    order: VecDeque<(Arc<str>, Revision)>,
    bytes: usize,
}

/// A bounded map from key to its last known stored form. Cheap to clone: clones
/// share the entries.
#[derive(Clone)]
pub struct RecentObjects {
    budget: usize,
    state: Arc<Mutex<State>>,
}

impl Default for RecentObjects {
    fn default() -> Self {
        Self::with_budget(DEFAULT_BUDGET)
    }
}

fn cost(key: &str, value: &Bytes) -> usize {
    2 * key.len() + value.len() + ENTRY_OVERHEAD
}

impl RecentObjects {
    /// A cache that holds at most `budget` bytes of keys and values; zero turns
    /// it off.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            budget,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only a cache behind; keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key's last known stored form, if the cache has it.
    pub fn get(&self, key: &str) -> Option<KeyValue> {
        let s = self.lock();
        s.entries.get(key).map(|e| KeyValue {
            key: key.to_owned(),
            value: e.value.clone(),
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
        })
    }

    /// Records `kv` as the key's stored form, unless a later one is known.
    pub fn saw(&self, kv: &KeyValue) {
        let cost = cost(&kv.key, &kv.value);
        if cost > self.budget {
            return;
        }
        let mut s = self.lock();
        let key: Arc<str> = match s.entries.get_key_value(kv.key.as_str()) {
            Some((_, e)) if e.mod_revision >= kv.mod_revision => return,
            Some((k, _)) => k.clone(),
            None => Arc::from(kv.key.as_str()),
        };
        let entry = Entry {
            value: kv.value.clone(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        };
        if let Some(old) = s.entries.insert(key.clone(), entry) {
            s.bytes -= cost_of(&key, &old);
        }
        s.bytes += cost;
        s.order.push_back((key, kv.mod_revision));
        self.evict(&mut s);
    }

    /// Forgets the key: it was deleted at `revision`.
    pub fn deleted(&self, key: &str, revision: Revision) {
        let mut s = self.lock();
        if s.entries
            .get(key)
            .is_some_and(|e| e.mod_revision < revision)
        {
            if let Some((k, old)) = s.entries.remove_entry(key) {
                s.bytes -= cost_of(&k, &old);
            }
        }
    }

    /// Follows one store event.
    pub fn observe(&self, event: &WatchEvent) {
        match event.kind {
            EventKind::Put => self.saw(&event.kv),
            EventKind::Delete => self.deleted(&event.kv.key, event.revision),
        }
    }

    /// The bytes the entries hold now, as the budget counts them.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn evict(&self, s: &mut State) {
        while s.bytes > self.budget {
            let Some((key, revision)) = s.order.pop_front() else {
                break;
            };
            if s.entries
                .get(&key)
                .is_some_and(|e| e.mod_revision == revision)
            {
                if let Some((k, old)) = s.entries.remove_entry(&key) {
                    s.bytes -= cost_of(&k, &old);
                }
            }
        }
        // Replaced entries leave stale places in the queue; drop them when they
        // outnumber the live ones, so the queue stays proportional to the map.
        if s.order.len() > 2 * s.entries.len() + 64 {
            let State { entries, order, .. } = s;
            order.retain(|(k, rev)| entries.get(k).is_some_and(|e| e.mod_revision == *rev));
        }
    }
}

fn cost_of(key: &str, e: &Entry) -> usize {
    cost(key, &e.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, rev: Revision) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Bytes::from(value.to_owned()),
            create_revision: 1,
            mod_revision: rev,
        }
    }

    #[test]
    fn a_later_revision_replaces_an_earlier_one_and_never_the_reverse() {
        let c = RecentObjects::default();
        c.saw(&kv("/a", "one", 5));
        c.saw(&kv("/a", "old", 3));
        assert_eq!(c.get("/a").map(|k| k.mod_revision), Some(5));
        c.saw(&kv("/a", "two", 7));
        let got = c.get("/a").map(|k| (k.value, k.mod_revision));
        assert_eq!(got, Some((Bytes::from("two"), 7)));
        assert_eq!(c.bytes(), cost("/a", &Bytes::from("two")));
    }

    #[test]
    fn a_delete_removes_only_what_it_follows() {
        let c = RecentObjects::default();
        c.saw(&kv("/a", "x", 5));
        // A delete older than the entry (the key was made again since) keeps it.
        c.deleted("/a", 4);
        assert!(c.get("/a").is_some());
        c.observe(&WatchEvent {
            kind: EventKind::Delete,
            revision: 6,
            kv: kv("/a", "x", 5),
            prev: None,
        });
        assert!(c.get("/a").is_none());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn the_budget_holds_and_the_oldest_entries_go_first() {
        let one = cost("/k00", &Bytes::from(vec![b'x'; 100]));
        let c = RecentObjects::with_budget(10 * one);
        for i in 0..30 {
            c.saw(&kv(&format!("/k{i:02}"), &"x".repeat(100), i + 1));
            assert!(c.bytes() <= 10 * one, "{} > {}", c.bytes(), 10 * one);
        }
        assert!(c.get("/k19").is_none());
        assert!((20..30).all(|i| c.get(&format!("/k{i:02}")).is_some()));
        // Rewriting one key many times keeps the queue bounded.
        for rev in 100..10_000 {
            c.saw(&kv("/k29", "y", rev));
        }
        assert!(c.lock().order.len() <= 2 * 10 + 64 + 1);
        assert_eq!(c.get("/k29").map(|k| k.mod_revision), Some(9_999));
    }

    #[test]
    fn a_zero_budget_holds_nothing() {
        let c = RecentObjects::with_budget(0);
        c.saw(&kv("/a", "x", 1));
        assert!(c.get("/a").is_none());
    }
}

/// The write path through `Resources`: which writes skip their read, and that an
/// out-of-date entry never loses an update.
#[cfg(test)]
mod write_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::json;
    use shoal_api::registry::kinds;
    use shoal_store::redb::RedbStore;
    use shoal_store::{
        KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError, WatchStream,
    };

    use crate::crypto::Sealer;
    use crate::error::ApiError;
    use crate::resource::codec::Codec;
    use crate::resource::fixture::{cluster, rv, seed, NS};
    use crate::resource::{PatchKind, Resources, Subresource, WatchItem, WatchOptions};

    /// A store that counts its reads of one key.
    struct CountingGets {
        inner: RedbStore,
        gets: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Store for CountingGets {
        async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.inner.get(key).await
        }
        async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
            self.inner.range(req).await
        }
        async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StoreError> {
            self.inner.create(key, value).await
        }
        async fn update(
            &self,
            key: &str,
            value: Bytes,
            expected: Revision,
        ) -> Result<KeyValue, StoreError> {
            self.inner.update(key, value, expected).await
        }
        async fn delete(
            &self,
            key: &str,
            expected: Option<Revision>,
        ) -> Result<(KeyValue, Revision), StoreError> {
            self.inner.delete(key, expected).await
        }
        async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
            self.inner.watch(prefix, after).await
        }
        async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
            self.inner.compact(revision).await
        }
        async fn current_revision(&self) -> Result<Revision, StoreError> {
            self.inner.current_revision().await
        }
        async fn compacted_revision(&self) -> Result<Revision, StoreError> {
            self.inner.compacted_revision().await
        }
    }

    /// Two replicas over one store: `a` and `b` have caches of their own.
    struct Replicas {
        _dir: tempfile::TempDir,
        store: Arc<CountingGets>,
        a: Resources,
        b: Resources,
    }

    impl Replicas {
        fn gets(&self) -> usize {
            self.store.gets.load(Ordering::SeqCst)
        }
    }

    async fn replicas() -> anyhow::Result<Replicas> {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(CountingGets {
            inner: RedbStore::open(dir.path().join("store.redb"))?,
            gets: AtomicUsize::new(0),
        });
        let codec = Codec::new(Sealer::new(&Sealer::generate_key())?);
        let a = Resources::new(store.clone(), codec.clone());
        let b = Resources::new(store.clone(), codec);
        seed(&a).await?;
        a.create(kinds::CLUSTER.info(), Some(NS), cluster("demo"))
            .await?;
        Ok(Replicas {
            _dir: dir,
            store,
            a,
            b,
        })
    }

    fn phase(p: &str) -> serde_json::Value {
        json!({"status": {"phase": p}})
    }

    async fn patch_status(
        res: &Resources,
        patch: serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        res.patch(
            kinds::CLUSTER.info(),
            Some(NS),
            "demo",
            PatchKind::Merge,
            patch,
            Subresource::Status,
        )
        .await
    }

    #[tokio::test]
    async fn a_patch_after_a_write_of_its_own_reads_nothing() -> anyhow::Result<()> {
        let r = replicas().await?;
        let before = r.gets();
        let one = patch_status(&r.a, phase("Provisioning")).await?;
        let two = patch_status(&r.a, phase("Ready")).await?;
        assert_eq!(r.gets(), before, "patches after a create read the store");
        assert_eq!(two["status"]["phase"], "Ready");
        assert!(rv(&two).parse::<i64>()? > rv(&one).parse::<i64>()?);
        // With the cache off, each patch reads first.
        let off = r.a.clone().with_recent_objects(0);
        patch_status(&off, phase("Failed")).await?;
        assert_eq!(r.gets(), before + 1);
        Ok(())
    }

    #[tokio::test]
    async fn an_out_of_date_entry_costs_a_read_and_loses_no_update() -> anyhow::Result<()> {
        let r = replicas().await?;
        // Replica b changes the spec; a's entry is now out of date.
        r.b.patch(
            kinds::CLUSTER.info(),
            Some(NS),
            "demo",
            PatchKind::Merge,
            json!({"spec": {"controlPlane": {"cpu": 4}}}),
            Subresource::Main,
        )
        .await?;
        let before = r.gets();
        let after = patch_status(&r.a, phase("Ready")).await?;
        assert_eq!(
            r.gets(),
            before + 1,
            "the refused swap is followed by one read"
        );
        assert_eq!(
            after["spec"]["controlPlane"]["cpu"], 4,
            "b's change was lost"
        );
        assert_eq!(after["status"]["phase"], "Ready");
        let stored = r.b.get(kinds::CLUSTER.info(), Some(NS), "demo").await?;
        assert_eq!(stored, after);
        Ok(())
    }

    #[tokio::test]
    async fn another_replicas_write_reaches_the_entry_through_a_watch() -> anyhow::Result<()> {
        use futures::StreamExt;
        let r = replicas().await?;
        let cl = kinds::CLUSTER.info();
        let opts = |rv: i64| WatchOptions {
            resource_version: Some(rv),
            ..WatchOptions::default()
        };
        let head = r.a.get(cl, Some(NS), "demo").await?;
        // The first watch starts the kind's hub; the next one is served by it.
        drop(
            r.a.watch(cl, Some(NS.into()), opts(rv(&head).parse()?))
                .await?,
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut watch =
            r.a.watch(cl, Some(NS.into()), opts(rv(&head).parse()?))
                .await?
                .boxed();
        let changed = patch_status(&r.b, phase("Failed")).await?;
        loop {
            let item = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the watch ended"))?;
            if let WatchItem::Event(_, obj) = item {
                if rv(obj.value()) == rv(&changed) {
                    break;
                }
            }
        }
        let before = r.gets();
        let after = patch_status(&r.a, phase("Ready")).await?;
        assert_eq!(
            r.gets(),
            before,
            "b's write, seen through the watch, was read again"
        );
        assert_eq!(after["status"]["phase"], "Ready");
        Ok(())
    }

    #[tokio::test]
    async fn a_change_the_entry_already_shows_is_checked_against_the_store() -> anyhow::Result<()> {
        let r = replicas().await?;
        patch_status(&r.a, phase("Ready")).await?;
        patch_status(&r.b, phase("Failed")).await?;
        // a's entry says Ready: the patch to Ready must still be written.
        let after = patch_status(&r.a, phase("Ready")).await?;
        assert_eq!(after["status"]["phase"], "Ready");
        let stored = r.b.get(kinds::CLUSTER.info(), Some(NS), "demo").await?;
        assert_eq!(stored["status"]["phase"], "Ready");
        Ok(())
    }

    #[tokio::test]
    async fn a_pinned_resource_version_that_is_out_of_date_still_conflicts() -> anyhow::Result<()> {
        let r = replicas().await?;
        let seen = patch_status(&r.a, phase("Provisioning")).await?;
        patch_status(&r.b, phase("Failed")).await?;
        let mut patch = phase("Ready");
        patch["metadata"] = json!({"resourceVersion": rv(&seen)});
        let refused = patch_status(&r.a, patch).await;
        assert!(
            matches!(refused, Err(ApiError::Conflict { .. })),
            "{refused:?}"
        );
        let stored = r.b.get(kinds::CLUSTER.info(), Some(NS), "demo").await?;
        assert_eq!(stored["status"]["phase"], "Failed");
        Ok(())
    }

    #[tokio::test]
    async fn a_delete_elsewhere_is_a_404_not_a_write_from_the_entry() -> anyhow::Result<()> {
        let r = replicas().await?;
        patch_status(&r.a, phase("Ready")).await?;
        r.b.delete(kinds::CLUSTER.info(), Some(NS), "demo", None)
            .await?;
        let gone = patch_status(&r.a, phase("Failed")).await;
        assert!(matches!(gone, Err(ApiError::NotFound { .. })), "{gone:?}");
        let again =
            r.a.delete(kinds::CLUSTER.info(), Some(NS), "demo", None)
                .await;
        assert!(matches!(again, Err(ApiError::NotFound { .. })), "{again:?}");
        Ok(())
    }
}
