//! `shoal pxe`: the proxy DHCP, TFTP and HTTP services bound to the provisioning
//! interface, run together until one fails.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use tokio::net::UdpSocket;

use crate::dhcp::{self, ProxyConfig, PXE_PORT};
use crate::http::{self, BootSite};
use crate::journal::{Journal, Stage};
use crate::seeds::Seeds;
use crate::tftpd::{self, Files};

/// The iPXE binary for BIOS firmware, from Debian's `ipxe` package.
pub const BIOS_FILE: &str = "undionly.kpxe";
/// The iPXE binary for x86-64 UEFI firmware, from the same package.
pub const UEFI_FILE: &str = "ipxe.efi";

/// How the boot services run.
#[derive(Debug, Clone)]
pub struct PxeConfig {
    /// The provisioning network's interface: every socket is bound to it.
    pub interface: String,
    /// This server's address on that interface.
    pub address: Ipv4Addr,
    /// The HTTP port.
    pub http_port: u16,
    /// Where `undionly.kpxe` and `ipxe.efi` are (`/usr/lib/ipxe`).
    pub firmware_dir: PathBuf,
    /// The kernel machines boot.
    pub kernel: PathBuf,
    /// Its initrds, loaded in order.
    pub initrds: Vec<PathBuf>,
    /// The kernel command line (the seed address is appended).
    pub cmdline: String,
    /// Per-machine NoCloud seed files, if any.
    pub seed_dir: Option<PathBuf>,
    /// Answer IPv6 router solicitations with "no router here" ([`crate::ra`]).
    pub answer_router_solicitations: bool,
}

/// Why the boot services cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PxeError {
    /// A file the services need is missing.
    #[error("{what} {path}: {source}{hint}")]
    Missing {
        /// What it is.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// A socket could not be set up.
    #[error("{what} on {interface}: {op}: {source}")]
    Socket {
        /// The service.
        what: &'static str,
        /// The interface.
        interface: String,
        /// The operation, e.g. `bind 0.0.0.0:67`.
        op: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A service stopped.
    #[error("{what} stopped: {source}")]
    Stopped {
        /// The service.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The boot services, bound and ready to run.
pub struct Bound {
    dhcp: UdpSocket,
    pxe: UdpSocket,
    tftp: UdpSocket,
    http: tokio::net::TcpListener,
    ra: Option<(socket2::Socket, u32)>,
    proxy: ProxyConfig,
    files: Files,
    site: BootSite,
    address: Ipv4Addr,
    /// The journal the services write.
    pub journal: Journal,
    /// The rendered seeds the HTTP side serves (the inventory writes them).
    pub seeds: Seeds,
}

impl Bound {
    /// The base URL machines reach the HTTP side at.
    pub fn base_url(&self) -> &str {
        &self.site.base_url
    }
}

fn udp(interface: &str, port: u16, what: &'static str) -> Result<UdpSocket, PxeError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let fail = |op: String| {
        move |source| PxeError::Socket {
            what,
            interface: interface.to_owned(),
            op,
            source,
        }
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(fail("socket".into()))?;
    socket
        .set_reuse_address(true)
        .map_err(fail("SO_REUSEADDR".into()))?;
    socket
        .set_broadcast(true)
        .map_err(fail("SO_BROADCAST".into()))?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(fail("SO_BINDTODEVICE (does the interface exist?)".into()))?;
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    socket
        .bind(&addr.into())
        .map_err(fail(format!("bind {addr}")))?;
    socket
        .set_nonblocking(true)
        .map_err(fail("O_NONBLOCK".into()))?;
    UdpSocket::from_std(socket.into()).map_err(fail("register with tokio".into()))
}

fn check(what: &'static str, path: PathBuf, hint: &'static str) -> Result<PathBuf, PxeError> {
    std::fs::metadata(&path)
        .map(|_| ())
        .map_err(|source| PxeError::Missing {
            what,
            path: path.clone(),
            source,
            hint,
        })?;
    Ok(path)
}

/// Checks the files and binds every socket, so that a mistake is reported before
/// anything is served.
pub async fn bind(cfg: &PxeConfig) -> Result<Bound, PxeError> {
    let ipxe_hint = " (Debian's ipxe package has it: apt-get install ipxe)";
    let bios = check("iPXE for BIOS", cfg.firmware_dir.join(BIOS_FILE), ipxe_hint)?;
    let uefi = check("iPXE for UEFI", cfg.firmware_dir.join(UEFI_FILE), ipxe_hint)?;
    let kernel = check("the kernel", cfg.kernel.clone(), "")?;
    let initrds = cfg
        .initrds
        .iter()
        .map(|p| check("the initrd", p.clone(), ""))
        .collect::<Result<Vec<_>, _>>()?;
    let interface = cfg.interface.as_str();
    let dhcp = udp(interface, 67, "proxy DHCP")?;
    let pxe = udp(interface, PXE_PORT, "proxy DHCP")?;
    let tftp = udp(interface, 69, "TFTP")?;
    let http_addr = SocketAddr::V4(SocketAddrV4::new(cfg.address, cfg.http_port));
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|source| PxeError::Socket {
            what: "HTTP",
            interface: interface.to_owned(),
            op: format!("bind {http_addr} (is {} this host's address?)", cfg.address),
            source,
        })?;
    let ra = if cfg.answer_router_solicitations {
        let bound = crate::ra::bind(interface).map_err(|(op, source)| PxeError::Socket {
            what: "router advertisements",
            interface: interface.to_owned(),
            op,
            source,
        })?;
        Some(bound)
    } else {
        None
    };
    let base_url = format!("http://{http_addr}");
    let journal = Journal::default();
    let seeds = Seeds::default();
    Ok(Bound {
        dhcp,
        pxe,
        tftp,
        http,
        ra,
        proxy: ProxyConfig {
            server: cfg.address,
            script_url: format!("{base_url}/boot.ipxe"),
            bios_file: BIOS_FILE.into(),
            uefi_file: UEFI_FILE.into(),
        },
        files: Files::new([bios, uefi]),
        site: BootSite {
            base_url,
            kernel,
            initrds,
            cmdline: cfg.cmdline.clone(),
            seed_dir: cfg.seed_dir.clone(),
            journal: journal.clone(),
            seeds: seeds.clone(),
        },
        address: cfg.address,
        journal,
        seeds,
    })
}

impl Bound {
    /// Serves until a service fails.
    pub async fn run(self) -> Result<(), PxeError> {
        let app = http::router(self.site).into_make_service_with_connect_info::<SocketAddr>();
        let stopped = |what| move |source| PxeError::Stopped { what, source };
        let ra = async move {
            match self.ra {
                Some((socket, ifindex)) => {
                    // A plain thread (not spawn_blocking, which a runtime's shutdown
                    // waits for): it blocks in recv for as long as the process runs.
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    std::thread::Builder::new()
                        .name("shoal-pxe-ra".into())
                        .spawn(move || {
                            let _ = tx.send(crate::ra::serve(socket, ifindex));
                        })?;
                    rx.await.map_err(std::io::Error::other)?
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = ra => r.map_err(stopped("router advertisements")),
            r = proxy(self.dhcp, 67, &self.proxy, &self.journal) => r.map_err(stopped("proxy DHCP on 67")),
            r = proxy(self.pxe, PXE_PORT, &self.proxy, &self.journal) => r.map_err(stopped("proxy DHCP on 4011")),
            r = tftpd::serve(self.tftp, self.address, self.files) => r.map_err(stopped("TFTP")),
            r = axum::serve(self.http, app) => r.map_err(stopped("HTTP")),
        }
    }
}

/// Answers PXE clients on one socket.
async fn proxy(
    socket: UdpSocket,
    port: u16,
    cfg: &ProxyConfig,
    journal: &Journal,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        let req = match dhcp::decode(&buf[..n]) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(%from, error = %e, "undecodable DHCP packet; ignored");
                continue;
            }
        };
        let Some(answer) = dhcp::respond(cfg, &req, port) else {
            continue;
        };
        let bytes = match dhcp::encode(&answer.reply) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "proxy DHCP reply not encodable");
                continue;
            }
        };
        let to = dhcp::destination(from);
        if let Err(e) = socket.send_to(&bytes, to).await {
            tracing::warn!(mac = %answer.mac, %to, error = %e, "proxy DHCP reply not sent");
            continue;
        }
        let stage = if port == PXE_PORT {
            Stage::Acknowledged
        } else {
            Stage::Offered
        };
        tracing::info!(mac = %answer.mac, client = ?answer.client, file = %answer.boot_file, ?stage, "PXE boot file given");
        journal.record(answer.mac, stage, answer.boot_file);
    }
}
