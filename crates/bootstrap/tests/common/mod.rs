//! Fixtures and helpers shared by this crate's integration tests.
#![allow(dead_code)]

use shoal_bootstrap::{
    render_host_join, render_kubeadm, render_test_image, BootstrapError, BootstrapFile, HostJoin,
    HostNetwork, HostRole, NodeBootstrap, Oidc, Role,
};

/// A PEM-shaped block whose body says it is a fixture: not a real key or certificate.
fn fake_pem(label: &str, body: &str) -> String {
    format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
}

/// The control plane's PKI files, with fake content.
pub fn control_plane_files() -> Vec<BootstrapFile> {
    vec![
        BootstrapFile::new(
            "/etc/kubernetes/pki/ca.crt",
            fake_pem(
                "CERTIFICATE",
                "FAKE+shoal+fixture+cluster+CA+certificate+not+real",
            ),
        ),
        BootstrapFile::new(
            "/etc/kubernetes/pki/ca.key",
            fake_pem("PRIVATE KEY", "FAKE+shoal+fixture+cluster+CA+key+not+real"),
        ),
        BootstrapFile::new(
            "/etc/kubernetes/pki/apiserver.crt",
            fake_pem(
                "CERTIFICATE",
                "FAKE+shoal+fixture+API+server+certificate+not+real",
            ),
        ),
        BootstrapFile::new(
            "/etc/kubernetes/pki/apiserver.key",
            fake_pem("PRIVATE KEY", "FAKE+shoal+fixture+API+server+key+not+real"),
        ),
    ]
}

/// A node of `role` in cluster demo of org acme.
pub fn node(role: Role) -> NodeBootstrap {
    let (hostname, address) = match role {
        Role::ControlPlaneInit => ("demo-cp-0", "10.10.0.10"),
        Role::ControlPlaneJoin => ("demo-cp-1", "10.10.0.11"),
        Role::Worker => ("demo-worker-0", "10.10.0.20"),
    };
    NodeBootstrap {
        cluster: "demo".into(),
        org: "acme".into(),
        base_domain: "shoal.local".into(),
        hostname: hostname.into(),
        role,
        kubernetes_version: "1.35.4".into(),
        control_plane_endpoint: "api.demo.acme.shoal.local:6443".into(),
        endpoint_address: Some("10.10.0.10".into()),
        advertise_address: address.into(),
        pod_cidr: "10.244.0.0/16".into(),
        pod_network: shoal_bootstrap::PodNetwork::Flannel,
        service_cidr: "10.96.0.0/12".into(),
        dns_domain: "cluster.local".into(),
        files: if role.is_control_plane() {
            control_plane_files()
        } else {
            Vec::new()
        },
        bootstrap_token: "abcdef.0123456789abcdef".into(),
        ca_cert_hash: format!("sha256:{}", "0123456789abcdef".repeat(4)),
        certificate_key: role
            .is_control_plane()
            .then(|| "fedcba9876543210".repeat(4)),
        oidc: None,
        phone_home_url: Some(format!("http://10.10.0.1/{hostname}/phone-home")),
    }
}

/// A node of `role` whose cluster runs Calico.
pub fn calico(role: Role) -> NodeBootstrap {
    NodeBootstrap {
        pod_network: shoal_bootstrap::PodNetwork::Calico,
        ..node(role)
    }
}

/// The OIDC settings of the OIDC variant.
pub fn oidc() -> Oidc {
    Oidc {
        issuer_url: "https://login.acme.example/realms/shoal".into(),
        client_id: "shoal-demo".into(),
        username_claim: Some("email".into()),
        groups_claim: Some("groups".into()),
        username_prefix: Some("-".into()),
        groups_prefix: Some("oidc:".into()),
        ca_pem: Some(OIDC_CA.into()),
    }
}

/// The issuer CA of the OIDC variant (a syntactically complete PEM block).
pub const OIDC_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBeDCCAR+gAwIBAgIUSm9pbnQgdGVzdCBDQQ==\n-----END CERTIFICATE-----\n";

/// A bare-metal worker with a production NIC joining the host cluster.
pub fn host_worker() -> HostJoin {
    HostJoin {
        hostname: "rack1-u1".into(),
        role: HostRole::Worker,
        kubeconfig: "apiVersion: v1\nkind: Config\nclusters:\n- name: shoal\n  cluster:\n    \
                     server: https://10.79.0.2:6443\n# FAKE fixture credentials, not real\n"
            .into(),
        network: Some(HostNetwork {
            mac: "52:54:00:79:01:01".into(),
            vlan: None,
            address: "10.79.0.11/24".into(),
            gateway: Some("10.79.0.1".into()),
        }),
        phone_home_url: Some("http://10.78.0.2:8080/seed/52-54-00-78-01-01/phone-home".into()),
    }
}

/// Every rendered variant: (golden file name, rendered document).
pub fn variants() -> Vec<(&'static str, Result<String, BootstrapError>)> {
    let mut with_oidc = node(Role::ControlPlaneInit);
    with_oidc.oidc = Some(oidc());
    let mut join_oidc = node(Role::ControlPlaneJoin);
    join_oidc.oidc = Some(oidc());
    let host_control = HostJoin {
        hostname: "rack1-u0".into(),
        role: HostRole::ControlPlane,
        network: None,
        phone_home_url: None,
        ..host_worker()
    };
    vec![
        ("host-worker.yaml", render_host_join(&host_worker())),
        ("host-control-plane.yaml", render_host_join(&host_control)),
        (
            "kubeadm-control-plane-init-calico.yaml",
            render_kubeadm(&calico(Role::ControlPlaneInit)),
        ),
        (
            "kubeadm-worker-join-calico.yaml",
            render_kubeadm(&calico(Role::Worker)),
        ),
        (
            "kubeadm-control-plane-init.yaml",
            render_kubeadm(&node(Role::ControlPlaneInit)),
        ),
        (
            "kubeadm-control-plane-init-oidc.yaml",
            render_kubeadm(&with_oidc),
        ),
        (
            "kubeadm-control-plane-join.yaml",
            render_kubeadm(&node(Role::ControlPlaneJoin)),
        ),
        (
            "kubeadm-control-plane-join-oidc.yaml",
            render_kubeadm(&join_oidc),
        ),
        (
            "kubeadm-worker-join.yaml",
            render_kubeadm(&node(Role::Worker)),
        ),
        (
            "test-image-control-plane.yaml",
            render_test_image(&node(Role::ControlPlaneInit)),
        ),
        (
            "test-image-worker.yaml",
            render_test_image(&node(Role::Worker)),
        ),
    ]
}

/// Compares `rendered` with `testdata/<name>`; `SHOAL_UPDATE_GOLDEN=1` rewrites it.
pub fn check_golden(name: &str, rendered: &str) {
    shoal_testutil::check_golden(env!("CARGO_MANIFEST_DIR"), name, rendered);
}
