//! An HTTP CONNECT proxy on 127.0.0.1 that opens its tunnels from inside a test's
//! network namespace, so that programs in the machine's own namespace (the CLI,
//! kubectl's credential plugin, the scripted browser) reach a service that lives
//! in the namespace at the very URL the namespace's guests use, without any
//! address or route in the machine's own namespace. It tunnels to one target only.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; dropping it stops accepting and ends open tunnels. It runs on
/// a thread and runtime of its own, so a test that blocks its own runtime (reading
/// a child's output, sleeping) does not stall the tunnels its children use.
pub struct ConnectProxy {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ConnectProxy {
    /// Listens on 127.0.0.1 and tunnels `CONNECT <target>` requests to `target`,
    /// dialled from inside namespace `ns`; any other request gets 403.
    pub fn start(ns: &str, target: SocketAddr) -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let ns = ns.to_owned();
        std::thread::Builder::new()
            .name(format!("connect-proxy-{addr}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    let serve = async {
                        while let Ok((conn, _)) = listener.accept().await {
                            let ns = ns.clone();
                            tokio::spawn(async move {
                                // A refused dial is the service not listening
                                // yet (the harness polls it while it starts).
                                if let Err(e) = tunnel(conn, &ns, target).await {
                                    let refused = e.chain().any(|c| {
                                        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                                            io.kind() == std::io::ErrorKind::ConnectionRefused
                                        })
                                    });
                                    if !refused {
                                        eprintln!("connect proxy to {target} in {ns}: {e:#}");
                                    }
                                }
                            });
                        }
                    };
                    tokio::select! {
                        _ = stopped => {}
                        () = serve => {}
                    }
                });
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn tunnel(conn: TcpStream, ns: &str, target: SocketAddr) -> Result<()> {
    let mut client = BufReader::new(conn);
    let mut request = String::new();
    client.read_line(&mut request).await?;
    // The headers end at the first empty line.
    loop {
        let mut line = String::new();
        if client.read_line(&mut line).await? == 0 || line.trim().is_empty() {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, authority) = (parts.next(), parts.next());
    let mut client = client.into_inner();
    if method != Some("CONNECT") || authority != Some(target.to_string().as_str()) {
        client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            .await?;
        bail!(
            "refused {:?}: only CONNECT {target} is tunnelled",
            request.trim()
        );
    }
    let ns_owned = ns.to_owned();
    let upstream = tokio::task::spawn_blocking(move || {
        crate::hosts::in_netns(&ns_owned, || {
            std::net::TcpStream::connect_timeout(&target, Duration::from_secs(10))
        })
    })
    .await??
    .with_context(|| format!("connecting to {target} in namespace {ns}"))?;
    upstream.set_nonblocking(true)?;
    let mut upstream = TcpStream::from_std(upstream)?;
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
