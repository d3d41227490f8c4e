//! One watch per kind for a whole process (the controllers, the gateway or the
//! agent): a cache (a reflector store) and a fan-out of every change, so that five
//! controllers looking at Machines decode each Machine event once, and hold one
//! copy of each Machine, instead of five.
//!
//! Unlike kube-runtime's shared stores, deletions are fanned out too: a cluster
//! waiting for its Machines to go is woken when the last one is deleted.
//!
//! Each subscriber has a bounded queue ([`FANOUT_QUEUE`]). A subscriber that falls
//! behind applies backpressure: the fan-out waits for room (counted in
//! the counter given to [`Shared::start`]) rather than dropping a change,
//! since a controller that returned `await_change` relies on that change to run
//! again. Memory therefore stays bounded, and the watch itself slows down.
//!
//! Observers ([`crate::index::Observer`], such as an [`crate::index::Index`]) are
//! told of each change before it is fanned out.

use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, Notify};

use crate::index::Observer;
use crate::task::AbortOnDrop;

/// Changes queued per subscriber before the fan-out waits for it.
pub const FANOUT_QUEUE: usize = 1024;

type Subscribers<K> = Arc<Mutex<Vec<mpsc::Sender<Arc<K>>>>>;

/// A cache of one kind, and the changes to it for whoever subscribes.
pub struct Shared<K: Resource<DynamicType = ()> + 'static> {
    /// The cache.
    pub store: Store<K>,
    subscribers: Subscribers<K>,
    _task: AbortOnDrop,
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
    /// Starts watching `api`; `waits` counts changes that had to wait for a
    /// subscriber's full queue.
    pub fn start(api: Api<K>, waits: Counter) -> Self {
        Self::start_observed(api, waits, Vec::new())
    }

    /// Starts watching `api`, and keeps `observers` up to date with every change
    /// before it is fanned out.
    pub fn start_observed(
        api: Api<K>,
        waits: Counter,
        observers: Vec<Arc<dyn Observer<K>>>,
    ) -> Self {
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
                        let reference = ObjectRef::from_obj(&obj);
                        for o in &observers {
                            o.changed(reference.clone(), Some(&obj));
                        }
                        // The store holds it now: share its copy.
                        vec![reader.get(&reference).unwrap_or_else(|| Arc::new(obj))]
                    }
                    Ok(watcher::Event::Delete(obj)) => {
                        for o in &observers {
                            o.changed(ObjectRef::from_obj(&obj), None);
                        }
                        vec![Arc::new(obj)]
                    }
                    // After a (re)list, everything may have changed.
                    Ok(watcher::Event::InitDone) => {
                        let all = reader.state();
                        for o in &observers {
                            o.reset(&all);
                        }
                        all
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "watch interrupted; it resumes");
                        continue;
                    }
                };
                let list: Vec<mpsc::Sender<Arc<K>>> =
                    subs.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let mut gone = false;
                for tx in &list {
                    gone |= !fan_out(tx, &changed, &waits).await;
                }
                if gone {
                    subs.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .retain(|tx| !tx.is_closed());
                }
            }
        });
        Self {
            store,
            subscribers,
            _task: AbortOnDrop::from(task),
        }
    }

    /// Every object as it is now, then every change (deletions included).
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (tx, rx) = mpsc::channel(FANOUT_QUEUE);
        // Registered before the snapshot is taken: a change in between arrives
        // twice, never not at all. The snapshot is not queued, so it may be larger
        // than the queue.
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        let snapshot = futures::stream::iter(self.store.state());
        snapshot.chain(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|o| (o, rx))
        }))
    }

    /// Wakes `wake` on every change (deletions included) until the returned task
    /// is aborted: for loops that look at the whole cache, not at each change.
    pub fn wake_on_change(&self, wake: Arc<Notify>) -> tokio::task::JoinHandle<()> {
        let changes = self.subscribe();
        tokio::spawn(async move {
            let mut changes = std::pin::pin!(changes);
            while changes.next().await.is_some() {
                wake.notify_one();
            }
        })
    }
}

/// Sends `changed` to one subscriber, waiting (and counting the wait) when its
/// queue is full; false once the subscriber is gone.
async fn fan_out<K>(tx: &mpsc::Sender<Arc<K>>, changed: &[Arc<K>], waits: &Counter) -> bool {
    for obj in changed {
        match tx.try_send(obj.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(obj)) => {
                waits.inc();
                if tx.send(obj).await.is_err() {
                    return false;
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_waits_for_room_and_counts_it() {
        let (tx, mut rx) = mpsc::channel::<Arc<u32>>(2);
        let waits = Counter::default();
        let changed: Vec<Arc<u32>> = (0..5).map(Arc::new).collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(v) = rx.recv().await {
                got.push(*v);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            got
        });
        assert!(fan_out(&tx, &changed, &waits).await);
        drop(tx);
        assert_eq!(
            reader.await.expect("reader"),
            [0, 1, 2, 3, 4],
            "nothing shed"
        );
        assert!(waits.get() >= 1, "the full queue was waited for");
    }

    #[tokio::test]
    async fn a_gone_subscriber_is_reported() {
        let (tx, rx) = mpsc::channel::<Arc<u32>>(2);
        drop(rx);
        assert!(!fan_out(&tx, &[Arc::new(1)], &Counter::default()).await);
    }
}
