//! The services a node's role calls for, started once `write_files` has written the
//! node file and the PKI:
//!
//! - on control-plane nodes, the **API server stand-in**: HTTPS on 6443 with the API
//!   server certificate Shoal issued ([`crate::apiserver`]);
//! - on workers, **ingress stand-ins** for an ingress controller's NodePorts: plain
//!   HTTP on 30080 and TLS on 30443 with the worker certificate, both answering
//!   `<hostname>\n` like the 8080 responder.
//!
//! Each stand-in starts on its own: a missing node file, missing or invalid PKI files
//! or a busy port stop only the stand-in concerned, and are returned for the caller to
//! log.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;

use crate::apiserver::ApiServer;
use crate::http1::{self, Request, Responder, Response, Status};
use crate::node::{NodeError, NodeFile, NODE_FILE};
use crate::services::{accept_loop, hostname};
use crate::tls::{self, ServingFiles, TlsError};

/// The API server stand-in's port.
pub const APISERVER_PORT: u16 = 6443;
/// The ingress stand-in's plain-HTTP NodePort.
pub const INGRESS_HTTP_PORT: u16 = 30080;
/// The ingress stand-in's TLS NodePort.
pub const INGRESS_HTTPS_PORT: u16 = 30443;
/// Where the PKI files are, relative to the guest's root.
pub const PKI_DIR: &str = "etc/shoal/pki";
/// The cluster CA certificate (named as shoal-pki's `PkiFile::CaCert`).
pub const CA_CERT: &str = "ca.crt";
/// The API server's certificate (`PkiFile::ApiServerCert`).
pub const APISERVER_CERT: &str = "apiserver.crt";
/// The API server's key (`PkiFile::ApiServerKey`).
pub const APISERVER_KEY: &str = "apiserver.key";
/// The worker certificate (`PkiFile::WorkerCert`).
pub const WORKER_CERT: &str = "worker.crt";
/// The worker key (`PkiFile::WorkerKey`).
pub const WORKER_KEY: &str = "worker.key";

/// Where the stand-ins listen.
#[derive(Debug, Clone)]
pub struct StandInConfig {
    /// The API server stand-in's address.
    pub apiserver: SocketAddr,
    /// The plain-HTTP ingress stand-in's address.
    pub ingress_http: SocketAddr,
    /// The TLS ingress stand-in's address.
    pub ingress_https: SocketAddr,
}

impl Default for StandInConfig {
    fn default() -> Self {
        let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        Self {
            apiserver: any(APISERVER_PORT),
            ingress_http: any(INGRESS_HTTP_PORT),
            ingress_https: any(INGRESS_HTTPS_PORT),
        }
    }
}

/// Why a stand-in is not running.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    /// No usable node file, so no role.
    #[error("no role services: {0}")]
    Node(#[from] NodeError),
    /// The stand-in's certificates are missing or invalid.
    #[error("{service}: not serving: {source}")]
    Tls {
        /// The stand-in.
        service: &'static str,
        /// What is wrong with its files (boxed: rustls' errors are large).
        #[source]
        source: Box<TlsError>,
    },
    /// Its port could not be bound.
    #[error("{service}: not serving: binding {addr}: {source}")]
    Bind {
        /// The stand-in.
        service: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Its accept thread could not be started.
    #[error("{service}: not serving: starting its thread: {source}")]
    Spawn {
        /// The stand-in.
        service: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// What [`start`] started and what it could not.
#[derive(Debug, Default)]
pub struct StandIns {
    /// The node file, if one was read.
    pub node: Option<NodeFile>,
    /// The stand-ins serving, by name, with their bound addresses.
    pub serving: Vec<(&'static str, SocketAddr)>,
    /// The stand-ins not serving, and why.
    pub failed: Vec<StandInError>,
}

impl StandIns {
    /// The bound address of the stand-in `service`, if it is serving.
    pub fn addr(&self, service: &str) -> Option<SocketAddr> {
        self.serving
            .iter()
            .find_map(|(name, addr)| (*name == service).then_some(*addr))
    }
}

/// Answers every request with the host name, like the 8080 responder.
#[derive(Debug, Clone, Copy)]
pub struct Hostname;

impl Responder for Hostname {
    fn respond(&self, _req: &Request, _client_cert: Option<&[u8]>) -> Response {
        Response::text(Status::Ok, format!("{}\n", hostname()))
    }

    fn refuse(&self, status: Status, why: &str) -> Response {
        Response::text(status, format!("{why}\n"))
    }
}

/// The PKI file `name` under `root`.
fn pki(root: &Path, name: &str) -> PathBuf {
    root.join(PKI_DIR).join(name)
}

/// Reads the node file under `root` and starts the stand-ins its role calls for.
/// Never fails as a whole: see [`StandIns::failed`].
pub fn start(root: &Path, cfg: &StandInConfig) -> StandIns {
    let mut out = StandIns::default();
    let node = match NodeFile::read(&root.join(NODE_FILE)) {
        Ok(node) => node,
        Err(e) => {
            out.failed.push(e.into());
            return out;
        }
    };
    out.node = Some(node.clone());
    let mut record = |result: Result<(&'static str, SocketAddr), StandInError>| match result {
        Ok(serving) => out.serving.push(serving),
        Err(e) => out.failed.push(e),
    };
    if node.role.is_control_plane() {
        let serving = ServingFiles {
            cert: pki(root, APISERVER_CERT),
            key: pki(root, APISERVER_KEY),
        };
        let api = ApiServer::new(node.kubernetes_version);
        record(
            tls::apiserver_config(&pki(root, CA_CERT), &serving)
                .map_err(|source| StandInError::Tls {
                    service: "apiserver",
                    source: Box::new(source),
                })
                .and_then(|config| serve_tls("apiserver", cfg.apiserver, config, api)),
        );
    } else {
        record(serve_plain("ingress-http", cfg.ingress_http, Hostname));
        let serving = ServingFiles {
            cert: pki(root, WORKER_CERT),
            key: pki(root, WORKER_KEY),
        };
        record(
            tls::server_config(&serving)
                .map_err(|source| StandInError::Tls {
                    service: "ingress-https",
                    source: Box::new(source),
                })
                .and_then(|config| serve_tls("ingress-https", cfg.ingress_https, config, Hostname)),
        );
    }
    out
}

fn bind(
    service: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StandInError> {
    let err = |source| StandInError::Bind {
        service,
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    Ok((listener, bound))
}

fn spawn(service: &'static str, f: impl FnOnce() + Send + 'static) -> Result<(), StandInError> {
    // The thread is detached: an accept loop never ends.
    std::thread::Builder::new()
        .name(service.to_string())
        .spawn(f)
        .map(drop)
        .map_err(|source| StandInError::Spawn { service, source })
}

/// Serves `responder` over TLS on `addr`.
pub fn serve_tls<R: Responder + Send + Sync + 'static>(
    service: &'static str,
    addr: SocketAddr,
    config: Arc<ServerConfig>,
    responder: R,
) -> Result<(&'static str, SocketAddr), StandInError> {
    let (listener, bound) = bind(service, addr)?;
    let responder = Arc::new(responder);
    spawn(service, move || {
        accept_loop(service, listener, move |sock| {
            tls::serve(service, sock, Arc::clone(&config), responder.as_ref())
        })
    })?;
    Ok((service, bound))
}

/// Serves `responder` over plain HTTP on `addr`.
pub fn serve_plain<R: Responder + Send + Sync + 'static>(
    service: &'static str,
    addr: SocketAddr,
    responder: R,
) -> Result<(&'static str, SocketAddr), StandInError> {
    let (listener, bound) = bind(service, addr)?;
    let responder = Arc::new(responder);
    spawn(service, move || {
        accept_loop(service, listener, move |sock| {
            http1::serve_plain(service, sock, responder.as_ref())
        })
    })?;
    Ok((service, bound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_pki::PkiFile;

    #[test]
    fn file_names_are_those_the_controllers_write() {
        // crates/controllers writes `/etc/shoal/pki/<PkiFile::kubeadm_path()>`.
        for (ours, theirs) in [
            (CA_CERT, PkiFile::CaCert),
            (APISERVER_CERT, PkiFile::ApiServerCert),
            (APISERVER_KEY, PkiFile::ApiServerKey),
            (WORKER_CERT, PkiFile::WorkerCert),
            (WORKER_KEY, PkiFile::WorkerKey),
        ] {
            assert_eq!(ours, theirs.kubeadm_path());
        }
    }
}
