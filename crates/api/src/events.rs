//! The two views of one Event: core `v1` (what `kubectl describe` reads) and
//! `events.k8s.io/v1` (what kube-rs's `Recorder` writes). Shoal stores the core
//! form and converts on the way in and out, as Kubernetes does.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value};

/// Field pairs that carry the same meaning: (core v1, events.k8s.io/v1).
const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// Fields both views name the same way.
const SHARED: &[&str] = &[
    "metadata",
    "reason",
    "type",
    "action",
    "related",
    "reportingInstance",
    "eventTime",
    "series",
];

fn copy_fields(
    from: &Map<String, Value>,
    pairs: impl Iterator<Item = (&'static str, &'static str)>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (src, dst) in pairs {
        if let Some(v) = from.get(src).filter(|v| !v.is_null()) {
            out.insert(dst.to_owned(), v.clone());
        }
    }
    out
}

/// Converts an `events.k8s.io/v1` Event to the stored core `v1` form.
pub fn to_core(ev: &Value) -> Value {
    let Some(from) = ev.as_object() else {
        return ev.clone();
    };
    let pairs = RENAMES
        .iter()
        .map(|(c, e)| (*e, *c))
        .chain(SHARED.iter().map(|s| (*s, *s)));
    let mut out = copy_fields(from, pairs);
    // A series carries the count and the last time it was seen.
    if let Some(series) = from.get("series").and_then(Value::as_object) {
        if let Some(count) = series.get("count") {
            out.insert("count".into(), count.clone());
        }
        if let Some(last) = series.get("lastObservedTime") {
            out.insert("lastTimestamp".into(), last.clone());
        }
    }
    if !out.contains_key("firstTimestamp") {
        if let Some(t) = from.get("eventTime").filter(|t| !t.is_null()) {
            out.insert("firstTimestamp".into(), t.clone());
            out.entry("lastTimestamp").or_insert_with(|| t.clone());
        }
    }
    if !out.contains_key("source") {
        if let Some(c) = from.get("reportingController") {
            out.insert("source".into(), serde_json::json!({ "component": c }));
        }
    }
    if !out.contains_key("count") {
        out.insert("count".into(), Value::from(1));
    }
    out.insert("apiVersion".into(), Value::from("v1"));
    out.insert("kind".into(), Value::from("Event"));
    Value::Object(out)
}

/// Converts a stored core `v1` Event to the `events.k8s.io/v1` view.
pub fn to_events_v1(ev: &Value) -> Value {
    let Some(from) = ev.as_object() else {
        return ev.clone();
    };
    let pairs = RENAMES
        .iter()
        .copied()
        .chain(SHARED.iter().map(|s| (*s, *s)));
    let mut out = copy_fields(from, pairs);
    if !out.contains_key("reportingController") {
        if let Some(c) = from.get("source").and_then(|s| s.get("component")) {
            out.insert("reportingController".into(), c.clone());
        }
    }
    out.insert("apiVersion".into(), Value::from("events.k8s.io/v1"));
    out.insert("kind".into(), Value::from("Event"));
    Value::Object(out)
}

/// Fills the core fields a core client may leave out, as Kubernetes does.
pub fn normalize_core(ev: &mut Value) {
    if let Some(obj) = ev.as_object_mut() {
        if let (false, Some(t)) = (
            obj.contains_key("eventTime"),
            obj.get("firstTimestamp").cloned(),
        ) {
            obj.insert("eventTime".into(), Value::Null);
            obj.insert(
                "lastTimestamp".into(),
                obj.get("lastTimestamp").cloned().unwrap_or(t),
            );
        }
    }
}

/// When an event last happened, by the best timestamp it carries.
pub fn event_time(e: &Event) -> Option<Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The last `n` events about the cluster or one of the named Machines, oldest first.
pub fn recent_events(
    events: Vec<Event>,
    cluster: &str,
    machines: &BTreeSet<String>,
    n: usize,
) -> Vec<Event> {
    let mut mine: Vec<Event> = events
        .into_iter()
        .filter(|e| {
            let o = &e.involved_object;
            let name = o.name.as_deref().unwrap_or_default();
            match o.kind.as_deref() {
                Some("Cluster") => name == cluster,
                Some("Machine") => machines.contains(name),
                _ => false,
            }
        })
        .collect();
    mine.sort_by_key(event_time);
    let skip = mine.len().saturating_sub(n);
    mine.split_off(skip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_both_views() {
        let ev = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "demo.1", "namespace": "org-acme"},
            "regarding": {"kind": "Cluster", "name": "demo", "namespace": "org-acme", "uid": "u1"},
            "note": "created machines", "reason": "Provisioning", "type": "Normal",
            "reportingController": "shoal.io/cluster", "reportingInstance": "r1",
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}
        });
        let core = to_core(&ev);
        assert_eq!(core["involvedObject"]["name"], "demo");
        assert_eq!(core["message"], "created machines");
        assert_eq!(core["count"], 2);
        assert_eq!(core["lastTimestamp"], "2026-01-01T00:01:00.000000Z");
        assert_eq!(core["source"]["component"], "shoal.io/cluster");
        let back = to_events_v1(&core);
        assert_eq!(back["regarding"], ev["regarding"]);
        assert_eq!(back["note"], ev["note"]);
        assert_eq!(back["series"], ev["series"]);
        assert_eq!(back["reportingController"], "shoal.io/cluster");
    }

    fn event(kind: &str, name: &str, at: &str, reason: &str) -> Event {
        serde_json::from_value(json!({
            "metadata": {},
            "involvedObject": {"kind": kind, "name": name},
            "lastTimestamp": at,
            "reason": reason,
        }))
        .expect("an Event")
    }

    #[test]
    fn recent_events_keeps_the_clusters_newest_in_order() {
        let events = vec![
            event("Machine", "demo-cp-0", "2025-01-01T00:00:03Z", "Ready"),
            event("Cluster", "demo", "2025-01-01T00:00:01Z", "Created"),
            event("Cluster", "other", "2025-01-01T00:00:02Z", "Created"),
            event("NodePool", "demo", "2025-01-01T00:00:02Z", "Scaled"),
            event("Machine", "demo-cp-0", "2025-01-01T00:00:02Z", "Scheduled"),
        ];
        let names = BTreeSet::from(["demo-cp-0".to_owned()]);
        let reasons: Vec<String> = recent_events(events.clone(), "demo", &names, 10)
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        assert_eq!(reasons, ["Created", "Scheduled", "Ready"]);
        let last_two: Vec<String> = recent_events(events, "demo", &names, 2)
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        assert_eq!(last_two, ["Scheduled", "Ready"]);
    }
}
