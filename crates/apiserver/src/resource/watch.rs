//! Watches: the store's change feed turned into Kubernetes watch events, with
//! selectors applied as Kubernetes does (an object leaving the selection is
//! DELETED, one entering it is ADDED).

use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::Value;
use shoal_api::KindInfo;
use shoal_store::{EventKind, StoreError};

use crate::error::ApiError;
use crate::resource::codec::{object_key, prefix, Codec};
use crate::resource::hub::{DecodedPair, KeyRange, SharedObject};
use crate::resource::view;
use crate::resource::{ListOptions, Resources};
use crate::selector::labels_of;

/// The type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEventType {
    /// The object appeared (or entered the selection).
    Added,
    /// The object changed.
    Modified,
    /// The object went away (or left the selection).
    Deleted,
    /// No object: the stream has seen everything up to this resourceVersion.
    Bookmark,
}

impl WatchEventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchEventType::Added => "ADDED",
            WatchEventType::Modified => "MODIFIED",
            WatchEventType::Deleted => "DELETED",
            WatchEventType::Bookmark => "BOOKMARK",
        }
    }
}

/// One item of a watch stream.
#[derive(Debug)]
pub enum WatchItem {
    /// An event with its object (the object already carries its resourceVersion),
    /// shared with the other watches that send the same event.
    Event(WatchEventType, SharedObject),
    /// A bookmark at this revision.
    Bookmark(i64),
    /// The bookmark that ends the initial events of a streaming list
    /// (`sendInitialEvents`), at the revision they were listed at.
    InitialEventsEnd(i64),
    /// The watch ended with an error; the client must list again for a 410.
    Error(ApiError),
}

/// How a watch starts and what it sends.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// Filters.
    pub list: ListOptions,
    /// Start after this revision; `None` first sends the current objects as ADDED.
    pub resource_version: Option<i64>,
    /// Send BOOKMARK events at this interval.
    pub bookmarks: Option<Duration>,
    /// A streaming list: send the current objects as ADDED whatever the
    /// resourceVersion, then [`WatchItem::InitialEventsEnd`].
    pub send_initial_events: bool,
}

impl Resources {
    /// Streams changes of one kind, in one namespace or all.
    pub async fn watch(
        &self,
        kind: &'static KindInfo,
        ns: Option<String>,
        opts: WatchOptions,
    ) -> Result<impl Stream<Item = WatchItem> + Send + 'static, ApiError> {
        let mut initial = Vec::new();
        let start = match opts.resource_version {
            Some(rv) if !opts.send_initial_events => rv,
            _ => {
                let mut list_opts = opts.list.clone();
                list_opts.limit = None;
                list_opts.continue_token = None;
                let page = self.list(kind, ns.as_deref(), &list_opts).await?;
                initial = page
                    .items
                    .into_iter()
                    .map(|o| WatchItem::Event(WatchEventType::Added, SharedObject::new(o)))
                    .collect();
                if opts.send_initial_events {
                    initial.push(WatchItem::InitialEventsEnd(page.resource_version));
                }
                page.resource_version
            }
        };
        let hub_prefix = prefix(kind, None);
        let range = match opts.list.fields.required("metadata.name") {
            // One object: the hub wakes this watch for that key only.
            Some(name) if ns.is_some() || !kind.namespaced => KeyRange::exact(
                &prefix(kind, ns.as_deref()),
                object_key(kind, ns.as_deref(), name),
            ),
            _ => KeyRange::prefix(&prefix(kind, ns.as_deref())),
        };
        let feed = self
            .hubs
            .watch(&self.store, &hub_prefix, range, start)
            .await;
        let feed = match feed {
            Ok(feed) => feed,
            Err(e @ StoreError::Compacted { .. }) => {
                let err = futures::stream::once(async move { WatchItem::Error(e.into()) });
                return Ok(err.boxed());
            }
            Err(e) => return Err(e.into()),
        };
        let codec = self.codec.clone();
        let filter = opts.list.clone();
        let matches = move |obj: &Value| {
            (filter.labels.is_empty() || filter.labels.matches(&labels_of(obj)))
                && (filter.fields.is_empty() || filter.fields.matches(obj))
        };
        // Kinds whose view is their stored form share one decoding per event
        // with every other watch of the event; the others decode their own view.
        let shared_view = view::is_stored_form(kind);
        let events = feed.filter_map(move |ev| {
            let item = match ev {
                Err(e) => Some(WatchItem::Error(e.into())),
                Ok(ev) => {
                    let decode = |e: &shoal_store::WatchEvent| decode_pair(&codec, kind, e);
                    let pair = match shared_view.then(|| ev.decoded(decode)).flatten() {
                        Some(pair) => Ok(pair),
                        None => decode(&ev.event),
                    };
                    match pair {
                        Err(e) => Some(WatchItem::Error(e)),
                        Ok((now, before)) => {
                            let was = before.as_ref().is_some_and(|b| matches(b.value()));
                            let is = matches(now.value());
                            let ty = match (ev.event.kind, was, is) {
                                (EventKind::Delete, _, true) => Some(WatchEventType::Deleted),
                                (EventKind::Delete, _, false) => None,
                                (EventKind::Put, false, true) => Some(WatchEventType::Added),
                                (EventKind::Put, true, true) => Some(WatchEventType::Modified),
                                (EventKind::Put, true, false) => Some(WatchEventType::Deleted),
                                (EventKind::Put, false, false) => None,
                            };
                            ty.map(|t| WatchItem::Event(t, now))
                        }
                    }
                }
            };
            futures::future::ready(item)
        });
        let stream = futures::stream::iter(initial).chain(events);
        Ok(match opts.bookmarks {
            None => stream.boxed(),
            Some(every) => with_bookmarks(stream, start, every).boxed(),
        })
    }
}

/// The object a store event leaves, and the one it replaced, in `kind`'s view.
fn decode_pair(
    codec: &Codec,
    kind: &'static KindInfo,
    ev: &shoal_store::WatchEvent,
) -> Result<DecodedPair, ApiError> {
    let decode = |bytes: &[u8], rv| {
        codec
            .decode_at(kind, &ev.kv.key, bytes, rv)
            .map(|o| SharedObject::new(view::from_storage(kind, o)))
    };
    let now = decode(&ev.kv.value, ev.revision)?;
    let before = match &ev.prev {
        Some(p) => Some(decode(&p.value, p.mod_revision)?),
        None => None,
    };
    Ok((now, before))
}

/// Interleaves BOOKMARK items into a watch stream when it is idle, carrying the
/// revision of the last event delivered (never one the client has not seen).
fn with_bookmarks(
    inner: impl Stream<Item = WatchItem> + Send + 'static,
    start: i64,
    every: Duration,
) -> impl Stream<Item = WatchItem> + Send + 'static {
    let inner = inner.boxed();
    futures::stream::unfold(
        (inner, start, false),
        move |(mut inner, mut last, done)| async move {
            if done {
                return None;
            }
            match tokio::time::timeout(every, inner.next()).await {
                Ok(Some(item)) => {
                    if let WatchItem::Event(_, obj) = &item {
                        if let Some(rv) = obj
                            .value()
                            .pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                            .and_then(|s| s.parse::<i64>().ok())
                        {
                            last = last.max(rv);
                        }
                    }
                    let end = matches!(item, WatchItem::Error(_));
                    Some((item, (inner, last, end)))
                }
                Ok(None) => None,
                Err(_) => Some((WatchItem::Bookmark(last), (inner, last, false))),
            }
        },
    )
}
