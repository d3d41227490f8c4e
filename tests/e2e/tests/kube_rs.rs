//! kube-rs's typed `Api<Cluster>` against a real `shoal server`: CRUD, generation,
//! the status subresource, optimistic concurrency, finalizers, selectors, paging,
//! patches, and watches (a `kube::runtime::watcher` across a server restart,
//! bookmarks, and 410 Gone from compacted history).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::{StreamExt, TryStreamExt};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use shoal_api::{Cluster, ClusterPhase, ClusterStatus, Organization};
use shoal_e2e::ServerProc;
use tokio::sync::mpsc;

const NS: &str = "org-acme";

fn cluster(name: &str, labels: &[(&str, &str)]) -> Result<Cluster> {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name, "labels": labels},
        "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
    }))?)
}

async fn create_org(client: &Client, name: &str) -> Result<()> {
    let orgs: Api<Organization> = Api::all(client.clone());
    let org: Organization = serde_json::from_value(json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Organization",
        "metadata": {"name": name}, "spec": {},
    }))?;
    orgs.create(&PostParams::default(), &org).await?;
    Ok(())
}

/// A server with organization `acme`, and a typed client for its clusters.
async fn setup(args: &[&str]) -> Result<(ServerProc, Client, Api<Cluster>)> {
    let server = ServerProc::start_with(args)?;
    let client = server.client().await?;
    create_org(&client, "acme").await?;
    shoal_e2e::ensure_release(&client, "test-1").await?;
    let api = Api::namespaced(client.clone(), NS);
    Ok((server, client, api))
}

/// The API error's HTTP code and reason, or a failure if it is another error.
fn api_error<T: std::fmt::Debug>(r: kube::Result<T>) -> Result<(u16, String)> {
    match r {
        Err(kube::Error::Api(status)) => Ok((status.code, status.reason.clone())),
        other => bail!("expected an API error, got {other:?}"),
    }
}

fn generation(c: &Cluster) -> Option<i64> {
    c.metadata.generation
}

fn phase(c: &Cluster) -> Option<ClusterPhase> {
    c.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test]
async fn crud_generation_and_status() -> Result<()> {
    let (_server, _client, api) = setup(&[]).await?;
    let pp = PostParams::default();

    let created = api
        .create(&pp, &cluster("demo", &[("env", "test")])?)
        .await?;
    assert_eq!(generation(&created), Some(1));
    assert!(created.uid().is_some() && created.resource_version().is_some());
    assert_eq!(created.namespace().as_deref(), Some(NS));

    let got = api.get("demo").await?;
    assert_eq!(got.spec, created.spec);
    assert_eq!(got.uid(), created.uid());
    let listed = api.list(&ListParams::default()).await?;
    assert_eq!(
        listed
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>(),
        ["demo"]
    );

    // A spec change bumps the generation.
    let mut next = got.clone();
    next.spec.release = "test-2".into();
    let replaced = api.replace("demo", &pp, &next).await?;
    assert_eq!(replaced.spec.release, "test-2");
    assert_eq!(generation(&replaced), Some(2));

    // A metadata-only change does not.
    let mut relabeled = replaced.clone();
    relabeled.labels_mut().insert("tier".into(), "gold".into());
    let relabeled = api.replace("demo", &pp, &relabeled).await?;
    assert_eq!(
        relabeled.labels().get("tier").map(String::as_str),
        Some("gold")
    );
    assert_eq!(generation(&relabeled), Some(2));

    // /status changes only status, and not the generation.
    let mut with_status = relabeled.clone();
    with_status.status = Some(ClusterStatus {
        phase: Some(ClusterPhase::Provisioning),
        nodes: Some("0/3".into()),
        ..ClusterStatus::default()
    });
    with_status.spec.release = "sneaky".into();
    let status_written = api.replace_status("demo", &pp, &with_status).await?;
    assert_eq!(phase(&status_written), Some(ClusterPhase::Provisioning));
    assert_eq!(
        status_written.spec.release, "test-2",
        "/status must not change spec"
    );
    assert_eq!(
        generation(&status_written),
        Some(2),
        "a status change must not bump the generation"
    );

    let patched = api
        .patch_status(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}, "spec": {"release": "sneaky"}})),
        )
        .await?;
    assert_eq!(phase(&patched), Some(ClusterPhase::Ready));
    assert_eq!(
        patched.status.as_ref().and_then(|s| s.nodes.as_deref()),
        Some("0/3"),
        "a merge patch keeps the rest of status"
    );
    assert_eq!(patched.spec.release, "test-2");
    assert_eq!(generation(&patched), Some(2));

    // The main endpoint ignores status.
    let mut main = patched.clone();
    main.status = Some(ClusterStatus {
        phase: Some(ClusterPhase::Failed),
        ..ClusterStatus::default()
    });
    let kept = api.replace("demo", &pp, &main).await?;
    assert_eq!(phase(&kept), Some(ClusterPhase::Ready));
    let kept = api
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await?;
    assert_eq!(phase(&kept), Some(ClusterPhase::Ready));
    assert_eq!(generation(&kept), Some(2));
    assert_eq!(phase(&api.get("demo").await?), Some(ClusterPhase::Ready));

    // Delete, then it is gone.
    let deleted = api.delete("demo", &DeleteParams::default()).await?;
    ensure!(
        deleted.is_left(),
        "delete without finalizers returns the object"
    );
    assert_eq!(
        api_error(api.get("demo").await)?,
        (404, "NotFound".to_owned())
    );
    assert!(api.list(&ListParams::default()).await?.items.is_empty());
    assert_eq!(
        api_error(api.delete("demo", &DeleteParams::default()).await)?.0,
        404
    );
    Ok(())
}

#[tokio::test]
async fn stale_resource_version_conflicts() -> Result<()> {
    let (_server, _client, api) = setup(&[]).await?;
    let pp = PostParams::default();
    let original = api.create(&pp, &cluster("demo", &[])?).await?;

    let mut first = original.clone();
    first.spec.release = "test-2".into();
    let updated = api.replace("demo", &pp, &first).await?;
    assert_ne!(updated.resource_version(), original.resource_version());

    // Same resourceVersion as `original`: someone else has written since.
    let mut stale = original.clone();
    stale.spec.release = "test-3".into();
    let (code, reason) = api_error(api.replace("demo", &pp, &stale).await)?;
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let (code, _) = api_error(api.replace_status("demo", &pp, &stale).await)?;
    assert_eq!(code, 409, "/status honours the resourceVersion too");
    assert_eq!(
        api.get("demo").await?.spec.release,
        "test-2",
        "the stale write changed nothing"
    );

    // Deleting with a stale precondition conflicts too.
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            resource_version: original.resource_version(),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    assert_eq!(api_error(api.delete("demo", &dp).await)?.0, 409);

    // With the current one, it succeeds.
    let mut fresh = api.get("demo").await?;
    fresh.spec.release = "test-3".into();
    assert_eq!(
        api.replace("demo", &pp, &fresh).await?.spec.release,
        "test-3"
    );
    Ok(())
}

#[tokio::test]
async fn dry_run_never_writes() -> Result<()> {
    let (_server, _client, api) = setup(&[]).await?;
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    // Shoal does not implement dry run: it must refuse it, never perform the write.
    let created = api.create(&dry, &cluster("ghost", &[])?).await;
    assert_eq!(api_error(created)?.0, 400);
    assert_eq!(
        api_error(api.get("ghost").await)?.0,
        404,
        "a dry-run create wrote the object"
    );

    let real = api
        .create(&PostParams::default(), &cluster("demo", &[])?)
        .await?;
    let mut changed = real.clone();
    changed.spec.release = "test-2".into();
    assert_eq!(api_error(api.replace("demo", &dry, &changed).await)?.0, 400);
    let dry_patch = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let patched = api
        .patch(
            "demo",
            &dry_patch,
            &Patch::Merge(json!({"spec": {"release": "test-3"}})),
        )
        .await;
    assert_eq!(api_error(patched)?.0, 400);
    let dry_delete = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    assert_eq!(api_error(api.delete("demo", &dry_delete).await)?.0, 400);

    let after = api.get("demo").await?;
    assert_eq!(after.spec.release, "test-1");
    assert_eq!(
        after.resource_version(),
        real.resource_version(),
        "a dry run wrote"
    );
    Ok(())
}

#[tokio::test]
async fn finalizers_hold_deletion() -> Result<()> {
    let (_server, _client, api) = setup(&[]).await?;
    let mut c = cluster("demo", &[])?;
    c.metadata.finalizers = Some(vec!["shoal.io/e2e".into()]);
    api.create(&PostParams::default(), &c).await?;

    let deleted = api.delete("demo", &DeleteParams::default()).await?;
    let deleting = deleted
        .left()
        .context("a finalized delete returns the object")?;
    assert!(deleting.metadata.deletion_timestamp.is_some());
    let still = api.get("demo").await?;
    assert!(
        still.metadata.deletion_timestamp.is_some(),
        "the object is kept, marked for deletion"
    );
    assert_eq!(still.finalizers(), ["shoal.io/e2e"]);

    // Spec changes are still possible while it waits; deleting again keeps it.
    let again = api.delete("demo", &DeleteParams::default()).await?;
    ensure!(again.is_left());
    api.get("demo").await?;

    // Removing the last finalizer completes the deletion.
    api.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    assert_eq!(api_error(api.get("demo").await)?.0, 404);
    Ok(())
}

fn names(list: &[Cluster]) -> BTreeSet<String> {
    list.iter().map(ResourceExt::name_any).collect()
}

#[tokio::test]
async fn selectors_and_paging() -> Result<()> {
    let (_server, client, api) = setup(&[]).await?;
    create_org(&client, "other").await?;
    let pp = PostParams::default();
    let envs = ["prod", "dev", "test"];
    for i in 0..25 {
        let env = envs[i % 3];
        let mut labels = vec![("env", env)];
        if i % 5 == 0 {
            labels.push(("gpu", "yes"));
        }
        api.create(&pp, &cluster(&format!("c-{i:02}"), &labels)?)
            .await?;
    }
    let other: Api<Cluster> = Api::namespaced(client.clone(), "org-other");
    other
        .create(&pp, &cluster("c-00", &[("env", "prod")])?)
        .await?;

    let count = |sel: &'static str| {
        let api = api.clone();
        async move {
            anyhow::Ok(
                api.list(&ListParams::default().labels(sel))
                    .await?
                    .items
                    .len(),
            )
        }
    };
    // prod: 0,3,..,24 = 9; dev: 1,4,..,22 = 8; test: 2,5,..,23 = 8; gpu: 0,5,10,15,20 = 5.
    assert_eq!(count("env=prod").await?, 9);
    assert_eq!(count("env==dev").await?, 8);
    assert_eq!(count("env!=prod").await?, 16);
    assert_eq!(count("env in (dev,test)").await?, 16);
    assert_eq!(count("env notin (dev,test)").await?, 9);
    assert_eq!(count("gpu").await?, 5);
    assert_eq!(count("!gpu").await?, 20);
    assert_eq!(count("env=prod,gpu").await?, 2, "c-00 and c-15");
    assert_eq!(count("env=staging").await?, 0);

    let by_name = api
        .list(&ListParams::default().fields("metadata.name=c-07"))
        .await?;
    assert_eq!(names(&by_name.items), BTreeSet::from(["c-07".to_owned()]));
    let not_name = api
        .list(&ListParams::default().fields("metadata.name!=c-07"))
        .await?;
    assert_eq!(not_name.items.len(), 24);

    let all: Api<Cluster> = Api::all(client.clone());
    assert_eq!(all.list(&ListParams::default()).await?.items.len(), 26);
    let in_other = all
        .list(&ListParams::default().fields("metadata.namespace=org-other"))
        .await?;
    assert_eq!(in_other.items.len(), 1);
    assert_eq!(in_other.items[0].namespace().as_deref(), Some("org-other"));
    let named_everywhere = all
        .list(&ListParams::default().fields("metadata.name=c-00"))
        .await?;
    assert_eq!(
        named_everywhere.items.len(),
        2,
        "c-00 exists in both namespaces"
    );

    let bad = api
        .list(&ListParams::default().fields("spec.release=test-1"))
        .await;
    assert_eq!(
        api_error(bad)?.0,
        400,
        "unsupported field selectors are refused"
    );

    // Paging: 10 + 10 + 5, each name once, in the same order as an unpaged list.
    let mut paged = Vec::new();
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(10);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await?;
        pages.push(page.items.len());
        paged.extend(page.items.iter().map(ResourceExt::name_any));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
        ensure!(pages.len() < 10, "paging does not end: {pages:?}");
    }
    assert_eq!(pages, [10, 10, 5]);
    let unpaged: Vec<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(paged, unpaged);
    assert_eq!(paged.iter().collect::<BTreeSet<_>>().len(), 25);

    // Paging with a selector: the pages hold only matches.
    let mut prod = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().labels("env=prod").limit(4);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await?;
        ensure!(page.items.len() <= 4);
        prod.extend(page.items.iter().map(ResourceExt::name_any));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(prod.len(), 9);
    assert!(
        prod.iter()
            .all(|n| n[2..].parse::<usize>().is_ok_and(|i| i % 3 == 0)),
        "{prod:?}"
    );
    Ok(())
}

#[tokio::test]
async fn merge_and_json_patches() -> Result<()> {
    let (_server, _client, api) = setup(&[]).await?;
    api.create(&PostParams::default(), &cluster("demo", &[("env", "dev")])?)
        .await?;
    let pp = PatchParams::default();

    let merged = api
        .patch("demo", &pp, &Patch::Merge(json!({"metadata": {"labels": {"env": "prod", "team": "a"}}, "spec": {"controlPlane": {"replicas": 3}}})))
        .await?;
    assert_eq!(merged.labels().get("env").map(String::as_str), Some("prod"));
    assert_eq!(merged.labels().get("team").map(String::as_str), Some("a"));
    assert_eq!(merged.spec.control_plane.replicas, 3);
    assert_eq!(
        merged.spec.control_plane.memory.to_string(),
        "2Gi",
        "a merge patch keeps siblings"
    );
    assert_eq!(generation(&merged), Some(2));

    // null removes a key.
    let removed = api
        .patch(
            "demo",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"team": null}}})),
        )
        .await?;
    assert!(!removed.labels().contains_key("team"));
    assert_eq!(generation(&removed), Some(2));

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/release", "value": "test-1"},
        {"op": "replace", "path": "/spec/release", "value": "test-9"},
        {"op": "add", "path": "/metadata/labels/zone", "value": "b"},
    ]))?;
    let jsonp = api.patch("demo", &pp, &Patch::<()>::Json(ops)).await?;
    assert_eq!(jsonp.spec.release, "test-9");
    assert_eq!(jsonp.labels().get("zone").map(String::as_str), Some("b"));
    assert_eq!(generation(&jsonp), Some(3));

    // A failing test op applies nothing.
    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/release", "value": "test-10"},
        {"op": "test", "path": "/spec/release", "value": "nope"},
    ]))?;
    let (code, _) = api_error(api.patch("demo", &pp, &Patch::<()>::Json(failing)).await)?;
    assert_eq!(code, 422);
    assert_eq!(api.get("demo").await?.spec.release, "test-9");

    // A patch that makes the object invalid is refused with the field named.
    let invalid = api
        .patch(
            "demo",
            &pp,
            &Patch::Merge(json!({"spec": {"controlPlane": {"replicas": 2}}})),
        )
        .await;
    match invalid {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422);
            assert!(
                s.message.contains("spec.controlPlane.replicas"),
                "{}",
                s.message
            );
        }
        other => bail!("an invalid patch was accepted: {other:?}"),
    }
    Ok(())
}

/// Watches clusters and forwards each `counter` annotation value it sees.
fn spawn_counter_watcher(
    api: Api<Cluster>,
) -> (mpsc::UnboundedReceiver<u32>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let obj = match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                Ok(_) | Err(_) => continue,
            };
            if let Some(n) = obj
                .annotations()
                .get("counter")
                .and_then(|v| v.parse().ok())
            {
                if tx.send(n).is_err() {
                    return;
                }
            }
        }
    });
    (rx, task)
}

/// Receives until every value in `want` has been seen, or fails at `deadline`.
async fn await_counters(
    rx: &mut mpsc::UnboundedReceiver<u32>,
    seen: &mut BTreeSet<u32>,
    want: std::ops::RangeInclusive<u32>,
    deadline: Instant,
) -> Result<()> {
    while !want.clone().all(|n| seen.contains(&n)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(n)) => {
                seen.insert(n);
            }
            Ok(None) => bail!("the watcher ended; saw {seen:?}"),
            Err(_) => {
                let missing: Vec<u32> = want.filter(|n| !seen.contains(n)).collect();
                bail!("the watcher missed {missing:?}; saw {seen:?}");
            }
        }
    }
    Ok(())
}

async fn set_counter(api: &Api<Cluster>, n: u32) -> Result<()> {
    let patch = Patch::Merge(json!({"metadata": {"annotations": {"counter": n.to_string()}}}));
    api.patch("demo", &PatchParams::default(), &patch).await?;
    Ok(())
}

#[tokio::test]
async fn watcher_survives_a_server_restart() -> Result<()> {
    let (mut server, client, api) = setup(&[]).await?;
    let mut c = cluster("demo", &[])?;
    c.annotations_mut().insert("counter".into(), "0".into());
    api.create(&PostParams::default(), &c).await?;

    let (mut rx, task) = spawn_counter_watcher(api.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = BTreeSet::new();
    await_counters(&mut rx, &mut seen, 0..=0, deadline).await?;

    // Updates right before the restart may not have reached the watcher when
    // the server stops; it must get them from the history after it reconnects.
    for n in 1..=5 {
        set_counter(&api, n).await?;
    }
    // The open watch must not hold the shutdown up until the drain deadline
    // (5 s): the server ends watches when it starts shutting down.
    let restarting = Instant::now();
    server.restart()?;
    let took = restarting.elapsed();
    ensure!(
        took < Duration::from_secs(5),
        "a restart with an open watch took {took:?}"
    );
    let client_after = server.client().await?;
    let api_after: Api<Cluster> = Api::namespaced(client_after, NS);
    for n in 6..=10 {
        set_counter(&api_after, n).await?;
    }
    let result = await_counters(&mut rx, &mut seen, 0..=10, deadline).await;
    task.abort();
    result?;
    assert_eq!(seen, (0..=10).collect::<BTreeSet<_>>());
    drop(client);
    Ok(())
}

/// The next watch event within 10 s, as (type, name, labels).
async fn next_event<S>(stream: &mut S) -> Result<(&'static str, String, BTreeMap<String, String>)>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<Cluster>>> + Unpin,
{
    let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .context("no watch event within 10 s")??
        .context("the watch ended")?;
    let (ty, obj) = match ev {
        WatchEvent::Added(o) => ("ADDED", o),
        WatchEvent::Modified(o) => ("MODIFIED", o),
        WatchEvent::Deleted(o) => ("DELETED", o),
        other => bail!("unexpected {other:?}"),
    };
    Ok((ty, obj.name_any(), obj.labels().clone()))
}

#[tokio::test]
async fn watch_events_follow_the_selector() -> Result<()> {
    // The API's watch semantics alone: with the controllers on, their finalizer
    // on a Cluster turns a delete into a MODIFIED first, at a time that races
    // with the test's own writes.
    let (_server, _client, api) = setup(&["--controllers=false"]).await?;
    let pp = PostParams::default();
    let patch = PatchParams::default();
    api.create(&pp, &cluster("before", &[("env", "prod")])?)
        .await?;
    let rv = api
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .context("no resourceVersion")?;

    // From "0", a watch first lists what matches.
    let initial = api
        .watch(
            &WatchParams::default()
                .labels("env=prod")
                .disable_bookmarks()
                .timeout(30),
            "0",
        )
        .await?;
    futures::pin_mut!(initial);
    assert_eq!(next_event(&mut initial).await?.0, "ADDED");

    let stream = api
        .watch(
            &WatchParams::default()
                .labels("env=prod")
                .disable_bookmarks()
                .timeout(60),
            &rv,
        )
        .await?;
    futures::pin_mut!(stream);
    api.create(&pp, &cluster("a", &[("env", "prod")])?).await?;
    api.create(&pp, &cluster("b", &[("env", "dev")])?).await?;
    // b enters the selection: ADDED; a leaves it: DELETED.
    api.patch(
        "b",
        &patch,
        &Patch::Merge(json!({"metadata": {"labels": {"env": "prod"}}})),
    )
    .await?;
    api.patch(
        "a",
        &patch,
        &Patch::Merge(json!({"metadata": {"labels": {"env": "dev"}}})),
    )
    .await?;
    api.patch(
        "b",
        &patch,
        &Patch::Merge(json!({"spec": {"release": "test-2"}})),
    )
    .await?;
    api.patch(
        "a",
        &patch,
        &Patch::Merge(json!({"spec": {"release": "test-2"}})),
    )
    .await?;
    // A finalized delete is a MODIFIED (deletionTimestamp); the real one a DELETED.
    api.patch(
        "b",
        &patch,
        &Patch::Merge(json!({"metadata": {"finalizers": ["shoal.io/e2e"]}})),
    )
    .await?;
    api.delete("b", &DeleteParams::default()).await?;
    api.patch(
        "b",
        &patch,
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    api.delete("before", &DeleteParams::default()).await?;

    let mut got = Vec::new();
    for _ in 0..8 {
        let (ty, name, labels) = next_event(&mut stream).await?;
        got.push(format!(
            "{ty} {name} env={}",
            labels.get("env").map(String::as_str).unwrap_or("")
        ));
    }
    assert_eq!(
        got,
        [
            "ADDED a env=prod",
            "ADDED b env=prod",
            "DELETED a env=dev",
            "MODIFIED b env=prod",
            "MODIFIED b env=prod",
            "MODIFIED b env=prod",
            "DELETED b env=prod",
            "DELETED before env=prod",
        ]
    );
    // Nothing else: changes to a outside the selection are not sent.
    let extra = tokio::time::timeout(Duration::from_millis(500), stream.try_next()).await;
    ensure!(extra.is_err(), "an extra event: {extra:?}");
    Ok(())
}

/// The next watcher event within 10 s, as a short description.
async fn next_described<S, K>(stream: &mut S) -> Result<String>
where
    S: futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Unpin,
    K: ResourceExt,
{
    let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .context("no watcher event within 10 s")?
        .context("the watcher ended")??;
    Ok(match ev {
        watcher::Event::Init => "Init".into(),
        watcher::Event::InitApply(o) => format!("InitApply {}", o.name_any()),
        watcher::Event::InitDone => "InitDone".into(),
        watcher::Event::Apply(o) => format!(
            "Apply {} {}",
            o.name_any(),
            o.labels().get("n").map(String::as_str).unwrap_or("")
        ),
        watcher::Event::Delete(o) => format!("Delete {}", o.name_any()),
    })
}

#[tokio::test]
async fn streaming_list_and_metadata_watchers() -> Result<()> {
    let (_server, client, api) = setup(&[]).await?;
    let pp = PostParams::default();
    api.create(&pp, &cluster("a", &[])?).await?;
    api.create(&pp, &cluster("b", &[])?).await?;

    // Streaming lists (sendInitialEvents): the initial events end with a
    // bookmark marked k8s.io/initial-events-end, which is what InitDone needs.
    let streaming = watcher(api.clone(), watcher::Config::default().streaming_lists());
    futures::pin_mut!(streaming);
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_described(&mut streaming).await?);
    }
    assert_eq!(got, ["Init", "InitApply a", "InitApply b", "InitDone"]);

    // A metadata-only watcher lists and watches too.
    let meta_api: Api<PartialObjectMeta<Cluster>> = Api::namespaced(client, NS);
    let meta = watcher(meta_api, watcher::Config::default());
    futures::pin_mut!(meta);
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_described(&mut meta).await?);
    }
    assert_eq!(got, ["Init", "InitApply a", "InitApply b", "InitDone"]);

    api.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"n": "1"}}})),
    )
    .await?;
    assert_eq!(next_described(&mut streaming).await?, "Apply b 1");
    assert_eq!(next_described(&mut meta).await?, "Apply b 1");
    api.delete("a", &DeleteParams::default()).await?;
    assert_eq!(next_described(&mut streaming).await?, "Delete a");
    assert_eq!(next_described(&mut meta).await?, "Delete a");
    Ok(())
}

#[tokio::test]
async fn idle_watch_gets_bookmarks() -> Result<()> {
    // No controllers: they would write the cluster (finalizer, status) and the
    // watch would not be idle.
    let (_server, _client, api) =
        setup(&["--bookmark-interval", "1", "--controllers=false"]).await?;
    let created = api
        .create(&PostParams::default(), &cluster("demo", &[])?)
        .await?;
    let rv = created.resource_version().context("no resourceVersion")?;

    // WatchParams asks for bookmarks (allowWatchBookmarks=true) by default.
    let stream = api.watch(&WatchParams::default().timeout(30), &rv).await?;
    futures::pin_mut!(stream);
    let deadline = Duration::from_secs(10);
    let first = tokio::time::timeout(deadline, stream.try_next())
        .await
        .context("no event on an idle watch within 10 s")??
        .context("the watch ended")?;
    match first {
        WatchEvent::Bookmark(b) => {
            let brv: i64 = b.metadata.resource_version.parse()?;
            assert!(
                brv >= rv.parse::<i64>()?,
                "the bookmark is not behind the start: {brv} < {rv}"
            );
        }
        other => bail!("expected a BOOKMARK on an idle watch, got {other:?}"),
    }

    // Without allowWatchBookmarks there are none: a change is the first event.
    let quiet = api
        .watch(&WatchParams::default().disable_bookmarks().timeout(30), &rv)
        .await?;
    futures::pin_mut!(quiet);
    let early = tokio::time::timeout(Duration::from_millis(2500), quiet.try_next()).await;
    ensure!(early.is_err(), "a watch without bookmarks sent {early:?}");
    api.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await?;
    let ev = tokio::time::timeout(deadline, quiet.try_next())
        .await??
        .context("the watch ended")?;
    ensure!(
        matches!(ev, WatchEvent::Modified(ref c) if c.labels().contains_key("x")),
        "{ev:?}"
    );
    Ok(())
}

#[tokio::test]
async fn watch_from_compacted_history_is_gone() -> Result<()> {
    let (_server, _client, api) =
        setup(&["--watch-history", "5", "--compaction-interval", "1"]).await?;
    api.create(&PostParams::default(), &cluster("demo", &[])?)
        .await?;
    for n in 0..12 {
        set_counter(&api, n).await?;
    }
    // Compaction runs every second; poll until revision 1 is gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let outcome = match api.watch(&WatchParams::default().timeout(5), "1").await {
            Err(kube::Error::Api(s)) => Some((s.code, s.reason.clone())),
            Err(e) => return Err(e.into()),
            Ok(stream) => {
                futures::pin_mut!(stream);
                match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
                    Ok(Some(Ok(WatchEvent::Error(s)))) => Some((s.code, s.reason.clone())),
                    // History is still there: an event replayed from revision 1.
                    Ok(Some(Ok(_))) => None,
                    Ok(Some(Err(e))) => return Err(e.into()),
                    Ok(None) | Err(_) => None,
                }
            }
        };
        if let Some((code, reason)) = outcome {
            assert_eq!(code, 410, "{reason}");
            assert_eq!(reason, "Expired");
            break;
        }
        ensure!(Instant::now() < deadline, "revision 1 was never compacted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A watch from the current resourceVersion still works.
    let list = api.list(&ListParams::default()).await?;
    let rv = list
        .metadata
        .resource_version
        .context("no list resourceVersion")?;
    let stream = api.watch(&WatchParams::default().timeout(10), &rv).await?;
    futures::pin_mut!(stream);
    set_counter(&api, 99).await?;
    let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await??
        .context("the watch ended")?;
    ensure!(
        matches!(ev, WatchEvent::Modified(ref c) if c.annotations().get("counter").map(String::as_str) == Some("99")),
        "{ev:?}"
    );
    Ok(())
}
