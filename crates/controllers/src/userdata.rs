//! A Machine's cloud-init user-data, from its cluster, release and the cluster PKI.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use shoal_api::forward::GUEST_API_PORT;
use shoal_api::resources::common::MachineRole;
use shoal_api::resources::organization::namespace_org;
use shoal_api::{BootstrapFormat, Machine, MachinePhase};
use shoal_bootstrap::{BootstrapFile, NodeBootstrap, Oidc, Role};
use shoal_kube::guest;
use shoal_pki::PkiFile;

use crate::cluster::pki::{cached, ClusterSecrets};
use crate::context::Context;
use crate::error::Error;
use crate::machines::NewMachine;

/// Where kubeadm keeps the cluster's certificates on a node.
const KUBEADM_PKI_DIR: &str = "/etc/kubernetes/pki";
/// Where the test image's `shoal guest` reads them.
const TEST_IMAGE_PKI_DIR: &str = "/etc/shoal/pki";

/// The PKI files a node gets. kubeadm makes each node's own serving certificates
/// from the CAs, so kubeadm control-plane nodes get the CAs and the service-account
/// key, and workers nothing (they find the CA through the bootstrap token and the
/// CA hash); the test image serves the shared API server certificate itself.
fn files(format: BootstrapFormat, role: MachineRole) -> &'static [PkiFile] {
    use PkiFile::*;
    match (format, role) {
        (BootstrapFormat::Kubeadm, MachineRole::ControlPlane) => {
            &[CaCert, CaKey, EtcdCaCert, EtcdCaKey, SaKey, SaPub]
        }
        (BootstrapFormat::Kubeadm, MachineRole::Worker) => &[],
        (BootstrapFormat::TestImage, MachineRole::ControlPlane) => {
            &[CaCert, ApiServerCert, ApiServerKey]
        }
        (BootstrapFormat::TestImage, MachineRole::Worker) => &[CaCert, WorkerCert, WorkerKey],
    }
}

/// The address of the control-plane Machine a joining node reaches the API at: a
/// Ready one before a booting one, the oldest first; never one being deleted.
fn join_address(control_planes: &[Arc<Machine>]) -> Option<Ipv4Addr> {
    control_planes
        .iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .filter_map(|m| {
            let ip: Ipv4Addr = m.spec.ip.as_deref()?.parse().ok()?;
            let ready = crate::machines::phase(m) == MachinePhase::Ready;
            Some((!ready, m.metadata.creation_timestamp.clone(), ip))
        })
        .min_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)))
        .map(|(_, _, ip)| ip)
}

/// How long a join token made for one Machine stays valid.
const JOIN_TOKEN_TTL: Duration = Duration::from_secs(2 * 3600);

/// A join token made for this Machine in the guest (valid [`JOIN_TOKEN_TTL`]), when
/// a control plane is Ready and the guest answers through the gateway; else `None`,
/// and the join uses the token `kubeadm init` registered (valid its first day).
async fn fresh_token(
    ctx: &Context,
    cluster: &shoal_api::Cluster,
    pki: &shoal_pki::ClusterPki,
    control_planes: &[Arc<Machine>],
) -> Option<String> {
    let gateway = ctx.config.gateway_address?;
    let any_ready = control_planes
        .iter()
        .any(|m| crate::machines::phase(m) == MachinePhase::Ready);
    if !any_ready {
        return None;
    }
    let api_host = crate::cluster::status::api_host(cluster, &ctx.config.base_domain);
    let token = crate::cluster::pki::token();
    let made = async {
        let client = crate::cluster::guest::admin_client(gateway, &api_host, pki).await?;
        guest::create_join_token(&client, &api_host, &token, JOIN_TOKEN_TTL).await
    }
    .await;
    match made {
        Ok(()) => Some(token),
        Err(e) => {
            tracing::info!(cluster = %api_host, error = %shoal_kube::chain(&e),
                "no fresh join token; the join uses kubeadm init's token");
            None
        }
    }
}

/// Renders the user-data of Machine `name` with node address `ip`.
pub async fn render(
    ctx: &Context,
    new: &NewMachine<'_>,
    name: &str,
    ip: Ipv4Addr,
) -> Result<String, Error> {
    let cluster = new.cluster;
    let ns = cluster.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", cluster.name_any());
    let secrets = cached(ctx, cluster).await?;
    let ClusterSecrets {
        pki,
        bootstrap_token,
        certificate_key,
    } = secrets.as_ref();
    let format = new.release.spec.bootstrap;
    let control_planes: Vec<_> = ctx
        .stores
        .cluster_machines(&ns, &cluster.name_any())
        .into_iter()
        .filter(|m| m.spec.role == MachineRole::ControlPlane && m.name_any() != name)
        .collect();
    // The first control-plane node initialises the cluster; every later one joins.
    let role = match new.role {
        MachineRole::Worker => Role::Worker,
        MachineRole::ControlPlane if control_planes.is_empty() => Role::ControlPlaneInit,
        MachineRole::ControlPlane => Role::ControlPlaneJoin,
    };
    // Inside the guest network the API's name stands for a control-plane node: the
    // new node itself when it initialises, else a live one (Ready first, then oldest).
    let endpoint_address = match role {
        Role::ControlPlaneInit => ip,
        Role::ControlPlaneJoin | Role::Worker => {
            join_address(&control_planes).ok_or_else(|| {
                Error::NotReady(format!(
                    "machine {ns}/{name} waits for a control-plane machine of cluster {key} \
                     to have an address to join"
                ))
            })?
        }
    };
    let bootstrap_token = match (format, role) {
        (BootstrapFormat::Kubeadm, Role::ControlPlaneJoin | Role::Worker) => {
            fresh_token(ctx, cluster, pki, &control_planes)
                .await
                .unwrap_or_else(|| bootstrap_token.clone())
        }
        _ => bootstrap_token.clone(),
    };
    let ca_cert_hash =
        shoal_pki::ca_cert_hash(pki.file(PkiFile::CaCert)).map_err(|source| Error::Pki {
            cluster: key.clone(),
            source,
        })?;
    let node = NodeBootstrap {
        cluster: cluster.name_any(),
        org: namespace_org(&ns).unwrap_or(&ns).to_owned(),
        base_domain: ctx.config.base_domain.clone(),
        hostname: name.to_owned(),
        role,
        kubernetes_version: new
            .release
            .spec
            .kubernetes_version
            .trim_start_matches('v')
            .to_owned(),
        control_plane_endpoint: format!(
            "{}:{GUEST_API_PORT}",
            crate::cluster::status::api_host(cluster, &ctx.config.base_domain)
        ),
        endpoint_address: (format == BootstrapFormat::Kubeadm)
            .then(|| endpoint_address.to_string()),
        advertise_address: ip.to_string(),
        pod_cidr: cluster.spec.network.pod_cidr.to_string(),
        pod_network: shoal_bootstrap::PodNetwork::Flannel,
        service_cidr: cluster.spec.network.service_cidr.to_string(),
        dns_domain: ctx.config.dns_domain.clone(),
        files: files(format, new.role)
            .iter()
            .map(|f| {
                let dir = match format {
                    BootstrapFormat::Kubeadm => KUBEADM_PKI_DIR,
                    BootstrapFormat::TestImage => TEST_IMAGE_PKI_DIR,
                };
                BootstrapFile::new(format!("{dir}/{}", f.kubeadm_path()), pki.file(*f))
            })
            .collect(),
        bootstrap_token,
        ca_cert_hash,
        certificate_key: role.is_control_plane().then(|| certificate_key.clone()),
        oidc: cluster.spec.oidc.as_ref().map(|o| Oidc {
            issuer_url: o.issuer_url.clone(),
            client_id: o.client_id.clone(),
            username_claim: o.username_claim.clone(),
            groups_claim: o.groups_claim.clone(),
            username_prefix: o.username_prefix.clone(),
            groups_prefix: o.groups_prefix.clone(),
            ca_pem: o.certificate_authority.clone(),
        }),
        // The host agent's metadata service tells the guest where to phone home.
        phone_home_url: None,
    };
    let rendered = match format {
        BootstrapFormat::Kubeadm => shoal_bootstrap::render_kubeadm(&node),
        BootstrapFormat::TestImage => shoal_bootstrap::render_test_image(&node),
    };
    rendered.map_err(|source| Error::Bootstrap {
        machine: format!("{ns}/{name}"),
        source,
    })
}
