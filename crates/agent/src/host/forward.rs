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
use crate::net::netns::NetNs;

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
    pub fn check(&self, target: SocketAddrV4) -> Result<(), String> {
        let ip = target.ip().to_string();
        let machine = self
            .machines
            .state()
            .into_iter()
            .find(|m| {
                m.spec.host_name.as_deref() == Some(self.host.as_str())
                    && m.spec.ip.as_deref() == Some(ip.as_str())
            })
            .ok_or_else(|| format!("no VM with address {ip} runs on host {}", self.host))?;
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
            Err(format!(
                "port {port} of {ip} is not a port the gateway exposes"
            ))
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

async fn handle(conn: TcpStream, netns: NetNs, targets: &Targets) -> Result<(), String> {
    let _ = conn.set_nodelay(true);
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    let mut limited = (&mut reader).take(forward::MAX_LINE as u64);
    let read = limited.read_line(&mut line);
    let outcome = tokio::time::timeout(REQUEST_TIMEOUT, read).await;
    drop(limited);
    match outcome {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("reading the request: {e}")),
        Err(_) => return Err("no request line within 5 s".into()),
    }
    // Bytes the gateway sent after its line (a ClientHello, say) stay buffered.
    let buffered = reader.buffer().to_vec();
    let mut conn = reader.into_inner();
    let target = match forward::parse_request(&line).and_then(|t| targets.check(t).map(|()| t)) {
        Ok(t) => t,
        Err(why) => {
            let _ = conn.write_all(forward::error_line(&why).as_bytes()).await;
            return Err(why);
        }
    };
    let vm = match connect_in(netns, target).await {
        Ok(s) => s,
        Err(why) => {
            let _ = conn.write_all(forward::error_line(&why).as_bytes()).await;
            return Err(why);
        }
    };
    let mut vm = vm;
    conn.write_all(format!("{}\n", forward::REPLY_OK).as_bytes())
        .await
        .map_err(|e| format!("answering the gateway: {e}"))?;
    if !buffered.is_empty() {
        vm.write_all(&buffered)
            .await
            .map_err(|e| format!("writing to {target}: {e}"))?;
    }
    tokio::io::copy_bidirectional_with_sizes(&mut conn, &mut vm, COPY_BUFFER, COPY_BUFFER)
        .await
        .map(|_| ())
        .map_err(|e| format!("copying to {target}: {e}"))
}

/// Connects to `target` from inside the data-plane namespace.
async fn connect_in(netns: NetNs, target: SocketAddrV4) -> Result<TcpStream, String> {
    let std_stream = tokio::task::spawn_blocking(move || {
        netns.run(|| std::net::TcpStream::connect_timeout(&target.into(), CONNECT_TIMEOUT))
    })
    .await
    .map_err(|e| format!("connecting to {target}: {e}"))?
    .map_err(|e| format!("entering the data-plane namespace: {e}"))?
    .map_err(|e| format!("connecting to {target}: {e}"))?;
    std_stream
        .set_nonblocking(true)
        .map_err(|e| format!("connecting to {target}: {e}"))?;
    let stream =
        TcpStream::from_std(std_stream).map_err(|e| format!("connecting to {target}: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
