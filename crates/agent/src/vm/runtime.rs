//! The VM lifecycle: a per-VM state machine ([`Vm`]) driven through the
//! [`VmRuntime`] I/O boundary, implemented for real QEMU by [`QemuRuntime`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tracing::Instrument;

use crate::net::netns::NetNs;

use super::migrate::{self, Incoming, MigrateError, Outcome};
use super::qmp::{QmpClient, QmpError, RunStatus};
use super::spec::{SpecError, StatePaths, VmSpec};
use super::{argv, proc};
use crate::chain;

/// Where a VM is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// Known, never launched.
    Created,
    /// Its QEMU runs.
    Running,
    /// A stop is under way.
    Stopping,
    /// Its QEMU is gone.
    Stopped,
}

/// An operation on a VM, for naming illegal transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmOp {
    /// Start QEMU.
    Launch,
    /// Shut QEMU down.
    Stop,
}

impl VmState {
    /// The state `op` moves to from `self` (for `Stop`, the intermediate `Stopping`),
    /// or `None` if `op` is illegal in `self`.
    pub fn next(self, op: VmOp) -> Option<VmState> {
        match (self, op) {
            (VmState::Created | VmState::Stopped, VmOp::Launch) => Some(VmState::Running),
            (VmState::Running, VmOp::Stop) => Some(VmState::Stopping),
            (VmState::Running | VmState::Stopping, VmOp::Launch)
            | (VmState::Created | VmState::Stopping | VmState::Stopped, VmOp::Stop) => None,
        }
    }
}

/// A VM operation failure, naming the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The operation is not allowed in the VM's current state.
    #[error("VM {vm}: cannot {op:?} while {state:?}")]
    IllegalTransition {
        /// The VM.
        vm: String,
        /// The refused operation.
        op: VmOp,
        /// The VM's state.
        state: VmState,
    },
    /// The spec is invalid.
    #[error("VM {vm}")]
    Spec {
        /// The VM.
        vm: String,
        /// The cause.
        #[source]
        source: SpecError,
    },
    /// A state file could not be read or written.
    #[error("VM {vm}: {path}")]
    StateFile {
        /// The VM.
        vm: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The saved spec in the state directory is unreadable.
    #[error("VM state {path}: invalid spec")]
    SavedSpec {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// QEMU could not be started at all.
    #[error("VM {vm}: starting {qemu}")]
    Spawn {
        /// The VM.
        vm: String,
        /// The binary.
        qemu: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU refused to start; `stderr` holds its reason.
    #[error("VM {vm}: QEMU exited with {status}: {stderr}")]
    Launch {
        /// The VM.
        vm: String,
        /// QEMU's exit status.
        status: std::process::ExitStatus,
        /// QEMU's stderr.
        stderr: String,
    },
    /// QEMU did not come up (pidfile and QMP) in time.
    #[error("VM {vm}: QEMU not ready within {timeout:?}: {what}")]
    NotReady {
        /// The VM.
        vm: String,
        /// The deadline.
        timeout: Duration,
        /// What was missing.
        what: String,
    },
    /// The pidfile names no live QEMU of this VM.
    #[error("VM {vm}: pidfile {pidfile} names PID {pid}, which is not this VM's QEMU")]
    NotOurProcess {
        /// The VM.
        vm: String,
        /// The pidfile.
        pidfile: PathBuf,
        /// The PID in it.
        pid: u32,
    },
    /// There is no pidfile, so no QEMU to adopt.
    #[error("VM {vm}: not running (no pidfile {pidfile})")]
    NotRunning {
        /// The VM.
        vm: String,
        /// The missing pidfile.
        pidfile: PathBuf,
    },
    /// The pidfile does not hold a PID.
    #[error("VM {vm}: pidfile {pidfile} holds no PID: {content:?}")]
    BadPidfile {
        /// The VM.
        vm: String,
        /// The pidfile.
        pidfile: PathBuf,
        /// What it holds.
        content: String,
    },
    /// Talking QMP failed.
    #[error("VM {vm}")]
    Qmp {
        /// The VM.
        vm: String,
        /// The cause.
        #[source]
        source: QmpError,
    },
    /// A live migration step failed.
    #[error("VM {vm}: live migration")]
    Migrate {
        /// The VM.
        vm: String,
        /// The cause.
        #[source]
        source: MigrateError,
    },
    /// No free port for the incoming migration.
    #[error("VM {vm}: no free port on {addr} for the incoming migration")]
    NoPort {
        /// The VM.
        vm: String,
        /// The address.
        addr: std::net::Ipv4Addr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// SIGKILL was sent and QEMU still did not go away.
    #[error("VM {vm}: PID {pid} survived SIGKILL")]
    Unkillable {
        /// The VM.
        vm: String,
        /// The PID.
        pid: u32,
    },
}

/// What [`VmRuntime::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmStatus {
    /// The lifecycle state after the check.
    pub state: VmState,
    /// QEMU's PID while it runs.
    pub pid: Option<u32>,
    /// QMP's answer while QEMU runs.
    pub run: Option<RunStatus>,
}

/// One VM: its spec, lifecycle state and QEMU PID. It has exactly one owner (one task),
/// which drives it through a [`VmRuntime`].
#[derive(Debug)]
pub struct Vm {
    spec: VmSpec,
    state: VmState,
    pid: Option<u32>,
}

impl Vm {
    /// A VM that has not been launched yet.
    pub fn new(spec: VmSpec) -> Self {
        Vm {
            spec,
            state: VmState::Created,
            pid: None,
        }
    }

    /// The VM's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The spec it runs (or will run) with.
    pub fn spec(&self) -> &VmSpec {
        &self.spec
    }

    /// Its lifecycle state.
    pub fn state(&self) -> VmState {
        self.state
    }

    /// Its QEMU's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Records that QEMU runs as `pid`: a runtime's launch or adopt succeeded.
    pub(crate) fn set_running(&mut self, pid: u32) {
        self.pid = Some(pid);
        self.state = VmState::Running;
    }

    /// Records that QEMU is gone.
    pub(crate) fn set_stopped(&mut self) {
        self.state = VmState::Stopped;
        self.pid = None;
    }

    fn check(&self, op: VmOp) -> Result<VmState, VmError> {
        self.state
            .next(op)
            .ok_or_else(|| VmError::IllegalTransition {
                vm: self.spec.name.clone(),
                op,
                state: self.state,
            })
    }
}

/// The QEMU/QMP I/O boundary. Every method runs in a span carrying the VM's name.
pub trait VmRuntime: Send + Sync {
    /// Starts `vm` detached and waits until it answers QMP: Created/Stopped → Running.
    fn launch(&self, vm: &mut Vm) -> impl Future<Output = Result<(), VmError>> + Send;
    /// Re-attaches to the VM running from `state_dir` (after an agent restart).
    fn adopt(&self, state_dir: &Path) -> impl Future<Output = Result<Vm, VmError>> + Send;
    /// Asks QEMU how a running VM is, and notices a QEMU that went away
    /// (Running → Stopped). For a VM that is not running it reports just the state.
    fn status(&self, vm: &mut Vm) -> impl Future<Output = Result<VmStatus, VmError>> + Send;
    /// Running → Stopping → Stopped: ACPI powerdown, then QMP `quit` after `grace`,
    /// then SIGKILL by PID.
    fn stop(
        &self,
        vm: &mut Vm,
        grace: Duration,
    ) -> impl Future<Output = Result<(), VmError>> + Send;
    /// On a VM launched with `incoming`: exports its disk and waits for the guest's
    /// state on `addr`.
    fn listen_incoming(
        &self,
        vm: &Vm,
        addr: std::net::Ipv4Addr,
    ) -> impl Future<Output = Result<Incoming, VmError>> + Send;
    /// Sends the running VM to `to` within `timeout`, telling how far it got on
    /// `progress`. On success its QEMU here is paused for good; on failure the guest
    /// runs on here.
    fn migrate_out(
        &self,
        vm: &Vm,
        to: &Incoming,
        limits: migrate::Limits,
        progress: &migrate::ProgressTx,
    ) -> impl Future<Output = Result<Outcome, VmError>> + Send;
    /// After the guest arrived: ends the disk export and checks the guest runs.
    fn finish_incoming(&self, vm: &Vm) -> impl Future<Output = Result<(), VmError>> + Send;
}

/// [`VmRuntime`] for real, detached QEMU processes.
#[derive(Debug, Clone)]
pub struct QemuRuntime {
    qemu: PathBuf,
    prefix: Vec<std::ffi::OsString>,
    netns: NetNs,
    ready_timeout: Duration,
    quit_timeout: Duration,
}

impl Default for QemuRuntime {
    fn default() -> Self {
        QemuRuntime::new(PathBuf::from(super::DEFAULT_QEMU))
    }
}

impl QemuRuntime {
    /// A runtime using the `qemu` binary.
    pub fn new(qemu: PathBuf) -> Self {
        QemuRuntime {
            qemu,
            prefix: Vec::new(),
            netns: NetNs::current(),
            ready_timeout: Duration::from_secs(10),
            quit_timeout: Duration::from_secs(5),
        }
    }

    /// How long a launch or adopt waits for the pidfile and QMP.
    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts QEMU through `prefix` (e.g. `nsenter --net=<ns> --`), so that the VM and
    /// the tap it creates live in the agent's network namespace.
    pub fn with_command_prefix(mut self, prefix: Vec<std::ffi::OsString>) -> Self {
        self.prefix = prefix;
        self
    }

    /// Runs the VMs in `netns`: QEMU starts there (its taps live there) and the
    /// ports of incoming migrations are found there.
    pub fn with_netns(mut self, netns: NetNs) -> Self {
        self.prefix = netns.command_prefix();
        self.netns = netns;
        self
    }

    /// How long a stop waits for `quit` before SIGKILL.
    pub fn with_quit_timeout(mut self, timeout: Duration) -> Self {
        self.quit_timeout = timeout;
        self
    }

    fn command(&self) -> tokio::process::Command {
        match self.prefix.split_first() {
            Some((program, rest)) => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(rest).arg(&self.qemu);
                cmd
            }
            None => tokio::process::Command::new(&self.qemu),
        }
    }

    async fn launch_inner(&self, vm: &mut Vm) -> Result<(), VmError> {
        vm.check(VmOp::Launch)?;
        let name = vm.spec.name.clone();
        vm.spec.validate().map_err(|source| VmError::Spec {
            vm: name.clone(),
            source,
        })?;
        let paths = vm.spec.paths();
        let state_err = |path: &Path| {
            let vm = name.clone();
            let path = path.to_path_buf();
            move |source| VmError::StateFile { vm, path, source }
        };
        std::fs::create_dir_all(&paths.dir).map_err(state_err(&paths.dir))?;
        for stale in [&paths.pidfile, &paths.qmp] {
            match std::fs::remove_file(stale) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(state_err(stale)(e)),
            }
        }
        let saved = serde_json::to_vec_pretty(&vm.spec).map_err(|source| VmError::SavedSpec {
            path: paths.spec.clone(),
            source,
        })?;
        std::fs::write(&paths.spec, saved).map_err(state_err(&paths.spec))?;

        let args = argv::render(&vm.spec);
        tracing::info!(qemu = %self.qemu.display(), ?args, "launching");
        let child = self
            .command()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| VmError::Spawn {
                vm: name.clone(),
                qemu: self.qemu.clone(),
                source,
            })?;
        // With -daemonize the foreground QEMU exits once the VM is set up (or failed),
        // and the daemon detaches from our stderr pipe.
        let output = tokio::time::timeout(self.ready_timeout, child.wait_with_output())
            .await
            .map_err(|_| VmError::NotReady {
                vm: name.clone(),
                timeout: self.ready_timeout,
                what: "the foreground QEMU did not exit".into(),
            })?
            .map_err(|source| VmError::Spawn {
                vm: name.clone(),
                qemu: self.qemu.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(VmError::Launch {
                vm: name,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        let (pid, status) = self.attach(&name, &paths, true).await?;
        let nice = vm.spec.cpu_priority.nice();
        if nice != 0 {
            // A VM that keeps the default share still runs: say so, do not fail.
            if let Err(error) = proc::set_nice(pid, nice) {
                tracing::warn!(pid, nice, %error, "could not lower the VM's CPU priority");
            }
        }
        tracing::info!(pid, nice, status = %status.status, "running");
        vm.set_running(pid);
        Ok(())
    }

    /// Reads the pidfile (waiting for it only if `wait_pidfile`, i.e. just after a
    /// launch), checks the PID is this VM's QEMU, and waits for QMP to answer.
    async fn attach(
        &self,
        name: &str,
        paths: &StatePaths,
        wait_pidfile: bool,
    ) -> Result<(u32, RunStatus), VmError> {
        let deadline = tokio::time::Instant::now() + self.ready_timeout;
        let not_ready = |what: String| VmError::NotReady {
            vm: name.to_string(),
            timeout: self.ready_timeout,
            what,
        };
        let content = loop {
            match std::fs::read_to_string(&paths.pidfile) {
                Ok(c) if !c.trim().is_empty() => break c,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && wait_pidfile => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(VmError::NotRunning {
                        vm: name.to_string(),
                        pidfile: paths.pidfile.clone(),
                    })
                }
                Err(source) => {
                    return Err(VmError::StateFile {
                        vm: name.to_string(),
                        path: paths.pidfile.clone(),
                        source,
                    })
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(not_ready(format!("no pidfile {}", paths.pidfile.display())));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let pid: u32 = content.trim().parse().map_err(|_| VmError::BadPidfile {
            vm: name.to_string(),
            pidfile: paths.pidfile.clone(),
            content: content.clone(),
        })?;
        if !proc::alive(pid) || !proc::cmdline_mentions(pid, &paths.pidfile) {
            return Err(VmError::NotOurProcess {
                vm: name.to_string(),
                pidfile: paths.pidfile.clone(),
                pid,
            });
        }
        loop {
            let err = match self.query(name, paths).await {
                Ok(status) => return Ok((pid, status)),
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= deadline || !proc::alive(pid) {
                return Err(not_ready(format!(
                    "QMP on {}: {}",
                    paths.qmp.display(),
                    chain(&err)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn qmp(&self, name: &str, paths: &StatePaths) -> Result<QmpClient, VmError> {
        QmpClient::connect(&paths.qmp)
            .await
            .map_err(|source| VmError::Qmp {
                vm: name.to_string(),
                source,
            })
    }

    async fn query(&self, name: &str, paths: &StatePaths) -> Result<RunStatus, VmError> {
        let mut qmp = self.qmp(name, paths).await?;
        qmp.query_status().await.map_err(|source| VmError::Qmp {
            vm: name.to_string(),
            source,
        })
    }

    async fn adopt_inner(&self, state_dir: &Path) -> Result<Vm, VmError> {
        let paths = StatePaths::new(state_dir);
        let raw = std::fs::read(&paths.spec).map_err(|source| VmError::StateFile {
            vm: state_dir.display().to_string(),
            path: paths.spec.clone(),
            source,
        })?;
        let spec: VmSpec = serde_json::from_slice(&raw).map_err(|source| VmError::SavedSpec {
            path: paths.spec.clone(),
            source,
        })?;
        // The saved spec may have been written for another directory (a moved tree):
        // the files that count are the ones here.
        let spec = VmSpec {
            state_dir: state_dir.to_path_buf(),
            ..spec
        };
        let (pid, status) = self.attach(&spec.name, &paths, false).await?;
        tracing::info!(vm = %spec.name, pid, status = %status.status, "adopted");
        Ok(Vm {
            spec,
            state: VmState::Running,
            pid: Some(pid),
        })
    }

    async fn status_inner(&self, vm: &mut Vm) -> Result<VmStatus, VmError> {
        if vm.state != VmState::Running {
            // Nothing runs, so there is nothing to ask; this is not a transition.
            return Ok(VmStatus {
                state: vm.state,
                pid: None,
                run: None,
            });
        }
        let paths = vm.spec.paths();
        let gone = vm.pid.is_none_or(|pid| !proc::alive(pid));
        if !gone {
            match self.query(&vm.spec.name, &paths).await {
                Ok(run) => {
                    return Ok(VmStatus {
                        state: vm.state,
                        pid: vm.pid,
                        run: Some(run),
                    })
                }
                Err(e) if vm.pid.is_some_and(proc::alive) => return Err(e),
                Err(_) => {}
            }
        }
        tracing::warn!("QEMU went away");
        vm.set_stopped();
        Ok(VmStatus {
            state: vm.state,
            pid: None,
            run: None,
        })
    }

    async fn stop_inner(&self, vm: &mut Vm, grace: Duration) -> Result<(), VmError> {
        vm.state = vm.check(VmOp::Stop)?;
        let name = vm.spec.name.clone();
        let paths = vm.spec.paths();
        let Some(pid) = vm.pid else {
            vm.state = VmState::Stopped;
            return Ok(());
        };
        let result = self.shut_down(&name, &paths, pid, grace).await;
        match &result {
            Ok(()) => {
                vm.set_stopped();
                for file in [&paths.pidfile, &paths.qmp] {
                    // Leftovers only confuse a later adopt; QEMU may have removed them.
                    let _ = std::fs::remove_file(file);
                }
            }
            // Still there: it stays Running, so the owner can retry the stop.
            Err(_) => vm.state = VmState::Running,
        }
        result
    }

    async fn shut_down(
        &self,
        name: &str,
        paths: &StatePaths,
        pid: u32,
        grace: Duration,
    ) -> Result<(), VmError> {
        match self.qmp(name, paths).await {
            Ok(mut qmp) => {
                if let Err(e) = qmp.system_powerdown().await {
                    tracing::warn!(error = %e, "system_powerdown");
                }
            }
            Err(e) => tracing::warn!(error = %e, "no QMP for system_powerdown"),
        }
        if proc::wait_gone(pid, grace).await {
            tracing::info!(pid, "powered down");
            return Ok(());
        }
        tracing::info!(pid, ?grace, "guest ignored powerdown; sending quit");
        match self.qmp(name, paths).await {
            Ok(qmp) => {
                if let Err(e) = qmp.quit().await {
                    tracing::warn!(error = %e, "quit");
                }
            }
            Err(e) => tracing::warn!(error = %e, "no QMP for quit"),
        }
        if proc::wait_gone(pid, self.quit_timeout).await {
            tracing::info!(pid, "quit");
            return Ok(());
        }
        if proc::cmdline_mentions(pid, &paths.pidfile) {
            tracing::warn!(pid, "QEMU ignored quit; sending SIGKILL");
            if let Err(e) = proc::kill(pid) {
                tracing::warn!(pid, error = %e, "SIGKILL");
            }
        }
        if proc::wait_gone(pid, self.quit_timeout).await {
            Ok(())
        } else {
            Err(VmError::Unkillable {
                vm: name.to_string(),
                pid,
            })
        }
    }
}

impl VmRuntime for QemuRuntime {
    async fn launch(&self, vm: &mut Vm) -> Result<(), VmError> {
        let span = tracing::info_span!("vm_launch", vm = %vm.name());
        self.launch_inner(vm).instrument(span).await
    }

    async fn adopt(&self, state_dir: &Path) -> Result<Vm, VmError> {
        let span = tracing::info_span!("vm_adopt", state_dir = %state_dir.display());
        self.adopt_inner(state_dir).instrument(span).await
    }

    async fn status(&self, vm: &mut Vm) -> Result<VmStatus, VmError> {
        let span = tracing::debug_span!("vm_status", vm = %vm.name());
        self.status_inner(vm).instrument(span).await
    }

    async fn stop(&self, vm: &mut Vm, grace: Duration) -> Result<(), VmError> {
        let span = tracing::info_span!("vm_stop", vm = %vm.name());
        self.stop_inner(vm, grace).instrument(span).await
    }

    async fn listen_incoming(
        &self,
        vm: &Vm,
        addr: std::net::Ipv4Addr,
    ) -> Result<Incoming, VmError> {
        let name = vm.name().to_string();
        // Two free ports, found by binding them in the VMs' namespace; QEMU binds
        // them right after.
        let free = || -> std::io::Result<(u16, u16)> {
            let port = |l: std::net::TcpListener| l.local_addr().map(|a| a.port());
            let a = std::net::TcpListener::bind((addr, 0))?;
            let b = std::net::TcpListener::bind((addr, 0))?;
            Ok((port(a)?, port(b)?))
        };
        let (migrate_port, nbd_port) = self
            .netns
            .run(free)
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| VmError::NoPort {
                vm: name.clone(),
                addr,
                source,
            })?;
        let disk = vm.spec.boot.overlay().is_some();
        let span = tracing::info_span!("vm_listen_incoming", vm = %name);
        migrate::listen(&vm.spec.paths().qmp, addr, migrate_port, nbd_port, disk)
            .instrument(span)
            .await
            .map_err(|source| VmError::Migrate { vm: name, source })
    }

    async fn migrate_out(
        &self,
        vm: &Vm,
        to: &Incoming,
        limits: migrate::Limits,
        progress: &migrate::ProgressTx,
    ) -> Result<Outcome, VmError> {
        let span = tracing::info_span!("vm_migrate_out", vm = %vm.name(), to = %to.uri);
        migrate::send(&vm.spec.paths().qmp, to, limits, progress)
            .instrument(span)
            .await
            .map_err(|source| VmError::Migrate {
                vm: vm.name().to_string(),
                source,
            })
    }

    async fn finish_incoming(&self, vm: &Vm) -> Result<(), VmError> {
        let span = tracing::info_span!("vm_finish_incoming", vm = %vm.name());
        migrate::finish_incoming(&vm.spec.paths().qmp)
            .instrument(span)
            .await
            .map_err(|source| VmError::Migrate {
                vm: vm.name().to_string(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use VmOp::*;
        use VmState::*;
        assert_eq!(Created.next(Launch), Some(Running));
        assert_eq!(Stopped.next(Launch), Some(Running));
        assert_eq!(Running.next(Launch), None);
        assert_eq!(Stopping.next(Launch), None);
        assert_eq!(Running.next(Stop), Some(Stopping));
        assert_eq!(Stopped.next(Stop), None);
        assert_eq!(Created.next(Stop), None);
    }
}
