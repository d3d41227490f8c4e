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

/// The arguments of `shoal cluster create` for a test: a cluster `name` in `org`
/// on the test release with one control-plane node and no workers, changed with
/// the setters; what is not set is left to the CLI's defaults.
#[derive(Clone, Debug)]
pub struct ClusterArgs<'a> {
    args: Vec<&'a str>,
}

impl<'a> ClusterArgs<'a> {
    /// `cluster create --name NAME --org ORG --release test --control-plane 1 --workers 0`.
    pub fn new(name: &'a str, org: &'a str) -> Self {
        Self {
            args: vec!["cluster", "create", "--name", name, "--org", org],
        }
        .release("test")
        .control_plane("1")
        .workers("0")
    }

    /// `flag value`, replacing the value of a flag already set.
    pub fn set(mut self, flag: &'a str, value: &'a str) -> Self {
        match self.args.iter().position(|a| *a == flag) {
            Some(i) => self.args[i + 1] = value,
            None => self.args.extend([flag, value]),
        }
        self
    }

    /// `--release`.
    pub fn release(self, release: &'a str) -> Self {
        self.set("--release", release)
    }

    /// `--control-plane`: 1 or 3.
    pub fn control_plane(self, n: &'a str) -> Self {
        self.set("--control-plane", n)
    }

    /// `--workers` in the default node pool.
    pub fn workers(self, n: &'a str) -> Self {
        self.set("--workers", n)
    }

    /// `--cpu`, `--memory` and `--disk` of every machine.
    pub fn size(self, cpu: &'a str, memory: &'a str, disk: &'a str) -> Self {
        self.set("--cpu", cpu)
            .set("--memory", memory)
            .set("--disk", disk)
    }

    /// `--wait --timeout SECS`.
    pub fn wait(self, timeout_secs: &'a str) -> Self {
        self.set("--timeout", timeout_secs).flag("--wait")
    }

    /// Any other argument, as is.
    pub fn flag(mut self, arg: &'a str) -> Self {
        self.args.push(arg);
        self
    }

    /// The arguments, for `ServerProc::shoal` and `shoal_ok`.
    pub fn args(&self) -> &[&'a str] {
        &self.args
    }
}
