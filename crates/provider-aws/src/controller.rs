//! The AWS cluster controller: for each Cluster with provider `aws`, it reconciles
//! the layers in order (Network, Iam, Bastion, ControlPlane, LoadBalancers,
//! Workers, DNS), each with a condition that carries the AWS error blocking it;
//! on deletion, behind its finalizer, it removes everything, sweeps by tag until
//! nothing is left, and records an Event listing what it deleted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use shoal_api::resources::organization::{namespace_org, org_namespace};
use shoal_api::wellknown::finalizer::AWS as AWS_FINALIZER;
use shoal_api::{
    AwsProviderSpec, AwsStatus, Cluster, ClusterPhase, ClusterStatus, NodePool, Organization,
    ProviderType, Release,
};
use shoal_kube::conditions;
use shoal_kube::finalizer::{self, Change};
use tokio::sync::Mutex;

use crate::clients::{AwsSettings, Clients};
use crate::error::{kube_err, Error};
use crate::names::ClusterId;
use crate::security::Ports;
use crate::tagging::Scope;
use crate::{
    access, balancers, dns, iam, instances, layout, network, preflight, security, teardown,
    userdata, workers,
};

/// The instance type when the spec names none.
pub const DEFAULT_INSTANCE_TYPE: &str = "m6i.large";
/// The bastions' instance type.
pub const BASTION_INSTANCE_TYPE: &str = "t3.micro";
/// The guest API server's port on control-plane nodes.
pub const API_PORT: u16 = 6443;
/// How often a Ready cluster is checked against AWS when nothing changed here.
pub const RESYNC: Duration = Duration::from_secs(120);
/// How soon a pass follows one that found worker nodes being replaced.
pub const ROLL_PASS: Duration = Duration::from_secs(10);
/// The layers, in the order they are built; each is a condition type.
pub const LAYERS: [&str; 7] = [
    "Network",
    "Iam",
    "Bastion",
    "ControlPlane",
    "LoadBalancers",
    "Workers",
    "DNS",
];

/// Clients are shared by the clusters of one region and identity (role, Secret version).
type ClientsKey = (String, (Option<String>, Option<String>));

/// What the controller shares between reconciles.
pub struct Context {
    client: Client,
    settings: AwsSettings,
    recorder: Recorder,
    clients: Mutex<HashMap<ClientsKey, Clients>>,
    /// Per cluster: what its last full pass that ended Ready saw, and when.
    passes: Mutex<HashMap<String, (Fingerprint, std::time::Instant)>>,
}

/// What a pass depends on in the management API: the cluster's generation, its
/// pools' sizes and its Release. A Ready cluster whose fingerprint is unchanged is not described
/// again before [`RESYNC`]: its own status writes wake the controller, and would
/// otherwise cost a full pass of AWS calls each.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint {
    generation: Option<i64>,
    pools: Vec<(String, u32, Option<u32>, Option<u32>)>,
    /// The Release's resourceVersion: a new AMI makes new launch template versions.
    release: Option<String>,
}

impl Context {
    /// A context for `client` with `settings`.
    pub fn new(client: Client, settings: AwsSettings) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), Reporter::from("shoal-provider-aws")),
            client,
            settings,
            clients: Mutex::new(HashMap::new()),
            passes: Mutex::new(HashMap::new()),
        }
    }

    /// The clients of `cluster`, in its region with its identity ([`access`]).
    async fn clients(&self, cluster: &Cluster, spec: &AwsProviderSpec) -> Result<Clients, Error> {
        let access = access::resolve(&self.client, cluster, spec).await?;
        let key = (spec.region.clone(), access.cache_key());
        let mut cache = self.clients.lock().await;
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let c = Clients::new(&self.settings, &spec.region, &access).await;
        cache.insert(key, c.clone());
        Ok(c)
    }
}

/// Runs the controller until `stop` resolves.
pub async fn run(
    client: Client,
    settings: AwsSettings,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let ctx = Arc::new(Context::new(client.clone(), settings));
    // The controller wants a shutdown signal it can share between threads.
    let (stopped, on_stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        stop.await;
        let _ = stopped.send(());
    });
    let clusters: Api<Cluster> = Api::all(client.clone());
    let pools: Api<NodePool> = Api::all(client.clone());
    let orgs: Api<Organization> = Api::all(client.clone());
    let releases: Api<Release> = Api::all(client);
    let controller = Controller::new(clusters, watcher::Config::default());
    let known = controller.store();
    let in_org = known.clone();
    controller
        .watches(pools, watcher::Config::default(), |p: NodePool| {
            let ns = p.namespace()?;
            Some(ObjectRef::<Cluster>::new(&p.spec.cluster).within(&ns))
        })
        // An organization's AWS access is its clusters' default: a change retries
        // them at once (a refused cluster need not wait for its next attempt).
        .watches(orgs, watcher::Config::default(), move |o: Organization| {
            let ns = org_namespace(&o.name_any());
            aws_clusters(&in_org, |c| c.namespace().as_deref() == Some(ns.as_str()))
        })
        // A Release's new AMI reaches its clusters' launch templates at once.
        .watches(releases, watcher::Config::default(), move |r: Release| {
            let name = r.name_any();
            aws_clusters(&known, |c| c.spec.release == name)
        })
        .graceful_shutdown_on(async move {
            let _ = on_stop.await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// The AWS clusters of the controller's cache that `pick` selects.
fn aws_clusters(
    known: &kube::runtime::reflector::Store<Cluster>,
    pick: impl Fn(&Cluster) -> bool,
) -> Vec<ObjectRef<Cluster>> {
    known
        .state()
        .iter()
        .filter(|c| c.spec.provider.type_ == ProviderType::Aws && pick(c))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

fn error_policy(cluster: Arc<Cluster>, err: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), error = %shoal_kube::chain(err), "AWS reconcile failed; retrying in 15 s");
    Action::requeue(Duration::from_secs(15))
}

fn ready_now(cluster: &Cluster) -> bool {
    cluster.status.as_ref().and_then(|s| s.phase) == Some(ClusterPhase::Ready)
}

fn id_of(cluster: &Cluster) -> ClusterId {
    let ns = cluster.namespace().unwrap_or_default();
    ClusterId {
        org: namespace_org(&ns).unwrap_or(&ns).to_owned(),
        cluster: cluster.name_any(),
    }
}

/// Reconciles one Cluster.
pub async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (ProviderType::Aws, Some(spec)) = (
        cluster.spec.provider.type_,
        cluster.spec.provider.aws.as_ref(),
    ) else {
        return Ok(Action::await_change());
    };
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let api: Api<Cluster> = Api::namespaced(ctx.client.clone(), &ns);
    if cluster.metadata.deletion_timestamp.is_some() {
        return delete(&cluster, spec, &ctx, &api).await;
    }
    match finalizer::add(&api, cluster.as_ref(), AWS_FINALIZER)
        .await
        .map_err(kube_err(format!(
            "add the AWS finalizer to cluster {ns}/{name}"
        )))? {
        Change::Unchanged => {}
        Change::Done | Change::Gone => return Ok(Action::await_change()),
        Change::Conflict => return Ok(Action::requeue(Duration::from_millis(200))),
    }
    let pools = pools_of(&ctx, &cluster).await?;
    let release = Api::<Release>::all(ctx.client.clone())
        .get_opt(&cluster.spec.release)
        .await
        .map_err(kube_err("read the cluster's Release"))?;
    let fingerprint = Fingerprint {
        release: release.as_ref().and_then(|r| r.resource_version()),
        generation: cluster.metadata.generation,
        pools: pools
            .iter()
            .map(|p| {
                (
                    p.name_any(),
                    p.spec.replicas,
                    p.spec.min_replicas,
                    p.spec.max_replicas,
                )
            })
            .collect(),
    };
    let key = format!("{ns}/{name}");
    if let Some((seen, at)) = ctx.passes.lock().await.get(&key) {
        if *seen == fingerprint && at.elapsed() < RESYNC && ready_now(&cluster) {
            return Ok(Action::requeue(RESYNC - at.elapsed()));
        }
    }
    let mut s = Scope::new(id_of(&cluster));
    let mut status = cluster.status.clone().unwrap_or_default();
    let domain = spec.base_domain(&ctx.settings.base_domain).to_owned();
    let outcome = match ctx.clients(&cluster, spec).await {
        Ok(c) => build(&c, &mut s, &cluster, release.as_ref(), &ctx, &domain).await,
        Err(e) => Err(("Network", e)),
    };
    let mut aws = AwsStatus {
        resources: s.resources.clone(),
        ..status.aws.clone().unwrap_or_default()
    };
    let failed_layer = match &outcome {
        Ok(built) => {
            aws.vpc_id = Some(built.vpc.clone());
            aws.availability_zones = built.zones.clone();
            aws.api_load_balancer = Some(built.api_dns.clone());
            aws.ingress_load_balancer = Some(built.ingress_dns.clone());
            None
        }
        Err((layer, _)) => Some(*layer),
    };
    for (i, layer) in LAYERS.iter().enumerate() {
        let failed_at = failed_layer.and_then(|f| LAYERS.iter().position(|l| *l == f));
        let cond = match (failed_at, &outcome) {
            (Some(f), Err((_, e))) if f == i => {
                let reason = match e {
                    Error::Waiting(_) => "Waiting",
                    Error::Spec(_) => "InvalidSpec",
                    Error::Aws(a) => a.code.as_deref().unwrap_or("AwsUnreachable"),
                    _ => "Failed",
                };
                conditions::condition(
                    layer,
                    false,
                    &reason.replace(['.', ':'], ""),
                    shoal_kube::chain(e),
                )
            }
            (Some(f), _) if i > f => conditions::condition(
                layer,
                false,
                "WaitingForLayer",
                format!("waits for the {} layer", LAYERS[f]),
            ),
            _ => conditions::condition(layer, true, "Ready", format!("{layer} is in place")),
        };
        conditions::set(&mut status.conditions, cond);
    }
    // A roll keeps the cluster usable: the Workers layer says what it is doing,
    // and the next pass comes soon instead of at the resync.
    let rolling = match &outcome {
        Ok(built) if !built.rolling.is_empty() => {
            conditions::set(
                &mut status.conditions,
                conditions::condition("Workers", false, "Rolling", built.rolling.join("; ")),
            );
            true
        }
        _ => false,
    };
    let ready = outcome.is_ok();
    status.phase = Some(if ready {
        ClusterPhase::Ready
    } else {
        ClusterPhase::Provisioning
    });
    status.api_endpoint = Some(format!("https://{}", s.id.api_name(&domain)));
    let workers: u32 = pools_of(&ctx, &cluster)
        .await?
        .iter()
        .map(|p| p.spec.replicas)
        .sum();
    status.desired_nodes = Some(u32::from(cluster.spec.control_plane.replicas) + workers);
    status.observed_generation = cluster.metadata.generation;
    status.aws = Some(aws);
    write_status(&ctx, &cluster, status).await?;
    let mut passes = ctx.passes.lock().await;
    if ready && !rolling {
        passes.insert(key, (fingerprint, std::time::Instant::now()));
    } else {
        passes.remove(&key);
    }
    drop(passes);
    match outcome {
        Ok(_) if rolling => Ok(Action::requeue(ROLL_PASS)),
        Ok(_) => Ok(Action::requeue(RESYNC)),
        Err((_, Error::Waiting(_))) => Ok(Action::requeue(Duration::from_secs(5))),
        Err((_, Error::Kube { what, source })) => Err(Error::Kube { what, source }),
        Err(_) => Ok(Action::requeue(Duration::from_secs(30))),
    }
}

/// What a full pass built.
struct Built {
    vpc: String,
    zones: Vec<String>,
    api_dns: String,
    ingress_dns: String,
    /// Worker groups whose nodes are being replaced, with what is happening.
    rolling: Vec<String>,
}

async fn pools_of(ctx: &Context, cluster: &Cluster) -> Result<Vec<NodePool>, Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let api: Api<NodePool> = Api::namespaced(ctx.client.clone(), &ns);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(kube_err(format!("list the node pools of {ns}")))?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.spec.cluster == cluster.name_any() && p.metadata.deletion_timestamp.is_none())
        .collect())
}

async fn build(
    c: &Clients,
    s: &mut Scope,
    cluster: &Cluster,
    release: Option<&Release>,
    ctx: &Context,
    domain: &str,
) -> Result<Built, (&'static str, Error)> {
    let Some(spec) = cluster.spec.provider.aws.as_ref() else {
        return Err((
            "Network",
            Error::Spec("spec.provider.aws is missing".into()),
        ));
    };
    let at = |layer: &'static str| move |e: Error| (layer, e);
    let ports = Ports {
        api: API_PORT,
        ingress_http: cluster.spec.ingress.http_port,
        ingress_https: cluster.spec.ingress.https_port,
    };
    let cp_type = spec
        .control_plane_instance_type
        .clone()
        .unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.to_owned());
    let worker_type = spec
        .worker_instance_type
        .clone()
        .unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.to_owned());
    // The network first: a cluster still waiting for its IPAM network costs no
    // AWS call.
    let allocated = cluster
        .status
        .as_ref()
        .and_then(|st| st.node_cidr.as_deref());
    let vpc_cidr = match layout::vpc_cidr(spec, allocated) {
        Ok(cidr) => cidr,
        Err(e @ layout::LayoutError::Unallocated) => {
            return Err(("Network", Error::Waiting(e.to_string())))
        }
        Err(e) => return Err(("Network", Error::Spec(e.to_string()))),
    };
    layout::check_overlap(&vpc_cidr, &cluster.spec.network)
        .map_err(|e| ("Network", Error::Spec(e.to_string())))?;
    let zones = preflight::check(c, spec, &[&cp_type, &worker_type, BASTION_INSTANCE_TYPE])
        .await
        .map_err(at("Network"))?;
    let net = network::ensure(c, s, &vpc_cidr, &zones)
        .await
        .map_err(at("Network"))?;
    let groups = security::ensure(c, s, &net.vpc, ports)
        .await
        .map_err(at("Network"))?;
    iam::ensure(c, s).await.map_err(at("Iam"))?;

    let release = release
        .ok_or_else(|| {
            Error::Spec(format!(
                "Release {} does not exist: fix spec.release",
                cluster.spec.release
            ))
        })
        .map_err(at("Bastion"))?;
    let image = release
        .spec
        .image
        .amis
        .get(&spec.region)
        .cloned()
        .ok_or_else(|| {
            Error::Spec(format!(
                "Release {} has no AMI for {}: add spec.image.amis.{} to it, or pick a Release that has one",
                cluster.spec.release, spec.region, spec.region
            ))
        })
        .map_err(at("Bastion"))?;
    let live = instances::live(c, s).await.map_err(at("Bastion"))?;
    for z in &net.zones {
        instances::ensure(
            c,
            s,
            &live,
            instances::Launch {
                role: "bastion",
                key: instances::zone_key(&z.zone),
                image: &image,
                instance_type: BASTION_INSTANCE_TYPE,
                subnet: &z.public_subnet,
                group: &groups.bastion,
                profile: &s.id.iam("bastion"),
                address: None,
                public: true,
                user_data: None,
            },
        )
        .await
        .map_err(at("Bastion"))?;
    }

    let ns = cluster.namespace().unwrap_or_default();
    let secrets = userdata::load(&ctx.client, &ns, &cluster.name_any())
        .await
        .map_err(at("ControlPlane"))?
        .ok_or_else(|| {
            Error::Waiting("waiting for the cluster controller to make the cluster's PKI".into())
        })
        .map_err(at("ControlPlane"))?;
    let common = userdata::NodeCommon {
        id: &s.id.clone(),
        spec: &cluster.spec,
        base_domain: domain,
        kubernetes_version: &release.spec.kubernetes_version,
        api_port: API_PORT,
    };
    let mut control_planes = Vec::new();
    for slot in 0..u32::from(cluster.spec.control_plane.replicas) {
        let z = &net.zones[slot as usize % net.zones.len()];
        let address = instances::control_plane_address(&z.private_cidr, slot)
            .ok_or_else(|| {
                Error::Spec(format!(
                    "subnet {} has no address for slot {slot}",
                    z.private_cidr
                ))
            })
            .map_err(at("ControlPlane"))?;
        let data = userdata::control_plane(&common, &secrets, slot, address)
            .map_err(at("ControlPlane"))?;
        let slot_text = slot.to_string();
        let id = instances::ensure(
            c,
            s,
            &live,
            instances::Launch {
                role: "control-plane",
                key: instances::slot_key(&slot_text),
                image: &image,
                instance_type: &cp_type,
                subnet: &z.private_subnet,
                group: &groups.control_plane,
                profile: &s.id.iam("control-plane"),
                address: Some(address),
                public: false,
                user_data: Some(data),
            },
        )
        .await
        .map_err(at("ControlPlane"))?;
        control_planes.push(id);
    }

    let public: Vec<String> = net.zones.iter().map(|z| z.public_subnet.clone()).collect();
    let lbs = balancers::ensure(c, s, &net.vpc, &public, &control_planes, ports)
        .await
        .map_err(at("LoadBalancers"))?;

    let pools = pools_of(ctx, cluster).await.map_err(at("Workers"))?;
    let private: Vec<String> = net.zones.iter().map(|z| z.private_subnet.clone()).collect();
    let shared = workers::Shared {
        image: &image,
        instance_type: &worker_type,
        group: &groups.worker,
        profile: &s.id.iam("worker"),
        subnets: &private,
        target_groups: &lbs.ingress_groups,
    };
    let existing = workers::existing(c, s, &live)
        .await
        .map_err(at("Workers"))?;
    let mut names = Vec::new();
    let mut rolling = Vec::new();
    for pool in &pools {
        let pool_name = pool.name_any();
        let data = userdata::workers(&common, &secrets, &pool_name).map_err(at("Workers"))?;
        rolling.extend(
            workers::ensure(c, s, &existing, pool, &pool_name, &data, &shared)
                .await
                .map_err(at("Workers"))?,
        );
        names.push(pool_name);
    }
    for gone in workers::prune(c, s, &existing, &names)
        .await
        .map_err(at("Workers"))?
    {
        tracing::info!(group = %gone, "deleted the Auto Scaling Group of a removed node pool");
    }

    if let Some(zone) = &spec.hosted_zone {
        let zone = dns::zone_id(c, zone).await.map_err(at("DNS"))?;
        let records = dns::records(s, domain, &lbs.api_dns, &lbs.ingress_dns);
        dns::ensure(c, s, &zone, &records)
            .await
            .map_err(at("DNS"))?;
    }
    Ok(Built {
        vpc: net.vpc,
        zones: net.zones.iter().map(|z| z.zone.clone()).collect(),
        api_dns: lbs.api_dns,
        ingress_dns: lbs.ingress_dns,
        rolling,
    })
}

async fn delete(
    cluster: &Cluster,
    spec: &AwsProviderSpec,
    ctx: &Context,
    api: &Api<Cluster>,
) -> Result<Action, Error> {
    if !finalizer::has(cluster, AWS_FINALIZER) {
        return Ok(Action::await_change());
    }
    let (c, mut outcome) = match ctx.clients(cluster, spec).await {
        Ok(c) => (Some(c), Ok(())),
        Err(e) => (None, Err(e)),
    };
    let mut s = Scope::new(id_of(cluster));
    let domain = spec.base_domain(&ctx.settings.base_domain).to_owned();
    let mut status = cluster.status.clone().unwrap_or_default();
    status.phase = Some(ClusterPhase::Deleting);
    let mut deleted: Vec<shoal_api::AwsResource> = status
        .removed
        .as_ref()
        .map(|r| r.aws.clone())
        .unwrap_or_default();
    if let (Some(c), Some(zone)) = (&c, &spec.hosted_zone) {
        outcome = async {
            // A zone that does not exist holds none of the cluster's records.
            let zone = match dns::zone_id(c, zone).await {
                Err(Error::Spec(_)) => return Ok(()),
                other => other?,
            };
            for name in dns::delete(c, &s, &zone, &domain).await? {
                s.record("dns-record", &name, "deleted");
            }
            Ok::<_, Error>(())
        }
        .await;
    }
    if let (Some(c), true) = (&c, outcome.is_ok()) {
        outcome = teardown::pass(c, &mut s).await;
    }
    for r in s.resources.drain(..) {
        if !deleted.iter().any(|d| d.kind == r.kind && d.id == r.id) {
            deleted.push(r);
        }
    }
    let left = match (&outcome, &c) {
        (Ok(()), Some(c)) => teardown::leftovers(c, &s).await?,
        _ => Vec::new(),
    };
    let message = match (&outcome, left.is_empty()) {
        (Err(e), _) => shoal_kube::chain(e),
        (Ok(()), false) => format!(
            "still there, retrying: {}",
            left.iter()
                .map(|r| format!("{} {}", r.kind, r.id))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (Ok(()), true) => format!("{} AWS resources deleted", deleted.len()),
    };
    let done = outcome.is_ok() && left.is_empty();
    conditions::set(
        &mut status.conditions,
        conditions::condition(
            "Deleted",
            done,
            if done { "Deleted" } else { "Deleting" },
            message.clone(),
        ),
    );
    let mut removed = status.removed.clone().unwrap_or_default();
    removed.aws = deleted.clone();
    status.removed = Some(removed);
    write_status(ctx, cluster, status).await?;
    if !done {
        if let Err(Error::Kube { what, source }) = outcome {
            return Err(Error::Kube { what, source });
        }
        return Ok(Action::requeue(Duration::from_secs(3)));
    }
    let note = deleted
        .iter()
        .map(|r| format!("{} {}", r.kind, r.id))
        .collect::<Vec<_>>()
        .join(", ");
    shoal_kube::events::record(
        &ctx.recorder,
        cluster,
        false,
        "AwsResourcesDeleted",
        format!("deleted {} AWS resources: {note}", deleted.len()),
    )
    .await;
    finalizer::remove(api, cluster, AWS_FINALIZER)
        .await
        .map_err(kube_err(format!(
            "remove the AWS finalizer of cluster {}",
            cluster.name_any()
        )))?;
    Ok(Action::await_change())
}

async fn write_status(ctx: &Context, cluster: &Cluster, next: ClusterStatus) -> Result<(), Error> {
    if cluster.status.as_ref() == Some(&next) {
        return Ok(());
    }
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let was_ready = cluster.status.as_ref().and_then(|s| s.phase) == Some(ClusterPhase::Ready);
    let now_ready = next.phase == Some(ClusterPhase::Ready);
    Api::<Cluster>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": next })),
        )
        .await
        .map_err(kube_err(format!("write the status of cluster {ns}/{name}")))?;
    if now_ready && !was_ready {
        let count = next
            .aws
            .as_ref()
            .map(|a| a.resources.len())
            .unwrap_or_default();
        shoal_kube::events::record(
            &ctx.recorder,
            cluster,
            false,
            "Ready",
            format!("{count} AWS resources in place"),
        )
        .await;
    }
    Ok(())
}
