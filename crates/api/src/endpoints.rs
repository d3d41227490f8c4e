//! `ClusterEndpoints`: the backends the gateway routes a cluster's traffic to, for
//! external load balancers (`GET …/clusters/<name>/endpoints`).

use serde::{Deserialize, Serialize};

/// The kind name of [`ClusterEndpoints`].
pub const KIND: &str = "ClusterEndpoints";

/// One backend and whether the gateway's health checks pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointBackend {
    /// The Machine.
    pub machine: String,
    /// The Host it runs on.
    pub host: String,
    /// Its address and port on the cluster network.
    pub address: String,
    /// The agent endpoint that forwards to it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_endpoint: Option<String>,
    /// `true` when the last health check passed, `false` when it failed, absent
    /// before the first check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
}

/// A cluster's backends, by service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEndpoints {
    /// Always `shoal.io/v1alpha1`.
    pub api_version: String,
    /// Always `ClusterEndpoints`.
    pub kind: String,
    /// The cluster's namespace.
    pub namespace: String,
    /// The cluster's name.
    pub name: String,
    /// The API's server name (SNI), `api.<cluster>.<org>.<base-domain>`.
    pub api_server_name: String,
    /// Ingress names: `*.<cluster>.<org>.<base-domain>`.
    pub ingress_domain: String,
    /// Control-plane Machines on the guest API port.
    pub api: Vec<EndpointBackend>,
    /// Workers on the ingress HTTP port.
    pub ingress_http: Vec<EndpointBackend>,
    /// Workers on the ingress HTTPS port.
    pub ingress_https: Vec<EndpointBackend>,
}
