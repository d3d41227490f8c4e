//! Debian's kubectl 1.20 against a real `shoal server`, with the admin kubeconfig:
//! apply, get (json, yaml, table), watch, patch, describe with events,
//! api-resources, delete, `auth can-i` (SelfSubjectAccessReview) for an admin and
//! a viewer, and the refusal of server-side apply.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource};
use serde_json::Value;
use shoal_api::Cluster;
use shoal_e2e::{kubectl_bin, raw, signal, ServerProc};

/// An Organization, a Cluster in its namespace and a NodePool of that Cluster.
const MANIFEST: &str = r#"apiVersion: shoal.io/v1alpha1
kind: Organization
metadata:
  name: acme
spec:
  displayName: ACME
---
apiVersion: shoal.io/v1alpha1
kind: Cluster
metadata:
  name: demo
  namespace: org-acme
  labels:
    env: test
spec:
  release: test-1
  controlPlane:
    replicas: 1
    cpu: 2
    memory: 2Gi
    disk: 10Gi
---
apiVersion: shoal.io/v1alpha1
kind: NodePool
metadata:
  name: pool-a
  namespace: org-acme
spec:
  cluster: demo
  replicas: 2
  machine:
    cpu: 2
    memory: 2Gi
    disk: 10Gi
"#;

/// The Release [`MANIFEST`]'s Cluster names, applied by [`Fixture::new`].
const RELEASE: &str = r#"apiVersion: shoal.io/v1alpha1
kind: Release
metadata:
  name: test-1
spec:
  kubernetesVersion: 1.31.2
  image:
    kernel: /nonexistent/vmlinuz
    initrd: /nonexistent/initrd.img
"#;

/// A started server with [`MANIFEST`] written to its temp dir (not applied).
struct Fixture {
    server: ServerProc,
    manifest: PathBuf,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Result<Self> {
        // kubectl against the API alone: controllers would add finalizers, delete a
        // deleted cluster's node pools and write statuses under the test's feet.
        let server = ServerProc::start_with(&["--controllers=false"])?;
        let dir = tempfile::tempdir()?;
        // A Cluster must name a Release that exists; the API alone seeds none.
        let release = dir.path().join("release.yaml");
        std::fs::write(&release, RELEASE)?;
        server.kubectl_ok(&["apply", "-f", release.to_str().unwrap_or_default()])?;
        let manifest = dir.path().join("acme.yaml");
        std::fs::write(&manifest, MANIFEST)?;
        Ok(Self {
            server,
            manifest,
            dir,
        })
    }

    fn manifest(&self) -> &str {
        self.manifest.to_str().unwrap_or_default()
    }

    /// Starts and applies the manifest.
    fn applied() -> Result<Self> {
        let f = Self::new()?;
        f.server.kubectl_ok(&["apply", "-f", f.manifest()])?;
        Ok(f)
    }
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn apply_creates_then_leaves_unchanged() -> Result<()> {
    let f = Fixture::new()?;
    let first = f.server.kubectl_ok(&["apply", "-f", f.manifest()])?;
    for line in [
        "organization.shoal.io/acme created",
        "cluster.shoal.io/demo created",
        "nodepool.shoal.io/pool-a created",
    ] {
        ensure!(
            first.contains(line),
            "first apply did not say {line:?}:\n{first}"
        );
    }
    let second = f.server.kubectl_ok(&["apply", "-f", f.manifest()])?;
    for line in [
        "organization.shoal.io/acme unchanged",
        "cluster.shoal.io/demo unchanged",
        "nodepool.shoal.io/pool-a unchanged",
    ] {
        ensure!(
            second.contains(line),
            "second apply did not say {line:?}:\n{second}"
        );
    }
    // Unchanged really means unchanged: no write, so the generation is still 1.
    let generation = f.server.kubectl_ok(&[
        "get",
        "cluster",
        "demo",
        "-n",
        "org-acme",
        "-o",
        "jsonpath={.metadata.generation}",
    ])?;
    assert_eq!(generation.trim(), "1");

    // A changed manifest is configured: a three-way merge patch of the spec.
    let changed = f.dir.path().join("changed.yaml");
    std::fs::write(
        &changed,
        MANIFEST.replace("release: test-1", "release: test-2"),
    )?;
    let third = f
        .server
        .kubectl_ok(&["apply", "-f", changed.to_str().unwrap_or_default()])?;
    assert!(
        third.contains("cluster.shoal.io/demo configured"),
        "{third}"
    );
    assert!(
        third.contains("nodepool.shoal.io/pool-a unchanged"),
        "{third}"
    );
    let got = f.server.kubectl_ok(&[
        "get",
        "cluster",
        "demo",
        "-n",
        "org-acme",
        "-o",
        "jsonpath={.spec.release} {.metadata.generation}",
    ])?;
    assert_eq!(got, "test-2 2");
    Ok(())
}

#[test]
fn get_renders_json_yaml_and_table() -> Result<()> {
    let f = Fixture::applied()?;

    let json: Value = serde_json::from_str(
        &f.server
            .kubectl_ok(&["get", "clusters", "-A", "-o", "json"])?,
    )
    .context("kubectl get -o json printed invalid JSON")?;
    let items = json["items"].as_array().context("no items in the list")?;
    assert_eq!(items.len(), 1, "{json:#}");
    assert_eq!(items[0]["kind"], "Cluster");
    assert_eq!(items[0]["metadata"]["name"], "demo");
    assert_eq!(items[0]["metadata"]["namespace"], "org-acme");
    assert_eq!(items[0]["spec"]["release"], "test-1");
    assert_eq!(items[0]["spec"]["controlPlane"]["memory"], "2Gi");

    let yaml: Value = serde_yaml::from_str(
        &f.server
            .kubectl_ok(&["get", "cluster", "demo", "-n", "org-acme", "-o", "yaml"])?,
    )
    .context("kubectl get -o yaml printed invalid YAML")?;
    assert_eq!(yaml["apiVersion"], "shoal.io/v1alpha1");
    assert_eq!(yaml["kind"], "Cluster");
    assert_eq!(yaml["metadata"]["name"], "demo");
    assert_eq!(yaml["metadata"]["labels"]["env"], "test");
    assert_eq!(yaml["metadata"]["generation"], 1);
    assert!(
        yaml["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty()),
        "{yaml:#}"
    );
    assert!(
        yaml["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string(),
        "client-side apply keeps its annotation: {yaml:#}"
    );
    assert_eq!(yaml["spec"]["release"], "test-1");

    let table = f
        .server
        .kubectl_ok(&["get", "clusters", "-n", "org-acme"])?;
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .context("no header line")?
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "STATUS", "RELEASE", "NODES", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = lines.next().context("no row")?.split_whitespace().collect();
    assert_eq!(row.first(), Some(&"demo"), "{table}");
    assert!(
        row.contains(&"test-1"),
        "the RELEASE column is missing from {row:?}"
    );
    assert_eq!(lines.next(), None, "one cluster, one row:\n{table}");

    let pools = f
        .server
        .kubectl_ok(&["get", "nodepools", "-n", "org-acme", "-o", "name"])?;
    assert_eq!(pools.trim(), "nodepool.shoal.io/pool-a");
    Ok(())
}

/// A child process stopped by its recorded PID when dropped.
struct ChildByPid {
    child: Child,
    pid: u32,
}

impl ChildByPid {
    fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            signal(self.pid, "TERM")?;
            self.child.wait()?;
        }
        Ok(())
    }
}

impl Drop for ChildByPid {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Waits for a line that satisfies `want`, returning it, or fails at `deadline`
/// with everything read so far.
fn wait_for_line(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    deadline: Instant,
    want: impl Fn(&str) -> bool,
) -> Result<String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if want(&line) {
                    return Ok(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "no matching line before the deadline; read:\n{}",
                seen.join("\n")
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the watch ended; read:\n{}", seen.join("\n"))
            }
        }
    }
}

#[test]
fn watch_shows_a_patch() -> Result<()> {
    let f = Fixture::applied()?;
    let child = Command::new(kubectl_bin()?)
        .env("KUBECONFIG", f.server.kubeconfig())
        .args(["get", "clusters", "-n", "org-acme", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let mut watch = ChildByPid { child, pid };
    let stdout = watch.child.stdout.take().context("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    wait_for_line(&rx, &mut seen, deadline, |l| {
        l.starts_with("demo ") && l.contains("test-1")
    })?;

    f.server.kubectl_ok(&[
        "patch",
        "cluster",
        "demo",
        "-n",
        "org-acme",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"release":"test-2"}}"#,
    ])?;
    let line = wait_for_line(&rx, &mut seen, deadline, |l| l.contains("test-2"))?;
    assert!(
        line.starts_with("demo "),
        "the patched row is demo's: {line:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("Error") || l.contains("error")),
        "{seen:?}"
    );

    watch.stop()?;
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;
    Ok(())
}

#[tokio::test]
async fn describe_shows_recorded_events() -> Result<()> {
    let f = Fixture::applied()?;
    let client = f.server.client().await?;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), "org-acme");
    let cluster = clusters.get("demo").await?;
    let reference = cluster.object_ref(&());
    assert!(reference.uid.is_some(), "the reference carries the uid");

    let recorder = Recorder::new(client, "shoal.io/e2e".into());
    let event = Event {
        type_: EventType::Warning,
        reason: "MachinesPending".into(),
        note: Some("waiting for 2 machines to boot".into()),
        action: "Provision".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await?;
    recorder.publish(&event, &reference).await?;

    let out = tokio::task::spawn_blocking({
        let kubeconfig = f.server.kubeconfig();
        move || describe(&kubeconfig)
    })
    .await??;
    let events = out
        .split_once("\nEvents:")
        .map(|(_, e)| e)
        .with_context(|| format!("no Events section:\n{out}"))?;
    let row = events
        .lines()
        .find(|l| l.contains("MachinesPending"))
        .with_context(|| format!("the event is missing:\n{out}"))?;
    assert!(row.trim_start().starts_with("Warning"), "{row}");
    assert!(row.contains("waiting for 2 machines to boot"), "{row}");
    assert!(
        row.contains("(x2 over"),
        "two publications show as x2: {row}"
    );
    assert!(
        row.contains("shoal.io/e2e"),
        "the reporter shows as From: {row}"
    );
    assert_eq!(
        events.matches("MachinesPending").count(),
        1,
        "one event, counted twice:\n{events}"
    );
    Ok(())
}

fn describe(kubeconfig: &Path) -> Result<String> {
    let out = Command::new(kubectl_bin()?)
        .env("KUBECONFIG", kubeconfig)
        .args(["describe", "cluster", "demo", "-n", "org-acme"])
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl describe failed: {}",
        stderr_of(&out)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn api_resources_lists_shoal_kinds() -> Result<()> {
    let server = ServerProc::start_with(&["--controllers=false"])?;
    let out = server.kubectl_ok(&["api-resources", "--api-group", "shoal.io", "-o", "name"])?;
    let names: Vec<&str> = out.lines().map(str::trim).collect();
    for plural in [
        "clusters",
        "nodepools",
        "organizations",
        "machines",
        "hosts",
        "keypairs",
        "releases",
        "baremetalmachines",
    ] {
        let full = format!("{plural}.shoal.io");
        assert!(
            names.contains(&full.as_str()),
            "{full} is missing from:\n{out}"
        );
    }
    let wide = server.kubectl_ok(&["api-resources", "--api-group", "shoal.io"])?;
    let cluster_row: Vec<&str> = wide
        .lines()
        .find(|l| l.starts_with("clusters "))
        .context("no clusters row")?
        .split_whitespace()
        .collect();
    assert_eq!(
        cluster_row,
        ["clusters", "cl", "shoal.io/v1alpha1", "true", "Cluster"]
    );
    Ok(())
}

/// `kubectl auth can-i` as the admin and as a viewer of acme: each answer is the
/// API's own rule; a malformed review is a 422 naming its field.
#[tokio::test]
async fn auth_can_i_answers_with_the_apis_rules() -> Result<()> {
    let f = Fixture::applied()?;
    let can_i = |token: Option<&str>, args: &[&str]| -> Result<String> {
        let mut all = Vec::new();
        if let Some(t) = token {
            all.extend(["--token", t]);
        }
        all.extend(["auth", "can-i"]);
        all.extend(args);
        let out = f.server.kubectl(&all)?;
        // "yes", or "no" with the API's reason after it.
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        ensure!(
            said == "yes" || said.starts_with("no"),
            "kubectl auth can-i {args:?}: {said} {}",
            stderr_of(&out)
        );
        Ok(said)
    };
    ensure!(can_i(None, &["create", "clusters.shoal.io", "-n", "org-acme"])? == "yes");
    ensure!(can_i(None, &["create", "hosts.shoal.io"])? == "yes");
    let token = f
        .server
        .shoal_ok(&["token", "create", "--org", "acme", "--role", "viewer"])?;
    let viewer = token
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with("shoal."))
        .context("no token printed")?
        .to_owned();
    let v = Some(viewer.as_str());
    for (args, want) in [
        (&["get", "clusters.shoal.io", "-n", "org-acme"][..], "yes"),
        (&["list", "nodepools.shoal.io", "-n", "org-acme"][..], "yes"),
        (&["delete", "clusters.shoal.io", "-n", "org-acme"][..], "no"),
        (&["patch", "nodepools.shoal.io", "-n", "org-acme"][..], "no"),
        (&["get", "clusters.shoal.io", "-n", "org-other"][..], "no"),
        (&["list", "hosts.shoal.io"][..], "no"),
    ] {
        let said = can_i(v, args)?;
        ensure!(
            said.split_whitespace().next() == Some(want),
            "viewer: can-i {args:?} said {said}, want {want}"
        );
    }
    let why = can_i(v, &["delete", "clusters.shoal.io", "-n", "org-acme"])?;
    ensure!(why.contains("viewers may only read"), "the reason: {why}");
    // The review agrees with the request itself.
    let forced = f.server.kubectl(&[
        "--token", &viewer, "delete", "cluster", "demo", "-n", "org-acme",
    ])?;
    ensure!(
        !forced.status.success() && stderr_of(&forced).contains("Forbidden"),
        "a viewer's delete: {}",
        stderr_of(&forced)
    );
    let admin = f.server.client().await?;
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let review = |attrs: Value| {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        }))
    };
    let (code, body) = raw(
        &admin,
        "POST",
        path,
        "application/json",
        review(
            serde_json::json!({"verb": "escalate", "group": "shoal.io", "resource": "clusters"}),
        )?,
    )
    .await?;
    ensure!(
        code == 422 && body.to_string().contains("spec.resourceAttributes.verb"),
        "an unknown verb: {code} {body}"
    );
    let (code, body) = raw(&admin, "POST", path, "application/json", b"{}".to_vec()).await?;
    ensure!(
        code == 422 && body["details"]["causes"][0]["field"] == "kind",
        "no kind: {code} {body}"
    );
    let (code, body) = raw(&admin, "GET", path, "application/json", Vec::new()).await?;
    ensure!(code == 405, "GET of the reviews: {code} {body}");
    let (code, body) = raw(
        &admin,
        "POST",
        path,
        "application/json",
        review(serde_json::json!({"verb": "get", "group": "shoal.io", "resource": "widgets"}))?,
    )
    .await?;
    ensure!(
        code == 201
            && body["status"]["allowed"] == false
            && body["status"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("widgets")),
        "an unknown resource: {code} {body}"
    );
    Ok(())
}

#[test]
fn edit_changes_the_spec() -> Result<()> {
    let f = Fixture::applied()?;
    // An "editor" that changes the release in the file kubectl hands it.
    let editor = f.dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/release: test-1/release: test-5/' \"$1\"\n",
    )?;
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let out = Command::new(kubectl_bin()?)
        .env("KUBECONFIG", f.server.kubeconfig())
        .env("KUBE_EDITOR", &editor)
        .args(["edit", "cluster", "demo", "-n", "org-acme"])
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl edit failed: {}",
        stderr_of(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cluster.shoal.io/demo edited"));
    let got = f.server.kubectl_ok(&[
        "get",
        "cluster",
        "demo",
        "-n",
        "org-acme",
        "-o",
        "jsonpath={.spec.release} {.metadata.generation}",
    ])?;
    assert_eq!(got, "test-5 2");
    Ok(())
}

#[test]
fn delete_then_get_is_not_found() -> Result<()> {
    let f = Fixture::applied()?;
    let out = f
        .server
        .kubectl_ok(&["delete", "cluster", "demo", "-n", "org-acme"])?;
    assert!(out.contains(r#"cluster.shoal.io "demo" deleted"#), "{out}");
    let get = f
        .server
        .kubectl(&["get", "cluster", "demo", "-n", "org-acme"])?;
    assert!(!get.status.success(), "get after delete succeeded");
    let err = stderr_of(&get);
    assert!(
        err.contains("(NotFound)") && err.contains(r#"clusters.shoal.io "demo" not found"#),
        "{err}"
    );
    // The rest of the manifest is untouched.
    f.server
        .kubectl_ok(&["get", "nodepool", "pool-a", "-n", "org-acme"])?;
    Ok(())
}

#[tokio::test]
async fn server_side_apply_is_refused_clearly() -> Result<()> {
    let f = Fixture::applied()?;
    // The server answers an apply patch with 415 and a Status that says why.
    let client = f.server.client().await?;
    let (code, status) = raw(
        &client,
        "PATCH",
        "/apis/shoal.io/v1alpha1/namespaces/org-acme/clusters/demo?fieldManager=e2e",
        "application/apply-patch+yaml",
        b"spec:\n  release: test-2\n".to_vec(),
    )
    .await?;
    assert_eq!(code, 415, "{status:#}");
    assert_eq!(status["reason"], "UnsupportedMediaType", "{status:#}");

    let out = f
        .server
        .kubectl(&["apply", "--server-side", "-f", f.manifest()])?;
    assert!(!out.status.success(), "server-side apply succeeded");
    let err = stderr_of(&out);
    assert!(err.contains("server-side apply is not supported"), "{err}");
    assert!(
        err.contains("without --server-side"),
        "the message says what to do instead: {err}"
    );
    // Nothing changed.
    let release = f.server.kubectl_ok(&[
        "get",
        "cluster",
        "demo",
        "-n",
        "org-acme",
        "-o",
        "jsonpath={.spec.release}",
    ])?;
    assert_eq!(release, "test-1");
    Ok(())
}
