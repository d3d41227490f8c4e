//! Every kind of bad request gets a `metav1.Status` with the right HTTP code,
//! reason and field, never a 500; and afterwards nothing is lost.

use anyhow::{bail, ensure, Context, Result};
use kube::Client;
use serde_json::{json, Value};
use shoal_e2e::{client_for, kubeconfig_with_token, raw, ServerProc};

const CLUSTERS: &str = "/apis/shoal.io/v1alpha1/namespaces/org-acme/clusters";
const JSON: &str = "application/json";

fn cluster(name: &str) -> Value {
    json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": "org-acme"},
        "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
    })
}

/// A valid cluster with one change made at a JSON pointer.
fn cluster_with(name: &str, pointer: &str, value: Value) -> Result<Value> {
    let mut c = cluster(name);
    let (parent, key) = pointer
        .rsplit_once('/')
        .context("pointer without a slash")?;
    let slot = if parent.is_empty() {
        &mut c
    } else {
        if c.pointer(parent).is_none() {
            // Create the missing parent object (e.g. spec.network).
            let (gp, pk) = parent.rsplit_once('/').context("pointer")?;
            c.pointer_mut(gp).context("grandparent")?[pk] = json!({});
        }
        c.pointer_mut(parent).context("parent")?
    };
    slot[key] = value;
    Ok(c)
}

/// What a failed request must look like.
struct Expect<'a> {
    code: u16,
    reason: &'a str,
    /// A field that one of `details.causes[].field` must name (prefix match for maps).
    field: Option<&'a str>,
}

/// Checks that a response is a proper Status for the expected failure.
fn check_status(case: &str, got: (u16, Value), want: Expect<'_>) -> Result<()> {
    let (code, body) = got;
    ensure!(code != 500, "{case}: the server answered 500: {body}");
    ensure!(
        code == want.code,
        "{case}: HTTP {code}, want {}: {body}",
        want.code
    );
    ensure!(
        body["kind"] == "Status",
        "{case}: the body is not a Status: {body}"
    );
    ensure!(
        body["apiVersion"] == "v1",
        "{case}: Status apiVersion: {body}"
    );
    ensure!(body["status"] == "Failure", "{case}: Status.status: {body}");
    ensure!(
        body["code"] == want.code,
        "{case}: Status.code differs from the HTTP code: {body}"
    );
    ensure!(
        body["reason"] == want.reason,
        "{case}: reason {}, want {}: {body}",
        body["reason"],
        want.reason
    );
    let message = body["message"].as_str().unwrap_or("");
    ensure!(
        !message.is_empty(),
        "{case}: the Status has no message: {body}"
    );
    if let Some(field) = want.field {
        let causes = body
            .pointer("/details/causes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let named = causes.iter().filter_map(|c| c["field"].as_str()).any(|f| {
            f == field || f.starts_with(&format!("{field}.")) || f.starts_with(&format!("{field}["))
        });
        ensure!(named, "{case}: no cause names the field {field}: {body}");
        ensure!(
            message.contains(field),
            "{case}: the message does not mention {field}: {message}"
        );
    }
    Ok(())
}

/// A raw request case: name, method, path, content type, body, expected failure.
type RawCase<'a> = (&'a str, &'a str, String, &'a str, Vec<u8>, Expect<'a>);

fn expect(code: u16, reason: &str) -> Expect<'_> {
    Expect {
        code,
        reason,
        field: None,
    }
}

fn invalid(field: &str) -> Expect<'_> {
    Expect {
        code: 422,
        reason: "Invalid",
        field: Some(field),
    }
}

async fn post(client: &Client, body: &Value) -> Result<(u16, Value)> {
    raw(client, "POST", CLUSTERS, JSON, serde_json::to_vec(body)?).await
}

/// A client whose kubeconfig has the given token, or none at all.
async fn client_with_token(
    server: &ServerProc,
    dir: &std::path::Path,
    token: Option<&str>,
) -> Result<Client> {
    let path = dir.join(format!("kubeconfig-{}", token.map_or("none", |_| "token")));
    match token {
        Some(t) => kubeconfig_with_token(&server.kubeconfig(), t, &path)?,
        None => {
            let mut v: Value =
                serde_yaml::from_str(&std::fs::read_to_string(server.kubeconfig())?)?;
            v["users"][0]["user"] = json!({});
            std::fs::write(&path, serde_yaml::to_string(&v)?)?;
        }
    }
    client_for(&path).await
}

/// A server (the API alone: no controller writes to the objects under test) with
/// organization acme, release test-1 and one valid cluster, demo.
struct Acme {
    server: ServerProc,
    client: Client,
    /// demo as it was created.
    before: Value,
}

impl Acme {
    async fn start() -> Result<Self> {
        let server = ServerProc::start_with(&["--controllers=false"])?;
        let client = server.client().await?;
        let (code, org) = raw(
            &client,
            "POST",
            "/apis/shoal.io/v1alpha1/organizations",
            JSON,
            serde_json::to_vec(&json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Organization", "metadata": {"name": "acme"}, "spec": {}}))?,
        )
        .await?;
        ensure!(code == 201, "creating organization acme: {code} {org}");
        // A Cluster must name a Release that exists; the API alone seeds none.
        shoal_e2e::ensure_release(&client, "test-1").await?;
        let (code, before) = post(&client, &cluster("demo")).await?;
        ensure!(code == 201, "creating the valid cluster: {code} {before}");
        Ok(Self {
            server,
            client,
            before,
        })
    }

    /// Creates cluster victim and updates it once (label step=one); returns it as created.
    async fn victim(&self) -> Result<Value> {
        let client = self.client.clone();
        let (code, victim) = post(&client, &cluster("victim")).await?;
        ensure!(code == 201, "creating victim: {code} {victim}");
        let mut changed = victim.clone();
        changed["metadata"]["labels"] = json!({"step": "one"});
        // No resourceVersion: the server's own controllers may have written in between.
        changed["metadata"]
            .as_object_mut()
            .context("metadata")?
            .remove("resourceVersion");
        let (code, after) = raw(
            &client,
            "PUT",
            &format!("{CLUSTERS}/victim"),
            JSON,
            serde_json::to_vec(&changed)?,
        )
        .await?;
        ensure!(code == 200, "first update of victim: {code} {after}");
        ensure!(
            after["metadata"]["resourceVersion"] != victim["metadata"]["resourceVersion"],
            "the update did not move resourceVersion"
        );
        Ok(victim)
    }

    /// Nothing was lost, nothing invalid was stored (only `stored` exist), and the
    /// server still serves.
    async fn check_nothing_lost(&self, stored: &[&str]) -> Result<()> {
        let client = self.client.clone();
        let before = &self.before;
        let demo = format!("{CLUSTERS}/demo");
        let (code, after) = raw(&client, "GET", &demo, JSON, vec![]).await?;
        ensure!(code == 200, "the valid cluster is gone: {code} {after}");
        for field in [
            "/spec",
            "/metadata/uid",
            "/metadata/labels",
            "/metadata/annotations",
            "/metadata/generation",
        ] {
            ensure!(
                after.pointer(field) == before.pointer(field),
                "the valid cluster changed at {field}:\nbefore {before}\nafter  {after}"
            );
        }
        let (code, list) = raw(&client, "GET", CLUSTERS, JSON, vec![]).await?;
        ensure!(code == 200, "listing after the bad requests: {code} {list}");
        let mut names: Vec<&str> = list["items"]
            .as_array()
            .context("items")?
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str())
            .collect();
        names.sort_unstable();
        if names != stored {
            bail!("bad requests stored objects: {names:?}");
        }
        let (code, created) = post(&client, &cluster("still-serving")).await?;
        ensure!(
            code == 201,
            "the server no longer accepts a valid create: {code} {created}"
        );
        Ok(())
    }
}

#[tokio::test]
async fn bodies_that_do_not_parse_get_400() -> Result<()> {
    let acme = Acme::start().await?;
    let client = acme.client.clone();
    // Bodies that do not parse.
    check_status(
        "malformed JSON",
        raw(
            &client,
            "POST",
            CLUSTERS,
            JSON,
            br#"{"apiVersion": "shoal.io/v1alpha1", "kind": "#.to_vec(),
        )
        .await?,
        expect(400, "BadRequest"),
    )?;
    check_status(
        "malformed YAML",
        raw(
            &client,
            "POST",
            CLUSTERS,
            "application/yaml",
            b"kind: Cluster\nmetadata: {name: [unclosed\n  - : :\n".to_vec(),
        )
        .await?,
        expect(400, "BadRequest"),
    )?;
    acme.check_nothing_lost(&["demo"]).await
}

#[tokio::test]
async fn invalid_objects_get_a_status_naming_the_field() -> Result<()> {
    let acme = Acme::start().await?;
    let client = acme.client.clone();
    // Objects that parse but are invalid, field by field.
    let cases: Vec<(&str, Value, Expect<'_>)> = vec![
        (
            "unknown spec field",
            cluster_with("c1", "/spec/controlPlane/colour", json!("blue"))?,
            invalid("spec.controlPlane.colour"),
        ),
        (
            "unknown top-level field",
            cluster_with("c2", "/colour", json!("blue"))?,
            invalid("colour"),
        ),
        (
            "invalid name",
            cluster("Bad_Name"),
            invalid("metadata.name"),
        ),
        (
            "invalid quantity",
            cluster_with("c3", "/spec/controlPlane/memory", json!("2GB"))?,
            invalid("spec.controlPlane.memory"),
        ),
        (
            "two control-plane replicas",
            cluster_with("c4", "/spec/controlPlane/replicas", json!(2))?,
            invalid("spec.controlPlane.replicas"),
        ),
        (
            "bad pod CIDR",
            cluster_with("c5", "/spec/network/podCidr", json!("10.0.0.1/8"))?,
            invalid("spec.network.podCidr"),
        ),
        (
            "invalid label value",
            cluster_with(
                "c6",
                "/metadata/labels",
                json!({"team": "not a valid value!"}),
            )?,
            invalid("metadata.labels"),
        ),
        (
            "kind differs from the URL",
            cluster_with("c7", "/kind", json!("NodePool"))?,
            expect(400, "BadRequest"),
        ),
        (
            "wrong apiVersion",
            cluster_with("c8", "/apiVersion", json!("shoal.io/v1"))?,
            expect(400, "BadRequest"),
        ),
        (
            "namespace differs from the URL",
            cluster_with("c9", "/metadata/namespace", json!("org-beta"))?,
            expect(400, "BadRequest"),
        ),
        (
            "duplicate create",
            cluster("demo"),
            expect(409, "AlreadyExists"),
        ),
        (
            "a Release that does not exist",
            cluster_with("c11", "/spec/release", json!("no-such-release"))?,
            invalid("spec.release"),
        ),
        (
            "an OIDC issuer over plain http",
            cluster_with(
                "c12",
                "/spec/oidc",
                json!({"issuerUrl": "http://login.example.com", "clientId": "k"}),
            )?,
            invalid("spec.oidc.issuerUrl"),
        ),
        (
            "an OIDC client ID that is empty",
            cluster_with(
                "c13",
                "/spec/oidc",
                json!({"issuerUrl": "https://login.example.com", "clientId": ""}),
            )?,
            invalid("spec.oidc.clientId"),
        ),
        (
            "an OIDC claim with a newline",
            cluster_with(
                "c14",
                "/spec/oidc",
                json!({"issuerUrl": "https://login.example.com", "clientId": "k",
                       "groupsClaim": "groups\n- evil"}),
            )?,
            invalid("spec.oidc.groupsClaim"),
        ),
        (
            "an OIDC CA that is not PEM",
            cluster_with(
                "c15",
                "/spec/oidc",
                json!({"issuerUrl": "https://login.example.com", "clientId": "k",
                       "certificateAuthority": "MIIB..."}),
            )?,
            invalid("spec.oidc.certificateAuthority"),
        ),
    ];
    for (case, body, want) in cases {
        check_status(case, post(&client, &body).await?, want)?;
    }
    check_status(
        "namespace that does not exist",
        raw(
            &client,
            "POST",
            "/apis/shoal.io/v1alpha1/namespaces/org-nope/clusters",
            JSON,
            serde_json::to_vec(&cluster_with(
                "c10",
                "/metadata/namespace",
                json!("org-nope"),
            )?)?,
        )
        .await?,
        expect(404, "NotFound"),
    )?;
    acme.check_nothing_lost(&["demo"]).await
}

#[tokio::test]
async fn unsupported_content_types_and_oversized_bodies_are_refused() -> Result<()> {
    let acme = Acme::start().await?;
    let client = acme.client.clone();
    let demo = format!("{CLUSTERS}/demo");
    // Content types and sizes.
    check_status(
        "protobuf body",
        raw(
            &client,
            "POST",
            CLUSTERS,
            "application/vnd.kubernetes.protobuf",
            b"k8s\x00\x0a\x04".to_vec(),
        )
        .await?,
        expect(415, "UnsupportedMediaType"),
    )?;
    let mut huge = cluster("huge");
    huge["metadata"]["annotations"] =
        json!({"e2e.shoal.io/padding": "x".repeat(3 * 1024 * 1024 + 16)});
    check_status(
        "body over 3 MiB",
        post(&client, &huge).await?,
        expect(413, "RequestEntityTooLarge"),
    )?;
    // Far over the limit: still an answer, not a reset connection.
    huge["metadata"]["annotations"] = json!({"e2e.shoal.io/padding": "x".repeat(20 * 1024 * 1024)});
    check_status(
        "body of 20 MiB",
        post(&client, &huge).await?,
        expect(413, "RequestEntityTooLarge"),
    )?;
    check_status(
        "server-side apply",
        raw(
            &client,
            "PATCH",
            &demo,
            "application/apply-patch+yaml",
            b"spec:\n  release: test-2\n".to_vec(),
        )
        .await?,
        expect(415, "UnsupportedMediaType"),
    )?;
    check_status(
        "strategic merge patch on a Cluster",
        raw(
            &client,
            "PATCH",
            &demo,
            "application/strategic-merge-patch+json",
            br#"{"spec":{"release":"test-2"}}"#.to_vec(),
        )
        .await?,
        expect(415, "UnsupportedMediaType"),
    )?;
    acme.check_nothing_lost(&["demo"]).await
}

#[tokio::test]
async fn a_put_with_a_stale_resource_version_gets_409_and_changes_nothing() -> Result<()> {
    let acme = Acme::start().await?;
    let client = acme.client.clone();
    let victim = acme.victim().await?;
    // Optimistic concurrency: a PUT with a resourceVersion that is no longer current.
    let mut stale = victim.clone();
    stale["metadata"]["labels"] = json!({"step": "stale"});
    check_status(
        "stale resourceVersion on PUT",
        raw(
            &client,
            "PUT",
            &format!("{CLUSTERS}/victim"),
            JSON,
            serde_json::to_vec(&stale)?,
        )
        .await?,
        expect(409, "Conflict"),
    )?;
    let (_, now) = raw(&client, "GET", &format!("{CLUSTERS}/victim"), JSON, vec![]).await?;
    ensure!(
        now["metadata"]["labels"]["step"] == "one",
        "the stale PUT changed victim: {now}"
    );
    acme.check_nothing_lost(&["demo", "victim"]).await
}

#[tokio::test]
async fn odd_bodies_and_verbs_are_refused_cleanly_and_change_nothing() -> Result<()> {
    let acme = Acme::start().await?;
    let client = acme.client.clone();
    let victim = acme.victim().await?;
    // More bodies that must be refused cleanly, on every write verb.
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let alias_bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\ni: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n";
    let long_name = "a".repeat(300);
    let victim_path = format!("{CLUSTERS}/victim");
    let raw_cases: Vec<RawCase<'_>> = vec![
        (
            "empty body",
            "POST",
            CLUSTERS.to_owned(),
            JSON,
            vec![],
            expect(400, "BadRequest"),
        ),
        (
            "JSON null",
            "POST",
            CLUSTERS.to_owned(),
            JSON,
            b"null".to_vec(),
            expect(422, "Invalid"),
        ),
        (
            "JSON array",
            "POST",
            CLUSTERS.to_owned(),
            JSON,
            b"[1,2]".to_vec(),
            expect(422, "Invalid"),
        ),
        (
            "YAML list",
            "POST",
            CLUSTERS.to_owned(),
            "application/yaml",
            b"- a\n- b\n".to_vec(),
            expect(422, "Invalid"),
        ),
        (
            "metadata that is not an object",
            "POST",
            CLUSTERS.to_owned(),
            JSON,
            br#"{"apiVersion":"shoal.io/v1alpha1","kind":"Cluster","metadata":[1]}"#.to_vec(),
            invalid("metadata"),
        ),
        (
            "JSON array on PUT",
            "PUT",
            victim_path.clone(),
            JSON,
            b"[1,2]".to_vec(),
            expect(422, "Invalid"),
        ),
        (
            "a number on PUT of /status",
            "PUT",
            format!("{victim_path}/status"),
            JSON,
            b"1".to_vec(),
            expect(422, "Invalid"),
        ),
        (
            "merge patch that is an array",
            "PATCH",
            victim_path.clone(),
            "application/merge-patch+json",
            b"[1,2]".to_vec(),
            expect(422, "Invalid"),
        ),
        (
            "merge patch that is a number",
            "PATCH",
            victim_path.clone(),
            "application/merge-patch+json",
            b"1".to_vec(),
            expect(422, "Invalid"),
        ),
        (
            "merge patch that is a string, on /status",
            "PATCH",
            format!("{victim_path}/status"),
            "application/merge-patch+json",
            br#""x""#.to_vec(),
            expect(422, "Invalid"),
        ),
        (
            "JSON patch replacing the whole object with a number",
            "PATCH",
            victim_path.clone(),
            "application/json-patch+json",
            br#"[{"op":"replace","path":"","value":1}]"#.to_vec(),
            expect(422, "Invalid"),
        ),
        (
            "merge patch making metadata a list",
            "PATCH",
            victim_path.clone(),
            "application/merge-patch+json",
            br#"{"metadata":[1]}"#.to_vec(),
            invalid("metadata"),
        ),
        (
            "not UTF-8",
            "POST",
            CLUSTERS.to_owned(),
            JSON,
            vec![0xff, 0xfe, b'{', 0x80],
            expect(400, "BadRequest"),
        ),
        (
            "deeply nested JSON",
            "POST",
            CLUSTERS.to_owned(),
            JSON,
            deep_json.into_bytes(),
            expect(400, "BadRequest"),
        ),
        (
            "YAML alias bomb",
            "POST",
            CLUSTERS.to_owned(),
            "application/yaml",
            alias_bomb.as_bytes().to_vec(),
            expect(400, "BadRequest"),
        ),
        (
            "text/plain body",
            "POST",
            CLUSTERS.to_owned(),
            "text/plain",
            b"hello".to_vec(),
            expect(415, "UnsupportedMediaType"),
        ),
        (
            "name too long",
            "POST",
            CLUSTERS.to_owned(),
            JSON,
            serde_json::to_vec(&cluster(&long_name))?,
            invalid("metadata.name"),
        ),
        (
            "no name",
            "POST",
            CLUSTERS.to_owned(),
            JSON,
            serde_json::to_vec(&cluster_with("x", "/metadata/name", Value::Null)?)?,
            invalid("metadata.name"),
        ),
        (
            "no spec",
            "POST",
            CLUSTERS.to_owned(),
            JSON,
            br#"{"apiVersion":"shoal.io/v1alpha1","kind":"Cluster","metadata":{"name":"nospec"}}"#
                .to_vec(),
            invalid("spec"),
        ),
        (
            "malformed JSON on PUT",
            "PUT",
            victim_path.clone(),
            JSON,
            b"{not json".to_vec(),
            expect(400, "BadRequest"),
        ),
        (
            "name differs on PUT",
            "PUT",
            victim_path.clone(),
            JSON,
            serde_json::to_vec(&cluster("other"))?,
            expect(400, "BadRequest"),
        ),
        (
            "invalid quantity on PUT",
            "PUT",
            victim_path.clone(),
            JSON,
            serde_json::to_vec(&cluster_with(
                "victim",
                "/spec/controlPlane/memory",
                json!("lots"),
            )?)?,
            invalid("spec.controlPlane.memory"),
        ),
        (
            "malformed merge patch",
            "PATCH",
            victim_path.clone(),
            "application/merge-patch+json",
            b"{oops".to_vec(),
            expect(400, "BadRequest"),
        ),
        (
            "merge patch to an invalid object",
            "PATCH",
            victim_path.clone(),
            "application/merge-patch+json",
            br#"{"spec":{"controlPlane":{"replicas":2}}}"#.to_vec(),
            invalid("spec.controlPlane.replicas"),
        ),
        (
            "merge patch with an unknown field",
            "PATCH",
            victim_path.clone(),
            "application/merge-patch+json",
            br#"{"spec":{"colour":"blue"}}"#.to_vec(),
            invalid("spec.colour"),
        ),
        (
            "JSON patch that is not a list of operations",
            "PATCH",
            victim_path.clone(),
            "application/json-patch+json",
            br#"{"op":"add"}"#.to_vec(),
            expect(400, "BadRequest"),
        ),
        (
            "JSON patch to an invalid object",
            "PATCH",
            victim_path.clone(),
            "application/json-patch+json",
            br#"[{"op":"replace","path":"/spec/controlPlane/cpu","value":"many"}]"#.to_vec(),
            invalid("spec.controlPlane.cpu"),
        ),
        (
            "JSON patch on a missing path",
            "PATCH",
            victim_path.clone(),
            "application/json-patch+json",
            br#"[{"op":"replace","path":"/spec/nothing/here","value":1}]"#.to_vec(),
            expect(422, "Invalid"),
        ),
        (
            "patch without a content type",
            "PATCH",
            victim_path.clone(),
            "",
            br#"{"spec":{}}"#.to_vec(),
            expect(415, "UnsupportedMediaType"),
        ),
        (
            "PATCH a missing object",
            "PATCH",
            format!("{CLUSTERS}/ghost"),
            "application/merge-patch+json",
            b"{}".to_vec(),
            expect(404, "NotFound"),
        ),
        (
            "DELETE a missing object",
            "DELETE",
            format!("{CLUSTERS}/ghost"),
            JSON,
            vec![],
            expect(404, "NotFound"),
        ),
        (
            "DELETE with a stale precondition",
            "DELETE",
            victim_path.clone(),
            JSON,
            serde_json::to_vec(
                &json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": victim["metadata"]["resourceVersion"]}}),
            )?,
            expect(409, "Conflict"),
        ),
        (
            "PUT on a collection",
            "PUT",
            CLUSTERS.to_owned(),
            JSON,
            b"{}".to_vec(),
            expect(405, "MethodNotAllowed"),
        ),
        (
            "POST to a named object",
            "POST",
            victim_path.clone(),
            JSON,
            b"{}".to_vec(),
            expect(405, "MethodNotAllowed"),
        ),
        (
            "unknown subresource",
            "GET",
            format!("{victim_path}/scale"),
            JSON,
            vec![],
            expect(404, "NotFound"),
        ),
        (
            "bad resourceVersion on a watch",
            "GET",
            format!("{CLUSTERS}?watch=true&resourceVersion=abc"),
            JSON,
            vec![],
            expect(400, "BadRequest"),
        ),
        (
            "bad continue token",
            "GET",
            format!("{CLUSTERS}?limit=1&continue=garbage!"),
            JSON,
            vec![],
            expect(400, "BadRequest"),
        ),
    ];
    for (case, method, path, ct, body, want) in raw_cases {
        check_status(case, raw(&client, method, &path, ct, body).await?, want)?;
    }
    let (_, now) = raw(&client, "GET", &victim_path, JSON, vec![]).await?;
    ensure!(
        now["metadata"]["labels"]["step"] == "one" && now["spec"] == victim["spec"],
        "a refused write changed victim: {now}"
    );
    acme.check_nothing_lost(&["demo", "victim"]).await
}

#[tokio::test]
async fn unknown_paths_and_bad_queries_get_a_status() -> Result<()> {
    let acme = Acme::start().await?;
    let client = acme.client.clone();
    // Paths and queries.
    check_status(
        "unknown resource",
        raw(
            &client,
            "GET",
            "/apis/shoal.io/v1alpha1/widgets",
            JSON,
            vec![],
        )
        .await?,
        expect(404, "NotFound"),
    )?;
    check_status(
        "unknown resource, namespaced",
        raw(
            &client,
            "POST",
            "/apis/shoal.io/v1alpha1/namespaces/org-acme/widgets",
            JSON,
            b"{}".to_vec(),
        )
        .await?,
        expect(404, "NotFound"),
    )?;
    for (case, query) in [
        ("bad label selector", "labelSelector=team+in+(a"),
        (
            "bad label selector operator",
            "labelSelector=team%3D%3D%3Da",
        ),
        ("bad field selector", "fieldSelector=spec.colour%3Dblue"),
        ("limit=abc", "limit=abc"),
        ("negative limit", "limit=-1"),
    ] {
        check_status(
            case,
            raw(&client, "GET", &format!("{CLUSTERS}?{query}"), JSON, vec![]).await?,
            expect(400, "BadRequest"),
        )?;
    }
    acme.check_nothing_lost(&["demo"]).await
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401() -> Result<()> {
    let acme = Acme::start().await?;
    let demo = format!("{CLUSTERS}/demo");
    let tmp = tempfile::tempdir()?;
    // Authentication.
    let anonymous = client_with_token(&acme.server, tmp.path(), None).await?;
    check_status(
        "no token",
        raw(&anonymous, "GET", CLUSTERS, JSON, vec![]).await?,
        expect(401, "Unauthorized"),
    )?;
    let forged = client_with_token(
        &acme.server,
        tmp.path(),
        Some("shoal.admin.0000000000000000000000000000000000000000"),
    )
    .await?;
    check_status(
        "wrong token",
        raw(&forged, "GET", CLUSTERS, JSON, vec![]).await?,
        expect(401, "Unauthorized"),
    )?;
    let garbage = client_with_token(&acme.server, tmp.path(), Some("not-a-shoal-token")).await?;
    check_status(
        "garbage token",
        raw(&garbage, "GET", &demo, JSON, vec![]).await?,
        expect(401, "Unauthorized"),
    )?;
    check_status(
        "wrong token on a write",
        raw(&forged, "DELETE", &demo, JSON, vec![]).await?,
        expect(401, "Unauthorized"),
    )?;
    acme.check_nothing_lost(&["demo"]).await
}
