//! The DHCP server of the anycast gateway: one per cluster bridge, static leases by
//! MAC, nothing dynamic. Every host answers for its own VMs only, so DHCP never has
//! to cross the VXLAN.
//!
//! [`respond`] is the whole protocol as a pure function from a request to the reply;
//! [`bind`] and [`serve`] put it on a UDP socket bound to one bridge inside the
//! agent's network namespace. The wire format is dhcproto's.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, PoisonError, RwLock};

use dhcproto::v4::{
    DhcpOption, HType, Message, MessageType, Opcode, OptionCode, CLIENT_PORT, MIN_PACKET_SIZE,
    SERVER_PORT,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::netns::{NetNs, NetnsError};
use super::plan::{ClusterNet, MacAddr, GUEST_MTU};

/// How long a lease lasts, in seconds. Leases are static, so this only sets how
/// often guests renew.
pub const LEASE_SECS: u32 = 86_400;

/// [`GUEST_MTU`] as the DHCP option carries it.
const GUEST_MTU_U16: u16 = {
    assert!(GUEST_MTU <= u16::MAX as u32);
    GUEST_MTU as u16
};

/// A DHCP socket or wire failure, naming the bridge.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// The socket could not be created inside the agent's namespace.
    #[error("DHCP socket for bridge {bridge}: {source}")]
    Netns {
        /// The bridge.
        bridge: String,
        /// The cause.
        #[source]
        source: NetnsError,
    },
    /// A socket operation failed (e.g. the bridge does not exist, or port 67 is
    /// taken on it).
    #[error("DHCP socket for bridge {bridge}: {op}: {source}")]
    Socket {
        /// The bridge.
        bridge: String,
        /// The operation, e.g. `bind 0.0.0.0:67`.
        op: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A message could not be decoded.
    #[error("undecodable DHCP message: {0}")]
    Decode(#[source] dhcproto::error::DecodeError),
    /// A message made dhcproto's decoder panic (see [`decode`]).
    #[error("malformed DHCP message: the decoder gave up on it")]
    Malformed,
    /// A reply could not be encoded.
    #[error("unencodable DHCP reply: {0}")]
    Encode(#[source] dhcproto::error::EncodeError),
}

/// One static lease: a VM's NIC and the address it always gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The Machine's name.
    pub machine: String,
    /// The guest NIC's MAC.
    pub mac: MacAddr,
    /// The guest's address.
    pub ip: Ipv4Addr,
    /// The guest's host name (DHCP option 12).
    pub hostname: String,
}

/// The leases of one cluster on this host, by MAC; shared between the agent, which
/// updates it, and the cluster's DHCP server.
#[derive(Debug, Clone, Default)]
pub struct LeaseTable {
    inner: Arc<RwLock<HashMap<MacAddr, Lease>>>,
}

impl LeaseTable {
    /// Adds or replaces the lease of `lease.mac`.
    pub fn set(&self, lease: Lease) {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(lease.mac, lease);
    }

    /// Removes the lease of `mac`, returning it.
    pub fn remove(&self, mac: &MacAddr) -> Option<Lease> {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(mac)
    }

    /// The lease of `mac`.
    pub fn get(&self, mac: &MacAddr) -> Option<Lease> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(mac)
            .cloned()
    }

    /// Every lease, in no particular order.
    pub fn all(&self) -> Vec<Lease> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// How many leases there are.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether there are no leases.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The client's MAC, if the request is an Ethernet BOOTREQUEST (anything else, and
/// any `hlen` but 6, is not for us; `Message::chaddr` would panic on `hlen > 16`).
fn client_mac(req: &Message) -> Option<MacAddr> {
    if req.opcode() != Opcode::BootRequest || req.htype() != HType::Eth || req.hlen() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(req.chaddr());
    Some(MacAddr(mac))
}

/// The reply to a DHCP request, or `None` when there is nothing to say: the MAC has
/// no lease, the message is a RELEASE, DECLINE or not a client request at all, or a
/// REQUEST selects another server.
///
/// DISCOVER gets an OFFER and REQUEST an ACK of the leased address; a REQUEST for
/// any other address gets a NAK, so the client starts over. INFORM gets an ACK with
/// the configuration but no address or lease time (RFC 2131 §3.4).
pub fn respond(net: &ClusterNet, leases: &LeaseTable, req: &Message) -> Option<Message> {
    let mac = client_mac(req)?;
    let kind = req.opts().msg_type()?;
    let Some(lease) = leases.get(&mac) else {
        tracing::info!(cluster = %net.key, bridge = %net.bridge, %mac, ?kind,
            "DHCP request from a MAC without a lease; ignored");
        return None;
    };
    match kind {
        MessageType::Discover => Some(reply(net, &lease, req, MessageType::Offer)),
        MessageType::Request => {
            if let Some(DhcpOption::ServerIdentifier(server)) =
                req.opts().get(OptionCode::ServerIdentifier)
            {
                if *server != net.gateway {
                    tracing::debug!(cluster = %net.key, %mac, %server,
                        "DHCP REQUEST selects another server; ignored");
                    return None;
                }
            }
            // SELECTING and INIT-REBOOT name the address in option 50; RENEWING and
            // REBINDING put it in ciaddr.
            let requested = match req.opts().get(OptionCode::RequestedIpAddress) {
                Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
                _ if !req.ciaddr().is_unspecified() => Some(req.ciaddr()),
                _ => None,
            };
            if requested == Some(lease.ip) {
                Some(reply(net, &lease, req, MessageType::Ack))
            } else {
                tracing::info!(cluster = %net.key, machine = %lease.machine, %mac,
                    ?requested, leased = %lease.ip, "DHCP REQUEST for another address; NAK");
                Some(nak(net, req, requested, lease.ip))
            }
        }
        MessageType::Inform => Some(reply(net, &lease, req, MessageType::Ack)),
        MessageType::Decline => {
            tracing::warn!(cluster = %net.key, machine = %lease.machine, %mac, ip = %lease.ip,
                "guest declined its address: another host on the network uses it");
            None
        }
        MessageType::Release => {
            tracing::debug!(cluster = %net.key, machine = %lease.machine, %mac,
                "guest released its address");
            None
        }
        other => {
            tracing::debug!(cluster = %net.key, %mac, kind = ?other,
                "not a DHCP client message; ignored");
            None
        }
    }
}

/// The BOOTREPLY skeleton: the request's xid, flags, giaddr and chaddr.
fn reply_header(req: &Message) -> Message {
    let mut out = Message::default();
    out.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_xid(req.xid())
        .set_flags(req.flags())
        .set_giaddr(req.giaddr())
        .set_chaddr(req.chaddr());
    // RFC 6842: a client identifier is echoed.
    if let Some(id @ DhcpOption::ClientIdentifier(_)) = req.opts().get(OptionCode::ClientIdentifier)
    {
        out.opts_mut().insert(id.clone());
    }
    out
}

fn reply(net: &ClusterNet, lease: &Lease, req: &Message, kind: MessageType) -> Message {
    let mut out = reply_header(req);
    let inform = req.opts().has_msg_type(MessageType::Inform);
    let broadcast = Ipv4Addr::from(u32::from(net.network) | !u32::from(net.netmask()));
    if inform {
        // The client has its address already.
        out.set_ciaddr(req.ciaddr());
    } else {
        if kind == MessageType::Ack {
            out.set_ciaddr(req.ciaddr());
        }
        out.set_yiaddr(lease.ip);
    }
    out.set_siaddr(net.gateway);
    let opts = out.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(net.gateway));
    if !inform {
        opts.insert(DhcpOption::AddressLeaseTime(LEASE_SECS));
        opts.insert(DhcpOption::Renewal(LEASE_SECS / 2));
        opts.insert(DhcpOption::Rebinding(LEASE_SECS / 8 * 7));
    }
    opts.insert(DhcpOption::SubnetMask(net.netmask()));
    opts.insert(DhcpOption::Router(vec![net.gateway]));
    // Guests resolve nothing outside their cluster, but their resolver configuration
    // must name a server: kubelet copies it into every pod, and CoreDNS forwards to
    // it. The gateway address refuses at once (no listener on 53).
    opts.insert(DhcpOption::DomainNameServer(vec![net.gateway]));
    opts.insert(DhcpOption::BroadcastAddr(broadcast));
    opts.insert(DhcpOption::InterfaceMtu(GUEST_MTU_U16));
    if !lease.hostname.is_empty() {
        opts.insert(DhcpOption::Hostname(lease.hostname.clone()));
    }
    out
}

fn nak(net: &ClusterNet, req: &Message, requested: Option<Ipv4Addr>, leased: Ipv4Addr) -> Message {
    let mut out = reply_header(req);
    let why = match requested {
        Some(ip) => format!("{ip} is not your address; yours is {leased}"),
        None => format!("no address requested; yours is {leased}"),
    };
    let opts = out.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Nak));
    opts.insert(DhcpOption::ServerIdentifier(net.gateway));
    opts.insert(DhcpOption::Message(why));
    out
}

/// Where a reply goes (RFC 2131 §4.1, without relays): to a client that has its
/// address (ciaddr set, so renewing or INFORM) by unicast, to anyone else, and with
/// every NAK, by broadcast, since the client has no address yet.
pub fn destination(req: &Message, reply: &Message) -> SocketAddrV4 {
    let nak = reply.opts().has_msg_type(MessageType::Nak);
    if !nak && !req.ciaddr().is_unspecified() {
        SocketAddrV4::new(req.ciaddr(), CLIENT_PORT)
    } else {
        SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
    }
}

/// Decodes a DHCPv4 message.
///
/// dhcproto's option decoder asserts some option lengths (`debug_assert!`) and
/// subtracts from others unchecked, so a malformed option can panic it in builds
/// with debug assertions. A guest must not be able to stop the server with one
/// packet, so decoding runs under `catch_unwind`.
pub fn decode(bytes: &[u8]) -> Result<Message, DhcpError> {
    std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(bytes)))
        .map_err(|_| DhcpError::Malformed)?
        .map_err(DhcpError::Decode)
}

/// Encodes a DHCPv4 message, padded to the 300 bytes BOOTP clients expect.
pub fn encode(msg: &Message) -> Result<Vec<u8>, DhcpError> {
    let mut buf = Vec::with_capacity(MIN_PACKET_SIZE);
    msg.encode(&mut Encoder::new(&mut buf))
        .map_err(DhcpError::Encode)?;
    if buf.len() < MIN_PACKET_SIZE {
        buf.resize(MIN_PACKET_SIZE, 0);
    }
    Ok(buf)
}

/// A UDP socket on 0.0.0.0:67 that sees only `bridge`, created inside `netns`,
/// nonblocking. Every cluster's server binds port 67 on its own bridge, so several
/// share the port in one namespace.
pub fn bind(netns: &NetNs, bridge: &str) -> Result<std::net::UdpSocket, DhcpError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let fail = |op: &'static str| {
        move |source| DhcpError::Socket {
            bridge: bridge.to_string(),
            op,
            source,
        }
    };
    netns
        .run(|| {
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
                .map_err(fail("socket"))?;
            socket
                .set_reuse_address(true)
                .map_err(fail("SO_REUSEADDR"))?;
            socket.set_broadcast(true).map_err(fail("SO_BROADCAST"))?;
            socket
                .bind_device(Some(bridge.as_bytes()))
                .map_err(fail("SO_BINDTODEVICE (does the bridge exist?)"))?;
            socket
                .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVER_PORT).into())
                .map_err(fail("bind 0.0.0.0:67"))?;
            socket.set_nonblocking(true).map_err(fail("O_NONBLOCK"))?;
            Ok(socket.into())
        })
        .map_err(|source| DhcpError::Netns {
            bridge: bridge.to_string(),
            source,
        })?
}

/// Serves DHCP on `socket` (from [`bind`]) for `net` until the task is dropped.
/// Garbage, and failures to send, are logged and skipped.
pub async fn serve(socket: tokio::net::UdpSocket, net: ClusterNet, leases: LeaseTable) {
    use tracing::Instrument;
    let span = tracing::info_span!("dhcp", cluster = %net.key, bridge = %net.bridge);
    serve_loop(socket, net, leases).instrument(span).await;
}

async fn serve_loop(socket: tokio::net::UdpSocket, net: ClusterNet, leases: LeaseTable) {
    tracing::info!("DHCP server started");
    // Larger than any Ethernet frame the bridge carries.
    let mut buf = vec![0u8; 2048];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!(error = %e, "receiving a DHCP message failed");
                // Do not spin on a persistent error.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(bytes) = buf.get(..len) else {
            continue;
        };
        let req = match decode(bytes) {
            Ok(req) => req,
            Err(e) => {
                tracing::debug!(%peer, len, error = %e, "ignoring an undecodable DHCP message");
                continue;
            }
        };
        let Some(reply) = respond(&net, &leases, &req) else {
            continue;
        };
        let to = destination(&req, &reply);
        let out = match encode(&reply) {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(error = %e, "encoding a DHCP reply failed");
                continue;
            }
        };
        tracing::debug!(xid = req.xid(), kind = ?reply.opts().msg_type(), %to, yiaddr = %reply.yiaddr(),
            "DHCP reply");
        if let Err(e) = socket.send_to(&out, to).await {
            tracing::warn!(%to, error = %e, "sending a DHCP reply failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::Flags;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x00, 0x00, 0x10]);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);

    fn net() -> ClusterNet {
        ClusterNet::new("org-t/c", 7, "10.77.0.0/24").expect("valid")
    }

    fn leases() -> LeaseTable {
        let t = LeaseTable::default();
        t.set(Lease {
            machine: "m1".into(),
            mac: MAC,
            ip: IP,
            hostname: "m1".into(),
        });
        t
    }

    fn request(kind: MessageType, mac: MacAddr) -> Message {
        let mut m = Message::default();
        m.set_xid(0xdead_beef)
            .set_flags(Flags::default().set_broadcast())
            .set_chaddr(&mac.0);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m
    }

    fn opt(m: &Message, code: OptionCode) -> Option<DhcpOption> {
        m.opts().get(code).cloned()
    }

    fn assert_config(m: &Message, net: &ClusterNet) {
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.xid(), 0xdead_beef);
        assert!(m.flags().broadcast());
        assert_eq!(m.chaddr(), &MAC.0);
        assert_eq!(m.siaddr(), net.gateway);
        assert_eq!(
            opt(m, OptionCode::SubnetMask),
            Some(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            opt(m, OptionCode::Router),
            Some(DhcpOption::Router(vec![net.gateway]))
        );
        assert_eq!(
            opt(m, OptionCode::DomainNameServer),
            Some(DhcpOption::DomainNameServer(vec![net.gateway]))
        );
        assert_eq!(
            opt(m, OptionCode::ServerIdentifier),
            Some(DhcpOption::ServerIdentifier(net.gateway))
        );
        assert_eq!(
            opt(m, OptionCode::BroadcastAddr),
            Some(DhcpOption::BroadcastAddr(Ipv4Addr::new(10, 77, 0, 255)))
        );
        assert_eq!(
            opt(m, OptionCode::InterfaceMtu),
            Some(DhcpOption::InterfaceMtu(1450))
        );
        assert_eq!(
            opt(m, OptionCode::Hostname),
            Some(DhcpOption::Hostname("m1".into()))
        );
    }

    #[test]
    fn discover_gets_an_offer_of_the_lease() {
        let net = net();
        let offer = respond(&net, &leases(), &request(MessageType::Discover, MAC)).expect("offer");
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(offer.yiaddr(), IP);
        assert_eq!(offer.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            opt(&offer, OptionCode::AddressLeaseTime),
            Some(DhcpOption::AddressLeaseTime(LEASE_SECS))
        );
        assert_config(&offer, &net);
        assert_eq!(
            destination(&request(MessageType::Discover, MAC), &offer),
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
        );
    }

    #[test]
    fn request_for_the_lease_gets_an_ack() {
        let net = net();
        let mut req = request(MessageType::Request, MAC);
        req.opts_mut().insert(DhcpOption::RequestedIpAddress(IP));
        req.opts_mut()
            .insert(DhcpOption::ServerIdentifier(net.gateway));
        req.opts_mut()
            .insert(DhcpOption::ClientIdentifier(vec![1, 2, 3]));
        let ack = respond(&net, &leases(), &req).expect("ack");
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), IP);
        assert_eq!(
            opt(&ack, OptionCode::ClientIdentifier),
            Some(DhcpOption::ClientIdentifier(vec![1, 2, 3]))
        );
        assert_config(&ack, &net);

        // Renewing: the address is in ciaddr, and the ACK goes there by unicast.
        let mut renew = request(MessageType::Request, MAC);
        renew.set_ciaddr(IP);
        let ack = respond(&net, &leases(), &renew).expect("ack");
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!((ack.ciaddr(), ack.yiaddr()), (IP, IP));
        assert_eq!(destination(&renew, &ack), SocketAddrV4::new(IP, 68));
    }

    #[test]
    fn request_for_another_address_gets_a_nak() {
        let net = net();
        let other = Ipv4Addr::new(10, 77, 0, 99);
        let mut req = request(MessageType::Request, MAC);
        req.opts_mut().insert(DhcpOption::RequestedIpAddress(other));
        let nak = respond(&net, &leases(), &req).expect("nak");
        assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            opt(&nak, OptionCode::ServerIdentifier),
            Some(DhcpOption::ServerIdentifier(net.gateway))
        );
        assert!(opt(&nak, OptionCode::AddressLeaseTime).is_none());

        // A renewal of the wrong address is NAKed, by broadcast.
        let mut renew = request(MessageType::Request, MAC);
        renew.set_ciaddr(other);
        let nak = respond(&net, &leases(), &renew).expect("nak");
        assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(
            destination(&renew, &nak),
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
        );

        // No address at all: NAK too.
        let nak = respond(&net, &leases(), &request(MessageType::Request, MAC)).expect("nak");
        assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    }

    #[test]
    fn request_selecting_another_server_is_ignored() {
        let mut req = request(MessageType::Request, MAC);
        req.opts_mut().insert(DhcpOption::RequestedIpAddress(IP));
        req.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 77, 0, 2)));
        assert!(respond(&net(), &leases(), &req).is_none());
    }

    #[test]
    fn inform_gets_configuration_without_an_address() {
        let net = net();
        let mut req = request(MessageType::Inform, MAC);
        req.set_ciaddr(IP);
        let ack = respond(&net, &leases(), &req).expect("ack");
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(ack.ciaddr(), IP);
        assert!(opt(&ack, OptionCode::AddressLeaseTime).is_none());
        assert_config(&ack, &net);
    }

    #[test]
    fn unknown_macs_and_other_messages_get_nothing() {
        let net = net();
        let unknown = MacAddr([0x52, 0x54, 0, 0, 0, 0x99]);
        for kind in [
            MessageType::Discover,
            MessageType::Request,
            MessageType::Inform,
        ] {
            assert!(respond(&net, &leases(), &request(kind, unknown)).is_none());
        }
        for kind in [
            MessageType::Release,
            MessageType::Decline,
            MessageType::Offer,
            MessageType::Ack,
        ] {
            assert!(respond(&net, &leases(), &request(kind, MAC)).is_none());
        }
        // A BOOTREPLY, a non-Ethernet chaddr and a message without a type.
        let mut reply = request(MessageType::Discover, MAC);
        reply.set_opcode(Opcode::BootReply);
        assert!(respond(&net, &leases(), &reply).is_none());
        let mut long = request(MessageType::Discover, MAC);
        long.set_chaddr(&[0x52; 16]);
        assert!(respond(&net, &leases(), &long).is_none());
        let mut untyped = request(MessageType::Discover, MAC);
        untyped.opts_mut().remove(OptionCode::MessageType);
        assert!(respond(&net, &leases(), &untyped).is_none());

        // Removing a lease takes effect at once.
        let table = leases();
        assert_eq!(table.len(), 1);
        assert!(table.remove(&MAC).is_some());
        assert!(table.is_empty());
        assert!(respond(&net, &table, &request(MessageType::Discover, MAC)).is_none());
    }

    #[test]
    fn garbage_never_panics() {
        let net = net();
        let table = leases();
        let valid = encode(&request(MessageType::Discover, MAC)).expect("encodes");
        assert!(respond(&net, &table, &decode(&valid).expect("decodes")).is_some());
        // Every truncation, and a cheap deterministic scramble of every byte.
        let mut seed = 0x9e37_79b9_u32;
        for cut in 0..valid.len() {
            if let Ok(m) = decode(&valid[..cut]) {
                let _ = respond(&net, &table, &m);
            }
            let mut bytes = valid.clone();
            for b in bytes.iter_mut().skip(cut) {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *b = seed.to_le_bytes()[0];
            }
            if let Ok(m) = decode(&bytes) {
                let _ = respond(&net, &table, &m);
            }
        }
        // hlen 200 would make dhcproto's chaddr() slice out of bounds.
        let mut bad_hlen = valid.clone();
        bad_hlen[2] = 200;
        let m = decode(&bad_hlen).expect("decodes");
        assert!(respond(&net, &table, &m).is_none());
    }

    /// Arbitrary bytes, and mutations of the requests guests send, through the
    /// guarded decoder and everything the server does with what it decodes
    /// (answer, address, encode): never a panic.
    #[test]
    fn fuzz_decode_respond_encode() {
        use shoal_testutil::fuzz::{mutate, plan, quiet_panics, Rng};
        let net = net();
        let table = leases();
        let mut requesting = request(MessageType::Request, MAC);
        requesting
            .opts_mut()
            .insert(DhcpOption::RequestedIpAddress(IP));
        let seeds: Vec<Vec<u8>> = [
            request(MessageType::Discover, MAC),
            requesting,
            request(MessageType::Inform, MAC),
        ]
        .iter()
        .map(|m| encode(m).expect("encodes"))
        .collect();
        let (seed, cases) = plan("agent DHCP", 20_000);
        let mut rng = Rng::new(seed);
        let (mut decoded, mut answered, mut caught) = (0, 0, 0);
        quiet_panics(|| {
            for _ in 0..cases {
                let input = mutate(&mut rng, &seeds, 240);
                match decode(&input) {
                    Ok(m) => {
                        decoded += 1;
                        if let Some(reply) = respond(&net, &table, &m) {
                            answered += 1;
                            let _ = destination(&m, &reply);
                            let _ = encode(&reply);
                        }
                    }
                    Err(DhcpError::Malformed) => caught += 1,
                    Err(_) => {}
                }
            }
        });
        eprintln!(
            "agent DHCP: {cases} inputs, {decoded} decoded, {answered} answered, {caught} decoder panics caught"
        );
        assert!(answered > 0, "the mutations reach the server's answers");
    }

    #[test]
    fn encodes_to_the_bootp_minimum() {
        let offer =
            respond(&net(), &leases(), &request(MessageType::Discover, MAC)).expect("offer");
        let bytes = encode(&offer).expect("encodes");
        assert!(bytes.len() >= MIN_PACKET_SIZE);
        assert_eq!(decode(&bytes).expect("decodes"), offer);
    }
}
