//! The web UI at `/ui` of a real `shoal server`: token sign-in and sign-out, and
//! the clusters page as each token sees it, over HTTPS with a cookie jar.

use anyhow::{bail, ensure, Context, Result};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shoal_e2e::fixtures::{create_active_release, create_cluster, create_org, https_trusting};
use shoal_e2e::oidc::UiWithProvider;
use shoal_e2e::{raw, token_of, ServerProc};

const GV: &str = "/apis/shoal.io/v1alpha1";

/// A browser-like client: it trusts the server's CA, keeps cookies and does not
/// follow redirects, so each 303 can be checked.
fn browser(server: &ServerProc) -> Result<reqwest::Client> {
    Ok(https_trusting(&server.kubeconfig())?
        .cookie_store(true)
        .redirect(Policy::none())
        .build()?)
}

fn location(resp: &reqwest::Response) -> &str {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn sign_in(ui: &reqwest::Client, base: &str, token: &str) -> Result<reqwest::Response> {
    Ok(ui
        .post(format!("{base}/ui/sign-in"))
        .form(&[("token", token)])
        .send()
        .await?)
}

async fn page(ui: &reqwest::Client, url: &str) -> Result<(StatusCode, String)> {
    let resp = ui.get(url).send().await?;
    Ok((resp.status(), resp.text().await?))
}

/// GETs `url` and checks its status, the snippets the page must contain and those
/// it must not; the failure names the first check that failed, with the page.
async fn expect_page(
    ui: &reqwest::Client,
    url: &str,
    want: StatusCode,
    has: &[&str],
    lacks: &[&str],
) -> Result<String> {
    let (code, html) = page(ui, url).await?;
    ensure!(code == want, "{url}: {code}, want {want}\n{html}");
    if let Some(missing) = has.iter().find(|h| !html.contains(**h)) {
        bail!("{url} lacks {missing}:\n{html}");
    }
    if let Some(present) = lacks.iter().find(|l| html.contains(**l)) {
        bail!("{url} shows {present}:\n{html}");
    }
    Ok(html)
}

fn create_token(server: &ServerProc, org: &str, role: &str) -> Result<String> {
    let out = server.shoal_ok(&["token", "create", "--org", org, "--role", role])?;
    Ok(out
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with("shoal."))
        .context("no token in `shoal token create` output")?
        .to_owned())
}

#[tokio::test]
async fn token_sign_in_and_clusters_per_organization() -> Result<()> {
    let server = ServerProc::start_with(&["--controllers=false"])?;
    let base = server.url();
    let admin = server.client().await?;
    for org in ["acme", "beta"] {
        create_org(&admin, org).await?;
    }
    shoal_e2e::ensure_release(&admin, "test-1").await?;
    create_cluster(&admin, "org-acme", "alpha-one", "test-1").await?;
    create_cluster(&admin, "org-beta", "beta-one", "test-1").await?;

    // Signed out: every page leads to the sign-in form, which labels its field.
    let ui = browser(&server)?;
    let resp = ui.get(format!("{base}/ui")).send().await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER && location(&resp) == "/ui/sign-in",
        "/ui signed out: {} -> {}",
        resp.status(),
        location(&resp)
    );
    let resp = ui.get(format!("{base}/ui/clusters")).send().await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER && location(&resp) == "/ui/sign-in",
        "/ui/clusters signed out: {}",
        resp.status()
    );
    let (code, html) = page(&ui, &format!("{base}/ui/sign-in")).await?;
    ensure!(code == StatusCode::OK, "sign-in form: {code}");
    ensure!(
        html.contains(r#"<label for="token">"#) && html.contains(r#"id="token""#),
        "the token input has no label:\n{html}"
    );

    // A bad token gets the form again with the reason, and no cookie.
    let resp = sign_in(&ui, &base, "shoal.nosuchid.nosecret").await?;
    ensure!(
        resp.status() == StatusCode::UNAUTHORIZED,
        "bad token: {}",
        resp.status()
    );
    ensure!(
        resp.headers().get("set-cookie").is_none(),
        "a bad token set a cookie"
    );
    let html = resp.text().await?;
    ensure!(
        html.contains("did not accept this token") && html.contains(r#"aria-invalid="true""#),
        "bad-token page:\n{html}"
    );
    let resp = sign_in(&ui, &base, "a b;c").await?;
    ensure!(
        resp.status() == StatusCode::UNPROCESSABLE_ENTITY,
        "malformed token: {}",
        resp.status()
    );
    let resp = ui.get(format!("{base}/ui/clusters")).send().await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER,
        "still signed out after bad tokens: {}",
        resp.status()
    );

    // The admin token: a 303 to the clusters with a strict cookie; both clusters listed.
    let resp = sign_in(&ui, &base, &token_of(&server.kubeconfig())?).await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER && location(&resp) == "/ui/clusters",
        "admin sign-in: {} -> {}",
        resp.status(),
        location(&resp)
    );
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    for part in ["HttpOnly", "Secure", "SameSite=Strict"] {
        ensure!(cookie.contains(part), "cookie {cookie} lacks {part}");
    }
    let (code, html) = page(&ui, &format!("{base}/ui/clusters")).await?;
    ensure!(code == StatusCode::OK, "admin clusters: {code}\n{html}");
    for want in [
        r#"<td><a href="/ui/clusters/acme/alpha-one">alpha-one</a></td><td>acme</td><td>test-1</td>"#,
        r#"<td><a href="/ui/clusters/beta/beta-one">beta-one</a></td><td>beta</td><td>test-1</td>"#,
    ] {
        ensure!(
            html.contains(want),
            "admin clusters page lacks {want}:\n{html}"
        );
    }

    // The catalogue: releases for everyone, hosts for the administrator, the guide.
    let ok = StatusCode::OK;
    expect_page(
        &ui,
        &format!("{base}/ui/releases"),
        ok,
        &["<tr><td>test-1</td><td>"],
        &[],
    )
    .await?;
    let hosts = [
        "No hosts have registered",
        r#"href="/monitoring/prometheus/""#,
    ];
    expect_page(&ui, &format!("{base}/ui/hosts"), ok, &hosts, &[]).await?;
    let guide = ["shoal kubeconfig create", "kubectl --kubeconfig"];
    expect_page(&ui, &format!("{base}/ui/getting-started"), ok, &guide, &[]).await?;
    // Organizations: the admin adds a member to acme, sees it, and removes it; an
    // empty name is refused at the field.
    let orgs = [
        "<h2>acme</h2>",
        "<h2>beta</h2>",
        r#"<label for="who-acme">"#,
    ];
    expect_page(&ui, &format!("{base}/ui/organizations"), ok, &orgs, &[]).await?;
    let members = async || -> Result<Value> {
        let (_, v) = raw(
            &admin,
            "GET",
            &format!("{GV}/organizations/acme"),
            "application/json",
            Vec::new(),
        )
        .await?;
        Ok(v.pointer("/spec/members").cloned().unwrap_or(json!([])))
    };
    let add = format!("{base}/ui/organizations/acme/members");
    let resp = ui
        .post(&add)
        .form(&[("kind", "user"), ("who", " "), ("role", "member")])
        .send()
        .await?;
    let code = resp.status();
    let html = resp.text().await?;
    ensure!(
        code == StatusCode::UNPROCESSABLE_ENTITY && html.contains(r#"id="who-acme-error""#),
        "an empty member: {code}\n{html}"
    );
    let resp = ui
        .post(&add)
        .form(&[
            ("kind", "user"),
            ("who", "alice@example.com"),
            ("role", "member"),
        ])
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER,
        "adding a member: {} {}",
        resp.status(),
        resp.text().await?
    );
    ensure!(
        members().await? == json!([{"name": "alice@example.com", "role": "member"}]),
        "acme's members after the add: {}",
        members().await?
    );
    let (_, html) = page(&ui, &format!("{base}/ui/organizations")).await?;
    ensure!(
        html.contains("<td>alice@example.com</td><td>user</td><td>member</td>"),
        "the new member is not listed:\n{html}"
    );
    let resp = ui
        .post(format!("{add}/remove"))
        .form(&[("kind", "user"), ("who", "alice@example.com")])
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER,
        "removing: {}",
        resp.status()
    );
    ensure!(
        members().await? == json!([]),
        "acme's members after the removal: {}",
        members().await?
    );
    for path in [
        "/ui/organizations",
        "/ui/releases",
        "/ui/hosts",
        "/ui/getting-started",
    ] {
        ensure!(
            html.contains(&format!(r#"<a href="{path}">"#)),
            "the navigation lacks {path}:\n{html}"
        );
    }

    // Sign-out forgets the token.
    let resp = ui.post(format!("{base}/ui/sign-out")).send().await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER && location(&resp) == "/ui/sign-in",
        "sign-out: {}",
        resp.status()
    );
    let resp = ui.get(format!("{base}/ui/clusters")).send().await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER,
        "clusters after sign-out: {}",
        resp.status()
    );

    // A viewer of acme sees acme's cluster and not beta's.
    let viewer = create_token(&server, "acme", "viewer")?;
    let tenant = browser(&server)?;
    let resp = sign_in(&tenant, &base, &viewer).await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER,
        "viewer sign-in: {} {}",
        resp.status(),
        resp.text().await?
    );
    let hosts_url = format!("{base}/ui/hosts");
    expect_page(
        &tenant,
        &hosts_url,
        StatusCode::FORBIDDEN,
        &["for administrators"],
        &[],
    )
    .await?;
    let lacks = ["<h2>beta</h2>", "Add member"];
    let orgs_url = format!("{base}/ui/organizations");
    expect_page(
        &tenant,
        &orgs_url,
        StatusCode::OK,
        &["<h2>acme</h2>"],
        &lacks,
    )
    .await?;
    let resp = tenant
        .post(format!("{base}/ui/organizations/acme/members"))
        .form(&[("kind", "user"), ("who", "mallory"), ("role", "owner")])
        .send()
        .await?;
    let code = resp.status();
    let html = resp.text().await?;
    ensure!(
        code == StatusCode::FORBIDDEN && html.contains("may not change"),
        "a viewer adding an owner: {code}\n{html}"
    );
    expect_page(
        &tenant,
        &format!("{base}/ui/releases"),
        StatusCode::OK,
        &["test-1"],
        &[],
    )
    .await?;
    let (code, html) = page(&tenant, &format!("{base}/ui/clusters")).await?;
    ensure!(code == StatusCode::OK, "viewer clusters: {code}\n{html}");
    ensure!(
        html.contains(">alpha-one</a></td>"),
        "the acme viewer does not see alpha-one:\n{html}"
    );
    ensure!(
        !html.contains("beta-one") && !html.contains("<td>beta</td>"),
        "the acme viewer sees beta's cluster:\n{html}"
    );

    // Live updates: the page subscribes to the events stream, which sends the table
    // as listed and again after each change the viewer's watch reports.
    ensure!(
        html.contains(r#"<div id="clusters">"#)
            && html.contains(r#"EventSource("/ui/clusters/events")"#),
        "no live-update hook:\n{html}"
    );
    let resp = ui.get(format!("{base}/ui/clusters/events")).send().await?;
    ensure!(
        resp.status() == StatusCode::UNAUTHORIZED,
        "events signed out: {}",
        resp.status()
    );
    let mut events = tenant
        .get(format!("{base}/ui/clusters/events"))
        .send()
        .await?;
    ensure!(
        events.status() == StatusCode::OK,
        "viewer events: {}",
        events.status()
    );
    let content_type = events
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        content_type.starts_with("text/event-stream"),
        "events content type {content_type}"
    );
    let started = std::time::Instant::now();
    let mut seen = String::new();
    let mut created = false;
    while !seen.contains("alpha-two") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), events.chunk())
            .await
            .context("no event within 20 s")??
            .context("the events stream ended")?;
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if !created && seen.contains("event: clusters") && seen.contains("alpha-one") {
            created = true;
            for (name, ns) in [("beta-two", "org-beta"), ("alpha-two", "org-acme")] {
                let body = json!({
                    "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"release": "test-1", "controlPlane": {"replicas": 1, "cpu": 2, "memory": "2Gi", "disk": "10Gi"}},
                });
                let (code, v) = raw(
                    &admin,
                    "POST",
                    &format!("{GV}/namespaces/{ns}/clusters"),
                    "application/json",
                    serde_json::to_vec(&body)?,
                )
                .await?;
                ensure!(code == 201, "creating cluster {ns}/{name}: {code} {v}");
            }
        }
    }
    ensure!(created, "the first event did not list alpha-one:\n{seen}");
    ensure!(
        !seen.contains("beta-"),
        "the viewer's stream carried beta's clusters:\n{seen}"
    );
    eprintln!(
        "live update reached the viewer {:?} after the stream opened",
        started.elapsed()
    );
    drop(events);

    // The API still answers beside the UI.
    let resp = tenant.get(format!("{base}/healthz")).send().await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "/healthz beside the UI: {}",
        resp.status()
    );
    Ok(())
}

#[tokio::test]
async fn create_form_field_errors_detail_and_delete() -> Result<()> {
    let server = ServerProc::start_with(&["--controllers=false"])?;
    let base = server.url();
    let admin = server.client().await?;
    create_org(&admin, "acme").await?;
    // An active Release for the form and a deprecated one it must not offer; with
    // no controllers nothing boots, so the image paths are never read.
    shoal_e2e::ensure_release(&admin, "old-1").await?;
    create_active_release(&admin, "ui-1").await?;
    create_active_release(&admin, "ui-2").await?;

    let owner = create_token(&server, "acme", "owner")?;
    let ui = browser(&server)?;
    let resp = sign_in(&ui, &base, &owner).await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER,
        "owner sign-in: {}",
        resp.status()
    );
    let create = [r#"href="/ui/clusters/new""#];
    expect_page(
        &ui,
        &format!("{base}/ui/clusters"),
        StatusCode::OK,
        &create,
        &[],
    )
    .await?;
    let (code, html) = page(&ui, &format!("{base}/ui/clusters/new")).await?;
    ensure!(code == StatusCode::OK, "form: {code}\n{html}");
    for want in [
        r#"<option value="ui-1""#,
        r#"<option value="acme""#,
        r#"<label for="memory">"#,
        r#"<label for="workers">"#,
        r#"id="control_plane_3""#,
    ] {
        ensure!(html.contains(want), "the form lacks {want}:\n{html}");
    }
    ensure!(
        !html.contains("old-1"),
        "the form offers a deprecated release:\n{html}"
    );

    let submit = |fields: Vec<(&'static str, &'static str)>| {
        let ui = ui.clone();
        let url = format!("{base}/ui/clusters/new");
        async move {
            let mut form = vec![
                ("name", "web-one"),
                ("organization", "acme"),
                ("release", "ui-1"),
                ("control_plane", "1"),
                ("workers", "2"),
                ("cpu", "2"),
                ("memory", "2Gi"),
                ("disk", "10Gi"),
            ];
            for (k, v) in fields {
                if let Some(slot) = form.iter_mut().find(|(fk, _)| *fk == k) {
                    slot.1 = v;
                }
            }
            let resp = ui.post(url).form(&form).send().await?;
            let status = resp.status();
            let loc = location(&resp).to_owned();
            anyhow::Ok((status, loc, resp.text().await?))
        }
    };
    for (input, value) in [
        ("name", "Bad_Name"),
        ("memory", "lots"),
        ("memory", "4096Gi"),
        ("release", "no-such-release"),
    ] {
        let (status, _, html) = submit(vec![(input, value)]).await?;
        ensure!(
            status == StatusCode::UNPROCESSABLE_ENTITY,
            "{input}={value}: {status}\n{html}"
        );
        ensure!(
            html.contains(&format!(r#"<p id="{input}-error" class="error">"#)),
            "{input}={value}: no error at the field:\n{html}"
        );
        ensure!(
            html.contains(&format!(
                r#"aria-describedby="{input}-error" name="{input}""#
            )),
            "{input}={value}: the input is not tied to its error:\n{html}"
        );
    }
    let (status, loc, html) = submit(vec![]).await?;
    ensure!(
        status == StatusCode::SEE_OTHER && loc == "/ui/clusters",
        "valid create: {status} {loc}\n{html}"
    );
    let (code, v) = raw(
        &admin,
        "GET",
        &format!("{GV}/namespaces/org-acme/nodepools/web-one-default"),
        "application/json",
        Vec::new(),
    )
    .await?;
    ensure!(
        code == 200 && v.pointer("/spec/replicas") == Some(&json!(2)),
        "the default NodePool: {code} {v}"
    );
    let (code, html) = page(&ui, &format!("{base}/ui/clusters")).await?;
    ensure!(
        code == StatusCode::OK && html.contains(r#">web-one</a></td><td>acme</td><td>ui-1</td>"#),
        "the new cluster is not listed:\n{html}"
    );

    // The detail page shows the cluster's machines with host, IP and phase.
    let machine = json!({
        "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
        "metadata": {"name": "web-one-w1", "namespace": "org-acme", "labels": {"shoal.io/cluster": "web-one"}},
        "spec": {"cluster": "web-one", "role": "worker", "release": "ui-1",
                 "size": {"cpu": 2, "memory": "2Gi", "disk": "10Gi"},
                 "hostName": "host-a", "ip": "10.77.0.12"},
    });
    let (code, v) = raw(
        &admin,
        "POST",
        &format!("{GV}/namespaces/org-acme/machines"),
        "application/json",
        serde_json::to_vec(&machine)?,
    )
    .await?;
    ensure!(code == 201, "creating a Machine: {code} {v}");
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "web-one.1", "namespace": "org-acme"},
        "involvedObject": {"kind": "Cluster", "name": "web-one", "namespace": "org-acme"},
        "reason": "Probed", "message": "the <probe> answered", "type": "Normal",
        "lastTimestamp": "2026-01-02T03:04:05Z",
    });
    let (code, v) = raw(
        &admin,
        "POST",
        "/api/v1/namespaces/org-acme/events",
        "application/json",
        serde_json::to_vec(&event)?,
    )
    .await?;
    ensure!(code == 201, "creating an Event: {code} {v}");
    let (code, html) = page(&ui, &format!("{base}/ui/clusters/acme/web-one")).await?;
    ensure!(code == StatusCode::OK, "detail: {code}\n{html}");
    ensure!(
        html.contains("<td>2026-01-02 03:04:05 UTC</td><td>Normal</td><td>Probed</td><td>Cluster/web-one</td><td>the &lt;probe&gt; answered</td>"),
        "detail lacks the recent event:\n{html}"
    );
    ensure!(
        html.contains(
            "<td>web-one-w1</td><td>Worker</td><td>host-a</td><td>10.77.0.12</td><td>Pending</td>"
        ),
        "detail lacks the machine:\n{html}"
    );
    ensure!(
        html.contains(r#"<label for="confirm">"#),
        "no labelled delete confirmation:\n{html}"
    );
    let (code, _) = page(&ui, &format!("{base}/ui/clusters/acme/no-such")).await?;
    ensure!(code == StatusCode::NOT_FOUND, "a missing cluster: {code}");

    // Upgrade: the form offers the other active release (not the deprecated one);
    // no choice is refused at the field; a choice moves the cluster.
    ensure!(
        html.contains(r#"<option value="ui-2">ui-2</option>"#)
            && !html.contains(r#"<option value="old-1">"#)
            && html.contains(r#"<label for="release">"#),
        "the upgrade form:\n{html}"
    );
    let upgrade_url = format!("{base}/ui/clusters/acme/web-one/upgrade");
    let resp = ui
        .post(&upgrade_url)
        .form(&[("release", "")])
        .send()
        .await?;
    let code = resp.status();
    let html_refused = resp.text().await?;
    ensure!(
        code == StatusCode::UNPROCESSABLE_ENTITY && html_refused.contains(r#"id="release-error""#),
        "an upgrade without a release: {code}\n{html_refused}"
    );
    let resp = ui
        .post(&upgrade_url)
        .form(&[("release", "ui-2")])
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER,
        "upgrade: {} {}",
        resp.status(),
        resp.text().await?
    );
    let (_, v) = raw(
        &admin,
        "GET",
        &format!("{GV}/namespaces/org-acme/clusters/web-one"),
        "application/json",
        Vec::new(),
    )
    .await?;
    ensure!(
        v.pointer("/spec/release") == Some(&json!("ui-2")),
        "after the upgrade: {v}"
    );

    // Scale the default node pool: a bad number is refused at the field and
    // changes nothing; a good one patches the NodePool; a viewer is refused there.
    ensure!(
        html.contains(r#"<label for="workers-web-one-default">"#),
        "no labelled workers field:\n{html}"
    );
    let scale_url = format!("{base}/ui/clusters/acme/web-one/scale");
    let scale = async |client: &reqwest::Client, workers: &str| {
        client
            .post(&scale_url)
            .form(&[("pool", "web-one-default"), ("workers", workers)])
            .send()
            .await
    };
    let replicas = async || -> Result<serde_json::Value> {
        let (_, v) = raw(
            &admin,
            "GET",
            &format!("{GV}/namespaces/org-acme/nodepools/web-one-default"),
            "application/json",
            Vec::new(),
        )
        .await?;
        Ok(v.pointer("/spec/replicas").cloned().unwrap_or_default())
    };
    let resp = scale(&ui, "many").await?;
    let code = resp.status();
    let html = resp.text().await?;
    ensure!(
        code == StatusCode::UNPROCESSABLE_ENTITY
            && html.contains(r#"id="workers-web-one-default-error""#),
        "a bad worker count: {code}\n{html}"
    );
    ensure!(
        replicas().await? == json!(2),
        "a refused scale changed the pool"
    );
    let resp = scale(&ui, "3").await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER && location(&resp) == "/ui/clusters/acme/web-one",
        "scale: {} {}",
        resp.status(),
        location(&resp)
    );
    ensure!(
        replicas().await? == json!(3),
        "scale did not reach the NodePool"
    );
    let viewer = browser(&server)?;
    let token = create_token(&server, "acme", "viewer")?;
    sign_in(&viewer, &base, &token).await?;
    let resp = scale(&viewer, "9").await?;
    let code = resp.status();
    let html = resp.text().await?;
    ensure!(
        code == StatusCode::FORBIDDEN && html.contains("may not scale"),
        "a viewer's scale: {code}\n{html}"
    );
    // The viewer is offered neither scale nor delete nor create; forcing a delete
    // is refused by the API all the same.
    let has = [
        "may not delete this cluster",
        "0 of 3 workers Ready",
        "may not create key pairs",
    ];
    let lacks = [
        "Delete cluster",
        ">Scale<",
        ">Upgrade<",
        "Create kubeconfig",
    ];
    let detail_url = format!("{base}/ui/clusters/acme/web-one");
    expect_page(&viewer, &detail_url, StatusCode::OK, &has, &lacks).await?;
    expect_page(
        &viewer,
        &format!("{base}/ui/clusters"),
        StatusCode::OK,
        &[],
        &create,
    )
    .await?;
    let resp = viewer
        .post(format!("{base}/ui/clusters/acme/web-one/delete"))
        .form(&[("confirm", "web-one")])
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::FORBIDDEN,
        "a viewer's forced delete: {}",
        resp.status()
    );
    ensure!(replicas().await? == json!(3), "a viewer scaled the pool");
    let resp = viewer
        .post(format!("{base}/ui/clusters/acme/web-one/keypairs"))
        .form(&[("csr", "-----BEGIN CERTIFICATE REQUEST-----")])
        .send()
        .await?;
    let code = resp.status();
    let answer: serde_json::Value = resp.json().await?;
    ensure!(
        code == StatusCode::FORBIDDEN
            && answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("may not create key pairs")),
        "a viewer's forced kubeconfig: {code} {answer}"
    );

    // Delete needs the name typed; a wrong one deletes nothing.
    let url = format!("{base}/ui/clusters/acme/web-one/delete");
    let resp = ui.post(&url).form(&[("confirm", "web-two")]).send().await?;
    ensure!(
        resp.status() == StatusCode::UNPROCESSABLE_ENTITY,
        "wrong confirmation: {}",
        resp.status()
    );
    ensure!(
        resp.text().await?.contains(r#"id="confirm-error""#),
        "no error at the confirmation"
    );
    let (code, _) = raw(
        &admin,
        "GET",
        &format!("{GV}/namespaces/org-acme/clusters/web-one"),
        "application/json",
        Vec::new(),
    )
    .await?;
    ensure!(
        code == 200,
        "a wrong confirmation deleted the cluster: {code}"
    );
    let resp = ui.post(&url).form(&[("confirm", "web-one")]).send().await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER && location(&resp) == "/ui/clusters",
        "delete: {}",
        resp.status()
    );
    let (code, v) = raw(
        &admin,
        "GET",
        &format!("{GV}/namespaces/org-acme/clusters/web-one"),
        "application/json",
        Vec::new(),
    )
    .await?;
    ensure!(
        code == 404 || v.pointer("/metadata/deletionTimestamp").is_some(),
        "the cluster was not deleted: {code} {v}"
    );
    Ok(())
}

/// Sign-in through the identity provider: the sign-in page offers it, the
/// browser goes to a real OIDC provider (npm oidc-provider) and back to
/// `/ui/oidc/callback`, and the ID token becomes the session: the user's groups
/// make it an owner of acme. A callback that does not belong to the browser's
/// sign-in is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_sign_in_through_the_identity_provider() -> Result<()> {
    // Held whole: its temporary directory holds the server's data.
    let setup = UiWithProvider::start("acme", "platform-team").await?;
    let (provider, server, base) = (&setup.provider, &setup.server, setup.base.clone());

    let ui = browser(server)?;
    let (code, html) = page(&ui, &format!("{base}/ui/sign-in")).await?;
    ensure!(
        code == StatusCode::OK
            && html.contains(r#"href="/ui/oidc/start""#)
            && html.contains(provider.issuer()),
        "the sign-in page does not offer the identity provider: {code}\n{html}"
    );
    // A callback the browser never started is refused, and signs nobody in.
    let (code, html) = page(&ui, &format!("{base}/ui/oidc/callback?code=x&state=y")).await?;
    ensure!(
        code == StatusCode::BAD_REQUEST && html.contains("start it again"),
        "a callback without a sign-in: {code}\n{html}"
    );

    // A callback with another state than this browser's sign-in is refused.
    let to_issuer = oidc_start(&ui, &base, provider.issuer()).await?;
    let back = provider.sign_in_at(&to_issuer, "alice").await?;
    ensure!(
        back.starts_with(&format!("{base}/ui/oidc/callback?")),
        "the provider sent the browser to {back}"
    );
    let forged = reqwest::Url::parse_with_params(
        &format!("{base}/ui/oidc/callback"),
        reqwest::Url::parse(&back)?.query_pairs().map(|(k, v)| {
            let v = if k == "state" {
                "forged".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        }),
    )?;
    let (code, html) = page(&ui, forged.as_str()).await?;
    ensure!(
        code == StatusCode::UNAUTHORIZED && html.contains("does not belong to this browser"),
        "a forged state: {code}\n{html}"
    );

    // The real round trip: the ID token becomes the session.
    let to_issuer = oidc_start(&ui, &base, provider.issuer()).await?;
    let back = provider.sign_in_at(&to_issuer, "alice").await?;
    let resp = ui.get(&back).send().await?;
    let code = resp.status();
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let html = resp.text().await?;
    ensure!(
        code == StatusCode::OK
            && html.contains(r#"http-equiv="refresh" content="0; url=/ui/clusters""#),
        "the callback: {code}\n{html}"
    );
    ensure!(
        cookies
            .iter()
            .any(|c| c.starts_with("shoal_token=ey") && c.contains("SameSite=Strict")),
        "the session cookie does not hold the ID token: {cookies:?}"
    );
    let (code, html) = page(&ui, &format!("{base}/ui/clusters")).await?;
    ensure!(
        code == StatusCode::OK && html.contains(r#"href="/ui/clusters/new""#),
        "alice (platform-team, owner of acme) after signing in: {code}\n{html}"
    );
    Ok(())
}

/// `GET /ui/oidc/start`: the redirect to the issuer's authorization URL.
async fn oidc_start(ui: &reqwest::Client, base: &str, issuer: &str) -> Result<String> {
    let resp = ui.get(format!("{base}/ui/oidc/start")).send().await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER && location(&resp).starts_with(issuer),
        "start: {} {}",
        resp.status(),
        location(&resp)
    );
    Ok(location(&resp).to_owned())
}
