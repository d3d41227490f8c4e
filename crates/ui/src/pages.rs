//! The page handlers: each reads the session, calls the public API with the
//! user's token, and renders HTML.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use futures::{StreamExt as _, TryStreamExt as _};
use http::{HeaderMap, StatusCode};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use shoal_api::resources::cluster::Cluster;
use shoal_api::resources::organization::namespace_org;

use crate::html::{escape, page};
use crate::{session, UiConfig, UiError};

/// A kube-rs client that authenticates as `token`.
pub(crate) fn client(config: &UiConfig, token: &str) -> Result<kube::Client, UiError> {
    let mut api = config.api.clone();
    api.auth_info.token = Some(token.to_owned().into());
    kube::Client::try_from(api).map_err(UiError::Client)
}

/// Whether `e` is the API refusing the token (401).
pub(crate) fn unauthorized(e: &UiError) -> bool {
    matches!(e, UiError::Api(kube::Error::Api(s)) if s.code == 401)
}

/// Why a token offered at sign-in is not taken.
pub(crate) enum TokenCheck {
    /// The API refused it (401).
    Refused(UiError),
    /// The API could not be asked.
    Unavailable(UiError),
}

/// Asks the API whether it accepts `token`, before it becomes a session.
pub(crate) async fn check_token(config: &UiConfig, token: &str) -> Result<(), TokenCheck> {
    let checked = match client(config, token) {
        Ok(c) => c.list_api_groups().await.map_err(UiError::Api),
        Err(e) => Err(e),
    };
    match checked {
        Ok(_) => Ok(()),
        Err(e) if unauthorized(&e) => Err(TokenCheck::Refused(e)),
        Err(e) => Err(TokenCheck::Unavailable(e)),
    }
}

/// `/ui`: the clusters when signed in, the sign-in form otherwise.
pub async fn home(headers: HeaderMap) -> Redirect {
    match session::token(&headers) {
        Some(_) => Redirect::to("/ui/clusters"),
        None => Redirect::to("/ui/sign-in"),
    }
}

/// The sign-in form, with `error` above the token field.
fn sign_in_page(config: &UiConfig, error: Option<&str>) -> String {
    let mut body = String::new();
    if let Some(oidc) = config.oidc.as_deref() {
        let _ = write!(
            body,
            r#"<p><a href="/ui/oidc/start">Sign in with your identity provider</a> ({})</p><p>Or with a token:</p>"#,
            escape(oidc.issuer())
        );
    }
    body.push_str(r#"<form method="post" action="/ui/sign-in">"#);
    body.push_str(r#"<label for="token">API token</label>"#);
    match error {
        Some(e) => {
            let _ = write!(
                body,
                r#"<p id="token-error" class="error" role="alert">{}</p>
<input id="token" name="token" type="password" autocomplete="off" required aria-invalid="true" aria-describedby="token-error token-help">"#,
                escape(e)
            );
        }
        None => body.push_str(
            r#"<input id="token" name="token" type="password" autocomplete="off" required aria-describedby="token-help">"#,
        ),
    }
    body.push_str(
        r#"<p id="token-help">A Shoal token, as printed by <code>shoal token create --org ORG --role ROLE</code>, or the token of your kubeconfig.</p>
<button type="submit">Sign in</button>
</form>"#,
    );
    page("Sign in", false, &body)
}

/// `GET /ui/sign-in`.
pub async fn sign_in_form(State(config): State<UiConfig>) -> Html<String> {
    Html(sign_in_page(&config, None))
}

/// The sign-in form's fields.
#[derive(serde::Deserialize)]
pub struct SignIn {
    token: String,
}

/// `POST /ui/sign-in`: checks the token against the API, then stores it in the
/// session cookie; a bad token gets the form again with the reason.
pub async fn sign_in(State(config): State<UiConfig>, Form(form): Form<SignIn>) -> Response {
    let token = form.token.trim();
    let refuse = |status: StatusCode, message: &str| {
        (status, Html(sign_in_page(&config, Some(message)))).into_response()
    };
    if token.is_empty() {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, "Enter a token.");
    }
    if !session::cookie_safe(token) {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This is not a token: tokens have no spaces, quotes, commas, semicolons or backslashes. Paste it again.",
        );
    }
    match check_token(&config, token).await {
        Ok(()) => {}
        Err(TokenCheck::Refused(_)) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "The API did not accept this token: it is unknown, expired or revoked. Ask an owner of your organization for a new one.",
            );
        }
        Err(TokenCheck::Unavailable(e)) => {
            tracing::warn!(error = %e, "sign-in could not check the token");
            return refuse(
                StatusCode::BAD_GATEWAY,
                &format!("The token could not be checked, try again: {e}"),
            );
        }
    }
    let mut headers = HeaderMap::new();
    if session::set(&mut headers, token).is_err() {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This token cannot be stored in a cookie.",
        );
    }
    (headers, Redirect::to("/ui/clusters")).into_response()
}

/// `POST /ui/sign-out`: forgets the token.
pub async fn sign_out() -> Response {
    let mut headers = HeaderMap::new();
    session::clear(&mut headers);
    (headers, Redirect::to("/ui/sign-in")).into_response()
}

/// The sign-in page for a request without a usable session; clears a stale cookie.
pub(crate) fn to_sign_in() -> Response {
    let mut headers = HeaderMap::new();
    session::clear(&mut headers);
    (headers, Redirect::to("/ui/sign-in")).into_response()
}

/// An error page with `status`.
pub(crate) fn error_page(status: StatusCode, title: &str, e: &UiError) -> Response {
    let body = format!(
        r#"<p class="error" role="alert">{}</p>"#,
        escape(&e.to_string())
    );
    (status, Html(page(title, true, &body))).into_response()
}

/// `GET /ui/clusters`: every cluster the token can list, in every organization it
/// belongs to (the API restricts a tenant's list to its organization).
pub async fn clusters(State(config): State<UiConfig>, headers: HeaderMap) -> Response {
    let Some(token) = session::token(&headers) else {
        return to_sign_in();
    };
    let c = match client(&config, &token) {
        Ok(c) => c,
        Err(e) => return error_page(StatusCode::BAD_GATEWAY, "Clusters", &e),
    };
    let listed = Api::<Cluster>::all(c.clone())
        .list(&ListParams::default())
        .await
        .map_err(UiError::Api);
    let list = match listed {
        Ok(list) => list.items,
        Err(e) if unauthorized(&e) => return to_sign_in(),
        Err(e) => return error_page(StatusCode::BAD_GATEWAY, "Clusters", &e),
    };
    let create = if crate::can::can_create_clusters(&c).await {
        r#"<p><a href="/ui/clusters/new">Create cluster</a></p>"#
    } else {
        "<p>Your token may read these clusters; creating them takes an owner or member of their organization.</p>"
    };
    let body = format!(
        r#"{create}
<div id="clusters">{}</div>
<script>
// Live updates: the server re-renders the table on every change it watches.
if (window.EventSource) {{
  new EventSource("/ui/clusters/events").addEventListener("clusters", function (e) {{
    document.getElementById("clusters").innerHTML = e.data;
  }});
}}
</script>"#,
        clusters_table(&list)
    );
    Html(page("Clusters", true, &body)).into_response()
}

/// A cluster's key in the live table.
fn key(c: &Cluster) -> (String, String) {
    (
        c.metadata.namespace.clone().unwrap_or_default(),
        c.metadata.name.clone().unwrap_or_default(),
    )
}

/// The SSE event that carries the whole table.
fn table_event(clusters: &BTreeMap<(String, String), Cluster>) -> Event {
    let rows: Vec<Cluster> = clusters.values().cloned().collect();
    // SSE cannot carry a carriage return; the table's line breaks are plain.
    Event::default()
        .event("clusters")
        .data(clusters_table(&rows).replace('\r', ""))
}

/// `GET /ui/clusters/events`: the clusters table as server-sent events, first as
/// listed, then again after each change a watch with the user's token reports.
/// The stream ends when the watch does; the browser's `EventSource` reconnects,
/// which lists afresh.
pub async fn cluster_events(State(config): State<UiConfig>, headers: HeaderMap) -> Response {
    let Some(token) = session::token(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let api = match client(&config, &token) {
        Ok(c) => Api::<Cluster>::all(c),
        Err(e) => return error_page(StatusCode::BAD_GATEWAY, "Clusters", &e),
    };
    let list = match api.list(&ListParams::default()).await.map_err(UiError::Api) {
        Ok(list) => list,
        Err(e) if unauthorized(&e) => return StatusCode::UNAUTHORIZED.into_response(),
        Err(e) => return error_page(StatusCode::BAD_GATEWAY, "Clusters", &e),
    };
    let version = list.metadata.resource_version.clone().unwrap_or_default();
    let clusters: BTreeMap<_, _> = list.items.into_iter().map(|c| (key(&c), c)).collect();
    let watch = match api.watch(&WatchParams::default(), &version).await {
        Ok(w) => w.map_err(UiError::Api).boxed(),
        Err(e) => return error_page(StatusCode::BAD_GATEWAY, "Clusters", &UiError::Api(e)),
    };
    let first = table_event(&clusters);
    let changes =
        futures::stream::unfold((watch, clusters), |(mut watch, mut clusters)| async move {
            loop {
                match watch.next().await {
                    Some(Ok(WatchEvent::Added(c) | WatchEvent::Modified(c))) => {
                        clusters.insert(key(&c), c);
                    }
                    Some(Ok(WatchEvent::Deleted(c))) => {
                        clusters.remove(&key(&c));
                    }
                    Some(Ok(WatchEvent::Bookmark(_))) => continue,
                    Some(Ok(WatchEvent::Error(e))) => {
                        tracing::debug!(error = %e, "the clusters watch ended");
                        return None;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "the clusters watch failed");
                        return None;
                    }
                    None => return None,
                }
                let event = table_event(&clusters);
                return Some((Ok::<_, Infallible>(event), (watch, clusters)));
            }
        });
    let stream = futures::stream::once(async move { Ok(first) }).chain(changes);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The clusters table, sorted by organization, then name.
pub fn clusters_table(clusters: &[Cluster]) -> String {
    if clusters.is_empty() {
        return "<p>No clusters yet.</p>".to_owned();
    }
    let mut rows: Vec<&Cluster> = clusters.iter().collect();
    rows.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let mut out = String::with_capacity(200 * rows.len() + 400);
    out.push_str(
        r#"<table>
<caption>Clusters you can see</caption>
<thead><tr><th scope="col">Name</th><th scope="col">Organization</th><th scope="col">Release</th><th scope="col">Status</th><th scope="col">Nodes ready/total</th><th scope="col">Created</th></tr></thead>
<tbody>
"#,
    );
    for c in rows {
        let name = c.metadata.name.as_deref().unwrap_or_default();
        let ns = c.metadata.namespace.as_deref().unwrap_or_default();
        let org = namespace_org(ns).unwrap_or(ns);
        let status = c.status.as_ref();
        let phase = status
            .and_then(|s| s.phase.as_ref())
            .map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}"));
        let nodes = match status.map(|s| (s.ready_nodes, s.desired_nodes)) {
            Some((Some(r), Some(d))) => format!("{r}/{d}"),
            _ => "–".to_owned(),
        };
        let created = c
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.strftime("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        let (name, org) = (escape(name), escape(org));
        let _ = writeln!(
            out,
            "<tr><td><a href=\"/ui/clusters/{org}/{name}\">{name}</a></td><td>{org}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.spec.release),
            escape(&phase),
            escape(&nodes),
            escape(&created),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}
