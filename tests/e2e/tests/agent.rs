//! The host agent end to end: two hosts (network namespaces joined by a veth
//! underlay), each running `shoal agent` against one `shoal server`, realize
//! Machines as real QEMU VMs booting the test image on per-cluster VXLAN networks.
//! Needs root, QEMU, nftables and the test image with `shoal guest`
//! (scripts/setup.sh installs and builds them); it fails loudly without them.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use shoal_api::{Host, Machine, MachinePhase};
use shoal_e2e::fleet::{create as apply, machine, setup, wait_phase, NS};
use shoal_e2e::hosts::{alive, guest, links, nft_tables, AgentProc, Underlay};
use shoal_e2e::ServerProc;

struct Vm {
    name: &'static str,
    cluster: &'static str,
    host: usize,
    ip: Ipv4Addr,
}

const VMS: [Vm; 5] = [
    Vm {
        name: "a-1",
        cluster: "a",
        host: 0,
        ip: Ipv4Addr::new(10, 101, 0, 11),
    },
    Vm {
        name: "a-2",
        cluster: "a",
        host: 0,
        ip: Ipv4Addr::new(10, 101, 0, 12),
    },
    Vm {
        name: "a-3",
        cluster: "a",
        host: 1,
        ip: Ipv4Addr::new(10, 101, 0, 13),
    },
    Vm {
        name: "b-1",
        cluster: "b",
        host: 0,
        ip: Ipv4Addr::new(10, 102, 0, 11),
    },
    Vm {
        name: "b-2",
        cluster: "b",
        host: 1,
        ip: Ipv4Addr::new(10, 102, 0, 12),
    },
];

fn vm(name: &str) -> &'static Vm {
    VMS.iter().find(|v| v.name == name).expect("known VM")
}

fn expect(ns: &str, from: &str, cmd: &str, want: &str) -> Result<()> {
    let got = guest(ns, vm(from).ip, cmd)?;
    if got != want {
        bail!("{from}: '{cmd}' answered {got:?}, expected {want:?}");
    }
    Ok(())
}

/// Retries a reachability check: the first packets across the VXLAN may race FDB
/// and ARP set-up.
fn expect_eventually(ns: &str, from: &str, cmd: &str, want: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match expect(ns, from, cmd, want) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_isolated_clusters_readopt_and_cleanup() -> Result<()> {
    let hosts = Underlay::pair(&format!("se{}h", std::process::id()))?;
    // Machines are placed by hand here: no controllers, no scheduler.
    let server = ServerProc::start_with(&["--controllers=false"])?;
    let client = server.client().await?;
    setup(
        &client,
        &[("a", 101, "10.101.0.0/24"), ("b", 102, "10.102.0.0/24")],
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let host_names = ["h1", "h2"];
    let mut agents = Vec::new();
    for (i, name) in host_names.iter().enumerate() {
        agents.push(AgentProc::start(
            &server.kubeconfig(),
            name,
            &hosts.names[i],
            hosts.underlay(i),
            dir.path(),
        )?);
    }
    // Both hosts register with their capacity and KVM verdict.
    let hosts_api: Api<Host> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in host_names {
        loop {
            let h = hosts_api.get_opt(name).await?;
            if let Some(st) = h.and_then(|h| h.status).filter(|s| s.underlay_ip.is_some()) {
                assert_eq!(
                    st.capacity.cpu.as_ref().map(|q| q.as_str().to_string()),
                    Some("8".into())
                );
                assert!(st.agent_version.is_some());
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "host {name} did not register; agent log:\n{}",
                    agents[0].log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let machines: Api<Machine> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    for v in &VMS {
        apply(
            &machines,
            machine(v.name, v.cluster, host_names[v.host], v.ip, "1", "test"),
        )
        .await?;
    }
    for v in &VMS {
        let m = wait_phase(
            &machines,
            v.name,
            MachinePhase::Ready,
            Duration::from_secs(240),
        )
        .await
        .with_context(|| {
            format!(
                "agent logs:\n{}\n{}",
                agents[0].log_text(),
                agents[1].log_text()
            )
        })?;
        let st = m.status.expect("status");
        assert!(
            st.provisioning_time.is_some() && st.running_time.is_some() && st.ready_time.is_some(),
            "{st:?}"
        );
        assert!(m
            .metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == "shoal.io/host-agent"));
    }
    eprintln!("5 machines Ready in {:?}", started.elapsed());
    if let Ok(secs) = std::env::var("SHOAL_E2E_HOLD").map(|s| s.parse::<u64>().unwrap_or(300)) {
        eprintln!(
            "holding for {secs} s (SHOAL_E2E_HOLD), host namespaces {:?}",
            hosts.names
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }

    // Each agent counts its VMs and phone-homes.
    let metrics = agents[0].metrics()?;
    assert!(metrics.contains("shoal_agent_vms 3"), "{metrics}");
    assert!(
        metrics.contains("shoal_agent_phone_homes_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shoal_agent_vm_operations_total{op=\"launch\",result=\"ok\"} 3"),
        "{metrics}"
    );

    let ns1 = hosts.names[0].as_str();
    let ns2 = hosts.names[1].as_str();
    // Each guest got its name from the metadata service.
    expect(ns1, "a-1", "hostname", "a-1")?;
    expect(ns2, "b-2", "hostname", "b-2")?;
    // Cluster A spans both hosts over its VXLAN.
    expect_eventually(ns1, "a-1", "ping 10.101.0.13", "ok")?;
    expect_eventually(ns2, "a-3", "ping 10.101.0.11", "ok")?;
    expect_eventually(ns1, "a-2", "tcp 10.101.0.13 8080", "ok")?;
    expect_eventually(ns1, "b-1", "ping 10.102.0.12", "ok")?;
    // B never reaches A, and A never reaches B: same host or across hosts, ICMP or TCP.
    for (ns, from, to) in [
        (ns1, "b-1", "a-1"),
        (ns1, "b-1", "a-3"),
        (ns2, "b-2", "a-3"),
        (ns2, "b-2", "a-1"),
        (ns1, "a-1", "b-1"),
        (ns1, "a-2", "b-2"),
        (ns2, "a-3", "b-2"),
        (ns2, "a-3", "b-1"),
    ] {
        let target = vm(to).ip;
        expect(ns, from, &format!("ping {target}"), "fail")?;
        expect(ns, from, &format!("tcp {target} 8080"), "fail")?;
        expect(ns, from, &format!("tcp {target} 7070"), "fail")?;
    }
    // A guest reads only its own metadata; another cluster's gateway is unreachable.
    expect(ns1, "a-1", "get http://10.101.0.1/a-1/meta-data", "200")?;
    expect(ns1, "a-1", "get http://10.101.0.1/a-2/meta-data", "403")?;
    expect(ns1, "a-1", "get http://10.101.0.1/a-2/user-data", "403")?;
    expect(ns1, "a-1", "get http://10.101.0.1/nobody/meta-data", "404")?;
    let cross = guest(ns1, vm("b-1").ip, "get http://10.101.0.1/a-1/meta-data")?;
    assert!(
        cross.starts_with("error"),
        "b-1 reached cluster A's metadata: {cross}"
    );

    // kill -9 of an agent leaves its VMs running; a restarted agent re-adopts them.
    let before = agents[0].qemu_pids();
    assert_eq!(before.len(), 3, "{before:?}");
    agents[0].kill9()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (vm_name, pid) in &before {
        assert!(alive(*pid), "VM {vm_name} (PID {pid}) died with its agent");
    }
    // While the agent is down, Machine b-1 is force-removed (its finalizer
    // stripped): its VM becomes an orphan, and it was cluster B's only VM on h1.
    machines
        .patch(
            "b-1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    machines.delete("b-1", &DeleteParams::default()).await?;
    let orphan_pid = before
        .iter()
        .find(|(n, _)| n == "b-1")
        .map(|(_, p)| *p)
        .context("b-1's PID")?;
    agents[0].restart()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agents[0].log_text().contains("re-adopted running VM") {
        if Instant::now() > deadline || !agents[0].running() {
            bail!(
                "restarted agent did not re-adopt:\n{}",
                agents[0].log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The orphan's VM, its tap and cluster B's network leave h1.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = links(ns1)?;
        let gone = !alive(orphan_pid) && !l.iter().any(|n| n == "shb102" || n == "shv102");
        if gone {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "orphan b-1 not collected: links {l:?}\n{}",
                agents[0].log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kept: Vec<(String, u32)> = before.into_iter().filter(|(n, _)| n != "b-1").collect();
    assert_eq!(
        agents[0].qemu_pids(),
        kept,
        "QEMU PIDs changed: VMs were rebooted"
    );
    for (_, pid) in &kept {
        assert!(alive(*pid));
    }
    assert!(
        links(ns1)?.iter().any(|n| n == "shb101"),
        "cluster A's network left h1"
    );
    for v in VMS.iter().filter(|v| v.name != "b-1") {
        wait_phase(
            &machines,
            v.name,
            MachinePhase::Ready,
            Duration::from_secs(5),
        )
        .await?;
    }
    // Its DHCP and metadata services are back, and the network still works.
    expect(ns1, "a-2", "get http://10.101.0.1/a-2/meta-data", "200")?;
    expect_eventually(ns1, "a-1", "ping 10.101.0.13", "ok")?;

    // Bad input: too big for the host, and an image that does not exist.
    apply(
        &machines,
        machine(
            "too-big",
            "a",
            "h1",
            Ipv4Addr::new(10, 101, 0, 50),
            "64",
            "test",
        ),
    )
    .await?;
    apply(
        &machines,
        machine(
            "no-image",
            "a",
            "h1",
            Ipv4Addr::new(10, 101, 0, 51),
            "1",
            "missing-image",
        ),
    )
    .await?;
    for (name, reason, words) in [
        ("too-big", "InsufficientResources", "64 vCPU"),
        ("no-image", "ImageNotFound", "/nonexistent/shoal/vmlinuz"),
    ] {
        let m = wait_phase(
            &machines,
            name,
            MachinePhase::Failed,
            Duration::from_secs(30),
        )
        .await?;
        let cond = m
            .status
            .expect("status")
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .expect("condition");
        assert_eq!(cond.reason, reason);
        assert!(cond.message.contains(words), "{}", cond.message);
    }
    assert!(agents[0].running(), "the agent crashed on bad input");

    // Deleting every Machine leaves nothing of Shoal on either host.
    let all_pids: Vec<u32> = agents
        .iter()
        .flat_map(|a| a.qemu_pids())
        .map(|(_, p)| p)
        .collect();
    assert_eq!(all_pids.len(), 4);
    let deleted = Instant::now();
    for m in machines.list(&Default::default()).await? {
        machines
            .delete(&m.metadata.name.expect("name"), &DeleteParams::default())
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while !machines.list(&Default::default()).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("machines were not finalized:\n{}", agents[0].log_text());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("4 machines deleted in {:?}", deleted.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    for pid in all_pids {
        assert!(!alive(pid), "QEMU {pid} survived its Machine");
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
        assert!(agents[i].qemu_pids().is_empty());
        assert!(agents[i].running());
    }
    // A gracefully stopped agent marks its Host NotReady.
    let status = agents[1].stop()?;
    assert!(status.success(), "agent h2 exited with {status}");
    let h2 = hosts_api.get("h2").await?.status.context("h2 status")?;
    let ready = h2
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .context("Ready")?;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "AgentStopped")
    );
    Ok(())
}
