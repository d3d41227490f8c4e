//! The test guest image boots for real: `images/build-test-image.sh` builds it from
//! Debian's kernel and busybox-static (cached, a no-op when current), and QEMU boots
//! it under TCG with no NIC. The guest must read the NoCloud seed from the SMBIOS
//! serial, print its markers and power off.
//!
//! TCG always: /dev/kvm may exist while nested KVM hangs.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_e2e::workspace_root;

/// How long the guest may take from QEMU's start to `SHOAL-BOOTED`.
const BOOT_DEADLINE: Duration = Duration::from_secs(60);
/// How long QEMU may take to exit after the guest's `poweroff -f`.
const EXIT_DEADLINE: Duration = Duration::from_secs(15);

/// Builds the image unless both files are there; the script itself is idempotent.
fn ensure_image(root: &Path) -> Result<()> {
    let out = root.join("images/out");
    if out.join("vmlinuz").exists() && out.join("initrd.img").exists() {
        return Ok(());
    }
    let script = root.join("images/build-test-image.sh");
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}): run scripts/setup.sh",
            script.display()
        );
    }
    Ok(())
}

/// QEMU's `-smbios` takes comma-separated options, so a comma in a value is doubled.
fn smbios_serial(serial: &str) -> String {
    format!("type=1,serial={}", serial.replace(',', ",,"))
}

/// Stops QEMU by the PID recorded at spawn and reaps it.
fn kill(child: &mut Child, pid: u32) {
    eprintln!("stopping qemu (pid {pid})");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_test_image_boots_reads_its_seed_and_powers_off() -> Result<()> {
    let root = workspace_root();
    ensure_image(&root)?;
    let out = root.join("images/out");
    let seed = "ds=nocloud;s=http://10.0.0.1/m1/";
    let serial_marker = format!("SHOAL-SERIAL: {seed}");

    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "256", "-nographic", "-no-reboot"])
        .args(["-nodefaults", "-serial", "stdio", "-nic", "none"])
        .arg("-kernel")
        .arg(out.join("vmlinuz"))
        .arg("-initrd")
        .arg(out.join("initrd.img"))
        .args(["-append", "console=ttyS0 quiet"])
        .args(["-smbios", &smbios_serial(seed)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64: run scripts/setup.sh")?;
    let pid = child.id();
    eprintln!("qemu started (pid {pid})");

    // The serial console arrives in chunks; a reader thread forwards them.
    let mut stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });

    let mut console = Vec::new();
    let mut booted = None;
    let deadline = started + BOOT_DEADLINE;
    while booted.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => console.extend_from_slice(&chunk),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill(&mut child, pid);
                bail!(
                    "no SHOAL-BOOTED within {BOOT_DEADLINE:?}; console:\n{}",
                    String::from_utf8_lossy(&console)
                );
            }
            // QEMU closed the console; the checks below say what was missing.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if String::from_utf8_lossy(&console).contains("SHOAL-BOOTED") {
            booted = Some(started.elapsed());
        }
    }
    let text = String::from_utf8_lossy(&console).into_owned();
    let Some(boot_time) = booted else {
        kill(&mut child, pid);
        bail!("qemu closed its console before SHOAL-BOOTED; console:\n{text}");
    };
    assert!(
        text.contains(&serial_marker),
        "the guest did not print {serial_marker:?}; console:\n{text}"
    );
    assert!(
        !text.contains("SHOAL-MODULE-FAILED"),
        "a virtio module failed to load; console:\n{text}"
    );

    // The guest powers off and QEMU (-no-reboot) exits on its own.
    let exit_deadline = Instant::now() + EXIT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= exit_deadline {
            kill(&mut child, pid);
            bail!("qemu (pid {pid}) did not exit within {EXIT_DEADLINE:?} of SHOAL-BOOTED");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = reader.join();
    assert!(status.success(), "qemu exited with {status}");
    eprintln!(
        "test image: SHOAL-BOOTED after {:.2}s, qemu exited after {:.2}s (TCG)",
        boot_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn smbios_values_escape_commas() {
    assert_eq!(
        smbios_serial("ds=nocloud;s=http://10.0.0.1/m1/"),
        "type=1,serial=ds=nocloud;s=http://10.0.0.1/m1/"
    );
    assert_eq!(smbios_serial("a,b"), "type=1,serial=a,,b");
}
