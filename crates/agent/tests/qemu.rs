//! The VM runtime against real QEMU (TCG, no guest image): launch, QMP, adopt after
//! the runtime is dropped, stop, illegal transitions and launch failures.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_agent::vm::kvm::{probe_accel, probe_kvm};
use shoal_agent::vm::runtime::{QemuRuntime, Vm, VmError, VmOp, VmRuntime, VmState};
use shoal_agent::vm::{Accel, Boot, CpuPriority, VmSpec, DEFAULT_QEMU};

/// The QEMU binary, or `None` (with a loud message) when it is not installed.
fn qemu() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(DEFAULT_QEMU))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!(
            "\n\n!!! SKIPPING: {DEFAULT_QEMU} is not installed; run scripts/setup.sh (CI does) !!!\n\n"
        );
    }
    found
}

fn spec(name: &str, dir: &Path) -> VmSpec {
    VmSpec {
        name: name.into(),
        vcpus: NonZeroU32::MIN,
        memory_mib: NonZeroU32::new(64).expect("nonzero"),
        accel: Accel::Tcg,
        boot: Boot::None,
        serial: format!("ds=nocloud;s=http://10.0.0.1/{name}/"),
        tap: None,
        state_dir: dir.join(name),
        cpu_priority: CpuPriority::Normal,
        incoming: false,
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !state.is_some_and(|r| r.starts_with('Z') || r.starts_with('X'))
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn launch_adopt_stop() -> anyhow::Result<()> {
    let Some(qemu) = qemu() else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let spec = spec("m1", dir.path());
    let state_dir = spec.state_dir.clone();
    let started_all = Instant::now();

    let pid = {
        let runtime = QemuRuntime::new(qemu.clone());
        let mut vm = Vm::new(spec);
        assert_eq!(vm.state(), VmState::Created);
        runtime.launch(&mut vm).await?;
        assert_eq!(vm.state(), VmState::Running);
        let status = runtime.status(&mut vm).await?;
        let run = status.run.expect("a running VM answers query-status");
        assert!(run.running, "{run:?}");
        assert_eq!(run.status, "running");
        let pid = vm.pid().expect("running VM has a PID");
        assert!(alive(pid));

        // Launching a running VM is refused by name.
        match runtime.launch(&mut vm).await {
            Err(VmError::IllegalTransition { op, state, .. }) => {
                assert_eq!((op, state), (VmOp::Launch, VmState::Running));
            }
            other => panic!("expected IllegalTransition, got {other:?}"),
        }
        pid
        // The runtime and the Vm are dropped here, as on an agent restart.
    };
    assert!(alive(pid), "QEMU is detached and outlives its runtime");

    let runtime = QemuRuntime::new(qemu);
    let mut vm = runtime.adopt(&state_dir).await?;
    assert_eq!(vm.name(), "m1");
    assert_eq!(vm.pid(), Some(pid), "adopt re-attaches to the same QEMU");
    assert_eq!(vm.state(), VmState::Running);
    let status = runtime.status(&mut vm).await?;
    assert_eq!(status.pid, Some(pid));
    assert!(status.run.is_some_and(|r| r.running));

    eprintln!("adopted after {:?}", started_all.elapsed());
    // No guest OS answers the ACPI button, so this goes on to QMP quit.
    let started = Instant::now();
    runtime.stop(&mut vm, Duration::from_millis(500)).await?;
    assert_eq!(vm.state(), VmState::Stopped);
    assert!(!alive(pid), "QEMU {pid} is gone after stop");
    eprintln!("stopped in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!state_dir.join("qemu.pid").exists());

    match runtime.stop(&mut vm, Duration::from_millis(100)).await {
        Err(VmError::IllegalTransition { op, state, .. }) => {
            assert_eq!((op, state), (VmOp::Stop, VmState::Stopped));
        }
        other => panic!("expected IllegalTransition, got {other:?}"),
    }
    let status = runtime.status(&mut vm).await?;
    assert_eq!((status.state, status.pid), (VmState::Stopped, None));

    // Nothing runs any more, so adopting fails with a typed error.
    let err = runtime
        .adopt(&state_dir)
        .await
        .expect_err("nothing to adopt");
    assert!(matches!(err, VmError::NotRunning { .. }), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn launch_failure_carries_qemu_stderr() -> anyhow::Result<()> {
    let Some(qemu) = qemu() else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let mut spec = spec("broken", dir.path());
    spec.boot = Boot::Kernel {
        kernel: dir.path().join("no-such-kernel"),
        initrd: None,
        cmdline: "console=ttyS0".into(),
        overlay_path: None,
    };
    let runtime = QemuRuntime::new(qemu);
    let mut vm = Vm::new(spec);
    match runtime.launch(&mut vm).await {
        Err(VmError::Launch { stderr, .. }) => {
            assert!(stderr.contains("no-such-kernel"), "stderr: {stderr}");
        }
        other => panic!("expected a Launch error, got {other:?}"),
    }
    assert_eq!(
        vm.state(),
        VmState::Created,
        "a failed launch changes nothing"
    );

    // Stopping a VM that never ran is refused by name.
    match runtime.stop(&mut vm, Duration::from_millis(100)).await {
        Err(VmError::IllegalTransition { op, state, .. }) => {
            assert_eq!((op, state), (VmOp::Stop, VmState::Created));
        }
        other => panic!("expected IllegalTransition, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn probe_guest_runs_under_tcg() -> anyhow::Result<()> {
    let Some(qemu) = qemu() else { return Ok(()) };
    probe_accel(&qemu, Accel::Tcg, Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test]
async fn kvm_probe_answers_within_its_timeout() {
    let Some(qemu) = qemu() else { return };
    let timeout = Duration::from_secs(3);
    let started = Instant::now();
    let accel = probe_kvm(&qemu, timeout).await;
    let took = started.elapsed();
    eprintln!("probe_kvm chose {accel:?} in {took:?}");
    assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
}
