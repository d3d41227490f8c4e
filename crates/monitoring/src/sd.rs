//! `GET /sd/prometheus?job=server|agent|guest`: Prometheus HTTP service discovery.
//!
//! The caller's bearer token decides what it sees, through the public API: a
//! token that may list Hosts (an administrator) gets the API server, every agent
//! and every guest node; any other token gets only the guest nodes of the
//! organizations it belongs to, and no Shoal process. Guest nodes are scraped at
//! their host's agent (`__metrics_path__` `/guests/<namespace>/<machine>/metrics`),
//! never in the guest network.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use shoal_api::resources::common::MachineRole;
use shoal_api::resources::machine::MachinePhase;
use shoal_api::resources::organization::org_namespace;
use shoal_api::{Host, Machine, Organization};

use crate::access::{bearer, status, user_client};
use crate::Job;

/// The path the discovery is served on.
pub const PATH: &str = "/sd/prometheus";

/// Where discovery reaches the API.
#[derive(Clone)]
pub struct SdConfig {
    /// The API's client settings without credentials; each request adds the
    /// caller's token.
    pub api: kube::Config,
    /// A client with the server's own credentials, used only to find the agent
    /// that serves a tenant's guest node (tenants may not read Hosts).
    pub internal: kube::Client,
    /// `host:port` of the API server's `/metrics` (HTTPS).
    pub server_target: String,
}

impl SdConfig {
    /// Discovery on `api` (its credentials are dropped), finding agents with
    /// `internal`, listing the API server at `server_target`.
    pub fn new(mut api: kube::Config, internal: kube::Client, server_target: String) -> Self {
        api.auth_info = kube::config::AuthInfo::default();
        Self {
            api,
            internal,
            server_target,
        }
    }
}

/// The discovery route, for merging beside the API.
pub fn router(config: SdConfig) -> Router {
    Router::new().route(PATH, get(discover)).with_state(config)
}

/// One Prometheus target group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroup {
    /// `host:port` of each target.
    pub targets: Vec<String>,
    /// Labels of every target in the group.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct SdQuery {
    job: Option<String>,
}

/// Who is asking, as far as discovery cares.
enum Caller {
    Admin(Vec<Host>),
    Tenant,
}

/// Why discovery could not answer.
#[derive(Debug, thiserror::Error)]
enum SdError {
    #[error("{}", .0.message)]
    Refused(Box<kube::core::Status>),
    #[error("reading {what} from the API: {source}")]
    Api {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl SdError {
    fn api(what: &'static str) -> impl FnOnce(kube::Error) -> SdError {
        move |source| match source {
            kube::Error::Api(s) if s.code == 401 => SdError::Refused(s),
            source => SdError::Api { what, source },
        }
    }

    fn into_response(self) -> Response {
        match self {
            SdError::Refused(s) => status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                &format!(
                    "the API refused the token ({}): give a valid Shoal token in prometheus.yml's authorization.credentials_file",
                    s.message
                ),
            ),
            e @ SdError::Api { .. } => status(StatusCode::BAD_GATEWAY, "BadGateway", &e.to_string()),
        }
    }
}

async fn discover(
    State(config): State<SdConfig>,
    headers: HeaderMap,
    Query(query): Query<SdQuery>,
) -> Response {
    let keys = || {
        crate::JOBS
            .iter()
            .map(|j| j.key())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(job) = query.job.as_deref().and_then(Job::from_key) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "query parameter job: {:?} is not a job; give one of {}",
                query.job.unwrap_or_default(),
                keys()
            ),
        );
    };
    let Some(token) = bearer(&headers) else {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "give a Shoal token as `Authorization: Bearer <token>` (prometheus.yml: authorization.credentials_file)",
        );
    };
    match targets(&config, &token, job).await {
        Ok(groups) => axum::Json(groups).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn targets(config: &SdConfig, token: &str, job: Job) -> Result<Vec<TargetGroup>, SdError> {
    let user = user_client(&config.api, token).map_err(|source| SdError::Api {
        what: "a client",
        source,
    })?;
    let caller = match Api::<Host>::all(user.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => Caller::Admin(list.items),
        Err(kube::Error::Api(s)) if s.code == 403 => Caller::Tenant,
        Err(e) => return Err(SdError::api("hosts")(e)),
    };
    match (job, caller) {
        (Job::Server, Caller::Admin(_)) => Ok(vec![server_group(&config.server_target)]),
        (Job::Agent, Caller::Admin(hosts)) => Ok(agent_groups(&hosts)),
        (Job::Server | Job::Agent, Caller::Tenant) => Ok(Vec::new()),
        (Job::Guest, Caller::Admin(hosts)) => {
            let machines = Api::<Machine>::all(user)
                .list(&ListParams::default())
                .await
                .map_err(SdError::api("machines"))?
                .items;
            Ok(guest_groups(&hosts, &machines))
        }
        (Job::Guest, Caller::Tenant) => {
            let orgs = Api::<Organization>::all(user.clone())
                .list(&ListParams::default())
                .await
                .map_err(SdError::api("organizations"))?
                .items;
            let mut machines = Vec::new();
            for org in &orgs {
                let ns = org_namespace(&org.name_any());
                let listed = Api::<Machine>::namespaced(user.clone(), &ns)
                    .list(&ListParams::default())
                    .await
                    .map_err(SdError::api("machines"))?;
                machines.extend(listed.items);
            }
            let hosts = Api::<Host>::all(config.internal.clone())
                .list(&ListParams::default())
                .await
                .map_err(SdError::api("hosts"))?
                .items;
            Ok(guest_groups(&hosts, &machines))
        }
    }
}

fn labels<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The API server (with its controllers and gateway), over HTTPS.
pub fn server_group(target: &str) -> TargetGroup {
    TargetGroup {
        targets: vec![target.to_owned()],
        labels: labels([("__scheme__", "https".into()), ("role", "server".into())]),
    }
}

/// One group per agent that reports a metrics endpoint.
pub fn agent_groups(hosts: &[Host]) -> Vec<TargetGroup> {
    hosts
        .iter()
        .filter_map(|h| {
            let endpoint = h.status.as_ref()?.metrics_endpoint.clone()?;
            Some(TargetGroup {
                targets: vec![endpoint],
                labels: labels([("host", h.name_any()), ("role", "agent".into())]),
            })
        })
        .collect()
}

/// One group per running guest node whose host's agent serves metrics.
pub fn guest_groups(hosts: &[Host], machines: &[Machine]) -> Vec<TargetGroup> {
    let endpoints: BTreeMap<String, String> = hosts
        .iter()
        .filter_map(|h| Some((h.name_any(), h.status.as_ref()?.metrics_endpoint.clone()?)))
        .collect();
    let mut groups: Vec<TargetGroup> = machines
        .iter()
        .filter_map(|m| {
            let phase = m.status.as_ref()?.phase?;
            if !matches!(phase, MachinePhase::Running | MachinePhase::Ready) {
                return None;
            }
            let host = m.spec.host_name.clone()?;
            let endpoint = endpoints.get(&host)?.clone();
            let ns = m.namespace()?;
            let role = match m.spec.role {
                MachineRole::ControlPlane => "control-plane",
                MachineRole::Worker => "worker",
            };
            Some(TargetGroup {
                targets: vec![endpoint],
                labels: labels([
                    (
                        "__metrics_path__",
                        format!("/guests/{ns}/{}/metrics", m.name_any()),
                    ),
                    ("org", ns),
                    ("cluster", m.spec.cluster.clone()),
                    ("machine", m.name_any()),
                    ("host", host),
                    ("role", role.into()),
                ]),
            })
        })
        .collect();
    groups.sort_by(|a, b| a.labels.cmp(&b.labels));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(name: &str, endpoint: Option<&str>) -> Host {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Host",
            "metadata": {"name": name}, "spec": {},
            "status": {"metricsEndpoint": endpoint}
        }))
        .expect("a Host")
    }

    fn machine(name: &str, host: &str, phase: &str) -> Machine {
        serde_json::from_value(json!({
            "apiVersion": "shoal.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": name, "namespace": "org-acme"},
            "spec": {"cluster": "c1", "role": "control-plane", "release": "test",
                     "hostName": host,
                     "size": {"cpu": "1", "memory": "512Mi", "disk": "1Gi"}},
            "status": {"phase": phase}
        }))
        .expect("a Machine")
    }

    #[test]
    fn guests_are_scraped_at_their_hosts_agent() {
        let hosts = [host("h1", Some("10.0.0.1:9464")), host("h2", None)];
        let machines = [
            machine("c1-a", "h1", "Ready"),
            machine("c1-b", "h1", "Provisioning"),
            machine("c1-c", "h2", "Ready"),
        ];
        let groups = guest_groups(&hosts, &machines);
        assert_eq!(groups.len(), 1, "{groups:?}");
        let g = &groups[0];
        assert_eq!(g.targets, ["10.0.0.1:9464"]);
        assert_eq!(
            g.labels["__metrics_path__"],
            "/guests/org-acme/c1-a/metrics"
        );
        assert_eq!(g.labels["org"], "org-acme");
        assert_eq!(g.labels["cluster"], "c1");
        assert_eq!(g.labels["role"], "control-plane");
        assert_eq!(g.labels["host"], "h1");
        assert_eq!(agent_groups(&hosts).len(), 1);
    }

    #[test]
    fn jobs_round_trip_their_keys() {
        for job in crate::JOBS {
            assert_eq!(Job::from_key(job.key()), Some(job));
        }
        assert_eq!(Job::from_key("nodes"), None);
    }
}
