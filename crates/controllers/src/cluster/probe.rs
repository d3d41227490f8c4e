//! Whether a guest API answers through the gateway: `GET /readyz` over TLS to the
//! gateway with the API's server name, trusting only the cluster CA (the gateway's
//! own health probe, aimed at the gateway instead of a backend).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// `Ok` when `https://<server_name>/readyz`, reached at `gateway`, answers 200 with a
/// certificate the cluster CA signed; else what went wrong.
pub async fn readyz(gateway: SocketAddr, server_name: &str, ca_pem: &str) -> Result<(), String> {
    let config = Arc::new(shoal_gateway::health::client_config(ca_pem)?);
    let probe = async {
        let tcp = tokio::net::TcpStream::connect(gateway)
            .await
            .map_err(|e| format!("connecting to the gateway at {gateway}: {e}"))?;
        shoal_gateway::health::readyz(tcp, server_name, config).await
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}
