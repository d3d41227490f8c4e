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
    /// The most vCPUs one machine may have.
    pub const MAX_CPUS: u64 = 64;
    /// The most memory one machine may have (512Gi).
    pub const MAX_MEMORY_BYTES: u64 = 512 << 30;
    /// The largest root disk one machine may have (16Ti).
    pub const MAX_DISK_BYTES: u64 = 16 << 40;

    /// Checks the size is usable: 1 to 64 vCPUs in whole cores, 256Mi to 512Gi of
    /// memory and 1Gi to 16Ti of disk.
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
        } else if millis / 1000 > Self::MAX_CPUS {
            errs.check(
                &format!("{path}.cpu"),
                Err(format!(
                    "{} is more than the maximum of {} vCPUs per machine: use fewer vCPUs and more workers",
                    self.cpu,
                    Self::MAX_CPUS
                )),
            );
        }
        let memory = self.memory.as_bytes();
        if memory < 256 << 20 {
            errs.check(
                &format!("{path}.memory"),
                Err(format!("{} is less than the minimum of 256Mi", self.memory)),
            );
        } else if memory > Self::MAX_MEMORY_BYTES {
            errs.check(
                &format!("{path}.memory"),
                Err(format!(
                    "{} is more than the maximum of 512Gi per machine: use less memory and more workers",
                    self.memory
                )),
            );
        }
        let disk = self.disk.as_bytes();
        if disk < 1 << 30 {
            errs.check(
                &format!("{path}.disk"),
                Err(format!("{} is less than the minimum of 1Gi", self.disk)),
            );
        } else if disk > Self::MAX_DISK_BYTES {
            errs.check(
                &format!("{path}.disk"),
                Err(format!(
                    "{} is more than the maximum of 16Ti per machine",
                    self.disk
                )),
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

#[cfg(test)]
mod size_tests {
    use super::*;

    fn causes(cpu: &str, memory: &str, disk: &str) -> Vec<(String, String)> {
        let q = |s: &str| Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let size = MachineSize {
            cpu: q(cpu),
            memory: q(memory),
            disk: q(disk),
        };
        let mut errs = FieldErrors::default();
        size.validate("spec.size", &mut errs);
        errs.0.into_iter().map(|c| (c.field, c.message)).collect()
    }

    #[test]
    fn sizes_inside_the_limits_pass_and_outside_name_the_field_and_limit() {
        assert!(causes("1", "256Mi", "1Gi").is_empty());
        assert!(causes("64", "512Gi", "16Ti").is_empty());
        let too_big = causes("65", "513Gi", "17Ti");
        let fields: Vec<&str> = too_big.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.size.cpu", "spec.size.memory", "spec.size.disk"]
        );
        assert!(too_big[0].1.contains("maximum of 64 vCPUs"), "{too_big:?}");
        assert!(too_big[1].1.contains("maximum of 512Gi"), "{too_big:?}");
        assert!(too_big[2].1.contains("maximum of 16Ti"), "{too_big:?}");
    }
}
