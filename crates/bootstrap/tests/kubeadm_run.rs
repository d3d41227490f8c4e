//! The `shoal-kubeadm` wrapper the kubeadm user-data writes, run by Debian's dash
//! (the node image's /bin/sh) with stand-ins for `crictl` and `kubeadm` on PATH:
//! it waits for the CRI, retries kubeadm after a failed preflight only, and passes
//! kubeadm's exit code on.

use std::path::Path;
use std::process::Command;

use shoal_bootstrap::{render_kubeadm, BootstrapFile, NodeBootstrap, Role};

fn worker() -> NodeBootstrap {
    NodeBootstrap {
        cluster: "demo".into(),
        org: "acme".into(),
        base_domain: "shoal.local".into(),
        hostname: "demo-w-0".into(),
        role: Role::Worker,
        kubernetes_version: "1.35.4".into(),
        control_plane_endpoint: "api.demo.acme.shoal.local:6443".into(),
        endpoint_address: None,
        advertise_address: "10.10.0.11".into(),
        pod_cidr: "10.244.0.0/16".into(),
        pod_network: shoal_bootstrap::PodNetwork::Flannel,
        service_cidr: "10.96.0.0/12".into(),
        dns_domain: "cluster.local".into(),
        files: Vec::<BootstrapFile>::new(),
        bootstrap_token: "abcdef.0123456789abcdef".into(),
        ca_cert_hash: format!("sha256:{}", "a".repeat(64)),
        certificate_key: None,
        oidc: None,
        phone_home_url: None,
    }
}

/// The wrapper's text from rendered user-data.
fn wrapper() -> String {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&render_kubeadm(&worker()).expect("renders")).expect("YAML");
    doc["write_files"]
        .as_sequence()
        .expect("write_files")
        .iter()
        .find(|f| f["path"].as_str() == Some("/usr/local/sbin/shoal-kubeadm"))
        .and_then(|f| f["content"].as_str())
        .expect("the wrapper is written")
        .to_owned()
}

/// A stand-in command: counts its calls in `<dir>/<name>.calls` and fails its
/// first `fail` calls with `message`, exiting `code`.
fn stand_in(dir: &Path, name: &str, fail: u32, message: &str, code: u8) {
    let script = format!(
        "#!/bin/sh\nn=$(cat {d}/{name}.calls 2>/dev/null || echo 0)\nn=$((n + 1))\necho $n > {d}/{name}.calls\nif [ $n -le {fail} ]; then echo '{message}'; exit {code}; fi\necho '{name} ok'\n",
        d = dir.display()
    );
    let path = dir.join(name);
    std::fs::write(&path, script).expect("write stand-in");
    Command::new("chmod")
        .arg("+x")
        .arg(&path)
        .status()
        .expect("chmod");
}

fn calls(dir: &Path, name: &str) -> u32 {
    std::fs::read_to_string(dir.join(format!("{name}.calls")))
        .map(|s| s.trim().parse().expect("a count"))
        .unwrap_or(0)
}

/// Runs the wrapper with `join --config x` in `dir`; its exit code and stderr.
fn run(dir: &Path) -> (i32, String) {
    let script = dir.join("shoal-kubeadm");
    std::fs::write(&script, wrapper()).expect("write wrapper");
    let path = format!("{}:/usr/bin:/bin", dir.display());
    let out = Command::new("dash")
        .arg(&script)
        .args(["join", "--config", "x"])
        .env("PATH", path)
        .env("SHOAL_KUBEADM_LOG", dir.join("log"))
        .env("SHOAL_KUBEADM_RC", dir.join("rc"))
        .env("SHOAL_KUBEADM_PAUSE", "0")
        .output()
        .expect("dash runs (Debian's dash package)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_late_cri_and_a_failed_preflight_are_waited_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    stand_in(dir.path(), "crictl", 3, "connection refused", 1);
    stand_in(
        dir.path(),
        "kubeadm",
        1,
        "error execution phase preflight: preflight checks failed",
        1,
    );
    let (code, said) = run(dir.path());
    assert_eq!(code, 0, "{said}");
    assert_eq!(calls(dir.path(), "crictl"), 4, "crictl until it answers");
    assert_eq!(calls(dir.path(), "kubeadm"), 2, "{said}");
    assert!(said.contains("try 1 of 3"), "{said}");
}

#[test]
fn other_failures_are_not_retried_and_keep_their_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    stand_in(dir.path(), "crictl", 0, "", 0);
    stand_in(
        dir.path(),
        "kubeadm",
        9,
        "error execution phase kubelet-start: timed out",
        7,
    );
    let (code, said) = run(dir.path());
    assert_eq!(code, 7, "{said}");
    assert_eq!(
        calls(dir.path(), "kubeadm"),
        1,
        "a join that went past preflight is not rerun"
    );
}

#[test]
fn preflight_is_tried_three_times_at_most() {
    let dir = tempfile::tempdir().expect("tempdir");
    stand_in(dir.path(), "crictl", 0, "", 0);
    stand_in(
        dir.path(),
        "kubeadm",
        9,
        "error execution phase preflight: preflight checks failed",
        1,
    );
    let (code, said) = run(dir.path());
    assert_eq!(code, 1, "{said}");
    assert_eq!(calls(dir.path(), "kubeadm"), 3, "{said}");
}
