//! The guest cluster lifecycle end to end, through the controllers: two namespace
//! hosts with real agents and QEMU VMs booting the test image; `shoal cluster
//! create --wait`, scale, a rolling upgrade, the loss of a host, and delete, after
//! which nothing of the cluster is left on either host or in the API.
//! Needs root, QEMU, nftables and the test image (scripts/setup.sh); it fails
//! loudly without them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use shoal_api::{Cluster, ClusterPhase, Host, Machine, MachinePhase, NodePool, Release};
use shoal_e2e::fixtures::ClusterArgs;
use shoal_e2e::fleet::{create as apply, image};
use shoal_e2e::hosts::{links, nft_tables, start_agent_pair, AgentProc, Underlay};
use shoal_e2e::{workspace_root, ServerProc};

const ORG: &str = "life";
const NS: &str = "org-life";

async fn machines(client: &Client) -> Result<Vec<Machine>> {
    let api: Api<Machine> = Api::namespaced(client.clone(), NS);
    Ok(api.list(&ListParams::default()).await?.items)
}

fn live(ms: &[Machine]) -> Vec<&Machine> {
    ms.iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .collect()
}

fn ready(m: &Machine) -> bool {
    m.status.as_ref().and_then(|s| s.phase) == Some(MachinePhase::Ready)
}

fn describe(ms: &[Machine]) -> String {
    ms.iter()
        .map(|m| {
            format!(
                "{} {:?} {} {:?} {}",
                m.name_any(),
                m.spec.role,
                m.spec.host_name.as_deref().unwrap_or("-"),
                m.status.as_ref().and_then(|s| s.phase),
                m.spec.release
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Polls until `done` holds for the cluster's Machines.
async fn converge(
    client: &Client,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[Machine]) -> bool,
) -> Result<Vec<Machine>> {
    let deadline = Instant::now() + timeout;
    loop {
        let ms = machines(client).await?;
        if done(&ms) {
            return Ok(ms);
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: not reached in {timeout:?}; machines: {}",
                describe(&ms)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn cluster_phase(client: &Client, name: &str) -> Result<Option<ClusterPhase>> {
    let api: Api<Cluster> = Api::namespaced(client.clone(), NS);
    Ok(api.get(name).await?.status.and_then(|s| s.phase))
}

async fn wait_cluster_ready(client: &Client, name: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while cluster_phase(client, name).await? != Some(ClusterPhase::Ready) {
        if Instant::now() > deadline {
            let api: Api<Cluster> = Api::namespaced(client.clone(), NS);
            bail!(
                "cluster {name} not Ready in {timeout:?}: {:?}; machines: {}",
                api.get(name).await?.status,
                describe(&machines(client).await?)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Shoal's devices in a host namespace: bridges, vxlans and taps.
fn shoal_links(ns: &str) -> Result<Vec<String>> {
    Ok(links(ns)?
        .into_iter()
        .filter(|l| l.starts_with("sh"))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_scale_upgrade_lose_a_host_and_delete() -> Result<()> {
    let hosts = Underlay::pair(&format!("sl{}h", std::process::id()))?;
    let images = workspace_root().join("images/out");
    image("vmlinuz")?;
    let images_arg = images.display().to_string();
    let server =
        ServerProc::start_with(&["--host-grace-period", "3", "--test-image-dir", &images_arg])?;
    let client = server.client().await?;
    server.shoal_ok(&["org", "create", ORG])?;

    // A cluster too big for either host: Pending, with a message a
    // person can act on, never Failed.
    let dir = tempfile::tempdir()?;
    let mut agents = start_agent_pair(&server.kubeconfig(), &client, &hosts, dir.path()).await?;
    server.shoal_ok(
        ClusterArgs::new("big", ORG)
            .size("64", "256Mi", "1Gi")
            .args(),
    )?;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = clusters.get("big").await?.status.unwrap_or_default();
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready");
        if let Some(c) = ready.filter(|c| c.reason == "Unschedulable") {
            assert_eq!(st.phase, Some(ClusterPhase::Pending), "{st:?}");
            assert!(
                c.message
                    .contains("needs 64 CPU / 256Mi memory / 1Gi disk; largest free: h"),
                "{}",
                c.message
            );
            assert!(c.message.contains("with 32 CPU"), "{}", c.message);
            break;
        }
        if Instant::now() > deadline {
            bail!("cluster big never said why it is Pending: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    server.shoal_ok(&["cluster", "delete", "big", "--org", ORG, "--wait"])?;

    // Create: 1 control plane + 2 workers, spread over both hosts.
    let out = server.shoal_ok(
        ClusterArgs::new("c1", ORG)
            .workers("2")
            .size("1", "256Mi", "1Gi")
            .wait("300")
            .args(),
    )?;
    assert!(out.contains("is Ready"), "{out}");
    assert!(out.contains("https://api.c1.life.shoal.local:443"), "{out}");
    let ms = machines(&client).await?;
    assert_eq!(ms.len(), 3, "{}", describe(&ms));
    assert!(ms.iter().all(ready), "{}", describe(&ms));
    let used: BTreeSet<_> = ms.iter().filter_map(|m| m.spec.host_name.clone()).collect();
    assert_eq!(used.len(), 2, "spread over both hosts: {}", describe(&ms));
    // Every Machine has its own address and MAC in the cluster's node network.
    let cidr = clusters
        .get("c1")
        .await?
        .status
        .and_then(|s| s.node_cidr)
        .context("node CIDR")?;
    let ips: BTreeSet<_> = ms.iter().filter_map(|m| m.spec.ip.clone()).collect();
    assert_eq!(ips.len(), 3);
    let prefix = cidr
        .rsplit_once('.')
        .map(|(p, _)| p.to_owned())
        .unwrap_or_default();
    assert!(
        ips.iter().all(|ip| ip.starts_with(&prefix)),
        "{ips:?} in {cidr}"
    );

    // Scale the workers to 3, then back to 1.
    server.shoal_ok(&["cluster", "scale", "c1", "--org", ORG, "--workers", "3"])?;
    converge(&client, "3 Ready workers", Duration::from_secs(180), |ms| {
        let l = live(ms);
        l.len() == 4 && l.iter().all(|m| ready(m))
    })
    .await?;
    server.shoal_ok(&["cluster", "scale", "c1", "--org", ORG, "--workers", "1"])?;
    converge(&client, "1 worker", Duration::from_secs(120), |ms| {
        ms.len() == 2 && ms.iter().all(ready)
    })
    .await?;

    // Upgrade to a release that differs only in version: one Machine at a time,
    // never fewer than desired-1 Ready.
    let releases: Api<Release> = Api::all(client.clone());
    apply(
        &releases,
        serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Release", "metadata": {"name": "test-2"},
            "spec": {"kubernetesVersion": "1.31.3", "bootstrap": "testImage",
                     "image": {"kernel": image("vmlinuz")?, "initrd": image("initrd.img")?}}
        }),
    )
    .await?;
    server.shoal_ok(&[
        "cluster",
        "upgrade",
        "c1",
        "--org",
        ORG,
        "--release",
        "test-2",
    ])?;
    let desired = 2;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut samples = 0;
    let mut seen = BTreeSet::new();
    loop {
        let ms = machines(&client).await?;
        let l = live(&ms);
        let n_ready = l.iter().filter(|m| ready(m)).count();
        assert!(
            n_ready + 1 >= desired,
            "only {n_ready} of {desired} Ready during the upgrade: {}",
            describe(&ms)
        );
        assert!(
            l.len() <= desired + 1,
            "more than one surge Machine: {}",
            describe(&ms)
        );
        seen.extend(ms.iter().map(|m| m.name_any()));
        samples += 1;
        if l.len() == desired
            && l.iter().all(|m| ready(m) && m.spec.release == "test-2")
            && ms.len() == desired
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("upgrade did not finish: {}", describe(&ms));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(samples > 10, "the upgrade was sampled {samples} times");
    assert_eq!(
        seen.len(),
        4,
        "each of the 2 Machines was replaced once: {seen:?}"
    );
    wait_cluster_ready(&client, "c1", Duration::from_secs(60)).await?;

    // Lose host 2: two workers, one per host; kill h2's agent and its VMs.
    server.shoal_ok(&["cluster", "scale", "c1", "--org", ORG, "--workers", "2"])?;
    let ms = converge(
        &client,
        "2 workers on both hosts",
        Duration::from_secs(180),
        |ms| {
            let l = live(ms);
            l.len() == 3
                && l.iter().all(|m| ready(m))
                && l.iter().any(|m| m.spec.host_name.as_deref() == Some("h2"))
        },
    )
    .await?;
    let on_h2: Vec<String> = ms
        .iter()
        .filter(|m| m.spec.host_name.as_deref() == Some("h2"))
        .map(|m| m.name_any())
        .collect();
    agents[1].kill9()?;
    assert!(agents[1].kill_vms() > 0, "h2 ran VMs");
    let ms = converge(
        &client,
        "everything back on h1",
        Duration::from_secs(240),
        |ms| {
            let l = live(ms);
            l.len() == 3
                && l.iter()
                    .all(|m| ready(m) && m.spec.host_name.as_deref() == Some("h1"))
                && !ms.iter().any(|m| on_h2.contains(&m.name_any()))
        },
    )
    .await?;
    wait_cluster_ready(&client, "c1", Duration::from_secs(60)).await?;
    let failed_events = server.kubectl_ok(&["get", "events", "-n", NS, "-o", "json"])?;
    assert!(
        failed_events.contains("HostLost"),
        "a HostLost event was recorded"
    );
    drop(ms);
    // h2 comes back and removes what its dead VMs left behind.
    agents[1].restart()?;

    // Delete: the output names what was removed, and nothing is left.
    let out = server.shoal_ok(&["cluster", "delete", "c1", "--org", ORG, "--wait"])?;
    assert!(out.contains("machines"), "{out}");
    assert!(out.contains("c1-cp-"), "{out}");
    assert!(out.contains("secrets"), "{out}");
    assert!(out.contains("vni"), "{out}");
    assert!(clusters
        .list(&ListParams::default())
        .await?
        .items
        .is_empty());
    assert!(machines(&client).await?.is_empty());
    let pools: Api<NodePool> = Api::namespaced(client.clone(), NS);
    assert!(pools.list(&ListParams::default()).await?.items.is_empty());
    let secrets: Api<Secret> = Api::all(client.clone());
    let left: Vec<String> = secrets
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()))
        .filter(|n| n.contains("c1"))
        .collect();
    assert!(left.is_empty(), "secrets left: {left:?}");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "shoal-system");
    let claims: Vec<String> = leases
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|l| l.name_any())
        .filter(|n| n.starts_with("ipam-"))
        .collect();
    assert!(claims.is_empty(), "IPAM claims left: {claims:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut left = Vec::new();
        for (i, agent) in agents.iter().enumerate() {
            let ns = &hosts.names[i];
            left.extend(
                agent
                    .live_vms()
                    .into_iter()
                    .map(|(vm, pid)| format!("{ns}: qemu {vm} ({pid})")),
            );
            left.extend(
                shoal_links(ns)?
                    .into_iter()
                    .map(|l| format!("{ns}: link {l}")),
            );
            left.extend(
                nft_tables(ns)?
                    .into_iter()
                    .filter(|t| t.contains("shoal"))
                    .map(|t| format!("{ns}: nft {t}")),
            );
        }
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("left on the hosts after delete: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// What is left of Shoal's guests on host namespace `ns`: QEMU processes, links
/// and nft tables.
fn left_on_host(agent: &AgentProc, ns: &str) -> Result<Vec<String>> {
    let mut left: Vec<String> = agent
        .live_vms()
        .into_iter()
        .map(|(vm, pid)| format!("{ns}: qemu {vm} ({pid})"))
        .collect();
    left.extend(
        shoal_links(ns)?
            .into_iter()
            .map(|l| format!("{ns}: link {l}")),
    );
    left.extend(
        nft_tables(ns)?
            .into_iter()
            .filter(|t| t.contains("shoal"))
            .map(|t| format!("{ns}: nft {t}")),
    );
    Ok(left)
}

/// Guest node metrics are scraped through the host's agent (issue 17): the Host
/// publishes its metrics listener as `metricsEndpoint`, where
/// `/guests/<ns>/<machine>/metrics` answers with the guest exporter's metrics and an
/// unknown machine gets 404 naming it.
async fn guest_metrics_through_the_agent(client: &Client, agent: &AgentProc) -> Result<()> {
    let started = Instant::now();
    let hosts: Api<Host> = Api::all(client.clone());
    let endpoint = hosts
        .get("h1")
        .await?
        .status
        .and_then(|s| s.metrics_endpoint)
        .context("Host h1 has no status.metricsEndpoint")?;
    ensure!(
        endpoint == format!("127.0.0.1:{}", agent.metrics_port),
        "metricsEndpoint {endpoint} is not the agent's --metrics-listen port {}",
        agent.metrics_port
    );
    let ms = machines(client).await?;
    ensure!(!ms.is_empty(), "no machines");
    for m in &ms {
        let name = m.name_any();
        let path = format!("/guests/{NS}/{name}/metrics");
        // The guest exporter starts right before the guest phones home, so it is up.
        let (code, body) = AgentProc::metrics_get(&endpoint, &path)?;
        ensure!(code == 200, "GET {path}: {code}: {body}");
        let total: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix("node_memory_MemTotal_bytes "))
            .with_context(|| format!("GET {path}: no node_memory_MemTotal_bytes in\n{body}"))?
            .trim()
            .parse()?;
        // A 256Mi VM: the kernel keeps some for itself, so a little less.
        ensure!(
            (64.0 * 1048576.0..=256.0 * 1048576.0).contains(&total),
            "{name}: node_memory_MemTotal_bytes {total} is not plausible for a 256Mi VM"
        );
        for metric in [
            "node_boot_time_seconds ",
            "node_load1 ",
            "node_memory_MemAvailable_bytes ",
            "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} ",
            "node_uname_info{nodename=",
        ] {
            ensure!(
                body.lines().any(|l| l.starts_with(metric)),
                "{name}: no {metric:?} in\n{body}"
            );
        }
    }
    let (code, body) =
        AgentProc::metrics_get(&endpoint, &format!("/guests/{NS}/no-such-machine/metrics"))?;
    ensure!(
        code == 404 && body.contains("no-such-machine"),
        "an unknown machine: {code}: {body}"
    );
    eprintln!(
        "guest metrics of {} machines through the agent: {:.2?}",
        ms.len(),
        started.elapsed()
    );
    Ok(())
}

/// With the default settings (the agent's 10 s stop grace) a cluster delete is
/// quick because the test image powers off on the ACPI power button that the
/// agent presses: from `cluster delete` until nothing is left in the API or on
/// the host takes at most 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_quick_with_default_settings() -> Result<()> {
    const LIMIT: Duration = Duration::from_secs(3);
    let hosts = Underlay::pair(&format!("sq{}h", std::process::id()))?;
    image("vmlinuz")?;
    let images = workspace_root().join("images/out").display().to_string();
    let server = ServerProc::start_with(&["--test-image-dir", &images])?;
    let client = server.client().await?;
    server.shoal_ok(&["org", "create", ORG])?;
    let dir = tempfile::tempdir()?;
    let ns = &hosts.names[0];
    let agent = AgentProc::start_with_grace(
        &server.kubeconfig(),
        "h1",
        ns,
        hosts.underlay(0),
        dir.path(),
        None,
    )?;
    server.shoal_ok(
        ClusterArgs::new("quick", ORG)
            .workers("1")
            .size("1", "256Mi", "1Gi")
            .wait("240")
            .args(),
    )?;
    ensure!(
        agent.live_vms().len() == 2,
        "two VMs run: {:?}",
        agent.live_vms()
    );
    guest_metrics_through_the_agent(&client, &agent).await?;

    let started = Instant::now();
    server.shoal_ok(&["cluster", "delete", "quick", "--org", ORG, "--wait"])?;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
    let leases: Api<Lease> = Api::namespaced(client.clone(), "shoal-system");
    loop {
        let mut left = left_on_host(&agent, ns)?;
        left.extend(
            clusters
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .map(|c| format!("cluster {}", c.name_any())),
        );
        left.extend(
            machines(&client)
                .await?
                .iter()
                .map(|m| format!("machine {}", m.name_any())),
        );
        left.extend(
            leases
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .map(|l| l.name_any())
                .filter(|n| n.starts_with("ipam-")),
        );
        if left.is_empty() {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("left after delete: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    eprintln!("cluster delete until nothing is left: {took:.2?} (limit {LIMIT:?})");
    let log = agent.log_text();
    ensure!(
        !log.contains("guest ignored powerdown"),
        "a guest ignored the power button:\n{log}"
    );
    ensure!(
        took <= LIMIT,
        "cluster delete took {took:.2?}, more than {LIMIT:?}"
    );
    Ok(())
}
