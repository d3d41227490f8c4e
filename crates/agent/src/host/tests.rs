//! The host loop on in-memory fakes: what one pass does for new, deleted, exited,
//! orphaned, refused, peered and live-migrating Machines, and that a second pass
//! with nothing new does nothing.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use prometheus_client::metrics::counter::Counter;
use shoal_api::{Cluster, ClusterStatus, Host, Machine, MachinePhase, MachineStatus, Release};
use shoal_api::{ReleaseImage, ReleaseSpec};

use super::desired::Capacity;
use super::fakes::{FakeApi, FakeFirewall, FakeLinks, FakeRuntime, FakeServices};
use super::metrics::Metrics;
use super::reconcile::{Agent, Backends, Caches};
use super::register::HostFacts;
use super::state::{write_owner, Owner};
use super::AgentConfig;
use crate::net::metadata::{PhoneHome, PhoneHomeSender};
use crate::net::MacAddr;
use crate::vm::Accel;

type TestAgent = Agent<FakeRuntime, FakeLinks, FakeFirewall, FakeServices, FakeApi>;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A host `h1` with a kernel image, its caches and the writers that fill them.
struct Lab {
    dir: tempfile::TempDir,
    kernel: PathBuf,
    machines: Writer<Machine>,
    clusters: Writer<Cluster>,
    _releases: Writer<Release>,
    hosts: Writer<Host>,
    agent: TestAgent,
}

fn machine(name: &str, host: &str, cpu: &str, mac: &str, ip: &str) -> Machine {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
        "metadata": {"name": name, "namespace": "org-x", "uid": format!("uid-{name}")},
        "spec": {"cluster": "a", "role": "worker", "release": "test",
                 "size": {"cpu": cpu, "memory": "512Mi", "disk": "1Gi"},
                 "hostName": host, "mac": mac, "ip": ip}
    }))
    .expect("a valid Machine")
}

fn m1() -> Machine {
    machine("m1", "h1", "1", "52:54:00:00:00:0b", "10.9.0.11")
}

fn cluster(allocated: bool) -> Cluster {
    let mut c: Cluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "a", "namespace": "org-x"},
        "spec": {"release": "test", "provider": {"type": "kvm"},
                 "controlPlane": {"replicas": 1, "cpu": "1", "memory": "512Mi", "disk": "1Gi"},
                 "network": {"podCidr": "10.244.0.0/16", "serviceCidr": "10.96.0.0/12"}}
    }))
    .expect("a valid Cluster");
    if allocated {
        c.status = Some(ClusterStatus {
            vni: Some(9),
            node_cidr: Some("10.9.0.0/24".into()),
            ..Default::default()
        });
    }
    c
}

fn host(name: &str, underlay: &str) -> Host {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Host",
        "metadata": {"name": name},
        "spec": {},
        "status": {"underlayIp": underlay}
    }))
    .expect("a valid Host")
}

fn apply<K>(w: &mut Writer<K>, obj: K)
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    w.apply_watcher_event(&watcher::Event::Apply(obj));
}

fn delete<K>(w: &mut Writer<K>, obj: K)
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    w.apply_watcher_event(&watcher::Event::Delete(obj));
}

fn with_phase(mut m: Machine, phase: MachinePhase) -> Machine {
    m.status = Some(MachineStatus {
        phase: Some(phase),
        ..Default::default()
    });
    m
}

impl Lab {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, b"kernel").expect("writing the kernel");
        let (machines_r, machines) = reflector::store::<Machine>();
        let (clusters_r, mut clusters) = reflector::store::<Cluster>();
        let (releases_r, mut releases) = reflector::store::<Release>();
        let (hosts_r, mut hosts) = reflector::store::<Host>();
        apply(&mut clusters, cluster(true));
        apply(
            &mut releases,
            Release::new(
                "test",
                ReleaseSpec {
                    kubernetes_version: "1.31.0".into(),
                    image: ReleaseImage {
                        kernel: Some(kernel.display().to_string()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ),
        );
        apply(&mut hosts, host("h1", "10.0.0.1"));
        let cfg = AgentConfig::new("h1", Ipv4Addr::new(10, 0, 0, 1), dir.path().join("state"));
        let capacity = Capacity {
            cpus: 4,
            memory_mib: 4096,
        };
        let facts = HostFacts {
            name: "h1".into(),
            underlay: cfg.underlay,
            capacity,
            disk: 1 << 40,
            kvm: false,
            cpu_allocation_ratio: 4,
            forward_endpoint: None,
            metrics_endpoint: None,
        };
        let (phone_tx, _phone_rx) = PhoneHomeSender::channel(8, Counter::default());
        let agent = Agent::new(
            cfg,
            Accel::Tcg,
            capacity,
            facts,
            Backends {
                runtime: FakeRuntime::default(),
                links: FakeLinks::default(),
                firewall: FakeFirewall::default(),
                services: FakeServices::default(),
                api: FakeApi::default(),
            },
            Caches {
                machines: machines_r,
                clusters: clusters_r,
                releases: releases_r,
                hosts: hosts_r,
            },
            phone_tx,
            Arc::new(Metrics::default()),
        );
        Lab {
            dir,
            kernel,
            machines,
            clusters,
            _releases: releases,
            hosts,
            agent,
        }
    }

    fn vm_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("state/vms/org-x").join(name)
    }

    fn api(&self) -> &FakeApi {
        &self.agent.backends().api
    }

    fn runtime(&self) -> &FakeRuntime {
        &self.agent.backends().runtime
    }

    fn links(&self) -> &FakeLinks {
        &self.agent.backends().links
    }
}

fn bridge_of(lab: &Lab) -> Option<String> {
    lock(&lab.links().taps).values().next().cloned()
}

#[tokio::test]
async fn a_new_machine_gets_its_network_services_and_a_running_vm() {
    let mut lab = Lab::new();
    apply(&mut lab.machines, m1());
    lab.agent.pass().await;

    assert_eq!(*lock(&lab.api().finalizers), [("m1".to_owned(), true)]);
    assert_eq!(
        lab.api().phases_of("m1"),
        [MachinePhase::Provisioning, MachinePhase::Running]
    );
    let running = lab.api().last("m1").expect("a status write");
    assert_eq!(running.status["conditions"][0]["reason"], "Booting");
    assert!(running.status["runningTime"].is_string());

    // The cluster's network: bridge and VXLAN, services, the VM's lease and seed.
    assert_eq!(*lock(&lab.agent.backends().services.started), ["org-x/a"]);
    let bridge = bridge_of(&lab).expect("the tap is attached to a bridge");
    assert!(lock(&lab.links().links).contains(&bridge));
    let services = lab.agent.network("org-x/a").expect("the network runs");
    let mac: MacAddr = "52:54:00:00:00:0b".parse().expect("a MAC");
    let lease = services.leases.get(&mac).expect("a lease for the VM's MAC");
    assert_eq!(lease.ip, Ipv4Addr::new(10, 9, 0, 11));
    let meta = services.meta.get("m1").expect("metadata for m1");
    assert_eq!(meta.user_data, "#cloud-config\nhostname: m1\n");
    assert_eq!(meta.instance_id, "uid-m1");

    // The VM, its owner record and the firewall.
    assert_eq!(*lock(&lab.runtime().launches), ["m1"]);
    let spec = lock(&lab.runtime().running)
        .get("m1")
        .cloned()
        .expect("m1 runs");
    assert_eq!(spec.serial, "ds=nocloud-net;s=http://10.9.0.1/m1/");
    assert!(lab.vm_dir("m1").join("owner.json").is_file());
    let plan = lock(&lab.agent.backends().firewall.applied)
        .clone()
        .expect("a firewall plan");
    assert_eq!(plan.clusters.len(), 1);
    assert_eq!(
        *lock(&lab.api().reports),
        [(1, 512, 1 << 30)],
        "the Host reports what it allocated"
    );

    // The watch brings the written phase and finalizer back; a pass with nothing
    // new does nothing.
    let mut seen = with_phase(m1(), MachinePhase::Running);
    seen.metadata.finalizers = Some(vec![super::FINALIZER.to_owned()]);
    apply(&mut lab.machines, seen);
    lab.agent.pass().await;
    assert_eq!(lock(&lab.runtime().launches).len(), 1, "launched once");
    assert_eq!(lab.api().phases_of("m1").len(), 2, "no new status");
    assert_eq!(*lock(&lab.agent.backends().firewall.applies), 1);
    assert_eq!(lock(&lab.api().reports).len(), 1);
    assert_eq!(
        lock(&lab.api().finalizers).len(),
        1,
        "the finalizer was already asked for"
    );
}

#[tokio::test]
async fn user_data_comes_from_the_bootstrap_secret() {
    let mut lab = Lab::new();
    let mut m = m1();
    m.spec.bootstrap = Some(
        serde_json::from_value(serde_json::json!({"dataSecretName": "m1-bootstrap"}))
            .expect("bootstrap"),
    );
    lock(&lab.api().secrets).insert(
        "org-x/m1-bootstrap".into(),
        "#cloud-config\nruncmd: [x]\n".into(),
    );
    apply(&mut lab.machines, m);
    lab.agent.pass().await;
    let meta = lab
        .agent
        .network("org-x/a")
        .and_then(|s| s.meta.get("m1"))
        .expect("metadata for m1");
    assert_eq!(meta.user_data, "#cloud-config\nruncmd: [x]\n");
}

#[tokio::test]
async fn a_deleted_machine_is_stopped_and_its_state_and_network_go() {
    let mut lab = Lab::new();
    apply(&mut lab.machines, m1());
    lab.agent.pass().await;
    let bridge = bridge_of(&lab).expect("a bridge");

    let mut deleting = with_phase(m1(), MachinePhase::Running);
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    deleting.metadata.finalizers = Some(vec![super::FINALIZER.to_owned()]);
    apply(&mut lab.machines, deleting);
    lab.agent.pass().await;

    assert_eq!(*lock(&lab.runtime().stops), ["m1"]);
    assert!(!lab.vm_dir("m1").exists(), "the state directory is removed");
    assert_eq!(
        lock(&lab.api().finalizers).last(),
        Some(&("m1".to_owned(), false)),
        "the finalizer goes once the VM is stopped"
    );
    assert!(lab.agent.network("org-x/a").is_none());
    assert!(
        !lock(&lab.links().links).contains(&bridge),
        "the bridge is removed"
    );
    let plan = lock(&lab.agent.backends().firewall.applied)
        .clone()
        .expect("a firewall plan");
    assert!(
        plan.clusters.is_empty(),
        "no cluster is left in the firewall"
    );
}

#[tokio::test]
async fn a_vm_whose_qemu_exits_fails_its_machine_with_the_console_tail() {
    let mut lab = Lab::new();
    apply(&mut lab.machines, m1());
    lab.agent.pass().await;
    apply(&mut lab.machines, with_phase(m1(), MachinePhase::Running));
    std::fs::write(
        lab.vm_dir("m1").join("console.log"),
        "booting\nKernel panic - not syncing: VFS\n",
    )
    .expect("writing the console");
    lock(&lab.runtime().exited).insert("m1".into());
    lab.agent.pass().await;

    let failed = lab
        .api()
        .first_in("m1", MachinePhase::Failed)
        .expect("m1 was failed");
    assert_eq!(failed.status["conditions"][0]["reason"], "VMExited");
    let message = failed.status["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("Kernel panic - not syncing: VFS"),
        "{message}"
    );
    assert_eq!(lock(&lab.runtime().launches).len(), 1, "no silent relaunch");
}

#[tokio::test]
async fn a_machine_whose_node_never_registered_gets_the_console_tail() {
    let mut lab = Lab::new();
    apply(&mut lab.machines, m1());
    lab.agent.pass().await;
    std::fs::write(
        lab.vm_dir("m1").join("console.log"),
        "booting\n[  OK  ] Started kubelet\nkubelet.service: Main process exited, status=1\n",
    )
    .expect("writing the console");
    let mut ready = with_phase(m1(), MachinePhase::Ready);
    lab.agent.pass().await;
    assert!(
        lab.api().first_in("m1", MachinePhase::Ready).is_none(),
        "no report while the Node is not known to be missing"
    );
    if let Some(status) = ready.status.as_mut() {
        status.conditions.push(shoal_api::Condition {
            type_: "NodeReady".into(),
            status: "False".into(),
            reason: "NodeNotRegistered".into(),
            message: "no Node named m1".into(),
            last_transition_time: None,
            observed_generation: None,
        });
    }
    apply(&mut lab.machines, ready);
    lab.agent.pass().await;

    let report = lab
        .api()
        .first_in("m1", MachinePhase::Ready)
        .expect("a console report");
    let lines = report.status["console"]["lines"].clone();
    assert_eq!(
        lines,
        serde_json::json!([
            "booting",
            "[  OK  ] Started kubelet",
            "kubelet.service: Main process exited, status=1"
        ])
    );
    assert!(report.status["console"]["time"].is_string());
}

#[tokio::test]
async fn a_vm_left_by_an_earlier_agent_for_a_recreated_machine_is_replaced() {
    let mut lab = Lab::new();
    // An earlier agent ran m1 for a Machine of another uid.
    let dir = lab.vm_dir("m1");
    write_owner(
        &dir,
        &Owner {
            namespace: "org-x".into(),
            name: "m1".into(),
            uid: "uid-of-a-deleted-m1".into(),
            cluster: "org-x/a".into(),
        },
    )
    .expect("writing the owner");
    let spec = old_spec(&dir, &lab.kernel);
    lock(&lab.runtime().adoptable).insert(dir.clone(), spec);
    lab.agent.adopt().await;
    apply(&mut lab.machines, m1());
    lab.agent.pass().await;
    assert_eq!(*lock(&lab.runtime().stops), ["m1"], "the orphan is stopped");
    assert_eq!(
        *lock(&lab.runtime().launches),
        ["m1"],
        "and the live Machine's VM started"
    );
}

fn old_spec(dir: &Path, kernel: &Path) -> crate::vm::VmSpec {
    crate::vm::VmSpec {
        name: "m1".into(),
        vcpus: std::num::NonZeroU32::MIN,
        memory_mib: std::num::NonZeroU32::MIN,
        accel: Accel::Tcg,
        boot: crate::vm::Boot::Kernel {
            kernel: kernel.to_path_buf(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
            overlay_path: None,
        },
        serial: String::new(),
        tap: None,
        state_dir: dir.to_path_buf(),
        cpu_priority: crate::vm::CpuPriority::Normal,
        incoming: false,
    }
}

#[tokio::test]
async fn machines_that_cannot_run_say_why_and_start_nothing() {
    let mut lab = Lab::new();
    apply(
        &mut lab.machines,
        machine("big", "h1", "64", "52:54:00:00:00:0c", "10.9.0.12"),
    );
    lab.agent.pass().await;
    let big = lab.api().last("big").expect("a status write");
    assert_eq!(big.phase, MachinePhase::Failed);
    assert_eq!(
        big.status["conditions"][0]["reason"],
        "InsufficientResources"
    );

    // A cluster without its network yet: the Machine waits, Provisioning.
    delete(&mut lab.clusters, cluster(true));
    apply(&mut lab.clusters, cluster(false));
    apply(&mut lab.machines, m1());
    lab.agent.pass().await;
    let waiting = lab.api().last("m1").expect("a status write");
    assert_eq!(waiting.phase, MachinePhase::Provisioning);
    assert_eq!(
        waiting.status["conditions"][0]["reason"],
        "NetworkNotAllocated"
    );
    assert!(lock(&lab.runtime().launches).is_empty());
}

#[tokio::test]
async fn peers_are_the_other_hosts_running_machines_of_the_cluster() {
    let mut lab = Lab::new();
    apply(&mut lab.hosts, host("h2", "10.0.0.2"));
    apply(&mut lab.hosts, host("h3", "10.0.0.3"));
    apply(&mut lab.machines, m1());
    apply(
        &mut lab.machines,
        machine("m2", "h2", "1", "52:54:00:00:00:0d", "10.9.0.13"),
    );
    lab.agent.pass().await;
    let peers = lock(&lab.links().peers);
    let (_, set) = peers.iter().next().expect("peers were set");
    assert_eq!(
        set.iter().copied().collect::<Vec<_>>(),
        [Ipv4Addr::new(10, 0, 0, 2)],
        "h2 runs a Machine of the cluster; h3 does not"
    );
    assert_eq!(*lock(&lab.runtime().launches), ["m1"], "m2 is h2's to run");
}

#[tokio::test]
async fn a_guest_that_phones_home_makes_its_machine_ready() {
    let mut lab = Lab::new();
    apply(&mut lab.machines, m1());
    lab.agent.pass().await;
    apply(&mut lab.machines, with_phase(m1(), MachinePhase::Running));
    lab.agent
        .phoned_home(PhoneHome {
            cluster: "org-x/a".into(),
            machine: "m1".into(),
            at: chrono::Utc::now(),
            fields: Default::default(),
        })
        .await;
    let ready = lab.api().last("m1").expect("a status write");
    assert_eq!(ready.phase, MachinePhase::Ready);
    assert_eq!(ready.status["conditions"][0]["status"], "True");

    // A phone-home for a machine this host does not run changes nothing.
    lab.agent
        .phoned_home(PhoneHome {
            cluster: "org-x/a".into(),
            machine: "m9".into(),
            at: chrono::Utc::now(),
            fields: Default::default(),
        })
        .await;
    assert!(lab.api().phases_of("m9").is_empty());
}

/// `m` asked to move to `target`, with the migration status `status` (if any).
fn moving(mut m: Machine, target: &str, status: Option<serde_json::Value>) -> Machine {
    m.spec.migration = Some(shoal_api::MigrationRequest {
        target_host: target.into(),
    });
    let mut st = m.status.take().unwrap_or_default();
    st.migration = status.map(|s| serde_json::from_value(s).expect("a migration status"));
    m.status = Some(st);
    m
}

/// m1 as the watch shows it once it runs here and its guest phoned home.
fn ready_m1() -> Machine {
    let mut seen = with_phase(m1(), MachinePhase::Ready);
    seen.metadata.finalizers = Some(vec![super::FINALIZER.to_owned()]);
    seen
}

fn running_here(lab: &mut Lab) {
    apply(&mut lab.machines, ready_m1());
}

#[tokio::test]
async fn a_machine_moving_here_gets_a_waiting_vm_that_becomes_this_hosts_own() {
    let mut lab = Lab::new();
    apply(&mut lab.hosts, host("h2", "10.0.0.2"));
    let on_h2 = machine("m1", "h2", "1", "52:54:00:00:00:0b", "10.9.0.11");
    apply(
        &mut lab.machines,
        moving(with_phase(on_h2, MachinePhase::Ready), "h1", None),
    );
    lab.agent.pass().await;

    // A paused QEMU waits, on the cluster network that reaches the source.
    assert_eq!(*lock(&lab.runtime().launches), ["m1"]);
    let spec = lock(&lab.runtime().running)["m1"].clone();
    assert!(spec.incoming, "the target's QEMU waits for the guest");
    assert!(lock(&lab.links().taps).contains_key(&spec.tap.expect("a tap").ifname));
    let peers = lock(&lab.links().peers).values().next().cloned();
    assert_eq!(peers, Some([Ipv4Addr::new(10, 0, 0, 2)].into()));
    let w = lab.api().last("m1").expect("a status write");
    assert_eq!(w.phase, MachinePhase::Migrating);
    let st = &w.status["migration"];
    assert_eq!(
        (
            &st["sourceHost"],
            &st["targetHost"],
            &st["state"],
            &st["incoming"]
        ),
        (
            &serde_json::json!("h2"),
            &serde_json::json!("h1"),
            &serde_json::json!("Transferring"),
            &serde_json::json!("tcp:10.0.0.1:4444")
        )
    );
    assert_eq!(lab.api().phases_of("m1"), [MachinePhase::Migrating]);

    // The source hands the Machine over: the VM is this host's, nothing restarts.
    let mut arrived = with_phase(m1(), MachinePhase::Ready);
    arrived.metadata.finalizers = Some(vec![super::FINALIZER.to_owned()]);
    apply(&mut lab.machines, arrived);
    lab.agent.pass().await;
    lab.agent.pass().await;
    assert_eq!(lock(&lab.runtime().launches).len(), 1, "launched once");
    assert!(lock(&lab.runtime().stops).is_empty());
    assert_eq!(lab.api().phases_of("m1"), [MachinePhase::Migrating]);
    assert!(lab.vm_dir("m1").join("owner.json").is_file());
}

#[tokio::test]
async fn a_withdrawn_move_stops_the_waiting_vm() {
    let mut lab = Lab::new();
    apply(&mut lab.hosts, host("h2", "10.0.0.2"));
    let on_h2 = machine("m1", "h2", "1", "52:54:00:00:00:0b", "10.9.0.11");
    let ready = with_phase(on_h2, MachinePhase::Ready);
    apply(&mut lab.machines, moving(ready.clone(), "h1", None));
    lab.agent.pass().await;
    assert_eq!(*lock(&lab.runtime().launches), ["m1"]);

    // The source failed and cleared the request: the machine stays on h2.
    apply(&mut lab.machines, ready);
    lab.agent.pass().await;
    assert_eq!(*lock(&lab.runtime().stops), ["m1"]);
    assert!(lock(&lab.runtime().running).is_empty());
    assert!(!lab.vm_dir("m1").exists());
}

fn waiting_on_h2() -> serde_json::Value {
    serde_json::json!({"sourceHost": "h1", "targetHost": "h2", "state": "Transferring",
        "incoming": "tcp:10.0.0.2:4444"})
}

#[tokio::test]
async fn a_vm_leaving_is_sent_then_quit_here_and_the_machine_handed_over() {
    let mut lab = Lab::new();
    apply(&mut lab.hosts, host("h2", "10.0.0.2"));
    apply(&mut lab.machines, m1());
    lab.agent.pass().await;
    running_here(&mut lab);
    lab.agent.pass().await;
    let ready = ready_m1();
    apply(
        &mut lab.machines,
        moving(ready, "h2", Some(waiting_on_h2())),
    );
    lab.agent.pass().await;

    assert_eq!(
        *lock(&lab.runtime().sent),
        [("m1".to_owned(), "tcp:10.0.0.2:4444".to_owned())]
    );
    assert_eq!(*lock(&lab.runtime().stops), ["m1"], "the paused copy quits");
    assert!(!lab.vm_dir("m1").exists());
    assert_eq!(
        *lock(&lab.api().handovers),
        [("m1".to_owned(), "h2".to_owned())]
    );
    let w = lab.api().last("m1").expect("a status write");
    assert_eq!(w.phase, MachinePhase::Ready);
    assert_eq!(w.status["migration"]["state"], "Completed");
    assert_eq!(w.status["migration"]["downtimeMs"], 20);
    assert!(lock(&lab.api().ended).is_empty());
    let events = lock(&lab.api().events).clone();
    assert_eq!(events.len(), 1, "{events:?}");
    let (machine, warning, reason, note) = &events[0];
    assert_eq!(
        (machine.as_str(), *warning, reason.as_str()),
        ("m1", false, "Migrated")
    );
    assert!(note.contains("from h1 to h2: downtime 20 ms"), "{note}");
}

/// The agent was killed after QEMU finished sending and the status said so, before
/// it quit its paused copy: the next pass quits it and hands over, and neither sends
/// again nor starts the VM anew here.
#[tokio::test]
async fn a_send_finished_before_a_restart_is_handed_over_not_restarted() {
    let mut lab = Lab::new();
    apply(&mut lab.hosts, host("h2", "10.0.0.2"));
    apply(&mut lab.machines, m1());
    lab.agent.pass().await;
    running_here(&mut lab);
    lab.agent.pass().await;
    let mut done = waiting_on_h2();
    done["state"] = serde_json::json!("Completed");
    apply(&mut lab.machines, moving(ready_m1(), "h2", Some(done)));
    lab.agent.pass().await;
    lab.agent.pass().await;

    assert!(lock(&lab.runtime().sent).is_empty(), "not sent twice");
    assert_eq!(*lock(&lab.runtime().stops), ["m1"], "the paused copy quits");
    assert_eq!(lock(&lab.runtime().launches).len(), 1, "never started anew");
    assert!(!lab.vm_dir("m1").exists());
    assert_eq!(
        lock(&lab.api().handovers).first(),
        Some(&("m1".to_owned(), "h2".to_owned()))
    );
}

#[tokio::test]
async fn a_failed_send_keeps_the_vm_here_and_says_why() {
    let mut lab = Lab::new();
    apply(&mut lab.hosts, host("h2", "10.0.0.2"));
    apply(&mut lab.machines, m1());
    lab.agent.pass().await;
    running_here(&mut lab);
    lab.agent.pass().await;
    *lock(&lab.runtime().fail_sends) = Some("Unable to write to socket: Broken pipe".into());
    let ready = ready_m1();
    apply(
        &mut lab.machines,
        moving(ready, "h2", Some(waiting_on_h2())),
    );
    lab.agent.pass().await;

    assert_eq!(lock(&lab.runtime().sent).len(), 1);
    assert!(
        lock(&lab.runtime().stops).is_empty(),
        "the guest runs on here"
    );
    assert!(lock(&lab.runtime().running).contains_key("m1"));
    assert!(lock(&lab.api().handovers).is_empty());
    assert_eq!(*lock(&lab.api().ended), ["m1"]);
    let w = lab.api().last("m1").expect("a status write");
    assert_eq!(w.phase, MachinePhase::Ready);
    assert_eq!(w.status["migration"]["state"], "Failed");
    let message = w.status["migration"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("MigrationFailed: ") && message.contains("Broken pipe"),
        "{message}"
    );
    let cond = w.status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Migrated").cloned())
        .expect("a Migrated condition");
    assert_eq!(
        (&cond["status"], &cond["reason"]),
        (
            &serde_json::json!("False"),
            &serde_json::json!("MigrationFailed")
        )
    );
    assert!(
        cond["message"]
            .as_str()
            .is_some_and(|t| t.contains("still runs on h1") && t.contains("Broken pipe")),
        "{cond}"
    );
    let events = lock(&lab.api().events).clone();
    assert!(
        events
            .iter()
            .any(|(m, warning, reason, _)| m == "m1" && *warning && reason == "MigrationFailed"),
        "{events:?}"
    );
}
