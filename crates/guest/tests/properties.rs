//! Property tests of the guest's two parsers of network bytes: the HTTP/1 request
//! reader of the stand-in services ([`http1`]) and the DHCP client's decoding and
//! classification of replies ([`dhcp`]). Arbitrary bytes never panic either, and
//! what a generated request or reply carries comes back out unchanged.

use std::io::{self, Read};
use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::Encodable;
use proptest::prelude::*;
use shoal_guest::dhcp::{self, Lease, LeaseError, Offer, Reply};
use shoal_guest::http1::{self, read_request, Request, Status};

/// A reader that hands out its bytes in the chunk sizes given, as a socket may.
struct Trickle<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    reads: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self
            .sizes
            .get(self.reads % self.sizes.len().max(1))
            .copied()
            .unwrap_or(usize::MAX);
        self.reads += 1;
        let n = size.max(1).min(buf.len()).min(self.data.len());
        let (now, rest) = self.data.split_at(n);
        buf[..n].copy_from_slice(now);
        self.data = rest;
        Ok(n)
    }
}

/// A request as a client writes it.
#[derive(Debug, Clone)]
struct Written {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn header() -> impl Strategy<Value = (String, String)> {
    ("[A-Za-z][A-Za-z0-9-]{0,15}", "[!-~]([ -~]{0,30}[!-~])?").prop_filter(
        "not a framing header",
        |(name, _)| {
            !name.eq_ignore_ascii_case("content-length")
                && !name.eq_ignore_ascii_case("transfer-encoding")
        },
    )
}

fn written() -> impl Strategy<Value = Written> {
    (
        prop_oneof![
            Just("GET".to_string()),
            Just("POST".to_string()),
            Just("HEAD".to_string()),
            "[A-Z]{1,10}"
        ],
        "/[A-Za-z0-9/._~%-]{0,60}",
        prop::option::of("[A-Za-z0-9=&%/?-]{0,30}"),
        prop::collection::vec(header(), 0..10),
        prop::collection::vec(any::<u8>(), 0..3000),
    )
        .prop_map(|(method, path, query, headers, body)| Written {
            method,
            path,
            query,
            headers,
            body,
        })
}

/// The request's bytes; `length_at` places `Content-Length` among the headers.
fn render(w: &Written, length_at: usize) -> Vec<u8> {
    let target = match &w.query {
        Some(q) => format!("{}?{q}", w.path),
        None => w.path.clone(),
    };
    let mut lines = vec![format!("{} {target} HTTP/1.1", w.method)];
    let mut headers: Vec<String> = w.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
    if !w.body.is_empty() || length_at.is_multiple_of(2) {
        let at = length_at % (headers.len() + 1);
        headers.insert(at, format!("Content-Length: {}", w.body.len()));
    }
    lines.extend(headers);
    let mut out = format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes();
    out.extend_from_slice(&w.body);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn a_request_reads_back_as_written(w in written(), length_at in any::<usize>(), sizes in prop::collection::vec(1usize..3000, 0..8)) {
        let bytes = render(&w, length_at);
        let mut stream = Trickle { data: &bytes, sizes, reads: 0 };
        let req = read_request(&mut stream);
        prop_assert!(req.is_ok(), "{:?}: {:?}", String::from_utf8_lossy(&bytes), req.err());
        prop_assert_eq!(req.expect("checked"), Request { method: w.method.clone(), path: w.path.clone() });
        // The whole body was read, so closing the connection does not reset it.
        prop_assert!(stream.data.is_empty(), "{} bytes left unread", stream.data.len());
    }

    #[test]
    fn any_bytes_are_read_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..4000), sizes in prop::collection::vec(1usize..3000, 0..4)) {
        match read_request(&mut Trickle { data: &bytes, sizes, reads: 0 }) {
            Ok(req) => {
                prop_assert!(!req.method.is_empty());
                prop_assert!(!req.path.contains('?'));
            }
            Err(e) => {
                // Only a request that never started goes unanswered on a stream
                // that does not fail.
                prop_assert_eq!(e.status().is_none(), bytes.is_empty(), "{}", e);
            }
        }
    }

    #[test]
    fn a_cut_head_is_refused(w in written(), cut in any::<usize>()) {
        let bytes = render(&w, 0);
        let head_end = bytes.windows(4).position(|x| x == b"\r\n\r\n").expect("a head") + 4;
        let cut = cut % head_end;
        let err = read_request(&mut io::Cursor::new(&bytes[..cut]));
        prop_assert!(err.is_err(), "a head cut at {} of {} bytes", cut, head_end);
        let status = err.err().and_then(|e| e.status());
        prop_assert_eq!(status, (cut > 0).then_some(Status::BadRequest));
    }

    #[test]
    fn framing_the_guest_refuses_gets_its_status(w in written(), extra in 1u64..1_000_000, chunked in any::<bool>()) {
        let mut bytes = render(&Written { body: vec![], ..w }, 1);
        let (header, status) = if chunked {
            ("Transfer-Encoding: chunked".to_string(), Status::LengthRequired)
        } else {
            (format!("Content-Length: {}", http1::MAX_BODY + extra), Status::PayloadTooLarge)
        };
        let at = bytes.windows(2).position(|x| x == b"\r\n").expect("a request line") + 2;
        bytes.splice(at..at, format!("{header}\r\n").into_bytes());
        let err = read_request(&mut io::Cursor::new(&bytes)).err();
        prop_assert_eq!(err.and_then(|e| e.status()), Some(status));
    }
}

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// A server's reply as the guest may receive it.
#[derive(Debug, Clone)]
struct ServerReply {
    kind: MessageType,
    xid: u32,
    yiaddr: Ipv4Addr,
    siaddr: Ipv4Addr,
    server_id: Option<Ipv4Addr>,
    prefix: Option<u8>,
    routers: Option<Vec<Ipv4Addr>>,
    dns: Option<Vec<Ipv4Addr>>,
    mtu: Option<u16>,
    hostname: Option<String>,
    lease_secs: Option<u32>,
}

fn addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn server_reply() -> impl Strategy<Value = ServerReply> {
    (
        (
            prop_oneof![
                Just(MessageType::Offer),
                Just(MessageType::Ack),
                Just(MessageType::Nak)
            ],
            any::<u32>(),
            prop_oneof![3 => addr(), 1 => Just(Ipv4Addr::UNSPECIFIED)],
            addr(),
            prop::option::of(addr()),
        ),
        (
            prop::option::of(0u8..=32),
            prop::option::of(prop::collection::vec(addr(), 1..4)),
            prop::option::of(prop::collection::vec(addr(), 1..4)),
            prop::option::of(any::<u16>()),
            prop::option::of("[a-z0-9][a-z0-9-]{0,30}"),
            prop::option::of(any::<u32>()),
        ),
    )
        .prop_map(
            |(
                (kind, xid, yiaddr, siaddr, server_id),
                (prefix, routers, dns, mtu, hostname, lease_secs),
            )| {
                ServerReply {
                    kind,
                    xid,
                    yiaddr,
                    siaddr,
                    server_id,
                    prefix,
                    routers,
                    dns,
                    mtu,
                    hostname,
                    lease_secs,
                }
            },
        )
}

fn mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

fn encode(r: &ServerReply) -> Vec<u8> {
    let mut m = Message::new_with_id(
        r.xid,
        Ipv4Addr::UNSPECIFIED,
        r.yiaddr,
        r.siaddr,
        Ipv4Addr::UNSPECIFIED,
        &MAC,
    );
    m.set_opcode(Opcode::BootReply);
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(r.kind));
    if let Some(s) = r.server_id {
        opts.insert(DhcpOption::ServerIdentifier(s));
    }
    if let Some(p) = r.prefix {
        opts.insert(DhcpOption::SubnetMask(mask(p)));
    }
    if let Some(routers) = &r.routers {
        opts.insert(DhcpOption::Router(routers.clone()));
    }
    if let Some(dns) = &r.dns {
        opts.insert(DhcpOption::DomainNameServer(dns.clone()));
    }
    if let Some(mtu) = r.mtu {
        opts.insert(DhcpOption::InterfaceMtu(mtu));
    }
    if let Some(h) = &r.hostname {
        opts.insert(DhcpOption::Hostname(h.clone()));
    }
    if let Some(t) = r.lease_secs {
        opts.insert(DhcpOption::AddressLeaseTime(t));
    }
    m.to_vec().expect("a generated reply encodes")
}

/// What the client must make of `r`, from the protocol alone.
fn expected(r: &ServerReply) -> Option<Reply> {
    let server = r.server_id.unwrap_or(r.siaddr);
    match r.kind {
        MessageType::Offer if r.yiaddr.is_unspecified() => None,
        MessageType::Offer => Some(Reply::Offer(Offer {
            ip: r.yiaddr,
            server,
        })),
        MessageType::Nak => Some(Reply::Nak),
        _ if r.yiaddr.is_unspecified() => Some(Reply::BadAck(LeaseError::NoAddress)),
        _ => Some(match r.prefix {
            None => Reply::BadAck(LeaseError::NoMask),
            Some(prefix_len) => Reply::Ack(Lease {
                ip: r.yiaddr,
                prefix_len,
                router: r.routers.as_ref().and_then(|x| x.first().copied()),
                mtu: r.mtu,
                hostname: r.hostname.clone(),
                dns: r.dns.clone().unwrap_or_default(),
                server,
                lease_secs: r.lease_secs,
            }),
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_reply_comes_back_as_the_server_meant_it(r in server_reply()) {
        let msg = dhcp::decode(&encode(&r)).expect("a reply decodes");
        prop_assert_eq!(dhcp::classify(&msg, r.xid, &MAC), expected(&r));
        // Another exchange or another client: not ours.
        prop_assert_eq!(dhcp::classify(&msg, r.xid.wrapping_add(1), &MAC), None);
        prop_assert_eq!(dhcp::classify(&msg, r.xid, &[0x52, 0x54, 0, 0, 0, 1]), None);
    }

    #[test]
    fn requests_carry_what_the_client_put_in(xid in any::<u32>(), secs in any::<u16>(), mac in any::<[u8; 6]>(), ip in addr(), server in addr()) {
        let offer = Offer { ip, server };
        for (msg, kind) in [(dhcp::discover(&mac, xid, secs), MessageType::Discover), (dhcp::request(&mac, xid, secs, &offer), MessageType::Request)] {
            let back = dhcp::decode(&msg.to_vec().expect("encodes")).expect("decodes");
            prop_assert_eq!((back.opcode(), back.xid(), back.secs()), (Opcode::BootRequest, xid, secs));
            prop_assert_eq!(back.chaddr(), &mac[..]);
            prop_assert!(back.flags().broadcast());
            prop_assert_eq!(back.opts().msg_type(), Some(kind));
            if kind == MessageType::Request {
                prop_assert_eq!(back.opts().get(OptionCode::RequestedIpAddress), Some(&DhcpOption::RequestedIpAddress(ip)));
                prop_assert_eq!(back.opts().get(OptionCode::ServerIdentifier), Some(&DhcpOption::ServerIdentifier(server)));
            }
            // The client never mistakes its own request for a reply.
            prop_assert_eq!(dhcp::classify(&back, xid, &mac), None);
        }
    }

    #[test]
    fn masks_and_prefix_lengths_agree(prefix in 0u8..=32, bits in any::<u32>()) {
        prop_assert_eq!(dhcp::prefix_len(mask(prefix)), Some(prefix));
        let m = u32::from(mask(prefix));
        // A mask with a hole in it is no prefix.
        if bits & !m != 0 && prefix < 32 && bits & !m != !m {
            let holed = Ipv4Addr::from(m | (bits & !m & !(1 << (31 - u32::from(prefix)))));
            if u32::from(holed) != m {
                prop_assert_eq!(dhcp::prefix_len(holed), None, "{}", holed);
            }
        }
    }

    #[test]
    fn any_bytes_decode_or_are_refused_without_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..700), xid in any::<u32>()) {
        if let Ok(msg) = dhcp::decode(&bytes) {
            let _ = dhcp::classify(&msg, msg.xid(), &MAC);
            let _ = dhcp::classify(&msg, xid, &MAC);
        }
    }

    #[test]
    fn mutated_replies_decode_or_are_refused_without_a_panic(r in server_reply(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut bytes = encode(&r);
        for (at, b) in flips {
            // Mostly in the options, after the header and the magic cookie.
            let i = 236 + at % (bytes.len() - 236);
            bytes[i] = b;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        if let Ok(msg) = dhcp::decode(&bytes) {
            if let Some(Reply::Ack(lease)) = dhcp::classify(&msg, msg.xid(), &MAC) {
                prop_assert!(lease.prefix_len <= 32 && !lease.ip.is_unspecified());
            }
        }
    }
}
