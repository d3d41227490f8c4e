//! The cluster controller: checks the release, allocates the network, creates the
//! PKI and the control-plane Machines (rolling them one at a time when the release
//! changes), keeps the status, and removes everything on delete.

pub mod delete;
pub mod guest;
pub mod nodes;
pub mod pki;
pub mod probe;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;
use shoal_api::resources::common::MachineRole;
use shoal_api::{BootstrapFormat, Cluster, ProviderType};
use shoal_kube::delete_ignoring_missing;
use shoal_kube::finalizer::{self, Change};

use crate::context::Context;
use crate::error::{failed, Error};
use crate::ipam::{Owner, PoolKind};
use crate::labels::{CLUSTER_FINALIZER, SYSTEM_NAMESPACE};
use crate::machines::{self, member, NewMachine};
use crate::rollout;

/// The name prefix of a cluster's control-plane Machines.
pub fn control_plane_prefix(cluster: &str) -> String {
    format!("{cluster}-cp")
}

/// Reconciles one Cluster.
pub async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    if cluster.metadata.deletion_timestamp.is_some() {
        return delete::finalize(&cluster, &ctx).await;
    }
    let api: Api<Cluster> = Api::namespaced(ctx.client.clone(), &ns);
    match finalizer::add(&api, cluster.as_ref(), CLUSTER_FINALIZER)
        .await
        .map_err(failed(format!("add the finalizer to cluster {ns}/{name}")))?
    {
        Change::Unchanged => {}
        // The change comes back through the watch.
        Change::Done | Change::Gone => return Ok(Action::await_change()),
        // Someone wrote the cluster meanwhile: look again at the new version.
        Change::Conflict => return Ok(Action::requeue(Duration::from_millis(200))),
    }
    if cluster.spec.provider.type_ == ProviderType::Aws {
        // Every cluster's PKI and network are made here; the AWS provider's
        // controller renders its nodes' user-data from the PKI, builds its VPC on
        // the network, and owns everything else, status included.
        let Some(cluster) = ensure_vpc_network(&ctx, cluster).await? else {
            return Ok(Action::await_change());
        };
        pki::cached(&ctx, &cluster).await?;
        return Ok(Action::await_change());
    }

    let releases = ctx.stores.releases.state();
    let (release_cond, release) = crate::release::check(
        &cluster.spec.release,
        &releases,
        cluster.status.as_ref().is_some_and(|s| s.vni.is_some()),
    );
    let machines = ctx.stores.cluster_machines(&ns, &name);
    let pools = ctx.stores.cluster_pools(&ns, &name);
    let Some(release) = release else {
        let mut next = status::compute(
            &cluster,
            release_cond,
            &machines,
            &pools,
            &ctx.config.base_domain,
        );
        next.gateway_address = ctx.config.gateway_public_address.clone();
        write_status(&ctx, &cluster, next).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };

    // The network: a VNI and a node CIDR.
    let Some(cluster) = ensure_network(&ctx, cluster).await? else {
        return Ok(Action::await_change());
    };
    let secrets = pki::cached(&ctx, &cluster).await?;

    // The control plane.
    let prefix = control_plane_prefix(&name);
    let mut cp: Vec<_> = machines
        .iter()
        .filter(|m| m.spec.role == MachineRole::ControlPlane)
        .map(|m| member(m, &release.name_any(), &prefix))
        .collect();
    cp.extend(machines::pending_members(&ctx, &ns, &name, &prefix, &machines).await);
    let desired = u32::from(cluster.spec.control_plane.replicas);
    let steps = rollout::plan(&cp, desired, true);
    machines::apply_plan(&ctx, &ns, steps, || {
        Ok(NewMachine {
            cluster: &cluster,
            release: &release,
            role: MachineRole::ControlPlane,
            pool: None,
            size: cluster.spec.control_plane.size(),
            prefix: prefix.clone(),
            owner: machines::owner_of(cluster.as_ref())
                .ok_or_else(|| Error::NotReady(format!("cluster {ns}/{name} has no uid yet")))?,
        })
    })
    .await?;

    let mut next = status::compute(
        &cluster,
        release_cond,
        &machines,
        &pools,
        &ctx.config.base_domain,
    );
    next.ca_certificate = Some(secrets.pki.ca().cert_pem().to_owned());
    next.gateway_address = ctx.config.gateway_public_address.clone();
    if next.phase == Some(shoal_api::ClusterPhase::Ready) {
        if let Some(gateway) = ctx.config.gateway_address {
            let api = status::api_host(&cluster, &ctx.config.base_domain);
            if let Err(why) = probe::readyz(gateway, &api, secrets.pki.ca().cert_pem()).await {
                status::not_answering(&mut next, &api, &shoal_kube::chain(&why));
            } else if release.spec.bootstrap == BootstrapFormat::Kubeadm {
                nodes::check(&ctx, gateway, &api, &secrets.pki, &machines, &mut next).await?;
            }
        }
    }
    let ready = next.phase == Some(shoal_api::ClusterPhase::Ready);
    write_status(&ctx, &cluster, next).await?;
    // Machine and NodePool changes wake this cluster at once, but its cache of
    // Machines may see a change a moment after the wake-up: look again soon while
    // the cluster converges, and now and then once it is Ready.
    Ok(Action::requeue(Duration::from_secs(if ready {
        60
    } else {
        10
    })))
}

/// Deletes one Machine (its agent stops the VM first).
pub async fn delete_machine(ctx: &Context, ns: &str, name: &str) -> Result<(), Error> {
    let api: Api<shoal_api::Machine> = Api::namespaced(ctx.client.clone(), ns);
    if delete_ignoring_missing(&api, name)
        .await
        .map_err(failed(format!("delete machine {ns}/{name}")))?
    {
        tracing::info!(machine = %format!("{ns}/{name}"), "deleted machine");
    }
    Ok(())
}

/// Makes sure the cluster has its VNI and node CIDR in its status; returns the
/// cluster as updated, or `None` when the change has to come back through the watch.
async fn ensure_network(
    ctx: &Context,
    cluster: Arc<Cluster>,
) -> Result<Option<Arc<Cluster>>, Error> {
    let has = cluster
        .status
        .as_ref()
        .is_some_and(|s| s.vni.is_some() && s.node_cidr.is_some());
    if has {
        return Ok(Some(cluster));
    }
    let alloc = ctx
        .ipam
        .config()
        .allocation(slot_of(ctx, &cluster, PoolKind::Nodes).await?);
    record_network(
        ctx,
        &cluster,
        json!({"vni": alloc.vni, "nodeCidr": alloc.node_cidr}),
        format!("VNI {} and node network {}", alloc.vni, alloc.node_cidr),
    )
    .await
}

/// Makes sure an AWS cluster whose spec names no `vpcCidr` has its VPC network,
/// from the VPC pool, in `status.nodeCidr`; returns the cluster as updated, or
/// `None` when the change has to come back through the watch.
async fn ensure_vpc_network(
    ctx: &Context,
    cluster: Arc<Cluster>,
) -> Result<Option<Arc<Cluster>>, Error> {
    let named = cluster
        .spec
        .provider
        .aws
        .as_ref()
        .is_some_and(|a| a.vpc_cidr.is_some());
    let has = cluster
        .status
        .as_ref()
        .is_some_and(|s| s.node_cidr.is_some());
    if named || has {
        return Ok(Some(cluster));
    }
    let slot = slot_of(ctx, &cluster, PoolKind::Vpcs).await?;
    let cidr = ctx.vpcs.pool().cidr(slot);
    record_network(
        ctx,
        &cluster,
        json!({ "nodeCidr": cidr }),
        format!("VPC network {cidr}"),
    )
    .await
}

/// The cluster's slot of pool `kind`: its own claim, from a run that crashed
/// before writing the status, else a new one.
async fn slot_of(ctx: &Context, cluster: &Cluster, kind: PoolKind) -> Result<u32, Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let uid = cluster.uid().unwrap_or_default();
    let mine = ctx
        .stores
        .indexes
        .claims_by_owner
        .refs(&uid)
        .iter()
        .find_map(|claim| kind.slot_of(&claim.name));
    if let Some(slot) = mine {
        return Ok(slot);
    }
    let leases = &ctx.stores.leases;
    let claimed = |slot: u32| {
        let claim = ObjectRef::new(&kind.claim_name(slot)).within(SYSTEM_NAMESPACE);
        leases.get(&claim).is_some()
    };
    let owner = Owner {
        namespace: &ns,
        name: &name,
        uid: &uid,
    };
    Ok(match kind {
        PoolKind::Nodes => ctx.ipam.claim(owner, claimed).await?.slot,
        PoolKind::Vpcs => ctx.vpcs.claim(owner, claimed).await?,
    })
}

/// Writes an allocated network into the cluster's status (only over the version
/// it was allocated for) and says so in an Event.
async fn record_network(
    ctx: &Context,
    cluster: &Arc<Cluster>,
    status: serde_json::Value,
    what: String,
) -> Result<Option<Arc<Cluster>>, Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let patch = json!({
        "metadata": {"resourceVersion": cluster.resource_version()},
        "status": status,
    });
    let api: Api<Cluster> = Api::namespaced(ctx.client.clone(), &ns);
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(updated) => {
            tracing::info!(cluster = %format!("{ns}/{name}"), network = %what, "allocated the network");
            ctx.event(cluster.as_ref(), false, "NetworkAllocated", what)
                .await;
            Ok(Some(Arc::new(updated)))
        }
        Err(e) if crate::error::is_conflict(&e) => Ok(None),
        Err(e) => Err(failed(format!("record the network of cluster {ns}/{name}"))(e)),
    }
}

/// Writes the status when it says something new.
async fn write_status(
    ctx: &Context,
    cluster: &Cluster,
    next: shoal_api::ClusterStatus,
) -> Result<(), Error> {
    if !status::changed(cluster.status.as_ref(), &next) {
        return Ok(());
    }
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let was_ready =
        cluster.status.as_ref().and_then(|s| s.phase) == Some(shoal_api::ClusterPhase::Ready);
    let now_ready = next.phase == Some(shoal_api::ClusterPhase::Ready);
    let patch = json!({ "status": next });
    Api::<Cluster>::namespaced(ctx.client.clone(), &ns)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(failed(format!("write the status of cluster {ns}/{name}")))?;
    if now_ready && !was_ready {
        ctx.event(
            cluster,
            false,
            "Ready",
            format!("{} nodes Ready", next.nodes.unwrap_or_default()),
        )
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::json;
    use shoal_api::{Release, ReleaseSpec, ReleaseState};

    use super::*;
    use crate::fake_api::{self, path, State};
    use crate::labels::{pki_secret_name, CLUSTER, ROLE, SYSTEM_NAMESPACE};

    fn held(allocated: bool) -> Cluster {
        let mut c = fake_api::cluster(allocated);
        c.metadata.finalizers = Some(vec![CLUSTER_FINALIZER.to_owned()]);
        c
    }

    fn release(name: &str) -> Release {
        Release::new(
            name,
            ReleaseSpec {
                kubernetes_version: "1.31.2".into(),
                state: ReleaseState::Active,
                bootstrap: BootstrapFormat::TestImage,
                ..Default::default()
            },
        )
    }

    #[tokio::test]
    async fn a_new_cluster_first_gets_its_finalizer_and_nothing_else() {
        let (ctx, api) = fake_api::context(State {
            clusters: vec![fake_api::cluster(false)],
            releases: vec![release("test")],
            ..Default::default()
        });
        api.put(&path("clusters", "org-x", "a"), &fake_api::cluster(false));

        let action = reconcile(Arc::new(fake_api::cluster(false)), ctx)
            .await
            .expect("reconciles");

        let calls = api.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].method, Method::PATCH);
        assert_eq!(
            calls[0].body["metadata"]["finalizers"],
            json!([CLUSTER_FINALIZER])
        );
        assert_eq!(
            calls[0].body["metadata"]["resourceVersion"], "5",
            "guarded by the version read, so no other finalizer is lost"
        );
        assert_eq!(action, Action::await_change());
    }

    fn claim(slot: u32, owner_uid: &str) -> k8s_openapi::api::coordination::v1::Lease {
        serde_json::from_value(json!({
            "metadata": {"name": crate::ipam::claim_name(slot), "namespace": SYSTEM_NAMESPACE,
                         "labels": {crate::labels::IPAM_OWNER: owner_uid}},
        }))
        .expect("a valid Lease")
    }

    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/shoal-system/leases";

    #[tokio::test]
    async fn a_claim_of_its_own_is_found_through_the_index_and_not_claimed_again() {
        let c = held(false);
        let (ctx, api) = fake_api::context(State {
            clusters: vec![c.clone()],
            releases: vec![release("test")],
            leases: vec![claim(3, "another-uid"), claim(7, "cluster-uid")],
            ..Default::default()
        });
        api.put(&path("clusters", "org-x", "a"), &c);

        let got = ensure_network(&ctx, Arc::new(c)).await.expect("allocates");

        assert!(
            api.calls_to(&Method::POST, LEASES).is_empty(),
            "no new claim"
        );
        let status = got.and_then(|c| c.status.clone()).expect("a status");
        assert_eq!(status.vni, Some(1007));
        assert_eq!(status.node_cidr.as_deref(), Some("10.128.7.0/24"));
    }

    #[tokio::test]
    async fn a_new_claim_skips_the_slots_the_cache_holds_without_asking() {
        let c = held(false);
        let (ctx, api) = fake_api::context(State {
            clusters: vec![c.clone()],
            releases: vec![release("test")],
            leases: vec![claim(0, "another-uid"), claim(1, "a-third-uid")],
            ..Default::default()
        });
        api.put(&path("clusters", "org-x", "a"), &c);

        let got = ensure_network(&ctx, Arc::new(c)).await.expect("allocates");

        let posts = api.calls_to(&Method::POST, LEASES);
        assert_eq!(posts.len(), 1, "{posts:?}");
        assert_eq!(posts[0].body["metadata"]["name"], "ipam-2");
        let status = got.and_then(|c| c.status.clone()).expect("a status");
        assert_eq!(status.vni, Some(1002));
    }

    #[tokio::test]
    async fn a_missing_release_gives_a_condition_naming_it_and_what_to_use() {
        let mut c = held(false);
        c.spec.release = "nope".into();
        let (ctx, api) = fake_api::context(State {
            clusters: vec![c.clone()],
            releases: vec![release("test")],
            ..Default::default()
        });
        api.put(&path("clusters", "org-x", "a"), &c);

        let action = reconcile(Arc::new(c), ctx).await.expect("reconciles");

        let stored = api
            .get(&path("clusters", "org-x", "a"))
            .expect("the cluster");
        let cond = stored["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["reason"] == "ReleaseNotFound"))
            .cloned()
            .expect("a ReleaseNotFound condition");
        let msg = cond["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("nope") && msg.contains("test"),
            "names it and an alternative: {msg}"
        );
        assert!(
            api.calls_to(&Method::POST, "/").is_empty(),
            "no network, PKI or Machine"
        );
        assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    }

    #[tokio::test]
    async fn a_cluster_with_no_pki_gets_one_and_its_first_control_plane_machine() {
        let (ctx, api) = fake_api::context(State {
            clusters: vec![held(true)],
            releases: vec![release("test")],
            ..Default::default()
        });
        api.put(&path("clusters", "org-x", "a"), &held(true));

        reconcile(Arc::new(held(true)), ctx)
            .await
            .expect("reconciles");

        let pki = pki_secret_name("org-x", "a");
        let secret = api
            .get(&format!(
                "/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets/{pki}"
            ))
            .expect("the PKI Secret is created");
        assert!(secret["data"].as_object().is_some_and(|d| !d.is_empty()));
        let created = api.calls_to(
            &Method::POST,
            "/apis/shoal.io/v1alpha1/namespaces/org-x/machines",
        );
        assert_eq!(created.len(), 1, "one control-plane replica");
        let m = &created[0].body;
        assert_eq!(m["metadata"]["name"], "a-cp-0");
        assert_eq!(m["metadata"]["labels"][ROLE], "control-plane");
        assert_eq!(m["metadata"]["labels"][CLUSTER], "a");
        assert_eq!(m["metadata"]["ownerReferences"][0]["kind"], "Cluster");
        assert_eq!(m["metadata"]["ownerReferences"][0]["uid"], "cluster-uid");
        let stored = api
            .get(&path("clusters", "org-x", "a"))
            .expect("the cluster");
        assert!(
            stored["status"]["caCertificate"]
                .as_str()
                .is_some_and(|c| c.contains("BEGIN CERTIFICATE")),
            "the status publishes the new CA"
        );
    }
}
