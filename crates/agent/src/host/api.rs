//! What the host loop writes to and reads from the API besides its watches: Machine
//! phases and conditions, its finalizer, bootstrap Secrets and the Host's status.
//! [`HostApi`] is the boundary; [`KubeHostApi`] is the real one, and the loop's unit
//! tests use an in-memory one.

use std::future::Future;

use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use shoal_api::{Condition, Machine, MachinePhase};
use shoal_kube::finalizer::{self, Change};

use super::register::{self, HostFacts};
use super::{AgentError, FINALIZER};
use crate::phase::{PhaseWrite, PhaseWriteError};

/// vCPUs, memory bytes and disk bytes allocated to VMs on the host.
pub type Allocation = (u32, u64, u64);

/// Why a Machine's user-data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UserDataError {
    /// The bootstrap Secret could not be read.
    #[error("bootstrap secret {secret}")]
    Get {
        /// `namespace/name`.
        secret: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// The Secret has no `value`.
    #[error("bootstrap secret {secret} has no key 'value'")]
    NoValue {
        /// `namespace/name`.
        secret: String,
    },
}

/// The API calls of the host loop.
pub trait HostApi: Send + Sync {
    /// Writes phase `to` and `status` on the Machine `seen`, through the phase
    /// transition table.
    fn write_phase(
        &self,
        seen: &Machine,
        to: MachinePhase,
        status: serde_json::Value,
    ) -> impl Future<Output = Result<PhaseWrite, PhaseWriteError>> + Send;
    /// Adds (`present`) or removes the agent's finalizer on `m` as it was read.
    fn set_finalizer(
        &self,
        m: &Machine,
        present: bool,
    ) -> impl Future<Output = Result<Change, kube::Error>> + Send;
    /// The `value` of the bootstrap Secret `namespace/name`.
    fn bootstrap_value(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<String, UserDataError>> + Send;
    /// After a live migration: the Machine runs on `target` now, and its request
    /// is done (`spec.hostName`, `spec.migration`).
    fn hand_over(
        &self,
        m: &Machine,
        target: &str,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Clears the Machine's migration request after a failed migration.
    fn end_migration(&self, m: &Machine) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Records an Event on Machine `m` (a failure to record is only logged).
    fn event(
        &self,
        m: &Machine,
        warning: bool,
        reason: &str,
        note: String,
    ) -> impl Future<Output = ()> + Send;
    /// Reports the Host's status with what is allocated on it.
    fn report(
        &self,
        facts: &HostFacts,
        allocated: Allocation,
    ) -> impl Future<Output = Result<(), AgentError>> + Send;
}

/// [`HostApi`] through a kube client.
#[derive(Clone)]
pub struct KubeHostApi {
    client: Client,
    recorder: Recorder,
}

impl KubeHostApi {
    /// Calls the API through `client`.
    pub fn new(client: Client) -> Self {
        let recorder = Recorder::new(client.clone(), Reporter::from("shoal-agent"));
        Self { client, recorder }
    }

    fn machines(&self, m: &Machine) -> Api<Machine> {
        Api::namespaced(self.client.clone(), &m.namespace().unwrap_or_default())
    }

    /// Merges `spec` into the Machine's spec.
    async fn patch_spec(&self, m: &Machine, spec: serde_json::Value) -> Result<(), kube::Error> {
        let patch = serde_json::json!({ "spec": spec });
        self.machines(m)
            .patch(
                &m.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map(drop)
    }
}

impl HostApi for KubeHostApi {
    async fn write_phase(
        &self,
        seen: &Machine,
        to: MachinePhase,
        status: serde_json::Value,
    ) -> Result<PhaseWrite, PhaseWriteError> {
        crate::phase::write_phase(&self.machines(seen), seen, to, status).await
    }

    async fn set_finalizer(&self, m: &Machine, present: bool) -> Result<Change, kube::Error> {
        let api = self.machines(m);
        if present {
            finalizer::add(&api, m, FINALIZER).await
        } else {
            finalizer::remove(&api, m, FINALIZER).await
        }
    }

    async fn bootstrap_value(&self, namespace: &str, name: &str) -> Result<String, UserDataError> {
        let secret = format!("{namespace}/{name}");
        let s = Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get(name)
            .await
            .map_err(|source| UserDataError::Get {
                secret: secret.clone(),
                source,
            })?;
        s.data
            .as_ref()
            .and_then(|d| d.get("value"))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .or_else(|| s.string_data.as_ref().and_then(|d| d.get("value").cloned()))
            .ok_or(UserDataError::NoValue { secret })
    }

    async fn hand_over(&self, m: &Machine, target: &str) -> Result<(), kube::Error> {
        self.patch_spec(
            m,
            serde_json::json!({"hostName": target, "migration": null}),
        )
        .await
    }

    async fn end_migration(&self, m: &Machine) -> Result<(), kube::Error> {
        self.patch_spec(m, serde_json::json!({ "migration": null }))
            .await
    }

    async fn event(&self, m: &Machine, warning: bool, reason: &str, note: String) {
        shoal_kube::events::record(&self.recorder, m, warning, reason, note).await;
    }

    async fn report(&self, facts: &HostFacts, allocated: Allocation) -> Result<(), AgentError> {
        register::report(&self.client, facts, allocated).await
    }
}

/// A Machine's `Ready` condition as the agent sets it: status, reason, message.
pub type ReadyCondition<'a> = (&'a str, &'a str, String);

/// The status fields to write for phase `phase` and the `Ready` condition `cond`,
/// with `stamp` naming a time field set to now; `None` when the Machine already
/// says so. A condition whose status holds keeps its transition time.
pub fn status_patch(
    m: &Machine,
    phase: MachinePhase,
    cond: Option<ReadyCondition<'_>>,
    stamp: Option<&str>,
) -> Option<serde_json::Value> {
    let current = m.status.clone().unwrap_or_default();
    let current_cond = current.conditions.iter().find(|c| c.type_ == "Ready");
    let same_cond = match (&cond, current_cond) {
        (Some((s, r, msg)), Some(c)) => c.status == *s && c.reason == *r && c.message == *msg,
        (None, _) => true,
        (Some(_), None) => false,
    };
    if current.phase == Some(phase) && same_cond {
        return None;
    }
    let now = Utc::now().to_rfc3339();
    let mut status = serde_json::json!({});
    if let Some((s, reason, message)) = cond {
        let transition = match current_cond {
            Some(c) if c.status == s => c.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
        // A merge patch replaces the whole list: keep the conditions others own
        // (the controllers' NodeReady).
        let mut conditions = current.conditions.clone();
        shoal_kube::conditions::set(
            &mut conditions,
            Condition {
                type_: "Ready".into(),
                status: s.into(),
                reason: reason.into(),
                message,
                last_transition_time: transition.clone(),
                observed_generation: m.meta().generation,
            },
        );
        if let Some(c) = conditions.iter_mut().find(|c| c.type_ == "Ready") {
            c.last_transition_time = transition;
        }
        status["conditions"] = serde_json::json!(conditions);
    }
    if let Some(field) = stamp {
        status[field] = serde_json::json!(now);
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::MachineStatus;

    fn machine(phase: Option<MachinePhase>, ready: Option<(&str, &str, &str)>) -> Machine {
        let mut m: Machine = serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": "m1", "namespace": "org-x", "generation": 3},
            "spec": {"cluster": "a", "role": "worker", "release": "test",
                     "size": {"cpu": "1", "memory": "512Mi", "disk": "1Gi"}}
        }))
        .expect("valid machine");
        m.status = Some(MachineStatus {
            phase,
            conditions: ready
                .map(|(s, r, msg)| Condition {
                    type_: "Ready".into(),
                    status: s.into(),
                    reason: r.into(),
                    message: msg.into(),
                    last_transition_time: Some("2026-01-01T00:00:00Z".into()),
                    observed_generation: Some(3),
                })
                .into_iter()
                .collect(),
            ..Default::default()
        });
        m
    }

    #[test]
    fn nothing_is_written_when_the_machine_already_says_so() {
        let m = machine(
            Some(MachinePhase::Running),
            Some(("False", "Booting", "waiting")),
        );
        let same = status_patch(
            &m,
            MachinePhase::Running,
            Some(("False", "Booting", "waiting".into())),
            Some("runningTime"),
        );
        assert_eq!(same, None);
    }

    #[test]
    fn a_held_status_keeps_its_transition_time_and_a_new_one_does_not() {
        let m = machine(
            Some(MachinePhase::Running),
            Some(("False", "Booting", "waiting")),
        );
        let held = status_patch(
            &m,
            MachinePhase::Failed,
            Some(("False", "VMExited", "gone".into())),
            None,
        )
        .expect("a change");
        assert_eq!(
            held["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(held["conditions"][0]["observedGeneration"], 3);
        let flipped = status_patch(
            &m,
            MachinePhase::Ready,
            Some(("True", "GuestPhonedHome", "up".into())),
            Some("readyTime"),
        )
        .expect("a change");
        assert_ne!(
            flipped["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert!(flipped["readyTime"].is_string(), "{flipped}");
    }

    #[test]
    fn the_controllers_conditions_survive_the_agents_patch() {
        let mut m = machine(
            Some(MachinePhase::Running),
            Some(("False", "Booting", "up")),
        );
        if let Some(st) = m.status.as_mut() {
            st.conditions.push(Condition {
                type_: "NodeReady".into(),
                status: "False".into(),
                reason: "KubeletNotReady".into(),
                message: "cni plugin not initialized".into(),
                last_transition_time: None,
                observed_generation: None,
            });
        }
        let patch = status_patch(
            &m,
            MachinePhase::Ready,
            Some(("True", "GuestPhonedHome", "up".into())),
            None,
        )
        .expect("a change");
        let types: Vec<&str> = patch["conditions"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(types, vec!["Ready", "NodeReady"], "{patch}");
        assert_eq!(patch["conditions"][0]["status"], "True");
    }
}
