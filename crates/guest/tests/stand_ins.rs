//! The role stand-ins over real sockets on 127.0.0.1, with a cluster PKI made by
//! shoal-pki as the controllers make it, written where `write_files` puts it:
//!
//! - the API server stand-in against Debian's kubectl 1.20 (`SHOAL_KUBECTL`, default
//!   `/opt/shoal/kubernetes-client/usr/bin/kubectl` as `scripts/setup.sh` installs it;
//!   missing, the tests fail) and against a rustls client;
//! - the worker's ingress stand-ins;
//! - missing and invalid PKI files.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::Value;
use shoal_guest::node::Role;
use shoal_guest::services::hostname;
use shoal_guest::stand_ins::{self, StandInConfig, StandInError, StandIns};
use shoal_guest::tls::TlsError;
use shoal_pki::{CertificateAuthority, ClusterPki, ClusterPkiParams, IssuedCert, PkiFile};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The cluster PKI now, plus an admin certificate from the same CA that expired a
/// day ago (the bundle as generated two days ago, before its leaves were renewed).
fn cluster_pki() -> (ClusterPki, IssuedCert) {
    let params = ClusterPkiParams {
        cluster: "demo".into(),
        org: "acme".into(),
        base_domain: "shoal.test".into(),
        dns_domain: "cluster.local".into(),
        api_service_ip: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
        control_plane: vec![("demo-cp-1".into(), IpAddr::V4(Ipv4Addr::LOCALHOST))],
        ca_ttl: 3650 * DAY,
        leaf_ttl: DAY,
    };
    let now = shoal_pki::OffsetDateTime::now_utc();
    let old = ClusterPki::generate(&params, now - 2 * DAY).expect("PKI two days ago");
    let (pki, renewed) = old
        .renew(&params, now, Duration::from_secs(3600))
        .expect("renewed PKI");
    assert!(!renewed.iter().any(|f| f == "ca.crt"), "{renewed:?}");
    assert_eq!(pki.ca().cert_pem(), old.ca().cert_pem());
    (pki, old.admin().clone())
}

/// A guest root with `/etc/shoal/node.yaml` for `role` and the given PKI files.
fn guest_root(role: &str, pki: &ClusterPki, files: &[PkiFile]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let etc = root.path().join("etc/shoal");
    std::fs::create_dir_all(etc.join("pki")).expect("mkdir");
    // As crates/bootstrap's NodeFile writes it.
    let node = format!(
        "role: {role}\ncluster: demo\norg: acme\nhostname: demo-1\n\
         controlPlaneEndpoint: api.demo.acme.shoal.test:443\n\
         advertiseAddress: 127.0.0.1\nkubernetesVersion: 1.31.2\n"
    );
    std::fs::write(etc.join("node.yaml"), node).expect("node.yaml");
    for f in files {
        std::fs::write(etc.join("pki").join(f.kubeadm_path()), pki.file(*f)).expect("pki file");
    }
    root
}

fn local() -> StandInConfig {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    StandInConfig {
        apiserver: any,
        ingress_http: any,
        ingress_https: any,
    }
}

/// A control-plane guest with its PKI, serving; the root must outlive the test.
fn control_plane(pki: &ClusterPki) -> (tempfile::TempDir, SocketAddr) {
    use PkiFile::*;
    let root = guest_root(
        "control-plane-init",
        pki,
        &[CaCert, ApiServerCert, ApiServerKey],
    );
    let started = stand_ins::start(root.path(), &local());
    assert!(started.failed.is_empty(), "{:?}", started.failed);
    let addr = started.addr("apiserver").expect("apiserver serving");
    (root, addr)
}

// ---- kubectl ----

fn kubectl_bin() -> PathBuf {
    let path = std::env::var_os("SHOAL_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/shoal/kubernetes-client/usr/bin/kubectl"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh (make test does) or set SHOAL_KUBECTL",
        path.display()
    );
    path
}

/// Writes a kubeconfig for the stand-in at `addr`, trusting the cluster CA, with
/// `client` as the user's certificate; without one, the user has a bearer token (the
/// stand-in ignores tokens; with no credentials at all kubectl 1.20 would prompt for
/// a password).
fn kubeconfig(dir: &Path, addr: SocketAddr, ca_pem: &str, client: Option<&IssuedCert>) -> PathBuf {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match client {
        Some(c) => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&c.cert_pem),
            b64(&c.key_pem)
        ),
        None => "    token: not-a-certificate\n".to_string(),
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: demo\n  cluster:\n    \
         server: https://{addr}\n    certificate-authority-data: {}\n\
         users:\n- name: u\n  user:\n{user}\
         contexts:\n- name: c\n  context:\n    cluster: demo\n    user: u\n\
         current-context: c\n",
        b64(ca_pem)
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).expect("kubeconfig");
    path
}

/// `kubectl get --raw <path>` with `kubeconfig`, HOME in `dir` (its cache goes there).
fn kubectl_raw(dir: &Path, kubeconfig: &Path, path: &str) -> Output {
    Command::new(kubectl_bin())
        .env("HOME", dir)
        .env_remove("KUBECONFIG")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--request-timeout=20s", "get", "--raw", path])
        .output()
        .expect("kubectl runs")
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "kubectl failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("kubectl printed JSON")
}

fn failed_with(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(want),
        "want failure with {want:?}, got {}: {stderr}",
        out.status
    );
}

// ---- a rustls client ----

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(
    ca_pem: &str,
    client: Option<&IssuedCert>,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
        .expect("CA");
    let builder = ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    // As Go clients do: both offered, so the server must pick http/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Sends `raw` over TLS and returns the negotiated ALPN and everything read back.
fn tls_exchange(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    raw: &[u8],
) -> Result<(Option<Vec<u8>>, String), std::io::Error> {
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(15)))?;
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut tls = StreamOwned::new(conn, sock);
    tls.write_all(raw)?;
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply)?;
    let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
    Ok((alpn, String::from_utf8_lossy(&reply).into_owned()))
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: demo\r\n\r\n").into_bytes()
}

/// The status code and body of an HTTP/1.1 response with `Connection: close`.
fn parse(reply: &str) -> (u16, &str) {
    assert!(reply.contains("\r\nConnection: close\r\n"), "{reply}");
    let code = reply
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {reply:?}"));
    let (_, body) = reply.split_once("\r\n\r\n").expect("head and body");
    (code, body)
}

/// The TLS alert the server sent, from a failed exchange.
fn alert(err: &std::io::Error) -> Option<AlertDescription> {
    match err.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    }
}

// ---- the tests ----

#[test]
fn kubectl_reads_the_version_and_its_identity_with_a_client_certificate() {
    let (pki, _) = cluster_pki();
    let (_root, addr) = control_plane(&pki);
    let alice = pki
        .ca()
        .issue_client("alice:laptop", &["dev".to_string(), "ops".to_string()], DAY)
        .expect("alice's certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(dir.path(), addr, pki.ca().cert_pem(), Some(&alice));

    let version = ok_json(&kubectl_raw(dir.path(), &kc, "/version"));
    assert_eq!(version["major"], "1");
    assert_eq!(version["minor"], "31");
    assert_eq!(version["gitVersion"], "v1.31.2");
    assert_eq!(version["platform"], "linux/amd64");

    let whoami = ok_json(&kubectl_raw(dir.path(), &kc, "/api"));
    assert_eq!(
        whoami,
        serde_json::json!({
            "kind": "ShoalGuestWhoAmI",
            "user": "alice:laptop",
            "groups": ["dev", "ops"],
            "path": "/api",
        })
    );
    let readyz = kubectl_raw(dir.path(), &kc, "/readyz");
    assert_eq!(String::from_utf8_lossy(&readyz.stdout), "ok");

    // The admin certificate the controllers issue: O=system:masters.
    let admin = kubeconfig(dir.path(), addr, pki.ca().cert_pem(), Some(pki.admin()));
    let whoami = ok_json(&kubectl_raw(dir.path(), &admin, "/apis/shoal"));
    assert_eq!(whoami["user"], "kubernetes-admin");
    assert_eq!(whoami["groups"], serde_json::json!(["system:masters"]));
    assert_eq!(whoami["path"], "/apis/shoal");
}

#[test]
fn without_a_client_certificate_only_health_and_version_answer() {
    let (pki, _) = cluster_pki();
    let (_root, addr) = control_plane(&pki);
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(dir.path(), addr, pki.ca().cert_pem(), None);

    let version = ok_json(&kubectl_raw(dir.path(), &kc, "/version"));
    assert_eq!(version["gitVersion"], "v1.31.2");
    for path in ["/readyz", "/livez"] {
        let out = kubectl_raw(dir.path(), &kc, path);
        assert!(out.status.success(), "{path}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok", "{path}");
    }
    // kubectl's wording for a 401, with the Status message.
    failed_with(
        &kubectl_raw(dir.path(), &kc, "/api"),
        "error: You must be logged in to the server (/api needs a client certificate signed by the cluster CA",
    );

    // The 401's body is a Kubernetes Status.
    let config = client_config(pki.ca().cert_pem(), None, &rustls::version::TLS13);
    let (_, reply) = tls_exchange(addr, config, &get("/api")).expect("exchange");
    let (code, body) = parse(&reply);
    assert_eq!(code, 401, "{reply}");
    let status: Value = serde_json::from_str(body).expect("Status JSON");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["apiVersion"], "v1");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "Unauthorized");
    assert_eq!(status["code"], 401);
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("client certificate")),
        "{status}"
    );
}

#[test]
fn a_client_certificate_from_another_ca_fails_the_handshake() {
    let (pki, _) = cluster_pki();
    let (_root, addr) = control_plane(&pki);
    let other = CertificateAuthority::generate("another cluster").expect("CA");
    let mallory = other
        .issue_client("alice:laptop", &["dev".to_string()], DAY)
        .expect("certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(dir.path(), addr, pki.ca().cert_pem(), Some(&mallory));
    // Even the anonymous paths: the handshake itself fails.
    for path in ["/version", "/api"] {
        failed_with(
            &kubectl_raw(dir.path(), &kc, path),
            "remote error: tls: unknown certificate authority",
        );
    }
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client_config(pki.ca().cert_pem(), Some(&mallory), version);
        let err = tls_exchange(addr, config, &get("/version")).expect_err("handshake fails");
        assert_eq!(alert(&err), Some(AlertDescription::UnknownCA), "{err}");
    }
}

#[test]
fn an_expired_client_certificate_fails_the_handshake() {
    let (pki, expired_admin) = cluster_pki();
    let (_root, addr) = control_plane(&pki);
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(dir.path(), addr, pki.ca().cert_pem(), Some(&expired_admin));
    for path in ["/version", "/api"] {
        failed_with(
            &kubectl_raw(dir.path(), &kc, path),
            "remote error: tls: expired certificate",
        );
    }
    let config = client_config(
        pki.ca().cert_pem(),
        Some(&expired_admin),
        &rustls::version::TLS13,
    );
    let err = tls_exchange(addr, config, &get("/version")).expect_err("handshake fails");
    assert_eq!(
        alert(&err),
        Some(AlertDescription::CertificateExpired),
        "{err}"
    );
}

#[test]
fn tls_12_and_13_both_negotiate_http_11() {
    let (pki, _) = cluster_pki();
    let (_root, addr) = control_plane(&pki);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client_config(pki.ca().cert_pem(), Some(pki.admin()), version);
        let (alpn, reply) = tls_exchange(addr, config, &get("/readyz")).expect("exchange");
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "{version:?}");
        assert_eq!(parse(&reply), (200, "ok"), "{version:?}");
    }
}

#[test]
fn bad_requests_get_a_status_and_never_stop_the_listener() {
    let (pki, _) = cluster_pki();
    let (_root, addr) = control_plane(&pki);
    let config = || client_config(pki.ca().cert_pem(), None, &rustls::version::TLS13);

    // Not TLS at all: the handshake fails and the connection is closed.
    let mut plain = TcpStream::connect(addr).expect("connect");
    plain
        .write_all(b"GET /version HTTP/1.1\r\n\r\n")
        .expect("send");
    let mut junk = Vec::new();
    let _ = plain.read_to_end(&mut junk);
    assert!(!String::from_utf8_lossy(&junk).contains("200"), "{junk:?}");

    // A client that connects and goes away.
    drop(TcpStream::connect(addr).expect("connect"));

    // TLS, but not HTTP.
    let (_, reply) = tls_exchange(addr, config(), b"HELLO THERE\r\n\r\n").expect("exchange");
    let (code, body) = parse(&reply);
    assert_eq!(code, 400, "{reply}");
    let status: Value = serde_json::from_str(body).expect("Status JSON");
    assert_eq!(status["reason"], "BadRequest");

    // A head that never ends.
    let huge = format!(
        "GET /version HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (_, reply) = tls_exchange(addr, config(), huge.as_bytes()).expect("exchange");
    assert_eq!(parse(&reply).0, 431, "{reply}");

    // A body that is read and discarded.
    let post = b"POST /version HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd";
    let (_, reply) = tls_exchange(addr, config(), post).expect("exchange");
    assert_eq!(parse(&reply).0, 200, "{reply}");

    // Still serving.
    let (_, reply) = tls_exchange(addr, config(), &get("/readyz")).expect("exchange");
    assert_eq!(parse(&reply), (200, "ok"));
}

/// Accepts any server certificate: the worker certificate is a client certificate
/// (no server-auth EKU, no SANs), so ingress tests check which one was served instead.
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = ring().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = ring().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        ring().signature_verification_algorithms.supported_schemes()
    }
}

#[test]
fn workers_answer_with_their_hostname_on_both_ingress_ports() {
    use PkiFile::*;
    let (pki, _) = cluster_pki();
    let root = guest_root("worker", &pki, &[CaCert, WorkerCert, WorkerKey]);
    let started = stand_ins::start(root.path(), &local());
    assert!(started.failed.is_empty(), "{:?}", started.failed);
    assert_eq!(started.node.as_ref().map(|n| n.role), Some(Role::Worker));
    assert_eq!(started.addr("apiserver"), None);
    let want = format!("{}\n", hostname());

    let http = started.addr("ingress-http").expect("ingress-http serving");
    let mut sock = TcpStream::connect(http).expect("connect");
    sock.write_all(&get("/anything")).expect("send");
    let mut reply = String::new();
    sock.read_to_string(&mut reply).expect("reply");
    assert_eq!(parse(&reply), (200, want.as_str()));

    let https = started
        .addr("ingress-https")
        .expect("ingress-https serving");
    let mut config = ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let sock = TcpStream::connect(https).expect("connect");
    let name = ServerName::try_from("demo-1").expect("name");
    let conn = ClientConnection::new(Arc::new(config), name).expect("client");
    let mut tls = StreamOwned::new(conn, sock);
    tls.write_all(&get("/")).expect("send");
    let mut reply = String::new();
    tls.read_to_string(&mut reply).expect("reply");
    assert_eq!(parse(&reply), (200, want.as_str()));
    let served = tls.conn.peer_certificates().expect("a certificate")[0].clone();
    let worker = CertificateDer::from_pem_slice(pki.worker().cert_pem.as_bytes()).expect("PEM");
    assert_eq!(served, worker, "the worker certificate is served");
}

/// The one failure of `started`, which must be a TLS one.
fn tls_error(started: &StandIns) -> &TlsError {
    match &started.failed[..] {
        [StandInError::Tls { source, .. }] => source,
        other => panic!("want one TLS failure, got {other:?}"),
    }
}

fn tls_failure(started: &StandIns, service: &str) -> String {
    started
        .failed
        .iter()
        .find_map(|e| match e {
            StandInError::Tls { service: s, source } if *s == service => Some(source.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no TLS failure for {service}: {:?}", started.failed))
}

#[test]
fn missing_or_invalid_pki_stops_only_that_stand_in() {
    use PkiFile::*;
    let (pki, _) = cluster_pki();

    // No node file: no role, nothing started, one clear reason.
    let bare = tempfile::tempdir().expect("tempdir");
    let started = stand_ins::start(bare.path(), &local());
    assert_eq!((started.node, started.serving.len()), (None, 0));
    assert!(
        matches!(started.failed.as_slice(), [StandInError::Node(_)]),
        "{:?}",
        started.failed
    );
    assert!(started.failed[0]
        .to_string()
        .contains("node.yaml: no such file"));

    // A control plane without its key.
    let root = guest_root("control-plane-join", &pki, &[CaCert, ApiServerCert]);
    let started = stand_ins::start(root.path(), &local());
    assert!(started.serving.is_empty());
    let why = tls_failure(&started, "apiserver");
    assert!(why.contains("apiserver.key"), "{why}");

    // A key that is not PEM.
    std::fs::write(root.path().join("etc/shoal/pki/apiserver.key"), "junk").expect("write");
    let started = stand_ins::start(root.path(), &local());
    assert!(
        matches!(tls_error(&started), TlsError::Pem { .. }),
        "{:?}",
        started.failed
    );

    // A key that does not belong to the certificate.
    std::fs::write(
        root.path().join("etc/shoal/pki/apiserver.key"),
        pki.file(WorkerKey),
    )
    .expect("write");
    let started = stand_ins::start(root.path(), &local());
    assert!(
        matches!(tls_error(&started), TlsError::Config { .. }),
        "{:?}",
        started.failed
    );

    // A CA file that holds no certificate.
    let root = guest_root("control-plane-init", &pki, &[ApiServerCert, ApiServerKey]);
    std::fs::write(root.path().join("etc/shoal/pki/ca.crt"), pki.file(CaKey)).expect("write");
    let why = tls_failure(&stand_ins::start(root.path(), &local()), "apiserver");
    assert!(why.contains("ca.crt: no PEM CERTIFICATE"), "{why}");

    // A worker without its certificates still serves plain HTTP.
    let root = guest_root("worker", &pki, &[CaCert]);
    let started = stand_ins::start(root.path(), &local());
    assert!(started.addr("ingress-http").is_some());
    assert_eq!(started.addr("ingress-https"), None);
    let why = tls_failure(&started, "ingress-https");
    assert!(why.contains("worker.crt"), "{why}");
}
