//! The etcd backend: the store's keys live under a prefix of an etcd v3 cluster,
//! one etcd key per store key, so several Shoal servers can share one store.
//!
//! # Mapping
//!
//! - A revision is etcd's revision: a key's `create_revision` and `mod_revision`
//!   are etcd's, and every response's revision is its header's. etcd counts
//!   writes cluster-wide, so writes outside the prefix also move it.
//! - `create` is a transaction "if `create_revision` is 0, put; else read the key",
//!   `update` and `delete` are "if the key exists and its `mod_revision` is the
//!   expected one, write; else read the key", so a refused write reports the
//!   revision it met in the same round trip. `delete` without an expected revision
//!   reads the key first and then deletes that revision (see below).
//! - `watch` is an etcd watch from `after + 1` with previous values; `compact` is
//!   etcd's compaction.
//!
//! # Endpoints
//!
//! etcd-client would balance one channel over all endpoints and keep sending to
//! a dead member, so the store keeps one client per endpoint and chooses itself:
//! a background task checks every endpoint with a linearizable read each
//! [`EtcdConfig::health_interval`]; requests go round-robin to healthy endpoints;
//! an attempt that fails in transport, times out or meets a member without a
//! leader marks its endpoint unhealthy and the request moves on to another
//! endpoint (with backoff once none is left) until [`EtcdConfig::request_timeout`]
//! has passed, when it fails with [`StoreError::Backend`] holding
//! [`EtcdError::Unavailable`]. Reads are simply retried. Watches resume on
//! another endpoint after the last revision they delivered, with no gap and no
//! duplicate. [`EtcdStore::endpoints`] and [`EtcdStore::stats`] show what
//! happened.
//!
//! # Writes whose outcome is unknown
//!
//! A write attempt that failed after it may have reached etcd (the connection
//! broke, or the attempt timed out) may still be applied. Retrying it is safe
//! because every write is a compare-and-swap whose condition the first attempt,
//! once applied, makes false: the retry either applies (and the first attempt
//! never will) or finds the key changed. In that second case, the store checks
//! whether the change was its own before it answers:
//! - `create`: the key's current life began after the last revision the store had
//!   seen before sending, with exactly this value: success with that creation.
//! - `update`: the first change to the key after the expected revision (read from
//!   etcd's history through a watch) is a put of exactly this value: success.
//! - `delete`: the first change after the expected revision is a delete: success,
//!   with the value and revision etcd recorded for it.
//!
//! Otherwise the write is refused as usual (`AlreadyExists`, `Conflict`,
//! `NotFound`). So a write is never applied twice and never reported refused
//! when it was applied, with two limits: a concurrent writer that wrote the very
//! same bytes (or deleted the same revision) is taken for this one, and if the
//! history needed has been compacted in the meantime, `create` and `update` fall
//! back to comparing the current value and `delete` fails with
//! [`EtcdError::OutcomeUnknown`].
//!
//! # The compaction point
//!
//! etcd does not report its compaction point outright, so the store tracks it:
//! at [`EtcdStore::connect`] it finds it by bisecting over revisions with reads
//! at a revision (etcd refuses those below the point), it raises it on each
//! compaction it makes, and it learns a higher point from etcd whenever a watch,
//! a compaction or a historical read runs into one (another Shoal server
//! compacted). [`Store::compacted_revision`] returns what it knows; a compaction
//! made by another process is seen at the latest by the next watch that needs
//! the history it removed.

mod keys;
mod pool;
mod watch;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, ResponseHeader, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
use tokio::sync::mpsc;

use self::keys::Keys;
use self::pool::{is_compacted, is_future_revision, Pool};
use self::watch::{Opened, Task};
use crate::{KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError, WatchStream};

/// Where and how to reach etcd.
///
/// Build it with [`EtcdConfig::new`] or with struct update syntax over
/// [`EtcdConfig::default`].
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// The client URLs of the etcd members, e.g. `http://10.0.0.1:2379`. Without a
    /// scheme, `https://` is used when [`tls`](Self::tls) is set, else `http://`.
    pub endpoints: Vec<String>,
    /// Every store key is stored under this etcd key prefix (default `/shoal/`).
    pub prefix: String,
    /// TLS towards etcd; `None` talks plain HTTP/2.
    pub tls: Option<EtcdTls>,
    /// How long one store operation may take in all, retries included, before it
    /// fails with [`EtcdError::Unavailable`] (default 10 s).
    pub request_timeout: Duration,
    /// How long one attempt on one endpoint may take before the endpoint is
    /// marked unhealthy and the request moves on (default 3 s).
    pub attempt_timeout: Duration,
    /// How often every endpoint's health is checked (default 1 s).
    pub health_interval: Duration,
    /// How long a health check waits for its answer (default 1 s).
    pub health_timeout: Duration,
    /// How long connecting to an endpoint may take (default 2 s).
    pub dial_timeout: Duration,
}

impl EtcdConfig {
    /// The defaults, with these endpoints.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..EtcdConfig::default()
        }
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: Vec::new(),
            prefix: "/shoal/".into(),
            tls: None,
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(3),
            health_interval: Duration::from_secs(1),
            health_timeout: Duration::from_secs(1),
            dial_timeout: Duration::from_secs(2),
        }
    }
}

/// TLS material for etcd, in PEM.
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA that signed the etcd members' serving certificates.
    pub ca_pem: Vec<u8>,
    /// The client certificate, for etcd's `--client-cert-auth`; with `key_pem`.
    pub cert_pem: Option<Vec<u8>>,
    /// The client certificate's private key; with `cert_pem`.
    pub key_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("cert_pem", &self.cert_pem.as_ref().map(Vec::len))
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A failure inside the etcd backend, carried by [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The configuration names no endpoint.
    #[error("no etcd endpoints configured: give at least one, e.g. http://127.0.0.1:2379")]
    NoEndpoints,
    /// TLS was given a client certificate without its key, or the reverse.
    #[error("etcd TLS needs both a client certificate and its key, or neither")]
    TlsIdentity,
    /// The client for one endpoint could not be built (a bad URL or TLS setting).
    #[error("cannot set up the etcd client for {endpoint}")]
    Client {
        /// The endpoint as configured.
        endpoint: String,
        /// What etcd-client reported.
        #[source]
        source: etcd_client::Error,
    },
    /// No endpoint passed a health check while connecting.
    #[error(
        "no etcd endpoint of {endpoints:?} answered within {waited:?}: check that the \
         members run and that a quorum of them is up"
    )]
    NoHealthyEndpoint {
        /// The endpoints tried.
        endpoints: Vec<String>,
        /// How long connecting waited.
        waited: Duration,
    },
    /// One request failed at one endpoint.
    #[error("etcd {op} failed at {endpoint}")]
    Request {
        /// The store operation.
        op: &'static str,
        /// The endpoint.
        endpoint: String,
        /// What etcd or the transport reported.
        #[source]
        source: etcd_client::Error,
    },
    /// One attempt got no answer in time.
    #[error("etcd {op} got no answer from {endpoint} within {timeout:?}")]
    AttemptTimeout {
        /// The store operation.
        op: &'static str,
        /// The endpoint.
        endpoint: String,
        /// How long the attempt waited.
        timeout: Duration,
    },
    /// Every attempt failed until the request timeout ran out.
    #[error(
        "etcd {op} failed on every endpoint of {endpoints:?} ({attempts} attempts in \
         {elapsed:?}): check that a quorum of the etcd members is up and reachable"
    )]
    Unavailable {
        /// The store operation.
        op: &'static str,
        /// How many attempts were made.
        attempts: u32,
        /// How long they took.
        elapsed: Duration,
        /// The configured endpoints.
        endpoints: Vec<String>,
        /// The last attempt's failure.
        #[source]
        last: Box<EtcdError>,
    },
    /// A watch stream failed.
    #[error("etcd watch on {endpoint} failed")]
    Watch {
        /// The endpoint the watch ran on.
        endpoint: String,
        /// What etcd or the transport reported.
        #[source]
        source: etcd_client::Error,
    },
    /// A watch stream ended without a reason.
    #[error("etcd watch on {endpoint} ended")]
    WatchEnded {
        /// The endpoint the watch ran on.
        endpoint: String,
    },
    /// A key under the prefix is not UTF-8 (it was not written by a Shoal store).
    #[error("etcd key {key:?} under the store prefix is not UTF-8")]
    InvalidKey {
        /// The key, lossily decoded.
        key: String,
        /// Where decoding failed.
        #[source]
        source: std::str::Utf8Error,
    },
    /// etcd returned a key outside the store's prefix.
    #[error("etcd returned key {key:?}, which is outside the store prefix")]
    ForeignKey {
        /// The key, lossily decoded.
        key: String,
    },
    /// etcd's answer lacked something every answer to this request has.
    #[error("etcd answered {op} without {what}")]
    Malformed {
        /// The store operation.
        op: &'static str,
        /// What was missing.
        what: &'static str,
    },
    /// An unconditional delete kept finding the key changed between reading and
    /// deleting it.
    #[error("key {key} kept changing while deleting it for {waited:?}; retry the delete")]
    Contended {
        /// The key.
        key: String,
        /// How long the delete tried.
        waited: Duration,
    },
    /// A write may or may not have been applied, and the history that would tell
    /// has been compacted.
    #[error(
        "the outcome of {op} on {key} is unknown: the connection to etcd broke after \
         sending it, and the history that would tell was compacted; read the key to see"
    )]
    OutcomeUnknown {
        /// The store operation.
        op: &'static str,
        /// The key.
        key: String,
    },
}

impl From<EtcdError> for StoreError {
    fn from(err: EtcdError) -> Self {
        StoreError::Backend(Box::new(err))
    }
}

/// What the store knows about one endpoint, from [`EtcdStore::endpoints`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The endpoint as configured.
    pub endpoint: String,
    /// Whether requests go to it: its last health check or request succeeded.
    pub healthy: bool,
    /// Requests it answered.
    pub succeeded: u64,
    /// Attempts on it that failed for transport, timeout or availability reasons.
    pub failed: u64,
    /// Watches currently streaming from it.
    pub watches: usize,
}

/// Counters of the store's fault handling, from [`EtcdStore::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EtcdStats {
    /// Attempts that retried a failed one.
    pub retries: u64,
    /// Writes whose retry found the key changed after an attempt with an unknown
    /// outcome, so the store checked whose change it was.
    pub unknown_outcomes: u64,
    /// Of those, the ones where the change was this store's own write.
    pub unknown_outcomes_applied: u64,
    /// Times a watch resumed on another endpoint.
    pub watch_resumes: u64,
}

#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Counters {
    unknown_outcomes: Counter,
    unknown_outcomes_applied: Counter,
    watch_resumes: Counter,
}

/// State shared by the store, its health task and its watch tasks.
struct Inner {
    pool: Pool,
    keys: Keys,
    /// The highest compaction point known (see the module docs).
    compacted: AtomicI64,
    counters: Counters,
}

/// A [`Store`] in an etcd v3 cluster, under a key prefix.
///
/// Dropping the store stops its health checks and ends its watches with
/// [`StoreError::Closed`].
pub struct EtcdStore {
    inner: Arc<Inner>,
    closed: tokio::sync::watch::Sender<bool>,
    health: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.pool.status())
            .field("compacted", &self.inner.compacted.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the endpoints: waits (up to the request timeout) until one of
    /// them passes a health check, learns etcd's compaction point, and starts
    /// checking every endpoint's health in the background.
    ///
    /// Must run inside a tokio runtime.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore, StoreError> {
        let pool = Pool::new(&config).await?;
        let keys = Keys::new(&config.prefix);
        let started = Instant::now();
        while pool.check_all(&keys.probe()).await == 0 {
            let left = config.request_timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(EtcdError::NoHealthyEndpoint {
                    endpoints: pool.endpoints(),
                    waited: started.elapsed(),
                }
                .into());
            }
            tokio::time::sleep(config.health_interval.min(left)).await;
        }
        let inner = Arc::new(Inner {
            pool,
            keys,
            compacted: AtomicI64::new(0),
            counters: Counters::default(),
        });
        let point = inner.probe_compaction().await?;
        inner.learn_compaction(point);
        let health = tokio::spawn(health_loop(Arc::downgrade(&inner), config.health_interval));
        let (closed, _) = tokio::sync::watch::channel(false);
        tracing::debug!(endpoints = ?config.endpoints, prefix = %config.prefix, compacted = point, "connected to etcd");
        Ok(EtcdStore {
            inner,
            closed,
            health,
        })
    }

    /// What the store knows about each endpoint, in configuration order.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        self.inner.pool.status()
    }

    /// Counters of retries, writes with unknown outcomes and watch resumes.
    pub fn stats(&self) -> EtcdStats {
        let c = &self.inner.counters;
        EtcdStats {
            retries: self.inner.pool.retries(),
            unknown_outcomes: c.unknown_outcomes.get(),
            unknown_outcomes_applied: c.unknown_outcomes_applied.get(),
            watch_resumes: c.watch_resumes.get(),
        }
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Deletes the key if its `mod_revision` is `expected`.
    async fn delete_at(
        &self,
        key: &str,
        expected: Revision,
    ) -> Result<(KeyValue, Revision), StoreError> {
        let full = self.keys().full(key);
        let (uncertain, resp) = self
            .pool()
            .call("delete", |t| {
                let txn = Txn::new()
                    .when(exists_at(&full, expected))
                    .and_then([TxnOp::delete(
                        full.clone(),
                        Some(DeleteOptions::new().with_prev_key()),
                    )])
                    .or_else([TxnOp::get(full.clone(), None)]);
                let mut kv = t.kv;
                async move { Ok((t.after_failure, kv.txn(txn).await?)) }
            })
            .await?;
        let revision = self.inner.header_revision(resp.header(), "delete")?;
        if resp.succeeded() {
            let prev = match resp.op_responses().into_iter().next() {
                Some(TxnOpResponse::Delete(del)) => del.prev_kvs().first().cloned(),
                _ => None,
            }
            .ok_or(EtcdError::Malformed {
                op: "delete",
                what: "the deleted value",
            })?;
            return Ok((to_kv(self.keys(), &prev)?, revision));
        }
        let current = self.inner.txn_kv(&resp, "delete")?;
        if uncertain {
            self.inner.counters.unknown_outcomes.inc();
            match self
                .inner
                .first_change_after(key, expected, &current)
                .await?
            {
                Change::Deleted { prev, revision } => {
                    self.inner.counters.unknown_outcomes_applied.inc();
                    return Ok((prev, revision));
                }
                Change::Compacted => {
                    return Err(EtcdError::OutcomeUnknown {
                        op: "delete",
                        key: key.to_owned(),
                    }
                    .into())
                }
                Change::None | Change::Put(_) => {}
            }
        }
        Err(refused(key, expected, current))
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.health.abort();
        self.closed.send_replace(true);
    }
}

/// Checks every endpoint's health every `interval` while the store lives.
async fn health_loop(inner: Weak<Inner>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.pool.check_all(&inner.keys.probe()).await;
    }
}

/// The compares of a compare-and-swap on a key that must exist at `expected`.
fn exists_at(full: &[u8], expected: Revision) -> [Compare; 2] {
    [
        Compare::create_revision(full.to_vec(), CompareOp::Greater, 0),
        Compare::mod_revision(full.to_vec(), CompareOp::Equal, expected),
    ]
}

/// The error for a refused compare-and-swap that found `current`.
fn refused(key: &str, expected: Revision, current: Option<KeyValue>) -> StoreError {
    match current {
        None => StoreError::NotFound {
            key: key.to_owned(),
        },
        Some(current) => StoreError::Conflict {
            key: key.to_owned(),
            expected,
            actual: current.mod_revision,
        },
    }
}

/// Maps an etcd key-value under the prefix to the store's.
pub(crate) fn to_kv(keys: &Keys, kv: &etcd_client::KeyValue) -> Result<KeyValue, EtcdError> {
    Ok(KeyValue {
        key: keys.strip(kv.key())?,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// The first change to a key after a revision.
enum Change {
    /// The key did not change after it.
    None,
    /// It was put; the new value.
    Put(KeyValue),
    /// It was deleted: the value it held and the revision of the delete.
    Deleted { prev: KeyValue, revision: Revision },
    /// etcd no longer has that history.
    Compacted,
}

/// A key's state at a past revision.
enum Past {
    /// The key as it was (`None`: it did not exist).
    At(Option<KeyValue>),
    /// etcd no longer has that revision.
    Compacted,
}

impl Inner {
    /// The revision of a response header, remembered as seen.
    fn header_revision(
        &self,
        header: Option<&ResponseHeader>,
        op: &'static str,
    ) -> Result<Revision, EtcdError> {
        let revision = header
            .ok_or(EtcdError::Malformed {
                op,
                what: "a response header",
            })?
            .revision();
        self.pool.saw_revision(revision);
        Ok(revision)
    }

    /// The key a refused transaction read in its else branch.
    fn txn_kv(&self, resp: &TxnResponse, op: &'static str) -> Result<Option<KeyValue>, EtcdError> {
        match resp.op_responses().into_iter().next() {
            Some(TxnOpResponse::Get(get)) => get
                .kvs()
                .first()
                .map(|kv| to_kv(&self.keys, kv))
                .transpose(),
            _ => Err(EtcdError::Malformed {
                op,
                what: "the key read after a failed compare",
            }),
        }
    }

    /// Raises the known compaction point.
    fn learn_compaction(&self, point: Revision) {
        self.compacted.fetch_max(point, Ordering::AcqRel);
    }

    /// The current revision, from a linearizable read's header.
    async fn current_revision(&self) -> Result<Revision, EtcdError> {
        let probe = self.keys.probe();
        let resp = self
            .pool
            .call("current revision", |t| {
                let mut kv = t.kv;
                let probe = probe.clone();
                async move {
                    kv.get(probe, Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await?;
        self.header_revision(resp.header(), "current revision")
    }

    /// Whether etcd still holds revision `revision` (or it lies in the future).
    async fn readable(&self, revision: Revision) -> Result<bool, EtcdError> {
        let probe = self.keys.probe();
        self.pool
            .call("read at revision", |t| {
                let mut kv = t.kv;
                let options = GetOptions::new().with_count_only().with_revision(revision);
                let probe = probe.clone();
                async move {
                    match kv.get(probe, Some(options)).await {
                        Ok(_) => Ok(true),
                        Err(err) if is_future_revision(&err) => Ok(true),
                        Err(err) if is_compacted(&err) => Ok(false),
                        Err(err) => Err(err),
                    }
                }
            })
            .await
    }

    /// etcd's compaction point, found by bisecting for the oldest readable
    /// revision above the one already known: about log2(revision) reads.
    async fn probe_compaction(&self) -> Result<Revision, EtcdError> {
        let known = self.compacted.load(Ordering::Acquire);
        let current = self.current_revision().await?;
        // The oldest readable revision lies in [low, high]; `current` is readable.
        let (mut low, mut high) = (known.max(1), current.max(1));
        while low < high {
            let mid = low + (high - low) / 2;
            if self.readable(mid).await? {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        // Revision 1 readable: never compacted (or at 1, which is the same).
        Ok(if low <= 1 { known } else { low.max(known) })
    }

    /// A key as it was at `revision`.
    async fn read_at(&self, key: &str, revision: Revision) -> Result<Past, EtcdError> {
        let full = self.keys.full(key);
        let resp = self
            .pool
            .call("read at revision", |t| {
                let mut kv = t.kv;
                let full = full.clone();
                async move {
                    match kv
                        .get(full, Some(GetOptions::new().with_revision(revision)))
                        .await
                    {
                        Ok(resp) => Ok(Some(resp)),
                        Err(err) if is_compacted(&err) => Ok(None),
                        Err(err) => Err(err),
                    }
                }
            })
            .await?;
        match resp {
            None => Ok(Past::Compacted),
            Some(resp) => Ok(Past::At(
                resp.kvs()
                    .first()
                    .map(|kv| to_kv(&self.keys, kv))
                    .transpose()?,
            )),
        }
    }

    /// The first change to `key` after revision `after`, given the key's state
    /// `current` read after that change would have happened.
    async fn first_change_after(
        &self,
        key: &str,
        after: Revision,
        current: &Option<KeyValue>,
    ) -> Result<Change, EtcdError> {
        // Make sure a change exists before waiting for etcd to replay it.
        match current {
            Some(current) if current.mod_revision <= after => return Ok(Change::None),
            Some(_) => {}
            None => match self.read_at(key, after).await? {
                Past::Compacted => return Ok(Change::Compacted),
                Past::At(None) => return Ok(Change::None),
                Past::At(Some(_)) => {}
            },
        }
        let full = self.keys.full(key);
        let first = self
            .pool
            .call("history", |t| {
                let mut client = t.watch;
                let full = full.clone();
                async move {
                    let from = after.saturating_add(1);
                    let mut stream = match watch::open(&mut client, full, None, from).await? {
                        Opened::Stream(stream) => stream,
                        Opened::Compacted(point) => return Ok(Err(point)),
                    };
                    loop {
                        let Some(resp) = stream.message().await? else {
                            return Err(etcd_client::Error::WatchError(
                                "the history watch ended".into(),
                            ));
                        };
                        if resp.compact_revision() > 0 {
                            return Ok(Err(resp.compact_revision()));
                        }
                        if resp.canceled() {
                            return Err(etcd_client::Error::WatchError(format!(
                                "etcd canceled the history watch: {}",
                                resp.cancel_reason()
                            )));
                        }
                        if let Some(event) = resp.events().first() {
                            return Ok(Ok(event.clone()));
                        }
                    }
                }
            })
            .await?;
        let event = match first {
            Ok(event) => watch::map_event(&self.keys, &event)?,
            Err(point) => {
                self.learn_compaction(point);
                return Ok(Change::Compacted);
            }
        };
        Ok(match event.kind {
            crate::EventKind::Put => Change::Put(event.kv),
            crate::EventKind::Delete => Change::Deleted {
                prev: event.kv,
                revision: event.revision,
            },
        })
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let full = self.keys().full(key);
        let resp = self
            .pool()
            .call("get", |t| {
                let mut kv = t.kv;
                let full = full.clone();
                async move { kv.get(full, None).await }
            })
            .await?;
        self.inner.header_revision(resp.header(), "get")?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| to_kv(self.keys(), kv))
            .transpose()?)
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        let Some((start, end)) = self.keys().page_range(&req) else {
            return Ok(RangeResponse {
                items: Vec::new(),
                more: false,
                revision: self.inner.current_revision().await?,
            });
        };
        let mut options = GetOptions::new().with_range(end);
        if let Some(limit) = req.limit.map(NonZeroUsize::get) {
            options = options.with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let resp = self
            .pool()
            .call("range", |t| {
                let mut kv = t.kv;
                let (start, options) = (start.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            })
            .await?;
        let revision = self.inner.header_revision(resp.header(), "range")?;
        let items = resp
            .kvs()
            .iter()
            .map(|kv| to_kv(self.keys(), kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RangeResponse {
            items,
            more: resp.more(),
            revision,
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StoreError> {
        let full = self.keys().full(key);
        // Any write sent from now on takes a revision above this one.
        let floor = self.pool().seen_revision();
        let (uncertain, resp) = self
            .pool()
            .call("create", |t| {
                let txn = Txn::new()
                    .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(full.clone(), value.to_vec(), None)])
                    .or_else([TxnOp::get(full.clone(), None)]);
                let mut kv = t.kv;
                async move { Ok((t.after_failure, kv.txn(txn).await?)) }
            })
            .await?;
        let revision = self.inner.header_revision(resp.header(), "create")?;
        if resp.succeeded() {
            return Ok(KeyValue {
                key: key.to_owned(),
                value,
                create_revision: revision,
                mod_revision: revision,
            });
        }
        let current = self
            .inner
            .txn_kv(&resp, "create")?
            .ok_or(EtcdError::Malformed {
                op: "create",
                what: "the existing key",
            })?;
        if uncertain && current.create_revision > floor {
            // Was the creation of the key's current life our first attempt?
            self.inner.counters.unknown_outcomes.inc();
            let created = if current.create_revision == current.mod_revision {
                Past::At(Some(current.clone()))
            } else {
                self.inner.read_at(key, current.create_revision).await?
            };
            let ours = match created {
                Past::At(Some(created)) if created.value == value => Some(created),
                Past::Compacted if current.value == value => Some(current),
                _ => None,
            };
            if let Some(ours) = ours {
                self.inner.counters.unknown_outcomes_applied.inc();
                return Ok(ours);
            }
        }
        Err(StoreError::AlreadyExists {
            key: key.to_owned(),
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let full = self.keys().full(key);
        let (uncertain, resp) = self
            .pool()
            .call("update", |t| {
                let txn = Txn::new()
                    .when(exists_at(&full, expected))
                    .and_then([TxnOp::put(
                        full.clone(),
                        value.to_vec(),
                        Some(PutOptions::new().with_prev_key()),
                    )])
                    .or_else([TxnOp::get(full.clone(), None)]);
                let mut kv = t.kv;
                async move { Ok((t.after_failure, kv.txn(txn).await?)) }
            })
            .await?;
        let revision = self.inner.header_revision(resp.header(), "update")?;
        if resp.succeeded() {
            let create_revision = match resp.op_responses().into_iter().next() {
                Some(TxnOpResponse::Put(put)) => put.prev_key().map(|prev| prev.create_revision()),
                _ => None,
            }
            .ok_or(EtcdError::Malformed {
                op: "update",
                what: "the previous value",
            })?;
            return Ok(KeyValue {
                key: key.to_owned(),
                value,
                create_revision,
                mod_revision: revision,
            });
        }
        let current = self.inner.txn_kv(&resp, "update")?;
        if uncertain {
            self.inner.counters.unknown_outcomes.inc();
            let ours = match self
                .inner
                .first_change_after(key, expected, &current)
                .await?
            {
                Change::Put(kv) if kv.value == value => Some(kv),
                Change::Compacted => current.clone().filter(|kv| kv.value == value),
                _ => None,
            };
            if let Some(ours) = ours {
                self.inner.counters.unknown_outcomes_applied.inc();
                return Ok(ours);
            }
        }
        Err(refused(key, expected, current))
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        if let Some(expected) = expected {
            return self.delete_at(key, expected).await;
        }
        // Without an expected revision, delete the revision just read: a retry
        // after an unknown outcome can then tell its own delete from a later one.
        let started = Instant::now();
        loop {
            let Some(current) = self.get(key).await? else {
                return Err(StoreError::NotFound {
                    key: key.to_owned(),
                });
            };
            match self.delete_at(key, current.mod_revision).await {
                Err(StoreError::Conflict { .. })
                    if started.elapsed() < self.pool().timing.request_timeout =>
                {
                    continue
                }
                Err(StoreError::Conflict { .. }) => {
                    return Err(EtcdError::Contended {
                        key: key.to_owned(),
                        waited: started.elapsed(),
                    }
                    .into())
                }
                other => return other,
            }
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let after = after.max(0);
        let known = self.inner.compacted.load(Ordering::Acquire);
        if after < known {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: known,
            });
        }
        let from = after.saturating_add(1);
        // etcd reports a compacted start revision only later, on the stream:
        // ask first, so that the caller gets the error here.
        if !self.inner.readable(from).await? {
            let point = self.inner.probe_compaction().await?;
            self.inner.learn_compaction(point);
            return Err(StoreError::Compacted {
                requested: after,
                compacted: point,
            });
        }
        let (start, end) = self.keys().prefix_range(prefix);
        let (member, opened) = self
            .pool()
            .call("watch", |t| {
                let (start, end) = (start.clone(), end.clone());
                let mut client = t.watch;
                async move {
                    Ok((
                        t.member,
                        watch::open(&mut client, start, Some(end), from).await?,
                    ))
                }
            })
            .await?;
        let stream = match opened {
            Opened::Stream(stream) => stream,
            Opened::Compacted(point) => {
                self.inner.learn_compaction(point);
                return Err(StoreError::Compacted {
                    requested: after,
                    compacted: point,
                });
            }
        };
        let (tx, rx) = mpsc::channel(watch::WATCH_BUFFER);
        let task = Task {
            inner: self.inner.clone(),
            start,
            end,
            last: after,
            tx,
            closed: self.closed.subscribe(),
        };
        self.pool().watch_started(member);
        tokio::spawn(task.run(member, stream));
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        if revision <= self.inner.compacted.load(Ordering::Acquire) {
            return Ok(());
        }
        // Like the embedded store, compacting past the current revision compacts
        // up to it (etcd would refuse a future revision).
        let target = revision.min(self.inner.current_revision().await?);
        if target <= self.inner.compacted.load(Ordering::Acquire) {
            return Ok(());
        }
        let done = self
            .pool()
            .call("compact", |t| {
                let mut kv = t.kv;
                async move {
                    match kv.compact(target, None).await {
                        Ok(_) => Ok(true),
                        Err(err) if is_compacted(&err) => Ok(false),
                        Err(err) => Err(err),
                    }
                }
            })
            .await?;
        if done {
            self.inner.learn_compaction(target);
        } else {
            // Compacted at or past `target` already: by another store, or by an
            // earlier attempt of this one. Find out where.
            let point = self.inner.probe_compaction().await?;
            self.inner.learn_compaction(point.max(target));
        }
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.current_revision().await?)
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.compacted.load(Ordering::Acquire))
    }
}
