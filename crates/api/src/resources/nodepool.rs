//! NodePool: a set of identical worker machines of one cluster.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resources::common::{Condition, MachineSize};
use crate::validate::{
    validate_dns1123_label, validate_label_key, validate_label_value, FieldErrors,
};

/// A taint on the pool's nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    /// The taint key.
    pub key: String,
    /// The taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// What users set on a NodePool.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "NodePool",
    namespaced,
    status = "NodePoolStatus",
    shortname = "np",
    category = "shoal",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePoolSpec {
    /// The Cluster the pool belongs to, in the same namespace.
    pub cluster: String,
    /// The number of machines (ignored when autoscaling with min/max).
    pub replicas: u32,
    /// The autoscaler's lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    /// The autoscaler's upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    /// The size of each machine.
    pub machine: MachineSize,
    /// Labels for the pool's nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Taints for the pool's nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
}

/// What Shoal reports on a NodePool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    /// Machines that exist.
    #[serde(default)]
    pub replicas: u32,
    /// Machines that are Ready.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The most machines one pool may ask for.
pub const MAX_POOL_REPLICAS: u32 = 500;

impl NodePoolSpec {
    /// Checks values that the types alone cannot.
    pub fn validate(&self, errs: &mut FieldErrors) {
        errs.check("spec.cluster", validate_dns1123_label(&self.cluster));
        if self.replicas > MAX_POOL_REPLICAS {
            errs.check(
                "spec.replicas",
                Err(format!(
                    "{} exceeds the maximum of {MAX_POOL_REPLICAS}",
                    self.replicas
                )),
            );
        }
        if let (Some(min), Some(max)) = (self.min_replicas, self.max_replicas) {
            if min > max {
                errs.check(
                    "spec.minReplicas",
                    Err(format!("{min} is greater than maxReplicas {max}")),
                );
            }
        }
        self.machine.validate("spec.machine", errs);
        for (k, v) in &self.labels {
            errs.check(&format!("spec.labels[{k}]"), validate_label_key(k));
            errs.check(&format!("spec.labels[{k}]"), validate_label_value(v));
        }
        for (i, t) in self.taints.iter().enumerate() {
            if !matches!(
                t.effect.as_str(),
                "NoSchedule" | "PreferNoSchedule" | "NoExecute"
            ) {
                errs.check(
                    &format!("spec.taints[{i}].effect"),
                    Err(format!(
                        "{:?} is not supported: use NoSchedule, PreferNoSchedule or NoExecute",
                        t.effect
                    )),
                );
            }
            errs.check(&format!("spec.taints[{i}].key"), validate_label_key(&t.key));
        }
    }
}
