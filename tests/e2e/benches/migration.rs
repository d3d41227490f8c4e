//! `cargo bench -p shoal-e2e --bench migration` (or `make bench`): draining a host
//! by live migration against today's drain by stop-and-recreate, on the same VMs in
//! one run. Needs root, QEMU and the test image.
//!
//! Two namespace hosts with agents (only the drain controller: Machines are pinned
//! by hand),
//! N VMs (default 3) on h1 and a peer VM on h2 that pings the first of them every
//! 50 ms:
//! 1. `shoal host drain h1 --wait` moves the N VMs to h2 by live migration: the
//!    drain's time, QEMU's downtime per VM and the ping gap of the watched VM.
//! 2. Baseline, the stop-and-recreate a drain did before: the same N Machines are
//!    deleted and created again (same names, IPs and MACs) on h1, all at once, and
//!    the time until all are Ready again is the drain's; the watched VM's ping gap is
//!    its downtime.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kube::api::{Api, DeleteParams};
use shoal_api::{Machine, MachinePhase};
use shoal_e2e::fleet::{create, machine, setup, wait_phase, NS};
use shoal_e2e::hosts::{figure, guest, guest_within, start_agent_pair, Underlay};
use shoal_e2e::ServerProc;

const PEER: Ipv4Addr = Ipv4Addr::new(10, 103, 0, 99);

fn vms() -> usize {
    std::env::var("SHOAL_BENCH_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 103, 0, 11 + u8::try_from(i).unwrap_or(0))
}

fn name(i: usize) -> String {
    format!("m-{i}")
}

/// Pings VM 0 from the peer every 50 ms for `secs` seconds, on a thread.
fn pinger(ns: String, secs: u32) -> std::thread::JoinHandle<Result<String>> {
    std::thread::spawn(move || {
        guest_within(
            &ns,
            PEER,
            &format!("pings {} {} 50", ip(0), secs * 20),
            Duration::from_secs(u64::from(secs) + 30),
        )
    })
}

async fn wait_all(api: &Api<Machine>, n: usize) -> Result<()> {
    for i in 0..n {
        wait_phase(api, &name(i), MachinePhase::Ready, Duration::from_secs(300)).await?;
    }
    Ok(())
}

async fn reachable(ns: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while guest(ns, PEER, &format!("ping {}", ip(0))).unwrap_or_default() != "ok" {
        if Instant::now() > deadline {
            bail!("the peer does not reach {}", ip(0));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

struct Run {
    drain_s: f64,
    downtimes_ms: Vec<u64>,
    lost: u64,
    gap_ms: u64,
}

async fn bench(n: usize) -> Result<(Run, Run)> {
    let hosts = Underlay::pair(&format!("bm{}h", std::process::id()))?;
    let ns2 = hosts.names[1].clone();
    let server = ServerProc::start_with(&["--controllers=hostdrain"])?;
    let client = server.client().await?;
    setup(&client, &[("m", 103, "10.103.0.0/24")]).await?;
    let dir = tempfile::tempdir()?;
    let agents = start_agent_pair(&server.kubeconfig(), &client, &hosts, dir.path()).await?;
    let api: Api<Machine> = Api::namespaced(client.clone(), NS);
    create(&api, machine("peer", "m", "h2", PEER, "1", "test")).await?;
    for i in 0..n {
        create(&api, machine(&name(i), "m", "h1", ip(i), "1", "test")).await?;
    }
    wait_phase(&api, "peer", MachinePhase::Ready, Duration::from_secs(300)).await?;
    wait_all(&api, n).await?;
    reachable(&ns2).await?;

    // 1. Live migration.
    let pings = pinger(ns2.clone(), 20);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    server.shoal_ok(&["host", "drain", "h1", "--wait", "--timeout", "600"])?;
    let drain_s = t.elapsed().as_secs_f64();
    let answer = pings
        .join()
        .map_err(|_| anyhow::anyhow!("pinger panicked"))??;
    let mut downtimes_ms = Vec::new();
    for i in 0..n {
        let m = api.get(&name(i)).await?;
        let st = m
            .status
            .and_then(|s| s.migration)
            .with_context(|| format!("{} has no migration status", name(i)))?;
        downtimes_ms.push(st.downtime_ms.unwrap_or(0));
    }
    let live = Run {
        drain_s,
        downtimes_ms,
        lost: figure(&answer, "sent")? - figure(&answer, "received")?,
        gap_ms: figure(&answer, "gap_ms")?,
    };
    server.shoal_ok(&["host", "uncordon", "h1"])?;
    reachable(&ns2).await?;

    // 2. Stop-and-recreate: delete the N Machines, create them again on h1.
    let pings = pinger(ns2.clone(), 120);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    for i in 0..n {
        api.delete(&name(i), &DeleteParams::default()).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..n {
        while api.get_opt(&name(i)).await?.is_some() {
            if Instant::now() > deadline {
                bail!("{} was not deleted", name(i));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for i in 0..n {
        create(&api, machine(&name(i), "m", "h1", ip(i), "1", "test")).await?;
    }
    wait_all(&api, n).await?;
    let drain_s = t.elapsed().as_secs_f64();
    let answer = pings
        .join()
        .map_err(|_| anyhow::anyhow!("pinger panicked"))??;
    let recreate = Run {
        drain_s,
        downtimes_ms: Vec::new(),
        lost: figure(&answer, "sent")? - figure(&answer, "received")?,
        gap_ms: figure(&answer, "gap_ms")?,
    };
    drop(agents);
    Ok((live, recreate))
}

fn main() -> Result<()> {
    let n = vms();
    println!("host drain benchmark, {n} VMs (256 MiB, test image; TCG unless KVM works), one run");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (live, recreate) = rt.block_on(bench(n))?;
    println!("| figure | live migration | stop-and-recreate | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| drain of {n} VMs, s | {:.1} | {:.1} | {:.2} |",
        live.drain_s,
        recreate.drain_s,
        live.drain_s / recreate.drain_s
    );
    println!(
        "| longest ping gap of one VM (every 50 ms), ms | {} | {} | {:.3} |",
        live.gap_ms,
        recreate.gap_ms,
        live.gap_ms as f64 / recreate.gap_ms.max(1) as f64
    );
    println!("| pings lost | {} | {} | |", live.lost, recreate.lost);
    println!(
        "| QEMU downtime per VM, ms | {:?} | (the VM is replaced) | |",
        live.downtimes_ms
    );
    Ok(())
}
