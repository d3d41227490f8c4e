//! Opening a connection to a backend: through its host agent's forward endpoint, or
//! straight to it.

use std::time::Duration;

use shoal_api::forward::{self, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::routes::{Backend, Via};

/// Why a backend could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The TCP connection failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Nothing within the timeout.
    #[error("no connection to {addr} within {timeout:?}")]
    Timeout {
        /// The address.
        addr: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The agent refused or could not reach the VM.
    #[error("agent {agent} could not reach {target}: {why}")]
    Refused {
        /// The agent's forward endpoint.
        agent: String,
        /// The VM's address.
        target: String,
        /// What the agent said.
        why: String,
    },
}

/// Connects to `backend` within `timeout`. Through an agent, the connection is
/// returned once the agent has reached the VM.
pub async fn dial(backend: &Backend, timeout: Duration) -> Result<TcpStream, DialError> {
    match tokio::time::timeout(timeout, dial_inner(backend)).await {
        Ok(r) => r,
        Err(_) => Err(DialError::Timeout {
            addr: backend.target.to_string(),
            timeout,
        }),
    }
}

async fn dial_inner(backend: &Backend) -> Result<TcpStream, DialError> {
    let addr = match backend.via {
        Via::Agent(ep) => ep,
        Via::Direct => backend.target.into(),
    };
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| DialError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    if let Via::Agent(ep) = backend.via {
        let refused = |why: String| DialError::Refused {
            agent: ep.to_string(),
            target: backend.target.to_string(),
            why,
        };
        stream
            .write_all(forward::request_line(backend.target).as_bytes())
            .await
            .map_err(|e| refused(format!("sending the request: {e}")))?;
        // Byte by byte: nothing after the reply's newline may be consumed here.
        let mut line = Vec::with_capacity(16);
        loop {
            let b = stream
                .read_u8()
                .await
                .map_err(|e| refused(format!("reading the reply: {e}")))?;
            if b == b'\n' {
                break;
            }
            line.push(b);
            if line.len() >= forward::MAX_LINE {
                return Err(refused("the reply line is too long".into()));
            }
        }
        let text = String::from_utf8_lossy(&line);
        match forward::parse_reply(&text).map_err(|e| refused(e.to_string()))? {
            Reply::Ok => {}
            Reply::Err(why) => return Err(refused(why)),
        }
    }
    Ok(stream)
}
