//! The single writer thread and its group commit.
//!
//! Every write request travels over one channel to one thread. The thread takes
//! whatever is queued (up to [`MAX_BATCH`] requests), applies the requests in
//! order inside one redb write transaction, each with its own revision and its own
//! outcome, commits once with `Durability::Immediate` (one fsync for the whole
//! batch), and only then publishes the events and answers the callers. If the
//! transaction fails, every request of the batch fails and nothing is published.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ::redb::{Database, Durability, ReadableTable, Table};
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::codec::{decode_record, encode_event, encode_record};
use super::{RedbError, Shared, KV, LOG, META, META_COMPACTED, META_REVISION};
use crate::{EventKind, KeyValue, Revision, StoreError, WatchEvent};

/// The most requests applied in one write transaction.
pub(crate) const MAX_BATCH: usize = 256;

/// Where a request's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One write, with the channel its caller waits on.
pub(crate) enum Request {
    /// Create a key that must not exist.
    Create {
        key: String,
        value: Bytes,
        reply: Reply<KeyValue>,
    },
    /// Replace a key whose `mod_revision` must be `expected`.
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
        reply: Reply<KeyValue>,
    },
    /// Delete a key, checking its `mod_revision` when `expected` is given.
    Delete {
        key: String,
        expected: Option<Revision>,
        reply: Reply<(KeyValue, Revision)>,
    },
    /// Drop change log entries up to `revision`.
    Compact {
        revision: Revision,
        reply: Reply<()>,
    },
}

/// Sends a request's answer once its batch has committed (`None`) or failed.
type Deliver = Box<dyn FnOnce(Option<&Arc<RedbError>>) + Send>;

/// The outcome of one request inside a transaction: the outer error is a storage
/// failure that dooms the whole batch, the inner one is this request's own answer.
type Applied<T> = Result<Result<T, StoreError>, RedbError>;

fn deliver<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Deliver {
    Box::new(move |failure| {
        let result = match failure {
            Some(err) => Err(StoreError::Backend(Box::new(RedbError::Batch(err.clone())))),
            None => result,
        };
        // The caller may have stopped waiting; the write stands either way.
        let _ = reply.send(result);
    })
}

/// Turns an applied request into its delivery, and hands back a storage failure.
fn settle<T: Send + 'static>(reply: Reply<T>, applied: Applied<T>) -> (Deliver, Option<RedbError>) {
    match applied {
        Ok(result) => (deliver(reply, result), None),
        // The batch fails, so every delivery gets the batch error instead.
        Err(err) => (deliver(reply, Err(StoreError::Closed)), Some(err)),
    }
}

impl Request {
    fn apply(self, batch: &mut Batch<'_>) -> (Deliver, Option<RedbError>) {
        match self {
            Request::Create { key, value, reply } => settle(reply, batch.create(key, value)),
            Request::Update {
                key,
                value,
                expected,
                reply,
            } => settle(reply, batch.update(key, value, expected)),
            Request::Delete {
                key,
                expected,
                reply,
            } => settle(reply, batch.delete(key, expected)),
            Request::Compact { revision, reply } => settle(reply, batch.compact(revision)),
        }
    }

    /// A delivery for a request the failed batch never reached.
    fn abandon(self) -> Deliver {
        match self {
            Request::Create { reply, .. } | Request::Update { reply, .. } => {
                deliver(reply, Err(StoreError::Closed))
            }
            Request::Delete { reply, .. } => deliver(reply, Err(StoreError::Closed)),
            Request::Compact { reply, .. } => deliver(reply, Err(StoreError::Closed)),
        }
    }
}

/// The tables and counters of one open write transaction.
struct Batch<'t> {
    kv: Table<'t, &'static str, &'static [u8]>,
    log: Table<'t, i64, &'static [u8]>,
    revision: Revision,
    compacted: Revision,
    events: Vec<WatchEvent>,
}

impl Batch<'_> {
    fn read(&self, key: &str) -> Result<Option<KeyValue>, RedbError> {
        match self.kv.get(key)? {
            Some(guard) => Ok(Some(decode_record(key, guard.value())?)),
            None => Ok(None),
        }
    }

    /// Stores `kv` as the key's value under the next revision, and logs the event.
    fn put(&mut self, kv: &KeyValue, prev: Option<KeyValue>) -> Result<(), RedbError> {
        let event = WatchEvent {
            kind: EventKind::Put,
            revision: kv.mod_revision,
            kv: kv.clone(),
            prev,
        };
        self.kv
            .insert(kv.key.as_str(), encode_record(kv).as_slice())?;
        self.log
            .insert(event.revision, encode_event(&event).as_slice())?;
        self.revision = event.revision;
        self.events.push(event);
        Ok(())
    }

    fn create(&mut self, key: String, value: Bytes) -> Applied<KeyValue> {
        if self.read(&key)?.is_some() {
            return Ok(Err(StoreError::AlreadyExists { key }));
        }
        let revision = self.revision + 1;
        let kv = KeyValue {
            key,
            value,
            create_revision: revision,
            mod_revision: revision,
        };
        self.put(&kv, None)?;
        Ok(Ok(kv))
    }

    fn update(&mut self, key: String, value: Bytes, expected: Revision) -> Applied<KeyValue> {
        let Some(prev) = self.read(&key)? else {
            return Ok(Err(StoreError::NotFound { key }));
        };
        if prev.mod_revision != expected {
            return Ok(Err(conflict(key, expected, &prev)));
        }
        let kv = KeyValue {
            key,
            value,
            create_revision: prev.create_revision,
            mod_revision: self.revision + 1,
        };
        self.put(&kv, Some(prev))?;
        Ok(Ok(kv))
    }

    fn delete(&mut self, key: String, expected: Option<Revision>) -> Applied<(KeyValue, Revision)> {
        let Some(prev) = self.read(&key)? else {
            return Ok(Err(StoreError::NotFound { key }));
        };
        if let Some(expected) = expected.filter(|e| *e != prev.mod_revision) {
            return Ok(Err(conflict(key, expected, &prev)));
        }
        let event = WatchEvent {
            kind: EventKind::Delete,
            revision: self.revision + 1,
            kv: prev.clone(),
            prev: Some(prev.clone()),
        };
        self.kv.remove(key.as_str())?;
        self.log
            .insert(event.revision, encode_event(&event).as_slice())?;
        self.revision = event.revision;
        self.events.push(event);
        Ok(Ok((prev, self.revision)))
    }

    /// Drops log entries up to `revision`, clamped to the current revision; a
    /// compaction point never moves backwards.
    fn compact(&mut self, revision: Revision) -> Applied<()> {
        let target = revision.min(self.revision);
        if target > self.compacted {
            self.log.retain_in(..=target, |_, _| false)?;
            self.compacted = target;
        }
        Ok(Ok(()))
    }
}

fn conflict(key: String, expected: Revision, found: &KeyValue) -> StoreError {
    StoreError::Conflict {
        key,
        expected,
        actual: found.mod_revision,
    }
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) db: Arc<Database>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) events: broadcast::Sender<Arc<WatchEvent>>,
    pub(crate) requests: mpsc::Receiver<Request>,
}

impl Writer {
    /// Serves batches until every sender is gone.
    pub(crate) fn run(mut self) {
        let mut queued = Vec::with_capacity(MAX_BATCH);
        while self.requests.blocking_recv_many(&mut queued, MAX_BATCH) > 0 {
            self.commit_batch(std::mem::take(&mut queued));
        }
        tracing::debug!("store writer stopped: the store was dropped");
    }

    fn commit_batch(&mut self, requests: Vec<Request>) {
        let size = requests.len();
        let mut deliveries = Vec::with_capacity(size);
        let mut pending = requests.into_iter();
        match self.transact(&mut pending, &mut deliveries) {
            Ok((revision, compacted, events)) => {
                self.shared.revision.store(revision, Ordering::Release);
                self.shared.compacted.store(compacted, Ordering::Release);
                for event in events {
                    // No receivers simply means nobody is watching.
                    let _ = self.events.send(Arc::new(event));
                }
                for deliver in deliveries {
                    deliver(None);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, requests = size, "store write batch failed");
                let err = Arc::new(err);
                deliveries.extend(pending.map(Request::abandon));
                for deliver in deliveries {
                    deliver(Some(&err));
                }
            }
        }
    }

    /// Applies the requests in one transaction and commits it. Returns the new
    /// revision, compaction point and events.
    fn transact(
        &self,
        pending: &mut impl Iterator<Item = Request>,
        deliveries: &mut Vec<Deliver>,
    ) -> Result<(Revision, Revision, Vec<WatchEvent>), RedbError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let (revision, compacted, events) = {
            let mut batch = Batch {
                kv: txn.open_table(KV)?,
                log: txn.open_table(LOG)?,
                revision: self.shared.revision.load(Ordering::Acquire),
                compacted: self.shared.compacted.load(Ordering::Acquire),
                events: Vec::new(),
            };
            for request in pending.by_ref() {
                let (deliver, failure) = request.apply(&mut batch);
                deliveries.push(deliver);
                if let Some(err) = failure {
                    return Err(err);
                }
            }
            (batch.revision, batch.compacted, batch.events)
        };
        if events.is_empty() && compacted == self.shared.compacted.load(Ordering::Acquire) {
            // Nothing changed (every request was refused): skip the fsync.
            txn.abort()?;
            return Ok((revision, compacted, events));
        }
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_REVISION, revision)?;
            meta.insert(META_COMPACTED, compacted)?;
        }
        txn.commit()?;
        Ok((revision, compacted, events))
    }
}
