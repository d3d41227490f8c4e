//! Kind-specific views over shared storage: both Event kinds store the core form.

use serde_json::Value;
use shoal_api::{events, KindInfo};

/// Converts an incoming object into its stored form.
pub fn to_storage(kind: &KindInfo, obj: Value) -> Value {
    if kind.group == "events.k8s.io" {
        events::to_core(&obj)
    } else if kind.storage == "events" {
        let mut obj = obj;
        events::normalize_core(&mut obj);
        obj
    } else {
        obj
    }
}

/// True when `kind`'s view of a stored object is the stored object itself.
pub fn is_stored_form(kind: &KindInfo) -> bool {
    kind.group != "events.k8s.io"
}

/// Converts a stored object into the view of `kind`.
pub fn from_storage(kind: &KindInfo, obj: Value) -> Value {
    if kind.group == "events.k8s.io" {
        events::to_events_v1(&obj)
    } else {
        obj
    }
}

/// The field selectors a kind supports.
pub fn selectable_fields(kind: &KindInfo) -> &'static [&'static str] {
    match (kind.group, kind.kind) {
        ("", "Event") => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "type",
            "source",
            "reportingComponent",
        ],
        ("events.k8s.io", _) => &[
            "metadata.name",
            "metadata.namespace",
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "type",
            "reportingController",
        ],
        ("", "Secret") => &["metadata.name", "metadata.namespace", "type"],
        ("", "Namespace") => &["metadata.name", "status.phase"],
        _ => &["metadata.name", "metadata.namespace"],
    }
}
