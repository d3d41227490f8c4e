//! The management API with OIDC single sign-on, against a real OIDC provider
//! (npm `oidc-provider`, started by scripts/oidc-provider.sh) whose login forms
//! are submitted as a browser would: organization roles from group membership,
//! 401 with the reason for every kind of bad token, key rotation without a
//! restart, an https issuer trusted through --oidc-ca-file, and the audit log.

use anyhow::{ensure, Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use shoal_e2e::oidc::{OidcProvider, ProviderOptions, SignWith, TestUser};
use shoal_e2e::{client_for, ensure_release, kubeconfig_with_token, raw, ServerProc};

const JSON: &str = "application/json";
const GV: &str = "/apis/shoal.io/v1alpha1";

/// A server trusting `provider`, with the organizations acme (group
/// platform-team: owner) and beta (group app-team: member).
async fn server_for(provider: &OidcProvider) -> Result<ServerProc> {
    let mut args = vec![
        "--controllers=false".to_owned(),
        format!("--oidc-issuer-url={}", provider.issuer()),
        format!("--oidc-client-id={}", OidcProvider::CLIENT_ID),
        "--oidc-username-claim=email".to_owned(),
        "--oidc-admin-group=shoal-admins".to_owned(),
    ];
    if let Some(ca) = provider.ca_file() {
        args.push(format!("--oidc-ca-file={}", ca.display()));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProc::start_with(&refs)?;
    let admin = server.client().await?;
    ensure_release(&admin, "test-1").await?;
    for (org, group, role) in [
        ("acme", "platform-team", "owner"),
        ("beta", "app-team", "member"),
    ] {
        let body = json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Organization",
            "metadata": {"name": org},
            "spec": {"members": [{"group": group, "role": role}]},
        });
        let (code, resp) = raw(
            &admin,
            "POST",
            &format!("{GV}/organizations"),
            JSON,
            serde_json::to_vec(&body)?,
        )
        .await?;
        ensure!(code == 201, "creating organization {org}: {code} {resp}");
    }
    // The organization controller is off: make the namespaces as an admin would.
    for ns in ["org-acme", "org-beta"] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let (code, resp) = raw(
            &admin,
            "POST",
            "/api/v1/namespaces",
            JSON,
            serde_json::to_vec(&body)?,
        )
        .await?;
        ensure!(
            code == 201 || code == 409,
            "creating namespace {ns}: {code} {resp}"
        );
    }
    Ok(server)
}

/// The status and body of `method path` with `token` as the bearer token.
async fn call(
    server: &ServerProc,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let dir = tempfile::tempdir()?;
    let kc = dir.path().join("kubeconfig");
    kubeconfig_with_token(&server.kubeconfig(), token, &kc)?;
    let client = client_for(&kc).await?;
    let bytes = body
        .map(|b| serde_json::to_vec(&b))
        .transpose()?
        .unwrap_or_default();
    raw(&client, method, path, JSON, bytes).await
}

fn cluster(name: &str, ns: &str) -> Value {
    json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
    })
}

fn message(body: &Value) -> String {
    body["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn group_members_work_in_their_organization_and_nowhere_else() -> Result<()> {
    let mut opts = ProviderOptions::default();
    opts.users.push(TestUser {
        username: "dana".into(),
        password: "dana-pw".into(),
        email: "dana@example.com".into(),
        groups: vec!["shoal-admins".into()],
    });
    let provider = OidcProvider::start(opts).await?;
    let server = server_for(&provider).await?;
    let alice = provider.login("alice").await?.id_token;
    let bob = provider.login("bob").await?.id_token;
    let carol = provider.login("carol").await?.id_token;

    // alice is in platform-team: owner of acme.
    let (code, body) = call(
        &server,
        &alice,
        "POST",
        &format!("{GV}/namespaces/org-acme/clusters"),
        Some(cluster("web", "org-acme")),
    )
    .await?;
    ensure!(code == 201, "alice creates in acme: {code} {body}");
    let (code, body) = call(
        &server,
        &alice,
        "GET",
        &format!("{GV}/namespaces/org-beta/clusters"),
        None,
    )
    .await?;
    ensure!(code == 403, "alice in beta: {code} {body}");
    ensure!(
        message(&body).contains("alice@example.com") && message(&body).contains("org-beta"),
        "{body}"
    );
    let dir = tempfile::tempdir()?;
    let kc = dir.path().join("alice");
    kubeconfig_with_token(&server.kubeconfig(), &alice, &kc)?;
    let display = json!({"spec": {"displayName": "Acme"}});
    let (code, body) = raw(
        &client_for(&kc).await?,
        "PATCH",
        &format!("{GV}/organizations/acme"),
        "application/merge-patch+json",
        serde_json::to_vec(&display)?,
    )
    .await?;
    ensure!(
        code == 200,
        "owners may change their organization: {code} {body}"
    );

    // bob is in app-team: member of beta, not of acme.
    let (code, body) = call(
        &server,
        &bob,
        "GET",
        &format!("{GV}/namespaces/org-beta/clusters"),
        None,
    )
    .await?;
    ensure!(code == 200, "bob lists beta: {code} {body}");
    let (code, body) = call(
        &server,
        &bob,
        "GET",
        &format!("{GV}/namespaces/org-acme/clusters/web"),
        None,
    )
    .await?;
    ensure!(code == 403, "bob reads acme: {code} {body}");

    // carol is in no group: signed in, and refused with the way out.
    let (code, body) = call(
        &server,
        &carol,
        "GET",
        &format!("{GV}/namespaces/org-beta/clusters"),
        None,
    )
    .await?;
    ensure!(code == 403, "carol: {code} {body}");
    ensure!(
        message(&body).contains("belong to no organization"),
        "{body}"
    );

    // Roles are recomputed on every request: adding carol by name to beta lets her
    // token in at once, with the same token.
    let admin = server.client().await?;
    let patch = json!({"spec": {"members": [{"group": "app-team", "role": "member"}, {"name": "carol@example.com", "role": "viewer"}]}});
    let (code, body) = raw(
        &admin,
        "PATCH",
        &format!("{GV}/organizations/beta"),
        "application/merge-patch+json",
        serde_json::to_vec(&patch)?,
    )
    .await?;
    ensure!(code == 200, "adding carol: {code} {body}");
    let (code, body) = call(
        &server,
        &carol,
        "GET",
        &format!("{GV}/namespaces/org-beta/clusters"),
        None,
    )
    .await?;
    ensure!(code == 200, "carol after being added: {code} {body}");
    let (code, body) = call(
        &server,
        &carol,
        "POST",
        &format!("{GV}/namespaces/org-beta/clusters"),
        Some(cluster("db", "org-beta")),
    )
    .await?;
    ensure!(
        code == 403 && message(&body).contains("viewers may only read"),
        "a viewer writes: {code} {body}"
    );

    // dana's group is an admin group: she sees every organization's clusters.
    let dana = provider.login("dana").await?.id_token;
    let (code, body) = call(&server, &dana, "GET", &format!("{GV}/clusters"), None).await?;
    ensure!(
        code == 200
            && body["items"]
                .as_array()
                .is_some_and(|i| i.iter().any(|c| c["metadata"]["name"] == "web")),
        "an admin group member lists all clusters: {code} {body}"
    );

    // The audit log has every request of alice with the issuer, subject and
    // groups, and a search finds them; alice, an owner, may search acme only.
    let out = server.shoal_ok(&["audit", "--user", "alice@example.com", "-o", "json"])?;
    let found: Value = serde_json::from_str(&out)?;
    let items = found["items"].as_array().context("items")?;
    ensure!(items.len() >= 3, "alice's requests in the audit log: {out}");
    for rec in items {
        ensure!(
            rec["issuer"] == provider.issuer() && rec["groups"] == json!(["platform-team"]),
            "{rec}"
        );
        ensure!(
            rec["subject"].as_str().is_some_and(|s| !s.is_empty()),
            "{rec}"
        );
    }
    ensure!(
        items
            .iter()
            .any(|r| r["verb"] == "list" && r["code"] == 403),
        "the refused read is audited: {out}"
    );
    let (code, body) = call(
        &server,
        &alice,
        "GET",
        "/shoal/v1/audit?org=acme&since=1h",
        None,
    )
    .await?;
    ensure!(
        code == 200 && body["items"].as_array().is_some_and(|i| !i.is_empty()),
        "alice searches acme: {code} {body}"
    );
    let (code, body) = call(&server, &alice, "GET", "/shoal/v1/audit?org=beta", None).await?;
    ensure!(code == 403, "alice searches beta: {code} {body}");
    let (code, body) = call(&server, &bob, "GET", "/shoal/v1/audit?org=beta", None).await?;
    ensure!(
        code == 403 && message(&body).contains("owners"),
        "a member searches: {code} {body}"
    );
    let (code, body) = call(
        &server,
        &alice,
        "GET",
        "/shoal/v1/audit?since=yesterday&org=acme",
        None,
    )
    .await?;
    ensure!(
        code == 400 && message(&body).contains("since"),
        "a bad since: {code} {body}"
    );
    Ok(())
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims as the provider would issue them for alice, `exp` one hour ahead.
fn claims(provider: &OidcProvider) -> Value {
    json!({
        "iss": provider.issuer(), "aud": OidcProvider::CLIENT_ID, "sub": "alice",
        "email": "alice@example.com", "email_verified": true, "groups": ["platform-team"],
        "iat": now(), "exp": now() + 3600,
    })
}

#[tokio::test]
async fn bad_tokens_get_401_with_the_reason_and_are_never_logged() -> Result<()> {
    let provider = OidcProvider::start(ProviderOptions::default()).await?;
    let server = server_for(&provider).await?;
    let path = format!("{GV}/namespaces/org-acme/clusters");

    // The control: a token signed by the provider's key with these claims works.
    let good = provider.sign(claims(&provider), SignWith::Current).await?;
    let (code, body) = call(&server, &good, "GET", &path, None).await?;
    ensure!(code == 200, "a well-formed signed token: {code} {body}");

    let mut expired = claims(&provider);
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    let mut wrong_issuer = claims(&provider);
    wrong_issuer["iss"] = json!("https://issuer.invalid");
    let mut not_yet = claims(&provider);
    not_yet["nbf"] = json!(now() + 3600);
    // One character in the middle of the signature: the last one may carry only
    // padding bits, and changing those alone is a base64 error, not a bad signature.
    let sig_start = good.rfind('.').context("a signature")? + 1;
    let at = sig_start + (good.len() - sig_start) / 2;
    let mut tampered = good.clone().into_bytes();
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered)?;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(good.split('.').next().context("a header")?)?,
    )?;
    ensure!(
        header["kid"].is_string(),
        "the provider's tokens carry a kid: {header}"
    );
    let mut forged_body = claims(&provider);
    forged_body["groups"] = json!(["admins"]);
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&forged_body)
    );
    let other_client = provider
        .login_for_client(OidcProvider::OTHER_CLIENT_ID, "alice")
        .await?
        .id_token;

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            provider.sign(expired, SignWith::Current).await?,
            "expired",
        ),
        ("wrong audience", other_client, "another client"),
        (
            "wrong issuer",
            provider.sign(wrong_issuer, SignWith::Current).await?,
            "not trusted",
        ),
        (
            "not valid yet",
            provider.sign(not_yet, SignWith::Current).await?,
            "not valid yet",
        ),
        ("bad signature", tampered, "signature"),
        ("alg none", alg_none, "algorithm \"none\""),
        (
            "unknown kid",
            provider.sign(claims(&provider), SignWith::Foreign).await?,
            "does not publish",
        ),
    ];
    for (what, token, reason) in &cases {
        let (code, body) = call(&server, token, "GET", &path, None).await?;
        ensure!(code == 401, "{what}: {code} {body}");
        ensure!(
            body["reason"] == "Unauthorized" && message(&body).contains(reason),
            "{what}: {body}"
        );
    }
    let logs = format!(
        "{}{}",
        server.log_text(),
        std::fs::read_to_string(server.data_dir.join("audit.log")).unwrap_or_default()
    );
    for (what, token, _) in cases.iter().chain([("good", good.clone(), "")].iter()) {
        let signature = token.rsplit('.').next().unwrap_or_default();
        ensure!(
            signature.is_empty() || !logs.contains(signature),
            "the {what} token's signature is in the logs"
        );
        ensure!(
            !logs.contains(token.as_str()),
            "the {what} token is in the logs"
        );
    }
    Ok(())
}

#[tokio::test]
async fn rotated_keys_are_fetched_without_a_restart() -> Result<()> {
    let provider = OidcProvider::start(ProviderOptions::default()).await?;
    let server = server_for(&provider).await?;
    let path = format!("{GV}/namespaces/org-acme/clusters");
    let before = provider.login("alice").await?.id_token;
    let (code, body) = call(&server, &before, "GET", &path, None).await?;
    ensure!(code == 200, "before rotation: {code} {body}");

    let kid = provider.rotate_keys().await?;
    let after = provider.login("alice").await?.id_token;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(after.split('.').next().context("a header")?)?,
    )?;
    ensure!(
        header["kid"] == kid.as_str(),
        "the new token is signed with the new key: {header}"
    );
    // A second apart: the server fetches keys at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, body) = call(&server, &after, "GET", &path, None).await?;
    ensure!(
        code == 200,
        "a token signed with the rotated key: {code} {body}"
    );
    // The old key is gone from the provider's JWKS, so its tokens are refused now.
    let (code, body) = call(&server, &before, "GET", &path, None).await?;
    ensure!(
        code == 401 && message(&body).contains("does not publish"),
        "a token of the retired key: {code} {body}"
    );
    Ok(())
}

#[tokio::test]
async fn an_https_issuer_is_trusted_through_its_ca_file() -> Result<()> {
    let provider = OidcProvider::start(ProviderOptions {
        tls: true,
        ..ProviderOptions::default()
    })
    .await?;
    ensure!(
        provider.issuer().starts_with("https://"),
        "{}",
        provider.issuer()
    );
    let server = server_for(&provider).await?;
    let token = provider.login("bob").await?.id_token;
    let (code, body) = call(
        &server,
        &token,
        "GET",
        &format!("{GV}/namespaces/org-beta/clusters"),
        None,
    )
    .await?;
    ensure!(code == 200, "bob through an https issuer: {code} {body}");

    // Without the CA the issuer's certificate is not trusted: 503, the token may be fine.
    let plain = ServerProc::start_with(&[
        "--controllers=false",
        &format!("--oidc-issuer-url={}", provider.issuer()),
        "--oidc-client-id=shoal",
    ])?;
    // Plain HTTP rather than kube-rs, which retries a 503 with backoff for minutes.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
            plain.data_dir.join("tls/ca.crt"),
        )?)?)
        .build()?;
    let resp = http
        .get(format!("{}/api/v1/namespaces", plain.url()))
        .bearer_auth(&token)
        .send()
        .await?;
    let code = resp.status().as_u16();
    let body: Value = resp.json().await?;
    ensure!(
        code == 503
            && message(&body).contains("signing keys")
            && message(&body).contains("certificate"),
        "an untrusted issuer certificate: {code} {body}"
    );
    Ok(())
}

#[tokio::test]
async fn a_server_without_issuers_refuses_id_tokens_and_bad_flags_are_refused() -> Result<()> {
    let provider = OidcProvider::start(ProviderOptions::default()).await?;
    let server = ServerProc::start_with(&["--controllers=false"])?;
    let token = provider.login("alice").await?.id_token;
    let (code, body) = call(&server, &token, "GET", "/api/v1/namespaces", None).await?;
    ensure!(
        code == 401 && message(&body).contains("--oidc-issuer-url"),
        "{code} {body}"
    );

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("issuers.yaml");
    std::fs::write(
        &file,
        "issuers:\n- issuerURL: https://a.example\n  clientID: shoal\n  colour: blue\n",
    )?;
    let issuers_file = format!("--oidc-issuers-file={}", file.display());
    for (i, (flags, expect)) in [
        (
            vec![
                "--oidc-issuer-url=http://issuer.example",
                "--oidc-client-id=x",
            ],
            "https://",
        ),
        (
            vec!["--oidc-issuer-url=https://issuer.example"],
            "--oidc-client-id",
        ),
        (vec![issuers_file.as_str()], "colour"),
    ]
    .into_iter()
    .enumerate()
    {
        // `timeout`: a server that wrongly accepted the flags would serve forever.
        let out = std::process::Command::new("timeout")
            .arg("60")
            .arg(shoal_e2e::shoal_bin()?)
            .args([
                "server",
                "--local-agent=false",
                "--controllers=false",
                "--listen",
            ])
            .arg(format!("127.0.0.1:{}", shoal_e2e::free_port()?))
            .arg("--data-dir")
            .arg(dir.path().join(format!("data{i}")))
            .args(flags.iter())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code().is_some_and(|c| c != 0 && c != 124) && err.contains(expect),
            "{flags:?} ({:?}): {err}",
            out.status
        );
    }
    Ok(())
}
