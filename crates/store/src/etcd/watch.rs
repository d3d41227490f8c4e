//! Watches that outlive the endpoint they started on.
//!
//! Each [`Store::watch`](crate::Store::watch) gets a task that reads one etcd
//! watch stream and forwards its events. When the stream breaks (the member died,
//! lost its leader, or the connection reset), the task marks the endpoint
//! unhealthy and opens a new etcd watch on another endpoint from the revision
//! after the last event it delivered, so the consumer sees no gap; events at or
//! below that revision are dropped, so it sees no duplicate either. etcd sends all
//! events of one revision in one response, so a revision is never split across a
//! reconnect.

use std::sync::Arc;

use bytes::Bytes;
use etcd_client::{Event, EventType, WatchClient, WatchOptions};
use tokio::sync::{mpsc, watch};

use super::keys::Keys;
use super::pool::retryable;
use super::{to_kv, EtcdError, Inner};
use crate::{EventKind, KeyValue, Revision, StoreError, WatchEvent};

/// How many events a watch buffers for a consumer that reads slowly; past that
/// the task stops reading etcd, and etcd's flow control holds the rest.
pub(crate) const WATCH_BUFFER: usize = 256;

/// What opening an etcd watch found.
pub(crate) enum Opened {
    /// The watch runs.
    Stream(Box<etcd_client::WatchStream>),
    /// The start revision has been compacted; etcd's compaction point.
    Compacted(Revision),
}

/// Opens an etcd watch on `[start, end)` (or the single key `start` when `end`
/// is `None`) from revision `from`, with previous values, and waits until etcd
/// confirms it.
pub(crate) async fn open(
    client: &mut WatchClient,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    from: Revision,
) -> Result<Opened, etcd_client::Error> {
    let mut options = WatchOptions::new()
        .with_start_revision(from)
        .with_prev_key();
    if let Some(end) = end {
        options = options.with_range(end);
    }
    let mut stream = client.watch(start, Some(options)).await?;
    match stream.message().await? {
        Some(resp) if resp.compact_revision() > 0 => Ok(Opened::Compacted(resp.compact_revision())),
        Some(resp) if resp.created() && !resp.canceled() => Ok(Opened::Stream(Box::new(stream))),
        Some(resp) => Err(etcd_client::Error::WatchError(format!(
            "etcd refused the watch: {}",
            resp.cancel_reason()
        ))),
        None => Err(etcd_client::Error::WatchError(
            "the watch stream closed before etcd confirmed the watch".into(),
        )),
    }
}

/// Maps an etcd event to the store's. A delete carries the key's last value from
/// etcd's `prev_kv`; should etcd not have it (only when the history before the
/// event was compacted while the watch caught up), the delete carries the key
/// with an empty value and zero revisions.
pub(crate) fn map_event(keys: &Keys, event: &Event) -> Result<WatchEvent, EtcdError> {
    let kv = event.kv().ok_or(EtcdError::Malformed {
        op: "watch",
        what: "the key of an event",
    })?;
    let revision = kv.mod_revision();
    let prev = event.prev_kv().map(|p| to_kv(keys, p)).transpose()?;
    Ok(match event.event_type() {
        EventType::Put => WatchEvent {
            kind: EventKind::Put,
            revision,
            kv: to_kv(keys, kv)?,
            prev,
        },
        EventType::Delete => {
            let last = match &prev {
                Some(prev) => prev.clone(),
                None => KeyValue {
                    key: keys.strip(kv.key())?,
                    value: Bytes::new(),
                    create_revision: 0,
                    mod_revision: 0,
                },
            };
            WatchEvent {
                kind: EventKind::Delete,
                revision,
                kv: last,
                prev,
            }
        }
    })
}

/// Why a task stopped reading one etcd stream.
enum Stop {
    /// The consumer dropped its stream.
    ConsumerGone,
    /// The store was dropped.
    Closed,
    /// etcd compacted past the next revision to deliver.
    Compacted(Revision),
    /// The stream broke in a way another endpoint may not: resume elsewhere.
    Broken(EtcdError),
    /// Something no endpoint will fix.
    Fatal(EtcdError),
}

/// The task behind one store watch.
pub(crate) struct Task {
    pub(crate) inner: Arc<Inner>,
    pub(crate) start: Vec<u8>,
    pub(crate) end: Vec<u8>,
    /// The revision of the last event delivered, or the watch's `after`.
    pub(crate) last: Revision,
    pub(crate) tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
    pub(crate) closed: watch::Receiver<bool>,
}

impl Task {
    /// Forwards events from `stream` (open on endpoint `member`, and already
    /// counted there with [`Pool::watch_started`](super::pool::Pool::watch_started))
    /// and from every stream that replaces it, until the consumer or the store
    /// goes away or the watch cannot go on.
    pub(crate) async fn run(
        mut self,
        mut member: usize,
        mut stream: Box<etcd_client::WatchStream>,
    ) {
        loop {
            let endpoint = self.inner.pool.endpoint(member);
            let stop = self.pump(&mut stream, &endpoint).await;
            self.inner.pool.watch_ended(member);
            let err = match stop {
                Stop::Broken(err) => err,
                other => return self.finish(other).await,
            };
            self.inner.pool.mark_failed(member, &err);
            self.inner.counters.watch_resumes.inc();
            tracing::info!(error = %err, resume_from = self.last + 1, "etcd watch broke; resuming on another endpoint");
            match self.reopen().await {
                Ok((next, next_stream)) => {
                    self.inner.pool.watch_started(next);
                    member = next;
                    stream = next_stream;
                }
                Err(stop) => return self.finish(stop).await,
            }
        }
    }

    /// Reads one etcd stream until it stops.
    async fn pump(&mut self, stream: &mut etcd_client::WatchStream, endpoint: &str) -> Stop {
        loop {
            let message = tokio::select! {
                _ = self.closed.wait_for(|closed| *closed) => return Stop::Closed,
                () = self.tx.closed() => return Stop::ConsumerGone,
                message = stream.message() => message,
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    return Stop::Broken(EtcdError::WatchEnded {
                        endpoint: endpoint.to_owned(),
                    })
                }
                Err(source) => {
                    let retry = retryable(&source);
                    let err = EtcdError::Watch {
                        endpoint: endpoint.to_owned(),
                        source,
                    };
                    return if retry {
                        Stop::Broken(err)
                    } else {
                        Stop::Fatal(err)
                    };
                }
            };
            if resp.compact_revision() > 0 {
                return Stop::Compacted(resp.compact_revision());
            }
            if resp.canceled() {
                // Not for compaction: "no leader" and the like. Another member may do.
                return Stop::Broken(EtcdError::Watch {
                    endpoint: endpoint.to_owned(),
                    source: etcd_client::Error::WatchError(format!(
                        "etcd canceled the watch: {}",
                        resp.cancel_reason()
                    )),
                });
            }
            if let Some(header) = resp.header() {
                self.inner.pool.saw_revision(header.revision());
            }
            // Everything at or below `resume` was delivered before a reconnect.
            let resume = self.last;
            for event in resp.events() {
                let event = match map_event(&self.inner.keys, event) {
                    Ok(event) => event,
                    Err(err) => return Stop::Fatal(err),
                };
                if event.revision <= resume {
                    continue;
                }
                let revision = event.revision;
                tokio::select! {
                    sent = self.tx.send(Ok(event)) => if sent.is_err() {
                        return Stop::ConsumerGone;
                    },
                    _ = self.closed.wait_for(|closed| *closed) => return Stop::Closed,
                }
                self.last = self.last.max(revision);
            }
        }
    }

    /// Opens a new etcd watch from the revision after the last delivered one, on
    /// a healthy endpoint, within the request timeout.
    async fn reopen(&mut self) -> Result<(usize, Box<etcd_client::WatchStream>), Stop> {
        let from = self.last.saturating_add(1);
        let (start, end) = (&self.start, &self.end);
        let opening = self.inner.pool.call("watch", |t| {
            let (start, end) = (start.clone(), end.clone());
            let mut client = t.watch;
            async move { Ok((t.member, open(&mut client, start, Some(end), from).await?)) }
        });
        let opened = tokio::select! {
            opened = opening => opened,
            _ = self.closed.wait_for(|closed| *closed) => return Err(Stop::Closed),
            () = self.tx.closed() => return Err(Stop::ConsumerGone),
        };
        match opened {
            Ok((member, Opened::Stream(stream))) => Ok((member, stream)),
            Ok((_, Opened::Compacted(point))) => Err(Stop::Compacted(point)),
            Err(err) => Err(Stop::Fatal(err)),
        }
    }

    /// Tells the consumer why the watch ends, if it still listens.
    async fn finish(self, stop: Stop) {
        let last = match stop {
            Stop::ConsumerGone => return,
            Stop::Closed => StoreError::Closed,
            Stop::Compacted(point) => {
                self.inner.learn_compaction(point);
                StoreError::Compacted {
                    requested: self.last,
                    compacted: point,
                }
            }
            Stop::Broken(err) | Stop::Fatal(err) => err.into(),
        };
        let _ = self.tx.send(Err(last)).await;
    }
}
