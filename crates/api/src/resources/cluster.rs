//! Cluster: a guest Kubernetes cluster.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resources::common::{Condition, MachineSize};
use crate::validate::{
    validate_dns1123_label, validate_oidc, Cidr, FieldCause, FieldErrors, Quantity,
};

/// Where a cluster's machines run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderType {
    /// QEMU/KVM virtual machines on the host cluster's workers.
    #[default]
    Kvm,
    /// EC2 instances in a VPC of the cluster's own.
    Aws,
}

/// AWS settings of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsProviderSpec {
    /// The AWS region, e.g. `eu-west-1`.
    pub region: String,
    /// Availability zones, one public and one private subnet in each; empty picks
    /// the region's first two.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub availability_zones: Vec<String>,
    /// The VPC CIDR, a /16 to /20. Unset, the server allocates the cluster its own
    /// from its VPC pool (`--aws-vpc-pool`, /16s of 10.0.0.0/10 by default) and
    /// reports it in `status.nodeCidr`. Each zone gets a private and a public subnet
    /// of an eighth of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_cidr: Option<Cidr>,
    /// EC2 instance type for control-plane nodes (`m6i.large` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_instance_type: Option<String>,
    /// EC2 instance type for workers (`m6i.large` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_instance_type: Option<String>,
    /// The Route 53 hosted zone for the cluster's records: its ID (`Z…`) or its
    /// name (`example.com`). Unset, no records are made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted_zone: Option<String>,
    /// The domain under which the cluster's names live:
    /// `api.<cluster>.<org>.<baseDomain>` and `*.<cluster>.<org>.<baseDomain>`.
    /// Unset, the hosted zone's name when it is a name, else the server's base domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_domain: Option<String>,
    /// An IAM role to assume for every AWS call of this cluster (for example one
    /// per organization, in the organization's own account). Unset, the
    /// Organization's `spec.aws.roleArn`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// A Secret in the cluster's namespace whose `accessKeyId` and
    /// `secretAccessKey` (and optional `sessionToken`) are the credentials of every
    /// AWS call of this cluster (the role, if any, is assumed with them). Unset,
    /// the Organization's `spec.aws.credentialsSecret`, else the server's own
    /// credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// Checks an IAM role ARN at `path`.
pub(crate) fn validate_role_arn(path: &str, arn: &str, errs: &mut FieldErrors) {
    if !arn.starts_with("arn:") || !arn.contains(":role/") {
        errs.check(
            path,
            Err(format!(
                "{arn:?} is not a role ARN: use arn:aws:iam::<account>:role/<name>"
            )),
        );
    }
}

/// Checks the name of a credentials Secret at `path`.
pub(crate) fn validate_secret_name(path: &str, name: &str, errs: &mut FieldErrors) {
    errs.check(path, crate::validate::validate_dns1123_subdomain(name));
}

impl AwsProviderSpec {
    /// The domain of the cluster's DNS names, given the server's own.
    pub fn base_domain<'a>(&'a self, server_default: &'a str) -> &'a str {
        if let Some(d) = &self.base_domain {
            return d.trim_end_matches('.');
        }
        match &self.hosted_zone {
            Some(zone) if zone.contains('.') => zone.trim_end_matches('.'),
            _ => server_default,
        }
    }

    fn validate(&self, errs: &mut FieldErrors) {
        let region_ok = !self.region.is_empty()
            && self
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !region_ok {
            errs.check(
                "spec.provider.aws.region",
                Err(format!(
                    "{:?} is not an AWS region: use its code, e.g. 'eu-west-1'",
                    self.region
                )),
            );
        }
        for (i, az) in self.availability_zones.iter().enumerate() {
            if !az.starts_with(&self.region) || az.len() <= self.region.len() {
                errs.check(
                    &format!("spec.provider.aws.availabilityZones[{i}]"),
                    Err(format!(
                        "{az:?} is not a zone of region {}: use e.g. '{}a'",
                        self.region, self.region
                    )),
                );
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, az) in self.availability_zones.iter().enumerate() {
            if !seen.insert(az) {
                errs.check(
                    &format!("spec.provider.aws.availabilityZones[{i}]"),
                    Err(format!("{az} is listed twice: list each zone once")),
                );
            }
        }
        if let Some(cidr) = &self.vpc_cidr {
            if !(16..=20).contains(&cidr.prefix()) {
                errs.check(
                    "spec.provider.aws.vpcCidr",
                    Err(format!(
                        "{cidr} is a /{}: AWS VPCs are /16 to /28 and Shoal needs room for \
                         four subnets, so use a /16 to /20",
                        cidr.prefix()
                    )),
                );
            }
        }
        if let Some(arn) = &self.role_arn {
            validate_role_arn("spec.provider.aws.roleArn", arn, errs);
        }
        if let Some(name) = &self.credentials_secret {
            validate_secret_name("spec.provider.aws.credentialsSecret", name, errs);
        }
    }
}

/// What the AWS provider made for a cluster, with the IDs AWS gave them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsStatus {
    /// The VPC's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// The zones the subnets are in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub availability_zones: Vec<String>,
    /// The API load balancer's DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_load_balancer: Option<String>,
    /// The ingress load balancer's DNS name: CNAME your own names to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_load_balancer: Option<String>,
    /// Every resource, in the order they were made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<AwsResource>,
}

/// One AWS resource of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsResource {
    /// Its type, e.g. `subnet`, `nat-gateway`, `instance`.
    pub kind: String,
    /// Its ID, ARN or name.
    pub id: String,
    /// What it is for, e.g. `private eu-west-1a`, `control-plane 2`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub purpose: String,
}

/// The provider and its settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderSpec {
    /// `kvm` or `aws`.
    #[serde(rename = "type", default)]
    pub type_: ProviderType,
    /// Settings for `aws`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsProviderSpec>,
}

/// The guest control plane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneSpec {
    /// 1, or 3 for high availability.
    pub replicas: u8,
    /// vCPUs of each control-plane machine.
    pub cpu: Quantity,
    /// Memory of each control-plane machine.
    pub memory: Quantity,
    /// Root disk of each control-plane machine.
    pub disk: Quantity,
}

impl ControlPlaneSpec {
    /// The size of each control-plane machine.
    pub fn size(&self) -> MachineSize {
        MachineSize {
            cpu: self.cpu.clone(),
            memory: self.memory.clone(),
            disk: self.disk.clone(),
        }
    }
}

/// The guest cluster's networks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterNetwork {
    /// Pod addresses.
    #[serde(default = "default_pod_cidr")]
    pub pod_cidr: Cidr,
    /// Service addresses.
    #[serde(default = "default_service_cidr")]
    pub service_cidr: Cidr,
}

impl Default for ClusterNetwork {
    fn default() -> Self {
        Self {
            pod_cidr: default_pod_cidr(),
            service_cidr: default_service_cidr(),
        }
    }
}

fn default_pod_cidr() -> Cidr {
    Cidr::from_str_const("10.244.0.0/16")
}

fn default_service_cidr() -> Cidr {
    Cidr::from_str_const("10.96.0.0/12")
}

/// OIDC settings of the guest API server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcSpec {
    /// The issuer URL (https).
    pub issuer_url: String,
    /// The client ID tokens are issued for.
    pub client_id: String,
    /// The claim that names the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_claim: Option<String>,
    /// The claim that lists the groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    /// Prepended to user names (`--oidc-username-prefix`); `-` for none. Unset, the
    /// API server prefixes every claim but `email` with the issuer URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_prefix: Option<String>,
    /// Prepended to group names (`--oidc-groups-prefix`), e.g. `oidc:`, so that
    /// the issuer's groups cannot collide with the cluster's own (`system:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_prefix: Option<String>,
    /// The PEM CA bundle that signed the issuer's serving certificate, when the
    /// guests' system roots do not (`--oidc-ca-file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
}

/// What users set on a Cluster.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "shoal.io",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    shortname = "cl",
    category = "shoal",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Release","type":"string","jsonPath":".spec.release"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".status.nodes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// The name of the Release to run.
    pub release: String,
    /// Where the machines run.
    #[serde(default)]
    pub provider: ProviderSpec,
    /// The control plane.
    pub control_plane: ControlPlaneSpec,
    /// The guest networks.
    #[serde(default)]
    pub network: ClusterNetwork,
    /// OIDC for the guest API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcSpec>,
    /// Where the gateway sends the cluster's ingress traffic on its workers.
    #[serde(default)]
    pub ingress: IngressSpec,
}

/// The worker ports the gateway sends ingress traffic to: the NodePorts of the
/// guest's ingress controller.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressSpec {
    /// The workers' port for plain HTTP, routed by the `Host` header on port 80.
    #[serde(default = "default_ingress_http_port")]
    pub http_port: u16,
    /// The workers' port for TLS, routed by SNI on port 443 without terminating TLS.
    #[serde(default = "default_ingress_https_port")]
    pub https_port: u16,
}

/// The default NodePort of the guest ingress controller for HTTP.
pub const DEFAULT_INGRESS_HTTP_PORT: u16 = 30080;
/// The default NodePort of the guest ingress controller for HTTPS.
pub const DEFAULT_INGRESS_HTTPS_PORT: u16 = 30443;

fn default_ingress_http_port() -> u16 {
    DEFAULT_INGRESS_HTTP_PORT
}

fn default_ingress_https_port() -> u16 {
    DEFAULT_INGRESS_HTTPS_PORT
}

impl Default for IngressSpec {
    fn default() -> Self {
        Self {
            http_port: DEFAULT_INGRESS_HTTP_PORT,
            https_port: DEFAULT_INGRESS_HTTPS_PORT,
        }
    }
}

/// The phase of a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ClusterPhase {
    /// Accepted, not yet being built.
    #[default]
    Pending,
    /// Machines are being created.
    Provisioning,
    /// The API answers through the gateway.
    Ready,
    /// Something needs a person; see the conditions.
    Failed,
    /// Being removed.
    Deleting,
}

/// What Shoal reports on a Cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// Conditions, each with a reason a person can act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The guest API's URL, through the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    /// Where clients reach the gateway (`HOST:PORT`, the server's
    /// `--gateway-public-address`): when the API endpoint's host name has no DNS
    /// record, connect here and send that name as the TLS server name (SNI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_address: Option<String>,
    /// Ready nodes over desired nodes, e.g. `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,
    /// The cluster's VXLAN network identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// The node network: on premises the guest's node network, on AWS the VPC's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_cidr: Option<String>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Control-plane and worker Machines that are Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<u32>,
    /// Control-plane and worker Machines wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_nodes: Option<u32>,
    /// The cluster CA certificate (PEM), for kubeconfigs and the gateway's health
    /// checks. Public; the key stays in the cluster's PKI Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<String>,
    /// What the AWS provider made (provider `aws` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsStatus>,
    /// While and after deletion: what the cluster controller removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<RemovedResources>,
}

/// What deleting a cluster removed, recorded in its final status and an Event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemovedResources {
    /// Machines (and so their VMs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<String>,
    /// Node pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_pools: Vec<String>,
    /// Secrets: the PKI and the Machines' bootstrap data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// The guest network: its VNI and node CIDR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// AWS resources (provider `aws`), as `kind` and ID.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aws: Vec<AwsResource>,
}

impl ClusterSpec {
    /// Checks values that the types alone cannot.
    pub fn validate(&self, errs: &mut FieldErrors) {
        errs.check("spec.release", validate_dns1123_label(&self.release));
        if !matches!(self.control_plane.replicas, 1 | 3) {
            errs.check(
                "spec.controlPlane.replicas",
                Err(format!(
                    "{} is not supported: use 1, or 3 for a highly available control plane",
                    self.control_plane.replicas
                )),
            );
        }
        self.control_plane
            .size()
            .validate("spec.controlPlane", errs);
        if self.network.pod_cidr.overlaps(&self.network.service_cidr) {
            errs.check(
                "spec.network.serviceCidr",
                Err(format!(
                    "{} overlaps the pod network {}: choose disjoint ranges",
                    self.network.service_cidr, self.network.pod_cidr
                )),
            );
        }
        for (field, port) in [
            ("spec.ingress.httpPort", self.ingress.http_port),
            ("spec.ingress.httpsPort", self.ingress.https_port),
        ] {
            if port == 0 {
                errs.check(field, Err("must be a port from 1 to 65535".to_string()));
            }
        }
        if self.ingress.http_port != 0 && self.ingress.http_port == self.ingress.https_port {
            errs.check(
                "spec.ingress.httpsPort",
                Err(format!(
                    "{} is also the HTTP port: give HTTP and HTTPS different ports",
                    self.ingress.https_port
                )),
            );
        }
        match (self.provider.type_, &self.provider.aws) {
            (ProviderType::Aws, None) => errs.push(FieldCause::required(
                "spec.provider.aws",
                "provider type aws needs spec.provider.aws.region",
            )),
            (ProviderType::Kvm, Some(_)) => errs.push(FieldCause::forbidden(
                "spec.provider.aws",
                "aws settings are only allowed with provider type aws",
            )),
            (ProviderType::Aws, Some(aws)) => aws.validate(errs),
            _ => {}
        }
        if let Some(oidc) = &self.oidc {
            validate_oidc(oidc, errs);
        }
    }
}
