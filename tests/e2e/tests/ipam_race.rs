//! IPAM under a race: two allocators (as two controller replicas would have), each
//! with its own cursor and a stale cache that knows of no claim, claim slots for
//! 40 clusters at once against one real server. Every slot is handed out once.

use std::collections::BTreeSet;

use anyhow::Result;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use shoal_controllers::ipam::{slot_of_claim, Ipam, IpamConfig, Owner};
use shoal_e2e::ServerProc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_allocators_never_share_a_slot() -> Result<()> {
    let server = ServerProc::start_with(&["--controllers=false"])?;
    let client = server.client().await?;
    let config = IpamConfig::default();
    let a = Ipam::new(client.clone(), config.clone());
    let b = Ipam::new(client.clone(), config.clone());
    let uids: Vec<String> = (0..40).map(|i| format!("uid-{i}")).collect();
    let names: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let ipam = if i % 2 == 0 { &a } else { &b };
        let owner = Owner {
            namespace: "org-race",
            name: &names[i],
            uid: &uids[i],
        };
        // A stale cache: every slot looks free, so both start at slot 0.
        tasks.push(ipam.claim(owner, |_| false));
    }
    let allocations = futures::future::try_join_all(tasks).await?;
    let slots: BTreeSet<u32> = allocations.iter().map(|a| a.slot).collect();
    assert_eq!(
        slots.len(),
        40,
        "a slot was handed out twice: {allocations:?}"
    );
    let cidrs: BTreeSet<&str> = allocations.iter().map(|a| a.node_cidr.as_str()).collect();
    assert_eq!(cidrs.len(), 40);
    // The API holds exactly one claim per allocation, naming its owner.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "shoal-system");
    let claims: Vec<Lease> = leases
        .list(&ListParams::default().labels("shoal.io/ipam-owner"))
        .await?
        .items;
    assert_eq!(claims.len(), 40);
    let claimed: BTreeSet<u32> = claims
        .iter()
        .filter_map(|l| slot_of_claim(&l.name_any()))
        .collect();
    assert_eq!(claimed, slots);
    // Released slots are free again; releasing twice is not an error.
    a.release(allocations[0].slot).await?;
    b.release(allocations[0].slot).await?;
    let again = b
        .claim(
            Owner {
                namespace: "org-race",
                name: "late",
                uid: "uid-late",
            },
            |s| s != allocations[0].slot,
        )
        .await?;
    assert_eq!(again.slot, allocations[0].slot);
    Ok(())
}
