//! The `shoal` CLI against a real server: org, cluster, get/apply/delete, token,
//! login, crds, completion, and how it reports errors.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{ensure, Context, Result};
use kube::Client;
use serde_json::Value;
use shoal_e2e::fixtures::ClusterArgs;
use shoal_e2e::{raw, shoal_bin, ServerProc};

const GV: &str = "/apis/shoal.io/v1alpha1";

fn text(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the CLI with the admin kubeconfig; it must succeed. Returns stdout.
fn ok(server: &ServerProc, args: &[&str]) -> Result<String> {
    let out = server.shoal(args)?;
    ensure!(
        out.status.success(),
        "shoal {} failed: {}",
        args.join(" "),
        text(&out)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Runs the CLI with the admin kubeconfig; it must fail. Returns stderr.
fn fails(server: &ServerProc, args: &[&str]) -> Result<String> {
    let out = server.shoal(args)?;
    ensure!(
        !out.status.success(),
        "shoal {} should have failed: {}",
        args.join(" "),
        text(&out)
    );
    ensure!(
        out.status.code().is_some_and(|c| c != 0),
        "shoal {} died without an exit code: {}",
        args.join(" "),
        text(&out)
    );
    Ok(String::from_utf8(out.stderr)?)
}

/// The CLI with no admin kubeconfig, HOME set to `home` and KUBECONFIG unset.
fn shoal_in_home(home: &Path, args: &[&str]) -> Result<Output> {
    Ok(Command::new(shoal_bin()?)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .args(args)
        .output()?)
}

async fn get(client: &Client, path: &str) -> Result<(u16, Value)> {
    raw(client, "GET", path, "application/json", vec![]).await
}

/// The rows of a table printed by the CLI, as whitespace-separated cells.
fn rows(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

/// A server with release test-1, organizations acme and beta, cluster demo (one
/// control-plane node, a default pool of two workers) in acme and cluster other in
/// beta, all made with the CLI.
struct Orgs {
    server: ServerProc,
    admin: Client,
    tmp: tempfile::TempDir,
    /// demo as the API stored it.
    cl: Value,
}

impl Orgs {
    async fn start() -> Result<Self> {
        let server = ServerProc::start()?;
        let admin = server.client().await?;
        shoal_e2e::ensure_release(&admin, "test-1").await?;
        let tmp = tempfile::tempdir()?;

        // Organizations.
        let out = ok(
            &server,
            &["org", "create", "acme", "--display-name", "Acme Inc"],
        )?;
        ensure!(
            out.contains("acme") && out.contains("created"),
            "org create printed: {out}"
        );
        ok(&server, &["org", "create", "beta"])?;
        let (code, ns) = get(&admin, "/api/v1/namespaces/org-acme").await?;
        ensure!(
            code == 200,
            "org create did not make namespace org-acme: {code} {ns}"
        );
        let list = ok(&server, &["org", "list"])?;
        let table = rows(&list);
        ensure!(
            table.first().is_some_and(|h| h.first() == Some(&"NAME")),
            "org list has no header: {list}"
        );
        for org in ["acme", "beta"] {
            ensure!(
                table.iter().skip(1).any(|r| r.first() == Some(&org)),
                "org list misses {org}: {list}"
            );
        }
        let stderr = fails(&server, &["org", "create", "acme"])?;
        ensure!(
            stderr.contains("AlreadyExists"),
            "a duplicate org create printed: {stderr}"
        );

        // Clusters: create writes a Cluster and its default NodePool.
        let out = ok(
            &server,
            ClusterArgs::new("demo", "acme")
                .release("test-1")
                .workers("2")
                .args(),
        )?;
        ensure!(
            out.contains("cluster.shoal.io/demo created"),
            "cluster create printed: {out}"
        );
        let (code, cl) = get(&admin, &format!("{GV}/namespaces/org-acme/clusters/demo")).await?;
        ensure!(code == 200, "the Cluster was not written: {code} {cl}");
        ensure!(
            cl["spec"]["release"] == "test-1" && cl["spec"]["controlPlane"]["replicas"] == 1,
            "Cluster spec: {cl}"
        );
        let (code, np) = get(
            &admin,
            &format!("{GV}/namespaces/org-acme/nodepools?labelSelector=shoal.io/cluster%3Ddemo"),
        )
        .await?;
        ensure!(code == 200, "listing node pools: {code} {np}");
        let pools = np["items"].as_array().context("items")?;
        ensure!(pools.len() == 1, "want one NodePool for demo: {np}");
        ensure!(
            pools[0]["spec"]["cluster"] == "demo" && pools[0]["spec"]["replicas"] == 2,
            "NodePool spec: {}",
            pools[0]
        );
        ok(
            &server,
            &[
                "cluster",
                "create",
                "--name",
                "other",
                "--org",
                "beta",
                "--release",
                "test-1",
            ],
        )?;
        Ok(Self {
            server,
            admin,
            tmp,
            cl,
        })
    }
}

#[tokio::test]
async fn cluster_create_writes_a_cluster_and_pool_that_list_and_get_show() -> Result<()> {
    let orgs = Orgs::start().await?;
    let server = &orgs.server;
    let cl = &orgs.cl;
    let list = ok(server, &["cluster", "list"])?;
    let table = rows(&list);
    ensure!(
        table
            .first()
            .is_some_and(|h| h.starts_with(&["NAMESPACE", "NAME"])),
        "cluster list header: {list}"
    );
    ensure!(
        table.iter().any(|r| r.starts_with(&["org-acme", "demo"])),
        "cluster list misses demo: {list}"
    );
    ensure!(
        table.iter().any(|r| r.starts_with(&["org-beta", "other"])),
        "cluster list misses other: {list}"
    );
    let list = ok(server, &["cluster", "list", "--org", "acme"])?;
    ensure!(
        list.contains("demo") && !list.contains("other"),
        "cluster list --org acme: {list}"
    );

    let json_out = ok(
        server,
        &["cluster", "get", "demo", "--org", "acme", "-o", "json"],
    )?;
    let got: Value = serde_json::from_str(&json_out)
        .with_context(|| format!("cluster get -o json is not JSON: {json_out}"))?;
    ensure!(
        got["kind"] == "Cluster"
            && got["metadata"]["name"] == "demo"
            && got["spec"]["release"] == "test-1",
        "cluster get: {got}"
    );
    ensure!(
        got["metadata"]["uid"] == cl["metadata"]["uid"],
        "cluster get shows another object: {got}"
    );

    let table_out = ok(server, &["get", "clusters", "-n", "org-acme"])?;
    let table = rows(&table_out);
    let header = table.first().context("no table header")?;
    ensure!(
        header.first() == Some(&"NAME") && header.contains(&"RELEASE") && header.contains(&"AGE"),
        "get clusters header: {table_out}"
    );
    let release_col = header
        .iter()
        .position(|h| *h == "RELEASE")
        .context("RELEASE column")?;
    let demo_row = table
        .iter()
        .find(|r| r.first() == Some(&"demo"))
        .with_context(|| format!("no demo row: {table_out}"))?;
    ensure!(
        demo_row.contains(&"test-1"),
        "demo row {demo_row:?} lacks its release (column {release_col})"
    );
    ensure!(
        !table_out.contains("other"),
        "get clusters -n org-acme shows beta's cluster: {table_out}"
    );
    Ok(())
}

#[tokio::test]
async fn apply_creates_leaves_unchanged_and_configures_and_delete_removes() -> Result<()> {
    let orgs = Orgs::start().await?;
    let server = &orgs.server;
    let admin = &orgs.admin;
    let tmp = &orgs.tmp;
    // apply -f: created, unchanged, configured; delete -f.
    let file = tmp.path().join("applied.yaml");
    let manifest = |team: &str| {
        format!(
            "apiVersion: shoal.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: applied\n  namespace: org-acme\n  labels:\n    team: {team}\nspec:\n  release: test-1\n  controlPlane:\n    replicas: 1\n    cpu: 2\n    memory: 2Gi\n    disk: 10Gi\n---\napiVersion: shoal.io/v1alpha1\nkind: NodePool\nmetadata:\n  name: applied-pool\n  namespace: org-acme\nspec:\n  cluster: applied\n  replicas: 1\n  machine:\n    cpu: 2\n    memory: 2Gi\n    disk: 10Gi\n"
        )
    };
    std::fs::write(&file, manifest("red"))?;
    let file_arg = file.to_str().context("utf-8 path")?;
    let out = ok(server, &["apply", "-f", file_arg])?;
    ensure!(
        out.contains("cluster.shoal.io/applied created")
            && out.contains("nodepool.shoal.io/applied-pool created"),
        "first apply: {out}"
    );
    let (_, first) = get(admin, &format!("{GV}/namespaces/org-acme/clusters/applied")).await?;
    ensure!(
        first["metadata"]["labels"]["team"] == "red",
        "apply did not write the label: {first}"
    );
    let out = ok(server, &["apply", "-f", file_arg])?;
    ensure!(
        out.contains("cluster.shoal.io/applied unchanged")
            && out.contains("nodepool.shoal.io/applied-pool unchanged"),
        "second apply: {out}"
    );
    let (_, second) = get(admin, &format!("{GV}/namespaces/org-acme/clusters/applied")).await?;
    ensure!(
        second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"],
        "an unchanged apply wrote: {second}"
    );
    std::fs::write(&file, manifest("blue"))?;
    let out = ok(server, &["apply", "-f", file_arg])?;
    ensure!(
        out.contains("cluster.shoal.io/applied configured")
            && out.contains("nodepool.shoal.io/applied-pool unchanged"),
        "third apply: {out}"
    );
    let (_, third) = get(admin, &format!("{GV}/namespaces/org-acme/clusters/applied")).await?;
    ensure!(
        third["metadata"]["labels"]["team"] == "blue",
        "apply did not change the label: {third}"
    );
    let out = ok(server, &["delete", "-f", file_arg])?;
    ensure!(
        out.contains("cluster.shoal.io/applied deleted")
            && out.contains("nodepool.shoal.io/applied-pool deleted"),
        "delete -f: {out}"
    );
    // The Cluster carries the cluster controller's finalizer: it goes once the
    // controller has cleaned up, which takes longer when tests run in parallel.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for path in ["clusters/applied", "nodepools/applied-pool"] {
        loop {
            let (code, _) = get(admin, &format!("{GV}/namespaces/org-acme/{path}")).await?;
            if code == 404 || std::time::Instant::now() >= deadline {
                ensure!(
                    code == 404,
                    "{path} still exists 30 s after delete -f ({code})"
                );
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_token_logs_in_and_its_revocation_locks_the_user_out() -> Result<()> {
    let orgs = Orgs::start().await?;
    let server = &orgs.server;
    let tmp = &orgs.tmp;
    // Tokens.
    let out = ok(
        server,
        &[
            "token",
            "create",
            "--org",
            "acme",
            "--role",
            "viewer",
            "--description",
            "e2e",
        ],
    )?;
    let token = out.trim().to_owned();
    ensure!(
        token.starts_with("shoal.") && token.split('.').count() == 3,
        "token create printed: {out}"
    );
    let id = token.split('.').nth(1).context("token id")?.to_owned();
    let list = ok(server, &["token", "list"])?;
    let row = rows(&list)
        .into_iter()
        .find(|r| r.first() == Some(&id.as_str()))
        .with_context(|| format!("token list misses {id}: {list}"))?;
    ensure!(
        row.contains(&"acme") && row.contains(&"viewer"),
        "token row: {row:?}"
    );
    ensure!(
        !list.contains(token.rsplit('.').next().unwrap_or("-")),
        "token list shows the secret: {list}"
    );
    let stderr = fails(
        server,
        &["token", "create", "--org", "acem", "--role", "viewer"],
    )?;
    ensure!(
        stderr.contains("\"acem\" does not exist"),
        "a token for a missing org printed: {stderr}"
    );
    let stderr = fails(
        server,
        &["token", "create", "--org", "acme", "--role", "emperor"],
    )?;
    ensure!(stderr.contains("role"), "a bad role printed: {stderr}");

    // login writes only the given config, and commands work with it.
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home)?;
    let config = tmp.path().join("login/config");
    let ca = server.data_dir.join("tls/ca.crt");
    ensure!(ca.exists(), "{} is missing", ca.display());
    let (config_arg, ca_arg) = (
        config.to_str().context("utf-8")?,
        ca.to_str().context("utf-8")?,
    );
    let url = server.url();
    let out = shoal_in_home(
        &home,
        &[
            "login",
            "--server",
            &url,
            "--token",
            &token,
            "--certificate-authority",
            ca_arg,
            "--config",
            config_arg,
        ],
    )?;
    ensure!(out.status.success(), "login failed: {}", text(&out));
    ensure!(config.exists(), "login did not write {}", config.display());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&config)?.permissions());
    ensure!(
        mode & 0o077 == 0,
        "the config holding the token is readable by others: {mode:o}"
    );
    let out = shoal_in_home(&home, &["--kubeconfig", config_arg, "cluster", "list"])?;
    ensure!(
        out.status.success(),
        "cluster list with the login config failed: {}",
        text(&out)
    );
    let listed = String::from_utf8(out.stdout)?;
    ensure!(
        listed.contains("demo") && !listed.contains("other"),
        "the viewer's cluster list: {listed}"
    );
    let out = shoal_in_home(
        &home,
        &[
            "--kubeconfig",
            config_arg,
            "cluster",
            "create",
            "--name",
            "nope",
            "--org",
            "acme",
            "--release",
            "test-1",
        ],
    )?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
        "a viewer created a cluster: {}",
        text(&out)
    );
    // Without --config, login uses Shoal's own file under HOME.
    let out = shoal_in_home(
        &home,
        &[
            "login",
            "--server",
            &url,
            "--token",
            &token,
            "--certificate-authority",
            ca_arg,
        ],
    )?;
    ensure!(
        out.status.success(),
        "login to the default config failed: {}",
        text(&out)
    );
    ensure!(
        home.join(".config/shoal/config").exists(),
        "login did not write ~/.config/shoal/config"
    );
    let out = shoal_in_home(&home, &["get", "clusters", "-n", "org-acme"])?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("demo"),
        "get with the default config: {}",
        text(&out)
    );
    ensure!(
        !home.join(".kube").exists(),
        "shoal wrote {}",
        home.join(".kube").display()
    );

    // Revoking the token locks the logged-in user out.
    let out = ok(server, &["token", "revoke", &id])?;
    ensure!(out.contains(&id), "token revoke printed: {out}");
    ensure!(
        !ok(server, &["token", "list"])?.contains(&id),
        "the revoked token is still listed"
    );
    let out = shoal_in_home(&home, &["--kubeconfig", config_arg, "cluster", "list"])?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "a revoked token still works: {}",
        text(&out)
    );
    Ok(())
}

#[tokio::test]
async fn the_bootstrap_admin_credential_cannot_be_revoked() -> Result<()> {
    let orgs = Orgs::start().await?;
    let server = &orgs.server;
    // The bootstrap admin credential cannot be revoked: that would lock every replica out.
    let err = fails(server, &["token", "revoke", "admin"])?;
    ensure!(
        err.contains("Forbidden") && err.contains("bootstrap credential"),
        "revoking admin: {err}"
    );
    ok(server, &["get", "namespaces"])?;
    Ok(())
}

#[tokio::test]
async fn crds_prints_one_definition_with_a_schema_per_kind() -> Result<()> {
    let orgs = Orgs::start().await?;
    let server = &orgs.server;
    // crds: eight CustomResourceDefinitions with schemas.
    let crds = ok(server, &["crds"])?;
    let mut names = Vec::new();
    let mut docs = vec![String::new()];
    for line in crds.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    for doc in docs.iter().filter(|d| !d.trim().is_empty()) {
        let crd: Value = serde_yaml::from_str(doc)
            .with_context(|| format!("crds printed invalid YAML:\n{doc}"))?;
        if crd.is_null() {
            continue;
        }
        ensure!(
            crd["apiVersion"] == "apiextensions.k8s.io/v1"
                && crd["kind"] == "CustomResourceDefinition",
            "not a CRD: {crd}"
        );
        ensure!(
            crd["spec"]["group"] == "shoal.io",
            "CRD group: {}",
            crd["spec"]["group"]
        );
        let versions = crd["spec"]["versions"]
            .as_array()
            .context("spec.versions")?;
        ensure!(!versions.is_empty(), "CRD without versions: {crd}");
        for v in versions {
            ensure!(
                v["schema"]["openAPIV3Schema"].is_object(),
                "CRD {} has no openAPIV3Schema",
                crd["metadata"]["name"]
            );
        }
        names.push(
            crd["metadata"]["name"]
                .as_str()
                .context("CRD name")?
                .to_owned(),
        );
    }
    names.sort();
    let mut want: Vec<String> = shoal_api::KINDS
        .iter()
        .filter(|k| k.group == "shoal.io")
        .map(|k| format!("{}.shoal.io", k.plural))
        .collect();
    want.sort();
    ensure!(
        names.len() == 8 && names == want,
        "crds printed {names:?}, want {want:?}"
    );
    Ok(())
}

#[tokio::test]
async fn completion_and_a_closed_output_pipe_cause_no_panic() -> Result<()> {
    let orgs = Orgs::start().await?;
    let server = &orgs.server;
    // completion.
    let script = ok(server, &["completion", "bash"])?;
    ensure!(
        script.contains("_shoal()") && script.contains("complete -F _shoal"),
        "completion bash: {}",
        &script[..script.len().min(300)]
    );
    ensure!(
        script.contains("cluster") && script.contains("--kubeconfig"),
        "completion lacks subcommands or flags"
    );

    // A reader that goes away (`shoal crds | head -1`) ends the output without a panic.
    for args in [
        &["crds"][..],
        &["completion", "bash"],
        &["org", "list"],
        &["cluster", "list"],
    ] {
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let out = Command::new(shoal_bin()?)
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() != Some(101) && !stderr.contains("panicked"),
            "shoal {} into a closed pipe: {}\n{stderr}",
            args.join(" "),
            out.status
        );
    }
    Ok(())
}

#[tokio::test]
async fn errors_print_the_servers_status_and_exit_non_zero() -> Result<()> {
    let orgs = Orgs::start().await?;
    let server = &orgs.server;
    let admin = &orgs.admin;
    // Errors print the server's Status and exit non-zero.
    let stderr = fails(server, &["cluster", "get", "nope", "--org", "acme"])?;
    ensure!(
        stderr.contains("nope")
            && (stderr.contains("NotFound") || stderr.contains("does not exist")),
        "cluster get nope printed: {stderr}"
    );
    let stderr = fails(
        server,
        &[
            "cluster",
            "create",
            "--name",
            "bad",
            "--org",
            "acme",
            "--release",
            "test-1",
            "--control-plane",
            "2",
        ],
    )?;
    ensure!(
        stderr.contains("Invalid") && stderr.contains("spec.controlPlane.replicas"),
        "invalid replicas printed: {stderr}"
    );
    for path in ["clusters/bad", "nodepools/bad-default"] {
        let (code, _) = get(admin, &format!("{GV}/namespaces/org-acme/{path}")).await?;
        ensure!(code == 404, "a failed cluster create left {path} behind");
    }
    let stderr = fails(server, &["get", "widgets"])?;
    ensure!(
        stderr.contains("widgets"),
        "an unknown type printed: {stderr}"
    );
    let out = Command::new(shoal_bin()?)
        .args(["--kubeconfig", "/nonexistent/kubeconfig", "org", "list"])
        .output()?;
    ensure!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("/nonexistent/kubeconfig"),
        "a missing kubeconfig: {}",
        text(&out)
    );
    Ok(())
}

#[tokio::test]
async fn cluster_delete_wait_removes_the_cluster_and_its_pools_only() -> Result<()> {
    let orgs = Orgs::start().await?;
    let server = &orgs.server;
    let admin = &orgs.admin;
    // cluster delete removes the cluster and its node pools; with --wait it returns
    // once the cluster controller has cleaned up and the Cluster is gone.
    let out = ok(
        server,
        &["cluster", "delete", "demo", "--org", "acme", "--wait"],
    )?;
    ensure!(
        out.contains("cluster.shoal.io/demo deleted")
            && out.contains("nodepool.shoal.io/demo-default deleted"),
        "cluster delete printed: {out}"
    );
    for path in ["clusters/demo", "nodepools/demo-default"] {
        let (code, _) = get(admin, &format!("{GV}/namespaces/org-acme/{path}")).await?;
        ensure!(
            code == 404,
            "{path} still exists after cluster delete ({code})"
        );
    }
    let (code, _) = get(admin, &format!("{GV}/namespaces/org-beta/clusters/other")).await?;
    ensure!(
        code == 200,
        "cluster delete in acme removed beta's cluster ({code})"
    );
    Ok(())
}

/// `cluster create` without `--release` takes the newest active Release by
/// version (not by name, not a deprecated one) and says which; with no active
/// Release it refuses and says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_create_defaults_to_the_newest_active_release() -> Result<()> {
    // No controllers: no seeded Releases, only the test's.
    let server = ServerProc::start_with(&["--controllers=false"])?;
    let client = server.client().await?;
    ok(&server, &["org", "create", "rel"])?;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while namespaces.get_opt("org-rel").await?.is_none() {
        ensure!(
            std::time::Instant::now() < deadline,
            "namespace org-rel never appeared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let releases: kube::Api<shoal_api::Release> = kube::Api::all(client.clone());
    let release = |name: &str, version: &str, state: &str| {
        serde_json::json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Release", "metadata": {"name": name},
            "spec": {"kubernetesVersion": version, "state": state,
                     "image": {"kernel": "/boot/vmlinuz", "initrd": "/boot/initrd.img"}}
        })
    };
    let create_cluster = ["cluster", "create", "--name", "d1", "--org", "rel"];

    shoal_e2e::fleet::create(&releases, release("only-old", "1.31.2", "deprecated")).await?;
    let err = fails(&server, &create_cluster)?;
    ensure!(err.contains("no release is active"), "{err}");
    ensure!(err.contains("--release"), "{err}");

    for (name, version, state) in [
        ("a-1-31-9", "1.31.9", "active"),
        ("z-1-31-10", "1.31.10", "active"),
        ("newest-deprecated", "1.40.0", "deprecated"),
    ] {
        shoal_e2e::fleet::create(&releases, release(name, version, state)).await?;
    }
    let out = ok(&server, &create_cluster)?;
    ensure!(
        out.contains("release z-1-31-10 (Kubernetes 1.31.10) taken"),
        "{out}"
    );
    let clusters: kube::Api<shoal_api::Cluster> = kube::Api::namespaced(client, "org-rel");
    assert_eq!(clusters.get("d1").await?.spec.release, "z-1-31-10");
    // --release still wins.
    ok(
        &server,
        &[
            "cluster",
            "create",
            "--name",
            "d2",
            "--org",
            "rel",
            "--release",
            "a-1-31-9",
        ],
    )?;
    assert_eq!(clusters.get("d2").await?.spec.release, "a-1-31-9");
    Ok(())
}
