//! Discovery documents, `/version` and `/openapi/v2`.

use serde_json::{json, Value};
use shoal_api::{registry::group_versions, KINDS};

/// `GET /api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

fn group_doc(group: &str) -> Value {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({ "name": group, "versions": versions, "preferredVersion": preferred })
}

/// `GET /apis`.
pub fn group_list() -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in group_versions() {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    json!({
        "kind": "APIGroupList", "apiVersion": "v1",
        "groups": groups.into_iter().map(group_doc).collect::<Vec<_>>(),
    })
}

/// `GET /apis/<group>`, if served.
pub fn group(group: &str) -> Option<Value> {
    group_versions().iter().any(|(g, _)| *g == group).then(|| {
        let mut doc = group_doc(group);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        doc
    })
}

/// `GET /api/v1` or `GET /apis/<group>/<version>`, if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<_> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for k in kinds {
        let mut verbs = vec![
            "create", "delete", "get", "list", "patch", "update", "watch",
        ];
        verbs.sort_unstable();
        let mut res = json!({
            "name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
            "kind": k.kind, "verbs": verbs,
        });
        if !k.short_names.is_empty() {
            res["shortNames"] = json!(k.short_names);
        }
        if k.group == shoal_api::GROUP {
            res["categories"] = json!(["shoal", "all"]);
        }
        resources.push(res);
        if k.has_status {
            resources.push(json!({
                "name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced,
                "kind": k.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources,
    }))
}

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "31",
        "gitVersion": format!("v1.31.0-shoal.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
        "goVersion": "", "compiler": "rustc", "platform": "linux/amd64",
    })
}

/// The media type of the protobuf `/openapi/v2` answer. Clients ask for the
/// `...spec.v2@v1.0+protobuf` spelling, but `@` is not valid in a Content-Type,
/// so the answer uses the dotted form, as Kubernetes does.
pub const OPENAPI_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// A protobuf OpenAPI v2 document with no definitions: clients then skip
/// client-side validation of Shoal's kinds and leave it to the server, which
/// validates every field itself.
pub fn openapi_protobuf() -> Vec<u8> {
    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![tag, u8::try_from(bytes.len()).expect("short strings only")];
        out.extend_from_slice(bytes);
        out
    }
    let info = [
        field(0x0a, b"Shoal"),
        field(0x12, shoal_api::VERSION.as_bytes()),
    ]
    .concat();
    [field(0x0a, b"2.0"), field(0x12, &info)].concat()
}

/// The JSON OpenAPI v2 document, with the schemas of Shoal's kinds.
pub fn openapi_json() -> Value {
    let mut definitions = serde_json::Map::new();
    if let Ok(crds) = shoal_api::crd::all() {
        for crd in crds {
            let kind = crd["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let mut schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
            schema["x-kubernetes-group-version-kind"] = json!([{
                "group": shoal_api::GROUP, "version": shoal_api::VERSION, "kind": kind,
            }]);
            definitions.insert(format!("io.shoal.{}.{kind}", shoal_api::VERSION), schema);
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Shoal", "version": shoal_api::VERSION},
        "paths": {},
        "definitions": definitions,
    })
}
