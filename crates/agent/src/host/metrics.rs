//! Prometheus metrics of the host agent, served on `/metrics` when
//! `--metrics-listen` is set.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::AgentError;

/// Labels of a VM operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `launch` or `stop`.
    pub op: String,
    /// `ok` or `error`.
    pub result: String,
}

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    /// Passes of the host loop.
    pub syncs: Counter,
    /// Duration of one pass, in seconds.
    pub sync_seconds: Histogram,
    /// VMs this agent runs.
    pub vms: Gauge,
    /// Cluster networks on this host.
    pub networks: Gauge,
    /// VM launches and stops by result.
    pub vm_ops: Family<OpLabels, Counter>,
    /// Guests that phoned home.
    pub phone_homes: Counter,
    /// Phone-homes dropped because the agent's queue of them was full.
    pub phone_homes_shed: Counter,
    /// Machine phase changes the transition table refused.
    pub phase_refusals: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("shoal_agent");
        let m = Metrics {
            syncs: Counter::default(),
            sync_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            vms: Gauge::default(),
            networks: Gauge::default(),
            vm_ops: Family::default(),
            phone_homes: Counter::default(),
            phone_homes_shed: Counter::default(),
            phase_refusals: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("syncs", "Passes of the host loop", m.syncs.clone());
        registry.register(
            "sync_duration_seconds",
            "Duration of one pass of the host loop",
            m.sync_seconds.clone(),
        );
        registry.register("vms", "VMs this agent runs", m.vms.clone());
        registry.register(
            "networks",
            "Cluster networks on this host",
            m.networks.clone(),
        );
        registry.register(
            "vm_operations",
            "VM launches and stops by result",
            m.vm_ops.clone(),
        );
        registry.register(
            "phone_homes",
            "Guests that phoned home",
            m.phone_homes.clone(),
        );
        registry.register(
            "phone_homes_shed",
            "Phone-homes dropped because the agent's queue was full (the guest retries)",
            m.phone_homes_shed.clone(),
        );
        registry.register(
            "machine_phase_refusals",
            "Machine phase changes the transition table refused",
            m.phase_refusals.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts one VM operation.
    pub fn op(&self, op: &str, ok: bool) {
        self.vm_ops
            .get_or_create(&OpLabels {
                op: op.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Binds the metrics listener in the agent's own namespace.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, AgentError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Io {
            what: format!("binding the metrics listener {addr}"),
            source,
        })
}

/// Serves `GET /metrics` on `listener`.
pub async fn serve(
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
) -> Result<(), AgentError> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    metrics.encode(),
                )
            }
        }),
    );
    tracing::info!(%addr, "metrics served");
    axum::serve(listener, app)
        .await
        .map_err(|source| AgentError::Io {
            what: format!("serving metrics on {addr}"),
            source,
        })
}
