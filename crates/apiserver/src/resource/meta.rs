//! Server-owned metadata: names, uids, timestamps, generation and resourceVersion.

use chrono::{SecondsFormat, Utc};
use rand::Rng;
use serde_json::{Map, Value};

use crate::error::{json_type, ApiError};

/// The annotation on a KeyPair naming the user who asked for it. The server owns
/// it: it is stamped on create and kept on every update and patch, whatever the
/// client sent, because the signed certificate's CN is prefixed with it.
pub const REQUESTED_BY: &str = shoal_api::wellknown::annotation::REQUESTED_BY;

/// Refuses `value` unless it is a JSON object; `field` names it in the Status.
pub fn require_object(value: &Value, field: &str) -> Result<(), ApiError> {
    if value.is_object() {
        Ok(())
    } else {
        Err(ApiError::NotAnObject {
            field: field.to_owned(),
            found: json_type(value),
        })
    }
}

/// The current time as Kubernetes writes it, e.g. `2026-01-02T03:04:05Z`.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The object's `metadata` map, created if missing.
pub fn meta_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    super::merge::meta_mut(obj).map_err(ApiError::from)
}

/// Reads a string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// The object's finalizers.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A name from `generateName`: the prefix and five random lower-case characters.
pub fn generated_name(prefix: &str) -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..5)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect();
    format!("{prefix}{suffix}")
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, rv: i64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

/// Parses a resourceVersion the client sent.
pub fn parse_resource_version(rv: &str) -> Result<i64, ApiError> {
    rv.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "resourceVersion {rv:?} is not valid: send back a resourceVersion the server returned"
        ))
    })
}
