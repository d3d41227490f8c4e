//! `shoal gateway`, and the gateway `shoal server` embeds.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use shoal_gateway::{Gateway, Listener, Metrics, ProxyConfig};
use tokio::net::TcpListener;

use crate::args::{Cli, GatewayArgs, GatewayFlags};
use crate::client::{connect, CliError};

/// A running gateway and the registry its metrics are in.
pub struct Running {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// Its metrics, for a `/metrics` endpoint.
    pub registry: Registry,
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener, CliError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Usage(format!("the gateway cannot listen on {addr} ({what}): {e}")))
}

/// Where the routes come from.
pub enum Source<'a> {
    /// Watches of Clusters, Machines and Hosts through the API.
    Api {
        /// The client.
        client: kube::Client,
        /// The base domain of cluster names.
        base_domain: &'a str,
    },
    /// A routes file.
    File(&'a std::path::Path),
}

/// Binds the listeners (failing before anything runs), then routes from `source`.
pub async fn start(flags: &GatewayFlags, source: Source<'_>) -> Result<Running, CliError> {
    let tls = bind(flags.gateway_listen, "--gateway-listen").await?;
    let http = bind(flags.gateway_http_listen, "--gateway-http-listen").await?;
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let config = ProxyConfig {
        hello_timeout: Duration::from_secs(flags.gateway_hello_timeout.max(1)),
        max_connections: flags.gateway_max_connections.max(1),
        health_timeout: Duration::from_millis(flags.gateway_health_timeout_ms.max(100)),
        ..ProxyConfig::default()
    };
    let gateway = Arc::new(Gateway::new(config, metrics));
    gateway.serve(tls, Listener::Tls);
    gateway.serve(http, Listener::Http);
    match source {
        Source::Api {
            client,
            base_domain,
        } => gateway.watch(
            client,
            base_domain.to_owned(),
            flags.gateway_file_sd.clone(),
        ),
        Source::File(path) => {
            let table = shoal_gateway::static_routes::load(path)
                .map_err(|e| CliError::Config(e.to_string()))?;
            if let Some(out) = &flags.gateway_file_sd {
                shoal_gateway::filesd::write(out, &table).map_err(|source| CliError::File {
                    path: out.clone(),
                    source,
                })?;
            }
            gateway.set_table(table);
        }
    }
    gateway.check_health(Duration::from_millis(
        flags.gateway_health_interval_ms.max(100),
    ));
    tracing::info!(
        tls = %flags.gateway_listen,
        http = %flags.gateway_http_listen,
        "gateway listening"
    );
    Ok(Running { gateway, registry })
}

/// Answers the API server's `…/clusters/<name>/endpoints` from the gateway.
pub struct Endpoints(pub Arc<Gateway>);

impl shoal_apiserver::http::EndpointsSource for Endpoints {
    fn endpoints(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<shoal_api::endpoints::ClusterEndpoints> {
        self.0.endpoints(namespace, name)
    }
}

struct Admin {
    gateway: Arc<Gateway>,
    registry: Registry,
}

/// `shoal gateway`: runs until SIGTERM or SIGINT.
pub async fn run(cli: &Cli, args: &GatewayArgs) -> Result<(), CliError> {
    let admin_listener = match args.metrics_listen {
        Some(addr) => Some(bind(addr, "--metrics-listen").await?),
        None => None,
    };
    let running = match &args.routes {
        Some(path) => start(&args.flags, Source::File(path)).await?,
        None => {
            let client = connect(cli.kubeconfig.as_ref(), cli.server.as_deref()).await?;
            let source = Source::Api {
                client,
                base_domain: &args.base_domain,
            };
            start(&args.flags, source).await?
        }
    };
    println!(
        "shoal gateway listening on {} (TLS) and {} (HTTP)",
        args.flags.gateway_listen, args.flags.gateway_http_listen
    );
    let admin = Arc::new(Admin {
        gateway: running.gateway.clone(),
        registry: running.registry,
    });
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/endpoints/{namespace}/{name}", get(endpoints))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(admin);
    match admin_listener {
        Some(listener) => {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(super::server::shutdown_signal());
            serve
                .await
                .map_err(|e| CliError::Usage(format!("the metrics listener failed: {e}")))?;
        }
        None => super::server::shutdown_signal().await,
    }
    Ok(())
}

async fn metrics(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &admin.registry).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, String::new());
    }
    (StatusCode::OK, out)
}

async fn endpoints(
    State(admin): State<Arc<Admin>>,
    Path((namespace, name)): Path<(String, String)>,
) -> axum::response::Response {
    match admin.gateway.endpoints(&namespace, &name) {
        Some(doc) => axum::Json(doc).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("the gateway routes no cluster {namespace}/{name}\n"),
        )
            .into_response(),
    }
}
