//! The nodes' cloud-init user-data: kubeadm through `shoal-bootstrap`, from the
//! cluster's PKI Secret (made by the cluster controller for every cluster).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use shoal_api::wellknown::{pki_key, pki_secret_name, SYSTEM_NAMESPACE};
use shoal_bootstrap::{BootstrapFile, NodeBootstrap, Oidc, Role};
use shoal_pki::{ClusterPki, PkiFile};

use crate::error::{kube_err, Error};
use crate::names::ClusterId;

/// Where kubeadm keeps the cluster's certificates on a node.
const KUBEADM_PKI_DIR: &str = "/etc/kubernetes/pki";
/// The CAs and the service-account key: what a kubeadm control-plane node needs to
/// make its own serving certificates. Workers get none (they find the CA by the
/// bootstrap token and its hash).
const CONTROL_PLANE_FILES: [PkiFile; 6] = [
    PkiFile::CaCert,
    PkiFile::CaKey,
    PkiFile::EtcdCaCert,
    PkiFile::EtcdCaKey,
    PkiFile::SaKey,
    PkiFile::SaPub,
];

/// A cluster's PKI and join secrets.
pub struct Secrets {
    pki: ClusterPki,
    token: String,
    certificate_key: String,
}

/// Reads the cluster's PKI Secret; `None` until the cluster controller made it.
pub async fn load(client: &Client, ns: &str, cluster: &str) -> Result<Option<Secrets>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let name = pki_secret_name(ns, cluster);
    let Some(secret) = api.get_opt(&name).await.map_err(kube_err(format!(
        "read the PKI Secret {SYSTEM_NAMESPACE}/{name}"
    )))?
    else {
        return Ok(None);
    };
    let files: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    let pki = ClusterPki::from_files(&files)
        .map_err(|e| Error::Spec(format!("the PKI Secret {name} does not parse: {e}")))?;
    let get = |key: &str| {
        files
            .get(key)
            .cloned()
            .ok_or_else(|| Error::Waiting(format!("the PKI Secret {name} has no {key} yet")))
    };
    Ok(Some(Secrets {
        token: get(pki_key::BOOTSTRAP_TOKEN)?,
        certificate_key: get(pki_key::CERTIFICATE_KEY)?,
        pki,
    }))
}

/// What every node of the cluster shares.
pub struct NodeCommon<'a> {
    /// The cluster.
    pub id: &'a ClusterId,
    /// The cluster's spec.
    pub spec: &'a shoal_api::ClusterSpec,
    /// Its DNS domain on AWS.
    pub base_domain: &'a str,
    /// The Release's Kubernetes version.
    pub kubernetes_version: &'a str,
    /// The guest API's port behind the load balancer.
    pub api_port: u16,
}

fn node(
    c: &NodeCommon<'_>,
    sec: &Secrets,
    hostname: String,
    role: Role,
    address: Ipv4Addr,
) -> Result<NodeBootstrap, Error> {
    let ca_cert_hash = shoal_pki::ca_cert_hash(sec.pki.file(PkiFile::CaCert))
        .map_err(|e| Error::Spec(format!("the cluster CA does not parse: {e}")))?;
    let files = if role.is_control_plane() {
        CONTROL_PLANE_FILES
            .iter()
            .map(|f| {
                BootstrapFile::new(
                    format!("{KUBEADM_PKI_DIR}/{}", f.kubeadm_path()),
                    sec.pki.file(*f),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(NodeBootstrap {
        cluster: c.id.cluster.clone(),
        org: c.id.org.clone(),
        base_domain: c.base_domain.to_owned(),
        hostname,
        role,
        kubernetes_version: c.kubernetes_version.trim_start_matches('v').to_owned(),
        // Every node reaches the API by its Route 53 name, at the load balancer.
        control_plane_endpoint: format!("{}:443", c.id.api_name(c.base_domain)),
        endpoint_address: None,
        advertise_address: address.to_string(),
        pod_cidr: c.spec.network.pod_cidr.to_string(),
        pod_network: shoal_bootstrap::PodNetwork::Calico,
        service_cidr: c.spec.network.service_cidr.to_string(),
        dns_domain: "cluster.local".into(),
        files,
        bootstrap_token: sec.token.clone(),
        ca_cert_hash,
        certificate_key: role.is_control_plane().then(|| sec.certificate_key.clone()),
        oidc: c.spec.oidc.as_ref().map(|o| Oidc {
            issuer_url: o.issuer_url.clone(),
            client_id: o.client_id.clone(),
            username_claim: o.username_claim.clone(),
            groups_claim: o.groups_claim.clone(),
            username_prefix: o.username_prefix.clone(),
            groups_prefix: o.groups_prefix.clone(),
            ca_pem: o.certificate_authority.clone(),
        }),
        phone_home_url: None,
    })
}

/// The user-data of control-plane slot `slot` at private address `address`: slot 0
/// initialises the cluster, the others join it.
pub fn control_plane(
    c: &NodeCommon<'_>,
    sec: &Secrets,
    slot: u32,
    address: Ipv4Addr,
) -> Result<String, Error> {
    let hostname = format!("{}-cp-{slot}", c.id.cluster);
    let role = if slot == 0 {
        Role::ControlPlaneInit
    } else {
        Role::ControlPlaneJoin
    };
    let n = node(c, sec, hostname.clone(), role, address)?;
    shoal_bootstrap::render_kubeadm(&n).map_err(|source| Error::Bootstrap {
        node: hostname,
        source,
    })
}

/// The user-data every worker of NodePool `pool` shares; each keeps its EC2 name.
pub fn workers(c: &NodeCommon<'_>, sec: &Secrets, pool: &str) -> Result<String, Error> {
    // Workers advertise no API server: the address is not used.
    let n = node(c, sec, pool.to_owned(), Role::Worker, Ipv4Addr::UNSPECIFIED)?;
    shoal_bootstrap::render_kubeadm_group(&n).map_err(|source| Error::Bootstrap {
        node: format!("node pool {pool}"),
        source,
    })
}
