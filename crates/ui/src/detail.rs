//! The cluster detail page (conditions, machines) and delete, confirmed by typing
//! the cluster's name.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use http::{HeaderMap, StatusCode};
use kube::api::{Api, DeleteParams, ListParams};
use shoal_api::resources::cluster::Cluster;
use shoal_api::resources::machine::Machine;
use shoal_api::resources::organization::org_namespace;

use crate::html::{escape, page};
use crate::pages::{client, error_page, to_sign_in, unauthorized};
use crate::{session, UiConfig, UiError};

/// The page for `cluster` and its `machines`, with `confirm_error` at the delete
/// confirmation.
fn detail_page(
    org: &str,
    cluster: &Cluster,
    machines: &[Machine],
    confirm_error: Option<&str>,
) -> String {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let status = cluster.status.clone().unwrap_or_default();
    let mut b = String::new();
    let phase = status
        .phase
        .map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}"));
    let _ = write!(
        b,
        "<dl><dt>Organization</dt><dd>{}</dd><dt>Release</dt><dd>{}</dd><dt>Status</dt><dd>{}</dd><dt>API endpoint</dt><dd>{}</dd></dl>",
        escape(org),
        escape(&cluster.spec.release),
        escape(&phase),
        escape(status.api_endpoint.as_deref().unwrap_or("not yet")),
    );
    b.push_str("<h2>Conditions</h2>");
    if status.conditions.is_empty() {
        b.push_str("<p>None reported yet.</p>");
    } else {
        b.push_str(r#"<table><thead><tr><th scope="col">Type</th><th scope="col">Status</th><th scope="col">Reason</th><th scope="col">Message</th></tr></thead><tbody>"#);
        for c in &status.conditions {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&c.type_),
                escape(&c.status),
                escape(&c.reason),
                escape(&c.message)
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("<h2>Machines</h2>");
    if machines.is_empty() {
        b.push_str("<p>No machines yet.</p>");
    } else {
        b.push_str(r#"<table><thead><tr><th scope="col">Name</th><th scope="col">Role</th><th scope="col">Host</th><th scope="col">IP</th><th scope="col">Phase</th></tr></thead><tbody>"#);
        for m in machines {
            let phase = m
                .status
                .as_ref()
                .and_then(|s| s.phase.as_ref())
                .map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}"));
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(m.metadata.name.as_deref().unwrap_or_default()),
                escape(&format!("{:?}", m.spec.role)),
                escape(m.spec.host_name.as_deref().unwrap_or("–")),
                escape(m.spec.ip.as_deref().unwrap_or("–")),
                escape(&phase)
            );
        }
        b.push_str("</tbody></table>");
    }
    let _ = write!(
        b,
        r#"<h2>Delete</h2>
<form method="post" action="/ui/clusters/{org}/{name}/delete">
<label for="confirm">Type the cluster's name, {name}, to delete it and its machines</label>"#,
        org = escape(org),
        name = escape(name)
    );
    match confirm_error {
        Some(e) => {
            let _ = write!(
                b,
                r#"<p id="confirm-error" class="error" role="alert">{}</p><input id="confirm" name="confirm" autocomplete="off" required aria-invalid="true" aria-describedby="confirm-error">"#,
                escape(e)
            );
        }
        None => b.push_str(r#"<input id="confirm" name="confirm" autocomplete="off" required>"#),
    }
    b.push_str(r#"<button type="submit">Delete cluster</button></form>"#);
    page(&format!("Cluster {name}"), true, &b)
}

/// Reads the cluster and its machines with the user's token.
async fn load(
    config: &UiConfig,
    token: &str,
    org: &str,
    name: &str,
) -> Result<(kube::Client, Cluster, Vec<Machine>), UiError> {
    let c = client(config, token)?;
    let ns = org_namespace(org);
    let cluster = Api::<Cluster>::namespaced(c.clone(), &ns)
        .get(name)
        .await
        .map_err(UiError::Api)?;
    let selector = format!("{}={name}", shoal_api::wellknown::label::CLUSTER);
    let mut machines = Api::<Machine>::namespaced(c.clone(), &ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(UiError::Api)?
        .items;
    machines.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok((c, cluster, machines))
}

/// The response for a failed read or write: sign-in again, or the API's status.
fn failure(e: &UiError, title: &str) -> Response {
    if unauthorized(e) {
        return to_sign_in();
    }
    let status = match e {
        UiError::Api(kube::Error::Api(s)) => {
            StatusCode::from_u16(s.code).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        _ => StatusCode::BAD_GATEWAY,
    };
    error_page(status, title, e)
}

/// `GET /ui/clusters/{org}/{name}`.
pub async fn show(
    State(config): State<UiConfig>,
    headers: HeaderMap,
    Path((org, name)): Path<(String, String)>,
) -> Response {
    let Some(token) = session::token(&headers) else {
        return to_sign_in();
    };
    match load(&config, &token, &org, &name).await {
        Ok((_, cluster, machines)) => {
            Html(detail_page(&org, &cluster, &machines, None)).into_response()
        }
        Err(e) => failure(&e, "Cluster"),
    }
}

/// The delete form's field.
#[derive(serde::Deserialize)]
pub struct Confirm {
    confirm: String,
}

/// `POST /ui/clusters/{org}/{name}/delete`: deletes when the typed name matches.
pub async fn delete(
    State(config): State<UiConfig>,
    headers: HeaderMap,
    Path((org, name)): Path<(String, String)>,
    Form(form): Form<Confirm>,
) -> Response {
    let Some(token) = session::token(&headers) else {
        return to_sign_in();
    };
    let (c, cluster, machines) = match load(&config, &token, &org, &name).await {
        Ok(loaded) => loaded,
        Err(e) => return failure(&e, "Cluster"),
    };
    if form.confirm.trim() != name {
        let page = detail_page(
            &org,
            &cluster,
            &machines,
            Some("The name you typed does not match; nothing was deleted."),
        );
        return (StatusCode::UNPROCESSABLE_ENTITY, Html(page)).into_response();
    }
    match Api::<Cluster>::namespaced(c, &org_namespace(&org))
        .delete(&name, &DeleteParams::default())
        .await
    {
        Ok(_) => Redirect::to("/ui/clusters").into_response(),
        Err(e) => failure(&UiError::Api(e), "Cluster"),
    }
}
