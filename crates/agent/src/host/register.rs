//! The Host object and its heartbeat: what this machine has, what its guests use,
//! and a `coordination.k8s.io/v1` Lease renewed while the agent lives.

use std::net::Ipv4Addr;
use std::path::Path;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::Client;
use shoal_api::validate::Quantity;
use shoal_api::{Condition, Host, HostSpec, ResourceTotals};

use super::desired::Capacity;
use super::AgentError;

/// The namespace of host heartbeat Leases.
pub const LEASE_NAMESPACE: &str = shoal_api::wellknown::SYSTEM_NAMESPACE;
/// Seconds a host Lease lasts without renewal.
pub const LEASE_SECONDS: i32 = 40;

/// The Lease name of a host.
pub fn lease_name(host: &str) -> String {
    format!("host-{host}")
}

/// Detects CPUs and memory from the kernel.
pub fn detect_capacity() -> Capacity {
    let cpus = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    Capacity {
        cpus,
        memory_mib: memory_kib / 1024,
    }
}

/// Free bytes on the filesystem holding `dir`.
pub fn disk_bytes(dir: &Path) -> u64 {
    rustix::fs::statvfs(dir)
        .map(|s| s.f_blocks.saturating_mul(s.f_frsize))
        .unwrap_or(0)
}

fn quantity(text: String) -> Option<Quantity> {
    Quantity::parse(&text).ok()
}

/// Totals as a Host reports them.
pub fn totals(cpus: u32, memory_mib: u64, disk: u64) -> ResourceTotals {
    ResourceTotals {
        cpu: quantity(cpus.to_string()),
        memory: quantity(format!("{memory_mib}Mi")),
        disk: quantity(disk.to_string()),
    }
}

/// What the agent reports on its Host besides the allocation.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// The Host's name.
    pub name: String,
    /// The VXLAN source address.
    pub underlay: Ipv4Addr,
    /// Everything guests may use.
    pub capacity: Capacity,
    /// Disk bytes under the state directory.
    pub disk: u64,
    /// Whether KVM is used.
    pub kvm: bool,
    /// vCPUs offered per CPU.
    pub cpu_allocation_ratio: u32,
    /// Where the gateway reaches this host's VMs, `address:port`.
    pub forward_endpoint: Option<String>,
    /// Where the agent's metrics listener is (its own and its guests' metrics),
    /// `address:port`.
    pub metrics_endpoint: Option<String>,
}

/// Creates the Host if it does not exist (users own its spec afterwards).
pub async fn register(client: &Client, facts: &HostFacts) -> Result<(), AgentError> {
    let api: Api<Host> = Api::all(client.clone());
    if api
        .get_opt(&facts.name)
        .await
        .map_err(|e| AgentError::api(format!("reading host {}", facts.name), e))?
        .is_none()
    {
        let host = Host::new(&facts.name, HostSpec::default());
        match api.create(&PostParams::default(), &host).await {
            Ok(_) => tracing::info!(host = %facts.name, "registered"),
            Err(e) if shoal_kube::is_conflict(&e) => {}
            Err(e) => return Err(AgentError::api(format!("creating host {}", facts.name), e)),
        }
    }
    Ok(())
}

/// Marks the Host NotReady when the agent stops on purpose (its VMs keep running).
pub async fn report_stopped(client: &Client, facts: &HostFacts) -> Result<(), AgentError> {
    let api: Api<Host> = Api::all(client.clone());
    let status = serde_json::json!({"status": {"conditions": [Condition {
        type_: "Ready".into(),
        status: "False".into(),
        reason: "AgentStopped".into(),
        message: "the shoal agent was stopped; its VMs keep running until it returns".into(),
        last_transition_time: Some(Utc::now().to_rfc3339()),
        observed_generation: None,
    }]}});
    api.patch_status(&facts.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| AgentError::api(format!("reporting host {} stopped", facts.name), e))?;
    Ok(())
}

/// Writes the Host's status: capacity, allocatable, allocated, KVM and Ready.
pub async fn report(
    client: &Client,
    facts: &HostFacts,
    allocated: (u32, u64, u64),
) -> Result<(), AgentError> {
    let api: Api<Host> = Api::all(client.clone());
    let now = Utc::now().to_rfc3339();
    // A merge patch replaces the whole list: keep the conditions others own (the
    // drain's `Drained`).
    let mut conditions = api
        .get_opt(&facts.name)
        .await
        .map_err(|e| AgentError::api(format!("reading host {}", facts.name), e))?
        .and_then(|h| h.status)
        .map(|s| s.conditions)
        .unwrap_or_default();
    shoal_kube::conditions::set(
        &mut conditions,
        Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "AgentRunning".into(),
            message: format!("shoal agent {} is running", env!("CARGO_PKG_VERSION")),
            last_transition_time: Some(now.clone()),
            observed_generation: None,
        },
    );
    let cap = totals(facts.capacity.cpus, facts.capacity.memory_mib, facts.disk);
    let status = serde_json::json!({
        "status": {
            "underlayIp": facts.underlay.to_string(),
            "forwardEndpoint": facts.forward_endpoint,
            "metricsEndpoint": facts.metrics_endpoint,
            "capacity": cap,
            "allocatable": totals(
                facts.capacity.cpus.saturating_mul(facts.cpu_allocation_ratio.max(1)),
                facts.capacity.memory_mib,
                facts.disk,
            ),
            "allocated": totals(allocated.0, allocated.1, allocated.2),
            "kvm": facts.kvm,
            "agentVersion": env!("CARGO_PKG_VERSION"),
            "lastHeartbeatTime": now,
            "conditions": conditions,
        }
    });
    api.patch_status(&facts.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| AgentError::api(format!("reporting host {} status", facts.name), e))?;
    Ok(())
}

/// Creates or renews the host's Lease.
pub async fn heartbeat(client: &Client, host: &str) -> Result<(), AgentError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let name = lease_name(host);
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| AgentError::api(format!("reading lease {name}"), e))?;
    match existing {
        Some(_) => {
            let patch = serde_json::json!({"spec": {
                "holderIdentity": host, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now
            }});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| AgentError::api(format!("renewing lease {name}"), e))?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(host.to_string()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => {}
                Err(e) if shoal_kube::is_conflict(&e) => {}
                Err(e) => return Err(AgentError::api(format!("creating lease {name}"), e)),
            }
        }
    }
    Ok(())
}
