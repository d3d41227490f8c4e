//! Objects the tests and benchmarks create over and over: organizations, clusters,
//! and an HTTPS client that trusts a server's CA.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use kube::Client;
use serde_json::json;
use shoal_bootstrap::NODE_IMAGE;

use crate::raw;

const GV: &str = "/apis/shoal.io/v1alpha1";

/// Creates Organization `name` (namespace `org-<name>`) with no members.
pub async fn create_org(admin: &Client, name: &str) -> Result<()> {
    let body = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Organization",
                      "metadata": {"name": name}, "spec": {}});
    post_created(admin, &format!("{GV}/organizations"), &body)
        .await
        .with_context(|| format!("creating organization {name}"))
}

/// Creates Cluster `namespace/name` on `release`: one control-plane node of 2 vCPUs,
/// 2 GiB and 10 GiB of disk, no workers.
pub async fn create_cluster(
    admin: &Client,
    namespace: &str,
    name: &str,
    release: &str,
) -> Result<()> {
    let body = json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"release": release,
                 "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
    });
    post_created(
        admin,
        &format!("{GV}/namespaces/{namespace}/clusters"),
        &body,
    )
    .await
    .with_context(|| format!("creating cluster {namespace}/{name}"))
}

/// Creates `count` clusters `c00000`, `c00001`, … in `namespace` (see [`create_cluster`]).
pub async fn create_clusters(
    admin: &Client,
    namespace: &str,
    release: &str,
    count: usize,
) -> Result<()> {
    for i in 0..count {
        create_cluster(admin, namespace, &format!("c{i:05}"), release).await?;
    }
    Ok(())
}

/// A reqwest client builder that trusts the CA of the server a kubeconfig names.
pub fn https_trusting(kubeconfig: &Path) -> Result<reqwest::ClientBuilder> {
    let kc: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(kubeconfig)?)?;
    let ca = kc
        .pointer("/clusters/0/cluster/certificate-authority-data")
        .and_then(serde_json::Value::as_str)
        .with_context(|| format!("no CA in {}", kubeconfig.display()))?;
    let pem = base64::engine::general_purpose::STANDARD.decode(ca)?;
    Ok(reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&pem)?))
}

/// Creates an active Release `name` of the Kubernetes version Shoal's node image
/// carries, whose image paths do not exist: clusters on it get their Machines, which
/// stay Pending where no host can boot them.
pub async fn create_active_release(admin: &Client, name: &str) -> Result<()> {
    let body = json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Release", "metadata": {"name": name},
        "spec": {"kubernetesVersion": NODE_IMAGE.kubernetes_version, "state": "active",
                 "image": {"kernel": "/nonexistent/vmlinuz", "initrd": "/nonexistent/initrd.img"}}
    });
    post_created(admin, &format!("{GV}/releases"), &body)
        .await
        .with_context(|| format!("creating release {name}"))
}

/// POSTs `body` to `path` as the admin and expects 201 Created.
async fn post_created(admin: &Client, path: &str, body: &serde_json::Value) -> Result<()> {
    let (code, v) = raw(
        admin,
        "POST",
        path,
        "application/json",
        serde_json::to_vec(body)?,
    )
    .await?;
    ensure!(code == 201, "POST {path}: {code} {v}");
    Ok(())
}
