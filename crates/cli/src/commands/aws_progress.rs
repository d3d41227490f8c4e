//! `cluster create --wait` for a cluster on AWS: it has no Machines to count, so the
//! wait shows the provider's layers instead (Network, Iam, Bastion, ControlPlane,
//! LoadBalancers, Workers, DNS), one line each time a layer's condition changes.

use std::collections::BTreeMap;

use shoal_api::Cluster;
use shoal_provider_aws::controller::LAYERS;

/// What was last printed for each layer.
#[derive(Debug, Default)]
pub struct LayerProgress {
    seen: BTreeMap<&'static str, String>,
}

impl LayerProgress {
    /// The lines for the layers whose condition changed since the last call, in
    /// build order: `Network: ready`, or `Workers: Waiting: <the message>`.
    pub fn changes(&mut self, cluster: &Cluster) -> Vec<String> {
        let conditions = cluster
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let mut lines = Vec::new();
        for layer in LAYERS {
            let Some(c) = conditions.iter().find(|c| c.type_ == layer) else {
                continue;
            };
            let line = if c.status == "True" {
                format!("{layer}: ready")
            } else if c.message.is_empty() {
                format!("{layer}: {}", c.reason)
            } else {
                format!("{layer}: {}: {}", c.reason, c.message)
            };
            if self.seen.get(layer) != Some(&line) {
                self.seen.insert(layer, line.clone());
                lines.push(line);
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{ClusterStatus, Condition};

    fn cluster(conds: &[(&str, &str, &str, &str)]) -> Cluster {
        let mut c: Cluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "web", "namespace": "org-acme"},
            "spec": {"release": "aws-1-35", "controlPlane": {"replicas": 1, "cpu": "2", "memory": "2Gi", "disk": "10Gi"}},
        }))
        .expect("a valid Cluster");
        c.status = Some(ClusterStatus {
            conditions: conds
                .iter()
                .map(|(t, s, r, m)| Condition {
                    type_: (*t).into(),
                    status: (*s).into(),
                    reason: (*r).into(),
                    message: (*m).into(),
                    last_transition_time: None,
                    observed_generation: None,
                })
                .collect(),
            ..Default::default()
        });
        c
    }

    #[test]
    fn each_change_of_a_layer_is_one_line_in_build_order() {
        let mut p = LayerProgress::default();
        assert!(p.changes(&cluster(&[])).is_empty());
        let first = cluster(&[
            (
                "Iam",
                "False",
                "WaitingForLayer",
                "waits for the Network layer",
            ),
            (
                "Network",
                "False",
                "Waiting",
                "the NAT gateways are pending",
            ),
            ("Ready", "False", "Provisioning", "not a layer"),
        ]);
        assert_eq!(
            p.changes(&first),
            vec![
                "Network: Waiting: the NAT gateways are pending",
                "Iam: WaitingForLayer: waits for the Network layer",
            ]
        );
        assert!(p.changes(&first).is_empty(), "nothing changed");
        let second = cluster(&[
            ("Network", "True", "Ready", "Network is in place"),
            (
                "Iam",
                "False",
                "WaitingForLayer",
                "waits for the Network layer",
            ),
        ]);
        assert_eq!(p.changes(&second), vec!["Network: ready"]);
    }
}
