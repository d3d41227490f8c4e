//! A real TLS 1.3 handshake (rustls, in memory) with certificates from this crate: the
//! server certificate must satisfy a WebPKI client, the CSR-signed client certificate
//! a WebPKI client-auth verifier, and the peer certificate must map back to its identity.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection,
};
use shoal_pki::{generate_csr, CertificateAuthority, ClientIdentity};

const HOUR: Duration = Duration::from_secs(3600);

fn cert(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM")
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("key PEM")
}

fn roots(ca: &CertificateAuthority) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(cert(ca.cert_pem())).expect("add CA root");
    Arc::new(roots)
}

/// Moves TLS records between the two ends until neither has anything left to send.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), rustls::Error> {
    for _ in 0..20 {
        let mut moved = false;
        while client.wants_write() {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).expect("client write_tls");
            server
                .read_tls(&mut buf.as_slice())
                .expect("server read_tls");
            server.process_new_packets()?;
            moved = true;
        }
        while server.wants_write() {
            let mut buf = Vec::new();
            server.write_tls(&mut buf).expect("server write_tls");
            client
                .read_tls(&mut buf.as_slice())
                .expect("client read_tls");
            client.process_new_packets()?;
            moved = true;
        }
        if !moved {
            return Ok(());
        }
    }
    panic!("handshake did not settle");
}

struct Setup {
    server: ServerConnection,
    client: ClientConnection,
}

fn connect(
    server_ca: &CertificateAuthority,
    client_ca: &CertificateAuthority,
    server_name: &str,
    client_cert_pem: &str,
    client_key_pem: &str,
) -> Setup {
    let provider = Arc::new(default_provider());
    let server_cert = server_ca
        .issue_server(
            "shoal-apiserver",
            &["localhost".to_owned(), "api.shoal.test".to_owned()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            HOUR,
        )
        .expect("issue server cert");
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(server_ca), provider.clone())
        .build()
        .expect("client verifier");
    let server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert(&server_cert.cert_pem)], key(&server_cert.key_pem))
        .expect("server config");
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots(client_ca))
        .with_client_auth_cert(vec![cert(client_cert_pem)], key(client_key_pem))
        .expect("client config");
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    Setup {
        server: ServerConnection::new(Arc::new(server_config)).expect("server connection"),
        client: ClientConnection::new(Arc::new(client_config), name).expect("client connection"),
    }
}

#[test]
fn mutual_tls_with_csr_signed_client_cert() {
    let ca = CertificateAuthority::generate("shoal management CA").expect("generate CA");
    let groups = vec!["system:masters".to_owned(), "shoal:admins".to_owned()];
    let (csr_pem, client_key_pem) = generate_csr("alice", &groups).expect("generate CSR");
    let signed = ca.sign_csr(&csr_pem, HOUR, HOUR).expect("sign CSR");

    for server_name in ["localhost", "api.shoal.test", "127.0.0.1"] {
        let Setup {
            mut server,
            mut client,
        } = connect(&ca, &ca, server_name, &signed.cert_pem, &client_key_pem);
        pump(&mut client, &mut server).expect("handshake");
        assert!(!client.is_handshaking() && !server.is_handshaking());

        client.writer().write_all(b"ping").expect("write");
        pump(&mut client, &mut server).expect("send data");
        let mut got = [0u8; 4];
        server.reader().read_exact(&mut got).expect("read");
        assert_eq!(&got, b"ping");

        let peer = server
            .peer_certificates()
            .expect("client presented a certificate");
        let identity = ca.verify_client_cert(&peer[0]).expect("verify peer");
        assert_eq!(
            identity,
            ClientIdentity {
                common_name: "alice".to_owned(),
                organizations: groups.clone(),
            }
        );
    }
}

#[test]
fn handshake_fails_for_wrong_name_or_foreign_client() {
    let ca = CertificateAuthority::generate("shoal management CA").expect("generate CA");
    let client = ca
        .issue_client("bob", &[], HOUR)
        .expect("issue client cert");

    // The server certificate does not cover this name.
    let Setup {
        mut server,
        client: mut conn,
    } = connect(&ca, &ca, "other.example", &client.cert_pem, &client.key_pem);
    let err = pump(&mut conn, &mut server).expect_err("wrong server name must fail");
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{err:?}"
    );

    // A client certificate from another CA is refused by the server.
    let foreign_ca = CertificateAuthority::generate("foreign CA").expect("generate CA");
    let foreign = foreign_ca
        .issue_client("mallory", &[], HOUR)
        .expect("issue");
    let Setup {
        mut server,
        client: mut conn,
    } = connect(&ca, &ca, "localhost", &foreign.cert_pem, &foreign.key_pem);
    let err = pump(&mut conn, &mut server).expect_err("foreign client must fail");
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
    assert!(server.is_handshaking());
}
