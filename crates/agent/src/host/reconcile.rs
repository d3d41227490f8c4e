//! The host loop. It owns every VM and cluster network of this host and converges
//! them to what the API says (level-triggered, idempotent): it stops what no live
//! Machine owns, builds the networks, leases and metadata of what should run,
//! launches what is missing, reports what exited, and keeps the firewall and the
//! Host's allocation current. Its I/O goes through [`Backends`], so that its unit
//! tests run it against in-memory fakes; `run` wires it to the real ones.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use shoal_api::{Cluster, Host, Machine, MachinePhase, Release};

use super::api::{status_patch, Allocation, HostApi, ReadyCondition, UserDataError};
use super::console;
use super::desired::{self, Capacity, Context, DesiredVm, Refusal};
use super::metrics::Metrics;
use super::network::{ClusterServices, ServiceStarter};
use super::register::HostFacts;
use super::state::{console_tail, read_owner, state_dirs, write_owner, OwnedVm, Owner};
use super::{chain, AgentConfig, AgentError, FINALIZER};
use crate::net::dhcp::Lease;
use crate::net::link::Links;
use crate::net::metadata::{MachineMeta, PhoneHome, PhoneHomeSender};
use crate::net::nft::Firewall;
use crate::net::plan::{ClusterPlan, HostPlan, BRIDGE_PREFIX, TAP_PREFIX, VXLAN_PREFIX};
use crate::phase::PhaseWrite;
use crate::vm::runtime::{Vm, VmRuntime, VmState};
use crate::vm::Accel;

mod migration;

/// A Machine by namespace and name.
type Key = (String, String);

/// The I/O boundaries of the host loop.
pub struct Backends<R, L, F, S, A> {
    /// Runs QEMU.
    pub runtime: R,
    /// Bridges, VXLANs and taps.
    pub links: L,
    /// nftables.
    pub firewall: F,
    /// DHCP and metadata per cluster network.
    pub services: S,
    /// The API calls besides the watches.
    pub api: A,
}

/// The caches the host loop reads (kept by the watches).
pub struct Caches {
    /// Every Machine.
    pub machines: Store<Machine>,
    /// Every Cluster.
    pub clusters: Store<Cluster>,
    /// Every Release.
    pub releases: Store<Release>,
    /// Every Host.
    pub hosts: Store<Host>,
}

/// The host loop's state: every VM and cluster network this host runs.
pub struct Agent<R, L, F, S, A> {
    cfg: AgentConfig,
    vms_dir: PathBuf,
    accel: Accel,
    capacity: Capacity,
    facts: HostFacts,
    b: Backends<R, L, F, S, A>,
    caches: Caches,
    vms: BTreeMap<Key, OwnedVm>,
    /// Paused VMs waiting for a live migration to this host.
    incoming: BTreeMap<Key, OwnedVm>,
    nets: BTreeMap<String, ClusterServices>,
    applied: Option<HostPlan>,
    phone_tx: PhoneHomeSender,
    reported: Option<Allocation>,
    last_report: Instant,
    metrics: Arc<Metrics>,
}

fn key_of(m: &Machine) -> Key {
    (m.namespace().unwrap_or_default(), m.name_any())
}

fn phase_of(m: &Machine) -> Option<MachinePhase> {
    m.status.as_ref().and_then(|s| s.phase)
}

impl<R, L, F, S, A> Agent<R, L, F, S, A>
where
    R: VmRuntime,
    L: Links,
    F: Firewall,
    S: ServiceStarter,
    A: HostApi,
{
    /// A loop for the host `facts` describes, with nothing adopted yet.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: AgentConfig,
        accel: Accel,
        capacity: Capacity,
        facts: HostFacts,
        backends: Backends<R, L, F, S, A>,
        caches: Caches,
        phone_tx: PhoneHomeSender,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            vms_dir: cfg.state_dir.join("vms"),
            cfg,
            accel,
            capacity,
            facts,
            b: backends,
            caches,
            vms: BTreeMap::new(),
            incoming: BTreeMap::new(),
            nets: BTreeMap::new(),
            applied: None,
            phone_tx,
            reported: None,
            last_report: Instant::now(),
            metrics,
        }
    }

    /// The I/O boundaries (the unit tests read their fakes).
    #[cfg(test)]
    pub(crate) fn backends(&self) -> &Backends<R, L, F, S, A> {
        &self.b
    }

    /// The services of the cluster network `key`, if it runs here.
    #[cfg(test)]
    pub(crate) fn network(&self, key: &str) -> Option<&ClusterServices> {
        self.nets.get(key)
    }

    /// One pass, counted and timed.
    pub async fn pass(&mut self) {
        let pass = Instant::now();
        self.sync().await;
        self.metrics.syncs.inc();
        self.metrics
            .sync_seconds
            .observe(pass.elapsed().as_secs_f64());
        self.metrics
            .vms
            .set(i64::try_from(self.vms.len()).unwrap_or(i64::MAX));
        self.metrics
            .networks
            .set(i64::try_from(self.nets.len()).unwrap_or(i64::MAX));
    }

    /// Re-adopts the VMs whose state directories survive from an earlier agent.
    pub async fn adopt(&mut self) {
        for dir in state_dirs(&self.vms_dir) {
            let Some(owner) = read_owner(&dir) else {
                tracing::warn!(dir = %dir.display(), "no owner record; removing");
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            };
            match self.b.runtime.adopt(&dir).await {
                Ok(vm) => {
                    tracing::info!(vm = %owner.name, pid = ?vm.pid(), "re-adopted running VM");
                    self.vms.insert(
                        (owner.namespace.clone(), owner.name.clone()),
                        OwnedVm { vm, owner },
                    );
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %chain(&e), "VM not running; it will be reported");
                }
            }
        }
    }

    fn mine(&self) -> Vec<Arc<Machine>> {
        self.caches
            .machines
            .state()
            .into_iter()
            .filter(|m| m.spec.host_name.as_deref() == Some(self.cfg.name.as_str()))
            .collect()
    }

    fn context(&self) -> Context<'_> {
        Context {
            host: &self.cfg.name,
            capacity: self.capacity,
            accel: self.accel,
            vms_dir: &self.vms_dir,
        }
    }

    fn decide(&self, m: &Machine) -> Result<DesiredVm, Refusal> {
        let ns = m.namespace().unwrap_or_default();
        let cluster = self.caches.clusters.state().into_iter().find(|c| {
            c.namespace().as_deref() == Some(ns.as_str()) && c.name_any() == m.spec.cluster
        });
        let release = self
            .caches
            .releases
            .state()
            .into_iter()
            .find(|r| r.name_any() == m.spec.release);
        desired::desired_vm(&self.context(), m, cluster.as_deref(), release.as_deref())
    }

    /// One pass: converge VMs, networks, the firewall and the Host's status.
    async fn sync(&mut self) {
        let arriving = self.arriving();
        self.settle_arrivals(&arriving).await;
        let mine = self.mine();
        let live: BTreeMap<Key, Arc<Machine>> =
            mine.iter().map(|m| (key_of(m), m.clone())).collect();

        // VMs no live Machine owns (deleted while the agent was away, or re-created
        // with another uid) go first.
        let orphans: Vec<Key> = self
            .vms
            .iter()
            .filter(|(k, o)| {
                live.get(*k)
                    .is_none_or(|m| m.uid().as_deref() != Some(o.owner.uid.as_str()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &orphans {
            tracing::info!(vm = %k.1, namespace = %k.0, "removing orphan VM");
        }
        // Deleted Machines, and failed ones that still have a VM, are stopped
        // together with the orphans, all at once.
        let deleting: Vec<&Arc<Machine>> = mine
            .iter()
            .filter(|m| m.meta().deletion_timestamp.is_some())
            .collect();
        let mut remove = orphans;
        remove.extend(deleting.iter().map(|m| key_of(m)));
        remove.extend(
            mine.iter()
                .filter(|m| phase_of(m) == Some(MachinePhase::Failed))
                .map(|m| key_of(m))
                .filter(|k| self.vms.contains_key(k)),
        );
        self.remove_vms(remove).await;
        for m in deleting {
            let key = key_of(m);
            if !self.vms.contains_key(&key) {
                self.forget(&key);
                self.remove_finalizer(m).await;
            }
        }

        let mut wanted: Vec<(Arc<Machine>, DesiredVm)> = Vec::new();
        for m in &mine {
            let key = key_of(m);
            if m.meta().deletion_timestamp.is_some()
                || phase_of(m) == Some(MachinePhase::Failed)
                || self.handing_over(m).await
            {
                continue;
            }
            if !m.finalizers().iter().any(|f| f == FINALIZER) {
                self.add_finalizer(m).await;
            }
            match self.decide(m) {
                Ok(d) => wanted.push((m.clone(), d)),
                Err(r) if r.retry => {
                    self.set_status(
                        m,
                        MachinePhase::Provisioning,
                        Some(("False", r.reason, r.message)),
                        None,
                    )
                    .await;
                }
                Err(r) => {
                    tracing::warn!(machine = %key.1, reason = r.reason, message = %r.message, "refused");
                    self.set_status(
                        m,
                        MachinePhase::Failed,
                        Some(("False", r.reason, r.message)),
                        None,
                    )
                    .await;
                }
            }
        }

        // A VM whose QEMU went away is reported; the Machine's owner replaces it.
        let mut exited = Vec::new();
        for (k, o) in self.vms.iter_mut() {
            if let Ok(st) = self.b.runtime.status(&mut o.vm).await {
                if st.state == VmState::Stopped {
                    exited.push(k.clone());
                }
            }
        }
        for k in &exited {
            if let Some(m) = live.get(k) {
                let tail = console_tail(&desired::vm_dir(&self.vms_dir, &k.0, &k.1));
                self.set_status(
                    m,
                    MachinePhase::Failed,
                    Some((
                        "False",
                        "VMExited",
                        format!("QEMU exited; console ends with: {tail}"),
                    )),
                    None,
                )
                .await;
            }
        }
        self.remove_vms(exited).await;
        self.report_consoles(&live).await;
        wanted.retain(|(m, _)| {
            phase_of(m) != Some(MachinePhase::Failed) || self.vms.contains_key(&key_of(m))
        });

        let mut networked = wanted.clone();
        networked.extend(arriving.iter().cloned());
        self.converge_networks(&networked).await;
        self.launch_missing(&wanted).await;
        self.prepare_arrivals(&arriving).await;
        self.send_departures(&mine).await;
        self.collect_orphan_links().await;
        self.report_host(&wanted).await;
    }

    /// Brings up the networks of the wanted VMs, with their peers, leases and
    /// metadata, and tears down the rest; then applies the firewall.
    async fn converge_networks(&mut self, wanted: &[(Arc<Machine>, DesiredVm)]) {
        let mut plans: BTreeMap<String, ClusterPlan> = BTreeMap::new();
        for (_, d) in wanted {
            plans
                .entry(d.cluster_key.clone())
                .or_insert_with(|| ClusterPlan {
                    net: d.net.clone(),
                    peers: BTreeSet::new(),
                    ports: Vec::new(),
                })
                .ports
                .push(d.port.clone());
        }
        // Peers: the underlay addresses of other hosts with Machines of the cluster.
        let underlays: BTreeMap<String, Ipv4Addr> = self
            .caches
            .hosts
            .state()
            .iter()
            .filter_map(|h| {
                let ip = h.status.as_ref()?.underlay_ip.as_ref()?.parse().ok()?;
                Some((h.name_any(), ip))
            })
            .collect();
        for m in self.caches.machines.state() {
            if m.meta().deletion_timestamp.is_some() {
                continue;
            }
            let key = format!("{}/{}", m.namespace().unwrap_or_default(), m.spec.cluster);
            // The host a VM runs on, and the one it moves to.
            let hosts = [m.spec.host_name.as_deref(), migration::target_of(&m)];
            for host in hosts.into_iter().flatten() {
                if host == self.cfg.name {
                    continue;
                }
                if let (Some(plan), Some(ip)) = (plans.get_mut(&key), underlays.get(host)) {
                    plan.peers.insert(*ip);
                }
            }
        }

        for plan in plans.values() {
            let net = &plan.net;
            if let Some(old) = self.nets.get(&net.key).map(|s| s.net.clone()) {
                if old != *net {
                    tracing::warn!(cluster = %net.key, "cluster network changed; rebuilding");
                    self.nets.remove(&net.key);
                    if let Err(e) = self.b.links.remove_cluster(&old).await {
                        tracing::warn!(error = %chain(&e), "removing old network");
                    }
                }
            }
            if let Err(e) = self.b.links.ensure_cluster(net, self.cfg.underlay).await {
                tracing::error!(cluster = %net.key, error = %chain(&e), "network");
                continue;
            }
            if let Err(e) = self.b.links.set_peers(net, &plan.peers).await {
                tracing::error!(cluster = %net.key, error = %chain(&e), "VXLAN peers");
            }
            if !self.nets.contains_key(&net.key) {
                match self.b.services.start(net, self.phone_tx.clone()) {
                    Ok(s) => {
                        self.nets.insert(net.key.clone(), s);
                    }
                    Err(e) => {
                        tracing::error!(cluster = %net.key, error = %chain(&e), "network services");
                        continue;
                    }
                }
            }
        }
        // Leases and metadata follow the wanted machines exactly.
        for (key, services) in &self.nets {
            let ports: BTreeSet<_> = wanted
                .iter()
                .filter(|(_, d)| &d.cluster_key == key)
                .map(|(_, d)| d.port.mac)
                .collect();
            for lease in services.leases.all() {
                if !ports.contains(&lease.mac) {
                    services.leases.remove(&lease.mac);
                    services.meta.remove(&lease.machine);
                }
            }
        }
        for (m, d) in wanted {
            let Some(services) = self.nets.get(&d.cluster_key) else {
                continue;
            };
            services.leases.set(Lease {
                machine: d.port.machine.clone(),
                mac: d.port.mac,
                ip: d.port.ip,
                hostname: d.port.machine.clone(),
            });
            if services.meta.get(&d.port.machine).is_none() {
                match self.user_data(m).await {
                    Ok(user_data) => services.meta.set(
                        d.port.machine.clone(),
                        MachineMeta {
                            ip: d.port.ip,
                            instance_id: m.uid().unwrap_or_else(|| d.port.machine.clone()),
                            hostname: d.port.machine.clone(),
                            user_data,
                            vendor_data: crate::net::metadata::vendor_data_for(
                                &d.net.seed_url(&d.port.machine),
                            ),
                        },
                    ),
                    Err(e) => {
                        tracing::warn!(machine = %d.port.machine, error = %chain(&e), "user-data")
                    }
                }
            }
        }
        // Networks with no wanted VM left leave this host.
        let gone: Vec<String> = self
            .nets
            .keys()
            .filter(|k| !plans.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(services) = self.nets.remove(&key) {
                let net = services.net.clone();
                drop(services);
                match self.b.links.remove_cluster(&net).await {
                    Ok(()) => tracing::info!(cluster = %key, "network removed: last VM left"),
                    Err(e) => {
                        tracing::warn!(cluster = %key, error = %chain(&e), "removing network")
                    }
                }
            }
        }

        let plan = HostPlan {
            underlay: Some(self.cfg.underlay),
            clusters: plans.into_values().collect(),
            egress: self.cfg.egress.clone(),
        };
        if self.applied.as_ref() != Some(&plan) {
            match self.b.firewall.apply(&plan).await {
                Ok(()) => self.applied = Some(plan),
                Err(e) => tracing::error!(error = %chain(&e), "firewall"),
            }
        }
    }

    /// The user-data of a Machine: its bootstrap Secret's `value`, or a minimal
    /// cloud-config naming the host.
    async fn user_data(&self, m: &Machine) -> Result<String, UserDataError> {
        let secret = m
            .spec
            .bootstrap
            .as_ref()
            .and_then(|b| b.data_secret_name.clone());
        let Some(secret) = secret else {
            return Ok(format!("#cloud-config\nhostname: {}\n", m.name_any()));
        };
        self.b
            .api
            .bootstrap_value(&m.namespace().unwrap_or_default(), &secret)
            .await
    }

    /// Starts the VMs that should run and do not, all at once.
    async fn launch_missing(&mut self, wanted: &[(Arc<Machine>, DesiredVm)]) {
        let mut starts = Vec::new();
        for (m, d) in wanted {
            let key = key_of(m);
            if self.vms.contains_key(&key) {
                // Adopted or launched: make sure the status says so.
                if matches!(
                    phase_of(m),
                    None | Some(MachinePhase::Pending | MachinePhase::Provisioning)
                ) {
                    let bridge = d.net.bridge.clone();
                    let tap = d.port.tap.clone();
                    if let Err(e) = self
                        .b
                        .links
                        .attach_tap(&tap, &bridge, Duration::from_secs(2))
                        .await
                    {
                        tracing::warn!(error = %chain(&e), "tap");
                    }
                    self.mark_running(m).await;
                }
                continue;
            }
            if !self.nets.contains_key(&d.cluster_key) {
                continue; // its network failed; retried next pass
            }
            if matches!(
                phase_of(m),
                Some(MachinePhase::Running | MachinePhase::Ready)
            ) {
                // It ran here and its QEMU is gone (host reboot, crash while the
                // agent was away): report, do not silently boot a fresh disk.
                self.set_status(
                    m,
                    MachinePhase::Failed,
                    Some((
                        "False",
                        "VMExited",
                        format!(
                            "the VM of {} is no longer running on host {}",
                            key.1, self.cfg.name
                        ),
                    )),
                    None,
                )
                .await;
                continue;
            }
            self.set_status(
                m,
                MachinePhase::Provisioning,
                Some(("False", "Provisioning", "starting the VM".into())),
                Some("provisioningTime"),
            )
            .await;
            starts.push((m.clone(), d.clone()));
        }
        let runtime = &self.b.runtime;
        let links = &self.b.links;
        let qemu_img = &self.cfg.qemu_img;
        let results = futures::future::join_all(starts.into_iter().map(|(m, d)| async move {
            let r = start_vm(runtime, links, qemu_img, &m, &d).await;
            (m, d, r)
        }))
        .await;
        for (m, _d, r) in results {
            self.metrics.op("launch", r.is_ok());
            match r {
                Ok(owned) => {
                    tracing::info!(machine = %owned.owner.name, pid = ?owned.vm.pid(), "VM running");
                    self.vms.insert(key_of(&m), owned);
                    self.mark_running(&m).await;
                }
                Err(e) => {
                    let message = chain(&e);
                    tracing::error!(machine = %m.name_any(), %message, "launch failed");
                    self.set_status(
                        &m,
                        MachinePhase::Failed,
                        Some(("False", "VMLaunchFailed", message)),
                        None,
                    )
                    .await;
                }
            }
        }
    }

    /// The VM runs: Running, waiting for the guest.
    async fn mark_running(&self, m: &Machine) {
        self.set_status(
            m,
            MachinePhase::Running,
            Some((
                "False",
                "Booting",
                "the VM runs; waiting for the guest to phone home".into(),
            )),
            Some("runningTime"),
        )
        .await;
    }

    /// A guest phoned home: its Machine is Ready.
    pub async fn phoned_home(&mut self, ph: PhoneHome) {
        let ns = ph.cluster.split('/').next().unwrap_or_default().to_string();
        let key = (ns, ph.machine.clone());
        if !self.vms.contains_key(&key) {
            tracing::warn!(machine = %ph.machine, "phone-home from a machine this host does not run");
            return;
        }
        let machine = self.mine().into_iter().find(|m| key_of(m) == key);
        if let Some(m) = machine {
            tracing::info!(machine = %ph.machine, "guest phoned home");
            self.metrics.phone_homes.inc();
            self.set_status(
                &m,
                MachinePhase::Ready,
                Some((
                    "True",
                    "GuestPhonedHome",
                    "the guest booted and phoned home".into(),
                )),
                Some("readyTime"),
            )
            .await;
        }
    }

    /// Stops the VMs of `keys` (those this agent runs) concurrently and removes
    /// their state; a VM whose stop fails stays owned, to be retried next pass.
    async fn remove_vms(&mut self, keys: Vec<Key>) {
        let taken: Vec<(Key, Option<OwnedVm>)> = keys
            .into_iter()
            .map(|k| {
                let o = self.vms.remove(&k);
                (k, o)
            })
            .collect();
        let runtime = &self.b.runtime;
        let grace = self.cfg.stop_grace;
        let stopped = futures::future::join_all(taken.into_iter().map(|(k, o)| async move {
            let Some(mut o) = o else {
                return (k, None, Ok(()));
            };
            let r = if o.vm.state() == VmState::Running {
                runtime.stop(&mut o.vm, grace).await
            } else {
                Ok(())
            };
            (k, Some(o), r)
        }))
        .await;
        for (key, o, r) in stopped {
            if o.is_some() {
                self.metrics.op("stop", r.is_ok());
            }
            if let Err(e) = r {
                tracing::error!(vm = %key.1, error = %chain(&e), "stop failed; will retry");
                if let Some(o) = o {
                    self.vms.insert(key, o);
                }
                continue;
            }
            let dir = desired::vm_dir(&self.vms_dir, &key.0, &key.1);
            if dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "removing VM state");
                }
            }
        }
    }

    fn forget(&self, key: &Key) {
        for services in self.nets.values() {
            if let Some(lease) = services
                .leases
                .all()
                .into_iter()
                .find(|l| l.machine == key.1)
            {
                services.leases.remove(&lease.mac);
            }
            services.meta.remove(&key.1);
        }
    }

    async fn add_finalizer(&self, m: &Machine) {
        if let Err(e) = self.b.api.set_finalizer(m, true).await {
            tracing::warn!(machine = %m.name_any(), error = %chain(&e), "finalizer (retried next pass)");
        }
    }

    async fn remove_finalizer(&self, m: &Machine) {
        if let Err(e) = self.b.api.set_finalizer(m, false).await {
            tracing::warn!(machine = %m.name_any(), error = %chain(&e), "finalizer (retried next pass)");
        }
    }

    /// Writes phase and the `Ready` condition when they change; `stamp` names a
    /// time field set to now.
    async fn set_status(
        &self,
        m: &Machine,
        phase: MachinePhase,
        cond: Option<ReadyCondition<'_>>,
        stamp: Option<&str>,
    ) {
        let Some(status) = status_patch(m, phase, cond, stamp) else {
            return;
        };
        match self.b.api.write_phase(m, phase, status).await {
            Ok(PhaseWrite::Refused(_)) => {
                self.metrics.phase_refusals.inc();
            }
            Ok(PhaseWrite::Written(_) | PhaseWrite::Gone) => {}
            Err(e) => {
                tracing::warn!(machine = %m.name_any(), error = %chain(&e), "status (retried next pass)");
            }
        }
    }

    /// Copies the end of the console into each running Machine whose Node has not
    /// registered in its guest (see [`console`]).
    async fn report_consoles(&self, live: &BTreeMap<Key, Arc<Machine>>) {
        let now = chrono::Utc::now();
        for (k, m) in live {
            let Some(phase) = phase_of(m) else {
                continue;
            };
            if !self.vms.contains_key(k) || !console::due(m, now) {
                continue;
            }
            let tail = console::read(&desired::vm_dir(&self.vms_dir, &k.0, &k.1), now);
            let status = serde_json::json!({ "console": tail });
            if let Err(e) = self.b.api.write_phase(m, phase, status).await {
                tracing::warn!(machine = %m.name_any(), error = %chain(&e), "console report (retried next pass)");
            }
        }
    }

    /// Deletes Shoal links that no wanted network or running VM owns.
    async fn collect_orphan_links(&self) {
        let Ok(names) = self.b.links.list().await else {
            return;
        };
        let mut keep: BTreeSet<String> = BTreeSet::new();
        for s in self.nets.values() {
            keep.insert(s.net.bridge.clone());
            keep.insert(s.net.vxlan.clone());
        }
        for o in self.vms.values().chain(self.incoming.values()) {
            if let Some(tap) = &o.vm.spec().tap {
                keep.insert(tap.ifname.clone());
            }
        }
        for name in names {
            let ours = [BRIDGE_PREFIX, VXLAN_PREFIX, TAP_PREFIX]
                .iter()
                .any(|p| name.starts_with(p));
            if ours && !keep.contains(&name) {
                tracing::info!(link = %name, "removing orphan link");
                if let Err(e) = self.b.links.delete(&name).await {
                    tracing::warn!(link = %name, error = %chain(&e), "orphan link");
                }
            }
        }
    }

    /// Reports the Host's allocation when it changes, and at least every 30 s.
    async fn report_host(&mut self, wanted: &[(Arc<Machine>, DesiredVm)]) {
        let allocated = wanted.iter().fold((0u32, 0u64, 0u64), |acc, (_, d)| {
            (
                acc.0 + d.spec.vcpus.get(),
                acc.1 + u64::from(d.spec.memory_mib.get()),
                acc.2 + d.disk_bytes,
            )
        });
        if self.reported == Some(allocated) && self.last_report.elapsed() < Duration::from_secs(30)
        {
            return;
        }
        match self.b.api.report(&self.facts, allocated).await {
            Ok(()) => {
                self.reported = Some(allocated);
                self.last_report = Instant::now();
            }
            Err(e) => tracing::warn!(error = %chain(&e), "host status"),
        }
    }
}

/// Makes the overlay (for disk boots), launches QEMU and plugs its tap.
async fn start_vm(
    runtime: &impl VmRuntime,
    links: &impl Links,
    qemu_img: &Path,
    m: &Machine,
    d: &DesiredVm,
) -> Result<OwnedVm, AgentError> {
    let owner = Owner {
        namespace: m.namespace().unwrap_or_default(),
        name: m.name_any(),
        uid: m.uid().unwrap_or_default(),
        cluster: d.cluster_key.clone(),
    };
    write_owner(&d.spec.state_dir, &owner)?;
    if let (Some(base), Some(overlay_path)) = (&d.base_disk, d.spec.boot.overlay()) {
        if !overlay_path.exists() {
            crate::vm::disk::make_overlay(qemu_img, base, overlay_path, d.disk_bytes)
                .await
                .map_err(|e| AgentError::Overlay {
                    vm: owner.name.clone(),
                    message: chain(&e),
                })?;
        }
    }
    let mut vm = Vm::new(d.spec.clone());
    runtime.launch(&mut vm).await?;
    if let Err(e) = links
        .attach_tap(&d.port.tap, &d.net.bridge, Duration::from_secs(5))
        .await
    {
        // Without its port the VM is useless: do not leave it running.
        let _ = runtime.stop(&mut vm, Duration::ZERO).await;
        return Err(e.into());
    }
    Ok(OwnedVm { vm, owner })
}
