//! Tenancy: what each organization role may do in its own organization and in
//! another one, secrets for admins only and encrypted at rest, expiring and
//! revoked tokens, and the audit log.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use http_body_util::BodyExt;
use kube::Client;
use serde_json::{json, Value};
use shoal_e2e::{client_for, kubeconfig_with_token, raw, ServerProc};

const JSON: &str = "application/json";
const GV: &str = "/apis/shoal.io/v1alpha1";

fn cluster(name: &str, ns: &str) -> Value {
    json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
    })
}

fn clusters(ns: &str) -> String {
    format!("{GV}/namespaces/{ns}/clusters")
}

/// Counts the write requests the test sends, per user, to check the audit log.
#[derive(Default)]
struct Writes(BTreeMap<String, usize>);

impl Writes {
    fn add(&mut self, user: &str) {
        *self.0.entry(user.to_owned()).or_default() += 1;
    }
}

/// Runs the CLI with the admin kubeconfig and returns stdout, failing on a non-zero exit.
fn shoal_ok(server: &ServerProc, args: &[&str]) -> Result<String> {
    let out = server.shoal(args)?;
    ensure!(
        out.status.success(),
        "shoal {} failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Makes a token with the CLI (an audited write by the admin) and returns it.
fn make_token(
    server: &ServerProc,
    writes: &mut Writes,
    org: &str,
    role: &str,
    ttl: Option<&str>,
) -> Result<String> {
    let mut args = vec!["token", "create", "--org", org, "--role", role];
    if let Some(ttl) = ttl {
        args.extend(["--ttl", ttl]);
    }
    let out = shoal_ok(server, &args)?;
    writes.add(ADMIN);
    let token = out
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with("shoal."))
        .context("no token in the output")?;
    Ok(token.to_owned())
}

async fn client_with(server: &ServerProc, dir: &Path, token: &str) -> Result<Client> {
    let id = token.split('.').nth(1).context("token id")?;
    let path = dir.join(format!("kubeconfig-{id}"));
    kubeconfig_with_token(&server.kubeconfig(), token, &path)?;
    client_for(&path).await
}

/// Sends a request and checks the code; a 403 or 401 must be a proper Status.
async fn expect_code(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&Value>,
    want: u16,
    what: &str,
) -> Result<Value> {
    let bytes = body
        .map(serde_json::to_vec)
        .transpose()?
        .unwrap_or_default();
    let ct = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        JSON
    };
    let (code, got) = raw(client, method, path, ct, bytes).await?;
    ensure!(
        code == want,
        "{what}: {method} {path} gave {code}, want {want}: {got}"
    );
    let reason = match want {
        401 => Some("Unauthorized"),
        403 => Some("Forbidden"),
        _ => None,
    };
    if let Some(reason) = reason {
        ensure!(
            got["kind"] == "Status" && got["reason"] == reason && got["code"] == want,
            "{what}: not a {reason} Status: {got}"
        );
    }
    Ok(got)
}

/// Opens a watch and returns its HTTP status, without waiting for events.
async fn watch_code(client: &Client, path: &str) -> Result<u16> {
    let req = http::Request::get(format!("{path}?watch=true"))
        .header("Accept", JSON)
        .body(Vec::new())?;
    let resp = client.send(req.map(kube::client::Body::from)).await?;
    Ok(resp.status().as_u16())
}

/// Reads newline-delimited watch events until `until` holds for one, or the deadline.
async fn read_watch(
    body: &mut kube::client::Body,
    seen: &mut Vec<Value>,
    until: impl Fn(&Value) -> bool,
) -> Result<()> {
    let mut pending = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .context("the watch did not deliver the expected event in 15 s")?
            .context("the watch ended early")?
            .map_err(|e| anyhow::anyhow!("reading the watch: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let ev: Value = serde_json::from_slice(&line)?;
            let done = until(&ev);
            seen.push(ev);
            if done {
                return Ok(());
            }
        }
    }
}

fn event_is(ev: &Value, ty: &str, ns: &str, name: &str) -> bool {
    ev["type"] == ty
        && ev["object"]["metadata"]["namespace"] == ns
        && ev["object"]["metadata"]["name"] == name
}

const ADMIN: &str = "admin";
const ROLES: [&str; 3] = ["owner", "member", "viewer"];

#[tokio::test]
async fn organization_roles_are_confined_to_their_namespace() -> Result<()> {
    // The API alone: no controller writes to the objects under test.
    let server = ServerProc::start_with(&["--controllers=false"])?;
    let admin = server.client().await?;
    let tmp = tempfile::tempdir()?;
    let mut writes = Writes::default();

    for org in ["acme", "beta"] {
        let body = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Organization", "metadata": {"name": org}, "spec": {}});
        expect_code(
            &admin,
            "POST",
            &format!("{GV}/organizations"),
            Some(&body),
            201,
            "admin creates an org",
        )
        .await?;
        writes.add(ADMIN);
    }
    // A Cluster must name a Release that exists; the API alone seeds none.
    shoal_e2e::ensure_release(&admin, "test-1").await?;
    writes.add(ADMIN);
    let own_cluster = expect_code(
        &admin,
        "POST",
        &clusters("org-acme"),
        Some(&cluster("a1", "org-acme")),
        201,
        "admin",
    )
    .await?;
    writes.add(ADMIN);
    let other_cluster = expect_code(
        &admin,
        "POST",
        &clusters("org-beta"),
        Some(&cluster("b1", "org-beta")),
        201,
        "admin",
    )
    .await?;
    writes.add(ADMIN);

    let pool = json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "NodePool",
        "metadata": {"name": "b1-pool", "namespace": "org-beta"},
        "spec": {"cluster": "b1", "replicas": 1, "machine": {"cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
    });
    expect_code(
        &admin,
        "POST",
        &format!("{GV}/namespaces/org-beta/nodepools"),
        Some(&pool),
        201,
        "admin",
    )
    .await?;
    writes.add(ADMIN);

    for role in ROLES {
        let user = format!("{role}@acme");
        let token = make_token(&server, &mut writes, "acme", role, None)?;
        let client = client_with(&server, tmp.path(), &token).await?;
        let writer = role != "viewer";
        for (ns, existing, own) in [("org-acme", "a1", true), ("org-beta", "b1", false)] {
            let what = format!("{role} of acme in {ns}");
            let ok = |code: u16| if own { code } else { 403 };
            let write_ok = |code: u16| if own && writer { code } else { 403 };
            let coll = clusters(ns);
            let one = format!("{coll}/{existing}");

            expect_code(&client, "GET", &one, None, ok(200), &format!("{what}: get")).await?;
            let list = expect_code(
                &client,
                "GET",
                &coll,
                None,
                ok(200),
                &format!("{what}: list"),
            )
            .await?;
            if own {
                let names: Vec<&str> = list["items"]
                    .as_array()
                    .context("items")?
                    .iter()
                    .filter_map(|i| i["metadata"]["name"].as_str())
                    .collect();
                ensure!(
                    names.contains(&existing),
                    "{what}: the list misses {existing}: {names:?}"
                );
            }
            let code = watch_code(&client, &coll).await?;
            ensure!(
                code == ok(200),
                "{what}: watch gave {code}, want {}",
                ok(200)
            );

            let made = format!("{role}-made");
            expect_code(
                &client,
                "POST",
                &coll,
                Some(&cluster(&made, ns)),
                write_ok(201),
                &format!("{what}: create"),
            )
            .await?;
            writes.add(&user);

            let (_, mut current) = raw(&admin, "GET", &one, JSON, vec![]).await?;
            current["metadata"]["labels"] = json!({ format!("put-by-{role}"): "yes" });
            // No resourceVersion: a controller writing in between must not turn this into a 409.
            current["metadata"]
                .as_object_mut()
                .context("metadata")?
                .remove("resourceVersion");
            expect_code(
                &client,
                "PUT",
                &one,
                Some(&current),
                write_ok(200),
                &format!("{what}: update"),
            )
            .await?;
            writes.add(&user);
            let patch =
                json!({"metadata": {"annotations": { format!("patched-by-{role}"): "yes" }}});
            expect_code(
                &client,
                "PATCH",
                &one,
                Some(&patch),
                write_ok(200),
                &format!("{what}: patch"),
            )
            .await?;
            writes.add(&user);

            // Writers delete what they made; everyone else tries the existing cluster.
            let victim = if own && writer {
                made.clone()
            } else {
                existing.to_owned()
            };
            expect_code(
                &client,
                "DELETE",
                &format!("{coll}/{victim}"),
                None,
                write_ok(200),
                &format!("{what}: delete"),
            )
            .await?;
            writes.add(&user);
            let (code, _) = raw(&admin, "GET", &format!("{coll}/{victim}"), JSON, vec![]).await?;
            ensure!(
                code == if own && writer { 404 } else { 200 },
                "{what}: after the delete, GET {victim} by the admin gave {code}"
            );
        }

        // Every namespaced kind, listed across all namespaces, shows only acme's objects.
        for kind in shoal_api::KINDS
            .iter()
            .filter(|k| k.namespaced && k.group == "shoal.io")
        {
            let path = format!("{GV}/{}", kind.plural);
            let list = expect_code(
                &client,
                "GET",
                &path,
                None,
                200,
                &format!("{role} lists {}", kind.plural),
            )
            .await?;
            let items = list["items"].as_array().context("items")?;
            ensure!(
                items
                    .iter()
                    .all(|i| i["metadata"]["namespace"] == "org-acme"),
                "{role}: {path} leaks: {list}"
            );
        }

        // Organizations and namespaces: read your own, change nothing but (as an
        // owner) your own organization.
        let own_org = format!("{GV}/organizations/acme");
        let patch = json!({"spec": {"displayName": format!("Acme by {role}")}});
        let code = if role == "owner" { 200 } else { 403 };
        expect_code(
            &client,
            "PATCH",
            &own_org,
            Some(&patch),
            code,
            &format!("{role} patches its org"),
        )
        .await?;
        writes.add(&user);
        expect_code(
            &client,
            "PATCH",
            &format!("{GV}/organizations/beta"),
            Some(&patch),
            403,
            &format!("{role} patches beta"),
        )
        .await?;
        writes.add(&user);
        expect_code(
            &client,
            "DELETE",
            &own_org,
            None,
            403,
            &format!("{role} deletes its org"),
        )
        .await?;
        writes.add(&user);
        let new_org = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Organization", "metadata": {"name": format!("by-{role}")}, "spec": {}});
        expect_code(
            &client,
            "POST",
            &format!("{GV}/organizations"),
            Some(&new_org),
            403,
            &format!("{role} creates an org"),
        )
        .await?;
        writes.add(&user);
        expect_code(
            &client,
            "GET",
            "/api/v1/namespaces/org-acme",
            None,
            200,
            "get own namespace",
        )
        .await?;
        expect_code(
            &client,
            "GET",
            "/api/v1/namespaces/org-beta",
            None,
            403,
            "get beta's namespace",
        )
        .await?;
        expect_code(
            &client,
            "DELETE",
            "/api/v1/namespaces/org-beta",
            None,
            403,
            "delete beta's namespace",
        )
        .await?;
        writes.add(&user);
        let nss = expect_code(
            &client,
            "GET",
            "/api/v1/namespaces",
            None,
            200,
            "list namespaces",
        )
        .await?;
        let ns_names: Vec<&str> = nss["items"]
            .as_array()
            .context("items")?
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str())
            .collect();
        ensure!(
            ns_names == ["org-acme"],
            "{role}: namespaces visible: {ns_names:?}"
        );

        // Cluster-scoped kinds and the all-namespaces views show only acme.
        let orgs = expect_code(
            &client,
            "GET",
            &format!("{GV}/organizations"),
            None,
            200,
            "list organizations",
        )
        .await?;
        let org_names: Vec<&str> = orgs["items"]
            .as_array()
            .context("items")?
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str())
            .collect();
        ensure!(
            org_names == ["acme"],
            "{role}: organizations visible: {org_names:?}"
        );
        expect_code(
            &client,
            "GET",
            &format!("{GV}/organizations/beta"),
            None,
            403,
            "get another org",
        )
        .await?;
        let all = expect_code(
            &client,
            "GET",
            &format!("{GV}/clusters"),
            None,
            200,
            "list all clusters",
        )
        .await?;
        let seen: Vec<(&str, &str)> = all["items"]
            .as_array()
            .context("items")?
            .iter()
            .filter_map(|i| {
                Some((
                    i["metadata"]["namespace"].as_str()?,
                    i["metadata"]["name"].as_str()?,
                ))
            })
            .collect();
        ensure!(
            seen.contains(&("org-acme", "a1")),
            "{role}: the all-namespaces list misses a1: {seen:?}"
        );
        ensure!(
            seen.iter().all(|(ns, _)| *ns == "org-acme"),
            "{role}: the all-namespaces list leaks: {seen:?}"
        );
    }

    // What the viewers and the other organization could not change is unchanged.
    let (_, b1) = raw(
        &admin,
        "GET",
        &format!("{}/b1", clusters("org-beta")),
        JSON,
        vec![],
    )
    .await?;
    for field in [
        "/spec",
        "/metadata/uid",
        "/metadata/labels",
        "/metadata/annotations",
    ] {
        ensure!(
            b1.pointer(field) == other_cluster.pointer(field),
            "beta's cluster was changed at {field}: {b1}"
        );
    }
    let (_, a1) = raw(
        &admin,
        "GET",
        &format!("{}/a1", clusters("org-acme")),
        JSON,
        vec![],
    )
    .await?;
    ensure!(
        a1["metadata"]["labels"]["put-by-member"] == "yes",
        "the member's update is missing: {a1}"
    );
    ensure!(
        a1["metadata"]["annotations"]["patched-by-owner"] == "yes",
        "the owner's patch is missing: {a1}"
    );
    ensure!(
        a1["metadata"]["labels"].get("put-by-viewer").is_none(),
        "the viewer's update went through: {a1}"
    );
    ensure!(
        a1["metadata"]["uid"] == own_cluster["metadata"]["uid"],
        "a1 was replaced: {a1}"
    );

    // A watch across all namespaces, by an acme token, carries only acme's events.
    let token = make_token(&server, &mut writes, "acme", "viewer", None)?;
    let viewer = client_with(&server, tmp.path(), &token).await?;
    let req = http::Request::get(format!("{GV}/clusters?watch=true"))
        .header("Accept", JSON)
        .body(Vec::new())?;
    let resp = viewer.send(req.map(kube::client::Body::from)).await?;
    ensure!(
        resp.status() == 200,
        "all-namespaces watch: {}",
        resp.status()
    );
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    read_watch(&mut body, &mut seen, |ev| {
        event_is(ev, "ADDED", "org-acme", "a1")
    })
    .await?;
    // beta's change comes first, so if it were not filtered it would arrive before acme's.
    expect_code(
        &admin,
        "POST",
        &clusters("org-beta"),
        Some(&cluster("b-late", "org-beta")),
        201,
        "admin",
    )
    .await?;
    writes.add(ADMIN);
    expect_code(
        &admin,
        "POST",
        &clusters("org-acme"),
        Some(&cluster("a-late", "org-acme")),
        201,
        "admin",
    )
    .await?;
    writes.add(ADMIN);
    read_watch(&mut body, &mut seen, |ev| {
        event_is(ev, "ADDED", "org-acme", "a-late")
    })
    .await?;
    drop(body);
    let leaked: Vec<&Value> = seen
        .iter()
        .filter(|ev| ev["object"]["metadata"]["namespace"] != "org-acme")
        .collect();
    ensure!(
        leaked.is_empty(),
        "the acme watch saw other namespaces: {leaked:?}"
    );

    // Secrets: admins only, even in the organization's own namespace.
    let token = make_token(&server, &mut writes, "acme", "owner", None)?;
    let owner = client_with(&server, tmp.path(), &token).await?;
    let plaintext = "canary-plaintext-5f1d9c7e-not-for-disk";
    let encoded = serde_json::to_value(k8s_openapi::ByteString(plaintext.as_bytes().to_vec()))?
        .as_str()
        .context("ByteString serializes as base64")?
        .to_owned();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "canary", "namespace": "org-acme"},
        "data": {"password": encoded},
    });
    let secrets = "/api/v1/namespaces/org-acme/secrets";
    expect_code(
        &owner,
        "POST",
        secrets,
        Some(&secret),
        403,
        "owner creates a secret",
    )
    .await?;
    writes.add("owner@acme");
    expect_code(
        &admin,
        "POST",
        secrets,
        Some(&secret),
        201,
        "admin creates a secret",
    )
    .await?;
    writes.add(ADMIN);
    expect_code(
        &owner,
        "GET",
        &format!("{secrets}/canary"),
        None,
        403,
        "owner reads a secret",
    )
    .await?;
    expect_code(&owner, "GET", secrets, None, 403, "owner lists secrets").await?;
    expect_code(
        &owner,
        "GET",
        "/api/v1/secrets",
        None,
        403,
        "owner lists all secrets",
    )
    .await?;
    let code = watch_code(&owner, secrets).await?;
    ensure!(code == 403, "owner watches secrets: {code}");
    expect_code(
        &owner,
        "DELETE",
        &format!("{secrets}/canary"),
        None,
        403,
        "owner deletes a secret",
    )
    .await?;
    writes.add("owner@acme");
    expect_code(
        &owner,
        "GET",
        "/api/v1/namespaces/shoal-system/secrets",
        None,
        403,
        "owner lists the token secrets",
    )
    .await?;
    let read = expect_code(
        &admin,
        "GET",
        &format!("{secrets}/canary"),
        None,
        200,
        "admin reads the secret",
    )
    .await?;
    ensure!(
        read["data"]["password"] == encoded.as_str(),
        "the secret did not round-trip: {read}"
    );

    // A revoked token stops working at once.
    let token = make_token(&server, &mut writes, "acme", "member", None)?;
    let revoked = client_with(&server, tmp.path(), &token).await?;
    let a1_path = format!("{}/a1", clusters("org-acme"));
    expect_code(&revoked, "GET", &a1_path, None, 200, "before revocation").await?;
    let id = token.split('.').nth(1).context("token id")?;
    let listed = shoal_ok(&server, &["token", "list"])?;
    ensure!(
        listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id)),
        "token list misses {id}:\n{listed}"
    );
    ensure!(
        !listed.contains(token.rsplit('.').next().unwrap_or("")),
        "token list shows the secret part"
    );
    shoal_ok(&server, &["token", "revoke", id])?;
    writes.add(ADMIN);
    expect_code(&revoked, "GET", &a1_path, None, 401, "after revocation").await?;
    let listed = shoal_ok(&server, &["token", "list"])?;
    ensure!(
        !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id)),
        "token list still shows {id}:\n{listed}"
    );

    // An expired token gets 401.
    let token = make_token(&server, &mut writes, "acme", "owner", Some("1s"))?;
    let expiring = client_with(&server, tmp.path(), &token).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = raw(&expiring, "GET", &a1_path, JSON, vec![]).await?;
        if code == 401 {
            ensure!(body["reason"] == "Unauthorized", "expired token: {body}");
            break;
        }
        ensure!(code == 200, "a fresh token gave {code}: {body}");
        ensure!(
            Instant::now() < deadline,
            "a token with --ttl 1s still works after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The audit log: one JSON line per write, nothing for reads.
    let log = std::fs::read_to_string(server.data_dir.join("audit.log"))?;
    let mut by_user: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines() {
        let rec: Value = serde_json::from_str(line)
            .with_context(|| format!("audit line is not JSON: {line}"))?;
        for field in ["user", "verb", "resource", "time"] {
            ensure!(
                rec[field].as_str().is_some_and(|s| !s.is_empty()),
                "audit line without {field}: {line}"
            );
        }
        ensure!(
            rec["code"].as_u64().is_some(),
            "audit line without code: {line}"
        );
        let time = rec["time"].as_str().unwrap_or_default();
        ensure!(
            time.len() >= 20 && time.as_bytes()[4] == b'-' && time.contains('T'),
            "audit time is not RFC 3339: {line}"
        );
        let verb = rec["verb"].as_str().unwrap_or_default();
        ensure!(
            ["create", "update", "patch", "delete", "deletecollection"].contains(&verb),
            "audit logged a read: {line}"
        );
        let user = rec["user"].as_str().unwrap_or_default();
        let user = if user.contains('@') {
            user.to_owned()
        } else {
            ADMIN.to_owned()
        };
        *by_user.entry(user).or_default() += 1;
    }
    // Organization users are exact; the admin line count may include the server's own
    // writes (leader election, controllers) on top of the test's.
    let admin_lines = by_user.remove(ADMIN).unwrap_or(0);
    let admin_writes = writes.0.remove(ADMIN).unwrap_or(0);
    ensure!(
        by_user == writes.0,
        "audit lines per user {by_user:?}, writes sent {:?}:\n{log}",
        writes.0
    );
    ensure!(
        admin_lines >= admin_writes,
        "{admin_lines} admin audit lines for {admin_writes} admin writes:\n{log}"
    );
    let has = |user: &str, verb: &str, code: u64| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|r| {
                r["user"] == user
                    && r["verb"] == verb
                    && r["code"] == code
                    && r["resource"]
                        .as_str()
                        .is_some_and(|s| s.contains("clusters"))
            })
    };
    for (user, verb, code) in [
        ("member@acme", "create", 201),
        ("owner@acme", "delete", 200),
        ("viewer@acme", "update", 403),
        ("owner@acme", "patch", 403),
    ] {
        ensure!(
            has(user, verb, code),
            "the audit log has no {verb} by {user} with code {code}:\n{log}"
        );
    }

    // Secrets are encrypted at rest; ordinary objects are not, which shows the check can see plaintext.
    let marker = "visiblemarker7c2e";
    let mut labelled = cluster("marked", "org-acme");
    labelled["metadata"]["labels"] = json!({ "marker": marker });
    expect_code(
        &admin,
        "POST",
        &clusters("org-acme"),
        Some(&labelled),
        201,
        "admin",
    )
    .await?;
    let mut server = server;
    server.stop()?;
    let store = std::fs::read(server.data_dir.join("store.redb"))?;
    let contains = |needle: &str| store.windows(needle.len()).any(|w| w == needle.as_bytes());
    ensure!(
        contains(marker),
        "the store does not hold the plain label, so the secret check proves nothing"
    );
    if contains(plaintext) || contains(&encoded) {
        bail!("the secret's value is stored in plaintext in store.redb");
    }
    Ok(())
}
