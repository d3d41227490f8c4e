//! Host: a worker machine of the host cluster, registered by its agent.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resources::common::{Condition, ResourceTotals};
use crate::validate::{FieldCause, FieldErrors};

/// What users set on a Host.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "Host",
    status = "HostStatus",
    category = "shoal",
    printcolumn = r#"{"name":"Underlay","type":"string","jsonPath":".status.underlayIp"}"#,
    printcolumn = r#"{"name":"KVM","type":"boolean","jsonPath":".status.kvm"}"#,
    printcolumn = r#"{"name":"Unschedulable","type":"boolean","jsonPath":".spec.unschedulable"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostSpec {
    /// No new machines are placed here while true.
    #[serde(default)]
    pub unschedulable: bool,
    /// Asks the controllers to empty the host (set by `shoal host drain`); needs
    /// `unschedulable`. Progress and what blocks it are in the `Drained` condition
    /// and `status.drain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<HostDrain>,
}

/// How to empty a host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostDrain {
    /// `Migrate` (the default) live-migrates each VM to a host that fits it;
    /// `Replace` deletes the Machines so that their clusters recreate them elsewhere.
    #[serde(default)]
    pub mode: DrainMode,
    /// Replacing also deletes control-plane Machines (left in place otherwise).
    #[serde(default)]
    pub include_control_plane: bool,
    /// When the drain was asked for (RFC 3339). Asking again with a new time
    /// forgets the targets that failed, so that they are tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<String>,
}

/// How a drain moves a host's Machines away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DrainMode {
    /// Live migration; Machines that no other host has room for are replaced
    /// (workers, and control planes with `includeControlPlane`).
    #[default]
    Migrate,
    /// Delete the Machines; their node pools and clusters recreate them elsewhere.
    Replace,
}

/// What a drain has met so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostDrainStatus {
    /// The `spec.drain.requestedAt` these failures belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<String>,
    /// Machines still on the host.
    #[serde(default)]
    pub remaining: u32,
    /// Live migrations that failed, each target tried once per request. Always
    /// written, so that a merge patch of a new request's status clears it.
    #[serde(default)]
    pub failures: Vec<DrainFailure>,
}

/// A live migration of a drain that failed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainFailure {
    /// `namespace/name` of the Machine.
    pub machine: String,
    /// The host it did not reach.
    pub target_host: String,
    /// QEMU's or the agent's reason.
    #[serde(default)]
    pub message: String,
}

/// What the agent reports on its Host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// The address other hosts reach this one on, for VXLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_ip: Option<String>,
    /// `address:port` where the agent forwards TCP to its VMs' API and ingress
    /// ports, for the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_endpoint: Option<String>,
    /// `address:port` of the agent's metrics listener (`--metrics-listen`), when it
    /// has one: its own metrics on `/metrics` (job `shoal-agent`) and each of its
    /// guests' node metrics on `/guests/<namespace>/<machine>/metrics` (job
    /// `shoal-guest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_endpoint: Option<String>,
    /// Everything the machine has.
    #[serde(default)]
    pub capacity: ResourceTotals,
    /// What guest machines may use.
    #[serde(default)]
    pub allocatable: ResourceTotals,
    /// What guest machines use now.
    #[serde(default)]
    pub allocated: ResourceTotals,
    /// Whether KVM works here (otherwise VMs run under TCG).
    #[serde(default)]
    pub kvm: bool,
    /// The agent's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// The last heartbeat (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<String>,
    /// Conditions: `Ready` (the agent's), `Drained` (the drain's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The drain's progress, while one is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<HostDrainStatus>,
}

impl HostSpec {
    /// A drain needs the host cordoned, so that nothing new lands on it meanwhile.
    pub fn validate(&self, errs: &mut FieldErrors) {
        if self.drain.is_some() && !self.unschedulable {
            errs.push(FieldCause::invalid(
                "spec.unschedulable",
                "a host with spec.drain must be unschedulable: set spec.unschedulable to \
                 true as well (shoal host drain does both)",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(spec: serde_json::Value) -> Vec<FieldCause> {
        let spec: HostSpec = serde_json::from_value(spec).expect("a host spec");
        let mut errs = FieldErrors::default();
        spec.validate(&mut errs);
        errs.into_result().err().unwrap_or_default()
    }

    #[test]
    fn a_drain_needs_the_host_cordoned() {
        let refused = errors(serde_json::json!({"drain": {"mode": "Migrate"}}));
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].field, "spec.unschedulable");
        assert!(errors(serde_json::json!({"unschedulable": true, "drain": {}})).is_empty());
        assert!(errors(serde_json::json!({})).is_empty());
    }

    #[test]
    fn an_unknown_drain_mode_is_refused_by_the_types() {
        let bad = serde_json::from_value::<HostSpec>(
            serde_json::json!({"unschedulable": true, "drain": {"mode": "Evaporate"}}),
        );
        assert!(bad.is_err());
    }
}
