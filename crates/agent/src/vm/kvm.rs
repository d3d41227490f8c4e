//! Chooses the accelerator: KVM only if /dev/kvm opens *and* a tiny guest actually runs
//! under it within a deadline (nested KVM can hang), TCG otherwise.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::spec::Accel;

/// The probe guest's exit status: `isa-debug-exit` exits with `(value << 1) | 1`, and
/// the probe firmware writes 0x2a.
const PROBE_EXIT: i32 = (0x2a << 1) | 1;

/// Why an accelerator probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// /dev/kvm could not be opened.
    #[error("opening /dev/kvm")]
    DevKvm(#[source] std::io::Error),
    /// The probe firmware could not be written.
    #[error("writing the probe firmware {path}")]
    Firmware {
        /// Where it was written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU could not be started.
    #[error("starting {qemu}")]
    Spawn {
        /// The binary.
        qemu: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The probe guest did not finish in time; its QEMU was killed.
    #[error("the {accel} probe did not finish within {timeout:?}")]
    Timeout {
        /// The killed QEMU's PID.
        pid: Option<u32>,
        /// The accelerator probed.
        accel: &'static str,
        /// The deadline.
        timeout: Duration,
    },
    /// QEMU exited, but not through the probe guest.
    #[error("the {accel} probe exited with {status}: {stderr}")]
    Failed {
        /// The accelerator probed.
        accel: &'static str,
        /// QEMU's exit status.
        status: std::process::ExitStatus,
        /// QEMU's stderr.
        stderr: String,
    },
}

/// A 64 KiB flat firmware whose reset vector (its last 16 bytes) runs
/// `mov al, 0x2a; out 0xf4, al; cli; hlt; jmp $-1`: the smallest guest that proves the
/// vCPU executes code.
fn probe_firmware() -> Vec<u8> {
    let mut rom = vec![0xf4u8; 64 * 1024];
    let code = [0xb0, 0x2a, 0xe6, 0xf4, 0xfa, 0xf4, 0xeb, 0xfd];
    let start = rom.len() - 16;
    rom[start..start + code.len()].copy_from_slice(&code);
    rom
}

/// Runs the probe guest under `accel` and waits at most `timeout` for it to exit.
/// On timeout the probe's QEMU is killed by its PID.
pub async fn probe_accel(qemu: &Path, accel: Accel, timeout: Duration) -> Result<(), ProbeError> {
    probe_with(qemu, accel, timeout, &probe_firmware()).await
}

async fn probe_with(
    qemu: &Path,
    accel: Accel,
    timeout: Duration,
    rom: &[u8],
) -> Result<(), ProbeError> {
    let firmware = std::env::temp_dir().join(format!(
        "shoal-probe-{}-{}.rom",
        std::process::id(),
        accel.as_str()
    ));
    std::fs::write(&firmware, rom).map_err(|source| ProbeError::Firmware {
        path: firmware.clone(),
        source,
    })?;
    let result = run_probe(qemu, accel, timeout, &firmware).await;
    if let Err(e) = std::fs::remove_file(&firmware) {
        tracing::warn!(path = %firmware.display(), error = %e, "removing the probe firmware");
    }
    result
}

async fn run_probe(
    qemu: &Path,
    accel: Accel,
    timeout: Duration,
    firmware: &Path,
) -> Result<(), ProbeError> {
    // The same machine and CPU model as real VMs (see argv.rs): a host whose KVM
    // cannot set up `-cpu host` vCPUs (seen with nested KVM) must fail here.
    let cpu = match accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max",
    };
    let mut child = tokio::process::Command::new(qemu)
        .args(["-machine", &format!("q35,accel={}", accel.as_str())])
        .args(["-cpu", cpu])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-m",
            "16",
        ])
        .arg("-bios")
        .arg(firmware)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ProbeError::Spawn {
            qemu: qemu.to_path_buf(),
            source,
        })?;
    let mut stderr_pipe = child.stderr.take();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => {
            if status.code() == Some(PROBE_EXIT) {
                return Ok(());
            }
            let mut stderr = String::new();
            if let Some(pipe) = stderr_pipe.as_mut() {
                // Best effort: the message only decorates the error.
                let _ = pipe.read_to_string(&mut stderr).await;
            }
            Err(ProbeError::Failed {
                accel: accel.as_str(),
                status,
                stderr: stderr.trim().to_string(),
            })
        }
        Ok(Err(source)) => Err(ProbeError::Spawn {
            qemu: qemu.to_path_buf(),
            source,
        }),
        Err(_) => {
            let pid = child.id();
            if let Some(pid) = pid {
                tracing::warn!(pid, accel = accel.as_str(), "probe timed out; killing it");
                if let Err(e) = super::proc::kill(pid) {
                    tracing::warn!(pid, error = %e, "killing the probe");
                }
            }
            // A vCPU stuck in the kernel may take a moment to die; do not wait forever.
            if tokio::time::timeout(Duration::from_secs(1), child.wait())
                .await
                .is_err()
            {
                tracing::warn!("the probe QEMU did not exit within 1s of SIGKILL");
            }
            Err(ProbeError::Timeout {
                pid,
                accel: accel.as_str(),
                timeout,
            })
        }
    }
}

/// Returns [`Accel::Kvm`] only if /dev/kvm opens and the probe guest runs under KVM
/// within `timeout`; otherwise [`Accel::Tcg`], logging why.
pub async fn probe_kvm(qemu: &Path, timeout: Duration) -> Accel {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    if let Err(e) = opened {
        tracing::info!(error = %ProbeError::DevKvm(e), "using TCG");
        return Accel::Tcg;
    }
    match probe_accel(qemu, Accel::Kvm, timeout).await {
        Ok(()) => Accel::Kvm,
        Err(e) => {
            tracing::warn!(error = %e, "KVM does not work here; using TCG");
            Accel::Tcg
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_reset_vector_writes_the_exit_port() {
        let rom = probe_firmware();
        assert_eq!(rom.len() % 65536, 0, "QEMU wants a multiple of 64 KiB");
        assert_eq!(
            &rom[rom.len() - 16..rom.len() - 12],
            &[0xb0, 0x2a, 0xe6, 0xf4]
        );
    }

    /// A guest that never exits stands in for a hung (nested) KVM: the probe must give
    /// up at its deadline and kill its QEMU by PID.
    #[tokio::test]
    async fn hung_probe_times_out_and_is_killed() {
        let qemu = Path::new(crate::vm::DEFAULT_QEMU);
        if tokio::process::Command::new(qemu)
            .arg("--version")
            .output()
            .await
            .is_err()
        {
            eprintln!(
                "\n\n!!! SKIPPING: {} is not installed; run scripts/setup.sh !!!\n\n",
                qemu.display()
            );
            return;
        }
        let mut rom = probe_firmware();
        let start = rom.len() - 16;
        rom[start..start + 2].copy_from_slice(&[0xeb, 0xfe]); // jmp $
        let timeout = Duration::from_secs(1);
        let started = std::time::Instant::now();
        let result = probe_with(qemu, Accel::Tcg, timeout, &rom).await;
        let took = started.elapsed();
        assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
        match result {
            Err(ProbeError::Timeout { pid: Some(pid), .. }) => {
                assert!(!crate::vm::proc::alive(pid), "probe QEMU {pid} was killed");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
}
