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
//!   at most 60 s, and at most 300 MB. `SHOAL_BENCH_CLUSTERS=1000,5000,10000`
//!   runs several counts and prints each one's cost per cluster next to the
//!   first's (goals at 5,000: at most 300 s and 1 GB; at 10,000 within 1.5x per
//!   cluster of 1,000); `SHOAL_BENCH_STORES=embedded,etcd` runs them on the
//!   embedded store and on three etcd members with two server replicas (goal:
//!   etcd within 2x of embedded). The wait grows with the count; a run that
//!   reaches it prints how many clusters were Ready instead of failing.
//!   `SHOAL_BENCH_CONTROLLER_CONCURRENCY=N` starts the servers with
//!   `--controller-concurrency N`; `SHOAL_BENCH_RECENT_OBJECTS_MIB=0` with
//!   `--recent-objects-mib 0` (every write reads its object first).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use shoal_api::{Cluster, ClusterPhase, Machine, NodePool};
use shoal_e2e::etcd::EtcdCluster;
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

/// Where a P4 run keeps its objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// The embedded store, one server.
    Embedded,
    /// Three etcd members and two server replicas (the controllers run on the
    /// leader).
    Etcd,
}

/// The servers of one P4 run, and the etcd members they use.
struct Servers {
    servers: Vec<ServerProc>,
    etcd: Option<EtcdCluster>,
    _dir: tempfile::TempDir,
}

impl Servers {
    fn start(backend: Backend, extra: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        match backend {
            Backend::Embedded => Ok(Self {
                servers: vec![ServerProc::start_with(extra)?],
                etcd: None,
                _dir: dir,
            }),
            Backend::Etcd => {
                let etcd = EtcdCluster::start(3)?;
                let key_file = dir.path().join("encryption.key");
                std::fs::write(&key_file, [0x5a_u8; 32])?;
                let endpoints = etcd.endpoints().join(",");
                let key = key_file.to_str().context("a UTF-8 temp path")?;
                let mut args = vec!["--etcd-endpoints", &endpoints, "--encryption-key-file", key];
                args.extend_from_slice(extra);
                let servers = vec![
                    ServerProc::start_with(&args)?,
                    ServerProc::start_with(&args)?,
                ];
                Ok(Self {
                    servers,
                    etcd: Some(etcd),
                    _dir: dir,
                })
            }
        }
    }

    fn first(&self) -> &ServerProc {
        &self.servers[0]
    }

    /// The etcd members' gRPC requests so far by method (empty on the embedded
    /// store).
    fn etcd_requests(&self) -> Result<BTreeMap<String, f64>> {
        match &self.etcd {
            Some(etcd) => etcd.grpc_requests(),
            None => Ok(BTreeMap::new()),
        }
    }

    /// The highest peak RSS among the replicas.
    fn peak_rss_mib(&self) -> f64 {
        self.servers
            .iter()
            .map(|s| peak_rss_mib(s.pid()))
            .fold(0.0, f64::max)
    }
}

/// The API writes (every verb but get, list and watch) the servers have
/// answered, by verb and resource, summed over the replicas.
async fn api_writes(servers: &Servers) -> Result<BTreeMap<String, f64>> {
    let mut by_route = BTreeMap::new();
    for server in &servers.servers {
        let req = http::Request::get("/metrics").body(Vec::new())?;
        let text = server.client().await?.request_text(req).await?;
        let counters = shoal_e2e::prom::samples(
            &text,
            "shoal_apiserver_requests_total",
            &["verb", "resource", "code"],
        )?;
        for (labels, n) in counters {
            let [verb, resource, code] = &labels[..] else {
                continue;
            };
            if matches!(verb.as_str(), "get" | "list" | "watch") {
                continue;
            }
            *by_route
                .entry(format!("{verb} {resource} {code}"))
                .or_insert(0.0) += n;
        }
    }
    Ok(by_route)
}

/// One P4 figure.
struct Scale {
    clusters: usize,
    /// Seconds from the first create until every cluster was Ready, or until the
    /// deadline.
    took: f64,
    /// Clusters Ready when the run ended (all of them unless the deadline hit).
    ready: usize,
    rss_mib: f64,
    /// Seconds to write the same objects through the API with no controller.
    floor: f64,
    /// etcd's gRPC requests during the run by method, per cluster.
    etcd_per_cluster: BTreeMap<String, f64>,
    /// The API's writes during the run by verb, resource and code, per cluster.
    writes_per_cluster: BTreeMap<String, f64>,
}

/// The longest a P4 run waits: it grows with the count, and a run that reaches
/// it reports how far it got instead of failing.
fn p4_deadline(clusters: usize) -> Duration {
    Duration::from_secs(600).max(Duration::from_millis(300 * clusters as u64))
}

/// The same objects written through the API with the controllers off.
async fn p4_floor(backend: Backend, n: usize) -> Result<f64> {
    let servers = Servers::start(backend, &["--controllers=false"])?;
    let server = servers.first();
    let client = server.client().await?;
    server.shoal_ok(&["org", "create", "scale"])?;
    // A Cluster must name a Release that exists; the API alone seeds none.
    shoal_e2e::ensure_release(&client, "test").await?;
    let started = Instant::now();
    create_all(&client, n).await?;
    // Each of the 5 Machines, written directly.
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
    Ok(started.elapsed().as_secs_f64())
}

/// Waits until `n` clusters are Ready or `deadline` passes, and says how many
/// are. The list is polled every half second, less often for thousands of
/// clusters (every `n / 2000` s), so that the polling itself does not load the
/// server and the two cores it measures; the figure is as exact as that interval.
async fn ready_clusters(clusters: &Api<Cluster>, n: usize, deadline: Instant) -> Result<usize> {
    let every = Duration::from_millis(500).max(Duration::from_millis(n as u64 / 2));
    loop {
        let ready = clusters
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|c| c.status.as_ref().and_then(|s| s.phase) == Some(ClusterPhase::Ready))
            .count();
        if ready == n || Instant::now() > deadline {
            return Ok(ready);
        }
        tokio::time::sleep(every).await;
    }
}

/// P4 at `n` clusters on `backend`.
async fn p4(backend: Backend, n: usize) -> Result<Scale> {
    let floor = p4_floor(backend, n).await?;
    let images = workspace_root().join("images/out").display().to_string();
    let mut args = vec!["--test-image-dir".to_owned(), images];
    // SHOAL_BENCH_CONTROLLER_CONCURRENCY=N runs the servers with
    // --controller-concurrency N (the server's default otherwise).
    if let Ok(n) = std::env::var("SHOAL_BENCH_CONTROLLER_CONCURRENCY") {
        args.extend(["--controller-concurrency".to_owned(), n]);
    }
    // SHOAL_BENCH_RECENT_OBJECTS_MIB=N sizes the servers' recent-objects cache
    // (0 turns it off: every write reads its object first, the baseline).
    if let Ok(n) = std::env::var("SHOAL_BENCH_RECENT_OBJECTS_MIB") {
        args.extend(["--recent-objects-mib".to_owned(), n]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let servers = Servers::start(backend, &args)?;
    let server = servers.first();
    let client = server.client().await?;
    server.shoal_ok(&["org", "create", "scale"])?;
    // A simulated host offers 256 CPUs and each Machine asks for 1: 100 hosts
    // hold 5,120 clusters, so the fleet grows with the count (with room to spare).
    let hosts = (n / 40).max(100);
    let mut sim = simulate(server, hosts as u32)?;
    let hosts_api: Api<shoal_api::Host> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while hosts_api.list(&ListParams::default()).await?.items.len() < hosts {
        if Instant::now() > deadline {
            let _ = sim.kill();
            bail!("the simulated hosts did not register");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let etcd_before = servers.etcd_requests()?;
    let writes_before = api_writes(&servers).await?;
    let started = Instant::now();
    create_all(&client, n).await?;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), "org-scale");
    let ready = ready_clusters(&clusters, n, started + p4_deadline(n)).await?;
    let took = started.elapsed().as_secs_f64();
    let rss_mib = servers.peak_rss_mib();
    let etcd_per_cluster = servers
        .etcd_requests()?
        .into_iter()
        .map(|(method, after)| {
            let during = after - etcd_before.get(&method).copied().unwrap_or(0.0);
            (method, during / n as f64)
        })
        .filter(|(_, per)| *per > 0.0)
        .collect();
    let writes_per_cluster = api_writes(&servers)
        .await?
        .into_iter()
        .map(|(route, after)| {
            let during = after - writes_before.get(&route).copied().unwrap_or(0.0);
            (route, during / n as f64)
        })
        .filter(|(_, per)| *per >= 0.05)
        .collect();
    if ready == n {
        let machines: Api<Machine> = Api::namespaced(client.clone(), "org-scale");
        let names: std::collections::BTreeSet<String> = machines
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|m| m.name_any())
            .collect();
        if names.len() != n * 5 {
            bail!("{} Machines for {n} clusters × 5", names.len());
        }
    }
    let _ = sim.kill();
    let _ = sim.wait();
    Ok(Scale {
        clusters: n,
        took,
        ready,
        rss_mib,
        floor,
        etcd_per_cluster,
        writes_per_cluster,
    })
}

/// Prints one P4 figure, with its cost per cluster next to the first count's.
fn report_p4(backend: Backend, s: &Scale, first: Option<&Scale>) {
    let per = s.took * 1000.0 / s.clusters as f64;
    let outcome = if s.ready == s.clusters {
        format!("{:.1} s", s.took)
    } else {
        format!(
            "DEADLINE: only {} of {} Ready after {:.1} s",
            s.ready, s.clusters, s.took
        )
    };
    let scaling = first
        .filter(|f| f.clusters != s.clusters)
        .map(|f| {
            let base = f.took * 1000.0 / f.clusters as f64;
            format!("; per cluster {:.2}x that at {}", per / base, f.clusters)
        })
        .unwrap_or_default();
    println!(
        "P4  {backend:?}: {} clusters x 5 machines reconciled to Ready (simulated hosts): {outcome}, \
         {per:.1} ms per cluster{scaling}, server peak RSS {:.0} MiB; the same objects only written \
         through the API: {:.1} s; ratio {:.2}",
        s.clusters,
        s.rss_mib,
        s.floor,
        s.took / s.floor
    );
    if !s.etcd_per_cluster.is_empty() {
        let methods: Vec<String> = s
            .etcd_per_cluster
            .iter()
            .map(|(method, per)| format!("{method} {per:.1}"))
            .collect();
        println!(
            "P4  {backend:?}: etcd requests per cluster (all members): {}",
            methods.join(", ")
        );
    }
    let mut writes: Vec<(&String, &f64)> = s.writes_per_cluster.iter().collect();
    writes.sort_by(|a, b| b.1.total_cmp(a.1));
    let writes: Vec<String> = writes
        .iter()
        .map(|(route, per)| format!("{route} {per:.2}"))
        .collect();
    println!(
        "P4  {backend:?}: API writes per cluster (verb, resource, code): {}",
        writes.join(", ")
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    // SHOAL_BENCH_CLUSTERS=1000,5000 runs P4 at each count; SHOAL_BENCH_STORES=
    // embedded,etcd on each backend.
    let counts: Vec<usize> = std::env::var("SHOAL_BENCH_CLUSTERS")
        .unwrap_or_else(|_| "1000".into())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .context("SHOAL_BENCH_CLUSTERS: counts separated by commas")
        })
        .collect::<Result<_>>()?;
    let backends: Vec<Backend> = std::env::var("SHOAL_BENCH_STORES")
        .unwrap_or_else(|_| "embedded".into())
        .split(',')
        .map(|b| match b.trim() {
            "embedded" => Ok(Backend::Embedded),
            "etcd" => Ok(Backend::Etcd),
            other => bail!("SHOAL_BENCH_STORES: {other:?} is neither embedded nor etcd"),
        })
        .collect::<Result<_>>()?;
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
    println!("P4  goals: 1,000 clusters <= 60 s and <= 300 MB; 5,000 <= 300 s and <= 1 GB; per-cluster cost at 10,000 within 1.5x of that at 1,000; etcd within 2x of embedded");
    let mut embedded: Vec<Scale> = Vec::new();
    for backend in backends {
        let mut runs: Vec<Scale> = Vec::new();
        for &n in &counts {
            let s = p4(backend, n).await?;
            report_p4(backend, &s, runs.first());
            if backend == Backend::Etcd {
                if let Some(e) = embedded.iter().find(|e| e.clusters == n) {
                    println!(
                        "P4  etcd vs embedded at {n} clusters: {:.1} s vs {:.1} s; ratio {:.2} (goal <= 2)",
                        s.took,
                        e.took,
                        s.took / e.took
                    );
                }
            }
            runs.push(s);
        }
        if backend == Backend::Embedded {
            embedded = runs;
        }
    }
    Ok(())
}
