//! The Machine phase transition table against a real `shoal server`: the
//! writers the agent and the controllers use decide on the copy they hold, and
//! a copy gone stale is re-read, so a late phone-home cannot revive a Machine
//! that was failed meanwhile. No VM, no agent process, no controllers.

use std::net::Ipv4Addr;

use anyhow::{bail, Result};
use kube::api::{Api, Patch, PatchParams};
use shoal_agent::phase::{write_phase, PhaseWrite};
use shoal_api::{Machine, MachinePhase};
use shoal_e2e::fleet::{create, machine, setup, NS};
use shoal_e2e::ServerProc;

async fn set_phase_raw(api: &Api<Machine>, name: &str, phase: &str) -> Result<Machine> {
    Ok(api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"phase": phase}})),
        )
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_phone_home_does_not_revive_a_failed_machine() -> Result<()> {
    let server = ServerProc::start_with(&["--controllers=false"])?;
    let client = server.client().await?;
    setup(&client, &[("a", 101, "10.101.0.0/24")]).await?;
    let api: Api<Machine> = Api::namespaced(client.clone(), NS);
    create(
        &api,
        machine(
            "late",
            "a",
            "h1",
            Ipv4Addr::new(10, 101, 0, 11),
            "1",
            "test",
        ),
    )
    .await?;
    // The agent's cache holds the Machine Running ...
    let stale = set_phase_raw(&api, "late", "Running").await?;
    // ... when the host lifecycle controller fails it (the host looked lost).
    let failed = set_phase_raw(&api, "late", "Failed").await?;
    assert_eq!(failed.phase(), Some(MachinePhase::Failed));

    // The phone-home then arrives and is decided on the stale copy: the server
    // answers 409, the writer re-reads, and the table refuses Failed -> Ready.
    let ready = serde_json::json!({"readyTime": "2026-01-01T00:00:00Z"});
    match write_phase(&api, &stale, MachinePhase::Ready, ready.clone()).await? {
        PhaseWrite::Refused(illegal) => {
            assert_eq!(illegal.from, MachinePhase::Failed);
            assert_eq!(illegal.to, MachinePhase::Ready);
        }
        other => bail!("a late phone-home was not refused: {other:?}"),
    }
    let now = api.get("late").await?;
    assert_eq!(now.phase(), Some(MachinePhase::Failed));
    assert!(
        now.status
            .as_ref()
            .and_then(|s| s.ready_time.as_ref())
            .is_none(),
        "nothing of the refused write landed: {:?}",
        now.status
    );

    // A legal change decided on a copy that went stale for an unrelated reason
    // still lands after the re-read.
    create(
        &api,
        machine(
            "prompt",
            "a",
            "h1",
            Ipv4Addr::new(10, 101, 0, 12),
            "1",
            "test",
        ),
    )
    .await?;
    let stale = set_phase_raw(&api, "prompt", "Running").await?;
    api.patch(
        "prompt",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"touched": "yes"}}})),
    )
    .await?;
    match write_phase(&api, &stale, MachinePhase::Ready, ready).await? {
        PhaseWrite::Written(m) => assert_eq!(m.phase(), Some(MachinePhase::Ready)),
        other => bail!("a legal phone-home was not written: {other:?}"),
    }

    // The controllers' writer refuses the same way (here Failed -> Pending, what
    // the scheduler would write on an unschedulable Machine).
    let failed = api.get("late").await?;
    let written = shoal_controllers::machines::set_phase(
        &api,
        &failed,
        MachinePhase::Pending,
        serde_json::json!({}),
    )
    .await?;
    assert!(!written, "Failed -> Pending was written");
    assert_eq!(api.get("late").await?.phase(), Some(MachinePhase::Failed));
    Ok(())
}
