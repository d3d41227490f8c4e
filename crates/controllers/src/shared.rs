//! One watch per kind for all the controllers: a cache (a reflector store) and a
//! fan-out of every change, so that five controllers looking at Machines decode
//! each Machine event once, and hold one copy of each Machine, instead of five.
//!
//! Unlike kube-runtime's shared stores, deletions are fanned out too: a cluster
//! waiting for its Machines to go is woken when the last one is deleted.

use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use tokio::sync::mpsc;

type Subscribers<K> = Arc<Mutex<Vec<mpsc::UnboundedSender<Arc<K>>>>>;

/// A cache of one kind, and the changes to it for whoever subscribes.
pub struct Shared<K: Resource<DynamicType = ()> + 'static> {
    /// The cache.
    pub store: Store<K>,
    subscribers: Subscribers<K>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    /// Starts watching `api`.
    pub fn start(api: Api<K>) -> Self {
        let (store, writer) = reflector::store();
        let subscribers: Subscribers<K> = Arc::default();
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer);
        let (reader, subs) = (store.clone(), subscribers.clone());
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let changed: Vec<Arc<K>> = match event {
                    Ok(watcher::Event::Apply(obj)) => {
                        // The store holds it now: share its copy.
                        vec![reader
                            .get(&ObjectRef::from_obj(&obj))
                            .unwrap_or_else(|| Arc::new(obj))]
                    }
                    Ok(watcher::Event::Delete(obj)) => vec![Arc::new(obj)],
                    // After a (re)list, everything may have changed.
                    Ok(watcher::Event::InitDone) => reader.state(),
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "shared watch interrupted; it resumes");
                        continue;
                    }
                };
                let mut list = subs.lock().unwrap_or_else(|p| p.into_inner());
                list.retain(|tx| changed.iter().all(|o| tx.send(o.clone()).is_ok()));
            }
        });
        Self {
            store,
            subscribers,
            task,
        }
    }

    /// Every object as it is now, then every change (deletions included).
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        // Registered before the snapshot is taken: a change in between arrives
        // twice, never not at all.
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx.clone());
        for obj in self.store.state() {
            let _ = tx.send(obj);
        }
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|o| (o, rx)) })
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Drop for Shared<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}
