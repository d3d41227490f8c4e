//! The all-in-one server's local agent has a metrics listener (issue 17): it
//! publishes it in `Host.status.metricsEndpoint`, serves its own metrics there (job
//! `shoal-agent`) and the guest route (job `shoal-guest`), and the server's own
//! `/metrics` no longer carries the agent's. No VM is booted: the guest route is
//! checked for an unknown machine (404 naming it); lifecycle.rs scrapes real guests.
//! Needs root (the local agent creates its own network namespace).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use kube::Api;
use shoal_api::Host;
use shoal_e2e::hosts::{local_agent_args, AgentProc, NetnsGuard};
use shoal_e2e::ServerProc;

/// Deletes the local agent's namespace when the test ends, however it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_agent_serves_its_own_and_its_guests_metrics() -> Result<()> {
    let netns = format!("sglm{}", std::process::id());
    let _guard = NetnsGuard(netns.clone());
    let server = ServerProc::start_with(&local_agent_args(&netns, "local"))?;
    let client = server.client().await?;
    let hosts: Api<Host> = Api::all(client);
    let started = Instant::now();
    let endpoint = loop {
        let ep = hosts
            .get_opt("local")
            .await?
            .and_then(|h| h.status)
            .and_then(|s| s.metrics_endpoint);
        if let Some(ep) = ep {
            break ep;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("Host local reports no metricsEndpoint after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        endpoint.starts_with("127.0.0.1:") && !endpoint.ends_with(":0"),
        "metricsEndpoint {endpoint} is not a bound loopback port"
    );
    let (code, body) = AgentProc::metrics_get(&endpoint, "/metrics")?;
    ensure!(
        code == 200 && body.contains("shoal_agent_syncs_total"),
        "the local agent's /metrics: {code}: {body}"
    );
    // 503 while the agent's caches come up, then 404 naming the machine.
    let path = "/guests/org-none/no-such-machine/metrics";
    loop {
        let (code, body) = AgentProc::metrics_get(&endpoint, path)?;
        if code == 404 {
            ensure!(body.contains("org-none/no-such-machine"), "{body}");
            break;
        }
        ensure!(code == 503, "GET {path}: {code}: {body}");
        if started.elapsed() > Duration::from_secs(30) {
            bail!("GET {path}: still {code} after 30 s: {body}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let own = server.kubectl_ok(&["get", "--raw", "/metrics"])?;
    ensure!(
        own.contains("shoal_apiserver_") && !own.contains("shoal_agent_"),
        "the server's /metrics carries the agent's:\n{own}"
    );
    eprintln!(
        "local agent metrics endpoint {endpoint} checked in {:.2?}",
        started.elapsed()
    );
    Ok(())
}
