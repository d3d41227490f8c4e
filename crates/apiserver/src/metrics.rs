//! Prometheus metrics of the API server.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a request metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The verb.
    pub verb: String,
    /// The resource plural.
    pub resource: String,
    /// The HTTP code.
    pub code: u16,
}

/// Labels of a shed request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    /// Why: `concurrency` (429) or `timeout` (504).
    pub reason: String,
}

/// The API server's metrics.
pub struct Metrics {
    /// The registry they are exposed from.
    pub registry: Registry,
    /// Requests by verb, resource and code.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency in seconds.
    pub latency: Histogram,
    /// Open watches.
    pub watches: Gauge,
    /// Requests other than watches being served.
    pub in_flight: Gauge,
    /// Requests shed: refused at the concurrency limit, or abandoned at the timeout.
    pub shed: Family<ShedLabels, Counter>,
    /// 1 while this replica's controllers hold the leader Lease.
    pub leader: Gauge,
    /// Registries of components wired in beside the API (the gateway), exposed on
    /// the same `/metrics`.
    extra: std::sync::Mutex<Vec<Registry>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("shoal_apiserver");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let watches = Gauge::default();
        let leader = Gauge::default();
        let in_flight = Gauge::default();
        let shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "requests_in_flight",
            "Requests other than watches being served",
            in_flight.clone(),
        );
        registry.register(
            "requests_shed",
            "Requests refused at the concurrency limit (429) or abandoned at the request timeout (504)",
            shed.clone(),
        );
        registry.register(
            "requests",
            "API requests by verb, resource and code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "API request latency",
            latency.clone(),
        );
        registry.register("watches", "Open watch streams", watches.clone());
        registry.register(
            "leader",
            "1 while this replica leads the controllers",
            leader.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            watches,
            in_flight,
            shed,
            leader,
            extra: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            out.clear();
        }
        let extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        for registry in extra.iter() {
            let mut part = String::new();
            if prometheus_client::encoding::text::encode_registry(&mut part, registry).is_ok() {
                out.push_str(&part);
            }
        }
        if prometheus_client::encoding::text::encode_eof(&mut out).is_err() {
            out.clear();
        }
        out
    }

    /// Exposes `registry` on this server's `/metrics` too.
    pub fn add_registry(&self, registry: Registry) {
        self.extra
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(registry);
    }
}
