//! The node pool controller: keeps `replicas` worker Machines, like a ReplicaSet.
//! It replaces Failed Machines (a lost host, an exited VM), and when the cluster's
//! release changes it rolls the workers one at a time with a surge of one, after
//! the control plane has finished rolling.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use shoal_api::resources::common::MachineRole;
use shoal_api::{Machine, MachinePhase, NodePool, NodePoolStatus};
use shoal_kube::conditions::{self, condition};

use crate::context::Context;
use crate::error::{failed, Error};
use crate::machines::{self, member, phase, NewMachine};
use crate::rollout;

/// Reconciles one NodePool.
pub async fn reconcile(pool: Arc<NodePool>, ctx: Arc<Context>) -> Result<Action, Error> {
    if pool.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    let Some(cluster) = ctx.stores.cluster(&ns, &pool.spec.cluster) else {
        let msg = format!(
            "cluster {:?} does not exist in {ns}; create it or fix spec.cluster",
            pool.spec.cluster
        );
        write_status(
            &ctx,
            &pool,
            0,
            0,
            condition("Ready", false, "ClusterNotFound", msg),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    if cluster.metadata.deletion_timestamp.is_some()
        || cluster.spec.provider.type_ == shoal_api::ProviderType::Aws
    {
        // On AWS the pool is an Auto Scaling Group, which the AWS provider owns.
        return Ok(Action::await_change());
    }
    let machines: Vec<Arc<Machine>> = ctx
        .stores
        .cluster_machines(&ns, &pool.spec.cluster)
        .into_iter()
        .collect();
    let release_name = cluster.spec.release.clone();
    let release = ctx
        .stores
        .releases
        .state()
        .into_iter()
        .find(|r| r.name_any() == release_name);
    let network = cluster.status.as_ref().and_then(|s| s.node_cidr.clone());
    let (Some(release), Some(_)) = (release, network) else {
        let msg = format!(
            "waiting for cluster {} to get a valid release and a network; see its status",
            pool.spec.cluster
        );
        write_status(
            &ctx,
            &pool,
            0,
            0,
            condition("Ready", false, "WaitingForCluster", msg),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    };

    // Workers roll only once the control plane is done.
    let cp_prefix = crate::cluster::control_plane_prefix(&pool.spec.cluster);
    let cp: Vec<_> = machines
        .iter()
        .filter(|m| m.spec.role == MachineRole::ControlPlane)
        .map(|m| member(m, &release_name, &cp_prefix))
        .collect();
    let cp_settled = rollout::settled(&cp, u32::from(cluster.spec.control_plane.replicas));

    let mine: Vec<&Arc<Machine>> = machines
        .iter()
        .filter(|m| m.spec.node_pool.as_deref() == Some(name.as_str()))
        .collect();
    let mut members: Vec<_> = mine
        .iter()
        .map(|m| member(m, &release_name, &name))
        .collect();
    members
        .extend(machines::pending_members(&ctx, &ns, &pool.spec.cluster, &name, &machines).await);
    let steps = rollout::plan(&members, pool.spec.replicas, cp_settled);
    machines::apply_plan(&ctx, &ns, steps, || {
        Ok(NewMachine {
            cluster: &cluster,
            release: &release,
            role: MachineRole::Worker,
            pool: Some(name.clone()),
            size: pool.spec.machine.clone(),
            prefix: name.clone(),
            owner: machines::owner_of(pool.as_ref())
                .ok_or_else(|| Error::NotReady(format!("node pool {ns}/{name} has no uid yet")))?,
        })
    })
    .await?;

    let live: Vec<&&Arc<Machine>> = mine
        .iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .collect();
    let ready = live
        .iter()
        .filter(|m| phase(m) == MachinePhase::Ready)
        .count() as u32;
    let cond = if ready >= pool.spec.replicas && rollout::settled(&members, pool.spec.replicas) {
        condition(
            "Ready",
            true,
            "Ready",
            format!("{ready}/{} Ready", pool.spec.replicas),
        )
    } else if members.iter().any(|m| !m.current && !m.deleting) {
        condition(
            "Ready",
            false,
            "Upgrading",
            format!(
                "{ready}/{} Ready; rolling to release {release_name} one machine at a time",
                pool.spec.replicas
            ),
        )
    } else {
        condition(
            "Ready",
            false,
            "Scaling",
            format!("{ready}/{} Ready", pool.spec.replicas),
        )
    };
    let settled = cond.status == "True";
    write_status(&ctx, &pool, live.len() as u32, ready, cond).await?;
    Ok(Action::requeue(Duration::from_secs(if settled {
        60
    } else {
        10
    })))
}

async fn write_status(
    ctx: &Context,
    pool: &NodePool,
    replicas: u32,
    ready: u32,
    cond: shoal_api::Condition,
) -> Result<(), Error> {
    let old = pool.status.clone().unwrap_or_default();
    let mut next = NodePoolStatus {
        replicas,
        ready_replicas: ready,
        conditions: old.conditions.clone(),
    };
    conditions::set(&mut next.conditions, cond);
    if old.replicas == next.replicas
        && old.ready_replicas == next.ready_replicas
        && conditions::same(&old.conditions, &next.conditions)
    {
        return Ok(());
    }
    let ns = pool.namespace().unwrap_or_default();
    let patch = json!({ "status": next });
    Api::<NodePool>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &pool.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(failed(format!(
            "write the status of node pool {ns}/{}",
            pool.name_any()
        )))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::json;
    use shoal_api::resources::release::{BootstrapFormat, ReleaseSpec, ReleaseState};
    use shoal_api::Release;

    use super::*;
    use crate::fake_api::{self, cluster, path, State};
    use crate::labels::{CLUSTER, NODE_POOL, ROLE};

    fn pool(replicas: u32) -> NodePool {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "NodePool",
            "metadata": {"name": "a-w", "namespace": "org-x", "uid": "pool-uid"},
            "spec": {"cluster": "a", "replicas": replicas,
                     "machine": {"cpu": "1", "memory": "512Mi", "disk": "1Gi"}}
        }))
        .expect("a valid NodePool")
    }

    fn worker(name: &str, ip: &str) -> Machine {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": name, "namespace": "org-x", "uid": format!("uid-{name}"),
                         "labels": {CLUSTER: "a", ROLE: "worker", NODE_POOL: "a-w"}},
            "spec": {"cluster": "a", "role": "worker", "release": "test", "nodePool": "a-w",
                     "size": {"cpu": "1", "memory": "512Mi", "disk": "1Gi"},
                     "hostName": "h1", "ip": ip},
            "status": {"phase": "Ready"}
        }))
        .expect("a valid Machine")
    }

    fn control_plane() -> Machine {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": "a-cp-0", "namespace": "org-x", "uid": "uid-cp",
                         "labels": {CLUSTER: "a", ROLE: "control-plane"}},
            "spec": {"cluster": "a", "role": "control-plane", "release": "test",
                     "size": {"cpu": "1", "memory": "512Mi", "disk": "1Gi"},
                     "hostName": "h1", "ip": "10.128.0.5"},
            "status": {"phase": "Ready"}
        }))
        .expect("a valid Machine")
    }

    fn release() -> Release {
        Release::new(
            "test",
            ReleaseSpec {
                kubernetes_version: "1.31.2".into(),
                state: ReleaseState::Active,
                bootstrap: BootstrapFormat::TestImage,
                ..Default::default()
            },
        )
    }

    #[tokio::test]
    async fn a_pool_one_short_creates_one_worker_owned_by_the_pool() {
        let (ctx, api) = fake_api::context(State {
            clusters: vec![cluster(true)],
            machines: vec![control_plane(), worker("a-w-0", "10.128.0.10")],
            pools: vec![pool(2)],
            releases: vec![release()],
            ..Default::default()
        });
        api.put(&path("nodepools", "org-x", "a-w"), &pool(2));

        let action = reconcile(Arc::new(pool(2)), ctx).await.expect("reconciles");

        let created = api.calls_to(
            &Method::POST,
            "/apis/shoal.io/v1alpha1/namespaces/org-x/machines",
        );
        assert_eq!(created.len(), 1, "one Machine is created: {created:?}");
        let m = &created[0].body;
        assert_eq!(m["metadata"]["name"], "a-w-1", "the next free slot");
        assert_eq!(m["metadata"]["labels"][CLUSTER], "a");
        assert_eq!(m["metadata"]["labels"][ROLE], "worker");
        assert_eq!(m["metadata"]["labels"][NODE_POOL], "a-w");
        let owner = &m["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "NodePool");
        assert_eq!(owner["uid"], "pool-uid");
        assert_eq!(owner["controller"], true);
        assert_eq!(m["spec"]["nodePool"], "a-w");
        assert_ne!(
            m["spec"]["ip"], "10.128.0.10",
            "not the existing worker's address"
        );
        let secret = crate::labels::bootstrap_secret_name("a-w-1");
        assert_eq!(m["spec"]["bootstrap"]["dataSecretName"], secret.as_str());
        assert!(
            api.has(&format!("/api/v1/namespaces/org-x/secrets/{secret}")),
            "its bootstrap Secret is written"
        );
        let status = api
            .get(&path("nodepools", "org-x", "a-w"))
            .expect("the pool")["status"]
            .clone();
        assert_eq!(status["replicas"], 1);
        assert_eq!(status["conditions"][0]["reason"], "Scaling");
        assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    }

    #[tokio::test]
    async fn a_full_pool_creates_nothing_and_is_ready() {
        let (ctx, api) = fake_api::context(State {
            clusters: vec![cluster(true)],
            machines: vec![
                control_plane(),
                worker("a-w-0", "10.128.0.10"),
                worker("a-w-1", "10.128.0.11"),
            ],
            pools: vec![pool(2)],
            releases: vec![release()],
            ..Default::default()
        });
        api.put(&path("nodepools", "org-x", "a-w"), &pool(2));

        let action = reconcile(Arc::new(pool(2)), ctx).await.expect("reconciles");

        assert!(
            api.calls_to(&Method::POST, "/").is_empty(),
            "{:?}",
            api.calls()
        );
        assert!(api.calls_to(&Method::DELETE, "/").is_empty());
        let status = api
            .get(&path("nodepools", "org-x", "a-w"))
            .expect("the pool")["status"]
            .clone();
        assert_eq!(status["readyReplicas"], 2);
        assert_eq!(status["conditions"][0]["reason"], "Ready");
        assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    }

    #[tokio::test]
    async fn a_pool_of_a_missing_cluster_says_which_and_what_to_do() {
        let (ctx, api) = fake_api::context(State {
            pools: vec![pool(2)],
            ..Default::default()
        });
        api.put(&path("nodepools", "org-x", "a-w"), &pool(2));

        let action = reconcile(Arc::new(pool(2)), ctx).await.expect("reconciles");

        assert!(api.calls_to(&Method::POST, "/").is_empty());
        let status = api
            .get(&path("nodepools", "org-x", "a-w"))
            .expect("the pool")["status"]
            .clone();
        let cond = &status["conditions"][0];
        assert_eq!(cond["reason"], "ClusterNotFound");
        assert_eq!(cond["status"], "False");
        let msg = cond["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("\"a\"") && msg.contains("fix spec.cluster"),
            "{msg}"
        );
        assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    }

    #[tokio::test]
    async fn a_failed_status_write_is_an_error_the_policy_requeues() {
        // The pool is not stored: its status PATCH gets a 404.
        let (ctx, _api) = fake_api::context(State {
            pools: vec![pool(2)],
            ..Default::default()
        });
        let p = Arc::new(pool(2));
        let err = reconcile(p.clone(), ctx.clone())
            .await
            .expect_err("the write fails");
        assert!(matches!(err, Error::Api { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("write the status of node pool org-x/a-w"),
            "{err}"
        );
        let key = crate::backoff::key_of(p.as_ref());
        let action = crate::error_policy(p.clone(), &err, ctx.clone());
        assert!(
            format!("{action:?}").contains("requeue_after: Some("),
            "{action:?}"
        );
        assert_ne!(action, Action::await_change());
        crate::error_policy(p, &err, ctx.clone());
        assert_eq!(
            ctx.backoff.failures(&key),
            2,
            "each failure counts towards the backoff"
        );
    }

    #[tokio::test]
    async fn a_worker_failed_on_a_lost_host_is_replaced() {
        let mut lost = serde_json::to_value(worker("a-w-0", "10.128.0.10")).expect("serialises");
        lost["status"] = json!({"phase": "Failed", "conditions": [{
            "type": "Ready", "status": "False", "reason": "HostLost",
            "message": "host h1 has sent no heartbeat", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        let lost: Machine = serde_json::from_value(lost).expect("a valid Machine");
        let (ctx, api) = fake_api::context(State {
            clusters: vec![cluster(true)],
            machines: vec![control_plane(), lost.clone()],
            pools: vec![pool(1)],
            releases: vec![release()],
            ..Default::default()
        });
        api.put(&path("nodepools", "org-x", "a-w"), &pool(1));
        api.put(&path("machines", "org-x", "a-w-0"), &lost);

        reconcile(Arc::new(pool(1)), ctx).await.expect("reconciles");

        let created = api.calls_to(
            &Method::POST,
            "/apis/shoal.io/v1alpha1/namespaces/org-x/machines",
        );
        assert_eq!(created.len(), 1, "a replacement: {created:?}");
        assert_eq!(created[0].body["metadata"]["labels"][NODE_POOL], "a-w");
        assert_ne!(created[0].body["metadata"]["name"], "a-w-0");
        assert!(
            !api.has(&path("machines", "org-x", "a-w-0")),
            "the failed one is deleted"
        );
    }
}
