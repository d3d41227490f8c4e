//! Router advertisements that say "no IPv6 router here", for provisioning networks
//! without one (`shoal pxe --answer-router-solicitations`).
//!
//! iPXE configures IPv4 (DHCP) and IPv6 (router solicitations) side by side and
//! boots only when both are done; on a network where nothing advertises a router it
//! waits out its router solicitations, about 13 s, on every boot. An advertisement
//! with a router lifetime of 0 and no prefix ends that wait and changes nothing for
//! anyone else: RFC 4861 reads it as "this node is not a default router", and it
//! carries no address to configure.

use std::io::{self, Read};
use std::net::{Ipv6Addr, SocketAddrV6};

use socket2::{Domain, Protocol, Socket, Type};

/// ICMPv6 type of a router solicitation.
pub const ROUTER_SOLICITATION: u8 = 133;
/// ICMPv6 type of a router advertisement.
pub const ROUTER_ADVERTISEMENT: u8 = 134;
/// All routers, where solicitations go.
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// All nodes, where the advertisement goes.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The advertisement: no hop limit advice, no managed or other configuration,
/// router lifetime 0, no reachable or retransmit time, no options. The kernel
/// fills in the checksum of a raw ICMPv6 socket.
pub fn advertisement() -> [u8; 16] {
    let mut ra = [0u8; 16];
    ra[0] = ROUTER_ADVERTISEMENT;
    ra
}

/// Whether `packet` (an ICMPv6 message, as a raw socket reads it) is a router
/// solicitation.
pub fn is_solicitation(packet: &[u8]) -> bool {
    packet.len() >= 8 && packet[0] == ROUTER_SOLICITATION && packet[1] == 0
}

/// The socket for `interface` and the interface's index, or what failed and why.
pub fn bind(interface: &str) -> Result<(Socket, u32), (String, io::Error)> {
    let index_file = format!("/sys/class/net/{interface}/ifindex");
    let ifindex = std::fs::read_to_string(&index_file)
        .map_err(|e| (format!("reading {index_file}"), e))?
        .trim()
        .parse::<u32>()
        .map_err(|e| (format!("parsing {index_file}"), io::Error::other(e)))?;
    let socket = socket(interface, ifindex)
        .map_err(|e| ("a raw ICMPv6 socket in ff02::2 (is IPv6 on?)".to_owned(), e))?;
    Ok((socket, ifindex))
}

/// A blocking raw ICMPv6 socket on `interface` (index `ifindex`) in the
/// all-routers group, sending with the hop limit 255 that receivers require.
pub fn socket(interface: &str, ifindex: u32) -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.join_multicast_v6(&ALL_ROUTERS, ifindex)?;
    socket.set_multicast_hops_v6(255)?;
    socket.set_unicast_hops_v6(255)?;
    socket.set_multicast_if_v6(ifindex)?;
    Ok(socket)
}

/// Answers every router solicitation on `socket` with [`advertisement`] to all
/// nodes on `ifindex`, until receiving fails. It blocks: run it on a thread of its
/// own.
pub fn serve(socket: Socket, ifindex: u32) -> io::Result<()> {
    let to = SocketAddrV6::new(ALL_NODES, 0, 0, ifindex).into();
    let ra = advertisement();
    let mut buf = [0u8; 1500];
    let mut reader: &Socket = &socket;
    loop {
        let n = reader.read(&mut buf)?;
        if !is_solicitation(&buf[..n]) {
            continue;
        }
        // A failed send (e.g. while the interface's link-local address is still
        // tentative) loses one answer; the solicitation is repeated.
        match socket.send_to(&ra, &to) {
            Ok(_) => tracing::debug!("answered a router solicitation: no IPv6 router here"),
            Err(e) => tracing::warn!(error = %e, "router advertisement not sent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertisement_names_no_router_and_no_prefix() {
        let ra = advertisement();
        assert_eq!(ra[0], ROUTER_ADVERTISEMENT);
        // Code, checksum (the kernel's), hop limit, flags, router lifetime 0,
        // reachable and retransmit times 0, no options.
        assert!(ra[1..].iter().all(|b| *b == 0), "{ra:?}");
    }

    #[test]
    fn only_solicitations_are_answered() {
        assert!(is_solicitation(&[133, 0, 0x12, 0x34, 0, 0, 0, 0]));
        assert!(!is_solicitation(&[
            134, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]));
        assert!(!is_solicitation(&[133, 1, 0, 0, 0, 0, 0, 0]));
        assert!(!is_solicitation(&[133, 0, 0]));
        assert!(!is_solicitation(&[]));
    }
}
