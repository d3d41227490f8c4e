//! Proxy DHCP (the PXE specification's "ProxyDHCP"): Shoal answers PXE clients with
//! a boot file only and leaves addresses to the network's own DHCP server.
//!
//! A PXE client broadcasts a DISCOVER with the vendor class `PXEClient…`. The
//! network's server offers an address; Shoal offers, with no address, what to boot.
//! The client takes the address from the one and, after its ACK, asks Shoal again
//! on port 4011 for the boot file, which Shoal ACKs. Anything that is not a PXE
//! client gets no answer, so the network's DHCP is never contradicted.
//!
//! What to boot depends on who asks: a client that already runs iPXE (user class
//! `iPXE`) gets the HTTP URL of Shoal's boot script; a BIOS firmware gets
//! `undionly.kpxe` and a UEFI firmware `ipxe.efi`, over TFTP, which then ask again
//! as iPXE. [`respond`] is that decision as a pure function.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use dhcproto::v4::{
    DhcpOption, HType, Message, MessageType, Opcode, OptionCode, CLIENT_PORT, MIN_PACKET_SIZE,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use crate::mac::Mac;

/// The PXE boot server port, on which clients ask the proxy for the boot file
/// after their address is settled.
pub const PXE_PORT: u16 = 4011;

/// A DHCP wire failure.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// A message could not be decoded.
    #[error("undecodable DHCP message: {0}")]
    Decode(#[source] dhcproto::error::DecodeError),
    /// A message made the decoder panic (see [`decode`]).
    #[error("malformed DHCP message: the decoder gave up on it")]
    Malformed,
    /// A reply could not be encoded.
    #[error("unencodable DHCP reply: {0}")]
    Encode(#[source] dhcproto::error::EncodeError),
}

/// The firmware a client runs, from its DHCP options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// iPXE itself (user class `iPXE`): it can fetch the boot script over HTTP.
    Ipxe,
    /// A BIOS PXE ROM (architecture 0): it gets iPXE's `undionly.kpxe`.
    Bios,
    /// An x86-64 UEFI firmware (architecture 7 or 9): it gets `ipxe.efi`.
    Uefi,
    /// Another architecture, which Shoal has no iPXE binary for.
    Other(u16),
}

impl Client {
    /// Classifies a PXE request; `None` when it is not a PXE client at all.
    pub fn of(req: &Message) -> Option<Self> {
        let class = match req.opts().get(OptionCode::ClassIdentifier) {
            Some(DhcpOption::ClassIdentifier(c)) => c,
            _ => return None,
        };
        if !class.starts_with(b"PXEClient") {
            return None;
        }
        if let Some(DhcpOption::UserClass(uc)) = req.opts().get(OptionCode::UserClass) {
            if uc.windows(4).any(|w| w == b"iPXE") {
                return Some(Self::Ipxe);
            }
        }
        let arch = match req.opts().get(OptionCode::ClientSystemArchitecture) {
            Some(DhcpOption::ClientSystemArchitecture(a)) => u16::from(*a),
            // A PXE 2.1 client without option 93 is a BIOS one.
            _ => 0,
        };
        Some(match arch {
            0 => Self::Bios,
            7 | 9 => Self::Uefi,
            other => Self::Other(other),
        })
    }
}

/// What the proxy tells clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The proxy's own address on the provisioning network: the server identifier
    /// and the TFTP server (`siaddr`).
    pub server: Ipv4Addr,
    /// The boot script's URL, for iPXE clients.
    pub script_url: String,
    /// The file BIOS clients fetch over TFTP.
    pub bios_file: String,
    /// The file UEFI clients fetch over TFTP.
    pub uefi_file: String,
}

impl ProxyConfig {
    /// The boot file for `client`, or `None` for an architecture without one.
    pub fn boot_file(&self, client: Client) -> Option<&str> {
        match client {
            Client::Ipxe => Some(&self.script_url),
            Client::Bios => Some(&self.bios_file),
            Client::Uefi => Some(&self.uefi_file),
            Client::Other(_) => None,
        }
    }
}

/// What [`respond`] decided, for the caller's log and journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The reply to send.
    pub reply: Message,
    /// The client's MAC.
    pub mac: Mac,
    /// Its firmware.
    pub client: Client,
    /// The boot file offered.
    pub boot_file: String,
}

/// The client's MAC, if the request is an Ethernet BOOTREQUEST.
fn client_mac(req: &Message) -> Option<Mac> {
    if req.opcode() != Opcode::BootRequest || req.htype() != HType::Eth || req.hlen() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(req.chaddr().get(..6)?);
    Some(Mac(mac))
}

/// The proxy's answer to `req`, received on `port` (67 or [`PXE_PORT`]), or `None`:
/// not a PXE client, an architecture without an iPXE binary, a message that is not
/// a DISCOVER or REQUEST, or a REQUEST on port 67 meant for the address server.
pub fn respond(cfg: &ProxyConfig, req: &Message, port: u16) -> Option<Answer> {
    let mac = client_mac(req)?;
    let client = Client::of(req)?;
    let kind = match (req.opts().msg_type()?, port) {
        (MessageType::Discover, 67) => MessageType::Offer,
        (MessageType::Request | MessageType::Inform, PXE_PORT) => MessageType::Ack,
        (MessageType::Request, _) => {
            // On port 67 a REQUEST selects an address server; the proxy answers
            // only one that names it.
            match req.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(s)) if *s == cfg.server => MessageType::Ack,
                _ => return None,
            }
        }
        _ => return None,
    };
    let Some(boot_file) = cfg.boot_file(client) else {
        tracing::warn!(%mac, ?client, "PXE client of an architecture without an iPXE binary; not answered");
        return None;
    };
    let mut out = Message::default();
    out.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_xid(req.xid())
        .set_flags(req.flags())
        .set_ciaddr(req.ciaddr())
        .set_giaddr(req.giaddr())
        .set_siaddr(cfg.server)
        .set_chaddr(req.chaddr())
        .set_fname_str(boot_file);
    let opts = out.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(cfg.server));
    opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
    // PXE_DISCOVERY_CONTROL = 8: the boot file is in this reply, no boot server
    // discovery. Then the end of the encapsulated options.
    opts.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
    opts.insert(DhcpOption::BootfileName(boot_file.as_bytes().to_vec()));
    // The PXE specification has the client's UUID echoed.
    if let Some(id @ DhcpOption::ClientMachineIdentifier(_)) =
        req.opts().get(OptionCode::ClientMachineIdentifier)
    {
        opts.insert(id.clone());
    }
    Some(Answer {
        reply: out,
        mac,
        client,
        boot_file: boot_file.to_owned(),
    })
}

/// Where a reply to a request from `from` goes: back to its sender when it has an
/// address, else broadcast to the client port (it has none yet).
pub fn destination(from: SocketAddr) -> SocketAddr {
    match from {
        SocketAddr::V4(v4) if !v4.ip().is_unspecified() => from,
        _ => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)),
    }
}

/// Decodes a DHCPv4 message. The decoder asserts some option lengths in builds with
/// debug assertions, so it runs under `catch_unwind`: one packet must not stop the
/// proxy.
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

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::Architecture;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn cfg() -> ProxyConfig {
        ProxyConfig {
            server: Ipv4Addr::new(10, 78, 0, 2),
            script_url: "http://10.78.0.2:8080/boot.ipxe".into(),
            bios_file: "undionly.kpxe".into(),
            uefi_file: "ipxe.efi".into(),
        }
    }

    fn request(kind: MessageType, opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest)
            .set_htype(HType::Eth)
            .set_xid(0xfeed)
            .set_chaddr(&MAC);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    fn pxe(arch: u16) -> Vec<DhcpOption> {
        vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            DhcpOption::ClientSystemArchitecture(Architecture::from(arch)),
        ]
    }

    /// The reply survives encoding and decoding, as a client would read it.
    fn wire(m: &Message) -> Message {
        decode(&encode(m).expect("encodes")).expect("decodes")
    }

    #[test]
    fn a_bios_client_is_offered_undionly_with_no_address() {
        let answer = respond(&cfg(), &request(MessageType::Discover, pxe(0)), 67).expect("offer");
        let reply = wire(&answer.reply);
        assert_eq!(reply.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(
            reply.yiaddr(),
            Ipv4Addr::UNSPECIFIED,
            "a proxy gives no address"
        );
        assert_eq!(reply.siaddr(), Ipv4Addr::new(10, 78, 0, 2));
        assert_eq!(reply.xid(), 0xfeed);
        let file = reply
            .fname()
            .map(|f| f.split(|b| *b == 0).next().unwrap_or_default());
        assert_eq!(file, Some(&b"undionly.kpxe"[..]));
        assert_eq!(
            reply.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        assert_eq!(answer.client, Client::Bios);
        assert_eq!(answer.mac, Mac(MAC));
    }

    #[test]
    fn a_uefi_client_gets_ipxe_efi_and_ipxe_gets_the_script() {
        let uefi = respond(&cfg(), &request(MessageType::Discover, pxe(7)), 67).expect("offer");
        assert_eq!(uefi.boot_file, "ipxe.efi");
        let mut opts = pxe(0);
        opts.push(DhcpOption::UserClass(b"iPXE".to_vec()));
        let ipxe = respond(&cfg(), &request(MessageType::Discover, opts), 67).expect("offer");
        assert_eq!(ipxe.boot_file, "http://10.78.0.2:8080/boot.ipxe");
        assert_eq!(ipxe.client, Client::Ipxe);
    }

    #[test]
    fn a_request_on_the_pxe_port_is_acked_with_the_uuid_echoed() {
        let mut opts = pxe(0);
        opts.push(DhcpOption::ClientMachineIdentifier(vec![0; 17]));
        let mut req = request(MessageType::Request, opts);
        req.set_ciaddr(Ipv4Addr::new(10, 78, 0, 150));
        let answer = respond(&cfg(), &req, PXE_PORT).expect("ack");
        let reply = wire(&answer.reply);
        assert_eq!(reply.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(reply.ciaddr(), Ipv4Addr::new(10, 78, 0, 150));
        assert!(reply
            .opts()
            .get(OptionCode::ClientMachineIdentifier)
            .is_some());
    }

    #[test]
    fn everything_else_is_left_to_the_network_dhcp() {
        let c = cfg();
        // Not a PXE client.
        assert!(respond(&c, &request(MessageType::Discover, vec![]), 67).is_none());
        let other_class = vec![DhcpOption::ClassIdentifier(b"MSFT 5.0".to_vec())];
        assert!(respond(&c, &request(MessageType::Discover, other_class), 67).is_none());
        // A REQUEST for the address server's offer.
        let mut opts = pxe(0);
        opts.push(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 78, 0, 1)));
        assert!(respond(&c, &request(MessageType::Request, opts), 67).is_none());
        // A DISCOVER on the PXE port, a RELEASE, an architecture without iPXE.
        assert!(respond(&c, &request(MessageType::Discover, pxe(0)), PXE_PORT).is_none());
        assert!(respond(&c, &request(MessageType::Release, pxe(0)), 67).is_none());
        assert!(respond(&c, &request(MessageType::Discover, pxe(11)), 67).is_none());
    }

    #[test]
    fn replies_go_back_to_an_addressed_client_and_are_broadcast_otherwise() {
        let from: SocketAddr = "10.78.0.150:68".parse().expect("addr");
        assert_eq!(destination(from), from);
        let none: SocketAddr = "0.0.0.0:68".parse().expect("addr");
        assert_eq!(
            destination(none),
            "255.255.255.255:68".parse::<SocketAddr>().expect("addr")
        );
    }
}
