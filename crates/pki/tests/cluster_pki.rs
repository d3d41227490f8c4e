//! A guest cluster's PKI checked with the real `openssl` tool: every leaf verifies
//! against its own CA (for its purpose) and fails against the other one, keys match
//! their certificates, the API server carries exactly the SANs Kubernetes needs, the
//! bundle round-trips, renewal reissues exactly what is due, and the discovery hash
//! matches kubeadm's recipe.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use shoal_pki::{
    ca_cert_hash, not_after, ClusterPki, ClusterPkiParams, OffsetDateTime, PkiError, PkiFile,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const OPENSSL: &str = "/usr/bin/openssl";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn params() -> ClusterPkiParams {
    ClusterPkiParams {
        cluster: "prod".to_owned(),
        org: "acme".to_owned(),
        base_domain: "shoal.example".to_owned(),
        dns_domain: "cluster.local".to_owned(),
        api_service_ip: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
        control_plane: vec![
            (
                "cp-0".to_owned(),
                IpAddr::V4(Ipv4Addr::new(192, 168, 10, 10)),
            ),
            (
                "cp-1".to_owned(),
                IpAddr::V4(Ipv4Addr::new(192, 168, 10, 11)),
            ),
        ],
        ca_ttl: 365 * DAY,
        leaf_ttl: 30 * DAY,
    }
}

/// Runs openssl; panics (never skips) when it cannot be started.
fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new(OPENSSL)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {OPENSSL} ({e}): this test needs OpenSSL; install the openssl package"
            )
        })
}

/// Writes the bundle in kubeadm's layout (`etcd/ca.crt`, ...) into a new directory.
fn write_kubeadm_dir(pki: &ClusterPki) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for file in PkiFile::ALL {
        let path = dir.path().join(file.kubeadm_path());
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, pki.file(file)).expect("write PEM");
    }
    dir
}

/// `openssl verify` of `cert` against `ca` for `purpose`, optionally at a given time.
fn verify(dir: &Path, ca: &str, cert: &str, purpose: &str, at: Option<i64>) -> Output {
    let at = at.map(|t| t.to_string());
    let mut args = vec!["verify", "-x509_strict", "-purpose", purpose, "-CAfile", ca];
    if let Some(at) = &at {
        args.extend(["-attime", at.as_str()]);
    }
    args.push(cert);
    openssl(dir, &args)
}

fn assert_verifies(dir: &Path, ca: &str, cert: &str, purpose: &str, at: Option<i64>) {
    let out = verify(dir, ca, cert, purpose, at);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == format!("{cert}: OK"),
        "openssl verify -CAfile {ca} -purpose {purpose} {cert} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every leaf, its CA and the purposes it must verify for.
const CHAINS: [(&str, &str, &[&str]); 5] = [
    ("ca.crt", "apiserver.crt", &["sslserver"]),
    ("ca.crt", "admin.crt", &["sslclient"]),
    ("ca.crt", "worker.crt", &["sslclient"]),
    (
        "etcd/ca.crt",
        "etcd/server.crt",
        &["sslserver", "sslclient"],
    ),
    ("etcd/ca.crt", "etcd/peer.crt", &["sslserver", "sslclient"]),
];

fn assert_all_verify(pki: &ClusterPki, at: Option<i64>) {
    let dir = write_kubeadm_dir(pki);
    for (ca, cert, purposes) in CHAINS {
        for purpose in purposes {
            assert_verifies(dir.path(), ca, cert, purpose, at);
        }
    }
}

fn der(pem: &str) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    pem.contents
}

/// The SANs of a certificate, as (DNS names, IPs), in certificate order.
fn sans(cert_pem: &str) -> (Vec<String>, Vec<IpAddr>) {
    let der = der(cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).expect("certificate");
    let san = cert
        .subject_alternative_name()
        .expect("SAN")
        .expect("SAN present");
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(name) => dns.push((*name).to_owned()),
            GeneralName::IPAddress(bytes) => {
                let v4: [u8; 4] = (*bytes).try_into().expect("IPv4 SAN");
                ips.push(IpAddr::from(v4));
            }
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    (dns, ips)
}

fn subject(cert_pem: &str) -> String {
    let der = der(cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).expect("certificate");
    cert.subject().to_string()
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

#[test]
fn every_leaf_verifies_against_its_own_ca_with_openssl() {
    let pki = ClusterPki::generate(&params(), OffsetDateTime::now_utc()).expect("generate");
    assert_all_verify(&pki, None);

    // The leaves are signed by the right CA and no other: cross-checks must fail.
    let dir = write_kubeadm_dir(&pki);
    for (own_ca, cert, purposes) in CHAINS {
        let other_ca = if own_ca == "ca.crt" {
            "etcd/ca.crt"
        } else {
            "ca.crt"
        };
        let out = verify(dir.path(), other_ca, cert, purposes[0], None);
        assert!(
            !out.status.success(),
            "{cert} must not verify against {other_ca}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Client certificates are not server certificates, and the API server's is not a client's.
    for (ca, cert, purpose) in [
        ("ca.crt", "admin.crt", "sslserver"),
        ("ca.crt", "apiserver.crt", "sslclient"),
    ] {
        let out = verify(dir.path(), ca, cert, purpose, None);
        assert!(!out.status.success(), "{cert} must not verify as {purpose}");
    }

    // Each private key belongs to its certificate; sa.pub is sa.key's public half.
    let public_of = |args: &[&str]| {
        let out = openssl(dir.path(), args);
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("PEM is text")
    };
    for name in [
        "apiserver",
        "admin",
        "worker",
        "etcd/server",
        "etcd/peer",
        "ca",
        "etcd/ca",
    ] {
        let from_cert = public_of(&["x509", "-noout", "-pubkey", "-in", &format!("{name}.crt")]);
        let from_key = public_of(&["pkey", "-pubout", "-in", &format!("{name}.key")]);
        assert_eq!(
            from_cert, from_key,
            "{name}.key does not belong to {name}.crt"
        );
    }
    let sa_pub = public_of(&["pkey", "-pubout", "-in", "sa.key"]);
    assert_eq!(sa_pub, pki.service_account().public_key_pem);
    let sa_key = public_of(&["pkey", "-in", "sa.key"]);
    assert!(sa_key.contains("BEGIN PRIVATE KEY"));
}

#[test]
fn certificates_carry_exactly_the_required_names() {
    let p = params();
    let pki = ClusterPki::generate(&p, OffsetDateTime::now_utc()).expect("generate");

    let (dns, ips) = sans(&pki.apiserver().cert_pem);
    let want_dns = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "api.prod.acme.shoal.example",
        "localhost",
        "cp-0",
        "cp-1",
    ]
    .map(str::to_owned);
    let want_ips = [
        ip(10, 96, 0, 1),
        ip(127, 0, 0, 1),
        ip(192, 168, 10, 10),
        ip(192, 168, 10, 11),
    ];
    assert_eq!(
        dns.len(),
        want_dns.len(),
        "duplicate or extra DNS SANs: {dns:?}"
    );
    assert_eq!(set(&dns), set(&want_dns));
    assert_eq!(
        ips.len(),
        want_ips.len(),
        "duplicate or extra IP SANs: {ips:?}"
    );
    assert_eq!(set(&ips), set(&want_ips));

    for cert in [&pki.etcd_server().cert_pem, &pki.etcd_peer().cert_pem] {
        let (dns, ips) = sans(cert);
        assert_eq!(
            set(&dns),
            set(&["localhost", "cp-0", "cp-1"].map(str::to_owned))
        );
        assert_eq!(dns.len(), 3);
        assert_eq!(
            set(&ips),
            set(&[ip(127, 0, 0, 1), ip(192, 168, 10, 10), ip(192, 168, 10, 11)])
        );
        assert_eq!(ips.len(), 3);
    }

    assert_eq!(
        subject(&pki.admin().cert_pem),
        "O=system:masters, CN=kubernetes-admin"
    );
    assert_eq!(
        subject(&pki.worker().cert_pem),
        "O=system:nodes, CN=shoal:worker"
    );
    assert_eq!(subject(&pki.apiserver().cert_pem), "CN=kube-apiserver");

    // Client identities as the cluster CA (and so the API server) sees them.
    let admin = pki
        .ca()
        .verify_client_cert(&der(&pki.admin().cert_pem))
        .expect("admin is a client of the cluster CA");
    assert_eq!(admin.organizations, ["system:masters"]);
    assert!(pki
        .etcd_ca()
        .verify_client_cert(&der(&pki.admin().cert_pem))
        .is_err());

    // Private keys never appear in Debug output.
    let debug = format!("{pki:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(debug.contains("BEGIN CERTIFICATE"));
}

#[test]
fn invalid_params_are_refused() {
    let now = OffsetDateTime::now_utc();
    let mut p = params();
    p.leaf_ttl = p.ca_ttl + DAY;
    assert!(matches!(
        ClusterPki::generate(&p, now),
        Err(PkiError::InvalidTtl { .. })
    ));
    let mut p = params();
    p.control_plane[0].0 = "cp_0".to_owned();
    assert!(matches!(
        ClusterPki::generate(&p, now),
        Err(PkiError::InvalidInput {
            field: "DNS name",
            ..
        })
    ));
    let pki = ClusterPki::generate(&params(), now).expect("generate");
    assert!(matches!(
        pki.renew(&params(), now, params().leaf_ttl),
        Err(PkiError::InvalidRenewWindow { .. })
    ));
}

#[test]
fn bundle_round_trips_and_bad_bundles_name_the_entry() {
    let pki = ClusterPki::generate(&params(), OffsetDateTime::now_utc()).expect("generate");
    let files = pki.to_files();
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    let mut want: Vec<&str> = PkiFile::ALL.iter().map(|f| f.name()).collect();
    want.sort_unstable();
    assert_eq!(names, want);
    assert!(names.iter().all(|n| !n.contains('/')));
    assert!(files["sa.pub"].starts_with("-----BEGIN PUBLIC KEY-----"));
    assert!(files["sa.key"].starts_with("-----BEGIN PRIVATE KEY-----"));

    let loaded = ClusterPki::from_files(&files).expect("load bundle");
    assert_eq!(loaded.to_files(), files);

    // Extra entries (e.g. a kubeconfig kept in the same Secret) are ignored.
    let mut extra = files.clone();
    extra.insert("admin.conf".to_owned(), "apiVersion: v1".to_owned());
    assert_eq!(
        ClusterPki::from_files(&extra).expect("load").to_files(),
        files
    );

    let mut missing = files.clone();
    missing.remove("etcd-peer.key");
    match ClusterPki::from_files(&missing) {
        Err(PkiError::MissingFile {
            file: "etcd-peer.key",
        }) => {}
        other => panic!("expected MissingFile etcd-peer.key, got {other:?}"),
    }

    let invalid = |mutate: &dyn Fn(&mut BTreeMap<String, String>)| {
        let mut broken = files.clone();
        mutate(&mut broken);
        match ClusterPki::from_files(&broken) {
            Err(PkiError::InvalidFile { file, source }) => (file, *source),
            other => panic!("expected InvalidFile, got {other:?}"),
        }
    };
    // A key that belongs to another certificate.
    let (file, source) = invalid(&|m| {
        m.insert("apiserver.key".to_owned(), files["admin.key"].clone());
    });
    assert_eq!(file, "apiserver.key");
    assert!(
        matches!(
            source,
            PkiError::KeyMismatch {
                pair: "apiserver.crt"
            }
        ),
        "{source:?}"
    );
    // A leaf signed by the wrong CA.
    let (file, source) = invalid(&|m| {
        m.insert("etcd-server.crt".to_owned(), files["apiserver.crt"].clone());
        m.insert("etcd-server.key".to_owned(), files["apiserver.key"].clone());
    });
    assert_eq!(file, "etcd-server.crt");
    assert!(
        matches!(source, PkiError::UnknownIssuer { .. }),
        "{source:?}"
    );
    // CA key that is not the CA's.
    let (file, source) = invalid(&|m| {
        m.insert("ca.key".to_owned(), files["etcd-ca.key"].clone());
    });
    assert_eq!(file, "ca.key");
    assert!(
        matches!(source, PkiError::CaKeyMismatch { .. }),
        "{source:?}"
    );
    // Garbage certificate.
    let (file, _) = invalid(&|m| {
        m.insert("worker.crt".to_owned(), "not PEM".to_owned());
    });
    assert_eq!(file, "worker.crt");
    // Service-account halves that do not match.
    let other = ClusterPki::generate(&params(), OffsetDateTime::now_utc()).expect("generate");
    let (file, source) = invalid(&|m| {
        m.insert(
            "sa.pub".to_owned(),
            other.service_account().public_key_pem.clone(),
        );
    });
    assert_eq!(file, "sa.key");
    assert!(
        matches!(source, PkiError::KeyMismatch { pair: "sa.pub" }),
        "{source:?}"
    );
    let (file, _) = invalid(&|m| {
        m.insert("sa.pub".to_owned(), files["ca.crt"].clone());
    });
    assert_eq!(file, "sa.pub");
}

fn leaf_files() -> Vec<String> {
    let mut names: Vec<String> = [
        "apiserver.crt",
        "apiserver.key",
        "etcd-server.crt",
        "etcd-server.key",
        "etcd-peer.crt",
        "etcd-peer.key",
        "admin.crt",
        "admin.key",
        "worker.crt",
        "worker.key",
    ]
    .map(str::to_owned)
    .to_vec();
    names.sort_by_key(|n| PkiFile::from_name(n).expect("known name"));
    names
}

#[test]
fn renewal_reissues_exactly_what_is_due() {
    let p = params();
    let issued_at = OffsetDateTime::now_utc();
    let pki = ClusterPki::generate(&p, issued_at).expect("generate");
    let files = pki.to_files();
    let window = 7 * DAY;

    // At issuance nothing is due, and nothing changes.
    let (same, renewed) = pki.renew(&p, issued_at, window).expect("renew");
    assert!(renewed.is_empty(), "renewed at issuance: {renewed:?}");
    assert_eq!(same.to_files(), files);

    // 25 days later the 30-day leaves are within the 7-day window; the CAs are not.
    let later = issued_at + time::Duration::days(25);
    let (next, renewed) = pki.renew(&p, later, window).expect("renew");
    assert_eq!(renewed, leaf_files());
    let next_files = next.to_files();
    for name in [
        "ca.crt",
        "ca.key",
        "etcd-ca.crt",
        "etcd-ca.key",
        "sa.key",
        "sa.pub",
    ] {
        assert_eq!(next_files[name], files[name], "{name} must be unchanged");
    }
    for name in leaf_files() {
        assert_ne!(next_files[&name], files[&name], "{name} must be new");
    }
    let expiry = not_after(&next.apiserver().cert_pem).expect("not_after");
    assert_eq!(
        expiry.unix_timestamp(),
        later.unix_timestamp() + 30 * 24 * 3600
    );
    // The renewed leaves chain to the unchanged CAs (checked at the renewal time).
    assert_all_verify(&next, Some(later.unix_timestamp() + 3600));
    // Renewing again at the same time is a no-op.
    let (_, again) = next.renew(&p, later, window).expect("renew");
    assert!(again.is_empty(), "{again:?}");

    // Near the end of the CAs' year, the CAs and with them every leaf are replaced,
    // but never the service-account key.
    let year_end = issued_at + time::Duration::days(360);
    let (rotated, renewed) = next.renew(&p, year_end, window).expect("renew");
    let mut everything_but_sa: Vec<String> = PkiFile::ALL
        .into_iter()
        .filter(|f| !matches!(f, PkiFile::SaKey | PkiFile::SaPub))
        .map(|f| f.name().to_owned())
        .collect();
    everything_but_sa.sort_by_key(|n| PkiFile::from_name(n).expect("known name"));
    assert_eq!(renewed, everything_but_sa);
    let rotated_files = rotated.to_files();
    assert_eq!(
        rotated_files["sa.key"].as_bytes(),
        files["sa.key"].as_bytes()
    );
    assert_eq!(rotated_files["sa.pub"], files["sa.pub"]);
    assert_ne!(rotated_files["ca.crt"], files["ca.crt"]);
    assert_ne!(rotated_files["etcd-ca.key"], files["etcd-ca.key"]);
    assert_all_verify(&rotated, Some(year_end.unix_timestamp() + 3600));
    // The result is a consistent bundle.
    ClusterPki::from_files(&rotated_files).expect("renewed bundle loads");
}

#[test]
fn short_lived_leaves_are_renewed_and_verify_now() {
    let mut p = params();
    p.leaf_ttl = Duration::from_secs(120);
    let pki = ClusterPki::generate(&p, OffsetDateTime::now_utc()).expect("generate");
    p.leaf_ttl = 30 * DAY;
    let now = OffsetDateTime::now_utc();
    let (next, renewed) = pki.renew(&p, now, DAY).expect("renew");
    assert_eq!(renewed, leaf_files());
    assert_eq!(next.service_account(), pki.service_account());
    assert!(
        not_after(&next.worker().cert_pem).expect("not_after") > now + time::Duration::days(29)
    );
    assert_all_verify(&next, None);
}

#[test]
fn control_plane_changes_reissue_only_the_server_certificates() {
    let p = params();
    let now = OffsetDateTime::now_utc();
    let pki = ClusterPki::generate(&p, now).expect("generate");
    let mut grown = p.clone();
    grown
        .control_plane
        .push(("cp-2".to_owned(), ip(192, 168, 10, 12)));
    let (next, renewed) = pki.renew(&grown, now, DAY).expect("renew");
    assert_eq!(
        renewed,
        [
            "apiserver.crt",
            "apiserver.key",
            "etcd-server.crt",
            "etcd-server.key",
            "etcd-peer.crt",
            "etcd-peer.key"
        ]
    );
    let (dns, ips) = sans(&next.etcd_peer().cert_pem);
    assert!(dns.contains(&"cp-2".to_owned()));
    assert!(ips.contains(&ip(192, 168, 10, 12)));
    assert_eq!(next.admin(), pki.admin());
    assert_all_verify(&next, None);
}

#[test]
fn ca_cert_hash_matches_kubeadms_recipe() {
    let pki = ClusterPki::generate(&params(), OffsetDateTime::now_utc()).expect("generate");
    let dir = write_kubeadm_dir(&pki);
    // The pipeline from the kubeadm documentation ("kubeadm join" discovery).
    let out = Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            &format!(
                "{OPENSSL} x509 -pubkey -noout -in ca.crt | {OPENSSL} pkey -pubin -outform der | sha256sum"
            ),
        ])
        .current_dir(dir.path())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("text");
    let hex = stdout.split_whitespace().next().expect("sha256sum output");
    assert_eq!(hex.len(), 64);
    let hash = ca_cert_hash(pki.ca().cert_pem()).expect("hash");
    assert_eq!(hash, format!("sha256:{hex}"));
    assert_ne!(hash, ca_cert_hash(pki.etcd_ca().cert_pem()).expect("hash"));
    assert!(matches!(
        ca_cert_hash("nonsense"),
        Err(PkiError::Pem { .. })
    ));
}
