//! PKCS#10 certificate signing requests: made by clients, read by the CA.

use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use x509_cert::builder::{Builder, RequestBuilder};
use x509_cert::der::{Decode, EncodePem};
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::encoding::{decode_pem, identity_from_name, subject_name, x509_error};
use crate::{ClientIdentity, PkiError};

const WHAT: &str = "certificate signing request";

/// Makes a new ECDSA P-256 key and a PEM CSR for it, returning `(csr_pem, key_pem)`.
///
/// The subject is `O=<each organization>, CN=<common_name>`. The key (PKCS#8 PEM) is for
/// the client alone; only the CSR is sent to the CA.
pub fn generate_csr(
    common_name: &str,
    organizations: &[String],
) -> Result<(String, String), PkiError> {
    let subject = subject_name(WHAT, common_name, organizations)?;
    let key = SigningKey::random(&mut rand::rngs::OsRng);
    let request = RequestBuilder::new(subject, &key)
        .and_then(|builder| builder.build::<DerSignature>())
        .map_err(|source| PkiError::Build { what: WHAT, source })?;
    let csr_pem = request
        .to_pem(LineEnding::LF)
        .map_err(|source| PkiError::Encode { what: WHAT, source })?;
    let key_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|source| PkiError::KeyEncode { source })?;
    Ok((csr_pem, key_pem.to_string()))
}

/// Reads the identity a PEM CSR asks for, after checking its self-signature.
///
/// Callers use this to decide whether the requester may have that identity before
/// passing the CSR to [`CertificateAuthority::sign_csr`](crate::CertificateAuthority::sign_csr).
pub fn csr_identity(csr_pem: &str) -> Result<ClientIdentity, PkiError> {
    parse_csr(csr_pem).map(|csr| csr.identity)
}

/// A CSR whose signature has been checked, reduced to what the CA keeps from it.
pub(crate) struct VerifiedCsr {
    pub(crate) identity: ClientIdentity,
    pub(crate) public_key: SubjectPublicKeyInfoOwned,
}

/// Parses a PEM CSR and checks that it is signed by the key it carries.
///
/// Requested extensions are deliberately ignored: the CA alone decides what a
/// certificate may be used for.
pub(crate) fn parse_csr(csr_pem: &str) -> Result<VerifiedCsr, PkiError> {
    let (_, der) = decode_pem(
        WHAT,
        csr_pem,
        &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"],
        "\"CERTIFICATE REQUEST\"",
    )?;
    let (rest, csr) = X509CertificationRequest::from_der(&der).map_err(|e| PkiError::Csr {
        source: x509_error(e),
    })?;
    if !rest.is_empty() {
        return Err(PkiError::TrailingData { what: WHAT });
    }
    let info = &csr.certification_request_info;
    csr.verify_signature()
        .map_err(|source| PkiError::CsrSignature {
            subject: info.subject.to_string(),
            source,
        })?;
    let identity = identity_from_name(WHAT, &info.subject)?;
    let public_key = SubjectPublicKeyInfoOwned::from_der(info.subject_pki.raw)
        .map_err(|source| PkiError::Encode { what: WHAT, source })?;
    Ok(VerifiedCsr {
        identity,
        public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_csr_round_trips() {
        let groups = vec!["system:masters".to_owned(), "shoal:admins".to_owned()];
        let (csr_pem, key_pem) = generate_csr("alice", &groups).expect("generate CSR");
        assert!(csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let identity = csr_identity(&csr_pem).expect("parse CSR");
        assert_eq!(identity.common_name, "alice");
        assert_eq!(identity.organizations, groups);
    }

    #[test]
    fn tampered_csr_is_refused() {
        let (csr_pem, _) = generate_csr("alice", &[]).expect("generate CSR");
        let (_, mut der) =
            decode_pem("test", &csr_pem, &["CERTIFICATE REQUEST"], "csr").expect("decode own CSR");
        // Rename "alice" to "alicf" inside the signed part.
        let at = der
            .windows(5)
            .position(|w| w == b"alice")
            .expect("CN in DER");
        der[at + 4] = b'f';
        let tampered =
            x509_cert::der::pem::encode_string("CERTIFICATE REQUEST", LineEnding::LF, &der)
                .expect("encode PEM");
        assert!(matches!(
            csr_identity(&tampered),
            Err(PkiError::CsrSignature { .. })
        ));
    }

    #[test]
    fn csr_input_errors_are_typed() {
        assert!(matches!(csr_identity("not pem"), Err(PkiError::Pem { .. })));
        let (_, key_pem) = generate_csr("bob", &[]).expect("generate CSR");
        assert!(matches!(
            csr_identity(&key_pem),
            Err(PkiError::PemLabel { .. })
        ));
        assert!(matches!(
            generate_csr("", &[]),
            Err(PkiError::InvalidInput { .. })
        ));
    }
}
