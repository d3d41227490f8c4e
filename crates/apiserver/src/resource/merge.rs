//! Pure merge rules: how an update or a patch turns the stored object into the
//! next one. No store and no I/O: the CRUD module reads, calls these, and writes.

use serde_json::{json, Map, Value};
use shoal_api::KindInfo;

use crate::error::json_type;
use crate::resource::meta::REQUESTED_BY;
use crate::resource::view;
use crate::resource::Subresource;

/// A patch format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 7386 JSON merge patch.
    Merge,
    /// RFC 6902 JSON patch.
    Json,
    /// Strategic merge patch, served as a merge patch for built-in kinds.
    Strategic,
}

/// Why an update or a patch cannot become the next object.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The body, the patch result or a part of one is not a JSON object.
    #[error("{field:?} must be a JSON object, not {found}")]
    NotAnObject {
        /// The field path, empty for the whole object.
        field: String,
        /// What was found instead: "an array", "a number", ...
        found: &'static str,
    },
    /// A Cluster's `/endpoints` is written by the gateway only.
    #[error("endpoints is read-only: GET it")]
    EndpointsReadOnly,
    /// A strategic merge patch for a kind that only takes merge and JSON patches.
    #[error("strategic merge patch is not supported for {resource}")]
    StrategicUnsupported {
        /// The resource (plural, with group).
        resource: String,
    },
    /// A JSON patch body that is not an array of RFC 6902 operations.
    #[error("the JSON patch is not valid: {0}")]
    InvalidJsonPatch(#[source] serde_json::Error),
    /// A JSON patch whose operations do not apply to the object (a failed
    /// `test`, a path that does not exist).
    #[error("the JSON patch cannot be applied to {kind} {name:?}: {source}")]
    PatchFailed {
        /// The kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// What json-patch reported.
        #[source]
        source: json_patch::PatchError,
    },
}

fn not_an_object(field: &str, value: &Value) -> MergeError {
    MergeError::NotAnObject {
        field: field.to_owned(),
        found: json_type(value),
    }
}

fn require_object(value: &Value, field: &str) -> Result<(), MergeError> {
    if value.is_object() {
        Ok(())
    } else {
        Err(not_an_object(field, value))
    }
}

/// The object's `metadata` map, created if missing or null.
pub(crate) fn meta_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, MergeError> {
    let found = json_type(obj);
    let Some(map) = obj.as_object_mut() else {
        return Err(MergeError::NotAnObject {
            field: String::new(),
            found,
        });
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if meta.is_null() {
        *meta = Value::Object(Map::new());
    }
    let found = json_type(meta);
    meta.as_object_mut().ok_or(MergeError::NotAnObject {
        field: "metadata".into(),
        found,
    })
}

/// Refuses a patch format the kind does not take: strategic merge patches are
/// served (as merge patches) only for the Kubernetes built-in kinds.
pub fn check_patch_kind(kind: &KindInfo, patch_kind: PatchKind) -> Result<(), MergeError> {
    if patch_kind == PatchKind::Strategic && !kind.behavior.strategic_merge {
        return Err(MergeError::StrategicUnsupported {
            resource: crate::resource::service::resource_name(kind),
        });
    }
    Ok(())
}

/// Applies a patch to the stored object `current` of object `name`, in the
/// kind's view, and returns the result in stored form. Merge rules (what the
/// client may change) are applied afterwards by [`merge_for_update`].
pub fn apply_patch(
    kind: &KindInfo,
    name: &str,
    patch_kind: PatchKind,
    patch: &Value,
    current: &Value,
) -> Result<Value, MergeError> {
    let mut doc = view::from_storage(kind, current.clone());
    match patch_kind {
        PatchKind::Merge | PatchKind::Strategic => json_patch::merge(&mut doc, patch),
        PatchKind::Json => {
            let ops: json_patch::Patch =
                serde_json::from_value(patch.clone()).map_err(MergeError::InvalidJsonPatch)?;
            // `doc` is a copy that is dropped on failure, so nothing needs undoing:
            // json_patch::patch's undo panics on some operation sequences (a
            // `move` to the root followed by a failing operation).
            json_patch::patch_unsafe(&mut doc, &ops).map_err(|source| MergeError::PatchFailed {
                kind: kind.kind,
                name: name.to_owned(),
                source,
            })?;
        }
    }
    Ok(view::to_storage(kind, doc))
}

/// Builds the next stored object from the current one and the client's, by the
/// subresource's rules. Server-owned metadata always comes from `current`.
pub fn merge_for_update(
    kind: &KindInfo,
    current: &Value,
    incoming: Value,
    sub: Subresource,
) -> Result<Value, MergeError> {
    require_object(&incoming, "")?;
    require_object(current, "")?;
    let mut next = match sub {
        Subresource::Endpoints => return Err(MergeError::EndpointsReadOnly),
        Subresource::Status => {
            let mut next = current.clone();
            copy_field(&mut next, "status", incoming.get("status"));
            next
        }
        Subresource::Main => {
            let mut next = incoming;
            if kind.has_status {
                copy_field(&mut next, "status", current.get("status"));
            }
            next
        }
    };
    let found = json_type(&next);
    let Some(map) = next.as_object_mut() else {
        return Err(MergeError::NotAnObject {
            field: String::new(),
            found,
        });
    };
    map.insert(
        "apiVersion".into(),
        current.get("apiVersion").cloned().unwrap_or(Value::Null),
    );
    map.insert(
        "kind".into(),
        current.get("kind").cloned().unwrap_or(Value::Null),
    );
    let cur_meta = current
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let meta = meta_mut(&mut next)?;
    meta.remove("resourceVersion");
    meta.remove("managedFields");
    for owned in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match cur_meta.get(owned) {
            Some(v) => meta.insert(owned.into(), v.clone()),
            None => meta.remove(owned),
        };
    }
    if kind.has_spec && sub == Subresource::Main && next.get("spec") != current.get("spec") {
        let generation = cur_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta_mut(&mut next)?.insert("generation".into(), Value::from(generation));
    }
    if kind.behavior.requested_by {
        keep_requester(&mut next, &cur_meta)?;
    }
    Ok(next)
}

/// Sets `obj[field]` to `value`, or removes it when `value` is `None`; `obj` is an object.
fn copy_field(obj: &mut Value, field: &str, value: Option<&Value>) {
    if let Some(map) = obj.as_object_mut() {
        match value {
            Some(v) => map.insert(field.to_owned(), v.clone()),
            None => map.remove(field),
        };
    }
}

/// Keeps a KeyPair's `shoal.io/requested-by` annotation as it is stored: no
/// update or patch may add, change or remove it.
fn keep_requester(next: &mut Value, cur_meta: &Value) -> Result<(), MergeError> {
    let stored = cur_meta
        .get("annotations")
        .and_then(|a| a.get(REQUESTED_BY))
        .cloned();
    let meta = meta_mut(next)?;
    let notes = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if notes.is_null() {
        *notes = Value::Object(Default::default());
    }
    let found = json_type(notes);
    let Some(notes) = notes.as_object_mut() else {
        return Err(MergeError::NotAnObject {
            field: "metadata.annotations".into(),
            found,
        });
    };
    match stored {
        Some(user) => notes.insert(REQUESTED_BY.to_owned(), user),
        None => notes.remove(REQUESTED_BY),
    };
    if notes.is_empty() {
        meta.remove("annotations");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use shoal_api::registry::kinds;
    use shoal_api::KINDS;

    const KEYS: &[&str] = &[
        "apiVersion",
        "kind",
        "metadata",
        "spec",
        "status",
        "name",
        "namespace",
        "uid",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "resourceVersion",
        "annotations",
        "labels",
        REQUESTED_BY,
        "release",
        "",
    ];

    /// An arbitrary JSON value, biased towards Kubernetes-shaped keys.
    fn arbitrary(rng: &mut StdRng, depth: u32) -> Value {
        let pick = if depth == 0 {
            rng.gen_range(0..4)
        } else {
            rng.gen_range(0..7)
        };
        match pick {
            0 => Value::Null,
            1 => Value::Bool(rng.gen()),
            2 => json!(rng.gen::<i64>()),
            3 => Value::String(KEYS[rng.gen_range(0..KEYS.len())].to_owned()),
            4 => Value::Array(
                (0..rng.gen_range(0..4))
                    .map(|_| arbitrary(rng, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.gen_range(0..6))
                    .map(|_| {
                        (
                            KEYS[rng.gen_range(0..KEYS.len())].to_owned(),
                            arbitrary(rng, depth - 1),
                        )
                    })
                    .collect(),
            ),
        }
    }

    fn stored(kind: &KindInfo) -> Value {
        let ns = kind.namespaced.then_some("org-a");
        json!({
            "apiVersion": kind.api_version(), "kind": kind.kind,
            "metadata": {"name": "x", "namespace": ns, "uid": "u-1",
                         "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 3,
                         "annotations": {REQUESTED_BY: "alice", "note": "n"}},
            "spec": {"release": "r"},
            "status": {"phase": "Ready"},
        })
    }

    const OWNED: &[&str] = &[
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ];

    /// merge_for_update never panics; it yields an object whose identity and
    /// server-owned metadata are the stored ones, or refuses a non-object with 422.
    /// Replay a failure with SHOAL_FUZZ_SEED; SHOAL_FUZZ_CASES sets the count.
    #[test]
    fn merge_for_update_keeps_server_owned_fields() {
        let seed = std::env::var("SHOAL_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::thread_rng().gen::<u64>());
        let cases: usize = std::env::var("SHOAL_FUZZ_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3000);
        eprintln!("merge_for_update fuzz: SHOAL_FUZZ_SEED={seed} SHOAL_FUZZ_CASES={cases}");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut refused = 0;
        for case in 0..cases {
            let kind = &KINDS[rng.gen_range(0..KINDS.len())];
            let current = stored(kind);
            let incoming = if rng.gen_bool(0.5) {
                let mut obj = stored(kind);
                let key = KEYS[rng.gen_range(0..KEYS.len())];
                let v = arbitrary(&mut rng, 3);
                if rng.gen_bool(0.5) {
                    obj["metadata"][key] = v;
                } else {
                    obj[key] = v;
                }
                obj
            } else {
                arbitrary(&mut rng, 4)
            };
            let sub = if rng.gen_bool(0.5) {
                Subresource::Main
            } else {
                Subresource::Status
            };
            let ctx = format!(
                "case {case} (seed {seed}): {} {sub:?} {incoming}",
                kind.kind
            );
            match merge_for_update(kind, &current, incoming.clone(), sub) {
                Ok(next) => {
                    assert!(next.is_object(), "{ctx}: {next}");
                    assert_eq!(next["apiVersion"], current["apiVersion"], "{ctx}");
                    assert_eq!(next["kind"], current["kind"], "{ctx}");
                    for f in OWNED {
                        assert_eq!(
                            next["metadata"].get(*f),
                            current["metadata"].get(*f),
                            "{ctx}: metadata.{f}"
                        );
                    }
                    let gen = next["metadata"]["generation"].as_i64();
                    assert!(matches!(gen, Some(3 | 4)), "{ctx}: generation {gen:?}");
                    if kind.behavior.requested_by {
                        assert_eq!(
                            next["metadata"]["annotations"][REQUESTED_BY], "alice",
                            "{ctx}"
                        );
                    }
                    match sub {
                        Subresource::Status => {
                            let mut rest = next.clone();
                            let mut before = current.clone();
                            for v in [&mut rest, &mut before] {
                                copy_field(v, "status", None);
                            }
                            assert_eq!(rest, before, "{ctx}: /status changed more than status");
                        }
                        _ if kind.has_status => {
                            assert_eq!(next.get("status"), current.get("status"), "{ctx}");
                        }
                        _ => {}
                    }
                }
                Err(e) => {
                    refused += 1;
                    let e = ApiError::from(e);
                    let (code, _) = e.code_and_reason();
                    assert!((400..500).contains(&code), "{ctx}: {code} {e}");
                    if !incoming.is_object() {
                        assert_eq!(code, 422, "{ctx}: {e}");
                    }
                }
            }
        }
        assert!(
            refused > 0 && refused < cases,
            "{refused} of {cases} refused"
        );
    }

    #[test]
    fn requested_by_cannot_be_added_changed_or_removed() -> Result<(), MergeError> {
        let kp = kinds::KEY_PAIR.info();
        let current = stored(kp);
        for annotations in [
            json!({REQUESTED_BY: "mallory"}),
            json!({}),
            Value::Null,
            json!({REQUESTED_BY: null}),
        ] {
            let mut incoming = current.clone();
            incoming["metadata"]["annotations"] = annotations.clone();
            let next = merge_for_update(kp, &current, incoming, Subresource::Main)?;
            assert_eq!(
                next["metadata"]["annotations"][REQUESTED_BY], "alice",
                "{annotations}"
            );
        }
        // A KeyPair stored without one (made before the server stamped it) gets none.
        let mut bare = current.clone();
        copy_field(&mut bare["metadata"], "annotations", None);
        let mut incoming = bare.clone();
        incoming["metadata"]["annotations"] = json!({REQUESTED_BY: "mallory"});
        let next = merge_for_update(kp, &bare, incoming, Subresource::Main)?;
        assert_eq!(next["metadata"].get("annotations"), None, "{next}");
        Ok(())
    }

    #[test]
    fn non_objects_are_refused_with_422() {
        let cluster = kinds::CLUSTER.info();
        let current = stored(cluster);
        for body in [
            json!([1, 2]),
            json!(1),
            json!("x"),
            Value::Null,
            json!(true),
        ] {
            for sub in [Subresource::Main, Subresource::Status] {
                let err = merge_for_update(cluster, &current, body.clone(), sub)
                    .expect_err("a non-object is refused");
                assert_eq!(
                    ApiError::from(err).code_and_reason(),
                    (422, "Invalid"),
                    "{body}"
                );
            }
        }
        let mut bad_meta = current.clone();
        bad_meta["metadata"] = json!([1]);
        let err = merge_for_update(cluster, &current, bad_meta, Subresource::Main)
            .expect_err("metadata must be an object");
        assert!(err.to_string().contains("metadata"), "{err}");
        assert_eq!(ApiError::from(err).code_and_reason(), (422, "Invalid"));
    }

    /// Patches `current` and merges the result as the CRUD module does.
    fn patch_then_merge(
        kind: &KindInfo,
        current: &Value,
        patch_kind: PatchKind,
        patch: Value,
    ) -> Result<Value, MergeError> {
        check_patch_kind(kind, patch_kind)?;
        let incoming = apply_patch(kind, "x", patch_kind, &patch, current)?;
        merge_for_update(kind, current, incoming, Subresource::Main)
    }

    #[test]
    fn merge_patch_sets_and_removes_fields() -> Result<(), MergeError> {
        let cl = kinds::CLUSTER.info();
        let current = stored(cl);
        let next = patch_then_merge(
            cl,
            &current,
            PatchKind::Merge,
            json!({"spec": {"release": "r2", "paused": true},
                   "metadata": {"labels": {"env": "prod"}, "annotations": {"note": null}}}),
        )?;
        assert_eq!(next["spec"], json!({"release": "r2", "paused": true}));
        assert_eq!(next["metadata"]["labels"], json!({"env": "prod"}));
        assert_eq!(
            next["metadata"]["annotations"],
            json!({REQUESTED_BY: "alice"})
        );
        assert_eq!(
            next["metadata"]["generation"], 4,
            "a spec change bumps generation"
        );
        assert_eq!(next["status"], current["status"], "status is kept");

        let same = patch_then_merge(
            cl,
            &current,
            PatchKind::Merge,
            json!({"metadata": {"labels": {"a": "b"}}}),
        )?;
        assert_eq!(
            same["metadata"]["generation"], 3,
            "no spec change, no new generation"
        );
        Ok(())
    }

    #[test]
    fn json_patch_applies_operations_in_order() -> Result<(), MergeError> {
        let cl = kinds::CLUSTER.info();
        let current = stored(cl);
        let next = patch_then_merge(
            cl,
            &current,
            PatchKind::Json,
            json!([
                {"op": "test", "path": "/spec/release", "value": "r"},
                {"op": "replace", "path": "/spec/release", "value": "r3"},
                {"op": "add", "path": "/metadata/labels", "value": {"k": "v"}},
                {"op": "remove", "path": "/metadata/annotations/note"},
            ]),
        )?;
        assert_eq!(next["spec"]["release"], "r3");
        assert_eq!(next["metadata"]["labels"]["k"], "v");
        assert!(next["metadata"]["annotations"].get("note").is_none());
        Ok(())
    }

    #[test]
    fn strategic_merge_is_a_merge_for_built_in_kinds_only() -> Result<(), MergeError> {
        for kind in KINDS {
            let current = stored(kind);
            let result = patch_then_merge(
                kind,
                &current,
                PatchKind::Strategic,
                json!({"metadata": {"labels": {"s": "1"}}}),
            );
            if kind.group == shoal_api::GROUP {
                let err = result.expect_err("Shoal kinds take no strategic merge patch");
                assert!(
                    matches!(err, MergeError::StrategicUnsupported { .. }),
                    "{err:?}"
                );
                assert_eq!(ApiError::from(err).code_and_reason().0, 415);
            } else {
                assert_eq!(result?["metadata"]["labels"]["s"], "1", "{}", kind.kind);
            }
        }
        Ok(())
    }

    #[test]
    fn bad_json_patch_bodies_are_typed_errors() {
        let cl = kinds::CLUSTER.info();
        let current = stored(cl);
        for body in [
            json!({"op": "add"}),
            json!([{"op": "frobnicate", "path": "/spec"}]),
            json!([{"op": "add", "value": 1}]),
            json!("x"),
        ] {
            let err = apply_patch(cl, "x", PatchKind::Json, &body, &current)
                .expect_err("not RFC 6902 operations");
            assert!(
                matches!(err, MergeError::InvalidJsonPatch(_)),
                "{body}: {err:?}"
            );
            assert_eq!(ApiError::from(err).code_and_reason().0, 400, "{body}");
        }
        for body in [
            json!([{"op": "test", "path": "/spec/release", "value": "other"}]),
            json!([{"op": "remove", "path": "/spec/missing"}]),
            json!([{"op": "replace", "path": "/nope/deeper", "value": 1}]),
        ] {
            let err = apply_patch(cl, "x", PatchKind::Json, &body, &current)
                .expect_err("operations that do not apply");
            assert!(
                matches!(&err, MergeError::PatchFailed { kind: "Cluster", name, .. } if name == "x"),
                "{body}: {err:?}"
            );
            assert_eq!(
                ApiError::from(err).code_and_reason(),
                (422, "Invalid"),
                "{body}"
            );
        }
    }

    #[test]
    fn patches_cannot_change_identity_or_server_owned_metadata() -> Result<(), MergeError> {
        let cl = kinds::CLUSTER.info();
        let current = stored(cl);
        let hostile = json!({"apiVersion": "v9", "kind": "Other",
            "metadata": {"name": "y", "namespace": "org-b", "uid": "u-2", "generation": 99,
                         "creationTimestamp": "1999-01-01T00:00:00Z",
                         "deletionTimestamp": "1999-01-01T00:00:00Z",
                         "resourceVersion": "7", "managedFields": [{}]}});
        let merged = patch_then_merge(cl, &current, PatchKind::Merge, hostile)?;
        let json = patch_then_merge(
            cl,
            &current,
            PatchKind::Json,
            json!([
                {"op": "replace", "path": "/metadata/name", "value": "y"},
                {"op": "remove", "path": "/metadata/uid"},
                {"op": "replace", "path": "/kind", "value": "Other"},
            ]),
        )?;
        for next in [merged, json] {
            assert_eq!(next["apiVersion"], current["apiVersion"]);
            assert_eq!(next["kind"], current["kind"]);
            for f in OWNED {
                assert_eq!(next["metadata"].get(*f), current["metadata"].get(*f), "{f}");
            }
            assert_eq!(next["metadata"]["generation"], 3);
            assert!(next["metadata"].get("resourceVersion").is_none());
            assert!(next["metadata"].get("managedFields").is_none());
        }
        Ok(())
    }

    /// json_patch::patch panics undoing this sequence; a bad patch must be a 422.
    #[test]
    fn a_failing_patch_after_a_move_to_the_root_is_refused_not_a_panic() {
        let cl = kinds::CLUSTER.info();
        let body = json!([
            {"op": "move", "from": "/metadata/name", "path": ""},
            {"op": "add", "path": "/metadata", "value": null},
        ]);
        let err = apply_patch(cl, "x", PatchKind::Json, &body, &stored(cl))
            .expect_err("the second operation fails");
        assert!(matches!(err, MergeError::PatchFailed { .. }), "{err:?}");
    }

    #[test]
    fn endpoints_are_read_only() {
        let cl = kinds::CLUSTER.info();
        let current = stored(cl);
        let err = merge_for_update(cl, &current, current.clone(), Subresource::Endpoints)
            .expect_err("endpoints are not written");
        assert!(matches!(err, MergeError::EndpointsReadOnly));
        assert_eq!(ApiError::from(err).code_and_reason().0, 405);
    }

    #[test]
    fn events_v1_patches_apply_to_the_served_view() -> Result<(), MergeError> {
        let ev = shoal_api::registry::find_by_plural("events.k8s.io", "v1", "events")
            .expect("events.k8s.io Events are served");
        let current = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "org-a"},
            "involvedObject": {"kind": "Cluster", "name": "c"}, "message": "old", "reason": "R"});
        let next = apply_patch(ev, "e", PatchKind::Merge, &json!({"note": "new"}), &current)?;
        assert_eq!(next["message"], "new", "stored in the core form: {next}");
        Ok(())
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const PATHS: &[&str] = &[
            "",
            "/metadata",
            "/metadata/name",
            "/metadata/namespace",
            "/metadata/uid",
            "/metadata/labels",
            "/metadata/annotations/shoal.io~1requested-by",
            "/spec",
            "/spec/release",
            "/status",
            "/kind",
            "/-",
            "/metadata/finalizers/0",
        ];

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i32>().prop_map(Value::from),
                prop::sample::select(KEYS).prop_map(|k| Value::String(k.to_owned())),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                    prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..4).prop_map(
                        |m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                    ),
                ]
            })
        }

        /// An RFC 6902 operation, well-formed or not.
        fn operation() -> impl Strategy<Value = Value> {
            (
                prop::sample::select(
                    &["add", "remove", "replace", "move", "copy", "test", "bad"][..],
                ),
                prop::sample::select(PATHS),
                prop::sample::select(PATHS),
                prop::option::of(json_value()),
            )
                .prop_map(|(op, path, from, value)| {
                    let mut o = json!({"op": op, "path": path, "from": from});
                    if let Some(v) = value {
                        o["value"] = v;
                    }
                    o
                })
        }

        fn patch_body() -> impl Strategy<Value = (PatchKind, Value)> {
            prop_oneof![
                json_value().prop_map(|v| (PatchKind::Merge, v)),
                json_value().prop_map(|v| (PatchKind::Strategic, v)),
                json_value().prop_map(|v| (PatchKind::Json, v)),
                prop::collection::vec(operation(), 0..5)
                    .prop_map(|ops| (PatchKind::Json, Value::Array(ops))),
            ]
        }

        proptest! {
            #[test]
            fn patches_never_panic_nor_change_identity(
                kind_index in 0..KINDS.len(),
                (patch_kind, body) in patch_body(),
            ) {
                let kind = &KINDS[kind_index];
                let current = stored(kind);
                match patch_then_merge(kind, &current, patch_kind, body.clone()) {
                    Ok(next) => {
                        for f in ["name", "namespace", "uid"] {
                            prop_assert_eq!(
                                next["metadata"].get(f),
                                current["metadata"].get(f),
                                "{} {:?} {}", kind.kind, patch_kind, body
                            );
                        }
                    }
                    Err(e) => {
                        let (code, _) = ApiError::from(e).code_and_reason();
                        prop_assert!((400..500).contains(&code), "{}", code);
                    }
                }
            }
        }
    }
}
