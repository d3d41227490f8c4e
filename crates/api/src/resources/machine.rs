//! Machine: one guest node, made by the controllers and realized by a host agent.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resources::common::{Condition, MachineRole, MachineSize};
use crate::validate::{validate_dns1123_label, FieldErrors};

/// What the controllers set on a Machine.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "Machine",
    namespaced,
    status = "MachineStatus",
    shortname = "ma",
    category = "shoal",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.role"}"#,
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".spec.hostName"}"#,
    printcolumn = r#"{"name":"IP","type":"string","jsonPath":".spec.ip"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineSpec {
    /// The Cluster the machine belongs to.
    pub cluster: String,
    /// Control plane or worker.
    pub role: MachineRole,
    /// The NodePool that made it, for workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<String>,
    /// The machine's size.
    pub size: MachineSize,
    /// The Release it boots.
    pub release: String,
    /// The Host it runs on, once scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    /// Its MAC address on the cluster network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Its address on the cluster network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Where the guest's bootstrap data (cloud-init user-data) comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<MachineBootstrap>,
}

/// The source of a Machine's bootstrap data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineBootstrap {
    /// A Secret in the Machine's namespace whose key `value` holds the user-data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_secret_name: Option<String>,
}

/// The phase of a machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MachinePhase {
    /// Waiting for a host; see the conditions for why.
    #[default]
    Pending,
    /// The host agent is preparing disk and network.
    Provisioning,
    /// The VM is running.
    Running,
    /// The guest phoned home.
    Ready,
    /// Lost or broken; it will be replaced.
    Failed,
    /// Being removed.
    Deleting,
}

/// What Shoal reports on a Machine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    /// The lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MachinePhase>,
    /// Conditions, each with a reason a person can act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When provisioning started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_time: Option<String>,
    /// When the VM started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_time: Option<String>,
    /// When the guest phoned home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_time: Option<String>,
}

impl MachineSpec {
    /// Checks values that the types alone cannot.
    pub fn validate(&self, errs: &mut FieldErrors) {
        errs.check("spec.cluster", validate_dns1123_label(&self.cluster));
        errs.check("spec.release", validate_dns1123_label(&self.release));
        self.size.validate("spec.size", errs);
        if let Some(mac) = &self.mac {
            let ok = mac.split(':').count() == 6
                && mac
                    .split(':')
                    .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
            if !ok {
                errs.check(
                    "spec.mac",
                    Err(format!(
                        "{mac:?} is not a MAC address: use e.g. '52:54:00:12:34:56'"
                    )),
                );
            }
        }
        if let Some(name) = self
            .bootstrap
            .as_ref()
            .and_then(|b| b.data_secret_name.as_ref())
        {
            errs.check(
                "spec.bootstrap.dataSecretName",
                crate::validate::validate_dns1123_subdomain(name),
            );
        }
        if let Some(ip) = &self.ip {
            if ip.parse::<std::net::IpAddr>().is_err() {
                errs.check("spec.ip", Err(format!("{ip:?} is not an IP address")));
            }
        }
    }
}
