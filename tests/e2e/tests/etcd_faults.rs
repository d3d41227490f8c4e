//! `shoal server` on a real three-member etcd while etcd members die: a client
//! creates uniquely named Clusters through the API from several tasks without
//! pause, while one etcd follower and then the etcd leader are killed with
//! SIGKILL and restarted.
//!
//! Afterwards every acknowledged create must be stored exactly once, nothing
//! that was never asked for may exist, and the API must have acknowledged a
//! write again within 5 s of each kill.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use shoal_api::Cluster;
use shoal_e2e::etcd::EtcdCluster;
use shoal_e2e::ServerProc;
use shoal_store::etcd::{EtcdConfig, EtcdStore};
use shoal_store::{RangeRequest, Store};

/// Concurrent writers.
const WRITERS: usize = 8;
/// How long one create may take before the client gives up on it (its outcome
/// is then unknown, as after any failure).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest the API may go without acknowledging a write after a kill.
const MAX_UNAVAILABLE: Duration = Duration::from_secs(5);
/// How long a killed member stays down.
const DOWN_FOR: Duration = Duration::from_secs(3);
const NAMESPACE: &str = "org-acme";

fn cluster(name: &str) -> Result<Cluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
    }))?)
}

/// One finished create attempt.
struct Attempt {
    name: String,
    /// When its answer arrived (or the client gave up).
    at: Instant,
    /// `Ok` when acknowledged; else what went wrong.
    result: std::result::Result<(), String>,
}

#[derive(Default)]
struct Log {
    attempts: Mutex<Vec<Attempt>>,
}

impl Log {
    fn record(&self, attempt: Attempt) {
        self.attempts
            .lock()
            .expect("no writer panics holding the log")
            .push(attempt);
    }

    /// Acknowledgements that arrived after `since`.
    fn acks_after(&self, since: Instant) -> usize {
        self.attempts
            .lock()
            .expect("no writer panics holding the log")
            .iter()
            .filter(|a| a.result.is_ok() && a.at > since)
            .count()
    }
}

async fn writer(
    api: Api<Cluster>,
    task: usize,
    log: Arc<Log>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut seq = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("w{task}-{seq:05}");
        seq += 1;
        let obj = cluster(&name)?;
        let result =
            match tokio::time::timeout(ATTEMPT_TIMEOUT, api.create(&PostParams::default(), &obj))
                .await
            {
                Ok(Ok(created)) => {
                    ensure!(
                        created.metadata.name.as_deref() == Some(name.as_str()),
                        "create of {name} answered with {:?}",
                        created.metadata.name
                    );
                    Ok(())
                }
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!("no answer in {ATTEMPT_TIMEOUT:?}")),
            };
        log.record(Attempt {
            name,
            at: Instant::now(),
            result,
        });
    }
    Ok(())
}

/// Polls until at least `count` writes were acknowledged after `since` and
/// `at_least` has passed since it; fails after `within`.
async fn wait_for_acks(
    log: &Log,
    since: Instant,
    count: usize,
    at_least: Duration,
    within: Duration,
) -> Result<()> {
    loop {
        let elapsed = since.elapsed();
        let acks = log.acks_after(since);
        if acks >= count && elapsed >= at_least {
            return Ok(());
        }
        ensure!(
            elapsed < within,
            "only {acks} of {count} writes were acknowledged in {elapsed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The longest stretch in `[from, to]` without an acknowledgement, counting
/// from `from` itself; and the delay of the first acknowledgement after `from`.
fn longest_gap(acks: &[Instant], from: Instant, to: Instant) -> (Duration, Option<Duration>) {
    let mut last = from;
    let mut longest = Duration::ZERO;
    let mut first = None;
    for &at in acks.iter().filter(|&&at| at > from && at <= to) {
        first.get_or_insert(at - from);
        longest = longest.max(at - last);
        last = at;
    }
    (longest.max(to - last), first)
}

/// Every Cluster name in the namespace, listed through the API page by page.
async fn list_names(api: &Api<Cluster>) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(250);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await?;
        for c in page.items {
            out.push((
                c.metadata.name.context("a listed Cluster without a name")?,
                c.metadata.uid.context("a listed Cluster without a uid")?,
            ));
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(out);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_etcd_follower_and_leader_kills() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut etcd = tokio::task::block_in_place(|| EtcdCluster::start(3))?;
    let key_file = tmp.path().join("encryption.key");
    std::fs::write(&key_file, [0x5a_u8; 32])?;
    let endpoints = etcd.endpoints().join(",");
    let key_arg = key_file.to_str().context("a UTF-8 temp path")?;
    let server = tokio::task::block_in_place(|| {
        ServerProc::start_with(&[
            "--etcd-endpoints",
            &endpoints,
            "--encryption-key-file",
            key_arg,
        ])
    })?;
    let out = server.shoal(&["org", "create", "acme"])?;
    ensure!(
        out.status.success(),
        "org create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = server.client().await?;
    shoal_e2e::ensure_release(&client, "test-1").await?;
    let api: Api<Cluster> = Api::namespaced(client, NAMESPACE);
    // The org's namespace may appear a moment after the Organization.
    let warm = Instant::now();
    loop {
        match api
            .create(&PostParams::default(), &cluster("warmup")?)
            .await
        {
            Ok(_) => break,
            Err(err) if warm.elapsed() < Duration::from_secs(20) => {
                eprintln!("waiting for {NAMESPACE}: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => return Err(err).context("the first create never succeeded"),
        }
    }

    let log = Arc::new(Log::default());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|t| tokio::spawn(writer(api.clone(), t, log.clone(), stop.clone())))
        .collect();
    let started = Instant::now();
    wait_for_acks(
        &log,
        started,
        50,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .await?;

    // A follower first: failover without an election.
    let follower = (tokio::task::block_in_place(|| etcd.leader_index())? + 1) % etcd.len();
    tokio::task::block_in_place(|| etcd.kill9(follower))?;
    let follower_killed = Instant::now();
    wait_for_acks(&log, follower_killed, 1, DOWN_FOR, Duration::from_secs(30)).await?;
    tokio::task::block_in_place(|| etcd.restart(follower))?;
    let follower_back = Instant::now();
    wait_for_acks(
        &log,
        follower_back,
        20,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .await?;

    // Then the leader: an election under load.
    let leader = tokio::task::block_in_place(|| etcd.leader_index())?;
    tokio::task::block_in_place(|| etcd.kill9(leader))?;
    let leader_killed = Instant::now();
    wait_for_acks(&log, leader_killed, 1, DOWN_FOR, Duration::from_secs(30)).await?;
    tokio::task::block_in_place(|| etcd.restart(leader))?;
    let leader_back = Instant::now();
    wait_for_acks(
        &log,
        leader_back,
        20,
        Duration::from_secs(3),
        Duration::from_secs(30),
    )
    .await?;

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await??;
    }
    let finished = Instant::now();

    let attempts = std::mem::take(&mut *log.attempts.lock().expect("writers are done"));
    let mut attempted: BTreeSet<&str> = attempts.iter().map(|a| a.name.as_str()).collect();
    ensure!(
        attempted.len() == attempts.len(),
        "a name was attempted twice"
    );
    attempted.insert("warmup");
    let acked: BTreeSet<&str> = attempts
        .iter()
        .filter(|a| a.result.is_ok())
        .map(|a| a.name.as_str())
        .chain(["warmup"])
        .collect();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for a in &attempts {
        if let Err(e) = &a.result {
            *failures.entry(e.clone()).or_default() += 1;
        }
    }
    let mut ack_times: Vec<Instant> = attempts
        .iter()
        .filter(|a| a.result.is_ok())
        .map(|a| a.at)
        .collect();
    ack_times.sort();

    // What the API lists, and what etcd itself holds under the server's prefix.
    let listed = list_names(&api).await?;
    // The server keeps objects at `<prefix>registry/...`, /shoal/registry/... here.
    let store = EtcdStore::connect(EtcdConfig {
        prefix: "/shoal".into(),
        ..EtcdConfig::new(etcd.endpoints())
    })
    .await?;
    let raw = store
        .range(RangeRequest {
            prefix: format!("/registry/clusters/{NAMESPACE}/"),
            start_after: None,
            limit: None,
        })
        .await?;
    ensure!(!raw.more, "a range without a limit returned one page only");
    let raw_names: Vec<String> = raw
        .items
        .iter()
        .map(|kv| kv.key.rsplit('/').next().unwrap_or_default().to_owned())
        .collect();

    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, _) in &listed {
        *by_name.entry(name.as_str()).or_default() += 1;
    }
    let uids: BTreeSet<&str> = listed.iter().map(|(_, uid)| uid.as_str()).collect();
    let duplicated: Vec<_> = by_name.iter().filter(|(_, &n)| n > 1).collect();
    let missing: Vec<_> = acked.iter().filter(|n| !by_name.contains_key(*n)).collect();
    let unasked: Vec<_> = by_name.keys().filter(|n| !attempted.contains(*n)).collect();
    let stored_unacked = by_name.keys().filter(|n| !acked.contains(*n)).count();

    let (follower_gap, follower_first) = longest_gap(&ack_times, follower_killed, leader_killed);
    let (leader_gap, leader_first) = longest_gap(&ack_times, leader_killed, finished);

    eprintln!(
        "{} create attempts in {:?}: {} acknowledged, {} failed; {} listed ({} of them unacknowledged failures that were stored anyway)",
        attempts.len() + 1,
        finished - started,
        acked.len(),
        attempts.len() + 1 - acked.len(),
        listed.len(),
        stored_unacked
    );
    for (err, n) in &failures {
        eprintln!("  failed {n}x: {err}");
    }
    eprintln!(
        "follower (member {follower}) SIGKILL: first ack after {follower_first:?}, longest unavailability {follower_gap:?}"
    );
    eprintln!(
        "leader (member {leader}) SIGKILL: first ack after {leader_first:?}, longest unavailability {leader_gap:?}"
    );

    ensure!(
        duplicated.is_empty(),
        "listed more than once: {duplicated:?}"
    );
    ensure!(
        uids.len() == listed.len(),
        "{} listed objects share {} uids",
        listed.len(),
        uids.len()
    );
    ensure!(
        missing.is_empty(),
        "{} acknowledged creates are missing: {:?}",
        missing.len(),
        missing.iter().take(20).collect::<Vec<_>>()
    );
    ensure!(unasked.is_empty(), "never asked for: {unasked:?}");
    let listed_set: BTreeSet<&str> = by_name.keys().copied().collect();
    let raw_set: BTreeSet<&str> = raw_names.iter().map(String::as_str).collect();
    ensure!(
        raw_names.len() == raw_set.len() && raw_set == listed_set,
        "the API lists {} names, etcd holds {} ({} distinct)",
        listed_set.len(),
        raw_names.len(),
        raw_set.len()
    );
    ensure!(
        failures.keys().all(|e| !e.contains("AlreadyExists")),
        "a unique name was refused as existing: {failures:?}"
    );
    ensure!(
        follower_gap <= MAX_UNAVAILABLE,
        "the API acknowledged nothing for {follower_gap:?} after the follower was killed"
    );
    ensure!(
        leader_gap <= MAX_UNAVAILABLE,
        "the API acknowledged nothing for {leader_gap:?} after the leader was killed"
    );
    eprintln!("longest unavailability: {:?}", follower_gap.max(leader_gap));
    drop(server);
    drop(etcd);
    Ok(())
}
