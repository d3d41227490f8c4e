//! A read-only TFTP server for the few files PXE firmware fetches (iPXE's
//! `undionly.kpxe` and `ipxe.efi`). Only the files it was given by name are served,
//! so no request can reach another path; a write request is refused.
//!
//! Each read runs on its own socket (its transfer ID, RFC 1350 §4), sends one block
//! at a time and resends it until acknowledged, up to [`RETRIES`] times.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::tftp::{negotiate, ErrorCode, Packet};

/// How long to wait for an acknowledgement before resending.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// How many times a block is sent before the transfer is given up.
pub const RETRIES: u32 = 5;

/// The files served, by the name clients ask for.
#[derive(Debug, Clone, Default)]
pub struct Files(Arc<BTreeMap<String, PathBuf>>);

impl Files {
    /// Serves each path under its file name.
    pub fn new(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        Self(Arc::new(
            paths
                .into_iter()
                .filter_map(|p| Some((p.file_name()?.to_string_lossy().into_owned(), p)))
                .collect(),
        ))
    }

    /// The path of `name` (a leading `/` is ignored, as some ROMs send one).
    pub fn find(&self, name: &str) -> Option<&PathBuf> {
        self.0.get(name.trim_start_matches('/'))
    }
}

/// Why a transfer ended early.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A socket operation failed.
    #[error("TFTP to {peer}: {op}: {source}")]
    Io {
        /// The client.
        peer: SocketAddr,
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The client stopped acknowledging.
    #[error("TFTP to {peer}: no acknowledgement of block {block} after {RETRIES} tries")]
    Timeout {
        /// The client.
        peer: SocketAddr,
        /// The block last sent.
        block: u16,
    },
    /// The client sent an error (PXE ROMs do so after a size probe).
    #[error("TFTP to {peer}: the client ended the transfer: {message} (code {code})")]
    Aborted {
        /// The client.
        peer: SocketAddr,
        /// Its error code.
        code: u16,
        /// Its message.
        message: String,
    },
}

/// Serves read requests arriving on `socket` (port 69) until the socket fails.
/// Each transfer answers from a new socket on `local`.
pub async fn serve(socket: UdpSocket, local: Ipv4Addr, files: Files) -> std::io::Result<()> {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        let request = match Packet::decode(&buf[..n]) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "not a TFTP request; ignored");
                continue;
            }
        };
        let files = files.clone();
        tokio::spawn(async move {
            match answer(local, peer, request, &files).await {
                Ok(Some((name, bytes))) => {
                    tracing::info!(%peer, file = %name, bytes, "TFTP transfer done")
                }
                Ok(None) => {}
                Err(TransferError::Aborted { code, message, .. }) => {
                    tracing::debug!(%peer, code, %message, "TFTP transfer ended by the client")
                }
                Err(e) => tracing::warn!(error = %e, "TFTP transfer failed"),
            }
        });
    }
}

/// Answers one request from a new socket; the file's name and size when it was
/// sent whole.
async fn answer(
    local: Ipv4Addr,
    peer: SocketAddr,
    request: Packet,
    files: &Files,
) -> Result<Option<(String, usize)>, TransferError> {
    let io = |op| move |source| TransferError::Io { peer, op, source };
    let socket = UdpSocket::bind((local, 0)).await.map_err(io("bind"))?;
    socket.connect(peer).await.map_err(io("connect"))?;
    let (filename, mode, options) = match request {
        Packet::Rrq {
            filename,
            mode,
            options,
        } => (filename, mode, options),
        Packet::Wrq { filename } => {
            tracing::info!(%peer, %filename, "TFTP write request refused");
            let refusal = Packet::error(ErrorCode::AccessViolation, "this server is read-only");
            socket.send(&refusal.encode()).await.map_err(io("send"))?;
            return Ok(None);
        }
        // Stray packets of a finished transfer.
        _ => return Ok(None),
    };
    if mode != "octet" {
        let refusal = Packet::error(ErrorCode::IllegalOperation, "only octet mode is served");
        socket.send(&refusal.encode()).await.map_err(io("send"))?;
        return Ok(None);
    }
    let data = match files.find(&filename) {
        Some(path) => tokio::fs::read(path).await.ok(),
        None => None,
    };
    let Some(data) = data else {
        tracing::info!(%peer, %filename, "TFTP request for a file not served");
        let refusal = Packet::error(ErrorCode::NotFound, format!("{filename}: not served here"));
        socket.send(&refusal.encode()).await.map_err(io("send"))?;
        return Ok(None);
    };
    let terms = negotiate(&options, data.len() as u64);
    if !terms.ack.is_empty() {
        let oack = Packet::Oack { options: terms.ack }.encode();
        exchange(&socket, peer, &oack, 0).await?;
    }
    // The last block is shorter than the block size, empty if need be.
    let blocks = data.len() / terms.block + 1;
    for i in 0..blocks {
        let start = i * terms.block;
        let end = (start + terms.block).min(data.len());
        // Block numbers start at 1 and wrap, as iPXE and most ROMs expect.
        let block = ((i + 1) % 65_536) as u16;
        let packet = Packet::Data {
            block,
            data: data[start..end].to_vec(),
        }
        .encode();
        exchange(&socket, peer, &packet, block).await?;
    }
    Ok(Some((filename, data.len())))
}

/// Sends `packet` until the client acknowledges `block`.
async fn exchange(
    socket: &UdpSocket,
    peer: SocketAddr,
    packet: &[u8],
    block: u16,
) -> Result<(), TransferError> {
    let io = |op| move |source| TransferError::Io { peer, op, source };
    let mut buf = [0u8; 1024];
    for _ in 0..RETRIES {
        socket.send(packet).await.map_err(io("send"))?;
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        loop {
            let got = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await;
            let Ok(got) = got else { break };
            let n = got.map_err(io("recv"))?;
            match Packet::decode(&buf[..n]) {
                Ok(Packet::Ack { block: b }) if b == block => return Ok(()),
                Ok(Packet::Error { code, message }) => {
                    return Err(TransferError::Aborted {
                        peer,
                        code,
                        message,
                    })
                }
                // A duplicate acknowledgement of an earlier block, or noise.
                _ => {}
            }
        }
    }
    Err(TransferError::Timeout { peer, block })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal client: reads `name` with `options`, acknowledging every packet.
    async fn fetch(
        server: SocketAddr,
        name: &str,
        options: Vec<(String, String)>,
    ) -> Result<(Vec<u8>, Option<Vec<(String, String)>>), Packet> {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let rrq = Packet::Rrq {
            filename: name.into(),
            mode: "octet".into(),
            options,
        };
        sock.send_to(&rrq.encode(), server).await.expect("send");
        let mut out = Vec::new();
        let mut oack = None;
        let mut block_size = 512;
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = sock.recv_from(&mut buf).await.expect("recv");
            match Packet::decode(&buf[..n]).expect("decodes") {
                Packet::Oack { options } => {
                    if let Some((_, v)) = options.iter().find(|(k, _)| k == "blksize") {
                        block_size = v.parse().expect("number");
                    }
                    oack = Some(options);
                    sock.send_to(&Packet::Ack { block: 0 }.encode(), from)
                        .await
                        .expect("ack");
                }
                Packet::Data { block, data } => {
                    let last = data.len() < block_size;
                    out.extend_from_slice(&data);
                    sock.send_to(&Packet::Ack { block }.encode(), from)
                        .await
                        .expect("ack");
                    if last {
                        return Ok((out, oack));
                    }
                }
                other => return Err(other),
            }
        }
    }

    async fn server(files: Files) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = sock.local_addr().expect("addr");
        tokio::spawn(serve(sock, Ipv4Addr::LOCALHOST, files));
        addr
    }

    #[tokio::test]
    async fn a_file_is_served_whole_with_and_without_options() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("undionly.kpxe");
        // An exact multiple of 512 ends with an empty block.
        let content: Vec<u8> = (0..512 * 3).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).expect("write");
        let addr = server(Files::new([path])).await;

        let (plain, oack) = fetch(addr, "undionly.kpxe", vec![]).await.expect("served");
        assert_eq!(plain, content);
        assert!(oack.is_none());

        let (big, oack) = fetch(
            addr,
            "/undionly.kpxe",
            vec![
                ("tsize".into(), "0".into()),
                ("blksize".into(), "1432".into()),
            ],
        )
        .await
        .expect("served");
        assert_eq!(big, content);
        assert_eq!(
            oack,
            Some(vec![
                ("tsize".to_string(), content.len().to_string()),
                ("blksize".to_string(), "1432".to_string())
            ])
        );
    }

    #[tokio::test]
    async fn other_paths_and_writes_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ipxe.efi");
        std::fs::write(&path, b"x").expect("write");
        let addr = server(Files::new([path])).await;
        for name in ["../etc/passwd", "/etc/passwd", "ipxe.efi/..", "missing"] {
            match fetch(addr, name, vec![]).await {
                Err(Packet::Error { code, message }) => {
                    assert_eq!(code, ErrorCode::NotFound as u16, "{name}: {message}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let wrq = Packet::Wrq {
            filename: "ipxe.efi".into(),
        };
        sock.send_to(&wrq.encode(), addr).await.expect("send");
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).await.expect("recv");
        assert!(matches!(
            Packet::decode(&buf[..n]),
            Ok(Packet::Error { code: 2, .. })
        ));
    }
}
