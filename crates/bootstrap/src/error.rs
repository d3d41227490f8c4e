//! Why a node's bootstrap could not be rendered.
//!
//! Every input error names the field (as [`BootstrapError::field`] returns it, e.g.
//! `files[2].path`) and says what to change. Secrets (the bootstrap token, the
//! certificate key, file contents) are never echoed.

/// Why [`crate::NodeBootstrap`] could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A group of identical nodes was asked for a role that cannot be shared.
    #[error("role {role} cannot be rendered for a group of nodes: only workers come in groups")]
    GroupRole {
        /// The role given.
        role: &'static str,
    },
    /// A required field is empty.
    #[error("{field} is empty: {hint}")]
    Empty {
        /// The field, e.g. `hostname`.
        field: &'static str,
        /// What to put there.
        hint: &'static str,
    },
    /// A name that must be one DNS label is not.
    #[error(
        "{field} {value:?} is not a DNS label: use 1 to 63 lowercase letters, digits and '-', \
         starting and ending with a letter or digit"
    )]
    NotDnsLabel {
        /// The field, e.g. `cluster`.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// A name that must be a DNS name (labels joined by dots) is not.
    #[error(
        "{field} {value:?} is not a DNS name: use dot-separated labels of lowercase letters, \
         digits and '-', at most 253 characters in all"
    )]
    NotDnsName {
        /// The field, e.g. `dns_domain`.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// A value that YAML 1.1 readers (cloud-init's PyYAML, kubeadm's go-yaml) would take
    /// for a boolean or a number rather than a string.
    #[error(
        "{field} {value:?} would be read as a boolean or a number by cloud-init and kubeadm \
         (YAML 1.1): choose another value"
    )]
    Yaml11Ambiguous {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// `kubernetes_version` is not a release this renderer supports.
    #[error("kubernetes_version {value:?}: {why}")]
    KubernetesVersion {
        /// The value given.
        value: String,
        /// What is wrong and what to use.
        why: &'static str,
    },
    /// `control_plane_endpoint` is not `host:port`.
    #[error(
        "control_plane_endpoint {value:?}: {why}; write host:port, e.g. \
         api.demo.acme.shoal.local:443, 10.0.0.10:6443 or [fd00::10]:6443"
    )]
    Endpoint {
        /// The value given.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// `endpoint_address` is not an IP address.
    #[error("endpoint_address {value:?} is not an IP address: give the address of a control-plane node the endpoint's name stands for")]
    EndpointAddress {
        /// The value given.
        value: String,
    },
    /// `advertise_address` is not an IP address.
    #[error("advertise_address {value:?} is not an IP address: give the node's own IPv4 or IPv6 address")]
    AdvertiseAddress {
        /// The value given.
        value: String,
    },
    /// A CIDR field is malformed.
    #[error("{field} {value:?} is not a CIDR: {why}; write address/prefix, e.g. 10.244.0.0/16")]
    Cidr {
        /// `pod_cidr` or `service_cidr`.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// `bootstrap_token` is not in kubeadm's `[a-z0-9]{6}.[a-z0-9]{16}` format.
    #[error(
        "bootstrap_token is not a kubeadm token: it must be 6 characters of [a-z0-9], a dot, \
         and 16 characters of [a-z0-9] (like abcdef.0123456789abcdef); generate a new one"
    )]
    BootstrapToken,
    /// `ca_cert_hash` is not `sha256:` and 64 hex digits.
    #[error(
        "ca_cert_hash {value:?} must be \"sha256:\" followed by 64 hex digits: the SHA-256 of \
         the cluster CA's DER-encoded SubjectPublicKeyInfo"
    )]
    CaCertHash {
        /// The value given (a public hash, not a secret).
        value: String,
    },
    /// `certificate_key` is not 64 hex digits.
    #[error(
        "certificate_key must be 64 hex digits (a 32-byte AES key, as `kubeadm certs \
         certificate-key` prints)"
    )]
    CertificateKey,
    /// A joining control-plane node has no `certificate_key`.
    #[error(
        "certificate_key is required for role control-plane-join: pass the key the first \
         control-plane node uploaded its certificates with"
    )]
    MissingCertificateKey,
    /// A worker was given a `certificate_key`.
    #[error(
        "certificate_key is set for a worker: it decrypts the control plane's certificates, \
         so leave it unset for workers"
    )]
    UnexpectedCertificateKey,
    /// A file's path is unusable.
    #[error("files[{index}].path {path:?}: {why}")]
    FilePath {
        /// The file's index in `files`.
        index: usize,
        /// The path given.
        path: String,
        /// What is wrong and what to do.
        why: &'static str,
    },
    /// A file's permissions are unusable.
    #[error("files[{index}].permissions {mode:#o} for {path}: {why}")]
    FilePermissions {
        /// The file's index in `files`.
        index: usize,
        /// The file's path.
        path: String,
        /// The mode given.
        mode: u32,
        /// What is wrong and what to do.
        why: &'static str,
    },
    /// A field of `oidc` is unusable.
    #[error("oidc.{field}: {why}")]
    Oidc {
        /// The field inside `oidc`, e.g. `issuer_url`.
        field: &'static str,
        /// What is wrong and what to do.
        why: &'static str,
    },
    /// A bare-metal machine's production network is malformed.
    #[error("{field} {value:?}: {hint}")]
    HostNetwork {
        /// The field, e.g. `network.address`.
        field: &'static str,
        /// The value given.
        value: String,
        /// What to give.
        hint: &'static str,
    },
    /// `phone_home_url` is unusable.
    #[error("phone_home_url {value:?}: {why}")]
    PhoneHomeUrl {
        /// The value given.
        value: String,
        /// What is wrong and what to do.
        why: &'static str,
    },
    /// No Shoal node image carries the requested Kubernetes version, so kubeadm would
    /// look for container images that no node has.
    #[error(
        "kubernetes_version {value:?}: Shoal's Kubernetes node image carries {carried}; \
         use a release with that version"
    )]
    NoNodeImage {
        /// The value given.
        value: String,
        /// The version the node image carries.
        carried: &'static str,
    },
    /// serde_json could not serialize a document (a bug in this crate, not in the input).
    #[error("serializing {what} as JSON: {source}")]
    Json {
        /// Which document.
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// serde_yaml could not serialize a document (a bug in this crate, not in the input).
    #[error("serializing {what} as YAML: {source}")]
    Yaml {
        /// Which document.
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_yaml::Error,
    },
}

impl BootstrapError {
    /// The input field the error is about, in the form an API status names it
    /// (`hostname`, `files[2].path`, `oidc.issuer_url`); `None` for internal errors.
    pub fn field(&self) -> Option<String> {
        match self {
            Self::Empty { field, .. }
            | Self::NotDnsLabel { field, .. }
            | Self::NotDnsName { field, .. }
            | Self::Yaml11Ambiguous { field, .. }
            | Self::Cidr { field, .. }
            | Self::HostNetwork { field, .. } => Some((*field).to_string()),
            Self::KubernetesVersion { .. } | Self::NoNodeImage { .. } => {
                Some("kubernetes_version".into())
            }
            Self::Endpoint { .. } => Some("control_plane_endpoint".into()),
            Self::AdvertiseAddress { .. } => Some("advertise_address".into()),
            Self::EndpointAddress { .. } => Some("endpoint_address".into()),
            Self::BootstrapToken => Some("bootstrap_token".into()),
            Self::GroupRole { .. } => Some("role".into()),
            Self::CaCertHash { .. } => Some("ca_cert_hash".into()),
            Self::CertificateKey | Self::MissingCertificateKey | Self::UnexpectedCertificateKey => {
                Some("certificate_key".into())
            }
            Self::FilePath { index, .. } => Some(format!("files[{index}].path")),
            Self::FilePermissions { index, .. } => Some(format!("files[{index}].permissions")),
            Self::Oidc { field, .. } => Some(format!("oidc.{field}")),
            Self::PhoneHomeUrl { .. } => Some("phone_home_url".into()),
            Self::Yaml { .. } | Self::Json { .. } => None,
        }
    }
}
