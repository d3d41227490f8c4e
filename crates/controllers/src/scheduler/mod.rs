//! The scheduler: puts each Machine without a host on a Ready, schedulable Host
//! with room for it, spreading each cluster's control plane over hosts. When
//! nothing fits, the Machine stays Pending with a `Scheduled=False` condition
//! that says what it needs and what the largest free host has.

pub mod place;
pub mod usage;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use shoal_api::resources::common::MachineRole;
use shoal_api::{Host, Machine, MachinePhase};
use shoal_kube::conditions;

use crate::context::Context;
use crate::error::{failed, is_conflict, Error};
use place::{HostView, Request, Resources};

/// Placements made but not yet seen in the Machine cache, so that two Machines
/// placed back to back do not both count the same free room.
#[derive(Default)]
pub struct Assumed {
    placed: HashMap<String, (Instant, String, Request)>,
}

const ASSUME_TTL: Duration = Duration::from_secs(30);

/// What a Machine asks for.
pub fn needs(m: &Machine) -> Resources {
    Resources {
        cpu_millis: m.spec.size.cpu.as_millis(),
        memory: m.spec.size.memory.as_bytes(),
        disk: m.spec.size.disk.as_bytes(),
    }
}

fn key(m: &Machine) -> String {
    format!("{}/{}", m.namespace().unwrap_or_default(), m.name_any())
}

fn cluster_key(m: &Machine) -> String {
    format!("{}/{}", m.namespace().unwrap_or_default(), m.spec.cluster)
}

fn host_ready(h: &Host) -> bool {
    h.status
        .as_ref()
        .and_then(|s| conditions::get(&s.conditions, "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn totals(t: &shoal_api::resources::common::ResourceTotals) -> Resources {
    Resources {
        cpu_millis: t.cpu.as_ref().map(|q| q.as_millis()).unwrap_or(0),
        memory: t.memory.as_ref().map(|q| q.as_bytes()).unwrap_or(0),
        disk: t.disk.as_ref().map(|q| q.as_bytes()).unwrap_or(0),
    }
}

/// Whether a Machine still holds room on its host: every Machine that is assigned
/// and has not failed (a failed VM is stopped).
pub fn holds_room(m: &Machine) -> bool {
    !matches!(
        m.status.as_ref().and_then(|s| s.phase),
        Some(shoal_api::resources::machine::MachinePhase::Failed)
    )
}

/// The scheduler's view of every host, from the caches plus assumed placements.
/// Spreading counts are kept for cluster `for_cluster` (`namespace/name`) only.
///
/// Its cost is the number of hosts, the cluster's own Machines and the assumed
/// placements: what the hosts' Machines take is kept by the Machine watch
/// ([`usage::HostUsage`]), not summed here.
pub fn host_views(ctx: &Context, assumed: &mut Assumed, for_cluster: &str) -> Vec<HostView> {
    let usage = &ctx.stores.indexes.usage;
    let now = Instant::now();
    // Placements the cache shows now need no assuming any more.
    assumed
        .placed
        .retain(|k, (at, _, _)| now.duration_since(*at) < ASSUME_TTL && !usage.is_assigned(k));
    let allocated = usage.by_host();
    let mut views: Vec<HostView> = ctx
        .stores
        .hosts
        .state()
        .iter()
        .map(|h| {
            let name = h.name_any();
            HostView {
                ready: host_ready(h),
                unschedulable: h.spec.unschedulable,
                allocatable: h
                    .status
                    .as_ref()
                    .map(|s| totals(&s.allocatable))
                    .unwrap_or_default(),
                allocated: allocated.get(&name).copied().unwrap_or_default(),
                per_cluster: Default::default(),
                name,
            }
        })
        .collect();
    let by_name: HashMap<String, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.clone(), i))
        .collect();
    let (ns, cluster) = for_cluster.split_once('/').unwrap_or(("", for_cluster));
    let mut spread = |host: &str, role: MachineRole| {
        if let Some(&i) = by_name.get(host) {
            *views[i]
                .per_cluster
                .entry((for_cluster.to_owned(), role == MachineRole::ControlPlane))
                .or_insert(0) += 1;
        }
    };
    for m in ctx.stores.cluster_machines(ns, cluster) {
        if let Some(host) = &m.spec.host_name {
            if holds_room(&m) {
                spread(host, m.spec.role);
            }
        }
    }
    for (host, req) in assumed.placed.values().map(|(_, h, r)| (h, r)) {
        if req.cluster == for_cluster {
            spread(host, req.role);
        }
    }
    for (host, req) in assumed.placed.values().map(|(_, h, r)| (h, r)) {
        if let Some(&i) = by_name.get(host.as_str()) {
            views[i].allocated.add(req.needs);
        }
    }
    views
}

/// Reconciles one Machine: places it if it has no host yet.
pub async fn reconcile(m: Arc<Machine>, ctx: Arc<Context>) -> Result<Action, Error> {
    if m.spec.host_name.is_some() || m.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = m.namespace().unwrap_or_default();
    let name = m.name_any();
    let api: Api<Machine> = Api::namespaced(ctx.client.clone(), &ns);
    let req = Request {
        cluster: cluster_key(&m),
        role: m.spec.role,
        needs: needs(&m),
    };
    // Decide under the lock, and record the placement before writing it, so that
    // placements run in parallel without counting the same room twice.
    let decision = {
        let mut assumed = ctx.assumed.lock().await;
        let views = host_views(&ctx, &mut assumed, &req.cluster);
        let decision = place::place(&req, &views);
        if let Ok(host) = &decision {
            assumed
                .placed
                .insert(key(&m), (Instant::now(), host.clone(), req.clone()));
        }
        decision
    };
    match decision {
        Ok(host) => {
            // The resourceVersion makes this a compare-and-swap: a Machine changed
            // (or placed) meanwhile is not overwritten.
            let patch = json!({
                "metadata": {"resourceVersion": m.resource_version()},
                "spec": {"hostName": host},
            });
            let result = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            if let Err(e) = result {
                ctx.assumed.lock().await.placed.remove(&key(&m));
                if is_conflict(&e) {
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                return Err(failed(format!("assign machine {ns}/{name} to {host}"))(e));
            }
            // Only a Machine that was reported unschedulable needs its condition
            // turned; the agent reports the rest.
            let was_pending = m
                .status
                .as_ref()
                .and_then(|s| conditions::get(&s.conditions, "Scheduled"))
                .is_some_and(|c| c.status == "False");
            if was_pending {
                let status = json!({"status": {"conditions": [conditions::condition(
                    "Scheduled", true, "Scheduled", format!("assigned to host {host}"))]}});
                set_scheduled(&api, &m, status, None).await?;
            }
            tracing::info!(machine = %format!("{ns}/{name}"), %host, "scheduled");
            Ok(Action::await_change())
        }
        Err(why) => {
            let already = m
                .status
                .as_ref()
                .and_then(|s| conditions::get(&s.conditions, "Scheduled"))
                .is_some_and(|c| c.status == "False" && c.message == why.0);
            if !already {
                let status = json!({"status": {"conditions": [conditions::condition(
                    "Scheduled", false, "Unschedulable", why.0.clone())]}});
                set_scheduled(&api, &m, status, Some(MachinePhase::Pending)).await?;
                ctx.event(m.as_ref(), true, "FailedScheduling", why.0.clone())
                    .await;
                tracing::info!(machine = %format!("{ns}/{name}"), reason = %why, "unschedulable");
            }
            // Hosts come and go: try again soon even without a change.
            Ok(Action::requeue(Duration::from_secs(5)))
        }
    }
}

/// Writes the Scheduled condition, keeping the Machine's other conditions, and
/// `phase` through the transition table when given.
async fn set_scheduled(
    api: &Api<Machine>,
    m: &Machine,
    patch: serde_json::Value,
    phase: Option<MachinePhase>,
) -> Result<(), Error> {
    let mut conds = m
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let new: Vec<shoal_api::resources::common::Condition> =
        serde_json::from_value(patch["status"]["conditions"].clone()).unwrap_or_default();
    for c in new {
        conditions::set(&mut conds, c);
    }
    let mut patch = patch;
    patch["status"]["conditions"] = json!(conds);
    if let Some(phase) = phase {
        crate::machines::set_phase(api, m, phase, patch["status"].take()).await?;
        return Ok(());
    }
    let name = m.name_any();
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_err(&name))?;
    Ok(())
}

fn api_err(name: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
    move |e| failed(format!("write the status of machine {name}"))(e)
}

#[cfg(test)]
mod reconcile_tests {
    use http::Method;
    use serde_json::json;

    use super::*;
    use crate::fake_api::{self, path, State};

    fn host(name: &str, ready: bool, cpu: &str) -> shoal_api::Host {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Host",
            "metadata": {"name": name, "uid": format!("uid-{name}")},
            "spec": {},
            "status": {
                "allocatable": {"cpu": cpu, "memory": "8Gi", "disk": "100Gi"},
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                "reason": "Heartbeat", "message": "",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}]
            }
        }))
        .expect("a valid Host")
    }

    fn unplaced() -> Machine {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": "a-w-0", "namespace": "org-x", "uid": "uid-m",
                         "resourceVersion": "7"},
            "spec": {"cluster": "a", "role": "worker", "release": "test",
                     "size": {"cpu": "2", "memory": "1Gi", "disk": "10Gi"}}
        }))
        .expect("a valid Machine")
    }

    #[tokio::test]
    async fn a_machine_goes_to_the_ready_host_with_room_by_compare_and_swap() {
        let (ctx, api) = fake_api::context(State {
            hosts: vec![
                host("small", true, "1"),
                host("down", false, "64"),
                host("big", true, "8"),
            ],
            machines: vec![unplaced()],
            ..Default::default()
        });
        api.put(&path("machines", "org-x", "a-w-0"), &unplaced());

        let action = reconcile(Arc::new(unplaced()), ctx)
            .await
            .expect("reconciles");

        let patches = api.calls_to(&Method::PATCH, &path("machines", "org-x", "a-w-0"));
        assert_eq!(patches.len(), 1, "{patches:?}");
        assert_eq!(patches[0].body["spec"]["hostName"], "big");
        assert_eq!(patches[0].body["metadata"]["resourceVersion"], "7");
        assert_eq!(action, Action::await_change());
    }

    #[tokio::test]
    async fn a_machine_with_no_room_anywhere_is_pending_and_says_why() {
        let (ctx, api) = fake_api::context(State {
            hosts: vec![host("small", true, "1")],
            machines: vec![unplaced()],
            ..Default::default()
        });
        api.put(&path("machines", "org-x", "a-w-0"), &unplaced());

        let action = reconcile(Arc::new(unplaced()), ctx)
            .await
            .expect("reconciles");

        let m = api
            .get(&path("machines", "org-x", "a-w-0"))
            .expect("the machine");
        assert!(m["spec"]["hostName"].is_null(), "not placed");
        assert_eq!(m["status"]["phase"], "Pending");
        let cond = &m["status"]["conditions"][0];
        assert_eq!(
            (&cond["type"], &cond["status"]),
            (&json!("Scheduled"), &json!("False"))
        );
        assert_eq!(cond["reason"], "Unschedulable");
        assert!(cond["message"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(
            !api.calls_to(&Method::POST, "/apis/events.k8s.io/")
                .is_empty(),
            "a FailedScheduling Event is recorded"
        );
        assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    }
}
