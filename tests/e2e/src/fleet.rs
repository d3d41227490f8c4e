//! Objects for host-agent tests and benchmarks: an organization, the test-image
//! Release, guest Clusters with their network allocated by hand (there is no IPAM
//! controller yet), and Machines pinned to hosts.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;
use shoal_api::{Cluster, Machine, MachinePhase, Release};

use crate::workspace_root;

/// The organization's namespace.
pub const NS: &str = "org-e2e";

/// An absolute path of a test-image file under images/out.
pub fn image(file: &str) -> Result<String> {
    let p = workspace_root().join("images/out").join(file);
    let p = std::fs::canonicalize(&p).with_context(|| {
        format!(
            "{}: run scripts/setup.sh to build the test image",
            p.display()
        )
    })?;
    Ok(p.display().to_string())
}

/// Creates `obj` (JSON) through `api`.
pub async fn create<K>(api: &Api<K>, obj: serde_json::Value) -> Result<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let obj: K = serde_json::from_value(obj)?;
    Ok(api.create(&PostParams::default(), &obj).await?)
}

/// Creates `obj`, or replaces the object of that name with it.
pub async fn create_or_replace<K>(api: &Api<K>, obj: serde_json::Value) -> Result<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let mut obj: K = serde_json::from_value(obj)?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(made) => Ok(made),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let name = obj.meta().name.clone().unwrap_or_default();
            let current = api.get(&name).await?;
            obj.meta_mut().resource_version = current.meta().resource_version.clone();
            Ok(api.replace(&name, &PostParams::default(), &obj).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates organization `e2e`, Release `test` (the test image) and Release
/// `missing-image` (a kernel that does not exist), then one Cluster per
/// `(name, vni, node CIDR)` with that network written to its status.
pub async fn setup(client: &Client, clusters: &[(&str, u32, &str)]) -> Result<()> {
    let orgs: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource {
            group: "shoal.io".into(),
            version: "v1alpha1".into(),
            api_version: "shoal.io/v1alpha1".into(),
            kind: "Organization".into(),
            plural: "organizations".into(),
        },
    );
    create(
        &orgs,
        serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Organization",
            "metadata": {"name": "e2e"}, "spec": {"displayName": "E2E"}
        }),
    )
    .await?;
    let releases: Api<Release> = Api::all(client.clone());
    // A server that runs some controllers may have seeded its own `test` already.
    create_or_replace(
        &releases,
        serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Release", "metadata": {"name": "test"},
            "spec": {"kubernetesVersion": "1.31.2", "image": {
                "kernel": image("vmlinuz")?, "initrd": image("initrd.img")?,
                "cmdline": "console=ttyS0 quiet"}}
        }),
    )
    .await?;
    create(&releases, serde_json::json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Release", "metadata": {"name": "missing-image"},
        "spec": {"kubernetesVersion": "1.31.2", "image": {"kernel": "/nonexistent/shoal/vmlinuz"}}
    }))
    .await?;
    let api: Api<Cluster> = Api::namespaced(client.clone(), NS);
    // The organization's namespace appears shortly after the organization.
    let deadline = Instant::now() + Duration::from_secs(20);
    for &(name, vni, cidr) in clusters {
        let body = serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"release": "test",
                     "controlPlane": {"replicas": 1, "cpu": "1", "memory": "256Mi", "disk": "1Gi"},
                     "network": {"podCidr": "10.244.0.0/16", "serviceCidr": "10.96.0.0/12"}}
        });
        loop {
            match create(&api, body.clone()).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("cluster {name}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"vni": vni, "nodeCidr": cidr}})),
        )
        .await?;
    }
    Ok(())
}

/// A worker Machine on `host` with 256Mi, its MAC derived from its IP.
pub fn machine(
    name: &str,
    cluster: &str,
    host: &str,
    ip: Ipv4Addr,
    cpu: &str,
    release: &str,
) -> serde_json::Value {
    let o = ip.octets();
    serde_json::json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"cluster": cluster, "role": "worker", "release": release,
                 "size": {"cpu": cpu, "memory": "256Mi", "disk": "1Gi"},
                 "hostName": host,
                 "mac": format!("52:54:00:{:02x}:{:02x}:{:02x}", o[1], o[2], o[3]),
                 "ip": ip.to_string()}
    })
}

/// Polls until Machine `name` is in phase `want`; fails early if it fails instead.
pub async fn wait_phase(
    api: &Api<Machine>,
    name: &str,
    want: MachinePhase,
    timeout: Duration,
) -> Result<Machine> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = api.get(name).await?;
        let phase = m.status.as_ref().and_then(|s| s.phase);
        if phase == Some(want) {
            return Ok(m);
        }
        if phase == Some(MachinePhase::Failed) && want != MachinePhase::Failed {
            bail!("machine {name} failed: {:?}", m.status);
        }
        if Instant::now() > deadline {
            bail!(
                "machine {name} is {phase:?}, not {want:?}, after {timeout:?}: {:?}",
                m.status
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
