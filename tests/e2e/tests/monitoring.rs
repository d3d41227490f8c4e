//! Monitoring end to end, with Debian's real Prometheus and Alertmanager started
//! by `shoal server --monitoring`: they discover the server, its local agent (host
//! `h1`), the agent of a second host (`h2`, in a namespace of its own) and the
//! guest node through `/sd/prometheus`, the key series carry their labels, and a
//! host whose agent is killed fires `ShoalHostNotReady` in Prometheus and reaches
//! Alertmanager within the rule's `for` plus two scrape intervals (after the
//! heartbeat lease has expired). Discovery refuses requests without a valid token
//! and shows a tenant only its own organization's guests. The front ends are
//! opened through the server's TLS listener (`/monitoring/…`), by administrators
//! only.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kube::api::Api;
use serde_json::Value;
use shoal_api::{Cluster, ClusterPhase, Host};
use shoal_e2e::fixtures::ClusterArgs;
use shoal_e2e::hosts::{local_agent_args, AgentProc, NetnsGuard, Underlay};
use shoal_e2e::{free_ports, token_of, workspace_root, ServerProc};

const ORG: &str = "acme";
const NS: &str = "org-acme";
/// Prometheus's scrape and rule evaluation interval in this test.
const SCRAPE_SECS: u64 = 2;

fn need(bin: &str) -> Result<()> {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()?
        .status
        .success();
    ensure!(
        found,
        "{bin} is not installed: run scripts/setup.sh (it installs Debian's prometheus and prometheus-alertmanager)"
    );
    Ok(())
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value> {
    let resp = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let code = resp.status();
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("GET {url}: not JSON"))?;
    ensure!(code.is_success(), "GET {url}: {code} {body}");
    Ok(body)
}

/// Polls `check` every second until it returns `Some`, or fails after `timeout`
/// with the last state it saw.
async fn poll<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<(Option<T>, String)>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let (found, seen) = check().await?;
        if let Some(v) = found {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not seen in {timeout:?}; last seen: {seen}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `(job, labels, health)` of every active target; a target that is not up
/// carries Prometheus's last scrape error in its health, for the failure message.
async fn targets(http: &reqwest::Client, prom: &str) -> Result<Vec<(String, Value, String)>> {
    let body = get_json(http, &format!("{prom}/api/v1/targets?state=active")).await?;
    Ok(body["data"]["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            (
                t["labels"]["job"].as_str().unwrap_or_default().to_owned(),
                t["labels"].clone(),
                match (t["health"].as_str(), t["lastError"].as_str()) {
                    (Some("up"), _) => "up".to_owned(),
                    (health, error) => format!(
                        "{}: {}",
                        health.unwrap_or_default(),
                        error.unwrap_or_default()
                    ),
                },
            )
        })
        .collect())
}

async fn query(http: &reqwest::Client, prom: &str, q: &str) -> Result<Vec<Value>> {
    let url = reqwest::Url::parse_with_params(&format!("{prom}/api/v1/query"), &[("query", q)])?;
    let body = get_json(http, url.as_str()).await?;
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

async fn wait_cluster_ready(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<Cluster> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let status = api.get(name).await?.status;
        if status.as_ref().and_then(|s| s.phase) == Some(ClusterPhase::Ready) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("cluster {name} not Ready in 240 s: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `GET /sd/prometheus?job=…` on the server with `token`: (status, body).
async fn sd(server: &ServerProc, token: Option<&str>, job: &str) -> Result<(u16, Value)> {
    let ca = std::fs::read(server.data_dir.join("tls/ca.crt"))?;
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .build()?;
    let mut req = http.get(format!("{}/sd/prometheus?job={job}", server.url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let code = resp.status().as_u16();
    Ok((code, resp.json().await?))
}

fn tenant_token(server: &ServerProc, org: &str) -> Result<String> {
    let text = server.shoal_ok(&["token", "create", "--org", org, "--role", "viewer"])?;
    text.lines()
        .map(str::trim)
        .rfind(|l| l.starts_with("shoal."))
        .map(str::to_owned)
        .context("no token printed")
}

/// The front ends on the server's TLS listener: refused without a token (a
/// browser is sent to the UI's sign-in), with a bad one and to a tenant; open to
/// an administrator by bearer token or the UI's session cookie, with the
/// children's links pointing back through the server and their lifecycle
/// endpoints kept from callers.
async fn front_ends(server: &ServerProc, admin: &str, tenant: &str) -> Result<()> {
    let https = shoal_e2e::fixtures::https_trusting(&server.kubeconfig())?
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let prom = format!("{}/monitoring/prometheus", server.url());
    let am = format!("{}/monitoring/alertmanager", server.url());
    let up = format!("{prom}/api/v1/query?query=up");
    let get = |url: &str, token: Option<&str>| {
        let mut req = https.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let r = get(&up, None).await?;
    let code = r.status().as_u16();
    let body: Value = r.json().await?;
    ensure!(
        code == 401
            && body["kind"] == "Status"
            && body["message"]
                .as_str()
                .is_some_and(|m| m.contains("Bearer")),
        "no token: {code} {body}"
    );
    let r = https
        .get(format!("{prom}/graph"))
        .header(reqwest::header::ACCEPT, "text/html")
        .send()
        .await?;
    let location = r.headers().get(reqwest::header::LOCATION).cloned();
    ensure!(
        r.status().is_redirection() && location.as_ref().is_some_and(|l| l == "/ui/sign-in"),
        "a browser without a session: {} {location:?}",
        r.status()
    );
    let r = get(&up, Some("shoal.not-a-token")).await?;
    ensure!(r.status() == 401, "a bad token: {}", r.status());
    let r = get(&up, Some(tenant)).await?;
    let code = r.status().as_u16();
    let body: Value = r.json().await?;
    ensure!(
        code == 403
            && body["reason"] == "Forbidden"
            && body["message"]
                .as_str()
                .is_some_and(|m| m.contains("administrators")),
        "a tenant: {code} {body}"
    );
    let r = get(&format!("{am}/api/v2/status"), Some(tenant)).await?;
    ensure!(
        r.status() == 403,
        "a tenant at Alertmanager: {}",
        r.status()
    );

    // An administrator queries Prometheus's HTTP API through the server.
    let r = get(&up, Some(admin)).await?;
    let code = r.status().as_u16();
    let body: Value = r.json().await?;
    let series = body["data"]["result"].as_array().map_or(0, Vec::len);
    ensure!(
        code == 200 && body["status"] == "success" && series >= 4,
        "up through the server: {code} {body}"
    );
    // A browser signed in to the UI opens Prometheus's pages (Debian ships its
    // classic UI) and their assets; links and redirects stay under the prefix.
    let session = format!("shoal_token={admin}");
    let browse = |path: String| {
        https
            .get(format!("{prom}{path}"))
            .header(reqwest::header::COOKIE, &session)
            .send()
    };
    let r = browse("/classic/graph".into()).await?;
    let code = r.status();
    let page = r.text().await?;
    let asset = page
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        code == 200 && asset.starts_with("/monitoring/prometheus/classic/static/"),
        "the graph page with a session: {code}, first script {asset:?}: {}",
        page.chars().take(600).collect::<String>()
    );
    let path = asset
        .trim_start_matches("/monitoring/prometheus")
        .to_owned();
    let r = browse(path).await?;
    ensure!(
        r.status() == 200,
        "{asset} through the server: {}",
        r.status()
    );
    for path in ["/", "/graph"] {
        let r = browse(path.into()).await?;
        let location = r.headers().get(reqwest::header::LOCATION).cloned();
        ensure!(
            r.status().is_redirection()
                && location.as_ref().is_some_and(|l| l
                    .to_str()
                    .is_ok_and(|l| l.starts_with("/monitoring/prometheus/"))),
            "{path} redirects within the prefix: {} {location:?}",
            r.status()
        );
    }
    let r = get(&prom, Some(admin)).await?;
    ensure!(
        r.status().is_redirection(),
        "{prom} without a slash: {}",
        r.status()
    );
    // Lifecycle endpoints stay with the server.
    let r = https
        .post(format!("{prom}/-/quit"))
        .bearer_auth(admin)
        .send()
        .await?;
    ensure!(
        r.status() == 403,
        "POST /-/quit through the server: {}",
        r.status()
    );
    let r = get(&format!("{prom}/-/healthy"), Some(admin)).await?;
    ensure!(
        r.status() == 200,
        "Prometheus after the refused quit: {}",
        r.status()
    );
    let r = get(&format!("{am}/api/v2/status"), Some(admin)).await?;
    let code = r.status();
    let body: Value = r.json().await?;
    ensure!(
        code == 200 && body["config"]["original"].is_string(),
        "Alertmanager's status through the server: {code} {body}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_everything_and_a_lost_host_alerts() -> Result<()> {
    need("prometheus")?;
    need("prometheus-alertmanager")?;
    let hosts = Underlay::pair(&format!("mo{}h", std::process::id()))?;
    let images = workspace_root().join("images/out");
    shoal_e2e::fleet::image("vmlinuz")?;
    let ports = free_ports(2)?;
    let (prom_port, am_port) = (ports[0], ports[1]);
    let prom_listen = format!("127.0.0.1:{prom_port}");
    let am_listen = format!("127.0.0.1:{am_port}");
    let images_arg = images.display().to_string();
    let scrape = SCRAPE_SECS.to_string();
    // The server's own agent is host h1, in a namespace of its own.
    let local_ns = format!("mo{}l", std::process::id());
    let _local_ns = NetnsGuard(local_ns.clone());
    let mut args = local_agent_args(&local_ns, "h1");
    args.extend([
        "--monitoring",
        "--prometheus-listen",
        &prom_listen,
        "--alertmanager-listen",
        &am_listen,
        "--scrape-interval",
        &scrape,
        "--test-image-dir",
        &images_arg,
        "--host-grace-period",
        "600",
    ]);
    let server = ServerProc::start_with(&args)?;
    let prom = format!("http://{prom_listen}");
    let http = reqwest::Client::new();
    let client = server.client().await?;
    server.shoal_ok(&["org", "create", ORG])?;
    server.shoal_ok(&["org", "create", "other"])?;
    let dir = tempfile::tempdir()?;
    let mut h2 = AgentProc::start_with_args(
        &server.kubeconfig(),
        "h2",
        &hosts.names[1],
        hosts.underlay(1),
        dir.path(),
        Some(1),
        &[],
    )?;
    shoal_e2e::hosts::wait_ready(&client, &["h1", "h2"], Duration::from_secs(60)).await?;
    server.shoal_ok(ClusterArgs::new("m1", ORG).size("1", "256Mi", "1Gi").args())?;
    wait_cluster_ready(&client, "m1").await?;

    // Discovery: bad input first.
    let (code, body) = sd(&server, None, "guest").await?;
    ensure!(
        code == 401 && body["kind"] == "Status",
        "no token: {code} {body}"
    );
    ensure!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Bearer"),
        "{body}"
    );
    let (code, body) = sd(&server, Some("shoal.not-a-token"), "guest").await?;
    ensure!(code == 401, "a bad token: {code} {body}");
    let admin = token_of(&server.kubeconfig())?;
    let (code, body) = sd(&server, Some(&admin), "nodes").await?;
    ensure!(code == 400, "an unknown job: {code} {body}");
    ensure!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("server, agent, guest"),
        "{body}"
    );
    // A tenant sees its own guests and no Shoal process; another tenant nothing.
    let acme = tenant_token(&server, ORG)?;
    let other = tenant_token(&server, "other")?;
    let (_, own) = sd(&server, Some(&acme), "guest").await?;
    let (_, procs) = sd(&server, Some(&acme), "server").await?;
    let (_, agents_seen) = sd(&server, Some(&acme), "agent").await?;
    let (_, foreign) = sd(&server, Some(&other), "guest").await?;
    ensure!(
        procs == serde_json::json!([]) && agents_seen == serde_json::json!([]),
        "{procs} {agents_seen}"
    );
    ensure!(
        foreign == serde_json::json!([]),
        "another organization's guests: {foreign}"
    );
    let (_, all_guests) = sd(&server, Some(&admin), "guest").await?;
    ensure!(
        own == all_guests,
        "the tenant's guests {own} differ from the admin's {all_guests}"
    );
    ensure!(
        own.as_array()
            .is_some_and(|g| g.len() == 1 && g[0]["labels"]["org"] == NS),
        "acme's guest targets: {own}"
    );

    // Prometheus discovers and scrapes every target.
    let started = Instant::now();
    let seen = poll("every target up", Duration::from_secs(90), async || {
        let ts = targets(&http, &prom).await?;
        let up = |job: &str| ts.iter().filter(|(j, _, h)| j == job && h == "up").count();
        let all = (up("shoal-server"), up("shoal-agent"), up("shoal-guest"));
        // What the agent itself answers for a guest that is down.
        let mut answers = Vec::new();
        for (_, l, h) in ts
            .iter()
            .filter(|(j, _, h)| j == "shoal-guest" && h != "up")
        {
            let url = format!(
                "http://{}/guests/{}/{}/metrics",
                l["instance"].as_str().unwrap_or_default(),
                l["org"].as_str().unwrap_or_default(),
                l["machine"].as_str().unwrap_or_default()
            );
            let answer = match http.get(&url).send().await {
                Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            answers.push(format!("{h} / {url} answers {answer}"));
        }
        Ok((
            (all == (1, 2, 1)).then_some(ts.clone()),
            format!("{all:?} of (1, 2, 1): {ts:?}; {answers:?}"),
        ))
    })
    .await?;
    eprintln!(
        "every target up {:?} after the cluster was Ready",
        started.elapsed()
    );
    let guest = seen
        .iter()
        .find(|(j, _, _)| j == "shoal-guest")
        .map(|(_, l, _)| l.clone())
        .context("a guest target")?;
    for label in ["org", "cluster", "machine", "host", "role"] {
        ensure!(
            guest[label].as_str().is_some_and(|v| !v.is_empty()),
            "guest target without {label}: {guest}"
        );
    }
    ensure!(
        guest["cluster"] == "m1" && guest["role"] == "control-plane",
        "{guest}"
    );

    // The key series, with their labels.
    for (q, what) in [
        (
            r#"shoal_cluster_ready{org="org-acme",cluster="m1"} == 1"#,
            "the cluster's readiness",
        ),
        (r#"shoal_host_ready == 1"#, "both hosts Ready"),
        (
            r#"shoal_machines{org="org-acme",cluster="m1",phase="Ready"} == 1"#,
            "the Ready machine",
        ),
        (
            r#"shoal_certificate_expiry_timestamp_seconds{kind="cluster-ca",cluster="m1"} > time()"#,
            "the cluster CA's expiry",
        ),
        (
            r#"shoal_certificate_expiry_timestamp_seconds{kind="server",name="apiserver"} > time()"#,
            "the server certificate's expiry",
        ),
        (
            r#"shoal_apiserver_request_duration_seconds_count{verb="list",resource="clusters"} > 0"#,
            "API latency by verb and resource",
        ),
        (
            r#"shoal_store_operation_duration_seconds_count{op="create"} > 0"#,
            "store write latency",
        ),
        (
            r#"node_memory_MemTotal_bytes{job="shoal-guest",cluster="m1"} > 100e6"#,
            "the guest node's memory",
        ),
    ] {
        let found = poll(what, Duration::from_secs(30), async || {
            let r = query(&http, &prom, q).await?;
            Ok(((!r.is_empty()).then_some(r.clone()), format!("{q}: {r:?}")))
        })
        .await?;
        if what == "both hosts Ready" {
            ensure!(found.len() == 2, "{found:?}");
        }
    }
    front_ends(&server, &admin, &acme).await?;

    // Kill the agent of h2: its lease expires, the Host turns NotReady, and the
    // alert fires after its `for` (1m) and reaches Alertmanager.
    h2.kill9()?;
    let killed = Instant::now();
    let not_ready = poll(
        "h2 NotReady in the API",
        Duration::from_secs(90),
        async || {
            let h = Api::<Host>::all(client.clone()).get("h2").await?;
            let ready = h
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
            let is_false = ready.as_ref().is_some_and(|c| c.status == "False");
            Ok((is_false.then_some(Instant::now()), format!("{ready:?}")))
        },
    )
    .await?;
    eprintln!(
        "h2 NotReady {:?} after its agent was killed",
        not_ready - killed
    );
    let limit = Duration::from_secs(60 + 2 * SCRAPE_SECS) + Duration::from_secs(2 * SCRAPE_SECS);
    let firing = poll(
        "ShoalHostNotReady firing",
        limit + Duration::from_secs(30),
        async || {
            let body = get_json(&http, &format!("{prom}/api/v1/alerts")).await?;
            let alerts = body["data"]["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let hit = alerts.iter().any(|a| {
                a["labels"]["alertname"] == "ShoalHostNotReady"
                    && a["labels"]["host"] == "h2"
                    && a["state"] == "firing"
            });
            Ok((hit.then_some(Instant::now()), format!("{alerts:?}")))
        },
    )
    .await?;
    let took = firing - not_ready;
    eprintln!("ShoalHostNotReady firing {took:?} after h2 turned NotReady (limit {limit:?})");
    ensure!(
        took <= limit,
        "firing took {took:?}, more than the rule's for (60 s) plus two scrape intervals"
    );
    let h1_firing = query(
        &http,
        &prom,
        r#"ALERTS{alertname="ShoalHostNotReady",host="h1"}"#,
    )
    .await?;
    ensure!(
        h1_firing.is_empty(),
        "h1 is Ready but alerts: {h1_firing:?}"
    );
    // Alertmanager, asked through the server as an administrator.
    let admin_https = shoal_e2e::fixtures::https_trusting(&server.kubeconfig())?
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {admin}").parse()?,
        )]))
        .build()?;
    let am_proxied = format!("{}/monitoring/alertmanager", server.url());
    poll(
        "the alert in Alertmanager",
        Duration::from_secs(30),
        async || {
            let body = get_json(&admin_https, &format!("{am_proxied}/api/v2/alerts")).await?;
            let hit = body.as_array().is_some_and(|a| {
                a.iter().any(|x| {
                    x["labels"]["alertname"] == "ShoalHostNotReady"
                        && x["labels"]["host"] == "h2"
                        && x["annotations"]["runbook"]
                            .as_str()
                            .is_some_and(|r| !r.is_empty())
                })
            });
            Ok((hit.then_some(()), body.to_string()))
        },
    )
    .await?;
    // A graceful stop of the server stops its children (and its local agent).
    let mut pids = Vec::new();
    for name in ["prometheus", "alertmanager"] {
        let pid: u32 =
            std::fs::read_to_string(server.data_dir.join(format!("monitoring/{name}.pid")))?
                .trim()
                .parse()?;
        pids.push((name, pid));
    }
    let mut server = server;
    server.stop()?;
    for (name, pid) in pids {
        ensure!(
            !shoal_e2e::hosts::alive(pid),
            "{name} ({pid}) outlived the server"
        );
        ensure!(
            !server
                .data_dir
                .join(format!("monitoring/{name}.pid"))
                .exists(),
            "{name}.pid outlived its process"
        );
    }
    Ok(())
}
