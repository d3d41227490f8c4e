//! Deleting a cluster, behind its finalizer: remove the node pools and Machines,
//! wait until the agents have stopped every VM, then remove the Secrets and free
//! the network, and say what was removed in the final status and an Event.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use shoal_api::{Cluster, ClusterPhase, Machine, NodePool, RemovedResources};
use shoal_kube::conditions::{self, condition};
use shoal_kube::delete_ignoring_missing;
use shoal_kube::finalizer::{self, Change};

use crate::context::{cluster_selector, Context};
use crate::error::{failed, Error};
use crate::ipam::PoolKind;
use crate::labels::{pki_secret_name, CLUSTER_FINALIZER, SYSTEM_NAMESPACE};
use shoal_api::wellknown::finalizer::AWS as AWS_FINALIZER;

fn merge(into: &mut Vec<String>, names: impl IntoIterator<Item = String>) {
    for n in names {
        if !into.contains(&n) {
            into.push(n);
        }
    }
    into.sort();
}

/// One human sentence of what was removed.
pub fn summary(r: &RemovedResources) -> String {
    let part = |what: &str, list: &[String]| {
        if list.is_empty() {
            None
        } else {
            Some(format!("{} {what} ({})", list.len(), list.join(", ")))
        }
    };
    let parts: Vec<String> = [
        part("machines", &r.machines),
        part("node pools", &r.node_pools),
        part("networks", &r.networks),
        part("secrets", &r.secrets),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "removed nothing: the cluster had no resources yet".into()
    } else {
        format!("removed {}", parts.join("; "))
    }
}

async fn write_status(
    ctx: &Context,
    cluster: &Cluster,
    removed: &RemovedResources,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let mut conds = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions::set(&mut conds, condition("Ready", false, reason, message));
    let patch = json!({"status": {"phase": ClusterPhase::Deleting, "removed": removed, "conditions": conds}});
    Api::<Cluster>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &cluster.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(failed(format!(
            "write the status of cluster {ns}/{}",
            cluster.name_any()
        )))?;
    Ok(())
}

/// One pass of a cluster's deletion; requeues until its Machines are gone.
pub async fn finalize(cluster: &Cluster, ctx: &Context) -> Result<Action, Error> {
    if !finalizer::has(cluster, CLUSTER_FINALIZER) {
        return Ok(Action::await_change());
    }
    // An AWS cluster's VPC keeps its network until the AWS provider has deleted
    // it: only then is the network free for another cluster.
    if finalizer::has(cluster, AWS_FINALIZER) {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let key = format!("{ns}/{name}");
    let mut removed = cluster
        .status
        .as_ref()
        .and_then(|s| s.removed.clone())
        .unwrap_or_default();

    // Node pools first, so that nothing makes new workers.
    let pools_api: Api<NodePool> = Api::namespaced(ctx.client.clone(), &ns);
    let pools = ctx.stores.cluster_pools(&ns, &name);
    for p in pools
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        delete_ignoring_missing(&pools_api, &p.name_any())
            .await
            .map_err(failed(format!("delete node pool {ns}/{}", p.name_any())))?;
    }
    merge(&mut removed.node_pools, pools.iter().map(|p| p.name_any()));

    // Then every Machine; their agents stop the VMs and release them.
    let machines_api: Api<Machine> = Api::namespaced(ctx.client.clone(), &ns);
    let machines = ctx.stores.cluster_machines(&ns, &name);
    for m in machines
        .iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
    {
        delete_ignoring_missing(&machines_api, &m.name_any())
            .await
            .map_err(failed(format!("delete machine {ns}/{}", m.name_any())))?;
    }
    merge(&mut removed.machines, machines.iter().map(|m| m.name_any()));
    if !machines.is_empty() {
        let waiting: Vec<String> = machines.iter().map(|m| m.name_any()).collect();
        write_status(
            ctx,
            cluster,
            &removed,
            "Deleting",
            format!(
                "waiting for {} machines to stop: {}",
                waiting.len(),
                waiting.join(", ")
            ),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    }

    // No VM is left: the Secrets and the network can go.
    let secrets_ns: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let bootstrap = secrets_ns
        .list(&ListParams::default().labels(&cluster_selector(&name)))
        .await
        .map_err(failed(format!("list the secrets of cluster {key}")))?;
    let mut gone = Vec::new();
    for s in bootstrap.items {
        let sname = s.name_any();
        if delete_ignoring_missing(&secrets_ns, &sname)
            .await
            .map_err(failed(format!("delete secret {ns}/{sname}")))?
        {
            gone.push(format!("{ns}/{sname}"));
        }
    }
    let pki = pki_secret_name(&ns, &name);
    let system: Api<Secret> = Api::namespaced(ctx.client.clone(), SYSTEM_NAMESPACE);
    if delete_ignoring_missing(&system, &pki)
        .await
        .map_err(failed(format!("delete secret {SYSTEM_NAMESPACE}/{pki}")))?
    {
        gone.push(format!("{SYSTEM_NAMESPACE}/{pki}"));
    }
    merge(&mut removed.secrets, gone);

    let uid = cluster.uid().unwrap_or_default();
    let claims: Vec<String> = ctx
        .stores
        .leases
        .state()
        .iter()
        .filter(|l| {
            l.labels()
                .get(crate::labels::IPAM_OWNER)
                .map(String::as_str)
                == Some(uid.as_str())
        })
        .map(|l| l.name_any())
        .collect();
    for slot in claims.iter().filter_map(|c| PoolKind::Vpcs.slot_of(c)) {
        ctx.vpcs.release(slot).await?;
        merge(
            &mut removed.networks,
            [format!("vpc {}", ctx.vpcs.pool().cidr(slot))],
        );
    }
    let mut slots: Vec<u32> = claims
        .iter()
        .filter_map(|c| PoolKind::Nodes.slot_of(c))
        .collect();
    if let Some(vni) = cluster.status.as_ref().and_then(|s| s.vni) {
        if let Some(slot) = vni.checked_sub(ctx.ipam.config().vni_base) {
            if !slots.contains(&slot) {
                slots.push(slot);
            }
        }
    }
    for slot in slots {
        ctx.ipam.release(slot).await?;
        let a = ctx.ipam.config().allocation(slot);
        merge(
            &mut removed.networks,
            [format!("vni {} ({})", a.vni, a.node_cidr)],
        );
    }

    ctx.forget_cluster(&uid, &key);
    let message = summary(&removed);
    write_status(ctx, cluster, &removed, "Deleted", message.clone()).await?;
    ctx.event(cluster, false, "Deleted", message.clone()).await;
    tracing::info!(cluster = %key, %message, "cluster deleted");

    let api: Api<Cluster> = Api::namespaced(ctx.client.clone(), &ns);
    match finalizer::remove(&api, cluster, CLUSTER_FINALIZER)
        .await
        .map_err(failed(format!("remove the finalizer of cluster {key}")))?
    {
        // Written meanwhile: everything above is done and idempotent, so look again.
        Change::Conflict => Ok(Action::requeue(Duration::from_millis(200))),
        Change::Done | Change::Unchanged | Change::Gone => Ok(Action::await_change()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_everything() {
        let r = RemovedResources {
            machines: vec!["a-cp-0".into(), "a-w-0".into()],
            node_pools: vec!["a-w".into()],
            secrets: vec!["shoal-system/org-x.a.pki".into()],
            networks: vec!["vni 1000 (10.128.0.0/24)".into()],
            ..Default::default()
        };
        assert_eq!(
            summary(&r),
            "removed 2 machines (a-cp-0, a-w-0); 1 node pools (a-w); 1 networks (vni 1000 (10.128.0.0/24)); 1 secrets (shoal-system/org-x.a.pki)"
        );
    }
}

#[cfg(test)]
mod reconcile_tests {
    use http::Method;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::ObjectMeta;
    use serde_json::json;

    use super::*;
    use crate::fake_api::{self, path, State};
    use crate::labels::CLUSTER;

    /// Cluster `org-x/a`, deleted, still held by its finalizer.
    fn deleted_cluster() -> Cluster {
        let mut c = serde_json::to_value(fake_api::cluster(true)).expect("serialises");
        c["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        c["metadata"]["finalizers"] = json!([CLUSTER_FINALIZER]);
        serde_json::from_value(c).expect("a valid Cluster")
    }

    fn child<K: k8s_openapi::serde::de::DeserializeOwned>(
        kind: &str,
        name: &str,
        spec: serde_json::Value,
    ) -> K {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": "org-x", "uid": format!("uid-{name}")},
            "spec": spec,
        }))
        .expect("a valid child")
    }

    fn pool() -> NodePool {
        child(
            "NodePool",
            "a-w",
            json!({"cluster": "a", "replicas": 1,
            "machine": {"cpu": "1", "memory": "512Mi", "disk": "1Gi"}}),
        )
    }

    fn machine() -> Machine {
        child(
            "Machine",
            "a-cp-0",
            json!({"cluster": "a", "role": "control-plane",
            "release": "test", "size": {"cpu": "1", "memory": "512Mi", "disk": "1Gi"}}),
        )
    }

    fn secret(ns: &str, name: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some([(CLUSTER.to_owned(), "a".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn children_are_deleted_and_the_finalizer_stays_while_machines_remain() {
        let (ctx, api) = fake_api::context(State {
            clusters: vec![deleted_cluster()],
            pools: vec![pool()],
            machines: vec![machine()],
            ..Default::default()
        });
        api.put(&path("clusters", "org-x", "a"), &deleted_cluster());
        api.put(&path("nodepools", "org-x", "a-w"), &pool());
        api.put(&path("machines", "org-x", "a-cp-0"), &machine());

        let action = finalize(&deleted_cluster(), &ctx).await.expect("one pass");

        assert!(
            !api.has(&path("nodepools", "org-x", "a-w")),
            "the pool is deleted"
        );
        assert!(
            !api.has(&path("machines", "org-x", "a-cp-0")),
            "the machine is deleted"
        );
        let cluster = api
            .get(&path("clusters", "org-x", "a"))
            .expect("still there");
        assert_eq!(
            cluster["metadata"]["finalizers"],
            json!([CLUSTER_FINALIZER]),
            "the finalizer stays until the machines are gone"
        );
        assert_eq!(cluster["status"]["conditions"][0]["reason"], "Deleting");
        let msg = cluster["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            msg.contains("waiting for 1 machines to stop: a-cp-0"),
            "{msg}"
        );
        assert!(
            api.calls_to(&Method::DELETE, "/api/v1/").is_empty(),
            "no Secret goes while a VM may still use it"
        );
        assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn with_no_machines_left_secrets_and_network_go_then_the_finalizer() {
        let (ctx, api) = fake_api::context(State {
            clusters: vec![deleted_cluster()],
            ..Default::default()
        });
        api.put(&path("clusters", "org-x", "a"), &deleted_cluster());
        api.put(
            "/api/v1/namespaces/org-x/secrets/a-cp-0-bootstrap",
            &secret("org-x", "a-cp-0-bootstrap"),
        );
        let pki = pki_secret_name("org-x", "a");
        api.put(
            &format!("/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets/{pki}"),
            &secret(SYSTEM_NAMESPACE, &pki),
        );

        let action = finalize(&deleted_cluster(), &ctx).await.expect("one pass");

        assert!(!api.has("/api/v1/namespaces/org-x/secrets/a-cp-0-bootstrap"));
        assert!(!api.has(&format!(
            "/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets/{pki}"
        )));
        let cluster = api
            .get(&path("clusters", "org-x", "a"))
            .expect("the fake keeps it");
        assert_eq!(
            cluster["metadata"]["finalizers"],
            json!([]),
            "the finalizer is removed"
        );
        let removed = &cluster["status"]["removed"];
        assert_eq!(
            removed["secrets"],
            json!([
                "org-x/a-cp-0-bootstrap",
                format!("{SYSTEM_NAMESPACE}/{pki}")
            ])
        );
        assert_eq!(removed["networks"], json!(["vni 1000 (10.128.0.0/24)"]));
        assert_eq!(cluster["status"]["conditions"][0]["reason"], "Deleted");
        // The finalizer is the last write: nothing is left behind it.
        let last = api.calls().last().cloned().expect("requests");
        assert_eq!(
            (last.method, last.path),
            (Method::PATCH, path("clusters", "org-x", "a"))
        );
        assert_eq!(action, Action::await_change());
    }

    #[tokio::test]
    async fn a_deletion_pass_is_idempotent_when_children_are_already_gone() {
        // The caches still show a pool and a machine the API has already deleted.
        let (ctx, api) = fake_api::context(State {
            clusters: vec![deleted_cluster()],
            pools: vec![pool()],
            machines: vec![machine()],
            ..Default::default()
        });
        api.put(&path("clusters", "org-x", "a"), &deleted_cluster());

        let action = finalize(&deleted_cluster(), &ctx)
            .await
            .expect("a 404 is not an error");

        assert_eq!(api.calls_to(&Method::DELETE, "/apis/").len(), 2);
        assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    }
}
