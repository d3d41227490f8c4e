//! Wiring of the host agent: it registers the Host, keeps its Lease, watches what
//! the host loop looks at, builds the loop on the real runtime, links, firewall,
//! network services and API, and drives it from events, phone-homes and a resync
//! tick until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use shoal_api::{Cluster, Host, Machine, Release};
use shoal_kube::{AbortOnDrop, Shared};
use tokio::sync::Notify;

use super::api::KubeHostApi;
use super::desired::Capacity;
use super::metrics::{Guests, GuestsCell, Metrics};
use super::network::NetnsServices;
use super::reconcile::{Agent, Backends, Caches};
use super::register::{self, HostFacts};
use super::{chain, AgentConfig, AgentError};
use crate::net::link::RtLinks;
use crate::net::metadata::PhoneHomeSender;
use crate::net::netns::NetNs;
use crate::net::nft::NftFirewall;
use crate::vm::kvm::probe_kvm;
use crate::vm::runtime::QemuRuntime;
use crate::vm::Accel;

/// Phone-homes queued for the host loop; more are shed (counted) and retried by
/// the guests. A pass handles a whole queue, so this is a burst, not a backlog.
const PHONE_HOME_QUEUE: usize = 256;

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
    // `/metrics` is served at once; the guest route answers 503 until the Machine
    // cache is ready and `guests` is set below.
    let guests: GuestsCell = Arc::default();
    let mut metrics_endpoint = None;
    let metrics_task = match cfg.metrics_listen {
        Some(addr) => {
            let listener = super::metrics::bind(addr).await?;
            let local = listener.local_addr().map_err(|source| AgentError::Io {
                what: "reading the metrics listener's address".into(),
                source,
            })?;
            metrics_endpoint = Some(super::metrics::published_endpoint(local, cfg.underlay));
            let m = metrics.clone();
            let g = guests.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = super::metrics::serve(m, listener, g).await {
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
    let accel = match cfg.accel {
        Some(accel) => {
            tracing::info!(accel = accel.as_str(), "accelerator set; no KVM probe");
            accel
        }
        None => {
            let accel = probe_kvm(&cfg.qemu, cfg.kvm_probe_timeout).await;
            tracing::info!(accel = accel.as_str(), "accelerator chosen");
            accel
        }
    };
    let runtime = QemuRuntime::new(cfg.qemu.clone())
        .with_netns(netns.clone())
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
        metrics_endpoint,
    };
    register_until_reachable(&client, &facts).await?;
    let beat = tokio::spawn(heartbeat_loop(client.clone(), cfg.name.clone()));

    let wake = Arc::new(Notify::new());
    let machines = Shared::<Machine>::start(Api::all(client.clone()), Counter::default());
    let clusters = Shared::<Cluster>::start(Api::all(client.clone()), Counter::default());
    let releases = Shared::<Release>::start(Api::all(client.clone()), Counter::default());
    let hosts = Shared::<Host>::start(Api::all(client.clone()), Counter::default());
    let _wakers = AbortOnDrop::new(vec![
        machines.wake_on_change(wake.clone()),
        clusters.wake_on_change(wake.clone()),
        releases.wake_on_change(wake.clone()),
        hosts.wake_on_change(wake.clone()),
    ]);
    for ready in [
        machines.store.wait_until_ready().await.is_ok(),
        clusters.store.wait_until_ready().await.is_ok(),
        releases.store.wait_until_ready().await.is_ok(),
        hosts.store.wait_until_ready().await.is_ok(),
    ] {
        if !ready {
            tracing::warn!("a watch ended before its first list");
        }
    }
    // Set once, here; nothing else sets it, so this cannot fail.
    let _ = guests.set(Guests {
        host: cfg.name.clone(),
        machines: machines.store.clone(),
        netns: netns.clone(),
    });
    let forward_task = forward_listener.map(|listener| {
        let targets = super::forward::Targets {
            host: cfg.name.clone(),
            machines: machines.store.clone(),
            clusters: clusters.store.clone(),
        };
        tokio::spawn(super::forward::serve(listener, netns.clone(), targets))
    });
    let (phone_tx, mut phone_rx) =
        PhoneHomeSender::channel(PHONE_HOME_QUEUE, metrics.phone_homes_shed.clone());
    let backends = Backends {
        runtime,
        links,
        firewall,
        services: NetnsServices(netns.clone()),
        api: KubeHostApi::new(client.clone()),
    };
    let caches = Caches {
        machines: machines.store.clone(),
        clusters: clusters.store.clone(),
        releases: releases.store.clone(),
        hosts: hosts.store.clone(),
    };
    let mut agent = Agent::new(
        cfg.clone(),
        accel,
        capacity,
        facts.clone(),
        backends,
        caches,
        phone_tx,
        metrics,
    );
    agent.adopt().await;
    let mut tick = tokio::time::interval(cfg.resync);
    tokio::pin!(shutdown);
    loop {
        agent.pass().await;
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
    if let Err(e) = register::report_stopped(&client, &facts).await {
        tracing::warn!(error = %chain(&e), "marking the host NotReady");
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
