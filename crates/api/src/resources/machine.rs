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
    /// A request to move the running VM to another host by live migration (set by
    /// `shoal host drain`); the host agents carry it out and clear it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationRequest>,
}

/// A request to live-migrate a Machine's VM.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrationRequest {
    /// The host to move the VM to.
    pub target_host: String,
}

/// Where a live migration is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MigrationState {
    /// The target host starts a QEMU that waits for the VM.
    #[default]
    Preparing,
    /// The target waits at `incoming`; the source copies disk and memory.
    Transferring,
    /// The VM runs on the target.
    Completed,
    /// The VM kept running on the source; `message` says why.
    Failed,
}

/// A live migration as the host agents report it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    /// The host the VM leaves.
    pub source_host: String,
    /// The host the VM moves to.
    pub target_host: String,
    /// Where the move is.
    pub state: MigrationState,
    /// The target QEMU's migration address (`tcp:<ip>:<port>`), once it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming: Option<String>,
    /// The target's NBD export of the VM's disk, which the source mirrors into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// What has been copied, e.g. `RAM 120 of 256 MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The time the guest was paused, as QEMU reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// The whole migration's time, as QEMU reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<u64>,
    /// Why it failed, with QEMU's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
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
    /// The running VM moves to another host; the guest keeps running.
    Migrating,
}

impl MachinePhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [MachinePhase; 7] = [
        MachinePhase::Pending,
        MachinePhase::Provisioning,
        MachinePhase::Running,
        MachinePhase::Ready,
        MachinePhase::Failed,
        MachinePhase::Deleting,
        MachinePhase::Migrating,
    ];

    /// The phase's name as the API spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            MachinePhase::Pending => "Pending",
            MachinePhase::Provisioning => "Provisioning",
            MachinePhase::Running => "Running",
            MachinePhase::Ready => "Ready",
            MachinePhase::Failed => "Failed",
            MachinePhase::Deleting => "Deleting",
            MachinePhase::Migrating => "Migrating",
        }
    }

    /// The table of legal phase changes, the one every writer of a Machine's
    /// phase (host agent, simulator, controllers) consults. Staying in a phase is
    /// always legal (conditions change within it). Failed and Deleting are final:
    /// a Failed Machine is replaced, never revived, so a late phone-home or a
    /// stale writer cannot move it back to Ready.
    pub const fn may_become(self, next: MachinePhase) -> bool {
        use MachinePhase::*;
        match (self, next) {
            (Pending, Pending | Provisioning | Running | Failed | Deleting) => true,
            (Provisioning, Provisioning | Running | Failed | Deleting) => true,
            (Running, Running | Ready | Failed | Deleting) => true,
            (Ready, Ready | Failed | Deleting | Migrating) => true,
            (Migrating, Migrating | Ready | Failed | Deleting) => true,
            (Failed, Failed | Deleting) => true,
            (Deleting, Deleting) => true,
            (Pending, Ready | Migrating)
            | (Provisioning, Pending | Ready | Migrating)
            | (Running, Pending | Provisioning | Migrating)
            | (Ready, Pending | Provisioning | Running)
            | (Migrating, Pending | Provisioning | Running)
            | (Failed, Pending | Provisioning | Running | Ready | Migrating)
            | (Deleting, Pending | Provisioning | Running | Ready | Failed | Migrating) => false,
        }
    }

    /// Checks a change from `from` (`None`: no phase written yet, which is
    /// Pending) to `to` against [`MachinePhase::may_become`].
    pub fn check_transition(
        from: Option<MachinePhase>,
        to: MachinePhase,
    ) -> Result<(), IllegalPhaseTransition> {
        let from = from.unwrap_or_default();
        if from.may_become(to) {
            Ok(())
        } else {
            Err(IllegalPhaseTransition { from, to })
        }
    }
}

impl std::fmt::Display for MachinePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Machine phase change that the transition table refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a Machine cannot go from phase {from} to {to}")]
pub struct IllegalPhaseTransition {
    /// The phase the Machine is in.
    pub from: MachinePhase,
    /// The phase a writer asked for.
    pub to: MachinePhase,
}

impl Machine {
    /// The Machine's phase; `None` until a writer set one.
    pub fn phase(&self) -> Option<MachinePhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }

    /// A merge patch that sets `status` (which must name `phase`) only if the
    /// change from this copy's phase is legal, pinned to this copy's
    /// resourceVersion: if the Machine changed since it was read, the server
    /// answers 409 and the writer must re-read it and ask again, so a decision
    /// made on a stale copy never lands.
    pub fn phase_patch(
        &self,
        to: MachinePhase,
        mut status: serde_json::Value,
    ) -> Result<serde_json::Value, IllegalPhaseTransition> {
        MachinePhase::check_transition(self.phase(), to)?;
        if let Some(obj) = status.as_object_mut() {
            obj.insert("phase".into(), serde_json::json!(to));
        }
        let mut patch = serde_json::json!({ "status": status });
        if let Some(rv) = &self.metadata.resource_version {
            patch["metadata"] = serde_json::json!({ "resourceVersion": rv });
        }
        Ok(patch)
    }
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
    /// The last lines of the VM's serial console, reported by its agent while the
    /// Machine's Node has not registered in its Kubernetes guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleTail>,
    /// The last live migration, while it runs and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationStatus>,
}

/// The end of a VM's serial console as its agent read it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleTail {
    /// The last non-empty lines, oldest first.
    pub lines: Vec<String>,
    /// When the agent read them (RFC 3339).
    pub time: String,
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
        if let Some(m) = &self.migration {
            errs.check(
                "spec.migration.targetHost",
                crate::validate::validate_dns1123_subdomain(&m.target_host),
            );
            if self.host_name.is_none() {
                errs.check(
                    "spec.migration",
                    Err(
                        "only a Machine that runs on a host (spec.hostName) can migrate"
                            .to_string(),
                    ),
                );
            } else if self.host_name.as_deref() == Some(m.target_host.as_str()) {
                errs.check(
                    "spec.migration.targetHost",
                    Err(format!(
                        "{:?} is the host the machine runs on: name another host",
                        m.target_host
                    )),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MachinePhase::*;

    #[test]
    fn staying_in_a_phase_is_always_legal() {
        for p in MachinePhase::ALL {
            assert!(p.may_become(p), "{p} -> {p}");
        }
    }

    #[test]
    fn the_table_is_exactly_the_lifecycle() {
        let legal = [
            (Pending, Provisioning),
            (Pending, Running),
            (Pending, Failed),
            (Pending, Deleting),
            (Provisioning, Running),
            (Provisioning, Failed),
            (Provisioning, Deleting),
            (Running, Ready),
            (Running, Failed),
            (Running, Deleting),
            (Ready, Failed),
            (Ready, Deleting),
            (Ready, Migrating),
            (Migrating, Ready),
            (Migrating, Failed),
            (Migrating, Deleting),
            (Failed, Deleting),
        ];
        for from in MachinePhase::ALL {
            for to in MachinePhase::ALL {
                let want = from == to || legal.contains(&(from, to));
                assert_eq!(from.may_become(to), want, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn failed_and_deleting_are_final() {
        for to in [Pending, Provisioning, Running, Ready] {
            assert_eq!(
                MachinePhase::check_transition(Some(Failed), to),
                Err(IllegalPhaseTransition { from: Failed, to })
            );
            assert!(MachinePhase::check_transition(Some(Deleting), to).is_err());
        }
        assert!(MachinePhase::check_transition(Some(Deleting), Failed).is_err());
    }

    #[test]
    fn no_phase_counts_as_pending() {
        assert!(MachinePhase::check_transition(None, Provisioning).is_ok());
        assert!(MachinePhase::check_transition(None, Ready).is_err());
    }

    fn machine(phase: Option<MachinePhase>, rv: &str) -> Machine {
        let mut m: Machine = serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": "m", "namespace": "org-a", "resourceVersion": rv},
            "spec": {
                "cluster": "c",
                "role": "worker",
                "size": {"cpu": "1", "memory": "1Gi", "disk": "2Gi"},
                "release": "r"
            }
        }))
        .expect("a valid Machine");
        m.status = Some(MachineStatus {
            phase,
            ..Default::default()
        });
        m
    }

    #[test]
    fn a_late_phone_home_cannot_revive_a_failed_machine() {
        let m = machine(Some(Failed), "7");
        let err = m
            .phase_patch(Ready, serde_json::json!({"readyTime": "now"}))
            .expect_err("Failed -> Ready is refused");
        assert_eq!(
            err.to_string(),
            "a Machine cannot go from phase Failed to Ready"
        );
    }

    #[test]
    fn a_phase_patch_is_pinned_to_the_copy_it_was_decided_on() {
        let m = machine(Some(Running), "42");
        let patch = m
            .phase_patch(Ready, serde_json::json!({"readyTime": "now"}))
            .expect("Running -> Ready is legal");
        assert_eq!(
            patch,
            serde_json::json!({
                "metadata": {"resourceVersion": "42"},
                "status": {"phase": "Ready", "readyTime": "now"}
            })
        );
    }
}
