//! `cargo bench -p shoal-e2e --bench etcd` (or `make bench`): Shoal's API on a
//! real three-member etcd next to etcd reached directly, measured in one run.
//!
//! 1. API create throughput through `shoal server` (HTTPS, validation, the etcd
//!    store), divided by direct `EtcdStore::create` throughput on the same etcd
//!    cluster with the same value size and the same concurrency.
//! 2. Latency of one event delivered to 1,000 concurrent API watchers spread
//!    over two `shoal server` replicas sharing the etcd, next to the same
//!    fan-out through 1,000 direct `EtcdStore` watches over two store clients.
//!
//! Set SHOAL_BIN to a release build (make bench does) for meaningful numbers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use shoal_api::Cluster;
use shoal_e2e::bench::{self, p50_p99, throughput};
use shoal_e2e::etcd::EtcdCluster;
use shoal_e2e::ServerProc;
use shoal_store::etcd::{EtcdConfig, EtcdStore};
use shoal_store::Store;

const CREATES: usize = 3000;
const CONCURRENCY: usize = 64;
const WATCHERS: usize = 1000;
const EVENTS: usize = 20;
const NAMESPACE: &str = "org-bench";

fn cluster(name: &str) -> Cluster {
    serde_json::from_value(json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"bench": "true"}},
        "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
    }))
    .expect("a valid cluster literal")
}

/// gRPC requests (Range and Txn) the etcd members have answered so far.
fn etcd_requests(etcd: &EtcdCluster) -> Result<f64> {
    let by_method = etcd.grpc_requests()?;
    Ok(["Range", "Txn"]
        .iter()
        .filter_map(|m| by_method.get(*m))
        .sum())
}

async fn api_creates(server: &ServerProc) -> Result<f64> {
    let api: Api<Cluster> = Api::namespaced(server.client().await?, NAMESPACE);
    throughput(CREATES, CONCURRENCY, move |i| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &cluster(&format!("c{i}")))
                .await?;
            Ok(())
        }
    })
    .await
}

/// Direct creates of `value` (the bytes the API stored for one Cluster) under
/// another prefix of the same etcd.
async fn store_creates(endpoints: &[String], value: Bytes) -> Result<f64> {
    let store = Arc::new(
        EtcdStore::connect(EtcdConfig {
            prefix: "/bench-direct/".into(),
            ..EtcdConfig::new(endpoints.to_vec())
        })
        .await?,
    );
    throughput(CREATES, CONCURRENCY, move |i| {
        let (store, value) = (store.clone(), value.clone());
        async move {
            store
                .create(&format!("/registry/clusters/{NAMESPACE}/c{i}"), value)
                .await?;
            Ok(())
        }
    })
    .await
}

/// Starts WATCHERS API watches, alternating between the replicas, then patches
/// one object EVENTS times through the first and records each delivery.
async fn api_watch_latency(replicas: &[&ServerProc]) -> Result<Vec<f64>> {
    let mut apis = Vec::new();
    for r in replicas {
        apis.push(Api::<Cluster>::namespaced(r.client().await?, NAMESPACE));
    }
    let target = apis[0]
        .create(&PostParams::default(), &cluster("watched"))
        .await?;
    let rv = target
        .metadata
        .resource_version
        .clone()
        .context("resourceVersion")?;
    bench::api_watch_latency(&apis, "watched", &rv, WATCHERS, EVENTS).await
}

/// The same fan-out through direct store watches over two store clients: the
/// floor under the API's figure.
async fn store_watch_latency(endpoints: &[String]) -> Result<Vec<f64>> {
    let mut stores = Vec::new();
    for _ in 0..2 {
        stores.push(Arc::new(
            EtcdStore::connect(EtcdConfig {
                prefix: "/bench-direct-watch/".into(),
                ..EtcdConfig::new(endpoints.to_vec())
            })
            .await?,
        ));
    }
    let key = "/registry/clusters/org-bench/watched";
    let kv = stores[0].create(key, Bytes::from_static(b"{}")).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();
    for w in 0..WATCHERS {
        let mut feed = stores[w % stores.len()].watch(key, kv.mod_revision).await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(ev)) = feed.next().await {
                let _ = tx.send((ev.revision, Instant::now()));
            }
        });
    }
    let mut latencies = Vec::new();
    let mut rev = kv.mod_revision;
    for seq in 0..EVENTS {
        let sent = Instant::now();
        rev = stores[0]
            .update(key, Bytes::from(format!("{{\"seq\":{seq}}}")), rev)
            .await?
            .mod_revision;
        let mut got = 0;
        let deadline = sent + Duration::from_secs(10);
        while got < WATCHERS {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some((r, at))) if r == rev => {
                    latencies.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                    got += 1;
                }
                Ok(Some(_)) => {}
                _ => anyhow::bail!("store event reached only {got} of {WATCHERS} watchers in 10 s"),
            }
        }
    }
    Ok(latencies)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    println!(
        "Shoal on etcd benchmark (3 etcd members; {CREATES} creates x {CONCURRENCY} tasks, \
         {WATCHERS} watchers over 2 replicas x {EVENTS} events)"
    );
    let etcd = EtcdCluster::start(3)?;
    let endpoints = etcd.endpoints();
    let key_file = tmp.path().join("encryption.key");
    std::fs::write(&key_file, [0x5a_u8; 32])?;
    let joined = endpoints.join(",");
    let key_arg = key_file.to_str().context("a UTF-8 temp path")?;
    // The controllers stay off, as in the embedded store's bench: with them on,
    // every created Cluster is reconciled (network leases, PKI Secrets, status
    // writes), and their etcd requests and watch load were counted as the API's.
    let args = [
        "--etcd-endpoints",
        joined.as_str(),
        "--encryption-key-file",
        key_arg,
        "--controllers=false",
    ];
    let first = ServerProc::start_with(&args)?;
    let second = ServerProc::start_with(&args)?;
    let out = first.shoal(&["org", "create", "bench"])?;
    ensure!(
        out.status.success(),
        "org create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A Cluster must name a Release that exists.
    shoal_e2e::ensure_release(&first.client().await?, "test-1").await?;
    // The org's namespace may appear a moment after the Organization.
    let api: Api<Cluster> = Api::namespaced(first.client().await?, NAMESPACE);
    let started = Instant::now();
    while let Err(err) = api
        .create(&PostParams::default(), &cluster("template"))
        .await
    {
        ensure!(
            started.elapsed() < Duration::from_secs(20),
            "{NAMESPACE} never accepted a Cluster: {err}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The exact bytes the API stored for one Cluster: the direct creates write
    // the same size.
    // The server's objects live at `<--etcd-prefix without its trailing slash>/registry/...`.
    let reader = EtcdStore::connect(EtcdConfig {
        prefix: "/shoal".into(),
        ..EtcdConfig::new(endpoints.clone())
    })
    .await?;
    let value = reader
        .get(&format!("/registry/clusters/{NAMESPACE}/template"))
        .await?
        .context("the API's Cluster is not where the bench looks for it")?
        .value;

    let before = etcd_requests(&etcd)?;
    let direct = store_creates(&endpoints, value.clone()).await?;
    let middle = etcd_requests(&etcd)?;
    let api_rate = api_creates(&first).await?;
    let after = etcd_requests(&etcd)?;
    let per_direct = (middle - before) / CREATES as f64;
    let per_api = (after - middle) / CREATES as f64;
    let (api_p50, api_p99) = p50_p99(api_watch_latency(&[&first, &second]).await?);
    let (raw_p50, raw_p99) = p50_p99(store_watch_latency(&endpoints).await?);

    println!();
    println!("| figure | Shoal | baseline | ratio | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| create throughput (API over HTTPS vs direct EtcdStore::create, {} B values, {CONCURRENCY} concurrent) | {api_rate:.0}/s | {direct:.0}/s | {:.2} | >= 0.5 |",
        value.len(),
        api_rate / direct
    );
    println!(
        "| etcd requests (Range + Txn) per create, background included (API vs direct) | {per_api:.2} | {per_direct:.2} | {:.2} | |",
        per_api / per_direct
    );
    println!(
        "| 1 event to {WATCHERS} watchers on 2 replicas, p50 (API vs direct store watch) | {api_p50:.1} ms | {raw_p50:.1} ms | {:.1}x | |",
        api_p50 / raw_p50.max(0.001)
    );
    println!(
        "| 1 event to {WATCHERS} watchers on 2 replicas, p99 (API vs direct store watch) | {api_p99:.1} ms | {raw_p99:.1} ms | {:.1}x | p99 <= 50 ms |",
        api_p99 / raw_p99.max(0.001)
    );
    drop(second);
    drop(first);
    drop(etcd);
    Ok(())
}
