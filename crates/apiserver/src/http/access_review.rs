//! `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: may the caller
//! do this? (`kubectl auth can-i`, and the web UI deciding which buttons to show.)
//! The answer comes from the same [`authorize`] every request goes through, so it
//! cannot drift from what the API enforces. Nothing is stored.

use axum::body::Body;
use axum::http::Response;
use serde_json::{json, Value};
use shoal_api::registry::KINDS;
use shoal_api::validate::FieldCause;

use crate::auth::{authorize, Identity, Verb};
use crate::error::ApiError;
use crate::http::response::json_response;

/// The path of the review.
pub const PATH: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

const KIND: &str = "SelfSubjectAccessReview";

/// The verb of a review's `verb`, or `None` for one the API has no requests for.
fn verb(name: &str) -> Option<Verb> {
    Some(match name {
        "get" => Verb::Get,
        "list" => Verb::List,
        "watch" => Verb::Watch,
        "create" => Verb::Create,
        "update" => Verb::Update,
        "patch" => Verb::Patch,
        "delete" => Verb::Delete,
        _ => return None,
    })
}

fn invalid(causes: Vec<FieldCause>) -> ApiError {
    ApiError::Invalid {
        kind: KIND.into(),
        name: String::new(),
        causes,
    }
}

/// Answers the review in `body` for `id`: the review with its `status` filled in.
pub fn review(id: &Identity, body: &Value) -> Result<Response<Body>, ApiError> {
    if body.get("kind").and_then(Value::as_str) != Some(KIND) {
        return Err(invalid(vec![FieldCause::invalid(
            "kind",
            format!("send a {KIND} (apiVersion authorization.k8s.io/v1)"),
        )]));
    }
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    let (allowed, reason) = if let Some(attrs) = spec.get("resourceAttributes") {
        let field = |name: &str| attrs.get(name).and_then(Value::as_str).unwrap_or_default();
        let (group, resource, version) = (field("group"), field("resource"), field("version"));
        let (namespace, name) = (field("namespace"), field("name"));
        let Some(verb) = verb(field("verb")) else {
            return Err(invalid(vec![FieldCause::not_supported(
                "spec.resourceAttributes.verb",
                format!(
                    "{:?} is not a verb this API serves: use get, list, watch, create, update, patch or delete",
                    field("verb")
                ),
            )]));
        };
        let kind = KINDS.iter().find(|k| {
            k.group == group && k.plural == resource && (version.is_empty() || k.version == version)
        });
        match kind {
            None => (
                false,
                format!("the server does not serve {resource:?} in the API group {group:?}"),
            ),
            Some(kind) => {
                let ns = (kind.namespaced && !namespace.is_empty()).then_some(namespace);
                let name = (!name.is_empty()).then_some(name);
                match authorize(id, verb, kind, ns, name) {
                    Ok(_) => (true, String::new()),
                    Err(e) => (false, e.to_string()),
                }
            }
        }
    } else if spec.get("nonResourceAttributes").is_some() {
        // Discovery, health and version are open to every signed-in caller;
        // the rest (metrics, the audit log) decide per request.
        let path = spec
            .pointer("/nonResourceAttributes/path")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let open = [
            "/api", "/apis", "/version", "/healthz", "/livez", "/readyz", "/openapi",
        ]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")));
        let allowed = open || id.is_cluster_admin();
        let reason = if allowed {
            String::new()
        } else {
            format!("{path} is for cluster admins")
        };
        (allowed, reason)
    } else {
        return Err(invalid(vec![FieldCause::required(
            "spec.resourceAttributes",
            "give spec.resourceAttributes (verb, group, resource, namespace, name) or spec.nonResourceAttributes (path, verb)",
        )]));
    };
    let mut out = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": KIND,
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": {"allowed": allowed},
    });
    if !allowed {
        out["status"]["reason"] = Value::from(reason);
    }
    Ok(json_response(201, &out))
}
