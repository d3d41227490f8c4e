//! Parsing a request: the resource path, the query and the body.

use std::collections::HashMap;
use std::num::NonZeroUsize;

use serde_json::Value;
use shoal_api::{registry::find_by_plural, KindInfo, KINDS};

use crate::error::ApiError;
use crate::resource::{view, ListOptions, PatchKind, Subresource};
use crate::selector::{FieldSelector, LabelSelector};

/// What a resource URL names.
#[derive(Clone, Debug)]
pub struct Target {
    /// The kind.
    pub kind: &'static KindInfo,
    /// The namespace in the path, if any.
    pub namespace: Option<String>,
    /// The object's name, if any.
    pub name: Option<String>,
    /// Main object or `/status`.
    pub sub: Subresource,
}

fn unknown(path: &str) -> ApiError {
    let known: Vec<String> = KINDS
        .iter()
        .map(|k| format!("{}/{}", k.api_version(), k.plural))
        .collect();
    ApiError::UnknownResource {
        path: path.to_owned(),
        hint: format!("served resources are {}", known.join(", ")),
    }
}

/// Parses `/api/v1/...` or `/apis/<group>/<version>/...` into a target.
pub fn parse_path(path: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(unknown(path)),
    };
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(group.is_empty() && tail.is_empty() && *plural == "status") =>
        {
            (
                Some(*ns),
                *plural,
                tail.first().copied(),
                tail.get(1).copied(),
            )
        }
        [plural, tail @ ..] => (None, *plural, tail.first().copied(), tail.get(1).copied()),
        [] => return Err(unknown(path)),
    };
    // `/api/v1/namespaces/<name>` and `/api/v1/namespaces/<name>/status` are the Namespace itself.
    let (namespace, plural, name, sub) = if group.is_empty()
        && rest.first() == Some(&"namespaces")
        && rest.len() <= 3
        && (rest.len() < 3 || rest[2] == "status")
    {
        (
            None,
            "namespaces",
            rest.get(1).copied(),
            rest.get(2).copied(),
        )
    } else {
        (namespace, plural, name, sub)
    };
    if rest.len() > 5 {
        return Err(unknown(path));
    }
    let kind = find_by_plural(group, version, plural).ok_or_else(|| unknown(path))?;
    let sub = match sub {
        None => Subresource::Main,
        Some("status") if kind.has_status => Subresource::Status,
        Some("endpoints") if kind.behavior.endpoints => Subresource::Endpoints,
        Some(other) => {
            return Err(ApiError::UnknownResource {
                path: path.to_owned(),
                hint: format!("{} has no subresource {other:?}", kind.plural),
            })
        }
    };
    if kind.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::BadRequest(format!(
            "{} are namespaced: use {}/namespaces/<namespace>/{}/{}",
            kind.plural,
            kind.group_version_path(),
            kind.plural,
            name.unwrap_or_default()
        )));
    }
    if !kind.namespaced && namespace.is_some() {
        return Err(ApiError::BadRequest(format!(
            "{} are cluster-scoped: use {}/{} without a namespace",
            kind.plural,
            kind.group_version_path(),
            kind.plural
        )));
    }
    Ok(Target {
        kind,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        sub,
    })
}

/// The query string as a map (the last value wins).
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The list options in a query.
pub fn list_options(kind: &KindInfo, q: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields = FieldSelector::parse(
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        view::selectable_fields(kind),
    )?;
    let limit = match q.get("limit").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(l) => Some(
            l.parse::<usize>()
                .ok()
                .and_then(NonZeroUsize::new)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("limit {l:?} is not a positive integer"))
                })?,
        ),
    };
    let continue_token = q.get("continue").filter(|c| !c.is_empty()).cloned();
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token,
    })
}

/// True when a query flag is set (`watch=true`, `watch=1`).
pub fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    matches!(q.get(name).map(String::as_str), Some("true" | "1"))
}

/// Decodes a create or update body by its content type.
pub fn decode_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    match ct {
        "" | "application/json" | "*/*" => {
            serde_json::from_slice(body).map_err(|e| ApiError::MalformedBody {
                format: "JSON",
                message: e.to_string(),
            })
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::MalformedBody {
                format: "YAML",
                message: e.to_string(),
            }),
        "application/vnd.kubernetes.protobuf" => Err(ApiError::UnsupportedMediaType(
            "protobuf is not supported: send application/json or application/yaml".into(),
        )),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "content type {other:?} is not supported: send application/json or application/yaml"
        ))),
    }
}

/// Decodes a PATCH body by its content type.
pub fn decode_patch(content_type: &str, body: &[u8]) -> Result<(PatchKind, Value), ApiError> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let kind = match ct {
        "application/merge-patch+json" => PatchKind::Merge,
        "application/json-patch+json" => PatchKind::Json,
        "application/strategic-merge-patch+json" => PatchKind::Strategic,
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
            return Err(ApiError::UnsupportedMediaType(
                "server-side apply is not supported by Shoal: use client-side 'kubectl apply' (without --server-side), or a merge patch".into(),
            ))
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "patch type {other:?} is not supported: use application/merge-patch+json or application/json-patch+json"
            )))
        }
    };
    let value = serde_json::from_slice(body).map_err(|e| ApiError::MalformedBody {
        format: "JSON",
        message: e.to_string(),
    })?;
    Ok((kind, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() -> Result<(), ApiError> {
        let t = parse_path("/apis/shoal.io/v1alpha1/namespaces/org-a/clusters/demo/status")?;
        assert_eq!(
            (
                t.kind.kind,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub
            ),
            ("Cluster", Some("org-a"), Some("demo"), Subresource::Status)
        );
        let t = parse_path("/apis/shoal.io/v1alpha1/clusters")?;
        assert_eq!((t.kind.kind, t.namespace, t.name), ("Cluster", None, None));
        let t = parse_path("/api/v1/namespaces/org-a")?;
        assert_eq!(
            (t.kind.kind, t.name.as_deref()),
            ("Namespace", Some("org-a"))
        );
        let t = parse_path("/api/v1/namespaces")?;
        assert_eq!(t.kind.kind, "Namespace");
        let t = parse_path("/api/v1/namespaces/org-a/events")?;
        assert_eq!(
            (t.kind.kind, t.namespace.as_deref()),
            ("Event", Some("org-a"))
        );
        let t = parse_path("/apis/shoal.io/v1alpha1/organizations/acme")?;
        assert_eq!(
            (t.kind.kind, t.name.as_deref()),
            ("Organization", Some("acme"))
        );
        assert!(parse_path("/apis/shoal.io/v1alpha1/widgets").is_err());
        assert!(parse_path("/apis/shoal.io/v1alpha1/clusters/x").is_err());
        assert!(parse_path("/apis/shoal.io/v1alpha1/namespaces/a/organizations").is_err());
        Ok(())
    }
}
