//! The keypair controller: signs a KeyPair's CSR with its cluster's CA. The
//! lifetime is capped (`--keypair-max-ttl`, default 30 days), the CN is the
//! requesting user (stamped by the API server) optionally followed by `:` and the
//! CSR's CN, and the O entries are the KeyPair's groups. Only the CSR's public key
//! is used; the private key never reaches the server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use shoal_api::resources::keypair::parse_ttl;
use shoal_api::KeyPair;
use shoal_kube::conditions::condition;
use shoal_pki::{csr_identity, ClientIdentity, ClusterPki};

use crate::context::Context;
use crate::error::{failed, is_not_found, Error};
use crate::labels::{pki_secret_name, SYSTEM_NAMESPACE};

/// The annotation the API server sets on a KeyPair: who asked for it.
pub use shoal_api::wellknown::annotation::REQUESTED_BY;

/// The certificate's identity: CN `<user>` or `<user>:<csr CN>`, O = the groups.
pub fn identity(user: &str, csr_cn: &str, groups: &[String]) -> ClientIdentity {
    let common_name =
        if csr_cn.is_empty() || csr_cn == user || csr_cn.starts_with(&format!("{user}:")) {
            if csr_cn.is_empty() {
                user.to_owned()
            } else {
                csr_cn.to_owned()
            }
        } else {
            format!("{user}:{csr_cn}")
        };
    ClientIdentity {
        common_name,
        organizations: groups.to_vec(),
    }
}

async fn refuse(ctx: &Context, kp: &KeyPair, reason: &str, message: String) -> Result<(), Error> {
    let ns = kp.namespace().unwrap_or_default();
    let patch =
        json!({"status": {"conditions": [condition("Issued", false, reason, message.clone())]}});
    Api::<KeyPair>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &kp.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(failed(format!(
            "write the status of keypair {ns}/{}",
            kp.name_any()
        )))?;
    ctx.event(kp, true, reason, message).await;
    Ok(())
}

/// Reconciles one KeyPair.
pub async fn reconcile(kp: Arc<KeyPair>, ctx: Arc<Context>) -> Result<Action, Error> {
    let issued = kp.status.as_ref().is_some_and(|s| s.certificate.is_some());
    if issued || kp.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = kp.namespace().unwrap_or_default();
    let name = kp.name_any();
    let Some(cluster) = ctx.stores.cluster(&ns, &kp.spec.cluster) else {
        refuse(
            &ctx,
            &kp,
            "ClusterNotFound",
            format!(
                "cluster {:?} does not exist in {ns}; fix spec.cluster",
                kp.spec.cluster
            ),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let secret = match Api::<Secret>::namespaced(ctx.client.clone(), SYSTEM_NAMESPACE)
        .get(&pki_secret_name(&ns, &cluster.name_any()))
        .await
    {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => {
            refuse(
                &ctx,
                &kp,
                "ClusterPkiPending",
                format!(
                    "cluster {} has no PKI yet; the certificate is signed once it has",
                    cluster.name_any()
                ),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        Err(e) => {
            return Err(failed(format!(
                "read the PKI of cluster {ns}/{}",
                cluster.name_any()
            ))(e))
        }
    };
    let files: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    let pki = ClusterPki::from_files(&files).map_err(|source| Error::Pki {
        cluster: format!("{ns}/{}", cluster.name_any()),
        source,
    })?;
    let ttl = match parse_ttl(&kp.spec.ttl) {
        Ok(secs) => Duration::from_secs(secs),
        Err(why) => {
            refuse(&ctx, &kp, "InvalidTTL", format!("spec.ttl: {why}")).await?;
            return Ok(Action::await_change());
        }
    };
    let csr = match csr_identity(&kp.spec.csr) {
        Ok(id) => id,
        Err(e) => {
            refuse(
                &ctx,
                &kp,
                "InvalidCSR",
                format!("spec.csr: {e}; generate a new key pair and CSR"),
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    let Some(user) = kp.annotations().get(REQUESTED_BY).cloned() else {
        refuse(
            &ctx,
            &kp,
            "NoRequester",
            format!(
                "the KeyPair has no {REQUESTED_BY} annotation; create it through the Shoal API"
            ),
        )
        .await?;
        return Ok(Action::await_change());
    };
    let id = identity(&user, &csr.common_name, &kp.spec.groups);
    let max = ctx.config.keypair_max_ttl;
    let signed = match pki.ca().sign_csr_as(&kp.spec.csr, &id, ttl, max) {
        Ok(s) => s,
        Err(e) => {
            refuse(&ctx, &kp, "SigningFailed", format!("{e}")).await?;
            return Ok(Action::await_change());
        }
    };
    let capped = ttl > max;
    let not_after = chrono::DateTime::from_timestamp(signed.not_after.unix_timestamp(), 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let message = format!(
        "signed for CN={} O=[{}] until {not_after}{}",
        id.common_name,
        id.organizations.join(","),
        if capped {
            format!(
                " (the requested {} was capped at the maximum of {}h)",
                kp.spec.ttl,
                max.as_secs() / 3600
            )
        } else {
            String::new()
        }
    );
    let patch = json!({"status": {
        "certificate": signed.cert_pem,
        "serial": signed.serial,
        "notAfter": not_after,
        "conditions": [condition("Issued", true, "Signed", message.clone())],
    }});
    Api::<KeyPair>::namespaced(ctx.client.clone(), &ns)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(failed(format!(
            "write the certificate of keypair {ns}/{name}"
        )))?;
    ctx.event(kp.as_ref(), false, "Signed", message).await;
    tracing::info!(keypair = %format!("{ns}/{name}"), cn = %id.common_name, "signed a keypair");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cn_is_prefixed_with_the_user() {
        let g = vec!["dev".to_owned()];
        assert_eq!(identity("alice", "laptop", &g).common_name, "alice:laptop");
        assert_eq!(identity("alice", "", &g).common_name, "alice");
        assert_eq!(identity("alice", "alice", &g).common_name, "alice");
        assert_eq!(identity("alice", "alice:ci", &g).common_name, "alice:ci");
        assert_eq!(identity("alice", "bob", &g).common_name, "alice:bob");
        assert_eq!(identity("alice", "x", &g).organizations, g);
    }

    mod reconcile {
        use http::Method;
        use serde_json::json;

        use super::*;
        use crate::fake_api::{self, path, State};

        fn keypair() -> KeyPair {
            serde_json::from_value(json!({
                "apiVersion": "shoal.io/v1alpha1", "kind": "KeyPair",
                "metadata": {"name": "laptop", "namespace": "org-x", "uid": "kp-uid",
                             "annotations": {REQUESTED_BY: "alice"}},
                "spec": {"cluster": "a", "ttl": "8h",
                         "csr": "-----BEGIN CERTIFICATE REQUEST-----"}
            }))
            .expect("a valid KeyPair")
        }

        fn issued_condition(api: &fake_api::FakeApi) -> serde_json::Value {
            let kp = api
                .get(&path("keypairs", "org-x", "laptop"))
                .expect("the keypair");
            kp["status"]["conditions"][0].clone()
        }

        #[tokio::test]
        async fn a_keypair_for_a_missing_cluster_is_refused_naming_the_field() {
            let (ctx, api) = fake_api::context(State::default());
            api.put(&path("keypairs", "org-x", "laptop"), &keypair());

            let action = reconcile(Arc::new(keypair()), ctx)
                .await
                .expect("reconciles");

            let cond = issued_condition(&api);
            assert_eq!(cond["status"], "False");
            assert_eq!(cond["reason"], "ClusterNotFound");
            let msg = cond["message"].as_str().unwrap_or_default();
            assert!(msg.contains("fix spec.cluster"), "{msg}");
            assert!(
                api.calls_to(&Method::GET, "/api/v1/").is_empty(),
                "no PKI is read"
            );
            assert_eq!(action, Action::requeue(Duration::from_secs(30)));
        }

        #[tokio::test]
        async fn a_keypair_waits_for_its_clusters_pki() {
            let (ctx, api) = fake_api::context(State {
                clusters: vec![fake_api::cluster(true)],
                ..Default::default()
            });
            api.put(&path("keypairs", "org-x", "laptop"), &keypair());

            let action = reconcile(Arc::new(keypair()), ctx)
                .await
                .expect("reconciles");

            let cond = issued_condition(&api);
            assert_eq!(cond["reason"], "ClusterPkiPending");
            assert!(cond["message"]
                .as_str()
                .is_some_and(|m| m.contains("cluster a has no PKI yet")));
            assert!(
                api.calls_to(&Method::POST, "/api/v1/").is_empty(),
                "the keypair controller never makes a PKI itself"
            );
            assert_eq!(action, Action::requeue(Duration::from_secs(5)));
        }

        #[tokio::test]
        async fn a_bad_ttl_is_refused_with_the_fields_error() {
            let (ctx, api) = fake_api::context(State {
                clusters: vec![fake_api::cluster(true)],
                ..Default::default()
            });
            crate::cluster::pki::ensure(&ctx, &fake_api::cluster(true))
                .await
                .expect("the cluster's PKI is made");
            let mut kp = keypair();
            kp.spec.ttl = "8x".into();
            api.put(&path("keypairs", "org-x", "laptop"), &kp);

            let action = reconcile(Arc::new(kp), ctx).await.expect("reconciles");

            let cond = issued_condition(&api);
            assert_eq!(cond["reason"], "InvalidTTL");
            assert_eq!(
                cond["message"],
                "spec.ttl: \"8x\" has no known unit: use a number and a unit s, m, h or d, e.g. '8h'"
            );
            assert_eq!(action, Action::await_change(), "only a new spec can fix it");
        }

        #[tokio::test]
        async fn an_issued_keypair_is_left_alone() {
            let mut kp = keypair();
            kp.status = Some(shoal_api::resources::keypair::KeyPairStatus {
                certificate: Some("-----BEGIN CERTIFICATE-----".into()),
                ..Default::default()
            });
            let (ctx, api) = fake_api::context(State::default());

            let action = reconcile(Arc::new(kp), ctx).await.expect("reconciles");

            assert!(api.calls().is_empty(), "{:?}", api.calls());
            assert_eq!(action, Action::await_change());
        }
    }
}
