//! The HTTPS front: routing, TLS and graceful shutdown.

mod access_review;
mod audit_search;
mod discovery;
mod handler;
mod leftover;
pub mod openapi;
pub mod request;
mod response;
pub mod table;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::resource::Resources;

/// Request limits and timings.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest request body accepted.
    pub body_bytes: usize,
    /// How often idle watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// How long a request other than a watch may take before it is answered
    /// with 504, as kube-apiserver's `--request-timeout`.
    pub request_timeout: Duration,
    /// How many requests other than watches are served at once; more get 429
    /// with Retry-After, as kube-apiserver's `--max-requests-inflight`.
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_in_flight: 400,
        }
    }
}

/// The permits for requests in flight, shared by every connection.
#[derive(Clone, Debug)]
pub struct InFlight(Arc<tokio::sync::Semaphore>);

impl InFlight {
    /// Room for `limit` requests at once (at least one).
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(limit.max(1))))
    }

    /// A permit, or `None` when the limit is reached.
    pub fn try_acquire(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

/// Tells long-lived responses (watches) that the server is shutting down, so
/// they end and the drain does not wait out its deadline for them.
#[derive(Clone, Debug)]
pub struct Closing(tokio::sync::watch::Receiver<bool>);

impl Closing {
    /// The signal, and the sender that fires it with `true`.
    pub fn channel() -> (tokio::sync::watch::Sender<bool>, Self) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Self(rx))
    }

    /// Resolves once shutdown has begun.
    pub async fn wait(mut self) {
        // An error means the sender is gone, which also means shutting down.
        let _ = self.0.wait_for(|closing| *closing).await;
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Resource operations.
    pub resources: Resources,
    /// Token checks.
    pub auth: Authenticator,
    /// The audit log.
    pub audit: AuditLog,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Limits.
    pub limits: Limits,
    /// Requests in flight, bounded by `limits.max_in_flight`.
    pub in_flight: InFlight,
    /// Fires when the server starts shutting down.
    pub closing: Closing,
    /// The gateway's view of each cluster's backends, when a gateway is wired in.
    pub endpoints: Option<Arc<dyn EndpointsSource>>,
}

/// Where `GET …/clusters/<name>/endpoints` gets its answer: the gateway.
pub trait EndpointsSource: Send + Sync {
    /// The backends of cluster `namespace/name`, or `None` if the gateway has no
    /// route for it yet.
    fn endpoints(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<shoal_api::endpoints::ClusterEndpoints>;
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/version",
            get(|| async { axum::Json(discovery::version()) }),
        )
        .route("/metrics", get(move || async move { metrics.encode() }))
        .fallback(handler::handle)
        .with_state(state)
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves, then lets
/// open requests finish for at most `drain`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send,
    drain: Duration,
) {
    // Every route's refusals keep their keep-alive connection usable.
    let router = router.layer(axum::middleware::from_fn(leftover::keep_connection));
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    let mut backoff = AcceptBackoff::default();
    loop {
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff.reset();
                    a
                }
                Err(e) => {
                    // Out of file descriptors or memory: retrying at once would spin.
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, wait_ms = wait.as_millis(), "accept failed; backing off");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("drain deadline reached; closing open connections");
    }
}

/// The delay after a failed accept: 5 ms doubling to 1 s, as Go's net/http does,
/// back to the start after a success.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    current: Option<Duration>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    /// The delay before the next accept.
    pub fn next_delay(&mut self) -> Duration {
        let next = self.current.map_or(Self::FIRST, |d| (d * 2).min(Self::MAX));
        self.current = Some(next);
        next
    }

    /// Called after a successful accept.
    pub fn reset(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_cap_and_resets() {
        let mut b = AcceptBackoff::default();
        let delays: Vec<u128> = (0..10).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 5);
    }
}
