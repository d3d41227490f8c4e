//! The one error type of this crate.

use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::error::{PEMError, X509Error};

/// Why a PKI operation failed; each variant names the input at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A name supplied by the caller cannot be put into a certificate.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidInput {
        /// Which input was refused, e.g. "common name" or "DNS name".
        field: &'static str,
        /// The refused value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A server certificate was requested without any DNS name or IP address.
    #[error(
        "server certificate {common_name:?} needs at least one DNS name or IP address, \
         because TLS clients match only subject alternative names"
    )]
    NoSubjectAltNames {
        /// The common name of the refused certificate.
        common_name: String,
    },

    /// The requested lifetime is zero or too large to represent.
    #[error("certificate lifetime {ttl:?} is invalid: {reason}")]
    InvalidTtl {
        /// The refused lifetime.
        ttl: Duration,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The certificate would stay valid after the CA that signs it expires.
    #[error(
        "certificate {common_name:?} would expire at {requested}, after its CA {ca} \
         (expires at {ca_not_after}); rotate the CA or ask for a shorter lifetime"
    )]
    OutlivesCa {
        /// The common name of the refused certificate.
        common_name: String,
        /// The expiry the caller asked for.
        requested: OffsetDateTime,
        /// The subject of the CA.
        ca: String,
        /// When the CA expires.
        ca_not_after: OffsetDateTime,
    },

    /// The input is not PEM at all.
    #[error("{what} is not valid PEM")]
    Pem {
        /// Which input, e.g. "CA certificate".
        what: &'static str,
        /// The PEM decoder's complaint.
        #[source]
        source: PEMError,
    },

    /// The input is PEM, but of the wrong kind (e.g. a key where a certificate belongs).
    #[error("{what} is a PEM {found:?} block, expected {expected}")]
    PemLabel {
        /// Which input, e.g. "CA certificate".
        what: &'static str,
        /// The label that was found.
        found: String,
        /// The label(s) that are accepted.
        expected: &'static str,
    },

    /// The input holds more than the single object that was expected.
    #[error("{what} has data after its first object; pass exactly one")]
    TrailingData {
        /// Which input, e.g. "client certificate".
        what: &'static str,
    },

    /// A certificate could not be parsed as X.509.
    #[error("{what} is not a valid X.509 certificate")]
    Certificate {
        /// Which input, e.g. "client certificate".
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: X509Error,
    },

    /// A certificate signing request could not be parsed as PKCS#10.
    #[error("certificate signing request is not a valid PKCS#10 request")]
    Csr {
        /// The parser's complaint.
        #[source]
        source: X509Error,
    },

    /// A certificate signing request is not signed by the key it carries.
    #[error(
        "certificate signing request for {subject} has a bad or unsupported signature; \
         it was altered, or not signed with its own key"
    )]
    CsrSignature {
        /// The subject of the request.
        subject: String,
        /// The verifier's complaint.
        #[source]
        source: X509Error,
    },

    /// A subject lacks a usable common name or organization.
    #[error("{what} subject {subject:?} {reason}")]
    InvalidSubject {
        /// Which input, e.g. "certificate signing request".
        what: &'static str,
        /// The subject as found.
        subject: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The CA key is PKCS#8 PEM but not a valid P-256 key.
    #[error("CA private key is not a valid PKCS#8 ECDSA P-256 key")]
    CaKeyPkcs8 {
        /// The decoder's complaint.
        #[source]
        source: p256::pkcs8::Error,
    },

    /// The CA key is SEC1 ("EC PRIVATE KEY") PEM but not a valid P-256 key.
    #[error("CA private key is not a valid SEC1 ECDSA P-256 key")]
    CaKeySec1 {
        /// The decoder's complaint.
        #[source]
        source: p256::elliptic_curve::Error,
    },

    /// The CA certificate cannot be used to issue certificates.
    #[error("CA certificate {subject} cannot be used: {reason}")]
    UnusableCa {
        /// The subject of the CA certificate.
        subject: String,
        /// Why it cannot be used.
        reason: &'static str,
    },

    /// The CA key does not belong to the CA certificate.
    #[error("CA private key does not match the public key of CA certificate {subject}")]
    CaKeyMismatch {
        /// The subject of the CA certificate.
        subject: String,
    },

    /// A certificate names another issuer than this CA.
    #[error("certificate {subject} was issued by {issuer}, not by this CA ({ca})")]
    UnknownIssuer {
        /// The subject of the refused certificate.
        subject: String,
        /// The issuer it names.
        issuer: String,
        /// The subject of this CA.
        ca: String,
    },

    /// A certificate's signature was not made by this CA's key.
    #[error("certificate {subject} does not carry a valid signature of CA {ca}")]
    BadSignature {
        /// The subject of the refused certificate.
        subject: String,
        /// The subject of this CA.
        ca: String,
        /// The verifier's complaint.
        #[source]
        source: X509Error,
    },

    /// A certificate is not valid yet.
    #[error("certificate {subject} is not valid before {not_before}; check the clocks")]
    NotYetValid {
        /// The subject of the refused certificate.
        subject: String,
        /// When it becomes valid.
        not_before: OffsetDateTime,
    },

    /// A certificate has expired.
    #[error("certificate {subject} expired at {not_after}; get a new one")]
    Expired {
        /// The subject of the refused certificate.
        subject: String,
        /// When it expired.
        not_after: OffsetDateTime,
    },

    /// A certificate signed by this CA is not meant for client authentication.
    #[error("certificate {subject} is not a client certificate: {reason}")]
    NotClientCert {
        /// The subject of the refused certificate.
        subject: String,
        /// Why it cannot authenticate a client.
        reason: &'static str,
    },

    /// Assembling or signing a certificate or request failed.
    #[error("could not build the {what}")]
    Build {
        /// What was being built.
        what: &'static str,
        /// The builder's complaint.
        #[source]
        source: x509_cert::builder::Error,
    },

    /// DER or PEM encoding failed.
    #[error("could not encode the {what}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's complaint.
        #[source]
        source: x509_cert::der::Error,
    },

    /// A private key other than a CA's is not a valid PKCS#8 ECDSA P-256 key.
    #[error("{what} is not a valid PKCS#8 ECDSA P-256 private key")]
    KeyDecode {
        /// Which key, e.g. "private key" or "service-account private key".
        what: &'static str,
        /// The decoder's complaint.
        #[source]
        source: p256::pkcs8::Error,
    },

    /// A public key is not a valid ECDSA P-256 SubjectPublicKeyInfo.
    #[error("{what} is not a valid ECDSA P-256 public key (SubjectPublicKeyInfo)")]
    PublicKeyDecode {
        /// Which key, e.g. "service-account public key".
        what: &'static str,
        /// The decoder's complaint.
        #[source]
        source: p256::pkcs8::spki::Error,
    },

    /// A private key is not the one that belongs to its certificate or public key.
    #[error("the private key does not belong to {pair:?}; keep each key with its certificate")]
    KeyMismatch {
        /// The certificate or public key it was paired with, e.g. "apiserver.crt".
        pair: &'static str,
    },

    /// An entry of a cluster PKI bundle is absent.
    #[error(
        "the cluster PKI has no {file:?} entry; restore the whole bundle from where it \
         was stored, or generate a new one"
    )]
    MissingFile {
        /// The entry's name, e.g. "etcd-ca.key".
        file: &'static str,
    },

    /// An entry of a cluster PKI bundle cannot be used.
    #[error("the cluster PKI entry {file:?} is invalid")]
    InvalidFile {
        /// The entry's name, e.g. "apiserver.crt".
        file: &'static str,
        /// What is wrong with it.
        #[source]
        source: Box<PkiError>,
    },

    /// The renewal window is not shorter than the lifetime of the certificates it renews.
    #[error(
        "renewing {renew_before:?} before expiry with a leaf lifetime of {leaf_ttl:?} would \
         reissue every certificate on every renewal; choose a window shorter than the lifetime"
    )]
    InvalidRenewWindow {
        /// The requested renewal window.
        renew_before: Duration,
        /// The lifetime of leaf certificates.
        leaf_ttl: Duration,
    },

    /// A public key could not be encoded as SubjectPublicKeyInfo PEM.
    #[error("could not encode the public key as SubjectPublicKeyInfo PEM")]
    PublicKeyEncode {
        /// The encoder's complaint.
        #[source]
        source: p256::pkcs8::spki::Error,
    },

    /// A private key could not be encoded as PKCS#8 PEM.
    #[error("could not encode the private key as PKCS#8 PEM")]
    KeyEncode {
        /// The encoder's complaint.
        #[source]
        source: p256::pkcs8::Error,
    },
}
