//! The renderers' output: golden files, the structure cloud-init and kubeadm read, and
//! the input checks.

mod common;

use common::{node, oidc, variants};
use serde_yaml::Value;
use shoal_bootstrap::{
    operator_manifest_url, render_kubeadm, render_kubeadm_group, render_test_image, BootstrapError,
    BootstrapFile, NodeFile, Role, CALICO_INSTALLATION_PATH, CALICO_INSTALL_PATH,
    FLANNEL_MANIFEST_PATH, KUBEADM_CONFIG_PATH, KUBEADM_PATCHES_DIR, NODE_FILE_PATH, NODE_IMAGE,
    OIDC_CA_PATH,
};

#[test]
fn every_variant_matches_its_golden_file() {
    for (name, rendered) in variants() {
        let rendered = rendered.unwrap_or_else(|e| panic!("{name}: {e}"));
        common::check_golden(name, &rendered);
    }
}

#[test]
fn rendering_is_deterministic() {
    let first: Vec<String> = variants()
        .into_iter()
        .map(|(_, r)| r.expect("renders"))
        .collect();
    let second: Vec<String> = variants()
        .into_iter()
        .map(|(_, r)| r.expect("renders"))
        .collect();
    assert_eq!(first, second);
}

/// The cloud-config as YAML, after checking its header.
fn parse(doc: &str) -> Value {
    assert!(doc.starts_with("#cloud-config\n"), "{doc}");
    serde_yaml::from_str(doc).expect("the cloud-config is YAML")
}

/// The `write_files` entry for `path`.
fn file<'a>(doc: &'a Value, path: &str) -> &'a Value {
    doc["write_files"]
        .as_sequence()
        .expect("write_files is a list")
        .iter()
        .find(|f| f["path"].as_str() == Some(path))
        .unwrap_or_else(|| panic!("no write_files entry for {path}"))
}

/// The kubeadm configuration's documents, by kind.
fn kubeadm_docs(doc: &Value) -> Vec<Value> {
    let text = file(doc, KUBEADM_CONFIG_PATH)["content"]
        .as_str()
        .expect("content is text");
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("a kubeadm document"))
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in {docs:?}"))
}

#[test]
fn init_writes_pki_and_kubeadm_config_and_runs_init() {
    let doc = parse(&render_kubeadm(&node(Role::ControlPlaneInit)).expect("renders"));
    assert_eq!(doc["hostname"].as_str(), Some("demo-cp-0"));
    assert_eq!(
        file(&doc, "/etc/kubernetes/pki/ca.key")["permissions"].as_str(),
        Some("0600")
    );
    assert_eq!(
        file(&doc, "/etc/kubernetes/pki/ca.crt")["permissions"].as_str(),
        Some("0644")
    );
    assert_eq!(
        file(&doc, KUBEADM_CONFIG_PATH)["permissions"].as_str(),
        Some("0600"),
        "the kubeadm config holds the token"
    );
    let runcmd: Vec<Vec<String>> =
        serde_yaml::from_value(doc["runcmd"].clone()).expect("runcmd is a list of argvs");
    assert_eq!(
        runcmd,
        vec![
            vec![
                "/usr/local/sbin/shoal-kubeadm",
                "init",
                "--config",
                "/etc/kubernetes/kubeadm.yaml",
                "--upload-certs"
            ],
            vec![
                "kubectl",
                "--kubeconfig",
                "/etc/kubernetes/admin.conf",
                "apply",
                "-f",
                FLANNEL_MANIFEST_PATH
            ]
        ]
    );
    assert_eq!(
        doc["phone_home"]["url"].as_str(),
        Some("http://10.10.0.1/demo-cp-0/phone-home")
    );
    assert_eq!(doc["phone_home"]["tries"].as_u64(), Some(10));

    let docs = kubeadm_docs(&doc);
    assert_eq!(docs.len(), 3, "init, cluster and kubelet configuration");
    assert_eq!(
        kind(&docs, "KubeletConfiguration")["cgroupDriver"].as_str(),
        Some("systemd"),
        "the image's containerd uses the systemd cgroup driver"
    );
    let init = kind(&docs, "InitConfiguration");
    assert_eq!(init["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta4"));
    assert_eq!(
        init["bootstrapTokens"][0]["token"].as_str(),
        Some("abcdef.0123456789abcdef")
    );
    assert_eq!(
        init["localAPIEndpoint"]["advertiseAddress"].as_str(),
        Some("10.10.0.10")
    );
    assert_eq!(init["nodeRegistration"]["name"].as_str(), Some("demo-cp-0"));
    let cluster = kind(&docs, "ClusterConfiguration");
    assert_eq!(cluster["kubernetesVersion"].as_str(), Some("v1.35.4"));
    assert_eq!(
        cluster["controlPlaneEndpoint"].as_str(),
        Some("api.demo.acme.shoal.local:6443")
    );
    assert_eq!(
        cluster["networking"]["podSubnet"].as_str(),
        Some("10.244.0.0/16")
    );
    assert_eq!(
        cluster["apiServer"]["certSANs"][0].as_str(),
        Some("api.demo.acme.shoal.local")
    );
    let flags: Vec<&str> = cluster["apiServer"]["extraArgs"]
        .as_sequence()
        .expect("a list")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(
        flags,
        vec!["etcd-healthcheck-timeout", "etcd-readycheck-timeout"],
        "no OIDC flags without OIDC; etcd's checks relaxed for slow CPUs"
    );
}

#[test]
fn oidc_flags_are_a_list_of_name_value_pairs() {
    let mut n = node(Role::ControlPlaneInit);
    n.oidc = Some(oidc());
    let doc = parse(&render_kubeadm(&n).expect("renders"));
    let docs = kubeadm_docs(&doc);
    let args: Vec<(String, String)> = kind(&docs, "ClusterConfiguration")["apiServer"]["extraArgs"]
        .as_sequence()
        .expect("v1beta4 extraArgs is a list")
        .iter()
        .map(|a| {
            (
                a["name"].as_str().expect("name").to_string(),
                a["value"].as_str().expect("value").to_string(),
            )
        })
        .collect();
    let want = [
        ("etcd-healthcheck-timeout", "10s"),
        ("etcd-readycheck-timeout", "10s"),
        ("oidc-issuer-url", "https://login.acme.example/realms/shoal"),
        ("oidc-client-id", "shoal-demo"),
        ("oidc-username-claim", "email"),
        ("oidc-groups-claim", "groups"),
        ("oidc-username-prefix", "-"),
        ("oidc-groups-prefix", "oidc:"),
        ("oidc-ca-file", OIDC_CA_PATH),
    ];
    assert_eq!(
        args,
        want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
    );

    // Unset claims and prefixes leave the API server's defaults.
    n.oidc = Some(shoal_bootstrap::Oidc {
        username_claim: None,
        groups_claim: None,
        username_prefix: None,
        groups_prefix: None,
        ca_pem: None,
        ..oidc()
    });
    let doc = parse(&render_kubeadm(&n).expect("renders"));
    let docs = kubeadm_docs(&doc);
    let args = &kind(&docs, "ClusterConfiguration")["apiServer"]["extraArgs"];
    assert_eq!(args.as_sequence().map(Vec::len), Some(4), "{args:?}");
    assert!(
        write_file(&doc, OIDC_CA_PATH).is_none(),
        "no CA, no CA file"
    );
}

#[test]
fn the_issuer_ca_is_written_on_every_control_plane_node_only() {
    for (role, written) in [
        (Role::ControlPlaneInit, true),
        (Role::ControlPlaneJoin, true),
        (Role::Worker, false),
    ] {
        let mut n = node(role);
        n.oidc = Some(oidc());
        let doc = parse(&render_kubeadm(&n).expect("renders"));
        match write_file(&doc, OIDC_CA_PATH) {
            Some(f) => {
                assert!(written, "{role:?} got the issuer CA");
                assert_eq!(f["content"].as_str(), Some(common::OIDC_CA));
                assert_eq!(f["permissions"].as_str(), Some("0644"));
            }
            None => assert!(!written, "{role:?} did not get the issuer CA"),
        }
    }
}

/// The `write_files` entry for `path`.
fn write_file<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    doc["write_files"]
        .as_sequence()?
        .iter()
        .find(|f| f["path"].as_str() == Some(path))
}

#[test]
fn joins_discover_the_cluster_by_token_and_ca_pin() {
    for role in [Role::ControlPlaneJoin, Role::Worker] {
        let n = node(role);
        let doc = parse(&render_kubeadm(&n).expect("renders"));
        let runcmd: Vec<Vec<String>> =
            serde_yaml::from_value(doc["runcmd"].clone()).expect("runcmd");
        assert_eq!(
            runcmd,
            vec![vec![
                "/usr/local/sbin/shoal-kubeadm",
                "join",
                "--config",
                "/etc/kubernetes/kubeadm.yaml"
            ]]
        );
        // The wrapper waits for containerd's CRI, then runs kubeadm, and again only
        // after a failed preflight (which changes nothing).
        let run = file(&doc, "/usr/local/sbin/shoal-kubeadm");
        assert_eq!(run["permissions"].as_str(), Some("0755"));
        let script = run["content"].as_str().expect("the script");
        assert!(script.starts_with("#!/bin/sh\n"), "{script}");
        assert!(
            script.contains("CRI_SOCKET=unix:///run/containerd/containerd.sock\n"),
            "{script}"
        );
        assert!(script.contains("kubeadm \"$@\""), "{script}");
        assert!(
            script.contains("error execution phase preflight"),
            "{script}"
        );
        let docs = kubeadm_docs(&doc);
        assert_eq!(docs.len(), 1);
        let join = kind(&docs, "JoinConfiguration");
        let discovery = &join["discovery"]["bootstrapToken"];
        assert_eq!(
            discovery["apiServerEndpoint"].as_str(),
            Some("api.demo.acme.shoal.local:6443")
        );
        assert_eq!(discovery["token"].as_str(), Some("abcdef.0123456789abcdef"));
        assert_eq!(
            discovery["caCertHashes"][0].as_str(),
            Some(n.ca_cert_hash.as_str())
        );
        assert_eq!(
            join["nodeRegistration"]["name"].as_str(),
            Some(n.hostname.as_str())
        );
        match role {
            Role::ControlPlaneJoin => {
                let cp = &join["controlPlane"];
                assert_eq!(
                    cp["localAPIEndpoint"]["advertiseAddress"].as_str(),
                    Some("10.10.0.11")
                );
                assert_eq!(cp["certificateKey"].as_str(), n.certificate_key.as_deref());
            }
            _ => assert!(join.get("controlPlane").is_none(), "{join:?}"),
        }
    }
}

#[test]
fn test_image_gets_the_files_and_its_role_but_no_commands() {
    let n = node(Role::ControlPlaneInit);
    let doc = parse(&render_test_image(&n).expect("renders"));
    assert!(doc.get("runcmd").is_none());
    let keys: Vec<&str> = doc
        .as_mapping()
        .expect("mapping")
        .keys()
        .filter_map(Value::as_str)
        .collect();
    // Only what the test image's agent honours.
    assert_eq!(keys, ["hostname", "write_files", "phone_home"]);
    assert_eq!(
        file(&doc, "/etc/kubernetes/pki/apiserver.key")["content"].as_str(),
        Some(n.files[3].content.as_str())
    );
    let node_file: NodeFile = serde_yaml::from_str(
        file(&doc, NODE_FILE_PATH)["content"]
            .as_str()
            .expect("text"),
    )
    .expect("a node file");
    assert_eq!(node_file, NodeFile::new(&n));
    assert_eq!(node_file.role, Role::ControlPlaneInit);
    assert_eq!(node_file.kubernetes_version, "1.35.4");
}

#[test]
fn no_phone_home_without_a_url() {
    let mut n = node(Role::Worker);
    n.phone_home_url = None;
    for doc in [render_kubeadm(&n), render_test_image(&n)] {
        let doc = parse(&doc.expect("renders"));
        assert!(doc.get("phone_home").is_none());
    }
}

#[test]
fn awkward_values_are_quoted_not_pasted() {
    let mut n = node(Role::ControlPlaneInit);
    let client_id = "shoal: \"demo\" #1 'x' [a] {b} & *c !d % @e `f` | > - ? , ";
    n.oidc = Some(shoal_bootstrap::Oidc {
        client_id: client_id.trim().into(),
        ..oidc()
    });
    n.files.push(BootstrapFile::new(
        "/etc/shoal/notes: #not a comment",
        "line one\n  indented: yes\n---\n#cloud-config\n",
    ));
    let doc = parse(&render_kubeadm(&n).expect("renders"));
    assert_eq!(
        file(&doc, "/etc/shoal/notes: #not a comment")["content"].as_str(),
        Some("line one\n  indented: yes\n---\n#cloud-config\n")
    );
    let docs = kubeadm_docs(&doc);
    let args = &kind(&docs, "ClusterConfiguration")["apiServer"]["extraArgs"];
    assert_eq!(args[3]["value"].as_str(), Some(client_id.trim()));
}

/// The field a rendering error names.
fn field_of(n: &shoal_bootstrap::NodeBootstrap) -> String {
    let err = render_kubeadm(n).expect_err("invalid input");
    let also = render_test_image(n).expect_err("invalid input for the test image too");
    assert_eq!(err.to_string(), also.to_string());
    err.field()
        .unwrap_or_else(|| panic!("{err} names no field"))
}

#[test]
fn invalid_inputs_are_refused_naming_the_field() {
    type Edit = fn(&mut shoal_bootstrap::NodeBootstrap);
    let cases: Vec<(&str, Edit)> = vec![
        ("hostname", |n| n.hostname.clear()),
        ("hostname", |n| n.hostname = "Demo_CP".into()),
        ("hostname", |n| n.hostname = "on".into()),
        ("cluster", |n| n.cluster = "demo.x".into()),
        ("org", |n| n.org = "-acme".into()),
        ("base_domain", |n| n.base_domain = "shoal..local".into()),
        ("kubernetes_version", |n| {
            n.kubernetes_version = "1.30.4".into()
        }),
        ("kubernetes_version", |n| {
            n.kubernetes_version = "latest".into()
        }),
        ("control_plane_endpoint", |n| {
            n.control_plane_endpoint = "api.demo.acme.shoal.local".into()
        }),
        ("advertise_address", |n| {
            n.advertise_address = "node-1".into()
        }),
        ("pod_cidr", |n| n.pod_cidr = "10.244.0.0".into()),
        ("service_cidr", |n| n.service_cidr = "10.96.0.0/40".into()),
        ("dns_domain", |n| n.dns_domain = "cluster.local.".into()),
        ("bootstrap_token", |n| {
            n.bootstrap_token = "abcdef0123456789abcdef".into()
        }),
        ("ca_cert_hash", |n| {
            n.ca_cert_hash = "0123456789abcdef".repeat(4)
        }),
        ("ca_cert_hash", |n| n.ca_cert_hash = "sha256:abc".into()),
        ("certificate_key", |n| {
            n.certificate_key = Some("xyz".into())
        }),
        ("files[0].path", |n| {
            n.files[0].path = "etc/kubernetes/pki/ca.crt".into()
        }),
        ("files[1].path", |n| {
            n.files[1].path = "/etc/kubernetes/../ca.key".into()
        }),
        ("files[2].path", |n| {
            n.files[2].path = n.files[0].path.clone()
        }),
        ("files[0].path", |n| {
            n.files[0].path = "/etc/kubernetes/kubeadm.yaml".into()
        }),
        ("files[1].permissions", |n| {
            n.files[1].permissions = Some(0o644)
        }),
        ("files[0].permissions", |n| {
            n.files[0].permissions = Some(0o4755)
        }),
        ("oidc.issuer_url", |n| {
            n.oidc = Some(shoal_bootstrap::Oidc {
                issuer_url: "http://login.acme.example".into(),
                ..oidc()
            })
        }),
        ("oidc.client_id", |n| {
            n.oidc = Some(shoal_bootstrap::Oidc {
                client_id: String::new(),
                ..oidc()
            })
        }),
        ("oidc.groups_prefix", |n| {
            n.oidc = Some(shoal_bootstrap::Oidc {
                groups_prefix: Some("oidc: ".into()),
                ..oidc()
            })
        }),
        ("oidc.ca_pem", |n| {
            n.oidc = Some(shoal_bootstrap::Oidc {
                ca_pem: Some("not a certificate".into()),
                ..oidc()
            })
        }),
        ("oidc.groups_claim", |n| {
            n.oidc = Some(shoal_bootstrap::Oidc {
                groups_claim: Some("my groups".into()),
                ..oidc()
            })
        }),
        ("phone_home_url", |n| {
            n.phone_home_url = Some("10.10.0.1/phone-home".into())
        }),
    ];
    for (want, edit) in cases {
        let mut n = node(Role::ControlPlaneInit);
        edit(&mut n);
        assert_eq!(field_of(&n), want, "{n:?}");
    }
}

#[test]
fn certificate_key_follows_the_role() {
    let mut join = node(Role::ControlPlaneJoin);
    join.certificate_key = None;
    assert!(matches!(
        render_kubeadm(&join),
        Err(BootstrapError::MissingCertificateKey)
    ));
    let mut worker = node(Role::Worker);
    worker.certificate_key = Some("fedcba9876543210".repeat(4));
    assert!(matches!(
        render_kubeadm(&worker),
        Err(BootstrapError::UnexpectedCertificateKey)
    ));
    // On init the key is optional: kubeadm makes one when it is absent.
    let mut init = node(Role::ControlPlaneInit);
    init.certificate_key = None;
    let doc = parse(&render_kubeadm(&init).expect("renders"));
    assert!(kind(&kubeadm_docs(&doc), "InitConfiguration")
        .get("certificateKey")
        .is_none());
}

#[test]
fn kubeadm_workers_may_not_be_given_files_kubeadm_join_writes() {
    let mut worker = node(Role::Worker);
    worker.files = common::control_plane_files();
    let err = render_kubeadm(&worker).expect_err("kubeadm join would refuse ca.crt");
    assert_eq!(err.field().as_deref(), Some("files[0].path"), "{err}");
    // The test image has no such preflight check: it gets the CA like any file.
    let doc = parse(&render_test_image(&worker).expect("renders"));
    assert_eq!(
        file(&doc, "/etc/kubernetes/pki/ca.crt")["permissions"].as_str(),
        Some("0644")
    );
}

#[test]
fn errors_and_debug_never_show_secrets() {
    let mut n = node(Role::ControlPlaneJoin);
    n.bootstrap_token = "abcdef.SECRETSECRETSECR".into();
    let err = render_kubeadm(&n).expect_err("bad token");
    assert!(!err.to_string().contains("SECRET"), "{err}");
    let text = format!("{n:?}");
    assert!(!text.contains("SECRET"), "{text}");
    assert!(!text.contains("fedcba9876543210"), "{text}");
    assert!(!text.contains("API+server+key"), "{text}");
    n.certificate_key = Some("SECRET".into());
    n.bootstrap_token = "abcdef.0123456789abcdef".into();
    let err = render_kubeadm(&n).expect_err("bad key");
    assert!(!err.to_string().contains("SECRET"), "{err}");
}

#[test]
fn kubeadm_names_what_the_node_image_carries() {
    let doc = parse(&render_kubeadm(&node(Role::ControlPlaneInit)).expect("renders"));
    let docs = kubeadm_docs(&doc);
    let init = kind(&docs, "InitConfiguration");
    assert_eq!(
        init["nodeRegistration"]["criSocket"].as_str(),
        Some("unix:///run/containerd/containerd.sock")
    );
    assert_eq!(
        init["patches"]["directory"].as_str(),
        Some(KUBEADM_PATCHES_DIR)
    );
    assert_eq!(
        init["timeouts"]["controlPlaneComponentHealthCheck"].as_str(),
        Some("20m0s")
    );
    let cluster = kind(&docs, "ClusterConfiguration");
    assert_eq!(
        cluster["imageRepository"].as_str(),
        Some(NODE_IMAGE.image_repository)
    );
    assert_eq!(
        cluster["etcd"]["local"]["imageTag"].as_str(),
        Some(NODE_IMAGE.etcd_image_tag)
    );
    assert_eq!(
        cluster["dns"]["imageTag"].as_str(),
        Some(NODE_IMAGE.coredns_image_tag)
    );
    // The leader-elected components keep their lease through a slow API server.
    for component in ["controllerManager", "scheduler"] {
        let args = cluster[component]["extraArgs"]
            .as_sequence()
            .expect("a list");
        let value = |name: &str| {
            args.iter()
                .find(|a| a["name"].as_str() == Some(name))
                .and_then(|a| a["value"].as_str())
        };
        assert_eq!(
            value("leader-elect-lease-duration"),
            Some("60s"),
            "{component}"
        );
        assert_eq!(
            value("leader-elect-renew-deadline"),
            Some("45s"),
            "{component}"
        );
    }
    // etcd fails a request only after 15 s (5 s plus two election timeouts).
    let etcd_args = cluster["etcd"]["local"]["extraArgs"]
        .as_sequence()
        .expect("a list");
    let etcd_arg = |name: &str| {
        etcd_args
            .iter()
            .find(|a| a["name"].as_str() == Some(name))
            .and_then(|a| a["value"].as_str())
    };
    assert_eq!(etcd_arg("election-timeout"), Some("5000"));
    assert_eq!(etcd_arg("heartbeat-interval"), Some("500"));
    let kubelet = kind(&docs, "KubeletConfiguration");
    assert_eq!(kubelet["cgroupDriver"].as_str(), Some("systemd"));
    // Every control-plane static pod gets its probes relaxed; the API server also
    // its readiness probe, which only it has.
    for component in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        let path = format!("{KUBEADM_PATCHES_DIR}/{component}+strategic.yaml");
        let patch: Value =
            serde_yaml::from_str(file(&doc, &path)["content"].as_str().expect("text"))
                .expect("YAML");
        let c = &patch["spec"]["containers"][0];
        assert_eq!(c["name"].as_str(), Some(component));
        assert!(c["startupProbe"]["failureThreshold"].as_u64() >= Some(60));
        assert_eq!(
            c.get("readinessProbe").is_some(),
            component == "kube-apiserver",
            "{component}"
        );
    }
    let flannel = file(&doc, FLANNEL_MANIFEST_PATH)["content"]
        .as_str()
        .expect("text");
    assert!(
        flannel.contains("\"Network\": \"10.244.0.0/16\""),
        "{flannel}"
    );
}

#[test]
fn workers_get_no_patches_and_no_pod_network_manifest() {
    let doc = parse(&render_kubeadm(&node(Role::Worker)).expect("renders"));
    let paths: Vec<&str> = doc["write_files"]
        .as_sequence()
        .expect("list")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(
        paths,
        vec![
            "/etc/hosts",
            KUBEADM_CONFIG_PATH,
            "/usr/local/sbin/shoal-kubeadm"
        ],
        "{paths:?}"
    );
}

#[test]
fn the_endpoint_name_is_appended_to_etc_hosts_before_kubeadm_runs() {
    let doc = parse(&render_kubeadm(&node(Role::Worker)).expect("renders"));
    let hosts = &doc["write_files"][0];
    assert_eq!(hosts["path"].as_str(), Some("/etc/hosts"));
    assert_eq!(
        hosts["append"].as_bool(),
        Some(true),
        "must not replace /etc/hosts"
    );
    assert_eq!(
        hosts["content"].as_str(),
        Some("10.10.0.10 api.demo.acme.shoal.local\n")
    );

    let mut without = node(Role::Worker);
    without.endpoint_address = None;
    let doc = parse(&render_kubeadm(&without).expect("renders"));
    assert!(
        !doc["write_files"]
            .as_sequence()
            .expect("list")
            .iter()
            .any(|f| f["path"].as_str() == Some("/etc/hosts")),
        "no address, no hosts entry"
    );

    let mut bad = node(Role::Worker);
    bad.endpoint_address = Some("api.example".into());
    let err = render_kubeadm(&bad).expect_err("not an address");
    assert_eq!(err.field().as_deref(), Some("endpoint_address"), "{err}");
}

#[test]
fn flannel_reaches_the_api_by_address() {
    let doc = render_kubeadm(&node(Role::ControlPlaneInit)).expect("renders");
    assert!(
        doc.contains("value: 10.10.0.10"),
        "flannel's KUBERNETES_SERVICE_HOST must be the address"
    );
}

#[test]
fn a_version_no_node_image_carries_is_refused() {
    let mut n = node(Role::ControlPlaneInit);
    n.kubernetes_version = "1.34.2".into();
    let err = render_kubeadm(&n).expect_err("no image carries 1.34.2");
    assert!(matches!(err, BootstrapError::NoNodeImage { .. }), "{err}");
    assert_eq!(err.field().as_deref(), Some("kubernetes_version"));
    assert!(
        err.to_string().contains(NODE_IMAGE.kubernetes_version),
        "{err}"
    );
}

#[test]
fn a_group_of_workers_keeps_the_names_its_cloud_gives_them() {
    let one = parse(&render_kubeadm(&node(Role::Worker)).expect("renders"));
    let group = parse(&render_kubeadm_group(&node(Role::Worker)).expect("renders"));
    assert!(one["hostname"].as_str().is_some());
    assert!(group.get("hostname").is_none(), "{group:?}");
    let join = kind(&kubeadm_docs(&group), "JoinConfiguration").clone();
    assert!(
        join["nodeRegistration"].get("name").is_none(),
        "kubeadm must take the instance's own name: {join:?}"
    );
    assert!(join["nodeRegistration"]["criSocket"].as_str().is_some());
    let err = render_kubeadm_group(&node(Role::ControlPlaneJoin)).expect_err("refused");
    assert_eq!(err.field().as_deref(), Some("role"));
    assert!(err.to_string().contains("only workers"), "{err}");
}

/// `runcmd` as lists of words.
fn runcmd(doc: &Value) -> Vec<Vec<String>> {
    doc["runcmd"]
        .as_sequence()
        .expect("runcmd")
        .iter()
        .map(|c| {
            c.as_sequence()
                .expect("exec form")
                .iter()
                .map(|w| w.as_str().expect("a word").to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn calico_is_installed_by_its_operator_after_init_instead_of_flannel() {
    let doc = parse(&render_kubeadm(&common::calico(Role::ControlPlaneInit)).expect("renders"));
    assert!(
        write_file(&doc, FLANNEL_MANIFEST_PATH).is_none(),
        "no flannel with Calico"
    );
    let installation = file(&doc, CALICO_INSTALLATION_PATH)["content"]
        .as_str()
        .expect("text");
    let installation: Value = serde_yaml::from_str(installation).expect("YAML");
    assert_eq!(installation["kind"], "Installation");
    assert_eq!(
        installation["spec"]["calicoNetwork"]["ipPools"][0]["cidr"],
        "10.244.0.0/16"
    );
    let script = file(&doc, CALICO_INSTALL_PATH);
    assert_eq!(script["permissions"], "0755");
    assert!(script["content"]
        .as_str()
        .expect("text")
        .contains(&operator_manifest_url()));
    let cmds = runcmd(&doc);
    let init = cmds
        .iter()
        .position(|c| c.get(1).map(String::as_str) == Some("init"))
        .expect("kubeadm init");
    let calico = cmds
        .iter()
        .position(|c| c == &vec![CALICO_INSTALL_PATH.to_owned()])
        .expect("the Calico script runs");
    assert!(init < calico, "Calico after init: {cmds:?}");
    assert!(
        !cmds.iter().flatten().any(|w| w.contains("flannel")),
        "{cmds:?}"
    );
}

#[test]
fn every_calico_node_links_the_operators_cni_directory_before_kubeadm() {
    for role in [Role::ControlPlaneInit, Role::ControlPlaneJoin, Role::Worker] {
        let doc = parse(&render_kubeadm(&common::calico(role)).expect("renders"));
        let cmds = runcmd(&doc);
        let link = vec!["ln", "-sfn", "/usr/lib/cni", "/opt/cni/bin"];
        let at = cmds
            .iter()
            .position(|c| c == &link)
            .unwrap_or_else(|| panic!("{role:?}: no link in {cmds:?}"));
        let kubeadm = cmds
            .iter()
            .position(|c| c[0] == "/usr/local/sbin/shoal-kubeadm")
            .expect("kubeadm runs");
        assert!(at < kubeadm, "{role:?}: {cmds:?}");
        if role != Role::ControlPlaneInit {
            assert!(
                write_file(&doc, CALICO_INSTALL_PATH).is_none(),
                "{role:?} installs nothing"
            );
        }
    }
    // A flannel node links nothing.
    let doc = parse(&render_kubeadm(&node(Role::Worker)).expect("renders"));
    assert!(!runcmd(&doc).iter().flatten().any(|w| w == "/opt/cni/bin"));
}
