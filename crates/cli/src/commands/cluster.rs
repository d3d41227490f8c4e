//! `shoal cluster`.

use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use shoal_api::resources::organization::org_namespace;

use crate::args::{ClusterCommand, ClusterCreateArgs};
use crate::client::{dynamic_api, find_kind, CliError};
use crate::output::{emit_line, print};

/// The Cluster and default NodePool that `cluster create` writes.
pub fn cluster_objects(a: &ClusterCreateArgs) -> Vec<Value> {
    let ns = org_namespace(&a.org);
    let size = json!({"cpu": a.cpu, "memory": a.memory, "disk": a.disk});
    let mut cp = size.clone();
    cp["replicas"] = json!(a.control_plane);
    vec![
        json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": a.name, "namespace": ns},
            "spec": {"release": a.release, "controlPlane": cp},
        }),
        json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "NodePool",
            "metadata": {"name": format!("{}-default", a.name), "namespace": ns, "labels": {"shoal.io/cluster": a.name}},
            "spec": {"cluster": a.name, "replicas": a.workers, "machine": size},
        }),
    ]
}

/// Runs a cluster subcommand.
pub async fn run(client: &Client, cmd: &ClusterCommand) -> Result<(), CliError> {
    let clusters = find_kind("clusters")?;
    match cmd {
        ClusterCommand::Create(a) => {
            for obj in cluster_objects(a) {
                let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let ns = org_namespace(&a.org);
                let api = dynamic_api(client, find_kind(&kind)?, Some(&ns));
                let dynamic =
                    serde_json::from_value(obj).map_err(|e| CliError::Usage(e.to_string()))?;
                api.create(&PostParams::default(), &dynamic).await?;
                emit_line(format_args!(
                    "{}.shoal.io/{name} created",
                    kind.to_lowercase()
                ))?;
            }
        }
        ClusterCommand::List { org, output } => {
            let ns = org.as_deref().map(org_namespace);
            let api = dynamic_api(client, clusters, ns.as_deref());
            let list = api.list(&ListParams::default()).await?;
            let items: Vec<Value> = list
                .items
                .iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect();
            print(clusters, &items, false, ns.is_none(), *output)?;
        }
        ClusterCommand::Get { name, org, output } => {
            let obj = dynamic_api(client, clusters, Some(&org_namespace(org)))
                .get(name)
                .await?;
            let v = serde_json::to_value(&obj).map_err(|e| CliError::Usage(e.to_string()))?;
            print(clusters, &[v], true, false, *output)?;
        }
        ClusterCommand::Delete { name, org } => {
            let ns = org_namespace(org);
            let pools = dynamic_api(client, find_kind("nodepools")?, Some(&ns));
            let lp = ListParams::default().labels(&format!("shoal.io/cluster={name}"));
            for pool in pools.list(&lp).await?.items {
                if let Some(pool_name) = &pool.metadata.name {
                    pools.delete(pool_name, &DeleteParams::default()).await?;
                    emit_line(format_args!("nodepool.shoal.io/{pool_name} deleted"))?;
                }
            }
            dynamic_api(client, clusters, Some(&ns))
                .delete(name, &DeleteParams::default())
                .await?;
            emit_line(format_args!("cluster.shoal.io/{name} deleted"))?;
        }
    }
    Ok(())
}
