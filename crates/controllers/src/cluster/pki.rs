//! A cluster's PKI Secret in the system namespace: created once, renewed before
//! expiry, never regenerated (so the service-account key stays the same).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use rand::distributions::{Alphanumeric, DistString};
use shoal_api::resources::organization::namespace_org;
use shoal_api::Cluster;
use shoal_pki::{ClusterPki, ClusterPkiParams, OffsetDateTime};

use crate::context::Context;
use crate::error::{failed, is_conflict, is_not_found, Error};
use crate::labels::{pki_secret_name, CLUSTER, CLUSTER_NAMESPACE, SYSTEM_NAMESPACE};

/// The key of the kubeadm bootstrap token in the PKI Secret.
pub const BOOTSTRAP_TOKEN_KEY: &str = shoal_api::wellknown::pki_key::BOOTSTRAP_TOKEN;
/// The key of kubeadm's certificate key (for control-plane joins) in the PKI Secret.
pub const CERTIFICATE_KEY_KEY: &str = shoal_api::wellknown::pki_key::CERTIFICATE_KEY;

const CA_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const LEAF_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A cluster's PKI and the token its nodes join with.
pub struct ClusterSecrets {
    /// The certificates and keys.
    pub pki: ClusterPki,
    /// The kubeadm bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub bootstrap_token: String,
    /// kubeadm's certificate key: 32 random bytes as hex.
    pub certificate_key: String,
}

/// The first address of a service CIDR: the `kubernetes` Service's ClusterIP.
pub fn api_service_ip(service_cidr: &str) -> Option<IpAddr> {
    let (addr, _) = service_cidr.split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    Some(IpAddr::V4(std::net::Ipv4Addr::from(u32::from(addr) + 1)))
}

/// What the cluster's certificates are issued for.
pub fn params(cluster: &Cluster, ctx: &Context) -> Result<ClusterPkiParams, Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let service_cidr = cluster.spec.network.service_cidr.to_string();
    let ip = api_service_ip(&service_cidr).ok_or_else(|| {
        Error::NotReady(format!(
            "cluster {ns}/{}: service CIDR {service_cidr} has no IPv4 address for the API service",
            cluster.name_any()
        ))
    })?;
    Ok(ClusterPkiParams {
        cluster: cluster.name_any(),
        org: namespace_org(&ns).unwrap_or(&ns).to_owned(),
        base_domain: match &cluster.spec.provider.aws {
            // On AWS the API's name is in the cluster's own domain, behind its load balancer.
            Some(aws) => aws.base_domain(&ctx.config.base_domain).to_owned(),
            None => ctx.config.base_domain.clone(),
        },
        dns_domain: ctx.config.dns_domain.clone(),
        api_service_ip: ip,
        // Node addresses stay out of the shared API server certificate: clients
        // reach the API by name, through the gateway.
        control_plane: Vec::new(),
        ca_ttl: CA_TTL,
        leaf_ttl: LEAF_TTL,
    })
}

/// A new kubeadm bootstrap token, `<6 chars>.<16 chars>` of `[a-z0-9]`.
pub fn token() -> String {
    let mut rng = rand::thread_rng();
    let mut lower = |n| Alphanumeric.sample_string(&mut rng, n).to_lowercase();
    let id = lower(6);
    let secret = lower(16);
    format!("{id}.{secret}")
}

fn certificate_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn to_secret(cluster: &Cluster, name: &str, s: &ClusterSecrets) -> Secret {
    let mut data: BTreeMap<String, ByteString> = s
        .pki
        .to_files()
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect();
    data.insert(
        BOOTSTRAP_TOKEN_KEY.into(),
        ByteString(s.bootstrap_token.clone().into_bytes()),
    );
    data.insert(
        CERTIFICATE_KEY_KEY.into(),
        ByteString(s.certificate_key.clone().into_bytes()),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(SYSTEM_NAMESPACE.into()),
            labels: Some(BTreeMap::from([
                (CLUSTER.to_owned(), cluster.name_any()),
                (
                    CLUSTER_NAMESPACE.to_owned(),
                    cluster.namespace().unwrap_or_default(),
                ),
            ])),
            ..Default::default()
        },
        data: Some(data),
        type_: Some(shoal_api::wellknown::secret_type::CLUSTER_PKI.into()),
        ..Default::default()
    }
}

fn from_secret(key: &str, secret: &Secret) -> Result<ClusterSecrets, Error> {
    let files: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    let pki = ClusterPki::from_files(&files).map_err(|source| Error::Pki {
        cluster: key.to_owned(),
        source,
    })?;
    let bootstrap_token = files.get(BOOTSTRAP_TOKEN_KEY).cloned().ok_or_else(|| {
        Error::NotReady(format!("cluster {key}: PKI secret has no bootstrap token"))
    })?;
    let certificate_key = files.get(CERTIFICATE_KEY_KEY).cloned().ok_or_else(|| {
        Error::NotReady(format!("cluster {key}: PKI secret has no certificate key"))
    })?;
    Ok(ClusterSecrets {
        pki,
        bootstrap_token,
        certificate_key,
    })
}

/// How long a cluster's PKI is used from memory before it is read (and checked for
/// renewal) again.
const PKI_RECHECK: Duration = Duration::from_secs(600);

/// The cluster's PKI: from memory when it was read recently, else through
/// [`ensure`].
pub async fn cached(
    ctx: &Context,
    cluster: &Cluster,
) -> Result<std::sync::Arc<ClusterSecrets>, Error> {
    let uid = cluster.uid().unwrap_or_default();
    if let Some(s) = ctx.cached_pki(&uid, PKI_RECHECK) {
        return Ok(s);
    }
    let s = std::sync::Arc::new(ensure(ctx, cluster).await?);
    ctx.remember_pki(&uid, s.clone());
    Ok(s)
}

/// Reads the cluster's PKI, creating it the first time and renewing certificates
/// that are close to expiry.
pub async fn ensure(ctx: &Context, cluster: &Cluster) -> Result<ClusterSecrets, Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", cluster.name_any());
    let name = pki_secret_name(&ns, &cluster.name_any());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), SYSTEM_NAMESPACE);
    let params = params(cluster, ctx)?;
    let pki_err = |source| Error::Pki {
        cluster: key.clone(),
        source,
    };
    match api.get(&name).await {
        Ok(secret) => {
            let current = from_secret(&key, &secret)?;
            let (renewed, which) = current
                .pki
                .renew(
                    &params,
                    OffsetDateTime::now_utc(),
                    ctx.config.renew_before.min(LEAF_TTL / 2),
                )
                .map_err(pki_err)?;
            if which.is_empty() {
                return Ok(current);
            }
            let next = ClusterSecrets {
                pki: renewed,
                ..current
            };
            let mut obj = to_secret(cluster, &name, &next);
            obj.metadata.resource_version = secret.resource_version();
            api.replace(&name, &PostParams::default(), &obj)
                .await
                .map_err(failed(format!("renew the PKI of cluster {key}")))?;
            tracing::info!(cluster = %key, renewed = ?which, "renewed certificates");
            ctx.event(
                cluster,
                false,
                "CertificatesRenewed",
                format!("renewed {}", which.join(", ")),
            )
            .await;
            Ok(next)
        }
        Err(e) if is_not_found(&e) => {
            let generated = ClusterSecrets {
                pki: ClusterPki::generate(&params, OffsetDateTime::now_utc()).map_err(pki_err)?,
                bootstrap_token: token(),
                certificate_key: certificate_key(),
            };
            match api
                .create(
                    &PostParams::default(),
                    &to_secret(cluster, &name, &generated),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(cluster = %key, "created the cluster PKI");
                    Ok(generated)
                }
                // Another run made it first: use theirs.
                Err(e) if is_conflict(&e) => {
                    let secret = api
                        .get(&name)
                        .await
                        .map_err(failed(format!("read the PKI of cluster {key}")))?;
                    from_secret(&key, &secret)
                }
                Err(e) => Err(failed(format!("store the PKI of cluster {key}"))(e)),
            }
        }
        Err(e) => Err(failed(format!("read the PKI of cluster {key}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_service_ip_is_first_address() {
        assert_eq!(
            api_service_ip("10.96.0.0/12"),
            Some("10.96.0.1".parse().expect("ip"))
        );
        assert!(api_service_ip("fd00::/108").is_none());
    }

    #[test]
    fn tokens_have_kubeadm_form() {
        let t = token();
        let (id, secret) = t.split_once('.').expect("dot");
        assert_eq!(id.len(), 6);
        assert_eq!(secret.len(), 16);
        assert!(t
            .chars()
            .all(|c| c == '.' || c.is_ascii_lowercase() || c.is_ascii_digit()));
    }

    #[tokio::test]
    async fn a_cluster_gets_its_pki_once_and_reads_it_back_after() {
        use http::Method;
        let cluster = crate::fake_api::cluster(true);
        let (ctx, api) = crate::fake_api::context(crate::fake_api::State::default());
        let secrets = format!("/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets");

        let first = ensure(&ctx, &cluster).await.expect("made");
        let second = ensure(&ctx, &cluster).await.expect("read back");

        assert_eq!(
            api.calls_to(&Method::POST, &secrets).len(),
            1,
            "created once"
        );
        assert!(
            api.calls_to(&Method::PUT, &secrets).is_empty(),
            "nothing to renew"
        );
        assert_eq!(second.bootstrap_token, first.bootstrap_token);
        assert_eq!(second.pki.ca().cert_pem(), first.pki.ca().cert_pem());
        let stored = api
            .get(&format!("{secrets}/{}", pki_secret_name("org-x", "a")))
            .expect("stored");
        assert_eq!(stored["metadata"]["namespace"], SYSTEM_NAMESPACE);
    }
}
