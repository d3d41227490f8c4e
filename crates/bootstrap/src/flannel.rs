//! The pod network's manifest: flannel (VXLAN backend) as a DaemonSet, from a static
//! template (`flannel.yaml`) in which only the pod network, the image references and
//! the API server's address are set, as data. The first control-plane node applies it
//! after `kubeadm init`.

use serde::Serialize;
use serde_yaml::Value;

use crate::cloudconfig::to_yaml;
use crate::nodeimage::NodeImage;
use crate::BootstrapError;

const TEMPLATE: &str = include_str!("flannel.yaml");

/// The CNI network's name on every node.
const CNI_NETWORK: &str = "cbr0";

/// `net-conf.json`: the pod network flannel leases node subnets from.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NetConf<'a> {
    network: &'a str,
    backend: Backend,
}

#[derive(Serialize)]
struct Backend {
    #[serde(rename = "Type")]
    kind: &'static str,
}

/// The CNI configuration list flannel's init container installs: Shoal's flannel
/// plugin (the node image's `/usr/lib/cni/flannel`) and port mappings.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfList {
    cni_version: &'static str,
    name: &'static str,
    plugins: Vec<Plugin>,
}

#[derive(Serialize)]
struct Plugin {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<Capabilities>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Capabilities {
    port_mappings: bool,
}

fn json<T: Serialize>(what: &'static str, value: &T) -> Result<String, BootstrapError> {
    serde_json::to_string_pretty(value).map_err(|source| BootstrapError::Json { what, source })
}

/// The manifest (several YAML documents) for pod network `pod_cidr`, an IPv4 CIDR.
///
/// flanneld reaches the API server at `api` (`host:port`, the cluster's control-plane
/// endpoint, as the kubelet does) rather than through the `kubernetes` Service: the
/// Service's address works only once kube-proxy has written its rules, and on a slow
/// node flanneld would otherwise fail and back off for minutes before that.
pub(crate) fn manifest(
    pod_cidr: &str,
    api: (&str, &str),
    image: &NodeImage,
) -> Result<String, BootstrapError> {
    let net_conf = json(
        "flannel's net-conf.json",
        &NetConf {
            network: pod_cidr,
            backend: Backend { kind: "vxlan" },
        },
    )?;
    let cni_conf = json(
        "flannel's CNI configuration",
        &ConfList {
            cni_version: "1.0.0",
            name: CNI_NETWORK,
            plugins: vec![
                Plugin {
                    kind: "flannel",
                    capabilities: None,
                },
                Plugin {
                    kind: "portmap",
                    capabilities: Some(Capabilities {
                        port_mappings: true,
                    }),
                },
            ],
        },
    )?;
    let flannel_image = image.image("flannel", image.flannel_image_tag);
    let mut out = String::new();
    for doc in serde_yaml::Deserializer::from_str(TEMPLATE) {
        let mut value: Value =
            serde::Deserialize::deserialize(doc).map_err(|source| BootstrapError::Yaml {
                what: "the flannel template",
                source,
            })?;
        match value["kind"].as_str() {
            Some("ConfigMap") => {
                value["data"]["net-conf.json"] = Value::String(net_conf.clone());
                value["data"]["cni-conf.json"] = Value::String(cni_conf.clone());
            }
            Some("DaemonSet") => {
                let spec = &mut value["spec"]["template"]["spec"];
                for list in ["initContainers", "containers"] {
                    if let Some(containers) = spec[list].as_sequence_mut() {
                        for c in containers {
                            c["image"] = Value::String(flannel_image.clone());
                        }
                    }
                }
                if let Some(env) = spec["containers"][0]["env"].as_sequence_mut() {
                    for (name, value) in [
                        ("KUBERNETES_SERVICE_HOST", api.0),
                        ("KUBERNETES_SERVICE_PORT", api.1),
                    ] {
                        let mut var = serde_yaml::Mapping::new();
                        var.insert("name".into(), name.into());
                        var.insert("value".into(), value.into());
                        env.push(Value::Mapping(var));
                    }
                }
            }
            _ => {}
        }
        out.push_str("---\n");
        out.push_str(&to_yaml("the flannel manifest", &value)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NODE_IMAGE;

    #[test]
    fn sets_the_network_and_images() {
        let text = manifest("10.244.0.0/16", ("10.0.0.5", "6443"), &NODE_IMAGE).expect("renders");
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).expect("a document"))
            .collect();
        assert_eq!(docs.len(), 6);
        let cm = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap")
            .expect("ConfigMap");
        let net: serde_json::Value =
            serde_json::from_str(cm["data"]["net-conf.json"].as_str().expect("text"))
                .expect("JSON");
        assert_eq!(net["Network"], "10.244.0.0/16");
        assert_eq!(net["Backend"]["Type"], "vxlan");
        let cni: serde_json::Value =
            serde_json::from_str(cm["data"]["cni-conf.json"].as_str().expect("text"))
                .expect("JSON");
        assert_eq!(cni["plugins"][0]["type"], "flannel");
        let ds = docs
            .iter()
            .find(|d| d["kind"] == "DaemonSet")
            .expect("DaemonSet");
        let spec = &ds["spec"]["template"]["spec"];
        for list in ["initContainers", "containers"] {
            assert_eq!(
                spec[list][0]["image"], "shoal.local/k8s/flannel:v0.28.10",
                "{list}"
            );
            assert_eq!(spec[list][0]["imagePullPolicy"], "Never", "{list}");
        }
        // flanneld goes to the API server directly, not through the Service.
        let env = spec["containers"][0]["env"].as_sequence().expect("env");
        let var = |name: &str| {
            env.iter()
                .find(|v| v["name"] == name)
                .and_then(|v| v["value"].as_str())
        };
        assert_eq!(var("KUBERNETES_SERVICE_HOST"), Some("10.0.0.5"));
        assert_eq!(var("KUBERNETES_SERVICE_PORT"), Some("6443"));
    }
}
