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
