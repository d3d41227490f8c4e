//! One etcd client per endpoint, their health, and the retry loop that every
//! request runs in.
//!
//! etcd-client balances one channel over all endpoints and keeps sending to a dead
//! member, so the store keeps a client per endpoint instead and chooses itself:
//! requests go round-robin to endpoints marked healthy, a failed attempt marks its
//! endpoint unhealthy and the request moves on to another one, and a background
//! task ([`Pool::check_all`], every `health_interval`) marks endpoints healthy
//! again once they answer a linearizable read.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, KvClient, TlsOptions, WatchClient,
};

use super::{EndpointStatus, EtcdConfig, EtcdError};
use crate::Revision;

/// The largest response a client decodes (gRPC's default of 4 MiB is too small
/// for a big range; etcd's own clients allow 2 GiB).
const MAX_MESSAGE: usize = 1 << 30;

/// HTTP/2 pings on busy connections find a member that vanished without closing
/// them. etcd refuses pings more often than every 5 s (`--grpc-keepalive-min-time`)
/// and pings without streams, so only streams are pinged, every 10 s.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The first pause between attempts when no other endpoint is known healthy; it
/// doubles per attempt up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// One endpoint and the clients that talk to it.
pub(crate) struct Member {
    pub(crate) endpoint: String,
    pub(crate) kv: KvClient,
    pub(crate) watch: WatchClient,
    healthy: AtomicBool,
    succeeded: AtomicU64,
    failed: AtomicU64,
    watches: AtomicUsize,
}

/// What one attempt of a request gets to work with.
pub(crate) struct Try {
    /// The endpoint's index, for [`Pool::watch_started`] and friends.
    pub(crate) member: usize,
    /// A KV client bound to that endpoint.
    pub(crate) kv: KvClient,
    /// A watch client bound to that endpoint.
    pub(crate) watch: WatchClient,
    /// An earlier attempt of this request failed after it may have reached etcd,
    /// so a write may already have been applied.
    pub(crate) after_failure: bool,
}

/// The timeouts the pool works with, from [`EtcdConfig`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub(crate) request_timeout: Duration,
    pub(crate) attempt_timeout: Duration,
    pub(crate) health_timeout: Duration,
}

/// The endpoints and what the store has learned about them.
pub(crate) struct Pool {
    members: Vec<Member>,
    next: AtomicUsize,
    pub(crate) timing: Timing,
    /// The highest revision any response header carried: a lower bound for the
    /// revision of any write sent after it was read.
    revision: AtomicI64,
    retries: AtomicU64,
}

impl Pool {
    /// Builds one lazily connecting client per endpoint: nothing is dialled yet.
    pub(crate) async fn new(config: &EtcdConfig) -> Result<Pool, EtcdError> {
        if config.endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.dial_timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            .with_keep_alive_while_idle(false)
            // A member cut off from its quorum fails requests and watches with
            // "no leader" instead of hanging on to them.
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            let mut tls_options =
                TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            match (&tls.cert_pem, &tls.key_pem) {
                (Some(cert), Some(key)) => {
                    tls_options = tls_options.identity(Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => return Err(EtcdError::TlsIdentity),
            }
            options = options.with_tls(tls_options);
        }
        let mut members = Vec::with_capacity(config.endpoints.len());
        for endpoint in &config.endpoints {
            let client = Client::connect([endpoint], Some(options.clone()))
                .await
                .map_err(|source| EtcdError::Client {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            members.push(Member {
                endpoint: endpoint.clone(),
                kv: client.kv_client().max_decoding_message_size(MAX_MESSAGE),
                watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
                healthy: AtomicBool::new(false),
                succeeded: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                watches: AtomicUsize::new(0),
            });
        }
        Ok(Pool {
            members,
            next: AtomicUsize::new(0),
            timing: Timing {
                request_timeout: config.request_timeout,
                attempt_timeout: config.attempt_timeout,
                health_timeout: config.health_timeout,
            },
            revision: AtomicI64::new(0),
            retries: AtomicU64::new(0),
        })
    }

    /// The endpoints, in configuration order.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    /// The address of one endpoint.
    pub(crate) fn endpoint(&self, member: usize) -> String {
        self.members
            .get(member)
            .map_or_else(String::new, |m| m.endpoint.clone())
    }

    /// What the pool knows about each endpoint.
    pub(crate) fn status(&self) -> Vec<EndpointStatus> {
        self.members
            .iter()
            .map(|m| EndpointStatus {
                endpoint: m.endpoint.clone(),
                healthy: m.healthy.load(Ordering::Acquire),
                succeeded: m.succeeded.load(Ordering::Relaxed),
                failed: m.failed.load(Ordering::Relaxed),
                watches: m.watches.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// How many attempts were retries.
    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The highest revision seen in any response so far.
    pub(crate) fn seen_revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    /// Records a revision from a response header.
    pub(crate) fn saw_revision(&self, revision: Revision) {
        self.revision.fetch_max(revision, Ordering::AcqRel);
    }

    /// Counts a watch as running on an endpoint.
    pub(crate) fn watch_started(&self, member: usize) {
        if let Some(m) = self.members.get(member) {
            m.watches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a watch as gone from an endpoint.
    pub(crate) fn watch_ended(&self, member: usize) {
        if let Some(m) = self.members.get(member) {
            m.watches.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The next endpoint to try: the next healthy one round-robin, or, when none
    /// is known healthy, simply the next one (the health marks may be stale).
    fn pick(&self) -> usize {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.members[i].healthy.load(Ordering::Acquire))
            .unwrap_or(start % n)
    }

    fn any_healthy(&self) -> bool {
        self.members
            .iter()
            .any(|m| m.healthy.load(Ordering::Acquire))
    }

    /// Marks an endpoint unhealthy after a failure that says nothing about the
    /// request itself (transport, timeout, a member without leader).
    pub(crate) fn mark_failed(&self, member: usize, err: &EtcdError) {
        let Some(m) = self.members.get(member) else {
            return;
        };
        m.failed.fetch_add(1, Ordering::Relaxed);
        if m.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(endpoint = %m.endpoint, error = %err, "etcd endpoint failed; using the others");
        }
    }

    fn mark_answered(&self, member: usize) {
        if let Some(m) = self.members.get(member) {
            m.succeeded.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs one request: each attempt on one endpoint within `attempt_timeout`;
    /// failures that may be transient move it to another endpoint, after a backoff
    /// once no healthy endpoint is left, until `request_timeout` has passed.
    ///
    /// `attempt` maps the errors it expects (a compacted revision, say) to values
    /// itself; an error it returns is retried when [`retryable`] and final
    /// otherwise. Every attempt after a failed one has `after_failure` set, so a
    /// write can tell that its earlier attempt may have been applied.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        mut attempt: F,
    ) -> Result<T, EtcdError>
    where
        F: FnMut(Try) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let deadline = started + self.timing.request_timeout;
        let mut attempts: u32 = 0;
        let mut failed_in_a_row: u32 = 0;
        loop {
            let member = self.pick();
            let m = &self.members[member];
            let budget = deadline
                .saturating_duration_since(Instant::now())
                .min(self.timing.attempt_timeout);
            attempts += 1;
            if attempts > 1 {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            let this_try = Try {
                member,
                kv: m.kv.clone(),
                watch: m.watch.clone(),
                after_failure: attempts > 1,
            };
            let err = match tokio::time::timeout(budget, attempt(this_try)).await {
                Ok(Ok(value)) => {
                    self.mark_answered(member);
                    if attempts > 1 {
                        tracing::debug!(op, endpoint = %m.endpoint, attempts, elapsed = ?started.elapsed(), "etcd request succeeded after retries");
                    }
                    return Ok(value);
                }
                Ok(Err(source)) => {
                    let retry = retryable(&source);
                    let err = EtcdError::Request {
                        op,
                        endpoint: m.endpoint.clone(),
                        source,
                    };
                    if !retry {
                        // The member answered: it is up, the request is wrong.
                        self.mark_answered(member);
                        return Err(err);
                    }
                    err
                }
                Err(_) => EtcdError::AttemptTimeout {
                    op,
                    endpoint: m.endpoint.clone(),
                    timeout: budget,
                },
            };
            self.mark_failed(member, &err);
            failed_in_a_row += 1;
            // Straight on to another endpoint while some look healthy; otherwise
            // (or once every endpoint failed in turn) back off.
            let pause = if self.any_healthy() && failed_in_a_row < self.members.len() as u32 {
                Duration::ZERO
            } else {
                backoff(failed_in_a_row)
            };
            if Instant::now() + pause >= deadline {
                return Err(EtcdError::Unavailable {
                    op,
                    attempts,
                    elapsed: started.elapsed(),
                    endpoints: self.endpoints(),
                    last: Box::new(err),
                });
            }
            tracing::debug!(op, error = %err, ?pause, attempts, "etcd request failed; retrying");
            tokio::time::sleep(pause).await;
        }
    }

    /// Checks every endpoint at once with a linearizable read of `key`, which
    /// needs the member's quorum, and marks each healthy or not. Returns how
    /// many are healthy.
    pub(crate) async fn check_all(&self, key: &[u8]) -> usize {
        let checks = self.members.iter().map(|m| async move {
            let mut kv = m.kv.clone();
            let read = kv.get(key, Some(GetOptions::new().with_count_only()));
            match tokio::time::timeout(self.timing.health_timeout, read).await {
                Ok(Ok(resp)) => {
                    if let Some(header) = resp.header() {
                        self.saw_revision(header.revision());
                    }
                    Ok(())
                }
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!("no answer within {:?}", self.timing.health_timeout)),
            }
        });
        let results = futures::future::join_all(checks).await;
        let mut healthy = 0;
        for (m, result) in self.members.iter().zip(results) {
            match result {
                Ok(()) => {
                    healthy += 1;
                    if !m.healthy.swap(true, Ordering::AcqRel) {
                        tracing::info!(endpoint = %m.endpoint, "etcd endpoint is healthy");
                    }
                }
                Err(error) => {
                    if m.healthy.swap(false, Ordering::AcqRel) {
                        tracing::warn!(endpoint = %m.endpoint, %error, "etcd endpoint failed its health check");
                    }
                }
            }
        }
        healthy
    }
}

/// Whether a failed request may succeed on another attempt or endpoint: the
/// transport failed, the member has no leader or timed out, or it is overloaded.
/// Errors about the request itself (a compacted revision, a value over etcd's
/// size limit, a permission) are final.
pub(crate) fn retryable(err: &etcd_client::Error) -> bool {
    use tonic::Code;
    match err {
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unavailable
                | Code::Unknown
                | Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Internal
                | Code::ResourceExhausted
                | Code::Aborted
        ),
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::WatchError(_)
        | etcd_client::Error::EndpointError(_)
        | etcd_client::Error::Internal(_) => true,
        _ => false,
    }
}

/// True for etcd's "required revision has been compacted".
pub(crate) fn is_compacted(err: &etcd_client::Error) -> bool {
    matches!(err, etcd_client::Error::GRpcStatus(status)
        if status.code() == tonic::Code::OutOfRange
            && status.message().contains("required revision has been compacted"))
}

/// True for etcd's "required revision is a future revision".
pub(crate) fn is_future_revision(err: &etcd_client::Error) -> bool {
    matches!(err, etcd_client::Error::GRpcStatus(status)
        if status.code() == tonic::Code::OutOfRange
            && status.message().contains("future revision"))
}

/// The pause before attempt `n + 1` after `n` failures in a row: exponential with
/// jitter, so that clients retrying together spread out.
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_START.saturating_mul(1 << failures.min(7).saturating_sub(1));
    let cap = exp.min(BACKOFF_MAX);
    // Between half and all of `cap`.
    let jitter = RandomState::new().hash_one(Instant::now()) % 1000;
    cap / 2 + cap.mul_f64(jitter as f64 / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for failures in 1..20 {
            let pause = backoff(failures);
            assert!(pause <= BACKOFF_MAX, "{failures}: {pause:?}");
            assert!(pause >= BACKOFF_START / 2, "{failures}: {pause:?}");
        }
        assert!(backoff(1) <= BACKOFF_START);
        assert!(backoff(10) >= BACKOFF_MAX / 2);
    }

    #[test]
    fn transport_failures_retry_and_request_errors_do_not() {
        let status =
            |code, msg: &str| etcd_client::Error::GRpcStatus(tonic::Status::new(code, msg));
        assert!(retryable(&status(
            tonic::Code::Unavailable,
            "etcdserver: no leader"
        )));
        assert!(retryable(&status(tonic::Code::Unknown, "transport error")));
        let compacted = status(
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
        assert!(!retryable(&compacted));
        assert!(is_compacted(&compacted));
        assert!(!is_future_revision(&compacted));
        assert!(is_future_revision(&status(
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision"
        )));
        assert!(!retryable(&status(
            tonic::Code::InvalidArgument,
            "etcdserver: request is too large"
        )));
    }
}
