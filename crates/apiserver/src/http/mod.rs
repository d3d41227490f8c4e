//! The HTTPS front: routing, TLS and graceful shutdown.

mod discovery;
mod handler;
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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(10),
        }
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
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
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
