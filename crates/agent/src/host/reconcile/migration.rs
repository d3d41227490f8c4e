//! Live migration in the host loop. A Machine's `spec.migration` names a target
//! host. The target's agent starts the VM's QEMU paused, with a fresh overlay on the
//! same release and a tap on its cluster bridge, and reports where it waits
//! (`status.migration.incoming`, phase Migrating). The source's agent then sends the
//! VM there; on success it quits its paused QEMU and hands the Machine over
//! (`spec.hostName` = target), and the target takes the VM as its own. A failure
//! leaves the guest on the source and clears the request, with QEMU's reason.

use std::sync::Arc;
use std::time::Duration;

use kube::{Resource, ResourceExt};
use shoal_api::{Machine, MachinePhase, MigrationState, MigrationStatus};

use super::{key_of, phase_of, start_vm, Agent, Key};
use crate::host::api::HostApi;
use crate::host::chain;
use crate::host::desired::{self, DesiredVm};
use crate::host::network::ServiceStarter;
use crate::net::link::Links;
use crate::net::nft::Firewall;
use crate::vm::migrate::{Incoming, Limits, Outcome};
use crate::vm::runtime::{Vm, VmError, VmRuntime};

/// The Machine condition that tells how its last live migration ended.
pub const MIGRATED: &str = "Migrated";

/// How often the source writes the send's progress on the Machine.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// How long a migration may take before the source gives up and keeps the VM.
const SEND_TIMEOUT: Duration = Duration::from_secs(600);

/// The target host a Machine is asked to move to.
pub(super) fn target_of(m: &Machine) -> Option<&str> {
    m.spec.migration.as_ref().map(|r| r.target_host.as_str())
}

fn status_of(m: &Machine) -> Option<&MigrationStatus> {
    m.status.as_ref().and_then(|s| s.migration.as_ref())
}

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

impl<R, L, F, S, A> Agent<R, L, F, S, A>
where
    R: VmRuntime,
    L: Links,
    F: Firewall,
    S: ServiceStarter,
    A: HostApi,
{
    /// The Machines that move to this host, with their VM as it will run here.
    pub(super) fn arriving(&self) -> Vec<(Arc<Machine>, DesiredVm)> {
        let me = self.cfg.name.as_str();
        let mut out = Vec::new();
        for m in self.caches.machines.state() {
            if target_of(&m) != Some(me)
                || m.spec.host_name.as_deref() == Some(me)
                || m.meta().deletion_timestamp.is_some()
            {
                continue;
            }
            match self.decide(&m) {
                Ok(d) => out.push((m, d)),
                Err(r) => {
                    tracing::warn!(machine = %m.name_any(), reason = r.reason, message = %r.message, "cannot receive");
                }
            }
        }
        out
    }

    /// Takes the VMs that arrived (their Machine names this host now) as this host's
    /// own, and stops the waiting ones whose request went away.
    pub(super) async fn settle_arrivals(&mut self, arriving: &[(Arc<Machine>, DesiredVm)]) {
        let me = self.cfg.name.clone();
        let keys: Vec<Key> = self.incoming.keys().cloned().collect();
        for k in keys {
            let now_mine = self.caches.machines.state().into_iter().find(|m| {
                key_of(m) == k
                    && m.spec.host_name.as_deref() == Some(me.as_str())
                    && self.incoming.get(&k).map(|o| o.owner.uid.as_str()) == m.uid().as_deref()
            });
            if now_mine.is_some() {
                if let Some(o) = self.incoming.remove(&k) {
                    if let Err(e) = self.b.runtime.finish_incoming(&o.vm).await {
                        tracing::warn!(vm = %k.1, error = %chain(&e), "after the migration");
                    }
                    tracing::info!(vm = %k.1, "VM arrived by live migration");
                    self.metrics.op("migrate_in", true);
                    self.vms.insert(k, o);
                }
                continue;
            }
            if arriving.iter().any(|(m, _)| key_of(m) == k) {
                continue;
            }
            // The request is gone (the source failed, or it was withdrawn).
            if let Some(mut o) = self.incoming.remove(&k) {
                tracing::info!(vm = %k.1, "migration withdrawn; stopping the waiting VM");
                self.metrics.op("migrate_in", false);
                if let Err(e) = self.b.runtime.stop(&mut o.vm, Duration::ZERO).await {
                    tracing::warn!(vm = %k.1, error = %chain(&e), "stopping the waiting VM");
                }
                let dir = desired::vm_dir(&self.vms_dir, &k.0, &k.1);
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    /// Starts a paused QEMU for each arriving Machine that has none, and tells the
    /// source where it waits.
    pub(super) async fn prepare_arrivals(&mut self, arriving: &[(Arc<Machine>, DesiredVm)]) {
        for (m, d) in arriving {
            let key = key_of(m);
            if self.incoming.contains_key(&key) || !self.nets.contains_key(&d.cluster_key) {
                continue;
            }
            let Some(source) = m.spec.host_name.clone() else {
                continue;
            };
            let mut d = d.clone();
            d.spec.incoming = true;
            // A leftover overlay from an earlier attempt would not match the source.
            if let Some(overlay) = d.spec.boot.overlay() {
                let _ = std::fs::remove_file(overlay);
            }
            let started = start_vm(&self.b.runtime, &self.b.links, &self.cfg.qemu_img, m, &d).await;
            let mut status = MigrationStatus {
                source_host: source,
                target_host: self.cfg.name.clone(),
                state: MigrationState::Transferring,
                ..Default::default()
            };
            let result = match started {
                Ok(owned) => {
                    let listening = self
                        .b
                        .runtime
                        .listen_incoming(&owned.vm, self.cfg.underlay)
                        .await;
                    self.incoming.insert(key.clone(), owned);
                    listening.map_err(|e| chain(&e))
                }
                Err(e) => Err(chain(&e)),
            };
            match result {
                Ok(Incoming { uri, disk }) => {
                    tracing::info!(vm = %key.1, %uri, "waiting for the VM");
                    status.incoming = Some(uri);
                    status.disk = disk;
                    status.progress = Some("waiting for the source".into());
                    self.write_migration(m, MachinePhase::Migrating, status)
                        .await;
                }
                Err(message) => {
                    tracing::error!(vm = %key.1, %message, "cannot receive the VM");
                    status.state = MigrationState::Failed;
                    status.message = Some(format!(
                        "MigrationFailed: target host {} could not start the VM's QEMU: {message}",
                        self.cfg.name
                    ));
                    self.write_migration(m, MachinePhase::Ready, status).await;
                    if let Err(e) = self.b.api.end_migration(m).await {
                        tracing::warn!(vm = %key.1, error = %chain(&e), "clearing the migration request");
                    }
                }
            }
        }
    }

    /// Sends each VM of this host whose target waits, one at a time.
    pub(super) async fn send_departures(&mut self, mine: &[Arc<Machine>]) {
        for m in mine {
            let key = key_of(m);
            let (Some(target), Some(st)) = (target_of(m), status_of(m)) else {
                continue;
            };
            let Some(uri) = st.incoming.clone() else {
                continue;
            };
            if st.state != MigrationState::Transferring
                || st.target_host != target
                || st.source_host != self.cfg.name
                || m.meta().deletion_timestamp.is_some()
            {
                continue;
            }
            let Some(owned) = self.vms.get(&key) else {
                continue;
            };
            let to = Incoming {
                uri,
                disk: st.disk.clone(),
            };
            let mut status = st.clone();
            tracing::info!(vm = %key.1, %target, "live-migrating");
            let limits = Limits {
                timeout: SEND_TIMEOUT,
                max_bandwidth: self.cfg.migration_max_bandwidth,
            };
            let result = self.send_reporting(&owned.vm, &to, limits, m, st).await;
            match result {
                Ok(outcome) => {
                    tracing::info!(vm = %key.1, %target, downtime_ms = outcome.downtime_ms, total_ms = outcome.total_ms, "migrated");
                    self.metrics.op("migrate_out", true);
                    // Written before the paused copy goes, so that an agent killed in
                    // between knows the guest runs on the target (`handing_over`).
                    status.state = MigrationState::Completed;
                    status.downtime_ms = Some(outcome.downtime_ms);
                    status.total_ms = Some(outcome.total_ms);
                    status.progress = Some(format!(
                        "RAM {} of {} MiB sent",
                        mib(outcome.transferred),
                        mib(outcome.ram_total)
                    ));
                    status.message = None;
                    self.write_migration(m, MachinePhase::Ready, status).await;
                    let note = format!(
                        "live-migrated from {} to {target}: downtime {} ms (QEMU), {} ms in all",
                        self.cfg.name, outcome.downtime_ms, outcome.total_ms
                    );
                    self.b.api.event(m, false, "Migrated", note).await;
                    self.drop_sent_copy(&key).await;
                    self.hand_over(m, target).await;
                }
                Err(e) => {
                    let message = chain(&e);
                    tracing::error!(vm = %key.1, %target, %message, "live migration failed; the VM stays here");
                    self.metrics.op("migrate_out", false);
                    status.state = MigrationState::Failed;
                    status.message = Some(format!("MigrationFailed: {message}"));
                    let note = format!(
                        "live migration to {target} failed; the VM runs on here, on {}: {message}",
                        self.cfg.name
                    );
                    self.write_migration(m, MachinePhase::Ready, status).await;
                    self.b.api.event(m, true, "MigrationFailed", note).await;
                    if let Err(e) = self.b.api.end_migration(m).await {
                        tracing::warn!(vm = %key.1, error = %chain(&e), "clearing the migration request");
                    }
                }
            }
        }
    }

    /// Sends `vm` to `to`, writing how far it got on the Machine every
    /// [`PROGRESS_EVERY`].
    async fn send_reporting(
        &self,
        vm: &Vm,
        to: &Incoming,
        limits: Limits,
        m: &Machine,
        st: &MigrationStatus,
    ) -> Result<Outcome, VmError> {
        let (progress, mut seen) = tokio::sync::watch::channel(String::new());
        let send = self.b.runtime.migrate_out(vm, to, limits, &progress);
        tokio::pin!(send);
        let first = tokio::time::Instant::now() + PROGRESS_EVERY;
        let mut tick = tokio::time::interval_at(first, PROGRESS_EVERY);
        loop {
            tokio::select! {
                biased;
                r = &mut send => return r,
                _ = tick.tick() => {
                    if seen.has_changed().unwrap_or(false) {
                        let mut now = st.clone();
                        now.progress = Some(seen.borrow_and_update().clone());
                        self.write_migration(m, MachinePhase::Migrating, now).await;
                    }
                }
            }
        }
    }

    /// Whether `m` moved away from this host and only its hand-over is left (the
    /// agent was killed, or the write failed, after the guest left): quits the paused
    /// copy if it is still here, retries the hand-over and says so, so that the loop
    /// neither mistakes the missing VM for a crash nor starts it again.
    pub(super) async fn handing_over(&mut self, m: &Machine) -> bool {
        let Some(st) = status_of(m) else {
            return false;
        };
        let me = self.cfg.name.as_str();
        if st.state != MigrationState::Completed
            || st.source_host != me
            || st.target_host == me
            || m.spec.host_name.as_deref() != Some(me)
            || target_of(m) != Some(st.target_host.as_str())
        {
            return false;
        }
        let target = st.target_host.clone();
        self.drop_sent_copy(&key_of(m)).await;
        self.hand_over(m, &target).await;
        true
    }

    /// Quits the paused QEMU of a VM that now runs on another host, and forgets it.
    async fn drop_sent_copy(&mut self, key: &Key) {
        if let Some(mut o) = self.vms.remove(key) {
            if let Err(e) = self.b.runtime.stop(&mut o.vm, Duration::ZERO).await {
                tracing::warn!(vm = %key.1, error = %chain(&e), "quitting the paused source");
            }
        }
        let dir = desired::vm_dir(&self.vms_dir, &key.0, &key.1);
        let _ = std::fs::remove_dir_all(dir);
        self.forget(key);
    }

    async fn hand_over(&self, m: &Machine, target: &str) {
        for attempt in 1..=3 {
            match self.b.api.hand_over(m, target).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(machine = %m.name_any(), attempt, error = %chain(&e), "handing the machine over");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn write_migration(&self, m: &Machine, phase: MachinePhase, status: MigrationStatus) {
        let phase = match (phase_of(m), phase) {
            // A Machine that is not Ready (still booting) keeps its phase.
            (Some(MachinePhase::Running), MachinePhase::Migrating | MachinePhase::Ready) => {
                MachinePhase::Running
            }
            _ => phase,
        };
        let mut body = serde_json::json!({ "migration": status });
        // The outcome is a condition too, so that `kubectl describe` and the
        // condition-reading tools show it.
        let outcome = match status.state {
            MigrationState::Completed => Some((
                true,
                "Migrated",
                format!(
                    "live-migrated from {} to {}",
                    status.source_host, status.target_host
                ),
            )),
            MigrationState::Failed => Some((
                false,
                "MigrationFailed",
                format!(
                    "the VM still runs on {}: {}",
                    status.source_host,
                    status.message.as_deref().unwrap_or("the migration failed")
                ),
            )),
            MigrationState::Preparing | MigrationState::Transferring => None,
        };
        if let Some((ok, reason, message)) = outcome {
            let mut conds = m
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            shoal_kube::conditions::set(
                &mut conds,
                shoal_kube::conditions::condition(MIGRATED, ok, reason, message),
            );
            body["conditions"] = serde_json::json!(conds);
        }
        if let Err(e) = self.b.api.write_phase(m, phase, body).await {
            tracing::warn!(machine = %m.name_any(), error = %chain(&e), "migration status");
        }
    }
}
