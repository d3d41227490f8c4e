//! The VM runtime against real QEMU (TCG, no guest image): launch, QMP, adopt after
//! the runtime is dropped, stop, illegal transitions, launch failures, and a live
//! migration of a VM and its disk between two QEMUs.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_agent::vm::kvm::{probe_accel, probe_kvm};
use shoal_agent::vm::migrate::Limits;
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

fn qemu_tool(program: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let out = std::process::Command::new(program).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// A 64 MiB qcow2 `base.qcow2` in `dir`, and an empty overlay on it for each name.
fn overlays(dir: &Path, names: &[&str]) -> anyhow::Result<()> {
    let path = |name: &str| dir.join(name).display().to_string();
    let base = path("base.qcow2");
    qemu_tool("qemu-img", &["create", "-q", "-f", "qcow2", &base, "64M"])?;
    for name in names {
        let overlay = path(name);
        qemu_tool(
            "qemu-img",
            &[
                "create", "-q", "-f", "qcow2", "-b", &base, "-F", "qcow2", &overlay,
            ],
        )?;
    }
    Ok(())
}

/// A VM whose disk overlay holds data only the source has moves to a QEMU started
/// with `incoming` on an empty overlay of the same base: the disk is mirrored over
/// NBD, memory follows, the target runs, the source stays paused, and the target's
/// overlay holds the data afterwards.
#[tokio::test]
async fn a_vm_and_its_disk_migrate_to_a_waiting_qemu() -> anyhow::Result<()> {
    let Some(qemu) = qemu() else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name).display().to_string();
    overlays(dir.path(), &["src.qcow2", "dst.qcow2"])?;
    qemu_tool(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0xab 1M 1M",
            &path("src.qcow2"),
        ],
    )?;

    let runtime = QemuRuntime::new(qemu);
    let with_disk = |name: &str, overlay: &str, incoming: bool| VmSpec {
        boot: Boot::Disk {
            overlay_path: dir.path().join(overlay),
        },
        incoming,
        ..spec(name, dir.path())
    };
    let mut source = Vm::new(with_disk("src", "src.qcow2", false));
    runtime.launch(&mut source).await?;
    let mut target = Vm::new(with_disk("dst", "dst.qcow2", true));
    runtime.launch(&mut target).await?;
    let waiting = runtime.status(&mut target).await?.run.expect("QMP answers");
    assert_eq!(waiting.status, "inmigrate");

    let incoming = runtime
        .listen_incoming(&target, std::net::Ipv4Addr::LOCALHOST)
        .await?;
    assert!(incoming
        .disk
        .as_deref()
        .is_some_and(|d| d.starts_with("nbd://127.0.0.1:")));
    let limits = Limits {
        timeout: Duration::from_secs(120),
        max_bandwidth: None,
    };
    let (progress, said) = tokio::sync::watch::channel(String::new());
    let outcome = runtime
        .migrate_out(&source, &incoming, limits, &progress)
        .await?;
    // It told how far it got along the way.
    let last = said.borrow().clone();
    assert!(
        last.starts_with("RAM ") && last.contains("MiB sent"),
        "{last:?}"
    );
    assert!(outcome.ram_total >= 64 << 20, "{outcome:?}");
    assert!(outcome.downtime_ms < 5_000, "{outcome:?}");
    runtime.finish_incoming(&target).await?;
    let moved = runtime.status(&mut target).await?.run.expect("QMP answers");
    assert!(moved.running, "{moved:?}");
    let left = runtime.status(&mut source).await?.run.expect("QMP answers");
    assert_eq!(left.status, "postmigrate");

    runtime.stop(&mut source, Duration::ZERO).await?;
    runtime.stop(&mut target, Duration::ZERO).await?;
    // The data written only on the source's overlay is on the target's now.
    qemu_tool(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "read -P 0xab 1M 1M",
            &path("dst.qcow2"),
        ],
    )?;
    Ok(())
}

/// A migration to an address where nothing waits fails with QEMU's reason, and the
/// guest runs on where it was.
#[tokio::test]
async fn a_migration_nobody_receives_fails_and_the_vm_runs_on() -> anyhow::Result<()> {
    let Some(qemu) = qemu() else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let runtime = QemuRuntime::new(qemu);
    let mut vm = Vm::new(spec("m1", dir.path()));
    runtime.launch(&mut vm).await?;
    let free = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let to = shoal_agent::vm::migrate::Incoming {
        uri: format!("tcp:127.0.0.1:{free}"),
        disk: None,
    };
    let limits = Limits {
        timeout: Duration::from_secs(60),
        max_bandwidth: Some(1 << 20),
    };
    let (progress, _) = tokio::sync::watch::channel(String::new());
    let err = runtime
        .migrate_out(&vm, &to, limits, &progress)
        .await
        .expect_err("nothing listens there");
    let text = format!("{:#}", anyhow::Error::from(err));
    assert!(text.contains("live migration"), "{text}");
    let run = runtime.status(&mut vm).await?.run.expect("QMP answers");
    assert!(run.running, "the guest runs on: {run:?}");
    runtime.stop(&mut vm, Duration::ZERO).await?;
    Ok(())
}

/// An agent that restarts after its QEMU finished sending finds the send done (the
/// guest is not sent twice); and a VM that arrived by migration moves on again, to a
/// third QEMU, with its disk, although its QEMU still remembers the incoming
/// migration as `completed`.
#[tokio::test]
async fn a_finished_send_is_recognised_and_an_arrived_vm_moves_on() -> anyhow::Result<()> {
    let Some(qemu) = qemu() else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name).display().to_string();
    overlays(dir.path(), &["a.qcow2", "b.qcow2", "c.qcow2"])?;
    qemu_tool(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0xcd 2M 1M", &path("a.qcow2")],
    )?;
    let runtime = QemuRuntime::new(qemu);
    let with_disk = |name: &str, incoming: bool| VmSpec {
        boot: Boot::Disk {
            overlay_path: dir.path().join(format!("{name}.qcow2")),
        },
        incoming,
        ..spec(name, dir.path())
    };
    let limits = Limits {
        timeout: Duration::from_secs(120),
        max_bandwidth: None,
    };
    let mut a = Vm::new(with_disk("a", false));
    runtime.launch(&mut a).await?;
    let mut b = Vm::new(with_disk("b", true));
    runtime.launch(&mut b).await?;
    let to_b = runtime
        .listen_incoming(&b, std::net::Ipv4Addr::LOCALHOST)
        .await?;
    let (progress, _) = tokio::sync::watch::channel(String::new());
    let first = runtime.migrate_out(&a, &to_b, limits, &progress).await?;
    runtime.finish_incoming(&b).await?;

    // The restarted agent asks again: QEMU's figures, nothing sent anew.
    let again = runtime.migrate_out(&a, &to_b, limits, &progress).await?;
    assert_eq!(again, first);
    let b_run = runtime.status(&mut b).await?.run.expect("QMP answers");
    assert!(b_run.running, "{b_run:?}");
    runtime.stop(&mut a, Duration::ZERO).await?;

    // The second hop, b to c.
    let mut c = Vm::new(with_disk("c", true));
    runtime.launch(&mut c).await?;
    let to_c = runtime
        .listen_incoming(&c, std::net::Ipv4Addr::LOCALHOST)
        .await?;
    // Slow enough that a stale `completed` would be read before the send ends.
    let slow = Limits {
        max_bandwidth: Some(1 << 20),
        ..limits
    };
    let second = runtime.migrate_out(&b, &to_c, slow, &progress).await?;
    assert!(second.transferred > 0, "{second:?}");
    runtime.finish_incoming(&c).await?;
    let c_run = runtime.status(&mut c).await?.run.expect("QMP answers");
    assert!(c_run.running, "{c_run:?}");
    let b_left = runtime.status(&mut b).await?.run.expect("QMP answers");
    assert_eq!(b_left.status, "postmigrate");
    runtime.stop(&mut b, Duration::ZERO).await?;
    runtime.stop(&mut c, Duration::ZERO).await?;
    qemu_tool(
        "qemu-io",
        &["-f", "qcow2", "-c", "read -P 0xcd 2M 1M", &path("c.qcow2")],
    )?;
    Ok(())
}
