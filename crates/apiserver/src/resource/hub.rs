//! Watch fan-out: one store watch per kind, shared by every API watch of that
//! kind on this replica, instead of one store watch per client.
//!
//! A hub follows its prefix from the revision it started at and remembers the
//! revision of the last event it passed on (its head). A client watch that starts
//! at or after the head is served from the hub: it subscribes under the same lock
//! the hub holds while publishing, so it receives every later event, in order. A
//! client that asks for older history gets its own store watch, which replays it.
//! Either way there is no gap and no duplicate.
//!
//! The hub hands an event only to the watches whose key range holds it (their
//! namespace, and their one object when the watch selects a `metadata.name`), so
//! a write wakes the watches that may send it, not every watch of the kind. Each
//! event is wrapped once in a [`HubEvent`], which the watches that do receive it
//! share, decoded at most once.
//!
//! Backpressure: each watch has a bounded queue. A watch that falls
//! [`FAN_OUT_BUFFER`] events behind is dropped from the hub: it still sends what
//! it holds, then ends, and its client resumes from its last resourceVersion
//! (replayed from the store's history).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::Value;
use shoal_store::{Revision, Store, StoreError, WatchEvent};
use tokio::sync::mpsc;

use crate::resource::recent::RecentObjects;

/// How many events a watch may fall behind before the hub drops it (its
/// client then resumes from its last resourceVersion).
pub const FAN_OUT_BUFFER: usize = 16_384;

/// One store event as the watches that receive it share it.
#[derive(Debug)]
pub struct HubEvent {
    /// The store's event.
    pub event: WatchEvent,
    /// The stored objects after and before the event, decoded by the first watch
    /// that needed them (`None` inside when decoding failed: each watch then
    /// decodes again to report its own error).
    decoded: OnceLock<Option<DecodedPair>>,
}

/// An event's object after the change, and before it if there was one.
pub type DecodedPair = (SharedObject, Option<SharedObject>);

impl HubEvent {
    /// Wraps a store event.
    pub fn new(event: WatchEvent) -> Self {
        Self {
            event,
            decoded: OnceLock::new(),
        }
    }

    /// The decoded objects, made by `decode` on the first call only.
    pub fn decoded<E>(
        &self,
        decode: impl FnOnce(&WatchEvent) -> Result<DecodedPair, E>,
    ) -> Option<DecodedPair> {
        self.decoded
            .get_or_init(|| decode(&self.event).ok())
            .clone()
    }
}

/// An object that several watch streams send: one copy, serialised at most once.
#[derive(Clone, Debug)]
pub struct SharedObject(Arc<SharedInner>);

#[derive(Debug)]
struct SharedInner {
    value: Value,
    json: OnceLock<bytes::Bytes>,
}

impl SharedObject {
    /// Shares `value`.
    pub fn new(value: Value) -> Self {
        Self(Arc::new(SharedInner {
            value,
            json: OnceLock::new(),
        }))
    }

    /// The object.
    pub fn value(&self) -> &Value {
        &self.0.value
    }

    /// The object as JSON, serialised on the first call only.
    pub fn json(&self) -> bytes::Bytes {
        self.0
            .json
            .get_or_init(|| {
                // Serialising a `Value` into memory cannot fail: its map keys
                // are strings and a Vec accepts every write.
                bytes::Bytes::from(serde_json::to_vec(&self.0.value).unwrap_or_default())
            })
            .clone()
    }

    /// The object, owned (copied only when another stream still holds it).
    pub fn into_value(self) -> Value {
        Arc::try_unwrap(self.0)
            .map(|inner| inner.value)
            .unwrap_or_else(|shared| shared.value.clone())
    }
}

/// The keys one watch can send: its prefix (kind and namespace) and, when it
/// selects one name, that object's key alone.
#[derive(Clone, Debug)]
pub struct KeyRange {
    prefix: String,
    exact: Option<String>,
}

impl KeyRange {
    /// Every key under `prefix`.
    pub fn prefix(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            exact: None,
        }
    }

    /// Only `key` (which must be under the hub's prefix).
    pub fn exact(prefix: &str, key: String) -> Self {
        Self {
            prefix: prefix.to_owned(),
            exact: Some(key),
        }
    }

    /// Whether an event on `key` can concern the watch.
    pub fn holds(&self, key: &str) -> bool {
        match &self.exact {
            Some(exact) => key == exact,
            None => key.starts_with(&self.prefix),
        }
    }
}

type HubItem = Result<Arc<HubEvent>, StoreError>;

struct Subscriber {
    range: KeyRange,
    tx: mpsc::Sender<HubItem>,
}

struct HubState {
    head: Revision,
    /// Whether the hub follows the store now (subscribing is possible).
    live: bool,
    subscribers: Vec<Subscriber>,
}

/// One shared store watch and its subscribers.
struct Hub {
    state: Mutex<HubState>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn follow(self: Arc<Self>, store: Arc<dyn Store>, prefix: String, recent: RecentObjects) {
        loop {
            let started = match store.current_revision().await {
                Ok(rev) => store.watch(&prefix, rev).await.map(|feed| (rev, feed)),
                Err(e) => Err(e),
            };
            if let Ok((rev, mut feed)) = started {
                {
                    let mut s = self.lock();
                    s.head = rev;
                    s.live = true;
                }
                while let Some(Ok(ev)) = feed.next().await {
                    recent.observe(&ev);
                    let mut s = self.lock();
                    s.head = ev.revision;
                    publish(&mut s.subscribers, Arc::new(HubEvent::new(ev)));
                }
                // The feed ended: subscribers see their queue close and end
                // their watches; clients resume from their last resourceVersion.
                let mut s = self.lock();
                s.live = false;
                s.subscribers.clear();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A queue of every later event in `range` and the head it starts after, if
    /// the hub is live.
    fn subscribe(&self, range: KeyRange) -> Option<(Revision, mpsc::Receiver<HubItem>)> {
        let mut s = self.lock();
        if !s.live {
            return None;
        }
        let (tx, rx) = mpsc::channel(FAN_OUT_BUFFER);
        s.subscribers.push(Subscriber { range, tx });
        Some((s.head, rx))
    }
}

/// Queues `ev` for the subscribers whose range holds its key; drops those whose
/// client went away or whose queue is full.
fn publish(subscribers: &mut Vec<Subscriber>, ev: Arc<HubEvent>) {
    subscribers.retain(|sub| {
        if !sub.range.holds(&ev.event.kv.key) {
            return !sub.tx.is_closed();
        }
        match sub.tx.try_send(Ok(ev.clone())) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(
                    prefix = %sub.range.prefix,
                    "a watch fell {FAN_OUT_BUFFER} events behind; it ends and its client resumes"
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
}

/// The hubs of one store, one per storage prefix, made on first use.
#[derive(Clone, Default)]
pub struct Hubs {
    hubs: Arc<Mutex<HashMap<String, Arc<Hub>>>>,
    /// Kept current with every event the hubs follow.
    recent: RecentObjects,
}

impl Hubs {
    /// Hubs that also pass every event they follow to `recent`.
    pub fn feeding(recent: RecentObjects) -> Self {
        Self {
            hubs: Arc::default(),
            recent,
        }
    }

    fn hub(&self, store: &Arc<dyn Store>, prefix: &str) -> Arc<Hub> {
        let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        hubs.entry(prefix.to_owned())
            .or_insert_with(|| {
                let hub = Arc::new(Hub {
                    state: Mutex::new(HubState {
                        head: 0,
                        live: false,
                        subscribers: Vec::new(),
                    }),
                });
                tokio::spawn(hub.clone().follow(
                    store.clone(),
                    prefix.to_owned(),
                    self.recent.clone(),
                ));
                hub
            })
            .clone()
    }

    /// Every change in `range` after revision `after`, through the hub of
    /// `hub_prefix` (which contains the range) when it can serve it, otherwise
    /// through a store watch of its own.
    pub async fn watch(
        &self,
        store: &Arc<dyn Store>,
        hub_prefix: &str,
        range: KeyRange,
        after: Revision,
    ) -> Result<BoxStream<'static, HubItem>, StoreError> {
        let hub = self.hub(store, hub_prefix);
        let Some((head, rx)) = hub.subscribe(range.clone()) else {
            return own_watch(store, range, after).await;
        };
        if after < head {
            // Older history than the hub holds: replay it from the store. The
            // queue just taken is dropped, and the hub forgets it.
            drop(rx);
            return own_watch(store, range, after).await;
        }
        // A watch from before the compaction point must still fail, as it would on the store.
        let compacted = store.compacted_revision().await?;
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let stream = tokio_stream_of(rx).filter(move |item| {
            let keep = match item {
                Ok(ev) => ev.event.revision > after,
                Err(_) => true,
            };
            futures::future::ready(keep)
        });
        Ok(stream.boxed())
    }
}

/// The events of a queue, until the hub drops it.
fn tokio_stream_of(rx: mpsc::Receiver<HubItem>) -> impl futures::Stream<Item = HubItem> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// A store watch of the range's own, for history the hub does not hold.
async fn own_watch(
    store: &Arc<dyn Store>,
    range: KeyRange,
    after: Revision,
) -> Result<BoxStream<'static, HubItem>, StoreError> {
    let feed = store.watch(&range.prefix, after).await?;
    Ok(feed
        .filter_map(move |item| {
            let keep = match item {
                Ok(ev) if range.holds(&ev.kv.key) => Some(Ok(Arc::new(HubEvent::new(ev)))),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(keep)
        })
        .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_store::{EventKind, KeyValue};

    fn event(key: &str, revision: Revision) -> Arc<HubEvent> {
        Arc::new(HubEvent::new(WatchEvent {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.to_owned(),
                value: bytes::Bytes::from_static(b"{}"),
                create_revision: revision,
                mod_revision: revision,
            },
            prev: None,
            revision,
        }))
    }

    fn subscriber(range: KeyRange, depth: usize) -> (Subscriber, mpsc::Receiver<HubItem>) {
        let (tx, rx) = mpsc::channel(depth);
        (Subscriber { range, tx }, rx)
    }

    #[test]
    fn an_event_reaches_only_the_watches_whose_range_holds_it() {
        let (all, mut all_rx) = subscriber(KeyRange::prefix("/registry/clusters/"), 8);
        let (ns, mut ns_rx) = subscriber(KeyRange::prefix("/registry/clusters/org-a/"), 8);
        let (one, mut one_rx) = subscriber(
            KeyRange::exact(
                "/registry/clusters/org-a/",
                "/registry/clusters/org-a/x".into(),
            ),
            8,
        );
        let mut subs = vec![all, ns, one];
        publish(&mut subs, event("/registry/clusters/org-a/x", 2));
        publish(&mut subs, event("/registry/clusters/org-a/xy", 3));
        publish(&mut subs, event("/registry/clusters/org-b/x", 4));
        let revs = |rx: &mut mpsc::Receiver<HubItem>| {
            let mut out = Vec::new();
            while let Ok(Ok(ev)) = rx.try_recv() {
                out.push(ev.event.revision);
            }
            out
        };
        assert_eq!(revs(&mut all_rx), vec![2, 3, 4]);
        assert_eq!(revs(&mut ns_rx), vec![2, 3]);
        assert_eq!(revs(&mut one_rx), vec![2]);
        assert_eq!(subs.len(), 3);
    }

    #[test]
    fn a_full_or_closed_queue_leaves_the_hub_and_keeps_what_it_holds() {
        let (slow, mut slow_rx) = subscriber(KeyRange::prefix("/registry/clusters/"), 1);
        let (gone, gone_rx) = subscriber(KeyRange::prefix("/registry/clusters/"), 8);
        drop(gone_rx);
        let mut subs = vec![slow, gone];
        publish(&mut subs, event("/registry/clusters/org-a/x", 2));
        assert_eq!(subs.len(), 1, "the closed queue is dropped");
        publish(&mut subs, event("/registry/clusters/org-a/x", 3));
        assert!(subs.is_empty(), "the full queue is dropped");
        assert!(matches!(slow_rx.try_recv(), Ok(Ok(ev)) if ev.event.revision == 2));
        assert!(
            matches!(
                slow_rx.try_recv(),
                Err(mpsc::error::TryRecvError::Disconnected)
            ),
            "after what it held, the dropped watch ends"
        );
    }

    #[test]
    fn an_event_is_decoded_once_for_all_its_watches() {
        let ev = event("/registry/clusters/org-a/x", 2);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..3 {
            let pair = ev.decoded(|_| {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, ()>((SharedObject::new(serde_json::json!({"a": 1})), None))
            });
            assert_eq!(
                pair.map(|(now, _)| now.json()),
                Some(bytes::Bytes::from_static(br#"{"a":1}"#))
            );
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
