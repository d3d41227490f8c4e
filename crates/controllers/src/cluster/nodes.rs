//! Readiness from inside a Kubernetes guest: a cluster whose release runs kubeadm is
//! Ready only when every Machine's Node is Ready in the guest. Each Machine gets a
//! `NodeReady` condition from its Node, with the kubelet's own reason when it is not.
//!
//! The guest is asked through the gateway with the cluster PKI's administrator
//! certificate (kept in the cluster's PKI Secret, which the API server encrypts).

use std::net::SocketAddr;
use std::sync::Arc;

use kube::ResourceExt;
use shoal_api::resources::common::Condition;
use shoal_api::wellknown::condition::{NODE_NOT_REGISTERED, NODE_READY};
use shoal_api::{ClusterPhase, ClusterStatus, Machine};
use shoal_kube::conditions::{self, condition};
use shoal_kube::guest::{self, NodeState};
use shoal_pki::ClusterPki;

use crate::context::Context;
use crate::error::Error;

/// How many console lines the `NodeNotRegistered` message quotes (the Machine's
/// `status.console` has more).
const QUOTED_LINES: usize = 3;

/// Why a Machine has no Node: with the console's last lines once its agent has
/// reported them.
fn unregistered(m: &Machine) -> String {
    let name = m.name_any();
    let host = m.spec.host_name.as_deref().unwrap_or("(none yet)");
    match m.status.as_ref().and_then(|s| s.console.as_ref()) {
        Some(tail) if !tail.lines.is_empty() => {
            let from = tail.lines.len().saturating_sub(QUOTED_LINES);
            format!(
                "no Node named {name} in the cluster: its kubelet has not registered; \
                 the console (host {host}, {}) ends with: {}",
                tail.time,
                tail.lines[from..].join(" | ")
            )
        }
        _ => format!(
            "no Node named {name} in the cluster: its kubelet has not registered; \
             host {host}'s agent reports the console's last lines within a minute"
        ),
    }
}

/// What the guest's Nodes say of a cluster's Machines.
#[derive(Debug, PartialEq)]
pub struct Verdict {
    /// Each live Machine's `NodeReady` condition, by Machine name.
    pub conditions: Vec<(String, Condition)>,
    /// Machines whose Node is Ready.
    pub ready: usize,
    /// The first Machine whose Node is not Ready, and why.
    pub first_problem: Option<String>,
}

/// Matches Machines with the Nodes named after them.
pub fn judge(machines: &[Arc<Machine>], nodes: &[NodeState]) -> Verdict {
    let mut verdict = Verdict {
        conditions: Vec::new(),
        ready: 0,
        first_problem: None,
    };
    for m in machines
        .iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
    {
        let name = m.name_any();
        let cond = match nodes.iter().find(|n| n.name == name) {
            Some(n) if n.ready => condition(
                NODE_READY,
                true,
                &n.reason,
                format!("node {name} is Ready (kubelet {})", n.kubelet_version),
            ),
            Some(n) => condition(
                NODE_READY,
                false,
                &n.reason,
                format!("node {name} is not Ready: {}", n.message),
            ),
            None => condition(NODE_READY, false, NODE_NOT_REGISTERED, unregistered(m)),
        };
        if cond.status == "True" {
            verdict.ready += 1;
        } else if verdict.first_problem.is_none() {
            verdict.first_problem = Some(format!("{} ({})", cond.message, cond.reason));
        }
        verdict.conditions.push((name, cond));
    }
    verdict
}

/// Asks the guest for its Nodes, records each Machine's `NodeReady`, and keeps the
/// cluster Provisioning (its Ready condition saying why) until every Node is Ready.
pub async fn check(
    ctx: &Context,
    gateway: SocketAddr,
    api_host: &str,
    pki: &ClusterPki,
    machines: &[Arc<Machine>],
    next: &mut ClusterStatus,
) -> Result<(), Error> {
    let asked = match super::guest::admin_client(gateway, api_host, pki).await {
        Ok(client) => guest::nodes(&client, api_host).await,
        Err(e) => Err(e),
    };
    let nodes = match asked {
        Ok(nodes) => nodes,
        Err(e) => {
            not_ready(
                next,
                "NodesUnknown",
                format!(
                    "every machine is Ready, but the cluster's Nodes cannot be read: {}",
                    shoal_kube::chain(&e)
                ),
            );
            return Ok(());
        }
    };
    let verdict = judge(machines, &nodes);
    for (name, cond) in &verdict.conditions {
        if let Some(m) = machines.iter().find(|m| &m.name_any() == name) {
            crate::machines::set_condition(ctx, m, cond.clone()).await?;
        }
    }
    let live = verdict.conditions.len();
    if let Some(problem) = verdict.first_problem {
        not_ready(
            next,
            "NodesNotReady",
            format!("{}/{live} nodes Ready; {problem}", verdict.ready),
        );
    }
    Ok(())
}

fn not_ready(next: &mut ClusterStatus, reason: &str, message: String) {
    conditions::set(
        &mut next.conditions,
        condition("Ready", false, reason, message),
    );
    next.phase = Some(ClusterPhase::Provisioning);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn machine(name: &str, host: Option<&str>) -> Arc<Machine> {
        let mut m: Machine = serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": name, "namespace": "org-acme"},
            "spec": {"cluster": "demo", "role": "worker", "release": "kubeadm-1.35.4",
                     "size": {"cpu": "2", "memory": "2Gi", "disk": "10Gi"}}
        }))
        .expect("a Machine");
        m.spec.host_name = host.map(str::to_owned);
        Arc::new(m)
    }

    fn node(name: &str, ready: bool, reason: &str, message: &str) -> NodeState {
        NodeState {
            name: name.into(),
            ready,
            reason: reason.into(),
            message: message.into(),
            kubelet_version: "v1.35.4".into(),
            unschedulable: false,
        }
    }

    #[test]
    fn every_node_ready_is_no_problem() {
        let v = judge(
            &[machine("cp", Some("h1")), machine("w", Some("h2"))],
            &[
                node("cp", true, "KubeletReady", "ok"),
                node("w", true, "KubeletReady", "ok"),
            ],
        );
        assert_eq!(v.ready, 2);
        assert_eq!(v.first_problem, None);
        assert!(v.conditions.iter().all(|(_, c)| c.status == "True"));
        assert!(v.conditions[0].1.message.contains("v1.35.4"));
    }

    #[test]
    fn the_kubelets_reason_is_carried() {
        let v = judge(
            &[machine("cp", Some("h1")), machine("w", Some("h2"))],
            &[
                node("cp", true, "KubeletReady", "ok"),
                node(
                    "w",
                    false,
                    "KubeletNotReady",
                    "NetworkPluginNotReady: cni plugin not initialized",
                ),
            ],
        );
        assert_eq!(v.ready, 1);
        let (name, c) = &v.conditions[1];
        assert_eq!(name, "w");
        assert_eq!(c.reason, "KubeletNotReady");
        let problem = v.first_problem.expect("a problem");
        assert!(problem.contains("cni plugin not initialized"), "{problem}");
        assert!(problem.contains("node w"), "{problem}");
    }

    #[test]
    fn a_machine_without_a_node_says_it_never_registered() {
        let v = judge(
            &[machine("w", Some("h2"))],
            &[node("someone-else", true, "KubeletReady", "ok")],
        );
        let (_, c) = &v.conditions[0];
        assert_eq!(c.reason, "NodeNotRegistered");
        assert!(c.message.contains("host h2"), "{}", c.message);
        assert!(c.message.contains("within a minute"), "{}", c.message);
        assert_eq!(v.ready, 0);
    }

    #[test]
    fn the_console_reported_by_the_agent_is_quoted() {
        let mut m = (*machine("w", Some("h2"))).clone();
        m.status = Some(shoal_api::MachineStatus {
            console: Some(shoal_api::ConsoleTail {
                lines: [
                    "boot",
                    "a",
                    "b",
                    "kubelet.service: Failed with result 'exit-code'.",
                ]
                .map(String::from)
                .to_vec(),
                time: "2026-12-04T10:00:00+00:00".into(),
            }),
            ..Default::default()
        });
        let v = judge(&[Arc::new(m)], &[]);
        let msg = &v.conditions[0].1.message;
        assert!(msg.contains("a | b | kubelet.service: Failed"), "{msg}");
        assert!(!msg.contains("boot"), "only the last lines: {msg}");
        assert!(msg.contains("host h2, 2026-12-04T10:00:00+00:00"), "{msg}");
        let problem = v.first_problem.expect("a problem");
        assert!(problem.contains("kubelet.service"), "{problem}");
    }

    #[test]
    fn machines_being_deleted_are_not_judged() {
        let mut gone = (*machine("old", Some("h1"))).clone();
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let v = judge(&[Arc::new(gone)], &[]);
        assert!(v.conditions.is_empty());
        assert_eq!(v.first_problem, None);
    }
}
