//! Whether a guest API answers through the gateway: `GET /readyz` over TLS to the
//! gateway with the API's server name, trusting only the cluster CA (the gateway's
//! own health probe, aimed at the gateway instead of a backend).

use std::net::SocketAddr;
use std::time::Duration;

/// How long one probe may take: an API server on an emulated CPU can take seconds.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Probes before the API counts as not answering: a kube-apiserver on an emulated
/// CPU answers 500 now and then while one of its checks is slow.
const ATTEMPTS: u32 = 3;
/// The pause between two probes.
const PAUSE: Duration = Duration::from_secs(2);

/// `Ok` when `https://<server_name>/readyz`, reached at `gateway`, answers 200 with a
/// certificate the cluster CA signed, at one of [`ATTEMPTS`] tries; else what went
/// wrong at the last.
pub async fn readyz(
    gateway: SocketAddr,
    server_name: &str,
    ca_pem: &str,
) -> Result<(), shoal_kube::readyz::ProbeError> {
    let mut attempt = 1;
    loop {
        match shoal_kube::readyz::readyz_via(gateway, server_name, ca_pem, PROBE_TIMEOUT).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= ATTEMPTS => return Err(e),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
}
