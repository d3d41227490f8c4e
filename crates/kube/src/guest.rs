//! A client of a guest cluster's Kubernetes API, reached through Shoal's gateway: TLS
//! to the gateway with the API's server name (the gateway routes by SNI), trusting
//! only the cluster CA, authenticated with a client certificate of the cluster's PKI.
//!
//! And what Shoal reads from the guest: each Node's readiness, with the kubelet's own
//! reason when it is not Ready.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{EvictParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

/// How long one request to a guest may take: the guest runs on an emulated CPU.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a guest API is and who Shoal is to it.
pub struct GuestAccess<'a> {
    /// The gateway's address.
    pub gateway: SocketAddr,
    /// The API's server name, `api.<cluster>.<org>.<base-domain>`.
    pub server_name: &'a str,
    /// The cluster CA (PEM): the only issuer trusted for the API's certificate.
    pub ca_pem: &'a str,
    /// A client certificate the cluster CA signed (PEM).
    pub cert_pem: &'a str,
    /// Its private key (PEM).
    pub key_pem: &'a str,
}

/// Why a guest could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The access did not make a client configuration.
    #[error("cannot configure a client of https://{server}: {source}")]
    Config {
        /// The API's server name.
        server: String,
        /// What kube refused.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The request failed.
    #[error("{what} on https://{server} through the gateway: {source}")]
    Request {
        /// What was asked.
        what: &'static str,
        /// The API's server name.
        server: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
}

/// A client of the guest API described by `access`.
pub async fn client(access: &GuestAccess<'_>) -> Result<Client, GuestError> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let config_err = |source: Box<dyn std::error::Error + Send + Sync>| GuestError::Config {
        server: access.server_name.to_owned(),
        source,
    };
    // The kubeconfig a person would write, so kube applies every field the same way.
    let kubeconfig: Kubeconfig = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "guest", "cluster": {
            "server": format!("https://{}", access.gateway),
            "tls-server-name": access.server_name,
            "certificate-authority-data": b64(access.ca_pem),
        }}],
        "users": [{"name": "shoal", "user": {
            "client-certificate-data": b64(access.cert_pem),
            "client-key-data": b64(access.key_pem),
        }}],
        "contexts": [{"name": "guest", "context": {"cluster": "guest", "user": "shoal"}}],
        "current-context": "guest",
    }))
    .map_err(|e| config_err(Box::new(e)))?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| config_err(Box::new(e)))?;
    config.connect_timeout = Some(REQUEST_TIMEOUT);
    config.read_timeout = Some(REQUEST_TIMEOUT);
    config.default_retry = false;
    Client::try_from(config).map_err(|e| config_err(Box::new(e)))
}

/// What a guest says of one Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// The Node's name (Shoal names it after the Machine).
    pub name: String,
    /// Whether its `Ready` condition is `True`.
    pub ready: bool,
    /// The condition's reason (`KubeletReady`, `KubeletNotReady`, or `Unknown` when
    /// the Node has no Ready condition yet).
    pub reason: String,
    /// The condition's message, the kubelet's own words (`container runtime network
    /// not ready: NetworkReady=false reason:NetworkPluginNotReady ...`).
    pub message: String,
    /// The kubelet's version, `v1.35.4`.
    pub kubelet_version: String,
    /// Whether the Node is cordoned.
    pub unschedulable: bool,
}

impl NodeState {
    /// Reads a Node object.
    pub fn of(node: &Node) -> Self {
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            ready: ready.is_some_and(|c| c.status == "True"),
            reason: ready
                .and_then(|c| c.reason.clone())
                .unwrap_or_else(|| "Unknown".into()),
            message: ready
                .and_then(|c| c.message.clone())
                .unwrap_or_else(|| "the node has not reported its readiness yet".into()),
            kubelet_version: status
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.kubelet_version.clone())
                .unwrap_or_default(),
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
        }
    }
}

/// Every Node of the guest.
pub async fn nodes(client: &Client, server_name: &str) -> Result<Vec<NodeState>, GuestError> {
    let list = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|source| GuestError::Request {
            what: "list nodes",
            server: server_name.to_owned(),
            source,
        })?;
    Ok(list.items.iter().map(NodeState::of).collect())
}

/// Marks Node `node` unschedulable. `false` when the guest has no such Node.
pub async fn cordon(client: &Client, server_name: &str, node: &str) -> Result<bool, GuestError> {
    let patch = json!({"spec": {"unschedulable": true}});
    match Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if crate::is_not_found(&e) => Ok(false),
        Err(source) => Err(GuestError::Request {
            what: "cordon the node",
            server: server_name.to_owned(),
            source,
        }),
    }
}

/// Whether a drain moves `pod`: not a DaemonSet's (it would come straight back), not
/// a static pod's mirror, not one that has finished.
pub fn evictable(pod: &Pod) -> bool {
    let daemon = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let done = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    !(daemon || mirror || done)
}

/// Where a drain stands after one round of evictions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainRound {
    /// Pods still on the node that a drain moves, `namespace/name`.
    pub left: Vec<String>,
    /// Of those, the ones whose eviction a PodDisruptionBudget refused this round.
    pub blocked: Vec<String>,
}

/// Asks the guest to evict every pod a drain moves from `node` (the eviction API,
/// so PodDisruptionBudgets hold); one round, to be repeated until nothing is left.
pub async fn evict_round(
    client: &Client,
    server_name: &str,
    node: &str,
) -> Result<DrainRound, GuestError> {
    let request = |what: &'static str| {
        move |source| GuestError::Request {
            what,
            server: server_name.to_owned(),
            source,
        }
    };
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(request("list the node's pods"))?;
    let mut round = DrainRound::default();
    for pod in pods.items.iter().filter(|p| evictable(p)) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let key = format!("{ns}/{name}");
        round.left.push(key.clone());
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match Api::<Pod>::namespaced(client.clone(), &ns)
            .evict(&name, &EvictParams::default())
            .await
        {
            Ok(_) => {}
            Err(e) if crate::is_not_found(&e) => {}
            // 429: a PodDisruptionBudget allows no disruption now.
            Err(kube::Error::Api(s)) if s.code == 429 => round.blocked.push(key),
            Err(e) => return Err(request("evict a pod")(e)),
        }
    }
    Ok(round)
}

/// Creates kubeadm bootstrap token `token` (`<id>.<secret>`) in the guest, valid for
/// `ttl`: a node joining later than the first token's day gets a fresh one, and a
/// leaked user-data opens the cluster only briefly.
pub async fn create_join_token(
    client: &Client,
    server_name: &str,
    token: &str,
    ttl: Duration,
) -> Result<(), GuestError> {
    let (id, secret) = token.split_once('.').unwrap_or((token, ""));
    let expires = chrono::Utc::now()
        + chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::hours(1));
    let obj: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {
            "token-id": id,
            "token-secret": secret,
            "expiration": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
            "description": "a node join, created by Shoal",
        },
    }))
    .map_err(|e| GuestError::Config {
        server: server_name.to_owned(),
        source: Box::new(e),
    })?;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "kube-system")
        .create(&Default::default(), &obj)
        .await
        .map(|_| ())
        .map_err(|source| GuestError::Request {
            what: "create a bootstrap token",
            server: server_name.to_owned(),
            source,
        })
}

/// Deletes Node `node` from the guest (nothing to do when it is gone).
pub async fn delete_node(client: &Client, server_name: &str, node: &str) -> Result<(), GuestError> {
    crate::delete_ignoring_missing(&Api::<Node>::all(client.clone()), node)
        .await
        .map(|_| ())
        .map_err(|source| GuestError::Request {
            what: "delete the node",
            server: server_name.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(value: serde_json::Value) -> Node {
        serde_json::from_value(value).expect("a Node")
    }

    #[test]
    fn a_ready_node() {
        let n = node(json!({
            "metadata": {"name": "demo-cp-abc"},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                    {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"},
                ],
                "nodeInfo": {"kubeletVersion": "v1.35.4", "architecture": "amd64", "bootID": "",
                    "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "",
                    "machineID": "", "operatingSystem": "linux", "osImage": "", "systemUUID": ""},
            },
        }));
        let s = NodeState::of(&n);
        assert!(s.ready);
        assert_eq!(s.name, "demo-cp-abc");
        assert_eq!(s.reason, "KubeletReady");
        assert_eq!(s.kubelet_version, "v1.35.4");
        assert!(!s.unschedulable);
    }

    #[test]
    fn a_node_without_its_network_plugin_says_why() {
        let n = node(json!({
            "metadata": {"name": "w1"},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                "message": "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"}]},
        }));
        let s = NodeState::of(&n);
        assert!(!s.ready);
        assert_eq!(s.reason, "KubeletNotReady");
        assert!(s.message.contains("cni plugin not initialized"), "{s:?}");
        assert!(s.unschedulable);
    }

    #[test]
    fn a_node_with_no_conditions_is_not_ready() {
        let s = NodeState::of(&node(json!({"metadata": {"name": "w2"}})));
        assert!(!s.ready);
        assert_eq!(s.reason, "Unknown");
        assert!(s.message.contains("not reported"), "{s:?}");
    }

    #[test]
    fn a_drain_moves_workloads_but_not_daemons_mirrors_or_finished_pods() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).expect("a Pod") };
        let web = pod(json!({"metadata": {"name": "web-1", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u", "controller": true}]}}));
        let flannel = pod(
            json!({"metadata": {"name": "kube-flannel-ds-x", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "kube-flannel-ds", "uid": "u", "controller": true}]}}),
        );
        let mirror = pod(json!({"metadata": {"name": "kube-apiserver-cp",
            "annotations": {"kubernetes.io/config.mirror": "abc"}}}));
        let done = pod(json!({"metadata": {"name": "job-1"}, "status": {"phase": "Succeeded"}}));
        let bare = pod(json!({"metadata": {"name": "bare"}, "status": {"phase": "Running"}}));
        assert!(evictable(&web));
        assert!(evictable(&bare));
        assert!(!evictable(&flannel));
        assert!(!evictable(&mirror));
        assert!(!evictable(&done));
    }

    #[tokio::test]
    async fn a_bad_key_is_a_config_error() {
        let access = GuestAccess {
            gateway: "127.0.0.1:1".parse().expect("addr"),
            server_name: "api.demo.acme.shoal.local",
            ca_pem: "not a certificate",
            cert_pem: "not a certificate",
            key_pem: "not a key",
        };
        let Err(err) = client(&access).await else {
            panic!("a client from garbage");
        };
        assert!(
            matches!(err, GuestError::Config { .. }),
            "{err}: {}",
            crate::chain(&err)
        );
        assert!(
            err.to_string().contains("api.demo.acme.shoal.local"),
            "{err}"
        );
    }
}
