//! The controllers' Prometheus metrics, and the wrapper that measures every
//! reconcile inside a span naming the controller and the object.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use kube::runtime::controller::Action;
use kube::Resource;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tracing::Instrument;

use crate::context::Context;
use crate::error::Error;

/// Labels of a finished reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `cluster`, `nodepool`, `scheduler`, `hostlife` or `keypair`.
    pub controller: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// The controller.
    pub controller: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// What the controllers count.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    /// Reconciles by controller and result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile duration by controller, in seconds.
    pub duration: Family<ControllerLabel, Histogram, fn() -> Histogram>,
    /// Changes the shared watch of a kind had to hold until a slow controller's
    /// queue had room (backpressure; nothing is dropped).
    pub fanout_waits: Family<KindLabel, Counter>,
    /// Fleet state, exported once this replica's controllers run.
    pub fleet: crate::fleet_metrics::FleetSource,
}

/// Labels naming a watched kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind, e.g. `Machine`.
    pub kind: String,
}

impl ControllerMetrics {
    /// The fan-out wait counter of `kind`.
    pub fn fanout_waits(&self, kind: &str) -> Counter {
        self.fanout_waits
            .get_or_create(&KindLabel { kind: kind.into() })
            .clone()
    }
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            fanout_waits: Family::default(),
            fleet: crate::fleet_metrics::FleetSource::default(),
        }
    }
}

impl ControllerMetrics {
    /// Registers every metric under `shoal_controller_`, and the fleet's series.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.fleet.collector()));
        let r = registry.sub_registry_with_prefix("shoal_controller");
        r.register(
            "reconciles",
            "Reconciles by controller and result",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Reconcile duration by controller",
            self.duration.clone(),
        );
        r.register(
            "fanout_waits",
            "Changes a shared watch held until a slow controller's bounded queue had room",
            self.fanout_waits.clone(),
        );
    }
}

/// Runs `reconcile` for `obj` in a span, and counts and times it.
pub async fn measured<K, Fut>(
    controller: &'static str,
    obj: Arc<K>,
    ctx: Arc<Context>,
    reconcile: impl FnOnce(Arc<K>, Arc<Context>) -> Fut,
) -> Result<Action, Error>
where
    K: Resource,
    Fut: Future<Output = Result<Action, Error>>,
{
    let meta = obj.meta();
    let object = match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
        None => meta.name.clone().unwrap_or_default(),
    };
    let span = tracing::debug_span!("reconcile", controller, %object);
    let metrics = ctx.config.metrics.clone();
    let started = Instant::now();
    let key = crate::backoff::key_of(obj.as_ref());
    let result = reconcile(obj, ctx.clone()).instrument(span).await;
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            controller: controller.to_owned(),
            result: if result.is_ok() { "ok" } else { "error" }.to_owned(),
        })
        .inc();
    metrics
        .duration
        .get_or_create(&ControllerLabel {
            controller: controller.to_owned(),
        })
        .observe(started.elapsed().as_secs_f64());
    result
}
