//! Shoal's gateway: every connection to a guest cluster's API or ingress passes
//! through it. It routes by TLS SNI (port 443) or HTTP `Host` (port 80) without
//! terminating TLS, so client certificates reach the guest, and it reaches each VM
//! through the forward endpoint of the host agent that runs it.
//!
//! - [`hello`] and [`host_header`] read the name a connection asks for (pure);
//! - [`routes`] builds the route table from Clusters, Machines and Hosts (pure);
//! - [`watch`] keeps the table current; [`health`] checks every backend;
//! - [`proxy`] accepts, routes and copies bytes; [`dial`] reaches a backend;
//! - [`filesd`] writes the backends for Prometheus-style file discovery;
//! - [`static_routes`] reads routes from a file, for a gateway without the API.
//!
//! What this crate must not do: use the store or the API server's internals (it
//! sees Shoal only through the API), terminate or inspect TLS beyond the
//! ClientHello, or cut a proxied connection because an unrelated route changed.

pub mod dial;
pub mod filesd;
pub mod health;
pub mod hello;
pub mod host_header;
pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod static_routes;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_api::endpoints::{ClusterEndpoints, EndpointBackend, KIND};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use metrics::Metrics;
pub use proxy::ProxyConfig;
pub use routes::{Backend, ClusterRoute, Listener, RouteTable, Service, Via};

use health::{Health, State};
use proxy::Shared;

/// A gateway: its route table, backend health and listeners.
pub struct Gateway {
    shared: Arc<Shared>,
    tx: tokio::sync::watch::Sender<Arc<RouteTable>>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Gateway {
    /// A gateway with an empty route table.
    pub fn new(config: ProxyConfig, metrics: Metrics) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(RouteTable::default()));
        Self {
            shared: Arc::new(Shared::new(
                rx,
                Arc::new(Health::default()),
                metrics,
                config,
            )),
            tx,
            tasks: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Replaces the route table (static routes; the watch does this itself).
    pub fn set_table(&self, table: RouteTable) {
        self.tx.send_replace(Arc::new(table));
    }

    /// The current route table.
    pub fn table(&self) -> Arc<RouteTable> {
        self.shared.table.borrow().clone()
    }

    fn keep(&self, task: JoinHandle<()>) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }

    /// Serves `listener` as a TLS (SNI) or HTTP (Host) listener.
    pub fn serve(&self, listener: TcpListener, kind: Listener) {
        self.keep(tokio::spawn(proxy::serve(
            listener,
            kind,
            self.shared.clone(),
        )));
    }

    /// Checks every backend every `interval`.
    pub fn check_health(&self, interval: Duration) {
        self.keep(tokio::spawn(health::run(
            self.shared.health.clone(),
            self.tx.subscribe(),
            interval,
            self.shared.config.health_timeout,
            self.shared.metrics.clone(),
        )));
    }

    /// Keeps the route table current from the API; writes `file_sd` on each change.
    pub fn watch(&self, client: kube::Client, base_domain: String, file_sd: Option<PathBuf>) {
        let on_update = move |table: &RouteTable| {
            if let Some(path) = &file_sd {
                if let Err(e) = filesd::write(path, table) {
                    tracing::warn!(path = %path.display(), error = %e, "writing the file-sd output");
                }
            }
        };
        self.keep(tokio::spawn(watch::run(
            client,
            base_domain,
            self.tx.clone(),
            Duration::from_secs(30),
            self.shared.metrics.clone(),
            on_update,
        )));
    }

    /// The backends of cluster `namespace/name` with their health, or `None` if the
    /// gateway does not route it.
    pub fn endpoints(&self, namespace: &str, name: &str) -> Option<ClusterEndpoints> {
        let table = self.table();
        let route = table.cluster(&format!("{namespace}/{name}"))?;
        let list = |service| {
            route
                .backends(service)
                .iter()
                .map(|b: &Backend| EndpointBackend {
                    machine: b.machine.clone(),
                    host: b.host.clone(),
                    address: b.target.to_string(),
                    forward_endpoint: match b.via {
                        Via::Agent(ep) => Some(ep.to_string()),
                        Via::Direct => None,
                    },
                    healthy: match self.shared.health.state(b) {
                        State::Unknown => None,
                        State::Up => Some(true),
                        State::Down => Some(false),
                    },
                })
                .collect()
        };
        Some(ClusterEndpoints {
            api_version: format!("{}/{}", shoal_api::GROUP, shoal_api::VERSION),
            kind: KIND.into(),
            namespace: namespace.into(),
            name: name.into(),
            api_server_name: route.api_name(),
            ingress_domain: format!("*.{}", route.domain),
            api: list(Service::Api),
            ingress_http: list(Service::IngressHttp),
            ingress_https: list(Service::IngressHttps),
        })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}
