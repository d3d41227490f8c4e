//! Whether a guest API answers through the gateway: `GET /readyz` over TLS to the
//! gateway with the API's server name, trusting only the cluster CA (the gateway's
//! own health probe, aimed at the gateway instead of a backend).

use std::net::SocketAddr;
use std::time::Duration;

/// How long one probe may take: an API server on an emulated CPU can take seconds.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// `Ok` when `https://<server_name>/readyz`, reached at `gateway`, answers 200 with a
/// certificate the cluster CA signed; else what went wrong.
pub async fn readyz(
    gateway: SocketAddr,
    server_name: &str,
    ca_pem: &str,
) -> Result<(), shoal_kube::readyz::ProbeError> {
    shoal_kube::readyz::readyz_via(gateway, server_name, ca_pem, PROBE_TIMEOUT).await
}
