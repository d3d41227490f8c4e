//! The web UI in a real browser: Debian's Chromium, headless, driven by npm
//! playwright-core (`scripts/browser/ui-check.mjs`, installed by
//! `scripts/setup.sh`) against a real `shoal server` with its local agent and the
//! test release. A user signs in with a token, sees the server's refusal at the
//! form's field, creates a cluster through the form, watches it turn Ready on the
//! open clusters page (no reload), scales it, creates a kubeconfig whose key pair
//! the page makes (WebCrypto) and which Debian's kubectl then uses through the
//! embedded gateway into the guest, and deletes the cluster by typing its name.
//! A viewer, in a browser context of its own, sees the cluster but no create,
//! scale, upgrade, delete or kubeconfig button, and a forced delete gets 403.
//! Every page is screenshotted into `target/ui-screenshots/` and checked with
//! axe-core: no serious or critical violation. A second run signs in through a
//! real OIDC provider (npm oidc-provider): its login and consent pages, then the
//! UI signed in. Needs root (the local agent's namespace).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kube::Api;
use serde_json::Value;
use shoal_api::Cluster;
use shoal_e2e::hosts::{local_agent_args, NetnsGuard};
use shoal_e2e::oidc::UiWithProvider;
use shoal_e2e::{free_port, kubectl_bin, workspace_root, ServerProc};

const ORG: &str = "acme";
const CLUSTER: &str = "web-browser";

fn org_token(server: &ServerProc, role: &str) -> Result<String> {
    let text = server.shoal_ok(&["token", "create", "--org", ORG, "--role", role])?;
    text.lines()
        .map(str::trim)
        .rfind(|l| l.starts_with("shoal."))
        .map(str::to_owned)
        .context("no token printed")
}

/// Fails with what to run when Debian's chromium is missing.
/// The browser report's step called `name`, if the run got there.
fn step<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    report["steps"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

fn require_chromium() -> Result<()> {
    let chromium = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()?;
    ensure!(
        chromium.status.success(),
        "chromium is not installed: run scripts/setup.sh (it installs Debian's chromium and the npm driver)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_creates_scales_and_deletes_a_cluster_in_chromium() -> Result<()> {
    require_chromium()?;
    shoal_e2e::fleet::image("vmlinuz")?;
    let netns = format!("sgub{}", std::process::id());
    let _guard = NetnsGuard(netns.clone());
    let images = workspace_root().join("images/out").display().to_string();
    let mut args = local_agent_args(&netns, "local");
    args.extend(["--test-image-dir", &images]);
    // The embedded gateway, which the downloaded kubeconfig goes through.
    let gateway = format!("127.0.0.1:{}", free_port()?);
    let gateway_http = format!("127.0.0.1:{}", free_port()?);
    args.extend([
        "--gateway-listen",
        &gateway,
        "--gateway-http-listen",
        &gateway_http,
    ]);
    let kubectl = kubectl_bin()?;
    let server = ServerProc::start_with(&args)?;
    server.shoal_ok(&["org", "create", ORG])?;
    let token = org_token(&server, "owner")?;
    let viewer_token = org_token(&server, "viewer")?;
    let out = workspace_root().join("target/ui-screenshots");
    let _ = std::fs::remove_dir_all(&out);

    let started = Instant::now();
    let run = tokio::task::spawn_blocking({
        let (base, out) = (server.url(), out.clone());
        move || {
            Command::new("bash")
                .arg(workspace_root().join("scripts/npm-tool.sh"))
                .args(["browser", "run", "ui-check.mjs"])
                .env("SHOAL_UI_BASE", base)
                .env("SHOAL_UI_TOKEN", token)
                .env("SHOAL_UI_VIEWER_TOKEN", viewer_token)
                .env("SHOAL_UI_ORG", ORG)
                .env("SHOAL_UI_CLUSTER", CLUSTER)
                .env("SHOAL_UI_RELEASE", "test")
                .env("SHOAL_UI_OUT", out)
                .env("SHOAL_UI_READY_SECS", "300")
                .env("KUBECTL", kubectl)
                .output()
        }
    });
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .context("the browser run took more than 600 s")???;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_str(stdout.trim()).with_context(|| {
        format!(
            "the browser run printed no report (exit {}): {stdout}\n{stderr}",
            output.status
        )
    })?;
    for step in report["steps"].as_array().into_iter().flatten() {
        eprintln!("{step}");
    }
    ensure!(
        report["ok"] == true && output.status.success(),
        "the browser run failed after {:?}: {}\nsteps: {}\nstderr: {stderr}",
        started.elapsed(),
        report["error"],
        report["steps"]
    );
    let names: Vec<&str> = report["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for want in [
        "signed in",
        "name error at its field",
        "created",
        "Ready live",
        "scaled",
        "viewer offered nothing",
        "kubeconfig downloaded",
        "kubectl with the kubeconfig",
        "deleted",
        "gone from the list",
    ] {
        ensure!(names.contains(&want), "no step {want:?} in {names:?}");
    }
    let focused = step(&report, "keyboard focus").map(|s| s["focused"].clone());
    ensure!(
        focused == Some(Value::from("Clusters")),
        "the first Tab does not reach the navigation: {focused:?}"
    );
    let events = step(&report, "events shown")
        .and_then(|s| s["rows"].as_u64())
        .unwrap_or(0);
    ensure!(
        events >= 1,
        "the cluster's page shows no recent events (the scheduler records one per Machine)"
    );
    // The viewer saw the cluster but none of the owner's buttons, and the server
    // refused the delete it forced.
    let seen = step(&report, "viewer offered nothing")
        .cloned()
        .unwrap_or_default();
    ensure!(
        seen["onList"] == serde_json::json!({"create": false})
            && seen["onDetail"]
                == serde_json::json!({"scale": false, "upgrade": false, "delete": false, "kubeconfig": false})
            && seen["forcedDelete"] == 403,
        "what the viewer was offered, and its forced delete: {seen}"
    );
    // The guest saw the certificate the browser's key pair was signed for: the
    // owner token's user, with the CN the page asked for.
    let guest = step(&report, "kubectl with the kubeconfig")
        .map(|s| s["answer"].clone())
        .unwrap_or_default();
    ensure!(
        guest["user"]
            .as_str()
            .is_some_and(|u| u.ends_with(":browser")),
        "the guest's view of the downloaded kubeconfig's user: {guest}"
    );
    let file = step(&report, "kubeconfig downloaded")
        .and_then(|s| s["file"].as_str())
        .unwrap_or_default()
        .to_owned();
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
    ensure!(
        text.contains(&format!("server: \"https://{gateway}\"")),
        "the kubeconfig does not go through the gateway {gateway}: {}",
        text.lines()
            .filter(|l| !l.contains("-data:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let violations = report["violations"].as_array().cloned().unwrap_or_default();
    ensure!(
        violations.is_empty(),
        "axe-core found {} serious or critical accessibility violations: {}",
        violations.len(),
        serde_json::to_string_pretty(&violations)?
    );
    let shots = report["screenshots"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(shots.len() >= 10, "only {} screenshots", shots.len());
    for shot in &shots {
        let path = shot.as_str().unwrap_or_default();
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        ensure!(size > 1000, "screenshot {path} is {size} bytes");
    }
    eprintln!(
        "browser run: {:?}, {} screenshots in {}",
        started.elapsed(),
        shots.len(),
        out.display()
    );
    // The UI's delete reached the API.
    let client = server.client().await?;
    let left = Api::<Cluster>::namespaced(client, "org-acme")
        .get_opt(CLUSTER)
        .await?;
    ensure!(
        left.is_none_or(|c| c.metadata.deletion_timestamp.is_some()),
        "the cluster outlived its deletion in the UI"
    );
    Ok(())
}

/// Sign-in through the identity provider in Chromium: the provider's own login
/// and consent pages, then the callback, and the clusters page opens signed in
/// (the SameSite=Strict session cookie reaches it although the provider started
/// the navigation). alice's group makes her an owner of acme, so Create cluster
/// is offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_through_the_identity_provider_in_chromium() -> Result<()> {
    require_chromium()?;
    let setup = UiWithProvider::start(ORG, "platform-team").await?;
    let base = setup.base.clone();

    let out = workspace_root().join("target/ui-screenshots");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg(workspace_root().join("scripts/npm-tool.sh"))
            .args(["browser", "run", "oidc-sign-in.mjs"])
            .env("SHOAL_UI_BASE", &base)
            .env("OIDC_USER", "alice")
            .env("OIDC_PASSWORD", "alice-pw")
            .env("SHOAL_UI_OUT", out)
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).with_context(|| {
        format!(
            "the browser run printed no report (exit {}): {stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    ensure!(
        report["ok"] == true && output.status.success(),
        "the OIDC sign-in in Chromium failed at {} ({}): {}",
        report["url"],
        report["text"],
        report["error"]
    );
    ensure!(
        report["heading"] == "Clusters" && report["createOffered"] == true,
        "after the OIDC sign-in: {report}"
    );
    Ok(())
}
