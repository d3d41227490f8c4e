//! `shoal host drain` by live migration: each Machine on the host gets a target host
//! that fits it (`spec.migration`), the host agents move the running VMs, and the
//! drain waits until no Machine is left on the host.

use std::collections::BTreeMap;

use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use shoal_api::{Host, Machine, MachinePhase, MigrationState};

use crate::args::WaitArgs;
use crate::client::CliError;
use crate::commands::cluster_view::{condition, role_name};
use crate::commands::wait::{Deadline, LinePrinter};
use crate::output::emit_line;

/// Free CPU (millicores) and memory (bytes) of a host.
type Room = (u64, u64);

fn free_room(h: &Host) -> Option<Room> {
    let st = h.status.as_ref()?;
    let q = |t: &shoal_api::ResourceTotals| {
        (
            t.cpu.as_ref().map(|q| q.as_millis()).unwrap_or(0),
            t.memory.as_ref().map(|q| q.as_bytes()).unwrap_or(0),
        )
    };
    let (cpu, mem) = q(&st.allocatable);
    let (used_cpu, used_mem) = q(&st.allocated);
    Some((cpu.saturating_sub(used_cpu), mem.saturating_sub(used_mem)))
}

fn ready(h: &Host) -> bool {
    h.status
        .as_ref()
        .and_then(|s| condition(&s.conditions, "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Where each running Machine on `from` moves: `(machine, target)` pairs, and the
/// Machines no host fits. Targets are Ready, schedulable hosts other than `from`
/// with room, the roomiest first; each choice takes its room.
pub fn targets(
    machines: &[Machine],
    hosts: &[Host],
    from: &str,
) -> (Vec<(Machine, String)>, Vec<Machine>) {
    let mut room: BTreeMap<String, Room> = hosts
        .iter()
        .filter(|h| h.name_any() != from && ready(h) && !h.spec.unschedulable)
        .filter_map(|h| Some((h.name_any(), free_room(h)?)))
        .collect();
    let (mut moves, mut stuck) = (Vec::new(), Vec::new());
    let mut on_host: Vec<&Machine> = machines
        .iter()
        .filter(|m| {
            m.spec.host_name.as_deref() == Some(from) && m.metadata.deletion_timestamp.is_none()
        })
        .collect();
    on_host.sort_by_key(|m| (m.namespace(), m.name_any()));
    for m in on_host {
        let need = (m.spec.size.cpu.as_millis(), m.spec.size.memory.as_bytes());
        let best = room
            .iter()
            .filter(|(_, r)| r.0 >= need.0 && r.1 >= need.1)
            .max_by_key(|(name, r)| (r.1, std::cmp::Reverse((*name).clone())))
            .map(|(name, _)| name.clone());
        match best {
            Some(target) => {
                if let Some(r) = room.get_mut(&target) {
                    *r = (r.0 - need.0, r.1 - need.1);
                }
                moves.push((m.clone(), target));
            }
            None => stuck.push(m.clone()),
        }
    }
    (moves, stuck)
}

/// Asks the agents to move every Machine of host `name` to a host that fits it,
/// and waits (if asked) until none is left there. Machines that no host fits, or
/// whose migration fails, are named with what to do.
pub async fn drain(client: &Client, name: &str, wait: WaitArgs) -> Result<(), CliError> {
    let all: Api<Machine> = Api::all(client.clone());
    let hosts = Api::<Host>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let machines = all.list(&ListParams::default()).await?.items;
    let (moves, stuck) = targets(&machines, &hosts, name);
    for (m, target) in &moves {
        let ns = m.namespace().unwrap_or_default();
        let api: Api<Machine> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"spec": {"migration": {"targetHost": target}}});
        api.patch(
            &m.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        emit_line(format_args!(
            "machine.shoal.io/{} migrating to {target} ({ns}, {})",
            m.name_any(),
            role_name(m.spec.role)
        ))?;
    }
    if moves.is_empty() && stuck.is_empty() {
        return emit_line(format_args!("host {name} runs no machines to drain"));
    }
    if !stuck.is_empty() {
        let names: Vec<String> = stuck
            .iter()
            .map(|m| format!("{}/{}", m.namespace().unwrap_or_default(), m.name_any()))
            .collect();
        return Err(CliError::Usage(format!(
            "no other Ready, schedulable host has room for {}: add a host or free room, or \
             drain with --replace to delete them so that their clusters replace them",
            names.join(", ")
        )));
    }
    if !wait.wait {
        return Ok(());
    }
    let deadline = Deadline::after(wait.timeout);
    let mut lines = LinePrinter::default();
    loop {
        let now = all.list(&ListParams::default()).await?.items;
        let mut left = Vec::new();
        for (m, target) in &moves {
            let Some(cur) = now
                .iter()
                .find(|c| c.uid() == m.uid() && c.namespace() == m.namespace())
            else {
                continue; // deleted meanwhile: nothing left to move
            };
            let id = format!("{}/{}", cur.namespace().unwrap_or_default(), cur.name_any());
            if cur.spec.host_name.as_deref() != Some(name) {
                continue;
            }
            let st = cur.status.as_ref().and_then(|s| s.migration.as_ref());
            if cur.spec.migration.is_none() {
                if let Some(st) = st.filter(|s| s.state == MigrationState::Failed) {
                    return Err(CliError::Usage(format!(
                        "machine {id} did not move to {target}: {}; it still runs on {name}. \
                         Drain again to retry, or with --replace",
                        st.message.as_deref().unwrap_or("the migration failed")
                    )));
                }
            }
            let phase = cur.status.as_ref().and_then(|s| s.phase);
            let doing = match (phase, st) {
                (Some(MachinePhase::Migrating), Some(s)) => {
                    s.progress.clone().unwrap_or_else(|| "migrating".into())
                }
                _ => "waiting for the target host".into(),
            };
            left.push(format!("{id} ({doing})"));
        }
        if left.is_empty() {
            return emit_line(format_args!("host {name} drained"));
        }
        let line = format!(
            "waiting for {} machines to move: {}",
            left.len(),
            left.join(", ")
        );
        lines.print(line.clone())?;
        if !deadline.tick().await {
            return Err(deadline.timeout(
                format!("the machines on host {name} to move"),
                format!(
                    "{line}; the host agents on both hosts carry the move out (are they running?)"
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{Condition, HostSpec, HostStatus, MachineSpec, ResourceTotals};

    fn q(s: &str) -> Option<shoal_api::validate::Quantity> {
        Some(shoal_api::validate::Quantity::parse(s).expect("quantity"))
    }

    fn host(name: &str, free_mem: &str, cordoned: bool, is_ready: bool) -> Host {
        let mut h = Host::new(
            name,
            HostSpec {
                unschedulable: cordoned,
            },
        );
        h.status = Some(HostStatus {
            allocatable: ResourceTotals {
                cpu: q("4"),
                memory: q(free_mem),
                disk: None,
            },
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if is_ready { "True" } else { "False" }.into(),
                reason: "x".into(),
                message: String::new(),
                last_transition_time: None,
                observed_generation: None,
            }],
            ..Default::default()
        });
        h
    }

    fn machine(name: &str, host: &str, mem: &str) -> Machine {
        let spec: MachineSpec = serde_json::from_value(json!({
            "cluster": "c", "role": "worker", "release": "r", "hostName": host,
            "size": {"cpu": "1", "memory": mem, "disk": "1Gi"}
        }))
        .expect("spec");
        let mut m = Machine::new(name, spec);
        m.metadata.namespace = Some("org-a".into());
        m
    }

    #[test]
    fn each_machine_goes_to_the_roomiest_host_that_fits_and_takes_its_room() {
        let hosts = [
            host("h1", "8Gi", false, true),
            host("h2", "1Gi", false, true),
            host("h3", "1536Mi", false, true),
            host("h4", "64Gi", true, true),
            host("h5", "64Gi", false, false),
        ];
        let machines = [
            machine("a", "h1", "1Gi"),
            machine("b", "h1", "1Gi"),
            machine("c", "h1", "2Gi"),
            machine("elsewhere", "h2", "1Gi"),
        ];
        let (moves, stuck) = targets(&machines, &hosts, "h1");
        let moves: Vec<(String, String)> = moves
            .iter()
            .map(|(m, t)| (m.name_any(), t.clone()))
            .collect();
        // a takes h3's room (the roomiest), b then fits only h2; c fits nowhere:
        // h4 is cordoned and h5 not Ready.
        assert_eq!(
            moves,
            [("a".into(), "h3".into()), ("b".into(), "h2".into())]
        );
        assert_eq!(stuck.len(), 1);
        assert_eq!(stuck[0].name_any(), "c");
    }
}
