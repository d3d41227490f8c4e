//! Fleet state as Prometheus series, computed from the controllers' caches at
//! scrape time: clusters by phase and readiness, Machines per phase and those not
//! Ready yet, each Host's readiness, capacity and allocation, and the expiry of
//! every cluster CA and key-pair certificate.
//!
//! Only the replica that runs the controllers (the leader) has caches, so only it
//! exports these series; alert rules aggregate with `max by` all the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use shoal_api::resources::cluster::{Cluster, ClusterPhase};
use shoal_api::resources::common::Condition;
use shoal_api::resources::host::Host;
use shoal_api::resources::machine::{Machine, MachinePhase};
use shoal_api::KeyPair;

use crate::context::Stores;

/// A certificate's identity in `shoal_certificate_expiry_timestamp_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct CertLabels {
    /// The organization namespace, empty for Shoal's own.
    pub org: String,
    /// The cluster, empty for Shoal's own.
    pub cluster: String,
    /// `cluster-ca`, `keypair` or `server`.
    pub kind: String,
    /// The object's name.
    pub name: String,
}

/// Where the collector finds the fleet: empty until this replica's controllers
/// have filled their caches.
#[derive(Clone, Default)]
pub struct FleetSource {
    caches: Arc<Mutex<Option<(Stores, Store<KeyPair>)>>>,
    own: Arc<Mutex<Vec<(CertLabels, f64)>>>,
}

impl std::fmt::Debug for FleetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let attached = self.caches.lock().map(|s| s.is_some()).unwrap_or_default();
        f.debug_struct("FleetSource")
            .field("attached", &attached)
            .finish()
    }
}

impl FleetSource {
    /// Exports the fleet in `stores` and the key pairs in `keypairs` from now on.
    pub fn attach(&self, stores: Stores, keypairs: Store<KeyPair>) {
        *self.caches.lock().unwrap_or_else(|p| p.into_inner()) = Some((stores, keypairs));
    }

    /// Exports the expiry of one of Shoal's own certificates (`kind="server"`),
    /// read from its PEM; a PEM that does not parse is named in the error.
    pub fn add_own_certificate(&self, name: &str, pem: &str) -> Result<(), shoal_pki::PkiError> {
        let at = shoal_pki::not_after(pem)?;
        let labels = CertLabels {
            org: String::new(),
            cluster: String::new(),
            kind: "server".into(),
            name: name.to_owned(),
        };
        self.own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((labels, at.unix_timestamp() as f64));
        Ok(())
    }

    /// The collector to register.
    pub fn collector(&self) -> FleetCollector {
        FleetCollector {
            source: self.clone(),
        }
    }
}

/// The Prometheus collector of fleet state.
#[derive(Debug)]
pub struct FleetCollector {
    source: FleetSource,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    org: String,
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    org: String,
    cluster: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MachineLabels {
    org: String,
    cluster: String,
    machine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

type Gauges<L> = Family<L, Gauge<f64, std::sync::atomic::AtomicU64>>;

const CLUSTER_PHASES: [ClusterPhase; 5] = [
    ClusterPhase::Pending,
    ClusterPhase::Provisioning,
    ClusterPhase::Ready,
    ClusterPhase::Failed,
    ClusterPhase::Deleting,
];

/// Everything one scrape exports, filled from a snapshot of the caches.
#[derive(Default)]
struct Snapshot {
    cluster_phase: Gauges<PhaseLabels>,
    cluster_ready: Gauges<ClusterLabels>,
    cluster_phase_seconds: Gauges<ClusterLabels>,
    nodes_desired: Gauges<ClusterLabels>,
    nodes_ready: Gauges<ClusterLabels>,
    machines: Gauges<PhaseLabels>,
    machine_provisioning: Gauges<MachineLabels>,
    host_ready: Gauges<HostLabels>,
    host_gauges: Vec<(&'static str, &'static str, Gauges<HostLabels>)>,
    certificates: Gauges<CertLabels>,
}

fn set<L: Clone + std::hash::Hash + Eq>(family: &Gauges<L>, labels: L, value: f64) {
    family.get_or_create(&labels).set(value);
}

fn seconds_since(t: Option<&str>, now: DateTime<Utc>) -> Option<f64> {
    let at = DateTime::parse_from_rfc3339(t?).ok()?;
    Some((now - at.with_timezone(&Utc)).num_milliseconds().max(0) as f64 / 1000.0)
}

fn time_text(t: Option<&Time>) -> Option<String> {
    t.map(|t| t.0.to_string())
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

impl Snapshot {
    fn clusters(&mut self, clusters: &[Arc<Cluster>], now: DateTime<Utc>) {
        for c in clusters {
            let org = c.namespace().unwrap_or_default();
            let key = ClusterLabels {
                org: org.clone(),
                cluster: c.name_any(),
            };
            let status = c.status.clone().unwrap_or_default();
            let phase = status.phase.unwrap_or_default();
            for p in CLUSTER_PHASES {
                let labels = PhaseLabels {
                    org: org.clone(),
                    cluster: key.cluster.clone(),
                    phase: format!("{p:?}"),
                };
                set(&self.cluster_phase, labels, f64::from(u8::from(p == phase)));
            }
            let ready = condition(&status.conditions, "Ready");
            let is_ready = ready.is_some_and(|r| r.status == "True");
            set(
                &self.cluster_ready,
                key.clone(),
                f64::from(u8::from(is_ready)),
            );
            let since = ready
                .and_then(|r| r.last_transition_time.clone())
                .or_else(|| time_text(c.metadata.creation_timestamp.as_ref()));
            if let Some(secs) = seconds_since(since.as_deref(), now) {
                set(&self.cluster_phase_seconds, key.clone(), secs);
            }
            set(
                &self.nodes_desired,
                key.clone(),
                f64::from(status.desired_nodes.unwrap_or(0)),
            );
            set(
                &self.nodes_ready,
                key.clone(),
                f64::from(status.ready_nodes.unwrap_or(0)),
            );
            if let Some(ca) = &status.ca_certificate {
                if let Ok(at) = shoal_pki::not_after(ca) {
                    let labels = CertLabels {
                        org,
                        cluster: key.cluster.clone(),
                        kind: "cluster-ca".into(),
                        name: key.cluster,
                    };
                    set(&self.certificates, labels, at.unix_timestamp() as f64);
                }
            }
        }
    }

    fn machines(&mut self, machines: &[Arc<Machine>], now: DateTime<Utc>) {
        let mut counts: HashMap<PhaseLabels, f64> = HashMap::new();
        for m in machines {
            let org = m.namespace().unwrap_or_default();
            let phase = m.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
            *counts
                .entry(PhaseLabels {
                    org: org.clone(),
                    cluster: m.spec.cluster.clone(),
                    phase: phase.as_str().to_owned(),
                })
                .or_default() += 1.0;
            let not_ready_yet = matches!(
                phase,
                MachinePhase::Pending | MachinePhase::Provisioning | MachinePhase::Running
            );
            if not_ready_yet && m.metadata.deletion_timestamp.is_none() {
                let created = time_text(m.metadata.creation_timestamp.as_ref());
                if let Some(secs) = seconds_since(created.as_deref(), now) {
                    let labels = MachineLabels {
                        org,
                        cluster: m.spec.cluster.clone(),
                        machine: m.name_any(),
                    };
                    set(&self.machine_provisioning, labels, secs);
                }
            }
        }
        for (labels, n) in counts {
            set(&self.machines, labels, n);
        }
    }

    fn hosts(&mut self, hosts: &[Arc<Host>]) {
        let cpu = |q: &Option<shoal_api::validate::Quantity>| {
            q.as_ref().map(|q| q.as_millis() as f64 / 1000.0)
        };
        let bytes =
            |q: &Option<shoal_api::validate::Quantity>| q.as_ref().map(|q| q.as_bytes() as f64);
        let families: [(&'static str, &'static str); 6] = [
            ("shoal_host_capacity_cpus", "CPU cores the host has"),
            ("shoal_host_capacity_memory_bytes", "Memory the host has"),
            (
                "shoal_host_allocatable_cpus",
                "CPU cores guest machines may use",
            ),
            (
                "shoal_host_allocatable_memory_bytes",
                "Memory guest machines may use",
            ),
            ("shoal_host_allocated_cpus", "CPU cores guest machines use"),
            (
                "shoal_host_allocated_memory_bytes",
                "Memory guest machines use",
            ),
        ];
        self.host_gauges = families
            .iter()
            .map(|(n, h)| (*n, *h, Gauges::<HostLabels>::default()))
            .collect();
        for h in hosts {
            let labels = HostLabels { host: h.name_any() };
            let status = h.status.clone().unwrap_or_default();
            let ready = condition(&status.conditions, "Ready").is_some_and(|r| r.status == "True");
            set(&self.host_ready, labels.clone(), f64::from(u8::from(ready)));
            let values = [
                cpu(&status.capacity.cpu),
                bytes(&status.capacity.memory),
                cpu(&status.allocatable.cpu),
                bytes(&status.allocatable.memory),
                cpu(&status.allocated.cpu),
                bytes(&status.allocated.memory),
            ];
            for ((_, _, family), value) in self.host_gauges.iter().zip(values) {
                if let Some(v) = value {
                    set(family, labels.clone(), v);
                }
            }
        }
    }

    fn keypairs(&mut self, keypairs: &[Arc<KeyPair>]) {
        for kp in keypairs {
            let not_after = kp.status.as_ref().and_then(|s| s.not_after.as_deref());
            let Some(at) = not_after.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
                continue;
            };
            let labels = CertLabels {
                org: kp.namespace().unwrap_or_default(),
                cluster: kp.spec.cluster.clone(),
                kind: "keypair".into(),
                name: kp.name_any(),
            };
            set(&self.certificates, labels, at.timestamp() as f64);
        }
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        fn one<L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug>(
            encoder: &mut DescriptorEncoder,
            name: &str,
            help: &str,
            family: &Gauges<L>,
        ) -> Result<(), std::fmt::Error> {
            let metric = encoder.encode_descriptor(name, help, None, family.metric_type())?;
            family.encode(metric)
        }
        one(
            encoder,
            "shoal_cluster_phase",
            "1 for the cluster's current phase",
            &self.cluster_phase,
        )?;
        one(
            encoder,
            "shoal_cluster_ready",
            "1 when the cluster's Ready condition is True",
            &self.cluster_ready,
        )?;
        one(
            encoder,
            "shoal_cluster_phase_seconds",
            "Seconds since the cluster's Ready condition last changed",
            &self.cluster_phase_seconds,
        )?;
        one(
            encoder,
            "shoal_cluster_nodes_desired",
            "Nodes the cluster asks for",
            &self.nodes_desired,
        )?;
        one(
            encoder,
            "shoal_cluster_nodes_ready",
            "Nodes of the cluster that are Ready",
            &self.nodes_ready,
        )?;
        one(
            encoder,
            "shoal_machines",
            "Machines per cluster and phase",
            &self.machines,
        )?;
        one(
            encoder,
            "shoal_machine_provisioning_seconds",
            "Age of each Machine that is not Ready yet",
            &self.machine_provisioning,
        )?;
        one(
            encoder,
            "shoal_host_ready",
            "1 when the host's Ready condition is True",
            &self.host_ready,
        )?;
        for (name, help, family) in &self.host_gauges {
            one(encoder, name, help, family)?;
        }
        one(
            encoder,
            "shoal_certificate_expiry_timestamp_seconds",
            "notAfter of each CA and certificate Shoal holds, seconds since the epoch",
            &self.certificates,
        )
    }
}

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let caches = self
            .source
            .caches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some((stores, keypairs)) = caches else {
            return Ok(());
        };
        let now = Utc::now();
        let mut snap = Snapshot::default();
        snap.clusters(&stores.clusters.state(), now);
        snap.machines(&stores.machines.state(), now);
        snap.hosts(&stores.hosts.state());
        snap.keypairs(&keypairs.state());
        for (labels, at) in self
            .source
            .own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            set(&snap.certificates, labels.clone(), *at);
        }
        snap.encode(&mut encoder)
    }
}

/// The exposition text of `collector` alone (for tests and debugging).
pub fn encode_text(collector: FleetCollector) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(collector));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_api::{self, State};
    use serde_json::json;

    fn machine(name: &str, phase: &str) -> Machine {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": name, "namespace": "org-x",
                         "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"cluster": "a", "role": "worker", "release": "test",
                     "size": {"cpu": "1", "memory": "512Mi", "disk": "1Gi"}},
            "status": {"phase": phase}
        }))
        .expect("a valid Machine")
    }

    fn host(name: &str, ready: &str) -> Host {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Host",
            "metadata": {"name": name},
            "spec": {},
            "status": {
                "capacity": {"cpu": "8", "memory": "16Gi"},
                "allocatable": {"cpu": "6", "memory": "12Gi"},
                "allocated": {"cpu": "1500m", "memory": "2Gi"},
                "conditions": [{"type": "Ready", "status": ready, "reason": "x", "message": ""}]
            }
        }))
        .expect("a valid Host")
    }

    fn scrape(source: &FleetSource) -> String {
        encode_text(source.collector())
    }

    #[test]
    fn nothing_is_exported_before_the_caches_are_attached() {
        assert!(!scrape(&FleetSource::default()).contains("shoal_cluster"));
    }

    #[tokio::test]
    async fn clusters_machines_and_hosts_become_series() {
        let mut cluster = fake_api::cluster(true);
        cluster.status = Some(
            serde_json::from_value(json!({
                "phase": "Provisioning", "desiredNodes": 3, "readyNodes": 1,
                "conditions": [{"type": "Ready", "status": "False", "reason": "x",
                                "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"}]
            }))
            .expect("a valid status"),
        );
        let (ctx, _) = fake_api::context(State {
            clusters: vec![cluster],
            machines: vec![
                machine("a-1", "Ready"),
                machine("a-2", "Provisioning"),
                machine("a-3", "Provisioning"),
            ],
            hosts: vec![host("h1", "True"), host("h2", "False")],
            ..State::default()
        });
        let source = FleetSource::default();
        source.attach(ctx.stores.clone(), fake_api::store(Vec::<KeyPair>::new()));
        let text = scrape(&source);
        for line in [
            r#"shoal_cluster_phase{org="org-x",cluster="a",phase="Provisioning"} 1"#,
            r#"shoal_cluster_phase{org="org-x",cluster="a",phase="Ready"} 0"#,
            r#"shoal_cluster_ready{org="org-x",cluster="a"} 0"#,
            r#"shoal_cluster_nodes_desired{org="org-x",cluster="a"} 3"#,
            r#"shoal_cluster_nodes_ready{org="org-x",cluster="a"} 1"#,
            r#"shoal_machines{org="org-x",cluster="a",phase="Provisioning"} 2"#,
            r#"shoal_machines{org="org-x",cluster="a",phase="Ready"} 1"#,
            r#"shoal_host_ready{host="h1"} 1"#,
            r#"shoal_host_ready{host="h2"} 0"#,
            r#"shoal_host_capacity_cpus{host="h1"} 8"#,
            r#"shoal_host_allocated_cpus{host="h1"} 1.5"#,
            r#"shoal_host_allocatable_memory_bytes{host="h1"} 12884901888"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // Only the Machines not Ready yet have an age, and it is years here.
        assert!(!text.contains(r#"machine="a-1""#), "{text}");
        let age = text
            .lines()
            .find(|l| l.starts_with("shoal_machine_provisioning_seconds{") && l.contains("a-2"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .expect("a-2's age");
        assert!(age > 86_400.0 * 365.0, "{age}");
    }
}
