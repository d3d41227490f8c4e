//! CustomResourceDefinitions for Shoal's kinds, so the same controllers can run
//! against a real Kubernetes host cluster.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::resources::{
    BareMetalMachine, Cluster, Host, KeyPair, Machine, NodePool, Organization, Release,
};

/// Every Shoal CRD, ready for a real API server: structural schemas in which
/// unknown-field refusal (`additionalProperties: false`) is left to Shoal's own
/// validation, since Kubernetes forbids it in CRD schemas.
pub fn all() -> Result<Vec<Value>, serde_json::Error> {
    let crds: Vec<CustomResourceDefinition> = vec![
        Organization::crd(),
        Release::crd(),
        Cluster::crd(),
        NodePool::crd(),
        Machine::crd(),
        Host::crd(),
        KeyPair::crd(),
        BareMetalMachine::crd(),
    ];
    crds.into_iter()
        .map(|crd| {
            let mut v = serde_json::to_value(crd)?;
            strip_closed_objects(&mut v);
            Ok(v)
        })
        .collect()
}

/// The OpenAPI v3 schema of one Shoal kind, by kind name.
pub fn schema_of(kind: &str) -> Result<Option<Value>, serde_json::Error> {
    for crd in all()? {
        if crd["spec"]["names"]["kind"] == kind {
            return Ok(Some(
                crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone(),
            ));
        }
    }
    Ok(None)
}

fn strip_closed_objects(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("additionalProperties") == Some(&Value::Bool(false)) {
                map.remove("additionalProperties");
            }
            map.values_mut().for_each(strip_closed_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_closed_objects),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(v: &Value, f: &mut impl FnMut(&serde_json::Map<String, Value>)) {
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
    fn crds_are_structural() -> Result<(), serde_json::Error> {
        let crds = all()?;
        assert_eq!(crds.len(), 8);
        for crd in &crds {
            assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
            let version = &crd["spec"]["versions"][0];
            assert_eq!(version["name"], "v1alpha1");
            assert!(version["schema"]["openAPIV3Schema"]["properties"]["spec"].is_object());
            walk(crd, &mut |m| {
                assert_ne!(m.get("additionalProperties"), Some(&Value::Bool(false)));
                // Structural schemas give every property a type, or mark int-or-string.
                if let Some(Value::Object(props)) = m.get("properties") {
                    for (name, p) in props {
                        let typed = p.get("type").is_some()
                            || p.get("x-kubernetes-int-or-string").is_some()
                            || p.get("x-kubernetes-preserve-unknown-fields").is_some();
                        assert!(
                            typed,
                            "{} property {name} has no type: {p}",
                            crd["metadata"]["name"]
                        );
                    }
                }
            });
        }
        Ok(())
    }
}
