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
    // u64: a /0 holds 2^32 addresses. Host bits in `cidr` are ignored, so the
    // network address plus an offset stays inside the network.
    let host_bits = 32 - u32::from(prefix);
    let size = 1u64 << host_bits;
    let base = u64::from(u32::from(net) & u32::MAX.checked_shl(host_bits).unwrap_or(0));
    (u64::from(FIRST_MACHINE_OFFSET)..size - 1)
        .filter_map(|offset| u32::try_from(base + offset).ok())
        .map(Ipv4Addr::from)
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
