//! `cargo bench -p shoal-e2e --bench aws` (or `make bench`): the AWS provider
//! against moto, through the counting proxy of the AWS lab. For a 3 + 3 cluster
//! over two zones: the AWS calls to create and to delete it, by action, next to
//! the resources made (one create each is the floor); the time to converge, next
//! to the same number of round trips to moto (`ec2:DescribeVpcs`) made back to
//! back; and the calls of a resync when nothing changed (a restarted server's
//! first pass), whose goal is at most one describe per resource type and no write.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use shoal_e2e::awslab::{aws, lab, Moto, Proxy};

fn is_read(call: &str) -> bool {
    let action = call.split(':').nth(1).unwrap_or_default();
    ["Describe", "List", "Get", "GET "]
        .iter()
        .any(|p| action.starts_with(p))
}

fn report(title: &str, counts: &BTreeMap<String, u64>) -> (u64, u64) {
    let reads: u64 = counts
        .iter()
        .filter(|(k, _)| is_read(k))
        .map(|(_, v)| v)
        .sum();
    let writes: u64 = counts
        .iter()
        .filter(|(k, _)| !is_read(k))
        .map(|(_, v)| v)
        .sum();
    println!(
        "{title}: {} calls ({reads} reads, {writes} writes)",
        reads + writes
    );
    for (call, n) in counts {
        println!("  {n:>4}  {call}");
    }
    (reads, writes)
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> Result<()> {
    let moto = Moto::start(false)?;
    let aws = aws(&moto).await;
    let proxy = Proxy::start(moto.port)?;
    let mut server = lab(&proxy.url(), &aws).await?;
    let create = [
        "cluster",
        "create",
        "--name",
        "bench",
        "--org",
        "acme",
        "--release",
        "aws-1-35",
        "--control-plane",
        "3",
        "--workers",
        "3",
        "--provider",
        "aws",
        "--region",
        "eu-west-1",
        "--azs",
        "eu-west-1a,eu-west-1b",
        "--hosted-zone",
        "example.com",
        "--wait",
        "--timeout",
        "300",
    ];
    proxy.reset_counts();
    let started = Instant::now();
    server.shoal_ok(&create)?;
    let create_time = started.elapsed();
    let create_calls = proxy.counts();
    let status = server.kubectl_ok(&["get", "cluster", "bench", "-n", "org-acme", "-o", "json"])?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    let made = status["status"]["aws"]["resources"]
        .as_array()
        .map(Vec::len)
        .context("no resources")?;

    // The floor: as many round trips to moto, back to back, through the proxy.
    let direct = shoal_e2e::awslab::aws_at(&proxy.url()).await;
    let total: u64 = create_calls.values().sum();
    let started = Instant::now();
    for _ in 0..total {
        direct.ec2.describe_vpcs().send().await?;
    }
    let floor = started.elapsed();

    // A resync with nothing changed: the first pass of a restarted server.
    server.stop()?;
    proxy.reset_counts();
    server.restart()?;
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now: u64 = proxy.counts().values().sum();
        if now > 0 && now == last {
            break;
        }
        ensure!(Instant::now() < deadline, "the resync did not settle");
        last = now;
    }
    let resync = proxy.counts();

    proxy.reset_counts();
    let started = Instant::now();
    server.shoal_ok(&[
        "cluster",
        "delete",
        "bench",
        "--org",
        "acme",
        "--wait",
        "--timeout",
        "300",
    ])?;
    let delete_time = started.elapsed();
    let delete_calls = proxy.counts();

    println!(
        "AWS provider benchmark: a 3 + 3 cluster over 2 zones against moto {}",
        shoal_e2e::awslab::MOTO_VERSION
    );
    let (cr, cw) = report("create", &create_calls);
    println!(
        "create: {made} resources, {} calls = {:.2} calls per resource; {cw} writes = {:.2} per resource",
        cr + cw,
        (cr + cw) as f64 / made as f64,
        cw as f64 / made as f64
    );
    println!(
        "create converged in {:.2} s; {total} back-to-back round trips take {:.2} s: ratio {:.2}",
        create_time.as_secs_f64(),
        floor.as_secs_f64(),
        create_time.as_secs_f64() / floor.as_secs_f64()
    );
    let (rr, rw) = report("resync with nothing changed", &resync);
    let types = resync.keys().filter(|k| is_read(k)).count() as u64;
    println!(
        "resync: {rr} reads over {types} describe actions ({:.2} per action), {rw} writes",
        rr as f64 / types.max(1) as f64
    );
    let (dr, dw) = report("delete", &delete_calls);
    println!(
        "delete converged in {:.2} s with {} calls ({dr} reads, {dw} writes) for {made} resources",
        delete_time.as_secs_f64(),
        dr + dw
    );
    Ok(())
}
