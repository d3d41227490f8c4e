//! `application/json;as=Table` rendering for `kubectl get`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shoal_api::{registry::json_path, KindInfo};

/// The Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let part = part.trim();
        part.starts_with("application/json") && part.contains("as=Table")
    })
}

/// How much of each object a row carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// Renders an age as kubectl does: `45s`, `5m12s`, `3h`, `2d`.
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ if d < 730 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

fn cell(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => Value::String(String::new()),
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Number(n)) => Value::Number(n.clone()),
        Some(Value::Bool(b)) => Value::Bool(*b),
        Some(other) => Value::String(other.to_string()),
    }
}

fn age_of(obj: &Value, now: DateTime<Utc>) -> Value {
    let age = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| human_age((now - t.with_timezone(&Utc)).num_seconds()));
    Value::String(age.unwrap_or_else(|| "<unknown>".into()))
}

fn title(name: &str) -> String {
    let lower = name.to_lowercase();
    let mut chars = lower.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default()
}

/// The column definitions: Name, the kind's columns, Age.
pub fn column_definitions(kind: &KindInfo) -> Value {
    let mut cols = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    for c in kind.columns {
        let (ty, format) = if c.type_ == "date" {
            ("string", "date")
        } else {
            (c.type_, "")
        };
        cols.push(json!({
            "name": title(c.name), "type": ty, "format": format, "priority": 0,
            "description": c.description,
        }));
    }
    cols.push(json!({
        "name": "Age", "type": "string", "format": "", "priority": 0,
        "description": "Time since the object was created.",
    }));
    Value::Array(cols)
}

/// One row for one object.
pub fn row(kind: &KindInfo, obj: &Value, include: IncludeObject, now: DateTime<Utc>) -> Value {
    let mut cells = vec![cell(obj.pointer("/metadata/name"))];
    cells.extend(
        kind.columns
            .iter()
            .map(|c| cell(json_path(obj, c.json_path))),
    );
    cells.push(age_of(obj, now));
    let object = match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or(Value::Null),
        }),
    };
    json!({ "cells": cells, "object": object })
}

/// A Table of objects.
pub fn table(
    kind: &KindInfo,
    objs: &[Value],
    include: IncludeObject,
    headers: bool,
    rv: Option<i64>,
    cont: Option<&str>,
) -> Value {
    let now = Utc::now();
    let mut meta = serde_json::Map::new();
    if let Some(rv) = rv {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    if let Some(c) = cont {
        meta.insert("continue".into(), Value::String(c.to_owned()));
    }
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": if headers { column_definitions(kind) } else { Value::Array(vec![]) },
        "rows": objs.iter().map(|o| row(kind, o, include, now)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(150), "2m30s");
        assert_eq!(human_age(3600 * 3), "3h0m");
        assert_eq!(human_age(86400 * 3), "3d0h");
        assert_eq!(human_age(86400 * 30), "30d");
    }

    #[test]
    fn accept_headers() {
        assert!(wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert!(!wants_table("application/json"));
    }
}
