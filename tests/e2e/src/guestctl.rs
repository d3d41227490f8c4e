//! Debian's kubectl against a guest cluster through the gateway, for the tests of
//! Kubernetes guests: calls that retry while an API server under TCG answers slowly,
//! and the Nodes and pods the tests look for.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::kubectl_bin;

/// Runs kubectl with `kubeconfig` and a 60 s request timeout.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<Output> {
    Ok(std::process::Command::new(kubectl_bin()?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=60s")
        .args(args)
        .output()?)
}

/// A command's stdout and stderr, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs kubectl until it succeeds, for at most `timeout`; its stdout.
pub fn kubectl_until_ok(kubeconfig: &Path, args: &[&str], timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = kubectl(kubeconfig, args)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if Instant::now() > deadline {
            bail!("kubectl {} kept failing: {}", args.join(" "), text(&out));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Creates an object given as JSON. `kubectl create`, not `apply`: apply first
/// downloads the OpenAPI document, which an API server under TCG takes minutes to
/// build. A retry after a timeout may find the object made by the first try.
pub fn create(kubeconfig: &Path, dir: &Path, name: &str, doc: &serde_json::Value) -> Result<()> {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(doc)?)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = kubectl(
            kubeconfig,
            &[
                "create",
                "--validate=false",
                "-f",
                &file.display().to_string(),
            ],
        )?;
        if out.status.success() || text(&out).contains("AlreadyExists") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("kubectl create {name} kept failing: {}", text(&out));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Each Node's name, Ready status and kubelet version.
pub fn nodes(kubeconfig: &Path) -> Result<Vec<(String, bool, String)>> {
    let list: serde_json::Value = serde_json::from_str(&kubectl_until_ok(
        kubeconfig,
        &["get", "nodes", "-o", "json"],
        Duration::from_secs(300),
    )?)?;
    Ok(list["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|n| {
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                ready,
                n["status"]["nodeInfo"]["kubeletVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect())
}

/// How long pods may take to run. Under TCG on two cores a Deployment's pods
/// appeared within minutes on one machine and not within 600 s on a slower one
/// (2026-12-06), so the wait is generous; a healthy run returns as soon as they run.
const PODS_RUNNING_WAIT: Duration = Duration::from_secs(1200);

/// The running, not terminating, pods of `app` as (name, node, pod IP), once there
/// are `count` of them.
pub fn running_pods(
    kubeconfig: &Path,
    app: &str,
    count: usize,
) -> Result<Vec<(String, String, String)>> {
    let deadline = Instant::now() + PODS_RUNNING_WAIT;
    loop {
        let out = kubectl(
            kubeconfig,
            &["get", "pods", "-l", &format!("app={app}"), "-o", "json"],
        )?;
        let list: serde_json::Value = if out.status.success() {
            serde_json::from_slice(&out.stdout)?
        } else {
            serde_json::Value::Null
        };
        let running: Vec<(String, String, String)> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            // A terminating pod still says Running (on a deleted Node, until the
            // pod garbage collector removes it): it does not count.
            .filter(|p| {
                p["status"]["phase"] == "Running"
                    && p["status"]["podIP"].is_string()
                    && p["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|p| {
                (
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    p["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    p["status"]["podIP"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        if running.len() >= count {
            return Ok(running);
        }
        if Instant::now() > deadline {
            let describe = kubectl(
                kubeconfig,
                &["describe", "pods", "-l", &format!("app={app}")],
            )?;
            // No pod at all points at the control plane (the controller manager,
            // the scheduler): show where kube-system stands.
            let system = kubectl(
                kubeconfig,
                &["get", "pods", "-n", "kube-system", "-o", "wide"],
            )?;
            bail!(
                "{count} pods of {app} not Running in {} s: {list}\n{}\nkube-system:\n{}\n{}",
                PODS_RUNNING_WAIT.as_secs(),
                text(&describe),
                text(&system),
                control_plane_report(kubeconfig)?
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// Why the control plane's leader-elected components stop: their pods' last states
/// and events, and the last lines each wrote before its latest restart.
pub fn control_plane_report(kubeconfig: &Path) -> Result<String> {
    let mut report = text(&kubectl(
        kubeconfig,
        &[
            "describe",
            "pods",
            "-n",
            "kube-system",
            "-l",
            "tier=control-plane",
        ],
    )?);
    for component in ["kube-controller-manager", "kube-scheduler"] {
        let selector = format!("component={component}");
        for previous in ["--previous=true", "--previous=false"] {
            let logs = kubectl(
                kubeconfig,
                &[
                    "logs",
                    "-n",
                    "kube-system",
                    "-l",
                    &selector,
                    previous,
                    "--tail=30",
                ],
            )?;
            report.push_str(&format!(
                "\n{component} logs ({previous}):\n{}",
                text(&logs)
            ));
        }
    }
    Ok(report)
}
