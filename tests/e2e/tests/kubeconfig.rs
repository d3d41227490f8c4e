//! `shoal kubeconfig` against a real server with its controllers: the key is made
//! by the CLI, the KeyPair's CSR is signed by the cluster's CA, and the kubeconfig
//! is merged into the user's file (or written as a new one) so that Debian's
//! kubectl 1.20 reads it: the old contexts intact, the client certificate chained
//! to the cluster CA with the requester's CN and the groups as O entries, the
//! gateway address with `tls-server-name` (checked with a real TLS handshake that
//! requires the SNI name and the client certificate). Bad input leaves files
//! byte-identical. No VM is needed: a cluster gets its PKI before any host runs it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};
use shoal_api::{Cluster, KeyPair};
use shoal_e2e::fixtures::ClusterArgs;
use shoal_e2e::{free_port, kubectl_bin, shoal_bin, ServerProc};

const ORG: &str = "kc";
const CLUSTER: &str = "web";
const CONTEXT: &str = "shoal-kc-web";
const API_HOST: &str = "api.web.kc.shoal.local";
/// What `$USER` is for the CLI, so the default CN prefix is known.
const LOCAL_USER: &str = "e2e-laptop";

/// A kubeconfig as a user has it: two contexts, fields kubectl knows and fields
/// it does not, and a top-level key of someone else's tool.
const EXISTING: &str = r#"apiVersion: v1
kind: Config
preferences: {}
clusters:
- name: dev
  cluster:
    server: https://dev.example.com:6443
    insecure-skip-tls-verify: true
- name: prod
  cluster:
    server: https://prod.example.com:6443
    certificate-authority-data: bm90IGEgcmVhbCBDQQo=
users:
- name: dev-admin
  user:
    token: dev-token
- name: prod-sso
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: sso-login
      args: [--profile, prod]
      env:
      - name: SSO_VERBOSE
        value: "on"
contexts:
- name: dev
  context: {cluster: dev, user: dev-admin, namespace: team-a}
- name: prod
  context: {cluster: prod, user: prod-sso}
current-context: prod
x-team-notes:
  owner: platform
  rotated: "2024-05-01"
"#;

fn text(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A server with controllers, organization `kc` and cluster `web` (one
/// control-plane machine, no workers, no hosts: it stays Pending with its PKI).
fn server_with_cluster() -> Result<ServerProc> {
    let images = shoal_e2e::workspace_root()
        .join("images/out")
        .display()
        .to_string();
    let server = ServerProc::start_with(&["--test-image-dir", &images])?;
    for args in [
        vec!["org", "create", ORG],
        ClusterArgs::new(CLUSTER, ORG).args().to_vec(),
    ] {
        let out = server.shoal(&args)?;
        ensure!(out.status.success(), "shoal {args:?}: {}", text(&out));
    }
    Ok(server)
}

/// Runs the CLI with the admin credential for the management API, `KUBECONFIG`
/// pointing at the user's kubeconfig and `$USER` set to [`LOCAL_USER`].
fn shoal(server: &ServerProc, user_kubeconfig: &Path, args: &[&str]) -> Result<Output> {
    Ok(Command::new(shoal_bin()?)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .env("KUBECONFIG", user_kubeconfig)
        .env("USER", LOCAL_USER)
        .env_remove("SHOAL_GATEWAY_ADDRESS")
        .args(args)
        .output()?)
}

fn shoal_ok(server: &ServerProc, user_kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = shoal(server, user_kubeconfig, args)?;
    ensure!(
        out.status.success(),
        "shoal {} failed: {}",
        args.join(" "),
        text(&out)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Runs Debian's kubectl on a kubeconfig; it must succeed. Returns stdout.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(kubectl_bin()?)
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        text(&out)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn context_names(kubeconfig: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = kubectl(kubeconfig, &["config", "get-contexts", "-o", "name"])?
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    Ok(names)
}

/// The file parsed as YAML.
fn yaml(path: &Path) -> Result<Value> {
    Ok(serde_yaml::from_str(&std::fs::read_to_string(path)?)?)
}

/// The entry named `name` in one of a kubeconfig's lists.
fn entry<'a>(doc: &'a Value, section: &str, name: &str) -> Result<&'a Value> {
    doc[section]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["name"] == name))
        .with_context(|| format!("no {section} entry {name:?} in {doc}"))
}

fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

/// Decodes base64 with coreutils' `base64 -d`.
fn unbase64(data: &str, out: &Path) -> Result<()> {
    let encoded = out.with_extension("b64");
    std::fs::write(&encoded, data)?;
    let decoded = Command::new("base64").arg("-d").arg(&encoded).output()?;
    ensure!(decoded.status.success(), "base64 -d: {}", text(&decoded));
    std::fs::write(out, decoded.stdout)?;
    Ok(())
}

fn openssl(args: &[&str], files: &[&Path]) -> Result<String> {
    let out = Command::new("openssl")
        .args(args)
        .args(files)
        .output()
        .context("openssl must be installed (scripts/setup.sh)")?;
    ensure!(out.status.success(), "openssl {args:?}: {}", text(&out));
    Ok(String::from_utf8(out.stdout)?)
}

/// The user the server stamped on the cluster's KeyPairs (the admin's name).
async fn requester(keypairs: &Api<KeyPair>) -> Result<String> {
    let list = keypairs.list(&Default::default()).await?;
    let kp = list.items.first().context("a KeyPair exists")?;
    kp.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("shoal.io/requested-by"))
        .cloned()
        .context("the server stamps shoal.io/requested-by")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_create_merges_writes_and_lists() -> Result<()> {
    let server = server_with_cluster()?;
    let client = server.client().await?;
    let ns = format!("org-{ORG}");
    let keypairs: Api<KeyPair> = Api::namespaced(client.clone(), &ns);
    let tmp = tempfile::tempdir()?;
    let kube_dir = tmp.path().join("home/.kube");
    std::fs::create_dir_all(&kube_dir)?;
    let config = kube_dir.join("config");
    std::fs::write(&config, EXISTING)?;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644))?;
    let before = yaml(&config)?;

    // Merge into $KUBECONFIG, with the CN prefix from $USER.
    let stdout = shoal_ok(
        &server,
        &config,
        &[
            "kubeconfig",
            "create",
            "--cluster",
            CLUSTER,
            "--org",
            ORG,
            "--groups",
            "dev,ops",
            "--ttl",
            "2h",
            "--description",
            "laptop",
        ],
    )?;
    let user = requester(&keypairs).await?;
    let cn = format!("{user}:{LOCAL_USER}");
    ensure!(stdout.contains(CONTEXT), "{stdout}");
    ensure!(stdout.contains(&cn), "{stdout}");
    ensure!(stdout.contains("dev, ops"), "{stdout}");

    // kubectl sees three contexts, the current one unchanged.
    assert_eq!(context_names(&config)?, ["dev", "prod", CONTEXT]);
    assert_eq!(
        kubectl(&config, &["config", "current-context"])?.trim(),
        "prod"
    );
    assert_eq!(
        kubectl(
            &config,
            &[
                "config",
                "view",
                "-o",
                "jsonpath={.contexts[0].context.namespace}"
            ]
        )?,
        "team-a"
    );
    // The old entries and the unknown key are exactly as they were.
    let after = yaml(&config)?;
    for (section, names) in [
        ("clusters", ["dev", "prod"]),
        ("users", ["dev-admin", "prod-sso"]),
        ("contexts", ["dev", "prod"]),
    ] {
        for name in names {
            assert_eq!(
                entry(&after, section, name)?,
                entry(&before, section, name)?,
                "{section}/{name}"
            );
        }
    }
    assert_eq!(after["x-team-notes"], before["x-team-notes"]);
    assert_eq!(after["preferences"], before["preferences"]);
    assert_eq!(mode(&config)?, 0o600);
    let cluster_entry = &entry(&after, "clusters", CONTEXT)?["cluster"];
    assert_eq!(
        cluster_entry["server"],
        format!("https://{API_HOST}:443"),
        "without a gateway address the server is the cluster's apiEndpoint"
    );
    assert!(cluster_entry.get("tls-server-name").is_none());

    // The certificate chains to the CA in the cluster's status, with CN
    // <requester>:<prefix>, O=dev and O=ops, for about 2 hours, for the key in the file.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &ns);
    let status = clusters.get(CLUSTER).await?.status.context("status")?;
    let ca_pem = status.ca_certificate.context("status.caCertificate")?;
    let ca = tmp.path().join("ca.crt");
    std::fs::write(&ca, &ca_pem)?;
    let ca_in_file = tmp.path().join("ca-in-file.crt");
    unbase64(
        cluster_entry["certificate-authority-data"]
            .as_str()
            .context("certificate-authority-data")?,
        &ca_in_file,
    )?;
    assert_eq!(std::fs::read_to_string(&ca_in_file)?, ca_pem);
    let user_entry = &entry(&after, "users", CONTEXT)?["user"];
    let cert = tmp.path().join("client.crt");
    let key = tmp.path().join("client.key");
    unbase64(
        user_entry["client-certificate-data"]
            .as_str()
            .context("client-certificate-data")?,
        &cert,
    )?;
    unbase64(
        user_entry["client-key-data"]
            .as_str()
            .context("client-key-data")?,
        &key,
    )?;
    openssl(
        &["verify", "-purpose", "sslclient", "-CAfile"],
        &[&ca, &cert],
    )?;
    let subject = openssl(
        &["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"],
        &[&cert],
    )?;
    ensure!(subject.contains(&format!("CN={cn}")), "{subject}");
    ensure!(
        subject.contains("O=dev") && subject.contains("O=ops"),
        "{subject}"
    );
    let cert_pub = openssl(&["x509", "-noout", "-pubkey", "-in"], &[&cert])?;
    let key_pub = openssl(&["pkey", "-pubout", "-in"], &[&key])?;
    assert_eq!(
        cert_pub, key_pub,
        "the certificate is for the key in the file"
    );
    let kps = keypairs.list(&Default::default()).await?.items;
    assert_eq!(kps.len(), 1);
    let kp = &kps[0];
    ensure!(
        !serde_json::to_string(kp)?.contains("PRIVATE KEY"),
        "the private key never reaches the server"
    );
    assert_eq!(kp.spec.ttl, "2h");
    let not_after = chrono::DateTime::parse_from_rfc3339(
        kp.status
            .as_ref()
            .and_then(|s| s.not_after.as_deref())
            .context("notAfter")?,
    )?;
    let left = not_after.signed_duration_since(chrono::Utc::now());
    ensure!(
        left <= chrono::Duration::hours(2) && left > chrono::Duration::minutes(115),
        "{left:?}"
    );

    // --output: a self-contained file with its context current; $KUBECONFIG untouched.
    let merged = std::fs::read(&config)?;
    let own = tmp.path().join("out/f.yaml");
    shoal_ok(
        &server,
        &config,
        &[
            "kubeconfig",
            "create",
            "--cluster",
            CLUSTER,
            "--org",
            ORG,
            "--cn-prefix",
            "ci",
            "--output",
            own.to_str().context("utf-8 path")?,
        ],
    )?;
    assert_eq!(
        std::fs::read(&config)?,
        merged,
        "--output leaves KUBECONFIG alone"
    );
    assert_eq!(mode(&own)?, 0o600);
    assert_eq!(context_names(&own)?, [CONTEXT]);
    assert_eq!(
        kubectl(&own, &["config", "current-context"])?.trim(),
        CONTEXT
    );
    let minified = kubectl(&own, &["config", "view", "--minify", "--raw", "-o", "json"])?;
    let minified: Value = serde_json::from_str(&minified)?;
    for field in ["certificate-authority-data", "server"] {
        ensure!(
            minified["clusters"][0]["cluster"][field].is_string(),
            "{field}: {minified}"
        );
    }
    for field in ["client-certificate-data", "client-key-data"] {
        ensure!(
            minified["users"][0]["user"][field].is_string(),
            "{field}: {minified}"
        );
    }

    // Through the gateway: server is the gateway, tls-server-name the API's name;
    // merging again replaces this cluster's entries and switches context.
    let port = free_port()?;
    let gateway = format!("127.0.0.1:{port}");
    shoal_ok(
        &server,
        &config,
        &[
            "kubeconfig",
            "create",
            "--cluster",
            CLUSTER,
            "--org",
            ORG,
            "--cn-prefix",
            "gw",
            "--groups",
            "dev",
            "--gateway-address",
            &gateway,
            "--switch-context",
        ],
    )?;
    assert_eq!(context_names(&config)?, ["dev", "prod", CONTEXT]);
    assert_eq!(
        kubectl(&config, &["config", "current-context"])?.trim(),
        CONTEXT
    );
    let jsonpath = |field: &str| {
        kubectl(
            &config,
            &[
                "config",
                "view",
                "--minify",
                "-o",
                &format!("jsonpath={{.clusters[0].cluster.{field}}}"),
            ],
        )
    };
    assert_eq!(jsonpath("server")?, format!("https://{gateway}"));
    assert_eq!(jsonpath("tls-server-name")?, API_HOST);
    let after_gw = yaml(&config)?;
    assert_eq!(after_gw["x-team-notes"], before["x-team-notes"]);
    assert_eq!(
        entry(&after_gw, "contexts", "dev")?,
        entry(&before, "contexts", "dev")?
    );

    // kubectl really connects that way: a TLS server on the gateway address with
    // the cluster's API certificate answers only to SNI api.web.kc.shoal.local and
    // only to a client certificate from the cluster CA.
    tls_handshake_through_gateway(&client, &config, port, tmp.path()).await?;

    // `kubeconfig list` shows all three, with CN, groups and description.
    let table = shoal_ok(
        &server,
        &config,
        &["kubeconfig", "list", "--cluster", CLUSTER, "--org", ORG],
    )?;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "CN", "GROUPS", "EXPIRES", "DESCRIPTION"],
        "{table}"
    );
    assert_eq!(rows.len(), 4, "{table}");
    let laptop = rows
        .iter()
        .find(|r| r.get(1) == Some(&cn.as_str()))
        .with_context(|| format!("no row with CN {cn}: {table}"))?;
    assert_eq!(laptop[2], "dev,ops", "{table}");
    assert_eq!(laptop.get(4), Some(&"laptop"), "{table}");
    ensure!(
        laptop[0].starts_with("web-e2e-laptop-"),
        "named after cluster and CN: {table}"
    );
    ensure!(
        rows.iter()
            .any(|r| r[1] == format!("{user}:ci") && r[2] == "-"),
        "{table}"
    );
    let listed: Value = serde_json::from_str(&shoal_ok(
        &server,
        &config,
        &[
            "kubeconfig",
            "list",
            "--cluster",
            CLUSTER,
            "--org",
            ORG,
            "-o",
            "json",
        ],
    )?)?;
    let items = listed["items"].as_array().context("items")?;
    assert_eq!(items.len(), 3, "{listed}");
    ensure!(
        items.iter().any(|i| i["spec"]["description"] == "laptop"),
        "{listed}"
    );
    Ok(())
}

/// Runs kubectl's one request through the current context; true if it got a
/// response.
fn kubectl_raw(config: &Path) -> Result<(bool, String)> {
    let out = Command::new(kubectl_bin()?)
        .env("KUBECONFIG", config)
        .args(["get", "--raw", "/", "--request-timeout", "10s"])
        .output()?;
    Ok((out.status.success(), text(&out)))
}

/// Stands in for the gateway: `openssl s_server` on 127.0.0.1:`port` with a
/// certificate from the cluster CA for `API_HOST` only (no IP address), refusing
/// any other SNI name and any client without a certificate from the cluster CA.
/// kubectl gets through only if it checks the certificate for (and sends)
/// tls-server-name and presents the client certificate; the same kubeconfig
/// without tls-server-name is refused, so the check can fail.
async fn tls_handshake_through_gateway(
    client: &kube::Client,
    config: &Path,
    port: u16,
    dir: &Path,
) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "shoal-system");
    let pki = secrets
        .get(&format!("org-{ORG}.{CLUSTER}.pki"))
        .await?
        .data
        .unwrap_or_default();
    let pem = |name: &str| -> Result<String> {
        Ok(String::from_utf8(
            pki.get(name).with_context(|| name.to_owned())?.0.clone(),
        )?)
    };
    let ca = shoal_pki::CertificateAuthority::from_pem(&pem("ca.crt")?, &pem("ca.key")?)?;
    let serving = ca.issue_server(
        API_HOST,
        &[API_HOST.to_owned()],
        &[],
        Duration::from_secs(600),
    )?;
    let (cert, key, ca_file) = (
        dir.join("gw.crt"),
        dir.join("gw.key"),
        dir.join("gw-ca.crt"),
    );
    std::fs::write(&cert, &serving.cert_pem)?;
    std::fs::write(&key, &serving.key_pem)?;
    std::fs::write(&ca_file, ca.cert_pem())?;
    // The control: the same kubeconfig without tls-server-name.
    let mut without: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(config)?)?;
    for c in without["clusters"].as_sequence_mut().context("clusters")? {
        if c["name"] == CONTEXT {
            c["cluster"]
                .as_mapping_mut()
                .context("cluster")?
                .remove("tls-server-name");
        }
    }
    // As JSON: serde_yaml would write the exec env value "on" bare, which
    // kubectl's YAML 1.1 reads as a boolean (what `shoal kubeconfig` avoids).
    let without_file = dir.join("without-sni.json");
    std::fs::write(&without_file, serde_json::to_string(&without)?)?;

    let mut s_server = Command::new("openssl")
        .args(["s_server", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .arg("-cert2")
        .arg(&cert)
        .arg("-key2")
        .arg(&key)
        .args(["-servername", API_HOST, "-servername_fatal"])
        .arg("-CAfile")
        .arg(&ca_file)
        .args(["-Verify", "1", "-verify_return_error", "-www"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("openssl must be installed (scripts/setup.sh)")?;
    let result = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                bail!("openssl s_server did not listen on {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (ok, out) = kubectl_raw(&without_file)?;
        ensure!(
            !ok && out.contains("x509") && out.contains("127.0.0.1"),
            "without tls-server-name kubectl must not trust the gateway: {out}"
        );
        let (ok, out) = kubectl_raw(config)?;
        ensure!(ok, "kubectl through the gateway address: {out}");
        ensure!(out.contains("Client certificate"), "{out}");
        ensure!(out.contains("Verify return code: 0 (ok)"), "{out}");
        Ok(())
    }
    .await;
    let _ = s_server.kill();
    let _ = s_server.wait();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_bad_input_leaves_files_untouched() -> Result<()> {
    let server = server_with_cluster()?;
    let client = server.client().await?;
    let keypairs: Api<KeyPair> = Api::namespaced(client.clone(), &format!("org-{ORG}"));
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("config");
    std::fs::write(&config, EXISTING)?;

    // An unknown cluster: a message naming it, nothing written, no KeyPair.
    let out = shoal(
        &server,
        &config,
        &["kubeconfig", "create", "--cluster", "nope", "--org", ORG],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    ensure!(stderr.contains("kc/nope"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&config)?, EXISTING);
    assert!(keypairs.list(&Default::default()).await?.items.is_empty());

    // Corrupt kubeconfigs: an error naming the file; not a byte changes, no KeyPair.
    for corrupt in [
        "apiVersion: v1\nclusters: [\n  - name: x\n    oops: {\n",
        "apiVersion: v1\ncontexts:\n  dev: {cluster: dev}\n",
        "\u{0}\u{1}binary\n",
    ] {
        std::fs::write(&config, corrupt)?;
        let out = shoal(
            &server,
            &config,
            &["kubeconfig", "create", "--cluster", CLUSTER, "--org", ORG],
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(13), "{corrupt:?}: {}", text(&out));
        ensure!(
            stderr.contains(&config.display().to_string()) && stderr.contains("untouched"),
            "{stderr}"
        );
        assert_eq!(std::fs::read(&config)?, corrupt.as_bytes(), "{corrupt:?}");
    }
    assert!(keypairs.list(&Default::default()).await?.items.is_empty());

    // Local mistakes are caught before anything is sent.
    std::fs::write(&config, EXISTING)?;
    for (flag, value) in [
        ("--ttl", "forever"),
        ("--gateway-address", "no-port"),
        ("--groups", "dev,,ops"),
        ("--timeout", "soon"),
    ] {
        let out = shoal(
            &server,
            &config,
            &[
                "kubeconfig",
                "create",
                "--cluster",
                CLUSTER,
                "--org",
                ORG,
                flag,
                value,
            ],
        )?;
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {}", text(&out));
        ensure!(
            String::from_utf8_lossy(&out.stderr).contains(flag),
            "{flag}: {}",
            text(&out)
        );
    }
    assert_eq!(std::fs::read_to_string(&config)?, EXISTING);
    assert!(keypairs.list(&Default::default()).await?.items.is_empty());

    // A kubeconfig that cannot be written once the certificate is signed: the
    // KeyPair, useless without the key that is now gone, is deleted.
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, "not a directory")?;
    let unwritable = blocker.join("f.yaml");
    let out = shoal(
        &server,
        &config,
        &[
            "kubeconfig",
            "create",
            "--cluster",
            CLUSTER,
            "--org",
            ORG,
            "--output",
            unwritable.to_str().context("utf-8 path")?,
        ],
    )?;
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("deleted"),
        "{}",
        text(&out)
    );
    assert!(keypairs.list(&Default::default()).await?.items.is_empty());
    Ok(())
}

/// On the all-in-one install (the server runs the gateway) `kubeconfig create`
/// needs no flag: the server publishes its gateway listener in the Cluster's
/// `status.gatewayAddress`, and since `api.<cluster>.<org>.shoal.local` has no DNS
/// record the kubeconfig connects there with the API's name as tls-server-name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_create_needs_no_flags_with_the_embedded_gateway() -> Result<()> {
    let images = shoal_e2e::workspace_root()
        .join("images/out")
        .display()
        .to_string();
    let gateway = format!("127.0.0.1:{}", free_port()?);
    let http = format!("127.0.0.1:{}", free_port()?);
    let server = ServerProc::start_with(&[
        "--gateway-listen",
        &gateway,
        "--gateway-http-listen",
        &http,
        "--test-image-dir",
        &images,
    ])?;
    for args in [
        vec!["org", "create", ORG],
        ClusterArgs::new(CLUSTER, ORG).args().to_vec(),
    ] {
        let out = server.shoal(&args)?;
        ensure!(out.status.success(), "shoal {args:?}: {}", text(&out));
    }
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("issued.yaml");
    let out = shoal_ok(
        &server,
        &tmp.path().join("unused"),
        &[
            "kubeconfig",
            "create",
            "--cluster",
            CLUSTER,
            "--org",
            ORG,
            "--output",
            &config.display().to_string(),
        ],
    )?;
    ensure!(
        out.contains(&format!("https://{gateway} (tls-server-name {API_HOST})")),
        "{out}"
    );
    let doc = yaml(&config)?;
    let cluster_entry = &entry(&doc, "clusters", CONTEXT)?["cluster"];
    assert_eq!(cluster_entry["server"], format!("https://{gateway}"));
    assert_eq!(cluster_entry["tls-server-name"], API_HOST);
    let clusters: Api<Cluster> = Api::namespaced(server.client().await?, &format!("org-{ORG}"));
    let status = clusters.get(CLUSTER).await?.status.context("status")?;
    assert_eq!(status.gateway_address.as_deref(), Some(gateway.as_str()));
    Ok(())
}

/// Without a keypair controller nothing signs: the CLI gives up after
/// `--timeout` with its own exit code, deletes the KeyPair whose key it threw
/// away, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_create_times_out_cleanly() -> Result<()> {
    let server = ServerProc::start_with(&["--controllers=false"])?;
    let client = server.client().await?;
    shoal_e2e::ensure_release(&client, "test").await?;
    for args in [
        vec!["org", "create", ORG],
        vec![
            "cluster",
            "create",
            "--name",
            CLUSTER,
            "--org",
            ORG,
            "--release",
            "test",
        ],
    ] {
        let out = server.shoal(&args)?;
        ensure!(out.status.success(), "shoal {args:?}: {}", text(&out));
    }
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("config");
    std::fs::write(&config, EXISTING)?;
    let create = [
        "kubeconfig",
        "create",
        "--cluster",
        CLUSTER,
        "--org",
        ORG,
        "--timeout",
        "2s",
    ];

    // No controller gave the cluster its CA yet.
    let out = shoal(&server, &config, &create)?;
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("caCertificate"),
        "{}",
        text(&out)
    );

    // With a CA (set by hand here), the KeyPair is created but never signed.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &format!("org-{ORG}"));
    let ca = shoal_pki::CertificateAuthority::generate("stand-in")?;
    clusters
        .patch_status(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "apiEndpoint": format!("https://{API_HOST}:443"),
                "caCertificate": ca.cert_pem(),
            }})),
        )
        .await?;
    let out = shoal(&server, &config, &create)?;
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        stderr.contains("to be signed") && stderr.contains("deleted"),
        "{stderr}"
    );
    let keypairs: Api<KeyPair> = Api::namespaced(client.clone(), &format!("org-{ORG}"));
    assert!(keypairs.list(&Default::default()).await?.items.is_empty());
    assert_eq!(std::fs::read_to_string(&config)?, EXISTING);
    Ok(())
}
