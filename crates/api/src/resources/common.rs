//! Types shared by several resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{FieldErrors, Quantity};

/// A status condition, as Kubernetes resources report them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's name, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase word a program can match.
    #[serde(default)]
    pub reason: String,
    /// What a person should know or do.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The generation this condition describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The size of one machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineSize {
    /// Virtual CPUs, e.g. `2`.
    pub cpu: Quantity,
    /// Memory, e.g. `4Gi`.
    pub memory: Quantity,
    /// Root disk, e.g. `20Gi`.
    pub disk: Quantity,
}

impl MachineSize {
    /// Checks the size is usable: at least 1 vCPU in whole cores, 256 MiB of memory and 1 GiB of disk.
    pub fn validate(&self, path: &str, errs: &mut FieldErrors) {
        let millis = self.cpu.as_millis();
        if millis < 1000 || !millis.is_multiple_of(1000) {
            errs.check(
                &format!("{path}.cpu"),
                Err(format!(
                    "{} is not a whole number of vCPUs of at least 1: use e.g. '2'",
                    self.cpu
                )),
            );
        }
        if self.memory.as_bytes() < 256 << 20 {
            errs.check(
                &format!("{path}.memory"),
                Err(format!("{} is less than the minimum of 256Mi", self.memory)),
            );
        }
        if self.disk.as_bytes() < 1 << 30 {
            errs.check(
                &format!("{path}.disk"),
                Err(format!("{} is less than the minimum of 1Gi", self.disk)),
            );
        }
    }
}

/// CPU, memory and disk totals, as hosts report them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceTotals {
    /// CPU cores, e.g. `8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory, e.g. `32Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Disk, e.g. `500Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Quantity>,
}

/// The role of a machine in its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MachineRole {
    /// Runs the guest cluster's API server and etcd.
    ControlPlane,
    /// Runs workloads.
    Worker,
}
