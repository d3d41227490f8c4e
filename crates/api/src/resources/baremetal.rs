//! BareMetalMachine: a physical machine found or registered for PXE bootstrap.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resources::common::MachineRole;
use crate::validate::FieldErrors;

/// What users set on a BareMetalMachine.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "BareMetalMachine",
    status = "BareMetalMachineStatus",
    shortname = "bmm",
    category = "shoal",
    printcolumn = r#"{"name":"MAC","type":"string","jsonPath":".spec.mac"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.role"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BareMetalMachineSpec {
    /// The MAC address it PXE-boots from.
    pub mac: String,
    /// What it becomes.
    pub role: MachineRole,
    /// The provisioning profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// Provisioning state of a bare-metal machine, in the order a machine goes through
/// them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum BareMetalState {
    /// Seen on the provisioning network.
    #[default]
    Discovered,
    /// Installing.
    Provisioning,
    /// Installed.
    Provisioned,
    /// Joined the host cluster.
    Joined,
}

/// What Shoal reports on a BareMetalMachine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BareMetalMachineStatus {
    /// The provisioning state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BareMetalState>,
    /// The address it was last seen at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The host name it phoned home with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Every change of state, oldest first, each with its time and what caused it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<BareMetalTransition>,
}

/// One change of a bare-metal machine's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BareMetalTransition {
    /// The state entered.
    pub state: BareMetalState,
    /// When, RFC 3339.
    pub at: String,
    /// What was seen: e.g. "fetched its boot script", "phoned home as pxe-1".
    pub reason: String,
}

impl BareMetalMachineSpec {
    /// Checks the MAC address.
    pub fn validate(&self, errs: &mut FieldErrors) {
        let parts: Vec<&str> = self.mac.split(':').collect();
        let ok = parts.len() == 6
            && parts
                .iter()
                .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            errs.check(
                "spec.mac",
                Err(format!(
                    "{:?} is not a MAC address: use e.g. '52:54:00:12:34:56'",
                    self.mac
                )),
            );
        }
    }
}
