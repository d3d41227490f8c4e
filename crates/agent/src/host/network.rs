//! One cluster's network services on this host: its DHCP server and NoCloud
//! metadata service on the anycast gateway, with the leases and metadata they serve.

use std::net::SocketAddrV4;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::net::dhcp::{self, LeaseTable};
use crate::net::metadata::{self, MetaTable, PhoneHomeSender};
use crate::net::netns::NetNs;
use crate::net::ClusterNet;

use super::AgentError;

/// The port of the metadata service (NoCloud seeds are plain `http://<gateway>/`).
pub const METADATA_PORT: u16 = 80;

/// A cluster network's running services. Dropping it stops them.
pub struct ClusterServices {
    /// The network they serve.
    pub net: ClusterNet,
    /// DHCP's static leases, by MAC.
    pub leases: LeaseTable,
    /// The metadata served per machine.
    pub meta: MetaTable,
    tasks: Vec<JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
}

/// Starts a cluster network's services: the host loop's boundary to sockets, so
/// that its unit tests can keep the tables without serving them.
pub trait ServiceStarter: Send + Sync {
    /// Starts DHCP and metadata for `net`, whose bridge holds the gateway address.
    fn start(
        &self,
        net: &ClusterNet,
        phone_home: PhoneHomeSender,
    ) -> Result<ClusterServices, AgentError>;
}

/// [`ServiceStarter`] serving inside a network namespace.
#[derive(Debug, Clone)]
pub struct NetnsServices(pub NetNs);

impl ServiceStarter for NetnsServices {
    fn start(
        &self,
        net: &ClusterNet,
        phone_home: PhoneHomeSender,
    ) -> Result<ClusterServices, AgentError> {
        ClusterServices::start(&self.0, net, phone_home)
    }
}

impl ClusterServices {
    /// Starts DHCP and metadata for `net`, whose bridge must already hold the
    /// gateway address, inside `netns`.
    pub fn start(
        netns: &NetNs,
        net: &ClusterNet,
        phone_home: PhoneHomeSender,
    ) -> Result<Self, AgentError> {
        let leases = LeaseTable::default();
        let meta = MetaTable::default();
        let udp = dhcp::bind(netns, &net.bridge).map_err(AgentError::Dhcp)?;
        let udp = tokio::net::UdpSocket::from_std(udp).map_err(|source| AgentError::Io {
            what: format!("registering the DHCP socket of {}", net.bridge),
            source,
        })?;
        let dhcp_task = tokio::spawn(dhcp::serve(udp, net.clone(), leases.clone()));
        let tcp = metadata::bind(netns, SocketAddrV4::new(net.gateway, METADATA_PORT))
            .map_err(AgentError::Metadata)?;
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|source| AgentError::Io {
            what: format!("registering the metadata listener of {}", net.bridge),
            source,
        })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let router = metadata::router(net.key.clone(), meta.clone(), phone_home);
        let key = net.key.clone();
        let http_task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = metadata::serve(tcp, router, shutdown).await {
                tracing::error!(cluster = %key, error = %e, "metadata service stopped");
            }
        });
        tracing::info!(cluster = %net.key, bridge = %net.bridge, gateway = %net.gateway, "network services started");
        Ok(ClusterServices {
            net: net.clone(),
            leases,
            meta,
            tasks: vec![dhcp_task, http_task],
            stop: Some(stop),
        })
    }

    /// The tables of `net` with nothing serving them (the host loop's unit tests).
    #[cfg(test)]
    pub(crate) fn unserved(net: &ClusterNet) -> Self {
        ClusterServices {
            net: net.clone(),
            leases: LeaseTable::default(),
            meta: MetaTable::default(),
            tasks: Vec::new(),
            stop: None,
        }
    }
}

impl Drop for ClusterServices {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}
