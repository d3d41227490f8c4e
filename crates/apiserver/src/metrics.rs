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

/// Labels of a request latency observation (no code: one histogram per route).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The verb.
    pub verb: String,
    /// The resource plural.
    pub resource: String,
}

/// Labels of a store operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// `get`, `range`, `create`, `update`, `delete`, `watch` or `compact`.
    pub op: String,
}

/// A latency histogram from 0.5 ms to about 16 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Store operation metrics, shared with the [`crate::measured_store::MeasuredStore`].
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    /// Duration of each operation.
    pub duration: Family<OpLabel, Histogram, fn() -> Histogram>,
    /// Operations that failed in the store itself.
    pub errors: Family<OpLabel, Counter>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self {
            duration: Family::new_with_constructor(latency_histogram),
            errors: Family::default(),
        }
    }
}

impl StoreMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "operation_duration_seconds",
            "Store operation latency by operation",
            self.duration.clone(),
        );
        registry.register(
            "errors",
            "Store operations that failed in the backend (not conflicts or missing keys)",
            self.errors.clone(),
        );
    }

    /// The text exposition of these metrics alone, under `shoal_store`.
    #[cfg(test)]
    pub fn encode_for_test(&self) -> String {
        let mut registry = Registry::with_prefix("shoal_store");
        self.register(&mut registry);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
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
    /// Request latency in seconds, by verb and resource.
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Open watches.
    pub watches: Gauge,
    /// Requests other than watches being served.
    pub in_flight: Gauge,
    /// Requests shed: refused at the concurrency limit, or abandoned at the timeout.
    pub shed: Family<ShedLabels, Counter>,
    /// 1 while this replica's controllers hold the leader Lease.
    pub leader: Gauge,
    /// Audit records that could not be written.
    pub audit_write_errors: Counter,
    /// The store's operations.
    pub store: StoreMetrics,
    /// Registries of components wired in beside the API (the gateway), exposed on
    /// the same `/metrics`.
    extra: std::sync::Mutex<Vec<Registry>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let store = StoreMetrics::default();
        store.register(root.sub_registry_with_prefix("shoal_store"));
        let registry = root.sub_registry_with_prefix("shoal_apiserver");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let audit_write_errors = Counter::default();
        registry.register(
            "audit_write_errors",
            "Audit records that could not be written (or the log not rotated)",
            audit_write_errors.clone(),
        );
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
            "API request latency by verb and resource (watches excluded)",
            latency.clone(),
        );
        registry.register("watches", "Open watch streams", watches.clone());
        registry.register(
            "leader",
            "1 while this replica leads the controllers",
            leader.clone(),
        );
        Self {
            registry: root,
            requests,
            latency,
            watches,
            in_flight,
            shed,
            leader,
            audit_write_errors,
            store,
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
