//! A bare-metal machine with one NIC whose production network is a VLAN of it:
//! PXE on the provisioning network's untagged frames, then the installed system
//! brings up an 802.1Q link on the same NIC with the production address and
//! gateway from its BareMetalMachine, and its `shoal agent` reaches the API over
//! that VLAN (routed by the boot server to the API's address). The machine ends
//! Joined with its Host's underlay on the VLAN, and the lab's access port on the
//! VLAN (in user space: this machine's kernel has no 8021q; see
//! `shoal_e2e::vlanport`) counted the agent's tagged frames. Bad VLAN settings are refused, naming the field.
//! Needs root, QEMU, dnsmasq, ipxe, ipxe-qemu and the test image (`scripts/setup.sh`).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use serde_json::{json, Value};
use shoal_e2e::kubelab::tail;
use shoal_e2e::pxelab::{PxeLab, PRODUCTION_VLAN, VLAN_SERVER};
use shoal_e2e::rawboot::GuestImage;

const MAC: &str = "52:54:00:78:03:01";
const ADDRESS: &str = "10.80.0.11";

/// `kubectl apply` of `obj`: the command's output.
fn apply(lab: &PxeLab, obj: &Value) -> Result<std::process::Output> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("object");
    let file = lab.dir().join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec(obj)?)?;
    lab.kubectl(&["apply", "-f", &file.display().to_string()])
}

fn machine(name: &str, network: Value) -> Value {
    json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "BareMetalMachine",
        "metadata": {"name": name},
        "spec": {"mac": MAC, "role": "worker", "network": network},
    })
}

#[test]
fn a_machine_joins_over_a_production_vlan_of_its_provisioning_nic() -> Result<()> {
    let image = GuestImage::find()?;
    let mut lab = PxeLab::joining(&format!("svl{}", std::process::id()), &image, 600)?;

    // The same NIC for PXE and production needs a VLAN; a VLAN id must be one.
    let out = apply(
        &lab,
        &machine(
            "rack3-u1",
            json!({"mac": MAC, "address": format!("{ADDRESS}/24")}),
        ),
    )?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && said.contains("spec.network.mac")
            && said.contains("spec.network.vlan"),
        "the provisioning NIC without a VLAN: {said}"
    );
    let out = apply(
        &lab,
        &machine(
            "rack3-u1",
            json!({"mac": MAC, "vlan": 4095, "address": format!("{ADDRESS}/24")}),
        ),
    )?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && said.contains("spec.network.vlan") && said.contains("1 to 4094"),
        "VLAN 4095: {said}"
    );

    let out = apply(
        &lab,
        &machine(
            "rack3-u1",
            json!({"mac": MAC, "vlan": PRODUCTION_VLAN, "address": format!("{ADDRESS}/24"),
                   "gateway": VLAN_SERVER.to_string()}),
        ),
    )?;
    ensure!(
        out.status.success(),
        "kubectl apply rack3-u1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames_before = lab.vlan_frames()?;
    let started = Instant::now();
    lab.launch_with(MAC, None, None)?;
    let console = lab.vms[0].console.clone();
    let deadline = started + Duration::from_secs(300);
    loop {
        let out = lab.kubectl(&[
            "get",
            "baremetalmachine",
            "rack3-u1",
            "-o",
            "jsonpath={.status.state}",
        ])?;
        if String::from_utf8_lossy(&out.stdout) == "Joined" {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "rack3-u1 is not Joined after 300 s\nconsole:\n{}\n{}",
                tail(&console, 40),
                lab.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let joined = started.elapsed();

    // Its Host's underlay is the VLAN address, and it is Ready.
    assert_eq!(lab.ready_host_underlay("rack3-u1")?, ADDRESS);
    let shown = std::fs::read_to_string(&console)?;
    let want = format!("production network up: {ADDRESS}/24 on eth0.{PRODUCTION_VLAN}");
    ensure!(
        shown.contains(&want),
        "the console lacks {want:?}:\n{}",
        tail(&console, 40)
    );
    // The agent's traffic crossed the provisioning bridge tagged: the lab's access
    // port on the VLAN passed it to the boot server.
    let rx = lab.vlan_frames()? - frames_before;
    ensure!(rx >= 20, "only {rx} packets on VLAN {PRODUCTION_VLAN}");

    let shown = lab.shoal(&["baremetal", "show", "rack3-u1"])?;
    let shown = String::from_utf8_lossy(&shown.stdout);
    let want = format!(
        "Network:   {ADDRESS}/24 on VLAN {PRODUCTION_VLAN} of NIC {MAC}, gateway {VLAN_SERVER}"
    );
    ensure!(
        shown.contains(&want),
        "baremetal show lacks {want:?}: {shown}"
    );
    println!(
        "bench: power-on to Joined over a production VLAN {:.1} s ({rx} packets on the VLAN)",
        joined.as_secs_f64()
    );
    Ok(())
}
