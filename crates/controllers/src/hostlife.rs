//! Host lifecycle: a Host whose heartbeat Lease has expired turns NotReady; after
//! the grace period its Machines are marked Failed with reason HostLost, so that
//! node pools replace the workers elsewhere. Machines being deleted on a lost host
//! lose the agent's finalizer, since no agent is left to remove it; a returning
//! agent removes their VMs as orphans.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;
use shoal_api::{Host, Machine, MachinePhase};
use shoal_kube::conditions::{self, condition};
use shoal_kube::finalizer::{self, Change};

use crate::context::Context;
use crate::error::{failed, Error};
use crate::labels::{AGENT_FINALIZER, SYSTEM_NAMESPACE};
use crate::machines::phase;

/// The heartbeat Lease of a host.
pub fn lease_name(host: &str) -> String {
    format!("host-{host}")
}

/// The Host a heartbeat Lease belongs to.
pub fn host_of_lease(lease: &str) -> Option<&str> {
    lease.strip_prefix("host-")
}

/// When a Lease stops vouching for its holder.
pub fn expiry(lease: &Lease) -> Option<DateTime<Utc>> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref()?;
    let renewed: DateTime<Utc> = renewed.0.to_string().parse().ok()?;
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(40));
    Some(renewed + chrono::Duration::seconds(secs))
}

/// Reconciles one Host.
pub async fn reconcile(host: Arc<Host>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = host.name_any();
    let lease = ctx
        .stores
        .leases
        .get(&ObjectRef::new(&lease_name(&name)).within(SYSTEM_NAMESPACE));
    let now = Utc::now();
    let created: Option<DateTime<Utc>> = host
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| t.0.to_string().parse().ok());
    // A host that never renewed gets one lease period from its creation.
    let expires = lease
        .as_deref()
        .and_then(expiry)
        .or_else(|| created.map(|c| c + chrono::Duration::seconds(40)));
    let Some(expires) = expires else {
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    if expires > now {
        let wait = (expires - now).to_std().unwrap_or_default();
        return Ok(Action::requeue(wait + Duration::from_secs(1)));
    }

    let ready = host
        .status
        .as_ref()
        .and_then(|s| conditions::get(&s.conditions, "Ready"))
        .is_some_and(|c| c.status == "True");
    let grace = ctx.config.host_grace_period;
    let lost_at = expires + chrono::Duration::from_std(grace).unwrap_or_default();
    if ready {
        let msg = format!(
            "no heartbeat since {}; its machines are marked Failed (HostLost) at {} unless the agent returns",
            expires.to_rfc3339(),
            lost_at.to_rfc3339()
        );
        let mut conds = host
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions::set(
            &mut conds,
            condition("Ready", false, "HeartbeatLost", msg.clone()),
        );
        let patch = json!({"status": {"conditions": conds}});
        Api::<Host>::all(ctx.client.clone())
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(failed(format!("mark host {name} NotReady")))?;
        ctx.event(host.as_ref(), true, "HostNotReady", msg).await;
        tracing::warn!(host = %name, "heartbeat lost; host NotReady");
    }
    if lost_at > now {
        let wait = (lost_at - now).to_std().unwrap_or_default();
        return Ok(Action::requeue(wait + Duration::from_millis(500)));
    }

    for m in ctx
        .stores
        .machines
        .state()
        .iter()
        .filter(|m| m.spec.host_name.as_deref() == Some(name.as_str()))
    {
        fail_lost(&ctx, m, &name, &expires).await?;
    }
    Ok(Action::requeue(Duration::from_secs(10)))
}

async fn fail_lost(
    ctx: &Context,
    m: &Machine,
    host: &str,
    since: &DateTime<Utc>,
) -> Result<(), Error> {
    let ns = m.namespace().unwrap_or_default();
    let name = m.name_any();
    let api: Api<Machine> = Api::namespaced(ctx.client.clone(), &ns);
    if m.metadata.deletion_timestamp.is_some() {
        let change = finalizer::remove(&api, m, AGENT_FINALIZER)
            .await
            .map_err(failed(format!("release machine {ns}/{name}")))?;
        if change == Change::Done {
            tracing::info!(machine = %format!("{ns}/{name}"), %host, "released a machine of a lost host");
        }
        return Ok(());
    }
    if phase(m) == MachinePhase::Failed {
        return Ok(());
    }
    let msg = format!(
        "host {host} has sent no heartbeat since {}; the machine's node pool replaces it",
        since.to_rfc3339()
    );
    let status = json!({"conditions": [condition("Ready", false, "HostLost", msg.clone())]});
    if !crate::machines::set_phase(&api, m, MachinePhase::Failed, status).await? {
        return Ok(());
    }
    ctx.event(m, true, "HostLost", msg).await;
    tracing::warn!(machine = %format!("{ns}/{name}"), %host, "machine failed: host lost");
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::json;

    use super::*;
    use crate::fake_api::{self, path, State};

    /// Host `h1`, created an hour ago, Ready, with no heartbeat Lease.
    fn silent_host() -> Host {
        let created = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Host",
            "metadata": {"name": "h1", "uid": "host-uid", "creationTimestamp": created},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Heartbeat",
                                       "message": "", "lastTransitionTime": created}]}
        }))
        .expect("a valid Host")
    }

    fn machine_on(name: &str, host: &str, deleting: bool) -> Machine {
        let mut m = json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": name, "namespace": "org-x", "uid": format!("uid-{name}"),
                         "resourceVersion": "3"},
            "spec": {"cluster": "a", "role": "worker", "release": "test", "nodePool": "a-w",
                     "size": {"cpu": "1", "memory": "512Mi", "disk": "1Gi"}, "hostName": host},
            "status": {"phase": "Ready"}
        });
        if deleting {
            m["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            m["metadata"]["finalizers"] = json!([AGENT_FINALIZER]);
        }
        serde_json::from_value(m).expect("a valid Machine")
    }

    #[tokio::test]
    async fn machines_of_a_lost_host_fail_with_host_lost_and_deleting_ones_are_released() {
        let machines = vec![
            machine_on("a-w-0", "h1", false),
            machine_on("a-w-1", "h1", true),
            machine_on("a-w-2", "h2", false),
        ];
        let (ctx, api) = fake_api::context(State {
            hosts: vec![silent_host()],
            machines: machines.clone(),
            ..Default::default()
        });
        api.put("/apis/shoal.io/v1alpha1/hosts/h1", &silent_host());
        for m in &machines {
            api.put(&path("machines", "org-x", &m.name_any()), m);
        }

        let action = reconcile(Arc::new(silent_host()), ctx)
            .await
            .expect("reconciles");

        let host = api
            .get("/apis/shoal.io/v1alpha1/hosts/h1")
            .expect("the host");
        assert_eq!(host["status"]["conditions"][0]["status"], "False");
        assert_eq!(host["status"]["conditions"][0]["reason"], "HeartbeatLost");
        let failed = api.get(&path("machines", "org-x", "a-w-0")).expect("a-w-0");
        assert_eq!(failed["status"]["phase"], "Failed");
        assert_eq!(failed["status"]["conditions"][0]["reason"], "HostLost");
        let msg = failed["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            msg.contains("host h1") && msg.contains("node pool replaces it"),
            "{msg}"
        );
        let released = api.get(&path("machines", "org-x", "a-w-1")).expect("a-w-1");
        assert_eq!(
            released["metadata"]["finalizers"],
            json!([]),
            "no agent is left to do it"
        );
        assert!(
            api.calls_to(&Method::PATCH, &path("machines", "org-x", "a-w-2"))
                .is_empty(),
            "a machine on another host is left alone"
        );
        assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    }

    #[tokio::test]
    async fn a_host_within_its_grace_period_only_turns_not_ready() {
        let (ctx, api) = fake_api::context(State {
            hosts: vec![silent_host()],
            machines: vec![machine_on("a-w-0", "h1", false)],
            ..Default::default()
        });
        api.put("/apis/shoal.io/v1alpha1/hosts/h1", &silent_host());
        api.put(
            &path("machines", "org-x", "a-w-0"),
            &machine_on("a-w-0", "h1", false),
        );
        let mut ctx = Arc::into_inner(ctx).expect("the only reference");
        ctx.config.host_grace_period = Duration::from_secs(24 * 3600);

        reconcile(Arc::new(silent_host()), Arc::new(ctx))
            .await
            .expect("reconciles");

        let host = api
            .get("/apis/shoal.io/v1alpha1/hosts/h1")
            .expect("the host");
        assert_eq!(host["status"]["conditions"][0]["reason"], "HeartbeatLost");
        let m = api.get(&path("machines", "org-x", "a-w-0")).expect("a-w-0");
        assert_eq!(
            m["status"]["phase"], "Ready",
            "not failed before the grace period ends"
        );
    }
}
