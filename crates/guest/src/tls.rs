//! TLS for the stand-ins (rustls with the ring provider, TLS 1.2 and 1.3, ALPN
//! `http/1.1` only so that Go clients do not try HTTP/2), and serving one request
//! per TLS connection.
//!
//! The API server stand-in asks for a client certificate but does not require one:
//! a certificate that does not chain to the cluster CA, is expired or is not for
//! client authentication fails the handshake; no certificate at all gets through,
//! and the responder decides what an anonymous client may see.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use crate::http1::{self, DeadlineStream, Responder};
use crate::say;

/// The only application protocol offered.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Why a TLS configuration could not be built from the PKI files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read (most often: it was not written).
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{}: no PEM {what} in it: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// `CERTIFICATE` or `private key`.
        what: &'static str,
        /// What the PEM reader said.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The CA certificate cannot be a trust anchor.
    #[error("{}: not usable as a CA: {source}", path.display())]
    Anchor {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built.
    #[error("building the client-certificate verifier from {}: {source}", path.display())]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The certificate and key do not make a serving configuration (e.g. they do not
    /// belong together).
    #[error("{} with {}: {source}", cert.display(), key.display())]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
}

/// A serving certificate (chain) and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingFiles {
    /// The certificate, optionally followed by intermediates.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates in a PEM file; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |source| TlsError::Pem {
        path: path.to_path_buf(),
        what: "CERTIFICATE",
        source,
    };
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(pem_err(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|source| TlsError::Pem {
        path: path.to_path_buf(),
        what: "private key",
        source,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a configuration from `verifier` and the serving files.
fn finish(
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    serving: &ServingFiles,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&serving.cert)?;
    let key = load_key(&serving.key)?;
    let config_err = |source| TlsError::Config {
        cert: serving.cert.clone(),
        key: serving.key.clone(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(config_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(config_err)?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The API server stand-in's configuration: `serving`, and client certificates
/// optional but, when sent, verified against the CA in `ca`.
pub fn apiserver_config(ca: &Path, serving: &ServingFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|source| TlsError::Anchor {
            path: ca.to_path_buf(),
            source,
        })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|source| TlsError::Verifier {
            path: ca.to_path_buf(),
            source,
        })?;
    finish(verifier, serving)
}

/// A plain serving configuration with no client authentication (the ingress
/// stand-in's).
pub fn server_config(serving: &ServingFiles) -> Result<Arc<ServerConfig>, TlsError> {
    finish(WebPkiClientVerifier::no_client_auth(), serving)
}

/// Serves one TLS connection: the handshake, one request, one response, then
/// `close_notify`. Failures are logged and end only this connection.
pub fn serve<R: Responder>(
    service: &'static str,
    sock: TcpStream,
    config: Arc<ServerConfig>,
    responder: &R,
) {
    let peer = http1::peer_name(&sock);
    let io = match DeadlineStream::new(sock, http1::READ_TIMEOUT, http1::WRITE_TIMEOUT) {
        Ok(io) => io,
        Err(e) => return say!("{service}: {peer}: setting timeouts: {e}"),
    };
    let conn = match ServerConnection::new(config) {
        Ok(conn) => conn,
        Err(e) => return say!("{service}: {peer}: starting TLS: {e}"),
    };
    let mut tls = StreamOwned::new(conn, io);
    // Reading the request drives the handshake: a refused client certificate fails it
    // there, and rustls sends the client its alert before the error comes back.
    let client_cert = |tls: &StreamOwned<ServerConnection, DeadlineStream>| {
        tls.conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.to_vec())
    };
    if http1::exchange(service, &peer, &mut tls, responder, client_cert) {
        tls.conn.send_close_notify();
        let _ = tls.flush();
        tls.sock.linger();
    }
}
