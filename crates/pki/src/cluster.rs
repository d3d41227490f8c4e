//! The whole PKI of one guest Kubernetes cluster: its cluster CA and etcd CA, the
//! certificates of the API server and of etcd, the service-account key pair and two
//! client certificates, generated, stored, loaded and renewed as pure data.
//!
//! A bundle travels as a map from entry name to PEM ([`ClusterPki::to_files`]). Entry
//! names are valid Kubernetes Secret keys (no `/`: `etcd-ca.crt`, not `etcd/ca.crt`);
//! [`PkiFile::kubeadm_path`] gives where each one goes under kubeadm's
//! `/etc/kubernetes/pki`.
//!
//! Every function here takes the current time as an argument instead of reading a clock,
//! so that renewal decisions can be tested and replayed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName as ParsedName;
use zeroize::Zeroizing;

use crate::authority::{parse_cert, server_sans, Usage};
use crate::encoding::{decode_pem, identity_from_name, subject_name};
use crate::{CertificateAuthority, ClientIdentity, IssuedCert, PkiError};

/// What a guest cluster's PKI is generated (and renewed) for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPkiParams {
    /// The cluster's name, e.g. `prod`.
    pub cluster: String,
    /// The organization owning the cluster, e.g. `acme`.
    pub org: String,
    /// The DNS domain under which Shoal publishes clusters, e.g. `shoal.example`.
    pub base_domain: String,
    /// The cluster's internal DNS domain, e.g. `cluster.local`.
    pub dns_domain: String,
    /// The ClusterIP of the `kubernetes` Service (the first address of the service CIDR).
    pub api_service_ip: IpAddr,
    /// The control-plane nodes: machine name (also its host name) and node IP.
    pub control_plane: Vec<(String, IpAddr)>,
    /// The lifetime of both CAs.
    pub ca_ttl: Duration,
    /// The lifetime of every leaf certificate; never more than `ca_ttl`.
    pub leaf_ttl: Duration,
}

impl ClusterPkiParams {
    /// The API server's public DNS name: `api.<cluster>.<org>.<base_domain>`.
    pub fn api_dns_name(&self) -> String {
        format!("api.{}.{}.{}", self.cluster, self.org, self.base_domain)
    }

    fn check(&self) -> Result<(), PkiError> {
        if self.leaf_ttl > self.ca_ttl {
            return Err(PkiError::InvalidTtl {
                ttl: self.leaf_ttl,
                reason: "must not exceed the CA lifetime (ca_ttl)",
            });
        }
        Ok(())
    }
}

/// One entry of a cluster PKI bundle, named as in [`ClusterPki::to_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PkiFile {
    /// `ca.crt`: the cluster CA certificate.
    CaCert,
    /// `ca.key`: the cluster CA private key.
    CaKey,
    /// `apiserver.crt`: the API server's serving certificate.
    ApiServerCert,
    /// `apiserver.key`: its private key.
    ApiServerKey,
    /// `etcd-ca.crt`: the etcd CA certificate.
    EtcdCaCert,
    /// `etcd-ca.key`: the etcd CA private key.
    EtcdCaKey,
    /// `etcd-server.crt`: etcd's serving (and client) certificate.
    EtcdServerCert,
    /// `etcd-server.key`: its private key.
    EtcdServerKey,
    /// `etcd-peer.crt`: the certificate etcd members use with each other.
    EtcdPeerCert,
    /// `etcd-peer.key`: its private key.
    EtcdPeerKey,
    /// `sa.key`: the private key that signs service-account tokens.
    SaKey,
    /// `sa.pub`: its public key, which verifies them.
    SaPub,
    /// `admin.crt`: the cluster administrator's client certificate.
    AdminCert,
    /// `admin.key`: its private key.
    AdminKey,
    /// `worker.crt`: the client certificate worker nodes join with.
    WorkerCert,
    /// `worker.key`: its private key.
    WorkerKey,
}

impl PkiFile {
    /// Every entry, in the order of this enum.
    pub const ALL: [PkiFile; 16] = [
        PkiFile::CaCert,
        PkiFile::CaKey,
        PkiFile::ApiServerCert,
        PkiFile::ApiServerKey,
        PkiFile::EtcdCaCert,
        PkiFile::EtcdCaKey,
        PkiFile::EtcdServerCert,
        PkiFile::EtcdServerKey,
        PkiFile::EtcdPeerCert,
        PkiFile::EtcdPeerKey,
        PkiFile::SaKey,
        PkiFile::SaPub,
        PkiFile::AdminCert,
        PkiFile::AdminKey,
        PkiFile::WorkerCert,
        PkiFile::WorkerKey,
    ];

    /// The entry's name in [`ClusterPki::to_files`]; a valid Kubernetes Secret key.
    pub const fn name(self) -> &'static str {
        match self {
            PkiFile::CaCert => "ca.crt",
            PkiFile::CaKey => "ca.key",
            PkiFile::ApiServerCert => "apiserver.crt",
            PkiFile::ApiServerKey => "apiserver.key",
            PkiFile::EtcdCaCert => "etcd-ca.crt",
            PkiFile::EtcdCaKey => "etcd-ca.key",
            PkiFile::EtcdServerCert => "etcd-server.crt",
            PkiFile::EtcdServerKey => "etcd-server.key",
            PkiFile::EtcdPeerCert => "etcd-peer.crt",
            PkiFile::EtcdPeerKey => "etcd-peer.key",
            PkiFile::SaKey => "sa.key",
            PkiFile::SaPub => "sa.pub",
            PkiFile::AdminCert => "admin.crt",
            PkiFile::AdminKey => "admin.key",
            PkiFile::WorkerCert => "worker.crt",
            PkiFile::WorkerKey => "worker.key",
        }
    }

    /// The entry's path relative to kubeadm's certificate directory (`/etc/kubernetes/pki`).
    pub const fn kubeadm_path(self) -> &'static str {
        match self {
            PkiFile::EtcdCaCert => "etcd/ca.crt",
            PkiFile::EtcdCaKey => "etcd/ca.key",
            PkiFile::EtcdServerCert => "etcd/server.crt",
            PkiFile::EtcdServerKey => "etcd/server.key",
            PkiFile::EtcdPeerCert => "etcd/peer.crt",
            PkiFile::EtcdPeerKey => "etcd/peer.key",
            other => other.name(),
        }
    }

    /// The entry with this [`name`](Self::name), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|file| file.name() == name)
    }
}

impl fmt::Display for PkiFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The key pair that signs and verifies service-account tokens (ECDSA P-256, ES256).
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccountKey {
    /// The private key (PKCS#8 PEM), for kube-controller-manager only.
    pub private_key_pem: String,
    /// The public key (SubjectPublicKeyInfo PEM), for kube-apiserver.
    pub public_key_pem: String,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("private_key_pem", &"[redacted]")
            .field("public_key_pem", &self.public_key_pem)
            .finish()
    }
}

/// The complete PKI of one guest cluster. Built only by [`generate`](Self::generate),
/// [`renew`](Self::renew) or [`from_files`](Self::from_files), so its parts always fit:
/// every key belongs to its certificate and every leaf is signed by its CA.
#[derive(Debug, Clone)]
pub struct ClusterPki {
    ca: CertificateAuthority,
    etcd_ca: CertificateAuthority,
    apiserver: IssuedCert,
    etcd_server: IssuedCert,
    etcd_peer: IssuedCert,
    service_account: ServiceAccountKey,
    admin: IssuedCert,
    worker: IssuedCert,
}

/// The leaf certificates of a bundle; decides their subject, SANs, usage and CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    ApiServer,
    EtcdServer,
    EtcdPeer,
    Admin,
    Worker,
}

impl Leaf {
    const ALL: [Leaf; 5] = [
        Leaf::ApiServer,
        Leaf::EtcdServer,
        Leaf::EtcdPeer,
        Leaf::Admin,
        Leaf::Worker,
    ];

    fn files(self) -> (PkiFile, PkiFile) {
        match self {
            Leaf::ApiServer => (PkiFile::ApiServerCert, PkiFile::ApiServerKey),
            Leaf::EtcdServer => (PkiFile::EtcdServerCert, PkiFile::EtcdServerKey),
            Leaf::EtcdPeer => (PkiFile::EtcdPeerCert, PkiFile::EtcdPeerKey),
            Leaf::Admin => (PkiFile::AdminCert, PkiFile::AdminKey),
            Leaf::Worker => (PkiFile::WorkerCert, PkiFile::WorkerKey),
        }
    }

    fn on_etcd_ca(self) -> bool {
        matches!(self, Leaf::EtcdServer | Leaf::EtcdPeer)
    }

    fn identity(self) -> ClientIdentity {
        let (common_name, organizations): (&str, &[&str]) = match self {
            Leaf::ApiServer => ("kube-apiserver", &[]),
            Leaf::EtcdServer => ("kube-etcd", &[]),
            Leaf::EtcdPeer => ("kube-etcd-peer", &[]),
            Leaf::Admin => ("kubernetes-admin", &["system:masters"]),
            Leaf::Worker => ("shoal:worker", &["system:nodes"]),
        };
        ClientIdentity {
            common_name: common_name.to_owned(),
            organizations: organizations.iter().map(|&o| o.to_owned()).collect(),
        }
    }

    /// The DNS names and IPs the certificate must carry; `None` for client certificates.
    fn sans(self, params: &ClusterPkiParams) -> Option<(Vec<String>, Vec<IpAddr>)> {
        let machines = params.control_plane.iter().map(|(name, _)| name.clone());
        let node_ips = params.control_plane.iter().map(|&(_, ip)| ip);
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (dns, ips): (Vec<String>, Vec<IpAddr>) = match self {
            Leaf::ApiServer => {
                let domain = &params.dns_domain;
                let dns = [
                    "kubernetes".to_owned(),
                    "kubernetes.default".to_owned(),
                    "kubernetes.default.svc".to_owned(),
                    format!("kubernetes.default.svc.{domain}"),
                    params.api_dns_name(),
                    "localhost".to_owned(),
                ];
                let ips = [params.api_service_ip, loopback];
                (
                    dns.into_iter().chain(machines).collect(),
                    ips.into_iter().chain(node_ips).collect(),
                )
            }
            Leaf::EtcdServer | Leaf::EtcdPeer => (
                std::iter::once("localhost".to_owned())
                    .chain(machines)
                    .collect(),
                std::iter::once(loopback).chain(node_ips).collect(),
            ),
            Leaf::Admin | Leaf::Worker => return None,
        };
        Some((dedup(dns), dedup(ips)))
    }

    /// Issues this certificate from `ca` at `now`; its lifetime is capped at the CA's.
    fn issue(
        self,
        params: &ClusterPkiParams,
        ca: &CertificateAuthority,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        let ClientIdentity {
            common_name,
            organizations,
        } = self.identity();
        let usage = match self.sans(params) {
            None => Usage::Client,
            Some((dns, ips)) => {
                let sans = server_sans(&common_name, &dns, &ips)?;
                if self == Leaf::ApiServer {
                    Usage::Server(sans)
                } else {
                    Usage::ServerAndClient(sans)
                }
            }
        };
        let subject = subject_name("certificate", &common_name, &organizations)?;
        let ca_left = u64::try_from(ca.not_after().unix_timestamp() - now.unix_timestamp())
            .map(Duration::from_secs)
            .unwrap_or(Duration::ZERO);
        let ttl = params.leaf_ttl.min(ca_left);
        ca.issue_with_new_key(&common_name, subject, usage, ttl, now)
    }

    /// Whether `cert` must be reissued: it expires within `renew_before` of `now`, or its
    /// subject or SANs are no longer what `params` call for.
    fn needs_renewal(
        self,
        cert: &IssuedCert,
        params: &ClusterPkiParams,
        now: OffsetDateTime,
        renew_before: Duration,
    ) -> Result<bool, PkiError> {
        let (cert_file, _) = self.files();
        let in_file = |source| PkiError::InvalidFile {
            file: cert_file.name(),
            source: Box::new(source),
        };
        let der = cert_der(&cert.cert_pem).map_err(in_file)?;
        let parsed = parse_cert("certificate", &der).map_err(in_file)?;
        if due(parsed.validity().not_after.to_datetime(), now, renew_before) {
            return Ok(true);
        }
        if identity_from_name("certificate", parsed.subject()).ok() != Some(self.identity()) {
            return Ok(true);
        }
        let wanted = self.sans(params).map(|(dns, ips)| san_set(&dns, &ips));
        Ok(wanted != cert_sans(&parsed).map_err(in_file)?)
    }
}

impl ClusterPki {
    /// Generates a new bundle at `now`: two CAs valid for `ca_ttl`, leaves valid for
    /// `leaf_ttl`, and a service-account key pair, all with fresh ECDSA P-256 keys.
    pub fn generate(params: &ClusterPkiParams, now: OffsetDateTime) -> Result<Self, PkiError> {
        params.check()?;
        let ca = new_ca(params, "cluster", now)?;
        let etcd_ca = new_ca(params, "etcd", now)?;
        let issue = |leaf: Leaf| {
            let signer = if leaf.on_etcd_ca() { &etcd_ca } else { &ca };
            leaf.issue(params, signer, now)
        };
        Ok(Self {
            apiserver: issue(Leaf::ApiServer)?,
            etcd_server: issue(Leaf::EtcdServer)?,
            etcd_peer: issue(Leaf::EtcdPeer)?,
            admin: issue(Leaf::Admin)?,
            worker: issue(Leaf::Worker)?,
            service_account: new_service_account_key()?,
            ca,
            etcd_ca,
        })
    }

    /// The cluster CA: signs the API server's and the client certificates, and is what
    /// kubelets and kubectl trust.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The etcd CA: signs etcd's server and peer certificates.
    pub fn etcd_ca(&self) -> &CertificateAuthority {
        &self.etcd_ca
    }

    /// The API server's serving certificate (server-auth), signed by the cluster CA.
    pub fn apiserver(&self) -> &IssuedCert {
        &self.apiserver
    }

    /// etcd's serving certificate (server- and client-auth), signed by the etcd CA.
    pub fn etcd_server(&self) -> &IssuedCert {
        &self.etcd_server
    }

    /// etcd's peer certificate (server- and client-auth), signed by the etcd CA.
    pub fn etcd_peer(&self) -> &IssuedCert {
        &self.etcd_peer
    }

    /// The service-account token signing key pair; never replaced by renewal.
    pub fn service_account(&self) -> &ServiceAccountKey {
        &self.service_account
    }

    /// The administrator's client certificate: `CN=kubernetes-admin, O=system:masters`.
    pub fn admin(&self) -> &IssuedCert {
        &self.admin
    }

    /// The worker nodes' client certificate: `CN=shoal:worker, O=system:nodes`.
    pub fn worker(&self) -> &IssuedCert {
        &self.worker
    }

    fn leaf(&self, leaf: Leaf) -> &IssuedCert {
        match leaf {
            Leaf::ApiServer => &self.apiserver,
            Leaf::EtcdServer => &self.etcd_server,
            Leaf::EtcdPeer => &self.etcd_peer,
            Leaf::Admin => &self.admin,
            Leaf::Worker => &self.worker,
        }
    }

    fn leaf_mut(&mut self, leaf: Leaf) -> &mut IssuedCert {
        match leaf {
            Leaf::ApiServer => &mut self.apiserver,
            Leaf::EtcdServer => &mut self.etcd_server,
            Leaf::EtcdPeer => &mut self.etcd_peer,
            Leaf::Admin => &mut self.admin,
            Leaf::Worker => &mut self.worker,
        }
    }

    /// The PEM of one entry.
    pub fn file(&self, file: PkiFile) -> &str {
        match file {
            PkiFile::CaCert => self.ca.cert_pem(),
            PkiFile::CaKey => self.ca.key_pem(),
            PkiFile::ApiServerCert => &self.apiserver.cert_pem,
            PkiFile::ApiServerKey => &self.apiserver.key_pem,
            PkiFile::EtcdCaCert => self.etcd_ca.cert_pem(),
            PkiFile::EtcdCaKey => self.etcd_ca.key_pem(),
            PkiFile::EtcdServerCert => &self.etcd_server.cert_pem,
            PkiFile::EtcdServerKey => &self.etcd_server.key_pem,
            PkiFile::EtcdPeerCert => &self.etcd_peer.cert_pem,
            PkiFile::EtcdPeerKey => &self.etcd_peer.key_pem,
            PkiFile::SaKey => &self.service_account.private_key_pem,
            PkiFile::SaPub => &self.service_account.public_key_pem,
            PkiFile::AdminCert => &self.admin.cert_pem,
            PkiFile::AdminKey => &self.admin.key_pem,
            PkiFile::WorkerCert => &self.worker.cert_pem,
            PkiFile::WorkerKey => &self.worker.key_pem,
        }
    }

    /// Every entry as PEM, keyed by [`PkiFile::name`] (valid Secret keys, no `/`).
    pub fn to_files(&self) -> BTreeMap<String, String> {
        PkiFile::ALL
            .into_iter()
            .map(|file| (file.name().to_owned(), self.file(file).to_owned()))
            .collect()
    }

    /// Loads a bundle written by [`to_files`](Self::to_files), checking that each key
    /// belongs to its certificate and each leaf is signed by its CA. Entries with other
    /// names are ignored; expired certificates are accepted (see [`renew`](Self::renew)).
    pub fn from_files(files: &BTreeMap<String, String>) -> Result<Self, PkiError> {
        let get = |file: PkiFile| {
            files
                .get(file.name())
                .map(String::as_str)
                .ok_or(PkiError::MissingFile { file: file.name() })
        };
        let load_ca = |cert: PkiFile, key: PkiFile| {
            CertificateAuthority::from_pem(get(cert)?, get(key)?).map_err(|e| {
                let file = if ca_key_fault(&e) { key } else { cert };
                PkiError::InvalidFile {
                    file: file.name(),
                    source: Box::new(e),
                }
            })
        };
        let ca = load_ca(PkiFile::CaCert, PkiFile::CaKey)?;
        let etcd_ca = load_ca(PkiFile::EtcdCaCert, PkiFile::EtcdCaKey)?;
        let load_leaf = |leaf: Leaf| {
            let (cert, key) = leaf.files();
            let signer = if leaf.on_etcd_ca() { &etcd_ca } else { &ca };
            load_leaf(signer, cert, get(cert)?, key, get(key)?)
        };
        Ok(Self {
            apiserver: load_leaf(Leaf::ApiServer)?,
            etcd_server: load_leaf(Leaf::EtcdServer)?,
            etcd_peer: load_leaf(Leaf::EtcdPeer)?,
            admin: load_leaf(Leaf::Admin)?,
            worker: load_leaf(Leaf::Worker)?,
            service_account: load_service_account_key(get(PkiFile::SaKey)?, get(PkiFile::SaPub)?)?,
            ca,
            etcd_ca,
        })
    }

    /// Renews what is due at `now` and returns the new bundle with the names of the
    /// entries that changed (in [`PkiFile::ALL`] order; empty when nothing was due).
    ///
    /// - A CA expiring within `renew_before` is replaced with a new key, and every leaf
    ///   it signs is reissued. Whatever trusts the old CA must then be given the new one.
    /// - A leaf is reissued, with a new key, when it expires within `renew_before`, or
    ///   when its subject or SANs differ from what `params` call for (e.g. a control-plane
    ///   node was added). A leaf never outlives its CA: its lifetime is capped at the CA's.
    /// - The service-account key pair is never replaced: that would invalidate every
    ///   service-account token in the cluster.
    pub fn renew(
        &self,
        params: &ClusterPkiParams,
        now: OffsetDateTime,
        renew_before: Duration,
    ) -> Result<(ClusterPki, Vec<String>), PkiError> {
        params.check()?;
        if renew_before >= params.leaf_ttl {
            return Err(PkiError::InvalidRenewWindow {
                renew_before,
                leaf_ttl: params.leaf_ttl,
            });
        }
        let mut next = self.clone();
        let mut renewed = BTreeSet::new();
        let ca_renewed = due(self.ca.not_after(), now, renew_before);
        if ca_renewed {
            next.ca = new_ca(params, "cluster", now)?;
            renewed.extend([PkiFile::CaCert, PkiFile::CaKey]);
        }
        let etcd_ca_renewed = due(self.etcd_ca.not_after(), now, renew_before);
        if etcd_ca_renewed {
            next.etcd_ca = new_ca(params, "etcd", now)?;
            renewed.extend([PkiFile::EtcdCaCert, PkiFile::EtcdCaKey]);
        }
        for leaf in Leaf::ALL {
            let ca_changed = if leaf.on_etcd_ca() {
                etcd_ca_renewed
            } else {
                ca_renewed
            };
            if ca_changed || leaf.needs_renewal(self.leaf(leaf), params, now, renew_before)? {
                let signer = if leaf.on_etcd_ca() {
                    &next.etcd_ca
                } else {
                    &next.ca
                };
                let issued = leaf.issue(params, signer, now)?;
                *next.leaf_mut(leaf) = issued;
                let (cert, key) = leaf.files();
                renewed.extend([cert, key]);
            }
        }
        let renewed = renewed.into_iter().map(|f| f.name().to_owned()).collect();
        Ok((next, renewed))
    }
}

/// When a PEM certificate expires.
pub fn not_after(cert_pem: &str) -> Result<OffsetDateTime, PkiError> {
    let der = cert_der(cert_pem)?;
    let cert = parse_cert("certificate", &der)?;
    Ok(cert.validity().not_after.to_datetime())
}

/// kubeadm's discovery hash of a CA certificate (`--discovery-token-ca-cert-hash`):
/// `sha256:` and the lowercase hex SHA-256 of its DER SubjectPublicKeyInfo.
pub fn ca_cert_hash(cert_pem: &str) -> Result<String, PkiError> {
    let der = cert_der(cert_pem)?;
    let cert = parse_cert("CA certificate", &der)?;
    let digest = Sha256::digest(cert.public_key().raw);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// Whether something expiring at `not_after` is within `renew_before` of `now` (or past).
fn due(not_after: OffsetDateTime, now: OffsetDateTime, renew_before: Duration) -> bool {
    not_after - now <= renew_before
}

fn new_ca(
    params: &ClusterPkiParams,
    kind: &str,
    now: OffsetDateTime,
) -> Result<CertificateAuthority, PkiError> {
    let common_name = format!("shoal {kind} CA {}/{}", params.org, params.cluster);
    CertificateAuthority::generate_at(&common_name, params.ca_ttl, now)
}

fn new_service_account_key() -> Result<ServiceAccountKey, PkiError> {
    let key = SigningKey::random(&mut rand::rngs::OsRng);
    let private_key_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|source| PkiError::KeyEncode { source })?;
    let public_key_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|source| PkiError::PublicKeyEncode { source })?;
    Ok(ServiceAccountKey {
        private_key_pem: private_key_pem.to_string(),
        public_key_pem,
    })
}

fn cert_der(cert_pem: &str) -> Result<Vec<u8>, PkiError> {
    decode_pem("certificate", cert_pem, &["CERTIFICATE"], "\"CERTIFICATE\"").map(|(_, der)| der)
}

/// A PKCS#8 PEM ECDSA P-256 private key.
fn private_key(what: &'static str, pem: &str) -> Result<SigningKey, PkiError> {
    let (_, der) = decode_pem(what, pem, &["PRIVATE KEY"], "\"PRIVATE KEY\"")?;
    let der = Zeroizing::new(der);
    SigningKey::from_pkcs8_der(&der).map_err(|source| PkiError::KeyDecode { what, source })
}

/// Whether an error of [`CertificateAuthority::from_pem`] is the key's fault.
fn ca_key_fault(e: &PkiError) -> bool {
    const KEY: &str = "CA private key";
    match e {
        PkiError::CaKeyPkcs8 { .. }
        | PkiError::CaKeySec1 { .. }
        | PkiError::CaKeyMismatch { .. } => true,
        PkiError::Pem { what, .. }
        | PkiError::PemLabel { what, .. }
        | PkiError::TrailingData { what } => *what == KEY,
        _ => false,
    }
}

/// Checks a leaf certificate and key read from a bundle.
fn load_leaf(
    ca: &CertificateAuthority,
    cert_file: PkiFile,
    cert_pem: &str,
    key_file: PkiFile,
    key_pem: &str,
) -> Result<IssuedCert, PkiError> {
    let invalid = |file: PkiFile| {
        move |source| PkiError::InvalidFile {
            file: file.name(),
            source: Box::new(source),
        }
    };
    let der = cert_der(cert_pem).map_err(invalid(cert_file))?;
    let cert = parse_cert("certificate", &der).map_err(invalid(cert_file))?;
    ca.check_issued(&cert).map_err(invalid(cert_file))?;
    let key = private_key("private key", key_pem).map_err(invalid(key_file))?;
    let cert_key = VerifyingKey::from_sec1_bytes(&cert.public_key().subject_public_key.data).ok();
    if cert_key.as_ref() != Some(key.verifying_key()) {
        return Err(invalid(key_file)(PkiError::KeyMismatch {
            pair: cert_file.name(),
        }));
    }
    Ok(IssuedCert {
        cert_pem: cert_pem.to_owned(),
        key_pem: key_pem.to_owned(),
    })
}

/// Checks the service-account key pair read from a bundle.
fn load_service_account_key(
    private_pem: &str,
    public_pem: &str,
) -> Result<ServiceAccountKey, PkiError> {
    let invalid = |file: PkiFile| {
        move |source| PkiError::InvalidFile {
            file: file.name(),
            source: Box::new(source),
        }
    };
    let key =
        private_key("service-account private key", private_pem).map_err(invalid(PkiFile::SaKey))?;
    const WHAT: &str = "service-account public key";
    let (_, der) = decode_pem(WHAT, public_pem, &["PUBLIC KEY"], "\"PUBLIC KEY\"")
        .map_err(invalid(PkiFile::SaPub))?;
    let public = VerifyingKey::from_public_key_der(&der)
        .map_err(|source| PkiError::PublicKeyDecode { what: WHAT, source })
        .map_err(invalid(PkiFile::SaPub))?;
    if &public != key.verifying_key() {
        return Err(invalid(PkiFile::SaKey)(PkiError::KeyMismatch {
            pair: PkiFile::SaPub.name(),
        }));
    }
    Ok(ServiceAccountKey {
        private_key_pem: private_pem.to_owned(),
        public_key_pem: public_pem.to_owned(),
    })
}

/// SANs in a comparable form: `DNS:<name>` and `IP:<address>`.
fn san_set(dns: &[String], ips: &[IpAddr]) -> BTreeSet<String> {
    let dns = dns.iter().map(|name| format!("DNS:{name}"));
    let ips = ips.iter().map(|ip| format!("IP:{ip}"));
    dns.chain(ips).collect()
}

/// A certificate's SANs as [`san_set`] writes them; `None` if it has no SAN extension.
fn cert_sans(cert: &X509Certificate<'_>) -> Result<Option<BTreeSet<String>>, PkiError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|source| PkiError::Certificate {
            what: "certificate",
            source,
        })?;
    Ok(san.map(|san| {
        san.value
            .general_names
            .iter()
            .map(|name| match name {
                ParsedName::DNSName(dns) => format!("DNS:{dns}"),
                ParsedName::IPAddress(bytes) => match ip_from_bytes(bytes) {
                    Some(ip) => format!("IP:{ip}"),
                    None => format!("IP bytes:{bytes:?}"),
                },
                other => format!("other:{other:?}"),
            })
            .collect()
    }))
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|v6| IpAddr::V6(Ipv6Addr::from(v6)))
}

/// Drops repeated items, keeping the first of each in order.
fn dedup<T: Clone + Ord>(items: Vec<T>) -> Vec<T> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(item.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_secret_keys_and_unique() {
        let names: BTreeSet<_> = PkiFile::ALL.iter().map(|f| f.name()).collect();
        let paths: BTreeSet<_> = PkiFile::ALL.iter().map(|f| f.kubeadm_path()).collect();
        assert_eq!(names.len(), PkiFile::ALL.len());
        assert_eq!(paths.len(), PkiFile::ALL.len());
        for file in PkiFile::ALL {
            let name = file.name();
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
                "{name} is not a valid Secret key"
            );
            assert_eq!(PkiFile::from_name(name), Some(file));
            assert_eq!(file.to_string(), name);
        }
        assert_eq!(PkiFile::EtcdPeerKey.kubeadm_path(), "etcd/peer.key");
        assert_eq!(PkiFile::SaPub.kubeadm_path(), "sa.pub");
        assert_eq!(PkiFile::from_name("etcd/ca.crt"), None);
    }

    #[test]
    fn due_compares_remaining_time_with_the_window() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(10_000);
        let hour = Duration::from_secs(3600);
        assert!(!due(now + time::Duration::hours(2), now, hour));
        assert!(due(now + time::Duration::hours(1), now, hour));
        assert!(due(now - time::Duration::hours(1), now, hour));
        assert!(due(now, now, Duration::ZERO));
    }

    #[test]
    fn sans_are_deduplicated_in_order() {
        assert_eq!(dedup(vec![3, 1, 3, 2, 1]), [3, 1, 2]);
        assert_eq!(
            ip_from_bytes(&[10, 0, 0, 1]),
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(ip_from_bytes(&[1, 2, 3]), None);
    }
}
