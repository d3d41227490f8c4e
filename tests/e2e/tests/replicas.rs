//! Two `shoal server` replicas on one real 3-member etcd: one admin credential
//! and CA for both, kubectl through one and a kube-rs watcher on the other, a
//! raw watch that sees the writes of both replicas exactly once and in order,
//! optimistic concurrency that holds across replicas, and Secrets that either
//! replica can decrypt.
//!
//! The replicas run with `--controllers false`: the test owns every write to its
//! objects, so it can count the watch events exactly.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use shoal_api::Cluster;
use shoal_e2e::etcd::EtcdCluster;
use shoal_e2e::{client_for, free_port, ServerProc};
use shoal_store::etcd::{EtcdConfig, EtcdStore};
use shoal_store::{RangeRequest, Store};

const NS: &str = "org-acme";
const CLUSTERS: &str = "/apis/shoal.io/v1alpha1/namespaces/org-acme/clusters";
const ETCD_PREFIX: &str = "/shoal/";

/// Updates made alternately through the two replicas under one watch.
const UPDATES: usize = 20;
/// Rounds of two concurrent updates from the same stale resourceVersion.
const ROUNDS: usize = 10;

/// Two replicas sharing an etcd cluster and an encryption key.
struct Replicas {
    etcd: EtcdCluster,
    one: ServerProc,
    two: ServerProc,
    _dir: tempfile::TempDir,
}

/// 32 random bytes from the kernel, as `--encryption-key-file` wants.
fn write_key(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    std::fs::write(path, key)?;
    Ok(())
}

fn start() -> Result<Replicas> {
    let etcd = EtcdCluster::start(3)?;
    let dir = tempfile::Builder::new()
        .prefix("shoal-replicas-")
        .tempdir()?;
    let key = dir.path().join("encryption.key");
    write_key(&key)?;
    let endpoints = etcd.endpoints().join(",");
    let key_arg = key.to_str().context("temp path is not UTF-8")?.to_owned();
    let args = [
        "--etcd-endpoints",
        endpoints.as_str(),
        "--etcd-prefix",
        ETCD_PREFIX,
        "--encryption-key-file",
        key_arg.as_str(),
        "--controllers",
        "false",
    ];
    let one = ServerProc::start_at(&dir.path().join("one"), free_port()?, &args)?;
    let two = ServerProc::start_at(&dir.path().join("two"), free_port()?, &args)?;
    Ok(Replicas {
        etcd,
        one,
        two,
        _dir: dir,
    })
}

/// Replica `from`'s admin kubeconfig with its server URL replaced by `url`.
fn kubeconfig_pointing_at(from: &Path, url: &str, out: &Path) -> Result<()> {
    let mut v: Value = serde_yaml::from_str(&std::fs::read_to_string(from)?)?;
    v["clusters"][0]["cluster"]["server"] = Value::String(url.to_owned());
    std::fs::write(out, serde_yaml::to_string(&v)?)?;
    Ok(())
}

fn yaml_field(path: &Path, pointer: &str) -> Result<String> {
    let v: Value = serde_yaml::from_str(&std::fs::read_to_string(path)?)?;
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("no {pointer} in {}", path.display()))
}

fn seq_of(c: &Cluster) -> Option<String> {
    c.annotations().get("seq").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_etcd() -> Result<()> {
    let r = start()?;
    one_admin_kubeconfig_works_with_both(&r).await?;
    let (one, two) = (r.one.client().await?, r.two.client().await?);
    // API-only replicas seed no Release; a Cluster must name one that exists.
    shoal_e2e::ensure_release(&one, "test-1").await?;
    kubectl_apply_on_one_is_seen_by_a_watcher_on_two(&r, &two).await?;
    a_watch_on_two_sees_writes_through_both_once_in_order(&one, &two).await?;
    stale_concurrent_updates_through_both_conflict(&one, &two).await?;
    secrets_written_through_one_are_readable_through_two(&r, &one, &two).await?;
    Ok(())
}

async fn one_admin_kubeconfig_works_with_both(r: &Replicas) -> Result<()> {
    // The replicas share the token and the CA through the store; each kubeconfig
    // points at its own replica.
    let (k1, k2) = (r.one.kubeconfig(), r.two.kubeconfig());
    for pointer in [
        "/users/0/user/token",
        "/clusters/0/cluster/certificate-authority-data",
    ] {
        ensure!(
            yaml_field(&k1, pointer)? == yaml_field(&k2, pointer)?,
            "the replicas' kubeconfigs differ in {pointer}"
        );
    }
    ensure!(yaml_field(&k1, "/clusters/0/cluster/server")? == r.one.url());
    ensure!(yaml_field(&k2, "/clusters/0/cluster/server")? == r.two.url());

    // Replica 1's kubeconfig, pointed at replica 2: the CA verifies replica 2's
    // serving certificate and the token authenticates there.
    let crossed = r.one.data_dir.with_extension("to-two.kubeconfig");
    kubeconfig_pointing_at(&k1, &r.two.url(), &crossed)?;
    let client = client_for(&crossed).await?;
    let (status, body) = shoal_e2e::raw(&client, "GET", "/api/v1/namespaces", "", vec![]).await?;
    ensure!(
        status == 200,
        "replica 1's kubeconfig against replica 2: {status} {body}"
    );
    let out = std::process::Command::new(shoal_e2e::kubectl_bin()?)
        .env("KUBECONFIG", &crossed)
        .args(["get", "namespaces", "-o", "name"])
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl with replica 1's kubeconfig against replica 2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("one admin kubeconfig works with both replicas");
    Ok(())
}

async fn kubectl_apply_on_one_is_seen_by_a_watcher_on_two(
    r: &Replicas,
    two: &Client,
) -> Result<()> {
    let manifest = r.one.data_dir.with_extension("demo.json");
    let org = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Organization",
        "metadata": {"name": "acme"}, "spec": {}});
    std::fs::write(&manifest, serde_json::to_vec(&org)?)?;
    r.one
        .kubectl_ok(&["apply", "-f", manifest.to_str().context("path")?])?;

    // The watcher on replica 2 starts before the Cluster exists.
    let api: Api<Cluster> = Api::namespaced(two.clone(), NS);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let tagged = match ev {
                Ok(watcher::Event::InitDone) => ("init-done", None),
                Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => ("apply", Some(c)),
                Ok(_) | Err(_) => continue,
            };
            if tx.send(tagged).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(("init-done", _))) => break,
            Ok(Some(_)) => {}
            Ok(None) => bail!("the watcher on replica 2 ended"),
            Err(_) => bail!("the watcher on replica 2 did not list within 20 s"),
        }
    }

    let cluster = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "demo", "namespace": NS},
        "spec": {"release": "test-1",
                 "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}}});
    std::fs::write(&manifest, serde_json::to_vec(&cluster)?)?;
    let applied_at = Instant::now();
    r.one
        .kubectl_ok(&["apply", "-f", manifest.to_str().context("path")?])?;
    let uid = r.one.kubectl_ok(&[
        "get",
        "cluster",
        "demo",
        "-n",
        NS,
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    ensure!(
        !uid.is_empty(),
        "kubectl shows no uid for the applied Cluster"
    );
    let seen = loop {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(("apply", Some(c)))) if c.name_any() == "demo" => break c,
            Ok(Some(_)) => {}
            Ok(None) => bail!("the watcher on replica 2 ended"),
            Err(_) => bail!("the watcher on replica 2 never saw the Cluster kubectl applied"),
        }
    };
    task.abort();
    ensure!(
        seen.uid().as_deref() == Some(uid.as_str()),
        "replica 2 saw uid {:?}, kubectl on replica 1 shows {uid}",
        seen.uid()
    );
    ensure!(seen.spec.release == "test-1");
    println!(
        "a watcher on replica 2 saw the Cluster applied through replica 1 {:?} after the apply began",
        applied_at.elapsed()
    );
    Ok(())
}

/// Reads one watch response body as JSON lines, forwarding each event.
fn spawn_raw_watch(
    client: Client,
    path: String,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<Result<Value>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let run = async {
            let req = http::Request::get(&path)
                .header("Accept", "application/json")
                .body(Vec::new())?;
            let resp = client.send(req.map(kube::client::Body::from)).await?;
            ensure!(resp.status() == 200, "watch {path}: {}", resp.status());
            let mut body = resp.into_body();
            let mut buf: Vec<u8> = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| anyhow::anyhow!("reading the watch: {e}"))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let ev: Value = serde_json::from_slice(&line)
                        .with_context(|| String::from_utf8_lossy(&line).into_owned())?;
                    if tx.send(Ok(ev)).is_err() {
                        return Ok(());
                    }
                }
            }
            bail!("the watch ended")
        };
        if let Err(e) = run.await {
            let _ = tx.send(Err(e));
        }
    });
    (rx, task)
}

async fn a_watch_on_two_sees_writes_through_both_once_in_order(
    one: &Client,
    two: &Client,
) -> Result<()> {
    let apis = [
        Api::<Cluster>::namespaced(one.clone(), NS),
        Api::<Cluster>::namespaced(two.clone(), NS),
    ];
    let created = apis[0]
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
                "metadata": {"name": "counter", "annotations": {"seq": "0"}},
                "spec": {"release": "test-1",
                         "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
            }))?,
        )
        .await?;
    let from = created.resource_version().context("no resourceVersion")?;
    let (mut rx, task) = spawn_raw_watch(
        two.clone(),
        format!("{CLUSTERS}?watch=true&resourceVersion={from}"),
    );

    // UPDATES writes alternating between the replicas, then an end marker; the
    // watch must deliver exactly these, in this order, with these versions.
    let mut written: Vec<(String, String)> = Vec::new();
    let pp = PatchParams::default();
    for n in 1..=UPDATES + 1 {
        let seq = if n > UPDATES {
            "end".to_owned()
        } else {
            n.to_string()
        };
        let via = &apis[n % 2];
        let patch = json!({"metadata": {"annotations": {"seq": seq}}});
        let updated = via.patch("counter", &pp, &Patch::Merge(&patch)).await?;
        ensure!(seq_of(&updated).as_deref() == Some(seq.as_str()));
        written.push((seq, updated.resource_version().context("no rv")?));
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen: Vec<(String, String, String)> = Vec::new();
    loop {
        let ev = match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(ev)) => ev?,
            Ok(None) => bail!("the raw watch ended; saw {seen:?}"),
            Err(_) => bail!("the raw watch on replica 2 stalled; saw {seen:?}"),
        };
        let kind = ev["type"].as_str().unwrap_or_default().to_owned();
        if kind == "BOOKMARK" {
            continue;
        }
        let obj = &ev["object"];
        if obj["metadata"]["name"] != "counter" {
            continue;
        }
        let seq = obj["metadata"]["annotations"]["seq"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let end = seq == "end";
        seen.push((kind, seq, rv));
        if end {
            break;
        }
    }
    task.abort();
    let expected: Vec<(String, String, String)> = written
        .iter()
        .map(|(seq, rv)| ("MODIFIED".to_owned(), seq.clone(), rv.clone()))
        .collect();
    ensure!(
        seen == expected,
        "the watch on replica 2 delivered\n{seen:?}\nbut the replicas acknowledged\n{expected:?}"
    );
    println!(
        "a raw watch on replica 2 delivered all {UPDATES} updates made alternately through both \
         replicas, each once, in order, with the acknowledged resourceVersions"
    );
    Ok(())
}

async fn stale_concurrent_updates_through_both_conflict(one: &Client, two: &Client) -> Result<()> {
    let apis = [
        Api::<Cluster>::namespaced(one.clone(), NS),
        Api::<Cluster>::namespaced(two.clone(), NS),
    ];
    let pp = PostParams::default();
    let mut wins = [0usize; 2];
    for round in 0..ROUNDS {
        let stale = apis[round % 2].get("counter").await?;
        let stale_rv = stale.resource_version().context("no rv")?;
        let attempt = |i: usize| {
            let mut obj = stale.clone();
            obj.annotations_mut()
                .insert("round".into(), format!("{round}-replica-{}", i + 1));
            let api = apis[i].clone();
            let pp = pp.clone();
            async move { api.replace("counter", &pp, &obj).await }
        };
        let (a, b) = tokio::join!(attempt(0), attempt(1));
        let results = [a, b];
        let mut winner = None;
        for (i, res) in results.iter().enumerate() {
            match res {
                Ok(obj) => {
                    ensure!(
                        winner.is_none(),
                        "round {round}: both replicas accepted an update from resourceVersion \
                         {stale_rv}"
                    );
                    ensure!(obj.resource_version().as_deref() != Some(stale_rv.as_str()));
                    winner = Some(i);
                }
                Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "Conflict" => {}
                Err(e) => bail!("round {round}: replica {} failed otherwise: {e}", i + 1),
            }
        }
        let winner = winner
            .with_context(|| format!("round {round}: neither replica accepted: {results:?}"))?;
        wins[winner] += 1;
        let now = apis[(round + 1) % 2].get("counter").await?;
        ensure!(
            now.annotations().get("round") == Some(&format!("{round}-replica-{}", winner + 1)),
            "round {round}: the stored object is not the winner's: {:?}",
            now.annotations()
        );
    }
    println!(
        "{ROUNDS} rounds of stale concurrent updates: exactly one 200 and one 409 each \
         (replica 1 won {}, replica 2 won {})",
        wins[0], wins[1]
    );
    Ok(())
}

async fn secrets_written_through_one_are_readable_through_two(
    r: &Replicas,
    one: &Client,
    two: &Client,
) -> Result<()> {
    let plaintext = "correct-horse-battery-staple-7d1e";
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("shared-secret".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "password".to_owned(),
            ByteString(plaintext.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(one.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await?;
    let got = Api::<Secret>::namespaced(two.clone(), NS)
        .get("shared-secret")
        .await?;
    let data = got.data.unwrap_or_default();
    ensure!(
        data.get("password").map(|b| b.0.as_slice()) == Some(plaintext.as_bytes()),
        "replica 2 read {data:?}"
    );

    // At rest in etcd the Secret is stored, but not in the clear.
    let store = EtcdStore::connect(EtcdConfig {
        endpoints: r.etcd.endpoints(),
        prefix: ETCD_PREFIX.to_owned(),
        ..EtcdConfig::default()
    })
    .await?;
    let all = store.range(RangeRequest::default()).await?;
    let keys: Vec<&str> = all
        .items
        .iter()
        .filter(|kv| kv.key.contains("shared-secret"))
        .map(|kv| kv.key.as_str())
        .collect();
    ensure!(
        !keys.is_empty(),
        "no key in etcd names the Secret: {:?}",
        all.items.iter().map(|kv| &kv.key).collect::<Vec<_>>()
    );
    // Neither the value nor its base64 form (as JSON carries it) is readable.
    let base64 = serde_json::to_value(ByteString(plaintext.as_bytes().to_vec()))?;
    let base64 = base64.as_str().context("ByteString is a JSON string")?;
    for needle in [plaintext.as_bytes(), base64.as_bytes()] {
        for kv in &all.items {
            ensure!(
                !kv.value.windows(needle.len()).any(|w| w == needle),
                "etcd key {} holds the Secret's value in the clear",
                kv.key
            );
        }
    }
    println!(
        "a Secret created through replica 1 reads back through replica 2; etcd holds it \
         encrypted under {keys:?}"
    );
    Ok(())
}
