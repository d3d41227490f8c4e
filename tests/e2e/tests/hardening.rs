//! Issue 11's API hardening against the real binary: a member cannot rewrite who a
//! KeyPair is for; `kubectl explain` reads the OpenAPI document; `/openapi/v3`
//! serves its documents; schemathesis finds no 5xx in what the document
//! describes; and a seeded fuzz of the request pipeline (bodies, the four patch
//! types, content types, queries and paths against every kind) never gets a 5xx
//! or a dropped connection.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use kube::Client;
use serde_json::{json, Value};
use shoal_e2e::{client_for, kubeconfig_with_token, raw, token_of, ServerProc};

const GV: &str = "/apis/shoal.io/v1alpha1";
const KEYPAIRS: &str = "/apis/shoal.io/v1alpha1/namespaces/org-acme/keypairs";
const REQUESTED_BY: &str = "shoal.io/requested-by";

/// An API-only server with organization `acme` and Release `test-1`.
async fn setup() -> Result<(ServerProc, Client)> {
    let server = ServerProc::start_with(&["--controllers=false"])?;
    let client = server.client().await?;
    let (code, body) = raw(
        &client,
        "POST",
        &format!("{GV}/organizations"),
        "application/json",
        serde_json::to_vec(
            &json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Organization",
                                   "metadata": {"name": "acme"}, "spec": {}}),
        )?,
    )
    .await?;
    ensure!(code == 201, "creating org acme: {code} {body}");
    shoal_e2e::ensure_release(&client, "test-1").await?;
    Ok((server, client))
}

/// A client with a new token of `role` in organization acme.
async fn member_client(server: &ServerProc, dir: &Path, role: &str) -> Result<Client> {
    let out = server.shoal(&["token", "create", "--org", "acme", "--role", role])?;
    ensure!(out.status.success(), "token create: {out:?}");
    let text = String::from_utf8(out.stdout)?;
    let token = text
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with("shoal."))
        .context("no token printed")?;
    let path = dir.join(format!("kubeconfig-{role}"));
    kubeconfig_with_token(&server.kubeconfig(), token, &path)?;
    client_for(&path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_rewrite_who_a_keypair_is_for() -> Result<()> {
    let (server, _admin) = setup().await?;
    let tmp = tempfile::tempdir()?;
    let member = member_client(&server, tmp.path(), "member").await?;
    let (csr, _key) = shoal_pki::generate_csr("laptop", &Vec::<String>::new())?;
    let (code, created) = raw(
        &member,
        "POST",
        KEYPAIRS,
        "application/json",
        serde_json::to_vec(&json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "KeyPair",
            "metadata": {"name": "kp", "annotations": {REQUESTED_BY: "mallory"}},
            "spec": {"cluster": "c", "csr": csr},
        }))?,
    )
    .await?;
    ensure!(code == 201, "the member's create: {code} {created}");
    let stamped = created["metadata"]["annotations"][REQUESTED_BY]
        .as_str()
        .context("no requested-by stamped")?
        .to_owned();
    ensure!(
        stamped != "mallory",
        "the client's requester was kept: {created}"
    );

    let item = format!("{KEYPAIRS}/kp");
    let mut put = created.clone();
    put["metadata"]["annotations"][REQUESTED_BY] = json!("mallory");
    put["metadata"]
        .as_object_mut()
        .context("metadata")?
        .remove("resourceVersion");
    let attempts: Vec<(&str, &str, Vec<u8>)> = vec![
        ("PUT", "application/json", serde_json::to_vec(&put)?),
        (
            "PATCH",
            "application/merge-patch+json",
            serde_json::to_vec(&json!({"metadata": {"annotations": {REQUESTED_BY: "mallory"}}}))?,
        ),
        (
            "PATCH",
            "application/merge-patch+json",
            serde_json::to_vec(&json!({"metadata": {"annotations": {REQUESTED_BY: null}}}))?,
        ),
        (
            "PATCH",
            "application/merge-patch+json",
            serde_json::to_vec(&json!({"metadata": {"annotations": null}}))?,
        ),
        (
            "PATCH",
            "application/json-patch+json",
            serde_json::to_vec(&json!([{"op": "replace",
                "path": "/metadata/annotations/shoal.io~1requested-by", "value": "mallory"}]))?,
        ),
        (
            "PATCH",
            "application/json-patch+json",
            serde_json::to_vec(&json!([{"op": "remove", "path": "/metadata/annotations"}]))?,
        ),
    ];
    for (method, ct, body) in attempts {
        let what = format!("{method} {ct} {}", String::from_utf8_lossy(&body));
        let (code, answer) = raw(&member, method, &item, ct, body).await?;
        ensure!(code < 500, "{what}: {code} {answer}");
        let (_, now) = raw(&member, "GET", &item, "application/json", vec![]).await?;
        ensure!(
            now["metadata"]["annotations"][REQUESTED_BY] == stamped.as_str(),
            "{what} changed the requester: {now}"
        );
    }
    // The attempts are in the audit log, which only its owner may read.
    let audit = server.data_dir.join("audit.log");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&audit)?.permissions());
    ensure!(
        mode & 0o777 == 0o600,
        "audit.log has mode {:o}",
        mode & 0o777
    );
    ensure!(
        std::fs::read_to_string(&audit)?.contains("\"verb\":\"patch\""),
        "the patches are not in the audit log"
    );
    Ok(())
}

/// The kubectl of the tests (Debian's, 1.20) reads the protobuf document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_reads_the_openapi_document() -> Result<()> {
    let (server, client) = setup().await?;
    let out = server.kubectl_ok(&["explain", "clusters.spec"])?;
    for want in [
        "KIND:     Cluster",
        "release",
        "controlPlane",
        "What users set on a Cluster",
    ] {
        ensure!(
            out.contains(want),
            "explain clusters.spec lacks {want:?}:\n{out}"
        );
    }
    let out = server.kubectl_ok(&["explain", "keypairs.spec.ttl"])?;
    ensure!(out.contains("FIELD:    ttl"), "{out}");
    let out = server.kubectl_ok(&["explain", "clusters.metadata.labels"])?;
    ensure!(out.contains("labels"), "{out}");

    // The JSON v2 document: a path per resource and verb, with the kind.
    let (code, v2) = raw(&client, "GET", "/openapi/v2", "application/json", vec![]).await?;
    ensure!(code == 200, "/openapi/v2: {code}");
    let op =
        &v2["paths"]["/apis/shoal.io/v1alpha1/namespaces/{namespace}/clusters/{name}"]["patch"];
    ensure!(
        op["x-kubernetes-group-version-kind"]["kind"] == "Cluster"
            && op["x-kubernetes-action"] == "patch",
        "the Cluster patch operation: {op}"
    );
    // v3: discovery, then the document it names.
    let (code, disc) = raw(&client, "GET", "/openapi/v3", "application/json", vec![]).await?;
    ensure!(code == 200, "/openapi/v3: {code} {disc}");
    let url = disc["paths"]["apis/shoal.io/v1alpha1"]["serverRelativeURL"]
        .as_str()
        .context("no shoal.io/v1alpha1 in /openapi/v3")?;
    let (code, doc) = raw(&client, "GET", url, "application/json", vec![]).await?;
    ensure!(code == 200 && doc["openapi"] == "3.0.0", "{url}: {code}");
    ensure!(
        doc["components"]["schemas"]["io.shoal.v1alpha1.Cluster"]["properties"]["spec"].is_object(),
        "{url} lacks the Cluster schema"
    );
    let (code, _) = raw(
        &client,
        "GET",
        "/openapi/v3/apis/nope/v1",
        "application/json",
        vec![],
    )
    .await?;
    ensure!(code == 404, "an unknown group-version: {code}");
    Ok(())
}

/// A client that sends `Expect: 100-continue` with a body over the limit (curl
/// does for large uploads) gets 413 before sending it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_upload_with_expect_continue_gets_413() -> Result<()> {
    let (server, _client) = setup().await?;
    let tmp = tempfile::tempdir()?;
    let body = tmp.path().join("big.json");
    std::fs::write(
        &body,
        serde_json::to_vec(&json!({"metadata": {"name": "x".repeat(20 << 20)}}))?,
    )?;
    let token = token_of(&server.kubeconfig())?;
    let out = Command::new("curl")
        .args(["-sk", "-o", "-", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args([
            "-H",
            "Content-Type: application/json",
            "-H",
            "Expect: 100-continue",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("{}{GV}/namespaces/org-acme/clusters", server.url()))
        .output()
        .context("curl must be installed (scripts/setup.sh)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (json_part, code) = text.rsplit_once('\n').context("no status line")?;
    ensure!(code == "413", "curl got {code}: {text}");
    let status: Value = serde_json::from_str(json_part)?;
    ensure!(status["reason"] == "RequestEntityTooLarge", "{status}");
    Ok(())
}

/// Installs schemathesis (PyPI) into `~/.cache/shoal/schemathesis` unless it is
/// there already, and returns its `st` command.
fn schemathesis() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let venv = Path::new(&home).join(".cache/shoal/schemathesis");
    let st = venv.join("bin/st");
    if st.exists() {
        return Ok(st);
    }
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("python3 with venv is needed (scripts/setup.sh installs it)")?;
    ensure!(
        status.success(),
        "python3 -m venv {} failed",
        venv.display()
    );
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "schemathesis"])
        .status()?;
    ensure!(status.success(), "pip install schemathesis failed");
    Ok(st)
}

/// schemathesis generates requests for every operation of `/openapi/v2` (watches
/// aside: they are streams, tested elsewhere) and finds no 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error() -> Result<()> {
    let st = tokio::task::spawn_blocking(schemathesis).await??;
    let (server, client) = setup().await?;
    let (code, mut doc) = raw(&client, "GET", "/openapi/v2", "application/json", vec![]).await?;
    ensure!(code == 200, "/openapi/v2: {code}");
    for item in doc["paths"].as_object_mut().context("paths")?.values_mut() {
        if let Some(params) = item
            .get_mut("get")
            .and_then(|op| op.get_mut("parameters"))
            .and_then(Value::as_array_mut)
        {
            params.retain(|p| p["name"] != "watch");
        }
    }
    let tmp = tempfile::tempdir()?;
    let spec = tmp.path().join("openapi.json");
    std::fs::write(&spec, serde_json::to_vec(&doc)?)?;
    let token = token_of(&server.kubeconfig())?;
    let examples = std::env::var("SHOAL_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".into());
    let out = tokio::task::spawn_blocking({
        let url = server.url();
        let spec = spec.clone();
        let dir = tmp.path().to_owned();
        move || {
            Command::new(st)
                .current_dir(&dir)
                .arg("run")
                .arg(&spec)
                .args(["--url", &url, "--tls-verify", "false"])
                .args(["--checks", "not_a_server_error"])
                .args(["--max-examples", &examples])
                .args(["--request-timeout", "20"])
                .arg("-H")
                .arg(format!("Authorization: Bearer {token}"))
                .env("NO_COLOR", "1")
                .output()
        }
    })
    .await??;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        let log = server.log_text();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "schemathesis failed:\n{report}\nthe server's log ends with:\n{}",
            tail.join("\n")
        );
    }
    ensure!(
        report.contains("Test cases:") && report.contains("passed"),
        "schemathesis ran no check:\n{report}"
    );
    // The server is still there and served everything the document lists.
    let (code, _) = raw(&client, "GET", "/version", "application/json", vec![]).await?;
    ensure!(code == 200, "/version after schemathesis: {code}");
    Ok(())
}

/// xorshift64*: a small seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const WORDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "status",
    "name",
    "namespace",
    "uid",
    "annotations",
    "labels",
    "finalizers",
    "generation",
    "resourceVersion",
    "deletionTimestamp",
    "release",
    "controlPlane",
    "replicas",
    "cpu",
    "memory",
    "cluster",
    "csr",
    "data",
    "type",
    "items",
    "",
    "demo",
    "org-acme",
    "x",
];

fn value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth == 0 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(rng.next() as i64),
        3 => json!(rng.next() as f64 / 7.0),
        4 => json!(*rng.pick(WORDS)),
        5 => Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect()),
        _ => Value::Object(
            (0..rng.below(5))
                .map(|_| ((*rng.pick(WORDS)).to_owned(), value(rng, depth - 1)))
                .collect(),
        ),
    }
}

/// A valid-looking object of `kind`, with one random change.
fn near_valid(rng: &mut Rng, kind: &shoal_api::KindInfo, name: &str) -> Value {
    let mut obj = json!({
        "apiVersion": kind.api_version(), "kind": kind.kind,
        "metadata": {"name": name, "labels": {"fuzz": "yes"}},
        "spec": {"release": "test-1", "cluster": "demo",
                 "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
    });
    let mut target = &mut obj;
    for _ in 0..rng.below(3) {
        let key = *rng.pick(&["metadata", "spec", "status", "controlPlane"]);
        if !target[key].is_object() {
            break;
        }
        target = &mut target[key];
    }
    if let Some(map) = target.as_object_mut() {
        map.insert((*rng.pick(WORDS)).to_owned(), value(rng, 3));
    }
    obj
}

fn body(rng: &mut Rng, kind: &shoal_api::KindInfo, name: &str) -> Vec<u8> {
    match rng.below(6) {
        0 => Vec::new(),
        1 => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        2 => serde_json::to_vec(&value(rng, 4)).unwrap_or_default(),
        3 => serde_yaml::to_string(&near_valid(rng, kind, name))
            .unwrap_or_default()
            .into_bytes(),
        4 => serde_json::to_vec(&json!([
            {"op": *rng.pick(&["add", "remove", "replace", "move", "copy", "test", "nope"]),
             "path": *rng.pick(&["", "/", "/metadata", "/spec", "/status", "/metadata/name", "/kind", "/spec/0"]),
             "from": "/metadata", "value": value(rng, 2)}
        ]))
        .unwrap_or_default(),
        _ => serde_json::to_vec(&near_valid(rng, kind, name)).unwrap_or_default(),
    }
}

/// Arbitrary requests against every kind never get a 5xx or a dropped connection.
/// Replay with SHOAL_FUZZ_SEED; SHOAL_FUZZ_CASES sets the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_pipeline_never_fails_on_arbitrary_requests() -> Result<()> {
    let seed = std::env::var("SHOAL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let cases: usize = std::env::var("SHOAL_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    eprintln!("request pipeline fuzz: SHOAL_FUZZ_SEED={seed} SHOAL_FUZZ_CASES={cases}");
    let (_server, client) = setup().await?;
    // Objects to hit: a Cluster and a KeyPair named demo.
    let (code, c) = raw(
        &client,
        "POST",
        &format!("{GV}/namespaces/org-acme/clusters"),
        "application/json",
        serde_json::to_vec(&json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "demo"},
            "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}}}))?,
    )
    .await?;
    ensure!(code == 201, "creating demo: {code} {c}");
    let mut rng = Rng(seed);
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let content_types = [
        "application/json",
        "application/yaml",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
        "application/vnd.kubernetes.protobuf",
        "text/plain",
        "",
        "application/json; charset=utf-8",
    ];
    let queries = [
        "",
        "?labelSelector=fuzz%3Dyes",
        "?labelSelector=a+in+(",
        "?fieldSelector=metadata.name%3Ddemo",
        "?fieldSelector=spec.x%3D1",
        "?limit=1",
        "?limit=-5",
        "?limit=99999999999999999999",
        "?continue=%%%",
        "?resourceVersion=abc",
        "?dryRun=All",
        "?watch=true&timeoutSeconds=1",
        "?watch=true&timeoutSeconds=1&resourceVersion=1&allowWatchBookmarks=true",
        "?includeObject=Object",
    ];
    let names = [
        "demo", "fuzz", "a", "UPPER", "dot.ted", "%2F", "..", "x%00y",
    ];
    let namespaces = ["org-acme", "org-none", "default", "UP"];
    let mut served = std::collections::BTreeMap::<u16, usize>::new();
    for case in 0..cases {
        let kind = *rng.pick(&shoal_api::KINDS.iter().collect::<Vec<_>>());
        let method = *rng.pick(&methods);
        let name = *rng.pick(&names);
        let ns = *rng.pick(&namespaces);
        let mut path = kind.group_version_path();
        if kind.namespaced || rng.chance(10) {
            path.push_str(&format!("/namespaces/{ns}"));
        }
        path.push('/');
        path.push_str(kind.plural);
        if rng.chance(70) {
            path.push('/');
            path.push_str(name);
            if rng.chance(30) {
                let sub = *rng.pick(&["/status", "/endpoints", "/scale", "/status/x"]);
                path.push_str(sub);
            }
        }
        let query = *rng.pick(&queries);
        if query.contains("watch") && rng.chance(80) {
            // Watches take their timeout to end: keep them rare.
            continue;
        }
        path.push_str(query);
        let ct = *rng.pick(&content_types);
        let bytes = body(&mut rng, kind, name);
        let what = format!(
            "case {case} (SHOAL_FUZZ_SEED={seed}): {method} {path} [{ct}] {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        );
        let sent = tokio::time::timeout(
            Duration::from_secs(20),
            raw(&client, method, &path, ct, bytes),
        )
        .await;
        let (code, answer) = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => bail!("{what}: no answer (the connection failed): {e:#}"),
            Err(_) => bail!("{what}: no answer within 20 s"),
        };
        *served.entry(code).or_default() += 1;
        let no_gateway = code == 503
            && path.contains("/endpoints")
            && answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("gateway"));
        ensure!(code < 500 || no_gateway, "{what}: {code} {answer}");
    }
    eprintln!("answers by code: {served:?}");
    ensure!(
        served.keys().any(|c| *c < 300) && served.keys().any(|c| *c >= 400),
        "the fuzz hit only one kind of answer: {served:?}"
    );
    // Still serving.
    let (code, _) = raw(&client, "GET", "/version", "application/json", vec![]).await?;
    ensure!(code == 200);
    Ok(())
}

/// etcd keys are `<prefix>registry/...`; objects an older Shoal wrote at
/// `<prefix>/registry/...` are moved there at start, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_keys_have_no_double_slash_and_the_old_layout_is_moved() -> Result<()> {
    use shoal_store::etcd::{EtcdConfig, EtcdStore};
    use shoal_store::Store;
    let etcd = tokio::task::block_in_place(|| shoal_e2e::etcd::EtcdCluster::start(1))?;
    let endpoints = etcd.endpoints();
    let at = |prefix: &str| {
        let mut c = EtcdConfig::new(endpoints.clone());
        c.prefix = prefix.to_owned();
        c
    };
    // What an older server wrote: the store prefix "/mig/" before "/registry/...".
    let legacy = EtcdStore::connect(at("/mig/")).await?;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "legacy", "uid": "u-legacy",
                                 "creationTimestamp": "2026-01-01T00:00:00Z"},
                    "status": {"phase": "Active"}});
    legacy
        .create(
            "/registry/namespaces/legacy",
            serde_json::to_vec(&ns)?.into(),
        )
        .await?;
    let joined = endpoints.join(",");
    let server = tokio::task::block_in_place(|| {
        ServerProc::start_with(&[
            "--etcd-endpoints",
            &joined,
            "--etcd-prefix",
            "/mig/",
            "--controllers=false",
        ])
    })?;
    let client = server.client().await?;
    let (code, got) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/legacy",
        "application/json",
        vec![],
    )
    .await?;
    ensure!(
        code == 200 && got["metadata"]["uid"] == "u-legacy",
        "the old object: {code} {got}"
    );
    // Nothing is left at the double slash; everything is at <prefix>registry/.
    let old = legacy
        .range(shoal_store::RangeRequest {
            prefix: "/".into(),
            start_after: None,
            limit: None,
        })
        .await?;
    let old_keys: Vec<&str> = old.items.iter().map(|kv| kv.key.as_str()).collect();
    ensure!(
        old_keys.iter().all(|k| !k.starts_with("/registry/")),
        "keys left at /mig//registry/: {old_keys:?}"
    );
    let current = EtcdStore::connect(at("/mig")).await?;
    ensure!(
        current.get("/registry/namespaces/legacy").await?.is_some(),
        "/mig/registry/namespaces/legacy is missing"
    );
    ensure!(
        current.get("/registry/namespaces/default").await?.is_some(),
        "the server's own objects are not at /mig/registry/"
    );
    drop(server);
    drop(etcd);
    Ok(())
}

/// A request refused before its body is read leaves its connection usable: the body, sent after a pause as clients often send it, is
/// read and dropped, and the next request on the same connection is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_keeps_its_connection_usable() -> Result<()> {
    let (server, _client) = setup().await?;
    // The API refusing a bad token, and the web UI's form refusing a body that
    // is not a form (415): both before reading the body.
    let secret = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#;
    refused_then_reused(
        &server,
        "POST /api/v1/namespaces/default/secrets HTTP/1.1\r\nAuthorization: Bearer wrong\r\n\
         Content-Type: application/json",
        secret,
        "HTTP/1.1 401",
    )
    .await?;
    refused_then_reused(
        &server,
        "POST /ui/sign-in HTTP/1.1\r\nContent-Type: text/plain",
        b"token=abc",
        "HTTP/1.1 415",
    )
    .await
}

/// Sends `head` (request line and headers, without Host and Content-Length),
/// then `body` after a pause, then a second request on the same connection:
/// the first answer must start with `first`, and the second must come too.
async fn refused_then_reused(
    server: &ServerProc,
    head: &str,
    body: &[u8],
    first: &str,
) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut tls = tls_connect(server).await?;
    let head = format!(
        "{head}\r\nHost: shoal\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await?;
    tls.flush().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tls.write_all(body).await?;
    tls.flush().await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    tls.write_all(b"GET /version HTTP/1.1\r\nHost: shoal\r\nConnection: close\r\n\r\n")
        .await
        .context("the connection was closed after the refusal")?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_string(&mut text))
        .await
        .context("no answer in 10 s")?
        .with_context(|| format!("the connection ended badly after: {text}"))?;
    ensure!(text.starts_with(first), "first answer: {text}");
    ensure!(
        text.matches("HTTP/1.1 ").count() == 2 && text.contains("HTTP/1.1 200 OK"),
        "the second request on the connection got no answer: {text}"
    );
    Ok(())
}

/// A TLS connection to `server`, trusting the CA of its admin kubeconfig.
async fn tls_connect(
    server: &ServerProc,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use base64::Engine as _;
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};

    let kubeconfig: Value = serde_yaml::from_str(&std::fs::read_to_string(server.kubeconfig())?)?;
    let ca = kubeconfig
        .pointer("/clusters/0/cluster/certificate-authority-data")
        .and_then(Value::as_str)
        .context("no CA in the kubeconfig")?;
    let ca = base64::engine::general_purpose::STANDARD.decode(ca)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(&ca)?)?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let addr = server.url();
    let addr = addr.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let ip: std::net::IpAddr = addr
        .rsplit_once(':')
        .context("no port in the server URL")?
        .0
        .parse()?;
    Ok(
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(ServerName::IpAddress(ip.into()), tcp)
            .await?,
    )
}

/// Requests other than watches are bounded: past `--max-requests-inflight` they
/// get 429 with Retry-After, past `--request-timeout` 504, and both are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_limit_and_timeout_shed_requests_with_a_status() -> Result<()> {
    let server = ServerProc::start_with(&[
        "--controllers=false",
        "--max-requests-inflight",
        "1",
        "--request-timeout",
        "4",
    ])?;
    let client = server.client().await?;
    let token = token_of(&server.kubeconfig())?;
    // A watch is not counted: it runs beside the slow request below.
    let (code, _) = raw(
        &client,
        "GET",
        "/api/v1/namespaces?watch=true&timeoutSeconds=1",
        "application/json",
        vec![],
    )
    .await?;
    ensure!(code == 200, "a watch: {code}");
    // A client that announces a body and never sends it holds the one permit.
    let mut slow = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(format!("127.0.0.1:{}", server.port))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("openssl must be installed (scripts/setup.sh)")?;
    let mut stdin = slow.stdin.take().context("stdin")?;
    std::io::Write::write_all(
        &mut stdin,
        format!(
            "POST {GV}/organizations HTTP/1.1\r\nHost: shoal\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let stdout = slow.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("HTTP/") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let out = Command::new("curl")
        .args(["-sk", "-D", "-", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{}/api/v1/namespaces", server.url()))
        .output()?;
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        answer.lines().next().is_some_and(|l| l.contains(" 429")),
        "a request past the limit: {answer} (the held request: {:?})",
        rx.try_recv()
    );
    ensure!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "no Retry-After: {answer}"
    );
    let status: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or(""))?;
    ensure!(
        status["reason"] == "TooManyRequests" && status["details"]["retryAfterSeconds"] == 1,
        "{status}"
    );
    let line = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
        .await?
        .context("the held request got no answer within 10 s")?;
    drop(stdin);
    let _ = slow.kill();
    let _ = slow.wait();
    ensure!(
        line.contains(" 504"),
        "the held request got {line:?}, not 504"
    );
    // The permit is free again, and both sheds are counted.
    let (code, _) = raw(
        &client,
        "GET",
        "/api/v1/namespaces",
        "application/json",
        vec![],
    )
    .await?;
    ensure!(code == 200, "after the timeout: {code}");
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let metrics = client.request_text(req).await?;
    for reason in ["concurrency", "timeout"] {
        let line = format!("shoal_apiserver_requests_shed_total{{reason=\"{reason}\"}} 1");
        ensure!(
            metrics.contains(&line),
            "no {line:?} in /metrics:\n{metrics}"
        );
    }
    Ok(())
}
