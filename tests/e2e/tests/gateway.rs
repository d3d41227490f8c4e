//! The gateway end to end: two namespace hosts with real agents and QEMU VMs booting
//! the test image, whose control planes serve HTTPS on 6443 with the certificates
//! Shoal issued. Kubeconfigs issued by `shoal kubeconfig create` point at the
//! server's embedded gateway, and the real Debian kubectl goes through it: SNI
//! routing, client certificates reaching the guest, a wrong CA, an expired
//! certificate, groups, ingress by Host, the endpoints API, the loss of one of three
//! control planes, and bad clients.
//! Needs root, QEMU, nftables, kubectl and the test image (scripts/setup.sh); it
//! fails loudly without them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use shoal_api::resources::common::MachineRole;
use shoal_api::{ClusterPhase, Machine, MachinePhase};
use shoal_e2e::fixtures::ClusterArgs;
use shoal_e2e::fleet::image;
use shoal_e2e::hosts::{start_agent_pair, Underlay};
use shoal_e2e::{free_port, kubectl_bin, workspace_root, ServerProc};

const ORG: &str = "gw";
const NS: &str = "org-gw";

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<Output> {
    Ok(std::process::Command::new(kubectl_bin()?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=10s")
        .args(args)
        .output()?)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs kubectl until it succeeds, for at most `timeout`.
fn kubectl_until_ok(kubeconfig: &Path, args: &[&str], timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = kubectl(kubeconfig, args)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if Instant::now() > deadline {
            bail!("kubectl {} kept failing: {}", args.join(" "), text(&out));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

async fn machines(client: &Client, cluster: &str) -> Result<Vec<Machine>> {
    let api: Api<Machine> = Api::namespaced(client.clone(), NS);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|m| m.spec.cluster == cluster)
        .collect())
}

async fn wait_ready(client: &Client, name: &str, timeout: Duration) -> Result<()> {
    let api: Api<shoal_api::Cluster> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + timeout;
    loop {
        let st = api.get(name).await?.status.unwrap_or_default();
        if st.phase == Some(ClusterPhase::Ready) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("cluster {name} not Ready in {timeout:?}: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An HTTP/1.1 GET through the gateway's plain listener; the response body.
fn http_get(port: u16, host: &str) -> Result<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        conn,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    conn.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_owned())
        .unwrap_or_default())
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

/// The issued kubeconfig's `tls-server-name`, changed to another cluster's API name.
fn pointed_at(src: &Path, dst: &Path, from: &str, to: &str) -> Result<()> {
    let text = std::fs::read_to_string(src)?;
    assert!(text.contains(from), "{from} in {text}");
    std::fs::write(dst, text.replace(from, to))?;
    Ok(())
}

fn endpoints(server: &ServerProc, cluster: &str) -> Result<serde_json::Value> {
    let path = format!("/apis/shoal.io/v1alpha1/namespaces/{NS}/clusters/{cluster}/endpoints");
    Ok(serde_json::from_str(
        &server.kubectl_ok(&["get", "--raw", &path])?,
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_through_the_gateway_into_guest_clusters() -> Result<()> {
    kubectl_bin().context("Debian's kubectl (scripts/setup.sh installs it)")?;
    image("vmlinuz")?;
    let hosts = Underlay::pair(&format!("sg{}h", std::process::id()))?;
    let images = workspace_root().join("images/out").display().to_string();
    let (tls_port, http_port) = (free_port()?, free_port()?);
    let tls_listen = format!("127.0.0.1:{tls_port}");
    let sd_dir = tempfile::tempdir()?;
    let file_sd = sd_dir.path().join("gateway-sd.json");
    let file_sd_arg = file_sd.display().to_string();
    let http_listen = format!("127.0.0.1:{http_port}");
    let server = ServerProc::start_with(&[
        "--test-image-dir",
        &images,
        "--gateway-listen",
        &tls_listen,
        "--gateway-http-listen",
        &http_listen,
        "--gateway-hello-timeout",
        "2",
        "--gateway-file-sd",
        &file_sd_arg,
    ])?;
    let client = server.client().await?;
    server.shoal_ok(&["org", "create", ORG])?;
    let dir = tempfile::tempdir()?;
    let agents = start_agent_pair(&server.kubeconfig(), &client, &hosts, dir.path()).await?;

    // A: three control planes and a worker; B: one of each.
    for (name, cps) in [("a", "3"), ("b", "1")] {
        server.shoal_ok(
            ClusterArgs::new(name, ORG)
                .control_plane(cps)
                .workers("1")
                .size("1", "256Mi", "1Gi")
                .args(),
        )?;
    }
    wait_ready(&client, "a", Duration::from_secs(300)).await?;
    wait_ready(&client, "b", Duration::from_secs(300)).await?;

    // Kubeconfigs through the gateway, with client certificates the clusters' CAs sign.
    let gateway = format!("127.0.0.1:{tls_port}");
    let a_yaml = dir.path().join("a.yaml");
    let b_yaml = dir.path().join("b.yaml");
    for (cluster, file) in [("a", &a_yaml), ("b", &b_yaml)] {
        server.shoal_ok(&[
            "kubeconfig",
            "create",
            "--cluster",
            cluster,
            "--org",
            ORG,
            "--groups",
            "dev,ops",
            "--cn-prefix",
            "laptop",
            "--ttl",
            "2h",
            "--gateway-address",
            &gateway,
            "--output",
            &file.display().to_string(),
        ])?;
    }
    let version = kubectl_until_ok(
        &a_yaml,
        &["get", "--raw", "/version"],
        Duration::from_secs(60),
    )?;
    let version: serde_json::Value = serde_json::from_str(&version)?;
    assert!(
        version["gitVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with('v')),
        "{version}"
    );
    let who: serde_json::Value = serde_json::from_str(&kubectl_until_ok(
        &a_yaml,
        &["get", "--raw", "/api"],
        Duration::from_secs(30),
    )?)?;
    let user = who["user"].as_str().unwrap_or_default();
    assert!(user.ends_with(":laptop"), "the CN the guest saw: {who}");
    assert_eq!(who["groups"], serde_json::json!(["dev", "ops"]), "{who}");
    kubectl_until_ok(&b_yaml, &["get", "--raw", "/api"], Duration::from_secs(60))?;

    // A's kubeconfig aimed at B's name: B's certificate is not signed by A's CA.
    let crossed = dir.path().join("crossed.yaml");
    pointed_at(
        &a_yaml,
        &crossed,
        "api.a.gw.shoal.local",
        "api.b.gw.shoal.local",
    )?;
    let out = kubectl(&crossed, &["get", "--raw", "/version"])?;
    assert!(
        !out.status.success(),
        "a foreign CA must fail: {}",
        text(&out)
    );
    assert!(text(&out).contains("certificate"), "{}", text(&out));

    // An expired certificate is refused by the guest.
    let short = dir.path().join("short.yaml");
    let issued = Instant::now();
    server.shoal_ok(&[
        "kubeconfig",
        "create",
        "--cluster",
        "a",
        "--org",
        ORG,
        "--ttl",
        "10s",
        "--gateway-address",
        &gateway,
        "--output",
        &short.display().to_string(),
    ])?;
    let out = kubectl(&short, &["get", "--raw", "/api"])?;
    assert!(out.status.success(), "before expiry: {}", text(&out));
    // The guest checks expiry against its own clock, which under CPU emulation may
    // run a few seconds behind the host's: poll past the expiry instead of betting on
    // one attempt, but bound the slack.
    tokio::time::sleep(Duration::from_secs(11).saturating_sub(issued.elapsed())).await;
    let refused_by = Instant::now() + Duration::from_secs(60);
    loop {
        let out = kubectl(&short, &["get", "--raw", "/api"])?;
        if !out.status.success() {
            assert!(text(&out).contains("certificate"), "{}", text(&out));
            println!(
                "expired certificate refused {:.1} s after issue",
                issued.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            Instant::now() < refused_by,
            "an expired certificate must be refused within 60 s of its expiry: {}",
            text(&out)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Ingress by Host reaches a worker of that cluster, never another's.
    let a_workers: Vec<String> = machines(&client, "a")
        .await?
        .iter()
        .filter(|m| m.spec.role == MachineRole::Worker)
        .map(|m| m.name_any())
        .collect();
    let b_workers: Vec<String> = machines(&client, "b")
        .await?
        .iter()
        .filter(|m| m.spec.role == MachineRole::Worker)
        .map(|m| m.name_any())
        .collect();
    for _ in 0..4 {
        let got = http_get(http_port, "shop.a.gw.shoal.local")?;
        assert!(
            a_workers.contains(&got),
            "{got:?} is not one of A's workers {a_workers:?}"
        );
        let got = http_get(http_port, "www.b.gw.shoal.local:80")?;
        assert!(
            b_workers.contains(&got),
            "{got:?} is not one of B's workers {b_workers:?}"
        );
    }

    // The endpoints API lists the backends with their health.
    let ep = endpoints(&server, "a")?;
    assert_eq!(ep["kind"], "ClusterEndpoints");
    assert_eq!(ep["apiServerName"], "api.a.gw.shoal.local");
    assert_eq!(ep["api"].as_array().map(Vec::len), Some(3), "{ep}");
    assert_eq!(ep["ingressHttp"].as_array().map(Vec::len), Some(1), "{ep}");

    // The same backends in the file-sd output, for Prometheus or an external balancer.
    let sd: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file_sd)?)?;
    let a_api_targets = sd
        .as_array()
        .context("file-sd is a list")?
        .iter()
        .filter(|g| g["labels"]["cluster"] == "a" && g["labels"]["service"] == "api")
        .count();
    assert_eq!(a_api_targets, 3, "{sd}");

    // A new worker is routed within a second of turning Ready.
    server.shoal_ok(&["cluster", "scale", "b", "--org", ORG, "--workers", "2"])?;
    let before: Vec<String> = b_workers.clone();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut ready_at: Option<(String, Instant)> = None;
    loop {
        if ready_at.is_none() {
            ready_at = machines(&client, "b")
                .await?
                .iter()
                .find(|m| {
                    m.spec.role == MachineRole::Worker
                        && !before.contains(&m.name_any())
                        && m.status.as_ref().and_then(|s| s.phase) == Some(MachinePhase::Ready)
                })
                .map(|m| (m.name_any(), Instant::now()));
        }
        if let Some((name, at)) = &ready_at {
            let ep = endpoints(&server, "b")?;
            let routed = ep["ingressHttp"]
                .as_array()
                .is_some_and(|l| l.iter().any(|b| b["machine"] == format!("{NS}/{name}")));
            if routed {
                let lag = at.elapsed();
                eprintln!("new worker {name} routed {lag:?} after it was seen Ready");
                assert!(lag <= Duration::from_secs(1), "routed {lag:?} after Ready");
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("the new worker of b was not routed: {ready_at:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Kill one of A's three control-plane VMs: requests keep succeeding after at most
    // one failure, and the gateway drops the backend.
    let cps: Vec<Machine> = machines(&client, "a")
        .await?
        .into_iter()
        .filter(|m| {
            m.spec.role == MachineRole::ControlPlane
                && m.status.as_ref().and_then(|s| s.phase) == Some(MachinePhase::Ready)
        })
        .collect();
    let victim = cps.first().context("a Ready control plane")?;
    let victim_name = victim.name_any();
    let on = usize::from(victim.spec.host_name.as_deref() == Some("h2"));
    assert!(agents[on].kill_vm(&victim_name), "killed {victim_name}");
    let mut failures = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let out = kubectl(&a_yaml, &["get", "--raw", "/version"])?;
        if !out.status.success() {
            failures += 1;
        }
    }
    eprintln!("{failures} failed requests in the 10 s after {victim_name} was killed");
    assert!(
        failures <= 1,
        "{failures} requests failed after a control plane died"
    );
    let dropped = Instant::now() + Duration::from_secs(10);
    loop {
        let ep = endpoints(&server, "a")?;
        let listed = ep["api"].as_array().cloned().unwrap_or_default();
        let gone = listed.iter().all(|b| {
            b["machine"] != format!("{NS}/{victim_name}")
                || b["healthy"] == serde_json::json!(false)
        });
        if gone {
            break;
        }
        if Instant::now() > dropped {
            bail!("the dead control plane is still a healthy backend: {ep}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Bad clients against the embedded gateway: garbage, no SNI, 1,000 idle
    // connections. It stays up, serves real requests meanwhile, and its memory stays
    // bounded.
    let mut garbage = TcpStream::connect(("127.0.0.1", tls_port))?;
    garbage.write_all(b"this is not a ClientHello\r\n\r\n")?;
    garbage.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 16];
    assert!(
        matches!(garbage.read(&mut buf), Ok(0) | Err(_)),
        "garbage is closed"
    );
    let no_sni = kubectl(
        &server.kubeconfig(),
        &[
            "--server",
            &format!("https://127.0.0.1:{tls_port}"),
            "--insecure-skip-tls-verify",
            "get",
            "--raw",
            "/version",
        ],
    )?;
    assert!(
        !no_sni.status.success(),
        "a ClientHello without SNI is not routed"
    );
    let before = rss_kib(server.pid())?;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(("127.0.0.1", tls_port))?);
    }
    kubectl_until_ok(
        &b_yaml,
        &["get", "--raw", "/version"],
        Duration::from_secs(10),
    )?;
    let during = rss_kib(server.pid())?;
    assert!(
        during < before + 64 * 1024,
        "RSS grew from {before} KiB to {during} KiB with 1,000 idle connections"
    );
    for c in &mut idle {
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        assert!(
            matches!(c.read(&mut buf), Ok(0) | Err(_)),
            "an idle connection times out"
        );
    }
    let metrics = server.kubectl_ok(&["get", "--raw", "/metrics"])?;
    // The controllers count their reconciles on the same endpoint.
    for controller in ["cluster", "nodepool", "scheduler", "hostlife", "keypair"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("shoal_controller_reconciles_total")
                    && l.contains(&format!("controller=\"{controller}\""))),
            "no reconciles of {controller} in the metrics"
        );
    }
    for outcome in ["not_tls", "no_sni", "hello_timeout", "proxied"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("shoal_gateway_connections_total")
                    && l.contains(&format!("outcome=\"{outcome}\""))),
            "no {outcome} in the metrics"
        );
    }
    kubectl_until_ok(
        &a_yaml,
        &["get", "--raw", "/version"],
        Duration::from_secs(10),
    )?;
    drop(agents);
    Ok(())
}
