//! `cargo bench -p shoal-e2e --bench gateway` (or `make bench`): P5, Shoal's gateway
//! next to HAProxy and a direct connection, in one run, in front of the same TLS
//! backend on loopback.
//!
//! - `shoal gateway --routes` (a separate process, static routes, no API) and
//!   Debian's `haproxy` (TCP mode, `req.ssl_sni` routing, default settings) both
//!   route `api.bench.shoal.test` to the backend without terminating TLS.
//! - The backend is a TLS server in this process, on its own thread and runtime, so
//!   it is the same for all three paths; the client runs on another.
//! - Throughput: one TLS connection downloads `SHOAL_BENCH_MIB` (default 256) MiB;
//!   three rounds, interleaved across the paths; the median MB/s.
//! - Latency: a new TCP connection, the TLS handshake and one small request,
//!   `SHOAL_BENCH_SAMPLES` (default 400) times per path, interleaved; p50 and p99,
//!   and the added latency over a direct connection.
//!
//! Goals: throughput Shoal/HAProxy at least 1.0; p50 added latency at most HAProxy's.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use shoal_e2e::bench::{env_usize, p50_p99};
use shoal_e2e::{free_port, shoal_bin};
use shoal_pki::CertificateAuthority;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NAME: &str = "api.bench.shoal.test";
const CHUNK: usize = 64 * 1024;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The backend: `GET /big/<bytes>` streams that many bytes, anything else gets `ok`.
fn start_backend(ca: &CertificateAuthority) -> Result<SocketAddr> {
    let cert = ca.issue_server("bench", &[NAME.to_owned()], &[], Duration::from_secs(3600))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())?],
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())?,
        )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("backend runtime");
        rt.block_on(async move {
            let listener = TcpListener::from_std(std_listener).expect("backend listener");
            while let Ok((conn, _)) = listener.accept().await {
                let _ = conn.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(conn).await else { return };
                    let mut head = Vec::new();
                    let mut b = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&b[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
                    let big: Option<usize> = line.split(' ').nth(1).and_then(|p| p.strip_prefix("/big/")).and_then(|n| n.parse().ok());
                    match big {
                        Some(total) => {
                            let hdr = format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n");
                            if tls.write_all(hdr.as_bytes()).await.is_err() { return; }
                            let chunk = vec![0x5au8; CHUNK];
                            let mut left = total;
                            while left > 0 {
                                let n = left.min(CHUNK);
                                if tls.write_all(&chunk[..n]).await.is_err() { return; }
                                left -= n;
                            }
                        }
                        None => {
                            let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
                        }
                    }
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    Ok(addr)
}

struct Proc(Child, &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16, what: &str, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status}");
        }
        if Instant::now() > deadline {
            bail!("{what} did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn start_shoal(dir: &std::path::Path, backend: SocketAddr) -> Result<(Proc, u16)> {
    let routes = dir.join("routes.yaml");
    std::fs::write(
        &routes,
        format!("clusters:\n- name: bench\n  domain: bench.shoal.test\n  api: [\"{backend}\"]\n"),
    )?;
    let (port, http) = (free_port()?, free_port()?);
    let mut child = Command::new(shoal_bin()?)
        .args(["gateway", "--routes"])
        .arg(&routes)
        .args([
            "--gateway-listen",
            &format!("127.0.0.1:{port}"),
            "--gateway-http-listen",
            &format!("127.0.0.1:{http}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting shoal gateway")?;
    wait_port(port, "shoal gateway", &mut child)?;
    Ok((Proc(child, "shoal gateway"), port))
}

fn haproxy_bin() -> Result<std::path::PathBuf> {
    for p in ["/usr/sbin/haproxy", "/usr/bin/haproxy"] {
        if std::path::Path::new(p).exists() {
            return Ok(p.into());
        }
    }
    bail!("haproxy is missing: run scripts/setup.sh (it installs Debian's haproxy)")
}

fn start_haproxy(dir: &std::path::Path, backend: SocketAddr) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 4096\n\
             defaults\n  mode tcp\n  timeout connect 3s\n  timeout client 30s\n  timeout server 30s\n\
             frontend sni\n  bind 127.0.0.1:{port}\n  tcp-request inspect-delay 5s\n  \
             tcp-request content accept if {{ req_ssl_hello_type 1 }}\n  \
             use_backend api if {{ req.ssl_sni -i {NAME} }}\n\
             backend api\n  server b1 {backend}\n"
        ),
    )?;
    let log = dir.join("haproxy.log");
    let mut child = Command::new(haproxy_bin()?)
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting haproxy")?;
    wait_port(port, "haproxy", &mut child).with_context(|| {
        format!(
            "haproxy with {}:\n{}",
            cfg.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })?;
    Ok((Proc(child, "haproxy"), port))
}

fn client_config(ca: &CertificateAuthority) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())?)?;
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// One request over a new TLS connection; the bytes of the response body.
async fn request(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<usize> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::try_from(NAME)?, tcp)
        .await?;
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {NAME}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0usize;
    loop {
        match tls.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => total += n,
            // The backend closes without close_notify at times; what arrived counts.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(total)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench())
}

async fn bench() -> Result<()> {
    let mib = env_usize("SHOAL_BENCH_MIB", 256);
    let samples = env_usize("SHOAL_BENCH_SAMPLES", 400);
    let dir = tempfile::tempdir()?;
    let ca = CertificateAuthority::generate("bench-ca")?;
    let backend = start_backend(&ca)?;
    let (shoal, shoal_port) = start_shoal(dir.path(), backend)?;
    let (haproxy, haproxy_port) = start_haproxy(dir.path(), backend)?;
    let config = client_config(&ca)?;
    let paths: [(&str, SocketAddr); 3] = [
        ("direct", backend),
        ("haproxy", SocketAddr::from(([127, 0, 0, 1], haproxy_port))),
        ("shoal", SocketAddr::from(([127, 0, 0, 1], shoal_port))),
    ];
    // Warm up every path (and check that each routes at all).
    for (name, addr) in paths {
        let n = request(addr, &config, "/small")
            .await
            .with_context(|| format!("{name}: first request"))?;
        anyhow::ensure!(n > 0, "{name}: empty response");
    }

    let bytes = mib << 20;
    let mut rates: [Vec<f64>; 3] = Default::default();
    for _round in 0..3 {
        for (i, (name, addr)) in paths.iter().enumerate() {
            let t = Instant::now();
            let got = request(*addr, &config, &format!("/big/{bytes}")).await?;
            anyhow::ensure!(got >= bytes, "{name}: {got} of {bytes} bytes");
            rates[i].push(bytes as f64 / 1e6 / t.elapsed().as_secs_f64());
        }
    }
    let mut lat: [Vec<f64>; 3] = Default::default();
    for _ in 0..samples {
        for (i, (_, addr)) in paths.iter().enumerate() {
            let t = Instant::now();
            request(*addr, &config, "/small").await?;
            lat[i].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let tput: Vec<f64> = rates.iter().map(|r| median(r.clone())).collect();
    let pct: Vec<(f64, f64)> = lat.iter().map(|l| p50_p99(l.clone())).collect();
    println!(
        "P5 gateway, {mib} MiB per transfer (median of 3), {samples} new TLS connections per path"
    );
    println!(
        "{:<8} {:>12} {:>10} {:>10} {:>12} {:>12}",
        "path", "MB/s", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms"
    );
    for (i, (name, _)) in paths.iter().enumerate() {
        println!(
            "{:<8} {:>12.1} {:>10.3} {:>10.3} {:>12.3} {:>12.3}",
            name,
            tput[i],
            pct[i].0,
            pct[i].1,
            pct[i].0 - pct[0].0,
            pct[i].1 - pct[0].1
        );
    }
    println!(
        "throughput shoal/haproxy: {:.2} (goal >= 1.0)",
        tput[2] / tput[1]
    );
    println!(
        "p50 added latency: shoal {:.3} ms, haproxy {:.3} ms (goal: shoal <= haproxy)",
        pct[2].0 - pct[0].0,
        pct[1].0 - pct[0].0
    );
    println!(
        "peak RSS: shoal gateway {:.1} MiB, haproxy {:.1} MiB",
        rss_mib(shoal.0.id()),
        rss_mib(haproxy.0.id())
    );
    let _ = (shoal.1, haproxy.1);
    Ok(())
}
