//! The `shoal-calico` script the Calico user-data writes, run by Debian's dash (the
//! node image's /bin/sh) with a stand-in `kubectl` on PATH: it applies the operator
//! and then the Installation, tries each again while it fails, and gives up naming
//! the step.

mod common;

use std::path::Path;
use std::process::Command;

use shoal_bootstrap::{
    operator_manifest_url, render_kubeadm, Role, CALICO_INSTALLATION_PATH, CALICO_INSTALL_PATH,
};

/// The script's text from rendered user-data.
fn script() -> String {
    let doc: serde_yaml::Value = serde_yaml::from_str(
        &render_kubeadm(&common::calico(Role::ControlPlaneInit)).expect("renders"),
    )
    .expect("YAML");
    doc["write_files"]
        .as_sequence()
        .expect("write_files")
        .iter()
        .find(|f| f["path"].as_str() == Some(CALICO_INSTALL_PATH))
        .and_then(|f| f["content"].as_str())
        .expect("the script is written")
        .to_owned()
}

/// A stand-in `kubectl` that logs its arguments and fails while the applied file
/// is `refused` and fewer than `fail` calls for it were made.
fn kubectl(dir: &Path, refused: &str, fail: u32) {
    let text = format!(
        "#!/bin/sh\necho \"$*\" >> {d}/kubectl.log\nfor last; do :; done\nif [ \"$last\" = '{refused}' ]; then\n  n=$(cat {d}/refused.calls 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {d}/refused.calls\n  if [ $n -le {fail} ]; then echo 'error: resource mapping not found' >&2; exit 1; fi\nfi\n",
        d = dir.display()
    );
    let path = dir.join("kubectl");
    std::fs::write(&path, text).expect("write stand-in");
    Command::new("chmod")
        .arg("+x")
        .arg(&path)
        .status()
        .expect("chmod");
}

fn run(dir: &Path, tries: u32) -> (i32, String, Vec<String>) {
    let path = dir.join("shoal-calico");
    std::fs::write(&path, script()).expect("write script");
    let out = Command::new("dash")
        .arg(&path)
        .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .env("SHOAL_CALICO_PAUSE", "0")
        .env("SHOAL_CALICO_TRIES", tries.to_string())
        .output()
        .expect("dash runs (Debian's dash package)");
    let log = std::fs::read_to_string(dir.join("kubectl.log")).unwrap_or_default();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        log.lines().map(str::to_owned).collect(),
    )
}

#[test]
fn the_installation_waits_for_the_operators_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    kubectl(dir.path(), CALICO_INSTALLATION_PATH, 3);
    let (code, said, calls) = run(dir.path(), 10);
    assert_eq!(code, 0, "{said}");
    assert_eq!(
        calls.len(),
        5,
        "operator once, Installation 4 times: {calls:?}"
    );
    assert!(
        calls[0].contains("apply --server-side --force-conflicts -f")
            && calls[0].ends_with(&operator_manifest_url()),
        "{calls:?}"
    );
    assert!(
        calls[1..]
            .iter()
            .all(|c| c.ends_with(CALICO_INSTALLATION_PATH)),
        "{calls:?}"
    );
    assert!(calls[0].contains("--kubeconfig /etc/kubernetes/admin.conf"));
    assert!(said.contains("try 3 of 10"), "{said}");
}

#[test]
fn an_operator_that_cannot_be_fetched_fails_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = operator_manifest_url();
    kubectl(dir.path(), &url, 99);
    let (code, said, calls) = run(dir.path(), 3);
    assert_eq!(code, 1, "{said}");
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(
        said.contains(&format!(
            "applying the Tigera operator ({url}) failed 3 times; giving up"
        )),
        "{said}"
    );
}
