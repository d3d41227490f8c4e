//! `cargo bench -p shoal-e2e --bench agent` (or `make bench`): the host agent's
//! figures next to their baselines, in one run. Needs root, QEMU and the test image.
//!
//! 1. N VMs (default 10) started at once: time from Machine creation to Ready
//!    through Shoal (server + agent in a host namespace, DHCP, metadata, phone-home),
//!    divided by the time for the same image under a raw `qemu-system-x86_64`
//!    command line (user-mode networking, a bare NoCloud server) to phone home.
//! 2. The agent's RSS while it runs the N VMs.
//! 3. Time to delete the N Machines until their QEMUs, taps, bridge, VXLAN and nft
//!    tables are gone.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kube::api::{Api, DeleteParams};
use shoal_api::{Host, Machine, MachinePhase};
use shoal_e2e::bench::percentile;
use shoal_e2e::fleet::{create, machine, setup, NS};
use shoal_e2e::hosts::{alive, links, nft_tables, AgentProc, Underlay};
use shoal_e2e::rawboot::RawBoot;
use shoal_e2e::ServerProc;

fn vms() -> usize {
    std::env::var("SHOAL_BENCH_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

fn secs(samples: &[Duration]) -> Vec<f64> {
    let mut s: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    s.sort_by(f64::total_cmp);
    s
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn raw_boot(n: usize) -> Result<Vec<Duration>> {
    let mut raw = RawBoot::launch_n(n)?;
    raw.wait_all(Duration::from_secs(300))
}

async fn shoal_boot(n: usize) -> Result<Vec<f64>> {
    let hosts = Underlay::pair(&format!("sb{}h", std::process::id()))?;
    // Machines are pinned by hand: no controllers, no scheduler.
    let server = ServerProc::start_with(&["--controllers=false"])?;
    let client = server.client().await?;
    setup(&client, &[("bench", 201, "10.201.0.0/24")]).await?;
    let dir = tempfile::tempdir()?;
    let mut agent = AgentProc::start(
        &server.kubeconfig(),
        "h1",
        &hosts.names[0],
        hosts.underlay(0),
        dir.path(),
    )?;
    let hosts_api: Api<Host> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while hosts_api
        .get_opt("h1")
        .await?
        .and_then(|h| h.status)
        .is_none()
    {
        if Instant::now() > deadline {
            bail!("the agent did not register:\n{}", agent.log_text());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle_rss = rss_kib(agent.pid().unwrap_or(0));

    let machines: Api<Machine> = Api::namespaced(client.clone(), NS);
    let names: Vec<String> = (0..n).map(|i| format!("vm-{i}")).collect();
    let start = Instant::now();
    let creates = names.iter().enumerate().map(|(i, name)| {
        let ip = Ipv4Addr::new(10, 201, 0, u8::try_from(10 + i).unwrap_or(250));
        create(&machines, machine(name, "bench", "h1", ip, "1", "test"))
    });
    for r in futures::future::join_all(creates).await {
        r?;
    }
    let mut ready: Vec<Option<Duration>> = vec![None; n];
    while ready.iter().any(Option::is_none) {
        for m in machines.list(&Default::default()).await? {
            let name = m.metadata.name.clone().unwrap_or_default();
            let phase = m.status.as_ref().and_then(|s| s.phase);
            if phase == Some(MachinePhase::Failed) {
                bail!("{name} failed: {:?}", m.status);
            }
            if let Some(i) = names.iter().position(|x| *x == name) {
                if phase == Some(MachinePhase::Ready) && ready[i].is_none() {
                    ready[i] = Some(start.elapsed());
                }
            }
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("not all Ready after 300 s:\n{}", agent.log_text());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready: Vec<Duration> = ready.into_iter().flatten().collect();
    let busy_rss = rss_kib(agent.pid().unwrap_or(0));
    let pids: Vec<u32> = agent.qemu_pids().into_iter().map(|(_, p)| p).collect();

    let del = Instant::now();
    for name in &names {
        machines.delete(name, &DeleteParams::default()).await?;
    }
    let ns = hosts.names[0].clone();
    loop {
        let left_machines = machines.list(&Default::default()).await?.items.len();
        let left_qemu = pids.iter().filter(|p| alive(**p)).count();
        let left_links = links(&ns)?.iter().filter(|l| l.starts_with("sh")).count();
        let left_tables = nft_tables(&ns)?
            .iter()
            .filter(|t| t.ends_with(" shoal"))
            .count();
        if left_machines + left_qemu + left_links + left_tables == 0 {
            break;
        }
        if del.elapsed() > Duration::from_secs(120) {
            bail!("delete incomplete: {left_machines} machines, {left_qemu} QEMUs, {left_links} links, {left_tables} tables");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deleted = del.elapsed();
    if !agent.running() {
        bail!("the agent died:\n{}", agent.log_text());
    }

    let shoal = secs(&ready);
    println!(
        "shoal: {n} machines created at once -> Ready: p50 {:.2} s, max {:.2} s",
        percentile(&shoal, 0.5),
        percentile(&shoal, 1.0)
    );
    println!(
        "agent RSS: idle {:.1} MB, with {n} VMs {:.1} MB",
        idle_rss as f64 / 1024.0,
        busy_rss as f64 / 1024.0
    );
    println!(
        "delete {n} machines (stop grace 1 s) until no QEMU, link or nft table is left: {:.2} s",
        deleted.as_secs_f64()
    );
    Ok(shoal)
}

fn main() -> Result<()> {
    let n = vms();
    println!("host agent benchmark, {n} VMs at once (TCG unless KVM works), one run");
    let raw = secs(&raw_boot(n)?);
    println!(
        "raw QEMU: {n} VMs launched at once -> phone-home: p50 {:.2} s, max {:.2} s",
        percentile(&raw, 0.5),
        percentile(&raw, 1.0)
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shoal = rt.block_on(shoal_boot(n))?;
    let (s50, smax) = (percentile(&shoal, 0.5), percentile(&shoal, 1.0));
    let (r50, rmax) = (percentile(&raw, 0.5), percentile(&raw, 1.0));
    println!(
        "ratio shoal/raw: p50 {:.2}, max {:.2} (goal <= 1.10)",
        s50 / r50,
        smax / rmax
    );
    Ok(())
}
