//! Host drain: empties a Host whose `spec.drain` asks for it.
//!
//! With `mode: Migrate` each Machine on the host is given a target host that fits
//! it (`spec.migration.targetHost`, chosen as the scheduler would place it) and the
//! host agents live-migrate its VM. A migration that fails is recorded in
//! `status.drain.failures` and the Machine tries another target, up to
//! [`MAX_TARGETS`]; when none is left the drain is blocked and says why. A Machine
//! that no host has room for at all is replaced instead: deleted, so that its node
//! pool or cluster recreates it elsewhere (control planes only with
//! `includeControlPlane`). `mode: Replace` replaces them all that way.
//!
//! The `Drained` condition tells where the drain is: `True` once no Machine is
//! left, `False` with reason `Draining` (what is still moving) or `DrainBlocked`
//! (what cannot leave, and what to do).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use shoal_api::resources::common::MachineRole;
use shoal_api::{
    DrainFailure, DrainMode, Host, HostDrain, HostDrainStatus, Machine, MachinePhase,
    MigrationState,
};
use shoal_kube::conditions::{self, condition};

use crate::context::Context;
use crate::error::{failed, Error};
use crate::machines::phase;
use crate::scheduler::place::{place, HostView, Request, Resources};
use crate::scheduler::{host_views, needs, Assumed};

/// The Host condition this module owns.
pub const DRAINED: &str = "Drained";

/// How many target hosts one Machine tries per drain request.
pub const MAX_TARGETS: usize = 3;

/// How often a drain in progress is looked at again, besides its Machines' changes.
const RECHECK: Duration = Duration::from_secs(3);

/// What to do with one Machine on a draining host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask the host agents to live-migrate it to this host.
    Migrate(String),
    /// Delete it, so that its node pool or cluster recreates it elsewhere; why.
    Replace(String),
    /// It is on its way (moving, deleted, or not started yet): what it waits for.
    Wait(String),
    /// It cannot leave: why, and what to do.
    Blocked(String),
}

fn key(m: &Machine) -> String {
    format!("{}/{}", m.namespace().unwrap_or_default(), m.name_any())
}

/// Deletes `m` unless it is a control plane the drain must keep.
fn replace_or_keep(m: &Machine, drain: &HostDrain, why: String) -> Step {
    if m.spec.role == MachineRole::ControlPlane && !drain.include_control_plane {
        Step::Blocked(format!(
            "control-plane machine {} stays: {why}; add a host with room, or drain with \
             --replace --include-control-plane (its cluster recreates it elsewhere)",
            key(m)
        ))
    } else {
        Step::Replace(why)
    }
}

/// Decides the next step for Machine `m` of draining host `host`, given the
/// migrations of it that failed during this drain and the hosts as the scheduler
/// sees them for its cluster.
pub fn step(
    m: &Machine,
    host: &str,
    drain: &HostDrain,
    failures: &[DrainFailure],
    views: &[HostView],
) -> Step {
    if m.metadata.deletion_timestamp.is_some() {
        return Step::Wait("being deleted".into());
    }
    if drain.mode == DrainMode::Replace {
        return replace_or_keep(m, drain, "the drain replaces machines".into());
    }
    if let Some(req) = &m.spec.migration {
        return Step::Wait(format!("moving to {}", req.target_host));
    }
    match phase(m) {
        MachinePhase::Failed => {
            return replace_or_keep(m, drain, "it failed, so there is no VM to move".into())
        }
        MachinePhase::Ready | MachinePhase::Running | MachinePhase::Migrating => {}
        other => return Step::Wait(format!("its VM is not running yet ({other:?})")),
    }
    let me = key(m);
    let tried: Vec<&DrainFailure> = failures.iter().filter(|f| f.machine == me).collect();
    let failed_on = || {
        tried
            .iter()
            .map(|f| format!("{} ({})", f.target_host, f.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if tried.len() >= MAX_TARGETS {
        return Step::Blocked(format!(
            "{me} did not move to {}; it still runs on {host}. Drain again to retry, or \
             with --replace",
            failed_on()
        ));
    }
    let candidates: Vec<HostView> = views
        .iter()
        .filter(|v| v.name != host && !tried.iter().any(|f| f.target_host == v.name))
        .cloned()
        .collect();
    let req = Request {
        cluster: format!("{}/{}", m.namespace().unwrap_or_default(), m.spec.cluster),
        role: m.spec.role,
        needs: needs(m),
    };
    match place(&req, &candidates) {
        Ok(target) => Step::Migrate(target),
        Err(why) if tried.is_empty() => replace_or_keep(
            m,
            drain,
            format!("no other host has room to migrate it ({why})"),
        ),
        Err(why) => Step::Blocked(format!(
            "{me} did not move to {}; no other host fits it ({why}); it still runs on \
             {host}. Drain again to retry, or with --replace",
            failed_on()
        )),
    }
}

/// Records the live migrations away from `host` that failed since the last look.
pub fn note_failures(machines: &[Arc<Machine>], host: &str, status: &mut HostDrainStatus) {
    for m in machines {
        if m.spec.migration.is_some() {
            continue;
        }
        let Some(st) = m.status.as_ref().and_then(|s| s.migration.as_ref()) else {
            continue;
        };
        if st.state != MigrationState::Failed || st.source_host != host {
            continue;
        }
        let machine = key(m);
        let known = status
            .failures
            .iter()
            .any(|f| f.machine == machine && f.target_host == st.target_host);
        if !known {
            status.failures.push(DrainFailure {
                machine,
                target_host: st.target_host.clone(),
                message: st.message.clone().unwrap_or_default(),
            });
        }
    }
}

/// The `Drained` condition for these steps: `(status, reason, message)`.
pub fn verdict(host: &str, steps: &[(String, Step)]) -> (bool, &'static str, String) {
    if steps.is_empty() {
        return (true, "Drained", format!("no machines left on {host}"));
    }
    let blocked: Vec<&str> = steps
        .iter()
        .filter_map(|(_, s)| match s {
            Step::Blocked(why) => Some(why.as_str()),
            _ => None,
        })
        .collect();
    let doing: Vec<String> = steps
        .iter()
        .filter_map(|(m, s)| match s {
            Step::Migrate(t) => Some(format!("{m} (moving to {t})")),
            Step::Replace(_) => Some(format!("{m} (replaced)")),
            Step::Wait(what) => Some(format!("{m} ({what})")),
            Step::Blocked(_) => None,
        })
        .collect();
    if !blocked.is_empty() {
        let mut msg = blocked.join("; ");
        if !doing.is_empty() {
            msg.push_str(&format!("; also left: {}", doing.join(", ")));
        }
        return (false, "DrainBlocked", msg);
    }
    (
        false,
        "Draining",
        format!("{} machines left: {}", doing.len(), doing.join(", ")),
    )
}

/// Reconciles one Host: carries its drain one step further.
pub async fn reconcile(host: Arc<Host>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = host.name_any();
    let current = host.status.clone().unwrap_or_default();
    let Some(drain) = host.spec.drain.clone() else {
        if current.drain.is_some() || conditions::get(&current.conditions, DRAINED).is_some() {
            let mut conds = current.conditions.clone();
            conds.retain(|c| c.type_ != DRAINED);
            write_status(&ctx, &name, json!({"conditions": conds, "drain": null})).await?;
        }
        return Ok(Action::await_change());
    };
    let on_host: Vec<Arc<Machine>> = ctx
        .stores
        .machines
        .state()
        .into_iter()
        .filter(|m| m.spec.host_name.as_deref() == Some(name.as_str()))
        .collect();
    let seen = current
        .drain
        .clone()
        .filter(|d| d.requested_at == drain.requested_at);
    let fresh = seen.is_none();
    let mut status = seen.unwrap_or_else(|| HostDrainStatus {
        requested_at: drain.requested_at.clone(),
        ..Default::default()
    });
    // A new request starts with a clean slate: the failures the Machines still
    // show are from before it, and their targets are tried again.
    if !fresh {
        note_failures(&on_host, &name, &mut status);
    }
    status.remaining = u32::try_from(on_host.len()).unwrap_or(u32::MAX);

    // Targets chosen in this pass take their room before the next Machine's choice.
    let mut taken: HashMap<String, Resources> = HashMap::new();
    let mut steps = Vec::new();
    for m in &on_host {
        let cluster = format!("{}/{}", m.namespace().unwrap_or_default(), m.spec.cluster);
        let mut views = host_views(&ctx, &mut Assumed::default(), &cluster);
        for v in &mut views {
            if let Some(r) = taken.get(&v.name) {
                v.allocated.add(*r);
            }
        }
        let s = step(m, &name, &drain, &status.failures, &views);
        match &s {
            Step::Migrate(target) => {
                ask_migration(&ctx, m, target).await?;
                taken.entry(target.clone()).or_default().add(needs(m));
            }
            Step::Replace(why) => replace(&ctx, m, &name, why).await?,
            Step::Wait(_) | Step::Blocked(_) => {}
        }
        steps.push((key(m), s));
    }

    let (done, reason, message) = verdict(&name, &steps);
    let before = conditions::get(&current.conditions, DRAINED).cloned();
    let mut conds = current.conditions.clone();
    conditions::set(
        &mut conds,
        condition(DRAINED, done, reason, message.clone()),
    );
    if !conditions::same(&conds, &current.conditions) || current.drain.as_ref() != Some(&status) {
        write_status(&ctx, &name, json!({"conditions": conds, "drain": status})).await?;
        let changed = before.is_none_or(|c| c.reason != reason);
        if changed && reason != "Draining" {
            ctx.event(host.as_ref(), reason == "DrainBlocked", reason, message)
                .await;
        }
    }
    Ok(if done {
        Action::await_change()
    } else {
        Action::requeue(RECHECK)
    })
}

async fn write_status(ctx: &Context, host: &str, status: serde_json::Value) -> Result<(), Error> {
    Api::<Host>::all(ctx.client.clone())
        .patch_status(
            host,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .map_err(failed(format!("write the drain status of host {host}")))?;
    Ok(())
}

async fn ask_migration(ctx: &Context, m: &Machine, target: &str) -> Result<(), Error> {
    let api: Api<Machine> = Api::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default());
    // Pinned to the Machine as this cache saw it: a cache that has not caught up
    // with an earlier request gets a conflict (and a retry) instead of a second one.
    let patch = json!({
        "metadata": {"resourceVersion": m.metadata.resource_version},
        "spec": {"migration": {"targetHost": target}},
    });
    api.patch(
        &m.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(failed(format!(
        "ask machine {} to move to {target}",
        key(m)
    )))?;
    tracing::info!(machine = %key(m), %target, "drain: live-migrating");
    ctx.event(
        m,
        false,
        "DrainMigrate",
        format!("draining its host: live-migrating to {target}"),
    )
    .await;
    Ok(())
}

async fn replace(ctx: &Context, m: &Machine, host: &str, why: &str) -> Result<(), Error> {
    let api: Api<Machine> = Api::namespaced(ctx.client.clone(), &m.namespace().unwrap_or_default());
    match api.delete(&m.name_any(), &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
        Err(e) => return Err(failed(format!("delete machine {}", key(m)))(e)),
    }
    tracing::info!(machine = %key(m), %host, %why, "drain: replacing");
    ctx.event(
        m,
        false,
        "DrainReplace",
        format!("draining host {host}: deleted so that it is recreated elsewhere ({why})"),
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::fake_api::{self, path, State};

    fn view(name: &str, free_gib: u64, cordoned: bool) -> HostView {
        HostView {
            name: name.into(),
            ready: true,
            unschedulable: cordoned,
            allocatable: Resources {
                cpu_millis: 8000,
                memory: free_gib << 30,
                disk: 100 << 30,
            },
            allocated: Resources::default(),
            per_cluster: Default::default(),
        }
    }

    fn machine(name: &str, role: &str, mem: &str, phase: &str) -> Machine {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": name, "namespace": "org-x", "uid": format!("uid-{name}"),
                         "resourceVersion": "3"},
            "spec": {"cluster": "a", "role": role, "release": "test", "hostName": "h1",
                     "size": {"cpu": "1", "memory": mem, "disk": "1Gi"}},
            "status": {"phase": phase}
        }))
        .expect("a valid Machine")
    }

    fn failure(machine: &str, target: &str) -> DrainFailure {
        DrainFailure {
            machine: format!("org-x/{machine}"),
            target_host: target.into(),
            message: format!("MigrationFailed: {target} went away"),
        }
    }

    fn migrate() -> HostDrain {
        HostDrain::default()
    }

    #[test]
    fn a_running_machine_moves_to_a_host_with_room_and_skips_targets_that_failed() {
        let views = [
            view("h1", 64, true),
            view("h2", 8, false),
            view("h3", 4, false),
        ];
        let m = machine("w0", "worker", "1Gi", "Ready");
        assert_eq!(
            step(&m, "h1", &migrate(), &[], &views),
            Step::Migrate("h2".into()),
            "the roomiest, never the drained host itself"
        );
        assert_eq!(
            step(&m, "h1", &migrate(), &[failure("w0", "h2")], &views),
            Step::Migrate("h3".into())
        );
        let Step::Blocked(why) = step(
            &m,
            "h1",
            &migrate(),
            &[failure("w0", "h2"), failure("w0", "h3")],
            &views,
        ) else {
            panic!("no target is left");
        };
        assert!(
            why.contains("did not move to h2 (MigrationFailed: h2 went away); h3")
                && why.contains("still runs on h1")
                && why.contains("--replace"),
            "{why}"
        );
        // Another Machine's failures are not this one's.
        assert_eq!(
            step(&m, "h1", &migrate(), &[failure("w9", "h2")], &views),
            Step::Migrate("h2".into())
        );
    }

    #[test]
    fn a_machine_no_host_has_room_for_is_replaced_but_a_control_plane_only_when_asked() {
        let views = [view("h1", 64, true), view("h2", 1, false)];
        let worker = machine("w0", "worker", "4Gi", "Ready");
        let Step::Replace(why) = step(&worker, "h1", &migrate(), &[], &views) else {
            panic!("a worker is replaced");
        };
        assert!(why.contains("no other host has room"), "{why}");
        let cp = machine("cp0", "control-plane", "4Gi", "Ready");
        let Step::Blocked(why) = step(&cp, "h1", &migrate(), &[], &views) else {
            panic!("a control plane stays");
        };
        assert!(why.contains("--include-control-plane"), "{why}");
        let with_cp = HostDrain {
            include_control_plane: true,
            ..migrate()
        };
        assert!(matches!(
            step(&cp, "h1", &with_cp, &[], &views),
            Step::Replace(_)
        ));
    }

    #[test]
    fn replace_mode_moving_deleted_and_booting_machines() {
        let views = [view("h1", 64, true), view("h2", 8, false)];
        let replace = HostDrain {
            mode: DrainMode::Replace,
            ..migrate()
        };
        let w = machine("w0", "worker", "1Gi", "Ready");
        assert!(matches!(
            step(&w, "h1", &replace, &[], &views),
            Step::Replace(_)
        ));
        let cp = machine("cp0", "control-plane", "1Gi", "Ready");
        assert!(matches!(
            step(&cp, "h1", &replace, &[], &views),
            Step::Blocked(_)
        ));

        let mut moving = w.clone();
        moving.spec.migration = Some(shoal_api::MigrationRequest {
            target_host: "h2".into(),
        });
        assert_eq!(
            step(&moving, "h1", &migrate(), &[], &views),
            Step::Wait("moving to h2".into())
        );
        let booting = machine("w1", "worker", "1Gi", "Provisioning");
        assert!(matches!(
            step(&booting, "h1", &migrate(), &[], &views),
            Step::Wait(_)
        ));
        let failed = machine("w2", "worker", "1Gi", "Failed");
        assert!(matches!(
            step(&failed, "h1", &migrate(), &[], &views),
            Step::Replace(_)
        ));
    }

    #[test]
    fn failed_migrations_are_noted_once_each() {
        let mut m = machine("w0", "worker", "1Gi", "Ready");
        m.status.get_or_insert_with(Default::default).migration = Some(
            serde_json::from_value(json!({"sourceHost": "h1", "targetHost": "h2",
                "state": "Failed", "message": "MigrationFailed: Broken pipe"}))
            .expect("a migration status"),
        );
        let ms = vec![Arc::new(m)];
        let mut st = HostDrainStatus::default();
        note_failures(&ms, "h1", &mut st);
        note_failures(&ms, "h1", &mut st);
        assert_eq!(st.failures.len(), 1);
        assert_eq!(st.failures[0].target_host, "h2");
        assert_eq!(st.failures[0].message, "MigrationFailed: Broken pipe");
        // Seen from another host it is not this drain's failure.
        let mut other = HostDrainStatus::default();
        note_failures(&ms, "h3", &mut other);
        assert!(other.failures.is_empty());
    }

    fn host(name: &str, drain: Option<HostDrain>) -> Host {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Host",
            "metadata": {"name": name, "uid": format!("uid-{name}")},
            "spec": {"unschedulable": drain.is_some(), "drain": drain},
            "status": {
                "allocatable": {"cpu": "8", "memory": "16Gi", "disk": "100Gi"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "AgentRunning",
                                "message": ""}]}
        }))
        .expect("a valid Host")
    }

    #[tokio::test]
    async fn replace_deletes_workers_and_reports_the_control_plane_it_keeps() {
        let h1 = host(
            "h1",
            Some(HostDrain {
                mode: DrainMode::Replace,
                ..migrate()
            }),
        );
        let machines = vec![
            machine("w0", "worker", "1Gi", "Ready"),
            machine("cp0", "control-plane", "1Gi", "Ready"),
        ];
        let (ctx, api) = fake_api::context(State {
            hosts: vec![h1.clone(), host("h2", None)],
            machines: machines.clone(),
            ..Default::default()
        });
        api.put("/apis/shoal.io/v1alpha1/hosts/h1", &h1);
        for m in &machines {
            api.put(&path("machines", "org-x", &m.name_any()), m);
        }

        reconcile(Arc::new(h1), ctx).await.expect("reconciles");

        assert!(
            !api.has(&path("machines", "org-x", "w0")),
            "the worker is deleted"
        );
        let cp = api.get(&path("machines", "org-x", "cp0")).expect("kept");
        assert!(cp["spec"].get("migration").is_none(), "nor migrated");
        let h = api
            .get("/apis/shoal.io/v1alpha1/hosts/h1")
            .expect("the host");
        let drained = h["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == DRAINED).cloned())
            .expect("a Drained condition");
        assert_eq!(drained["reason"], "DrainBlocked");
        let msg = drained["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("org-x/cp0") && msg.contains("--include-control-plane"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_new_request_tries_again_the_target_that_failed_before() {
        let again = HostDrain {
            requested_at: Some("t2".into()),
            ..migrate()
        };
        let mut h1 = host("h1", Some(again));
        h1.status.get_or_insert_with(Default::default).drain = Some(HostDrainStatus {
            requested_at: Some("t1".into()),
            remaining: 1,
            failures: vec![failure("w0", "h2")],
        });
        let mut w0 = machine("w0", "worker", "1Gi", "Ready");
        w0.status.get_or_insert_with(Default::default).migration = Some(
            serde_json::from_value(json!({"sourceHost": "h1", "targetHost": "h2",
                "state": "Failed", "message": "MigrationFailed: Broken pipe"}))
            .expect("a migration status"),
        );
        let (ctx, api) = fake_api::context(State {
            hosts: vec![h1.clone(), host("h2", None)],
            machines: vec![w0.clone()],
            ..Default::default()
        });
        api.put("/apis/shoal.io/v1alpha1/hosts/h1", &h1);
        api.put(&path("machines", "org-x", "w0"), &w0);

        reconcile(Arc::new(h1), ctx).await.expect("reconciles");

        let got = api.get(&path("machines", "org-x", "w0")).expect("w0");
        assert_eq!(got["spec"]["migration"]["targetHost"], "h2", "h2 again");
        let patch = api
            .calls_to(&Method::PATCH, &path("machines", "org-x", "w0"))
            .pop()
            .expect("a patch");
        assert_eq!(
            patch.body["metadata"]["resourceVersion"], "3",
            "pinned to the cached Machine"
        );
        let h = api
            .get("/apis/shoal.io/v1alpha1/hosts/h1")
            .expect("the host");
        assert_eq!(h["status"]["drain"]["requestedAt"], "t2");
        assert_eq!(h["status"]["drain"]["failures"], json!([]), "forgotten");
    }

    #[tokio::test]
    async fn a_draining_host_asks_each_machine_to_move_then_says_drained() {
        let h1 = host("h1", Some(migrate()));
        let machines = vec![
            machine("w0", "worker", "1Gi", "Ready"),
            machine("cp0", "control-plane", "1Gi", "Ready"),
        ];
        let (ctx, api) = fake_api::context(State {
            hosts: vec![h1.clone(), host("h2", None)],
            machines: machines.clone(),
            ..Default::default()
        });
        api.put("/apis/shoal.io/v1alpha1/hosts/h1", &h1);
        for m in &machines {
            api.put(&path("machines", "org-x", &m.name_any()), m);
        }

        let action = reconcile(Arc::new(h1.clone()), ctx)
            .await
            .expect("reconciles");

        for m in ["w0", "cp0"] {
            let got = api.get(&path("machines", "org-x", m)).expect("the machine");
            assert_eq!(got["spec"]["migration"]["targetHost"], "h2", "{m}");
        }
        let h = api
            .get("/apis/shoal.io/v1alpha1/hosts/h1")
            .expect("the host");
        let drained = h["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == DRAINED).cloned())
            .expect("a Drained condition");
        assert_eq!(drained["status"], "False");
        assert_eq!(drained["reason"], "Draining");
        assert_eq!(h["status"]["drain"]["remaining"], 2);
        assert!(
            h["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready")),
            "the agent's condition stays"
        );
        assert_eq!(action, Action::requeue(RECHECK));

        // Both moved away: drained.
        let (ctx, api) = fake_api::context(State {
            hosts: vec![h1.clone(), host("h2", None)],
            ..Default::default()
        });
        api.put("/apis/shoal.io/v1alpha1/hosts/h1", &h1);
        let action = reconcile(Arc::new(h1), ctx).await.expect("reconciles");
        let h = api
            .get("/apis/shoal.io/v1alpha1/hosts/h1")
            .expect("the host");
        let drained = h["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == DRAINED).cloned())
            .expect("a Drained condition");
        assert_eq!(drained["status"], "True");
        assert_eq!(action, Action::await_change());
        assert!(api
            .calls_to(&Method::PATCH, "/apis/shoal.io/v1alpha1/namespaces")
            .is_empty());
    }
}
