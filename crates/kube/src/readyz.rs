//! The probe of a guest API: `GET /readyz` over TLS, trusting only the cluster's
//! CA. The gateway runs it on each backend; the cluster controller runs it through
//! the gateway itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest reply head a probe reads.
const MAX_REPLY: usize = 4096;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The CA bundle holds something that is not a PEM certificate.
    #[error("the cluster CA is not PEM: {0}")]
    CaPem(#[source] rustls::pki_types::pem::Error),
    /// A certificate of the bundle cannot be a trust anchor.
    #[error("the cluster CA is unusable: {0}")]
    CaUnusable(#[source] rustls::Error),
    /// rustls refused the protocol versions.
    #[error("TLS versions: {0}")]
    Versions(#[source] rustls::Error),
    /// The server name is not a DNS name or an address.
    #[error("{name} is not a server name: {source}")]
    ServerName {
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// No TCP connection.
    #[error("connecting to the gateway at {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (most often: a certificate the CA did not sign).
    #[error("TLS with the cluster CA: {0}")]
    Handshake(#[source] std::io::Error),
    /// The request could not be sent.
    #[error("sending /readyz: {0}")]
    Send(#[source] std::io::Error),
    /// The answer could not be read.
    #[error("reading /readyz: {0}")]
    Read(#[source] std::io::Error),
    /// The connection closed before a status line.
    #[error("/readyz: the connection closed without an answer")]
    NoAnswer,
    /// The API answered, but not 200.
    #[error("/readyz answered {0:?}")]
    Status(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// A TLS client configuration that trusts only the certificates of `ca_pem`.
pub fn client_config(ca_pem: &str) -> Result<rustls::ClientConfig, ProbeError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(ProbeError::CaPem)?)
            .map_err(ProbeError::CaUnusable)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ProbeError::Versions)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `GET /readyz` over TLS on `stream` for `server_name`, trusting what `config`
/// trusts: `Ok` on a 200.
pub async fn readyz(
    stream: tokio::net::TcpStream,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<(), ProbeError> {
    let name =
        ServerName::try_from(server_name.to_owned()).map_err(|source| ProbeError::ServerName {
            name: server_name.to_owned(),
            source,
        })?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(ProbeError::Handshake)?;
    let req = format!("GET /readyz HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(ProbeError::Send)?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 1024];
    while !reply.windows(2).any(|w| w == b"\r\n") && reply.len() < MAX_REPLY {
        let n = tls.read(&mut chunk).await.map_err(ProbeError::Read)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    status_of(&reply)
}

/// `Ok` when the reply head's status line says 200.
fn status_of(reply: &[u8]) -> Result<(), ProbeError> {
    let head = String::from_utf8_lossy(reply);
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) == Some("200") {
        Ok(())
    } else if status.is_empty() {
        Err(ProbeError::NoAnswer)
    } else {
        Err(ProbeError::Status(status.to_owned()))
    }
}

/// [`readyz`] for `server_name` through the gateway listening at `gateway`, within
/// `timeout`, trusting only `ca_pem`.
pub async fn readyz_via(
    gateway: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let config = Arc::new(client_config(ca_pem)?);
    let probe = async {
        let tcp = tokio::net::TcpStream::connect(gateway)
            .await
            .map_err(|source| ProbeError::Connect {
                addr: gateway,
                source,
            })?;
        readyz(tcp, server_name, config).await
    };
    tokio::time::timeout(timeout, probe)
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_200_status_line_passes() {
        assert!(status_of(b"HTTP/1.1 200 OK\r\n").is_ok());
        assert!(matches!(
            status_of(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Err(ProbeError::Status(s)) if s == "HTTP/1.1 503 Service Unavailable"
        ));
        assert!(matches!(status_of(b""), Err(ProbeError::NoAnswer)));
        assert!(matches!(
            status_of(b"HTTP/1.1 2000 OK\r\n"),
            Err(ProbeError::Status(_))
        ));
    }

    #[test]
    fn a_ca_that_is_not_pem_is_named() {
        let err =
            client_config("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n");
        assert!(matches!(err, Err(ProbeError::CaPem(_))), "{err:?}");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() -> Result<(), Box<dyn std::error::Error>> {
        let ca = shoal_pki::CertificateAuthority::generate("probe-test-ca")?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        drop(listener);
        let err = readyz_via(addr, "api.x", ca.cert_pem(), Duration::from_secs(3)).await;
        assert!(matches!(err, Err(ProbeError::Connect { .. })), "{err:?}");
        Ok(())
    }
}
