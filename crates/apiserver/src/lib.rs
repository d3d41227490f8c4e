//! Shoal's management API: a Kubernetes-compatible HTTPS API for the
//! `shoal.io/v1alpha1` resources and the supporting core kinds.
//!
//! It owns authentication, authorization, admission (validation) and storage of
//! objects through the `shoal-store` trait. It must not run controllers or talk
//! to hosts: everything else reaches it as an ordinary API client.

pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod crypto;
pub mod error;
pub mod http;
pub mod kubeconfig;
pub mod measured_store;
pub mod metrics;
pub mod resource;
pub mod selector;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use shoal_store::Store;
use tokio::net::TcpListener;

use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::bootstrap::DataDir;
use crate::crypto::Sealer;
use crate::http::{AppState, Closing, InFlight, Limits};
use crate::metrics::Metrics;
use crate::resource::codec::Codec;
use crate::resource::Resources;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data dir could not be read or written.
    #[error("data dir {0}: {1}")]
    DataDir(PathBuf, #[source] std::io::Error),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[source] shoal_store::StoreError),
    /// Certificates could not be made or loaded.
    #[error("certificates: {0}")]
    Pki(#[from] shoal_pki::PkiError),
    /// The serving certificate or key is not PEM.
    #[error("TLS setup: {0}")]
    TlsPem(#[from] rustls_pki_types::pem::Error),
    /// rustls refused the serving configuration.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// First-start setup through the store failed.
    #[error("first-start setup failed: {0}")]
    Setup(#[source] Box<bootstrap::BootstrapError>),
    /// The encryption key is unusable.
    #[error("encryption key: {0}")]
    Crypto(#[from] crypto::CryptoError),
    /// An OIDC issuer's configuration is unusable.
    #[error("OIDC: {0}")]
    Oidc(#[from] shoal_oidc::verify::SetupError),
}

impl From<bootstrap::BootstrapError> for ServerError {
    fn from(e: bootstrap::BootstrapError) -> Self {
        ServerError::Setup(Box::new(e))
    }
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where keys, certificates, the store and the admin kubeconfig live.
    pub data_dir: PathBuf,
    /// The HTTPS listen address.
    pub listen: SocketAddr,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Request limits.
    pub limits: Limits,
    /// How many revisions of change history watches can resume from.
    pub watch_history: i64,
    /// How often old history is compacted.
    pub compaction_interval: Duration,
    /// A 32-byte key file for Secrets at rest, shared by replicas; default
    /// `<data-dir>/encryption.key`, made on first start.
    pub encryption_key_file: Option<PathBuf>,
    /// Where objects are stored.
    pub storage: Storage,
    /// The embedded store's page cache, in bytes.
    pub store_cache_bytes: usize,
    /// The budget of the recent-objects cache that lets writes skip their read,
    /// in bytes (0 turns it off).
    pub recent_objects_bytes: usize,
    /// When `<data-dir>/audit.log` is rotated.
    pub audit_rotation: audit::Rotation,
    /// The OIDC issuers whose ID tokens are accepted.
    pub oidc_issuers: Vec<shoal_oidc::verify::IssuerConfig>,
    /// OIDC groups whose members are cluster admins.
    pub oidc_admin_groups: Vec<String>,
}

/// The storage backend.
#[derive(Clone, Debug, Default)]
pub enum Storage {
    /// The embedded redb store in `<data-dir>/store.redb`: one machine.
    #[default]
    Embedded,
    /// An etcd cluster shared by several `shoal server` replicas.
    Etcd(shoal_store::etcd::EtcdConfig),
}

impl ServerConfig {
    /// Defaults for a data dir and listen address.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            data_dir,
            listen,
            tls_sans: Vec::new(),
            limits: Limits::default(),
            watch_history: 100_000,
            compaction_interval: Duration::from_secs(60),
            encryption_key_file: None,
            storage: Storage::Embedded,
            store_cache_bytes: shoal_store::redb::DEFAULT_CACHE_BYTES,
            recent_objects_bytes: resource::RECENT_OBJECTS_BUDGET,
            audit_rotation: audit::Rotation::default(),
            oidc_issuers: Vec::new(),
            oidc_admin_groups: Vec::new(),
        }
    }
}

/// A started server: bound, bootstrapped, ready to serve.
pub struct Server {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: AppState,
    closing: tokio::sync::watch::Sender<bool>,
    config: ServerConfig,
    /// Routes served beside the API, such as the web UI.
    extra_routes: Option<axum::Router>,
    certificates: Vec<(&'static str, String)>,
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// The admin kubeconfig's path.
    pub admin_kubeconfig: PathBuf,
}

fn rustls_config(
    material: &bootstrap::TlsMaterial,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(material.cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(material.key_pem.as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

impl Server {
    /// Prepares the data dir, opens the configured store, binds and bootstraps.
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        let dir = DataDir::create(&config.data_dir)?;
        let store: Arc<dyn Store> = match &config.storage {
            Storage::Embedded => Arc::new(
                shoal_store::redb::RedbStore::open_with_cache(
                    dir.path("store.redb"),
                    config.store_cache_bytes,
                )
                .map_err(ServerError::Store)?,
            ),
            Storage::Etcd(etcd) => Arc::new(open_etcd(etcd).await.map_err(ServerError::Store)?),
        };
        Self::start_with_store(config, store).await
    }

    /// Like [`Server::start`], on a store the caller opened.
    pub async fn start_with_store(
        config: ServerConfig,
        store: Arc<dyn Store>,
    ) -> Result<Self, ServerError> {
        let dir = DataDir::create(&config.data_dir)?;
        let verifier = if config.oidc_issuers.is_empty() {
            None
        } else {
            Some(Arc::new(shoal_oidc::verify::Verifier::new(
                config.oidc_issuers.clone(),
            )?))
        };
        let sealer = Sealer::new(&bootstrap::encryption_key(
            &dir,
            config.encryption_key_file.as_deref(),
        )?)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServerError::Bind(config.listen, e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| ServerError::Bind(config.listen, e))?;
        let metrics = Arc::new(Metrics::default());
        let store: Arc<dyn Store> = Arc::new(measured_store::MeasuredStore::new(
            store,
            metrics.store.clone(),
        ));
        let resources = Resources::new(store, Codec::new(sealer))
            .with_recent_objects(config.recent_objects_bytes)
            .with_read_caches();
        let material = bootstrap::bootstrap(&resources, &dir, local_addr, &config.tls_sans).await?;
        let tls = rustls_config(&material)?;
        let certificates = vec![
            ("shoal-ca", material.ca_pem.clone()),
            ("apiserver", material.cert_pem.clone()),
        ];
        let audit = AuditLog::open_with(&dir.path("audit.log"), config.audit_rotation)
            .map_err(|e| ServerError::DataDir(dir.path("audit.log"), e))?
            .counting_errors_in(metrics.audit_write_errors.clone());
        let (closing, closing_signal) = Closing::channel();
        let mut auth = Authenticator::new(resources.clone());
        if let Some(verifier) = verifier {
            auth = auth.with_oidc(verifier, config.oidc_admin_groups.clone());
        }
        let state = AppState {
            auth,
            resources,
            audit,
            metrics,
            limits: config.limits,
            in_flight: InFlight::new(config.limits.max_in_flight),
            closing: closing_signal,
            endpoints: None,
        };
        Ok(Self {
            listener,
            tls,
            state,
            closing,
            admin_kubeconfig: dir.admin_kubeconfig(),
            config,
            local_addr,
            extra_routes: None,
            certificates,
        })
    }

    /// Answers `GET …/clusters/<name>/endpoints` from `source` (the gateway).
    pub fn set_endpoints_source(&mut self, source: Arc<dyn http::EndpointsSource>) {
        self.state.endpoints = Some(source);
    }

    /// The server's metrics, for components wired in beside it.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.state.metrics.clone()
    }

    /// The server's own certificates by name (its CA and its serving
    /// certificate), PEM, for expiry monitoring.
    pub fn certificates(&self) -> &[(&'static str, String)] {
        &self.certificates
    }

    /// The HTTPS URL clients use.
    pub fn url(&self) -> String {
        bootstrap::server_url(self.local_addr)
    }

    /// Serves `routes` on the API's listener beside the API, e.g. the web UI
    /// nested at `/ui`. The API keeps every path that `routes` does not match.
    pub fn add_routes(&mut self, routes: axum::Router) {
        self.extra_routes = Some(match self.extra_routes.take() {
            Some(existing) => existing.merge(routes),
            None => routes,
        });
    }

    /// Serves until `shutdown` resolves, then ends open watches and drains
    /// other requests for up to five seconds.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let closing = self.closing;
        let shutdown = async move {
            shutdown.await;
            closing.send_replace(true);
        };
        let compactor = tokio::spawn(compact_forever(
            self.state.resources.store().clone(),
            self.config.watch_history,
            self.config.compaction_interval,
        ));
        let router = match self.extra_routes {
            Some(extra) => extra.merge(http::router(self.state)),
            None => http::router(self.state),
        };
        http::serve_tls(
            self.listener,
            self.tls,
            router,
            shutdown,
            Duration::from_secs(5),
        )
        .await;
        compactor.abort();
    }
}

/// Opens the etcd store so that objects live at `<prefix>registry/...`: the
/// server's keys start with a slash, so the store gets the prefix without its
/// trailing one. Objects an older Shoal wrote at `<prefix>/registry/...` (a double
/// slash) are moved to the new layout once, here; stop every replica of the older
/// version before starting this one.
async fn open_etcd(
    config: &shoal_store::etcd::EtcdConfig,
) -> Result<shoal_store::etcd::EtcdStore, shoal_store::StoreError> {
    use shoal_store::etcd::EtcdStore;
    let trimmed = config.prefix.trim_end_matches('/');
    if trimmed.len() == config.prefix.len() {
        // No trailing slash: the keys never had a double one.
        return EtcdStore::connect(config.clone()).await;
    }
    let mut current = config.clone();
    current.prefix = trimmed.to_owned();
    let store = EtcdStore::connect(current).await?;
    let legacy = EtcdStore::connect(config.clone()).await?;
    let moved = migrate_keys(&legacy, &store, "/registry/").await?;
    if moved > 0 {
        tracing::info!(
            moved,
            from = %format!("{}/registry/", config.prefix),
            to = %format!("{trimmed}/registry/"),
            "moved objects to the etcd key layout without a double slash"
        );
    }
    Ok(store)
}

/// Moves every key under `prefix` from `from` to `to` (a key already in `to`
/// wins), deleting each from `from` once it is in `to`. Safe to run by several
/// replicas at once and to rerun after an interruption. Returns how many moved.
pub async fn migrate_keys(
    from: &dyn Store,
    to: &dyn Store,
    prefix: &str,
) -> Result<usize, shoal_store::StoreError> {
    use shoal_store::{RangeRequest, StoreError};
    let mut moved = 0;
    loop {
        let page = from
            .range(RangeRequest {
                prefix: prefix.to_owned(),
                start_after: None,
                limit: std::num::NonZeroUsize::new(500),
            })
            .await?;
        if page.items.is_empty() {
            return Ok(moved);
        }
        for kv in page.items {
            match to.create(&kv.key, kv.value.clone()).await {
                Ok(_) => moved += 1,
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            match from.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                // Changed meanwhile by an older replica still running: the
                // copy already moved wins, as the doc above tells operators.
                Err(StoreError::Conflict { .. }) => {
                    from.delete(&kv.key, None)
                        .await
                        .map(|_| ())
                        .or_else(|e| match e {
                            StoreError::NotFound { .. } => Ok(()),
                            other => Err(other),
                        })?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Keeps `history` revisions of change history, compacting the rest.
async fn compact_forever(store: Arc<dyn Store>, history: i64, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let (Ok(current), Ok(compacted)) = (
            store.current_revision().await,
            store.compacted_revision().await,
        ) else {
            continue;
        };
        let target = current - history;
        if target > compacted {
            match store.compact(target).await {
                Ok(()) => tracing::debug!(revision = target, "compacted watch history"),
                Err(e) => tracing::warn!(error = %e, "compaction failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use shoal_store::redb::RedbStore;

    #[tokio::test]
    async fn migrate_keys_moves_each_key_once_and_keeps_newer_copies() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let from = RedbStore::open(dir.path().join("from.redb"))?;
        let to = RedbStore::open(dir.path().join("to.redb"))?;
        for i in 0..1200 {
            from.create(
                &format!("/registry/things/{i:04}"),
                Bytes::from(format!("old-{i}")),
            )
            .await?;
        }
        from.create("/other/kept", Bytes::from_static(b"x")).await?;
        to.create("/registry/things/0007", Bytes::from_static(b"newer"))
            .await?;
        assert_eq!(migrate_keys(&from, &to, "/registry/").await?, 1199);
        assert_eq!(
            migrate_keys(&from, &to, "/registry/").await?,
            0,
            "a rerun moves nothing"
        );
        let kept = to.get("/registry/things/0007").await?.map(|kv| kv.value);
        assert_eq!(kept.as_deref(), Some(&b"newer"[..]));
        let moved = to.get("/registry/things/1199").await?.map(|kv| kv.value);
        assert_eq!(moved.as_deref(), Some(&b"old-1199"[..]));
        assert!(from.get("/registry/things/0001").await?.is_none());
        assert!(
            from.get("/other/kept").await?.is_some(),
            "keys outside the prefix stay"
        );
        Ok(())
    }
}
