//! `cargo bench -p shoal-e2e --bench pxe` (or `make bench`): power-on to phone-home
//! of the test image booted over the network by `shoal pxe` (iPXE ROM, proxy DHCP,
//! HTTP kernel and initrd), next to the same image booted from local kernel and
//! initrd on the same provisioning network with the same seed server: the PXE
//! overhead ratio. Rounds alternate the two (`SHOAL_BENCH_ROUNDS`, default 2), one
//! VM at a time. Needs root, QEMU, dnsmasq, ipxe, ipxe-qemu, curl and the test image.

use std::time::Duration;

use anyhow::Result;
use shoal_e2e::pxelab::{PxeLab, PXE_HTTP_PORT, PXE_SERVER};
use shoal_e2e::rawboot::GuestImage;

fn main() -> Result<()> {
    let rounds: usize = std::env::var("SHOAL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let image = GuestImage::find()?;
    let mut lab = PxeLab::new(&format!("bpx{}", std::process::id()), &image)?;
    println!("network boot benchmark: {rounds} rounds, TCG, 256 MiB, one VM at a time");
    let (mut pxe, mut local) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mac = format!("52:54:00:78:01:{:02x}", 2 * round);
        lab.launch(&mac, None)?;
        let i = lab.vms.len() - 1;
        pxe.push(
            lab.wait_console(i, "SHOAL-GUEST-READY", Duration::from_secs(300))?
                .0,
        );
        lab.stop_vm(i);

        let mac = format!("52:54:00:78:01:{:02x}", 2 * round + 1);
        let append = format!(
            "console=ttyS0 quiet ds=nocloud;s=http://{PXE_SERVER}:{PXE_HTTP_PORT}/seed/{}/",
            mac.replace(':', "-")
        );
        lab.launch(&mac, Some((&image, &append)))?;
        let i = lab.vms.len() - 1;
        local.push(
            lab.wait_console(i, "SHOAL-GUEST-READY", Duration::from_secs(300))?
                .0,
        );
        lab.stop_vm(i);
    }
    let mean = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64;
    let list = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.1}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("| figure | PXE (shoal pxe) | local kernel + initrd | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| power-on to phone-home, s (rounds: {} / {}) | {:.1} | {:.1} | {:.2} |",
        list(&pxe),
        list(&local),
        mean(&pxe),
        mean(&local),
        mean(&pxe) / mean(&local)
    );
    Ok(())
}
