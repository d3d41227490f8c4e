//! The cluster detail page (conditions, machines, node pools), scaling a node
//! pool, and delete, confirmed by typing the cluster's name.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use http::{HeaderMap, StatusCode};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use shoal_api::events::{event_time, recent_events};
use shoal_api::resources::cluster::Cluster;
use shoal_api::resources::machine::Machine;
use shoal_api::resources::organization::org_namespace;
use shoal_api::resources::release::ReleaseState;
use shoal_api::{NodePool, Release};

use crate::html::{escape, page};
use crate::pages::{client, error_page, to_sign_in, unauthorized};
use crate::{session, UiConfig, UiError};

/// What the page shows of a cluster.
struct Loaded {
    client: kube::Client,
    cluster: Cluster,
    machines: Vec<Machine>,
    pools: Vec<NodePool>,
    /// The newest events about the cluster and its machines, oldest first; the
    /// API's refusal when the token may not read events.
    events: Result<Vec<Event>, String>,
    /// Whether the user may scale the node pools.
    may_scale: bool,
    /// Whether the user may delete the cluster.
    may_delete: bool,
    /// The active releases the user may move the cluster to; empty when it may
    /// not change the cluster.
    upgrades: Vec<String>,
    /// The cluster's key pairs.
    keypairs: Vec<shoal_api::KeyPair>,
    /// Whether the user may create key pairs (kubeconfigs) for it.
    may_create_keypairs: bool,
}

/// How many events the page shows.
const EVENTS_SHOWN: usize = 10;

/// A refusal to show at a form's field.
#[derive(Clone, Copy)]
enum FieldError<'a> {
    /// At the delete confirmation.
    Confirm(&'a str),
    /// At the workers field of node pool `.0`.
    Workers(&'a str, &'a str),
    /// At the upgrade's release field.
    Release(&'a str),
}

/// The page for a loaded cluster, with `error` at its field.
fn detail_page(org: &str, loaded: &Loaded, error: Option<FieldError>) -> String {
    let (cluster, machines) = (&loaded.cluster, &loaded.machines);
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
    node_pools(&mut b, org, name, &loaded.pools, loaded.may_scale, error);
    upgrade_form(
        &mut b,
        org,
        name,
        &cluster.spec.release,
        &loaded.upgrades,
        error,
    );
    events_table(&mut b, &loaded.events);
    crate::keypairs::section(
        &mut b,
        org,
        name,
        &loaded.keypairs,
        loaded.may_create_keypairs,
    );
    if !loaded.may_delete {
        b.push_str("<p>Your token may not delete this cluster: that takes an owner or member of its organization.</p>");
        return page(&format!("Cluster {name}"), true, &b);
    }
    let _ = write!(
        b,
        r#"<h2>Delete</h2>
<form method="post" action="/ui/clusters/{org}/{name}/delete">
<label for="confirm">Type the cluster's name, {name}, to delete it and its machines</label>"#,
        org = escape(org),
        name = escape(name)
    );
    match error {
        Some(FieldError::Confirm(e)) => {
            let _ = write!(
                b,
                r#"<p id="confirm-error" class="error" role="alert">{}</p><input id="confirm" name="confirm" autocomplete="off" required aria-invalid="true" aria-describedby="confirm-error">"#,
                escape(e)
            );
        }
        _ => b.push_str(r#"<input id="confirm" name="confirm" autocomplete="off" required>"#),
    }
    b.push_str(r#"<button type="submit">Delete cluster</button></form>"#);
    page(&format!("Cluster {name}"), true, &b)
}

/// The node pools, each with its size, workers and a form that scales it.
fn node_pools(
    b: &mut String,
    org: &str,
    name: &str,
    pools: &[NodePool],
    may_scale: bool,
    error: Option<FieldError>,
) {
    b.push_str("<h2>Node pools</h2>");
    if pools.is_empty() {
        b.push_str("<p>No node pools: the cluster has only its control plane.</p>");
        return;
    }
    for p in pools {
        let pool = p.metadata.name.as_deref().unwrap_or_default();
        let ready = p.status.as_ref().map_or(0, |s| s.ready_replicas);
        let id = format!("workers-{}", escape(pool));
        let _ = write!(
            b,
            "<h3>{pool}</h3>\n<p>{ready} of {want} workers Ready; each {cpu} CPU, {memory} memory, {disk} disk.</p>",
            pool = escape(pool),
            want = p.spec.replicas,
            cpu = escape(p.spec.machine.cpu.as_str()),
            memory = escape(p.spec.machine.memory.as_str()),
            disk = escape(p.spec.machine.disk.as_str()),
        );
        let refused_here = matches!(error, Some(FieldError::Workers(at, _)) if at == pool);
        if !may_scale && !refused_here {
            continue;
        }
        let _ = write!(
            b,
            r#"<form method="post" action="/ui/clusters/{org}/{name}/scale">
<input type="hidden" name="pool" value="{pool}">
<label for="{id}">Workers in {pool}</label>"#,
            org = escape(org),
            name = escape(name),
            pool = escape(pool),
        );
        match error {
            Some(FieldError::Workers(at, e)) if at == pool => {
                let _ = write!(
                    b,
                    r#"<p id="{id}-error" class="error" role="alert">{}</p><input id="{id}" name="workers" type="number" min="0" value="{}" required aria-invalid="true" aria-describedby="{id}-error">"#,
                    escape(e),
                    p.spec.replicas
                );
            }
            _ => {
                let _ = write!(
                    b,
                    r#"<input id="{id}" name="workers" type="number" min="0" value="{}" required>"#,
                    p.spec.replicas
                );
            }
        }
        b.push_str(r#" <button type="submit">Scale</button></form>"#);
    }
}

/// The upgrade form: the active releases other than the cluster's own.
fn upgrade_form(
    b: &mut String,
    org: &str,
    name: &str,
    current: &str,
    upgrades: &[String],
    error: Option<FieldError>,
) {
    let refused = match error {
        Some(FieldError::Release(e)) => Some(e),
        _ => None,
    };
    if upgrades.is_empty() && refused.is_none() {
        return;
    }
    let _ = write!(
        b,
        r#"<h2>Upgrade</h2>
<form method="post" action="/ui/clusters/{org}/{name}/upgrade">
<label for="release">Move from release {current} to</label>"#,
        org = escape(org),
        name = escape(name),
        current = escape(current),
    );
    match refused {
        Some(e) => {
            let _ = write!(
                b,
                r#"<p id="release-error" class="error" role="alert">{}</p><select id="release" name="release" aria-invalid="true" aria-describedby="release-error">"#,
                escape(e)
            );
        }
        None => b.push_str(r#"<select id="release" name="release">"#),
    }
    for r in upgrades {
        let _ = write!(b, r#"<option value="{r}">{r}</option>"#, r = escape(r));
    }
    b.push_str(r#"</select> <button type="submit">Upgrade</button><p>Machines are replaced one at a time; the cluster's page shows the progress.</p></form>"#);
}

/// The recent events, newest last, or why they cannot be shown.
fn events_table(b: &mut String, events: &Result<Vec<Event>, String>) {
    b.push_str("<h2>Recent events</h2>");
    let events = match events {
        Ok(events) if events.is_empty() => {
            b.push_str("<p>None yet.</p>");
            return;
        }
        Ok(events) => events,
        Err(why) => {
            let _ = write!(b, "<p>Events are not shown: {}</p>", escape(why));
            return;
        }
    };
    b.push_str(r#"<table><thead><tr><th scope="col">Time</th><th scope="col">Type</th><th scope="col">Reason</th><th scope="col">Object</th><th scope="col">Message</th></tr></thead><tbody>"#);
    for e in events {
        let at = event_time(e)
            .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default();
        let object = format!(
            "{}/{}",
            e.involved_object.kind.as_deref().unwrap_or_default(),
            e.involved_object.name.as_deref().unwrap_or_default()
        );
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&at),
            escape(e.type_.as_deref().unwrap_or_default()),
            escape(e.reason.as_deref().unwrap_or_default()),
            escape(&object),
            escape(e.message.as_deref().unwrap_or_default()),
        );
    }
    b.push_str("</tbody></table>");
}

/// Reads the cluster, its machines, node pools and recent events with the
/// user's token.
async fn load(config: &UiConfig, token: &str, org: &str, name: &str) -> Result<Loaded, UiError> {
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
    let mut pools: Vec<NodePool> = Api::<NodePool>::namespaced(c.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(UiError::Api)?
        .items
        .into_iter()
        .filter(|p| p.spec.cluster == name)
        .collect();
    pools.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let names: std::collections::BTreeSet<String> = machines
        .iter()
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    let events = Api::<Event>::namespaced(c.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map(|list| recent_events(list.items, name, &names, EVENTS_SHOWN))
        .map_err(|e| match e {
            kube::Error::Api(s) => s.message,
            e => e.to_string(),
        });
    let may_scale = crate::can::can(&c, "patch", "nodepools", Some(&ns), None).await;
    let may_delete = crate::can::can(&c, "delete", "clusters", Some(&ns), Some(name)).await;
    let upgrades = if crate::can::can(&c, "patch", "clusters", Some(&ns), Some(name)).await {
        let mut active: Vec<String> = Api::<Release>::all(c.clone())
            .list(&ListParams::default())
            .await
            .map_err(UiError::Api)?
            .items
            .into_iter()
            .filter(|r| r.spec.state == ReleaseState::Active)
            .filter_map(|r| r.metadata.name)
            .filter(|r| *r != cluster.spec.release)
            .collect();
        active.sort();
        active
    } else {
        Vec::new()
    };
    let keypairs = crate::keypairs::of_cluster(&c, &ns, name)
        .await
        .map_err(UiError::Api)?;
    let may_create_keypairs = crate::can::can(&c, "create", "keypairs", Some(&ns), None).await;
    Ok(Loaded {
        client: c,
        cluster,
        machines,
        pools,
        events,
        may_scale,
        may_delete,
        upgrades,
        keypairs,
        may_create_keypairs,
    })
}

/// The cluster as the session's user sees it, or the page to answer with: the
/// sign-in without a session, the API's refusal otherwise.
async fn load_signed_in(
    config: &UiConfig,
    headers: &HeaderMap,
    org: &str,
    name: &str,
) -> Result<Loaded, Response> {
    let Some(token) = session::token(headers) else {
        return Err(to_sign_in());
    };
    load(config, &token, org, name)
        .await
        .map_err(|e| failure(&e, "Cluster"))
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
    match load_signed_in(&config, &headers, &org, &name).await {
        Ok(loaded) => Html(detail_page(&org, &loaded, None)).into_response(),
        Err(page) => page,
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
    let loaded = match load_signed_in(&config, &headers, &org, &name).await {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    if form.confirm.trim() != name {
        let page = detail_page(
            &org,
            &loaded,
            Some(FieldError::Confirm(
                "The name you typed does not match; nothing was deleted.",
            )),
        );
        return (StatusCode::UNPROCESSABLE_ENTITY, Html(page)).into_response();
    }
    match Api::<Cluster>::namespaced(loaded.client, &org_namespace(&org))
        .delete(&name, &DeleteParams::default())
        .await
    {
        Ok(_) => Redirect::to("/ui/clusters").into_response(),
        Err(e) => failure(&UiError::Api(e), "Cluster"),
    }
}

/// The scale form's fields.
#[derive(serde::Deserialize)]
pub struct Scale {
    pool: String,
    workers: String,
}

/// `POST /ui/clusters/{org}/{name}/scale`: sets a node pool's workers; the API's
/// refusal (a limit, a viewer's token) is shown at the field.
pub async fn scale(
    State(config): State<UiConfig>,
    headers: HeaderMap,
    Path((org, name)): Path<(String, String)>,
    Form(form): Form<Scale>,
) -> Response {
    let loaded = match load_signed_in(&config, &headers, &org, &name).await {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    let refuse = |code: StatusCode, message: &str| {
        let error = Some(FieldError::Workers(&form.pool, message));
        (code, Html(detail_page(&org, &loaded, error))).into_response()
    };
    if !loaded
        .pools
        .iter()
        .any(|p| p.metadata.name.as_deref() == Some(form.pool.as_str()))
    {
        let body = format!(
            r#"<p class="error" role="alert">Cluster {} has no node pool {}.</p>"#,
            escape(&name),
            escape(&form.pool)
        );
        return (StatusCode::NOT_FOUND, Html(page("Cluster", true, &body))).into_response();
    }
    let Ok(workers) = form.workers.trim().parse::<u32>() else {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter a whole number of workers, 0 or more; nothing was changed.",
        );
    };
    let pools = Api::<NodePool>::namespaced(loaded.client.clone(), &org_namespace(&org));
    let patch = serde_json::json!({"spec": {"replicas": workers}});
    let patched = pools
        .patch(&form.pool, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop);
    back_to_cluster(patched, &org, &name, "scale", refuse)
}

/// The API's refusal of a change as a status and a message for the form's field
/// (`forbidden` leads a 403's); the sign-in or the error page when the field is not
/// what went wrong.
fn refusal(e: kube::Error, forbidden: &str) -> Refusal {
    match e {
        kube::Error::Api(s) if s.code == 401 => Refusal::Page(to_sign_in()),
        kube::Error::Api(s) if s.code == 403 => {
            Refusal::Field(StatusCode::FORBIDDEN, format!("{forbidden}: {}", s.message))
        }
        kube::Error::Api(s) if (400..500).contains(&s.code) => Refusal::Field(
            StatusCode::from_u16(s.code).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
            s.message,
        ),
        e => Refusal::Page(failure(&UiError::Api(e), "Cluster")),
    }
}

/// Where a refused change is answered.
enum Refusal {
    /// At the form's field, with this status.
    Field(StatusCode, String),
    /// With a whole page.
    Page(Response),
}

/// `s` for a path segment: Shoal names are DNS labels, anything else is
/// percent-encoded.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The upgrade form's field.
#[derive(serde::Deserialize)]
pub struct Upgrade {
    release: String,
}

/// `POST /ui/clusters/{org}/{name}/upgrade`: moves the cluster to another
/// release; the API's refusal is shown at the field.
pub async fn upgrade(
    State(config): State<UiConfig>,
    headers: HeaderMap,
    Path((org, name)): Path<(String, String)>,
    Form(form): Form<Upgrade>,
) -> Response {
    let loaded = match load_signed_in(&config, &headers, &org, &name).await {
        Ok(loaded) => loaded,
        Err(page) => return page,
    };
    let refuse = |code: StatusCode, message: &str| {
        let error = Some(FieldError::Release(message));
        (code, Html(detail_page(&org, &loaded, error))).into_response()
    };
    let release = form.release.trim();
    if release.is_empty() || release == loaded.cluster.spec.release {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose a release other than the cluster's own; nothing was changed.",
        );
    }
    let clusters = Api::<Cluster>::namespaced(loaded.client.clone(), &org_namespace(&org));
    let patch = serde_json::json!({"spec": {"release": release}});
    let patched = clusters
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop);
    back_to_cluster(patched, &org, &name, "upgrade", refuse)
}

/// After a change to the cluster: its page again, or the API's refusal of
/// `action` at the form's field (through `refuse`) or as a page.
fn back_to_cluster(
    changed: Result<(), kube::Error>,
    org: &str,
    name: &str,
    action: &str,
    refuse: impl FnOnce(StatusCode, &str) -> Response,
) -> Response {
    match changed {
        Ok(()) => Redirect::to(&format!(
            "/ui/clusters/{}/{}",
            urlencode(org),
            urlencode(name)
        ))
        .into_response(),
        Err(e) => match refusal(e, &format!("Your token may not {action} this cluster")) {
            Refusal::Field(code, message) => refuse(code, &message),
            Refusal::Page(page) => page,
        },
    }
}
