//! Crash safety of the controllers: `kill -9` of the server at five points during
//! a cluster's creation, and at five points during its deletion, then a restart.
//! Each time the cluster converges, with no duplicate Machine and no leaked VM.
//! Real agents in two namespace hosts run the VMs (they outlive the server).
//! Needs root, QEMU, nftables and the test image (scripts/setup.sh).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use shoal_api::{Cluster, ClusterPhase, Machine};
use shoal_e2e::fixtures::ClusterArgs;
use shoal_e2e::fleet::image;
use shoal_e2e::hosts::{start_agent_pair, Underlay};
use shoal_e2e::{workspace_root, ServerProc};

const ORG: &str = "crash";
const NS: &str = "org-crash";

async fn machines(client: &Client) -> Result<Vec<Machine>> {
    Ok(Api::<Machine>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await?
        .items)
}

fn names(ms: &[Machine]) -> Vec<String> {
    ms.iter().map(|m| m.name_any()).collect()
}

/// The server's controller log lines, for a failure message.
fn log_tail(server: &ServerProc) -> String {
    server
        .log_text()
        .lines()
        .filter(|l| l.contains("shoal_controllers") || l.contains("ERROR"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_server_during_create_and_delete() -> Result<()> {
    let hosts = Underlay::pair(&format!("sc{}h", std::process::id()))?;
    image("vmlinuz")?;
    let images = workspace_root().join("images/out").display().to_string();
    let mut server =
        ServerProc::start_with(&["--test-image-dir", &images, "--lease-duration", "2"])?;
    let dir = tempfile::tempdir()?;
    // Both hosts are registered and Ready before the first kill.
    let agents = start_agent_pair(
        &server.kubeconfig(),
        &server.client().await?,
        &hosts,
        dir.path(),
    )
    .await?;
    let out = server.shoal(&["org", "create", ORG])?;
    assert!(out.status.success(), "{out:?}");

    let create_points = [0u64, 150, 400, 900, 2500];
    let delete_points = [0u64, 100, 300, 700, 1500];
    for (round, (kill_create, kill_delete)) in create_points.iter().zip(delete_points).enumerate() {
        let name = format!("k{round}");
        // Create, and kill the server `kill_create` ms later, mid-reconcile.
        let out = server.shoal(
            ClusterArgs::new(&name, ORG)
                .workers("1")
                .size("1", "256Mi", "1Gi")
                .args(),
        )?;
        assert!(out.status.success(), "{out:?}");
        tokio::time::sleep(Duration::from_millis(*kill_create)).await;
        server.kill9()?;
        server.restart()?;
        let client = server.client().await?;
        let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
        let deadline = Instant::now() + Duration::from_secs(150);
        loop {
            let ms = machines(&client).await?;
            let phase = clusters.get(&name).await?.status.and_then(|s| s.phase);
            // Never more Machines than wanted, at any sample.
            assert!(
                ms.len() <= 2,
                "round {round}: duplicate machines {:?}",
                names(&ms)
            );
            if phase == Some(ClusterPhase::Ready) {
                let mut got = names(&ms);
                got.sort();
                assert_eq!(
                    got,
                    vec![format!("{name}-cp-0"), format!("{name}-default-0")]
                );
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "round {round}: cluster {name} is {phase:?}; machines {:?}\n{}\nagents:\n{}\n{}",
                    names(&ms),
                    log_tail(&server),
                    agents[0].log_text(),
                    agents[1].log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let vms: usize = agents.iter().map(|a| a.live_vms().len()).sum();
        assert_eq!(vms, 2, "round {round}: VMs running after create");

        // Delete, and kill the server `kill_delete` ms later.
        let pools: Api<shoal_api::NodePool> = Api::namespaced(client.clone(), NS);
        pools
            .delete(&format!("{name}-default"), &DeleteParams::default())
            .await?;
        clusters.delete(&name, &DeleteParams::default()).await?;
        tokio::time::sleep(Duration::from_millis(kill_delete)).await;
        server.kill9()?;
        server.restart()?;
        let client = server.client().await?;
        let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let gone = clusters.get_opt(&name).await?.is_none();
            let ms = machines(&client).await?;
            let vms: usize = agents.iter().map(|a| a.live_vms().len()).sum();
            if gone && ms.is_empty() && vms == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "round {round}: after delete: cluster gone {gone}, machines {:?}, {vms} VMs\n{}",
                    names(&ms),
                    log_tail(&server)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!("round {round}: killed at {kill_create} ms into create and {kill_delete} ms into delete; converged");
    }
    Ok(())
}
