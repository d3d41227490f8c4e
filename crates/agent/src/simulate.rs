//! `shoal agent --simulate N`: **for scale tests only.** It registers N fake Hosts,
//! keeps their Leases fresh, and marks every Machine assigned to them Running and
//! then Ready, without starting any VM or touching any network. It takes no
//! finalizer, so deleting a Machine is immediate. It lets the controllers and the
//! API be measured with thousands of Machines on one small machine, in the way
//! KWOK does for Kubernetes nodes.

use std::collections::HashSet;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use shoal_api::{Condition, Machine, MachinePhase};
use tokio::sync::Semaphore;

use crate::host::desired::Capacity;
use crate::host::register::{self, HostFacts};
use crate::host::AgentError;
use crate::phase::{write_phase, PhaseWrite, PhaseWriteError};

/// The fake hosts.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Hosts are named `<prefix>-<i>`.
    pub prefix: String,
    /// How many.
    pub hosts: u32,
    /// CPUs each offers.
    pub cpus: u32,
    /// Memory each offers, in MiB.
    pub memory_mib: u64,
    /// Disk each offers, in bytes.
    pub disk: u64,
    /// vCPUs per CPU the scheduler may place.
    pub cpu_allocation_ratio: u32,
    /// Status writes in flight at once.
    pub concurrency: usize,
}

impl SimConfig {
    /// The name of fake host `i`.
    pub fn host_name(&self, i: u32) -> String {
        format!("{}-{i}", self.prefix)
    }

    fn facts(&self, i: u32) -> HostFacts {
        HostFacts {
            name: self.host_name(i),
            underlay: Ipv4Addr::LOCALHOST,
            capacity: Capacity {
                cpus: self.cpus,
                memory_mib: self.memory_mib,
            },
            disk: self.disk,
            kvm: false,
            cpu_allocation_ratio: self.cpu_allocation_ratio,
            forward_endpoint: None,
            metrics_endpoint: None,
        }
    }
}

/// The status a simulated Machine gets for `phase`.
pub fn status_patch(phase: MachinePhase) -> serde_json::Value {
    let now = Utc::now().to_rfc3339();
    let (field, ready) = match phase {
        MachinePhase::Running => ("runningTime", false),
        _ => ("readyTime", true),
    };
    let mut status = serde_json::json!({
        "phase": phase,
        "conditions": [Condition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            reason: if ready { "Simulated" } else { "Booting" }.into(),
            message: "simulated by shoal agent --simulate; no VM runs".into(),
            last_transition_time: Some(now.clone()),
            observed_generation: None,
        }],
    });
    status[field] = serde_json::json!(now);
    if phase == MachinePhase::Running {
        status["provisioningTime"] = serde_json::json!(now);
    }
    serde_json::json!({ "status": status })
}

async fn advance(client: Client, m: Arc<Machine>) -> Result<(), PhaseWriteError> {
    let api: Api<Machine> = Api::namespaced(client, &m.namespace().unwrap_or_default());
    let mut seen = (*m).clone();
    if m.phase() != Some(MachinePhase::Running) {
        let running = status_patch(MachinePhase::Running);
        match write_phase(
            &api,
            &seen,
            MachinePhase::Running,
            running["status"].clone(),
        )
        .await?
        {
            // The next write is decided on the copy just written.
            PhaseWrite::Written(written) => seen = *written,
            PhaseWrite::Refused(_) | PhaseWrite::Gone => return Ok(()),
        }
    }
    let ready = status_patch(MachinePhase::Ready);
    write_phase(&api, &seen, MachinePhase::Ready, ready["status"].clone()).await?;
    Ok(())
}

/// Registers the fake hosts and serves them until `stop` resolves.
pub async fn run(
    client: Client,
    cfg: SimConfig,
    stop: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    for i in 0..cfg.hosts {
        let facts = cfg.facts(i);
        register::register(&client, &facts).await?;
        register::report(&client, &facts, (0, 0, 0)).await?;
        register::heartbeat(&client, &facts.name).await?;
    }
    tracing::info!(hosts = cfg.hosts, prefix = %cfg.prefix, "simulated hosts registered; no VM will run");
    let names: Arc<HashSet<String>> = Arc::new((0..cfg.hosts).map(|i| cfg.host_name(i)).collect());

    let beat_client = client.clone();
    let beat_cfg = cfg.clone();
    let beats = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            for i in 0..beat_cfg.hosts {
                let facts = beat_cfg.facts(i);
                if let Err(e) = register::heartbeat(&beat_client, &facts.name).await {
                    tracing::warn!(host = %facts.name, error = %e, "heartbeat");
                }
                if let Err(e) = register::report(&beat_client, &facts, (0, 0, 0)).await {
                    tracing::warn!(host = %facts.name, error = %e, "host status");
                }
            }
        }
    });

    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let machines = watcher(
        Api::<Machine>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects();
    let work = async {
        let mut machines = std::pin::pin!(machines);
        while let Some(item) = machines.next().await {
            let m = match item {
                Ok(m) => Arc::new(m),
                Err(e) => {
                    tracing::debug!(error = %e, "machine watch interrupted; it resumes");
                    continue;
                }
            };
            let ours = m.spec.host_name.as_ref().is_some_and(|h| names.contains(h));
            let phase = m.status.as_ref().and_then(|s| s.phase);
            let done = matches!(phase, Some(MachinePhase::Ready | MachinePhase::Failed));
            if !ours || done || m.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let key = format!("{}/{}", m.namespace().unwrap_or_default(), m.name_any());
            let fresh = in_flight
                .lock()
                .map(|mut s| s.insert(key.clone()))
                .unwrap_or(false);
            if !fresh {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (client, in_flight) = (client.clone(), in_flight.clone());
            tokio::spawn(async move {
                if let Err(e) = advance(client, m).await {
                    tracing::debug!(machine = %key, error = %e, "simulated status");
                }
                if let Ok(mut s) = in_flight.lock() {
                    s.remove(&key);
                }
                drop(permit);
            });
        }
    };
    tokio::select! {
        _ = work => {}
        _ = stop => {}
    }
    beats.abort();
    Ok(())
}
