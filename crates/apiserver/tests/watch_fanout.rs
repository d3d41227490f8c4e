//! Watches served by the shared fan-out and by their own store watch must both
//! deliver every change after their start, in order, exactly once.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use shoal_api::KINDS;
use shoal_apiserver::crypto::Sealer;
use shoal_apiserver::resource::codec::Codec;
use shoal_apiserver::resource::{Resources, WatchEventType, WatchItem, WatchOptions};
use shoal_store::redb::RedbStore;

fn kind(name: &str) -> &'static shoal_api::KindInfo {
    KINDS
        .iter()
        .find(|k| k.kind == name && k.group != "events.k8s.io")
        .expect("served kind")
}

fn cluster(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": "org-a"},
        "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
    })
}

fn rv_of(obj: &serde_json::Value) -> i64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_and_own_watches_see_every_change_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(RedbStore::open(dir.path().join("s.redb"))?);
    let res = Resources::new(store, Codec::new(Sealer::new(&Sealer::generate_key())?));
    res.create(
        kind("Namespace"),
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "org-a"}}),
    )
    .await?;
    // A Cluster must name a Release that exists.
    res.create(
        kind("Release"),
        None,
        json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Release", "metadata": {"name": "test-1"},
               "spec": {"kubernetesVersion": "1.31.2",
                        "image": {"kernel": "/boot/vmlinuz", "initrd": "/boot/initrd.img"}}}),
    )
    .await?;
    let clusters = kind("Cluster");
    let first = res
        .create(clusters, Some("org-a"), cluster("c-first"))
        .await?;
    let old_rv = rv_of(&first) - 1;

    // The first watch starts the kind's fan-out; later ones from the head use it.
    let opts = |rv: i64| WatchOptions {
        resource_version: Some(rv),
        ..WatchOptions::default()
    };
    let warm = res
        .watch(clusters, Some("org-a".into()), opts(rv_of(&first)))
        .await?;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = res
        .create(clusters, Some("org-a"), cluster("c-second"))
        .await?;
    let head_rv = rv_of(&second);

    let starts = [old_rv, rv_of(&first), head_rv];
    let mut watches = Vec::new();
    for start in starts {
        watches.push((
            start,
            res.watch(clusters, Some("org-a".into()), opts(start))
                .await?
                .boxed(),
        ));
    }
    let mut writers = Vec::new();
    for t in 0..4 {
        let res = res.clone();
        writers.push(tokio::spawn(async move {
            let mut rvs = Vec::new();
            for i in 0..50 {
                let c = res
                    .create(clusters, Some("org-a"), cluster(&format!("c-{t}-{i}")))
                    .await?;
                rvs.push((rv_of(&c), format!("c-{t}-{i}")));
            }
            anyhow::Ok(rvs)
        }));
    }
    let mut written = vec![
        (rv_of(&first), "c-first".to_owned()),
        (head_rv, "c-second".to_owned()),
    ];
    for w in writers {
        written.extend(w.await??);
    }
    written.sort();
    for (start, mut stream) in watches {
        let expected: Vec<_> = written
            .iter()
            .filter(|(rv, _)| *rv > start)
            .cloned()
            .collect();
        let mut seen = Vec::new();
        while seen.len() < expected.len() {
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await? {
                Some(WatchItem::Event(WatchEventType::Added, obj)) => {
                    let obj = obj.into_value();
                    let name = obj
                        .pointer("/metadata/name")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned();
                    seen.push((rv_of(&obj), name));
                }
                other => anyhow::bail!("watch from {start}: unexpected {other:?}"),
            }
        }
        assert_eq!(seen, expected, "watch from {start}");
        let extra = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        assert!(
            extra.is_err(),
            "watch from {start} got more than was written: {extra:?}"
        );
    }
    Ok(())
}
