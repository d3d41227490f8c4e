//! Shoal's controllers, which reach everything through the management API with a
//! kube-rs client, exactly as they would against a real Kubernetes host cluster.
//!
//! This crate must not use the API server's or the store's crates.
//!
//! - [`leader`]: the leader election every controller runs behind;
//! - [`release`]: seeds the default Releases and checks each cluster's;
//! - [`cluster`]: IPAM, PKI, control-plane Machines, status, deletion;
//! - [`nodepool`]: worker Machines, replacement and rolling upgrades;
//! - [`scheduler`]: puts Machines on Hosts;
//! - [`hostlife`]: turns silent Hosts NotReady and fails their Machines;
//! - [`hostdrain`]: empties a Host asked to drain, by live migration or replacement;
//! - [`keypair`]: signs KeyPairs' CSRs with their cluster's CA.
//!
//! Every reconcile is level-triggered and idempotent: it reads the caches, does
//! the next steps, and requeues; a restart at any point converges to the same state.

pub mod addressing;
pub mod backoff;
pub mod cluster;
pub mod context;
pub mod drain;
pub mod error;
pub mod fleet_metrics;
pub mod hostdrain;
pub mod hostlife;
pub mod ipam;
pub mod keypair;
pub mod labels;
pub mod leader;
pub mod machines;
pub mod metrics;
pub mod nodepool;
pub mod release;
pub mod rollout;
pub mod scheduler;
pub mod selection;
pub mod userdata;

#[cfg(test)]
mod fake_api;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::controller::{Action, Config as ControllerSettings, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use shoal_api::{Cluster, Host, Machine, NodePool};
use tokio::sync::watch;

pub use context::{Context, ControllerConfig, DEFAULT_CONCURRENCY};
pub use error::Error;
pub use selection::Selection;
pub use shoal_kube::chain;

/// A failed reconcile is retried after its object's own backoff (see
/// [`backoff`]): exponential up to a cap, reset by the object's next success.
fn error_policy<K>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action
where
    K: kube::Resource,
{
    let key = backoff::key_of(obj.as_ref());
    let delay = ctx.backoff.failed(&key);
    tracing::warn!(
        object = %obj.meta().name.as_deref().unwrap_or_default(),
        namespace = %obj.meta().namespace.as_deref().unwrap_or_default(),
        error = %chain(err),
        failures = ctx.backoff.failures(&key),
        retry_in = ?delay,
        "reconcile failed; retrying"
    );
    Action::requeue(delay)
}

/// Runs a controller's stream to its end; nothing for a controller not selected.
async fn drain<S, T, E>(name: &'static str, stream: Option<S>)
where
    S: futures::Stream<Item = Result<T, E>>,
    E: std::error::Error,
    T: Debug,
{
    let Some(stream) = stream else { return };
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            tracing::debug!(controller = name, error = %chain(&e), "controller event");
        }
    }
}

/// Each controller's settings: a short debounce, and at most `concurrency`
/// reconciles at once.
fn settings(concurrency: u16) -> ControllerSettings {
    ControllerSettings::default()
        .debounce(Duration::from_millis(100))
        .concurrency(concurrency)
}

/// Runs every controller until `stop` resolves.
pub async fn run_controllers(
    client: Client,
    config: ControllerConfig,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    config.ipam.validate()?;
    config.vpc_pool.validate()?;
    let concurrency = config.concurrency.max(1);
    release::seed(&client, &config).await?;
    let feeds = context::Feeds::start(&client, &config.metrics)
        .await
        .map_err(|_| {
            Error::NotReady("the controllers' caches stopped before they filled".into())
        })?;
    let stores = feeds.stores();
    let run = config.controllers.clone();
    let ctx = Arc::new(Context::new(client.clone(), config, stores.clone()));
    let wc = watcher::Config::default;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // Every controller is fed from the shared watches (one per kind).
    let clusters = run.has("cluster").then(|| {
        Controller::for_shared_stream(feeds.clusters.subscribe(), stores.clusters.clone())
            .with_config(settings(concurrency))
            .watches_shared_stream(feeds.machines.subscribe(), |m: Arc<Machine>| {
                m.namespace()
                    .map(|ns| ObjectRef::new(&m.spec.cluster).within(&ns))
            })
            .watches_shared_stream(feeds.pools.subscribe(), |p: Arc<NodePool>| {
                p.namespace()
                    .map(|ns| ObjectRef::new(&p.spec.cluster).within(&ns))
            })
            .graceful_shutdown_on(stopped(stop_rx.clone()))
            .run(
                |o, c| metrics::measured("cluster", o, c, cluster::reconcile),
                error_policy,
                ctx.clone(),
            )
    });

    let pools_of = stores.indexes.pools_by_cluster.clone();
    let pools = run.has("nodepool").then(|| {
        Controller::for_shared_stream(feeds.pools.subscribe(), stores.pools.clone())
            .with_config(settings(concurrency))
            .watches_shared_stream(feeds.machines.subscribe(), |m: Arc<Machine>| {
                let ns = m.namespace().unwrap_or_default();
                m.spec
                    .node_pool
                    .clone()
                    .map(|p| ObjectRef::new(&p).within(&ns))
            })
            .watches_shared_stream(feeds.clusters.subscribe(), move |c: Arc<Cluster>| {
                let ns = c.namespace().unwrap_or_default();
                pools_of.refs(&format!("{ns}/{}", c.name_any()))
            })
            .graceful_shutdown_on(stopped(stop_rx.clone()))
            .run(
                |o, c| metrics::measured("nodepool", o, c, nodepool::reconcile),
                error_policy,
                ctx.clone(),
            )
    });

    let unscheduled = stores.clone();
    let scheduler = run.has("scheduler").then(|| {
        Controller::for_shared_stream(feeds.machines.subscribe(), stores.machines.clone())
            .with_config(settings(concurrency))
            .watches_shared_stream(feeds.hosts.subscribe(), move |_h: Arc<Host>| {
                unscheduled.unscheduled_machines()
            })
            .graceful_shutdown_on(stopped(stop_rx.clone()))
            .run(
                |o, c| metrics::measured("scheduler", o, c, scheduler::reconcile),
                error_policy,
                ctx.clone(),
            )
    });

    let hosts = run.has("hostlife").then(|| {
        Controller::for_shared_stream(feeds.hosts.subscribe(), stores.hosts.clone())
            .with_config(settings(concurrency))
            .watches_shared_stream(feeds.leases.subscribe(), |l: Arc<Lease>| {
                hostlife::host_of_lease(&l.name_any()).map(ObjectRef::new)
            })
            .graceful_shutdown_on(stopped(stop_rx.clone()))
            .run(
                |o, c| metrics::measured("hostlife", o, c, hostlife::reconcile),
                error_policy,
                ctx.clone(),
            )
    });

    let draining = stores.hosts.clone();
    let drains = run.has("hostdrain").then(|| {
        Controller::for_shared_stream(feeds.hosts.subscribe(), stores.hosts.clone())
            .with_config(settings(concurrency))
            .watches_shared_stream(feeds.machines.subscribe(), move |m: Arc<Machine>| {
                // Only the hosts being drained care about their Machines' changes.
                let host = ObjectRef::<Host>::new(m.spec.host_name.as_deref()?);
                draining
                    .get(&host)
                    .is_some_and(|h| h.spec.drain.is_some())
                    .then_some(host)
            })
            .graceful_shutdown_on(stopped(stop_rx.clone()))
            .run(
                |o, c| metrics::measured("hostdrain", o, c, hostdrain::reconcile),
                error_policy,
                ctx.clone(),
            )
    });

    let keypairs = run.has("keypair").then(|| {
        let keypairs = Controller::new(Api::<shoal_api::KeyPair>::all(client.clone()), wc());
        ctx.config
            .metrics
            .fleet
            .attach(stores.clone(), keypairs.store());
        keypairs
            .with_config(settings(concurrency))
            .graceful_shutdown_on(stopped(stop_rx.clone()))
            .run(
                |o, c| metrics::measured("keypair", o, c, keypair::reconcile),
                error_policy,
                ctx.clone(),
            )
    });

    tracing::info!(controllers = ?run, "controllers started");
    let all = async {
        tokio::join!(
            drain("cluster", clusters),
            drain("nodepool", pools),
            drain("scheduler", scheduler),
            drain("hostlife", hosts),
            drain("hostdrain", drains),
            drain("keypair", keypairs),
        );
    };
    tokio::select! {
        _ = all => {}
        _ = stop => {
            let _ = stop_tx.send(true);
        }
    }
    Ok(())
}

/// Runs the controllers while `leading` is true, and stops them when leadership is
/// lost; returns when the sender of `leading` goes away. Controllers that fail to
/// start (the API not answering yet, say) are started again after a pause.
pub async fn run_when_leading(
    client: Client,
    config: ControllerConfig,
    mut leading: watch::Receiver<bool>,
) {
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        let (lost_tx, lost_rx) = watch::channel(false);
        let (client2, config2) = (client.clone(), config.clone());
        let task = tokio::spawn(async move {
            loop {
                let mut rx = lost_rx.clone();
                let stop = async move {
                    let _ = rx.wait_for(|l| *l).await;
                };
                match run_controllers(client2.clone(), config2.clone(), stop).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::error!(error = %chain(&e), "the controllers could not start; retrying in 2 s");
                        if *lost_rx.borrow() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
        });
        let gone = leading.wait_for(|l| !*l).await.is_err();
        let _ = lost_tx.send(true);
        let abort = task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .is_err()
        {
            tracing::warn!("controllers did not stop within 3 s; aborting them");
            abort.abort();
        }
        if gone {
            return;
        }
        tracing::info!("leadership lost; controllers stopped");
    }
}
