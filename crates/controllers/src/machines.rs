//! Creating a guest cluster's Machines: a free slot name and node address, the
//! bootstrap Secret with the Machine's user-data, then the Machine itself.
//!
//! Names are `<prefix>-<slot>` with the lowest free slot, so that a controller
//! that crashed after creating a Machine but before seeing it cannot make a
//! duplicate: the second create of the same name gets `409 AlreadyExists`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use shoal_api::resources::common::{Condition, MachineRole, MachineSize};
use shoal_api::{Cluster, Machine, MachineBootstrap, MachineSpec, Release};
use shoal_kube::conditions;

use crate::addressing::{mac_for, pick_ip};
use crate::context::Context;
use crate::error::{failed, is_conflict, Error};
use crate::labels::{bootstrap_secret_name, slot_of, CLUSTER, NODE_POOL, ROLE};

/// A Machine to create.
pub struct NewMachine<'a> {
    /// Its cluster.
    pub cluster: &'a Cluster,
    /// The cluster's release.
    pub release: &'a Release,
    /// Control plane or worker.
    pub role: MachineRole,
    /// The node pool, for workers.
    pub pool: Option<String>,
    /// Its size.
    pub size: MachineSize,
    /// Names are `<prefix>-<slot>`.
    pub prefix: String,
    /// The object that owns it: the Cluster or the NodePool.
    pub owner: OwnerReference,
}

/// Carries out a rollout plan: each `Create` makes a Machine from `new()`, each
/// `Delete` retires the named Machine in `namespace` (drained first on a Kubernetes
/// release: [`crate::drain::retire`], with the cluster and release `new()` names).
pub async fn apply_plan<'a>(
    ctx: &Context,
    namespace: &str,
    steps: Vec<crate::rollout::Step>,
    new: impl Fn() -> Result<NewMachine<'a>, Error>,
) -> Result<(), Error> {
    for step in steps {
        match step {
            crate::rollout::Step::Create => {
                create(ctx, new()?).await?;
            }
            crate::rollout::Step::Delete(m) => {
                let spec = new()?;
                crate::drain::retire(ctx, spec.cluster, spec.release, namespace, &m).await?
            }
        }
    }
    Ok(())
}

/// The owner reference pointing at `obj`.
pub fn owner_of<K: Resource<DynamicType = ()>>(obj: &K) -> Option<OwnerReference> {
    obj.controller_owner_ref(&())
}

/// The role label's value.
pub fn role_label(role: MachineRole) -> &'static str {
    match role {
        MachineRole::ControlPlane => "control-plane",
        MachineRole::Worker => "worker",
    }
}

/// Creates one Machine and its bootstrap Secret; returns its name.
pub async fn create(ctx: &Context, new: NewMachine<'_>) -> Result<String, Error> {
    let ns = new.cluster.namespace().unwrap_or_default();
    let cluster = new.cluster.name_any();
    let key = format!("{ns}/{cluster}");
    let node_cidr = new
        .cluster
        .status
        .as_ref()
        .and_then(|s| s.node_cidr.clone())
        .ok_or_else(|| Error::NotReady(format!("cluster {key} has no node network yet")))?;

    let lock = ctx.creations(&key);
    let mut recent = lock.lock().await;
    let existing: Vec<Arc<Machine>> = ctx.stores.cluster_machines(&ns, &cluster);
    let (mut names, mut ips) = recent.of();
    for m in &existing {
        names.insert(m.name_any());
        if let Some(ip) = m.spec.ip.as_deref().and_then(|ip| ip.parse().ok()) {
            ips.insert(ip);
        }
    }
    let slot = (0..)
        .find(|n| !names.contains(&format!("{}-{n}", new.prefix)))
        .unwrap_or(0);
    let name = format!("{}-{slot}", new.prefix);
    debug_assert_eq!(slot_of(&name, &new.prefix), Some(slot));
    let ip = pick_ip(&node_cidr, &ips).ok_or_else(|| {
        Error::NotReady(format!(
            "cluster {key}: node network {node_cidr} has no free address; remove Machines or use a larger --node-prefix"
        ))
    })?;
    let user_data = crate::userdata::render(ctx, &new, &name, ip).await?;

    let mut labels = BTreeMap::from([
        (CLUSTER.to_owned(), cluster.clone()),
        (ROLE.to_owned(), role_label(new.role).to_owned()),
    ]);
    if let Some(pool) = &new.pool {
        labels.insert(NODE_POOL.to_owned(), pool.clone());
    }
    let secret_name = bootstrap_secret_name(&name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "value".to_owned(),
            ByteString(user_data.clone().into_bytes()),
        )])),
        type_: Some(shoal_api::wellknown::secret_type::BOOTSTRAP.into()),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {}
        Err(e) if is_conflict(&e) => {
            // Left by an attempt that crashed before its Machine: bring it up to date.
            let patch = json!({"data": {"value": ByteString(user_data.into_bytes())}});
            secrets
                .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(failed(format!("update secret {ns}/{secret_name}")))?;
        }
        Err(e) => return Err(failed(format!("create secret {ns}/{secret_name}"))(e)),
    }

    let mut machine = Machine::new(
        &name,
        MachineSpec {
            cluster: cluster.clone(),
            role: new.role,
            node_pool: new.pool.clone(),
            size: new.size.clone(),
            release: new.release.name_any(),
            host_name: None,
            mac: Some(mac_for(ip)),
            ip: Some(ip.to_string()),
            bootstrap: Some(MachineBootstrap {
                data_secret_name: Some(secret_name),
            }),
            migration: None,
        },
    );
    machine.metadata.namespace = Some(ns.clone());
    machine.metadata.labels = Some(labels);
    machine.metadata.owner_references = Some(vec![new.owner.clone()]);
    let machines: Api<Machine> = Api::namespaced(ctx.client.clone(), &ns);
    recent.remember(name.clone(), ip);
    match machines.create(&PostParams::default(), &machine).await {
        Ok(_) => {
            tracing::info!(machine = %format!("{ns}/{name}"), %ip, role = role_label(new.role), "created machine");
            Ok(name)
        }
        // Someone (an earlier run of this controller) made it: the cache catches up.
        Err(e) if is_conflict(&e) => Ok(name),
        Err(e) => Err(failed(format!("create machine {ns}/{name}"))(e)),
    }
}

/// Failure reasons a new Machine cannot fix: the release or the spec is wrong, so
/// replacing the Machine would only fail again. Such Machines stay, Failed, until
/// the cluster moves to another release.
const PERMANENT_FAILURES: &[&str] = &["ImageNotFound", "InvalidSpec", "ReleaseNotFound"];

/// The phase of a Machine (Pending when it has no status yet).
pub fn phase(m: &Machine) -> shoal_api::MachinePhase {
    m.status.as_ref().and_then(|s| s.phase).unwrap_or_default()
}

/// Why a Machine failed, from its Ready condition.
pub fn failure_reason(m: &Machine) -> Option<&str> {
    let status = m.status.as_ref()?;
    (status.phase == Some(shoal_api::MachinePhase::Failed)).then(|| {
        shoal_kube::conditions::get(&status.conditions, "Ready")
            .map(|c| c.reason.as_str())
            .unwrap_or("Failed")
    })
}

/// The Machines of cluster `namespace/cluster` named `<prefix>-<slot>` that this
/// process created but the cache does not show yet, as members of a rollout set
/// (booting, on the current release), so that a reconcile running before the
/// watch catches up does not create them again.
pub async fn pending_members(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
    prefix: &str,
    cached: &[Arc<Machine>],
) -> Vec<crate::rollout::Member> {
    let lock = ctx.creations(&format!("{namespace}/{cluster}"));
    let mut recent = lock.lock().await;
    let seen: std::collections::BTreeSet<String> = cached.iter().map(|m| m.name_any()).collect();
    recent.confirm(&seen);
    recent
        .pending()
        .into_iter()
        .filter_map(|name| {
            let slot = slot_of(&name, prefix)?;
            Some(crate::rollout::Member {
                name,
                slot,
                ready: false,
                replaceable: false,
                deleting: false,
                current: true,
            })
        })
        .collect()
}

/// A Machine as a member of a rollout set.
pub fn member(m: &Machine, release: &str, prefix: &str) -> crate::rollout::Member {
    crate::rollout::Member {
        name: m.name_any(),
        slot: slot_of(&m.name_any(), prefix).unwrap_or(u32::MAX),
        ready: phase(m) == shoal_api::MachinePhase::Ready,
        replaceable: failure_reason(m).is_some_and(|r| !PERMANENT_FAILURES.contains(&r)),
        deleting: m.metadata.deletion_timestamp.is_some(),
        current: m.spec.release == release,
    }
}

/// Writes `to` and the rest of `status` on the Machine `seen` through the
/// transition table of `shoal-api`, pinned to `seen`'s resourceVersion: a copy
/// that went stale answers 409 and the reconcile retries on a fresh one. A change
/// the table refuses is logged and skipped (`Ok(false)`).
pub async fn set_phase(
    api: &Api<Machine>,
    seen: &Machine,
    to: shoal_api::MachinePhase,
    status: serde_json::Value,
) -> Result<bool, Error> {
    let ns = seen.namespace().unwrap_or_default();
    let name = seen.name_any();
    let patch = match seen.phase_patch(to, status) {
        Ok(p) => p,
        Err(illegal) => {
            tracing::warn!(machine = %format!("{ns}/{name}"), error = %illegal, "phase change refused");
            return Ok(false);
        }
    };
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(failed(format!("set phase {to} of machine {ns}/{name}")))?;
    Ok(true)
}

/// Writes `cond` into the Machine's conditions when it says something new, pinned
/// to the resourceVersion read: the agent writes the same list, and a write that
/// lost the race is left to the next pass, which sees the fresh version.
pub async fn set_condition(ctx: &Context, m: &Machine, cond: Condition) -> Result<(), Error> {
    let mut list = m.status.clone().unwrap_or_default().conditions;
    let before = list.clone();
    let type_ = cond.type_.clone();
    conditions::set(&mut list, cond);
    if conditions::same(&before, &list) {
        return Ok(());
    }
    let ns = m.namespace().unwrap_or_default();
    let name = m.name_any();
    let patch = json!({
        "metadata": {"resourceVersion": m.resource_version()},
        "status": {"conditions": list},
    });
    match Api::<Machine>::namespaced(ctx.client.clone(), &ns)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(failed(format!("record {type_} of machine {ns}/{name}"))(e)),
    }
}
