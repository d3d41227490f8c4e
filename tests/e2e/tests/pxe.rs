//! `shoal pxe` on a provisioning network with its own DHCP server (dnsmasq): a TCG
//! VM with no disk and no kernel, booted with `-boot n` through the iPXE ROM of its
//! virtio NIC, gets its address from the network's DHCP and its boot file from
//! Shoal's proxy DHCP, fetches the boot script, kernel and initrd over HTTP, boots
//! the test image, which reads its NoCloud seed address from the kernel command
//! line, fetches its seed and phones home. Shoal's journal shows every step with
//! its time, and `shoal pxe --inventory` keeps a BareMetalMachine for it in Shoal's
//! API: Discovered, Provisioning, Provisioned, each with its time and cause, which
//! `kubectl get bmm` and `shoal baremetal list|show` show; its profiles make the
//! first machine a control plane and the next a worker. TFTP serves iPXE for PXE
//! firmware and nothing else.
//!
//! It prints power-on to phone-home through PXE next to the same image booted from
//! local kernel and initrd on the same network (the PXE overhead ratio).
//! Needs root, QEMU, dnsmasq, ipxe, ipxe-qemu and curl (`scripts/setup.sh`).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use shoal_e2e::pxelab::{history_in_time_order, PxeLab, PXE_HTTP_PORT, PXE_SERVER};
use shoal_e2e::rawboot::GuestImage;

const READY: &str = "SHOAL-GUEST-READY";
const PXE_MAC: &str = "52:54:00:78:00:07";
const DIRECT_MAC: &str = "52:54:00:78:00:08";

/// The stages of `mac` in the journal, in order.
fn stages(journal: &serde_json::Value, mac: &str) -> Result<(Vec<String>, serde_json::Value)> {
    let record = journal
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mac"] == mac)
        .with_context(|| format!("no journal record for {mac}: {journal}"))?;
    let stages = record["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["stage"].as_str().map(str::to_owned))
        .collect();
    Ok((stages, record.clone()))
}

/// A command's stdout, or an error with its stderr.
fn ok(out: std::process::Output) -> Result<String> {
    ensure!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The BareMetalMachine `name` once it is in `state` (the inventory follows the
/// journal, so it may trail the console by a moment).
fn inventory_record(lab: &PxeLab, name: &str, state: &str) -> Result<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = lab.kubectl(&["get", "baremetalmachine", name, "-o", "json"])?;
        if out.status.success() {
            let bmm: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            if bmm["status"]["state"] == state {
                return Ok(bmm);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("{name} is not {state} after 30 s: {bmm}\n{}", lab.logs());
            }
        } else if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "no BareMetalMachine {name}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                lab.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_bare_vm_boots_over_the_network_to_a_phone_home() -> Result<()> {
    let image = GuestImage::find()?;
    let mut lab = PxeLab::new(&format!("spx{}", std::process::id()), &image)?;

    lab.launch(PXE_MAC, None)?;
    let (pxe_time, line) = lab.wait_console(0, READY, Duration::from_secs(240))?;
    let hostname = "pxe-525400780007";
    ensure!(line.contains(hostname), "{line}");
    let guest_ip = line
        .split_whitespace()
        .last()
        .context("the ready line names the address")?
        .to_owned();

    // The address is the network's: dnsmasq leased it, from its own range.
    let leases = lab.leases();
    ensure!(
        leases.contains(PXE_MAC) && leases.contains(&guest_ip),
        "dnsmasq did not lease {guest_ip} to {PXE_MAC}: {leases}"
    );
    ensure!(guest_ip.starts_with("10.78.0.1"), "{guest_ip}");

    // Shoal's journal: the proxy's offer to iPXE, then each fetch, in order. (iPXE
    // takes the boot file from the proxy's offer, which says no boot server
    // discovery is needed; firmware that asks again on port 4011 is acknowledged.)
    let journal = lab.journal()?;
    let (seen, record) = stages(&journal, PXE_MAC)?;
    let order = [
        "offered",
        "script",
        "kernel",
        "initrd",
        "seed",
        "phonedHome",
    ];
    let mut at = 0;
    for want in order {
        let found = seen[at..]
            .iter()
            .position(|s| s == want)
            .with_context(|| format!("no {want} after {:?} in {seen:?}", &seen[..at]))?;
        at += found + 1;
    }
    assert_eq!(record["ip"], guest_ip.as_str(), "{record}");
    // iPXE configures IPv4 and IPv6 together; `--answer-router-solicitations` tells
    // it at once that there is no IPv6 router, so it does not wait out its
    // solicitations (about 13 s) between the offer and the boot script.
    let at = |stage: &str| -> Result<chrono::DateTime<chrono::FixedOffset>> {
        let e = record["events"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["stage"] == stage))
            .with_context(|| format!("no {stage} event: {record}"))?;
        Ok(chrono::DateTime::parse_from_rfc3339(
            e["at"].as_str().unwrap_or_default(),
        )?)
    };
    let configuring = (at("script")? - at("offered")?).num_milliseconds();
    ensure!(
        configuring < 9_000,
        "iPXE took {configuring} ms from the offer to the boot script: {record}"
    );
    assert_eq!(record["hostname"], hostname, "{record}");
    // The firmware's hardware facts, from the boot script's query: the VM's
    // SMBIOS (`-smbios` serial in the lab, QEMU's product name), BIOS.
    let facts = &record["facts"];
    assert_eq!(facts["serial"], "SHOAL-LAB-00", "{record}");
    assert_eq!(facts["manufacturer"], "QEMU", "{record}");
    assert_eq!(
        facts["product"], "Standard PC (i440FX + PIIX, 1996)",
        "{record}"
    );
    assert_eq!(facts["platform"], "pcbios", "{record}");
    let offered = record["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["stage"] == "offered"))
        .context("an offer")?;
    assert_eq!(
        offered["detail"],
        format!("http://{PXE_SERVER}:{PXE_HTTP_PORT}/boot.ipxe"),
        "iPXE is offered the boot script: {offered}"
    );
    // dnsmasq's log shows it served addresses only: no boot file of its own.
    ensure!(
        !lab.logs().contains("bootfile name"),
        "dnsmasq offered a boot file: {}",
        lab.logs()
    );

    // The inventory: a BareMetalMachine for the MAC, through each state in order.
    let bmm = inventory_record(&lab, "bm-525400780007", "Provisioned")?;
    assert_eq!(bmm["spec"]["mac"], PXE_MAC, "{bmm}");
    // The profiles: the first machine discovered is a control plane.
    assert_eq!(bmm["spec"]["role"], "control-plane", "{bmm}");
    assert_eq!(bmm["spec"]["profile"], "first", "{bmm}");
    assert_eq!(bmm["status"]["ip"], guest_ip.as_str(), "{bmm}");
    assert_eq!(bmm["status"]["hostname"], hostname, "{bmm}");
    let history = bmm["status"]["history"]
        .as_array()
        .context("status.history")?;
    let states: Vec<&str> = history.iter().filter_map(|t| t["state"].as_str()).collect();
    assert_eq!(
        states,
        ["Discovered", "Provisioning", "Provisioned"],
        "{history:?}"
    );
    history_in_time_order(&bmm)?;
    ensure!(
        history[2]["reason"] == format!("phoned home as {hostname}"),
        "{history:?}"
    );
    let listed = ok(lab.shoal(&["baremetal", "list"])?)?;
    ensure!(
        listed.lines().any(|l| l.contains("bm-525400780007")
            && l.contains(PXE_MAC)
            && l.contains("Provisioned")
            && l.contains(&guest_ip)),
        "shoal baremetal list: {listed}"
    );
    let shown = ok(lab.shoal(&["baremetal", "show", PXE_MAC])?)?;
    for want in ["Discovered", "Provisioning", "phoned home as"] {
        ensure!(
            shown.contains(want),
            "shoal baremetal show lacks {want}: {shown}"
        );
    }
    let got = ok(lab.kubectl(&["get", "bmm"])?)?;
    ensure!(
        got.contains("bm-525400780007") && got.contains("Provisioned"),
        "kubectl get bmm: {got}"
    );

    // A second machine with the same MAC is refused, naming the first.
    let dir = tempfile::tempdir()?;
    let twin = dir.path().join("twin.json");
    std::fs::write(
        &twin,
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "BareMetalMachine",
            "metadata": {"name": "rack-7"},
            "spec": {"mac": PXE_MAC.to_uppercase(), "role": "control-plane"},
        }))?,
    )?;
    let out = lab.kubectl(&["create", "-f", &twin.display().to_string()])?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && said.contains("spec.mac") && said.contains("bm-525400780007"),
        "a second BareMetalMachine with {PXE_MAC}: {said}"
    );

    // TFTP: iPXE for PXE firmware, byte for byte; nothing outside the served files.
    let tftp = format!("tftp://{PXE_SERVER}/undionly.kpxe");
    let out = lab.run_on_network("curl", &["-sf", "--max-time", "20", &tftp])?;
    ensure!(out.status.success(), "curl {tftp}: {out:?}");
    let want = std::fs::read("/usr/lib/ipxe/undionly.kpxe")?;
    ensure!(
        out.stdout == want,
        "TFTP sent {} bytes, the file has {}",
        out.stdout.len(),
        want.len()
    );
    for name in ["/etc/passwd", "../../etc/passwd", "snponly.efi"] {
        let url = format!("tftp://{PXE_SERVER}/{name}");
        let out = lab.run_on_network("curl", &["-s", "--max-time", "10", &url])?;
        ensure!(
            !out.status.success() && out.stdout.is_empty(),
            "TFTP served {name}: {} bytes",
            out.stdout.len()
        );
    }

    // A bad MAC in a URL is a clear 400.
    let url = format!("http://{PXE_SERVER}:{PXE_HTTP_PORT}/boot/not-a-mac");
    let out = lab.run_on_network("curl", &["-s", "-w", "%{http_code}", &url])?;
    let said = String::from_utf8_lossy(&out.stdout);
    ensure!(
        said.ends_with("400") && said.contains("not a MAC address"),
        "{said}"
    );

    // The baseline: the same image from local kernel and initrd, the same seed
    // server, on the same network.
    let append = format!(
        "console=ttyS0 quiet ds=nocloud;s=http://{PXE_SERVER}:{PXE_HTTP_PORT}/seed/{}/",
        DIRECT_MAC.replace(':', "-")
    );
    lab.launch(DIRECT_MAC, Some((&image, &append)))?;
    let (direct_time, _) = lab.wait_console(1, READY, Duration::from_secs(180))?;
    println!(
        "bench: power-on to phone-home through PXE {:.1} s, from local kernel and initrd {:.1} s, ratio {:.2}",
        pxe_time.as_secs_f64(),
        direct_time.as_secs_f64(),
        pxe_time.as_secs_f64() / direct_time.as_secs_f64()
    );
    let (direct, _) = stages(&lab.journal()?, DIRECT_MAC)?;
    ensure!(
        !direct.iter().any(|s| s == "offered" || s == "kernel"),
        "the local boot did not go through PXE: {direct:?}"
    );
    // The second machine the inventory registers is a worker (profile "rest").
    let second = inventory_record(&lab, "bm-525400780008", "Provisioned")?;
    assert_eq!(second["spec"]["role"], "worker", "{second}");
    assert_eq!(second["spec"]["profile"], "rest", "{second}");
    Ok(())
}
