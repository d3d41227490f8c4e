//! The gateway's DHCP and NoCloud metadata services over real sockets: a "server"
//! network namespace holds the cluster bridge with the gateway address, a "client"
//! namespace holds the other end of a veth on that bridge, as a guest's NIC would.
//! Needs root (namespaces, veths, bridges); everything lives in namespaces these
//! tests create and delete, never in the machine's own.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use shoal_agent::net::dhcp::{self, DhcpError, Lease, LeaseTable};
use shoal_agent::net::metadata::{self, MachineMeta, MetaTable, MetadataError};
use shoal_agent::net::netns::NetNs;
use shoal_agent::net::{ClusterNet, MacAddr};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;

const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x77, 0x00, 0x10]);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 11);
/// The veth ends: on the server's bridge, and the guest's NIC.
const SRV_VETH: &str = "vs";
const CLI_VETH: &str = "vc";

/// Fails (never skips) when not root: these tests are the proof that the services
/// work on real sockets, so a run without them must not look green.
fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "\n\n!!! net_services needs root (network namespaces, veths, bridges); \
         run it as root, as CI does !!!\n\n"
    );
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace of this test run, deleted on drop.
struct Ns {
    name: String,
    ns: NetNs,
}

impl Ns {
    async fn new() -> Ns {
        let name = format!(
            "shoal-s-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let ns = NetNs::ensure(&name).await.expect("creating a namespace");
        Ns { name, ns }
    }

    /// Runs `ip -n <ns> <args>`; only ever inside this namespace.
    fn ip(&self, args: &str) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args.split_whitespace())
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "ip -n {} {args}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!("could not delete network namespace {}: {out:?}", self.name);
        }
    }
}

/// The server namespace with the cluster bridge and the gateway on it, and a client
/// namespace whose NIC (`vc`, MAC [`GUEST_MAC`]) is a port of that bridge.
struct Fixture {
    net: ClusterNet,
    srv: Ns,
    cli: Ns,
}

async fn fixture() -> Fixture {
    let net = ClusterNet::new("org-t/c", 7, "10.77.0.0/24").expect("valid");
    let srv = Ns::new().await;
    let cli = Ns::new().await;
    let bridge = &net.bridge;
    srv.ip(&format!("link add {bridge} type bridge"));
    srv.ip(&format!(
        "addr add {}/{} dev {bridge}",
        net.gateway, net.prefix
    ));
    srv.ip(&format!("link set {bridge} up"));
    srv.ip(&format!(
        "link add {SRV_VETH} type veth peer name {CLI_VETH} netns {}",
        cli.name
    ));
    srv.ip(&format!("link set {SRV_VETH} master {bridge} up"));
    cli.ip(&format!("link set {CLI_VETH} address {GUEST_MAC} up"));
    cli.ip("link set lo up");
    Fixture { net, srv, cli }
}

// ---------------------------------------------------------------------------------
// DHCP

/// A DHCP client socket on the guest's NIC: 0.0.0.0:68, broadcast, bound to `vc`.
fn client_socket(cli: &Ns) -> tokio::net::UdpSocket {
    let std = cli
        .ns
        .run(|| -> std::io::Result<std::net::UdpSocket> {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_reuse_address(true)?;
            s.set_broadcast(true)?;
            s.bind_device(Some(CLI_VETH.as_bytes()))?;
            s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())?;
            s.set_nonblocking(true)?;
            Ok(s.into())
        })
        .expect("entering the client namespace")
        .expect("client socket");
    tokio::net::UdpSocket::from_std(std).expect("tokio socket")
}

fn client_message(kind: MessageType, mac: MacAddr, xid: u32) -> Message {
    let mut m = Message::default();
    m.set_xid(xid)
        .set_flags(Flags::default().set_broadcast())
        .set_chaddr(&mac.0);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::InterfaceMtu,
        OptionCode::Hostname,
    ]));
    m
}

/// Broadcasts `req` (retransmitting every half second, as clients do, while the
/// bridge port comes up) and returns the first reply with its xid, if any.
async fn exchange(sock: &tokio::net::UdpSocket, req: &Message, tries: u32) -> Option<Message> {
    let bytes = dhcp::encode(req).expect("encodes");
    let mut buf = vec![0u8; 2048];
    for _ in 0..tries {
        sock.send_to(&bytes, (Ipv4Addr::BROADCAST, 67))
            .await
            .expect("send");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(got) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
            let (len, _) = got.expect("recv");
            if let Ok(reply) = dhcp::decode(&buf[..len]) {
                if reply.xid() == req.xid() && reply.opcode() == Opcode::BootReply {
                    return Some(reply);
                }
            }
        }
    }
    None
}

fn opt(m: &Message, code: OptionCode) -> Option<DhcpOption> {
    m.opts().get(code).cloned()
}

#[tokio::test]
async fn dhcp_serves_static_leases_on_the_bridge() {
    require_root();
    let fx = fixture().await;
    let leases = LeaseTable::default();
    leases.set(Lease {
        machine: "m1".into(),
        mac: GUEST_MAC,
        ip: GUEST_IP,
        hostname: "m1".into(),
    });

    let std = dhcp::bind(&fx.srv.ns, &fx.net.bridge).expect("binding port 67 on the bridge");
    let server = tokio::spawn(dhcp::serve(
        tokio::net::UdpSocket::from_std(std).expect("tokio socket"),
        fx.net.clone(),
        leases.clone(),
    ));

    // Another cluster's server shares port 67 in the same namespace, on its bridge;
    // a bridge that does not exist is a typed error.
    fx.srv.ip("link add shb8 type bridge");
    let _second = dhcp::bind(&fx.srv.ns, "shb8").expect("a second server on port 67");
    assert!(matches!(
        dhcp::bind(&fx.srv.ns, "shb404"),
        Err(DhcpError::Socket { .. })
    ));

    let client = client_socket(&fx.cli);

    // DISCOVER -> OFFER of the lease, with the network's configuration.
    let discover = client_message(MessageType::Discover, GUEST_MAC, 0x1000_0001);
    let offer = exchange(&client, &discover, 20).await.expect("an OFFER");
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.yiaddr(), GUEST_IP);
    assert_eq!(offer.siaddr(), fx.net.gateway);
    assert_eq!(offer.chaddr(), &GUEST_MAC.0);
    assert_eq!(
        opt(&offer, OptionCode::SubnetMask),
        Some(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        opt(&offer, OptionCode::Router),
        Some(DhcpOption::Router(vec![fx.net.gateway]))
    );
    assert_eq!(
        opt(&offer, OptionCode::ServerIdentifier),
        Some(DhcpOption::ServerIdentifier(fx.net.gateway))
    );
    assert_eq!(
        opt(&offer, OptionCode::InterfaceMtu),
        Some(DhcpOption::InterfaceMtu(1450))
    );
    assert_eq!(
        opt(&offer, OptionCode::Hostname),
        Some(DhcpOption::Hostname("m1".into()))
    );
    assert!(matches!(
        opt(&offer, OptionCode::AddressLeaseTime),
        Some(DhcpOption::AddressLeaseTime(s)) if s > 0
    ));

    // REQUEST of the offered address -> ACK.
    let mut request = client_message(MessageType::Request, GUEST_MAC, 0x1000_0002);
    request
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(GUEST_IP));
    request
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(fx.net.gateway));
    let ack = exchange(&client, &request, 4).await.expect("an ACK");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), GUEST_IP);

    // REQUEST of another address -> NAK.
    let mut wrong = client_message(MessageType::Request, GUEST_MAC, 0x1000_0003);
    wrong
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(OTHER_IP));
    let nak = exchange(&client, &wrong, 4).await.expect("a NAK");
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));

    // A MAC without a lease gets nothing at all.
    let stranger = MacAddr([0x52, 0x54, 0x00, 0x99, 0x99, 0x99]);
    let unknown = client_message(MessageType::Discover, stranger, 0x1000_0004);
    assert!(exchange(&client, &unknown, 3).await.is_none());

    // Garbage does not stop the server.
    let mut bad_hlen = dhcp::encode(&discover).expect("encodes");
    bad_hlen[2] = 200;
    let mut noise = vec![0u8; 400];
    for (i, b) in noise.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    for junk in [&b""[..], b"\x01", b"hello, dhcp", &bad_hlen, &noise] {
        client
            .send_to(junk, (Ipv4Addr::BROADCAST, 67))
            .await
            .expect("send");
    }
    let again = client_message(MessageType::Discover, GUEST_MAC, 0x1000_0005);
    let offer = exchange(&client, &again, 4)
        .await
        .expect("an OFFER after garbage");
    assert_eq!(offer.yiaddr(), GUEST_IP);
    assert!(!server.is_finished(), "the DHCP server stopped");

    // A lease removed is no longer served.
    leases.remove(&GUEST_MAC);
    let gone = client_message(MessageType::Discover, GUEST_MAC, 0x1000_0006);
    assert!(exchange(&client, &gone, 2).await.is_none());

    server.abort();
}

// ---------------------------------------------------------------------------------
// Metadata

/// One HTTP/1.1 request from `src` in the client namespace to the gateway, port 80;
/// the status and the body.
async fn http(cli: &Ns, src: Ipv4Addr, method: &str, path: &str, body: &str) -> (u16, String) {
    let stream = cli
        .ns
        .run(|| -> std::io::Result<TcpStream> {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            s.bind(&SocketAddrV4::new(src, 0).into())?;
            s.connect_timeout(
                &SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 80).into(),
                Duration::from_secs(10),
            )?;
            Ok(s.into())
        })
        .expect("entering the client namespace")
        .expect("connecting to the gateway");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 10.77.0.1\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let raw = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut stream = stream;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(request.as_bytes())?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw)?;
        Ok(raw)
    })
    .await
    .expect("joins")
    .expect("HTTP exchange");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, body.to_string())
}

#[tokio::test]
async fn metadata_serves_each_machine_to_itself_only() {
    require_root();
    let fx = fixture().await;
    fx.cli.ip(&format!("addr add {GUEST_IP}/24 dev {CLI_VETH}"));
    fx.cli.ip(&format!("addr add {OTHER_IP}/24 dev {CLI_VETH}"));

    let table = MetaTable::default();
    for (name, ip) in [("m1", GUEST_IP), ("m2", OTHER_IP)] {
        table.set(
            name,
            MachineMeta {
                ip,
                instance_id: format!("i-{name}"),
                hostname: name.into(),
                user_data: format!("#cloud-config\nhostname: {name}\n"),
                vendor_data: String::new(),
            },
        );
    }
    let (phone_tx, mut phone_rx) = metadata::PhoneHomeSender::channel(
        8,
        prometheus_client::metrics::counter::Counter::default(),
    );
    let router = metadata::router(fx.net.key.clone(), table, phone_tx);

    // An address that is not on the bridge is a typed error.
    assert!(matches!(
        metadata::bind(
            &fx.srv.ns,
            SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 80)
        ),
        Err(MetadataError::Socket { .. })
    ));
    let std = metadata::bind(&fx.srv.ns, SocketAddrV4::new(fx.net.gateway, 80))
        .expect("binding the gateway, port 80");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(metadata::serve(
        tokio::net::TcpListener::from_std(std).expect("tokio listener"),
        router,
        async move {
            let _ = stop_rx.await;
        },
    ));

    let (status, body) = http(&fx.cli, GUEST_IP, "GET", "/m1/meta-data", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "instance-id: i-m1\nlocal-hostname: m1\n");
    let (status, body) = http(&fx.cli, GUEST_IP, "GET", "/m1/user-data", "").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "#cloud-config\nhostname: m1\n")
    );
    let (status, body) = http(&fx.cli, GUEST_IP, "GET", "/m1/vendor-data", "").await;
    assert_eq!((status, body.as_str()), (200, ""));

    // m2's documents go to m2's address only.
    let (status, body) = http(&fx.cli, GUEST_IP, "GET", "/m2/meta-data", "").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("metadata of m2 is served only to 10.77.0.11"),
        "{body}"
    );
    let (status, body) = http(&fx.cli, OTHER_IP, "GET", "/m2/user-data", "").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "#cloud-config\nhostname: m2\n")
    );

    let (status, _) = http(&fx.cli, GUEST_IP, "GET", "/nope/meta-data", "").await;
    assert_eq!(status, 404);
    let (status, _) = http(&fx.cli, GUEST_IP, "GET", "/m1/secrets", "").await;
    assert_eq!(status, 404);

    // Phone-home reaches the agent, from the machine itself only.
    let (status, body) = http(
        &fx.cli,
        GUEST_IP,
        "POST",
        "/m1/phone-home",
        "instance_id=i-m1&hostname=m1&fqdn=m1.local",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let call = tokio::time::timeout(Duration::from_secs(5), phone_rx.recv())
        .await
        .expect("a phone-home in time")
        .expect("the channel is open");
    assert_eq!(call.cluster, "org-t/c");
    assert_eq!(call.machine, "m1");
    assert_eq!(
        call.fields.get("instance_id").map(String::as_str),
        Some("i-m1")
    );
    assert_eq!(
        call.fields.get("fqdn").map(String::as_str),
        Some("m1.local")
    );

    let (status, _) = http(
        &fx.cli,
        GUEST_IP,
        "POST",
        "/m2/phone-home",
        "instance_id=i-m2",
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        phone_rx.try_recv().is_err(),
        "a refused phone-home was delivered"
    );

    // Graceful shutdown ends serve with Ok.
    let _ = stop_tx.send(());
    let served = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("shuts down in time")
        .expect("joins");
    assert!(served.is_ok(), "{served:?}");
}
