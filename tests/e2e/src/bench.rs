//! Helpers the benchmarks share, so Shoal and its baselines are measured alike.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

/// Runs `op(0..total)` from `concurrency` tasks and returns operations per second.
pub async fn throughput<F, Fut>(total: usize, concurrency: usize, op: F) -> Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut i = t;
                while i < total {
                    op(i).await?;
                    i += concurrency;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The `p` quantile (0..=1) of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The p50 and p99 of samples.
pub fn p50_p99(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// Times `a` then `b`, one after the other, `warmup + samples` times, and returns
/// the milliseconds of each (the first `warmup` pairs warm connections and caches
/// and are dropped), so a figure and its baseline see the same machine state.
pub async fn interleaved<A, FA, B, FB>(
    samples: usize,
    warmup: usize,
    mut a: A,
    mut b: B,
) -> Result<(Vec<f64>, Vec<f64>)>
where
    A: FnMut() -> FA,
    FA: Future<Output = Result<()>>,
    B: FnMut() -> FB,
    FB: Future<Output = Result<()>>,
{
    let (mut a_ms, mut b_ms) = (Vec::new(), Vec::new());
    for i in 0..warmup + samples {
        let t = Instant::now();
        a().await?;
        let a_took = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        b().await?;
        let b_took = t.elapsed().as_secs_f64() * 1000.0;
        if i >= warmup {
            a_ms.push(a_took);
            b_ms.push(b_took);
        }
    }
    Ok((a_ms, b_ms))
}

/// Starts `watchers` API watches on the Cluster `name`, spread over `apis` (one
/// per replica), from resourceVersion `rv`; then sets annotation `seq` through
/// the first API `events` times and returns, in milliseconds, how long each
/// event took to reach each watcher.
pub async fn api_watch_latency(
    apis: &[kube::Api<shoal_api::Cluster>],
    name: &str,
    rv: &str,
    watchers: usize,
    events: usize,
) -> Result<Vec<f64>> {
    use futures::StreamExt;
    use kube::api::{Patch, PatchParams, WatchEvent, WatchParams};
    use std::time::Duration;

    anyhow::ensure!(!apis.is_empty(), "no API to watch through");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let ready = Arc::new(tokio::sync::Barrier::new(watchers + 1));
    for w in 0..watchers {
        let api = apis[w % apis.len()].clone();
        let (tx, rv, ready) = (tx.clone(), rv.to_owned(), ready.clone());
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(290);
        tokio::spawn(async move {
            let stream = api.watch(&wp, &rv).await;
            ready.wait().await;
            let mut stream = match stream {
                Ok(s) => s.boxed(),
                Err(err) => {
                    eprintln!("watch {w} failed: {err}");
                    return;
                }
            };
            while let Some(Ok(ev)) = stream.next().await {
                if let WatchEvent::Modified(c) = ev {
                    let seq = c
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("seq"))
                        .and_then(|s| s.parse::<usize>().ok());
                    if let Some(seq) = seq {
                        let _ = tx.send((seq, Instant::now()));
                    }
                }
            }
        });
    }
    ready.wait().await;
    // The watch requests are sent before the barrier; give the servers a moment to register them all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::new();
    for seq in 0..events {
        let sent = Instant::now();
        let patch = serde_json::json!({"metadata": {"annotations": {"seq": seq.to_string()}}});
        apis[0]
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let mut got = 0;
        let deadline = sent + Duration::from_secs(10);
        while got < watchers {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some((s, at))) if s == seq => {
                    latencies.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                    got += 1;
                }
                Ok(Some(_)) => {}
                _ => anyhow::bail!("event {seq} reached only {got} of {watchers} watchers in 10 s"),
            }
        }
    }
    Ok(latencies)
}

/// The value of environment variable `name` as a count, or `default` when it is
/// unset or not a number.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
