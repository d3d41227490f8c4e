//! `get`, `apply -f` and `delete`: generic object commands.

use std::io::Read;
use std::path::{Path, PathBuf};

use kube::api::DynamicObject;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde::Deserialize;
use serde_json::Value;
use shoal_api::KindInfo;

use crate::args::{DeleteArgs, FileArgs, GetArgs};
use crate::client::{dynamic_api, find_kind, CliError};
use crate::output::{emit_line, print};

fn to_value(obj: &DynamicObject) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

/// `shoal get`.
pub async fn get(client: &Client, args: &GetArgs) -> Result<(), CliError> {
    let kind = find_kind(&args.resource)?;
    let ns = if args.all_namespaces || !kind.namespaced {
        None
    } else {
        Some(args.namespace.clone().unwrap_or_else(|| "default".into()))
    };
    let api = dynamic_api(client, kind, ns.as_deref());
    if let Some(name) = &args.name {
        let obj = api.get(name).await?;
        print(kind, &[to_value(&obj)], true, false, args.output)?;
        return Ok(());
    }
    let mut lp = ListParams::default();
    if let Some(sel) = &args.selector {
        lp = lp.labels(sel);
    }
    let list = api.list(&lp).await?;
    let items: Vec<Value> = list.items.iter().map(to_value).collect();
    print(
        kind,
        &items,
        false,
        args.all_namespaces && kind.namespaced,
        args.output,
    )?;
    Ok(())
}

/// Reads every object in a YAML (multi-document) or JSON file.
pub fn read_objects(path: &Path) -> Result<Vec<Value>, CliError> {
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|source| CliError::File {
        path: PathBuf::from(path),
        source,
    })?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        match v {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                out.extend(
                    m.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

fn kind_of(obj: &Value) -> Result<&'static KindInfo, CliError> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    shoal_api::KINDS
        .iter()
        .find(|k| k.api_version() == api_version && k.kind == kind)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "unknown apiVersion/kind {api_version:?}/{kind:?} in the file"
            ))
        })
}

fn name_of(obj: &Value) -> Result<String, CliError> {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| CliError::Usage("an object in the file has no metadata.name".into()))
}

fn namespace_of(kind: &KindInfo, obj: &Value, default: Option<&str>) -> Option<String> {
    kind.namespaced.then(|| {
        obj.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .or(default)
            .unwrap_or("default")
            .to_owned()
    })
}

fn label(kind: &KindInfo, name: &str) -> String {
    if kind.group.is_empty() {
        format!("{}/{name}", kind.singular)
    } else {
        format!("{}.{}/{name}", kind.singular, kind.group)
    }
}

/// Whether merging `patch` into `current` (RFC 7386, as the server merges it)
/// leaves it as it is.
fn merges_to_itself(current: &DynamicObject, patch: &Value) -> Result<bool, CliError> {
    let current = serde_json::to_value(current)
        .map_err(|e| CliError::Usage(format!("the object read back: {e}")))?;
    let mut merged = current.clone();
    json_patch::merge(&mut merged, patch);
    Ok(merged == current)
}

/// Creates an object, or merges it into the existing one. Returns what happened.
pub async fn apply_one(
    client: &Client,
    obj: Value,
    default_ns: Option<&str>,
) -> Result<String, CliError> {
    let kind = kind_of(&obj)?;
    let name = name_of(&obj)?;
    let ns = namespace_of(kind, &obj, default_ns);
    let api = dynamic_api(client, kind, ns.as_deref());
    match api.get_opt(&name).await? {
        None => {
            let dynamic: DynamicObject = serde_json::from_value(obj)
                .map_err(|e| CliError::Usage(format!("{}: {e}", label(kind, &name))))?;
            api.create(&PostParams::default(), &dynamic).await?;
            Ok(format!("{} created", label(kind, &name)))
        }
        Some(before) => {
            // As kubectl does: a file that already matches the object sends no
            // patch, so a controller writing the object meanwhile (its status)
            // does not make an unchanged apply look configured.
            if merges_to_itself(&before, &obj)? {
                return Ok(format!("{} unchanged", label(kind, &name)));
            }
            let after = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&obj))
                .await?;
            // The server may normalise what the file says (a quantity's form):
            // its answer decides then.
            let changed = before.metadata.resource_version != after.metadata.resource_version;
            Ok(format!(
                "{} {}",
                label(kind, &name),
                if changed { "configured" } else { "unchanged" }
            ))
        }
    }
}

/// `shoal apply -f`.
pub async fn apply(client: &Client, args: &FileArgs) -> Result<(), CliError> {
    for obj in read_objects(&args.filename)? {
        emit_line(format_args!(
            "{}",
            apply_one(client, obj, args.namespace.as_deref()).await?
        ))?;
    }
    Ok(())
}

/// `shoal delete`.
pub async fn delete(client: &Client, args: &DeleteArgs) -> Result<(), CliError> {
    let targets: Vec<(&'static KindInfo, String, Option<String>)> =
        match (&args.filename, &args.resource, &args.name) {
            (Some(f), None, None) => read_objects(f)?
                .iter()
                .map(|o| {
                    let kind = kind_of(o)?;
                    Ok((
                        kind,
                        name_of(o)?,
                        namespace_of(kind, o, args.namespace.as_deref()),
                    ))
                })
                .collect::<Result<_, CliError>>()?,
            (None, Some(r), Some(n)) => {
                let kind = find_kind(r)?;
                let ns = kind
                    .namespaced
                    .then(|| args.namespace.clone().unwrap_or_else(|| "default".into()));
                vec![(kind, n.clone(), ns)]
            }
            _ => {
                return Err(CliError::Usage(
                    "use 'shoal delete -f FILE' or 'shoal delete TYPE NAME'".into(),
                ))
            }
        };
    for (kind, name, ns) in targets {
        dynamic_api(client, kind, ns.as_deref())
            .delete(&name, &DeleteParams::default())
            .await?;
        emit_line(format_args!("{} deleted", label(kind, &name)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored() -> Result<DynamicObject, serde_json::Error> {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "NodePool",
            "metadata": {"name": "p", "namespace": "org-a", "resourceVersion": "7",
                         "labels": {"team": "red"}, "finalizers": ["shoal.io/nodepool"]},
            "spec": {"cluster": "c", "replicas": 1},
            "status": {"readyReplicas": 0},
        }))
    }

    #[test]
    fn a_file_the_object_already_matches_merges_to_itself() -> Result<(), Box<dyn std::error::Error>>
    {
        let file = json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "NodePool",
            "metadata": {"name": "p", "namespace": "org-a", "labels": {"team": "red"}},
            "spec": {"cluster": "c", "replicas": 1},
        });
        assert!(merges_to_itself(&stored()?, &file)?);
        Ok(())
    }

    #[test]
    fn a_changed_or_removed_field_does_not() -> Result<(), Box<dyn std::error::Error>> {
        let changed = json!({"metadata": {"labels": {"team": "blue"}}});
        assert!(!merges_to_itself(&stored()?, &changed)?);
        let removed = json!({"metadata": {"labels": {"team": null}}});
        assert!(!merges_to_itself(&stored()?, &removed)?);
        let added = json!({"spec": {"machine": {"cpu": 2}}});
        assert!(!merges_to_itself(&stored()?, &added)?);
        Ok(())
    }
}
