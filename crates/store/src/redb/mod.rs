//! The embedded backend: one redb file, written by one thread with group commit.
//!
//! Layout: table `kv` maps each key to its current value and revisions, table `log`
//! maps each revision to the change it made (kept until compacted), and table `meta`
//! holds the current revision and the compaction point. All three live in the same
//! file and change in the same transactions, so a restart finds them consistent and
//! a watch can resume from any revision the log still holds.
//!
//! Writes are acknowledged only after a `Durability::Immediate` commit (fsync), so
//! an acknowledged write survives `kill -9` and power loss. Writes queue up for a
//! single writer thread that commits everything queued at once (see `writer`), so
//! concurrent writers share fsyncs. Reads run on tokio's blocking pool in their own
//! read transactions and never wait for the writer.

mod codec;
mod watch;
mod writer;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use ::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use self::codec::CodecError;
use self::codec::{decode_event, decode_record};
use self::writer::{Reply, Request, Writer};
use crate::{
    KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError, WatchEvent, WatchStream,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// How many write requests may wait for the writer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 4 * writer::MAX_BATCH;

/// How many live events a watcher may fall behind before it gets
/// [`StoreError::WatcherLagged`].
pub const WATCH_BUFFER: usize = 16 * 1024;

/// A failure inside the redb backend, carried by [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
pub enum RedbError {
    /// The database file could not be opened or created.
    #[error("cannot open store database {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: ::redb::Error,
    },
    /// redb failed a transaction, a table or a disk operation.
    #[error("redb failed")]
    Db(#[source] ::redb::Error),
    /// A stored record could not be decoded.
    #[error("store database holds a corrupt record")]
    Corrupt(#[from] CodecError),
    /// The write batch this request was committed with failed as a whole.
    #[error("the write batch holding this request failed to commit")]
    Batch(#[source] Arc<RedbError>),
    /// The writer thread could not be started.
    #[error("cannot start the store writer thread")]
    Thread(#[source] std::io::Error),
    /// A read task on the blocking pool panicked or was cancelled.
    #[error("store read task failed")]
    Task(#[source] tokio::task::JoinError),
}

macro_rules! from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for RedbError {
            fn from(err: $ty) -> Self {
                RedbError::Db(err.into())
            }
        }
    )*};
}
from_redb!(
    ::redb::Error,
    ::redb::StorageError,
    ::redb::TableError,
    ::redb::TransactionError,
    ::redb::CommitError,
    ::redb::SetDurabilityError,
    ::redb::DatabaseError
);

impl From<RedbError> for StoreError {
    fn from(err: RedbError) -> Self {
        StoreError::Backend(Box::new(err))
    }
}

/// Counters the writer publishes after each commit, for cheap lock-free reads.
pub(crate) struct Shared {
    revision: AtomicI64,
    compacted: AtomicI64,
}

/// The page cache [`RedbStore::open`] gives redb.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// A [`Store`] kept in one redb file, durable across `kill -9`.
///
/// [`Store::compact`] with a revision beyond the current one compacts up to the
/// current revision; compacting below the compaction point does nothing. A watch
/// with a negative `after` starts after revision 0. Dropping the store waits for
/// the writer thread to finish the batch it is committing and closes the file, so
/// the same path can be opened again right away.
pub struct RedbStore {
    db: Arc<Database>,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl RedbStore {
    /// Opens the store at `path`, creating the file when it does not exist.
    ///
    /// This blocks on file I/O (and on crash recovery after an unclean shutdown),
    /// and starts the writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStore, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store with a page cache of at most `cache_bytes` (redb's own default
    /// is 1 GiB, which a server would otherwise fill with every page it wrote; pages
    /// not cached are read through the kernel's page cache).
    pub fn open_with_cache(
        path: impl AsRef<Path>,
        cache_bytes: usize,
    ) -> Result<RedbStore, StoreError> {
        let path = path.as_ref();
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|err| RedbError::Open {
                path: path.to_owned(),
                source: err.into(),
            })?;
        let (revision, compacted) = init_tables(&db)?;
        let db = Arc::new(db);
        let shared = Arc::new(Shared {
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
        });
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let (requests, queue) = mpsc::channel(QUEUE_DEPTH);
        let writer = Writer {
            db: db.clone(),
            shared: shared.clone(),
            events: events.clone(),
            requests: queue,
        };
        let writer = std::thread::Builder::new()
            .name("shoal-store-writer".into())
            .spawn(move || writer.run())
            .map_err(RedbError::Thread)?;
        tracing::debug!(path = %path.display(), revision, compacted, "opened redb store");
        Ok(RedbStore {
            db,
            shared,
            events,
            requests: Some(requests),
            writer: Some(writer),
        })
    }

    /// Queues a write and waits for its commit.
    async fn write<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let requests = self.requests.as_ref().ok_or(StoreError::Closed)?;
        requests
            .send(request(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a read on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Database) -> Result<T, RedbError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || read(&db))
            .await
            .map_err(RedbError::Task)?;
        Ok(result?)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the queue stops the writer once it has answered what is queued.
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("store writer thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("revision", &self.shared.revision.load(Ordering::Acquire))
            .field("compacted", &self.shared.compacted.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

/// Creates the tables of a new file and reads the revision counters.
fn init_tables(db: &Database) -> Result<(Revision, Revision), RedbError> {
    let txn = db.begin_write()?;
    let counters = {
        txn.open_table(KV)?;
        txn.open_table(LOG)?;
        let meta = txn.open_table(META)?;
        counters(&meta)?
    };
    txn.commit()?;
    Ok(counters)
}

/// Reads the current revision and the compaction point.
fn counters(
    meta: &impl ReadableTable<&'static str, i64>,
) -> Result<(Revision, Revision), RedbError> {
    let get = |name| -> Result<Revision, RedbError> {
        Ok(meta.get(name)?.map_or(0, |guard| guard.value()))
    };
    Ok((get(META_REVISION)?, get(META_COMPACTED)?))
}

/// Reads one page of keys under the request's prefix.
fn read_range(db: &Database, req: &RangeRequest) -> Result<RangeResponse, RedbError> {
    let txn = db.begin_read()?;
    let (revision, _) = counters(&txn.open_table(META)?)?;
    let kv = txn.open_table(KV)?;
    let start = match req.start_after.as_deref() {
        Some(after) if after >= req.prefix.as_str() => Bound::Excluded(after),
        _ => Bound::Included(req.prefix.as_str()),
    };
    let limit = req.limit.map_or(usize::MAX, |limit| limit.get());
    let mut items = Vec::new();
    let mut more = false;
    for entry in kv.range::<&str>((start, Bound::Unbounded))? {
        let (key, value) = entry?;
        let key = key.value();
        if !key.starts_with(req.prefix.as_str()) {
            break;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(decode_record(key, value.value())?);
    }
    Ok(RangeResponse {
        items,
        more,
        revision,
    })
}

/// Reads the logged changes under `prefix` after `after`, checking the compaction
/// point in the same snapshot. Returns the events and the snapshot's revision.
fn read_history(
    db: &Database,
    prefix: &str,
    after: Revision,
) -> Result<Result<(Vec<WatchEvent>, Revision), StoreError>, RedbError> {
    let txn = db.begin_read()?;
    let (revision, compacted) = counters(&txn.open_table(META)?)?;
    if after < compacted {
        return Ok(Err(StoreError::Compacted {
            requested: after,
            compacted,
        }));
    }
    let mut events = Vec::new();
    if after >= revision {
        return Ok(Ok((events, revision)));
    }
    let log = txn.open_table(LOG)?;
    for entry in log.range((after + 1)..=revision)? {
        let (rev, bytes) = entry?;
        let event = decode_event(rev.value(), bytes.value())?;
        if event.kv.key.starts_with(prefix) {
            events.push(event);
        }
    }
    Ok(Ok((events, revision)))
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.read(move |db| {
            let txn = db.begin_read()?;
            let kv = txn.open_table(KV)?;
            let found = kv.get(key.as_str())?;
            Ok(match found {
                Some(guard) => Some(decode_record(&key, guard.value())?),
                None => None,
            })
        })
        .await
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        self.read(move |db| read_range(db, &req)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StoreError> {
        let key = key.to_owned();
        self.write(|reply| Request::Create { key, value, reply })
            .await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let key = key.to_owned();
        self.write(|reply| Request::Update {
            key,
            value,
            expected,
            reply,
        })
        .await
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        let key = key.to_owned();
        self.write(|reply| Request::Delete {
            key,
            expected,
            reply,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let after = after.max(0);
        // Subscribe before reading the history: see the `watch` module.
        let rx = self.events.subscribe();
        let owned = prefix.to_owned();
        let (history, snapshot) = self
            .read(move |db| read_history(db, &owned, after))
            .await??;
        Ok(watch::stream(
            history,
            snapshot.max(after),
            prefix.to_owned(),
            rx,
        ))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.write(|reply| Request::Compact { revision, reply })
            .await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.revision.load(Ordering::Acquire))
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.compacted.load(Ordering::Acquire))
    }
}
