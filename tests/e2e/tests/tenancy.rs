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

/// A server (the API alone: no controller writes to the objects under test) with two
/// organizations: acme with cluster a1, beta with cluster b1 and a node pool.
struct Orgs {
    server: ServerProc,
    admin: Client,
    tmp: tempfile::TempDir,
    writes: Writes,
    /// a1 as the admin created it.
    own_cluster: Value,
    /// b1 as the admin created it.
    other_cluster: Value,
}

impl Orgs {
    async fn start() -> Result<Self> {
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
        Ok(Self {
            server,
            admin,
            tmp,
            writes,
            own_cluster,
            other_cluster,
        })
    }

    /// A client with a new token for `role` in acme.
    async fn acme(&mut self, role: &str, ttl: Option<&str>) -> Result<(Client, String)> {
        let token = make_token(&self.server, &mut self.writes, "acme", role, ttl)?;
        let client = client_with(&self.server, self.tmp.path(), &token).await?;
        Ok((client, token))
    }

    /// A cluster as the admin reads it now.
    async fn cluster_now(&self, ns: &str, name: &str) -> Result<Value> {
        let (_, got) = raw(
            &self.admin,
            "GET",
            &format!("{}/{name}", clusters(ns)),
            JSON,
            vec![],
        )
        .await?;
        Ok(got)
    }

    /// Checks that beta's cluster, which no acme user may change, is unchanged and
    /// that a1 is still the object the admin created; returns a1.
    async fn check_b1_unchanged_and_a1_kept(&self) -> Result<Value> {
        let b1 = self.cluster_now("org-beta", "b1").await?;
        for field in [
            "/spec",
            "/metadata/uid",
            "/metadata/labels",
            "/metadata/annotations",
        ] {
            ensure!(
                b1.pointer(field) == self.other_cluster.pointer(field),
                "beta's cluster was changed at {field}: {b1}"
            );
        }
        let a1 = self.cluster_now("org-acme", "a1").await?;
        ensure!(
            a1["metadata"]["uid"] == self.own_cluster["metadata"]["uid"],
            "a1 was replaced: {a1}"
        );
        Ok(a1)
    }
}

/// The secret the tests write into acme's namespace: its body, its plaintext value and
/// that value in base64.
fn canary_secret() -> Result<(Value, &'static str, String)> {
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
    Ok((secret, plaintext, encoded))
}

const SECRETS: &str = "/api/v1/namespaces/org-acme/secrets";

/// Everything an acme user with `role` may and may not do, in acme and in beta.
async fn role_stays_in_its_organization(orgs: &mut Orgs, role: &str) -> Result<()> {
    let user = format!("{role}@acme");
    let (client, _) = orgs.acme(role, None).await?;
    let admin = orgs.admin.clone();
    let writes = &mut orgs.writes;
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
        let patch = json!({"metadata": {"annotations": { format!("patched-by-{role}"): "yes" }}});
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
    let orgs_list = expect_code(
        &client,
        "GET",
        &format!("{GV}/organizations"),
        None,
        200,
        "list organizations",
    )
    .await?;
    let org_names: Vec<&str> = orgs_list["items"]
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
    Ok(())
}

#[tokio::test]
async fn an_owner_changes_its_own_organization_and_nothing_in_another() -> Result<()> {
    let mut orgs = Orgs::start().await?;
    role_stays_in_its_organization(&mut orgs, "owner").await?;
    let a1 = orgs.check_b1_unchanged_and_a1_kept().await?;
    ensure!(
        a1["metadata"]["annotations"]["patched-by-owner"] == "yes",
        "the owner's patch is missing: {a1}"
    );
    Ok(())
}

#[tokio::test]
async fn a_member_changes_clusters_in_its_own_organization_only() -> Result<()> {
    let mut orgs = Orgs::start().await?;
    role_stays_in_its_organization(&mut orgs, "member").await?;
    let a1 = orgs.check_b1_unchanged_and_a1_kept().await?;
    ensure!(
        a1["metadata"]["labels"]["put-by-member"] == "yes",
        "the member's update is missing: {a1}"
    );
    Ok(())
}

#[tokio::test]
async fn a_viewer_reads_its_own_organization_and_changes_nothing() -> Result<()> {
    let mut orgs = Orgs::start().await?;
    role_stays_in_its_organization(&mut orgs, "viewer").await?;
    let a1 = orgs.check_b1_unchanged_and_a1_kept().await?;
    ensure!(
        a1["metadata"]["labels"].get("put-by-viewer").is_none(),
        "the viewer's update went through: {a1}"
    );
    Ok(())
}

#[tokio::test]
async fn an_all_namespaces_watch_carries_only_the_organizations_events() -> Result<()> {
    let mut orgs = Orgs::start().await?;
    let (viewer, _) = orgs.acme("viewer", None).await?;
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
        &orgs.admin,
        "POST",
        &clusters("org-beta"),
        Some(&cluster("b-late", "org-beta")),
        201,
        "admin",
    )
    .await?;
    expect_code(
        &orgs.admin,
        "POST",
        &clusters("org-acme"),
        Some(&cluster("a-late", "org-acme")),
        201,
        "admin",
    )
    .await?;
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
    Ok(())
}

#[tokio::test]
async fn secrets_are_for_admins_only_even_in_the_organizations_namespace() -> Result<()> {
    let mut orgs = Orgs::start().await?;
    let (owner, _) = orgs.acme("owner", None).await?;
    let admin = &orgs.admin;
    let (secret, _, encoded) = canary_secret()?;
    expect_code(
        &owner,
        "POST",
        SECRETS,
        Some(&secret),
        403,
        "owner creates a secret",
    )
    .await?;
    expect_code(
        admin,
        "POST",
        SECRETS,
        Some(&secret),
        201,
        "admin creates a secret",
    )
    .await?;
    expect_code(
        &owner,
        "GET",
        &format!("{SECRETS}/canary"),
        None,
        403,
        "owner reads a secret",
    )
    .await?;
    expect_code(&owner, "GET", SECRETS, None, 403, "owner lists secrets").await?;
    expect_code(
        &owner,
        "GET",
        "/api/v1/secrets",
        None,
        403,
        "owner lists all secrets",
    )
    .await?;
    let code = watch_code(&owner, SECRETS).await?;
    ensure!(code == 403, "owner watches secrets: {code}");
    expect_code(
        &owner,
        "DELETE",
        &format!("{SECRETS}/canary"),
        None,
        403,
        "owner deletes a secret",
    )
    .await?;
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
        admin,
        "GET",
        &format!("{SECRETS}/canary"),
        None,
        200,
        "admin reads the secret",
    )
    .await?;
    ensure!(
        read["data"]["password"] == encoded.as_str(),
        "the secret did not round-trip: {read}"
    );
    Ok(())
}

#[tokio::test]
async fn a_revoked_token_stops_working_at_once() -> Result<()> {
    let mut orgs = Orgs::start().await?;
    let (revoked, token) = orgs.acme("member", None).await?;
    let a1_path = format!("{}/a1", clusters("org-acme"));
    expect_code(&revoked, "GET", &a1_path, None, 200, "before revocation").await?;
    let id = token.split('.').nth(1).context("token id")?;
    let listed = shoal_ok(&orgs.server, &["token", "list"])?;
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
    shoal_ok(&orgs.server, &["token", "revoke", id])?;
    expect_code(&revoked, "GET", &a1_path, None, 401, "after revocation").await?;
    let listed = shoal_ok(&orgs.server, &["token", "list"])?;
    ensure!(
        !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id)),
        "token list still shows {id}:\n{listed}"
    );
    Ok(())
}

#[tokio::test]
async fn an_expired_token_gets_401() -> Result<()> {
    let mut orgs = Orgs::start().await?;
    let (expiring, _) = orgs.acme("owner", Some("1s")).await?;
    let a1_path = format!("{}/a1", clusters("org-acme"));
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
    Ok(())
}

#[tokio::test]
async fn the_audit_log_has_one_line_per_write_and_none_for_reads() -> Result<()> {
    let mut orgs = Orgs::start().await?;
    for role in ["owner", "member", "viewer"] {
        role_stays_in_its_organization(&mut orgs, role).await?;
    }
    let log = std::fs::read_to_string(orgs.server.data_dir.join("audit.log"))?;
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
    let mut writes = std::mem::take(&mut orgs.writes.0);
    let admin_lines = by_user.remove(ADMIN).unwrap_or(0);
    let admin_writes = writes.remove(ADMIN).unwrap_or(0);
    ensure!(
        by_user == writes,
        "audit lines per user {by_user:?}, writes sent {writes:?}:\n{log}"
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
    Ok(())
}

#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_ordinary_objects_are_not() -> Result<()> {
    let orgs = Orgs::start().await?;
    let (secret, plaintext, encoded) = canary_secret()?;
    expect_code(
        &orgs.admin,
        "POST",
        SECRETS,
        Some(&secret),
        201,
        "admin creates a secret",
    )
    .await?;
    // An ordinary object is stored as it is, which shows the check can see plaintext.
    let marker = "visiblemarker7c2e";
    let mut labelled = cluster("marked", "org-acme");
    labelled["metadata"]["labels"] = json!({ "marker": marker });
    expect_code(
        &orgs.admin,
        "POST",
        &clusters("org-acme"),
        Some(&labelled),
        201,
        "admin",
    )
    .await?;
    let mut server = orgs.server;
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
