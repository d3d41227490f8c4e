//! Writes a Machine's phase through the transition table of `shoal-api`: every
//! phase this crate writes (the host agent and the simulator) goes through
//! [`write_phase`].

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use shoal_api::{IllegalPhaseTransition, Machine, MachinePhase};

/// How many times a write decided on a stale copy is re-read and retried.
const STALE_RETRIES: usize = 3;

/// What became of a phase write.
#[derive(Debug)]
pub enum PhaseWrite {
    /// The server took it; the Machine as written.
    Written(Box<Machine>),
    /// The table refuses the change from the Machine's current phase; nothing
    /// was written.
    Refused(IllegalPhaseTransition),
    /// The Machine is gone.
    Gone,
}

/// A phase write the server did not take.
#[derive(Debug, thiserror::Error)]
#[error("writing phase {to} of Machine {namespace}/{name}")]
pub struct PhaseWriteError {
    /// The Machine's namespace.
    pub namespace: String,
    /// The Machine's name.
    pub name: String,
    /// The phase asked for.
    pub to: MachinePhase,
    /// Why it failed.
    #[source]
    pub source: kube::Error,
}

/// Sets `to` (and the other fields of `status`) on the Machine `seen`, if the
/// transition table allows it from the Machine's phase. The patch is pinned to
/// `seen`'s resourceVersion; when the server holds a newer copy (409), that copy
/// is read and the decision made again on it, so a late writer (a phone-home
/// that arrives after the Machine was failed) is refused rather than applied.
/// A refusal is logged here.
pub async fn write_phase(
    api: &Api<Machine>,
    seen: &Machine,
    to: MachinePhase,
    status: serde_json::Value,
) -> Result<PhaseWrite, PhaseWriteError> {
    let name = seen.name_any();
    let err = |source| PhaseWriteError {
        namespace: seen.namespace().unwrap_or_default(),
        name: name.clone(),
        to,
        source,
    };
    let mut current = seen.clone();
    let mut attempt = 0;
    loop {
        let patch = match current.phase_patch(to, status.clone()) {
            Ok(p) => p,
            Err(illegal) => {
                tracing::warn!(
                    machine = %name,
                    namespace = %seen.namespace().unwrap_or_default(),
                    error = %illegal,
                    "phase change refused"
                );
                return Ok(PhaseWrite::Refused(illegal));
            }
        };
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(m) => return Ok(PhaseWrite::Written(Box::new(m))),
            Err(e) if shoal_kube::is_not_found(&e) => return Ok(PhaseWrite::Gone),
            Err(e) if shoal_kube::is_conflict(&e) && attempt < STALE_RETRIES => {
                attempt += 1;
                current = match api.get_opt(&name).await.map_err(err)? {
                    Some(m) => m,
                    None => return Ok(PhaseWrite::Gone),
                };
            }
            Err(e) => return Err(err(e)),
        }
    }
}
