//! Static routes from a file, for a gateway run without the API (an ingress load
//! balancer configured by hand, with health checks). The file is YAML or JSON:
//!
//! ```yaml
//! clusters:
//!   - name: acme/demo              # any label; shows in logs and metrics
//!     domain: demo.acme.example    # API at api.<domain>, ingress at *.<domain>
//!     caFile: /etc/shoal/demo-ca.crt   # optional: /readyz checks of the API
//!     api: ["10.0.0.10:6443"]
//!     ingressHttp: ["10.0.0.11:30080"]
//!     ingressHttps: ["10.0.0.11:30443"]
//! ```

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::routes::{Backend, ClusterRoute, RouteTable, Via};

/// Why the routes file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StaticRoutesError {
    /// It could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    clusters: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Entry {
    name: String,
    domain: String,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    api: Vec<SocketAddrV4>,
    #[serde(default)]
    ingress_http: Vec<SocketAddrV4>,
    #[serde(default)]
    ingress_https: Vec<SocketAddrV4>,
}

/// Reads a routes file into a table whose backends are reached directly.
pub fn load(path: &Path) -> Result<RouteTable, StaticRoutesError> {
    let text = std::fs::read_to_string(path).map_err(|source| StaticRoutesError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |message: String| StaticRoutesError::Invalid {
        path: path.to_owned(),
        message,
    };
    let file: File = serde_yaml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let mut routes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, e) in file.clusters.into_iter().enumerate() {
        let domain = crate::hello::normalize(e.domain.as_bytes()).ok_or_else(|| {
            invalid(format!(
                "clusters[{i}].domain: {:?} is not a DNS name",
                e.domain
            ))
        })?;
        if !seen.insert(domain.clone()) {
            return Err(invalid(format!(
                "clusters[{i}].domain: {domain} is listed twice; give each cluster its own domain"
            )));
        }
        let ca_pem = match &e.ca_file {
            Some(ca) => {
                Some(
                    std::fs::read_to_string(ca).map_err(|source| StaticRoutesError::Read {
                        path: ca.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let backends = |list: &[SocketAddrV4]| {
            list.iter()
                .map(|t| Backend {
                    machine: format!("{}/{t}", e.name),
                    host: "static".into(),
                    target: *t,
                    via: Via::Direct,
                })
                .collect()
        };
        routes.push(ClusterRoute {
            key: e.name.clone(),
            domain,
            ca_pem,
            api: backends(&e.api),
            ingress_http: backends(&e.ingress_http),
            ingress_https: backends(&e.ingress_https),
        });
    }
    Ok(RouteTable::from_routes(routes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{Listener, Service};

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn a_routes_file_becomes_a_table() {
        let f = write(
            "clusters:\n- name: acme/demo\n  domain: Demo.Acme.Example\n  api: [\"127.0.0.1:7443\"]\n  ingressHttp: [\"127.0.0.1:8080\", \"127.0.0.2:8080\"]\n",
        );
        let t = load(f.path()).expect("loads");
        let (r, s) = t
            .lookup("api.demo.acme.example", Listener::Tls)
            .expect("api");
        assert_eq!(s, Service::Api);
        assert_eq!(r.api[0].via, Via::Direct);
        assert_eq!(r.ingress_http.len(), 2);
    }

    #[test]
    fn mistakes_name_the_field() {
        let dup =
            write("clusters:\n- {name: a, domain: x.example}\n- {name: b, domain: x.example}\n");
        let err = load(dup.path()).expect_err("duplicate").to_string();
        assert!(err.contains("clusters[1].domain"), "{err}");
        let unknown = write("clusters:\n- {name: a, domain: x.example, backends: []}\n");
        let err = load(unknown.path()).expect_err("unknown field").to_string();
        assert!(err.contains("backends"), "{err}");
        let bad = write("clusters:\n- {name: a, domain: x.example, api: [\"host:1\"]}\n");
        assert!(load(bad.path()).is_err());
        assert!(load(Path::new("/nonexistent/routes.yaml")).is_err());
    }
}
