//! `shoal host`: list hosts, cordon and uncordon them, and drain their machines.

use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use shoal_api::validate::Quantity;
use shoal_api::{Host, Machine};

use crate::args::{HostCommand, Output};
use crate::client::{find_kind, CliError};
use crate::commands::cluster_view::condition;
use crate::output::{emit, emit_line, print, render_columns};

/// The columns of `host list`.
pub const HOST_COLUMNS: [&str; 8] = [
    "NAME",
    "READY",
    "SCHEDULABLE",
    "UNDERLAY",
    "KVM",
    "CPU",
    "MEMORY",
    "MACHINES",
];

/// CPU cores as a person reads them: `8`, `0.5`.
fn cpu_text(q: Option<&Quantity>) -> String {
    match q {
        None => "?".into(),
        Some(q) if q.value().fract() == 0.0 => format!("{}", q.value()),
        Some(q) => format!("{:.1}", q.value()),
    }
}

/// Bytes in binary units: `16Gi`, `1.5Gi`, `512Mi`.
fn bytes_text(q: Option<&Quantity>) -> String {
    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;
    let Some(q) = q else { return "?".into() };
    let b = q.as_bytes();
    if b == 0 {
        "0".into()
    } else if b >= GI && b % GI == 0 {
        format!("{}Gi", b / GI)
    } else if b >= GI {
        format!("{:.1}Gi", b as f64 / GI as f64)
    } else if b % MI == 0 {
        format!("{}Mi", b / MI)
    } else {
        b.to_string()
    }
}

/// `allocated/allocatable` of one resource; nothing allocated reads as `0`.
fn used_of(
    allocated: Option<&Quantity>,
    allocatable: Option<&Quantity>,
    text: fn(Option<&Quantity>) -> String,
) -> String {
    let used = allocated.map_or_else(|| "0".to_owned(), |q| text(Some(q)));
    format!("{used}/{}", text(allocatable))
}

/// One row of `host list` per host, sorted by name; `machines` is every Machine in
/// every namespace.
pub fn host_rows(hosts: &[Host], machines: &[Machine]) -> Vec<Vec<String>> {
    let mut sorted: Vec<&Host> = hosts.iter().collect();
    sorted.sort_by_key(|h| h.name_any());
    sorted
        .into_iter()
        .map(|h| {
            let name = h.name_any();
            let status = h.status.clone().unwrap_or_default();
            let ready = condition(&status.conditions, "Ready")
                .map(|c| c.status.clone())
                .unwrap_or_else(|| "Unknown".into());
            let count = machines
                .iter()
                .filter(|m| m.spec.host_name.as_deref() == Some(name.as_str()))
                .count();
            vec![
                name,
                ready,
                if h.spec.unschedulable {
                    "no (cordoned)"
                } else {
                    "yes"
                }
                .into(),
                status
                    .underlay_ip
                    .clone()
                    .unwrap_or_else(|| "<none>".into()),
                if status.kvm { "yes" } else { "no" }.into(),
                used_of(
                    status.allocated.cpu.as_ref(),
                    status.allocatable.cpu.as_ref(),
                    cpu_text,
                ),
                used_of(
                    status.allocated.memory.as_ref(),
                    status.allocatable.memory.as_ref(),
                    bytes_text,
                ),
                count.to_string(),
            ]
        })
        .collect()
}

/// Runs a host subcommand.
pub async fn run(client: &Client, cmd: &HostCommand) -> Result<(), CliError> {
    let hosts: Api<Host> = Api::all(client.clone());
    match cmd {
        HostCommand::List { output } => list(client, &hosts, *output).await,
        HostCommand::Cordon { name } => set_unschedulable(&hosts, name, true).await,
        HostCommand::Uncordon { name } => set_unschedulable(&hosts, name, false).await,
        HostCommand::Drain {
            name,
            replace,
            include_control_plane,
            wait,
        } => {
            get_host(&hosts, name).await?;
            super::host_drain::drain(&hosts, name, *replace, *include_control_plane, *wait).await
        }
    }
}

async fn list(client: &Client, hosts: &Api<Host>, output: Output) -> Result<(), CliError> {
    let items = hosts.list(&ListParams::default()).await?.items;
    if output != Output::Table {
        let values: Vec<Value> = items
            .iter()
            .filter_map(|h| serde_json::to_value(h).ok())
            .collect();
        return print(find_kind("hosts")?, &values, false, false, output);
    }
    if items.is_empty() {
        eprintln!("No hosts registered; start 'shoal agent' on a machine to add one.");
        return Ok(());
    }
    let machines = Api::<Machine>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    emit(&render_columns(
        &HOST_COLUMNS,
        &host_rows(&items, &machines),
    ))
}

/// The host, or an error naming the hosts that exist.
async fn get_host(hosts: &Api<Host>, name: &str) -> Result<Host, CliError> {
    if let Some(h) = hosts.get_opt(name).await? {
        return Ok(h);
    }
    let mut names: Vec<String> = hosts
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    let known = if names.is_empty() {
        "no hosts are registered".to_owned()
    } else {
        format!("hosts: {}", names.join(", "))
    };
    Err(CliError::Usage(format!(
        "host {name:?} does not exist; {known}"
    )))
}

/// Cordons (`true`) or uncordons (`false`) a host.
async fn set_unschedulable(hosts: &Api<Host>, name: &str, cordon: bool) -> Result<(), CliError> {
    let host = get_host(hosts, name).await?;
    let word = if cordon { "cordoned" } else { "uncordoned" };
    if host.spec.unschedulable == cordon {
        return emit_line(format_args!("host.shoal.io/{name} already {word}"));
    }
    // Uncordoning also ends a drain (a drain needs the host cordoned).
    let patch = if cordon {
        json!({"spec": {"unschedulable": true}})
    } else {
        json!({"spec": {"unschedulable": false, "drain": null}})
    };
    hosts
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    emit_line(format_args!("host.shoal.io/{name} {word}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::cluster_view::role_name;
    use shoal_api::MachineRole;
    use shoal_api::{Condition, HostSpec, HostStatus, ResourceTotals};

    fn quantity(s: &str) -> Option<Quantity> {
        Some(Quantity::parse(s).expect("a quantity"))
    }

    fn host(name: &str, cordoned: bool, ready: Option<&str>) -> Host {
        let mut h = Host::new(
            name,
            HostSpec {
                unschedulable: cordoned,
                drain: None,
            },
        );
        let mut status = HostStatus {
            underlay_ip: Some("192.0.2.10".into()),
            kvm: true,
            ..Default::default()
        };
        status.allocatable = ResourceTotals {
            cpu: quantity("16"),
            memory: quantity("16384Mi"),
            disk: quantity("100Gi"),
        };
        status.allocated = ResourceTotals {
            cpu: quantity("4"),
            memory: quantity("3Gi"),
            disk: quantity("20Gi"),
        };
        if let Some(r) = ready {
            status.conditions.push(Condition {
                type_: "Ready".into(),
                status: r.into(),
                ..Default::default()
            });
        }
        h.status = Some(status);
        h
    }

    fn machine(ns: &str, name: &str, role: MachineRole, host: Option<&str>) -> Machine {
        let mut m: Machine = serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"cluster": "demo", "role": role_name(role), "release": "r1",
                     "size": {"cpu": "2", "memory": "2Gi", "disk": "10Gi"}},
        }))
        .expect("a valid Machine");
        m.spec.host_name = host.map(str::to_owned);
        m
    }

    #[test]
    fn rows_show_state_capacity_and_machine_counts() {
        let mut bare = Host::new("b-bare", HostSpec::default());
        bare.status = None;
        let hosts = vec![host("h1", true, Some("True")), bare];
        let machines = vec![
            machine("org-a", "demo-cp-0", MachineRole::ControlPlane, Some("h1")),
            machine("org-b", "x-default-0", MachineRole::Worker, Some("h1")),
            machine("org-b", "x-default-1", MachineRole::Worker, None),
        ];
        let rows = host_rows(&hosts, &machines);
        assert_eq!(
            rows,
            vec![
                vec!["b-bare", "Unknown", "yes", "<none>", "no", "0/?", "0/?", "0"],
                vec![
                    "h1",
                    "True",
                    "no (cordoned)",
                    "192.0.2.10",
                    "yes",
                    "4/16",
                    "3Gi/16Gi",
                    "2"
                ],
            ]
        );
    }

    #[test]
    fn units_read_naturally() {
        assert_eq!(cpu_text(quantity("500m").as_ref()), "0.5");
        assert_eq!(bytes_text(quantity("1536Mi").as_ref()), "1.5Gi");
        assert_eq!(bytes_text(quantity("512Mi").as_ref()), "512Mi");
        assert_eq!(bytes_text(quantity("0").as_ref()), "0");
        assert_eq!(bytes_text(None), "?");
    }
}
