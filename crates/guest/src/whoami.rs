//! Who a client certificate names, as kube-apiserver reads it: the subject's CN is
//! the user, each O a group.
//!
//! This only reads the subject: whether the certificate is trusted is decided by the
//! TLS handshake (see [`crate::tls`]) before anything here runs.

use x509_parser::prelude::{FromDer, X509Certificate};

/// The user a client certificate authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject's common name.
    pub user: String,
    /// The subject's organizations, in order.
    pub groups: Vec<String>,
}

/// Why a certificate's subject names no user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhoAmIError {
    /// The certificate is not DER X.509.
    #[error("the client certificate cannot be parsed: {0}")]
    Parse(String),
    /// The subject has no common name, or an empty one.
    #[error("the client certificate's subject ({0}) has no common name to use as the user")]
    NoCommonName(String),
    /// The subject has more than one common name.
    #[error("the client certificate's subject ({0}) has more than one common name")]
    SeveralCommonNames(String),
    /// A CN or O is not a text string.
    #[error("the client certificate's subject ({0}) has a CN or O that is not text")]
    NotText(String),
}

impl Identity {
    /// Reads the user and groups from a DER certificate's subject.
    pub fn from_der(der: &[u8]) -> Result<Self, WhoAmIError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| WhoAmIError::Parse(e.to_string()))?;
        let subject = cert.subject();
        let text = subject.to_string();
        let mut cns = subject.iter_common_name();
        let user = match (cns.next(), cns.next()) {
            (Some(cn), None) => cn
                .as_str()
                .map_err(|_| WhoAmIError::NotText(text.clone()))?,
            (None, _) => return Err(WhoAmIError::NoCommonName(text)),
            (Some(_), Some(_)) => return Err(WhoAmIError::SeveralCommonNames(text)),
        };
        if user.trim().is_empty() {
            return Err(WhoAmIError::NoCommonName(text));
        }
        let groups = subject
            .iter_organization()
            .map(|o| o.as_str().map(str::to_string))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| WhoAmIError::NotText(text.clone()))?;
        Ok(Identity {
            user: user.to_string(),
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_pki::CertificateAuthority;
    use std::time::Duration;

    fn der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("one certificate")
            .to_vec()
    }

    #[test]
    fn cn_is_the_user_and_every_o_a_group() {
        let ca = CertificateAuthority::generate("test-ca").expect("CA");
        let groups = vec!["dev".to_string(), "ops".to_string()];
        let cert = ca
            .issue_client("alice:laptop", &groups, Duration::from_secs(3600))
            .expect("client cert");
        assert_eq!(
            Identity::from_der(&der(&cert.cert_pem)),
            Ok(Identity {
                user: "alice:laptop".into(),
                groups
            })
        );
        let no_groups = ca
            .issue_client("bob", &[], Duration::from_secs(3600))
            .expect("client cert");
        assert_eq!(
            Identity::from_der(&der(&no_groups.cert_pem))
                .expect("identity")
                .groups,
            Vec::<String>::new()
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            Identity::from_der(b"not a certificate"),
            Err(WhoAmIError::Parse(_))
        ));
    }
}
