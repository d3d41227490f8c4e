//! The gateway's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a finished connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    /// `tls` or `http`.
    pub listener: String,
    /// `proxied`, or why the connection was closed.
    pub outcome: String,
}

/// Labels of a backend event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// `api`, `ingress-http` or `ingress-https`.
    pub service: String,
}

/// Every metric of the gateway.
#[derive(Default, Clone)]
pub struct Metrics {
    /// Connections, by listener and outcome.
    pub connections: Family<ConnLabels, Counter>,
    /// Connections open now.
    pub active: Gauge,
    /// Failed attempts to reach a backend while proxying.
    pub dial_failures: Family<ServiceLabels, Counter>,
    /// Connections sent to backends that all failed their last check, since no
    /// backend of the service was healthy.
    pub all_down_attempts: Family<ServiceLabels, Counter>,
    /// Health checks that failed.
    pub health_failures: Family<ServiceLabels, Counter>,
    /// Backends whose last health check failed.
    pub backends_down: Gauge,
    /// Backends known.
    pub backends: Gauge,
    /// Route table rebuilds.
    pub route_updates: Counter,
    /// Bytes copied from clients to backends.
    pub bytes_in: Counter,
    /// Bytes copied from backends to clients.
    pub bytes_out: Counter,
}

impl Metrics {
    /// Registers every metric under `shoal_gateway_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("shoal_gateway");
        r.register(
            "connections",
            "Connections accepted, by listener and outcome",
            self.connections.clone(),
        );
        r.register(
            "active_connections",
            "Connections open now",
            self.active.clone(),
        );
        r.register(
            "dial_failures",
            "Failed attempts to reach a backend while proxying",
            self.dial_failures.clone(),
        );
        r.register(
            "all_down_attempts",
            "Connections tried on a service's backends while all of them failed their last check",
            self.all_down_attempts.clone(),
        );
        r.register(
            "health_check_failures",
            "Backend health checks that failed",
            self.health_failures.clone(),
        );
        r.register(
            "backends_down",
            "Backends whose last health check failed",
            self.backends_down.clone(),
        );
        r.register(
            "backends",
            "Backends in the route table",
            self.backends.clone(),
        );
        r.register(
            "route_updates",
            "Route table rebuilds",
            self.route_updates.clone(),
        );
        r.register(
            "client_bytes",
            "Bytes copied from clients to backends",
            self.bytes_in.clone(),
        );
        r.register(
            "backend_bytes",
            "Bytes copied from backends to clients",
            self.bytes_out.clone(),
        );
    }

    /// Counts one finished connection.
    pub fn connection(&self, listener: &str, outcome: &str) {
        self.connections
            .get_or_create(&ConnLabels {
                listener: listener.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}
