//! The controllers' way into a Kubernetes guest: a client through the gateway that
//! presents the cluster PKI's administrator certificate and trusts only the cluster
//! CA. Readiness, draining and join tokens all ask the guest through it.

use std::net::SocketAddr;

use shoal_kube::guest::{self, GuestAccess, GuestError};
use shoal_pki::ClusterPki;

/// A client of the guest API `api_host` (`api.<cluster>.<org>.<base>`) through the
/// gateway at `gateway`, as the cluster's administrator.
pub async fn admin_client(
    gateway: SocketAddr,
    api_host: &str,
    pki: &ClusterPki,
) -> Result<kube::Client, GuestError> {
    let admin = pki.admin();
    let access = GuestAccess {
        gateway,
        server_name: api_host,
        ca_pem: pki.ca().cert_pem(),
        cert_pem: &admin.cert_pem,
        key_pem: &admin.key_pem,
    };
    guest::client(&access).await
}
