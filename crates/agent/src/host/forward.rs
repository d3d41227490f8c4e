//! The forward endpoint: the gateway reaches this host's VMs through it.
//!
//! VMs live on bridges inside the agent's network namespace, which the gateway cannot
//! route to. The agent listens in its own namespace (on `--forward-listen`), reads one
//! [`shoal_api::forward`] request line, checks that the target is a port the gateway
//! exposes on a VM this host runs, opens the connection from inside the data-plane
//! namespace, answers `OK` and copies bytes both ways until either side closes.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::Store;
use shoal_api::forward::{self, GUEST_API_PORT};
use shoal_api::resources::common::MachineRole;
use shoal_api::{Cluster, Machine};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::AgentError;
use crate::net::netns::{NetNs, NetnsError};

/// Why one forward request was refused or ended. The refusals are sent to the
/// gateway as the `ERR` line's text, so their messages are what the gateway logs.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The request line does not follow the protocol.
    #[error(transparent)]
    Request(#[from] forward::ForwardParseError),
    /// No VM on this host has the target's address.
    #[error("no VM with address {ip} runs on host {host}")]
    NoSuchVm {
        /// The target's address.
        ip: String,
        /// This host.
        host: String,
    },
    /// The VM runs here, but the gateway does not expose that port.
    #[error("port {port} of {ip} is not a port the gateway exposes")]
    PortNotExposed {
        /// The target's port.
        port: u16,
        /// The target's address.
        ip: String,
    },
    /// Reading the request line failed.
    #[error("reading the request: {source}")]
    ReadRequest {
        /// The read error.
        source: std::io::Error,
    },
    /// The gateway sent no full line in time.
    #[error("no request line within 5 s")]
    RequestTimeout,
    /// The connection to the VM could not be opened.
    #[error("connecting to {target}: {source}")]
    Connect {
        /// The VM's address and port.
        target: SocketAddrV4,
        /// The socket error.
        source: std::io::Error,
    },
    /// The blocking connect task did not finish.
    #[error("connecting to {target}: {source}")]
    ConnectTask {
        /// The VM's address and port.
        target: SocketAddrV4,
        /// Why the task failed.
        source: tokio::task::JoinError,
    },
    /// The data-plane namespace could not be entered.
    #[error("entering the data-plane namespace: {source}")]
    Netns {
        /// The namespace error.
        source: NetnsError,
    },
    /// Writing `OK` to the gateway failed.
    #[error("answering the gateway: {source}")]
    Answer {
        /// The write error.
        source: std::io::Error,
    },
    /// Passing on the bytes the gateway sent after its line failed.
    #[error("writing to {target}: {source}")]
    WriteBuffered {
        /// The VM's address and port.
        target: SocketAddrV4,
        /// The write error.
        source: std::io::Error,
    },
    /// Copying between the gateway and the VM failed.
    #[error("copying to {target}: {source}")]
    Copy {
        /// The VM's address and port.
        target: SocketAddrV4,
        /// The copy error.
        source: std::io::Error,
    },
}

/// How long the gateway may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to a VM may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Copy buffer per direction.
const COPY_BUFFER: usize = 64 * 1024;

/// What the forwarder needs to decide whether a target is allowed.
#[derive(Clone)]
pub struct Targets {
    /// This host's name.
    pub host: String,
    /// Every Machine (the agent's cache).
    pub machines: Store<Machine>,
    /// Every Cluster (the agent's cache), for the ingress ports.
    pub clusters: Store<Cluster>,
}

impl Targets {
    /// Why `target` may not be reached through this host, or `Ok` if it may.
    pub fn check(&self, target: SocketAddrV4) -> Result<(), ForwardError> {
        let ip = target.ip().to_string();
        let machine = self
            .machines
            .state()
            .into_iter()
            .find(|m| {
                m.spec.host_name.as_deref() == Some(self.host.as_str())
                    && m.spec.ip.as_deref() == Some(ip.as_str())
            })
            .ok_or_else(|| ForwardError::NoSuchVm {
                ip: ip.clone(),
                host: self.host.clone(),
            })?;
        let port = target.port();
        let allowed = match machine.spec.role {
            MachineRole::ControlPlane => port == GUEST_API_PORT,
            MachineRole::Worker => {
                let ns = machine.metadata.namespace.as_deref().unwrap_or_default();
                self.clusters
                    .state()
                    .iter()
                    .find(|c| {
                        c.metadata.namespace.as_deref() == Some(ns)
                            && c.metadata.name.as_deref() == Some(machine.spec.cluster.as_str())
                    })
                    .is_some_and(|c| {
                        port == c.spec.ingress.http_port || port == c.spec.ingress.https_port
                    })
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(ForwardError::PortNotExposed { port, ip })
        }
    }
}

/// Binds the forward endpoint in the agent's own namespace.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AgentError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Io {
            what: format!("binding the forward endpoint {addr}"),
            source,
        })
}

/// Serves forward requests until the task is aborted.
pub async fn serve(listener: TcpListener, netns: NetNs, targets: Targets) {
    let targets = Arc::new(targets);
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "forward endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let netns = netns.clone();
        let targets = targets.clone();
        tokio::spawn(async move {
            if let Err(why) = handle(conn, netns, &targets).await {
                tracing::debug!(%peer, %why, "forward refused or ended");
            }
        });
    }
}

async fn handle(conn: TcpStream, netns: NetNs, targets: &Targets) -> Result<(), ForwardError> {
    let _ = conn.set_nodelay(true);
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    let mut limited = (&mut reader).take(forward::MAX_LINE as u64);
    let read = limited.read_line(&mut line);
    let outcome = tokio::time::timeout(REQUEST_TIMEOUT, read).await;
    drop(limited);
    match outcome {
        Ok(Ok(_)) => {}
        Ok(Err(source)) => return Err(ForwardError::ReadRequest { source }),
        Err(_) => return Err(ForwardError::RequestTimeout),
    }
    // Bytes the gateway sent after its line (a ClientHello, say) stay buffered.
    let buffered = reader.buffer().to_vec();
    let mut conn = reader.into_inner();
    let checked = forward::parse_request(&line)
        .map_err(ForwardError::from)
        .and_then(|t| targets.check(t).map(|()| t));
    let target = match checked {
        Ok(t) => t,
        Err(why) => {
            let _ = conn
                .write_all(forward::error_line(&why.to_string()).as_bytes())
                .await;
            return Err(why);
        }
    };
    let vm = match connect_in(netns, target).await {
        Ok(s) => s,
        Err(why) => {
            let _ = conn
                .write_all(forward::error_line(&why.to_string()).as_bytes())
                .await;
            return Err(why);
        }
    };
    let mut vm = vm;
    conn.write_all(format!("{}\n", forward::REPLY_OK).as_bytes())
        .await
        .map_err(|source| ForwardError::Answer { source })?;
    if !buffered.is_empty() {
        vm.write_all(&buffered)
            .await
            .map_err(|source| ForwardError::WriteBuffered { target, source })?;
    }
    tokio::io::copy_bidirectional_with_sizes(&mut conn, &mut vm, COPY_BUFFER, COPY_BUFFER)
        .await
        .map(|_| ())
        .map_err(|source| ForwardError::Copy { target, source })
}

/// Connects to `target` from inside the data-plane namespace (within 3 s). The
/// metrics listener's guest route dials guests' exporters with it too.
pub(crate) async fn connect_in(
    netns: NetNs,
    target: SocketAddrV4,
) -> Result<TcpStream, ForwardError> {
    let connect = |source| ForwardError::Connect { target, source };
    let std_stream = tokio::task::spawn_blocking(move || {
        netns.run(|| std::net::TcpStream::connect_timeout(&target.into(), CONNECT_TIMEOUT))
    })
    .await
    .map_err(|source| ForwardError::ConnectTask { target, source })?
    .map_err(|source| ForwardError::Netns { source })?
    .map_err(connect)?;
    std_stream.set_nonblocking(true).map_err(connect)?;
    let stream = TcpStream::from_std(std_stream).map_err(connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
