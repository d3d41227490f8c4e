//! BMC power control, driven only through Shoal's API: BareMetalMachines registered
//! with a Redfish BMC (sushy-tools' emulator in front of libvirt-run QEMU, whose
//! virtio NIC carries the real iPXE ROM) are set to boot from PXE and powered on
//! by `shoal pxe --inventory`, boot the test image over the network and phone
//! home: PoweringOn, Discovered, Provisioning, Provisioned, each with its time;
//! the installed system (the test image plus the host agent's initrd layer) brings
//! up its production NIC from the machine's `spec.network` and runs `shoal agent`,
//! whose Host turns Ready: Joined.
//! `shoal baremetal reprovision` power-cycles one into PXE again, `deprovision`
//! powers it off. A machine whose
//! installer never reports ends ProvisioningTimeout, quoting its console log; a
//! BMC that refuses the credentials gives a `BmcReady` condition naming the BMC
//! and the HTTP status.
//! Needs root, QEMU, libvirt, sushy-tools, dnsmasq, ipxe-qemu (`scripts/setup.sh`).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use shoal_e2e::bmclab::{BmcLab, BMC_PASSWORD, BMC_USER};
use shoal_e2e::pxelab::{history_in_time_order, PxeLab, PXE_SERVER};
use shoal_e2e::rawboot::GuestImage;

const GOOD_MAC: &str = "52:54:00:78:01:01";
const SILENT_MAC: &str = "52:54:00:78:01:02";
const LOCKED_MAC: &str = "52:54:00:78:01:03";
/// The good machine's production NIC, and its address there.
const PRODUCTION_MAC: &str = "52:54:00:79:01:01";
const PRODUCTION_ADDRESS: &str = "10.79.0.11";
/// Seconds a machine has to phone home in this lab.
const PROVISION_TIMEOUT: u64 = 75;

fn apply(lab: &PxeLab, obj: &Value) -> Result<()> {
    let file = lab.dir().join(format!(
        "{}.json",
        obj["metadata"]["name"].as_str().unwrap_or("obj")
    ));
    std::fs::write(&file, serde_json::to_vec(obj)?)?;
    let out = lab.kubectl(&["apply", "-f", &file.display().to_string()])?;
    ensure!(
        out.status.success(),
        "kubectl apply {obj}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn machine(name: &str, mac: &str, bmc: Value) -> Value {
    json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "BareMetalMachine",
        "metadata": {"name": name},
        "spec": {"mac": mac, "role": "worker", "bmc": bmc},
    })
}

fn get(lab: &PxeLab, name: &str) -> Result<Value> {
    let out = lab.kubectl(&["get", "baremetalmachine", name, "-o", "json"])?;
    ensure!(
        out.status.success(),
        "kubectl get bmm {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Waits until `test` holds for BareMetalMachine `name`.
fn wait_for(
    lab: &PxeLab,
    bmc: &BmcLab,
    name: &str,
    what: &str,
    timeout: Duration,
    test: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = get(lab, name)?;
        if test(&m) {
            return Ok(m);
        }
        if Instant::now() > deadline {
            bail!(
                "{name} is not {what} after {timeout:?}: {m:#}\n{}\n{}",
                lab.logs(),
                bmc.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn states(m: &Value) -> Vec<String> {
    m["status"]["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["state"].as_str().map(str::to_owned))
        .collect()
}

fn bmc_ready(m: &Value) -> Option<&Value> {
    m["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "BmcReady")
}

#[test]
fn machines_are_powered_on_through_their_bmc_and_provisioned() -> Result<()> {
    let image = GuestImage::find()?;
    let prefix = format!("sbm{}", std::process::id());
    let lab = PxeLab::joining(&prefix, &image, PROVISION_TIMEOUT)?;
    let mut bmc = BmcLab::start(&lab.net, lab.dir(), &prefix)?;
    let good_console = bmc.define_with("good", GOOD_MAC, Some(PRODUCTION_MAC))?;
    let silent_console = bmc.define("silent", SILENT_MAC)?;
    ensure!(bmc.state("good")? == "shut off", "{}", bmc.state("good")?);

    // The silent machine's installer reports to an address nothing listens on.
    let seed = lab.seed_dir().join(SILENT_MAC.replace(':', "-"));
    std::fs::create_dir_all(&seed)?;
    std::fs::write(
        seed.join("user-data"),
        format!("#cloud-config\nphone_home:\n  url: http://{PXE_SERVER}:9/nowhere\n"),
    )?;

    let secret = |name: &str, password: &str| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "shoal-system"},
            "stringData": {"username": BMC_USER, "password": password},
        })
    };
    apply(&lab, &secret("bmc-lab", BMC_PASSWORD))?;
    apply(&lab, &secret("bmc-stale", "an-old-password"))?;
    // A production network that is not one: refused, naming the fields.
    let mut bad = machine("rack9-u9", "52:54:00:78:09:09", json!(null));
    bad["spec"].as_object_mut().context("spec")?.remove("bmc");
    bad["spec"]["network"] = json!({"mac": "52:54:00:78:09:09", "address": "10.79.0.99"});
    let file = lab.dir().join("bad-network.json");
    std::fs::write(&file, serde_json::to_vec(&bad)?)?;
    let out = lab.kubectl(&["apply", "-f", &file.display().to_string()])?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && said.contains("spec.network.mac")
            && said.contains("spec.network.address")
            && said.contains("10.79.0.11/24"),
        "a bad production network: {said}"
    );

    let started = Instant::now();
    let mut good_spec = machine(
        "rack1-u1",
        GOOD_MAC,
        json!({"address": bmc.address(), "system": bmc.domain("good"),
               "credentialsSecret": "bmc-lab",
               "consoleLog": good_console.display().to_string()}),
    );
    good_spec["spec"]["network"] =
        json!({"mac": PRODUCTION_MAC, "address": format!("{PRODUCTION_ADDRESS}/24")});
    apply(&lab, &good_spec)?;
    apply(
        &lab,
        &machine(
            "rack1-u2",
            SILENT_MAC,
            json!({"address": bmc.address(), "system": bmc.domain("silent"),
                   "credentialsSecret": "bmc-lab",
                   "consoleLog": silent_console.display().to_string()}),
        ),
    )?;
    apply(
        &lab,
        &machine(
            "rack1-u3",
            LOCKED_MAC,
            json!({"address": bmc.address(), "credentialsSecret": "bmc-stale"}),
        ),
    )?;

    // Refused credentials: a condition naming the BMC and the status; nothing else.
    let locked = wait_for(
        &lab,
        &bmc,
        "rack1-u3",
        "refused",
        Duration::from_secs(60),
        |m| bmc_ready(m).is_some_and(|c| c["status"] == "False"),
    )?;
    let cond = bmc_ready(&locked).context("BmcReady")?;
    assert_eq!(cond["reason"], "BmcUnauthorized", "{cond}");
    let message = cond["message"].as_str().unwrap_or_default();
    for want in [bmc.address().as_str(), "HTTP 401", "shoal-system/bmc-stale"] {
        ensure!(message.contains(want), "BmcReady lacks {want:?}: {message}");
    }
    ensure!(
        locked["status"]["state"].is_null(),
        "a machine whose BMC refused is not powering on: {locked}"
    );

    // The good machine: powered on through Redfish, then PXE all the way.
    let good = wait_for(
        &lab,
        &bmc,
        "rack1-u1",
        "Provisioned",
        Duration::from_secs(300),
        |m| m["status"]["state"] == "Provisioned",
    )?;
    let to_provisioned = started.elapsed();
    assert_eq!(
        states(&good),
        ["PoweringOn", "Discovered", "Provisioning", "Provisioned"],
        "{good:#}"
    );
    history_in_time_order(&good)?;
    let first = &good["status"]["history"][0]["reason"];
    ensure!(
        first
            .as_str()
            .is_some_and(|r| r.contains(&bmc.address()) && r.contains("boot from PXE once")),
        "{first}"
    );
    assert_eq!(good["status"]["power"], "On", "{good:#}");
    let cond = bmc_ready(&good).context("BmcReady")?;
    assert_eq!(cond["status"], "True", "{cond}");
    // What its firmware reported: the BMC lab's SMBIOS, BIOS.
    let facts = &good["status"]["facts"];
    assert_eq!(facts["serial"], "SHOAL-BMC-good", "{good:#}");
    assert_eq!(facts["manufacturer"], "Shoal lab", "{good:#}");
    assert_eq!(facts["platform"], "pcbios", "{good:#}");
    // Named after its BareMetalMachine by the seed `shoal pxe` rendered for it.
    assert_eq!(good["status"]["hostname"], "rack1-u1", "{good:#}");
    assert_eq!(bmc.state("good")?, "running");
    let console = std::fs::read_to_string(&good_console)?;
    ensure!(
        console.contains("SHOAL-GUEST-READY"),
        "the console shows no ready guest: {console}"
    );

    // Its installed system runs `shoal agent` on the production network: Joined.
    let joined = wait_for(
        &lab,
        &bmc,
        "rack1-u1",
        "Joined",
        Duration::from_secs(300),
        |m| m["status"]["state"] == "Joined",
    )
    .with_context(|| format!("console:\n{}", shoal_e2e::kubelab::tail(&good_console, 40)))?;
    let to_joined = started.elapsed();
    assert_eq!(
        states(&joined),
        [
            "PoweringOn",
            "Discovered",
            "Provisioning",
            "Provisioned",
            "Joined"
        ],
        "{joined:#}"
    );
    history_in_time_order(&joined)?;
    assert_eq!(lab.ready_host_underlay("rack1-u1")?, PRODUCTION_ADDRESS);
    // As `kubectl get hosts` shows it: NAME READY UNDERLAY …
    let listed = lab.kubectl(&["get", "hosts"])?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    ensure!(
        listed.lines().any(|l| l.split_whitespace().take(3).eq([
            "rack1-u1",
            "True",
            PRODUCTION_ADDRESS
        ])),
        "kubectl get hosts: {listed}"
    );
    let console = std::fs::read_to_string(&good_console)?;
    ensure!(
        console.contains(&format!("production network up: {PRODUCTION_ADDRESS}/24")),
        "the console shows no production network: {}",
        shoal_e2e::kubelab::tail(&good_console, 40)
    );

    // The CLI shows the BMC, the condition and every change.
    let shown = lab.shoal(&["baremetal", "show", "rack1-u1"])?;
    let shown = String::from_utf8_lossy(&shown.stdout);
    for want in [
        "BMC:",
        "Power:     On",
        "BmcReady=True",
        "PoweringOn",
        "Provisioned",
        "Joined",
        "Network:   10.79.0.11/24 on NIC 52:54:00:79:01:01",
        "Hardware:  Shoal lab",
        "serial SHOAL-BMC-good",
    ] {
        ensure!(shown.contains(want), "baremetal show lacks {want}: {shown}");
    }

    // Reprovision: the BMC power-cycles it into PXE and it joins again (its Host's
    // old heartbeats do not count: only the new install's agent's).
    let out = lab.shoal(&["baremetal", "reprovision", "rack1-u1"])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = wait_for(
        &lab,
        &bmc,
        "rack1-u1",
        "joined again",
        Duration::from_secs(300),
        |m| states(m).len() >= 10 && m["status"]["state"] == "Joined",
    )?;
    assert_eq!(
        states(&again)[5..],
        [
            "PoweringOn",
            "Discovered",
            "Provisioning",
            "Provisioned",
            "Joined"
        ],
        "{again:#}"
    );
    let cycled = &again["status"]["history"][5]["reason"];
    ensure!(
        cycled.as_str().is_some_and(|r| r.contains("power-cycled")),
        "{cycled}"
    );
    history_in_time_order(&again)?;
    let requested = again["metadata"]["annotations"]["shoal.io/bmc-request"].clone();
    assert_eq!(again["status"]["provisionRequest"], requested, "{again:#}");

    // Deprovision: powered off through the BMC.
    let out = lab.shoal(&["baremetal", "deprovision", GOOD_MAC])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let off = wait_for(
        &lab,
        &bmc,
        "rack1-u1",
        "Deprovisioned",
        Duration::from_secs(60),
        |m| m["status"]["state"] == "Deprovisioned",
    )?;
    assert_eq!(off["status"]["power"], "Off", "{off:#}");
    assert_eq!(bmc.state("good")?, "shut off");
    history_in_time_order(&off)?;
    // A machine without a BMC cannot be reprovisioned by Shoal: said, not done.
    apply(
        &lab,
        &json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "BareMetalMachine",
            "metadata": {"name": "rack2-u1"},
            "spec": {"mac": "52:54:00:78:02:01", "role": "worker"},
        }),
    )?;
    let out = lab.shoal(&["baremetal", "reprovision", "rack2-u1"])?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && said.contains("has no BMC"),
        "reprovision without a BMC: {said}"
    );

    // The silent machine boots and fetches its seed, but never phones home.
    let silent = wait_for(
        &lab,
        &bmc,
        "rack1-u2",
        "ProvisioningTimeout",
        Duration::from_secs(PROVISION_TIMEOUT + 60),
        |m| m["status"]["state"] == "ProvisioningTimeout",
    )?;
    let seen = states(&silent);
    assert_eq!(
        seen.first().map(String::as_str),
        Some("PoweringOn"),
        "{silent:#}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("ProvisioningTimeout"),
        "{silent:#}"
    );
    ensure!(seen.iter().any(|s| s == "Provisioning"), "{silent:#}");
    let last = silent["status"]["history"]
        .as_array()
        .and_then(|h| h.last())
        .context("history")?;
    let reason = last["reason"].as_str().unwrap_or_default();
    ensure!(
        reason.contains(&format!("within {PROVISION_TIMEOUT} s"))
            && reason.contains(&silent_console.display().to_string()),
        "the timeout names the console log: {reason}"
    );
    history_in_time_order(&silent)?;

    println!(
        "bench: registration to Provisioned through the BMC and PXE {:.1} s, to Joined {:.1} s",
        to_provisioned.as_secs_f64(),
        to_joined.as_secs_f64()
    );
    drop(bmc);
    Ok(())
}
