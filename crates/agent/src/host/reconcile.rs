//! The host loop. One task owns every VM and cluster network of this host; it wakes
//! on any change to Machines, Clusters, Releases or Hosts, on a guest phoning home,
//! and on a periodic resync, and converges the host to what the API says
//! (level-triggered, idempotent).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use shoal_api::{Cluster, Condition, Host, Machine, MachinePhase, Release};
use tokio::sync::Notify;

use super::desired::{self, Capacity, Context, DesiredVm, Refusal};
use super::metrics::Metrics;
use super::network::ClusterServices;
use super::register::{self, HostFacts};
use super::{chain, AgentConfig, AgentError, FINALIZER};
use crate::net::dhcp::Lease;
use crate::net::link::{Links, RtLinks};
use crate::net::metadata::{MachineMeta, PhoneHome, PhoneHomeSender};
use crate::net::netns::NetNs;
use crate::net::nft::{Firewall, NftFirewall};
use crate::net::plan::{ClusterPlan, HostPlan, BRIDGE_PREFIX, TAP_PREFIX, VXLAN_PREFIX};
use crate::phase::PhaseWrite;
use crate::vm::kvm::probe_kvm;
use crate::vm::runtime::{QemuRuntime, Vm, VmRuntime, VmState};
use crate::vm::Accel;

/// Who a VM state directory belongs to, saved beside the VM's own state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Owner {
    namespace: String,
    name: String,
    uid: String,
    cluster: String,
}

const OWNER_FILE: &str = "owner.json";
/// Phone-homes queued for the host loop; more are shed (counted) and retried by
/// the guests. A pass handles a whole queue, so this is a burst, not a backlog.
const PHONE_HOME_QUEUE: usize = 256;

type Key = (String, String);

struct OwnedVm {
    vm: Vm,
    owner: Owner,
}

/// Runs the agent until `shutdown` resolves. VMs and networks outlive it.
pub async fn run(
    client: Client,
    cfg: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let vms_dir = cfg.state_dir.join("vms");
    std::fs::create_dir_all(&vms_dir).map_err(|source| AgentError::Io {
        what: format!("creating {}", vms_dir.display()),
        source,
    })?;
    let metrics = Arc::new(Metrics::default());
    let metrics_task = match cfg.metrics_listen {
        Some(addr) => {
            let listener = super::metrics::bind(addr).await?;
            let m = metrics.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = super::metrics::serve(m, listener).await {
                    tracing::error!(error = %chain(&e), "metrics");
                }
            }))
        }
        None => None,
    };
    let netns = match &cfg.netns {
        Some(name) => NetNs::ensure(name).await?,
        None => NetNs::current(),
    };
    let accel = probe_kvm(&cfg.qemu, cfg.kvm_probe_timeout).await;
    tracing::info!(accel = accel.as_str(), "accelerator chosen");
    let runtime = QemuRuntime::new(cfg.qemu.clone())
        .with_command_prefix(netns.command_prefix())
        .with_quit_timeout(Duration::from_secs(5));
    let links = RtLinks::new(&netns)?;
    let firewall = NftFirewall::new(netns.clone(), cfg.nft.clone());
    let detected = register::detect_capacity();
    let capacity = Capacity {
        cpus: cfg.cpus.unwrap_or(detected.cpus),
        memory_mib: cfg.memory_mib.unwrap_or(detected.memory_mib),
    };
    let forward_listener = match cfg.forward_listen {
        Some(addr) => Some(super::forward::bind(addr).await?),
        None => None,
    };
    let forward_endpoint = match &forward_listener {
        Some(l) => Some(
            l.local_addr()
                .map_err(|source| AgentError::Io {
                    what: "reading the forward endpoint's address".into(),
                    source,
                })?
                .to_string(),
        ),
        None => None,
    };
    let facts = HostFacts {
        name: cfg.name.clone(),
        underlay: cfg.underlay,
        capacity,
        disk: register::disk_bytes(&cfg.state_dir),
        kvm: accel == Accel::Kvm,
        cpu_allocation_ratio: cfg.cpu_allocation_ratio,
        forward_endpoint,
    };
    register_until_reachable(&client, &facts).await?;
    let beat = tokio::spawn(heartbeat_loop(client.clone(), cfg.name.clone()));

    let wake = Arc::new(Notify::new());
    let machines = watch_all::<Machine>(&client, &wake);
    let clusters = watch_all::<Cluster>(&client, &wake);
    let releases = watch_all::<Release>(&client, &wake);
    let hosts = watch_all::<Host>(&client, &wake);
    for ready in [
        machines.0.wait_until_ready().await.is_ok(),
        clusters.0.wait_until_ready().await.is_ok(),
        releases.0.wait_until_ready().await.is_ok(),
        hosts.0.wait_until_ready().await.is_ok(),
    ] {
        if !ready {
            tracing::warn!("a watch ended before its first list");
        }
    }
    let forward_task = forward_listener.map(|listener| {
        let targets = super::forward::Targets {
            host: cfg.name.clone(),
            machines: machines.0.clone(),
            clusters: clusters.0.clone(),
        };
        tokio::spawn(super::forward::serve(listener, netns.clone(), targets))
    });
    let (phone_tx, mut phone_rx) =
        PhoneHomeSender::channel(PHONE_HOME_QUEUE, metrics.phone_homes_shed.clone());
    let mut agent = Agent {
        client,
        cfg,
        vms_dir,
        netns,
        accel,
        capacity,
        facts,
        runtime,
        links,
        firewall,
        machines: machines.0,
        clusters: clusters.0,
        releases: releases.0,
        hosts: hosts.0,
        vms: BTreeMap::new(),
        nets: BTreeMap::new(),
        applied: None,
        phone_tx,
        reported: None,
        last_report: Instant::now(),
        metrics,
    };
    agent.adopt().await;
    let mut tick = tokio::time::interval(agent.cfg.resync);
    tokio::pin!(shutdown);
    loop {
        let pass = Instant::now();
        agent.sync().await;
        agent.metrics.syncs.inc();
        agent
            .metrics
            .sync_seconds
            .observe(pass.elapsed().as_secs_f64());
        agent
            .metrics
            .vms
            .set(i64::try_from(agent.vms.len()).unwrap_or(i64::MAX));
        agent
            .metrics
            .networks
            .set(i64::try_from(agent.nets.len()).unwrap_or(i64::MAX));
        tokio::select! {
            () = &mut shutdown => break,
            () = wake.notified() => {}
            Some(ph) = phone_rx.recv() => agent.phoned_home(ph).await,
            _ = tick.tick() => {}
        }
        // Coalesce a burst of events into one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok(ph) = phone_rx.try_recv() {
            agent.phoned_home(ph).await;
        }
    }
    beat.abort();
    if let Some(task) = forward_task {
        task.abort();
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    if let Err(e) = register::report_stopped(&agent.client, &agent.facts).await {
        tracing::warn!(error = %chain(&e), "marking the host NotReady");
    }
    for task in [machines.1, clusters.1, releases.1, hosts.1] {
        task.abort();
    }
    tracing::info!("agent stopped; VMs keep running");
    Ok(())
}

/// Registers the Host, reports its status and takes its Lease, retrying while the
/// API cannot be reached or answers 5xx (a server restarting, say); a refusal (bad
/// credentials, an invalid object) is returned at once.
async fn register_until_reachable(client: &Client, facts: &HostFacts) -> Result<(), AgentError> {
    let mut delay = Duration::from_millis(500);
    loop {
        let attempt = async {
            register::register(client, facts).await?;
            register::report(client, facts, (0, 0, 0)).await?;
            register::heartbeat(client, &facts.name).await
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(AgentError::Api { what, source }) if transient(&source) => {
                tracing::warn!(%what, error = %source, retry_in = ?delay, "the API is not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether an API error may go away by itself: no answer, or a 5xx/429 answer.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        _ => true,
    }
}

async fn heartbeat_loop(client: Client, name: String) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        if let Err(e) = register::heartbeat(&client, &name).await {
            tracing::warn!(error = %chain(&e), "heartbeat");
        }
    }
}

fn watch_all<K>(client: &Client, wake: &Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let api: Api<K> = Api::all(client.clone());
    let wake = wake.clone();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(_) => wake.notify_one(),
                Err(e) => tracing::warn!(error = %e, "watch"),
            }
        }
    });
    (reader, task)
}

struct Agent {
    client: Client,
    cfg: AgentConfig,
    vms_dir: PathBuf,
    netns: NetNs,
    accel: Accel,
    capacity: Capacity,
    facts: HostFacts,
    runtime: QemuRuntime,
    links: RtLinks,
    firewall: NftFirewall,
    machines: Store<Machine>,
    clusters: Store<Cluster>,
    releases: Store<Release>,
    hosts: Store<Host>,
    vms: BTreeMap<Key, OwnedVm>,
    nets: BTreeMap<String, ClusterServices>,
    applied: Option<HostPlan>,
    phone_tx: PhoneHomeSender,
    reported: Option<(u32, u64, u64)>,
    last_report: Instant,
    metrics: Arc<Metrics>,
}

fn key_of(m: &Machine) -> Key {
    (m.namespace().unwrap_or_default(), m.name_any())
}

fn phase_of(m: &Machine) -> Option<MachinePhase> {
    m.status.as_ref().and_then(|s| s.phase)
}

impl Agent {
    /// Re-adopts the VMs whose state directories survive from an earlier agent.
    async fn adopt(&mut self) {
        for dir in state_dirs(&self.vms_dir) {
            let owner: Option<Owner> = std::fs::read(dir.join(OWNER_FILE))
                .ok()
                .and_then(|raw| serde_json::from_slice(&raw).ok());
            let Some(owner) = owner else {
                tracing::warn!(dir = %dir.display(), "no owner record; removing");
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            };
            match self.runtime.adopt(&dir).await {
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
        self.machines
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
        let cluster = self.clusters.state().into_iter().find(|c| {
            c.namespace().as_deref() == Some(ns.as_str()) && c.name_any() == m.spec.cluster
        });
        let release = self
            .releases
            .state()
            .into_iter()
            .find(|r| r.name_any() == m.spec.release);
        desired::desired_vm(&self.context(), m, cluster.as_deref(), release.as_deref())
    }

    /// One pass: converge VMs, networks, the firewall and the Host's status.
    async fn sync(&mut self) {
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
            if m.meta().deletion_timestamp.is_some() || phase_of(m) == Some(MachinePhase::Failed) {
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
            if let Ok(st) = self.runtime.status(&mut o.vm).await {
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
        wanted.retain(|(m, _)| {
            phase_of(m) != Some(MachinePhase::Failed) || self.vms.contains_key(&key_of(m))
        });

        self.converge_networks(&wanted).await;
        self.launch_missing(&wanted).await;
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
            .hosts
            .state()
            .iter()
            .filter_map(|h| {
                let ip = h.status.as_ref()?.underlay_ip.as_ref()?.parse().ok()?;
                Some((h.name_any(), ip))
            })
            .collect();
        for m in self.machines.state() {
            let Some(host) = m.spec.host_name.as_deref() else {
                continue;
            };
            if host == self.cfg.name || m.meta().deletion_timestamp.is_some() {
                continue;
            }
            let key = format!("{}/{}", m.namespace().unwrap_or_default(), m.spec.cluster);
            if let (Some(plan), Some(ip)) = (plans.get_mut(&key), underlays.get(host)) {
                plan.peers.insert(*ip);
            }
        }

        for plan in plans.values() {
            let net = &plan.net;
            if let Some(old) = self.nets.get(&net.key).map(|s| s.net.clone()) {
                if old != *net {
                    tracing::warn!(cluster = %net.key, "cluster network changed; rebuilding");
                    self.nets.remove(&net.key);
                    if let Err(e) = self.links.remove_cluster(&old).await {
                        tracing::warn!(error = %chain(&e), "removing old network");
                    }
                }
            }
            if let Err(e) = self.links.ensure_cluster(net, self.cfg.underlay).await {
                tracing::error!(cluster = %net.key, error = %chain(&e), "network");
                continue;
            }
            if let Err(e) = self.links.set_peers(net, &plan.peers).await {
                tracing::error!(cluster = %net.key, error = %chain(&e), "VXLAN peers");
            }
            if !self.nets.contains_key(&net.key) {
                match ClusterServices::start(&self.netns, net, self.phone_tx.clone()) {
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
                            vendor_data: String::new(),
                        },
                    ),
                    Err(message) => {
                        tracing::warn!(machine = %d.port.machine, %message, "user-data")
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
                match self.links.remove_cluster(&net).await {
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
            match self.firewall.apply(&plan).await {
                Ok(()) => self.applied = Some(plan),
                Err(e) => tracing::error!(error = %chain(&e), "firewall"),
            }
        }
    }

    /// The user-data of a Machine: its bootstrap Secret's `value`, or a minimal
    /// cloud-config naming the host.
    async fn user_data(&self, m: &Machine) -> Result<String, String> {
        let secret = m
            .spec
            .bootstrap
            .as_ref()
            .and_then(|b| b.data_secret_name.clone());
        let Some(secret) = secret else {
            return Ok(format!("#cloud-config\nhostname: {}\n", m.name_any()));
        };
        let api: Api<Secret> =
            Api::namespaced(self.client.clone(), &m.namespace().unwrap_or_default());
        let s = api
            .get(&secret)
            .await
            .map_err(|e| format!("bootstrap secret {secret}: {e}"))?;
        let value = s
            .data
            .as_ref()
            .and_then(|d| d.get("value"))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .or_else(|| s.string_data.as_ref().and_then(|d| d.get("value").cloned()))
            .ok_or_else(|| format!("bootstrap secret {secret} has no key 'value'"))?;
        Ok(value)
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
        let runtime = &self.runtime;
        let links = &self.links;
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
    async fn phoned_home(&mut self, ph: PhoneHome) {
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
        let runtime = &self.runtime;
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
        let mut finalizers = m.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        self.patch_finalizers(m, finalizers).await;
    }

    async fn remove_finalizer(&self, m: &Machine) {
        let finalizers: Vec<String> = m
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        if finalizers.len() != m.finalizers().len() {
            self.patch_finalizers(m, finalizers).await;
        }
    }

    async fn patch_finalizers(&self, m: &Machine, finalizers: Vec<String>) {
        let api: Api<Machine> =
            Api::namespaced(self.client.clone(), &m.namespace().unwrap_or_default());
        let patch = serde_json::json!({"metadata": {
            "finalizers": finalizers, "resourceVersion": m.resource_version()
        }});
        if let Err(e) = api
            .patch(
                &m.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(machine = %m.name_any(), error = %e, "finalizer (retried next pass)");
        }
    }

    /// Writes phase and the `Ready` condition when they change; `stamp` names a
    /// time field set to now.
    async fn set_status(
        &self,
        m: &Machine,
        phase: MachinePhase,
        cond: Option<(&str, &str, String)>,
        stamp: Option<&str>,
    ) {
        let current = m.status.clone().unwrap_or_default();
        let current_cond = current.conditions.iter().find(|c| c.type_ == "Ready");
        let same_cond = match (&cond, current_cond) {
            (Some((s, r, msg)), Some(c)) => c.status == *s && c.reason == *r && c.message == *msg,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if current.phase == Some(phase) && same_cond {
            return;
        }
        let now = Utc::now().to_rfc3339();
        let mut status = serde_json::json!({});
        if let Some((s, reason, message)) = cond {
            let transition = match current_cond {
                Some(c) if c.status == s => c.last_transition_time.clone(),
                _ => Some(now.clone()),
            };
            status["conditions"] = serde_json::json!([Condition {
                type_: "Ready".into(),
                status: s.into(),
                reason: reason.into(),
                message,
                last_transition_time: transition,
                observed_generation: m.meta().generation,
            }]);
        }
        if let Some(field) = stamp {
            status[field] = serde_json::json!(now);
        }
        let api: Api<Machine> =
            Api::namespaced(self.client.clone(), &m.namespace().unwrap_or_default());
        match crate::phase::write_phase(&api, m, phase, status).await {
            Ok(PhaseWrite::Refused(_)) => {
                self.metrics.phase_refusals.inc();
            }
            Ok(PhaseWrite::Written(_) | PhaseWrite::Gone) => {}
            Err(e) => {
                tracing::warn!(machine = %m.name_any(), error = %chain(&e), "status (retried next pass)");
            }
        }
    }

    /// Deletes Shoal links that no wanted network or running VM owns.
    async fn collect_orphan_links(&self) {
        let Ok(names) = self.links.list().await else {
            return;
        };
        let mut keep: BTreeSet<String> = BTreeSet::new();
        for s in self.nets.values() {
            keep.insert(s.net.bridge.clone());
            keep.insert(s.net.vxlan.clone());
        }
        for o in self.vms.values() {
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
                if let Err(e) = self.links.delete(&name).await {
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
        match register::report(&self.client, &self.facts, allocated).await {
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
    runtime: &QemuRuntime,
    links: &RtLinks,
    qemu_img: &Path,
    m: &Machine,
    d: &DesiredVm,
) -> Result<OwnedVm, AgentError> {
    let dir = &d.spec.state_dir;
    std::fs::create_dir_all(dir).map_err(|source| AgentError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let owner = Owner {
        namespace: m.namespace().unwrap_or_default(),
        name: m.name_any(),
        uid: m.uid().unwrap_or_default(),
        cluster: d.cluster_key.clone(),
    };
    let raw = serde_json::to_vec_pretty(&owner).map_err(|e| AgentError::Io {
        what: "encoding the owner record".into(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(dir.join(OWNER_FILE), raw).map_err(|source| AgentError::Io {
        what: format!("writing {}", dir.join(OWNER_FILE).display()),
        source,
    })?;
    if let (Some(base), crate::vm::Boot::Disk { overlay_path }) = (&d.base_disk, &d.spec.boot) {
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

/// The VM state directories under `vms/<namespace>/<name>`.
fn state_dirs(vms_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(vms_dir) else {
        return dirs;
    };
    for ns in namespaces.flatten() {
        if let Ok(vms) = std::fs::read_dir(ns.path()) {
            dirs.extend(vms.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    dirs.sort();
    dirs
}

/// The last line of a VM's console log, for failure messages.
fn console_tail(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("console.log"))
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "(empty)".into())
}
