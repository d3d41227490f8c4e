//! `shoal baremetal`: the bare-metal inventory that `shoal pxe --inventory` keeps.

use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use shoal_api::wellknown::annotation;
use shoal_api::BareMetalMachine;

use crate::args::{BaremetalCommand, Output};
use crate::client::{find_kind, CliError};
use crate::output::{emit, print, render_columns};

/// The columns of `baremetal list`.
pub const COLUMNS: [&str; 6] = ["NAME", "MAC", "ROLE", "STATE", "IP", "HOSTNAME"];

fn role_text(m: &BareMetalMachine) -> String {
    serde_json::to_value(m.spec.role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn state_text(m: &BareMetalMachine) -> String {
    m.status
        .as_ref()
        .and_then(|s| s.state)
        .map_or_else(|| "<none>".to_owned(), |s| format!("{s:?}"))
}

/// One row per machine, sorted by name.
pub fn rows(items: &[BareMetalMachine]) -> Vec<Vec<String>> {
    let mut sorted: Vec<&BareMetalMachine> = items.iter().collect();
    sorted.sort_by_key(|m| m.name_any());
    sorted
        .into_iter()
        .map(|m| {
            let status = m.status.clone().unwrap_or_default();
            vec![
                m.name_any(),
                m.spec.mac.clone(),
                role_text(m),
                state_text(m),
                status.ip.unwrap_or_else(|| "<none>".into()),
                status.hostname.unwrap_or_else(|| "<none>".into()),
            ]
        })
        .collect()
}

/// `baremetal show`: the machine and its history, one change per line.
pub fn describe(m: &BareMetalMachine) -> String {
    let status = m.status.clone().unwrap_or_default();
    let mut out = format!(
        "Name:      {}\nMAC:       {}\nRole:      {}\nProfile:   {}\nState:     {}\nIP:        {}\nHostname:  {}\nHistory:\n",
        m.name_any(),
        m.spec.mac,
        role_text(m),
        m.spec.profile.as_deref().unwrap_or("<none>"),
        state_text(m),
        status.ip.as_deref().unwrap_or("<none>"),
        status.hostname.as_deref().unwrap_or("<none>"),
    );
    if let Some(bmc) = &m.spec.bmc {
        out.insert_str(
            out.find("History:").unwrap_or(out.len()),
            &format!(
                "BMC:       {} (system {}, credentials {})\nPower:     {}\n",
                bmc.address,
                bmc.system.as_deref().unwrap_or("<the only one>"),
                bmc.credentials_secret,
                status.power.as_deref().unwrap_or("<unknown>"),
            ),
        );
    }
    if let Some(f) = &status.facts {
        let mut line = [f.manufacturer.as_deref(), f.product.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        for (label, value) in [
            ("serial", f.serial.as_deref()),
            ("uuid", f.uuid.as_deref()),
            ("firmware", f.platform.as_deref()),
            ("arch", f.arch.as_deref()),
        ] {
            if let Some(v) = value {
                if !line.is_empty() {
                    line.push_str(", ");
                }
                line.push_str(&format!("{label} {v}"));
            }
        }
        out.insert_str(
            out.find("History:").unwrap_or(out.len()),
            &format!("Hardware:  {line}\n"),
        );
    }
    if let Some(net) = &m.spec.network {
        out.insert_str(
            out.find("History:").unwrap_or(out.len()),
            &format!(
                "Network:   {} on {}NIC {}{}\n",
                net.address,
                net.vlan.map_or(String::new(), |v| format!("VLAN {v} of ")),
                net.mac,
                net.gateway
                    .as_deref()
                    .map_or(String::new(), |gw| format!(", gateway {gw}")),
            ),
        );
    }
    if !status.conditions.is_empty() {
        let at = out.find("History:").unwrap_or(out.len());
        let lines: String = status
            .conditions
            .iter()
            .map(|c| format!("  {}={}  {}  {}\n", c.type_, c.status, c.reason, c.message))
            .collect();
        out.insert_str(at, &format!("Conditions:\n{lines}"));
    }
    if status.history.is_empty() {
        out.push_str("  (none yet)\n");
    }
    for t in &status.history {
        out.push_str(&format!(
            "  {}  {:<12}  {}\n",
            t.at,
            format!("{:?}", t.state),
            t.reason
        ));
    }
    out
}

/// Runs a baremetal subcommand.
pub async fn run(client: &Client, cmd: &BaremetalCommand) -> Result<(), CliError> {
    let api: Api<BareMetalMachine> = Api::all(client.clone());
    match cmd {
        BaremetalCommand::List { output } => {
            let items = api.list(&ListParams::default()).await?.items;
            if *output != Output::Table {
                let values: Vec<Value> = items
                    .iter()
                    .filter_map(|m| serde_json::to_value(m).ok())
                    .collect();
                return print(
                    find_kind("baremetalmachines")?,
                    &values,
                    false,
                    false,
                    *output,
                );
            }
            if items.is_empty() {
                eprintln!("No bare-metal machines yet; 'shoal pxe --inventory' registers those that PXE-boot.");
                return Ok(());
            }
            emit(&render_columns(&COLUMNS, &rows(&items)))
        }
        BaremetalCommand::Show { machine } => emit(&describe(&find(&api, machine).await?)),
        BaremetalCommand::Reprovision { machine } => {
            request(
                &api,
                machine,
                "reprovision",
                "its BMC will boot it from PXE",
            )
            .await
        }
        BaremetalCommand::Deprovision { machine } => {
            request(&api, machine, "deprovision", "its BMC will power it off").await
        }
    }
}

/// Asks the inventory to have `machine`'s BMC do `action`, through the
/// `shoal.io/bmc-request` annotation.
async fn request(
    api: &Api<BareMetalMachine>,
    machine: &str,
    action: &str,
    what: &str,
) -> Result<(), CliError> {
    let m = find(api, machine).await?;
    let name = m.name_any();
    if m.spec.bmc.is_none() {
        return Err(CliError::Usage(format!(
            "{name} has no BMC (spec.bmc): Shoal cannot power it; set spec.bmc, or power it by hand"
        )));
    }
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let patch =
        json!({"metadata": {"annotations": {(annotation::BMC_REQUEST): format!("{action}@{at}")}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    eprintln!("{name}: {action} requested; {what} ('shoal baremetal show {name}' follows it)");
    Ok(())
}

/// The machine named `machine`, or with that MAC.
async fn find(api: &Api<BareMetalMachine>, machine: &str) -> Result<BareMetalMachine, CliError> {
    if let Some(m) = api.get_opt(machine).await? {
        return Ok(m);
    }
    let want = machine.to_ascii_lowercase().replace('-', ":");
    api.list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|m| m.spec.mac.to_ascii_lowercase() == want)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no bare-metal machine named or with MAC {machine:?}; 'shoal baremetal list' shows them"
            ))
        })
}
