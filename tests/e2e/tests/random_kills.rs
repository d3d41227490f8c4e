//! Randomized crash safety: in each run a small cluster is created, then scaled
//! (even runs) or upgraded (odd runs), then deleted, and during each step the
//! server or one of the two agents is killed with SIGKILL at a random moment (up
//! to 1.5 s in) and restarted. Every run must converge: never more Machines than
//! the step allows (no duplicate), and after the delete no Cluster, Machine,
//! Secret or IPAM claim in the API and no VM, `sh*` link or `shoal` nft table on
//! either host.
//!
//! Seeded: the seed is printed; `SHOAL_KILL_SEED=<n>` replays a run sequence and
//! `SHOAL_KILL_RUNS=<n>` sets the number of runs (default 20, about 6 minutes).
//! Needs root, QEMU, nftables and the test image (scripts/setup.sh).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use shoal_api::{Cluster, ClusterPhase, Machine, MachinePhase, Release};
use shoal_e2e::fixtures::ClusterArgs;
use shoal_e2e::fleet::{create as apply, image};
use shoal_e2e::hosts::{links, nft_tables, start_agent_pair, AgentProc, Underlay};
use shoal_e2e::{workspace_root, ServerProc};

const ORG: &str = "rk";
const NS: &str = "org-rk";

/// SplitMix64: small, seedable, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Who is killed.
#[derive(Clone, Copy, Debug)]
enum Victim {
    Server,
    Agent(usize),
}

struct World {
    server: ServerProc,
    agents: [AgentProc; 2],
    hosts: Underlay,
}

impl World {
    /// Kills `victim` with SIGKILL and starts it again.
    fn kill_and_restart(&mut self, victim: Victim) -> Result<()> {
        match victim {
            Victim::Server => {
                self.server.kill9()?;
                self.server.restart()?;
            }
            Victim::Agent(i) => self.agents[i].restart()?,
        }
        Ok(())
    }

    /// The last warnings and errors of the server and the agents.
    fn logs(&self) -> String {
        let tail = |who: &str, text: String| {
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            let keep = lines.len().saturating_sub(20);
            format!("{who} (last warnings):\n{}", lines[keep..].join("\n"))
        };
        [
            tail("server", self.server.log_text()),
            tail("agent h1", self.agents[0].log_text()),
            tail("agent h2", self.agents[1].log_text()),
        ]
        .join("\n")
    }
}

/// Waits the planned moment into a step, then kills and restarts the victim.
async fn kill_after(world: &mut World, (_, victim, after): (&str, Victim, Duration)) -> Result<()> {
    tokio::time::sleep(after).await;
    world.kill_and_restart(victim)
}

async fn machines(client: &Client) -> Result<Vec<Machine>> {
    Ok(Api::<Machine>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await?
        .items)
}

fn describe(ms: &[Machine]) -> String {
    ms.iter()
        .map(|m| {
            format!(
                "{}[{}{:?} {}]",
                m.name_any(),
                if m.metadata.deletion_timestamp.is_some() {
                    "deleting "
                } else {
                    ""
                },
                m.phase(),
                m.spec.release
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Polls until `done` holds for the Machines and the Cluster's phase, checking
/// `max` live Machines at every sample.
async fn converge(
    world: &World,
    what: &str,
    max: usize,
    timeout: Duration,
    done: impl Fn(&[Machine], Option<ClusterPhase>) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        // A restarted server may take a moment to answer.
        let sample = async {
            let client = world.server.client().await?;
            let ms = machines(&client).await?;
            let phase = Api::<Cluster>::namespaced(client, NS)
                .list(&ListParams::default())
                .await?
                .items
                .first()
                .and_then(|c| c.status.as_ref().and_then(|s| s.phase));
            anyhow::Ok((ms, phase))
        };
        if let Ok((ms, phase)) = sample.await {
            let live = ms
                .iter()
                .filter(|m| m.metadata.deletion_timestamp.is_none())
                .count();
            if live > max {
                bail!(
                    "{what}: {live} live Machines, more than {max}: {}",
                    describe(&ms)
                );
            }
            if done(&ms, phase) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: no convergence in {timeout:?}: cluster {phase:?}, machines {}\n{}",
                    describe(&ms),
                    world.logs()
                );
            }
        } else if Instant::now() > deadline {
            bail!("{what}: the server does not answer\n{}", world.logs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ready_on(ms: &[Machine], n: usize, release: &str) -> bool {
    ms.len() == n
        && ms.iter().all(|m| {
            m.metadata.deletion_timestamp.is_none()
                && m.phase() == Some(MachinePhase::Ready)
                && m.spec.release == release
        })
}

/// What is left anywhere once a cluster is deleted.
async fn leftovers(world: &World, cluster: &str) -> Result<Vec<String>> {
    let client = world.server.client().await?;
    let mut left: Vec<String> = Api::<Cluster>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|c| format!("cluster {}", c.name_any()))
        .collect();
    left.extend(
        machines(&client)
            .await?
            .iter()
            .map(|m| format!("machine {}", m.name_any())),
    );
    left.extend(
        Api::<Secret>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()))
            .filter(|n| n.contains(cluster))
            .map(|n| format!("secret {n}")),
    );
    left.extend(
        Api::<Lease>::namespaced(client, "shoal-system")
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|l| l.name_any())
            .filter(|n| n.starts_with("ipam-"))
            .map(|n| format!("IPAM claim {n}")),
    );
    for (i, agent) in world.agents.iter().enumerate() {
        let ns = &world.hosts.names[i];
        left.extend(
            agent
                .live_vms()
                .into_iter()
                .map(|(vm, pid)| format!("{ns}: qemu {vm} ({pid})")),
        );
        left.extend(
            links(ns)?
                .into_iter()
                .filter(|l| l.starts_with("sh"))
                .map(|l| format!("{ns}: link {l}")),
        );
        left.extend(
            nft_tables(ns)?
                .into_iter()
                .filter(|t| t.contains("shoal"))
                .map(|t| format!("{ns}: nft {t}")),
        );
    }
    Ok(left)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_during_create_scale_upgrade_and_delete() -> Result<()> {
    let seed = std::env::var("SHOAL_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let runs: usize = std::env::var("SHOAL_KILL_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!("random kills: SHOAL_KILL_SEED={seed} SHOAL_KILL_RUNS={runs}");
    let mut rng = Rng(seed);

    let hosts = Underlay::pair(&format!("sk{}h", std::process::id()))?;
    image("vmlinuz")?;
    let images = workspace_root().join("images/out").display().to_string();
    let server = ServerProc::start_with(&["--test-image-dir", &images, "--lease-duration", "2"])?;
    let dir = tempfile::tempdir()?;
    let agents = start_agent_pair(
        &server.kubeconfig(),
        &server.client().await?,
        &hosts,
        dir.path(),
    )
    .await?;
    server.shoal_ok(&["org", "create", ORG])?;
    // A second release that differs only in version, to upgrade to and back.
    apply(
        &Api::<Release>::all(server.client().await?),
        serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Release", "metadata": {"name": "test-b"},
            "spec": {"kubernetesVersion": "1.31.3", "bootstrap": "testImage",
                     "image": {"kernel": image("vmlinuz")?, "initrd": image("initrd.img")?}}
        }),
    )
    .await?;
    let mut world = World {
        server,
        agents,
        hosts,
    };
    let started = Instant::now();
    for run in 0..runs {
        let name = format!("r{run}");
        let (from, to) = if run % 4 < 2 {
            ("test", "test-b")
        } else {
            ("test-b", "test")
        };
        // Each run creates and deletes; even runs scale, odd runs upgrade (a VM
        // boot takes seconds, and the CI budget is about 8 minutes for 20 runs).
        let middle = if run % 2 == 0 { "scale" } else { "upgrade" };
        let mut plan = Vec::new();
        for step in ["create", middle, "delete"] {
            let victim = match rng.below(3) {
                0 => Victim::Server,
                i => Victim::Agent(i as usize - 1),
            };
            plan.push((step, victim, Duration::from_millis(rng.below(1500))));
        }
        eprintln!("run {run}: {plan:?}");
        // Create: 1 control plane, no workers.
        world.server.shoal_ok(
            ClusterArgs::new(&name, ORG)
                .release(from)
                .size("1", "256Mi", "1Gi")
                .args(),
        )?;
        kill_after(&mut world, plan[0]).await?;
        converge(
            &world,
            &format!("run {run} create"),
            1,
            Duration::from_secs(120),
            |ms, phase| ready_on(ms, 1, from) && phase == Some(ClusterPhase::Ready),
        )
        .await?;

        if middle == "scale" {
            // Scale: one worker.
            world
                .server
                .shoal_ok(&["cluster", "scale", &name, "--org", ORG, "--workers", "1"])?;
            kill_after(&mut world, plan[1]).await?;
            converge(
                &world,
                &format!("run {run} scale"),
                2,
                Duration::from_secs(120),
                |ms, phase| ready_on(ms, 2, from) && phase == Some(ClusterPhase::Ready),
            )
            .await?;
        } else {
            // Upgrade: the control plane is replaced, with a surge of one.
            world
                .server
                .shoal_ok(&["cluster", "upgrade", &name, "--org", ORG, "--release", to])?;
            kill_after(&mut world, plan[1]).await?;
            converge(
                &world,
                &format!("run {run} upgrade"),
                2,
                Duration::from_secs(120),
                |ms, phase| ready_on(ms, 1, to) && phase == Some(ClusterPhase::Ready),
            )
            .await?;
        }

        // Delete: nothing may be left anywhere.
        world
            .server
            .shoal_ok(&["cluster", "delete", &name, "--org", ORG])?;
        kill_after(&mut world, plan[2]).await?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match leftovers(&world, &name).await {
                Ok(left) if left.is_empty() => break,
                Ok(left) if Instant::now() > deadline => {
                    bail!("run {run}: left after delete: {left:?}\n{}", world.logs())
                }
                Err(e) if Instant::now() > deadline => bail!("run {run}: {e}"),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        eprintln!("run {run}: converged ({:.0?} so far)", started.elapsed());
    }
    Ok(())
}
