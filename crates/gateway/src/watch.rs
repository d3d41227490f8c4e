//! Keeps the route table current from watches on Clusters, Machines and Hosts.

use std::sync::Arc;
use std::time::Duration;

use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use shoal_api::{Cluster, Host, Machine};
use shoal_kube::{AbortOnDrop, Shared};
use tokio::sync::{watch, Notify};

use crate::metrics::Metrics;
use crate::routes::RouteTable;

/// How long a burst of changes is gathered into one rebuild.
const DEBOUNCE: Duration = Duration::from_millis(50);

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
    let clusters = Shared::<Cluster>::start(Api::all(client.clone()), Counter::default());
    let machines = Shared::<Machine>::start(Api::all(client.clone()), Counter::default());
    let hosts = Shared::<Host>::start(Api::all(client), Counter::default());
    let _wakers = AbortOnDrop::new(vec![
        clusters.wake_on_change(wake.clone()),
        machines.wake_on_change(wake.clone()),
        hosts.wake_on_change(wake.clone()),
    ]);
    loop {
        tokio::select! {
            () = wake.notified() => tokio::time::sleep(DEBOUNCE).await,
            () = tokio::time::sleep(resync) => {}
        }
        let table = RouteTable::build(
            &base_domain,
            &clusters.store.state(),
            &machines.store.state(),
            &hosts.store.state(),
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
