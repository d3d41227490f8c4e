//! Read caches for the hot lookups every request makes: the namespace a write
//! goes to, and the token Secret that authenticates it.
//!
//! A cache covers one key prefix. It is emptied by every change under that prefix:
//! at once for writes made through this process, and through a store watch for
//! writes made by other replicas. While the watch is down the cache is bypassed,
//! so a stale entry is never served.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use shoal_store::Store;

#[derive(Default)]
struct State {
    entries: HashMap<String, Value>,
    generation: u64,
    live: bool,
}

/// A cache of decoded objects under one key prefix.
#[derive(Clone, Default)]
pub struct PrefixCache {
    prefix: String,
    state: Arc<Mutex<State>>,
}

impl PrefixCache {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only a cache behind; keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A cache for `prefix`, kept coherent by a watch on `store`.
    pub fn spawn(store: Arc<dyn Store>, prefix: &str) -> Self {
        let cache = Self {
            prefix: prefix.to_owned(),
            state: Arc::new(Mutex::new(State::default())),
        };
        let worker = cache.clone();
        tokio::spawn(async move { worker.follow(store).await });
        cache
    }

    async fn follow(&self, store: Arc<dyn Store>) {
        loop {
            let feed = match store.current_revision().await {
                Ok(rev) => store.watch(&self.prefix, rev).await,
                Err(e) => Err(e),
            };
            if let Ok(mut feed) = feed {
                {
                    let mut s = self.lock();
                    s.entries.clear();
                    s.generation += 1;
                    s.live = true;
                }
                while let Some(Ok(_)) = feed.next().await {
                    self.invalidate();
                }
            }
            {
                let mut s = self.lock();
                s.live = false;
                s.entries.clear();
                s.generation += 1;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// True when `key` is under this cache's prefix.
    pub fn covers(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
    }

    /// The cached object, if the cache is live and holds it.
    pub fn get(&self, key: &str) -> Option<Value> {
        let s = self.lock();
        if s.live {
            s.entries.get(key).cloned()
        } else {
            None
        }
    }

    /// The generation to pass to [`PrefixCache::fill`], read before the store.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Stores what was read, unless something changed since `generation`.
    pub fn fill(&self, key: &str, value: &Value, generation: u64) {
        let mut s = self.lock();
        if s.live && s.generation == generation {
            s.entries.insert(key.to_owned(), value.clone());
        }
    }

    /// Forgets everything: something under the prefix changed.
    pub fn invalidate(&self) {
        let mut s = self.lock();
        s.entries.clear();
        s.generation += 1;
    }
}
