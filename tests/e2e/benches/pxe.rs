//! `cargo bench -p shoal-e2e --bench pxe` (or `make bench`): power-on to phone-home
//! and to Joined of a bare-metal machine booted over the network by `shoal pxe`
//! (iPXE ROM, proxy DHCP, HTTP kernel and both initrds: the test image and the host
//! agent's layer), next to the same image booted from local kernel and initrd (the
//! two archives concatenated) on the same provisioning network with the same seed
//! server: the PXE overhead ratio. Each machine is registered as a BareMetalMachine
//! with a production NIC first, so both get the same rendered join seed; Joined is
//! read from the API. Rounds alternate the two (`SHOAL_BENCH_ROUNDS`, default 2),
//! one VM at a time; then a second lab, whose `shoal pxe` leaves IPv6 router
//! solicitations unanswered, boots the same number over the network. Needs root, QEMU, dnsmasq, ipxe, ipxe-qemu, curl and the test
//! image.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use serde_json::json;
use shoal_e2e::pxelab::{host_layer, PxeLab, PXE_HTTP_PORT, PXE_SERVER};
use shoal_e2e::rawboot::GuestImage;

/// Registers BareMetalMachine `name` with `mac` and a production NIC `production`
/// at `address`.
fn register(lab: &PxeLab, name: &str, mac: &str, production: &str, address: &str) -> Result<()> {
    let obj = json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "BareMetalMachine",
        "metadata": {"name": name},
        "spec": {"mac": mac, "role": "worker",
                 "network": {"mac": production, "address": format!("{address}/24")}},
    });
    let file = lab.dir().join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec(&obj)?)?;
    let out = lab.kubectl(&["apply", "-f", &file.display().to_string()])?;
    ensure!(
        out.status.success(),
        "kubectl apply {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Polls BareMetalMachine `name` until it is Joined; the time since `since`.
fn wait_joined(lab: &PxeLab, name: &str, since: Instant) -> Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = lab.kubectl(&[
            "get",
            "baremetalmachine",
            name,
            "-o",
            "jsonpath={.status.state}",
        ])?;
        if String::from_utf8_lossy(&out.stdout) == "Joined" {
            return Ok(since.elapsed());
        }
        if Instant::now() > deadline {
            bail!("{name} is not Joined after 300 s\n{}", lab.logs());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One machine's times: power-on to phone-home and to Joined.
type Times = (Duration, Duration);

/// Registers machine `n`, boots it (over the network, or from `local` files) and
/// waits until it is Joined.
fn boot(lab: &mut PxeLab, n: usize, local: Option<&GuestImage>) -> Result<Times> {
    let name = format!("bench-{n}");
    let mac = format!("52:54:00:78:01:{n:02x}");
    let production = format!("52:54:00:79:01:{n:02x}");
    register(
        lab,
        &name,
        &mac,
        &production,
        &format!("10.79.0.{}", 100 + n),
    )?;
    let append = format!(
        "console=ttyS0 quiet ds=nocloud;s=http://{PXE_SERVER}:{PXE_HTTP_PORT}/seed/{}/",
        mac.replace(':', "-")
    );
    let started = Instant::now();
    lab.launch_with(
        &mac,
        local.map(|image| (image, append.as_str())),
        Some(&production),
    )?;
    let i = lab.vms.len() - 1;
    let (phoned, _) = lab.wait_console(i, "SHOAL-GUEST-READY", Duration::from_secs(300))?;
    let joined = wait_joined(lab, &name, started)?;
    lab.stop_vm(i);
    Ok((phoned, joined))
}

fn main() -> Result<()> {
    let rounds: usize = std::env::var("SHOAL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let image = GuestImage::find()?;
    // The local boot's initrd: both archives, as iPXE loads them.
    let layered = std::env::temp_dir().join(format!("shoal-bench-initrd-{}", std::process::id()));
    let mut both = std::fs::read(&image.initrd)?;
    both.extend(std::fs::read(host_layer()?)?);
    std::fs::write(&layered, both)?;
    let local_image = GuestImage {
        kernel: image.kernel.clone(),
        initrd: layered.clone(),
    };
    println!("network boot benchmark: {rounds} rounds, TCG, 768 MiB, one VM at a time");
    let (mut pxe, mut local, mut silent) = (Vec::new(), Vec::new(), Vec::new());
    {
        let mut lab = PxeLab::joining(&format!("bpx{}", std::process::id()), &image, 900)?;
        for round in 0..rounds {
            pxe.push(boot(&mut lab, 3 * round, None)?);
            local.push(boot(&mut lab, 3 * round + 1, Some(&local_image))?);
        }
    }
    {
        // The same, with IPv6 router solicitations left unanswered.
        let mut lab = PxeLab::joining_without_router_answers(
            &format!("bpy{}", std::process::id()),
            &image,
            900,
        )?;
        for round in 0..rounds {
            silent.push(boot(&mut lab, 3 * round + 2, None)?);
        }
    }
    let _ = std::fs::remove_file(&layered);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let list = |v: &[f64]| {
        v.iter()
            .map(|d| format!("{d:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("| figure | PXE (shoal pxe) | local kernel + initrd | ratio | PXE, router solicitations unanswered | its ratio |");
    println!("|---|---|---|---|---|---|");
    let pick_phoned: fn(&Times) -> f64 = |t| t.0.as_secs_f64();
    let pick_joined: fn(&Times) -> f64 = |t| t.1.as_secs_f64();
    for (figure, pick) in [
        ("power-on to phone-home", pick_phoned),
        ("power-on to Joined", pick_joined),
    ] {
        let a: Vec<f64> = pxe.iter().map(pick).collect();
        let b: Vec<f64> = local.iter().map(pick).collect();
        let c: Vec<f64> = silent.iter().map(pick).collect();
        println!(
            "| {figure}, s (rounds: {} / {} / {}) | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} |",
            list(&a),
            list(&b),
            list(&c),
            mean(&a),
            mean(&b),
            mean(&a) / mean(&b),
            mean(&c),
            mean(&c) / mean(&b)
        );
    }
    Ok(())
}
