//! User-data for Shoal's Kubernetes node image with kubeadm: the PKI, a kubeadm
//! configuration (`kubeadm.k8s.io/v1beta4`) naming the image's preloaded containers,
//! probe patches for the control plane and, on the first control-plane node, the pod
//! network (flannel's manifest, or Calico's `Installation` and its install script) in
//! `write_files`; then `kubeadm init` (and the pod network) or `kubeadm join` in
//! `runcmd`, then `phone_home`.

use serde::Serialize;

use crate::calico;
use crate::cloudconfig::{to_yaml, CloudConfig, WriteFile};
use crate::input::{NodeBootstrap, PodNetwork, Role};
use crate::nodeimage::{NodeImage, NODE_IMAGE};
use crate::validate::{split_endpoint, version_digits};
use crate::{BootstrapError, KUBEADM_CONFIG_PATH, OIDC_CA_PATH};

const API_VERSION: &str = "kubeadm.k8s.io/v1beta4";
/// The configuration holds the bootstrap token and the certificate key.
const CONFIG_MODE: u32 = 0o600;
/// Manifests and patches hold no secret.
const PUBLIC_MODE: u32 = 0o644;

/// Where the first control-plane node finds the pod network's manifest.
pub const FLANNEL_MANIFEST_PATH: &str = "/etc/kubernetes/addons/flannel.yaml";
/// Where kubeadm finds the control plane's probe patches.
pub const KUBEADM_PATCHES_DIR: &str = "/etc/kubernetes/patches";
/// How long the API server's etcd health and readiness checks wait.
const ETCD_CHECK_TIMEOUT: &str = "10s";
/// Where the endpoint's name is given its address.
const ETC_HOSTS: &str = "/etc/hosts";
/// The wrapper that runs `kubeadm init` or `join` once containerd answers, and again
/// after a failed preflight (`kubeadm-run.sh`).
pub const KUBEADM_RUN_PATH: &str = "/usr/local/sbin/shoal-kubeadm";
/// Its mode: root runs it.
const RUN_MODE: u32 = 0o755;

/// The wrapper's text, with the node image's CRI socket.
fn kubeadm_run(cri_socket: &str) -> String {
    include_str!("kubeadm-run.sh").replacen(
        "\nlog=",
        &format!("\nCRI_SOCKET={cri_socket}\nlog="),
        1,
    )
}

/// The administrator's kubeconfig `kubeadm init` writes.
const ADMIN_KUBECONFIG: &str = "/etc/kubernetes/admin.conf";

/// How long kubeadm waits for each phase. Its defaults (4 minutes for the control
/// plane) assume a native CPU; under emulation the API server takes several minutes to
/// start, so the waits are generous: a node that never comes up still fails, later.
const PHASE_TIMEOUT: &str = "20m0s";

/// Leader election of the controller manager and the scheduler. The defaults (15 s
/// lease, 10 s renew deadline, 5 s API timeouts) assume a native CPU; under emulation
/// a busy API server misses the renewal, the leader exits and, restarting, stops
/// allocating node pod CIDRs for minutes. A longer lease only delays a failover.
const LEADER_ELECTION: [(&str, &str); 3] = [
    ("leader-elect-lease-duration", "60s"),
    ("leader-elect-renew-deadline", "45s"),
    ("leader-elect-retry-period", "10s"),
];

/// Raft timing of the guest's etcd. A member fails a request it cannot commit
/// within 5 s plus two election timeouts: with the defaults (100 ms heartbeat, 1 s
/// election) that is 7 s, which a starved CPU misses (fsyncs of 4 s were measured
/// under emulation), and the controller manager, failing to renew its lease, exits.
/// A 5 s election timeout makes it 15 s; the heartbeat keeps the advised tenth.
const ETCD_TIMING: [(&str, &str); 2] =
    [("heartbeat-interval", "500"), ("election-timeout", "5000")];

/// The static pods whose probes are relaxed, and whether the container has a
/// readiness probe (only the API server's does).
const PROBED: [(&str, bool); 4] = [
    ("etcd", false),
    ("kube-apiserver", true),
    ("kube-controller-manager", false),
    ("kube-scheduler", false),
];

/// Renders `#cloud-config` user-data that makes `n` a Kubernetes node with kubeadm.
pub fn render_kubeadm(n: &NodeBootstrap) -> Result<String, BootstrapError> {
    render(n, false)
}

/// Renders the user-data of a group of identical workers (a cloud's auto-scaling
/// group): as [`render_kubeadm`], but with no host name or node name, so that each
/// node keeps the name its cloud gives it. `n.hostname` only names the group in errors.
pub fn render_kubeadm_group(n: &NodeBootstrap) -> Result<String, BootstrapError> {
    if n.role != Role::Worker {
        return Err(BootstrapError::GroupRole {
            role: n.role.as_str(),
        });
    }
    render(n, true)
}

fn render(n: &NodeBootstrap, group: bool) -> Result<String, BootstrapError> {
    n.validate()?;
    crate::validate::kubeadm_worker_files(n)?;
    let image = node_image(n)?;
    let mut patches = Vec::new();
    if n.role.is_control_plane() {
        for (component, readiness) in PROBED {
            patches.push((
                format!("{KUBEADM_PATCHES_DIR}/{component}+strategic.yaml"),
                probe_patch(component, readiness)?,
            ));
        }
    }
    let mut doc = CloudConfig::base(n);
    if group {
        doc.hostname = None;
    }
    if let (Some(addr), Some((host, _))) = (
        &n.endpoint_address,
        split_endpoint(&n.control_plane_endpoint),
    ) {
        doc.write_files.push(WriteFile::append(
            ETC_HOSTS,
            format!("{addr} {host}\n"),
            PUBLIC_MODE,
        ));
    }
    doc.write_files.push(WriteFile::new(
        KUBEADM_CONFIG_PATH,
        kubeadm_config(n, image, group)?,
        CONFIG_MODE,
    ));
    // Every control-plane node runs an API server that reads the issuer's CA; the
    // kubeadm-managed pki directory is mounted into its static pod.
    if let (true, Some(ca)) = (
        n.role.is_control_plane(),
        n.oidc.as_ref().and_then(|o| o.ca_pem.as_ref()),
    ) {
        doc.write_files
            .push(WriteFile::new(OIDC_CA_PATH, ca.clone(), PUBLIC_MODE));
    }
    for (path, content) in &patches {
        doc.write_files
            .push(WriteFile::new(path, content.clone(), PUBLIC_MODE));
    }
    if n.role == Role::ControlPlaneInit {
        let pod_cidr = n.pod_cidr.split(',').next().unwrap_or(&n.pod_cidr).trim();
        match n.pod_network {
            PodNetwork::Flannel => {
                // Validation made sure the endpoint is host:port.
                let api = split_endpoint(&n.control_plane_endpoint).ok_or_else(|| {
                    BootstrapError::Endpoint {
                        value: n.control_plane_endpoint.clone(),
                        why: "no port",
                    }
                })?;
                // flannel reaches the API by address: it starts before cluster DNS,
                // and its pod's own /etc/hosts is not the node's on every runtime.
                let api = match &n.endpoint_address {
                    Some(addr) => (addr.as_str(), api.1),
                    None => api,
                };
                doc.write_files.push(WriteFile::new(
                    FLANNEL_MANIFEST_PATH,
                    crate::flannel::manifest(pod_cidr, api, image)?,
                    PUBLIC_MODE,
                ));
            }
            PodNetwork::Calico => {
                doc.write_files.push(WriteFile::new(
                    calico::CALICO_INSTALLATION_PATH,
                    calico::installation(pod_cidr)?,
                    PUBLIC_MODE,
                ));
                doc.write_files.push(WriteFile::new(
                    calico::CALICO_INSTALL_PATH,
                    calico::install_script(ADMIN_KUBECONFIG),
                    RUN_MODE,
                ));
            }
        }
    }
    doc.write_files.push(WriteFile::new(
        KUBEADM_RUN_PATH,
        kubeadm_run(image.cri_socket),
        RUN_MODE,
    ));
    if n.pod_network == PodNetwork::Calico {
        // Calico's plugins land where the node image's runtime looks for them.
        doc.runcmd
            .push(vec!["mkdir", "-p", calico::OPERATOR_CNI_PARENT]);
        doc.runcmd.push(vec![
            "ln",
            "-sfn",
            calico::IMAGE_CNI_DIR,
            calico::OPERATOR_CNI_DIR,
        ]);
    }
    match n.role {
        Role::ControlPlaneInit => {
            doc.runcmd.push(vec![
                KUBEADM_RUN_PATH,
                "init",
                "--config",
                KUBEADM_CONFIG_PATH,
                "--upload-certs",
            ]);
            match n.pod_network {
                PodNetwork::Flannel => doc.runcmd.push(vec![
                    "kubectl",
                    "--kubeconfig",
                    ADMIN_KUBECONFIG,
                    "apply",
                    "-f",
                    FLANNEL_MANIFEST_PATH,
                ]),
                PodNetwork::Calico => doc.runcmd.push(vec![calico::CALICO_INSTALL_PATH]),
            }
        }
        Role::ControlPlaneJoin | Role::Worker => {
            doc.runcmd.push(vec![
                KUBEADM_RUN_PATH,
                "join",
                "--config",
                KUBEADM_CONFIG_PATH,
            ]);
        }
    }
    doc.render()
}

/// The node image that carries `n`'s Kubernetes version.
fn node_image(n: &NodeBootstrap) -> Result<&'static NodeImage, BootstrapError> {
    if version_digits(&n.kubernetes_version) == NODE_IMAGE.kubernetes_version {
        Ok(&NODE_IMAGE)
    } else {
        Err(BootstrapError::NoNodeImage {
            value: n.kubernetes_version.clone(),
            carried: NODE_IMAGE.kubernetes_version,
        })
    }
}

/// A strategic-merge patch of one static pod that gives its probes room on a slow CPU.
fn probe_patch(component: &'static str, readiness: bool) -> Result<String, BootstrapError> {
    let patch = PodPatch {
        spec: PodPatchSpec {
            containers: vec![ContainerPatch {
                name: component,
                startup_probe: Probe {
                    failure_threshold: 120,
                    period_seconds: 10,
                    timeout_seconds: 30,
                },
                liveness_probe: Probe {
                    failure_threshold: 20,
                    period_seconds: 30,
                    timeout_seconds: 30,
                },
                readiness_probe: readiness.then_some(Probe {
                    failure_threshold: 10,
                    period_seconds: 10,
                    timeout_seconds: 30,
                }),
            }],
        },
    };
    to_yaml("a kubeadm probe patch", &patch)
}

/// The kubeadm configuration file: `InitConfiguration` and `ClusterConfiguration` on
/// the first control-plane node, a `JoinConfiguration` on the others.
fn kubeadm_config(
    n: &NodeBootstrap,
    image: &'static NodeImage,
    group: bool,
) -> Result<String, BootstrapError> {
    let node_registration = NodeRegistration {
        name: (!group).then_some(n.hostname.as_str()),
        cri_socket: image.cri_socket,
    };
    let timeouts = Timeouts::generous();
    let patches = n.role.is_control_plane().then_some(Patches {
        directory: KUBEADM_PATCHES_DIR,
    });
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
                timeouts,
                patches,
            };
            let cluster = cluster_configuration(n, image);
            let kubelet = KubeletConfiguration {
                api_version: "kubelet.config.k8s.io/v1beta1",
                kind: "KubeletConfiguration",
                cgroup_driver: "systemd",
            };
            Ok(format!(
                "{}---\n{}---\n{}",
                to_yaml("the kubeadm InitConfiguration", &init)?,
                to_yaml("the kubeadm ClusterConfiguration", &cluster)?,
                to_yaml("the KubeletConfiguration", &kubelet)?
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
                timeouts,
                patches,
            };
            to_yaml("the kubeadm JoinConfiguration", &join)
        }
    }
}

fn cluster_configuration<'a>(
    n: &'a NodeBootstrap,
    image: &'static NodeImage,
) -> ClusterConfiguration<'a> {
    let api_name = format!("api.{}.{}.{}", n.cluster, n.org, n.base_domain);
    let mut cert_sans = vec![api_name];
    if let Some((host, _)) = split_endpoint(&n.control_plane_endpoint) {
        if !cert_sans.iter().any(|s| s == host) {
            cert_sans.push(host.to_string());
        }
    }
    // The API server's etcd checks give etcd 2 s by default; on an emulated CPU
    // shared by several guests etcd often takes longer, and /readyz then fails for
    // minutes although reads and writes work.
    let mut extra_args = vec![
        Arg {
            name: "etcd-healthcheck-timeout",
            value: ETCD_CHECK_TIMEOUT,
        },
        Arg {
            name: "etcd-readycheck-timeout",
            value: ETCD_CHECK_TIMEOUT,
        },
    ];
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
        if let Some(prefix) = &oidc.username_prefix {
            extra_args.push(Arg {
                name: "oidc-username-prefix",
                value: prefix,
            });
        }
        if let Some(prefix) = &oidc.groups_prefix {
            extra_args.push(Arg {
                name: "oidc-groups-prefix",
                value: prefix,
            });
        }
        if oidc.ca_pem.is_some() {
            extra_args.push(Arg {
                name: "oidc-ca-file",
                value: OIDC_CA_PATH,
            });
        }
    }
    ClusterConfiguration {
        api_version: API_VERSION,
        kind: "ClusterConfiguration",
        cluster_name: &n.cluster,
        kubernetes_version: format!("v{}", version_digits(&n.kubernetes_version)),
        control_plane_endpoint: &n.control_plane_endpoint,
        image_repository: image.image_repository,
        etcd: Etcd {
            local: LocalEtcd {
                image_tag: image.etcd_image_tag,
                extra_args: ETCD_TIMING
                    .iter()
                    .map(|&(name, value)| Arg { name, value })
                    .collect(),
            },
        },
        dns: Dns {
            image_tag: image.coredns_image_tag,
        },
        networking: Networking {
            pod_subnet: &n.pod_cidr,
            service_subnet: &n.service_cidr,
            dns_domain: &n.dns_domain,
        },
        api_server: ApiServer {
            cert_sans,
            extra_args,
        },
        controller_manager: Component::leader_elected(),
        scheduler: Component::leader_elected(),
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
    timeouts: Timeouts,
    #[serde(skip_serializing_if = "Option::is_none")]
    patches: Option<Patches>,
}

#[derive(Serialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct Timeouts {
    control_plane_component_health_check: &'static str,
    kubelet_health_check: &'static str,
    #[serde(rename = "kubernetesAPICall")]
    kubernetes_api_call: &'static str,
    #[serde(rename = "etcdAPICall")]
    etcd_api_call: &'static str,
    tls_bootstrap: &'static str,
    discovery: &'static str,
}

impl Timeouts {
    fn generous() -> Self {
        Self {
            control_plane_component_health_check: PHASE_TIMEOUT,
            kubelet_health_check: PHASE_TIMEOUT,
            kubernetes_api_call: PHASE_TIMEOUT,
            etcd_api_call: PHASE_TIMEOUT,
            tls_bootstrap: PHASE_TIMEOUT,
            discovery: PHASE_TIMEOUT,
        }
    }
}

#[derive(Serialize, Clone, Copy)]
struct Patches {
    directory: &'static str,
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

#[derive(Serialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct NodeRegistration<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    cri_socket: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterConfiguration<'a> {
    api_version: &'static str,
    kind: &'static str,
    cluster_name: &'a str,
    kubernetes_version: String,
    control_plane_endpoint: &'a str,
    image_repository: &'static str,
    etcd: Etcd,
    dns: Dns,
    networking: Networking<'a>,
    api_server: ApiServer<'a>,
    controller_manager: Component,
    scheduler: Component,
}

/// A control-plane component's settings: its extra flags.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Component {
    extra_args: Vec<Arg<'static>>,
}

impl Component {
    /// A leader-elected component with the relaxed election of [`LEADER_ELECTION`].
    fn leader_elected() -> Self {
        Self {
            extra_args: LEADER_ELECTION
                .iter()
                .map(|&(name, value)| Arg { name, value })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct Etcd {
    local: LocalEtcd,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LocalEtcd {
    image_tag: &'static str,
    extra_args: Vec<Arg<'static>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Dns {
    image_tag: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfiguration {
    api_version: &'static str,
    kind: &'static str,
    cgroup_driver: &'static str,
}

#[derive(Serialize)]
struct PodPatch {
    spec: PodPatchSpec,
}

#[derive(Serialize)]
struct PodPatchSpec {
    containers: Vec<ContainerPatch>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPatch {
    name: &'static str,
    startup_probe: Probe,
    liveness_probe: Probe,
    #[serde(skip_serializing_if = "Option::is_none")]
    readiness_probe: Option<Probe>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    failure_threshold: u32,
    period_seconds: u32,
    timeout_seconds: u32,
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
    timeouts: Timeouts,
    #[serde(skip_serializing_if = "Option::is_none")]
    patches: Option<Patches>,
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
