//! Shoal's public key infrastructure: certificate authorities and the X.509
//! certificates they issue.
//!
//! It is for the management API's CA (its server certificate and the client certificates
//! users log in with) and for the CAs of each guest cluster. A client certificate's
//! subject carries the identity in Kubernetes' layout: CN is the user name and each O
//! entry a group.
//!
//! What this crate does:
//! - [`CertificateAuthority::generate`] / [`CertificateAuthority::from_pem`] make or load
//!   an ECDSA P-256 CA;
//! - it issues server and client certificates with fresh keys, signs clients' CSRs (made
//!   with [`generate_csr`], so that their keys never leave them), and checks client
//!   certificates presented at login with [`CertificateAuthority::verify_client_cert`];
//! - [`ClusterPki`] generates, stores, loads and renews the whole PKI of one guest
//!   cluster (cluster and etcd CAs, API server, etcd, service-account key, admin and
//!   worker client certificates) in kubeadm's layout, and [`ca_cert_hash`] gives the
//!   hash `kubeadm join` uses to trust the cluster CA.
//!
//! What it must not do:
//! - no I/O: everything is pure functions over PEM strings and DER bytes. Storing keys,
//!   reading files and serving TLS belong to the caller;
//! - no policy: which user may hold which name or group, and how long certificates may
//!   live, is decided by the caller (see [`csr_identity`]);
//! - never log or `Debug`-print private keys.

mod authority;
mod cluster;
mod csr;
mod encoding;
mod error;

use std::fmt;

pub use authority::CertificateAuthority;
pub use cluster::{
    ca_cert_hash, not_after, ClusterPki, ClusterPkiParams, PkiFile, ServiceAccountKey,
};
pub use csr::{csr_identity, generate_csr};
pub use error::PkiError;
pub use time::OffsetDateTime;

/// A certificate issued together with a new private key, both PEM encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM); hand it only to the certificate's holder.
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// A certificate signed from a CSR; the key stays with the requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCert {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its serial number as lowercase hex, for audit logs and revocation lists.
    pub serial: String,
    /// When it expires.
    pub not_after: OffsetDateTime,
}

/// Who a client certificate (or CSR) identifies, in Kubernetes' terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    /// The subject's common name: the user name.
    pub common_name: String,
    /// The subject's organizations, in order: the groups.
    pub organizations: Vec<String>,
}
