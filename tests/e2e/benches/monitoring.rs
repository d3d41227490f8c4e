//! `cargo bench -p shoal-e2e --bench monitoring` (or `make bench`): what a
//! Prometheus scrape of the server costs with a large fleet, next to listing that
//! fleet's Clusters through the API, in one run against one server.
//!
//! - One `shoal server` with its controllers, one Organization and
//!   `SHOAL_BENCH_CLUSTERS` (default 1000) Clusters; the controllers create a
//!   control-plane Machine for each (Pending: there are no hosts).
//! - `SHOAL_BENCH_SAMPLES` (default 50) interleaved pairs on loopback, each on one
//!   kept-alive HTTPS connection: `GET /metrics` (every Shoal series, including the
//!   fleet's, computed from the controllers' caches at scrape time) and
//!   `GET /apis/shoal.io/v1alpha1/clusters` with the admin token; p50 and p99, the
//!   ratio, and the scrape's size.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use base64::Engine as _;
use serde_json::json;
use shoal_e2e::bench::{interleaved, p50_p99};
use shoal_e2e::{ensure_release, raw, token_of, ServerProc};

const GV: &str = "/apis/shoal.io/v1alpha1";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<()> {
    let clusters = env_usize("SHOAL_BENCH_CLUSTERS", 1000);
    let samples = env_usize("SHOAL_BENCH_SAMPLES", 50);
    let server = ServerProc::start()?;
    let admin = server.client().await?;
    let org = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Organization", "metadata": {"name": "acme"}, "spec": {}});
    let (code, v) = raw(
        &admin,
        "POST",
        &format!("{GV}/organizations"),
        "application/json",
        serde_json::to_vec(&org)?,
    )
    .await?;
    ensure!(code == 201, "creating org: {code} {v}");
    ensure_release(&admin, "test-1").await?;
    for i in 0..clusters {
        let body = json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": format!("c{i:05}"), "namespace": "org-acme"},
            "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
        });
        let (code, v) = raw(
            &admin,
            "POST",
            &format!("{GV}/namespaces/org-acme/clusters"),
            "application/json",
            serde_json::to_vec(&body)?,
        )
        .await?;
        ensure!(code == 201, "creating cluster {i}: {code} {v}");
    }

    let kc: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(server.kubeconfig())?)?;
    let ca = kc
        .pointer("/clusters/0/cluster/certificate-authority-data")
        .and_then(serde_json::Value::as_str)
        .context("no CA in the admin kubeconfig")?;
    let pem = base64::engine::general_purpose::STANDARD.decode(ca)?;
    let http = || {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .build()
    };
    let (scrape_client, api_client) = (http()?, http()?);
    let bearer = format!("Bearer {}", token_of(&server.kubeconfig())?);
    let base = server.url();
    let scrape = || async {
        let resp = scrape_client.get(format!("{base}/metrics")).send().await?;
        ensure!(resp.status() == 200, "metrics: {}", resp.status());
        Ok(resp.text().await?)
    };

    // Wait until the controllers have a Machine for every cluster, so each scrape
    // carries the whole fleet.
    let deadline = Instant::now() + Duration::from_secs(300);
    let text = loop {
        let text = scrape().await?;
        let machines: f64 = text
            .lines()
            .filter(|l| l.starts_with("shoal_machines{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if machines as usize >= clusters {
            break text;
        }
        if Instant::now() > deadline {
            bail!("the controllers made {machines} of {clusters} machines in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();

    let (scrape_ms, list_ms) = interleaved(
        samples,
        2,
        || async {
            let text = scrape().await?;
            ensure!(
                text.contains("shoal_cluster_phase{"),
                "a scrape without the fleet"
            );
            Ok(())
        },
        || async {
            let resp = api_client
                .get(format!("{base}{GV}/clusters"))
                .header("authorization", &bearer)
                .send()
                .await?;
            ensure!(resp.status() == 200, "list: {}", resp.status());
            let _ = resp.bytes().await?;
            Ok(())
        },
    )
    .await?;
    let (s50, s99) = p50_p99(scrape_ms);
    let (l50, l99) = p50_p99(list_ms);
    println!("monitoring scrape, {clusters} clusters with a Machine each, {samples} samples:");
    println!(
        "  GET /metrics            p50 {s50:8.1} ms  p99 {s99:8.1} ms  ({series} series, {} KiB)",
        text.len() / 1024
    );
    println!("  GET {GV}/clusters  p50 {l50:8.1} ms  p99 {l99:8.1} ms");
    println!(
        "  ratio scrape/list       p50 {:.2}  p99 {:.2}",
        s50 / l50,
        s99 / l99
    );
    Ok(())
}
