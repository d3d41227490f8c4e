//! Backend health: active checks on every backend, and passive marks from failed
//! connection attempts. API backends pass when `GET /readyz` over TLS, verified with
//! the cluster CA, answers 200; ingress backends when a connection opens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::dial::dial;
use crate::metrics::{Metrics, ServiceLabels};
use crate::routes::{Backend, ClusterRoute, RouteTable, Service};

/// How many checks run at once.
const PARALLEL_CHECKS: usize = 32;
/// The longest reply head a check reads.
const MAX_REPLY: usize = 4096;

/// The last word on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not checked yet: usable.
    Unknown,
    /// The last check passed.
    Up,
    /// The last check or connection attempt failed.
    Down,
}

/// What the gateway knows about every backend's health.
#[derive(Default)]
pub struct Health {
    states: Mutex<HashMap<Backend, State>>,
}

impl Health {
    /// The backend's state.
    pub fn state(&self, b: &Backend) -> State {
        self.lock().get(b).copied().unwrap_or(State::Unknown)
    }

    /// True unless the backend's last check failed.
    pub fn usable(&self, b: &Backend) -> bool {
        self.state(b) != State::Down
    }

    /// Records a result; returns the previous state.
    pub fn set(&self, b: &Backend, state: State) -> State {
        self.lock()
            .insert(b.clone(), state)
            .unwrap_or(State::Unknown)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Backend, State>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets backends that left the table.
    fn retain(&self, keep: &std::collections::HashSet<&Backend>) {
        self.lock().retain(|b, _| keep.contains(b));
    }

    fn down_count(&self) -> usize {
        self.lock().values().filter(|s| **s == State::Down).count()
    }
}

/// Checks every backend every `interval`, and at once when the table changes.
pub async fn run(
    health: Arc<Health>,
    mut table: watch::Receiver<Arc<RouteTable>>,
    interval: Duration,
    connect_timeout: Duration,
    metrics: Metrics,
) {
    loop {
        let current = table.borrow_and_update().clone();
        let mut work: Vec<(Arc<ClusterRoute>, Service, Backend)> = Vec::new();
        for route in current.routes() {
            for service in [Service::Api, Service::IngressHttp, Service::IngressHttps] {
                for b in route.backends(service) {
                    work.push((route.clone(), service, b.clone()));
                }
            }
        }
        {
            let keep = work.iter().map(|(_, _, b)| b).collect();
            health.retain(&keep);
        }
        metrics
            .backends
            .set(i64::try_from(work.len()).unwrap_or(i64::MAX));
        let configs = TlsConfigs::default();
        futures::stream::iter(work)
            .map(|(route, service, b)| {
                let health = health.clone();
                let metrics = metrics.clone();
                let configs = &configs;
                async move {
                    let result = check(&route, service, &b, connect_timeout, configs).await;
                    let now = if result.is_ok() { State::Up } else { State::Down };
                    let was = health.set(&b, now);
                    if let Err(why) = result {
                        metrics
                            .health_failures
                            .get_or_create(&ServiceLabels {
                                service: service.as_str().into(),
                            })
                            .inc();
                        if was != State::Down {
                            tracing::warn!(backend = %b.machine, service = service.as_str(), %why, "backend down");
                        }
                    } else if was == State::Down {
                        tracing::info!(backend = %b.machine, service = service.as_str(), "backend up again");
                    }
                }
            })
            .buffer_unordered(PARALLEL_CHECKS)
            .collect::<()>()
            .await;
        metrics
            .backends_down
            .set(i64::try_from(health.down_count()).unwrap_or(i64::MAX));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            changed = table.changed() => if changed.is_err() { return },
        }
    }
}

/// TLS client configurations by CA, built once per round.
#[derive(Default)]
struct TlsConfigs {
    by_ca: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
}

impl TlsConfigs {
    fn get(&self, ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut map = self.by_ca.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(ca_pem) {
            return Ok(c.clone());
        }
        let config = Arc::new(client_config(ca_pem)?);
        map.insert(ca_pem.to_owned(), config.clone());
        Ok(config)
    }
}

/// A TLS client that trusts only `ca_pem`.
pub fn client_config(ca_pem: &str) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("the cluster CA is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the cluster CA is unusable: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

async fn check(
    route: &ClusterRoute,
    service: Service,
    b: &Backend,
    timeout: Duration,
    configs: &TlsConfigs,
) -> Result<(), String> {
    let stream = dial(b, timeout).await.map_err(|e| e.to_string())?;
    let (Service::Api, Some(ca)) = (service, route.ca_pem.as_deref()) else {
        return Ok(());
    };
    let config = configs.get(ca)?;
    tokio::time::timeout(timeout, readyz(stream, &route.api_name(), config))
        .await
        .map_err(|_| format!("/readyz took longer than {timeout:?}"))?
}

/// `GET /readyz` over TLS on `stream` for `server_name`, trusting what `config`
/// trusts: `Ok` on a 200, else what went wrong. The gateway's health checks use it
/// on a backend, the cluster controller through the gateway itself.
pub async fn readyz(
    stream: tokio::net::TcpStream,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<(), String> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("{server_name} is not a server name: {e}"))?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS with the cluster CA: {e}"))?;
    let req = format!("GET /readyz HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("sending /readyz: {e}"))?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 1024];
    while !reply.windows(2).any(|w| w == b"\r\n") && reply.len() < MAX_REPLY {
        let n = tls
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading /readyz: {e}"))?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&reply);
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) == Some("200") {
        Ok(())
    } else if status.is_empty() {
        Err("/readyz: the connection closed without an answer".into())
    } else {
        Err(format!("/readyz answered {status:?}"))
    }
}
