//! Retiring a Machine of a Kubernetes guest: cordon its Node, evict its pods through
//! the guest's eviction API (so PodDisruptionBudgets hold), delete the Node object,
//! then the Machine. A drain that does not finish within the drain timeout is
//! reported (`Drained=False DrainTimeout` and a Warning Event) and the Machine goes
//! anyway, so that a stuck budget cannot block a scale-down forever.
//!
//! Machines of other releases, Failed Machines (their node is gone with its host or
//! VM) and clusters without a gateway are deleted at once; a Failed Machine's Node
//! object is still removed from the guest when the guest answers.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use shoal_api::wellknown::annotation::DRAIN_STARTED;
use shoal_api::{BootstrapFormat, Cluster, Machine, Release};
use shoal_kube::conditions::condition;
use shoal_kube::guest;

use crate::context::Context;
use crate::error::{failed, is_conflict, Error};

/// The Machine condition this module owns.
pub const DRAINED: &str = "Drained";

/// What to do with a Machine being retired, decided from the drain so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Delete the Node object and the Machine.
    Remove,
    /// Keep draining; the message says what is left.
    Wait(String),
    /// Time is up: say so, then remove.
    GiveUp(String),
}

/// Decides after one round: `left` pods remain (of which `blocked` were refused by a
/// budget) after `elapsed` of a drain allowed `timeout`.
pub fn decide(left: &[String], blocked: &[String], elapsed: Duration, timeout: Duration) -> Next {
    if left.is_empty() {
        return Next::Remove;
    }
    let what = if blocked.is_empty() {
        format!("{} pods still terminating: {}", left.len(), left.join(", "))
    } else {
        format!(
            "{} pods left; a PodDisruptionBudget refuses evicting {}",
            left.len(),
            blocked.join(", ")
        )
    };
    if elapsed >= timeout {
        Next::GiveUp(format!(
            "drain gave up after {}s (--drain-timeout): {what}",
            elapsed.as_secs()
        ))
    } else {
        Next::Wait(format!(
            "draining for {}s of {}s: {what}",
            elapsed.as_secs(),
            timeout.as_secs()
        ))
    }
}

/// Retires Machine `name` of `cluster`: drains it first on a kubeadm release.
pub async fn retire(
    ctx: &Context,
    cluster: &Cluster,
    release: &Release,
    ns: &str,
    name: &str,
) -> Result<(), Error> {
    let machine = ctx
        .stores
        .cluster_machines(ns, &cluster.name_any())
        .into_iter()
        .find(|m| m.name_any() == name);
    let (Some(machine), Some(gateway)) = (machine, ctx.config.gateway_address) else {
        return crate::cluster::delete_machine(ctx, ns, name).await;
    };
    if release.spec.bootstrap != BootstrapFormat::Kubeadm
        || machine.metadata.deletion_timestamp.is_some()
    {
        return crate::cluster::delete_machine(ctx, ns, name).await;
    }
    let secrets = crate::cluster::pki::cached(ctx, cluster).await?;
    let pki = &secrets.pki;
    let api_host = crate::cluster::status::api_host(cluster, &ctx.config.base_domain);
    let failed_machine = crate::machines::failure_reason(&machine).is_some();
    let started = match drain_started(&machine) {
        Some(t) => t,
        None if failed_machine => Utc::now(),
        None => return mark_started(ctx, &machine).await,
    };
    let elapsed = (Utc::now() - started).to_std().unwrap_or_default();
    let round = async {
        let client = crate::cluster::guest::admin_client(gateway, &api_host, pki).await?;
        if failed_machine {
            // Nothing to evict from a node that is gone: forget it in the guest.
            guest::delete_node(&client, &api_host, name).await?;
            return Ok::<_, guest::GuestError>(None);
        }
        guest::cordon(&client, &api_host, name).await?;
        let round = guest::evict_round(&client, &api_host, name).await?;
        let next = decide(
            &round.left,
            &round.blocked,
            elapsed,
            ctx.config.drain_timeout,
        );
        if !matches!(next, Next::Wait(_)) {
            guest::delete_node(&client, &api_host, name).await?;
        }
        Ok(Some(next))
    }
    .await;
    let next = match round {
        Ok(None) => Next::Remove,
        Ok(Some(next)) => next,
        Err(e) if failed_machine => {
            tracing::info!(machine = %format!("{ns}/{name}"), error = %shoal_kube::chain(&e),
                "the guest did not forget a failed machine's node");
            Next::Remove
        }
        Err(e) => decide(
            &["(unknown: the guest did not answer)".to_owned()],
            &[],
            elapsed,
            ctx.config.drain_timeout,
        )
        .with_cause(&shoal_kube::chain(&e)),
    };
    match next {
        Next::Remove => {
            if !failed_machine {
                ctx.event(
                    machine.as_ref(),
                    false,
                    "Drained",
                    format!("node {name} drained in {}s and removed", elapsed.as_secs()),
                )
                .await;
            }
            crate::cluster::delete_machine(ctx, ns, name).await
        }
        Next::Wait(msg) => record(ctx, &machine, false, "Draining", msg).await,
        Next::GiveUp(msg) => {
            record(ctx, &machine, false, "DrainTimeout", msg.clone()).await?;
            ctx.event(machine.as_ref(), true, "DrainTimeout", msg).await;
            crate::cluster::delete_machine(ctx, ns, name).await
        }
    }
}

impl Next {
    /// The same decision with why the guest could not be asked.
    fn with_cause(self, cause: &str) -> Self {
        match self {
            Next::Remove => Next::Remove,
            Next::Wait(m) => Next::Wait(format!("{m} ({cause})")),
            Next::GiveUp(m) => Next::GiveUp(format!("{m} ({cause})")),
        }
    }
}

fn drain_started(m: &Machine) -> Option<DateTime<Utc>> {
    let text = m.annotations().get(DRAIN_STARTED)?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Stamps the drain's start on the Machine; the change brings the next round.
async fn mark_started(ctx: &Context, m: &Arc<Machine>) -> Result<(), Error> {
    let ns = m.namespace().unwrap_or_default();
    let name = m.name_any();
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let patch = json!({
        "metadata": {"resourceVersion": m.resource_version(), "annotations": {DRAIN_STARTED: now}},
    });
    match Api::<Machine>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            ctx.event(
                m.as_ref(),
                false,
                "Draining",
                format!("draining node {name}"),
            )
            .await;
            Ok(())
        }
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(failed(format!("mark the drain of machine {ns}/{name}"))(e)),
    }
}

/// Writes the Machine's `Drained` condition.
async fn record(
    ctx: &Context,
    m: &Machine,
    status: bool,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    let cond = condition(DRAINED, status, reason, message);
    crate::machines::set_condition(ctx, m, cond).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn an_empty_node_is_removed() {
        assert_eq!(decide(&[], &[], MIN, 5 * MIN), Next::Remove);
    }

    #[test]
    fn pods_left_wait_until_the_timeout() {
        let left = vec!["default/web-1".to_owned()];
        let Next::Wait(msg) = decide(&left, &[], MIN, 5 * MIN) else {
            panic!("must wait");
        };
        assert!(msg.contains("60s of 300s"), "{msg}");
        assert!(msg.contains("default/web-1"), "{msg}");
    }

    #[test]
    fn a_budget_that_refuses_is_named_and_the_timeout_wins() {
        let left = vec!["default/db-0".to_owned()];
        let Next::Wait(msg) = decide(&left, &left, MIN, 5 * MIN) else {
            panic!("must wait");
        };
        assert!(msg.contains("PodDisruptionBudget"), "{msg}");
        let Next::GiveUp(msg) = decide(&left, &left, 5 * MIN, 5 * MIN) else {
            panic!("must give up");
        };
        assert!(msg.contains("gave up after 300s"), "{msg}");
        assert!(msg.contains("--drain-timeout"), "{msg}");
    }
}
