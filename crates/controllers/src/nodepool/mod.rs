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
    if cluster.metadata.deletion_timestamp.is_some() {
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
