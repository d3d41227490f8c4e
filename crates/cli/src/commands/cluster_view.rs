//! What `shoal cluster` shows, as pure data: progress counts of a cluster's
//! Machines, the describe page, upgrade progress and the removal report. No I/O
//! here; `cluster.rs` fetches the objects and prints what these return.

use shoal_api::events::event_time;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use shoal_api::resources::organization::namespace_org;
use shoal_api::{
    Cluster, Condition, Machine, MachinePhase, MachineRole, NodePool, RemovedResources,
};
use shoal_apiserver::http::table::human_age;

use crate::output::render_columns;

/// How many events `cluster get` shows.
pub const EVENTS_SHOWN: usize = 10;

/// A condition by type.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// A Machine's phase, `Pending` until its status says otherwise.
pub fn machine_phase(m: &Machine) -> MachinePhase {
    m.status.as_ref().and_then(|s| s.phase).unwrap_or_default()
}

/// Why a Machine cannot be placed, when the scheduler said so.
pub fn unschedulable_reason(m: &Machine) -> Option<&str> {
    if m.spec.host_name.is_some() {
        return None;
    }
    let status = m.status.as_ref()?;
    condition(&status.conditions, "Scheduled")
        .filter(|c| c.status == "False")
        .map(|c| c.message.as_str())
}

/// The role as the `shoal.io/role` label spells it.
pub fn role_name(role: MachineRole) -> &'static str {
    match role {
        MachineRole::ControlPlane => "control-plane",
        MachineRole::Worker => "worker",
    }
}

/// A Machine that needs a person's attention, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// The Machine's name.
    pub machine: String,
    /// `unschedulable` or `failed`.
    pub state: &'static str,
    /// The condition's message.
    pub why: String,
}

/// How far a cluster's Machines have come, against the number wanted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineCounts {
    /// Control-plane replicas plus workers.
    pub desired: u32,
    /// Machines placed on a host.
    pub scheduled: u32,
    /// Machines whose VM runs (Running or Ready).
    pub booting: u32,
    /// Machines whose guest phoned home.
    pub ready: u32,
    /// Machines that cannot be placed or have failed.
    pub blocked: Vec<Blocked>,
}

/// Counts the live (not deleting) Machines of a cluster in each phase.
pub fn count_machines(machines: &[Machine], desired: u32) -> MachineCounts {
    let mut c = MachineCounts {
        desired,
        ..Default::default()
    };
    for m in machines
        .iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
    {
        let name = m.metadata.name.clone().unwrap_or_default();
        let phase = machine_phase(m);
        if m.spec.host_name.is_some() {
            c.scheduled += 1;
        }
        if matches!(phase, MachinePhase::Running | MachinePhase::Ready) {
            c.booting += 1;
        }
        if phase == MachinePhase::Ready {
            c.ready += 1;
        }
        if let Some(why) = unschedulable_reason(m) {
            c.blocked.push(Blocked {
                machine: name,
                state: "unschedulable",
                why: why.to_owned(),
            });
        } else if phase == MachinePhase::Failed {
            let why = m
                .status
                .as_ref()
                .and_then(|s| condition(&s.conditions, "Ready"))
                .map(|c| c.message.clone())
                .unwrap_or_default();
            c.blocked.push(Blocked {
                machine: name,
                state: "failed",
                why,
            });
        }
    }
    c.blocked.sort_by(|a, b| a.machine.cmp(&b.machine));
    c
}

impl Blocked {
    /// `demo-cp-0 unschedulable: no host has 2 CPUs free`.
    pub fn line(&self) -> String {
        format!("{} {}: {}", self.machine, self.state, self.why)
    }
}

/// One line of `cluster create --wait` progress, for output that is not a terminal.
pub fn progress_line(c: &MachineCounts, cluster: Option<&Cluster>) -> String {
    let d = c.desired;
    let mut line = format!(
        "scheduled {}/{d}, booting {}/{d}, ready {}/{d}",
        c.scheduled.min(d),
        c.booting.min(d),
        c.ready.min(d)
    );
    if let Some(phase) = cluster.and_then(|cl| cl.status.as_ref()?.phase) {
        line.push_str(&format!("; cluster {phase:?}"));
    }
    if let Some(b) = c.blocked.first() {
        line.push_str(&format!("; {}", b.line()));
    }
    line
}

/// The cluster's Ready condition, if it has one yet.
pub fn ready_condition(cluster: &Cluster) -> Option<&Condition> {
    condition(&cluster.status.as_ref()?.conditions, "Ready")
}

/// Where a cluster stands, for a timeout message: its phase, nodes and the Ready
/// condition's message.
pub fn standing(cluster: &Cluster) -> String {
    let status = cluster.status.clone().unwrap_or_default();
    let phase = status
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "not yet reported".into());
    let nodes = status.nodes.as_deref().unwrap_or("?");
    match ready_condition(cluster) {
        Some(c) => format!(
            "phase {phase}, {nodes} nodes Ready; Ready={} ({}): {}",
            c.status, c.reason, c.message
        ),
        None => format!(
            "phase {phase}, {nodes} nodes Ready; no Ready condition yet (is the cluster controller running?)"
        ),
    }
}

/// `org/name` of a namespaced object in an organization's namespace.
pub fn org_name(namespace: &str, name: &str) -> String {
    format!("{}/{name}", namespace_org(namespace).unwrap_or(namespace))
}

/// The `removed:` report of a deleted cluster, one line per kind.
pub fn removed_report(r: &RemovedResources) -> String {
    let line = |what: &str, list: &[String]| {
        let items = if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        };
        format!("  {what:<11} {items}\n")
    };
    let mut out = String::from("removed:\n");
    out.push_str(&line("machines:", &r.machines));
    out.push_str(&line("node pools:", &r.node_pools));
    out.push_str(&line("networks:", &r.networks));
    out.push_str(&line("secrets:", &r.secrets));
    if !r.aws.is_empty() {
        let aws: Vec<String> = r
            .aws
            .iter()
            .map(|a| format!("{} {}", a.kind, a.id))
            .collect();
        out.push_str(&line("aws:", &aws));
    }
    out
}

/// How far a cluster's move to a release has come.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpgradeProgress {
    /// Machines that exist, deleting ones included.
    pub total: u32,
    /// Machines on the release and Ready.
    pub done: u32,
    /// Machines still on another release, by name.
    pub old: Vec<String>,
}

/// Counts the Machines that run `release` and are Ready.
pub fn upgrade_progress(machines: &[Machine], release: &str) -> UpgradeProgress {
    let mut p = UpgradeProgress::default();
    for m in machines {
        p.total += 1;
        let live = m.metadata.deletion_timestamp.is_none();
        if m.spec.release != release {
            p.old.push(m.metadata.name.clone().unwrap_or_default());
        } else if live && machine_phase(m) == MachinePhase::Ready {
            p.done += 1;
        }
    }
    p.old.sort();
    p
}

/// One line of upgrade progress.
pub fn upgrade_line(p: &UpgradeProgress, release: &str, cluster: &Cluster) -> String {
    let phase = cluster
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "unknown".into());
    let mut line = format!(
        "{}/{} machines on {release} and Ready; cluster {phase}",
        p.done, p.total
    );
    if !p.old.is_empty() {
        line.push_str(&format!("; still on the old release: {}", p.old.join(", ")));
    }
    line
}

/// True when every Machine runs `release` and is Ready, and the cluster reports
/// Ready for a generation at least `generation`.
pub fn upgrade_done(
    p: &UpgradeProgress,
    cluster: &Cluster,
    generation: Option<i64>,
    release: &str,
) -> bool {
    let status = cluster.status.clone().unwrap_or_default();
    let observed = match (generation, status.observed_generation) {
        (Some(want), Some(seen)) => seen >= want,
        _ => true,
    };
    cluster.spec.release == release
        && p.old.is_empty()
        && p.done == p.total
        && status.phase == Some(shoal_api::ClusterPhase::Ready)
        && observed
}

/// One line of `cluster scale --wait` progress.
pub fn pool_line(pool: &NodePool, want: u32) -> String {
    let s = pool.status.clone().unwrap_or_default();
    let mut line = format!(
        "nodepool {}: {} machines, {} Ready (want {want})",
        pool.metadata.name.as_deref().unwrap_or_default(),
        s.replicas,
        s.ready_replicas
    );
    if let Some(c) = condition(&s.conditions, "Ready").filter(|c| c.status != "True") {
        line.push_str(&format!("; {}: {}", c.reason, c.message));
    }
    line
}

/// True when the pool has exactly `want` machines and all of them are Ready.
pub fn pool_done(pool: &NodePool, want: u32) -> bool {
    let s = pool.status.clone().unwrap_or_default();
    pool.spec.replicas == want && s.replicas == want && s.ready_replicas == want
}

fn age(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map(|t| human_age((now.as_second() - t.as_second()).max(0)))
        .unwrap_or_else(|| "<unknown>".into())
}

fn or_none(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => "<none>".into(),
    }
}

/// The rows of the Machines table: name, role, host, IP, phase, release, age.
pub fn machine_rows(machines: &[Machine], now: Timestamp) -> Vec<Vec<String>> {
    let mut sorted: Vec<&Machine> = machines.iter().collect();
    sorted.sort_by_key(|m| {
        (
            m.spec.role != MachineRole::ControlPlane,
            m.metadata.name.clone(),
        )
    });
    sorted
        .into_iter()
        .map(|m| {
            let phase = machine_phase(m);
            let mut phase_text = format!("{phase:?}");
            if m.metadata.deletion_timestamp.is_some() && phase != MachinePhase::Deleting {
                phase_text.push_str(" (deleting)");
            } else if unschedulable_reason(m).is_some() {
                phase_text.push_str(" (Unschedulable)");
            }
            vec![
                m.metadata.name.clone().unwrap_or_default(),
                role_name(m.spec.role).to_owned(),
                or_none(m.spec.host_name.as_deref()),
                or_none(m.spec.ip.as_deref()),
                phase_text,
                m.spec.release.clone(),
                age(m.metadata.creation_timestamp.as_ref().map(|t| t.0), now),
            ]
        })
        .collect()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The AWS section: the load balancers' names and every resource with its ID.
fn aws_report(aws: &shoal_api::AwsStatus) -> String {
    let mut out = String::from("\nAWS:\n");
    for (label, value) in [
        ("VPC:", aws.vpc_id.clone()),
        (
            "Zones:",
            Some(aws.availability_zones.join(", ")).filter(|z| !z.is_empty()),
        ),
        ("API load balancer:", aws.api_load_balancer.clone()),
        ("Ingress load balancer:", aws.ingress_load_balancer.clone()),
    ] {
        if let Some(v) = value {
            out.push_str(&format!("  {label:<23}{v}\n"));
        }
    }
    if !aws.resources.is_empty() {
        let rows: Vec<Vec<String>> = aws
            .resources
            .iter()
            .map(|r| vec![r.kind.clone(), r.id.clone(), r.purpose.clone()])
            .collect();
        out.push_str(&indent(&render_columns(&["KIND", "ID", "FOR"], &rows)));
    }
    out
}

/// The human view of a cluster: status, conditions, Machines and recent events.
pub fn describe(
    cluster: &Cluster,
    machines: &[Machine],
    events: &[Event],
    now: Timestamp,
) -> String {
    let status = cluster.status.clone().unwrap_or_default();
    let ns = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let field = |label: &str, value: String| format!("{label:<15}{value}\n");
    let mut out = String::new();
    out.push_str(&field(
        "Name:",
        org_name(ns, cluster.metadata.name.as_deref().unwrap_or_default()),
    ));
    out.push_str(&field(
        "Phase:",
        status
            .phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "<not reported yet>".into()),
    ));
    out.push_str(&field("Release:", cluster.spec.release.clone()));
    out.push_str(&field(
        "API endpoint:",
        or_none(status.api_endpoint.as_deref()),
    ));
    let network = match (status.vni, status.node_cidr.as_deref()) {
        (Some(vni), Some(cidr)) => format!("VNI {vni}, node CIDR {cidr}"),
        (Some(vni), None) => format!("VNI {vni}"),
        (None, Some(cidr)) => format!("node CIDR {cidr}"),
        (None, None) => "<not allocated yet>".into(),
    };
    out.push_str(&field("Network:", network));
    out.push_str(&field(
        "Nodes:",
        format!("{} Ready", status.nodes.as_deref().unwrap_or("?")),
    ));
    out.push_str(&field(
        "Control plane:",
        format!(
            "{} x {} CPU, {} memory, {} disk",
            cluster.spec.control_plane.replicas,
            cluster.spec.control_plane.cpu,
            cluster.spec.control_plane.memory,
            cluster.spec.control_plane.disk
        ),
    ));
    out.push_str(&field(
        "Age:",
        age(
            cluster.metadata.creation_timestamp.as_ref().map(|t| t.0),
            now,
        ),
    ));

    out.push_str("\nConditions:\n");
    if status.conditions.is_empty() {
        out.push_str("  none reported yet\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    one_line(&c.message),
                ]
            })
            .collect();
        out.push_str(&indent(&render_columns(
            &["TYPE", "STATUS", "REASON", "MESSAGE"],
            &rows,
        )));
    }

    if let Some(aws) = &status.aws {
        out.push_str(&aws_report(aws));
    }

    out.push_str("\nMachines:\n");
    if machines.is_empty() {
        out.push_str("  none\n");
    } else {
        out.push_str(&indent(&render_columns(
            &["NAME", "ROLE", "HOST", "IP", "PHASE", "RELEASE", "AGE"],
            &machine_rows(machines, now),
        )));
    }

    if let Some(r) = &status.removed {
        out.push('\n');
        out.push_str(&removed_report(r));
    }

    out.push_str(&format!("\nEvents (last {EVENTS_SHOWN}):\n"));
    if events.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                let o = &e.involved_object;
                vec![
                    age(event_time(e), now),
                    or_none(e.type_.as_deref()),
                    or_none(e.reason.as_deref()),
                    format!(
                        "{}/{}",
                        o.kind.as_deref().unwrap_or_default().to_lowercase(),
                        o.name.as_deref().unwrap_or_default()
                    ),
                    one_line(e.message.as_deref().unwrap_or_default()),
                ]
            })
            .collect();
        out.push_str(&indent(&render_columns(
            &["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
            &rows,
        )));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use shoal_api::{ClusterPhase, ClusterStatus, MachineStatus};

    fn machine(name: &str, role: MachineRole, host: Option<&str>, phase: MachinePhase) -> Machine {
        let mut m: Machine = serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": name, "namespace": "org-acme",
                         "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"cluster": "demo", "role": role_name(role), "release": "r1",
                     "size": {"cpu": "2", "memory": "2Gi", "disk": "10Gi"}},
        }))
        .expect("a valid Machine");
        m.spec.host_name = host.map(str::to_owned);
        m.status = Some(MachineStatus {
            phase: Some(phase),
            ..Default::default()
        });
        m
    }

    fn unschedulable(name: &str, why: &str) -> Machine {
        let mut m = machine(name, MachineRole::Worker, None, MachinePhase::Pending);
        if let Some(s) = m.status.as_mut() {
            s.conditions.push(Condition {
                type_: "Scheduled".into(),
                status: "False".into(),
                reason: "Unschedulable".into(),
                message: why.into(),
                ..Default::default()
            });
        }
        m
    }

    fn cluster(phase: Option<ClusterPhase>) -> Cluster {
        let mut c: Cluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "demo", "namespace": "org-acme", "generation": 2,
                         "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"release": "r2", "controlPlane": {"replicas": 1, "cpu": "2", "memory": "2Gi", "disk": "10Gi"}},
        }))
        .expect("a valid Cluster");
        c.status = Some(ClusterStatus {
            phase,
            ..Default::default()
        });
        c
    }

    #[test]
    fn counts_each_phase_against_desired() {
        let mut gone = machine(
            "demo-default-9",
            MachineRole::Worker,
            Some("h1"),
            MachinePhase::Ready,
        );
        gone.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let ms = vec![
            machine(
                "demo-cp-0",
                MachineRole::ControlPlane,
                Some("h1"),
                MachinePhase::Ready,
            ),
            machine(
                "demo-default-0",
                MachineRole::Worker,
                Some("h2"),
                MachinePhase::Running,
            ),
            machine(
                "demo-default-1",
                MachineRole::Worker,
                Some("h2"),
                MachinePhase::Provisioning,
            ),
            unschedulable("demo-default-2", "no host has 2 CPUs free"),
            gone,
        ];
        let c = count_machines(&ms, 4);
        assert_eq!((c.desired, c.scheduled, c.booting, c.ready), (4, 3, 2, 1));
        assert_eq!(
            c.blocked,
            vec![Blocked {
                machine: "demo-default-2".into(),
                state: "unschedulable",
                why: "no host has 2 CPUs free".into()
            }]
        );
        assert_eq!(
            progress_line(&c, Some(&cluster(Some(ClusterPhase::Pending)))),
            "scheduled 3/4, booting 2/4, ready 1/4; cluster Pending; demo-default-2 unschedulable: no host has 2 CPUs free"
        );
    }

    #[test]
    fn progress_never_shows_more_than_desired() {
        let ms = vec![
            machine("a", MachineRole::Worker, Some("h"), MachinePhase::Ready),
            machine("b", MachineRole::Worker, Some("h"), MachinePhase::Ready),
        ];
        let c = count_machines(&ms, 1);
        assert_eq!(
            progress_line(&c, None),
            "scheduled 1/1, booting 1/1, ready 1/1"
        );
    }

    #[test]
    fn removed_report_has_one_line_per_kind() {
        let r = RemovedResources {
            machines: vec!["demo-cp-0".into(), "demo-default-0".into()],
            node_pools: vec!["demo-default".into()],
            secrets: vec![],
            networks: vec!["vni 1000 (10.128.0.0/24)".into()],
            ..Default::default()
        };
        assert_eq!(
            removed_report(&r),
            "removed:\n  machines:   demo-cp-0, demo-default-0\n  node pools: demo-default\n  networks:   vni 1000 (10.128.0.0/24)\n  secrets:    none\n"
        );
    }

    #[test]
    fn upgrade_waits_for_every_machine_and_the_cluster() {
        let mut old = machine(
            "demo-cp-0",
            MachineRole::ControlPlane,
            Some("h"),
            MachinePhase::Ready,
        );
        old.spec.release = "r1".into();
        let mut new = machine(
            "demo-cp-1",
            MachineRole::ControlPlane,
            Some("h"),
            MachinePhase::Ready,
        );
        new.spec.release = "r2".into();
        let mut c = cluster(Some(ClusterPhase::Ready));
        let p = upgrade_progress(&[old, new.clone()], "r2");
        assert_eq!(
            p,
            UpgradeProgress {
                total: 2,
                done: 1,
                old: vec!["demo-cp-0".into()]
            }
        );
        assert!(!upgrade_done(&p, &c, Some(2), "r2"));
        let p = upgrade_progress(std::slice::from_ref(&new), "r2");
        // Ready, but for the generation before the release changed.
        if let Some(s) = c.status.as_mut() {
            s.observed_generation = Some(1);
        }
        assert!(!upgrade_done(&p, &c, Some(2), "r2"));
        if let Some(s) = c.status.as_mut() {
            s.observed_generation = Some(2);
        }
        assert!(upgrade_done(&p, &c, Some(2), "r2"));
        assert_eq!(
            upgrade_line(&p, "r2", &c),
            "1/1 machines on r2 and Ready; cluster Ready"
        );
    }

    fn event(kind: &str, name: &str, at: &str, reason: &str) -> Event {
        Event {
            involved_object: ObjectReference {
                kind: Some(kind.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            last_timestamp: Some(Time(at.parse().expect("a timestamp"))),
            reason: Some(reason.into()),
            ..Default::default()
        }
    }

    #[test]
    fn describe_shows_status_conditions_machines_and_events() {
        let mut c = cluster(Some(ClusterPhase::Pending));
        if let Some(s) = c.status.as_mut() {
            s.vni = Some(1000);
            s.node_cidr = Some("10.128.0.0/24".into());
            s.nodes = Some("0/2".into());
            s.api_endpoint = Some("https://api.demo.acme.shoal.local:443".into());
            s.conditions.push(Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "Unschedulable".into(),
                message:
                    "0/1 control-plane machines Ready; machine demo-cp-0 cannot be placed: no hosts"
                        .into(),
                ..Default::default()
            });
        }
        let ms = vec![
            unschedulable("demo-default-0", "no hosts"),
            machine(
                "demo-cp-0",
                MachineRole::ControlPlane,
                Some("h1"),
                MachinePhase::Running,
            ),
        ];
        let events = vec![event("Cluster", "demo", "2025-01-01T00:00:30Z", "Created")];
        let now: Timestamp = "2025-01-01T00:05:00Z".parse().expect("a timestamp");
        let text = describe(&c, &ms, &events, now);
        let expected = "\
Name:          acme/demo
Phase:         Pending
Release:       r2
API endpoint:  https://api.demo.acme.shoal.local:443
Network:       VNI 1000, node CIDR 10.128.0.0/24
Nodes:         0/2 Ready
Control plane: 1 x 2 CPU, 2Gi memory, 10Gi disk
Age:           5m0s

Conditions:
  TYPE    STATUS   REASON          MESSAGE
  Ready   False    Unschedulable   0/1 control-plane machines Ready; machine demo-cp-0 cannot be placed: no hosts

Machines:
  NAME             ROLE            HOST     IP       PHASE                     RELEASE   AGE
  demo-cp-0        control-plane   h1       <none>   Running                   r1        5m0s
  demo-default-0   worker          <none>   <none>   Pending (Unschedulable)   r1        5m0s

Events (last 10):
  LAST SEEN   TYPE     REASON    OBJECT         MESSAGE
  4m30s       <none>   Created   cluster/demo
";
        assert_eq!(text, expected);
    }
}
