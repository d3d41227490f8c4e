//! Host drain by live migration, end to end: two hosts (network namespaces joined by
//! a veth underlay) with `shoal agent`, a cluster with a VM of the test image on
//! each. `shoal host drain h1` moves h1's VM, the cluster's control plane, to h2
//! while the VM on h2 pings it every 50 ms and holds a TCP connection to it: the
//! Machine keeps its name, IP and MAC, the guest does not reboot (its boot id
//! stays), the connection carries on, the server's gateway routes the cluster's API
//! (the guest's API server stand-in) to it on h2 as it did on h1, and h1 is left
//! with no QEMU or link of the cluster. A migration whose target host dies midway
//! (its agent and its waiting QEMU killed) leaves the guest running on the source,
//! and the Machine and the drain say why; `--replace` then empties the host. The
//! server runs only the drain controller
//! (`--controllers=hostdrain`): Machines are pinned to hosts by hand. Needs root, QEMU, nftables and the test
//! image (scripts/setup.sh); it fails loudly without.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use shoal_api::{Cluster, Host, Machine, MachinePhase, MigrationState};
use shoal_bootstrap::{render_test_image, BootstrapFile, NodeBootstrap, Role};
use shoal_e2e::fleet::{create as apply, machine, setup, wait_phase, NS};
use shoal_e2e::hosts::{
    alive, figure, guest, guest_within, links, nft_tables, start_agent_pair, start_agent_pair_with,
    AgentProc, Underlay,
};
use shoal_e2e::{free_ports, shoal_bin, ServerProc};
use shoal_pki::{ClusterPki, ClusterPkiParams, OffsetDateTime, PkiFile};

const MOVING: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 11);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 12);
/// The ping series: 50 ms apart for 20 s.
const PINGS: u32 = 400;

async fn eventually(ns: &str, vm: Ipv4Addr, command: &str, want: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = guest(ns, vm, command).unwrap_or_else(|e| format!("{e:#}"));
        if got == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{vm} answered {command:?} with {got:?}, not {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Cluster a's API name: the gateway routes it by SNI to a's control planes.
const API_HOST: &str = "api.a.e2e.shoal.local";

/// With only the drain controller running, what the cluster controller would do for a control plane of
/// cluster a: its PKI (the CA published in the Cluster's status, for the gateway's
/// health checks) and the test image's user-data in a bootstrap Secret. Returns
/// Machine `name` on `host` as a control plane with that Secret, and the CA (PEM).
async fn control_plane(
    client: &Client,
    name: &str,
    host: &str,
    ip: Ipv4Addr,
) -> Result<(serde_json::Value, String)> {
    let pki = ClusterPki::generate(
        &ClusterPkiParams {
            cluster: "a".into(),
            org: "e2e".into(),
            base_domain: "shoal.local".into(),
            dns_domain: "cluster.local".into(),
            api_service_ip: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
            control_plane: vec![(name.into(), IpAddr::V4(ip))],
            ca_ttl: Duration::from_secs(86_400),
            leaf_ttl: Duration::from_secs(86_400),
        },
        OffsetDateTime::now_utc(),
    )?;
    let ca = pki.file(PkiFile::CaCert).to_owned();
    let user_data = render_test_image(&NodeBootstrap {
        cluster: "a".into(),
        org: "e2e".into(),
        base_domain: "shoal.local".into(),
        hostname: name.into(),
        role: Role::ControlPlaneInit,
        kubernetes_version: "1.31.2".into(),
        control_plane_endpoint: format!("{API_HOST}:6443"),
        endpoint_address: None,
        advertise_address: ip.to_string(),
        pod_cidr: "10.244.0.0/16".into(),
        pod_network: shoal_bootstrap::PodNetwork::Flannel,
        service_cidr: "10.96.0.0/12".into(),
        dns_domain: "cluster.local".into(),
        files: [
            PkiFile::CaCert,
            PkiFile::ApiServerCert,
            PkiFile::ApiServerKey,
        ]
        .iter()
        .map(|f| BootstrapFile::new(format!("/etc/shoal/pki/{}", f.kubeadm_path()), pki.file(*f)))
        .collect(),
        bootstrap_token: "abcdef.0123456789abcdef".into(),
        ca_cert_hash: shoal_pki::ca_cert_hash(&ca)?,
        certificate_key: None,
        oidc: None,
        phone_home_url: None,
    })?;
    let secret = format!("{name}-bootstrap");
    let mut s = Secret::default();
    s.metadata.name = Some(secret.clone());
    s.data = Some([("value".to_owned(), ByteString(user_data.into_bytes()))].into());
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &s)
        .await?;
    Api::<Cluster>::namespaced(client.clone(), NS)
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"caCertificate": ca}})),
        )
        .await?;
    let mut m = machine(name, "a", host, ip, "1", "test");
    m["spec"]["role"] = "control-plane".into();
    m["spec"]["bootstrap"] = serde_json::json!({ "dataSecretName": secret });
    Ok((m, ca))
}

/// Cluster a's API `/version` through the gateway at `gateway`, by its name, trusting
/// only the cluster CA; retried for up to `wait`.
async fn api_version(gateway: SocketAddr, ca: &str, wait: Duration) -> Result<serde_json::Value> {
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
        .resolve(API_HOST, gateway)
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("https://{API_HOST}:{}/version", gateway.port());
    let deadline = Instant::now() + wait;
    loop {
        let got = async {
            let r = http.get(&url).send().await?.error_for_status()?;
            anyhow::Ok(r.json::<serde_json::Value>().await?)
        }
        .await;
        match got {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{url} through the gateway after {wait:?}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The hosts of cluster a's API backends, as the gateway's endpoints API lists them.
async fn api_backend_hosts(client: &Client) -> Result<Vec<String>> {
    let req = http::Request::get(format!(
        "/apis/shoal.io/v1alpha1/namespaces/{NS}/clusters/a/endpoints"
    ))
    .body(Vec::new())?;
    let ep: serde_json::Value = serde_json::from_str(&client.request_text(req).await?)?;
    Ok(ep["api"]
        .as_array()
        .with_context(|| format!("no API backends: {ep}"))?
        .iter()
        .map(|b| b["host"].as_str().unwrap_or_default().to_owned())
        .collect())
}

/// One test at a time: each boots two VMs under TCG.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn drain_live_migrates_a_running_vm_keeping_its_address_and_its_boot() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let hosts = Underlay::pair(&format!("sm{}h", std::process::id()))?;
    let (ns1, ns2) = (hosts.names[0].clone(), hosts.names[1].clone());
    // Distinct ports for the API, the gateway's TLS and its HTTP listener.
    let ports = free_ports(3)?;
    let gateway = SocketAddr::from((Ipv4Addr::LOCALHOST, ports[1]));
    let data = tempfile::tempdir()?;
    let server = ServerProc::start_at(
        &data.path().join("data"),
        ports[0],
        &[
            "--controllers=hostdrain",
            "--gateway-listen",
            &gateway.to_string(),
            "--gateway-http-listen",
            &format!("127.0.0.1:{}", ports[2]),
        ],
    )?;
    let client = server.client().await?;
    setup(&client, &[("a", 101, "10.101.0.0/24")]).await?;
    let dir = tempfile::tempdir()?;
    let agents = start_agent_pair(&server.kubeconfig(), &client, &hosts, dir.path()).await?;
    let machines: Api<Machine> = Api::namespaced(client.clone(), NS);
    let (moving, ca) = control_plane(&client, "a-1", "h1", MOVING).await?;
    apply(&machines, moving).await?;
    apply(&machines, machine("a-2", "a", "h2", PEER, "1", "test")).await?;
    for name in ["a-1", "a-2"] {
        wait_phase(
            &machines,
            name,
            MachinePhase::Ready,
            Duration::from_secs(240),
        )
        .await?;
    }
    let before = machines.get("a-1").await?;
    eventually(&ns2, PEER, &format!("ping {MOVING}"), "ok").await?;
    let boot_before = guest(&ns1, MOVING, BOOT_ID)?;
    ensure!(!boot_before.starts_with("error"), "{boot_before}");
    ensure!(
        agents[0].qemu_pids().iter().any(|(n, _)| n == "a-1"),
        "a-1 has no QEMU on h1: {:?}",
        agents[0].qemu_pids()
    );
    // The gateway routes the cluster's API to its control plane on h1.
    let version = api_version(gateway, &ca, Duration::from_secs(60)).await?;
    ensure!(version["gitVersion"] == "v1.31.2", "{version}");
    let routed = api_backend_hosts(&client).await?;
    ensure!(routed == ["h1"], "the API's backends are on {routed:?}");

    // The peer pings the moving VM through the move.
    let pinger = {
        let ns2 = ns2.clone();
        std::thread::spawn(move || {
            guest_within(
                &ns2,
                PEER,
                &format!("pings {MOVING} {PINGS} 50"),
                Duration::from_secs(60),
            )
        })
    };
    // ... and holds a TCP connection to it, a line out and back every 50 ms.
    let echoer = {
        let ns2 = ns2.clone();
        std::thread::spawn(move || {
            guest_within(
                &ns2,
                PEER,
                &format!("echoes {MOVING} {PINGS} 50"),
                Duration::from_secs(90),
            )
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    let out = server.shoal_ok(&["host", "drain", "h1", "--wait", "--timeout", "180"])?;
    let drain_time = started.elapsed();
    ensure!(out.contains("host h1 drained"), "{out}");
    // The cluster's API answers through the gateway again soon after the move.
    let version = api_version(gateway, &ca, Duration::from_secs(30)).await?;
    let api_back = started.elapsed() - drain_time;
    ensure!(version["gitVersion"] == "v1.31.2", "{version}");
    let pings = pinger
        .join()
        .map_err(|_| anyhow::anyhow!("the pinger panicked"))??;
    let echoes = echoer
        .join()
        .map_err(|_| anyhow::anyhow!("the echoer panicked"))??;

    let after = wait_phase(
        &machines,
        "a-1",
        MachinePhase::Ready,
        Duration::from_secs(60),
    )
    .await?;
    ensure!(
        after.spec.host_name.as_deref() == Some("h2"),
        "a-1 runs on {:?}",
        after.spec.host_name
    );
    ensure!(after.spec.migration.is_none(), "{:?}", after.spec.migration);
    ensure!(
        (after.spec.mac.as_deref(), after.spec.ip.as_deref())
            == (before.spec.mac.as_deref(), before.spec.ip.as_deref()),
        "the address changed: {:?} {:?}",
        after.spec.mac,
        after.spec.ip
    );
    let st = after
        .status
        .as_ref()
        .and_then(|s| s.migration.clone())
        .context("no status.migration")?;
    ensure!(st.state == MigrationState::Completed, "{st:?}");
    ensure!(
        (st.source_host.as_str(), st.target_host.as_str()) == ("h1", "h2"),
        "{st:?}"
    );
    let downtime = st.downtime_ms.context("no downtime reported")?;
    let migrated = after
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Migrated"))
        .context("no Migrated condition")?;
    ensure!(migrated.status == "True", "{migrated:?}");
    // An Event records QEMU's downtime, and the Host says it is drained.
    let events = server.kubectl_ok(&["get", "events", "-n", NS, "-o", "json"])?;
    ensure!(
        events.contains("Migrated") && events.contains(&format!("downtime {downtime} ms")),
        "no Migrated event with the downtime: {events}"
    );
    let h1: Host = Api::<Host>::all(client.clone()).get("h1").await?;
    let drained = h1
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Drained"))
        .context("h1 has no Drained condition")?;
    ensure!(drained.status == "True", "{drained:?}");

    // The same guest, not a new boot, answers at the same address, now on h2.
    let boot_after = guest(&ns2, MOVING, BOOT_ID)?;
    ensure!(
        boot_after == boot_before,
        "the guest rebooted: boot id {boot_before} before, {boot_after} after"
    );
    ensure!(
        agents[1].qemu_pids().iter().any(|(n, _)| n == "a-1"),
        "a-1 has no QEMU on h2: {:?}",
        agents[1].qemu_pids()
    );
    ensure!(
        agents[0].qemu_pids().is_empty(),
        "h1 still runs QEMUs: {:?}",
        agents[0].qemu_pids()
    );
    eventually(&ns2, PEER, &format!("ping {MOVING}"), "ok").await?;
    // The gateway routes the cluster's API to the moved control plane, through h2.
    let routed = api_backend_hosts(&client).await?;
    ensure!(routed == ["h2"], "the API's backends are on {routed:?}");
    let version = api_version(gateway, &ca, Duration::from_secs(10)).await?;
    ensure!(version["gitVersion"] == "v1.31.2", "{version}");

    let (sent, received, gap) = (
        figure(&pings, "sent")?,
        figure(&pings, "received")?,
        figure(&pings, "gap_ms")?,
    );
    println!(
        "migration: QEMU downtime {downtime} ms, total {:?} ms; drain {:.1} s; \
         pings every 50 ms: {sent} sent, {} lost, longest gap {gap} ms; \
         the API through the gateway answered {} ms after the drain",
        st.total_ms,
        drain_time.as_secs_f64(),
        sent - received,
        api_back.as_millis()
    );
    println!("migration: a TCP connection held through the move: {echoes}");
    ensure!(sent == u64::from(PINGS), "{pings}");
    ensure!(
        figure(&echoes, "echoed")? == u64::from(PINGS) && !echoes.contains("broken"),
        "the TCP connection to the moving VM did not survive the move: {echoes}"
    );
    // Under TCG on a loaded two-core machine; the benchmark reports the figure.
    ensure!(
        gap < 5_000,
        "the moving VM did not answer pings for {gap} ms: {pings}"
    );

    // h1 keeps nothing of the cluster.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut left: Vec<String> = links(&ns1)?
            .into_iter()
            .filter(|l| l.starts_with("shb") || l.starts_with("shv") || l.starts_with("sht"))
            .collect();
        left.extend(
            nft_tables(&ns1)?
                .into_iter()
                .filter(|t| t.ends_with(" shoal")),
        );
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("h1 still has links or nft tables of the cluster: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(agents);
    Ok(())
}

/// The guest's boot id: the same before and after a move means no reboot.
const BOOT_ID: &str = "cat /proc/sys/kernel/random/boot_id";

/// Two hosts whose agents send at most `mib_per_sec`, a server running only the
/// drain controller, and a Ready VM `a-1` of cluster a on h1. Fields drop in order:
/// the agents before the server, the namespaces last.
struct OneVm {
    agents: [AgentProc; 2],
    server: ServerProc,
    client: Client,
    machines: Api<Machine>,
    /// `a-1`'s boot id on h1.
    boot_before: String,
    _dir: tempfile::TempDir,
    hosts: Underlay,
}

impl OneVm {
    async fn start(prefix: &str, mib_per_sec: &str) -> Result<Self> {
        let hosts = Underlay::pair(&format!("{prefix}{}h", std::process::id()))?;
        let server = ServerProc::start_with(&["--controllers=hostdrain"])?;
        let client = server.client().await?;
        setup(&client, &[("a", 101, "10.101.0.0/24")]).await?;
        let dir = tempfile::tempdir()?;
        let agents = start_agent_pair_with(
            &server.kubeconfig(),
            &client,
            &hosts,
            dir.path(),
            &["--migration-max-mib-per-sec", mib_per_sec],
        )
        .await?;
        let machines: Api<Machine> = Api::namespaced(client.clone(), NS);
        apply(&machines, machine("a-1", "a", "h1", MOVING, "1", "test")).await?;
        wait_phase(
            &machines,
            "a-1",
            MachinePhase::Ready,
            Duration::from_secs(240),
        )
        .await?;
        let boot_before = guest(&hosts.names[0], MOVING, BOOT_ID)?;
        ensure!(!boot_before.starts_with("error"), "{boot_before}");
        Ok(Self {
            agents,
            server,
            client,
            machines,
            boot_before,
            _dir: dir,
            hosts,
        })
    }
}

/// `shoal host drain h1 --wait --timeout <timeout_s>` against `server`, in a thread.
fn drain_in_background(
    server: &ServerProc,
    timeout_s: u32,
) -> Result<std::thread::JoinHandle<std::io::Result<std::process::Output>>> {
    let kubeconfig = server.kubeconfig();
    let bin = shoal_bin()?;
    let timeout = timeout_s.to_string();
    Ok(std::thread::spawn(move || {
        std::process::Command::new(bin)
            .args(["--kubeconfig"])
            .arg(kubeconfig)
            .args(["host", "drain", "h1", "--wait", "--timeout", &timeout])
            .output()
    }))
}

/// Joins a drain thread: whether it succeeded, and all it printed.
fn joined(
    drain: std::thread::JoinHandle<std::io::Result<std::process::Output>>,
) -> Result<(bool, String)> {
    let out = drain
        .join()
        .map_err(|_| anyhow::anyhow!("the drain thread panicked"))??;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), said))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_dies_midway_leaves_the_guest_running_on_the_source() -> Result<()> {
    let _serial = SERIAL.lock().await;
    // Slow enough (1 MiB/s) that the move is still under way when h2 dies.
    let lab = OneVm::start("sf", "1").await?;
    let OneVm {
        mut agents,
        server,
        client,
        machines,
        boot_before,
        hosts,
        ..
    } = lab;
    let ns1 = hosts.names[0].clone();
    let drain = drain_in_background(&server, 180)?;
    // Once h2's QEMU waits and the source has started sending, h2 dies.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = machines.get("a-1").await?;
        let waiting = m
            .status
            .as_ref()
            .and_then(|s| s.migration.as_ref())
            .is_some_and(|st| st.incoming.is_some() && st.state == MigrationState::Transferring);
        if waiting {
            break;
        }
        if Instant::now() > deadline {
            bail!("h2 never waited for a-1: {:?}", m.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    agents[1].kill9()?;
    ensure!(
        agents[1].kill_vm("a-1"),
        "no waiting QEMU of a-1 on h2 to kill"
    );

    let (succeeded, said) = joined(drain)?;
    ensure!(!succeeded, "the drain succeeded: {said}");
    ensure!(
        said.contains("blocked")
            && said.contains("did not move to h2")
            && said.contains("MigrationFailed"),
        "{said}"
    );

    let m = wait_phase(
        &machines,
        "a-1",
        MachinePhase::Ready,
        Duration::from_secs(60),
    )
    .await?;
    ensure!(
        m.spec.host_name.as_deref() == Some("h1"),
        "{:?}",
        m.spec.host_name
    );
    ensure!(m.spec.migration.is_none(), "{:?}", m.spec.migration);
    let st = m
        .status
        .as_ref()
        .and_then(|s| s.migration.clone())
        .context("no status.migration")?;
    ensure!(st.state == MigrationState::Failed, "{st:?}");
    let message = st.message.clone().unwrap_or_default();
    ensure!(message.starts_with("MigrationFailed: "), "{message}");
    let cond = m
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Migrated"))
        .context("no Migrated condition")?;
    ensure!(
        cond.status == "False"
            && cond.reason == "MigrationFailed"
            && cond.message.contains("still runs on h1"),
        "{cond:?}"
    );
    // The drain stopped and says what blocks it.
    let h1: Host = Api::<Host>::all(client.clone()).get("h1").await?;
    let drained = h1
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Drained"))
        .context("h1 has no Drained condition")?;
    ensure!(
        drained.reason == "DrainBlocked" && drained.message.contains("did not move to h2"),
        "{drained:?}"
    );
    println!("migration to a dead target: {message}");
    // The same guest runs on, on h1.
    let boot_after = guest(&ns1, MOVING, BOOT_ID)?;
    ensure!(boot_after == boot_before, "{boot_before} / {boot_after}");
    ensure!(
        agents[0].qemu_pids().iter().any(|(n, _)| n == "a-1"),
        "a-1 has no QEMU on h1"
    );

    // What the blocked drain suggests: replace the machine instead (with no cluster
    // controller running here, nothing recreates it).
    let out = server.shoal_ok(&[
        "host",
        "drain",
        "h1",
        "--replace",
        "--include-control-plane",
        "--wait",
        "--timeout",
        "120",
    ])?;
    ensure!(out.contains("host h1 drained"), "{out}");
    ensure!(
        machines.get_opt("a-1").await?.is_none(),
        "a-1 was not replaced"
    );
    ensure!(
        agents[0].qemu_pids().is_empty(),
        "h1 still runs {:?}",
        agents[0].qemu_pids()
    );
    drop(agents);
    Ok(())
}

/// The source's agent is killed with -9 while its QEMU sends the guest, and comes
/// back: QEMU carried on alone, and the restarted agent picks the move up where it
/// is (it neither sends the guest twice nor starts it again on h1), hands the
/// Machine over and the drain ends. The guest never rebooted.
#[tokio::test(flavor = "multi_thread")]
async fn a_source_agent_killed_midway_picks_the_move_up_when_it_returns() -> Result<()> {
    let _serial = SERIAL.lock().await;
    // Slow enough (4 MiB/s) that the agent dies in the middle of the send.
    let lab = OneVm::start("sk", "4").await?;
    let OneVm {
        mut agents,
        server,
        machines,
        boot_before,
        hosts,
        ..
    } = lab;
    let ns2 = hosts.names[1].clone();
    let qemu_before = agents[0]
        .qemu_pids()
        .into_iter()
        .find(|(n, _)| n == "a-1")
        .context("no QEMU of a-1 on h1")?;
    let drain = drain_in_background(&server, 240)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = machines.get("a-1").await?;
        // The source reports how far the send is while it runs.
        let sending = m
            .status
            .as_ref()
            .and_then(|s| s.migration.as_ref())
            .and_then(|st| st.progress.clone())
            .filter(|p| p.starts_with("RAM ") && p.contains("MiB sent"));
        if let Some(progress) = sending {
            println!("while sending: {progress}");
            break;
        }
        if Instant::now() > deadline {
            bail!("no progress reported for a-1: {:?}", m.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agents[0].kill9()?;
    let killed = Instant::now();
    ensure!(alive(qemu_before.1), "the source QEMU died with its agent");
    agents[0].restart()?;

    let (succeeded, said) = joined(drain)?;
    ensure!(succeeded, "the drain failed: {said}");
    ensure!(said.contains("host h1 drained"), "{said}");
    let m = wait_phase(
        &machines,
        "a-1",
        MachinePhase::Ready,
        Duration::from_secs(60),
    )
    .await?;
    ensure!(
        m.spec.host_name.as_deref() == Some("h2"),
        "{:?}",
        m.spec.host_name
    );
    let st = m
        .status
        .as_ref()
        .and_then(|s| s.migration.clone())
        .context("no status.migration")?;
    ensure!(st.state == MigrationState::Completed, "{st:?}");
    let boot_after = guest(&ns2, MOVING, BOOT_ID)?;
    ensure!(
        boot_after == boot_before,
        "the guest rebooted: {boot_before} / {boot_after}"
    );
    ensure!(
        agents[0].qemu_pids().is_empty() && !alive(qemu_before.1),
        "h1 still runs a QEMU: {:?}",
        agents[0].qemu_pids()
    );
    ensure!(
        agents[1].qemu_pids().iter().any(|(n, _)| n == "a-1"),
        "a-1 has no QEMU on h2"
    );
    // Both agent runs took the send up, and only the second saw it finish.
    let log = agents[0].log_text();
    let began = log.lines().filter(|l| l.contains("live-migrating")).count();
    let finished = log
        .lines()
        .filter(|l| l.contains("migrated") && l.contains("downtime_ms"))
        .count();
    ensure!(
        (began, finished) == (2, 1),
        "h1's agent log: {began} sends begun, {finished} finished:\n{log}"
    );
    println!(
        "source agent killed midway: the move finished {:.1} s after its restart",
        killed.elapsed().as_secs_f64()
    );
    drop(agents);
    Ok(())
}
