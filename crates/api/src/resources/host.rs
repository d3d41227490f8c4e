//! Host: a worker machine of the host cluster, registered by its agent.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resources::common::{Condition, ResourceTotals};
use crate::validate::FieldErrors;

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
    /// Conditions, such as `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl HostSpec {
    /// Nothing to check beyond the types yet.
    pub fn validate(&self, _errs: &mut FieldErrors) {}
}
