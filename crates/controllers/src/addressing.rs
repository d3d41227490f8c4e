//! Addresses inside one cluster's node network: the gateway takes the first host
//! address, Machines take the lowest free one from the tenth on.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The first host offset Machines may use; lower ones are kept for the gateway and
/// future services.
pub const FIRST_MACHINE_OFFSET: u32 = 10;

/// Parses `a.b.c.d/p` into the network address and prefix.
pub fn parse_cidr(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = cidr.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 30).then_some((addr, prefix))
}

/// The lowest address of `cidr` from [`FIRST_MACHINE_OFFSET`] on that is not in
/// `used`, or `None` when the network is full.
pub fn pick_ip(cidr: &str, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let (net, prefix) = parse_cidr(cidr)?;
    let size = 1u32 << (32 - u32::from(prefix));
    let base = u32::from(net);
    (FIRST_MACHINE_OFFSET..size - 1)
        .map(|offset| Ipv4Addr::from(base + offset))
        .find(|ip| !used.contains(ip))
}

/// The MAC of the Machine with `ip`: locally administered, unique per address.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("52:54:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_lowest_free_from_tenth() {
        let mut used = BTreeSet::new();
        let first = pick_ip("10.128.1.0/24", &used).expect("room");
        assert_eq!(first, Ipv4Addr::new(10, 128, 1, 10));
        used.insert(first);
        used.insert(Ipv4Addr::new(10, 128, 1, 12));
        assert_eq!(
            pick_ip("10.128.1.0/24", &used),
            Some(Ipv4Addr::new(10, 128, 1, 11))
        );
        assert_eq!(mac_for(first), "52:54:0a:80:01:0a");
    }

    #[test]
    fn full_network_has_no_address() {
        let used: BTreeSet<_> = (10..15).map(|d| Ipv4Addr::new(10, 0, 0, d)).collect();
        assert_eq!(pick_ip("10.0.0.0/28", &used), None);
        assert_eq!(pick_ip("bogus", &used), None);
    }
}
