//! A guest cluster on Shoal's Kubernetes node image, end to end: two namespace hosts
//! with real agents, `shoal cluster create --release kubeadm-<v> --wait` (one control
//! plane, two workers, spread over both hosts), then everything through the gateway
//! with a kubeconfig from `shoal kubeconfig create` and Debian's kubectl: the Nodes
//! and their version, a pod on one host's worker reaching a pod on the other host's
//! worker, a NodePort service on the ingress port answering by Host from outside,
//! the Service inside the guest by its ClusterIP (kube-proxy), nodes on containerd
//! that never pulled an image (the node image's own checks;
//! `benches/kubernetes_boot.rs` boots it without Shoal and also resolves the
//! Service through CoreDNS), and a delete that leaves no VM, link, nft table or
//! object. With `SHOAL_K8S_SCALE=1`
//! it also scales to a third Ready worker and back down with a drain (the pod moves,
//! the Node goes); with `SHOAL_K8S_HOST_LOSS=1` it loses a host and waits for the
//! replacement Node. The cluster trusts a real OIDC provider (spec.oidc with its
//! issuer CA) that the guests reach through the agents' egress: alice signs in
//! through kubectl's credential plugin, and the guest's RBAC lets her group view
//! and nothing more.
//!
//! Needs root, QEMU, nftables, kubectl and the Kubernetes node image
//! (`scripts/setup.sh` builds it); it fails loudly without them. Under TCG on two
//! cores this test takes about 12 minutes, 28 with both switches; the times it
//! prints go to BENCHMARKS.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use shoal_api::resources::common::MachineRole;
use shoal_api::{Cluster, Machine};
use shoal_e2e::fixtures::ClusterArgs;
use shoal_e2e::guestctl::{create, kubectl_until_ok, nodes, running_pods, text};
use shoal_e2e::hosts::{links, nft_tables, start_agent_pair_with, AgentProc, Egress, Underlay};
use shoal_e2e::kubelab::NodeImage;
use shoal_e2e::oidc::{OidcProvider, ProviderOptions};
use shoal_e2e::{free_port, kubectl_bin, shoal_bin, ServerProc};

const ORG: &str = "k8s";
const NS: &str = "org-k8s";
const CLUSTER: &str = "kc";

/// An HTTP/1.1 GET through the gateway's plain listener; status line and body.
fn http_get(port: u16, host: &str) -> Result<(String, String)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(
        conn,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    conn.read_to_string(&mut out)?;
    let status = out.lines().next().unwrap_or_default().to_owned();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

async fn machines(client: &kube::Client) -> Result<Vec<Machine>> {
    let api: Api<Machine> = Api::namespaced(client.clone(), NS);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|m| m.spec.cluster == CLUSTER)
        .collect())
}

/// alice (group platform-team) uses the guest with a kubeconfig from `shoal
/// kubeconfig create --oidc`: kubectl runs `shoal kubeconfig token`, whose first
/// use prints the issuer's sign-in URL (the test is alice's browser); the guest's
/// API server verifies the provider's ID token (issuer CA from spec.oidc) and its
/// RBAC authorizes her group, prefixed `oidc:`, to view and nothing more.
async fn oidc_user_through_the_gateway(
    server: &ServerProc,
    provider: &OidcProvider,
    gateway: &str,
    admin_kc: &Path,
    dir: &Path,
) -> Result<()> {
    kubectl_until_ok(
        admin_kc,
        &[
            "create",
            "clusterrolebinding",
            "platform-team-view",
            "--clusterrole=view",
            "--group=oidc:platform-team",
        ],
        Duration::from_secs(120),
    )?;
    let home = dir.join("alice");
    std::fs::create_dir_all(&home)?;
    let kc = dir.join("kc-oidc.yaml");
    let kc_arg = kc.display().to_string();
    let admin = server.kubeconfig().display().to_string();
    let out = Command::new(shoal_bin()?)
        .env("HOME", &home)
        .env_remove("KUBECONFIG")
        .args(["--kubeconfig", &admin, "kubeconfig", "create", "--oidc"])
        .args(["--cluster", CLUSTER, "--org", ORG])
        .args(["--gateway-address", gateway, "--output", &kc_arg])
        .output()?;
    ensure!(
        out.status.success(),
        "kubeconfig create --oidc: {}",
        text(&out)
    );
    let proxy = provider
        .proxy_url()
        .context("the provider runs behind the proxy")?;
    let kubectl = |args: &[&str]| -> Result<Command> {
        let mut c = Command::new(kubectl_bin()?);
        c.args(["--kubeconfig", &kc_arg])
            .args(args)
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("HTTPS_PROXY", &proxy)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("SHOAL_NO_BROWSER", "1")
            .stdin(Stdio::null());
        Ok(c)
    };

    // First use: the plugin prints the sign-in URL and waits for the redirect.
    let mut first = kubectl(&["get", "pods", "-n", "kube-system", "-o", "name"])?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = first.stderr.take().context("stderr is piped")?;
    let issuer = provider.issuer().to_owned();
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.trim().starts_with(&issuer) {
                let _ = url_tx.send(line.trim().to_owned());
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    let url = match url_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(url) => url,
        Err(_) => {
            let _ = first.kill();
            let _ = first.wait();
            bail!(
                "the credential plugin printed no sign-in URL for {}; kubectl's stderr:\n{}",
                provider.issuer(),
                reader.join().unwrap_or_default()
            );
        }
    };
    provider
        .complete_browser_login(&url, "alice", "alice-pw")
        .await?;
    let status = first.wait()?;
    let first_err = reader.join().unwrap_or_default();
    // The sign-in file, beside its lock file.
    let cached = std::fs::read_dir(home.join(".cache/shoal/oidc"))
        .with_context(|| format!("no cached sign-in; kubectl said:\n{first_err}"))?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".lock"))
        .count();
    ensure!(cached == 1, "{cached} cached sign-ins");

    // The API server loads the issuer's keys in the background after it starts:
    // retry (the cached token, no new sign-in) until it answers.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut refusals = 0;
    loop {
        let out = kubectl(&["get", "pods", "-n", "kube-system", "-o", "name"])?.output()?;
        if out.status.success() {
            let pods = String::from_utf8_lossy(&out.stdout).into_owned();
            ensure!(pods.contains("pod/kube-apiserver-"), "{pods}");
            break;
        }
        let last = text(&out);
        ensure!(
            !last.contains("To sign in"),
            "kubectl asked to sign in again: {last}"
        );
        refusals += 1;
        if Instant::now() > deadline {
            bail!(
                "alice's OIDC token was not accepted within 300 s: {last}\n(the first kubectl: {status}: {first_err})"
            );
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    println!("OIDC: answers refused before the API server accepted the token: {refusals}");

    // Authorized to view only; the guest names the user from the email claim.
    let out = kubectl(&["create", "namespace", "alice-was-here"])?.output()?;
    let said = text(&out);
    ensure!(
        !out.status.success() && said.contains("forbidden"),
        "alice may create namespaces: {said}"
    );
    ensure!(
        said.contains("alice@example.com"),
        "the guest does not name alice by her email: {said}"
    );
    Ok(())
}

/// From `pod`, the `web` Service answers with one of `backends` at its ClusterIP
/// (kube-proxy's rules). Its name through CoreDNS is checked by the
/// `kubernetes_boot` bench, not here: kubeadm schedules both CoreDNS replicas on
/// the control plane, whose kube-proxy took over 10 minutes under TCG to write the
/// rules CoreDNS needs to reach the API server.
fn service_inside_the_guest(kc: &Path, pod: &str, backends: &[&str]) -> Result<()> {
    let cluster_ip = kubectl_until_ok(
        kc,
        &["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"],
        Duration::from_secs(120),
    )?;
    let cluster_ip = cluster_ip.trim();
    // The cluster's service CIDR is 10.96.0.0/12: 10.96.0.0 to 10.111.255.255.
    let ip: std::net::Ipv4Addr = cluster_ip
        .parse()
        .with_context(|| format!("ClusterIP {cluster_ip:?}"))?;
    ensure!(
        u32::from(ip) & 0xfff0_0000 == u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)),
        "ClusterIP {cluster_ip} outside the service CIDR 10.96.0.0/12"
    );
    let fetch = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {cluster_ip} 80");
    let answer = kubectl_until_ok(
        kc,
        &["exec", pod, "--", "sh", "-c", &fetch],
        Duration::from_secs(600),
    )?;
    let got = answer.lines().last().unwrap_or_default().trim().to_owned();
    ensure!(
        backends.contains(&got.as_str()),
        "{cluster_ip}:80 answered {got:?}, no web pod"
    );

    Ok(())
}

/// Every node runs containerd and holds only the image's preloaded images
/// (`shoal.local/k8s/…`), and no Event reports a pull.
fn nothing_pulled(kc: &Path) -> Result<()> {
    let nodes: serde_json::Value = serde_json::from_str(&kubectl_until_ok(
        kc,
        &["get", "nodes", "-o", "json"],
        Duration::from_secs(120),
    )?)?;
    for node in nodes["items"].as_array().context("no nodes")? {
        let name = node["metadata"]["name"].as_str().unwrap_or_default();
        let runtime = node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap_or_default();
        ensure!(
            runtime.starts_with("containerd://"),
            "{name} runs {runtime:?}"
        );
        let images = node["status"]["images"].as_array().context("no images")?;
        ensure!(!images.is_empty(), "{name} reports no images");
        for n in images
            .iter()
            .flat_map(|i| i["names"].as_array().into_iter().flatten())
        {
            let n = n.as_str().unwrap_or_default();
            ensure!(
                n.starts_with("shoal.local/k8s/"),
                "{name} has image {n}, not one of the node image's"
            );
        }
    }
    let events: serde_json::Value = serde_json::from_str(&kubectl_until_ok(
        kc,
        &["get", "events", "-A", "-o", "json"],
        Duration::from_secs(120),
    )?)?;
    for e in events["items"].as_array().into_iter().flatten() {
        let reason = e["reason"].as_str().unwrap_or_default();
        let message = e["message"].as_str().unwrap_or_default();
        // An image already on the node is reported as "Pulled" with "already
        // present on machine".
        let pulled = reason == "Pulled" && !message.contains("already present");
        ensure!(
            !pulled && !matches!(reason, "Pulling" | "ErrImagePull" | "ErrImageNeverPull"),
            "event {reason}: {message}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_cluster_through_the_gateway() -> Result<()> {
    kubectl_bin().context("Debian's kubectl (scripts/setup.sh installs it)")?;
    let image = NodeImage::find()?;
    let release = format!(
        "kubeadm-{}",
        image
            .kubernetes_version
            .trim_start_matches('v')
            .replace('.', "-")
    );
    let hosts = Underlay::pair(&format!("sk{}h", std::process::id()))?;
    // An OIDC provider beyond the hosts, which the guests reach through the
    // agents' egress and the test through a CONNECT proxy, at the same URL.
    let egress = Egress::new(&hosts, &format!("sk{}", std::process::id()))?;
    let provider = OidcProvider::start(ProviderOptions {
        tls: true,
        netns: Some((egress.name.clone(), Egress::SERVICE)),
        ..ProviderOptions::default()
    })
    .await?;
    let issuer_ca = provider
        .ca_file()
        .context("the provider serves https")?
        .display()
        .to_string();
    let (tls_port, http_port) = (free_port()?, free_port()?);
    let gateway = format!("127.0.0.1:{tls_port}");
    let http_listen = format!("127.0.0.1:{http_port}");
    let image_dir = image.dir.display().to_string();
    let server = ServerProc::start_with(&[
        "--kubernetes-image-dir",
        &image_dir,
        "--gateway-listen",
        &gateway,
        "--gateway-http-listen",
        &http_listen,
        "--host-grace-period",
        "5",
    ])?;
    let client = server.client().await?;
    server.shoal_ok(&["org", "create", ORG])?;
    let dir = tempfile::tempdir()?;
    let mut agents = start_agent_pair_with(
        &server.kubeconfig(),
        &client,
        &hosts,
        dir.path(),
        &["--egress-interface", Egress::INTERFACE],
    )
    .await?;

    // Create and wait: the CLI returns when the guest says every Node is Ready.
    let started = Instant::now();
    let created = server.shoal(
        ClusterArgs::new(CLUSTER, ORG)
            .release(&release)
            .workers("2")
            .size("2", "2Gi", "10Gi")
            .wait("1800")
            .set("--oidc-issuer-url", provider.issuer())
            .set("--oidc-client-id", OidcProvider::CLIENT_ID)
            .set("--oidc-username-claim", "email")
            .set("--oidc-groups-claim", "groups")
            .set("--oidc-groups-prefix", "oidc:")
            .set("--oidc-ca-file", &issuer_ca)
            .args(),
    )?;
    let create_secs = started.elapsed().as_secs_f64();
    if !created.status.success() {
        let cluster: Cluster = Api::namespaced(client.clone(), NS).get(CLUSTER).await?;
        bail!(
            "cluster create --wait failed after {create_secs:.0} s: {}\nstatus: {:?}\nmachines: {:?}\nagent h1:\n{}\nagent h2:\n{}",
            text(&created),
            cluster.status,
            machines(&client).await?.iter().map(|m| (m.name_any(), m.status.clone())).collect::<Vec<_>>(),
            agents[0].log_text(),
            agents[1].log_text(),
        );
    }
    println!("P1k: create --wait until 3 Ready Nodes: {create_secs:.0} s");

    // Every Machine carries its Node's readiness.
    let ms = machines(&client).await?;
    assert_eq!(ms.len(), 3, "{ms:?}");
    for m in &ms {
        let cond = m
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "NodeReady"))
            .with_context(|| format!("machine {} has no NodeReady condition", m.name_any()))?;
        assert_eq!(cond.status, "True", "{}: {cond:?}", m.name_any());
    }
    // Every node's exporter (Debian's prometheus-node-exporter in the image) is
    // scraped through its host's agent, as Prometheus does (issue 17).
    for m in &ms {
        let host_name = m
            .spec
            .host_name
            .clone()
            .context("a Machine without a host")?;
        let host: shoal_api::Host = Api::all(client.clone()).get(&host_name).await?;
        let endpoint = host
            .status
            .and_then(|s| s.metrics_endpoint)
            .with_context(|| format!("Host {host_name} has no status.metricsEndpoint"))?;
        let path = format!("/guests/{NS}/{}/metrics", m.name_any());
        // The exporter is slow under TCG: a 30 s scrape timeout, as a Prometheus
        // job for emulated guests would set, retried as Prometheus would scrape
        // again (a loaded two-core machine took over 30 s twice in a row).
        let started = Instant::now();
        let mut answer = AgentProc::metrics_get_within(&endpoint, &path, Some(30))?;
        for _ in 0..3 {
            if answer.0 == 200 {
                break;
            }
            answer = AgentProc::metrics_get_within(&endpoint, &path, Some(30))?;
        }
        let (code, body) = answer;
        assert_eq!(code, 200, "{path} on {host_name}: {body}");
        println!(
            "node exporter of {} through the agent of {host_name}: {:.1?}, {} KiB",
            m.name_any(),
            started.elapsed(),
            body.len() / 1024
        );
        for series in ["node_exporter_build_info", "node_cpu_seconds_total"] {
            assert!(body.contains(series), "{path} has no {series}: {body:.500}");
        }
    }
    let workers: Vec<&Machine> = ms
        .iter()
        .filter(|m| m.spec.role == MachineRole::Worker)
        .collect();
    let worker_hosts: std::collections::BTreeSet<_> = workers
        .iter()
        .filter_map(|m| m.spec.host_name.clone())
        .collect();
    assert_eq!(
        worker_hosts.len(),
        2,
        "the workers spread over both hosts: {worker_hosts:?}"
    );

    // A kubeconfig through the gateway, for the cluster's administrators.
    let kc = dir.path().join("kc.yaml");
    server.shoal_ok(&[
        "kubeconfig",
        "create",
        "--cluster",
        CLUSTER,
        "--org",
        ORG,
        "--groups",
        "kubeadm:cluster-admins",
        "--ttl",
        "2h",
        "--gateway-address",
        &gateway,
        "--output",
        &kc.display().to_string(),
    ])?;
    let listed = nodes(&kc)?;
    assert_eq!(listed.len(), 3, "{listed:?}");
    for (name, ready, version) in &listed {
        assert!(*ready, "node {name} is not Ready: {listed:?}");
        assert_eq!(version, &image.kubernetes_version, "node {name}");
        assert!(
            ms.iter().any(|m| &m.name_any() == name),
            "node {name} is no Machine's"
        );
    }

    let started = Instant::now();
    oidc_user_through_the_gateway(&server, &provider, &gateway, &kc, dir.path()).await?;
    println!(
        "OIDC: first kubectl sign-in through the plugin to an authorized answer: {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // A Deployment of the preloaded busybox, one pod per worker, serving its pod name.
    let web = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
                    ]}},
                    "containers": [{
                        "name": "web",
                        "image": image.busybox,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c",
                            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
                        "ports": [{"containerPort": 8080}],
                    }],
                },
            },
        },
    });
    create(&kc, dir.path(), "web", &web)?;
    let pods = running_pods(&kc, "web", 2)?;
    let (a, b) = (&pods[0], &pods[1]);
    assert_ne!(a.1, b.1, "the pods share node {}: {pods:?}", a.1);
    let a_host = workers
        .iter()
        .find(|m| m.name_any() == a.1)
        .and_then(|m| m.spec.host_name.clone());
    let b_host = workers
        .iter()
        .find(|m| m.name_any() == b.1)
        .and_then(|m| m.spec.host_name.clone());
    assert_ne!(a_host, b_host, "the pods' workers share a host: {pods:?}");
    // Pod to pod across hosts: the cluster's VXLAN between hosts, flannel's inside it.
    // busybox's nc, not its wget: the static wget crashes resolving without NSS.
    let fetch = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {} 8080", b.2);
    let answer = kubectl_until_ok(
        &kc,
        &["exec", &a.0, "--", "sh", "-c", &fetch],
        Duration::from_secs(120),
    )?;
    let got = answer.lines().last().unwrap_or_default().to_owned();
    assert_eq!(
        got.trim(),
        b.0,
        "pod {} answered for pod {}",
        got.trim(),
        b.0
    );

    // A NodePort on the ingress port, reached through the gateway by Host.
    let svc = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]},
    });
    create(&kc, dir.path(), "web-svc", &svc)?;
    let host = format!("shop.{CLUSTER}.{ORG}.shoal.local");
    // The workers' kube-proxy writes the NodePort's rules; under TCG on a loaded
    // two-core machine that took more than 120 s (2026-12-07).
    let deadline = Instant::now() + Duration::from_secs(600);
    let names: Vec<&str> = pods.iter().map(|p| p.0.as_str()).collect();
    loop {
        match http_get(http_port, &host) {
            Ok((status, body)) if status.contains(" 200 ") && names.contains(&body.as_str()) => {
                break
            }
            other => {
                if Instant::now() > deadline {
                    bail!("ingress by Host {host} did not reach a web pod in 600 s: {other:?}");
                }
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }

    // Inside the guest, the Service by its ClusterIP (kube-proxy), from a pod.
    service_inside_the_guest(&kc, &a.0, &names)?;
    // The nodes run the image's containerd and never pulled an image: the lab has
    // no registry, and the kubelet would report a pull in an Event.
    nothing_pulled(&kc)?;

    // Scaling: a join and a drain, about 10 more minutes under TCG on two cores.
    // Scale-up passed here three times; the drain twice, and once it ran into its
    // timeout with the evicted pod still terminating. The README's test command
    // leaves these steps out for time; SHOAL_K8S_SCALE=1 runs them.
    if std::env::var_os("SHOAL_K8S_SCALE").is_some() {
        // Scale up: a third worker joins and its Node turns Ready.
        let scaling = Instant::now();
        server.shoal_ok(&[
            "cluster",
            "scale",
            CLUSTER,
            "--org",
            ORG,
            "--workers",
            "3",
            "--wait",
        ])?;
        // The pool counts phoned-home Machines; the Node turns Ready a moment later.
        let deadline = Instant::now() + Duration::from_secs(600);
        let listed = loop {
            let listed = nodes(&kc)?;
            if listed.len() == 4 && listed.iter().all(|n| n.1) {
                break listed;
            }
            if Instant::now() > deadline {
                bail!("no 4 Ready nodes 600 s after scale-up: {listed:?}");
            }
            std::thread::sleep(Duration::from_secs(3));
        };
        println!(
            "scale-up of one worker to a Ready Node: {:.0} s",
            scaling.elapsed().as_secs_f64()
        );
        let known: Vec<String> = ms.iter().map(|m| m.name_any()).collect();
        let new_node = listed
            .iter()
            .map(|n| n.0.clone())
            .find(|n| !known.contains(n))
            .context("the new worker's node")?;

        // A pod that prefers the new node moves when scale-down drains it.
        let mover = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "mover", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "mover"}},
                "template": {
                    "metadata": {"labels": {"app": "mover"}},
                    "spec": {
                        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                            {"weight": 100, "preference": {"matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [new_node]}]}}
                        ]}},
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "mover", "image": image.busybox,
                            "imagePullPolicy": "Never", "command": ["sleep", "100000"]}],
                    },
                },
            },
        });
        create(&kc, dir.path(), "mover", &mover)?;
        let before = running_pods(&kc, "mover", 1)?;
        assert_eq!(
            before[0].1, new_node,
            "the mover did not start on {new_node}: {before:?}"
        );
        let scaling = Instant::now();
        server.shoal_ok(&[
            "cluster",
            "scale",
            CLUSTER,
            "--org",
            ORG,
            "--workers",
            "2",
            "--wait",
        ])?;
        println!(
            "scale-down with drain: {:.0} s",
            scaling.elapsed().as_secs_f64()
        );
        let listed = nodes(&kc)?;
        assert_eq!(
            listed.len(),
            3,
            "the drained node is deleted from the guest: {listed:?}"
        );
        assert!(!listed.iter().any(|n| n.0 == new_node), "{listed:?}");
        let events = server.kubectl_ok(&["get", "events", "-n", NS, "-o", "json"])?;
        assert!(
            events.contains("\"Drained\"") && events.contains(&new_node),
            "a Drained event for {new_node}: {events}"
        );
        let after = running_pods(&kc, "mover", 1)?;
        assert_ne!(after[0].1, new_node, "{after:?}");
        assert_ne!(
            after[0].0, before[0].0,
            "the pod was evicted and replaced: {after:?}"
        );
    }

    // Host loss: a replacement is one more join, about six minutes under TCG on two
    // cores, so the README's test command leaves it out; SHOAL_K8S_HOST_LOSS=1 runs it.
    if std::env::var_os("SHOAL_K8S_HOST_LOSS").is_some() {
        // Host loss: the host without the control plane dies with its VMs. Its
        // worker's Node leaves the guest and a replacement joins on the other host.
        let now = machines(&client).await?;
        let cp_host = now
            .iter()
            .find(|m| m.spec.role == MachineRole::ControlPlane)
            .and_then(|m| m.spec.host_name.clone())
            .context("the control plane's host")?;
        let lost_index = usize::from(cp_host == "h1");
        let lost_host = format!("h{}", lost_index + 1);
        let lost: Vec<String> = now
            .iter()
            .filter(|m| m.spec.host_name.as_deref() == Some(lost_host.as_str()))
            .map(|m| m.name_any())
            .collect();
        assert!(!lost.is_empty(), "{lost_host} runs a worker: {now:?}");
        let losing = Instant::now();
        agents[lost_index].kill9()?;
        assert!(agents[lost_index].kill_vms() > 0, "{lost_host} ran VMs");
        let deadline = Instant::now() + Duration::from_secs(1200);
        let listed = loop {
            let listed = nodes(&kc)?;
            if listed.len() == 3
                && listed.iter().all(|n| n.1)
                && !listed.iter().any(|n| lost.contains(&n.0))
            {
                break listed;
            }
            if Instant::now() > deadline {
                bail!("after losing {lost_host} ({lost:?}), no 3 Ready nodes: {listed:?}");
            }
            std::thread::sleep(Duration::from_secs(5));
        };
        println!(
            "host loss until its worker's replacement is a Ready Node: {:.0} s",
            losing.elapsed().as_secs_f64()
        );
        let after = machines(&client).await?;
        assert!(
            after
                .iter()
                .all(|m| m.spec.host_name.as_deref() == Some(cp_host.as_str())),
            "everything runs on {cp_host}: {listed:?}"
        );
        // The lost host comes back and clears what its dead VMs left.
        agents[lost_index].restart()?;
    }

    // Delete: nothing is left.
    let pids: Vec<u32> = agents
        .iter()
        .flat_map(|a| a.live_vms())
        .map(|(_, p)| p)
        .collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
    let deleting = Instant::now();
    server.shoal_ok(&["cluster", "delete", CLUSTER, "--org", ORG, "--wait"])?;
    println!("delete --wait: {:.0} s", deleting.elapsed().as_secs_f64());
    assert!(machines(&client).await?.is_empty());
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
    assert!(clusters.get_opt(CLUSTER).await?.is_none());
    tokio::time::sleep(Duration::from_secs(1)).await;
    for pid in pids {
        assert!(
            !shoal_e2e::hosts::alive(pid),
            "QEMU {pid} survived its cluster"
        );
    }
    for (i, ns) in hosts.names.iter().enumerate() {
        let left: Vec<String> = links(ns)?
            .into_iter()
            .filter(|l| l.starts_with("sh"))
            .collect();
        assert!(left.is_empty(), "host {i} keeps links {left:?}");
        let tables: Vec<String> = nft_tables(ns)?
            .into_iter()
            .filter(|t| t.ends_with(" shoal"))
            .collect();
        assert!(tables.is_empty(), "host {i} keeps nft tables {tables:?}");
    }
    Ok(())
}
