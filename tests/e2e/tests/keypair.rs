//! KeyPairs through the controllers: a user's CSR is signed with the cluster's CA,
//! with the CN prefixed by the requesting user, the groups as O entries and the
//! lifetime capped; `openssl verify` accepts the chain. Bad CSRs and unknown
//! clusters get a condition that says so. No VM is needed: the PKI exists as soon
//! as the cluster has its network.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use shoal_api::KeyPair;
use shoal_e2e::fixtures::ClusterArgs;
use shoal_e2e::ServerProc;

async fn wait_issued(api: &Api<KeyPair>, name: &str, want: &str) -> Result<KeyPair> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let kp = api.get(name).await?;
        let cond = kp
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Issued").cloned());
        if let Some(c) = cond.filter(|c| c.reason == want) {
            let _ = c;
            return Ok(kp);
        }
        if Instant::now() > deadline {
            bail!("keypair {name} never got Issued/{want}: {:?}", kp.status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_signed_with_user_prefix_groups_and_capped_ttl() -> Result<()> {
    let images = shoal_e2e::workspace_root()
        .join("images/out")
        .display()
        .to_string();
    let server = ServerProc::start_with(&["--keypair-max-ttl", "2d", "--test-image-dir", &images])?;
    let client = server.client().await?;
    for args in [
        vec!["org", "create", "kp"],
        ClusterArgs::new("c", "kp").args().to_vec(),
    ] {
        let out = server.shoal(&args)?;
        assert!(out.status.success(), "{out:?}");
    }
    let keypairs: Api<KeyPair> = Api::namespaced(client.clone(), "org-kp");
    let (csr, key) = shoal_pki::generate_csr("laptop", &["ignored".to_owned()])?;
    assert!(key.contains("PRIVATE KEY"));
    let kp: KeyPair = serde_json::from_value(serde_json::json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "KeyPair",
        "metadata": {"name": "alice-laptop", "namespace": "org-kp",
                     "annotations": {"shoal.io/requested-by": "mallory"}},
        "spec": {"cluster": "c", "csr": csr, "ttl": "90d", "groups": ["dev", "ops"], "description": "e2e"},
    }))?;
    keypairs.create(&PostParams::default(), &kp).await?;
    let kp = wait_issued(&keypairs, "alice-laptop", "Signed").await?;
    let status = kp.status.context("status")?;
    let cert = status.certificate.context("certificate")?;
    // The server stamps the real requester, whatever the client wrote.
    let requested_by = kp.metadata.annotations.unwrap_or_default();
    let user = requested_by
        .get("shoal.io/requested-by")
        .context("stamped")?
        .clone();
    assert_ne!(user, "mallory");

    let dir = tempfile::tempdir()?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "shoal-system");
    let pki = secrets.get("org-kp.c.pki").await?;
    let ca = pki
        .data
        .unwrap_or_default()
        .get("ca.crt")
        .context("ca.crt")?
        .0
        .clone();
    std::fs::write(dir.path().join("ca.crt"), ca)?;
    std::fs::write(dir.path().join("kp.crt"), &cert)?;
    let verify = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(dir.path().join("ca.crt"))
        .arg(dir.path().join("kp.crt"))
        .output()
        .context("openssl must be installed (scripts/setup.sh)")?;
    assert!(verify.status.success(), "{verify:?}");
    let subject = std::process::Command::new("openssl")
        .args([
            "x509", "-noout", "-subject", "-enddate", "-nameopt", "RFC2253", "-in",
        ])
        .arg(dir.path().join("kp.crt"))
        .output()?;
    let text = String::from_utf8_lossy(&subject.stdout).into_owned();
    assert!(text.contains(&format!("CN={user}:laptop")), "{text}");
    assert!(text.contains("O=dev") && text.contains("O=ops"), "{text}");
    assert!(
        !text.contains("ignored"),
        "the CSR's own O is not used: {text}"
    );
    // 90d asked, 2d allowed.
    let not_after =
        chrono::DateTime::parse_from_rfc3339(status.not_after.as_deref().context("notAfter")?)?;
    let left = not_after.signed_duration_since(chrono::Utc::now());
    assert!(
        left <= chrono::Duration::days(2) && left > chrono::Duration::hours(47),
        "{left:?}"
    );

    // A CSR that is not one, and a cluster that does not exist.
    let bad: KeyPair = serde_json::from_value(serde_json::json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "KeyPair",
        "metadata": {"name": "bad", "namespace": "org-kp"},
        "spec": {"cluster": "c", "csr": "-----BEGIN CERTIFICATE REQUEST-----\nbm9wZQ==\n-----END CERTIFICATE REQUEST-----\n"},
    }))?;
    keypairs.create(&PostParams::default(), &bad).await?;
    let kp = wait_issued(&keypairs, "bad", "InvalidCSR").await?;
    assert!(kp.status.and_then(|s| s.certificate).is_none());
    let (csr, _) = shoal_pki::generate_csr("x", &[])?;
    let lost: KeyPair = serde_json::from_value(serde_json::json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "KeyPair",
        "metadata": {"name": "lost", "namespace": "org-kp"},
        "spec": {"cluster": "nope", "csr": csr},
    }))?;
    keypairs.create(&PostParams::default(), &lost).await?;
    wait_issued(&keypairs, "lost", "ClusterNotFound").await?;
    Ok(())
}
