//! The nftables ruleset of guest networks, rendered as pure data in `nft -j` JSON and
//! applied atomically.
//!
//! Two tables, both named `shoal`, are replaced as a whole in one batch:
//!
//! - `inet shoal`: VMs reach only the gateway's services on the host (DHCP, metadata
//!   on port 80, ping); nothing is forwarded between cluster bridges; with an egress
//!   interface, VMs may reach out through it, masqueraded.
//! - `bridge shoal`: every VM port may only send from its own MAC and IP, and the
//!   anycast gateway's DHCP, ARP and frames never cross a VXLAN.
//!
//! The rules are written as `nft` itself lists them (payload dependencies such as
//! `ether type ip` are implied), so a rendered rule can be compared with the kernel's.

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::netns::NetNs;
use super::plan::{ClusterNet, ClusterPlan, HostPlan, Port, BRIDGE_PREFIX};

/// The name of both of Shoal's tables.
pub const TABLE: &str = "shoal";
/// The families of Shoal's tables, in the order they are rendered.
pub const FAMILIES: [&str; 2] = ["inet", "bridge"];

/// An nftables failure, with what `nft` said.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be started or talked to.
    #[error("running {program} in network namespace {netns}")]
    Spawn {
        /// The `nft` binary.
        program: PathBuf,
        /// The namespace, or `(current)`.
        netns: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `nft` refused the request.
    #[error("nft {action} in network namespace {netns} failed ({status}): {stderr}")]
    Failed {
        /// What was asked, e.g. `apply`.
        action: &'static str,
        /// The namespace, or `(current)`.
        netns: String,
        /// nft's exit status.
        status: std::process::ExitStatus,
        /// nft's standard error, trimmed.
        stderr: String,
    },
    /// `nft -j` printed something that is not the JSON it documents.
    #[error("nft {action} printed unexpected JSON: {message}")]
    BadOutput {
        /// What was asked, e.g. `list tables`.
        action: &'static str,
        /// What was wrong.
        message: String,
    },
}

/// The nftables I/O boundary of guest networks.
pub trait Firewall: Send + Sync {
    /// Replaces Shoal's tables with the ruleset of `plan`, atomically.
    fn apply(&self, plan: &HostPlan) -> impl Future<Output = Result<(), NftError>> + Send;
    /// `(family, name)` of the tables named [`TABLE`] that exist now.
    fn tables(&self) -> impl Future<Output = Result<Vec<(String, String)>, NftError>> + Send;
}

/// [`Firewall`] through the `nft` binary (`nft -j -f -`), run inside the namespace.
#[derive(Debug, Clone)]
pub struct NftFirewall {
    netns: NetNs,
    nft: PathBuf,
}

impl NftFirewall {
    /// Runs the `nft` binary `nft` (a path, or a name looked up in `PATH`) in `netns`.
    pub fn new(netns: NetNs, nft: impl Into<PathBuf>) -> Self {
        NftFirewall {
            netns,
            nft: nft.into(),
        }
    }

    fn label(&self) -> String {
        self.netns.name().unwrap_or("(current)").to_string()
    }

    /// Runs `nft <args>` in the namespace with `stdin`, and returns its stdout.
    async fn run(
        &self,
        action: &'static str,
        args: &[&str],
        stdin: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, NftError> {
        let spawn_err = |source| NftError::Spawn {
            program: self.nft.clone(),
            netns: self.label(),
            source,
        };
        let mut cmd = self.netns.command(&self.nft);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(&input).await.map_err(spawn_err)?;
            pipe.shutdown().await.map_err(spawn_err)?;
        }
        let out = child.wait_with_output().await.map_err(spawn_err)?;
        if !out.status.success() {
            return Err(NftError::Failed {
                action,
                netns: self.label(),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }
}

impl Firewall for NftFirewall {
    async fn apply(&self, plan: &HostPlan) -> Result<(), NftError> {
        let ruleset = render(plan);
        tracing::debug!(netns = %self.label(), clusters = plan.clusters.len(), "applying nftables ruleset");
        self.run(
            "apply",
            &["-j", "-f", "-"],
            Some(ruleset.to_string().into_bytes()),
        )
        .await?;
        Ok(())
    }

    async fn tables(&self) -> Result<Vec<(String, String)>, NftError> {
        let out = self
            .run("list tables", &["-j", "list", "tables"], None)
            .await?;
        parse_tables(&out)
    }
}

/// `(family, name)` of the tables named [`TABLE`] in `nft -j list tables` output.
fn parse_tables(out: &[u8]) -> Result<Vec<(String, String)>, NftError> {
    let bad = |message: String| NftError::BadOutput {
        action: "list tables",
        message,
    };
    let doc: Value = serde_json::from_slice(out).map_err(|e| bad(e.to_string()))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"nftables\" array".to_string()))?;
    let mut tables = Vec::new();
    for table in items.iter().filter_map(|i| i.get("table")) {
        let field = |k: &str| {
            table
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad(format!("a table without a {k:?}: {table}")))
        };
        let (family, name) = (field("family")?, field("name")?);
        if name == TABLE {
            tables.push((family, name));
        }
    }
    Ok(tables)
}

/// Renders the batch that atomically replaces Shoal's tables with the ruleset of
/// `plan` (`{"nftables": [...]}` for `nft -j -f -`). With no clusters, the batch
/// removes the tables. Clusters are ordered by VNI and ports by tap, so equal plans
/// render identically.
pub fn render(plan: &HostPlan) -> Value {
    let mut clusters: Vec<&ClusterPlan> = plan.clusters.iter().collect();
    clusters.sort_by_key(|c| c.net.vni);
    let mut cmds = Vec::new();
    for family in FAMILIES {
        // Adding first makes the delete succeed whether or not the table exists.
        cmds.push(json!({"add": {"table": {"family": family, "name": TABLE}}}));
        cmds.push(json!({"delete": {"table": {"family": family, "name": TABLE}}}));
    }
    if !clusters.is_empty() {
        render_inet(&clusters, plan.egress.as_deref(), &mut cmds);
        render_bridge(&clusters, &mut cmds);
    }
    json!({ "nftables": cmds })
}

/// Appends table `family shoal` and its base chains `(name, type, hook, priority)`.
fn table(family: &str, chains: &[(&str, &str, &str, i32)], cmds: &mut Vec<Value>) {
    cmds.push(json!({"add": {"table": {"family": family, "name": TABLE}}}));
    for &(name, kind, hook, prio) in chains {
        cmds.push(json!({"add": {"chain": {
            "family": family, "table": TABLE, "name": name,
            "type": kind, "hook": hook, "prio": prio, "policy": "accept",
        }}}));
    }
}

/// Appends a rule to `family shoal chain`.
fn rule(family: &str, chain: &str, expr: Vec<Value>, cmds: &mut Vec<Value>) {
    cmds.push(json!({"add": {"rule": {
        "family": family, "table": TABLE, "chain": chain, "expr": expr,
    }}}));
}

/// `left == right`, or the operator given.
fn cmp(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn iif(name: &str) -> Value {
    cmp("==", json!({"meta": {"key": "iifname"}}), json!(name))
}

fn oif(name: &str) -> Value {
    cmp("==", json!({"meta": {"key": "oifname"}}), json!(name))
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn established() -> Value {
    cmp(
        "in",
        json!({"ct": {"key": "state"}}),
        json!(["established", "related"]),
    )
}

fn accept() -> Value {
    json!({"accept": null})
}

fn drop() -> Value {
    json!({"drop": null})
}

fn ip_saddr_in(net: &ClusterNet) -> Value {
    cmp(
        "==",
        payload("ip", "saddr"),
        json!({"prefix": {"addr": net.network.to_string(), "len": net.prefix}}),
    )
}

/// `inet shoal`: the host's own services, isolation between bridges, egress.
fn render_inet(clusters: &[&ClusterPlan], egress: Option<&str>, cmds: &mut Vec<Value>) {
    const F: &str = "inet";
    let mut chains = vec![
        ("input", "filter", "input", 0),
        ("forward", "filter", "forward", 0),
    ];
    if egress.is_some() {
        chains.push(("postrouting", "nat", "postrouting", 100));
    }
    table(F, &chains, cmds);
    let any_bridge = format!("{BRIDGE_PREFIX}*");

    // VMs reach only the gateway's DHCP, metadata and ping on the host.
    for c in clusters {
        let (br, gw) = (c.net.bridge.as_str(), c.net.gateway.to_string());
        rule(F, "input", vec![iif(br), established(), accept()], cmds);
        let dhcp = cmp("==", payload("udp", "dport"), json!(67));
        rule(F, "input", vec![iif(br), dhcp, accept()], cmds);
        let to_gw = || cmp("==", payload("ip", "daddr"), json!(gw));
        let http = cmp("==", payload("tcp", "dport"), json!(80));
        rule(F, "input", vec![iif(br), to_gw(), http, accept()], cmds);
        let ping = cmp("==", payload("icmp", "type"), json!("echo-request"));
        rule(F, "input", vec![iif(br), to_gw(), ping, accept()], cmds);
        rule(F, "input", vec![iif(br), drop()], cmds);
    }

    // Frames bridged inside one cluster reach this hook only where br_netfilter
    // passes bridged traffic to the IP hooks (as Docker hosts do); they stay within
    // their cluster, and the bridge table polices them.
    for c in clusters {
        let br = c.net.bridge.as_str();
        rule(F, "forward", vec![iif(br), oif(br), accept()], cmds);
    }
    // Never between clusters, whatever else is configured.
    rule(
        F,
        "forward",
        vec![iif(&any_bridge), oif(&any_bridge), drop()],
        cmds,
    );
    if let Some(out) = egress {
        for c in clusters {
            let br = c.net.bridge.as_str();
            let from_vms = ip_saddr_in(&c.net);
            rule(
                F,
                "forward",
                vec![iif(br), oif(out), from_vms, accept()],
                cmds,
            );
            rule(
                F,
                "forward",
                vec![iif(out), oif(br), established(), accept()],
                cmds,
            );
        }
    }
    rule(F, "forward", vec![iif(&any_bridge), drop()], cmds);
    rule(F, "forward", vec![oif(&any_bridge), drop()], cmds);

    if let Some(out) = egress {
        for c in clusters {
            let masquerade = json!({"masquerade": null});
            rule(
                F,
                "postrouting",
                vec![oif(out), ip_saddr_in(&c.net), masquerade],
                cmds,
            );
        }
    }
}

/// Anti-spoofing of one VM port, for the bridge's `forward` and `input` chains.
fn port_rules(port: &Port, chain: &str, cmds: &mut Vec<Value>) {
    const F: &str = "bridge";
    let tap = port.tap.as_str();
    let own_mac = cmp("!=", payload("ether", "saddr"), json!(port.mac.to_string()));
    rule(F, chain, vec![iif(tap), own_mac, drop()], cmds);
    // 0.0.0.0: DHCP discovery and ARP probes (RFC 5227) before the VM has an address.
    let mut ips = [Ipv4Addr::UNSPECIFIED, port.ip];
    ips.sort();
    let ips: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
    let own_ip = cmp("!=", payload("ip", "saddr"), json!({"set": ips}));
    rule(F, chain, vec![iif(tap), own_ip, drop()], cmds);
    let own_arp = cmp("!=", payload("arp", "saddr ip"), json!({"set": ips}));
    rule(F, chain, vec![iif(tap), own_arp, drop()], cmds);
}

/// `bridge shoal`: anti-spoofing per VM port, and the anycast gateway kept local.
fn render_bridge(clusters: &[&ClusterPlan], cmds: &mut Vec<Value>) {
    const F: &str = "bridge";
    table(
        F,
        &[
            ("forward", "filter", "forward", 0),
            ("input", "filter", "input", 0),
            ("output", "filter", "output", 0),
        ],
        cmds,
    );
    let gw_arp = |net: &ClusterNet| {
        cmp(
            "==",
            payload("arp", "daddr ip"),
            json!(net.gateway.to_string()),
        )
    };
    let dhcp = || cmp("==", payload("udp", "dport"), json!({"set": [67, 68]}));
    let gw_mac = |net: &ClusterNet, field| {
        cmp(
            "==",
            payload("ether", field),
            json!(net.gateway_mac.to_string()),
        )
    };

    for c in clusters {
        let mut ports: Vec<&Port> = c.ports.iter().collect();
        ports.sort_by(|a, b| a.tap.cmp(&b.tap));
        for port in &ports {
            port_rules(port, "forward", cmds);
        }
        let vx = c.net.vxlan.as_str();
        rule(F, "forward", vec![oif(vx), gw_arp(&c.net), drop()], cmds);
        rule(F, "forward", vec![iif(vx), gw_arp(&c.net), drop()], cmds);
        rule(F, "forward", vec![oif(vx), dhcp(), drop()], cmds);
        rule(F, "forward", vec![iif(vx), dhcp(), drop()], cmds);
        rule(
            F,
            "forward",
            vec![iif(vx), gw_mac(&c.net, "saddr"), drop()],
            cmds,
        );

        // What reaches the host itself: the same anti-spoofing, and nothing from
        // another host's VMs addressed to this host's copy of the gateway.
        for port in &ports {
            port_rules(port, "input", cmds);
        }
        rule(
            F,
            "input",
            vec![iif(vx), gw_mac(&c.net, "daddr"), drop()],
            cmds,
        );
        rule(F, "input", vec![iif(vx), gw_arp(&c.net), drop()], cmds);
        rule(F, "input", vec![iif(vx), dhcp(), drop()], cmds);

        // The gateway's own frames (DHCP offers, ARP replies) stay on this host.
        rule(
            F,
            "output",
            vec![oif(vx), gw_mac(&c.net, "saddr"), drop()],
            cmds,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::net::plan::tap_name;

    /// Compares `ruleset` with `testdata/nft/<name>.json` (pretty JSON);
    /// `SHOAL_UPDATE_GOLDEN=1` rewrites the file instead.
    fn golden(name: &str, ruleset: &Value) {
        let rendered = format!(
            "{}\n",
            serde_json::to_string_pretty(ruleset).expect("JSON values serialize")
        );
        crate::golden::check(&format!("nft/{name}.json"), &rendered);
    }

    fn port(ns: &str, machine: &str, mac: &str, ip: [u8; 4]) -> Port {
        Port {
            machine: machine.into(),
            tap: tap_name(ns, machine),
            mac: mac.parse().expect("valid MAC"),
            ip: Ipv4Addr::from(ip),
        }
    }

    fn one_cluster() -> HostPlan {
        HostPlan {
            underlay: Some(Ipv4Addr::new(198, 51, 100, 1)),
            clusters: vec![ClusterPlan {
                net: ClusterNet::new("org-a/c1", 4100, "10.100.1.0/24").expect("valid"),
                peers: BTreeSet::new(),
                ports: vec![port("org-a", "m1", "52:54:00:12:34:56", [10, 100, 1, 10])],
            }],
            egress: None,
        }
    }

    fn two_clusters() -> HostPlan {
        HostPlan {
            underlay: Some(Ipv4Addr::new(198, 51, 100, 1)),
            // Out of VNI order on purpose: rendering sorts.
            clusters: vec![
                ClusterPlan {
                    net: ClusterNet::new("org-b/c2", 4200, "10.100.2.0/24").expect("valid"),
                    peers: [Ipv4Addr::new(198, 51, 100, 3)].into(),
                    ports: vec![port("org-b", "w1", "52:54:00:00:02:0a", [10, 100, 2, 10])],
                },
                ClusterPlan {
                    net: ClusterNet::new("org-a/c1", 4100, "10.100.1.0/24").expect("valid"),
                    peers: [
                        Ipv4Addr::new(198, 51, 100, 2),
                        Ipv4Addr::new(198, 51, 100, 3),
                    ]
                    .into(),
                    ports: vec![
                        port("org-a", "m2", "52:54:00:00:01:0b", [10, 100, 1, 11]),
                        port("org-a", "m1", "52:54:00:00:01:0a", [10, 100, 1, 10]),
                    ],
                },
            ],
            egress: Some("eth0".into()),
        }
    }

    #[test]
    fn one_cluster_one_port() {
        golden("one-cluster", &render(&one_cluster()));
    }

    #[test]
    fn two_clusters_with_peers_and_egress() {
        let plan = two_clusters();
        golden("two-clusters-egress", &render(&plan));
        let mut reordered = plan.clone();
        reordered.clusters.reverse();
        for c in &mut reordered.clusters {
            c.ports.reverse();
        }
        assert_eq!(render(&plan), render(&reordered), "order must not matter");
    }

    #[test]
    fn empty_plan_removes_the_tables() {
        let ruleset = render(&HostPlan::default());
        golden("empty", &ruleset);
        let cmds = ruleset["nftables"].as_array().expect("array");
        assert_eq!(cmds.len(), 4, "add and delete of both tables only");
        assert!(cmds[3].get("delete").is_some());
    }

    #[test]
    fn parses_listed_tables() {
        let out = br#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"table": {"family": "inet", "name": "shoal", "handle": 1}},
            {"table": {"family": "ip", "name": "other", "handle": 2}},
            {"table": {"family": "bridge", "name": "shoal", "handle": 3}}]}"#;
        assert_eq!(
            parse_tables(out).expect("parses"),
            vec![
                ("inet".to_string(), "shoal".to_string()),
                ("bridge".to_string(), "shoal".to_string())
            ]
        );
        assert!(matches!(
            parse_tables(b"{}"),
            Err(NftError::BadOutput { .. })
        ));
    }
}
