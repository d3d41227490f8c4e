//! Keeps the route table current from watches on Clusters, Machines and Hosts.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use shoal_api::{Cluster, Host, Machine};
use tokio::sync::{watch, Notify};

use crate::metrics::Metrics;
use crate::routes::RouteTable;

/// How long a burst of changes is gathered into one rebuild.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Watches `K` everywhere into a cache, waking `wake` on every change.
fn cache<K>(client: &Client, wake: &Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let (reader, writer) = reflector::store::<K>();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let wake = wake.clone();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::debug!(error = %e, "gateway watch error (retrying)");
            }
            wake.notify_one();
        }
    });
    (reader, task)
}

/// Rebuilds the table on every change (and every `resync`) until aborted. Each new
/// table is compared with the last; an unchanged table is not published.
pub async fn run(
    client: Client,
    base_domain: String,
    tx: watch::Sender<Arc<RouteTable>>,
    resync: Duration,
    metrics: Metrics,
    on_update: impl Fn(&RouteTable) + Send + 'static,
) {
    let wake = Arc::new(Notify::new());
    let (clusters, t1) = cache::<Cluster>(&client, &wake);
    let (machines, t2) = cache::<Machine>(&client, &wake);
    let (hosts, t3) = cache::<Host>(&client, &wake);
    let _guard = AbortOnDrop(vec![t1, t2, t3]);
    loop {
        tokio::select! {
            () = wake.notified() => tokio::time::sleep(DEBOUNCE).await,
            () = tokio::time::sleep(resync) => {}
        }
        let table = RouteTable::build(
            &base_domain,
            &clusters.state(),
            &machines.state(),
            &hosts.state(),
        );
        if same(&tx.borrow(), &table) {
            continue;
        }
        metrics.route_updates.inc();
        on_update(&table);
        tx.send_replace(Arc::new(table));
    }
}

fn same(a: &RouteTable, b: &RouteTable) -> bool {
    a.len() == b.len()
        && a.routes()
            .all(|r| b.cluster(&r.key).is_some_and(|o| **o == **r))
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
