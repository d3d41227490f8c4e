//! Property tests of the host agent's DHCP server ([`dhcp`]): for generated
//! networks, leases and client messages, the answer is the one RFC 2131 calls for,
//! carries the lease's address and the network's configuration, and survives
//! encoding and decoding unchanged; arbitrary bytes never panic the server.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use proptest::prelude::*;
use shoal_agent::net::dhcp::{self, Lease, LeaseTable, LEASE_SECS};
use shoal_agent::net::plan::{ClusterNet, MacAddr};

/// A cluster network and one lease in it.
#[derive(Debug, Clone)]
struct Setup {
    net: ClusterNet,
    lease: Lease,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1u32..(1 << 24),
        any::<u32>(),
        8u8..=30,
        any::<u32>(),
        any::<[u8; 6]>(),
        "[a-z][a-z0-9-]{0,20}",
    )
        .prop_map(|(vni, bits, prefix, host, mac, machine)| {
            let mask = u32::MAX << (32 - u32::from(prefix));
            let network = Ipv4Addr::from(bits & mask);
            let net = ClusterNet::new("org-p/c", vni, &format!("{network}/{prefix}"))
                .expect("a generated network is valid");
            // A VM address: neither the network, the gateway nor the broadcast.
            let size = !mask;
            let offset = 2 + host % (size - 2);
            let lease = Lease {
                machine: machine.clone(),
                mac: MacAddr(mac),
                ip: Ipv4Addr::from((bits & mask) + offset),
                hostname: machine,
            };
            Setup { net, lease }
        })
}

/// What the client asks.
#[derive(Debug, Clone)]
enum Ask {
    Discover,
    /// SELECTING: option 50, optionally option 54.
    Select {
        ip: Option<Ipv4Addr>,
        server: Option<Ipv4Addr>,
    },
    /// RENEWING: the address in ciaddr.
    Renew(Option<Ipv4Addr>),
    Inform,
}

/// A client message around an `Ask`.
#[derive(Debug, Clone)]
struct Client {
    ask: Ask,
    xid: u32,
    broadcast: bool,
    client_id: Option<Vec<u8>>,
    giaddr: Ipv4Addr,
}

fn client() -> impl Strategy<Value = Client> {
    // `None` in an address slot stands for "the lease's address", filled in later.
    let addr = prop::option::of(any::<u32>().prop_map(Ipv4Addr::from));
    (
        prop_oneof![
            Just(Ask::Discover),
            (addr.clone(), addr.clone()).prop_map(|(ip, server)| Ask::Select { ip, server }),
            addr.prop_map(Ask::Renew),
            Just(Ask::Inform),
        ],
        any::<u32>(),
        any::<bool>(),
        prop::option::of(prop::collection::vec(any::<u8>(), 2..20)),
        prop_oneof![
            Just(Ipv4Addr::UNSPECIFIED),
            any::<u32>().prop_map(Ipv4Addr::from)
        ],
    )
        .prop_map(|(ask, xid, broadcast, client_id, giaddr)| Client {
            ask,
            xid,
            broadcast,
            client_id,
            giaddr,
        })
}

fn message(c: &Client, s: &Setup, mac: MacAddr) -> Message {
    let mut m = Message::default();
    let flags = if c.broadcast {
        Flags::default().set_broadcast()
    } else {
        Flags::default()
    };
    m.set_xid(c.xid)
        .set_flags(flags)
        .set_giaddr(c.giaddr)
        .set_chaddr(&mac.0);
    let kind = match &c.ask {
        Ask::Discover => MessageType::Discover,
        Ask::Select { ip, server } => {
            let ip = ip.unwrap_or(s.lease.ip);
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
            if let Some(server) = server {
                m.opts_mut().insert(DhcpOption::ServerIdentifier(*server));
            }
            MessageType::Request
        }
        Ask::Renew(ip) => {
            m.set_ciaddr(ip.unwrap_or(s.lease.ip));
            MessageType::Request
        }
        Ask::Inform => {
            m.set_ciaddr(s.lease.ip);
            MessageType::Inform
        }
    };
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    if let Some(id) = &c.client_id {
        m.opts_mut()
            .insert(DhcpOption::ClientIdentifier(id.clone()));
    }
    m
}

fn opt(m: &Message, code: OptionCode) -> Option<DhcpOption> {
    m.opts().get(code).cloned()
}

/// The answer RFC 2131 calls for: its type, or `None` for silence.
fn expected_kind(c: &Client, s: &Setup) -> Option<MessageType> {
    match &c.ask {
        Ask::Discover => Some(MessageType::Offer),
        Ask::Select {
            server: Some(other),
            ..
        } if *other != s.net.gateway => None,
        Ask::Select { ip, .. } | Ask::Renew(ip) => Some(match ip {
            Some(ip) if *ip != s.lease.ip => MessageType::Nak,
            _ => MessageType::Ack,
        }),
        Ask::Inform => Some(MessageType::Ack),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_answer_is_the_one_the_protocol_calls_for(s in setup(), c in client()) {
        let leases = LeaseTable::default();
        leases.set(s.lease.clone());
        let req = message(&c, &s, s.lease.mac);
        let reply = dhcp::respond(&s.net, &leases, &req);
        let kind = expected_kind(&c, &s);
        prop_assert_eq!(reply.as_ref().and_then(|r| r.opts().msg_type()), kind, "{:?}", reply);
        let Some(reply) = reply else { return Ok(()) };

        // Every answer: a BOOTREPLY to this exchange, from the gateway.
        prop_assert_eq!(reply.opcode(), Opcode::BootReply);
        prop_assert_eq!((reply.xid(), reply.flags(), reply.giaddr()), (c.xid, req.flags(), c.giaddr));
        prop_assert_eq!(reply.chaddr(), &s.lease.mac.0[..]);
        prop_assert_eq!(opt(&reply, OptionCode::ServerIdentifier), Some(DhcpOption::ServerIdentifier(s.net.gateway)));
        prop_assert_eq!(opt(&reply, OptionCode::ClientIdentifier), c.client_id.clone().map(DhcpOption::ClientIdentifier));

        let inform = matches!(c.ask, Ask::Inform);
        if kind == Some(MessageType::Nak) {
            prop_assert_eq!(reply.yiaddr(), Ipv4Addr::UNSPECIFIED);
            prop_assert_eq!(opt(&reply, OptionCode::AddressLeaseTime), None);
        } else {
            // The lease's address (none for INFORM), the network's configuration.
            let yiaddr = if inform { Ipv4Addr::UNSPECIFIED } else { s.lease.ip };
            prop_assert_eq!(reply.yiaddr(), yiaddr);
            prop_assert_eq!(opt(&reply, OptionCode::SubnetMask), Some(DhcpOption::SubnetMask(s.net.netmask())));
            prop_assert_eq!(opt(&reply, OptionCode::Router), Some(DhcpOption::Router(vec![s.net.gateway])));
            let broadcast = Ipv4Addr::from(u32::from(s.net.network) | !u32::from(s.net.netmask()));
            prop_assert_eq!(opt(&reply, OptionCode::BroadcastAddr), Some(DhcpOption::BroadcastAddr(broadcast)));
            prop_assert_eq!(opt(&reply, OptionCode::Hostname), Some(DhcpOption::Hostname(s.lease.hostname.clone())));
            let times = [OptionCode::AddressLeaseTime, OptionCode::Renewal, OptionCode::Rebinding]
                .map(|code| match opt(&reply, code) {
                    Some(DhcpOption::AddressLeaseTime(t) | DhcpOption::Renewal(t) | DhcpOption::Rebinding(t)) => Some(t),
                    _ => None,
                });
            if inform {
                prop_assert_eq!(times, [None, None, None]);
            } else {
                let [Some(lease), Some(renew), Some(rebind)] = times else {
                    return Err(TestCaseError::fail(format!("lease times missing: {times:?}")));
                };
                prop_assert_eq!(lease, LEASE_SECS);
                prop_assert!(renew < rebind && rebind < lease, "T1 {} T2 {} lease {}", renew, rebind, lease);
            }
        }

        // Unicast only to a client that has its address and is not refused.
        let to = dhcp::destination(&req, &reply);
        let unicast = !req.ciaddr().is_unspecified() && kind != Some(MessageType::Nak);
        let want = if unicast { req.ciaddr() } else { Ipv4Addr::BROADCAST };
        prop_assert_eq!(to, SocketAddrV4::new(want, 68));

        // What goes on the wire comes back the same.
        let bytes = dhcp::encode(&reply).expect("a reply encodes");
        prop_assert!(bytes.len() >= 300);
        prop_assert_eq!(dhcp::decode(&bytes).expect("a reply decodes"), reply);
    }

    #[test]
    fn a_client_without_a_lease_gets_nothing(s in setup(), c in client(), other in any::<[u8; 6]>()) {
        prop_assume!(other != s.lease.mac.0);
        let leases = LeaseTable::default();
        leases.set(s.lease.clone());
        let req = message(&c, &s, MacAddr(other));
        prop_assert!(dhcp::respond(&s.net, &leases, &req).is_none());
        // Nor does anyone once the lease is gone.
        leases.remove(&s.lease.mac);
        prop_assert!(dhcp::respond(&s.net, &leases, &message(&c, &s, s.lease.mac)).is_none());
    }

    #[test]
    fn a_request_survives_the_wire(s in setup(), c in client()) {
        let req = message(&c, &s, s.lease.mac);
        let bytes = dhcp::encode(&req).expect("a request encodes");
        prop_assert_eq!(dhcp::decode(&bytes).expect("a request decodes"), req);
    }

    #[test]
    fn any_bytes_are_answered_or_ignored_without_a_panic(s in setup(), bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        let leases = LeaseTable::default();
        leases.set(s.lease.clone());
        if let Ok(req) = dhcp::decode(&bytes) {
            if let Some(reply) = dhcp::respond(&s.net, &leases, &req) {
                let _ = dhcp::destination(&req, &reply);
                prop_assert!(dhcp::encode(&reply).is_ok());
            }
        }
    }

    #[test]
    fn mutated_requests_are_answered_or_ignored_without_a_panic(
        s in setup(),
        c in client(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let leases = LeaseTable::default();
        leases.set(s.lease.clone());
        let mut bytes = dhcp::encode(&message(&c, &s, s.lease.mac)).expect("encodes");
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        if let Ok(req) = dhcp::decode(&bytes) {
            if let Some(reply) = dhcp::respond(&s.net, &leases, &req) {
                // Whatever was asked, an address given is the lease's.
                prop_assert!(reply.yiaddr().is_unspecified() || reply.yiaddr() == s.lease.ip);
                prop_assert!(dhcp::encode(&reply).is_ok());
            }
        }
    }
}
