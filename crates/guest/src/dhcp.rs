//! A DHCPv4 client (DISCOVER, OFFER, REQUEST, ACK) over a UDP socket, with message
//! building and lease extraction as pure functions.
//!
//! In the guest the socket is bound to `0.0.0.0:68` on the interface
//! (`SO_BINDTODEVICE`) with `SO_BROADCAST`, and sends to `255.255.255.255:67`; the
//! BROADCAST flag asks the server to broadcast its answers, since the interface has
//! no address yet. The exchange itself takes any socket and server address, so it is
//! tested against a real server socket on loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use tokio::net::UdpSocket;

use crate::say;

/// The DHCP server port.
pub const SERVER_PORT: u16 = 67;
/// The DHCP client port.
pub const CLIENT_PORT: u16 = 68;
/// How many REQUESTs go unanswered before the client starts over with DISCOVER.
const REQUEST_TRIES: u32 = 4;

/// Why no lease was obtained.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// The client socket could not be set up.
    #[error("DHCP socket on {iface}: {action}: {source}")]
    Socket {
        /// The interface.
        iface: String,
        /// What was being done.
        action: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Sending or receiving failed.
    #[error("DHCP on {iface}: {action}: {source}")]
    Io {
        /// The interface.
        iface: String,
        /// `send` or `receive`.
        action: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A message could not be encoded.
    #[error("encoding a DHCP message: {0}")]
    Encode(#[from] dhcproto::error::EncodeError),
    /// No ACK arrived in time.
    #[error("no DHCP lease on {iface} within {waited:?} ({sent} messages sent, last state {state}): is a DHCP server answering on this network?")]
    Timeout {
        /// The interface.
        iface: String,
        /// How long the client tried.
        waited: Duration,
        /// How many DISCOVERs and REQUESTs it sent.
        sent: u32,
        /// `discovering` or `requesting`.
        state: &'static str,
    },
}

/// Why an ACK does not make a usable lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// `yiaddr` is 0.0.0.0.
    #[error("the ACK assigns no address (yiaddr 0.0.0.0)")]
    NoAddress,
    /// Option 1 is missing.
    #[error("the ACK has no subnet mask (option 1)")]
    NoMask,
    /// Option 1 is not a contiguous mask.
    #[error("the ACK's subnet mask {0} is not contiguous")]
    BadMask(Ipv4Addr),
}

/// A 48-bit Ethernet address.
pub type Mac = [u8; 6];

/// What the server offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The offered address.
    pub ip: Ipv4Addr,
    /// The server identifier (option 54), or the packet's `siaddr`.
    pub server: Ipv4Addr,
}

/// The configuration the server gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The address.
    pub ip: Ipv4Addr,
    /// The prefix length from the subnet mask.
    pub prefix_len: u8,
    /// The default gateway (first router), if any.
    pub router: Option<Ipv4Addr>,
    /// The interface MTU (option 26), if any.
    pub mtu: Option<u16>,
    /// The host name (option 12), if any.
    pub hostname: Option<String>,
    /// DNS servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// The server that granted the lease.
    pub server: Ipv4Addr,
    /// The lease time in seconds (option 51), if any.
    pub lease_secs: Option<u32>,
}

/// A server's answer, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// DHCPOFFER.
    Offer(Offer),
    /// DHCPACK with a usable lease.
    Ack(Lease),
    /// DHCPACK without a usable lease.
    BadAck(LeaseError),
    /// DHCPNAK.
    Nak,
}

const PARAMS: [OptionCode; 6] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::Hostname,
    OptionCode::InterfaceMtu,
    OptionCode::AddressLeaseTime,
];

/// An empty BOOTREQUEST from `mac`, built by decoding a fixed header: dhcproto's
/// constructors draw a random xid through `rand`, whose first use blocks in
/// `getrandom(2)` until the kernel's entropy pool is ready, and a fresh TCG guest
/// without virtio-rng can wait minutes for that.
fn blank_request(mac: &Mac, xid: u32) -> Message {
    let mut raw = [0u8; 241];
    raw[0] = 1; // BOOTREQUEST
    raw[1] = 1; // Ethernet
    raw[2] = 6; // hardware address length
    raw[4..8].copy_from_slice(&xid.to_be_bytes());
    raw[28..34].copy_from_slice(mac);
    raw[236..240].copy_from_slice(&[99, 130, 83, 99]); // the DHCP magic cookie
    raw[240] = 255; // end of options
    Message::decode(&mut Decoder::new(&raw)).expect("a fixed, valid BOOTP header")
}

fn base(mac: &Mac, xid: u32, secs: u16, kind: MessageType) -> Message {
    let mut msg = blank_request(mac, xid);
    msg.set_flags(Flags::default().set_broadcast())
        .set_secs(secs);
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(mac);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    opts.insert(DhcpOption::ParameterRequestList(PARAMS.to_vec()));
    opts.insert(DhcpOption::MaxMessageSize(1500));
    msg
}

/// A DHCPDISCOVER from `mac`.
pub fn discover(mac: &Mac, xid: u32, secs: u16) -> Message {
    base(mac, xid, secs, MessageType::Discover)
}

/// The DHCPREQUEST that accepts `offer` (SELECTING state: options 50 and 54).
pub fn request(mac: &Mac, xid: u32, secs: u16, offer: &Offer) -> Message {
    let mut msg = base(mac, xid, secs, MessageType::Request);
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.ip));
    msg.opts_mut()
        .insert(DhcpOption::ServerIdentifier(offer.server));
    msg
}

/// A message that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    /// dhcproto refused it.
    #[error("not a DHCP message: {0}")]
    Decode(#[from] dhcproto::error::DecodeError),
    /// dhcproto panicked on it (caught).
    #[error("a malformed DHCP message (the decoder panicked)")]
    Malformed,
}

/// Decodes a DHCPv4 message received from the network.
///
/// dhcproto's option decoder asserts some option lengths (`debug_assert!`) and
/// subtracts from others unchecked, so a malformed option can panic it; as in the
/// host agent's server, decoding runs under `catch_unwind`, so that one packet
/// cannot stop the guest's boot.
pub fn decode(bytes: &[u8]) -> Result<Message, Undecodable> {
    std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(bytes)))
        .map_err(|_| Undecodable::Malformed)?
        .map_err(Undecodable::Decode)
}

/// Classifies a message received on the client port: `None` unless it is a
/// BOOTREPLY to this exchange (`xid`) and this client (`mac`).
pub fn classify(msg: &Message, xid: u32, mac: &Mac) -> Option<Reply> {
    // dhcproto's chaddr() slices its 16-byte field by hlen: check hlen first.
    if msg.opcode() != Opcode::BootReply
        || msg.xid() != xid
        || !(6..=16).contains(&msg.hlen())
        || msg.chaddr().get(..6)? != mac
    {
        return None;
    }
    let server = match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => msg.siaddr(),
    };
    match msg.opts().msg_type()? {
        MessageType::Offer if !msg.yiaddr().is_unspecified() => Some(Reply::Offer(Offer {
            ip: msg.yiaddr(),
            server,
        })),
        MessageType::Ack => Some(match lease(msg, server) {
            Ok(l) => Reply::Ack(l),
            Err(e) => Reply::BadAck(e),
        }),
        MessageType::Nak => Some(Reply::Nak),
        _ => None,
    }
}

/// The prefix length of a contiguous subnet mask.
pub fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

fn lease(msg: &Message, server: Ipv4Addr) -> Result<Lease, LeaseError> {
    if msg.yiaddr().is_unspecified() {
        return Err(LeaseError::NoAddress);
    }
    let opts = msg.opts();
    let mask = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => *m,
        _ => return Err(LeaseError::NoMask),
    };
    let prefix_len = prefix_len(mask).ok_or(LeaseError::BadMask(mask))?;
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let mtu = match opts.get(OptionCode::InterfaceMtu) {
        Some(DhcpOption::InterfaceMtu(m)) => Some(*m),
        _ => None,
    };
    let hostname = match opts.get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) => Some(h.trim_end_matches('\0').to_string()),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => vec![],
    };
    let lease_secs = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => Some(*t),
        _ => None,
    };
    Ok(Lease {
        ip: msg.yiaddr(),
        prefix_len,
        router,
        mtu,
        hostname,
        dns,
        server,
        lease_secs,
    })
}

/// The client's socket on `iface`: `0.0.0.0:68`, bound to the device, broadcast on.
pub fn guest_socket(iface: &str) -> Result<UdpSocket, DhcpError> {
    let err = |action| {
        move |source| DhcpError::Socket {
            iface: iface.to_string(),
            action,
            source,
        }
    };
    let std_sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, CLIENT_PORT))
        .map_err(err("binding 0.0.0.0:68"))?;
    std_sock
        .set_nonblocking(true)
        .map_err(err("setting non-blocking"))?;
    let sock = UdpSocket::from_std(std_sock).map_err(err("registering with tokio"))?;
    sock.bind_device(Some(iface.as_bytes()))
        .map_err(err("SO_BINDTODEVICE"))?;
    sock.set_broadcast(true).map_err(err("SO_BROADCAST"))?;
    Ok(sock)
}

/// The server address the guest sends to: `255.255.255.255:67`.
pub fn broadcast_server() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::BROADCAST, SERVER_PORT))
}

enum State {
    Discovering,
    Requesting { offer: Offer, sent: u32 },
}

/// Runs the exchange on `sock` towards `server` until an ACK gives a lease: a message
/// every `retry`, for at most `deadline`. A NAK, a bad ACK or [`REQUEST_TRIES`]
/// unanswered REQUESTs start over with a fresh DISCOVER.
pub async fn obtain(
    sock: &UdpSocket,
    server: SocketAddr,
    iface: &str,
    mac: &Mac,
    retry: Duration,
    deadline: Duration,
) -> Result<Lease, DhcpError> {
    let io = |action| {
        move |source| DhcpError::Io {
            iface: iface.to_string(),
            action,
            source,
        }
    };
    let start = Instant::now();
    let mut xid: u32 = rand_xid();
    let mut state = State::Discovering;
    let mut sent = 0u32;
    let mut buf = vec![0u8; 1500];
    loop {
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            return Err(DhcpError::Timeout {
                iface: iface.to_string(),
                waited: elapsed,
                sent,
                state: match state {
                    State::Discovering => "discovering",
                    State::Requesting { .. } => "requesting",
                },
            });
        }
        let secs = u16::try_from(elapsed.as_secs()).unwrap_or(u16::MAX);
        let msg = match &mut state {
            State::Discovering => discover(mac, xid, secs),
            State::Requesting { offer, sent } => {
                *sent += 1;
                request(mac, xid, secs, offer)
            }
        };
        sock.send_to(&msg.to_vec()?, server)
            .await
            .map_err(io("send"))?;
        sent += 1;
        if sent % 10 == 1 {
            say!("DHCP on {iface}: sent message {sent}");
        }
        let wait_until = tokio::time::Instant::now() + retry.min(deadline - elapsed);
        // Read answers until one moves the exchange on or it is time to resend.
        let next = loop {
            let recv = tokio::time::timeout_at(wait_until, sock.recv_from(&mut buf)).await;
            let Ok(recv) = recv else { break None };
            let (n, _from) = recv.map_err(io("receive"))?;
            let reply = match decode(buf.get(..n).unwrap_or_default()) {
                Ok(reply) => reply,
                Err(e) => {
                    say!("DHCP on {iface}: ignoring a message: {e}");
                    continue;
                }
            };
            match (classify(&reply, xid, mac), &state) {
                (Some(Reply::Offer(offer)), State::Discovering) => {
                    say!(
                        "DHCP on {iface}: offer of {} from {}",
                        offer.ip,
                        offer.server
                    );
                    break Some(State::Requesting { offer, sent: 0 });
                }
                (Some(Reply::Ack(lease)), State::Requesting { .. }) => return Ok(lease),
                (Some(Reply::BadAck(e)), State::Requesting { .. }) => {
                    say!("DHCP on {iface}: unusable ACK ({e}); starting over");
                    break Some(State::Discovering);
                }
                (Some(Reply::Nak), State::Requesting { .. }) => {
                    say!("DHCP on {iface}: NAK; starting over");
                    break Some(State::Discovering);
                }
                _ => continue,
            }
        };
        match next {
            Some(s) => {
                if matches!(s, State::Discovering) {
                    xid = rand_xid();
                }
                state = s;
            }
            None => {
                if let State::Requesting { sent, .. } = state {
                    if sent >= REQUEST_TRIES {
                        xid = rand_xid();
                        state = State::Discovering;
                    }
                }
            }
        }
    }
}

/// A fresh transaction id. It needs to be unpredictable only to other clients on
/// the segment, so std's non-blocking hash keys (`GRND_INSECURE`) suffice; see
/// [`blank_request`] for why `rand` is avoided.
fn rand_xid() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn reply(req: &Message, kind: MessageType, yiaddr: Ipv4Addr, opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::new_with_id(
            req.xid(),
            Ipv4Addr::UNSPECIFIED,
            yiaddr,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::UNSPECIFIED,
            req.chaddr(),
        );
        m.set_opcode(Opcode::BootReply);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)));
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    fn full_opts() -> Vec<DhcpOption> {
        vec![
            DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
            DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 1)]),
            DhcpOption::InterfaceMtu(1450),
            DhcpOption::Hostname("vm0".into()),
            DhcpOption::AddressLeaseTime(86400),
        ]
    }

    /// Arbitrary bytes, and mutations of the replies a server sends, through the
    /// guarded decoder and the client's handling of what it decodes: never a
    /// panic, and every untouched reply still classifies.
    #[test]
    fn fuzz_decode_and_classify() {
        use shoal_testutil::fuzz::{mutate, plan, quiet_panics, Rng};
        let req = discover(&MAC, 7, 3);
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        let seeds: Vec<Vec<u8>> = [
            reply(&req, MessageType::Offer, ip, full_opts()),
            reply(&req, MessageType::Ack, ip, full_opts()),
            reply(&req, MessageType::Nak, Ipv4Addr::UNSPECIFIED, vec![]),
        ]
        .iter()
        .map(|m| m.to_vec().expect("encodes"))
        .collect();
        for s in &seeds {
            let m = decode(s).expect("a seed decodes");
            assert!(classify(&m, 7, &MAC).is_some());
        }
        let (seed, cases) = plan("guest DHCP", 20_000);
        let mut rng = Rng::new(seed);
        let (mut decoded, mut caught) = (0, 0);
        // The options start after the 236-byte header and the 4-byte magic cookie.
        quiet_panics(|| {
            for _ in 0..cases {
                let input = mutate(&mut rng, &seeds, 240);
                match decode(&input) {
                    Ok(m) => {
                        decoded += 1;
                        let _ = classify(&m, m.xid(), &MAC);
                        let _ = classify(&m, 7, &MAC);
                    }
                    Err(Undecodable::Malformed) => caught += 1,
                    Err(Undecodable::Decode(_)) => {}
                }
            }
        });
        eprintln!("guest DHCP: {cases} inputs, {decoded} decoded, {caught} decoder panics caught");
        assert!(decoded > 0, "the mutations reach the client's handling");
    }

    #[test]
    fn an_oversized_hlen_is_not_this_client() {
        let req = discover(&MAC, 7, 3);
        let mut bytes = reply(
            &req,
            MessageType::Offer,
            Ipv4Addr::new(10, 0, 0, 5),
            full_opts(),
        )
        .to_vec()
        .expect("encodes");
        bytes[2] = 200;
        let m = decode(&bytes).expect("decodes");
        assert!(classify(&m, 7, &MAC).is_none());
    }

    #[test]
    fn messages_carry_what_servers_need() {
        let d = discover(&MAC, 7, 3);
        assert_eq!(d.htype(), dhcproto::v4::HType::Eth);
        assert_eq!(d.hlen(), 6);
        assert_eq!(
            (d.ciaddr(), d.yiaddr()),
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
        );
        let bytes = d.to_vec().expect("encodes");
        let d = Message::decode(&mut Decoder::new(&bytes)).expect("decodes");
        assert_eq!(d.opcode(), Opcode::BootRequest);
        assert_eq!(d.xid(), 7);
        assert_eq!(d.secs(), 3);
        assert!(d.flags().broadcast());
        assert_eq!(&d.chaddr()[..6], &MAC);
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        let offer = Offer {
            ip: Ipv4Addr::new(10, 0, 0, 5),
            server: Ipv4Addr::new(10, 0, 0, 1),
        };
        let r = request(&MAC, 7, 4, &offer);
        assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            r.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(offer.ip))
        );
        assert_eq!(
            r.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(offer.server))
        );
    }

    #[test]
    fn replies_are_classified_and_leases_extracted() {
        let req = discover(&MAC, 9, 0);
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        let offer = reply(&req, MessageType::Offer, ip, vec![]);
        assert_eq!(
            classify(&offer, 9, &MAC),
            Some(Reply::Offer(Offer {
                ip,
                server: Ipv4Addr::new(10, 0, 0, 1)
            }))
        );
        // Another exchange or another client: not ours.
        assert_eq!(classify(&offer, 10, &MAC), None);
        assert_eq!(classify(&offer, 9, &[0; 6]), None);
        // Our own request echoed back (BOOTREQUEST): not a reply.
        assert_eq!(classify(&req, 9, &MAC), None);

        let ack = reply(&req, MessageType::Ack, ip, full_opts());
        assert_eq!(
            classify(&ack, 9, &MAC),
            Some(Reply::Ack(Lease {
                ip,
                prefix_len: 24,
                router: Some(Ipv4Addr::new(10, 0, 0, 1)),
                mtu: Some(1450),
                hostname: Some("vm0".into()),
                dns: vec![],
                server: Ipv4Addr::new(10, 0, 0, 1),
                lease_secs: Some(86400),
            }))
        );
        let no_mask = reply(&req, MessageType::Ack, ip, vec![]);
        assert_eq!(
            classify(&no_mask, 9, &MAC),
            Some(Reply::BadAck(LeaseError::NoMask))
        );
        let nak = reply(&req, MessageType::Nak, Ipv4Addr::UNSPECIFIED, vec![]);
        assert_eq!(classify(&nak, 9, &MAC), Some(Reply::Nak));
    }

    #[test]
    fn masks_become_prefix_lengths() {
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 240, 0)), Some(20));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 0, 255, 0)), None);
    }

    /// A real DHCP server socket on loopback that drops the first DISCOVER, NAKs the
    /// first REQUEST, then grants the lease: the client must retransmit and start over.
    #[tokio::test]
    async fn the_exchange_survives_loss_and_a_nak() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind server");
        let server_addr = server.local_addr().expect("addr");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        let srv = tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            let mut seen = Vec::new();
            let mut discovers = 0;
            let mut requests = 0;
            loop {
                let (n, from) = server.recv_from(&mut buf).await.expect("recv");
                let req = Message::decode(&mut Decoder::new(&buf[..n])).expect("decode");
                let kind = req.opts().msg_type().expect("type");
                seen.push(kind);
                let answer = match kind {
                    MessageType::Discover => {
                        discovers += 1;
                        if discovers == 1 {
                            continue;
                        }
                        reply(&req, MessageType::Offer, ip, vec![])
                    }
                    MessageType::Request => {
                        requests += 1;
                        if requests == 1 {
                            reply(&req, MessageType::Nak, Ipv4Addr::UNSPECIFIED, vec![])
                        } else {
                            reply(&req, MessageType::Ack, ip, full_opts())
                        }
                    }
                    _ => continue,
                };
                let done = answer.opts().msg_type() == Some(MessageType::Ack);
                server
                    .send_to(&answer.to_vec().expect("encode"), from)
                    .await
                    .expect("send");
                if done {
                    return seen;
                }
            }
        });
        let lease = obtain(
            &client,
            server_addr,
            "test0",
            &MAC,
            Duration::from_millis(100),
            Duration::from_secs(10),
        )
        .await
        .expect("lease");
        assert_eq!(lease.ip, ip);
        assert_eq!(lease.mtu, Some(1450));
        let seen = srv.await.expect("server");
        use MessageType::*;
        assert_eq!(seen, vec![Discover, Discover, Request, Discover, Request]);
    }

    #[tokio::test]
    async fn no_server_means_a_timeout_error() {
        let sink = UdpSocket::bind("127.0.0.1:0").await.expect("bind sink");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
        let err = obtain(
            &client,
            sink.local_addr().expect("addr"),
            "test0",
            &MAC,
            Duration::from_millis(50),
            Duration::from_millis(300),
        )
        .await
        .expect_err("nobody answers");
        match err {
            DhcpError::Timeout { sent, state, .. } => {
                assert!(sent >= 3, "{sent}");
                assert_eq!(state, "discovering");
            }
            other => panic!("{other}"),
        }
    }
}
