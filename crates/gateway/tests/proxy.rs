//! The gateway's proxy against real TLS and HTTP servers on loopback, with static
//! routes straight to them: SNI and Host routing, client certificates passing
//! through, bad clients, dead backends and route changes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use prometheus_client::registry::Registry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use shoal_gateway::{
    Backend, ClusterRoute, Gateway, Listener, Metrics, ProxyConfig, RouteTable, Via,
};
use shoal_pki::{CertificateAuthority, IssuedCert};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOUR: Duration = Duration::from_secs(3600);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

struct Pki {
    ca: CertificateAuthority,
    server: IssuedCert,
}

fn pki(domain: &str) -> Result<Pki> {
    let ca = CertificateAuthority::generate("test-ca")?;
    let server = ca.issue_server(
        "apiserver",
        &[format!("api.{domain}"), format!("*.{domain}")],
        &[],
        HOUR,
    )?;
    Ok(Pki { ca, server })
}

/// A TLS server that answers each request with `<id> <client CN or ->`; `/readyz`
/// answers `ok`.
async fn tls_backend(
    id: &'static str,
    pki: &Pki,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(
        pki.ca.cert_pem().as_bytes(),
    )?)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(
                pki.server.cert_pem.as_bytes(),
            )?],
            PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes())?,
        )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    return;
                };
                let cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| shoal_pki_cn(c.as_ref()))
                    .unwrap_or_else(|| "-".into());
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let body = if head.starts_with(b"GET /readyz") {
                    "ok".to_string()
                } else {
                    format!("{id} {cn}")
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Ok((addr, task))
}

fn shoal_pki_cn(der: &[u8]) -> String {
    // The subject's CN: the string after the last OID 2.5.4.3 (the issuer's comes first).
    let oid = [0x06, 0x03, 0x55, 0x04, 0x03];
    der.windows(oid.len())
        .rposition(|w| w == oid)
        .and_then(|i| {
            let len = usize::from(*der.get(i + 6)?);
            std::str::from_utf8(der.get(i + 7..i + 7 + len)?)
                .ok()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}

/// A plain HTTP server answering `<id>` to anything.
async fn http_backend(id: &'static str) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{id}",
                    id.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok((addr, task))
}

fn backend(machine: &str, addr: SocketAddr) -> Backend {
    let SocketAddr::V4(target) = addr else {
        panic!("IPv4 loopback expected")
    };
    Backend {
        machine: machine.into(),
        host: "local".into(),
        target,
        via: Via::Direct,
    }
}

struct Rig {
    gw: Gateway,
    tls: SocketAddr,
    http: SocketAddr,
    metrics: Metrics,
}

async fn rig(config: ProxyConfig) -> Result<Rig> {
    let metrics = Metrics::default();
    let gw = Gateway::new(config, metrics.clone());
    let tls = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let (tls_addr, http_addr) = (tls.local_addr()?, http.local_addr()?);
    gw.serve(tls, Listener::Tls);
    gw.serve(http, Listener::Http);
    Ok(Rig {
        gw,
        tls: tls_addr,
        http: http_addr,
        metrics,
    })
}

/// One HTTPS GET through the gateway with `sni`, trusting `ca`, optionally with a
/// client certificate; the response body.
async fn https_get(
    gateway: SocketAddr,
    sni: &str,
    ca: &CertificateAuthority,
    client: Option<&IssuedCert>,
) -> Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())?)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder.with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes())?],
            PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    let conn = TcpStream::connect(gateway).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_owned())?, conn)
        .await
        .context("TLS handshake through the gateway")?;
    tls.write_all(format!("GET /x HTTP/1.1\r\nHost: {sni}\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8(out)?;
    let Some((_, body)) = text.split_once("\r\n\r\n") else {
        bail!("no HTTP response: {text:?}")
    };
    Ok(body.to_owned())
}

async fn http_get(gateway: SocketAddr, host: &str) -> Result<String> {
    let mut conn = TcpStream::connect(gateway).await?;
    conn.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await?;
    let text = String::from_utf8(out)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// True when the gateway closes the connection (EOF or reset) within `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(within, conn.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// The counter of `outcome` once it reaches `want` (connection tasks count when they
/// end, a moment after the client sees the close), or its value after 3 s.
async fn counter_reaches(metrics: &Metrics, outcome: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = counter(metrics, outcome);
        if v == want || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counter(metrics: &Metrics, outcome: &str) -> String {
    let mut reg = Registry::default();
    metrics.register(&mut reg);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
    // Summed over both listeners.
    let total: u64 = text
        .lines()
        .filter(|l| {
            l.starts_with("shoal_gateway_connections_total")
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    total.to_string()
}

#[tokio::test]
async fn routes_by_sni_and_host_and_passes_client_certs_through() -> Result<()> {
    let a = pki("a.acme.test")?;
    let b = pki("b.acme.test")?;
    let (a_api, _t1) = tls_backend("a-cp-0", &a).await?;
    let (b_api, _t2) = tls_backend("b-cp-0", &b).await?;
    let (a_web, _t3) = http_backend("a-w-0").await?;
    let (b_web, _t4) = http_backend("b-w-0").await?;
    let (a_web_tls, _t5) = tls_backend("a-w-0-tls", &a).await?;
    let r = rig(ProxyConfig::default()).await?;
    r.gw.set_table(RouteTable::from_routes([
        ClusterRoute {
            key: "org-acme/a".into(),
            domain: "a.acme.test".into(),
            ca_pem: Some(a.ca.cert_pem().into()),
            api: vec![backend("org-acme/a-cp-0", a_api)],
            ingress_http: vec![backend("org-acme/a-w-0", a_web)],
            ingress_https: vec![backend("org-acme/a-w-0", a_web_tls)],
        },
        ClusterRoute {
            key: "org-acme/b".into(),
            domain: "b.acme.test".into(),
            ca_pem: Some(b.ca.cert_pem().into()),
            api: vec![backend("org-acme/b-cp-0", b_api)],
            ingress_http: vec![backend("org-acme/b-w-0", b_web)],
            ..Default::default()
        },
    ]));
    let alice = a.ca.issue_client("alice:laptop", &["dev".into()], HOUR)?;
    assert_eq!(
        https_get(r.tls, "api.a.acme.test", &a.ca, Some(&alice)).await?,
        "a-cp-0 alice:laptop"
    );
    assert_eq!(
        https_get(r.tls, "api.a.acme.test", &a.ca, None).await?,
        "a-cp-0 -"
    );
    assert_eq!(
        https_get(r.tls, "api.b.acme.test", &b.ca, None).await?,
        "b-cp-0 -"
    );
    // A's trust pointed at B's name: B's certificate is not signed by A's CA.
    assert!(https_get(r.tls, "api.b.acme.test", &a.ca, Some(&alice))
        .await
        .is_err());
    assert_eq!(http_get(r.http, "shop.a.acme.test").await?, "a-w-0");
    // Ingress TLS by SNI reaches the worker's TLS port, not the API.
    assert_eq!(
        https_get(r.tls, "shop.a.acme.test", &a.ca, None).await?,
        "a-w-0-tls -"
    );
    assert_eq!(http_get(r.http, "shop.b.acme.test:80").await?, "b-w-0");
    assert_eq!(counter_reaches(&r.metrics, "proxied", "7").await, "7");
    Ok(())
}

#[tokio::test]
async fn bad_clients_are_closed_and_counted() -> Result<()> {
    let r = rig(ProxyConfig {
        hello_timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .await?;
    r.gw.set_table(RouteTable::from_routes([ClusterRoute {
        key: "org-acme/a".into(),
        domain: "a.acme.test".into(),
        ..Default::default()
    }]));
    // Garbage instead of a ClientHello.
    let mut c = TcpStream::connect(r.tls).await?;
    c.write_all(b"\x00\x01garbage garbage garbage\r\n\r\n")
        .await?;
    assert!(
        closed_within(&mut c, Duration::from_secs(2)).await,
        "garbage is closed at once"
    );
    // A ClientHello without SNI, from a real TLS client connecting by IP.
    let ca = CertificateAuthority::generate("x")?;
    let by_ip = https_get(r.tls, "127.0.0.1", &ca, None).await;
    assert!(by_ip.is_err(), "no SNI must not be proxied");
    // Unknown name, and a known cluster without backends.
    assert!(https_get(r.tls, "api.nope.acme.test", &ca, None)
        .await
        .is_err());
    assert!(https_get(r.tls, "api.a.acme.test", &ca, None)
        .await
        .is_err());
    assert_eq!(
        http_get(r.http, "nope.example").await?,
        "shoal gateway: nope.example is not a cluster this gateway routes\n"
    );
    // Slow loris: half a ClientHello, then nothing.
    let mut slow = TcpStream::connect(r.tls).await?;
    slow.write_all(&[22, 3, 1, 0, 200, 1, 0]).await?;
    let t = Instant::now();
    assert!(
        closed_within(&mut slow, Duration::from_secs(3)).await,
        "a slow ClientHello times out"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "closed after the hello timeout, not before"
    );
    assert_eq!(counter_reaches(&r.metrics, "not_tls", "1").await, "1");
    assert_eq!(counter_reaches(&r.metrics, "no_sni", "1").await, "1");
    assert_eq!(counter_reaches(&r.metrics, "unknown_host", "2").await, "2");
    assert_eq!(counter_reaches(&r.metrics, "no_backend", "1").await, "1");
    assert_eq!(counter_reaches(&r.metrics, "hello_timeout", "1").await, "1");
    Ok(())
}

#[tokio::test]
async fn a_thousand_idle_connections_do_not_stop_real_ones() -> Result<()> {
    let a = pki("a.acme.test")?;
    let (a_api, _t) = tls_backend("a-cp-0", &a).await?;
    let r = rig(ProxyConfig {
        hello_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await?;
    r.gw.set_table(RouteTable::from_routes([ClusterRoute {
        key: "org-acme/a".into(),
        domain: "a.acme.test".into(),
        api: vec![backend("org-acme/a-cp-0", a_api)],
        ..Default::default()
    }]));
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(r.tls).await?);
    }
    assert_eq!(
        https_get(r.tls, "api.a.acme.test", &a.ca, None).await?,
        "a-cp-0 -"
    );
    // Every idle connection is closed by the hello timeout.
    for c in &mut idle {
        assert!(closed_within(c, Duration::from_secs(5)).await);
    }
    assert_eq!(
        counter_reaches(&r.metrics, "hello_timeout", "1000").await,
        "1000"
    );
    assert_eq!(
        https_get(r.tls, "api.a.acme.test", &a.ca, None).await?,
        "a-cp-0 -"
    );
    Ok(())
}

#[tokio::test]
async fn a_dead_backend_costs_no_request_and_recovers() -> Result<()> {
    let a = pki("a.acme.test")?;
    let (live, _t) = tls_backend("live", &a).await?;
    // A port nobody listens on.
    let dead = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let r = rig(ProxyConfig::default()).await?;
    r.gw.set_table(RouteTable::from_routes([ClusterRoute {
        key: "org-acme/a".into(),
        domain: "a.acme.test".into(),
        ca_pem: Some(a.ca.cert_pem().into()),
        api: vec![
            backend("org-acme/dead", dead),
            backend("org-acme/live", live),
        ],
        ..Default::default()
    }]));
    for _ in 0..6 {
        assert_eq!(
            https_get(r.tls, "api.a.acme.test", &a.ca, None).await?,
            "live -"
        );
    }
    let ep = r.gw.endpoints("org-acme", "a").context("endpoints")?;
    let dead_ep = ep
        .api
        .iter()
        .find(|b| b.machine == "org-acme/dead")
        .context("dead listed")?;
    assert_eq!(
        dead_ep.healthy,
        Some(false),
        "the failed attempt marked it down"
    );
    // Health checks bring a backend back once it answers /readyz.
    r.gw.check_health(Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ep = r.gw.endpoints("org-acme", "a").context("endpoints")?;
    let live_ep = ep
        .api
        .iter()
        .find(|b| b.machine == "org-acme/live")
        .context("live listed")?;
    assert_eq!(
        live_ep.healthy,
        Some(true),
        "/readyz with the cluster CA passes"
    );
    Ok(())
}

#[tokio::test]
async fn a_lone_backend_that_fails_its_checks_still_serves() -> Result<()> {
    let a = pki("a.acme.test")?;
    let (slow, _t) = tls_backend("slow", &a).await?;
    // A check deadline no backend can meet: every check fails, as for an API
    // server on an emulated CPU whose /readyz takes longer than the deadline.
    let r = rig(ProxyConfig {
        health_timeout: Duration::from_nanos(1),
        ..Default::default()
    })
    .await?;
    r.gw.set_table(RouteTable::from_routes([ClusterRoute {
        key: "org-acme/a".into(),
        domain: "a.acme.test".into(),
        ca_pem: Some(a.ca.cert_pem().into()),
        api: vec![backend("org-acme/slow", slow)],
        ..Default::default()
    }]));
    r.gw.check_health(Duration::from_millis(50));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ep = r.gw.endpoints("org-acme", "a").context("endpoints")?;
        if ep.api.first().and_then(|b| b.healthy) == Some(false) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the check never failed: {ep:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        https_get(r.tls, "api.a.acme.test", &a.ca, None).await?,
        "slow -",
        "a down backend is tried when it is the only one"
    );
    let mut reg = Registry::default();
    r.metrics.register(&mut reg);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg)?;
    assert!(
        text.contains("all_down_attempts_total{service=\"api\"} 1"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_route_change_does_not_cut_open_connections() -> Result<()> {
    // A backend that echoes, so one connection can carry traffic before and after.
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut c, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = c.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let r = rig(ProxyConfig::default()).await?;
    let route = |extra: bool| {
        let mut routes = vec![ClusterRoute {
            key: "org-acme/a".into(),
            domain: "a.acme.test".into(),
            ingress_http: vec![backend("org-acme/a-w-0", echo_addr)],
            ..Default::default()
        }];
        if extra {
            routes.push(ClusterRoute {
                key: "org-acme/b".into(),
                domain: "b.acme.test".into(),
                ..Default::default()
            });
        }
        RouteTable::from_routes(routes)
    };
    r.gw.set_table(route(false));
    let mut c = TcpStream::connect(r.http).await?;
    let head = b"GET / HTTP/1.1\r\nHost: x.a.acme.test\r\n\r\n";
    c.write_all(head).await?;
    let mut got = vec![0u8; head.len()];
    c.read_exact(&mut got).await?;
    assert_eq!(&got, head);
    r.gw.set_table(route(true));
    r.gw.set_table(RouteTable::default());
    c.write_all(b"still here").await?;
    let mut got = [0u8; 10];
    c.read_exact(&mut got).await?;
    assert_eq!(&got, b"still here");
    Ok(())
}
