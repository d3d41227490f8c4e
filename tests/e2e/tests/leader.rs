//! Leader election across `shoal server` replicas on one real etcd: three
//! replicas compete for Lease `shoal-system/shoal-controllers` with a 4 s lease,
//! and a fourth runs with `--controllers false`.
//!
//! A sampler reads every replica's `shoal_apiserver_leader` gauge from
//! `/metrics` about every 50 ms for the whole test. It must never see two
//! leaders at once. Killing the leader with SIGKILL hands over within the lease
//! duration plus 2 s; SIGTERM releases the Lease, so the handover takes about
//! one retry period instead; the replica without controllers never leads.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{PostParams, WatchEvent, WatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use shoal_api::Organization;
use shoal_e2e::etcd::EtcdCluster;
use shoal_e2e::{free_port, ServerProc};
use tokio::sync::watch;

/// `--lease-duration` of every replica.
const LEASE: Duration = Duration::from_secs(4);
/// The replicas that run controllers; index 3 does not.
const CANDIDATES: usize = 3;
const NO_CONTROLLERS: usize = 3;
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// A released Lease is taken within one retry period (a quarter of the lease)
/// plus a request; this leaves room for a loaded machine and stays well under
/// an expiry.
const RELEASED_HANDOVER: Duration = Duration::from_millis(2500);

/// One pass over every replica's gauge: `None` where the replica did not answer.
#[derive(Clone, Debug)]
struct Sample {
    /// When the pass began: every value was read after this instant.
    at: Instant,
    gauges: Vec<Option<i64>>,
}

impl Sample {
    fn leaders(&self) -> Vec<usize> {
        (0..self.gauges.len())
            .filter(|&i| self.gauges[i] == Some(1))
            .collect()
    }
}

/// The gauge of one replica, or `None` when it does not answer within 1 s.
async fn leader_gauge(client: &Client) -> Option<i64> {
    let req = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = tokio::time::timeout(Duration::from_secs(1), client.request_text(req))
        .await
        .ok()?
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("shoal_apiserver_leader "))
        .and_then(|v| v.trim().parse().ok())
}

/// Samples every replica's gauge until dropped; keeps every pass.
struct Sampler {
    latest: watch::Receiver<Sample>,
    history: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(clients: Vec<Client>) -> Sampler {
        let first = Sample {
            at: Instant::now(),
            gauges: vec![None; clients.len()],
        };
        let (tx, latest) = watch::channel(first);
        let history = Arc::new(Mutex::new(Vec::new()));
        let log = history.clone();
        let task = tokio::spawn(async move {
            loop {
                let at = Instant::now();
                let gauges = futures::future::join_all(clients.iter().map(leader_gauge)).await;
                let sample = Sample { at, gauges };
                log.lock().expect("sampler lock").push(sample.clone());
                if tx.send(sample).is_err() {
                    return;
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        });
        Sampler {
            latest,
            history,
            task,
        }
    }

    /// The first pass that began after `after` and satisfies `pred`.
    async fn wait_for(
        &mut self,
        after: Instant,
        within: Duration,
        what: &str,
        pred: impl Fn(&Sample) -> bool,
    ) -> Result<Sample> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            {
                let s = self.latest.borrow_and_update();
                if s.at >= after && pred(&s) {
                    return Ok(s.clone());
                }
            }
            match tokio::time::timeout_at(deadline, self.latest.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the sampler stopped"),
                Err(_) => bail!(
                    "{what}: not within {within:?}; last sample {:?}",
                    self.latest.borrow().gauges
                ),
            }
        }
    }

    /// Fails if any pass saw two leaders or the replica without controllers
    /// leading; returns how many passes there were.
    fn check(&self) -> Result<usize> {
        let history = self.history.lock().expect("sampler lock");
        for s in history.iter() {
            let leaders = s.leaders();
            ensure!(
                leaders.len() <= 1,
                "two leaders at once: replicas {leaders:?} ({:?})",
                s.gauges
            );
            ensure!(
                s.gauges[NO_CONTROLLERS] != Some(1),
                "the replica with --controllers false reported leading"
            );
        }
        Ok(history.len())
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn write_key(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    std::fs::write(path, key)?;
    Ok(())
}

/// The identity a replica's elector writes into the Lease.
fn identity(s: &ServerProc) -> String {
    format!("127.0.0.1:{}-{}", s.port, s.pid())
}

fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_with_fast_handover() -> Result<()> {
    let etcd = EtcdCluster::start(3)?;
    let dir = tempfile::Builder::new().prefix("shoal-leader-").tempdir()?;
    let key = dir.path().join("encryption.key");
    write_key(&key)?;
    let endpoints = etcd.endpoints().join(",");
    let key_arg = key.to_str().context("temp path is not UTF-8")?;
    let lease_arg = LEASE.as_secs().to_string();
    let mut replicas: Vec<Option<ServerProc>> = Vec::new();
    for i in 0..=CANDIDATES {
        let controllers = if i == NO_CONTROLLERS { "false" } else { "true" };
        let args = [
            "--etcd-endpoints",
            endpoints.as_str(),
            "--encryption-key-file",
            key_arg,
            "--lease-duration",
            lease_arg.as_str(),
            "--controllers",
            controllers,
        ];
        let data = dir.path().join(format!("replica{i}"));
        replicas.push(Some(ServerProc::start_at(&data, free_port()?, &args)?));
    }
    let mut clients = Vec::new();
    for r in replicas.iter().flatten() {
        clients.push(r.client().await?);
    }
    // The replica without controllers stays up throughout: the test reads the
    // Lease through it.
    let leases: Api<Lease> = Api::namespaced(clients[NO_CONTROLLERS].clone(), "shoal-system");
    let mut sampler = Sampler::start(clients.clone());
    let started = Instant::now();

    // Eventually exactly one leader, and it is the Lease's holder; then it stays
    // the only one for a full lease duration.
    let first = sampler
        .wait_for(started, Duration::from_secs(30), "a first leader", |s| {
            s.leaders().len() == 1
        })
        .await?
        .leaders()[0];
    let lease = leases.get("shoal-controllers").await?;
    let first_proc = replicas[first].as_ref().context("running")?;
    ensure!(
        holder(&lease) == Some(identity(first_proc)),
        "replica {first} reports leading but the Lease names {:?}",
        holder(&lease)
    );
    let steady_from = Instant::now();
    let mut passes = 0;
    while steady_from.elapsed() < LEASE {
        let s = sampler
            .wait_for(Instant::now(), Duration::from_secs(5), "a sample", |_| true)
            .await?;
        ensure!(
            s.leaders() == [first],
            "leadership moved without a failure: {:?}",
            s.gauges
        );
        passes += 1;
    }
    println!(
        "replica {first} leads; {passes} passes over {LEASE:?} saw it as the only leader, \
         the Lease names it"
    );

    // SIGKILL the leader: it cannot release, so another takes over once the
    // Lease expires on its own clock.
    let killed_at = Instant::now();
    replicas[first].as_mut().context("running")?.kill9()?;
    let s = sampler
        .wait_for(
            killed_at,
            LEASE + Duration::from_secs(2),
            "a new leader after SIGKILL",
            |s| s.leaders().len() == 1,
        )
        .await?;
    let takeover = s.at.duration_since(killed_at);
    let second = s.leaders()[0];
    ensure!(second != first && second != NO_CONTROLLERS);
    let lease = leases.get("shoal-controllers").await?;
    let second_proc = replicas[second].as_ref().context("running")?;
    ensure!(holder(&lease) == Some(identity(second_proc)));
    println!(
        "SIGKILL of leader replica {first}: replica {second} took over in {:.2} s \
         (lease {} s; bound {} s)",
        takeover.as_secs_f64(),
        LEASE.as_secs(),
        (LEASE + Duration::from_secs(2)).as_secs()
    );

    // SIGTERM the new leader: it releases the Lease (holderIdentity empty), so
    // the last candidate takes over within about one retry period.
    let rv = lease.resource_version().context("no resourceVersion")?;
    let mut events = leases
        .watch(
            &WatchParams::default().fields("metadata.name=shoal-controllers"),
            &rv,
        )
        .await?
        .boxed();
    let term_at = Instant::now();
    shoal_e2e::signal(second_proc.pid(), "TERM")?;
    let s = sampler
        .wait_for(
            term_at,
            RELEASED_HANDOVER,
            "a new leader soon after SIGTERM",
            |s| s.leaders().len() == 1,
        )
        .await?;
    let handover = s.at.duration_since(term_at);
    let third = s.leaders()[0];
    ensure!(third != first && third != second && third != NO_CONTROLLERS);
    let third_id = identity(replicas[third].as_ref().context("running")?);
    // The Lease went from the second leader, through no holder, to the third.
    let mut holders: Vec<Option<String>> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while holders.last() != Some(&Some(third_id.clone())) {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .with_context(|| format!("the Lease watch saw only {holders:?}"))?
            .context("the Lease watch ended")??;
        match ev {
            WatchEvent::Added(l) | WatchEvent::Modified(l) => {
                if holders.last() != Some(&holder(&l)) {
                    holders.push(holder(&l));
                }
            }
            WatchEvent::Bookmark(_) => {}
            other => bail!("unexpected Lease event {other:?}"),
        }
    }
    drop(events);
    let released = holders
        .iter()
        .position(Option::is_none)
        .with_context(|| format!("the Lease was never released: holders {holders:?}"))?;
    ensure!(
        released + 1 == holders.len() - 1,
        "the released Lease was not taken next by replica {third}: {holders:?}"
    );
    ensure!(
        handover < LEASE,
        "the handover after SIGTERM took {handover:?}, as long as an expiry"
    );
    let mut stopped = replicas[second].take().context("running")?;
    tokio::task::spawn_blocking(move || stopped.stop()).await??;
    println!(
        "SIGTERM of leader replica {second}: Lease released (holderIdentity empty), replica \
         {third} took over in {:.2} s (lease {} s)",
        handover.as_secs_f64(),
        LEASE.as_secs()
    );

    // Stop the last candidate too: the replica without controllers is then the
    // only one left, serves the API, and still does not lead, even after the
    // Lease would have expired.
    let mut last = replicas[third].take().context("running")?;
    tokio::task::spawn_blocking(move || last.stop()).await??;
    let alone_from = Instant::now();
    let s = sampler
        .wait_for(alone_from, Duration::from_secs(5), "a sample", |_| true)
        .await?;
    ensure!(s.gauges[NO_CONTROLLERS] == Some(0), "{:?}", s.gauges);
    let orgs: Api<Organization> = Api::all(clients[NO_CONTROLLERS].clone());
    let org: Organization = serde_json::from_value(json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Organization",
        "metadata": {"name": "acme"}, "spec": {},
    }))?;
    orgs.create(&PostParams::default(), &org).await?;
    ensure!(orgs.get("acme").await?.name_any() == "acme");
    let quiet = LEASE + Duration::from_secs(2);
    let mut alone = 0;
    while alone_from.elapsed() < quiet {
        let s = sampler
            .wait_for(Instant::now(), Duration::from_secs(5), "a sample", |_| true)
            .await?;
        ensure!(
            s.gauges[NO_CONTROLLERS] == Some(0),
            "the replica with --controllers false: {:?}",
            s.gauges
        );
        alone += 1;
    }
    let lease = leases.get("shoal-controllers").await?;
    ensure!(
        holder(&lease).is_none(),
        "with no candidate left the Lease names {:?}",
        holder(&lease)
    );
    println!(
        "the replica with --controllers false served the API alone and reported gauge 0 in \
         {alone} passes over {quiet:?}; the Lease stays unheld"
    );

    let passes = sampler.check()?;
    println!(
        "{passes} sampling passes over {:.1} s: never two leaders, never the replica without \
         controllers",
        started.elapsed().as_secs_f64()
    );
    drop(etcd);
    Ok(())
}
