//! The route table: which backends serve which names. Pure data, rebuilt from the
//! Clusters, Machines and Hosts whenever one of them changes.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;

use serde::Serialize;
use shoal_api::forward::GUEST_API_PORT;
use shoal_api::resources::cluster::ProviderType;
use shoal_api::resources::common::MachineRole;
use shoal_api::resources::organization::namespace_org;
use shoal_api::{Cluster, Host, Machine, MachinePhase};

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// TLS, routed by SNI (port 443).
    Tls,
    /// Plain HTTP, routed by `Host` (port 80).
    Http,
}

impl Listener {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Tls => "tls",
            Listener::Http => "http",
        }
    }
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Service {
    /// The guest API on the control-plane Machines.
    Api,
    /// Ingress HTTP on the workers.
    IngressHttp,
    /// Ingress TLS on the workers.
    IngressHttps,
}

impl Service {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Api => "api",
            Service::IngressHttp => "ingress-http",
            Service::IngressHttps => "ingress-https",
        }
    }
}

/// How the gateway reaches a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "address")]
pub enum Via {
    /// Through the forward endpoint of the agent that runs the VM.
    Agent(SocketAddr),
    /// Straight to the target: only where the gateway shares the guests' network
    /// (and in benchmarks against local servers).
    Direct,
}

/// One backend: a port on one Machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// `<namespace>/<machine>`.
    pub machine: String,
    /// The Host the Machine runs on.
    pub host: String,
    /// The Machine's address and port on the cluster network.
    pub target: SocketAddrV4,
    /// How to get there.
    pub via: Via,
}

/// Everything the gateway knows about one cluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterRoute {
    /// `<namespace>/<cluster>`.
    pub key: String,
    /// `<cluster>.<org>.<base-domain>`; the API is `api.` under it.
    pub domain: String,
    /// The cluster CA (PEM), for health checks of the API backends.
    pub ca_pem: Option<String>,
    /// Ready control-plane Machines, port 6443.
    pub api: Vec<Backend>,
    /// Ready workers, the cluster's ingress HTTP port.
    pub ingress_http: Vec<Backend>,
    /// Ready workers, the cluster's ingress HTTPS port.
    pub ingress_https: Vec<Backend>,
}

impl ClusterRoute {
    /// The API's server name.
    pub fn api_name(&self) -> String {
        format!("api.{}", self.domain)
    }

    /// The backends of `service`.
    pub fn backends(&self, service: Service) -> &[Backend] {
        match service {
            Service::Api => &self.api,
            Service::IngressHttp => &self.ingress_http,
            Service::IngressHttps => &self.ingress_https,
        }
    }
}

/// Every cluster's route, by domain.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    by_domain: HashMap<String, Arc<ClusterRoute>>,
    by_key: HashMap<String, Arc<ClusterRoute>>,
}

/// `<cluster>.<org>.<base-domain>` for a cluster in namespace `ns`.
pub fn cluster_domain(cluster: &str, ns: &str, base_domain: &str) -> String {
    let org = namespace_org(ns).unwrap_or(ns);
    format!("{cluster}.{org}.{base_domain}")
}

impl RouteTable {
    /// A table from fixed routes (benchmarks, tests and static configuration).
    pub fn from_routes(routes: impl IntoIterator<Item = ClusterRoute>) -> Self {
        let mut t = RouteTable::default();
        for r in routes {
            let r = Arc::new(r);
            t.by_domain.insert(r.domain.clone(), r.clone());
            t.by_key.insert(r.key.clone(), r);
        }
        t
    }

    /// The table for these objects: Ready Machines of KVM clusters that are not being
    /// deleted, on Hosts that publish a forward endpoint.
    pub fn build(
        base_domain: &str,
        clusters: &[Arc<Cluster>],
        machines: &[Arc<Machine>],
        hosts: &[Arc<Host>],
    ) -> Self {
        let forward: HashMap<&str, SocketAddr> = hosts
            .iter()
            .filter_map(|h| {
                let name = h.metadata.name.as_deref()?;
                let ep = h
                    .status
                    .as_ref()?
                    .forward_endpoint
                    .as_deref()?
                    .parse()
                    .ok()?;
                Some((name, ep))
            })
            .collect();
        let mut routes: HashMap<(String, String), ClusterRoute> = HashMap::new();
        let mut ports = HashMap::new();
        for c in clusters {
            if c.spec.provider.type_ != ProviderType::Kvm {
                continue;
            }
            let (Some(ns), Some(name)) =
                (c.metadata.namespace.as_deref(), c.metadata.name.as_deref())
            else {
                continue;
            };
            let key = (ns.to_owned(), name.to_owned());
            ports.insert(
                key.clone(),
                (c.spec.ingress.http_port, c.spec.ingress.https_port),
            );
            routes.insert(
                key,
                ClusterRoute {
                    key: format!("{ns}/{name}"),
                    domain: cluster_domain(name, ns, base_domain),
                    ca_pem: c.status.as_ref().and_then(|s| s.ca_certificate.clone()),
                    ..Default::default()
                },
            );
        }
        for m in machines {
            if m.metadata.deletion_timestamp.is_some()
                || m.status.as_ref().and_then(|s| s.phase) != Some(MachinePhase::Ready)
            {
                continue;
            }
            let (Some(ns), Some(name)) =
                (m.metadata.namespace.as_deref(), m.metadata.name.as_deref())
            else {
                continue;
            };
            let key = (ns.to_owned(), m.spec.cluster.clone());
            let (Some(route), Some(&(http, https))) = (routes.get_mut(&key), ports.get(&key))
            else {
                continue;
            };
            let (Some(host), Some(ip)) = (
                m.spec.host_name.as_deref(),
                m.spec.ip.as_deref().and_then(|ip| ip.parse().ok()),
            ) else {
                continue;
            };
            let Some(&ep) = forward.get(host) else {
                continue;
            };
            let backend = |port| Backend {
                machine: format!("{ns}/{name}"),
                host: host.to_owned(),
                target: SocketAddrV4::new(ip, port),
                via: Via::Agent(ep),
            };
            match m.spec.role {
                MachineRole::ControlPlane => route.api.push(backend(GUEST_API_PORT)),
                MachineRole::Worker => {
                    route.ingress_http.push(backend(http));
                    route.ingress_https.push(backend(https));
                }
            }
        }
        for r in routes.values_mut() {
            for list in [&mut r.api, &mut r.ingress_http, &mut r.ingress_https] {
                list.sort_by(|a, b| a.machine.cmp(&b.machine));
            }
        }
        RouteTable::from_routes(routes.into_values())
    }

    /// The cluster and service a name asks for: `api.<domain>` on TLS is the API;
    /// any other name under a cluster's domain is its ingress.
    pub fn lookup(&self, name: &str, listener: Listener) -> Option<(Arc<ClusterRoute>, Service)> {
        if listener == Listener::Tls {
            if let Some(domain) = name.strip_prefix("api.") {
                if let Some(r) = self.by_domain.get(domain) {
                    return Some((r.clone(), Service::Api));
                }
            }
        }
        let service = match listener {
            Listener::Tls => Service::IngressHttps,
            Listener::Http => Service::IngressHttp,
        };
        name.match_indices('.')
            .find_map(|(i, _)| self.by_domain.get(&name[i + 1..]))
            .map(|r| (r.clone(), service))
    }

    /// The route of cluster `<namespace>/<name>`.
    pub fn cluster(&self, key: &str) -> Option<&Arc<ClusterRoute>> {
        self.by_key.get(key)
    }

    /// Every route.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<ClusterRoute>> {
        self.by_key.values()
    }

    /// The number of clusters.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when no cluster is routed.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::resources::cluster::{ClusterSpec, ControlPlaneSpec, IngressSpec};
    use shoal_api::resources::common::MachineSize;
    use shoal_api::resources::host::{HostSpec, HostStatus};
    use shoal_api::resources::machine::{MachineSpec, MachineStatus};

    fn cluster(ns: &str, name: &str, http: u16) -> Arc<Cluster> {
        let spec: ClusterSpec = serde_json::from_value(serde_json::json!({
            "release": "test",
            "controlPlane": {"replicas": 1, "cpu": "1", "memory": "256Mi", "disk": "1Gi"},
            "ingress": {"httpPort": http, "httpsPort": 30443},
        }))
        .expect("cluster spec");
        let _: (&ControlPlaneSpec, &IngressSpec) = (&spec.control_plane, &spec.ingress);
        let mut c = Cluster::new(name, spec);
        c.metadata.namespace = Some(ns.into());
        Arc::new(c)
    }

    fn machine(
        ns: &str,
        name: &str,
        cluster: &str,
        role: MachineRole,
        ip: &str,
        ready: bool,
    ) -> Arc<Machine> {
        let mut m = Machine::new(
            name,
            MachineSpec {
                cluster: cluster.into(),
                role,
                node_pool: None,
                size: MachineSize {
                    cpu: serde_json::from_value(serde_json::json!("1")).expect("q"),
                    memory: serde_json::from_value(serde_json::json!("256Mi")).expect("q"),
                    disk: serde_json::from_value(serde_json::json!("1Gi")).expect("q"),
                },
                release: "test".into(),
                host_name: Some("h1".into()),
                mac: None,
                ip: Some(ip.into()),
                bootstrap: None,
                migration: None,
            },
        );
        m.metadata.namespace = Some(ns.into());
        m.status = Some(MachineStatus {
            phase: Some(if ready {
                MachinePhase::Ready
            } else {
                MachinePhase::Running
            }),
            ..Default::default()
        });
        Arc::new(m)
    }

    fn host() -> Arc<Host> {
        let mut h = Host::new("h1", HostSpec::default());
        h.status = Some(HostStatus {
            forward_endpoint: Some("127.0.0.1:7445".into()),
            ..Default::default()
        });
        Arc::new(h)
    }

    #[test]
    fn names_map_to_the_right_cluster_and_service() {
        let clusters = [
            cluster("org-acme", "demo", 30080),
            cluster("org-acme", "other", 31080),
        ];
        let machines = [
            machine(
                "org-acme",
                "demo-cp-0",
                "demo",
                MachineRole::ControlPlane,
                "10.128.0.10",
                true,
            ),
            machine(
                "org-acme",
                "demo-w-0",
                "demo",
                MachineRole::Worker,
                "10.128.0.11",
                true,
            ),
            machine(
                "org-acme",
                "demo-w-1",
                "demo",
                MachineRole::Worker,
                "10.128.0.12",
                false,
            ),
            machine(
                "org-acme",
                "other-w-0",
                "other",
                MachineRole::Worker,
                "10.128.1.11",
                true,
            ),
        ];
        let t = RouteTable::build("shoal.test", &clusters, &machines, &[host()]);
        let (r, s) = t
            .lookup("api.demo.acme.shoal.test", Listener::Tls)
            .expect("api");
        assert_eq!((r.key.as_str(), s), ("org-acme/demo", Service::Api));
        assert_eq!(r.api.len(), 1);
        assert_eq!(r.api[0].target, "10.128.0.10:6443".parse().expect("addr"));
        assert_eq!(
            r.api[0].via,
            Via::Agent("127.0.0.1:7445".parse().expect("addr"))
        );
        // Only the Ready worker, on the cluster's own ingress ports.
        let (r, s) = t
            .lookup("shop.demo.acme.shoal.test", Listener::Http)
            .expect("ingress");
        assert_eq!(s, Service::IngressHttp);
        assert_eq!(r.ingress_http.len(), 1);
        assert_eq!(r.ingress_http[0].target.port(), 30080);
        let (r, _) = t
            .lookup("a.b.other.acme.shoal.test", Listener::Tls)
            .expect("deep name");
        assert_eq!(r.key, "org-acme/other");
        assert_eq!(r.ingress_https[0].target.port(), 30443);
        assert_eq!(r.ingress_http[0].target.port(), 31080);
        // The API name over plain HTTP is ingress; unknown names are nothing.
        let (_, s) = t
            .lookup("api.demo.acme.shoal.test", Listener::Http)
            .expect("http api name");
        assert_eq!(s, Service::IngressHttp);
        assert!(t
            .lookup("api.nope.acme.shoal.test", Listener::Tls)
            .is_none());
        assert!(t.lookup("demo.acme.shoal.test", Listener::Tls).is_none());
        assert!(t.lookup("shoal.test", Listener::Tls).is_none());
    }

    #[test]
    fn machines_without_a_forwarding_host_are_left_out() {
        let clusters = [cluster("org-acme", "demo", 30080)];
        let machines = [machine(
            "org-acme",
            "demo-cp-0",
            "demo",
            MachineRole::ControlPlane,
            "10.128.0.10",
            true,
        )];
        let t = RouteTable::build("shoal.test", &clusters, &machines, &[]);
        assert!(t.cluster("org-acme/demo").expect("route").api.is_empty());
    }
}
