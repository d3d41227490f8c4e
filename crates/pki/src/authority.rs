//! A certificate authority held in memory: issues, signs and verifies certificates.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use time::OffsetDateTime;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::oid::db::rfc5280::{ID_KP_CLIENT_AUTH, ID_KP_SERVER_AUTH};
use x509_cert::der::{Decode, Encode, EncodePem};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectAltName};
use x509_cert::name::Name;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;
use zeroize::Zeroizing;

use crate::csr::parse_csr;
use crate::encoding::{
    check_name, decode_pem, dns_san, expiry, identity_from_name, random_serial, subject_name,
    validity, x509_error, CLOCK_SKEW,
};
use crate::{ClientIdentity, IssuedCert, PkiError, SignedCert};

/// How long a CA made by [`CertificateAuthority::generate`] is valid: ten years of 365 days.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// A CA certificate with its ECDSA P-256 private key, able to issue and verify certificates.
#[derive(Clone)]
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: Zeroizing<String>,
    key: SigningKey,
    /// The CA subject exactly as encoded in its certificate; used as issuer of new certs.
    subject: Name,
    subject_text: String,
    not_after: OffsetDateTime,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.subject_text)
            .field("not_after", &self.not_after)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// What a leaf certificate is for; decides its extended key usage and SANs.
pub(crate) enum Usage {
    /// TLS server (server-auth EKU) for these SANs.
    Server(Vec<GeneralName>),
    /// TLS client (client-auth EKU).
    Client,
    /// Both server and client (as etcd members are to each other) for these SANs.
    ServerAndClient(Vec<GeneralName>),
}

impl CertificateAuthority {
    /// Creates a self-signed ECDSA P-256 CA, valid for ten years, with a new random key.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        Self::generate_at(common_name, CA_LIFETIME, OffsetDateTime::now_utc())
    }

    /// Creates a self-signed ECDSA P-256 CA with a new random key, valid from `now`
    /// (less a few minutes for clock skew) for `lifetime`.
    pub fn generate_at(
        common_name: &str,
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<Self, PkiError> {
        const WHAT: &str = "CA certificate";
        let subject = subject_name(WHAT, common_name, &[])?;
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let public_key =
            SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(|source| {
                PkiError::Build {
                    what: WHAT,
                    source: source.into(),
                }
            })?;
        let (serial, _) = random_serial(WHAT)?;
        let validity = validity(WHAT, now - CLOCK_SKEW, expiry(now, lifetime)?)?;
        // Profile::Root: basic constraints CA (critical), key usage keyCertSign + cRLSign
        // (critical), subject key identifier.
        let cert =
            CertificateBuilder::new(Profile::Root, serial, validity, subject, public_key, &key)
                .and_then(|builder| builder.build::<DerSignature>())
                .map_err(|source| PkiError::Build { what: WHAT, source })?;
        let der = cert
            .to_der()
            .map_err(|source| PkiError::Encode { what: WHAT, source })?;
        Self::from_parts(der, key)
    }

    /// Loads a CA from its PEM certificate and PEM private key (PKCS#8 or SEC1, P-256).
    ///
    /// Refuses a certificate that is not a CA, and a key that does not belong to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let (_, cert_der) = decode_pem(
            "CA certificate",
            cert_pem,
            &["CERTIFICATE"],
            "\"CERTIFICATE\"",
        )?;
        let (label, key_der) = decode_pem(
            "CA private key",
            key_pem,
            &["PRIVATE KEY", "EC PRIVATE KEY"],
            "\"PRIVATE KEY\" or \"EC PRIVATE KEY\"",
        )?;
        let key_der = Zeroizing::new(key_der);
        let key = if label == "EC PRIVATE KEY" {
            p256::SecretKey::from_sec1_der(&key_der)
                .map(SigningKey::from)
                .map_err(|source| PkiError::CaKeySec1 { source })?
        } else {
            SigningKey::from_pkcs8_der(&key_der)
                .map_err(|source| PkiError::CaKeyPkcs8 { source })?
        };
        Self::from_parts(cert_der, key)
    }

    /// Checks that `cert_der` is a usable CA certificate for `key` and assembles the CA.
    fn from_parts(cert_der: Vec<u8>, key: SigningKey) -> Result<Self, PkiError> {
        const WHAT: &str = "CA certificate";
        let parsed = parse_cert(WHAT, &cert_der)?;
        let subject_text = parsed.subject().to_string();
        let unusable = |reason| PkiError::UnusableCa {
            subject: subject_text.clone(),
            reason,
        };
        match parsed.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(_) => return Err(unusable("its basic constraints do not mark it as a CA")),
            Err(_) => return Err(unusable("its basic constraints extension is malformed")),
        }
        match parsed.key_usage() {
            Ok(Some(ku)) if !ku.value.key_cert_sign() => {
                return Err(unusable(
                    "its key usage does not allow signing certificates",
                ))
            }
            Ok(_) => {}
            Err(_) => return Err(unusable("its key usage extension is malformed")),
        }
        let cert_key = VerifyingKey::from_sec1_bytes(&parsed.public_key().subject_public_key.data)
            .map_err(|_| unusable("its public key is not an ECDSA P-256 key"))?;
        if &cert_key != key.verifying_key() {
            return Err(PkiError::CaKeyMismatch {
                subject: subject_text,
            });
        }
        // New certificates name the CA as issuer; the encoding must match the CA
        // certificate byte for byte, or TLS stacks will not chain them.
        let subject = Name::from_der(parsed.subject().as_raw())
            .map_err(|source| PkiError::Encode { what: WHAT, source })?;
        let reencoded = subject
            .to_der()
            .map_err(|source| PkiError::Encode { what: WHAT, source })?;
        if reencoded != parsed.subject().as_raw() {
            return Err(unusable("its subject is not DER-canonical"));
        }
        let not_after = parsed.validity().not_after.to_datetime();
        let cert_pem = x509_cert::der::pem::encode_string("CERTIFICATE", LineEnding::LF, &cert_der)
            .map_err(|source| PkiError::Encode {
                what: WHAT,
                source: source.into(),
            })?;
        let key_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|source| PkiError::KeyEncode { source })?;
        Ok(Self {
            cert_pem,
            cert_der,
            key_pem,
            key,
            subject,
            subject_text,
            not_after,
        })
    }

    /// The CA certificate, PEM encoded; this is what clients and servers trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key as PKCS#8 PEM; keep it secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Issues a TLS server certificate (server-auth EKU) for the given DNS names and IPs.
    pub fn issue_server(
        &self,
        common_name: &str,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
    ) -> Result<IssuedCert, PkiError> {
        let sans = server_sans(common_name, dns_names, ips)?;
        let subject = subject_name("server certificate", common_name, &[])?;
        let now = OffsetDateTime::now_utc();
        self.issue_with_new_key(common_name, subject, Usage::Server(sans), ttl, now)
    }

    /// Issues a certificate that is both a TLS server and a TLS client certificate
    /// (server-auth and client-auth EKU) for the given DNS names and IPs, as etcd members
    /// need: each serves its peers and connects to them.
    pub fn issue_server_client(
        &self,
        common_name: &str,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
    ) -> Result<IssuedCert, PkiError> {
        let sans = server_sans(common_name, dns_names, ips)?;
        let subject = subject_name("server and client certificate", common_name, &[])?;
        let now = OffsetDateTime::now_utc();
        self.issue_with_new_key(common_name, subject, Usage::ServerAndClient(sans), ttl, now)
    }

    /// Issues a TLS client certificate (client-auth EKU) with subject `O=<orgs…>, CN=<cn>`.
    ///
    /// Kubernetes takes the user name from CN and the groups from the O entries.
    pub fn issue_client(
        &self,
        common_name: &str,
        organizations: &[String],
        ttl: Duration,
    ) -> Result<IssuedCert, PkiError> {
        let subject = subject_name("client certificate", common_name, organizations)?;
        let now = OffsetDateTime::now_utc();
        self.issue_with_new_key(common_name, subject, Usage::Client, ttl, now)
    }

    /// Signs a PEM PKCS#10 CSR as a client certificate with the CSR's CN and O entries.
    ///
    /// The lifetime is `min(ttl, max_ttl)`. Extensions the CSR asks for are ignored. The
    /// caller must check the requested identity first, e.g. with [`crate::csr_identity`].
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        ttl: Duration,
        max_ttl: Duration,
    ) -> Result<SignedCert, PkiError> {
        self.sign_csr_at(csr_pem, None, ttl.min(max_ttl), OffsetDateTime::now_utc())
    }

    /// Signs a PEM PKCS#10 CSR as a client certificate for `identity`, whatever
    /// subject the CSR asks for: the CSR only proves possession of the key. The
    /// lifetime is `min(ttl, max_ttl)`.
    pub fn sign_csr_as(
        &self,
        csr_pem: &str,
        identity: &ClientIdentity,
        ttl: Duration,
        max_ttl: Duration,
    ) -> Result<SignedCert, PkiError> {
        self.sign_csr_at(
            csr_pem,
            Some(identity),
            ttl.min(max_ttl),
            OffsetDateTime::now_utc(),
        )
    }

    /// Signs the CSR's key for `identity`, or for the subject the CSR asks for.
    fn sign_csr_at(
        &self,
        csr_pem: &str,
        identity: Option<&ClientIdentity>,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<SignedCert, PkiError> {
        let csr = parse_csr(csr_pem)?;
        let ClientIdentity {
            common_name,
            organizations,
        } = identity.unwrap_or(&csr.identity);
        let subject = subject_name("client certificate", common_name, organizations)?;
        self.issue_leaf(
            common_name,
            subject,
            csr.public_key,
            Usage::Client,
            ttl,
            now,
        )
    }

    /// Checks a DER client certificate against this CA and returns who it identifies.
    ///
    /// It must be signed by this CA, be within its validity period, carry the client-auth
    /// EKU and not be a CA certificate.
    pub fn verify_client_cert(&self, cert_der: &[u8]) -> Result<ClientIdentity, PkiError> {
        self.verify_client_cert_at(cert_der, OffsetDateTime::now_utc())
    }

    fn verify_client_cert_at(
        &self,
        cert_der: &[u8],
        now: OffsetDateTime,
    ) -> Result<ClientIdentity, PkiError> {
        const WHAT: &str = "client certificate";
        let cert = parse_cert(WHAT, cert_der)?;
        self.check_issued(&cert)?;
        let subject = cert.subject().to_string();
        let at = ASN1Time::from(now);
        let validity = cert.validity();
        if at < validity.not_before {
            return Err(PkiError::NotYetValid {
                subject,
                not_before: validity.not_before.to_datetime(),
            });
        }
        if at > validity.not_after {
            return Err(PkiError::Expired {
                subject,
                not_after: validity.not_after.to_datetime(),
            });
        }
        let not_client = |reason| PkiError::NotClientCert {
            subject: subject.clone(),
            reason,
        };
        match cert.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => return Err(not_client("it is a CA certificate")),
            Ok(_) => {}
            Err(_) => return Err(not_client("its basic constraints extension is malformed")),
        }
        match cert.extended_key_usage() {
            Ok(Some(eku)) if eku.value.client_auth => {}
            Ok(_) => return Err(not_client("it lacks the client-auth extended key usage")),
            Err(_) => return Err(not_client("its extended key usage extension is malformed")),
        }
        identity_from_name(WHAT, cert.subject())
    }

    /// Checks that `cert` names this CA as its issuer and carries this CA's signature.
    ///
    /// Validity dates and usage are left to the caller.
    pub(crate) fn check_issued(&self, cert: &X509Certificate<'_>) -> Result<(), PkiError> {
        let ca = parse_cert("CA certificate", &self.cert_der)?;
        if cert.issuer().as_raw() != ca.subject().as_raw() {
            return Err(PkiError::UnknownIssuer {
                subject: cert.subject().to_string(),
                issuer: cert.issuer().to_string(),
                ca: self.subject_text.clone(),
            });
        }
        cert.verify_signature(Some(ca.public_key()))
            .map_err(|source| PkiError::BadSignature {
                subject: cert.subject().to_string(),
                ca: self.subject_text.clone(),
                source,
            })
    }

    /// Issues a leaf certificate with a fresh key, valid from `now - CLOCK_SKEW` to `now + ttl`.
    pub(crate) fn issue_with_new_key(
        &self,
        common_name: &str,
        subject: Name,
        usage: Usage,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let public_key =
            SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(|source| {
                PkiError::Build {
                    what: "certificate",
                    source: source.into(),
                }
            })?;
        let signed = self.issue_leaf(common_name, subject, public_key, usage, ttl, now)?;
        let key_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|source| PkiError::KeyEncode { source })?;
        Ok(IssuedCert {
            cert_pem: signed.cert_pem,
            key_pem: key_pem.to_string(),
        })
    }

    /// Issues a leaf certificate for `public_key`, valid from `now - CLOCK_SKEW` to `now + ttl`.
    fn issue_leaf(
        &self,
        common_name: &str,
        subject: Name,
        public_key: SubjectPublicKeyInfoOwned,
        usage: Usage,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<SignedCert, PkiError> {
        const WHAT: &str = "certificate";
        let not_after = expiry(now, ttl)?;
        if not_after > self.not_after {
            return Err(PkiError::OutlivesCa {
                common_name: common_name.to_owned(),
                requested: not_after,
                ca: self.subject_text.clone(),
                ca_not_after: self.not_after,
            });
        }
        let (serial, serial_hex) = random_serial(WHAT)?;
        let validity = validity(WHAT, now - CLOCK_SKEW, not_after)?;
        // Profile::Leaf: basic constraints CA:FALSE, key usage digitalSignature and
        // nonRepudiation (critical), subject and authority key identifiers.
        let profile = Profile::Leaf {
            issuer: self.subject.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        };
        let build = |source| PkiError::Build { what: WHAT, source };
        let mut builder =
            CertificateBuilder::new(profile, serial, validity, subject, public_key, &self.key)
                .map_err(build)?;
        match usage {
            Usage::Server(sans) => {
                builder
                    .add_extension(&ExtendedKeyUsage(vec![ID_KP_SERVER_AUTH]))
                    .map_err(build)?;
                builder
                    .add_extension(&SubjectAltName(sans))
                    .map_err(build)?;
            }
            Usage::Client => {
                builder
                    .add_extension(&ExtendedKeyUsage(vec![ID_KP_CLIENT_AUTH]))
                    .map_err(build)?;
            }
            Usage::ServerAndClient(sans) => {
                builder
                    .add_extension(&ExtendedKeyUsage(vec![
                        ID_KP_SERVER_AUTH,
                        ID_KP_CLIENT_AUTH,
                    ]))
                    .map_err(build)?;
                builder
                    .add_extension(&SubjectAltName(sans))
                    .map_err(build)?;
            }
        }
        let cert = builder.build::<DerSignature>().map_err(build)?;
        let cert_pem = cert
            .to_pem(LineEnding::LF)
            .map_err(|source| PkiError::Encode { what: WHAT, source })?;
        Ok(SignedCert {
            cert_pem,
            serial: serial_hex,
            not_after,
        })
    }
}

/// The SANs of a server certificate: the DNS names (checked), then the IPs; refuses none.
pub(crate) fn server_sans(
    common_name: &str,
    dns_names: &[String],
    ips: &[IpAddr],
) -> Result<Vec<GeneralName>, PkiError> {
    let mut sans = dns_names
        .iter()
        .map(|name| dns_san(name))
        .collect::<Result<Vec<_>, _>>()?;
    sans.extend(ips.iter().copied().map(GeneralName::from));
    if sans.is_empty() {
        check_name("common name", common_name)?;
        return Err(PkiError::NoSubjectAltNames {
            common_name: common_name.to_owned(),
        });
    }
    Ok(sans)
}

/// Parses one DER certificate with nothing after it.
pub(crate) fn parse_cert<'a>(
    what: &'static str,
    der: &'a [u8],
) -> Result<X509Certificate<'a>, PkiError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Certificate {
        what,
        source: x509_error(e),
    })?;
    if !rest.is_empty() {
        return Err(PkiError::TrailingData { what });
    }
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use x509_parser::extensions::GeneralName as ParsedName;

    use super::*;
    use crate::generate_csr;

    const HOUR: Duration = Duration::from_secs(3600);

    fn ca() -> CertificateAuthority {
        CertificateAuthority::generate("shoal test CA").expect("generate CA")
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        decode_pem("test certificate", pem, &["CERTIFICATE"], "certificate")
            .expect("decode certificate PEM")
            .1
    }

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn generated_ca_is_a_ten_year_signing_ca() {
        let ca = ca();
        let der = pem_to_der(ca.cert_pem());
        let cert = parse_cert("CA", &der).expect("parse CA");
        assert_eq!(cert.subject(), cert.issuer());
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .map(|cn| cn.as_str()),
            Some(Ok("shoal test CA"))
        );
        cert.verify_signature(None).expect("self-signed");
        let bc = cert.basic_constraints().expect("bc").expect("bc present");
        assert!(bc.value.ca && bc.critical);
        let ku = cert.key_usage().expect("ku").expect("ku present");
        assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        let ten_years = 10 * 365 * 24 * 3600;
        assert!(
            (ten_years..=ten_years + 3600).contains(&lifetime),
            "{lifetime}"
        );
        assert!(ca.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn server_cert_has_sans_and_server_auth() {
        let ca = ca();
        let ips = [
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        let issued = ca
            .issue_server(
                "shoal-apiserver",
                &groups(&["api.shoal.example", "localhost"]),
                &ips,
                HOUR,
            )
            .expect("issue server cert");
        let der = pem_to_der(&issued.cert_pem);
        let cert = parse_cert("server", &der).expect("parse server cert");
        let ca_der = pem_to_der(ca.cert_pem());
        let ca_cert = parse_cert("CA", &ca_der).expect("parse CA");
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by CA");
        assert_eq!(cert.issuer(), ca_cert.subject());

        let san = cert
            .subject_alternative_name()
            .expect("san")
            .expect("san present");
        let mut dns = Vec::new();
        let mut ip_sans = Vec::new();
        for name in &san.value.general_names {
            match name {
                ParsedName::DNSName(d) => dns.push((*d).to_owned()),
                ParsedName::IPAddress(b) => ip_sans.push(b.to_vec()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        assert_eq!(dns, ["api.shoal.example", "localhost"]);
        assert_eq!(
            ip_sans,
            [vec![10, 0, 0, 1], Ipv6Addr::LOCALHOST.octets().to_vec()]
        );

        let eku = cert
            .extended_key_usage()
            .expect("eku")
            .expect("eku present");
        assert!(eku.value.server_auth && !eku.value.client_auth);
        let bc = cert.basic_constraints().expect("bc").expect("bc present");
        assert!(!bc.value.ca);
        let ku = cert.key_usage().expect("ku").expect("ku present");
        assert!(ku.value.digital_signature() && !ku.value.key_cert_sign());

        let lifetime =
            cert.validity().not_after.timestamp() - OffsetDateTime::now_utc().unix_timestamp();
        assert!((3590..=3600).contains(&lifetime), "{lifetime}");
        assert!(issued.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn server_client_cert_has_both_usages() {
        let ca = ca();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let issued = ca
            .issue_server_client("kube-etcd", &groups(&["localhost"]), &[ip], HOUR)
            .expect("issue");
        let der = pem_to_der(&issued.cert_pem);
        let cert = parse_cert("cert", &der).expect("parse");
        ca.check_issued(&cert).expect("issued by this CA");
        let eku = cert.extended_key_usage().expect("eku").expect("eku");
        assert!(eku.value.server_auth && eku.value.client_auth);
        assert!(cert.subject_alternative_name().expect("san").is_some());
        // It also authenticates as a client.
        let identity = ca.verify_client_cert(&der).expect("client");
        assert_eq!(identity.common_name, "kube-etcd");
        assert!(matches!(
            ca.issue_server_client("kube-etcd", &[], &[], HOUR),
            Err(PkiError::NoSubjectAltNames { .. })
        ));
    }

    #[test]
    fn generate_at_sets_the_lifetime_and_start() {
        let start = OffsetDateTime::now_utc() - time::Duration::days(100);
        let ca = CertificateAuthority::generate_at("old CA", 30 * 24 * HOUR, start)
            .expect("generate CA");
        assert_eq!(
            ca.not_after().unix_timestamp(),
            start.unix_timestamp() + 30 * 24 * 3600
        );
        let der = pem_to_der(ca.cert_pem());
        let cert = parse_cert("CA", &der).expect("parse");
        assert_eq!(
            cert.validity().not_before.timestamp(),
            (start - CLOCK_SKEW).unix_timestamp()
        );
        // An expired CA cannot issue: its certificates would outlive it.
        assert!(matches!(
            ca.issue_client("x", &[], HOUR),
            Err(PkiError::OutlivesCa { .. })
        ));
    }

    #[test]
    fn server_cert_input_is_checked() {
        let ca = ca();
        assert!(matches!(
            ca.issue_server("api", &[], &[], HOUR),
            Err(PkiError::NoSubjectAltNames { .. })
        ));
        assert!(matches!(
            ca.issue_server("api", &groups(&["bad name"]), &[], HOUR),
            Err(PkiError::InvalidInput {
                field: "DNS name",
                ..
            })
        ));
        assert!(matches!(
            ca.issue_server("api", &groups(&["api"]), &[], Duration::ZERO),
            Err(PkiError::InvalidTtl { .. })
        ));
        assert!(matches!(
            ca.issue_server("api", &groups(&["api"]), &[], CA_LIFETIME + HOUR),
            Err(PkiError::OutlivesCa { .. })
        ));
    }

    #[test]
    fn client_cert_identity_round_trips() {
        let ca = ca();
        let orgs = groups(&["system:masters", "shoal:admins", "team a"]);
        let issued = ca
            .issue_client("alice", &orgs, HOUR)
            .expect("issue client cert");
        let der = pem_to_der(&issued.cert_pem);
        let identity = ca.verify_client_cert(&der).expect("verify client cert");
        assert_eq!(
            identity,
            ClientIdentity {
                common_name: "alice".to_owned(),
                organizations: orgs,
            }
        );

        let cert = parse_cert("client", &der).expect("parse");
        let eku = cert
            .extended_key_usage()
            .expect("eku")
            .expect("eku present");
        assert!(eku.value.client_auth && !eku.value.server_auth);

        let no_groups = ca.issue_client("bob", &[], HOUR).expect("issue");
        let identity = ca
            .verify_client_cert(&pem_to_der(&no_groups.cert_pem))
            .expect("verify");
        assert_eq!(identity.common_name, "bob");
        assert!(identity.organizations.is_empty());
    }

    #[test]
    fn cert_from_another_ca_is_refused() {
        let ours = ca();
        let theirs = CertificateAuthority::generate("shoal test CA").expect("generate CA");
        let issued = theirs
            .issue_client("mallory", &groups(&["system:masters"]), HOUR)
            .expect("issue");
        // Same CA name, different key: only the signature check can tell.
        match ours.verify_client_cert(&pem_to_der(&issued.cert_pem)) {
            Err(PkiError::BadSignature { .. }) => {}
            other => panic!("expected BadSignature, got {other:?}"),
        }
        let other_name = CertificateAuthority::generate("other CA").expect("generate CA");
        let issued = other_name
            .issue_client("mallory", &[], HOUR)
            .expect("issue");
        match ours.verify_client_cert(&pem_to_der(&issued.cert_pem)) {
            Err(PkiError::UnknownIssuer { .. }) => {}
            other => panic!("expected UnknownIssuer, got {other:?}"),
        }
    }

    #[test]
    fn only_client_certs_authenticate() {
        let ca = ca();
        let server = ca
            .issue_server("api", &groups(&["api"]), &[], HOUR)
            .expect("issue");
        assert!(matches!(
            ca.verify_client_cert(&pem_to_der(&server.cert_pem)),
            Err(PkiError::NotClientCert { .. })
        ));
        assert!(matches!(
            ca.verify_client_cert(&pem_to_der(ca.cert_pem())),
            Err(PkiError::NotClientCert { .. })
        ));
        assert!(matches!(
            ca.verify_client_cert(b"garbage"),
            Err(PkiError::Certificate { .. })
        ));
    }

    #[test]
    fn expired_and_future_certs_are_refused() {
        let ca = ca();
        let (csr, _) = generate_csr("carol", &[]).expect("csr");
        let day = time::Duration::days(1);
        let old = ca
            .sign_csr_at(&csr, None, HOUR, OffsetDateTime::now_utc() - day)
            .expect("sign backdated");
        let der = pem_to_der(&old.cert_pem);
        match ca.verify_client_cert(&der) {
            Err(PkiError::Expired { not_after, .. }) => assert_eq!(not_after, old.not_after),
            other => panic!("expected Expired, got {other:?}"),
        }
        // A fresh certificate seen from before its start is not valid yet.
        let fresh = ca.issue_client("carol", &[], HOUR).expect("issue");
        let der = pem_to_der(&fresh.cert_pem);
        assert!(matches!(
            ca.verify_client_cert_at(&der, OffsetDateTime::now_utc() - day),
            Err(PkiError::NotYetValid { .. })
        ));
        // Clock skew allowance: valid a minute before issuance.
        ca.verify_client_cert_at(&der, OffsetDateTime::now_utc() - time::Duration::minutes(1))
            .expect("within skew allowance");
    }

    #[test]
    fn csr_is_signed_keeping_subject_and_capped_ttl() {
        let ca = ca();
        let orgs = groups(&["system:masters", "dev"]);
        let (csr, key_pem) = generate_csr("dave", &orgs).expect("csr");
        let before = OffsetDateTime::now_utc().unix_timestamp();
        let signed = ca
            .sign_csr(&csr, Duration::from_secs(30 * 24 * 3600), 2 * HOUR)
            .expect("sign CSR");
        let ttl = signed.not_after.unix_timestamp() - before;
        assert!((7199..=7201).contains(&ttl), "ttl {ttl} not capped to 2h");

        let der = pem_to_der(&signed.cert_pem);
        let cert = parse_cert("signed", &der).expect("parse");
        assert_eq!(cert.validity().not_after.to_datetime(), signed.not_after);
        assert_eq!(cert.raw_serial_as_string().replace(':', ""), signed.serial);
        let identity = ca.verify_client_cert(&der).expect("verify");
        assert_eq!(identity.common_name, "dave");
        assert_eq!(identity.organizations, orgs);

        // The certificate carries the requester's key, which the CA never saw.
        let (_, key_der) = decode_pem("key", &key_pem, &["PRIVATE KEY"], "key").expect("key");
        let key = SigningKey::from_pkcs8_der(&key_der).expect("key");
        let cert_key = VerifyingKey::from_sec1_bytes(&cert.public_key().subject_public_key.data)
            .expect("P-256 key");
        assert_eq!(&cert_key, key.verifying_key());

        let shorter = ca.sign_csr(&csr, HOUR, 2 * HOUR).expect("sign CSR");
        let ttl = shorter.not_after.unix_timestamp() - before;
        assert!((3599..=3601).contains(&ttl), "ttl {ttl} should be 1h");
        assert_ne!(shorter.serial, signed.serial);
    }

    #[test]
    fn csr_extensions_cannot_make_a_ca_or_server_cert() {
        use x509_cert::ext::pkix::BasicConstraints;
        let ca = ca();
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let subject = subject_name("test", "eve", &[]).expect("name");
        let mut builder =
            x509_cert::builder::RequestBuilder::new(subject, &key).expect("request builder");
        builder
            .add_extension(&BasicConstraints {
                ca: true,
                path_len_constraint: None,
            })
            .expect("bc");
        builder
            .add_extension(&ExtendedKeyUsage(vec![ID_KP_SERVER_AUTH]))
            .expect("eku");
        let csr = builder
            .build::<DerSignature>()
            .expect("csr")
            .to_pem(LineEnding::LF)
            .expect("pem");
        let signed = ca.sign_csr(&csr, HOUR, HOUR).expect("sign");
        let der = pem_to_der(&signed.cert_pem);
        let cert = parse_cert("signed", &der).expect("parse");
        assert!(!cert.basic_constraints().expect("bc").expect("bc").value.ca);
        let eku = cert.extended_key_usage().expect("eku").expect("eku");
        assert!(eku.value.client_auth && !eku.value.server_auth);
    }

    #[test]
    fn from_pem_round_trips() {
        let ca = ca();
        let loaded = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).expect("load CA");
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        assert_eq!(loaded.key_pem(), ca.key_pem());
        // Each can verify what the other issued.
        let issued = loaded.issue_client("erin", &[], HOUR).expect("issue");
        let identity = ca
            .verify_client_cert(&pem_to_der(&issued.cert_pem))
            .expect("verify");
        assert_eq!(identity.common_name, "erin");
    }

    #[test]
    fn from_pem_accepts_sec1_keys() {
        let ca = ca();
        let (_, der) = decode_pem("key", ca.key_pem(), &["PRIVATE KEY"], "key").expect("key");
        let sec1 = p256::SecretKey::from_pkcs8_der(&der)
            .expect("key")
            .to_sec1_pem(LineEnding::LF)
            .expect("sec1");
        let loaded = CertificateAuthority::from_pem(ca.cert_pem(), &sec1).expect("load CA");
        assert_eq!(loaded.key_pem(), ca.key_pem());
    }

    #[test]
    fn from_pem_refuses_bad_input() {
        let ca = ca();
        let other = CertificateAuthority::generate("other").expect("generate CA");
        assert!(matches!(
            CertificateAuthority::from_pem(ca.cert_pem(), other.key_pem()),
            Err(PkiError::CaKeyMismatch { .. })
        ));
        let leaf = ca.issue_client("frank", &[], HOUR).expect("issue");
        assert!(matches!(
            CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem),
            Err(PkiError::UnusableCa { .. })
        ));
        assert!(matches!(
            CertificateAuthority::from_pem(ca.key_pem(), ca.key_pem()),
            Err(PkiError::PemLabel { .. })
        ));
        assert!(matches!(
            CertificateAuthority::from_pem(
                ca.cert_pem(),
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            Err(PkiError::CaKeyPkcs8 { .. })
        ));
        let two = format!("{}{}", ca.cert_pem(), other.cert_pem());
        assert!(matches!(
            CertificateAuthority::from_pem(&two, ca.key_pem()),
            Err(PkiError::TrailingData { .. })
        ));
    }
}
