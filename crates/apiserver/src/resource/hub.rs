//! Watch fan-out: one store watch per kind, shared by every API watch of that
//! kind on this replica, instead of one store watch per client.
//!
//! A hub follows its prefix from the revision it started at and remembers the
//! revision of the last event it passed on (its head). A client watch that starts
//! at or after the head is served from the hub: it subscribes first, under the
//! same lock the hub holds while publishing, so it receives every later event, in
//! order. A client that asks for older history gets its own store watch, which
//! replays it. Either way there is no gap and no duplicate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use shoal_store::{Revision, Store, StoreError, WatchEvent, WatchStream};
use tokio::sync::broadcast;

/// How many events a slow client may fall behind before its watch ends (it
/// then resumes from its last resourceVersion).
const FAN_OUT_BUFFER: usize = 16_384;

struct HubState {
    head: Revision,
    sender: Option<broadcast::Sender<Arc<WatchEvent>>>,
}

/// One shared store watch and its subscribers.
struct Hub {
    state: Mutex<HubState>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn follow(self: Arc<Self>, store: Arc<dyn Store>, prefix: String) {
        loop {
            let started = match store.current_revision().await {
                Ok(rev) => store.watch(&prefix, rev).await.map(|feed| (rev, feed)),
                Err(e) => Err(e),
            };
            if let Ok((rev, mut feed)) = started {
                let (tx, _) = broadcast::channel(FAN_OUT_BUFFER);
                {
                    let mut s = self.lock();
                    s.head = rev;
                    s.sender = Some(tx.clone());
                }
                while let Some(Ok(ev)) = feed.next().await {
                    let mut s = self.lock();
                    s.head = ev.revision;
                    // No subscribers is fine: the event is simply not needed.
                    let _ = tx.send(Arc::new(ev));
                }
                // The feed ended: subscribers see their channel close and end
                // their watches; clients resume from their last resourceVersion.
                self.lock().sender = None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A receiver of every event after the returned head, if the hub is live.
    fn subscribe(&self) -> Option<(Revision, broadcast::Receiver<Arc<WatchEvent>>)> {
        let s = self.lock();
        s.sender.as_ref().map(|tx| (s.head, tx.subscribe()))
    }
}

/// The hubs of one store, one per storage prefix, made on first use.
#[derive(Clone, Default)]
pub struct Hubs {
    hubs: Arc<Mutex<HashMap<String, Arc<Hub>>>>,
}

impl Hubs {
    fn hub(&self, store: &Arc<dyn Store>, prefix: &str) -> Arc<Hub> {
        let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        hubs.entry(prefix.to_owned())
            .or_insert_with(|| {
                let hub = Arc::new(Hub {
                    state: Mutex::new(HubState {
                        head: 0,
                        sender: None,
                    }),
                });
                tokio::spawn(hub.clone().follow(store.clone(), prefix.to_owned()));
                hub
            })
            .clone()
    }

    /// Every change under `key_prefix` after revision `after`, through the hub of
    /// `hub_prefix` (which contains `key_prefix`) when it can serve it, otherwise
    /// through a store watch of its own.
    pub async fn watch(
        &self,
        store: &Arc<dyn Store>,
        hub_prefix: &str,
        key_prefix: &str,
        after: Revision,
    ) -> Result<WatchStream, StoreError> {
        let hub = self.hub(store, hub_prefix);
        let Some((_head, rx)) = hub.subscribe().filter(|(head, _)| after >= *head) else {
            return store.watch(key_prefix, after).await;
        };
        // A watch from before the compaction point must still fail, as it would on the store.
        let compacted = store.compacted_revision().await?;
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let key_prefix = key_prefix.to_owned();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(ev) => Some((Ok(ev), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    Some((Err(StoreError::WatcherLagged), rx))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .filter_map(move |item| {
            let keep = match item {
                Ok(ev) if ev.revision > after && ev.kv.key.starts_with(&key_prefix) => {
                    Some(Ok((*ev).clone()))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(keep)
        });
        Ok(stream.boxed())
    }
}
