//! `cargo bench -p shoal-e2e --bench lifecycle` (or `make bench`): the guest
//! cluster lifecycle's figures next to their baselines, in one run.
//!
//! - P1: a 1 + 2 node cluster from `shoal cluster create` to Ready (two namespace
//!   hosts, real agents and QEMU VMs), divided by the time 3 raw
//!   `qemu-system-x86_64` boots of the same image, started at once, take to phone
//!   home. Goal: at most 1.10.
//! - P7: `shoal cluster delete` of that 3-node cluster until nothing is left: no
//!   Cluster, Machine or Secret, no QEMU, link or nft table on either host. Goal:
//!   at most 10 s.
//! - P4: scale, with `shoal agent --simulate` (fake hosts; no VM runs): 1,000
//!   clusters × 5 Machines (1 control plane + 4 workers) reconciled to Ready, and
//!   the server's peak RSS, next to the time the same objects take just to be
//!   written through the API with the controllers off (the API's floor). Goals:
//!   at most 60 s, and at most 300 MB. `SHOAL_BENCH_CLUSTERS` changes the count.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use shoal_api::{Cluster, ClusterPhase, Machine, NodePool};
use shoal_e2e::fixtures::ClusterArgs;
use shoal_e2e::fleet::image;
use shoal_e2e::hosts::{links, nft_tables, start_agent_pair, Underlay};
use shoal_e2e::rawboot::RawBoot;
use shoal_e2e::{shoal_bin, workspace_root, ServerProc};

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// P1 and P7 on two namespace hosts.
async fn p1_p7() -> Result<(f64, f64, f64)> {
    let raw = {
        let started = Instant::now();
        let mut raw = RawBoot::launch_n(3)?;
        raw.wait_all(Duration::from_secs(300))?;
        started.elapsed().as_secs_f64()
    };
    let hosts = Underlay::pair(&format!("bl{}h", std::process::id()))?;
    image("vmlinuz")?;
    let images = workspace_root().join("images/out").display().to_string();
    let server = ServerProc::start_with(&["--test-image-dir", &images])?;
    let client = server.client().await?;
    let dir = tempfile::tempdir()?;
    // The hosts must be there before the clock starts, as QEMU is for the baseline.
    let agents = start_agent_pair(&server.kubeconfig(), &client, &hosts, dir.path()).await?;
    server.shoal_ok(&["org", "create", "bench"])?;
    let started = Instant::now();
    server.shoal_ok(
        ClusterArgs::new("p1", "bench")
            .workers("2")
            .size("1", "256Mi", "1Gi")
            .wait("300")
            .args(),
    )?;
    let create = started.elapsed().as_secs_f64();

    let started = Instant::now();
    server.shoal_ok(&["cluster", "delete", "p1", "--org", "bench", "--wait"])?;
    loop {
        let machines: Api<Machine> = Api::namespaced(client.clone(), "org-bench");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "org-bench");
        let mut left = machines.list(&ListParams::default()).await?.items.len()
            + secrets.list(&ListParams::default()).await?.items.len();
        for (i, a) in agents.iter().enumerate() {
            left += a.live_vms().len();
            left += links(&hosts.names[i])?
                .iter()
                .filter(|l| l.starts_with("sh"))
                .count();
            left += nft_tables(&hosts.names[i])?
                .iter()
                .filter(|t| t.ends_with(" shoal"))
                .count();
        }
        if left == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("{left} things left 120 s after delete");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delete = started.elapsed().as_secs_f64();
    Ok((create, raw, delete))
}

fn cluster_obj(i: usize) -> Result<(Cluster, NodePool)> {
    let name = format!("s{i}");
    let cluster: Cluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": "org-scale"},
        "spec": {"release": "test", "controlPlane": {"replicas": 1, "cpu": "1", "memory": "256Mi", "disk": "1Gi"}},
    }))?;
    let pool: NodePool = serde_json::from_value(serde_json::json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "NodePool",
        "metadata": {"name": format!("{name}-default"), "namespace": "org-scale", "labels": {"shoal.io/cluster": name}},
        "spec": {"cluster": name, "replicas": 4, "machine": {"cpu": "1", "memory": "256Mi", "disk": "1Gi"}},
    }))?;
    Ok((cluster, pool))
}

async fn create_all(client: &Client, n: usize) -> Result<()> {
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), "org-scale");
    let pools: Api<NodePool> = Api::namespaced(client.clone(), "org-scale");
    let results: Vec<Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let (clusters, pools) = (clusters.clone(), pools.clone());
            async move {
                let (c, p) = cluster_obj(i)?;
                clusters.create(&PostParams::default(), &c).await?;
                pools.create(&PostParams::default(), &p).await?;
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

fn simulate(server: &ServerProc, hosts: u32) -> Result<Child> {
    Command::new(shoal_bin()?)
        .args(["--kubeconfig", &server.kubeconfig().display().to_string()])
        .args([
            "agent",
            "--name",
            "sim",
            "--simulate",
            &hosts.to_string(),
            "--cpus",
            "64",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting shoal agent --simulate")
}

/// P4: returns (reconcile seconds, peak server RSS MiB, API-only seconds).
async fn p4(n: usize) -> Result<(f64, f64, f64)> {
    // The floor: the same objects written with no controller running.
    let floor = {
        let server = ServerProc::start_with(&["--controllers=false"])?;
        let client = server.client().await?;
        server.shoal_ok(&["org", "create", "scale"])?;
        // A Cluster must name a Release that exists; the API alone seeds none.
        shoal_e2e::ensure_release(&client, "test").await?;
        let started = Instant::now();
        create_all(&client, n).await?;
        // Each of the 5 Machines and its bootstrap Secret, written directly.
        let machines: Api<Machine> = Api::namespaced(client.clone(), "org-scale");
        let results: Vec<Result<()>> = futures::stream::iter(0..n * 5)
            .map(|i| {
                let machines = machines.clone();
                async move {
                    let m: Machine = serde_json::from_value(serde_json::json!({
                        "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
                        "metadata": {"name": format!("m{i}"), "namespace": "org-scale"},
                        "spec": {"cluster": format!("s{}", i / 5), "role": "worker", "release": "test",
                                 "size": {"cpu": "1", "memory": "256Mi", "disk": "1Gi"}},
                    }))?;
                    machines.create(&PostParams::default(), &m).await?;
                    Ok(())
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect::<Result<()>>()?;
        started.elapsed().as_secs_f64()
    };

    let images = workspace_root().join("images/out").display().to_string();
    let server = ServerProc::start_with(&["--test-image-dir", &images])?;
    let client = server.client().await?;
    server.shoal_ok(&["org", "create", "scale"])?;
    let mut sim = simulate(&server, 100)?;
    let hosts_api: Api<shoal_api::Host> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while hosts_api.list(&ListParams::default()).await?.items.len() < 100 {
        if Instant::now() > deadline {
            let _ = sim.kill();
            bail!("the simulated hosts did not register");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    create_all(&client, n).await?;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), "org-scale");
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let list = clusters.list(&ListParams::default()).await?.items;
        let ready = list
            .iter()
            .filter(|c| c.status.as_ref().and_then(|s| s.phase) == Some(ClusterPhase::Ready))
            .count();
        if ready == n {
            break;
        }
        if Instant::now() > deadline {
            let _ = sim.kill();
            bail!("only {ready} of {n} clusters Ready after 900 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let rss = peak_rss_mib(server.pid());
    let machines: Api<Machine> = Api::namespaced(client.clone(), "org-scale");
    let count = machines.list(&ListParams::default()).await?.items.len();
    if count != n * 5 {
        bail!("{count} Machines for {n} clusters × 5");
    }
    let names: std::collections::BTreeSet<String> = machines
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|m| m.name_any())
        .collect();
    assert_eq!(names.len(), n * 5);
    let _ = sim.kill();
    let _ = sim.wait();
    Ok((took, rss, floor))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let n: usize = std::env::var("SHOAL_BENCH_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // SHOAL_BENCH_ONLY=p4 (or p1) runs one part.
    let only = std::env::var("SHOAL_BENCH_ONLY").unwrap_or_default();
    if only != "p4" {
        let (create, raw, delete) = p1_p7().await?;
        println!("P1  1+2 cluster create to Ready: {create:.2} s; 3 raw QEMU boots to phone-home: {raw:.2} s; ratio {:.2} (goal <= 1.10)", create / raw);
        println!("P7  3-node cluster delete until nothing is left: {delete:.2} s (goal <= 10 s)");
    }
    if only == "p1" {
        return Ok(());
    }
    let (took, rss, floor) = p4(n).await?;
    println!(
        "P4  {n} clusters x 5 machines reconciled to Ready (simulated hosts): {took:.1} s, server peak RSS {rss:.0} MiB (goals <= 60 s, <= 300 MB); \
         the same objects only written through the API: {floor:.1} s; ratio {:.2}",
        took / floor
    );
    Ok(())
}
