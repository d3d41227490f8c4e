//! Bridges, VXLAN devices, FDB peers and taps, through rtnetlink.
//!
//! [`Links`] is the I/O boundary; [`RtLinks`] implements it with one netlink socket
//! opened inside the agent's network namespace, so every link it creates lives there.
//! Every operation is idempotent: it reads the current state first and changes only
//! what differs, so a reconcile loop can call it as often as it likes.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{LinkBridge, LinkUnspec, LinkVxlan};
use rustix::io::Errno;

use super::netns::{NetNs, NetnsError};
use super::plan::{ClusterNet, BRIDGE_PREFIX, GUEST_MTU, TAP_PREFIX, VXLAN_PORT, VXLAN_PREFIX};

/// How often [`Links::attach_tap`] looks for the tap QEMU is creating.
const TAP_POLL: Duration = Duration::from_millis(50);

/// The all-zero MAC: the VXLAN FDB entry that floods broadcast, unknown-unicast and
/// multicast traffic to every remote it lists.
const ZERO_MAC: [u8; 6] = [0; 6];

/// A link operation failure, naming the link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The netlink socket could not be opened.
    #[error("opening a netlink socket in network namespace {netns}")]
    Connect {
        /// The namespace, or `(current)`.
        netns: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Entering the namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// [`RtLinks::new`] was called outside a tokio runtime.
    #[error("the netlink connection needs a tokio runtime; create RtLinks inside one")]
    NoRuntime,
    /// The kernel refused a request.
    #[error("{op} link {link}")]
    Netlink {
        /// The link the request was about.
        link: String,
        /// What was attempted, e.g. `creating`.
        op: &'static str,
        /// The kernel's (or the connection's) error.
        #[source]
        source: rtnetlink::Error,
    },
    /// A link this operation needs does not exist.
    #[error("link {link} does not exist; ensure its cluster network first")]
    Missing {
        /// The link.
        link: String,
    },
    /// A link exists under one of Shoal's names but is of another kind.
    #[error(
        "link {link} is a {found}, not a {want}; delete it, Shoal owns names starting with \"sh\""
    )]
    WrongKind {
        /// The link.
        link: String,
        /// Its kind, as the kernel reports it.
        found: String,
        /// The kind Shoal needs.
        want: &'static str,
    },
    /// QEMU did not create the tap in time.
    #[error(
        "tap {tap} did not appear within {timeout:?}; check that QEMU started with ifname={tap}"
    )]
    TapTimeout {
        /// The tap.
        tap: String,
        /// How long we waited.
        timeout: Duration,
    },
}

/// Bridges, VXLANs, FDB peers and taps: the netlink I/O boundary of guest networks.
pub trait Links: Send + Sync {
    /// Bridge `net.bridge` with MAC `net.gateway_mac`, MTU [`GUEST_MTU`] and address
    /// `net.gateway/net.prefix`, up; VXLAN `net.vxlan` with id `net.vni`, local
    /// `underlay`, port [`VXLAN_PORT`], learning on, MTU [`GUEST_MTU`], enslaved to the
    /// bridge, up. Existing links are reused and corrected; a VXLAN whose id, local
    /// address or port differ is recreated.
    fn ensure_cluster(
        &self,
        net: &ClusterNet,
        underlay: Ipv4Addr,
    ) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// Makes the all-zero-MAC FDB entries of `net.vxlan` (head-end replication of
    /// broadcast and unknown traffic, as flannel does) exactly one per peer.
    fn set_peers(
        &self,
        net: &ClusterNet,
        peers: &BTreeSet<Ipv4Addr>,
    ) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// Waits, polling up to `timeout`, for the tap `tap` (QEMU creates it), then
    /// enslaves it to `bridge`, sets MTU [`GUEST_MTU`] and brings it up.
    fn attach_tap(
        &self,
        tap: &str,
        bridge: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// Deletes `net.vxlan` and `net.bridge`; missing links are fine.
    fn remove_cluster(
        &self,
        net: &ClusterNet,
    ) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// Names of the links Shoal owns (bridge, VXLAN and tap prefixes), sorted.
    fn list(&self) -> impl Future<Output = Result<Vec<String>, LinkError>> + Send;

    /// Deletes one link by name; a missing link is fine.
    fn delete(&self, name: &str) -> impl Future<Output = Result<(), LinkError>> + Send;
}

/// The kernel's view of one link, as far as Shoal cares.
#[derive(Debug, Default)]
struct LinkState {
    index: u32,
    name: String,
    kind: Option<InfoKind>,
    controller: Option<u32>,
    up: bool,
    mtu: Option<u32>,
    address: Option<Vec<u8>>,
    vxlan: Vec<InfoVxlan>,
}

impl LinkState {
    fn parse(msg: LinkMessage) -> Self {
        let mut state = LinkState {
            index: msg.header.index,
            up: msg.header.flags.contains(LinkFlags::Up),
            ..LinkState::default()
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => state.name = n,
                LinkAttribute::Controller(i) => state.controller = Some(i),
                LinkAttribute::Mtu(m) => state.mtu = Some(m),
                LinkAttribute::Address(a) => state.address = Some(a),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => state.kind = Some(k),
                            LinkInfo::Data(InfoData::Vxlan(v)) => state.vxlan = v,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        state
    }

    fn kind_name(&self) -> String {
        self.kind
            .as_ref()
            .map_or_else(|| "link of unknown kind".to_string(), |k| k.to_string())
    }

    /// Whether this VXLAN carries `vni` from `local` on Shoal's port with learning.
    fn vxlan_matches(&self, vni: u32, local: Ipv4Addr) -> bool {
        let has = |want: &InfoVxlan| self.vxlan.iter().any(|v| v == want);
        has(&InfoVxlan::Id(vni))
            && has(&InfoVxlan::Local(local))
            && has(&InfoVxlan::Port(VXLAN_PORT))
            && has(&InfoVxlan::Learning(true))
    }
}

/// The errno of a kernel refusal, positive, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn is(e: &rtnetlink::Error, want: Errno) -> bool {
    errno(e) == Some(want.raw_os_error())
}

/// [`Links`] over an rtnetlink socket in the agent's namespace.
#[derive(Debug, Clone)]
pub struct RtLinks {
    handle: rtnetlink::Handle,
    netns: String,
}

impl RtLinks {
    /// Opens a netlink socket inside `netns` (its connection task runs on the current
    /// tokio runtime) and brings the namespace's loopback up.
    pub fn new(netns: &NetNs) -> Result<Self, LinkError> {
        let label = netns.name().unwrap_or("(current)").to_string();
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| LinkError::NoRuntime)?;
        let connect_err = |source| LinkError::Connect {
            netns: label.clone(),
            source,
        };
        let (connection, handle) = netns.run(|| {
            // Bring `lo` up (a fresh namespace has it down) over a throwaway socket,
            // on a runtime of a thread of our own, so that `new` need not be async
            // and works even when `run` calls us on a runtime thread (no `--netns`).
            // A new thread starts in the namespace of the thread that spawns it.
            std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_io()
                            .build()
                            .map_err(connect_err)?
                            .block_on(loopback_up())
                    })
                    .join()
                    .map_err(|_| NetnsError::Panicked(label.clone()))?
            })?;
            // The socket registers with the reactor of the runtime it is created in.
            let _guard = runtime.enter();
            let (connection, handle, _) = rtnetlink::new_connection().map_err(connect_err)?;
            Ok::<_, LinkError>((connection, handle))
        })??;
        runtime.spawn(connection);
        Ok(RtLinks {
            handle,
            netns: label,
        })
    }

    /// The namespace this instance works in, for messages.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The link named `name`, or `None`.
    async fn get(&self, name: &str) -> Result<Option<LinkState>, LinkError> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await;
        match found {
            Ok(msg) => Ok(msg.map(LinkState::parse)),
            Err(e) if is(&e, Errno::NODEV) => Ok(None),
            Err(source) => Err(LinkError::Netlink {
                link: name.to_string(),
                op: "looking up",
                source,
            }),
        }
    }

    /// The link named `name`, which must exist.
    async fn require(&self, name: &str) -> Result<LinkState, LinkError> {
        self.get(name).await?.ok_or_else(|| LinkError::Missing {
            link: name.to_string(),
        })
    }

    /// Sends a link message; `op` and `link` name it in errors.
    async fn set(&self, link: &str, op: &'static str, msg: LinkMessage) -> Result<(), LinkError> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|source| LinkError::Netlink {
                link: link.to_string(),
                op,
                source,
            })
    }

    /// Creates a link from `msg`; one that appeared meanwhile is fine.
    async fn add(&self, link: &str, msg: LinkMessage) -> Result<(), LinkError> {
        match self.handle.link().add(msg).execute().await {
            Err(e) if is(&e, Errno::EXIST) => Ok(()),
            r => r.map_err(|source| LinkError::Netlink {
                link: link.to_string(),
                op: "creating",
                source,
            }),
        }
    }

    async fn delete_index(&self, link: &str, index: u32) -> Result<(), LinkError> {
        match self.handle.link().del(index).execute().await {
            Err(e) if is(&e, Errno::NODEV) => Ok(()),
            r => r.map_err(|source| LinkError::Netlink {
                link: link.to_string(),
                op: "deleting",
                source,
            }),
        }
    }

    /// The bridge of `net`, created or corrected; returns its index.
    async fn ensure_bridge(&self, net: &ClusterNet) -> Result<u32, LinkError> {
        let name = net.bridge.as_str();
        let mac = net.gateway_mac.0.to_vec();
        let bridge = match self.get(name).await? {
            Some(b) => b,
            None => {
                tracing::info!(bridge = name, "creating bridge");
                let msg = LinkBridge::new(name)
                    .mtu(GUEST_MTU)
                    .address(mac.clone())
                    .build();
                self.add(name, msg).await?;
                self.require(name).await?
            }
        };
        if bridge.kind != Some(InfoKind::Bridge) {
            return Err(LinkError::WrongKind {
                link: name.to_string(),
                found: bridge.kind_name(),
                want: "bridge",
            });
        }
        if bridge.mtu != Some(GUEST_MTU) || bridge.address.as_ref() != Some(&mac) || !bridge.up {
            let msg = LinkUnspec::new_with_index(bridge.index)
                .mtu(GUEST_MTU)
                .address(mac)
                .up()
                .build();
            self.set(name, "configuring bridge", msg).await?;
        }
        self.ensure_address(net, bridge.index).await?;
        Ok(bridge.index)
    }

    /// Exactly one IPv4 address on the bridge: the gateway with the network's prefix.
    async fn ensure_address(&self, net: &ClusterNet, index: u32) -> Result<(), LinkError> {
        let err = |op| {
            move |source| LinkError::Netlink {
                link: net.bridge.clone(),
                op,
                source,
            }
        };
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(err("listing addresses of"))?;
        let want = IpAddr::V4(net.gateway);
        let mut present = false;
        for addr in addrs {
            if addr.header.index != index || addr.header.family != AddressFamily::Inet {
                continue;
            }
            let ip = addr.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            if ip == Some(want) && addr.header.prefix_len == net.prefix {
                present = true;
            } else {
                tracing::info!(bridge = %net.bridge, address = ?ip, "removing stale address");
                self.handle
                    .address()
                    .del(addr)
                    .execute()
                    .await
                    .map_err(err("removing a stale address from"))?;
            }
        }
        if !present {
            match self
                .handle
                .address()
                .add(index, want, net.prefix)
                .execute()
                .await
            {
                Err(e) if is(&e, Errno::EXIST) => {}
                r => r.map_err(err("adding the gateway address to"))?,
            }
        }
        Ok(())
    }

    /// The VXLAN of `net`, created, recreated or corrected.
    async fn ensure_vxlan(
        &self,
        net: &ClusterNet,
        underlay: Ipv4Addr,
        bridge: u32,
    ) -> Result<(), LinkError> {
        let name = net.vxlan.as_str();
        let vni = net.vni.get();
        let mut existing = self.get(name).await?;
        if let Some(v) = &existing {
            if v.kind != Some(InfoKind::Vxlan) {
                return Err(LinkError::WrongKind {
                    link: name.to_string(),
                    found: v.kind_name(),
                    want: "vxlan",
                });
            }
            if !v.vxlan_matches(vni, underlay) {
                tracing::info!(vxlan = name, "recreating VXLAN with changed parameters");
                self.delete_index(name, v.index).await?;
                existing = None;
            }
        }
        match existing {
            None => {
                tracing::info!(vxlan = name, vni, %underlay, "creating VXLAN");
                let msg = LinkVxlan::new(name, vni)
                    .local(underlay)
                    .port(VXLAN_PORT)
                    .learning(true)
                    .mtu(GUEST_MTU)
                    .controller(bridge)
                    .up()
                    .build();
                self.add(name, msg).await?;
                // Correct whatever a concurrent creator may have done differently.
                let v = self.require(name).await?;
                if v.controller != Some(bridge) || !v.up || v.mtu != Some(GUEST_MTU) {
                    self.fix_port(name, v.index, bridge).await?;
                }
            }
            Some(v) => {
                if v.controller != Some(bridge) || !v.up || v.mtu != Some(GUEST_MTU) {
                    self.fix_port(name, v.index, bridge).await?;
                }
            }
        }
        Ok(())
    }

    /// Enslaves link `index` to `bridge`, with the guest MTU, up.
    async fn fix_port(&self, name: &str, index: u32, bridge: u32) -> Result<(), LinkError> {
        let msg = LinkUnspec::new_with_index(index)
            .mtu(GUEST_MTU)
            .controller(bridge)
            .up()
            .build();
        self.set(name, "attaching to its bridge", msg).await
    }

    /// The remotes of the all-zero FDB entry of VXLAN `index`.
    async fn flood_remotes(&self, name: &str, index: u32) -> Result<BTreeSet<Ipv4Addr>, LinkError> {
        let entries: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|source| LinkError::Netlink {
                link: name.to_string(),
                op: "listing the FDB of",
                source,
            })?;
        let mut remotes = BTreeSet::new();
        for entry in entries {
            if entry.header.ifindex != index || !entry.header.flags.contains(NeighbourFlags::Own) {
                continue;
            }
            let mut zero = false;
            let mut dst = None;
            for attr in &entry.attributes {
                match attr {
                    NeighbourAttribute::LinkLayerAddress(a) => zero = a.as_slice() == ZERO_MAC,
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(*ip),
                    // Bridge-family dumps carry the remote as raw bytes.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        dst = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from);
                    }
                    _ => {}
                }
            }
            if let (true, Some(ip)) = (zero, dst) {
                remotes.insert(ip);
            }
        }
        Ok(remotes)
    }
}

/// The all-zero FDB entry of VXLAN `index` towards `peer`.
fn flood_entry(index: u32, peer: Ipv4Addr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    // NTF_SELF: the VXLAN device's own FDB, not its bridge's.
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes = vec![
        NeighbourAttribute::LinkLayerAddress(ZERO_MAC.to_vec()),
        NeighbourAttribute::Destination(NeighbourAddress::Inet(peer)),
    ];
    msg
}

/// Brings `lo` up over a connection of the calling thread's namespace and runtime.
async fn loopback_up() -> Result<(), LinkError> {
    let err = |op| {
        move |source| LinkError::Netlink {
            link: "lo".to_string(),
            op,
            source,
        }
    };
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|source| LinkError::Connect {
            netns: "(bringing lo up)".to_string(),
            source,
        })?;
    let task = tokio::spawn(connection);
    let result = async {
        let lo = handle
            .link()
            .get()
            .match_name("lo")
            .execute()
            .try_next()
            .await
            .map_err(err("looking up"))?
            .map(LinkState::parse)
            .ok_or_else(|| LinkError::Missing {
                link: "lo".to_string(),
            })?;
        if !lo.up {
            handle
                .link()
                .set(LinkUnspec::new_with_index(lo.index).up().build())
                .execute()
                .await
                .map_err(err("bringing up"))?;
        }
        Ok(())
    }
    .await;
    task.abort();
    result
}

impl Links for RtLinks {
    async fn ensure_cluster(&self, net: &ClusterNet, underlay: Ipv4Addr) -> Result<(), LinkError> {
        let bridge = self.ensure_bridge(net).await?;
        self.ensure_vxlan(net, underlay, bridge).await
    }

    async fn set_peers(
        &self,
        net: &ClusterNet,
        peers: &BTreeSet<Ipv4Addr>,
    ) -> Result<(), LinkError> {
        let name = net.vxlan.as_str();
        let vxlan = self.require(name).await?;
        let current = self.flood_remotes(name, vxlan.index).await?;
        // Add first, so that broadcast never loses every remote while peers change.
        for &peer in peers.difference(&current) {
            tracing::info!(vxlan = name, %peer, "adding VXLAN peer");
            let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(flood_entry(
                vxlan.index,
                peer,
            )));
            // APPEND: the all-zero entry holds one remote per peer (`bridge fdb append`).
            req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
            let mut handle = self.handle.clone();
            let err = |source| LinkError::Netlink {
                link: name.to_string(),
                op: "adding a peer to",
                source,
            };
            let mut responses = handle.request(req).map_err(err)?;
            while let Some(msg) = responses.next().await {
                if let NetlinkPayload::Error(e) = msg.payload {
                    if e.code.is_some() {
                        return Err(err(rtnetlink::Error::NetlinkError(e)));
                    }
                }
            }
        }
        for &peer in current.difference(peers) {
            tracing::info!(vxlan = name, %peer, "removing VXLAN peer");
            match self
                .handle
                .neighbours()
                .del(flood_entry(vxlan.index, peer))
                .execute()
                .await
            {
                Err(e) if is(&e, Errno::NOENT) => {}
                r => r.map_err(|source| LinkError::Netlink {
                    link: name.to_string(),
                    op: "removing a peer from",
                    source,
                })?,
            }
        }
        Ok(())
    }

    async fn attach_tap(
        &self,
        tap: &str,
        bridge: &str,
        timeout: Duration,
    ) -> Result<(), LinkError> {
        let bridge = self.require(bridge).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let link = loop {
            if let Some(link) = self.get(tap).await? {
                break link;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LinkError::TapTimeout {
                    tap: tap.to_string(),
                    timeout,
                });
            }
            tokio::time::sleep(TAP_POLL).await;
        };
        if link.controller != Some(bridge.index) || !link.up || link.mtu != Some(GUEST_MTU) {
            tracing::info!(tap, bridge = %bridge.name, "attaching tap");
            self.fix_port(tap, link.index, bridge.index).await?;
        }
        Ok(())
    }

    async fn remove_cluster(&self, net: &ClusterNet) -> Result<(), LinkError> {
        self.delete(&net.vxlan).await?;
        self.delete(&net.bridge).await
    }

    async fn list(&self) -> Result<Vec<String>, LinkError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| LinkError::Netlink {
                link: "*".to_string(),
                op: "listing",
                source,
            })?;
        let mut names: Vec<String> = links
            .into_iter()
            .map(|l| LinkState::parse(l).name)
            .filter(|n| {
                [BRIDGE_PREFIX, VXLAN_PREFIX, TAP_PREFIX]
                    .iter()
                    .any(|p| n.starts_with(p))
            })
            .collect();
        names.sort();
        Ok(names)
    }

    async fn delete(&self, name: &str) -> Result<(), LinkError> {
        match self.get(name).await? {
            Some(link) => {
                tracing::info!(link = name, "deleting link");
                self.delete_index(name, link.index).await
            }
            None => Ok(()),
        }
    }
}
