//! `cargo bench -p shoal-e2e --bench api` (or `make bench`): Shoal's API figures
//! next to their baselines, measured in one run.
//!
//! 1. API create throughput over HTTPS, divided by raw `Store::create`
//!    throughput on the same embedded backend with the same durability.
//! 2. Latency of one event delivered to 1,000 concurrent API watchers, next to
//!    the same fan-out through 1,000 raw store watchers.
//! 3. Idle RSS of `shoal server`.
//! 4. Where the CPU of the 64-client API run goes (server and benchmark client,
//!    from /proc), and the same 64-client comparison with the cores split: the
//!    server (API side) and the raw store (baseline) each get one core alone,
//!    the API's client the other, so both sides do their store work on one core.
//!
//! 5. The 64-client creates again over one HTTP/2 connection that multiplexes
//!    them, as client-go does, next to their own raw-store run.
//!
//! Set SHOAL_BIN to a release build (make bench does) for meaningful numbers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use shoal_api::Cluster;
use shoal_e2e::bench::{self, p50_p99, throughput};
use shoal_e2e::ServerProc;
use shoal_store::redb::RedbStore;
use shoal_store::Store;

const CREATES: usize = 4000;

fn creates() -> usize {
    std::env::var("SHOAL_BENCH_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CREATES)
}
/// Concurrent clients: few (fsync latency dominates) and many (group commit and CPU dominate).
const CONCURRENCY: [usize; 2] = [8, 64];
const WATCHERS: usize = 1000;
const EVENTS: usize = 20;

fn cluster(name: &str) -> Cluster {
    serde_json::from_value(json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": "org-bench", "labels": {"bench": "true"}},
        "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
    }))
    .expect("a valid cluster literal")
}

/// How the benchmark's client reaches the API.
#[derive(Clone, Copy, PartialEq)]
enum Transport {
    /// kube-rs: HTTP/1.1, one TLS connection per concurrent request.
    Http1,
    /// One TLS connection that carries every concurrent request as an HTTP/2
    /// stream, as client-go (kubectl, controllers) talks to an API server.
    Http2,
}

/// Creates through the API at `concurrency`; names start with `run`.
async fn api_creates(
    server: &ServerProc,
    run: &str,
    concurrency: usize,
    transport: Transport,
) -> Result<f64> {
    match transport {
        Transport::Http1 => api_creates_http1(server, run, concurrency).await,
        Transport::Http2 => api_creates_http2(server, run, concurrency).await,
    }
}

/// [`api_creates`] with kube-rs's client.
async fn api_creates_http1(server: &ServerProc, run: &str, concurrency: usize) -> Result<f64> {
    let client = server.client().await?;
    let api: Api<Cluster> = Api::namespaced(client, "org-bench");
    let run = run.to_owned();
    throughput(creates(), concurrency, move |i| {
        let (api, name) = (api.clone(), format!("{run}-{concurrency}-{i}"));
        async move {
            api.create(&PostParams::default(), &cluster(&name)).await?;
            Ok(())
        }
    })
    .await
}

/// [`api_creates`] over one HTTP/2 connection (ALPN `h2`), warmed by one request
/// so that every create reuses it.
async fn api_creates_http2(server: &ServerProc, run: &str, concurrency: usize) -> Result<f64> {
    let kubeconfig = server.kubeconfig();
    let token = Arc::new(shoal_e2e::token_of(&kubeconfig)?);
    let http = shoal_e2e::fixtures::https_trusting(&kubeconfig)?
        .http2_prior_knowledge()
        .build()?;
    let url = Arc::new(format!(
        "{}/apis/shoal.io/v1alpha1/namespaces/org-bench/clusters",
        server.url()
    ));
    let warm = http
        .get(url.as_str())
        .bearer_auth(token.as_str())
        .send()
        .await?;
    anyhow::ensure!(
        warm.version() == reqwest::Version::HTTP_2,
        "the API answered over {:?}, not HTTP/2",
        warm.version()
    );
    let run = run.to_owned();
    throughput(creates(), concurrency, move |i| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        let name = format!("{run}-{concurrency}-{i}");
        async move {
            let res = http
                .post(url.as_str())
                .bearer_auth(token.as_str())
                .json(&cluster(&name))
                .send()
                .await?;
            anyhow::ensure!(
                res.status() == reqwest::StatusCode::CREATED,
                "create {name}: {}",
                res.status()
            );
            Ok(())
        }
    })
    .await
}

/// CPU seconds (user + system) that process `pid` has used, from /proc.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses: utime and
    // stime are the 12th and 13th of them, in clock ticks.
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks()?)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`).
fn clock_ticks() -> Result<f64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// Pins every thread of `pid` to the CPU list `cpus` (threads it starts later inherit it).
fn pin(pid: u32, cpus: &str) -> Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("taskset (util-linux)")?;
    anyhow::ensure!(status.success(), "taskset -a -p -c {cpus} {pid} failed");
    Ok(())
}

/// Where the CPU of one API create run went.
struct CpuShare {
    rate: f64,
    server_us: f64,
    client_us: f64,
}

/// An API create run with the CPU the server and this process (the client) used.
async fn api_creates_with_cpu(
    server: &ServerProc,
    run: &str,
    concurrency: usize,
    transport: Transport,
) -> Result<CpuShare> {
    let me = std::process::id();
    let (server0, client0) = (cpu_seconds(server.pid())?, cpu_seconds(me)?);
    let rate = api_creates(server, run, concurrency, transport).await?;
    let (server1, client1) = (cpu_seconds(server.pid())?, cpu_seconds(me)?);
    let per_create = |d: f64| d / creates() as f64 * 1e6;
    Ok(CpuShare {
        rate,
        server_us: per_create(server1 - server0),
        client_us: per_create(client1 - client0),
    })
}

/// Raw store creates at `concurrency` into a fresh store file named after `run`.
async fn store_creates(dir: &std::path::Path, run: &str, concurrency: usize) -> Result<f64> {
    let store = Arc::new(RedbStore::open(
        dir.join(format!("{run}-{concurrency}.redb")),
    )?);
    let value = Bytes::from(serde_json::to_vec(&cluster("template"))?);
    throughput(creates(), concurrency, move |i| {
        let (store, value) = (store.clone(), value.clone());
        async move {
            store
                .create(&format!("/registry/clusters/org-bench/c{i}"), value)
                .await?;
            Ok(())
        }
    })
    .await
}

/// Starts WATCHERS API watches, then patches one object EVENTS times and
/// records how long each delivery took.
async fn api_watch_latency(server: &ServerProc) -> Result<Vec<f64>> {
    let client = server.client().await?;
    let api: Api<Cluster> = Api::namespaced(client, "org-bench");
    let target = api
        .create(&PostParams::default(), &cluster("watched"))
        .await?;
    let rv = target
        .metadata
        .resource_version
        .clone()
        .context("resourceVersion")?;
    bench::api_watch_latency(&[api], "watched", &rv, WATCHERS, EVENTS).await
}

/// The same fan-out through raw store watches: the floor under the API's figure.
async fn store_watch_latency(dir: &std::path::Path) -> Result<Vec<f64>> {
    let store = Arc::new(RedbStore::open(dir.join("watch.redb"))?);
    let key = "/registry/clusters/org-bench/watched";
    let kv = store.create(key, Bytes::from_static(b"{}")).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();
    for _ in 0..WATCHERS {
        let mut feed = store.watch(key, kv.mod_revision).await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(ev)) = feed.next().await {
                let _ = tx.send((ev.revision, Instant::now()));
            }
        });
    }
    let mut latencies = Vec::new();
    let mut rev = kv.mod_revision;
    for _ in 0..EVENTS {
        let sent = Instant::now();
        rev = store
            .update(key, Bytes::from_static(b"{\"x\":1}"), rev)
            .await?
            .mod_revision;
        let mut got = 0;
        while got < WATCHERS {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some((r, at))) if r == rev => {
                    latencies.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                    got += 1;
                }
                Ok(Some(_)) => {}
                _ => anyhow::bail!("store event reached only {got} watchers"),
            }
        }
    }
    Ok(latencies)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS missing")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    println!(
        "Shoal API benchmark ({} creates at {:?} concurrent tasks, {} watchers x {} events)",
        creates(),
        CONCURRENCY,
        WATCHERS,
        EVENTS
    );

    let server = ServerProc::start_with(&["--controllers=false"])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib(server.pid())?;
    let out = server.shoal(&["org", "create", "bench"])?;
    anyhow::ensure!(
        out.status.success(),
        "org create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A Cluster must name a Release that exists; the API alone seeds none.
    shoal_e2e::ensure_release(&server.client().await?, "test-1").await?;

    let mut creates_rows = Vec::new();
    let mut share = None;
    for c in CONCURRENCY {
        let raw = store_creates(tmp.path(), "raw", c).await?;
        let api = api_creates_with_cpu(&server, "c", c, Transport::Http1).await?;
        creates_rows.push((c, api.rate, raw));
        share = Some(api);
    }
    let share = share.context("no create run")?;
    // The most concurrent level again, over one HTTP/2 connection, next to its
    // own raw-store run.
    let many = CONCURRENCY[CONCURRENCY.len() - 1];
    let h2_raw = store_creates(tmp.path(), "raw-h2", many).await?;
    let h2 = api_creates_with_cpu(&server, "h2", many, Transport::Http2).await?;
    // Split cores: the server on CPU 0, this process (the API's client, and the
    // raw store when it is measured) on CPU 1; then both get both cores again.
    let split = CONCURRENCY[CONCURRENCY.len() - 1];
    pin(server.pid(), "0")?;
    pin(std::process::id(), "1")?;
    let split_raw = store_creates(tmp.path(), "pinned", split).await?;
    let split_api = api_creates_with_cpu(&server, "pinned", split, Transport::Http1).await?;
    pin(server.pid(), "0,1")?;
    pin(std::process::id(), "0,1")?;
    let (api_p50, api_p99) = p50_p99(api_watch_latency(&server).await?);
    let (raw_p50, raw_p99) = p50_p99(store_watch_latency(tmp.path()).await?);
    // The watchers of the latency run stay open (their selector matches one other
    // object): what every create then costs the server.
    let watched = api_creates_with_cpu(&server, "watched", split, Transport::Http1).await?;

    println!();
    println!("| figure | Shoal | baseline | ratio | goal |");
    println!("|---|---|---|---|---|");
    for (c, api, raw) in &creates_rows {
        println!("| create throughput, {c} concurrent (API over HTTPS vs raw Store::create, redb, fsync per commit) | {api:.0}/s | {raw:.0}/s | {:.2} | >= 0.5 |", api / raw);
    }
    println!("| create throughput, {many} concurrent streams on one HTTP/2 connection (as client-go) vs raw Store::create | {:.0}/s | {h2_raw:.0}/s | {:.2} | >= 0.5 |", h2.rate, h2.rate / h2_raw);
    println!("| 1 event to {WATCHERS} watchers, p50 (API vs raw store watch) | {api_p50:.1} ms | {raw_p50:.1} ms | {:.1}x | |", api_p50 / raw_p50.max(0.001));
    println!("| 1 event to {WATCHERS} watchers, p99 (API vs raw store watch) | {api_p99:.1} ms | {raw_p99:.1} ms | {:.1}x | p99 <= 50 ms |", api_p99 / raw_p99.max(0.001));
    println!("| create throughput, {split} concurrent, cores split (server alone on CPU 0 vs raw store alone on CPU 1; the API's client on CPU 1) | {:.0}/s | {split_raw:.0}/s | {:.2} | |", split_api.rate, split_api.rate / split_raw);
    println!("| create throughput, {split} concurrent, with the {WATCHERS} watches of the latency run open (their selector matches another object) vs none | {:.0}/s | {:.0}/s | {:.2} | |", watched.rate, share.rate, watched.rate / share.rate);
    println!(
        "| idle RSS of shoal server | {:.1} MB | goal 50 MB | {:.2} | <= 50 MB |",
        idle_rss as f64 / 1024.0,
        idle_rss as f64 / 1024.0 / 50.0
    );
    println!();
    let c = CONCURRENCY[CONCURRENCY.len() - 1];
    println!(
        "CPU per API create at {c} concurrent: server {:.0} us, benchmark client {:.0} us (client share {:.0}%); cores split: server {:.0} us, client {:.0} us; with {WATCHERS} watches open: server {:.0} us",
        share.server_us,
        share.client_us,
        100.0 * share.client_us / (share.server_us + share.client_us),
        split_api.server_us,
        split_api.client_us,
        watched.server_us,
    );
    println!(
        "CPU per API create at {many} streams on one HTTP/2 connection: server {:.0} us, benchmark client {:.0} us (client share {:.0}%)",
        h2.server_us,
        h2.client_us,
        100.0 * h2.client_us / (h2.server_us + h2.client_us),
    );
    Ok(())
}
