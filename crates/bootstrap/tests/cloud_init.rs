//! Every rendered variant checked by the real `cloud-init schema`, and read back by
//! PyYAML (the YAML 1.1 parser cloud-init uses) to the same values serde_yaml reads.
//!
//! These tests need Debian's `cloud-init` (which brings python3-yaml): they fail, not
//! skip, when it is missing. `scripts/setup.sh` installs it.

mod common;

use std::io::ErrorKind;
use std::path::Path;
use std::process::{Command, Output};

use serde_yaml::Value;

const INSTALL: &str = "run scripts/setup.sh, which installs Debian's cloud-init package";

/// Runs a tool the tests need, failing loudly when it is not installed.
fn run(cmd: &mut Command) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("{program} is not installed: {INSTALL}")
        }
        Err(e) => panic!("running {program}: {e}"),
    }
}

/// `cloud-init schema --config-file <path>`: whether it passed, and its output.
fn schema(path: &Path) -> (bool, String) {
    let out = run(Command::new("cloud-init")
        .arg("schema")
        .arg("--config-file")
        .arg(path));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the document");
    path
}

#[test]
fn every_variant_passes_cloud_init_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = common::variants();
    assert_eq!(all.len(), 11);
    for (name, rendered) in all {
        let rendered = rendered.unwrap_or_else(|e| panic!("{name}: {e}"));
        let path = write(dir.path(), name, &rendered);
        let (ok, text) = schema(&path);
        assert!(ok, "cloud-init schema refused {name}:\n{text}\n{rendered}");
        assert!(
            text.contains("Valid cloud-config"),
            "cloud-init schema did not call {name} valid:\n{text}"
        );
    }
}

#[test]
fn cloud_init_schema_refuses_broken_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered =
        shoal_bootstrap::render_kubeadm(&common::node(shoal_bootstrap::Role::ControlPlaneInit))
            .expect("renders");
    let doc: Value = serde_yaml::from_str(&rendered).expect("yaml");

    // Permissions as a YAML integer instead of an octal string.
    let mut bad_mode = doc.clone();
    bad_mode["write_files"][0]["permissions"] = Value::from(12);
    // A host name that is a list.
    let mut bad_hostname = doc.clone();
    bad_hostname["hostname"] = Value::Sequence(vec![Value::from("demo-cp-0")]);
    // phone_home without its required url.
    let mut bad_phone_home = doc;
    bad_phone_home["phone_home"]
        .as_mapping_mut()
        .expect("phone_home is a mapping")
        .remove("url");

    for (name, broken, complaint) in [
        ("bad-mode.yaml", bad_mode, "permissions"),
        ("bad-hostname.yaml", bad_hostname, "hostname"),
        ("bad-phone-home.yaml", bad_phone_home, "url"),
    ] {
        let text = format!(
            "#cloud-config\n{}",
            serde_yaml::to_string(&broken).expect("serializes")
        );
        let (ok, out) = schema(&write(dir.path(), name, &text));
        assert!(!ok, "cloud-init schema accepted {name}:\n{out}\n{text}");
        assert!(out.contains(complaint), "{name}: {out}");
    }
}

/// Each YAML document in `text` read by PyYAML's safe loader, as JSON.
fn pyyaml(dir: &Path, text: &str) -> serde_json::Value {
    let input = write(dir, "pyyaml-input.yaml", text);
    let out = run(Command::new("python3")
        .arg("-c")
        .arg(
            "import json, sys, yaml\n\
         docs = list(yaml.safe_load_all(open(sys.argv[1])))\n\
         print(json.dumps(docs))",
        )
        .arg(&input));
    assert!(
        out.status.success(),
        "python3 yaml ({INSTALL}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

/// Each YAML document in `text` read by serde_yaml, as JSON.
fn serde_docs(text: &str) -> serde_json::Value {
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML maps to JSON"))
        .collect();
    serde_json::Value::from(docs)
}

#[test]
fn a_yaml_1_1_reader_sees_the_same_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, rendered) in common::variants() {
        let rendered = rendered.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            pyyaml(dir.path(), &rendered),
            serde_docs(&rendered),
            "{name}"
        );
        // The files' contents too: kubeadm's configuration and the test image's node
        // file are YAML read by YAML 1.1 parsers.
        let doc: Value = serde_yaml::from_str(&rendered).expect("yaml");
        for file in doc["write_files"].as_sequence().expect("write_files") {
            let path = file["path"].as_str().expect("path");
            if path.ends_with(".yaml") {
                let content = file["content"].as_str().expect("content");
                assert_eq!(
                    pyyaml(dir.path(), content),
                    serde_docs(content),
                    "{name}: {path}"
                );
            }
        }
    }
}
