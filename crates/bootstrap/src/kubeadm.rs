//! User-data for a real cloud image with kubeadm: the PKI and a kubeadm configuration
//! (`kubeadm.k8s.io/v1beta4`) in `write_files`, then `kubeadm init` or `kubeadm join`
//! in `runcmd`, then `phone_home`.

use serde::Serialize;

use crate::cloudconfig::{to_yaml, CloudConfig, WriteFile};
use crate::input::{NodeBootstrap, Role};
use crate::validate::{split_endpoint, version_digits};
use crate::{BootstrapError, KUBEADM_CONFIG_PATH};

const API_VERSION: &str = "kubeadm.k8s.io/v1beta4";
/// The configuration holds the bootstrap token and the certificate key.
const CONFIG_MODE: u32 = 0o600;

/// Renders `#cloud-config` user-data that makes `n` a Kubernetes node with kubeadm.
pub fn render_kubeadm(n: &NodeBootstrap) -> Result<String, BootstrapError> {
    n.validate()?;
    crate::validate::kubeadm_worker_files(n)?;
    let mut doc = CloudConfig::base(n);
    doc.write_files.push(WriteFile::new(
        KUBEADM_CONFIG_PATH,
        kubeadm_config(n)?,
        CONFIG_MODE,
    ));
    doc.runcmd.push(match n.role {
        Role::ControlPlaneInit => vec![
            "kubeadm",
            "init",
            "--config",
            KUBEADM_CONFIG_PATH,
            "--upload-certs",
        ],
        Role::ControlPlaneJoin | Role::Worker => {
            vec!["kubeadm", "join", "--config", KUBEADM_CONFIG_PATH]
        }
    });
    doc.render()
}

/// The kubeadm configuration file: `InitConfiguration` and `ClusterConfiguration` on
/// the first control-plane node, a `JoinConfiguration` on the others.
fn kubeadm_config(n: &NodeBootstrap) -> Result<String, BootstrapError> {
    let node_registration = NodeRegistration { name: &n.hostname };
    match n.role {
        Role::ControlPlaneInit => {
            let init = InitConfiguration {
                api_version: API_VERSION,
                kind: "InitConfiguration",
                bootstrap_tokens: vec![BootstrapToken {
                    token: &n.bootstrap_token,
                }],
                local_api_endpoint: LocalApiEndpoint {
                    advertise_address: &n.advertise_address,
                },
                node_registration,
                certificate_key: n.certificate_key.as_deref(),
            };
            let cluster = cluster_configuration(n);
            Ok(format!(
                "{}---\n{}",
                to_yaml("the kubeadm InitConfiguration", &init)?,
                to_yaml("the kubeadm ClusterConfiguration", &cluster)?
            ))
        }
        Role::ControlPlaneJoin | Role::Worker => {
            let join = JoinConfiguration {
                api_version: API_VERSION,
                kind: "JoinConfiguration",
                discovery: Discovery {
                    bootstrap_token: TokenDiscovery {
                        api_server_endpoint: &n.control_plane_endpoint,
                        token: &n.bootstrap_token,
                        ca_cert_hashes: vec![&n.ca_cert_hash],
                    },
                },
                node_registration,
                control_plane: match (n.role, n.certificate_key.as_deref()) {
                    (Role::ControlPlaneJoin, Some(certificate_key)) => Some(JoinControlPlane {
                        local_api_endpoint: LocalApiEndpoint {
                            advertise_address: &n.advertise_address,
                        },
                        certificate_key,
                    }),
                    // Validation refuses a control-plane join without a key.
                    _ => None,
                },
            };
            to_yaml("the kubeadm JoinConfiguration", &join)
        }
    }
}

fn cluster_configuration(n: &NodeBootstrap) -> ClusterConfiguration<'_> {
    let api_name = format!("api.{}.{}.{}", n.cluster, n.org, n.base_domain);
    let mut cert_sans = vec![api_name];
    if let Some((host, _)) = split_endpoint(&n.control_plane_endpoint) {
        if !cert_sans.iter().any(|s| s == host) {
            cert_sans.push(host.to_string());
        }
    }
    let mut extra_args = Vec::new();
    if let Some(oidc) = &n.oidc {
        extra_args.push(Arg {
            name: "oidc-issuer-url",
            value: &oidc.issuer_url,
        });
        extra_args.push(Arg {
            name: "oidc-client-id",
            value: &oidc.client_id,
        });
        if let Some(claim) = &oidc.username_claim {
            extra_args.push(Arg {
                name: "oidc-username-claim",
                value: claim,
            });
        }
        if let Some(claim) = &oidc.groups_claim {
            extra_args.push(Arg {
                name: "oidc-groups-claim",
                value: claim,
            });
        }
    }
    ClusterConfiguration {
        api_version: API_VERSION,
        kind: "ClusterConfiguration",
        cluster_name: &n.cluster,
        kubernetes_version: format!("v{}", version_digits(&n.kubernetes_version)),
        control_plane_endpoint: &n.control_plane_endpoint,
        networking: Networking {
            pod_subnet: &n.pod_cidr,
            service_subnet: &n.service_cidr,
            dns_domain: &n.dns_domain,
        },
        api_server: ApiServer {
            cert_sans,
            extra_args,
        },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitConfiguration<'a> {
    api_version: &'static str,
    kind: &'static str,
    bootstrap_tokens: Vec<BootstrapToken<'a>>,
    #[serde(rename = "localAPIEndpoint")]
    local_api_endpoint: LocalApiEndpoint<'a>,
    node_registration: NodeRegistration<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_key: Option<&'a str>,
}

#[derive(Serialize)]
struct BootstrapToken<'a> {
    token: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LocalApiEndpoint<'a> {
    advertise_address: &'a str,
}

#[derive(Serialize)]
struct NodeRegistration<'a> {
    name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterConfiguration<'a> {
    api_version: &'static str,
    kind: &'static str,
    cluster_name: &'a str,
    kubernetes_version: String,
    control_plane_endpoint: &'a str,
    networking: Networking<'a>,
    api_server: ApiServer<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Networking<'a> {
    pod_subnet: &'a str,
    service_subnet: &'a str,
    dns_domain: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiServer<'a> {
    #[serde(rename = "certSANs")]
    cert_sans: Vec<String>,
    /// v1beta4 takes a list of `{name, value}`, not a map.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    extra_args: Vec<Arg<'a>>,
}

#[derive(Serialize)]
struct Arg<'a> {
    name: &'static str,
    value: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinConfiguration<'a> {
    api_version: &'static str,
    kind: &'static str,
    discovery: Discovery<'a>,
    node_registration: NodeRegistration<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    control_plane: Option<JoinControlPlane<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Discovery<'a> {
    bootstrap_token: TokenDiscovery<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenDiscovery<'a> {
    api_server_endpoint: &'a str,
    token: &'a str,
    ca_cert_hashes: Vec<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinControlPlane<'a> {
    #[serde(rename = "localAPIEndpoint")]
    local_api_endpoint: LocalApiEndpoint<'a>,
    certificate_key: &'a str,
}
