//! The desired network state of one host, as pure data: every name, address and
//! peer follows from the clusters' VNIs and node CIDRs and the VMs' MACs and IPs.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Prefix of every link Shoal creates, so that orphans can be found by name.
pub const LINK_PREFIX: &str = "sh";
/// Bridge names: `shb<vni>`.
pub const BRIDGE_PREFIX: &str = "shb";
/// VXLAN device names: `shv<vni>`.
pub const VXLAN_PREFIX: &str = "shv";
/// Tap names: `sht<hash of namespace/machine>`.
pub const TAP_PREFIX: &str = "sht";
/// The UDP port of the VXLAN underlay (IANA's).
pub const VXLAN_PORT: u16 = 4789;
/// The MTU inside guest networks: the underlay's 1500 minus VXLAN's 50 bytes.
pub const GUEST_MTU: u32 = 1450;

/// A plan that cannot be realized, naming the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PlanError {
    /// The offending field, e.g. `status.vni`.
    pub field: String,
    /// Why, and what to do.
    pub reason: String,
}

fn plan_err(field: &str, reason: impl Into<String>) -> PlanError {
    PlanError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// A VXLAN network identifier: 1 to 2^24 - 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vni(u32);

impl Vni {
    /// The largest VNI VXLAN can carry.
    pub const MAX: u32 = (1 << 24) - 1;

    /// Validates a VNI.
    pub fn new(v: u32) -> Result<Self, PlanError> {
        if v == 0 || v > Self::MAX {
            return Err(plan_err(
                "status.vni",
                format!("{v} is outside 1..={}", Self::MAX),
            ));
        }
        Ok(Vni(v))
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, PlanError> {
        let bad = || {
            plan_err(
                "spec.mac",
                format!("{s:?} is not a MAC address like 52:54:00:12:34:56"),
            )
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// One guest cluster's network on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNet {
    /// `<namespace>/<cluster>`.
    pub key: String,
    /// The cluster's VNI.
    pub vni: Vni,
    /// The node network's address (host bits zero).
    pub network: Ipv4Addr,
    /// The node network's prefix length (8 to 30).
    pub prefix: u8,
    /// The anycast gateway: the network's first address, the same on every host.
    pub gateway: Ipv4Addr,
    /// The anycast gateway's MAC, derived from the VNI, the same on every host.
    pub gateway_mac: MacAddr,
    /// The bridge, `shb<vni>`.
    pub bridge: String,
    /// The VXLAN device, `shv<vni>`.
    pub vxlan: String,
}

impl ClusterNet {
    /// Derives a cluster's network from its VNI and node CIDR (`10.100.1.0/24`).
    pub fn new(key: &str, vni: u32, cidr: &str) -> Result<Self, PlanError> {
        let vni = Vni::new(vni)?;
        let bad = |why: &str| plan_err("status.nodeCidr", format!("{cidr:?}: {why}"));
        let (addr, len) = cidr
            .split_once('/')
            .ok_or_else(|| bad("use an IPv4 CIDR such as 10.100.1.0/24"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = len.parse().map_err(|_| bad("bad prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("the prefix length must be 8 to 30"));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(addr) & !mask != 0 {
            return Err(bad("host bits are set"));
        }
        let v = vni.get().to_be_bytes();
        Ok(ClusterNet {
            key: key.to_string(),
            vni,
            network: addr,
            prefix,
            gateway: Ipv4Addr::from(u32::from(addr) + 1),
            // Locally administered, unicast; the VNI makes it unique per cluster.
            gateway_mac: MacAddr([0x02, 0x5e, v[1], v[2], v[3], 0x01]),
            bridge: format!("{BRIDGE_PREFIX}{vni}"),
            vxlan: format!("{VXLAN_PREFIX}{vni}"),
        })
    }

    /// The netmask, e.g. 255.255.255.0.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(self.prefix)))
    }

    /// Whether `ip` is a usable VM address here: inside the network, neither the
    /// network nor broadcast address, nor the gateway.
    pub fn check_vm_ip(&self, ip: Ipv4Addr) -> Result<(), PlanError> {
        let mask = u32::from(self.netmask());
        let n = u32::from(ip);
        if n & mask != u32::from(self.network) {
            return Err(plan_err(
                "spec.ip",
                format!(
                    "{ip} is outside the cluster network {}/{}",
                    self.network, self.prefix
                ),
            ));
        }
        if n == u32::from(self.network)
            || n == u32::from(self.network) | !mask
            || ip == self.gateway
        {
            return Err(plan_err(
                "spec.ip",
                format!("{ip} is the network, broadcast or gateway address"),
            ));
        }
        Ok(())
    }

    /// The NoCloud seed URL of a machine, as put in its SMBIOS serial.
    pub fn seed_url(&self, machine: &str) -> String {
        format!("http://{}/{machine}/", self.gateway)
    }
}

/// The tap name of a VM: `sht` and 8 hex digits of a hash of `namespace/machine`.
pub fn tap_name(namespace: &str, machine: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{machine}").as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{TAP_PREFIX}{hex}")
}

/// One VM's port on its cluster's bridge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    /// The Machine's name (unique within its cluster's namespace).
    pub machine: String,
    /// The tap, see [`tap_name`].
    pub tap: String,
    /// The guest NIC's MAC.
    pub mac: MacAddr,
    /// The guest's address.
    pub ip: Ipv4Addr,
}

/// One cluster's desired state on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlan {
    /// The network.
    pub net: ClusterNet,
    /// Underlay addresses of the other hosts with VMs of this cluster.
    pub peers: BTreeSet<Ipv4Addr>,
    /// The VMs of this cluster on this host.
    pub ports: Vec<Port>,
}

/// The whole desired network state of this host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostPlan {
    /// This host's underlay address (the VXLAN source).
    pub underlay: Option<Ipv4Addr>,
    /// The clusters with VMs here, by VNI order.
    pub clusters: Vec<ClusterPlan>,
    /// The interface for NAT egress, when enabled (`--egress-interface`).
    pub egress: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_names_and_gateway() {
        let n = ClusterNet::new("org-a/c1", 4100, "10.100.1.0/24").expect("valid");
        assert_eq!(n.bridge, "shb4100");
        assert_eq!(n.vxlan, "shv4100");
        assert_eq!(n.gateway, Ipv4Addr::new(10, 100, 1, 1));
        assert_eq!(n.gateway_mac.to_string(), "02:5e:00:10:04:01");
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(n.seed_url("m1"), "http://10.100.1.1/m1/");
        assert!(n.check_vm_ip(Ipv4Addr::new(10, 100, 1, 10)).is_ok());
        assert!(n.check_vm_ip(Ipv4Addr::new(10, 100, 1, 1)).is_err());
        assert!(n.check_vm_ip(Ipv4Addr::new(10, 100, 2, 10)).is_err());
        assert!(ClusterNet::new("a/b", 0, "10.0.0.0/24").is_err());
        assert!(ClusterNet::new("a/b", 1, "10.0.0.1/24").is_err());
        assert!(ClusterNet::new("a/b", 1, "10.0.0.0/31").is_err());
        let long = format!("{VXLAN_PREFIX}{}", Vni::MAX);
        assert!(long.len() <= 15);
    }

    #[test]
    fn tap_names_are_short_and_stable() {
        let t = tap_name("org-a", "m1");
        assert_eq!(t.len(), 11);
        assert_eq!(t, tap_name("org-a", "m1"));
        assert_ne!(t, tap_name("org-b", "m1"));
    }

    #[test]
    fn parses_macs() {
        let m: MacAddr = "52:54:00:AB:cd:01".parse().expect("valid");
        assert_eq!(m.to_string(), "52:54:00:ab:cd:01");
        assert!("52:54:00:ab:cd".parse::<MacAddr>().is_err());
        assert!("52:54:00:ab:cd:01:02".parse::<MacAddr>().is_err());
    }
}
