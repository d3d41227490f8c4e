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
//! - The server runs with `--monitoring`: the same number of interleaved pairs of
//!   a Prometheus query (`up`) through the server's front end
//!   (`/monitoring/prometheus/api/v1/query`, HTTPS, the admin token checked) and
//!   straight at the child Prometheus on loopback (plain HTTP, no check): what the
//!   front end adds.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use shoal_e2e::bench::{env_usize, interleaved, p50_p99};
use shoal_e2e::fixtures::{create_active_release, create_clusters, create_org, https_trusting};
use shoal_e2e::{free_ports, token_of, ServerProc};

const GV: &str = "/apis/shoal.io/v1alpha1";

#[tokio::main]
async fn main() -> Result<()> {
    let clusters = env_usize("SHOAL_BENCH_CLUSTERS", 1000);
    let samples = env_usize("SHOAL_BENCH_SAMPLES", 50);
    let ports = free_ports(2)?;
    let prom_listen = format!("127.0.0.1:{}", ports[0]);
    let am_listen = format!("127.0.0.1:{}", ports[1]);
    let server = ServerProc::start_with(&[
        "--monitoring",
        "--prometheus-listen",
        &prom_listen,
        "--alertmanager-listen",
        &am_listen,
    ])?;
    let admin = server.client().await?;
    create_org(&admin, "acme").await?;
    // Active, so the controllers give every cluster its Machine.
    create_active_release(&admin, "bench-1").await?;
    create_clusters(&admin, "org-acme", "bench-1", clusters).await?;

    let http = || {
        https_trusting(&server.kubeconfig())?
            .build()
            .map_err(anyhow::Error::from)
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
            let fleet: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("shoal_cluster") || l.starts_with("shoal_machine"))
                .take(5)
                .collect();
            bail!("the controllers made {machines} of {clusters} machines in 300 s; fleet series: {fleet:?}");
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
    front_end(&server, &prom_listen, &bearer, samples).await
}

/// A Prometheus query through the server's front end, next to the same query
/// straight at Prometheus.
async fn front_end(
    server: &ServerProc,
    prom_listen: &str,
    bearer: &str,
    samples: usize,
) -> Result<()> {
    let direct_base = format!("http://{prom_listen}");
    let direct = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !direct
        .get(format!("{direct_base}/-/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        if Instant::now() > deadline {
            bail!("Prometheus at {prom_listen} not ready in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let proxied = https_trusting(&server.kubeconfig())?.build()?;
    let through = format!("{}/monitoring/prometheus", server.url());
    let query = "/api/v1/query?query=up";
    let check = |resp: reqwest::Response| async move {
        ensure!(resp.status() == 200, "query: {}", resp.status());
        let body: serde_json::Value = resp.json().await?;
        ensure!(body["status"] == "success", "query: {body}");
        Ok(())
    };
    let (via_ms, direct_ms) = interleaved(
        samples,
        2,
        || async {
            let resp = proxied
                .get(format!("{through}{query}"))
                .header("authorization", bearer)
                .send()
                .await?;
            check(resp).await
        },
        || async { check(direct.get(format!("{direct_base}{query}")).send().await?).await },
    )
    .await?;
    let (v50, v99) = p50_p99(via_ms);
    let (d50, d99) = p50_p99(direct_ms);
    println!("Prometheus query `up`, {samples} samples:");
    println!("  through /monitoring/prometheus  p50 {v50:8.2} ms  p99 {v99:8.2} ms");
    println!("  straight at Prometheus          p50 {d50:8.2} ms  p99 {d99:8.2} ms");
    println!(
        "  ratio through/straight          p50 {:.2}  p99 {:.2}",
        v50 / d50,
        v99 / d99
    );
    Ok(())
}
