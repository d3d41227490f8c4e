//! The create-cluster form: it writes the Cluster and its default NodePool
//! through the API with the user's token, and shows the API's 422 causes next to
//! the inputs they name.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use http::{HeaderMap, StatusCode};
use kube::api::{Api, ListParams};
use serde_json::{json, Value};
use shoal_api::resources::organization::{org_namespace, Organization};
use shoal_api::resources::release::{Release, ReleaseState};

use crate::html::{escape, page};
use crate::pages::{client, to_sign_in, unauthorized};
use crate::{session, UiConfig, UiError};

/// The form's fields, as submitted (kept as text so a bad value is shown again).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct NewCluster {
    name: String,
    organization: String,
    release: String,
    control_plane: String,
    workers: String,
    cpu: String,
    memory: String,
    disk: String,
}

impl NewCluster {
    fn defaults() -> Self {
        Self {
            control_plane: "1".into(),
            workers: "2".into(),
            cpu: "2".into(),
            memory: "2Gi".into(),
            disk: "10Gi".into(),
            ..Self::default()
        }
    }
}

/// The input that an API field path belongs to, for the Cluster and NodePool
/// objects this form writes.
pub fn input_for(field: &str) -> Option<&'static str> {
    let input = match field {
        "metadata.name" | "spec.cluster" => "name",
        "metadata.namespace" => "organization",
        "spec.release" => "release",
        "spec.controlPlane.replicas" => "control_plane",
        "spec.replicas" => "workers",
        f if f.ends_with(".cpu") => "cpu",
        f if f.ends_with(".memory") => "memory",
        f if f.ends_with(".disk") => "disk",
        _ => return None,
    };
    Some(input)
}

/// Field errors by input, and the ones no input matches (under `""`).
type Errors = BTreeMap<&'static str, Vec<String>>;

/// The organizations and active releases the token can see, for the selects.
async fn choices(client: &kube::Client) -> Result<(Vec<String>, Vec<String>), UiError> {
    let orgs = Api::<Organization>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(UiError::Api)?;
    let releases = Api::<Release>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(UiError::Api)?;
    let mut orgs: Vec<String> = orgs
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    orgs.sort();
    let mut releases: Vec<String> = releases
        .items
        .into_iter()
        .filter(|r| r.spec.state == ReleaseState::Active)
        .filter_map(|r| r.metadata.name)
        .collect();
    releases.sort();
    Ok((orgs, releases))
}

/// One labelled input with its errors, linked by `aria-describedby`.
fn field(out: &mut String, id: &str, label: &str, control: &str, errors: &Errors) {
    let _ = write!(out, r#"<label for="{id}">{label}</label>"#);
    let errs = errors.get(id).map(Vec::as_slice).unwrap_or_default();
    if errs.is_empty() {
        out.push_str(control);
        return;
    }
    let _ = write!(out, r#"<p id="{id}-error" class="error">"#);
    out.push_str(
        &errs
            .iter()
            .map(|e| escape(e))
            .collect::<Vec<_>>()
            .join("<br>"),
    );
    out.push_str("</p>");
    out.push_str(&control.replacen(
        " name=",
        &format!(r#" aria-invalid="true" aria-describedby="{id}-error" name="#),
        1,
    ));
}

fn select(id: &str, options: &[String], chosen: &str) -> String {
    let mut s = format!(r#"<select id="{id}" name="{id}" required>"#);
    for o in options {
        let sel = if o == chosen { " selected" } else { "" };
        let o = escape(o);
        let _ = write!(s, r#"<option value="{o}"{sel}>{o}</option>"#);
    }
    s.push_str("</select>");
    s
}

fn input(id: &str, kind: &str, value: &str, extra: &str) -> String {
    format!(
        r#"<input id="{id}" type="{kind}" name="{id}" value="{}" required{extra}>"#,
        escape(value)
    )
}

/// The whole form page.
fn form_page(v: &NewCluster, orgs: &[String], releases: &[String], errors: &Errors) -> String {
    let mut b = String::new();
    if let Some(general) = errors.get("") {
        b.push_str(r#"<div class="error" role="alert"><p>The API refused the cluster:</p><ul>"#);
        for e in general {
            let _ = write!(b, "<li>{}</li>", escape(e));
        }
        b.push_str("</ul></div>");
    } else if !errors.is_empty() {
        b.push_str(r#"<p class="error" role="alert">The API refused the cluster; see the fields marked below.</p>"#);
    }
    b.push_str(r#"<form method="post" action="/ui/clusters/new">"#);
    field(
        &mut b,
        "name",
        "Name",
        &input("name", "text", &v.name, r#" autocomplete="off""#),
        errors,
    );
    field(
        &mut b,
        "organization",
        "Organization",
        &select("organization", orgs, &v.organization),
        errors,
    );
    field(
        &mut b,
        "release",
        "Release",
        &select("release", releases, &v.release),
        errors,
    );
    let cp = |n: &str| {
        let checked = if v.control_plane == n { " checked" } else { "" };
        format!(
            r#"<input type="radio" id="control_plane_{n}" name="control_plane" value="{n}"{checked}> <label for="control_plane_{n}" style="display:inline;font-weight:normal">{n}</label> "#
        )
    };
    let cp_errors = errors
        .get("control_plane")
        .map(Vec::as_slice)
        .unwrap_or_default();
    b.push_str(r#"<fieldset><legend>Control-plane nodes</legend>"#);
    if !cp_errors.is_empty() {
        let _ = write!(
            b,
            r#"<p class="error">{}</p>"#,
            escape(&cp_errors.join("; "))
        );
    }
    b.push_str(&cp("1"));
    b.push_str(&cp("3"));
    b.push_str("</fieldset>");
    field(
        &mut b,
        "workers",
        "Workers",
        &input("workers", "number", &v.workers, r#" min="0""#),
        errors,
    );
    field(
        &mut b,
        "cpu",
        "vCPUs per node (1 to 64)",
        &input("cpu", "number", &v.cpu, r#" min="1" max="64""#),
        errors,
    );
    field(
        &mut b,
        "memory",
        "Memory per node, 256Mi to 512Gi (e.g. 2Gi)",
        &input("memory", "text", &v.memory, ""),
        errors,
    );
    field(
        &mut b,
        "disk",
        "Disk per node, 1Gi to 16Ti (e.g. 10Gi)",
        &input("disk", "text", &v.disk, ""),
        errors,
    );
    b.push_str(r#"<button type="submit">Create cluster</button></form>"#);
    page("Create cluster", true, &b)
}

/// `GET /ui/clusters/new`.
pub async fn new_form(State(config): State<UiConfig>, headers: HeaderMap) -> Response {
    let Some(token) = session::token(&headers) else {
        return to_sign_in();
    };
    let listed = match client(&config, &token) {
        Ok(c) => choices(&c).await,
        Err(e) => Err(e),
    };
    match listed {
        Ok((orgs, releases)) => Html(form_page(
            &NewCluster::defaults(),
            &orgs,
            &releases,
            &Errors::new(),
        ))
        .into_response(),
        Err(e) if unauthorized(&e) => to_sign_in(),
        Err(e) => crate::pages::error_page(StatusCode::BAD_GATEWAY, "Create cluster", &e),
    }
}

/// A number field, or the error the API would give for it.
fn number(v: &str, input: &'static str, errors: &mut Errors) -> Value {
    match v.trim().parse::<u32>() {
        Ok(n) => json!(n),
        Err(_) => {
            errors
                .entry(input)
                .or_default()
                .push("Enter a whole number.".into());
            Value::Null
        }
    }
}

/// Sorts the causes of a refused create into the inputs.
fn causes(e: &UiError, errors: &mut Errors) {
    match e {
        UiError::Api(kube::Error::Api(status)) => {
            let causes = status
                .details
                .as_ref()
                .map(|d| d.causes.as_slice())
                .unwrap_or_default();
            if causes.is_empty() {
                errors.entry("").or_default().push(status.message.clone());
            }
            for c in causes {
                let at = input_for(&c.field).unwrap_or("");
                let msg = if at.is_empty() && !c.field.is_empty() {
                    format!("{}: {}", c.field, c.message)
                } else {
                    c.message.clone()
                };
                errors.entry(at).or_default().push(msg);
            }
        }
        other => errors.entry("").or_default().push(other.to_string()),
    }
}

async fn post(
    client: &kube::Client,
    ns: &str,
    plural: &str,
    obj: &Value,
) -> Result<Value, UiError> {
    let body = serde_json::to_vec(obj).map_err(|e| UiError::Api(kube::Error::SerdeError(e)))?;
    let req = http::Request::post(format!("/apis/shoal.io/v1alpha1/namespaces/{ns}/{plural}"))
        .header("content-type", "application/json")
        .body(body)
        .map_err(|e| UiError::Api(kube::Error::HttpError(e)))?;
    client.request::<Value>(req).await.map_err(UiError::Api)
}

/// `POST /ui/clusters/new`: writes the Cluster, then its default NodePool; a
/// refusal shows the form again with each cause at its field.
pub async fn create(
    State(config): State<UiConfig>,
    headers: HeaderMap,
    Form(v): Form<NewCluster>,
) -> Response {
    let Some(token) = session::token(&headers) else {
        return to_sign_in();
    };
    let client = match client(&config, &token) {
        Ok(c) => c,
        Err(e) => return crate::pages::error_page(StatusCode::BAD_GATEWAY, "Create cluster", &e),
    };
    let (orgs, releases) = match choices(&client).await {
        Ok(c) => c,
        Err(e) if unauthorized(&e) => return to_sign_in(),
        Err(e) => return crate::pages::error_page(StatusCode::BAD_GATEWAY, "Create cluster", &e),
    };
    let mut errors = Errors::new();
    let cp = number(&v.control_plane, "control_plane", &mut errors);
    let workers = number(&v.workers, "workers", &mut errors);
    let cpu = number(&v.cpu, "cpu", &mut errors);
    if errors.is_empty() {
        let ns = org_namespace(v.organization.trim());
        let name = v.name.trim();
        let size = json!({"cpu": cpu, "memory": v.memory.trim(), "disk": v.disk.trim()});
        let mut control_plane = size.clone();
        control_plane["replicas"] = cp;
        let cluster = json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"release": v.release.trim(), "controlPlane": control_plane},
        });
        let pool = json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "NodePool",
            "metadata": {"name": format!("{name}-default"), "namespace": ns,
                         "labels": {shoal_api::wellknown::label::CLUSTER: name}},
            "spec": {"cluster": name, "replicas": workers, "machine": size},
        });
        match post(&client, &ns, "clusters", &cluster).await {
            Ok(_) => match post(&client, &ns, "nodepools", &pool).await {
                Ok(_) => return Redirect::to("/ui/clusters").into_response(),
                Err(e) => {
                    errors.entry("").or_default().push(format!(
                        "Cluster {name} was created, but not its workers; fix them with `shoal cluster scale`."
                    ));
                    causes(&e, &mut errors);
                }
            },
            Err(e) if unauthorized(&e) => return to_sign_in(),
            Err(e) => causes(&e, &mut errors),
        }
    }
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Html(form_page(&v, &orgs, &releases, &errors)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_fields_map_to_inputs() {
        assert_eq!(input_for("metadata.name"), Some("name"));
        assert_eq!(input_for("spec.controlPlane.memory"), Some("memory"));
        assert_eq!(input_for("spec.machine.cpu"), Some("cpu"));
        assert_eq!(input_for("spec.replicas"), Some("workers"));
        assert_eq!(input_for("spec.release"), Some("release"));
        assert_eq!(input_for("spec.network.podCidr"), None);
    }

    #[test]
    fn an_error_is_shown_at_its_field() {
        let mut errors = Errors::new();
        errors.insert("memory", vec!["too <much>".into()]);
        let html = form_page(
            &NewCluster::defaults(),
            &["acme".into()],
            &["r1".into()],
            &errors,
        );
        assert!(html.contains(r#"<p id="memory-error" class="error">too &lt;much&gt;</p><input id="memory" type="text" aria-invalid="true" aria-describedby="memory-error" name="memory""#), "{html}");
        assert!(!html.contains(r#"aria-describedby="cpu-error""#));
    }
}
