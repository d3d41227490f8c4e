//! `shoal cluster`: create, list, describe, scale, upgrade and delete guest
//! clusters, optionally waiting for the controllers to finish.

use std::collections::BTreeSet;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use shoal_api::events::recent_events;
use shoal_api::resources::organization::org_namespace;
use shoal_api::{Cluster, ClusterPhase, Machine, NodePool, Release, RemovedResources};

use crate::args::{ClusterCommand, ClusterCreateArgs, GuestOidcArgs, ProviderArgs, WaitArgs};
use crate::client::{dynamic_api, find_kind, CliError};
use crate::commands::aws_progress::LayerProgress;
use crate::commands::cluster_view::{
    count_machines, describe, pool_done, pool_line, ready_condition, removed_report, standing,
    upgrade_done, upgrade_line, upgrade_progress, EVENTS_SHOWN,
};
use crate::commands::wait::{ClusterProgress, Deadline, LinePrinter};
use crate::output::{emit, emit_line, print};

/// The label on Machines and NodePools naming their cluster.
const CLUSTER_LABEL: &str = shoal_api::wellknown::label::CLUSTER;

/// The Cluster (on `release`) and default NodePool that `cluster create` writes;
/// `issuer_ca` is the content of `--oidc-ca-file`.
pub fn cluster_objects(
    a: &ClusterCreateArgs,
    release: &str,
    issuer_ca: Option<&str>,
) -> Vec<Value> {
    let ns = org_namespace(&a.org);
    let size = json!({"cpu": a.cpu, "memory": a.memory, "disk": a.disk});
    let mut cp = size.clone();
    cp["replicas"] = json!(a.control_plane);
    let mut spec = json!({"release": release, "controlPlane": cp});
    if let Some(oidc) = guest_oidc(&a.oidc, issuer_ca) {
        spec["oidc"] = oidc;
    }
    if let Some(provider) = provider(&a.provider) {
        spec["provider"] = provider;
    }
    vec![
        json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": a.name, "namespace": ns},
            "spec": spec,
        }),
        json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "NodePool",
            "metadata": {"name": default_pool(&a.name), "namespace": ns, "labels": {CLUSTER_LABEL: a.name}},
            "spec": {"cluster": a.name, "replicas": a.workers, "machine": size},
        }),
    ]
}

/// `spec.oidc` from the `--oidc-*` flags, when an issuer is given; the server
/// validates each field.
fn guest_oidc(o: &GuestOidcArgs, issuer_ca: Option<&str>) -> Option<Value> {
    let issuer = o.oidc_issuer_url.as_ref()?;
    let mut spec = json!({
        "issuerUrl": issuer,
        "clientId": o.oidc_client_id.clone().unwrap_or_default(),
    });
    for (key, value) in [
        ("usernameClaim", &o.oidc_username_claim),
        ("groupsClaim", &o.oidc_groups_claim),
        ("usernamePrefix", &o.oidc_username_prefix),
        ("groupsPrefix", &o.oidc_groups_prefix),
    ] {
        if let Some(v) = value {
            spec[key] = json!(v);
        }
    }
    if let Some(ca) = issuer_ca {
        spec["certificateAuthority"] = json!(ca);
    }
    Some(spec)
}

/// `spec.provider` from `--provider aws` and its flags; the server validates each.
fn provider(p: &ProviderArgs) -> Option<Value> {
    if p.provider != "aws" {
        return None;
    }
    let mut aws = json!({"region": p.region.clone().unwrap_or_default()});
    if !p.azs.is_empty() {
        aws["availabilityZones"] = json!(p.azs);
    }
    for (key, value) in [
        ("controlPlaneInstanceType", &p.instance_type),
        ("workerInstanceType", &p.instance_type),
        ("vpcCidr", &p.vpc_cidr),
        ("hostedZone", &p.hosted_zone),
        ("baseDomain", &p.dns_domain),
        ("roleArn", &p.role_arn),
        ("credentialsSecret", &p.credentials_secret),
    ] {
        if let Some(v) = value {
            aws[key] = json!(v);
        }
    }
    Some(json!({"type": "aws", "aws": aws}))
}

/// The name of the node pool `cluster create` makes.
pub fn default_pool(cluster: &str) -> String {
    format!("{cluster}-default")
}

fn cluster_selector(cluster: &str) -> ListParams {
    ListParams::default().labels(&format!("{CLUSTER_LABEL}={cluster}"))
}

/// The typed APIs of one organization's namespace.
struct OrgApis {
    org: String,
    clusters: Api<Cluster>,
    machines: Api<Machine>,
    pools: Api<NodePool>,
}

impl OrgApis {
    fn new(client: &Client, org: &str) -> Self {
        let ns = org_namespace(org);
        Self {
            org: org.to_owned(),
            clusters: Api::namespaced(client.clone(), &ns),
            machines: Api::namespaced(client.clone(), &ns),
            pools: Api::namespaced(client.clone(), &ns),
        }
    }

    /// The cluster, or an error naming it and the organization.
    async fn cluster(&self, name: &str) -> Result<Cluster, CliError> {
        self.clusters.get_opt(name).await?.ok_or_else(|| {
            CliError::Usage(format!(
                "cluster {}/{name} does not exist; see 'shoal cluster list --org {}'",
                self.org, self.org
            ))
        })
    }

    async fn cluster_machines(&self, name: &str) -> Result<Vec<Machine>, CliError> {
        Ok(self.machines.list(&cluster_selector(name)).await?.items)
    }
}

/// Runs a cluster subcommand.
pub async fn run(client: &Client, cmd: &ClusterCommand) -> Result<(), CliError> {
    match cmd {
        ClusterCommand::Create(a) => create(client, a).await,
        ClusterCommand::List { org, output } => {
            let clusters = find_kind("clusters")?;
            let ns = org.as_deref().map(org_namespace);
            let api = dynamic_api(client, clusters, ns.as_deref());
            let list = api.list(&ListParams::default()).await?;
            let items: Vec<Value> = list
                .items
                .iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect();
            print(clusters, &items, false, ns.is_none(), *output)
        }
        ClusterCommand::Get {
            name,
            org,
            output: Some(output),
        } => {
            let clusters = find_kind("clusters")?;
            let obj = dynamic_api(client, clusters, Some(&org_namespace(org)))
                .get(name)
                .await?;
            let v = serde_json::to_value(&obj).map_err(|e| CliError::Usage(e.to_string()))?;
            print(clusters, &[v], true, false, *output)
        }
        ClusterCommand::Get {
            name,
            org,
            output: None,
        } => get(client, org, name).await,
        ClusterCommand::Scale {
            name,
            org,
            workers,
            pool,
            wait,
        } => scale(client, org, name, *workers, pool.as_deref(), *wait).await,
        ClusterCommand::Upgrade {
            name,
            org,
            release,
            wait,
        } => upgrade(client, org, name, release, *wait).await,
        ClusterCommand::Delete { name, org, wait } => delete(client, org, name, *wait).await,
    }
}

/// `cluster create`: writes the Cluster and its default NodePool, then waits if asked.
/// The release `cluster create` uses: `--release`, else the newest active one,
/// said in the output so that the choice is never silent.
async fn release_for(client: &Client, a: &ClusterCreateArgs) -> Result<String, CliError> {
    if let Some(r) = &a.release {
        return Ok(r.clone());
    }
    let api: Api<Release> = Api::all(client.clone());
    let releases = api.list(&ListParams::default()).await?.items;
    let active = shoal_api::resources::release::active_newest_first(&releases);
    let Some(newest) = active.first() else {
        return Err(CliError::Usage(
            "no release is active, so none can be taken by default; ask an administrator \
             to create one, or pass --release"
                .into(),
        ));
    };
    let name = newest.name_any();
    emit_line(format_args!(
        "release {name} (Kubernetes {}) taken: the newest active release; pass --release to choose another",
        newest.spec.kubernetes_version
    ))?;
    Ok(name)
}

async fn create(client: &Client, a: &ClusterCreateArgs) -> Result<(), CliError> {
    let ns = org_namespace(&a.org);
    let issuer_ca = match &a.oidc.oidc_ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|source| CliError::File {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let release = release_for(client, a).await?;
    for obj in cluster_objects(a, &release, issuer_ca.as_deref()) {
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let api = dynamic_api(client, find_kind(&kind)?, Some(&ns));
        let dynamic = serde_json::from_value(obj).map_err(|e| CliError::Usage(e.to_string()))?;
        api.create(&PostParams::default(), &dynamic).await?;
        emit_line(format_args!(
            "{}.shoal.io/{name} created",
            kind.to_lowercase()
        ))?;
    }
    if a.wait.wait {
        if a.provider.provider == "aws" {
            wait_aws(client, &a.org, &a.name, a.wait.timeout).await?;
        } else {
            let desired = u32::from(a.control_plane) + a.workers;
            wait_ready(client, &a.org, &a.name, desired, a.wait.timeout).await?;
        }
    }
    Ok(())
}

/// Watches a cluster's Machines come up until the cluster is Ready.
async fn wait_ready(
    client: &Client,
    org: &str,
    name: &str,
    desired: u32,
    timeout: u64,
) -> Result<(), CliError> {
    let apis = OrgApis::new(client, org);
    let deadline = Deadline::after(timeout);
    let mut progress = ClusterProgress::new(desired);
    let mut last: Option<Cluster> = None;
    let result = loop {
        let step = async {
            let cluster = apis.cluster(name).await?;
            let machines = apis.cluster_machines(name).await?;
            Ok::<_, CliError>((cluster, machines))
        }
        .await;
        let (cluster, machines) = match step {
            Ok(v) => v,
            Err(e) => break Err(e),
        };
        if let Err(e) = progress.update(&count_machines(&machines, desired), Some(&cluster)) {
            break Err(e);
        }
        let ready = cluster.status.as_ref().and_then(|s| s.phase) == Some(ClusterPhase::Ready);
        last = Some(cluster);
        if ready {
            break Ok(());
        }
        if !deadline.tick().await {
            break Err(deadline.timeout(
                format!("cluster {org}/{name} to be Ready"),
                last.as_ref().map(standing).unwrap_or_default(),
            ));
        }
    };
    let finished = progress.finish();
    result?;
    finished?;
    let status = last.and_then(|c| c.status).unwrap_or_default();
    emit_line(format_args!(
        "cluster {org}/{name} is Ready: {} ({} nodes Ready)",
        status.api_endpoint.as_deref().unwrap_or("<no endpoint>"),
        status.nodes.as_deref().unwrap_or("?"),
    ))
}

/// Shows an AWS cluster's layers come up until the cluster is Ready (its
/// infrastructure is in place).
async fn wait_aws(client: &Client, org: &str, name: &str, timeout: u64) -> Result<(), CliError> {
    let apis = OrgApis::new(client, org);
    let deadline = Deadline::after(timeout);
    let mut layers = LayerProgress::default();
    let cluster = loop {
        let cluster = apis.cluster(name).await?;
        for line in layers.changes(&cluster) {
            emit_line(format_args!("{line}"))?;
        }
        if cluster.status.as_ref().and_then(|s| s.phase) == Some(ClusterPhase::Ready) {
            break cluster;
        }
        if !deadline.tick().await {
            return Err(deadline.timeout(
                format!("cluster {org}/{name} to be Ready"),
                standing(&cluster),
            ));
        }
    };
    let status = cluster.status.unwrap_or_default();
    emit_line(format_args!(
        "cluster {org}/{name} is Ready on AWS: {} (every layer is in place; `shoal cluster get` lists the resources)",
        status.api_endpoint.as_deref().unwrap_or("<no endpoint>"),
    ))
}

/// `cluster get` without `-o`: the describe view.
async fn get(client: &Client, org: &str, name: &str) -> Result<(), CliError> {
    let apis = OrgApis::new(client, org);
    let cluster = apis.cluster(name).await?;
    let machines = apis.cluster_machines(name).await?;
    let names: BTreeSet<String> = machines.iter().map(ResourceExt::name_any).collect();
    let events: Api<Event> = Api::namespaced(client.clone(), &org_namespace(org));
    let events = recent_events(
        events.list(&ListParams::default()).await?.items,
        name,
        &names,
        EVENTS_SHOWN,
    );
    emit(&describe(&cluster, &machines, &events, Timestamp::now()))
}

/// `cluster scale`: sets a node pool's replicas.
async fn scale(
    client: &Client,
    org: &str,
    name: &str,
    workers: u32,
    pool: Option<&str>,
    wait: WaitArgs,
) -> Result<(), CliError> {
    let apis = OrgApis::new(client, org);
    let pool_name = pool.map_or_else(|| default_pool(name), str::to_owned);
    let Some(current) = apis.pools.get_opt(&pool_name).await? else {
        let pools: Vec<String> = apis
            .pools
            .list(&cluster_selector(name))
            .await?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        let known = if pools.is_empty() {
            format!("cluster {org}/{name} has no node pools")
        } else {
            format!(
                "the node pools of cluster {org}/{name}: {}",
                pools.join(", ")
            )
        };
        return Err(CliError::Usage(format!(
            "node pool {pool_name:?} does not exist in organization {org}; {known}"
        )));
    };
    if current.spec.cluster != name {
        return Err(CliError::Usage(format!(
            "node pool {pool_name:?} belongs to cluster {:?}, not {name:?}",
            current.spec.cluster
        )));
    }
    if current.spec.min_replicas.is_some() && current.spec.max_replicas.is_some() {
        eprintln!(
            "warning: node pool {pool_name} autoscales between minReplicas and maxReplicas; \
             its replicas may change again"
        );
    }
    let patch = json!({"spec": {"replicas": workers}});
    apis.pools
        .patch(&pool_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    emit_line(format_args!(
        "nodepool.shoal.io/{pool_name} scaled to {workers}"
    ))?;
    if !wait.wait {
        return Ok(());
    }
    let deadline = Deadline::after(wait.timeout);
    let mut lines = LinePrinter::default();
    loop {
        let pool = apis.pools.get(&pool_name).await?;
        lines.print(pool_line(&pool, workers))?;
        if pool_done(&pool, workers) {
            return emit_line(format_args!(
                "nodepool.shoal.io/{pool_name} has {workers} Ready workers"
            ));
        }
        if !deadline.tick().await {
            return Err(deadline.timeout(
                format!("node pool {org}/{pool_name} to have {workers} Ready workers"),
                pool_line(&pool, workers),
            ));
        }
    }
}

/// The names of the releases, for an error message.
async fn release_names(api: &Api<Release>) -> Result<Vec<String>, CliError> {
    let mut names: Vec<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    Ok(names)
}

/// `cluster upgrade`: moves the cluster to another release.
async fn upgrade(
    client: &Client,
    org: &str,
    name: &str,
    release: &str,
    wait: WaitArgs,
) -> Result<(), CliError> {
    let releases: Api<Release> = Api::all(client.clone());
    if releases.get_opt(release).await?.is_none() {
        let names = release_names(&releases).await?;
        let known = if names.is_empty() {
            "no releases exist yet".to_owned()
        } else {
            format!("available releases: {}", names.join(", "))
        };
        return Err(CliError::Usage(format!(
            "release {release:?} does not exist; {known}"
        )));
    }
    let apis = OrgApis::new(client, org);
    let before = apis.cluster(name).await?;
    let generation = if before.spec.release == release {
        emit_line(format_args!(
            "cluster.shoal.io/{name} already runs release {release}"
        ))?;
        before.metadata.generation
    } else {
        let patch = json!({"spec": {"release": release}});
        let after = apis
            .clusters
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        emit_line(format_args!(
            "cluster.shoal.io/{name} upgrading from release {} to {release}",
            before.spec.release
        ))?;
        after.metadata.generation
    };
    if !wait.wait {
        return Ok(());
    }
    let deadline = Deadline::after(wait.timeout);
    let mut lines = LinePrinter::default();
    loop {
        let cluster = apis.cluster(name).await?;
        let progress = upgrade_progress(&apis.cluster_machines(name).await?, release);
        lines.print(upgrade_line(&progress, release, &cluster))?;
        if upgrade_done(&progress, &cluster, generation, release) {
            return emit_line(format_args!(
                "cluster {org}/{name} runs release {release} on all {} machines and is Ready",
                progress.total
            ));
        }
        if !deadline.tick().await {
            return Err(deadline.timeout(
                format!("cluster {org}/{name} to run release {release}"),
                format!(
                    "{}; {}",
                    upgrade_line(&progress, release, &cluster),
                    standing(&cluster)
                ),
            ));
        }
    }
}

/// `cluster delete`: deletes the node pools and the Cluster, then waits if asked.
async fn delete(client: &Client, org: &str, name: &str, wait: WaitArgs) -> Result<(), CliError> {
    let apis = OrgApis::new(client, org);
    let mut pools_deleted = Vec::new();
    for pool in apis.pools.list(&cluster_selector(name)).await?.items {
        let pool_name = pool.name_any();
        apis.pools
            .delete(&pool_name, &DeleteParams::default())
            .await?;
        emit_line(format_args!("nodepool.shoal.io/{pool_name} deleted"))?;
        pools_deleted.push(pool_name);
    }
    apis.clusters.delete(name, &DeleteParams::default()).await?;
    emit_line(format_args!("cluster.shoal.io/{name} deleted"))?;
    if !wait.wait {
        return Ok(());
    }
    let deadline = Deadline::after(wait.timeout);
    match wait_gone(&apis.clusters, name, &deadline).await? {
        Some(removed) => emit(&removed_report(&with_pools(removed, pools_deleted))),
        None => emit_line(format_args!(
            "cluster {org}/{name} is gone, without a report of what was removed \
             (no cluster controller finalized it)"
        )),
    }
}

/// The controller's report plus the node pools this command deleted itself
/// (before the Cluster, so the controller found none of them left).
fn with_pools(mut removed: RemovedResources, pools: Vec<String>) -> RemovedResources {
    removed.node_pools.extend(pools);
    removed.node_pools.sort();
    removed.node_pools.dedup();
    removed
}

/// Keeps the newest removal report and prints the Ready message when it changes.
fn note_deleting(
    cluster: &Cluster,
    removed: &mut Option<RemovedResources>,
    lines: &mut LinePrinter,
) -> Result<(), CliError> {
    if let Some(r) = cluster.status.as_ref().and_then(|s| s.removed.clone()) {
        *removed = Some(r);
    }
    let deleting = cluster.status.as_ref().and_then(|s| s.phase) == Some(ClusterPhase::Deleting);
    match ready_condition(cluster) {
        // The last message ("removed ...") is the report printed at the end.
        Some(c) if deleting && c.reason != "Deleted" && !c.message.is_empty() => {
            lines.print(format!("deleting: {}", c.message))
        }
        _ => Ok(()),
    }
}

/// Waits until the Cluster is gone and returns the last removal report it carried.
///
/// This watches rather than polls: the controller writes the final report and
/// removes its finalizer moments apart, so only the watch's DELETED event (which
/// carries the object's last state) reliably shows the whole report.
async fn wait_gone(
    api: &Api<Cluster>,
    name: &str,
    deadline: &Deadline,
) -> Result<Option<RemovedResources>, CliError> {
    let mut removed = None;
    let mut lines = LinePrinter::default();
    let timed_out = |removed: &Option<RemovedResources>, cluster: Option<&Cluster>| {
        let mut detail = cluster.map(standing).unwrap_or_default();
        if let Some(r) = removed {
            detail.push_str(&format!("; removed so far: {} machines", r.machines.len()));
        }
        deadline.timeout(format!("cluster {name} to be deleted"), detail)
    };
    loop {
        let Some(cluster) = api.get_opt(name).await? else {
            return Ok(removed);
        };
        note_deleting(&cluster, &mut removed, &mut lines)?;
        let left = deadline.remaining();
        if left.is_zero() {
            return Err(timed_out(&removed, Some(&cluster)));
        }
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(u32::try_from(left.as_secs().clamp(1, 60)).unwrap_or(60));
        let version = cluster.resource_version().unwrap_or_default();
        let mut stream = api.watch(&wp, &version).await?.boxed();
        let mut last = cluster;
        loop {
            let next = tokio::time::timeout(deadline.remaining(), stream.try_next()).await;
            match next {
                Err(_) => return Err(timed_out(&removed, Some(&last))),
                // The watch ended or broke: look again and watch anew.
                Ok(Ok(None) | Err(_)) => break,
                Ok(Ok(Some(WatchEvent::Added(c) | WatchEvent::Modified(c)))) => {
                    note_deleting(&c, &mut removed, &mut lines)?;
                    last = c;
                }
                Ok(Ok(Some(WatchEvent::Deleted(c)))) => {
                    note_deleting(&c, &mut removed, &mut lines)?;
                    return Ok(removed);
                }
                Ok(Ok(Some(WatchEvent::Bookmark(_)))) => {}
                // Usually 410 Gone: the version is too old; start over.
                Ok(Ok(Some(WatchEvent::Error(_)))) => break,
            }
        }
        if !deadline.tick().await {
            return Err(timed_out(&removed, Some(&last)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_the_pools_deleted_here_once() {
        let r = RemovedResources {
            node_pools: vec!["demo-gpu".into(), "demo-default".into()],
            ..Default::default()
        };
        let merged = with_pools(r, vec!["demo-default".into(), "demo-big".into()]);
        assert_eq!(merged.node_pools, ["demo-big", "demo-default", "demo-gpu"]);
    }

    #[test]
    fn oidc_flags_become_spec_oidc() {
        use clap::Parser;
        let cli = crate::args::Cli::try_parse_from([
            "shoal",
            "cluster",
            "create",
            "--name",
            "c",
            "--org",
            "o",
            "--oidc-issuer-url",
            "https://idp.example",
            "--oidc-client-id",
            "k8s",
            "--oidc-groups-claim",
            "groups",
            "--oidc-groups-prefix",
            "oidc:",
        ])
        .expect("parses");
        let crate::args::Command::Cluster(ClusterCommand::Create(a)) = cli.command else {
            panic!("not cluster create");
        };
        let objs = cluster_objects(&a, "r1", Some("PEM"));
        assert_eq!(
            objs[0]["spec"]["oidc"],
            json!({"issuerUrl": "https://idp.example", "clientId": "k8s",
                   "groupsClaim": "groups", "groupsPrefix": "oidc:",
                   "certificateAuthority": "PEM"})
        );
        let mut plain = a;
        plain.oidc = GuestOidcArgs::default();
        assert!(cluster_objects(&plain, "r1", None)[0]["spec"]
            .get("oidc")
            .is_none());
        // A client ID without an issuer is refused by the parser.
        assert!(crate::args::Cli::try_parse_from([
            "shoal",
            "cluster",
            "create",
            "--name",
            "c",
            "--org",
            "o",
            "--oidc-client-id",
            "k",
        ])
        .is_err());
    }
}
