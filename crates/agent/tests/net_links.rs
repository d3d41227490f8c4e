//! Links and the firewall against the real kernel: rtnetlink and `nft` inside a
//! throwaway network namespace per test (`shoal-t-<pid>-<n>`), checked with
//! `ip -j`, `bridge -j` and `nft -j`. Needs root; without it the tests fail.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use shoal_agent::net::link::{LinkError, Links, RtLinks};
use shoal_agent::net::netns::NetNs;
use shoal_agent::net::nft::{render, Firewall, NftError, NftFirewall};
use shoal_agent::net::plan::{tap_name, ClusterPlan};
use shoal_agent::net::{ClusterNet, HostPlan, Port};

const UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// A namespace of this test process, deleted on drop (also when the test fails).
struct TestNs {
    name: String,
    ns: NetNs,
}

impl TestNs {
    async fn new() -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        assert!(
            rustix::process::geteuid().is_root(),
            "\n\n!!! net_links needs root (network namespaces, netlink, nft): run as root; CI does !!!\n\n"
        );
        let name = format!(
            "shoal-t-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ns = NetNs::ensure(&name).await?;
        Ok(TestNs { name, ns })
    }

    /// Runs `program args` inside the namespace and returns stdout; fails on error.
    fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .with_context(|| format!("running {program}"))?;
        ensure!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `program args` parsed as JSON.
    fn json(&self, program: &str, args: &[&str]) -> Result<Value> {
        let out = self.run(program, args)?;
        serde_json::from_str(&out).with_context(|| format!("{program} {args:?} printed {out}"))
    }

    /// `ip -j -d link show <name>`.
    fn link(&self, name: &str) -> Result<Value> {
        let v = self.json("ip", &["-j", "-d", "link", "show", "dev", name])?;
        Ok(v[0].clone())
    }

    /// The IPv4 `address/prefix`es of a link.
    fn addrs(&self, name: &str) -> Result<Vec<String>> {
        let v = self.json("ip", &["-j", "-4", "addr", "show", "dev", name])?;
        Ok(v[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| format!("{}/{}", i["local"].as_str().unwrap_or("?"), i["prefixlen"]))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Remotes of the all-zero FDB entry of a VXLAN.
    fn flood_peers(&self, vxlan: &str) -> Result<BTreeSet<String>> {
        let v = self.json("bridge", &["-j", "fdb", "show", "dev", vxlan])?;
        Ok(v.as_array()
            .context("fdb is a list")?
            .iter()
            .filter(|e| e["mac"] == "00:00:00:00:00:00")
            .filter_map(|e| e["dst"].as_str().map(str::to_string))
            .collect())
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let status = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "could not delete network namespace {}: {status:?}",
                self.name
            );
        }
    }
}

fn up(link: &Value) -> bool {
    link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "UP"))
}

fn set(ips: &[[u8; 4]]) -> BTreeSet<Ipv4Addr> {
    ips.iter().map(|&i| Ipv4Addr::from(i)).collect()
}

fn strings(ips: &[&str]) -> BTreeSet<String> {
    ips.iter().map(|s| s.to_string()).collect()
}

/// Checks the bridge and VXLAN of `net` as the kernel shows them.
fn check_cluster(t: &TestNs, net: &ClusterNet, underlay: Ipv4Addr) -> Result<()> {
    let br = t.link(&net.bridge)?;
    ensure!(
        br["linkinfo"]["info_kind"] == "bridge",
        "not a bridge: {br}"
    );
    ensure!(br["mtu"] == 1450, "bridge MTU: {br}");
    ensure!(
        br["address"] == net.gateway_mac.to_string().as_str(),
        "bridge MAC: {br}"
    );
    ensure!(up(&br), "bridge down: {br}");
    ensure!(
        t.addrs(&net.bridge)? == vec![format!("{}/{}", net.gateway, net.prefix)],
        "bridge addresses: {:?}",
        t.addrs(&net.bridge)?
    );
    let vx = t.link(&net.vxlan)?;
    let data = &vx["linkinfo"]["info_data"];
    ensure!(vx["linkinfo"]["info_kind"] == "vxlan", "not a vxlan: {vx}");
    ensure!(data["id"] == net.vni.get(), "vni: {vx}");
    ensure!(
        data["local"] == underlay.to_string().as_str(),
        "local: {vx}"
    );
    ensure!(data["port"] == 4789, "port: {vx}");
    ensure!(data["learning"] == true, "learning: {vx}");
    ensure!(vx["mtu"] == 1450, "vxlan MTU: {vx}");
    ensure!(vx["master"] == net.bridge.as_str(), "vxlan master: {vx}");
    ensure!(up(&vx), "vxlan down: {vx}");
    Ok(())
}

#[tokio::test]
async fn links_lifecycle() -> Result<()> {
    let t = TestNs::new().await?;
    let links = RtLinks::new(&t.ns)?;
    ensure!(up(&t.link("lo")?), "new() brings lo up");

    let net = ClusterNet::new("org-a/c1", 4100, "10.100.1.0/24")?;
    links.ensure_cluster(&net, UNDERLAY).await?;
    let first = t.link(&net.vxlan)?["ifindex"].clone();
    links.ensure_cluster(&net, UNDERLAY).await?;
    check_cluster(&t, &net, UNDERLAY)?;
    ensure!(
        t.link(&net.vxlan)?["ifindex"] == first,
        "a second ensure reuses the VXLAN"
    );

    // Drift is corrected: detached, down, wrong MTU, a stray address.
    t.run("ip", &["link", "set", &net.vxlan, "nomaster"])?;
    t.run("ip", &["link", "set", &net.vxlan, "down"])?;
    t.run("ip", &["link", "set", &net.bridge, "mtu", "1400", "down"])?;
    t.run("ip", &["addr", "add", "10.9.9.9/16", "dev", &net.bridge])?;
    links.ensure_cluster(&net, UNDERLAY).await?;
    check_cluster(&t, &net, UNDERLAY)?;

    // A changed underlay recreates the VXLAN.
    let moved = Ipv4Addr::new(198, 51, 100, 9);
    links.ensure_cluster(&net, moved).await?;
    check_cluster(&t, &net, moved)?;
    links.ensure_cluster(&net, UNDERLAY).await?;
    check_cluster(&t, &net, UNDERLAY)?;

    // Peers: exactly one all-zero FDB entry each.
    links
        .set_peers(&net, &set(&[[198, 51, 100, 2], [198, 51, 100, 3]]))
        .await?;
    ensure!(t.flood_peers(&net.vxlan)? == strings(&["198.51.100.2", "198.51.100.3"]));
    let bc = set(&[[198, 51, 100, 3], [198, 51, 100, 4]]);
    links.set_peers(&net, &bc).await?;
    links.set_peers(&net, &bc).await?;
    let got = t.flood_peers(&net.vxlan)?;
    ensure!(
        got == strings(&["198.51.100.3", "198.51.100.4"]),
        "peers after {{b,c}}: {got:?}"
    );
    links.set_peers(&net, &BTreeSet::new()).await?;
    ensure!(t.flood_peers(&net.vxlan)?.is_empty());
    links.set_peers(&net, &bc).await?;

    // Taps: one that exists, one that appears while we wait, one that never does.
    let tap = tap_name("org-a", "m1");
    t.run("ip", &["tuntap", "add", "dev", &tap, "mode", "tap"])?;
    links
        .attach_tap(&tap, &net.bridge, Duration::from_secs(2))
        .await?;
    let late = tap_name("org-a", "m2");
    let creator = {
        let (ns, late) = (t.name.clone(), late.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            Command::new("ip")
                .args(["-n", &ns, "tuntap", "add", "dev", &late, "mode", "tap"])
                .status()
        })
    };
    links
        .attach_tap(&late, &net.bridge, Duration::from_secs(10))
        .await?;
    ensure!(
        creator.join().is_ok_and(|s| s.is_ok_and(|s| s.success())),
        "creating the late tap"
    );
    for name in [&tap, &late] {
        let l = t.link(name)?;
        ensure!(l["master"] == net.bridge.as_str(), "tap master: {l}");
        ensure!(l["mtu"] == 1450 && up(&l), "tap: {l}");
    }
    match links
        .attach_tap("sht00000000", &net.bridge, Duration::from_millis(200))
        .await
    {
        Err(LinkError::TapTimeout { tap, .. }) => ensure!(tap == "sht00000000"),
        other => bail!("a tap that never appears: {other:?}"),
    }

    let mut want = vec![
        net.bridge.clone(),
        net.vxlan.clone(),
        tap.clone(),
        late.clone(),
    ];
    want.sort();
    ensure!(
        links.list().await? == want,
        "list: {:?}",
        links.list().await?
    );

    // Names Shoal uses but the kernel has as something else are refused, not reused.
    let other = ClusterNet::new("org-b/c2", 4200, "10.100.2.0/24")?;
    t.run(
        "ip",
        &["tuntap", "add", "dev", &other.bridge, "mode", "tap"],
    )?;
    match links.ensure_cluster(&other, UNDERLAY).await {
        Err(LinkError::WrongKind { link, want, .. }) => {
            ensure!(link == other.bridge && want == "bridge")
        }
        other => bail!("a tap named like a bridge: {other:?}"),
    }
    links.delete(&other.bridge).await?;
    match links.set_peers(&other, &bc).await {
        Err(LinkError::Missing { link }) => ensure!(link == other.vxlan),
        other => bail!("peers of a missing VXLAN: {other:?}"),
    }

    links.remove_cluster(&net).await?;
    links.remove_cluster(&net).await?;
    let mut taps = vec![tap.clone(), late.clone()];
    taps.sort();
    ensure!(links.list().await? == taps);
    links.delete(&tap).await?;
    links.delete(&late).await?;
    links.delete(&late).await?;
    ensure!(links.list().await?.is_empty());
    Ok(())
}

/// Without `--netns` the agent works in the namespace it runs in: here, a thread
/// that has entered the test namespace, running its own runtime.
#[test]
fn unconfined_links_use_the_callers_namespace() -> Result<()> {
    let outer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let t = outer.block_on(TestNs::new())?;
    let net = ClusterNet::new("org-a/c1", 4100, "10.100.1.0/24")?;
    t.ns.run(|| -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let links = RtLinks::new(&NetNs::current())?;
            links.ensure_cluster(&net, UNDERLAY).await?;
            Ok(())
        })
    })??;
    ensure!(up(&t.link("lo")?), "new() brings lo up");
    check_cluster(&t, &net, UNDERLAY)
}

fn port(ns: &str, machine: &str, mac: &str, ip: [u8; 4]) -> Result<Port> {
    Ok(Port {
        machine: machine.into(),
        tap: tap_name(ns, machine),
        mac: mac.parse()?,
        ip: Ipv4Addr::from(ip),
    })
}

fn two_clusters() -> Result<HostPlan> {
    Ok(HostPlan {
        underlay: Some(UNDERLAY),
        clusters: vec![
            ClusterPlan {
                net: ClusterNet::new("org-a/c1", 4100, "10.100.1.0/24")?,
                peers: set(&[[198, 51, 100, 2]]),
                ports: vec![
                    port("org-a", "m1", "52:54:00:00:01:0a", [10, 100, 1, 10])?,
                    port("org-a", "m2", "52:54:00:00:01:0b", [10, 100, 1, 11])?,
                ],
            },
            ClusterPlan {
                net: ClusterNet::new("org-b/c2", 4200, "10.100.2.0/24")?,
                peers: BTreeSet::new(),
                ports: vec![port("org-b", "w1", "52:54:00:00:02:0a", [10, 100, 2, 10])?],
            },
        ],
        egress: Some("eth0".into()),
    })
}

/// `(family, chain, expr)` of every rule: rendered `add rule` commands, or a listing.
fn rules(doc: &Value, key: Option<&str>) -> Result<Vec<(String, String, Value)>> {
    let items = doc["nftables"].as_array().context("an nftables array")?;
    Ok(items
        .iter()
        .filter_map(|i| match key {
            Some(k) => i.get(k).and_then(|c| c.get("rule")),
            None => i.get("rule"),
        })
        .map(|r| {
            (
                r["family"].as_str().unwrap_or_default().to_string(),
                r["chain"].as_str().unwrap_or_default().to_string(),
                r["expr"].clone(),
            )
        })
        .collect())
}

/// The kernel holds exactly the rules `plan` renders, in order.
fn check_ruleset(t: &TestNs, plan: &HostPlan) -> Result<()> {
    let listed = t.json("nft", &["-j", "list", "ruleset"])?;
    let want = rules(&render(plan), Some("add"))?;
    let got = rules(&listed, None)?;
    ensure!(!want.is_empty());
    for family in ["inet", "bridge"] {
        for chain in ["input", "forward", "output", "postrouting"] {
            let pick = |rs: &[(String, String, Value)]| -> Vec<Value> {
                rs.iter()
                    .filter(|(f, c, _)| f == family && c == chain)
                    .map(|(_, _, e)| e.clone())
                    .collect()
            };
            ensure!(
                pick(&got) == pick(&want),
                "{family} {chain}: the kernel has\n{:#}\nbut the plan renders\n{:#}",
                Value::from(pick(&got)),
                Value::from(pick(&want))
            );
        }
    }
    ensure!(
        got.len() == want.len(),
        "{} rules listed, {} rendered",
        got.len(),
        want.len()
    );
    Ok(())
}

#[tokio::test]
async fn firewall_apply_replace_remove() -> Result<()> {
    let t = TestNs::new().await?;
    let fw = NftFirewall::new(t.ns.clone(), "nft");
    ensure!(fw.tables().await?.is_empty());

    // Removing what is not there is fine.
    fw.apply(&HostPlan::default()).await?;

    let plan = two_clusters()?;
    fw.apply(&plan).await?;
    let mut tables = fw.tables().await?;
    tables.sort();
    ensure!(
        tables
            == vec![
                ("bridge".to_string(), "shoal".to_string()),
                ("inet".to_string(), "shoal".to_string())
            ],
        "tables: {tables:?}"
    );
    check_ruleset(&t, &plan)?;
    let nat = t.json(
        "nft",
        &["-j", "list", "chain", "inet", "shoal", "postrouting"],
    )?;
    ensure!(nat.to_string().contains("masquerade"), "nat: {nat}");

    // Replacing leaves nothing of the old ruleset behind.
    let mut smaller = plan.clone();
    smaller.clusters.truncate(1);
    smaller.clusters[0].ports.truncate(1);
    smaller.egress = None;
    fw.apply(&smaller).await?;
    check_ruleset(&t, &smaller)?;
    ensure!(
        !t.run("nft", &["list", "ruleset"])?.contains("postrouting"),
        "no NAT chain without egress"
    );

    // nft's refusal reaches the caller with its message, and the old ruleset stays.
    let mut bad = plan.clone();
    bad.egress = Some("an-interface-name-far-too-long-for-linux".into());
    match fw.apply(&bad).await {
        Err(NftError::Failed { stderr, .. }) => ensure!(!stderr.is_empty()),
        other => bail!("an invalid interface name: {other:?}"),
    }
    check_ruleset(&t, &smaller)?;

    fw.apply(&HostPlan::default()).await?;
    ensure!(fw.tables().await?.is_empty());
    ensure!(t.run("nft", &["list", "ruleset"])?.trim().is_empty());
    Ok(())
}
