//! A cluster's status, computed as pure data from its Machines and node pools.

use std::sync::Arc;

use shoal_api::resources::common::{Condition, MachineRole};
use shoal_api::resources::organization::namespace_org;
use shoal_api::{Cluster, ClusterPhase, ClusterStatus, Machine, MachinePhase, NodePool};
use shoal_kube::conditions::{self, condition};

use crate::machines::{failure_reason, phase};

/// The address of a cluster's API through the gateway.
pub fn api_endpoint(cluster: &Cluster, base_domain: &str) -> String {
    format!("https://{}:443", api_host(cluster, base_domain))
}

/// The guest API's server name: `api.<cluster>.<org>.<base-domain>`.
pub fn api_host(cluster: &Cluster, base_domain: &str) -> String {
    let ns = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let org = namespace_org(ns).unwrap_or(ns);
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    format!("api.{name}.{org}.{base_domain}")
}

/// Every Machine is Ready but the API does not answer through the gateway yet: the
/// cluster stays Provisioning, and the Ready condition says why.
pub fn not_answering(status: &mut ClusterStatus, api: &str, why: &str) {
    conditions::set(
        &mut status.conditions,
        condition(
            "Ready",
            false,
            "APINotAnswering",
            format!("every machine is Ready, but https://{api}/readyz does not answer through the gateway yet: {why}"),
        ),
    );
    status.phase = Some(ClusterPhase::Provisioning);
}

/// Says how a group of Machines is doing, for its condition's message.
fn describe(machines: &[&Arc<Machine>], desired: u32, what: &str) -> (bool, String, String) {
    let live: Vec<&&Arc<Machine>> = machines
        .iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .collect();
    let ready = live
        .iter()
        .filter(|m| phase(m) == MachinePhase::Ready)
        .count() as u32;
    if ready >= desired {
        return (
            true,
            "Ready".into(),
            format!("{ready}/{desired} {what} Ready"),
        );
    }
    // The first thing that needs a person's attention, else the first still booting.
    for m in &live {
        if let Some(reason) = failure_reason(m) {
            let msg = m
                .status
                .as_ref()
                .and_then(|s| conditions::get(&s.conditions, "Ready"))
                .map(|c| c.message.clone())
                .unwrap_or_default();
            return (
                false,
                "MachineFailed".into(),
                format!(
                    "{ready}/{desired} {what} Ready; machine {} failed ({reason}): {msg}",
                    m.metadata.name.as_deref().unwrap_or_default()
                ),
            );
        }
    }
    for m in &live {
        if m.spec.host_name.is_none() {
            let why = m
                .status
                .as_ref()
                .and_then(|s| conditions::get(&s.conditions, "Scheduled"))
                .filter(|c| c.status == "False")
                .map(|c| c.message.clone());
            if let Some(why) = why {
                return (
                    false,
                    "Unschedulable".into(),
                    format!(
                        "{ready}/{desired} {what} Ready; machine {} cannot be placed: {why}",
                        m.metadata.name.as_deref().unwrap_or_default()
                    ),
                );
            }
        }
    }
    (
        false,
        "Provisioning".into(),
        format!(
            "{ready}/{desired} {what} Ready; {} being scheduled or booting",
            live.len() as u32 - ready
        ),
    )
}

/// The status the cluster should have, given its release check, Machines and pools.
/// `release` is the Release condition; when it is False nothing is provisioned.
pub fn compute(
    cluster: &Cluster,
    release: Condition,
    machines: &[Arc<Machine>],
    pools: &[Arc<NodePool>],
    base_domain: &str,
) -> ClusterStatus {
    let old = cluster.status.clone().unwrap_or_default();
    let mut status = ClusterStatus {
        conditions: old.conditions.clone(),
        vni: old.vni,
        node_cidr: old.node_cidr.clone(),
        removed: old.removed.clone(),
        ca_certificate: old.ca_certificate.clone(),
        ..Default::default()
    };
    let release_ok = release.status == "True";
    conditions::set(&mut status.conditions, release);
    let cp: Vec<&Arc<Machine>> = machines
        .iter()
        .filter(|m| m.spec.role == MachineRole::ControlPlane)
        .collect();
    let workers: Vec<&Arc<Machine>> = machines
        .iter()
        .filter(|m| m.spec.role == MachineRole::Worker)
        .collect();
    let cp_desired = u32::from(cluster.spec.control_plane.replicas);
    let workers_desired: u32 = pools
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.spec.replicas)
        .sum();
    let (cp_ok, cp_reason, cp_msg) = describe(&cp, cp_desired, "control-plane machines");
    let (w_ok, w_reason, w_msg) = describe(&workers, workers_desired, "workers");
    conditions::set(
        &mut status.conditions,
        condition("ControlPlaneReady", cp_ok, &cp_reason, cp_msg.clone()),
    );
    conditions::set(
        &mut status.conditions,
        condition("NodesReady", w_ok, &w_reason, w_msg.clone()),
    );
    let ready = release_ok && cp_ok && w_ok;
    let ready_msg = if ready {
        "the control plane and every node pool are Ready".to_owned()
    } else if !release_ok {
        "the release cannot be used; see the Release condition".to_owned()
    } else if !cp_ok {
        cp_msg
    } else {
        w_msg
    };
    let ready_reason = if ready {
        "Ready"
    } else if !release_ok {
        "ReleaseInvalid"
    } else if !cp_ok {
        cp_reason.as_str()
    } else {
        w_reason.as_str()
    };
    conditions::set(
        &mut status.conditions,
        condition("Ready", ready, ready_reason, ready_msg),
    );
    let count_ready = |ms: &[&Arc<Machine>]| {
        ms.iter()
            .filter(|m| m.metadata.deletion_timestamp.is_none() && phase(m) == MachinePhase::Ready)
            .count() as u32
    };
    let ready_nodes = count_ready(&cp) + count_ready(&workers);
    let desired_nodes = cp_desired + workers_desired;
    status.ready_nodes = Some(ready_nodes);
    status.desired_nodes = Some(desired_nodes);
    status.nodes = Some(format!("{ready_nodes}/{desired_nodes}"));
    status.api_endpoint = Some(api_endpoint(cluster, base_domain));
    status.observed_generation = cluster.metadata.generation;
    status.phase = Some(if ready {
        ClusterPhase::Ready
    } else if !release_ok || ready_reason == "Unschedulable" || status.vni.is_none() {
        ClusterPhase::Pending
    } else {
        ClusterPhase::Provisioning
    });
    status
}

/// True when `new` says something `old` does not (transition times aside).
pub fn changed(old: Option<&ClusterStatus>, new: &ClusterStatus) -> bool {
    let Some(old) = old else { return true };
    let mut a = old.clone();
    let mut b = new.clone();
    let same_conditions = conditions::same(&a.conditions, &b.conditions);
    a.conditions.clear();
    b.conditions.clear();
    a != b || !same_conditions
}
