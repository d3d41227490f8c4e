//! Whether a guest API answers through the gateway: `GET /readyz` over TLS to the
//! gateway with the API's server name, trusting only the cluster CA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest reply head read.
const MAX_REPLY: usize = 4096;

/// `Ok` when `https://<server_name>/readyz`, reached at `gateway`, answers 200 with a
/// certificate the cluster CA signed; else what went wrong.
pub async fn readyz(gateway: SocketAddr, server_name: &str, ca_pem: &str) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, probe(gateway, server_name, ca_pem)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

async fn probe(gateway: SocketAddr, server_name: &str, ca_pem: &str) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("the cluster CA is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the cluster CA is unusable: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS versions: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("{server_name} is not a server name: {e}"))?;
    let tcp = tokio::net::TcpStream::connect(gateway)
        .await
        .map_err(|e| format!("connecting to the gateway at {gateway}: {e}"))?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS through the gateway: {e}"))?;
    let req = format!("GET /readyz HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("sending /readyz: {e}"))?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 1024];
    while !reply.windows(2).any(|w| w == b"\r\n") && reply.len() < MAX_REPLY {
        let n = tls
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading /readyz: {e}"))?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&reply);
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) == Some("200") {
        Ok(())
    } else if status.is_empty() {
        Err("/readyz: the connection closed without an answer".into())
    } else {
        Err(format!("/readyz answered {status:?}"))
    }
}
