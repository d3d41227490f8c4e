//! `cargo bench -p shoal-e2e --bench ui` (or `make bench`): the web UI's clusters
//! page with many clusters, next to the API list it is rendered from, in one run
//! against one server.
//!
//! - One `shoal server` (no controllers), one Organization, `SHOAL_BENCH_CLUSTERS`
//!   (default 1000) Clusters in it.
//! - `SHOAL_BENCH_SAMPLES` (default 50) interleaved pairs on loopback, each with the
//!   admin token and one kept-alive HTTPS connection per kind: `GET /ui/clusters`
//!   (the UI lists through the API with the user's token, then renders the table) and
//!   the same cluster-wide list straight from the API as JSON; p50 and p99, and the
//!   ratio of the page to the list alone.

use anyhow::{ensure, Result};
use shoal_e2e::bench::{env_usize, interleaved, p50_p99};
use shoal_e2e::fixtures::{create_clusters, create_org, https_trusting};
use shoal_e2e::{ensure_release, token_of, ServerProc};

const GV: &str = "/apis/shoal.io/v1alpha1";

#[tokio::main]
async fn main() -> Result<()> {
    let clusters = env_usize("SHOAL_BENCH_CLUSTERS", 1000);
    let samples = env_usize("SHOAL_BENCH_SAMPLES", 50);
    let server = ServerProc::start_with(&["--controllers=false"])?;
    let admin = server.client().await?;
    create_org(&admin, "acme").await?;
    ensure_release(&admin, "test-1").await?;
    create_clusters(&admin, "org-acme", "test-1", clusters).await?;

    let http = || {
        https_trusting(&server.kubeconfig())?
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(anyhow::Error::from)
    };
    let (page_client, api_client) = (http()?, http()?);
    let token = token_of(&server.kubeconfig())?;
    let base = server.url();
    let cookie = format!("shoal_token={token}");
    let bearer = format!("Bearer {token}");
    let (page_ms, api_ms) = interleaved(
        samples,
        2,
        || async {
            let resp = page_client
                .get(format!("{base}/ui/clusters"))
                .header("cookie", &cookie)
                .send()
                .await?;
            ensure!(resp.status() == 200, "page: {}", resp.status());
            let html = resp.text().await?;
            ensure!(
                html.matches("<tr><td><a").count() == clusters,
                "the page does not list {clusters} clusters"
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
    let (p50, p99) = p50_p99(page_ms);
    let (a50, a99) = p50_p99(api_ms);
    println!("ui clusters page, {clusters} clusters, {samples} samples:");
    println!("  GET /ui/clusters        p50 {p50:8.1} ms  p99 {p99:8.1} ms");
    println!("  GET {GV}/clusters  p50 {a50:8.1} ms  p99 {a99:8.1} ms");
    println!(
        "  ratio page/list         p50 {:.2}  p99 {:.2}",
        p50 / a50,
        p99 / a99
    );
    Ok(())
}
