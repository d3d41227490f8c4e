//! Prometheus file-based service discovery output: every backend as a target group,
//! for external load balancers and monitoring that read `file_sd_configs`.

use std::path::Path;

use serde::Serialize;
use std::collections::BTreeMap;

use crate::routes::{RouteTable, Service, Via};

/// One target group.
#[derive(Debug, Serialize, PartialEq)]
pub struct TargetGroup {
    /// `address:port` on the cluster network.
    pub targets: Vec<String>,
    /// What the target is.
    pub labels: BTreeMap<String, String>,
}

/// The target groups for `table`, sorted.
pub fn render(table: &RouteTable) -> Vec<TargetGroup> {
    let mut groups = Vec::new();
    for route in table.routes() {
        let (ns, cluster) = route
            .key
            .split_once('/')
            .unwrap_or(("", route.key.as_str()));
        for service in [Service::Api, Service::IngressHttp, Service::IngressHttps] {
            for b in route.backends(service) {
                let mut labels = BTreeMap::new();
                labels.insert("namespace".into(), ns.to_owned());
                labels.insert("cluster".into(), cluster.to_owned());
                labels.insert("service".into(), service.as_str().to_owned());
                labels.insert("machine".into(), b.machine.clone());
                labels.insert("host".into(), b.host.clone());
                let server_name = match service {
                    Service::Api => route.api_name(),
                    _ => format!("*.{}", route.domain),
                };
                labels.insert("server_name".into(), server_name);
                if let Via::Agent(ep) = b.via {
                    labels.insert("forward_endpoint".into(), ep.to_string());
                }
                groups.push(TargetGroup {
                    targets: vec![b.target.to_string()],
                    labels,
                });
            }
        }
    }
    groups.sort_by(|a, b| (&a.labels, &a.targets).cmp(&(&b.labels, &b.targets)));
    groups
}

/// Writes the file atomically (a temporary file, then a rename).
pub fn write(path: &Path, table: &RouteTable) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(&render(table)).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{Backend, ClusterRoute};

    #[test]
    fn every_backend_is_a_labelled_target() {
        let b = |m: &str, port| Backend {
            machine: format!("org-a/{m}"),
            host: "h1".into(),
            target: format!("10.0.0.10:{port}").parse().expect("addr"),
            via: Via::Agent("127.0.0.1:7000".parse().expect("addr")),
        };
        let table = RouteTable::from_routes([ClusterRoute {
            key: "org-a/demo".into(),
            domain: "demo.a.example".into(),
            api: vec![b("demo-cp-0", 6443)],
            ingress_http: vec![b("demo-w-0", 30080)],
            ..Default::default()
        }]);
        let groups = render(&table);
        assert_eq!(groups.len(), 2);
        let api = groups
            .iter()
            .find(|g| g.labels["service"] == "api")
            .expect("api group");
        assert_eq!(api.targets, vec!["10.0.0.10:6443".to_string()]);
        assert_eq!(api.labels["server_name"], "api.demo.a.example");
        assert_eq!(api.labels["forward_endpoint"], "127.0.0.1:7000");
        let json = serde_json::to_value(&groups).expect("json");
        assert!(json[0]["targets"].is_array());
    }
}
