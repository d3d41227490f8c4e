//! `cargo bench -p shoal-e2e --bench oidc` (or `make bench`): what signing in with
//! OIDC costs each request, next to a Shoal token, in one run against one server.
//!
//! - A real OIDC provider (scripts/oidc-provider.sh) and one `shoal server` that
//!   trusts it; `SHOAL_BENCH_ORGS` (default 100) Organizations, each with a group
//!   member, so the per-request role lookup has real work.
//! - alice (group platform-team, owner of `acme`) signs in through the provider; a
//!   Shoal token of the same organization and role is the baseline.
//! - `SHOAL_BENCH_SAMPLES` (default 1000) GETs of one Cluster per credential, on one
//!   kept-alive connection each, interleaved; p50 and p99, and their ratio.

use std::time::Instant;

use anyhow::{ensure, Result};
use serde_json::json;
use shoal_e2e::bench::env_usize;
use shoal_e2e::bench::p50_p99;
use shoal_e2e::oidc::{OidcProvider, ProviderOptions};
use shoal_e2e::{client_for, ensure_release, kubeconfig_with_token, raw, ServerProc};

const JSON: &str = "application/json";
const GV: &str = "/apis/shoal.io/v1alpha1";

#[tokio::main]
async fn main() -> Result<()> {
    let samples = env_usize("SHOAL_BENCH_SAMPLES", 1000);
    let orgs = env_usize("SHOAL_BENCH_ORGS", 100);
    let provider = OidcProvider::start(ProviderOptions::default()).await?;
    let server = ServerProc::start_with(&[
        "--controllers=false",
        &format!("--oidc-issuer-url={}", provider.issuer()),
        "--oidc-client-id=shoal",
        "--oidc-username-claim=email",
    ])?;
    let admin = server.client().await?;
    ensure_release(&admin, "test-1").await?;
    for i in 0..orgs {
        let name = if i == 0 {
            "acme".to_owned()
        } else {
            format!("org{i}")
        };
        let group = if i == 0 {
            "platform-team".to_owned()
        } else {
            format!("team{i}")
        };
        let body = json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Organization", "metadata": {"name": name},
            "spec": {"members": [{"group": group, "role": "owner"}]},
        });
        let (code, resp) = raw(
            &admin,
            "POST",
            &format!("{GV}/organizations"),
            JSON,
            serde_json::to_vec(&body)?,
        )
        .await?;
        ensure!(code == 201, "organization {name}: {code} {resp}");
    }
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "org-acme"}});
    let (code, _) = raw(
        &admin,
        "POST",
        "/api/v1/namespaces",
        JSON,
        serde_json::to_vec(&ns)?,
    )
    .await?;
    ensure!(code == 201 || code == 409, "namespace: {code}");
    let cluster = json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "web", "namespace": "org-acme"},
        "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
    });
    let (code, resp) = raw(
        &admin,
        "POST",
        &format!("{GV}/namespaces/org-acme/clusters"),
        JSON,
        serde_json::to_vec(&cluster)?,
    )
    .await?;
    ensure!(code == 201, "cluster: {code} {resp}");

    let shoal_token = server.shoal_ok(&["token", "create", "--org", "acme", "--role", "owner"])?;
    let shoal_token = shoal_token
        .split_whitespace()
        .find(|w| w.starts_with("shoal."))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no token in {shoal_token}"))?;
    let id_token = provider.login("alice").await?.id_token;
    let dir = tempfile::tempdir()?;
    let mut clients = Vec::new();
    for (name, token) in [("shoal-token", &shoal_token), ("oidc", &id_token)] {
        let kc = dir.path().join(name);
        kubeconfig_with_token(&server.kubeconfig(), token, &kc)?;
        clients.push(client_for(&kc).await?);
    }
    let path = format!("{GV}/namespaces/org-acme/clusters/web");
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..samples + 50 {
        for (i, client) in clients.iter().enumerate() {
            let started = Instant::now();
            let (code, body) = raw(client, "GET", &path, JSON, Vec::new()).await?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            ensure!(code == 200, "GET with credential {i}: {code} {body}");
            // The first 50 rounds warm the connections and the JWKS cache.
            if round >= 50 {
                times[i].push(ms);
            }
        }
    }
    let [token_times, oidc_times] = times;
    let (t50, t99) = p50_p99(token_times);
    let (o50, o99) = p50_p99(oidc_times);
    println!("OIDC sign-in per request: {samples} GETs each, {orgs} organizations");
    println!("  Shoal token  p50 {t50:.3} ms  p99 {t99:.3} ms");
    println!("  OIDC token   p50 {o50:.3} ms  p99 {o99:.3} ms");
    println!(
        "  ratio OIDC/token  p50 {:.2}  p99 {:.2}",
        o50 / t50,
        o99 / t99
    );
    Ok(())
}
