//! The OpenAPI documents, as kube-apiserver serves them:
//!
//! - `/openapi/v2`: Swagger 2.0 with a path for every resource and verb (each
//!   operation carries `x-kubernetes-action` and `x-kubernetes-group-version-kind`)
//!   and the definitions of every kind; in JSON, or in protobuf (gnostic's
//!   `openapi.v2.Document`, what kubectl asks for) with the definitions only.
//! - `/openapi/v3`: the discovery document naming one document per group-version,
//!   and `/openapi/v3/apis/<group>/<version>` (or `/openapi/v3/api/v1`) for each.
//!
//! Shoal's kinds get their CRD schemas; in v2 they are made v2-compatible the way
//! kube-apiserver does it for custom resources (no `anyOf`, `nullable` fields
//! untyped), so that kubectl's parser accepts every definition.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use shoal_api::registry::group_versions;
use shoal_api::{KindInfo, KINDS};

/// The media type of the protobuf `/openapi/v2` answer. Clients ask for the
/// `...spec.v2@v1.0+protobuf` spelling, but `@` is not valid in a Content-Type,
/// so the answer uses the dotted form, as Kubernetes does.
pub const OPENAPI_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

/// The definition name of a kind, e.g. `io.shoal.v1alpha1.Cluster`.
fn def_name(k: &KindInfo) -> String {
    if k.group == shoal_api::GROUP {
        format!("io.shoal.{}.{}", k.version, k.kind)
    } else if k.group.is_empty() {
        format!("io.k8s.api.core.{}.{}", k.version, k.kind)
    } else {
        let short = k.group.split('.').next().unwrap_or(k.group);
        format!("io.k8s.api.{short}.{}.{}", k.version, k.kind)
    }
}

fn gvk(k: &KindInfo, kind: &str) -> Value {
    json!({"group": k.group, "version": k.version, "kind": kind})
}

/// The OpenAPI v3 schema of a kind: the CRD schema for Shoal's kinds, an open
/// object with the common fields for the supporting kinds.
fn v3_schema(k: &KindInfo, crds: &[Value]) -> Value {
    let crd = crds
        .iter()
        .find(|c| k.group == shoal_api::GROUP && c["spec"]["names"]["kind"] == k.kind);
    match crd.and_then(|c| c.pointer("/spec/versions/0/schema/openAPIV3Schema")) {
        Some(schema) => schema.clone(),
        None => json!({
            "description": format!("{} {}: served by Shoal; see the Kubernetes API reference for its fields.", k.api_version(), k.kind),
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
            },
        }),
    }
}

/// Makes a v3 structural schema v2-compatible, as kube-apiserver publishes
/// custom resources: no `anyOf`/`oneOf`/`allOf`/`not`, a nullable or
/// unknown-preserving field untyped, an array without items untyped, and no
/// `x-kubernetes-*` markers.
fn to_v2(schema: &Value) -> Value {
    let Some(src) = schema.as_object() else {
        return schema.clone();
    };
    let mut m: Map<String, Value> = src
        .iter()
        .filter(|(k, _)| {
            !matches!(k.as_str(), "anyOf" | "oneOf" | "allOf" | "not" | "nullable")
                && !k.starts_with("x-kubernetes-")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let nullable = src.get("nullable") == Some(&Value::Bool(true));
    let preserve = src.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if nullable {
        m.remove("type");
    }
    if nullable || preserve {
        m.remove("items");
        m.remove("properties");
    }
    if m.get("type") == Some(&json!("array")) && !m.contains_key("items") {
        m.remove("type");
    }
    if let Some(Value::Object(props)) = m.get_mut("properties") {
        for v in props.values_mut() {
            *v = to_v2(v);
        }
    }
    if let Some(items) = m.get_mut("items") {
        *items = to_v2(items);
    }
    if let Some(extra @ Value::Object(_)) = m.get_mut("additionalProperties") {
        *extra = to_v2(extra);
    }
    Value::Object(m)
}

/// Rewrites `#/definitions/` references as `#/components/schemas/`.
fn refs_to_v3(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/definitions/") {
                    *r = format!("#/components/schemas/{name}");
                }
            }
            m.values_mut().for_each(refs_to_v3);
        }
        Value::Array(a) => a.iter_mut().for_each(refs_to_v3),
        _ => {}
    }
}

fn meta_definitions() -> Vec<(String, Value)> {
    vec![
        (
            format!("{META}.Status"),
            json!({
                "description": "Status is the answer to a request that failed, or to a delete.",
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"$ref": format!("#/definitions/{META}.ListMeta")},
                    "status": {"type": "string", "description": "Success or Failure."},
                    "message": {"type": "string"},
                    "reason": {"type": "string"},
                    "details": {"type": "object"},
                    "code": {"type": "integer", "format": "int32"},
                },
            }),
        ),
        (
            format!("{META}.ObjectMeta"),
            json!({
                "description": "ObjectMeta is the metadata every object has: name, namespace, labels, annotations, and what the server owns.",
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "The object's name, unique in its namespace."},
                    "generateName": {"type": "string", "description": "A prefix the server completes into a unique name when name is empty."},
                    "namespace": {"type": "string", "description": "The namespace; an organization's is org-<name>."},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Labels for selectors."},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Annotations; shoal.io/requested-by on a KeyPair is the server's."},
                    "finalizers": {"type": "array", "items": {"type": "string"}, "description": "What must finish before the object is removed."},
                    "ownerReferences": {"type": "array", "items": {"type": "object", "properties": {
                        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                        "name": {"type": "string"}, "uid": {"type": "string"},
                        "controller": {"type": "boolean"}, "blockOwnerDeletion": {"type": "boolean"},
                    }}, "description": "The objects this one belongs to."},
                    "uid": {"type": "string", "description": "Set by the server."},
                    "resourceVersion": {"type": "string", "description": "Set by the server; send it back for optimistic concurrency."},
                    "generation": {"type": "integer", "format": "int64", "description": "Set by the server; bumped on spec changes."},
                    "creationTimestamp": {"type": "string", "format": "date-time", "description": "Set by the server."},
                    "deletionTimestamp": {"type": "string", "format": "date-time", "description": "Set by the server on delete while finalizers remain."},
                    "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
                    "managedFields": {"type": "array", "items": {"type": "object"}},
                    "selfLink": {"type": "string"},
                    "clusterName": {"type": "string"},
                },
            }),
        ),
        (
            format!("{META}.ListMeta"),
            json!({
                "description": "ListMeta carries the revision of a list and the token for its next page.",
                "type": "object",
                "properties": {
                    "resourceVersion": {"type": "string"},
                    "continue": {"type": "string"},
                },
            }),
        ),
        (
            format!("{META}.Patch"),
            json!({
                "description": "A merge patch (an object) or a JSON patch (a list of operations).",
                "type": "object",
            }),
        ),
        (
            format!("{META}.DeleteOptions"),
            json!({
                "description": "DeleteOptions may carry a resourceVersion precondition.",
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "preconditions": {"type": "object", "properties": {
                        "resourceVersion": {"type": "string"},
                        "uid": {"type": "string"},
                    }},
                },
            }),
        ),
    ]
}

/// Every definition in v3 form, by name; Shoal's kinds and their lists carry
/// `x-kubernetes-group-version-kind`.
fn definitions_v3() -> Vec<(String, Value)> {
    let crds = shoal_api::crd::all().unwrap_or_default();
    let mut defs = meta_definitions();
    for k in KINDS {
        let name = def_name(k);
        let mut schema = v3_schema(k, &crds);
        let list_name = format!("{name}List");
        let mut list = json!({
            "description": format!("A list of {}.", k.plural),
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"$ref": format!("#/definitions/{META}.ListMeta")},
                "items": {"type": "array", "items": {"$ref": format!("#/definitions/{name}")}},
            },
        });
        if k.group == shoal_api::GROUP {
            // As kube-apiserver publishes custom resources: the common fields too.
            if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                for (field, def) in [
                    (
                        "apiVersion",
                        json!({"type": "string", "description": format!("{} for this kind.", k.api_version())}),
                    ),
                    (
                        "kind",
                        json!({"type": "string", "description": format!("{}.", k.kind)}),
                    ),
                    (
                        "metadata",
                        json!({"$ref": format!("#/definitions/{META}.ObjectMeta")}),
                    ),
                ] {
                    props.insert(field.to_owned(), def);
                }
            }
            if let (Some(s), Some(l)) = (schema.as_object_mut(), list.as_object_mut()) {
                s.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([gvk(k, k.kind)]),
                );
                l.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([gvk(k, &format!("{}List", k.kind))]),
                );
            }
        }
        // Both Event views share a kind name but not a group: one definition each.
        if !defs.iter().any(|(n, _)| *n == name) {
            defs.push((name, schema));
            defs.push((list_name, list));
        }
    }
    defs
}

/// One operation of the API, before it is written in v2 or v3 form.
struct Op {
    method: &'static str,
    action: &'static str,
    id: String,
    description: String,
    /// The body's definition, for create, update and patch.
    body: Option<String>,
    /// The answer's definition.
    answer: String,
    /// Query parameters: (name, type, description).
    query: Vec<(&'static str, &'static str, &'static str)>,
    consumes: Vec<&'static str>,
    kind: &'static KindInfo,
    created: bool,
}

const LIST_QUERY: &[(&str, &str, &str)] = &[
    (
        "labelSelector",
        "string",
        "A label selector, e.g. env=prod,team in (a,b).",
    ),
    (
        "fieldSelector",
        "string",
        "A field selector: metadata.name or metadata.namespace (and kind-specific fields).",
    ),
    (
        "limit",
        "integer",
        "The page size; the answer's metadata.continue fetches the next page.",
    ),
    (
        "continue",
        "string",
        "The continue token of the previous page.",
    ),
    (
        "resourceVersion",
        "string",
        "With watch: the revision to watch from.",
    ),
    (
        "watch",
        "boolean",
        "Stream changes (ADDED, MODIFIED, DELETED, BOOKMARK) instead of listing.",
    ),
    (
        "allowWatchBookmarks",
        "boolean",
        "With watch: send BOOKMARK events.",
    ),
    (
        "timeoutSeconds",
        "integer",
        "With watch: end the stream after this many seconds.",
    ),
];

fn camel(s: &str) -> String {
    s.split(['.', '-'])
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// The paths of one kind: path → (path parameters, operations).
fn kind_paths(k: &'static KindInfo) -> Vec<(String, Vec<&'static str>, Vec<Op>)> {
    let gv = k.group_version_path();
    let name = def_name(k);
    let list = format!("{name}List");
    let gvid = format!("{}{}", camel(k.group), camel(k.version));
    let scope = if k.namespaced { "Namespaced" } else { "" };
    let base = if k.namespaced {
        format!("{gv}/namespaces/{{namespace}}/{}", k.plural)
    } else {
        format!("{gv}/{}", k.plural)
    };
    let ns_param: Vec<&'static str> = if k.namespaced {
        vec!["namespace"]
    } else {
        Vec::new()
    };
    let with_name = |mut v: Vec<&'static str>| {
        v.push("name");
        v
    };
    let patch_types = if k.group == shoal_api::GROUP {
        vec![
            "application/merge-patch+json",
            "application/json-patch+json",
        ]
    } else {
        vec![
            "application/merge-patch+json",
            "application/json-patch+json",
            "application/strategic-merge-patch+json",
        ]
    };
    let op =
        |method, action, verb: &str, suffix: &str, body: Option<&String>, answer: &String| Op {
            method,
            action,
            id: format!("{verb}{gvid}{scope}{}{suffix}", k.kind),
            description: format!("{action} {} {}", k.kind, suffix.to_lowercase())
                .trim()
                .to_owned(),
            body: body.cloned(),
            answer: answer.clone(),
            query: Vec::new(),
            consumes: vec!["application/json", "application/yaml"],
            kind: k,
            created: false,
        };
    let mut collection = vec![op("get", "list", "list", "", None, &list)];
    collection[0].query = LIST_QUERY.to_vec();
    let mut create = op("post", "post", "create", "", Some(&name), &name);
    create.created = true;
    collection.push(create);
    let mut item = vec![
        op("get", "get", "read", "", None, &name),
        op("put", "put", "replace", "", Some(&name), &name),
    ];
    let mut patch = op(
        "patch",
        "patch",
        "patch",
        "",
        Some(&format!("{META}.Patch")),
        &name,
    );
    patch.consumes = patch_types.clone();
    item.push(patch);
    let mut delete = op(
        "delete",
        "delete",
        "delete",
        "",
        Some(&format!("{META}.DeleteOptions")),
        &name,
    );
    delete.description = format!(
        "delete a {}: at once, or marked with deletionTimestamp while it has finalizers",
        k.kind
    );
    item.push(delete);
    let mut out = vec![
        (base.clone(), ns_param.clone(), collection),
        (
            format!("{base}/{{name}}"),
            with_name(ns_param.clone()),
            item,
        ),
    ];
    if k.namespaced {
        let mut all = op("get", "list", "list", "ForAllNamespaces", None, &list);
        all.id = format!("list{gvid}{}ForAllNamespaces", k.kind);
        all.query = LIST_QUERY.to_vec();
        out.push((format!("{gv}/{}", k.plural), Vec::new(), vec![all]));
    }
    if k.has_status {
        let mut status = vec![
            op("get", "get", "read", "Status", None, &name),
            op("put", "put", "replace", "Status", Some(&name), &name),
        ];
        let mut patch = op(
            "patch",
            "patch",
            "patch",
            "Status",
            Some(&format!("{META}.Patch")),
            &name,
        );
        patch.consumes = patch_types;
        status.push(patch);
        out.push((
            format!("{base}/{{name}}/status"),
            with_name(ns_param.clone()),
            status,
        ));
    }
    if k.behavior.endpoints {
        let mut endpoints = op("get", "get", "read", "Endpoints", None, &name);
        endpoints.answer = String::new();
        endpoints.description =
            "the gateway's backends of the cluster (its API and ingress), read-only".into();
        out.push((
            format!("{base}/{{name}}/endpoints"),
            with_name(ns_param),
            vec![endpoints],
        ));
    }
    out
}

fn path_param(name: &str, v3: bool) -> Value {
    let description = match name {
        "namespace" => "The object's namespace (an organization's is org-<name>).",
        _ => "The object's name.",
    };
    if v3 {
        json!({"name": name, "in": "path", "required": true, "description": description,
               "schema": {"type": "string", "uniqueItems": true}})
    } else {
        json!({"name": name, "in": "path", "required": true, "description": description,
               "type": "string", "uniqueItems": true})
    }
}

fn schema_ref(def: &str, v3: bool) -> Value {
    if def.is_empty() {
        return json!({"type": "object"});
    }
    if v3 {
        json!({"$ref": format!("#/components/schemas/{def}")})
    } else {
        json!({"$ref": format!("#/definitions/{def}")})
    }
}

const PRODUCES: &[&str] = &["application/json", "application/yaml"];

fn operation(op: &Op, v3: bool) -> Value {
    let mut params: Vec<Value> = op
        .query
        .iter()
        .map(|(name, ty, description)| {
            if v3 {
                json!({"name": name, "in": "query", "description": description,
                       "schema": {"type": ty}, "uniqueItems": true})
            } else {
                json!({"name": name, "in": "query", "description": description,
                       "type": ty, "uniqueItems": true})
            }
        })
        .collect();
    let ok_code = if op.created { "201" } else { "200" };
    let status = format!("{META}.Status");
    let mut responses = Map::new();
    for (code, description, def) in [
        (ok_code, "OK", op.answer.as_str()),
        ("401", "Unauthorized", status.as_str()),
    ] {
        let answer = if v3 {
            let content: Map<String, Value> = PRODUCES
                .iter()
                .map(|t| ((*t).to_owned(), json!({"schema": schema_ref(def, true)})))
                .collect();
            json!({"description": description, "content": content})
        } else {
            json!({"description": description, "schema": schema_ref(def, false)})
        };
        responses.insert(code.to_owned(), answer);
    }
    let mut out = json!({
        "operationId": op.id,
        "description": op.description,
        "tags": [format!("{}_{}", op.kind.group.split('.').next().filter(|g| !g.is_empty()).unwrap_or("core"), op.kind.version)],
        "responses": responses,
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": gvk(op.kind, op.kind.kind),
    });
    let Some(map) = out.as_object_mut() else {
        return out;
    };
    if let Some(body) = &op.body {
        let required = op.method != "delete";
        if v3 {
            let content: Map<String, Value> = op
                .consumes
                .iter()
                .map(|t| ((*t).to_owned(), json!({"schema": schema_ref(body, true)})))
                .collect();
            map.insert(
                "requestBody".into(),
                json!({"content": content, "required": required}),
            );
        } else {
            params.push(json!({"name": "body", "in": "body", "required": required,
                               "schema": schema_ref(body, false)}));
            map.insert("consumes".into(), json!(op.consumes));
        }
    }
    if !v3 {
        map.insert("produces".into(), json!(PRODUCES));
        map.insert("schemes".into(), json!(["https"]));
    }
    if !params.is_empty() {
        map.insert("parameters".into(), Value::Array(params));
    }
    out
}

/// The paths of the kinds `keep` selects.
fn paths(keep: impl Fn(&KindInfo) -> bool, v3: bool) -> Map<String, Value> {
    let mut out = Map::new();
    for k in KINDS.iter().filter(|k| keep(k)) {
        for (path, params, ops) in kind_paths(k) {
            let mut item = Map::new();
            if !params.is_empty() {
                item.insert(
                    "parameters".into(),
                    Value::Array(params.iter().map(|p| path_param(p, v3)).collect()),
                );
            }
            for op in &ops {
                item.insert(op.method.to_owned(), operation(op, v3));
            }
            out.insert(path, Value::Object(item));
        }
    }
    out
}

fn security_definition() -> Value {
    json!({"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header",
                           "description": "Bearer token: 'Authorization: Bearer <token>'"}})
}

/// The JSON `/openapi/v2` document: every path and definition, built once.
pub fn v2() -> Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build_v2).clone()
}

fn build_v2() -> Value {
    let definitions: Map<String, Value> = definitions_v3()
        .into_iter()
        .map(|(n, s)| {
            let mut v2 = to_v2(&s);
            // The markers stripped from nested fields stay on the definition itself.
            if let (Some(g), Some(m)) =
                (s.get("x-kubernetes-group-version-kind"), v2.as_object_mut())
            {
                m.insert("x-kubernetes-group-version-kind".into(), g.clone());
            }
            (n, v2)
        })
        .collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Shoal", "version": shoal_api::VERSION},
        "paths": paths(|_| true, false),
        "definitions": definitions,
        "securityDefinitions": security_definition(),
        "security": [{"BearerToken": []}],
    })
}

/// The group-version paths `/openapi/v3` serves, e.g. `apis/shoal.io/v1alpha1`.
fn v3_group_versions() -> Vec<(String, &'static str, &'static str)> {
    group_versions()
        .into_iter()
        .map(|(g, v)| {
            let path = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            (path, g, v)
        })
        .collect()
}

/// `/openapi/v3/<path>` for one group-version, e.g. `apis/shoal.io/v1alpha1`.
pub fn v3(gv_path: &str) -> Option<Value> {
    let (_, group, version) = v3_group_versions()
        .into_iter()
        .find(|(p, _, _)| p == gv_path)?;
    let mut schemas: Map<String, Value> = definitions_v3()
        .into_iter()
        .filter(|(name, _)| {
            name.starts_with(META)
                || KINDS.iter().any(|k| {
                    k.group == group
                        && k.version == version
                        && (def_name(k) == *name || format!("{}List", def_name(k)) == *name)
                })
        })
        .collect();
    let mut doc_paths = Value::Object(paths(|k| k.group == group && k.version == version, true));
    refs_to_v3(&mut doc_paths);
    let mut schemas_value = Value::Object(std::mem::take(&mut schemas));
    refs_to_v3(&mut schemas_value);
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Shoal", "version": shoal_api::VERSION},
        "paths": doc_paths,
        "components": {
            "schemas": schemas_value,
            "securitySchemes": security_definition(),
        },
        "security": [{"BearerToken": []}],
    }))
}

/// `/openapi/v3`: where each group-version's document is, with a hash of it.
pub fn v3_discovery() -> Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build_v3_discovery).clone()
}

fn build_v3_discovery() -> Value {
    let mut out = Map::new();
    for (path, _, _) in v3_group_versions() {
        let hash = v3(&path)
            .map(|doc| {
                let digest = Sha256::digest(doc.to_string().as_bytes());
                digest
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect::<String>()
            })
            .unwrap_or_default();
        out.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
        );
    }
    json!({ "paths": out })
}

/// The protobuf `/openapi/v2`: gnostic's `openapi.v2.Document` with the info and
/// every definition (kubectl's `explain` and client-side validation read these),
/// without paths, which kubectl does not read.
pub fn v2_protobuf() -> Vec<u8> {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(build_v2_protobuf).clone()
}

fn build_v2_protobuf() -> Vec<u8> {
    let doc = v2();
    let mut out = Vec::new();
    pb::string(&mut out, 1, "2.0");
    let mut info = Vec::new();
    pb::string(&mut info, 1, "Shoal");
    pb::string(&mut info, 2, shoal_api::VERSION);
    pb::message(&mut out, 2, &info);
    let mut defs = Vec::new();
    if let Some(map) = doc["definitions"].as_object() {
        for (name, schema) in map {
            pb::message(&mut defs, 1, &pb::named_schema(name, schema));
        }
    }
    pb::message(&mut out, 9, &defs);
    out
}

/// A small protobuf writer for gnostic's OpenAPI v2 messages.
mod pb {
    use serde_json::Value;

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, (u64::from(field) << 3) | u64::from(wire));
    }

    /// A length-delimited field.
    pub fn message(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
        key(out, field, 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// A string field (omitted when empty, as proto3 does).
    pub fn string(out: &mut Vec<u8>, field: u32, s: &str) {
        if !s.is_empty() {
            message(out, field, s.as_bytes());
        }
    }

    fn boolean(out: &mut Vec<u8>, field: u32, b: bool) {
        if b {
            key(out, field, 0);
            varint(out, 1);
        }
    }

    fn int64(out: &mut Vec<u8>, field: u32, v: i64) {
        if v != 0 {
            key(out, field, 0);
            varint(out, v as u64);
        }
    }

    fn double(out: &mut Vec<u8>, field: u32, v: f64) {
        if v != 0.0 {
            key(out, field, 1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// `openapi.v2.Any` with the value as YAML.
    fn any(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        let yaml = serde_yaml::to_string(v).unwrap_or_default();
        string(&mut out, 2, &yaml);
        out
    }

    /// `openapi.v2.NamedSchema`.
    pub fn named_schema(name: &str, schema: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, 1, name);
        message(&mut out, 2, &self::schema(schema));
        out
    }

    /// `openapi.v2.Schema`.
    fn schema(s: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        let text = |f: &str| s.get(f).and_then(Value::as_str).unwrap_or_default();
        let num = |f: &str| s.get(f).and_then(Value::as_f64).unwrap_or_default();
        let int = |f: &str| s.get(f).and_then(Value::as_i64).unwrap_or_default();
        let flag = |f: &str| s.get(f).and_then(Value::as_bool).unwrap_or_default();
        string(&mut out, 1, text("$ref"));
        string(&mut out, 2, text("format"));
        string(&mut out, 3, text("title"));
        string(&mut out, 4, text("description"));
        if let Some(d) = s.get("default") {
            message(&mut out, 5, &any(d));
        }
        double(&mut out, 6, num("multipleOf"));
        double(&mut out, 7, num("maximum"));
        boolean(&mut out, 8, flag("exclusiveMaximum"));
        double(&mut out, 9, num("minimum"));
        boolean(&mut out, 10, flag("exclusiveMinimum"));
        int64(&mut out, 11, int("maxLength"));
        int64(&mut out, 12, int("minLength"));
        string(&mut out, 13, text("pattern"));
        int64(&mut out, 14, int("maxItems"));
        int64(&mut out, 15, int("minItems"));
        boolean(&mut out, 16, flag("uniqueItems"));
        int64(&mut out, 17, int("maxProperties"));
        int64(&mut out, 18, int("minProperties"));
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            string(&mut out, 19, r.as_str().unwrap_or_default());
        }
        for e in s
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            message(&mut out, 20, &any(e));
        }
        match s.get("additionalProperties") {
            Some(Value::Bool(b)) => {
                let mut item = Vec::new();
                key(&mut item, 2, 0);
                varint(&mut item, u64::from(*b));
                message(&mut out, 21, &item);
            }
            Some(extra @ Value::Object(_)) => {
                let mut item = Vec::new();
                message(&mut item, 1, &schema(extra));
                message(&mut out, 21, &item);
            }
            _ => {}
        }
        let types: Vec<&str> = match s.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() {
            let mut item = Vec::new();
            for t in types {
                string(&mut item, 1, t);
            }
            message(&mut out, 22, &item);
        }
        match s.get("items") {
            Some(one @ Value::Object(_)) => {
                let mut item = Vec::new();
                message(&mut item, 1, &schema(one));
                message(&mut out, 23, &item);
            }
            Some(Value::Array(many)) => {
                let mut item = Vec::new();
                for one in many {
                    message(&mut item, 1, &schema(one));
                }
                message(&mut out, 23, &item);
            }
            _ => {}
        }
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            let mut item = Vec::new();
            for (name, p) in props {
                message(&mut item, 1, &named_schema(name, p));
            }
            message(&mut out, 25, &item);
        }
        boolean(&mut out, 27, flag("readOnly"));
        if let Some(map) = s.as_object() {
            for (name, v) in map.iter().filter(|(k, _)| k.starts_with("x-")) {
                let mut named = Vec::new();
                string(&mut named, 1, name);
                message(&mut named, 2, &any(v));
                message(&mut out, 31, &named);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(v: &Value, f: &mut impl FnMut(&Map<String, Value>)) {
        match v {
            Value::Object(m) => {
                f(m);
                m.values().for_each(|c| walk(c, f));
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, f)),
            _ => {}
        }
    }

    #[test]
    fn v2_has_every_path_verb_and_a_kind_on_each_operation() {
        let doc = v2();
        let paths = doc["paths"].as_object().expect("paths");
        for k in KINDS {
            let base = if k.namespaced {
                format!(
                    "{}/namespaces/{{namespace}}/{}",
                    k.group_version_path(),
                    k.plural
                )
            } else {
                format!("{}/{}", k.group_version_path(), k.plural)
            };
            let item = format!("{base}/{{name}}");
            for (path, verbs) in [
                (&base, &["get", "post"][..]),
                (&item, &["get", "put", "patch", "delete"][..]),
            ] {
                for verb in verbs {
                    let op = &paths[path.as_str()][*verb];
                    assert_eq!(
                        op["x-kubernetes-group-version-kind"]["kind"], k.kind,
                        "{verb} {path}"
                    );
                    assert!(op["x-kubernetes-action"].is_string(), "{verb} {path}");
                }
            }
            if k.has_status {
                assert!(paths[&format!("{item}/status")]["patch"].is_object());
            }
        }
        let mut ids: Vec<&str> = paths
            .values()
            .flat_map(|p| p.as_object().into_iter().flatten())
            .filter_map(|(_, op)| op["operationId"].as_str())
            .collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "operation ids are unique");
        // Every reference resolves.
        let defs = doc["definitions"].as_object().expect("definitions");
        walk(&doc, &mut |m| {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                let name = r.trim_start_matches("#/definitions/");
                assert!(defs.contains_key(name), "{r} does not resolve");
            }
        });
        assert_eq!(
            defs["io.shoal.v1alpha1.Cluster"]["x-kubernetes-group-version-kind"][0]["kind"],
            "Cluster"
        );
    }

    /// What kubectl's parser (kube-openapi's `proto` package) refuses: arrays
    /// without items, unknown primitive types, several types, v3-only keywords.
    /// Visits a schema and its nested schemas (not default values or examples).
    fn walk_schema(s: &Value, f: &mut impl FnMut(&Map<String, Value>)) {
        let Some(m) = s.as_object() else { return };
        f(m);
        if let Some(props) = m.get("properties").and_then(Value::as_object) {
            props.values().for_each(|p| walk_schema(p, f));
        }
        for nested in ["items", "additionalProperties"] {
            if let Some(n) = m.get(nested) {
                walk_schema(n, f);
            }
        }
    }

    #[test]
    fn v2_definitions_are_what_kubectl_parses() {
        let doc = v2();
        let defs = doc["definitions"].as_object().expect("definitions");
        defs.values().for_each(|d| {
            walk_schema(d, &mut |m| {
                for kw in ["anyOf", "oneOf", "allOf", "not", "nullable"] {
                    assert!(!m.contains_key(kw), "{kw} in {m:?}");
                }
                match m.get("type") {
                    None => {}
                    Some(Value::String(t)) => {
                        assert!(
                            ["object", "array", "string", "integer", "number", "boolean"]
                                .contains(&t.as_str()),
                            "type {t}"
                        );
                        if t == "array" {
                            assert!(m.contains_key("items"), "array without items: {m:?}");
                        }
                    }
                    Some(other) => panic!("type {other}"),
                }
            })
        });
        let spec = &doc["definitions"]["io.shoal.v1alpha1.Cluster"]["properties"]["spec"];
        assert!(spec["properties"]["release"]["type"] == "string", "{spec}");
        assert!(spec["properties"]["controlPlane"]["properties"]["cpu"]
            .get("type")
            .is_none());
    }

    #[test]
    fn v3_discovery_names_a_document_per_group_version() {
        let disc = v3_discovery();
        let paths = disc["paths"].as_object().expect("paths");
        for (g, v) in group_versions() {
            let key = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            let url = paths[&key]["serverRelativeURL"].as_str().expect("url");
            assert!(
                url.starts_with(&format!("/openapi/v3/{key}?hash=")),
                "{url}"
            );
            let doc = v3(&key).expect("a document");
            assert_eq!(doc["openapi"], "3.0.0");
            let schemas = doc["components"]["schemas"].as_object().expect("schemas");
            walk(&doc, &mut |m| {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    let name = r
                        .strip_prefix("#/components/schemas/")
                        .unwrap_or_else(|| panic!("{r} is not a v3 reference"));
                    assert!(schemas.contains_key(name), "{r} does not resolve in {key}");
                }
            });
        }
        assert!(v3("apis/nope/v1").is_none());
    }

    #[test]
    fn protobuf_carries_every_definition_name() {
        let bytes = v2_protobuf();
        let doc = v2();
        for name in doc["definitions"].as_object().expect("definitions").keys() {
            let needle = name.as_bytes();
            assert!(
                bytes.windows(needle.len()).any(|w| w == needle),
                "{name} is missing"
            );
        }
        let gvk = b"x-kubernetes-group-version-kind";
        assert!(bytes.windows(gvk.len()).any(|w| w == gvk));
    }
}
